"""The resync schedule (engine/resync.py): when each object is due, how fast and how many at once the loop starts
resyncs, what a failed resync does, and kopf's peering rule for whether this process may resync at all."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from enclave_operator.engine.resync import Key, PeeringGate, Resyncs, Retry, leads

A, B, C = (Key("ResearchProject", name, f"uid-{name}") for name in "abc")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(clock: Clock, interval: float = 300.0, jitter: float = 0.1, per_second: float = 0.0,
             rand: float = 0.5) -> Resyncs:  # fmt: skip
    return Resyncs(interval, jitter, per_second, clock=clock, rand=lambda: rand)


def test_an_object_is_due_one_interval_plus_its_jitter_after_its_last_reconcile() -> None:
    clock = Clock()
    resyncs = schedule(clock, interval=300, jitter=0.1, rand=0.5)
    resyncs.reconciled(A)
    assert resyncs.due_at(A) == pytest.approx(1000 + 300 * 1.05)
    clock.now += 200
    resyncs.reconciled(A)  # an edit re-observed everything: the resync moves out
    assert resyncs.due_at(A) == pytest.approx(1200 + 315)
    clock.now = 1200 + 314
    assert resyncs.pop_due() is None, "not due yet (and the first, stale, due time is skipped)"
    clock.now = 1200 + 315
    assert resyncs.pop_due() == A and A not in resyncs and resyncs.pop_due() is None


def test_due_objects_come_earliest_first_and_a_forgotten_one_never() -> None:
    clock = Clock()
    resyncs = schedule(clock)
    resyncs.schedule(B, 20)
    resyncs.schedule(A, 10)
    resyncs.schedule(C, 30)
    resyncs.forget(B)
    clock.now += 60
    assert [resyncs.pop_due(), resyncs.pop_due(), resyncs.pop_due()] == [A, C, None]
    assert len(resyncs) == 0


def test_rescheduling_many_times_keeps_the_heap_bounded() -> None:
    clock = Clock()
    resyncs = schedule(clock)
    for _ in range(10_000):
        resyncs.reconciled(A)
    assert len(resyncs) == 1 and len(resyncs._heap) <= 2 * 1 + 65


class Loop:
    """Runs `Resyncs.run` on a fake clock: its sleeps advance the clock instead of waiting."""

    def __init__(self, resyncs: Resyncs, clock: Clock, concurrency: int = 4, active: bool = True) -> None:
        self.resyncs, self.clock, self.concurrency, self.active = resyncs, clock, concurrency, active
        self.started: list[tuple[Key, float]] = []
        self.running = 0
        self.most = 0
        self.sleeps: list[float] = []
        self.outcome: dict[Key, BaseException] = {}

    async def resync(self, key: Key) -> None:
        self.started.append((key, self.clock.now))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.01)  # real time: the others get the chance to start meanwhile
            if key in self.outcome:
                raise self.outcome[key]
        finally:
            self.running -= 1

    async def is_active(self) -> bool:
        return self.active

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)  # resyncs started before this sleep begin before the clock moves
        self.clock.now += seconds

    async def until(self, done: Any, most: float = 5.0) -> None:
        task = asyncio.create_task(self.resyncs.run({"ResearchProject": self.resync}, self.is_active,
                                                    self.concurrency, sleep=self.sleep))  # fmt: skip
        try:
            async with asyncio.timeout(most):
                while not done():
                    await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_the_loop_starts_due_resyncs_at_the_rate_and_never_more_at_once_than_allowed() -> None:
    clock = Clock()
    resyncs = schedule(clock, per_second=10)
    keys = [Key("ResearchProject", f"p{i}", f"u{i}") for i in range(12)]
    for key in keys:
        resyncs.schedule(key, 0)
    loop = Loop(resyncs, clock, concurrency=3)
    await loop.until(lambda: len(loop.started) == len(keys) and loop.running == 0)
    assert sorted(k for k, _ in loop.started) == sorted(keys)
    starts = [t for _, t in loop.started]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 0.1 - 1e-9 for gap in gaps), gaps
    assert loop.most <= 3


async def test_without_a_rate_limit_only_the_concurrency_bounds_the_loop() -> None:
    clock = Clock()
    resyncs = schedule(clock, per_second=0)
    for i in range(8):
        resyncs.schedule(Key("ResearchProject", f"p{i}", f"u{i}"), 0)
    loop = Loop(resyncs, clock, concurrency=8)
    await loop.until(lambda: len(loop.started) == 8)
    assert loop.sleeps == [] and loop.most == 8


async def test_a_standby_process_resyncs_nothing() -> None:
    clock = Clock()
    resyncs = schedule(clock)
    resyncs.schedule(A, 0)
    loop = Loop(resyncs, clock, active=False)
    await loop.until(lambda: len(loop.sleeps) >= 3)
    assert loop.started == [] and A in resyncs, "still due, for when this process becomes the active one"
    assert set(loop.sleeps) == {PeeringGate.RECHECK_SECONDS}


async def test_a_resync_that_did_not_converge_is_retried_sooner_and_less_often_each_time() -> None:
    clock = Clock()
    resyncs = schedule(clock, interval=60)
    resyncs.schedule(A, 0)
    loop = Loop(resyncs, clock)
    loop.outcome[A] = Retry(10)
    await loop.until(lambda: len(loop.started) == 1 and loop.running == 0 and A in resyncs)
    assert resyncs.due_at(A) == pytest.approx(clock.now + 10)
    for expected in (20, 40, 60, 60):  # doubling, capped at the interval
        clock.now = resyncs.due_at(A)  # type: ignore[assignment]
        count = len(loop.started)
        await loop.until(lambda n=count: len(loop.started) == n + 1 and loop.running == 0 and A in resyncs)
        assert resyncs.due_at(A) == pytest.approx(clock.now + expected)


async def test_a_resync_that_failed_comes_back_after_an_interval_and_the_loop_goes_on() -> None:
    clock = Clock()
    resyncs = schedule(clock, interval=60, rand=0.0)
    resyncs.schedule(A, 0)
    resyncs.schedule(B, 0)
    loop = Loop(resyncs, clock)
    loop.outcome[A] = RuntimeError("backend said no")
    await loop.until(lambda: len(loop.started) == 2 and loop.running == 0 and A in resyncs)
    assert resyncs.due_at(A) == pytest.approx(clock.now + 60)
    assert B not in resyncs, "B's reconcile (not called here) is what puts it back"


async def test_a_reconcile_during_a_failed_resync_keeps_its_own_due_time() -> None:
    clock = Clock()
    resyncs = schedule(clock, interval=60, rand=0.0)
    resyncs.schedule(A, 0)
    loop = Loop(resyncs, clock)

    async def reconciled_then_failed(key: Key) -> None:
        loop.started.append((key, clock.now))
        resyncs.reconciled(key)  # the reconcile itself put it back, then something after it failed
        raise Retry(5)

    loop.resync = reconciled_then_failed  # type: ignore[method-assign]
    await loop.until(lambda: len(loop.started) == 1 and A in resyncs)
    await asyncio.sleep(0.02)
    assert resyncs.due_at(A) == pytest.approx(clock.now + 60)


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
