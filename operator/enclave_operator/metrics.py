"""Prometheus metrics of the operator, served on /metrics by `enclave-operator run --metrics-port`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("enclave_reconcile_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_ERRORS = Counter("enclave_reconcile_errors_total", "Reconciles that ended in an error", ["kind"])
RECONCILE_SECONDS = Histogram("enclave_reconcile_duration_seconds", "Duration of one reconcile", ["kind"])
BACKEND_WRITES = Counter("enclave_backend_writes_total", "Changes made to backends", ["part", "action"])
BACKEND_ERRORS = Counter("enclave_backend_errors_total", "Failed backend calls", ["part", "action"])
BACKEND_CALL_SECONDS = Histogram("enclave_backend_call_duration_seconds", "Backend call duration", ["part", "action"])
BACKEND_REQUESTS = Counter(
    "enclave_backend_requests_total",
    "Requests sent to a backend (HTTP requests to S3, FreeIPA commands, sacctmgr runs), by kind",
    ["backend", "kind"],
)
"""kind is read or write; Kubernetes requests are counted by the API server itself (apiserver_request_total)."""

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
