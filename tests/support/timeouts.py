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
BOOKING_DECIDED = 30.0
"""From `kubectl apply` of a GpuReservation to its phase (Scheduled, Pending, Rejected, Cancelled): the decision
waits out the booking's creation second, then one reconcile (measured ~1-2 s)."""
BOOKING_FOLLOWS = 30.0
"""After a booking's decision or phase change, what follows from it (the Slurm reservation removed, a GPU pod
running or evicted after the grace period, CapacityAtRisk after a node drained or came back): one or two
reconciles, or one Slurm capacity poll (gpu.capacityPollSeconds)."""
PHASE_ON_TIME = 5.0
"""A GpuReservation's phase change is seen within this long after its start or end (measured ~0.3-1.5 s)."""
QUOTA_FOLLOWS = 20.0
"""After a booking's phase change, the project's quota follows within this long: the project's whole reconcile
(every backend part) runs first; seconds on a loaded shared machine."""
PROBE_INTERVAL = 2.0
"""federation.probeSeconds of the e2e operator: how often a FederatedNode's endpoint is probed."""
PROBE_TIMEOUT = 1.0
"""federation.probeTimeoutSeconds of the e2e operator (also the longest SSH banner wait of a probe round)."""
OFFLINE_PROBE = PROBE_INTERVAL + PROBE_TIMEOUT + 2.0
"""From stopping a node's sshd to the probe round that records Offline (its status.reachability.lastProbe): the
probe interval, the round before it (at most one probe timeout), and 2 s for the timer loop of a loaded machine."""
OFFLINE = OFFLINE_PROBE + 20.0
"""From stopping a node's sshd to kubectl seeing Offline: the probe round, then the status write and kubectl's
reads on a machine whose load reaches 10-20 on 2 cores."""
BACKUP = 180.0
"""From a backup (or restore drill) Job's creation to its outcome in status (restic on 2 cores: ~5-20 s)."""
