"""The namespace adapter against the real API server."""

from __future__ import annotations

import asyncio

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from enclave_operator.backends import kube as kube_api
from enclave_operator.backends import kube_namespace, ownership
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from support.cluster import Cluster


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


async def test_the_operators_client_keeps_to_its_connections(cluster: Cluster) -> None:
    """At most `throttle.kubernetesConnections`, all kept open (backends/kube.py `client`); requests beyond them wait
    for one, also while watches hold some, and none fails."""
    client = kube_api.client(KubeConfig.from_file(cluster.kubeconfig), timeout=10, connections=8)
    watches = [asyncio.create_task(anext(aiter(client.watch(Namespace)))) for _ in range(3)]
    try:
        for _ in range(3):
            answers = await asyncio.gather(*(client.get(Namespace, "default") for _ in range(40)))
            assert {a.metadata.name for a in answers} == {"default"}
        httpx = client._client._client  # lightkube's httpx client, with the transport kube.client made
        pool = httpx._transport._pool
        assert 3 < len(pool.connections) <= 8, pool.connections
        assert httpx.timeout.pool is None and httpx.timeout.read == 10, "waits for a connection, not for an answer"
        assert all(not c.is_closed() for c in pool.connections), "kept open between the bursts"
    finally:
        for watch in watches:
            watch.cancel()
        await client.close()


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that tunnels to anywhere and records where."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, _ = (await reader.readline()).decode().split(" ", 2)
        while (await reader.readline()).strip():
            pass
        assert method == "CONNECT", method
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


async def test_the_operators_client_takes_its_proxy_from_the_environment(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY and NO_PROXY apply to the API server as they did with lightkube's default client (httpx reads the
    environment only for transports it makes itself)."""
    config = KubeConfig.from_file(cluster.kubeconfig)
    server = config.get().cluster.server.removeprefix("https://")
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with (proxy := ConnectProxy()) as url:
        monkeypatch.setenv("HTTPS_PROXY", url)
        client = kube_api.client(config, connections=8)
        try:
            assert (await client.get(Namespace, "default")).metadata.name == "default"
        finally:
            await client.close()
        assert proxy.targets == [server], proxy.targets

        monkeypatch.setenv("NO_PROXY", server.rsplit(":", 1)[0])
        client = kube_api.client(config, connections=8)
        try:
            assert (await client.get(Namespace, "default")).metadata.name == "default"
        finally:
            await client.close()
        assert proxy.targets == [server], "NO_PROXY: straight to the API server"
