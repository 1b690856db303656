"""`make demo` → `make down` → `make demo` (issue 13): the second run resumes the first one's run
directory (etcd, MinIO, Slurm, Orthanc data, the example objects already there) and converges,
including the example DataIngest that already succeeded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localenv.runtime import REPO_ROOT

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT_S = 900
"""A warm demo takes well under a minute here; the bound covers a loaded 2-core machine."""


def _run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
                          cwd=REPO_ROOT)  # fmt: skip


def test_demo_up_down_up_resumes_and_converges(tmp_path: Path) -> None:
    env = {**os.environ, "ENCLAVE_RUN_DIR": str(tmp_path / "run")}
    demo, localenv = str(REPO_ROOT / "hack" / "demo.py"), str(REPO_ROOT / "hack" / "localenv")
    try:
        first = _run(env, demo, "up")
        assert first.returncode == 0, f"first demo failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
        assert "resumed" not in first.stdout
        down = _run(env, localenv, "down")
        assert down.returncode == 0 and "enclave-operator" in down.stdout, down.stderr
        second = _run(env, demo, "up")
        assert second.returncode == 0, f"second demo failed:\n{second.stdout[-3000:]}\n{second.stderr[-3000:]}"
        assert "already succeeded in this run directory (resumed)" in second.stdout
        assert "miccai-deadline" in first.stdout and "Scheduled" in first.stdout, "the example GPU booking"
        assert "example GpuReservation was booked in this run directory already (resumed" in second.stdout
        assert "make clean && make demo" in second.stdout
    finally:
        _run(env, localenv, "down")
