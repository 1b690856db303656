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
