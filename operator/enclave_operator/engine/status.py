"""Reading an object fresh, and writing its status subresource (merge patch) only when the reconciler says it
changed.

Why read fresh: kopf hands a handler the body it had when the handler was scheduled. A timer or event
handler that then waits for the per-object lock (another handler of the same object is running) would
work on a stale body, e.g. a status from before the other handler's write, and overwrite it (issue 14.7).
Handlers therefore take the lock first and read the object inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from enclave_operator.api import GROUP, VERSION
from enclave_operator.api.data_ingest import KIND as INGEST_KIND
from enclave_operator.api.federated_node import KIND as NODE_KIND
from enclave_operator.api.gpu_reservation import KIND as GPU_KIND
from enclave_operator.api.research_project import KIND as PROJECT_KIND
from enclave_operator.backends import kube

ResearchProjectResource = create_global_resource(GROUP, VERSION, PROJECT_KIND.kind, PROJECT_KIND.plural)
DataIngestResource = create_namespaced_resource(GROUP, VERSION, INGEST_KIND.kind, INGEST_KIND.plural)
GpuReservationResource = create_namespaced_resource(GROUP, VERSION, GPU_KIND.kind, GPU_KIND.plural)
FederatedNodeResource = create_global_resource(GROUP, VERSION, NODE_KIND.kind, NODE_KIND.plural)
PeeringResource = create_global_resource("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings")
"""kopf's peering object (manifests/peering): which operator process is the active one (engine/workqueue.py)."""


async def write_project_status(client: AsyncClient, name: str, status: Mapping[str, Any]) -> None:
    await kube.call(
        f"write status of researchproject {name}",
        client.patch(ResearchProjectResource.Status, name, {"status": dict(status)}, patch_type=PatchType.MERGE),
    )


async def write_ingest_status(client: AsyncClient, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    await kube.call(
        f"write status of dataingest {namespace}/{name}",
        client.patch(DataIngestResource.Status, name, {"status": dict(status)}, namespace=namespace,
                     patch_type=PatchType.MERGE),
    )  # fmt: skip


async def read_project(client: AsyncClient, name: str, uid: str) -> dict[str, Any] | None:
    """The project as it is now; None when it is gone (or is another object of the same name)."""
    return await _read(client, ResearchProjectResource, name, None, uid)


async def read_ingest(client: AsyncClient, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
    return await _read(client, DataIngestResource, name, namespace, uid)


async def _read(
    client: AsyncClient, resource: Any, name: str, namespace: str | None, uid: str | None
) -> dict[str, Any] | None:
    try:
        obj = await kube.call(f"read {name}", client.get(resource, name, namespace=namespace))
    except kube.NotFound:
        return None
    body = dict(obj.to_dict())
    return body if uid is None or (body.get("metadata") or {}).get("uid") == uid else None


async def write_reservation_status(
    client: AsyncClient, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Write a GpuReservation's status; returns the object as stored (with its new resourceVersion)."""
    stored = await kube.call(
        f"write status of gpureservation {namespace}/{name}",
        client.patch(GpuReservationResource.Status, name, {"status": dict(status)}, namespace=namespace,
                     patch_type=PatchType.MERGE),
    )  # fmt: skip
    return dict(stored.to_dict())


async def read_node(client: AsyncClient, name: str) -> dict[str, Any] | None:
    """A FederatedNode as it is now (the reconcile and the probes both start from a fresh read), or None."""
    return await _read(client, FederatedNodeResource, name, None, None)


async def read_peering(client: AsyncClient, name: str) -> dict[str, Any] | None:
    """The status of kopf's peering object `name` (each process: priority, lifetime, last keep-alive), or None
    when the object is missing."""
    found = await _read(client, PeeringResource, name, None, None)
    return None if found is None else dict(found.get("status") or {})


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: a key `new` dropped becomes null, so it is
    removed (a plain merge of `new` would leave it, e.g. a finished backup's `running`)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            if sub := merge_patch(before, value):
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


async def write_node_status(client: AsyncClient, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Write what changed from `old` (the status the reconcile started from) to `new`, removals included."""
    patch = merge_patch(old, new)
    if not patch:
        return
    await kube.call(
        f"write status of federatednode {name}",
        client.patch(FederatedNodeResource.Status, name, {"status": patch}, patch_type=PatchType.MERGE),
    )
