"""GPU bookings as researchers see them: kubectl as a user, phases, the Slurm reservation, the quota."""

from __future__ import annotations

import datetime
import os
import subprocess
from typing import Any

import yaml

from localenv.slurm import client_env
from support import timeouts
from support.cluster import Cluster
from support.slurm import SlurmEnv
from support.wait import wait_for

RESEARCHERS = "researchers"


def utc_in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=seconds)


def iso(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_user(cluster: Cluster, user: str, *args: str, manifest: dict | None = None) -> tuple[int, str]:
    """kubectl impersonating a researcher, as the API server would authenticate them."""
    result = cluster.run(*args, f"--as={user}", f"--as-group={RESEARCHERS}",
                         input=yaml.safe_dump(manifest) if manifest else None, check=False)  # fmt: skip
    return result.returncode, result.stderr + result.stdout


def booking(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    return cluster.get_json("gpureservation", "-n", namespace, name)


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    return ((booking(cluster, namespace, name) or {}).get("status") or {}).get("phase")


def wait_phase(cluster: Cluster, namespace: str, name: str, want: str, timeout: float) -> datetime.datetime:
    """Wait for a phase; returns when it was seen (UTC)."""
    wait_for(lambda: phase(cluster, namespace, name) == want, timeout=timeout, interval=0.2,
             what=f"gpureservation {namespace}/{name} to be {want}")  # fmt: skip
    return datetime.datetime.now(datetime.UTC)


def until(instant: datetime.datetime) -> float:
    """A timeout for a phase change due at `instant`: the time left until it, and then some (the test asserts
    the change was seen within timeouts.PHASE_ON_TIME; waiting longer only makes the failure say more)."""
    left = (instant - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(left, 0.0) + 3 * timeouts.PHASE_ON_TIME


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def gpu_quota(cluster: Cluster, namespace: str) -> str | None:
    quota = cluster.get_json("resourcequota", "enclave-quota", "-n", namespace)
    return ((quota or {}).get("spec") or {}).get("hard", {}).get("requests.nvidia.com/gpu")


def slurm_reservation(slurm: SlurmEnv, name: str) -> dict[str, str]:
    """The reservation as scontrol shows it ({} when there is none), read without the operator's parser."""
    out = subprocess.run(["scontrol", "show", "reservation", name, "-o"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, **client_env(slurm.conf), "TZ": "UTC"})  # fmt: skip
    if out.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)
