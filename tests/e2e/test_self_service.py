"""Self-service through kubectl under real RBAC and the operator's admission webhook (TLS on loopback),
with users impersonated as the API server would authenticate them (`kubectl --as`)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
import yaml

from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess
from support.projects import condition, wait_ready
from support.wait import wait_for

RESEARCHERS = "researchers"


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


def test_requests_above_the_tier_wait_for_an_admin(
    researchers: Cluster, operator: OperatorProcess, project_name: str
) -> None:
    big = _project(project_name, compute={"kubernetes": {"gpu": 4}})
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=big)[0] == 0
    waiting = wait_for(
        lambda: (
            (o := researchers.get_json("researchproject", project_name))
            and (condition(o, "Approved") or {}).get("status") == "False"
            and o
        ),
        timeout=60,
        what="Approved=False",
    )
    assert condition(waiting, "Approved")["reason"] == "AwaitingApproval"
    assert "gpu 4 > 1" in condition(waiting, "Ready")["message"]
    assert researchers.get_json("namespace", project_name) is None, "nothing is provisioned before approval"
    approve = ["annotate", "researchproject", project_name, "enclave.io/approved=cpu=8,memory=32Gi,gpu=4,storage=1Gi"]
    code, out = _as(researchers, "alice", *approve, "enclave.io/approved-by=alice")
    assert code != 0 and "only platform admins may approve" in out, out
    researchers.run(*approve, "enclave.io/approved-by=admin")  # the local plane's admin (system:masters)
    approved = wait_ready(researchers, project_name)
    assert condition(approved, "Approved")["reason"] == "ApprovedByAdmin"
    # Raising the request beyond the approval makes it wait again, without undoing what exists.
    big["spec"]["compute"]["kubernetes"]["gpu"] = 8
    assert _as(researchers, "alice", "apply", "-f", "-", manifest=big)[0] == 0
    wait_for(
        lambda: (
            (condition(researchers.get_json("researchproject", project_name), "Approved") or {}).get("status")
            == "False"
        ),
        timeout=60,
        what="Approved=False again",
    )
    quota = researchers.get_json("resourcequota", "enclave-quota", "-n", project_name)
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    researchers.run("delete", "researchproject", project_name, "--timeout=60s")
