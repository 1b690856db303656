"""Pure helpers of the identity adapters: membership planning, member states, settings, DN handling."""

from __future__ import annotations

import pydantic
import pytest

from enclave_operator import reasons
from enclave_operator.backends import identity, ownership
from enclave_operator.backends.identity_freeipa import FreeIpaSettings, _failed_users
from enclave_operator.backends.identity_ldap import LdapSettings, _display, _norm_dn
from enclave_operator.settings import ConfigError

OWNER = ownership.Owner("x")


def test_plan_adds_existing_removes_extra_and_reports_missing() -> None:
    plan = identity.plan_members(["alice", "bob", "ghost"], current=["bob", "mallory"], existing=["alice"])
    assert plan == identity.MemberPlan(to_add=("alice",), to_remove=("mallory",), missing=("ghost",))
    assert plan.changes


def test_only_missing_users_is_up_to_date_but_degraded() -> None:
    desired = identity.DesiredIdentityGroup("proj-x", "X", ["alice", "ghost"], owner=OWNER)
    plan = identity.plan_members(desired.members, current=["alice"], existing=[])
    observed = identity.group_observation(desired, directory="LDAP", diffs=[], current=["alice"], plan=plan)
    assert observed.up_to_date and observed.exists and not plan.changes
    assert observed.degraded_reason == reasons.REASON_MEMBERS_MISSING
    assert observed.degraded_message.startswith("1 desired user does not exist in LDAP: ghost")
    assert observed.members == {"alice": identity.MEMBER, "ghost": identity.MISSING}


def test_pending_members_make_a_diff() -> None:
    desired = identity.DesiredIdentityGroup("proj-x", "X", ["alice", "bob"], owner=OWNER)
    plan = identity.plan_members(desired.members, current=["alice"], existing=["bob"])
    observed = identity.group_observation(desired, directory="LDAP", diffs=["description differs"], current=["alice"],
                                          plan=plan)  # fmt: skip
    assert not observed.up_to_date and not observed.degraded_reason
    assert observed.diff == "description differs; members to add: bob"
    assert observed.members == {"alice": identity.MEMBER, "bob": identity.PENDING}


def test_missing_message_is_bounded() -> None:
    names = [f"user{i:03}" for i in range(30)]
    message = identity.missing_message("FreeIPA", names)
    assert "30 desired users" in message and "user019" in message and "user020" not in message
    assert "and 10 more" in message


def test_names_are_normalised() -> None:
    assert identity.normalise_names([" Alice", "alice", "BOB", ""]) == ["alice", "bob"]


def test_absent_group_marks_everyone_pending() -> None:
    observed = identity.absent_observation(identity.DesiredIdentityGroup("g", "", ["a", "b"], owner=OWNER))
    assert not observed.exists and not observed.up_to_date and set(observed.members.values()) == {identity.PENDING}


@pytest.mark.parametrize(
    ("description", "claim", "why"),
    [
        ("Onco flow [enclave.io/project=x]", ownership.Claim.OWNED, "our marker at the end"),
        ("Onco flow [enclave.io/project=x] ", ownership.Claim.OWNED, "trailing space as some directories keep it"),
        ("Onco flow [enclave.io/project=xy]", ownership.Claim.FOREIGN, "another project's marker"),
        ("Onco flow (research project x)", ownership.Claim.FOREIGN, "no marker: made by hand"),
        (None, ownership.Claim.FOREIGN, "no description at all"),
    ],
)  # fmt: skip
def test_finding_8_1_groups_are_ours_only_with_our_marker(description: str | None, claim: ownership.Claim,
                                                          why: str) -> None:  # fmt: skip
    desired = identity.DesiredIdentityGroup("proj-x", "Onco flow", [], owner=OWNER)
    assert identity.group_claim(desired, description, exists=True).claim is claim, why
    assert identity.group_claim(desired, None, exists=False).claim is ownership.Claim.ABSENT


def test_the_marker_survives_a_long_title() -> None:
    desired = identity.DesiredIdentityGroup("proj-x", "t" * 300, [], owner=OWNER)
    assert len(desired.stored_description) <= identity.MAX_DESCRIPTION
    assert desired.stored_description.endswith("[enclave.io/project=x]")


def test_freeipa_settings_https_only_and_host() -> None:
    settings = FreeIpaSettings.model_validate({"url": "https://ipa.example.org:8443/ipa/", "username": "svc"})
    assert settings.url == "https://ipa.example.org:8443" and settings.host == "ipa.example.org:8443"
    assert settings.password_env == "ENCLAVE_IPA_PASSWORD"
    for url in ("http://ipa.example.org", "https://ipa.example.org/other", "ipa.example.org"):
        with pytest.raises(pydantic.ValidationError):
            FreeIpaSettings.model_validate({"url": url, "username": "svc"})
    with pytest.raises(pydantic.ValidationError):
        FreeIpaSettings.model_validate({"url": "https://ipa", "username": "svc", "verifySsl": False})


def test_password_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_IPA_PW", raising=False)
    settings = FreeIpaSettings.model_validate({"url": "https://ipa", "username": "svc", "passwordEnv": "SOME_IPA_PW"})
    with pytest.raises(ConfigError, match="SOME_IPA_PW"):
        settings.password()
    monkeypatch.setenv("SOME_IPA_PW", "s3cret")
    assert settings.password().get_secret_value() == "s3cret" and "s3cret" not in repr(settings.password())


def test_ldap_settings_defaults_and_schemes() -> None:
    settings = LdapSettings.model_validate(
        {"uri": "ldaps://ldap.example.org", "bindDn": "cn=op", "groupsBaseDn": "ou=g", "usersBaseDn": "ou=p"}
    )
    assert settings.member_attribute == "member" and settings.group_object_class == "groupOfNames"
    assert settings.user_id_attribute == "uid" and settings.password_env == "ENCLAVE_LDAP_PASSWORD"
    with pytest.raises(pydantic.ValidationError):
        LdapSettings.model_validate({**settings.model_dump(by_alias=True), "memberAttribute": "members"})
    with pytest.raises(pydantic.ValidationError):
        LdapSettings.model_validate({**settings.model_dump(by_alias=True), "uri": "http://x"})


def test_dn_normalisation_and_display() -> None:
    assert _norm_dn("UID=Alice, OU=People,dc=X") == _norm_dn("uid=alice,ou=people,dc=x")
    assert _display("uid=Dave,ou=people,dc=x", "uid") == "dave"
    assert _display("cn=Some Group,ou=groups,dc=x", "uid") == "cn=Some Group,ou=groups,dc=x"


def test_failed_member_reasons_parsed() -> None:
    result = {"failed": {"member": {"user": [["Ghost", "no such entry"], ["bob", "This entry is already a member"]]}}}
    assert _failed_users(result) == {"ghost": "no such entry", "bob": "this entry is already a member"}
    assert _failed_users({"failed": {"member": {"user": []}}}) == {}
