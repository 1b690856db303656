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


class NodeBuilder:
    """A FederatedNode that meets every rule of incisive-2023 (declared hardware, hosted in NL, on premises),
    changed one aspect at a time: `NodeBuilder("umcg").memory("32Gi").hosted("US", scc=True).obj()`."""

    def __init__(self, name: str, *, target: str = "offsite") -> None:
        self._obj: dict[str, Any] = {
            "apiVersion": "enclave.io/v1alpha1",
            "kind": "FederatedNode",
            "metadata": {"name": name},
            "spec": {
                "federation": "incisive",
                "site": f"Hospital {name}",
                "profile": "incisive-2023",
                "contact": {"name": "Dana Data", "email": "dana@hospital.example", "phone": "+31 50 000 0000"},
                "hosting": {"mode": "OnPremises", "country": "NL", "documentation": "DMS-2026-0042"},
                "network": {
                    "bandwidthMbps": 1000,
                    "link": "Wired",
                    "access": "VPN",
                    # Loopback, where nothing listens on 9: probes stay on this machine and fail fast.
                    "endpoint": {"host": "127.0.0.1", "sshPort": 9, "dnsPort": 9},
                    "integratorRanges": ["198.51.100.0/24"],
                    "federationPeers": [{"cidr": "203.0.113.10/32", "ports": [443]}],
                },
                "hardware": {
                    "source": "Declared",
                    "cpu": {"cores": 16, "threads": 32, "ghz": 2.4, "serverGrade": True},
                    "memory": {"size": "128Gi", "ecc": True},
                    "osDisk": {"size": "1Ti", "type": "SSD"},
                    "gpu": {"count": 2, "vendor": "NVIDIA", "memory": "24Gi", "architecture": "Ampere"},
                    "os": {"family": "Linux", "distribution": "Ubuntu 22.04"},
                },
                "store": {"quota": "2Ti", "datasetSize": "800Gi", "raid": "RAID6"},
                "backup": {"target": target, "intervalDays": 14},
            },
        }

    def _spec(self) -> dict[str, Any]:
        return self._obj["spec"]

    def memory(self, size: str, ecc: bool = True) -> NodeBuilder:
        self._spec()["hardware"]["memory"] = {"size": size, "ecc": ecc}
        return self

    def cpu(self, **fields: Any) -> NodeBuilder:
        self._spec()["hardware"]["cpu"] = fields
        return self

    def gpu(self, count: int, **fields: Any) -> NodeBuilder:
        self._spec()["hardware"]["gpu"] = {"count": count, **fields}
        return self

    def hardware(self, **fields: Any) -> NodeBuilder:
        self._spec()["hardware"].update(fields)
        return self

    def measured(self, selector: dict[str, str], **declared: Any) -> NodeBuilder:
        """Measured from Node objects; `declared` keeps only the given declared sections (e.g. cpu={'ghz': 3})."""
        self._spec()["hardware"] = {"source": "Measured", "nodeSelector": selector, **declared}
        return self

    def hosted(self, country: str, *, provider: str | None = None, agreement: str | None = None,
               scc: bool | str = False, tia: bool | str = False) -> NodeBuilder:  # fmt: skip
        """Hosting in `country`; scc/tia True records one reviewed by 2099, a date string one with that review."""
        hosting: dict[str, Any] = {"mode": "Provider" if provider else "OnPremises", "country": country,
                                   "documentation": "DMS-2026-0042"}  # fmt: skip
        if provider:
            hosting["provider"] = provider
        if agreement:
            hosting["processorAgreement"] = agreement
        for key, value, ref in (("standardContractualClauses", scc, "SCC-2021-914"),
                                ("transferImpactAssessment", tia, "TIA-2026-07")):  # fmt: skip
            if value:
                hosting[key] = {"reference": ref, "reviewDate": value if isinstance(value, str) else "2099-01-01"}
        self._spec()["hosting"] = hosting
        return self

    def network(self, **fields: Any) -> NodeBuilder:
        self._spec()["network"].update(fields)
        return self

    def endpoint(self, host: str, **fields: Any) -> NodeBuilder:
        self._spec()["network"]["endpoint"] = {"host": host, **fields}
        return self

    def store(self, **fields: Any) -> NodeBuilder:
        self._spec()["store"].update(fields)
        return self

    def backup(self, **fields: Any) -> NodeBuilder:
        self._spec()["backup"].update(fields)
        return self

    def integrator(self, user: str, expires: str, channels: tuple[str, ...] = ("SSH", "VPN")) -> NodeBuilder:
        access = self._spec().setdefault("integratorAccess", {"integrators": []})
        access.setdefault("integrators", []).append({"user": user, "expires": expires, "channels": list(channels)})
        return self

    def credential_secrets(self, *names: str) -> NodeBuilder:
        self._spec().setdefault("integratorAccess", {})["credentialSecrets"] = list(names)
        return self

    def deletion(self, policy: str) -> NodeBuilder:
        self._spec()["deletionPolicy"] = policy
        return self

    def set(self, key: str, value: Any) -> NodeBuilder:
        self._spec()[key] = value
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj["spec"])
