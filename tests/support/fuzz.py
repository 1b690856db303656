"""Seeded generation of ResearchProject manifests for the admission fuzz test (issue 8): valid ones and ones
broken in the ways a user or an attacker breaks them, and a raw sender that posts them to the API server
as they are (no client-side schema in the way).

Reproducible: the same seed gives the same manifests in the same order.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random
import re
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import yaml

PEOPLE = ("alice", "bob", "carol", "dave")
Mutation = Callable[[random.Random, dict[str, Any]], None]


def base(name: str, rng: random.Random) -> dict[str, Any]:
    """A valid project with some variety (tier-sized or above, roles, egress, Slurm)."""
    members = [{"user": "alice", "role": "owner"}]
    for user in rng.sample(PEOPLE[1:], rng.randint(0, 3)):
        members.append({"user": user, "role": rng.choice(["maintainer", "member", "viewer"])})
    spec: dict[str, Any] = {
        "displayName": f"Fuzz {name}",
        "owner": "alice",
        "members": members,
        "validUntil": f"20{rng.randint(30, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "storage": {"quota": rng.choice(["1Gi", "500Mi", "2Gi"])},
        "compute": {"kubernetes": {"cpu": rng.choice(["2", "4", 8, "500m"]), "memory": rng.choice(["8Gi", "1Gi"]),
                                   "gpu": rng.choice([0, 0, 1, 2])}},  # fmt: skip
        "deletionPolicy": "Delete",
    }
    if rng.random() < 0.3:
        spec["network"] = {"egress": [{"cidr": f"10.{rng.randint(0, 255)}.0.0/16", "ports": [443]}]}
    if rng.random() < 0.3:
        limits = {"cpu": rng.randint(1, 64), "mem": "16Gi", "gpu": rng.randint(0, 1)}
        spec["compute"]["slurm"] = {"parent": "root", "fairshare": rng.randint(1, 20), "limits": limits}
    return {"apiVersion": "enclave.io/v1alpha1", "kind": "ResearchProject", "metadata": {"name": name}, "spec": spec}


def _set(path: str, *values: Any) -> Mutation:
    def mutate(rng: random.Random, obj: dict[str, Any]) -> None:
        node = obj
        keys = path.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        value = rng.choice(values)
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = copy.deepcopy(value)

    return mutate


_DELETE = object()
_QUANTITIES = ("-1Gi", "1e30", 1e30, "abc", "0.5", "11Pi", "0.001m", "999999999999999999999999Ti", True, ["1Gi"],
               {"x": 1}, "", " 1Gi", "1GB", 9223372036854775807, "1.5.6")  # fmt: skip
_STRINGS = ("", "x" * 300, 5, ["x"], {"a": 1}, None, True, "🙂" * 20, "a\nb")
MUTATIONS: tuple[Mutation, ...] = (
    _set("metadata.name", "Bad_Name", "a" * 41, "-x", "kube-fuzz", "default", "x", "ab", "kube-public",
         "enclave-ingest", "a.b"),
    _set("spec.displayName", *_STRINGS, _DELETE),
    _set("spec.description", "x" * 2001, 5, ["x"]),
    _set("spec.owner", "Bob", "", "x" * 65, 3, "carol", "zoe", _DELETE, ["alice"]),
    _set("spec.members", [], "alice", [{"user": "alice", "role": "owner"}, {"user": "alice", "role": "viewer"}],
         [{"user": "alice", "role": "boss"}], [{"user": "Alice", "role": "owner"}],
         [{"user": "alice", "role": "owner", "expires": ["x"]}],
         [{"user": "alice", "role": "owner", "expires": [1, 2]}],
         [{"user": "alice", "role": "owner", "expires": "2030-13-01"}], [{"user": "alice", "role": "owner", "x": 1}],
         [{"user": f"u{i}", "role": "member"} for i in range(501)], [{"role": "owner"}], [None], _DELETE),
    _set("spec.validUntil", ["x"], "2020-01-01", "2030-02-30", 20300101, "tomorrow", {"y": 2030}, "2030-1-1",
         _DELETE, None),
    _set("spec.storage.quota", *_QUANTITIES),
    _set("spec.storage.versioning", "yes", 1, None),
    _set("spec.storage", "1Gi", [], None),
    _set("spec.compute.kubernetes.cpu", *_QUANTITIES, "200000", 200000),
    _set("spec.compute.kubernetes.memory", *_QUANTITIES, "2Pi"),
    _set("spec.compute.kubernetes.storage", *_QUANTITIES),
    _set("spec.compute.kubernetes.gpu", -1, 1025, "2", 1.5, None, 4, 64),
    _set("spec.compute.kubernetes.pods", 10001, -1, "many"),
    _set("spec.compute.kubernetes.persistentVolumeClaims", 1001, -1),
    _set("spec.compute.slurm", "x", [], {"parent": "Root"}, {"parent": "other-project"}, {"parent": "_x"},
         {"fairshare": 0}, {"fairshare": 1000001}, {"limits": {"cpu": -1}}, {"limits": {"mem": "2Pi"}},
         {"limits": {"gpu": 100001}}, {"qos": ["a,b"]}, {"qos": [f"q{i}" for i in range(17)]}, {"qos": "normal"},
         {"limits": {"mem": "1.5"}}, {"parent": "root", "limits": {"cpu": 4, "mem": "8Gi", "gpu": 0}},
         {"unknown": 1}),
    _set("spec.network.egress", [{"cidr": "10.0.0.0/33"}], [{"cidr": "not-a-cidr"}], [{"cidr": "0.0.0.0/0"}],
         [{"cidr": "10.0.0.0/8", "ports": [0]}], [{"cidr": "10.0.0.0/8", "ports": [70000]}],
         [{"cidr": f"10.{i}.0.0/16"} for i in range(65)], [{"ports": [443]}], "0.0.0.0/0", [{"cidr": "x" * 65}]),
    _set("spec.identity.gidNumber", 999, 2147483648, "x", -1),
    _set("spec.deletionPolicy", "Orphan", 1, "", "delete"),
    _set("spec.adopt", ["Namespace"], ["Bucket", "Bucket"], ["Bucket", "SlurmAccount", "Bucket"], "Bucket"),
    _set("spec.unknownField", 1, "x"),
    _set("status", {"memberCount": -1}),
)


def manifests(seed: int, count: int, prefix: str) -> list[dict[str, Any]]:
    """`count` manifests: about one in four left valid, the others with one to three mutations."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        obj = base(f"{prefix}-{i:04d}", rng)
        if rng.random() >= 0.25:
            for mutation in rng.sample(MUTATIONS, rng.randint(1, 3)):
                mutation(rng, obj)
        out.append(obj)
    return out


@dataclasses.dataclass(frozen=True)
class Answer:
    code: int
    body: dict[str, Any]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def fields(self) -> list[str]:
        causes = (self.body.get("details") or {}).get("causes") or []
        return [str(c.get("field")) for c in causes if c.get("field")]


FIELD_IN_MESSAGE = re.compile(r"(^|: |denied the request: )(metadata|spec)(\.[\w\[\]./-]+)*: ")
UNKNOWN_FIELD = re.compile(r'unknown field "(metadata|spec|status)?[\w.\[\]]*"')


def names_a_field(answer: Answer) -> bool:
    """A rejection that says which field is wrong: a cause with a field, a webhook message starting with a
    field path, or the API server's strict decoding naming the unknown field."""
    return bool(answer.fields) or bool(FIELD_IN_MESSAGE.search(answer.message)) or bool(
        UNKNOWN_FIELD.search(answer.message)
    )


class RawSender:
    """POSTs manifests as they are to the API server (dryRun=All, fieldValidation=Strict), as the admin."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self._ca = tempfile.NamedTemporaryFile(suffix=".crt")  # noqa: SIM115 - lives as long as the sender
        self._ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        self._ca.flush()
        context = ssl.create_default_context(cafile=self._ca.name)
        self._client = httpx2.AsyncClient(base_url=cluster["server"], verify=context, timeout=60.0,
                                          headers={"Authorization": f"Bearer {user['token']}"})  # fmt: skip

    async def create(self, manifest: dict[str, Any], *, dry_run: bool = True) -> Answer:
        params = {"fieldValidation": "Strict", **({"dryRun": "All"} if dry_run else {})}
        response = await self._client.post("/apis/enclave.io/v1alpha1/researchprojects", params=params,
                                           content=json.dumps(manifest))  # fmt: skip
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return Answer(response.status_code, body)

    async def close(self) -> None:
        await self._client.aclose()
        self._ca.close()
