"""The booking arithmetic: windows are half-open, time zones are normalised, the sweep agrees with brute force."""

from __future__ import annotations

import datetime
import random

import pytest

from enclave_operator import gpu_calendar as cal

T0 = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


def h(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def slot(start: float, end: float, count: int, key: str = "") -> cal.Slot:
    return cal.Slot(h(start), h(end), count, key or f"{start}-{end}-{count}")


@pytest.mark.parametrize(
    ("slots", "window", "expected", "why"),
    [
        ([], (0, 10), [(0, 10, 0)], "nothing booked: one free step"),
        ([slot(2, 5, 3)], (0, 10), [(0, 2, 0), (2, 5, 3), (5, 10, 0)], "one booking"),
        ([slot(0, 4, 2), slot(4, 8, 3)], (0, 8), [(0, 4, 2), (4, 8, 3)], "touching windows do not overlap"),
        ([slot(0, 4, 2), slot(4, 8, 2)], (0, 8), [(0, 8, 2)], "touching equal use merges into one step"),
        ([slot(1, 4, 2), slot(1, 6, 3)], (0, 8), [(0, 1, 0), (1, 4, 5), (4, 6, 3), (6, 8, 0)], "same start adds up"),
        ([slot(3, 3, 4)], (0, 8), [(0, 8, 0)], "a zero-length window occupies nothing"),
        ([slot(-5, 20, 1)], (0, 8), [(0, 8, 1)], "a booking wider than the window is clipped"),
        ([slot(9, 12, 1)], (0, 8), [(0, 8, 0)], "a booking after the window is not counted"),
    ],
)  # fmt: skip
def test_profile(slots: list[cal.Slot], window: tuple[float, float], expected: list[tuple], why: str) -> None:
    steps = cal.profile(slots, h(window[0]), h(window[1]))
    assert [(s.start, s.end, s.used) for s in steps] == [(h(a), h(b), u) for a, b, u in expected], why


def test_time_zones_in_input_are_the_same_instants() -> None:
    local = cal.Slot(datetime.datetime(2026, 12, 1, 10, 0, tzinfo=PLUS2), datetime.datetime(2026, 12, 1, 12, 0,
                     tzinfo=PLUS2), 2)  # fmt: skip
    assert local.start == T0 and local.start.tzinfo == datetime.UTC
    assert cal.first_conflict([local], slot(1, 3, 3), capacity=4) is not None, "10:00+02:00 is 08:00Z"
    assert cal.first_conflict([local], slot(2, 3, 3), capacity=4) is None, "12:00+02:00 ends at 10:00Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        cal.Slot(datetime.datetime(2026, 12, 1, 8, 0), h(1), 1)


@pytest.mark.parametrize(
    ("booked", "candidate", "capacity", "conflict_at", "used", "why"),
    [
        ([slot(0, 10, 4)], slot(2, 5, 4), 8, None, None, "exactly at capacity fits"),
        ([slot(0, 10, 4)], slot(2, 5, 5), 8, 2, 4, "one over capacity: the instant is the candidate's start"),
        ([slot(0, 4, 8)], slot(4, 8, 8), 8, None, None, "touching windows never conflict"),
        ([slot(0, 4, 8)], slot(3, 8, 1), 8, 3, 8, "overlapping by one hour conflicts at its first instant"),
        ([slot(5, 6, 6), slot(7, 9, 2)], slot(0, 10, 3), 8, 5, 6, "the first instant that overflows is named"),
        ([slot(1, 3, 4), slot(1, 3, 4)], slot(1, 2, 1), 8, 1, 8, "same start, two bookings fill it"),
        ([], slot(0, 1, 9), 8, 0, 0, "more than the family has"),
        ([slot(0, 10, 8)], slot(5, 5, 8), 8, None, None, "a zero-length candidate fits anywhere"),
    ],
)  # fmt: skip
def test_first_conflict(booked: list[cal.Slot], candidate: cal.Slot, capacity: int, conflict_at: float | None,
                        used: int | None, why: str) -> None:  # fmt: skip
    conflict = cal.first_conflict(booked, candidate, capacity)
    if conflict_at is None:
        assert conflict is None, why
    else:
        assert conflict is not None and (conflict.instant, conflict.used) == (h(conflict_at), used), why
        assert conflict.free == max(capacity - used, 0)


def test_free_windows_and_the_message_name_the_instant_and_the_alternatives() -> None:
    booked = [slot(0, 60, 6, "a"), slot(24, 48, 2, "b")]
    candidate = slot(20, 30, 4, "c")
    conflict = cal.first_conflict(booked, candidate, 8)
    assert conflict is not None and conflict.instant == h(20) and conflict.free == 2
    windows = cal.nearby_windows(booked, 8, candidate, datetime.timedelta(days=7), now=h(-1))
    assert [(w.start, w.end) for w in windows] == [(h(60), h(20 + 10 + 168)), (h(-1), h(0))], "long enough first"
    message = cal.explain("a100 (slurm)", candidate, conflict, windows)
    assert message.startswith("a100 (slurm): at 2026-12-02T04:00Z 6 of 8 GPUs are booked, 2 free, 4 asked")
    assert "8 free from 2026-12-03T20:00Z" in message
    assert cal.explain("a100", slot(0, 1, 9), cal.Conflict(h(0), 0, 8), []).endswith("only 8 GPUs of a100 exist")


def test_nearby_windows_never_start_in_the_past() -> None:
    windows = cal.nearby_windows([], 8, slot(10, 12, 1), datetime.timedelta(hours=24), now=h(5))
    assert windows and windows[0].start == h(5)


def test_admission_in_stable_order_keeps_the_earlier_booking() -> None:
    admitted = [slot(0, 10, 4, "old")]
    first, second = slot(2, 6, 4, "first"), slot(4, 8, 4, "second")
    accepted, rejected = cal.admit_in_order(admitted, [first, second], capacity=8)
    assert [s.key for s in accepted] == ["first"]
    assert rejected["second"].instant == h(4) and rejected["second"].used == 8
    accepted, rejected = cal.admit_in_order(admitted, [second, first], capacity=8)
    assert [s.key for s in accepted] == ["second"] and "first" in rejected, "the order decides, not the set"


def test_capacity_drop_puts_the_later_bookings_at_risk_and_ignores_ended_ones() -> None:
    ordered = [slot(-10, -1, 8, "ended"), slot(0, 10, 4, "a"), slot(5, 20, 4, "b"), slot(30, 40, 4, "c")]
    assert cal.at_risk(ordered, 8, now=h(0)) == {}
    risky = cal.at_risk(ordered, 6, now=h(0))
    assert list(risky) == ["b"] and risky["b"].instant == h(5)
    assert list(cal.at_risk(ordered, 6, now=h(12))) == [], "after a ends, b fits in 6"


def test_span_and_stamp() -> None:
    assert cal.span(3 * 86400 + 4 * 3600) == "3d4h"
    assert cal.span(45 * 60) == "45m" and cal.span(20) == "20s" and cal.span(0) == "0s"
    assert cal.stamp(datetime.datetime(2026, 12, 3, 22, 0, tzinfo=PLUS2)) == "2026-12-03T20:00Z"


def test_the_sweep_agrees_with_brute_force() -> None:
    """Random bookings (seeded): the sweep's use at every breakpoint equals counting the windows."""
    rng = random.Random(9)
    for _ in range(50):
        slots = [slot(a := rng.randint(0, 40), a + rng.randint(0, 12), rng.randint(0, 4), str(i)) for i in range(30)]
        steps = cal.profile(slots, h(0), h(60))
        assert steps[0].start == h(0) and steps[-1].end == h(60)
        assert all(x.end == y.start for x, y in zip(steps, steps[1:], strict=False)), "steps tile the range"
        for step in steps:
            assert step.used == cal.totals_at(slots, step.start)
        peak, _ = cal.peak(slots, h(0), h(60))
        assert peak == max(cal.totals_at(slots, h(t / 2)) for t in range(120))


def test_ten_thousand_bookings_are_one_sweep() -> None:
    """Not a timing assertion: the number of steps is bounded by the number of distinct edges."""
    rng = random.Random(3)
    slots = [slot(a := rng.randint(0, 5000), a + rng.randint(1, 48), 1, str(i)) for i in range(10_000)]
    steps = cal.profile(slots)
    assert len(steps) <= 2 * len(slots)
    assert max(s.used for s in steps) == cal.peak(slots, h(0), h(6000))[0]
