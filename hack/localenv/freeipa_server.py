"""A FreeIPA test server: the real FreeIPA JSON-RPC wire protocol over TLS on loopback, standard library only.

Why: Debian ships no FreeIPA server and 389-ds needs root, yet the operator's FreeIPA adapter must be
tested against the wire protocol it will meet (python-freeipa's ClientMeta). This server speaks that
protocol for the commands the operator uses, shaped like FreeIPA 4.10 answers (attributes as lists,
`result`/`value`/`summary`, errors as HTTP 200 with `error.code`, 401 for a missing or expired
session). tests/contract/test_freeipa_server.py holds it to hand-transcribed recordings of a real
server. It is not a directory server: no LDAP, Kerberos, ACIs or password policy.

    python -m localenv.freeipa_server --port N --cert C --key K --state FILE [--session-lifetime S]

The state file (JSON: users with passwords, groups, id counters) seeds the server and is rewritten
after every change. `POST /ipa/_test/expire_sessions` drops every session so tests can exercise 401.
"""

from __future__ import annotations

import argparse
import http.cookies
import json
import os
import secrets
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from localenv.certs import loopback_server_cert
from localenv.runtime import RunDir, Service, free_port

SERVER_VERSION = "4.10.3"
API_VERSION = "2.253"
DOMAIN = "enclave.test"
REALM = "ENCLAVE.TEST"
BASE_DN = "dc=enclave,dc=test"
SESSION_LIFETIME_S = 1200.0
"""FreeIPA's default session lifetime (20 minutes)."""
FIRST_ID = 1_500_000

COMMON = "version all raw no_members "
MEMBER_KINDS = "user group service idoverrideuser ipaexternalmember"
OPTIONS: dict[str, set[str]] = {
    name: set(options.split())
    for name, options in {
        "ping": "version",
        "session_logout": "version",
        "user_add": COMMON + "givenname sn cn displayname initials gecos homedirectory loginshell mail uidnumber "
        "gidnumber userpassword random noprivate nsaccountlock setattr addattr krbprincipalname",
        "user_show": COMMON + "rights out",
        "user_find": COMMON + "uid givenname sn cn mail uidnumber in_group not_in_group pkey_only sizelimit "
        "timelimit whoami preserved nsaccountlock",
        "group_add": COMMON + "description gidnumber nonposix external setattr addattr",
        "group_show": COMMON + "rights",
        "group_find": COMMON + "cn description gidnumber user no_user group no_group in_group not_in_group "
        "private posix nonposix external pkey_only sizelimit timelimit service no_service idoverrideuser "
        "no_idoverrideuser",
        "group_mod": COMMON + "description gidnumber setattr addattr delattr rights posix external rename",
        "group_del": "version continue",
        "group_add_member": COMMON + MEMBER_KINDS,
        "group_remove_member": COMMON + MEMBER_KINDS,
    }.items()
}
"""The options python-freeipa's ClientMeta sends per command; anything else is FreeIPA's OptionError."""
GROUP_OBJECTCLASSES = ["top", "groupofnames", "nestedgroup", "ipausergroup", "ipaobject"]
USER_OBJECTCLASSES = (
    "top person organizationalperson inetorgperson inetuser posixaccount krbprincipalaux krbticketpolicyaux "
    "ipaobject ipasshuser ipaSshGroupOfPubKeys mepOriginEntry"
).split()


class IPAError(Exception):
    """A FreeIPA public error: travels as HTTP 200 with `error: {code, message, data, name}`."""

    def __init__(self, code: int, name: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.name, self.message, self.data = code, name, message, data or {}

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data, "name": self.name}


def not_found(key: str, kind: str) -> IPAError:
    reason = f"{key}: {kind} not found"
    return IPAError(4001, "NotFound", reason, {"reason": reason})


def duplicate(key: str, kind: str) -> IPAError:
    message = f'{kind} with name "{key}" already exists'
    return IPAError(4002, "DuplicateEntry", message, {"message": message})


def empty_modlist() -> IPAError:
    return IPAError(4202, "EmptyModlist", "no modifications to be performed")


def _names(value: Any) -> list[str]:
    """Member options arrive as one string or a list; FreeIPA lowercases user and group names."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item).strip().lower() for item in items if str(item).strip()]


def _single(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


class Directory:
    """Users and groups in memory, persisted to the state file after each change."""

    def __init__(self, state_file: Path, admin_password: str | None) -> None:
        self.state_file = state_file
        self.lock = threading.RLock()
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
        self.users: dict[str, dict[str, Any]] = state.get("users", {})
        self.groups: dict[str, dict[str, Any]] = state.get("groups", {})
        self.next_id: int = int(state.get("next_id", FIRST_ID))
        if "admin" not in self.users:
            self.users["admin"] = self._new_user("admin", {"givenname": "Administrator", "sn": "Administrator"})
        if admin_password is not None:
            self.users["admin"]["password"] = admin_password
        for name, description in (
            ("admins", "Account administrators group"),
            ("ipausers", "Default group for all users"),
        ):
            if name not in self.groups:
                self.groups[name] = self._new_group(name, {"description": description, "nonposix": name == "ipausers"})
        if "admin" not in self.groups["admins"]["member_user"]:
            self.groups["admins"]["member_user"].append("admin")
        self.save()

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"users": self.users, "groups": self.groups, "next_id": self.next_id}, indent=2, sort_keys=True)
        )
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    def _allocate_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _new_user(self, uid: str, opts: dict[str, Any]) -> dict[str, Any]:
        given, sn = str(opts["givenname"]), str(opts["sn"])
        cn = str(opts.get("cn") or f"{given} {sn}")
        number = int(opts.get("uidnumber") or self._allocate_id())
        return {
            "uid": uid,
            "givenname": given,
            "sn": sn,
            "cn": cn,
            "displayname": str(opts.get("displayname") or cn),
            "initials": str(opts.get("initials") or (given[:1] + sn[:1]).upper()),
            "gecos": str(opts.get("gecos") or cn),
            "mail": str(opts.get("mail") or f"{uid}@{DOMAIN}"),
            "homedirectory": str(opts.get("homedirectory") or f"/home/{uid}"),
            "loginshell": str(opts.get("loginshell") or "/bin/sh"),
            "uidnumber": number,
            "gidnumber": int(opts.get("gidnumber") or number),
            "password": opts.get("userpassword"),
            "ipauniqueid": str(uuid.uuid4()),
            "nsaccountlock": bool(opts.get("nsaccountlock", False)),
        }

    def _new_group(self, cn: str, opts: dict[str, Any]) -> dict[str, Any]:
        posix = not opts.get("nonposix") and not opts.get("external")
        gid = opts.get("gidnumber")
        return {
            "cn": cn,
            "description": opts.get("description"),
            "gidnumber": int(gid) if gid is not None else (self._allocate_id() if posix else None),
            "posix": posix,
            "external": bool(opts.get("external")),
            "ipauniqueid": str(uuid.uuid4()),
            "member_user": [],
            "member_group": [],
        }

    # --- rendering like FreeIPA 4.10 (every attribute a list; dn and booleans plain) -----------------

    def user_entry(self, uid: str, opts: dict[str, Any]) -> dict[str, Any]:
        user = self.users[uid]
        entry: dict[str, Any] = {
            "uid": [uid],
            "givenname": [user["givenname"]],
            "sn": [user["sn"]],
            "homedirectory": [user["homedirectory"]],
            "loginshell": [user["loginshell"]],
            "mail": [user["mail"]],
            "uidnumber": [str(user["uidnumber"])],
            "gidnumber": [str(user["gidnumber"])],
            "krbcanonicalname": [f"{uid}@{REALM}"],
            "krbprincipalname": [f"{uid}@{REALM}"],
            "nsaccountlock": user["nsaccountlock"],
            "has_password": bool(user.get("password")),
            "has_keytab": bool(user.get("password")),
            "preserved": False,
            "dn": f"uid={uid},cn=users,cn=accounts,{BASE_DN}",
        }
        if opts.get("all", True):
            entry.update(
                {
                    "cn": [user["cn"]],
                    "displayname": [user["displayname"]],
                    "initials": [user["initials"]],
                    "gecos": [user["gecos"]],
                    "objectclass": list(USER_OBJECTCLASSES),
                    "ipauniqueid": [user["ipauniqueid"]],
                    "mepmanagedentry": [f"cn={uid},cn=groups,cn=accounts,{BASE_DN}"],
                }
            )
        if not opts.get("no_members", False):
            memberof = sorted(name for name, group in self.groups.items() if uid in group["member_user"])
            if memberof:
                entry["memberof_group"] = memberof
        return entry

    def group_entry(self, cn: str, opts: dict[str, Any]) -> dict[str, Any]:
        group = self.groups[cn]
        entry: dict[str, Any] = {"cn": [cn], "dn": f"cn={cn},cn=groups,cn=accounts,{BASE_DN}"}
        if group["description"]:
            entry["description"] = [group["description"]]
        if group["gidnumber"] is not None:
            entry["gidnumber"] = [str(group["gidnumber"])]
        if opts.get("all", True):
            classes = list(GROUP_OBJECTCLASSES) + (["posixgroup"] if group["posix"] else [])
            classes += ["ipaexternalgroup"] if group["external"] else []
            entry.update({"objectclass": classes, "ipauniqueid": [group["ipauniqueid"]]})
        if not opts.get("no_members", False):
            for attr in ("member_user", "member_group"):
                if group[attr]:
                    entry[attr] = list(group[attr])
            parents = sorted(name for name, other in self.groups.items() if cn in other["member_group"])
            if parents:
                entry["memberof_group"] = parents
        return entry

    def require_user(self, uid: str) -> None:
        if uid not in self.users:
            raise not_found(uid, "user")

    def require_group(self, cn: str) -> None:
        if cn not in self.groups:
            raise not_found(cn, "group")


def _matches(needle: Any, *haystack: Any) -> bool:
    if needle in (None, ""):
        return True
    text = str(needle).lower()
    return any(text in str(value).lower() for value in haystack if value is not None)


def _found(entries: list[dict[str, Any]], kind: str, sizelimit: Any) -> dict[str, Any]:
    limit = int(sizelimit) if sizelimit not in (None, 0, "0") else None
    truncated = limit is not None and len(entries) > limit
    entries = entries[:limit] if limit is not None else entries
    noun = kind if len(entries) == 1 else f"{kind}s"
    verb = "matched"
    return {
        "result": entries,
        "count": len(entries),
        "truncated": truncated,
        "summary": f"{len(entries)} {noun} {verb}",
    }


class Commands:
    """One method per FreeIPA command: `(args, options) -> result`, raising IPAError like the server."""

    def __init__(self, directory: Directory) -> None:
        self.d = directory

    def ping(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        return {"summary": f"IPA server version {SERVER_VERSION}. API version {API_VERSION}"}

    def session_logout(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        return {"result": None}

    # --- users --------------------------------------------------------------------------------------

    def user_add(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        uid = _key(args, "uid")
        for required in ("givenname", "sn"):
            if not opts.get(required):
                raise IPAError(3007, "RequirementError", f"'{required}' is required", {"name": required})
        if uid in self.d.users:
            raise duplicate(uid, "user")
        self.d.users[uid] = self.d._new_user(uid, opts)
        self.d.groups["ipausers"]["member_user"].append(uid)
        self.d.save()
        return {"result": self.d.user_entry(uid, opts), "value": uid, "summary": f'Added user "{uid}"'}

    def user_show(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        uid = _key(args, "uid")
        self.d.require_user(uid)
        return {"result": self.d.user_entry(uid, opts), "value": uid, "summary": None}

    def user_find(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        criteria = _single(args[0]) if args else None
        entries = []
        for uid, user in sorted(self.d.users.items()):
            if not _matches(criteria, uid, user["givenname"], user["sn"], user["cn"], user["mail"]):
                continue
            if opts.get("uid") and uid != str(opts["uid"]).lower():
                continue
            if opts.get("mail") and user["mail"] != opts["mail"]:
                continue
            in_group = _names(opts.get("in_group"))
            if in_group and not all(uid in self.d.groups.get(g, {}).get("member_user", []) for g in in_group):
                continue
            entry = (
                {"uid": [uid], "dn": f"uid={uid},cn=users,cn=accounts,{BASE_DN}"}
                if opts.get("pkey_only")
                else self.d.user_entry(uid, opts)
            )
            entries.append(entry)
        return _found(entries, "user", opts.get("sizelimit"))

    # --- groups -------------------------------------------------------------------------------------

    def group_add(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        cn = _key(args, "cn")
        if cn in self.d.groups:
            raise duplicate(cn, "group")
        self.d.groups[cn] = self.d._new_group(cn, opts)
        self.d.save()
        return {"result": self.d.group_entry(cn, opts), "value": cn, "summary": f'Added group "{cn}"'}

    def group_show(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        cn = _key(args, "cn")
        self.d.require_group(cn)
        return {"result": self.d.group_entry(cn, opts), "value": cn, "summary": None}

    def group_find(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        criteria = _single(args[0]) if args else None
        entries = []
        for cn, group in sorted(self.d.groups.items()):
            if not _matches(criteria, cn, group["description"]):
                continue
            if opts.get("cn") and cn != str(opts["cn"]).lower():
                continue
            if opts.get("description") and group["description"] != opts["description"]:
                continue
            if opts.get("posix") and not group["posix"]:
                continue
            if opts.get("nonposix") and (group["posix"] or group["external"]):
                continue
            if opts.get("external") and not group["external"]:
                continue
            users = _names(opts.get("user"))
            if users and not all(u in group["member_user"] for u in users):
                continue
            groups = _names(opts.get("group"))
            if groups and not all(g in group["member_group"] for g in groups):
                continue
            entry = (
                {"cn": [cn], "dn": f"cn={cn},cn=groups,cn=accounts,{BASE_DN}"}
                if opts.get("pkey_only")
                else self.d.group_entry(cn, opts)
            )
            entries.append(entry)
        return _found(entries, "group", opts.get("sizelimit"))

    def group_mod(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        cn = _key(args, "cn")
        self.d.require_group(cn)
        group = self.d.groups[cn]
        before = json.dumps(group, sort_keys=True)
        if "description" in opts:
            group["description"] = opts["description"] or None
        if opts.get("gidnumber") is not None:
            group["gidnumber"] = int(opts["gidnumber"])
        if opts.get("posix") and not group["posix"]:
            group["posix"] = True
            if group["gidnumber"] is None:
                group["gidnumber"] = self.d._allocate_id()
        for option in ("setattr", "addattr"):
            for item in opts.get(option) or []:
                attr, _, value = str(item).partition("=")
                if attr.lower() == "description":
                    group["description"] = value
        new_name = opts.get("rename")
        if new_name and str(new_name).lower() != cn:
            new_name = str(new_name).lower()
            if new_name in self.d.groups:
                raise duplicate(new_name, "group")
            group["cn"] = new_name
            self.d.groups[new_name] = self.d.groups.pop(cn)
            for other in self.d.groups.values():
                other["member_group"] = [new_name if g == cn else g for g in other["member_group"]]
            cn = new_name
        if json.dumps(group, sort_keys=True) == before:
            raise empty_modlist()
        self.d.save()
        return {"result": self.d.group_entry(cn, opts), "value": cn, "summary": f'Modified group "{cn}"'}

    def group_del(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        names = _names(args[0] if args else None)
        if not names:
            raise IPAError(3007, "RequirementError", "'cn' is required", {"name": "cn"})
        failed: list[str] = []
        deleted: list[str] = []
        for cn in names:
            if cn not in self.d.groups:
                if opts.get("continue"):
                    failed.append(cn)
                    continue
                raise not_found(cn, "group")
            if cn in ("admins", "ipausers"):
                raise IPAError(
                    4307,
                    "ProtectedEntryError",
                    f"{cn} cannot be deleted or disabled because it is required by the system",
                    {"label": "group", "key": cn, "reason": "privileged group"},
                )
            del self.d.groups[cn]
            for other in self.d.groups.values():
                if cn in other["member_group"]:
                    other["member_group"].remove(cn)
            deleted.append(cn)
        self.d.save()
        summary = f'Deleted group "{",".join(deleted)}"'
        return {"result": {"failed": failed}, "value": deleted, "summary": summary}

    def _member_change(self, args: list[Any], opts: dict[str, Any], add: bool) -> dict[str, Any]:
        cn = _key(args, "cn")
        self.d.require_group(cn)
        group = self.d.groups[cn]
        completed = 0
        failed: dict[str, list[list[str]]] = {"user": [], "group": [], "service": [], "idoverrideuser": []}
        for kind, known in (("user", self.d.users), ("group", self.d.groups)):
            current = group[f"member_{kind}"]
            for name in _names(opts.get(kind)):
                if add and kind == "group" and name == cn:
                    failed[kind].append([name, "A group may not be added as a member of itself"])
                elif add and name not in known:
                    failed[kind].append([name, "no such entry"])
                elif add and name in current:
                    failed[kind].append([name, "This entry is already a member"])
                elif not add and name not in current:
                    failed[kind].append([name, "This entry is not a member"])
                elif add:
                    current.append(name)
                    completed += 1
                else:
                    current.remove(name)
                    completed += 1
        for kind in ("service", "idoverrideuser"):
            reason = "no such entry" if add else "This entry is not a member"
            failed[kind] = [[name, reason] for name in _names(opts.get(kind))]
        if completed:
            self.d.save()
        return {"completed": completed, "failed": {"member": failed}, "result": self.d.group_entry(cn, opts)}

    def group_add_member(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        return self._member_change(args, opts, add=True)

    def group_remove_member(self, args: list[Any], opts: dict[str, Any]) -> dict[str, Any]:
        return self._member_change(args, opts, add=False)


def _key(args: list[Any], name: str) -> str:
    if not args or args[0] in (None, "", []):
        raise IPAError(3007, "RequirementError", f"'{name}' is required", {"name": name})
    return str(_single(args[0])).strip().lower()


class Sessions:
    """Bearer-token sessions keyed by the `ipa_session` cookie value, with a fixed lifetime."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._by_token: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def create(self, principal: str) -> str:
        token = "MagBearerToken=" + secrets.token_urlsafe(48)
        with self._lock:
            self._by_token[token] = (principal, time.monotonic() + self.lifetime)
        return token

    def principal(self, token: str | None) -> str | None:
        with self._lock:
            entry = self._by_token.get(token or "")
            if entry is None or entry[1] < time.monotonic():
                self._by_token.pop(token or "", None)
                return None
            return entry[0]

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._by_token)
            self._by_token.clear()
        return count


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache"
    sys_version = ""
    directory: Directory
    sessions: Sessions
    commands: Commands

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        print(f"{self.address_string()} {format % args}", flush=True)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _cookie(self) -> str | None:
        jar = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        morsel = jar.get("ipa_session")
        return urllib.parse.unquote(morsel.value) if morsel else None

    def _unauthorized(self) -> None:
        body = b"<html><head><title>401 Unauthorized</title></head><body><h1>Unauthorized</h1></body></html>"
        self._send(401, body, "text/html; charset=iso-8859-1", {"WWW-Authenticate": "Negotiate"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib hook name
        path = urllib.parse.urlsplit(self.path).path
        body = self._body()
        if path == "/ipa/session/login_password":
            self._login(body)
        elif path == "/ipa/session/json":
            self._json(body)
        elif path == "/ipa/_test/expire_sessions":
            count = self.sessions.expire_all()
            self._send(200, json.dumps({"expired": count}).encode(), "application/json")
        else:
            self._send(404, b"Not Found", "text/plain")

    def do_GET(self) -> None:  # noqa: N802 - stdlib hook name
        self._send(404 if self.path != "/ipa/_test/health" else 200, b"", "text/plain")

    def _login(self, body: bytes) -> None:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        user = (form.get("user") or [""])[0].strip().lower()
        password = (form.get("password") or [""])[0]
        with self.directory.lock:
            account = self.directory.users.get(user)
            ok = bool(account and account.get("password") and secrets.compare_digest(account["password"], password))
        if not ok:
            self._send(
                401,
                b"Authentication failed: invalid password",
                "text/plain; charset=UTF-8",
                {"X-IPA-Rejection-Reason": "invalid-password"},
            )
            return
        token = self.sessions.create(f"{user}@{REALM}")
        cookie = f"ipa_session={urllib.parse.quote(token, safe='=')};path=/ipa;httponly;secure;"
        self._send(200, b"", "text/plain; charset=UTF-8", {"Set-Cookie": cookie})

    def _json(self, body: bytes) -> None:
        token = self._cookie()
        principal = self.sessions.principal(token)
        if principal is None:
            self._unauthorized()
            return
        request_id: Any = None
        headers: dict[str, str] = {}
        try:
            referer = self.headers.get("Referer", "")
            if not referer.startswith(f"https://{self.headers.get('Host', '')}/ipa"):
                # Real FreeIPA refuses JSON-RPC calls without its own /ipa URL as Referer (CSRF guard).
                reason = referer or "missing"
                raise IPAError(911, "RefererError", f"Missing or invalid HTTP Referer, {reason}", {"referer": reason})
            request = json.loads(body or b"{}")
            request_id = request.get("id")
            method = str(request.get("method", ""))
            params = request.get("params") or [[], {}]
            args = list(params[0]) if params else []
            opts = dict(params[1]) if len(params) > 1 else {}
            handler = getattr(self.commands, method, None) if method in OPTIONS else None
            if handler is None:
                raise IPAError(905, "CommandError", f"unknown command '{method}'", {"name": method})
            unknown = sorted(set(opts) - OPTIONS[method])
            if unknown:
                raise IPAError(3005, "OptionError", f"Unknown option: {unknown[0]}", {"option": unknown[0]})
            with self.directory.lock:
                result = handler(args, opts)
            if method == "session_logout":
                self.sessions.drop(token)
                headers["Set-Cookie"] = "ipa_session=;Max-Age=0;path=/ipa;httponly;secure;"
            envelope: dict[str, Any] = {"result": result, "error": None}
        except IPAError as error:
            envelope = {"result": None, "error": error.as_json()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            envelope = {
                "result": None,
                "error": IPAError(
                    3009, "ValidationError", f"invalid request: {error}", {"error": str(error)}
                ).as_json(),
            }
        envelope.update({"id": request_id, "principal": principal, "version": SERVER_VERSION})
        self._send(200, json.dumps(envelope).encode(), "application/json; charset=utf-8", headers)


class TLSServer(ThreadingHTTPServer):
    """Threaded HTTPS server whose TLS handshake runs in the connection's thread, not in accept()."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


def serve(
    port: int, cert: Path, key: Path, state: Path, admin_password: str | None, session_lifetime: float
) -> TLSServer:
    """Build the TLS server bound to 127.0.0.1 (not started)."""
    directory = Directory(state, admin_password)
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "directory": directory,
            "sessions": Sessions(session_lifetime),
            "commands": Commands(directory),
        },
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return TLSServer(("127.0.0.1", port), handler, context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="freeipa_server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="JSON state file (created if missing)")
    parser.add_argument(
        "--admin-password-file", type=Path, default=None, help="file holding the admin password (sets it in the state)"
    )
    parser.add_argument("--session-lifetime", type=float, default=SESSION_LIFETIME_S, help="seconds")
    args = parser.parse_args(argv)
    password = args.admin_password_file.read_text().strip() if args.admin_password_file else None
    server = serve(args.port, args.cert, args.key, args.state, password, args.session_lifetime)
    print(f"freeipa test server on https://127.0.0.1:{args.port}/ipa", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- the local-environment service (same mechanism as the other backends) ---------------------------


def freeipa_service(run: RunDir, *, session_lifetime: float = SESSION_LIFETIME_S) -> Service:
    """The test server as a `Service`: its own CA + loopback cert, a generated admin password."""
    root = run.path / "freeipa"
    root.mkdir(parents=True, exist_ok=True)
    pki = loopback_server_cert(root / "pki")
    password_file = root / "admin.password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(18))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    hack_dir = Path(__file__).resolve().parent.parent
    return Service(
        name="freeipa",
        argv=[
            sys.executable,
            "-m",
            "localenv.freeipa_server",
            f"--port={port}",
            f"--cert={pki['cert']}",
            f"--key={pki['key']}",
            f"--state={root / 'state.json'}",
            f"--admin-password-file={password_file}",
            f"--session-lifetime={session_lifetime}",
        ],
        env={"PYTHONPATH": str(hack_dir), "PYTHONUNBUFFERED": "1"},
        cwd=hack_dir,
        ready=lambda: _login_ok(url, pki["ca_cert"], "admin", password),
        facts={
            "url": url,
            "host": f"127.0.0.1:{port}",
            "ca_cert": pki["ca_cert"],
            "admin_user": "admin",
            "password": password,
            "realm": REALM,
            "expire_sessions_url": f"{url}/ipa/_test/expire_sessions",
        },
    )


def _login_ok(url: str, ca_cert: str, user: str, password: str) -> bool:
    """Ready = a verified TLS handshake and a successful password login."""
    context = ssl.create_default_context(cafile=ca_cert)
    data = urllib.parse.urlencode({"user": user, "password": password}).encode()
    request = urllib.request.Request(f"{url}/ipa/session/login_password", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.status == 200 and "ipa_session=" in (response.headers.get("Set-Cookie") or "")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_freeipa(run: RunDir, *, session_lifetime: float = SESSION_LIFETIME_S) -> dict[str, Any]:
    """Start the FreeIPA test server; return url, host, ca_cert, admin_user and password."""
    return dict(run.start(freeipa_service(run, session_lifetime=session_lifetime)))
