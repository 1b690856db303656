"""Benchmark: N ResearchProjects against the real local plane and MinIO (with --all-backends also the
FreeIPA test server and real Slurm), the operator running as a process, compared with the floor: the
same backend writes done directly at the best concurrency each backend allows (bench/floor.py), in the
same run, on the same servers. Prints figures; asserts nothing about timings.

    python bench/projects_bench.py [-n 200] [--all-backends] [--resync 60] [--profile DIR] [--json FILE]

Phases: start the servers; the floor (its projects are verified with the adapters' own observe); start
the operator; a pilot project; N projects created at once while the pilot is edited again and again
(single-edit latency under load); until all are Ready; then a no-op resync window (writes must be 0).
The load average is printed at the start and end: the machine is shared, figures taken under load are
noisy, the ratio to the floor (taken minutes apart on the same servers) much less so.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # noqa: E402
from lightkube import AsyncClient, KubeConfig  # noqa: E402
from lightkube.generic_resource import create_global_resource  # noqa: E402
from lightkube.types import PatchType  # noqa: E402

from enclave_operator import settings as settings_mod  # noqa: E402
from enclave_operator.backends import identity_freeipa, s3_minio, slurm_accounts  # noqa: E402
from enclave_operator.reconcilers import research_project  # noqa: E402
from localenv import environment  # noqa: E402
from localenv.minio import start_minio  # noqa: E402
from localenv.plane import OPERATOR_USER, start_plane  # noqa: E402
from localenv.runtime import RunDir, Service, free_port, http_ok, interrupt_on_sigterm  # noqa: E402
from localenv.webhooks import ca_file, install_webhooks, listening, webhook_settings  # noqa: E402

KUBECTL = str(ROOT / ".cache" / "bin" / "kubectl")
Project = create_global_resource("enclave.io", "v1alpha1", "ResearchProject", "researchprojects")
PEOPLE = ("alice", "bob", "carol")
"""Directory people: alice and bob are every project's members, carol is added and removed by the edits."""
CREATE_CONCURRENCY = 32
"""Creates in flight from the bench (a GitOps tool applying a repository does about as much)."""
EDIT_TIMEOUT_S = 300.0
KUBE_TIMEOUT_S = 120.0
"""The bench's own API calls: generous, the machine is shared and may be loaded."""
READ_VERBS = ("GET", "LIST")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


# --- measurements ---------------------------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


BENCH = "bench"
"""This process, in the CPU figures: during the floor its writes (the floor's client), during the rollout its creates,
watch and edits."""


def cpu_line(cpu: dict[str, float], seconds: float) -> str:
    """The processes' CPU seconds, busiest first, and their sum as a share of what the cores had in `seconds`."""
    busiest = sorted(cpu.items(), key=lambda x: -x[1])
    total, cores = sum(cpu.values()), os.cpu_count() or 1
    return (", ".join(f"{k} {v:.0f}" for k, v in busiest if v >= 0.5)
            + f"; total {total:.0f} = {100 * total / (cores * seconds):.0f}% of {cores} cores")  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children: sacctmgr runs), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def apiserver_metrics(server: str, token: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as response:
        return str(response.read().decode())


def apiserver_requests(text: str) -> dict[str, float]:
    """apiserver_request_total summed per verb and per "verb resource[/subresource]": every request the API server
    answered."""
    out: dict[str, float] = collections.defaultdict(float)
    for m in re.finditer(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        resource = labels.get("resource", "?") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        out[labels.get("verb", "?")] += float(m.group(2))
        out[f"{labels.get('verb', '?')} {resource}"] += float(m.group(2))
    return dict(out)


def admission_calls(text: str) -> tuple[float, float]:
    """(calls, seconds) of the API server's calls to admission webhooks, as it measured them."""
    values = {"count": 0.0, "sum": 0.0}
    for m in re.finditer(r"^apiserver_admission_webhook_admission_duration_seconds_(count|sum)\{[^}]*\} (\S+)$",
                         text, re.M):  # fmt: skip
        values[m.group(1)] += float(m.group(2))
    return values["count"], values["sum"]


def operator_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def seconds_per_part(text: str) -> dict[str, float]:
    out: dict[str, float] = collections.defaultdict(float)
    for m in re.finditer(r'^enclave_backend_call_duration_seconds_sum\{action="[^"]*",part="([^"]+)"\} (\S+)$',
                         text, re.M):  # fmt: skip
        out[m.group(1)] += float(m.group(2))
    return dict(out)


@dataclasses.dataclass
class Counters:
    """A snapshot of everything counted, to take differences between phases."""

    api: dict[str, float]
    text: str
    cpu: dict[str, float]
    admission: tuple[float, float] = (0.0, 0.0)
    """(calls, seconds) of the API server's admission webhook calls."""

    def api_reads(self) -> float:
        return sum(v for k, v in self.api.items() if k in READ_VERBS)

    def api_writes(self) -> float:
        return sum(v for k, v in self.api.items() if k in WRITE_VERBS)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = RunDir(Path(tempfile.mkdtemp(prefix="enclave-bench-")))
        self.own = collections.Counter[str]()
        """Requests the bench itself sent to the API server during a measured phase (subtracted)."""
        backends = "kubernetes, s3" + (", freeipa, slurm" if args.all_backends else "")
        self.report: dict[str, Any] = {"n": args.n, "load_start": loadavg(), "backends": backends}

    # servers -----------------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        environment.build(["plane", "minio"] + (["slurm"] if self.args.all_backends else []))
        self.plane = start_plane(self.run)
        self.minio = start_minio(self.run, scanner_speed="default")  # as deployed (see localenv/minio.py)
        self.kubeconfig = self.plane["kubeconfig"]
        """The bench's own identity: a platform admin (system:masters), as a GitOps tool applying projects."""
        self.token = (self.run.path / "pki" / "tokens.csv").read_text().split(",", 1)[0]
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd/researchprojects.enclave.io")
        self.conn = s3_minio.S3Connection(self.minio["endpoint"], self.minio["access_key"], self.minio["secret_key"],
                                          secure=False)  # fmt: skip
        admin = s3_minio.S3Clients(self.conn).admin
        for user in PEOPLE:  # as the identity provider's sync would make them
            admin.user_add(user, secrets.token_urlsafe(18))
        self.config: dict[str, Any] = {
            "s3": {"endpoint": self.minio["endpoint"], "secure": False},
            "intervals": {"resyncSeconds": self.args.resync, "retrySeconds": 5},
        }
        # The operator has its own identity, as in a deployment: the webhooks tell its requests from an admin's.
        self.env = {"KUBECONFIG": self.plane["operator_kubeconfig"], "ENCLAVE_S3_ACCESS_KEY": self.minio["access_key"],
                    "ENCLAVE_S3_SECRET_KEY": self.minio["secret_key"]}  # fmt: skip
        for assignment in self.args.operator_env or ():
            name, _, value = assignment.partition("=")
            self.env[name] = value
        self.ipa_meta = None
        self.sacctmgr = None
        if self.args.all_backends:
            from python_freeipa import ClientMeta

            from localenv.freeipa_server import start_freeipa
            from localenv.slurm import start_slurm

            ipa, slurm = start_freeipa(self.run), start_slurm(self.run)
            meta = ClientMeta(host=ipa["host"], verify_ssl=ipa["ca_cert"], dns_discovery=False)
            meta.login(ipa["admin_user"], ipa["password"])
            for user in PEOPLE:
                meta.user_add(user, o_givenname=user, o_sn="Bench", o_cn=user)
            self.ipa_meta = meta
            self.config["identity"] = {"provider": "freeipa", "freeipa": {
                "url": ipa["url"], "caFile": ipa["ca_cert"], "username": ipa["admin_user"]}}  # fmt: skip
            self.config["slurm"] = {"slurmConf": slurm["slurm_conf"], "cluster": slurm["cluster"], "timeoutSeconds": 30}
            self.env["ENCLAVE_IPA_PASSWORD"] = ipa["password"]
        # Served by the operator; installed once it is up (install_webhooks), unless --no-webhooks.
        self.config["webhook"], webhook_env = webhook_settings(self.run.path, free_port())
        self.env.update(webhook_env)
        for key, value in self.args.set or []:
            section, _, field = key.partition(".")
            self.config.setdefault(section, {})[field] = yaml.safe_load(value)
        self.settings = settings_mod.parse(self.config)
        if self.args.all_backends:
            assert self.settings.slurm is not None
            self.sacctmgr = slurm_accounts.Sacctmgr(self.settings.slurm)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([KUBECTL, f"--kubeconfig={self.kubeconfig}", *args], input=stdin,
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        if result.returncode:
            raise SystemExit(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
        return result.stdout

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "displayName": "Benchmark project",
            "owner": "alice",
            "members": [{"user": "alice", "role": "owner"}, {"user": "bob", "role": "member"}],
            "validUntil": "2099-12-31",
            "storage": {"quota": "1Gi"},
            "deletionPolicy": "Delete",
        }
        if self.args.all_backends:
            spec["compute"] = {"slurm": {"parent": "root", "fairshare": 1,
                                         "limits": {"cpu": 64, "mem": "64Gi", "gpu": 1}}}  # fmt: skip
        return spec

    def kube(self) -> AsyncClient:
        return AsyncClient(config=KubeConfig.from_file(self.kubeconfig), field_manager="enclave-bench",
                           timeout=httpx2.Timeout(KUBE_TIMEOUT_S))  # fmt: skip

    def counters(self) -> Counters:
        pids = {name: int(entry["pid"]) for name, entry in self.run.load()["services"].items()}
        cpu = {}
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                cpu[name] = cpu_seconds(pid)
        cpu[BENCH] = time.process_time()  # the floor's own client, or the rollout's creates, watch and edits
        text = operator_metrics(self.metrics_url) if hasattr(self, "metrics_url") else ""
        api = apiserver_metrics(self.plane["server"], self.token)
        return Counters(apiserver_requests(api), text, cpu, admission_calls(api))

    def settle(self, most: float = 30.0) -> None:
        """Wait until the servers are quiet (the API server rebuilds its OpenAPI for new CRDs for a while), so
        that neither the floor nor the operator pays for the start-up of the other's servers."""
        deadline = time.monotonic() + most
        quiet = 0
        while time.monotonic() < deadline and quiet < 2:
            before = self.counters().cpu
            time.sleep(1.0)
            after = self.counters().cpu
            busy = sum(after.get(k, 0) - v for k, v in before.items() if k not in ("enclave-operator", BENCH))
            quiet = quiet + 1 if busy < 0.15 else 0

    # the floor ---------------------------------------------------------------------------------------------

    async def floor(self) -> None:
        self.settle()
        names = [f"f{secrets.token_hex(2)}-{i:05d}" for i in range(self.args.n)]
        plans = floor.plans(names, self.spec(), self.settings)
        kube = self.kube()
        before = self.counters()
        result = await floor.run(plans, self.settings, kube=kube, s3=self.conn, ipa=self.ipa_meta,
                                 slurm=self.sacctmgr)  # fmt: skip
        after = self.counters()
        identity_client = None
        if self.settings.identity is not None and self.settings.identity.freeipa is not None:
            from pydantic import SecretStr

            identity_client = identity_freeipa.FreeIpaClient(self.settings.identity.freeipa,
                                                             SecretStr(self.env["ENCLAVE_IPA_PASSWORD"]))  # fmt: skip
        backends = research_project.Backends(kube=kube, s3=s3_minio.S3Clients(self.conn), identity=identity_client,
                                             slurm=self.sacctmgr)  # fmt: skip
        sample = plans[:2] + plans[-1:]
        problems = await floor.verify(sample, backends, self.settings)
        await kube.close()
        if identity_client is not None:
            await identity_client.close()
        self.report["floor"] = {
            "seconds": result.seconds,
            "per_backend": result.per_backend,
            "writes_per_project": {k: v / self.args.n for k, v in result.writes.items()},
            "api_requests": after.api_writes() - before.api_writes() + after.api_reads() - before.api_reads(),
            "verified": f"{len(sample) - len({p.split()[0] for p in problems})}/{len(sample)} projects up to date",
            "problems": problems[:5],
            "cpu": {k: after.cpu.get(k, 0) - v for k, v in before.cpu.items()},
        }

    # the operator ------------------------------------------------------------------------------------------

    def start_operator(self) -> None:
        config = self.run.path / "operator.yaml"
        config.write_text(yaml.safe_dump(self.config))
        metrics_port, live_port = free_port(), free_port()
        argv = ["-m", "enclave_operator", "run", f"--config={config}", "--standalone", "--bind=127.0.0.1",
                f"--liveness-port={live_port}", f"--metrics-port={metrics_port}"]  # fmt: skip
        if self.args.memory_profile:
            self.snapshot = self.run.path / "tracemalloc.snapshot"
            argv = [str(Path(__file__).resolve().parent / "traced_operator.py"), str(self.snapshot), *argv[2:]]
        self.run.start(Service(
            name="enclave-operator",
            argv=[sys.executable, *argv],
            env={**self.env, "PYTHONUNBUFFERED": "1"},
            ready=lambda: http_ok(f"http://127.0.0.1:{live_port}/healthz"),
        ))  # fmt: skip
        self.pid = int(self.run.load()["services"]["enclave-operator"]["pid"])
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.install_webhooks()

    def install_webhooks(self) -> None:
        """The Mutating- and ValidatingWebhookConfiguration, as the chart installs them (failurePolicy Fail): every
        project the bench creates or edits then passes the operator's admission, which also puts the finalizer on
        at CREATE. After the floor (which never goes through admission) and once the webhook port listens."""
        hook = self.config["webhook"]
        if self.args.no_webhooks:
            self.report["webhooks"] = "not installed (--no-webhooks): served, but the API server does not call them"
            return
        deadline = time.monotonic() + 60
        while not listening(int(hook["port"])):
            if time.monotonic() > deadline:
                raise SystemExit(f"the operator's webhook port {hook['port']} is not open after 60 s")
            time.sleep(0.2)
        install_webhooks(Path(self.kubeconfig), f"https://127.0.0.1:{hook['port']}", ca_file(self.run.path),
                         hook["configurationName"], OPERATOR_USER)  # fmt: skip
        self.report["webhooks"] = f"installed ({hook['configurationName']}, failurePolicy Fail)"

    async def watch_ready(self, kube: AsyncClient, prefix: str, ready: dict[str, float]) -> None:
        """Record when each project whose name starts with `prefix` was first seen Ready."""
        while True:
            try:
                async for _, obj in kube.watch(Project):
                    name = obj.metadata.name
                    if name.startswith(prefix) and name not in ready and is_ready(obj):
                        ready[name] = time.monotonic()
            except Exception as error:  # noqa: BLE001 - a watch ends; start it again
                print(f"(watch restarted: {type(error).__name__})", file=sys.stderr)
                await asyncio.sleep(0.5)

    async def pilot(self, kube: AsyncClient, name: str) -> None:
        await kube.create(Project(metadata={"name": name}, spec=self.spec()))
        self.own["POST"] += 1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            obj = await kube.get(Project, name)
            if is_ready(obj):
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"pilot project {name} not Ready after 300 s: {obj.get('status')}")

    async def edit(self, kube: AsyncClient, name: str, add: bool) -> tuple[float, float]:
        """Add carol to (or remove her from) the pilot; seconds until every backend shows it, and of those the
        seconds the PATCH itself took (its admission by the operator's webhooks)."""
        members = [{"user": "alice", "role": "owner"}, {"user": "bob", "role": "member"}]
        if add:
            members.append({"user": "carol", "role": "member"})
        start = time.monotonic()
        patched = await kube.patch(Project, name, {"spec": {"members": members}}, patch_type=PatchType.MERGE)
        admitted = time.monotonic() - start
        self.own["PATCH"] += 1
        generation = patched.metadata.generation
        while time.monotonic() - start < EDIT_TIMEOUT_S:
            obj = await kube.get(Project, name)
            self.own["GET"] += 1
            status = obj.get("status") or {}
            if status.get("observedGeneration") == generation and is_ready(obj):
                rows = {m["user"]: m for m in status.get("members") or []}
                carol = rows.get("carol")
                granted = carol is not None and bool(carol["backends"]) and all(
                    v not in ("None", "Missing", "NoAccount") for v in carol["backends"].values())  # fmt: skip
                if granted == add:
                    return time.monotonic() - start, admitted
            await asyncio.sleep(0.2)
        return float("inf"), admitted

    async def rollout(self) -> None:
        n = self.args.n
        prefix = f"b{secrets.token_hex(2)}-"
        kube = self.kube()
        pilot = f"{prefix}pilot"
        await self.pilot(kube, pilot)
        await asyncio.to_thread(self.settle)
        self.report["rss_idle_1_mb"] = rss_mb(self.pid)
        ready: dict[str, float] = {}
        watcher = asyncio.create_task(self.watch_ready(kube, f"{prefix}0", ready))
        profiler = self.start_profiler()
        before = self.counters()
        self.own.clear()
        start = time.monotonic()
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(i: int) -> None:
            async with slots:
                await kube.create(Project(metadata={"name": f"{prefix}{i:05d}"}, spec=self.spec()))

        async def create_all() -> float:
            await asyncio.gather(*(create(i) for i in range(n)))
            return time.monotonic() - start

        creating = asyncio.create_task(create_all())
        self.own["POST"] += n
        edits: list[tuple[float, float]] = []  # (seconds into the rollout, latency)
        patches: list[float] = []  # the PATCH of each edit, seconds
        add = True
        await asyncio.sleep(min(2.0, n / 500))
        while len(ready) < n or not edits:  # edits while the rollout lasts (at least one)
            if creating.done() and creating.exception() is not None:  # else the loop would wait for it forever
                raise SystemExit(f"a create was refused: {creating.exception()}")
            at = time.monotonic() - start
            latency, patch = await self.edit(kube, pilot, add)
            edits.append((at, latency))
            patches.append(patch)
            add = not add
            await asyncio.sleep(self.args.edit_every)
        created = await creating
        timeout = max(600.0, n * 1.0)
        while len(ready) < n and time.monotonic() - start < timeout:
            await asyncio.sleep(0.5)
        all_ready = (max(ready.values()) - start) if len(ready) == n else float("inf")
        self.stop_profiler(profiler)
        after = self.counters()
        watcher.cancel()
        self.report["peak_rss_mb"] = rss_mb(self.pid, "VmHWM")
        api_reads = after.api_reads() - before.api_reads() - self.own["GET"]
        api_writes = after.api_writes() - before.api_writes() - self.own["POST"] - self.own["PATCH"]
        cpu = {k: after.cpu.get(k, 0) - v for k, v in before.cpu.items()}
        parts = {k: v - seconds_per_part(before.text).get(k, 0) for k, v in seconds_per_part(after.text).items()}
        self.report["operator"] = {
            "seconds": all_ready,
            "created_seconds": created,
            "ready": len(ready),
            "api_reads_per_project": api_reads / n,
            "api_writes_per_project": api_writes / n,
            "s3_reads_per_project": self.delta(before, after, "s3", "read") / n,
            "s3_writes_per_project": self.delta(before, after, "s3", "write") / n,
            "identity_requests_per_project": (self.delta(before, after, "identity", "read")
                                              + self.delta(before, after, "identity", "write")) / n,  # fmt: skip
            "slurm_runs_per_project": (self.delta(before, after, "slurm", "read")
                                       + self.delta(before, after, "slurm", "write")) / n,  # fmt: skip
            "part_writes_per_project": (metric(after.text, "enclave_backend_writes_total")
                                        - metric(before.text, "enclave_backend_writes_total")) / n,  # fmt: skip
            "reconciles_per_project": (metric(after.text, "enclave_reconcile_total")
                                       - metric(before.text, "enclave_reconcile_total")) / n,  # fmt: skip
            "cpu": cpu,
            "backend_call_seconds": parts,
            "api_by_resource_per_project": {k: (v - before.api.get(k, 0)) / n for k, v in after.api.items()
                                            if " " in k and v > before.api.get(k, 0)},
            "admission_calls_per_project": (after.admission[0] - before.admission[0]) / n,
            "admission_seconds_mean": (after.admission[1] - before.admission[1])
            / max(after.admission[0] - before.admission[0], 1),
        }
        self.report["edits"] = edits
        self.report["edit_patch_seconds"] = patches
        self.kube_client = kube
        self.prefix = prefix

    def delta(self, before: Counters, after: Counters, backend: str, kind: str) -> float:
        name = "enclave_backend_requests_total"
        return metric(after.text, name, backend=backend, kind=kind) - metric(before.text, name, backend=backend,
                                                                             kind=kind)  # fmt: skip

    async def resync_window(self) -> None:
        """A window with nothing to do: every project is re-observed once by its resync timer; 0 writes."""
        await asyncio.sleep(5)
        window = self.args.window if self.args.window is not None else self.args.resync * 1.2
        before = self.counters()
        per_second: list[float] = []
        last = metric(before.text, "enclave_reconcile_total")
        start = time.monotonic()
        full_at = None
        rss_max = 0.0
        while time.monotonic() - start < window:
            await asyncio.sleep(1.0)
            now = metric(operator_metrics(self.metrics_url), "enclave_reconcile_total")
            per_second.append(now - last)
            last = now
            rss_max = max(rss_max, rss_mb(self.pid))
            if full_at is None and now - metric(before.text, "enclave_reconcile_total") >= self.args.n + 1:
                full_at = time.monotonic() - start
        after = self.counters()
        reconciles = metric(after.text, "enclave_reconcile_total") - metric(before.text, "enclave_reconcile_total")
        busy = (metric(after.text, "enclave_reconcile_duration_seconds_sum")
                - metric(before.text, "enclave_reconcile_duration_seconds_sum"))  # fmt: skip
        self.report["resync"] = {
            "window_seconds": window,
            "reconciles": reconciles,
            "writes": metric(after.text, "enclave_backend_writes_total")
            - metric(before.text, "enclave_backend_writes_total"),
            "api_reads_per_reconcile": (after.api_reads() - before.api_reads()) / max(reconciles, 1),
            "api_writes": after.api_writes() - before.api_writes(),
            "s3_reads_per_reconcile": self.delta(before, after, "s3", "read") / max(reconciles, 1),
            "s3_writes": self.delta(before, after, "s3", "write"),
            "api_writes_by_resource": {k: v - before.api.get(k, 0) for k, v in after.api.items()
                                       if " " in k and k.split()[0] in WRITE_VERBS and v > before.api.get(k, 0)},
            "max_reconciles_per_second": max(per_second, default=0),
            "mean_reconciles_per_second": reconciles / window,
            "full_resync_seconds": full_at,
            "busy_seconds": busy,
            "cpu": {k: after.cpu.get(k, 0) - v for k, v in before.cpu.items()},
        }
        self.report["rss_idle_mb"] = rss_mb(self.pid)
        self.report["rss_idle_max_mb"] = rss_max
        if self.args.memory_profile:
            self.memory_profile()

    # profiles ----------------------------------------------------------------------------------------------

    def start_profiler(self) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        self.profile_raw = out / "cpu.collapsed.txt"
        spy = Path(sys.executable).parent / "py-spy"
        return subprocess.Popen([str(spy), "record", "--pid", str(self.pid), "--rate", str(self.args.profile_rate),
                                 "--format", "raw", "--threads", "--nonblocking",
                                 "--output", str(self.profile_raw)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip

    def stop_profiler(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if self.profile_raw.exists():
            self.report["profile"] = summarise_profile(self.profile_raw)
            (self.profile_raw.parent / "summary.txt").write_text(self.report["profile"])

    def memory_profile(self) -> None:
        """The traced operator writes a tracemalloc snapshot on SIGUSR1: the top allocation sites at idle."""
        import tracemalloc

        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.snapshot.with_suffix(".done").exists():
            time.sleep(0.5)
        snap = tracemalloc.Snapshot.load(str(self.snapshot))
        stats = snap.statistics("lineno")
        total = sum(s.size for s in stats)
        lines = [f"traced Python memory at idle: {total / 2**20:.1f} MiB in {sum(s.count for s in stats)} blocks"]
        for stat in stats[:30]:
            frame = stat.traceback[0]
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d}  {shorten(frame.filename)}:{frame.lineno}")
        by_file = snap.statistics("filename")
        lines.append("by file:")
        for stat in by_file[:15]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB  {shorten(stat.traceback[0].filename)}")
        self.report["memory_profile"] = "\n".join(lines)
        if self.args.profile:
            (Path(self.args.profile) / "memory.txt").write_text(self.report["memory_profile"])

    # output ------------------------------------------------------------------------------------------------

    def print_report(self) -> None:
        r, n = self.report, self.args.n
        op = r["operator"]
        print(f"projects (N):                     {n}  (backends: {r['backends']})")
        print(f"load average start / end:         {r['load_start']} / {r['load_end']}  ({os.cpu_count()} cores)")
        print(f"admission webhooks:               {r['webhooks']}")
        fl = r.get("floor")
        if fl:
            per = ", ".join(f"{k} {v:.1f} s" for k, v in fl["per_backend"].items())
            print(f"floor:                            {fl['seconds']:.1f} s  ({per}); {fl['verified']}")
            print("floor writes per project:         " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                                    fl["writes_per_project"].items()))  # fmt: skip
            print("CPU seconds during the floor:     " + cpu_line(fl["cpu"], fl["seconds"]))
            for problem in fl["problems"]:
                print(f"  floor not up to date: {problem}")
        print(f"operator, until all Ready:        {op['seconds']:.1f} s  ({op['ready']}/{n} Ready; "
              f"creates sent in {op['created_seconds']:.1f} s; {n / op['seconds']:.1f} projects/s)")  # fmt: skip
        if fl:
            print(f"ratio operator / floor:           {op['seconds'] / fl['seconds']:.2f}")
        print(f"API requests per project:         {op['api_reads_per_project'] + op['api_writes_per_project']:.1f}"
              f"  ({op['api_reads_per_project']:.1f} reads, {op['api_writes_per_project']:.1f} writes; "
              "bench traffic subtracted)")  # fmt: skip
        ranked = sorted(op["api_by_resource_per_project"].items(), key=lambda x: -x[1])
        print("  by verb and resource:           " + ", ".join(f"{k} {v:.1f}" for k, v in ranked if v >= 0.05))
        if op["admission_calls_per_project"]:
            print(f"  admission webhook calls:        {op['admission_calls_per_project']:.1f} per project (creates, "
                  f"edits and the operator's own updates), mean {1000 * op['admission_seconds_mean']:.0f} ms as the "
                  "API server measured them")  # fmt: skip
        backend = f"{op['s3_reads_per_project']:.1f} S3 reads, {op['s3_writes_per_project']:.1f} S3 writes"
        if self.args.all_backends:
            backend += (f", {op['identity_requests_per_project']:.1f} FreeIPA calls, "
                        f"{op['slurm_runs_per_project']:.1f} sacctmgr runs")  # fmt: skip
        print(f"backend requests per project:     {backend}; {op['part_writes_per_project']:.1f} part writes, "
              f"{op['reconciles_per_project']:.1f} reconciles")  # fmt: skip
        cpu = op["cpu"]
        print("CPU seconds during the rollout:   " + cpu_line(cpu, op["seconds"]))
        total = sum(op["backend_call_seconds"].values()) or 1.0
        print("backend call time by part:        " + ", ".join(
            f"{p} {s:.0f} s ({100 * s / total:.0f}%)" for p, s in sorted(op["backend_call_seconds"].items(),
                                                                        key=lambda x: -x[1])))  # fmt: skip
        slope = (r["rss_idle_mb"] - r["rss_idle_1_mb"]) / n * 1024
        print(f"operator RSS:                     peak {r['peak_rss_mb']:.0f} MiB, idle {r['rss_idle_mb']:.0f} MiB "
              f"(with 1 project {r['rss_idle_1_mb']:.0f} MiB; slope {slope:.0f} KiB/project)")  # fmt: skip
        lat = [x for _, x in r["edits"]]
        under = [x for at, x in r["edits"] if at < op["seconds"]]
        print(f"single-edit latency under load:   {len(under)} edits during the rollout: "
              f"median {median(under):.1f} s, max {max(under, default=float('nan')):.1f} s"
              f"  (all {len(lat)}: max {max(lat):.1f} s)")  # fmt: skip
        patches = [x for (at, _), x in zip(r["edits"], r["edit_patch_seconds"], strict=True) if at < op["seconds"]]
        print(f"  of which the PATCH (admission): median {median(patches):.1f} s, "
              f"max {max(patches, default=float('nan')):.1f} s")  # fmt: skip
        rs = r["resync"]
        full = f"{rs['full_resync_seconds']:.0f} s" if rs["full_resync_seconds"] is not None else "not within window"
        print(f"no-op resync ({rs['window_seconds']:.0f} s window):       {rs['reconciles']:.0f} reconciles, "
              f"{rs['writes']:.0f} backend writes, {rs['api_writes']:.0f} API writes, {rs['s3_writes']:.0f} S3 writes; "
              f"{rs['api_reads_per_reconcile']:.1f} API + {rs['s3_reads_per_reconcile']:.1f} S3 reads per reconcile; "
              f"{rs['mean_reconciles_per_second']:.1f}/s mean, {rs['max_reconciles_per_second']:.0f}/s max; "
              f"all {n} resynced after {full}")  # fmt: skip
        if rs["api_writes_by_resource"]:
            print("  API writes in the window:       " + ", ".join(
                f"{k} {v:.0f}" for k, v in rs["api_writes_by_resource"].items()))  # fmt: skip
        if "profile" in r:
            print(f"profile written to {self.args.profile}:\n{r['profile']}")
        if "memory_profile" in r:
            print(r["memory_profile"])


def is_ready(obj: Any) -> bool:
    status = obj.get("status") if isinstance(obj, dict) else getattr(obj, "status", None)
    conditions = (status or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def shorten(path: str) -> str:
    for marker in ("site-packages/", "enclave_operator/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1] if marker != "lib/python3" else "stdlib/" + path.rsplit("/", 1)[1]
    return path


def summarise_profile(path: Path) -> str:
    """From py-spy's collapsed stacks (on-CPU samples only): the busiest threads and functions."""
    threads: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():  # py-spy writes a frame it cannot name with spaces in it
            continue
        count = int(count_text)
        frames = stack.split(";")
        threads[frames[0] if frames[0].startswith("thread") else "?"] += count
        total += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    lines = [f"on-CPU samples: {total}; busiest threads:"]
    lines += [f"  {100 * c / max(total, 1):5.1f}%  {thread}" for thread, c in threads.most_common(5)]
    lines.append("busiest functions, inclusive:")
    lines += [f"  {100 * c / max(total, 1):5.1f}%  {frame[:150]}" for frame, c in inclusive.most_common(40)]
    lines.append("busiest functions, own time:")
    lines += [f"  {100 * c / max(total, 1):5.1f}%  {frame[:150]}" for frame, c in own.most_common(25)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="number of projects (default 200)")
    parser.add_argument("--resync", type=float, default=60.0, help="operator resync interval, seconds (default 60)")
    parser.add_argument("--window", type=float, help="no-op resync window, seconds (default 1.2 × --resync)")
    parser.add_argument("--all-backends", action="store_true",
                        help="also the FreeIPA test server (identity groups) and real Slurm (accounts)")  # fmt: skip
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    parser.add_argument("--no-webhooks", action="store_true",
                        help="serve the admission webhooks but do not install their configurations (projects are "
                        "then admitted without the operator's checks, and kopf patches its finalizer in)")  # fmt: skip
    parser.add_argument("--edit-every", type=float, default=3.0,
                        help="seconds between two edits of the pilot during the rollout (default 3)")  # fmt: skip
    parser.add_argument("--profile", metavar="DIR",
                        help="write a py-spy CPU profile of the operator during the rollout to DIR "
                        "(cpu.collapsed.txt for speedscope or flamegraph.pl, summary.txt)")  # fmt: skip
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second (default 50)")
    parser.add_argument("--memory-profile", action="store_true",
                        help="run the operator under tracemalloc (slow); print top allocations at idle")  # fmt: skip
    parser.add_argument("--set", nargs=2, action="append", metavar=("SECTION.FIELD", "YAML"),
                        help="an operator setting, e.g. --set intervals.resyncJitter 0.2 (repeatable)")  # fmt: skip
    parser.add_argument("--operator-env", action="append", metavar="NAME=VALUE",
                        help="an environment variable of the operator process, e.g. PYTHONMALLOC=malloc "
                             "(repeatable)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the environment running")
    args = parser.parse_args()
    bench = Bench(args)
    interrupt_on_sigterm()
    began = time.monotonic()

    def phase(name: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {name}", file=sys.stderr)

    try:
        bench.start_servers()
        phase("servers started")
        if not args.no_floor:
            asyncio.run(bench.floor())
            phase("floor done")
        bench.start_operator()
        phase("operator started")

        async def measured() -> None:
            await bench.rollout()
            phase("rollout done")
            await bench.resync_window()
            phase("resync window done")
            await bench.kube_client.close()

        asyncio.run(measured())
        bench.report["load_end"] = loadavg()
        bench.print_report()
        if args.json:
            Path(args.json).write_text(json.dumps(bench.report, indent=2, default=str))
    finally:
        if args.keep:
            print(f"kept running: KUBECONFIG={bench.run.path / 'kubeconfig'}; "
                  f"stop with: python hack/localenv --run-dir {bench.run.path} down")  # fmt: skip
        else:
            bench.run.stop_all()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
