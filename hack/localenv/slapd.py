"""OpenLDAP slapd on loopback from a throwaway slapd.conf, with a small seeded directory.

Why: the operator reads people and groups from the hospital's LDAP; tests need a real server that
answers binds, searches and modifications with real result codes. slapd runs as whoever starts it
(root or not), keeps its MDB database under the run directory and stays in the foreground (`-d`).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from localenv.runtime import RunDir, Service, ServiceError, free_port

BASE_DN = "dc=enclave,dc=test"
BIND_DN = f"cn=admin,{BASE_DN}"
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
TEST_USERS = ("alice", "bob", "carol", "dave")
FIRST_UID = 10001


def _hash(password: str) -> str:
    result = subprocess.run(["slappasswd", "-s", password], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _conf(root: Path, password_hash: str) -> str:
    lines = [f"include {SCHEMA_DIR / f'{name}.schema'}" for name in SCHEMAS]
    lines += [
        f"pidfile {root / 'slapd.pid'}",
        f"argsfile {root / 'slapd.args'}",
        "modulepath /usr/lib/ldap",
        "moduleload back_mdb",
        "loglevel none",
        "database mdb",
        "maxsize 268435456",
        f'suffix "{BASE_DN}"',
        f'rootdn "{BIND_DN}"',
        f"rootpw {password_hash}",
        f"directory {root / 'data'}",
        "index objectClass eq",
        "index uid,cn,member,memberUid eq",
        "access to attrs=userPassword by self write by anonymous auth by * none",
        "access to * by * read",
        "",
    ]
    return "\n".join(lines)


def seed_ldif(user_password_hash: str) -> str:
    """The base entries plus the test users alice, bob, carol and dave and one group."""
    entries = [
        f"dn: {BASE_DN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Enclave Test\ndc: enclave",
        f"dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for offset, name in enumerate(TEST_USERS):
        uid = FIRST_UID + offset
        entries.append(
            "\n".join(
                [
                    f"dn: uid={name},ou=people,{BASE_DN}",
                    "objectClass: inetOrgPerson",
                    "objectClass: posixAccount",
                    f"uid: {name}",
                    f"cn: {name.capitalize()} Test",
                    f"givenName: {name.capitalize()}",
                    "sn: Test",
                    f"mail: {name}@enclave.test",
                    f"uidNumber: {uid}",
                    f"gidNumber: {uid}",
                    f"homeDirectory: /home/{name}",
                    "loginShell: /bin/bash",
                    f"userPassword: {user_password_hash}",
                ]
            )
        )
    entries.append(
        "\n".join(
            [
                f"dn: cn=researchers,ou=groups,{BASE_DN}",
                "objectClass: groupOfNames",
                "cn: researchers",
                f"member: uid=alice,ou=people,{BASE_DN}",
                f"member: uid=bob,ou=people,{BASE_DN}",
            ]
        )
    )
    return "\n\n".join(entries) + "\n"


def _prepare(run: RunDir) -> dict[str, str]:
    """Write slapd.conf and load the seed with slapadd, once per run directory."""
    root = run.path / "slapd"
    data = root / "data"
    secret_file = root / "passwords"
    if not (data / "data.mdb").exists():
        data.mkdir(parents=True, exist_ok=True)
        admin_password, user_password = secrets.token_urlsafe(18), secrets.token_urlsafe(12)
        conf = root / "slapd.conf"
        conf.write_text(_conf(root, _hash(admin_password)))
        conf.chmod(0o600)
        secret_file.write_text(f"{admin_password}\n{user_password}\n")
        secret_file.chmod(0o600)
        result = subprocess.run(
            ["slapadd", "-q", "-f", str(conf), "-b", BASE_DN],
            input=seed_ldif(_hash(user_password)),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise ServiceError(f"slapadd failed: {result.stderr.strip()}")
    admin_password, user_password = secret_file.read_text().split()
    return {"conf": str(root / "slapd.conf"), "password": admin_password, "user_password": user_password}


def _bind_ok(uri: str, password: str) -> bool:
    result = subprocess.run(
        ["ldapwhoami", "-x", "-H", uri, "-D", BIND_DN, "-w", password, "-o", "nettimeout=2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0


def slapd_service(run: RunDir) -> Service:
    for tool in ("slapd", "slapadd", "slappasswd", "ldapwhoami"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise ServiceError(f"{tool} not found; run `sudo hack/install-debian-packages.sh`")
    prepared = _prepare(run)
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}"
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    return Service(
        name="slapd",
        # -d keeps slapd in the foreground so the recorded PID is the server; level 0 keeps the log quiet.
        argv=[slapd, "-d", "0", "-f", prepared["conf"], "-h", f"{uri}/"],
        ready=lambda: _bind_ok(uri, prepared["password"]),
        facts={
            "uri": uri,
            "base_dn": BASE_DN,
            "bind_dn": BIND_DN,
            "password": prepared["password"],
            "people_dn": f"ou=people,{BASE_DN}",
            "groups_dn": f"ou=groups,{BASE_DN}",
            "users": list(TEST_USERS),
            "user_password": prepared["user_password"],
        },
    )


def start_slapd(run: RunDir) -> dict[str, Any]:
    """Start slapd (seeding it on first use); return uri, base_dn, bind_dn and password."""
    return run.start(slapd_service(run))
