"""The Helm chart installed into a real API server, and the operator run exactly as its Deployment says.

A control plane of its own (its webhook and its operator must not meet the session's), backed by the
session's MinIO, FreeIPA and Orthanc. `helm install` creates everything; podrunner (the stand-in kubelet:
hack/localenv/podrunner.py) runs the Deployment's pod — its command and arguments, the rendered ConfigMap
at /etc/enclave, the webhook certificate at /tls, the service account token of a TokenRequest bound to
the pod at /var/run/secrets/kubernetes.io/serviceaccount, as user 65532 on a read-only root — and the
API server reaches the webhook through the chart's Service. No admin kubeconfig is anywhere near the
operator: what it does, it does with the chart's RBAC.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave_operator import reasons
from localenv import environment
from localenv import helm as chart
from localenv.plane import start_plane
from localenv.podrunner import container_pid, podrunner_service
from localenv.podsandbox import host_path
from localenv.runtime import REPO_ROOT, RunDir
from support import timeouts
from support.builders import NodeBuilder, ProjectBuilder
from support.cluster import Cluster, kubectl_binary
from support.helm import Helm, go_tool
from support.projects import condition, wait_gone, wait_ready
from support.wait import wait_for

RELEASE, NAMESPACE, INGEST = chart.RELEASE, chart.NAMESPACE, chart.INGEST_NAMESPACE
SA = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
STEWARDS = "enclave:data-stewards"
WEBHOOKS = "webhooks.enclave.io"
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
PERMISSIONS = REPO_ROOT / "docs" / "reference" / "operator-permissions.txt"
"""The service account's effective permissions, pinned: a widening of the chart's RBAC is a visible diff.
ENCLAVE_UPDATE_GOLDEN=1 rewrites it (then review the diff)."""


@pytest.fixture(scope="module")
def chart_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    run = RunDir(tmp_path_factory.mktemp("chart-plane"))
    try:
        yield run
    finally:
        run.stop_all()


@pytest.fixture(scope="module")
def plane(chart_run: RunDir) -> Cluster:
    """A control plane with the controllers (Deployments, ReplicaSets, EndpointSlices, Jobs) and a node."""
    environment.build(["plane"])
    facts = start_plane(chart_run, controller_manager=True)
    cluster = Cluster(Path(facts["kubeconfig"]), kubectl_binary())
    chart_run.start(podrunner_service(chart_run, cluster.kubeconfig, [NAMESPACE, INGEST], REPO_ROOT / ".venv" / "bin"))
    return cluster


@pytest.fixture(scope="module")
def helm(plane: Cluster) -> Helm:
    return Helm(go_tool("helm"), plane.kubeconfig)


@pytest.fixture(scope="module")
def values(minio: dict[str, Any], freeipa: dict[str, Any], orthanc: dict[str, Any]) -> dict[str, Any]:
    """A platform team's values, pointed at the session's backends."""
    return chart.local_values(minio, freeipa, orthanc, steward_groups=[STEWARDS], resync_seconds=5, poll_seconds=1)


def _install(plane: Cluster, helm: Helm, values: dict[str, Any], *, upgrade: bool = False) -> None:
    chart.install(lambda *a: plane.run(*a), helm, values, upgrade=upgrade)


@pytest.fixture(scope="module")
def release(plane: Cluster, helm: Helm, values: dict[str, Any], minio: dict[str, Any], freeipa: dict[str, Any],
            orthanc: dict[str, Any], people: dict[str, str]) -> Cluster:  # fmt: skip
    """What the install guide says: the namespace, the credentials Secret, then `helm install`."""
    chart.prepare(lambda *a: plane.run(*a), minio, freeipa)
    _install(plane, helm, values)
    chart.source_credentials(lambda *a: plane.run(*a), orthanc)
    plane.run("create", "clusterrolebinding", "data-stewards", "--clusterrole=enclave-data-steward",
              f"--group={STEWARDS}")  # fmt: skip
    return plane


def _operator_pod(cluster: Cluster) -> dict[str, Any]:
    pods = (cluster.get_json("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}") or {})["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    return running[0]


def _pid(chart_run: RunDir, pod: dict[str, Any]) -> int:
    return wait_for(lambda: container_pid(chart_run.path / "pods", pod["metadata"]["uid"]), timeout=30,
                    what="the operator container's process")  # fmt: skip


def test_the_operator_runs_exactly_as_the_deployment_says(release: Cluster, chart_run: RunDir) -> None:
    pod = _operator_pod(release)
    container = pod["spec"]["containers"][0]
    pid = _pid(chart_run, pod)
    proc = Path(f"/proc/{pid}")
    env = dict(e.split("=", 1) for e in proc.joinpath("environ").read_text().split("\0") if "=" in e)
    argv = proc.joinpath("cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    expanded = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]  # as a kubelet does
    assert [Path(argv[1].decode()).name, *(a.decode() for a in argv[2:])] == [*container["command"], *expanded]
    assert env["POD_IP"] == pod["status"]["podIP"] and f"--webhook-address={env['POD_IP']}" in expanded
    assert re.search(r"^Uid:\s+65532\s", proc.joinpath("status").read_text(), re.M), "runs as the pod's user"
    assert "KUBECONFIG" not in env and env["POD_NAMESPACE"] == NAMESPACE
    config_map = release.get_json("configmap", RELEASE, "-n", NAMESPACE)
    root = proc / "root"
    assert (root / "etc/enclave/config.yaml").read_text() == config_map["data"]["config.yaml"]
    # Its only credential: the projected token of a TokenRequest for the chart's service account, bound to the pod.
    token = (root / host_path(TOKEN).lstrip("/")).read_text()
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    user = json.loads(release.run("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)["status"]
    assert user["authenticated"] and user["user"]["username"] == SA
    # The webhooks leave out exactly this identity's requests (its own bookkeeping), no one else's.
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for hook in release.get_json(kind, WEBHOOKS)["webhooks"]:
            assert hook["matchConditions"] == [{"name": "not-the-operator",
                                                "expression": f'request.userInfo.username != "{SA}"'}], hook["name"]
    assert user["user"]["extra"]["authentication.kubernetes.io/pod-name"] == [pod["metadata"]["name"]]
    assert not os.access(root / "etc", os.W_OK) or proc.joinpath("mounts").read_text().split("\n")[0].find(" ro,") > 0


def test_project_and_ingest_become_ready_with_only_the_charts_rbac(release: Cluster) -> None:
    name = "chart-onco"
    release.apply(yaml.safe_dump(ProjectBuilder(name).member("bob", "maintainer").deletion("Delete").obj()))
    project = wait_ready(release, name, timeout=timeouts.READY * 2)
    assert project["status"]["namespace"] == name and project["status"]["bucket"] == name
    assert condition(project, "IdentityReady")["status"] == "True"
    # The operator gave itself access to this namespace's Secrets, and to no other namespace's.
    binding = release.get_json("rolebinding", "enclave-operator", "-n", name)
    assert binding["roleRef"]["name"] == f"{RELEASE}-namespace"
    assert release.run("auth", "can-i", "get", "secrets", "-n", name, f"--as={SA}", check=False).stdout.strip() == "yes"

    ingest = {"apiVersion": "enclave.io/v1alpha1", "kind": "DataIngest",
              "metadata": {"name": "ct-1", "namespace": name},
              "spec": {"project": name, "source": {"name": "research-pacs", "dicomweb": {"query": {"Modality": "CT"}}},
                       "destination": {"prefix": "raw/ct-1/"}, "parallelism": 1}}  # fmt: skip
    release.run("apply", "-f", "-", "--as=bob", "--as-group=researchers", input=yaml.safe_dump(ingest))
    wait_for(lambda: _ingest_phase(release, name) == "AwaitingApproval", timeout=60, what="AwaitingApproval")
    release.run("annotate", "dataingest", "ct-1", "-n", name, "enclave.io/approve=yes", "--as=steve",
                f"--as-group={STEWARDS}")  # fmt: skip
    wait_for(lambda: _ingest_phase(release, name) in ("Succeeded", "Failed"), timeout=240, what="the ingest to end")
    done = release.get_json("dataingest", "ct-1", "-n", name)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["progress"]["done"] == 3


def test_federated_node_parts_become_ready_with_only_the_charts_rbac(release: Cluster) -> None:
    """Its namespace (the operator binds itself there for the store credential, and may then grant integrators
    read access to named Secrets), its store, and its backup parts in the backup namespace. The probes fail (no
    test host here): Reachable is not what this checks."""
    name = "chart-node"
    node = NodeBuilder(name).deletion("Delete")
    node.integrator("alice", (datetime.date.today() + datetime.timedelta(days=30)).isoformat())
    node.credential_secrets("node-s3")  # the integrators' Role: the operator grants only what it may read itself
    release.apply(yaml.safe_dump(node.obj()))
    parts = (reasons.NAMESPACE_READY, reasons.STORAGE_READY, reasons.BACKUP_READY)

    def ready() -> dict[str, Any] | None:
        obj = release.get_json("federatednode", name)
        return obj if all((condition(obj, p) or {}).get("status") == "True" for p in parts) else None

    obj = wait_for(ready, timeout=timeouts.READY * 2, what="the node's namespace, store and backup parts")
    assert obj is not None
    binding = release.get_json("rolebinding", "enclave-operator", "-n", f"fn-{name}")
    assert binding["roleRef"]["name"] == f"{RELEASE}-namespace"
    assert release.get_json("secret", "node-s3", "-n", f"fn-{name}") is not None
    assert release.get_json("role", "fn-integrator-credentials", "-n", f"fn-{name}") is not None
    release.run("delete", "federatednode", name, "--wait=false")


def _ingest_phase(cluster: Cluster, namespace: str) -> str | None:
    return ((cluster.get_json("dataingest", "ct-1", "-n", namespace) or {}).get("status") or {}).get("phase")


def _permissions(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.run("auth", "can-i", "--list", f"--as={SA}", "-n", namespace).stdout
    rows = []
    for line in out.splitlines()[1:]:
        columns = re.split(r"\s{2,}", line.strip())
        if columns and not columns[0].startswith(("selfsubject", "[")) and columns[0]:
            rows.append("  ".join(columns))
    return sorted(rows)


def test_effective_permissions_are_pinned(release: Cluster) -> None:
    """`kubectl auth can-i --list` as the chart's service account, per kind of namespace, against the committed list."""
    sections = {
        "any other namespace (cluster-wide rules only)": "kube-system",
        "the release namespace": NAMESPACE,
        "the ingest namespace": INGEST,
        "the backup namespace": "enclave-backup",
        "a project namespace (the operator bound itself there)": "chart-onco",
    }
    text = ("# The operator service account's effective permissions (`kubectl auth can-i --list`), pinned by\n"
            "# tests/e2e/test_helm_chart.py. Columns: resource, non-resource URLs, resource names, verbs.\n")
    cluster_wide: list[str] = []
    for title, namespace in sections.items():
        rows = _permissions(release, namespace)
        extra = [r for r in rows if r not in cluster_wide]
        text += f"\n## {title}{'' if not cluster_wide else ', in addition'}\n" + "\n".join(extra or ["(nothing)"])
        text += "\n"
        cluster_wide = cluster_wide or rows
    if os.environ.get("ENCLAVE_UPDATE_GOLDEN") == "1":
        PERMISSIONS.parent.mkdir(parents=True, exist_ok=True)
        PERMISSIONS.write_text(text)
    assert text == PERMISSIONS.read_text(), (
        "the operator's effective permissions changed; review, then ENCLAVE_UPDATE_GOLDEN=1 to pin them:\n" + text
    )


def _as_operator(cluster: Cluster, token: str, *args: str, input: str | None = None) -> Any:
    """kubectl with the operator's own token (not impersonation): exactly what the operator could do."""
    return cluster.run("--token", token, "--kubeconfig", str(cluster.kubeconfig), *args, input=input, check=False)


def test_it_cannot_read_secrets_elsewhere_nor_create_arbitrary_rbac(release: Cluster, chart_run: RunDir) -> None:
    pid = _pid(chart_run, _operator_pod(release))
    token = Path(f"/proc/{pid}/root", host_path(TOKEN).lstrip("/")).read_text()
    release.run("create", "secret", "generic", "not-yours", "-n", "default", "--from-literal=k=v", check=False)
    for namespace in ("default", "kube-system", NAMESPACE):
        result = _as_operator(release, token, "get", "secrets", "-n", namespace)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (namespace, result.stderr)
    assert "forbidden" in _as_operator(release, token, "get", "secrets", "-A").stderr.lower()
    # No arbitrary RBAC: not cluster-admin, not a new role, not its own project roles in a namespace it does not manage.
    for manifest in (
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "x"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x",
                                                                                           "namespace": "chart-onco"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x",
                                                                                           "namespace": "kube-system"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{RELEASE}-namespace"},
         "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]},
    ):  # fmt: skip
        result = _as_operator(release, token, "create", "-f", "-", input=json.dumps(manifest))
        assert result.returncode != 0, f"the operator could create {json.dumps(manifest)}"
    # Nor can it claim a namespace it does not own (the admission policy behind its RBAC).
    result = _as_operator(release, token, "label", "namespace", "kube-system", "enclave.io/project=mine")
    assert result.returncode != 0 and "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    result = _as_operator(release, token, "delete", "namespace", "default", "--wait=false")
    assert result.returncode != 0, "the operator could delete a namespace that is not a project's"


def test_upgrade_with_changed_values_rolls_the_pod_and_keeps_the_certificate(
    release: Cluster, helm: Helm, values: dict[str, Any]
) -> None:
    before = release.get_json("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"]
    old_pod = _operator_pod(release)["metadata"]["uid"]
    changed = {**values, "config": {**values["config"], "selfService": {"maxCpu": "2"}}}
    _install(release, helm, changed, upgrade=True)  # --wait: the new pod is ready
    assert _operator_pod(release)["metadata"]["uid"] != old_pod, "a changed configuration rolls the pod"
    assert release.get_json("secret", f"{RELEASE}-webhook-tls", "-n", NAMESPACE)["data"] == before
    hook = release.get_json("validatingwebhookconfiguration", WEBHOOKS)
    assert base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]) == base64.b64decode(before["ca.crt"])
    # The new configuration is in effect: 4 CPUs is above the new self-service tier, so a researcher's request
    # waits for approval (an admin's own create would be the approval).
    name = "chart-big"
    big = ProjectBuilder(name).obj()
    big["spec"]["compute"] = {"kubernetes": {"cpu": "4"}}
    release.run("create", "clusterrolebinding", "researchers", "--clusterrole=enclave-researcher",
                "--group=researchers", check=False)  # fmt: skip
    release.apply(yaml.safe_dump(big), "--as=alice", "--as-group=researchers")
    obj = wait_for(lambda: condition(release.get_json("researchproject", name), "Approved"), timeout=60,
                   what="the approval decision")  # fmt: skip
    assert obj["status"] == "False" and obj["reason"] == "AwaitingApproval"
    release.run("delete", "researchproject", name, "--timeout=60s")


def test_uninstall_leaves_crds_objects_and_data_and_a_reinstall_resumes(
    release: Cluster, helm: Helm, values: dict[str, Any]
) -> None:
    helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s")
    assert release.get_json("crd", "researchprojects.enclave.io") is not None, "CRDs stay"
    project = release.get_json("researchproject", "chart-onco")
    assert project is not None and "enclave.io/finalizer" in project["metadata"]["finalizers"], "objects stay"
    assert release.get_json("namespace", INGEST) is not None, "the ingest namespace (source credentials) stays"
    assert release.get_json("validatingwebhookconfiguration", WEBHOOKS) is None
    assert release.get_json("mutatingwebhookconfiguration", WEBHOOKS) is None
    assert release.get_json("secret", f"{RELEASE}-signing-key", "-n", NAMESPACE) is not None, "approvals stay valid"
    assert release.get_json("clusterrole", RELEASE) is None
    assert release.get_json("clusterrole", "enclave-project-owner") is not None, "members' access stays"
    # With no operator, a deletion waits on the finalizer; the documented fix is to reinstall (or remove the
    # finalizer by hand, which leaves the project's backends in place).
    release.run("delete", "researchproject", "chart-onco", "--wait=false")
    assert release.get_json("researchproject", "chart-onco")["metadata"].get("deletionTimestamp")
    _install(release, helm, values)
    wait_gone(release, "researchproject", "chart-onco", timeout=timeouts.DELETE * 2)
    wait_gone(release, "namespace", "chart-onco", timeout=timeouts.DELETE * 2)
