"""The operator's command line: configuration errors stop it at start-up, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave_operator import cli


def test_check_config_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("s3: {endpoint: 'https://minio:9000'}\nwebhook: {enabled: false}\n")
    assert cli.main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "s3.endpoint" in err and "webhook.enabled" in err and "cannot be disabled" in err


def test_finding_14_2_the_operator_does_not_start_without_its_webhook_and_signing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCLAVE_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("ENCLAVE_S3_SECRET_KEY", "b")
    monkeypatch.delenv("ENCLAVE_SIGNING_KEY", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"s3: {{endpoint: 'minio:9000'}}\n"
                      f"webhook: {{certFile: {tmp_path}/t.crt, keyFile: {tmp_path}/t.key}}\n")  # fmt: skip
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert "ENCLAVE_SIGNING_KEY" in capsys.readouterr().err
    monkeypatch.setenv("ENCLAVE_SIGNING_KEY", "short")
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
    monkeypatch.setenv("ENCLAVE_SIGNING_KEY", "s" * 32)
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert "webhook.certFile" in capsys.readouterr().err
    (tmp_path / "t.crt").write_text("x")
    (tmp_path / "t.key").write_text("x")
    assert cli.main(["check-config", "--config", str(config)]) == 0


def test_webhook_config_prints_both_configurations_for_every_handler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    (tmp_path / "ca.crt").write_bytes(b"CA")
    assert cli.main(["webhook-config", "--service", "enclave-system/enclave-operator:443", "--ca-file",
                     str(tmp_path / "ca.crt")]) == 0  # fmt: skip
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    hooks = {h["name"]: h for d in docs for h in d["webhooks"]}
    assert set(hooks) == {"stamp-project.webhooks.enclave.io", "stamp-ingest.webhooks.enclave.io",
                          "policy.webhooks.enclave.io", "approval.webhooks.enclave.io",
                          "stamp-booking.webhooks.enclave.io", "booking.webhooks.enclave.io",
                          "node-policy.webhooks.enclave.io"}  # fmt: skip
    assert hooks["booking.webhooks.enclave.io"]["rules"][0]["resources"] == ["gpureservations"]
    assert all(h["failurePolicy"] == "Fail" and h["clientConfig"]["caBundle"] == "Q0E=" for h in hooks.values())
    assert hooks["policy.webhooks.enclave.io"]["clientConfig"]["service"]["path"] == "/policy"
    assert not any("matchConditions" in h for h in hooks.values())  # no --operator-user: every request is reviewed


def test_webhook_config_leaves_out_the_operators_own_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    (tmp_path / "ca.crt").write_bytes(b"CA")
    assert cli.main(["webhook-config", "--url", "https://127.0.0.1:9443", "--ca-file", str(tmp_path / "ca.crt"),
                     "--operator-user", "system:serviceaccount:enclave-system:enclave-operator"]) == 0  # fmt: skip
    hooks = [h for d in yaml.safe_load_all(capsys.readouterr().out) for h in d["webhooks"]]
    assert len(hooks) == 7
    assert all(h["matchConditions"] == [{
        "name": "not-the-operator",
        "expression": 'request.userInfo.username != "system:serviceaccount:enclave-system:enclave-operator"',
    }] for h in hooks)  # fmt: skip


def test_the_match_condition_quotes_the_username_as_a_cel_string() -> None:
    from enclave_operator.handlers import not_the_operator

    assert not_the_operator('a"b\\c')["expression"] == 'request.userInfo.username != "a\\"b\\\\c"'


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
