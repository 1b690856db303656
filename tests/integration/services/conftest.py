"""Each backend started from scratch in its own temporary run directory and stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localenv.runtime import RunDir


@pytest.fixture
def services_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    """A fresh RunDir whose every service is stopped (by PID) when the test ends."""
    run = RunDir(tmp_path_factory.mktemp("services-run"))
    try:
        yield run
    finally:
        run.stop_all()
