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
    return [row(u) for u in UIDS[:limit]]  # Orthanc with ModalitiesInStudy: the same page forever


def caps_pages(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS[offset : offset + min(limit, 4)]]  # server maximum below the limit


def ignores_everything(limit: int, offset: int, **_: Any) -> list[dict[str, Any]]:
    return [row(u) for u in UIDS]


@pytest.mark.parametrize(
    ("search", "page_size", "reason"),
    [
        (compliant, 10, "ordinary limit/offset paging"),
        (ignores_offset, 10, "must terminate when the server repeats a page"),
        (caps_pages, 10, "a short page is not the end"),
        (ignores_everything, 10, "all results at once, every time"),
        (compliant, 1000, "one page holds everything"),
    ],
)
def test_paging_terminates_and_collects_everything(
    monkeypatch: pytest.MonkeyPatch, search: Any, page_size: int, reason: str
) -> None:
    monkeypatch.setattr(sources, "PAGE_SIZE", page_size)
    src = sources.DicomWebSource(DicomWebSpec("http://127.0.0.1:9/dicom-web", None, {}), None, None, retries=0)
    expected = set(UIDS) if search is not ignores_offset else set(UIDS[:page_size])
    assert src._paged("study search", search, sources.TAG_STUDY) == expected, reason


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
