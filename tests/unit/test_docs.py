"""The docs site builds with --strict (no broken link, anchor or snippet, every page in the navigation), its
generated reference pages match the code, and the troubleshooting table covers every condition reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import docgen
from enclave_operator import reasons
from enclave_operator.reconcilers import approval, data_ingest
from localenv.runtime import REPO_ROOT

pytestmark = pytest.mark.unit


def test_generated_reference_pages_are_current() -> None:
    stale = [str(p.relative_to(REPO_ROOT)) for p, content in docgen.rendered().items()
             if not p.exists() or p.read_text() != content]  # fmt: skip
    assert not stale, f"stale generated docs {stale}; run `make generate` and commit"


def test_api_reference_lists_every_spec_field() -> None:
    from enclave_operator.api import crdgen

    text = (REPO_ROOT / "docs" / "reference" / "api.md").read_text()
    for model, _ in crdgen.KINDS:
        for name in crdgen.openapi_schema(model)["properties"]["spec"]["properties"]:
            assert f"`spec.{name}`" in text


def test_troubleshooting_covers_every_condition_and_reason() -> None:
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("## Troubleshooting by condition reason"):]
    words = {v for k, v in vars(reasons).items() if k.isupper() and not k.startswith("EVENT_")}
    source = Path(approval.__file__).read_text()  # the reasons of its decisions (not its __all__ or numbers)
    words |= set(re.findall(r'(?:ApprovalDecision\((?:True|False), |reason = |else )"([A-Z][A-Za-z]+)"', source))
    words |= set(re.findall(r'_(?:waiting|final)\(current, generation, "\w+", "([A-Z][A-Za-z]+)"',
                            Path(data_ingest.__file__).read_text()))  # fmt: skip
    missing = sorted(w for w in words if f"`{w}`" not in table)
    assert not missing, f"docs/operations.md does not explain {missing}"


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
    gitops = (tmp_path / "site" / "gitops" / "index.html").read_text()
    assert "Waiting for the operator to observe generation" in gitops, "the chart's own Lua script, included"
