"""The kopf handlers' own guarantees, with each handler called as kopf calls it, against the real API server."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from enclave_operator import handlers
from enclave_operator.backends import s3_minio
from enclave_operator.engine.status import DataIngestResource
from enclave_operator.reconcilers import research_project
from enclave_operator.runtime import Runtime
from enclave_operator.settings import parse
from support.cluster import Cluster


def _handler(registry: kopf.OperatorRegistry, fn_name: str) -> Any:
    return next(h.fn for h in [*registry._changing.get_all_handlers(), *registry._spawning.get_all_handlers()]
                if h.fn.__name__ == fn_name)  # fmt: skip


async def test_finding_14_7_a_stale_body_does_not_rewrite_a_finished_ingest(
    kube: AsyncClient, crds: Cluster, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    """kopf hands a handler the body it had when the handler was scheduled; a poll that waited for the object's
    lock while the event handler finished the ingest must work on the object as it is now, not as it was."""
    settings = parse({"s3": {"endpoint": minio["endpoint"], "secure": False}})
    await kube.create(Namespace(metadata=ObjectMeta(name=project_name)))
    ingest = DataIngestResource(
        metadata=ObjectMeta(name="cohort", namespace=project_name),
        spec={"project": project_name, "source": {"name": "research-pacs", "dicomweb": {}},
              "deidentification": {"profile": "basic"}, "destination": {"prefix": "raw/cohort/"}},
    )  # fmt: skip
    created = await kube.create(ingest)
    running = {"phase": "Running", "job": "enclave-ingest/ingest-x"}
    await kube.patch(DataIngestResource.Status, "cohort", {"status": running}, namespace=project_name,
                     patch_type=PatchType.MERGE)  # fmt: skip
    stale = kopf.Body((await kube.get(DataIngestResource, "cohort", namespace=project_name)).to_dict())
    finished = {"phase": "Succeeded", "manifest": f"s3://{project_name}/raw/cohort/_manifest.json"}
    await kube.patch(DataIngestResource.Status, "cohort", {"status": finished}, namespace=project_name,
                     patch_type=PatchType.MERGE)  # fmt: skip

    runtime = Runtime(settings, research_project.Backends(kube, s3))
    memo = kopf.Memo()
    memo.runtime = runtime
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    uid = created.metadata.uid
    async with runtime.locks[uid]:  # the event handler finishing the ingest; the poll waits behind it
        poll = asyncio.create_task(_handler(registry, "poll_ingest")(body=stale, memo=memo))
        await asyncio.sleep(0.2)
        assert not poll.done()
    await poll
    now = (await kube.get(DataIngestResource, "cohort", namespace=project_name)).to_dict()["status"]
    assert now["phase"] == "Succeeded", f"a stale body rewrote a finished ingest: {now}"
    await kube.delete(Namespace, project_name)
