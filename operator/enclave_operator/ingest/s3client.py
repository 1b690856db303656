"""The S3 client of the worker Jobs (ingest source and destination, backup worker): bounded timeouts and retries.

Object names may identify patients and appear in the messages of minio's and urllib3's loggers: both are
kept quiet. Apart from `sources` so that what needs only this client (the backup worker, whose contract the
operator imports) does not load the DICOM stack: pydicom, numpy and dicomweb-client are ~40 MiB of the
operator's resident memory otherwise.
"""

from __future__ import annotations

import logging

import urllib3

from minio import Minio

for _name in ("urllib3", "minio"):
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)


def s3_client(endpoint: str, access: str | None, secret: str | None, secure: bool, region: str | None) -> Minio:
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10.0, read=120.0),
        maxsize=16,
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(endpoint, access_key=access, secret_key=secret, secure=secure, region=region, http_client=http)
