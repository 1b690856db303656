"""A bounded number of reconciles at once, handed out by priority (then in arrival order).

Thousands of objects have something to do at once after a large `kubectl apply` or a restart. Run all of
them together and every backend call waits behind thousands of others, so a single edit takes minutes. A
reconcile runs in a slot (the work queue takes one with `try_take` for the most urgent key it holds,
engine/workqueue.py; other work waits for one with `Slots.take`): at most `size` reconciles run, and a waiting
edit goes before waiting creations, which go before resyncs.

A reconcile's priority goes with it (`current`) into the calls it makes, so that a backend that takes one call at
a time (sacctmgr writes: slurmdbd serialises them) serves a waiting edit's call before waiting creations' calls
with a `Slots` of its own, instead of in arrival order behind every reconcile in flight.

Its own module, outside engine/ and backends/: the runtime hands out reconcile slots with it and backend runners
(slurm_accounts) order their own calls with it; neither package depends on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Iterator


class Priority(enum.IntEnum):
    """Lower goes first."""

    EDIT = 0
    """A change to (or the deletion of) an object: what a person waits for."""
    CREATE = 1
    """A new object, a retry, or an object resumed after a restart."""
    RESYNC = 2
    """The periodic re-observation: it can wait."""


current: contextvars.ContextVar[Priority] = contextvars.ContextVar("priority", default=Priority.EDIT)
"""The priority of the work this task does: set by `Slots.take` for its body (and inherited by the tasks and
threads it starts); outside any reconcile (a webhook's check, start-up) someone is waiting: EDIT."""


@dataclasses.dataclass
class _Held:
    """The slot a reconcile holds, and whether it gave it back early (`give_back_slot`)."""

    slots: Slots
    given_back: bool = False


_held: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("held_slot", default=None)


def give_back_slot() -> None:
    """Hand the slot this reconcile holds to waiting work now, for the rest of the reconcile (nothing if it holds
    none, or gave it back already).

    For a wait that ends sooner the more work waits with it: new Slurm accounts are added together by one
    `sacctmgr load` (backends/slurm_accounts.py), and a reconcile holding its slot while it waits would keep the
    next creations from joining that load, which then carries no more accounts than there are slots. What a
    reconcile has left after such a wait is short (a read back, its status), so it finishes without a slot."""
    held = _held.get()
    if held is not None and not held.given_back:
        held.given_back = True
        held.slots._release()


def reconciling_edit() -> bool:
    """Whether this task runs an edit's reconcile (EDIT, in a slot). A webhook's check runs at EDIT too, but outside
    any slot: a backend that holds its own bulk work back for edits (a Slurm load) must not do so for every
    creation's admission."""
    return current.get() == Priority.EDIT and _held.get() is not None


class Slots:
    """`size` slots, the last `reserved` of them only for EDIT work: during a rollout every other slot is held by a
    creation for seconds, and without a kept slot an edit would wait for one of them to end before it starts
    (as an API server's priority levels keep seats for their own traffic)."""

    def __init__(self, size: int, *, reserved: int = 0) -> None:
        self.size = size
        self.reserved = max(0, min(reserved, size - 1))
        """At most size − 1: other work always has a slot."""
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()
        self._listener: Callable[[], None] | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiting if not future.done())

    def _may_take(self, priority: int) -> bool:
        return self._free > (0 if priority == Priority.EDIT else self.reserved)

    def _first_waiting(self) -> int | None:
        """The priority of the first live waiter (cancelled ones are dropped on the way)."""
        while self._waiting and self._waiting[0][2].done():
            heapq.heappop(self._waiting)
        return self._waiting[0][0] if self._waiting else None

    def try_take(self, priority: Priority) -> bool:
        """Take a slot for `priority` if one is free for it and no one more urgent (or as urgent, earlier) waits;
        the caller then runs its work in `holding(priority)`. For a queue that must not wait for a slot for one
        item while a more urgent one could start (engine/workqueue.py)."""
        first = self._first_waiting()
        if self._may_take(priority) and (first is None or first > priority):
            self._free -= 1
            return True
        return False

    @contextlib.asynccontextmanager
    async def take(self, priority: Priority | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body; wait for one, by priority (default: the `current` one), when all are taken
        (or all but the reserved ones, for other work than EDIT). The body runs with `priority` as the current one."""
        priority = current.get() if priority is None else priority
        if not self.try_take(priority):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (int(priority), next(self._arrival), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # handed a slot just as we were cancelled: pass it on
                raise
        with self.holding(priority):
            yield

    @contextlib.contextmanager
    def holding(self, priority: Priority) -> Iterator[None]:
        """The body runs in a slot already taken (`try_take`, or `take`'s wait), at `priority`; the slot is given
        back at its end (unless the body gave it back early: `give_back_slot`)."""
        token, held = current.set(priority), _Held(self)
        held_token = _held.set(held)
        try:
            yield
        finally:
            current.reset(token)
            _held.reset(held_token)
            if not held.given_back:
                self._release()

    def on_release(self, listener: Callable[[], None] | None) -> None:
        """Call `listener` whenever a slot is given back and none of the waiters took it (None: no more)."""
        self._listener = listener

    def _release(self) -> None:
        self._free += 1
        while (first := self._first_waiting()) is not None and self._may_take(first):
            _, _, future = heapq.heappop(self._waiting)
            self._free -= 1
            future.set_result(None)  # the slot goes straight to the next waiter
        if self._listener is not None and self._free > 0:
            self._listener()
