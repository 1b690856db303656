"""`enclave-backup-worker`: what a FederatedNode's backup and restore-drill Jobs run.

The backup tool is restic (encrypted, deduplicated, `check`-able snapshots in S3). restic backs up files,
not buckets, so the worker stages the store bucket into its scratch directory first (`objects/<key>`, plus
`manifest.json` with every object's key, size, SHA-256 and ETag) and has restic snapshot that tree; the
snapshot is then an exact, self-describing replica of the bucket.

    backup: init the repository if needed → stage → restic backup → restic check → restic forget --prune
            → report (snapshot id, objects, bytes)
    drill:  restic restore <snapshot> → upload into the scratch bucket → read every object back from the
            scratch bucket and compare its SHA-256 with the manifest, and with the live object where it has
            not changed since (same ETag) → report (objects, bytes, mismatches)

The report is a JSON object in the backup bucket under `reports/<job>.json`, which the operator reads
(like DataIngest progress). Environment contract (set by federation/backup_job.py):

    BACKUP_SPEC                JSON: mode, node, job, source {endpoint, secure, bucket}, target {endpoint,
                               secure, bucket, repository}, keep, drill {snapshot, scratchBucket}
    SOURCE_ACCESS_KEY_ID       store credential: read the store bucket, write the scratch bucket
    SOURCE_SECRET_ACCESS_KEY
    AWS_ACCESS_KEY_ID          backup target credential (restic reads these names)
    AWS_SECRET_ACCESS_KEY
    RESTIC_PASSWORD            the repository key
    SCRATCH_DIR                where to stage and restore (an emptyDir in a pod); default the temp dir
    RESTIC_BINARY              restic to run; default `restic` on PATH

Exit codes: 0 done (the report says how it went), 1 the run failed (the report says why), 2 bad contract.
Logs carry counts and restic's own messages, never object keys or credentials.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from enclave_operator.ingest.retry import with_retries
from enclave_operator.ingest.s3client import s3_client
from minio import Minio

log = logging.getLogger("enclave_operator.backup")
REPORTS = "reports/"
REPOSITORY_PREFIX = "restic"
MANIFEST = "manifest.json"
OBJECTS = "objects"
CHUNK = 1 << 20
REPO_MISSING_EXIT = 10
"""restic's exit code for "repository does not exist" (0.17+)."""
RESTIC_TIMEOUT_S = 6 * 3600


class BackupError(RuntimeError):
    """The run failed; the message goes into the report (no secrets, no object keys)."""


def report_key(job: str) -> str:
    return f"{REPORTS}{job}.json"


def repository(endpoint: str, secure: bool, bucket: str) -> str:
    return f"s3:{'https' if secure else 'http'}://{endpoint}/{bucket}/{REPOSITORY_PREFIX}"


# Object keys ⇄ staging paths: injective, never leaving the staging tree ("..", "." and "" segments escaped).


def key_to_path(key: str) -> str:
    segments = []
    for segment in key.split("/"):
        if segment == "":
            segments.append("%")
        elif segment in (".", ".."):
            segments.append(segment.replace(".", "%2E"))
        else:
            segments.append(urllib.parse.quote(segment, safe=""))
    return "/".join(segments)


def path_to_key(path: str) -> str:
    return "/".join("" if s == "%" else urllib.parse.unquote(s) for s in path.split("/"))


# restic.


def restic(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = os.environ.get("RESTIC_BINARY", "restic")
    argv = [binary, "--no-cache", *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=RESTIC_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise BackupError(f"restic not found ({binary})") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"restic {args[0]} did not finish within {RESTIC_TIMEOUT_S}s") from None
    if check and result.returncode != 0:
        raise BackupError(f"restic {args[0]} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return result


def ensure_repository() -> bool:
    """Initialise the repository when it does not exist yet; True when it was created now."""
    probe = restic("cat", "config", check=False)
    if probe.returncode == 0:
        return False
    if probe.returncode != REPO_MISSING_EXIT:
        raise BackupError(f"restic cannot open the repository ({probe.returncode}): {probe.stderr.strip()[-400:]}")
    restic("init")
    return True


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


# S3.


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(client: Minio, bucket: str, key: str, dest: Path) -> str:
    """Stream one object to `dest`; its SHA-256."""

    def attempt() -> str:
        digest = hashlib.sha256()
        response = client.get_object(bucket, key)
        try:
            with open(dest, "wb") as out:
                for chunk in response.stream(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest()

    return with_retries(attempt, 3, retry_on=(OSError, S3Error))


def _object_sha256(client: Minio, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    response = client.get_object(bucket, key)
    try:
        for chunk in response.stream(CHUNK):
            digest.update(chunk)
    finally:
        response.close()
        response.release_conn()
    return digest.hexdigest()


def stage(client: Minio, bucket: str, root: Path) -> dict[str, Any]:
    """Copy every object of `bucket` (latest versions) under root/objects and write root/manifest.json."""
    if root.exists():
        shutil.rmtree(root)
    (root / OBJECTS).mkdir(parents=True)
    entries = []
    for obj in client.list_objects(bucket, recursive=True):
        key = obj.object_name
        if key is None:
            continue
        relative = key_to_path(key)
        dest = root / OBJECTS / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        sha = _download(client, bucket, key, dest)
        if obj.last_modified is not None:
            stamp = obj.last_modified.timestamp()
            os.utime(dest, (stamp, stamp))
        entries.append({"key": key, "path": relative, "size": int(obj.size or 0), "sha256": sha,
                        "etag": (obj.etag or "").strip('"')})  # fmt: skip
    manifest = {
        "bucket": bucket,
        "staged": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "objects": sorted(entries, key=lambda e: e["key"]),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log.info("staged %d objects, %d bytes", len(entries), sum(e["size"] for e in entries))
    return manifest


def _empty_bucket(client: Minio, bucket: str) -> None:
    while True:
        batch = [DeleteObject(o.object_name, o.version_id)
                 for o in client.list_objects(bucket, recursive=True, include_version=True) if o.object_name]
        if not batch:
            return
        errors = list(client.remove_objects(bucket, batch[:1000]))
        if errors:
            raise BackupError(f"cannot empty the scratch bucket: {errors[0].code}")


def write_report(client: Minio, bucket: str, job: str, report: Mapping[str, Any]) -> None:
    body = json.dumps(dict(report), indent=1, sort_keys=True).encode()
    with_retries(lambda: client.put_object(bucket, report_key(job), io.BytesIO(body), len(body),
                                           content_type="application/json"), 3, retry_on=(OSError, S3Error))


# The two modes.


def run_backup(spec: Mapping[str, Any], source: Minio, scratch: Path) -> dict[str, Any]:
    node = str(spec["node"])
    created = ensure_repository()
    root = scratch / "enclave-backup" / node  # a stable path: restic finds the previous snapshot as parent
    manifest = stage(source, str(spec["source"]["bucket"]), root)
    result = restic("backup", "--json", "--host", node, "--tag", f"enclave-node={node}", "--tag",
                    f"job={spec['job']}", "--ignore-inode", "--ignore-ctime", ".", cwd=root)  # fmt: skip
    summary = next((m for m in _json_lines(result.stdout) if m.get("message_type") == "summary"), None)
    if summary is None or not summary.get("snapshot_id"):
        raise BackupError("restic backup printed no summary")
    restic("check")
    restic("forget", "--host", node, "--keep-last", str(int(spec.get("keep", 26))), "--prune")
    shutil.rmtree(root, ignore_errors=True)
    return {
        "snapshot": str(summary["snapshot_id"])[:64],
        "objects": len(manifest["objects"]),
        "bytes": sum(int(e["size"]) for e in manifest["objects"]),
        "addedBytes": int(summary.get("data_added", 0)),
        "repositoryCreated": created,
    }


def _snapshot(node: str, wanted: str) -> dict[str, Any]:
    result = restic("snapshots", "--json", "--host", node)
    snapshots = json.loads(result.stdout or "[]")
    if wanted != "latest":
        snapshots = [s for s in snapshots if str(s.get("id", "")).startswith(wanted)]
    if not snapshots:
        raise BackupError(f"no snapshot {wanted} of node {node} in the repository")
    return dict(max(snapshots, key=lambda s: str(s.get("time", ""))))


def run_drill(spec: Mapping[str, Any], source: Minio, scratch: Path) -> dict[str, Any]:
    node = str(spec["node"])
    drill = dict(spec["drill"])
    snapshot = _snapshot(node, str(drill.get("snapshot", "latest")))
    target = scratch / "enclave-drill" / node
    if target.exists():
        shutil.rmtree(target)
    restic("restore", str(snapshot["id"]), "--target", str(target))
    manifest = json.loads((target / MANIFEST).read_text())
    scratch_bucket, live_bucket = str(drill["scratchBucket"]), str(manifest.get("bucket") or spec["source"]["bucket"])
    _empty_bucket(source, scratch_bucket)
    restored = {str(p.relative_to(target / OBJECTS)) for p in (target / OBJECTS).rglob("*") if p.is_file()}
    expected = {e["path"] for e in manifest["objects"]}
    mismatches = len(restored ^ expected)
    compared_live, total = 0, 0
    for entry in manifest["objects"]:
        path = target / OBJECTS / entry["path"]
        if not path.is_file():
            continue
        total += path.stat().st_size
        with open(path, "rb") as handle:
            source.put_object(scratch_bucket, entry["key"], handle, path.stat().st_size)
        if _object_sha256(source, scratch_bucket, entry["key"]) != entry["sha256"]:
            mismatches += 1
            continue
        try:
            live = source.stat_object(live_bucket, entry["key"])
        except S3Error:
            continue  # deleted since the snapshot: nothing live to compare with
        if (live.etag or "").strip('"') == entry["etag"]:
            compared_live += 1
            if _object_sha256(source, live_bucket, entry["key"]) != entry["sha256"]:
                mismatches += 1
    shutil.rmtree(target, ignore_errors=True)
    log.info("drill restored %d objects, %d mismatches, %d compared with live", len(expected), mismatches,
             compared_live)  # fmt: skip
    return {
        "snapshot": str(snapshot["id"])[:64],
        "objects": len(manifest["objects"]),
        "bytes": total,
        "mismatches": mismatches,
        "comparedLive": compared_live,
        "scratchBucket": scratch_bucket,
    }


def _describe(error: BaseException) -> str:
    """An error for the report: restic's own words, else the S3 code or the OS error (no keys, no paths)."""
    if isinstance(error, BackupError):
        return str(error)
    if isinstance(error, S3Error):
        return f"S3 {error.code}"
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error.strerror or ''}".rstrip(": ")
    return type(error).__name__


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        spec = json.loads(os.environ["BACKUP_SPEC"])
        mode = str(spec["mode"])
        src, tgt = dict(spec["source"]), dict(spec["target"])
        source = s3_client(str(src["endpoint"]), os.environ["SOURCE_ACCESS_KEY_ID"],
                           os.environ["SOURCE_SECRET_ACCESS_KEY"], bool(src.get("secure", True)), "us-east-1")
        target = s3_client(str(tgt["endpoint"]), os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                           bool(tgt.get("secure", True)), "us-east-1")  # fmt: skip
        os.environ["RESTIC_REPOSITORY"] = str(tgt["repository"])
        os.environ["RESTIC_PASSWORD"]  # noqa: B018 - required; restic reads it itself
        if mode not in ("backup", "drill"):
            raise KeyError("mode")
    except (KeyError, ValueError, TypeError) as error:
        print(f"enclave-backup-worker: bad contract: missing or invalid {error}", file=sys.stderr)
        return 2
    scratch = Path(os.environ.get("SCRATCH_DIR") or tempfile.gettempdir())
    started = _stamp()
    try:
        outcome = run_backup(spec, source, scratch) if mode == "backup" else run_drill(spec, source, scratch)
        ok = mode == "backup" or outcome["mismatches"] == 0
        report = {"mode": mode, "ok": ok, "started": started, "finished": _stamp(), **outcome}
    except (BackupError, S3Error, OSError, ValueError) as error:
        message = _describe(error)
        log.error("%s failed: %s", mode, message)
        report = {"mode": mode, "ok": False, "started": started, "finished": _stamp(), "error": message}
    try:
        write_report(target, str(tgt["bucket"]), str(spec["job"]), report)
    except (S3Error, OSError) as error:
        log.error("cannot write the report: %s", type(error).__name__)
        return 1
    log.info("%s %s", mode, "succeeded" if report["ok"] else "failed")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
