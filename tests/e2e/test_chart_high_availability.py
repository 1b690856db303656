"""High availability as the Helm chart deploys it (issue 11.2): two operator pods of the chart's Deployment on
two nodes, behind the chart's Service, one reconciling (kopf peering, oldest first).

A control plane of its own with the real kube-scheduler (it places the pods by the chart's anti-affinity) and
two stand-in kubelets (podrunner, one Node each). The active pod's container is SIGKILLed while creates go on:
the API server keeps reaching the webhooks through the Service (the EndpointSlice drops the dead endpoint),
the other pod resumes reconciling once the killed one's peering record is gone (its container restarts in
place with the same POD_ID, younger, so it becomes the standby), and a project created after the kill
becomes Ready. Figures are printed; bounds are the peering lifetime plus the named timeouts.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv import environment
from localenv import helm as chart
from localenv.plane import start_plane
from localenv.podrunner import container_pid, podrunner_service
from localenv.runtime import REPO_ROOT, RunDir
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster, kubectl_binary
from support.helm import Helm, go_tool
from support.projects import ContinuousCreates, wait_ready
from support.wait import wait_for

RELEASE, NAMESPACE, INGEST = chart.RELEASE, chart.NAMESPACE, chart.INGEST_NAMESPACE
NODES = ("node-a", "node-b")
LIFETIME_S = 10
"""config.peering.lifetimeSeconds: how long a silent pod's record counts as alive (the fail-over bound)."""
RESUMED = "Resuming operations"
"""kopf logs this when the peering lets a paused process reconcile."""
PAUSED = "Pausing operations"
"""kopf logs this when the peering shows an older live peer; a process with peering starts paused."""


@pytest.fixture(scope="module")
def ha_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    run = RunDir(tmp_path_factory.mktemp("chart-ha-plane"))
    try:
        yield run
    finally:
        run.stop_all()


@pytest.fixture(scope="module")
def plane(ha_run: RunDir) -> Cluster:
    environment.build(["plane"])
    facts = start_plane(ha_run, controller_manager=True, scheduler=True)
    cluster = Cluster(Path(facts["kubeconfig"]), kubectl_binary())
    for node in NODES:
        ha_run.start(podrunner_service(ha_run, cluster.kubeconfig, [NAMESPACE, INGEST], REPO_ROOT / ".venv" / "bin",
                                       node=node, schedule=False))  # fmt: skip
    return cluster


@pytest.fixture(scope="module")
def release(plane: Cluster, minio: dict[str, Any], freeipa: dict[str, Any], orthanc: dict[str, Any]) -> Cluster:
    helm = Helm(go_tool("helm"), plane.kubeconfig)
    values = chart.local_values(minio, freeipa, orthanc, steward_groups=["enclave:data-stewards"], resync_seconds=30,
                                poll_seconds=1, replicas=2)  # fmt: skip
    values["config"]["peering"] = {"lifetimeSeconds": LIFETIME_S}
    chart.prepare(lambda *a: plane.run(*a), minio, freeipa)
    chart.install(lambda *a: plane.run(*a), helm, values)
    return plane


def _when(value: Any, check: Any) -> Any:
    return value if check(value) else None


def _pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods = (cluster.get_json("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}") or {})["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _peers(cluster: Cluster) -> dict[str, int]:
    """Live records of the chart's ClusterKopfPeering: pod name (POD_ID) → priority."""
    status = (cluster.get_json("clusterkopfpeering", "enclave-operator") or {}).get("status") or {}
    now = datetime.datetime.now(datetime.UTC)
    alive = {}
    for peer, record in status.items():
        if not isinstance(record, dict):
            continue
        seen = datetime.datetime.fromisoformat(record["lastseen"])
        if seen + datetime.timedelta(seconds=record["lifetime"]) > now:
            alive[peer] = int(record["priority"])
    return alive


def _endpoints(cluster: Cluster) -> set[str]:
    slices = cluster.get_json("endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={RELEASE}")
    return {address for s in (slices or {}).get("items", []) for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for address in e["addresses"]}  # fmt: skip


def _log(run: RunDir, pod: str) -> str:
    path = run.logs / "pods" / f"{pod}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _active(run: RunDir, pod: str, since: int = 0) -> bool:
    """Whether the pod's latest peering decision (in its log from offset `since`) lets it reconcile.

    The latest, not any: a pod whose first peering read comes before the other pod's first record (both start
    together) resumes until it sees that record, then pauses: kopf peering's documented start-up overlap,
    which idempotent reconciles tolerate (docs/operations.md).
    """
    log = _log(run, pod)[since:]
    return log.rfind(RESUMED) > log.rfind(PAUSED)


def test_two_pods_on_two_nodes_one_reconciles(release: Cluster, ha_run: RunDir) -> None:
    pods = wait_for(lambda: _when(_pods(release), lambda p: len(p) == 2 and all(map(_ready, p))),
                    timeout=timeouts.READY * 2, what="two ready operator pods")  # fmt: skip
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(NODES), "the anti-affinity spreads them"
    assert _endpoints(release) == {p["status"]["podIP"] for p in pods}, "both serve the webhooks"
    peers = wait_for(lambda: _when(_peers(release), lambda p: len(p) == 2), timeout=30, what="both pods to peer")
    assert set(peers) == {p["metadata"]["name"] for p in pods}, "POD_ID is the pod's name"
    leader = max(peers, key=peers.__getitem__)
    standby = next(name for name in peers if name != leader)
    wait_for(lambda: _active(ha_run, leader), timeout=30, what="the older pod to reconcile")
    wait_for(lambda: not _active(ha_run, standby), timeout=LIFETIME_S, what="the younger pod to pause")
    time.sleep(3)  # two keep-alives of the older pod later, the younger one still waits
    assert _active(ha_run, leader), "the older pod keeps reconciling"
    assert not _active(ha_run, standby), "the younger pod waits while the older one runs"


def test_killing_the_active_pod_keeps_admission_and_hands_over_reconciling(
    release: Cluster, ha_run: RunDir
) -> None:
    peers = _peers(release)
    leader = max(peers, key=peers.__getitem__)
    standby = next(name for name in peers if name != leader)
    pods = {p["metadata"]["name"]: p for p in _pods(release)}
    dead_ip = pods[leader]["status"]["podIP"]
    pid = container_pid(ha_run.path / "pods", pods[leader]["metadata"]["uid"])
    assert pid is not None

    with ContinuousCreates(release, "ha-dry") as creates:
        time.sleep(2)
        killed_at = time.monotonic()
        restarted_from = len(_log(ha_run, leader))  # the container's log goes on in the same file
        os.kill(pid, signal.SIGKILL)  # as by an OOM kill: no graceful exit, its peering record stays behind
        wait_for(lambda: dead_ip not in _endpoints(release), timeout=30, what="the dead endpoint to be dropped")
        dropped_at = time.monotonic()
        # A project created now is reconciled by the standby once the peering lets it.
        name = "ha-after-kill"
        release.apply(yaml.safe_dump(ProjectBuilder(name).deletion("Delete").obj()))
        wait_for(lambda: _active(ha_run, standby), timeout=LIFETIME_S + timeouts.READY,
                 what="the standby to resume reconciling")  # fmt: skip
        resumed_at = time.monotonic()
        wait_ready(release, name, timeout=timeouts.READY)
        ready_at = time.monotonic()
        time.sleep(3)
    results = creates.results
    print(f"\nHA via the chart: dead endpoint dropped {dropped_at - killed_at:.1f}s after the kill; standby "
          f"resumed after {resumed_at - killed_at:.1f}s (peering lifetime {LIFETIME_S}s); the new project Ready "
          f"{ready_at - killed_at:.1f}s after the kill; {len(results)} admission calls, "
          f"{sum(1 for r in results if r[1])} refused")  # fmt: skip

    before = [r for r in results if r[0] < killed_at]
    after = [r for r in results if r[0] > dropped_at + 1]
    assert before and all(code == 0 for _, code, _ in before), before
    assert len(after) >= 3, f"too few creates after the endpoint was dropped: {after}"
    assert not [r for r in after if r[1]], f"creates refused with a live operator pod behind the Service: {after}"
    # Only calls routed to the dead pod before its endpoint went may fail, and only by its absence.
    assert all("webhook" in err for _, code, err in results if code), [r for r in results if r[1]]
    assert resumed_at - killed_at <= LIFETIME_S + timeouts.READY
    # The killed pod's container restarted in place (same POD_ID), younger: now it is the standby.
    restarted = wait_for(lambda: _when(_peers(release), lambda p: len(p) == 2 and p[leader] < p[standby]),
                         timeout=60, what="the restarted pod to rejoin as the standby")  # fmt: skip
    assert restarted[standby] > restarted[leader]
    time.sleep(3)  # two keep-alives later
    assert not _active(ha_run, leader, since=restarted_from), "the restarted pod waits while the active one runs"
    assert _active(ha_run, standby), "the active pod keeps reconciling"
    release.run("delete", "researchproject", "ha-after-kill", f"--timeout={int(timeouts.DELETE)}s")
