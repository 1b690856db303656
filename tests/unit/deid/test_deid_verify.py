"""The verifier catches leaked values, names instance + path + kind, and never the value."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from enclave_operator.deid.config import parse_config
from enclave_operator.deid.dicom import DicomDeidentifier
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.pipeline import run_dicom, verify_dicom_dirs
from enclave_operator.deid.verify import verify_dataset
from support.deid_helpers import make_instance, write

pytestmark = pytest.mark.unit

ORIG_STUDY_UID = "1.2.826.0.1.3680043.10.99.4242"


def _deid(keys: Keys, ds: Dataset):
    engine = DicomDeidentifier(parse_config({}).dicom, keys)
    return engine.deidentify(ds)


@pytest.mark.parametrize(
    ("plant", "path", "kind", "reason"),
    [
        (
            lambda ds: (
                ds.ReferencedSeriesSequence[0]
                .ReferencedInstanceSequence[0]
                .__setattr__("ReferencedSOPClassUID", ORIG_STUDY_UID)
            ),
            "ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID",
            "uid",
            "an original UID copied into a kept attribute two levels deep",
        ),
        (
            lambda ds: ds.__setattr__("PositionReferenceIndicator", "Smithson^Johnathan"),
            "PositionReferenceIndicator",
            "name",
            "the patient name in an attribute the profile does not list",
        ),
        (
            lambda ds: ds.__setattr__("ImageComments", "seen by JOHNATHAN today"),
            "ImageComments",
            "name",
            "a name component inside retained free text",
        ),
        (
            lambda ds: ds.__setattr__("SeriesDate", "20210315"),
            "SeriesDate",
            "unshifted-date",
            "an original date left at its path",
        ),
        (
            lambda ds: ds.__setattr__("PositionReferenceIndicator", "scan 20210315"),
            "PositionReferenceIndicator",
            "date",
            "an original date inside text",
        ),
    ],
)
def test_verifier_names_path_and_kind_without_value(keys: Keys, plant, path: str, kind: str, reason: str) -> None:
    ds = make_instance(study_uid=ORIG_STUDY_UID)
    inst = Dataset()
    inst.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inst.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.99.31"
    series = Dataset()
    series.ReferencedInstanceSequence = Sequence([inst])
    ds.ReferencedSeriesSequence = Sequence([series])
    st = _deid(keys, ds)
    assert verify_dataset(ds, st.findings, "x.dcm") == [], "clean before planting"
    plant(ds)
    leaks = verify_dataset(ds, st.findings, "x.dcm")
    assert [(lk.path, lk.kind) for lk in leaks] == [(path, kind)], reason
    text = json.dumps([lk.as_dict() for lk in leaks]) + str(leaks[0])
    for secret in ("Smithson", "SMITHSON", "JOHNATHAN", ORIG_STUDY_UID, "20210315"):
        assert secret not in text, "reports never contain the value"


def test_leaking_instance_is_not_written_and_nothing_logs_phi(
    tmp_path: Path, key: bytes, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from enclave_operator.deid.cli import main

    ds = make_instance()
    # a text attribute that Table E.1-1 does not list, carrying the patient's name
    ds.add_new(0x00189004, "CS", "RESEARCH")
    ds.PositionReferenceIndicator = "Smithson^Johnathan"
    write(ds, tmp_path / "in" / "a.dcm")
    write(make_instance(patient_id="OTHER", patient_name="Other^Person"), tmp_path / "in" / "b.dcm")
    (tmp_path / "k").write_bytes(key)
    with caplog.at_level(logging.DEBUG):
        rc = main(["dicom", "--key-file", str(tmp_path / "k"), str(tmp_path / "in"), str(tmp_path / "out")])
    assert rc == 1
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["failed"] == 1 and manifest["counts"]["written"] == 1
    assert manifest["failed"][0]["leaks"][0]["path"] == "PositionReferenceIndicator"
    outs = [p for p in (tmp_path / "out").iterdir() if p.suffix == ".dcm"]
    assert len(outs) == 1
    captured = capsys.readouterr()
    everything = captured.err + captured.out + caplog.text + json.dumps(manifest)
    for secret in ("Smithson", "SMITHSON", "Johnathan", "PID-0001", "19610412"):
        assert secret not in everything


def test_verify_command_finds_planted_leak_in_written_file(tmp_path: Path, key: bytes) -> None:
    write(make_instance(), tmp_path / "in" / "a.dcm")
    run_dicom(tmp_path / "in", tmp_path / "out", parse_config({}), key)
    assert verify_dicom_dirs(tmp_path / "in", tmp_path / "out", parse_config({})).leaks == []
    out = next((tmp_path / "out").glob("*.dcm"))
    ds = pydicom.dcmread(out)
    ds.ImageComments = "ACC778899"
    ds.save_as(out)
    report = verify_dicom_dirs(tmp_path / "in", tmp_path / "out", parse_config({}))
    assert [(lk.path, lk.kind) for lk in report.leaks] == [("ImageComments", "identifier")]
    assert report.errors and "SHA-256" in report.errors[0]["reason"], "tampering is detected"


def test_invalid_values_do_not_reach_logs_or_warnings(
    tmp_path: Path, key: bytes, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    """pydicom's validation messages quote values ("Invalid value for VR DA: ..."); they are silenced.

    The input is implicit VR so the verifier has to convert elements, and holds invalid values
    that pydicom would report verbatim.
    """
    from pydicom import config
    from pydicom.uid import ImplicitVRLittleEndian

    saved = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds = make_instance()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.add_new(0x00080020, "DA", "Smithson")  # StudyDate (shifted: unparsable -> emptied)
        ds.add_new(0x00180015, "CS", "smithson^x")  # BodyPartExamined: kept, invalid CS
        ds.add_new(0x00081030, "LO", "Smithson " * 12)  # StudyDescription longer than LO allows
        write(ds, tmp_path / "in" / "a.dcm")
    finally:
        config.settings.writing_validation_mode = saved
    recwarn.clear()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        run_dicom(tmp_path / "in", tmp_path / "out", parse_config({}), key)
        verify_dicom_dirs(tmp_path / "in", tmp_path / "out", parse_config({}))
    messages = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "smithson" not in messages.lower()
