"""The chart's tests' view of Helm: rendering (`helm template`) and the Go-built judges (argocd-lua-health,
kstatus). Building and running Helm is hack/localenv/helm.py's (shared with `make demo CHART=1`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from localenv.helm import Helm, go_tool
from localenv.runtime import CHART

__all__ = ["Helm", "find", "go_tool", "rendered", "run_json_tool", "template"]
KUBE_VERSION = "1.37.2"
"""The local plane's Kubernetes version, for `helm template` (which does not ask a server)."""


def template(helm: Helm, values: dict[str, Any], *extra: str, release: str = "enclave-operator",
             namespace: str = "enclave-system", check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return helm.run("template", release, str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}",
                    "-f", helm.values_file(values), *extra, check=check)  # fmt: skip


def rendered(helm: Helm, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(template(helm, values, *extra).stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def run_json_tool(binary: str, args: list[str], objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feed objects to argocd-lua-health or kstatus; return their per-object results."""
    result = subprocess.run([binary, *args], input=json.dumps(objects), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"{Path(binary).name} failed: {result.stderr.strip()}")
    return list(json.loads(result.stdout))
