"""PS3.15 Table E.1-1 loading and option resolution.

Why a separate module: the engine's hot loop must only do ``dict.get(tag)``.
Everything that depends on the table text, the combined action codes and the
enabled options is resolved here, once per run, into a :class:`ResolvedProfile`.

Resolved action codes (one letter each, used by the engine):

* ``X`` remove the element.
* ``Z`` replace with a zero-length value (an empty sequence for SQ).
* ``D`` replace with a non-empty dummy value of the same VR (for SQ: keep the
  sequence and de-identify its items, see below).
* ``K`` keep the value (sequences are still walked).
* ``C`` clean: dates are shifted, text is scrubbed of the instance's identifying
  values, sequences are walked, binary values that cannot be cleaned are removed.
* ``U`` replace every UID value with the keyed hash UID.

Combined basic-profile codes are resolved without IOD type knowledge towards the
choice that keeps the object valid while removing the content: ``X/Z`` -> ``Z``;
``X/D``, ``Z/D`` and ``X/Z/D`` -> ``D``; ``X/Z/U*`` -> keep the sequence and
walk it (its UIDs are replaced by their own ``U`` rows).

When several enabled options name the same row, ``C`` beats ``K`` (the less
retentive choice wins). Retaining full dates and modifying dates are exclusive
(the config rejects enabling both).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from pydicom.datadict import DicomDictionary

PROFILE_NAME = "DICOM PS3.15 E.1-1 Basic Application Level Confidentiality Profile"
TABLE_RESOURCE = "ps315_table_e11.json"

OPTION_NAMES: tuple[str, ...] = (
    "retainSafePrivate",
    "retainUIDs",
    "retainDeviceIdentity",
    "retainInstitutionIdentity",
    "retainPatientCharacteristics",
    "retainLongitudinalFullDates",
    "retainLongitudinalModifiedDates",
    "cleanDescriptors",
    "cleanStructuredContent",
    "cleanGraphics",
)

#: PS3.16 CID 7050 De-identification Method codes (scheme DCM) for each option.
OPTION_CODES: dict[str, tuple[str, str]] = {
    "cleanGraphics": ("113103", "Clean Graphics Option"),
    "cleanStructuredContent": ("113104", "Clean Structured Content Option"),
    "cleanDescriptors": ("113105", "Clean Descriptors Option"),
    "retainLongitudinalFullDates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retainLongitudinalModifiedDates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retainPatientCharacteristics": ("113108", "Retain Patient Characteristics Option"),
    "retainDeviceIdentity": ("113109", "Retain Device Identity Option"),
    "retainUIDs": ("113110", "Retain UIDs Option"),
    "retainSafePrivate": ("113111", "Retain Safe Private Option"),
    "retainInstitutionIdentity": ("113112", "Retain Institution Identity Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")

_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "K"}


@dataclass(frozen=True)
class Row:
    """One row of the committed table."""

    key: str  # "00100010", "60xx4000", "50xxxxxx" or "private"
    name: str
    basic: str
    options: dict[str, str]


@dataclass(frozen=True)
class TableInfo:
    rows: tuple[Row, ...]
    source_sha256: str

    @property
    def version(self) -> str:
        """Short, stable identifier of the table content used in manifests."""
        return "e11-" + self.source_sha256[:12]


@lru_cache(maxsize=1)
def load_table() -> TableInfo:
    """Load the committed table shipped inside the package."""
    text = resources.files("enclave_operator.deid").joinpath("data", TABLE_RESOURCE).read_text()
    data = json.loads(text)
    rows = tuple(Row(r[0], r[1], r[2], dict(r[3])) for r in data["rows"])
    return TableInfo(rows, data["sourceSha256"])


def table_sha256() -> str:
    """SHA-256 of the committed table file (goes into the manifest)."""
    data = resources.files("enclave_operator.deid").joinpath("data", TABLE_RESOURCE).read_bytes()
    return hashlib.sha256(data).hexdigest()


def resolve_row(row: Row, enabled: frozenset[str]) -> str:
    """Return the single-letter action for ``row`` under the enabled options."""
    chosen = [code for opt, code in row.options.items() if opt in enabled]
    if chosen:
        return "C" if "C" in chosen else "K"
    return _COMBINED.get(row.basic, row.basic)


def dictionary_vr(tag: int) -> str | None:
    """VR of a tag from pydicom's dictionary (first of ``OB or OW`` style VRs)."""
    entry = DicomDictionary.get(tag)
    if entry is None:
        return None
    return entry[0].split(" or ")[0]


def kind_for(name: str, vr: str | None) -> str:
    """Classify what kind of identifying value an attribute holds (for reports)."""
    low = name.lower()
    if vr == "UI":
        return "uid"
    if vr in ("DA", "DT"):
        return "date"
    if vr == "TM":
        return "time"
    if vr == "PN" or "name" in low:
        return "name"
    if "address" in low:
        return "address"
    if "telephone" in low or "telecom" in low or "e-mail" in low:
        return "contact"
    if vr in ("LT", "ST", "UT") or "description" in low or "comment" in low:
        return "free-text"
    if " id" in low or low.endswith("id") or "number" in low or "identifier" in low:
        return "identifier"
    return "other"


@dataclass
class ResolvedProfile:
    """Precompiled lookups for the engine (built once per run)."""

    enabled: frozenset[str]
    actions: dict[int, str] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    #: (group mask, group value, element or None, action) for repeating groups
    masks: list[tuple[int, int, int | None, str]] = field(default_factory=list)
    private_action: str = "X"
    table: TableInfo | None = None

    def action_for(self, tag: int) -> str | None:
        """Action for a public tag, consulting the repeating-group masks on a miss."""
        act = self.actions.get(tag)
        if act is not None:
            return act
        group = tag >> 16
        hi = group & 0xFF00
        if hi == 0x5000 or hi == 0x6000:
            elem = tag & 0xFFFF
            for gmask, gval, el, a in self.masks:
                if group & gmask == gval and (el is None or el == elem):
                    return a
        return None


def resolve(enabled_options: set[str] | frozenset[str] | tuple[str, ...]) -> ResolvedProfile:
    """Compile the table for a set of enabled option names."""
    enabled = frozenset(enabled_options)
    unknown = enabled - set(OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown profile option(s): {sorted(unknown)}")
    table = load_table()
    prof = ResolvedProfile(enabled=enabled, table=table)
    for row in table.rows:
        act = resolve_row(row, enabled)
        if row.key == "private":
            prof.private_action = act
            continue
        if "x" in row.key:
            group, elem = row.key[:4], row.key[4:]
            gval = int(group.replace("x", "0"), 16)
            el = None if "x" in elem else int(elem, 16)
            prof.masks.append((0xFF00, gval, el, act))
            continue
        tag = int(row.key, 16)
        prof.actions[tag] = act
        prof.kinds[tag] = kind_for(row.name, dictionary_vr(tag))
    return prof
