"""The bucket adapter against the real MinIO."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from enclave_operator import metrics, reasons
from enclave_operator.backends import ownership, s3_access, s3_minio
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from enclave_operator.ingest import layout
from minio import S3Error
from support.s3users import client_for


def _adapter(s3: s3_minio.S3Clients, name: str, quota: int = 2**30, versioning: bool = True,
             owner: ownership.Owner | None = None) -> s3_minio.BucketAdapter:  # fmt: skip
    owner = owner or ownership.Owner(name, f"uid-{name}")
    return s3_minio.BucketAdapter(s3, s3_minio.DesiredBucket(name, owner, quota, versioning))


async def test_create_sets_tag_versioning_and_quota(s3: s3_minio.S3Clients, project_name: str) -> None:
    outcome = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert outcome.condition.status == "True" and outcome.wrote
    assert s3.s3.get_bucket_versioning(project_name).status == "Enabled"
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.PROJECT_TAG] == project_name
    assert s3_minio.parse_quota(s3.admin.bucket_quota_get(project_name)) == 2**30
    again = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert not again.wrote, "a resync with nothing changed must not write"


def _s3_reads() -> float:
    return metrics.BACKEND_REQUESTS.labels(backend="s3", kind="read")._value.get()


async def test_a_new_bucket_is_made_after_one_read(s3: s3_minio.S3Clients, project_name: str) -> None:
    """The observe's read says there is none; the create does not ask again (the SDK's region lookup)."""
    adapter = _adapter(s3, project_name)
    before = _s3_reads()
    assert not (await adapter.observe()).exists
    after_observe = _s3_reads()
    assert (await adapter.create()).up_to_date
    assert after_observe - before == 1 and _s3_reads() == after_observe
    assert (await adapter.observe()).up_to_date


async def test_a_bucket_made_since_the_observe_is_taken_as_made(s3: s3_minio.S3Clients, project_name: str) -> None:
    adapter = _adapter(s3, project_name)
    assert not (await adapter.observe()).exists
    s3.s3.make_bucket(project_name)  # e.g. by a second operator process during a take-over, after this one's observe
    assert (await adapter.create()).up_to_date
    assert (await adapter.observe()).up_to_date


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
    intruder = _adapter(s3, project_name, owner=ownership.Owner("other-project", "uid-x"))
    with pytest.raises(ownership.NotOwned, match="belongs to project"):
        await intruder.observe()
    outcome = await managed.reconcile_part(intruder, ListRecorder())
    assert (outcome.condition.reason, outcome.retry) == (reasons.REASON_NOT_OWNED, False)
    finalized = await managed.finalize_part(intruder, "Delete", ListRecorder())
    assert finalized.done and "never ours" in finalized.message and s3.s3.bucket_exists(project_name)


async def test_finding_14_8_a_retained_bucket_is_adopted_only_when_asked(
    s3: s3_minio.S3Clients, project_name: str
) -> None:
    first = _adapter(s3, project_name, owner=ownership.Owner(project_name, "uid-1"))
    await managed.reconcile_part(first, ListRecorder())
    s3.s3.put_object(project_name, "results.csv", io.BytesIO(b"kept"), 4)
    assert (await managed.finalize_part(first, "Retain", ListRecorder())).message == "retained"
    again = _adapter(s3, project_name, owner=ownership.Owner(project_name, "uid-2"))  # same name, new object
    assert (await again.claim()).claim is ownership.Claim.RETAINED
    outcome = await managed.reconcile_part(again, ListRecorder())
    assert (outcome.condition.reason, outcome.retry) == (reasons.REASON_NOT_OWNED, False)
    assert "spec.adopt: [Bucket]" in outcome.condition.message
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.UID_TAG] == "uid-1", "nothing taken silently"
    done = await managed.finalize_part(again, "Delete", ListRecorder())
    assert done.done and s3.s3.bucket_exists(project_name), "deleting the new project leaves the old data alone"
    taker = ownership.Owner(project_name, "uid-2", adopt=frozenset({"Bucket"}))
    recorder = ListRecorder()
    outcome = await managed.reconcile_part(_adapter(s3, project_name, owner=taker), recorder)
    assert outcome.condition.status == "True", outcome.condition
    assert [r for _, r, _ in recorder.events] == ["AdoptedBucket"]
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.UID_TAG] == "uid-2"
    assert s3.s3.get_object(project_name, "results.csv").read() == b"kept"
    await managed.finalize_part(_adapter(s3, project_name, owner=taker), "Delete", ListRecorder())


async def test_untagged_empty_bucket_from_an_interrupted_create_is_adopted(
    s3: s3_minio.S3Clients, project_name: str
) -> None:
    s3.s3.make_bucket(project_name)  # as if the operator died right after make_bucket
    outcome = await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    assert outcome.condition.status == "True"
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.PROJECT_TAG] == project_name


async def test_finding_14_6_writers_cannot_delete_versions_or_the_ingests_records(
    s3: s3_minio.S3Clients, minio: dict[str, Any], project_name: str
) -> None:
    await managed.reconcile_part(_adapter(s3, project_name), ListRecorder())
    await managed.reconcile_part(s3_access.bucket_policies(s3, project_name), ListRecorder())
    rw, _ = s3_access.policy_names(project_name)
    writer_key, writer_secret = f"{project_name}-writer", secrets.token_urlsafe(18)
    s3.admin.user_add(writer_key, writer_secret)
    s3.admin.policy_set(rw, user=writer_key)
    writer = client_for(minio, writer_key, writer_secret)
    first = writer.put_object(project_name, "data/x.csv", io.BytesIO(b"one"), 3)
    writer.put_object(project_name, "data/x.csv", io.BytesIO(b"two"), 3)
    records = [layout.manifest_key("ingest-1"), layout.shard_manifest_key("ingest-1", 0), layout.manifest_key(""),
               layout.progress_key("", 0)]  # fmt: skip
    for key in records:  # as the controller and the workers write them
        s3.s3.put_object(project_name, key, io.BytesIO(b"{}"), 2)

    def denied(call: Callable[[], object]) -> bool:
        try:
            call()
        except S3Error as error:
            return error.code == "AccessDenied"
        return False

    assert denied(lambda: writer.remove_object(project_name, "data/x.csv", version_id=first.version_id)), (
        "a writer deleted an object version"
    )
    writer.remove_object(project_name, "data/x.csv")  # a delete is still allowed: it leaves a delete marker
    assert s3.s3.get_object(project_name, "data/x.csv", version_id=first.version_id).read() == b"one"
    for key in records:
        assert denied(lambda k=key: writer.remove_object(project_name, k)), f"a writer deleted {key}"
        assert denied(lambda k=key: writer.put_object(project_name, k, io.BytesIO(b"forged"), 6)), (
            f"a writer rewrote {key}"
        )
        assert writer.get_object(project_name, key).read() == b"{}", "members still read the records"
    writer.put_object(project_name, "ingest-1/notes.txt", io.BytesIO(b"ok"), 2)  # the rest stays writable
    s3.admin.user_remove(writer_key)
    await managed.finalize_part(s3_access.bucket_policies(s3, project_name), "Delete", ListRecorder())
    await managed.finalize_part(_adapter(s3, project_name), "Delete", ListRecorder())
