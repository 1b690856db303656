"""``python -m enclave_operator.ingest.worker``: one shard of a DataIngest Indexed Job.

Flow: read the environment contract (:mod:`.spec`) -> write a first progress object (this
also proves the destination accepts writes) -> discover all items and keep this shard's
(:mod:`.sharding`) -> for each item: fetch, risk check, de-identify, verify (the engine's
:class:`~enclave_operator.deid.pipeline.DicomWorker`), then upload under a name built from
the *new* UIDs, or skip when an object with the same SHA-256 is already there -> write the
shard manifest and the final progress.

Exit codes: 0 shard done (failed/quarantined items are in the manifest), 1 fatal runtime
failure (source unreachable, destination refuses writes), 2 usage/config error.

Nothing identifying is logged or written: log lines carry counts only; reasons are fixed
words, HTTP status codes and exception type names; the manifest lists output paths (new
UIDs), SHA-256 and sizes, never source identifiers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enclave_operator.deid import __version__ as ENGINE_VERSION
from enclave_operator.deid.dicom import raw_text
from enclave_operator.deid.fhir import (
    FhirDeidentifier,
    FhirFindings,
    FhirInputError,
    parse_items,
    validate_resource,
    verify_fhir,
)
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.pipeline import DicomWorker, dicom_options, profile_info, silence_pydicom

from . import layout, sharding
from . import spec as specmod
from .destination import Destination, DestinationError
from .retry import backoff
from .sources import FetchError, Item, SourceUnavailable, make_source

log = logging.getLogger("enclave_operator.ingest")
PROGRESS_INTERVAL = float(os.environ.get("INGEST_PROGRESS_SECONDS", "2.0"))
DEFAULT_CONCURRENCY = 4
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DICOM_CONTENT_TYPE = "application/dicom"
FHIR_CONTENT_TYPE = "application/fhir+json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the ``fields`` extra (counts only)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}) or {})
        return json.dumps(doc, separators=(",", ":"))


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("INGEST_LOG_FORMAT", "json") == "plain":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("enclave_operator.deid").handlers[:] = [handler]
    logging.getLogger("enclave_operator.deid").propagate = False


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Output:
    path: str
    sha256: str
    size: int
    kind: str
    written: bool  # False: an identical object was already there (resume)
    trusted_sop_class: str | None = None  # admitted under the source's trustedSopClasses opt-out


@dataclass
class Outcome:
    status: str  # done | quarantined | failed
    reason: str | None = None
    outputs: list[Output] = field(default_factory=list)
    leaks: list[dict[str, str]] | None = None


class Counters:
    """Shared, lock-protected shard state (counts, manifest entries)."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.lock = threading.Lock()
        self.discovered = 0
        self.done = 0
        self.skipped = 0
        self.quarantined = 0
        self.failed = 0
        self.bytes = 0
        self.bytes_written = 0
        self.outputs: dict[str, dict[str, Any]] = {}
        self.quarantine_list: list[dict[str, Any]] = []
        self.failed_list: list[dict[str, Any]] = []
        self.finished = False

    def record(self, out: Outcome) -> None:
        with self.lock:
            if out.status == "done":
                for o in out.outputs:
                    prev = self.outputs.get(o.path)
                    if prev is not None and prev["sha256"] != o.sha256:
                        self.failed += 1
                        self.failed_list.append({"reason": "two inputs map to one output name with different content"})
                        return
                self.done += 1
                if not any(o.written for o in out.outputs):
                    self.skipped += 1  # already complete in the destination (resume)
                for o in out.outputs:
                    if o.path not in self.outputs:
                        self.bytes += o.size
                        entry_out: dict[str, Any] = {"path": o.path, "sha256": o.sha256, "bytes": o.size,
                                                     "kind": o.kind}  # fmt: skip
                        if o.trusted_sop_class:
                            entry_out["trustedSopClass"] = o.trusted_sop_class
                        self.outputs[o.path] = entry_out
                    if o.written:
                        self.bytes_written += o.size
            elif out.status == "quarantined":
                self.quarantined += 1
                self.quarantine_list.append({"reason": out.reason})
            else:
                self.failed += 1
                entry: dict[str, Any] = {"reason": out.reason}
                if out.leaks:
                    entry["leaks"] = out.leaks
                self.failed_list.append(entry)

    def counts(self) -> dict[str, int]:
        return {
            "discovered": self.discovered,
            "done": self.done,
            "skipped": self.skipped,
            "quarantined": self.quarantined,
            "failed": self.failed,
            "bytes": self.bytes,
        }

    def progress(self) -> dict[str, Any]:
        with self.lock:
            return {"shard": self.shard, **self.counts(), "finished": self.finished, "updated": now_iso()}


class ShardRun:
    def __init__(self, spec: specmod.WorkerSpec, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.spec = spec
        self.concurrency = max(1, concurrency)
        self.keys = Keys(spec.key)
        self.counters = Counters(spec.index)
        self.dest = Destination(spec.destination, spec.access_key, spec.secret_key, spec.retries)
        self.source = make_source(spec.source, spec.source_username, spec.source_password, spec.retries)
        self.prefix = spec.destination.prefix
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._local = threading.local()
        self._progress_lock = threading.Lock()
        self._fhir_lock = threading.Lock()  # one FHIR engine, used by one thread at a time
        self.fhir = isinstance(spec.source, specmod.S3SourceSpec) and spec.source.format == "fhir"
        self.fhir_engine: Any = None
        self.engine_info = {
            "name": "enclave-deid",
            "version": ENGINE_VERSION,
            "profile": profile_info(),
            "profileName": spec.profile,
            "options": dicom_options(spec.config),
        }

    # ------------------------------------------------------------------ engine
    def _engine(self) -> DicomWorker:
        w = getattr(self._local, "worker", None)
        if w is None:
            # DicomWorker's directories are only used by its file-based path (unused here)
            w = DicomWorker(self.spec.config, self.spec.key, Path("/nonexistent"), Path("/nonexistent"))
            self._local.worker = w
        return w

    # ---------------------------------------------------------------- progress
    def write_progress(self) -> None:
        with self._progress_lock:
            self.dest.put_json(layout.progress_key(self.prefix, self.spec.index), self.counters.progress())

    def _progress_loop(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL):
            try:
                self.write_progress()
            except DestinationError as exc:
                self.fatal = self.fatal or exc
                return
            except Exception as exc:  # noqa: BLE001 - never let a traceback reach stderr
                self.fatal = self.fatal or DestinationError(f"progress write failed ({type(exc).__name__})")
                return
            log.info("progress", extra={"fields": self.counters.progress()})

    # -------------------------------------------------------------------- item
    def _fetch(self, item: Item) -> Any:
        attempt = 0
        while True:
            try:
                return self.source.fetch(item)
            except FetchError as exc:
                if exc.permanent or attempt >= self.spec.retries or self._stop.is_set():
                    raise
                time.sleep(backoff(attempt))
                attempt += 1

    def process(self, item: Item) -> Outcome:
        try:
            ds = self._fetch(item)
        except FetchError as exc:
            return Outcome("failed", exc.reason)
        worker = self._engine()
        try:
            res, data = worker.deidentify_to_bytes(ds, "item")
        except Exception as exc:  # noqa: BLE001 - reported per item, by type name only
            return Outcome("failed", f"engine error ({type(exc).__name__})")
        if res.status == "quarantined":
            return Outcome("quarantined", "burned-in annotation risk: " + "; ".join(res.reasons))
        if res.status == "skipped":
            return Outcome("failed", res.reasons[0] if res.reasons else "not a composite instance")
        if res.status != "written" or data is None:
            return Outcome("failed", res.reasons[0] if res.reasons else "engine error", leaks=res.leaks or None)
        uids = [raw_text(ds[t]) if t in ds else None for t in (0x0020000D, 0x0020000E, 0x00080018)]
        if not all(u and _UID.match(u) for u in uids):
            return Outcome("failed", "output lacks valid Study/Series/SOP Instance UIDs")
        key = layout.dicom_key(self.prefix, *uids)  # type: ignore[arg-type]
        output = self._upload(key, data, res.sha256 or "", "dicom", DICOM_CONTENT_TYPE)
        return Outcome("done", outputs=[dataclasses.replace(output, trusted_sop_class=res.trusted_sop_class)])

    def _upload(self, key: str, data: bytes, sha: str, kind: str, content_type: str) -> Output:
        """Write unless an object with the same recorded SHA-256 exists (then it counts as resumed)."""
        if self.dest.existing_sha256(key) == sha:
            return Output(key, sha, len(data), kind, written=False)
        self.dest.put(key, data, sha, content_type)
        return Output(key, sha, len(data), kind, written=True)

    # -------------------------------------------------------------------- FHIR
    def _fhir_prepass(self, items: list[Item]) -> None:
        """Index the Patients of *all* objects (not only this shard's) for consistent date shifts."""
        self.fhir_engine = FhirDeidentifier(self.spec.config.fhir, self.keys)
        for item in items:
            if not item.stable_key.lower().endswith((".json", ".ndjson")):
                continue
            try:
                data = self._fetch_bytes(item)
                _, resources = parse_items(data.decode("utf-8"), ndjson=item.stable_key.lower().endswith(".ndjson"))
            except (FetchError, FhirInputError, UnicodeDecodeError):
                continue  # reported by the shard that owns the object
            for res in resources:
                self.fhir_engine.register_all(res)

    def _fetch_bytes(self, item: Item) -> bytes:
        attempt = 0
        while True:
            try:
                return self.source.fetch_bytes(item)
            except FetchError as exc:
                if exc.permanent or attempt >= self.spec.retries or self._stop.is_set():
                    raise
                time.sleep(backoff(attempt))
                attempt += 1

    def process_fhir(self, item: Item) -> Outcome:
        name = item.stable_key.lower()
        if not name.endswith((".json", ".ndjson")):
            return Outcome("failed", "not a .json/.ndjson object")
        try:
            data = self._fetch_bytes(item)
        except FetchError as exc:
            return Outcome("failed", exc.reason)
        try:
            _, resources = parse_items(data.decode("utf-8"), ndjson=name.endswith(".ndjson"))
        except UnicodeDecodeError:
            return Outcome("failed", "unreadable FHIR (not UTF-8)")
        except FhirInputError as exc:
            return Outcome("failed", f"unreadable FHIR ({exc})")
        outs: list[tuple[str, bytes]] = []
        with self._fhir_lock:
            for i, res in enumerate(resources):
                errors = validate_resource(res)
                if errors:
                    return Outcome("failed", f"item {i}: not valid FHIR ({len(errors)} errors at {errors[:3]})")
                try:
                    findings = FhirFindings()
                    out = self.fhir_engine.deidentify_any(res, findings)
                except Exception as exc:  # noqa: BLE001
                    return Outcome("failed", f"engine error ({type(exc).__name__})")
                rtype = str(out.get("resourceType", ""))
                rid = str(out.get("id") or self.keys.hash_id(f"{item.stable_key}#{i}", "file"))
                key = layout.fhir_key(self.prefix, rtype, rid)
                leaks = verify_fhir(out, findings, f"{rtype}/{rid}")
                if leaks:
                    return Outcome(
                        "failed", "verification found identifying values", leaks=[lk.as_dict() for lk in leaks]
                    )
                outs.append((key, (json.dumps(out, indent=2) + "\n").encode()))
        uploaded = [
            self._upload(key, body, hashlib.sha256(body).hexdigest(), "fhir", FHIR_CONTENT_TYPE) for key, body in outs
        ]
        return Outcome("done", outputs=uploaded)

    # --------------------------------------------------------------------- run
    def run(self) -> int:
        spec = self.spec
        started = time.monotonic()
        self.write_progress()  # fatal here when the destination refuses writes
        log.info(
            "discovering", extra={"fields": {"shard": spec.index, "shards": spec.shards, "source": self.source.name}}
        )
        items = self.source.discover()
        mine = sharding.select(items, spec.index, spec.shards, key=lambda it: it.stable_key)
        if self.fhir:
            self._fhir_prepass(items)
        self.counters.discovered = len(mine)
        log.info(
            "discovered",
            extra={"fields": {"shard": spec.index, "total": len(items), "discovered": len(mine)}},
        )
        del items
        ticker = threading.Thread(target=self._progress_loop, name="progress", daemon=True)
        ticker.start()
        try:
            self._run_items(mine)
        finally:
            self._stop.set()
            ticker.join(timeout=30)
            self.source.close()
        if self.fatal is not None:
            raise self.fatal
        elapsed = time.monotonic() - started
        self.counters.finished = True
        self.dest.put_json(layout.shard_manifest_key(self.prefix, spec.index), self.shard_manifest())
        self.write_progress()
        fields = {**self.counters.counts(), "shard": spec.index, "seconds": round(elapsed, 3)}
        fields["bytesWritten"] = self.counters.bytes_written
        log.info("shard finished", extra={"fields": fields})
        return 0

    def _run_items(self, items: list[Item]) -> None:
        submit_ahead = self.concurrency * 2
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="ingest") as pool:
            pending: set[Future[Outcome]] = set()
            it = iter(items)
            exhausted = False
            while True:
                while not exhausted and len(pending) < submit_ahead and self.fatal is None:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending.add(pool.submit(self.process_fhir if self.fhir else self.process, nxt))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        self.counters.record(fut.result())
                    except DestinationError as exc:
                        self.fatal = self.fatal or exc
                    except Exception as exc:  # noqa: BLE001 - unexpected: item failed, type name only
                        self.counters.record(Outcome("failed", f"worker error ({type(exc).__name__})"))
                if self.fatal is not None:
                    self._stop.set()
                    for fut in pending:
                        fut.cancel()

    def shard_manifest(self) -> dict[str, Any]:
        c = self.counters
        with c.lock:
            return {
                "shard": self.spec.index,
                "shards": self.spec.shards,
                "ingest": self.spec.ingest,
                "outputs": sorted(c.outputs.values(), key=lambda o: o["path"]),
                "quarantined": sorted(c.quarantine_list, key=lambda q: q["reason"]),
                "failed": sorted(c.failed_list, key=lambda f: f["reason"]),
                "counts": c.counts(),
                "engine": self.engine_info,
                "keyFingerprint": self.keys.fingerprint(),
                "finished": now_iso(),
            }


def run(env: dict[str, str] | None = None, concurrency: int | None = None) -> int:
    """Run one shard; returns the exit code (never raises for expected failures)."""
    try:
        spec = specmod.load(env)
        if concurrency is None:
            text = (env if env is not None else os.environ).get("INGEST_CONCURRENCY", str(DEFAULT_CONCURRENCY))
            if not text.isdigit() or not 1 <= int(text) <= 64:
                raise specmod.UsageError("INGEST_CONCURRENCY must be an integer in 1..64")
            concurrency = int(text)
    except specmod.UsageError as exc:
        log.error(f"configuration error: {exc}", extra={"fields": {"exitCode": 2}})
        return 2
    silence_pydicom()
    try:
        shard = ShardRun(spec, concurrency)
    except ValueError as exc:  # client constructors reject malformed endpoints; messages hold no secrets
        log.error(f"configuration error: INGEST_SPEC: {type(exc).__name__}", extra={"fields": {"exitCode": 2}})
        return 2
    try:
        return shard.run()
    except (SourceUnavailable, DestinationError) as exc:
        log.error(f"fatal: {exc}", extra={"fields": {"exitCode": 1, "shard": spec.index}})
        _final_progress_best_effort(shard)
        return 1
    except Exception as exc:  # noqa: BLE001 - never print a traceback (it may quote values)
        log.error(f"fatal: unexpected {type(exc).__name__}", extra={"fields": {"exitCode": 1, "shard": spec.index}})
        return 1


def _final_progress_best_effort(shard: ShardRun | None) -> None:
    if shard is None:
        return
    try:
        shard.write_progress()
    except Exception:  # noqa: BLE001, S110 - best effort; the exit code carries the failure
        pass


def main(argv: list[str] | None = None, _run: Callable[[], int] = run) -> None:
    args = sys.argv[1:] if argv is None else argv
    setup_logging()
    if args:
        log.error("configuration error: the worker takes no arguments (see docs/ingest-worker.md)")
        sys.exit(2)
    sys.exit(_run())


if __name__ == "__main__":
    main()
