"""Adapter for the project's S3 bucket on MinIO: existence, ownership tag, versioning and hard quota.

MinIO's Python SDK is synchronous; calls run in a worker thread, each bounded by the configured
timeout.

Cost of the admin API (measured in docs/performance.md): MinIO encrypts some admin requests and answers with
a key derived by Argon2id (64 MiB, serialised by a process-wide mutex in the server: ~0.2 s of CPU on each
side per call, one call at a time). The operator therefore never uses the calls whose *answer* is encrypted
(`user_list`, `attach_policy`; `policy_set` sets the same policies with a plain request), and seals the one
request that must be encrypted (`user_add`, which carries the secret key) with madmin's PBKDF2 variant,
which MinIO accepts from any client (`Admin`).

Ownership (backends/ownership.py): a bucket carries the tags `enclave.io/project` (name) and
`enclave.io/project-uid` (the owning object's uid), because a Retain deletion keeps it. A bucket tagged
for another project, or holding data without tags, is never touched (NotOwned); one retained by an
earlier project of the same name is taken over only when the project asks (spec.adopt: [Bucket]); an
untagged *empty* bucket (a create interrupted before tagging) is adopted by tagging it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from minio.commonconfig import ENABLED, Tags
from minio.credentials import StaticProvider
from minio.deleteobjects import DeleteObject
from minio.error import MinioAdminException
from minio.minioadmin import _COMMAND, MinioAdmin
from minio.versioningconfig import SUSPENDED, VersioningConfig

from enclave_operator import metrics, reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import ownership, throttle
from enclave_operator.backends.adapter import NOT_FOUND, DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable
from minio import Minio, S3Error, crypto

PROJECT_TAG = ownership.OWNER_LABEL
UID_TAG = ownership.OWNER_UID_LABEL
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class S3Connection:
    """How to reach the S3 store as its administrator. The secret never appears in repr."""

    endpoint: str
    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    secure: bool = True
    ca_file: str | None = None
    region: str = ""
    timeout_seconds: float = 10.0
    max_connections: int = 16
    """Pooled connections: as many as calls may run at once (s3.maxConcurrentCalls), so none is discarded."""


READ_METHODS = frozenset({"GET", "HEAD"})


class _CountingPool(urllib3.PoolManager):
    """The HTTP pool of both SDK clients; counts every request it sends (enclave_backend_requests_total)."""

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        metrics.BACKEND_REQUESTS.labels(backend="s3", kind="read" if method in READ_METHODS else "write").inc()
        return super().urlopen(method, url, redirect=redirect, **kw)


PBKDF2_AES_GCM = 0x02
"""madmin's identifier of a body sealed with a PBKDF2-SHA256 key and AES-256-GCM (madmin-go encrypt.go)."""
PBKDF2_ROUNDS = 8192
"""madmin's pbkdf2Cost: what the server derives the key with for PBKDF2_AES_GCM."""


def seal(payload: bytes, password: str) -> bytes:
    """An admin request body as madmin's DecryptData reads it: salt | PBKDF2_AES_GCM | nonce | AES-GCM stream.

    The stream is the one the SDK writes (the same cipher helpers); only the key derivation differs: PBKDF2
    costs a few milliseconds where the SDK's Argon2id costs ~0.2 s of CPU on both sides.
    """
    salt, nonce = os.urandom(32), os.urandom(8)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS, 32)
    additional = crypto._generate_additional_data(0, key, nonce + bytes(4))  # 0: AES-GCM in the SDK's table
    out = [salt, bytes([PBKDF2_AES_GCM]), nonce]
    starts = range(0, len(payload), crypto._CHUNK_SIZE)
    for sequence, start in enumerate(starts, 1):
        if start == starts[-1]:
            additional = crypto._mark_as_last(additional)
        cipher = crypto._get_cipher(0, key, crypto._update_nonce_id(nonce, sequence))
        cipher.update(additional)
        data, tag = cipher.encrypt_and_digest(payload[start : start + crypto._CHUNK_SIZE])
        out += [data, tag]
    return b"".join(out)


class Admin(MinioAdmin):
    """MinioAdmin whose `user_add` seals the secret key with PBKDF2 instead of Argon2id (module docstring)."""

    def user_add(self, access_key: str, secret_key: str) -> str:
        body = json.dumps({"status": "enabled", "secretKey": secret_key}).encode()
        response = self._url_open(method="PUT", command=_COMMAND.ADD_USER, query_params={"accessKey": access_key},
                                  body=seal(body, self._provider.retrieve().secret_key))  # fmt: skip
        return str(response.data.decode())


class S3Clients:
    """The S3 data client and the admin client, sharing one bounded HTTP pool."""

    def __init__(self, conn: S3Connection) -> None:
        self.conn = conn
        http = _CountingPool(
            timeout=urllib3.Timeout(connect=min(5.0, conn.timeout_seconds), read=conn.timeout_seconds),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            maxsize=conn.max_connections,
            cert_reqs="CERT_REQUIRED" if conn.secure else "CERT_NONE",
            ca_certs=conn.ca_file,
        )
        self.http = http
        self.s3 = Minio(
            conn.endpoint,
            access_key=conn.access_key,
            secret_key=conn.secret_key,
            secure=conn.secure,
            region=conn.region or None,
            http_client=http,
        )
        self.admin = Admin(
            endpoint=conn.endpoint,
            credentials=StaticProvider(conn.access_key, conn.secret_key),
            secure=conn.secure,
            http_client=http,
        )


    def region_of(self, bucket: str) -> str:
        """The bucket's region (blocking): the configured one, else the one the SDK looked up once and cached.

        Clients made for other credentials (the credential probe) take it, so they do not look it up again.
        """
        return self.conn.region or self.s3._get_region(bucket)


class AdminError(BackendError):
    """A MinIO admin API error with its code (e.g. XMinioAdminNoSuchUser)."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.code, self.status = code, status
        self.retryable = status >= 500 or status == 0


NOT_FOUND_CODES = frozenset({"XMinioAdminNoSuchUser", "XMinioAdminNoSuchGroup", "XMinioAdminNoSuchPolicy"})
ALREADY_APPLIED = "XMinioAdminPolicyChangeAlreadyApplied"


def _admin_error(what: str, error: MinioAdminException) -> AdminError:
    """Only MinIO's code and message reach the error text: the body holds nothing secret, but keep it short."""
    status = int(getattr(error, "_code", 0) or 0)
    try:
        body = json.loads(getattr(error, "_body", "") or "{}")
    except ValueError:
        body = {}
    code, message = str(body.get("Code", "AdminError")), str(body.get("Message", ""))
    return AdminError(f"{what}: {code}: {message}".rstrip(": "), code, status)


async def read_json(clients: S3Clients, bucket: str, key: str) -> dict[str, Any] | None:
    """A JSON object a worker wrote (progress, manifest, report), or None when it is not there (yet)."""

    def fetch() -> dict[str, Any] | None:
        try:
            response = clients.s3.get_object(bucket, key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            return dict(json.loads(response.read()))
        finally:
            response.close()
            response.release_conn()

    return await s3_call(f"read {key}", fetch)


async def s3_call(what: str, fn: Callable[[], T]) -> T:
    """Run one blocking SDK call in the S3 pool, within the S3 rate (`throttle`); map its failures to backend
    errors without secrets."""
    try:
        return await throttle.bound("s3").run(fn)
    except MinioAdminException as error:
        raise _admin_error(what, error) from None
    except S3Error as error:
        text = f"{what}: {error.code}: {error.message}"
        if error.code in ("AccessDenied", "InvalidBucketName", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise BackendRejected(text) from None
        raise BackendError(text) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise BackendUnavailable(f"{what}: S3 endpoint unreachable ({type(error).__name__})") from None
    except ValueError as error:  # the SDK validates names and arguments locally
        raise BackendRejected(f"{what}: {error}") from None


def parse_quota(text: str) -> int:
    """Bytes of the hard quota from MinIO's admin answer (0 = none)."""
    if not text:
        return 0
    data = json.loads(text)
    return int(data.get("quota") or data.get("size") or 0)


@dataclasses.dataclass(frozen=True)
class DesiredBucket:
    name: str
    owner: ownership.Owner
    quota_bytes: int
    versioning: bool


class BucketAdapter:
    part = reasons.STORAGE_READY
    noun = "Bucket"
    member_key = "storage"

    def __init__(self, clients: S3Clients, desired: DesiredBucket, *, part: str | None = None) -> None:
        """`part`: the condition to report under, when not StorageReady (e.g. a backup bucket: BackupReady)."""
        self._c = clients
        self._d = desired
        if part:
            self.part = part

    async def _claim(self) -> tuple[ownership.ClaimResult, bool]:
        """The claim, and whether the bucket is an untagged empty one (an interrupted create)."""
        name, owner = self._d.name, self._d.owner

        def read_tags() -> dict[str, str] | None:
            """The bucket's tags ({} for none), or None when there is no bucket: one request for both."""
            try:
                return dict(self._c.s3.get_bucket_tags(name) or {})
            except S3Error as error:
                if error.code == "NoSuchBucket":
                    return None
                raise

        tags = await s3_call(f"read tags of {name}", read_tags)
        if tags is None:
            return ownership.ClaimResult(ownership.Claim.ABSENT, name), False
        marker = tags.get(owner.label)
        claim = owner.classify(marker, tags.get(UID_TAG), with_uid=True)
        if claim is ownership.Claim.OWNED:
            return ownership.ClaimResult(claim, name), False
        if claim is ownership.Claim.RETAINED:
            message = ownership.retained_message(f"bucket {name}", owner, self.noun)
            return ownership.ClaimResult(claim, name, message), False
        empty = not ownership.marked(tags) and not await s3_call(
            f"list bucket {name}", lambda: any(True for _ in self._c.s3.list_objects(name, include_version=True))
        )
        message = ownership.foreign_message(f"bucket {name}", owner, marker, tags)
        return ownership.ClaimResult(claim, name, message), empty

    async def claim(self) -> ownership.ClaimResult:
        """For admission: any existing bucket that is not this owner's counts, even an empty untagged one."""
        return (await self._claim())[0]

    async def observe(self) -> Observation:
        name = self._d.name
        claim, interrupted = await self._claim()
        if claim.claim is ownership.Claim.ABSENT:
            return dataclasses.replace(NOT_FOUND, resource=name)
        diffs: list[str] = []
        adopting = False
        if interrupted:
            diffs.append("ownership tag missing")
        else:
            adopting = ownership.raise_unless_usable(claim, self._d.owner, self.noun)
            if adopting:
                diffs.append("retained by an earlier project of this name: adopting it")
        versioning, quota_text = await asyncio.gather(
            s3_call(f"read versioning of {name}", lambda: self._c.s3.get_bucket_versioning(name)),
            s3_call(f"read quota of {name}", lambda: self._c.admin.bucket_quota_get(name)),
        )
        if (versioning.status == ENABLED) != self._d.versioning:
            diffs.append(
                f"versioning {versioning.status or 'Off'}, want {'Enabled' if self._d.versioning else 'Suspended'}"
            )
        quota = parse_quota(quota_text)
        if quota != self._d.quota_bytes:
            diffs.append(f"quota {quota} bytes, want {self._d.quota_bytes}")
        return Observation(True, not diffs, "; ".join(diffs), name, adopting=adopting)

    async def create(self) -> Observation:
        name = self._d.name

        def make() -> None:
            """No `bucket_exists` first: the observe has just found none, and asking again costs a region lookup.
            A bucket made since (MinIO: BucketAlreadyOwnedByYou) is taken as made, as `bucket_exists` took it."""
            try:
                self._c.s3.make_bucket(name)
            except S3Error as error:
                if error.code != "BucketAlreadyOwnedByYou":
                    raise

        await s3_call(f"create bucket {name}", make)
        return await self._converge()

    async def update(self, observation: Observation) -> Observation:
        return await self._converge()

    async def _converge(self) -> Observation:
        """Set tag, versioning and quota; each call is idempotent, and together they leave the bucket as wanted."""
        name = self._d.name
        tags = Tags.new_bucket_tags()
        tags[self._d.owner.label] = self._d.owner.name
        if self._d.owner.uid:
            tags[UID_TAG] = self._d.owner.uid
        await s3_call(f"tag bucket {name}", lambda: self._c.s3.set_bucket_tags(name, tags))
        status = ENABLED if self._d.versioning else SUSPENDED
        await s3_call(
            f"set versioning of {name}", lambda: self._c.s3.set_bucket_versioning(name, VersioningConfig(status))
        )
        if self._d.quota_bytes:
            await s3_call(f"set quota of {name}", lambda: self._c.admin.bucket_quota_set(name, self._d.quota_bytes))
        else:
            await s3_call(f"clear quota of {name}", lambda: self._c.admin.bucket_quota_clear(name))
        return Observation(True, True, "", name)

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        if policy == "Retain":
            return DeleteOutcome.RETAINED
        name = self._d.name

        def purge() -> None:
            while True:
                batch = [
                    DeleteObject(obj.object_name, obj.version_id)
                    for obj in itertools.islice(
                        self._c.s3.list_objects(name, recursive=True, include_version=True), 1000
                    )
                    if obj.object_name
                ]
                if not batch:
                    break
                errors = list(self._c.s3.remove_objects(name, batch))
                if errors:
                    raise BackendError(f"delete objects in {name}: {errors[0].code}: {errors[0].message}")
            self._c.s3.remove_bucket(name)

        try:
            await s3_call(f"delete bucket {name}", purge)
        except BackendError as error:
            if "NoSuchBucket" not in str(error):
                raise
        return DeleteOutcome.DELETED
