"""What the operator knows about GPU bookings, projects and GPU nodes, in memory: the ledger.

The webhook, the GpuReservation controller and the ResearchProject reconcile (which raises the GPU
quota during active bookings) all read it, so an admission decision never lists 10,000 objects. It is
filled by a LIST at start-up (before any handler runs) and kept current by watch events (`follow`: its
own watches, not kopf's, because every operator process serves the webhook while only the active one
runs kopf's handlers: a standby's ledger must be as current as the active one's); the controller also
records its own status writes at once, so the next decision sees them even before
their watch event arrives (a watch event older than what is recorded is ignored: resourceVersions of
one object only grow). Decisions for one (pool, family) are serialized by one lock.

Pure data and bookkeeping; the records are built from raw objects (dicts) by the functions here.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

from enclave_operator import gpu_calendar, quantity, reasons
from enclave_operator.api.gpu_reservation import FINAL_PHASES, GpuReservationSpec
from enclave_operator.api.research_project import KIND as PROJECT_KIND
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.backends import kube, slurm_reservations
from enclave_operator.backends.errors import BackendError
from enclave_operator.backends.slurm_accounts import Sacctmgr
from enclave_operator.backends.slurm_reservations import SlurmFamilyCapacity
from enclave_operator.engine.locks import KeyedLocks
from enclave_operator.engine.status import GpuReservationResource, ResearchProjectResource
from enclave_operator.reconcilers import approval
from enclave_operator.reconcilers.approval import APPROVAL_ANNOTATION, Signer
from enclave_operator.settings import GpuSettings, OperatorSettings

FamilyKey = tuple[str, str]
"""(pool, family)."""


def _time(text: Any) -> datetime.datetime | None:
    if not text:
        return None
    value = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value.astimezone(datetime.UTC) if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _rv(meta: Mapping[str, Any]) -> int:
    try:
        return int(meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclasses.dataclass(frozen=True)
class Booking:
    """A GpuReservation as the calendar needs it."""

    uid: str
    namespace: str
    name: str
    created: datetime.datetime
    pool: str
    family: str
    count: int
    start: datetime.datetime
    end: datetime.datetime
    purpose: str
    generation: int
    resource_version: int
    phase: str | None
    booked: gpu_calendar.Slot | None
    """The admitted window (status.booked), None before admission."""
    booked_generation: int
    approval: Mapping[str, str]
    """The signed approval annotation (enclave.io/approval), when there is one: verified where it is used."""
    deleting: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def order(self) -> tuple[datetime.datetime, str, str]:
        """The stable order in which competing bookings are decided: creation time, then name."""
        return (self.created, self.namespace, self.name)

    @property
    def holds(self) -> bool:
        """Holds GPUs in the calendar: admitted, and neither ended early nor being deleted."""
        return self.booked is not None and self.phase not in ("Rejected", "Cancelled") and not self.deleting

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    def slot(self, now: datetime.datetime | None = None) -> gpu_calendar.Slot:
        """The spec's window (from `now` on, when it started already) as a calendar slot."""
        start = max(self.start, now) if now is not None else self.start
        return gpu_calendar.Slot(min(start, self.end), self.end, self.count, self.key)


def booking_from_body(body: Mapping[str, Any]) -> Booking | None:
    """None for an object whose spec does not parse (the CRD schema makes that rare)."""
    meta = body.get("metadata") or {}
    try:
        spec = GpuReservationSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return None
    status = body.get("status") or {}
    booked_raw = status.get("booked") or None
    booked = None
    booked_generation = 0
    if booked_raw:
        start, end = _time(booked_raw.get("start")), _time(booked_raw.get("end"))
        if start and end:
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            booked = gpu_calendar.Slot(start, end, int(booked_raw.get("count") or 0), key)
            booked_generation = int(booked_raw.get("generation") or 0)
    annotations = meta.get("annotations") or {}
    return Booking(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        created=_time(meta.get("creationTimestamp")) or datetime.datetime.now(datetime.UTC),
        pool=spec.pool,
        family=spec.family,
        count=spec.count,
        start=spec.window_start(),
        end=spec.window_end(),
        purpose=spec.purpose,
        generation=int(meta.get("generation") or 0),
        resource_version=_rv(meta),
        phase=status.get("phase"),
        booked=booked,
        booked_generation=booked_generation,
        approval={k: str(annotations[k]) for k in (APPROVAL_ANNOTATION,) if k in annotations},
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclasses.dataclass(frozen=True)
class ProjectView:
    """What bookings need to know about a namespace's ResearchProject."""

    name: str
    namespace: str
    valid_until: datetime.date
    ready: bool
    cordoned: bool
    deleting: bool
    roles: Mapping[str, str]
    """Members whose access has not expired → role."""
    slurm_account: str | None
    """The project's Slurm account, when the spec asks for one."""
    baseline_gpus: int
    """spec.compute.kubernetes.gpu: the GPU quota without bookings."""
    resource_version: int


def project_from_body(body: Mapping[str, Any], settings: OperatorSettings, today: datetime.date,
                      signer: Signer | None = None) -> ProjectView | None:  # fmt: skip
    """The project as bookings see it: its *effective* spec (reconcilers/approval.py), so an extension of
    validUntil or a GPU quota still waiting for approval is not yet there for bookings either."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name", ""))
    naming = settings.naming
    try:
        requested = ResearchProjectSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return None
    status = body.get("status") or {}
    found, unverified = approval.read(signer, approval.ObjectRef(PROJECT_KIND.kind, "", name),
                                      dict(meta.get("annotations") or {}))  # fmt: skip
    try:
        baseline = datetime.date.fromisoformat(status["validUntil"]) if status.get("validUntil") else None
    except ValueError:
        baseline = None
    spec = approval.decide(requested, found, settings.self_service, name, baseline_valid_until=baseline,
                           unverified=unverified).effective  # fmt: skip
    conds = status.get("conditions") or []
    ready = any(c.get("type") == reasons.READY and c.get("status") == "True" for c in conds)
    cordoned = today > spec.valid_until or any(
        c.get("type") == reasons.CORDONED and c.get("status") == "True" for c in conds
    )
    roles = {m.user: m.role for m in spec.members if not (m.expires and today > m.expires)}
    return ProjectView(
        name=name,
        namespace=str(status.get("namespace") or naming.namespace.format(project=name)),
        valid_until=spec.valid_until,
        ready=ready,
        cordoned=cordoned,
        deleting=bool(meta.get("deletionTimestamp")),
        roles=roles,
        slurm_account=naming.slurm_account.format(project=name) if spec.compute.slurm is not None else None,
        baseline_gpus=spec.compute.kubernetes.gpu,
        resource_version=_rv(meta),
    )


@dataclasses.dataclass(frozen=True)
class NodeView:
    """A Kubernetes node as GPU capacity."""

    name: str
    label_value: str | None
    gpus: int
    ready: bool
    unschedulable: bool

    @property
    def usable(self) -> bool:
        return self.ready and not self.unschedulable


def node_from_body(body: Mapping[str, Any], settings: GpuSettings) -> NodeView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    raw = (status.get("allocatable") or {}).get(settings.resource_name, 0)
    try:
        gpus = int(quantity.parse(raw))
    except ValueError:
        gpus = 0
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return NodeView(
        name=str(meta.get("name", "")),
        label_value=(meta.get("labels") or {}).get(settings.node_label_key),
        gpus=gpus,
        ready=ready,
        unschedulable=bool((body.get("spec") or {}).get("unschedulable")),
    )


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Bookable GPUs of one family in one pool, measured now."""

    pool: str
    family: str
    gpus: int
    unit: int
    """GPUs one allocation takes: 1 on Kubernetes, a whole node's GPUs in Slurm."""
    detail: str
    """Where the figure comes from (nodes counted, nodes left out), for messages and the calendar."""
    known: bool = True
    """False when the pool could not be read (e.g. slurmctld unreachable): nothing can be decided."""

    @property
    def label(self) -> str:
        return f"{self.family} ({self.pool})"


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


class _HeldIndex:
    """One family's admitted windows sorted by start, with the longest window's length."""

    def __init__(self, bookings: Iterable[Booking]) -> None:
        pairs = sorted(((b.booked, b.uid) for b in bookings if b.booked is not None), key=lambda p: p[0].start)
        self.slots = [p[0] for p in pairs]
        self.uids = [p[1] for p in pairs]
        self.starts = [s.start for s in self.slots]
        self.longest = max((s.end - s.start for s in self.slots), default=datetime.timedelta(0))

    def overlapping(self, since: datetime.datetime, until: datetime.datetime, exclude: str) -> list[gpu_calendar.Slot]:
        lo = bisect.bisect_right(self.starts, since - self.longest)
        hi = bisect.bisect_left(self.starts, until)
        return [slot for slot, uid in zip(self.slots[lo:hi], self.uids[lo:hi], strict=True)
                if uid != exclude and slot.end > since and not slot.empty]  # fmt: skip


class Ledger:
    """Bookings, projects and GPU nodes as last seen, with the operator's own writes applied at once."""

    def __init__(self, signer: Signer | None = None) -> None:
        self.signer = signer
        """Verifies the bookings' approvals (reconcilers/approval.py); None: no approval verifies."""
        self.bookings: dict[str, Booking] = {}
        self._by_family: dict[FamilyKey, dict[str, Booking]] = {}
        self._by_namespace: dict[str, dict[str, Booking]] = {}
        self._held: dict[FamilyKey, _HeldIndex] = {}
        self._waiting: dict[FamilyKey, dict[str, Booking]] = {}
        """Per family: bookings not decided yet (neither admitted nor final)."""
        self.projects: dict[str, ProjectView] = {}
        """By namespace."""
        self._project_namespace: dict[str, str] = {}
        """Project name → the namespace it is recorded under (every project event looks it up: no scan)."""
        self.nodes: dict[str, NodeView] = {}
        self.slurm: dict[str, SlurmFamilyCapacity] = {}
        self.slurm_error: str = ""
        self.slurm_read_at: float = 0.0
        """time.monotonic() of the last Slurm capacity read (0: never)."""
        self.locks = KeyedLocks()
        self.wakeups: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        """Per booking uid: set to make its timer look again now (capacity changed, project cordoned, …)."""
        self.fresh_as_of: dict[FamilyKey, datetime.datetime] = {}
        """Per (pool, family): when the last consistent LIST of its bookings started."""
        self.written: dict[str, dict[str, Any]] = {}
        """Per booking uid: the object as our last status write stored it, until the watch shows it."""

    def remember(self, stored: Mapping[str, Any]) -> None:
        """Record a booking as our status write stored it (the response carries the new resourceVersion)."""
        booking = booking_from_body(stored)
        if booking is not None:
            self.put_booking(booking)
            self.written[booking.uid] = dict(stored)

    def newest(self, uid: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body`, or our own later write of it when the watch has not delivered that yet."""
        written = self.written.get(uid)
        if written is None:
            return body
        if _rv(written.get("metadata") or {}) > _rv(body.get("metadata") or {}):
            return {**body, "status": written.get("status") or {}}
        del self.written[uid]
        return body

    # --- bookings -----------------------------------------------------------------------------------

    def put_booking(self, booking: Booking) -> None:
        known = self.bookings.get(booking.uid)
        if known is not None and known.resource_version > booking.resource_version:
            return  # an older event arriving after our own, newer write
        if known is not None:
            self._unindex(known)
        self.bookings[booking.uid] = booking
        self._by_family.setdefault((booking.pool, booking.family), {})[booking.uid] = booking
        self._by_namespace.setdefault(booking.namespace, {})[booking.uid] = booking
        if booking.booked is None and not booking.final and not booking.deleting:
            self._waiting.setdefault((booking.pool, booking.family), {})[booking.uid] = booking
        self._held.pop((booking.pool, booking.family), None)

    def drop_booking(self, uid: str) -> None:
        known = self.bookings.pop(uid, None)
        if known is not None:
            self._unindex(known)
        self.wakeups.pop(uid, None)
        self.written.pop(uid, None)

    def _unindex(self, booking: Booking) -> None:
        key = (booking.pool, booking.family)
        self._by_family.get(key, {}).pop(booking.uid, None)
        self._by_namespace.get(booking.namespace, {}).pop(booking.uid, None)
        self._waiting.get(key, {}).pop(booking.uid, None)
        self._held.pop(key, None)

    def family_bookings(self, pool: str, family: str) -> list[Booking]:
        return list(self._by_family.get((pool, family), {}).values())

    def waiting_bookings(self, pool: str, family: str) -> list[Booking]:
        """The family's bookings not decided yet."""
        return list(self._waiting.get((pool, family), {}).values())

    def namespace_bookings(self, namespace: str) -> list[Booking]:
        return list(self._by_namespace.get(namespace, {}).values())

    def held(self, pool: str, family: str, since: datetime.datetime, until: datetime.datetime,
             exclude: str = "") -> list[gpu_calendar.Slot]:  # fmt: skip
        """Admitted windows of one family and pool that overlap [since, until), `exclude` (a uid) left out.

        A sorted index per family (rebuilt after a change of that family) makes this a bisection plus
        the overlapping slots: the webhook's cost does not grow with bookings far from the asked window."""
        index = self._held.get((pool, family))
        if index is None:
            index = _HeldIndex([b for b in self.family_bookings(pool, family) if b.holds and b.booked is not None])
            self._held[(pool, family)] = index
        return index.overlapping(since, until, exclude)

    def active_kubernetes(self, namespace: str, now: datetime.datetime) -> tuple[int, tuple[str, ...]]:
        """GPUs of the namespace's Kubernetes bookings whose admitted window holds `now`, and their families."""
        active = [
            b for b in self.namespace_bookings(namespace)
            if b.pool == "kubernetes" and b.holds and b.booked is not None and b.booked.start <= now < b.booked.end
        ]  # fmt: skip
        return sum(b.booked.count for b in active if b.booked), tuple(sorted({b.family for b in active}))

    def wake(self, uids: Iterable[str]) -> None:
        for uid in uids:
            if uid in self.bookings:
                self.wakeups[uid].set()

    # --- projects and nodes -------------------------------------------------------------------------

    def _project_named(self, name: str) -> ProjectView | None:
        project = self.projects.get(self._project_namespace.get(name, ""))
        return project if project is not None and project.name == name else None

    def put_project(self, project: ProjectView) -> list[str]:
        """Record a project; returns the uids of its bookings to look at again when its state changed."""
        old = self._project_named(project.name)
        if old is not None and old.resource_version > project.resource_version:
            return []
        if old is not None and old.namespace != project.namespace:
            self.projects.pop(old.namespace, None)
        self.projects[project.namespace] = project
        self._project_namespace[project.name] = project.namespace
        changed = old is None or (old.cordoned, old.deleting, old.ready) != (
            project.cordoned, project.deleting, project.ready
        )  # fmt: skip
        return [b.uid for b in self.namespace_bookings(project.namespace)] if changed else []

    def drop_project(self, name: str) -> list[str]:
        project = self._project_named(name)
        self._project_namespace.pop(name, None)
        if project is None:
            return []
        del self.projects[project.namespace]
        return [b.uid for b in self.namespace_bookings(project.namespace)]

    def put_node(self, node: NodeView, settings: GpuSettings) -> list[str]:
        """Record a node; returns the uids of the bookings whose capacity changed with it."""
        old = self.nodes.get(node.name)
        self.nodes[node.name] = node
        return self._node_changed(old, node, settings)

    def drop_node(self, name: str, settings: GpuSettings) -> list[str]:
        old = self.nodes.pop(name, None)
        return self._node_changed(old, None, settings)

    def _node_changed(self, old: NodeView | None, new: NodeView | None, settings: GpuSettings) -> list[str]:
        if old == new:
            return []
        values = {n.label_value for n in (old, new) if n is not None and n.label_value}
        families = {f.name for f in settings.families if f.node_label_value in values}
        return [b.uid for b in self.bookings.values() if b.pool == "kubernetes" and b.family in families]

    def put_slurm(self, capacity: Mapping[str, SlurmFamilyCapacity], read_at: float) -> list[str]:
        """Record a Slurm capacity read; returns the uids of the bookings whose family's capacity changed."""
        changed = {f for f in set(capacity) | set(self.slurm) if capacity.get(f) != self.slurm.get(f)}
        first = self.slurm_read_at == 0.0
        self.slurm, self.slurm_error, self.slurm_read_at = dict(capacity), "", read_at
        if first:
            return []
        return [b.uid for b in self.bookings.values() if b.pool == "slurm" and b.family in changed]

    def capacity(self, pool: str, family: str, settings: GpuSettings) -> Capacity:
        config = settings.family(family)
        if config is None:
            return Capacity(pool, family, 0, 1, f"{family} is not a configured family", known=False)
        if pool == "kubernetes":
            if not config.node_label_value:
                return Capacity(pool, family, 0, 1, f"{family} has no Kubernetes nodes configured")
            # A copy first (one C call): the metrics server's thread calls this while node events change the dict.
            mine = [n for n in list(self.nodes.values()) if n.label_value == config.node_label_value and n.gpus > 0]
            usable = [n for n in mine if n.usable]
            left_out = [f"{n.name} ({'cordoned' if n.unschedulable else 'NotReady'})" for n in mine if not n.usable]
            detail = f"{_nodes(len(usable))} with {settings.node_label_key}={config.node_label_value}"
            if left_out:
                detail += f"; left out: {', '.join(sorted(left_out))}"
            return Capacity(pool, family, sum(n.gpus for n in usable), 1, detail)
        if not config.slurm_gres_type:
            return Capacity(pool, family, 0, 1, f"{family} has no Slurm GRES type configured")
        if self.slurm_read_at == 0.0 or family not in self.slurm:
            why = self.slurm_error or "Slurm capacity not read yet"
            return Capacity(pool, family, 0, 1, why, known=False)
        slurm = self.slurm[family]
        detail = f"{_nodes(len(slurm.nodes))} with gres gpu:{slurm.gres_type}"
        if slurm.unusable:
            detail += f"; left out: {', '.join(slurm.unusable)}"
        return Capacity(pool, family, slurm.gpus, max(slurm.gpus_per_node, 1), detail)


# --- filling the ledger ------------------------------------------------------------------------------


async def prime(ledger: Ledger, client: AsyncClient, settings: OperatorSettings, today: datetime.date) -> None:
    """Fill the ledger from one LIST of each kind, before any handler runs (start-up)."""

    async def collect(items: Any) -> list[dict[str, Any]]:
        return [item.to_dict() async for item in items]

    projects = await kube.call("list researchprojects", collect(client.list(ResearchProjectResource)))
    for body in projects:
        view = project_from_body(body, settings, today, ledger.signer)
        if view is not None:
            ledger.put_project(view)
    for body in await kube.call("list gpureservations",
                                collect(client.list(GpuReservationResource, namespace="*"))):  # fmt: skip
        booking = booking_from_body(body)
        if booking is not None:
            ledger.put_booking(booking)
    if any(f.node_label_value for f in settings.gpu.families):
        for body in await kube.call("list nodes", collect(client.list(Node))):
            ledger.put_node(node_from_body(body, settings.gpu), settings.gpu)


def slurm_families(gpu: GpuSettings) -> dict[str, tuple[str, str | None, str | None]]:
    return {f.name: (f.slurm_gres_type, f.slurm_partition, f.slurm_feature) for f in gpu.families if f.slurm_gres_type}


async def refresh_slurm(ledger: Ledger, scontrol: Sacctmgr, gpu: GpuSettings) -> list[str]:
    """Read Slurm node capacity once; returns the bookings whose family's capacity changed."""
    families = slurm_families(gpu)
    if not families:
        return []
    try:
        capacity = await slurm_reservations.read_capacity(scontrol, families)
    except BackendError as error:
        ledger.slurm_error = f"Slurm capacity cannot be read: {error}"
        return []
    return ledger.put_slurm(capacity, time.monotonic())


def figures(ledger: Ledger, gpu: GpuSettings, now: datetime.datetime) -> dict[FamilyKey, tuple[int, int, int]]:
    """(pool, family) → (capacity, booked, active) GPUs, for the Prometheus gauges and the calendar."""
    out: dict[FamilyKey, tuple[int, int, int]] = {}
    for family in gpu.families:
        for pool, configured in (("slurm", family.slurm_gres_type), ("kubernetes", family.node_label_value)):
            if not configured:
                continue
            held = [b.booked for b in ledger.family_bookings(pool, family.name) if b.holds and b.booked]
            booked = sum(s.count for s in held if s.end > now)
            active = gpu_calendar.totals_at(held, now)
            out[(pool, family.name)] = (ledger.capacity(pool, family.name, gpu).gpus, booked, active)
    return out


async def refresh_family(ledger: Ledger, client: AsyncClient, pool: str, family: str,
                         now: datetime.datetime) -> None:  # fmt: skip
    """A consistent LIST of one family's bookings (field selectors on spec.pool and spec.family) into the
    ledger, so a decision never misses a booking whose watch event is still on its way."""
    items = await kube.call(
        f"list gpureservations of {family} ({pool})",
        _collect_dicts(client.list(GpuReservationResource, namespace="*",
                                   fields={"spec.pool": pool, "spec.family": family})),
    )  # fmt: skip
    for body in items:
        booking = booking_from_body(body)
        if booking is not None:
            ledger.put_booking(booking)
    ledger.fresh_as_of[(pool, family)] = now


async def _collect_dicts(items: Any) -> list[dict[str, Any]]:
    return [item.to_dict() async for item in items]


# --- following the cluster: the ledger's own watches (in every process) ---------------------------------

logger = logging.getLogger(__name__)


def on_booking(ledger: Ledger, event: str, body: Mapping[str, Any]) -> None:
    """A booking added, changed or deleted; a changed spec or approval makes its clock look now."""
    uid = str((body.get("metadata") or {}).get("uid", ""))
    if event == "DELETED":
        ledger.drop_booking(uid)
        return
    booking = booking_from_body(body)
    if booking is None:
        return
    old = ledger.bookings.get(uid)
    ledger.put_booking(booking)
    if old is not None and (old.generation, old.approval, old.deleting) != (
        booking.generation, booking.approval, booking.deleting
    ):  # fmt: skip
        ledger.wakeups[uid].set()


def on_project(ledger: Ledger, settings: OperatorSettings, event: str, body: Mapping[str, Any],
               today: datetime.date) -> None:  # fmt: skip
    """A project cordoned, deleted or Ready again makes its bookings look now."""
    if event == "DELETED":
        ledger.wake(ledger.drop_project(str((body.get("metadata") or {}).get("name", ""))))
        return
    view = project_from_body(body, settings, today, ledger.signer)
    if view is not None:
        ledger.wake(ledger.put_project(view))


def on_node(ledger: Ledger, settings: GpuSettings, event: str, body: Mapping[str, Any]) -> None:
    """A GPU node added, cordoned, NotReady or removed: the family's bookings look at capacity now."""
    if event == "DELETED":
        ledger.wake(ledger.drop_node(str((body.get("metadata") or {}).get("name", "")), settings))
    else:
        ledger.wake(ledger.put_node(node_from_body(body, settings), settings))


async def follow(ledger: Ledger, client: AsyncClient, settings: OperatorSettings,
                 today: Any, retry_seconds: float = 1.0) -> None:  # fmt: skip
    """Keep the ledger current from watches of projects, bookings and (with GPU families) nodes, for ever.

    A watch that ends in an error starts again without a resourceVersion: the API server then sends every
    existing object as ADDED first; objects removed meanwhile are dropped by comparing with that LIST.
    `today` is a callable returning the current date (cordons follow the calendar).
    """

    async def watch(what: str, resource: Any, namespaced: bool, apply: Any, forget: Any) -> None:
        while True:
            try:
                kwargs = {"namespace": "*"} if namespaced else {}
                listed = [item.to_dict() async for item in client.list(resource, **kwargs)]
                forget({str((b.get("metadata") or {}).get("uid", "")) for b in listed},
                       {str((b.get("metadata") or {}).get("name", "")) for b in listed})  # fmt: skip
                for body in listed:
                    apply("ADDED", body)
                async for event, obj in client.watch(resource, **kwargs):
                    apply(event, obj.to_dict())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: start the watch again, never stop following
                logger.warning("GPU ledger: the watch of %s ended (%s); starting it again", what, error)
            await asyncio.sleep(retry_seconds)

    def forget_bookings(uids: set[str], _: set[str]) -> None:
        for uid in [u for u in ledger.bookings if u not in uids]:
            ledger.drop_booking(uid)

    def forget_projects(_: set[str], names: set[str]) -> None:
        for name in {p.name for p in ledger.projects.values()} - names:
            ledger.wake(ledger.drop_project(name))

    def forget_nodes(_: set[str], names: set[str]) -> None:
        for name in [n for n in ledger.nodes if n not in names]:
            ledger.wake(ledger.drop_node(name, settings.gpu))

    watches = [
        watch("researchprojects", ResearchProjectResource, False,
              lambda e, b: on_project(ledger, settings, e, b, today()), forget_projects),
        watch("gpureservations", GpuReservationResource, True, lambda e, b: on_booking(ledger, e, b),
              forget_bookings),
    ]  # fmt: skip
    if any(f.node_label_value for f in settings.gpu.families):
        watches.append(watch("nodes", Node, False, lambda e, b: on_node(ledger, settings.gpu, e, b), forget_nodes))
    await asyncio.gather(*watches)
