"""The operator's command line: configuration errors stop it at start-up, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave_operator import cli


def test_check_config_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("s3: {endpoint: 'https://minio:9000'}\nwebhook: {enabled: true}\n")
    assert cli.main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "s3.endpoint" in err and "webhook" in err and "certFile and keyFile" in err


def test_run_refuses_to_start_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENCLAVE_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("ENCLAVE_S3_SECRET_KEY", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("s3: {endpoint: 'minio:9000'}\n")
    assert cli.main(["run", "--config", str(config), "--liveness-port", "0", "--metrics-port", "0"]) == 2
    assert "ENCLAVE_S3_ACCESS_KEY" in capsys.readouterr().err


def test_crds_prints_the_generated_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crds"]) == 0
    assert "name: researchprojects.enclave.io" in capsys.readouterr().out


def test_retries_back_off_exponentially_up_to_the_resync_interval() -> None:
    from enclave_operator.handlers import backoff
    from enclave_operator.settings import IntervalSettings

    intervals = IntervalSettings(retry_seconds=2, resync_seconds=60)
    assert [backoff(intervals, n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]
