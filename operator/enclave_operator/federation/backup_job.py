"""Pure builders for a FederatedNode's backup and restore-drill Jobs, their names and policies (no I/O).

The worker contract (environment) is described in federation/backup_worker.py. Everything a Job needs
lives in the backup namespace, where node users and integrators have no access: the repository key, the
store credential (read the store bucket, write the scratch bucket) and the backup-target credential.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL
from enclave_operator.backends.s3_access import bucket_policy
from enclave_operator.federation.backup_worker import repository
from enclave_operator.settings import BackupTargetSettings, FederationSettings

SERVICE_ACCOUNT = "backup-worker"
WORKER_UID = 65532
SCRATCH_MOUNT = "/scratch"
Mode = Literal["backup", "drill"]


def short_uid(uid: str) -> str:
    """Five characters of the node's uid: Job names of an earlier node of the same name never collide."""
    return hashlib.sha256(uid.encode()).hexdigest()[:5]


def backup_job_name(node: str, uid: str, run: int) -> str:
    """The Job of the node's `run`-th backup: the same name for the same run, so a crash never starts two."""
    return f"backup-{node}-{short_uid(uid)}-{run}"


def drill_job_name(node: str, uid: str, drill: str) -> str:
    return f"drill-{node}-{short_uid(uid)}-{hashlib.sha256(drill.encode()).hexdigest()[:6]}"


def key_secret_name(node: str) -> str:
    """The repository key: without it the backups cannot be read, so Retain keeps it."""
    return f"fn-{node}-restic"


def store_secret_name(node: str) -> str:
    return f"fn-{node}-store-s3"


def target_secret_name(node: str) -> str:
    return f"fn-{node}-target-s3"


def store_user(node: str) -> str:
    """The backup Jobs' MinIO user (and its policy) on the store: reads the store, writes the scratch bucket."""
    return f"fn-{node}-backup"


def target_user(node: str) -> str:
    """The backup Jobs' MinIO user on the target (another name: the target may be the store's endpoint)."""
    return f"fn-{node}-backup-target"


def scratch_bucket(bucket: str) -> str:
    """Where restore drills land, next to the store bucket."""
    return f"{bucket}-drill"


def store_policy(bucket: str, scratch: str) -> dict[str, Any]:
    """Read the store bucket; read and write the scratch bucket (whose every version the drill deletes before it
    restores, records included: they are copies there). Nothing else."""
    read, write = bucket_policy(bucket, False), bucket_policy(scratch, True, protected=False)
    return {"Version": "2012-10-17", "Statement": [*read["Statement"], *write["Statement"]]}


def worker_spec(*, mode: Mode, node: str, job: str, store_endpoint: str, store_secure: bool, bucket: str,
                target: BackupTargetSettings, target_bucket: str, keep: int,
                drill: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """BACKUP_SPEC for the worker."""
    endpoint = target.worker_endpoint or target.endpoint
    spec: dict[str, Any] = {
        "mode": mode,
        "node": node,
        "job": job,
        "source": {"endpoint": store_endpoint, "secure": store_secure, "bucket": bucket},
        "target": {"endpoint": endpoint, "secure": target.secure, "bucket": target_bucket,
                   "repository": repository(endpoint, target.secure, target_bucket)},  # fmt: skip
        "keep": keep,
    }
    if drill is not None:
        spec["drill"] = dict(drill)
    return spec


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def job_manifest(*, name: str, node: str, labels: Mapping[str, str], worker: Mapping[str, Any],
                 settings: FederationSettings) -> dict[str, Any]:  # fmt: skip
    """One pod, least privilege: no API token, non-root, read-only root, a scratch emptyDir for staging."""
    all_labels = {**labels, MANAGED_BY_LABEL: MANAGED_BY, "enclave.io/backup-mode": str(worker["mode"])}
    env = [
        {"name": "BACKUP_SPEC", "value": json.dumps(dict(worker), sort_keys=True)},
        {"name": "SCRATCH_DIR", "value": SCRATCH_MOUNT},
        {"name": "TMPDIR", "value": SCRATCH_MOUNT},
        _secret_env("SOURCE_ACCESS_KEY_ID", store_secret_name(node), "AWS_ACCESS_KEY_ID"),
        _secret_env("SOURCE_SECRET_ACCESS_KEY", store_secret_name(node), "AWS_SECRET_ACCESS_KEY"),
        _secret_env("AWS_ACCESS_KEY_ID", target_secret_name(node), "AWS_ACCESS_KEY_ID"),
        _secret_env("AWS_SECRET_ACCESS_KEY", target_secret_name(node), "AWS_SECRET_ACCESS_KEY"),
        _secret_env("RESTIC_PASSWORD", key_secret_name(node), "password"),
    ]
    container = {
        "name": "worker",
        "image": settings.backup_image,
        "command": list(settings.backup_command),
        "env": env,
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_MOUNT}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.backup_namespace, "labels": all_labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": all_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": WORKER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                },
            },
        },
    }


# The schedule (pure).


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def next_due(backup: Mapping[str, Any], interval: datetime.timedelta, retry: datetime.timedelta,
             now: datetime.datetime) -> datetime.datetime:  # fmt: skip
    """When the next backup should start: now for a node never backed up, interval after the last success,
    and never sooner than `retry` after the last failure (a broken target is not hammered)."""
    success = parse_time((backup.get("lastSuccess") or {}).get("time"))
    failure = parse_time((backup.get("lastFailure") or {}).get("time"))
    due = success + interval if success else now
    if failure and (success is None or failure > success):
        due = max(due, failure + retry)
    return due
