"""One generic loop for every backend part (after Crossplane's managed reconciler).

`reconcile_part` walks observe → create | update → observe again, and turns the result into the
part's condition and events. An adapter whose writes answer with the state they left returns it from
create/update (an `Observation`), and the engine takes it instead of observing again.
`finalize_part` walks observe → delete per policy → observe again.
`reconcile_parts` reconciles several parts of one object at the same time, each after the parts it
needs: a reconcile then waits for its longest chain of backend calls, not for the sum of all of them.
All are idempotent: running them twice, or after a crash at any line, converges to the same state,
because every decision is taken from a fresh observation of the backend.

A thing that exists but is not the project's (`ownership.NotOwned`: a foreign namespace, a bucket of
another project, a retained one not adopted) gets a condition with reason NotOwned and no fast retry;
on deletion it counts as done ("never ours: left alone"), so a finalizer never waits on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Collection, Mapping, Sequence

from enclave_operator import conditions, metrics, reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends.adapter import Adapter, DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendUnavailable
from enclave_operator.backends.ownership import NotOwned
from enclave_operator.engine.recorder import Recorder

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PartOutcome:
    """The result of reconciling one part: its condition, its last observation, whether to retry."""

    condition: conditions.Cond
    observation: Observation | None
    retry: bool
    wrote: bool
    """True when the backend was changed (create or update); a no-op resync leaves it False."""


def _reason(error: BackendError) -> str:
    if isinstance(error, NotOwned):
        return reasons.REASON_NOT_OWNED
    return reasons.REASON_BACKEND_UNAVAILABLE if isinstance(error, BackendUnavailable) else reasons.REASON_BACKEND_ERROR


def _failed(adapter: Adapter, verb: str, error: BackendError, recorder: Recorder) -> PartOutcome:
    reason = _reason(error)
    event_reason = f"Cannot{verb}{adapter.noun}"
    message = f"cannot {verb.lower()} {adapter.noun.lower()}: {error}"
    logger.debug("%s: %s", event_reason, error)
    recorder.event("Warning", event_reason, message)
    metrics.BACKEND_ERRORS.labels(part=adapter.part, action=verb.lower()).inc()
    return PartOutcome(conditions.false(adapter.part, reason, message), None, error.retryable, False)


async def _timed(adapter: Adapter, action: str, coro):  # type: ignore[no-untyped-def]
    """Await one adapter call, timed; an unexpected exception becomes a BackendError (a bug, logged)."""
    start = time.perf_counter()
    try:
        return await coro
    except BackendError:
        raise
    except Exception as error:
        logger.exception("%s %s of %s failed unexpectedly", action, adapter.noun, adapter.part)
        raise BackendError(f"internal error ({type(error).__name__}); see the operator log") from None
    finally:
        metrics.BACKEND_CALL_SECONDS.labels(part=adapter.part, action=action).observe(time.perf_counter() - start)


async def reconcile_part(adapter: Adapter, recorder: Recorder) -> PartOutcome:
    """Bring one external thing to its desired state and say how it went."""
    try:
        observation = await _timed(adapter, "observe", adapter.observe())
    except BackendError as error:
        return _failed(adapter, "Observe", error, recorder)
    wrote = False
    left: Observation | None = None
    if not observation.exists and not observation.up_to_date:
        try:
            left = await _timed(adapter, "create", adapter.create())
        except BackendError as error:
            return _failed(adapter, "Create", error, recorder)
        wrote = True
        metrics.BACKEND_WRITES.labels(part=adapter.part, action="create").inc()
        recorder.event(
            "Normal", f"Created{adapter.noun}", f"created {adapter.noun.lower()} {observation.resource}".strip()
        )
    elif observation.exists and not observation.up_to_date:
        try:
            left = await _timed(adapter, "update", adapter.update(observation))
        except BackendError as error:
            return _failed(adapter, "Update", error, recorder)
        wrote = True
        metrics.BACKEND_WRITES.labels(part=adapter.part, action="update").inc()
        if observation.adopting:
            message = f"took over {adapter.noun.lower()} {observation.resource}, retained by an earlier project"
            recorder.event("Normal", f"Adopted{adapter.noun}", f"{message} of this name (spec.adopt)")
        else:
            recorder.event("Normal", f"Updated{adapter.noun}", f"repaired {adapter.noun.lower()}: {observation.diff}")
    if wrote and left is not None:
        observation = left  # the backend's answers to the writes already say what is there now
    elif wrote:
        try:
            observation = await _timed(adapter, "observe", adapter.observe())
        except BackendError as error:
            return _failed(adapter, "Observe", error, recorder)
    if observation.up_to_date and observation.degraded_reason:
        cond = conditions.false(adapter.part, observation.degraded_reason, observation.degraded_message)
        return PartOutcome(cond, observation, False, wrote)
    if observation.up_to_date:
        cond = conditions.true(
            adapter.part,
            reasons.REASON_UP_TO_DATE,
            f"{adapter.noun.lower()} {observation.resource} is up to date".replace("  ", " "),
        )
        return PartOutcome(cond, observation, False, wrote)
    message = f"{adapter.noun.lower()} not yet as desired: {observation.diff or 'still being created'}"
    return PartOutcome(conditions.false(adapter.part, reasons.REASON_PROGRESSING, message), observation, True, wrote)


AFTER_ALL_OTHERS: Collection[str] = frozenset({"*every other part*"})
"""`needs[noun] = AFTER_ALL_OTHERS`: that part starts once every other part of the object is done, earlier or
later in the list, including parts added in future (a list of nouns would have to be kept in step by hand)."""


async def reconcile_parts(parts: Sequence[Adapter], recorder: Recorder,
                          needs: Mapping[str, Collection[str]]) -> list[PartOutcome]:  # fmt: skip
    """Reconcile every part; a part starts once the earlier parts whose nouns it needs (`needs[noun]`) are done,
    or all other parts (`AFTER_ALL_OTHERS`), all others at once. Outcomes come in the order of `parts`; events in
    the order the parts finish.

    A part is reconciled even when a part it needs failed, as a sequential walk would (it reports its own
    condition, e.g. "namespace does not exist (yet)"). Only earlier parts can be needed, and a part that comes
    after all others can be needed by none, so there is no cycle (checked: a ValueError names the parts).
    """
    last = [part.noun for part in parts if needs.get(part.noun) is AFTER_ALL_OTHERS]
    if len(last) > 1 or any(noun in needs.get(part.noun, ()) for part in parts for noun in last):
        raise ValueError(f"no other part may need a part that comes after all others: {last}")
    tasks: list[asyncio.Task[PartOutcome]] = []

    async def run(index: int, part: Adapter) -> PartOutcome:
        wanted = needs.get(part.noun, ())
        if wanted is AFTER_ALL_OTHERS:
            before = [task for i, task in enumerate(tasks) if i != index]  # all are created before any runs
        else:
            before = [tasks[i] for i in range(index) if parts[i].noun in wanted]
        if before:
            await asyncio.wait(before)
        return await reconcile_part(part, recorder)

    async with asyncio.TaskGroup() as group:
        for index, part in enumerate(parts):
            tasks.append(group.create_task(run(index, part)))
    return [task.result() for task in tasks]


@dataclasses.dataclass(frozen=True)
class FinalizeOutcome:
    done: bool
    message: str
    condition: conditions.Cond | None = None
    """When a part could not be deleted: its condition (False, with the reason), for status during deletion."""


async def finalize_part(adapter: Adapter, policy: DeletionPolicy, recorder: Recorder) -> FinalizeOutcome:
    """Delete (or, under Retain, revoke access to) one external thing; done once a fresh observation agrees."""
    try:
        observation = await _timed(adapter, "observe", adapter.observe())
        if not observation.exists:
            return FinalizeOutcome(True, f"{adapter.noun.lower()} is gone")
        outcome = await _timed(adapter, "delete", adapter.delete(policy))
    except NotOwned as error:
        logger.debug("%s left alone: %s", adapter.noun, error)
        return FinalizeOutcome(True, f"never ours, left alone ({error})")
    except BackendError as error:
        failed = _failed(adapter, "Delete", error, recorder)
        return FinalizeOutcome(False, failed.condition.message, failed.condition)
    metrics.BACKEND_WRITES.labels(part=adapter.part, action="delete").inc()
    if outcome is DeleteOutcome.RETAINED:
        recorder.event(
            "Normal",
            f"Retained{adapter.noun}",
            f"kept {adapter.noun.lower()} {observation.resource} (deletionPolicy Retain)",
        )
        return FinalizeOutcome(True, "retained")
    try:
        after = await _timed(adapter, "observe", adapter.observe())
    except BackendError as error:
        failed = _failed(adapter, "Observe", error, recorder)
        return FinalizeOutcome(False, failed.condition.message, failed.condition)
    if after.exists and not after.terminating:
        return FinalizeOutcome(False, f"waiting for {adapter.noun.lower()} {observation.resource} to go")
    recorder.event("Normal", f"Deleted{adapter.noun}", f"deleted {adapter.noun.lower()} {observation.resource}")
    return FinalizeOutcome(True, "deleted")
