"""Issue 8, "done means": projects created and deleted while operator processes are SIGKILLed at random
moments. Checked directly against MinIO, Slurm and the FreeIPA test server: no duplicate while they
exist, no orphan after they are gone, no finalizer left behind.

Two processes run (as in production): a killed one is restarted in place at once (same pod id), so the
webhooks stay reachable through the other and reconciling moves between them. CHAOS_SEED reproduces a
run's choices (which projects, which process, when); CHAOS_PROJECTS changes the count.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave_operator.backends import s3_minio
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.identity import ipa_admin, ipa_group
from support.operator import OperatorProcess, operator_process
from support.projects import condition
from support.slurm import SlurmEnv
from support.wait import wait_for

SEED = int(os.environ.get("CHAOS_SEED", "4242"))
PROJECTS = int(os.environ.get("CHAOS_PROJECTS", "50"))
KILL_EVERY_S = (4.0, 12.0)
"""A process is SIGKILLed after a random pause in this range, seconds: a moment inside some reconcile (each takes
seconds). Every 1-3 s, a process resuming 50 projects was killed before its resumes got anywhere (a crash loop,
which kubelet's back-off would slow down anyway); 50 projects on a quiet 2-core machine: Ready in 113 s with 14
SIGKILLs, all gone after 213 s with 26."""
RESUMED = "Resuming operations"
CONVERGE_S = 420.0
"""For all projects to become Ready (or all to be gone), under kills, on a loaded 2-core machine."""


pytestmark = pytest.mark.timeout(2 * CONVERGE_S + 120)


def _project(name: str, rng: random.Random) -> dict[str, Any]:
    builder = ProjectBuilder(name).member(rng.choice(["bob", "carol"]), rng.choice(["member", "viewer"]))
    builder.deletion("Retain" if rng.random() < 0.2 else "Delete")
    obj = builder.obj()
    if rng.random() < 0.5:
        obj["spec"]["compute"] = {"slurm": {"limits": {"cpu": 4, "mem": "8Gi", "gpu": 0}}}
    return obj


def _retrying(cluster: Cluster, *args: str, manifest: str | None = None) -> None:
    """A kubectl call that a webhook call in flight on a killed process may fail once; tried again."""
    for _ in range(5):
        if cluster.run(*args, input=manifest, check=False).returncode == 0:
            return
        time.sleep(1)
    cluster.run(*args, input=manifest)


class Killer:
    """SIGKILLs one of the processes at random moments and restarts it in place at once (not waiting for it
    to come up, so the next kill may hit it while it starts)."""

    def __init__(self, processes: list[OperatorProcess], rng: random.Random) -> None:
        self.processes, self.rng, self.kills = processes, rng, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(*KILL_EVERY_S)):
                victim = self.rng.choice(self.processes)
                # One pod at a time, as a PodDisruptionBudget allows: the others must be serving first.
                wait_for(lambda v=victim: all(p.healthy() for p in self.processes if p is not v),
                         timeout=timeouts.OPERATOR_START, what="the other operator process to serve")  # fmt: skip
                victim.kill()
                victim.wait_until_live = False  # the next kill may hit it while it starts: also a random moment
                victim.start()
                victim.wait_until_live = True
                self.kills += 1
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        if self.error is not None:
            raise self.error


def _all(cluster: Cluster, names: list[str]) -> dict[str, dict[str, Any]]:
    items = (cluster.get_json("researchprojects") or {"items": []})["items"]
    return {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in names}


def _all_ready(cluster: Cluster, names: list[str]) -> bool:
    found = _all(cluster, names)
    return len(found) == len(names) and all((condition(o, "Ready") or {}).get("status") == "True"
                                            for o in found.values())  # fmt: skip


def test_chaos_create_and_delete_under_random_sigkills_leaves_no_duplicate_no_orphan(
    crds: Cluster, operator: OperatorProcess, operator_dir: Path, operator_config: Path, minio: dict[str, Any],
    freeipa: dict[str, Any], slurm: SlurmEnv, s3: s3_minio.S3Clients, webhook_ports: tuple[int, int],
    operator_secrets: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    rng = random.Random(SEED)
    objects = [_project(f"ch{SEED % 1000}-{i:03d}", rng) for i in range(PROJECTS)]
    names = [o["metadata"]["name"] for o in objects]
    policy = {o["metadata"]["name"]: o["spec"]["deletionPolicy"] for o in objects}
    with_slurm = {o["metadata"]["name"] for o in objects if "compute" in o["spec"]}
    second = operator_process(crds, operator_dir, operator_config, minio, operator_secrets, tmp_path / "operator-b.log",
                              pod_id="operator-b", webhook_port=webhook_ports[1])  # fmt: skip
    second.start()
    try:
        started = time.monotonic()
        with Killer([operator, second], rng) as killer:
            for start in range(0, PROJECTS, 10):
                batch = "---\n".join(yaml.safe_dump(o) for o in objects[start:start + 10])
                _retrying(crds, "apply", "-f", "-", manifest=batch)
            wait_for(lambda: _all_ready(crds, names), timeout=CONVERGE_S, what="every project Ready under kills",
                     interval=2)  # fmt: skip
            ready_at, ready_kills = time.monotonic() - started, killer.kills
            _no_duplicates(crds, s3, slurm, freeipa, names, with_slurm)
            _retrying(crds, "delete", "researchprojects", "--wait=false", "--ignore-not-found", *names)
            wait_for(lambda: not _all(crds, names), timeout=CONVERGE_S, what="every project gone under kills",
                     interval=2)  # fmt: skip
        print(f"chaos seed {SEED}: {PROJECTS} projects Ready in {ready_at:.0f}s ({ready_kills} SIGKILLs), "
              f"all gone after {time.monotonic() - started:.0f}s ({killer.kills} SIGKILLs)")
        assert killer.kills >= 10, "the run must actually kill processes"
    finally:
        mark = len(operator.log_text())
        operator.stop()
        operator.start()  # fresh and younger than the second process: it waits until that one is gone
        second.stop()
    wait_for(lambda: RESUMED in operator.log_text()[mark:], timeout=60, what="the session's operator to take over")
    _no_orphans(crds, s3, slurm, freeipa, names, policy, with_slurm)


def _no_duplicates(crds: Cluster, s3: s3_minio.S3Clients, slurm: SlurmEnv, freeipa: dict[str, Any],
                   names: list[str], with_slurm: set[str]) -> None:  # fmt: skip
    buckets = [b.name for b in s3.s3.list_buckets()]
    namespaces = (crds.get_json("namespaces", "-l", "enclave.io/project") or {"items": []})["items"]
    users = set(json.loads(s3.admin.user_list()))
    admin = ipa_admin(freeipa)
    for name in names:
        assert buckets.count(name) == 1, f"{name}: buckets {[b for b in buckets if b.startswith(name)]}"
        owned = [n for n in namespaces if n["metadata"]["labels"].get("enclave.io/project") == name]
        assert len(owned) == 1, f"{name}: {len(owned)} namespaces"
        assert f"{name}-app" in users, f"{name}: no project credential"
        assert ipa_group(admin, f"proj-{name}") is not None, f"{name}: no identity group"
        if name in with_slurm:
            rows = [r for r in slurm.assoc_rows(name) if not r["User"]]
            assert len(rows) == 1, f"{name}: {len(rows)} Slurm account rows"


def _no_orphans(crds: Cluster, s3: s3_minio.S3Clients, slurm: SlurmEnv, freeipa: dict[str, Any], names: list[str],
                policy: dict[str, str], with_slurm: set[str]) -> None:  # fmt: skip
    buckets = {b.name for b in s3.s3.list_buckets()}
    users = set(json.loads(s3.admin.user_list()))
    groups = set(json.loads(s3.admin.group_list() or "[]"))
    policies = set(json.loads(s3.admin.policy_list()))
    wait_for(lambda: not [n for n in (crds.get_json("namespaces", "-l", "enclave.io/project") or {"items": []})["items"]
                          if n["metadata"]["labels"]["enclave.io/project"] in names],
             timeout=timeouts.DELETE, what="the namespaces to go")  # fmt: skip
    admin = ipa_admin(freeipa)
    for name in names:
        assert f"{name}-app" not in users, f"{name}: project credential left"
        assert not {f"proj-{name}-rw", f"proj-{name}-ro"} & groups, f"{name}: MinIO groups left"
        assert not {f"{name}-rw", f"{name}-ro"} & policies, f"{name}: bucket policies left"
        assert ipa_group(admin, f"proj-{name}") is None, f"{name}: identity group left"
        retained = policy[name] == "Retain"
        assert (name in buckets) == retained, f"{name}: bucket {'lost' if retained else 'left'} ({policy[name]})"
        if name in with_slurm:
            assert slurm.users(name) == set(), f"{name}: Slurm users left"
            record = slurm.description(name)
            assert (record is not None) == retained, f"{name}: Slurm account {'lost' if retained else 'left'}"
    for name in buckets & {n for n in names if policy[n] == "Retain"}:
        s3_minio_remove(s3, name)
        if name in with_slurm:
            slurm.sacctmgr("-i", "delete", "account", "where", f"name={name}")


def s3_minio_remove(s3: s3_minio.S3Clients, bucket: str) -> None:
    """Clean up a retained (empty) bucket after the test."""
    s3.s3.remove_bucket(bucket)
