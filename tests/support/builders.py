"""Chainable builders for test objects, used for both inputs and expectations."""

from __future__ import annotations

import copy
from typing import Any


class ProjectBuilder:
    """`ProjectBuilder("onco").member("bob", "member").deletion("Delete").obj()`."""

    def __init__(self, name: str, owner: str = "alice") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "enclave.io/v1alpha1",
            "kind": "ResearchProject",
            "metadata": {"name": name},
            "spec": {
                "displayName": f"Project {name}",
                "owner": owner,
                "members": [{"user": owner, "role": "owner"}],
                "validUntil": "2099-12-31",
                "storage": {"quota": "1Gi", "versioning": True},
            },
        }

    def member(self, user: str, role: str = "member", expires: str | None = None) -> ProjectBuilder:
        entry: dict[str, Any] = {"user": user, "role": role}
        if expires:
            entry["expires"] = expires
        self._obj["spec"]["members"].append(entry)
        return self

    def deletion(self, policy: str) -> ProjectBuilder:
        self._obj["spec"]["deletionPolicy"] = policy
        return self

    def storage(self, quota: str, versioning: bool = True) -> ProjectBuilder:
        self._obj["spec"]["storage"] = {"quota": quota, "versioning": versioning}
        return self

    def valid_until(self, date: str) -> ProjectBuilder:
        self._obj["spec"]["validUntil"] = date
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj["spec"])


class BookingBuilder:
    """`BookingBuilder("miccai", "onco").pool("slurm").family("a100").gpus(4).window(start, end).obj()`."""

    def __init__(self, name: str, namespace: str) -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "enclave.io/v1alpha1",
            "kind": "GpuReservation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"pool": "kubernetes", "family": "a100", "count": 1, "start": "2026-12-01T08:00:00Z",
                     "end": "2026-12-01T20:00:00Z", "purpose": "tests"},
        }  # fmt: skip

    def pool(self, pool: str) -> BookingBuilder:
        self._obj["spec"]["pool"] = pool
        return self

    def family(self, family: str) -> BookingBuilder:
        self._obj["spec"]["family"] = family
        return self

    def gpus(self, count: int) -> BookingBuilder:
        self._obj["spec"]["count"] = count
        return self

    def window(self, start: str, end: str | None = None, duration: str | None = None) -> BookingBuilder:
        spec = self._obj["spec"]
        spec["start"] = start
        spec.pop("end", None)
        spec.pop("duration", None)
        if end is not None:
            spec["end"] = end
        if duration is not None:
            spec["duration"] = duration
        return self

    def annotate(self, **annotations: str) -> BookingBuilder:
        self._obj["metadata"].setdefault("annotations", {}).update(annotations)
        return self

    def meta(self, **fields: Any) -> BookingBuilder:
        """Server-set metadata for unit tests: uid, creationTimestamp, generation, resourceVersion."""
        self._obj["metadata"].update(fields)
        return self

    def status(self, **fields: Any) -> BookingBuilder:
        self._obj.setdefault("status", {}).update(fields)
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)
