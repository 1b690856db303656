"""The one exponential back-off of the project: kopf handlers' retries, the resync schedule's retries and the
ingest worker's retries of one item all double from a first delay up to a cap."""

from __future__ import annotations

MAX_DOUBLINGS = 10
"""2**10 × the first delay is past any cap we use; bounding the exponent keeps a long retry count a float."""


def doubling(first: float, cap: float, attempt: int) -> float:
    """`first` × 2**attempt (attempt 0 = the first retry), at most `cap`; never below `first` (a cap under the
    first delay, e.g. a resync interval shorter than the retry delay, does not shorten the first delay)."""
    return float(min(first * 2 ** min(max(attempt, 0), MAX_DOUBLINGS), max(cap, first)))
