"""The worker's environment contract with the controller, parsed and validated.

Every error is a :class:`UsageError` whose message names the environment variable or the
``INGEST_SPEC`` field at fault -- never its value (values can be secrets or identifiers).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from enclave_operator.deid.config import ConfigError, DeidConfig, parse_config
from enclave_operator.deid.keys import MIN_KEY_BYTES
from enclave_operator.deid.profile import OPTION_NAMES

DEFAULT_RETRIES = 3
MAX_SHARDS = 10_000
PROFILES = ("basic",)


class UsageError(ValueError):
    """Bad or missing environment / spec (exit code 2)."""


@dataclass(frozen=True)
class DicomWebSpec:
    url: str
    studies: tuple[str, ...] | None
    query: dict[str, str]
    kind: str = "dicomweb"


@dataclass(frozen=True)
class S3SourceSpec:
    endpoint: str
    secure: bool
    bucket: str
    prefix: str
    format: str  # dicom | fhir
    region: str | None = None
    kind: str = "s3"


@dataclass(frozen=True)
class DestinationSpec:
    endpoint: str
    secure: bool
    bucket: str
    prefix: str
    region: str


@dataclass(frozen=True)
class WorkerSpec:
    ingest: str
    source: DicomWebSpec | S3SourceSpec
    profile: str
    options: tuple[str, ...] | None
    config: DeidConfig
    destination: DestinationSpec
    shards: int
    retries: int
    index: int
    key: bytes = field(repr=False)
    source_username: str | None = field(default=None, repr=False)
    source_password: str | None = field(default=None, repr=False)
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)


def _req(obj: Mapping[str, Any], name: str, where: str, typ: type | tuple[type, ...] = str) -> Any:
    if name not in obj:
        raise UsageError(f"INGEST_SPEC: {where}{name} is required")
    value = obj[name]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        tn = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise UsageError(f"INGEST_SPEC: {where}{name} must be of type {tn}")
    if isinstance(value, str) and not value.strip():
        raise UsageError(f"INGEST_SPEC: {where}{name} must not be empty")
    return value


def _opt_bool(obj: Mapping[str, Any], name: str, where: str, default: bool) -> bool:
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise UsageError(f"INGEST_SPEC: {where}{name} must be a boolean")
    return value


def _endpoint(value: str, where: str) -> str:
    """``host:port`` (an http(s):// prefix is tolerated and stripped); no path, no credentials."""
    v = value.strip()
    if "://" in v:
        parts = urlsplit(v)
        if parts.username or parts.password or parts.path not in ("", "/"):
            raise UsageError(f"INGEST_SPEC: {where}endpoint must be host[:port] without path or credentials")
        v = parts.netloc
    if not v or "/" in v or "@" in v:
        raise UsageError(f"INGEST_SPEC: {where}endpoint must be host[:port]")
    return v


def _prefix(value: str, where: str) -> str:
    p = value.lstrip("/")
    if p and not p.endswith("/"):
        p += "/"
    if ".." in p.split("/"):
        raise UsageError(f"INGEST_SPEC: {where}prefix must not contain '..'")
    return p


def _source(obj: Any) -> DicomWebSpec | S3SourceSpec:
    if not isinstance(obj, dict):
        raise UsageError("INGEST_SPEC: source must be an object")
    kind = _req(obj, "kind", "source.")
    if kind == "dicomweb":
        url = _req(obj, "url", "source.").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError("INGEST_SPEC: source.url must be an http(s) URL")
        if parts.username or parts.password:
            raise UsageError("INGEST_SPEC: source.url must not hold credentials (use SOURCE_USERNAME/SOURCE_PASSWORD)")
        studies = obj.get("studies")
        if studies is not None:
            if not isinstance(studies, list) or not all(isinstance(s, str) and s.strip() for s in studies):
                raise UsageError("INGEST_SPEC: source.studies must be a list of non-empty strings")
            studies = tuple(s.strip() for s in studies)
        query = obj.get("query") or {}
        if not isinstance(query, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str | int) and not isinstance(v, bool) for k, v in query.items()
        ):
            raise UsageError("INGEST_SPEC: source.query must map QIDO-RS parameter names to strings")
        unknown = set(obj) - {"kind", "url", "studies", "query"}
        if unknown:
            raise UsageError(f"INGEST_SPEC: source.{sorted(unknown)[0]} is not a known field")
        return DicomWebSpec(url, studies, {k: str(v) for k, v in query.items()})
    if kind == "s3":
        fmt = obj.get("format", "dicom")
        if fmt not in ("dicom", "fhir"):
            raise UsageError("INGEST_SPEC: source.format must be 'dicom' or 'fhir'")
        unknown = set(obj) - {"kind", "endpoint", "secure", "bucket", "prefix", "format", "region"}
        if unknown:
            raise UsageError(f"INGEST_SPEC: source.{sorted(unknown)[0]} is not a known field")
        return S3SourceSpec(
            endpoint=_endpoint(_req(obj, "endpoint", "source."), "source."),
            secure=_opt_bool(obj, "secure", "source.", True),
            bucket=_req(obj, "bucket", "source."),
            prefix=_prefix(obj.get("prefix", "") if isinstance(obj.get("prefix", ""), str) else "", "source."),
            format=fmt,
            region=obj.get("region") if isinstance(obj.get("region"), str) else None,
        )
    raise UsageError("INGEST_SPEC: source.kind must be 'dicomweb' or 's3'")


def _deid(obj: Any) -> tuple[str, tuple[str, ...] | None, DeidConfig]:
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise UsageError("INGEST_SPEC: deidentification must be an object")
    profile = obj.get("profile", "basic")
    if profile not in PROFILES:
        raise UsageError(f"INGEST_SPEC: deidentification.profile must be one of {list(PROFILES)}")
    options = obj.get("options")
    cfg: dict[str, Any] = {}
    if options is not None:
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise UsageError("INGEST_SPEC: deidentification.options must be a list of option names")
        for i, name in enumerate(options):
            if name not in OPTION_NAMES:
                raise UsageError(f"INGEST_SPEC: deidentification.options[{i}] is not a known option")
        # the list is the complete set of enabled options (so the default date option can be turned off)
        cfg = {"dicom": {"options": {n: (n in options) for n in OPTION_NAMES}}}
        options = tuple(sorted(set(options)))
    pixels = obj.get("pixels")
    if pixels is not None:
        if not isinstance(pixels, dict) or set(pixels) - {"trustedSopClasses"}:
            raise UsageError("INGEST_SPEC: deidentification.pixels may only hold trustedSopClasses")
        cfg.setdefault("dicom", {})["pixels"] = {"trustedSopClasses": pixels.get("trustedSopClasses") or []}
    unknown = set(obj) - {"profile", "options", "pixels"}
    if unknown:
        raise UsageError(f"INGEST_SPEC: deidentification.{sorted(unknown)[0]} is not a known field")
    try:
        config = parse_config(cfg)
    except ConfigError as exc:
        raise UsageError(f"INGEST_SPEC: deidentification: {exc}") from None
    return profile, options, config


def _destination(obj: Any) -> DestinationSpec:
    if not isinstance(obj, dict):
        raise UsageError("INGEST_SPEC: destination must be an object")
    prefix = obj.get("prefix", "")
    if not isinstance(prefix, str) or not prefix.strip("/"):
        raise UsageError("INGEST_SPEC: destination.prefix must be a non-empty string")
    region = obj.get("region", "us-east-1")
    if not isinstance(region, str) or not region:
        raise UsageError("INGEST_SPEC: destination.region must be a string")
    return DestinationSpec(
        endpoint=_endpoint(_req(obj, "endpoint", "destination."), "destination."),
        secure=_opt_bool(obj, "secure", "destination.", True),
        bucket=_req(obj, "bucket", "destination."),
        prefix=_prefix(prefix, "destination."),
        region=region,
    )


def _env(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None or not value.strip():
        raise UsageError(f"{name} is not set")
    return value.strip()


def parse_key(value: str) -> bytes:
    """DEID_KEY: a hex string; used like ``enclave-deid --key-file`` (the text's bytes, stripped)."""
    v = value.strip()
    if len(v) < MIN_KEY_BYTES:
        raise UsageError(f"DEID_KEY must hold at least {MIN_KEY_BYTES} hex digits")
    if any(c not in string.hexdigits for c in v):
        raise UsageError("DEID_KEY must be a hex string")
    return v.encode("ascii")


def load(env: Mapping[str, str] | None = None) -> WorkerSpec:
    """Read and validate the whole contract (raises UsageError naming the variable/field)."""
    env = os.environ if env is None else env
    raw = _env(env, "INGEST_SPEC")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise UsageError("INGEST_SPEC is not valid JSON") from None
    if not isinstance(doc, dict):
        raise UsageError("INGEST_SPEC must be a JSON object")
    ingest = _req(doc, "ingest", "")
    if ingest.count("/") != 1:
        raise UsageError("INGEST_SPEC: ingest must be '<namespace>/<name>'")
    source = _source(doc.get("source"))
    profile, options, config = _deid(doc.get("deidentification"))
    destination = _destination(doc.get("destination"))
    shards = doc.get("shards", 1)
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
        raise UsageError(f"INGEST_SPEC: shards must be an integer in 1..{MAX_SHARDS}")
    retries = doc.get("retries", DEFAULT_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
        raise UsageError("INGEST_SPEC: retries must be an integer in 0..20")
    idx_text = _env(env, "JOB_COMPLETION_INDEX")
    if not idx_text.isdigit() or not 0 <= int(idx_text) < shards:
        raise UsageError("JOB_COMPLETION_INDEX must be an integer in 0..shards-1")
    key = parse_key(_env(env, "DEID_KEY"))
    access_key = _env(env, "AWS_ACCESS_KEY_ID")
    secret_key = _env(env, "AWS_SECRET_ACCESS_KEY")
    user = env.get("SOURCE_USERNAME") or None
    password = env.get("SOURCE_PASSWORD") or None
    if (user is None) != (password is None):
        raise UsageError("SOURCE_USERNAME and SOURCE_PASSWORD must be set together")
    return WorkerSpec(
        ingest=ingest,
        source=source,
        profile=profile,
        options=options,
        config=config,
        destination=destination,
        shards=shards,
        retries=retries,
        index=int(idx_text),
        key=key,
        source_username=user,
        source_password=password,
        access_key=access_key,
        secret_key=secret_key,
    )
