"""Adapter for a Kubernetes object that is created once and never changed by us afterwards: a Job
(its pod template is immutable), a generated key Secret (regenerating it would break determinism),
a namespace or service account the operator needs to exist."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.resource import Resource
from lightkube.types import CascadeType

from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import kube
from enclave_operator.backends.adapter import NOT_FOUND, DeleteOutcome, Observation


class CreateOnlyAdapter:
    def __init__(
        self,
        client: AsyncClient,
        resource: type[Resource],
        manifest: Mapping[str, Any],
        *,
        part: str,
        noun: str,
        keep_on_delete: bool = False,
    ) -> None:
        self.part, self.noun, self.member_key = part, noun, ""
        self._client, self._resource, self._manifest = client, resource, dict(manifest)
        self._keep = keep_on_delete
        meta = self._manifest["metadata"]
        self._name, self._namespace = str(meta["name"]), meta.get("namespace")

    @property
    def _what(self) -> str:
        return f"{self._resource.__name__} {self._namespace + '/' if self._namespace else ''}{self._name}"

    async def observe(self) -> Observation:
        try:
            obj = await kube.call(f"get {self._what}", self._client.get(self._resource, self._name,
                                                                       namespace=self._namespace))  # fmt: skip
        except kube.NotFound:
            return dataclasses.replace(NOT_FOUND, resource=self._name)
        terminating = bool(obj.metadata and obj.metadata.deletionTimestamp)
        return Observation(True, not terminating, "terminating" if terminating else "", self._name,
                           terminating=terminating)  # fmt: skip

    async def get(self) -> Any:
        """The object as it is now (e.g. a Job's status), or None."""
        try:
            return await kube.call(f"get {self._what}", self._client.get(self._resource, self._name,
                                                                        namespace=self._namespace))  # fmt: skip
        except kube.NotFound:
            return None

    async def create(self) -> None:
        try:
            await kube.call(f"create {self._what}", self._client.create(from_dict(self._manifest)))
        except kube.Conflict:
            pass

    async def update(self, observation: Observation) -> None:
        """Never changed after creation."""

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        if self._keep and policy == "Retain":
            return DeleteOutcome.RETAINED
        try:
            await kube.call(
                f"delete {self._what}",
                self._client.delete(self._resource, self._name, namespace=self._namespace,
                                     cascade=CascadeType.BACKGROUND),
            )  # fmt: skip
        except kube.NotFound:
            pass
        return DeleteOutcome.DELETED


def job_state(job: Any) -> tuple[str, str]:
    """("running"|"succeeded"|"failed", message) from a Job's conditions (a Job made by this adapter)."""
    status = job.status if job is not None else None
    for cond in status.conditions if status and status.conditions else []:
        if cond.type == "Complete" and cond.status == "True":
            return "succeeded", ""
        if cond.type == "Failed" and cond.status == "True":
            return "failed", f"{cond.reason}: {cond.message or ''}".strip(": ")
    return "running", ""
