"""`make demo`: the local plane and MinIO, the CRDs, the operator as a managed process, and the example
project, left running. `make down` stops everything it started (every process is in .run/state.json).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localenv import environment  # noqa: E402
from localenv.runtime import REPO_ROOT, RunDir, Service, ServiceError, free_port, http_ok  # noqa: E402

EXAMPLE = REPO_ROOT / "manifests" / "examples" / "research-project.yaml"
KUBECTL = str(REPO_ROOT / ".cache" / "bin" / "kubectl")


def kubectl(run: RunDir, *args: str) -> str:
    result = subprocess.run(
        [KUBECTL, f"--kubeconfig={run.path / 'kubeconfig'}", *args], capture_output=True, text=True, timeout=180
    )
    if result.returncode != 0:
        raise ServiceError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def operator_service(run: RunDir, minio: dict[str, str]) -> Service:
    config = run.path / "operator-config.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            s3: {{endpoint: "{minio["endpoint"]}", secure: false}}
            intervals: {{resyncSeconds: 60, retrySeconds: 5}}
        """)
    )
    liveness, metrics = free_port(), free_port()
    return Service(
        name="enclave-operator",
        argv=[
            sys.executable,
            "-m",
            "enclave_operator",
            "run",
            f"--config={config}",
            "--standalone",
            "--bind=127.0.0.1",
            f"--liveness-port={liveness}",
            f"--metrics-port={metrics}",
        ],  # fmt: skip
        env={
            "KUBECONFIG": str(run.path / "kubeconfig"),
            "ENCLAVE_S3_ACCESS_KEY": minio["access_key"],
            "ENCLAVE_S3_SECRET_KEY": minio["secret_key"],
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{liveness}/healthz"),
        facts={"liveness": f"http://127.0.0.1:{liveness}/healthz", "metrics": f"http://127.0.0.1:{metrics}/metrics"},
    )


def up() -> int:
    run = RunDir()
    start = time.monotonic()
    facts = environment.up(run, controllers=True)
    kubectl(run, "apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    kubectl(run, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
            "app.kubernetes.io/part-of=enclave-operator")  # fmt: skip
    operator = run.start(operator_service(run, facts["minio"]))
    kubectl(run, "apply", "-f", str(EXAMPLE))
    kubectl(run, "wait", "--for=condition=Ready", "--timeout=120s", "researchproject/onco-flow")
    print(kubectl(run, "get", "researchprojects", "-o", "wide"))
    minio = facts["minio"]
    print(
        textwrap.dedent(f"""\
        Ready in {time.monotonic() - start:.0f}s. Everything keeps running; `make down` stops it.

          {environment.exports(run).replace(chr(10), chr(10) + "          ")}
          kubectl get enclave                       # every enclave object
          kubectl describe researchproject onco-flow
          kubectl get namespace onco-flow --show-labels

          MinIO (S3):      http://{minio["endpoint"]}  (root credentials in {run.state_file})
          operator log:    {run.logs / "enclave-operator.log"}
          operator health: {operator["liveness"]}
          metrics:         {operator["metrics"]}
        """)
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["up"]:
        print("usage: hack/demo.py up", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(up())
    except ServiceError as error:
        print(f"demo: {error}", file=sys.stderr)
        sys.exit(1)
