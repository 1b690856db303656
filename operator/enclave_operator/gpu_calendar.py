"""GPU booking arithmetic: who holds how many GPUs of one family and pool at every instant. Pure, no I/O.

A booking occupies `count` GPUs over the half-open window [start, end): two windows that touch
(one ends at the instant the other starts) do not overlap, and a zero-length window occupies
nothing. Every instant is an aware datetime in UTC; `utc()` converts inputs in other time zones and
refuses naive ones (a time without a zone is ambiguous by hours).

Everything here is one interval sweep: the bookings' start (+count) and end (-count) events sorted
by time, ends before starts at the same instant, summed in order: O(n log n) for n bookings.
Callers: the admission webhook (does a booking fit?), the GpuReservation controller (the definitive
decision in a stable order, capacity at risk), `enclave-operator gpu-calendar` and the metrics.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Hashable, Iterable, Sequence

UTC = datetime.UTC


def utc(value: datetime.datetime) -> datetime.datetime:
    """The same instant in UTC; ValueError for a naive datetime."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{value.isoformat()} has no time zone; write it as RFC 3339, e.g. 2026-12-01T08:00:00Z")
    return value.astimezone(UTC)


def stamp(value: datetime.datetime) -> str:
    """An instant as people read it in messages: 2026-12-03T20:00Z (seconds only when not zero)."""
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ" if value.second else "%Y-%m-%dT%H:%MZ")


def span(seconds: float) -> str:
    """A duration as people read it: 2d4h, 36h, 45m, 20s."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = "".join(parts)
    return text if text and not secs else text + f"{secs}s"


@dataclasses.dataclass(frozen=True)
class Slot:
    """A booking as the calendar sees it."""

    start: datetime.datetime
    end: datetime.datetime
    count: int
    key: Hashable = None
    """Identifies the booking (e.g. namespace/name) in results."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))
        if self.count < 0:
            raise ValueError(f"count {self.count} is negative")

    @property
    def empty(self) -> bool:
        return self.end <= self.start or self.count == 0

    def overlaps(self, start: datetime.datetime, end: datetime.datetime) -> bool:
        return not self.empty and self.start < end and start < self.end


@dataclasses.dataclass(frozen=True)
class Step:
    """GPUs in use over [start, end)."""

    start: datetime.datetime
    end: datetime.datetime
    used: int


def profile(
    slots: Iterable[Slot], since: datetime.datetime | None = None, until: datetime.datetime | None = None
) -> list[Step]:
    """Use over time as maximal steps of constant use, clipped to [since, until) when given.

    Without bounds the profile runs from the first start to the last end. Steps of zero use between
    bookings are included, so the steps tile the covered range without gaps.
    """
    lo = utc(since) if since is not None else None
    hi = utc(until) if until is not None else None
    events: list[tuple[datetime.datetime, int]] = []
    for slot in slots:
        if slot.empty or (lo is not None and slot.end <= lo) or (hi is not None and slot.start >= hi):
            continue
        events.append((slot.start, slot.count))
        events.append((slot.end, -slot.count))
    events.sort()  # by time, and at one instant ends (negative) before starts
    if lo is None and events:
        lo = events[0][0]
    if hi is None and events:
        hi = events[-1][0]
    if lo is None or hi is None or lo >= hi:
        return []
    starts: list[datetime.datetime] = [lo]
    uses: list[int] = []
    used, cursor = 0, lo
    for when, delta in events:
        if when > cursor:
            if when >= hi:
                break
            if not uses:  # [cursor, when) is used `used`: a new step only where the use changes
                uses.append(used)
            elif uses[-1] != used:
                starts.append(cursor)
                uses.append(used)
            cursor = when
        used += delta
    if not uses:
        uses.append(used)
    elif uses[-1] != used:
        starts.append(cursor)
        uses.append(used)
    ends = [*starts[1:], hi]
    return [Step(a, b, u) for a, b, u in zip(starts, ends, uses, strict=True)]


def peak(slots: Iterable[Slot], start: datetime.datetime, end: datetime.datetime) -> tuple[int, datetime.datetime]:
    """The most GPUs in use at any instant of [start, end), and the first instant it is reached."""
    best = Step(utc(start), utc(end), 0)
    for step in profile(slots, start, end):
        if step.used > best.used:
            best = step
    return best.used, best.start


@dataclasses.dataclass(frozen=True)
class Conflict:
    """The first instant at which a booking would exceed capacity."""

    instant: datetime.datetime
    used: int
    """GPUs already booked at that instant."""
    capacity: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.used, 0)


def first_conflict(slots: Iterable[Slot], candidate: Slot, capacity: int) -> Conflict | None:
    """Where `candidate` does not fit next to `slots` (which must not contain it), or None when it fits."""
    if candidate.empty:
        return None
    for step in profile(slots, candidate.start, candidate.end):
        if step.used + candidate.count > capacity:
            return Conflict(step.start, step.used, capacity)
    return None


def free_windows(
    slots: Iterable[Slot],
    capacity: int,
    count: int,
    since: datetime.datetime,
    until: datetime.datetime,
) -> list[Step]:
    """Maximal windows within [since, until) where at least `count` GPUs are free; `used` is the most
    in use during each window (so `capacity - used` GPUs are free throughout it)."""
    out: list[Step] = []
    for step in profile(slots, since, until):
        if capacity - step.used < count:
            continue
        if out and out[-1].end == step.start:
            out[-1] = Step(out[-1].start, step.end, max(out[-1].used, step.used))
        else:
            out.append(step)
    return out


def nearby_windows(
    slots: Iterable[Slot],
    capacity: int,
    candidate: Slot,
    horizon: datetime.timedelta,
    now: datetime.datetime,
    limit: int = 3,
) -> list[Step]:
    """Free windows for `candidate.count` GPUs within `horizon` of the candidate's window (never before
    `now`): those long enough for the requested duration first, then the nearest to the requested start."""
    since = max(candidate.start - horizon, utc(now))
    until = candidate.end + horizon
    if since >= until:
        return []
    length = candidate.end - candidate.start

    def rank(window: Step) -> tuple[bool, float]:
        return (window.end - window.start < length, abs((window.start - candidate.start).total_seconds()))

    return sorted(free_windows(slots, capacity, candidate.count, since, until), key=rank)[:limit]


def admit_in_order(
    admitted: Sequence[Slot], candidates: Sequence[Slot], capacity: int
) -> tuple[list[Slot], dict[Hashable, Conflict]]:
    """Decide candidates one by one, in the order given, against what is admitted so far.

    `admitted` stay admitted whatever happens (a decision is never taken back); each candidate is
    admitted when it fits next to them and the candidates admitted before it, else it gets its
    Conflict. Returns (the admitted candidates, key → Conflict of the rejected ones).
    """
    kept = list(admitted)
    accepted: list[Slot] = []
    rejected: dict[Hashable, Conflict] = {}
    for candidate in candidates:
        conflict = first_conflict(kept, candidate, capacity)
        if conflict is None:
            kept.append(candidate)
            accepted.append(candidate)
        else:
            rejected[candidate.key] = conflict
    return accepted, rejected


def at_risk(ordered: Sequence[Slot], capacity: int, now: datetime.datetime) -> dict[Hashable, Conflict]:
    """Bookings that no longer fit the capacity measured now, replayed in their stable order.

    Only what has not ended matters; the earlier booking keeps its GPUs, as at admission.
    """
    now = utc(now)
    live = [Slot(max(s.start, now), s.end, s.count, s.key) for s in ordered if s.end > now]
    if all(step.used <= capacity for step in profile(live)):
        return {}  # one sweep: everything fits (the usual case), nobody is at risk
    return admit_in_order([], live, capacity)[1]


def totals_at(slots: Iterable[Slot], instant: datetime.datetime) -> int:
    """GPUs in use at one instant."""
    instant = utc(instant)
    return sum(s.count for s in slots if not s.empty and s.start <= instant < s.end)


def explain(label: str, candidate: Slot, conflict: Conflict, windows: Sequence[Step]) -> str:
    """The message a researcher can act on: the instant, what is free there, and free windows nearby."""
    text = (
        f"{label}: at {stamp(conflict.instant)} {conflict.used} of {conflict.capacity} GPUs are booked, "
        f"{conflict.free} free, {candidate.count} asked"
    )
    if candidate.count > conflict.capacity:
        return text + f"; only {conflict.capacity} GPUs of {label} exist"
    if not windows:
        return text + f"; no window with {candidate.count} free GPUs nearby"
    options = []
    for window in windows:
        free = conflict.capacity - window.used
        length = span((window.end - window.start).total_seconds())
        options.append(f"{free} free from {stamp(window.start)} to {stamp(window.end)} ({length})")
    return text + "; " + ", ".join(options)
