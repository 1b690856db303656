"""A stand-in for a federated node's host: a network namespace joined to this machine by a veth pair, with
a real OpenSSH sshd on 22/TCP and a real DNS server (dnsmasq) on 53/UDP inside it (Debian packages).

FederatedNode probes need an endpoint they can reach and that can be taken down; these hosts give them
one without sending a packet anywhere but into namespaces this module made. Three services per host, each
started and stopped by PID through the run directory like every other local server:

- `<name>-netns`: this module's `hold` command. It creates the namespace and the veth pair (a /30 picked
  from 10.231.0.0/16 that no address on this machine uses), then waits; on SIGTERM it deletes the
  namespace, which removes the veth pair with it. Stopped last.
- `<name>-sshd`: `ip netns exec <ns> sshd -D` on the node address, with its own host key; nobody can log
  in (no passwords, no keys, no PAM): only the handshake matters.
- `<name>-dns`: `ip netns exec <ns> dnsmasq` answering `<name>.node.test` with the node address and
  REFUSED for everything else.

Namespace and interface names carry a random token, so concurrent test sessions never collide. Needs
root (network namespaces) and iproute2, openssh-server, dnsmasq-base (hack/install-debian-packages.sh).

    python -m localenv.nodehost hold --netns N --host-if A --node-if B --host-ip X --node-ip Y
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from localenv.runtime import REPO_ROOT, RunDir, Service, ServiceError

POOL = ipaddress.ip_network("10.231.0.0/16")
SSHD = "/usr/sbin/sshd"
DNSMASQ = "/usr/sbin/dnsmasq"
IP = "/usr/sbin/ip"
NETNS_PREFIX = "enclfn-"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [IP, *(["netns", "exec", netns, IP] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise ServiceError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _used_addresses() -> set[ipaddress.IPv4Address]:
    out = _ip("-o", "-4", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).ip)
    return used


def pick_subnet() -> ipaddress.IPv4Network:
    """A /30 of the pool that no interface here uses (other sessions' hosts included)."""
    used = _used_addresses()
    subnets = list(POOL.subnets(new_prefix=30))
    for subnet in random.sample(subnets, 64):
        if not any(address in subnet for address in used):
            return subnet  # type: ignore[return-value]
    raise ServiceError(f"no free /30 in {POOL}")


# The holder: makes the namespace, keeps it while it runs, removes it when stopped.


def hold(netns: str, host_if: str, node_if: str, host_ip: str, node_ip: str) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        _ip("netns", "add", netns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _ip("link", "set", node_if, "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{node_ip}/30", "dev", node_if, netns=netns)
        _ip("link", "set", node_if, "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        print(f"nodehost: namespace {netns} up, node {node_ip} via {host_if} ({host_ip})", flush=True)
        stop.wait()
    except ServiceError as error:
        print(f"nodehost: {error}", flush=True)
        return 1
    finally:
        _ip("netns", "del", netns, check=False)  # removes the veth pair with it
        _ip("link", "del", host_if, check=False)
        print(f"nodehost: namespace {netns} removed", flush=True)
    return 0


def _netns_ready(netns: str, node_ip: str) -> bool:
    result = _ip("-o", "-4", "addr", "show", netns=netns, check=False)
    return result.returncode == 0 and f" {node_ip}/" in result.stdout


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def dns_answers(host: str, port: int = 53, name: str = "node.test", timeout: float = 1.0) -> bool:
    """Send one DNS query (type A) over UDP and wait for any reply with the same id (standard library only)."""
    ident = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, (host, port))
            data, _ = sock.recvfrom(512)
        except OSError:
            return False
    return len(data) >= 12 and struct.unpack(">H", data[:2])[0] == ident


# The services of one host.


def _sshd_config(root: Path, node_ip: str) -> Path:
    key = root / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    conf = root / "sshd_config"
    conf.write_text("\n".join([
        "Port 22", f"ListenAddress {node_ip}", f"HostKey {key}", f"PidFile {root / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication no",
        "AuthorizedKeysFile none", "UsePAM no", "PermitRootLogin no", "LogLevel INFO", "",
    ]))  # fmt: skip
    conf.chmod(0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    return conf


def _daemons(run: RunDir, facts: dict[str, Any]) -> list[Service]:
    """sshd and dnsmasq inside the host's namespace, on its node address."""
    name, netns, node_ip = facts["name"], facts["netns"], facts["ip"]
    root = run.path / "nodehosts" / name
    root.mkdir(parents=True, exist_ok=True)
    sshd = Service(
        name=f"{name}-sshd",
        argv=[IP, "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(_sshd_config(root, node_ip))],
        ready=lambda: tcp_open(node_ip, 22),
        facts=facts,
    )
    dns = Service(
        name=f"{name}-dns",
        argv=[IP, "netns", "exec", netns, DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
              "--no-hosts", "--bind-interfaces", f"--listen-address={node_ip}", "--port=53", "--pid-file",
              f"--address=/{facts['dns_name']}/{node_ip}", "--log-facility=-", "--log-queries"],
        ready=lambda: dns_answers(node_ip, 53, facts["dns_name"]),
        facts=facts,
    )  # fmt: skip
    return [sshd, dns]


def services(run: RunDir, name: str) -> tuple[list[Service], dict[str, Any]]:
    """The holder, sshd and DNS services of a new host `name`, and the host's facts."""
    token = secrets.token_hex(3)
    netns = f"{NETNS_PREFIX}{token}"
    subnet = pick_subnet()
    host_ip, node_ip = (str(a) for a in list(subnet.hosts())[:2])
    facts = {"name": name, "netns": netns, "host_ip": host_ip, "ip": node_ip, "ssh_port": 22, "dns_port": 53,
             "dns_name": f"{name}.node.test"}  # fmt: skip
    holder = Service(
        name=f"{name}-netns",
        argv=[sys.executable, "-m", "localenv.nodehost", "hold", f"--netns={netns}", f"--host-if=fn{token}h",
              f"--node-if=fn{token}n", f"--host-ip={host_ip}", f"--node-ip={node_ip}"],
        env={"PYTHONPATH": str(REPO_ROOT / "hack")},
        ready=lambda: _netns_ready(netns, node_ip),
        facts=facts,
    )  # fmt: skip
    return [holder, *_daemons(run, facts)], facts


def start_nodehost(run: RunDir, name: str) -> dict[str, Any]:
    """Start host `name` (namespace, sshd, DNS); a running one is reused (and its stopped daemons restarted)."""
    if run.running(f"{name}-netns"):
        facts = run.facts(f"{name}-netns")
        for part in ("sshd", "dns"):
            if not run.running(f"{name}-{part}"):
                start_part(run, name, part)
        return facts
    if os.geteuid() != 0:
        raise ServiceError("nodehost: network namespaces need root")
    for tool in (IP, SSHD, DNSMASQ):
        if not Path(tool).exists():
            raise ServiceError(f"nodehost: {tool} is missing; run hack/install-debian-packages.sh")
    parts, facts = services(run, name)
    for service in parts:
        run.start(service)
    return facts


def stop_part(run: RunDir, name: str, part: str) -> None:
    """Stop one daemon of host `name` (`sshd` or `dns`): the endpoint stops answering on that port."""
    run.stop(f"{name}-{part}")


def start_part(run: RunDir, name: str, part: str) -> None:
    """Start one daemon (`sshd` or `dns`) of a running host again."""
    facts = run.facts(f"{name}-netns")
    run.start(next(s for s in _daemons(run, facts) if s.name == f"{name}-{part}"))


def stop_nodehost(run: RunDir, name: str) -> None:
    """Stop DNS, sshd, then the holder (which removes the namespace)."""
    for part in ("dns", "sshd", "netns"):
        run.stop(f"{name}-{part}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hold", help="create the namespace and keep it until SIGTERM")
    for flag in ("--netns", "--host-if", "--node-if", "--host-ip", "--node-ip"):
        h.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    return hold(args.netns, args.host_if, args.node_if, args.host_ip, args.node_ip)


if __name__ == "__main__":
    sys.exit(main())
