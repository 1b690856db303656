"""The local Kubernetes control plane: etcd, kube-apiserver and (on request) kube-controller-manager
and kube-scheduler, built by hack/localplane/build.sh and run on loopback with RBAC authorization.

The admin identity is a static token in system:masters; the kubeconfig written to
`<run dir>/kubeconfig` trusts the apiserver's self-generated serving certificate. The operator gets an
identity of its own (`enclave-operator`, `<run dir>/operator.kubeconfig`), as its service account has in
a cluster: the webhooks tell its requests (which never approve anything) from a platform admin's.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR, RunDir, Service, free_port, http_ok

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
OPERATOR_USER = "enclave-operator"
"""The operator's username on the local plane (system:masters, as a cluster-admin-bound service account)."""


def _etcd(run: RunDir, bin_dir: Path) -> Service:
    client, peer = free_port(), free_port()
    data = run.path / "etcd"
    url = f"http://127.0.0.1:{client}"
    return Service(
        name="etcd",
        argv=[
            str(bin_dir / "etcd"),
            "--name=enclave",
            f"--data-dir={data}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=enclave=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        ready=lambda: http_ok(f"{url}/health"),
        facts={"url": url},
    )


def _pki(run: RunDir) -> dict[str, str]:
    """Service-account signing key and the admin token, generated once per run directory."""
    pki = run.path / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    sa_key = pki / "sa.key"
    if not sa_key.exists():
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        sa_key.chmod(0o600)
    token_file = pki / "tokens.csv"
    if not token_file.exists():
        token_file.write_text(f'{secrets.token_hex(24)},admin,admin,"system:masters"\n')
        token_file.chmod(0o600)
    lines = token_file.read_text().splitlines()
    if not any(",enclave-operator," in line for line in lines):
        with token_file.open("a") as out:
            out.write(f'{secrets.token_hex(24)},{OPERATOR_USER},{OPERATOR_USER},"system:masters"\n')
        lines = token_file.read_text().splitlines()
    token = lines[0].split(",", 1)[0]
    operator = next(line for line in lines if f",{OPERATOR_USER}," in line).split(",", 1)[0]
    return {"sa_key": str(sa_key), "token_file": str(token_file), "token": token, "operator_token": operator,
            "cert_dir": str(pki / "serving")}  # fmt: skip


def _apiserver(run: RunDir, bin_dir: Path, etcd_url: str, pki: dict[str, str]) -> Service:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    token = pki["token"]
    return Service(
        name="kube-apiserver",
        argv=[
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={pki['cert_dir']}",
            f"--token-auth-file={pki['token_file']}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={url}",
            f"--service-account-key-file={pki['sa_key']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--endpoint-reconciler-type=none",
            # No kube-proxy here: a webhook or aggregated API referenced by Service is reached at the addresses
            # of its EndpointSlices (pod IPs, on podrunner's node address), not at an unroutable ClusterIP.
            "--enable-aggregator-routing=true",
            "--allow-privileged=true",
            "--v=1",
        ],
        ready=lambda: http_ok(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"}),
        facts={"url": url, "port": port},
    )


def write_kubeconfig(run: RunDir, server: str, token: str, cert_dir: str, name: str = "kubeconfig") -> Path:
    """A kubeconfig with `token`, trusting the apiserver's own self-signed serving certificate chain."""
    ca = (Path(cert_dir) / "apiserver.crt").read_bytes()
    path = run.path / name
    path.write_text(
        "\n".join(
            [
                "apiVersion: v1",
                "kind: Config",
                "clusters:",
                "- name: enclave-local",
                "  cluster:",
                f"    server: {server}",
                f"    certificate-authority-data: {base64.b64encode(ca).decode()}",
                "users:",
                "- name: admin",
                "  user:",
                f"    token: {token}",
                "contexts:",
                "- name: enclave-local",
                "  context: {cluster: enclave-local, user: admin}",
                "current-context: enclave-local",
                "",
            ]
        )
    )
    path.chmod(0o600)
    return path


def _controller_manager(bin_dir: Path, kubeconfig: Path, pki: dict[str, str]) -> Service:
    port = free_port()
    return Service(
        name="kube-controller-manager",
        argv=[
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--service-account-private-key-file={pki['sa_key']}",
            f"--root-ca-file={Path(pki['cert_dir']) / 'apiserver.crt'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--v=1",
        ],
        ready=lambda: http_ok(f"https://127.0.0.1:{port}/healthz"),
        facts={"port": port},
    )


def _scheduler(bin_dir: Path, kubeconfig: Path) -> Service:
    port = free_port()
    return Service(
        name="kube-scheduler",
        argv=[
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--v=1",
        ],
        ready=lambda: http_ok(f"https://127.0.0.1:{port}/healthz"),
        facts={"port": port},
    )


def start_plane(
    run: RunDir, *, bin_dir: Path = DEFAULT_BIN_DIR, controller_manager: bool = False, scheduler: bool = False
) -> dict[str, Any]:
    """Start etcd and kube-apiserver (and optionally the controllers); return kubeconfig facts."""
    etcd = run.start(_etcd(run, bin_dir))
    pki = _pki(run)
    api = run.start(_apiserver(run, bin_dir, etcd["url"], pki))
    kubeconfig = write_kubeconfig(run, api["url"], pki["token"], pki["cert_dir"])
    operator = write_kubeconfig(run, api["url"], pki["operator_token"], pki["cert_dir"], "operator.kubeconfig")
    if controller_manager:
        run.start(_controller_manager(bin_dir, kubeconfig, pki))
    if scheduler:
        run.start(_scheduler(bin_dir, kubeconfig))
    return {"server": api["url"], "kubeconfig": str(kubeconfig), "operator_kubeconfig": str(operator)}
