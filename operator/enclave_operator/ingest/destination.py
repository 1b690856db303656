"""Writes under the destination prefix with a prefix-scoped credential, with resume by SHA-256.

The credential may only touch ``bucket/prefix*``: this module never lists the bucket,
never checks bucket existence and passes the region explicitly (so the client does not
ask for the bucket location). Every object gets ``x-amz-meta-sha256``; an existing object
whose recorded SHA-256 equals the new bytes' is not written again (resume).
"""

from __future__ import annotations

import io
import json
from typing import Any

from minio.error import S3Error

from .retry import Permanent, with_retries
from .s3client import s3_client
from .spec import DestinationSpec

SHA_META = "x-amz-meta-sha256"
REFUSED = frozenset(
    {
        "AccessDenied",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "InvalidBucketName",
    }
)
ABSENT = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


class DestinationError(RuntimeError):
    """The destination refused or kept failing a write: fatal for the shard."""


class Destination:
    def __init__(self, spec: DestinationSpec, access_key: str, secret_key: str, retries: int) -> None:
        self.spec = spec
        self.retries = retries
        self.client = s3_client(spec.endpoint, access_key, secret_key, spec.secure, spec.region)

    def existing_sha256(self, key: str) -> str | None:
        """Recorded SHA-256 of an existing object, or None (absent, not ours, or not readable)."""

        def attempt() -> str | None:
            try:
                st = self.client.stat_object(self.spec.bucket, key)
            except S3Error as exc:
                if exc.code in ABSENT or exc.code == "AccessDenied":
                    # without s3:GetObject a missing and an unreadable object look alike: write it
                    return None
                if exc.code in REFUSED:
                    raise Permanent(DestinationError(f"destination refused a read (S3 {exc.code})")) from None
                raise DestinationError(f"destination read failed (S3 {exc.code})") from None
            except Exception as exc:  # noqa: BLE001
                raise DestinationError(f"destination read failed ({type(exc).__name__})") from None
            meta = st.metadata or {}
            value = meta.get(SHA_META) or meta.get(SHA_META.title())
            return str(value) if value else None

        return with_retries(attempt, self.retries, retry_on=(DestinationError,))

    def put(self, key: str, data: bytes, sha256: str, content_type: str) -> None:
        def attempt() -> None:
            try:
                self.client.put_object(
                    self.spec.bucket,
                    key,
                    io.BytesIO(data),
                    len(data),
                    content_type=content_type,
                    metadata={SHA_META: sha256},
                )
            except S3Error as exc:
                if exc.code in REFUSED:
                    raise Permanent(DestinationError(f"destination refused a write (S3 {exc.code})")) from None
                raise DestinationError(f"destination write failed (S3 {exc.code})") from None
            except Exception as exc:  # noqa: BLE001
                raise DestinationError(f"destination write failed ({type(exc).__name__})") from None

        with_retries(attempt, self.retries, retry_on=(DestinationError,))

    def put_json(self, key: str, doc: dict[str, Any]) -> None:
        import hashlib

        data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()
        self.put(key, data, hashlib.sha256(data).hexdigest(), "application/json")
