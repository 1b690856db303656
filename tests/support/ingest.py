"""Helpers for the DataIngest worker tests: Orthanc loading, prefix-scoped MinIO users, worker runs."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from minio.credentials import StaticProvider
from pydicom.dataset import Dataset

from localenv.runtime import REPO_ROOT
from minio import Minio, MinioAdmin

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DEID_KEY = "a3f1" * 16  # 64 hex digits


def bundled(name: str) -> Path:
    """A test file shipped inside pydicom's wheel (never downloads)."""
    path = PYDICOM_FILES / name
    assert path.is_file(), f"pydicom's bundled {name} is missing"
    return path


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ct_series_copies(n: int) -> list[bytes]:
    """CT_small.dcm plus n-1 copies in the *same* series with new SOP Instance UIDs (a multi-instance series)."""
    out = []
    for i in range(n):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        if i:
            ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
        out.append(to_bytes(ds))
    return out


def orthanc_store(facts: dict[str, Any], data: bytes) -> None:
    resp = requests.post(
        f"{facts['url']}/instances",
        data=data,
        auth=(facts["username"], facts["password"]),
        headers={"Content-Type": "application/dicom"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["Status"] in ("Success", "AlreadyStored"), resp.text


def orthanc_originals(facts: dict[str, Any]) -> dict[str, bytes]:
    """Every instance stored in Orthanc, as Part 10 bytes keyed by original SOP Instance UID."""
    auth = (facts["username"], facts["password"])
    out = {}
    for oid in requests.get(f"{facts['url']}/instances", auth=auth, timeout=30).json():
        data = requests.get(f"{facts['url']}/instances/{oid}/file", auth=auth, timeout=30).content
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = data
    return out


def admin(minio: dict[str, Any]) -> MinioAdmin:
    return MinioAdmin(
        endpoint=minio["endpoint"], credentials=StaticProvider(minio["access_key"], minio["secret_key"]), secure=False
    )


def root_client(minio: dict[str, Any]) -> Minio:
    return Minio(minio["endpoint"], access_key=minio["access_key"], secret_key=minio["secret_key"], secure=False)


def scoped_user(minio: dict[str, Any], bucket: str, prefix: str, *, read_bucket: str | None = None) -> tuple[str, str]:
    """A MinIO user whose policy allows only ``bucket/prefix*`` (list restricted to the prefix)."""
    name = f"ingest-{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(24)
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        },
    ]
    if read_bucket:
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{read_bucket}", f"arn:aws:s3:::{read_bucket}/*"],
            }
        )
    adm = admin(minio)
    adm.user_add(name, secret)
    adm.policy_add(name, policy={"Version": "2012-10-17", "Statement": statements})
    adm.attach_policy([name], user=name)
    return name, secret


@dataclass
class WorkerResult:
    returncode: int
    stderr: str
    seconds: float

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out


def worker_env(
    spec: dict[str, Any], index: int | None, dest: tuple[str, str] | None, source: tuple[str, str] | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SOURCE_", "INGEST_", "JOB_", "DEID_"))}
    env["INGEST_SPEC"] = json.dumps(spec)
    env["DEID_KEY"] = DEID_KEY
    env["INGEST_BACKOFF_SECONDS"] = "0.05"
    env["INGEST_PROGRESS_SECONDS"] = "0.5"
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    if dest is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = dest
    if source is not None:
        env["SOURCE_USERNAME"], env["SOURCE_PASSWORD"] = source
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "enclave_operator.ingest.worker"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_workers(envs: list[dict[str, str]], timeout: float = 240) -> list[WorkerResult]:
    """Run the worker processes concurrently (like an Indexed Job's pods) and collect them."""
    began = time.monotonic()
    procs = [start_worker(env) for env in envs]
    results = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        results.append(WorkerResult(proc.returncode, err, time.monotonic() - began))
    return results


def get_json(client: Minio, bucket: str, key: str) -> dict[str, Any]:
    resp = client.get_object(bucket, key)
    try:
        return json.loads(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def list_objects(client: Minio, bucket: str, prefix: str) -> dict[str, Any]:
    return {o.object_name: o for o in client.list_objects(bucket, prefix=prefix, recursive=True)}


def get_bytes(client: Minio, bucket: str, key: str) -> bytes:
    resp = client.get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


MRN = "MRN-00417"


def fhir_resources() -> list[dict[str, Any]]:
    """A small patient record: Patient, Practitioner, Encounter, Observation (all identifying on purpose)."""
    return [
        {
            "resourceType": "Patient",
            "id": "pat-123",
            "identifier": [
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": "http://hospital.example/mrn",
                    "value": MRN,
                }
            ],
            "name": [{"family": "Smithson", "given": ["Johnathan"]}],
            "telecom": [{"system": "phone", "value": "+1-555-0101-222"}],
            "gender": "male",
            "birthDate": "1961-04-12",
            "address": [{"line": ["42 Wallaby Way"], "city": "Springfield"}],
        },
        {"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "Watson", "given": ["James"]}]},
        {
            "resourceType": "Encounter",
            "id": "enc-1",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/pat-123", "display": "Johnathan Smithson"},
            "period": {"start": "2021-03-15T08:00:00+01:00", "end": "2021-03-15T09:30:00+01:00"},
        },
        {
            "resourceType": "Observation",
            "id": "obs-1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "HR taken by Watson"},
            "subject": {"reference": "Patient/pat-123"},
            "encounter": {"reference": "Encounter/enc-1"},
            "effectiveDateTime": "2021-03-15T08:15:00+01:00",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            "note": [{"text": "Johnathan was anxious"}],
        },
    ]


FHIR_IDENTIFYING = ("Smithson", "Johnathan", "Watson", MRN, "pat-123", "555-0101", "Wallaby", "1961-04-12")


async def make_deid_key(kube: AsyncClient, namespace: str, name: str) -> None:
    """A de-identification key Secret as the first DataIngest to a project or node makes it
    (reconcilers/data_ingest.py), in the ingest namespace (created if missing)."""
    try:
        await kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as error:
        assert error.status.code == 409
    key = {"apiVersion": "v1", "kind": "Secret", "stringData": {"key": "00" * 32},
           "metadata": {"name": name, "namespace": namespace}}  # fmt: skip
    await kube.create(from_dict(key))
