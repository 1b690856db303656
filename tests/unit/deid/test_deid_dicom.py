"""DICOM engine behaviour beyond the table: nesting, private tags, determinism, references."""

from __future__ import annotations

import copy
import io
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from enclave_operator.deid.config import parse_config
from enclave_operator.deid.dicom import DicomDeidentifier
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.pipeline import run_dicom
from support.deid_helpers import ct_small, make_instance, write

pytestmark = pytest.mark.unit


def _engine(keys: Keys, **dicom) -> DicomDeidentifier:
    return DicomDeidentifier(parse_config({"dicom": dicom}).dicom, keys)


def _roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def test_ct_small_is_valid_and_marked(keys: Keys) -> None:
    ds = ct_small()
    orig = ct_small()
    _engine(keys).deidentify(ds)
    out = _roundtrip(ds)
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and "113107" in codes, "basic profile + modified dates option codes"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID == keys.uid(orig.SOPInstanceUID)
    assert out.StudyInstanceUID.startswith("2.25.") and len(out.StudyInstanceUID) <= 64
    assert out.PatientID == keys.patient_id(orig.PatientID)
    shift = keys.shift_days(orig.PatientID)
    want = date(int(orig.StudyDate[:4]), int(orig.StudyDate[4:6]), int(orig.StudyDate[6:])) + timedelta(days=shift)
    assert out.StudyDate == want.strftime("%Y%m%d")
    assert out.StudyTime == orig.StudyTime, "time of day is kept"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "InstitutionName" not in out or out.InstitutionName != orig.InstitutionName
    assert out.PixelData == orig.PixelData


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ("PatientName", "pseudonym derived from the patient ID"),
        ("PatientID", "pseudonym = keyed hash of PatientID"),
        ("AccessionNumber", "keyed accession pseudonym"),
    ],
)
def test_pseudonyms_present_and_deterministic(keys: Keys, element: str, reason: str) -> None:
    a, b = make_instance(), make_instance()
    _engine(keys).deidentify(a)
    _engine(Keys(b"another-key-0123456789abcdef-0123456789")).deidentify(b)
    c = make_instance()
    _engine(keys).deidentify(c)
    assert a[element].value, reason
    assert a[element].value == c[element].value, "same key, same pseudonym"
    assert a[element].value != b[element].value, "different key, different pseudonym"
    assert a[element].value != make_instance()[element].value


def test_nested_sequences_any_depth(keys: Keys) -> None:
    ds = make_instance()
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.99.55"
    inner.PersonName = "Nested^Person"
    inner.ObservationDateTime = "20210310121314"
    inner.add_new(0x00290010, "LO", "SECRET CREATOR")
    inner.add_new(0x00291001, "LO", "private nested value")
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    middle.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.99.56"
    ds.ContentSequence = Sequence([middle])
    _engine(keys).deidentify(ds)
    m = ds.ContentSequence[0]
    i = m.ContentSequence[0]
    assert m.ReferencedSOPInstanceUID == keys.uid("1.2.826.0.1.3680043.10.99.56")
    assert i.ReferencedSOPInstanceUID == keys.uid("1.2.826.0.1.3680043.10.99.55")
    assert i.PersonName != "Nested^Person"
    assert 0x00291001 not in i and 0x00290010 not in i, "private tags removed at any depth"
    assert i.ObservationDateTime != "20210310121314" and i.ObservationDateTime.endswith("121314")


def test_private_tags_removed_unless_allow_listed(keys: Keys) -> None:
    def build() -> Dataset:
        ds = make_instance()
        ds.add_new(0x00190010, "LO", "ACME_SCANNER")
        ds.add_new(0x00191010, "DS", "2.5")  # safe (allow-listed)
        ds.add_new(0x00191011, "LO", "Smithson")  # not allow-listed
        ds.add_new(0x00210010, "LO", "OTHER VENDOR")
        ds.add_new(0x00211010, "DS", "2.5")  # same offset, other creator
        return ds

    allow = [{"group": "0x0019", "creator": "ACME_SCANNER", "elements": ["0x10"]}]
    off = build()
    _engine(keys, safePrivateTags=allow).deidentify(off)
    assert not any(t.group % 2 for t in off.keys()), "option off: every private element removed"

    on = build()
    _engine(keys, safePrivateTags=allow, options={"retainSafePrivate": True}).deidentify(on)
    assert on[0x00191010].value == "2.5"
    assert 0x00190010 in on, "creator of a kept block stays"
    assert 0x00191011 not in on and 0x00211010 not in on and 0x00210010 not in on
    assert "113111" in [i.CodeValue for i in on.DeidentificationMethodCodeSequence]


def test_repeating_groups_and_group_lengths(keys: Keys) -> None:
    ds = make_instance()
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    ds.add_new(0x60024000, "LT", "overlay comment")
    ds.add_new(0x60000010, "US", 4)  # overlay rows: not in the table, kept
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x00080000, "UL", 1234)
    _engine(keys).deidentify(ds)
    assert 0x60003000 not in ds and 0x60024000 not in ds and 0x50000005 not in ds
    assert ds[0x60000010].value == 4
    assert 0x00080000 not in ds, "group lengths would be stale"


def test_references_consistent_across_instances(keys: Keys) -> None:
    a = make_instance(sop_uid="1.2.826.0.1.3680043.10.99.1001", study_uid="1.2.826.0.1.3680043.10.99.9")
    b = make_instance(sop_uid="1.2.826.0.1.3680043.10.99.1002", study_uid="1.2.826.0.1.3680043.10.99.9")
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    b.ReferencedImageSequence = Sequence([ref])
    series = Dataset()  # Referenced Series Sequence is not in Table E.1-1: kept and walked
    series.SeriesInstanceUID = a.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([copy.deepcopy(ref)])
    b.ReferencedSeriesSequence = Sequence([series])
    study = Dataset()
    study.ReferencedSOPInstanceUID = a.StudyInstanceUID
    b.ReferencedStudySequence = Sequence([study])  # X/Z -> zero length
    _engine(keys).deidentify(a)
    _engine(keys).deidentify(b)
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == a.SOPClassUID, "well-known UIDs kept"
    assert b.StudyInstanceUID == a.StudyInstanceUID
    assert len(b.ReferencedStudySequence) == 0
    assert b.ReferencedSeriesSequence[0].SeriesInstanceUID == a.SeriesInstanceUID
    assert b.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.FrameOfReferenceUID == a.FrameOfReferenceUID


def test_reruns_and_shards_agree(tmp_path: Path, key: bytes) -> None:
    """Two runs, and two half-shards, produce byte-identical outputs with the same names."""
    inp = tmp_path / "in"
    for n in range(6):
        ds = make_instance(patient_id=f"P{n % 2}", sop_uid=f"1.2.826.0.1.3680043.10.99.{500 + n}")
        write(ds, inp / f"all/{n}.dcm")
        write(ds, inp / f"shard{n % 2}/{n}.dcm")
    cfg = parse_config({})
    run1 = run_dicom(inp / "all", tmp_path / "o1", cfg, key)
    run2 = run_dicom(inp / "all", tmp_path / "o2", cfg, key, jobs=2)
    s0 = run_dicom(inp / "shard0", tmp_path / "s0", cfg, key)
    s1 = run_dicom(inp / "shard1", tmp_path / "s1", cfg, key)

    def digests(m) -> dict[str, str]:
        return {o["path"]: o["sha256"] for o in m.outputs}

    assert digests(run1) == digests(run2)
    assert digests(run1) == {**digests(s0), **digests(s1)}
    assert len(digests(run1)) == 6


def test_shift_is_per_patient_and_in_range(keys: Keys) -> None:
    shifts = {keys.shift_days(f"PATIENT-{i}") for i in range(300)}
    assert all(-365 <= s <= -1 for s in shifts)
    assert len(shifts) > 100, "shifts vary between patients"
    a, b = make_instance(patient_id="X1"), make_instance(patient_id="X1")
    b.StudyDate = "20210316"
    _engine(keys).deidentify(a)
    _engine(keys).deidentify(b)
    da = date(int(a.StudyDate[:4]), int(a.StudyDate[4:6]), int(a.StudyDate[6:]))
    db = date(int(b.StudyDate[:4]), int(b.StudyDate[4:6]), int(b.StudyDate[6:]))
    assert (db - da).days == 1, "intervals within a patient are preserved"


def test_clean_descriptors_scrubs_identifiers(keys: Keys) -> None:
    ds = make_instance()
    ds.StudyDescription = "CT chest for Smithson ACC778899"
    _engine(keys, options={"cleanDescriptors": True}).deidentify(ds)
    assert "SMITHSON" not in ds.StudyDescription.upper()
    assert "ACC778899" not in ds.StudyDescription
    assert ds.StudyDescription.startswith("CT chest for")


def test_full_dates_option_keeps_dates(keys: Keys) -> None:
    ds = make_instance()
    opts = {"retainLongitudinalFullDates": True, "retainLongitudinalModifiedDates": False}
    _engine(keys, options=opts).deidentify(ds)
    assert ds.StudyDate == "20210315"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
