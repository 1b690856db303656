"""The project's group in a plain LDAP directory (OpenLDAP, 389-ds, AD-like schemas), through ldap3.

- One bound connection, reused and guarded by a lock (ldap3's SYNC strategy is not thread-safe);
  a broken connection is rebuilt once per call, so a restarted server costs one reconnect.
- ldap3 is blocking: every call runs in a worker thread; connect and receive timeouts bound each
  operation and an overall bound covers the whole call.
- Members: `member`/`uniqueMember` hold user DNs (found under usersBaseDn by userIdAttribute);
  `memberUid` holds the usernames themselves. Users that do not exist are never written and are
  reported as Missing (condition MembersMissing), like in FreeIPA.
- Empty groups: groupOfNames/groupOfUniqueNames require at least one member. When no desired user
  exists, the group holds one placeholder value, by default the group's own DN (always a valid DN,
  never a person, ignored by the adapter when comparing), or `emptyMember` when configured. The
  placeholder is removed as soon as a real member is added. posixGroup (memberUid) needs none.
- Deletion removes the group under both policies: a group holds no data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ldap3
import pydantic
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from enclave_operator import reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import identity, ownership, throttle
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable
from enclave_operator.configerror import ConfigError
from enclave_operator.settings import LdapSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")

DIRECTORY = "LDAP"
# LDAP result codes (RFC 4511) the adapter switches on.
SUCCESS = 0
NO_SUCH_ATTRIBUTE = 16
"""Deleting a value that is not there: the member was already removed."""
ATTRIBUTE_OR_VALUE_EXISTS = 20
"""Adding a value that is there: the member was already added."""
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49
ENTRY_ALREADY_EXISTS = 68
UNAVAILABLE_CODES = frozenset({3, 51, 52, 80})
"""timeLimitExceeded, busy, unavailable, other: worth a retry."""
USER_SEARCH_CHUNK = 100
"""Usernames per search filter (an OR of equality filters)."""

class LdapResultError(BackendError):
    """An LDAP operation answered with a result code that is not success."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _check(conn: ldap3.Connection, what: str, *ok: int) -> int:
    """The last result code; raise unless success or one of `ok`. Messages carry the code's name only."""
    result = conn.result or {}
    code = int(result.get("result", 80))
    if code == SUCCESS or code in ok:
        return code
    text = f"{what}: LDAP {result.get('description', 'error')} ({code})"
    if code in UNAVAILABLE_CODES:
        raise BackendUnavailable(text)
    error = LdapResultError(text, code)
    error.retryable = False
    raise error


class LdapClient:
    """A bound ldap3 connection shared by the LDAP adapters, rebuilt when it breaks."""

    def __init__(self, settings: LdapSettings, password: pydantic.SecretStr | None = None) -> None:
        self.settings = settings
        self._password = password
        self._lock = threading.Lock()
        self._conn: ldap3.Connection | None = None
        self.writes = 0
        """Modifications sent (tests check that an idempotent resync writes nothing)."""

    @property
    def _bound(self) -> float:
        return 4 * self.settings.timeout_seconds + 1.0

    def _server(self) -> ldap3.Server:
        s = self.settings
        tls = None
        if s.uri.startswith("ldaps://") or s.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=str(s.ca_file) if s.ca_file else None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return ldap3.Server(s.uri, connect_timeout=s.timeout_seconds, get_info=ldap3.NONE, tls=tls)

    def _connect(self) -> ldap3.Connection:
        try:
            password = self._password or self.settings.password()
        except ConfigError as error:
            raise BackendRejected(str(error)) from None
        conn = ldap3.Connection(
            self._server(),
            user=self.settings.bind_dn,
            password=password.get_secret_value(),
            receive_timeout=math.ceil(self.settings.timeout_seconds),  # ldap3 packs it as an integer
            raise_exceptions=False,
            auto_referrals=False,
        )
        try:
            conn.open()
            if self.settings.start_tls and not conn.start_tls():
                raise BackendRejected("LDAP StartTLS failed")
            if not conn.bind():
                code = int((conn.result or {}).get("result", 80))
                if code == INVALID_CREDENTIALS:
                    s = self.settings
                    raise BackendRejected(f"LDAP bind as {s.bind_dn} refused; check the password in {s.password_env}")
                raise BackendUnavailable(f"LDAP bind failed ({code})")
        except BaseException:
            with contextlib.suppress(ldap_errors.LDAPException, OSError):
                conn.unbind()
            raise
        return conn

    def _run_blocking(self, fn: Callable[[ldap3.Connection], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                try:
                    return fn(self._conn)
                except ldap_errors.LDAPCommunicationError:
                    # A stale connection (server restarted, idle timeout): rebuild it once.
                    self._drop()
                    if attempt == 2:
                        raise
                except (ldap_errors.LDAPResponseTimeoutError, OSError):
                    self._drop()  # a late answer could still arrive on this connection: never reuse it
                    raise
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(ldap_errors.LDAPException, OSError):
                conn.unbind()

    async def run(self, what: str, fn: Callable[[ldap3.Connection], T]) -> T:
        """Run `fn(connection)` (several operations, one lock) in a thread, within the identity rate (`throttle`);
        map failures to backend errors."""
        await throttle.bound("identity").wait()
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run_blocking, fn), self._bound)
        except TimeoutError:
            raise BackendUnavailable(f"{what}: LDAP did not answer within {self._bound:.0f}s") from None
        except (ldap_errors.LDAPCommunicationError, ldap_errors.LDAPResponseTimeoutError, OSError) as error:
            # The worker already dropped the broken connection; never take the lock on the event loop.
            raise BackendUnavailable(f"{what}: LDAP unreachable ({type(error).__name__})") from None
        except ldap_errors.LDAPStartTLSError:
            raise BackendRejected(f"{what}: LDAP StartTLS failed") from None
        except ldap_errors.LDAPException as error:
            raise BackendError(f"{what}: LDAP client error ({type(error).__name__})") from None

    def group_adapter(self, desired: identity.DesiredIdentityGroup) -> LdapGroupAdapter:
        return LdapGroupAdapter(self, desired)

    async def close(self) -> None:
        """Unbind (in a thread: the lock may be held by a running call)."""

        def close() -> None:
            with self._lock:
                self._drop()

        await asyncio.wait_for(asyncio.to_thread(close), self._bound)


def _norm_dn(dn: str) -> str:
    """A DN for comparison: attribute names and values lowercased, spaces around separators gone."""
    try:
        return ",".join(f"{attr.lower()}={value.lower()}" for attr, value, _ in parse_dn(dn, escape=True, strip=True))
    except ldap_errors.LDAPInvalidDnError:
        return dn.strip().lower()


@dataclasses.dataclass(frozen=True)
class _GroupState:
    description: str
    gid_number: str | None
    values: tuple[str, ...]
    """The member attribute's raw values."""


class LdapGroupAdapter:
    """The project's LDAP group: exists, matches description and GID, holds exactly the desired users."""

    part = reasons.IDENTITY_READY
    noun = "IdentityGroup"
    member_key = "identity"

    def __init__(self, client: LdapClient, desired: identity.DesiredIdentityGroup) -> None:
        self._c = client
        self._s = client.settings
        self._members = identity.normalise_names(desired.members)
        self._d = dataclasses.replace(desired, members=self._members)
        self._dn = f"cn={escape_rdn(desired.name)},{self._s.groups_base_dn}"

    @property
    def _by_dn(self) -> bool:
        return self._s.member_attribute != "memberUid"

    @property
    def _placeholder(self) -> str | None:
        if not self._by_dn:
            return None
        return self._s.empty_member or self._dn

    # --- blocking helpers (run inside LdapClient.run) ---------------------------------------------

    def _read(self, conn: ldap3.Connection) -> _GroupState | None:
        attr = self._s.member_attribute
        conn.search(self._dn, "(objectClass=*)", ldap3.BASE, attributes=["description", "gidNumber", attr])
        if _check(conn, f"read group {self._d.name}", NO_SUCH_OBJECT) == NO_SUCH_OBJECT or not conn.response:
            return None
        attrs = conn.response[0].get("attributes") or {}

        def values(name: str) -> list[str]:
            value = attrs.get(name)
            if value is None or value == []:
                return []
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]

        description = values("description")
        gid = values("gidNumber")
        return _GroupState(description[0] if description else "", gid[0] if gid else None, tuple(values(attr)))

    def _find_users(self, conn: ldap3.Connection, names: Sequence[str]) -> dict[str, str]:
        """{username: DN} of the given users that exist under usersBaseDn."""
        id_attr = self._s.user_id_attribute
        found: dict[str, str] = {}
        for start in range(0, len(names), USER_SEARCH_CHUNK):
            chunk = names[start : start + USER_SEARCH_CHUNK]
            terms = "".join(f"({id_attr}={escape_filter_chars(name)})" for name in chunk)
            conn.search(self._s.users_base_dn, f"(|{terms})", ldap3.SUBTREE, attributes=[id_attr])
            _check(conn, "find users", NO_SUCH_OBJECT)
            for entry in conn.response or []:
                if entry.get("type") != "searchResEntry":
                    continue
                for value in (entry.get("attributes") or {}).get(id_attr) or []:
                    name = str(value).lower()
                    if name in chunk:
                        if name in found and _norm_dn(found[name]) != _norm_dn(entry["dn"]):
                            raise BackendRejected(f"username {name} matches several entries under usersBaseDn")
                        found[name] = entry["dn"]
        return found

    def _classify(self, state: _GroupState, found: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """DN members: (desired usernames in the group, other values except the placeholder)."""
        placeholder = _norm_dn(self._placeholder or "")
        desired_dns = {_norm_dn(dn): name for name, dn in found.items()}
        names, others = [], []
        for value in state.values:
            norm = _norm_dn(value)
            if norm == placeholder:
                continue
            if norm in desired_dns:
                names.append(desired_dns[norm])
            else:
                others.append(value)
        return sorted(names), others

    def _claim(self, state: _GroupState | None) -> ownership.ClaimResult:
        return identity.group_claim(self._d, state.description if state else None, exists=state is not None)

    def _observe_blocking(self, conn: ldap3.Connection) -> Observation:
        state = self._read(conn)
        if state is None:
            return identity.absent_observation(self._d)
        ownership.raise_unless_usable(self._claim(state), self._d.owner, self.noun)
        if self._by_dn:
            found = self._find_users(conn, self._members)
            current, others = self._classify(state, found)
            existing = list(found)
        else:
            current, others = identity.normalise_names(state.values), []
            existing = list(self._find_users(conn, [u for u in self._members if u not in current]))
        plan = identity.plan_members(self._members, current, existing)
        extra = {_display(value, self._s.user_id_attribute) for value in others}
        plan = dataclasses.replace(plan, to_remove=tuple(sorted(set(plan.to_remove) | extra)))
        return identity.group_observation(
            self._d, directory=DIRECTORY, diffs=self._attribute_diffs(state), current=current, plan=plan
        )

    def _attribute_diffs(self, state: _GroupState) -> list[str]:
        diffs = []
        if state.description != self._d.stored_description:
            diffs.append("description differs")
        if self._d.gid_number is not None and state.gid_number != str(self._d.gid_number):
            diffs.append(f"gidNumber {state.gid_number or 'none'}, want {self._d.gid_number}")
        return diffs

    def _desired_values(self, conn: ldap3.Connection) -> list[str]:
        """The member attribute's values for the desired users that exist (DNs or usernames)."""
        found = self._find_users(conn, self._members)
        if self._by_dn:
            return [found[name] for name in sorted(found)]
        return sorted(found)

    def _create_blocking(self, conn: ldap3.Connection) -> None:
        values = self._desired_values(conn)
        attrs: dict[str, Any] = {"cn": self._d.name, "description": self._d.stored_description}
        if self._d.gid_number is not None:
            attrs["gidNumber"] = str(self._d.gid_number)
        if values:
            attrs[self._s.member_attribute] = values
        elif self._placeholder:
            attrs[self._s.member_attribute] = [self._placeholder]
        self._c.writes += 1
        conn.add(self._dn, [self._s.group_object_class], attrs)
        if _check(conn, f"create group {self._d.name}", ENTRY_ALREADY_EXISTS) == ENTRY_ALREADY_EXISTS:
            logger.info("group %s already existed; converging it", self._d.name)
            self._converge_blocking(conn)

    def _modify(self, conn: ldap3.Connection, what: str, changes: dict[str, Any], *ok: int) -> int:
        self._c.writes += 1
        conn.modify(self._dn, changes)
        return _check(conn, what, *ok)

    def _converge_blocking(self, conn: ldap3.Connection) -> None:
        """From a fresh read: attributes, then members added (placeholder if empty), then extras removed."""
        state = self._read(conn)
        if state is None:
            raise BackendError(f"group {self._d.name} vanished while being converged; will retry")
        ownership.raise_unless_usable(self._claim(state), self._d.owner, self.noun)  # e.g. add met an existing entry
        attrs: dict[str, Any] = {}
        if state.description != self._d.stored_description:
            attrs["description"] = [(ldap3.MODIFY_REPLACE, [self._d.stored_description])]
        if self._d.gid_number is not None and state.gid_number != str(self._d.gid_number):
            attrs["gidNumber"] = [(ldap3.MODIFY_REPLACE, [str(self._d.gid_number)])]
        if attrs:
            self._modify(conn, f"update group {self._d.name}", attrs)
        attr = self._s.member_attribute
        wanted = self._desired_values(conn)
        key = _norm_dn if self._by_dn else str.lower
        have = {key(v): v for v in state.values}
        want = {key(v): v for v in wanted}
        placeholder = self._placeholder
        if placeholder and not want:
            want[key(placeholder)] = placeholder
        to_add = [v for k, v in want.items() if k not in have]
        to_remove = [v for k, v in have.items() if k not in want]
        # Add before removing, so a groupOfNames never passes through zero members.
        self._apply(conn, attr, ldap3.MODIFY_ADD, to_add, ATTRIBUTE_OR_VALUE_EXISTS)
        self._apply(conn, attr, ldap3.MODIFY_DELETE, to_remove, NO_SUCH_ATTRIBUTE)

    def _apply(self, conn: ldap3.Connection, attr: str, op: str, values: list[str], benign: int) -> None:
        """One modify for all values; on the benign code (a concurrent writer got there first) value by value."""
        if not values:
            return
        what = f"{'add to' if op == ldap3.MODIFY_ADD else 'remove from'} group {self._d.name}"
        if self._modify(conn, what, {attr: [(op, values)]}, benign) != benign or len(values) == 1:
            return
        for value in values:
            self._modify(conn, what, {attr: [(op, [value])]}, benign)

    def _delete_blocking(self, conn: ldap3.Connection) -> None:
        ownership.raise_unless_usable(self._claim(self._read(conn)), self._d.owner, self.noun)
        self._c.writes += 1
        conn.delete(self._dn)
        _check(conn, f"delete group {self._d.name}", NO_SUCH_OBJECT)

    # --- the adapter contract ---------------------------------------------------------------------

    async def claim(self) -> ownership.ClaimResult:
        """Whether the group is absent, the owner's (description marker), or someone else's."""
        return await self._c.run(f"read group {self._d.name}", lambda conn: self._claim(self._read(conn)))

    async def observe(self) -> Observation:
        return await self._c.run(f"observe group {self._d.name}", self._observe_blocking)

    async def create(self) -> None:
        await self._c.run(f"create group {self._d.name}", self._create_blocking)

    async def update(self, observation: Observation) -> None:
        await self._c.run(f"update group {self._d.name}", self._converge_blocking)

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Both policies remove the group: it holds no data, and Retain still revokes access."""
        await self._c.run(f"delete group {self._d.name}", self._delete_blocking)
        return DeleteOutcome.DELETED


def _display(value: str, id_attr: str) -> str:
    """A member value for messages: the username when the DN's first RDN is the id attribute."""
    try:
        parts = parse_dn(value, escape=False, strip=True)
    except ldap_errors.LDAPInvalidDnError:
        return value
    if parts and parts[0][0].lower() == id_attr.lower():
        return str(parts[0][1]).lower()
    return value
