"""Fixtures for the FreeIPA wire-protocol contract: the test server over TLS, clients and recordings."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from python_freeipa import ClientMeta

from contract.ipa_support import RawIPA
from localenv.certs import loopback_server_cert
from localenv.freeipa_server import TLSServer, serve, start_freeipa
from localenv.runtime import RunDir, free_port


@pytest.fixture(scope="session")
def freeipa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The FreeIPA test server started like `make up` does: a Service in its own run directory."""
    run = RunDir(tmp_path_factory.mktemp("freeipa-run"))
    try:
        yield start_freeipa(run)
    finally:
        run.stop_all()


def _client(facts: dict[str, Any]) -> ClientMeta:
    client = ClientMeta(host=facts["host"], verify_ssl=facts["ca_cert"], dns_discovery=False)
    client.login(facts["admin_user"], facts["password"])
    return client


@pytest.fixture
def ipa(freeipa: dict[str, Any]) -> ClientMeta:
    """A logged-in python-freeipa 1.0.10 ClientMeta (what the operator's adapter uses)."""
    return _client(freeipa)


@pytest.fixture
def raw(freeipa: dict[str, Any]) -> RawIPA:
    client = RawIPA(freeipa)
    assert client.login(freeipa["admin_user"], freeipa["password"]).status_code == 200
    return client


@pytest.fixture
def fresh_name() -> str:
    """A fresh lowercase object name per test (FreeIPA lowercases user and group names)."""
    return f"ct-{secrets.token_hex(3)}"


@pytest.fixture
def short_lived_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An in-process server whose sessions last 0.5 s, for the session-expiry contract."""
    pki = loopback_server_cert(tmp_path / "pki")
    password = secrets.token_urlsafe(12)
    port = free_port()
    server: TLSServer = serve(port, Path(pki["cert"]), Path(pki["key"]), tmp_path / "state.json", password, 0.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"https://127.0.0.1:{port}",
            "host": f"127.0.0.1:{port}",
            "ca_cert": pki["ca_cert"],
            "admin_user": "admin",
            "password": password,
        }
    finally:
        server.shutdown()
        server.server_close()
