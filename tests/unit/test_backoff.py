"""The one back-off function and its three users (kopf handler retries, resync retries, ingest item retries)."""

from __future__ import annotations

import pytest

from enclave_operator.backoff import MAX_DOUBLINGS, doubling


def test_doubles_from_the_first_delay_up_to_the_cap() -> None:
    assert [doubling(2, 60, n) for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]


def test_a_cap_below_the_first_delay_never_shortens_it() -> None:
    assert doubling(30, 10, 0) == 30 and doubling(30, 10, 5) == 30


@pytest.mark.parametrize("attempt", [MAX_DOUBLINGS, 10_000])
def test_a_long_retry_count_stays_a_float_at_the_cap(attempt: int) -> None:
    assert doubling(0.5, 1e9, attempt) == 0.5 * 2**MAX_DOUBLINGS


def test_a_negative_attempt_is_the_first_delay() -> None:
    assert doubling(3, 60, -1) == 3


def test_handler_and_ingest_retries_go_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing the one function changes both (the resync loop's retries: tests/unit/test_resync.py)."""
    from enclave_operator import handlers
    from enclave_operator.ingest import retry
    from enclave_operator.settings import IntervalSettings

    calls: list[tuple[float, float, int]] = []

    def spy(first: float, cap: float, attempt: int) -> float:
        calls.append((first, cap, attempt))
        return 7.0

    for module in (handlers, retry):
        monkeypatch.setattr(module, "doubling", spy)
    assert handlers.backoff(IntervalSettings(retry_seconds=2, resync_seconds=60), 3) == 7.0
    assert retry.backoff(2, base=0.5) == 7.0
    assert calls == [(2, 60, 3), (0.5, retry.MAX_DELAY, 2)]
