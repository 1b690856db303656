"""Per-object locks that exist only while held or waited for (engine/locks.py)."""

from __future__ import annotations

import asyncio

import pytest

from enclave_operator.engine.locks import KeyedLocks


async def test_one_key_one_holder_at_a_time_other_keys_meanwhile() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks[key]:
            order.append(f"{name}+")
            await asyncio.sleep(0.02)
            order.append(f"{name}-")

    await asyncio.gather(hold("a", "first"), hold("a", "second"), hold("b", "other"))
    assert order.index("first-") < order.index("second+"), order
    assert order.index("other+") < order.index("first-"), "another key does not wait"


async def test_an_entry_lives_while_held_or_waited_for_and_no_longer() -> None:
    """10,000 idle objects hold no lock; a reconcile after a deletion leaves nothing behind."""
    locks = KeyedLocks()
    releases = [asyncio.Event(), asyncio.Event()]

    async def hold(release: asyncio.Event) -> None:
        async with locks["a"]:
            await release.wait()

    first, second = (asyncio.create_task(hold(release)) for release in releases)
    await asyncio.sleep(0.01)
    assert len(locks) == 1, "one entry for the holder and its waiter"
    releases[0].set()
    await first
    assert "a" in locks, "the waiter holds it now"
    releases[1].set()
    await second
    assert len(locks) == 0


async def test_a_waiter_cancelled_leaves_no_entry_and_does_not_hold_the_lock() -> None:
    locks = KeyedLocks()
    async def wait() -> None:
        async with locks["a"]:
            raise AssertionError("never holds it")

    async with locks["a"]:
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0
    async with asyncio.timeout(1):
        async with locks["a"]:
            pass


async def test_a_body_that_raises_releases_the_lock_and_the_entry() -> None:
    locks = KeyedLocks()
    with pytest.raises(KeyError):
        async with locks["a"]:
            raise KeyError("a")
    assert len(locks) == 0
