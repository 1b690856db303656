#!/usr/bin/env python3
"""Benchmark: enclave-deid DICOM pipeline vs a plain pydicom read+write copy.

Why: the target is >= 500 instances/s per core on small CT files and at most
1.5x the cost of a plain pydicom read+write. This times both on pydicom's
bundled CT_small.dcm replicated N times (single process, one core) and prints
instances/s for each plus the ratio. No assertions: CI must not be timing-flaky.

Usage: ``python bench/deid_bench.py [-n 500] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from enclave_operator.deid.config import DeidConfig
from enclave_operator.deid.dicom import DicomDeidentifier
from enclave_operator.deid.keys import Keys
from enclave_operator.deid.pipeline import run_dicom

KEY = b"benchmark-key-0123456789abcdef-0123456789"


def plain_copy(files: list[Path], out: Path) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.save_as(out / f.name)


def engine_only(files: list[Path], out: Path) -> None:
    engine = DicomDeidentifier(DeidConfig().dicom, Keys(KEY))
    for f in files:
        ds = pydicom.dcmread(f)
        engine.deidentify(ds)
        ds.save_as(out / f.name, enforce_file_format=True)


def full_pipeline(in_dir: Path, out: Path) -> None:
    m = run_dicom(in_dir, out, DeidConfig(), KEY)
    if m.counts()["written"] != len(list(in_dir.iterdir())):
        raise SystemExit("benchmark run did not write every instance")


def best_of(repeat: int, fn, *args) -> float:  # noqa: ANN001 - tiny helper
    best = float("inf")
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="deid-bench-out-"))
        t0 = time.perf_counter()
        fn(*args, out)
        best = min(best, time.perf_counter() - t0)
        shutil.rmtree(out)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500, help="number of instances (default 500)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; best is reported")
    args = ap.parse_args(argv)
    src = Path(get_testdata_file("CT_small.dcm"))
    work = Path(tempfile.mkdtemp(prefix="deid-bench-in-"))
    try:
        for i in range(args.n):
            shutil.copy(src, work / f"ct_{i:05d}.dcm")
        files = sorted(work.iterdir())
        plain_copy(files[:20], Path(tempfile.mkdtemp()))  # warm imports and caches
        t_plain = best_of(args.repeat, plain_copy, files)
        t_engine = best_of(args.repeat, engine_only, files)
        t_full = best_of(args.repeat, full_pipeline, work)
    finally:
        shutil.rmtree(work)
    n = args.n
    print(f"instances: {n} x CT_small.dcm ({src.stat().st_size} bytes), best of {args.repeat}, 1 process")
    print(f"pydicom read+write copy : {n / t_plain:8.0f} instances/s")
    print(f"deid engine (no verify) : {n / t_engine:8.0f} instances/s  ({t_engine / t_plain:.2f}x plain)")
    print(f"deid full pipeline      : {n / t_full:8.0f} instances/s  ({t_full / t_plain:.2f}x plain)")
    print("full pipeline = read, burn-in check, de-identify, in-run verification, write, manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
