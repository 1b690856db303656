"""The backup worker (enclave-backup-worker) with real restic against two real MinIO endpoints: the node's
store and a separate backup target, each reached only with the scoped credentials the operator makes."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from enclave_operator.backends import s3_access, s3_minio
from enclave_operator.federation import backup_job, backup_worker
from enclave_operator.settings import BackupTargetSettings
from localenv.runtime import REPO_ROOT
from support.s3users import client_for

WORKER = REPO_ROOT / ".venv" / "bin" / "enclave-backup-worker"
OBJECTS = {
    "ct/1.2.3/instance-1.dcm": secrets.token_bytes(70_000),
    "ct/1.2.3/instance-2.dcm": secrets.token_bytes(1_500_000),
    "notes/with space é.txt": b"de-identified notes\n",
    "_manifest.json": b'{"ingest": "x"}',
}


def _admin(minio: dict[str, Any]) -> s3_minio.S3Clients:
    return s3_minio.S3Clients(s3_minio.S3Connection(minio["endpoint"], minio["access_key"], minio["secret_key"],
                                                    secure=False))  # fmt: skip


def _user(clients: s3_minio.S3Clients, name: str, policy: dict[str, Any]) -> str:
    secret = secrets.token_urlsafe(24)
    clients.admin.policy_add(name, policy=policy)
    clients.admin.user_add(name, secret)
    clients.admin.attach_policy([name], user=name)
    return secret


@pytest.fixture
def node(minio: dict[str, Any], minio_backup: dict[str, Any], restic_binary: Path, tmp_path: Path) -> dict[str, Any]:
    """A node's store bucket with objects, its scratch bucket, a target bucket, and the scoped users."""
    name = f"n{secrets.token_hex(4)}"
    store, target = _admin(minio), _admin(minio_backup)
    bucket, scratch, target_bucket = f"fn-{name}", backup_job.scratch_bucket(f"fn-{name}"), f"fn-{name}-backup"
    for clients, b in ((store, bucket), (store, scratch), (target, target_bucket)):
        clients.s3.make_bucket(b)
    for key, data in OBJECTS.items():
        store.s3.put_object(bucket, key, io.BytesIO(data), len(data))
    user, target_user = backup_job.store_user(name), backup_job.target_user(name)
    store_secret = _user(store, user, backup_job.store_policy(bucket, scratch))
    target_secret = _user(target, target_user, s3_access.bucket_policy(target_bucket, True))
    settings = BackupTargetSettings(name="offsite", endpoint=minio_backup["endpoint"], secure=False)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SOURCE_ACCESS_KEY_ID": user,
        "SOURCE_SECRET_ACCESS_KEY": store_secret,
        "AWS_ACCESS_KEY_ID": target_user,
        "AWS_SECRET_ACCESS_KEY": target_secret,
        "RESTIC_PASSWORD": secrets.token_urlsafe(24),
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "RESTIC_BINARY": str(restic_binary),
    }
    return {"name": name, "bucket": bucket, "scratch": scratch, "target_bucket": target_bucket, "env": env,
            "settings": settings, "store": store, "target": target, "minio": minio}  # fmt: skip


def _run(node: dict[str, Any], mode: str, job: str, *, drill: dict[str, str] | None = None,
         env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    spec = backup_job.worker_spec(mode=mode, node=node["name"], job=job, store_endpoint=node["minio"]["endpoint"],  # type: ignore[arg-type]
                                  store_secure=False, bucket=node["bucket"], target=node["settings"],
                                  target_bucket=node["target_bucket"], keep=5, drill=drill)  # fmt: skip
    run_env = {**node["env"], **(env or {}), "BACKUP_SPEC": json.dumps(spec)}
    result = subprocess.run([str(WORKER)], env=run_env, capture_output=True, text=True, timeout=600)
    body = node["target"].s3.get_object(node["target_bucket"], backup_worker.report_key(job)).read()
    for secret in (run_env["RESTIC_PASSWORD"], run_env["SOURCE_SECRET_ACCESS_KEY"], run_env["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in result.stderr + result.stdout + body.decode(), "a secret reached the log or report"
    return result.returncode, json.loads(body)


def test_backup_then_drill_restores_every_object_byte_identical(node: dict[str, Any]) -> None:
    code, report = _run(node, "backup", "backup-1")
    assert code == 0 and report["ok"], report
    assert report["objects"] == len(OBJECTS) and report["bytes"] == sum(len(d) for d in OBJECTS.values())
    assert report["repositoryCreated"] is True and len(report["snapshot"]) == 64

    # The repository is encrypted: no object's bytes appear anywhere in the backup bucket.
    target = node["target"].s3
    needle = OBJECTS["ct/1.2.3/instance-1.dcm"][1000:1064]
    for obj in target.list_objects(node["target_bucket"], prefix="restic/", recursive=True):
        assert needle not in target.get_object(node["target_bucket"], obj.object_name).read()

    # After the backup one object changes and one goes: the drill still restores the snapshot exactly.
    store = node["store"].s3
    store.put_object(node["bucket"], "notes/with space é.txt", io.BytesIO(b"changed"), 7)
    store.remove_object(node["bucket"], "_manifest.json")
    code, drill = _run(node, "drill", "drill-1", drill={"snapshot": "latest", "scratchBucket": node["scratch"]})
    assert code == 0 and drill["ok"], drill
    assert (drill["objects"], drill["mismatches"], drill["snapshot"]) == (len(OBJECTS), 0, report["snapshot"])
    assert drill["comparedLive"] == 2, "the two unchanged objects are also compared with the live ones"
    for key, data in OBJECTS.items():
        assert store.get_object(node["scratch"], key).read() == data, key


def test_second_backup_is_deduplicated_and_a_snapshot_can_be_chosen(node: dict[str, Any]) -> None:
    _, first = _run(node, "backup", "backup-1")
    node["store"].s3.put_object(node["bucket"], "late.txt", io.BytesIO(b"late"), 4)
    _, second = _run(node, "backup", "backup-2")
    assert second["ok"] and second["objects"] == len(OBJECTS) + 1
    assert second["addedBytes"] < 100_000, "unchanged objects are not stored again"
    code, drill = _run(node, "drill", "drill-old", drill={"snapshot": first["snapshot"][:12],
                                                           "scratchBucket": node["scratch"]})  # fmt: skip
    assert code == 0 and drill["objects"] == len(OBJECTS) and drill["snapshot"] == first["snapshot"]
    assert "late.txt" not in {o.object_name for o in node["store"].s3.list_objects(node["scratch"], recursive=True)}


def test_a_wrong_repository_key_fails_with_a_report(node: dict[str, Any]) -> None:
    assert _run(node, "backup", "backup-1")[0] == 0
    code, report = _run(node, "backup", "backup-2", env={"RESTIC_PASSWORD": "not-the-key"})
    assert code == 1 and not report["ok"] and "restic cannot open the repository" in report["error"]


def test_the_store_credential_cannot_write_the_store(node: dict[str, Any]) -> None:
    """Least privilege: the backup Job reads the store; it can write only the scratch bucket."""
    env = node["env"]
    client = client_for(node["minio"], env["SOURCE_ACCESS_KEY_ID"], env["SOURCE_SECRET_ACCESS_KEY"])
    with pytest.raises(s3_minio.S3Error) as denied:
        client.put_object(node["bucket"], "x", io.BytesIO(b"x"), 1)
    assert denied.value.code == "AccessDenied"
    client.put_object(node["scratch"], "x", io.BytesIO(b"x"), 1)
