"""Slurm on loopback: munged, MariaDB, slurmdbd, slurmctld and one slurmd per GPU node, all under the run
directory.

Why each piece: the operator writes Slurm associations (accounts, users, GrpTRES=gres/gpu=N) through
sacctmgr, which talks to slurmdbd, which stores them in MariaDB; slurmdbd and its clients authenticate
with munge; and `gres/gpu` only becomes a known TRES after a slurmctld with `GresTypes=gpu` and
`AccountingStorageTRES=gres/gpu` has registered with slurmdbd. Nothing touches /etc: clients find the
cluster through `SLURM_CONF=<run dir>/slurm/slurm.conf` (see the `env` fact).

Every daemon runs in the foreground so that the PID recorded by `RunDir.start` is the daemon itself.

GPU nodes (GPU_NODES): several node names on this one host, each its own `slurmd -N <node>` with its own
port, spool and pid file, with typed GPU GRES (`Gres=gpu:a100:2`). Slurm 22.05 drops a GPU GRES without
device files ("Removing file-less GPU"), so each GPU is a character device node made in the run directory
(the null device's numbers, as Slurm's own test suite fakes GPUs; a plain file where mknod is not
allowed, which slurmd accepts with a warning). Each family has its partition (named after the
architecture, as sites do) and a node feature, which GPU reservations use to pick whole nodes.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from localenv.runtime import RunDir, Service, ServiceError, free_port

CLUSTER = "enclave"
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
CLIENT_TIMEOUT_S = 15.0
GPU_NODES = {
    "a100": {"partition": "GPUampere", "nodes": ["gpu-a100-1", "gpu-a100-2"], "gpus": 2},
    "h100": {"partition": "GPUhopper", "nodes": ["gpu-h100-1"], "gpus": 4},
}
"""GPU family → its partition, nodes and GPUs per node (feature = family name, GRES type = family name)."""
DEFAULT_PARTITION = "gpu"
"""Every GPU node; jobs without -p land here. A default time limit keeps nodes reservable ahead."""


def _paths(run: RunDir) -> dict[str, Path]:
    root = run.path / "slurm"
    return {
        "root": root,
        "munge_dir": root / "munge",
        "munge_socket": root / "munge" / "sock" / "munge.socket",
        "munge_key": root / "munge" / "munge.key",
        "mysql_dir": root / "mysql",
        "mysql_data": root / "mysql" / "data",
        "mysql_socket": root / "mysql" / "mysqld.sock",
        "state": root / "state",
        "spool": root / "spool",
        "slurm_conf": root / "slurm.conf",
        "slurmdbd_conf": root / "slurmdbd.conf",
    }


def _run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = CLIENT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv built from our own paths
        argv,
        env={**os.environ, **(env or {})},
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _munge_round_trip(path: Path) -> bool:
    """Ready = a credential encoded by munged decodes again through the same socket."""
    if not path.exists():
        return False
    try:
        encoded = _run(["munge", "--no-input", f"--socket={path}"], timeout=5)
        if encoded.returncode != 0:
            return False
        return _run(["unmunge", f"--socket={path}"], input_text=encoded.stdout, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


# --- munged -------------------------------------------------------------------------------------


def munge_service(run: RunDir) -> Service:
    """munged with its own key and socket; the socket directory is o+x so other users could reach it."""
    p = _paths(run)
    p["munge_socket"].parent.mkdir(parents=True, exist_ok=True)
    p["munge_dir"].chmod(0o711)
    p["munge_socket"].parent.chmod(0o711)
    if not p["munge_key"].exists():
        result = _run(["mungekey", "--create", "--bits=1024", f"--keyfile={p['munge_key']}"])
        if result.returncode != 0:
            raise ServiceError(f"mungekey failed: {result.stderr.strip()}")
    p["munge_key"].chmod(0o600)
    return Service(
        name="munged",
        argv=[
            "munged",
            "--foreground",
            # The run dir may be private (pytest makes 0700 dirs); munged would refuse a socket whose
            # ancestors lack o+x. --force turns that into a warning: our own clients run as the same user.
            "--force",
            f"--socket={p['munge_socket']}",
            f"--key-file={p['munge_key']}",
            f"--pid-file={p['munge_dir'] / 'munged.pid'}",
            f"--seed-file={p['munge_dir'] / 'munged.seed'}",
            f"--log-file={run.logs / 'munged.file.log'}",
        ],
        ready=lambda: _munge_round_trip(p["munge_socket"]),
        facts={"socket": str(p["munge_socket"]), "key": str(p["munge_key"])},
    )


# --- MariaDB ------------------------------------------------------------------------------------


def _mysql_client(p: dict[str, Path], sql: str) -> subprocess.CompletedProcess[str]:
    """Run SQL as the database superuser over the unix socket (unix_socket auth: the same OS user).

    mariadb-install-db made that account for whoever runs us, root or not (--auth-root-socket-user).
    """
    user = getpass.getuser()
    return _run(["mariadb", "--no-defaults", f"--socket={p['mysql_socket']}", "-u", user, "-N", "-B"], input_text=sql)


def mariadb_service(run: RunDir) -> Service:
    """mariadbd from its own datadir, unix socket plus loopback TCP (slurmdbd connects over TCP)."""
    p = _paths(run)
    p["mysql_dir"].mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    if not (p["mysql_data"] / "mysql").is_dir():
        result = _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={p['mysql_data']}",
                f"--user={user}",
                "--auth-root-authentication-method=socket",
                f"--auth-root-socket-user={user}",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            timeout=120,
        )
        if result.returncode != 0:
            raise ServiceError(f"mariadb-install-db failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    port = free_port()
    return Service(
        name="mariadb",
        argv=[
            "mariadbd",
            "--no-defaults",
            f"--datadir={p['mysql_data']}",
            f"--socket={p['mysql_socket']}",
            f"--pid-file={p['mysql_dir'] / 'mysqld.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            f"--user={user}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--innodb-log-file-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-lock-wait-timeout=900",
            "--max-allowed-packet=16M",
        ],
        ready=lambda: _mysql_client(p, "SELECT 1;").returncode == 0,
        facts={"socket": str(p["mysql_socket"]), "host": "127.0.0.1", "port": port},
    )


def _create_accounting_db(p: dict[str, Path], password: str) -> None:
    """Idempotent: the accounting database and a password user reachable over loopback TCP."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {DB_NAME};"]
    for host in ("127.0.0.1", "localhost"):
        statements += [
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{password}';",
            f"ALTER USER '{DB_USER}'@'{host}' IDENTIFIED BY '{password}';",
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'{host}';",
        ]
    result = _mysql_client(p, "\n".join(statements) + "\nFLUSH PRIVILEGES;\n")
    if result.returncode != 0:
        raise ServiceError(f"creating {DB_NAME} failed: {result.stderr.strip()}")


# --- slurm.conf / slurmdbd.conf -----------------------------------------------------------------


def _write_confs(run: RunDir, *, munge_socket: str, db_port: int, db_password: str) -> dict[str, Any]:
    """Write slurmdbd.conf (mode 600) and slurm.conf once per run dir; return the ports they name."""
    p = _paths(run)
    for key in ("state", "spool"):
        p[key].mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    host = socket.gethostname().split(".")[0]
    dbd_port, ctld_port, slurmd_port = free_port(), free_port(), free_port()
    all_nodes = [node for f in GPU_NODES.values() for node in f["nodes"]]
    node_ports = {node: free_port() for node in all_nodes}
    devices = {node: _fake_gpus(p["root"] / "dev", node, int(f["gpus"])) for f in GPU_NODES.values()
               for node in f["nodes"]}  # fmt: skip
    node_lines = [
        f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={node_ports[node]} CPUs=8 RealMemory=8000 "
        f"Gres=gpu:{family}:{f['gpus']} Feature={family}"
        for family, f in GPU_NODES.items() for node in f["nodes"]
    ]  # fmt: skip
    for node in all_nodes:
        (p["spool"] / node).mkdir(parents=True, exist_ok=True)
    dbd = "\n".join(
        [
            "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",
            "CommunicationParameters=NoInAddrAny",
            f"DbdPort={dbd_port}",
            f"SlurmUser={user}",
            f"PidFile={p['root'] / 'slurmdbd.pid'}",
            "DebugLevel=info",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={db_port}",
            f"StorageUser={DB_USER}",
            f"StoragePass={db_password}",
            f"StorageLoc={DB_NAME}",
            "",
        ]
    )
    p["slurmdbd_conf"].write_text(dbd)
    p["slurmdbd_conf"].chmod(0o600)
    conf = "\n".join(
        [
            f"ClusterName={CLUSTER}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={user}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}",
            "CredType=cred/munge",
            # Bind to SlurmctldHost's address (127.0.0.1), not INADDR_ANY (NoCtldInAddrAny is slurmctld's).
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
            f"StateSaveLocation={p['state']}",
            f"SlurmdSpoolDir={p['spool']}/%n",
            f"SlurmctldPidFile={p['root'] / 'slurmctld.pid'}",
            f"SlurmdPidFile={p['root'] / 'slurmd-%n.pid'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "SlurmctldDebug=info",
            "JobAcctGatherType=jobacct_gather/none",
            "MailProg=/bin/true",
            "GresTypes=gpu",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={dbd_port}",
            # Clients reach slurmdbd through the munge socket named here, not through AuthInfo.
            f"AccountingStoragePass={munge_socket}",
            "AccountingStorageTRES=" + ",".join(["gres/gpu", *(f"gres/gpu:{family}" for family in GPU_NODES)]),
            "AccountingStorageEnforce=associations,limits,safe",
            # The hardware check would drain nodes that claim more CPUs than this host has.
            "SlurmdParameters=config_overrides",
            *node_lines,
            f"PartitionName={DEFAULT_PARTITION} Nodes={','.join(all_nodes)} Default=YES DefaultTime=10 "
            "MaxTime=INFINITE State=UP",
            *(f"PartitionName={f['partition']} Nodes={','.join(f['nodes'])} DefaultTime=10 MaxTime=INFINITE State=UP"
              for f in GPU_NODES.values()),
            "",
        ]
    )  # fmt: skip
    p["slurm_conf"].write_text(conf)
    gres = [f"NodeName={node} Name=gpu Type={family} File={devices[node]}" for family, f in GPU_NODES.items()
            for node in f["nodes"]]  # fmt: skip
    (p["root"] / "gres.conf").write_text("\n".join(gres) + "\n")
    return {"dbd_port": dbd_port, "ctld_port": ctld_port, "host": host, "slurmd_ports": node_ports}


def _fake_gpus(directory: Path, node: str, count: int) -> str:
    """`count` device files for a node's GPUs; returns the gres.conf File= range."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = directory / f"{node}-nvidia{index}"
        if path.exists():
            continue
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            path.touch()
    return str(directory / f"{node}-nvidia[0-{count - 1}]")


def client_env(slurm_conf: str | Path) -> dict[str, str]:
    """Environment for sacctmgr/scontrol against this cluster."""
    return {"SLURM_CONF": str(slurm_conf)}


def sacctmgr(slurm_conf: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `sacctmgr -i <args>` against the local cluster (non-interactive, immediate commit)."""
    return _run(["sacctmgr", "-i", *args], env=client_env(slurm_conf))


def _dbd_ready(conf: Path) -> bool:
    try:
        return sacctmgr(conf, "-n", "-P", "show", "cluster", "format=cluster").returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _ctld_ready(conf: Path, ctld_port: int) -> bool:
    """Registered with slurmdbd (control port recorded) and gres/gpu known as a TRES."""
    try:
        clusters = sacctmgr(conf, "-n", "-P", "show", "cluster", "format=cluster,controlport")
        tres = sacctmgr(conf, "-n", "-P", "show", "tres", "format=type,name")
    except subprocess.TimeoutExpired:
        return False
    registered = f"{CLUSTER}|{ctld_port}" in clusters.stdout.split()
    return registered and "gres|gpu" in tres.stdout.split()


def slurmdbd_service(run: RunDir, conf: Path, dbd_conf: Path, dbd_port: int) -> Service:
    return Service(
        name="slurmdbd",
        # slurmdbd has no -f: it reads slurmdbd.conf from the directory of $SLURM_CONF.
        argv=["slurmdbd", "-D"],
        env=client_env(conf),
        ready=lambda: _dbd_ready(conf),
        facts={"port": dbd_port, "conf": str(dbd_conf)},
    )


def slurmctld_service(run: RunDir, conf: Path, ctld_port: int) -> Service:
    return Service(
        name="slurmctld",
        argv=["slurmctld", "-D", "-i", "-f", str(conf)],
        env=client_env(conf),
        ready=lambda: _ctld_ready(conf, ctld_port),
        facts={"port": ctld_port, "slurm_conf": str(conf), "cluster": CLUSTER},
    )


def _node_ready(conf: Path, node: str) -> bool:
    """Registered with slurmctld with its GPUs: the node is usable (idle, or already running jobs)."""
    try:
        out = _run(["scontrol", "show", "node", node, "-o"], env=client_env(conf), timeout=5).stdout
    except subprocess.TimeoutExpired:
        return False
    state = next((f.split("=", 1)[1] for f in out.split() if f.startswith("State=")), "")
    return state.split("+")[0] in ("IDLE", "MIXED", "ALLOCATED") and "DRAIN" not in state and "*" not in state


def slurmd_service(conf: Path, node: str) -> Service:
    return Service(
        name=f"slurmd-{node}",
        argv=["slurmd", "-D", "-N", node, "-f", str(conf)],
        env=client_env(conf),
        ready=lambda: _node_ready(conf, node),
        facts={"node": node},
    )


def gpu_facts() -> dict[str, Any]:
    """The GPU families as the operator's `gpu.families` configuration names them."""
    return {family: {"gresType": family, "partition": f["partition"], "feature": family, "nodes": list(f["nodes"]),
                     "gpusPerNode": f["gpus"]} for family, f in GPU_NODES.items()}  # fmt: skip


def start_slurm(run: RunDir) -> dict[str, Any]:
    """Start munged, MariaDB, slurmdbd, slurmctld and the GPU nodes' slurmd in order; return what a client needs."""
    for tool in (
        "munged",
        "mungekey",
        "munge",
        "unmunge",
        "mariadbd",
        "mariadb-install-db",
        "slurmdbd",
        "slurmctld",
        "slurmd",
        "sacctmgr",
        "scontrol",
    ):
        if shutil.which(tool) is None:
            raise ServiceError(f"{tool} not found; run `sudo hack/install-debian-packages.sh`")
    p = _paths(run)
    p["root"].mkdir(parents=True, exist_ok=True)
    run.logs.mkdir(parents=True, exist_ok=True)
    secret_file = p["root"] / "db.password"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(16))
        secret_file.chmod(0o600)
    db_password = secret_file.read_text().strip()

    base_was_running = run.running("munged") and run.running("mariadb")
    munge = run.start(munge_service(run))
    mariadb = run.start(mariadb_service(run))
    _create_accounting_db(p, db_password)
    nodes = [node for f in GPU_NODES.values() for node in f["nodes"]]
    if (
        base_was_running
        and run.running("slurmctld")
        and run.running("slurmdbd")
        and all(run.running(f"slurmd-{node}") for node in nodes)
    ):
        return dict(run.load()["services"]["slurmctld"]["facts"]["client"])
    # Confs carry fresh ports (a restarted MariaDB has a new one): (re)start every Slurm daemon.
    for node in nodes:
        run.stop(f"slurmd-{node}")
    run.stop("slurmctld")
    run.stop("slurmdbd")
    ports = _write_confs(run, munge_socket=munge["socket"], db_port=int(mariadb["port"]), db_password=db_password)
    run.start(slurmdbd_service(run, p["slurm_conf"], p["slurmdbd_conf"], ports["dbd_port"]))
    facts = {
        "slurm_conf": str(p["slurm_conf"]),
        "cluster": CLUSTER,
        "env": client_env(p["slurm_conf"]),
        "munge_socket": munge["socket"],
        "slurmdbd_port": ports["dbd_port"],
        "slurmctld_port": ports["ctld_port"],
        "slurmctld_host": ports["host"],
        "mariadb_socket": mariadb["socket"],
        "gpu": gpu_facts(),
    }
    # slurmctld registers the cluster (and the gres/gpu TRES) with slurmdbd itself on first start.
    ctld = slurmctld_service(run, p["slurm_conf"], ports["ctld_port"])
    ctld.facts["client"] = facts
    run.start(ctld)
    for node in nodes:
        run.start(slurmd_service(p["slurm_conf"], node))
    return facts
