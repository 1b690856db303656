"""Adapter for the project's Namespace: labels (ownership, Pod Security restricted) and its removal.

The namespace is created only if missing; an existing namespace that carries another project's label,
or none of ours, is never adopted (NotOwned): a project must not take over someone else's workloads,
and deleting the project leaves such a namespace alone. Every call goes through the project's
`OwnedNamespaces` client (backends/ownership.py), so even a bug here could not write into a foreign one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, Mapping
from typing import TypeVar

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, PersistentVolume, PersistentVolumeClaim
from lightkube.types import PatchType

from enclave_operator import reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import kube, ownership
from enclave_operator.backends.adapter import NOT_FOUND, DeleteOutcome, Observation

PROJECT_LABEL = ownership.OWNER_LABEL
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "enclave-operator"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DesiredNamespace:
    name: str
    owner: ownership.Owner
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Annotations the operator owns (e.g. the GPU placement the admission policy reads); a value of
    "" is written as such, so a key once set is never left stale."""


def desired_labels(owner: ownership.Owner) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        owner.label: owner.name,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }


class NamespaceAdapter:
    part = reasons.NAMESPACE_READY
    noun = "Namespace"
    member_key = "kubernetes"

    def __init__(self, client: AsyncClient | ownership.OwnedNamespaces, desired: DesiredNamespace) -> None:
        self._client = client
        self._desired = desired

    async def _get(self) -> Namespace | None:
        name = self._desired.name
        try:
            return await kube.call(f"get namespace {name}", self._client.get(Namespace, name))
        except kube.NotFound:
            return None

    async def claim(self) -> ownership.ClaimResult:
        """Whether the namespace is absent, the owner's, or someone else's (never adopted)."""
        return ownership.namespace_claim(await self._get(), self._desired.name, self._desired.owner)

    async def observe(self) -> Observation:
        ns = await self._get()
        claim = ownership.namespace_claim(ns, self._desired.name, self._desired.owner)
        if ns is None:
            return dataclasses.replace(NOT_FOUND, resource=self._desired.name)
        ownership.raise_unless_usable(claim, self._desired.owner, self.noun)
        labels = dict(ns.metadata.labels or {}) if ns.metadata else {}
        if ns.metadata and ns.metadata.deletionTimestamp:
            return Observation(True, False, "namespace is terminating", self._desired.name, terminating=True)
        wrong = sorted(k for k, v in self._desired.labels.items() if labels.get(k) != v)
        annotations = dict(ns.metadata.annotations or {}) if ns.metadata else {}
        wrong += sorted(k for k, v in self._desired.annotations.items() if annotations.get(k) != v)
        diff = f"labels or annotations differ: {', '.join(wrong)}" if wrong else ""
        return Observation(True, not wrong, diff, self._desired.name)

    async def create(self) -> Observation | None:
        ns = Namespace(
            metadata=ObjectMeta(
                name=self._desired.name,
                labels=dict(self._desired.labels),
                annotations=dict(self._desired.annotations) or None,
            )
        )
        try:
            await kube.call(
                f"create namespace {self._desired.name}", self._client.create(ns, field_manager=kube.FIELD_MANAGER)
            )
        except kube.Conflict:
            return None  # created meanwhile (or by a run killed mid-way): the next observe decides
        return Observation(True, True, "", self._desired.name)  # ours, with our labels: we just made it

    async def update(self, observation: Observation) -> None:
        if observation.terminating:
            return  # nothing to do until it is gone; the engine retries
        patch = {"metadata": {"labels": dict(self._desired.labels), "annotations": dict(self._desired.annotations)}}
        await kube.call(
            f"label namespace {self._desired.name}",
            self._client.patch(
                Namespace, self._desired.name, patch, patch_type=PatchType.MERGE, field_manager=kube.FIELD_MANAGER
            ),
        )

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        if policy == "Retain":
            await self._retain_volumes()
        try:
            await kube.call(
                f"delete namespace {self._desired.name}", self._client.delete(Namespace, self._desired.name)
            )
        except kube.NotFound:
            pass
        return DeleteOutcome.DELETED

    async def _retain_volumes(self) -> None:
        """Set reclaim policy Retain on every volume bound to the namespace's claims, before they go."""
        claims = await kube.call(
            f"list claims in {self._desired.name}",
            _collect(self._client.list(PersistentVolumeClaim, namespace=self._desired.name)),
        )
        for claim in claims:
            volume = claim.spec.volumeName if claim.spec else None
            if not volume:
                continue
            patch = {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
            await kube.call(
                f"retain volume {volume}",
                self._client.patch(
                    PersistentVolume, volume, patch, patch_type=PatchType.MERGE, field_manager=kube.FIELD_MANAGER
                ),
            )


async def _collect(items: AsyncIterable[T]) -> list[T]:
    return [item async for item in items]
