"""Uniform start / await-readiness / stop of a local server process.

A `Service` knows its command line, its environment and how to tell it is ready. `RunDir` owns one
directory per environment (logs, data, certificates) and `state.json`, which records every started
service's PID, ports and connection facts so that another process (`make down`, a reused test session)
can find and stop it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUN_DIR = REPO_ROOT / ".run"
DEFAULT_BIN_DIR = REPO_ROOT / ".cache" / "bin"
CHART = REPO_ROOT / "charts" / "enclave-operator"
"""The Helm chart; its files/rbac/ holds the shipped ClusterRoles, also applied with kubectl."""

READY_TIMEOUT_S = 120.0
"""How long a service may take to become ready; the apiserver's first start with CRD bootstrapping takes ~10 s."""
STOP_GRACE_S = 10.0
"""How long a service gets after SIGTERM before SIGKILL."""


class ServiceError(RuntimeError):
    """A service failed to start or to become ready; the message names the log to read."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, below the kernel's ephemeral range.

    Outgoing connections take their local port from the ephemeral range (net.ipv4.ip_local_port_range), which is
    also where `bind(0)` picks: such a port can be held by a client connection by the time the server meant to
    listen on it starts (seen: the bench's webhook port, chosen before 150 s of floor traffic, "address already in
    use"). A port below that range is never taken that way."""
    low = _ephemeral_low()
    for _ in range(200):
        port = PORTS_FROM + secrets.randbelow(max(low - PORTS_FROM, 1))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the range below is full: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORTS_FROM = 20000
"""free_port's lowest port: above the ports of common services."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def http_ok(url: str, *, headers: dict[str, str] | None = None, insecure: bool = True, timeout: float = 2.0) -> bool:
    """True when GET url answers 200."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=ctx) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclasses.dataclass
class Service:
    """One server process: how to start it and how to know it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: Path | None = None
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Connection facts recorded in state.json (ports, URLs, credentials of throwaway test servers)."""


class RunDir:
    """The directory that holds one local environment: logs/, data, and state.json."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or os.environ.get("ENCLAVE_RUN_DIR") or DEFAULT_RUN_DIR).resolve()
        self.logs = self.path / "logs"
        self.state_file = self.path / "state.json"

    def load(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"services": {}}
        return dict(json.loads(self.state_file.read_text()))

    def save(self, state: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))  # insertion order = start order, for stop_all
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    def facts(self, name: str) -> dict[str, Any]:
        """Connection facts of a running service, or an error saying how to start it."""
        entry = self.load()["services"].get(name)
        if not entry or not pid_alive(int(entry["pid"])):
            raise ServiceError(f"service {name!r} is not running in {self.path}; run `make up`")
        return dict(entry["facts"])

    def running(self, name: str) -> bool:
        entry = self.load()["services"].get(name)
        return bool(entry) and pid_alive(int(entry["pid"])) and bool(entry.get("ready"))

    def start(self, service: Service, *, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Start a service unless it already runs; wait until it is ready; record it in state.json."""
        state = self.load()
        existing = state["services"].get(service.name)
        if existing and pid_alive(int(existing["pid"])):
            return dict(existing["facts"])
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{service.name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv built from our own paths
                service.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **service.env},
                cwd=service.cwd,
                start_new_session=True,  # survives the starting shell; stopped by PID
            )
        state["services"][service.name] = {
            "pid": proc.pid,
            "log": str(log_path),
            "facts": service.facts,
            "ready": False,
        }
        self.save(state)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"{service.name} exited with {proc.returncode}; see {log_path}:\n{tail(log_path)}")
            if service.ready():
                state = self.load()
                state["services"][service.name]["ready"] = True
                self.save(state)
                return service.facts
            time.sleep(0.2)
        self.stop(service.name)
        raise ServiceError(f"{service.name} not ready after {timeout:.0f}s; see {log_path}:\n{tail(log_path)}")

    def stop(self, name: str) -> None:
        """Stop one service by its recorded PID (SIGTERM, then SIGKILL after a grace period)."""
        state = self.load()
        entry = state["services"].pop(name, None)
        self.save(state)
        if entry:
            stop_pid(int(entry["pid"]))

    def stop_all(self) -> list[str]:
        """Stop every recorded service, last started first."""
        names = list(self.load()["services"])
        for name in reversed(names):
            self.stop(name)
        return names


def interrupt_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout) ends this process as Ctrl-C does, so the `finally` that stops the servers it
    started runs; by default it would die at once and leave them running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def stop_pid(pid: int, grace: float = STOP_GRACE_S) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap(pid)
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
