"""Looking at projects the way a user does: kubectl get / wait / events."""

from __future__ import annotations

from typing import Any

from support import timeouts
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
