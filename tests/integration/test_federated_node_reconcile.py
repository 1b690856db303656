"""The FederatedNode reconciler against the real API server (Node objects made here), two real MinIO endpoints
(store and backup target), the FreeIPA test server and slapd, real restic in backup Jobs (run by the stand-in
kubelet), and real sshd and DNS in network namespaces. Dates and times are passed explicitly, as the resync
timer would meet them."""

from __future__ import annotations

import datetime
import io
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Secret
from lightkube.resources.networking_v1 import NetworkPolicy

from enclave_operator import reasons
from enclave_operator.backends import identity_ldap, ownership, s3_minio
from enclave_operator.backends.identity_freeipa import FreeIpaClient, FreeIpaSettings
from enclave_operator.engine import status as status_io
from enclave_operator.federation import backup_job, profiles
from enclave_operator.ingest import job as ingest_job
from enclave_operator.reconcilers import federated_node
from enclave_operator.reconcilers.research_project import Backends
from localenv import nodehost
from localenv.runtime import RunDir
from localenv.slapd import slapd_service
from support.builders import NodeBuilder
from support.identity import ipa_admin, ipa_group, ldap_admin, ldap_values
from support.ingest import make_deid_key
from support.nodes import GPU_LABELS, SMT_SSD, Driver, backup_clients, make_node, may, settings_for
from support.s3users import client_for

PROFILES = profiles.load()
IPA_PASSWORD_ENV = "ENCLAVE_TEST_IPA_PASSWORD"
LDAP_PASSWORD_ENV = "ENCLAVE_TEST_LDAP_PASSWORD"
BACKUP_TIMEOUT = 180.0
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
async def node_name(crds: Any, kube: AsyncClient) -> AsyncIterator[str]:
    """A fresh node name; the FederatedNode object (made by the test's Driver) is removed afterwards."""
    name = f"n{secrets.token_hex(4)}"
    yield name
    try:
        await kube.delete(status_io.FederatedNodeResource, name)
    except ApiError:
        pass


@pytest.fixture
async def ipa(freeipa: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FreeIpaClient]:
    monkeypatch.setenv(IPA_PASSWORD_ENV, freeipa["password"])
    client = FreeIpaClient(FreeIpaSettings.model_validate({
        "url": freeipa["url"], "caFile": freeipa["ca_cert"], "username": freeipa["admin_user"],
        "passwordEnv": IPA_PASSWORD_ENV, "timeoutSeconds": 5,
    }))  # fmt: skip
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def backends(kube: AsyncClient, s3: s3_minio.S3Clients, ipa: FreeIpaClient,
             minio_backup: dict[str, Any]) -> Backends:  # fmt: skip
    return Backends(kube, s3, identity=ipa, backup_targets={"offsite": backup_clients(minio_backup)})


@pytest.fixture
async def nodes(kube: AsyncClient) -> AsyncIterator[list[str]]:
    """Names of the Node objects a test makes; removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        await kube.delete(Node, name)


def _ok(driver: Driver, *types: str) -> None:
    for type_ in types:
        cond = driver.condition(type_)
        assert cond.get("status") == "True", f"{type_}: {cond}"


@pytest.mark.timeout(900)  # four restic Jobs on a shared 2-core machine
async def test_a_measured_node_is_provisioned_backed_up_drilled_and_retired(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], minio_backup: dict[str, Any],
    backends: Backends, freeipa: dict[str, Any], restic_binary: Path, pod_runner: None, nodes: list[str],
    node_name: str,
) -> None:  # fmt: skip
    site = secrets.token_hex(4)
    for suffix, gpus in (("a", 2), ("b", 0)):
        nodes.append(f"{node_name}-{suffix}")
        await make_node(kube, nodes[-1], {"enclave.io/test-site": site, **SMT_SSD, **(GPU_LABELS if gpus else {})},
                        cpu="32", memory="128Gi", disk="1Ti", gpus=gpus)  # fmt: skip
    today = NOW.date()
    spec = (NodeBuilder(node_name).measured({"enclave.io/test-site": site}, cpu={"ghz": 2.6, "serverGrade": True},
                                            memory={"ecc": True})
            .integrator("alice", (today + datetime.timedelta(days=30)).isoformat())
            .credential_secrets("vpn-profile").deletion("Retain").spec())  # fmt: skip
    settings = settings_for(minio, minio_backup)
    driver = await Driver(backends, settings, PROFILES, node_name, spec).create()
    await driver.reconcile()
    ingest_ns, deid_key = settings.ingest.namespace, ingest_job.node_key_secret_name(node_name)
    assert driver.status["deidentificationKey"] == {"secret": f"{ingest_ns}/{deid_key}", "onDelete": "Kept"}
    await make_deid_key(kube, ingest_ns, deid_key)

    # Compliance from the Node objects: 64 threads → 32 cores, 256Gi, two Ampere GPUs with 24Gi.
    _ok(driver, reasons.COMPLIANT, reasons.LEGALLY_CLEARED, reasons.NAMESPACE_READY, reasons.STORAGE_READY,
        reasons.IDENTITY_READY, reasons.BACKUP_READY)  # fmt: skip
    assert driver.status["measured"]["nodes"] == sorted(nodes) and driver.status["measured"]["memory"] == "256Gi"
    assert (driver.line("memory")["source"], driver.line("memory")["observed"]) == ("Measured", "256Gi")
    assert driver.line("cpu")["observed"] == "32 cores at 2.6 GHz" and driver.line("cpu")["source"] == "Declared"
    assert driver.line("gpu.memory")["source"] == "Measured"
    assert driver.condition(reasons.REACHABLE)["reason"] == reasons.REASON_NEVER_SEEN

    # The store: namespace with exactly the guideline's network policies, the bucket and the platform credential.
    ns = f"fn-{node_name}"
    policies = sorted([p.metadata.name async for p in kube.list(NetworkPolicy, namespace=ns)])
    assert policies == ["fn-allow-dns", "fn-allow-federation", "fn-allow-ssh-from-integrators", "fn-default-deny"]
    secret = await kube.get(Secret, "node-s3", namespace=ns)
    app = client_for(minio, *(_b64(secret.data[k]) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")))
    data = secrets.token_bytes(50_000)
    app.put_object(f"fn-{node_name}", "cohort/1.dcm", io.BytesIO(data), len(data))

    # The integrator: in the identity group, may read the VPN Secret and nothing else there.
    assert ipa_group(ipa_admin(freeipa), f"fn-{node_name}-integrators")["member_user"] == ["alice"]
    assert await may(kube, "alice", "get", "secrets", ns, "vpn-profile")
    assert not await may(kube, "alice", "get", "secrets", ns, "node-s3")
    assert driver.status["integrators"] == [{"user": "alice", "expires": spec["integratorAccess"]["integrators"][0][
        "expires"], "state": "Active", "access": {"secrets": "Granted", "identity": "Member"}}]  # fmt: skip

    # The first backup was due at once; the stand-in kubelet runs its Job (restic into the second MinIO).
    assert driver.status["backup"]["running"].startswith("enclave-backup/backup-")
    assert driver.condition(reasons.BACKUP_CURRENT)["reason"] == reasons.REASON_BACKUP_RUNNING
    await driver.until(lambda s: "lastSuccess" in s["backup"] or "lastFailure" in s["backup"],
                       timeout=BACKUP_TIMEOUT, what="the first backup")  # fmt: skip
    first = driver.status["backup"]["lastSuccess"]
    assert len(first["snapshot"]) == 64 and driver.status["backup"]["runs"] == 1
    _ok(driver, reasons.BACKUP_CURRENT)
    assert ("Normal", reasons.EVENT_BACKED_UP) in {(t, r) for t, r, _ in driver.events}

    # Fifteen days later (the resync timer's view) the backup is overdue: BackupCurrent goes False and the next
    # one starts. It then runs, and is followed, in real time.
    await driver.reconcile(NOW + datetime.timedelta(days=15))
    overdue = driver.condition(reasons.BACKUP_CURRENT)
    assert (overdue["status"], overdue["reason"]) == ("False", reasons.REASON_BACKUP_OVERDUE), overdue
    assert driver.status["backup"]["running"].endswith("-2")
    await driver.until(lambda s: not s["backup"].get("running"), timeout=BACKUP_TIMEOUT, what="the second backup")
    second = driver.status["backup"]["lastSuccess"]
    assert second["snapshot"] != first["snapshot"] and second["objects"] == 1 and second["bytes"] == len(data)

    # A restore drill: the snapshot restored into the scratch bucket, byte for byte.
    app.put_object(f"fn-{node_name}", "cohort/1.dcm", io.BytesIO(b"changed since"), 13)
    await driver.change({**driver.spec, "backup": {**driver.spec["backup"], "restoreDrill": {"name": "q4"}}})
    await driver.until(lambda s: (s.get("restoreDrill") or {}).get("phase") in ("Passed", "Failed"),
                       timeout=BACKUP_TIMEOUT, what="the restore drill")  # fmt: skip
    drill = driver.status["restoreDrill"]
    assert (drill["phase"], drill["objects"], drill["mismatches"], drill["snapshot"]) == (
        "Passed", 1, 0, second["snapshot"]), drill  # fmt: skip
    assert s3.s3.get_object(f"fn-{node_name}-drill", "cohort/1.dcm").read() == data

    # The integrator's access ends the day after `expires`, without anyone touching the node.
    expired = NOW + datetime.timedelta(days=31)
    await driver.reconcile(expired)
    assert driver.status["integrators"][0]["state"] == "Expired"
    assert ipa_group(ipa_admin(freeipa), f"fn-{node_name}-integrators").get("member_user", []) == []
    assert not await may(kube, "alice", "get", "secrets", ns, "vpn-profile")
    assert ("Normal", reasons.EVENT_REVOKED_ACCESS) in {(t, r) for t, r, _ in driver.events}
    assert driver.line("integratorAccess")["result"] == "Warn"

    # Retirement under Retain: every access goes; the store, the backups and their key stay.
    assert (await driver.finalize(expired)).done
    assert s3.s3.get_object(f"fn-{node_name}", "cohort/1.dcm").read() == b"changed since"
    target = backup_clients(minio_backup)
    assert any(target.s3.list_objects(f"fn-{node_name}-backup", prefix="restic/"))
    assert await kube.get(Secret, backup_job.key_secret_name(node_name), namespace="enclave-backup")
    assert await kube.get(Secret, deid_key, namespace=ingest_ns), "Retain keeps the pseudonyms' key with the data"
    assert ("Normal", "RetainedDeidentificationKey") in {(t, r) for t, r, _ in driver.events}
    users = set(json.loads(s3.admin.user_list())) | set(json.loads(target.admin.user_list()))
    assert not {f"fn-{node_name}-app", backup_job.store_user(node_name), backup_job.target_user(node_name)} & users
    assert ipa_group(ipa_admin(freeipa), f"fn-{node_name}-integrators") is None
    assert not s3.s3.bucket_exists(f"fn-{node_name}-drill"), "the scratch bucket always goes"
    try:
        assert (await kube.get(Namespace, ns)).metadata.deletionTimestamp is not None
    except ApiError as gone:
        assert gone.status.code == 404

    # A new node of the same name does not take the retained store silently; with adopt it does.
    await _wait_gone(kube, ns)
    again = await Driver(backends, settings, PROFILES, node_name, {**spec, "deletionPolicy": "Delete"}).create()
    await again.reconcile()
    storage = again.condition(reasons.STORAGE_READY)
    assert (storage["reason"], again.condition(reasons.STALLED)["status"]) == (reasons.REASON_NOT_OWNED, "True")
    await again.change({**again.spec, "adopt": ["Bucket"]})
    await again.reconcile()
    _ok(again, reasons.STORAGE_READY, reasons.BACKUP_READY)
    assert again.status["backup"].get("running"), "the adopted repository gets the next backup"
    await again.until(lambda s: not s["backup"].get("running"), timeout=BACKUP_TIMEOUT, what="a backup")
    assert again.status["backup"]["lastSuccess"]["snapshot"], "the kept key still opens the kept repository"

    # Under Delete everything goes, the backups and their key too.
    assert (await again.finalize()).done
    assert not s3.s3.bucket_exists(f"fn-{node_name}") and not target.s3.bucket_exists(f"fn-{node_name}-backup")
    with pytest.raises(Exception, match="not found"):
        await kube.get(Secret, backup_job.key_secret_name(node_name), namespace="enclave-backup")
    assert again.status["deidentificationKey"]["onDelete"] == "Deleted"
    with pytest.raises(Exception, match="not found"):
        await kube.get(Secret, deid_key, namespace=ingest_ns)  # a later node of this name must not inherit it



def _b64(value: str) -> str:
    import base64

    return base64.b64decode(value).decode()


async def _wait_gone(kube: AsyncClient, namespace: str) -> None:
    import asyncio

    for _ in range(120):
        try:
            await kube.get(Namespace, namespace)
        except Exception:  # noqa: BLE001 - NotFound: gone
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"namespace {namespace} still there")


async def test_probes_follow_the_real_sshd_and_dns_server(
    backends: Backends, minio: dict[str, Any], minio_backup: dict[str, Any], node_host: Any, run_dir: RunDir,
    node_name: str,
) -> None:  # fmt: skip
    host = node_host(node_name)
    spec = NodeBuilder(node_name).endpoint(host["ip"], dnsQuery=host["dns_name"]).spec()
    settings = settings_for(minio, minio_backup, probeTimeoutSeconds=2)
    driver = await Driver(backends, settings, PROFILES, node_name, spec).create()
    await driver.probe()
    reach = driver.status["reachability"]
    assert reach["state"] == "Online" and "SSH-2.0-OpenSSH" in reach["ssh"]["detail"], reach
    assert reach["dns"]["detail"].startswith("53/UDP: answered "), "any answer proves the path (dnsmasq refuses SOA)"
    assert driver.condition(reasons.REACHABLE)["status"] == "True"

    nodehost.stop_part(run_dir, node_name, "sshd")
    await driver.probe()
    reach = driver.status["reachability"]
    assert (reach["state"], reach["ssh"]["ok"], reach["dns"]["ok"]) == ("Offline", False, True), reach
    assert "22/TCP: connection refused" in reach["lastError"] and reach["lastSeen"]
    cond = driver.condition(reasons.REACHABLE)
    assert (cond["status"], cond["reason"]) == ("False", reasons.REASON_OFFLINE)
    assert ("Warning", reasons.EVENT_NODE_OFFLINE) in {(t, r) for t, r, _ in driver.events}

    nodehost.start_part(run_dir, node_name, "sshd")
    await driver.probe()
    assert driver.status["reachability"]["state"] == "Online"


async def test_a_node_never_seen_stays_never_seen(backends: Backends, minio: dict[str, Any],
                                                  minio_backup: dict[str, Any], node_name: str) -> None:  # fmt: skip
    settings = settings_for(minio, minio_backup, probeTimeoutSeconds=1)
    driver = await Driver(backends, settings, PROFILES, node_name, NodeBuilder(node_name).spec()).create()
    await driver.probe()
    reach = driver.status["reachability"]
    assert (reach["state"], "lastSeen" in reach) == ("NeverSeen", False)
    cond = driver.condition(reasons.REACHABLE)
    assert (cond["status"], cond["reason"]) == ("False", reasons.REASON_NEVER_SEEN)


async def test_a_namespace_of_a_project_is_not_taken(
    kube: AsyncClient, backends: Backends, minio: dict[str, Any], minio_backup: dict[str, Any], node_name: str
) -> None:
    ns = f"fn-{node_name}"
    await kube.create(Namespace(metadata=ObjectMeta(name=ns, labels={ownership.OWNER_LABEL: "some-project"})))
    try:
        settings = settings_for(minio, minio_backup)
        found = await federated_node.collisions(node_name, "new", NodeBuilder(node_name).spec(), backends, settings,
                                                PROFILES, NOW.date())  # fmt: skip
        assert found == [f"namespace {ns} exists and belongs to project some-project; federated node {node_name} "
                         "does not write to it"]  # fmt: skip
        spec = NodeBuilder(node_name).deletion("Delete").spec()
        driver = await Driver(backends, settings, PROFILES, node_name, spec).create()
        await driver.reconcile()
        assert driver.condition(reasons.NAMESPACE_READY)["reason"] == reasons.REASON_NOT_OWNED
        assert driver.condition(reasons.STALLED)["status"] == "True"
        assert (await driver.finalize()).done, "retiring leaves the foreign namespace alone and does not hang"
        assert (await kube.get(Namespace, ns)).metadata.deletionTimestamp is None
    finally:
        await kube.delete(Namespace, ns)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda b: b.set("profile", "eucaim-9"), "spec.profile: unknown requirements profile 'eucaim-9'"),
        (lambda b: b.backup(target="tape"), "spec.backup.target: 'tape' is not a backup target"),
    ],
    ids=["unknown profile", "unknown backup target"],
)
async def test_an_unusable_spec_stalls_naming_the_field(backends: Backends, minio: dict[str, Any],
                                                       minio_backup: dict[str, Any], node_name: str, change: Any,
                                                       says: str) -> None:  # fmt: skip
    spec = change(NodeBuilder(node_name)).spec()
    driver = await Driver(backends, settings_for(minio, minio_backup), PROFILES, node_name, spec).create()
    await driver.reconcile()
    stalled = driver.condition(reasons.STALLED)
    assert stalled["status"] == "True" and stalled["message"].startswith(says), stalled
    assert driver.condition(reasons.READY)["status"] == "False"


# The integrators' group in a plain LDAP directory (slapd), the other identity backend.


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    run = RunDir(tmp_path_factory.mktemp("slapd-fed"))
    try:
        yield run.start(slapd_service(run))
    finally:
        run.stop_all()


async def test_integrators_in_ldap_come_and_go_with_their_dates(
    kube: AsyncClient, s3: s3_minio.S3Clients, minio: dict[str, Any], minio_backup: dict[str, Any],
    slapd: dict[str, Any], monkeypatch: pytest.MonkeyPatch, node_name: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(LDAP_PASSWORD_ENV, slapd["password"])
    ldap = identity_ldap.LdapClient(identity_ldap.LdapSettings.model_validate({
        "uri": slapd["uri"], "bindDn": slapd["bind_dn"], "passwordEnv": LDAP_PASSWORD_ENV,
        "groupsBaseDn": slapd["groups_dn"], "usersBaseDn": slapd["people_dn"], "timeoutSeconds": 3,
    }))  # fmt: skip
    backends = Backends(kube, s3, identity=ldap, backup_targets={"offsite": backup_clients(minio_backup)})
    today = NOW.date()
    spec = (NodeBuilder(node_name).integrator("bob", today.isoformat())
            .integrator("carol", (today + datetime.timedelta(days=3)).isoformat(), channels=("SSH",))
            .deletion("Delete").spec())  # fmt: skip
    driver = await Driver(backends, settings_for(minio, minio_backup), PROFILES, node_name, spec).create()
    try:
        await driver.reconcile()
        group_dn = f"cn=fn-{node_name}-integrators,{slapd['groups_dn']}"
        admin = ldap_admin(slapd)
        members = ldap_values(admin, group_dn, "member") or []
        assert sorted(m.split(",")[0] for m in members) == ["uid=bob", "uid=carol"]
        assert driver.line("integratorAccess")["result"] == "Pass"
        await driver.reconcile(NOW + datetime.timedelta(days=1))  # bob's last day has passed
        members = ldap_values(admin, group_dn, "member") or []
        assert [m.split(",")[0] for m in members] == ["uid=carol"]
        assert [r["state"] for r in driver.status["integrators"]] == ["Expired", "Active"]
        line = driver.line("integratorAccess")
        assert line["result"] == "Warn" and "no integrator has VPN access now" in line["message"]
    finally:
        assert (await driver.finalize()).done
        await ldap.close()
