"""The operator process's C heap: few malloc arenas, free pages handed back to the system.

Most of the operator's resident memory beyond its imports is not held by Python objects (tracemalloc saw
31.5 of 146 MiB at 200 projects) but by glibc's allocator: every thread that allocates (the S3 pool's 16,
kopf's and asyncio's executors, OpenSSL in them) gets an arena of its own, up to 8 per core, and memory
freed in an arena stays resident until its top chunk is free. So `enclave-operator run` limits the arenas
before any thread starts (mallopt M_ARENA_MAX; the GIL lets few threads allocate at once anyway) and the
running operator returns the free pages of every arena now and then (malloc_trim), so a rollout's peak does
not stay as the idle size.

Both are glibc functions: under another C library (musl) nothing changes and the functions say so.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging

log = logging.getLogger("enclave_operator.memory")

M_ARENA_MAX = -8
"""mallopt parameter (malloc.h)."""
ARENAS = 2
"""Arenas of the operator process: the main one and one shared by every thread."""
TRIM_INTERVAL_S = 30.0
"""How often the running operator returns free heap pages to the system."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas for this process; threads started later share them. False if not glibc."""
    libc = _libc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1


def trim() -> bool:
    """Return the free pages of every arena to the system; True if some were (False too when not glibc)."""
    libc = _libc()
    return libc is not None and libc.malloc_trim(0) == 1


async def trim_periodically(interval: float = TRIM_INTERVAL_S) -> None:
    """Trim every `interval` seconds until cancelled (a runtime task of the operator)."""
    while True:
        await asyncio.sleep(interval)
        trim()
