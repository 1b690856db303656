"""Shared fixtures for the de-identification unit tests (no servers, tmp_path only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave_operator.deid.config import DeidConfig, parse_config
from enclave_operator.deid.keys import Keys
from support.deid_helpers import KEY


@pytest.fixture
def key() -> bytes:
    return KEY


@pytest.fixture
def keys() -> Keys:
    return Keys(KEY)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "project.key"
    p.write_bytes(KEY + b"\n")
    return p


@pytest.fixture
def default_config() -> DeidConfig:
    return parse_config({})
