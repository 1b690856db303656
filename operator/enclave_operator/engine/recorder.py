"""Where the engine reports what it did: Kubernetes events in production, a list in unit tests."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

EventType = Literal["Normal", "Warning"]


class Recorder(Protocol):
    def event(self, type_: EventType, reason: str, message: str) -> None: ...


@dataclasses.dataclass
class ListRecorder:
    """Keeps events in memory (unit tests, benchmarks)."""

    events: list[tuple[EventType, str, str]] = dataclasses.field(default_factory=list)

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))
