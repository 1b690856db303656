"""Reconcile a ResearchProject: plan names and desired state from the spec and today's date, drive
every backend part through the generic engine, and compute the status to write.

Parts, in order (deletion runs in reverse): the Kubernetes space (namespace, quota, limits, network
policies, role bindings) reported as NamespaceReady; S3 (bucket, policies, project credential,
member groups) reported as StorageReady. Pure planning is separated from I/O so it can be
unit-tested; nothing here imports kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pydantic
from lightkube import AsyncClient
from lightkube.resources.core_v1 import LimitRange, ResourceQuota, Secret
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from enclave_operator import conditions, reasons
from enclave_operator.api.common import spec_error
from enclave_operator.api.research_project import KIND as PROJECT_KIND_INFO
from enclave_operator.api.research_project import ResearchProjectSpec, Role
from enclave_operator.backends import (
    identity,
    kube_create_only,
    kube_namespace,
    kube_objects,
    ownership,
    s3_access,
    s3_minio,
    slurm_accounts,
    unavailable,
)
from enclave_operator.backends.adapter import Adapter
from enclave_operator.backends.identity import IdentityClient
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import Recorder
from enclave_operator.ingest import job as ingest_job
from enclave_operator.quantity import to_bytes
from enclave_operator.reconcilers import approval, project_space
from enclave_operator.settings import OperatorSettings

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
WRITER_ROLES: frozenset[Role] = frozenset({"owner", "maintainer", "member"})
logger = logging.getLogger(__name__)
PROJECT_KIND = PROJECT_KIND_INFO.kind


class InvalidPlan(Exception):
    """The spec (with the operator's naming settings) cannot be turned into backend objects."""


@dataclasses.dataclass(frozen=True)
class ProjectPlan:
    """Everything the parts need, derived once from the spec, the settings and today's date."""

    name: str
    owner: ownership.Owner
    """This project (name and uid) as the owner of what it provisions."""
    spec: ResearchProjectSpec
    today: datetime.date
    cordoned: bool
    active: tuple[tuple[str, Role], ...]
    """Members whose access has not expired, with their role."""
    group: str
    namespace: kube_namespace.DesiredNamespace
    bucket: s3_minio.DesiredBucket
    slurm: slurm_accounts.DesiredSlurmAccount | None
    """The Slurm account, when the spec asks for one."""


def is_cordoned(spec: ResearchProjectSpec, today: datetime.date) -> bool:
    """Cordoned from the day after validUntil (the date is the last valid day, UTC)."""
    return today > spec.valid_until


def reserved_namespaces(settings: OperatorSettings) -> list[str]:
    """Namespace patterns no project or federated node may take: the configured ones, the ingest and backup
    namespaces, the operator's own."""
    own = os.environ.get("POD_NAMESPACE")
    return [*settings.naming.reserved_namespaces, settings.ingest.namespace, settings.federation.backup_namespace,
            *([own] if own else [])]  # fmt: skip


def reserved_by(namespace: str, settings: OperatorSettings) -> str | None:
    """The reserved pattern `namespace` matches, or None."""
    return next((p for p in reserved_namespaces(settings) if fnmatch.fnmatchcase(namespace, p)), None)


RECORDED_NAMES = ("namespace", "bucket", "group", "slurmAccount")
"""Status fields that hold the backend names a project got at its first reconcile (see `plan`)."""


def plan(name: str, spec: ResearchProjectSpec, settings: OperatorSettings, today: datetime.date,
         uid: str = "", recorded: Mapping[str, Any] | None = None) -> ProjectPlan:  # fmt: skip
    """Derive backend names and desired states; raise InvalidPlan naming what is wrong.

    Names come from the naming templates once: `recorded` (the project's status) keeps them for the project's
    life, so a template renamed later applies to new projects and the deletion removes what was really made
    (issue 14.7). A recorded name is no licence: every part still claims its thing before touching it.
    """
    names = {key: str(value) for key, value in (recorded or {}).items() if key in RECORDED_NAMES and value}
    namespace = names.get("namespace") or settings.naming.namespace.format(project=name)
    bucket = names.get("bucket") or settings.naming.bucket.format(project=name)
    group = names.get("group") or settings.naming.group.format(project=name)
    owner = ownership.Owner(name, uid, adopt=frozenset(spec.adopt))
    if not DNS_LABEL.match(namespace):
        raise InvalidPlan(f"metadata.name: namespace name {namespace!r} (from naming.namespace) is not a DNS label")
    if pattern := reserved_by(namespace, settings):
        raise InvalidPlan(f"metadata.name: namespace {namespace} is reserved ({pattern}); no project may use it")
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidPlan(f"metadata.name: bucket name {bucket!r} (from naming.bucket) is not a valid S3 bucket name")
    if not GROUP_NAME.match(group):
        raise InvalidPlan(f"metadata.name: group name {group!r} (from naming.group) is not a valid group name")
    try:
        quota = to_bytes(spec.storage.quota)
    except ValueError as error:
        raise InvalidPlan(f"spec.storage.quota: {error}") from None
    active = tuple((m.user, m.role) for m in spec.members if not (m.expires and today > m.expires))
    cordoned = is_cordoned(spec, today)
    slurm = None
    if spec.compute.slurm is not None:
        account = names.get("slurmAccount") or settings.naming.slurm_account.format(project=name)
        users = [user for user, role in active if role in WRITER_ROLES]  # viewers read; they do not submit jobs
        try:
            slurm = slurm_accounts.desired_account(
                account, spec.display_name, spec.compute.slurm, users, cordoned, owner=owner,
                user_prefix=settings.slurm.user_prefix if settings.slurm else "",
                allowed_parents=settings.slurm.allowed_parents if settings.slurm else (spec.compute.slurm.parent,),
            )  # fmt: skip
        except ValueError as error:
            raise InvalidPlan(str(error)) from None
    return ProjectPlan(
        name=name,
        owner=owner,
        spec=spec,
        today=today,
        cordoned=cordoned,
        active=active,
        group=group,
        namespace=kube_namespace.DesiredNamespace(namespace, owner, kube_namespace.desired_labels(owner)),
        bucket=s3_minio.DesiredBucket(bucket, owner, quota, spec.storage.versioning),
        slurm=slurm,
    )


@dataclasses.dataclass(frozen=True)
class Backends:
    """Clients of every backend, made once per operator process; optional backends are None when the
    enclave does not run them."""

    kube: AsyncClient
    s3: s3_minio.S3Clients
    identity: IdentityClient | None = None
    slurm: slurm_accounts.Sacctmgr | None = None
    backup_targets: Mapping[str, s3_minio.S3Clients] = dataclasses.field(default_factory=dict)
    """Admin clients of the FederatedNode backup targets, by target name."""


def adapters(
    project: ProjectPlan,
    backends: Backends,
    settings: OperatorSettings,
    booked_gpus: int = 0,
    booked_families: Sequence[str] = (),
) -> list[Adapter]:
    """The parts in the order they are reconciled (and reverse order of deletion).

    Every part gets the project's `OwnedNamespaces` client instead of the plain one: no part, present or
    future, can read or write in a namespace the project does not own (backends/ownership.py).
    `booked_gpus` and `booked_families` come from the project's active Kubernetes GpuReservations (quota
    and placement).
    """
    kube = ownership.OwnedNamespaces(backends.kube, project.owner)
    ns = project.namespace.name
    placement = project_space.gpu_placement(settings.gpu, booked_families)
    namespace = dataclasses.replace(project.namespace, annotations=placement)
    space = kube_objects.KubeObjectsAdapter(
        kube,
        part=reasons.NAMESPACE_READY,
        noun="NamespacePolicy",
        member_key="kubernetes",
        owner=project.owner,
        namespace=ns,
        kinds=[ResourceQuota, LimitRange, NetworkPolicy],
        desired=[
            project_space.resource_quota(project.name, ns, project.spec, project.cordoned, booked_gpus),
            project_space.limit_range(project.name, ns),
            *project_space.network_policies(project.name, ns, project.spec),
        ],
    )
    bindings = kube_objects.KubeObjectsAdapter(
        kube,
        part=reasons.NAMESPACE_READY,
        noun="RoleBinding",
        member_key="kubernetes",
        owner=project.owner,
        namespace=ns,
        kinds=[RoleBinding],
        desired=project_space.role_bindings(
            project.name, ns, project.group, project.active, project.cordoned, settings.kubernetes
        ),
        members_of=project_space.members_in_bindings(settings.kubernetes),
    )
    writers = [u for u, role in project.active if role in WRITER_ROLES and not project.cordoned]
    readers = [u for u, _ in project.active if u not in writers]
    parts: list[Adapter] = [kube_namespace.NamespaceAdapter(kube, namespace), space, bindings]
    if (group := _identity_group(project, backends)) is not None:
        parts.append(group)
    return parts + [
        s3_minio.BucketAdapter(backends.s3, project.bucket),
        s3_access.bucket_policies(backends.s3, project.bucket.name),
        s3_access.CredentialAdapter(
            backends.s3,
            kube,
            s3_access.store_credential(project.owner, ns, project.bucket.name, writable=not project.cordoned),
        ),
        s3_access.MemberGroupsAdapter(
            backends.s3, s3_access.DesiredGroups(project.group, project.bucket.name, readers, writers)
        ),
        *_scheduler(project, backends),
    ]


def deidentification_key(secret: str, backends: Backends, settings: OperatorSettings) -> Adapter:
    """A de-identification key Secret (issue 14.5), a project's or a federated node's, for deletion only: the
    first DataIngest to the project or node makes it (reconcilers/data_ingest.py), never this. Deletion removes
    it under deletionPolicy Delete, so a later object with the same name never inherits the key (its pseudonyms
    would link to this one's), and keeps it under Retain with the data."""
    meta = {"name": secret, "namespace": settings.ingest.namespace}
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
    return kube_create_only.CreateOnlyAdapter(backends.kube, Secret, manifest, part=reasons.STORAGE_READY,
                                              noun="DeidentificationKey", keep_on_delete=True)  # fmt: skip


def key_status(secret: str, deletion_policy: str, settings: OperatorSettings) -> dict[str, str]:
    """status.deidentificationKey: where the key lives and what deletion will do with it."""
    fate = "Kept" if deletion_policy == "Retain" else "Deleted"
    return {"secret": f"{settings.ingest.namespace}/{secret}", "onDelete": fate}


NEEDS: Mapping[str, Collection[str]] = {
    "NamespacePolicy": ("Namespace",),
    "RoleBinding": ("Namespace",),
    "Credential": ("Namespace", "BucketPolicy"),
    "Group": ("BucketPolicy",),
    "SlurmAccount": managed.AFTER_ALL_OTHERS,
}
"""Parts (by noun) that live inside another part and are reconciled after it; every other part starts at once
(`managed.reconcile_parts`): the Secret of the credential goes into the namespace, and a credential or group
gets a policy that must exist. The Slurm account comes after all others (`managed.AFTER_ALL_OTHERS`): a new one
waits for a `sacctmgr load` with other new accounts and gives its reconcile slot back meanwhile
(priority.give_back_slot), which must leave no other part of the reconcile running without a slot. Only a new
account does that: `needs()` drops the ordering once the account has been ready."""


def needs(current_status: Mapping[str, Any]) -> Mapping[str, Collection[str]]:
    """NEEDS for this reconcile: an edit of a project whose Slurm account was ready need not wait for its other
    parts before the Slurm part starts (they would add their time to the edit's). Should the account be gone
    meanwhile, it goes into a load like a new one, and that one reconcile's other parts may finish without its
    slot: rare, and one reconcile."""
    scheduler = conditions.get(current_status.get("conditions", []), reasons.SCHEDULER_READY) or {}
    if scheduler.get("status") != "True":
        return NEEDS
    return {noun: wanted for noun, wanted in NEEDS.items() if wanted is not managed.AFTER_ALL_OTHERS}


def _identity_group(project: ProjectPlan, backends: Backends) -> identity.GroupAdapter | None:
    if backends.identity is None:
        return None
    group = identity.DesiredIdentityGroup(
        project.group,
        project.spec.display_name,
        [user for user, _ in project.active],
        project.spec.identity.gid_number,
        owner=project.owner,
    )
    return backends.identity.group_adapter(group)


async def collisions(
    name: str, uid: str, raw_spec: Mapping[str, Any], backends: Backends, settings: OperatorSettings,
    today: datetime.date,
) -> list[str]:  # fmt: skip
    """For admission of a new project: every derived name that exists and this project could not take.

    Asks the same `claim()` the adapters use, once per backend root (namespace, identity group, bucket,
    Slurm account), all at once and each bounded by ownership.ADMISSION_CHECK_S. A backend that cannot be reached
    or does not answer in time is skipped (a hung backend must not fail every create): the adapters
    check again before they write, and say so in a condition. An invalid spec is left to the schema.
    """
    try:
        project = plan(name, ResearchProjectSpec.model_validate(dict(raw_spec)), settings, today, uid)
    except (pydantic.ValidationError, InvalidPlan):
        return []
    roots: list[Any] = [kube_namespace.NamespaceAdapter(backends.kube, project.namespace)]
    if (group := _identity_group(project, backends)) is not None:
        roots.append(group)
    roots.append(s3_minio.BucketAdapter(backends.s3, project.bucket))
    if project.slurm is not None and backends.slurm is not None:
        roots.append(slurm_accounts.SlurmAccountAdapter(project.slurm, backends.slurm))
    return await ownership.collisions(roots, project.owner)


def _scheduler(project: ProjectPlan, backends: Backends) -> list[Adapter]:
    """The Slurm account when the spec asks for one; a part that says why when the enclave has no Slurm."""
    if project.slurm is None:
        return []
    if backends.slurm is None:
        message = "spec.compute.slurm is set but this enclave has no Slurm configured"
        return [unavailable.UnavailablePart(reasons.SCHEDULER_READY, "SlurmAccount", "scheduler", message)]
    return [slurm_accounts.SlurmAccountAdapter(project.slurm, backends.slurm)]


@dataclasses.dataclass(frozen=True)
class ReconcileResult:
    status: dict[str, Any]
    changed: bool
    """The status differs from the current one and must be written."""
    retry: bool
    message: str
    writes: int


def member_statuses(
    spec: ResearchProjectSpec,
    today: datetime.date,
    adapters_and_outcomes: Sequence[tuple[Adapter, managed.PartOutcome]],
) -> list[dict[str, Any]]:
    """Per member: the state the spec and dates give, and what each backend reported for them."""
    cordoned = is_cordoned(spec, today)
    rows = []
    for member in spec.members:
        state = "Expired" if member.expires and today > member.expires else ("Cordoned" if cordoned else "Active")
        backends: dict[str, str] = {}
        for adapter, outcome in adapters_and_outcomes:
            observation = outcome.observation
            if observation is None or not observation.members:
                continue
            backends[adapter.member_key] = observation.members.get(member.user, "None")
        rows.append({"user": member.user, "role": member.role, "state": state, "backends": backends})
    return rows


def combine(part: str, outcomes: Sequence[managed.PartOutcome]) -> conditions.Cond:
    """One condition per backend: True when all its adapters are; else the first that is not."""
    for outcome in outcomes:
        if outcome.condition.status != "True":
            return outcome.condition
    return conditions.true(part, reasons.REASON_UP_TO_DATE, "; ".join(o.condition.message for o in outcomes))


def cordon_condition(spec: ResearchProjectSpec, cordoned: bool) -> conditions.Cond:
    if cordoned:
        return conditions.true(
            reasons.CORDONED,
            reasons.REASON_VALIDITY_ENDED,
            f"validUntil {spec.valid_until.isoformat()} has passed: members have read-only access and no new work "
            "can start; extend spec.validUntil to lift the cordon",
        )
    return conditions.false(reasons.CORDONED, reasons.REASON_WITHIN_VALIDITY, f"valid until {spec.valid_until}")


def stalled_result(current: Mapping[str, Any], generation: int, message: str) -> ReconcileResult:
    stalled = conditions.true(reasons.STALLED, reasons.REASON_INVALID_SPEC, message)
    merged, changed = conditions.merge(
        current.get("conditions", []), conditions.summarize([], stalled=stalled), generation
    )
    status = {**current, "observedGeneration": generation, "conditions": merged}
    return ReconcileResult(status, changed or current.get("observedGeneration") != generation, False, message, 0)


async def reconcile(
    *,
    name: str,
    generation: int,
    raw_spec: Mapping[str, Any],
    current_status: Mapping[str, Any] | None,
    backends: Backends,
    settings: OperatorSettings,
    recorder: Recorder,
    today: datetime.date,
    annotations: Mapping[str, str] | None = None,
    uid: str = "",
    signer: approval.Signer | None = None,
    booked_gpus: int = 0,
    booked_families: Sequence[str] = (),
) -> ReconcileResult:
    """One reconcile of one project; safe to run again at any time, and a no-op when nothing changed.

    Applies the *effective* spec (approval.decide): what is above the self-service tier and not approved by
    a verified approval waits, everything else (members, expiries, the cordon) is applied now.
    `booked_gpus` / `booked_families`: the project's active Kubernetes GPU bookings, read by the caller
    from the booking ledger (they raise the GPU quota and choose where GPU pods may run).
    """
    current = dict(current_status or {})
    try:
        requested = ResearchProjectSpec.model_validate(dict(raw_spec))
        plan(name, requested, settings, today, uid, current)  # an invalid request stalls, approved or not
    except pydantic.ValidationError as error:
        message = spec_error(error)
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, message)
        return stalled_result(current, generation, message)
    except InvalidPlan as error:
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, str(error))
        return stalled_result(current, generation, str(error))

    found, unverified = approval.read(signer, approval.ObjectRef(PROJECT_KIND, "", name), annotations or {})
    baseline = datetime.date.fromisoformat(current["validUntil"]) if current.get("validUntil") else None
    decision = approval.decide(requested, found, settings.self_service, name, baseline_valid_until=baseline,
                               unverified=unverified)  # fmt: skip
    spec = decision.effective
    project = plan(name, spec, settings, today, uid, current)
    approved = conditions.Cond(reasons.APPROVED, "True" if decision.approved else "False", decision.reason,
                               decision.message)  # fmt: skip
    previous = conditions.get(current.get("conditions", []), reasons.APPROVED) or {}
    if (previous.get("reason"), previous.get("message")) != (decision.reason, decision.message):
        if not decision.approved:
            recorder.event("Normal", reasons.EVENT_AWAITING_APPROVAL, decision.message)
        elif found is not None:
            recorder.event("Normal", reasons.EVENT_APPROVED, decision.message)

    was_cordoned = (conditions.get(current.get("conditions", []), reasons.CORDONED) or {}).get("status") == "True"
    if project.cordoned != was_cordoned:
        recorder.event(
            "Normal",
            reasons.EVENT_CORDONED if project.cordoned else reasons.EVENT_UNCORDONED,
            cordon_condition(spec, project.cordoned).message,
        )
    planned = adapters(project, backends, settings, booked_gpus, booked_families)
    pairs = list(zip(planned, await managed.reconcile_parts(planned, recorder, needs(current)), strict=True))
    by_part: dict[str, list[managed.PartOutcome]] = {}
    for adapter, outcome in pairs:
        by_part.setdefault(adapter.part, []).append(outcome)
    parts = [combine(part, outcomes) for part, outcomes in by_part.items()]
    foreign = next((c for c in parts if c.reason == reasons.REASON_NOT_OWNED), None)
    stalled = conditions.true(reasons.STALLED, foreign.reason, foreign.message) if foreign else None  # needs a human
    summary = conditions.summarize(parts, stalled=stalled)
    if not decision.approved and stalled is None and all(c.status == "True" for c in parts):
        summary[0] = conditions.false(reasons.READY, decision.reason, decision.message)  # what is allowed is ready
    computed = parts + summary + [cordon_condition(spec, project.cordoned), approved]
    merged, _ = conditions.merge(current.get("conditions", []), computed, generation)
    members = member_statuses(spec, today, pairs)
    status = {
        **current,
        "observedGeneration": generation,
        "conditions": merged,
        "namespace": project.namespace.name,
        "bucket": project.bucket.name,
        "group": project.group,
        **({"slurmAccount": project.slurm.name} if project.slurm is not None else {}),
        "memberCount": len(project.active),
        "members": members,
        "validUntil": spec.valid_until.isoformat(),
        "deidentificationKey": key_status(ingest_job.key_secret_name(project.name), spec.deletion_policy, settings),
    }
    retry = any(o.retry for _, o in pairs)
    not_ready = [c for c in parts if c.status != "True"]
    message = "; ".join(f"{c.type}: {c.message}" for c in not_ready)
    return ReconcileResult(status, status != current, retry, message, sum(o.wrote for _, o in pairs))


def deleting_status(current_status: Mapping[str, Any] | None, generation: int,
                    outcome: managed.FinalizeOutcome) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Status while a deletion waits: why, in conditions (not only in events), and whether it changed."""
    current = dict(current_status or {})
    message = f"deletion waits: {outcome.message}"
    computed = [
        conditions.false(reasons.READY, reasons.REASON_DELETING, message),
        conditions.true(reasons.RECONCILING, reasons.REASON_DELETING, message),
        conditions.false(reasons.STALLED, reasons.REASON_DELETING, ""),
    ]
    if outcome.condition is not None:
        computed.insert(0, outcome.condition)
    merged, changed = conditions.merge(current.get("conditions", []), computed, generation)
    return {**current, "conditions": merged}, changed


async def finalize(
    *,
    name: str,
    raw_spec: Mapping[str, Any],
    backends: Backends,
    settings: OperatorSettings,
    recorder: Recorder,
    today: datetime.date,
    uid: str = "",
    current_status: Mapping[str, Any] | None = None,
) -> managed.FinalizeOutcome:
    """Remove (or retain, per deletionPolicy) every part, in reverse order; done when all agree. The names are
    the ones recorded in `current_status` (what was made), not what the templates give today."""
    try:
        spec = ResearchProjectSpec.model_validate(dict(raw_spec))
        project = plan(name, spec, settings, today, uid, current_status)
    except (pydantic.ValidationError, InvalidPlan):
        # A spec that never planned never created anything: there is nothing to remove.
        return managed.FinalizeOutcome(True, "nothing was provisioned for an invalid spec")
    messages = []
    key = deidentification_key(ingest_job.key_secret_name(project.name), backends, settings)
    parts = [*reversed(adapters(project, backends, settings)), key]
    for adapter in parts:
        outcome = await managed.finalize_part(adapter, spec.deletion_policy, recorder)
        if not outcome.done:
            return outcome
        messages.append(f"{adapter.noun.lower()}: {outcome.message}")
    return managed.FinalizeOutcome(True, "; ".join(messages))
