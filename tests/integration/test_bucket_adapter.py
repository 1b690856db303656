"""The bucket adapter against the real MinIO."""

from __future__ import annotations

import io

import pytest

from enclave_operator.backends import s3_minio
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.backends.errors import BackendRejected
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder


def _adapter(s3: s3_minio.S3Clients, name: str, quota: int = 2**30, versioning: bool = True) -> s3_minio.BucketAdapter:
    return s3_minio.BucketAdapter(s3, s3_minio.DesiredBucket(name, name, quota, versioning))


async def test_create_sets_tag_versioning_and_quota(s3: s3_minio.S3Clients, project_name: str) -> None:
    outcome = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert outcome.condition.status == "True" and outcome.wrote
    assert s3.s3.get_bucket_versioning(project_name).status == "Enabled"
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.PROJECT_TAG] == project_name
    assert s3_minio.parse_quota(s3.admin.bucket_quota_get(project_name)) == 2**30
    again = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert not again.wrote, "a resync with nothing changed must not write"


async def test_quota_and_versioning_drift_is_repaired(s3: s3_minio.S3Clients, project_name: str) -> None:
    await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    changed = _adapter(s3, project_name, quota=5 * 2**30, versioning=False)
    observed = await changed.observe()
    assert not observed.up_to_date and "quota" in observed.diff and "versioning" in observed.diff
    recorder = ListRecorder()
    assert (await managed.reconcile_part(changed, recorder)).condition.status == "True"
    assert recorder.events[0][1] == "UpdatedBucket"
    assert s3_minio.parse_quota(s3.admin.bucket_quota_get(project_name)) == 5 * 2**30


async def test_retain_keeps_bucket_and_objects_delete_removes_all_versions(
    s3: s3_minio.S3Clients, project_name: str
) -> None:
    adapter = _adapter(s3, project_name)
    await managed.reconcile_part(adapter, ListRecorder())
    for version in (b"one", b"two"):
        s3.s3.put_object(project_name, "data/x.csv", io.BytesIO(version), len(version))
    assert (await managed.finalize_part(adapter, "Retain", ListRecorder())).message == "retained"
    assert s3.s3.get_object(project_name, "data/x.csv").read() == b"two"
    done = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert done.done and done.message == "deleted"
    assert not s3.s3.bucket_exists(project_name)
    assert (await adapter.delete("Delete")) is DeleteOutcome.DELETED, "deleting a missing bucket is not an error"


async def test_bucket_of_another_project_is_not_adopted(s3: s3_minio.S3Clients, project_name: str) -> None:
    await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    intruder = s3_minio.BucketAdapter(s3, s3_minio.DesiredBucket(project_name, "other-project", 2**30, True))
    with pytest.raises(BackendRejected, match="belongs to project"):
        await intruder.observe()


async def test_untagged_empty_bucket_from_an_interrupted_create_is_adopted(
    s3: s3_minio.S3Clients, project_name: str
) -> None:
    s3.s3.make_bucket(project_name)  # as if the operator died right after make_bucket
    outcome = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert outcome.condition.status == "True"
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.PROJECT_TAG] == project_name
