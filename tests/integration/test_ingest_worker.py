"""The DataIngest worker against a real Orthanc (DICOMweb) and a real MinIO, run as real processes.

One module-wide environment: Orthanc loaded with pydicom's bundled files (a three-instance CT
series, an MR, an RT plan and dose, a secondary capture that must be quarantined), a
destination bucket and a MinIO user whose policy allows only ``bucket/prefix*``.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from minio.error import S3Error
from pydicom.dataset import Dataset

from enclave_operator.deid.config import DeidConfig
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.manifest import MANIFEST_NAME
from enclave_operator.deid.pipeline import verify_dicom_dirs
from enclave_operator.deid.pixels import PixelPolicy
from enclave_operator.ingest import layout
from enclave_operator.ingest import spec as specmod
from enclave_operator.ingest.sources import FetchError, Item
from enclave_operator.ingest.worker import ShardRun
from localenv import environment
from localenv.minio import start_minio
from localenv.orthanc import start_orthanc
from localenv.runtime import RunDir
from minio import Minio
from support import ingest as S

pytestmark = pytest.mark.integration

BUCKET = "onco-flow"
PREFIX = "raw/ct-cohort-1/"
OTHER_FILES = ("MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "SC_rgb_small_odd.dcm")


class Env:
    def __init__(self, run: RunDir, orthanc: dict[str, Any], minio: dict[str, Any], tmp: Path) -> None:
        self.run, self.orthanc, self.minio, self.tmp = run, orthanc, minio, tmp
        self.root = S.root_client(minio)
        self.originals: dict[str, bytes] = {}
        self.user: tuple[str, str] = ("", "")

    @property
    def source_auth(self) -> tuple[str, str]:
        return (self.orthanc["username"], self.orthanc["password"])

    def spec(self, prefix: str = PREFIX, shards: int = 2, **source: Any) -> dict[str, Any]:
        return {
            "ingest": "oncology/ct-cohort-1",
            "source": {"kind": "dicomweb", "url": self.orthanc["dicomweb_root"], **source},
            "deidentification": {"profile": "basic", "options": ["retainLongitudinalModifiedDates"]},
            "destination": {"endpoint": self.minio["endpoint"], "secure": False, "bucket": BUCKET, "prefix": prefix},
            "shards": shards,
            "retries": 2,
        }

    def scoped(self, user: tuple[str, str]) -> Minio:
        return Minio(self.minio["endpoint"], access_key=user[0], secret_key=user[1], secure=False, region="us-east-1")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    run = RunDir(tmp_path_factory.mktemp("ingest-run"))
    try:
        orthanc = start_orthanc(run)
        environment.build(["minio"])
        minio = start_minio(run)
        e = Env(run, orthanc, minio, tmp_path_factory.mktemp("ingest"))
        for data in S.ct_series_copies(3):
            S.orthanc_store(orthanc, data)
        for name in OTHER_FILES:
            S.orthanc_store(orthanc, S.bundled(name).read_bytes())
        e.originals = S.orthanc_originals(orthanc)
        assert len(e.originals) == 7, "Orthanc 1.10 did not accept every fixture file"
        e.root.make_bucket(BUCKET)
        e.user = S.scoped_user(minio, BUCKET, PREFIX)
        yield e
    finally:
        run.stop_all()


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _expected(env: Env) -> tuple[set[str], set[str]]:
    """(original SOP UIDs that must be written, those the engine quarantines)."""
    policy = PixelPolicy.from_config(DeidConfig().dicom.pixels)
    risky = {sop for sop, data in env.originals.items() if policy.risk_reasons(_read(data))}
    return set(env.originals) - risky, risky


def _identifiers(env: Env) -> set[str]:
    """Original identifying strings that must never appear in manifests, progress or logs."""
    out: set[str] = set()
    for data in env.originals.values():
        ds = _read(data)
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName"):
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 4:
                out.add(v)
    return out


@pytest.fixture(scope="module")
def first_run(env: Env) -> dict[str, Any]:
    envs = [S.worker_env(env.spec(), i, env.user, env.source_auth) for i in range(2)]
    results = S.run_workers(envs)
    objects = S.list_objects(env.root, BUCKET, PREFIX)
    return {"results": results, "objects": objects}


def _outputs(objects: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k: o for k, o in objects.items() if k.endswith(".dcm") and k.startswith(prefix)}


def test_two_shards_deidentify_disjoint_and_cover(env: Env, first_run: dict[str, Any]) -> None:
    for r in first_run["results"]:
        assert r.returncode == 0, r.stderr
    written, quarantined = _expected(env)
    keys = Keys(S.DEID_KEY.encode())
    outputs = _outputs(first_run["objects"], PREFIX)
    assert len(outputs) == len(written) == 5

    manifests = [S.get_json(env.root, BUCKET, layout.shard_manifest_key(PREFIX, i)) for i in range(2)]
    paths = [{o["path"] for o in m["outputs"]} for m in manifests]
    assert not paths[0] & paths[1], "shards overlap"
    assert paths[0] | paths[1] == set(outputs), "shards do not cover every output"
    assert all(paths), "hash sharding left a shard empty on this fixture (pick another split)"

    # every output: valid DICOM, named by its new UIDs, paired with its original for verification
    in_dir, out_dir = env.tmp / "orig", env.tmp / "out"
    for d in (in_dir, out_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    new_to_orig = {keys.uid(sop): sop for sop in env.originals}
    pairs = []
    for key in sorted(outputs):
        data = S.get_bytes(env.root, BUCKET, key)
        ds = _read(data)
        assert key == f"{PREFIX}{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert ds.PatientIdentityRemoved == "YES"
        orig = new_to_orig[str(ds.SOPInstanceUID)]
        assert orig in written
        name = f"{ds.SOPInstanceUID}.dcm"
        (out_dir / name).write_bytes(data)
        (in_dir / f"{orig}.dcm").write_bytes(env.originals[orig])
        pairs.append({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "source": f"{orig}.dcm"})
    for sop in quarantined:  # originals of quarantined instances take part in the UID check too
        (in_dir / f"{sop}.dcm").write_bytes(env.originals[sop])
        assert keys.uid(sop) not in " ".join(outputs), "a quarantined instance was written"
    (out_dir / MANIFEST_NAME).write_text(json.dumps({"outputs": pairs}))
    report = verify_dicom_dirs(in_dir, out_dir, DeidConfig())
    assert report.checked == 5 and not report.leaks and not report.errors, (report.leaks, report.errors)

    # progress and shard manifests agree; counts right; nothing identifying anywhere
    total = {"discovered": 0, "done": 0, "skipped": 0, "quarantined": 0, "failed": 0}
    idents = _identifiers(env)
    for i, m in enumerate(manifests):
        progress = S.get_json(env.root, BUCKET, layout.progress_key(PREFIX, i))
        assert progress["shard"] == i and progress["finished"] is True
        assert {k: progress[k] for k in m["counts"]} == m["counts"]
        c = m["counts"]
        assert c["discovered"] == c["done"] + c["quarantined"] + c["failed"]
        assert c["bytes"] == sum(o["bytes"] for o in m["outputs"])
        for k in total:
            total[k] += c[k]
        assert m["keyFingerprint"] == keys.fingerprint()
        assert all(q["reason"].startswith("burned-in annotation risk: ") for q in m["quarantined"])
        text = json.dumps(m) + json.dumps(progress) + first_run["results"][i].stderr
        assert not [v for v in idents if v in text], "an original identifier reached a manifest or log"
    assert total == {"discovered": 7, "done": 5, "skipped": 0, "quarantined": 2, "failed": 0}
    assert len(quarantined) == 2

    merged = layout.merge_manifests(
        manifests, ingest="oncology/ct-cohort-1", approver="dr-x", started="s", finished="f", source_name="pacs"
    )
    assert [o["path"] for o in merged["outputs"]] == sorted(outputs)
    assert merged["counts"]["done"] == 5 and merged["counts"]["quarantined"] == 2


def test_rerun_shard_resumes_without_writes(env: Env, first_run: dict[str, Any]) -> None:
    before = {k: (o.last_modified, o.etag) for k, o in _outputs(first_run["objects"], PREFIX).items()}
    (result,) = S.run_workers([S.worker_env(env.spec(), 0, env.user, env.source_auth)])
    assert result.returncode == 0, result.stderr
    after = {
        k: (o.last_modified, o.etag) for k, o in _outputs(S.list_objects(env.root, BUCKET, PREFIX), PREFIX).items()
    }
    assert after == before, "a re-run rewrote or added outputs"
    m = S.get_json(env.root, BUCKET, layout.shard_manifest_key(PREFIX, 0))
    c = m["counts"]
    assert c["done"] > 0 and c["skipped"] == c["done"], c
    progress = S.get_json(env.root, BUCKET, layout.progress_key(PREFIX, 0))
    assert progress["skipped"] == c["skipped"] and progress["finished"] is True


def test_deterministic_across_runs_and_shard_counts(env: Env, first_run: dict[str, Any]) -> None:
    prefix = "raw/ct-cohort-1-again/"
    user = S.scoped_user(env.minio, BUCKET, prefix)
    (result,) = S.run_workers([S.worker_env(env.spec(prefix, shards=1), 0, user, env.source_auth)])
    assert result.returncode == 0, result.stderr
    first = {k[len(PREFIX) :]: S.get_bytes(env.root, BUCKET, k) for k in _outputs(first_run["objects"], PREFIX)}
    again_objects = _outputs(S.list_objects(env.root, BUCKET, prefix), prefix)
    again = {k[len(prefix) :]: S.get_bytes(env.root, BUCKET, k) for k in again_objects}
    assert again.keys() == first.keys()
    assert again == first, "same key and input gave different bytes"


def test_studies_filter_intersected_with_query(env: Env) -> None:
    by_patient = {str(_read(d).PatientID): str(_read(d).StudyInstanceUID) for d in env.originals.values()}
    prefix = "raw/filtered/"
    user = S.scoped_user(env.minio, BUCKET, prefix)
    spec = env.spec(prefix, shards=1, studies=[by_patient["1CT1"], by_patient["4MR1"]], query={"Modality": "CT"})
    (result,) = S.run_workers([S.worker_env(spec, 0, user, env.source_auth)])
    assert result.returncode == 0, result.stderr
    m = S.get_json(env.root, BUCKET, layout.shard_manifest_key(prefix, 0))
    # only the CT study (three instances of one series) is in both the list and the query result;
    # study-level "Modality" is sent as ModalitiesInStudy (Orthanc matches nothing for Modality on /studies)
    assert m["counts"]["discovered"] == 3 and m["counts"]["done"] == 3, m["counts"]


def test_scoped_credential_cannot_write_outside_prefix(env: Env) -> None:
    client = env.scoped(env.user)
    for key in ("outside.txt", "raw/other-cohort/x.dcm", "raw/ct-cohort-1"):
        with pytest.raises(S3Error) as err:
            client.put_object(BUCKET, key, io.BytesIO(b"x"), 1)
        assert err.value.code == "AccessDenied", key
    with pytest.raises(S3Error) as err:
        list(client.list_objects(BUCKET))
    assert err.value.code == "AccessDenied"
    client.put_object(BUCKET, f"{PREFIX}_enclave/probe", io.BytesIO(b"x"), 1)  # inside: allowed
    env.root.remove_object(BUCKET, f"{PREFIX}_enclave/probe")
    # and the worker, pointed outside its credential's prefix, fails fatally before doing anything
    (result,) = S.run_workers([S.worker_env(env.spec("raw/other-cohort/"), 0, env.user, env.source_auth)])
    assert result.returncode == 1, result.stderr
    assert "destination refused a write" in result.stderr
    assert not S.list_objects(env.root, BUCKET, "raw/other-cohort/")


def test_wrong_source_password_is_fatal_and_not_logged(env: Env) -> None:
    password = "Wr0ng-" + secrets.token_urlsafe(12)
    prefix = "raw/wrong-pw/"
    user = S.scoped_user(env.minio, BUCKET, prefix)
    (result,) = S.run_workers([S.worker_env(env.spec(prefix), 0, user, (env.orthanc["username"], password))])
    assert result.returncode == 1, result.stderr
    assert "source refused the credentials (HTTP 401)" in result.stderr
    for secret in (password, env.orthanc["password"], user[1], S.DEID_KEY):
        assert secret not in result.stderr
    progress = S.get_json(env.root, BUCKET, layout.progress_key(prefix, 0))
    assert progress["finished"] is False


@pytest.mark.parametrize(
    ("drop", "change", "needle"),
    [
        ("JOB_COMPLETION_INDEX", {}, "JOB_COMPLETION_INDEX is not set"),
        ("DEID_KEY", {}, "DEID_KEY is not set"),
        ("AWS_SECRET_ACCESS_KEY", {}, "AWS_SECRET_ACCESS_KEY is not set"),
        ("INGEST_SPEC", {}, "INGEST_SPEC is not set"),
        (None, {"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX must be an integer in 0..shards-1"),
        (None, {"DEID_KEY": "abc"}, "DEID_KEY must hold at least 32 hex digits"),
        (None, {"INGEST_SPEC": "{not json"}, "INGEST_SPEC is not valid JSON"),
    ],
    ids=["no-index", "no-key", "no-dest-secret", "no-spec", "index-out-of-range", "short-key", "spec-not-json"],
)
def test_usage_errors_exit_2_naming_the_variable(
    env: Env, drop: str | None, change: dict[str, str], needle: str
) -> None:
    e = S.worker_env(env.spec(), 0, env.user, env.source_auth)
    if drop:
        e.pop(drop)
    e.update(change)
    (result,) = S.run_workers([e])
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert env.user[1] not in result.stderr and S.DEID_KEY not in result.stderr


def test_bad_spec_field_is_named(env: Env) -> None:
    spec = env.spec()
    spec["destination"].pop("bucket")
    (result,) = S.run_workers([S.worker_env(spec, 0, env.user, env.source_auth)])
    assert result.returncode == 2 and "INGEST_SPEC: destination.bucket is required" in result.stderr


def test_s3_source_gives_the_same_outputs(env: Env, first_run: dict[str, Any]) -> None:
    source_bucket = "pacs-export"
    env.root.make_bucket(source_bucket)
    for sop, data in env.originals.items():
        env.root.put_object(source_bucket, f"export/{sop}.dcm", io.BytesIO(data), len(data))
    env.root.put_object(source_bucket, "export/README.txt", io.BytesIO(b"not dicom"), 9)
    reader = S.scoped_user(env.minio, BUCKET, "raw/from-s3/", read_bucket=source_bucket)
    spec = env.spec("raw/from-s3/", shards=1)
    spec["source"] = {
        "kind": "s3",
        "endpoint": env.minio["endpoint"],
        "secure": False,
        "bucket": source_bucket,
        "prefix": "export/",
        "format": "dicom",
    }
    (result,) = S.run_workers([S.worker_env(spec, 0, reader, reader)])
    assert result.returncode == 0, result.stderr
    m = S.get_json(env.root, BUCKET, layout.shard_manifest_key("raw/from-s3/", 0))
    assert m["counts"] | {"bytes": 0} == {
        "discovered": 8, "done": 5, "skipped": 0, "quarantined": 2, "failed": 1, "bytes": 0,
    }  # fmt: skip
    assert [f["reason"] for f in m["failed"]] == ["unreadable DICOM (InvalidDicomError)"]
    from_s3 = {o["path"][len("raw/from-s3/") :]: o["sha256"] for o in m["outputs"]}
    first = {}
    for i in range(2):
        for o in S.get_json(env.root, BUCKET, layout.shard_manifest_key(PREFIX, i))["outputs"]:
            first[o["path"][len(PREFIX) :]] = o["sha256"]
    assert from_s3 == first, "the same instances from S3 and DICOMweb gave different outputs"
    assert "README" not in json.dumps(m) and "export/" not in json.dumps(m) + result.stderr


def test_item_failures_are_retried_then_reported(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: a flaky source item recovers after retries; a dead one is counted failed, not fatal."""
    prefix = "raw/flaky/"
    user = S.scoped_user(env.minio, BUCKET, prefix)
    e = S.worker_env(env.spec(prefix, shards=1), 0, user, env.source_auth)
    monkeypatch.setattr("enclave_operator.ingest.worker.backoff", lambda attempt: 0.01)
    shard = ShardRun(specmod.load(e), concurrency=2)
    calls: dict[str, int] = {}
    real_fetch = shard.source.fetch
    items = sorted(shard.source.discover(), key=lambda it: it.stable_key)
    flaky, dead = items[0].stable_key, items[1].stable_key

    def fetch(item: Item) -> Any:
        calls[item.stable_key] = calls.get(item.stable_key, 0) + 1
        if item.stable_key == flaky and calls[item.stable_key] <= 2:
            raise FetchError("fetch failed: HTTP 503")
        if item.stable_key == dead:
            raise FetchError("fetch failed: HTTP 503")
        return real_fetch(item)

    monkeypatch.setattr(shard.source, "fetch", fetch)
    assert shard.run() == 0
    assert calls[flaky] == 3 and calls[dead] == 3  # retries=2 -> three attempts
    m = S.get_json(env.root, BUCKET, layout.shard_manifest_key(prefix, 0))
    assert m["failed"] == [{"reason": "fetch failed: HTTP 503"}]
    assert m["counts"]["failed"] == 1 and m["counts"]["discovered"] == 7


def test_s3_fhir_ndjson_source_two_shards(env: Env) -> None:
    """FHIR NDJSON split over objects: every shard indexes all Patients, so cross-object dates still shift."""
    source_bucket, prefix = "fhir-export", "raw/fhir/"
    env.root.make_bucket(source_bucket)
    resources = S.fhir_resources()
    objects = {
        "export/Patient.ndjson": resources[:2],  # Patient + Practitioner
        "export/Encounter.ndjson": resources[2:3],
        "export/Observation.ndjson": resources[3:],
    }
    for name, items in objects.items():
        body = "".join(json.dumps(r) + "\n" for r in items).encode()
        env.root.put_object(source_bucket, name, io.BytesIO(body), len(body))
    env.root.put_object(source_bucket, "export/broken.json", io.BytesIO(b"{not json"), 9)
    user = S.scoped_user(env.minio, BUCKET, prefix, read_bucket=source_bucket)
    spec = env.spec(prefix, shards=2)
    spec["source"] = {"kind": "s3", "endpoint": env.minio["endpoint"], "secure": False, "bucket": source_bucket,
                      "prefix": "export/", "format": "fhir"}  # fmt: skip
    results = S.run_workers([S.worker_env(spec, i, user, user) for i in range(2)])
    for r in results:
        assert r.returncode == 0, r.stderr
    manifests = [S.get_json(env.root, BUCKET, layout.shard_manifest_key(prefix, i)) for i in range(2)]
    merged = layout.merge_manifests(manifests, ingest="x/y", approver=None, started="s", finished="f", source_name="s3")
    assert merged["counts"] | {"bytes": 0} == {
        "discovered": 4, "done": 3, "skipped": 0, "quarantined": 0, "failed": 1, "bytes": 0,
    }  # fmt: skip
    assert [f["reason"] for f in merged["failed"]] == ["unreadable FHIR (invalid JSON)"]
    keys = Keys(S.DEID_KEY.encode())
    pid = keys.hash_id("pat-123", "fhir-id")
    outputs = {o["path"]: json.loads(S.get_bytes(env.root, BUCKET, o["path"])) for o in merged["outputs"]}
    assert all(o["kind"] == "fhir" for o in merged["outputs"])
    by_type = {v["resourceType"]: v for v in outputs.values()}
    assert set(by_type) == {"Patient", "Practitioner", "Encounter", "Observation"}
    for path, res in outputs.items():
        assert path == layout.fhir_key(prefix, res["resourceType"], res["id"])
    assert by_type["Observation"]["subject"]["reference"] == f"Patient/{pid}" == f"Patient/{by_type['Patient']['id']}"
    # the Patient lives in another object (maybe another shard): its dates are still shifted, not redacted
    shift = keys.shift_days(S.MRN)
    assert by_type["Observation"]["effectiveDateTime"].startswith(
        str(Keys.shift_date(__import__("datetime").date(2021, 3, 15), shift))
    )
    text = json.dumps(outputs) + json.dumps(merged) + "".join(r.stderr for r in results)
    assert not [v for v in S.FHIR_IDENTIFYING if v in text], "identifying FHIR value in output, manifest or log"
    assert "export/" not in json.dumps(merged)


def test_trusted_secondary_capture_class_is_ingested_and_recorded(env: Env) -> None:
    """A source declared to deliver clean secondary captures (operator configuration, issue 13): the SC
    instance from Orthanc is de-identified, verified and written; the manifest names who trusted the class
    and why; the MR (quarantined for its ImageType, a class nobody trusted) stays quarantined."""
    prefix = "raw/derived-maps/"
    trust = {"sopClassUid": "1.2.840.10008.5.1.4.1.1.7", "configuredBy": "pat (platform team)",
             "reason": "derived maps from the validated pipeline"}  # fmt: skip
    spec = env.spec(prefix=prefix, shards=1)
    spec["deidentification"]["pixels"] = {"trustedSopClasses": [trust]}
    (result,) = S.run_workers([S.worker_env(spec, 0, S.scoped_user(env.minio, BUCKET, prefix), env.source_auth)])
    assert result.returncode == 0, result.stderr
    manifest = S.get_json(env.root, BUCKET, layout.shard_manifest_key(prefix, 0))
    assert manifest["counts"]["done"] == 6 and manifest["counts"]["quarantined"] == 1
    assert manifest["engine"]["options"]["trustedSopClasses"] == [trust]
    admitted = [o for o in manifest["outputs"] if o.get("trustedSopClass")]
    assert [o["trustedSopClass"] for o in admitted] == [trust["sopClassUid"]]
    written = _read(S.get_bytes(env.root, BUCKET, admitted[0]["path"]))
    assert written.SOPClassUID == trust["sopClassUid"] and written.PatientIdentityRemoved == "YES"
    assert manifest["quarantined"] == [{"reason": "burned-in annotation risk: ImageType contains SECONDARY"}]
