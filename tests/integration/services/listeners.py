"""Which TCP addresses a process listens on, read from /proc: proof that a service stays on loopback."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from localenv.runtime import RunDir


def listening_addresses(pid: int) -> set[str]:
    """IPv4/IPv6 addresses on which process `pid` has listening TCP sockets (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])  # 32-bit words in host (little-endian) order
            packed = b"".join(struct.pack(">I", word) for word in struct.unpack(f"<{len(raw) // 4}I", raw))
            addresses.add(socket.inet_ntop(family, packed))
    return addresses


def assert_loopback_only(run: RunDir, *, except_for: tuple[str, ...] = ()) -> None:
    """Every recorded service listens on 127.0.0.1 only (unix sockets are not listed)."""
    for name, entry in run.load()["services"].items():
        if name in except_for:
            continue
        addresses = listening_addresses(int(entry["pid"]))
        assert addresses <= {"127.0.0.1"}, f"{name} listens on {sorted(addresses)}"
