"""The FreeIPA group adapter through the real python-freeipa client against the FreeIPA test server."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import certifi
import pytest
from python_freeipa import ClientMeta

from enclave_operator import reasons
from enclave_operator.backends import ownership
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.backends.identity import MEMBER, MISSING, DesiredIdentityGroup
from enclave_operator.backends.identity_freeipa import FreeIpaClient, FreeIpaGroupAdapter, FreeIpaSettings
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from localenv.freeipa_server import freeipa_service
from localenv.runtime import RunDir
from support.identity import (
    WRITE_COMMANDS,
    Server,
    expire_ipa_sessions,
    hung_listener,
    ipa_admin,
    ipa_group,
    reconcile,
    seed_ipa_users,
    start_server,
)

PASSWORD_ENV = "ENCLAVE_TEST_IPA_PASSWORD"


@pytest.fixture(scope="module")
def ipa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run = RunDir(tmp_path_factory.mktemp("ipa-run"))
    try:
        server = start_server(run, freeipa_service(run))
        seed_ipa_users(ipa_admin(server.facts))
        yield server
    finally:
        run.stop_all()


@pytest.fixture
def admin(ipa_server: Server) -> ClientMeta:
    return ipa_admin(ipa_server.facts)


@pytest.fixture
def settings(ipa_server: Server, monkeypatch: pytest.MonkeyPatch) -> FreeIpaSettings:
    monkeypatch.setenv(PASSWORD_ENV, ipa_server.facts["password"])
    return FreeIpaSettings.model_validate(
        {
            "url": ipa_server.facts["url"],
            "caFile": ipa_server.facts["ca_cert"],
            "username": ipa_server.facts["admin_user"],
            "passwordEnv": PASSWORD_ENV,
            "timeoutSeconds": 3,
        }
    )


@pytest.fixture
async def client(settings: FreeIpaSettings) -> AsyncIterator[FreeIpaClient]:
    client = FreeIpaClient(settings)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def name() -> str:
    return f"proj-{secrets.token_hex(3)}"


def _adapter(client: FreeIpaClient, name: str, *members: str, description: str = "Project", gid: int | None = None):
    desired = DesiredIdentityGroup(name, description, list(members), gid, owner=ownership.Owner(name))
    return FreeIpaGroupAdapter(client, desired)


def _marked(name: str, text: str) -> str:
    return f"{text} [enclave.io/project={name}]"


def _writes(client: FreeIpaClient) -> int:
    return sum(client.calls[command] for command in WRITE_COMMANDS)


async def test_create_then_resync_writes_nothing(client: FreeIpaClient, admin: ClientMeta, name: str) -> None:
    outcome, recorder = await reconcile(_adapter(client, name, "alice", "bob", gid=1_700_001))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert recorder.events[0][1] == "CreatedIdentityGroup"
    assert dict(outcome.observation.members) == {"alice": MEMBER, "bob": MEMBER}
    group = ipa_group(admin, name)
    assert sorted(group["member_user"]) == ["alice", "bob"]
    assert group["description"] == [_marked(name, "Project")] and group["gidnumber"] == ["1700001"]
    writes = _writes(client)
    again, recorder = await reconcile(_adapter(client, name, "alice", "bob", gid=1_700_001))
    assert again.condition.status == "True" and not again.wrote and not recorder.events
    assert _writes(client) == writes, "an idempotent resync must not write to FreeIPA"
    assert client.calls["login"] == 1, "the session is reused"


async def test_members_added_and_removed_exactly(client: FreeIpaClient, admin: ClientMeta, name: str) -> None:
    await reconcile(_adapter(client, name, "alice", "bob"))
    admin.group_add_member(name, o_user=["dave"])  # out of band: not desired, must go
    outcome, recorder = await reconcile(_adapter(client, name, "bob", "carol"))
    assert outcome.condition.status == "True" and outcome.wrote
    assert recorder.events[0][1] == "UpdatedIdentityGroup"
    assert "alice" in recorder.events[0][2] and "dave" in recorder.events[0][2] and "carol" in recorder.events[0][2]
    assert sorted(ipa_group(admin, name)["member_user"]) == ["bob", "carol"]
    outcome, _ = await reconcile(_adapter(client, name))
    assert outcome.condition.status == "True" and "member_user" not in ipa_group(admin, name)


async def test_unknown_users_degrade_but_others_are_exact(client: FreeIpaClient, admin: ClientMeta, name: str) -> None:
    await reconcile(_adapter(client, name, "alice"))
    admin.group_add_member(name, o_user=["dave"])
    adapter = _adapter(client, name, "alice", "bob", "ghost-one", "ghost-two")
    outcome, _ = await reconcile(adapter)
    cond = outcome.condition
    assert (cond.status, cond.reason) == ("False", reasons.REASON_MEMBERS_MISSING), cond
    assert "ghost-one" in cond.message and "ghost-two" in cond.message and "alice" not in cond.message
    assert not outcome.retry, "missing users wait for the resync, no retry storm"
    assert sorted(ipa_group(admin, name)["member_user"]) == ["alice", "bob"]
    assert outcome.observation.members == {"alice": MEMBER, "bob": MEMBER, "ghost-one": MISSING, "ghost-two": MISSING}
    writes = _writes(client)
    again, _ = await reconcile(adapter)
    assert again.condition.reason == reasons.REASON_MEMBERS_MISSING and not again.wrote
    assert _writes(client) == writes
    admin.user_add("ghost-one", o_givenname="Ghost", o_sn="One", o_cn="Ghost One")  # the directory catches up
    later, _ = await reconcile(adapter)
    assert later.condition.reason == reasons.REASON_MEMBERS_MISSING and "ghost-one" not in later.condition.message
    assert "ghost-one" in ipa_group(admin, name)["member_user"]


async def test_description_gid_and_nested_group_drift_repaired(
    client: FreeIpaClient, admin: ClientMeta, name: str
) -> None:
    adapter = _adapter(client, name, "alice", description="Cardiology cohort", gid=1_700_050)
    await reconcile(adapter)
    admin.group_mod(name, o_description=_marked(name, "tampered"), o_gidnumber=1_700_099)
    admin.group_add_member(name, o_group=["admins"])
    observed = await adapter.observe()
    assert not observed.up_to_date and "description" in observed.diff and "gidNumber" in observed.diff
    assert "admins" in observed.diff
    outcome, recorder = await reconcile(adapter)
    assert outcome.condition.status == "True" and recorder.events[0][1] == "UpdatedIdentityGroup"
    group = ipa_group(admin, name)
    assert group["description"] == [_marked(name, "Cardiology cohort")] and group["gidnumber"] == ["1700050"]
    assert "member_group" not in group


async def test_expired_session_logs_in_again(
    client: FreeIpaClient, admin: ClientMeta, ipa_server: Server, name: str
) -> None:
    await reconcile(_adapter(client, name, "alice"))
    assert expire_ipa_sessions(ipa_server.facts) >= 1
    outcome, _ = await reconcile(_adapter(client, name, "alice", "bob"))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert client.calls["login"] == 2
    assert sorted(ipa_group(ipa_admin(ipa_server.facts), name)["member_user"]) == ["alice", "bob"]


async def test_server_down_is_unavailable_then_recovers(client: FreeIpaClient, ipa_server: Server, name: str) -> None:
    await reconcile(_adapter(client, name, "alice"))
    ipa_server.stop()
    try:
        outcome, recorder = await reconcile(_adapter(client, name, "alice", "bob"))
        cond = outcome.condition
        assert (cond.status, cond.reason) == ("False", reasons.REASON_BACKEND_UNAVAILABLE), cond
        assert outcome.retry and recorder.events[0][1] == "CannotObserveIdentityGroup"
        assert ipa_server.facts["password"] not in cond.message
    finally:
        ipa_server.start()  # same port, same state file; every session is gone
    outcome, _ = await reconcile(_adapter(client, name, "alice", "bob"))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert sorted(ipa_group(ipa_admin(ipa_server.facts), name)["member_user"]) == ["alice", "bob"]


async def test_delete_removes_group_under_both_policies_and_is_idempotent(
    client: FreeIpaClient, admin: ClientMeta, name: str
) -> None:
    adapter = _adapter(client, name, "alice")
    await reconcile(adapter)
    done = await managed.finalize_part(adapter, "Retain", ListRecorder())
    assert done.done and done.message == "deleted" and ipa_group(admin, name) is None
    assert await adapter.delete("Delete") is DeleteOutcome.DELETED, "deleting a missing group is not an error"
    again = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert again.done and "gone" in again.message


async def test_missing_password_env_names_the_variable(
    settings: FreeIpaSettings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    outcome, _ = await reconcile(_adapter(FreeIpaClient(settings), name, "alice"))
    assert outcome.condition.reason == reasons.REASON_BACKEND_ERROR and not outcome.retry
    assert PASSWORD_ENV in outcome.condition.message


async def test_wrong_password_is_rejected_without_echoing_it(
    settings: FreeIpaSettings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-xyz")
    outcome, _ = await reconcile(_adapter(FreeIpaClient(settings), name, "alice"))
    assert outcome.condition.reason == reasons.REASON_BACKEND_ERROR and not outcome.retry
    assert "not-the-password-xyz" not in outcome.condition.message


async def test_system_groups_are_never_managed(client: FreeIpaClient, admin: ClientMeta) -> None:
    outcome, _ = await reconcile(_adapter(client, "admins", "alice"))
    assert outcome.condition.status == "False" and "system group" in outcome.condition.message
    assert outcome.condition.reason == reasons.REASON_NOT_OWNED
    assert sorted(ipa_group(admin, "admins")["member_user"]) == ["admin"]
    assert (await managed.finalize_part(_adapter(client, "admins"), "Delete", ListRecorder())).done
    assert ipa_group(admin, "admins") is not None, "deleting the project leaves a system group alone"


async def test_finding_8_1_a_group_made_by_someone_else_is_never_written_or_deleted(
    client: FreeIpaClient, admin: ClientMeta, name: str
) -> None:
    admin.group_add(name, o_description="the lab's own group")
    admin.group_add_member(name, o_user=["dave"])
    adapter = _adapter(client, name, "alice")
    assert (await adapter.claim()).claim is ownership.Claim.FOREIGN
    outcome, recorder = await reconcile(adapter)
    assert (outcome.condition.status, outcome.condition.reason) == ("False", reasons.REASON_NOT_OWNED)
    assert "belongs to no enclave project" in outcome.condition.message and not outcome.retry
    assert sorted(ipa_group(admin, name)["member_user"]) == ["dave"], "members untouched"
    finalized = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert finalized.done and "never ours" in finalized.message, "deleting the project must not hang on it"
    assert ipa_group(admin, name)["description"] == ["the lab's own group"], "and must not delete it"


async def test_a_refused_certificate_is_an_error_a_cut_handshake_is_unavailable(
    settings: FreeIpaSettings, ipa_server: Server, name: str
) -> None:
    """A server going down can cut a TLS handshake or a pooled connection short: that is an outage to retry,
    not the configuration error of a certificate the CA file does not vouch for (a clean-clone CI run saw the
    first reported as 'TLS verification failed')."""
    untrusted = settings.model_copy(update={"ca_file": certifi.where()})  # public CAs only
    outcome, _ = await reconcile(_adapter(FreeIpaClient(untrusted), name, "alice"))
    assert outcome.condition.reason == "BackendError", outcome.condition
    assert "TLS verification of" in outcome.condition.message
    with _closing_listener() as port:
        cut = settings.model_copy(update={"url": f"https://127.0.0.1:{port}"})
        outcome, _ = await reconcile(_adapter(FreeIpaClient(cut), name, "alice"))
    assert outcome.condition.reason == reasons.REASON_BACKEND_UNAVAILABLE and outcome.retry, outcome.condition


@contextlib.contextmanager
def _closing_listener() -> Iterator[int]:
    """A loopback port whose server accepts each connection and closes it at once, mid-handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


async def test_hung_server_is_unavailable_within_the_bound(settings: FreeIpaSettings, name: str) -> None:
    with hung_listener() as port:
        hung = settings.model_copy(update={"url": f"https://127.0.0.1:{port}", "timeout_seconds": 1.0})
        start = time.monotonic()
        outcome, _ = await reconcile(_adapter(FreeIpaClient(hung), name, "alice"))
        elapsed = time.monotonic() - start
    assert outcome.condition.reason == reasons.REASON_BACKEND_UNAVAILABLE and outcome.retry, outcome.condition
    assert elapsed < 5, f"a hung FreeIPA held the reconcile for {elapsed:.1f}s"
