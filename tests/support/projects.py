"""Looking at projects the way a user does: kubectl get / wait / events."""

from __future__ import annotations

import threading
import time
from typing import Any

import yaml

from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.wait import wait_for


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_ready(cluster: Cluster, name: str, timeout: float = timeouts.READY) -> dict[str, Any]:
    """Wait with `kubectl wait`, as a user or a pipeline would, then return the object."""
    result = cluster.run("wait", "--for=condition=Ready", f"--timeout={int(timeout)}s", f"researchproject/{name}",
                         check=False)  # fmt: skip
    obj = cluster.get_json("researchproject", name)
    assert result.returncode == 0, f"{name} not Ready: {result.stderr}; status: {(obj or {}).get('status')}"
    assert obj is not None
    return obj


def wait_gone(cluster: Cluster, *args: str, timeout: float = timeouts.DELETE) -> None:
    wait_for(lambda: cluster.get_json(*args) is None, timeout=timeout, what=f"{' '.join(args)} to be gone")


def events_for(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    out = cluster.get_json("events", "-A", "--field-selector", f"involvedObject.name={name}") or {"items": []}
    return [(e["type"], e["reason"], e.get("message", "")) for e in out["items"]]


def settled(cluster: Cluster, name: str) -> dict:
    """The object once its resourceVersion stopped moving (the operator finished its bookkeeping)."""
    seen: list[str] = []

    def stable() -> dict | None:
        obj = cluster.get_json("researchproject", name, "--show-managed-fields")
        assert obj is not None
        seen.append(obj["metadata"]["resourceVersion"])
        return obj if len(seen) >= 3 and len(set(seen[-3:])) == 1 else None

    return wait_for(stable, timeout=timeouts.READY, what=f"{name} to stop changing", interval=0.5)


class ContinuousCreates:
    """Server-side dry-run creates of projects, one after another in a thread, for as long as the `with` block
    runs: admission keeps being asked while something happens (an operator process is killed). `results`
    holds (monotonic time, kubectl's exit code, its stderr) per create."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        self.cluster, self.prefix = cluster, prefix
        self.results: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._create)

    def _create(self) -> None:
        i = 0
        while not self._stop.is_set():
            manifest = yaml.safe_dump(ProjectBuilder(f"{self.prefix}-{i}").obj())
            result = self.cluster.run("create", "--dry-run=server", "-f", "-", input=manifest, check=False)
            self.results.append((time.monotonic(), result.returncode, result.stderr.strip()))
            i += 1

    def __enter__(self) -> ContinuousCreates:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
