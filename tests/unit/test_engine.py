"""The generic loop: which action follows which observation, and what condition and events result."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from enclave_operator import reasons
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendRejected, BackendUnavailable
from enclave_operator.engine import managed
from enclave_operator.engine.events import part_verb
from enclave_operator.engine.recorder import ListRecorder


@dataclasses.dataclass
class FakeAdapter:
    """An adapter over an in-memory 'backend': a dict that create/update/delete change."""

    state: dict = dataclasses.field(default_factory=dict)
    fail: Callable[[str], Exception | None] = lambda action: None
    part: str = "ThingReady"
    noun: str = "Thing"
    member_key: str = "thing"
    calls: list[str] = dataclasses.field(default_factory=list)

    def _maybe_fail(self, action: str) -> None:
        self.calls.append(action)
        error = self.fail(action)
        if error:
            raise error

    async def observe(self) -> Observation:
        self._maybe_fail("observe")
        if "exists" not in self.state:
            return Observation(False, False, resource="t")
        drift = self.state.get("drift")
        return Observation(True, not drift, drift or "", "t")

    async def create(self) -> None:
        self._maybe_fail("create")
        self.state["exists"] = True

    async def update(self, observation: Observation) -> None:
        self._maybe_fail("update")
        self.state.pop("drift", None)

    async def delete(self, policy: str) -> DeleteOutcome:
        self._maybe_fail("delete")
        if policy == "Retain":
            return DeleteOutcome.RETAINED
        self.state.clear()
        return DeleteOutcome.DELETED


@pytest.mark.parametrize(
    ("state", "actions", "event", "wrote", "why"),
    [
        ({}, ["observe", "create", "observe"], "CreatedThing", True, "missing thing is created and re-observed"),
        ({"exists": True, "drift": "label gone"}, ["observe", "update", "observe"], "UpdatedThing", True,
         "drift is repaired"),
        ({"exists": True}, ["observe"], None, False, "up to date: observe only, no write, no event"),
    ],
)  # fmt: skip
async def test_reconcile_actions(state: dict, actions: list[str], event: str | None, wrote: bool, why: str) -> None:
    adapter, recorder = FakeAdapter(state=dict(state)), ListRecorder()
    outcome = await managed.reconcile_part(adapter, recorder)
    assert adapter.calls == actions, why
    assert outcome.condition.status == "True" and outcome.condition.reason == reasons.REASON_UP_TO_DATE, why
    assert outcome.wrote is wrote and outcome.retry is False, why
    assert [e[1] for e in recorder.events] == ([event] if event else []), why
    assert all(part_verb(type_, reason) for type_, reason, _ in recorder.events), "posted grouped by verb"


@pytest.mark.parametrize(
    ("failing", "error", "reason", "event", "retry", "why"),
    [
        ("observe", BackendUnavailable("connection refused"), reasons.REASON_BACKEND_UNAVAILABLE, "CannotObserveThing",
         True, "unreachable backend: condition says so, retry"),
        ("create", BackendRejected("name taken"), reasons.REASON_BACKEND_ERROR, "CannotCreateThing", False,
         "rejected: no retry storm"),
    ],
)  # fmt: skip
async def test_reconcile_failures(
    failing: str, error: Exception, reason: str, event: str, retry: bool, why: str
) -> None:
    adapter = FakeAdapter(fail=lambda action: error if action == failing else None)
    recorder = ListRecorder()
    outcome = await managed.reconcile_part(adapter, recorder)
    assert outcome.condition.status == "False" and outcome.condition.reason == reason, why
    assert outcome.retry is retry, why
    assert recorder.events[0][:2] == ("Warning", event), why
    assert str(error) in outcome.condition.message, why


async def test_reconcile_twice_is_idempotent() -> None:
    adapter = FakeAdapter()
    await managed.reconcile_part(adapter, ListRecorder())
    adapter.calls.clear()
    second = await managed.reconcile_part(adapter, ListRecorder())
    assert adapter.calls == ["observe"] and not second.wrote


@pytest.mark.parametrize(
    ("policy", "left", "message", "why"),
    [
        ("Retain", {"exists": True}, "retained", "Retain keeps the thing"),
        ("Delete", {}, "deleted", "Delete removes it and confirms with an observe"),
    ],
)
async def test_finalize(policy: str, left: dict, message: str, why: str) -> None:
    adapter = FakeAdapter(state={"exists": True})
    recorder = ListRecorder()
    outcome = await managed.finalize_part(adapter, policy, recorder)  # type: ignore[arg-type]
    assert outcome.done and outcome.message == message, why
    assert [part_verb(type_, reason) for type_, reason, _ in recorder.events] == [message.capitalize()], why
    assert adapter.state == left, why


async def test_finalize_missing_thing_is_done_without_delete() -> None:
    adapter = FakeAdapter()
    outcome = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert outcome.done and adapter.calls == ["observe"]


@dataclasses.dataclass
class SlowAdapter(FakeAdapter):
    """A FakeAdapter whose create waits, logging when each part starts and finishes creating."""

    log: list[str] = dataclasses.field(default_factory=list)

    async def create(self) -> None:
        import asyncio

        self.log.append(f"start {self.noun}")
        await asyncio.sleep(0.05)
        await super().create()
        self.log.append(f"done {self.noun}")


async def test_reconcile_parts_runs_independent_parts_together_and_needed_parts_first() -> None:
    log: list[str] = []
    parts = [SlowAdapter(noun=noun, log=log) for noun in ("Space", "Store", "Inside", "Other")]
    outcomes = await managed.reconcile_parts(parts, ListRecorder(), {"Inside": ("Space",)})
    assert [o.condition.status for o in outcomes] == ["True"] * 4, "outcomes in the order of the parts"
    assert log.index("done Space") < log.index("start Inside"), "a part waits for the parts it needs"
    assert log.index("start Store") < log.index("done Space"), "independent parts overlap"
    assert log.index("start Other") < log.index("done Space"), "so does a later part that needs nothing"


async def test_a_part_after_all_others_starts_when_every_other_part_is_done_earlier_or_later() -> None:
    log: list[str] = []
    parts = [SlowAdapter(noun=noun, log=log) for noun in ("Space", "Last", "Inside", "Other")]
    needs = {"Inside": ("Space",), "Last": managed.AFTER_ALL_OTHERS}
    outcomes = await managed.reconcile_parts(parts, ListRecorder(), needs)
    assert [o.condition.status for o in outcomes] == ["True"] * 4
    started = log.index("start Last")
    assert all(log.index(f"done {noun}") < started for noun in ("Space", "Inside", "Other")), log


async def test_no_part_may_need_the_part_that_comes_after_all_others() -> None:
    parts = [FakeAdapter(noun="Last"), FakeAdapter(noun="Inside")]
    needs = {"Last": managed.AFTER_ALL_OTHERS, "Inside": ("Last",)}
    with pytest.raises(ValueError, match="after all others"):
        await managed.reconcile_parts(parts, ListRecorder(), needs)


def test_the_projects_slurm_account_comes_after_all_its_other_parts() -> None:
    """A new account waits for a batched load and gives its reconcile slot back: nothing else may still run."""
    from enclave_operator.reconcilers import research_project

    assert research_project.NEEDS["SlurmAccount"] is managed.AFTER_ALL_OTHERS
    for status in ({}, {"conditions": [{"type": reasons.SCHEDULER_READY, "status": "False"}]}):
        assert research_project.needs(status) is research_project.NEEDS, "until its account has been ready"


def test_an_edit_of_a_project_whose_slurm_account_was_ready_does_not_wait_for_its_other_parts() -> None:
    from enclave_operator.reconcilers import research_project

    ready = {"conditions": [{"type": reasons.SCHEDULER_READY, "status": "True"}]}
    assert "SlurmAccount" not in research_project.needs(ready)
    assert research_project.needs(ready)["Credential"] == research_project.NEEDS["Credential"], "the rest as before"


async def test_reconcile_parts_still_reconciles_a_part_whose_dependency_failed() -> None:
    failing = FakeAdapter(noun="Space", fail=lambda action: BackendUnavailable("down") if action == "observe" else None)
    inside = FakeAdapter(noun="Inside")
    outcomes = await managed.reconcile_parts([failing, inside], ListRecorder(), {"Inside": ("Space",)})
    assert outcomes[0].retry and outcomes[0].condition.status == "False", "the failed part reports itself"
    assert inside.calls == ["observe", "create", "observe"], "the dependent part still runs (and says why if it fails)"


@dataclasses.dataclass
class AnsweringAdapter(FakeAdapter):
    """Its writes answer with the state they left (like a server-side apply), so no second observe is needed."""

    async def create(self) -> Observation:  # type: ignore[override]
        await super().create()
        return Observation(True, True, "", "t", members={"alice": "Granted"})


async def test_a_write_that_answers_with_its_state_is_not_observed_again() -> None:
    adapter, recorder = AnsweringAdapter(), ListRecorder()
    outcome = await managed.reconcile_part(adapter, recorder)
    assert adapter.calls == ["observe", "create"], "the answer of the create stands for the second observe"
    assert outcome.condition.status == "True" and outcome.wrote
    assert outcome.observation is not None and outcome.observation.members == {"alice": "Granted"}
    assert [e[1] for e in recorder.events] == ["CreatedThing"]
