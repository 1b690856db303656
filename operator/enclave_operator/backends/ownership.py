"""Who an external thing belongs to, and the one check every project part goes through before it
touches a namespace.

The ownership model (shared by every kind that provisions external things):

- An `Owner` is one incarnation of an object: its name, its uid, and a marker key (by default
  `enclave.io/project`). Each external thing carries a marker the owner can recognise: a label on a
  namespace, a tag on a bucket, a description suffix on an identity group, the organization of a
  Slurm account.
- Things that never outlive their owner (namespace, identity group) are marked with the owner's name.
  Things that a `Retain` deletion keeps (bucket, Slurm account) are marked with the name *and* the uid,
  so a new object with an old name can tell "retained by an earlier owner of this name" from "mine".
- `claim()` classifies what exists: ABSENT, OWNED, RETAINED (an earlier owner of this name kept it)
  or FOREIGN (another owner, or no marker). Adapters never write to a FOREIGN thing, adopt a RETAINED
  one only when the owner asks for it explicitly (spec.adopt), and the admission webhook refuses a new
  object whose names collide with things it could not take.
- `OwnedNamespaces` wraps the Kubernetes client handed to a project's parts: any call that names a
  namespace (read or write) is let through only when that namespace is labelled for the owner, or is
  one the configuration trusts. A new namespaced part therefore cannot forget the check: the client
  it is given makes it.

`NotOwned` is what both raise. The engine turns it into a condition with reason `NotOwned` (no fast
retry: a human has to act), and, when the project is deleted, into "never ours: left alone" so that
deletion never hangs on something the project does not own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.core.resource import NamespacedResource, NamespacedSubResource
from lightkube.resources.core_v1 import Namespace

from enclave_operator.backends import kube
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable

logger = logging.getLogger(__name__)

OWNER_LABEL = "enclave.io/project"
"""Label (namespace) and tag (bucket) naming the owning project."""
OWNER_UID_LABEL = "enclave.io/project-uid"
"""Tag naming the owning object's uid, on things a Retain deletion keeps."""
NODE_OWNER_LABEL = "enclave.io/federated-node"
"""Label (namespace) and tag (bucket) naming the owning FederatedNode."""
OWNER_KINDS = {OWNER_LABEL: "project", NODE_OWNER_LABEL: "federated node"}
"""Every owner label, with the kind it names (for messages, and to tell an unmarked thing from another kind's)."""
BORN_WITH = frozenset({"ServiceAccount", "ConfigMap"})
"""Kinds Kubernetes' own controllers put into every new namespace (the `default` ServiceAccount, the
`kube-root-ca.crt` ConfigMap): a namespace just created is not known to be empty of these."""

class Claim(enum.Enum):
    ABSENT = "Absent"
    OWNED = "Owned"
    RETAINED = "Retained"
    """Marked for an earlier object of the same name (another uid): kept by its Retain deletion."""
    FOREIGN = "Foreign"


@dataclasses.dataclass(frozen=True)
class Owner:
    """One incarnation of the object that owns external things."""

    name: str
    uid: str = ""
    """The object's metadata.uid. Empty only for callers without an object (adapter tests): their markers
    then carry no uid, and a thing marked with a uid is never theirs."""
    adopt: frozenset[str] = frozenset()
    """Nouns (Bucket, SlurmAccount) whose retained instance this owner takes over (spec.adopt)."""
    label: str = OWNER_LABEL

    def classify(self, name: str | None, uid: str | None = None, *, with_uid: bool = False) -> Claim:
        """The claim from a thing's marker: owner name (None = no marker) and, for retained kinds, uid."""
        if name is None or name != self.name:
            return Claim.FOREIGN
        if not with_uid or (uid or "") == self.uid:
            return Claim.OWNED
        return Claim.RETAINED


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """What `claim()` of an adapter found; `message` says why when it is not ours (for users)."""

    claim: Claim
    resource: str
    message: str = ""

    @property
    def usable(self) -> bool:
        return self.claim in (Claim.ABSENT, Claim.OWNED)


class NotOwned(BackendRejected):
    """The thing exists and is not the owner's: nothing is written to it; deletion leaves it alone."""

    def __init__(self, message: str, *, retained: bool = False) -> None:
        super().__init__(message)
        self.retained = retained


def foreign_message(what: str, owner: Owner, marker: str | None, marks: Mapping[str, str] | None = None) -> str:
    """Why `what` is not the owner's: its marker for the owner's kind, else another kind's marker in `marks`."""
    kind = OWNER_KINDS.get(owner.label, "owner")
    other = next(((label, name) for label, name in (marks or {}).items()
                  if label in OWNER_KINDS and label != owner.label), None)  # fmt: skip
    if marker:
        belongs = f"belongs to {kind} {marker}"
    elif other:
        belongs = f"belongs to {OWNER_KINDS[other[0]]} {other[1]}"
    else:
        belongs = "belongs to no enclave project or federated node"
    return f"{what} exists and {belongs}; {kind} {owner.name} does not write to it"


def marked(marks: Mapping[str, str]) -> bool:
    """True when labels or tags carry any owner's marker (of whatever kind)."""
    return any(label in OWNER_KINDS for label in marks)


def retained_message(what: str, owner: Owner, noun: str) -> str:
    return (
        f"{what} was retained from an earlier project named {owner.name}; set spec.adopt: [{noun}] to take it "
        "over (with its content), or choose another name"
    )


def raise_unless_usable(result: ClaimResult, owner: Owner, noun: str) -> bool:
    """For adapters: True when a retained thing is being adopted now; NotOwned when it may not be used."""
    if result.claim is Claim.RETAINED:
        if noun in owner.adopt:
            return True
        raise NotOwned(result.message, retained=True)
    if result.claim is Claim.FOREIGN:
        raise NotOwned(result.message)
    return False


def namespace_claim(ns: Namespace | None, name: str, owner: Owner) -> ClaimResult:
    """A namespace is the owner's when it carries the owner label with the owner's name."""
    if ns is None:
        return ClaimResult(Claim.ABSENT, name)
    labels = dict(ns.metadata.labels or {}) if ns.metadata else {}
    claim = owner.classify(labels.get(owner.label))
    message = "" if claim is Claim.OWNED else foreign_message(f"namespace {name}", owner, labels.get(owner.label),
                                                             labels)  # fmt: skip
    return ClaimResult(claim, name, message)


def _kind(resource: Any) -> type:
    """The resource class of a class or of an object (lightkube calls take either)."""
    return resource if isinstance(resource, type) else type(resource)


class OwnedNamespaces:
    """A Kubernetes client for one owner's parts: namespaced calls only into namespaces it owns.

    Reads and writes that name a namespace are checked (a part must not even read a Secret from a
    namespace that is not the project's: it could take a foreign key for its own); calls on
    cluster-scoped resources pass, except a change to or removal of a Namespace object, which is a
    write into that namespace. Creating a namespace passes: the API server refuses it if it exists.
    Ownership, once seen, is remembered for the life of this client (one reconcile).

    A namespace this client created holds nothing yet but what this client writes into it (and what
    Kubernetes adds itself, `BORN_WITH`): reads of any other kind there are answered without asking the
    API server until this client writes that kind there. A new project's parts then make no reads inside
    their new namespace (issue 12: 6 of ~29 API requests per new project). Nothing is carried past this
    client's life, so a reconcile killed at any line observes afresh the next time.
    """

    def __init__(self, client: AsyncClient, owner: Owner | None, *, trusted: Collection[str] = ()) -> None:
        self._client = client
        self.owner = owner
        self._trusted = frozenset(trusted)
        self._owned: set[str] = set()
        self._reading: dict[str, asyncio.Future[Namespace]] = {}
        self._new: dict[str, set[str]] = {}
        """Namespaces this client created, with the kinds it has written into each since."""

    def known_empty(self, resource: Any, namespace: str | None) -> bool:
        """True when `namespace` was created by this client and nothing of this kind can be there yet."""
        kind = _kind(resource)
        written = self._new.get(namespace or "")
        return written is not None and kind.__name__ not in BORN_WITH and kind.__name__ not in written

    def _wrote(self, resource: Any, namespace: str | None) -> None:
        """Remember a write into a namespace this client created: reads of that kind go to the server again."""
        kind = _kind(resource)
        if namespace is None:
            namespace = getattr(getattr(resource, "metadata", None), "namespace", None)
        if namespace in self._new:
            self._new[namespace].add(kind.__name__)

    async def _read(self, namespace: str) -> Namespace:
        """One GET of the namespace, shared by the parts that check it at the same time."""
        if namespace not in self._reading:
            read = kube.call(f"get namespace {namespace}", self._client.get(Namespace, namespace))
            future = asyncio.ensure_future(read)

            def done(finished: asyncio.Future[Namespace]) -> None:
                self._reading.pop(namespace, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved here: every caller that still waits gets it too

            future.add_done_callback(done)
            self._reading[namespace] = future
        return await asyncio.shield(self._reading[namespace])

    async def check(self, namespace: str, *, write: bool) -> bool:
        """True when `namespace` may be used, False when it does not exist (reads only: nothing is there);
        NotOwned when it belongs to someone else."""
        if namespace in self._trusted or namespace in self._owned:
            return True
        try:
            ns = await self._read(namespace)
        except kube.NotFound:
            if write:
                raise BackendUnavailable(f"namespace {namespace} does not exist (yet)") from None
            # Nothing to read there. Not even asked: the API server would answer a least-privileged operator
            # (which gets access to a project namespace when it creates it) with 403, not with "nothing".
            return False
        if self.owner is None:
            raise NotOwned(f"namespace {namespace} is not one this part may use")
        result = namespace_claim(ns, namespace, self.owner)
        if result.claim is not Claim.OWNED:
            raise NotOwned(result.message)
        self._owned.add(namespace)
        return True

    async def _scope(self, resource: Any, name: str | None, namespace: str | None, *, write: bool) -> bool:
        kind = _kind(resource)
        if issubclass(kind, NamespacedResource | NamespacedSubResource):  # a subresource: e.g. a Pod's Eviction
            if namespace is None:
                meta = getattr(resource, "metadata", None)
                namespace = getattr(meta, "namespace", None)
            if namespace is None:
                raise BackendRejected(f"{kind.__name__} {name}: no namespace given")
            return await self.check(namespace, write=write)
        if kind is Namespace and write:
            target = name or getattr(getattr(resource, "metadata", None), "name", None)
            return await self.check(str(target), write=True)
        return True

    # Reads.
    async def get(self, resource: Any, name: str, *, namespace: str | None = None, **kwargs: Any) -> Any:
        if not await self._scope(resource, name, namespace, write=False):
            raise kube.NotFound(f"{name}: namespace {namespace} does not exist")
        if self.known_empty(resource, namespace):
            raise kube.NotFound(f"{name}: not in namespace {namespace}, created moments ago")
        found = await self._client.get(resource, name, namespace=namespace, **kwargs)
        if resource is Namespace and self.owner is not None:
            if namespace_claim(found, name, self.owner).claim is Claim.OWNED:
                self._owned.add(name)  # the namespace part read it: the parts inside need not read it again
        return found

    async def list(self, resource: Any, *, namespace: str | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        if not await self._scope(resource, None, namespace, write=False) or self.known_empty(resource, namespace):
            return
        async for item in self._client.list(resource, namespace=namespace, **kwargs):
            yield item

    # Writes.
    async def create(self, obj: Any, name: str | None = None, *, namespace: str | None = None, **kwargs: Any) -> Any:
        if not isinstance(obj, Namespace):
            await self._scope(obj, name, namespace, write=True)
        self._wrote(obj, namespace)  # before the call: a write whose answer is lost may still have landed
        made = await self._client.create(obj, name, namespace=namespace, **kwargs)
        if isinstance(made, Namespace) and self.owner is not None and made.metadata is not None:
            if namespace_claim(made, str(made.metadata.name), self.owner).claim is Claim.OWNED:
                self._owned.add(str(made.metadata.name))  # we just made it ours: the parts inside need not read it
                self._new[str(made.metadata.name)] = set()  # and it holds nothing of ours yet
        return made

    async def replace(self, obj: Any, name: str | None = None, *, namespace: str | None = None, **kwargs: Any) -> Any:
        await self._scope(obj, name or obj.metadata.name, namespace, write=True)
        self._wrote(obj, namespace)
        return await self._client.replace(obj, name, namespace=namespace, **kwargs)

    async def patch(self, resource: Any, name: str, obj: Any, *, namespace: str | None = None, **kwargs: Any) -> Any:
        await self._scope(resource, name, namespace, write=True)
        self._wrote(resource, namespace)
        return await self._client.patch(resource, name, obj, namespace=namespace, **kwargs)

    async def delete(self, resource: Any, name: str, *, namespace: str | None = None, **kwargs: Any) -> Any:
        if namespace is not None and not await self._scope(resource, name, namespace, write=False):
            raise kube.NotFound(f"{name}: namespace {namespace} does not exist")  # gone with its namespace
        await self._scope(resource, name, namespace, write=True)
        self._wrote(resource, namespace)
        return await self._client.delete(resource, name, namespace=namespace, **kwargs)


class Claimable(Protocol):
    noun: str

    async def claim(self) -> ClaimResult: ...


ADMISSION_CHECK_S = 4.0
"""Bound of one backend's collision check during admission, seconds (the API server gives the webhook 15 s)."""


async def collisions(roots: Iterable[Claimable], owner: Owner) -> list[str]:
    """For admission of a new owner: why each root thing (namespace, bucket, group, account) that exists could
    not be its own. The roots are asked at once, each within ADMISSION_CHECK_S; a backend that cannot be reached
    (or does not answer in time) is skipped: its adapter checks again before writing."""

    async def check(root: Claimable) -> str | None:
        try:
            result = await asyncio.wait_for(root.claim(), ADMISSION_CHECK_S)
        except NotOwned as error:
            return str(error)
        except (BackendError, TimeoutError) as error:
            logger.info("admission could not check %s of %s: %s", root.noun, owner.name, error or "timed out")
            return None
        if result.claim is Claim.RETAINED and root.noun in owner.adopt:
            return None
        return None if result.usable else result.message

    return [message for message in await asyncio.gather(*(check(root) for root in roots)) if message]


def labels_of(owner: Owner, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The owner label, for objects made inside an owned namespace."""
    return {owner.label: owner.name, **(extra or {})}
