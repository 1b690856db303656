"""The projects benchmark, small (N=20), so that it cannot rot: it runs end to end and reports every figure.

Timings are printed by the benchmark, never asserted here (the machine is shared). What is asserted is what
must hold at any speed: the floor writes what the adapters call up to date, every project passes the operator's
admission webhooks (installed as in a deployment) and becomes Ready, the edits of the pilot take effect, and a
no-op resync writes nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from localenv.runtime import REPO_ROOT
from support import timeouts


def test_projects_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "projects_bench.py"), "-n", "20", "--resync", "5", "--window", "8",
         "--json", str(out)],
        capture_output=True, text=True, timeout=timeouts.BENCH_SMOKE,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("admission webhooks:", "floor:", "CPU seconds during the floor:", "operator, until all Ready:",
                 "ratio operator / floor:", "CPU seconds during the rollout:",
                 "API requests per project:", "backend requests per project:", "operator RSS:",
                 "single-edit latency under load:", "no-op resync"):  # fmt: skip
        assert line in result.stdout, f"the report lacks {line!r}:\n{result.stdout}"
    report = json.loads(out.read_text())
    assert report["floor"]["verified"] == "3/3 projects up to date", report["floor"]["problems"]
    assert report["operator"]["ready"] == 20
    assert report["floor"]["cpu"]["bench"] > 0, "the floor's own client is counted"
    assert report["webhooks"].startswith("installed"), report["webhooks"]
    assert report["operator"]["admission_calls_per_project"] >= 2, "every create passed both webhooks"
    assert report["edits"] and all(math.isfinite(latency) for _, latency in report["edits"]), report["edits"]
    assert report["resync"]["reconciles"] >= 20, "every project was re-observed in the window"
    assert report["resync"]["writes"] == 0 and report["resync"]["s3_writes"] == 0, report["resync"]
    assert report["peak_rss_mb"] > 0 and report["rss_idle_mb"] > 0
