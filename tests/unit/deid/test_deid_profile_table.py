"""PS3.15 Table E.1-1: the committed table matches the generator, and every row is applied.

Each row of the table is instantiated as a real element (VR from pydicom's dictionary;
repeating groups instantiated at group 0x5000/0x6000; the private row as an odd group),
the engine runs, and the row's action is checked. Expected actions come from the standard's
semantics written out here, independently of profile.resolve_row.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from pydicom.datadict import DicomDictionary, RepeatersDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from enclave_operator.deid.config import parse_config
from enclave_operator.deid.dicom import DicomDeidentifier
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.profile import OPTION_NAMES, load_table

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "operator" / "enclave_operator" / "deid" / "data" / "ps315_table_e11.json"
KEY = Keys(b"table-test-key-0123456789abcdef0123")

# the standard's meaning of combined codes when IOD types are unknown (see profile.py)
BASIC = {
    "X": "X",
    "Z": "Z",
    "D": "D",
    "K": "K",
    "C": "C",
    "U": "U",
    "X/Z": "Z",
    "X/D": "D",
    "Z/D": "D",
    "X/Z/D": "D",
    "X/Z/U*": "K",
}
PSEUDONYM_TAGS = {0x00100010, 0x00100020, 0x00080050}
MASK_TAGS = {"50xxxxxx": 0x50000005, "60xx3000": 0x60003000, "60xx4000": 0x60004000}
PRIVATE_CREATOR, PRIVATE_TAG = 0x00090010, 0x00091001


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_dicom_profile", REPO / "hack" / "gen_dicom_profile.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_table_is_in_the_generators_canonical_form() -> None:
    """The committed table is the source of truth; it must be exactly what the generator renders,
    so a hand edit (or a stale regeneration) shows up here."""
    gen = _load_generator()
    table = json.loads(COMMITTED.read_text())
    assert COMMITTED.read_text() == gen.render(table)
    assert table["source"] == gen.SOURCE_NAME
    assert len(table["sourceSha256"]) == 64


def test_table_has_all_rows_of_the_standard() -> None:
    assert len(load_table().rows) == 621  # PS3.15 Table E.1-1 (2024 editions onwards)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"name": "Patient's Name", "tag": "(0010,0010)", "basicProfile": "Z"},
            ["00100010", "Patient's Name", "Z", {}],
        ),
        (
            {"name": "Study Date", "tag": "(0008,0020)", "basicProfile": "Z", "rtnLongFullDatesOpt": "K",
             "rtnLongModifDatesOpt": "C"},
            ["00080020", "Study Date", "Z", {"retainLongitudinalFullDates": "K",
                                             "retainLongitudinalModifiedDates": "C"}],
        ),
        ({"name": "Overlay Data", "tag": "(60xx,3000)", "basicProfile": "X"}, ["60xx3000", "Overlay Data", "X", {}]),
        (
            {"name": "Private attributes", "tag": "(gggg,eeee) where gggg is odd", "basicProfile": "X",
             "rtnSafePrivOpt": "C"},
            ["private", "Private attributes", "X", {"retainSafePrivate": "C"}],
        ),
    ],
    ids=["plain", "options", "repeating-group", "private"],
)
def test_generator_converts_reference_rows(row: dict, expected: list) -> None:
    gen = _load_generator()
    assert gen.convert([row], "0" * 64)["rows"] == [expected]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"name": "x", "tag": "0010,0010", "basicProfile": "Z"}, "unrecognised tag spelling"),
        ({"name": "x", "tag": "(0010,0010)", "basicProfile": "Q"}, "unknown basic profile action"),
        ({"name": "x", "tag": "(0010,0010)", "basicProfile": "Z", "rtnUIDsOpt": "Z"}, "unknown option action"),
    ],
    ids=["bad-tag", "bad-action", "bad-option"],
)
def test_generator_refuses_rows_it_does_not_understand(row: dict, message: str) -> None:
    gen = _load_generator()
    with pytest.raises(ValueError, match=message):
        gen.convert([row], "0" * 64)


def _tag_for(key: str) -> int:
    if key in MASK_TAGS:
        return MASK_TAGS[key]
    if key == "private":
        return PRIVATE_TAG
    return int(key, 16)


def _vr_for(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    if entry is None:
        for mask, ent in RepeatersDictionary.items():
            m = mask.lower()
            h = f"{tag:08x}"
            if all(a == "x" or a == b for a, b in zip(m, h, strict=True)):
                entry = ent
                break
    if entry is None:
        return "LO"
    return entry[0].split(" or ")[0]


def _value_for(tag: int, vr: str):
    token = f"V{tag:08X}"
    return {
        "PN": f"Fam{tag:08X}^Giv",
        "DA": "20200115",
        "DT": "20200115103000",
        "TM": "103000",
        "UI": f"1.2.826.0.1.3680043.10.{tag}",
        "DS": "1.5",
        "IS": "7",
        "AS": "045Y",
        "US": 5,
        "SS": 5,
        "UL": 5,
        "SL": 5,
        "FL": 1.0,
        "FD": 1.0,
        "OB": b"\x01\x02",
        "OW": b"\x01\x02",
        "UN": b"\x01\x02",
        "CS": "CSVALUE",
        "AE": "AETITLE",
        "UR": "http://example.invalid/x",
        "LT": f"text {token} here",
        "ST": f"text {token} here",
        "UT": f"text {token} here",
    }.get(vr, token)


def _build(rows) -> tuple[Dataset, dict[int, tuple[str, object]]]:
    ds = Dataset()
    originals: dict[int, tuple[str, object]] = {}
    for row in rows:
        tag = _tag_for(row.key)
        if row.key == "private":
            ds.add_new(PRIVATE_CREATOR, "LO", "ACME 1.0")
            ds.add_new(PRIVATE_TAG, "LO", "private value")
            originals[tag] = ("LO", "private value")
            continue
        vr = _vr_for(tag)
        if vr == "SQ":
            item = Dataset()
            item.CodeValue = "T-1234"
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.{tag}.1"
            ds.add_new(tag, "SQ", Sequence([item]))
            originals[tag] = ("SQ", None)
        else:
            value = _value_for(tag, vr)
            ds.add_new(tag, vr, value)
            originals[tag] = (vr, value)
    return ds, originals


def _expected(row, enabled: frozenset[str]) -> str:
    chosen = [code for opt, code in row.options.items() if opt in enabled]
    if chosen:
        return "C" if "C" in chosen else "K"
    return BASIC[row.basic]


def _check(row, action: str, vr: str, original, out: Dataset, engine: DicomDeidentifier, shift: int) -> str | None:
    tag = _tag_for(row.key)
    present = tag in out
    value = out[tag].value if present else None
    if row.key == "private":
        if action == "X":
            return None if not present else "private element kept"
        return None if present else "allow-listed private element removed"
    if action == "X" or (action == "C" and vr in ("OB", "OW", "UN")):
        # binary values cannot be inspected, so "clean" removes them (documented in dicom.py)
        return None if not present else "element should be removed"
    if not present:
        return "element should be present"
    if vr == "SQ":
        if action == "Z":
            return None if len(value) == 0 else "sequence should be empty"
        item_uid = value[0].get("ReferencedSOPInstanceUID") if len(value) else None
        if engine.profile.actions[0x00081155] == "K":
            return None if item_uid else "sequence item lost"
        if not item_uid or not str(item_uid).startswith("2.25."):
            return "sequence items must be walked (nested UID not replaced)"
        return None
    if tag in PSEUDONYM_TAGS and action in ("Z", "D"):
        return None if value and value != original else "pseudonym expected"
    if action == "K":
        return None if value == original else "value should be kept"
    if action == "Z":
        return None if value in ("", None, b"") else "value should be zero-length"
    if action == "U":
        return None if str(value).startswith("2.25.") and value != original else "UID should be replaced"
    if action == "D":
        if value in ("", None, b""):
            return "dummy value must not be empty"
        if vr == "UI":
            return None if str(value).startswith("2.25.") else "dummy UID expected"
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "DS", "IS"):
            return None
        return None if value != original else "value should be replaced by a dummy"
    if action == "C":
        if vr == "DA":
            from datetime import date, timedelta

            want = date(2020, 1, 15) + timedelta(days=shift)
            return None if value == want.strftime("%Y%m%d") else "date should be shifted"
        if vr == "DT":
            return None if value != original and str(value).endswith("103000") else "datetime should be shifted"
        return None if value == original else "cleaned value without identifiers should be kept"
    return f"unknown action {action}"


OPTION_SETS = [frozenset()] + [frozenset({o}) for o in OPTION_NAMES if o != "retainLongitudinalModifiedDates"]


@pytest.mark.parametrize(
    "enabled",
    [frozenset({"retainLongitudinalModifiedDates"}), *OPTION_SETS],
    ids=lambda s: "+".join(sorted(s)) or "basic",
)
def test_every_row_is_applied(enabled: frozenset[str]) -> None:
    """Reason per case: each option column changes only its rows; every row must end as resolved."""
    table = load_table()
    opts = {name: (name in enabled) for name in OPTION_NAMES}
    cfg = parse_config(
        {
            "dicom": {
                "options": opts,
                "safePrivateTags": [{"group": "0x0009", "creator": "ACME 1.0", "elements": ["0x01"]}],
            }
        }
    )
    engine = DicomDeidentifier(cfg.dicom, KEY)
    ds, originals = _build(table.rows)
    ds.PatientID = "TABLE-PATIENT"
    originals[0x00100020] = ("LO", "TABLE-PATIENT")
    shift = KEY.shift_days("TABLE-PATIENT")
    engine.deidentify(ds)
    failures = []
    for row in table.rows:
        action = _expected(row, enabled)
        if row.key == "private":
            action = "X" if "retainSafePrivate" not in enabled else "K"
        vr, original = originals[_tag_for(row.key)]
        problem = _check(row, action, vr, original, ds, engine, shift)
        if problem:
            failures.append(f"{row.key} {row.name} [{row.basic}->{action}, {vr}]: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("key", "enabled", "expected", "reason"),
    [
        ("00100010", frozenset(), "Z", "Patient's Name is Z in the basic profile"),
        ("00081140", frozenset(), "K", "X/Z/U*: keep the sequence, its UIDs are replaced by their own rows"),
        ("00080020", frozenset({"retainLongitudinalModifiedDates"}), "C", "Study Date is shifted"),
        ("00080020", frozenset({"retainLongitudinalFullDates"}), "K", "full dates retained"),
        ("00102110", frozenset({"retainPatientCharacteristics", "cleanDescriptors"}), "C", "C beats K"),
        ("00102160", frozenset({"retainPatientCharacteristics"}), "K", "Ethnic Group retained"),
        ("0020000d", frozenset({"retainUIDs"}), "K", "UIDs retained"),
    ],
)
def test_option_resolution(key: str, enabled: frozenset[str], expected: str, reason: str) -> None:
    from enclave_operator.deid.profile import resolve_row

    row = next(r for r in load_table().rows if r.key == key)
    assert resolve_row(row, enabled) == expected, reason
