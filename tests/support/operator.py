"""The operator as a real process (`enclave-operator run`), as a platform team would run it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from localenv.runtime import free_port, http_ok
from support import timeouts
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
    """Start, SIGKILL and stop `enclave-operator run`; its log goes to a file for the test report."""

    def __init__(self, kubeconfig: Path, config: Path, minio: dict[str, Any], log: Path) -> None:
        self.kubeconfig, self.config, self.minio, self.log = kubeconfig, config, minio, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.liveness_port = 0
        self.extra_args: list[str] = []
        self.env: dict[str, str] = {}
        """Extra environment (backend passwords), as a Secret would provide it."""

    def start(self) -> OperatorProcess:
        self.liveness_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "ENCLAVE_S3_ACCESS_KEY": self.minio["access_key"],
            "ENCLAVE_S3_SECRET_KEY": self.minio["secret_key"],
            **self.env,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "enclave_operator", "run", "--config", str(self.config), "--standalone",
                 "--bind", "127.0.0.1", "--liveness-port", str(self.liveness_port),
                 "--metrics-port", str(self.metrics_port), "--verbose", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        wait_for(
            lambda: self._alive() and http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz"),
            timeout=timeouts.OPERATOR_START,
            what="the operator's liveness endpoint",
        )
        return self

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


@contextlib.contextmanager
def webhook_down(operator: OperatorProcess) -> Iterator[None]:
    """Objects created inside are admitted without the webhook, as during an outage or by an older version.

    Stopping the operator (SIGTERM) makes kopf empty its webhook configuration; starting it again restores it.
    """
    operator.stop()
    try:
        yield
    finally:
        operator.start()
