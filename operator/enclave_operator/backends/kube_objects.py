"""Adapter for a set of Kubernetes objects one owner (a project, a federated node) has inside a namespace
(quota, limits, network policies, roles and role bindings, worker Jobs).

Desired objects are full manifests. `observe` lists what the owner has of each kind (by its owner label)
and compares only the fields we set — quantities by their canonical value as the API server stores it
(`quantity.canonical`), so "1.5" and "1500m" agree and "0.0015" matches the "2m" it reads back as — so a
resync where nothing changed makes no write. `update` server-side applies what differs and deletes
what we own but no longer want (e.g. the binding of a role nobody holds any more).
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.core.resource import NamespacedResource
from lightkube.types import CascadeType, PatchType

from enclave_operator import quantity
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import kube
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.ownership import OwnedNamespaces, Owner

COMPARED_KEYS = ("spec", "roleRef", "subjects")
"""Top-level keys of a manifest that carry desired state (metadata is compared by labels only)."""


@dataclasses.dataclass(frozen=True)
class DesiredObject:
    resource: type[NamespacedResource]
    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.manifest["metadata"]["namespace"])


def _as_number(value: object) -> decimal.Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        return quantity.canonical(value)
    except (ValueError, decimal.InvalidOperation):
        return None


def covers(actual: object, desired: object) -> bool:
    """True when `actual` has every field of `desired` with an equal value (quantities by value)."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(covers(actual.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(covers(a, d) for a, d in zip(actual, desired, strict=True))
        )
    if desired == actual:
        return True
    left, right = _as_number(desired), _as_number(actual)
    return left is not None and right is not None and left == right


class KubeObjectsAdapter:
    """All objects of the given kinds that one owner has in a namespace (labelled `<owner.label>=<owner.name>`)."""

    def __init__(
        self,
        client: AsyncClient | OwnedNamespaces,
        *,
        part: str,
        noun: str,
        member_key: str,
        owner: Owner,
        namespace: str,
        kinds: Sequence[type[NamespacedResource]],
        desired: Sequence[DesiredObject],
        members_of: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, str]] | None = None,
    ) -> None:
        self.part, self.noun, self.member_key = part, noun, member_key
        self._client = client
        self._owner, self._namespace = owner, namespace
        self._kinds = list(kinds)
        self._desired = list(desired)
        self._members_of = members_of
        self._plan: tuple[list[DesiredObject], list[tuple[type[NamespacedResource], str]]] = ([], [])
        self._seen: dict[tuple[str, str], Mapping[str, Any]] = {}

    async def _owned(self) -> dict[tuple[str, str], Mapping[str, Any]]:
        """What the owner has of each kind: one list per kind, all at once."""
        mine = {self._owner.label: self._owner.name}

        async def owned_of(kind: type[NamespacedResource]) -> list[Any]:
            return await kube.call(
                f"list {kind.__name__} in {self._namespace}",
                _collect(self._client.list(kind, namespace=self._namespace, labels=mine)),
            )

        lists = await asyncio.gather(*(owned_of(kind) for kind in self._kinds))
        return {(kind.__name__, item.metadata.name): item.to_dict()
                for kind, items in zip(self._kinds, lists, strict=True) for item in items}  # fmt: skip

    def _observation(self, owned: Mapping[tuple[str, str], Mapping[str, Any]], diffs: list[str]) -> Observation:
        members = dict(self._members_of(list(owned.values()))) if self._members_of else {}
        exists = bool(owned)  # nothing wanted and nothing there: exists False, up to date (nothing to create)
        terminating = exists and all(o.get("metadata", {}).get("deletionTimestamp") for o in owned.values())
        return Observation(exists, not diffs, "; ".join(diffs), self._namespace, members=members,
                           terminating=terminating)  # fmt: skip

    async def observe(self) -> Observation:
        owned = self._seen = await self._owned()
        to_apply = [
            d
            for d in self._desired
            if (actual := owned.get((d.resource.__name__, d.name))) is None
            or not all(covers(actual.get(k), d.manifest[k]) for k in COMPARED_KEYS if k in d.manifest)
            or not covers(actual.get("metadata", {}).get("labels", {}), d.manifest["metadata"].get("labels", {}))
        ]
        wanted = {(d.resource.__name__, d.name) for d in self._desired}
        kinds = {k.__name__: k for k in self._kinds}
        extra = [(kinds[kind], name) for (kind, name) in owned if (kind, name) not in wanted]
        self._plan = (to_apply, extra)
        diffs = [f"{d.resource.__name__}/{d.name} {'differs' if (d.resource.__name__, d.name) in owned else 'missing'}"
                 for d in to_apply] + [f"{kind.__name__}/{name} not wanted" for kind, name in extra]  # fmt: skip
        return self._observation(owned, diffs)

    async def create(self) -> Observation:
        return await self._converge()

    async def update(self, observation: Observation) -> Observation:
        return await self._converge()

    async def _converge(self) -> Observation:
        """Apply what differs, delete what is not wanted; the API server's answers are the state left."""
        to_apply, extra = self._plan
        now = dict(self._seen)
        for desired in to_apply:
            now[(desired.resource.__name__, desired.name)] = (await kube.call(
                f"apply {desired.resource.__name__}/{desired.name}",
                self._client.patch(
                    desired.resource,
                    desired.name,
                    dict(desired.manifest),
                    namespace=desired.namespace,
                    patch_type=PatchType.APPLY,
                    field_manager=kube.FIELD_MANAGER,
                    force=True,
                ),
            )).to_dict()
        for kind, name in extra:
            try:
                await kube.call(
                    f"delete {kind.__name__}/{name}",
                    self._client.delete(kind, name, namespace=self._namespace, cascade=CascadeType.BACKGROUND),
                )
            except kube.NotFound:
                pass
            now.pop((kind.__name__, name), None)
        return self._observation(now, [])

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Remove every owned object (both policies: access goes; data is not held here)."""
        for (kind_name, name), _ in (await self._owned()).items():
            kind = next(k for k in self._kinds if k.__name__ == kind_name)
            try:
                await kube.call(
                    f"delete {kind_name}/{name}",
                    self._client.delete(kind, name, namespace=self._namespace, cascade=CascadeType.BACKGROUND),
                )
            except kube.NotFound:
                pass
        return DeleteOutcome.DELETED


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]
