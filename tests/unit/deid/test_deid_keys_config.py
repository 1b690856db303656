"""Keyed derivations and config validation."""

from __future__ import annotations

import re

import pytest

from enclave_operator.deid.config import ConfigError, parse_config
from enclave_operator.deid.keys import KeyError_, Keys

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.3",
        "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234567890",
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
    ],
)
def test_uid_shape(keys: Keys, uid: str) -> None:
    out = keys.uid(uid)
    assert re.fullmatch(r"2\.25\.(0|[1-9]\d*)", out) and len(out) <= 64
    assert keys.uid(uid + " ") == out, "padding does not change the mapping"
    assert Keys(b"x" * 32).uid(uid) != out, "depends on the key"


def test_labels_separate_domains(keys: Keys) -> None:
    assert keys.hash_id("12345") != keys.hash_id("12345", "fhir-id")
    assert keys.patient_id(" P1 ") == keys.patient_id("P1")


def test_fingerprint_is_stable_and_not_the_key(keys: Keys, key: bytes) -> None:
    fp = keys.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", fp) and fp == Keys(key).fingerprint()
    assert fp not in key.hex()


def test_short_key_rejected() -> None:
    with pytest.raises(KeyError_):
        Keys(b"short")


def test_config_defaults_are_conservative() -> None:
    cfg = parse_config(None)
    assert cfg.dicom.options.enabled() == frozenset({"retainLongitudinalModifiedDates"})
    assert cfg.dicom.pixels.riskyModalities == ["US"]
    assert cfg.fhir.fhirPathRules is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"dicom": {"pixels": {"regionRules": [{"manufacturer": "A", "model": "B", "regions": []}]}}},
            "dicom.pixels.regionRules.0.regions",
        ),
        (
            {"fhir": {"fhirPathRules": [{"path": "Patient.gender", "method": "substitute"}]}},
            "fhir.fhirPathRules.0",
        ),
        ({"unknown": 1}, "unknown"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_config_errors_name_the_field(data, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        parse_config(data)
