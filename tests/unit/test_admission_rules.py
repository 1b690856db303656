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
NOW = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=datetime.UTC)
TIER = SelfServiceSettings()
SETTINGS = parse({"s3": {"endpoint": "127.0.0.1:9000"}})
SIGNER = approval.Signer(b"k" * 32)
ALICE = admission.Requester("alice", ("researchers",))
BOB = admission.Requester("bob", ("researchers",))
CAROL = admission.Requester("carol", ("researchers",))
ADMIN = admission.Requester("root-admin", ("system:masters",))
OPERATOR = admission.Requester("system:serviceaccount:enclave-system:enclave-operator", ("system:masters",),
                               operator=True)  # fmt: skip
REF = approval.ObjectRef("ResearchProject", "", "proj-1")


def _obj(owner: str = "alice", annotations: dict | None = None, finalizers: bool = False, **spec: object) -> dict:
    obj = ProjectBuilder("proj-1", owner=owner).member("bob", "maintainer").member("carol", "viewer").obj()
    obj["spec"].update(spec)
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if finalizers:
        obj["metadata"]["finalizers"] = ["enclave.io/finalizer"]
    return obj


def _review(op: str, who: admission.Requester, old: dict | None, new: dict | None) -> None:
    admission.review(operation=op, requester=who, old=old, new=new, settings=SETTINGS,  # type: ignore[arg-type]
                     today=TODAY, signer=SIGNER)  # fmt: skip


def _signed(by: str = "root-admin", **spec: object) -> dict:
    grant = approval.governed(ResearchProjectSpec.model_validate(_obj(**spec)["spec"]))
    return {approval.APPROVAL_ANNOTATION: SIGNER.stamp(REF, by, grant, NOW)}


def _with_finalizer(obj: dict) -> dict:
    obj["metadata"]["finalizers"] = ["enclave.io/finalizer"]
    obj["metadata"].setdefault("annotations", {})["enclave.io/last-handled-configuration"] = "{}"
    return obj


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
        ("UPDATE", ALICE, _obj(), _obj(annotations=_signed("alice")), "metadata.annotations[enclave.io/approval]",
         "an owner writes an approval record (even a well-signed one)"),
        ("UPDATE", ALICE, _obj(), _obj(annotations={approval.APPROVE_ANNOTATION: "yes"}),
         "metadata.annotations[enclave.io/approve]", "an owner approves her own request"),
        ("UPDATE", ADMIN, _obj(), _obj(annotations={approval.APPROVAL_ANNOTATION: '{"by":"root-admin"}'}),
         "not a record this operator signed", "a hand-written approval record"),
        ("UPDATE", ADMIN, _obj(), _obj(annotations=_signed("someone-else")), "not a record this operator signed",
         "a record signed for someone else"),
        ("UPDATE", BOB, _obj(finalizers=True), _obj(), "metadata.finalizers", "a maintainer removes the finalizer"),
        ("UPDATE", OPERATOR, _obj(), _obj(annotations=_signed("root-admin")), "metadata.annotations",
         "the operator's own requests never approve"),
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
        ("UPDATE", ADMIN, _obj(), _obj(annotations=_signed()), "admin's record as the mutating webhook stamped it"),
        ("UPDATE", BOB, _obj(annotations=_signed()), _obj(annotations=_signed(), displayName="x"),
         "edits that keep the approval untouched"),
        ("UPDATE", OPERATOR, _obj(finalizers=True), _obj(), "the operator removes its finalizer"),
        ("UPDATE", CAROL, _obj(), {**_obj(), "metadata": {"name": "proj-1", "labels": {"x": "y"}}},
         "updates that leave the spec alone are for RBAC, not the spec rules"),
        ("UPDATE", OPERATOR, _obj(), _with_finalizer(_obj()), "the operator (a service account, no member) adds its "
         "finalizer and progress annotations"),
    ],
)  # fmt: skip
def test_allowed(op: str, who: admission.Requester, old: dict | None, new: dict | None, why: str) -> None:
    _review(op, who, old, new)


def _spec(gpu: int = 0, storage: str = "1Gi", **spec: object) -> ResearchProjectSpec:
    raw = ProjectBuilder("proj-1").storage(storage).spec()
    raw["compute"] = {"kubernetes": {"gpu": gpu}}
    raw.update(spec)
    return ResearchProjectSpec.model_validate(raw)


def _grant(spec: ResearchProjectSpec, by: str = "adm") -> approval.Approval:
    found = SIGNER.verify(REF, SIGNER.stamp(REF, by, approval.governed(spec), NOW))
    assert found is not None
    return found


SLURM = {"compute": {"slurm": {"parent": "root", "qos": ["normal"], "limits": {"cpu": 64, "mem": "512Gi", "gpu": 1}}}}


@pytest.mark.parametrize(
    ("spec", "grant", "approved", "waiting", "why"),
    [
        (_spec(), None, True, (), "small request"),
        (_spec(gpu=4), None, False, ("gpu 4 > 1",), "GPUs above the tier"),
        (_spec(storage="5Ti"), None, False, ("storage 5Ti > 1Ti",), "storage above the tier"),
        (_spec(gpu=4), _spec(gpu=4), True, (), "approval covers the request"),
        (_spec(gpu=8), _spec(gpu=4), False, ("gpu 8 > 4",), "request raised beyond the approval"),
        (_spec(network={"egress": [{"cidr": "0.0.0.0/0"}]}), None, False, ("egress to 0.0.0.0/0",),
         "finding 14.3: the internet is not self-service"),
        (_spec(network={"egress": [{"cidr": "10.9.0.0/16", "ports": [443]}]}),
         _spec(network={"egress": [{"cidr": "10.9.0.0/16", "ports": [443, 8080]}]}), True, (), "approved egress"),
        (_spec(**{"compute": {"slurm": {"parent": "cardiology"}}}), None, False,
         ("slurm parent cardiology", "slurm cpu unlimited > 256", "slurm mem unlimited > 1Ti",
          "slurm gpu unlimited > 1"), "finding 14.3: Slurm parent and unlimited limits need approval"),
        (_spec(**SLURM), None, True, (), "Slurm within the tier"),
        (_spec(**{"compute": {"slurm": {"qos": ["normal", "high"], "limits": {"cpu": 1, "mem": "1Gi", "gpu": 0}}}}),
         None, False, ("slurm qos high",), "finding 14.3: another QOS needs approval"),
    ],
)  # fmt: skip
def test_approval_decision(spec: ResearchProjectSpec, grant: ResearchProjectSpec | None, approved: bool,
                           waiting: tuple[str, ...], why: str) -> None:  # fmt: skip
    decision = approval.decide(spec, _grant(grant) if grant else None, TIER, "proj-1")
    assert (decision.approved, decision.waiting) == (approved, waiting), why
    if not approved:
        assert "kubectl annotate researchproject proj-1 enclave.io/approve=yes" in decision.message, "says how"


def test_finding_14_4_the_effective_spec_keeps_what_is_allowed_and_every_membership_change() -> None:
    spec = _spec(gpu=8, storage="5Ti", members=[{"user": "alice", "role": "owner"}],
                 network={"egress": [{"cidr": "10.1.0.0/16"}, {"cidr": "0.0.0.0/0"}]})  # fmt: skip
    decision = approval.decide(spec, _grant(_spec(gpu=4, network={"egress": [{"cidr": "10.1.0.0/16"}]})), TIER,
                               "proj-1")  # fmt: skip
    effective = decision.effective
    assert not decision.approved
    assert effective.compute.kubernetes.gpu == 4, "the approved amount, not the request"
    assert effective.storage.quota == "1Ti", "the tier"
    assert [r.cidr for r in effective.network.egress] == ["10.1.0.0/16"]
    assert [m.user for m in effective.members] == ["alice"], "members are never held back"


def test_finding_14_3_extending_valid_until_needs_approval_shortening_does_not() -> None:
    baseline = datetime.date(2027, 6, 30)
    later = approval.decide(_spec(validUntil="2028-06-30"), None, TIER, "proj-1", baseline_valid_until=baseline)
    assert not later.approved and later.effective.valid_until == baseline, "the cordon date stays in force"
    assert later.waiting == ("validUntil 2028-06-30 > 2027-06-30",)
    earlier = approval.decide(_spec(validUntil="2027-01-31"), None, TIER, "proj-1", baseline_valid_until=baseline)
    assert earlier.approved and earlier.effective.valid_until == datetime.date(2027, 1, 31)
    granted = _grant(_spec(validUntil="2028-06-30"))
    assert approval.decide(_spec(validUntil="2028-06-30"), granted, TIER, "proj-1",
                           baseline_valid_until=baseline).approved  # fmt: skip
    new = approval.decide(_spec(validUntil="2030-01-01"), None, TIER, "proj-1")
    assert new.approved, "a new project sets its own end date"


def test_finding_14_2_an_approval_the_operator_did_not_sign_is_ignored() -> None:
    spec = _spec(gpu=4)
    forged = approval.Signer(b"x" * 32).stamp(REF, "adm", approval.governed(spec), NOW)
    found, unverified = approval.read(SIGNER, REF, {approval.APPROVAL_ANNOTATION: forged})
    assert found is None and unverified
    other = approval.ObjectRef("ResearchProject", "", "another-project")
    copied = SIGNER.stamp(other, "adm", approval.governed(spec), NOW)
    assert approval.read(SIGNER, REF, {approval.APPROVAL_ANNOTATION: copied}) == (None, True), "bound to the object"
    decision = approval.decide(spec, found, TIER, "proj-1", unverified=unverified)
    assert (decision.approved, decision.reason) == (False, "UnverifiedApproval")
    assert "not signed by this operator" in decision.message
    assert "<key hidden>" in repr(SIGNER) and "kkkk" not in repr(SIGNER)


def _stamp(op: str, who: admission.Requester, old: dict | None, new: dict) -> admission.Annotations:
    return admission.stamp(kind="ResearchProject", operation=op, requester=who,  # type: ignore[arg-type]
                           old=old, new=new, settings=SETTINGS, signer=SIGNER, now=NOW)  # fmt: skip


def test_finding_8_9_an_admins_create_or_update_is_the_approval_recorded_with_who() -> None:
    created = _stamp("CREATE", ADMIN, None, _obj(compute={"kubernetes": {"gpu": 4}}))
    found = SIGNER.verify(REF, created[approval.APPROVAL_ANNOTATION])
    assert found is not None and found.by == "root-admin" and found.grant["gpu"] == 4
    spec = ResearchProjectSpec.model_validate(_obj(compute={"kubernetes": {"gpu": 4}})["spec"])
    assert approval.decide(spec, found, TIER, "proj-1").approved
    # Re-applying the same manifest (GitOps) keeps the record byte for byte: nothing changes.
    old = _obj(annotations={approval.APPROVAL_ANNOTATION: created[approval.APPROVAL_ANNOTATION]},
               compute={"kubernetes": {"gpu": 4}})  # fmt: skip
    again = _stamp("UPDATE", ADMIN, old, _obj(compute={"kubernetes": {"gpu": 4}}))  # SSA dropped the annotation
    assert again[approval.APPROVAL_ANNOTATION] == created[approval.APPROVAL_ANNOTATION]
    raised = _stamp("UPDATE", ADMIN, old, _obj(compute={"kubernetes": {"gpu": 8}}))
    assert SIGNER.verify(REF, raised[approval.APPROVAL_ANNOTATION]).grant["gpu"] == 8, "an admin's raise is approved"


def test_finding_8_9_a_researchers_request_still_waits() -> None:
    forged = _obj(compute={"kubernetes": {"gpu": 4}}, annotations={approval.APPROVAL_ANNOTATION: "forged"})
    assert _stamp("CREATE", ALICE, None, forged) == {}, "no record of her own; a forged one is left to be refused"
    with pytest.raises(admission.Denied, match="only platform admins may approve"):
        _review("CREATE", ALICE, None, forged)
    old = _obj(annotations=_signed(), compute={"kubernetes": {"gpu": 0}})
    kept = _stamp("UPDATE", ALICE, old, _obj(compute={"kubernetes": {"gpu": 4}}))  # kubectl replace without it
    assert kept == {approval.APPROVAL_ANNOTATION: old["metadata"]["annotations"][approval.APPROVAL_ANNOTATION]}
    assert _stamp("UPDATE", OPERATOR, old, old) == {}, "the operator's own requests never approve"


def test_an_explicit_approve_trigger_is_replaced_by_the_record() -> None:
    old = _obj(compute={"kubernetes": {"gpu": 4}})
    new = _obj(compute={"kubernetes": {"gpu": 4}}, annotations={approval.APPROVE_ANNOTATION: "yes"})
    changes = _stamp("UPDATE", ADMIN, old, new)
    assert changes[approval.APPROVE_ANNOTATION] is None
    assert SIGNER.verify(REF, changes[approval.APPROVAL_ANNOTATION]).by == "root-admin"


def test_finding_14_2_only_stewards_approve_ingests_and_only_as_signed() -> None:
    settings_ingest = SETTINGS.ingest
    ref = approval.ObjectRef("DataIngest", "onco", "ct-1")
    body = {"metadata": {"name": "ct-1", "namespace": "onco"}, "spec": {}}
    steward = admission.Requester("steve", ("enclave:data-stewards",))
    maintainer = admission.Requester("bob", ("researchers",))
    stamped = admission.stamp(kind="DataIngest", operation="CREATE", requester=steward, old=None, new=body,
                              settings=SETTINGS, signer=SIGNER, now=NOW)  # fmt: skip
    assert SIGNER.verify(ref, stamped[approval.APPROVAL_ANNOTATION]).by == "steve"
    mine = admission.stamp(kind="DataIngest", operation="UPDATE", requester=maintainer, old=body,
                           new={**body, "metadata": {**body["metadata"], "annotations": {
                               approval.APPROVAL_ANNOTATION: stamped[approval.APPROVAL_ANNOTATION]}}},
                           settings=SETTINGS, signer=SIGNER, now=NOW)  # fmt: skip
    assert mine == {}, "a maintainer cannot approve their own ingest: the record is left to be refused"
    with pytest.raises(admission.Denied, match="only data stewards"):
        admission.review_ingest(requester=maintainer, old=body, new={**body, "metadata": {
            **body["metadata"], "annotations": {approval.APPROVAL_ANNOTATION: stamped[approval.APPROVAL_ANNOTATION]}}},
            ingest=settings_ingest, signer=SIGNER)  # fmt: skip
    with pytest.raises(admission.Denied, match="only data stewards"):
        admission.review_ingest(requester=maintainer, old=body, new={**body, "metadata": {
            **body["metadata"], "annotations": {approval.APPROVE_ANNOTATION: "yes"}}}, ingest=settings_ingest,
            signer=SIGNER)  # fmt: skip


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
