"""S3 clients acting as a given identity (a member, or a project's own credential)."""

from __future__ import annotations

import base64
import io
from typing import Any

from minio import Minio, S3Error
from support.cluster import Cluster


def client_for(minio: dict[str, Any], access_key: str, secret_key: str) -> Minio:
    return Minio(minio["endpoint"], access_key=access_key, secret_key=secret_key, secure=False)


def project_credential(cluster: Cluster, namespace: str) -> tuple[str, str]:
    secret = cluster.get_json("secret", "project-s3", "-n", namespace)
    assert secret, f"no project-s3 secret in {namespace}"
    data = secret["data"]
    return base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode(), base64.b64decode(
        data["AWS_SECRET_ACCESS_KEY"]
    ).decode()


def can(action: str, client: Minio, bucket: str) -> bool:
    """Whether `client` may list, read or write `bucket` (probe.txt must exist for read); AccessDenied is
    False, any other error fails the test."""
    try:
        if action == "list":
            list(client.list_objects(bucket))
        elif action == "read":
            client.get_object(bucket, "probe.txt").read()
        elif action == "write":
            client.put_object(bucket, "probe.txt", io.BytesIO(b"probe"), 5)
        else:
            raise ValueError(action)
    except S3Error as error:
        if error.code == "AccessDenied":
            return False
        raise
    return True
