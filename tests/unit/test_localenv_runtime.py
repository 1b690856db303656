"""hack/localenv/runtime.py: what the benches and the demo rely on to leave no servers behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

HACK = Path(__file__).resolve().parents[2] / "hack"

SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    sys.path.insert(0, {str(HACK)!r})
    from localenv.runtime import interrupt_on_sigterm
    {{install}}
    try:
        print("started", flush=True)
        time.sleep(30)
    finally:
        print("servers stopped", flush=True)
    """
)


def _terminated(install: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(install=install)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return proc.returncode, out


def test_sigterm_runs_the_finally_that_stops_the_servers() -> None:
    returncode, out = _terminated("interrupt_on_sigterm()")
    assert out == "servers stopped\n" and returncode != 0


def test_without_it_sigterm_skips_the_finally() -> None:
    """Why the benches call it: a killed bench left its API server, etcd, MinIO and operator running."""
    returncode, out = _terminated("")
    assert out == "" and returncode == -signal.SIGTERM


def test_free_ports_are_below_the_ephemeral_range_and_free() -> None:
    """Client connections take their ports from the ephemeral range; a server port chosen there was taken by one
    before the server started (the bench's webhook port)."""
    import socket

    from localenv.runtime import PORTS_FROM, _ephemeral_low, free_port

    ports = {free_port() for _ in range(50)}
    assert all(PORTS_FROM <= port < _ephemeral_low() for port in ports), ports
    assert len(ports) > 40, "spread over the range"
    for port in list(ports)[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
