"""The repository names no path of a development machine: a fresh clone must work anywhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
_ROOTS = "|".join(("work", "Users", "srv/dev"))  # spelled apart so this file does not match itself
MACHINE_PATH = re.compile(rf"(?<![\w.])/({_ROOTS})/[\w.-]+|shared{'/'}reference/")
"""Absolute paths of development machines (ours and common ones) and the planning notes' reference folder."""


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [REPO / name for name in out.decode().split("\0") if name]
    return [f for f in files if f.is_file() and f.suffix not in {".sum", ".dcm", ".png"}]


def test_no_tracked_file_names_a_development_machine_path() -> None:
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)
