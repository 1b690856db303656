"""All kopf handlers: thin wrappers that call the reconcilers and translate results for kopf.

`register(registry, settings)` wires them up, so intervals can come from the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

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

ANNOTATION_PREFIX = GROUP
PROJECTS = (GROUP, VERSION, PROJECT_KIND.plural)
INGESTS = (GROUP, VERSION, INGEST_KIND.plural)


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


def configure(settings: kopf.OperatorSettings, config: OperatorSettings) -> None:
    """Our finalizer and annotation names, watch timeouts, and which log records become events."""
    settings.persistence.finalizer = config.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300  # the API server ends each watch after this; kopf re-lists
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING  # our recorder posts the meaningful Normal events
    settings.execution.max_workers = 32  # blocking backend SDK calls run in this pool (asyncio.to_thread)
    settings.background.cancellation_polling = 2  # a resync running when deletion starts delays it this long
    if config.webhook.enabled:
        hook = config.webhook
        settings.admission.server = kopf.WebhookServer(
            addr=hook.listen_address,
            port=hook.port,
            host=hook.host,
            certfile=str(hook.cert_file),
            pkeyfile=str(hook.key_file),
            cafile=str(hook.ca_file) if hook.ca_file else None,
        )
        settings.admission.managed = hook.configuration_name


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler in `registry`."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, else $KUBECONFIG (local runs, tests, the demo)."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, config)
        memo.runtime = Runtime.create(config)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.close()

    async def _reconcile(body: kopf.Body, memo: kopf.Memo, retry: int = 0, priority: Priority = Priority.EDIT) -> None:
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        # The slot before the lock: a resync waiting for a slot must not hold the lock an edit of the object needs.
        async with runtime.slots.take(priority), runtime.locks[meta["uid"]], observed(PROJECT_KIND.kind) as outcome:
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
            )
            await recorder.flush()
            if result.changed:
                await status_io.write_project_status(runtime.backends.kube, meta["name"], result.status)
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

    if config.webhook.enabled:

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
            requester = admission.Requester(str(userinfo.get("username", "")), tuple(userinfo.get("groups") or ()))
            created = new if new is not None else (body if operation == "CREATE" else None)
            try:
                admission.review(
                    operation=operation,  # type: ignore[arg-type]
                    requester=requester,
                    old=old,
                    new=created,
                    settings=config,
                    today=today(),
                )
                if operation == "CREATE" and created is not None:
                    runtime: Runtime = memo.runtime
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

    async def _reconcile_ingest(body: kopf.Body, memo: kopf.Memo) -> None:
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        async with runtime.locks[meta["uid"]], observed(INGEST_KIND.kind):
            result = await data_ingest.reconcile(
                body=body,
                backends=runtime.backends,
                settings=runtime.settings,
                recorder=recorder,
                now=datetime.datetime.now(datetime.UTC),
            )
            await recorder.flush()
            if result.changed:
                await status_io.write_ingest_status(
                    runtime.backends.kube, meta["namespace"], meta["name"], result.status
                )

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
            raise kopf.TemporaryError(outcome.message, delay=backoff(runtime.settings.intervals, retry))
        runtime.locks.pop(body["metadata"]["uid"], None)

    if config.webhook.enabled:

        @kopf.on.validate(*INGESTS, registry=registry, id="approval", operations=["CREATE", "UPDATE"])
        def validate_ingest(userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None,
                            body: kopf.Body, **_: Any) -> None:  # fmt: skip
            """Only data stewards approve ingests, under their own name."""
            requester = admission.Requester(str(userinfo.get("username", "")), tuple(userinfo.get("groups") or ()))
            try:
                admission.review_ingest(requester=requester, old=old, new=new if new is not None else body,
                                        ingest=config.ingest)  # fmt: skip
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
            )
            await recorder.flush()
            if not outcome.done:
                status, changed = research_project.deleting_status(
                    body.get("status"), int(meta.get("generation", 0)), outcome
                )
                if changed:
                    await status_io.write_project_status(runtime.backends.kube, meta["name"], status)
        if not outcome.done:
            # Back off like every other failure (issue 8.2): a deletion Slurm refuses must not retry every few seconds.
            raise kopf.TemporaryError(outcome.message, delay=backoff(runtime.settings.intervals, retry))
        runtime.locks.pop(meta["uid"], None)
