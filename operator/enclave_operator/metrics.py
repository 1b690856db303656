"""Prometheus metrics of the operator, served on /metrics by `enclave-operator run --metrics-port`.

Counters and histograms count what this process did. `enclave_objects` and `enclave_conditions` are
gauges of what the process last saw of each object (a collector reads them at scrape time): the
handlers call `OBJECTS.observe` after each reconcile and `OBJECTS.forget` when an object is gone.
The Grafana dashboard and the alerts in the Helm chart use these names (a test scrapes a running
operator and fails when a panel names a metric that is not here).
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enclave_operator import reasons

RECONCILES = Counter("enclave_reconcile_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_ERRORS = Counter("enclave_reconcile_errors_total", "Reconciles that ended in an error", ["kind"])
RECONCILE_SECONDS = Histogram("enclave_reconcile_duration_seconds", "Duration of one reconcile", ["kind"])
BACKEND_WRITES = Counter("enclave_backend_writes_total", "Changes made to backends", ["part", "action"])
BACKEND_ERRORS = Counter("enclave_backend_errors_total", "Failed backend calls", ["part", "action"])
ADMISSION_SECONDS = Histogram("enclave_admission_duration_seconds", "Duration of one admission review", ["kind"])
BACKEND_CALL_SECONDS = Histogram("enclave_backend_call_duration_seconds", "Backend call duration", ["part", "action"])
BACKEND_REQUESTS = Counter(
    "enclave_backend_requests_total",
    "Requests sent to a backend (HTTP requests to S3, FreeIPA commands, sacctmgr runs), by kind",
    ["backend", "kind"],
)
"""kind is read or write; Kubernetes requests are counted by the API server itself (apiserver_request_total)."""

GpuFigures = Mapping[tuple[str, str], tuple[int, int, int]]
"""(pool, family) → (capacity, booked, active) GPUs."""


class GpuCollector(Collector):
    """GPU capacity and bookings per pool and family, computed from the operator's ledger at each scrape."""

    def __init__(self) -> None:
        self.source: Callable[[], GpuFigures] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self.source() if self.source is not None else {}
        families = [
            GaugeMetricFamily("enclave_gpu_capacity", "Bookable GPUs now (usable nodes)", labels=["pool", "family"]),
            GaugeMetricFamily("enclave_gpu_booked", "GPUs of admitted bookings not ended", labels=["pool", "family"]),
            GaugeMetricFamily("enclave_gpu_active", "GPUs of bookings active now", labels=["pool", "family"]),
        ]
        for (pool, family), values in sorted(figures.items()):
            for metric, value in zip(families, values, strict=True):
                metric.add_metric([pool, family], value)
        yield from families


GPU = GpuCollector()
REGISTRY.register(GPU)


class QueueCollector(Collector):
    """The work queue's keys by state (engine/workqueue.py), counted at each scrape: how far behind the operator is."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        metric = GaugeMetricFamily(
            "enclave_work_queue_keys", "Projects and federated nodes in the work queue: due (waiting for a reconcile "
            "slot), later (next resync or retry), running", labels=["state"])  # fmt: skip
        for state, count in sorted((self.source() if self.source is not None else {}).items()):
            metric.add_metric([state], count)
        yield metric


QUEUE = QueueCollector()
REGISTRY.register(QUEUE)

# FederatedNodes (one series per node; removed when the node is retired).
NODE_CONDITION = Gauge("enclave_federated_node_condition", "1 when the node's condition is True (Compliant, "
                       "LegallyCleared, Reachable, BackupCurrent)", ["node", "condition"])  # fmt: skip
NODE_LAST_SEEN = Gauge("enclave_federated_node_last_seen_timestamp_seconds", "When both probes last passed", ["node"])
NODE_PROBE_SECONDS = Gauge("enclave_federated_node_probe_duration_seconds", "Duration of the last probe",
                           ["node", "probe"])  # fmt: skip
NODE_LAST_BACKUP = Gauge("enclave_federated_node_last_backup_timestamp_seconds", "When the last successful backup "
                         "finished", ["node"])  # fmt: skip
NODE_BACKUP_INTERVAL = Gauge("enclave_federated_node_backup_interval_seconds", "The node's backup interval "
                             "(spec.backup.intervalDays); overdue when time() - last backup exceeds it", ["node"])

INGEST_ITEMS = Counter("enclave_ingest_items_total", "Items DataIngest workers finished, by result", ["result"])
INGEST_BYTES = Counter("enclave_ingest_bytes_total", "Bytes DataIngest workers wrote into project buckets")

STATES = ("Ready", "Progressing", "Stalled", "Degraded", "AwaitingApproval", "Cordoned", "Finished", "Deleting")
"""What `enclave_objects{state}` counts; every state is exported (0 when none), so a panel never shows no data."""
DEGRADED_WHEN: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (reasons.COMPLIANT, "False", ()),
    (reasons.LEGALLY_CLEARED, "False", ()),
    (reasons.REACHABLE, "False", (reasons.REASON_OFFLINE,)),
    (reasons.BACKUP_CURRENT, "False", (reasons.REASON_BACKUP_OVERDUE, reasons.REASON_BACKUP_FAILED)),
)
"""(condition, status, reasons (any when empty)) that need attention although the object is not Stalled (a
FederatedNode out of compliance, offline or without a current backup); the Argo CD health check
(charts/enclave-operator/files/argocd/health.lua) says Degraded for the same."""


def _degraded(conditions: Mapping[str, Mapping[str, Any]]) -> bool:
    for type_, status, why in DEGRADED_WHEN:
        found = conditions.get(type_) or {}
        if found.get("status") == status and (not why or found.get("reason") in why):
            return True
    return False


def state_of(status: Mapping[str, Any] | None, *, deleting: bool = False) -> str:
    """One word for an object's state, from its conditions (the same order as the Argo CD health check)."""
    if deleting:
        return "Deleting"
    conditions = {c.get("type"): c for c in (status or {}).get("conditions") or []}
    ready = conditions.get(reasons.READY) or {}
    if (conditions.get(reasons.STALLED) or {}).get("status") == "True":
        return "Stalled"
    if _degraded(conditions):
        return "Degraded"
    if ready.get("status") == "False" and ready.get("reason") == "AwaitingApproval":
        return "AwaitingApproval"
    if (conditions.get(reasons.CORDONED) or {}).get("status") == "True":
        return "Cordoned"
    if ready.get("status") == "True":
        return "Ready"
    if ready.get("status") == "False" and (conditions.get(reasons.RECONCILING) or {}).get("status") == "False":
        return "Finished"  # nothing left to do: an Expired or Cancelled GpuReservation
    return "Progressing"


class ObjectStates(Collector):
    """The last seen state and conditions of every object this process reconciles, as gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], tuple[str, tuple[tuple[str, str, str], ...]]] = {}
        self._kinds: set[str] = set()

    def observe(self, kind: str, uid: str, status: Mapping[str, Any] | None, *, deleting: bool = False) -> None:
        conds = tuple(
            (str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason", "")))
            for c in (status or {}).get("conditions") or []
        )
        with self._lock:
            self._kinds.add(kind)
            self._objects[(kind, uid)] = (state_of(status, deleting=deleting), conds)

    def forget(self, kind: str, uid: str) -> None:
        with self._lock:
            self._objects.pop((kind, uid), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            items = list(self._objects.items())
            kinds = sorted(self._kinds)
        objects = GaugeMetricFamily("enclave_objects", "Objects by kind and state", labels=["kind", "state"])
        states = Tally((kind, state) for (kind, _), (state, _) in items)
        for kind in kinds:
            for state in STATES:
                objects.add_metric([kind, state], states[(kind, state)])
        yield objects
        conditions = GaugeMetricFamily(
            "enclave_conditions", "Objects by condition type, status and reason", labels=["kind", "type", "status",
                                                                                           "reason"])  # fmt: skip
        tally = Tally((kind, *cond) for (kind, _), (_, conds) in items for cond in conds)
        for labels, count in sorted(tally.items()):
            conditions.add_metric(list(labels), count)
        yield conditions


OBJECTS = ObjectStates()
REGISTRY.register(OBJECTS)


def count_ingest_progress(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
    """Add what the workers finished since the last status write (the status is the durable counter)."""
    before, after = before or {}, after or {}
    for result in ("done", "quarantined", "failed"):
        delta = int(after.get(result, 0) or 0) - int(before.get(result, 0) or 0)
        if delta > 0:
            INGEST_ITEMS.labels(result=result).inc(delta)
    written = int(after.get("bytes", 0) or 0) - int(before.get("bytes", 0) or 0)
    if written > 0:
        INGEST_BYTES.inc(written)
