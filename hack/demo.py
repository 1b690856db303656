"""`make demo`: the local control plane with every backend (MinIO, FreeIPA test server, slapd, Slurm,
Orthanc; a second MinIO as the backup target and a test host for the federated node), the CRDs, the
operator as a managed process, the example project and the example federated node, left running.
`make down` stops everything it started (every process is in .run/state.json).
`make demo CHART=1`: the same, but the operator is installed with the Helm chart (install_chart).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localenv import (
    environment,  # noqa: E402
    nodehost,  # noqa: E402
)
from localenv.kwok import GPU_LABEL_KEY, GPU_PRODUCTS, apply_nodes, gpu_families, gpu_node  # noqa: E402
from localenv.minio import start_minio  # noqa: E402
from localenv.people import PEOPLE_FILE, add_people  # noqa: E402
from localenv.plane import OPERATOR_USER  # noqa: E402
from localenv.podrunner import podrunner_service  # noqa: E402
from localenv.runtime import CHART, REPO_ROOT, RunDir, Service, ServiceError, free_port, http_ok  # noqa: E402
from localenv.webhooks import (  # noqa: E402
    balancer_service,
    ca_file,
    install_peering,
    install_webhooks,
    listening,
    webhook_settings,
)

PEOPLE = ("alice", "bob", "carol", "dave")
INGEST_NAMESPACE = "enclave-ingest"
INGEST_EXAMPLE = REPO_ROOT / "manifests" / "examples" / "data-ingest.yaml"
GPU_EXAMPLE = REPO_ROOT / "manifests" / "examples" / "gpu-reservation.yaml"
K8S_GPU_NODES = {"k8s-a100-1": ("a100", 4), "k8s-a100-2": ("a100", 4), "k8s-h100-1": ("h100", 8)}
EXAMPLE = REPO_ROOT / "manifests" / "examples" / "research-project.yaml"
NODE_EXAMPLE = REPO_ROOT / "manifests" / "examples" / "federated-node.yaml"
NODE_HOST = "radiology-node"
KUBECTL = str(REPO_ROOT / ".cache" / "bin" / "kubectl")


def kubectl(run: RunDir, *args: str, input_text: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}", *args], capture_output=True, text=True, timeout=180,
        input=input_text,
    )
    if result.returncode != 0:
        raise ServiceError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def orthanc_content(facts: dict[str, Any]) -> None:
    """The research PACS's studies: pydicom's bundled test files."""
    import pydicom.data
    import requests

    orthanc = facts["orthanc"]
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm"):
        data = Path(pydicom.data.get_testdata_file(name)).read_bytes()
        requests.post(f"{orthanc['url']}/instances", data=data, auth=(orthanc["username"], orthanc["password"]),
                      headers={"Content-Type": "application/dicom"}, timeout=30).raise_for_status()  # fmt: skip


def prepare_ingest(run: RunDir, facts: dict[str, Any]) -> None:
    """The platform team's part: PACS content (pydicom's bundled test files), the ingest namespace with the
    PACS credentials, the stewards' role, and a stand-in kubelet for worker pods (no container runtime here)."""
    orthanc_content(facts)
    orthanc = facts["orthanc"]
    # Idempotent creates: on a second `make demo` these exist already, which is fine.
    k = [KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}"]
    subprocess.run([*k, "create", "namespace", INGEST_NAMESPACE], capture_output=True)
    subprocess.run([*k, "create", "secret", "generic", "research-pacs-credentials", "-n", INGEST_NAMESPACE,
                    f"--from-literal=username={orthanc['username']}", f"--from-literal=password={orthanc['password']}"],
                   capture_output=True)  # fmt: skip
    subprocess.run([*k, "create", "clusterrolebinding", "data-stewards", "--clusterrole=enclave-data-steward",
                    "--group=enclave:data-stewards"], capture_output=True)  # fmt: skip
    run.start(podrunner_service(run, run.path / "kubeconfig"))


def ingest_phase(run: RunDir) -> str:
    return kubectl(run, "get", "dataingest/ct-cohort-1", "-n", "onco-flow", "-o", "jsonpath={.status.phase}").strip()


def ingest_example(run: RunDir, timeout: float = 300.0) -> None:
    """Approve the example DataIngest as a data steward and wait until it succeeds. Resumes: on a second
    `make demo` (same run directory) it may already be approved, running or done."""
    deadline = time.monotonic() + timeout
    approved = False
    while (phase := ingest_phase(run)) != "Succeeded":
        if phase == "Failed":
            raise ServiceError("the example DataIngest failed: kubectl describe dataingest -n onco-flow ct-cohort-1")
        if phase == "AwaitingApproval" and not approved:
            kubectl(run, "annotate", "dataingest/ct-cohort-1", "-n", "onco-flow", "enclave.io/approve=yes",
                    "--as=steve", "--as-group=enclave:data-stewards", "--overwrite")  # fmt: skip
            approved = True
        if time.monotonic() > deadline:
            raise ServiceError(f"the example DataIngest is still {phase or 'without a phase'} after {timeout:.0f}s")
        time.sleep(1)
    if not approved:
        print("demo: the example DataIngest had already succeeded in this run directory (resumed)")


def gpu_settings(slurm: dict[str, Any]) -> dict[str, Any]:
    return {"families": gpu_families(slurm["gpu"]), "endGraceSeconds": 120}


def prepare_gpus(run: RunDir) -> None:
    """The platform team's part of GPU bookings: GPU nodes (fake, kept Ready by kwok) and the placement policy."""
    k = [KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}"]
    apply_nodes(k, [gpu_node(name, GPU_LABEL_KEY, GPU_PRODUCTS[family], gpus)
                    for name, (family, gpus) in K8S_GPU_NODES.items()])  # fmt: skip
    kubectl(run, "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "manifests" / "policy"))


def gpu_example(run: RunDir) -> None:
    """Book the example's GPUs; its start moves to tomorrow 08:00 UTC once the date in the file has passed.

    A resumed run keeps the booking it made (applying the file again could move a started window)."""
    if kubectl(run, "get", "gpureservation/miccai-deadline", "-n", "onco-flow", "--ignore-not-found", "-o", "name"):
        phase = kubectl(run, "get", "gpureservation/miccai-deadline", "-n", "onco-flow", "-o",
                        "jsonpath={.status.phase}")  # fmt: skip
        print(f"demo: the example GpuReservation was booked in this run directory already (resumed; {phase})")
        return
    manifest = yaml.safe_load(GPU_EXAMPLE.read_text())
    start = datetime.datetime.fromisoformat(manifest["spec"]["start"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.UTC)
    if start < now:
        tomorrow = (now + datetime.timedelta(days=1)).date()
        manifest["spec"]["start"] = f"{tomorrow.isoformat()}T08:00:00Z"
    kubectl(run, "apply", "-f", "-", input_text=yaml.safe_dump(manifest))
    kubectl(run, "wait", "--for=jsonpath={.status.phase}=Scheduled", "--timeout=60s",
            "gpureservation/miccai-deadline", "-n", "onco-flow")  # fmt: skip


def federated_node_example(run: RunDir, host: dict[str, Any]) -> None:
    """The example node, pointed at its test host (a network namespace with sshd and dnsmasq) and with an
    integrator expiry 30 days from today; wait until it is Ready (probed Online, first backup done)."""
    node = yaml.safe_load(NODE_EXAMPLE.read_text())
    node["spec"]["network"]["endpoint"].update(host=host["ip"], dnsQuery=host["dns_name"])
    expires = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=30)).isoformat()
    for integrator in node["spec"]["integratorAccess"]["integrators"]:
        integrator["expires"] = expires
    subprocess.run([KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}", "apply", "-f", "-"], input=yaml.safe_dump(node),
                   text=True, check=True, capture_output=True, timeout=60)  # fmt: skip
    kubectl(run, "wait", "--for=condition=Ready", "--timeout=170s", f"federatednode/{node['metadata']['name']}")


OPERATORS = ("enclave-operator-a", "enclave-operator-b")
"""Two operator processes, as two pods of its Deployment: both serve the webhooks, the older one reconciles."""


def operator_services(run: RunDir, facts: dict[str, Any]) -> list[Service]:
    """The operator processes and the balancer in front of their webhooks (hack/localenv/webhooks.py)."""
    minio, ipa, slurm, backup = facts["minio"], facts["freeipa"], facts["slurm"], facts["minio-backup"]
    ports = [free_port() for _ in OPERATORS]
    webhook, shared_env = webhook_settings(run.path, ports[0])
    config = run.path / "operator-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "s3": {"endpoint": minio["endpoint"], "secure": False},
                "intervals": {"resyncSeconds": 60, "retrySeconds": 5},
                "identity": {
                    "provider": "freeipa",
                    "freeipa": {"url": ipa["url"], "caFile": ipa["ca_cert"], "username": ipa["admin_user"]},
                },
                "slurm": {"slurmConf": slurm["slurm_conf"], "cluster": slurm["cluster"]},
                "ingest": {
                    "namespace": INGEST_NAMESPACE,
                    "pollSeconds": 2,
                    "sources": [{"name": "research-pacs", "kind": "dicomweb", "url": facts["orthanc"]["dicomweb_root"],
                                 "credentialsSecret": "research-pacs-credentials"}],
                },
                "webhook": webhook,
                "peering": {"lifetimeSeconds": 15},
                "gpu": gpu_settings(slurm),
                "federation": {
                    "probeSeconds": 10, "backupPollSeconds": 2,
                    "backupTargets": [{"name": "offsite", "endpoint": backup["endpoint"], "secure": False}],
                },
            }
        )
    )  # fmt: skip
    config.chmod(0o600)
    services = [balancer_service(free_port(), ports)]
    for name, port in zip(OPERATORS, ports, strict=True):
        liveness, metrics = free_port(), free_port()
        services.append(Service(
            name=name,
            argv=[sys.executable, "-m", "enclave_operator", "run", f"--config={config}", f"--webhook-port={port}",
                  "--bind=127.0.0.1", f"--liveness-port={liveness}", f"--metrics-port={metrics}"],
            env={
                "KUBECONFIG": str(run.path / "operator.kubeconfig"),
                "POD_ID": name,
                "ENCLAVE_S3_ACCESS_KEY": minio["access_key"],
                "ENCLAVE_S3_SECRET_KEY": minio["secret_key"],
                "ENCLAVE_IPA_PASSWORD": ipa["password"],
                "ENCLAVE_BACKUP_S3_ACCESS_KEY": backup["access_key"],
                "ENCLAVE_BACKUP_S3_SECRET_KEY": backup["secret_key"],
                **shared_env,
            },
            # kopf answers /healthz before its webhook server listens; the demo applies right after.
            ready=lambda liveness=liveness, port=port: http_ok(f"http://127.0.0.1:{liveness}/healthz")
            and listening(port),
            facts={"liveness": f"http://127.0.0.1:{liveness}/healthz",
                   "metrics": f"http://127.0.0.1:{metrics}/metrics"},
        ))  # fmt: skip
    return services


def install_chart(run: RunDir, facts: dict[str, Any]) -> dict[str, str]:
    """`make demo CHART=1`: the operator installed by the Helm chart, as docs/install.md says, and run by the
    stand-in kubelet exactly as its Deployment says (its service account's RBAC, not the admin kubeconfig).
    Slurm is left out: its sacctmgr needs a Slurm admin identity that a pod gets only with site-specific setup."""
    from localenv import helm as chart

    helm = chart.Helm(chart.go_tool("helm"), run.path / "kubeconfig", home=run.path / "helm")
    run.start(podrunner_service(run, run.path / "kubeconfig", [chart.NAMESPACE, chart.INGEST_NAMESPACE]))
    values = chart.local_values(facts["minio"], facts["freeipa"], facts["orthanc"],
                                steward_groups=["enclave:data-stewards"], resync_seconds=60, poll_seconds=2)
    installed = subprocess.run([KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}", "get", "namespace",
                                chart.NAMESPACE], capture_output=True).returncode == 0  # fmt: skip
    if not installed:
        chart.prepare(lambda *a: kubectl(run, *a), facts["minio"], facts["freeipa"])
    chart.install(lambda *a: kubectl(run, *a), helm, values, upgrade=installed)
    if not installed:
        chart.source_credentials(lambda *a: kubectl(run, *a), facts["orthanc"])
    subprocess.run([KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}", "create", "clusterrolebinding",
                    "data-stewards", "--clusterrole=enclave-data-steward", "--group=enclave:data-stewards"],
                   capture_output=True)  # fmt: skip
    port = values["healthPort"], values["metrics"]["port"]
    address = kubectl(run, "get", "node", "podrunner", "-o", "jsonpath={.status.addresses[0].address}")
    return {"liveness": f"http://{address}:{port[0]}/healthz", "metrics": f"http://{address}:{port[1]}/metrics",
            "log": str(run.logs / "pods")}  # fmt: skip


def operators_line(run: RunDir, webhooks: dict[str, Any] | None) -> str:
    if webhooks is None:
        return f"the chart's Deployment, run by the stand-in kubelet; logs in {run.logs / 'pods'}"
    return (f"two processes ({', '.join(OPERATORS)}); the first reconciles, both serve the\n"
            f"                           webhooks at {webhooks['url']}; logs in {run.logs}")


def up(use_chart: bool = False) -> int:
    run = RunDir()
    start = time.monotonic()
    environment.build([*environment.COMPONENTS, "restic", "nodehost"])
    facts = environment.up(run, controllers=True)
    facts["minio-backup"] = start_minio(run, name="minio-backup")
    host = nodehost.start_nodehost(run, NODE_HOST)
    add_people(run, PEOPLE)
    webhooks: dict[str, Any] | None = None
    if use_chart:
        orthanc_content(facts)
        operator = install_chart(run, facts)
    else:
        kubectl(run, "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
        kubectl(run, "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "files" / "rbac"))
        kubectl(run, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
                "app.kubernetes.io/part-of=enclave-operator")  # fmt: skip
        prepare_ingest(run, facts)
        prepare_gpus(run)
        install_peering(run.path / "kubeconfig")
        balancer, *processes = operator_services(run, facts)
        webhooks = run.start(balancer)
        operator = run.start(processes[0])
        for process in processes[1:]:
            run.start(process)  # younger: it waits, and takes over when the first one stops
        install_webhooks(run.path / "kubeconfig", webhooks["url"], ca_file(run.path), "webhooks.enclave.io",
                         OPERATOR_USER)  # the operator runs as itself (operator.kubeconfig)
    kubectl(run, "apply", "-f", str(EXAMPLE))
    kubectl(run, "wait", "--for=condition=Ready", "--timeout=180s", "researchproject/onco-flow")
    print(kubectl(run, "get", "researchprojects", "-o", "wide"))
    kubectl(run, "apply", "-f", str(INGEST_EXAMPLE))
    ingest_example(run)
    print(kubectl(run, "get", "dataingests", "-A", "-o", "wide"))
    gpu_example(run)
    print(kubectl(run, "get", "gpureservations", "-A"))
    federated_node_example(run, host)
    print(kubectl(run, "get", "federatednodes"))
    minio, ipa, slurm = facts["minio"], facts["freeipa"], facts["slurm"]
    print(
        textwrap.dedent(f"""\
        Ready in {time.monotonic() - start:.0f}s. Everything keeps running; `make down` stops it, and the
        next `make demo` resumes from {run.path}. To start from scratch instead: `make clean && make demo`.

          {environment.exports(run).replace(chr(10), chr(10) + "          ")}
          kubectl get enclave                       # every enclave object
          kubectl describe researchproject onco-flow
          kubectl get rolebindings,resourcequota,networkpolicies -n onco-flow
          SLURM_CONF={slurm["slurm_conf"]} sacctmgr show assoc where account=onco-flow
          kubectl describe dataingest -n onco-flow ct-cohort-1    # provenance: s3://onco-flow/raw/ct-cohort-1/_manifest.json
          kubectl describe gpureservation -n onco-flow miccai-deadline
          SLURM_CONF={slurm["slurm_conf"]} scontrol show reservation onco-flow-miccai-deadline
          .venv/bin/enclave-operator gpu-calendar --config {run.path / "operator-config.yaml"} --days 7
          kubectl describe federatednode radiology-node           # compliance lines, probes, backups
          kubectl annotate federatednode radiology-node enclave.io/backup-requested=$(date +%s) --overwrite
          python3 hack/localenv stop radiology-node-sshd          # REACHABLE goes Offline; `make demo` restarts it

          MinIO (S3):      http://{minio["endpoint"]}  (root credentials in {run.state_file})
          backup MinIO:    http://{facts["minio-backup"]["endpoint"]}  (restic repositories of federated nodes)
          node test host:  {host["ip"]} in network namespace {host["netns"]} (sshd :22, dnsmasq :53)
          FreeIPA (test):  {ipa["url"]}  (CA {ipa["ca_cert"]})
          researchers:     alice, bob, carol, dave (MinIO passwords in {run.path / PEOPLE_FILE})
                           more: python3 hack/localenv add-user NAME…   (FreeIPA, LDAP and MinIO)
          operators:       {operators_line(run, webhooks)}
          operator health: {operator["liveness"]}
          metrics:         {operator["metrics"]}
        """)
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] not in (["up"], ["up", "--chart"]):
        print("usage: hack/demo.py up [--chart]", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(up(use_chart="--chart" in sys.argv))
    except ServiceError as error:
        print(f"demo: {error}", file=sys.stderr)
        sys.exit(1)
