"""Which components make up the local environment, how to build them and how to start them together."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

from localenv.freeipa_server import start_freeipa
from localenv.kwok import kwok_service
from localenv.minio import start_minio
from localenv.orthanc import start_orthanc
from localenv.plane import start_plane
from localenv.runtime import REPO_ROOT, RunDir, ServiceError
from localenv.slapd import start_slapd
from localenv.slurm import start_slurm

COMPONENTS = ("plane", "kwok", "minio", "freeipa", "slapd", "slurm", "orthanc")
_BUILDERS = {
    "plane": ["bash", str(REPO_ROOT / "hack" / "localplane" / "build.sh")],
    "kwok": ["bash", str(REPO_ROOT / "hack" / "kwok" / "build.sh")],
    "minio": ["bash", str(REPO_ROOT / "hack" / "minio" / "build.sh")],
    "restic": ["bash", str(REPO_ROOT / "hack" / "restic" / "build.sh")],
    "debian": ["bash", str(REPO_ROOT / "hack" / "install-debian-packages.sh")],
}
_NEEDS_DEBIAN = {"slapd", "slurm", "orthanc", "nodehost"}


def build(components: list[str] | tuple[str, ...]) -> None:
    """Run the cached Go builds (and the Debian installs) the given components need; `restic` (the backup
    client of FederatedNode backup Jobs) and `nodehost` (FederatedNode test hosts) are tools, not services."""
    steps = [c for c in components if c in _BUILDERS]
    if _NEEDS_DEBIAN & set(components):
        steps.insert(0, "debian")
    for step in steps:
        if subprocess.run(_BUILDERS[step]).returncode != 0:
            raise ServiceError(f"building {step} failed: {' '.join(_BUILDERS[step])}")


def up(
    run: RunDir, *, components: list[str] | tuple[str, ...] = COMPONENTS, controllers: bool = False
) -> dict[str, Any]:
    """Start the requested components; already-running ones are reused."""
    starters = {
        "plane": lambda: start_plane(run, controller_manager=controllers, scheduler=controllers),
        "kwok": lambda: run.start(kwok_service(run, run.path / "kubeconfig")),
        "minio": lambda: start_minio(run),
        "freeipa": lambda: start_freeipa(run),
        "slapd": lambda: start_slapd(run),
        "slurm": lambda: start_slurm(run),
        "orthanc": lambda: start_orthanc(run),
    }
    return {name: starters[name]() for name in COMPONENTS if name in components}


def exports(run: RunDir) -> str:
    """Shell lines that point kubectl and the operator at this environment."""
    lines = [f"export KUBECONFIG={shlex.quote(str(run.path / 'kubeconfig'))}"]
    lines.append(f"export PATH={shlex.quote(str(REPO_ROOT / '.cache' / 'bin'))}:$PATH")
    return "\n".join(lines)
