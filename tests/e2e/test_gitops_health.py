"""GitOps health of our kinds, judged on live objects from the real API server (never hand-written ones):

- Argo CD: the chart's Lua health check (charts/enclave-operator/files/argocd/health.lua) run by gopher-lua,
  the interpreter Argo CD embeds (hack/argolua), as Argo CD calls it;
- Flux: the kstatus library Flux's kustomize-controller uses for `wait: true` (hack/kstatus).

Each situation is produced for real with the running operator, the object is read back with kubectl, kept
in the session's directory (live-objects/), and both tools judge it. The operator's own `enclave_objects`
state (metrics.state_of) must agree with the Lua mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv.podrunner import podrunner_service
from localenv.runtime import REPO_ROOT, RunDir
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.gitops import assert_health, judge
from support.operator import OperatorProcess
from support.projects import condition, wait_ready
from support.wait import wait_for

INGEST_NAMESPACE = "enclave-ingest"
STEWARDS = "enclave:data-stewards"


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live-objects")


def _capture(directory: Path, label: str, obj: dict[str, Any]) -> dict[str, Any]:
    (directory / f"{label}.json").write_text(json.dumps(obj, indent=2))
    return obj


def _until(cluster: Cluster, what: str, check: Any, *args: str) -> dict[str, Any]:
    return wait_for(lambda: (o := cluster.get_json(*args)) and check(o) and o, timeout=timeouts.READY * 2, what=what)


def test_research_project_health_in_argo_cd_and_flux(
    crds: Cluster, operator: OperatorProcess, project_name: str, captured: Path
) -> None:
    # Just created: the API server's answer to the create, before the operator wrote any status.
    manifest = yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj())
    created = json.loads(crds.run("create", "-o", "json", "-f", "-", input=manifest).stdout)
    lua, flux = judge(_capture(captured, "project-created", created))
    assert lua["status"] == "Progressing", lua
    assert flux["status"] == "Current", "kstatus reads an object without status as Current (see the GitOps guide)"

    ready = _capture(captured, "project-ready", wait_ready(crds, project_name))
    assert_health(ready, "Healthy", "Current")

    # Someone takes the namespace's ownership label away: the project must not touch it any more (NotOwned).
    crds.run("label", "namespace", project_name, "enclave.io/project-")
    stalled = _until(crds, "Stalled", lambda o: (condition(o, "Stalled") or {}).get("status") == "True",
                     "researchproject", project_name)  # fmt: skip
    assert_health(_capture(captured, "project-stalled", stalled), "Degraded", "Failed")
    crds.run("label", "namespace", project_name, f"enclave.io/project={project_name}")
    wait_ready(crds, project_name)

    # Its ethics approval ended: cordoned, data kept, waiting for a renewal.
    obj = crds.get_json("researchproject", project_name)
    crds.run("patch", "researchproject", project_name, "--type=merge", "-p",
             json.dumps({"spec": {"validUntil": "2020-01-01"}}))  # fmt: skip
    cordoned = _until(crds, "Cordoned", lambda o: (condition(o, "Cordoned") or {}).get("status") == "True"
                      and o["status"].get("observedGeneration") == o["metadata"]["generation"],
                      "researchproject", project_name)  # fmt: skip
    assert_health(_capture(captured, "project-cordoned", cordoned), "Suspended", "Current")
    assert obj is not None
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_project_awaiting_approval_is_suspended_for_argo_cd_and_in_progress_for_flux(
    crds: Cluster, operator: OperatorProcess, project_name: str, captured: Path
) -> None:
    big = ProjectBuilder(project_name).deletion("Delete").obj()
    big["spec"]["compute"] = {"kubernetes": {"gpu": 4}}
    # A researcher's request (an admin's own create would be the approval).
    crds.run("create", "clusterrolebinding", "gitops-researchers", "--clusterrole=enclave-researcher",
             "--group=researchers", check=False)  # fmt: skip
    crds.apply(yaml.safe_dump(big), "--as=alice", "--as-group=researchers")
    waiting = _until(crds, "AwaitingApproval",
                     lambda o: (condition(o, "Ready") or {}).get("reason") == "AwaitingApproval",
                     "researchproject", project_name)  # fmt: skip
    assert_health(_capture(captured, "project-awaiting-approval", waiting), "Suspended", "InProgress")
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


@pytest.fixture(scope="module")
def worker_node(crds: Cluster, orthanc: dict[str, Any], run_dir: RunDir) -> Iterator[Cluster]:
    """The ingest namespace with the PACS credentials, the stewards' role, and the stand-in kubelet."""
    crds.run("create", "namespace", INGEST_NAMESPACE, check=False)
    crds.run("create", "secret", "generic", "research-pacs-credentials", "-n", INGEST_NAMESPACE,
             f"--from-literal=username={orthanc['username']}", f"--from-literal=password={orthanc['password']}",
             check=False)  # fmt: skip
    crds.run("create", "clusterrolebinding", "gitops-stewards", "--clusterrole=enclave-data-steward",
             f"--group={STEWARDS}", check=False)  # fmt: skip
    started = not run_dir.running("podrunner")
    if started:
        run_dir.start(podrunner_service(run_dir, crds.kubeconfig, INGEST_NAMESPACE, REPO_ROOT / ".venv" / "bin"))
    yield crds
    if started:
        run_dir.stop("podrunner")


def test_data_ingest_health_in_argo_cd_and_flux(
    worker_node: Cluster, operator: OperatorProcess, project_name: str, captured: Path
) -> None:
    crds = worker_node
    ingest = {"apiVersion": "enclave.io/v1alpha1", "kind": "DataIngest",
              "metadata": {"name": "gitops", "namespace": project_name},
              "spec": {"project": project_name, "destination": {"prefix": "raw/gitops/"}, "parallelism": 1,
                       "source": {"name": "research-pacs", "dicomweb": {"query": {"Modality": "CT"}}}}}  # fmt: skip
    # Before its project exists: Pending, waiting for the project (the namespace exists, as GitOps may make it).
    crds.run("create", "namespace", project_name)
    crds.apply(yaml.safe_dump(ingest))
    pending = _until(crds, "Pending", lambda o: (o.get("status") or {}).get("phase") == "Pending",
                     "dataingest", "gitops", "-n", project_name)  # fmt: skip
    assert_health(_capture(captured, "ingest-pending", pending), "Progressing", "InProgress")
    crds.run("delete", "dataingest", "gitops", "-n", project_name, "--timeout=60s")
    crds.run("delete", "namespace", project_name, "--timeout=60s")

    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
    wait_ready(crds, project_name)
    crds.apply(yaml.safe_dump(ingest))
    waiting = _until(crds, "AwaitingApproval", lambda o: (o.get("status") or {}).get("phase") == "AwaitingApproval",
                     "dataingest", "gitops", "-n", project_name)  # fmt: skip
    assert_health(_capture(captured, "ingest-awaiting-approval", waiting), "Suspended", "InProgress")

    crds.run("annotate", "dataingest", "gitops", "-n", project_name, "enclave.io/approve=yes", "--as=steve",
             f"--as-group={STEWARDS}")  # fmt: skip
    done = _until(crds, "the ingest to end", lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                  "dataingest", "gitops", "-n", project_name)  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert_health(_capture(captured, "ingest-succeeded", done), "Healthy", "Current")
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
