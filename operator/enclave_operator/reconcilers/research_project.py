"""Reconcile a ResearchProject: plan names and desired state from the spec, then drive each backend
part (namespace, bucket) through the generic engine, and compute the status to write.

Pure planning is separated from I/O so it can be unit-tested; nothing here imports kopf.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from lightkube import AsyncClient

from enclave_operator import conditions, reasons
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.backends import kube_namespace, s3_minio
from enclave_operator.backends.adapter import Adapter
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import Recorder
from enclave_operator.quantity import to_bytes
from enclave_operator.settings import OperatorSettings

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidPlan(Exception):
    """The spec (with the operator's naming settings) cannot be turned into backend objects."""


@dataclasses.dataclass(frozen=True)
class ProjectPlan:
    """Everything the parts need, derived once from the spec and the settings."""

    name: str
    spec: ResearchProjectSpec
    namespace: kube_namespace.DesiredNamespace
    bucket: s3_minio.DesiredBucket


def plan(name: str, spec: ResearchProjectSpec, settings: OperatorSettings) -> ProjectPlan:
    """Derive backend names and desired states; raise InvalidPlan naming what is wrong."""
    namespace = settings.naming.namespace.format(project=name)
    bucket = settings.naming.bucket.format(project=name)
    if not _DNS_LABEL.match(namespace):
        raise InvalidPlan(f"namespace name {namespace!r} (from naming.namespace) is not a DNS label")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidPlan(f"bucket name {bucket!r} (from naming.bucket) is not a valid S3 bucket name")
    try:
        quota = to_bytes(spec.storage.quota)
    except ValueError as error:
        raise InvalidPlan(f"spec.storage.quota: {error}") from None
    return ProjectPlan(
        name=name,
        spec=spec,
        namespace=kube_namespace.DesiredNamespace(namespace, name, kube_namespace.desired_labels(name)),
        bucket=s3_minio.DesiredBucket(bucket, name, quota, spec.storage.versioning),
    )


@dataclasses.dataclass(frozen=True)
class Backends:
    """Clients of every backend, made once per operator process."""

    kube: AsyncClient
    s3: s3_minio.S3Clients


def adapters(project: ProjectPlan, backends: Backends) -> list[Adapter]:
    """The parts in the order they are reconciled (and reverse order of deletion)."""
    return [
        kube_namespace.NamespaceAdapter(backends.kube, project.namespace),
        s3_minio.BucketAdapter(backends.s3, project.bucket),
    ]


@dataclasses.dataclass(frozen=True)
class ReconcileResult:
    status: dict[str, Any]
    changed: bool
    """The status differs from the current one and must be written."""
    retry: bool
    message: str
    writes: int


def member_statuses(
    spec: ResearchProjectSpec, today: datetime.date, parts: Sequence[managed.PartOutcome]
) -> list[dict[str, Any]]:
    """Per member: the state the spec and dates give, and what each backend reported."""
    cordoned = today > spec.valid_until
    rows = []
    for member in spec.members:
        state = "Expired" if member.expires and today > member.expires else ("Cordoned" if cordoned else "Active")
        backends: dict[str, str] = {}
        for part in parts:
            if part.observation is not None and member.user in part.observation.members:
                backends[_member_key(part)] = part.observation.members[member.user]
        rows.append({"user": member.user, "role": member.role, "state": state, "backends": backends})
    return rows


def _member_key(part: managed.PartOutcome) -> str:
    return part.condition.type.removesuffix("Ready").lower()


def _stalled_result(current: Mapping[str, Any], generation: int, message: str) -> ReconcileResult:
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
    today: datetime.date | None = None,
) -> ReconcileResult:
    """One reconcile of one project; safe to run again at any time."""
    current = dict(current_status or {})
    today = today or datetime.datetime.now(datetime.UTC).date()
    try:
        spec = ResearchProjectSpec.model_validate(dict(raw_spec))
        project = plan(name, spec, settings)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        message = f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, message)
        return _stalled_result(current, generation, message)
    except InvalidPlan as error:
        recorder.event("Warning", reasons.EVENT_INVALID_SPEC, str(error))
        return _stalled_result(current, generation, str(error))

    outcomes = [await managed.reconcile_part(adapter, recorder) for adapter in adapters(project, backends)]
    parts = [o.condition for o in outcomes]
    merged, _ = conditions.merge(current.get("conditions", []), parts + conditions.summarize(parts), generation)
    members = member_statuses(spec, today, outcomes)
    status = {
        **current,
        "observedGeneration": generation,
        "conditions": merged,
        "namespace": project.namespace.name,
        "bucket": project.bucket.name,
        "memberCount": sum(1 for m in members if m["state"] != "Expired"),
        "members": members,
    }
    retry = any(o.retry for o in outcomes)
    not_ready = [o.condition for o in outcomes if o.condition.status != "True"]
    message = "; ".join(f"{c.type}: {c.message}" for c in not_ready)
    return ReconcileResult(status, status != current, retry, message, sum(o.wrote for o in outcomes))


async def finalize(
    *, name: str, raw_spec: Mapping[str, Any], backends: Backends, settings: OperatorSettings, recorder: Recorder
) -> managed.FinalizeOutcome:
    """Remove (or retain, per deletionPolicy) every part, in reverse order; done when all agree."""
    try:
        spec = ResearchProjectSpec.model_validate(dict(raw_spec))
        project = plan(name, spec, settings)
    except (pydantic.ValidationError, InvalidPlan):
        # A spec that never planned never created anything: there is nothing to remove.
        return managed.FinalizeOutcome(True, "nothing was provisioned for an invalid spec")
    messages = []
    for adapter in reversed(adapters(project, backends)):
        outcome = await managed.finalize_part(adapter, spec.deletion_policy, recorder)
        if not outcome.done:
            return outcome
        messages.append(f"{adapter.noun.lower()}: {outcome.message}")
    return managed.FinalizeOutcome(True, "; ".join(messages))
