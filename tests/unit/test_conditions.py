from __future__ import annotations

import datetime

import pytest

from enclave_operator import conditions, reasons

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(hours=1)


def test_merge_stamps_generation_and_time_on_new_conditions() -> None:
    merged, changed = conditions.merge([], [conditions.true("StorageReady", "UpToDate", "ok")], 3, T0)
    assert changed
    assert merged == [
        {
            "type": "StorageReady",
            "status": "True",
            "reason": "UpToDate",
            "message": "ok",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]


@pytest.mark.parametrize(
    ("new", "generation", "changed", "keeps_time", "why"),
    [
        (conditions.true("A", "R", "m"), 1, False, True, "identical condition: no write"),
        (conditions.true("A", "R2", "m"), 1, True, True, "reason changed, status did not: time kept"),
        (conditions.true("A", "R", "m"), 2, True, True, "new generation observed: write, time kept"),
        (conditions.false("A", "R", "m"), 1, True, False, "status flipped: new transition time"),
    ],
)
def test_merge_changes(new: conditions.Cond, generation: int, changed: bool, keeps_time: bool, why: str) -> None:
    first, _ = conditions.merge([], [conditions.true("A", "R", "m")], 1, T0)
    merged, did_change = conditions.merge(first, [new], generation, T1)
    assert did_change is changed, why
    expected = "2026-01-01T00:00:00Z" if keeps_time else "2026-01-01T01:00:00Z"
    assert merged[0]["lastTransitionTime"] == expected, why


def test_merge_keeps_conditions_it_does_not_compute() -> None:
    first, _ = conditions.merge([], [conditions.true("Other", "R")], 1, T0)
    merged, _ = conditions.merge(first, [conditions.true("A", "R")], 1, T0)
    assert [c["type"] for c in merged] == ["Other", "A"]


def test_summary_ready_only_when_every_part_is_ready() -> None:
    ready = conditions.summarize([conditions.true("X", "UpToDate"), conditions.true("Y", "UpToDate")])
    assert {(c.type, c.status) for c in ready} == {("Ready", "True"), ("Reconciling", "False"), ("Stalled", "False")}
    waiting = conditions.summarize(
        [conditions.true("X", "UpToDate"), conditions.false("Y", "BackendUnavailable", "down")]
    )
    by_type = {c.type: c for c in waiting}
    assert by_type["Ready"].status == "False" and "Y: down" in by_type["Ready"].message
    assert by_type["Reconciling"].status == "True"
    assert by_type["Stalled"].status == "False"


def test_summary_stalled_is_not_reconciling() -> None:
    stalled = conditions.true(reasons.STALLED, reasons.REASON_INVALID_SPEC, "bad name")
    by_type = {c.type: c for c in conditions.summarize([], stalled=stalled)}
    assert by_type["Stalled"].status == "True"
    assert by_type["Reconciling"].status == "False"
    assert by_type["Ready"].reason == reasons.REASON_INVALID_SPEC
