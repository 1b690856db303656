"""Signed approval records: the one thing the operator's webhook writes and its controller trusts.

An approval is JSON `{"by", "at", "grant", "sig"}` in the annotation `enclave.io/approval`; `sig` is an
HMAC-SHA256 with the operator's secret key over the object's kind, namespace and name, the approver, the
time and the grant, so a record written by hand, copied from another object or edited does not verify.
No dependencies beyond the standard library: settings load the key, reconcilers and admission use it.
See reconcilers/approval.py for what is approved and how.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

APPROVAL_ANNOTATION = "enclave.io/approval"
"""The signed approval record; written only by the operator's webhook."""
APPROVE_ANNOTATION = "enclave.io/approve"
"""The trigger an approver sets (any value); the webhook replaces it by the signed record."""
MIN_KEY_BYTES = 32


class Signer:
    """Signs and verifies approval records with the operator's secret key (HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the approval signing key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Signer(<key hidden>)"

    def _digest(self, ref: ObjectRef, by: str, at: str, grant: Mapping[str, Any]) -> str:
        message = json.dumps(
            {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name, "by": by, "at": at, "grant": grant},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def stamp(self, ref: ObjectRef, by: str, grant: Mapping[str, Any], now: datetime.datetime) -> str:
        """The annotation value recording that `by` approved `grant` for the object `ref` at `now`."""
        at = now.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {"by": by, "at": at, "grant": dict(grant), "sig": self._digest(ref, by, at, grant)}
        return json.dumps(record, sort_keys=True, separators=(",", ":"))

    def verify(self, ref: ObjectRef, text: str | None) -> Approval | None:
        """The approval in the annotation value, or None when it is absent, malformed or not ours."""
        if not text:
            return None
        try:
            record = json.loads(text)
            by, at, grant, sig = str(record["by"]), str(record["at"]), dict(record["grant"]), str(record["sig"])
        except (ValueError, KeyError, TypeError):
            return None
        if not by or not hmac.compare_digest(sig, self._digest(ref, by, at, grant)):
            return None
        return Approval(by, at, grant)


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str


@dataclasses.dataclass(frozen=True)
class Approval:
    by: str
    at: str
    grant: Mapping[str, Any]


