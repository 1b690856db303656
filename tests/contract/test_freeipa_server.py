"""Contract: the FreeIPA test server answers like a real FreeIPA 4.10 server, through python-freeipa 1.0.10.

Each test replays the request of a hand-transcribed recording (tests/contract/freeipa/recordings, each
naming its source) against hack/localenv/freeipa_server.py and checks what the operator's adapter
relies on: every recorded key is present with the recorded value type, error codes and names, member
failure reasons, and the HTTP status of session failures. Values (ids, numbers, uuids) are not compared.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests
from python_freeipa import ClientMeta, exceptions

from contract.ipa_support import RawIPA, recording

ENVELOPE_KEYS = {"result", "error", "id", "principal", "version"}
ERROR_KEYS = {"code", "message", "data", "name"}


def assert_conforms(recorded: Any, actual: Any, path: str = "$") -> None:
    """Every key of the recording exists in `actual` with the same JSON type, recursively."""
    if recorded is None:
        assert actual is None, f"{path}: recorded null, got {actual!r}"
    elif isinstance(recorded, dict):
        assert isinstance(actual, dict), f"{path}: recorded an object, got {type(actual).__name__}"
        missing = sorted(set(recorded) - set(actual))
        assert not missing, f"{path}: keys {missing} recorded but missing; got {sorted(actual)}"
        for key, value in recorded.items():
            assert_conforms(value, actual[key], f"{path}.{key}")
    elif isinstance(recorded, list):
        assert isinstance(actual, list), f"{path}: recorded a list, got {type(actual).__name__}"
        if recorded and actual:
            for index, item in enumerate(actual):
                assert_conforms(recorded[0], item, f"{path}[{index}]")
    else:
        assert type(actual) is type(recorded), (
            f"{path}: recorded {type(recorded).__name__} ({recorded!r}), got {type(actual).__name__} ({actual!r})"
        )


def add_user(ipa: ClientMeta, uid: str) -> dict[str, Any]:
    return dict(
        ipa.user_add(
            uid,
            o_givenname="Contract",
            o_sn="Test",
            o_cn="Contract Test",
            o_loginshell="/bin/bash",
            o_mail=f"{uid}@example.test",
            o_userpassword="pw-" + uid,
        )
    )


# --- session --------------------------------------------------------------------------------------


def test_login_password_sets_ipa_session_cookie(freeipa: dict[str, Any]) -> None:
    recorded = recording("login_password")["response"]
    response = RawIPA(freeipa).login(freeipa["admin_user"], freeipa["password"])
    assert response.status_code == recorded["status"]
    assert response.headers["Content-Type"] == recorded["content_type"]
    assert response.text == recorded["body"]
    assert re.fullmatch(r"ipa_session=MagBearerToken=[^;]+;path=/ipa;httponly;secure;", response.headers["Set-Cookie"])


def test_login_with_wrong_password_raises_unauthorized(freeipa: dict[str, Any]) -> None:
    client = ClientMeta(host=freeipa["host"], verify_ssl=freeipa["ca_cert"], dns_discovery=False)
    with pytest.raises(exceptions.Unauthorized):
        client.login(freeipa["admin_user"], "not-the-password")


def test_ping_envelope(raw: RawIPA, freeipa: dict[str, Any]) -> None:
    recorded = recording("ping")["response"]
    response = raw.call("ping")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert_conforms(recorded, body)
    assert re.fullmatch(r"IPA server version [\d.]+\. API version [\d.]+", body["result"]["summary"])
    assert body["principal"] == f"admin@{freeipa['realm']}"


def test_session_logout_clears_cookie_and_session(raw: RawIPA) -> None:
    recorded = recording("session_logout")
    response = raw.call("session_logout")
    assert_conforms(recorded["response"], response.json())
    assert response.headers["Set-Cookie"] == recorded["set_cookie"]
    assert raw.call("ping").status_code == 401


def test_expired_sessions_answer_401(freeipa: dict[str, Any]) -> None:
    client = ClientMeta(host=freeipa["host"], verify_ssl=freeipa["ca_cert"], dns_discovery=False)
    client.login(freeipa["admin_user"], freeipa["password"])
    client.ping()
    expired = requests.post(freeipa["expire_sessions_url"], verify=freeipa["ca_cert"], timeout=5)
    assert expired.json()["expired"] >= 1
    with pytest.raises(exceptions.Unauthorized):
        client.ping()
    client.login(freeipa["admin_user"], freeipa["password"])  # a fresh login works again
    assert "summary" in client.ping()


def test_session_lifetime_expires(short_lived_server: dict[str, Any]) -> None:
    assert recording("unauthorized")["response"]["status"] == 401
    raw = RawIPA(short_lived_server)
    raw.login("admin", short_lived_server["password"])
    assert raw.call("ping").status_code == 200
    time.sleep(0.7)
    response = raw.call("ping")
    assert response.status_code == 401


def test_missing_cookie_is_401(freeipa: dict[str, Any]) -> None:
    response = RawIPA(freeipa).call("ping")
    assert response.status_code == recording("unauthorized")["response"]["status"]
    client = ClientMeta(host=freeipa["host"], verify_ssl=freeipa["ca_cert"], dns_discovery=False)
    client._current_host = freeipa["host"]  # never logged in: what a lost session looks like
    with pytest.raises(exceptions.Unauthorized):
        client.ping()


def test_request_without_referer_is_refused(raw: RawIPA) -> None:
    body = raw.call("ping", referer=False).json()
    assert body["result"] is None
    assert body["error"]["name"] == "RefererError" and body["error"]["code"] == 911


def test_unknown_command_and_option(raw: RawIPA) -> None:
    error = raw.call("no_such_command").json()["error"]
    assert (error["code"], error["name"]) == (905, "CommandError")
    error = raw.call("group_show", ["admins"], no_such_option=True).json()["error"]
    assert (error["code"], error["name"]) == (3005, "OptionError")


# --- users ----------------------------------------------------------------------------------------


def test_user_add_show_find(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    added = add_user(ipa, name)
    assert_conforms(recording("user_add")["response"]["result"], added)
    assert added["value"] == name and added["summary"] == f'Added user "{name}"'

    shown = ipa.user_show(name, o_all=True)
    assert_conforms(recording("user_show")["response"]["result"], shown)
    assert shown["summary"] is None and shown["result"]["uid"] == [name]

    found = ipa.user_find(o_uid=name, o_all=True, o_no_members=True)
    assert_conforms(recording("user_find")["response"]["result"], found)
    assert found["count"] == 1 and found["summary"] == "1 user matched"


def test_user_add_duplicate(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    add_user(ipa, name)
    with pytest.raises(exceptions.DuplicateEntry) as raised:
        add_user(ipa, name)
    assert raised.value.code == 4002


# --- groups ---------------------------------------------------------------------------------------


def test_group_add_find_del(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    added = ipa.group_add(name, o_description=f"The {name} group")
    assert_conforms(recording("group_add")["response"]["result"], added)
    assert added["summary"] == f'Added group "{name}"' and added["value"] == name
    assert "member_user" not in added["result"], "FreeIPA omits empty membership attributes"

    add_user(ipa, name + "-u")
    ipa.group_add_member(name, o_user=name + "-u")
    found = ipa.group_find(o_cn=name, o_no_members=False)
    assert_conforms(recording("group_find")["response"]["result"], found)
    assert found["summary"] == "1 group matched"

    deleted = ipa.group_del(name)
    assert_conforms(recording("group_del")["response"]["result"], deleted)
    assert deleted["value"] == [name] and deleted["summary"] == f'Deleted group "{name}"'

    none = ipa.group_find(o_cn=name)
    assert_conforms(recording("group_find_none")["response"]["result"], none)
    assert (none["count"], none["result"], none["summary"]) == (0, [], "0 groups matched")


def test_group_show_and_mod(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    ipa.group_add(name, o_description="before")
    modified = ipa.group_mod(name, o_description="after")
    assert modified["result"]["description"] == ["after"]
    assert modified["summary"] == f'Modified group "{name}"'
    shown = ipa.group_show(name)
    assert shown["result"]["cn"] == [name] and shown["summary"] is None
    assert isinstance(shown["result"]["gidnumber"][0], str)


# --- errors: HTTP 200 with error.{code,message,data,name} -----------------------------------------


def _assert_error(body: dict[str, Any], fixture: str, key: str) -> dict[str, Any]:
    recorded = recording(fixture)
    assert set(body) == ENVELOPE_KEYS and body["result"] is None
    assert set(body["error"]) == ERROR_KEYS
    assert_conforms(recorded["response"]["error"] | {"data": {}}, body["error"])
    assert body["error"]["code"] == recorded["response"]["error"]["code"]
    assert body["error"]["name"] == recorded["response"]["error"]["name"]
    pattern = recorded.get("message_pattern")
    if pattern:
        assert re.fullmatch(pattern.replace("{key}", re.escape(key)), body["error"]["message"])
    return dict(body["error"])


def test_not_found(raw: RawIPA, ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    for method in ("group_show", "user_show", "group_del", "group_add_member"):
        response = raw.call(method, [name])
        assert response.status_code == 200
        error = _assert_error(response.json(), "error_not_found", name)
        assert error["data"] == {"reason": error["message"]}
    with pytest.raises(exceptions.NotFound) as raised:
        ipa.group_show(name)
    assert raised.value.code == 4001


def test_duplicate_entry(raw: RawIPA, ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    ipa.group_add(name)
    response = raw.call("group_add", [name])
    assert response.status_code == 200
    _assert_error(response.json(), "error_duplicate_entry", name)
    with pytest.raises(exceptions.DuplicateEntry) as raised:
        ipa.group_add(name)
    assert raised.value.code == 4002


def test_empty_modlist(raw: RawIPA, ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    ipa.group_add(name, o_description="same")
    response = raw.call("group_mod", [name], description="same")
    _assert_error(response.json(), "error_empty_modlist", name)
    with pytest.raises(exceptions.BadRequest) as raised:
        ipa.group_mod(name, o_description="same")
    assert raised.value.code == 4202


# --- membership: completed + failed.member.{user,group}[[name, reason]] ---------------------------


def test_group_add_member_shape(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    ipa.group_add(name, o_description="members")
    add_user(ipa, name + "-a")
    outcome = ipa.group_add_member(name, o_user=name + "-a")
    assert_conforms(recording("group_add_member")["response"]["result"], outcome)
    assert outcome["completed"] == 1
    assert outcome["result"]["member_user"] == [name + "-a"]


@pytest.mark.parametrize("case", recording("member_failures")["cases"], ids=lambda c: f"{c['method']}-{c['reason']}")
def test_member_failure_reasons(ipa: ClientMeta, fresh_name: str, case: dict[str, Any]) -> None:
    name = fresh_name
    ipa.group_add(name)
    member, outsider = name + "-m", name + "-o"
    add_user(ipa, member)
    add_user(ipa, outsider)
    ipa.group_add_member(name, o_user=member)
    target = {
        "<existing user, not a member>": outsider,
        "<existing member>": member,
        "<no such user>": name + "-ghost",
        "<user, not a member>": outsider,
    }[case["member"]]
    outcome = getattr(ipa, case["method"])(name, o_user=[target])  # ClientMeta does not raise on these
    assert_conforms(recording("member_failures")["failed_shape"], outcome["failed"])
    assert outcome["completed"] == case["completed"]
    expected = [] if case["reason"] is None else [[target, case["reason"]]]
    assert outcome["failed"]["member"]["user"] == expected
    assert outcome["failed"]["member"]["group"] == []


def test_nested_group_membership(ipa: ClientMeta, fresh_name: str) -> None:
    name = fresh_name
    parent, child = name + "-p", name + "-c"
    ipa.group_add(parent)
    ipa.group_add(child)
    outcome = ipa.group_add_member(parent, o_group=[child, name + "-missing"])
    assert outcome["completed"] == 1
    assert outcome["failed"]["member"]["group"] == [[name + "-missing", "no such entry"]]
    assert ipa.group_show(child)["result"]["memberof_group"] == [parent]
    removed = ipa.group_remove_member(parent, o_group=child)
    assert removed["completed"] == 1 and "member_group" not in removed["result"]
