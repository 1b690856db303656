"""Helpers for FederatedNode tests: fake Kubernetes Node objects to measure, the reconciler driven the way the
operator drives it (status fed back), and access checks the way the API server makes them."""

from __future__ import annotations

import asyncio
import datetime
import secrets
import time
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.core_v1 import NodeStatus
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from enclave_operator.backends import s3_minio
from enclave_operator.engine import status as status_io
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.federation import hardware
from enclave_operator.federation.profiles import Profiles
from enclave_operator.reconcilers import federated_node
from enclave_operator.reconcilers.research_project import Backends, ReconcileResult
from enclave_operator.settings import OperatorSettings, parse

SMT_SSD = {hardware.MULTITHREADING_LABEL: "true", hardware.NONROTATIONAL_LABEL: "true"}
GPU_LABELS = {hardware.GPU_MEMORY_LABEL: "24576", hardware.GPU_FAMILY_LABEL: "ampere"}


async def make_node(kube: AsyncClient, name: str, labels: Mapping[str, str], *, cpu: str, memory: str,
                    disk: str = "1Ti", gpus: int = 0) -> None:  # fmt: skip
    """A Node object as a kubelet would report it (capacity, allocatable, nodeInfo), written through the API."""
    await kube.create(Node(metadata=ObjectMeta(name=name, labels=dict(labels))))
    capacity = {"cpu": cpu, "memory": memory, "ephemeral-storage": disk, "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    info = {"operatingSystem": "linux", "architecture": "amd64", "machineID": secrets.token_hex(8),
            "systemUUID": "x", "bootID": "x", "kernelVersion": "6.1", "osImage": "Debian GNU/Linux 12",
            "containerRuntimeVersion": "containerd://2", "kubeletVersion": "v1.37.2",
            "kubeProxyVersion": ""}  # fmt: skip
    status = NodeStatus.from_dict({"capacity": capacity, "allocatable": capacity, "nodeInfo": info})
    await kube.patch(Node.Status, name, {"status": status.to_dict()})


def settings_for(minio: Mapping[str, Any], minio_backup: Mapping[str, Any], **federation: Any) -> OperatorSettings:
    return parse({
        "s3": {"endpoint": minio["endpoint"], "secure": False, "timeoutSeconds": 5},
        "federation": {"backupTargets": [{"name": "offsite", "endpoint": minio_backup["endpoint"], "secure": False}],
                       "backupRetrySeconds": 5, **federation},
    })  # fmt: skip


def backup_clients(minio_backup: Mapping[str, Any]) -> s3_minio.S3Clients:
    conn = s3_minio.S3Connection(minio_backup["endpoint"], minio_backup["access_key"], minio_backup["secret_key"],
                                 secure=False)  # fmt: skip
    return s3_minio.S3Clients(conn)


class Driver:
    """Runs the reconciler the way the operator's handlers do: from a fresh read of the FederatedNode in the API
    server, writing status back through the same merge patch; events are kept here instead of posted."""

    def __init__(self, backends: Backends, settings: OperatorSettings, profiles: Profiles, name: str,
                 spec: dict[str, Any]) -> None:  # fmt: skip
        self.backends, self.settings, self.profiles = backends, settings, profiles
        self.name, self.spec = name, spec
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str, str]] = []

    @property
    def kube(self) -> AsyncClient:
        return self.backends.kube

    async def create(self) -> Driver:
        """The object in the API server (the CRD schema and CEL rules check the spec)."""
        await self.kube.create(status_io.FederatedNodeResource.from_dict({
            "apiVersion": "enclave.io/v1alpha1", "kind": "FederatedNode", "metadata": {"name": self.name},
            "spec": self.spec,
        }))  # fmt: skip
        return self

    async def body(self) -> dict[str, Any]:
        fresh = await status_io.read_node(self.kube, self.name)
        assert fresh is not None, f"federatednode {self.name} is gone"
        return fresh

    async def change(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        await self.kube.patch(status_io.FederatedNodeResource, self.name, {"spec": spec}, patch_type=PatchType.MERGE)

    async def reconcile(self, now: datetime.datetime | None = None) -> ReconcileResult:
        recorder = ListRecorder()
        fresh = await self.body()
        result = await federated_node.reconcile(
            body=fresh, backends=self.backends, settings=self.settings, profiles=self.profiles,
            recorder=recorder, now=now or datetime.datetime.now(datetime.UTC),
        )  # fmt: skip
        self.events += recorder.events
        if result.changed:
            await status_io.write_node_status(self.kube, self.name, fresh.get("status") or {}, result.status)
        self.status = dict((await self.body()).get("status") or {})
        return result

    async def probe(self, now: datetime.datetime | None = None) -> None:
        recorder = ListRecorder()
        probed = await federated_node.run_probes(body=await self.body(), settings=self.settings,
                                                 now=now or datetime.datetime.now(datetime.UTC))  # fmt: skip
        assert probed is not None
        fresh = await self.body()
        patch = federated_node.probe_patch(body=fresh, probed=probed, recorder=recorder)
        self.events += recorder.events
        assert patch is not None
        old = fresh.get("status") or {}
        await status_io.write_node_status(self.kube, self.name, old, {**old, **patch})
        self.status = dict((await self.body()).get("status") or {})

    async def until(self, check: Any, *, timeout: float, what: str,
                    now: datetime.datetime | None = None) -> ReconcileResult:  # fmt: skip
        """Reconcile (as the poll timer does) until `check(status)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.reconcile(now)
            if check(self.status):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; status: {self.status}")
            await asyncio.sleep(1)

    async def finalize(self, now: datetime.datetime | None = None, attempts: int = 30) -> Any:
        """Retire the node (retrying, as kopf does, while a part is still going away), then delete the object."""
        fresh = await self.body()
        for _ in range(attempts):
            recorder = ListRecorder()
            outcome = await federated_node.finalize(
                body=fresh, backends=self.backends, settings=self.settings, profiles=self.profiles,
                recorder=recorder, now=now or datetime.datetime.now(datetime.UTC),
            )  # fmt: skip
            self.events += recorder.events
            if outcome.done:
                await self.kube.delete(status_io.FederatedNodeResource, self.name)
                break
            await asyncio.sleep(1)
        return outcome

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == type_), {})

    def line(self, id_: str) -> dict[str, Any]:
        return next(line for line in self.status["requirements"] if line["id"] == id_)


async def may(kube: AsyncClient, user: str, verb: str, resource: str, namespace: str, name: str) -> bool:
    """What the API server's authorizer answers for `user` (a SubjectAccessReview)."""
    review = SubjectAccessReview(spec=SubjectAccessReviewSpec(
        user=user, resourceAttributes=ResourceAttributes(verb=verb, resource=resource, namespace=namespace, name=name),
    ))  # fmt: skip
    answer = await kube.create(review)
    return bool(answer.status and answer.status.allowed)
