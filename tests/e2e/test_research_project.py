"""ResearchProject end to end: kubectl apply against the operator process, real API server, real MinIO."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import yaml

from enclave_operator.backends import s3_minio
from localenv.runtime import free_port
from localenv.webhooks import webhook_settings
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess, Webhooks, webhook_down, write_config
from support.projects import condition, events_for, settled, wait_gone, wait_ready
from support.wait import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "research-project.yaml"


def test_example_project_becomes_ready_and_retain_keeps_the_data(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients
) -> None:
    crds.run("apply", "-f", str(EXAMPLE))
    obj = wait_ready(crds, "onco-flow")
    status = obj["status"]
    assert status["namespace"] == "onco-flow" and status["bucket"] == "onco-flow"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    for type_ in ("Ready", "NamespaceReady", "StorageReady"):
        cond = condition(obj, type_)
        assert cond and cond["status"] == "True" and cond["observedGeneration"] == obj["metadata"]["generation"]
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Reconciling")["status"] == "False"
    assert "enclave.io/finalizer" in obj["metadata"]["finalizers"]

    ns = crds.get_json("namespace", "onco-flow")
    assert ns and ns["metadata"]["labels"]["enclave.io/project"] == "onco-flow"
    assert s3_minio.parse_quota(s3.admin.bucket_quota_get("onco-flow")) == 500 * 2**30
    assert s3.s3.get_bucket_versioning("onco-flow").status == "Enabled"
    # The parts a reconcile created are one event, naming each (engine/events.py).
    events = events_for(crds, "onco-flow")
    assert {reason for _, reason, _ in events if reason.startswith("Created")} == {"Created"}, events
    created = "; ".join(message for _, reason, message in events if reason == "Created")
    assert "created namespace onco-flow" in created and "created bucket onco-flow" in created, created

    table = crds.run("get", "researchprojects").stdout
    assert re.search(r"onco-flow\s+alice\s+2\s+True", table), table
    described = crds.run("describe", "researchproject", "onco-flow").stdout
    assert "StorageReady" in described and "created bucket onco-flow" in described

    s3.s3.put_object("onco-flow", "results/table.csv", io.BytesIO(b"a,b\n1,2\n"), 8)
    crds.run("delete", "researchproject", "onco-flow", "--timeout=60s")
    wait_gone(crds, "namespace", "onco-flow")
    assert s3.s3.bucket_exists("onco-flow"), "Retain must keep the bucket"
    assert s3.s3.get_object("onco-flow", "results/table.csv").read() == b"a,b\n1,2\n", "Retain must keep objects"
    assert any(r == "Retained" and "kept bucket onco-flow" in m for _, r, m in events_for(crds, "onco-flow"))


def test_delete_policy_removes_namespace_and_bucket_and_the_finalizer_comes_at_admission(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, project_name: str
) -> None:
    created = json.loads(crds.run("create", "-f", "-", "-o", "json",
                                  input=yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj())).stdout)
    # The finalizer is on the object as it is stored at creation (the mutating webhook put it there), not
    # added by a patch of kopf's afterwards (issue 12: one write and one event less per new object).
    assert created["metadata"]["finalizers"] == ["enclave.io/finalizer"], created["metadata"]
    wait_ready(crds, project_name)
    # Nor does kopf patch the object to remember it handled the creation: it remembers in memory (diffbase.py).
    annotations = settled(crds, project_name)["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("kopf.")], annotations
    s3.s3.put_object(project_name, "x", io.BytesIO(b"1"), 1)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    wait_gone(crds, "namespace", project_name)
    assert not s3.s3.bucket_exists(project_name)


def test_spec_change_is_carried_through_and_observed(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, project_name: str
) -> None:
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
    wait_ready(crds, project_name)
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").storage("3Gi", versioning=False).obj()))
    wait_for(
        lambda: s3_minio.parse_quota(s3.admin.bucket_quota_get(project_name)) == 3 * 2**30,
        timeout=timeouts.READY,
        what="the new quota in MinIO",
    )
    obj = wait_for(
        lambda: (
            (o := crds.get_json("researchproject", project_name))
            and o["status"].get("observedGeneration") == 2
            and condition(o, "Ready")["status"] == "True"
            and o
        ),
        timeout=timeouts.READY,
        what="observedGeneration 2 and Ready",
    )
    assert condition(obj, "StorageReady")["observedGeneration"] == 2
    assert s3.s3.get_bucket_versioning(project_name).status == "Suspended"
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def _backend_writes(operator: OperatorProcess) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("enclave_backend_writes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_server_side_reapply_changes_nothing(crds: Cluster, operator: OperatorProcess, project_name: str) -> None:
    """GitOps tools re-apply the same manifests all the time; that must be free."""
    manifest = yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj())
    crds.run("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=manifest)
    wait_ready(crds, project_name)
    before = settled(crds, project_name)
    writes = _backend_writes(operator)
    crds.run("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=manifest)
    after = settled(crds, project_name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert _backend_writes(operator) == writes
    spec_owners = {m["manager"] for m in after["metadata"]["managedFields"] if "f:spec" in json.dumps(m["fieldsV1"])}
    assert spec_owners == {"argocd"}, "the operator must never own spec fields"
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_invalid_spec_reaching_the_operator_is_stalled_not_crashed(
    crds: Cluster, operator: OperatorProcess, webhooks: Webhooks
) -> None:
    """A name the naming template turns into an invalid bucket (3+ chars needed): refused at admission, and
    stalled with a reason when it got in without the webhook."""
    manifest = yaml.safe_dump(ProjectBuilder("ab").deletion("Delete").obj())
    refused = crds.run("apply", "-f", "-", input=manifest, check=False)
    assert refused.returncode != 0 and "metadata.name: bucket name 'ab'" in refused.stderr, refused.stderr
    with webhook_down(webhooks):
        crds.apply(manifest)
    obj = wait_for(
        lambda: (o := crds.get_json("researchproject", "ab")) and condition(o, "Stalled") and o,
        timeout=timeouts.READY,
        what="Stalled condition",
    )
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec" and "bucket name" in stalled["message"]
    assert condition(obj, "Ready")["status"] == "False"
    crds.run("delete", "researchproject", "ab", "--timeout=60s")


def test_metrics_count_reconciles_per_kind(crds: Cluster, operator: OperatorProcess, project_name: str) -> None:
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
    wait_ready(crds, project_name)
    text = operator.metrics()
    assert re.search(r'enclave_reconcile_total\{kind="ResearchProject",result="ok"\} [1-9]', text), text[:2000]
    assert 'enclave_reconcile_duration_seconds_count{kind="ResearchProject"}' in text
    assert re.search(r'enclave_backend_writes_total\{action="create",part="StorageReady"\} [1-9]', text)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_json_logs_are_one_object_per_line(crds: Cluster, operator: OperatorProcess, tmp_path: Path) -> None:
    # A second, younger process: it pauses in favour of the session's (peering) and serves webhooks on a port of its
    # own, behind no balancer.
    webhook, _ = webhook_settings(tmp_path, free_port())
    config = write_config(tmp_path / "config.yaml", operator.minio, webhook=webhook)
    second = OperatorProcess(operator.kubeconfig, config, operator.minio, tmp_path / "json.log", pod_id="json-logs")
    second.env = dict(operator.env)
    second.extra_args = ["--log-format", "json"]
    second.start()
    second.stop()
    lines = [line for line in second.log_text().splitlines() if line.startswith("{")]
    assert lines, second.log_text()[:2000]
    for line in lines:
        record = json.loads(line)
        assert "message" in record and "severity" in record
