"""People of the local environment: researchers as the hospital's identity provider and its S3 sync
would know them, added to every identity backend that runs (FreeIPA test server, slapd) and to MinIO.

Why: a ResearchProject's members must exist in the directory (else `IdentityReady=False
MembersMissing`) and as MinIO users (else `storage: NoAccount`). The demo adds alice, bob, carol and
dave; `python hack/localenv add-user NAME…` (or `make add-user USERS="…"`) adds anyone else, so a
platform engineer can try their own manifests. Idempotent: adding someone twice changes nothing, and
their MinIO secret stays the one recorded in `<run dir>/people.json` (mode 600).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from localenv.runtime import RunDir, ServiceError

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
"""The usernames ResearchProject members may have (lowercase; FreeIPA, LDAP and Slurm accept them)."""
PEOPLE_FILE = "people.json"
FIRST_LDAP_UID = 20_000


def _check(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        if not USERNAME.match(name):
            raise ServiceError(f"{name!r} is not a valid username (lowercase letter or '_' first, then a-z 0-9 _ . -)")
        out.append(name)
    if not out:
        raise ServiceError("name at least one person to add")
    return out


def _add_freeipa(facts: dict[str, Any], names: list[str]) -> None:
    from python_freeipa import ClientMeta
    from python_freeipa.exceptions import DuplicateEntry

    admin = ClientMeta(host=facts["host"], verify_ssl=facts["ca_cert"], dns_discovery=False)
    admin.login(facts["admin_user"], facts["password"])
    for name in names:
        try:
            admin.user_add(name, o_givenname=name.capitalize(), o_sn="Researcher", o_cn=f"{name.capitalize()} R")
        except DuplicateEntry:
            pass


def _add_ldap(facts: dict[str, Any], names: list[str]) -> None:
    import ldap3

    server = ldap3.Server(facts["uri"], connect_timeout=5)
    with ldap3.Connection(server, facts["bind_dn"], facts["password"], auto_bind=True, receive_timeout=10) as conn:
        conn.search(facts["people_dn"], "(objectClass=posixAccount)", attributes=["uid", "uidNumber"])
        have = {str(e.uid) for e in conn.entries}
        next_uid = max([FIRST_LDAP_UID - 1, *(int(str(e.uidNumber)) for e in conn.entries)]) + 1
        for name in names:
            if name in have:
                continue
            attributes = {
                "uid": name, "cn": f"{name.capitalize()} Researcher", "givenName": name.capitalize(),
                "sn": "Researcher", "mail": f"{name}@enclave.test", "uidNumber": next_uid, "gidNumber": next_uid,
                "homeDirectory": f"/home/{name}", "loginShell": "/bin/bash",
            }  # fmt: skip
            if not conn.add(f"uid={name},{facts['people_dn']}", ["inetOrgPerson", "posixAccount"], attributes):
                raise ServiceError(f"slapd refused to add {name}: {conn.result.get('description')}")
            next_uid += 1


def _add_minio(facts: dict[str, Any], secrets_by_name: dict[str, str], names: list[str]) -> None:
    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    admin = MinioAdmin(endpoint=facts["endpoint"], credentials=StaticProvider(facts["access_key"],
                       facts["secret_key"]), secure=False)  # fmt: skip
    for name in names:
        admin.user_add(name, secrets_by_name[name])


def add_people(run: RunDir, names: Iterable[str]) -> dict[str, list[str]]:
    """Add `names` to every running identity backend and to MinIO; return backend → names added there.

    MinIO must run (project members need an S3 account); FreeIPA and slapd are served when running.
    """
    wanted = _check(names)
    if not run.running("minio"):
        raise ServiceError(f"MinIO is not running in {run.path}; start the environment first (make demo / make up)")
    people_file = run.path / PEOPLE_FILE
    known: dict[str, str] = json.loads(people_file.read_text()) if people_file.exists() else {}
    for name in wanted:
        known.setdefault(name, secrets.token_urlsafe(18))
    people_file.write_text(json.dumps(known, indent=2, sort_keys=True))
    people_file.chmod(0o600)
    done: dict[str, list[str]] = {}
    if run.running("freeipa"):
        _add_freeipa(run.facts("freeipa"), wanted)
        done["freeipa"] = wanted
    if run.running("slapd"):
        _add_ldap(run.facts("slapd"), wanted)
        done["ldap"] = wanted
    _add_minio(run.facts("minio"), known, wanted)
    done["minio"] = wanted
    return done
