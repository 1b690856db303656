"""A part the spec asks for but the enclave does not run (e.g. Slurm on a Kubernetes-only site): its
condition says so, without retries, instead of the request being silently ignored."""

from __future__ import annotations

from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends.adapter import DeleteOutcome, Observation

REASON_NOT_CONFIGURED = "NotConfigured"


class UnavailablePart:
    def __init__(self, part: str, noun: str, member_key: str, message: str) -> None:
        self.part, self.noun, self.member_key, self._message = part, noun, member_key, message

    async def observe(self) -> Observation:
        return Observation(False, True, degraded_reason=REASON_NOT_CONFIGURED, degraded_message=self._message)

    async def create(self) -> None:
        """Nothing to create: the backend is not there."""

    async def update(self, observation: Observation) -> None:
        """Nothing to update: the backend is not there."""

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        return DeleteOutcome.DELETED
