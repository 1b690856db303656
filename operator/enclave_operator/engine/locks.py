"""One lock per object, kept only while someone holds or waits for it.

Every handler of one object (its reconcile, its timers, its deletion) runs under the object's lock, so two never
write its status at once. A lock per object kept for the life of the process costs every idle object an entry
(10,000 projects: 10,000 locks), and a reconcile that ran after an object's deletion put its entry back after the
delete handler had removed it. An entry here lives from the first `async with locks[key]` to the last one's end.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Hashable
from types import TracebackType


@dataclasses.dataclass
class _Entry:
    lock: asyncio.Lock
    users: int
    """Holding or waiting."""


class KeyedLocks:
    """`async with locks[key]:` runs the body under `key`'s lock (any hashable key: an object's uid, a GPU family)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __getitem__(self, key: Hashable) -> _Hold:
        return _Hold(self, key)

    def _join(self, key: Hashable) -> asyncio.Lock:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(asyncio.Lock(), 0)
        entry.users += 1
        return entry.lock

    def _leave(self, key: Hashable) -> None:
        entry = self._entries[key]
        entry.users -= 1
        if entry.users == 0:
            del self._entries[key]


class _Hold:
    """The lock of one key for one `async with` (waiting counts: the entry stays for the waiter)."""

    def __init__(self, locks: KeyedLocks, key: Hashable) -> None:
        self._locks, self._key = locks, key
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        lock = self._locks._join(self._key)
        try:
            await lock.acquire()
        except BaseException:
            self._locks._leave(self._key)  # cancelled while waiting
            raise
        self._lock = lock

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:  # fmt: skip
        assert self._lock is not None
        self._lock.release()
        self._lock = None
        self._locks._leave(self._key)
