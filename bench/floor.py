"""The floor of the projects benchmark: the backend writes the operator makes for N projects, done
directly, with no reads, no engine and no operator, at the best concurrency each backend allows.

The desired state comes from the operator's own pure planning code (`research_project.plan`, the
`project_space` builders, `s3_access.bucket_policy`, `slurm_accounts.desired_account`), so the floor
writes exactly what the adapters would; `verify()` proves it by running the adapters' own `observe()`
on floor projects (every part must say "up to date": same objects, same ownership markers).

Writes per project, Kubernetes + S3 (members alice and bob, both writers):
  Kubernetes  namespace, ResourceQuota, LimitRange, 3 NetworkPolicies, 3 RoleBindings, the credential Secret
  S3          bucket, its ownership tags, versioning, its quota, the -rw and -ro policies, the credential user and its
              policy, the -rw group with its members and its policy
  identity    the group (with its description marker) and its members            (--all-backends)
  Slurm       the account with every setting, its users: in loads of many accounts (--all-backends)
Backends run at the same time, each at its own concurrency (a semaphore for the Kubernetes API, a thread
pool for the blocking MinIO and FreeIPA SDKs, one sacctmgr load of many accounts at a time: slurmdbd serialises
writes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import urllib3
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType
from minio.commonconfig import ENABLED, Tags
from minio.credentials import StaticProvider
from minio.versioningconfig import VersioningConfig

from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.backends import identity, s3_access, s3_minio, slurm_accounts
from enclave_operator.reconcilers import project_space, research_project
from enclave_operator.settings import OperatorSettings
from minio import Minio

FIELD_MANAGER = "enclave-operator"


@dataclasses.dataclass
class FloorResult:
    seconds: float
    """Wall time until every backend had every write."""
    per_backend: dict[str, float]
    """Wall time of each backend's writes (they run at the same time)."""
    writes: dict[str, int]
    """Requests made, per backend (each one a write)."""


def plans(names: Sequence[str], spec: Mapping[str, Any],
          settings: OperatorSettings) -> list[research_project.ProjectPlan]:  # fmt: skip
    """Each project's plan, as the operator makes it (a fresh uid each: the floor has no objects)."""
    parsed = ResearchProjectSpec.model_validate(dict(spec))
    today = datetime.datetime.now(datetime.UTC).date()
    return [research_project.plan(name, parsed, settings, today, str(uuid.uuid4())) for name in names]


def _writers(plan: research_project.ProjectPlan) -> tuple[list[str], list[str]]:
    writers = sorted(u for u, role in plan.active if role in research_project.WRITER_ROLES and not plan.cordoned)
    readers = sorted(u for u, _ in plan.active if u not in writers)
    return writers, readers


# --- Kubernetes -------------------------------------------------------------------------------------------


async def _kube(client: AsyncClient, project: research_project.ProjectPlan, settings: OperatorSettings,
                secret_keys: dict[str, str], slots: asyncio.Semaphore, count: list[int]) -> None:  # fmt: skip
    ns = project.namespace.name

    async def write(coro: Any) -> None:
        async with slots:
            await coro
            count[0] += 1

    placement = project_space.gpu_placement(settings.gpu, ())  # the operator's namespace annotations, no booking
    await write(client.create(Namespace(metadata=ObjectMeta(name=ns, labels=dict(project.namespace.labels),
                                                            annotations=placement))))  # fmt: skip
    objects = [
        project_space.resource_quota(project.name, ns, project.spec, project.cordoned),
        project_space.limit_range(project.name, ns),
        *project_space.network_policies(project.name, ns, project.spec),
        *project_space.role_bindings(project.name, ns, project.group, project.active, project.cordoned,
                                     settings.kubernetes),  # fmt: skip
    ]
    credential = s3_access.store_credential(project.owner, ns, project.bucket.name, writable=not project.cordoned)
    conn = settings.s3
    secret = Secret(
        metadata=ObjectMeta(name=credential.secret_name, namespace=ns, labels=dict(credential.labels)),
        type="Opaque",
        stringData={
            "AWS_ACCESS_KEY_ID": credential.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_keys[project.name],
            "S3_ENDPOINT": f"{'https' if conn.secure else 'http'}://{conn.endpoint}",
            "S3_BUCKET": project.bucket.name,
        },
    )
    await asyncio.gather(
        *(write(client.patch(o.resource, o.name, dict(o.manifest), namespace=ns, patch_type=PatchType.APPLY,
                             field_manager=FIELD_MANAGER, force=True)) for o in objects),
        write(client.create(secret)),
    )  # fmt: skip


# --- S3 (MinIO) ----------------------------------------------------------------------------------------------


class _S3:
    """MinIO clients for the floor: their own pool, as large as the thread pool that drives them. The admin
    client is the operator's (`s3_minio.Admin`, whose user_add avoids Argon2id), and policies are set with
    `policy_set`: the cheapest calls MinIO offers for these writes (see backends/s3_minio.py)."""

    def __init__(self, conn: s3_minio.S3Connection, threads: int) -> None:
        http = urllib3.PoolManager(maxsize=threads, timeout=urllib3.Timeout(connect=5, read=60), ca_certs=conn.ca_file,
                                   cert_reqs="CERT_REQUIRED" if conn.secure else "CERT_NONE")  # fmt: skip
        self.s3 = Minio(conn.endpoint, access_key=conn.access_key, secret_key=conn.secret_key, secure=conn.secure,
                        http_client=http)  # fmt: skip
        credentials = StaticProvider(conn.access_key, conn.secret_key)
        self.admin = s3_minio.Admin(endpoint=conn.endpoint, credentials=credentials, secure=conn.secure,
                                    http_client=http)  # fmt: skip


def _s3(c: _S3, project: research_project.ProjectPlan, secret_key: str) -> int:
    """One project's S3 writes in dependency order; returns how many requests it made."""
    bucket = project.bucket
    c.s3.make_bucket(bucket.name)
    tags = Tags.new_bucket_tags()
    tags[bucket.owner.label] = bucket.owner.name
    tags[s3_minio.UID_TAG] = bucket.owner.uid
    c.s3.set_bucket_tags(bucket.name, tags)
    if bucket.versioning:  # a new bucket is unversioned, which is what `versioning: false` wants
        c.s3.set_bucket_versioning(bucket.name, VersioningConfig(ENABLED))
    c.admin.bucket_quota_set(bucket.name, bucket.quota_bytes)
    rw, ro = s3_access.policy_names(bucket.name)
    c.admin.policy_add(rw, policy=s3_access.bucket_policy(bucket.name, True))
    c.admin.policy_add(ro, policy=s3_access.bucket_policy(bucket.name, False))
    credential = s3_access.store_credential(project.owner, project.namespace.name, bucket.name,
                                            writable=not project.cordoned)  # fmt: skip
    c.admin.user_add(credential.access_key, secret_key)
    c.admin.policy_set(credential.policy, user=credential.access_key)
    writes = 7 + bucket.versioning
    writers, readers = _writers(project)
    for suffix, users, policy in (("rw", writers, rw), ("ro", readers, ro)):
        if users:
            group = f"{project.group}-{suffix}"
            c.admin.group_add(group, users)
            c.admin.policy_set(policy, group=group)
            writes += 2
    return writes


# --- identity (FreeIPA) and Slurm ----------------------------------------------------------------------------


def _identity(meta: Any, project: research_project.ProjectPlan) -> int:
    desired = identity.DesiredIdentityGroup(project.group, project.spec.display_name,
                                            [u for u, _ in project.active], project.spec.identity.gid_number,
                                            owner=project.owner)  # fmt: skip
    meta.group_add(a_cn=desired.name, o_description=desired.stored_description, o_gidnumber=desired.gid_number)
    meta.group_add_member(a_cn=desired.name, o_user=list(desired.members))
    return 2


async def _slurm(runner: slurm_accounts.Sacctmgr, projects: Sequence[research_project.ProjectPlan]) -> int:
    """The accounts with their users, `batchCreations` per `sacctmgr load` (the operator's own flat file), one load
    at a time: slurmdbd serialises writes. Without a cluster (a load must name one), one add each, as the operator."""
    accounts = [p.slurm for p in projects if p.slurm is not None]
    cluster, size = runner.settings.cluster, runner.settings.batch_creations
    if cluster is None or size <= 1:
        return sum([await _slurm_one(runner, d) for d in accounts])
    with tempfile.TemporaryDirectory(prefix="enclave-floor-") as directory:
        for i in range(0, len(accounts), size):
            path = Path(directory) / f"accounts-{i}.cfg"
            path.write_text(slurm_accounts.load_file(cluster, accounts[i : i + size]))
            await runner.run("load", f"file={path}", *runner.settings.cluster_args(), write=True)
    return (len(accounts) + size - 1) // size


async def _slurm_one(runner: slurm_accounts.Sacctmgr, d: slurm_accounts.DesiredSlurmAccount) -> int:
    cluster = runner.settings.cluster_args()
    settings = [f"{key.lower()}={value}" for key, value in slurm_accounts.account_settings(d)]
    await runner.run("add", "account", d.name, *cluster, f"parent={d.parent}", *settings, write=True)
    await runner.run("add", "user", ",".join(d.users), f"account={d.name}", *cluster, write=True)
    return 2


# --- the floor --------------------------------------------------------------------------------------------


async def _threaded(threads: int, fn: Callable[[Any], int], items: Sequence[Any]) -> int:
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sum(await asyncio.gather(*(loop.run_in_executor(pool, fn, item) for item in items)))


async def run(
    projects: Sequence[research_project.ProjectPlan],
    settings: OperatorSettings,
    *,
    kube: AsyncClient,
    s3: s3_minio.S3Connection,
    ipa: Any | None = None,
    slurm: slurm_accounts.Sacctmgr | None = None,
    kube_concurrency: int = 64,
    s3_threads: int = 32,
    ipa_threads: int = 8,
) -> FloorResult:
    """Make every project's backend writes; each backend at its own concurrency, all backends at once."""
    keys = {p.name: secrets.token_urlsafe(30) for p in projects}
    per_backend: dict[str, float] = {}
    writes: dict[str, int] = {}

    async def timed(name: str, coro: Any) -> None:
        start = time.perf_counter()
        writes[name] = await coro
        per_backend[name] = time.perf_counter() - start

    async def kube_all() -> int:
        slots, count = asyncio.Semaphore(kube_concurrency), [0]
        await asyncio.gather(*(_kube(kube, p, settings, keys, slots, count) for p in projects))
        return count[0]

    async def slurm_all() -> int:
        assert slurm is not None
        return await _slurm(slurm, projects)

    clients = _S3(s3, s3_threads)
    jobs = [timed("kubernetes", kube_all()),
            timed("s3", _threaded(s3_threads, lambda p: _s3(clients, p, keys[p.name]), projects))]  # fmt: skip
    if ipa is not None:
        jobs.append(timed("identity", _threaded(ipa_threads, lambda p: _identity(ipa, p), projects)))
    if slurm is not None and all(p.slurm is not None for p in projects):
        jobs.append(timed("slurm", slurm_all()))
    start = time.perf_counter()
    await asyncio.gather(*jobs)
    return FloorResult(time.perf_counter() - start, per_backend, writes)


async def verify(projects: Sequence[research_project.ProjectPlan], backends: research_project.Backends,
                 settings: OperatorSettings) -> list[str]:  # fmt: skip
    """Run the operator's own observe() of every part of `projects`; what is not up to date (empty: all are)."""
    problems = []
    for project in projects:
        for adapter in research_project.adapters(project, backends, settings):
            observation = await adapter.observe()
            if not observation.up_to_date or observation.degraded_reason:
                problems.append(f"{project.name} {adapter.noun}: {observation.diff or observation.degraded_reason}")
    return problems
