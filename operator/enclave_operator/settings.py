"""Operator configuration: one model per concern, loaded once at start-up and validated with errors
that name the field. Non-secret settings come from a YAML file (a ConfigMap in the Helm chart);
credentials come from environment variables (a Secret in the Helm chart) whose names are settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic.alias_generators import to_camel

CONFIG_ENV = "ENCLAVE_CONFIG"
"""Environment variable naming the configuration file when --config is not given."""


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad field."""


class _Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class NamingSettings(_Settings):
    """How derived names are made from the project name; `{project}` is replaced by it."""

    namespace: str = pydantic.Field("{project}", description="Namespace name template.")
    bucket: str = pydantic.Field("{project}", description="S3 bucket name template.")

    @pydantic.field_validator("namespace", "bucket")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{project}" not in value:
            raise ValueError("must contain {project}, or every project would share one name")
        try:
            value.format(project="x")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"only the placeholder {{project}} is allowed ({error})") from None
        return value


class S3Settings(_Settings):
    """The S3 store (MinIO) holding project buckets."""

    endpoint: str = pydantic.Field(description="host:port of the S3 API, without scheme.")
    secure: bool = pydantic.Field(True, description="Use HTTPS. Only loopback test servers should say false.")
    ca_file: Path | None = pydantic.Field(None, description="CA bundle for the S3 endpoint's certificate.")
    region: str = pydantic.Field("", description="Region passed to the S3 client; MinIO ignores it.")
    access_key_env: str = pydantic.Field("ENCLAVE_S3_ACCESS_KEY", description="Env var holding the admin access key.")
    secret_key_env: str = pydantic.Field("ENCLAVE_S3_SECRET_KEY", description="Env var holding the admin secret key.")
    timeout_seconds: float = pydantic.Field(
        10.0, gt=0, le=300, description="Bound of one S3 call, seconds: a hung MinIO must not stall reconciles."
    )

    @pydantic.field_validator("endpoint")
    @classmethod
    def _no_scheme(cls, value: str) -> str:
        if "://" in value or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d+", value):
            raise ValueError("must be host:port without a scheme, e.g. minio.enclave.svc:9000")
        return value

    def credentials(self) -> tuple[str, pydantic.SecretStr]:
        """The admin credentials from the environment; an error names the missing variable."""
        access = os.environ.get(self.access_key_env, "")
        secret = os.environ.get(self.secret_key_env, "")
        missing = [name for name, value in ((self.access_key_env, access), (self.secret_key_env, secret)) if not value]
        if missing:
            raise ConfigError(f"s3: environment variable(s) {', '.join(missing)} must hold the S3 admin credentials")
        return access, pydantic.SecretStr(secret)


class IntervalSettings(_Settings):
    """How often things happen."""

    resync_seconds: float = pydantic.Field(
        300.0, ge=5, description="Re-observe every project this often to repair drift, seconds."
    )
    retry_seconds: float = pydantic.Field(
        10.0, ge=1, description="Delay before retrying a part that is not ready yet, seconds."
    )


class OperatorSettings(_Settings):
    """All settings of the operator."""

    finalizer: str = pydantic.Field("enclave.io/finalizer", description="Finalizer put on managed objects.")
    s3: S3Settings = pydantic.Field(description="The S3 store.")
    naming: NamingSettings = pydantic.Field(default_factory=NamingSettings, description="Naming templates.")
    intervals: IntervalSettings = pydantic.Field(default_factory=IntervalSettings, description="Intervals.")


def _format_errors(error: pydantic.ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def parse(data: Any, source: str = "configuration") -> OperatorSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of settings")
    try:
        return OperatorSettings.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{_format_errors(error)}") from None


def load(path: Path | str | None = None) -> OperatorSettings:
    """Load and validate the configuration file (or $ENCLAVE_CONFIG)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration {path} is not valid YAML: {error}") from None
    settings = parse(data, str(path))
    settings.s3.credentials()  # fail at start-up, not at the first reconcile
    return settings
