"""Issue 8, finding 8: one operator process down must not stop the platform. Two processes serve the webhooks
behind one address (the loopback balancer standing in for a Service); one of them reconciles (kopf peering,
oldest first). The active one is SIGKILLed while creates go on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess, operator_process
from support.projects import ContinuousCreates, wait_gone, wait_ready
from support.wait import wait_for

PEERING_LIFETIME_S = 10  # as configured by the session's operator_config
KEEPALIVE = "Keep-alive in"
RESUMED = "Resuming operations"
"""kopf starts every process paused and logs this when peering lets it reconcile."""


def test_finding_8_8_creates_keep_working_while_one_operator_process_is_killed(
    crds: Cluster, operator: OperatorProcess, operator_dir: Path, operator_config: Path, minio: dict[str, Any],
    operator_secrets: dict[str, str], webhook_ports: tuple[int, int], tmp_path: Path, project_name: str,
) -> None:  # fmt: skip
    standby = operator_process(crds, operator_dir, operator_config, minio, operator_secrets,
                               tmp_path / "operator-b.log", pod_id="operator-b",
                               webhook_port=webhook_ports[1])  # fmt: skip
    standby.start()
    try:
        wait_for(lambda: standby.log_text().count(KEEPALIVE) >= 2, timeout=30, what="the second process to peer")
        assert RESUMED not in standby.log_text(), "the younger process must wait while the older one runs"

        with ContinuousCreates(crds, project_name) as creates:
            time.sleep(2)
            killed_at = time.monotonic()
            operator.kill()  # the active process, as by an OOM kill or a lost node
            time.sleep(5)
        results = creates.results
        before = [r for r in results if r[0] < killed_at]
        after = [r for r in results if r[0] > killed_at + 1]
        assert before and all(code == 0 for _, code, _ in before), before
        assert len(after) >= 3, f"too few creates after the kill: {after}"
        failed_after = [r for r in after if r[1] != 0]
        assert not failed_after, f"creates failed after one process was killed: {failed_after}"
        in_flight = [r for r in results if r[1] != 0]
        assert len(in_flight) <= 1, f"only a call in flight on the killed process may fail: {in_flight}"

        # The standby reconciles once the killed process's peering record expires.
        crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
        wait_ready(crds, project_name, timeout=PEERING_LIFETIME_S + timeouts.READY)
        assert RESUMED in standby.log_text()
        crds.run("delete", "researchproject", project_name, f"--timeout={int(timeouts.DELETE)}s")
        wait_gone(crds, "researchproject", project_name)
    finally:
        mark = len(operator.log_text())
        operator.start()  # restarted in place (same pod id): younger than the standby, so it may wait
        standby.stop()  # a graceful exit removes its peering record: the session's process resumes at once
    wait_for(lambda: RESUMED in operator.log_text()[mark:], timeout=60, what="the session's operator to take over")
