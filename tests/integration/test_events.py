"""The operator's events as the real API server stores them: a reconcile's part events grouped by verb."""

from __future__ import annotations

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Event

from enclave_operator.engine.events import KubeRecorder


async def test_a_reconciles_part_events_are_one_event_per_verb(kube: AsyncClient, project_name: str) -> None:
    made = await kube.create(ConfigMap(metadata=ObjectMeta(name=project_name, namespace="default")))
    try:
        recorder = KubeRecorder(kube, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": made.metadata.to_dict()})
        recorder.event("Normal", "CreatedNamespace", f"created namespace {project_name}")
        recorder.event("Warning", "CannotCreateCredential", "cannot create credential: refused")
        recorder.event("Normal", "CreatedBucket", f"created bucket {project_name}")
        recorder.event("Normal", "CordonedProject", "validUntil passed")
        await recorder.flush()
        await recorder.flush()  # nothing left: posts nothing
        stored = [e async for e in kube.list(Event, namespace="default",
                                             fields={"involvedObject.uid": made.metadata.uid})]  # fmt: skip
        assert sorted((e.type, e.reason, e.message) for e in stored) == [
            ("Normal", "CordonedProject", "validUntil passed"),
            ("Normal", "Created", f"created namespace {project_name}; created bucket {project_name}"),
            ("Warning", "CannotCreateCredential", "cannot create credential: refused"),
        ]
        assert {e.involvedObject.name for e in stored} == {project_name}
    finally:
        await kube.delete(ConfigMap, project_name, namespace="default")
