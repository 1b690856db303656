"""A throwaway CA and a loopback server certificate made with the openssl CLI.

Why: TLS clients in tests (python-freeipa, requests) should verify the server for real instead of
turning verification off, so each run directory gets its own CA and a leaf certificate whose
subjectAltName covers 127.0.0.1 and localhost.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

VALID_DAYS = 30


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def loopback_server_cert(directory: Path, name: str = "server") -> dict[str, str]:
    """Create (once) ca.crt plus <name>.crt/<name>.key for 127.0.0.1 and localhost; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not (ca_key.exists() and ca_crt.exists()):
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_crt),
            "-days",
            str(VALID_DAYS),
            "-subj",
            "/CN=enclave-local-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
    if not (key.exists() and crt.exists()):
        ext = directory / f"{name}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1", cwd=directory)
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            str(VALID_DAYS),
            "-extfile",
            str(ext),
            cwd=directory,
        )
    for path in (ca_key, key):
        path.chmod(0o600)
    return {"ca_cert": str(ca_crt), "cert": str(crt), "key": str(key)}
