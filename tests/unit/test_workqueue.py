"""The work queue (engine/workqueue.py): when each object is due, in which order and how fast the loop starts
reconciles, what a reconcile that failed or did not converge does, events during a reconcile, and kopf's peering
rule for whether this process may reconcile at all."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from enclave_operator.engine.workqueue import Key, PeeringGate, Retry, WorkQueue, leads
from enclave_operator.priority import Priority, Slots
from support.threads import errors_of_reads_during

A, B, C = (Key("ResearchProject", name, f"uid-{name}") for name in "abc")
EDIT, CREATE, RESYNC = Priority.EDIT, Priority.CREATE, Priority.RESYNC


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue(clock: Clock, interval: float = 300.0, jitter: float = 0.1, per_second: float = 0.0,
          rand: float = 0.5, retry_seconds: float = 10.0) -> WorkQueue:  # fmt: skip
    return WorkQueue(interval, jitter, per_second, retry_seconds, clock=clock, rand=lambda: rand)


def test_an_object_is_due_one_interval_plus_its_jitter_after_its_last_reconcile() -> None:
    clock = Clock()
    work = queue(clock, interval=300, jitter=0.1, rand=0.5)
    work.reconciled(A)
    assert work.due_at(A) == pytest.approx(1000 + 300 * 1.05) and work.priority_of(A) == RESYNC
    clock.now = 1200
    work.reconciled(A)  # an edit re-observed everything: the resync moves out
    assert work.due_at(A) == pytest.approx(1200 + 315)
    clock.now = 1400
    assert work.pop_due() is None, "not due yet (and the first, stale, due time is skipped)"
    clock.now = 1600
    assert work.pop_due() == A and A not in work and work.pop_due() is None


def test_due_objects_come_most_urgent_first_then_earliest_and_a_forgotten_one_never() -> None:
    clock = Clock()
    work = queue(clock)
    work.add(B, RESYNC, delay=20)
    work.add(A, RESYNC, delay=10)
    work.add(C, RESYNC, delay=30)
    work.forget(B)
    clock.now += 100
    assert [work.pop_due(), work.pop_due(), work.pop_due()] == [A, C, None]
    work.add(A, RESYNC)
    work.add(B, CREATE)
    work.add(C, EDIT)
    assert [work.pop_due(), work.pop_due(), work.pop_due()] == [C, B, A], "edits, then creations, then resyncs"


def test_a_key_waits_once_at_its_earliest_time_and_most_urgent_priority() -> None:
    clock = Clock()
    work = queue(clock)
    work.reconciled(A)
    work.add(A, CREATE)
    assert (work.due_at(A), work.priority_of(A)) == (clock.now, CREATE), "a creation does not wait for the resync"
    work.add(A, EDIT)
    work.add(A, RESYNC, delay=60)
    assert (work.due_at(A), work.priority_of(A), len(work)) == (clock.now, EDIT, 1)
    work.reconciled(A)  # another reconcile (a booking's) ran meanwhile: it may have read A before the edit
    assert work.priority_of(A) == EDIT, "the waiting edit stays"
    assert work.pop_due() == A and work.pop_due() is None


def test_figures_count_keys_due_now_due_later_and_running() -> None:
    clock = Clock()
    work = queue(clock)
    work.add(A, CREATE)
    work.add(B, EDIT)
    work.add(C, RESYNC, delay=30)
    assert work.figures() == {"due": 2, "later": 1, "running": 0}
    clock.now += 31
    assert work.figures() == {"due": 3, "later": 0, "running": 0}


def test_figures_can_be_read_from_another_thread_while_the_queue_changes() -> None:
    """The metrics server reads them from its own thread (a bench at 10,000 found the scrape failing with
    "dictionary changed size during iteration")."""
    clock = Clock()
    work = queue(clock)
    keys = [Key("ResearchProject", f"p{i}", f"u{i}") for i in range(2000)]
    for key in keys:
        work.add(key, CREATE)

    def churn() -> None:
        for _ in range(20):
            for key in keys:
                work.forget(key)
            for key in keys:
                work.add(key, CREATE)

    assert errors_of_reads_during(work.figures, churn) == []


def test_rescheduling_many_times_keeps_the_heaps_bounded() -> None:
    clock = Clock()
    work = queue(clock)
    for _ in range(1000):
        clock.now += 1
        work.reconciled(A)
        work.add(A, EDIT)
    assert len(work) == 1 and len(work._later) + len(work._now) <= 2 * 1 + 65


class Loop:
    """Runs `WorkQueue.run` on a fake clock: its sleeps advance the clock instead of waiting."""

    def __init__(self, work: WorkQueue, clock: Clock, slots: int = 4, reserved: int = 0,
                 active: bool = True) -> None:  # fmt: skip
        self.work, self.clock, self.active = work, clock, active
        self.slots = Slots(slots, reserved=reserved)
        self.started: list[tuple[Key, float, Priority]] = []
        self.running: set[Key] = set()
        self.most = 0
        self.sleeps: list[float] = []
        self.outcome: dict[Key, BaseException] = {}
        self.hold = asyncio.Event()
        self.hold.set()

    async def reconcile(self, key: Key, priority: Priority) -> None:
        assert key not in self.running, f"{key} reconciled twice at once"
        self.started.append((key, self.clock.now, priority))
        self.running.add(key)
        self.most = max(self.most, len(self.running))
        try:
            await asyncio.sleep(0.01)  # real time: the others get the chance to start meanwhile
            await self.hold.wait()
            if key in self.outcome:
                raise self.outcome[key]
        finally:
            self.running.discard(key)

    async def is_active(self) -> bool:
        return self.active

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)  # reconciles started before this sleep begin before the clock moves
        self.clock.now += seconds

    @contextlib.asynccontextmanager
    async def running_loop(self) -> AsyncIterator[None]:
        """The queue's loop runs during the body; then held reconciles go on and the loop is cancelled."""
        task = asyncio.create_task(self.work.run({"ResearchProject": self.reconcile}, self.is_active, self.slots,
                                                 sleep=self.sleep))  # fmt: skip
        try:
            yield
        finally:
            self.hold.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def until(self, done: Any, most: float = 5.0) -> None:
        async with self.running_loop():
            await wait_for(done, most)

    def keys(self) -> list[Key]:
        return [key for key, _, _ in self.started]


async def wait_for(done: Any, most: float = 5.0) -> None:
    async with asyncio.timeout(most):
        while not done():
            await asyncio.sleep(0.005)


async def test_resyncs_start_at_the_rate_and_never_more_at_once_than_there_are_slots() -> None:
    clock = Clock()
    work = queue(clock, per_second=10)
    keys = [Key("ResearchProject", f"p{i}", f"u{i}") for i in range(12)]
    for key in keys:
        work.add(key, RESYNC, delay=0)
    loop = Loop(work, clock, slots=3)
    await loop.until(lambda: len(loop.started) == len(keys) and not loop.running)
    assert sorted(loop.keys()) == sorted(keys)
    starts = [t for _, t, _ in loop.started]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 0.1 - 1e-9 for gap in gaps), gaps
    assert loop.most <= 3


async def test_edits_and_creations_are_not_held_to_the_resync_rate() -> None:
    clock = Clock()
    work = queue(clock, per_second=1)
    for i in range(6):
        work.add(Key("ResearchProject", f"p{i}", f"u{i}"), CREATE if i % 2 else EDIT)
    loop = Loop(work, clock, slots=8)
    await loop.until(lambda: len(loop.started) == 6)
    assert loop.sleeps == [] and loop.most == 6


async def test_the_most_urgent_waiting_key_gets_the_next_slot() -> None:
    clock = Clock()
    work = queue(clock)
    loop = Loop(work, clock, slots=1)
    loop.hold.clear()
    work.add(A, CREATE)
    async with loop.running_loop():
        await wait_for(lambda: loop.keys() == [A])
        work.add(B, RESYNC, delay=0)  # a resync due now, then an edit: the edit goes first when A's slot is free
        work.add(C, EDIT)
        await asyncio.sleep(0.05)
        assert loop.keys() == [A], "one slot: the others wait for it"
        loop.hold.set()
        await wait_for(lambda: len(loop.started) == 3)
        assert loop.keys() == [A, C, B]
        assert [p for _, _, p in loop.started] == [CREATE, EDIT, RESYNC], "each runs at its own priority"


async def test_an_edit_starts_in_a_kept_slot_while_creations_wait_for_the_others() -> None:
    clock = Clock()
    work = queue(clock)
    creations = [Key("ResearchProject", f"p{i}", f"u{i}") for i in range(5)]
    for key in creations:
        work.add(key, CREATE)
    loop = Loop(work, clock, slots=3, reserved=1)
    loop.hold.clear()
    async with loop.running_loop():
        await wait_for(lambda: len(loop.started) == 2)
        work.add(A, EDIT)
        await wait_for(lambda: A in loop.running)
        assert len(loop.started) == 3, "no creation took the kept slot"


async def test_an_event_during_a_reconcile_runs_it_once_more_after_and_never_twice_at_once() -> None:
    clock = Clock()
    work = queue(clock)
    loop = Loop(work, clock, slots=4)
    loop.hold.clear()
    work.add(A, CREATE)
    async with loop.running_loop():
        await wait_for(lambda: A in loop.running)
        for _ in range(3):
            work.add(A, EDIT)  # e.g. three edits while the creation runs: its read may predate them
        await asyncio.sleep(0.05)
        assert len(loop.started) == 1 and A not in work, "not a second reconcile while the first runs"
        loop.hold.set()
        await wait_for(lambda: len(loop.started) == 2 and not loop.running)
        assert loop.started[1][2] == EDIT
        await asyncio.sleep(0.05)
        assert len(loop.started) == 2, "three events, one more reconcile"
        assert work.priority_of(A) == RESYNC and work.due_at(A) == pytest.approx(clock.now + 315)


async def test_an_object_forgotten_during_its_reconcile_is_not_resynced() -> None:
    clock = Clock()
    work = queue(clock)
    loop = Loop(work, clock)

    async def deleted(key: Key, priority: Priority) -> None:
        loop.started.append((key, clock.now, priority))
        work.forget(key)  # the reconcile found it gone

    loop.reconcile = deleted  # type: ignore[method-assign]
    work.add(A, CREATE)
    await loop.until(lambda: loop.started and not work.running)
    assert A not in work and len(work) == 0


async def test_a_standby_process_reconciles_nothing() -> None:
    clock = Clock()
    work = queue(clock)
    work.add(A, EDIT)
    loop = Loop(work, clock, active=False)
    await loop.until(lambda: len(loop.sleeps) >= 3)
    assert loop.started == [] and A in work, "still due, for when this process becomes the active one"
    assert set(loop.sleeps) == {PeeringGate.RECHECK_SECONDS}


async def test_a_reconcile_that_did_not_converge_is_retried_sooner_and_less_often_each_time() -> None:
    clock = Clock()
    work = queue(clock, interval=60)
    work.add(A, RESYNC, delay=0)
    loop = Loop(work, clock)
    loop.outcome[A] = Retry(10)
    await loop.until(lambda: len(loop.started) == 1 and not work.running and A in work)
    assert work.due_at(A) == pytest.approx(clock.now + 10) and work.priority_of(A) == CREATE
    for expected in (20, 40, 60, 60):  # doubling, capped at the interval
        clock.now = work.due_at(A)  # type: ignore[assignment]
        count = len(loop.started)
        await loop.until(lambda n=count: len(loop.started) == n + 1 and not work.running and A in work)
        assert work.due_at(A) == pytest.approx(clock.now + expected)
    del loop.outcome[A]
    clock.now = work.due_at(A)  # type: ignore[assignment]
    await loop.until(lambda: len(loop.started) == 6 and not work.running and A in work)
    assert work.priority_of(A) == RESYNC and work.due_at(A) == pytest.approx(clock.now + 63), "converged: a resync"


async def test_a_reconcile_that_scheduled_its_resync_and_then_did_not_converge_is_retried_sooner() -> None:
    """The handlers' reconciles note their resync (`reconciled`) before they report that a part is not ready."""
    clock = Clock()
    work = queue(clock, interval=60, rand=0.0)
    work.add(A, CREATE)
    loop = Loop(work, clock)

    async def reconciled_then_not_ready(key: Key, priority: Priority) -> None:
        loop.started.append((key, clock.now, priority))
        work.reconciled(key)
        raise Retry(5)

    loop.reconcile = reconciled_then_not_ready  # type: ignore[method-assign]
    await loop.until(lambda: len(loop.started) == 1 and not work.running and A in work)
    assert work.due_at(A) == pytest.approx(clock.now + 5) and work.priority_of(A) == CREATE


async def test_a_reconcile_that_failed_is_retried_and_the_loop_goes_on() -> None:
    clock = Clock()
    work = queue(clock, interval=60, rand=0.0, retry_seconds=7)
    work.add(A, CREATE)
    work.add(B, CREATE)
    loop = Loop(work, clock)
    loop.outcome[A] = RuntimeError("backend said no")
    await loop.until(lambda: len(loop.started) == 2 and not work.running and A in work and B in work)
    assert work.due_at(A) == pytest.approx(clock.now + 7) and work.priority_of(A) == CREATE
    assert work.due_at(B) == pytest.approx(clock.now + 60) and work.priority_of(B) == RESYNC


NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)


def peer(priority: int, seen_seconds_ago: float, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - datetime.timedelta(seconds=seen_seconds_ago)).isoformat()}  # fmt: skip


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({"me": peer(-100, 1)}, True),
        ({"me": peer(-100, 1), "older": peer(-50, 10)}, False),
        ({"me": peer(-100, 1), "older but gone": peer(-50, 61)}, True),
        ({"me": peer(-100, 1), "younger": peer(-200, 1)}, True),
        ({}, True),
        ({"me": peer(-100, 1), "garbage": {"priority": "x"}, "none": None}, True),
        ({"naive time": {"priority": 0, "lifetime": 60, "lastseen": "2030-01-01T11:59:30"}}, False),
    ],
)
def test_a_process_leads_unless_a_live_peer_has_a_higher_priority(peers: dict[str, Any], expected: bool) -> None:
    assert leads(peers, -100, NOW) is expected


async def test_the_gate_asks_the_peering_object_at_most_every_few_seconds_and_fails_closed() -> None:
    clock = Clock()
    answers: list[Any] = [{"me": peer(-1, 0)}, RuntimeError("api down"), None]
    reads = 0

    async def read() -> Any:
        nonlocal reads
        reads += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:  # keep "now" for the rule: a peer seen just now
            answer = {"me": {**answer["me"], "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}}
        return answer

    gate = PeeringGate(read, priority=-1, clock=clock)
    assert await gate() is True
    assert await gate() is True and reads == 1, "cached within RECHECK_SECONDS"
    clock.now += PeeringGate.RECHECK_SECONDS
    assert await gate() is False, "cannot read the peering: not active"
    clock.now += PeeringGate.RECHECK_SECONDS
    assert await gate() is False and reads == 3, "no peering object: not active (kopf pauses too)"
    assert await PeeringGate(None, priority=0)() is True, "standalone"
