"""Pure builders for a DataIngest's worker Job and its scoped destination access (no I/O).

The worker contract (environment variables, INGEST_SPEC) is described in docs/ingest-worker.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from enclave_operator.api.data_ingest import DataIngestSpec
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from enclave_operator.settings import IngestSettings, IngestSourceSettings

INGEST_LABEL = "enclave.io/ingest"
INGEST_REF_ANNOTATION = "enclave.io/ingest-ref"
SERVICE_ACCOUNT = "ingest-worker"
WORKER_UID = 65532


def ingest_id(namespace: str, name: str, uid: str) -> str:
    """Short stable id of one DataIngest (names of its Job, credential and Secret)."""
    return hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:12]


def job_name(ident: str) -> str:
    return f"ingest-{ident}"


def credential_name(ident: str) -> str:
    """MinIO user, policy and (with -s3) Secret of the ingest's destination credential."""
    return f"ingest-{ident}"


def key_secret_name(project: str) -> str:
    """The project's de-identification key, in the ingest namespace where researchers have no access."""
    return f"deid-key-{project}"


def destination_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """Write and read under `bucket/prefix` only; listing only under the prefix."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            },
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{bucket}"]},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
            },
        ],
    }


def worker_spec(
    *,
    ref: str,
    spec: DataIngestSpec,
    source: IngestSourceSettings,
    bucket: str,
    s3_endpoint: str,
    s3_secure: bool,
) -> dict[str, Any]:
    """INGEST_SPEC for the workers: source address from the platform's settings, selection from the spec."""
    if source.kind == "dicomweb":
        selection = spec.source.dicomweb
        src: dict[str, Any] = {"kind": "dicomweb", "url": source.url}
        if selection is not None:
            if selection.studies:
                src["studies"] = list(selection.studies)
            if selection.query:
                src["query"] = dict(selection.query)
    else:
        s3 = spec.source.s3
        assert s3 is not None
        src = {"kind": "s3", "endpoint": source.endpoint, "secure": source.secure, "bucket": s3.bucket,
               "prefix": s3.prefix, "format": s3.format}  # fmt: skip
    deid: dict[str, Any] = {"profile": spec.deidentification.profile, "options": list(spec.deidentification.options)}
    if source.trusted_sop_classes:
        deid["pixels"] = {"trustedSopClasses": [t.model_dump() for t in source.trusted_sop_classes]}
    return {
        "ingest": ref,
        "source": src,
        "deidentification": deid,
        "destination": {
            "endpoint": s3_endpoint,
            "secure": s3_secure,
            "bucket": bucket,
            "prefix": spec.destination.prefix,
        },  # fmt: skip
        "shards": spec.parallelism,
        "retries": 3,
    }


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def job_manifest(
    *,
    ident: str,
    ref: str,
    project: str,
    spec: DataIngestSpec,
    worker: Mapping[str, Any],
    source: IngestSourceSettings,
    settings: IngestSettings,
) -> dict[str, Any]:
    """An Indexed Job, one completion per shard, least privilege: no API token, non-root, read-only root."""
    labels = {INGEST_LABEL: ident, PROJECT_LABEL: project, MANAGED_BY_LABEL: MANAGED_BY}
    env: list[dict[str, Any]] = [{"name": "INGEST_SPEC", "value": json.dumps(dict(worker), sort_keys=True)}]
    if source.credentials_secret:
        env += [
            _secret_env("SOURCE_USERNAME", source.credentials_secret, "username", optional=True),
            _secret_env("SOURCE_PASSWORD", source.credentials_secret, "password", optional=True),
        ]
    env += [
        _secret_env("AWS_ACCESS_KEY_ID", f"{credential_name(ident)}-s3", "AWS_ACCESS_KEY_ID"),
        _secret_env("AWS_SECRET_ACCESS_KEY", f"{credential_name(ident)}-s3", "AWS_SECRET_ACCESS_KEY"),
        _secret_env("DEID_KEY", key_secret_name(project), "key"),
    ]
    container = {
        "name": "worker",
        "image": settings.image,
        "command": list(settings.command),
        "env": env,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
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
        "metadata": {
            "name": job_name(ident),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {INGEST_REF_ANNOTATION: ref},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.parallelism,
            "parallelism": spec.parallelism,
            "backoffLimitPerIndex": settings.backoff_limit_per_index,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels},
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
                },
            },
        },
    }
