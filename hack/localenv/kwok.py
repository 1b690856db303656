"""Fake GPU nodes for the local plane: kwok (built by hack/kwok/build.sh) keeps them Ready and plays the
lifecycle of the pods bound to them, since there is no kubelet and no container runtime here.

Only nodes labelled `enclave.io/fake-node=kwok` are managed; every other node and pod is left alone (the
DataIngest podrunner keeps its own namespace). GPU nodes carry the taint `nvidia.com/gpu=present:NoSchedule`,
as GPU clusters commonly do, so pods that do not ask for GPUs never land on them.

Our own stage configurations, smallest that works: a node becomes Ready; its Ready heartbeat is renewed
(kwok also renews the node's Lease); a pod bound to a managed node runs; a pod being deleted goes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR, RunDir, Service, free_port

MANAGED_LABEL = "enclave.io/fake-node"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_LABEL_KEY = "nvidia.com/gpu.product"
GPU_PRODUCTS = {"a100": "NVIDIA-A100-SXM4-80GB", "h100": "NVIDIA-H100-80GB-HBM3"}
"""The local GPU families' node label values, as NVIDIA's GPU feature discovery names the products."""


def gpu_families(slurm_gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's `gpu.families` for the local environment: each family in both pools (Slurm nodes from
    localenv/slurm.py's `gpu` fact, Kubernetes nodes made here); a100 on Kubernetes is for bookings only,
    h100 is open to every project's GPU quota."""
    return [{"name": name, "nodeLabelValue": GPU_PRODUCTS[name], "slurmGresType": f["gresType"],
             "slurmPartition": f["partition"], "slurmFeature": f["feature"], "bookingRequired": name == "a100"}
            for name, f in slurm_gpu.items()]  # fmt: skip

STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: enclave-node-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: NotIn, values: ['True']}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok keeps this fake node ready",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, containerRuntimeVersion: fake,
                 kernelVersion: fake, kubeProxyVersion: fake, osImage: fake, bootID: "", machineID: "",
                 systemUUID: ""}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: enclave-node-heartbeat}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: In, values: ['True']}
  delay: {durationMilliseconds: 20000, jitterDurationMilliseconds: 25000}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok keeps this fake node ready",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ or .metadata.creationTimestamp $now | Quote }}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: enclave-pod-running}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.status.phase', operator: In, values: [Pending]}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace | Quote }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - {name: {{ .name | Quote }}, image: {{ .image | Quote }}, ready: true, restartCount: 0, started: true,
         state: {running: {startedAt: {{ $now | Quote }}}}}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: enclave-pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    finalizers: {empty: true}
    delete: true
"""


def kwok_service(run: RunDir, kubeconfig: Path | str, bin_dir: Path = DEFAULT_BIN_DIR) -> Service:
    stages = run.path / "kwok-stages.yaml"
    run.path.mkdir(parents=True, exist_ok=True)
    stages.write_text(STAGES)
    port = free_port()
    return Service(
        name="kwok",
        argv=[
            str(bin_dir / "kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--config={stages}",
            f"--manage-nodes-with-label-selector={MANAGED_LABEL}=kwok",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{port}",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
        ],
        ready=lambda: True,
        facts={"port": port},
    )


def gpu_node(name: str, label_key: str, label_value: str, gpus: int) -> dict[str, Any]:
    """A fake GPU node as NVIDIA's GPU Operator would label it: family label, allocatable nvidia.com/gpu."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {MANAGED_LABEL: "kwok", label_key: label_value, "kubernetes.io/hostname": name,
                       "nvidia.com/gpu.count": str(gpus)},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": [GPU_TAINT]},
        "status": {"allocatable": resources, "capacity": resources},
    }  # fmt: skip


def apply_nodes(kubectl: list[str], nodes: list[dict[str, Any]]) -> None:
    """Create (or update) nodes with their status: a Node's status is kept on create."""
    for node in nodes:
        manifest = json.dumps(node)
        found = subprocess.run([*kubectl, "get", "node", node["metadata"]["name"]], capture_output=True, timeout=60)
        if found.returncode != 0:
            subprocess.run([*kubectl, "create", "-f", "-"], input=manifest, text=True, check=True,
                           capture_output=True, timeout=60)  # fmt: skip
