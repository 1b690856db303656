"""Dataset builders shared by the de-identification unit tests (imported, not a conftest)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KEY = b"unit-test-key-0123456789abcdef-0123456789"


def ct_small() -> Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def make_instance(
    patient_id: str = "PID-0001",
    patient_name: str = "Smithson^Johnathan",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    study_date: str = "20210315",
) -> Dataset:
    """A small, valid CT-like Part 10 dataset built from scratch (no pixel data)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = sop_uid or generate_uid(prefix="1.2.826.0.1.3680043.10.99.")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid(prefix="1.2.826.0.1.3680043.10.99.")
    ds.SeriesInstanceUID = series_uid or generate_uid(prefix="1.2.826.0.1.3680043.10.99.")
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.99.777"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610412"
    ds.PatientSex = "M"
    ds.AccessionNumber = "ACC778899"
    ds.StudyDate = study_date
    ds.StudyTime = "101112"
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.ContentTime = "101530.123"
    ds.AcquisitionDateTime = study_date + "101500"
    ds.Modality = "CT"
    ds.InstitutionName = "St Elsewhere General Hospital"
    ds.ReferringPhysicianName = "Watson^James"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.InstanceNumber = 1
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
