"""Machine-readable run manifest (``_manifest.json`` in the output directory).

Why: downstream loaders and auditors need to know exactly what was written,
from which source, under which profile/options/engine/key -- without the key
(only its fingerprint) and without patient data (output names are derived from
new UIDs or keyed hashes; reasons are fixed strings).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    kind: str
    profile: dict[str, Any]
    options: dict[str, Any]
    key_fingerprint: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    extra_counts: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {
            "inputs": len(self.outputs) + len(self.quarantined) + len(self.skipped) + len(self.failed),
            "written": len(self.outputs),
            "quarantined": len(self.quarantined),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "leaks": sum(len(f.get("leaks", ())) for f in self.failed),
        }
        out.update(self.extra_counts)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifestVersion": MANIFEST_VERSION,
            "kind": self.kind,
            "engine": {"name": "enclave-deid", "version": __version__},
            "profile": self.profile,
            "options": self.options,
            "keyFingerprint": self.key_fingerprint,
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "counts": self.counts(),
            "outputs": sorted(self.outputs, key=lambda o: (o["source"], o["path"])),
            "quarantined": sorted(self.quarantined, key=lambda o: o["source"]),
            "skipped": sorted(self.skipped, key=lambda o: o["source"]),
            "failed": sorted(self.failed, key=lambda o: o["source"]),
        }

    def write(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST_NAME
        tmp = out_dir / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
        return path


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
