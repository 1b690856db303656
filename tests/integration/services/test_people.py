"""`python hack/localenv add-user NAME…`: a person added to the local environment exists in every
identity backend that runs and in MinIO, so one's own ResearchProject manifests can name them (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys

import ldap3
import pytest
from minio.credentials import StaticProvider
from minio.minioadmin import MinioAdmin
from python_freeipa import ClientMeta

from localenv import environment
from localenv.freeipa_server import start_freeipa
from localenv.minio import start_minio
from localenv.people import PEOPLE_FILE
from localenv.runtime import REPO_ROOT, RunDir
from localenv.slapd import start_slapd

pytestmark = pytest.mark.integration


def _add_user(run: RunDir, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO_ROOT / "hack" / "localenv"), "--run-dir", str(run.path),
                           "add-user", *names], capture_output=True, text=True, timeout=120)  # fmt: skip


def test_add_user_reaches_freeipa_ldap_and_minio(services_run: RunDir) -> None:
    environment.build(["minio", "slapd"])
    minio, ipa, ldap = start_minio(services_run), start_freeipa(services_run), start_slapd(services_run)

    first = _add_user(services_run, "erin", "frank")
    assert first.returncode == 0, first.stderr
    assert "added to freeipa: erin, frank" in first.stdout and "added to minio: erin, frank" in first.stdout
    secrets_before = json.loads((services_run.path / PEOPLE_FILE).read_text())
    assert oct((services_run.path / PEOPLE_FILE).stat().st_mode & 0o777) == "0o600"

    again = _add_user(services_run, "erin")  # idempotent: same person, same secret
    assert again.returncode == 0, again.stderr
    assert json.loads((services_run.path / PEOPLE_FILE).read_text()) == secrets_before

    ipa_admin = ClientMeta(host=ipa["host"], verify_ssl=ipa["ca_cert"], dns_discovery=False)
    ipa_admin.login(ipa["admin_user"], ipa["password"])
    assert ipa_admin.user_show(a_uid="erin")["result"]["uid"] == ["erin"]

    with ldap3.Connection(ldap3.Server(ldap["uri"]), ldap["bind_dn"], ldap["password"], auto_bind=True) as conn:
        conn.search(ldap["people_dn"], "(uid=frank)", attributes=["uidNumber"])
        assert len(conn.entries) == 1

    admin = MinioAdmin(endpoint=minio["endpoint"], credentials=StaticProvider(minio["access_key"],
                       minio["secret_key"]), secure=False)  # fmt: skip
    assert json.loads(admin.user_info("frank"))["status"] == "enabled"


def test_add_user_refuses_names_members_cannot_have(services_run: RunDir) -> None:
    environment.build(["minio"])
    start_minio(services_run)
    result = _add_user(services_run, "Erin Smith")
    assert result.returncode == 1 and "'Erin Smith' is not a valid username" in result.stderr


def test_add_user_says_how_to_start_the_environment(services_run: RunDir) -> None:
    result = _add_user(services_run, "erin")
    assert result.returncode == 1 and "MinIO is not running" in result.stderr and "make demo" in result.stderr
