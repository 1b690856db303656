"""FHIR R4 rule engine in Microsoft FHIR anonymizer ``fhirPathRules`` shape.

Why this design: rules are ordinary FHIRPath (evaluated with fhirpathpy against
the R4 model) so hospitals can reuse their existing anonymizer configs; the
Microsoft-only ``nodesByType('T')`` is translated to ``descendants().ofType(T)``
and a leading ``Resource.`` is dropped. fhirpathpy returns *copies* of
primitives, so before evaluation every string in the resource is replaced by a
``str`` subclass that remembers its location; complex nodes are located by
object identity. That gives exact locations (also for choice types such as
``effectiveDateTime``) while ``where(...)`` filters still compare plain values.

Semantics: rules are applied in order and the first rule matching a node wins;
a node whose ancestor was already matched is left alone (``keep`` on a complex
node keeps its subtree). Unmatched nodes are kept. Methods: keep, redact,
dateShift, cryptoHash, substitute (``replaceWith``), generalize (``cases`` of
``condition: value`` FHIRPath expressions over ``$this``, ``otherValues``
redact|keep).

cryptoHash keeps shapes so links survive: ``Patient/123`` -> ``Patient/<h>``
where ``<h>`` is the hash of the id (the same hash the Patient's ``id`` gets),
``urn:uuid:`` -> a keyed UUID, ``urn:oid:`` and bare DICOM UIDs -> the same
``2.25.`` UID the DICOM engine produces, identifier values -> 64 hex (the MRN
hash equals the pseudonymous DICOM PatientID).

Patient identification for date shifts (same as DICOM, see keys.py): the
Patient's MRN -- the identifier whose system is ``fhir.patientIdentifierSystem``,
else the identifier typed ``MR``, else the first identifier with a value; a
Patient without identifiers uses ``Patient/<id>``. Other resources find their
Patient through ``subject``/``patient``/``beneficiary`` references resolved
against all Patient resources in the input directory. Dates of resources whose
patient cannot be resolved are redacted (counted in the manifest), never left.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import fhirpathpy
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy.models import models
from pydantic import ValidationError

from .config import ConfigError, DeidConfig, FhirConfig, FhirRule
from .keys import Keys
from .manifest import Manifest, read_manifest, sha256_file
from .pipeline import TMP_DIR, VerifyReport, iter_files
from .verify import Leak

log = logging.getLogger("enclave_operator.deid")

FHIR_PROFILE = {"name": "enclave-deid FHIR R4 fhirPathRules", "version": "1"}
NEUTRAL_BASE = "https://enclave.invalid/fhir/"

#: conservative defaults; first match wins (order matters)
DEFAULT_RULES: list[dict[str, Any]] = [
    {"path": "nodesByType('Extension')", "method": "redact"},
    {"path": "modifierExtension", "method": "redact"},
    {"path": "nodesByType('Narrative')", "method": "redact"},
    {"path": "nodesByType('Annotation')", "method": "redact"},
    {"path": "nodesByType('HumanName')", "method": "redact"},
    {"path": "nodesByType('Address')", "method": "redact"},
    {"path": "nodesByType('ContactPoint')", "method": "redact"},
    {"path": "nodesByType('Attachment')", "method": "redact"},
    {"path": "Patient.contact", "method": "redact"},
    {"path": "nodesByType('Reference').display", "method": "redact"},
    {"path": "nodesByType('Reference').reference", "method": "cryptoHash"},
    {"path": "nodesByType('Identifier').value", "method": "cryptoHash"},
    {"path": "Resource.id", "method": "cryptoHash"},
    {"path": "contained.id", "method": "cryptoHash"},
    {"path": "ImagingStudy.series.uid", "method": "cryptoHash"},
    {"path": "ImagingStudy.series.instance.uid", "method": "cryptoHash"},
    {"path": "meta.source", "method": "redact"},
    {"path": "Organization.name", "method": "redact"},
    {"path": "Organization.alias", "method": "redact"},
    {"path": "Location.name", "method": "redact"},
    {"path": "Location.alias", "method": "redact"},
    {"path": "Device.serialNumber", "method": "redact"},
    {"path": "Device.lotNumber", "method": "redact"},
    {"path": "Device.deviceName", "method": "redact"},
    {"path": "Device.udiCarrier", "method": "redact"},
    {"path": "nodesByType('markdown')", "method": "redact"},
    {"path": "nodesByType('CodeableConcept').text", "method": "redact"},
    {"path": "description | descendants().description", "method": "redact"},
    {"path": "comment | descendants().comment", "method": "redact"},
    {"path": "conclusion | descendants().conclusion", "method": "redact"},
    {"path": "valueString | descendants().valueString", "method": "redact"},
    {"path": "nodesByType('date')", "method": "dateShift"},
    {"path": "nodesByType('dateTime')", "method": "dateShift"},
    {"path": "nodesByType('instant')", "method": "dateShift"},
]

_NODES_BY_TYPE = re.compile(r"nodesByType\('([A-Za-z]+)'\)")
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)$"
)
_DICOM_UID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_REF = re.compile(r"^(?:(?P<base>.*/))?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")
_SPLIT = re.compile(r"[\s\^\\=,;:/()\[\]\"'<>|?&#]+")
_REDACTED = object()

Loc = tuple[Any, ...]


class FhirInputError(ValueError):
    """Input is not usable FHIR (message is structural, never quotes values)."""


class LocStr(str):
    """A str that remembers where it sits in the resource."""

    __slots__ = ("loc",)


def translate_path(path: str) -> str:
    """Microsoft anonymizer path -> standard FHIRPath for fhirpathpy."""
    out = _NODES_BY_TYPE.sub(lambda m: f"descendants().ofType({m.group(1)})", path.strip())
    if out.startswith("Resource."):
        out = out[len("Resource.") :]
    return out


def _tag(node: Any, loc: Loc, dicts: dict[int, Loc]) -> None:
    if isinstance(node, dict):
        dicts[id(node)] = loc
        for k, v in node.items():
            if isinstance(v, str):
                s = LocStr(v)
                s.loc = loc + (k,)
                node[k] = s
            elif isinstance(v, dict | list):
                _tag(v, loc + (k,), dicts)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, str):
                s = LocStr(v)
                s.loc = loc + (i,)
                node[i] = s
            elif isinstance(v, dict | list):
                _tag(v, loc + (i,), dicts)


def _get(root: Any, loc: Loc) -> Any:
    node = root
    for part in loc:
        node = node[part]
    return node


def _strings(node: Any, loc: Loc) -> Iterable[tuple[Loc, str]]:
    if isinstance(node, str):
        yield loc, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, loc + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, loc + (i,))


def _noidx(loc: Loc) -> str:
    return ".".join(p for p in loc if isinstance(p, str))


def loc_text(loc: Loc) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        else:
            parts.append(p)
    return ".".join(parts)


def _prune(node: Any) -> Any:
    """Remove redaction markers and the empty containers they leave."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if v is _REDACTED:
                continue
            v2 = _prune(v)
            if v2 in ({}, []) and v not in ({}, []):
                continue
            out[k] = v2
        return out
    if isinstance(node, list):
        out_l = []
        for v in node:
            if v is _REDACTED:
                continue
            v2 = _prune(v)
            if v2 in ({}, []) and v not in ({}, []):
                continue
            out_l.append(v2)
        return out_l
    if isinstance(node, LocStr):
        return str(node)
    return node


def shift_fhir_date(value: str, days: int) -> str | None:
    """Shift a FHIR date/dateTime/instant by ``days``; keep precision, time and zone."""
    m = _DATE.match(value)
    if not m:
        return None
    y, mo, d, rest = m.group(1), m.group(2), m.group(3), m.group(4)
    try:
        base = date(int(y), int(mo or 1), int(d or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if d:
        return f"{base.year:04d}-{base.month:02d}-{base.day:02d}{rest}"
    if mo:
        return f"{base.year:04d}-{base.month:02d}{rest}"
    return f"{base.year:04d}{rest}"


@dataclass
class FhirFindings:
    tokens: dict[str, str] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    dates: dict[str, set[str]] = field(default_factory=dict)  # path without indices -> originals
    date_values: set[str] = field(default_factory=set)


@dataclass
class _Compiled:
    rule: FhirRule
    fn: Callable[..., list]
    cases: list[tuple[Callable[..., list], Callable[..., list]]]


class FhirDeidentifier:
    """Compiled rules + keys; ``deidentify_resource`` handles one resource dict."""

    def __init__(self, config: FhirConfig, keys: Keys) -> None:
        self.config = config
        self.keys = keys
        raw_rules = config.fhirPathRules
        rules = raw_rules if raw_rules is not None else [FhirRule.model_validate(r) for r in DEFAULT_RULES]
        self.rules: list[_Compiled] = []
        opts = {"returnRawData": True}
        for i, rule in enumerate(rules):
            try:
                fn = fhirpathpy.compile(translate_path(rule.path), models["r4"], opts)
                cases = [
                    (fhirpathpy.compile(c, None), fhirpathpy.compile(str(v), None))
                    for c, v in (rule.cases or {}).items()
                ]
            except Exception as exc:  # noqa: BLE001 - parser errors have many types
                msg = f"invalid config: fhir.fhirPathRules.{i}.path: not a valid FHIRPath"
                raise ConfigError(f"{msg} ({type(exc).__name__})") from None
            self.rules.append(_Compiled(rule, fn, cases))
        self.patients: dict[str, str] = {}  # reference forms -> patient key
        self.dates_redacted_no_patient = 0

    # --------------------------------------------------------------- patients
    def patient_key_of(self, patient: dict[str, Any]) -> str:
        idents = [i for i in patient.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
        system = self.config.patientIdentifierSystem
        chosen = None
        if system:
            chosen = next((i for i in idents if i.get("system") == system), None)
        if chosen is None:
            for i in idents:
                codings = ((i.get("type") or {}).get("coding")) or []
                if any(c.get("code") == "MR" for c in codings if isinstance(c, dict)):
                    chosen = i
                    break
        if chosen is None and idents:
            chosen = idents[0]
        if chosen is not None:
            return str(chosen["value"]).strip()
        return f"Patient/{patient.get('id', '')}"

    def register_patient(self, patient: dict[str, Any], full_url: str | None = None) -> None:
        key = self.patient_key_of(patient)
        if patient.get("id"):
            self.patients[f"Patient/{patient['id']}"] = key
        if full_url:
            self.patients[full_url] = key

    def resolve_patient(self, res: dict[str, Any]) -> str | None:
        if res.get("resourceType") == "Patient":
            return self.patient_key_of(res)
        for field_name in ("subject", "patient", "beneficiary"):
            ref = res.get(field_name)
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                r = ref["reference"]
                if r in self.patients:
                    return self.patients[r]
                m = _REF.match(r)
                if m and m.group("type") == "Patient":
                    key = self.patients.get(f"Patient/{m.group('id')}")
                    if key is not None:
                        return key
        return None

    # ---------------------------------------------------------------- hashing
    def hash_reference(self, ref: str) -> str:
        if ref.startswith("#"):
            return "#" + self.keys.hash_id(ref[1:], "fhir-id")
        if ref.startswith("urn:uuid:"):
            return "urn:uuid:" + self.keys.uuid_for(ref[9:])
        if ref.startswith("urn:oid:"):
            return "urn:oid:" + self.keys.uid(ref[8:])
        m = _REF.match(ref)
        if m:
            return f"{m.group('type')}/{self.keys.hash_id(m.group('id'), 'fhir-id')}"
        return self.keys.hash_id(ref)

    def hash_full_url(self, url: str) -> str:
        if url.startswith("urn:"):
            return self.hash_reference(url)
        m = _REF.match(url)
        if m:
            return NEUTRAL_BASE + self.hash_reference(f"{m.group('type')}/{m.group('id')}")
        return "urn:uuid:" + self.keys.uuid_for(url)

    def crypto_hash(self, loc: Loc, value: str) -> str:
        key = loc[-1] if loc else ""
        if key == "reference":
            return self.hash_reference(value)
        if key == "id":
            return self.keys.hash_id(value, "fhir-id")
        if value.startswith("urn:uuid:"):
            return "urn:uuid:" + self.keys.uuid_for(value[9:])
        if value.startswith("urn:oid:"):
            return "urn:oid:" + self.keys.uid(value[8:])
        if _DICOM_UID.match(value) and len(value) <= 64 and "." in value:
            return self.keys.uid(value)
        return self.keys.hash_id(value.strip())

    # --------------------------------------------------------------- findings
    def _collect(self, findings: FhirFindings, loc: Loc, node: Any, method: str) -> None:
        for sloc, s in _strings(node, loc):
            leaf = sloc[-1] if isinstance(sloc[-1], str) else (sloc[-2] if len(sloc) > 1 else "")
            if leaf in ("system", "use", "url", "resourceType", "status", "code", "version", "type"):
                continue
            up = s.strip().upper()
            if _DATE.match(s):
                findings.dates.setdefault(_noidx(sloc), set()).add(up)
                if len(up) >= 10:
                    findings.date_values.add(up[:10])
                continue
            if leaf in ("div", "text", "description", "comment", "conclusion", "valueString"):
                if len(up) >= 8 and " " in up:
                    findings.whole[up] = "free-text"
                continue
            kind = "identifier"
            if "name" in _noidx(sloc).lower() or leaf in ("family", "given", "prefix", "suffix"):
                kind = "name"
            elif leaf in ("line", "city", "district", "state", "postalCode"):
                kind = "address"
            elif _DICOM_UID.match(s):
                kind = "uid"
            if leaf == "reference":
                m = _REF.match(s)
                s_id = m.group("id") if m else s
                if len(s_id) >= 4:
                    findings.tokens[s_id.upper()] = "identifier"
                continue
            if len(up) >= 4:
                findings.tokens[up] = kind
            if kind in ("name", "address"):
                for tok in _SPLIT.split(up):
                    if len(tok) >= 4:
                        findings.tokens[tok] = kind

    # ------------------------------------------------------------------ apply
    def deidentify_resource(self, resource: dict[str, Any], findings: FhirFindings | None = None) -> dict[str, Any]:
        """Return a de-identified deep copy of one resource (contained resources included)."""
        res = json.loads(json.dumps(resource))
        dicts: dict[int, Loc] = {}
        _tag(res, (), dicts)
        patient_key = self.resolve_patient(resource)
        shift = self.keys.shift_days(patient_key) if patient_key is not None else None
        processed: set[Loc] = set()
        actions: list[tuple[Loc, _Compiled]] = []
        for comp in self.rules:
            try:
                nodes = comp.fn(res, {})
            except Exception:  # noqa: BLE001 - a rule that cannot apply to this resource type
                continue
            for n in nodes:
                data = getattr(n, "data", n)
                if isinstance(data, LocStr):
                    loc = data.loc
                elif isinstance(data, dict | list):
                    loc = dicts.get(id(data))
                else:
                    loc = None
                if loc is None or loc == ():
                    continue
                if any(loc[:k] in processed for k in range(1, len(loc) + 1)):
                    continue
                processed.add(loc)
                actions.append((loc, comp))
        redactions: list[Loc] = []
        for loc, comp in actions:
            rule = comp.rule
            method = rule.method
            if method == "keep":
                continue
            node = _get(res, loc)
            if findings is not None:
                self._collect(findings, loc, node, method)
            parent = _get(res, loc[:-1])
            if method == "redact":
                redactions.append(loc)
            elif method == "substitute":
                parent[loc[-1]] = rule.replaceWith
            elif method == "cryptoHash":
                if isinstance(node, str):
                    parent[loc[-1]] = self.crypto_hash(loc, node)
                else:
                    for sloc, s in list(_strings(node, loc)):
                        if sloc[-1] in ("value", "reference", "id"):
                            _get(res, sloc[:-1])[sloc[-1]] = self.crypto_hash(sloc, s)
            elif method == "dateShift":
                targets = [(loc, node)] if isinstance(node, str) else list(_strings(node, loc))
                for sloc, s in targets:
                    if not _DATE.match(s):
                        continue
                    if shift is None:
                        redactions.append(sloc)
                        self.dates_redacted_no_patient += 1
                        continue
                    new = shift_fhir_date(s, shift)
                    if new is None:
                        redactions.append(sloc)
                    else:
                        _get(res, sloc[:-1])[sloc[-1]] = new
            elif method == "generalize":
                parent[loc[-1]] = self._generalize(comp, node)
        for loc in redactions:
            _get(res, loc[:-1])[loc[-1]] = _REDACTED
        return _prune(res)

    def _generalize(self, comp: _Compiled, value: Any) -> Any:
        plain = str(value) if isinstance(value, LocStr) else value
        for cond, expr in comp.cases:
            try:
                hit = cond(plain, {})
            except Exception:  # noqa: BLE001
                hit = []
            if hit and hit[0] is True:
                try:
                    out = expr(plain, {})
                except Exception:  # noqa: BLE001
                    out = []
                return out[0] if out else _REDACTED
        return plain if comp.rule.otherValues == "keep" else _REDACTED

    # ---------------------------------------------------------------- bundles
    def deidentify_any(self, obj: dict[str, Any], findings: FhirFindings | None) -> dict[str, Any]:
        if obj.get("resourceType") != "Bundle":
            return self.deidentify_resource(obj, findings)
        out: dict[str, Any] = {"resourceType": "Bundle"}
        for k, v in obj.items():
            if k in ("resourceType", "entry", "link", "timestamp", "meta", "signature"):
                continue
            if k == "id":
                out["id"] = self.keys.hash_id(str(v), "fhir-id")
            elif k == "identifier" and isinstance(v, dict):
                ident = {kk: vv for kk, vv in v.items() if kk in ("system", "use")}
                if v.get("value"):
                    ident["value"] = self.crypto_hash(("value",), str(v["value"]))
                    if findings is not None and len(str(v["value"])) >= 4:
                        findings.tokens[str(v["value"]).upper()] = "identifier"
                out["identifier"] = ident
            else:
                out[k] = v
        entries = []
        for entry in obj.get("entry") or []:
            e: dict[str, Any] = {}
            for k, v in entry.items():
                if k == "fullUrl" and isinstance(v, str):
                    e["fullUrl"] = self.hash_full_url(v)
                elif k == "resource" and isinstance(v, dict):
                    e["resource"] = self.deidentify_any(v, findings)
                elif k == "request" and isinstance(v, dict):
                    req = dict(v)
                    if isinstance(req.get("url"), str):
                        req["url"] = self._request_url(req["url"])
                    for drop in ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
                        req.pop(drop, None)
                    e["request"] = req
                elif k == "response" and isinstance(v, dict):
                    resp = {kk: vv for kk, vv in v.items() if kk in ("status", "etag")}
                    if isinstance(v.get("location"), str):
                        resp["location"] = self._request_url(v["location"])
                    e["response"] = resp
                elif k == "search":
                    e["search"] = v
            entries.append(e)
        if entries:
            out["entry"] = entries
        return out

    def _request_url(self, url: str) -> str:
        path = url.split("?", 1)[0]
        m = _REF.match(path)
        if m:
            return self.hash_reference(f"{m.group('type')}/{m.group('id')}")
        return path.rstrip("/").rsplit("/", 1)[-1]

    def register_all(self, obj: dict[str, Any], full_url: str | None = None) -> None:
        """First pass: remember every Patient (and its fullUrl) for date-shift keys."""
        if obj.get("resourceType") == "Patient":
            self.register_patient(obj, full_url)
        elif obj.get("resourceType") == "Bundle":
            for entry in obj.get("entry") or []:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    self.register_all(entry["resource"], entry.get("fullUrl"))


# ---------------------------------------------------------------------- verify
def verify_fhir(obj: Any, findings: FhirFindings, instance: str, loc: Loc = ()) -> list[Leak]:
    """Scan one output resource/bundle for identifying input values (reports kind + path only).

    Date-shaped outputs are compared with the original at the same element path
    (an equal value is an unshifted date); other strings are searched for
    identifying tokens and for original dates embedded in text.
    """
    leaks: list[Leak] = []
    for sloc, s in _strings(obj, loc):
        up = s.strip().upper()
        if not up:
            continue
        kind = findings.tokens.get(up) or findings.whole.get(up)
        if kind is None and _DATE.match(s):
            orig = findings.dates.get(_noidx(sloc))
            if orig and up in orig:
                kind = "unshifted-date"
        elif kind is None:
            for tok in _SPLIT.split(up):
                if tok in findings.tokens:
                    kind = findings.tokens[tok]
                    break
                if len(tok) >= 10 and tok[:10] in findings.date_values:
                    kind = "date"
                    break
        if kind is not None:
            leaks.append(Leak(instance, loc_text(sloc), kind))
    return leaks


# ------------------------------------------------------------------- file I/O
def _read_items(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Return ("json"|"ndjson", resources); raises FhirInputError without quoting content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FhirInputError(f"unreadable ({type(exc).__name__})") from None
    return parse_items(text, ndjson=path.suffix.lower() == ".ndjson")


def parse_items(text: str, *, ndjson: bool) -> tuple[str, list[dict[str, Any]]]:
    """Parse JSON or NDJSON text into resources (also used for objects, not files)."""
    if ndjson:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise FhirInputError(f"line {n}: invalid JSON") from None
            if not isinstance(obj, dict) or "resourceType" not in obj:
                raise FhirInputError(f"line {n}: not a FHIR resource")
            items.append(obj)
        return "ndjson", items
    try:
        obj = json.loads(text)
    except ValueError:
        raise FhirInputError("invalid JSON") from None
    if not isinstance(obj, dict) or "resourceType" not in obj:
        raise FhirInputError("not a FHIR resource")
    return "json", [obj]


def validate_resource(obj: dict[str, Any]) -> list[str]:
    """Validate with fhir.resources (R4B models, the R4-compatible set shipped by 8.x).

    Returns error locations only (pydantic messages can quote input values).
    """
    try:
        cls = get_fhir_model_class(obj.get("resourceType", ""))
    except (KeyError, ValueError, AttributeError):
        return ["resourceType: unknown"]
    try:
        cls.model_validate(obj)
    except ValidationError as exc:
        return [".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)]
    return []


def _is_fhir_file(path: Path) -> bool:
    return path.suffix.lower() in (".json", ".ndjson")


def run_fhir(
    in_dir: Path,
    out_dir: Path,
    config: DeidConfig,
    key: bytes,
    *,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    validate: bool = True,
) -> Manifest:
    """De-identify every .json/.ndjson file under ``in_dir`` into ``out_dir``."""
    keys = Keys(key)
    engine = FhirDeidentifier(config.fhir, keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "patientIdentifierSystem": config.fhir.patientIdentifierSystem,
        "rules": "custom" if config.fhir.fhirPathRules is not None else "default",
        "ruleCount": len(engine.rules),
        "validate": validate,
    }
    manifest = Manifest("fhir", dict(FHIR_PROFILE), options, keys.fingerprint())
    files = [p for p in iter_files(in_dir) if TMP_DIR not in p.parts]
    parsed: list[tuple[Path, str, str, list[dict[str, Any]]]] = []
    for path in files:
        rel = path.relative_to(in_dir).as_posix()
        if not _is_fhir_file(path):
            manifest.skipped.append({"source": rel, "reason": "not a .json/.ndjson file"})
            continue
        try:
            fmt, items = _read_items(path)
        except FhirInputError as exc:
            manifest.skipped.append({"source": rel, "reason": str(exc)})
            continue
        if validate:
            bad = [(i, errs) for i, it in enumerate(items) if (errs := validate_resource(it))]
            if bad:
                i, errs = bad[0]
                manifest.skipped.append(
                    {"source": rel, "reason": f"item {i}: not valid FHIR ({len(errs)} errors at {errs[:3]})"}
                )
                continue
        for it in items:
            engine.register_all(it)
        parsed.append((path, rel, fmt, items))
    iterable: Iterable[Any] = parsed
    if progress is not None:
        iterable = progress(parsed, len(parsed))
    invalid_outputs = 0
    for _path, rel, fmt, items in iterable:
        name = keys.hash_id(rel, "file")[:32] + (".ndjson" if fmt == "ndjson" else ".json")
        outs = []
        leaks: list[Leak] = []
        try:
            for i, it in enumerate(items):
                f = FhirFindings()
                out = engine.deidentify_any(it, f)
                leaks.extend(verify_fhir(out, f, f"{name}#{i}"))
                if validate and validate_resource(out):
                    invalid_outputs += 1
                outs.append(out)
        except Exception as exc:  # noqa: BLE001 - reported per item, never with values
            log.warning("FHIR de-identification failed for an input (%s)", type(exc).__name__)
            manifest.failed.append({"source": rel, "reason": f"engine error ({type(exc).__name__})"})
            continue
        if leaks:
            manifest.failed.append(
                {
                    "source": rel,
                    "reason": "verification found identifying values",
                    "leaks": [lk.as_dict() for lk in leaks],
                }
            )
            continue
        if fmt == "ndjson":
            data = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in outs)
        else:
            data = json.dumps(outs[0], indent=2) + "\n"
        (out_dir / name).write_text(data, encoding="utf-8")
        manifest.outputs.append(
            {"path": name, "sha256": sha256_file(out_dir / name), "source": rel, "resources": len(outs)}
        )
    manifest.extra_counts["datesRedactedNoPatient"] = engine.dates_redacted_no_patient
    manifest.extra_counts["outputsNotSchemaValid"] = invalid_outputs
    manifest.write(out_dir)
    return manifest


def verify_fhir_dirs(in_dir: Path, out_dir: Path, config: DeidConfig) -> VerifyReport:
    """Independent check of a finished FHIR run, pairing outputs to sources via the manifest."""
    report = VerifyReport()
    engine = FhirDeidentifier(config.fhir, Keys(b"\x00" * 32))
    manifest = read_manifest(out_dir)
    if manifest is None:
        report.errors.append({"instance": "_manifest.json", "reason": "manifest missing or unreadable"})
        return report
    for entry in manifest.get("outputs", []):
        name, src = entry["path"], entry["source"]
        try:
            _, inputs = _read_items(in_dir / src)
            _, outputs = _read_items(out_dir / name)
        except FhirInputError as exc:
            report.errors.append({"instance": name, "reason": str(exc)})
            continue
        for it in inputs:
            engine.register_all(it)
        if len(inputs) != len(outputs):
            report.errors.append({"instance": name, "reason": "resource count differs from source"})
            continue
        for i, (a, b) in enumerate(zip(inputs, outputs, strict=True)):
            f = FhirFindings()
            engine.deidentify_any(a, f)
            report.leaks.extend(verify_fhir(b, f, f"{name}#{i}"))
            report.checked += 1
        if sha256_file(out_dir / name) != entry["sha256"]:
            report.errors.append({"instance": name, "reason": "SHA-256 differs from manifest"})
    return report
