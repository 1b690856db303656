"""GpuReservation logic without servers: the definitive decision in stable order, phases from the clock,
approval above limits, cancellation, capacity at risk, eviction choice, placement, and the webhook's rules."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from enclave_operator import admission, reasons
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.backends.slurm_reservations import SlurmFamilyCapacity
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.reconcilers import approval, gpu_bookings, gpu_reservation, project_space
from enclave_operator.settings import OperatorSettings
from support.builders import BookingBuilder, ProjectBuilder
from support.threads import errors_of_reads_during

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
NS = "onco"
SETTINGS = OperatorSettings.model_validate({
    "s3": {"endpoint": "minio:9000"},
    "gpu": {
        "families": [
            {"name": "a100", "nodeLabelValue": "A100", "slurmGresType": "a100", "slurmPartition": "GPUampere",
             "bookingRequired": True},
            {"name": "t4", "nodeLabelValue": "T4"},
        ],
        "limits": {"maxGpus": 16, "maxHours": 72, "maxLeadDays": 30},
        "endGraceSeconds": 60,
    },
})  # fmt: skip
ALICE = admission.Requester("alice", ("researchers",))
CAROL = admission.Requester("carol", ("researchers",))
ADMIN = admission.Requester("root-admin", ("system:masters",))
SIGNER = approval.Signer(b"k" * 32)


def at(hours: float) -> datetime.datetime:
    return NOW + datetime.timedelta(hours=hours)


def iso(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def project(**changes: Any) -> gpu_bookings.ProjectView:
    values: dict[str, Any] = dict(
        name="onco", namespace=NS, valid_until=datetime.date(2027, 12, 31), ready=True, cordoned=False,
        deleting=False, roles={"alice": "owner", "bob": "member", "carol": "viewer"}, slurm_account="onco",
        baseline_gpus=1, resource_version=1,
    )  # fmt: skip
    values.update(changes)
    return gpu_bookings.ProjectView(**values)


def ledger(gpus: int = 8, **project_changes: Any) -> gpu_bookings.Ledger:
    book = gpu_bookings.Ledger(SIGNER)
    book.put_project(project(**project_changes))
    book.put_node(gpu_bookings.NodeView("n1", "A100", gpus, True, False), SETTINGS.gpu)
    book.put_slurm({"a100": SlurmFamilyCapacity("a100", 8, ("s1", "s2"), 4, ())}, 1.0)
    return book


def body(name: str, count: int, start: float, end: float, *, created: int = 0, pool: str = "kubernetes",
         status: dict | None = None, generation: int = 1, approved: dict[str, str] | None = None,
         by: str = "root-admin", signer: approval.Signer = SIGNER) -> dict[str, Any]:  # fmt: skip
    b = (BookingBuilder(name, NS).pool(pool).gpus(count).window(iso(at(start)), iso(at(end)))
         .meta(uid=f"uid-{name}", creationTimestamp=iso(NOW - datetime.timedelta(minutes=10 - created)),
               generation=generation, resourceVersion="5"))  # fmt: skip
    if approved is not None:  # the record the mutating webhook signs for an admin (admission.stamp)
        ref = approval.ObjectRef("GpuReservation", NS, name)
        b.annotate(**{approval.APPROVAL_ANNOTATION: signer.stamp(ref, by, approved, NOW)})
    if status:
        b.status(**status)
    return b.obj()


def add(book: gpu_bookings.Ledger, raw: dict[str, Any]) -> gpu_bookings.Booking:
    booking = gpu_bookings.booking_from_body(raw)
    assert booking is not None
    book.put_booking(booking)
    return booking


class FakeKube:
    """The reads a Kubernetes booking makes while Active: the namespace (is it the project's?) and its quota."""

    def __init__(self, gpus: str, owner: str = "onco") -> None:
        self.gpus, self.owner = gpus, owner

    async def _nothing(self) -> Any:
        for item in ():
            yield item

    def list(self, *_: Any, **__: Any) -> Any:
        """The consistent LIST before a decision: the ledger already holds every booking of these tests."""
        return self._nothing()

    async def get(self, resource: Any, name: str, **__: Any) -> Any:
        from lightkube.models.core_v1 import ResourceQuotaSpec
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Namespace, ResourceQuota

        if resource is Namespace:
            return Namespace(metadata=ObjectMeta(name=name, labels={"enclave.io/project": self.owner}))

        return ResourceQuota(spec=ResourceQuotaSpec(hard={"requests.nvidia.com/gpu": self.gpus}))


async def run(book: gpu_bookings.Ledger, raw: dict[str, Any], now: datetime.datetime = NOW, quota: str = "1",
              owner: str = "onco") -> tuple[gpu_reservation.GpuResult, ListRecorder]:  # fmt: skip
    recorder = ListRecorder()
    kube_client = FakeKube(quota, owner)
    result = await gpu_reservation.reconcile(body=raw, ledger=book, settings=SETTINGS, kube_client=kube_client,
                                             scontrol=None, recorder=recorder, now=now)  # type: ignore[arg-type]
    if result.booking is not None:
        book.put_booking(result.booking)
    return result, recorder


def cond(result: gpu_reservation.GpuResult, type_: str) -> dict[str, Any]:
    return next(c for c in result.status["conditions"] if c["type"] == type_)


async def test_two_raced_bookings_resolve_in_creation_order_whichever_runs_first() -> None:
    for order in (("early", "late"), ("late", "early")):
        book = ledger(gpus=8)
        raws = {"early": body("early", 6, 2, 10, created=0), "late": body("late", 6, 4, 12, created=1)}
        for raw in raws.values():
            add(book, raw)
        results = {name: (await run(book, raws[name]))[0] for name in order}
        assert results["early"].status["phase"] == "Scheduled", order
        assert results["late"].status["phase"] == "Rejected", order
        loser = cond(results["late"], reasons.ADMITTED)
        assert loser["reason"] == reasons.REASON_CONFLICT
        assert "at 2026-11-30T16:00Z 6 of 8 GPUs are booked, 2 free, 6 asked" in loser["message"]
        assert "8 free from 2026-11-30T22:00Z" in loser["message"], "a free window nearby"


async def test_admitted_booking_follows_the_clock_and_says_when_it_changes_next() -> None:
    book = ledger()
    raw = body("b", 2, 1, 3)
    add(book, raw)
    result, events = await run(book, raw)
    assert result.status["phase"] == "Scheduled" and result.wake_at == at(1)
    assert result.status["booked"] == {"count": 2, "start": iso(at(1)), "end": iso(at(3)), "generation": 1}
    assert result.status["nextTransition"] == iso(at(1))
    assert (reasons.EVENT_ADMITTED_BOOKING in [e[1] for e in events.events])
    assert cond(result, reasons.READY)["status"] == "True"
    raw["status"] = result.status
    active, events = await run(book, raw, now=at(1), quota="3")
    assert active.status["phase"] == "Active" and active.project_affected and active.wake_at == at(3)
    assert cond(active, reasons.QUOTA_READY)["status"] == "True", "quota = baseline 1 + 2 booked"
    assert reasons.EVENT_STARTED_BOOKING in [e[1] for e in events.events]
    raw["status"] = active.status
    ended, _ = await run(book, raw, now=at(3))
    assert ended.status["phase"] == "Expired" and ended.project_affected
    assert ended.wake_at == at(3) + datetime.timedelta(seconds=60), "pods are evicted after the grace period"


async def test_a_namespace_that_is_not_the_projects_is_never_read_or_evicted_in() -> None:
    book = ledger()
    raw = body("b", 2, 1, 3)
    add(book, raw)
    raw["status"] = (await run(book, raw))[0].status
    active, _ = await run(book, raw, now=at(1), quota="3", owner="someone-else")
    quota = cond(active, reasons.QUOTA_READY)
    assert quota["status"] == "False" and quota["reason"] == reasons.REASON_NOT_OWNED, quota
    assert "someone-else" in quota["message"], quota


async def test_a_restart_mid_window_computes_the_same_phase_from_status_and_clock() -> None:
    book = ledger()
    raw = body("b", 2, -1, 3, status={"phase": "Scheduled", "booked": {"count": 2, "start": iso(at(-1)),
                                                                      "end": iso(at(3)), "generation": 1}})
    add(book, raw)
    result, _ = await run(book, raw, quota="3")
    assert result.status["phase"] == "Active" and result.wake_at == at(3)


async def test_above_the_limits_waits_for_an_admin_then_is_admitted() -> None:
    book = ledger()
    raw = body("long", 2, 1, 100)
    add(book, raw)
    result, events = await run(book, raw)
    assert result.status["phase"] == "Pending"
    approved = cond(result, reasons.APPROVED)
    assert approved["status"] == "False" and "hours 99 > 72" in approved["message"]
    assert "kubectl annotate gpureservation -n onco long enclave.io/approve=yes" in approved["message"]
    forged = body("long", 2, 1, 100, approved={"gpu": "2", "hours": "99", "leadDays": "1"},
                  signer=approval.Signer(b"x" * 32))  # fmt: skip
    add(book, forged)
    result, _ = await run(book, forged)
    assert result.status["phase"] == "Pending" and cond(result, reasons.APPROVED)["reason"] == "UnverifiedApproval"
    short = body("long", 2, 1, 100, approved={"gpu": "2", "hours": "80", "leadDays": "1"})
    add(book, short)
    result, _ = await run(book, short)
    assert result.status["phase"] == "Pending" and "hours 99 > 80" in cond(result, reasons.APPROVED)["message"]
    raw = body("long", 2, 1, 100, approved={"gpu": "2", "hours": "99", "leadDays": "1"})
    add(book, raw)
    result, _ = await run(book, raw)
    assert result.status["phase"] == "Scheduled"
    assert cond(result, reasons.APPROVED)["reason"] == "ApprovedByAdmin"
    assert "approved by root-admin" in cond(result, reasons.APPROVED)["message"]


async def test_a_cordoned_project_cancels_its_bookings() -> None:
    book = ledger(cordoned=True)
    raw = body("b", 2, 1, 3, status={"phase": "Scheduled", "booked": {"count": 2, "start": iso(at(1)),
                                                                      "end": iso(at(3)), "generation": 1}})
    add(book, raw)
    result, events = await run(book, raw)
    assert result.status["phase"] == "Cancelled"
    assert cond(result, reasons.READY)["reason"] == reasons.REASON_PROJECT_CORDONED
    assert (("Normal", reasons.EVENT_CANCELLED_BOOKING) == events.events[0][:2])
    assert not gpu_bookings.Ledger.active_kubernetes(book, NS, at(2))[0]


async def test_fewer_nodes_after_admission_put_the_later_booking_at_risk() -> None:
    book = ledger(gpus=8)
    first, second = body("first", 4, 1, 5, created=0), body("second", 4, 2, 6, created=1)
    for raw in (first, second):
        add(book, raw)
        raw["status"] = (await run(book, raw))[0].status
    book.put_node(gpu_bookings.NodeView("n1", "A100", 4, True, False), SETTINGS.gpu)  # a GPU board removed
    at_risk, events = await run(book, second)
    risk = cond(at_risk, reasons.CAPACITY_AT_RISK)
    assert risk["status"] == "True" and "from 2026-11-30T14:00Z earlier bookings hold 4" in risk["message"]
    assert ("Warning", reasons.EVENT_CAPACITY_AT_RISK) in [e[:2] for e in events.events]
    assert at_risk.status["phase"] == "Scheduled", "nothing is dropped silently: it stays, flagged"
    assert cond((await run(book, first))[0], reasons.CAPACITY_AT_RISK)["status"] == "False"


async def test_a_change_that_does_not_fit_keeps_the_admitted_window() -> None:
    book = ledger(gpus=8)
    other = body("other", 4, 1, 5, created=0)
    add(book, other)
    other["status"] = (await run(book, other))[0].status
    mine = body("mine", 4, 1, 5, created=1)
    add(book, mine)
    mine["status"] = (await run(book, mine))[0].status
    changed = body("mine", 6, 1, 5, created=1, status=mine["status"], generation=2)
    add(book, changed)
    result, events = await run(book, changed)
    assert cond(result, reasons.ADMITTED)["reason"] == reasons.REASON_CHANGE_CONFLICT
    assert result.status["booked"]["count"] == 4 and result.status["phase"] == "Scheduled"
    assert reasons.EVENT_CANNOT_CHANGE_BOOKING in [e[1] for e in events.events]


@pytest.mark.parametrize(
    ("pods", "allowed", "quota", "evicted", "why"),
    [
        ([("p1", "n-a100", 2, "t1")], ["T4"], 1, ["p1"], "on a family the project may no longer use"),
        ([("p1", "n-t4", 1, "t1")], ["T4"], 1, [], "on an open family within the quota"),
        ([("p1", "n-a100", 2, "t1"), ("p2", "n-a100", 2, "t2")], ["A100"], 2, ["p2"],
         "another booking of the family still runs: only the newest beyond the quota"),
        ([("p1", "", 2, "t1")], ["T4"], 0, [], "not scheduled: nothing to evict"),
    ],
)  # fmt: skip
def test_pods_to_evict(pods: list[tuple], allowed: list[str], quota: int, evicted: list[str], why: str) -> None:
    raw = [{"metadata": {"name": n, "creationTimestamp": t}, "spec": {"nodeName": node, "containers": [
        {"resources": {"limits": {"nvidia.com/gpu": str(g)}}}]}, "status": {"phase": "Running"}}
        for n, node, g, t in pods]  # fmt: skip
    nodes = {"n-a100": "A100", "n-t4": "T4"}
    assert gpu_reservation.pods_to_evict(raw, nodes, allowed, "A100", quota, "nvidia.com/gpu") == evicted, why


def test_the_gauges_can_be_read_from_another_thread_while_nodes_change() -> None:
    """The metrics server computes the GPU gauges in its own thread (as the work queue's: engine/workqueue.py)."""
    book = ledger()
    nodes = [gpu_bookings.NodeView(f"n{i}", "A100", 8, True, False) for i in range(2, 2000)]

    def churn() -> None:
        for _ in range(10):
            for node in nodes:
                book.put_node(node, SETTINGS.gpu)
            for node in nodes:
                book.drop_node(node.name, SETTINGS.gpu)

    assert errors_of_reads_during(lambda: gpu_bookings.figures(book, SETTINGS.gpu, NOW), churn) == []


def test_placement_opens_the_booked_family_only_while_active() -> None:
    none_active = project_space.gpu_placement(SETTINGS.gpu, ())
    assert none_active[project_space.GPU_VALUES_ANNOTATION] == "T4", "bookingRequired families are closed"
    active = project_space.gpu_placement(SETTINGS.gpu, ("a100",))
    assert active[project_space.GPU_VALUES_ANNOTATION] == "A100"
    assert active[project_space.GPU_LABEL_ANNOTATION] == "nvidia.com/gpu.product"


def review(who: admission.Requester, raw: dict[str, Any], book: gpu_bookings.Ledger | None = None,
           old: dict[str, Any] | None = None) -> None:  # fmt: skip
    admission.review_gpu_reservation(operation="UPDATE" if old else "CREATE", requester=who, old=old, new=raw,
                                     ledger=book or ledger(), settings=SETTINGS, slurm_enabled=True, now=NOW,
                                     signer=SIGNER)  # fmt: skip


@pytest.mark.parametrize(
    ("who", "raw", "book", "text", "why"),
    [
        (CAROL, body("b", 1, 1, 2), None, "carol is a viewer", "viewers may not book"),
        (admission.Requester("eve", ()), body("b", 1, 1, 2), None, "eve is not a member", "strangers may not"),
        (ALICE, body("b", 1, -2, 2), None, "spec.start: 2026-11-30T10:00Z is in the past", "start in the past"),
        (ALICE, {**body("b", 1, 1, 2), "spec": {**body("b", 1, 1, 2)["spec"], "family": "v100"}}, None,
         "spec.family: v100 is not a GPU family of this platform (families: a100, t4)", "unknown family"),
        (ALICE, {**body("b", 1, 1, 2), "spec": {**body("b", 1, 1, 2)["spec"], "family": "t4", "pool": "slurm"}},
         None, "spec.pool: t4 GPUs cannot be booked in the slurm pool", "family not in that pool"),
        (ALICE, body("b", 1, 1, 24 * 800), None, "spec.end: ", "beyond validUntil"),
        (ALICE, body("b", 2, 1, 2, pool="slurm"), None, "spec.count: Slurm reserves whole nodes; a100 nodes have 4",
         "Slurm takes whole nodes"),
        (ALICE, body("b", 9, 1, 2), None, "spec.count: a100 (kubernetes) has 8 GPUs", "more than the family has"),
        (ALICE, body("b", 1, 1, 2), ledger(cordoned=True), "is cordoned", "cordoned project"),
        (ALICE, body("b", 1, 1, 2), ledger(ready=False), "is not Ready yet", "project not Ready"),
        (ALICE, body("b", 1, 1, 2, approved={"gpu": "9"}, by="alice"), None,
         "only platform admins may approve", "self-approval"),
        (ALICE, BookingBuilder("b", NS).gpus(1).window(iso(at(1)), iso(at(2)))
         .annotate(**{approval.APPROVE_ANNOTATION: "yes"}).obj(), None,
         "metadata.annotations[enclave.io/approve]: only platform admins may approve", "the trigger is for admins"),
    ],
)  # fmt: skip
def test_webhook_refuses_naming_the_field(who: admission.Requester, raw: dict, book: Any, text: str,
                                          why: str) -> None:  # fmt: skip
    with pytest.raises(admission.Denied) as denied:
        review(who, raw, book)
    assert text in str(denied.value), why


def test_webhook_refuses_what_does_not_fit_and_names_the_free_windows() -> None:
    book = ledger(gpus=8)
    add(book, body("held", 6, 0, 10, status={"phase": "Active", "booked": {"count": 6, "start": iso(at(0)),
                                                                           "end": iso(at(10)), "generation": 1}}))
    review(ALICE, body("fits", 2, 1, 5), book)
    with pytest.raises(admission.Denied) as denied:
        review(ALICE, body("full", 4, 1, 5), book)
    message = str(denied.value)
    assert message.startswith("spec.count: does not fit: a100 (kubernetes): at 2026-11-30T13:00Z 6 of 8")
    assert "8 free from 2026-11-30T22:00Z" in message
    review(ADMIN, body("admin", 1, 1, 2), book)
    with pytest.raises(admission.Denied, match="only platform admins"):
        review(ALICE, body("b", 1, 1, 2, approved={"gpu": "2"}, by="alice"), book, old=body("b", 1, 1, 2))
    review(ADMIN, body("b", 1, 1, 2, approved={"gpu": "2", "hours": "1", "leadDays": "1"}), book,
           old=body("b", 1, 1, 2))


def test_webhook_lets_an_admitted_booking_grow_where_it_still_fits_and_refuses_moving_a_started_start() -> None:
    book = ledger(gpus=8)
    held = body("mine", 4, -1, 5, status={"phase": "Active", "booked": {"count": 4, "start": iso(at(-1)),
                                                                        "end": iso(at(5)), "generation": 1}})
    add(book, held)
    review(ALICE, body("mine", 8, -1, 5), book, old=held)
    with pytest.raises(admission.Denied, match="spec.start: the window started"):
        review(ALICE, body("mine", 4, 0, 5), book, old=held)


def test_booking_approval_reuses_the_project_mechanism() -> None:
    """The mutating webhook signs an admin's approval of the booking's amounts (admission.stamp); re-applying
    changes nothing while it still covers the request; a researcher's update keeps it, never makes one."""
    book = ledger()
    raw = body("big", 2, 1, 100)
    add(book, raw)
    project_ = book.projects[NS]
    request = gpu_reservation.approval_request(gpu_bookings.booking_from_body(raw), project_, book, SETTINGS.gpu, NOW)
    assert dict(request.wanted) == {"gpu": "2", "hours": "99", "leadDays": "1"}

    def stamp(op: str, who: admission.Requester, old: dict | None, new: dict) -> admission.Annotations:
        return admission.stamp(kind="GpuReservation", operation=op, requester=who, old=old,  # type: ignore[arg-type]
                               new=new, settings=SETTINGS, signer=SIGNER, now=NOW, request=request)  # fmt: skip

    created = stamp("CREATE", ADMIN, None, raw)
    ref = approval.ObjectRef("GpuReservation", NS, "big")
    found = SIGNER.verify(ref, created[approval.APPROVAL_ANNOTATION])
    assert found is not None and found.by == "root-admin" and found.grant == dict(request.wanted)
    assert approval.decide_request(request, found).approved
    signed = {**raw, "metadata": {**raw["metadata"], "annotations": {approval.APPROVAL_ANNOTATION:
                                                                     created[approval.APPROVAL_ANNOTATION]}}}
    again = stamp("UPDATE", ADMIN, signed, raw)
    assert again[approval.APPROVAL_ANNOTATION] == created[approval.APPROVAL_ANNOTATION], "re-applying changes nothing"
    assert stamp("UPDATE", ALICE, signed, raw) == {approval.APPROVAL_ANNOTATION: created[approval.APPROVAL_ANNOTATION]}
    assert stamp("CREATE", ALICE, None, raw) == {}, "a researcher's create approves nothing"
    waiting = approval.decide_request(request, None)
    assert not waiting.approved and "hours 99 > 72" in waiting.message and waiting.reason == "AwaitingApproval"


async def test_a_new_booking_is_decided_only_after_its_creation_second() -> None:
    """Creation times have whole seconds: a booking made 0.5 s ago waits, so a same-second rival named earlier
    that the watch has not delivered yet cannot be overtaken."""
    book = ledger()
    raw = body("fresh", 1, 1, 2)
    raw["metadata"]["creationTimestamp"] = iso(NOW)
    add(book, raw)
    waiting, _ = await run(book, raw, now=NOW + datetime.timedelta(seconds=0.5))
    assert waiting.status["phase"] == "Pending" and cond(waiting, reasons.ADMITTED)["reason"] == "Deciding"
    assert waiting.wake_at == NOW + datetime.timedelta(seconds=SETTINGS.gpu.decision_settle_seconds)
    decided, _ = await run(book, raw, now=NOW + datetime.timedelta(seconds=2))
    assert decided.status["phase"] == "Scheduled"


def test_the_calendar_lists_steps_holders_and_waiting_bookings() -> None:
    from enclave_operator import gpu_report

    book = ledger(gpus=8)
    add(book, body("held", 3, 1, 5, status={"phase": "Scheduled", "booked": {"count": 3, "start": iso(at(1)),
                                                                          "end": iso(at(5)), "generation": 1}}))
    add(book, body("waits", 2, 2, 3, status={"phase": "Pending"}))
    text = gpu_report.render(book, SETTINGS, NOW, days=1, family="a100", pool="kubernetes")
    assert text.splitlines()[0] == "a100 (kubernetes): 8 GPUs (1 node with nvidia.com/gpu.product=A100)"
    assert "  2026-11-30T13:00Z → 2026-11-30T17:00Z  3 booked, 5 free  onco/held" in text
    assert "waiting (approval or project): onco/waits" in text


def test_bookings_see_the_projects_effective_spec_not_what_waits_for_approval() -> None:
    """A validUntil extension or a GPU quota above the tier that waits for an admin is not there for bookings."""
    raw = ProjectBuilder("onco").valid_until("2099-12-31").obj()
    raw["spec"]["compute"] = {"kubernetes": {"gpu": 6}}
    raw["status"] = {"validUntil": "2027-06-30"}
    view = gpu_bookings.project_from_body(raw, SETTINGS, NOW.date(), SIGNER)
    assert view is not None
    assert view.valid_until == datetime.date(2027, 6, 30), "the extension waits"
    assert view.baseline_gpus == SETTINGS.self_service.max_gpu, "the quota above the tier waits"
    ref = approval.ObjectRef("ResearchProject", "", "onco")
    grant = approval.governed(ResearchProjectSpec.model_validate(raw["spec"]))
    raw["metadata"]["annotations"] = {approval.APPROVAL_ANNOTATION: SIGNER.stamp(ref, "root-admin", grant, NOW)}
    approved = gpu_bookings.project_from_body(raw, SETTINGS, NOW.date(), SIGNER)
    assert approved is not None and approved.valid_until == datetime.date(2099, 12, 31) and approved.baseline_gpus == 6


def test_the_ledger_finds_projects_by_name_when_they_move_are_replaced_or_dropped() -> None:
    """Every project event looks its project up by name (an index since issue 12, not a scan of all projects)."""
    book = gpu_bookings.Ledger(SIGNER)
    book.put_project(project(name="onco", namespace="onco", resource_version=1))
    book.put_project(project(name="cardio", namespace="cardio", resource_version=2))
    assert book.put_project(project(name="onco", namespace="onco", resource_version=0, cordoned=True)) == []
    assert not book.projects["onco"].cordoned, "an older event does not overwrite a newer one"
    book.put_project(project(name="onco", namespace="onco-2", resource_version=3))  # the naming template changed
    assert set(book.projects) == {"onco-2", "cardio"}
    book.put_project(project(name="other", namespace="onco-2", resource_version=4))  # another project takes it
    assert book.drop_project("onco") == [] and book.projects["onco-2"].name == "other", "not another's entry"
    book.drop_project("other")
    book.drop_project("cardio")
    assert book.projects == {} and book.drop_project("cardio") == []
