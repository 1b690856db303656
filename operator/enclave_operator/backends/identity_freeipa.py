"""The project's group in FreeIPA, through python-freeipa's ClientMeta (JSON-RPC over HTTPS).

- One client per operator: it logs in once with the service principal's password, reuses the
  `ipa_session` cookie and logs in again once when FreeIPA answers 401 (the session expired).
- ClientMeta is blocking and sets no timeout of its own; every HTTP request gets one (an adapter
  mounted on its requests session) and every call runs in a worker thread under an overall bound.
- Errors: unreachable / timed out / 5xx → BackendUnavailable (retry); FreeIPA refusals that retries
  cannot fix (validation, ACI denial, bad credentials) → BackendRejected; anything else BackendError.
  Messages carry FreeIPA's error name and message, never the password or request bodies.
- Users that do not exist are not a failure: see `enclave_operator.backends.identity`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pydantic
import requests
import requests.adapters
from python_freeipa import ClientMeta, exceptions

from enclave_operator import metrics, reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import identity, ownership, throttle
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable
from enclave_operator.configerror import ConfigError
from enclave_operator.settings import FreeIpaSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")

DIRECTORY = "FreeIPA"
# FreeIPA public error codes the adapter switches on (ipalib/errors.py).
NOT_FOUND = 4001
DUPLICATE_ENTRY = 4002
EMPTY_MODLIST = 4202
REJECTED_CODES = frozenset({2100, 3005, 3007, 3009, 4307})
"""ACIError, OptionError, RequirementError, ValidationError, ProtectedEntryError: retries will not help."""
# Reasons in `failed.member.user` of group_add_member / group_remove_member (lowercased).
NO_SUCH_ENTRY = "no such entry"
ALREADY_MEMBER = "this entry is already a member"
NOT_A_MEMBER = "this entry is not a member"
PROTECTED_GROUPS = frozenset({"admins", "ipausers", "editors", "trust admins", "default smb group"})
"""FreeIPA's own groups: a project named like one must never rewrite its members or delete it."""


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """requests has no session-wide timeout; ClientMeta passes none, so every request gets ours."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0, pool_maxsize=8)
        self._timeout = (min(timeout, 5.0), timeout)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class FreeIpaError(BackendError):
    """A FreeIPA error answer with its numeric code (4001 NotFound, 4002 DuplicateEntry, ...)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = code not in REJECTED_CODES


def _certificate_refused(error: BaseException) -> bool:
    """Whether a TLS failure is the server's certificate being refused (a configuration to fix), not a handshake
    or a pooled connection cut short by a server going down (requests calls both SSLError; only the second is
    worth retrying)."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        linked = (*current.args, getattr(current, "reason", None), current.__cause__, current.__context__)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return False


class FreeIpaClient:
    """One logged-in ClientMeta shared by all adapters; thread-safe re-login on an expired session."""

    def __init__(self, settings: FreeIpaSettings, password: pydantic.SecretStr | None = None) -> None:
        self.settings = settings
        self._password = password
        self._meta = ClientMeta(
            host=settings.host, verify_ssl=str(settings.ca_file) if settings.ca_file else True, dns_discovery=False
        )
        self._meta._session.mount("https://", _TimeoutAdapter(settings.timeout_seconds))
        self._lock = threading.Lock()
        self._generation = 0
        """Counts logins; a 401 seen by a call re-logs-in only if nobody did since that call began."""
        self._logged_in = False
        self.calls: collections.Counter[str] = collections.Counter()
        """FreeIPA commands sent, by name (tests check that an idempotent resync writes nothing)."""

    @property
    def _bound(self) -> float:
        """Login + call + re-login + retry, each bounded by the HTTP timeout, plus slack."""
        return 4 * self.settings.timeout_seconds + 1.0

    def _login(self, seen_generation: int) -> None:
        with self._lock:
            if self._logged_in and self._generation != seen_generation:
                return  # another thread logged in meanwhile
            try:
                password = self._password or self.settings.password()
            except ConfigError as error:
                raise BackendRejected(str(error)) from None
            try:
                self._meta.login(self.settings.username, password.get_secret_value())
            except exceptions.Unauthorized as error:
                self._logged_in = False
                raise BackendRejected(
                    f"FreeIPA refused the login of {self.settings.username} ({type(error).__name__}); "
                    f"check the password in {self.settings.password_env}"
                ) from None
            self._logged_in = True
            self._generation += 1
            self.calls["login"] += 1

    def _call_blocking(self, method: str, kwargs: Mapping[str, Any]) -> Any:
        generation = self._generation
        if not self._logged_in:
            self._login(generation)
            generation = self._generation
        fn: Callable[..., Any] = getattr(self._meta, method)
        self.calls[method] += 1
        kind = "read" if method.endswith(("_show", "_find")) else "write"
        metrics.BACKEND_REQUESTS.labels(backend="identity", kind=kind).inc()
        try:
            return fn(**kwargs)
        except exceptions.Unauthorized:
            logger.info("FreeIPA session expired; logging in again")
            self._login(generation)
            self.calls[method] += 1
            return fn(**kwargs)

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Run one ClientMeta command (e.g. `group_show`, a_cn=...) in a thread; map failures to backend errors."""
        await throttle.bound("identity").wait()
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._call_blocking, method, kwargs), self._bound)
        except TimeoutError:
            raise BackendUnavailable(f"{method}: FreeIPA did not answer within {self._bound:.0f}s") from None
        except requests.exceptions.SSLError as error:
            if _certificate_refused(error):
                raise BackendError(f"{method}: TLS verification of {self.settings.host} failed") from None
            raise BackendUnavailable(f"{method}: TLS connection to {self.settings.host} cut short") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise BackendUnavailable(f"{method}: FreeIPA unreachable ({type(error).__name__})") from None
        except requests.exceptions.RequestException as error:
            raise BackendUnavailable(f"{method}: HTTP error talking to FreeIPA ({type(error).__name__})") from None
        except exceptions.Unauthorized:
            self._logged_in = False  # the next call logs in afresh (no lock here: never block the event loop)
            raise BackendRejected(f"{method}: FreeIPA refused the session again after a fresh login") from None
        except exceptions.FreeIPAError as error:
            code = getattr(error, "code", None)
            if isinstance(code, int) and 500 <= code < 600:
                raise BackendUnavailable(f"{method}: FreeIPA answered HTTP {code}") from None
            if isinstance(code, int) and 400 <= code < 500:
                raise BackendRejected(f"{method}: FreeIPA answered HTTP {code}") from None
            raise FreeIpaError(f"{method}: {type(error).__name__}: {error.message}", code) from None

    async def call_or_none(self, method: str, *ok_codes: int, **kwargs: Any) -> Any:
        """`call`, but None when FreeIPA answers with one of `ok_codes` (e.g. NotFound on delete)."""
        try:
            return await self.call(method, **kwargs)
        except FreeIpaError as error:
            if error.code in ok_codes:
                return None
            raise

    def group_adapter(self, desired: identity.DesiredIdentityGroup) -> FreeIpaGroupAdapter:
        return FreeIpaGroupAdapter(self, desired)

    async def close(self) -> None:
        """Log out and close the HTTP pool (best effort: a shutting-down operator need not wait for FreeIPA)."""
        if self._logged_in:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._meta.logout), self.settings.timeout_seconds + 1)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
            self._logged_in = False
        self._meta._session.close()


def _first(entry: Mapping[str, Any], attr: str) -> str | None:
    value = entry.get(attr)
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value in (None, "") else str(value)


def _failed_users(result: Mapping[str, Any]) -> dict[str, str]:
    """`failed.member.user` of a member command as {name: lowercased reason}."""
    failed = ((result.get("failed") or {}).get("member") or {}).get("user") or []
    return {str(item[0]).lower(): str(item[1]).lower() for item in failed if isinstance(item, list | tuple)}


def _failed_groups(result: Mapping[str, Any]) -> dict[str, str]:
    failed = ((result.get("failed") or {}).get("member") or {}).get("group") or []
    return {str(item[0]).lower(): str(item[1]).lower() for item in failed if isinstance(item, list | tuple)}


class FreeIpaGroupAdapter:
    """The project's FreeIPA group: exists, matches description and GID, holds exactly the desired users.

    Direct members only: nested groups in the project group are removed (they would grant access to
    people the project does not list). Deletion removes the group under both policies: a group holds no
    data, and Retain means "keep data, revoke access".
    """

    part = reasons.IDENTITY_READY
    noun = "IdentityGroup"
    member_key = "identity"

    def __init__(self, client: FreeIpaClient, desired: identity.DesiredIdentityGroup) -> None:
        self._c = client
        self._d = desired
        self._name = desired.name.strip().lower()
        self._members = identity.normalise_names(desired.members)
        self._desired = dataclasses.replace(desired, name=self._name, members=self._members)
        """As FreeIPA stores it: lowercase names, each member once."""

    def _guard(self) -> None:
        if self._name in PROTECTED_GROUPS:
            raise ownership.NotOwned(f"group {self._name} is a FreeIPA system group; the operator does not manage it")

    async def _show(self) -> dict[str, Any] | None:
        result = await self._c.call_or_none("group_show", NOT_FOUND, a_cn=self._name, o_all=False)
        return dict(result["result"]) if result else None

    async def _existing(self, users: list[str]) -> list[str]:
        """Those of `users` that exist in FreeIPA (one user_show each; only non-members are asked)."""
        found = []
        for user in users:
            shown = await self._c.call_or_none("user_show", NOT_FOUND, a_uid=user, o_all=False, o_no_members=True)
            if shown is not None:
                found.append(user)
        return found

    async def claim(self) -> ownership.ClaimResult:
        """Whether the group is absent, the owner's (description marker), or someone else's."""
        self._guard()
        entry = await self._show()
        return self._claim(entry)

    def _claim(self, entry: Mapping[str, Any] | None) -> ownership.ClaimResult:
        return identity.group_claim(self._d, _first(entry or {}, "description"), exists=entry is not None)

    def _attribute_diffs(self, entry: Mapping[str, Any]) -> list[str]:
        diffs = []
        if (_first(entry, "description") or "") != self._d.stored_description:
            diffs.append("description differs")
        gid = _first(entry, "gidnumber")
        if self._d.gid_number is not None and gid != str(self._d.gid_number):
            diffs.append(f"gidNumber {gid or 'none'}, want {self._d.gid_number}")
        return diffs

    async def observe(self) -> Observation:
        self._guard()
        entry = await self._show()
        if entry is None:
            return identity.absent_observation(self._desired)
        ownership.raise_unless_usable(self._claim(entry), self._d.owner, self.noun)
        current = identity.normalise_names(entry.get("member_user") or [])
        nested = identity.normalise_names(entry.get("member_group") or [])
        existing = await self._existing([u for u in self._members if u not in current])
        plan = identity.plan_members(self._members, current, existing)
        diffs = self._attribute_diffs(entry)
        if nested:
            diffs.append(f"nested groups to remove: {', '.join(nested)}")
        return identity.group_observation(
            self._desired,
            directory=DIRECTORY,
            diffs=diffs,
            current=current,
            plan=plan,
        )

    async def create(self) -> None:
        self._guard()
        added = await self._c.call_or_none(
            "group_add",
            DUPLICATE_ENTRY,
            a_cn=self._name,
            o_description=self._d.stored_description,
            o_gidnumber=self._d.gid_number,
        )
        if added is None:
            logger.info("group %s already existed; converging it", self._name)
        await self._converge()

    async def update(self, observation: Observation) -> None:
        self._guard()
        await self._converge()

    async def _converge(self) -> None:
        """From a fresh read: attributes, then members added, then extras removed. Each step is idempotent."""
        entry = await self._show()
        if entry is None:
            raise BackendError(f"group {self._name} vanished while being converged; will retry")
        ownership.raise_unless_usable(self._claim(entry), self._d.owner, self.noun)  # e.g. group_add met a duplicate
        if self._attribute_diffs(entry):
            await self._c.call_or_none(
                "group_mod",
                EMPTY_MODLIST,
                a_cn=self._name,
                o_description=self._d.stored_description,
                o_gidnumber=self._d.gid_number,
            )
        current = set(identity.normalise_names(entry.get("member_user") or []))
        to_add = [u for u in self._members if u not in current]
        if to_add:
            result = await self._c.call("group_add_member", a_cn=self._name, o_user=to_add)
            failed = _failed_users(result)
            unexpected = {name: why for name, why in failed.items() if why not in (NO_SUCH_ENTRY, ALREADY_MEMBER)}
            if unexpected:
                raise BackendRejected(f"cannot add {', '.join(sorted(unexpected))} to group {self._name}: "
                                      f"{'; '.join(sorted(set(unexpected.values())))}")  # fmt: skip
        extra = sorted(current - set(self._members))
        nested = identity.normalise_names(entry.get("member_group") or [])
        if extra or nested:
            options: dict[str, Any] = {"o_user": extra or None, "o_group": nested or None}
            result = await self._c.call("group_remove_member", a_cn=self._name, **options)
            failed = {**_failed_users(result), **_failed_groups(result)}
            unexpected = {name: why for name, why in failed.items() if why != NOT_A_MEMBER}
            if unexpected:
                raise BackendRejected(f"cannot remove {', '.join(sorted(unexpected))} from group {self._name}")

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Both policies remove the group: it holds no data, and Retain still revokes access."""
        self._guard()
        ownership.raise_unless_usable(self._claim(await self._show()), self._d.owner, self.noun)
        await self._c.call_or_none("group_del", NOT_FOUND, a_cn=self._name)
        return DeleteOutcome.DELETED
