"""Session fixtures: the real control plane, real MinIO, the CRDs, and the operator process.

Layers: tests/unit (no servers), tests/integration (real API server and backends), tests/e2e
(kubectl apply against a running operator). In CI (CI=true) or with ENCLAVE_NO_SKIP=1 a skipped
test is reported as failed: a server that is missing must never look like a pass.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave_operator.backends import s3_minio
from localenv import environment, nodehost
from localenv.freeipa_server import start_freeipa
from localenv.kwok import gpu_families
from localenv.minio import start_minio
from localenv.orthanc import start_orthanc
from localenv.plane import OPERATOR_USER, start_plane
from localenv.podrunner import podrunner_service
from localenv.runtime import CHART, REPO_ROOT, RunDir, free_port
from localenv.webhooks import balancer_service, ca_file, install_peering, webhook_settings
from support import timeouts
from support.cluster import Cluster, kind_cluster, kubectl_binary
from support.identity import ipa_admin, seed_ipa_users
from support.ingest import bundled, ct_series_copies, orthanc_store
from support.operator import OperatorProcess, Webhooks, operator_process, write_config
from support.slurm import SlurmEnv

INGEST_NAMESPACE = "enclave-ingest"
PEERING_LIFETIME_S = 10
"""How long a killed operator process still counts as alive: the fail-over delay of the HA test."""
NO_SKIP = os.environ.get("CI") == "true" or os.environ.get("ENCLAVE_NO_SKIP") == "1"
_LAYERS = ("unit", "integration", "e2e", "contract")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the layer directory it lives in."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in _LAYERS:
            item.add_marker(getattr(pytest.mark, "integration" if parts[0] == "contract" else parts[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests fail here (CI/ENCLAVE_NO_SKIP): {report.longrepr}"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunDir]:
    """The local environment's run directory: reused with ENCLAVE_REUSE=1, else a fresh one per session."""
    if os.environ.get("ENCLAVE_REUSE") == "1":
        yield RunDir()
        return
    run = RunDir(tmp_path_factory.mktemp("run"))
    try:
        yield run
    finally:
        run.stop_all()


@pytest.fixture(scope="session")
def cluster(run_dir: RunDir) -> Cluster:
    mode = os.environ.get("ENCLAVE_CLUSTER", "local")
    if mode == "kubeconfig":
        return Cluster(Path(os.environ["KUBECONFIG"]), kubectl_binary())
    if mode == "kind":  # pragma: no cover - needs Docker
        return kind_cluster()
    environment.build(["plane"])
    facts = start_plane(run_dir, controller_manager=True)
    return Cluster(Path(facts["kubeconfig"]), kubectl_binary())


@pytest.fixture(scope="session")
def minio(run_dir: RunDir) -> dict[str, Any]:
    environment.build(["minio"])
    return start_minio(run_dir)


@pytest.fixture(scope="session")
def minio_backup(run_dir: RunDir) -> dict[str, Any]:
    """A second, separate MinIO: the backup target of FederatedNodes."""
    environment.build(["minio"])
    return start_minio(run_dir, name="minio-backup")


@pytest.fixture(scope="session")
def restic_binary() -> Path:
    """restic, built from hack/restic (cached by its stamp)."""
    environment.build(["restic"])
    return REPO_ROOT / ".cache" / "bin" / "restic"


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The committed CRDs and the shipped ClusterRoles installed, the CRDs Established."""
    cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "files" / "rbac"))
    cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "manifests" / "policy"))
    cluster.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
                "app.kubernetes.io/part-of=enclave-operator")  # fmt: skip
    return cluster


@pytest.fixture(scope="session")
def freeipa(run_dir: RunDir) -> dict[str, Any]:
    """The FreeIPA test server (real wire protocol over TLS) with alice, bob, carol and dave."""
    facts = start_freeipa(run_dir)
    seed_ipa_users(ipa_admin(facts))
    return facts


@pytest.fixture(scope="session")
def slurm(run_dir: RunDir) -> SlurmEnv:
    """Real Slurm accounting: munged, MariaDB, slurmdbd and slurmctld with GresTypes=gpu."""
    return SlurmEnv.start(run_dir)


@pytest.fixture(scope="session")
def orthanc(run_dir: RunDir) -> dict[str, Any]:
    """The hospital's PACS: Orthanc with DICOMweb, loaded with a CT series (3 instances), an MR and a
    secondary capture (which de-identification must quarantine)."""
    facts = start_orthanc(run_dir)
    for data in [
        *ct_series_copies(3),
        bundled("MR_small.dcm").read_bytes(),
        bundled("SC_rgb_small_odd.dcm").read_bytes(),
    ]:
        orthanc_store(facts, data)
    return facts


@pytest.fixture(scope="session")
def operator_secrets(freeipa: dict[str, Any], minio_backup: dict[str, Any]) -> dict[str, str]:
    """The environment an operator pod gets from Secrets: the FreeIPA password, the backup target's keys."""
    return {
        "ENCLAVE_IPA_PASSWORD": freeipa["password"],
        "ENCLAVE_BACKUP_S3_ACCESS_KEY": minio_backup["access_key"],
        "ENCLAVE_BACKUP_S3_SECRET_KEY": minio_backup["secret_key"],
    }


@pytest.fixture(scope="session")
def webhook_ports() -> tuple[int, int]:
    """The webhook ports of the two operator processes an HA test may run (the balancer knows both)."""
    return free_port(), free_port()


@pytest.fixture(scope="session")
def operator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="session")
def operator_config(
    operator_dir: Path,
    minio: dict[str, Any],
    freeipa: dict[str, Any],
    slurm: SlurmEnv,
    orthanc: dict[str, Any],
    webhook_ports: tuple[int, int],
    minio_backup: dict[str, Any],
) -> Path:
    """The e2e operator's configuration: loopback MinIO (and a second one as the backup target), short
    intervals, the webhooks with their own TLS."""
    webhook, _ = webhook_settings(operator_dir, webhook_ports[0], f"t{secrets.token_hex(3)}.webhooks.enclave.io")
    identity = {
        "provider": "freeipa",
        "freeipa": {"url": freeipa["url"], "caFile": freeipa["ca_cert"], "username": freeipa["admin_user"]},
    }
    slurm_config = {"slurmConf": str(slurm.conf), "cluster": slurm.facts["cluster"], "timeoutSeconds": 5}
    ingest = {
        "namespace": INGEST_NAMESPACE,
        "pollSeconds": 1,
        "sources": [
            {"name": "research-pacs", "kind": "dicomweb", "url": orthanc["dicomweb_root"],
             "credentialsSecret": "research-pacs-credentials"},
            {"name": "open-pacs", "kind": "dicomweb", "url": orthanc["dicomweb_root"],
             "credentialsSecret": "research-pacs-credentials", "preApproved": True},
        ],
    }  # fmt: skip
    federation = {
        "probeSeconds": timeouts.PROBE_INTERVAL,
        "probeTimeoutSeconds": timeouts.PROBE_TIMEOUT,
        "backupPollSeconds": 1,
        "backupRetrySeconds": 5,
        "backupTargets": [{"name": "offsite", "endpoint": minio_backup["endpoint"], "secure": False,
                           "timeoutSeconds": 5}],
    }  # fmt: skip
    return write_config(operator_dir / "config.yaml", minio, webhook=webhook, identity=identity, slurm=slurm_config,
                        ingest=ingest, federation=federation, peering={"lifetimeSeconds": PEERING_LIFETIME_S},
                        gpu=gpu_config(slurm))  # fmt: skip


@pytest.fixture(scope="session")
def webhooks(crds: Cluster, run_dir: RunDir, operator_dir: Path, operator_config: Path,
             webhook_ports: tuple[int, int]) -> Webhooks:  # fmt: skip
    """The balancer in front of both webhook ports, and the webhook configurations pointing at it."""
    balancer = run_dir.start(balancer_service(free_port(), list(webhook_ports)))
    name = yaml.safe_load(operator_config.read_text())["webhook"]["configurationName"]
    return Webhooks(crds.kubeconfig, balancer["url"], ca_file(operator_dir), name, OPERATOR_USER)


def gpu_config(slurm: SlurmEnv) -> dict[str, Any]:
    """The local GPU families in both pools; short grace and poll intervals so the tests see ends and drains
    within seconds."""
    return {"families": gpu_families(slurm.facts["gpu"]), "endGraceSeconds": 3, "capacityPollSeconds": 2,
            "limits": {"maxGpus": 12, "maxHours": 48, "maxLeadDays": 30}}  # fmt: skip


@pytest.fixture(scope="session")
def operator(
    crds: Cluster,
    minio: dict[str, Any],
    freeipa: dict[str, Any],
    operator_dir: Path,
    operator_secrets: dict[str, str],
    operator_config: Path,
    webhooks: Webhooks,
    webhook_ports: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """One operator process for the e2e session (peered: an HA test adds a second); tests that kill it start it
    again."""
    install_peering(crds.kubeconfig)
    log = tmp_path_factory.mktemp("operator-log") / "operator.log"
    process = operator_process(crds, operator_dir, operator_config, minio, operator_secrets, log, pod_id="operator-a",
                               webhook_port=webhook_ports[0])  # fmt: skip
    process.start()
    webhooks.install()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def pod_runner(crds: Cluster, run_dir: RunDir) -> Iterator[None]:
    """The stand-in kubelet (hack/localenv/podrunner.py) for the worker namespaces (ingest, backup): there is
    no container runtime here, so it runs each worker pod's command as a local process."""
    run_dir.start(podrunner_service(run_dir, crds.kubeconfig, bin_dir=REPO_ROOT / ".venv" / "bin"))
    yield
    run_dir.stop("podrunner")


@pytest.fixture(scope="session")
def ingest_platform(crds: Cluster, orthanc: dict[str, Any], pod_runner: None) -> Cluster:
    """What the platform team sets up once for DataIngests: the ingest namespace with the PACS credentials, the
    data stewards' role (and, here only, the stand-in kubelet for the worker namespaces: `pod_runner`)."""
    crds.run("create", "namespace", INGEST_NAMESPACE, check=False)
    crds.run("create", "secret", "generic", "research-pacs-credentials", "-n", INGEST_NAMESPACE,
             f"--from-literal=username={orthanc['username']}", f"--from-literal=password={orthanc['password']}",
             check=False)  # fmt: skip
    crds.run("create", "clusterrolebinding", "test-stewards", "--clusterrole=enclave-data-steward",
             "--group=enclave:data-stewards", check=False)  # fmt: skip
    return crds


@pytest.fixture
def node_host(run_dir: RunDir) -> Iterator[Callable[[str], dict[str, Any]]]:
    """Start test hosts (network namespace with a real sshd on 22 and dnsmasq on 53, hack/localenv/nodehost.py);
    every host started is stopped, and its namespace removed, when the test ends."""
    environment.build(["nodehost"])
    started: list[str] = []

    def start(name: str) -> dict[str, Any]:
        started.append(name)
        return nodehost.start_nodehost(run_dir, name)

    yield start
    for name in started:
        nodehost.stop_nodehost(run_dir, name)


@pytest.fixture
def project_name() -> str:
    """A fresh project name per test, so tests never see each other's objects."""
    return f"t-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def s3(minio: dict[str, Any]) -> s3_minio.S3Clients:
    """Admin clients of the test MinIO (the operator's own view of it)."""
    conn = s3_minio.S3Connection(minio["endpoint"], minio["access_key"], minio["secret_key"], secure=False)
    return s3_minio.S3Clients(conn)


@pytest.fixture(scope="session")
def people(s3: s3_minio.S3Clients) -> dict[str, str]:
    """Researchers as MinIO users (as an identity-provider sync would create them): name → secret key."""
    users = {name: secrets.token_urlsafe(18) for name in ("alice", "bob", "carol", "dave")}
    for name, secret in users.items():
        s3.admin.user_add(name, secret)
    return users
