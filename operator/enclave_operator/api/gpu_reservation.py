"""GpuReservation: a project books GPUs of one family, in one pool, for a future window.

Namespaced, in the project's namespace (the project is the namespace's ResearchProject). The pool
(Slurm or Kubernetes) owns the GPUs; a GPU is never in both. `pool` and `family` are fixed at creation;
count and window may change until the booking ends, and each change is admitted like a new booking
(the admitted window stays enforced when a change does not fit). Windows are half-open: a booking
from 08:00 to 20:00 and one from 20:00 on do not overlap.
"""

from __future__ import annotations

import datetime
import re
from typing import Literal

import pydantic

from enclave_operator.api.common import (
    DNS_LABEL_PATTERN,
    ApiModel,
    CelRule,
    ConditionedStatus,
    KindInfo,
    PrinterColumn,
)

Pool = Literal["slurm", "kubernetes"]
POOLS: tuple[Pool, ...] = ("slurm", "kubernetes")
Phase = Literal["Pending", "Scheduled", "Active", "Expired", "Rejected", "Cancelled"]
FINAL_PHASES: tuple[Phase, ...] = ("Expired", "Rejected", "Cancelled")
MAX_COUNT = 1024
DURATION_PATTERN = r"^(?:[0-9]{1,4}d)?(?:[0-9]{1,5}h)?(?:[0-9]{1,6}m)?$"
_DURATION = re.compile(r"^(?:(?P<d>[0-9]{1,4})d)?(?:(?P<h>[0-9]{1,5})h)?(?:(?P<m>[0-9]{1,6})m)?$")


def parse_duration(text: str) -> datetime.timedelta:
    """`2d12h`, `60h`, `90m` → timedelta; ValueError naming the value."""
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"{text!r} is not a duration such as 60h, 2d12h or 90m")
    return datetime.timedelta(days=int(match["d"] or 0), hours=int(match["h"] or 0), minutes=int(match["m"] or 0))


class GpuReservationSpec(ApiModel):
    """GpuReservationSpec: which GPUs, how many, when, and what for."""

    cel_rules = (
        CelRule("has(self.end) != has(self.duration)", "set exactly one of spec.end and spec.duration", ".end"),
        CelRule(
            "!has(self.end) || timestamp(self.end) > timestamp(self.start)",
            "spec.end must be after spec.start",
            ".end",
        ),
        CelRule("self.pool == oldSelf.pool", "spec.pool cannot change; book anew", ".pool"),
        CelRule("self.family == oldSelf.family", "spec.family cannot change; book anew", ".family"),
    )

    pool: Pool = pydantic.Field(
        description="pool: which pool owns the GPUs: slurm (an advanced reservation for the project's account) "
        "or kubernetes (the namespace's GPU quota and nodes of the family)."
    )
    family: str = pydantic.Field(
        description="family: a GPU family the platform configured, e.g. a100 or h100 "
        "(`enclave-operator gpu-calendar` lists them).",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    count: int = pydantic.Field(description="count: number of GPUs.", ge=1, le=MAX_COUNT)
    start: datetime.datetime = pydantic.Field(
        description="start: when the window opens, RFC 3339 with a time zone, e.g. 2026-12-01T08:00:00Z."
    )
    end: datetime.datetime | None = pydantic.Field(
        None, description="end: when the window closes (exclusive), RFC 3339; or give duration instead."
    )
    duration: str | None = pydantic.Field(
        None,
        description="duration: the window's length instead of end, e.g. 60h, 2d12h or 90m.",
        min_length=2,
        max_length=16,
        pattern=DURATION_PATTERN,
    )
    purpose: str = pydantic.Field(
        description="purpose: what the GPUs are for (shown to the platform team and in the calendar).",
        min_length=1,
        max_length=500,
    )

    @pydantic.model_validator(mode="after")
    def _window(self) -> GpuReservationSpec:
        """Mirror of the CEL rules, for objects that reached the operator without them."""
        if (self.end is None) == (self.duration is None):
            raise ValueError("set exactly one of spec.end and spec.duration")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"spec.{name} needs a time zone (e.g. a trailing Z)")
        if self.duration is not None:
            parse_duration(self.duration)
        if self.window_end() <= self.start:
            raise ValueError("spec.end must be after spec.start")
        return self

    def window_start(self) -> datetime.datetime:
        return self.start.astimezone(datetime.UTC)

    def window_end(self) -> datetime.datetime:
        """The end, from spec.end or start + duration, in UTC."""
        if self.end is not None:
            return self.end.astimezone(datetime.UTC)
        return self.window_start() + parse_duration(self.duration or "")


class BookedWindow(ApiModel):
    """BookedWindow: what the operator admitted and enforces."""

    count: int = pydantic.Field(description="count: GPUs admitted.", ge=0, le=MAX_COUNT)
    start: datetime.datetime = pydantic.Field(description="start: start of the admitted window.")
    end: datetime.datetime = pydantic.Field(description="end: end of the admitted window (exclusive).")
    generation: int = pydantic.Field(0, description="generation: the metadata.generation admitted.", ge=0)


class GpuReservationStatus(ConditionedStatus):
    """GpuReservationStatus: where the booking stands."""

    phase: Phase | None = pydantic.Field(
        None,
        description="phase: Pending (waiting for admission or approval), Scheduled (admitted, before start), "
        "Active, Expired, Rejected or Cancelled.",
    )
    project: str | None = pydantic.Field(None, description="project: the namespace's ResearchProject.", max_length=63)
    start: datetime.datetime | None = pydantic.Field(None, description="start: the window's start (UTC).")
    end: datetime.datetime | None = pydantic.Field(
        None, description="end: the window's end (UTC), from end or duration."
    )
    booked: BookedWindow | None = pydantic.Field(None, description="booked: the admitted window, enforced.")
    slurm_reservation: str | None = pydantic.Field(
        None, description="slurmReservation: the Slurm advanced reservation (sbatch --reservation=...).", max_length=128
    )
    slurm_nodes: str | None = pydantic.Field(
        None, description="slurmNodes: the nodes Slurm reserved, as scontrol shows them.", max_length=1024
    )
    next_transition: datetime.datetime | None = pydantic.Field(
        None, description="nextTransition: when the phase changes next (start, end, or the end of the grace period)."
    )
    evicted_pods: int | None = pydantic.Field(
        None, description="evictedPods: GPU pods evicted after the window ended and its grace period passed.", ge=0
    )


class GpuReservation(ApiModel):
    """GpuReservation books GPUs of one family for a project in a future window, enforced in Slurm or Kubernetes."""

    spec: GpuReservationSpec = pydantic.Field(description="spec: the booking.")
    status: GpuReservationStatus | None = pydantic.Field(None, description="status: the observed state.")


KIND = KindInfo(
    kind="GpuReservation",
    plural="gpureservations",
    singular="gpureservation",
    short_names=("gpur", "gpubooking"),
    scope="Namespaced",
    description=GpuReservation.__doc__ or "",
    selectable_fields=(".spec.pool", ".spec.family"),
    printer_columns=(
        PrinterColumn("Pool", ".spec.pool"),
        PrinterColumn("Family", ".spec.family"),
        PrinterColumn("GPUs", ".spec.count", "integer"),
        PrinterColumn("Start", ".spec.start"),
        PrinterColumn("End", ".status.end"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Reason", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn("Reservation", ".status.slurmReservation", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)
