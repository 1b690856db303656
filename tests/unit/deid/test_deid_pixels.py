"""Burned-in annotation risk: quarantine with a reason, or blank configured regions first."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from enclave_operator.deid.config import parse_config
from enclave_operator.deid.pipeline import run_dicom
from enclave_operator.deid.pixels import PixelPolicy
from support.deid_helpers import ct_small, write

pytestmark = pytest.mark.unit


def _policy(**pixels) -> PixelPolicy:
    return PixelPolicy.from_config(parse_config({"dicom": {"pixels": pixels}}).dicom.pixels)


@pytest.mark.parametrize(
    ("mutate", "expected", "reason"),
    [
        (lambda ds: None, [], "plain CT carries no burn-in marker"),
        (lambda ds: setattr(ds, "BurnedInAnnotation", "YES"), ["BurnedInAnnotation is YES"], "explicit flag"),
        (
            lambda ds: setattr(ds, "Modality", "US"),
            ["modality US is configured as burn-in risk"],
            "ultrasound",
        ),
        (
            lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
            ["SOP class is secondary capture or configured as burn-in risk"],
            "secondary capture",
        ),
        (
            lambda ds: setattr(ds, "ImageType", ["DERIVED", "SECONDARY", "SCREEN SAVE"]),
            ["ImageType contains SECONDARY"],
            "screen-capture style ImageType",
        ),
        (lambda ds: delattr(ds, "PixelData"), [], "no pixels, no pixel risk"),
    ],
)
def test_risk_reasons(mutate, expected: list[str], reason: str) -> None:
    ds = ct_small()
    mutate(ds)
    assert _policy().risk_reasons(ds) == expected, reason


def test_configured_device_is_risky() -> None:
    ds = ct_small()
    pol = _policy(riskyDevices=[{"manufacturer": ds.Manufacturer, "model": ds.ManufacturerModelName}])
    assert pol.risk_reasons(ds) == ["device is configured as burn-in risk"]


def test_quarantined_never_written(tmp_path: Path, key: bytes) -> None:
    ds = ct_small()
    ds.Modality = "US"
    write(ds, tmp_path / "in" / "us.dcm")
    m = run_dicom(tmp_path / "in", tmp_path / "out", parse_config({}), key)
    assert m.counts()["quarantined"] == 1 and not m.outputs
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["_manifest.json"]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["quarantined"][0]["reasons"] == ["modality US is configured as burn-in risk"]


def test_region_rule_blanks_then_writes(tmp_path: Path, key: bytes) -> None:
    ds = ct_small()
    ds.Modality = "US"
    ds.BurnedInAnnotation = "YES"
    write(ds, tmp_path / "in" / "us.dcm")
    rule = {
        "manufacturer": ds.Manufacturer,
        "model": ds.ManufacturerModelName,
        "regions": [
            {"x": 0, "y": 0, "width": 128, "height": 10},
            {"x": 100, "y": 100, "width": 50, "height": 50},
        ],
    }
    cfg = parse_config({"dicom": {"pixels": {"regionRules": [rule]}}})
    m = run_dicom(tmp_path / "in", tmp_path / "out", cfg, key)
    assert m.counts()["written"] == 1 and m.counts()["pixelCleaned"] == 1
    out = pydicom.dcmread(tmp_path / "out" / m.outputs[0]["path"])
    orig = ct_small().PixelData
    row = 128 * 2
    assert out.PixelData[: 10 * row] == bytes(10 * row), "top band blanked"
    assert out.PixelData[10 * row : 11 * row] == orig[10 * row : 11 * row], "below the band untouched"
    y = 110
    assert out.PixelData[y * row + 100 * 2 : y * row + 128 * 2] == bytes(56), "clipped box blanked"
    assert out.PixelData[y * row : y * row + 100 * 2] == orig[y * row : y * row + 100 * 2]
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_compressed_pixels_cannot_be_blanked(tmp_path: Path, key: bytes) -> None:
    src = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    src.BurnedInAnnotation = "YES"
    write(src, tmp_path / "in" / "j2k.dcm")
    rule = {
        "manufacturer": str(src.get("Manufacturer", "")),
        "model": str(src.get("ManufacturerModelName", "")),
        "regions": [{"x": 0, "y": 0, "width": 10, "height": 10}],
    }
    cfg = parse_config({"dicom": {"pixels": {"regionRules": [rule]}}})
    m = run_dicom(tmp_path / "in", tmp_path / "out", cfg, key)
    reasons = m.quarantined[0]["reasons"]
    assert any("compressed" in r for r in reasons)


SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
TRUST = {"sopClassUid": SC_CLASS, "configuredBy": "pat.admin (platform team)", "reason": "derived maps, pipeline v3"}


def _secondary_capture():
    ds = ct_small()
    ds.SOPClassUID = SC_CLASS
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    return ds


@pytest.mark.parametrize(
    ("mutate", "trusted", "expected", "reason"),
    [
        (lambda ds: None, False, ["SOP class is secondary capture or configured as burn-in risk",
                                  "ImageType contains SECONDARY"], "default: every SC is quarantined"),
        (lambda ds: None, True, [], "a trusted SC class is admitted (SOP class and ImageType signals waived)"),
        (lambda ds: setattr(ds, "BurnedInAnnotation", "YES"), True, ["BurnedInAnnotation is YES"],
         "the instance's own BurnedInAnnotation=YES always quarantines"),
        (lambda ds: setattr(ds, "Modality", "US"), True, ["modality US is configured as burn-in risk"],
         "a risky modality still quarantines"),
        (lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7.4"), True,
         ["SOP class is secondary capture or configured as burn-in risk", "ImageType contains SECONDARY"],
         "trust is per SOP class: another SC class stays quarantined"),
    ],
)  # fmt: skip
def test_trusted_sop_class_opt_out(mutate, trusted: bool, expected: list[str], reason: str) -> None:
    ds = _secondary_capture()
    mutate(ds)
    policy = _policy(trustedSopClasses=[TRUST]) if trusted else _policy()
    assert policy.risk_reasons(ds) == expected, reason


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({**TRUST, "configuredBy": ""}, "configuredBy"),
        ({**TRUST, "reason": ""}, "reason"),
        ({**TRUST, "sopClassUid": "secondary-capture"}, "sopClassUid"),
        ({"sopClassUid": SC_CLASS, "reason": "x"}, "configuredBy"),
    ],
)
def test_trusted_sop_class_needs_who_and_why(entry: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"trustedSopClasses.0.{field}"):
        parse_config({"dicom": {"pixels": {"trustedSopClasses": [entry]}}})


def test_trusted_sop_class_listed_once() -> None:
    with pytest.raises(ValueError, match="each sopClassUid may be trusted once"):
        parse_config({"dicom": {"pixels": {"trustedSopClasses": [TRUST, TRUST]}}})


def test_trust_is_recorded_in_the_manifest(tmp_path: Path, key: bytes) -> None:
    """Who configured the opt-out and why is in the manifest's options, and each admitted instance says so."""
    write(_secondary_capture(), tmp_path / "in" / "sc.dcm")
    write(ct_small(), tmp_path / "in" / "ct.dcm")
    trusting = parse_config({"dicom": {"pixels": {"trustedSopClasses": [TRUST]}}})
    run_dicom(tmp_path / "in", tmp_path / "out", trusting, key)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["written"] == 2 and manifest["counts"]["trustedSopClass"] == 1
    assert manifest["options"]["trustedSopClasses"] == [TRUST]
    assert sorted(o.get("trustedSopClass", "") for o in manifest["outputs"]) == ["", SC_CLASS]
    default = run_dicom(tmp_path / "in", tmp_path / "out2", parse_config({}), key)
    assert default.counts()["quarantined"] == 1 and default.counts()["trustedSopClass"] == 0
