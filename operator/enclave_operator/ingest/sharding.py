"""Deterministic assignment of discovered items to the shards of an Indexed Job.

Why a hash and not ``position mod shards``: every shard discovers the full item list on
its own, and listings may come back in different orders or grow between shard starts. A
hash of the item's stable key gives the same owner whatever the order, so shards never
overlap and together cover everything. The stable key is an *original* identifier (UIDs,
object key): it is only hashed here and never logged or written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def shard_of(stable_key: str, shards: int) -> int:
    """Owner shard of an item: ``int(sha256(key)) mod shards``."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    digest = hashlib.sha256(stable_key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def select(items: Iterable[T], index: int, shards: int, key: Callable[[T], str]) -> list[T]:
    """This shard's items, sorted by stable key (duplicates by key are kept once)."""
    if not 0 <= index < shards:
        raise ValueError("index must be in 0..shards-1")
    seen: dict[str, T] = {}
    for item in items:
        k = key(item)
        if k not in seen and shard_of(k, shards) == index:
            seen[k] = item
    return [seen[k] for k in sorted(seen)]
