"""Pure parts of FederatedNode backups: the schedule, BackupCurrent, Job names and manifests, the key ⇄ path
mapping of the staging tree, the reachability state, and the node webhook's rules."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from enclave_operator import admission, reasons
from enclave_operator.federation import backup_job, backup_worker, profiles, reachability
from enclave_operator.federation.reachability import ProbeResult
from enclave_operator.reconcilers import federated_node
from enclave_operator.settings import BackupTargetSettings, parse
from support.builders import NodeBuilder

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
INTERVAL = 14 * DAY
RETRY = datetime.timedelta(hours=1)


def _at(delta: datetime.timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("backup", "due", "why"),
    [
        ({}, NOW, "never backed up: due now"),
        ({"lastSuccess": {"time": _at(-3 * DAY)}}, NOW + 11 * DAY, "interval after the last success"),
        ({"lastSuccess": {"time": _at(-20 * DAY)}}, NOW - 6 * DAY, "overdue: due in the past, i.e. now"),
        ({"lastFailure": {"time": _at(-datetime.timedelta(minutes=10))}}, NOW + datetime.timedelta(minutes=50),
         "a failure delays the next attempt by the retry interval"),
        ({"lastSuccess": {"time": _at(-20 * DAY)}, "lastFailure": {"time": _at(-datetime.timedelta(minutes=10))}},
         NOW + datetime.timedelta(minutes=50), "an overdue node still waits out the retry after a failure"),
        ({"lastSuccess": {"time": _at(-DAY)}, "lastFailure": {"time": _at(-2 * DAY)}}, NOW + 13 * DAY,
         "a failure before the last success does not matter"),
    ],
)
def test_next_due(backup: dict[str, Any], due: datetime.datetime, why: str) -> None:
    assert backup_job.next_due(backup, INTERVAL, RETRY, NOW) == due, why


@pytest.mark.parametrize(
    ("backup", "running", "status", "reason"),
    [
        ({}, False, "False", reasons.REASON_NEVER_BACKED_UP),
        ({}, True, "False", reasons.REASON_BACKUP_RUNNING),
        ({"lastFailure": {"time": _at(-DAY), "message": "S3 AccessDenied"}}, False, "False",
         reasons.REASON_BACKUP_FAILED),
        ({"lastSuccess": {"time": _at(-13 * DAY), "snapshot": "ab" * 32, "objects": 3, "bytes": 10}}, False, "True",
         reasons.REASON_BACKUP_RECENT),
        ({"lastSuccess": {"time": _at(-15 * DAY), "snapshot": "ab" * 32}}, True, "False",
         reasons.REASON_BACKUP_OVERDUE),
    ],
    ids=["never", "first running", "first failed", "recent", "overdue while the next runs"],
)
def test_backup_current(backup: dict[str, Any], running: bool, status: str, reason: str) -> None:
    cond = federated_node.backup_condition(backup, INTERVAL, NOW, running)
    assert (cond.type, cond.status, cond.reason) == (reasons.BACKUP_CURRENT, status, reason)
    if "lastFailure" in backup:
        assert "S3 AccessDenied" in cond.message


def test_job_names_are_stable_short_and_distinct_per_incarnation() -> None:
    node = "n" * 40
    name = backup_job.backup_job_name(node, "uid-1", 999999)
    assert name == backup_job.backup_job_name(node, "uid-1", 999999) and len(name) <= 63
    assert name != backup_job.backup_job_name(node, "uid-2", 999999), "a new node of the same name gets new Jobs"
    assert len(backup_job.drill_job_name(node, "uid-1", "d" * 63)) <= 63


def test_job_manifest_carries_no_secret_value() -> None:
    settings = parse({"s3": {"endpoint": "minio:9000"}})
    target = BackupTargetSettings(name="offsite", endpoint="backup:9000", worker_endpoint="backup.svc:9000")
    worker = backup_job.worker_spec(mode="backup", node="n1", job="backup-n1-abcde-1", store_endpoint="minio:9000",
                                    store_secure=True, bucket="fn-n1", target=target, target_bucket="fn-n1-backup",
                                    keep=26)  # fmt: skip
    job = backup_job.job_manifest(name="backup-n1-abcde-1", node="n1", labels={"enclave.io/federated-node": "n1"},
                                  worker=worker, settings=settings.federation)  # fmt: skip
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert set(plain) == {"BACKUP_SPEC", "SCRATCH_DIR", "TMPDIR"}
    assert from_secrets == {"SOURCE_ACCESS_KEY_ID": "fn-n1-store-s3", "SOURCE_SECRET_ACCESS_KEY": "fn-n1-store-s3",
                            "AWS_ACCESS_KEY_ID": "fn-n1-target-s3", "AWS_SECRET_ACCESS_KEY": "fn-n1-target-s3",
                            "RESTIC_PASSWORD": "fn-n1-restic"}  # fmt: skip
    spec = json.loads(plain["BACKUP_SPEC"])
    assert spec["target"]["repository"] == "s3:https://backup.svc:9000/fn-n1-backup/restic", "as the Job reaches it"
    assert pod["automountServiceAccountToken"] is False and container["securityContext"]["readOnlyRootFilesystem"]
    assert job["metadata"]["namespace"] == "enclave-backup" and job["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize(
    "key",
    ["a/b/c.dcm", "with space é.txt", "../escape", "a/./b", "folder/", "//double", "%2E", "%", "a/%/b", "."],
)
def test_staging_paths_stay_inside_and_map_back(key: str) -> None:
    path = backup_worker.key_to_path(key)
    assert backup_worker.path_to_key(path) == key
    assert all(part not in ("", ".", "..") for part in path.split("/")), path


def test_staging_paths_are_injective() -> None:
    keys = ["a b", "a%20b", "%", "%25", ".", "%2E", "..", "%2E%2E", "", "x/", "x/%"]
    assert len({backup_worker.key_to_path(k) for k in keys}) == len(keys)


# Reachability state (the probes themselves run against real servers in the integration tests).

UP = ProbeResult(True, "ok", 0.01)
DOWN = ProbeResult(False, "22/TCP: connection refused", 0.01)


def test_reachability_states() -> None:
    never = reachability.record(None, DOWN, UP, NOW)
    assert never["state"] == "NeverSeen" and "lastSeen" not in never and never["dns"]["lastSuccess"]
    online = reachability.record(never, UP, UP, NOW + DAY)
    assert (online["state"], online["lastSeen"]) == ("Online", _at(DAY))
    offline = reachability.record(online, DOWN, UP, NOW + 2 * DAY)
    assert (offline["state"], offline["lastSeen"], offline["lastError"]) == (
        "Offline", _at(DAY), "22/TCP: connection refused")  # fmt: skip
    assert offline["ssh"] == {"ok": False, "detail": "22/TCP: connection refused", "lastSuccess": _at(DAY)}


# The node webhook (admission.review_node).

PROFILES = profiles.load()
TODAY = NOW.date()
SETTINGS = parse({"s3": {"endpoint": "minio:9000"},
                  "federation": {"backupTargets": [{"name": "offsite", "endpoint": "backup:9000"}]}})  # fmt: skip


def _review(new: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    admission.review_node(operation="UPDATE" if old else "CREATE", old=old, new=new, settings=SETTINGS,
                          profiles=PROFILES, today=TODAY)  # fmt: skip


def _in(days: int) -> str:
    return (TODAY + datetime.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("node", "says"),
    [
        (NodeBuilder("n").set("profile", "eucaim-9"), "spec.profile: unknown requirements profile 'eucaim-9'"),
        (NodeBuilder("n").backup(target="tape"), "spec.backup.target: 'tape' is not a backup target"),
        (NodeBuilder("n").integrator("ivan", _in(-1)), "spec.integratorAccess.integrators[0].expires: "),
        (NodeBuilder("n").integrator("ivan", _in(30)).integrator("jo", _in(91)),
         "spec.integratorAccess.integrators[1].expires: " + _in(91) + " is more than 90 days away"),
        (NodeBuilder("system"), "metadata.name: namespace fn-system"),
    ],
    ids=["unknown profile", "unknown target", "access already over", "access for too long", "reserved namespace"],
)
def test_the_webhook_refuses_naming_the_field(node: NodeBuilder, says: str) -> None:
    obj = node.obj()
    if says.startswith("metadata.name"):
        settings = parse({**SETTINGS.model_dump(by_alias=True, mode="json"),
                          "naming": {"reservedNamespaces": ["fn-system"]}})  # fmt: skip
        with pytest.raises(admission.Denied, match="reserved"):
            admission.review_node(operation="CREATE", old=None, new=obj, settings=settings, profiles=PROFILES,
                                  today=TODAY)  # fmt: skip
        return
    with pytest.raises(admission.Denied) as denied:
        _review(obj)
    assert str(denied.value).startswith(says), denied.value


def test_an_expired_entry_may_stay_and_a_valid_one_passes() -> None:
    old = NodeBuilder("n").integrator("ivan", _in(-10)).obj()  # admitted when it was still valid
    new = NodeBuilder("n").integrator("ivan", _in(-10)).integrator("jo", _in(7)).obj()
    _review(new, old)
    _review(NodeBuilder("n").integrator("ivan", _in(0)).obj())


def test_status_is_written_as_a_merge_patch_that_removes_what_went() -> None:
    from enclave_operator.engine.status import merge_patch

    old = {"backup": {"running": "enclave-backup/backup-n-1", "runs": 1}, "measured": {"nodes": ["a"]}, "x": [1, 2]}
    new = {"backup": {"runs": 1, "lastSuccess": {"time": "t"}}, "x": [1]}
    assert merge_patch(old, new) == {"backup": {"running": None, "lastSuccess": {"time": "t"}}, "measured": None,
                                     "x": [1]}  # fmt: skip
    assert merge_patch(new, new) == {}, "nothing changed: nothing is written"


async def test_a_drill_asked_for_before_any_backup_waits_and_its_status_fits_the_schema() -> None:
    from enclave_operator.api.federated_node import FederatedNodeSpec, RestoreDrillStatus
    from enclave_operator.engine.recorder import ListRecorder

    spec = FederatedNodeSpec.model_validate(NodeBuilder("n").backup(restoreDrill={"name": "d1"}).spec())
    node = federated_node.plan("n", "uid", spec, SETTINGS, PROFILES, TODAY)
    for backup, says in (({}, "waiting for a successful backup"),
                         ({"lastSuccess": {"time": _at(-DAY)}, "running": "x/y"}, "waiting for the running backup")):
        drill = await federated_node._drill(node, SETTINGS, None, None, backup, None, ListRecorder(), NOW)  # type: ignore[arg-type]
        assert drill is not None and drill["phase"] == "Waiting" and says in drill["message"]
        RestoreDrillStatus.model_validate(drill)
