"""Orthanc PACS with the DICOMweb plugin on loopback, for the imaging (DICOM) side of the enclave.

Why: the operator pulls studies over DICOMweb (QIDO/WADO/STOW) and tests need a real PACS that
speaks it. Storage and index live under the run directory, HTTP Basic auth uses generated
credentials, and the DICOM (C-STORE) listener is off.

Orthanc 1.10 has no bind-address option: its HTTP server listens on all interfaces, and
`RemoteAccessAllowed: false` makes it refuse every client that is not on loopback.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from localenv.runtime import RunDir, Service, ServiceError, free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERNAME = "enclave"


def _auth_header(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _plugin_loaded(url: str, headers: dict[str, str]) -> bool:
    """Ready = HTTP answers with our credentials and the DICOMweb plugin is registered."""
    request = urllib.request.Request(f"{url}/plugins", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return "dicom-web" in json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _config(root: Path, port: int, password: str) -> dict[str, Any]:
    return {
        "Name": "enclave-local",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": port,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USERNAME: password},
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "SslEnabled": False,
        "HttpsVerifyPeers": True,
        "StableAge": 2,
        "ConcurrentJobs": 2,
        "SaveJobs": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Host": f"127.0.0.1:{port}",
            "Ssl": False,
        },
    }


def orthanc_service(run: RunDir) -> Service:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists() or not DICOMWEB_PLUGIN.exists():
        raise ServiceError("Orthanc or its DICOMweb plugin is missing; run `sudo hack/install-debian-packages.sh`")
    root = run.path / "orthanc"
    for sub in ("storage", "index"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    secret_file = root / "password"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(18))
        secret_file.chmod(0o600)
    password = secret_file.read_text().strip()
    port = free_port()
    config = root / "orthanc.json"
    config.write_text(json.dumps(_config(root, port, password), indent=2))
    config.chmod(0o600)
    url = f"http://127.0.0.1:{port}"
    headers = _auth_header(USERNAME, password)
    return Service(
        name="orthanc",
        argv=[binary, str(config)],
        cwd=root,
        ready=lambda: _plugin_loaded(url, headers),
        facts={
            "url": url,
            "dicomweb_root": f"{url}/dicom-web",
            "username": USERNAME,
            "password": password,
        },
    )


def start_orthanc(run: RunDir) -> dict[str, Any]:
    """Start Orthanc; return url, dicomweb_root, username and password."""
    return run.start(orthanc_service(run))
