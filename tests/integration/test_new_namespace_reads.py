"""Issue 12: a new project's parts do not read inside the namespace they have just created (nothing of theirs can
be there yet), and every other reconcile still reads what is there. Against the real API server and MinIO; the
calls that reach the API server are counted by a wrapper around the real client."""

from __future__ import annotations

import collections
import datetime
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from enclave_operator.backends import ownership, s3_minio
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.reconcilers import research_project
from enclave_operator.settings import parse
from support.builders import ProjectBuilder

TODAY = datetime.date(2030, 1, 1)
INSIDE = ("RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy", "Secret")
"""The kinds a project's parts keep in its namespace."""


class Counting:
    """The real client; every call that reaches the API server is counted by (verb, kind)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()

    def __getattr__(self, verb: str) -> Callable[..., Any]:
        method = getattr(self.client, verb)

        def call(resource: Any, *args: Any, **kwargs: Any) -> Any:
            kind = resource if isinstance(resource, type) else type(resource)
            self.calls[(verb, kind.__name__)] += 1
            return method(resource, *args, **kwargs)

        return call

    def reads_of(self, kinds: tuple[str, ...]) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self.calls.items() if k[0] in ("get", "list") and k[1] in kinds}


async def _reconcile(kube: Any, s3: s3_minio.S3Clients, minio: dict[str, Any], name: str, spec: dict[str, Any],
                     status: dict[str, Any] | None) -> research_project.ReconcileResult:  # fmt: skip
    settings = parse({"s3": {"endpoint": minio["endpoint"], "secure": False}})
    return await research_project.reconcile(
        name=name, generation=1, raw_spec=spec, current_status=status, backends=research_project.Backends(kube, s3),
        settings=settings, recorder=ListRecorder(), today=TODAY, uid="uid-1",
    )  # fmt: skip


async def _inside(kube: AsyncClient, namespace: str) -> dict[str, list[str]]:
    kinds = (RoleBinding, ResourceQuota, LimitRange, NetworkPolicy, Secret)
    return {k.__name__: sorted([o.metadata.name async for o in kube.list(k, namespace=namespace)]) for k in kinds}


def _ready(status: dict[str, Any]) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == "Ready")


async def test_a_new_project_reads_nothing_inside_its_new_namespace_and_a_resync_reads_it_all(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], people: dict[str, str], project_name: str
) -> None:
    spec = ProjectBuilder(project_name).member("bob").deletion("Delete").spec()
    counting = Counting(kube)
    settings = parse({"s3": {"endpoint": minio["endpoint"], "secure": False}})
    try:
        first = await _reconcile(counting, s3, minio, project_name, spec, None)
        assert _ready(first.status) == "True", first.message
        assert counting.calls[("create", "Namespace")] == 1, "the reconcile made the namespace"
        assert counting.reads_of(INSIDE) == {}, "nothing of the project's could be in a namespace made moments ago"
        made = await _inside(kube, project_name)
        assert all(made[kind] for kind in INSIDE), f"every part wrote its objects: {made}"

        # A resync of the same project: the namespace exists, so every part reads what is there, finds it as
        # desired and writes nothing.
        counting.calls.clear()
        again = await _reconcile(counting, s3, minio, project_name, spec, first.status)
        assert _ready(again.status) == "True" and again.writes == 0, again.message
        read = {kind for _, kind in counting.reads_of(INSIDE)}
        assert read == set(INSIDE), f"a reconcile of an existing namespace reads every kind inside: {read}"

        # Something removed behind the operator's back is found by the next reconcile, as before.
        await kube.delete(RoleBinding, next(iter(made["RoleBinding"])), namespace=project_name)
        repaired = await _reconcile(counting, s3, minio, project_name, spec, again.status)
        assert repaired.writes > 0 and (await _inside(kube, project_name)) == made
    finally:
        done = await research_project.finalize(
            name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3), settings=settings,
            recorder=ListRecorder(), today=TODAY, uid="uid-1",
        )  # fmt: skip
        assert done.done, done.message


async def test_the_client_asks_again_for_a_kind_once_it_wrote_it_and_always_for_what_kubernetes_adds(
    kube: AsyncClient, project_name: str
) -> None:
    counting = Counting(kube)
    guarded = ownership.OwnedNamespaces(counting, ownership.Owner(project_name))  # type: ignore[arg-type]
    labels = {ownership.OWNER_LABEL: project_name}
    await guarded.create(Namespace(metadata=ObjectMeta(name=project_name, labels=labels)))
    try:
        assert [s async for s in guarded.list(Secret, namespace=project_name)] == []
        assert counting.reads_of(("Secret",)) == {}, "a Secret cannot be there yet: not asked"
        secret = Secret(metadata=ObjectMeta(name="probe", namespace=project_name), stringData={"k": "v"})
        await guarded.create(secret)
        assert (await guarded.get(Secret, "probe", namespace=project_name)).metadata.name == "probe"
        assert counting.reads_of(("Secret",)) == {("get", "Secret"): 1}, "after its own write it asks the server"
        assert [r async for r in guarded.list(RoleBinding, namespace=project_name)] == []
        assert counting.reads_of(("RoleBinding",)) == {}
        [_ async for _ in guarded.list(ServiceAccount, namespace=project_name)]
        [_ async for _ in guarded.list(ConfigMap, namespace=project_name)]
        expected = {("list", "ServiceAccount"): 1, ("list", "ConfigMap"): 1}
        assert counting.reads_of(("ServiceAccount", "ConfigMap")) == expected, "Kubernetes' own controllers fill these"

        # A second client (the next reconcile) did not create the namespace: it asks for everything.
        fresh = ownership.OwnedNamespaces(counting, ownership.Owner(project_name))  # type: ignore[arg-type]
        assert [r async for r in fresh.list(RoleBinding, namespace=project_name)] == []
        assert counting.reads_of(("RoleBinding",)) == {("list", "RoleBinding"): 1}
    finally:
        await kube.delete(Namespace, project_name)
