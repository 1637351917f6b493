"""The benchmark suite still runs (`make bench-smoke`); it asserts no times.

The groups scenario checks its own invariants as it runs (a membership change sends the
flow-mods the compiler predicts, a few per link of the group, not a re-install; a member
costs the same whatever its group's size; a group pair's lines grow linearly in its
members, N x N VM pairs' quadratically), so a zero exit status says they held."""

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
        "## Groups scenario",
        "a member added",
        "a member removed",
        "flows per member: its own port's lines",
        "One group pair against the VM pairs it replaces",
    ):
        assert measure in out, f"{measure!r} missing from the report:\n{out}"
