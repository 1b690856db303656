"""QIDO paging against servers that ignore offset or cap pages (no network: the search is faked)."""

from __future__ import annotations

from typing import Any

import pytest

from enclave_operator.ingest import sources
from enclave_operator.ingest.spec import DicomWebSpec

pytestmark = pytest.mark.unit

UIDS = [f"1.2.3.{i}" for i in range(25)]


def row(uid: str) -> dict[str, Any]:
    return {sources.TAG_STUDY: {"vr": "UI", "Value": [uid]}}


def compliant(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[offset : offset + limit]]


def ignores_offset(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[:limit]]  # the same first page for every offset


def offset_inside_limit(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[:limit][offset:]]  # Orthanc 1.10 with ModalitiesInStudy: limit=2&offset=2 is empty


def caps_pages(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[offset : offset + min(limit, 4)]]  # server maximum below the limit


def ignores_everything(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS]


def ignores_offset_and_caps(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[: min(limit, 10)]]  # the first 10 whatever is asked: the rest is unreachable


def _source(page_size: int) -> sources.DicomWebSource:
    spec = DicomWebSpec("http://127.0.0.1:9/dicom-web", None, {})
    return sources.DicomWebSource(spec, None, None, retries=0, page_size=page_size)


@pytest.mark.parametrize(
    ("search", "page_size", "reason"),
    [
        (compliant, 10, "ordinary limit/offset paging"),
        (ignores_offset, 10, "finding 14.7: a server that repeats the first page must not truncate the listing"),
        (offset_inside_limit, 10, "finding 14.7: Orthanc's empty second page must not truncate the listing"),
        (offset_inside_limit, 25, "a full page that holds everything: the confirmation finds nothing more"),
        (caps_pages, 10, "a short page is not the end"),
        (ignores_everything, 10, "all results at once, every time"),
        (compliant, 1000, "one page holds everything"),
    ],
)
def test_paging_terminates_and_collects_everything(search: Any, page_size: int, reason: str) -> None:
    assert _source(page_size)._paged("study search", search, sources.TAG_STUDY) == set(UIDS), reason


def test_finding_14_7_a_source_that_ignores_offset_and_caps_fails_clearly_instead_of_truncating() -> None:
    with pytest.raises(sources.SourceUnavailable, match="study search incomplete: the source ignores the QIDO offset"):
        _source(10)._paged("study search", ignores_offset_and_caps, sources.TAG_STUDY)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"Modality": "CT"}, {"ModalitiesInStudy": "CT"}),  # study level has no Modality attribute
        ({"Modality": "CT", "ModalitiesInStudy": "MR"}, {"Modality": "CT", "ModalitiesInStudy": "MR"}),  # explicit
        ({"StudyDate": "20240101-20241231"}, {"StudyDate": "20240101-20241231"}),  # passed through
    ],
    ids=["modality-mapped", "explicit-kept", "other-unchanged"],
)
def test_study_filters(query: dict[str, str], expected: dict[str, str]) -> None:
    assert sources.DicomWebSource.study_filters(query) == expected
