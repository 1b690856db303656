"""ResearchProject part 1 end to end: the Kubernetes space, S3 access, membership, governance dates,
drift repair and isolation — through kubectl against the operator, real API server and real MinIO."""

from __future__ import annotations

import datetime
import io
import json
import time
from typing import Any

import yaml

from enclave_operator.backends import s3_minio
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.identity import ipa_admin, ipa_group
from support.operator import OperatorProcess
from support.projects import condition, events_for, wait_gone, wait_ready
from support.s3users import can, client_for, project_credential
from support.wait import wait_for

TODAY = datetime.datetime.now(datetime.UTC).date()
YESTERDAY = (TODAY - datetime.timedelta(days=1)).isoformat()


def _bindings(cluster: Cluster, ns: str) -> dict[str, tuple[str, list[str]]]:
    out = cluster.get_json("rolebindings", "-n", ns, "-l", "enclave.io/project") or {"items": []}
    return {
        b["metadata"]["name"]: (b["roleRef"]["name"], sorted(s["name"] for s in b.get("subjects") or []))
        for b in out["items"]
    }


def _group_members(s3: s3_minio.S3Clients, group: str) -> list[str]:
    try:
        return sorted(json.loads(s3.admin.group_info(group)).get("members") or [])
    except Exception:  # noqa: BLE001 - a missing group has no members
        return []


def _ipa_members(freeipa: dict[str, Any], group: str) -> list[str]:
    found = ipa_group(ipa_admin(freeipa), group)
    return sorted((found or {}).get("member_user") or [])


def _until(check: Any, what: str, timeout: float = timeouts.READY) -> Any:
    return wait_for(check, timeout=timeout, what=what)


def _apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.apply(yaml.safe_dump(obj))


def test_space_quota_limits_network_and_bindings(crds: Cluster, operator: OperatorProcess, project_name: str) -> None:
    obj = ProjectBuilder(project_name).member("bob").member("carol", "viewer").deletion("Delete").obj()
    obj["spec"]["compute"] = {"kubernetes": {"cpu": "4", "memory": "8Gi", "gpu": 1}}
    obj["spec"]["network"] = {"egress": [{"cidr": "10.20.0.0/16", "ports": [443]}]}
    _apply(crds, obj)
    wait_ready(crds, project_name)
    ns = crds.get_json("namespace", project_name)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = crds.get_json("resourcequota", "enclave-quota", "-n", project_name)
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "1" and quota["spec"]["hard"]["limits.cpu"] == "4"
    assert crds.get_json("limitrange", "enclave-limits", "-n", project_name)
    policies = {p["metadata"]["name"] for p in crds.get_json("networkpolicies", "-n", project_name)["items"]}
    assert policies == {"enclave-default-deny", "enclave-allow-same-namespace", "enclave-allow-dns",
                        "enclave-allow-egress"}  # fmt: skip
    assert _bindings(crds, project_name) == {
        "enclave-owner": ("enclave-project-owner", ["alice"]),
        "enclave-member": ("enclave-project-member", ["bob"]),
        "enclave-viewer": ("enclave-project-viewer", ["carol"]),
        "enclave-project-group": ("enclave-project-viewer", [f"proj-{project_name}"]),
    }
    # Real RBAC: the bindings give exactly the shipped roles' rights.
    can_i = lambda user, verb, res: crds.run(  # noqa: E731
        "auth", "can-i", verb, res, "-n", project_name, f"--as={user}", check=False
    ).stdout.strip()
    assert can_i("bob", "create", "jobs.batch") == "yes"
    assert can_i("carol", "create", "jobs.batch") == "no"
    assert can_i("carol", "list", "pods") == "yes"
    assert can_i("eve", "list", "pods") == "no"

    # Quota change is carried through.
    obj["spec"]["compute"]["kubernetes"]["cpu"] = "6"
    _apply(crds, obj)
    _until(
        lambda: (
            crds.get_json("resourcequota", "enclave-quota", "-n", project_name)["spec"]["hard"]["limits.cpu"] == "6"
        ),
        "the new CPU quota",
    )
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_membership_add_remove_expiry_everywhere(
    crds: Cluster,
    operator: OperatorProcess,
    s3: s3_minio.S3Clients,
    people: dict[str, str],
    freeipa: dict[str, Any],
    project_name: str,
) -> None:
    group = f"proj-{project_name}"
    obj = ProjectBuilder(project_name).member("bob").deletion("Delete").obj()
    _apply(crds, obj)
    wait_ready(crds, project_name)
    assert _group_members(s3, f"{group}-rw") == ["alice", "bob"]
    status = {m["user"]: m for m in crds.get_json("researchproject", project_name)["status"]["members"]}
    assert status["bob"]["backends"] == {"kubernetes": "member", "identity": "Member", "storage": "ReadWrite"}
    assert _ipa_members(freeipa, group) == ["alice", "bob"]

    # bob leaves, carol joins as a viewer, dave's access already expired.
    obj = (
        ProjectBuilder(project_name)
        .member("carol", "viewer")
        .member("dave", expires=YESTERDAY)
        .deletion("Delete")
        .obj()
    )
    _apply(crds, obj)
    _until(lambda: _group_members(s3, f"{group}-ro") == ["carol"] and _group_members(s3, f"{group}-rw") == ["alice"],
           "MinIO groups to follow the members")  # fmt: skip
    _until(lambda: _ipa_members(freeipa, group) == ["alice", "carol"], "the FreeIPA group to follow the members")
    bindings = _bindings(crds, project_name)
    assert "enclave-member" not in bindings, "a role nobody holds has no binding"
    assert bindings["enclave-viewer"][1] == ["carol"]
    project = wait_ready(crds, project_name)
    status = {m["user"]: m for m in project["status"]["members"]}
    assert status["dave"]["state"] == "Expired" and status["dave"]["backends"]["kubernetes"] == "None"
    assert project["status"]["memberCount"] == 2
    assert crds.run("auth", "can-i", "list", "pods", "-n", project_name, "--as=bob", check=False).stdout.strip() == "no"
    # Members reach their own bucket with their own identity, by role.
    s3.s3.put_object(project_name, "probe.txt", io.BytesIO(b"x"), 1)
    carol = client_for(operator.minio, "carol", people["carol"])
    assert can("read", carol, project_name) and not can("write", carol, project_name)
    assert can("write", client_for(operator.minio, "alice", people["alice"]), project_name)
    assert not can("list", client_for(operator.minio, "bob", people["bob"]), project_name)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    assert _group_members(s3, f"{group}-rw") == [] and _group_members(s3, f"{group}-ro") == []
    assert ipa_group(ipa_admin(freeipa), group) is None, "the identity group goes with the project"


def test_cordon_when_valid_until_passes_and_lift_when_extended(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, people: dict[str, str], project_name: str
) -> None:
    obj = ProjectBuilder(project_name).member("bob").deletion("Delete").obj()
    _apply(crds, obj)
    wait_ready(crds, project_name)
    s3.s3.put_object(project_name, "probe.txt", io.BytesIO(b"x"), 1)
    app = client_for(operator.minio, *project_credential(crds, project_name))
    assert can("write", app, project_name)

    obj["spec"]["validUntil"] = YESTERDAY  # the approval ended early
    _apply(crds, obj)
    cordoned = _until(
        lambda: (
            (o := crds.get_json("researchproject", project_name))
            and (condition(o, "Cordoned") or {}).get("status") == "True"
            and condition(o, "Ready")["status"] == "True"
            and o
        ),
        "Cordoned=True and Ready",
    )
    assert YESTERDAY in condition(cordoned, "Cordoned")["message"]
    assert {m["state"] for m in cordoned["status"]["members"]} == {"Cordoned"}
    assert set(_bindings(crds, project_name)) == {"enclave-viewer", "enclave-project-group"}
    assert crds.get_json("resourcequota", "enclave-quota", "-n", project_name)["spec"]["hard"]["pods"] == "0"
    assert can("read", app, project_name) and not can("write", app, project_name), "credential is read-only"
    bob = client_for(operator.minio, "bob", people["bob"])
    assert can("read", bob, project_name) and not can("write", bob, project_name)
    assert "CordonedProject" in {r for _, r, _ in events_for(crds, project_name)}
    table = crds.run("get", "researchproject", project_name).stdout
    assert "True" in table.splitlines()[1].split()[4], table

    obj["spec"]["validUntil"] = "2099-12-31"
    _apply(crds, obj)
    _until(lambda: can("write", app, project_name) and can("write", bob, project_name), "write access back")
    _until(
        lambda: condition(crds.get_json("researchproject", project_name), "Cordoned")["status"] == "False",
        "Cordoned=False",
    )
    assert "enclave-member" in _bindings(crds, project_name)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_drift_is_repaired_by_the_timer_and_a_quiet_resync_writes_nothing(
    crds: Cluster,
    operator: OperatorProcess,
    s3: s3_minio.S3Clients,
    people: dict[str, str],
    freeipa: dict[str, Any],
    project_name: str,
) -> None:
    _apply(crds, ProjectBuilder(project_name).member("bob").deletion("Delete").obj())
    before = wait_ready(crds, project_name)
    writes = operator.backend_writes()
    rv = before["metadata"]["resourceVersion"]
    # Two resync periods (5 s each in the test configuration) with nothing changed: no write at all.
    time.sleep(11)
    assert operator.backend_writes() == writes, "a resync where nothing changed wrote to a backend"
    assert crds.get_json("researchproject", project_name)["metadata"]["resourceVersion"] == rv

    # Hand-made changes in both backends, nobody touches the project object.
    crds.run("delete", "rolebinding", "enclave-owner", "-n", project_name)
    s3.admin.detach_policy([f"{project_name}-rw"], group=f"proj-{project_name}-rw")
    s3.admin.group_remove(f"proj-{project_name}-rw", ["bob"])
    ipa_admin(freeipa).group_remove_member(f"proj-{project_name}", o_user=["bob"])
    _until(lambda: "enclave-owner" in _bindings(crds, project_name), "the RoleBinding to be repaired", 30)

    def group_repaired() -> bool:
        info = json.loads(s3.admin.group_info(f"proj-{project_name}-rw"))
        return sorted(info.get("members") or []) == ["alice", "bob"] and info.get("policy") == f"{project_name}-rw"

    _until(group_repaired, "the group's members and policy to be repaired", 30)
    _until(lambda: _ipa_members(freeipa, f"proj-{project_name}") == ["alice", "bob"], "the FreeIPA group repaired", 30)
    def repairs() -> str:
        return " ".join(m for _, r, m in events_for(crds, project_name) if r == "Updated")

    _until(
        lambda: all(f"repaired {noun}:" in repairs() for noun in ("rolebinding", "group", "identitygroup")),
        "events saying what was repaired",
    )
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_project_credentials_cannot_touch_another_projects_bucket(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, people: dict[str, str], project_name: str
) -> None:
    a, b = f"{project_name}-a", f"{project_name}-b"
    for name in (a, b):
        _apply(crds, ProjectBuilder(name).deletion("Delete").obj())
    for name in (a, b):
        wait_ready(crds, name)
        s3.s3.put_object(name, "probe.txt", io.BytesIO(b"x"), 1)
    a_app = client_for(operator.minio, *project_credential(crds, a))
    for action in ("list", "read", "write"):
        assert can(action, a_app, a), f"project A's credential must {action} its own bucket"
        assert not can(action, a_app, b), f"project A's credential could {action} project B's bucket"
    assert [x.name for x in a_app.list_buckets()] in ([], [a]), "no other bucket is even visible"
    alice = client_for(operator.minio, "alice", people["alice"])
    assert can("write", alice, a)  # alice owns both, through group membership
    for name in (a, b):
        crds.run("delete", "researchproject", name, "--timeout=60s")


def test_retain_revokes_access_but_keeps_data(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, people: dict[str, str], project_name: str
) -> None:
    _apply(crds, ProjectBuilder(project_name).member("bob").obj())  # Retain is the default
    wait_ready(crds, project_name)
    s3.s3.put_object(project_name, "probe.txt", io.BytesIO(b"kept"), 4)
    access, _ = project_credential(crds, project_name)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    wait_gone(crds, "namespace", project_name)
    assert s3.s3.get_object(project_name, "probe.txt").read() == b"kept"
    users = json.loads(s3.admin.user_list())
    assert access not in users, "the project credential is revoked"
    assert not can("read", client_for(operator.minio, "bob", people["bob"]), project_name)
