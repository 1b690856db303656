"""Run `enclave-operator` under tracemalloc for `projects_bench.py --memory-profile` (slow: not for timings).

    python bench/traced_operator.py SNAPSHOT run --config ...

On SIGUSR1 the process writes a tracemalloc snapshot to SNAPSHOT (then SNAPSHOT with suffix .done).
"""

from __future__ import annotations

import gc
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from enclave_operator import cli


def main() -> int:
    snapshot = Path(sys.argv[1])
    tracemalloc.start(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        gc.collect()
        tracemalloc.take_snapshot().dump(str(snapshot))
        snapshot.with_suffix(".done").touch()

    signal.signal(signal.SIGUSR1, dump)
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
