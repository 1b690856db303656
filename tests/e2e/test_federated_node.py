"""FederatedNode end to end: `kubectl apply` against the running operator, with the node's host a network
namespace holding a real sshd and a real DNS server, backups by real restic Jobs (run by the stand-in kubelet)
into a second MinIO, and data from the hospital PACS through a DataIngest into the node's store."""

from __future__ import annotations

import base64
import datetime
import io
import json
import secrets
import time
from typing import Any

import pytest
import yaml

from enclave_operator import reasons
from localenv import nodehost
from localenv.runtime import RunDir
from minio import Minio
from support import timeouts
from support.builders import NodeBuilder
from support.cluster import Cluster
from support.gitops import assert_health
from support.operator import OperatorProcess
from support.projects import condition, events_for, wait_gone
from support.wait import wait_for


@pytest.fixture
def node_name() -> str:
    return f"n{secrets.token_hex(4)}"


def _node(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.get_json("federatednode", name) or {}


def _status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(_node(cluster, name).get("status") or {})


def _wait_condition(cluster: Cluster, name: str, type_: str, status: str, timeout: float) -> dict[str, Any]:
    """Poll as `kubectl wait --for=condition=...` does (a long wait outlives kubectl's own call timeout)."""
    return wait_for(lambda: (obj := _node(cluster, name)) and (condition(obj, type_) or {}).get("status") == status
                    and obj, timeout=timeout, what=f"{name} {type_}={status}")  # fmt: skip


def _store_client(cluster: Cluster, operator: OperatorProcess, name: str) -> Minio:
    """The node's platform components' view of the store: the credential Secret in the node's namespace."""
    data = (cluster.get_json("secret", "node-s3", "-n", f"fn-{name}") or {})["data"]
    key, secret = (base64.b64decode(data[k]).decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    return Minio(operator.minio["endpoint"], access_key=key, secret_key=secret, secure=False)


def _delete(cluster: Cluster, name: str) -> None:
    cluster.run("delete", "federatednode", name, "--wait=false", check=False)
    wait_gone(cluster, "federatednode", name, timeout=timeouts.DELETE)


def test_a_compliant_node_becomes_ready_is_backed_up_restores_byte_identical_and_goes_offline(
    crds: Cluster, operator: OperatorProcess, pod_runner: None, node_host: Any, run_dir: RunDir, node_name: str
) -> None:
    host = node_host(node_name)
    node = NodeBuilder(node_name).endpoint(host["ip"], dnsQuery=host["dns_name"]).deletion("Delete")
    node.integrator("alice", (datetime.date.today() + datetime.timedelta(days=30)).isoformat())
    crds.apply(yaml.safe_dump(node.obj()))
    try:
        obj = _wait_condition(crds, node_name, "Ready", "True", timeouts.BACKUP)
        assert_health(obj, "Healthy", "Current")  # Argo CD's Lua check and Flux's kstatus on the live object
        status = obj["status"]
        assert status["reachability"]["state"] == "Online"
        assert status["compliance"]["failed"] == 0 and status["backup"]["lastSuccess"]["snapshot"]

        # What the platform team sees at a glance.
        table = crds.run("get", "federatednodes", node_name).stdout.splitlines()
        assert table[0].split() == ["NAME", "PROFILE", "COMPLIANT", "REACHABLE", "LAST-BACKUP", "AGE"]
        assert table[1].split()[:4] == [node_name, "incisive-2023", "True", "Online"]

        # A file in the store, a backup asked for now, a restore drill: the file comes back byte for byte.
        store = _store_client(crds, operator, node_name)
        data = secrets.token_bytes(200_000)
        store.put_object(f"fn-{node_name}", "site/cohort-7/study.dcm", io.BytesIO(data), len(data))
        first = status["backup"]["lastSuccess"]["snapshot"]
        crds.run("annotate", "federatednode", node_name, f"enclave.io/backup-requested={time.time()}", "--overwrite")
        wait_for(lambda: (_status(crds, node_name).get("backup", {}).get("lastSuccess") or {}).get("snapshot")
                 not in (None, first), timeout=timeouts.BACKUP, what="the requested backup")  # fmt: skip
        backup = _status(crds, node_name)["backup"]["lastSuccess"]
        assert (backup["objects"], backup["bytes"]) == (1, len(data))
        store.put_object(f"fn-{node_name}", "site/cohort-7/study.dcm", io.BytesIO(b"overwritten"), 11)
        crds.run("patch", "federatednode", node_name, "--type=merge", "-p",
                 json.dumps({"spec": {"backup": {"restoreDrill": {"name": "drill-1"}}}}))  # fmt: skip
        wait_for(lambda: (_status(crds, node_name).get("restoreDrill") or {}).get("phase") in ("Passed", "Failed"),
                 timeout=timeouts.BACKUP, what="the restore drill")  # fmt: skip
        drill = _status(crds, node_name)["restoreDrill"]
        assert (drill["phase"], drill["mismatches"], drill["snapshot"]) == ("Passed", 0, backup["snapshot"]), drill
        admin = Minio(operator.minio["endpoint"], access_key=operator.minio["access_key"],
                      secret_key=operator.minio["secret_key"], secure=False)  # fmt: skip
        assert admin.get_object(f"fn-{node_name}-drill", "site/cohort-7/study.dcm").read() == data

        # Stopping the node's sshd turns it Offline within the probe interval: the probe round that records it ran
        # at most one interval (plus the round before it) after the stop; kubectl sees it after the status write.
        stopped, stopped_at = time.monotonic(), datetime.datetime.now(datetime.UTC)
        nodehost.stop_part(run_dir, node_name, "sshd")
        wait_for(lambda: _status(crds, node_name)["reachability"]["state"] == "Offline", timeout=timeouts.OFFLINE,
                 what="Offline", interval=0.1)  # fmt: skip
        took = time.monotonic() - stopped
        status = _status(crds, node_name)
        probed = datetime.datetime.fromisoformat(status["reachability"]["lastProbe"].replace("Z", "+00:00"))
        detected = (probed - stopped_at).total_seconds()  # lastProbe is whole seconds: at most 1 s early
        print(f"\nOffline recorded by the probe round {detected:.0f}s after sshd stopped, seen by kubectl after "
              f"{took:.1f}s (probe interval {timeouts.PROBE_INTERVAL}s)")
        assert detected <= timeouts.OFFLINE_PROBE, f"the Offline round ran {detected:.0f}s after the stop"
        assert "22/TCP: connection refused" in status["reachability"]["lastError"]
        reachable = condition(_node(crds, node_name), reasons.REACHABLE)
        assert reachable and (reachable["status"], reachable["reason"]) == ("False", reasons.REASON_OFFLINE)
        assert condition(_node(crds, node_name), reasons.READY)["status"] == "False"
        assert_health(_node(crds, node_name), "Degraded", "InProgress")
        described = crds.run("describe", "federatednode", node_name).stdout
        assert "CannotReachNode" in described and "connection refused" in described
        assert ("Warning", "CannotReachNode") in {(t, r) for t, r, _ in events_for(crds, node_name)}
        assert f'enclave_federated_node_condition{{condition="Reachable",node="{node_name}"}} 0.0' in operator.metrics()
    finally:
        _delete(crds, node_name)
    assert crds.get_json("namespace", f"fn-{node_name}") is None or crds.get_json(
        "namespace", f"fn-{node_name}")["metadata"].get("deletionTimestamp")  # fmt: skip


def test_32gi_of_ram_and_a_us_host_without_tia_show_exactly_those_two_failures(
    crds: Cluster, operator: OperatorProcess, node_host: Any, node_name: str
) -> None:
    host = node_host(node_name)
    node = NodeBuilder(node_name).memory("32Gi").hosted("US", scc=True).endpoint(host["ip"]).deletion("Delete")
    crds.apply(yaml.safe_dump(node.obj()))
    try:
        wait_for(lambda: next((line["result"] for line in _status(crds, node_name).get("requirements", [])
                               if line["id"] == "network.ports"), None) == "Pass",
                 timeout=timeouts.READY, what="the probes to show 22/TCP and 53/UDP open")  # fmt: skip
        obj = _node(crds, node_name)
        failed = {line["id"]: line for line in obj["status"]["requirements"] if line["result"] == "Fail"}
        assert sorted(failed) == ["legal.tia", "memory"], failed
        assert failed["memory"]["observed"] == "32Gi" and failed["memory"]["source"] == "Declared"
        assert condition(obj, reasons.LEGALLY_CLEARED)["status"] == "False"
        described = crds.run("describe", "federatednode", node_name).stdout
        assert "32Gi is below the minimum 64Gi" in described
        assert "needs a Transfer Impact Assessment; none is recorded" in described
        wide = crds.run("get", "federatednode", node_name, "-o", "wide").stdout.splitlines()
        assert wide[1].split()[2] == "False" and "LEGALLY-CLEARED" in wide[0]
    finally:
        _delete(crds, node_name)


def test_a_data_ingest_delivers_only_verified_data_into_a_nodes_store(
    ingest_platform: Cluster, operator: OperatorProcess, node_name: str
) -> None:
    cluster = ingest_platform
    cluster.apply(yaml.safe_dump(NodeBuilder(node_name).deletion("Delete").obj()))
    ingest = {
        "apiVersion": "enclave.io/v1alpha1",
        "kind": "DataIngest",
        "metadata": {"name": "ct-for-federation", "namespace": f"fn-{node_name}"},
        "spec": {"federatedNode": node_name, "source": {"name": "open-pacs", "dicomweb": {}},
                 "destination": {"prefix": "incoming/ct/"}, "parallelism": 2},
    }  # fmt: skip
    try:
        _wait_condition(cluster, node_name, reasons.STORAGE_READY, "True", timeouts.READY)
        cluster.apply(yaml.safe_dump(ingest))
        wait_for(lambda: ((cluster.get_json("dataingest", "ct-for-federation", "-n", f"fn-{node_name}") or {})
                          .get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                 timeout=timeouts.BACKUP, what="the ingest into the node")  # fmt: skip
        done = cluster.get_json("dataingest", "ct-for-federation", "-n", f"fn-{node_name}") or {}
        status = done["status"]
        assert status["phase"] == "Succeeded", status
        assert status["progress"]["quarantined"] >= 1, "the secondary capture is withheld, not delivered"
        assert status["manifest"] == f"s3://fn-{node_name}/incoming/ct/_manifest.json"
        admin = Minio(operator.minio["endpoint"], access_key=operator.minio["access_key"],
                      secret_key=operator.minio["secret_key"], secure=False)  # fmt: skip
        keys = {o.object_name for o in admin.list_objects(f"fn-{node_name}", prefix="incoming/ct/", recursive=True)}
        manifest = json.loads(admin.get_object(f"fn-{node_name}", "incoming/ct/_manifest.json").read())
        assert {o["path"] for o in manifest["outputs"]} <= keys and manifest["outputs"]
        listed = cluster.run("get", "dataingests", "-n", f"fn-{node_name}").stdout.splitlines()
        assert listed[0].split()[:3] == ["NAME", "PROJECT", "NODE"] and node_name in listed[1]
    finally:
        cluster.run("delete", "dataingest", "ct-for-federation", "-n", f"fn-{node_name}", check=False)
        _delete(cluster, node_name)


def test_the_webhook_refuses_an_unknown_profile_and_access_without_end(crds: Cluster, operator: OperatorProcess,
                                                                      node_name: str) -> None:  # fmt: skip
    bad = NodeBuilder(node_name).set("profile", "eucaim-tier9").obj()
    result = crds.run("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0 and "spec.profile: unknown requirements profile 'eucaim-tier9'" in result.stderr
    forever = NodeBuilder(node_name).integrator("alice", "2099-01-01").obj()
    result = crds.run("apply", "-f", "-", input=yaml.safe_dump(forever), check=False)
    assert result.returncode != 0 and "spec.integratorAccess.integrators[0].expires: 2099-01-01" in result.stderr
    missing = NodeBuilder(node_name).network(access="StaticIP").obj()
    result = crds.run("apply", "-f", "-", input=yaml.safe_dump(missing), check=False)
    assert result.returncode != 0 and "network.publicIP is required" in result.stderr
    assert crds.get_json("federatednode", node_name) is None
