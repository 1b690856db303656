"""The Kubernetes pool against the real API server: capacity read from Node objects the test makes (GPU
label, allocatable nvidia.com/gpu, Ready or not, cordoned or not), the project's quota and placement
raised by active bookings through the project's own reconcile, and the placement policy enforced by the
API server itself."""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import Namespace, Node, ResourceQuota
from lightkube.types import PatchType

from enclave_operator.backends import s3_minio
from enclave_operator.backends.errors import BackendUnavailable
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.reconcilers import gpu_bookings, project_space, research_project
from enclave_operator.settings import parse
from localenv.kwok import gpu_node
from localenv.runtime import REPO_ROOT
from support.builders import ProjectBuilder
from support.cluster import Cluster

LABEL = "nvidia.com/gpu.product"


def settings(minio: dict[str, Any], value: str) -> Any:
    return parse({"s3": {"endpoint": minio["endpoint"], "secure": False}, "gpu": {"families": [
        {"name": "a100", "nodeLabelValue": value, "bookingRequired": True},
        {"name": "t4", "nodeLabelValue": f"{value}-T4"}]}})  # fmt: skip


@pytest.fixture
async def gpu_nodes(kube: AsyncClient) -> AsyncIterator[tuple[str, list[str]]]:
    """Three nodes of a family unique to this test: Ready, NotReady, and Ready but cordoned."""
    value = f"A100-{secrets.token_hex(3)}"
    names = [f"gpu-{value.lower()}-{i}" for i in range(3)]
    for i, name in enumerate(names):
        node = gpu_node(name, LABEL, value, 4)
        node["metadata"]["labels"].pop("enclave.io/fake-node")  # no kwok here: the test sets the status
        node["status"]["conditions"] = [{"type": "Ready", "status": "False" if i == 1 else "True",
                                         "reason": "Test", "message": "set by the test"}]  # fmt: skip
        node["spec"]["unschedulable"] = i == 2
        await kube.create(from_dict(node))
    try:
        yield value, names
    finally:
        for name in names:
            await kube.delete(Node, name)


async def test_capacity_counts_ready_schedulable_nodes_of_the_family(
    crds: Cluster, kube: AsyncClient, minio: dict[str, Any], gpu_nodes: tuple[str, list[str]]
) -> None:
    value, names = gpu_nodes
    config = settings(minio, value)
    ledger = gpu_bookings.Ledger()
    for _ in range(40):  # a CRD established a moment ago answers 429 "storage is (re)initializing" at first
        try:
            await gpu_bookings.prime(ledger, kube, config, datetime.date.today())
            break
        except BackendUnavailable:
            await asyncio.sleep(0.5)
    capacity = ledger.capacity("kubernetes", "a100", config.gpu)
    assert capacity.gpus == 4, capacity.detail
    assert f"left out: {names[1]} (NotReady), {names[2]} (cordoned)" in capacity.detail
    # The node comes back into service: a watch event would carry this; the ledger wakes the family's bookings.
    await kube.patch(Node, names[2], {"spec": {"unschedulable": False}}, patch_type=PatchType.MERGE)
    back = (await kube.get(Node, names[2])).to_dict()
    ledger.put_node(gpu_bookings.node_from_body(back, config.gpu), config.gpu)
    assert ledger.capacity("kubernetes", "a100", config.gpu).gpus == 8


async def test_active_bookings_raise_the_quota_and_open_their_family_through_the_project_reconcile(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    config = settings(minio, "A100")
    spec = ProjectBuilder(project_name).deletion("Delete").spec()
    spec["compute"] = {"kubernetes": {"gpu": 1}}

    async def run(gpus: int, families: tuple[str, ...], status: dict | None) -> research_project.ReconcileResult:
        return await research_project.reconcile(
            name=project_name, generation=1, raw_spec=spec, current_status=status, settings=config,
            backends=research_project.Backends(kube, s3), recorder=ListRecorder(), today=datetime.date.today(),
            booked_gpus=gpus, booked_families=families,
        )  # fmt: skip

    async def state() -> tuple[str, str]:
        quota = await kube.get(ResourceQuota, "enclave-quota", namespace=project_name)
        ns = await kube.get(Namespace, project_name)
        return quota.spec.hard["requests.nvidia.com/gpu"], ns.metadata.annotations[project_space.GPU_VALUES_ANNOTATION]

    idle = await run(0, (), None)
    assert await state() == ("1", "A100-T4"), "no booking: the baseline, and only the open family"
    active = await run(4, ("a100",), idle.status)
    assert active.writes > 0 and await state() == ("5", "A100")
    ended = await run(0, (), active.status)
    assert ended.writes > 0 and await state() == ("1", "A100-T4")
    quiet = await run(0, (), ended.status)
    assert quiet.writes == 0, "a resync after the end writes nothing"
    await research_project.finalize(name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3),
                                    settings=config, recorder=ListRecorder(), today=datetime.date.today())  # fmt: skip


def test_the_placement_policy_is_enforced_by_the_api_server(crds: Cluster) -> None:
    crds.run("apply", "-f", str(REPO_ROOT / "manifests" / "policy" / "gpu-placement.yaml"))
    ns = f"gpu-{secrets.token_hex(3)}"
    crds.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "labels": {"enclave.io/project": ns},
        "annotations": {project_space.GPU_LABEL_ANNOTATION: LABEL, project_space.GPU_VALUES_ANNOTATION: "A100"}}}))
    crds.run("create", "serviceaccount", "default", "-n", ns, check=False)

    def pod(selector: dict[str, str] | None, gpus: int = 1, node: str | None = None) -> tuple[int, str]:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x", "resources": {"limits": {
            "nvidia.com/gpu": str(gpus)}} if gpus else {}}]}  # fmt: skip
        if selector:
            spec["nodeSelector"] = selector
        if node:
            spec["nodeName"] = node
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns}, "spec": spec}
        out = crds.run("create", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False)
        return out.returncode, out.stderr

    try:
        assert pod({LABEL: "A100"})[0] == 0
        assert pod(None, gpus=0)[0] == 0, "pods without GPUs are not concerned"
        code, err = pod({LABEL: "H100"})
        assert code != 0 and f"spec.nodeSelector: GPU pods of this project must set nodeSelector {LABEL} to one " \
                              "of: A100" in err  # fmt: skip
        code, err = pod({LABEL: "A100"}, node="some-node")
        assert code != 0 and "spec.nodeName" in err
        crds.run("annotate", "namespace", ns, f"{project_space.GPU_VALUES_ANNOTATION}=", "--overwrite")
        code, err = pod({LABEL: "A100"})
        assert code != 0 and "no GPU family is open to this project now" in err
    finally:
        crds.run("delete", "namespace", ns, "--wait=false")
