"""Helpers for the identity adapter tests: servers that restart on the same port, admin-side inspection.

The adapters are driven through their own clients; these helpers look at the directory the way an
administrator would (python-freeipa as admin, ldap3 as the rootdn), so a test can check the real
state and make out-of-band changes (drift) without going through the code under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import ldap3
from python_freeipa import ClientMeta

from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from localenv.runtime import RunDir, Service

IPA_USERS = ("alice", "bob", "carol", "dave")
"""Users the FreeIPA fixture creates (the slapd seed has the same four)."""
WRITE_COMMANDS = ("group_add", "group_mod", "group_add_member", "group_remove_member", "group_del")


@dataclasses.dataclass
class Server:
    """A started test server whose `Service` is kept, so it can be stopped and started on the same port."""

    run: RunDir
    service: Service
    facts: dict[str, Any]

    def stop(self) -> None:
        self.run.stop(self.service.name)

    def start(self) -> None:
        self.run.start(self.service)


def start_server(run: RunDir, service: Service) -> Server:
    return Server(run, service, dict(run.start(service)))


@contextlib.contextmanager
def hung_listener() -> Iterator[int]:
    """A loopback port that accepts TCP connections (kernel backlog) but never answers: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


# --- FreeIPA ------------------------------------------------------------------------------------


def ipa_admin(facts: dict[str, Any]) -> ClientMeta:
    """A logged-in admin client, independent of the adapter's client."""
    client = ClientMeta(host=facts["host"], verify_ssl=facts["ca_cert"], dns_discovery=False)
    client.login(facts["admin_user"], facts["password"])
    return client


def seed_ipa_users(admin: ClientMeta, names: tuple[str, ...] = IPA_USERS) -> None:
    for name in names:
        try:
            admin.user_add(name, o_givenname=name.capitalize(), o_sn="Test", o_cn=f"{name.capitalize()} Test")
        except Exception as error:  # DuplicateEntry on a reused run directory
            if "already exists" not in str(error):
                raise


def ipa_group(admin: ClientMeta, name: str) -> dict[str, Any] | None:
    try:
        return dict(admin.group_show(name)["result"])
    except Exception as error:
        if "not found" in str(error):
            return None
        raise


def expire_ipa_sessions(facts: dict[str, Any]) -> int:
    """Drop every session on the test server: the next JSON-RPC call answers 401."""
    context = ssl.create_default_context(cafile=facts["ca_cert"])
    request = urllib.request.Request(facts["expire_sessions_url"], data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return int(json.loads(response.read())["expired"])


# --- LDAP ---------------------------------------------------------------------------------------


def ldap_admin(facts: dict[str, Any]) -> ldap3.Connection:
    """A bound rootdn connection for inspecting and tampering with the directory."""
    server = ldap3.Server(facts["uri"], connect_timeout=5, get_info=ldap3.NONE)
    return ldap3.Connection(server, facts["bind_dn"], facts["password"], auto_bind=True, receive_timeout=5)


def ldap_values(conn: ldap3.Connection, dn: str, attr: str) -> list[str] | None:
    """The attribute's values of an entry (sorted, lowercase), or None when the entry does not exist."""
    if not conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attr]):
        return None
    value = conn.response[0]["attributes"].get(attr) or []
    values = value if isinstance(value, list) else [value]
    return sorted(str(v).lower() for v in values)


def user_dn(facts: dict[str, Any], name: str) -> str:
    return f"uid={name},{facts['people_dn']}"


# --- engine -------------------------------------------------------------------------------------


async def reconcile(adapter: Any) -> tuple[managed.PartOutcome, ListRecorder]:
    recorder = ListRecorder()
    return await managed.reconcile_part(adapter, recorder), recorder
