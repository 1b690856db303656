"""The namespace adapter against the real API server."""

from __future__ import annotations

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from enclave_operator.backends import kube_namespace, ownership
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder


def _adapter(kube: AsyncClient, name: str) -> kube_namespace.NamespaceAdapter:
    owner = ownership.Owner(name)
    desired = kube_namespace.DesiredNamespace(name, owner, kube_namespace.desired_labels(owner))
    return kube_namespace.NamespaceAdapter(kube, desired)


async def test_create_observe_repair_delete(kube: AsyncClient, project_name: str) -> None:
    adapter = _adapter(kube, project_name)
    assert not (await adapter.observe()).exists
    outcome = await managed.reconcile_part(adapter, ListRecorder())
    assert outcome.condition.status == "True" and outcome.wrote
    ns = await kube.get(Namespace, project_name)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"

    # A hand-made change is seen as drift and repaired by the next reconcile.
    patch = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    await kube.patch(Namespace, project_name, patch, patch_type=PatchType.MERGE)
    drift = await adapter.observe()
    assert not drift.up_to_date and "pod-security.kubernetes.io/enforce" in drift.diff
    recorder = ListRecorder()
    repaired = await managed.reconcile_part(adapter, recorder)
    assert repaired.condition.status == "True" and [e[1] for e in recorder.events] == ["UpdatedNamespace"]

    # A second reconcile with nothing changed writes nothing.
    assert not (await managed.reconcile_part(adapter, ListRecorder())).wrote

    assert await adapter.delete("Delete") is DeleteOutcome.DELETED
    after = await adapter.observe()
    assert not after.exists or after.terminating


async def test_foreign_namespace_is_not_adopted(kube: AsyncClient, project_name: str) -> None:
    await kube.create(Namespace(metadata=ObjectMeta(name=project_name, labels={"team": "someone-else"})))
    try:
        with pytest.raises(ownership.NotOwned, match="belongs to no enclave project"):
            await _adapter(kube, project_name).observe()
    finally:
        await kube.delete(Namespace, project_name)


async def test_create_is_idempotent_when_it_already_exists(kube: AsyncClient, project_name: str) -> None:
    adapter = _adapter(kube, project_name)
    await adapter.create()
    await adapter.create()  # a re-run after a crash between create and status write
    assert (await adapter.observe()).up_to_date
    await adapter.delete("Delete")
