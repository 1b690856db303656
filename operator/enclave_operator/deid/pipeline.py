"""DICOM directory pipeline: read -> risk check -> de-identify -> verify -> write.

Why separate from the engine: the engine works on one in-memory dataset; this
module owns files, worker processes, output naming, quarantine and the
manifest. Every input ends in exactly one manifest list (outputs, quarantined,
skipped, failed) so nothing is silently dropped. Reasons are fixed strings or
exception *type names*, never exception messages (which may quote values).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .config import DeidConfig
from .dicom import DicomDeidentifier, Findings, raw_text
from .keys import Keys
from .manifest import MANIFEST_NAME, Manifest, read_manifest, sha256_file
from .pixels import PixelError, PixelPolicy, blank_regions
from .profile import OPTION_NAMES, PROFILE_NAME, load_table, table_sha256
from .verify import Leak, verify_dataset

log = logging.getLogger("enclave_operator.deid")
TMP_DIR = ".deid-tmp"
MEDIA_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class ItemResult:
    """Outcome for one input file (picklable, PHI-free)."""

    source: str
    status: str  # written | quarantined | skipped | failed
    reasons: list[str] = field(default_factory=list)
    name: str | None = None  # intended output file name
    tmp: str | None = None  # temporary file holding the output bytes
    sha256: str | None = None
    leaks: list[dict[str, str]] = field(default_factory=list)
    pixel_cleaned: bool = False
    shifted_dates: int = 0
    trusted_sop_class: str | None = None  # admitted under the site's trustedSopClasses opt-out


def silence_pydicom() -> None:
    """Stop pydicom from logging or warning: its messages can quote element values (PHI).

    Value validation is switched off for reading and writing; the engine decides what
    values are written and the verifier checks them. Problems surface as skip/fail
    reasons built from exception type names instead.
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")


def iter_files(root: Path) -> Iterator[Path]:
    """All regular files under ``root`` in sorted order, skipping our own outputs."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != TMP_DIR)
        for name in sorted(filenames):
            if name == MANIFEST_NAME:
                continue
            yield Path(dirpath) / name


def read_dicom(path: Path) -> Dataset:
    """Read a DICOM Part 10 file (raises InvalidDicomError for non-DICOM)."""
    return pydicom.dcmread(path)


def _ensure_meta(ds: Dataset) -> None:
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (False, True))
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID


class DicomWorker:
    """Per-process engine; ``process`` handles one file end to end."""

    def __init__(self, config: DeidConfig, key: bytes, in_dir: Path, out_dir: Path) -> None:
        silence_pydicom()
        self.engine = DicomDeidentifier(config.dicom, Keys(key))
        self.keys = self.engine.keys
        self.pixels = PixelPolicy.from_config(config.dicom.pixels)
        self.in_dir = in_dir
        self.tmp_dir = out_dir / TMP_DIR

    def process(self, path: Path) -> ItemResult:
        rel = path.relative_to(self.in_dir).as_posix()
        try:
            ds = read_dicom(path)
        except InvalidDicomError:
            return ItemResult(rel, "skipped", ["not a DICOM Part 10 file"])
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported, not fatal
            return ItemResult(rel, "skipped", [f"unreadable DICOM ({type(exc).__name__})"])
        try:
            return self._deid(ds, rel)
        except Exception as exc:  # noqa: BLE001
            log.warning("de-identification failed for an input (%s)", type(exc).__name__)
            return ItemResult(rel, "failed", [f"engine error ({type(exc).__name__})"])

    def _deid(self, ds: Dataset, rel: str) -> ItemResult:
        res, data = self.deidentify_to_bytes(ds, rel)
        if data is None:
            return res
        tmp = self.tmp_dir / (self.keys.hash_id(rel, "tmp")[:32] + ".dcm")
        tmp.write_bytes(data)
        res.tmp = str(tmp)
        return res

    def deidentify_to_bytes(self, ds: Dataset, rel: str) -> tuple[ItemResult, bytes | None]:
        """Risk check, de-identify, verify and serialise one dataset (in place; no file I/O).

        Returns the result and, for status ``written``, the output Part 10 bytes. Used by
        the directory pipeline above and by the ingest worker (objects, not files).
        """
        sop_class = raw_text(ds["SOPClassUID"]) if "SOPClassUID" in ds else None
        if sop_class == MEDIA_DIRECTORY_CLASS:
            return ItemResult(rel, "skipped", ["DICOMDIR media directory (regenerate it for the output)"]), None
        if not sop_class or "SOPInstanceUID" not in ds:
            return ItemResult(rel, "skipped", ["not a composite instance (no SOP Class/Instance UID)"]), None
        pixel_cleaned = False
        trust = self.pixels.trusted_class(ds)
        reasons = self.pixels.risk_reasons(ds)
        rule = self.pixels.rule_for(ds) if "PixelData" in ds else None
        if rule is not None:
            try:
                blank_regions(ds, rule.regions)
                pixel_cleaned = True
                reasons = []
            except PixelError as exc:
                reasons = reasons + [f"region rule could not be applied: {exc}"]
        if reasons:
            return ItemResult(rel, "quarantined", reasons), None
        st = self.engine.deidentify(ds, pixel_cleaned=pixel_cleaned)
        sop = raw_text(ds["SOPInstanceUID"]) if "SOPInstanceUID" in ds else None
        name = f"{sop}.dcm" if sop else f"{self.keys.hash_id(rel, 'file')[:32]}.dcm"
        leaks = verify_dataset(ds, st.findings, name)
        if leaks:
            return ItemResult(
                rel,
                "failed",
                ["verification found identifying values"],
                name=name,
                leaks=[lk.as_dict() for lk in leaks],
            ), None
        _ensure_meta(ds)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        return ItemResult(
            rel,
            "written",
            [],
            name=name,
            sha256=hashlib.sha256(data).hexdigest(),
            pixel_cleaned=pixel_cleaned,
            shifted_dates=st.shifted_dates,
            trusted_sop_class=trust.sopClassUid if trust is not None else None,
        ), data


_WORKER: DicomWorker | None = None


def _init_worker(config: DeidConfig, key: bytes, in_dir: Path, out_dir: Path) -> None:
    global _WORKER
    _WORKER = DicomWorker(config, key, in_dir, out_dir)


def _process_in_worker(path: Path) -> ItemResult:
    assert _WORKER is not None
    return _WORKER.process(path)


def profile_info() -> dict[str, Any]:
    return {"name": PROFILE_NAME, "version": load_table().version, "tableSha256": table_sha256()}


def dicom_options(config: DeidConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {n: getattr(config.dicom.options, n) for n in OPTION_NAMES}
    opts["pseudonymize"] = config.dicom.pseudonymize
    opts["safePrivateBlocks"] = len(config.dicom.safePrivateTags)
    opts["regionRules"] = len(config.dicom.pixels.regionRules)
    opts["trustedSopClasses"] = [t.model_dump() for t in config.dicom.pixels.trustedSopClasses]
    return opts


def run_dicom(
    in_dir: Path,
    out_dir: Path,
    config: DeidConfig,
    key: bytes,
    *,
    jobs: int = 1,
    progress: Callable[[Iterable[ItemResult], int], Iterable[ItemResult]] | None = None,
) -> Manifest:
    """De-identify every file under ``in_dir`` into ``out_dir``; returns the written manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TMP_DIR).mkdir(exist_ok=True)
    files = list(iter_files(in_dir))
    keys = Keys(key)
    manifest = Manifest("dicom", profile_info(), dicom_options(config), keys.fingerprint())
    if jobs > 1 and len(files) > 1:
        pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(config, key, in_dir, out_dir))
        results: Iterable[ItemResult] = pool.map(_process_in_worker, files, chunksize=16)
    else:
        pool = None
        worker = DicomWorker(config, key, in_dir, out_dir)
        results = (worker.process(p) for p in files)
    if progress is not None:
        results = progress(results, len(files))
    used: set[str] = set()
    pixel_cleaned = trusted = 0
    try:
        for res in results:
            if res.status == "written":
                assert res.name is not None and res.tmp is not None
                name = res.name
                if name in used:
                    # two inputs with one SOP Instance UID (e.g. same image, other transfer syntax)
                    name = f"{name[:-4]}_{keys.hash_id(res.source, 'dup')[:8]}.dcm"
                used.add(name)
                os.replace(res.tmp, out_dir / name)
                pixel_cleaned += res.pixel_cleaned
                entry_out: dict[str, Any] = {"path": name, "sha256": res.sha256, "source": res.source}
                if res.trusted_sop_class:
                    entry_out["trustedSopClass"] = res.trusted_sop_class
                    trusted += 1
                manifest.outputs.append(entry_out)
            elif res.status == "quarantined":
                manifest.quarantined.append({"source": res.source, "reasons": res.reasons})
            elif res.status == "skipped":
                manifest.skipped.append({"source": res.source, "reason": res.reasons[0]})
            else:
                entry: dict[str, Any] = {"source": res.source, "reason": res.reasons[0]}
                if res.leaks:
                    entry["leaks"] = res.leaks
                manifest.failed.append(entry)
    finally:
        if pool is not None:
            pool.shutdown()
    manifest.extra_counts["pixelCleaned"] = pixel_cleaned
    manifest.extra_counts["trustedSopClass"] = trusted
    try:
        (out_dir / TMP_DIR).rmdir()
    except OSError:
        pass
    manifest.write(out_dir)
    return manifest


@dataclass
class VerifyReport:
    checked: int = 0
    leaks: list[Leak] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify_dicom_dirs(in_dir: Path, out_dir: Path, config: DeidConfig) -> VerifyReport:
    """Independent verification of a finished run (re-reads inputs and outputs from disk).

    Outputs are paired with their sources through the manifest; outputs without a
    manifest entry are checked against the union of all input findings.
    """
    silence_pydicom()
    report = VerifyReport()
    engine = DicomDeidentifier(config.dicom, Keys(b"\x00" * 32))
    manifest = read_manifest(out_dir)
    pairs: dict[str, str] = {}
    hashes: dict[str, str] = {}
    if manifest is None:
        report.notes.append("no manifest: outputs checked for input UIDs only")
    else:
        pairs = {o["path"]: o["source"] for o in manifest.get("outputs", [])}
        hashes = {o["path"]: o["sha256"] for o in manifest.get("outputs", [])}
    uids: dict[str, str] = {}
    per_source: dict[str, Findings] = {}
    for path in iter_files(in_dir):
        rel = path.relative_to(in_dir).as_posix()
        try:
            ds = read_dicom(path)
            f = engine.collect_findings(ds)
        except Exception:  # noqa: BLE001 - unreadable inputs were skipped by the run too
            continue
        per_source[rel] = f
        uids.update((v, k) for v, k in f.tokens.items() if k == "uid")
    for path in iter_files(out_dir):
        name = path.relative_to(out_dir).as_posix()
        try:
            ds = read_dicom(path)
        except Exception as exc:  # noqa: BLE001
            report.errors.append({"instance": name, "reason": f"output unreadable ({type(exc).__name__})"})
            continue
        report.checked += 1
        src = pairs.get(name)
        own = per_source.get(src) if src is not None else None
        if own is None:
            if manifest is not None:
                report.notes.append(f"{name}: not in manifest; checked for input UIDs only")
            findings = Findings(dict(uids))
        else:
            # the instance's own findings plus every input UID (an unmapped reference is a leak)
            findings = Findings({**uids, **own.tokens}, own.whole, own.dates, own.date_values)
        report.leaks.extend(verify_dataset(ds, findings, name))
        if name in hashes and sha256_file(path) != hashes[name]:
            report.errors.append({"instance": name, "reason": "SHA-256 differs from manifest"})
    return report
