"""The benchmark suite still runs (`make bench-smoke`); it asserts no times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_runs_and_reports_every_measure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for measure in (
        "bring-up of",
        "policy change",
        "resync after a controller restart",
        "new TCP connections per second vs seed",
        "bulk TCP throughput vs seed",
        "flows per VM",
        "packet-ins during data traffic",
    ):
        assert measure in out, f"{measure!r} missing from the report:\n{out}"
