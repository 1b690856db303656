"""Reconcile a GpuReservation: check it, decide it definitively, enforce it in its pool, and say when to
look again.

Order of one reconcile: spec → project (gone / cordoned: cancel) → checks the webhook also makes →
approval above the project's limits → admission decision (under the family's lock, in the stable order
creation time then name; the loser is Rejected with reason Conflict) → phase from the admitted window
and the clock → the pool's part (Slurm reservation: SchedulerReady; Kubernetes quota and placement:
QuotaReady) → capacity still enough? (CapacityAtRisk) → status, and the next instant the phase changes.

The decision and the phase are functions of stored status, the ledger and the clock only, so a reconcile
after a crash at any line, or at any later time, comes to the same result. Nothing here imports kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, ResourceQuota

from enclave_operator import conditions, gpu_calendar, reasons
from enclave_operator.api.gpu_reservation import KIND
from enclave_operator.backends import kube, ownership, slurm_reservations
from enclave_operator.backends.errors import BackendError
from enclave_operator.backends.slurm_accounts import Sacctmgr
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import Recorder
from enclave_operator.reconcilers import approval, gpu_bookings, project_space
from enclave_operator.reconcilers.gpu_bookings import Booking, Capacity, Ledger, ProjectView, booking_from_body
from enclave_operator.settings import GpuSettings, OperatorSettings

BOOKING_KEYS = ("gpu", "hours", "leadDays")
"""What a GpuReservation's approval grants: GPUs held at once, the window's hours, days ahead of the start."""
START_SKEW = datetime.timedelta(seconds=60)
"""A start up to this far in the past is accepted at creation (clocks and typing take time)."""
QUOTA_NAME = "enclave-quota"
DECIDING = "decided in the stable order (creation time, then name) once every booking of its creation second is known"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a booking cannot be admitted (now, or ever); the message starts with the field."""

    reason: str
    message: str
    final: bool
    """True: it can never be admitted as it is (Rejected/Cancelled); False: it may later (Pending)."""


def project_refusal(project: ProjectView | None, namespace: str) -> Refusal | None:
    if project is None:
        return Refusal(reasons.REASON_PROJECT_NOT_FOUND,
                       f"metadata.namespace: {namespace} is not the namespace of a ResearchProject", False)  # fmt: skip
    if project.deleting:
        return Refusal(reasons.REASON_PROJECT_DELETED, f"project {project.name} is being deleted", True)
    if project.cordoned:
        return Refusal(reasons.REASON_PROJECT_CORDONED, f"project {project.name} is cordoned (validUntil "
                       f"{project.valid_until.isoformat()} has passed): no new work can start", True)  # fmt: skip
    if not project.ready:
        return Refusal(reasons.REASON_PROJECT_NOT_READY, f"project {project.name} is not Ready yet", False)
    return None


def end_of_validity(project: ProjectView) -> datetime.datetime:
    """validUntil is the last valid day (UTC): bookings may run until its midnight."""
    day = project.valid_until + datetime.timedelta(days=1)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)


def spec_refusal(booking: Booking, project: ProjectView, gpu: GpuSettings, capacity: Capacity,
                 slurm_enabled: bool) -> Refusal | None:  # fmt: skip
    """What is wrong with the booking for this platform and project, whatever else is booked."""
    family = gpu.family(booking.family)
    if family is None:
        known = ", ".join(f.name for f in gpu.families) or "none configured"
        return Refusal(reasons.REASON_NOT_BOOKABLE,
                       f"spec.family: {booking.family} is not a GPU family of this platform (families: {known})",
                       True)  # fmt: skip
    in_pool = family.slurm_gres_type if booking.pool == "slurm" else family.node_label_value
    if not in_pool or (booking.pool == "slurm" and not slurm_enabled):
        return Refusal(
            reasons.REASON_NOT_BOOKABLE,
            f"spec.pool: {booking.family} GPUs cannot be booked in the {booking.pool} pool here",
            True,
        )
    if booking.pool == "slurm" and project.slurm_account is None:
        return Refusal(reasons.REASON_NOT_BOOKABLE, f"spec.pool: project {project.name} has no Slurm account; "
                       "set spec.compute.slurm on the project to book Slurm GPUs", False)  # fmt: skip
    if booking.end > end_of_validity(project):
        return Refusal(reasons.REASON_NOT_BOOKABLE, f"spec.end: {gpu_calendar.stamp(booking.end)} is after the "
                       f"project's validUntil ({project.valid_until.isoformat()})", True)  # fmt: skip
    if booking.pool == "slurm" and capacity.known and capacity.unit > 1 and booking.count % capacity.unit:
        options = ", ".join(str(capacity.unit * i) for i in range(1, 4))
        return Refusal(reasons.REASON_NOT_BOOKABLE,
                       f"spec.count: Slurm reserves whole nodes; {booking.family} nodes have {capacity.unit} GPUs "
                       f"each: book {options}, …", True)  # fmt: skip
    return None


def _ceil(value: float) -> str:
    return str(max(math.ceil(value - 1e-9), 0))


def _amount(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def approval_request(booking: Booking, project: ProjectView, ledger: Ledger, gpu: GpuSettings,
                     now: datetime.datetime) -> approval.Request:  # fmt: skip
    """What the booking asks above the project's limits: GPUs held at once (with the project's other
    bookings), the window's hours, and how many days ahead it starts."""
    limits = gpu.limits_for(project.name)
    others = [
        b.booked if b.holds and b.booked is not None else b.slot()
        for b in ledger.namespace_bookings(booking.namespace)
        if b.uid != booking.uid and not b.final and not b.deleting
    ]
    peak, _ = gpu_calendar.peak([*others, booking.slot()], booking.start, booking.end)
    wanted = {
        "gpu": str(peak),
        "hours": _ceil((booking.end - booking.start).total_seconds() / 3600),
        "leadDays": _ceil((booking.start - now).total_seconds() / 86400),
    }
    allowed = {"gpu": str(limits.max_gpus), "hours": _amount(limits.max_hours),
               "leadDays": _amount(limits.max_lead_days)}  # fmt: skip
    return approval.Request(wanted, allowed, f"project {project.name}'s booking limits", "WithinBookingLimits",
                            f"gpureservation -n {booking.namespace} {booking.name}")  # fmt: skip


def approval_decision(booking: Booking, project: ProjectView, ledger: Ledger, gpu: GpuSettings,
                      now: datetime.datetime) -> approval.RequestDecision:  # fmt: skip
    """Within the project's limits, or approved by a record this operator signed (ledger.signer), or waiting."""
    ref = approval.ObjectRef(KIND.kind, booking.namespace, booking.name)
    found, unverified = approval.read(ledger.signer, ref, booking.approval)
    return approval.decide_request(approval_request(booking, project, ledger, gpu, now), found, unverified=unverified)


def eligible(booking: Booking, ledger: Ledger, gpu: GpuSettings, slurm_enabled: bool, now: datetime.datetime) -> bool:
    """Could be decided now: project fine, nothing wrong with the spec, approved when above the limits."""
    project = ledger.projects.get(booking.namespace)
    if project_refusal(project, booking.namespace) is not None or project is None:
        return False
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    if spec_refusal(booking, project, gpu, capacity, slurm_enabled) is not None:
        return False
    return approval_decision(booking, project, ledger, gpu, now).approved


@dataclasses.dataclass(frozen=True)
class Decision:
    admitted: bool
    slot: gpu_calendar.Slot
    """The window decided on (from now on when it already started)."""
    message: str


def competing(ledger: Ledger, booking: Booking, since: datetime.datetime,
              until: datetime.datetime) -> list[gpu_calendar.Slot]:  # fmt: skip
    """What already holds GPUs of the booking's family and pool within [since, until) (the booking left out)."""
    return ledger.held(booking.pool, booking.family, since, until, exclude=booking.uid)


def undecided(ledger: Ledger, booking: Booking, gpu: GpuSettings, slurm_enabled: bool,
              now: datetime.datetime) -> list[Booking]:  # fmt: skip
    """The family's other bookings that wait for a decision and could be admitted now, in the stable order."""
    return sorted(
        (b for b in ledger.waiting_bookings(booking.pool, booking.family)
         if b.uid != booking.uid and b.end > now and eligible(b, ledger, gpu, slurm_enabled, now)),
        key=lambda b: b.order,
    )  # fmt: skip


def decide(ledger: Ledger, booking: Booking, gpu: GpuSettings, slurm_enabled: bool,
           now: datetime.datetime) -> Decision:  # fmt: skip
    """The definitive decision: admitted bookings keep their GPUs; bookings not yet decided are taken in
    the stable order (creation time, then name), each admitted when it fits, so two bookings raced past
    the webhook always resolve the same way, whichever reconcile runs first. Call under the family lock."""
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    candidate = booking.slot(now)
    candidates = [candidate]
    if booking.booked is None:
        earlier = [b for b in undecided(ledger, booking, gpu, slurm_enabled, now) if b.order < booking.order]
        candidates = [b.slot(now) for b in earlier] + [candidate]
    horizon = datetime.timedelta(days=gpu.calendar_horizon_days)
    since = min(c.start for c in candidates)
    held = competing(ledger, booking, since - horizon, max(c.end for c in candidates) + horizon)
    accepted, rejected = gpu_calendar.admit_in_order(held, candidates, capacity.gpus)
    conflict = rejected.get(candidate.key)
    if conflict is None:
        return Decision(True, candidate, f"{booking.count} {capacity.label} GPUs admitted "
                        f"({gpu_calendar.stamp(candidate.start)} to {gpu_calendar.stamp(candidate.end)})")  # fmt: skip
    others = [*held, *(s for s in accepted if s.key != candidate.key)]
    windows = gpu_calendar.nearby_windows(others, capacity.gpus, candidate, horizon, now)
    return Decision(False, candidate, gpu_calendar.explain(capacity.label, candidate, conflict, windows))


# --- enforcement ------------------------------------------------------------------------------------


def reservation_name(booking: Booking, gpu: GpuSettings) -> str:
    return gpu.slurm_reservation.format(namespace=booking.namespace, name=booking.name)


def desired_reservation(booking: Booking, project: ProjectView, gpu: GpuSettings,
                        capacity: Capacity) -> slurm_reservations.DesiredReservation:  # fmt: skip
    assert booking.booked is not None and project.slurm_account is not None
    family = gpu.family(booking.family)
    assert family is not None
    return slurm_reservations.DesiredReservation(
        name=reservation_name(booking, gpu),
        start=booking.booked.start,
        end=booking.booked.end,
        account=project.slurm_account,
        node_count=max(math.ceil(booking.booked.count / max(capacity.unit, 1)), 1),
        partition=family.slurm_partition,
        feature=family.slurm_feature,
        flags=tuple(gpu.slurm_flags),
    )


async def quota_condition(client: AsyncClient | ownership.OwnedNamespaces, namespace: str, gpus_now: int,
                          baseline: int, phase: str) -> conditions.Cond:  # fmt: skip
    """QuotaReady: the namespace's GPU quota is what the project's active bookings make it."""
    if phase == "Scheduled":
        return conditions.true(reasons.QUOTA_READY, reasons.REASON_NOT_YET,
                               "the project's GPU quota rises by this booking at its start")  # fmt: skip
    try:
        quota = await kube.call(f"get resourcequota {namespace}/{QUOTA_NAME}",
                                client.get(ResourceQuota, QUOTA_NAME, namespace=namespace))  # fmt: skip
    except kube.NotFound:
        return conditions.false(reasons.QUOTA_READY, reasons.REASON_PROGRESSING, "the project's quota does not exist")
    except ownership.NotOwned as error:
        return conditions.false(reasons.QUOTA_READY, reasons.REASON_NOT_OWNED, str(error))
    except BackendError as error:
        return conditions.false(reasons.QUOTA_READY, reasons.REASON_BACKEND_UNAVAILABLE, str(error))
    hard = dict(quota.spec.hard or {}) if quota.spec else {}
    have = str(hard.get("requests.nvidia.com/gpu", "0"))
    want = str(baseline + gpus_now)
    if have != want:
        return conditions.false(reasons.QUOTA_READY, reasons.REASON_PROGRESSING,
                                f"requests.nvidia.com/gpu is {have}, becoming {want}")  # fmt: skip
    return conditions.true(reasons.QUOTA_READY, reasons.REASON_UP_TO_DATE,
                           f"requests.nvidia.com/gpu is {want} ({baseline} + {gpus_now} booked)")  # fmt: skip


def _pod_gpus(pod: Mapping[str, Any], resource: str) -> int:
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get(resource) or (res.get("limits") or {}).get(resource) or 0
        total += int(value)
    return total


def pods_to_evict(pods: Sequence[Mapping[str, Any]], node_values: Mapping[str, str | None], allowed: Sequence[str],
                  family_value: str, quota: int, resource: str) -> list[str]:  # fmt: skip
    """The GPU pods to evict once a booking's grace period has passed: those on a family the project may not
    use now, then, newest first, those on the ended family's nodes while the GPUs in use exceed the quota."""
    running = [p for p in pods if (p.get("spec") or {}).get("nodeName") and _pod_gpus(p, resource) > 0
               and (p.get("status") or {}).get("phase") in ("Pending", "Running")
               and not (p.get("metadata") or {}).get("deletionTimestamp")]  # fmt: skip
    evict = [p for p in running if node_values.get(p["spec"]["nodeName"]) not in allowed]
    kept = [p for p in running if p not in evict]
    in_use = sum(_pod_gpus(p, resource) for p in kept)
    ended = sorted((p for p in kept if node_values.get(p["spec"]["nodeName"]) == family_value),
                   key=lambda p: str(p["metadata"].get("creationTimestamp", "")), reverse=True)  # fmt: skip
    for pod in ended:
        if in_use <= quota:
            break
        evict.append(pod)
        in_use -= _pod_gpus(pod, resource)
    return [str(p["metadata"]["name"]) for p in evict]


async def evict_after_grace(client: AsyncClient | ownership.OwnedNamespaces, booking: Booking, ledger: Ledger,
                            gpu: GpuSettings, baseline: int, now: datetime.datetime,
                            recorder: Recorder) -> int:  # fmt: skip
    """Evict (Eviction API: PodDisruptionBudgets are respected) what `pods_to_evict` names; the count."""
    family = gpu.family(booking.family)
    if family is None or not family.node_label_value:
        return 0
    gpus_now, families_now = ledger.active_kubernetes(booking.namespace, now)
    allowed = project_space.gpu_placement(gpu, families_now)[project_space.GPU_VALUES_ANNOTATION].split(",")
    pods = await kube.call(f"list pods in {booking.namespace}",
                           _collect(client.list(Pod, namespace=booking.namespace)))  # fmt: skip
    raw = [p.to_dict() for p in pods]
    values = {name: node.label_value for name, node in ledger.nodes.items()}
    names = pods_to_evict(raw, values, allowed, family.node_label_value, baseline + gpus_now, gpu.resource_name)
    evicted = 0
    for name in names:
        eviction = Pod.Eviction(metadata=ObjectMeta(name=name, namespace=booking.namespace))
        try:
            await kube.call(f"evict pod {booking.namespace}/{name}",
                            client.create(eviction, name=name, namespace=booking.namespace))  # fmt: skip
        except kube.NotFound:
            continue
        except BackendError as error:
            recorder.event("Warning", reasons.EVENT_CANNOT_EVICT_POD, f"cannot evict pod {name}: {error}")
            continue
        evicted += 1
        recorder.event(
            "Normal",
            reasons.EVENT_EVICTED_POD,
            f"evicted GPU pod {name}: the booking ended {gpu_calendar.span(gpu.end_grace_seconds)} ago",
        )
    return evicted


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


# --- the reconcile ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GpuResult:
    status: dict[str, Any]
    changed: bool
    wake_at: datetime.datetime | None
    """When to reconcile again at the latest (the next phase change); None: only on events."""
    retry: bool
    """A part is not ready: look again soon."""
    project_affected: bool
    """The project's active Kubernetes bookings changed: its quota and placement must follow now."""
    booking: Booking | None
    """The booking as this reconcile decided it (record it in the ledger once the status is written)."""


def _stamp(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _booked_status(slot: gpu_calendar.Slot, generation: int) -> dict[str, Any]:
    return {"count": slot.count, "start": _stamp(slot.start), "end": _stamp(slot.end), "generation": generation}


def phase_of(booking: Booking, now: datetime.datetime) -> str:
    """The phase an admitted booking has at `now`."""
    assert booking.booked is not None
    if now < booking.booked.start:
        return "Scheduled"
    return "Active" if now < booking.booked.end else "Expired"


def _summary(phase: str, reason: str, message: str, parts: Sequence[conditions.Cond]) -> list[conditions.Cond]:
    """Ready / Reconciling / Stalled for a booking: Ready while admitted and enforced (Scheduled, Active)."""
    if phase in ("Scheduled", "Active"):
        return conditions.summarize(list(parts))
    stalled = phase == "Rejected"
    return [
        conditions.false(reasons.READY, reason, message),
        conditions.Cond(
            reasons.RECONCILING,
            "True" if phase == "Pending" else "False",
            reason,
            message if phase == "Pending" else "",
        ),  # fmt: skip
        conditions.Cond(reasons.STALLED, "True" if stalled else "False", reason, message if stalled else ""),
    ]


@dataclasses.dataclass
class _Draft:
    """The status being computed, and what happened on the way."""

    current: dict[str, Any]
    generation: int
    conds: list[conditions.Cond] = dataclasses.field(default_factory=list)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def result(self, phase: str, reason: str, message: str, *, parts: Sequence[conditions.Cond] = (),
               wake_at: datetime.datetime | None = None, retry: bool = False, project_affected: bool = False,
               booking: Booking | None = None) -> GpuResult:  # fmt: skip
        computed = [*parts, *_summary(phase, reason, message, parts), *self.conds]
        merged, _ = conditions.merge(self.current.get("conditions", []), computed, self.generation)
        status = {**self.current, **self.fields, "phase": phase, "observedGeneration": self.generation,
                  "conditions": merged, "nextTransition": _stamp(wake_at)}  # fmt: skip
        # None removes a field (merge patch); for a field that is not there it would only be a write each time.
        status = {k: v for k, v in status.items() if v is not None or self.current.get(k) is not None}
        return GpuResult(status, status != self.current, wake_at, retry, project_affected, booking)


async def reconcile(
    *,
    body: Mapping[str, Any],
    ledger: Ledger,
    settings: OperatorSettings,
    kube_client: AsyncClient,
    scontrol: Sacctmgr | None,
    recorder: Recorder,
    now: datetime.datetime,
) -> GpuResult:
    """One reconcile of one booking; safe to run again at any time."""
    gpu = settings.gpu
    meta = body["metadata"]
    draft = _Draft(dict(body.get("status") or {}), int(meta.get("generation") or 1))
    phase = draft.current.get("phase")
    booking = booking_from_body(body)
    if booking is None:
        return draft.result("Rejected", reasons.REASON_INVALID_SPEC, "the spec does not parse; see the CRD schema")
    project = ledger.projects.get(booking.namespace)
    draft.fields.update(start=_stamp(booking.start), end=_stamp(booking.end))
    if project is not None:
        draft.fields["project"] = project.name
    was_active_k8s = booking.pool == "kubernetes" and phase == "Active"

    if phase in ("Rejected", "Cancelled"):
        await _remove_reservation(booking, project, gpu, scontrol, recorder, draft)
        return draft.result(phase, _ready_reason(draft.current, phase), _ready_message(draft.current))

    refusal = project_refusal(project, booking.namespace)
    if refusal is not None and refusal.final and phase != "Expired":
        recorder.event("Normal", reasons.EVENT_CANCELLED_BOOKING, refusal.message)
        await _remove_reservation(booking, project, gpu, scontrol, recorder, draft)
        booking = dataclasses.replace(booking, phase="Cancelled")
        return draft.result("Cancelled", refusal.reason, refusal.message, project_affected=was_active_k8s,
                            booking=booking)  # fmt: skip

    slurm_enabled = scontrol is not None
    undecided = booking.booked is None or booking.booked_generation < booking.generation
    if undecided and phase != "Expired":
        outcome = await _admit(booking, project, refusal, ledger, gpu, slurm_enabled, now, draft, recorder,
                               kube_client)  # fmt: skip
        if isinstance(outcome, GpuResult):
            return outcome
        booking = outcome
    assert booking.booked is not None or phase == "Expired"
    if booking.booked is None:
        return draft.result("Expired", reasons.REASON_WINDOW_PASSED, "the window passed before it was admitted")

    new_phase = phase_of(booking, now)
    booking = dataclasses.replace(booking, phase=new_phase)
    draft.fields["booked"] = _booked_status(booking.booked, booking.booked_generation or booking.generation)
    if new_phase != phase:
        _transition_event(recorder, booking, new_phase)
    project_affected = booking.pool == "kubernetes" and (new_phase == "Active") != was_active_k8s
    assert project is not None or new_phase == "Expired"

    parts: list[conditions.Cond] = []
    retry = False
    if booking.pool == "slurm":
        cond, retry = await _slurm_part(booking, project, ledger, gpu, scontrol, recorder, new_phase, draft)
        parts.append(cond)
    elif new_phase in ("Scheduled", "Active") and project is not None:
        gpus_now, _ = ledger.active_kubernetes(booking.namespace, now)
        cond = await quota_condition(_owned(kube_client, project), booking.namespace, gpus_now,
                                     project.baseline_gpus, new_phase)  # fmt: skip
        parts.append(cond)
        retry = cond.status != "True"

    wake_at: datetime.datetime | None = booking.booked.start if new_phase == "Scheduled" else booking.booked.end
    if new_phase == "Expired":
        wake_at = None
        if booking.pool == "kubernetes" and draft.current.get("evictedPods") is None:
            due = booking.booked.end + datetime.timedelta(seconds=gpu.end_grace_seconds)
            if now >= due and project is not None:
                draft.fields["evictedPods"] = await evict_after_grace(
                    _owned(kube_client, project), booking, ledger, gpu, project.baseline_gpus, now, recorder
                )
            else:
                wake_at = due
    if new_phase in ("Scheduled", "Active"):
        draft.conds.append(_risk(booking, ledger, gpu, now, draft.current, recorder))
    reason = {"Scheduled": reasons.REASON_SCHEDULED, "Active": reasons.REASON_ACTIVE}.get(
        new_phase, reasons.REASON_EXPIRED
    )
    message = f"{booking.booked.count} GPUs from {gpu_calendar.stamp(booking.booked.start)} to " \
              f"{gpu_calendar.stamp(booking.booked.end)}"  # fmt: skip
    return draft.result(new_phase, reason, message, parts=parts, wake_at=wake_at, retry=retry,
                        project_affected=project_affected, booking=booking)  # fmt: skip


def _owned(client: AsyncClient, project: ProjectView) -> ownership.OwnedNamespaces:
    """The client for calls into the booking's namespace: only when it is the project's (ownership)."""
    return ownership.OwnedNamespaces(client, ownership.Owner(project.name))


def _ready_reason(current: Mapping[str, Any], default: str) -> str:
    return str((conditions.get(current.get("conditions", []), reasons.READY) or {}).get("reason") or default)


def _ready_message(current: Mapping[str, Any]) -> str:
    return str((conditions.get(current.get("conditions", []), reasons.READY) or {}).get("message") or "")


async def _admit(booking: Booking, project: ProjectView | None, refusal: Refusal | None, ledger: Ledger,
                 gpu: GpuSettings, slurm_enabled: bool, now: datetime.datetime, draft: _Draft,
                 recorder: Recorder, kube_client: AsyncClient) -> Booking | GpuResult:  # fmt: skip
    """Decide a new booking, or a change of an admitted one. Returns the booking with its admitted window,
    or the result to write (pending, rejected, change refused)."""
    changing = booking.booked is not None
    if booking.end <= now:
        if changing:
            return booking
        return draft.result("Expired", reasons.REASON_WINDOW_PASSED, "the window passed before it was admitted")
    if refusal is not None or project is None:
        assert refusal is not None
        return _not_now(booking, draft, refusal.reason, refusal.message, changing)
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    problem = spec_refusal(booking, project, gpu, capacity, slurm_enabled)
    if problem is not None:
        if problem.final and not changing:
            recorder.event("Warning", reasons.EVENT_CANNOT_ADMIT_BOOKING, problem.message)
            draft.conds.append(conditions.false(reasons.ADMITTED, problem.reason, problem.message))
            return draft.result("Rejected", problem.reason, problem.message, booking=dataclasses.replace(
                booking, phase="Rejected"))  # fmt: skip
        return _not_now(booking, draft, problem.reason, problem.message, changing)
    decision_approval = approval_decision(booking, project, ledger, gpu, now)
    draft.conds.append(conditions.Cond(reasons.APPROVED, "True" if decision_approval.approved else "False",
                                       decision_approval.reason, decision_approval.message))  # fmt: skip
    if not decision_approval.approved:
        if draft.current.get("phase") in (None, "Pending") and not changing and not _awaiting(draft.current):
            recorder.event("Normal", reasons.EVENT_AWAITING_APPROVAL, decision_approval.message)
        return _not_now(booking, draft, decision_approval.reason, decision_approval.message, changing)
    if not capacity.known:
        return _not_now(booking, draft, reasons.REASON_CAPACITY_UNKNOWN, f"{capacity.label}: {capacity.detail}",
                        changing)  # fmt: skip
    settled = booking.created + datetime.timedelta(seconds=gpu.decision_settle_seconds)
    if not changing and now < settled:
        draft.conds.append(conditions.unknown(reasons.ADMITTED, reasons.REASON_DECIDING, DECIDING))
        return draft.result("Pending", reasons.REASON_DECIDING, DECIDING, wake_at=settled)
    async with ledger.locks[(booking.pool, booking.family)]:
        known_since = ledger.fresh_as_of.get((booking.pool, booking.family))
        if not changing and (known_since is None or known_since < settled):
            await gpu_bookings.refresh_family(ledger, kube_client, booking.pool, booking.family, now)
            known = ledger.bookings.get(booking.uid)
            if known is not None and known.booked is not None and known.holds:
                return known  # admitted meanwhile (by an earlier run of this reconcile, now visible)
        decision = decide(ledger, booking, gpu, slurm_enabled, now)
        if decision.admitted:
            booking = dataclasses.replace(
                booking,
                booked=decision.slot,
                booked_generation=booking.generation,
                phase=phase_of(dataclasses.replace(booking, booked=decision.slot), now),
            )
            ledger.put_booking(booking)  # visible to the next decision at once, before the status write
    if decision.admitted:
        recorder.event("Normal", reasons.EVENT_ADMITTED_BOOKING, decision.message)
        draft.conds.append(conditions.true(reasons.ADMITTED, reasons.REASON_FITS, decision.message))
        return booking
    if changing:
        recorder.event("Warning", reasons.EVENT_CANNOT_CHANGE_BOOKING, decision.message)
        draft.conds.append(
            conditions.false(
                reasons.ADMITTED,
                reasons.REASON_CHANGE_CONFLICT,
                f"the change does not fit, the admitted window stays: {decision.message}",
            )
        )
        return booking
    recorder.event("Warning", reasons.EVENT_CANNOT_ADMIT_BOOKING, decision.message)
    draft.conds.append(conditions.false(reasons.ADMITTED, reasons.REASON_CONFLICT, decision.message))
    rejected = dataclasses.replace(booking, phase="Rejected")
    ledger.put_booking(rejected)
    return draft.result("Rejected", reasons.REASON_CONFLICT, decision.message, booking=rejected)


def _awaiting(current: Mapping[str, Any]) -> bool:
    return (conditions.get(current.get("conditions", []), reasons.APPROVED) or {}).get("status") == "False"


def _not_now(booking: Booking, draft: _Draft, reason: str, message: str, changing: bool) -> Booking | GpuResult:
    """Not decidable now: a new booking waits (Pending); a change waits while the admitted window stays."""
    if changing:
        draft.conds.append(conditions.false(reasons.ADMITTED, reasons.REASON_CHANGE_REFUSED,
                                            f"the change waits, the admitted window stays: {message}"))  # fmt: skip
        return booking
    draft.conds.append(conditions.unknown(reasons.ADMITTED, reason, message))
    return draft.result("Pending", reason, message, wake_at=booking.end)


def _transition_event(recorder: Recorder, booking: Booking, phase: str) -> None:
    assert booking.booked is not None
    if phase == "Active":
        recorder.event("Normal", reasons.EVENT_STARTED_BOOKING,
                       f"{booking.booked.count} {booking.family} GPUs ({booking.pool}) are the project's until "
                       f"{gpu_calendar.stamp(booking.booked.end)}")  # fmt: skip
    elif phase == "Expired":
        recorder.event("Normal", reasons.EVENT_ENDED_BOOKING,
                       f"the window ended at {gpu_calendar.stamp(booking.booked.end)}")  # fmt: skip


def _risk(booking: Booking, ledger: Ledger, gpu: GpuSettings, now: datetime.datetime, current: Mapping[str, Any],
          recorder: Recorder) -> conditions.Cond:  # fmt: skip
    """CapacityAtRisk: replay the family's admitted bookings in their stable order against capacity now."""
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    if not capacity.known:
        return conditions.unknown(reasons.CAPACITY_AT_RISK, reasons.REASON_CAPACITY_UNKNOWN, capacity.detail)
    assert booking.booked is not None
    mine = booking.booked
    overlapping = ledger.held(booking.pool, booking.family, max(mine.start, now), mine.end, exclude=booking.uid)
    conflict = None
    if gpu_calendar.first_conflict(overlapping, mine, capacity.gpus) is not None:
        # Over capacity somewhere in this window: who keeps the GPUs is decided by replaying the stable order.
        held = sorted((b for b in ledger.family_bookings(booking.pool, booking.family) if b.holds and b.booked
                       and b.uid != booking.uid), key=lambda b: b.order)  # fmt: skip
        ordered = sorted([*held, booking], key=lambda b: b.order)
        conflict = gpu_calendar.at_risk([b.booked for b in ordered if b.booked], capacity.gpus, now).get(booking.key)
    if conflict is None:
        return conditions.false(reasons.CAPACITY_AT_RISK, reasons.REASON_CAPACITY_OK,
                                f"{capacity.label}: {capacity.gpus} GPUs ({capacity.detail})")  # fmt: skip
    message = (f"{capacity.label} has {capacity.gpus} GPUs now ({capacity.detail}); from "
               f"{gpu_calendar.stamp(conflict.instant)} earlier bookings hold {conflict.used}, so this booking "
               f"of {booking.count} does not fit; the platform team restores nodes or moves bookings")  # fmt: skip
    was = (conditions.get(current.get("conditions", []), reasons.CAPACITY_AT_RISK) or {}).get("status")
    if was != "True":
        recorder.event("Warning", reasons.EVENT_CAPACITY_AT_RISK, message)
    return conditions.true(reasons.CAPACITY_AT_RISK, reasons.REASON_CAPACITY_REDUCED, message)


async def _slurm_part(booking: Booking, project: ProjectView | None, ledger: Ledger, gpu: GpuSettings,
                      scontrol: Sacctmgr | None, recorder: Recorder, phase: str,
                      draft: _Draft) -> tuple[conditions.Cond, bool]:  # fmt: skip
    """SchedulerReady: the reservation exists as admitted while Scheduled or Active, and not after."""
    name = reservation_name(booking, gpu)
    if scontrol is None:
        return conditions.false(reasons.SCHEDULER_READY, "NotConfigured", "this enclave has no Slurm configured"), False
    if phase not in ("Scheduled", "Active") or project is None:
        removed = await _remove_reservation(booking, project, gpu, scontrol, recorder, draft)
        if not removed.done:
            return conditions.false(reasons.SCHEDULER_READY, reasons.REASON_BACKEND_ERROR, removed.message), True
        return conditions.false(reasons.SCHEDULER_READY, reasons.REASON_EXPIRED,
                                f"the window ended; Slurm reservation {name} is gone"), False  # fmt: skip
    capacity = ledger.capacity(booking.pool, booking.family, gpu)
    adapter = slurm_reservations.SlurmReservationAdapter(
        scontrol, desired_reservation(booking, project, gpu, capacity), made=_made(draft.current, name)
    )
    outcome = await managed.reconcile_part(adapter, recorder)
    if adapter.observed is not None:
        draft.fields["slurmReservation"] = name  # made for this booking: ours from now on (ownership)
        draft.fields["slurmNodes"] = adapter.observed.get("Nodes")
    return outcome.condition, outcome.retry


def _made(current: Mapping[str, Any], name: str) -> bool:
    """The booking's status records the reservation `name` as made for it."""
    return bool(name) and current.get("slurmReservation") == name


async def _remove_reservation(booking: Booking, project: ProjectView | None, gpu: GpuSettings,
                              scontrol: Sacctmgr | None, recorder: Recorder,
                              draft: _Draft | None = None) -> managed.FinalizeOutcome:  # fmt: skip
    """Delete the booking's reservation when it is the booking's (recorded in status, or exactly as created);
    one of another name's owner is left alone (ownership)."""
    if booking.pool != "slurm" or scontrol is None:
        return managed.FinalizeOutcome(True, "no Slurm reservation")
    name = reservation_name(booking, gpu)
    window = booking.booked or booking.slot()
    account = project.slurm_account if project is not None and project.slurm_account else "-"
    made = _made(draft.current if draft is not None else {}, name)
    placeholder = slurm_reservations.DesiredReservation(name, window.start, window.end, account, 1, None, None, ())
    adapter = slurm_reservations.SlurmReservationAdapter(scontrol, placeholder, made=made)
    outcome = await managed.finalize_part(adapter, "Delete", recorder)
    if outcome.done and draft is not None:
        draft.fields["slurmReservation"] = None
        draft.fields["slurmNodes"] = None
    return outcome


async def finalize(*, body: Mapping[str, Any], ledger: Ledger, settings: OperatorSettings,
                   scontrol: Sacctmgr | None, recorder: Recorder) -> managed.FinalizeOutcome:  # fmt: skip
    """A deleted booking: its Slurm reservation goes; the ledger forgets it (quota falls at the project's
    next reconcile, which the caller triggers)."""
    booking = booking_from_body(body)
    if booking is None:
        return managed.FinalizeOutcome(True, "nothing was provisioned for an invalid spec")
    draft = _Draft(dict(body.get("status") or {}), int((body.get("metadata") or {}).get("generation") or 1))
    return await _remove_reservation(booking, ledger.projects.get(booking.namespace), settings.gpu, scontrol,
                                     recorder, draft)  # fmt: skip
