"""Who may create, change, approve and delete projects; and when a request needs approval."""

from __future__ import annotations

import datetime

import pytest

from enclave_operator import admission
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.reconcilers import approval
from enclave_operator.settings import SelfServiceSettings, parse
from support.builders import ProjectBuilder

TODAY = datetime.date(2026, 11, 23)
TIER = SelfServiceSettings()
SETTINGS = parse({"s3": {"endpoint": "127.0.0.1:9000"}})
ALICE = admission.Requester("alice", ("researchers",))
BOB = admission.Requester("bob", ("researchers",))
CAROL = admission.Requester("carol", ("researchers",))
ADMIN = admission.Requester("root-admin", ("system:masters",))


def _obj(owner: str = "alice", annotations: dict | None = None, **spec: object) -> dict:
    obj = ProjectBuilder("proj-1", owner=owner).member("bob", "maintainer").member("carol", "viewer").obj()
    obj["spec"].update(spec)
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def _review(op: str, who: admission.Requester, old: dict | None, new: dict | None) -> None:
    admission.review(operation=op, requester=who, old=old, new=new, settings=SETTINGS,  # type: ignore[arg-type]
                     today=TODAY)  # fmt: skip


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


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("kube-public", "kube-*"), ("kube-system", "kube-*"), ("default", "default"), ("enclave-system", "enclave-system"),
     ("enclave-ingest", "enclave-ingest")],
)  # fmt: skip
def test_finding_8_1_reserved_namespace_names_are_refused_naming_metadata_name(name: str, pattern: str) -> None:
    obj = _obj()
    obj["metadata"]["name"] = name
    with pytest.raises(admission.Denied) as denied:
        _review("CREATE", ADMIN, None, obj)
    assert str(denied.value).startswith("metadata.name: ") and f"reserved ({pattern})" in str(denied.value)


def test_finding_8_1_reserved_names_follow_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "platform-ops")
    obj = _obj()
    obj["metadata"]["name"] = "platform-ops"
    with pytest.raises(admission.Denied, match="reserved"):
        _review("CREATE", ADMIN, None, obj)
    settings = parse({"s3": {"endpoint": "127.0.0.1:9000"}, "naming": {"reservedNamespaces": ["lab-*"]}})
    obj["metadata"]["name"] = "lab-x"
    with pytest.raises(admission.Denied, match=r"reserved \(lab-\*\)"):
        admission.review(operation="CREATE", requester=ADMIN, old=None, new=obj, settings=settings, today=TODAY)
    obj["metadata"]["name"] = "kube-x"  # replaced, not extended: the platform owns the list
    admission.review(operation="CREATE", requester=ADMIN, old=None, new=obj, settings=settings, today=TODAY)


def _slurm(parent: str) -> dict:
    obj = _obj()
    obj["spec"]["compute"] = {"slurm": {"parent": parent, "limits": {"cpu": 4, "mem": "8Gi", "gpu": 0}}}
    return obj


def test_finding_8_6_only_parents_the_platform_allows_are_accepted() -> None:
    settings = parse({"s3": {"endpoint": "127.0.0.1:9000"}, "slurm": {"allowedParents": ["root", "cardiology"]}})
    for parent in ("other-project", "p1-sibling", "_x"):
        for op, old in (("CREATE", None), ("UPDATE", _slurm("root"))):
            with pytest.raises(admission.Denied) as denied:
                admission.review(operation=op, requester=ADMIN, old=old, new=_slurm(parent),  # type: ignore[arg-type]
                                 settings=settings, today=TODAY)  # fmt: skip
            assert str(denied.value).startswith("spec.compute.slurm.parent: ") and "allowed: root, cardiology" in str(
                denied.value
            )
    admission.review(operation="CREATE", requester=ADMIN, old=None, new=_slurm("cardiology"), settings=settings,
                     today=TODAY)  # fmt: skip


def test_updates_that_leave_the_spec_alone_are_not_planned() -> None:
    """An object admitted before a rule existed (here: a reserved name) can still get its finalizer removed."""
    old = _obj()
    old["metadata"]["name"] = "kube-public"
    new = {**old, "metadata": {**old["metadata"], "finalizers": []}}
    _review("UPDATE", ADMIN, old, new)
