"""What can be proven of the container image without a container engine: the wheel builds, installs with
its pinned dependencies into a clean virtualenv (as the Containerfile's second stage does), carries its
data, and every console script starts; the Containerfile is multi-stage, pinned, non-root, wheel-only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from enclave_operator.api import crdgen
from localenv.runtime import CHART, REPO_ROOT

CONTAINERFILE = REPO_ROOT / "Containerfile"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO_ROOT)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("enclave_operator-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing but the wheel and its pinned dependencies."""
    env = tmp_path_factory.mktemp("clean-venv")
    venv.create(env, with_pip=True)
    result = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
                             str(REPO_ROOT / "constraints.txt"), str(wheel)],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return env


def test_wheel_holds_the_package_and_its_data_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "enclave_operator/py.typed" in names
    assert any(n.startswith("enclave_operator/deid/data/") and n.endswith(".json") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "hack/", "charts/", "operator/"))]


WORKER_CONTRACTS = {"enclave-ingest-worker": "INGEST_SPEC", "enclave-backup-worker": "BACKUP_SPEC"}
"""Job workers: started without their environment contract they refuse, naming it."""


@pytest.mark.parametrize("script", sorted(PYPROJECT["project"]["scripts"]))
def test_every_console_script_starts_in_a_clean_virtualenv(clean_env: Path, script: str) -> None:
    """Each script runs from the installed wheel: its usage, or its own configuration error — never an ImportError."""
    argv = [str(clean_env / "bin" / script)]
    contract = WORKER_CONTRACTS.get(script)
    if contract is None:  # workers take no arguments; they read their spec from the environment
        argv.append("--help")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "ModuleNotFoundError" not in output, output
    if contract is not None:
        assert result.returncode == 2 and contract in output, output
    else:
        assert result.returncode == 0 and "usage:" in output, output


def test_installed_operator_prints_the_same_crds(clean_env: Path) -> None:
    result = subprocess.run([str(clean_env / "bin" / "enclave-operator"), "crds"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "---\n".join(crdgen.rendered_files().values())


def test_containerfile_is_multi_stage_pinned_non_root_and_wheel_only() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    base = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+-slim-bookworm$", base.group(1)), "the base image is pinned to a version"
    final = text[text.rindex("\nFROM"):]
    assert "COPY --from=build /wheels" in final and "COPY operator" not in final, "only wheels reach the image"
    assert "--no-index" in final, "the image installs the built wheels, nothing else"
    user = re.search(r"^USER \$\{UID\}:\$\{UID\}$", final, re.M)
    uid = re.search(r"^ARG UID=(\d+)$", final, re.M)
    assert user and uid and int(uid.group(1)) != 0, "runs as an unprivileged user"
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid.group(1)}" in deployment, "the chart runs the image's user"
