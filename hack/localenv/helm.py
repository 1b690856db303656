"""The Helm chart on the local plane, installed as docs/install.md says: the namespace, the credentials
Secret, a CA bundle ConfigMap, `helm install`, the ingest namespace's source credentials. Used by the
tests (tests/e2e/test_helm_chart.py) and by `make demo CHART=1`. Standard library only (values are JSON,
which is YAML).

Helm itself is built from Go modules (hack/helm, cached by hack/go-tools.sh like the control plane).
The operator pods are run by podrunner (the stand-in kubelet), whose pods share the node's network: the
values say so (`hostNetwork: true`: the pods listen on their node's address, at most one per node, and a
rollout stops an old pod before its successor starts), and the ports are free ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from localenv.runtime import CHART, DEFAULT_BIN_DIR, REPO_ROOT, free_port

RELEASE = "enclave-operator"
NAMESPACE = "enclave-system"
INGEST_NAMESPACE = "enclave-ingest"
CREDENTIALS_SECRET = "enclave-backends"
CA_CONFIG_MAP = "backend-ca"
IMAGE = "registry.hospital.example/enclave-operator"
"""Ignored by podrunner (the host's filesystem is the image), as a real registry path would be by kind."""


def go_tool(name: str, module: str | None = None) -> str:
    """Build (if needed) the command `name` of hack/<module>/ and return its path."""
    build = REPO_ROOT / "hack" / (module or name) / "build.sh"
    result = subprocess.run(["bash", str(build)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{build} failed:\n{result.stdout}\n{result.stderr}")
    return str(DEFAULT_BIN_DIR / name)


class Helm:
    """`helm` against one cluster, with its own Helm home so nothing of the user's is touched."""

    def __init__(self, binary: str, kubeconfig: Path | None = None, home: Path | None = None) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig
        self.home = home or Path(tempfile.mkdtemp(prefix="helm-home-"))

    def env(self) -> dict[str, str]:
        env = {**os.environ, "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_DATA_HOME": str(self.home / "data")}  # fmt: skip
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def values_file(self, values: dict[str, Any]) -> str:
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.home, delete=False)
        with handle:
            json.dump(values, handle)
        return handle.name


def local_values(minio: dict[str, Any], freeipa: dict[str, Any], orthanc: dict[str, Any], *,
                 steward_groups: list[str], resync_seconds: float, poll_seconds: float,
                 replicas: int = 1) -> dict[str, Any]:  # fmt: skip
    """A platform team's values, pointed at the local backends (FreeIPA's CA from a ConfigMap). One replica
    unless asked: two need two nodes (tests/e2e/test_chart_high_availability.py)."""
    return {
        "replicaCount": replicas,
        "hostNetwork": True,
        "image": {"repository": IMAGE},
        "credentials": {"existingSecret": CREDENTIALS_SECRET},
        "healthPort": free_port(),
        "metrics": {"port": free_port()},
        "webhook": {"port": free_port()},
        "config": {
            "s3": {"endpoint": minio["endpoint"], "secure": False, "timeoutSeconds": 5},
            "intervals": {"resyncSeconds": resync_seconds, "retrySeconds": 2},
            "identity": {"provider": "freeipa", "freeipa": {"url": freeipa["url"], "caFile": "/etc/enclave-ca/ipa.crt",
                                                              "username": freeipa["admin_user"]}},
            "ingest": {"namespace": INGEST_NAMESPACE, "pollSeconds": poll_seconds, "stewardGroups": steward_groups,
                       "sources": [{"name": "research-pacs", "kind": "dicomweb", "url": orthanc["dicomweb_root"],
                                    "credentialsSecret": "research-pacs-credentials"}]},
            # FederatedNode backups into the same MinIO (a bucket of its own), keys from the credentials Secret.
            "federation": {"backupTargets": [{"name": "offsite", "endpoint": minio["endpoint"], "secure": False,
                                              "timeoutSeconds": 5}]},
        },  # fmt: skip
        "extraVolumes": [{"name": "backend-ca", "configMap": {"name": CA_CONFIG_MAP}}],
        "extraVolumeMounts": [{"name": "backend-ca", "mountPath": "/etc/enclave-ca", "readOnly": True}],
    }


def prepare(kubectl: Any, minio: dict[str, Any], freeipa: dict[str, Any]) -> None:
    """What the install guide asks for before `helm install`. `kubectl(*args)` runs kubectl on the plane."""
    kubectl("create", "namespace", NAMESPACE)
    kubectl("create", "secret", "generic", CREDENTIALS_SECRET, "-n", NAMESPACE,
            f"--from-literal=ENCLAVE_S3_ACCESS_KEY={minio['access_key']}",
            f"--from-literal=ENCLAVE_S3_SECRET_KEY={minio['secret_key']}",
            f"--from-literal=ENCLAVE_BACKUP_S3_ACCESS_KEY={minio['access_key']}",
            f"--from-literal=ENCLAVE_BACKUP_S3_SECRET_KEY={minio['secret_key']}",
            f"--from-literal=ENCLAVE_IPA_PASSWORD={freeipa['password']}")  # fmt: skip
    kubectl("create", "configmap", CA_CONFIG_MAP, "-n", NAMESPACE, f"--from-file=ipa.crt={freeipa['ca_cert']}")


def install(kubectl: Any, helm: Helm, values: dict[str, Any], *, upgrade: bool = False) -> None:
    """`helm install` (or upgrade) and wait until the operator pod of this revision is available."""
    verb = ["upgrade", "--install"] if upgrade else ["install"]
    helm.run(*verb, RELEASE, str(CHART), "-n", NAMESPACE, "-f", helm.values_file(values), "--wait",
             "--timeout=180s", timeout=240)  # fmt: skip
    # With maxUnavailable 1 Helm's --wait is content with no pod; a rollout is done when the new pod is available.
    kubectl("rollout", "status", f"deployment/{RELEASE}", "-n", NAMESPACE, "--timeout=180s")


def source_credentials(kubectl: Any, orthanc: dict[str, Any]) -> None:
    """The PACS credentials, in the ingest namespace the chart created (the platform team's part)."""
    kubectl("create", "secret", "generic", "research-pacs-credentials", "-n", INGEST_NAMESPACE,
            f"--from-literal=username={orthanc['username']}",
            f"--from-literal=password={orthanc['password']}")
