"""Adapters for access to a project's bucket on MinIO: the bucket policies, the project credential
(a MinIO user whose keys live in a Secret in the project namespace) and the members' groups.

Policies allow exactly one bucket: `<bucket>-rw` and `<bucket>-ro`. Members reach the bucket through
two MinIO groups, `<group>-rw` (owner, maintainer, member) and `<group>-ro` (viewer; everyone while
cordoned). Members must exist as MinIO users (synchronised from the identity provider); those who do
not are reported per member as `NoAccount`, never a failure of the whole part.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from enclave_operator import reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import kube
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendRejected
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL
from enclave_operator.backends.ownership import NotOwned, OwnedNamespaces, Owner
from enclave_operator.backends.s3_minio import NOT_FOUND_CODES, AdminError, S3Clients, s3_call
from enclave_operator.ingest import layout
from minio import Minio

READ_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketVersions"]
READ_OBJECTS = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging"]
WRITE_BUCKET = ["s3:ListBucketMultipartUploads"]
WRITE_OBJECTS = [
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:PutObjectTagging",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
"""Writers change and delete objects, never object versions: with versioning on, a delete leaves a delete marker
and every earlier version stays readable (issue 14.6). Not granting s3:DeleteObjectVersion is not enough: MinIO
lets s3:DeleteObject remove a version too unless s3:DeleteObjectVersion is denied explicitly (bucket_policy)."""
PROTECT_RECORDS = ["s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging", "s3:DeleteObjectTagging"]
"""Denied to writers on the ingests' records (layout.RECORD_PATTERNS): provenance cannot be rewritten or removed.
The controller writes the provenance manifest with its own credential, the workers with theirs."""
SECRET_NAME = "project-s3"
"""The Secret in the project namespace that holds the project credential."""


def bucket_policy(bucket: str, writable: bool, *, protected: bool = True) -> dict[str, Any]:
    """An IAM policy that allows one bucket and nothing else. A writable policy of a `protected` bucket (every
    project or node store) never deletes object versions or the ingests' records; `protected=False` is for a
    bucket that holds only copies its one writer empties itself (a restore drill's scratch bucket)."""
    bucket_actions = READ_BUCKET + (WRITE_BUCKET if writable else [])
    object_actions = READ_OBJECTS + (WRITE_OBJECTS if writable else [])
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": sorted(bucket_actions), "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Action": sorted(object_actions), "Resource": [f"arn:aws:s3:::{bucket}/*"]},
    ]
    if writable and protected:
        records = [f"arn:aws:s3:::{bucket}/{pattern}" for pattern in layout.RECORD_PATTERNS]
        objects = [f"arn:aws:s3:::{bucket}/*"]
        statements.append({"Effect": "Deny", "Action": ["s3:DeleteObjectVersion"], "Resource": objects})
        statements.append({"Effect": "Deny", "Action": sorted(PROTECT_RECORDS), "Resource": records})
    return {"Version": "2012-10-17", "Statement": statements}


def policy_names(bucket: str) -> tuple[str, str]:
    return f"{bucket}-rw", f"{bucket}-ro"


def _normalise(policy: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    def as_list(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    return sorted(
        (str(s.get("Effect")), tuple(sorted(as_list(s.get("Action")))), tuple(sorted(as_list(s.get("Resource")))))
        for s in policy.get("Statement", [])
    )


async def _admin_or_none(what: str, fn: Any) -> Any:
    """The admin call's result, or None when MinIO says the thing does not exist."""
    try:
        return await s3_call(what, fn)
    except AdminError as error:
        if error.code in NOT_FOUND_CODES:
            return None
        raise


async def _set_policy(clients: S3Clients, policy: str, *, user: str | None = None, group: str | None = None) -> None:
    """Make `policy` the one policy of a user or group (replacing any others).

    `policy_set` (MinIO's set-user-or-group-policy) rather than attach/detach: those encrypt request and
    answer with Argon2id keys, ~1 s of CPU per call on a loaded machine (backends/s3_minio.py).
    """
    await s3_call(f"set policy {policy}", lambda: clients.admin.policy_set(policy, user=user, group=group))


def _attached(info: Mapping[str, Any] | None) -> set[str]:
    names = str((info or {}).get("policyName") or (info or {}).get("policy") or "")
    return {n for n in names.split(",") if n}


class PoliciesAdapter:
    """MinIO IAM policies with exact documents (e.g. a bucket's -rw and -ro policies)."""

    part = reasons.STORAGE_READY
    member_key = "storage"

    def __init__(self, clients: S3Clients, policies: Mapping[str, Mapping[str, Any]], resource: str,
                 noun: str = "BucketPolicy", *, part: str | None = None) -> None:  # fmt: skip
        self._c, self._policies, self._resource, self.noun = clients, dict(policies), resource, noun
        if part:
            self.part = part

    async def observe(self) -> Observation:
        diffs, found = [], 0
        texts = await asyncio.gather(*(_admin_or_none(f"read policy {n}", lambda n=n: self._c.admin.policy_info(n))
                                       for n in self._policies))  # fmt: skip
        for (name, policy), text in zip(self._policies.items(), texts, strict=True):
            if text is None:
                diffs.append(f"policy {name} missing")
                continue
            found += 1
            if _normalise(json.loads(text)) != _normalise(policy):
                diffs.append(f"policy {name} differs")
        return Observation(found > 0, not diffs, "; ".join(diffs), self._resource)

    async def create(self) -> Observation:
        return await self._converge()

    async def update(self, observation: Observation) -> Observation:
        return await self._converge()

    async def _converge(self) -> Observation:
        for name, policy in self._policies.items():
            await s3_call(f"write policy {name}", lambda n=name, p=policy: self._c.admin.policy_add(n, policy=dict(p)))
        return Observation(True, True, "", self._resource)

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        for name in self._policies:
            await _admin_or_none(f"remove policy {name}", lambda n=name: self._c.admin.policy_remove(n))
        return DeleteOutcome.DELETED


def bucket_policies(clients: S3Clients, bucket: str, *, part: str | None = None) -> PoliciesAdapter:
    """A bucket's read-write and read-only policies (a project's, a federated node's store or backup bucket)."""
    rw, ro = policy_names(bucket)
    policies = {rw: bucket_policy(bucket, True), ro: bucket_policy(bucket, False)}
    return PoliciesAdapter(clients, policies, bucket, part=part)


@dataclasses.dataclass(frozen=True)
class DesiredCredential:
    """A MinIO user with one attached policy, whose keys live in a Kubernetes Secret."""

    access_key: str
    policy: str
    namespace: str
    secret_name: str
    labels: Mapping[str, str]
    bucket: str
    probe_prefix: str = ""
    """A prefix the credential may list: `observe` proves the keys authenticate by listing it."""
    noun: str = "Credential"


def store_credential(owner: Owner, namespace: str, bucket: str, *, writable: bool,
                     secret_name: str = SECRET_NAME) -> DesiredCredential:  # fmt: skip
    """The owner's own credential for its bucket (a project's: Secret `project-s3` in the project namespace,
    read-only while cordoned; a federated node's: its platform components' Secret in the node namespace)."""
    rw, ro = policy_names(bucket)
    return DesiredCredential(
        access_key=f"{bucket}-app",
        policy=rw if writable else ro,
        namespace=namespace,
        secret_name=secret_name,
        labels={owner.label: owner.name, MANAGED_BY_LABEL: MANAGED_BY},
        bucket=bucket,
    )


class CredentialAdapter:
    """A MinIO user whose keys live in a Secret, with exactly one policy attached.

    Crash safety: the Secret (with a new random secret key) is written before the MinIO user is
    created from it, and an existing Secret is never regenerated, so a run killed at any line
    converges to a user whose keys match the Secret.
    """

    part = reasons.STORAGE_READY
    member_key = "storage"

    def __init__(self, clients: S3Clients, kube_client: AsyncClient | OwnedNamespaces,
                 desired: DesiredCredential, *, part: str | None = None) -> None:  # fmt: skip
        self._c, self._k, self._d = clients, kube_client, desired
        self.noun = desired.noun
        if part:
            self.part = part

    async def _secret(self) -> Secret | None:
        try:
            return await kube.call(
                f"read secret {self._d.secret_name}",
                self._k.get(Secret, self._d.secret_name, namespace=self._d.namespace),
            )
        except kube.NotFound:
            return None

    async def observe(self) -> Observation:
        try:
            secret = await self._secret()
        except NotOwned:
            secret = None  # the namespace is not the owner's: writing the Secret will say so; the user may still go
        info_text = await _admin_or_none(
            f"read user {self._d.access_key}", lambda: self._c.admin.user_info(self._d.access_key)
        )
        if secret is None or info_text is None:
            return Observation(False, False, "credential missing", self._d.access_key)
        diffs = []
        attached = _attached(json.loads(info_text))
        if attached != {self._d.policy}:
            diffs.append(f"credential policy {','.join(sorted(attached)) or 'none'}, want {self._d.policy}")
        secret_key = _secret_value(secret, "AWS_SECRET_ACCESS_KEY")
        if not secret_key or not await self._authenticates(secret_key):
            diffs.append("the keys in the Secret do not authenticate")
        return Observation(True, not diffs, "; ".join(diffs), self._d.access_key)

    async def _authenticates(self, secret_key: str) -> bool:
        conn, bucket, probe = self._c.conn, self._d.bucket, self._d.probe_prefix

        def list_one() -> object:
            client = Minio(conn.endpoint, access_key=self._d.access_key, secret_key=secret_key, secure=conn.secure,
                           region=self._c.region_of(bucket), http_client=self._c.http)  # fmt: skip
            return next(iter(client.list_objects(bucket, prefix=probe)), 0)

        try:
            await s3_call("check credential", list_one)
        except BackendRejected:
            return False
        return True

    async def create(self) -> Observation:
        return await self._converge()

    async def update(self, observation: Observation) -> Observation:
        return await self._converge()

    async def _converge(self) -> Observation:
        """Secret first, then the user made from it, then its one policy: the keys authenticate by construction."""
        secret = await self._secret()
        secret_key = _secret_value(secret, "AWS_SECRET_ACCESS_KEY") if secret else None
        if not secret_key:
            secret_key = secrets.token_urlsafe(30)
            await self._write_secret(secret_key, replace=secret is not None)
        access = self._d.access_key
        await s3_call(f"write user {access}", lambda: self._c.admin.user_add(access, secret_key))
        await _set_policy(self._c, self._d.policy, user=access)
        return Observation(True, True, "", access)

    async def _write_secret(self, secret_key: str, *, replace: bool) -> None:
        conn = self._c.conn
        secret = Secret(
            metadata=ObjectMeta(name=self._d.secret_name, namespace=self._d.namespace, labels=dict(self._d.labels)),
            type="Opaque",
            stringData={
                "AWS_ACCESS_KEY_ID": self._d.access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key,
                "S3_ENDPOINT": f"{'https' if conn.secure else 'http'}://{conn.endpoint}",
                "S3_BUCKET": self._d.bucket,
            },
        )
        if replace:
            await kube.call("replace credential secret", self._k.replace(secret))
        else:
            await kube.call("create credential secret", self._k.create(secret))

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Both policies revoke the credential; the Secret goes with it."""
        await _admin_or_none(f"remove user {self._d.access_key}", lambda: self._c.admin.user_remove(self._d.access_key))
        try:
            await kube.call(
                "delete credential secret",
                self._k.delete(Secret, self._d.secret_name, namespace=self._d.namespace),
            )
        except kube.NotFound:
            pass
        return DeleteOutcome.DELETED


def _secret_value(secret: Secret | None, key: str) -> str | None:
    import base64

    if secret is None or not secret.data or key not in secret.data:
        return None
    return base64.b64decode(secret.data[key]).decode()


@dataclasses.dataclass(frozen=True)
class DesiredGroups:
    group: str
    bucket: str
    readers: Sequence[str]
    writers: Sequence[str]


class MemberGroupsAdapter:
    """Two MinIO groups per project holding exactly the members who exist as MinIO users."""

    part = reasons.STORAGE_READY
    noun = "Group"
    member_key = "storage"

    def __init__(self, clients: S3Clients, desired: DesiredGroups) -> None:
        self._c, self._d = clients, desired
        self._known: set[str] = set()
        """Members who exist as MinIO users: those in a group (MinIO drops deleted users from their groups), and
        those `user_info` finds. Only wanted users in neither group are asked: never the whole user list, whose
        answer MinIO encrypts with Argon2id and which grows with every project."""
        self._infos: dict[str, dict[str, Any] | None] | None = None

    def _groups(self) -> dict[str, tuple[str, list[str]]]:
        rw, ro = policy_names(self._d.bucket)
        known = self._known
        return {
            f"{self._d.group}-rw": (rw, sorted(u for u in self._d.writers if u in known)),
            f"{self._d.group}-ro": (ro, sorted(u for u in self._d.readers if u in known)),
        }

    async def _read_groups(self) -> dict[str, dict[str, Any] | None]:
        groups = (f"{self._d.group}-rw", f"{self._d.group}-ro")
        texts = await asyncio.gather(*(_admin_or_none(f"read group {g}", lambda g=g: self._c.admin.group_info(g))
                                       for g in groups))  # fmt: skip
        return {group: json.loads(text) if text else None for group, text in zip(groups, texts, strict=True)}

    async def _learn_users(self, infos: Mapping[str, Mapping[str, Any] | None]) -> None:
        known = {user for info in infos.values() for user in (info or {}).get("members") or []}
        for user in sorted((set(self._d.readers) | set(self._d.writers)) - known):
            if await _admin_or_none(f"read user {user}", lambda u=user: self._c.admin.user_info(u)) is not None:
                known.add(user)
        self._known = known

    async def observe(self) -> Observation:
        infos = self._infos = await self._read_groups()
        await self._learn_users(infos)
        return self._observation(infos)

    def _observation(self, infos: Mapping[str, Mapping[str, Any] | None]) -> Observation:
        diffs, present, members = [], 0, {}
        for group, (policy, wanted) in self._groups().items():
            info = infos[group]
            actual = sorted((info or {}).get("members") or [])
            present += info is not None
            access = "ReadWrite" if group.endswith("-rw") else "ReadOnly"
            for user in actual:
                members[user] = access
            if actual != wanted:
                diffs.append(f"group {group} members differ")
            if wanted and _attached(info) != {policy}:
                diffs.append(f"group {group} policy differs")
        for user in set(self._d.readers) | set(self._d.writers):
            if user not in self._known:
                members[user] = "NoAccount"
        return Observation(present > 0, not diffs, "; ".join(diffs), self._d.group, members=members)

    async def create(self) -> Observation:
        return await self._converge()

    async def update(self, observation: Observation) -> Observation:
        return await self._converge()

    async def _converge(self) -> Observation:
        """From the groups just observed: members removed, added, the policy set; the groups as left."""
        infos = self._infos if self._infos is not None else await self._read_groups()
        left: dict[str, Mapping[str, Any] | None] = {}
        for group, (policy, wanted) in self._groups().items():
            info = infos[group] or {}
            left[group] = {"members": wanted, "policyName": policy} if wanted else None
            actual = set(info.get("members") or [])
            extra = sorted(actual - set(wanted))
            if extra:
                await s3_call(f"remove members of {group}", lambda g=group, e=extra: self._c.admin.group_remove(g, e))
            if not wanted:
                if info:
                    await _admin_or_none(f"remove group {group}", lambda g=group: self._c.admin.group_remove(g))
                continue
            missing = sorted(set(wanted) - actual)
            if missing:
                await s3_call(f"add members to {group}", lambda g=group, m=missing: self._c.admin.group_add(g, m))
            if _attached(info) != {policy}:
                await _set_policy(self._c, policy, group=group)
        return self._observation(left)

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        for group in (f"{self._d.group}-rw", f"{self._d.group}-ro"):
            info_text = await _admin_or_none(f"read group {group}", lambda g=group: self._c.admin.group_info(g))
            if info_text is None:
                continue
            members = json.loads(info_text).get("members") or []
            if members:
                await s3_call(f"empty group {group}", lambda g=group, m=members: self._c.admin.group_remove(g, m))
            await _admin_or_none(f"remove group {group}", lambda g=group: self._c.admin.group_remove(g))
        return DeleteOutcome.DELETED
