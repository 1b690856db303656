"""The work of one process on projects and federated nodes: which object is reconciled next, and when again.

kopf's create, update and resume handlers of these kinds only put a key in this queue (`add`) and return; one loop
per process (`WorkQueue.run`) starts the reconciles, each in a reconcile slot (priority.py), most urgent first: edits
before creations (and retries, and resumes after a restart) before resyncs. A waiting object costs a key and a few
numbers here, not a kopf handler holding its body, its cause and a coroutine (~45 KiB each: 10,000 objects created
at once held ~400 MiB while they waited for a slot, issue 12). An object is never reconciled twice at once by the
queue, and an event for an object being reconciled runs it once more right after (its read may predate the event);
many events for an object that waits are one reconcile.

After a reconcile the object is due again: `intervals.resyncSeconds` (+ up to `resyncJitter` of it) later, to repair
drift and act on dates (a resync); sooner, doubling from the reconcile's own delay, when it did not converge
(`Retry`). Resyncs start no faster than `intervals.resyncsPerSecond`, so that a full pass over 10,000 objects is
spread out instead of hammering the backends; edits and creations are never held back by that rate.

The loop runs only while this process is the active one of its kopf peering (`PeeringGate`): a standby serves the
webhooks but must not reconcile, which kopf's own handlers respect by pausing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from enclave_operator.backoff import doubling
from enclave_operator.priority import Priority, Slots

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, order=True)
class Key:
    """One object: its kind (which reconcile to call), name and uid (cluster-scoped kinds)."""

    kind: str
    name: str
    uid: str


class Retry(Exception):
    """A reconcile that did not converge: try again after `delay` seconds (doubling while it keeps failing) instead
    of a whole resync interval."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:g} s")
        self.delay = delay


Work = Callable[[Key, Priority], Awaitable[None]]
"""A kind's reconcile of one key, run in a slot the queue took for it at that priority; raises Retry."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    due: float
    priority: Priority
    seq: int
    """Which heap entries are current: the others are skipped when they come up (lazy deletion)."""


@dataclasses.dataclass
class _Running:
    again: Priority | None = None
    """Something happened to the object during its reconcile: reconcile it again at this priority right after."""
    forgotten: bool = False
    """The object went away during its reconcile: no resync after it."""


class WorkQueue:
    """Keys waiting for a reconcile: those due later in a heap by due time, those due now in a heap by priority (then
    due time, then arrival). The dict holds each key's current entry; a key is in it at most once."""

    def __init__(
        self,
        interval: float,
        jitter: float,
        per_second: float,
        retry_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.interval = interval
        self.jitter = jitter
        self.per_second = per_second
        self.retry_seconds = retry_seconds
        """The first retry's delay after a reconcile failed unexpectedly (a bug, not a `Retry`)."""
        self._clock = clock
        self._rand = rand
        self._entries: dict[Key, _Entry] = {}
        self._later: list[tuple[float, int, Key]] = []
        self._now: list[tuple[int, float, int, Key]] = []
        self._seq = itertools.count()
        self._running: dict[Key, _Running] = {}
        self._failures: dict[Key, int] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def running(self) -> int:
        return len(self._running)

    def figures(self) -> dict[str, int]:
        """Keys due now (waiting for a slot), due later, and being reconciled (metrics: enclave_work_queue_keys).

        Called from the metrics server's thread while the event loop changes the queue: it iterates a copy, taken in
        one C call (`list` of a dict view runs no Python code, so no other thread runs during it)."""
        now = self._clock()
        entries = list(self._entries.values())
        due = sum(1 for entry in entries if entry.due <= now)
        return {"due": due, "later": len(entries) - due, "running": len(self._running)}

    def due_at(self, key: Key) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.due

    def priority_of(self, key: Key) -> Priority | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.priority

    def add(self, key: Key, priority: Priority, delay: float = 0.0) -> None:
        """Reconcile `key` at `priority` in `delay` seconds, or sooner and more urgently if it already waits for that
        (one entry per key: the earlier time and the more urgent priority of both). If it is being reconciled, once
        more right after (the reconcile in flight may have read the object before what this is about)."""
        running = self._running.get(key)
        if running is not None and delay <= 0:
            running.again = priority if running.again is None else min(running.again, priority)
            return
        entry = self._entries.get(key)
        due = self._clock() + delay
        if entry is not None:
            due, priority = min(due, entry.due), min(priority, entry.priority)
            if (due, priority) == (entry.due, entry.priority):
                return
        self._put(key, due, priority)

    def reconciled(self, key: Key) -> None:
        """`key` was just reconciled: its next resync is one interval (plus jitter) from now. An edit or creation
        still waiting for it stays: it may have come after the reconcile read the object."""
        entry = self._entries.get(key)
        if entry is not None and entry.priority < Priority.RESYNC:
            return
        self._put(key, self._clock() + self.interval * (1 + self.jitter * self._rand()), Priority.RESYNC)

    def forget(self, key: Key) -> None:
        """The object is gone (or being deleted): nothing more for it."""
        self._entries.pop(key, None)
        self._failures.pop(key, None)
        running = self._running.get(key)
        if running is not None:
            running.again, running.forgotten = None, True

    def _put(self, key: Key, due: float, priority: Priority) -> None:
        entry = self._entries[key] = _Entry(due, priority, next(self._seq))
        if due <= self._clock():
            heapq.heappush(self._now, (int(priority), due, entry.seq, key))
        else:
            heapq.heappush(self._later, (due, entry.seq, key))
        if len(self._later) + len(self._now) > 2 * len(self._entries) + 64:
            self._compact()
        self._changed.set()

    def _current(self, key: Key, seq: int) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.seq == seq

    def _compact(self) -> None:
        now = self._clock()
        self._later = [(e.due, e.seq, k) for k, e in self._entries.items() if e.due > now]
        self._now = [(int(e.priority), e.due, e.seq, k) for k, e in self._entries.items() if e.due <= now]
        heapq.heapify(self._later)
        heapq.heapify(self._now)

    def next_due(self) -> float | None:
        """The earliest due time of a key not due yet (stale heap entries dropped on the way)."""
        while self._later:
            due, seq, key = self._later[0]
            if self._current(key, seq):
                return due
            heapq.heappop(self._later)
        return None

    def head(self) -> tuple[Key, Priority] | None:
        """The most urgent key due now (None if none is), left in the queue."""
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            due, seq, key = heapq.heappop(self._later)
            if self._current(key, seq):
                heapq.heappush(self._now, (int(self._entries[key].priority), due, seq, key))
        while self._now:
            priority, _, seq, key = self._now[0]
            if self._current(key, seq):
                return key, Priority(priority)
            heapq.heappop(self._now)
        return None

    def pop_due(self) -> Key | None:
        """The most urgent key due now, removed from the queue; None if none is due."""
        head = self.head()
        if head is None:
            return None
        heapq.heappop(self._now)
        del self._entries[head[0]]
        return head[0]

    async def run(
        self,
        work: Mapping[str, Work],
        active: Callable[[], Awaitable[bool]],
        slots: Slots,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Start the reconcile of each due key with `work[key.kind]`, most urgent first, each once a slot is free
        for its priority (the loop does not wait for a slot for one key while a more urgent one could start),
        resyncs at most `per_second` per second (0: no rate limit), and only while `active()`. Runs until
        cancelled; cancelling it cancels the reconciles it started."""
        tasks: set[asyncio.Task[None]] = set()
        last_resync = -float("inf")
        slots.on_release(self._changed.set)
        try:
            while True:
                self._changed.clear()
                head = self.head()
                timeout: float | None = None
                if head is None:
                    due = self.next_due()
                    timeout = None if due is None else max(due - self._clock(), 0.0)
                elif not await active():
                    await sleep(PeeringGate.RECHECK_SECONDS)
                    continue
                else:
                    key, priority = head
                    gap = last_resync + 1.0 / self.per_second - self._clock() if (
                        priority == Priority.RESYNC and self.per_second > 0) else 0.0  # fmt: skip
                    if gap > 0:
                        await sleep(gap)  # an edit or creation added meanwhile goes first after it
                        continue
                    if slots.try_take(priority):
                        self.pop_due()
                        if priority == Priority.RESYNC:
                            last_resync = self._clock()
                        self._running[key] = _Running()
                        task = asyncio.create_task(self._reconcile(work[key.kind], key, priority, slots))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        continue
                    # No slot for this priority now: wait for one to free or for something more urgent.
                if timeout != 0.0:
                    # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that comes with the event.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await self._changed.wait()
        finally:
            slots.on_release(None)
            for task in tasks:
                task.cancel()

    async def _reconcile(self, work: Work, key: Key, priority: Priority, slots: Slots) -> None:
        retry: float | None = None
        try:
            with slots.holding(priority):
                await work(key, priority)
        except Retry as error:
            retry = error.delay
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a reconcile must never end the loop; the object is tried again
            retry = self.retry_seconds
            logger.warning("reconcile of %s %s failed (%s); again in %g s or more", key.kind, key.name,
                           type(error).__name__, self.retry_seconds)  # fmt: skip
        finally:
            self._done(key, retry)

    def _done(self, key: Key, retry: float | None) -> None:
        """Due again: at once if something happened meanwhile; after a doubling delay if it did not converge (more
        urgent than a resync: a new object that is not ready yet is what someone waits for); else one interval on."""
        running = self._running.pop(key, _Running())
        if retry is not None:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        else:
            self._failures.pop(key, None)
        if running.again is not None:
            self.add(key, running.again)
        elif running.forgotten:
            return
        elif retry is not None:
            self._put(key, self._clock() + doubling(retry, self.interval, failures - 1), Priority.CREATE)
        elif key not in self._entries:
            self.reconciled(key)


class PeeringGate:
    """Whether this process is the active one of its kopf peering, asked of the ClusterKopfPeering object.

    kopf pauses a process while a live peer has a higher priority (a younger one, here: `cli.start_priority`) and
    stops its handlers then; this loop is not a kopf handler, so it asks the same question itself: are we the live
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
                logger.warning("cannot read the peering object (%s): reconciles wait", type(error).__name__)
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
