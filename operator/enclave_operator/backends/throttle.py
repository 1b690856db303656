"""Process-wide bounds of each backend: calls per second, and (for the blocking SDKs) calls at once.

Every backend call path goes through the bound of its backend: `kube.call` ("kubernetes"),
`s3_minio.s3_call` ("s3", on its own thread pool), the FreeIPA and LDAP clients ("identity"),
`slurm_accounts.Sacctmgr.run` ("slurm"). The runtime configures them once from the settings
(`settings.ThrottleSettings`, `s3.maxConcurrentCalls`); a bound that was never configured limits
nothing and runs blocking calls on the event loop's default pool (unit tests, tools).

The rate is a leaky bucket (aiolimiter): bursts up to one second's worth, then `per_second` on average.
It caps what a large rollout or a full resync sends to a backend, whatever the number of objects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from aiolimiter import AsyncLimiter

T = TypeVar("T")
BACKENDS = ("kubernetes", "s3", "identity", "slurm")


class Bound:
    """The bound of one backend."""

    def __init__(self, name: str, *, per_second: float = 0.0, threads: int = 0) -> None:
        self.name = name
        self.per_second = per_second
        self._limiter = AsyncLimiter(per_second, 1.0) if per_second > 0 else None
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"enclave-{name}")
            if threads > 0
            else None
        )

    async def wait(self) -> None:
        """Return when one more call may start (at once when there is no rate limit)."""
        if self._limiter is not None:
            await self._limiter.acquire()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run one blocking SDK call in this backend's pool once the rate allows it."""
        await self.wait()
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


_bounds: dict[str, Bound] = {}


def configure(name: str, *, per_second: float = 0.0, threads: int = 0) -> Bound:
    """Set the bound of backend `name` (replacing an earlier one: its pool finishes what it runs)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}")
    old = _bounds.get(name)
    _bounds[name] = Bound(name, per_second=per_second, threads=threads)
    if old is not None:
        old.close()
    return _bounds[name]


def bound(name: str) -> Bound:
    """The bound of backend `name` (an unlimited one until configured)."""
    if name not in _bounds:
        configure(name)
    return _bounds[name]
