"""GPU bookings end to end, through kubectl as researchers (impersonated, under real RBAC, the operator's
webhook and the API server's placement policy), against kwok GPU nodes and the real Slurm with slurmd.

Windows a few seconds ahead are watched go Scheduled → Active → Expired with the quota, the placement,
the Slurm reservation and a running GPU pod following them, across an operator SIGKILL in the window.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from localenv import environment
from localenv.kwok import GPU_LABEL_KEY as LABEL
from localenv.kwok import GPU_PRODUCTS as GPU_LABELS
from localenv.kwok import gpu_node, kwok_service
from localenv.plane import start_plane
from localenv.runtime import RunDir, free_port
from support import timeouts
from support.builders import BookingBuilder, ProjectBuilder
from support.cluster import Cluster
from support.gitops import assert_health
from support.gpu import (
    RESEARCHERS,
    as_user,
    booking,
    condition,
    gpu_quota,
    iso,
    phase,
    slurm_reservation,
    until,
    utc_in,
    wait_phase,
)
from support.operator import OperatorProcess
from support.projects import events_for, wait_ready
from support.slurm import SlurmEnv
from support.wait import wait_for

NODES = {"k8s-a100-1": "a100", "k8s-a100-2": "a100", "k8s-h100-1": "h100"}
ON_TIME = timeouts.PHASE_ON_TIME


@pytest.fixture(scope="module")
def gpu_cluster(crds: Cluster, run_dir: RunDir) -> Iterator[Cluster]:
    """kube-scheduler and kwok on the session's plane, three GPU nodes (4 GPUs each), and the researchers' role."""
    environment.build(["kwok"])
    start_plane(run_dir, controller_manager=True, scheduler=True)
    run_dir.start(kwok_service(run_dir, crds.kubeconfig))
    for name, family in NODES.items():
        if crds.get_json("node", name) is None:
            crds.run("create", "-f", "-", input=json.dumps(gpu_node(name, LABEL, GPU_LABELS[family], 4)))
    wait_for(lambda: all(_ready(crds, n) for n in NODES), timeout=timeouts.READY, what="kwok GPU nodes Ready")
    crds.run("create", "clusterrolebinding", "test-gpu-researchers", "--clusterrole=enclave-researcher",
             f"--group={RESEARCHERS}")  # fmt: skip
    try:
        yield crds
    finally:
        crds.run("delete", "clusterrolebinding", "test-gpu-researchers", check=False)


def _ready(cluster: Cluster, node: str) -> bool:
    obj = cluster.get_json("node", node) or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def _project(cluster: Cluster, name: str, **spec: Any) -> str:
    obj = ProjectBuilder(name).member("bob", "member").member("carol", "viewer").deletion("Delete").obj()
    # Slurm limits within the self-service tier: the project needs no approval of its own.
    obj["spec"]["compute"] = {"kubernetes": {"gpu": 1},
                              "slurm": {"parent": "root", "limits": {"cpu": 64, "mem": "256Gi", "gpu": 1}}}
    obj["spec"].update(spec)
    code, out = as_user(cluster, "alice", "apply", "-f", "-", manifest=obj)
    assert code == 0, out
    return str(wait_ready(cluster, name)["status"]["namespace"])


@pytest.fixture
def project(gpu_cluster: Cluster, operator: OperatorProcess, project_name: str) -> Iterator[str]:
    """A project of alice (owner), bob (member), carol (viewer) with a Slurm account and 1 baseline GPU."""
    namespace = _project(gpu_cluster, project_name)
    try:
        yield namespace
    finally:
        gpu_cluster.run("delete", "gpureservations", "--all", "-n", namespace, "--timeout=60s", check=False)
        gpu_cluster.run("delete", "researchproject", project_name, "--timeout=120s", check=False)


def _far_window(days: int, hours: int = 6) -> tuple[str, str]:
    """A window `days` ahead (tests use distinct days, so their bookings never meet)."""
    start = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)).replace(minute=0, second=0,
                                                                                        microsecond=0)  # fmt: skip
    return iso(start), iso(start + datetime.timedelta(hours=hours))


def _gpu_pod(namespace: str, name: str, family: str, gpus: int) -> dict[str, Any]:
    """A GPU pod as a researcher writes it (restricted Pod Security, the family's node selector)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeSelector": {LABEL: GPU_LABELS[family]},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "train", "image": "registry.example/train:1", "resources": {
                "limits": {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"},
                "requests": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        },
    }  # fmt: skip


def test_a_window_goes_scheduled_active_expired_with_quota_pods_and_slurm_across_a_sigkill(
    gpu_cluster: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project: str, project_name: str
) -> None:
    start = utc_in(20)
    end = start + datetime.timedelta(seconds=90)  # room for a pod to start and the operator to restart, loaded
    k8s = BookingBuilder("train", project).family("a100").gpus(4).window(iso(start), iso(end)).obj()
    hpc = BookingBuilder("sweep", project).pool("slurm").family("a100").gpus(2).window(iso(start), iso(end)).obj()
    for manifest in (k8s, hpc):
        code, out = as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=manifest)
        assert code == 0, out
    wait_phase(gpu_cluster, project, "train", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    wait_phase(gpu_cluster, project, "sweep", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    listing = gpu_cluster.run("get", "gpureservations", "-A").stdout
    assert listing.split("\n")[0].split()[:8] == ["NAMESPACE", "NAME", "POOL", "FAMILY", "GPUS", "START", "END",
                                                 "PHASE"], listing  # fmt: skip
    name = f"{project}-sweep"
    assert booking(gpu_cluster, project, "sweep")["status"]["slurmReservation"] == name
    assert_health(booking(gpu_cluster, project, "train"), "Healthy", "Current")  # Argo CD's Lua check, Flux's kstatus
    reservation = slurm_reservation(slurm, name)
    assert reservation["Accounts"] == project_name and reservation["State"] == "INACTIVE"
    assert reservation["StartTime"] == start.strftime("%Y-%m-%dT%H:%M:%S")
    assert gpu_quota(gpu_cluster, project) == "1", "before the window: the baseline only"
    code, out = as_user(gpu_cluster, "alice", "create", "-f", "-", manifest=_gpu_pod(project, "early", "a100", 2))
    assert code != 0 and f"to one of: {GPU_LABELS['h100']}" in out, "a100 is for bookings only; h100 is open"

    seen = wait_phase(gpu_cluster, project, "train", "Active", timeout=until(start))
    print(f"Active seen {(seen - start).total_seconds():.2f} s after start")  # quoted in docs
    assert (seen - start).total_seconds() < ON_TIME, f"Active {seen - start} after start"
    wait_for(lambda: gpu_quota(gpu_cluster, project) == "5", timeout=timeouts.QUOTA_FOLLOWS,
             what="quota 1 + 4 booked")  # fmt: skip
    assert phase(gpu_cluster, project, "sweep") == "Active"
    assert slurm_reservation(slurm, name)["State"] == "ACTIVE"
    code, out = as_user(gpu_cluster, "alice", "create", "-f", "-", manifest=_gpu_pod(project, "trainer", "a100", 2))
    assert code == 0, out
    wait_for(lambda: (gpu_cluster.get_json("pod", "-n", project, "trainer") or {}).get("status", {}).get("phase")
             == "Running", timeout=timeouts.BOOKING_FOLLOWS, what="the GPU pod running on an a100 node")  # fmt: skip
    placed = gpu_cluster.get_json("pod", "-n", project, "trainer")["spec"]["nodeName"]
    assert NODES[placed] == "a100"

    operator.kill()  # inside the window: nothing may change, and the end must still come on time
    time.sleep(2)
    operator.start()
    time.sleep(3)
    assert datetime.datetime.now(datetime.UTC) < end, "the restart must happen inside the window"
    assert phase(gpu_cluster, project, "train") == "Active" and gpu_quota(gpu_cluster, project) == "5"
    assert slurm_reservation(slurm, name)["State"] == "ACTIVE"

    ended = wait_phase(gpu_cluster, project, "train", "Expired", timeout=until(end))
    print(f"Expired seen {(ended - end).total_seconds():.2f} s after end (operator SIGKILLed inside the window)")
    assert (ended - end).total_seconds() < ON_TIME, f"Expired {ended - end} after end"
    wait_for(lambda: gpu_quota(gpu_cluster, project) == "1", timeout=timeouts.QUOTA_FOLLOWS,
             what="the quota back to 1")  # fmt: skip
    wait_phase(gpu_cluster, project, "sweep", "Expired", timeout=until(end))
    # Finished, not stuck: an Argo CD sync must not wait on it. kstatus reads Ready=False as not done yet
    # (docs/gitops.md: keep bookings out of a `wait: true` Kustomization).
    assert_health(booking(gpu_cluster, project, "sweep"), "Healthy", "InProgress")
    wait_for(lambda: not slurm_reservation(slurm, name), timeout=timeouts.BOOKING_FOLLOWS,
             what="the Slurm reservation gone")  # fmt: skip
    # The pod keeps running through the grace period (3 s here), then it is evicted.
    wait_for(lambda: gpu_cluster.get_json("pod", "-n", project, "trainer") is None, timeout=timeouts.BOOKING_FOLLOWS,
             what="the GPU pod evicted after the grace period")  # fmt: skip
    wait_for(lambda: (booking(gpu_cluster, project, "train") or {}).get("status", {}).get("evictedPods") == 1,
             timeout=timeouts.BOOKING_FOLLOWS, what="evictedPods recorded")  # fmt: skip
    reasons = {r for _, r, _ in events_for(gpu_cluster, "train")}
    assert {"AdmittedBooking", "StartedBooking", "EndedBooking", "EvictedPod"} <= reasons, reasons


def test_a_full_family_is_refused_with_the_instant_the_free_count_and_free_windows(
    gpu_cluster: Cluster, operator: OperatorProcess, project: str
) -> None:
    start, end = _far_window(days=3)
    big = BookingBuilder("all-a100", project).family("a100").gpus(8).window(start, end).obj()
    code, out = as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=big)
    assert code == 0, out
    wait_phase(gpu_cluster, project, "all-a100", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    one_more = BookingBuilder("one-more", project).family("a100").gpus(1).window(start, duration="2h").obj()
    code, out = as_user(gpu_cluster, "bob", "apply", "-f", "-", manifest=one_more)
    assert code != 0 and "spec.count: does not fit: a100 (kubernetes): at " in out, out
    assert "8 of 8 GPUs are booked, 0 free, 1 asked" in out and f"8 free from {end[:16]}Z" in out, out
    whole = BookingBuilder("odd", project).pool("slurm").family("a100").gpus(3).window(start, end).obj()
    code, out = as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=whole)
    assert code != 0 and "spec.count: Slurm reserves whole nodes; a100 nodes have 2 GPUs each" in out, out
    code, out = as_user(gpu_cluster, "carol", "apply", "-f", "-", manifest=one_more)
    assert code != 0 and "forbidden" in out.lower(), "viewers may not book"


def test_bookings_the_platform_cannot_serve_are_refused_at_apply_naming_the_field(
    gpu_cluster: Cluster, operator: OperatorProcess, project: str
) -> None:
    """The webhook's refusals, each through kubectl as alice (the unit tests cover every rule's edges)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start, end = _far_window(days=4)

    def b(name: str) -> BookingBuilder:
        return BookingBuilder(name, project).family("h100").gpus(1)

    cases = [
        (b("past").window(iso(now - datetime.timedelta(hours=2)), iso(now + datetime.timedelta(hours=1))),
         "spec.start: ", "is in the past"),
        (b("backwards").window(end, start), "spec.end must be after spec.start", ""),
        (b("zero").window(start, start), "spec.end must be after spec.start", ""),
        (BookingBuilder("v100", project).family("v100").gpus(1).window(start, end),
         "spec.family: v100 is not a GPU family of this platform", ""),
        (b("too-many").gpus(5).window(start, end), "spec.count: h100 (kubernetes) has 4 GPUs", ""),
        (b("after").window("2099-12-31T12:00:00Z", "2100-01-01T12:00:00Z"), "spec.end: 2100-01-01T12:00Z is after "
         "the project's validUntil (2099-12-31)", ""),
    ]  # fmt: skip
    for builder, text, more in cases:
        manifest = builder.obj()
        code, out = as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=manifest)
        assert code != 0 and text in out and more in out, (manifest["metadata"]["name"], out)
        assert booking(gpu_cluster, project, manifest["metadata"]["name"]) is None


@pytest.fixture
def researcher_proxy(gpu_cluster: Cluster) -> Iterator[str]:
    """`kubectl proxy` authenticated as alice (impersonated): two requests through it leave at the same
    instant, which two kubectl processes (each ~0.1 s to start, give or take tens of ms) cannot do."""
    port = free_port()
    proxy = subprocess.Popen([gpu_cluster.kubectl, "proxy", f"--port={port}", "--as=alice",
                              f"--as-group={RESEARCHERS}"], env=gpu_cluster.env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url + "/version") is not None, timeout=20, what="kubectl proxy")
        yield url
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return None


def _create_concurrently(proxy: str, manifests: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """POST every manifest at once (a barrier releases the threads together); (HTTP status, message) each."""
    barrier = threading.Barrier(len(manifests))
    results: list[tuple[int, str]] = [(0, "")] * len(manifests)

    def post(index: int, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        request = urllib.request.Request(f"{proxy}/apis/enclave.io/v1alpha1/namespaces/{namespace}/gpureservations",
                                         data=json.dumps(manifest).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                results[index] = (response.status, "")
        except urllib.error.HTTPError as error:
            results[index] = (error.code, json.loads(error.read()).get("message", ""))

    threads = [threading.Thread(target=post, args=(i, m)) for i, m in enumerate(manifests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_bookings_raced_past_the_webhook_never_double_book(
    gpu_cluster: Cluster, operator: OperatorProcess, project: str, researcher_proxy: str
) -> None:
    """Each round, two bookings of 6 of the 8 a100 GPUs are created at the same moment. Whether the
    webhook already saw the first or both got past it, exactly one holds the GPUs; a loser that got past the
    webhook is Rejected with reason Conflict by the controller, which decides by creation time, then name."""
    raced = 0
    for round_ in range(4):
        start, end = _far_window(days=6 + round_)
        pair = [BookingBuilder(f"race{round_}-{n}", project).family("a100").gpus(6).window(start, end).obj()
                for n in ("a", "b")]  # fmt: skip
        results = _create_concurrently(researcher_proxy, pair)
        created = [m["metadata"]["name"] for (code, _), m in zip(results, pair, strict=True) if code == 201]
        refused = [out for code, out in results if code != 201]
        assert all("does not fit" in out for out in refused), refused
        for name in created:
            wait_for(lambda n=name: phase(gpu_cluster, project, n) in ("Scheduled", "Rejected"),
                     timeout=timeouts.BOOKING_DECIDED, what=f"{name} decided")  # fmt: skip
        outcome = {n: booking(gpu_cluster, project, n) for n in created}
        winners = [n for n, o in outcome.items() if o["status"]["phase"] == "Scheduled"]
        assert len(winners) == 1, outcome
        if len(created) == 2:
            raced += 1
            loser = next(o for n, o in outcome.items() if n not in winners)
            assert condition(loser, "Admitted")["reason"] == "Conflict"
            assert "6 of 8 GPUs are booked, 2 free, 6 asked" in condition(loser, "Admitted")["message"]
            order = sorted(outcome.values(), key=lambda o: (o["metadata"]["creationTimestamp"],
                                                            o["metadata"]["name"]))  # fmt: skip
            assert order[0]["metadata"]["name"] == winners[0], "the earlier booking wins"
    assert raced > 0, "in no round did both creates pass the webhook: the controller's decision was not exercised"


def test_drained_nodes_put_admitted_bookings_at_risk_visibly(
    gpu_cluster: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project: str
) -> None:
    start, end = _far_window(days=12)
    k8s = BookingBuilder("k8s-all", project).family("a100").gpus(8).window(start, end).obj()
    hpc = BookingBuilder("hpc-all", project).pool("slurm").family("a100").gpus(4).window(start, end).obj()
    for manifest in (k8s, hpc):
        assert as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=manifest)[0] == 0
        wait_phase(gpu_cluster, project, manifest["metadata"]["name"], "Scheduled",
                   timeout=timeouts.BOOKING_DECIDED)  # fmt: skip

    def at_risk(name: str) -> str | None:
        return condition(booking(gpu_cluster, project, name), "CapacityAtRisk").get("status")

    gpu_cluster.run("cordon", "k8s-a100-2")
    drain = ["scontrol", "update", "NodeName=gpu-a100-2", "State=DRAIN", "Reason=board swap"]
    subprocess.run(drain, env={**gpu_cluster.env(), "SLURM_CONF": str(slurm.conf)}, check=True, timeout=30)
    try:
        wait_for(lambda: at_risk("k8s-all") == "True", timeout=timeouts.BOOKING_FOLLOWS,
                 what="CapacityAtRisk on the Kubernetes booking")  # fmt: skip
        wait_for(lambda: at_risk("hpc-all") == "True", timeout=timeouts.BOOKING_FOLLOWS,
                 what="CapacityAtRisk on the Slurm booking")  # fmt: skip
        message = condition(booking(gpu_cluster, project, "k8s-all"), "CapacityAtRisk")["message"]
        assert "a100 (kubernetes) has 4 GPUs now" in message and "k8s-a100-2 (cordoned)" in message, message
        assert ("Warning", "CapacityAtRisk") in {(t, r) for t, r, _ in events_for(gpu_cluster, "k8s-all")}
        assert phase(gpu_cluster, project, "k8s-all") == "Scheduled", "flagged, not dropped"
    finally:
        gpu_cluster.run("uncordon", "k8s-a100-2")
        resume = ["scontrol", "update", "NodeName=gpu-a100-2", "State=RESUME"]
        subprocess.run(resume, env={**gpu_cluster.env(), "SLURM_CONF": str(slurm.conf)}, check=True, timeout=30)
    wait_for(lambda: at_risk("k8s-all") == "False", timeout=timeouts.BOOKING_FOLLOWS,
             what="the risk lifted when the node returned")  # fmt: skip
    wait_for(lambda: at_risk("hpc-all") == "False", timeout=timeouts.BOOKING_FOLLOWS, what="the Slurm risk lifted")


def test_a_cordoned_project_cancels_its_bookings_and_their_slurm_reservations(
    gpu_cluster: Cluster, operator: OperatorProcess, slurm: SlurmEnv, project: str, project_name: str
) -> None:
    start, end = _far_window(days=15)
    hpc = BookingBuilder("later", project).pool("slurm").family("h100").gpus(4).window(start, end).obj()
    assert as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=hpc)[0] == 0
    wait_phase(gpu_cluster, project, "later", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    assert slurm_reservation(slurm, f"{project}-later")
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    gpu_cluster.run("patch", "researchproject", project_name, "--type=merge", "-p",
                    json.dumps({"spec": {"validUntil": yesterday}}))  # fmt: skip
    wait_phase(gpu_cluster, project, "later", "Cancelled", timeout=timeouts.BOOKING_DECIDED)
    assert condition(booking(gpu_cluster, project, "later"), "Ready")["reason"] == "ProjectCordoned"
    assert_health(booking(gpu_cluster, project, "later"), "Healthy", "InProgress")
    wait_for(lambda: not slurm_reservation(slurm, f"{project}-later"), timeout=timeouts.BOOKING_FOLLOWS,
             what="the reservation removed")  # fmt: skip
    again = BookingBuilder("again", project).family("h100").gpus(1).window(start, end).obj()
    code, out = as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=again)
    assert code != 0 and "forbidden" in out.lower(), "the cordon took alice's write access (RBAC)"
    refused = gpu_cluster.run("apply", "-f", "-", input=yaml.safe_dump(again), check=False)
    assert refused.returncode != 0 and f"project {project_name} is cordoned" in refused.stderr, "even for an admin"


def test_a_deleted_project_takes_its_bookings_and_their_slurm_reservations_with_it(
    gpu_cluster: Cluster, slurm: SlurmEnv, project: str, project_name: str
) -> None:
    start, end = _far_window(days=16)
    hpc = BookingBuilder("doomed", project).pool("slurm").family("h100").gpus(4).window(start, end).obj()
    assert as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=hpc)[0] == 0
    wait_phase(gpu_cluster, project, "doomed", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    assert slurm_reservation(slurm, f"{project}-doomed")
    assert as_user(gpu_cluster, "alice", "delete", "researchproject", project_name, "--wait=false")[0] == 0
    wait_for(lambda: not slurm_reservation(slurm, f"{project}-doomed"), timeout=timeouts.BOOKING_FOLLOWS,
             what="the Slurm reservation removed with the project")  # fmt: skip
    wait_for(lambda: gpu_cluster.get_json("researchproject", project_name) is None, timeout=timeouts.DELETE,
             what="the project deleted")  # fmt: skip
    wait_for(lambda: gpu_cluster.get_json("namespace", project) is None, timeout=timeouts.DELETE,
             what="its namespace gone (policy Delete), its bookings with it")  # fmt: skip


def test_above_the_limits_a_booking_waits_for_an_admin(
    gpu_cluster: Cluster, operator: OperatorProcess, project: str
) -> None:
    start, _ = _far_window(days=18)
    long = BookingBuilder("long", project).family("h100").gpus(2).window(start, duration="3d").obj()
    assert as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=long)[0] == 0
    wait_phase(gpu_cluster, project, "long", "Pending", timeout=timeouts.BOOKING_DECIDED)
    approved = condition(booking(gpu_cluster, project, "long"), "Approved")
    assert approved["reason"] == "AwaitingApproval" and "hours 72 > 48" in approved["message"], approved
    assert "kubectl annotate gpureservation -n " in approved["message"] and "enclave.io/approve=yes" in (
        approved["message"]), approved  # fmt: skip
    code, out = as_user(gpu_cluster, "alice", "annotate", "gpureservation", "-n", project, "long",
                        "enclave.io/approve=yes")  # fmt: skip
    assert code != 0 and "only platform admins may approve" in out, out
    forged = '{"by":"admin","at":"2026-01-01T00:00:00Z","grant":{"hours":"72"},"sig":"00"}'
    code, out = as_user(gpu_cluster, "alice", "annotate", "gpureservation", "-n", project, "long",
                        f"enclave.io/approval={forged}")  # fmt: skip
    assert code != 0 and "only the operator's webhook writes this annotation" in out, out
    gpu_cluster.run("annotate", "gpureservation", "-n", project, "long", "enclave.io/approve=yes")
    wait_phase(gpu_cluster, project, "long", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    approved = condition(booking(gpu_cluster, project, "long"), "Approved")
    assert approved["reason"] == "ApprovedByAdmin", approved
    annotations = booking(gpu_cluster, project, "long")["metadata"]["annotations"]
    assert "enclave.io/approve" not in annotations and '"hours":"72"' in annotations["enclave.io/approval"]


def test_the_calendar_shows_booked_and_free_gpus(
    gpu_cluster: Cluster, operator: OperatorProcess, project: str
) -> None:
    start, end = _far_window(days=21, hours=12)
    manifest = BookingBuilder("cal", project).family("h100").gpus(3).window(start, end).obj()
    assert as_user(gpu_cluster, "alice", "apply", "-f", "-", manifest=manifest)[0] == 0
    wait_phase(gpu_cluster, project, "cal", "Scheduled", timeout=timeouts.BOOKING_DECIDED)
    out = subprocess.run([*operator.cli(), "gpu-calendar", "--config", str(operator.config), "--family", "h100",
                          "--days", "25"], capture_output=True, text=True, timeout=60, env=operator.cli_env())
    assert out.returncode == 0, out.stderr
    assert "h100 (kubernetes): 4 GPUs" in out.stdout, out.stdout
    assert f"{start[:16]}Z" in out.stdout and "3 booked, 1 free" in out.stdout, out.stdout
    assert f"{project}/cal" in out.stdout, "who holds the GPUs"
    metrics = operator.metrics()
    assert 'enclave_gpu_capacity{family="h100",pool="kubernetes"} 4.0' in metrics
    assert 'enclave_gpu_booked{family="h100",pool="kubernetes"}' in metrics
