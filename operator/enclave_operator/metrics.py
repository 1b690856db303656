"""Prometheus metrics of the operator, served on /metrics by `enclave-operator run --metrics-port`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
