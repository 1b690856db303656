"""DataIngest end to end: from Orthanc (DICOMweb) through the worker Job to the project bucket, with a
data steward's approval, a scoped credential, verification and the provenance manifest.

There is no kubelet here: hack/localenv/podrunner.py plays one for the ingest namespace. It runs
exactly the command and environment of each pod spec and reports the exit code in the pod's status,
so the Job controller (a real kube-controller-manager) sees what really happened.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
import pytest
import yaml

from enclave_operator.backends import s3_minio
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess
from support.projects import condition, wait_ready
from support.wait import wait_for

NAMESPACE = "enclave-ingest"
STEWARDS = "enclave:data-stewards"


@pytest.fixture(scope="module")
def platform(ingest_platform: Cluster) -> Cluster:
    """What the platform team sets up once (tests/conftest.py: ingest_platform)."""
    return ingest_platform


def _ingest(project: str, name: str, source: str = "research-pacs", parallelism: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "enclave.io/v1alpha1",
        "kind": "DataIngest",
        "metadata": {"name": name, "namespace": project},
        "spec": {
            "project": project,
            "source": {"name": source, "dicomweb": {}},
            "deidentification": {"profile": "basic", "options": ["retainLongitudinalModifiedDates"]},
            "destination": {"prefix": f"raw/{name}/"},
            "parallelism": parallelism,
        },
    }


def _phase(cluster: Cluster, project: str, name: str) -> str | None:
    obj = cluster.get_json("dataingest", name, "-n", project)
    return ((obj or {}).get("status") or {}).get("phase")


def test_ingest_waits_for_a_steward_then_runs_verifies_and_records_provenance(
    platform: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, project_name: str
) -> None:
    platform.apply(yaml.safe_dump(ProjectBuilder(project_name).member("bob", "maintainer").deletion("Delete").obj()))
    wait_ready(platform, project_name)
    ingest = _ingest(project_name, "ct-cohort-1")
    result = platform.run("apply", "-f", "-", "--as=bob", "--as-group=researchers",
                          input=yaml.safe_dump(ingest), check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr  # a maintainer may ask for an ingest
    wait_for(lambda: _phase(platform, project_name, "ct-cohort-1") == "AwaitingApproval", timeout=60,
             what="AwaitingApproval")  # fmt: skip

    # The maintainer cannot approve their own ingest (finding 14.2), not even by writing a record by hand; a data
    # steward can, and the webhook records who.
    approve = ["annotate", "dataingest", "ct-cohort-1", "-n", project_name]
    denied = platform.run(*approve, "enclave.io/approve=yes", "--as=bob", "--as-group=researchers", check=False)
    assert denied.returncode != 0 and "only data stewards may approve" in denied.stderr, denied.stderr
    forged = '{"by":"steve","at":"2026-01-01T00:00:00Z","grant":{},"sig":"00"}'
    denied = platform.run(*approve, f"enclave.io/approval={forged}", "--as=bob", "--as-group=researchers",
                          check=False)  # fmt: skip
    assert denied.returncode != 0 and "only data stewards may approve" in denied.stderr, denied.stderr
    platform.run(*approve, "enclave.io/approve=yes", "--as=steve", f"--as-group={STEWARDS}")

    done = wait_for(
        lambda: (
            (o := platform.get_json("dataingest", "ct-cohort-1", "-n", project_name))
            and o.get("status", {}).get("phase") in ("Succeeded", "Failed")
            and o
        ),
        timeout=180,
        what="the ingest to finish",
    )
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["approvedBy"] == "steve"
    # MR_small's ImageType says SECONDARY: quarantined with the secondary capture, never written.
    assert status["progress"] == {"discovered": 5, "done": 3, "quarantined": 2, "failed": 0,
                                  "bytes": status["progress"]["bytes"]}, status["progress"]  # fmt: skip
    assert condition(done, "Ready")["reason"] == "Verified"
    assert status["manifest"] == f"s3://{project_name}/raw/ct-cohort-1/_manifest.json"

    # The Job ran as the pod spec says, and its status reflects it.
    job = platform.get_json("job", status["job"].split("/", 1)[1], "-n", NAMESPACE)
    assert job["status"]["succeeded"] == 2 and job["spec"]["completionMode"] == "Indexed"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False and pod_spec["securityContext"]["runAsNonRoot"]

    # Provenance: every output with its SHA-256, the key's fingerprint (never the key), the approver.
    manifest = json.loads(s3.s3.get_object(project_name, "raw/ct-cohort-1/_manifest.json").read())
    assert manifest["approver"] == "steve" and len(manifest["outputs"]) == 3
    key = platform.get_json("secret", f"deid-key-{project_name}", "-n", NAMESPACE)["data"]["key"]
    assert key not in json.dumps(manifest)
    for output in manifest["outputs"]:
        data = s3.s3.get_object(project_name, output["path"]).read()
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientIdentityRemoved == "YES"
        assert not str(ds.SOPInstanceUID).startswith("1.3.6.1.4.1.5962"), "UIDs are replaced"
    # The scoped credential is gone once the run ended.
    assert "ingest-" not in " ".join(json.loads(s3.admin.user_list()))
    # Researchers cannot read the de-identification key or the source credentials.
    can_read = platform.run("auth", "can-i", "get", "secrets", "-n", NAMESPACE, "--as=bob", check=False)
    assert can_read.stdout.strip() == "no"
    platform.run("delete", "researchproject", project_name, "--timeout=60s")


def test_an_ingest_into_a_cordoned_or_missing_project_waits(
    platform: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    platform.run("create", "namespace", project_name)
    platform.apply(yaml.safe_dump(_ingest(project_name, "early", source="open-pacs")))
    obj = wait_for(
        lambda: (
            (o := platform.get_json("dataingest", "early", "-n", project_name))
            and (condition(o, "Ready") or {}).get("reason") == "TargetNotReady"
            and o
        ),
        timeout=60,
        what="TargetNotReady",
    )
    assert "does not exist" in condition(obj, "Ready")["message"] and obj["status"]["phase"] == "Pending"
    platform.run("delete", "dataingest", "early", "-n", project_name, "--timeout=60s")
    platform.run("delete", "namespace", project_name, "--wait=false")
