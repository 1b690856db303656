"""Clients of the real backends, for adapter-level integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient, KubeConfig

from support.cluster import Cluster


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(config=KubeConfig.from_file(cluster.kubeconfig), field_manager="enclave-tests")
    try:
        yield client
    finally:
        await client.close()
