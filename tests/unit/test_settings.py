from __future__ import annotations

from pathlib import Path

import pytest

from enclave_operator import settings


@pytest.mark.parametrize(
    ("data", "names", "why"),
    [
        ({}, "s3", "the S3 store is required"),
        ({"s3": {"endpoint": "http://minio:9000"}}, "s3.endpoint", "a scheme is not allowed"),
        ({"s3": {"endpoint": "minio:9000"}, "naming": {"bucket": "shared"}}, "naming.bucket", "no {project}"),
        ({"s3": {"endpoint": "minio:9000"}, "intervals": {"resyncSeconds": 1}}, "intervals.resyncSeconds", "too often"),
        ({"s3": {"endpoint": "minio:9000"}, "surprise": 1}, "surprise", "unknown setting"),
        ({"s3": {"endpoint": "minio:9000"}, "throttle": {"reconciles": 0}}, "throttle.reconciles", "at least one"),
        ({"s3": {"endpoint": "minio:9000"}, "throttle": {"s3PerSecond": -1}}, "throttle.s3PerSecond", "a rate"),
        ({"s3": {"endpoint": "minio:9000"}, "intervals": {"resyncJitter": 2}}, "intervals.resyncJitter",
         "a fraction of the interval"),
        ({"s3": {"endpoint": "minio:9000", "maxConcurrentCalls": 0}}, "s3.maxConcurrentCalls", "at least one"),
    ],
)
def test_invalid_configuration_names_the_field(data: dict, names: str, why: str) -> None:
    with pytest.raises(settings.ConfigError) as error:
        settings.parse(data)
    assert names in str(error.value), why


def test_missing_credentials_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVE_S3_ACCESS_KEY", raising=False)
    monkeypatch.setenv("ENCLAVE_S3_SECRET_KEY", "s3cr3t-value")
    path = tmp_path / "c.yaml"
    path.write_text("s3: {endpoint: 'minio:9000'}\n")
    with pytest.raises(settings.ConfigError) as error:
        settings.load(path)
    assert "ENCLAVE_S3_ACCESS_KEY" in str(error.value)
    assert "s3cr3t-value" not in str(error.value)


def test_valid_configuration_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("ENCLAVE_S3_SECRET_KEY", "b")
    monkeypatch.setenv("ENCLAVE_SIGNING_KEY", "k" * 32)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("pem")
    path = tmp_path / "c.yaml"
    path.write_text("s3: {endpoint: 'minio.enclave.svc:9000'}\nnaming: {bucket: 'enclave-{project}'}\n"
                    f"webhook: {{certFile: {tmp_path}/tls.crt, keyFile: {tmp_path}/tls.key}}\n")  # fmt: skip
    loaded = settings.load(path)
    assert loaded.naming.bucket.format(project="x") == "enclave-x"
    assert loaded.finalizer == "enclave.io/finalizer"
    access, secret = loaded.s3.credentials()
    assert (access, secret.get_secret_value()) == ("a", "b")
    assert "b" not in repr(secret)


def test_scale_defaults_bound_the_work() -> None:
    loaded = settings.parse({"s3": {"endpoint": "minio:9000"}, "throttle": {"kubernetesPerSecond": 50}})
    assert loaded.throttle.reconciles == 16 and loaded.throttle.kubernetes_per_second == 50
    assert loaded.throttle.reserved_for_edits == 2, "an edit starts at once during a rollout"
    assert loaded.throttle.s3_per_second == 0, "no rate limit unless configured"
    assert 0 < loaded.intervals.resync_jitter < 1 and loaded.s3.max_concurrent_calls == 16


@pytest.mark.parametrize(
    ("gpu", "names", "why"),
    [
        ({"families": [{"name": "a100", "slurmGresType": "a100"}]}, "slurmPartition or slurmFeature",
         "Slurm reserves whole nodes: it must know which"),
        ({"families": [{"name": "a100"}, {"name": "a100"}]}, "family names must be unique", "duplicate family"),
        ({"families": [{"name": "A100"}]}, "gpu.families.0.name", "family names are DNS labels"),
        ({"slurmReservation": "{name}"}, "gpu.slurmReservation", "two namespaces would share a reservation"),
        ({"slurmFlags": ["magnetic;rm"]}, "gpu.slurmFlags", "flags are Slurm words"),
        ({"limits": {"maxHours": 0}}, "gpu.limits.maxHours", "a window has a length"),
    ],
)  # fmt: skip
def test_invalid_gpu_settings_name_the_field(gpu: dict, names: str, why: str) -> None:
    with pytest.raises(settings.ConfigError) as error:
        settings.parse({"s3": {"endpoint": "minio:9000"}, "gpu": gpu})
    assert names in str(error.value), why


def test_gpu_limits_per_project() -> None:
    loaded = settings.parse({"s3": {"endpoint": "minio:9000"}, "gpu": {
        "families": [{"name": "a100", "nodeLabelValue": "NVIDIA-A100-SXM4-80GB", "slurmGresType": "a100",
                      "slurmPartition": "GPUampere"}],
        "projectLimits": {"onco-flow": {"maxGpus": 32}}}})  # fmt: skip
    assert loaded.gpu.limits_for("onco-flow").max_gpus == 32 and loaded.gpu.limits_for("other").max_gpus == 8
    assert loaded.gpu.family("a100") is not None and loaded.gpu.family("h100") is None
