"""Self-service through kubectl under real RBAC and the operator's admission webhook (TLS on loopback),
with users impersonated as the API server would authenticate them (`kubectl --as`)."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess, Webhooks, operator_process
from support.projects import condition, events_for, settled, wait_ready
from support.wait import wait_for

RESEARCHERS = "researchers"
APPROVAL = "enclave.io/approval"


@pytest.fixture(scope="module")
def researchers(crds: Cluster) -> Iterator[Cluster]:
    crds.run("create", "clusterrolebinding", "test-researchers", "--clusterrole=enclave-researcher",
             f"--group={RESEARCHERS}")  # fmt: skip
    try:
        yield crds
    finally:
        crds.run("delete", "clusterrolebinding", "test-researchers", check=False)


def _as(cluster: Cluster, user: str, *args: str, manifest: dict | None = None) -> tuple[int, str]:
    result = cluster.run(
        *args, f"--as={user}", f"--as-group={RESEARCHERS}", input=yaml.safe_dump(manifest) if manifest else None,
        check=False,
    )  # fmt: skip
    return result.returncode, result.stderr + result.stdout


def _project(name: str, owner: str = "alice", **spec: object) -> dict:
    obj = (
        ProjectBuilder(name, owner=owner).member("bob", "maintainer").member("carol", "viewer").deletion("Delete").obj()
    )
    obj["spec"].update(spec)
    return obj


def test_researchers_create_only_projects_they_own(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    code, out = _as(researchers, "bob", "apply", "-f", "-", manifest=_project(project_name, owner="alice"))
    assert code != 0 and "spec.owner" in out and "only create projects that you own" in out, out
    code, out = _as(researchers, "alice", "apply", "-f", "-", manifest=_project(project_name))
    assert code == 0, out
    wait_ready(researchers, project_name)
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")


def test_users_without_the_researcher_role_are_refused_by_rbac(researchers: Cluster, project_name: str) -> None:
    result = researchers.run("apply", "-f", "-", "--as=mallory", input=yaml.safe_dump(_project(project_name)),
                             check=False)  # fmt: skip
    assert result.returncode != 0 and "forbidden" in result.stderr.lower()


def test_a_past_valid_until_is_refused_at_creation(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    past = (datetime.date.today() - datetime.timedelta(days=3)).isoformat()
    code, out = _as(researchers, "alice", "apply", "-f", "-", manifest=_project(project_name, validUntil=past))
    assert code != 0 and "spec.validUntil" in out and "in the past" in out, out


def test_only_owners_and_maintainers_edit_and_only_owners_delete(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=_project(project_name))[0] == 0
    wait_ready(researchers, project_name)
    code, out = _as(researchers, "carol", "apply", "-f", "-", manifest=_project(project_name, displayName="by carol"))
    assert code != 0 and "owners and maintainers" in out, out
    code, out = _as(researchers, "bob", "apply", "-f", "-", manifest=_project(project_name, displayName="by bob"))
    assert code == 0, out
    code, out = _as(researchers, "bob", "delete", "researchproject", project_name)
    assert code != 0 and "only the project's owner may delete it" in out, out
    code, out = _as(researchers, "alice", "delete", "researchproject", project_name, "--timeout=60s")
    assert code == 0, out


def _approved(cluster: Cluster, name: str, status: str = "True") -> dict | None:
    obj = cluster.get_json("researchproject", name)
    return obj if (condition(obj, "Approved") or {}).get("status") == status else None


def _quota(cluster: Cluster, name: str) -> dict:
    return (cluster.get_json("resourcequota", "enclave-quota", "-n", name) or {}).get("spec", {}).get("hard", {})


def test_requests_above_the_tier_wait_for_an_admin(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    big = _project(project_name, compute={"kubernetes": {"gpu": 4}})
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=big)[0] == 0
    waiting = wait_for(lambda: _approved(researchers, project_name, "False"), timeout=60, what="Approved=False")
    assert condition(waiting, "Approved")["reason"] == "AwaitingApproval"
    assert "gpu 4 > 1" in condition(waiting, "Ready")["message"]
    assert APPROVAL not in waiting["metadata"].get("annotations", {}), "a researcher's request carries no approval"
    wait_for(lambda: _quota(researchers, project_name).get("requests.nvidia.com/gpu") == "1", timeout=60,
             what="the project running with the tier meanwhile (finding 14.4)")  # fmt: skip
    for annotation in ("enclave.io/approve=yes", f'{APPROVAL}={{"by":"alice"}}'):
        code, out = _as(researchers, "alice", "annotate", "researchproject", project_name, annotation)
        assert code != 0 and "only platform admins may approve" in out, out
    researchers.run("annotate", "researchproject", project_name, "enclave.io/approve=yes")  # the plane's admin
    approved = wait_ready(researchers, project_name)
    assert condition(approved, "Approved")["reason"] == "ApprovedByAdmin"
    assert "approved by admin" in condition(approved, "Approved")["message"]
    assert json.loads(approved["metadata"]["annotations"][APPROVAL])["by"] == "admin"
    assert "enclave.io/approve" not in approved["metadata"]["annotations"], "the trigger is consumed"
    assert _quota(researchers, project_name)["requests.nvidia.com/gpu"] == "4"
    # Raising the request beyond the approval makes it wait again, without undoing what was approved.
    big["spec"]["compute"]["kubernetes"]["gpu"] = 8
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=big)[0] == 0
    wait_for(lambda: _approved(researchers, project_name, "False"), timeout=60, what="Approved=False again")
    assert _quota(researchers, project_name)["requests.nvidia.com/gpu"] == "4"
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")


def test_finding_8_9_an_admins_apply_is_the_approval_recorded_with_who(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    big = _project(project_name, compute={"kubernetes": {"gpu": 4}})
    manifest = yaml.safe_dump(big)
    researchers.run("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=manifest)  # GitOps as admin
    ready = wait_ready(researchers, project_name)
    assert condition(ready, "Approved")["reason"] == "ApprovedByAdmin"
    record = json.loads(ready["metadata"]["annotations"][APPROVAL])
    assert record["by"] == "admin" and record["grant"]["gpu"] == 4
    assert ("Normal", "ApprovedProject") in {(t, r) for t, r, _ in events_for(researchers, project_name)}
    before = settled(researchers, project_name)
    researchers.run("apply", "--server-side", "--field-manager=argocd", "-f", "-", input=manifest)
    after = settled(researchers, project_name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "re-applying changes nothing"
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")


def test_finding_14_3_egress_slurm_and_a_later_end_date_wait_for_an_admin(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    soon = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    asked = _project(project_name, network={"egress": [{"cidr": "0.0.0.0/0"}]}, validUntil=soon)
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=asked)[0] == 0
    waiting = wait_for(lambda: _approved(researchers, project_name, "False"), timeout=60, what="Approved=False")
    assert "egress to 0.0.0.0/0" in condition(waiting, "Approved")["message"]
    wait_for(lambda: researchers.get_json("rolebinding", "enclave-owner", "-n", project_name), timeout=60,
             what="the project provisioned meanwhile")  # fmt: skip
    assert researchers.get_json("networkpolicy", "enclave-allow-egress", "-n", project_name) is None, "no internet"
    later = (datetime.date.today() + datetime.timedelta(days=400)).isoformat()
    asked["spec"].update(network={"egress": []}, validUntil=later)
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=asked)[0] == 0
    extended = wait_for(
        lambda: (o := _approved(researchers, project_name, "False")) and "validUntil" in
        condition(o, "Approved")["message"] and o, timeout=60, what="the extension waiting",
    )  # fmt: skip
    assert extended["status"]["validUntil"] == soon, "the approved end date stays in force"
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")


def test_finding_14_4_revocations_do_not_wait_for_a_pending_request(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=_project(project_name))[0] == 0
    wait_ready(researchers, project_name)
    assert _as(researchers, "bob", "auth", "can-i", "create", "pods", "-n", project_name)[1].strip() == "yes"
    pending = _project(project_name, compute={"kubernetes": {"gpu": 8}})
    pending["spec"]["members"] = [m for m in pending["spec"]["members"] if m["user"] != "bob"]
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=pending)[0] == 0
    wait_for(lambda: _as(researchers, "bob", "auth", "can-i", "get", "pods", "-n", project_name)[1].strip() == "no",
             timeout=60, what="bob's access revoked while the GPU request waits")  # fmt: skip
    waiting = wait_for(lambda: _approved(researchers, project_name, "False"), timeout=60, what="the request waiting")
    assert "gpu 8 > 1" in condition(waiting, "Approved")["message"]
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")


def test_finding_14_1_an_approval_acts_within_seconds(
    researchers: Cluster, operator: OperatorProcess, operator_dir: Path, operator_config: Path,
    minio: dict[str, Any], operator_secrets: dict[str, str], webhook_ports: tuple[int, int], tmp_path: Path,
    project_name: str,
) -> None:  # fmt: skip
    """With a five-minute resync, only the approval itself can start the reconcile that applies it."""
    config = yaml.safe_load(operator_config.read_text())
    config["intervals"]["resyncSeconds"] = 300
    slow_config = tmp_path / "slow.yaml"
    slow_config.write_text(yaml.safe_dump(config))
    operator.stop()
    slow = operator_process(researchers, operator_dir, slow_config, minio, operator_secrets, tmp_path / "slow.log",
                            pod_id="operator-a", webhook_port=webhook_ports[0])  # fmt: skip
    slow.start()
    try:
        big = _project(project_name, compute={"kubernetes": {"gpu": 4}})
        assert _as(researchers, "alice", "apply", "-f", "-", manifest=big)[0] == 0
        wait_for(lambda: _approved(researchers, project_name, "False"), timeout=60, what="Approved=False")
        start = time.monotonic()
        researchers.run("annotate", "researchproject", project_name, "enclave.io/approve=yes")
        wait_for(lambda: _approved(researchers, project_name), timeout=60, what="the approval to take effect")
        assert time.monotonic() - start < 30, "the approval waited for a resync"
        researchers.run("delete", "researchproject", project_name, "--timeout=60s")
    finally:
        slow.stop()
        operator.start()


def _webhook_calls(cluster: Cluster, names: set[str]) -> float:
    """How often the API server has called these webhooks (its own histogram of admission webhook calls)."""
    total = 0.0
    for line in cluster.run("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
            if labels.get("name") in names:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_operators_own_requests_skip_the_webhooks(
    researchers: Cluster, operator: OperatorProcess, webhooks: Webhooks, project_name: str
) -> None:
    """The configurations' matchConditions: the API server calls the project webhooks for anyone's update but not
    for the operator's own requests (kopf's progress annotations, finalizers: half the admission calls at scale)."""
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=_project(project_name))[0] == 0
    wait_ready(researchers, project_name)
    hooks = {f"stamp-project.{webhooks.name}", f"policy.{webhooks.name}"}
    before = _webhook_calls(researchers, hooks)
    researchers.run("annotate", "researchproject", project_name, "example.org/note=by-an-admin")
    by_admin = _webhook_calls(researchers, hooks)
    assert by_admin == before + 2, "an admin's update passes the mutating and the validating webhook once each"
    researchers.run("annotate", "--overwrite", "researchproject", project_name, "example.org/note=by-the-operator",
                    f"--as={webhooks.operator_user}", "--as-group=system:masters")  # fmt: skip
    assert researchers.get_json("researchproject", project_name)["metadata"]["annotations"]["example.org/note"] == (
        "by-the-operator")
    assert _webhook_calls(researchers, hooks) == by_admin, "the operator's own update is not sent to the webhooks"
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")
