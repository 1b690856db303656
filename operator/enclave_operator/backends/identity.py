"""What the identity adapters (FreeIPA, LDAP) share: the desired group, the member-state words and the
pure planning of membership changes.

Why a shared module: both directories answer the same question (does the project's group hold exactly
the desired users?) and both must treat users that do not exist in the directory the same way: not a
failure of the part (the operator cannot create people), but a degraded condition `MembersMissing`
naming them, while every other member is still kept exact.

Ownership (backends/ownership.py): directories have no labels, so a group is marked in its description,
which ends with `[enclave.io/project=<name>]`. A group without that marker (made by hand, or by another
project under a colliding naming template) is never written to or deleted (NotOwned).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol

from enclave_operator import reasons
from enclave_operator.backends import ownership
from enclave_operator.backends.adapter import Adapter, Observation

MEMBER = "Member"
"""The user is in the group."""
MISSING = "Missing"
"""The user does not exist in the directory; the group is otherwise converged without them."""
PENDING = "Pending"
"""The user exists but is not (yet) in the group; only seen before a create or update converges it."""

MISSING_NAMES_SHOWN = 20
"""At most this many missing usernames in a condition message (a condition is not a report)."""
MAX_DESCRIPTION = 255
"""FreeIPA and common LDAP schemas take longer descriptions, but Slurm-like tools and UIs cut here."""


class GroupAdapter(Adapter, ownership.Claimable, Protocol):
    """One group in the directory (FreeIpaGroupAdapter, LdapGroupAdapter)."""


class IdentityClient(Protocol):
    """A directory's client (identity_freeipa.FreeIpaClient, identity_ldap.LdapClient), made once per process by
    runtime.Runtime.create from settings.identity. Its module is imported only there, so that an enclave without
    a directory never loads ldap3, requests or python-freeipa (~7 MiB resident)."""

    def group_adapter(self, desired: DesiredIdentityGroup) -> GroupAdapter:
        """The adapter of one group in this directory."""
        ...

    async def close(self) -> None: ...


def owner_marker(owner: ownership.Owner) -> str:
    return f"[{owner.label}={owner.name}]"


@dataclasses.dataclass(frozen=True)
class DesiredIdentityGroup:
    """The project's group in the directory: its name, description, exact members and optional GID."""

    name: str
    description: str
    members: Sequence[str]
    """Usernames (the directory's login names); the group holds exactly those that exist."""
    gid_number: int | None = None
    """None: the directory chooses (FreeIPA) or the group has none (groupOfNames)."""
    owner: ownership.Owner = dataclasses.field(kw_only=True)

    @property
    def stored_description(self) -> str:
        """The description as written: the human text, shortened if needed, then the owner marker."""
        tag = owner_marker(self.owner)
        text = " ".join(self.description.split())[: MAX_DESCRIPTION - len(tag) - 1].rstrip()
        return f"{text} {tag}" if text else tag


def group_claim(desired: DesiredIdentityGroup, description: str | None, *, exists: bool) -> ownership.ClaimResult:
    """A group is the owner's when its description ends with the owner's marker."""
    if not exists:
        return ownership.ClaimResult(ownership.Claim.ABSENT, desired.name)
    if (description or "").rstrip().endswith(owner_marker(desired.owner)):
        return ownership.ClaimResult(ownership.Claim.OWNED, desired.name)
    message = ownership.foreign_message(f"identity group {desired.name}", desired.owner, None)
    return ownership.ClaimResult(ownership.Claim.FOREIGN, desired.name, message)


@dataclasses.dataclass(frozen=True)
class MemberPlan:
    """The membership changes that make a group exact, and the users that cannot be added."""

    to_add: tuple[str, ...]
    to_remove: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def changes(self) -> bool:
        return bool(self.to_add or self.to_remove)


def plan_members(desired: Iterable[str], current: Iterable[str], existing: Iterable[str]) -> MemberPlan:
    """Compare the desired usernames with the group's current members.

    `existing` are the desired users known to exist in the directory (current members exist by
    definition). Desired users neither current nor existing are missing: never added, never a diff.
    """
    wanted, have, known = set(desired), set(current), set(existing) | set(current)
    return MemberPlan(
        to_add=tuple(sorted((wanted - have) & known)),
        to_remove=tuple(sorted(have - wanted)),
        missing=tuple(sorted(wanted - known)),
    )


def member_states(desired: Iterable[str], current: Iterable[str], missing: Iterable[str]) -> dict[str, str]:
    """Per desired user: Member, Missing (no such user) or Pending (exists, not yet in the group)."""
    have, absent = set(current), set(missing)
    return {user: MEMBER if user in have else MISSING if user in absent else PENDING for user in sorted(set(desired))}


def missing_message(directory: str, missing: Sequence[str]) -> str:
    """The degraded condition's message: which desired users do not exist (names only, bounded)."""
    names = sorted(missing)
    shown = ", ".join(names[:MISSING_NAMES_SHOWN])
    more = f" and {len(names) - MISSING_NAMES_SHOWN} more" if len(names) > MISSING_NAMES_SHOWN else ""
    noun = "user does" if len(names) == 1 else "users do"
    return f"{len(names)} desired {noun} not exist in {directory}: {shown}{more}; the other members are in the group"


def group_observation(
    desired: DesiredIdentityGroup,
    *,
    directory: str,
    diffs: Sequence[str],
    current: Iterable[str],
    plan: MemberPlan,
) -> Observation:
    """The observation of an existing group: up to date when nothing but missing users differs."""
    all_diffs = list(diffs)
    if plan.to_add:
        all_diffs.append(f"members to add: {', '.join(plan.to_add)}")
    if plan.to_remove:
        all_diffs.append(f"members to remove: {', '.join(plan.to_remove)}")
    degraded = bool(plan.missing)
    return Observation(
        exists=True,
        up_to_date=not all_diffs,
        diff="; ".join(all_diffs),
        resource=desired.name,
        members=member_states(desired.members, current, plan.missing),
        degraded_reason=reasons.REASON_MEMBERS_MISSING if degraded else "",
        degraded_message=missing_message(directory, plan.missing) if degraded else "",
    )


def absent_observation(desired: DesiredIdentityGroup) -> Observation:
    """The group does not exist: create it. Every desired user is Pending until then."""
    return Observation(
        exists=False,
        up_to_date=False,
        diff="group missing",
        resource=desired.name,
        members=dict.fromkeys(sorted(set(desired.members)), PENDING),
    )


def normalise_names(names: Iterable[str]) -> list[str]:
    """Directory login names compare case-insensitively (FreeIPA lowercases them; uid is caseIgnore)."""
    return sorted({name.strip().lower() for name in names if name.strip()})
