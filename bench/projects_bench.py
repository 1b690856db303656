"""Benchmark: N ResearchProjects applied against the real local plane and MinIO with the operator
running as a process. Prints time until all are Ready, API requests and backend writes per project,
the operator's peak RSS, and what a no-op resync writes. Not a test: no assertions on timings.

    python bench/projects_bench.py [-n 200] [--resync 60] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from localenv import environment  # noqa: E402
from localenv.minio import start_minio  # noqa: E402
from localenv.plane import start_plane  # noqa: E402
from localenv.runtime import RunDir, Service, free_port, http_ok  # noqa: E402

KUBECTL = str(ROOT / ".cache" / "bin" / "kubectl")


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    if result.returncode:
        raise SystemExit(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def apiserver_requests(server: str, token: str) -> float:
    """Sum of apiserver_request_total: every request the API server answered."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^apiserver_request_total\{[^}]*\} (\S+)$", text, re.M))


def operator_metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def seconds_per_part(url: str) -> dict[str, float]:
    """Total time spent in backend calls, per part (from the operator's call-duration histogram)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(
        r'^enclave_backend_call_duration_seconds_sum\{action="[^"]*",part="([^"]+)"\} (\S+)$', text, re.M
    ):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def project(name: str, slurm: bool) -> dict:
    obj = {
        "apiVersion": "enclave.io/v1alpha1",
        "kind": "ResearchProject",
        "metadata": {"name": name},
        "spec": {
            "displayName": f"Benchmark {name}",
            "owner": "alice",
            "members": [{"user": "alice", "role": "owner"}, {"user": "bob", "role": "member"}],
            "validUntil": "2099-12-31",
            "storage": {"quota": "1Gi"},
            "deletionPolicy": "Delete",
        },
    }
    if slurm:
        obj["spec"]["compute"] = {"slurm": {"parent": "root", "fairshare": 1, "limits": {"cpu": 64, "gpu": 1}}}
    return obj


def ready_count(kubeconfig: str, prefix: str) -> tuple[int, int]:
    items = json.loads(kubectl(kubeconfig, "get", "researchprojects", "-o", "json"))["items"]
    mine = [i for i in items if i["metadata"]["name"].startswith(prefix)]
    ready = sum(
        1 for i in mine
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions", []))
    )  # fmt: skip
    return ready, len(mine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="number of projects (default 200)")
    parser.add_argument("--resync", type=float, default=60.0, help="operator resync interval, seconds")
    parser.add_argument("--keep", action="store_true", help="leave the environment running")
    parser.add_argument("--all-backends", action="store_true",
                        help="also the FreeIPA test server (identity groups) and real Slurm (accounts)")  # fmt: skip
    args = parser.parse_args()

    run = RunDir(Path(tempfile.mkdtemp(prefix="enclave-bench-")))
    environment.build(["plane", "minio"])
    plane = start_plane(run)
    minio = start_minio(run)
    kubeconfig = plane["kubeconfig"]
    token = (run.path / "pki" / "tokens.csv").read_text().split(",", 1)[0]
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd/researchprojects.enclave.io")
    config = run.path / "operator.yaml"
    settings: dict = {"s3": {"endpoint": minio["endpoint"], "secure": False},
                      "intervals": {"resyncSeconds": args.resync, "retrySeconds": 5}}  # fmt: skip
    extra_env: dict[str, str] = {}
    if args.all_backends:
        from python_freeipa import ClientMeta

        from localenv.freeipa_server import start_freeipa
        from localenv.slurm import start_slurm

        environment.build(["slurm"])
        ipa, slurm = start_freeipa(run), start_slurm(run)
        admin = ClientMeta(host=ipa["host"], verify_ssl=ipa["ca_cert"], dns_discovery=False)
        admin.login(ipa["admin_user"], ipa["password"])
        for user in ("alice", "bob"):
            admin.user_add(user, o_givenname=user, o_sn="Bench", o_cn=user)
        settings["identity"] = {"provider": "freeipa", "freeipa": {"url": ipa["url"], "caFile": ipa["ca_cert"],
                                                                   "username": ipa["admin_user"]}}  # fmt: skip
        settings["slurm"] = {"slurmConf": slurm["slurm_conf"], "cluster": slurm["cluster"], "timeoutSeconds": 30}
        extra_env["ENCLAVE_IPA_PASSWORD"] = ipa["password"]
    config.write_text(yaml.safe_dump(settings))
    metrics_port, live_port = free_port(), free_port()
    op = run.start(Service(
        name="enclave-operator",
        argv=[sys.executable, "-m", "enclave_operator", "run", f"--config={config}", "--standalone",
              "--bind=127.0.0.1", f"--liveness-port={live_port}", f"--metrics-port={metrics_port}"],
        env={"KUBECONFIG": kubeconfig, "ENCLAVE_S3_ACCESS_KEY": minio["access_key"],
             "ENCLAVE_S3_SECRET_KEY": minio["secret_key"], **extra_env},
        ready=lambda: http_ok(f"http://127.0.0.1:{live_port}/healthz"),
    ))  # fmt: skip
    del op
    pid = int(run.load()["services"]["enclave-operator"]["pid"])
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    prefix = f"b{secrets.token_hex(2)}-"
    manifest = "---\n".join(yaml.safe_dump(project(f"{prefix}{i:05d}", args.all_backends)) for i in range(args.n))

    requests_before = apiserver_requests(plane["server"], token)
    writes_before = operator_metric(metrics, "enclave_backend_writes_total")
    polls = 0
    start = time.monotonic()
    kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    applied = time.monotonic() - start
    while True:
        ready, total = ready_count(kubeconfig, prefix)
        polls += 1
        if ready == args.n:
            break
        time.sleep(1.0)
    all_ready = time.monotonic() - start
    # Our own traffic: one apply (discovery + a GET and a create per object) and one list per poll.
    own = 3 * args.n + polls + 10
    requests = apiserver_requests(plane["server"], token) - requests_before - own
    writes = operator_metric(metrics, "enclave_backend_writes_total") - writes_before

    parts = seconds_per_part(metrics)
    quiet_writes_before = operator_metric(metrics, "enclave_backend_writes_total")
    quiet_requests_before = apiserver_requests(plane["server"], token)
    reconciles_before = operator_metric(metrics, "enclave_reconcile_total")
    time.sleep(args.resync * 1.5)
    quiet_writes = operator_metric(metrics, "enclave_backend_writes_total") - quiet_writes_before
    quiet_reconciles = operator_metric(metrics, "enclave_reconcile_total") - reconciles_before
    quiet_requests = apiserver_requests(plane["server"], token) - quiet_requests_before

    print(f"projects:                         {args.n}  (backends: kubernetes, s3"
          f"{', freeipa, slurm' if args.all_backends else ''})")  # fmt: skip
    print(f"kubectl apply of all:             {applied:.1f} s")
    print(f"time until all Ready:             {all_ready:.1f} s  ({args.n / all_ready:.1f} projects/s)")
    print(f"API requests per project:         {requests / args.n:.1f}  (operator + kopf, bench traffic subtracted)")
    print(f"backend writes per project:       {writes / args.n:.1f}")
    print(f"operator peak RSS:                {peak_rss_mb(pid):.0f} MiB")
    total = sum(parts.values()) or 1.0
    ranked = sorted(parts.items(), key=lambda x: -x[1])
    print("backend call time by part:        " + ", ".join(f"{p} {s:.0f}s ({100 * s / total:.0f}%)" for p, s in ranked))
    print(f"no-op resync ({args.resync * 1.5:.0f} s, {quiet_reconciles:.0f} reconciles): "
          f"{quiet_writes:.0f} backend writes, {quiet_requests:.0f} API requests (reads)")  # fmt: skip
    if args.keep:
        print(f"kept running: KUBECONFIG={kubeconfig}; stop with: python hack/localenv --run-dir {run.path} down")
    else:
        run.stop_all()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
