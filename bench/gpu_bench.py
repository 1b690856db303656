"""Benchmark of GPU bookings. Prints figures; asserts nothing about timings.

1. Admission decision time with N existing bookings in one family (default 10,000): the webhook's own
   function (`admission.review_gpu_reservation`, the same code the kopf webhook calls, without HTTP) on a
   ledger holding N admitted bookings, for M candidate bookings (about half fit, half are refused with the
   free windows computed). p50 / p99 / max.
2. Bookings to their phase through the real stack: the local plane, kwok GPU nodes, MinIO and the
   operator as a process; B bookings (default 500) created with kubectl as a researcher through the
   webhook; the time until every one is Scheduled, and the admission latency the API server reports for
   the webhook (apiserver_admission_webhook_admission_duration_seconds).

    python bench/gpu_bench.py [--existing 10000] [--candidates 2000] [-b 500] [--skip-api] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from enclave_operator import admission, gpu_calendar  # noqa: E402
from enclave_operator.reconcilers import gpu_bookings  # noqa: E402
from enclave_operator.settings import OperatorSettings  # noqa: E402
from localenv import environment  # noqa: E402
from localenv.kwok import GPU_LABEL_KEY, GPU_PRODUCTS, apply_nodes, gpu_node, kwok_service  # noqa: E402
from localenv.minio import start_minio  # noqa: E402
from localenv.plane import OPERATOR_USER, start_plane  # noqa: E402
from localenv.runtime import RunDir, Service, free_port, http_ok, interrupt_on_sigterm  # noqa: E402
from localenv.webhooks import ca_file, install_webhooks, listening, webhook_settings  # noqa: E402
from support.builders import BookingBuilder, ProjectBuilder  # noqa: E402

KUBECTL = str(ROOT / ".cache" / "bin" / "kubectl")
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def iso(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def in_process(existing: int, candidates: int, seed: int, projects: int = 100) -> None:
    """Admission with `existing` admitted bookings of one family (over `projects` projects) spread over 90 days,
    1–4 GPUs, 2–48 h each; the family's capacity is their peak + 2, so candidates of 1–32 GPUs are
    partly admitted and partly refused (with the free windows nearby computed)."""
    rng = random.Random(seed)
    settings = OperatorSettings.model_validate({"s3": {"endpoint": "minio:9000"}, "gpu": {
        "families": [{"name": "a100", "nodeLabelValue": "A100"}],
        "limits": {"maxGpus": 100_000, "maxHours": 1000, "maxLeadDays": 365}}})  # fmt: skip
    ledger = gpu_bookings.Ledger()
    for p in range(projects):
        ledger.put_project(gpu_bookings.ProjectView(f"p{p}", f"p{p}", datetime.date(2099, 1, 1), True, False,
                                                    False, {"alice": "owner"}, None, 0, 1))  # fmt: skip

    def window() -> tuple[datetime.datetime, datetime.datetime]:
        start = NOW + datetime.timedelta(minutes=rng.randint(10, 90 * 24 * 60))
        return start, start + datetime.timedelta(hours=rng.randint(2, 48))

    for i in range(existing):
        start, end = window()
        count = rng.randint(1, 4)
        raw = (BookingBuilder(f"b{i}", f"p{i % projects}").gpus(count).window(iso(start), iso(end))
               .meta(uid=f"u{i}", creationTimestamp=iso(NOW), resourceVersion=str(i + 1))
               .status(phase="Scheduled", booked={"count": count, "start": iso(start), "end": iso(end)}).obj())
        ledger.put_booking(gpu_bookings.booking_from_body(raw))  # type: ignore[arg-type]
    held = [b.booked for b in ledger.bookings.values() if b.booked]
    peak = max((s.used for s in gpu_calendar.profile(held)), default=0)
    capacity = peak + 2
    ledger.put_node(gpu_bookings.NodeView("n", "A100", capacity, True, False), settings.gpu)
    requester = admission.Requester("alice", ("researchers",))
    timings, refused = [], 0
    for i in range(candidates):
        start, end = window()
        raw = BookingBuilder(f"c{i}", f"p{i % projects}").gpus(rng.randint(1, 32)).window(iso(start), iso(end)).obj()
        t0 = time.perf_counter()
        try:
            admission.review_gpu_reservation(operation="CREATE", requester=requester, old=None, new=raw,
                                             ledger=ledger, settings=settings, slurm_enabled=False, now=NOW)
        except admission.Denied:
            refused += 1
        timings.append((time.perf_counter() - t0) * 1000)
    print(f"admission, in process:  {existing} admitted bookings of one family in {projects} projects (peak use "
          f"{peak} GPUs, capacity {capacity}); {candidates} candidates, {refused} refused with free windows")
    print(f"  decision time:        p50 {percentile(timings, 0.5):.2f} ms, p99 {percentile(timings, 0.99):.2f} ms, "
          f"max {max(timings):.2f} ms, mean {statistics.mean(timings):.2f} ms")  # fmt: skip


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True,
                            text=True, timeout=1200)  # fmt: skip
    if result.returncode:
        raise SystemExit(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def webhook_latency(server: str, token: str) -> tuple[float, float]:
    """(count, sum seconds) of the API server's admission webhook calls."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as response:
        text = response.read().decode()
    pattern = (r'^apiserver_admission_webhook_admission_duration_seconds_(count|sum)'
               r'\{[^}]*name="[^"]*booking[^"]*"[^}]*\} (\S+)$')
    values = {"count": 0.0, "sum": 0.0}
    for m in re.finditer(pattern, text, re.M):
        values[m.group(1)] += float(m.group(2))
    return values["count"], values["sum"]


def through_api(bookings: int, keep: bool) -> None:
    run = RunDir(Path(tempfile.mkdtemp(prefix="enclave-gpu-bench-")))
    try:
        _through_api(run, bookings)
    finally:  # also on an error or SIGTERM: no servers left behind
        if keep:
            print(f"kept running: KUBECONFIG={run.path / 'kubeconfig'}; "
                  f"stop with: python hack/localenv --run-dir {run.path} down")  # fmt: skip
        else:
            run.stop_all()


def _through_api(run: RunDir, bookings: int) -> None:
    environment.build(["plane", "kwok", "minio"])
    plane = start_plane(run, controller_manager=True)
    kubeconfig = plane["kubeconfig"]
    run.start(kwok_service(run, kubeconfig))
    minio = start_minio(run)
    token = (run.path / "pki" / "tokens.csv").read_text().split(",", 1)[0]
    for folder in ("crds", "manifests/rbac", "manifests/policy"):
        kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / folder))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/gpureservations.enclave.io")
    k = [KUBECTL, f"--kubeconfig={kubeconfig}"]
    apply_nodes(k, [gpu_node(f"a100-{i}", GPU_LABEL_KEY, GPU_PRODUCTS["a100"], 8) for i in range(2)])
    webhook, webhook_env = webhook_settings(run.path, free_port(), "bench.webhooks.enclave.io")
    config = run.path / "operator.yaml"
    config.write_text(yaml.safe_dump({
        "s3": {"endpoint": minio["endpoint"], "secure": False},
        "intervals": {"resyncSeconds": 120, "retrySeconds": 5},
        "webhook": webhook,
        "gpu": {"families": [{"name": "a100", "nodeLabelValue": GPU_PRODUCTS["a100"]}],
                "limits": {"maxGpus": 100_000, "maxHours": 1000, "maxLeadDays": 365}},
    }))  # fmt: skip
    metrics_port, live_port = free_port(), free_port()
    run.start(Service(
        name="enclave-operator",
        argv=[sys.executable, "-m", "enclave_operator", "run", f"--config={config}", "--standalone",
              "--bind=127.0.0.1", f"--liveness-port={live_port}", f"--metrics-port={metrics_port}"],
        env={"KUBECONFIG": plane["operator_kubeconfig"], "ENCLAVE_S3_ACCESS_KEY": minio["access_key"],
             "ENCLAVE_S3_SECRET_KEY": minio["secret_key"], **webhook_env},
        ready=lambda: http_ok(f"http://127.0.0.1:{live_port}/healthz") and listening(int(webhook["port"])),
    ))  # fmt: skip
    install_webhooks(Path(kubeconfig), f"https://127.0.0.1:{webhook['port']}", ca_file(run.path),
                     "bench.webhooks.enclave.io", OPERATOR_USER)  # fmt: skip
    name = f"gb{secrets.token_hex(2)}"
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(ProjectBuilder(name).deletion("Delete").obj()))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "--timeout=300s", f"researchproject/{name}")
    time.sleep(2)  # the webhook registered, the project in the operator's ledger
    rng = random.Random(7)
    docs = []
    for i in range(bookings):
        start = NOW + datetime.timedelta(hours=1 + rng.randint(0, 60 * 24))
        docs.append(BookingBuilder(f"b{i:04d}", name).gpus(rng.randint(1, 4))
                    .window(iso(start), iso(start + datetime.timedelta(hours=rng.randint(1, 12)))).obj())  # fmt: skip
    before = webhook_latency(plane["server"], token)
    t0 = time.monotonic()
    out = subprocess.run([*k, "create", "-f", "-", "--as=alice", "--as-group=researchers"], capture_output=True,
                         text=True, input="---\n".join(yaml.safe_dump(d) for d in docs), timeout=3600)  # fmt: skip
    created = out.stdout.count("created")
    applied = time.monotonic() - t0
    while True:
        items = json.loads(kubectl(kubeconfig, "get", "gpureservations", "-n", name, "-o", "json"))["items"]
        decided = [i for i in items if (i.get("status") or {}).get("phase") in ("Scheduled", "Rejected")]
        if len(decided) >= created:
            break
        time.sleep(1.0)
    total = time.monotonic() - t0
    after = webhook_latency(plane["server"], token)
    phases: dict[str, int] = {}
    for item in items:
        phase = item["status"]["phase"]
        phases[phase] = phases.get(phase, 0) + 1
    calls = after[0] - before[0]
    print(f"through the API:        {bookings} bookings by kubectl as a researcher; {created} passed the webhook, "
          f"{bookings - created} refused there (did not fit)")  # fmt: skip
    print(f"  kubectl create:       {applied:.1f} s ({created / applied:.1f}/s); webhook as the API server "
          f"measured it: mean {1000 * (after[1] - before[1]) / max(calls, 1):.1f} ms over {calls:.0f} calls")
    print(f"  all at their phase:   {total:.1f} s after the first create ({phases})")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    figures = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^enclave_reconcile_duration_seconds_(count|sum)\{kind="GpuReservation"\} (\S+)$', text, re.M)}  # fmt: skip
    admission = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^enclave_admission_duration_seconds_(count|sum)\{kind="GpuReservation"\} (\S+)$', text, re.M)}  # fmt: skip
    print(f"  operator:             {figures.get('count', 0):.0f} booking reconciles, mean "
          f"{1000 * figures.get('sum', 0) / max(figures.get('count', 1), 1):.0f} ms; the webhook's own review: mean "
          f"{1000 * admission.get('sum', 0) / max(admission.get('count', 1), 1):.1f} ms "
          f"over {admission.get('count', 0):.0f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, default=10_000, help="admitted bookings in one family")
    parser.add_argument("--candidates", type=int, default=2000, help="admission decisions timed")
    parser.add_argument("-b", "--bookings", type=int, default=500, help="bookings through the real API")
    parser.add_argument("--skip-api", action="store_true", help="only the in-process admission figures")
    parser.add_argument("--keep", action="store_true", help="leave the environment running")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    interrupt_on_sigterm()
    print(f"nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    in_process(args.existing, args.candidates, args.seed)
    if not args.skip_api:
        through_api(args.bookings, args.keep)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
