"""The ResearchProject reconciler against the real API server and real MinIO, driven with explicit
dates: what the resync timer does when a governance date passes without anyone touching the object."""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace, ResourceQuota, Secret
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from enclave_operator.backends import s3_minio
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.ingest import job as ingest_job
from enclave_operator.reconcilers import research_project
from enclave_operator.settings import parse
from support.builders import ProjectBuilder
from support.ingest import make_deid_key
from support.s3users import can, client_for

VALID_UNTIL = datetime.date(2030, 1, 1)


Outcome = tuple[research_project.ReconcileResult, ListRecorder]


async def _run(kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], name: str, spec: dict,
               status: dict | None, today: datetime.date) -> Outcome:  # fmt: skip
    settings = parse({"s3": {"endpoint": minio["endpoint"], "secure": False}})
    recorder = ListRecorder()
    result = await research_project.reconcile(
        name=name, generation=1, raw_spec=spec, current_status=status,
        backends=research_project.Backends(kube, s3), settings=settings, recorder=recorder, today=today,
    )  # fmt: skip
    return result, recorder


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


async def test_the_date_alone_cordons_and_a_repeat_writes_nothing(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], people: dict[str, str], project_name: str
) -> None:
    spec = ProjectBuilder(project_name).member("bob").valid_until(VALID_UNTIL.isoformat()).deletion("Delete").spec()
    first, _ = await _run(kube, s3, minio, project_name, spec, None, VALID_UNTIL)
    assert _cond(first.status, "Ready")["status"] == "True", first.message
    assert _cond(first.status, "Cordoned")["status"] == "False", "the last valid day is not cordoned"
    s3.s3.put_object(project_name, "probe.txt", io.BytesIO(b"x"), 1)
    bob = client_for(minio, "bob", people["bob"])
    assert can("write", bob, project_name)

    # The timer's next run, the day after validUntil: same spec, same generation, nobody touched anything.
    later = VALID_UNTIL + datetime.timedelta(days=1)
    cordoned, recorder = await _run(kube, s3, minio, project_name, spec, first.status, later)
    assert cordoned.changed and cordoned.writes > 0
    assert _cond(cordoned.status, "Cordoned")["status"] == "True"
    assert _cond(cordoned.status, "Ready")["status"] == "True"
    assert ("Normal", "CordonedProject") in {(t, r) for t, r, _ in recorder.events}
    quota = await kube.get(ResourceQuota, "enclave-quota", namespace=project_name)
    assert quota.spec.hard["pods"] == "0"
    bindings = [b.metadata.name async for b in kube.list(RoleBinding, namespace=project_name)]
    assert sorted(bindings) == ["enclave-project-group", "enclave-viewer"]
    assert can("read", bob, project_name) and not can("write", bob, project_name)

    again, recorder = await _run(kube, s3, minio, project_name, spec, cordoned.status, later)
    assert (again.writes, again.changed, recorder.events) == (0, False, []), "a quiet resync must not write"

    finalized = await research_project.finalize(
        name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3),
        settings=parse({"s3": {"endpoint": minio["endpoint"]}}), recorder=ListRecorder(), today=later,
    )  # fmt: skip
    assert finalized.done
    assert not s3.s3.bucket_exists(project_name)
    assert project_name + "-app" not in json.loads(s3.admin.user_list())


async def test_an_unreachable_minio_fails_only_the_storage_part(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    from localenv.runtime import free_port

    spec = ProjectBuilder(project_name).deletion("Delete").spec()
    dead = {**minio, "endpoint": f"127.0.0.1:{free_port()}"}
    conn = s3_minio.S3Connection(dead["endpoint"], minio["access_key"], minio["secret_key"], secure=False,
                                 timeout_seconds=2)  # fmt: skip
    result, recorder = await _run(kube, s3_minio.S3Clients(conn), dead, project_name, spec, None, VALID_UNTIL)
    assert _cond(result.status, "NamespaceReady")["status"] == "True"
    storage = _cond(result.status, "StorageReady")
    assert storage["status"] == "False" and storage["reason"] == "BackendUnavailable"
    assert minio["secret_key"] not in json.dumps(result.status) + repr(recorder.events), "no secret in status/events"
    assert result.retry
    assert (
        _cond(result.status, "Ready")["status"] == "False"
        and "StorageReady" in _cond(result.status, "Ready")["message"]
    )
    # The store comes back: the next run converges.
    healed, _ = await _run(kube, s3, minio, project_name, spec, result.status, VALID_UNTIL)
    assert _cond(healed.status, "Ready")["status"] == "True"
    await research_project.finalize(
        name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3),
        settings=parse({"s3": {"endpoint": minio["endpoint"]}}), recorder=ListRecorder(), today=VALID_UNTIL,
    )  # fmt: skip


async def test_finding_8_5_values_the_api_server_normalises_cause_no_rewrites(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    """cpu 0.0015 reads back as 2m, 1.0005 as 1001m: a resync after that must not write again."""
    spec = ProjectBuilder(project_name).deletion("Delete").spec()
    spec["compute"] = {"kubernetes": {"cpu": "1.0005", "memory": "1.5Gi", "storage": "1e9"}}
    first, _ = await _run(kube, s3, minio, project_name, spec, None, VALID_UNTIL)
    assert _cond(first.status, "Ready")["status"] == "True", first.message
    quota = await kube.get(ResourceQuota, "enclave-quota", namespace=project_name)
    assert quota.spec.hard["requests.cpu"] == "1001m", "the API server rounded it"
    again, recorder = await _run(kube, s3, minio, project_name, spec, first.status, VALID_UNTIL)
    assert (again.writes, again.changed, recorder.events) == (0, False, []), recorder.events
    await research_project.finalize(
        name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3),
        settings=parse({"s3": {"endpoint": minio["endpoint"]}}), recorder=ListRecorder(), today=VALID_UNTIL,
    )  # fmt: skip


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
async def test_finding_14_5_the_deidentification_key_follows_the_deletion_policy(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str, policy: str
) -> None:
    spec = ProjectBuilder(project_name).member("bob").valid_until(VALID_UNTIL.isoformat()).deletion(policy).spec()
    today = VALID_UNTIL - datetime.timedelta(days=30)
    first, _ = await _run(kube, s3, minio, project_name, spec, None, today)
    settings = parse({"s3": {"endpoint": minio["endpoint"]}})
    ingest_ns = settings.ingest.namespace
    fate = "Kept" if policy == "Retain" else "Deleted"
    assert first.status["deidentificationKey"] == {"secret": f"{ingest_ns}/deid-key-{project_name}", "onDelete": fate}
    await make_deid_key(kube, ingest_ns, ingest_job.key_secret_name(project_name))

    recorder = ListRecorder()
    finalized = await research_project.finalize(
        name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3), settings=settings,
        recorder=recorder, today=today,
    )  # fmt: skip
    assert finalized.done, finalized.message
    name = ingest_job.key_secret_name(project_name)
    remaining = [s.metadata.name async for s in kube.list(Secret, namespace=ingest_ns)]
    events = {reason for _, reason, _ in recorder.events}
    if policy == "Delete":
        assert name not in remaining, "a later project with this name would inherit the key"
        assert "DeletedDeidentificationKey" in events
    else:
        assert name in remaining, "Retain keeps the key with the retained data"
        assert "RetainedDeidentificationKey" in events
        await kube.delete(Secret, name, namespace=ingest_ns)
        await research_project.finalize(
            name=project_name, raw_spec={**spec, "deletionPolicy": "Delete"},
            backends=research_project.Backends(kube, s3), settings=settings, recorder=ListRecorder(), today=today,
        )  # fmt: skip


async def test_finding_14_7_deletion_removes_what_was_made_after_the_naming_templates_changed(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    spec = ProjectBuilder(project_name).member("bob").valid_until(VALID_UNTIL.isoformat()).deletion("Delete").spec()
    today = VALID_UNTIL - datetime.timedelta(days=30)
    made, _ = await _run(kube, s3, minio, project_name, spec, None, today)
    assert (made.status["namespace"], made.status["bucket"]) == (project_name, project_name)

    # The platform team renames the templates; the project keeps its names, and its deletion finds them.
    naming = {"namespace": "ns-{project}", "bucket": "data-{project}", "group": "grp-{project}"}
    renamed = parse({"s3": {"endpoint": minio["endpoint"], "secure": False}, "naming": naming})
    again = await research_project.reconcile(
        name=project_name, generation=1, raw_spec=spec, current_status=made.status,
        backends=research_project.Backends(kube, s3), settings=renamed, recorder=ListRecorder(), today=today,
    )  # fmt: skip
    assert (again.status["namespace"], again.status["bucket"], again.writes) == (project_name, project_name, 0)
    finalized = await research_project.finalize(
        name=project_name, raw_spec=spec, backends=research_project.Backends(kube, s3), settings=renamed,
        recorder=ListRecorder(), today=today, current_status=again.status,
    )  # fmt: skip
    assert finalized.done, finalized.message
    assert not s3.s3.bucket_exists(project_name), "the bucket made under the old template was left behind"
    namespace = await kube.get(Namespace, project_name)
    assert namespace.metadata.deletionTimestamp is not None or namespace.status.phase == "Terminating"
