"""How a reconcile's events are posted: the parts' grouped by verb, everything else as it came."""

from __future__ import annotations

from enclave_operator import reasons
from enclave_operator.engine.events import MAX_MESSAGE, grouped, part_verb


def test_a_new_projects_parts_become_one_created_event_in_their_order() -> None:
    events = [
        ("Normal", "CreatedNamespace", "created namespace onco"),
        ("Warning", "CannotCreateCredential", "cannot create credential: MinIO said no"),
        ("Normal", "CreatedBucket", "created bucket onco"),
        ("Normal", "CordonedProject", "validUntil passed"),
        ("Normal", "CreatedRoleBinding", "created rolebinding onco"),
    ]
    assert grouped(events) == [  # type: ignore[arg-type]
        ("Normal", "Created", "created namespace onco; created bucket onco; created rolebinding onco"),
        ("Warning", "CannotCreateCredential", "cannot create credential: MinIO said no"),
        ("Normal", "CordonedProject", "validUntil passed"),
    ]


def test_each_verb_is_its_own_event_and_failures_stay_per_part() -> None:
    events = [
        ("Normal", "UpdatedRoleBinding", "repaired rolebinding: subjects differ"),
        ("Normal", "CreatedGroup", "created group g"),
        ("Warning", "CannotObserveBucket", "cannot observe bucket: timeout"),
        ("Warning", "CannotObserveGroup", "cannot observe group: timeout"),
        ("Normal", "UpdatedIdentityGroup", "repaired identitygroup: members differ"),
    ]
    assert grouped(events) == [  # type: ignore[arg-type]
        ("Normal", "Updated", "repaired rolebinding: subjects differ; repaired identitygroup: members differ"),
        ("Normal", "Created", "created group g"),
        ("Warning", "CannotObserveBucket", "cannot observe bucket: timeout"),
        ("Warning", "CannotObserveGroup", "cannot observe group: timeout"),
    ]


def test_only_normal_verb_and_noun_reasons_are_part_events() -> None:
    assert [part_verb("Normal", f"{verb}Bucket") for verb in reasons.EVENT_PART_VERBS] == list(reasons.EVENT_PART_VERBS)
    assert part_verb("Warning", "CreatedBucket") is None
    assert part_verb("Normal", "Created") is None  # already grouped: posted as it is
    assert part_verb("Normal", "Createdness") is None
    assert part_verb("Normal", "ApprovedProject") is None
    assert grouped([]) == []


def test_the_joined_message_is_bounded() -> None:
    events = [("Normal", f"CreatedPart{i}", "created part " + "x" * 200) for i in range(8)]
    (event,) = grouped(events)  # type: ignore[arg-type]
    assert event[1] == "Created" and len(event[2]) == MAX_MESSAGE and event[2].endswith("…")
