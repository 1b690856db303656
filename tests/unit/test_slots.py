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


async def test_reserved_slots_are_only_for_edits() -> None:
    """A rollout holds every slot for seconds at a time; an edit must start at once, not after one of them."""
    slots, gate = Slots(4, reserved=1), asyncio.Event()
    started: list[str] = []

    async def work(name: str, priority: Priority) -> None:
        async with slots.take(priority):
            started.append(name)
            await gate.wait()

    creations = [asyncio.create_task(work(f"create{i}", Priority.CREATE)) for i in range(5)]
    await asyncio.sleep(0)
    assert started == ["create0", "create1", "create2"], "creations leave the reserved slot free"
    assert slots.waiting == 2
    edit = asyncio.create_task(work("edit", Priority.EDIT))
    await asyncio.sleep(0)
    assert started[-1] == "edit", "the edit starts at once, in the reserved slot"
    second_edit = asyncio.create_task(work("edit2", Priority.EDIT))
    await asyncio.sleep(0)
    assert "edit2" not in started, "every slot taken: the next edit waits"
    gate.set()
    await asyncio.gather(*creations, edit, second_edit)
    assert started.index("edit2") == 4, "a freed slot goes to the waiting edit before the waiting creations"
    assert sorted(started[5:]) == ["create3", "create4"]


async def test_a_slot_freed_while_only_reserved_ones_remain_waits_for_an_edit() -> None:
    slots, gate = Slots(2, reserved=1), asyncio.Event()
    async with slots.take(Priority.RESYNC):
        waiter = asyncio.create_task(_hold(slots, Priority.RESYNC, gate))
        await asyncio.sleep(0)
        assert slots.waiting == 1, "the last slot is kept for edits"
        async with asyncio.timeout(1):
            async with slots.take(Priority.EDIT):
                assert slots.waiting == 1
    await asyncio.sleep(0)
    assert slots.waiting == 0, "both released: the resync runs"
    gate.set()
    await waiter


async def _hold(slots: Slots, priority: Priority, gate: asyncio.Event) -> None:
    async with slots.take(priority):
        await gate.wait()


def test_reserved_leaves_other_work_at_least_one_slot() -> None:
    assert Slots(1, reserved=2).reserved == 0
    assert Slots(16, reserved=2).reserved == 2


async def test_a_slot_given_back_goes_to_waiting_work_and_is_not_released_twice() -> None:
    """A reconcile waiting for a batched write (a sacctmgr load) gives its slot back, so that the next creation
    starts and joins the same batch; when it ends it does not release the slot a second time."""
    from enclave_operator.priority import give_back_slot

    slots, batch_done, started = Slots(1), asyncio.Event(), []

    async def creation(name: str) -> None:
        async with slots.take(Priority.CREATE):
            started.append(name)
            give_back_slot()
            give_back_slot()  # twice: still one slot given back
            await batch_done.wait()

    first = asyncio.create_task(creation("first"))
    second = asyncio.create_task(creation("second"))
    await asyncio.sleep(0.01)
    assert started == ["first", "second"], "the second started in the slot the first gave back"
    batch_done.set()
    await asyncio.gather(first, second)
    async with slots.take(Priority.RESYNC):
        assert slots._free == 0, "one slot in all: none was released twice"
    give_back_slot()  # outside any slot: nothing to give back
    assert slots._free == 1
