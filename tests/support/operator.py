"""The operator as a real process (`enclave-operator run`), as a platform team would run it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from localenv.runtime import free_port, http_ok
from localenv.webhooks import install_webhooks, listening, remove_webhooks, webhook_settings
from support import timeouts
from support.cluster import Cluster
from support.wait import Fatal, wait_for


def write_config(path: Path, minio: dict[str, Any], **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "s3": {"endpoint": minio["endpoint"], "secure": False, "timeoutSeconds": 5},
        "intervals": {"resyncSeconds": 5, "retrySeconds": 2},
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


class OperatorProcess:
    """Start, SIGKILL and stop `enclave-operator run`; its log goes to a file for the test report.

    Like a pod: `pod_id` (kopf's peering identity, POD_ID) survives restarts of the process, so a restarted
    process replaces its own peering record; several processes with their own `webhook_port` form an HA set.
    """

    def __init__(self, kubeconfig: Path, config: Path, minio: dict[str, Any], log: Path, *,
                 pod_id: str = "operator-a", webhook_port: int = 0, standalone: bool = False) -> None:  # fmt: skip
        self.kubeconfig, self.config, self.minio, self.log = kubeconfig, config, minio, log
        self.pod_id, self.webhook_port, self.standalone = pod_id, webhook_port, standalone
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.liveness_port = 0
        self.extra_args: list[str] = []
        self.wait_until_live = True
        """start() returns once the liveness endpoint answers; False: at once (a chaos test's restarts)."""
        self.env: dict[str, str] = {}
        """Extra environment (backend passwords, the signing key), as a Secret would provide it."""

    def cli(self) -> list[str]:
        """The operator's command line (for its other subcommands, e.g. gpu-calendar)."""
        return [sys.executable, "-m", "enclave_operator"]

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "ENCLAVE_S3_ACCESS_KEY": self.minio["access_key"],
            "ENCLAVE_S3_SECRET_KEY": self.minio["secret_key"],
            "POD_ID": self.pod_id,
            **self.env,
        }

    def start(self) -> OperatorProcess:
        self.liveness_port, self.metrics_port = free_port(), free_port()
        env = self.cli_env()
        flags = ["--standalone"] if self.standalone else []
        flags += ["--webhook-port", str(self.webhook_port)] if self.webhook_port else []
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "enclave_operator", "run", "--config", str(self.config), *flags,
                 "--bind", "127.0.0.1", "--liveness-port", str(self.liveness_port),
                 "--metrics-port", str(self.metrics_port), "--verbose", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        if not self.wait_until_live:
            return self
        wait_for(
            lambda: self._alive() and http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz"),
            timeout=timeouts.OPERATOR_START,
            what="the operator's liveness endpoint",
        )
        if self.webhook_port:  # kopf answers /healthz before its webhook server listens: a create right away failed
            wait_for(lambda: self._alive() and listening(self.webhook_port), timeout=timeouts.OPERATOR_START,
                     what="the operator's webhook server")  # fmt: skip
        return self

    def healthy(self) -> bool:
        """Running and answering on its liveness endpoint."""
        return bool(self.proc and self.proc.poll() is None
                    and http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz"))  # fmt: skip

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise Fatal(f"operator exited; log:\n{self.log_text()[-3000:]}")
        return True

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer bookkeeping, exactly like an OOM kill or node loss."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def backend_writes(self) -> float:
        """Sum of enclave_backend_writes_total over every part and action."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("enclave_backend_writes_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@dataclasses.dataclass(frozen=True)
class Webhooks:
    """The webhook configurations of a test session, as the deployment installs them (hack/localenv/webhooks.py)."""

    kubeconfig: Path
    url: str
    ca_file: Path
    name: str
    operator_user: str
    """The username the session's operator processes run as (their requests skip the webhooks)."""

    def install(self) -> None:
        install_webhooks(self.kubeconfig, self.url, self.ca_file, self.name, self.operator_user)

    def remove(self) -> None:
        remove_webhooks(self.kubeconfig, self.name)


@contextlib.contextmanager
def webhook_down(webhooks: Webhooks) -> Iterator[None]:
    """Objects created inside are admitted without the webhooks, as by an older version or while an admin had
    removed the configurations."""
    webhooks.remove()
    try:
        yield
    finally:
        webhooks.install()


def operator_process(crds: Cluster, operator_dir: Path, config: Path, minio: dict[str, Any], secrets: Mapping[str, str],
                     log: Path, *, pod_id: str, webhook_port: int) -> OperatorProcess:  # fmt: skip
    """One operator process with its own identity on the plane, like a pod of the operator's Deployment;
    `secrets` is the environment the pod gets from Secrets (conftest `operator_secrets`)."""
    kubeconfig = Path(os.environ.get("ENCLAVE_OPERATOR_KUBECONFIG") or crds.kubeconfig.with_name("operator.kubeconfig"))
    process = OperatorProcess(kubeconfig, config, minio, log, pod_id=pod_id, webhook_port=webhook_port)
    _, shared = webhook_settings(operator_dir, webhook_port)
    process.env.update({**secrets, **shared})
    return process
