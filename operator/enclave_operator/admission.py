"""Admission rules for ResearchProjects that a CRD schema cannot express (who may do what, dates
relative to today). Pure functions; handlers.py serves them as a validating webhook.

- Creating a project with spec.validUntil in the past is refused (for everyone).
- A non-admin may create a project only as its owner (spec.owner is the requesting user).
- A non-admin may update only projects where they are owner or maintainer, and only an owner
  may hand the project to another owner.
- A non-admin may delete only projects they own.
- Only platform admins may set or change the approval annotations, and only under their own name.
- A new or changed spec must plan (`research_project.plan`, the reconciler's own checks): e.g. a reserved
  namespace name (`naming.reservedNamespaces`, the ingest and the operator's namespaces), a Slurm parent
  the platform does not allow. Updates that leave the spec alone (finalizers, bookkeeping) are not
  planned, so an object admitted earlier can always be finalized.
- Collisions with things that exist in the backends (a foreign namespace, bucket, identity group or
  Slurm account) are found by `research_project.collisions`, which needs I/O; the webhook handler asks
  it and reports through `collision_denial`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.reconcilers import research_project
from enclave_operator.reconcilers.approval import APPROVED_ANNOTATION, APPROVED_BY_ANNOTATION, parse_approval
from enclave_operator.settings import IngestSettings, OperatorSettings, SelfServiceSettings

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class Denied(Exception):
    """The request is refused; the message names the field and says why."""


@dataclasses.dataclass(frozen=True)
class Requester:
    username: str
    groups: Sequence[str]


def is_admin(requester: Requester, settings: SelfServiceSettings) -> bool:
    return any(group in settings.admin_groups for group in requester.groups)


def _roles(spec: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(m.get("user")): str(m.get("role")) for m in (spec or {}).get("members", []) or []}


def _annotations(body: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


def review(
    *,
    operation: Operation,
    requester: Requester,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    settings: OperatorSettings,
    today: datetime.date,
) -> None:
    """Raise Denied with a message naming the field when the request breaks a rule."""
    admin = is_admin(requester, settings.self_service)
    user = requester.username.removeprefix(settings.kubernetes.user_prefix)
    new_spec = (new or {}).get("spec") or {}
    old_spec = (old or {}).get("spec") or {}

    if operation == "CREATE":
        valid_until = str(new_spec.get("validUntil", ""))
        if valid_until and valid_until < today.isoformat():
            raise Denied(f"spec.validUntil: {valid_until} is in the past; a new project needs a current approval")
        if not admin and new_spec.get("owner") != user:
            raise Denied(f"spec.owner: you ({user}) may only create projects that you own")
    elif operation == "UPDATE" and not admin:
        role = _roles(old_spec).get(user)
        if role not in ("owner", "maintainer"):
            raise Denied(f"spec.members: only the project's owners and maintainers may change it ({user} is "
                         f"{'a ' + role if role else 'not a member'})")  # fmt: skip
        if new_spec.get("owner") != old_spec.get("owner") and role != "owner":
            raise Denied("spec.owner: only the current owner may hand the project to another owner")
    elif operation == "DELETE" and not admin:
        if _roles(old_spec).get(user) != "owner":
            raise Denied(f"metadata.name: only the project's owner may delete it ({user} is not)")

    if operation == "CREATE" or (operation == "UPDATE" and new_spec != old_spec):
        _check_plan(new, settings, today)
    if operation in ("CREATE", "UPDATE"):
        _check_approval(user, admin, _annotations(old), _annotations(new))


def _check_plan(new: Mapping[str, Any] | None, settings: OperatorSettings, today: datetime.date) -> None:
    """The reconciler's own planning checks, so what it would refuse later is refused now."""
    name = str(((new or {}).get("metadata") or {}).get("name", ""))
    try:
        spec = ResearchProjectSpec.model_validate(dict((new or {}).get("spec") or {}))
    except pydantic.ValidationError:
        return  # the CRD schema reports these, naming the field
    try:
        research_project.plan(name, spec, settings, today)
    except research_project.InvalidPlan as error:
        raise Denied(str(error)) from None


def collision_denial(name: str, found: Sequence[str]) -> Denied:
    """The refusal of a new project whose names collide with things it may not take."""
    return Denied(f"metadata.name: {name} collides with what exists: {'; '.join(found)}")


def _check_approval(user: str, admin: bool, old: Mapping[str, str], new: Mapping[str, str]) -> None:
    keys = (APPROVED_ANNOTATION, APPROVED_BY_ANNOTATION)
    if all(old.get(k) == new.get(k) for k in keys):
        return
    if not admin:
        raise Denied(f"metadata.annotations[{APPROVED_ANNOTATION}]: only platform admins may approve projects")
    if APPROVED_ANNOTATION in new:
        try:
            parse_approval(new[APPROVED_ANNOTATION])
        except ValueError as error:
            raise Denied(f"metadata.annotations[{APPROVED_ANNOTATION}]: {error}") from None
        if new.get(APPROVED_BY_ANNOTATION) != user:
            raise Denied(f"metadata.annotations[{APPROVED_BY_ANNOTATION}]: must be your own name ({user})")


INGEST_APPROVED_BY = "enclave.io/approved-by"


def review_ingest(
    *, requester: Requester, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, ingest: IngestSettings
) -> None:
    """A DataIngest's approval annotation may be set only by a data steward, under their own name."""
    before = _annotations(old).get(INGEST_APPROVED_BY)
    after = _annotations(new).get(INGEST_APPROVED_BY)
    if before == after:
        return
    if not any(group in ingest.steward_groups for group in requester.groups):
        raise Denied(f"metadata.annotations[{INGEST_APPROVED_BY}]: only data stewards may approve ingests")
    if after is not None and after != requester.username:
        raise Denied(f"metadata.annotations[{INGEST_APPROVED_BY}]: must be your own name ({requester.username})")
