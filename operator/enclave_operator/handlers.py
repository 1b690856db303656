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
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import kopf

from enclave_operator import admission, memory, metrics
from enclave_operator.api import GROUP, VERSION
from enclave_operator.api.data_ingest import KIND as INGEST_KIND
from enclave_operator.api.federated_node import KIND as NODE_KIND
from enclave_operator.api.gpu_reservation import FINAL_PHASES
from enclave_operator.api.gpu_reservation import KIND as GPU_KIND
from enclave_operator.api.research_project import KIND as PROJECT_KIND
from enclave_operator.backends import kube
from enclave_operator.backends.errors import BackendError
from enclave_operator.backoff import doubling
from enclave_operator.diffbase import MemoryDiffBase
from enclave_operator.engine import status as status_io
from enclave_operator.engine.events import KubeRecorder
from enclave_operator.engine.workqueue import Key, PeeringGate, Retry, Work
from enclave_operator.priority import Priority
from enclave_operator.reconcilers import (
    approval,
    data_ingest,
    federated_node,
    gpu_bookings,
    gpu_reservation,
    research_project,
)
from enclave_operator.runtime import Runtime
from enclave_operator.settings import IntervalSettings, OperatorSettings

KOPF_PREFIX = f"kopf.{GROUP}"
"""kopf's own annotations (progress, last handled configuration). Not `enclave.io`: kopf ignores changes to
annotations under its prefix, and `enclave.io/approval` must start a reconcile at once (issue 14.1)."""
PROJECTS = (GROUP, VERSION, PROJECT_KIND.plural)
INGESTS = (GROUP, VERSION, INGEST_KIND.plural)
NODES = (GROUP, VERSION, NODE_KIND.plural)
RESERVATIONS = (GROUP, VERSION, GPU_KIND.plural)
logger = logging.getLogger(__name__)


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
    Webhook("node-policy", NODE_KIND.plural, "Validating", ("CREATE", "UPDATE")),
    Webhook("stamp-booking", GPU_KIND.plural, "Mutating", ("CREATE", "UPDATE")),
    Webhook("booking", GPU_KIND.plural, "Validating", ("CREATE", "UPDATE")),
)
WEBHOOK_TIMEOUT_S = 15
"""The API server's bound of one webhook call; collision checks ask every backend once (≈ 1 s)."""


def webhook_configurations(name: str, client_config: dict[str, Any], operator_user: str = "") -> list[dict[str, Any]]:
    """The MutatingWebhookConfiguration and ValidatingWebhookConfiguration for `client_config` (a `url` or a
    `service` reference, with `caBundle`): one webhook per entry of WEBHOOKS, path = handler id.

    With `operator_user` (the operator's own username, e.g. its service account's), the API server does not call
    the webhooks for that user's requests (`matchConditions`): they are the operator's bookkeeping (kopf's
    progress annotations, finalizers), which the rules allow anyway, and they were half of all admission calls
    (issue 12). Nothing is given away: the one rule the operator is held to, never to write an approval, guards a
    record only the operator's own key can sign."""
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
                **({"matchConditions": [not_the_operator(operator_user)]} if operator_user else {}),
            })  # fmt: skip
        out.append({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": f"{type_}WebhookConfiguration",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "enclave-operator"}},
            "webhooks": hooks,
        })  # fmt: skip
    return out


def not_the_operator(username: str) -> dict[str, str]:
    """The match condition that leaves `username`'s requests out (a CEL string literal: JSON's quoting is CEL's)."""
    return {"name": "not-the-operator", "expression": f"request.userInfo.username != {json.dumps(username)}"}


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
    """Back-off for a part that is not ready (e.g. a backend outage), capped at the resync interval."""
    return doubling(intervals.retry_seconds, intervals.resync_seconds, retry)


def today() -> datetime.date:
    """Governance dates are days in UTC."""
    return datetime.datetime.now(datetime.UTC).date()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def booking_running(spec: Any, status: Any, **_: Any) -> bool:
    """A booking's clock runs until its phase is final (and, in Kubernetes, its pods' grace period has passed)."""
    status = status or {}
    if status.get("phase") not in FINAL_PHASES:
        return True
    return status.get("phase") == "Expired" and (spec or {}).get("pool") == "kubernetes" and bool(
        status.get("booked")) and status.get("evictedPods") is None  # fmt: skip


async def poll_slurm_capacity(runtime: Runtime) -> None:
    """Read Slurm node capacity every gpu.capacityPollSeconds; wake the bookings whose family changed."""
    assert runtime.scontrol is not None
    while True:
        await asyncio.sleep(runtime.settings.gpu.capacity_poll_seconds)
        runtime.ledger.wake(await gpu_bookings.refresh_slurm(runtime.ledger, runtime.scontrol, runtime.settings.gpu))


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
    settings.persistence.diffbase_storage = MemoryDiffBase(KOPF_PREFIX)  # no PATCH after each creation (diffbase.py)
    settings.peering.lifetime = config.peering.lifetime_seconds
    settings.watching.server_timeout = 300  # the API server ends each watch after this; kopf re-lists
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING  # our recorder posts the meaningful Normal events
    # kopf runs our synchronous handlers (the mutating webhooks) in this pool. Blocking backend calls have their own:
    # S3 the pool of `throttle` (s3.maxConcurrentCalls), identity asyncio's default executor (asyncio.to_thread).
    settings.execution.max_workers = 32
    settings.background.cancellation_polling = 2  # a resync running when deletion starts delays it this long
    # Our CRDs exist before the operator starts (the chart's crds/, `make demo`, the tests): no need to watch
    # every CRD of the cluster, which would take RBAC on customresourcedefinitions (least privilege).
    settings.scanning.disabled = True
    hook = config.webhook
    settings.admission.server = kopf.WebhookServer(
        addr=hook.listen_address, port=hook.port, certfile=str(hook.cert_file), pkeyfile=str(hook.key_file)
    )
    settings.admission.managed = None  # the deployment owns the configurations (module docstring)


Reconcile = Callable[[Key, kopf.Memo], Awaitable[None]]
"""A kind's reconcile of one object, in a reconcile slot its caller holds; raises Retry when it did not converge."""


def reconcile_in_queue(registry: kopf.OperatorRegistry, resource: tuple[str, str, str], kind: str,
                       reconcile: Reconcile, reconciles: dict[str, Reconcile]) -> None:  # fmt: skip
    """Objects of `kind` are reconciled by the work queue (engine/workqueue.py) with `reconcile`, on creation,
    update and resume (kopf's handler only puts the key in the queue and returns, so that an object waiting for a
    slot costs a key, not a kopf handler) and at every resync after. An update is an edit, which goes first; a
    creation or a resume after a restart comes next."""

    async def enqueue(body: kopf.Body, memo: kopf.Memo, reason: kopf.Reason, **_: Any) -> None:
        meta = body["metadata"]
        priority = Priority.EDIT if reason == kopf.Reason.UPDATE else Priority.CREATE
        memo.runtime.queue.add(Key(kind, meta["name"], meta["uid"]), priority)

    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*resource, registry=registry, id="reconcile")(enqueue)
    reconciles[kind] = reconcile


def queued(reconcile: Reconcile, memo: kopf.Memo) -> Work:
    """`reconcile` as the work queue runs it (in the slot the queue took for it)."""

    async def work(key: Key, priority: Priority) -> None:
        await reconcile(key, memo)

    return work


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler in `registry`."""
    reconciles: dict[str, Reconcile] = {}
    """Per kind, the reconcile the work queue runs (engine/workqueue.py)."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, else $KUBECONFIG (local runs, tests, the demo)."""
        return in_cluster(kopf.login_with_service_account(**kwargs)) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
        configure(settings, config)
        runtime = getattr(memo, "runtime", None) or Runtime.create(config)
        memo.runtime = runtime
        if not runtime.identity:
            logger.info("running as %s", await runtime.learn_identity())
        try:
            # Before any handler runs: admission decisions must see every booking, not those watched so far.
            await gpu_bookings.prime(runtime.ledger, runtime.backends.kube, config, today())
        except BackendError as error:
            raise kopf.TemporaryError(f"cannot read GPU bookings: {error}", delay=5) from None
        # The ledger's own watches, in every process: a standby serves the webhook too (kopf pauses its handlers).
        runtime.tasks.append(asyncio.create_task(gpu_bookings.follow(runtime.ledger, runtime.backends.kube, config,
                                                                     today)))  # fmt: skip
        if runtime.scontrol is not None and gpu_bookings.slurm_families(config.gpu):
            await gpu_bookings.refresh_slurm(runtime.ledger, runtime.scontrol, config.gpu)
            runtime.tasks.append(asyncio.create_task(poll_slurm_capacity(runtime)))
        metrics.GPU.source = lambda: gpu_bookings.figures(runtime.ledger, config.gpu, now())
        metrics.QUEUE.source = runtime.queue.figures
        runtime.tasks.append(asyncio.create_task(memory.trim_periodically()))
        peering = None if settings.peering.standalone else settings.peering.name
        gate = PeeringGate(None if peering is None else lambda: status_io.read_peering(runtime.backends.kube, peering),
                           settings.peering.priority)  # fmt: skip
        work = {kind: queued(reconcile, memo) for kind, reconcile in reconciles.items()}
        runtime.tasks.append(asyncio.create_task(runtime.queue.run(work, gate, runtime.slots)))

    def requester(userinfo: dict[str, Any], runtime: Runtime) -> admission.Requester:
        username = str(userinfo.get("username", ""))
        groups = tuple(userinfo.get("groups") or ())
        return admission.Requester(username, groups, operator=bool(runtime.identity) and username == runtime.identity)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime | None = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.close()

    async def _reconcile(key: Key, memo: kopf.Memo) -> None:
        runtime: Runtime = memo.runtime
        # The body is read afresh under the lock: the object may have changed since it was queued.
        async with runtime.locks[key.uid], observed(PROJECT_KIND.kind) as outcome:
            body = await status_io.read_project(runtime.backends.kube, key.name, key.uid)
            if body is None or body["metadata"].get("deletionTimestamp"):
                # Gone meanwhile, or being deleted: the delete handler owns it (a reconcile that waited for the lock
                # behind it must not provision again what it has just removed).
                runtime.queue.forget(key)
                return
            meta = body["metadata"]
            recorder = KubeRecorder(runtime.backends.kube, body)
            namespace = runtime.settings.naming.namespace.format(project=meta["name"])
            booked_gpus, booked_families = runtime.ledger.active_kubernetes(namespace, now())
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
                booked_gpus=booked_gpus,
                booked_families=booked_families,
            )
            await recorder.flush()
            if result.changed:
                await status_io.write_project_status(runtime.backends.kube, meta["name"], result.status)
            metrics.OBJECTS.observe(PROJECT_KIND.kind, meta["uid"], result.status)
            runtime.queue.reconciled(key)
            outcome["result"] = "retry" if result.retry else "ok"
        if result.retry:  # why is in the status; the queue tries again, doubling the delay
            raise Retry(runtime.settings.intervals.retry_seconds)

    # A resync re-observes every backend: repairs drift, writes nothing when nothing changed.
    reconcile_in_queue(registry, PROJECTS, PROJECT_KIND.kind, _reconcile, reconciles)

    def mutate(kind: Literal["ResearchProject", "DataIngest", "GpuReservation"], operation: str,
               userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None, body: kopf.Body,
               patch: kopf.Patch, memo: kopf.Memo, request: approval.Request | None = None) -> None:  # fmt: skip
        runtime: Runtime = memo.runtime
        assert runtime.signer is not None
        changes = admission.stamp(
            kind=kind, operation=operation,  # type: ignore[arg-type]
            requester=requester(userinfo, runtime), old=old, new=new if new is not None else body,
            settings=config, signer=runtime.signer, now=datetime.datetime.now(datetime.UTC), request=request,
        )  # fmt: skip
        for key, value in changes.items():
            patch.metadata.annotations[key] = value
        if operation == "CREATE":
            with_finalizer(new if new is not None else body, patch)

    def with_finalizer(created: kopf.Body, patch: kopf.Patch) -> None:
        """Our finalizer, put on at admission: kopf would otherwise add it with a patch of its own first and
        start the create handler only on the event that patch causes (issue 12: one write to the API server and
        one event for kopf to process less per new object, when thousands are admitted at once). On CREATE only,
        so that an update never puts back the finalizer the operator removes when a deletion is done; kopf still
        adds it to any object admitted without it (created before this webhook did so)."""
        finalizers = list((created.get("metadata") or {}).get("finalizers") or [])
        if config.finalizer not in finalizers:
            patch.metadata["finalizers"] = [*finalizers, config.finalizer]

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
        runtime.queue.forget(Key(PROJECT_KIND.kind, meta["name"], meta["uid"]))

    # --- GPU bookings ---------------------------------------------------------------------------------

    async def _reconcile_booking(body: kopf.Body, memo: kopf.Memo) -> gpu_reservation.GpuResult:
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        uid = meta["uid"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        # A phase change is due at an instant (start, end): it goes first, like an edit (priority.py).
        async with runtime.slots.take(Priority.EDIT), runtime.locks[uid], observed(GPU_KIND.kind) as outcome:
            current = runtime.ledger.newest(uid, dict(body))
            result = await gpu_reservation.reconcile(
                body=current, ledger=runtime.ledger, settings=runtime.settings, kube_client=runtime.backends.kube,
                scontrol=runtime.scontrol, recorder=recorder, now=now(),
            )  # fmt: skip
            await recorder.flush()
            if result.changed:
                stored = await status_io.write_reservation_status(
                    runtime.backends.kube, meta["namespace"], meta["name"], result.status
                )
                runtime.ledger.remember(stored)
            elif result.booking is not None:
                runtime.ledger.put_booking(result.booking)
            outcome["result"] = "retry" if result.retry else "ok"
        return result

    async def _reconcile_project_of(namespace: str, memo: kopf.Memo) -> None:
        """The booking's start or end changes the project's quota and placement: reconcile the project now
        (in this process, through the project's own reconcile: it is the quota's only writer)."""
        runtime: Runtime = memo.runtime
        project = runtime.ledger.projects.get(namespace)
        if project is None:
            return
        try:
            found = await kube.call(f"get researchproject {project.name}", runtime.backends.kube.get(
                status_io.ResearchProjectResource, project.name))  # fmt: skip
        except BackendError as error:
            logger.warning("cannot reconcile project %s after a booking changed: %s", project.name, error)
            return
        key = Key(PROJECT_KIND.kind, project.name, str(found.metadata.uid))
        try:
            async with runtime.slots.take(Priority.EDIT):
                await _reconcile(key, memo)
        except Retry as retry:  # not converged yet: the queue tries again
            runtime.queue.add(key, Priority.CREATE, delay=retry.delay)

    @kopf.daemon(*RESERVATIONS, registry=registry, id="clock", when=booking_running, cancellation_timeout=5.0)
    async def booking_clock(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Reconcile now, then again exactly at the next phase change (start, end, end of grace), when woken
        (spec, approval, project or capacity changed), or at the resync interval, whichever comes first.
        The next instant is computed from status and clock each time, so a restarted operator keeps time."""
        runtime: Runtime = memo.runtime
        uid = body["metadata"]["uid"]
        retries = 0
        while True:
            wake = runtime.ledger.wakeups[uid]
            wake.clear()
            try:
                result = await _reconcile_booking(body, memo)
                if result.project_affected:
                    await _reconcile_project_of(body["metadata"]["namespace"], memo)
                    result = await _reconcile_booking(body, memo)
            except BackendError as error:
                logger.warning("booking %s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], error)
                result = None
            if result is not None and result.wake_at is None and not result.retry and not booking_running(
                    body.get("spec"), result.status):  # fmt: skip
                return
            delay = float(runtime.settings.intervals.resync_seconds)
            if result is not None and result.wake_at is not None:
                delay = min(delay, max((result.wake_at - now()).total_seconds(), 0.0) + 0.05)
            if result is None or result.retry:
                delay = min(delay, backoff(runtime.settings.intervals, retries))
                retries += 1
            else:
                retries = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)

    @kopf.on.delete(*RESERVATIONS, registry=registry, id="finalize")
    async def delete_booking(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Cancel: the Slurm reservation goes; an active Kubernetes booking's GPUs leave the quota now."""
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        async with runtime.slots.take(Priority.EDIT), runtime.locks[meta["uid"]]:
            outcome = await gpu_reservation.finalize(body=body, ledger=runtime.ledger, settings=runtime.settings,
                                                     scontrol=runtime.scontrol, recorder=recorder)  # fmt: skip
            await recorder.flush()
        if not outcome.done:
            raise kopf.TemporaryError(outcome.message, delay=runtime.settings.intervals.retry_seconds)
        known = runtime.ledger.bookings.get(meta["uid"])
        was_active = known is not None and known.pool == "kubernetes" and known.booked is not None and (
            known.booked.start <= now() < known.booked.end)  # fmt: skip
        runtime.ledger.drop_booking(meta["uid"])
        if was_active:
            await _reconcile_project_of(meta["namespace"], memo)

    @kopf.on.mutate(*RESERVATIONS, registry=registry, id="stamp-booking", operations=["CREATE", "UPDATE"])
    def stamp_booking(operation: str, userinfo: dict[str, Any], old: kopf.Body | None, new: kopf.Body | None,
                      body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:  # fmt: skip
        """A platform admin's create, update or `enclave.io/approve` approves the booking's amounts above its
        project's limits (see admission.py)."""
        runtime: Runtime = memo.runtime
        booking = gpu_bookings.booking_from_body(new if new is not None else body)
        project = runtime.ledger.projects.get(booking.namespace) if booking is not None else None
        request = None
        if booking is not None and project is not None:
            request = gpu_reservation.approval_request(booking, project, runtime.ledger, config.gpu, now())
        mutate(GPU_KIND.kind, operation, userinfo, old, new, body, patch, memo, request)  # type: ignore[arg-type]

    @kopf.on.validate(*RESERVATIONS, registry=registry, id="booking", operations=["CREATE", "UPDATE"])
    async def validate_booking(operation: str, userinfo: dict[str, Any], old: kopf.Body | None,
                               new: kopf.Body | None, body: kopf.Body, memo: kopf.Memo,
                               **_: Any) -> None:  # fmt: skip
        """Who books, when, which family, and whether it fits (see admission.review_gpu_reservation)."""
        runtime: Runtime = memo.runtime
        start = time.perf_counter()
        try:
            admission.review_gpu_reservation(
                operation=operation,  # type: ignore[arg-type]
                requester=requester(userinfo, runtime), old=old, new=new if new is not None else body,
                ledger=runtime.ledger, settings=config, slurm_enabled=runtime.scontrol is not None, now=now(),
                signer=runtime.signer,
            )  # fmt: skip
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=403) from None
        finally:
            metrics.ADMISSION_SECONDS.labels(kind=GPU_KIND.kind).observe(time.perf_counter() - start)

    _register_nodes(registry, config, reconciles)


def _node_busy(status: dict[str, Any] | None, **_: Any) -> bool:
    """A backup or restore drill of the node is running: follow it more often than the resync."""
    status = status or {}
    return bool((status.get("backup") or {}).get("running")) or (status.get("restoreDrill") or {}).get("phase") in (
        "Running", "Waiting")


def _register_nodes(
    registry: kopf.OperatorRegistry, config: OperatorSettings, reconciles: dict[str, Reconcile]
) -> None:
    """FederatedNode: reconcile (create, update, resume, resync, while busy), probes, retirement, admission.

    Every handler of one node holds the node's lock and starts from a fresh read of it: the probe timer and the
    reconcile both write status, and neither may write back what the other has just changed."""

    async def _reconcile(key: Key, memo: kopf.Memo) -> None:
        runtime: Runtime = memo.runtime
        async with runtime.locks[key.uid], observed(NODE_KIND.kind) as outcome:
            fresh = await status_io.read_node(runtime.backends.kube, key.name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp") or fresh["metadata"].get("uid") != key.uid:
                runtime.queue.forget(key)
                return
            recorder = KubeRecorder(runtime.backends.kube, fresh)
            result = await federated_node.reconcile(
                body=fresh, backends=runtime.backends, settings=runtime.settings, profiles=runtime.profiles,
                recorder=recorder, now=datetime.datetime.now(datetime.UTC),
            )  # fmt: skip
            await recorder.flush()
            if result.changed:
                await status_io.write_node_status(runtime.backends.kube, key.name, fresh.get("status") or {},
                                                  result.status)  # fmt: skip
            runtime.queue.reconciled(key)
            outcome["result"] = "retry" if result.retry else "ok"
        if result.retry:  # why is in the status; the queue tries again, doubling the delay
            raise Retry(runtime.settings.intervals.retry_seconds)

    # A resync re-observes every part, re-evaluates compliance (dates, Node objects), starts a backup that is due.
    reconcile_in_queue(registry, NODES, NODE_KIND.kind, _reconcile, reconciles)

    def node_key(body: kopf.Body) -> Key:
        return Key(NODE_KIND.kind, body["metadata"]["name"], body["metadata"]["uid"])

    @kopf.timer(*NODES, registry=registry, id="backups", interval=config.federation.backup_poll_seconds,
                initial_delay=config.federation.backup_poll_seconds, when=_node_busy)  # fmt: skip
    async def follow_backups(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Follow a running backup or drill Job to its report."""
        memo.runtime.queue.add(node_key(body), Priority.CREATE)

    @kopf.timer(*NODES, registry=registry, id="probe", interval=config.federation.probe_seconds)
    async def probe_node(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """22/TCP handshake and a DNS query over UDP to the node's endpoint; writes reachability only. No reconcile
        slot: a probe calls no backend but its own status write, and queueing it behind resyncs would turn "Offline
        within the probe interval" into "Offline when the queue allows"."""
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        probed = await federated_node.run_probes(body=body, settings=runtime.settings,
                                                 now=datetime.datetime.now(datetime.UTC))  # fmt: skip
        if probed is None:
            return
        async with runtime.locks[meta["uid"]]:
            fresh = await status_io.read_node(runtime.backends.kube, meta["name"])
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return
            recorder = KubeRecorder(runtime.backends.kube, fresh)
            patch = federated_node.probe_patch(body=fresh, probed=probed, recorder=recorder)
            await recorder.flush()
            if patch is None:
                return
            await status_io.write_node_status(runtime.backends.kube, meta["name"], fresh.get("status") or {},
                                              {**(fresh.get("status") or {}), **patch})  # fmt: skip
        before = federated_node.probe_facts((fresh.get("status") or {}).get("reachability"))
        if federated_node.probe_facts(patch["reachability"]) != before:
            runtime.queue.add(node_key(body), Priority.CREATE)  # the firewall requirement reads the probes

    @kopf.on.delete(*NODES, registry=registry, id="finalize")
    async def delete_node(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        meta = body["metadata"]
        recorder = KubeRecorder(runtime.backends.kube, body)
        async with runtime.slots.take(Priority.EDIT), runtime.locks[meta["uid"]]:
            outcome = await federated_node.finalize(
                body=body, backends=runtime.backends, settings=runtime.settings, profiles=runtime.profiles,
                recorder=recorder, now=datetime.datetime.now(datetime.UTC),
            )  # fmt: skip
            await recorder.flush()
        if not outcome.done:
            raise kopf.TemporaryError(outcome.message, delay=runtime.settings.intervals.retry_seconds)
        runtime.queue.forget(node_key(body))

    @kopf.on.validate(*NODES, registry=registry, id="node-policy", operations=["CREATE", "UPDATE"])
    async def validate_node(operation: str, old: kopf.Body | None, new: kopf.Body | None, body: kopf.Body,
                            memo: kopf.Memo, **_: Any) -> None:  # fmt: skip
        """Known profile and backup target, integrator access that ends, names that do not collide."""
        runtime: Runtime = memo.runtime
        created = new if new is not None else body
        try:
            admission.review_node(operation=operation, old=old, new=created, settings=config,  # type: ignore[arg-type]
                                  profiles=runtime.profiles, today=today())  # fmt: skip
            if operation == "CREATE":
                meta = created.get("metadata") or {}
                name = str(meta.get("name", ""))
                found = await federated_node.collisions(
                    name, str(meta.get("uid") or "new"), created.get("spec") or {}, runtime.backends,
                    runtime.settings, runtime.profiles, today(),
                )  # fmt: skip
                if found:
                    raise admission.collision_denial(name, found)
        except admission.Denied as denied:
            raise kopf.AdmissionError(str(denied), code=403) from None
