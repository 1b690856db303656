#!/usr/bin/env python3
"""Generate the project's compact copy of DICOM PS3.15 Table E.1-1.

The committed table ``operator/enclave_operator/deid/data/ps315_table_e11.json`` is the engine's
source of truth: the repository needs nothing outside itself, at run time or in tests. It was made
by this script from the machine-readable extraction of the standard published by
innolitics/dicom-standard (MIT licence), file ``standard/confidentiality_profile_attributes.json``
(621 rows); the table records that file's SHA-256 in ``sourceSha256``. Reviewers get a small,
diffable file; the unit tests check the converter on inline rows and that the committed file is in
this script's canonical rendering.

Usage (when the standard publishes a new edition: fetch that file, then):
``python hack/gen_dicom_profile.py --source confidentiality_profile_attributes.json [--output PATH] [--check]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_NAME = "innolitics/dicom-standard standard/confidentiality_profile_attributes.json (MIT)"
DEFAULT_OUTPUT = REPO / "operator" / "enclave_operator" / "deid" / "data" / "ps315_table_e11.json"

#: reference column -> our option name (the config / manifest spelling)
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "retainSafePrivate",
    "rtnUIDsOpt": "retainUIDs",
    "rtnDevIdOpt": "retainDeviceIdentity",
    "rtnInstIdOpt": "retainInstitutionIdentity",
    "rtnPatCharsOpt": "retainPatientCharacteristics",
    "rtnLongFullDatesOpt": "retainLongitudinalFullDates",
    "rtnLongModifDatesOpt": "retainLongitudinalModifiedDates",
    "cleanDescOpt": "cleanDescriptors",
    "cleanStructContOpt": "cleanStructuredContent",
    "cleanGraphOpt": "cleanGraphics",
}
BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
OPTION_ACTIONS = {"K", "C"}
_TAG_RE = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
PRIVATE_KEY = "private"


def convert(rows: list[dict], source_sha256: str) -> dict:
    """Return the compact table: rows of [key, name, basic action, {option: action}]."""
    out_rows = []
    for row in rows:
        tag = row["tag"].strip().upper()
        m = _TAG_RE.fullmatch(tag)
        if m:
            key = (m.group(1) + m.group(2)).lower()
        elif "GGGG" in tag and "ODD" in tag:
            key = PRIVATE_KEY
        else:
            raise ValueError(f"unrecognised tag spelling in reference row {row.get('name')!r}: {tag!r}")
        basic = row["basicProfile"].strip()
        if basic not in BASIC_ACTIONS:
            raise ValueError(f"unknown basic profile action {basic!r} for {key}")
        opts = {}
        for col, name in OPTION_COLUMNS.items():
            val = row.get(col)
            if val:
                if val not in OPTION_ACTIONS:
                    raise ValueError(f"unknown option action {val!r} in {col} for {key}")
                opts[name] = val
        out_rows.append([key, row["name"], basic, opts])
    out_rows.sort(key=lambda r: r[0])
    keys = [r[0] for r in out_rows]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate tags in reference table")
    return {
        "table": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "source": SOURCE_NAME,
        "sourceSha256": source_sha256,
        "options": list(OPTION_COLUMNS.values()),
        "rows": out_rows,
    }


def render(table: dict) -> str:
    """Serialise with one row per line so diffs stay readable."""
    head = {k: v for k, v in table.items() if k != "rows"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "rows": [')
    rows = table["rows"]
    for i, r in enumerate(rows):
        sep = "," if i < len(rows) - 1 else ""
        lines.append("    " + json.dumps(r, separators=(", ", ": "), sort_keys=False) + sep)
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(source: Path) -> str:
    """Read the reference file and return the rendered compact table text."""
    raw = source.read_bytes()
    rows = json.loads(raw)
    return render(convert(rows, hashlib.sha256(raw).hexdigest()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source", type=Path, required=True, help="the extraction's confidentiality_profile_attributes.json"
    )
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed table is stale")
    args = ap.parse_args(argv)
    if not args.source.is_file():
        print(f"reference table not found: {args.source}", file=sys.stderr)
        return 2
    text = generate(args.source)
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale; run hack/gen_dicom_profile.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {len(json.loads(text)['rows'])} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
