"""Reading shared state from another thread while the event loop's side changes it (the metrics server does)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


def errors_of_reads_during(read: Callable[[], object], change: Callable[[], None]) -> list[BaseException]:
    """Call `read` over and over in a second thread while `change` runs in this one; what `read` raised. The
    interpreter switches threads every few microseconds meanwhile (5 ms by default), so that a read that iterates
    what `change` changes is caught in the act every time, not once in a while."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                read()
            except Exception as error:  # noqa: BLE001 - what the caller looks for
                errors.append(error)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        change()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    return errors
