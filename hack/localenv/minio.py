"""MinIO server on loopback with generated root credentials and its data under the run directory.

Several can run side by side under different names (e.g. `minio-backup`, the separate S3 endpoint that
FederatedNode backups go to).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from localenv.runtime import DEFAULT_BIN_DIR, RunDir, Service, free_port, http_ok


def minio_service(run: RunDir, bin_dir: Path = DEFAULT_BIN_DIR, name: str = "minio", *,
                  scanner_speed: str = "fastest") -> Service:
    """MinIO `name` (data in `<name>-data`); `scanner_speed` "fastest" (tests: usage figures soon) or "default" (as
    deployed: the scanner sleeps, where "fastest" keeps a quarter of a core busy per 400 buckets)."""
    port, console = free_port(), free_port()
    data = run.path / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    user, password = "enclave-root", secrets.token_urlsafe(24)
    endpoint = f"127.0.0.1:{port}"
    return Service(
        name=name,
        argv=[
            str(bin_dir / "minio"),
            "server",
            str(data),
            f"--address={endpoint}",
            f"--console-address=127.0.0.1:{console}",
            "--quiet",
        ],
        env={
            "MINIO_ROOT_USER": user,
            "MINIO_ROOT_PASSWORD": password,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_SCANNER_SPEED": scanner_speed,
        },
        ready=lambda: http_ok(f"http://{endpoint}/minio/health/ready"),
        facts={"endpoint": endpoint, "access_key": user, "secret_key": password, "secure": False},
    )


def start_minio(run: RunDir, bin_dir: Path = DEFAULT_BIN_DIR, name: str = "minio", *,
                scanner_speed: str = "fastest") -> dict[str, Any]:
    return run.start(minio_service(run, bin_dir, name, scanner_speed=scanner_speed))
