"""When each object is re-observed next, and the one loop per process that starts those resyncs.

A kopf timer per object would do this with a task per object and the object's newest body kept in memory
for it (~30 KiB per object: 300 MiB at 10,000), and every timer of a restarted operator falls due in the
same interval. Here each object costs a heap entry. Its next resync is due `intervals.resyncSeconds` after its
last reconcile of any kind (an edit or a creation re-observes everything too), plus a random part of up to
`resyncJitter` of that; the loop starts due resyncs no faster than `intervals.resyncsPerSecond` and never more
at once than there are reconcile slots, so that a full pass over 10,000 objects is spread out instead of
hammering the backends, and edits and creations (which do not come through here) are never held back by it.

Resyncs run only while this process is the active one of its kopf peering (`PeeringGate`): a standby serves
the webhooks but must not reconcile, which kopf's own timers would have respected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from enclave_operator.backoff import doubling

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, order=True)
class Key:
    """One object to resync: its kind (which reconcile to call), name and uid (cluster-scoped kinds)."""

    kind: str
    name: str
    uid: str


class Retry(Exception):
    """A resync that did not converge: try again after `delay` seconds instead of a whole interval."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:g} s")
        self.delay = delay


class Resyncs:
    """The next resync of every known object: a heap of (due, key) with lazy deletion (the dict holds the
    current due time of each key; heap entries that no longer match it are skipped)."""

    def __init__(
        self,
        interval: float,
        jitter: float,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.interval = interval
        self.jitter = jitter
        self.per_second = per_second
        self._clock = clock
        self._rand = rand
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._failures: dict[Key, int] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def due_at(self, key: Key) -> float | None:
        return self._due.get(key)

    def reconciled(self, key: Key) -> None:
        """`key` was just reconciled: its next resync is one interval (plus jitter) from now."""
        self.schedule(key, self.interval * (1 + self.jitter * self._rand()))

    def schedule(self, key: Key, delay: float) -> None:
        due = self._clock() + delay
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._compact()
        self._changed.set()

    def forget(self, key: Key) -> None:
        """The object is gone (or deleted): no more resyncs."""
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def next_due(self) -> float | None:
        """The earliest due time, dropping stale heap entries on the way."""
        while self._heap:
            due, key = self._heap[0]
            if self._due.get(key) == due:
                return due
            heapq.heappop(self._heap)
        return None

    def pop_due(self) -> Key | None:
        """The key whose resync is due now (earliest first), removed from the schedule; None if none is due."""
        due = self.next_due()
        if due is None or due > self._clock():
            return None
        _, key = heapq.heappop(self._heap)
        del self._due[key]
        return key

    def _compact(self) -> None:
        self._heap = [(due, key) for key, due in self._due.items()]
        heapq.heapify(self._heap)

    async def _wait_for_due(self) -> None:
        """Until some resync is due (or the schedule changed: an earlier one may be due sooner)."""
        self._changed.clear()
        due = self.next_due()
        timeout = None if due is None else max(due - self._clock(), 0.0)
        if timeout == 0.0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    async def run(
        self,
        resyncers: Mapping[str, Callable[[Key], Awaitable[None]]],
        active: Callable[[], Awaitable[bool]],
        concurrency: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Start each due resync with `resyncers[key.kind](key)`, at most `concurrency` at once and `per_second`
        per second (0: no rate limit), only while `active()`. Runs until cancelled."""
        running: set[asyncio.Task[None]] = set()
        free = asyncio.Semaphore(concurrency)
        last_start = -float("inf")
        try:
            while True:
                await self._wait_for_due()
                due = self.next_due()
                if due is None or due > self._clock():
                    continue
                if not await active():
                    await sleep(PeeringGate.RECHECK_SECONDS)
                    continue
                await free.acquire()
                if self.per_second > 0:
                    gap = last_start + 1.0 / self.per_second - self._clock()
                    if gap > 0:
                        await sleep(gap)
                key = self.pop_due()
                if key is None:  # forgotten or rescheduled meanwhile
                    free.release()
                    continue
                last_start = self._clock()
                task = asyncio.create_task(self._resync(resyncers[key.kind], key, free))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    async def _resync(self, resync: Callable[[Key], Awaitable[None]], key: Key, free: asyncio.Semaphore) -> None:
        try:
            await resync(key)
            self._failures.pop(key, None)
        except Retry as retry:
            # Doubling from the reconcile's own delay up to the interval, as a kopf handler's retries do.
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if key not in self._due:  # else a reconcile meanwhile has already put it back
                self.schedule(key, doubling(retry.delay, self.interval, failures - 1))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a resync must never end the loop; the next one tries again
            logger.warning("resync of %s %s failed (%s); next in %g s", key.kind, key.name, type(error).__name__,
                           self.interval)  # fmt: skip
            if key not in self._due:
                self.reconciled(key)
        finally:
            free.release()


class PeeringGate:
    """Whether this process is the active one of its kopf peering, asked of the ClusterKopfPeering object.

    kopf pauses a process while a live peer has a higher priority (a younger one, here: `cli.start_priority`) and
    stops its timers then; this loop is not a kopf timer, so it asks the same question itself: are we the live
    peer with the highest priority? Read at most every RECHECK_SECONDS; when the object cannot be read, not
    active (as kopf, which pauses when its peering object is missing)."""

    RECHECK_SECONDS = 5.0

    def __init__(
        self,
        read_peers: Callable[[], Awaitable[Mapping[str, Any] | None]] | None,
        priority: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read_peers
        self._priority = priority
        self._clock = clock
        self._checked = -float("inf")
        self._active = False

    async def __call__(self) -> bool:
        if self._read is None:  # standalone: no peering
            return True
        if self._clock() - self._checked >= self.RECHECK_SECONDS:
            self._checked = self._clock()
            try:
                peers = await self._read()
            except Exception as error:  # the decision fails closed; the reason is logged once per check
                logger.warning("cannot read the peering object (%s): resyncs wait", type(error).__name__)
                peers = None
            self._active = peers is not None and leads(peers, self._priority, datetime.datetime.now(datetime.UTC))
        return self._active


def leads(peers: Mapping[str, Any], priority: int, now: datetime.datetime) -> bool:
    """kopf's rule, from a ClusterKopfPeering's status ({identity: {priority, lifetime, lastseen}}): no other live
    peer has a priority above ours (our own entry has ours; an equal one elsewhere is a tie kopf also pauses on,
    which the random part of our priorities makes as good as impossible)."""
    for info in peers.values():
        if not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            other = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        if lastseen + lifetime > now and other > priority:
            return False
    return True
