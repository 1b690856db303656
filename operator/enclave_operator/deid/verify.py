"""Leak verifier: scan de-identified outputs for identifying input values.

Why: the profile is a policy; the verifier is the check that the policy and the
engine actually removed what was seen in the inputs. It walks every element at
every depth (sequences, file meta, retained private elements) and reports
findings by *instance, path and kind* only. A :class:`Leak` never carries the
offending value, so reports, logs and exceptions stay free of PHI.

Checks for each string-valued output element:

* whole value or any token equals an identifying input value (names, name
  components, IDs, UIDs, addresses) -> leak of that kind;
* whole value equals removed free text -> ``free-text`` leak;
* a DA/DT value equal to the original at the same path (not retained by an
  option) -> ``unshifted-date``; an original date of the instance appearing in
  any text -> ``date``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from .dicom import BINARY_VRS, NUMERIC_VRS, Findings, Path, raw_text

_SPLIT = re.compile(r"[\s\^\\=,;:/()\[\]\"'<>|]+")
# UN is scanned as text: retained private data of unknown VR may still hold copied values
_SKIP_VRS = NUMERIC_VRS | (BINARY_VRS - {"UN"}) | frozenset({"DS", "IS", "TM", "AS", "SQ"})


@dataclass(frozen=True)
class Leak:
    """One finding: where (instance + path) and what kind -- never the value."""

    instance: str
    path: str
    kind: str

    def as_dict(self) -> dict[str, str]:
        return {"instance": self.instance, "path": self.path, "kind": self.kind}

    def __str__(self) -> str:
        return f"{self.instance}: {self.path} ({self.kind})"


def tag_name(tag: int) -> str:
    kw = keyword_for_tag(tag) if not (tag >> 16) & 1 else ""
    return kw or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def format_path(path: Path) -> str:
    """``(tag, idx, tag)`` -> ``ReferencedStudySequence[0].ReferencedSOPInstanceUID``."""
    parts: list[str] = []
    i = 0
    while i < len(path):
        name = tag_name(path[i])
        if i + 1 < len(path):
            name += f"[{path[i + 1]}]"
        parts.append(name)
        i += 2
    return ".".join(parts)


def verify_dataset(
    ds: Dataset,
    findings: Findings,
    instance: str,
    retained_date_tags: frozenset[int] = frozenset(),
) -> list[Leak]:
    """Scan one output dataset (including its file meta) against its input findings."""
    leaks: list[Leak] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _scan(meta, (), findings, instance, leaks, retained_date_tags, meta_prefix=True)
    _scan(ds, (), findings, instance, leaks, retained_date_tags)
    return leaks


def _scan(
    ds: Dataset,
    path: Path,
    f: Findings,
    instance: str,
    leaks: list[Leak],
    retained: frozenset[int],
    meta_prefix: bool = False,
) -> None:
    tokens = f.tokens
    whole = f.whole
    dates = f.dates
    date_values = f.date_values
    for tag, elem in ds._dict.items():
        vr = elem.VR
        if vr == "SQ":
            for i, item in enumerate(ds[tag].value or ()):
                _scan(item, path + (tag, i), f, instance, leaks, retained)
            continue
        if vr is None or vr == "UN":
            # implicit VR: ask pydicom (converts the element); sequences recurse
            try:
                conv = ds[tag]
            except Exception:  # noqa: BLE001 - undecodable element: scan as bytes below
                conv = None
            if conv is not None:
                vr = conv.VR
                if vr == "SQ":
                    for i, item in enumerate(conv.value or ()):
                        _scan(item, path + (tag, i), f, instance, leaks, retained)
                    continue
                elem = conv
        if vr in _SKIP_VRS and vr not in ("DA", "DT"):
            continue
        text = raw_text(elem)
        if not text:
            continue
        up = text.upper()
        kind = None
        if up in tokens:
            kind = tokens[up]
        elif up in whole:
            kind = whole[up]
        else:
            for tok in _SPLIT.split(up):
                if tok in tokens:
                    kind = tokens[tok]
                    break
                if tok in date_values and vr not in ("DA", "DT"):
                    kind = "date"
                    break
        if kind is None and (vr == "DA" or vr == "DT") and tag not in retained:
            orig = dates.get(path + (tag,))
            if orig:
                for v in up.replace("-", "\\").split("\\"):
                    if v[:8] in orig:
                        kind = "unshifted-date"
                        break
        if kind is not None:
            p = format_path(path + (tag,))
            leaks.append(Leak(instance, ("file_meta." + p) if meta_prefix else p, kind))
