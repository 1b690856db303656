"""CLI exit codes, manifest contents and the pydicom corpus run (via main(argv), one subprocess)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from enclave_operator.deid.cli import main
from support.deid_helpers import KEY, ct_small, make_instance, write

pytestmark = pytest.mark.unit


def _dicom(tmp_path: Path, key_file: Path, *extra: str) -> int:
    return main(["dicom", "--quiet", "--key-file", str(key_file), *extra, str(tmp_path / "in"), str(tmp_path / "out")])


def test_exit_0_all_clean(tmp_path: Path, key_file: Path) -> None:
    write(make_instance(), tmp_path / "in" / "Smithson_Johnathan" / "1.dcm")
    assert _dicom(tmp_path, key_file) == 0
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    out = m["outputs"][0]
    assert out["source"] == "Smithson_Johnathan/1.dcm"
    assert out["path"].startswith("2.25.") and out["path"].endswith(".dcm")
    assert out["sha256"] == hashlib.sha256((tmp_path / "out" / out["path"]).read_bytes()).hexdigest()
    inner = hmac.new(KEY, b"fingerprint", hashlib.sha256).digest()
    assert m["keyFingerprint"] == hashlib.sha256(inner).hexdigest()[:16]
    assert KEY.decode() not in json.dumps(m)
    assert m["profile"]["name"].startswith("DICOM PS3.15") and m["profile"]["version"].startswith("e11-")
    assert m["engine"]["version"] and m["options"]["retainLongitudinalModifiedDates"] is True
    assert m["counts"]["written"] == 1


def test_exit_3_quarantined_or_unreadable(tmp_path: Path, key_file: Path) -> None:
    write(make_instance(), tmp_path / "in" / "ok.dcm")
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    assert _dicom(tmp_path, key_file) == 3
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["skipped"] == [{"source": "notes.txt", "reason": "not a DICOM Part 10 file"}]


@pytest.mark.parametrize(
    ("config_text", "needle", "reason"),
    [
        ("dicom:\n  options:\n    retainUIDz: true\n", "dicom.options.retainUIDz", "typo names the field"),
        (
            "dicom:\n  options:\n    retainLongitudinalFullDates: true\n",
            "mutually exclusive",
            "two date options at once",
        ),
        (
            "fhir:\n  fhirPathRules:\n    - {path: 'Patient.name', method: scramble}\n",
            "fhir.fhirPathRules.0.method",
            "unknown method",
        ),
        ("dicom: [\n", "not valid YAML", "parse error"),
        (
            "dicom:\n  safePrivateTags:\n    - {group: '0x0008', creator: X, elements: [1]}\n",
            "dicom.safePrivateTags.0.group",
            "private groups are odd",
        ),
    ],
)
def test_exit_2_config_errors(
    tmp_path: Path,
    key_file: Path,
    capsys: pytest.CaptureFixture[str],
    config_text: str,
    needle: str,
    reason: str,
) -> None:
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text)
    assert _dicom(tmp_path, key_file, "--config", str(cfg)) == 2, reason
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv_tail", "reason"),
    [
        (["--key-file", "/nonexistent/key"], "missing key file"),
        ([], "missing required --key-file"),
    ],
)
def test_exit_2_usage(tmp_path: Path, argv_tail: list[str], reason: str) -> None:
    (tmp_path / "in").mkdir()
    assert main(["dicom", *argv_tail, str(tmp_path / "in"), str(tmp_path / "out")]) == 2, reason


def test_short_key_rejected(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "k").write_bytes(b"short")
    assert main(["dicom", "--key-file", str(tmp_path / "k"), str(tmp_path / "in"), str(tmp_path / "out")]) == 2


def test_pydicom_corpus_runs_clean(tmp_path: Path, key_file: Path) -> None:
    """Every bundled pydicom test file: written clean, quarantined or skipped with a reason; none crash."""
    (tmp_path / "in").mkdir()
    files = [f for f in get_testdata_files() if os.path.isfile(f)]
    assert len(files) > 100
    for f in files:
        shutil.copy(f, tmp_path / "in" / os.path.basename(f))
    rc = _dicom(tmp_path, key_file)
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    c = m["counts"]
    assert c["failed"] == 0 and c["leaks"] == 0, m["failed"]
    assert rc in (0, 3)
    assert c["written"] > 50
    assert c["inputs"] == len(list((tmp_path / "in").iterdir())), "nothing silently dropped"
    for q in m["quarantined"]:
        assert q["reasons"]
    for o in m["outputs"]:
        ds = pydicom.dcmread(tmp_path / "out" / o["path"])
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert main(["verify", "--quiet", "--kind", "dicom", str(tmp_path / "in"), str(tmp_path / "out")]) == 0


def test_verify_and_fhir_via_subprocess(tmp_path: Path, key_file: Path) -> None:
    """The console entry point works end to end as a separate process."""
    write(ct_small(), tmp_path / "in" / "ct.dcm")
    cmd = [sys.executable, "-m", "enclave_operator.deid.cli"]
    r = subprocess.run(
        [*cmd, "dicom", "--key-file", str(key_file), str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "written=1" in r.stderr
    r = subprocess.run(
        [*cmd, "verify", "--kind", "dicom", str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["leaks"] == []
    r = subprocess.run([*cmd, "bogus"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2


def test_fhir_command_exit_codes(tmp_path: Path, key_file: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.json").write_text(
        json.dumps(
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [{"value": "MRN-9"}],
                "birthDate": "1970-01-01",
            }
        )
    )
    assert main(["fhir", "--quiet", "--key-file", str(key_file), str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert main(["verify", "--quiet", "--kind", "fhir", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    (tmp_path / "in" / "bad.json").write_text(json.dumps({"resourceType": "Patient", "birthDate": "yesterday"}))
    assert main(["fhir", "--quiet", "--key-file", str(key_file), str(tmp_path / "in"), str(tmp_path / "out")]) == 3
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert "yesterday" not in json.dumps(m), "validation errors never quote input values"
