"""FHIR R4 rule engine: default rules on realistic bundles, rule semantics, NDJSON, DICOM linkage."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import pytest

from enclave_operator.deid.config import parse_config
from enclave_operator.deid.dicom import DicomDeidentifier
from enclave_operator.deid.fhir import (
    DEFAULT_RULES,
    FhirDeidentifier,
    FhirFindings,
    run_fhir,
    shift_fhir_date,
    validate_resource,
    verify_fhir,
)
from enclave_operator.deid.keys import Keys
from support.deid_helpers import make_instance

pytestmark = pytest.mark.unit

MRN = "PID-0001"  # same patient as conftest.make_instance()
STUDY_UID = "1.2.826.0.1.3680043.10.99.4242"
SERIES_UID = "1.2.826.0.1.3680043.10.99.4243"
SOP_UID = "1.2.826.0.1.3680043.10.99.4244"


def bundle() -> dict:
    patient = {
        "resourceType": "Patient",
        "id": "pat-123",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Johnathan Smithson</div>',
        },
        "extension": [{"url": "http://example.org/fhir/StructureDefinition/birthplace", "valueString": "Smallville"}],
        "identifier": [
            {"system": "http://hospital.example/ssn", "value": "123-45-6789"},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "http://hospital.example/mrn",
                "value": MRN,
            },
        ],
        "name": [{"family": "Smithson", "given": ["Johnathan"]}],
        "telecom": [{"system": "phone", "value": "+1-555-0101-222"}],
        "gender": "male",
        "birthDate": "1961-04-12",
        "address": [{"line": ["42 Wallaby Way"], "city": "Springfield", "postalCode": "99999"}],
        "generalPractitioner": [{"reference": "Practitioner/dr-1", "display": "Dr James Watson"}],
    }
    practitioner = {
        "resourceType": "Practitioner",
        "id": "dr-1",
        "name": [{"family": "Watson", "given": ["James"]}],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/pat-123", "display": "Johnathan Smithson"},
        "participant": [{"individual": {"reference": "Practitioner/dr-1"}}],
        "period": {"start": "2021-03-15T08:00:00+01:00", "end": "2021-03-15T09:30:00+01:00"},
    }
    observation = {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
            "text": "HR taken by Watson",
        },
        "subject": {"reference": "Patient/pat-123"},
        "encounter": {"reference": "Encounter/enc-1"},
        "effectiveDateTime": "2021-03-15T08:15:00+01:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "note": [{"text": "Johnathan was anxious"}],
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": "rep-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "Chest CT"}]},
        "subject": {"reference": "Patient/pat-123"},
        "encounter": {"reference": "Encounter/enc-1"},
        "effectiveDateTime": "2021-03-15",
        "issued": "2021-03-16T10:00:00Z",
        "result": [{"reference": "Observation/obs-1"}],
        "imagingStudy": [{"reference": "ImagingStudy/img-1"}],
        "conclusion": "No acute findings for Mr Smithson",
    }
    imaging = {
        "resourceType": "ImagingStudy",
        "id": "img-1",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}],
        "subject": {"reference": "Patient/pat-123"},
        "started": "2021-03-15T08:05:00+01:00",
        "description": "CT chest Smithson",
        "series": [
            {
                "uid": SERIES_UID,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                "instance": [
                    {
                        "uid": SOP_UID,
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    }
                ],
            }
        ],
    }
    entries = [patient, practitioner, encounter, observation, report, imaging]
    return {
        "resourceType": "Bundle",
        "id": "bundle-1",
        "type": "collection",
        "timestamp": "2021-03-17T00:00:00Z",
        "entry": [
            {"fullUrl": f"http://hospital.example/fhir/{r['resourceType']}/{r['id']}", "resource": r} for r in entries
        ],
    }


def _engine(keys: Keys, **fhir) -> FhirDeidentifier:
    eng = FhirDeidentifier(parse_config({"fhir": fhir}).fhir, keys)
    return eng


def _run(keys: Keys, obj: dict, **fhir) -> tuple[dict, FhirFindings]:
    eng = _engine(keys, **fhir)
    eng.register_all(obj)
    f = FhirFindings()
    return eng.deidentify_any(obj, f), f


def test_input_bundle_is_valid_fhir() -> None:
    for e in bundle()["entry"]:
        assert validate_resource(e["resource"]) == [], e["resource"]["resourceType"]


def test_default_rules_remove_direct_identifiers(keys: Keys) -> None:
    out, findings = _run(keys, bundle())
    text = json.dumps(out)
    for secret in (
        "Smithson",
        "Johnathan",
        "Watson",
        "Wallaby",
        "Springfield",
        "555-0101",
        "123-45-6789",
        MRN,
        "pat-123",
        "hospital.example/fhir",
        "Smallville",
        "anxious",
        "1961-04-12",
        STUDY_UID,
    ):
        assert secret not in text, f"{secret} must not survive"
    assert verify_fhir(out, findings, "b") == []
    pat = out["entry"][0]["resource"]
    assert "name" not in pat and "address" not in pat and "telecom" not in pat and "text" not in pat
    assert "extension" not in pat
    assert pat["gender"] == "male"
    for e in out["entry"]:
        assert validate_resource(e["resource"]) == [], "outputs stay valid FHIR"


def test_references_resolve_inside_bundle(keys: Keys) -> None:
    out, _ = _run(keys, bundle())
    by_type = {e["resource"]["resourceType"]: e for e in out["entry"]}
    pid = by_type["Patient"]["resource"]["id"]
    assert by_type["Encounter"]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert by_type["Patient"]["fullUrl"].endswith(f"/Patient/{pid}")
    assert by_type["Observation"]["resource"]["encounter"]["reference"] == (
        f"Encounter/{by_type['Encounter']['resource']['id']}"
    )
    assert by_type["DiagnosticReport"]["resource"]["imagingStudy"][0]["reference"] == (
        f"ImagingStudy/{by_type['ImagingStudy']['resource']['id']}"
    )
    assert "display" not in by_type["Encounter"]["resource"]["subject"]


def test_same_shift_and_ids_as_dicom(keys: Keys) -> None:
    """A patient in DICOM (PatientID) and FHIR (MRN identifier) shifts identically; UIDs agree."""
    out, _ = _run(keys, bundle())
    ds = make_instance(
        patient_id=MRN, study_uid=STUDY_UID, series_uid=SERIES_UID, sop_uid=SOP_UID, study_date="20210315"
    )
    DicomDeidentifier(parse_config({}).dicom, keys).deidentify(ds)
    enc = out["entry"][2]["resource"]
    shifted = date.fromisoformat(enc["period"]["start"][:10])
    assert shifted.strftime("%Y%m%d") == ds.StudyDate
    assert enc["period"]["start"][10:] == "T08:00:00+01:00", "time of day and zone kept"
    img = out["entry"][5]["resource"]
    assert img["identifier"][0]["value"] == f"urn:oid:{ds.StudyInstanceUID}"
    assert img["series"][0]["uid"] == ds.SeriesInstanceUID
    assert img["series"][0]["instance"][0]["uid"] == ds.SOPInstanceUID
    mrn = next(i for i in out["entry"][0]["resource"]["identifier"] if i["system"].endswith("mrn"))
    assert mrn["value"] == ds.PatientID, "MRN hash equals the DICOM pseudonymous PatientID"
    assert img["series"][0]["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize(
    ("rules", "check", "reason"),
    [
        (
            [{"path": "Patient.name", "method": "keep"}, *DEFAULT_RULES],
            lambda p: p["name"][0]["family"] == "Smithson",
            "first match wins: keep before redact",
        ),
        (
            [{"path": "Patient.gender", "method": "substitute", "replaceWith": "unknown"}, *DEFAULT_RULES],
            lambda p: p["gender"] == "unknown",
            "substitute",
        ),
        (
            [
                {
                    "path": "Patient.birthDate",
                    "method": "generalize",
                    "cases": {"$this < @1970-01-01": "'1900'"},
                    "otherValues": "redact",
                },
                *DEFAULT_RULES,
            ],
            lambda p: p["birthDate"] == "1900",
            "generalize by case",
        ),
        (
            [{"path": "Patient.birthDate", "method": "redact"}, *DEFAULT_RULES],
            lambda p: "birthDate" not in p,
            "redact",
        ),
        (
            [
                {
                    "path": "Patient.identifier.where(system='http://hospital.example/ssn')",
                    "method": "redact",
                },
                *DEFAULT_RULES,
            ],
            lambda p: len(p["identifier"]) == 1,
            "where() filters compare real values",
        ),
    ],
)
def test_rule_methods(keys: Keys, rules: list, check, reason: str) -> None:
    out, _ = _run(keys, bundle(), fhirPathRules=rules)
    assert check(out["entry"][0]["resource"]), reason


def test_unresolved_patient_dates_are_redacted(keys: Keys) -> None:
    obs = copy.deepcopy(bundle()["entry"][3]["resource"])
    obs["subject"] = {"reference": "Patient/unknown"}
    eng = _engine(keys)
    out = eng.deidentify_any(obs, FhirFindings())
    assert "effectiveDateTime" not in out
    assert eng.dates_redacted_no_patient == 1


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2021-03-15", -10, "2021-03-05"),
        ("2021-03-15T08:00:00Z", -15, "2021-02-28T08:00:00Z"),
        ("2021-03", -1, "2021-02"),
        ("2021", -1, "2020"),
        ("not a date", -1, None),
    ],
)
def test_shift_fhir_date(value: str, days: int, expected: str | None) -> None:
    assert shift_fhir_date(value, days) == expected


def test_run_fhir_bundle_and_ndjson(tmp_path: Path, key: bytes) -> None:
    b = bundle()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "smithson-bundle.json").write_text(json.dumps(b))
    resources = [e["resource"] for e in b["entry"]]
    (tmp_path / "in" / "export.ndjson").write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    (tmp_path / "in" / "broken.json").write_text("{not json")
    m = run_fhir(tmp_path / "in", tmp_path / "out", parse_config({}), key)
    c = m.counts()
    assert (c["written"], c["skipped"], c["failed"]) == (2, 1, 0)
    assert m.skipped[0] == {"source": "broken.json", "reason": "invalid JSON"}
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not any("smithson" in n.lower() for n in names), "no PHI in output names"
    nd = next(o for o in m.outputs if o["source"] == "export.ndjson")
    lines = (tmp_path / "out" / nd["path"]).read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[2])["subject"]["reference"] == f"Patient/{json.loads(lines[0])['id']}"
    from enclave_operator.deid.fhir import verify_fhir_dirs

    report = verify_fhir_dirs(tmp_path / "in", tmp_path / "out", parse_config({}))
    assert report.leaks == [] and report.errors == [] and report.checked == 7


def test_fhir_leak_fails_run(tmp_path: Path, key: bytes) -> None:
    b = bundle()
    b["entry"][3]["resource"]["code"]["text"] = "HR for Smithson"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.json").write_text(json.dumps(b))
    rules = [{"path": "Observation.code.text", "method": "keep"}, *DEFAULT_RULES]
    m = run_fhir(tmp_path / "in", tmp_path / "out", parse_config({"fhir": {"fhirPathRules": rules}}), key)
    assert m.counts()["failed"] == 1 and not m.outputs
    leak = m.failed[0]["leaks"][0]
    assert leak["path"] == "entry[3].resource.code.text" and leak["kind"] == "name"
    assert "Smithson" not in json.dumps(m.to_dict())
