"""Object key layout and the shard-manifest merge (pure functions the controller relies on)."""

from __future__ import annotations

from typing import Any

import pytest

from enclave_operator.ingest import layout

pytestmark = pytest.mark.unit

ENGINE = {"name": "enclave-deid", "version": "0.1.0", "profile": {"version": "e11-x"}, "options": {"a": True}}


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (layout.progress_key, ("raw/c1/", 0), "raw/c1/_enclave/progress/shard-0.json"),
        (layout.progress_key, ("raw/c1", 3), "raw/c1/_enclave/progress/shard-3.json"),  # slash added
        (layout.shard_manifest_key, ("raw/c1/", 12), "raw/c1/_enclave/shards/shard-12.json"),
        (layout.shard_manifest_key, ("/raw/c1/", 1), "raw/c1/_enclave/shards/shard-1.json"),  # no leading slash
        (layout.manifest_key, ("raw/c1/",), "raw/c1/_manifest.json"),
        (layout.manifest_key, ("",), "_manifest.json"),  # empty prefix stays empty
        (layout.dicom_key, ("p/", "2.25.1", "2.25.2", "2.25.3"), "p/2.25.1/2.25.2/2.25.3.dcm"),
        (layout.fhir_key, ("p/", "Observation", "ab12"), "p/fhir/Observation/ab12.json"),
    ],
    ids=[
        "progress",
        "progress-adds-slash",
        "shard",
        "shard-strips-leading",
        "manifest",
        "manifest-empty",
        "dicom",
        "fhir",
    ],
)
def test_key_names(fn: Any, args: tuple[Any, ...], expected: str) -> None:
    assert fn(*args) == expected


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (layout.dicom_key, ("p/", "", "2.25.2", "2.25.3")),  # empty UID would collapse the hierarchy
        (layout.dicom_key, ("p/", "2.25.1", "../x", "2.25.3")),  # a slash would escape the series level
        (layout.fhir_key, ("p/", "Obs/x", "id")),  # resource type must be a plain name
        (layout.fhir_key, ("p/", "Patient", "")),  # empty id
    ],
    ids=["empty-uid", "slash-in-uid", "bad-type", "empty-id"],
)
def test_key_names_refuse_unsafe_parts(fn: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        fn(*args)


def shard(i: int, paths: list[str], **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "shard": i,
        "outputs": [{"path": p, "sha256": f"h-{p}", "bytes": 10, "kind": "dicom"} for p in paths],
        "quarantined": [{"reason": "burned-in annotation risk: modality US is configured as burn-in risk"}] * i,
        "failed": [],
        "counts": {"discovered": len(paths) + i, "done": len(paths), "skipped": 0, "quarantined": i, "failed": 0,
                   "bytes": 10 * len(paths)},
        "engine": ENGINE,
        "keyFingerprint": "0123456789abcdef",
    }  # fmt: skip
    m.update(extra)
    return m


def merge(shards: list[dict[str, Any]]) -> dict[str, Any]:
    return layout.merge_manifests(
        shards, ingest="ns/ing", approver="alice", started="2026-01-01T00:00:00Z", finished="2026-01-01T01:00:00Z",
        source_name="pacs",
    )  # fmt: skip


def test_merge_sums_counts_and_sorts_outputs() -> None:
    m = merge([shard(1, ["p/b.dcm", "p/d.dcm"]), shard(0, ["p/c.dcm", "p/a.dcm"])])
    assert [o["path"] for o in m["outputs"]] == ["p/a.dcm", "p/b.dcm", "p/c.dcm", "p/d.dcm"]
    assert m["counts"] == {"discovered": 5, "done": 4, "skipped": 0, "quarantined": 1, "failed": 0, "bytes": 40}
    assert m["quarantined"] == [{"reason": shard(1, [])["quarantined"][0]["reason"], "shard": 1}]
    assert m["engine"] == ENGINE and m["keyFingerprint"] == "0123456789abcdef" and m["shards"] == 2
    assert (m["ingest"], m["approver"], m["source"]) == ("ns/ing", "alice", "pacs")


def test_identical_duplicate_output_is_kept_once() -> None:
    # the same instance stored twice in an S3 source can be owned by two shards; both wrote the same bytes
    m = merge([shard(0, ["p/a.dcm"]), shard(1, ["p/a.dcm", "p/b.dcm"])])
    assert [o["path"] for o in m["outputs"]] == ["p/a.dcm", "p/b.dcm"]


def test_merge_of_one_shard_and_missing_counts() -> None:
    one = shard(0, [])
    one["counts"] = {"done": 0}
    m = merge([one])
    assert m["counts"] == {"discovered": 0, "done": 0, "skipped": 0, "quarantined": 0, "failed": 0, "bytes": 0}
    assert m["outputs"] == []


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ([], "no shard manifests"),  # nothing to merge is a controller bug, not an empty delivery
        ([shard(0, ["a"]), shard(0, ["b"])], "duplicate shard index"),  # the same pod's manifest twice
        ([shard(0, ["a"]), shard(1, ["b"], engine={**ENGINE, "version": "0.2.0"})], "engine"),  # mixed engine
        ([shard(0, ["a"]), shard(1, ["b"], engine={**ENGINE, "options": {"a": False}})], "options"),  # options
        ([shard(0, ["a"]), shard(1, ["b"], keyFingerprint="ffffffffffffffff")], "key fingerprint"),  # other key
        ([shard(0, ["a"]), shard(1, ["a"], outputs=[{"path": "a", "sha256": "other"}])], "different content"),
        ([{"outputs": []}], "integer 'shard'"),  # not a shard manifest
    ],
    ids=["empty", "dup-index", "engine-version", "engine-options", "key", "overlap-differs", "no-index"],
)
def test_merge_refuses_inconsistent_shards(shards: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(layout.MergeError, match=message):
        merge(shards)
