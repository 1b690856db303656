"""Issue 12: reconciles of projects and nodes are not kopf handlers, so the work queue asks kopf's peering object
itself whether this process is the active one (engine/workqueue.py).
Against the real API server with kopf's peering CRD: the status as kopf's
keep-alives write it, read through the operator's own client."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from enclave_operator.engine import status as status_io
from enclave_operator.engine.workqueue import PeeringGate
from localenv.webhooks import install_peering
from support.cluster import Cluster

ME, OLDER, YOUNGER = -1_000, -500, -2_000
"""Priorities as `cli.start_priority` makes them: the older the process, the higher."""


def seen(seconds_ago: float, priority: int) -> dict[str, Any]:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": 60, "lastseen": when.isoformat()}


@pytest.fixture
async def peering(crds: Cluster, kube: AsyncClient) -> AsyncIterator[str]:
    """A peering object of its own (not the e2e operator's, which a live peer of higher priority would pause)."""
    install_peering(crds.kubeconfig)
    name = f"resync-gate-{secrets.token_hex(3)}"
    await kube.create(status_io.PeeringResource(metadata=ObjectMeta(name=name)))
    try:
        yield name
    finally:
        await kube.delete(status_io.PeeringResource, name)


async def announce(kube: AsyncClient, name: str, peers: dict[str, Any]) -> None:
    """What kopf's keep-alive does: a merge patch of the object's status (the CRD has no status subresource)."""
    await kube.patch(status_io.PeeringResource, name, {"status": peers}, patch_type=PatchType.MERGE)


async def decide(kube: AsyncClient, name: str) -> bool:
    return await PeeringGate(lambda: status_io.read_peering(kube, name), ME)()


async def test_only_the_oldest_live_process_reconciles(kube: AsyncClient, peering: str) -> None:
    await announce(kube, peering, {"me": seen(1, ME)})
    assert await decide(kube, peering) is True
    await announce(kube, peering, {"younger": seen(1, YOUNGER)})
    assert await decide(kube, peering) is True, "a younger standby does not stop the active process"
    await announce(kube, peering, {"older": seen(5, OLDER)})
    assert await decide(kube, peering) is False, "an older live process is the active one"
    await announce(kube, peering, {"older": seen(120, OLDER)})
    assert await decide(kube, peering) is True, "an older process that stopped answering is not"


async def test_without_the_peering_object_nothing_is_reconciled(crds: Cluster, kube: AsyncClient) -> None:
    install_peering(crds.kubeconfig)
    assert await decide(kube, f"missing-{secrets.token_hex(3)}") is False
