"""How the local environment runs several operator processes behind one webhook address.

- `balancer_service`: the loopback TCP balancer (balancer.py) standing in for the operator's Service.
- `install_webhooks`: the Mutating- and ValidatingWebhookConfiguration from `enclave-operator
  webhook-config`, pointing at the balancer. The deployment owns them, not an operator process: kopf's
  managed configuration would be emptied by whichever process stops first.
- `install_peering`: kopf's ClusterKopfPeering CRD and object (manifests/peering), so that exactly one
  process reconciles.
- `webhook_settings`: the operator configuration's `webhook` section and the environment (the approval
  signing key) every process of one environment shares.

Used by `make demo` (hack/demo.py) and the test fixtures (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localenv.certs import loopback_server_cert
from localenv.runtime import DEFAULT_BIN_DIR, REPO_ROOT, Service, ServiceError

SIGNING_KEY_ENV = "ENCLAVE_SIGNING_KEY"

PEERING = REPO_ROOT / "manifests" / "peering"


def listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port` (a webhook server, the balancer)."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def balancer_service(listen_port: int, backend_ports: list[int], name: str = "webhook-balancer") -> Service:
    argv = [sys.executable, str(Path(__file__).with_name("balancer.py")), "--listen", f"127.0.0.1:{listen_port}"]
    for port in backend_ports:
        argv += ["--backend", f"127.0.0.1:{port}"]
    return Service(
        name=name,
        argv=argv,
        ready=lambda: listening(listen_port),
        facts={"url": f"https://127.0.0.1:{listen_port}", "backends": backend_ports},
    )


def _kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    result = subprocess.run([str(DEFAULT_BIN_DIR / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
                            input=input_text, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    if result.returncode != 0:
        raise ServiceError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def install_webhooks(kubeconfig: Path, url: str, ca_file: Path | str, name: str, operator_user: str = "") -> None:
    """`operator_user`: the username the operator processes run as, whose own requests skip the webhooks (as the
    chart does for its service account); empty when they run as an admin, whose requests must not skip them."""
    rendered = subprocess.run(
        [sys.executable, "-m", "enclave_operator", "webhook-config", "--url", url, "--ca-file", str(ca_file),
         "--name", name, "--operator-user", operator_user],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if rendered.returncode != 0:
        raise ServiceError(f"enclave-operator webhook-config: {rendered.stderr.strip()}")
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", input_text=rendered.stdout)


def remove_webhooks(kubeconfig: Path, name: str) -> None:
    _kubectl(kubeconfig, "delete", "--ignore-not-found", "mutatingwebhookconfiguration", name)
    _kubectl(kubeconfig, "delete", "--ignore-not-found", "validatingwebhookconfiguration", name)


def install_peering(kubeconfig: Path) -> None:
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(PEERING / "crd.yaml"))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
             "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(PEERING / "peering.yaml"))


def webhook_settings(
    directory: Path, port: int, name: str = "webhooks.enclave.io"
) -> tuple[dict[str, object], dict[str, str]]:
    """(the `webhook` settings of one process on `port`, the environment all processes share).

    The serving certificate covers 127.0.0.1 (the balancer passes TLS through); the signing key is made
    once per directory and kept there (mode 0600), like a Secret mounted into every pod.
    """
    import secrets

    tls = loopback_server_cert(directory / "webhook-tls", "webhook")
    key_file = directory / "webhook-tls" / "signing.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    section = {"listenAddress": "127.0.0.1", "port": port, "certFile": tls["cert"], "keyFile": tls["key"],
               "configurationName": name}  # fmt: skip
    return section, {SIGNING_KEY_ENV: key_file.read_text().strip()}


def ca_file(directory: Path) -> Path:
    """The CA of the serving certificate `webhook_settings` made (for the webhook configurations' caBundle)."""
    return directory / "webhook-tls" / "ca.crt"
