"""Named timeouts and intervals of the tests (seconds), so a slow machine is tuned in one place."""

READY = 60.0
"""From `kubectl apply` to Ready with a running operator (measured ~1-3 s on 2 cores)."""
DELETE = 60.0
"""From `kubectl delete` to the object being gone."""
OPERATOR_START = 60.0
"""From process start to the liveness endpoint answering."""
POLL = 0.25
"""Polling interval of `wait_for`."""
BENCH_SMOKE = 600.0
"""The benchmark's smoke run (N=20) from start to end, servers included (about a minute on an idle machine)."""
PROBE_INTERVAL = 2.0
"""federation.probeSeconds of the e2e operator: how often a FederatedNode's endpoint is probed."""
OFFLINE = PROBE_INTERVAL + 1.0 + 8.0
"""From stopping a node's sshd to Offline: one probe interval, one probe timeout (1 s), and slack for the
status write and kubectl on a loaded machine."""
BACKUP = 180.0
"""From a backup (or restore drill) Job's creation to its outcome in status (restic on 2 cores: ~5-20 s)."""
