"""Issue 8, findings 1 and 3, and issue 14.8 end to end: names that collide with what exists are refused at
admission; a project that got past admission anyway (created while the webhook was down) writes nothing
into a namespace it does not own, its members gain no access there, and deleting it does not hang; a
retained bucket is taken over only with spec.adopt."""

from __future__ import annotations

import io
from typing import Any

import yaml

from enclave_operator.backends import s3_minio
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.identity import ipa_admin
from support.operator import OperatorProcess, Webhooks, webhook_down
from support.projects import condition, events_for, wait_gone, wait_ready
from support.slurm import SlurmEnv
from support.wait import wait_for


def _apply(cluster: Cluster, obj: dict[str, Any]) -> tuple[int, str]:
    result = cluster.run("apply", "-f", "-", input=yaml.safe_dump(obj), check=False)
    return result.returncode, result.stderr + result.stdout


def _can_i(cluster: Cluster, user: str, namespace: str, *what: str) -> str:
    result = cluster.run("auth", "can-i", *what, "-n", namespace, f"--as={user}", check=False)
    return result.stdout.strip()


def test_finding_8_1_names_that_collide_are_refused_at_admission(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, freeipa: dict[str, Any], slurm: SlurmEnv,
    project_name: str,
) -> None:  # fmt: skip
    for reserved in ("kube-public", "kube-system", "default", "enclave-ingest"):
        code, out = _apply(crds, ProjectBuilder(reserved).obj())
        assert code != 0 and "metadata.name: " in out and "reserved" in out, out

    taken = {
        "namespace": f"{project_name}-ns",
        "bucket": f"{project_name}-bk",
        "group": f"{project_name}-gr",
        "account": f"{project_name}-sa",
    }
    crds.run("create", "namespace", taken["namespace"])
    s3.s3.make_bucket(taken["bucket"])
    ipa_admin(freeipa).group_add(f"proj-{taken['group']}", o_description="made by hand")
    assert slurm.sacctmgr("-i", "add", "account", taken["account"], "cluster=enclave").returncode == 0
    try:
        for what, name in taken.items():
            builder = ProjectBuilder(name)
            obj = builder.obj()
            obj["spec"]["compute"] = {"slurm": {"limits": {"cpu": 4, "mem": "8Gi", "gpu": 0}}}
            code, out = _apply(crds, obj)
            assert code != 0, f"a project colliding with an existing {what} was accepted"
            assert f"metadata.name: {name} collides" in out and "belongs to no enclave project" in out, out
            assert crds.get_json("researchproject", name) is None
    finally:
        crds.run("delete", "namespace", taken["namespace"], "--wait=false")
        s3.s3.remove_bucket(taken["bucket"])
        ipa_admin(freeipa).group_del(f"proj-{taken['group']}")
        slurm.sacctmgr("-i", "delete", "account", taken["account"])


def test_finding_8_1_and_3_a_project_admitted_while_the_webhook_was_down_writes_nothing_there(
    crds: Cluster, operator: OperatorProcess, webhooks: Webhooks, project_name: str
) -> None:
    """kube-public (reserved) and a team's own namespace: no member gains any access, deletion completes."""
    foreign = project_name
    crds.run("create", "namespace", foreign)
    crds.run("label", "namespace", foreign, "team=radiology-it")
    names = ("kube-public", foreign)
    with webhook_down(webhooks):  # as admitted by an older version, or while an admin had removed the webhooks
        for name in names:
            crds.apply(yaml.safe_dump(ProjectBuilder(name).member("bob").deletion("Delete").obj()))
    try:
        for name in names:
            stalled = wait_for(
                lambda n=name: (
                    (o := crds.get_json("researchproject", n))
                    and (condition(o, "Stalled") or {}).get("status") == "True"
                    and o
                ),
                timeout=timeouts.READY,
                what=f"{name} Stalled",
            )
            assert condition(stalled, "Ready")["status"] == "False"
            assert "reserved" in condition(stalled, "Stalled")["message"] or (
                condition(stalled, "NamespaceReady")["reason"] == "NotOwned"
            ), stalled["status"]
            for user in ("alice", "bob"):
                for verb in (("list", "secrets"), ("create", "pods"), ("get", "configmaps")):
                    assert _can_i(crds, user, name, *verb) == "no", f"{user} may {verb} in {name}"
            bindings = crds.get_json("rolebindings", "-n", name, "-l", f"enclave.io/project={name}")
            assert bindings is not None and bindings["items"] == []
            for kind in ("resourcequota", "limitrange", "networkpolicy", "secret"):
                found = crds.get_json(kind, "-n", name, "-l", f"enclave.io/project={name}")
                assert found is not None and found["items"] == [], f"{kind} written into {name}"
        for name in names:
            crds.run("delete", "researchproject", name, f"--timeout={int(timeouts.DELETE)}s")
            wait_gone(crds, "researchproject", name)
        assert crds.get_json("namespace", foreign)["metadata"].get("deletionTimestamp") is None, "left alone"
        assert crds.get_json("namespace", "kube-public") is not None
    finally:
        crds.run("delete", "namespace", foreign, "--wait=false", check=False)


def test_finding_14_8_a_retained_bucket_is_adopted_only_when_asked(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, project_name: str
) -> None:
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).obj()))  # deletionPolicy Retain
    wait_ready(crds, project_name)
    s3.s3.put_object(project_name, "results.csv", io.BytesIO(b"kept"), 4)
    crds.run("delete", "researchproject", project_name, f"--timeout={int(timeouts.DELETE)}s")
    wait_gone(crds, "namespace", project_name)

    code, out = _apply(crds, ProjectBuilder(project_name).obj())
    assert code != 0 and f"bucket {project_name} was retained from an earlier project" in out, out
    assert "spec.adopt: [Bucket]" in out

    obj = ProjectBuilder(project_name).deletion("Delete").obj()
    obj["spec"]["adopt"] = ["Bucket"]
    code, out = _apply(crds, obj)
    assert code == 0, out
    wait_ready(crds, project_name)
    adopted = [m for t, r, m in events_for(crds, project_name) if (t, r) == ("Normal", "Adopted")]
    assert any(f"took over bucket {project_name}" in m for m in adopted), adopted
    assert s3.s3.get_object(project_name, "results.csv").read() == b"kept"
    crds.run("delete", "researchproject", project_name, f"--timeout={int(timeouts.DELETE)}s")
    assert not s3.s3.bucket_exists(project_name)
