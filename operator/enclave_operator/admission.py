"""Admission rules that a CRD schema cannot express (who may do what, dates relative to today, approvals).
Pure functions; handlers.py serves them as the operator's mutating and validating webhooks.

ResearchProject, validating (`review`):
- Creating a project with spec.validUntil in the past is refused (for everyone).
- A non-admin may create a project only as its owner (spec.owner is the requesting user).
- A non-admin may change the spec only of projects where they are owner or maintainer, and only an owner
  may hand the project to another owner. Updates that leave the spec alone (labels, the operator's
  finalizer and bookkeeping) are not subject to these rules, except:
- Only the operator itself and platform admins remove the operator's finalizer (removing it would skip
  the revocation of every access).
- A non-admin may delete only projects they own.
- Approvals (reconcilers/approval.py): only the mutating webhook writes `enclave.io/approval`; a request
  that changes it must carry a record this operator signed, from a platform admin; the trigger
  `enclave.io/approve` is for platform admins only (the mutating webhook consumes it).
- A new or changed spec must plan (`research_project.plan`, the reconciler's own checks): e.g. a reserved
  namespace name (`naming.reservedNamespaces`, the ingest and the operator's namespaces), a Slurm parent
  the platform does not allow. Objects admitted earlier can therefore always be finalized.
- Collisions with things that exist in the backends (a foreign namespace, bucket, identity group or
  Slurm account) are found by `research_project.collisions`, which needs I/O; the webhook handler asks
  it and reports through `collision_denial`.

Mutating (`stamp`, every kind): a platform admin's create or update of a project is the approval of the
spec as it stands, recorded as a signed `enclave.io/approval` (kept unchanged when an earlier approval
already covers the spec, so re-applying a manifest changes nothing); for everyone else, including the
operator, the approval stays what it was. DataIngest: the same for data stewards (`review_ingest`).
GpuReservation: the same for platform admins; the grant is the amounts the booking asks above its
project's limits (`gpu_reservation.approval_request`).

GpuReservations (`review_gpu_reservation`): only the project's owners, maintainers and members book;
the window, family, pool and count must be bookable and fit the family's capacity at every instant.

FederatedNodes (`review_node`), which only the platform team creates (RBAC):
- spec.profile must name a requirements profile the operator knows; spec.backup.target a configured target.
- An integrator entry that is new or whose expiry changed must end today or later and at most
  `federation.maxIntegratorDays` from today: access always ends, and not in years.
- A new node may not take a reserved namespace name; collisions with things that exist are found by
  `federated_node.collisions` (I/O), reported through `collision_denial`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from enclave_operator import gpu_calendar
from enclave_operator.api.federated_node import FederatedNodeSpec
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.federation.profiles import Profiles
from enclave_operator.reconcilers import approval, federated_node, gpu_bookings, gpu_reservation, research_project
from enclave_operator.reconcilers.approval import APPROVAL_ANNOTATION, APPROVE_ANNOTATION
from enclave_operator.settings import IngestSettings, OperatorSettings, SelfServiceSettings

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
Annotations = dict[str, str | None]
"""Annotation changes a mutating webhook makes: key → new value, or None to remove it."""


class Denied(Exception):
    """The request is refused; the message names the field and says why."""


@dataclasses.dataclass(frozen=True)
class Requester:
    username: str
    groups: Sequence[str]
    operator: bool = False
    """The request comes from this operator itself (its finalizer, its bookkeeping): it never approves."""


def is_admin(requester: Requester, settings: SelfServiceSettings) -> bool:
    return not requester.operator and any(group in settings.admin_groups for group in requester.groups)


def is_steward(requester: Requester, settings: IngestSettings) -> bool:
    return not requester.operator and any(group in settings.steward_groups for group in requester.groups)


def _roles(spec: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(m.get("user")): str(m.get("role")) for m in (spec or {}).get("members", []) or []}


def _annotations(body: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


def _finalizers(body: Mapping[str, Any] | None) -> list[str]:
    return list(((body or {}).get("metadata") or {}).get("finalizers") or [])


def _ref(kind: str, body: Mapping[str, Any] | None) -> approval.ObjectRef:
    meta = (body or {}).get("metadata") or {}
    return approval.ObjectRef(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def review(
    *,
    operation: Operation,
    requester: Requester,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    settings: OperatorSettings,
    today: datetime.date,
    signer: approval.Signer | None = None,
) -> None:
    """Raise Denied with a message naming the field when the request breaks a rule."""
    admin = is_admin(requester, settings.self_service)
    user = requester.username.removeprefix(settings.kubernetes.user_prefix)
    new_spec = (new or {}).get("spec") or {}
    old_spec = (old or {}).get("spec") or {}
    privileged = admin or requester.operator

    if operation == "CREATE":
        valid_until = str(new_spec.get("validUntil", ""))
        if valid_until and valid_until < today.isoformat():
            raise Denied(f"spec.validUntil: {valid_until} is in the past; a new project needs a current approval")
        if not admin and new_spec.get("owner") != user:
            raise Denied(f"spec.owner: you ({user}) may only create projects that you own")
    elif operation == "UPDATE" and not privileged:
        if new_spec != old_spec:
            role = _roles(old_spec).get(user)
            if role not in ("owner", "maintainer"):
                raise Denied(f"spec.members: only the project's owners and maintainers may change it ({user} is "
                             f"{'a ' + role if role else 'not a member'})")  # fmt: skip
            if new_spec.get("owner") != old_spec.get("owner") and role != "owner":
                raise Denied("spec.owner: only the current owner may hand the project to another owner")
        if settings.finalizer in _finalizers(old) and settings.finalizer not in _finalizers(new):
            raise Denied(f"metadata.finalizers: only the operator removes {settings.finalizer}; it revokes every "
                         "access first")  # fmt: skip
    elif operation == "DELETE" and not admin:
        if _roles(old_spec).get(user) != "owner":
            raise Denied(f"metadata.name: only the project's owner may delete it ({user} is not)")

    if operation == "CREATE" or (operation == "UPDATE" and new_spec != old_spec):
        _check_plan(new, settings, today)
    if operation in ("CREATE", "UPDATE"):
        _check_approval("ResearchProject", "platform admins", admin, requester, old, new, signer)


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


def _check_approval(kind: str, approvers: str, authorized: bool, requester: Requester,
                    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                    signer: approval.Signer | None) -> None:  # fmt: skip
    """Second line behind the mutating webhook: the trigger is for approvers, the record only ever ours."""
    before, after = _annotations(old), _annotations(new)
    if APPROVE_ANNOTATION in after and not authorized:
        raise Denied(f"metadata.annotations[{APPROVE_ANNOTATION}]: only {approvers} may approve")
    if after.get(APPROVAL_ANNOTATION) == before.get(APPROVAL_ANNOTATION):
        return
    if not authorized:
        raise Denied(f"metadata.annotations[{APPROVAL_ANNOTATION}]: only {approvers} may approve, and only the "
                     "operator's webhook writes this annotation")  # fmt: skip
    if APPROVAL_ANNOTATION in after:
        found = signer.verify(_ref(kind, new), after[APPROVAL_ANNOTATION]) if signer else None
        if found is None or found.by != requester.username:
            raise Denied(f"metadata.annotations[{APPROVAL_ANNOTATION}]: not a record this operator signed for "
                         f"{requester.username}; approve with {APPROVE_ANNOTATION}=yes instead")  # fmt: skip


def _keep(before: Mapping[str, str], after: Mapping[str, str]) -> Annotations:
    """Someone who may not approve: an approval their update dropped (kubectl replace, edit) is put back; one they
    set or changed is left for the validating webhook to refuse, with a message, rather than dropped silently."""
    if APPROVAL_ANNOTATION not in after and APPROVAL_ANNOTATION in before:
        return {APPROVAL_ANNOTATION: before[APPROVAL_ANNOTATION]}
    return {}


def stamp(
    *,
    kind: Literal["ResearchProject", "DataIngest", "GpuReservation"],
    operation: Operation,
    requester: Requester,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    settings: OperatorSettings,
    signer: approval.Signer,
    now: datetime.datetime,
    request: approval.Request | None = None,
) -> Annotations:
    """The mutating webhook's annotation changes (see the module docstring).

    An approver's (platform admin for projects and GPU bookings, data steward for ingests) create or update
    is the approval, unless an earlier verified approval still covers the object (re-applying changes
    nothing); the trigger always stamps anew. A project's grant is its governed spec; an ingest's spec is
    immutable, so its grant is empty; a booking's grant is what its `request` asks (None: nothing known to
    approve yet, e.g. no project).
    """
    ref = _ref(kind, new)
    before, after = _annotations(old), _annotations(new)
    project = kind == "ResearchProject"
    approver = is_steward(requester, settings.ingest) if kind == "DataIngest" else is_admin(requester,
                                                                                           settings.self_service)
    if not approver:
        return _keep(before, after)
    changes: Annotations = {APPROVE_ANNOTATION: None}
    grant: dict[str, Any] = {}
    if project:
        try:
            spec = ResearchProjectSpec.model_validate(dict(new.get("spec") or {}))
        except pydantic.ValidationError:
            return changes  # the schema refuses it
        grant = approval.governed(spec)
    elif request is not None:
        grant = dict(request.wanted)

    def still_covers(found: approval.Approval) -> bool:
        if project:
            return approval.covers(found, spec, settings.self_service)
        return request is None or approval.decide_request(request, found).approved

    if operation == "UPDATE" and APPROVE_ANNOTATION not in after:
        for text in (after.get(APPROVAL_ANNOTATION), before.get(APPROVAL_ANNOTATION)):
            found = signer.verify(ref, text)
            if found is not None and still_covers(found):
                return {**changes, APPROVAL_ANNOTATION: text}  # unchanged: re-applying changes nothing
    changes[APPROVAL_ANNOTATION] = signer.stamp(ref, requester.username, grant, now)
    return changes


def review_ingest(*, requester: Requester, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                  ingest: IngestSettings, signer: approval.Signer | None = None) -> None:  # fmt: skip
    """A DataIngest's approval: only data stewards, only as the webhook signed it."""
    _check_approval("DataIngest", "data stewards", is_steward(requester, ingest), requester, old, new, signer)


BOOKER_ROLES = ("owner", "maintainer", "member")
"""Project roles that may book GPUs; viewers may not."""


def review_gpu_reservation(
    *,
    operation: Operation,
    requester: Requester,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    ledger: gpu_bookings.Ledger,
    settings: OperatorSettings,
    slurm_enabled: bool,
    now: datetime.datetime,
    signer: approval.Signer | None = None,
) -> None:
    """A GpuReservation is refused, naming the field, when it cannot be admitted: who books, when, which
    family, within the project's validity, and whether it fits the family's capacity at every instant
    (the controller decides definitively; this answer is the one researchers see at `kubectl apply`)."""
    admin = is_admin(requester, settings.self_service)
    user = requester.username.removeprefix(settings.kubernetes.user_prefix)
    if operation in ("CREATE", "UPDATE"):
        _check_approval("GpuReservation", "platform admins", admin, requester, old, new, signer)
    if operation == "UPDATE" and (old or {}).get("spec") == (new or {}).get("spec"):
        return  # metadata only (approval, finalizers, labels)
    booking = gpu_bookings.booking_from_body(new or {})
    if booking is None:
        raise Denied("spec: not a valid GpuReservation (kubectl explain gpureservation.spec)")
    project = ledger.projects.get(booking.namespace)
    refusal = gpu_reservation.project_refusal(project, booking.namespace)
    if refusal is not None or project is None:
        raise Denied(refusal.message if refusal else "metadata.namespace: no project")
    if not admin and project.roles.get(user) not in BOOKER_ROLES:
        role = project.roles.get(user)
        raise Denied(f"metadata.namespace: only project {project.name}'s owners, maintainers and members may book "
                     f"GPUs ({user} is {'a ' + role if role else 'not a member'})")  # fmt: skip
    gpu = settings.gpu
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    problem = gpu_reservation.spec_refusal(booking, project, gpu, capacity, slurm_enabled)
    if problem is not None:
        raise Denied(problem.message)
    before = gpu_bookings.booking_from_body(old) if operation == "UPDATE" and old else None
    if before is None and booking.start < now - gpu_reservation.START_SKEW:
        raise Denied(f"spec.start: {gpu_calendar.stamp(booking.start)} is in the past; book from now on")
    if before is not None and before.start <= now and booking.start != before.start:
        raise Denied(f"spec.start: the window started at {gpu_calendar.stamp(before.start)}; only spec.end and "
                     "spec.count can change now")  # fmt: skip
    if before is not None and booking.end <= now:
        raise Denied(f"spec.end: {gpu_calendar.stamp(booking.end)} is in the past; delete the booking to end it now")
    if not capacity.known:
        return  # the controller decides once the pool can be read again
    if booking.count > capacity.gpus:
        raise Denied(f"spec.count: {capacity.label} has {capacity.gpus} GPUs ({capacity.detail})")
    if before is not None:
        booking = dataclasses.replace(booking, uid=before.uid)
    candidate = booking.slot(now)
    waiting = [b.slot(now) for b in gpu_reservation.undecided(ledger, booking, gpu, slurm_enabled, now)]
    held = gpu_reservation.competing(ledger, booking, candidate.start, candidate.end) + waiting
    conflict = gpu_calendar.first_conflict(held, candidate, capacity.gpus)
    if conflict is not None:
        horizon = datetime.timedelta(days=gpu.calendar_horizon_days)
        around = gpu_reservation.competing(ledger, booking, candidate.start - horizon, candidate.end + horizon)
        windows = gpu_calendar.nearby_windows(around + waiting, capacity.gpus, candidate, horizon, now)
        raise Denied("spec.count: does not fit: " + gpu_calendar.explain(capacity.label, candidate, conflict, windows))


def review_node(
    *,
    operation: Operation,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    settings: OperatorSettings,
    profiles: Profiles,
    today: datetime.date,
) -> None:
    """Raise Denied naming the field when a FederatedNode breaks a rule the schema cannot express."""
    if operation not in ("CREATE", "UPDATE") or new is None:
        return
    new_spec, old_spec = new.get("spec") or {}, (old or {}).get("spec") or {}
    if operation == "UPDATE" and new_spec == old_spec:
        return  # finalizers and bookkeeping: an object admitted earlier can always be retired
    try:
        spec = FederatedNodeSpec.model_validate(dict(new_spec))
    except pydantic.ValidationError:
        return  # the CRD schema reports these, naming the field
    name = str((new.get("metadata") or {}).get("name", ""))
    try:  # the reconciler's own planning checks: reserved names, unknown profile or backup target
        federated_node.plan(name, "", spec, settings, profiles, today)
    except federated_node.InvalidPlan as error:
        raise Denied(str(error)) from None
    before = {str(i.get("user")): str(i.get("expires")) for i in _integrators(old)}
    latest = today + datetime.timedelta(days=settings.federation.max_integrator_days)
    for index, integrator in enumerate(_integrators(new)):
        user, expires = str(integrator.get("user")), str(integrator.get("expires", ""))
        if before.get(user) == expires:
            continue  # unchanged: an entry that has since expired stays as the record of it
        field = f"spec.integratorAccess.integrators[{index}].expires"
        if expires < today.isoformat():
            raise Denied(f"{field}: {expires} is in the past; access must end today or later")
        if expires > latest.isoformat():
            days = settings.federation.max_integrator_days
            raise Denied(f"{field}: {expires} is more than {days} days away (federation.maxIntegratorDays); "
                         f"grant access until {latest.isoformat()} at most")  # fmt: skip


def _integrators(body: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    access = ((body or {}).get("spec") or {}).get("integratorAccess") or {}
    return list(access.get("integrators") or [])
