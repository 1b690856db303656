"""All kopf handlers: thin wrappers that call the reconcilers and translate results for kopf.

`register(registry, settings)` wires them up, so intervals can come from the configuration.

Webhooks: every operator process serves the same mutating and validating webhooks (`WEBHOOKS`); their
configurations are not managed by kopf (kopf empties a managed configuration when its process exits,
which would switch admission off whenever one of several processes stops) but installed by the
deployment from `webhook_configurations()` (`enclave-operator webhook-config`), failurePolicy Fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import kopf

from enclave_operator import admission, metrics
from enclave_operator.api import GROUP, VERSION
from enclave_operator.api.data_ingest import KIND as INGEST_KIND
from enclave_operator.api.research_project import KIND as PROJECT_KIND
from enclave_operator.engine import status as status_io
from enclave_operator.engine.events import KubeRecorder
from enclave_operator.engine.slots import Priority
from enclave_operator.reconcilers import data_ingest, research_project
from enclave_operator.runtime import Runtime
from enclave_operator.settings import IntervalSettings, OperatorSettings

KOPF_PREFIX = f"kopf.{GROUP}"
"""kopf's own annotations (progress, last handled configuration). Not `enclave.io`: kopf ignores changes to
annotations under its prefix, and `enclave.io/approval` must start a reconcile at once (issue 14.1)."""
PROJECTS = (GROUP, VERSION, PROJECT_KIND.plural)
INGESTS = (GROUP, VERSION, INGEST_KIND.plural)


@dataclasses.dataclass(frozen=True)
class Webhook:
    """One admission webhook: the kopf handler id is also its URL path."""

    id: str
    plural: str
    type: Literal["Mutating", "Validating"]
    operations: tuple[str, ...]


WEBHOOKS = (
    Webhook("stamp-project", PROJECT_KIND.plural, "Mutating", ("CREATE", "UPDATE")),
    Webhook("policy", PROJECT_KIND.plural, "Validating", ("CREATE", "UPDATE", "DELETE")),
    Webhook("stamp-ingest", INGEST_KIND.plural, "Mutating", ("CREATE", "UPDATE")),
    Webhook("approval", INGEST_KIND.plural, "Validating", ("CREATE", "UPDATE")),
)
WEBHOOK_TIMEOUT_S = 15
"""The API server's bound of one webhook call; collision checks ask every backend once (≈ 1 s)."""


def webhook_configurations(name: str, client_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The MutatingWebhookConfiguration and ValidatingWebhookConfiguration for `client_config` (a `url` or a
    `service` reference, with `caBundle`): one webhook per entry of WEBHOOKS, path = handler id."""
    out = []
    for type_ in ("Mutating", "Validating"):
        hooks = []
        for hook in (h for h in WEBHOOKS if h.type == type_):
            config = dict(client_config)
            if "url" in config:
                config["url"] = f"{config['url'].rstrip('/')}/{hook.id}"
            else:
                config["service"] = {**config["service"], "path": f"/{hook.id}"}
            hooks.append({
                "name": f"{hook.id}.{name}",
                "clientConfig": config,
                "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [hook.plural],
                           "operations": list(hook.operations), "scope": "*"}],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": WEBHOOK_TIMEOUT_S,
                "admissionReviewVersions": ["v1"],
                **({"reinvocationPolicy": "Never"} if type_ == "Mutating" else {}),
            })  # fmt: skip
        out.append({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": f"{type_}WebhookConfiguration",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "enclave-operator"}},
            "webhooks": hooks,
        })  # fmt: skip
    return out


@contextlib.asynccontextmanager
async def observed(kind: str) -> AsyncIterator[dict[str, str]]:
    """Count and time one reconcile of `kind`; the body may set outcome["result"] (default "ok")."""
    outcome = {"result": "ok"}
    start = time.perf_counter()
    try:
        yield outcome
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
        outcome["result"] = "error"
        raise
    finally:
        metrics.RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - start)
        metrics.RECONCILES.labels(kind=kind, result=outcome["result"]).inc()


def backoff(intervals: IntervalSettings, retry: int) -> float:
    """Exponential back-off for a part that is not ready (e.g. a backend outage), capped at the resync interval."""
    return float(
        min(intervals.retry_seconds * 2 ** min(retry, 10), max(intervals.resync_seconds, intervals.retry_seconds))
    )


def today() -> datetime.date:
    """Governance dates are days in UTC."""
    return datetime.datetime.now(datetime.UTC).date()


def in_cluster(info: kopf.ConnectionInfo | None) -> kopf.ConnectionInfo | None:
    """The service account's connection to the API server at KUBERNETES_SERVICE_HOST/PORT, as client-go and
    lightkube (our own client) find it, rather than kopf's `kubernetes.default.svc`, which needs cluster DNS
    (a hostNetwork pod or a DNS outage would leave kopf without its API server while lightkube has it)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if info is None or not host:
        return info
    host = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}")


def configure(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    """Our finalizer and annotation names, watch timeouts, and which log records become events."""
    settings.persistence.finalizer = config.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.peering.lifetime = config.peering.lifetime_seconds
    settings.watching.server_timeout = 300  # the API server ends each watch after this; kopf re-lists
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING  # our recorder posts the meaningful Normal events
    settings.execution.max_workers = 32  # blocking backend SDK calls run in this pool (asyncio.to_thread)
    settings.background.cancellation_polling = 2  # a resync running when deletion starts delays it this long
    # Our CRDs exist before the operator starts (the chart's crds/, `make demo`, the tests): no need to watch
    # every CRD of the cluster, which would take RBAC on customresourcedefinitions (least privilege).
    settings.scanning.disabled = True
    hook = config.webhook
    settings.admission.server = kopf.WebhookServer(
        addr=hook.listen_address, port=hook.port, certfile=str(hook.cert_file), pkeyfile=str(hook.key_file)
    )
    settings.admission.managed = None  # the deployment owns the configurations (module docstring)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler in `registry`."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, else $KUBECONFIG (local runs, tests, the demo)."""
        return in_cluster(kopf.login_with_service_account(**kwargs)) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        configure(settings, config)
        memo.runtime = Runtime.create(config)
        logger.info("running as %s", await memo.runtime.learn_identity())

    def requester(userinfo: dict[str, Any], runtime: Runtime) -> admission.Requester:
        username = str(userinfo.get("username", ""))
        groups = tuple(userinfo.get("groups") or ())
        return admission.Requester(username, groups, operator=bool(runtime.identity) and username == runtime.identity)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.close()

    async def _reconcile(
        scheduled: kopf.Body, memo: kopf.Memo, retry: int = 0, priority: Priority = Priority.EDIT
    ) -> None:
        runtime: Runtime = memo.runtime
        uid = scheduled["metadata"]["uid"]
        # The slot before the lock: a resync waiting for a slot must not hold the lock an edit of the object needs.
        # The body is read again under the lock: the one kopf scheduled may be stale by now.
        async with runtime.slots.take(priority), runtime.locks[uid], observed(PROJECT_KIND.kind) as outcome:
            body = await status_io.read_project(runtime.backends.kube, scheduled["metadata"]["name"], uid)
            if body is None:
                return  # gone meanwhile
            meta = body["metadata"]
            recorder = KubeRecorder(runtime.backends.kube, body)
            result = await research_project.reconcile(
                name=meta["name"],
                generation=int(meta.get("generation", 0)),
                raw_spec=body.get("spec", {}),
                current_status=body.get("status"),
                backends=runtime.backends,
                settings=runtime.settings,
                recorder=recorder,
                today=today(),
                annotations=dict(meta.get("annotations") or {}),
                uid=str(meta.get("uid", "")),
                signer=runtime.signer,
            )
            await recorder.flush()
            if result.changed:
                await status_io.write_project_status(runtime.backends.kube, meta["name"], result.status)
            metrics.OBJECTS.observe(PROJECT_KIND.kind, meta["uid"], result.status)
            outcome["result"] = "retry" if result.retry else "ok"
        if result.retry:
            raise kopf.TemporaryError(result.message, delay=backoff(runtime.settings.intervals, retry))

    @kopf.on.resume(*PROJECTS, registry=registry, id="reconcile")
    @kopf.on.create(*PROJECTS, registry=registry, id="reconcile")
    @kopf.on.update(*PROJECTS, registry=registry, id="reconcile")
    async def reconcile_project(body: kopf.Body, memo: kopf.Memo, retry: int, reason: kopf.Reason, **_: Any) -> None:
        await _reconcile(body, memo, retry, Priority.EDIT if reason == kopf.Reason.UPDATE else Priority.CREATE)

    @kopf.timer(
        *PROJECTS,
        registry=registry,
        id="resync",
        interval=config.intervals.resync_seconds,
        initial_delay=config.intervals.resync_seconds,
    )
    async def resync_project(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Re-observe every backend; repairs drift, writes nothing when nothing changed. A random extra wait first
        (intervals.resyncJitter) spreads the resyncs of objects that were created or resumed together."""
        await asyncio.sleep(random.uniform(0, config.intervals.resync_jitter * config.intervals.resync_seconds))
        await _reconcile(body, memo, priority=Priority.RESYNC)

    def mutate(kind: Literal["ResearchProject", "DataIngest"], operation: str, userinfo: dict[str, Any],
               old: kopf.Body | None, new: kopf.Body | None, body: kopf.Body, patch: kopf.Patch,
               memo: kopf.Memo) -> None:  # fmt: skip
        runtime: Runtime = memo.runtime
        assert runtime.signer is not None
        changes = admission.stamp(
            kind=kind, operation=operation,  # type: ignore[arg-type]
            requester=requester(userinfo, runtime), old=old, new=new if new is not None else body,
            settings=config, signer=runtime.signer, now=datetime.datetime.now(datetime.UTC),
        )  # fmt: skip
        for key, value in changes.items():
            patch.metadata.annotations[key] = value

    @kopf.on.mutate(*PROJECTS, registry=registry, id="stamp-project", operations=["CREATE", "UPDATE"])
    def stamp_project(operation: str, userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None,
                      body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # fmt: skip
        """A platform admin's create or update approves the project as it stands (see admission.py)."""
        mutate(PROJECT_KIND.kind, operation, userinfo, old, new, body, patch, memo)  # type: ignore[arg-type]

    @kopf.on.validate(*PROJECTS, registry=registry, id="policy", operations=["CREATE", "UPDATE", "DELETE"])
    async def validate_project(
        operation: str,
        userinfo: dict[str, Any],
        old: kopf.Body | None,
        new: kopf.Body | None,
        body: kopf.Body,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        """Who may create, change, approve and delete projects; names that collide (see admission.py)."""
        runtime: Runtime = memo.runtime
        created = new if new is not None else (body if operation == "CREATE" else None)
        try:
            admission.review(
                operation=operation,  # type: ignore[arg-type]
                requester=requester(userinfo, runtime),
                old=old,
                new=created,
                settings=config,
                today=today(),
                signer=runtime.signer,
            )
            if operation == "CREATE" and created is not None:
                meta = created.get("metadata") or {}
                name = str(meta.get("name", ""))
                found = await research_project.collisions(
                    name, str(meta.get("uid") or "new"), created.get("spec") or {}, runtime.backends,
                    runtime.settings, today(),
                )  # fmt: skip
                if found:
                    raise admission.collision_denial(name, found)
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=403) from None

    async def _reconcile_ingest(scheduled: kopf.Body, memo: kopf.Memo) -> None:
        runtime: Runtime = memo.runtime
        known = scheduled["metadata"]
        async with runtime.locks[known["uid"]], observed(INGEST_KIND.kind):
            body = await status_io.read_ingest(runtime.backends.kube, known["namespace"], known["name"], known["uid"])
            if body is None:
                return  # gone meanwhile
            meta = body["metadata"]
            recorder = KubeRecorder(runtime.backends.kube, body)
            result = await data_ingest.reconcile(
                body=body,
                backends=runtime.backends,
                settings=runtime.settings,
                recorder=recorder,
                now=datetime.datetime.now(datetime.UTC),
                signer=runtime.signer,
            )
            await recorder.flush()
            if result.changed:
                await status_io.write_ingest_status(
                    runtime.backends.kube, meta["namespace"], meta["name"], result.status
                )
                metrics.count_ingest_progress((body.get("status") or {}).get("progress"), result.status.get("progress"))
            metrics.OBJECTS.observe(INGEST_KIND.kind, meta["uid"], result.status)

    @kopf.on.resume(*INGESTS, registry=registry, id="reconcile")
    @kopf.on.create(*INGESTS, registry=registry, id="reconcile")
    @kopf.on.update(*INGESTS, registry=registry, id="reconcile")
    async def reconcile_ingest(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _reconcile_ingest(body, memo)

    @kopf.timer(
        *INGESTS,
        registry=registry,
        id="poll",
        interval=config.ingest.poll_seconds,
        initial_delay=config.ingest.poll_seconds,  # the create handler has just run
        when=lambda status, **_: (status or {}).get("phase") not in data_ingest.FINAL_PHASES,
    )
    async def poll_ingest(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Follow a running ingest: progress, the Job's outcome, verification."""
        await _reconcile_ingest(body, memo)

    @kopf.on.delete(*INGESTS, registry=registry, id="finalize")
    async def delete_ingest(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        recorder = KubeRecorder(runtime.backends.kube, body)
        async with runtime.locks[body["metadata"]["uid"]]:
            outcome = await data_ingest.finalize(
                body=body, backends=runtime.backends, settings=runtime.settings, recorder=recorder
            )
            await recorder.flush()
        if not outcome.done:
            metrics.OBJECTS.observe(INGEST_KIND.kind, body["metadata"]["uid"], body.get("status"), deleting=True)
            raise kopf.TemporaryError(outcome.message, delay=backoff(runtime.settings.intervals, retry))
        metrics.OBJECTS.forget(INGEST_KIND.kind, body["metadata"]["uid"])
        runtime.locks.pop(body["metadata"]["uid"], None)

    @kopf.on.mutate(*INGESTS, registry=registry, id="stamp-ingest", operations=["CREATE", "UPDATE"])
    def stamp_ingest(operation: str, userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None,
                     body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # fmt: skip
        """A data steward's create, update or `enclave.io/approve` approves the ingest."""
        mutate(INGEST_KIND.kind, operation, userinfo, old, new, body, patch, memo)  # type: ignore[arg-type]

    @kopf.on.validate(*INGESTS, registry=registry, id="approval", operations=["CREATE", "UPDATE"])
    def validate_ingest(userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None,
                        body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:  # fmt: skip
        """Only data stewards approve ingests, only as the webhook signed it."""
        runtime: Runtime = memo.runtime
        try:
            admission.review_ingest(requester=requester(userinfo, runtime), old=old,
                                    new=new if new is not None else body, ingest=config.ingest,
                                    signer=runtime.signer)  # fmt: skip
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=403) from None

    @kopf.on.delete(*PROJECTS, registry=registry, id="finalize")
    async def delete_project(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        async with runtime.slots.take(Priority.EDIT), runtime.locks[meta["uid"]]:
            outcome = await research_project.finalize(
                name=meta["name"],
                raw_spec=body.get("spec", {}),
                backends=runtime.backends,
                settings=runtime.settings,
                recorder=recorder,
                today=today(),
                uid=str(meta.get("uid", "")),
                current_status=body.get("status"),
            )
            await recorder.flush()
            if not outcome.done:
                status, changed = research_project.deleting_status(
                    body.get("status"), int(meta.get("generation", 0)), outcome
                )
                if changed:
                    await status_io.write_project_status(runtime.backends.kube, meta["name"], status)
        if not outcome.done:
            metrics.OBJECTS.observe(PROJECT_KIND.kind, meta["uid"], body.get("status"), deleting=True)
            # Back off like every other failure (issue 8.2): a deletion Slurm refuses must not retry every few seconds.
            raise kopf.TemporaryError(outcome.message, delay=backoff(runtime.settings.intervals, retry))
        metrics.OBJECTS.forget(PROJECT_KIND.kind, meta["uid"])
        runtime.locks.pop(meta["uid"], None)
