"""A real Slurm accounting stack for tests, and direct sacctmgr reads to check what adapters wrote.

Why direct reads: a test must not trust the adapter's own parser to tell it the adapter was right, so
these helpers ask sacctmgr with a different command (`show assoc`, not `show account withassoc`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from enclave_operator.backends.slurm_accounts import SlurmSettings
from localenv.runtime import RunDir
from localenv.slurm import client_env, sacctmgr, start_slurm

ASSOC_FORMAT = "Account,User,ParentName,Fairshare,GrpTRES,GrpSubmitJobs,GrpJobs,QOS"


@dataclasses.dataclass
class SlurmEnv:
    """One running Slurm (munged, MariaDB, slurmdbd, slurmctld) in its own run directory."""

    run: RunDir
    facts: dict[str, Any]

    @classmethod
    def start(cls, run: RunDir) -> SlurmEnv:
        return cls(run, start_slurm(run))

    @property
    def conf(self) -> Path:
        return Path(self.facts["slurm_conf"])

    def settings(self, **overrides: Any) -> SlurmSettings:
        values: dict[str, Any] = {"slurmConf": self.conf, "cluster": self.facts["cluster"], "timeoutSeconds": 5}
        return SlurmSettings.model_validate({**values, **overrides})

    def sacctmgr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sacctmgr(self.conf, *args)

    def assoc_rows(self, account: str) -> list[dict[str, str]]:
        result = self.sacctmgr("-n", "-P", "show", "assoc", "where", f"account={account}", f"format={ASSOC_FORMAT}")
        assert result.returncode == 0, result.stderr
        keys = ASSOC_FORMAT.split(",")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]

    def account_row(self, account: str) -> dict[str, str] | None:
        rows = [r for r in self.assoc_rows(account) if not r["User"]]
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def sacctmgr_assoc_of(self, user: str) -> list[dict[str, str]]:
        """Every association of one user (any account)."""
        result = self.sacctmgr("-n", "-P", "show", "assoc", "where", f"user={user}", f"format={ASSOC_FORMAT}")
        assert result.returncode == 0, result.stderr
        keys = ASSOC_FORMAT.split(",")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]

    def users(self, account: str) -> set[str]:
        return {r["User"] for r in self.assoc_rows(account) if r["User"]}

    def description(self, account: str) -> str | None:
        result = self.sacctmgr("-n", "-P", "show", "account", "where", f"name={account}", "format=Account,Descr")
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stdout.splitlines() if line]
        return lines[0].split("|", 1)[1] if lines else None

    def sbatch(self, account: str) -> subprocess.CompletedProcess[str]:
        """Submit a trivial job as the current user (no slurmd runs: it can only pend)."""
        return subprocess.run(
            ["sbatch", "-A", account, "-p", "gpu", "--wrap", "true"],
            env={**os.environ, **client_env(self.conf)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def cancel_all(self, account: str) -> None:
        subprocess.run(["scancel", "-A", account], env={**os.environ, **client_env(self.conf)}, timeout=30, check=False)

    def dbd_pid(self) -> int:
        return int(self.run.load()["services"]["slurmdbd"]["pid"])

    def pause_dbd(self) -> None:
        """Freeze slurmdbd (SIGSTOP): its port still accepts, nothing answers — a hung server."""
        os.kill(self.dbd_pid(), signal.SIGSTOP)

    def resume_dbd(self) -> None:
        os.kill(self.dbd_pid(), signal.SIGCONT)

    def stop_dbd(self) -> None:
        self.run.stop("slurmdbd")

    def restart(self) -> None:
        """start_slurm again: restarts slurmdbd and slurmctld (same slurm.conf path, fresh ports)."""
        self.facts = start_slurm(self.run)
