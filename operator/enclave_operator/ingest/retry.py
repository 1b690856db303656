"""Bounded retries with exponential backoff (per item and for discovery)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from enclave_operator.backoff import doubling

T = TypeVar("T")

#: first backoff in seconds (doubling, capped); INGEST_BACKOFF_SECONDS overrides it (tests)
BASE_DELAY = float(os.environ.get("INGEST_BACKOFF_SECONDS", "0.5"))
MAX_DELAY = 10.0


class Permanent(Exception):  # noqa: N818 - a marker wrapper, not an error in itself
    """Wraps an error that retrying cannot fix (e.g. HTTP 401); re-raised unwrapped."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def backoff(attempt: int, base: float | None = None) -> float:
    return doubling(BASE_DELAY if base is None else base, MAX_DELAY, attempt)


def with_retries(
    fn: Callable[[], T],
    retries: int,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[], bool] | None = None,
) -> T:
    """Call ``fn`` up to ``retries + 1`` times; the last error propagates.

    ``fn`` raises :class:`Permanent` for errors that must not be retried.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Permanent as exc:
            raise exc.error from None
        except retry_on:
            if attempt >= retries or (stop is not None and stop()):
                raise
            sleep(backoff(attempt))
            attempt += 1
