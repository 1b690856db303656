"""The LDAP group adapter through ldap3 against a real slapd (groupOfNames, groupOfUniqueNames, posixGroup)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import ldap3
import pytest

from enclave_operator import reasons
from enclave_operator.backends import ownership
from enclave_operator.backends.adapter import DeleteOutcome
from enclave_operator.backends.identity import MEMBER, MISSING, DesiredIdentityGroup
from enclave_operator.backends.identity_ldap import LdapClient, LdapGroupAdapter, LdapSettings
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from localenv.runtime import RunDir
from localenv.slapd import slapd_service
from support.identity import Server, hung_listener, ldap_admin, ldap_values, reconcile, start_server, user_dn

PASSWORD_ENV = "ENCLAVE_TEST_LDAP_PASSWORD"


@dataclasses.dataclass(frozen=True)
class Schema:
    attribute: str
    object_class: str
    by_dn: bool
    gid: int | None


SCHEMAS = {
    "member": Schema("member", "groupOfNames", True, None),
    "uniqueMember": Schema("uniqueMember", "groupOfUniqueNames", True, None),
    "memberUid": Schema("memberUid", "posixGroup", False, 20_001),
}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run = RunDir(tmp_path_factory.mktemp("slapd-run"))
    try:
        yield start_server(run, slapd_service(run))
    finally:
        run.stop_all()


@pytest.fixture
def admin(slapd: Server) -> Iterator[ldap3.Connection]:
    conn = ldap_admin(slapd.facts)
    try:
        yield conn
    finally:
        conn.unbind()


@pytest.fixture(params=sorted(SCHEMAS))
def schema(request: pytest.FixtureRequest) -> Schema:
    return SCHEMAS[request.param]


def _client(slapd: Server, schema: Schema) -> LdapClient:
    settings = LdapSettings.model_validate(
        {
            "uri": slapd.facts["uri"],
            "bindDn": slapd.facts["bind_dn"],
            "passwordEnv": PASSWORD_ENV,
            "groupsBaseDn": slapd.facts["groups_dn"],
            "usersBaseDn": slapd.facts["people_dn"],
            "memberAttribute": schema.attribute,
            "groupObjectClass": schema.object_class,
            "timeoutSeconds": 3,
        }
    )
    return LdapClient(settings)


@pytest.fixture
async def client(slapd: Server, schema: Schema, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LdapClient]:
    monkeypatch.setenv(PASSWORD_ENV, slapd.facts["password"])
    client = _client(slapd, schema)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def name() -> str:
    return f"proj-{secrets.token_hex(3)}"


def _adapter(client: LdapClient, schema: Schema, name: str, *members: str, description: str = "Project") -> Any:
    desired = DesiredIdentityGroup(name, description, list(members), schema.gid, owner=ownership.Owner(name))
    return LdapGroupAdapter(client, desired)


def _marked(name: str, text: str) -> str:
    return f"{text} [enclave.io/project={name}]".lower()


def _dn(slapd: Server, name: str) -> str:
    return f"cn={name},{slapd.facts['groups_dn']}"


def _members(admin: ldap3.Connection, slapd: Server, schema: Schema, name: str) -> list[str] | None:
    """Usernames in the group, the placeholder shown as '<placeholder>'."""
    values = ldap_values(admin, _dn(slapd, name), schema.attribute)
    if values is None or not schema.by_dn:
        return values
    own = _dn(slapd, name).lower()
    return sorted("<placeholder>" if v == own else v.split(",", 1)[0].removeprefix("uid=") for v in values)


async def test_create_then_resync_writes_nothing(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    outcome, recorder = await reconcile(_adapter(client, schema, name, "alice", "bob"))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert recorder.events[0][1] == "CreatedIdentityGroup"
    assert dict(outcome.observation.members) == {"alice": MEMBER, "bob": MEMBER}
    assert _members(admin, slapd, schema, name) == ["alice", "bob"]
    assert ldap_values(admin, _dn(slapd, name), "description") == [_marked(name, "project")]
    writes = client.writes
    again, recorder = await reconcile(_adapter(client, schema, name, "alice", "bob"))
    assert again.condition.status == "True" and not again.wrote and not recorder.events
    assert client.writes == writes, "an idempotent resync must not write to LDAP"


async def test_members_added_removed_and_emptied(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    await reconcile(_adapter(client, schema, name, "alice", "bob"))
    extra = user_dn(slapd.facts, "dave") if schema.by_dn else "dave"
    assert admin.modify(_dn(slapd, name), {schema.attribute: [(ldap3.MODIFY_ADD, [extra])]})  # out of band
    outcome, recorder = await reconcile(_adapter(client, schema, name, "bob", "carol"))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert "dave" in recorder.events[0][2] and "alice" in recorder.events[0][2]
    assert _members(admin, slapd, schema, name) == ["bob", "carol"]
    outcome, _ = await reconcile(_adapter(client, schema, name))
    assert outcome.condition.status == "True", outcome.condition
    assert _members(admin, slapd, schema, name) == (["<placeholder>"] if schema.by_dn else [])
    outcome, _ = await reconcile(_adapter(client, schema, name, "carol"))
    assert outcome.condition.status == "True" and _members(admin, slapd, schema, name) == ["carol"]


async def test_unknown_users_degrade_but_others_are_exact(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    adapter = _adapter(client, schema, name, "alice", "ghost-one", "ghost-two")
    outcome, _ = await reconcile(adapter)
    cond = outcome.condition
    assert (cond.status, cond.reason) == ("False", reasons.REASON_MEMBERS_MISSING), cond
    assert "ghost-one" in cond.message and "ghost-two" in cond.message and not outcome.retry
    assert outcome.observation.members == {"alice": MEMBER, "ghost-one": MISSING, "ghost-two": MISSING}
    assert _members(admin, slapd, schema, name) == ["alice"]
    writes = client.writes
    again, _ = await reconcile(adapter)
    assert again.condition.reason == reasons.REASON_MEMBERS_MISSING and not again.wrote
    assert client.writes == writes
    only_ghosts, _ = await reconcile(_adapter(client, schema, name, "ghost-one"))
    assert only_ghosts.condition.reason == reasons.REASON_MEMBERS_MISSING
    assert _members(admin, slapd, schema, name) == (["<placeholder>"] if schema.by_dn else [])


async def test_description_drift_repaired(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    adapter = _adapter(client, schema, name, "alice", description="Cardiology cohort")
    await reconcile(adapter)
    assert admin.modify(_dn(slapd, name), {"description": [(ldap3.MODIFY_REPLACE, [_marked(name, "tampered")])]})
    observed = await adapter.observe()
    assert not observed.up_to_date and "description" in observed.diff
    outcome, recorder = await reconcile(adapter)
    assert outcome.condition.status == "True" and recorder.events[0][1] == "UpdatedIdentityGroup"
    assert ldap_values(admin, _dn(slapd, name), "description") == [_marked(name, "cardiology cohort")]


async def test_finding_8_1_a_group_made_by_someone_else_is_never_written_or_deleted(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    await reconcile(_adapter(client, schema, name, "dave"))
    assert admin.modify(_dn(slapd, name), {"description": [(ldap3.MODIFY_REPLACE, ["the lab's own group"])]})
    before = _members(admin, slapd, schema, name)
    adapter = _adapter(client, schema, name, "alice")
    outcome, _ = await reconcile(adapter)
    assert (outcome.condition.status, outcome.condition.reason) == ("False", reasons.REASON_NOT_OWNED)
    assert _members(admin, slapd, schema, name) == before, "members untouched"
    with pytest.raises(ownership.NotOwned):
        await adapter.create()  # a create racing with someone else's group converges nothing
    assert _members(admin, slapd, schema, name) == before
    finalized = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert finalized.done and "never ours" in finalized.message
    assert ldap_values(admin, _dn(slapd, name), "description") == ["the lab's own group"]


async def test_existing_group_is_adopted_by_create(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    adapter = _adapter(client, schema, name, "alice")
    await reconcile(adapter)
    await adapter.create()  # entryAlreadyExists (68) is fine: it converges instead
    assert _members(admin, slapd, schema, name) == ["alice"]


async def test_server_down_is_unavailable_then_recovers(
    slapd: Server, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, slapd.facts["password"])
    schema = SCHEMAS["member"]
    client = _client(slapd, schema)
    await reconcile(_adapter(client, schema, name, "alice"))
    slapd.stop()
    try:
        outcome, recorder = await reconcile(_adapter(client, schema, name, "alice", "bob"))
        cond = outcome.condition
        assert (cond.status, cond.reason) == ("False", reasons.REASON_BACKEND_UNAVAILABLE), cond
        assert outcome.retry and recorder.events[0][1] == "CannotObserveIdentityGroup"
    finally:
        slapd.start()  # same port, same database
    outcome, _ = await reconcile(_adapter(client, schema, name, "alice", "bob"))
    assert outcome.condition.status == "True" and outcome.wrote, outcome.condition
    assert _members(ldap_admin(slapd.facts), slapd, schema, name) == ["alice", "bob"]


async def test_delete_removes_group_under_both_policies_and_is_idempotent(
    client: LdapClient, schema: Schema, admin: ldap3.Connection, slapd: Server, name: str
) -> None:
    adapter = _adapter(client, schema, name, "alice")
    await reconcile(adapter)
    done = await managed.finalize_part(adapter, "Retain", ListRecorder())
    assert done.done and done.message == "deleted" and _members(admin, slapd, schema, name) is None
    assert await adapter.delete("Delete") is DeleteOutcome.DELETED, "deleting a missing group is not an error"
    again = await managed.finalize_part(adapter, "Delete", ListRecorder())
    assert again.done and "gone" in again.message


async def test_bad_credentials_are_rejected_and_name_the_variable(
    slapd: Server, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    outcome, _ = await reconcile(_adapter(_client(slapd, SCHEMAS["member"]), SCHEMAS["member"], name, "alice"))
    assert outcome.condition.reason == reasons.REASON_BACKEND_ERROR and not outcome.retry
    assert PASSWORD_ENV in outcome.condition.message
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-xyz")
    outcome, _ = await reconcile(_adapter(_client(slapd, SCHEMAS["member"]), SCHEMAS["member"], name, "alice"))
    assert outcome.condition.reason == reasons.REASON_BACKEND_ERROR and not outcome.retry
    assert "not-the-password-xyz" not in outcome.condition.message and "refused" in outcome.condition.message


async def test_hung_server_is_unavailable_within_the_bound(
    slapd: Server, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, slapd.facts["password"])
    with hung_listener() as port:
        settings = _client(slapd, SCHEMAS["member"]).settings
        hung = settings.model_copy(update={"uri": f"ldap://127.0.0.1:{port}", "timeout_seconds": 1.0})
        start = time.monotonic()
        outcome, _ = await reconcile(_adapter(LdapClient(hung), SCHEMAS["member"], name, "alice"))
        elapsed = time.monotonic() - start
    assert outcome.condition.reason == reasons.REASON_BACKEND_UNAVAILABLE and outcome.retry, outcome.condition
    assert elapsed < 5, f"a hung LDAP server held the reconcile for {elapsed:.1f}s"
