"""``enclave-deid``: de-identify DICOM or FHIR R4 directories and verify results.

Usage::

    enclave-deid dicom  --config FILE --key-file FILE IN_DIR OUT_DIR [--jobs N] [--quiet]
    enclave-deid fhir   --config FILE --key-file FILE IN_DIR OUT_DIR [--quiet]
    enclave-deid verify --kind dicom|fhir [--config FILE] IN_DIR OUT_DIR [--quiet]

Exit codes (also in docs/deid.md):

* ``0`` -- every input was de-identified, verified clean and written.
* ``1`` -- verification found identifying values, or an item failed in the engine
  (nothing that leaked was written; see ``failed`` in ``_manifest.json``).
* ``2`` -- usage or configuration error (bad arguments, invalid config, bad key file).
* ``3`` -- everything written is clean, but some inputs were quarantined
  (burned-in annotation risk) or skipped (unreadable / not DICOM / not FHIR JSON).

A summary goes to stderr; the machine-readable result is ``OUT_DIR/_manifest.json``.
Progress bars (tqdm) go to stderr only when it is a terminal and ``--quiet`` is not given.
No output of this command contains attribute values from the inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from .config import ConfigError, DeidConfig, load_config
from .keys import KeyError_, load_key

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits with 2 already; keep the message short
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="enclave-deid", description="De-identify DICOM and FHIR R4 data (see docs/deid.md).")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, helptext in (("dicom", "de-identify DICOM files"), ("fhir", "de-identify FHIR R4 JSON/NDJSON")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--config", type=Path, help="YAML config (defaults apply when omitted)")
        p.add_argument("--key-file", type=Path, required=True, help="project key file (>= 32 bytes)")
        p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
        if name == "dicom":
            p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
        p.add_argument("in_dir", type=Path, metavar="IN_DIR")
        p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    v = sub.add_parser("verify", help="scan outputs for identifying values seen in the inputs")
    v.add_argument("--kind", choices=("dicom", "fhir"), required=True)
    v.add_argument("--config", type=Path)
    v.add_argument("--quiet", action="store_true")
    v.add_argument("in_dir", type=Path, metavar="IN_DIR")
    v.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    return ap


def _progress(quiet: bool, desc: str):  # noqa: ANN202 - returns a wrapper for iterables
    def wrap(it: Iterable[T], total: int) -> Iterable[T]:
        if quiet or not sys.stderr.isatty():
            return it
        from tqdm import tqdm

        return tqdm(it, total=total, desc=desc, unit="item", file=sys.stderr)

    return wrap


def _summary(quiet: bool, kind: str, counts: dict[str, int], out_dir: Path) -> None:
    if quiet:
        return
    text = ", ".join(f"{k}={v}" for k, v in counts.items())
    print(f"enclave-deid {kind}: {text}; manifest: {out_dir / '_manifest.json'}", file=sys.stderr)


def _exit_for(counts: dict[str, int]) -> int:
    if counts.get("failed", 0) or counts.get("leaks", 0):
        return EXIT_FAILED
    if counts.get("quarantined", 0) or counts.get("skipped", 0):
        return EXIT_PARTIAL
    return EXIT_OK


def _check_dirs(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise ConfigError("IN_DIR is not a directory")
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
        raise ConfigError("OUT_DIR must not be IN_DIR or inside it")


def _cmd_dicom(args: argparse.Namespace, config: DeidConfig) -> int:
    from .pipeline import run_dicom

    key = load_key(args.key_file)
    if args.jobs < 1:
        raise ConfigError("--jobs must be >= 1")
    manifest = run_dicom(
        args.in_dir, args.out_dir, config, key, jobs=args.jobs, progress=_progress(args.quiet, "dicom")
    )
    counts = manifest.counts()
    _summary(args.quiet, "dicom", counts, args.out_dir)
    for f in manifest.failed:
        for leak in f.get("leaks", []):
            print(f"LEAK {leak['instance']}: {leak['path']} ({leak['kind']})", file=sys.stderr)
    return _exit_for(counts)


def _cmd_fhir(args: argparse.Namespace, config: DeidConfig) -> int:
    from .fhir import run_fhir

    key = load_key(args.key_file)
    manifest = run_fhir(args.in_dir, args.out_dir, config, key, progress=_progress(args.quiet, "fhir"))
    counts = manifest.counts()
    _summary(args.quiet, "fhir", counts, args.out_dir)
    for f in manifest.failed:
        for leak in f.get("leaks", []):
            print(f"LEAK {leak['instance']}: {leak['path']} ({leak['kind']})", file=sys.stderr)
    return _exit_for(counts)


def _cmd_verify(args: argparse.Namespace, config: DeidConfig) -> int:
    if args.kind == "dicom":
        from .pipeline import verify_dicom_dirs

        report = verify_dicom_dirs(args.in_dir, args.out_dir, config)
    else:
        from .fhir import verify_fhir_dirs

        report = verify_fhir_dirs(args.in_dir, args.out_dir, config)
    result = {
        "checked": report.checked,
        "leaks": [lk.as_dict() for lk in report.leaks],
        "errors": report.errors,
        "notes": report.notes,
    }
    print(json.dumps(result, indent=2))
    if not args.quiet:
        print(
            f"enclave-deid verify: checked={report.checked} leaks={len(report.leaks)} errors={len(report.errors)}",
            file=sys.stderr,
        )
    return EXIT_FAILED if report.leaks or report.errors else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        config = load_config(args.config)
        _check_dirs(args.in_dir, args.out_dir)
        if args.command == "dicom":
            return _cmd_dicom(args, config)
        if args.command == "fhir":
            return _cmd_fhir(args, config)
        return _cmd_verify(args, config)
    except (ConfigError, KeyError_) as exc:
        print(f"enclave-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
