"""Reconcile a DataIngest: check the project and source, wait for a data steward's approval, provision
the worker Job with a destination credential scoped to the prefix, follow its progress, verify the
shards' outputs and write the provenance manifest.

Phases: Pending (project or source not usable yet) → AwaitingApproval → Running → Verifying →
Succeeded | Failed. Succeeded and Failed are final: the spec is immutable, a new run is a new object.
Every step is re-derived from what exists (Job, objects in the bucket), so a restart at any line
continues where the last run stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import io
import json
import secrets
from collections.abc import Mapping
from typing import Any

import pydantic
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Namespace, Secret, ServiceAccount

from enclave_operator import conditions, reasons
from enclave_operator.api.data_ingest import KIND as INGEST_KIND_INFO
from enclave_operator.api.data_ingest import DataIngestSpec
from enclave_operator.backends import kube, s3_access, s3_minio
from enclave_operator.backends.errors import BackendError
from enclave_operator.backends.kube_create_only import CreateOnlyAdapter
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import Recorder
from enclave_operator.engine.status import ResearchProjectResource
from enclave_operator.ingest import job as jobs
from enclave_operator.ingest import layout
from enclave_operator.reconcilers import approval
from enclave_operator.reconcilers.research_project import Backends
from enclave_operator.settings import OperatorSettings

FINAL_PHASES = ("Succeeded", "Failed")
INGEST_KIND = INGEST_KIND_INFO.kind
READY = reasons.READY
WORKERS_READY = "WorkersReady"


@dataclasses.dataclass(frozen=True)
class IngestResult:
    status: dict[str, Any]
    changed: bool
    poll: bool
    """Still running: look again after the poll interval."""


def _stamp(now: datetime.datetime) -> str:
    return now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _result(
    current: Mapping[str, Any], generation: int, phase: str, conds: list[conditions.Cond], poll: bool,
    **fields: Any,
) -> IngestResult:  # fmt: skip
    merged, _ = conditions.merge(current.get("conditions", []), conds, generation)
    status = {**current, **fields, "phase": phase, "observedGeneration": generation, "conditions": merged}
    return IngestResult(status, status != dict(current), poll)


def _waiting(current: Mapping[str, Any], generation: int, phase: str, reason: str, message: str) -> IngestResult:
    conds = [conditions.false(READY, reason, message), conditions.true(reasons.RECONCILING, reason, message),
             conditions.false(reasons.STALLED, reason, "")]  # fmt: skip
    return _result(current, generation, phase, conds, True)


def _final(current: Mapping[str, Any], generation: int, phase: str, reason: str, message: str,
           now: datetime.datetime, **fields: Any) -> IngestResult:  # fmt: skip
    ok = phase == "Succeeded"
    conds = [
        conditions.Cond(READY, "True" if ok else "False", reason, message),
        conditions.false(reasons.RECONCILING, reason, ""),
        conditions.Cond(reasons.STALLED, "False" if ok else "True", reason, "" if ok else message),
    ]
    return _result(current, generation, phase, conds, False, completionTime=_stamp(now), **fields)


@dataclasses.dataclass(frozen=True)
class IngestParts:
    """The external things one running ingest needs, in creation order."""

    namespace: CreateOnlyAdapter
    service_account: CreateOnlyAdapter
    key: CreateOnlyAdapter
    policy: s3_access.PoliciesAdapter
    credential: s3_access.CredentialAdapter
    job: CreateOnlyAdapter

    def provisioning(self) -> list[Any]:
        return [self.namespace, self.service_account, self.key, self.policy, self.credential, self.job]

    def access(self) -> list[Any]:
        """What is revoked when the ingest ends: the scoped credential and its policy."""
        return [self.credential, self.policy]


def parts(*, ns: str, name: str, uid: str, project: str, bucket: str, spec: DataIngestSpec,
          backends: Backends, settings: OperatorSettings) -> IngestParts:  # fmt: skip
    ingest_settings = settings.ingest
    ident = jobs.ingest_id(ns, name, uid)
    source = ingest_settings.source(spec.source.name)
    assert source is not None
    ref = f"{ns}/{name}"
    labels = {PROJECT_LABEL: project, MANAGED_BY_LABEL: MANAGED_BY}
    worker = jobs.worker_spec(ref=ref, spec=spec, source=source, bucket=bucket,
                              s3_endpoint=ingest_settings.s3_endpoint or settings.s3.endpoint,
                              s3_secure=settings.s3.secure)  # fmt: skip
    job = jobs.job_manifest(ident=ident, ref=ref, project=project, spec=spec, worker=worker, source=source,
                            settings=ingest_settings)  # fmt: skip
    part = WORKERS_READY
    target = ingest_settings.namespace
    managed_by = {MANAGED_BY_LABEL: MANAGED_BY}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": target, "labels": {**managed_by, "pod-security.kubernetes.io/enforce": "restricted"}},
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "automountServiceAccountToken": False,
        "metadata": {"name": jobs.SERVICE_ACCOUNT, "namespace": target, "labels": managed_by},
    }
    key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "stringData": {"key": secrets.token_hex(32)},
        "metadata": {"name": jobs.key_secret_name(project), "namespace": target, "labels": labels},
    }
    return IngestParts(
        namespace=CreateOnlyAdapter(backends.kube, Namespace, namespace, part=part, noun="IngestNamespace",
                                    keep_on_delete=True),
        service_account=CreateOnlyAdapter(backends.kube, ServiceAccount, account, part=part,
                                          noun="WorkerServiceAccount", keep_on_delete=True),
        key=CreateOnlyAdapter(backends.kube, Secret, key, part=part, noun="DeidentificationKey", keep_on_delete=True),
        policy=s3_access.PoliciesAdapter(
            backends.s3, {jobs.credential_name(ident): jobs.destination_policy(bucket, spec.destination.prefix)},
            bucket, noun="DestinationPolicy",
        ),
        credential=s3_access.CredentialAdapter(
            backends.s3, backends.kube,
            s3_access.DesiredCredential(
                access_key=jobs.credential_name(ident), policy=jobs.credential_name(ident), namespace=target,
                secret_name=f"{jobs.credential_name(ident)}-s3", labels={**labels, jobs.INGEST_LABEL: ident},
                bucket=bucket, probe_prefix=spec.destination.prefix, noun="DestinationCredential",
            ),
        ),
        job=CreateOnlyAdapter(backends.kube, Job, job, part=part, noun="WorkerJob"),
    )  # fmt: skip


def _bucket_and_checks(project: Any, spec: DataIngestSpec, ns: str, settings: OperatorSettings) -> tuple[str, str]:
    """(bucket, "") when the project can receive data, else ("", why not)."""
    if project is None:
        return "", f"ResearchProject {spec.project} does not exist"
    status = dict(getattr(project, "status", None) or {})
    if status.get("namespace") != ns:
        return "", f"a DataIngest for project {spec.project} must live in namespace {status.get('namespace')}"
    conds = status.get("conditions") or []
    if (conditions.get(conds, reasons.CORDONED) or {}).get("status") == "True":
        return "", f"project {spec.project} is cordoned: no new data may enter it"
    if (conditions.get(conds, READY) or {}).get("status") != "True":
        return "", f"project {spec.project} is not Ready yet"
    return str(status.get("bucket")), ""


async def _read_json(backends: Backends, bucket: str, key: str) -> dict[str, Any] | None:
    def fetch() -> dict[str, Any] | None:
        try:
            response = backends.s3.s3.get_object(bucket, key)
        except s3_minio.S3Error as error:
            if error.code == "NoSuchKey":
                return None
            raise
        try:
            return dict(json.loads(response.read()))
        finally:
            response.close()
            response.release_conn()

    return await s3_minio.s3_call(f"read {key}", fetch)


async def _progress(backends: Backends, bucket: str, prefix: str, shards: int) -> dict[str, int]:
    totals = {"discovered": 0, "done": 0, "quarantined": 0, "failed": 0, "bytes": 0}
    reports = await asyncio.gather(
        *(_read_json(backends, bucket, layout.progress_key(prefix, i)) for i in range(shards))
    )
    for report in reports:
        for key in totals:
            value = (report or {}).get(key, 0)
            totals[key] += int(value) if isinstance(value, int) else 0
    return totals


def _job_state(job: Any) -> tuple[str, str]:
    """("running"|"succeeded"|"failed", message) from the Job's conditions."""
    status = job.status if job is not None else None
    for cond in status.conditions if status and status.conditions else []:
        if cond.type == "Complete" and cond.status == "True":
            return "succeeded", ""
        if cond.type == "Failed" and cond.status == "True":
            return "failed", f"{cond.reason}: {cond.message or ''}".strip(": ")
    return "running", ""


async def _verify_and_write_manifest(
    backends: Backends, *, bucket: str, spec: DataIngestSpec, ref: str, approver: str, started: str, finished: str,
) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
    """Merge the shard manifests, check every output is in the bucket with its size, write _manifest.json."""
    prefix = spec.destination.prefix
    shards = await asyncio.gather(
        *(_read_json(backends, bucket, layout.shard_manifest_key(prefix, i)) for i in range(spec.parallelism))
    )
    missing = [i for i, shard in enumerate(shards) if shard is None]
    if missing:
        return None, f"shard manifests missing for shards {missing}"
    try:
        manifest = layout.merge_manifests([s for s in shards if s], ingest=ref, approver=approver, started=started,
                                          finished=finished, source_name=spec.source.name)  # fmt: skip
    except layout.MergeError as error:
        return None, f"shard manifests do not agree: {error}"

    def sizes() -> dict[str, int]:
        return {o.object_name: int(o.size or 0)
                for o in backends.s3.s3.list_objects(bucket, prefix=prefix, recursive=True)}  # fmt: skip

    present = await s3_minio.s3_call("list outputs", sizes)
    absent = [o["path"] for o in manifest.get("outputs", []) if present.get(o["path"]) != o.get("bytes")]
    if absent:
        return None, f"{len(absent)} outputs listed in the shard manifests are not in the bucket as recorded"
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    await s3_minio.s3_call(
        "write manifest",
        lambda: backends.s3.s3.put_object(bucket, layout.manifest_key(prefix), io.BytesIO(body), len(body),
                                          content_type="application/json"),
    )  # fmt: skip
    return manifest, ""


async def reconcile(
    *,
    body: Mapping[str, Any],
    backends: Backends,
    settings: OperatorSettings,
    recorder: Recorder,
    now: datetime.datetime,
    signer: approval.Signer | None = None,
) -> IngestResult:
    """One reconcile of one ingest. Approvals are trusted only when `signer` verifies them (reconcilers/approval.py)."""
    meta = body["metadata"]
    ns, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    generation = int(meta.get("generation", 1))
    current = dict(body.get("status") or {})
    if current.get("phase") in FINAL_PHASES:
        return IngestResult(current, False, False)
    try:
        spec = DataIngestSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        return _final(current, generation, "Failed", reasons.REASON_INVALID_SPEC,
                      f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", now)  # fmt: skip
    source = settings.ingest.source(spec.source.name)
    if source is None:
        return _waiting(current, generation, "Pending", "UnknownSource",
                        f"source {spec.source.name} is not defined in the operator configuration")  # fmt: skip
    kind = "dicomweb" if spec.source.dicomweb is not None else "s3"
    if source.kind != kind:
        why = f"source {source.name} is a {source.kind} source; spec.source.{kind} does not apply"
        return _final(current, generation, "Failed", reasons.REASON_INVALID_SPEC, why, now)
    try:
        project = await kube.call("get project", backends.kube.get(ResearchProjectResource, spec.project))
    except kube.NotFound:
        project = None
    bucket, why = _bucket_and_checks(project, spec, ns, settings)
    if why:
        return _waiting(current, generation, "Pending", "ProjectNotReady", why)

    annotations = dict(meta.get("annotations") or {})
    found, unverified = approval.read(signer, approval.ObjectRef(INGEST_KIND, ns, name), annotations)
    approver = f"pre-approved source {source.name}" if source.pre_approved else (found.by if found else "")
    if not approver:
        how = f"a data steward approves with: kubectl annotate dataingest -n {ns} {name} " \
              f"{approval.APPROVE_ANNOTATION}=yes"  # fmt: skip
        if unverified:
            how = f"the {approval.APPROVAL_ANNOTATION} annotation is not signed by this operator and is ignored; {how}"
        if current.get("phase") != "AwaitingApproval":
            recorder.event("Normal", "AwaitingApproval", how)
        return _waiting(current, generation, "AwaitingApproval", "AwaitingApproval", f"waiting: {how}")

    ingest = parts(ns=ns, name=name, uid=uid, project=spec.project, bucket=bucket, spec=spec,
                   backends=backends, settings=settings)  # fmt: skip
    started = current.get("startTime") or _stamp(now)
    fields = {"approvedBy": approver, "startTime": started, "job": f"{settings.ingest.namespace}/{ingest.job._name}"}
    for adapter in ingest.provisioning():
        outcome = await managed.reconcile_part(adapter, recorder)
        if outcome.condition.status != "True":
            reason, text = outcome.condition.reason, outcome.condition.message
            phase = "Running" if current.get("phase") == "Running" else "Pending"
            conds = [conditions.false(READY, reason, text), conditions.true(reasons.RECONCILING, reason, text),
                     conditions.false(reasons.STALLED, reason, "")]  # fmt: skip
            return _result(current, generation, phase, conds, True, **fields)

    try:
        progress = await _progress(backends, bucket, spec.destination.prefix, spec.parallelism)
    except BackendError as error:
        return _waiting(current, generation, "Running", reasons.REASON_BACKEND_UNAVAILABLE, str(error))
    state, message = _job_state(await ingest.job.get())
    if state == "running":
        conds = [conditions.false(READY, "Running", f"{progress['done']} of {progress['discovered']} done"),
                 conditions.true(reasons.RECONCILING, "Running", "workers are running"),
                 conditions.false(reasons.STALLED, "Running", "")]  # fmt: skip
        if current.get("phase") != "Running":
            recorder.event("Normal", "StartedWorkers", f"started {spec.parallelism} worker shards")
        return _result(current, generation, "Running", conds, True, progress=progress, **fields)

    for adapter in ingest.access():  # the scoped credential is revoked however the run ended
        await managed.finalize_part(adapter, "Delete", recorder)
    if state == "failed":
        recorder.event("Warning", "IngestFailed", message)
        return _final(current, generation, "Failed", "WorkersFailed", message, now, progress=progress, **fields)
    manifest, problem = await _verify_and_write_manifest(
        backends, bucket=bucket, spec=spec, ref=f"{ns}/{name}", approver=approver, started=started,
        finished=_stamp(now),
    )  # fmt: skip
    if manifest is None:
        recorder.event("Warning", "VerificationFailed", problem)
        return _final(current, generation, "Failed", "VerificationFailed", problem, now, progress=progress, **fields)
    counts = manifest.get("counts", {})
    summary = (f"{counts.get('done', progress['done'])} items de-identified and verified, "
               f"{progress['quarantined']} quarantined, {progress['failed']} failed")  # fmt: skip
    recorder.event("Warning" if progress["failed"] else "Normal", "IngestSucceeded", summary)
    return _final(current, generation, "Succeeded", "Verified", summary, now, progress=progress,
                  manifest=f"s3://{bucket}/{layout.manifest_key(spec.destination.prefix)}", **fields)  # fmt: skip


async def finalize(*, body: Mapping[str, Any], backends: Backends, settings: OperatorSettings,
                   recorder: Recorder) -> managed.FinalizeOutcome:  # fmt: skip
    """Stop the workers and revoke the scoped credential; the data already written stays (it is the project's)."""
    meta = body["metadata"]
    try:
        spec = DataIngestSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return managed.FinalizeOutcome(True, "nothing was provisioned for an invalid spec")
    if settings.ingest.source(spec.source.name) is None:
        return managed.FinalizeOutcome(True, "nothing was provisioned for an unknown source")
    bucket = str((body.get("status") or {}).get("bucket") or "") or spec.project
    try:
        project = await kube.call("get project", backends.kube.get(ResearchProjectResource, spec.project))
        bucket = str((project.status or {}).get("bucket") or bucket)
    except kube.NotFound:
        pass
    ingest = parts(ns=str(meta["namespace"]), name=str(meta["name"]), uid=str(meta["uid"]), project=spec.project,
                   bucket=bucket, spec=spec, backends=backends, settings=settings)  # fmt: skip
    for adapter in [ingest.job, *ingest.access()]:
        outcome = await managed.finalize_part(adapter, "Delete", recorder)
        if not outcome.done:
            return outcome
    return managed.FinalizeOutcome(True, "workers stopped, credential revoked")
