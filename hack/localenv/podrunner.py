"""A stand-in kubelet for the operator's worker namespaces: runs each pending pod's containers as local
processes, with exactly the command, arguments and environment the pod spec gives, and reports the
outcome in the pod's status so the Job controller sees what really happened.

These machines have no container runtime; this lets DataIngest worker Jobs and FederatedNode backup Jobs
run in tests and in the demo. Images are ignored: the command is looked up on PATH (plus every --bin-dir:
this repository's virtualenv has `enclave-ingest-worker` and `enclave-backup-worker`, .cache/bin has
restic). Only what our Jobs use is supported: env `value`, `valueFrom.secretKeyRef`, `valueFrom.fieldRef`
(metadata.name, metadata.namespace, metadata.annotations[...]), `$(VAR)` expansion in command and args,
and `emptyDir` volumes: each becomes a fresh directory per pod (removed when the pod ends), and an env
value, command or argument naming a path under the volume's mountPath is pointed at that directory
(there are no mount namespaces here). Standard library + kubectl only.

    python -m localenv.podrunner --kubeconfig K --namespace enclave-ingest [--namespace enclave-backup]
                                 [--bin-dir .venv/bin] [--bin-dir .cache/bin]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR, REPO_ROOT, RunDir, Service

POLL_S = 0.5
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_ANNOTATION = re.compile(r"^metadata\.annotations\['(.+)'\]$")


class Kubectl:
    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.base = [str(DEFAULT_BIN_DIR / "kubectl"), f"--kubeconfig={kubeconfig}", "-n", namespace]

    def json(self, *args: str) -> dict[str, Any]:
        out = subprocess.run([*self.base, *args, "-o", "json"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return dict(json.loads(out.stdout))

    def patch_status(self, pod: str, status: dict[str, Any]) -> None:
        patch = json.dumps({"status": status})
        out = subprocess.run([*self.base, "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", patch],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_env(pod: dict[str, Any], container: dict[str, Any], kubectl: Kubectl) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), str(entry["value"]))
            continue
        source = entry.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            try:
                data = kubectl.json("get", "secret", ref["name"]).get("data") or {}
            except RuntimeError:
                if ref.get("optional"):
                    continue
                raise
            if ref["key"] in data:
                env[name] = base64.b64decode(data[ref["key"]]).decode()
            elif not ref.get("optional"):
                raise RuntimeError(f"secret {ref['name']} has no key {ref['key']}")
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            meta = pod["metadata"]
            if path == "metadata.name":
                env[name] = meta["name"]
            elif path == "metadata.namespace":
                env[name] = meta["namespace"]
            elif match := _ANNOTATION.match(path):
                env[name] = (meta.get("annotations") or {}).get(match.group(1), "")
            elif path.startswith("metadata.labels['"):
                env[name] = (meta.get("labels") or {}).get(path[len("metadata.labels['") : -2], "")
            else:
                raise RuntimeError(f"fieldRef {path} is not supported")
    return env


def empty_dirs(pod: dict[str, Any], container: dict[str, Any], root: Path) -> dict[str, Path]:
    """mountPath → a fresh local directory, for each emptyDir volume the container mounts."""
    volumes = {v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v}
    out = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] in volumes:
            local = root / pod["metadata"]["uid"] / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            out[mount["mountPath"].rstrip("/")] = local
    return out


def relocate(value: str, mounts: dict[str, Path]) -> str:
    """A path under a mounted emptyDir, pointed at its local directory; anything else unchanged."""
    for mount_path, local in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path):]
    return value


def run_pod(pod: dict[str, Any], kubectl: Kubectl, bin_dirs: list[Path], log_dir: Path) -> int:
    """Run the pod's (single) container to completion; return its exit code."""
    container = pod["spec"]["containers"][0]
    volumes_root = log_dir.parent / "pod-volumes"
    mounts = empty_dirs(pod, container, volumes_root)
    env = {k: relocate(v, mounts) for k, v in resolve_env(pod, container, kubectl).items()}
    expand = lambda s: relocate(_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), s), mounts)  # noqa: E731
    argv = [expand(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    name = pod["metadata"]["name"]
    started = _now()
    kubectl.patch_status(name, {
        "phase": "Running", "startTime": started,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
        "containerStatuses": [{"name": container["name"], "image": container.get("image", ""), "imageID": "",
                               "ready": True, "restartCount": 0, "started": True,
                               "state": {"running": {"startedAt": started}}}],
    })  # fmt: skip
    path = os.pathsep.join([*(str(d) for d in bin_dirs), os.environ.get("PATH", "")])
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "wb") as log:
        try:
            code = subprocess.run(argv, env={"PATH": path, "HOME": "/tmp", **env}, stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL, timeout=3600).returncode  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            log.write(f"podrunner: {type(error).__name__}: {error}\n".encode())
            code = 127
    if mounts:
        shutil.rmtree(volumes_root / pod["metadata"]["uid"], ignore_errors=True)  # emptyDir goes with the pod
    finished = _now()
    kubectl.patch_status(name, {
        "phase": "Succeeded" if code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": finished}],
        "containerStatuses": [{"name": container["name"], "image": container.get("image", ""), "imageID": "",
                               "ready": False, "restartCount": 0, "started": False,
                               "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else
                                                        "Error", "startedAt": started, "finishedAt": finished}}}],
    })  # fmt: skip
    return code


def _run_and_report(pod: dict[str, Any], kubectl: Kubectl, bin_dirs: list[Path], log_dir: Path) -> None:
    """Pods run side by side, as on a node: an Indexed Job's shards are concurrent."""
    try:
        code = run_pod(pod, kubectl, bin_dirs, log_dir)
        print(f"podrunner: pod {pod['metadata']['name']} exited {code}", flush=True)
    except RuntimeError as error:
        print(f"podrunner: pod {pod['metadata']['name']} could not run: {error}", flush=True)


WORKER_NAMESPACES = ("enclave-ingest", "enclave-backup")
"""The namespaces of the operator's worker Jobs (ingest.namespace, federation.backupNamespace defaults)."""


def podrunner_service(run: RunDir, kubeconfig: Path | str, namespaces: Sequence[str] = WORKER_NAMESPACES,
                      bin_dir: Path | None = None) -> Service:  # fmt: skip
    """This stand-in kubelet as a service of a run directory (tests, the demo); pod logs in <run>/logs/pods.
    Commands are found in `bin_dir` (default: this interpreter's, i.e. the virtualenv) and .cache/bin."""
    return Service(
        name="podrunner",
        argv=[sys.executable, "-m", "localenv.podrunner", f"--kubeconfig={kubeconfig}",
              *(f"--namespace={ns}" for ns in namespaces),
              f"--bin-dir={bin_dir or Path(sys.executable).parent}", f"--bin-dir={DEFAULT_BIN_DIR}",
              f"--log-dir={run.logs / 'pods'}"],
        env={"PYTHONPATH": str(REPO_ROOT / "hack")},
        ready=lambda: True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True, action="append", help="a namespace to serve (repeatable)")
    parser.add_argument("--bin-dir", type=Path, action="append", help="where commands are found (repeatable)")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/podrunner-logs"))
    parser.add_argument("--once", action="store_true", help="run what is pending now, then exit")
    args = parser.parse_args(argv)
    kubectls = [Kubectl(args.kubeconfig, namespace) for namespace in args.namespace]
    bin_dirs = args.bin_dir or [Path(sys.executable).parent]
    seen: set[str] = set()
    threads: list[threading.Thread] = []
    print(f"podrunner: watching namespaces {', '.join(args.namespace)}", flush=True)
    while True:
        pods = []
        for kubectl in kubectls:
            try:
                pods += [(kubectl, pod) for pod in kubectl.json("get", "pods").get("items", [])]
            except RuntimeError as error:
                print(f"podrunner: cannot list pods: {error}", flush=True)
        for kubectl, pod in pods:
            uid = pod["metadata"]["uid"]
            if uid in seen or (pod.get("status") or {}).get("phase", "Pending") != "Pending":
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            seen.add(uid)
            worker = threading.Thread(target=_run_and_report, args=(pod, kubectl, bin_dirs, args.log_dir))
            worker.start()
            threads.append(worker)
        if args.once:
            for worker in threads:
                worker.join()
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
