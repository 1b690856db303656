"""The container half of the stand-in kubelet (podrunner.py): starts one container's process the way a
container runtime would, without images — the host's filesystem is the image.

It runs as root inside a private mount namespace (`unshare --mount`, started by podrunner.py) and
1. builds the container's root: an overlay of the host's `/` with a throwaway upper layer, where the mount
   points the pod spec names are made (so `/etc/enclave` or `/var/run/secrets/...` exist inside without
   being created on the host), and where the directories leading to the runtime (this repository's Python)
   are opened for every user; remounted read-only when the container asks for `readOnlyRootFilesystem`;
2. bind-mounts the pod's volumes (directories podrunner.py filled: configMap, secret, projected service
   account token, emptyDir) at their mountPaths, read-only where the mount says so, plus /proc, /dev, /sys;
3. chroots into it, drops to the container's runAsUser/runAsGroup (supplemental groups: fsGroup), and
   execs the command with exactly the environment the pod spec gives.

The network is the host's (pods here are like `hostNetwork: true` pods). Standard library only.

    unshare --mount --propagation private python -m localenv.podsandbox SPEC.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HOST_MOUNTS = ("proc", "dev", "dev/pts", "dev/shm", "sys")
"""Kernel filesystems the host has as separate mounts; an overlay of `/` does not show them."""


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"podsandbox: mount {' '.join(args)}: {result.stderr.strip()}")


def host_path(path: str) -> str:
    """A mountPath as the host resolves it (e.g. /var/run → /run): the overlay shows the host's symlinks."""
    return os.path.realpath(path)


def open_path(root: Path, path: str) -> None:
    """Let any user reach `path` inside the container: an image has its runtime world-readable, but this
    host's Python may live under a private home (e.g. /root/.pyenv). Only the overlay's copy changes."""
    current = Path("/")
    for part in Path(path).parts[1:]:
        current = current / part
        try:
            mode = current.stat().st_mode
        except OSError:
            return
        if current.is_dir() and mode & 0o005 != 0o005:
            os.chmod(root / str(current).lstrip("/"), mode | 0o005)


def keep_host_paths(root: Path, spec: dict[str, Any]) -> None:
    """The stand-in runs commands from this checkout and its virtualenv; a volume mounted over one of their
    ancestors (the chart's emptyDir at /tmp when the checkout is under /tmp) would hide them, so they are bound
    back in place. A real image keeps its runtime outside its volumes."""
    mount_paths = [host_path(m["mountPath"]).rstrip("/") + "/" for m in spec["mounts"]]
    for path in spec.get("hostPaths") or []:
        if any(path.startswith(mount_path) for mount_path in mount_paths):
            target = root / path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            _mount("--rbind", path, str(target))


def prepare_root(spec: dict[str, Any]) -> Path:
    """Mount the container's root filesystem under spec["dir"]/root and return it."""
    base = Path(spec["dir"])
    root, upper, work = base / "root", base / "upper", base / "work"
    for directory in (root, upper, work):
        directory.mkdir(parents=True, exist_ok=True)
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", str(root))
    for mount in spec["mounts"]:  # mount points exist in the overlay only, never on the host
        target = root / host_path(mount["mountPath"]).lstrip("/")
        if Path(mount["source"]).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    for path in spec.get("runtimePaths") or []:
        open_path(root, path)
    if spec.get("readOnlyRootFilesystem"):
        _mount("-o", "remount,ro", str(root))
    for name in HOST_MOUNTS:
        if os.path.ismount(f"/{name}"):
            _mount("--rbind", f"/{name}", str(root / name))
    for mount in spec["mounts"]:
        target = root / host_path(mount["mountPath"]).lstrip("/")
        _mount("--bind", mount["source"], str(target))
        if mount.get("readOnly"):
            _mount("-o", "remount,bind,ro", str(target))
    keep_host_paths(root, spec)
    return root


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(args[0]).read_text())
    root = prepare_root(spec)
    os.chroot(root)
    os.chdir(spec.get("workingDir") or "/")
    uid, gid = spec.get("runAsUser"), spec.get("runAsGroup")
    if uid is not None:
        groups = [g for g in (spec.get("supplementalGroups") or []) if g is not None]
        os.setgroups(groups)
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)
    command = spec["command"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as error:
        print(f"podsandbox: cannot start {command[0]}: {error.strerror}", file=sys.stderr, flush=True)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
