"""Reconcile a FederatedNode: evaluate it against its requirements profile, provision its data store and the
integrator's access through the generic engine, run and follow its backups and restore drills, and compute
the status to write. The reachability probes run on their own timer (`probe`), writing only their part.

Parts, in order (retirement runs in reverse): NamespaceReady (namespace, network policies, the integrators'
read access to their credential Secrets), IdentityReady (the integrators' identity group), StorageReady
(store bucket, its policies, the platform components' credential), BackupReady (backup namespace and
service account, repository key, the backup Jobs' credentials on the store and on the target, the target
bucket, the scratch bucket of restore drills). Ownership (backends/ownership.py) with the owner label
`enclave.io/federated-node`: no part writes to a namespace, bucket or group another owner has.
Nothing here imports kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Node, Secret, ServiceAccount
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from enclave_operator import conditions, metrics, reasons
from enclave_operator.api.common import spec_error
from enclave_operator.api.federated_node import Endpoint, FederatedNodeSpec, Integrator, RequirementsProfile
from enclave_operator.backends import (
    identity,
    kube,
    kube_namespace,
    kube_objects,
    ownership,
    s3_access,
    s3_minio,
    unavailable,
)
from enclave_operator.backends.adapter import Adapter
from enclave_operator.backends.errors import BackendError
from enclave_operator.backends.kube_create_only import CreateOnlyAdapter, job_state
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import Recorder
from enclave_operator.federation import backup_job, backup_worker, compliance, hardware, reachability
from enclave_operator.federation.profiles import Profiles
from enclave_operator.ingest import job as ingest_job
from enclave_operator.quantity import to_bytes
from enclave_operator.reconcilers import node_space
from enclave_operator.reconcilers.research_project import (
    BUCKET_NAME,
    DNS_LABEL,
    GROUP_NAME,
    Backends,
    ReconcileResult,
    combine,
    deidentification_key,
    key_status,
    reserved_by,
    stalled_result,
)
from enclave_operator.settings import BackupTargetSettings, OperatorSettings

NODE_LABEL = ownership.NODE_OWNER_LABEL
BACKUP_REQUEST_ANNOTATION = "enclave.io/backup-requested"
"""Ask for a backup now: any new value (e.g. the time) starts one, once; status.backup.request records it."""
VERDICTS = (reasons.COMPLIANT, reasons.LEGALLY_CLEARED, reasons.REACHABLE, reasons.BACKUP_CURRENT)
SUMMARY = (reasons.READY, reasons.RECONCILING, reasons.STALLED)
logger = logging.getLogger(__name__)


class InvalidPlan(Exception):
    """The spec (with the operator's settings and profiles) cannot be turned into backend objects."""


@dataclasses.dataclass(frozen=True)
class NodePlan:
    """Everything the parts need, derived once from the spec, the settings, the profiles and today's date."""

    name: str
    uid: str
    owner: ownership.Owner
    spec: FederatedNodeSpec
    profile: RequirementsProfile
    target: BackupTargetSettings
    today: datetime.date
    namespace: kube_namespace.DesiredNamespace
    bucket: s3_minio.DesiredBucket
    scratch: s3_minio.DesiredBucket
    backup_bucket: s3_minio.DesiredBucket
    group: str
    active: tuple[Integrator, ...]
    """Integrators whose access has not expired."""


def is_active(integrator: Integrator, today: datetime.date) -> bool:
    """Access lasts through `expires` (a day, UTC)."""
    return today <= integrator.expires


def plan(name: str, uid: str, spec: FederatedNodeSpec, settings: OperatorSettings, profiles: Profiles,
         today: datetime.date) -> NodePlan:  # fmt: skip
    """Derive names and desired states; raise InvalidPlan naming the field."""
    fed = settings.federation
    namespace, bucket, group = (template.format(node=name) for template in (fed.namespace, fed.bucket, fed.group))
    if not DNS_LABEL.match(namespace):
        raise InvalidPlan(f"metadata.name: namespace name {namespace!r} (from federation.namespace) is not a DNS label")
    if pattern := reserved_by(namespace, settings):
        raise InvalidPlan(f"metadata.name: namespace {namespace} is reserved ({pattern}); no node may use it")
    scratch = backup_job.scratch_bucket(bucket)
    for what, value in (("federation.bucket", bucket), ("the scratch bucket", scratch)):
        if not BUCKET_NAME.match(value) or ".." in value:
            raise InvalidPlan(f"metadata.name: bucket name {value!r} ({what}) is not a valid S3 bucket name")
    if not GROUP_NAME.match(group):
        raise InvalidPlan(f"metadata.name: group name {group!r} (from federation.group) is not a valid group name")
    profile = profiles.get(spec.profile)
    if profile is None:
        raise InvalidPlan(f"spec.profile: unknown requirements profile {spec.profile!r} (known: "
                          f"{', '.join(profiles.names)})")  # fmt: skip
    target = fed.target(spec.backup.target)
    if target is None:
        known = ", ".join(t.name for t in fed.backup_targets) or "none configured"
        raise InvalidPlan(f"spec.backup.target: {spec.backup.target!r} is not a backup target of this enclave "
                          f"(federation.backupTargets: {known})")  # fmt: skip
    backup_bucket = target.bucket.format(node=name)
    if not BUCKET_NAME.match(backup_bucket):
        raise InvalidPlan(f"metadata.name: backup bucket name {backup_bucket!r} is not a valid S3 bucket name")
    if target.endpoint == settings.s3.endpoint and backup_bucket in (bucket, scratch):
        raise InvalidPlan(f"spec.backup.target: target {target.name} would put backups into the store bucket")
    try:
        quota = to_bytes(spec.store.quota)
    except ValueError as error:
        raise InvalidPlan(f"spec.store.quota: {error}") from None
    owner = ownership.Owner(name, uid, adopt=frozenset(spec.adopt), label=NODE_LABEL)
    return NodePlan(
        name=name,
        uid=uid,
        owner=owner,
        spec=spec,
        profile=profile,
        target=target,
        today=today,
        namespace=kube_namespace.DesiredNamespace(namespace, owner, kube_namespace.desired_labels(owner)),
        bucket=s3_minio.DesiredBucket(bucket, owner, quota, True),
        scratch=s3_minio.DesiredBucket(scratch, owner, quota, False),
        backup_bucket=s3_minio.DesiredBucket(backup_bucket, owner, 0, False),
        group=group,
        active=tuple(i for i in spec.integrator_access.integrators if is_active(i, today)),
    )


def _labels(node: NodePlan) -> dict[str, str]:
    return {NODE_LABEL: node.name, MANAGED_BY_LABEL: MANAGED_BY}


def _identity_group(node: NodePlan, backends: Backends) -> Adapter | None:
    """The integrators' group; a part saying why when integrators are declared but no directory is configured."""
    if backends.identity is None:
        if node.spec.integrator_access.integrators:
            message = "spec.integratorAccess.integrators is set but this enclave has no identity provider configured"
            return unavailable.UnavailablePart(reasons.IDENTITY_READY, "IdentityGroup", "identity", message)
        return None
    desired = identity.DesiredIdentityGroup(
        node.group, f"Integrators of federated node {node.name} ({node.spec.site})",
        [i.user for i in node.active], owner=node.owner,
    )  # fmt: skip
    return backends.identity.group_adapter(desired)


@dataclasses.dataclass(frozen=True)
class NodeParts:
    """The node's adapters in reconcile order; `shared` ones (the backup namespace and its service account)
    serve every node and are never removed when one retires."""

    adapters: list[Adapter]
    shared: frozenset[int]
    scratch: Adapter
    rbac: kube_objects.KubeObjectsAdapter
    group: Adapter | None


def parts(node: NodePlan, backends: Backends, settings: OperatorSettings) -> NodeParts:
    fed = settings.federation
    kube_client = ownership.OwnedNamespaces(backends.kube, node.owner, trusted=[fed.backup_namespace])
    ns = node.namespace.name
    labels = _labels(node)
    policies = kube_objects.KubeObjectsAdapter(
        kube_client, part=reasons.NAMESPACE_READY, noun="NetworkPolicy", member_key="kubernetes", owner=node.owner,
        namespace=ns, kinds=[NetworkPolicy],
        desired=node_space.network_policies(node.owner, ns, node.spec, fed.store_egress),
    )  # fmt: skip
    rbac = kube_objects.KubeObjectsAdapter(
        kube_client, part=reasons.NAMESPACE_READY, noun="IntegratorAccess", member_key="secrets", owner=node.owner,
        namespace=ns, kinds=[Role, RoleBinding],
        desired=node_space.integrator_access(node.owner, ns, node.spec.integrator_access.credential_secrets,
                                        [i.user for i in node.active], settings.kubernetes),
        members_of=node_space.members_in_binding(settings.kubernetes),
    )  # fmt: skip
    group = _identity_group(node, backends)
    store_parts: list[Adapter] = [
        s3_minio.BucketAdapter(backends.s3, node.bucket),
        s3_access.bucket_policies(backends.s3, node.bucket.name),
        s3_access.CredentialAdapter(backends.s3, kube_client, s3_access.store_credential(
            node.owner, ns, node.bucket.name, writable=True, secret_name=fed.credential_secret)),
    ]  # fmt: skip
    backup_ns, part = fed.backup_namespace, reasons.BACKUP_READY
    managed_by = {MANAGED_BY_LABEL: MANAGED_BY}
    namespace = CreateOnlyAdapter(kube_client, Namespace, {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": backup_ns, "labels": {**managed_by, "pod-security.kubernetes.io/enforce": "restricted"}},
    }, part=part, noun="BackupNamespace", keep_on_delete=True)  # fmt: skip
    account = CreateOnlyAdapter(kube_client, ServiceAccount, {
        "apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
        "metadata": {"name": backup_job.SERVICE_ACCOUNT, "namespace": backup_ns, "labels": managed_by},
    }, part=part, noun="BackupServiceAccount", keep_on_delete=True)  # fmt: skip
    key = CreateOnlyAdapter(kube_client, Secret, {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "stringData": {"password": _new_key()},
        "metadata": {"name": backup_job.key_secret_name(node.name), "namespace": backup_ns, "labels": labels},
    }, part=part, noun="RepositoryKey", keep_on_delete=True)  # fmt: skip
    store_user, target_user = backup_job.store_user(node.name), backup_job.target_user(node.name)
    target_clients = backends.backup_targets.get(node.target.name)
    scratch = s3_minio.BucketAdapter(backends.s3, node.scratch, part=part)
    backup_parts: list[Adapter] = [
        namespace, account, key, scratch,
        s3_access.PoliciesAdapter(backends.s3, {store_user: backup_job.store_policy(node.bucket.name,
                                                                                    node.scratch.name)},
                                  node.bucket.name, noun="BackupPolicy", part=part),
        s3_access.CredentialAdapter(backends.s3, kube_client, s3_access.DesiredCredential(
            access_key=store_user, policy=store_user, namespace=backup_ns,
            secret_name=backup_job.store_secret_name(node.name), labels=labels, bucket=node.bucket.name,
            noun="BackupStoreCredential"), part=part),
    ]  # fmt: skip
    if target_clients is None:
        message = f"backup target {node.target.name} has no client (its credentials are missing)"
        backup_parts.append(unavailable.UnavailablePart(part, "BackupTarget", "", message))
    else:
        backup_parts += [
            s3_minio.BucketAdapter(target_clients, node.backup_bucket, part=part),
            s3_access.bucket_policies(target_clients, node.backup_bucket.name, part=part),
            s3_access.CredentialAdapter(target_clients, kube_client, s3_access.DesiredCredential(
                access_key=target_user, policy=s3_access.policy_names(node.backup_bucket.name)[0],
                namespace=backup_ns, secret_name=backup_job.target_secret_name(node.name), labels=labels,
                bucket=node.backup_bucket.name, noun="BackupTargetCredential"), part=part),
        ]  # fmt: skip
    adapters: list[Adapter] = [kube_namespace.NamespaceAdapter(kube_client, node.namespace), policies, rbac]
    if group is not None:
        adapters.append(group)
    adapters += store_parts + backup_parts
    shared = frozenset({adapters.index(namespace), adapters.index(account)})
    return NodeParts(adapters, shared, scratch, rbac, group)


NEEDS: Mapping[str, tuple[str, ...]] = {
    "NetworkPolicy": ("Namespace",),
    "IntegratorAccess": ("Namespace",),
    "Credential": ("Namespace", "BucketPolicy", "IntegratorAccess"),  # the operator's own access to Secrets first
    "BackupServiceAccount": ("BackupNamespace",),
    "RepositoryKey": ("BackupNamespace",),
    "BackupStoreCredential": ("BackupNamespace", "BackupPolicy"),
    "BackupTargetCredential": ("BackupNamespace", "BucketPolicy"),
}
"""Parts (by noun) reconciled after the earlier parts they live in or need (`managed.reconcile_parts`, like
`research_project.NEEDS`); every other part starts at once. Secrets and the service account go into a namespace;
a credential gets a policy that must exist."""


def _new_key() -> str:
    """A fresh repository key; used only when the key Secret is created (it is never changed afterwards)."""
    return secrets.token_urlsafe(32)


async def collisions(name: str, uid: str, raw_spec: Mapping[str, Any], backends: Backends,
                     settings: OperatorSettings, profiles: Profiles, today: datetime.date) -> list[str]:  # fmt: skip
    """For admission of a new node: its namespace, store bucket, group or backup bucket that exist and are not its
    own (the same `claim()` the adapters use)."""
    try:
        node = plan(name, uid, FederatedNodeSpec.model_validate(dict(raw_spec)), settings, profiles, today)
    except (pydantic.ValidationError, InvalidPlan):
        return []
    roots: list[Any] = [kube_namespace.NamespaceAdapter(backends.kube, node.namespace),
                        s3_minio.BucketAdapter(backends.s3, node.bucket)]  # fmt: skip
    group = _identity_group(node, backends)
    if group is not None and hasattr(group, "claim"):
        roots.append(group)
    if (target := backends.backup_targets.get(node.target.name)) is not None:
        roots.append(s3_minio.BucketAdapter(target, node.backup_bucket))
    return await ownership.collisions(roots, node.owner)


# Status pieces.


def _stamp(now: datetime.datetime) -> str:
    return now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def integrator_statuses(node: NodePlan, pairs: Sequence[tuple[Adapter, managed.PartOutcome]]) -> list[dict[str, Any]]:
    """Per integrator: until when, whether access is active, and what each backend grants now."""
    views = {a.member_key: o.observation.members for a, o in pairs
             if o.observation is not None and a.member_key in ("identity", "secrets")}  # fmt: skip
    rows = []
    for integrator in node.spec.integrator_access.integrators:
        access = {key: members.get(integrator.user, "None") for key, members in views.items()}
        state = "Active" if is_active(integrator, node.today) else "Expired"
        rows.append({"user": integrator.user, "expires": integrator.expires.isoformat(), "state": state,
                     "access": access})  # fmt: skip
    return rows


def backup_condition(backup: Mapping[str, Any], interval: datetime.timedelta, now: datetime.datetime,
                     running: bool) -> conditions.Cond:  # fmt: skip
    """BackupCurrent: True while the last success is younger than the interval."""
    success = backup.get("lastSuccess") or {}
    failure = backup.get("lastFailure") or {}
    failed = f"; last failure {failure.get('time')}: {failure.get('message')}" if failure else ""
    when = backup_job.parse_time(success.get("time"))
    if when is None:
        reason = reasons.REASON_BACKUP_RUNNING if running else (
            reasons.REASON_BACKUP_FAILED if failure else reasons.REASON_NEVER_BACKED_UP)  # fmt: skip
        doing = "the first backup is running" if running else "no backup has succeeded yet"
        return conditions.false(reasons.BACKUP_CURRENT, reason, f"{doing}{failed}")
    if now - when > interval:
        days = interval.days
        return conditions.false(reasons.BACKUP_CURRENT, reasons.REASON_BACKUP_OVERDUE,
                                f"the last successful backup ({success.get('time')}, snapshot "
                                f"{str(success.get('snapshot'))[:8]}) is older than {days} days{failed}")  # fmt: skip
    return conditions.true(reasons.BACKUP_CURRENT, reasons.REASON_BACKUP_RECENT,
                           f"last backup {success.get('time')}: snapshot {str(success.get('snapshot'))[:8]}, "
                           f"{success.get('objects')} objects, {success.get('bytes')} bytes")  # fmt: skip


def summarize(conds: Sequence[conditions.Cond], stalled: conditions.Cond | None = None) -> list[conditions.Cond]:
    """Ready, Reconciling and Stalled from the parts and verdicts (every other condition)."""
    return conditions.summarize([c for c in conds if c.type not in SUMMARY], stalled=stalled)


def _as_conds(existing: Sequence[Mapping[str, Any]]) -> list[conditions.Cond]:
    return [conditions.Cond(str(c["type"]), c["status"], str(c.get("reason", "")), str(c.get("message", "")))
            for c in existing]  # fmt: skip


# Backups.


@dataclasses.dataclass
class BackupStep:
    backup: dict[str, Any]
    drill: dict[str, Any] | None
    busy: bool


def _job_adapter(client: Any, manifest: Mapping[str, Any], noun: str) -> CreateOnlyAdapter:
    return CreateOnlyAdapter(client, Job, manifest, part=reasons.BACKUP_READY, noun=noun)


async def _finished(client: Any, target: s3_minio.S3Clients, node: NodePlan, job_ref: str,
                    settings: OperatorSettings) -> tuple[str, dict[str, Any] | None, str]:  # fmt: skip
    """("running"|"done", report, job message) of a backup or drill Job."""
    name = job_ref.rsplit("/", 1)[-1]
    adapter = _job_adapter(client, {"metadata": {"name": name, "namespace": settings.federation.backup_namespace}},
                           "BackupJob")  # fmt: skip
    job = await adapter.get()
    state, message = job_state(job) if job is not None else ("gone", "the Job is gone")
    if state == "running":
        return "running", None, ""
    report = await s3_minio.read_json(target, node.backup_bucket.name, backup_worker.report_key(name))
    return "done", report, message


def _worker(node: NodePlan, settings: OperatorSettings, mode: backup_job.Mode, job: str,
            drill: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    spec = backup_job.worker_spec(
        mode=mode, node=node.name, job=job, store_endpoint=settings.worker_s3_endpoint(),
        store_secure=settings.s3.secure, bucket=node.bucket.name, target=node.target,
        target_bucket=node.backup_bucket.name, keep=settings.federation.keep_snapshots, drill=drill,
    )  # fmt: skip
    return backup_job.job_manifest(name=job, node=node.name, labels=_labels(node), worker=spec,
                                   settings=settings.federation)  # fmt: skip


async def backups(node: NodePlan, backends: Backends, settings: OperatorSettings, current: Mapping[str, Any],
                  recorder: Recorder, now: datetime.datetime, request: str = "") -> BackupStep:  # fmt: skip
    """Follow a running backup or drill; start the backup that is due (or asked for with the request
    annotation), then the drill that was asked for."""
    fed = settings.federation
    client = ownership.OwnedNamespaces(backends.kube, node.owner, trusted=[fed.backup_namespace])
    target = backends.backup_targets[node.target.name]
    backup = dict(current.get("backup") or {})
    endpoint = node.target.worker_endpoint or node.target.endpoint
    backup.update(target=node.target.name,
                  repository=backup_worker.repository(endpoint, node.target.secure, node.backup_bucket.name))
    drill = dict(current["restoreDrill"]) if current.get("restoreDrill") else None
    interval = datetime.timedelta(days=node.spec.backup.interval_days)
    retry = datetime.timedelta(seconds=fed.backup_retry_seconds)

    if running := backup.get("running"):
        state, report, message = await _finished(client, target, node, running, settings)
        if state == "done":
            run = {"time": (report or {}).get("finished") or _stamp(now), "job": running}
            if report and report.get("ok"):
                run.update(snapshot=str(report.get("snapshot", "")), objects=int(report.get("objects", 0)),
                           bytes=int(report.get("bytes", 0)), addedBytes=int(report.get("addedBytes", 0)),
                           message="backed up and checked")  # fmt: skip
                backup["lastSuccess"] = run
                recorder.event("Normal", reasons.EVENT_BACKED_UP, f"snapshot {run['snapshot'][:8]}: {run['objects']} "
                               f"objects, {run['bytes']} bytes ({run['addedBytes']} new) in {node.backup_bucket.name}")
            else:
                why = (report or {}).get("error") or message or "the Job ended without a report"
                backup["lastFailure"] = {**run, "message": str(why)[:1024]}
                recorder.event("Warning", reasons.EVENT_CANNOT_BACK_UP, f"backup {running} failed: {why}"[:1024])
            backup.pop("running", None)
    drill_running = bool(drill and drill.get("phase") == "Running")
    due = backup_job.next_due(backup, interval, retry, now)
    requested = bool(request) and request != backup.get("request")
    if not backup.get("running") and not drill_running and (now >= due or requested):
        runs = int(backup.get("runs", 0)) + 1
        name = backup_job.backup_job_name(node.name, node.uid, runs)
        outcome = await managed.reconcile_part(_job_adapter(client, _worker(node, settings, "backup", name),
                                                            "BackupJob"), recorder)  # fmt: skip
        if outcome.condition.status == "True":
            backup.update(runs=runs, running=f"{fed.backup_namespace}/{name}")
            if requested:
                backup["request"] = request
            why = f" (requested: {request})" if requested and now < due else ""
            recorder.event("Normal", reasons.EVENT_STARTED_BACKUP,
                           f"backing up {node.bucket.name} to {node.target.name}/{node.backup_bucket.name}{why}")
    backup["nextDue"] = _stamp(backup_job.next_due(backup, interval, retry, now))

    drill = await _drill(node, settings, client, target, backup, drill, recorder, now)
    busy = bool(backup.get("running")) or bool(drill and drill.get("phase") == "Running")
    return BackupStep(backup, drill, busy)


async def _drill(node: NodePlan, settings: OperatorSettings, client: Any, target: s3_minio.S3Clients,
                 backup: Mapping[str, Any], drill: dict[str, Any] | None, recorder: Recorder,
                 now: datetime.datetime) -> dict[str, Any] | None:  # fmt: skip
    wanted = node.spec.backup.restore_drill
    if drill and drill.get("phase") == "Running":
        state, report, message = await _finished(client, target, node, drill["job"], settings)
        if state == "running":
            return drill
        report = report or {}
        passed = bool(report.get("ok"))
        drill = {**drill, "phase": "Passed" if passed else "Failed", "time": report.get("finished") or _stamp(now),
                 "snapshot": str(report.get("snapshot", drill.get("snapshot", ""))),
                 "objects": int(report.get("objects", 0)), "bytes": int(report.get("bytes", 0)),
                 "mismatches": int(report.get("mismatches", 0)), "comparedLive": int(report.get("comparedLive", 0))}
        if passed:
            drill["message"] = (f"restored {drill['objects']} objects into {node.scratch.name}: every checksum matches "
                                f"({drill['comparedLive']} also against the unchanged live object)")
            recorder.event("Normal", reasons.EVENT_DRILL_PASSED, drill["message"])
        else:
            why = report.get("error") or (f"{drill['mismatches']} objects differ" if report else message)
            drill["message"] = f"restore drill failed: {why or 'the Job ended without a report'}"[:1024]
            recorder.event("Warning", reasons.EVENT_DRILL_FAILED, drill["message"])
        return drill
    if wanted is None or (drill and drill.get("name") == wanted.name and drill.get("phase") != "Waiting"):
        return drill
    base = {"name": wanted.name, "snapshot": wanted.snapshot, "scratchBucket": node.scratch.name}
    if not backup.get("lastSuccess"):
        return {**base, "phase": "Waiting", "message": "waiting for a successful backup to restore"}
    if backup.get("running"):
        return {**base, "phase": "Waiting", "message": "waiting for the running backup to finish"}
    name = backup_job.drill_job_name(node.name, node.uid, wanted.name)
    spec = {"snapshot": wanted.snapshot, "scratchBucket": node.scratch.name}
    outcome = await managed.reconcile_part(_job_adapter(client, _worker(node, settings, "drill", name, spec),
                                                        "RestoreDrillJob"), recorder)  # fmt: skip
    if outcome.condition.status != "True":
        return {**base, "phase": "Waiting", "message": outcome.condition.message}
    recorder.event("Normal", reasons.EVENT_STARTED_DRILL,
                   f"restoring snapshot {wanted.snapshot} into {node.scratch.name} to compare checksums")
    return {**base, "phase": "Running", "job": f"{settings.federation.backup_namespace}/{name}"}


# Hardware.


async def measure(node: NodePlan, backends: Backends) -> tuple[hardware.Measured | None, str]:
    """The Node objects the selector matches, measured; ("", error) when they cannot be listed."""
    selector = node.spec.hardware.node_selector
    if node.spec.hardware.source != "Measured" or not selector:
        return None, ""
    try:
        items = await kube.call("list nodes", _collect(backends.kube.list(Node, labels=dict(selector))))
    except BackendError as error:
        return None, str(error)
    return hardware.measure([item.to_dict() for item in items]), ""


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


# One reconcile.


async def reconcile(
    *,
    body: Mapping[str, Any],
    backends: Backends,
    settings: OperatorSettings,
    profiles: Profiles,
    recorder: Recorder,
    now: datetime.datetime,
) -> ReconcileResult:
    """One reconcile of one node from a fresh read of it; safe to run again at any time."""
    meta = body["metadata"]
    name, uid, generation = str(meta["name"]), str(meta.get("uid", "")), int(meta.get("generation", 0))
    current = dict(body.get("status") or {})
    try:
        spec = FederatedNodeSpec.model_validate(dict(body.get("spec") or {}))
        node = plan(name, uid, spec, settings, profiles, now.date())
    except pydantic.ValidationError as error:
        message = spec_error(error)
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, message)
        return stalled_result(current, generation, message)
    except InvalidPlan as error:
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, str(error))
        return stalled_result(current, generation, str(error))

    node_parts = parts(node, backends, settings)
    pairs = list(zip(node_parts.adapters, await managed.reconcile_parts(node_parts.adapters, recorder, NEEDS),
                     strict=True))  # fmt: skip
    by_part: dict[str, list[managed.PartOutcome]] = {}
    for adapter, outcome in pairs:
        by_part.setdefault(adapter.part, []).append(outcome)
    part_conds = [combine(part, outcomes) for part, outcomes in by_part.items()]

    # Compliance.
    measured, measure_error = await measure(node, backends)
    observed = hardware.observe(spec.hardware, measured)
    reach = current.get("reachability") or {}
    probes = probe_facts(reach)
    access = compliance.Access(ssh=tuple(i.user for i in node.active if "SSH" in i.channels),
                               vpn=tuple(i.user for i in node.active if "VPN" in i.channels))  # fmt: skip
    lines = compliance.evaluate(node.profile, spec, observed, probes, access, node.today)
    verdicts = compliance.verdicts(lines)
    if measure_error:
        verdicts[0] = conditions.unknown(reasons.COMPLIANT, reasons.REASON_BACKEND_UNAVAILABLE,
                                         f"cannot measure the Node objects: {measure_error}")  # fmt: skip
    old = {c["type"]: c.get("status") for c in current.get("conditions", [])}
    for verdict in verdicts:
        if old.get(verdict.type) != verdict.status:
            recorder.event("Warning" if verdict.status == "False" else "Normal", reasons.EVENT_COMPLIANCE_CHANGED,
                           f"{verdict.type}={verdict.status}: {verdict.message}")  # fmt: skip

    # Integrators.
    integrators = integrator_statuses(node, pairs)
    before = {row.get("user"): row.get("state") for row in current.get("integrators", [])}
    for row in integrators:
        if row["state"] == "Expired" and before.get(row["user"]) == "Active":
            recorder.event("Normal", reasons.EVENT_REVOKED_ACCESS,
                           f"access of integrator {row['user']} ended on {row['expires']}: revoked")  # fmt: skip

    # Backups, once the backup parts are in place.
    backup_ready = next((c for c in part_conds if c.type == reasons.BACKUP_READY), None)
    backup = dict(current.get("backup") or {})
    drill = current.get("restoreDrill")
    busy = False
    if backup_ready is not None and backup_ready.status == "True":
        try:
            request = str((meta.get("annotations") or {}).get(BACKUP_REQUEST_ANNOTATION, ""))
            step = await backups(node, backends, settings, current, recorder, now, request[:128])
            backup, drill, busy = step.backup, step.drill, step.busy
        except BackendError as error:
            logger.debug("backup step of %s: %s", name, error)
            recorder.event("Warning", reasons.EVENT_CANNOT_BACK_UP, f"cannot follow backups: {error}")
    interval = datetime.timedelta(days=spec.backup.interval_days)
    backup_current = backup_condition(backup, interval, now, bool(backup.get("running")))

    reachable = reachability.condition(reach, spec.network.endpoint)
    computed = part_conds + verdicts + [reachable, backup_current]
    foreign = next((c for c in part_conds if c.reason == reasons.REASON_NOT_OWNED), None)
    stalled = conditions.true(reasons.STALLED, foreign.reason, foreign.message) if foreign else None
    merged, _ = conditions.merge(current.get("conditions", []), computed + summarize(computed, stalled), generation)
    status: dict[str, Any] = {
        **current,
        "observedGeneration": generation,
        "conditions": merged,
        "compliance": compliance.summary(node.profile, lines),
        "requirements": [line.to_status() for line in lines],
        "namespace": node.namespace.name,
        "bucket": node.bucket.name,
        "group": node.group,
        "integrators": integrators,
        "backup": backup,
        "deidentificationKey": key_status(ingest_job.node_key_secret_name(name), spec.deletion_policy, settings),
    }
    if measured is not None:
        status["measured"] = measured.to_status()
    else:
        status.pop("measured", None)
    if drill is not None:
        status["restoreDrill"] = drill
    _observe_metrics(name, merged, backup, interval)
    retry = any(o.retry for _, o in pairs)
    not_ready = [c for c in part_conds if c.status != "True"]
    message = "; ".join(f"{c.type}: {c.message}" for c in not_ready) or ("backup running" if busy else "")
    return ReconcileResult(status, status != current, retry, message, sum(o.wrote for _, o in pairs))


def _observe_metrics(name: str, conds: Sequence[Mapping[str, Any]], backup: Mapping[str, Any],
                     interval: datetime.timedelta) -> None:  # fmt: skip
    for type_ in (reasons.COMPLIANT, reasons.LEGALLY_CLEARED, reasons.BACKUP_CURRENT):
        cond = conditions.get(conds, type_) or {}
        metrics.NODE_CONDITION.labels(node=name, condition=type_).set(1 if cond.get("status") == "True" else 0)
    metrics.NODE_BACKUP_INTERVAL.labels(node=name).set(interval.total_seconds())
    if when := backup_job.parse_time((backup.get("lastSuccess") or {}).get("time")):
        metrics.NODE_LAST_BACKUP.labels(node=name).set(when.timestamp())


def forget_metrics(name: str) -> None:
    """A retired node's series go."""
    for gauge, labelsets in (
        (metrics.NODE_CONDITION, [(name, c) for c in (reasons.COMPLIANT, reasons.LEGALLY_CLEARED,
                                                       reasons.BACKUP_CURRENT, reasons.REACHABLE)]),
        (metrics.NODE_BACKUP_INTERVAL, [(name,)]),
        (metrics.NODE_LAST_BACKUP, [(name,)]),
        (metrics.NODE_LAST_SEEN, [(name,)]),
        (metrics.NODE_PROBE_SECONDS, [(name, "ssh"), (name, "dns")]),
    ):  # fmt: skip
        for labels in labelsets:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass


# The probes.


def probe_facts(reach: Mapping[str, Any] | None) -> compliance.ProbeFacts:
    """What the probes have shown so far, as the firewall requirement reads it."""
    reach = reach or {}
    return compliance.ProbeFacts(probed=bool(reach.get("lastProbe")),
                                 ssh_seen=bool((reach.get("ssh") or {}).get("lastSuccess")),
                                 dns_seen=bool((reach.get("dns") or {}).get("lastSuccess")))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ProbeRound:
    """One round of both probes of an endpoint, and when it ran."""

    endpoint: Endpoint
    ssh: reachability.ProbeResult
    dns: reachability.ProbeResult
    at: datetime.datetime


async def run_probes(*, body: Mapping[str, Any], settings: OperatorSettings,
                     now: datetime.datetime) -> ProbeRound | None:  # fmt: skip
    """Probe the node's endpoint (I/O only, no status): None when the spec is invalid (the reconcile says why).
    The handler runs this outside the node's lock, so a long reconcile never delays a probe."""
    try:
        spec = FederatedNodeSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return None
    ssh, dns_ = await reachability.probe(spec.network.endpoint, settings.federation.probe_timeout_seconds)
    return ProbeRound(spec.network.endpoint, ssh, dns_, now)


def probe_patch(*, body: Mapping[str, Any], probed: ProbeRound, recorder: Recorder) -> dict[str, Any] | None:
    """The status patch (reachability, Reachable, Ready) of a probe round, for a fresh read of the node; None when
    the spec is invalid or its endpoint changed since the round (the next round probes the new one). When what the
    probes have shown changes (the firewall requirement reads it), the caller runs a reconcile too: `probe_facts`
    of the old and new reachability differ."""
    try:
        spec = FederatedNodeSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return None
    if spec.network.endpoint != probed.endpoint:
        return None
    ssh, dns_, now = probed.ssh, probed.dns, probed.at
    name, generation = str(body["metadata"]["name"]), int(body["metadata"].get("generation", 0))
    current = dict(body.get("status") or {})
    before = (current.get("reachability") or {}).get("state")
    reach = reachability.record(current.get("reachability"), ssh, dns_, now)
    endpoint = spec.network.endpoint
    if reach["state"] != before and reach["state"] == "Online":
        recorder.event("Normal", reasons.EVENT_NODE_ONLINE, f"{endpoint.host} answers on {endpoint.ssh_port}/TCP and "
                       f"{endpoint.dns_port}/UDP")  # fmt: skip
    elif reach["state"] != before and reach["state"] == "Offline":
        recorder.event("Warning", reasons.EVENT_NODE_OFFLINE, f"{endpoint.host}: {reach['lastError']}")
    metrics.NODE_CONDITION.labels(node=name, condition=reasons.REACHABLE).set(1 if reach["state"] == "Online" else 0)
    metrics.NODE_PROBE_SECONDS.labels(node=name, probe="ssh").set(ssh.seconds)
    metrics.NODE_PROBE_SECONDS.labels(node=name, probe="dns").set(dns_.seconds)
    if seen := backup_job.parse_time(reach.get("lastSeen")):
        metrics.NODE_LAST_SEEN.labels(node=name).set(seen.timestamp())
    existing = list(current.get("conditions", []))
    reachable = reachability.condition(reach, endpoint)
    stalled_now = (conditions.get(existing, reasons.STALLED) or {}).get("status") == "True"
    others = [c for c in _as_conds(existing) if c.type != reasons.REACHABLE]
    computed = [reachable] + ([] if stalled_now or not others else summarize(others + [reachable]))
    merged, _ = conditions.merge(existing, computed, int(current.get("observedGeneration") or generation))
    return {"reachability": reach, "conditions": merged}


# Retirement.


async def finalize(*, body: Mapping[str, Any], backends: Backends, settings: OperatorSettings, profiles: Profiles,
                   recorder: Recorder, now: datetime.datetime) -> managed.FinalizeOutcome:  # fmt: skip
    """Revoke every access; keep the store, the backups, their key and the de-identification key under Retain,
    remove them under Delete.
    The scratch bucket of restore drills always goes; so do the node's backup Jobs."""
    meta = body["metadata"]
    name, uid = str(meta["name"]), str(meta.get("uid", ""))
    try:
        spec = FederatedNodeSpec.model_validate(dict(body.get("spec") or {}))
        node = plan(name, uid, spec, settings, profiles, now.date())
    except (pydantic.ValidationError, InvalidPlan):
        return managed.FinalizeOutcome(True, "nothing was provisioned for an invalid spec")
    node_parts = parts(node, backends, settings)
    client = ownership.OwnedNamespaces(backends.kube, node.owner, trusted=[settings.federation.backup_namespace])
    jobs = kube_objects.KubeObjectsAdapter(
        client, part=reasons.BACKUP_READY, noun="BackupJob", member_key="", owner=node.owner,
        namespace=settings.federation.backup_namespace, kinds=[Job], desired=[],
    )  # fmt: skip
    steps: list[tuple[Adapter, Any]] = [(jobs, "Delete")]
    for index, adapter in reversed(list(enumerate(node_parts.adapters))):
        if index in node_parts.shared:
            continue
        steps.append((adapter, "Delete" if adapter is node_parts.scratch else spec.deletion_policy))
    # The key pseudonyms of ingests into the node were made with (issue 14.5's rule, as for a project).
    key = deidentification_key(ingest_job.node_key_secret_name(name), backends, settings)
    steps.append((key, spec.deletion_policy))
    messages = []
    for adapter, policy in steps:
        outcome = await managed.finalize_part(adapter, policy, recorder)
        if not outcome.done:
            return outcome
        messages.append(f"{adapter.noun.lower()}: {outcome.message}")
    forget_metrics(name)
    return managed.FinalizeOutcome(True, "; ".join(messages))
