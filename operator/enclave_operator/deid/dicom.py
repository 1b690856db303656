"""DICOM de-identification engine (PS3.15 Basic Profile + options).

Why it looks like this: the target is hundreds of instances per second per core,
so the dataset is walked once over ``Dataset._dict`` with a precompiled
``tag -> action`` dict (:mod:`.profile`), raw (undecoded) elements stay raw unless
their value must change, and identifying input values are collected during the
same walk so that the in-run verification (:mod:`.verify`) needs only one more
pass over the output.

Beyond the table, the engine also: removes group-length elements; removes
private elements unless allow-listed (Retain Safe Private); treats public PN
attributes missing from the table as ``D``; gives PatientID/PatientName/
AccessionNumber keyed pseudonyms; keeps well-known DICOM UIDs (``1.2.840.10008.*``);
makes the file meta MediaStorageSOPInstanceUID track the new SOPInstanceUID;
sets PatientIdentityRemoved, DeidentificationMethod(+CodeSequence) and
LongitudinalTemporalInformationModified.

Nothing here logs or raises with attribute values: only tags, paths and kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from . import __version__ as ENGINE_VERSION
from .config import DicomConfig
from .keys import Keys
from .profile import (
    BASIC_PROFILE_CODE,
    CLEAN_PIXEL_CODE,
    OPTION_CODES,
    OPTION_NAMES,
    ResolvedProfile,
    dictionary_vr,
    resolve,
)

TAG_PATIENT_NAME = 0x00100010
TAG_PATIENT_ID = 0x00100020
TAG_ACCESSION = 0x00080050
TAG_STUDY_UID = 0x0020000D
TAG_SOP_UID = 0x00080018

#: file meta elements that identify the sending system; removed
META_REMOVE = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE", "UR"})
STRING_VRS = TEXT_VRS | frozenset({"UI", "DA", "DT", "TM", "DS", "IS", "AS"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
WELL_KNOWN_UID_PREFIX = "1.2.840.10008."

DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, object] = {
    "PN": DUMMY_TEXT,
    "LO": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "CS": DUMMY_TEXT,
    "AE": DUMMY_TEXT,
    "UR": DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "AS": "000D",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
#: values the engine itself writes; never treated as identifying input values
ENGINE_CONSTANTS = frozenset({DUMMY_TEXT, "19000101", "19000101000000", "000000", "YES", "NO"})
#: generic placeholder words found in templates and test data; never treated as identifying
#: name components (a full name value made only of them is ignored as well)
PLACEHOLDER_WORDS = frozenset(
    {
        "ANONYMOUS",
        "ANONYMIZED",
        "UNKNOWN",
        "NONE",
        "NULL",
        "TEST",
        "DEMO",
        "SAMPLE",
        "PHANTOM",
        "NAME",
        "FIRST",
        "LAST",
        "MIDDLE",
        "MID",
        "PRE",
        "PREFIX",
        "SUFFIX",
        "GIVEN",
        "FAMILY",
        "ENTER",
        "TEXT",
        "HERE",
        "PATIENT",
        "DOCTOR",
        "PHYSICIAN",
        "OPERATOR",
        "OBSERVER",
        "VERIFYING",
        "MR",
        "MRS",
        "MS",
        "DR",
    }
)

_SPLIT = re.compile(r"[\s\^\\=,;:/()\[\]\"'<>|]+")
_DATE8 = re.compile(r"\d{8}")

Path = tuple[int, ...]  # alternating tag, item index, tag, ...


@dataclass
class Findings:
    """Identifying values seen in one input instance (upper-cased str) -> kind.

    ``tokens`` are matched against whole values and tokens of output values;
    ``whole`` (free text) only against whole output values; ``dates`` maps the
    path of each non-retained date element to its original 8-digit dates (an
    output date equal to the original at the same path is an unshifted date);
    ``date_values`` are all original dates, searched for in output text.
    """

    tokens: dict[str, str] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    dates: dict[Path, frozenset[str]] = field(default_factory=dict)
    date_values: set[str] = field(default_factory=set)


@dataclass
class InstanceState:
    """Per-instance context for one walk."""

    patient_key: str
    shift: int
    findings: Findings
    scrub: re.Pattern[str] | None = None
    shifted_dates: int = 0
    date_cache: dict[str, str] = field(default_factory=dict)


def raw_text(elem: object) -> str | None:
    """Element value as a stripped str without triggering pydicom conversion.

    Raw bytes are decoded as latin-1: comparisons are made between values that
    went through the same decoding, so no charset handling is needed here.
    """
    if getattr(elem, "is_raw", False):
        val = elem.value  # type: ignore[attr-defined]
        if val is None:
            return None
        return val.decode("latin-1").rstrip(" \x00").lstrip(" ")
    val = elem.value  # type: ignore[attr-defined]
    if val is None:
        return None
    if isinstance(val, bytes):
        return val.decode("latin-1").rstrip(" \x00")
    if isinstance(val, str):
        return val.strip(" \x00")
    if isinstance(val, list | tuple) or type(val).__name__ == "MultiValue":
        return "\\".join(str(v) for v in val)
    return str(val)


class DicomDeidentifier:
    """Configured engine; one instance per run, reusable across datasets."""

    def __init__(self, config: DicomConfig, keys: Keys) -> None:
        self.config = config
        self.keys = keys
        self.profile: ResolvedProfile = resolve(config.options.enabled())
        self.enabled = self.profile.enabled
        self.shift_dates = "retainLongitudinalModifiedDates" in self.enabled
        self.pseudonymize = config.pseudonymize
        self.safe_private: set[tuple[int, str, int]] = set()
        if "retainSafePrivate" in self.enabled:
            for blk in config.safePrivateTags:
                for off in blk.elements:
                    self.safe_private.add((blk.group, blk.creator.strip().upper(), off))
        self._vr_cache: dict[int, str | None] = {}
        self._needs_scrub = any(a == "C" for a in self.profile.actions.values()) and bool(
            self.enabled - {"retainLongitudinalModifiedDates", "retainLongitudinalFullDates"}
        )
        self.method_values = self._method_values()

    # ----------------------------------------------------------------- helpers
    def _method_values(self) -> list[str]:
        vals = ["PS3.15 E.1-1 Basic Profile", f"enclave-deid {ENGINE_VERSION}"]
        vals += [name for name in OPTION_NAMES if name in self.enabled]
        return vals

    def _vr(self, tag: int, elem: object) -> str | None:
        vr = elem.VR  # type: ignore[attr-defined]
        if vr is None or vr == "UN":
            cached = self._vr_cache.get(tag, "?")
            if cached == "?":
                cached = dictionary_vr(tag) if not (tag >> 16) & 1 else None
                self._vr_cache[tag] = cached
            return cached or vr
        return vr

    def patient_key(self, ds: Dataset) -> str:
        """Normalised PatientID; fallbacks documented in docs/deid.md."""
        for tag in (TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_STUDY_UID):
            elem = ds._dict.get(tag)
            if elem is not None:
                txt = raw_text(elem)
                if txt:
                    return txt.strip()
        return ""

    def shift_date_text(self, value: str, st: InstanceState) -> str | None:
        """Shift a DA or DT value (multi-valued / ranges allowed); None if unparsable."""
        cached = st.date_cache.get(value)
        if cached is not None:
            return cached
        out_vals = []
        for v in value.split("\\"):
            parts = []
            for p in v.split("-") if len(v) == 17 and v[8] == "-" else [v]:
                p = p.strip()
                if len(p) < 8 or not _DATE8.match(p):
                    return None
                try:
                    d = date(int(p[:4]), int(p[4:6]), int(p[6:8]))
                    nd = d + timedelta(days=st.shift)
                except (ValueError, OverflowError):
                    return None
                parts.append(f"{nd.year:04d}{nd.month:02d}{nd.day:02d}" + p[8:])
            out_vals.append("-".join(parts))
        out = "\\".join(out_vals)
        st.date_cache[value] = out
        st.shifted_dates += 1
        return out

    # ------------------------------------------------------------- collecting
    def _collect(self, tag: int, vr: str | None, text: str | None, path: Path, st: InstanceState) -> None:
        """Remember an identifying input value (only kinds worth searching for)."""
        if not text or vr is None:
            return
        f = st.findings
        if vr == "DA" or vr == "DT":
            ds8 = frozenset(v[:8] for v in text.replace("-", "\\").split("\\") if len(v) >= 8)
            if ds8:
                f.dates[path + (tag,)] = ds8
                f.date_values |= ds8
            return
        if vr in NUMERIC_VRS or vr in BINARY_VRS or vr in ("TM", "CS", "AS", "DS", "IS", "SQ"):
            return
        up = text.upper()
        if vr == "UI":
            for v in up.split("\\"):
                v = v.strip()
                if len(v) >= 6 and "." in v and not v.startswith(WELL_KNOWN_UID_PREFIX):
                    f.tokens[v] = "uid"
            return
        kind = self.profile.kinds.get(tag) or ("name" if vr == "PN" else "other")
        if vr == "PN":
            for v in up.split("\\"):
                comps = [c for c in _SPLIT.split(v) if c]
                if not comps or all(c in PLACEHOLDER_WORDS for c in comps):
                    continue
                f.tokens[v.strip()] = "name"
                for comp in comps:
                    if len(comp) >= 3 and comp not in PLACEHOLDER_WORDS and comp not in ENGINE_CONSTANTS:
                        f.tokens[comp] = "name"
            return
        if kind == "free-text" or vr in ("LT", "ST", "UT"):
            # single words ("Brain") are not specific enough to call a copy a leak
            if len(up) >= 8 and " " in up.strip() and up not in ENGINE_CONSTANTS:
                f.whole[up] = kind if kind != "other" else "free-text"
            return
        for v in up.split("\\"):
            v = v.strip()
            if len(v) >= 4 and v not in ENGINE_CONSTANTS and v not in PLACEHOLDER_WORDS:
                f.tokens[v] = kind if kind != "other" else "identifier"

    # ----------------------------------------------------------------- walking
    def _walk(self, ds: Dataset, path: Path, st: InstanceState, top: bool) -> None:
        d = ds._dict
        actions = self.profile.actions
        action_for = self.profile.action_for
        creators_used: set[int] = set()
        creators: list[int] = []
        for tag in list(d):
            group = tag >> 16
            if group & 1:
                self._private(ds, tag, group, creators, creators_used, path, st)
                continue
            if not tag & 0xFFFF:
                del d[tag]
                continue
            act = actions.get(tag)
            if act is None and (group & 0xFF00) in (0x5000, 0x6000):
                act = action_for(tag)
            elem = d[tag]
            if act is None:
                vr = self._vr(tag, elem)
                if vr == "SQ":
                    self._walk_seq(ds, tag, path, st)
                    continue
                if vr != "PN":
                    continue
                act = "D"
            else:
                vr = self._vr(tag, elem)
            if act == "K":
                if vr == "SQ":
                    self._walk_seq(ds, tag, path, st)
                continue
            if vr == "SQ":
                if act == "X":
                    del d[tag]
                elif act == "Z":
                    d[tag] = DataElement(tag, "SQ", Sequence())
                else:  # D, C, U on a sequence: keep and de-identify its items
                    self._walk_seq(ds, tag, path, st)
                continue
            text = raw_text(elem)
            if act == "X":
                self._collect(tag, vr, text, path, st)
                del d[tag]
                continue
            if top and self.pseudonymize and tag in (TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_ACCESSION):
                self._collect(tag, vr, text, path, st)
                self._pseudonym(ds, tag, vr, text, st)
                continue
            if act == "Z":
                self._collect(tag, vr, text, path, st)
                if text:
                    d[tag] = DataElement(tag, vr, "" if vr in STRING_VRS else None)
            elif act == "U":
                self._collect(tag, vr, text, path, st)
                if text:
                    d[tag] = DataElement(tag, "UI", self._uids(text))
            elif act == "D":
                self._collect(tag, vr, text, path, st)
                self._dummy(ds, tag, vr, text, st)
            elif act == "C":
                self._clean(ds, tag, vr, text, path, st)

    def _walk_seq(self, ds: Dataset, tag: int, path: Path, st: InstanceState) -> None:
        seq = ds[tag].value
        if not seq:
            return
        for i, item in enumerate(seq):
            self._walk(item, path + (tag, i), st, False)

    def _uids(self, text: str) -> str | list[str]:
        vals = []
        for v in text.split("\\"):
            v = v.strip(" \x00")
            vals.append(v if not v or v.startswith(WELL_KNOWN_UID_PREFIX) else self.keys.uid(v))
        return vals[0] if len(vals) == 1 else vals

    def _pseudonym(self, ds: Dataset, tag: int, vr: str | None, text: str | None, st: InstanceState) -> None:
        if tag == TAG_PATIENT_ID:
            value = self.keys.patient_id(st.patient_key) if st.patient_key else ""
        elif tag == TAG_PATIENT_NAME:
            value = self.keys.patient_name(st.patient_key) if st.patient_key else DUMMY_TEXT
        else:
            value = self.keys.accession(text) if text else ""
        ds._dict[tag] = DataElement(tag, vr or "LO", value)

    def _dummy(self, ds: Dataset, tag: int, vr: str | None, text: str | None, st: InstanceState) -> None:
        d = ds._dict
        if vr == "UI":
            d[tag] = DataElement(tag, "UI", self._uids(text) if text else self.keys.uid(f"dummy:{tag:08x}"))
            return
        if vr in BINARY_VRS or vr is None:
            d[tag] = DataElement(tag, vr if vr and vr != "UN" else "OB", b"\x00\x00")
            return
        d[tag] = DataElement(tag, vr, DUMMY_BY_VR.get(vr, DUMMY_TEXT))

    def _clean(self, ds: Dataset, tag: int, vr: str | None, text: str | None, path: Path, st: InstanceState) -> None:
        d = ds._dict
        if vr == "DA" or vr == "DT":
            self._collect(tag, vr, text, path, st)
            if not text:
                return
            shifted = self.shift_date_text(text, st)
            d[tag] = DataElement(tag, vr, shifted if shifted is not None else "")
            return
        if vr == "TM" or vr in NUMERIC_VRS or vr in ("DS", "IS", "AS"):
            return  # time of day and measurements carry no identity; kept
        if vr == "UI":
            self._collect(tag, vr, text, path, st)
            if text:
                d[tag] = DataElement(tag, "UI", self._uids(text))
            return
        if vr in TEXT_VRS and text:
            if st.scrub is None:
                return
            value = ds[tag].value
            if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
                vals = [st.scrub.sub("***", str(v)) for v in value]
                d[tag] = DataElement(tag, vr, vals)
            elif value is not None:
                text_value = str(value)
                new = st.scrub.sub("***", text_value)
                if new != text_value:
                    d[tag] = DataElement(tag, vr, new)
            return
        if vr in BINARY_VRS or vr is None:
            del d[tag]  # binary content cannot be inspected: removed

    def _private(
        self,
        ds: Dataset,
        tag: int,
        group: int,
        creators: list[int],
        used: set[int],
        path: Path,
        st: InstanceState,
    ) -> None:
        d = ds._dict
        elem_no = tag & 0xFFFF
        if not self.safe_private or elem_no < 0x0010:
            del d[tag]
            return
        if elem_no <= 0x00FF:
            creators.append(tag)
            return
        creator_tag = (group << 16) | (elem_no >> 8)
        creator = d.get(creator_tag)
        name = (raw_text(creator) or "").upper() if creator is not None else ""
        if (group, name, elem_no & 0xFF) not in self.safe_private:
            del d[tag]
            return
        used.add(creator_tag)
        if d[tag].VR == "SQ":
            self._walk_seq(ds, tag, path, st)

    def _finish_private(self, ds: Dataset) -> None:
        """Drop private creator elements whose block kept nothing (any depth)."""
        d = ds._dict
        tags = list(d)
        used = set()
        for tag in tags:
            if (tag >> 16) & 1 and (tag & 0xFFFF) > 0xFF:
                used.add(((tag >> 16) << 16) | ((tag & 0xFFFF) >> 8))
        for tag in tags:
            if (tag >> 16) & 1 and 0x10 <= (tag & 0xFFFF) <= 0xFF and tag not in used:
                del d[tag]
            elif not (tag >> 16) & 1:
                elem = d[tag]
                if not getattr(elem, "is_raw", False) and elem.VR == "SQ" and elem.value:
                    for item in elem.value:
                        self._finish_private(item)

    def _build_scrubber(self, ds: Dataset, st: InstanceState) -> None:
        """Collect the instance's identifying values first, to scrub retained text."""
        probe = InstanceState(st.patient_key, st.shift, Findings())
        self._walk_collect_only(ds, probe)
        values = [v for v in probe.findings.tokens if len(v) >= 3]
        values += list(probe.findings.date_values)
        if values:
            values.sort(key=len, reverse=True)
            alt = "|".join(re.escape(v) for v in values)
            st.scrub = re.compile(rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.IGNORECASE)

    def _walk_collect_only(self, ds: Dataset, st: InstanceState) -> None:
        """Top-level pass recording what X/Z/D/U would remove (used for scrubbing)."""
        actions = self.profile.actions
        for tag, elem in ds._dict.items():
            act = actions.get(tag)
            if act in ("X", "Z", "D", "U") or (
                self.pseudonymize and tag in (TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_ACCESSION)
            ):
                vr = self._vr(tag, elem)
                if vr != "SQ":
                    self._collect(tag, vr, raw_text(elem), (), st)

    # ------------------------------------------------------------------ public
    def new_state(self, ds: Dataset) -> InstanceState:
        key = self.patient_key(ds)
        return InstanceState(key, self.keys.shift_days(key), Findings())

    def deidentify(self, ds: Dataset, *, pixel_cleaned: bool = False) -> InstanceState:
        """De-identify ``ds`` in place; returns the state holding the input findings."""
        st = self.new_state(ds)
        if self._needs_scrub:
            self._build_scrubber(ds, st)
        self._walk(ds, (), st, True)
        if self.safe_private:
            self._finish_private(ds)
        self._meta(ds, st)
        self._mark(ds, pixel_cleaned)
        return st

    def _meta(self, ds: Dataset, st: InstanceState) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        d = meta._dict
        for tag in META_REMOVE:
            d.pop(tag, None)
        for tag in list(d):
            act = self.profile.actions.get(tag)
            if act == "U":
                elem = d[tag]
                text = raw_text(elem)
                self._collect(tag, "UI", text, (0x00020000,), st)
                if text:
                    d[tag] = DataElement(tag, "UI", self._uids(text))
        sop = ds._dict.get(TAG_SOP_UID)
        if sop is not None:
            uid = raw_text(sop)
            if uid:
                meta.MediaStorageSOPInstanceUID = uid
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "ENCLAVE_DEID"

    def _mark(self, ds: Dataset, pixel_cleaned: bool) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.method_values
        codes = [BASIC_PROFILE_CODE]
        if pixel_cleaned:
            codes.append(CLEAN_PIXEL_CODE)
        codes += [OPTION_CODES[n] for n in OPTION_NAMES if n in self.enabled]
        seq = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            seq.append(item)
        ds.DeidentificationMethodCodeSequence = seq
        if "retainLongitudinalFullDates" in self.enabled:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self.shift_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    def collect_findings(self, ds: Dataset) -> Findings:
        """Findings of an input dataset (verify CLI). Consumes ``ds``: it is de-identified in place."""
        st = self.new_state(ds)
        self._walk(ds, (), st, True)
        self._meta(ds, st)
        return st.findings
