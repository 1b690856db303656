"""The worker's environment contract: every error names the variable or field, never a value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave_operator.ingest import spec as specmod

pytestmark = pytest.mark.unit

KEY = "0f" * 32


def base_spec() -> dict[str, Any]:
    return {
        "ingest": "oncology/ct-cohort-1",
        "source": {"kind": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web", "studies": ["1.2.3"],
                   "query": {"Modality": "CT", "StudyDate": "20240101-20241231"}},
        "deidentification": {"profile": "basic", "options": ["retainLongitudinalModifiedDates"]},
        "destination": {"endpoint": "127.0.0.1:9000", "secure": False, "bucket": "onco-flow", "prefix": "raw/c1"},
        "shards": 4,
        "retries": 3,
    }  # fmt: skip


def env(spec: dict[str, Any] | None = None, **over: str) -> dict[str, str]:
    e = {
        "INGEST_SPEC": json.dumps(spec or base_spec()),
        "JOB_COMPLETION_INDEX": "3",
        "AWS_ACCESS_KEY_ID": "ak",
        "AWS_SECRET_ACCESS_KEY": "sk-secret-value",
        "DEID_KEY": KEY,
        "SOURCE_USERNAME": "u",
        "SOURCE_PASSWORD": "p-secret-value",
    }
    e.update(over)
    return {k: v for k, v in e.items() if v != "<unset>"}


def test_valid_contract() -> None:
    s = specmod.load(env())
    assert (s.index, s.shards, s.retries, s.destination.prefix) == (3, 4, 3, "raw/c1/")
    assert s.source.studies == ("1.2.3",) and s.source.query["Modality"] == "CT"  # type: ignore[union-attr]
    assert s.key == KEY.encode() and s.options == ("retainLongitudinalModifiedDates",)
    assert s.config.dicom.options.retainLongitudinalModifiedDates and not s.config.dicom.options.retainUIDs
    assert "p-secret-value" not in repr(s) and "sk-secret-value" not in repr(s) and KEY not in repr(s)


def mutate(path: str, value: Any) -> dict[str, Any]:
    s = base_spec()
    node = s
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if value is ...:
        node.pop(parts[-1])
    else:
        node[parts[-1]] = value
    return s


@pytest.mark.parametrize(
    ("e", "message"),
    [
        (env(INGEST_SPEC="<unset>"), "INGEST_SPEC is not set"),
        (env(INGEST_SPEC="[1]"), "INGEST_SPEC must be a JSON object"),
        (env(JOB_COMPLETION_INDEX="<unset>"), "JOB_COMPLETION_INDEX is not set"),
        (env(JOB_COMPLETION_INDEX="4"), "JOB_COMPLETION_INDEX must be an integer in 0..shards-1"),  # shards=4
        (env(JOB_COMPLETION_INDEX="-1"), "JOB_COMPLETION_INDEX must be an integer"),
        (env(DEID_KEY="zz" * 32), "DEID_KEY must be a hex string"),
        (env(AWS_ACCESS_KEY_ID="<unset>"), "AWS_ACCESS_KEY_ID is not set"),
        (env(SOURCE_PASSWORD="<unset>"), "SOURCE_USERNAME and SOURCE_PASSWORD must be set together"),
        (env(mutate("ingest", "no-namespace")), "ingest must be '<namespace>/<name>'"),
        (env(mutate("source.kind", "ftp")), "source.kind must be 'dicomweb' or 's3'"),
        (env(mutate("source.url", "http://u:pw@pacs/dicom-web")), "source.url must not hold credentials"),
        (env(mutate("source.studies", "1.2.3")), "source.studies must be a list"),
        (env(mutate("source.query", {"Modality": ["CT"]})), "source.query must map"),
        (env(mutate("source.colour", 1)), "source.colour is not a known field"),
        (env(mutate("deidentification.profile", "strict")), "deidentification.profile must be one of"),
        (env(mutate("deidentification.options", ["retainUIDz"])), "deidentification.options[0] is not a known"),
        (
            env(mutate("deidentification.options", ["retainLongitudinalFullDates", "retainLongitudinalModifiedDates"])),
            "mutually exclusive",
        ),
        (env(mutate("deidentification.pixels", {"riskyModalities": []})), "pixels may only hold trustedSopClasses"),
        (
            env(mutate("deidentification.pixels", {"trustedSopClasses": [{"sopClassUid": "1.2", "reason": "x"}]})),
            "trustedSopClasses.0.configuredBy",
        ),
        (env(mutate("destination.bucket", ...)), "destination.bucket is required"),
        (env(mutate("destination.prefix", "")), "destination.prefix must be a non-empty string"),
        (env(mutate("destination.prefix", "a/../b")), "destination.prefix must not contain '..'"),
        (env(mutate("destination.endpoint", "http://h:9000/path")), "destination.endpoint must be host[:port]"),
        (env(mutate("destination.secure", "no")), "destination.secure must be a boolean"),
        (env(mutate("shards", 0)), "shards must be an integer in 1.."),
        (env(mutate("retries", True)), "retries must be an integer"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_errors_name_the_field(e: dict[str, str], message: str) -> None:
    with pytest.raises(specmod.UsageError) as err:
        specmod.load(e)
    assert message in str(err.value)
    assert "secret-value" not in str(err.value) and KEY not in str(err.value)


def test_options_list_is_the_complete_set() -> None:
    # an explicit empty list turns the default date option off (dates are then removed, not shifted)
    s = specmod.load(env(mutate("deidentification.options", [])))
    assert not s.config.dicom.options.retainLongitudinalModifiedDates
    s = specmod.load(env(mutate("deidentification", {"profile": "basic"})))
    assert s.options is None and s.config.dicom.options.retainLongitudinalModifiedDates


def test_s3_source_and_endpoint_scheme_is_stripped() -> None:
    spec = base_spec()
    spec["source"] = {"kind": "s3", "endpoint": "http://127.0.0.1:9000", "secure": False, "bucket": "b",
                      "prefix": "export", "format": "dicom"}  # fmt: skip
    s = specmod.load(env(spec))
    assert s.source.endpoint == "127.0.0.1:9000" and s.source.prefix == "export/"  # type: ignore[union-attr]


def test_source_trust_reaches_the_worker() -> None:
    """A source's trustedSopClasses (platform configuration) travel in INGEST_SPEC to the engine's config."""
    from enclave_operator.api.data_ingest import DataIngestSpec
    from enclave_operator.ingest import job
    from enclave_operator.settings import IngestSourceSettings

    trust = {"sopClassUid": "1.2.840.10008.5.1.4.1.1.7", "configuredBy": "pat", "reason": "derived maps"}
    source = IngestSourceSettings.model_validate(
        {"name": "maps", "kind": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web", "trustedSopClasses": [trust]}
    )
    spec = DataIngestSpec.model_validate(
        {"project": "onco", "source": {"name": "maps", "dicomweb": {}}, "destination": {"prefix": "raw/maps/"}}
    )
    worker = job.worker_spec(ref="onco/maps-1", spec=spec, source=source, bucket="onco", s3_endpoint="127.0.0.1:9000",
                             s3_secure=False)  # fmt: skip
    loaded = specmod.load(env(worker, JOB_COMPLETION_INDEX="0"))
    assert [t.model_dump() for t in loaded.config.dicom.pixels.trustedSopClasses] == [trust]
    plain = IngestSourceSettings.model_validate({"name": "pacs", "kind": "dicomweb", "url": "http://x/dicom-web"})
    worker = job.worker_spec(ref="onco/x", spec=spec, source=plain, bucket="onco", s3_endpoint="h:9000",
                             s3_secure=False)  # fmt: skip
    assert "pixels" not in worker["deidentification"]
