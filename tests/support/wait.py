"""Polling until a condition holds, with a message that says what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from support import timeouts

T = TypeVar("T")


class Fatal(AssertionError):
    """Raised by a check when waiting longer cannot help (the process under test died)."""


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = timeouts.POLL) -> T:
    """Call `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except Fatal:
            raise
        except Exception as error:  # noqa: BLE001 - the last error is reported on timeout
            last = error
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)
