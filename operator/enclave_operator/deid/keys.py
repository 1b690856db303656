"""Keyed, deterministic pseudonyms derived from the project key.

Why: parallel workers, re-runs and later deliveries must produce the same UIDs,
pseudonyms and date shifts without sharing any state but the key. Every value
is an HMAC-SHA256 of the original under the project key, with a label per use
so that e.g. a UID and a patient ID with the same text give unrelated outputs.

Patient identity for date shifts (shared by DICOM and FHIR): the *normalised
patient identifier* -- the DICOM PatientID (0010,0020) or the FHIR Patient's
MRN identifier value -- with surrounding whitespace removed. The same string
gives the same shift in both modalities.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import date, timedelta
from pathlib import Path

MIN_KEY_BYTES = 32
UID_ROOT = "2.25."
SHIFT_MIN_DAYS = 1
SHIFT_MAX_DAYS = 365


class KeyError_(ValueError):
    """The key file is missing, unreadable or too short (message has no key material)."""


def load_key(path: str | Path) -> bytes:
    """Read a key file: its bytes with surrounding whitespace removed (>= 32 bytes)."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise KeyError_(f"cannot read key file: {exc.strerror}") from None
    if len(data) < MIN_KEY_BYTES:
        raise KeyError_(f"key file must hold at least {MIN_KEY_BYTES} bytes of key material")
    return data


class Keys:
    """All keyed derivations for one project key. Results are cached per instance."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise KeyError_(f"key must hold at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._uid_cache: dict[str, str] = {}
        self._shift_cache: dict[str, int] = {}
        self._id_cache: dict[tuple[str, str], str] = {}

    def mac(self, label: str, value: str) -> bytes:
        """HMAC-SHA256 over ``label NUL value`` (UTF-8)."""
        msg = label.encode() + b"\x00" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def fingerprint(self) -> str:
        """Identifies the key in manifests: first 16 hex of SHA-256(HMAC(key, "fingerprint"))."""
        inner = hmac.new(self._key, b"fingerprint", hashlib.sha256).digest()
        return hashlib.sha256(inner).hexdigest()[:16]

    def uid(self, original: str) -> str:
        """``2.25.<decimal of the first 128 bits of HMAC(uid)>`` (at most 44 characters)."""
        original = original.strip().rstrip("\x00").strip()
        out = self._uid_cache.get(original)
        if out is None:
            out = UID_ROOT + str(int.from_bytes(self.mac("uid", original)[:16], "big"))
            self._uid_cache[original] = out
        return out

    def hash_id(self, value: str, label: str = "id") -> str:
        """64 lowercase hex characters; used for identifiers in DICOM and FHIR alike."""
        k = (label, value)
        out = self._id_cache.get(k)
        if out is None:
            out = self.mac(label, value).hex()
            self._id_cache[k] = out
        return out

    def uuid_for(self, value: str) -> str:
        """A UUID-shaped pseudonym (for ``urn:uuid:`` references)."""
        return str(uuid.UUID(bytes=self.mac("uuid", value)[:16]))

    def patient_id(self, patient_key: str) -> str:
        """Pseudonymous patient ID (same as the FHIR MRN identifier hash)."""
        return self.hash_id(patient_key.strip())

    def patient_name(self, patient_key: str) -> str:
        """Pseudonymous DICOM patient name derived from the patient identifier."""
        return "PAT^" + self.hash_id(patient_key.strip(), "name")[:16].upper()

    def accession(self, value: str) -> str:
        """16-character accession number pseudonym (SH maximum length)."""
        return self.hash_id(value.strip(), "accession")[:16].upper()

    def shift_days(self, patient_key: str) -> int:
        """Per-patient date offset in days, in ``-365..-1`` (time of day is kept)."""
        k = patient_key.strip()
        out = self._shift_cache.get(k)
        if out is None:
            n = int.from_bytes(self.mac("dateshift", k)[:8], "big")
            out = -(SHIFT_MIN_DAYS + n % (SHIFT_MAX_DAYS - SHIFT_MIN_DAYS + 1))
            self._shift_cache[k] = out
        return out

    @staticmethod
    def shift_date(d: date, days: int) -> date:
        return d + timedelta(days=days)
