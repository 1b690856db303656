"""Issue 8, finding 1 at the reconciler and client layer, against the real API server and MinIO: a project
whose namespace exists and is not its own writes nothing there (no RoleBinding, quota, limits, network
policy or `project-s3` Secret), says why in a condition, and is deleted without hanging (finding 3)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, LimitRange, Namespace, ResourceQuota, Secret
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from enclave_operator import reasons
from enclave_operator.backends import ownership, s3_minio
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.reconcilers import research_project
from enclave_operator.settings import parse
from support.builders import ProjectBuilder

TODAY = datetime.date(2030, 1, 1)
NAMESPACED_PARTS = (RoleBinding, ResourceQuota, LimitRange, NetworkPolicy, Secret)


def _settings(minio: dict[str, Any]) -> Any:
    return parse({"s3": {"endpoint": minio["endpoint"], "secure": False}})


async def _names(kube: AsyncClient, namespace: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind in NAMESPACED_PARTS:
        found[kind.__name__] = sorted([o.metadata.name async for o in kube.list(kind, namespace=namespace)])
    return found


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


async def test_finding_8_1_a_foreign_namespace_gets_nothing_written_and_deletion_does_not_hang(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    await kube.create(Namespace(metadata=ObjectMeta(name=project_name, labels={"team": "radiology-it"})))
    try:
        before = await _names(kube, project_name)
        spec = ProjectBuilder(project_name).member("bob").deletion("Delete").spec()
        backends = research_project.Backends(kube, s3)
        result = await research_project.reconcile(
            name=project_name, generation=1, raw_spec=spec, current_status=None, backends=backends,
            settings=_settings(minio), recorder=ListRecorder(), today=TODAY, uid="uid-1",
        )  # fmt: skip
        ns_cond = _cond(result.status, reasons.NAMESPACE_READY)
        assert (ns_cond["status"], ns_cond["reason"]) == ("False", reasons.REASON_NOT_OWNED), ns_cond
        assert "belongs to no enclave project" in ns_cond["message"]
        assert _cond(result.status, reasons.STALLED)["status"] == "True", "a human has to act"
        assert _cond(result.status, reasons.READY)["status"] == "False"
        assert _cond(result.status, reasons.STORAGE_READY)["reason"] == reasons.REASON_NOT_OWNED, "no project-s3"
        assert await _names(kube, project_name) == before, "nothing written into the foreign namespace"

        finalized = await research_project.finalize(
            name=project_name, raw_spec=spec, backends=backends, settings=_settings(minio),
            recorder=ListRecorder(), today=TODAY, uid="uid-1",
        )  # fmt: skip
        assert finalized.done, finalized.message
        ns = await kube.get(Namespace, project_name)
        assert ns.metadata.deletionTimestamp is None, "the foreign namespace is left alone"
        assert not s3.s3.bucket_exists(project_name), "what the project did own is removed"
    finally:
        await kube.delete(Namespace, project_name)


async def test_finding_8_1_a_reserved_namespace_name_plans_nothing(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any]
) -> None:
    """A project named kube-public (admitted before the webhook refused such names) touches nothing."""
    before = await _names(kube, "kube-public")
    spec = ProjectBuilder("kube-public").member("bob").spec()
    backends = research_project.Backends(kube, s3)
    result = await research_project.reconcile(
        name="kube-public", generation=1, raw_spec=spec, current_status=None, backends=backends,
        settings=_settings(minio), recorder=ListRecorder(), today=TODAY, uid="uid-1",
    )  # fmt: skip
    stalled = _cond(result.status, reasons.STALLED)
    assert stalled["status"] == "True" and "reserved (kube-*)" in stalled["message"]
    assert result.writes == 0 and await _names(kube, "kube-public") == before
    assert not s3.s3.bucket_exists("kube-public")
    finalized = await research_project.finalize(
        name="kube-public", raw_spec=spec, backends=backends, settings=_settings(minio), recorder=ListRecorder(),
        today=TODAY, uid="uid-1",
    )  # fmt: skip
    assert finalized.done


async def test_finding_8_1_any_namespaced_call_through_the_project_client_is_checked(
    kube: AsyncClient, project_name: str
) -> None:
    """The guard is in the client every part gets, so a part added tomorrow cannot forget it."""
    owner = ownership.Owner(project_name)
    mine, theirs = f"{project_name}-a", f"{project_name}-b"
    await kube.create(Namespace(metadata=ObjectMeta(name=mine, labels={ownership.OWNER_LABEL: project_name})))
    await kube.create(Namespace(metadata=ObjectMeta(name=theirs, labels={ownership.OWNER_LABEL: "someone-else"})))
    try:
        guarded = ownership.OwnedNamespaces(kube, owner)
        config = ConfigMap(metadata=ObjectMeta(name="probe"), data={"k": "v"})
        await guarded.create(config, namespace=mine)
        assert (await guarded.get(ConfigMap, "probe", namespace=mine)).data == {"k": "v"}
        for call in (
            lambda: guarded.create(ConfigMap(metadata=ObjectMeta(name="probe", namespace=theirs))),
            lambda: guarded.get(Secret, "anything", namespace=theirs),
            lambda: guarded.delete(Namespace, theirs),
            lambda: guarded.patch(Namespace, theirs, {"metadata": {"labels": {"x": "y"}}}),
        ):
            with pytest.raises(ownership.NotOwned, match="belongs to project someone-else"):
                await call()
        with pytest.raises(ownership.NotOwned):
            await guarded.list(RoleBinding, namespace=theirs).__anext__()
        assert "probe" not in [c.metadata.name async for c in kube.list(ConfigMap, namespace=theirs)]
    finally:
        await kube.delete(Namespace, mine)
        await kube.delete(Namespace, theirs)
