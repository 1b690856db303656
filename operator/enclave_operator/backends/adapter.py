"""The contract every backend adapter follows (after Crossplane's ExternalClient).

- `observe` never changes the backend; it says whether the thing exists, whether it matches the
  desired state and, if not, what differs (a short diff for events, never a secret).
- `create` on something that already exists and `delete` on something missing are not errors.
- `delete` is told the deletion policy; `Retain` means "revoke access, keep data".
- Every call is bounded in time; a call that cannot reach the backend raises BackendUnavailable.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Protocol

from enclave_operator.api.research_project import DeletionPolicy


@dataclasses.dataclass(frozen=True)
class Observation:
    """What an adapter saw in its backend."""

    exists: bool
    up_to_date: bool = True
    """With exists=False, up_to_date=True means "should not exist and does not" (nothing to create)."""
    diff: str = ""
    """What differs from the desired state, for events and messages; empty when up to date."""
    resource: str = ""
    """The name of the external thing as users know it (bucket name, namespace name)."""
    terminating: bool = False
    """The thing is being deleted by its backend; finalization counts it as gone."""
    members: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Per member username, the member's access in this backend (e.g. Granted, ReadOnly, Missing)."""
    degraded_reason: str = ""
    """Set when the thing is as desired as it can be but something outside the operator's reach is wrong
    (e.g. MembersMissing: users that do not exist in the directory). The part's condition goes False
    with this reason and `degraded_message`; no fast retry: the resync timer looks again."""
    degraded_message: str = ""
    adopting: bool = False
    """The thing was retained by an earlier owner of the same name and the owner asked to adopt it
    (spec.adopt): `update` marks it as the new owner's and the engine posts an `Adopted<Noun>` event."""


NOT_FOUND = Observation(exists=False, up_to_date=False)


class DeleteOutcome(enum.Enum):
    DELETED = "Deleted"
    """Gone, or going (the engine confirms with a later observe)."""
    RETAINED = "Retained"
    """Access revoked, data kept, as the Retain policy asks."""


class Adapter(Protocol):
    """One external thing of one project."""

    part: str
    """The condition type this adapter's state is reported under, e.g. StorageReady."""
    noun: str
    """The thing's name in event reasons, e.g. Bucket → CannotCreateBucket (and CreatedBucket, which the Kubernetes
    recorder posts within one `Created` event: engine/events.py)."""
    member_key: str
    """The key under status.members[].backends, e.g. storage."""

    async def observe(self) -> Observation: ...

    async def create(self) -> Observation | None:
        """Create the thing. May return what it now is, when the backend's answers to the writes say so (the
        engine then does not observe again); None: the engine observes again."""
        ...

    async def update(self, observation: Observation) -> Observation | None:
        """Bring the thing to the desired state; may return what it now is, like `create`."""
        ...

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome: ...
