"""A stand-in kubelet: one node that runs the pods of the given namespaces as local processes, exactly as
their pod specs say, and reports what really happened in their status, so the controllers (Job,
ReplicaSet, EndpointSlice) of the real kube-controller-manager act on it.

These machines have no container runtime. This node gives tests and the demo what a kubelet would:
- a Node object (address on a veth pair this process creates, Ready, its Lease renewed), to which it
  binds the pending pods of its namespaces; every pod gets the node's address as its IP (like
  `hostNetwork: true` pods), so a Service's EndpointSlice points at it and the API server reaches a
  webhook served by a pod through its Service;
- volumes: configMap, secret, emptyDir, projected (serviceAccountToken from a TokenRequest bound to the
  pod, configMap, secret, downwardAPI), mounted at their mountPaths in a private mount namespace
  (podsandbox.py), so a pod reads /etc/… or /var/run/secrets/kubernetes.io/serviceaccount/token as in
  a cluster; the service account token is refreshed like the kubelet does;
- env `value`, `valueFrom` (secretKeyRef, configMapKeyRef, fieldRef), `envFrom` (secretRef,
  configMapRef), `$(VAR)` expansion, and KUBERNETES_SERVICE_HOST/PORT (pointing at the API server);
- securityContext runAsUser/runAsGroup/fsGroup and readOnlyRootFilesystem;
- restartPolicy (Always and OnFailure restart with the kubelet's back-off), readiness and liveness
  probes (httpGet, tcpSocket), graceful termination (SIGTERM, terminationGracePeriodSeconds, SIGKILL)
  and the final removal of deleted pods.
Images are ignored: commands are looked up on PATH plus every --bin-dir (this repository's virtualenv
holds `enclave-operator`, `enclave-ingest-worker` and `enclave-backup-worker`; .cache/bin has restic).
Containers' logs go to --log-dir. One container
per pod; resource limits are not enforced. Needs root (veth, mount namespaces). Standard library +
kubectl (+ iproute2, util-linux) only.

    python -m localenv.podrunner --kubeconfig K --namespace NS [--namespace NS2] [--bin-dir D] [--node N]
                                 [--no-schedule]   (the kube-scheduler places pods: several nodes, affinity)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR, REPO_ROOT, RunDir, Service, pid_alive

POLL_S = 0.5
LEASE_RENEW_S = 10.0
STATUS_RENEW_S = 60.0
BACKOFF_S, MAX_BACKOFF_S = 10.0, 300.0
"""The kubelet's container restart back-off: 10 s, doubled per crash, at most 5 minutes."""
TOKEN_SECONDS = 3607
"""Lifetime of the projected service-account token when the pod does not say (as the kubelet's default volume)."""
NODE_POOL = ipaddress.ip_network("10.232.0.0/16")
"""Node addresses (one /32 per podrunner), on a veth pair of this machine; no other interface uses the pool."""
IF_PREFIX = "eprn"
IP = "/usr/sbin/ip"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.base = [str(DEFAULT_BIN_DIR / "kubectl"), f"--kubeconfig={kubeconfig}"]

    def run(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run([*self.base, *args], input=input, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.run(*args, "-o", "json")))

    def patch_status(self, kind: str, name: str, status: dict[str, Any], namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.run("patch", kind, name, *ns, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))

    def server(self) -> tuple[str, int]:
        url = self.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").strip()
        host, _, port = url.removeprefix("https://").partition(":")
        return host, int(port or 443)


# The node: an address of its own, a Node object, its Lease.


def _addresses() -> set[ipaddress.IPv4Address]:
    out = subprocess.run([IP, "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {ipaddress.ip_interface(p[p.index("inet") + 1]).ip for p in (line.split() for line in out.splitlines())
            if "inet" in p}  # fmt: skip


def remove_stale_interfaces() -> None:
    """Interfaces of podrunners that died without cleaning up (their alias names the PID)."""
    out = subprocess.run([IP, "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        match = re.search(rf"^\d+: ({IF_PREFIX}[0-9a-f]+)a@.*alias podrunner:(\d+)", line)
        if match and not pid_alive(int(match.group(2))):
            subprocess.run([IP, "link", "del", match.group(1) + "a"], capture_output=True, check=False)


def create_node_address() -> tuple[str, str]:
    """A veth pair (both ends here) holding a free /32 of NODE_POOL; returns (interface, address)."""
    remove_stale_interfaces()
    used = _addresses()
    address = next(a for a in random.sample(list(NODE_POOL.hosts()), 256) if a not in used)
    name = f"{IF_PREFIX}{secrets.token_hex(4)}"
    steps = [["link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b"],
             ["link", "set", f"{name}a", "alias", f"podrunner:{os.getpid()}"],
             ["addr", "add", f"{address}/32", "dev", f"{name}a"],
             ["link", "set", f"{name}a", "up"], ["link", "set", f"{name}b", "up"]]  # fmt: skip
    for step in steps:
        subprocess.run([IP, *step], capture_output=True, text=True, check=True)
    return f"{name}a", str(address)


def remove_node_address(interface: str) -> None:
    subprocess.run([IP, "link", "del", interface], capture_output=True, check=False)  # takes the peer with it


def node_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64", "enclave.io/podrunner": "true"}},
    }  # fmt: skip


def node_status(name: str, address: str) -> dict[str, Any]:
    memory_kib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki", "pods": "110"}
    now = _now()
    return {
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "podrunner is ready",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "podrunner", "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": "amd64", "containerRuntimeVersion": "podrunner://local", "osImage": "host",
                     "kernelVersion": os.uname().release, "machineID": "", "systemUUID": "", "bootID": ""},
    }  # fmt: skip


def renew_lease(kubectl: Kubectl, node: str) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": _micro_now()},
    }
    kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=podrunner", "-f", "-",
                input=json.dumps(lease))  # fmt: skip


# Volumes and environment.


def _write(directory: Path, files: dict[str, bytes], mode: int, gid: int | None) -> None:
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        if gid is not None:
            os.chown(tmp, -1, gid)
        tmp.replace(path)


def _keyed(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    """All keys as files, or only the listed items under their paths (as the kubelet does)."""
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


class PodEnv:
    """Reads what a pod's volumes and environment refer to."""

    def __init__(self, kubectl: Kubectl, pod: dict[str, Any], address: str = "") -> None:
        self.kubectl, self.pod, self.address = kubectl, pod, address  # the pod's (the node's) address
        self.namespace = pod["metadata"]["namespace"]

    def secret(self, name: str) -> dict[str, bytes]:
        data = self.kubectl.json("get", "secret", name, "-n", self.namespace).get("data") or {}
        return {k: base64.b64decode(v) for k, v in data.items()}

    def config_map(self, name: str) -> dict[str, bytes]:
        cm = self.kubectl.json("get", "configmap", name, "-n", self.namespace)
        out = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return out

    def field(self, path: str) -> str:
        meta, status = self.pod["metadata"], self.pod.get("status") or {}
        simple = {"metadata.name": meta["name"], "metadata.namespace": self.namespace, "metadata.uid": meta["uid"],
                  "spec.nodeName": self.pod["spec"].get("nodeName", ""),
                  "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
                  # Known before the container starts (as to the kubelet once the sandbox exists).
                  "status.podIP": status.get("podIP") or self.address,
                  "status.hostIP": status.get("hostIP") or self.address}  # fmt: skip
        if path in simple:
            return str(simple[path])
        if match := _FIELD.match(path):
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        raise RuntimeError(f"fieldRef {path} is not supported")

    def token(self, audience: str | None, seconds: int) -> bytes:
        meta = self.pod["metadata"]
        args = ["create", "token", self.pod["spec"].get("serviceAccountName") or "default", "-n", self.namespace,
                f"--duration={seconds}s", "--bound-object-kind=Pod", f"--bound-object-name={meta['name']}",
                f"--bound-object-uid={meta['uid']}"]  # fmt: skip
        if audience:
            args.append(f"--audience={audience}")
        return self.kubectl.run(*args).strip().encode()


@dataclasses.dataclass
class Volume:
    path: Path
    refresh_at: float | None = None
    """When the projected token must be renewed (80% of its lifetime, as the kubelet does)."""
    source: dict[str, Any] = dataclasses.field(default_factory=dict)


def fill_volume(env: PodEnv, volume: dict[str, Any], path: Path, gid: int | None) -> Volume:
    """Create the directory of one volume with the files the kubelet would put there."""
    path.mkdir(parents=True, exist_ok=True)
    refresh_at = None
    if "emptyDir" in volume:
        path.chmod(0o777)
    elif "configMap" in volume:
        source = volume["configMap"]
        _write(path, _keyed(env.config_map(source["name"]), source.get("items")), source.get("defaultMode", 0o644), gid)
    elif "secret" in volume:
        source = volume["secret"]
        _write(path, _keyed(env.secret(source["secretName"]), source.get("items")), source.get("defaultMode", 0o644),
               gid)  # fmt: skip
    elif "projected" in volume:
        mode = volume["projected"].get("defaultMode", 0o644)
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                seconds = int(sat.get("expirationSeconds", TOKEN_SECONDS))
                _write(path, {sat["path"]: env.token(sat.get("audience"), seconds)}, mode, gid)
                refresh_at = time.monotonic() + 0.8 * seconds
            elif "configMap" in source:
                _write(path, _keyed(env.config_map(source["configMap"]["name"]), source["configMap"].get("items")),
                       mode, gid)  # fmt: skip
            elif "secret" in source:
                _write(path, _keyed(env.secret(source["secret"]["name"]), source["secret"].get("items")), mode, gid)
            elif "downwardAPI" in source:
                items = source["downwardAPI"].get("items") or []
                _write(path, {i["path"]: env.field(i["fieldRef"]["fieldPath"]).encode() for i in items}, mode, gid)
    else:
        raise RuntimeError(f"volume {volume['name']}: only emptyDir, configMap, secret and projected are supported")
    return Volume(path, refresh_at, volume)


def resolve_env(env: PodEnv, container: dict[str, Any], api: tuple[str, int]) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    out: dict[str, str] = {"KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1])}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        try:
            data = env.secret(ref["name"]) if "secretRef" in source else env.config_map(ref["name"])
        except RuntimeError:
            if ref.get("optional"):
                continue
            raise
        out.update({prefix + k: v.decode() for k, v in data.items()})
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            out[name] = _VAR.sub(lambda m: out.get(m.group(1), m.group(0)), str(entry["value"]))
            continue
        source = entry.get("valueFrom") or {}
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref is not None:
            try:
                data = env.secret(ref["name"]) if "secretKeyRef" in source else env.config_map(ref["name"])
            except RuntimeError:
                if ref.get("optional"):
                    continue
                raise
            if ref["key"] in data:
                out[name] = data[ref["key"]].decode()
            elif not ref.get("optional"):
                raise RuntimeError(f"{ref['name']} has no key {ref['key']}")
        elif "fieldRef" in source:
            out[name] = env.field(source["fieldRef"]["fieldPath"])
        else:
            raise RuntimeError(f"env {name}: only value, secretKeyRef, configMapKeyRef and fieldRef are supported")
    return out


def probe(spec: dict[str, Any] | None, address: str, ports: dict[str, int]) -> bool:
    """One httpGet or tcpSocket probe against the pod's address; no probe means success."""
    if not spec:
        return True
    timeout = float(spec.get("timeoutSeconds", 1))
    action = spec.get("httpGet") or spec.get("tcpSocket")
    if action is None:
        return False  # exec probes are not supported: never ready, so a test notices
    port = action["port"]
    port = ports[port] if isinstance(port, str) else int(port)
    if "httpGet" in spec:
        url = f"{spec['httpGet'].get('scheme', 'HTTP').lower()}://{address}:{port}{action.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the pod's own address
                return 200 <= int(response.status) < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# One pod: its volumes, its container's process, its status.


class PodWorker(threading.Thread):
    def __init__(self, node: Node, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.node, self.pod = node, pod
        self.meta = pod["metadata"]
        self.name, self.namespace, self.uid = self.meta["name"], self.meta["namespace"], self.meta["uid"]
        self.deleted = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.dir = node.state / self.uid

    def log(self, message: str) -> None:
        print(f"podrunner: {self.namespace}/{self.name}: {message}", flush=True)

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:  # noqa: BLE001 - any failure is reported on the pod, as a kubelet would
            self.log(f"could not run: {error}")
            try:
                self._set_status("Failed", self._terminated(128, "ContainerCannotRun", str(error)), ready=False)
            except RuntimeError:
                pass
        finally:
            if self.deleted.is_set():
                self._finish_deletion()

    def _security(self, container: dict[str, Any]) -> dict[str, Any]:
        pod_sc, sc = self.pod["spec"].get("securityContext") or {}, container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid is None and (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            raise RuntimeError("runAsNonRoot without runAsUser: the image's user is unknown here")
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        groups = [*(pod_sc.get("supplementalGroups") or []), *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else [])]
        return {"runAsUser": uid, "runAsGroup": gid, "supplementalGroups": groups,
                "readOnlyRootFilesystem": bool(sc.get("readOnlyRootFilesystem"))}  # fmt: skip

    def _run(self) -> None:
        spec = self.pod["spec"]
        if len(spec.get("containers") or []) != 1 or spec.get("initContainers"):
            raise RuntimeError("one container and no init containers are supported")
        container = spec["containers"][0]
        env_reader = PodEnv(self.node.kubectl, self.pod, self.node.address)
        security = self._security(container)
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        volumes = {v["name"]: fill_volume(env_reader, v, self.dir / "volumes" / v["name"], fs_group)
                   for v in spec.get("volumes") or []}  # fmt: skip
        mounts = [{"mountPath": m["mountPath"], "readOnly": bool(m.get("readOnly")),
                   "source": str(volumes[m["name"]].path / m.get("subPath", ""))}
                  for m in container.get("volumeMounts") or []]  # fmt: skip
        env = resolve_env(env_reader, container, self.node.api)
        env["PATH"] = os.pathsep.join([*(str(d) for d in self.node.bin_dirs), env.get("PATH", os.defpath)])
        env.setdefault("HOSTNAME", self.name)
        expand = lambda s: _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), s)  # noqa: E731
        command = [expand(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if not command:
            raise RuntimeError("the container has no command (images are ignored here)")
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        policy = spec.get("restartPolicy", "Always")
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        backoff = BACKOFF_S
        while not self.deleted.is_set():
            sandbox = self.dir / f"sandbox-{self.restarts}"
            sandbox.mkdir(parents=True, exist_ok=True)
            spec_file = sandbox / "spec.json"
            spec_file.write_text(json.dumps({"dir": str(sandbox), "mounts": mounts, "env": env, "command": command,
                                             "workingDir": container.get("workingDir"),
                                             "runtimePaths": self.node.runtime_paths(),
                                             "hostPaths": self.node.host_paths(), **security}))  # fmt: skip
            started = _now()
            self.node.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.node.log_dir / f"{self.name}.log", "ab") as log:
                self.proc = subprocess.Popen(
                    ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "localenv.podsandbox",
                     str(spec_file)],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                    env={"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(REPO_ROOT / "hack")},
                )  # fmt: skip
            (sandbox / "pid").write_text(str(self.proc.pid))  # unshare and podsandbox exec: this is the container
            running = {"running": {"startedAt": started}}
            self._set_status("Running", running, ready=False, started=started)
            code = self._supervise(container, ports, volumes, running, started, grace)
            finished = _now()
            reason = "Completed" if code == 0 else "Error"
            terminated = self._terminated(code, reason, "", started, finished)
            if self.deleted.is_set() or policy == "Never" or (policy == "OnFailure" and code == 0):
                phase = "Succeeded" if code == 0 else "Failed"
                self._set_status(phase, terminated, ready=False)
                self.log(f"exited {code}")
                return
            self.restarts += 1
            self.log(f"exited {code}; restart {self.restarts} in {backoff:.0f}s")
            waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {backoff:.0f}s"}}
            self._set_status("Running", waiting, ready=False, last=terminated)
            if self.deleted.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _supervise(self, container: dict[str, Any], ports: dict[str, int], volumes: dict[str, Volume],
                   running: dict[str, Any], started: str, grace: float) -> int:  # fmt: skip
        """Probe until the process exits (or the pod is deleted, or liveness fails); return its exit code."""
        assert self.proc is not None
        address = self.node.address
        readiness, liveness = container.get("readinessProbe"), container.get("livenessProbe")
        start = time.monotonic()
        ready: bool | None = None
        next_ready = next_live = 0.0
        live_failures = 0
        while self.proc.poll() is None:
            now = time.monotonic()
            if self.deleted.is_set():
                self._terminate(grace)
                break
            for name, volume in volumes.items():
                if volume.refresh_at is not None and now >= volume.refresh_at:  # a token near its expiry
                    env = PodEnv(self.node.kubectl, self.pod, self.node.address)
                    volumes[name] = fill_volume(env, volume.source, volume.path,
                                                (self.pod["spec"].get("securityContext") or {}).get("fsGroup"))
            if now >= next_ready and now - start >= float((readiness or {}).get("initialDelaySeconds", 0)):
                result = probe(readiness, address, ports)
                next_ready = now + float((readiness or {}).get("periodSeconds", 10))
                if result != ready:
                    ready = result
                    self._set_status("Running", running, ready=result, started=started)
            if liveness and now >= next_live and now - start >= float(liveness.get("initialDelaySeconds", 0)):
                next_live = now + float(liveness.get("periodSeconds", 10))
                live_failures = 0 if probe(liveness, address, ports) else live_failures + 1
                if live_failures >= int(liveness.get("failureThreshold", 3)):
                    self.log("liveness probe failed; restarting the container")
                    self._terminate(grace)
                    break
            time.sleep(0.2)
        code = self.proc.wait()
        return 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as the kubelet says

    def _terminate(self, grace: float) -> None:
        assert self.proc is not None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    @staticmethod
    def _terminated(code: int, reason: str, message: str, started: str = "", finished: str = "") -> dict[str, Any]:
        finished = finished or _now()
        state = {"exitCode": code, "reason": reason, "startedAt": started or finished, "finishedAt": finished}
        return {"terminated": {**state, **({"message": message} if message else {})}}

    def _set_status(self, phase: str, state: dict[str, Any], *, ready: bool, started: str | None = None,
                    last: dict[str, Any] | None = None) -> None:  # fmt: skip
        container = self.pod["spec"]["containers"][0]
        now = _now()
        flag = "True" if ready else "False"
        address = self.node.address
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": address, "hostIPs": [{"ip": address}], "podIP": address, "podIPs": [{"ip": address}],
            "startTime": started or (self.pod.get("status") or {}).get("startTime") or now,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": now}
                           for t, s in (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag),
                                        ("Ready", flag))],
            "containerStatuses": [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "ready": ready, "started": "running" in state, "restartCount": self.restarts, "state": state,
                **({"lastState": last} if last else {}),
            }],
        }  # fmt: skip
        self.node.kubectl.patch_status("pod", self.name, status, self.namespace)
        self.pod["status"] = status

    def _finish_deletion(self) -> None:
        """The kubelet's last word on a deleted pod: remove it now that its container has stopped."""
        self.node.delete_pod(self.namespace, self.name, self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    def __init__(self, kubectl: Kubectl, name: str, address: str, namespaces: Sequence[str], bin_dirs: list[Path],
                 log_dir: Path, state: Path, schedule: bool = True) -> None:  # fmt: skip
        self.kubectl, self.name, self.address, self.schedule = kubectl, name, address, schedule
        self.namespaces, self.bin_dirs, self.log_dir, self.state = set(namespaces), bin_dirs, log_dir, state
        self.api = kubectl.server()
        self.workers: dict[str, PodWorker] = {}

    def runtime_paths(self) -> list[str]:
        """What the containers' commands need to reach: the bin dirs and the interpreter behind their scripts."""
        paths = {os.path.realpath(d) for d in self.bin_dirs}
        paths |= {os.path.realpath(d / "python3") for d in self.bin_dirs if (d / "python3").exists()}
        paths.add(os.path.realpath(sys.executable))
        return sorted(paths)

    def host_paths(self) -> list[str]:
        """Directories the containers' commands run from (this checkout, the bin dirs): kept visible even under a
        volume mounted over an ancestor (podsandbox.keep_host_paths)."""
        return sorted({os.path.realpath(REPO_ROOT), *(os.path.realpath(d) for d in self.bin_dirs if d.is_dir())})

    def register(self) -> None:
        self.kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=podrunner", "-f", "-",
                         input=json.dumps(node_manifest(self.name)))  # fmt: skip
        self.kubectl.patch_status("node", self.name, node_status(self.name, self.address))
        renew_lease(self.kubectl, self.name)

    def bind(self, pod: dict[str, Any]) -> None:
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": self.name}}  # fmt: skip
        self.kubectl.run("create", "-f", "-", input=json.dumps(binding))

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.kubectl.run("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force", "--wait=false")
        except RuntimeError as error:
            if "NotFound" not in str(error):
                print(f"podrunner: cannot remove {namespace}/{name}: {error}", flush=True)

    def sync(self) -> None:
        pods = self.kubectl.json("get", "pods", "--all-namespaces").get("items", [])
        for pod in pods:
            meta, spec = pod["metadata"], pod["spec"]
            phase = (pod.get("status") or {}).get("phase", "Pending")
            if not spec.get("nodeName"):
                ours = self.schedule and meta["namespace"] in self.namespaces
                if ours and not meta.get("deletionTimestamp") and phase == "Pending":
                    try:
                        self.bind(pod)
                    except RuntimeError as error:
                        print(f"podrunner: cannot bind {meta['namespace']}/{meta['name']}: {error}", flush=True)
                continue
            if spec["nodeName"] != self.name:
                continue
            worker = self.workers.get(meta["uid"])
            if meta.get("deletionTimestamp"):
                if worker is not None and worker.is_alive():
                    worker.deleted.set()
                else:
                    self.delete_pod(meta["namespace"], meta["name"], meta["uid"])
                continue
            if worker is None and phase == "Pending":
                worker = PodWorker(self, pod)
                self.workers[meta["uid"]] = worker
                worker.start()

    def shutdown(self) -> None:
        for worker in self.workers.values():
            if worker.is_alive() and worker.proc is not None:
                try:
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def container_pid(state_dir: Path, pod_uid: str) -> int | None:
    """The PID of a pod's running container (tests read its /proc: identity, environment, mounts)."""
    for pid_file in sorted((state_dir / pod_uid).glob("sandbox-*/pid"), key=lambda p: p.stat().st_mtime, reverse=True):
        pid = int(pid_file.read_text())
        if pid_alive(pid):
            return pid
    return None


WORKER_NAMESPACES = ("enclave-ingest", "enclave-backup")
"""The namespaces of the operator's worker Jobs (ingest.namespace, federation.backupNamespace defaults)."""


def podrunner_service(run: RunDir, kubeconfig: Path | str, namespaces: str | Sequence[str] = WORKER_NAMESPACES,
                      bin_dir: Path | None = None, *, node: str = "podrunner", schedule: bool = True) -> Service:
    """This stand-in kubelet as a service of a run directory (tests, the demo); pod logs in <run>/logs/pods.
    Commands are found in `bin_dir` (default: this interpreter's, i.e. the virtualenv) and .cache/bin.
    Several nodes (distinct `node` names, `schedule=False`) leave placement to the real kube-scheduler."""
    names = [namespaces] if isinstance(namespaces, str) else list(namespaces)
    ready_file = run.path / f"{node}.ready"
    ready_file.unlink(missing_ok=True)
    return Service(
        name=node,
        argv=[sys.executable, "-m", "localenv.podrunner", f"--kubeconfig={kubeconfig}", f"--node={node}",
              *(f"--namespace={ns}" for ns in names), *([] if schedule else ["--no-schedule"]),
              f"--bin-dir={bin_dir or Path(sys.executable).parent}", f"--bin-dir={DEFAULT_BIN_DIR}",
              f"--log-dir={run.logs / 'pods'}", f"--state-dir={run.path / 'pods'}", f"--ready-file={ready_file}"],
        env={"PYTHONPATH": str(REPO_ROOT / "hack")},
        ready=ready_file.exists,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True, action="append", help="a namespace to serve (repeatable)")
    parser.add_argument("--bin-dir", type=Path, action="append", help="where commands are found (repeatable)")
    parser.add_argument("--node", default="podrunner", help="name of the Node object")
    parser.add_argument("--no-schedule", dest="schedule", action="store_false",
                        help="run only the pods the kube-scheduler binds here (several nodes); "
                        "default: bind pending pods")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "podrunner-logs")
    parser.add_argument("--state-dir", type=Path, default=None, help="pods' volumes and sandboxes")
    parser.add_argument("--ready-file", type=Path, default=None, help="touched once the node is registered")
    args = parser.parse_args(argv)
    kubectl = Kubectl(args.kubeconfig)
    interface, address = create_node_address()
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="podrunner-"))
    node = Node(kubectl, args.node, address, args.namespace, args.bin_dir or [Path(sys.executable).parent],
                args.log_dir, state, schedule=args.schedule)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        node.register()
        if args.ready_file:
            args.ready_file.touch()
        print(f"podrunner: node {args.node} at {address} serving {', '.join(args.namespace)}", flush=True)
        lease_at = status_at = time.monotonic()
        while not stop.is_set():
            try:
                node.sync()
                now = time.monotonic()
                if now - lease_at >= LEASE_RENEW_S:
                    renew_lease(kubectl, args.node)
                    lease_at = now
                if now - status_at >= STATUS_RENEW_S:
                    kubectl.patch_status("node", args.node, node_status(args.node, address))
                    status_at = now
            except RuntimeError as error:
                print(f"podrunner: {error}", flush=True)
            stop.wait(POLL_S)
    finally:
        node.shutdown()
        remove_node_address(interface)
    return 0


if __name__ == "__main__":
    sys.exit(main())
