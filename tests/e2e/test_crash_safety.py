"""SIGKILL of the operator in the middle of a reconcile, then a restart: it converges, with no
duplicate and no lost bucket. MinIO is frozen with SIGSTOP so the kill lands while the operator is
inside the storage part (namespace done, bucket calls hanging)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from enclave_operator.backends import s3_minio
from localenv.runtime import RunDir
from support import timeouts
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.operator import OperatorProcess
from support.projects import condition, wait_gone, wait_ready
from support.wait import wait_for


@contextmanager
def frozen_minio(run_dir: RunDir) -> Iterator[None]:
    pid = int(run_dir.load()["services"]["minio"]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _buckets_of(s3: s3_minio.S3Clients, project: str) -> list[str]:
    return [b.name for b in s3.s3.list_buckets() if b.name.startswith(project)]


def test_sigkill_while_storage_is_being_created_converges(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, run_dir: RunDir, project_name: str
) -> None:
    with frozen_minio(run_dir):
        crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
        # The namespace part is done; the storage part now hangs on the frozen MinIO.
        wait_for(lambda: crds.get_json("namespace", project_name), timeout=timeouts.READY, what="the namespace")
        operator.kill()
    operator.start()
    obj = wait_ready(crds, project_name)
    assert _buckets_of(s3, project_name) == [project_name], "exactly one bucket"
    assert s3.s3.get_bucket_tags(project_name)[s3_minio.PROJECT_TAG] == project_name
    assert condition(obj, "StorageReady")["status"] == "True"
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    wait_gone(crds, "namespace", project_name)
    assert _buckets_of(s3, project_name) == []


def test_repeated_sigkills_at_different_moments_converge(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, project_name: str
) -> None:
    """Kill at several points of the first reconcile (right after apply, and shortly after)."""
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
    for delay in (0.0, 0.3, 0.8):
        time.sleep(delay)
        operator.kill()
        operator.start()
    wait_ready(crds, project_name)
    assert _buckets_of(s3, project_name) == [project_name]
    namespaces = crds.get_json("namespaces", "-l", f"enclave.io/project={project_name}")
    assert namespaces and len(namespaces["items"]) == 1
    crds.run("delete", "researchproject", project_name, "--timeout=60s")
    wait_gone(crds, "namespace", project_name)


def test_sigkill_during_deletion_still_finishes_it(
    crds: Cluster, operator: OperatorProcess, s3: s3_minio.S3Clients, run_dir: RunDir, project_name: str
) -> None:
    crds.apply(yaml.safe_dump(ProjectBuilder(project_name).deletion("Delete").obj()))
    wait_ready(crds, project_name)
    with frozen_minio(run_dir):
        crds.run("delete", "researchproject", project_name, "--wait=false")
        wait_for(
            lambda: (o := crds.get_json("researchproject", project_name)) and o["metadata"].get("deletionTimestamp"),
            timeout=timeouts.READY,
            what="deletion to start",
        )
        operator.kill()
    operator.start()
    wait_gone(crds, "researchproject", project_name)
    assert _buckets_of(s3, project_name) == []
