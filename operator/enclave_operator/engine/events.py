"""Kubernetes events for our objects, posted after each reconcile.

We post them ourselves rather than through kopf: for cluster-scoped objects kopf stamps the
involved object's namespace as "default", which hides the events from `kubectl describe`. Ours keep
the object's own (empty) namespace and are stored in `default`, the one place the API server accepts.
Events are collected during a reconcile and flushed at its end; a failure to post an event is
logged and never fails the reconcile.

What the engine did to the parts is posted as one event per verb (`reasons.EVENT_PART_VERBS`): a new project's eight
`Created<Noun>` become one `Created` event whose message names each thing created. Eight were a third of the API
requests a new project made (issue 12), and `kubectl describe` reads better with one line per step. Failures stay
one Warning per part (`Cannot<Verb><Noun>`): each has its own cause, and alerts select them by reason.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from enclave_operator import reasons
from enclave_operator.backends import kube
from enclave_operator.backends.errors import BackendError
from enclave_operator.engine.recorder import EventType

logger = logging.getLogger(__name__)
COMPONENT = "enclave-operator"
MAX_MESSAGE = 1024


CLUSTER_EVENTS_NAMESPACE = "default"
"""Where events about cluster-scoped objects (ResearchProjects) must be stored: the API server refuses a core/v1
Event whose namespace differs from its involved object's, except `default` for cluster-scoped ones.
`kubectl describe researchproject` finds them there."""


class KubeRecorder:
    """Collects events for one object and posts them with `flush()`."""

    def __init__(self, client: AsyncClient, body: Mapping[str, Any]) -> None:
        self._client = client
        meta = body.get("metadata", {})
        self._ref = ObjectReference(
            apiVersion=body.get("apiVersion"),
            kind=body.get("kind"),
            name=meta.get("name"),
            namespace=meta.get("namespace"),
            uid=meta.get("uid"),
            resourceVersion=meta.get("resourceVersion"),
        )
        self._pending: list[tuple[EventType, str, str]] = []

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self._pending.append((type_, reason, message[:MAX_MESSAGE]))

    async def flush(self) -> None:
        """Post the collected events, the parts' grouped by verb, all at the same time (a reconcile holds its slot
        until they are posted)."""
        pending, self._pending = grouped(self._pending), []
        now = datetime.datetime.now(datetime.UTC)
        await asyncio.gather(*(self._post(type_, reason, message, now) for type_, reason, message in pending))

    async def _post(self, type_: EventType, reason: str, message: str, now: datetime.datetime) -> None:
        event = Event(
            metadata=ObjectMeta(name=f"{self._ref.name}.{secrets.token_hex(8)}",
                                namespace=self._ref.namespace or CLUSTER_EVENTS_NAMESPACE),  # fmt: skip
            involvedObject=self._ref,
            type=type_,
            reason=reason,
            message=message,
            source=EventSource(component=COMPONENT),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=COMPONENT,
            reportingInstance=os.environ.get("HOSTNAME", COMPONENT),
        )
        try:
            await kube.call(f"post event {reason}", self._client.create(event))
        except BackendError as error:
            logger.warning("could not post event %s: %s", reason, error)


def part_verb(type_: EventType, reason: str) -> str | None:
    """The verb of an engine's Normal part event (`CreatedBucket` → `Created`), else None."""
    if type_ != "Normal":
        return None
    return next((verb for verb in reasons.EVENT_PART_VERBS
                 if reason.startswith(verb) and reason[len(verb):len(verb) + 1].isupper()), None)  # fmt: skip


def grouped(events: list[tuple[EventType, str, str]]) -> list[tuple[EventType, str, str]]:
    """One event per part verb (reason the verb, the parts' messages joined in their order, at most MAX_MESSAGE
    characters), where the verb first came; every other event as it is."""
    out: list[tuple[EventType, str, str] | str] = []  # a verb stands for its group until the end
    messages: dict[str, list[str]] = {}
    for type_, reason, message in events:
        verb = part_verb(type_, reason)
        if verb is None:
            out.append((type_, reason, message))
        elif verb in messages:
            messages[verb].append(message)
        else:
            messages[verb] = [message]
            out.append(verb)
    return [("Normal", entry, _joined(messages[entry])) if isinstance(entry, str) else entry for entry in out]


def _joined(messages: list[str]) -> str:
    text = "; ".join(messages)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
