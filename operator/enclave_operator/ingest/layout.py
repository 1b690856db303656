"""Object key names under the destination prefix, and the merge of shard manifests.

Everything the worker writes lives under the ingest's destination prefix (the only place
its credential may write):

* ``<prefix><StudyUID>/<SeriesUID>/<SOPUID>.dcm`` -- de-identified DICOM (new UIDs)
* ``<prefix>fhir/<ResourceType>/<pseudonymous id>.json`` -- de-identified FHIR resources
* ``<prefix>_enclave/progress/shard-<i>.json`` -- live progress of shard ``i``
* ``<prefix>_enclave/shards/shard-<i>.json`` -- final manifest of shard ``i``
* ``<prefix>_manifest.json`` -- merged provenance manifest (written by the controller)

:func:`merge_manifests` is pure: the controller reads the shard manifests and calls it.
"""

from __future__ import annotations

from typing import Any

MANIFEST_VERSION = 1
COUNT_FIELDS = ("discovered", "done", "skipped", "quarantined", "failed", "bytes")


def _prefix(prefix: str) -> str:
    """Normalise a prefix: empty, or ending in exactly one ``/`` (no leading ``/``)."""
    p = prefix.lstrip("/")
    if p and not p.endswith("/"):
        p += "/"
    return p


def progress_key(prefix: str, shard: int) -> str:
    return f"{_prefix(prefix)}_enclave/progress/shard-{shard}.json"


def shard_manifest_key(prefix: str, shard: int) -> str:
    return f"{_prefix(prefix)}_enclave/shards/shard-{shard}.json"


def manifest_key(prefix: str) -> str:
    return f"{_prefix(prefix)}_manifest.json"


RECORD_PATTERNS = ("_manifest.json", "*/_manifest.json", "_enclave/*", "*/_enclave/*")
"""Keys (S3 policy wildcards, under any destination prefix) of the ingests' records: the provenance manifest,
the shard manifests and progress. Project members may read them and never change or delete them."""


def dicom_key(prefix: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Output key of a de-identified instance (the UIDs are the *new* ones)."""
    for uid in (study_uid, series_uid, sop_uid):
        if not uid or "/" in uid:
            raise ValueError("UIDs in object keys must be non-empty and contain no '/'")
    return f"{_prefix(prefix)}{study_uid}/{series_uid}/{sop_uid}.dcm"


def fhir_key(prefix: str, resource_type: str, pseudonymous_id: str) -> str:
    if not resource_type.isalnum() or not pseudonymous_id or "/" in pseudonymous_id:
        raise ValueError("invalid FHIR resource type or id for an object key")
    return f"{_prefix(prefix)}fhir/{resource_type}/{pseudonymous_id}.json"


class MergeError(ValueError):
    """Shard manifests cannot be merged (message says why, never quotes data)."""


def merge_manifests(
    shards: list[dict[str, Any]],
    *,
    ingest: str,
    approver: str | None,
    started: str,
    finished: str,
    source_name: str,
) -> dict[str, Any]:
    """Merge shard manifests into the final provenance manifest.

    Counts are summed, outputs concatenated and sorted by path, quarantined/failed
    concatenated (each entry tagged with its shard). Engine (version, profile, options)
    and key fingerprint must be identical in every shard: a mixed delivery is refused.
    Duplicate shard indices are refused; an output path written by two shards is kept once
    when both recorded the same SHA-256 (identical copies in the source) and refused otherwise.
    """
    if not shards:
        raise MergeError("no shard manifests to merge")
    indices = [s.get("shard") for s in shards]
    if any(not isinstance(i, int) for i in indices):
        raise MergeError("a shard manifest has no integer 'shard'")
    if len(set(indices)) != len(indices):
        raise MergeError("duplicate shard index")
    engine = shards[0].get("engine")
    fingerprint = shards[0].get("keyFingerprint")
    for s in shards[1:]:
        if s.get("engine") != engine:
            raise MergeError(f"shard {s['shard']}: engine/profile/options differ from shard {shards[0]['shard']}")
        if s.get("keyFingerprint") != fingerprint:
            raise MergeError(f"shard {s['shard']}: key fingerprint differs from shard {shards[0]['shard']}")
    counts: dict[str, int] = {}
    outputs: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for s in sorted(shards, key=lambda s: s["shard"]):
        for name, value in (s.get("counts") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                counts[name] = counts.get(name, 0) + value
        outputs.extend(s.get("outputs") or [])
        quarantined.extend({**q, "shard": s["shard"]} for q in s.get("quarantined") or [])
        failed.extend({**f, "shard": s["shard"]} for f in s.get("failed") or [])
    outputs.sort(key=lambda o: o["path"])
    unique: list[dict[str, Any]] = []
    for o in outputs:
        if unique and unique[-1]["path"] == o["path"]:
            # two source objects with the same content (e.g. a copied instance) land on one name
            if unique[-1].get("sha256") != o.get("sha256"):
                raise MergeError("an output path appears in more than one shard with different content")
            continue
        unique.append(o)
    outputs = unique
    for name in COUNT_FIELDS:
        counts.setdefault(name, 0)
    return {
        "manifestVersion": MANIFEST_VERSION,
        "ingest": ingest,
        "approver": approver,
        "started": started,
        "finished": finished,
        "source": source_name,
        "engine": engine,
        "keyFingerprint": fingerprint,
        "shards": len(shards),
        "counts": counts,
        "outputs": outputs,
        "quarantined": quarantined,
        "failed": failed,
    }
