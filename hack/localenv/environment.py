"""Which components make up the local environment, how to build them and how to start them together."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

from localenv.minio import start_minio
from localenv.plane import start_plane
from localenv.runtime import REPO_ROOT, RunDir, ServiceError

COMPONENTS = ("plane", "minio")
_BUILDERS = {
    "plane": REPO_ROOT / "hack" / "localplane" / "build.sh",
    "minio": REPO_ROOT / "hack" / "minio" / "build.sh",
}


def build(components: list[str]) -> None:
    """Run the cached Go builds of the given components."""
    for component in components:
        script = _BUILDERS.get(component)
        if script is not None:
            result = subprocess.run(["bash", str(script)])
            if result.returncode != 0:
                raise ServiceError(f"building {component} failed: bash {script}")


def up(
    run: RunDir, *, components: list[str] | tuple[str, ...] = COMPONENTS, controllers: bool = False
) -> dict[str, Any]:
    """Start the requested components; already-running ones are reused."""
    facts: dict[str, Any] = {}
    if "plane" in components:
        facts["plane"] = start_plane(run, controller_manager=controllers, scheduler=controllers)
    if "minio" in components:
        facts["minio"] = start_minio(run)
    return facts


def exports(run: RunDir) -> str:
    """Shell lines that point kubectl and the operator at this environment."""
    lines = [f"export KUBECONFIG={shlex.quote(str(run.path / 'kubeconfig'))}"]
    lines.append(f"export PATH={shlex.quote(str(REPO_ROOT / '.cache' / 'bin'))}:$PATH")
    return "\n".join(lines)
