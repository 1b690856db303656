"""ResearchProject part 2 end to end: the identity group (FreeIPA test server, driven through
python-freeipa) and the Slurm account (real slurmdbd) follow the manifest, survive outages and drift."""

from __future__ import annotations

import datetime
import os
import signal
from typing import Any

import yaml

from localenv.runtime import RunDir
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.identity import ipa_admin, ipa_group
from support.operator import OperatorProcess
from support.projects import condition, wait_ready
from support.slurm import SlurmEnv
from support.wait import wait_for

YESTERDAY = (datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)).isoformat()


def _project(name: str, **slurm: Any) -> ProjectBuilder:
    builder = ProjectBuilder(name).deletion("Delete")
    builder._obj["spec"]["compute"] = {
        "slurm": {"parent": "root", "fairshare": 10, "limits": {"cpu": 64, "mem": "2Ti", "gpu": 4}, "qos": ["normal"],
                  **slurm}
    }  # fmt: skip
    return builder


def _ipa_members(freeipa: dict[str, Any], group: str) -> list[str]:
    return sorted((ipa_group(ipa_admin(freeipa), group) or {}).get("member_user") or [])


def _apply(cluster: Cluster, builder: ProjectBuilder) -> None:
    cluster.apply(yaml.safe_dump(builder.obj()))


def test_account_and_group_follow_the_members_and_limits(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, freeipa: dict[str, Any], project_name: str
) -> None:
    _apply(crds, _project(project_name).member("bob").member("carol", "viewer"))
    project = wait_ready(crds, project_name)
    for type_ in ("IdentityReady", "SchedulerReady"):
        assert condition(project, type_)["status"] == "True"
    row = slurm.account_row(project_name)
    assert row and row["Fairshare"] == "10" and row["ParentName"] == "root"
    assert "cpu=64" in row["GrpTRES"] and "mem=2T" in row["GrpTRES"] and "gres/gpu=4" in row["GrpTRES"]
    assert slurm.users(project_name) == {"alice", "bob"}, "viewers do not submit jobs"
    assert _ipa_members(freeipa, f"proj-{project_name}") == ["alice", "bob", "carol"]
    members = {m["user"]: m["backends"] for m in project["status"]["members"]}
    assert members["bob"]["scheduler"] == "Associated" and members["carol"]["identity"] == "Member"

    # bob leaves, dave joins with an access that already expired, the GPU limit changes.
    _apply(crds, _project(project_name, limits={"cpu": 64, "mem": "2Ti", "gpu": 8}).member("carol", "member")
           .member("dave", expires=YESTERDAY))  # fmt: skip
    wait_for(lambda: slurm.users(project_name) == {"alice", "carol"}, timeout=timeouts.READY, what="Slurm users")
    wait_for(lambda: "gres/gpu=8" in slurm.account_row(project_name)["GrpTRES"], timeout=timeouts.READY,
             what="the new GPU limit")  # fmt: skip
    wait_for(lambda: _ipa_members(freeipa, f"proj-{project_name}") == ["alice", "carol"], timeout=timeouts.READY,
             what="the FreeIPA group")  # fmt: skip
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    assert slurm.account_row(project_name) is None, "Delete removes the account"
    assert ipa_group(ipa_admin(freeipa), f"proj-{project_name}") is None


def test_unknown_users_are_reported_not_retried(
    crds: Cluster, operator: OperatorProcess, freeipa: dict[str, Any], project_name: str
) -> None:
    _apply(crds, _project(project_name).member("zoe-unknown"))
    obj = wait_for(
        lambda: (
            (o := crds.get_json("researchproject", project_name))
            and (condition(o, "IdentityReady") or {}).get("reason") == "MembersMissing"
            and o
        ),
        timeout=timeouts.READY,
        what="IdentityReady=False MembersMissing",
    )
    assert "zoe-unknown" in condition(obj, "IdentityReady")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert condition(obj, "StorageReady")["status"] == "True", "only the identity part is affected"
    assert _ipa_members(freeipa, f"proj-{project_name}") == ["alice"]
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_cordon_stops_submissions_and_retain_keeps_the_account(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project_name: str
) -> None:
    builder = _project(project_name).member("bob").deletion("Retain")
    _apply(crds, builder)
    wait_ready(crds, project_name)
    builder.valid_until(YESTERDAY)
    _apply(crds, builder)
    wait_for(lambda: slurm.account_row(project_name)["GrpSubmitJobs"] == "0", timeout=timeouts.READY,
             what="GrpSubmitJobs=0 while cordoned")  # fmt: skip
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    row = slurm.account_row(project_name)
    assert row is not None and row["GrpSubmitJobs"] == "0", "Retain keeps the account, closed to submissions"
    assert slurm.users(project_name) == set(), "Retain removes the users' associations"


def test_slurm_drift_is_repaired_and_an_outage_affects_only_its_part(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, run_dir: RunDir, project_name: str
) -> None:
    _apply(crds, _project(project_name).member("bob"))
    wait_ready(crds, project_name)
    slurm.sacctmgr("-i", "modify", "account", "where", f"name={project_name}", "set", "fairshare=99")
    wait_for(lambda: slurm.account_row(project_name)["Fairshare"] == "10", timeout=30, what="fairshare repaired")

    pid = int(run_dir.load()["services"]["slurmdbd"]["pid"])
    os.kill(pid, signal.SIGSTOP)  # slurmdbd hangs: sacctmgr calls time out
    try:
        obj = wait_for(
            lambda: (
                (o := crds.get_json("researchproject", project_name))
                and (condition(o, "SchedulerReady") or {}).get("reason") == "BackendUnavailable"
                and o
            ),
            timeout=60,
            what="SchedulerReady=False BackendUnavailable",
        )
        for type_ in ("NamespaceReady", "StorageReady", "IdentityReady"):
            assert condition(obj, type_)["status"] == "True", f"{type_} must not suffer from a Slurm outage"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_ready(crds, project_name)
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_sigkill_mid_reconcile_with_every_backend(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, freeipa: dict[str, Any], run_dir: RunDir,
    project_name: str,
) -> None:  # fmt: skip
    pid = int(run_dir.load()["services"]["slurmdbd"]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        _apply(crds, _project(project_name).member("bob"))
        wait_for(lambda: ipa_group(ipa_admin(freeipa), f"proj-{project_name}"), timeout=60, what="the identity group")
        operator.kill()  # the Slurm part hangs: the kill lands in the middle of the reconcile
    finally:
        os.kill(pid, signal.SIGCONT)
    operator.start()
    wait_ready(crds, project_name)
    assert slurm.users(project_name) == {"alice", "bob"}
    assert len([r for r in slurm.assoc_rows(project_name) if not r["User"]]) == 1, "exactly one account"
    crds.run("delete", "researchproject", project_name, "--timeout=60s")


def test_finding_8_2_deleting_a_project_that_is_a_members_default_account_completes(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project_name: str
) -> None:
    other = f"{project_name}-lab"
    assert slurm.sacctmgr("-i", "add", "account", other, "cluster=enclave").returncode == 0
    try:
        _apply(crds, _project(project_name).member("bob"))
        wait_ready(crds, project_name)
        assert slurm.sacctmgr("-i", "add", "user", "bob", f"account={other}", "cluster=enclave").returncode == 0
        assert slurm.sacctmgr("-i", "modify", "user", "bob", "set", f"defaultaccount={project_name}").returncode == 0
        crds.run("delete", "researchproject", project_name, f"--timeout={int(timeouts.DELETE)}s")
        assert slurm.assoc_rows(project_name) == []
        default = slurm.sacctmgr("-n", "-P", "show", "user", "bob", "format=DefaultAccount").stdout.strip()
        assert default == other, "bob keeps a default account he can submit with"
    finally:
        slurm.sacctmgr("-i", "delete", "user", "where", "name=bob", f"account={other}")
        slurm.sacctmgr("-i", "delete", "account", other)


def _event_times(cluster: Cluster, name: str, reason: str) -> list[datetime.datetime]:
    out = cluster.get_json("events", "-A", "--field-selector", f"involvedObject.name={name},reason={reason}")
    stamps = [e.get("lastTimestamp") or e.get("eventTime") for e in (out or {"items": []})["items"]]
    return sorted(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps if s)


def test_finding_8_2_a_blocked_deletion_backs_off_and_shows_in_conditions(
    crds: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project_name: str
) -> None:
    _apply(crds, _project(project_name).member("bob"))
    wait_ready(crds, project_name)
    slurm.stop_dbd()
    try:
        crds.run("delete", "researchproject", project_name, "--wait=false")
        blocked = wait_for(
            lambda: (
                (o := crds.get_json("researchproject", project_name))
                and (condition(o, "SchedulerReady") or {}).get("status") == "False"
                and (condition(o, "Ready") or {}).get("reason") == "Deleting"
                and o
            ),
            timeout=timeouts.READY,
            what="the blocked deletion in the conditions",
        )
        assert "slurmdbd unreachable" in condition(blocked, "SchedulerReady")["message"]
        assert "deletion waits" in condition(blocked, "Ready")["message"]
        times = wait_for(
            lambda: (t := _event_times(crds, project_name, "CannotDeleteSlurmAccount")) and len(t) >= 4 and t,
            timeout=90,
            what="four failed deletion attempts",
        )
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        # Delays 2, 4, then the cap (resyncSeconds 5 here); a fixed delay would give equal gaps. Event times
        # have one-second resolution, and each attempt itself takes about the same time.
        assert gaps[2] >= gaps[0] + 2, f"retries must back off, gaps between attempts: {gaps}"
    finally:
        slurm.restart()
    wait_for(lambda: crds.get_json("researchproject", project_name) is None, timeout=120, what="deletion to finish")
    assert slurm.assoc_rows(project_name) == []
