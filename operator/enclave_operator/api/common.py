"""Building blocks shared by every kind: the base model, quantities, conditions and CRD metadata."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic.alias_generators import to_camel

from enclave_operator import quantity

DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
USERNAME_PATTERN = r"^[a-z_][a-z0-9_.-]*$"
"""Identity usernames as FreeIPA, LDAP (uid) and Slurm all accept them: lowercase, no spaces."""
QUANTITY_PATTERN = r"^(\+)?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$"
"""Kubernetes resource quantity without a sign: negative quantities are not valid anywhere we use them."""


class ApiModel(pydantic.BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected, values immutable."""

    model_config = pydantic.ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=lambda schema, cls: _add_cel_rules(schema, cls),
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    """CEL rules (x-kubernetes-validations) placed on this object's schema by the CRD generator."""


def _add_cel_rules(schema: dict[str, Any], cls: type) -> None:
    """Put a model's CEL rules into its JSON schema, where the CRD generator keeps them."""
    rules = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


@dataclasses.dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry: rule, message and the field it is about."""

    rule: str
    message: str
    field_path: str | None = None
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"] | None = (
        None
    )

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def bounded_quantity(maximum: str, *, whole: bool = False) -> Any:
    """A Kubernetes resource quantity (e.g. 64, "500m", "256Gi") between 0 and `maximum`; with `whole`, a
    whole number (bytes).

    Why bounds: the API server clamps what does not fit (above 2^63-1) and rounds finer than a
    thousandth up, so an unbounded value would never read back as written; backends refuse absurd
    sizes with errors users cannot act on. The same bounds are CEL rules in the CRD (refused at
    admission, the limit in the message) and a validator here (for objects that got in another way).
    """
    limit = quantity.parse(maximum)
    limit_int = int(limit)

    def check(value: int | str) -> int | str:
        amount = quantity.parse(value)  # raises ValueError naming the value
        if amount > limit:
            raise ValueError(f"must be at most {maximum}")
        if whole and amount != amount.to_integral_value():
            raise ValueError("must be a whole number of bytes (e.g. 500Gi, 1500M)")
        return value

    rules: list[dict[str, str]] = [
        {
            "rule": "type(self) == int ? self >= 0 : (isQuantity(self) && !quantity(self).isLessThan(quantity('0')))",
            "message": "must be a non-negative quantity such as 500Gi, 64 or 250m",
        },
        {
            "rule": f"type(self) == int ? self <= {limit_int} : "
            f"(!isQuantity(self) || !quantity(self).isGreaterThan(quantity('{maximum}')))",
            "message": f"must be at most {maximum}",
        },
    ]
    if whole:
        rules.append({
            "rule": "type(self) == int || !isQuantity(self) || quantity(self).isInteger()",
            "message": "must be a whole number of bytes (e.g. 500Gi, 1500M)",
        })  # fmt: skip
    return Annotated[
        int | str,
        pydantic.Field(union_mode="left_to_right"),
        pydantic.AfterValidator(check),
        pydantic.WithJsonSchema(
            {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "x-kubernetes-validations": rules,
            }  # fmt: skip
        ),
    ]


class Condition(ApiModel):
    """Condition: one aspect of the object's observed state, in the Kubernetes convention (kstatus)."""

    type: str = pydantic.Field(
        description="type of the condition, e.g. Ready, Reconciling, Stalled, StorageReady.", max_length=64
    )
    status: Literal["True", "False", "Unknown"] = pydantic.Field(description="status of the condition.")
    reason: str = pydantic.Field(description="reason: a CamelCase word a program can switch on.", max_length=128)
    message: str = pydantic.Field("", description="message: a sentence for humans saying why.", max_length=4096)
    observed_generation: int = pydantic.Field(
        0, description="observedGeneration: the metadata.generation this condition was computed from.", ge=0
    )
    last_transition_time: datetime.datetime = pydantic.Field(
        description="lastTransitionTime: when status last changed."
    )


class ConditionedStatus(ApiModel):
    """Status fields every kind shares."""

    observed_generation: int | None = pydantic.Field(
        None, description="observedGeneration: the metadata.generation the operator last reconciled.", ge=0
    )
    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        description="conditions: Ready, Reconciling and Stalled, plus one per backend part.",
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


@dataclasses.dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclasses.dataclass(frozen=True)
class NameRule:
    """Restrictions on metadata.name, placed where the API server reports them as `metadata.name`."""

    max_length: int
    pattern: str
    message: str


@dataclasses.dataclass(frozen=True)
class KindInfo:
    """What the CRD generator needs beyond the schema: names, scope, columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    printer_columns: tuple[PrinterColumn, ...]
    description: str
    name_rule: NameRule | None = None
    selectable_fields: tuple[str, ...] = ()
    """JSON paths usable as field selectors (e.g. .spec.family): the operator lists by them."""


def spec_error(error: pydantic.ValidationError) -> str:
    """The first validation error of a spec, naming the field: `spec.<path>: <message>`."""
    first = error.errors()[0]
    return f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
