from __future__ import annotations

import datetime

import pytest

from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.reconcilers import research_project
from enclave_operator.settings import parse
from support.builders import ProjectBuilder

SETTINGS = parse({"s3": {"endpoint": "minio:9000"}})
TODAY = datetime.date(2026, 11, 23)


def test_plan_derives_names_labels_and_quota() -> None:
    spec = ResearchProjectSpec.model_validate(ProjectBuilder("onco-flow").storage("2Gi", versioning=False).spec())
    plan = research_project.plan("onco-flow", spec, SETTINGS, TODAY)
    assert plan.namespace.name == "onco-flow"
    assert plan.namespace.labels["enclave.io/project"] == "onco-flow"
    assert plan.namespace.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert (plan.bucket.name, plan.bucket.quota_bytes, plan.bucket.versioning) == ("onco-flow", 2 * 2**30, False)


@pytest.mark.parametrize(
    ("naming", "project", "fragment", "why"),
    [
        ({"bucket": "{project}"}, "ab", "bucket name", "S3 bucket names need at least 3 characters"),
        ({"namespace": "{project}-" + "x" * 30}, "p" * 40, "namespace name", "namespace over 63 characters"),
    ],
)
def test_plan_rejects_names_the_backends_would_refuse(naming: dict, project: str, fragment: str, why: str) -> None:
    settings = parse({"s3": {"endpoint": "minio:9000"}, "naming": naming})
    spec = ResearchProjectSpec.model_validate(ProjectBuilder(project).spec())
    with pytest.raises(research_project.InvalidPlan, match=fragment):
        research_project.plan(project, spec, settings, TODAY)


def test_member_states_follow_dates() -> None:
    spec = ResearchProjectSpec.model_validate(
        ProjectBuilder("p1")
        .member("bob", expires="2026-06-30")
        .member("carol", "viewer")
        .valid_until("2027-01-01")
        .spec()
    )
    rows = research_project.member_statuses(spec, datetime.date(2026, 7, 1), [])
    assert [(r["user"], r["state"]) for r in rows] == [("alice", "Active"), ("bob", "Expired"), ("carol", "Active")]
    rows = research_project.member_statuses(spec, datetime.date(2027, 1, 2), [])
    assert rows[0]["state"] == "Cordoned"
    plan = research_project.plan("proj1", spec, SETTINGS, datetime.date(2026, 7, 1))
    assert plan.active == (("alice", "owner"), ("carol", "viewer")), "expired members have no access anywhere"
    assert not plan.cordoned
    assert research_project.plan("proj1", spec, SETTINGS, datetime.date(2027, 1, 1)).cordoned is False, "last valid day"
    assert research_project.plan("proj1", spec, SETTINGS, datetime.date(2027, 1, 2)).cordoned is True


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda s: s.update(owner="bob"), "owner not a member"),
        (lambda s: s["members"].append({"user": "x", "role": "boss"}), "unknown role"),
        (lambda s: s["storage"].update(quota="-1Gi"), "negative quota"),
        (lambda s: s.update(surprise=True), "unknown field"),
    ],
)
def test_typed_api_rejects_invalid_specs(mutate, why: str) -> None:  # type: ignore[no-untyped-def]
    """The operator's own model rejects what the CRD rejects, in case an older CRD let it through."""
    spec = ProjectBuilder("p1").spec()
    mutate(spec)
    with pytest.raises(ValueError):
        ResearchProjectSpec.model_validate(spec)
