"""Reconcile slots: at most `size` at once, waiters served by priority then arrival (priority.py)."""

from __future__ import annotations

import asyncio

from enclave_operator.priority import Priority, Slots


async def test_at_most_size_at_once_and_waiters_by_priority_then_arrival() -> None:
    slots, order, running, most = Slots(2), [], [0], [0]
    gate = asyncio.Event()

    async def work(name: str, priority: Priority) -> None:
        async with slots.take(priority):
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(name)
            await gate.wait()
            running[0] -= 1

    first = [asyncio.create_task(work(f"busy{i}", Priority.CREATE)) for i in range(2)]
    await asyncio.sleep(0)
    queued = [("resync", Priority.RESYNC), ("create1", Priority.CREATE), ("edit", Priority.EDIT),
              ("create2", Priority.CREATE)]  # fmt: skip
    rest = []
    for name, priority in queued:
        rest.append(asyncio.create_task(work(name, priority)))
        await asyncio.sleep(0)
    assert slots.waiting == 4, "both slots taken: the others wait"
    gate.set()
    await asyncio.gather(*first, *rest)
    assert order == ["busy0", "busy1", "edit", "create1", "create2", "resync"], "edits first, then by arrival"
    assert most[0] == 2
    assert slots.waiting == 0


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    slots = Slots(1)
    held = asyncio.Event()

    async def hold() -> None:
        async with slots.take(Priority.CREATE):
            await held.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled.cancel()
    held.set()
    await holder
    async with asyncio.timeout(1):
        async with slots.take(Priority.RESYNC):
            pass  # the slot came back although a cancelled waiter was queued


async def test_the_priority_goes_with_the_work_into_nested_slots_and_tasks() -> None:
    """A reconcile's slot sets the current priority; a backend's own Slots (sacctmgr writes) then orders its
    waiters by it, also for tasks the reconcile starts; outside any slot it is EDIT (someone is waiting)."""
    from enclave_operator import priority as priority_mod

    assert priority_mod.current.get() is Priority.EDIT
    reconciles, backend, order = Slots(8), Slots(1), []
    held = asyncio.Event()

    async def hold() -> None:
        async with backend.take():
            await held.wait()

    async def reconcile(name: str, priority: Priority) -> None:
        async with reconciles.take(priority):
            assert priority_mod.current.get() is priority

            async def part() -> None:  # a part the reconcile runs concurrently: the context is copied
                async with backend.take():
                    order.append(name)

            await asyncio.gather(part())

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    tasks = []
    for name, priority in [("resync", Priority.RESYNC), ("create", Priority.CREATE), ("edit", Priority.EDIT)]:
        tasks.append(asyncio.create_task(reconcile(name, priority)))
        for _ in range(3):
            await asyncio.sleep(0)
    assert backend.waiting == 3
    held.set()
    await asyncio.gather(holder, *tasks)
    assert order == ["edit", "create", "resync"]
    assert priority_mod.current.get() is Priority.EDIT, "reset after the body"
