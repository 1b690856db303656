"""Conditions with kstatus semantics: constructors, and one merge that stamps observedGeneration,
keeps lastTransitionTime when the status did not change, and tells whether anything changed at all
(so the caller writes status only on change).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from enclave_operator import reasons

Status = Literal["True", "False", "Unknown"]


@dataclasses.dataclass(frozen=True)
class Cond:
    """A condition as the reconciler computes it, before generation and time are stamped."""

    type: str
    status: Status
    reason: str
    message: str = ""


def true(type_: str, reason: str, message: str = "") -> Cond:
    return Cond(type_, "True", reason, message)


def false(type_: str, reason: str, message: str = "") -> Cond:
    return Cond(type_, "False", reason, message)


def unknown(type_: str, reason: str, message: str = "") -> Cond:
    return Cond(type_, "Unknown", reason, message)


def summarize(parts: Sequence[Cond], *, stalled: Cond | None = None, in_progress: bool = False) -> list[Cond]:
    """Ready / Reconciling / Stalled from the per-part conditions.

    Ready is True only when every part is True. Reconciling is True while work is still going on
    (a part is not ready yet and will be retried). Stalled is True when progress needs a human
    (e.g. an invalid spec); a stalled object is not reconciling.
    """
    not_ready = [p for p in parts if p.status != "True"]
    if stalled is not None:
        ready = false(reasons.READY, stalled.reason, stalled.message)
        return [ready, false(reasons.RECONCILING, stalled.reason, stalled.message), stalled]
    if not_ready:
        message = "; ".join(f"{p.type}: {p.message or p.reason}" for p in not_ready)
        ready = false(reasons.READY, reasons.REASON_PARTS_NOT_READY, message)
        reconciling = true(reasons.RECONCILING, reasons.REASON_PROGRESSING, message)
    else:
        ready = true(reasons.READY, reasons.REASON_AVAILABLE, "all parts are ready")
        reconciling = (
            true(reasons.RECONCILING, reasons.REASON_PROGRESSING, "applying changes")
            if in_progress
            else false(reasons.RECONCILING, reasons.REASON_RECONCILED, "")
        )
    return [ready, reconciling, false(reasons.STALLED, reasons.REASON_RECONCILED, "")]


def merge(
    existing: Iterable[Mapping[str, Any]],
    computed: Iterable[Cond],
    generation: int,
    now: datetime.datetime | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """New conditions list and whether it differs from `existing`.

    Conditions not in `computed` are kept as they are (another part of the operator owns them).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_type = {c["type"]: dict(c) for c in existing}
    order = list(by_type)
    changed = False
    for cond in computed:
        old = by_type.get(cond.type)
        new = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": old["lastTransitionTime"]
            if old and old.get("status") == cond.status and old.get("lastTransitionTime")
            else stamp,
        }
        if old != new:
            changed = True
        if cond.type not in by_type:
            order.append(cond.type)
        by_type[cond.type] = new
    return [by_type[t] for t in order], changed


def get(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
