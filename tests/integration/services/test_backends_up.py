"""The loopback backends start through their `start_*` function and work with the real clients.

A missing package makes `start_*` raise ServiceError naming hack/install-debian-packages.sh: these
tests fail then, they never skip.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from typing import Any

import pytest
import requests
from ldap3 import ALL_ATTRIBUTES, BASE, SUBTREE, Connection, Server
from pydicom import dcmread
from pydicom.data import get_testdata_file
from python_freeipa import ClientMeta

from integration.services.listeners import assert_loopback_only, listening_addresses
from localenv.freeipa_server import start_freeipa
from localenv.orthanc import start_orthanc
from localenv.runtime import RunDir, pid_alive
from localenv.slapd import start_slapd
from localenv.slurm import sacctmgr, start_slurm

pytestmark = pytest.mark.integration


def _timed(start: Any, run: RunDir) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    facts = start(run)
    return facts, time.monotonic() - began


def _assert_all_stopped(run: RunDir) -> None:
    pids = [int(entry["pid"]) for entry in run.load()["services"].values()]
    run.stop_all()
    assert not [pid for pid in pids if pid_alive(pid)], "a service survived RunDir.stop_all"


def test_slurm_accounting_with_gpu_tres(services_run: RunDir) -> None:
    facts, seconds = _timed(start_slurm, services_run)
    print(f"slurm (munged+mariadb+slurmdbd+slurmctld) ready in {seconds:.1f}s")
    assert_loopback_only(services_run)
    conf = facts["slurm_conf"]
    account = f"it{secrets.token_hex(3)}"

    added = sacctmgr(
        conf,
        "add",
        "account",
        account,
        "Description=integration",
        "Organization=enclave",
        f"Cluster={facts['cluster']}",
        "GrpTRES=gres/gpu=2",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    shown = sacctmgr(
        conf, "-n", "-P", "show", "assoc", "where", f"account={account}", "format=cluster,account,user,grptres"
    )
    assert shown.returncode == 0, shown.stderr
    assert f"{facts['cluster']}|{account}||gres/gpu=2" in shown.stdout.splitlines(), shown.stdout

    deleted = sacctmgr(conf, "delete", "account", account)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    gone = sacctmgr(conf, "-n", "-P", "show", "account", account, "format=account")
    assert gone.stdout.strip() == ""
    again = sacctmgr(conf, "delete", "account", account)
    assert again.returncode == 1, "sacctmgr 22.05 reports a missing delete with rc 1"

    ping = subprocess.run(
        ["scontrol", "ping"],
        env={**os.environ, **facts["env"]},
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert "UP" in ping.stdout, ping.stdout + ping.stderr
    _assert_all_stopped(services_run)


def test_slapd_bind_and_search(services_run: RunDir) -> None:
    facts, seconds = _timed(start_slapd, services_run)
    print(f"slapd ready in {seconds:.2f}s")
    assert_loopback_only(services_run)
    server = Server(facts["uri"], connect_timeout=5)
    with Connection(server, user=facts["bind_dn"], password=facts["password"], auto_bind=True) as admin:
        admin.search(facts["people_dn"], "(objectClass=inetOrgPerson)", SUBTREE, attributes=["uid", "uidNumber"])
        assert sorted(str(entry.uid) for entry in admin.entries) == ["alice", "bob", "carol", "dave"]
        admin.search(f"cn=researchers,{facts['groups_dn']}", "(objectClass=*)", BASE, attributes=ALL_ATTRIBUTES)
        assert len(admin.entries[0].member) == 2
        admin.add(f"cn=ldap3-group,{facts['groups_dn']}", "groupOfNames", {"member": f"uid=carol,{facts['people_dn']}"})
        assert admin.result["result"] == 0, admin.result
        admin.add(f"cn=ldap3-group,{facts['groups_dn']}", "groupOfNames", {"member": f"uid=carol,{facts['people_dn']}"})
        assert admin.result["result"] == 68, "entryAlreadyExists"
    with Connection(
        server, user=f"uid=dave,{facts['people_dn']}", password=facts["user_password"], auto_bind=True
    ) as dave:
        assert dave.extend.standard.who_am_i() == f"dn:uid=dave,{facts['people_dn']}"
    _assert_all_stopped(services_run)


def test_orthanc_dicomweb(services_run: RunDir) -> None:
    facts, seconds = _timed(start_orthanc, services_run)
    print(f"orthanc ready in {seconds:.2f}s")
    # Orthanc 1.10 has no bind address: it listens on every interface and refuses non-loopback
    # clients itself (RemoteAccessAllowed: false). Everything else must stay on 127.0.0.1.
    orthanc_pid = int(services_run.load()["services"]["orthanc"]["pid"])
    assert listening_addresses(orthanc_pid) == {"0.0.0.0"}, "Orthanc learnt to bind loopback: use it"
    config = json.loads((services_run.path / "orthanc" / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False
    auth = (facts["username"], facts["password"])
    path = get_testdata_file("CT_small.dcm")
    assert path is not None, "pydicom's bundled CT_small.dcm is missing"
    with open(path, "rb") as handle:
        stored = requests.post(
            f"{facts['url']}/instances",
            data=handle.read(),
            auth=auth,
            timeout=30,
            headers={"Content-Type": "application/dicom"},
        )
    assert stored.status_code == 200 and stored.json()["Status"] == "Success", stored.text

    studies = requests.get(
        f"{facts['dicomweb_root']}/studies", auth=auth, timeout=30, headers={"Accept": "application/dicom+json"}
    )
    assert studies.status_code == 200, studies.text
    uids = [study["0020000D"]["Value"][0] for study in studies.json()]
    assert uids == [str(dcmread(path).StudyInstanceUID)]
    assert requests.get(f"{facts['dicomweb_root']}/studies", timeout=10).status_code == 401
    _assert_all_stopped(services_run)


def test_freeipa_login_and_group_add(services_run: RunDir) -> None:
    facts, seconds = _timed(start_freeipa, services_run)
    print(f"freeipa test server ready in {seconds:.2f}s")
    assert_loopback_only(services_run)
    client = ClientMeta(host=facts["host"], verify_ssl=facts["ca_cert"], dns_discovery=False)
    client.login(facts["admin_user"], facts["password"])
    added = client.group_add("it-researchers", o_description="integration")
    assert added["result"]["cn"] == ["it-researchers"]
    assert client.group_show("it-researchers")["result"]["description"] == ["integration"]
    _assert_all_stopped(services_run)
