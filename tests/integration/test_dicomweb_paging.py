"""QIDO paging against the real Orthanc (1.10, DICOMweb plugin 1.7): an ingest lists every study, series and
instance the query matches, however the server pages (issue 14.7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydicom
import pytest

from enclave_operator.ingest import sources
from enclave_operator.ingest.spec import DicomWebSpec
from localenv.orthanc import start_orthanc
from localenv.runtime import RunDir
from support import ingest as S

STUDIES, SERIES = 3, 2


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three CT studies of two series each (one instance per series)."""
    run = RunDir(tmp_path_factory.mktemp("paging-run"))
    try:
        facts = start_orthanc(run)
        for study in range(STUDIES):
            for series in range(SERIES):
                ds = pydicom.dcmread(S.bundled("CT_small.dcm"))
                ds.StudyInstanceUID = f"{ds.StudyInstanceUID}.{study}"
                ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.{study}.{series}"
                ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{study}.{series}"
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                S.orthanc_store(facts, S.to_bytes(ds))
        yield facts
    finally:
        run.stop_all()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"Modality": "CT"}, "finding 14.7: Orthanc applies offset only inside the limit for ModalitiesInStudy"),
        ({}, "ordinary paging: Orthanc honours limit/offset"),
    ],
    ids=["modalities-in-study", "no-filter"],
)
def test_finding_14_7_paging_lists_every_study_whatever_the_server_does_with_offset(
    orthanc: dict[str, Any], query: dict[str, str], reason: str
) -> None:
    spec = DicomWebSpec(orthanc["dicomweb_root"], None, query)
    source = sources.DicomWebSource(spec, orthanc["username"], orthanc["password"], retries=0, page_size=2)
    try:
        items = source.discover()
    finally:
        source.close()
    assert len({i.ref[0] for i in items}) == STUDIES, reason
    assert len(items) == STUDIES * SERIES, reason
