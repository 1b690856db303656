"""Reachability of a node's endpoint: a TCP handshake on the SSH port and a real DNS query over UDP.

The probes are I/O (bounded by a timeout each); the state they lead to is pure (`record`): NeverSeen until
both answer once, then Online while both answer and Offline as soon as one does not. Any well-formed DNS
answer counts, whatever its rcode (REFUSED or NXDOMAIN still prove that 53/UDP reaches a DNS server).
dnspython is imported by the DNS probe, not here: only enclaves with FederatedNodes need it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import socket
import time
from collections.abc import Mapping
from typing import Any

from enclave_operator import conditions, reasons
from enclave_operator.api.federated_node import Endpoint

BANNER_WAIT_S = 1.0
"""After the handshake, how long to wait for the SSH banner (recorded when it comes; not required)."""


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


async def _resolve(host: str, port: int, kind: socket.SocketKind, timeout: float) -> str:
    infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port, type=kind), timeout)
    return str(infos[0][4][0])


def _error(error: BaseException, *timeouts: type[BaseException]) -> str:
    """What went wrong, in a few words; `timeouts`: a client library's own timeout errors."""
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, *timeouts)):
        return "no answer (timed out)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


async def probe_ssh(host: str, port: int, timeout: float) -> ProbeResult:
    """A TCP handshake on the SSH port; the banner, if the server sends it promptly, goes into the detail."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as error:
        return ProbeResult(False, f"{port}/TCP: {_error(error)}", time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    try:
        banner = await asyncio.wait_for(reader.readline(), min(BANNER_WAIT_S, timeout))
    except (OSError, TimeoutError):
        banner = b""
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass
    text = banner.decode("ascii", "replace").strip()[:80]
    return ProbeResult(True, f"{port}/TCP: handshake" + (f", {text}" if text else ""), elapsed)


async def probe_dns(host: str, port: int, name: str, timeout: float) -> ProbeResult:
    """One DNS query (type SOA for `name`) over UDP; any answer proves the path."""
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype

    start = time.perf_counter()
    try:
        address = await _resolve(host, port, socket.SOCK_DGRAM, timeout)
        query = dns.message.make_query(name, dns.rdatatype.SOA)
        response = await dns.asyncquery.udp(query, address, timeout=timeout, port=port)
    except (OSError, TimeoutError, dns.exception.DNSException) as error:
        return ProbeResult(False, f"{port}/UDP: {_error(error, dns.exception.Timeout)}", time.perf_counter() - start)
    return ProbeResult(True, f"{port}/UDP: answered {dns.rcode.to_text(response.rcode())}", time.perf_counter() - start)


async def probe(endpoint: Endpoint, timeout: float) -> tuple[ProbeResult, ProbeResult]:
    """Both probes at once."""
    ssh, dns_ = await asyncio.gather(
        probe_ssh(endpoint.host, endpoint.ssh_port, timeout),
        probe_dns(endpoint.host, endpoint.dns_port, endpoint.dns_query, timeout),
    )
    return ssh, dns_


def _stamp(now: datetime.datetime) -> str:
    return now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(previous: Mapping[str, Any] | None, ssh: ProbeResult, dns_: ProbeResult,
           now: datetime.datetime) -> dict[str, Any]:  # fmt: skip
    """status.reachability after one probe round."""
    prev = dict(previous or {})
    stamp = _stamp(now)

    def one(result: ProbeResult, key: str) -> dict[str, Any]:
        last = (prev.get(key) or {}).get("lastSuccess")
        out: dict[str, Any] = {"ok": result.ok, "detail": result.detail[:512]}
        if result.ok or last:
            out["lastSuccess"] = stamp if result.ok else last
        return out

    both = ssh.ok and dns_.ok
    state = "Online" if both else ("Offline" if prev.get("lastSeen") else "NeverSeen")
    errors = "; ".join(r.detail for r in (ssh, dns_) if not r.ok)
    out: dict[str, Any] = {
        "state": state,
        "lastProbe": stamp,
        "lastError": errors[:512] if errors else prev.get("lastError", ""),
        "ssh": one(ssh, "ssh"),
        "dns": one(dns_, "dns"),
    }
    last_seen = stamp if both else prev.get("lastSeen")
    if last_seen:
        out["lastSeen"] = last_seen
    return out


def condition(reachability: Mapping[str, Any] | None, endpoint: Endpoint) -> conditions.Cond:
    """Reachable from status.reachability."""
    where = f"{endpoint.host} ({endpoint.ssh_port}/TCP, {endpoint.dns_port}/UDP)"
    if not reachability or not reachability.get("lastProbe"):
        return conditions.unknown(reasons.REACHABLE, reasons.REASON_NEVER_SEEN, f"{where} not probed yet")
    state = reachability.get("state")
    if state == "Online":
        return conditions.true(reasons.REACHABLE, reasons.REASON_ONLINE, f"{where} answered at "
                               f"{reachability.get('lastProbe')}")  # fmt: skip
    error = reachability.get("lastError") or "no answer"
    if state == "Offline":
        return conditions.false(reasons.REACHABLE, reasons.REASON_OFFLINE,
                                f"{where}: {error}; last seen {reachability.get('lastSeen')}")  # fmt: skip
    return conditions.false(reasons.REACHABLE, reasons.REASON_NEVER_SEEN, f"{where} has never answered: {error}")
