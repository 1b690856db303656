"""Writing an object's status subresource (merge patch), only when the reconciler says it changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from enclave_operator.api import GROUP, VERSION
from enclave_operator.api.data_ingest import KIND as INGEST_KIND
from enclave_operator.api.research_project import KIND as PROJECT_KIND
from enclave_operator.backends import kube

ResearchProjectResource = create_global_resource(GROUP, VERSION, PROJECT_KIND.kind, PROJECT_KIND.plural)
DataIngestResource = create_namespaced_resource(GROUP, VERSION, INGEST_KIND.kind, INGEST_KIND.plural)


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
