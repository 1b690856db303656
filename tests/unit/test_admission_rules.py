"""Who may create, change, approve and delete projects; and when a request needs approval."""

from __future__ import annotations

import datetime

import pytest

from enclave_operator import admission
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.reconcilers import approval
from enclave_operator.settings import KubernetesSettings, SelfServiceSettings
from support.builders import ProjectBuilder

TODAY = datetime.date(2026, 11, 23)
TIER = SelfServiceSettings()
ALICE = admission.Requester("alice", ("researchers",))
BOB = admission.Requester("bob", ("researchers",))
CAROL = admission.Requester("carol", ("researchers",))
ADMIN = admission.Requester("root-admin", ("system:masters",))


def _obj(owner: str = "alice", annotations: dict | None = None, **spec: object) -> dict:
    obj = ProjectBuilder("p1", owner=owner).member("bob", "maintainer").member("carol", "viewer").obj()
    obj["spec"].update(spec)
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def _review(op: str, who: admission.Requester, old: dict | None, new: dict | None) -> None:
    admission.review(operation=op, requester=who, old=old, new=new, self_service=TIER,  # type: ignore[arg-type]
                     kubernetes=KubernetesSettings(), today=TODAY)  # fmt: skip


@pytest.mark.parametrize(
    ("op", "who", "old", "new", "field", "why"),
    [
        ("CREATE", BOB, None, _obj(), "spec.owner", "non-admin creates a project owned by someone else"),
        ("CREATE", ALICE, None, _obj(validUntil="2020-01-01"), "spec.validUntil", "validUntil in the past"),
        ("CREATE", ADMIN, None, _obj(validUntil="2020-01-01"), "spec.validUntil", "even admins"),
        ("UPDATE", CAROL, _obj(), _obj(displayName="x"), "spec.members", "a viewer edits"),
        ("UPDATE", admission.Requester("eve", ()), _obj(), _obj(displayName="x"), "spec.members", "a stranger edits"),
        ("UPDATE", BOB, _obj(), _obj(owner="bob"), "spec.owner", "a maintainer takes ownership"),
        ("DELETE", BOB, _obj(), None, "metadata.name", "a maintainer deletes"),
        ("UPDATE", ALICE, _obj(), _obj(annotations={approval.APPROVED_ANNOTATION: "gpu=8",
                                                    approval.APPROVED_BY_ANNOTATION: "alice"}),
         "metadata.annotations", "an owner approves her own request"),
        ("UPDATE", ADMIN, _obj(), _obj(annotations={approval.APPROVED_ANNOTATION: "gpu=8",
                                                    approval.APPROVED_BY_ANNOTATION: "someone"}),
         approval.APPROVED_BY_ANNOTATION, "an admin approves under another name"),
        ("UPDATE", ADMIN, _obj(), _obj(annotations={approval.APPROVED_ANNOTATION: "gpus=8",
                                                    approval.APPROVED_BY_ANNOTATION: "root-admin"}),
         approval.APPROVED_ANNOTATION, "malformed approval"),
    ],
)  # fmt: skip
def test_denied(op: str, who: admission.Requester, old: dict | None, new: dict | None, field: str, why: str) -> None:
    with pytest.raises(admission.Denied) as denied:
        _review(op, who, old, new)
    assert field in str(denied.value), why


@pytest.mark.parametrize(
    ("op", "who", "old", "new", "why"),
    [
        ("CREATE", ALICE, None, _obj(), "owner creates her own project"),
        ("CREATE", ADMIN, None, _obj(owner="alice"), "admin creates for someone else"),
        ("CREATE", ALICE, None, _obj(validUntil=TODAY.isoformat()), "validUntil today is still valid"),
        ("UPDATE", BOB, _obj(), _obj(displayName="renamed"), "maintainer edits"),
        ("UPDATE", ALICE, _obj(), _obj(validUntil="2020-01-01"), "owner ends the project early: cordon now"),
        ("DELETE", ALICE, _obj(), None, "owner deletes"),
        ("UPDATE", ADMIN, _obj(), _obj(annotations={approval.APPROVED_ANNOTATION: "gpu=8",
                                                    approval.APPROVED_BY_ANNOTATION: "root-admin"}),
         "admin approves under her own name"),
        ("UPDATE", BOB, _obj(annotations={approval.APPROVED_ANNOTATION: "gpu=8",
                                          approval.APPROVED_BY_ANNOTATION: "root-admin"}),
         _obj(annotations={approval.APPROVED_ANNOTATION: "gpu=8", approval.APPROVED_BY_ANNOTATION: "root-admin"},
              displayName="x"), "edits that keep the approval untouched"),
    ],
)  # fmt: skip
def test_allowed(op: str, who: admission.Requester, old: dict | None, new: dict | None, why: str) -> None:
    _review(op, who, old, new)


def _spec(gpu: int = 0, storage: str = "1Gi") -> ResearchProjectSpec:
    spec = ProjectBuilder("p1").storage(storage).spec()
    spec["compute"] = {"kubernetes": {"gpu": gpu}}
    return ResearchProjectSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "annotations", "approved", "reason", "why"),
    [
        (_spec(), {}, True, "WithinSelfServiceTier", "small request"),
        (_spec(gpu=4), {}, False, "AwaitingApproval", "GPUs above the tier"),
        (_spec(storage="5Ti"), {}, False, "AwaitingApproval", "storage above the tier"),
        (_spec(gpu=4), {"enclave.io/approved": "gpu=4", "enclave.io/approved-by": "adm"}, True, "ApprovedByAdmin",
         "approval covers the request"),
        (_spec(gpu=8), {"enclave.io/approved": "gpu=4", "enclave.io/approved-by": "adm"}, False, "AwaitingApproval",
         "request raised beyond the approval"),
        (_spec(gpu=4), {"enclave.io/approved": "gpu=4"}, False, "AwaitingApproval", "approval without approver"),
    ],
)  # fmt: skip
def test_approval_decision(spec: ResearchProjectSpec, annotations: dict, approved: bool, reason: str, why: str) -> None:
    decision = approval.decide(spec, annotations, TIER, "p1")
    assert (decision.approved, decision.reason) == (approved, reason), why
    if not approved:
        assert "kubectl annotate researchproject p1 enclave.io/approved=" in decision.message, "tells how to approve"
