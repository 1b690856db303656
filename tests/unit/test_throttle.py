"""Process-wide backend bounds (backends/throttle.py): calls per second and the blocking-call pool."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from enclave_operator.backends import throttle


async def test_a_rate_spaces_calls_out() -> None:
    bound = throttle.Bound("s3", per_second=20)
    start = time.monotonic()
    for _ in range(40):  # one second's burst, then 20 per second
        await bound.wait()
    assert time.monotonic() - start >= 0.8, "40 calls at 20/s take at least a second after the first burst"


async def test_no_rate_does_not_wait() -> None:
    bound = throttle.Bound("kubernetes")
    async with asyncio.timeout(1):
        for _ in range(10_000):
            await bound.wait()


async def test_blocking_calls_run_in_the_backends_own_pool() -> None:
    bound = throttle.Bound("s3", threads=2)
    names = await asyncio.gather(*(bound.run(lambda: threading.current_thread().name) for _ in range(8)))
    assert {n.rsplit("_", 1)[0] for n in names} == {"enclave-s3"}
    assert len(set(names)) <= 2, "at most `threads` calls at once"
    bound.close()


def test_configure_replaces_the_process_wide_bound_and_refuses_unknown_backends() -> None:
    first = throttle.configure("slurm", per_second=5)
    assert throttle.bound("slurm") is first and first.per_second == 5
    assert throttle.configure("slurm").per_second == 0
    with pytest.raises(ValueError, match="unknown backend"):
        throttle.configure("ldap")
