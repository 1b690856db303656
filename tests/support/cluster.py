"""The cluster the integration and end-to-end tests run against, chosen by ENCLAVE_CLUSTER:

- `local` (default): etcd + kube-apiserver + kube-controller-manager built from Go modules and started
  on loopback by hack/localenv (reused when ENCLAVE_REUSE=1 and already running).
- `kubeconfig`: whatever $KUBECONFIG points at (a platform team's test cluster).
- `kind`: a kind cluster made by pytest-kind, for machines that have Docker (not run on ours).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR


@dataclasses.dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl; on failure with check=True raise with its stderr."""
        result = subprocess.run(
            [self.kubectl, *args], input=input, capture_output=True, text=True, env=self.env(), timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply(self, manifest: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", *extra, input=manifest)

    def get_json(self, *args: str) -> dict[str, Any] | None:
        result = self.run("get", *args, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)}: {result.stderr.strip()}")
        return dict(json.loads(result.stdout))


def kubectl_binary() -> str:
    local = DEFAULT_BIN_DIR / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: run `make tools` (hack/localplane/build.sh) first")
    return found


def kind_cluster(name: str = "enclave-tests") -> Cluster:  # pragma: no cover - needs Docker
    from pytest_kind import KindCluster  # type: ignore[import-not-found]

    kind = KindCluster(name)
    kind.create()
    return Cluster(Path(kind.kubeconfig_path), kubectl_binary())
