"""The benchmark suite still runs (`make bench-smoke`); it asserts no times.

The groups scenario checks its own invariants as it runs (a membership change sends the
flow-mods the compiler predicts, a few per link of the group, not a re-install; a member
costs the same whatever its group's size; a group pair's lines grow linearly in its
members, N x N VM pairs' quadratically), and so does the multi-host scenario (every
cross-host pair compiled on both bridges, every bridge holding the flows the compiler
predicts, a change between two VMs of one host sending nothing to the others, a cross-host
one nothing beyond its two hosts), so a zero exit status says they held; the report
says a restart with the state unchanged sent nothing to any bridge."""

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
        "new TCP connections per second, two VMs alone on the switch, vs seed",
        "packet-ins during data traffic, two VMs alone",
        "flows per VM",
        "packet-ins during data traffic",
        "## Groups scenario",
        "a member added",
        "a member removed",
        "flows per member: its own port's lines",
        "One group pair against the VM pairs it replaces",
        "## Multi-host scenario",
        "every switch reported in sync",
        "flow-mods to the 2 other bridges (target 0) | 0 in all",
        "flow-mods to the 1 others (target 0) | 0 in all",
        # A restart with the state unchanged is hitless on every host (one repeat here).
        "restart with the state unchanged: flow-mods to all bridges (target 0) | 0 |",
    ):
        assert measure in out, f"{measure!r} missing from the report:\n{out}"
