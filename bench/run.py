"""ryu-ctfw benchmarks against a real Open vSwitch, each against a baseline in the same run.

    make bench          # 500 VMs, 5,000 pairs, 3 repeats, then the groups scenario
                        # (1,000 VMs in 20 groups, 40 group pairs), then the multi-host
                        # one (20 bridges x 25 VMs); writes bench/results.md
    make bench-smoke    # a small run that checks the suite works (no times asserted)

Every figure is reported as a ratio to its baseline (the switch's own practical limit,
measured here, now) with the absolute numbers beside it; each is repeated and reported as
median and spread (min-max). Needs root, like the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import ryu

from ryu_ctfw import lab, store
from ryu_ctfw.compiler import (
    KIND_VM,
    OPENING,
    Attachment,
    compile_switch,
    cookie_kind,
    pair_unit_flows,
)
from ryu_ctfw.flowset import FlowSet
from ryu_ctfw.policy import PairRequest, Policy, PolicyError, Vm

try:  # python bench/run.py (the Makefile) or python -m bench.run
    import groups
    import hosts
except ImportError:
    from bench import groups, hosts

SERVICES = [("any", None), ("tcp", "22"), ("udp", "53"), ("icmp", None), ("tcp", "8000-8100")]
BRIDGE = "ctbench0"
FIRST_OFPORT = 10
# The baseline for installing flows: one transaction of the switch's own client.
BUNDLE_ADD = ["ovs-ofctl", "-O", "OpenFlow14", "--bundle", "add-flows"]


@dataclass
class Row:
    what: str
    ours: list[float]
    base: list[float]
    unit: str
    target: str
    lower_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.base)

    def met(self) -> bool:
        limit = float(re.search(r"[\d.]+", self.target)[0])  # type: ignore[index]
        return self.ratio <= limit if self.lower_is_better else self.ratio >= limit


@dataclass
class Bench:
    root: Path
    vms: int
    pairs: int
    repeat: int
    changes: int
    seconds: float
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    # The datapath rows are the noisiest: many short runs (0: repeat), whose median a burst
    # of other work on the machine moves less than it moves a few long ones.
    datapath_repeat: int = 0
    # Where the datapath rows were measured, when not on the bench's own bridge at scale.
    scope: ClassVar[str] = ""
    bridge: ClassVar[str] = BRIDGE

    def __post_init__(self) -> None:
        self.ovs = lab.Ovs(self.root / "ovs")
        self.ctl = lab.Controller(self.root / "ctl")
        self.policy = self.make_policy()
        self.attached = {
            name: Attachment(FIRST_OFPORT + i, vm.mac)
            for i, (name, vm) in enumerate(self.policy.vms.items())
        }

    def make_policy(self) -> Policy:
        return make_policy(self.vms, self.pairs)

    # --- set-up ----------------------------------------------------------------------------
    def expected_flows(self) -> int:
        return len(compile_switch(self.policy, self.attached, 1))

    def add_ports(self, chunk: int = 250) -> None:
        """The bridge and one internal port per VM, a few hundred per transaction (each
        ovs-vsctl call has a 10 s timeout)."""
        self.ovs.vsctl(
            "add-br",
            self.bridge,
            "--",
            "set",
            "bridge",
            self.bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow13,OpenFlow14",
            "fail_mode=secure",
            "other-config:datapath-id=00000000000000b1",
        )
        ports = list(self.policy.vms.values())
        for start in range(0, len(ports), chunk):
            cmd: list[str] = []
            for i, vm in enumerate(ports[start : start + chunk], start):
                cmd += [
                    "--",
                    "add-port",
                    self.bridge,
                    vm.port,
                    "--",
                    "set",
                    "interface",
                    vm.port,
                    "type=internal",
                    f"ofport_request={FIRST_OFPORT + i}",
                ]
            self.ovs.vsctl(*cmd[1:])

    def flow_count(self) -> int:
        out = self.ovs.ofctl("dump-aggregate", self.bridge)
        return int(re.search(r"flow_count=(\d+)", out)[1])  # type: ignore[index]

    def wait_flows(self, count: int, timeout: float = 600) -> None:
        lab.wait_for(lambda: self.flow_count() == count, timeout, f"{count} flows", 0.02)

    def detach(self) -> None:
        """No controller (which flushes the bridge) and no flows."""
        self.ovs.vsctl("del-controller", self.bridge)
        self.ovs.ofctl("del-flows", self.bridge)

    # --- the measurements -------------------------------------------------------------------
    def bring_up(self) -> None:
        store.save(self.ctl.state_file, self.policy)
        want = self.expected_flows()
        ours, base = [], []
        phases = []
        for _ in range(self.repeat):
            self.detach()
            self.ctl.start(timeout=60)
            synced = self.syncs()
            t0 = time.perf_counter()
            self.ovs.set_controller(self.bridge, self.ctl.ofp_port)
            self.wait_flows(want)
            ours.append(time.perf_counter() - t0)
            phases.append(self.sync_report(synced)[1])
            dump = self.ovs.dump_flows(self.bridge, "--no-stats")
            self.ctl.stop()
            self.detach()
            flows_file = self.root / "flows.txt"
            flows_file.write_text(dump)
            # Untimed, though the controller's time includes its meters: in the baseline's
            # favour.
            self.ovs.add_meters(self.bridge, dump)
            t0 = time.perf_counter()
            lab.run(
                [*BUNDLE_ADD, self.bridge, str(flows_file)],
                self.ovs.env,
                timeout=600,
            )
            base.append(time.perf_counter() - t0)
            assert self.flow_count() == want
        self.facts["flows at scale"] = str(want)
        self.facts["bring-up, inside the controller"] = phase_text(phases)
        self.rows.append(
            Row(
                f"bring-up of {want} flows",
                ours,
                base,
                "s",
                "<= 1.5x",
                note="baseline: ovs-ofctl --bundle add-flows of the same flows",
            )
        )

    def start_attached(self, flows: int | None = None) -> None:
        self.detach()
        self.ctl.start(timeout=60)
        self.ovs.set_controller(self.bridge, self.ctl.ofp_port)
        self.wait_flows(flows or self.expected_flows())

    def change_latency(self) -> None:
        self.start_attached()
        names = list(self.policy.vms)
        rng = random.Random(7)
        ours = []
        while len(ours) < self.changes:
            a, b = rng.sample(names, 2)
            body = {
                "initiator": a,
                "responder": b,
                "protocol": "tcp",
                "ports": str(rng.randrange(20000, 30000)),
            }
            t0 = time.perf_counter()
            status, answer = self.ctl.api("POST", "/ctfw/v1/pairs", body)
            if status == 409:
                continue
            assert status == 201, answer
            ours.append(time.perf_counter() - t0)
        # Baseline: one ovs-ofctl process adding the flows of one such pair.
        a, b = names[0], names[1]
        pair = self.policy.add_pair(PairRequest(a, b, "tcp", "65000"))
        flows = pair_unit_flows(self.policy, pair, self.attached, 1)
        flows_file = self.root / "pair.txt"
        flows_file.write_text("".join(f"cookie=0x1,{f.text()}\n" for f in flows))
        base = []
        for _ in range(max(20, self.repeat)):
            t0 = time.perf_counter()
            lab.run(
                ["ovs-ofctl", "-O", "OpenFlow13", "add-flows", self.bridge, str(flows_file)],
                self.ovs.env,
            )
            base.append(time.perf_counter() - t0)
            self.ovs.ofctl("del-flows", self.bridge, "cookie=0x1/-1")
        self.ctl.stop()
        self.policy = store.load(self.ctl.state_file)  # now with the pairs just added
        ours_ms, base_ms = [t * 1000 for t in ours], [t * 1000 for t in base]
        q = statistics.quantiles(ours_ms, n=100, method="inclusive")
        self.facts["change latency p50 / p99 / max"] = (
            f"{statistics.median(ours_ms):.1f} / {q[98]:.1f} / {max(ours_ms):.1f} ms"
        )
        self.rows.append(
            Row(
                f"policy change, {len(ours)} POST /pairs",
                ours_ms,
                base_ms,
                "ms",
                "<= 1.0x",
                note="baseline: one ovs-ofctl add-flows process, same flows",
            )
        )

    def resync(self) -> None:
        self.start_attached()
        ours, base, mods, phases, restart = [], [], [], [], []
        for _ in range(self.repeat):
            self.ctl.stop()
            synced = self.syncs()
            t0 = time.perf_counter()
            self.ctl.start(timeout=60)
            (after_connect, changed), phase = self.sync_report(synced)
            restart.append(time.perf_counter() - t0)
            ours.append(after_connect)
            mods.append(changed)
            phases.append(phase)
            t0 = time.perf_counter()
            self.ovs.dump_flows(self.bridge)
            base.append(time.perf_counter() - t0)
        self.facts["flow-mods on resync (target 0)"] = ", ".join(map(str, mods))
        self.facts["resync, inside the controller"] = phase_text(phases)
        self.facts["controller restart to in sync (start, load, switch reconnect, resync)"] = (
            f"{stats(restart)} s"
        )
        self.rows.append(
            Row(
                "resync after a controller restart",
                ours,
                base,
                "s",
                "<= 2x",
                note="baseline: one ovs-ofctl dump-flows of the table",
            )
        )
        self.ctl.stop()

    def where_time_goes(self) -> None:
        """The controller's own steps at this scale, timed in-process, to explain the rows."""
        from ryu.ofproto import ofproto_protocol, ofproto_v1_3

        from ryu_ctfw import wire
        from ryu_ctfw.app import tune_gc
        from ryu_ctfw.compiler import base_flows, vm_port_flows
        from ryu_ctfw.compiler import pair_flows as pf
        from ryu_ctfw.flowset import FlowSet

        def ms(fn, n: int = 3) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) / n * 1000

        def cold() -> None:
            for cache in (pf, vm_port_flows, base_flows, wire.match_bytes, wire.flow_add):
                cache.cache_clear()
            FlowSet.build(self.policy, self.attached, 1)

        tune_gc()  # as ryu-manager runs with ryu_ctfw.app
        flows = list(FlowSet.build(self.policy, self.attached, 1).flows().values())

        def pack() -> None:
            wire.match_bytes.cache_clear()
            wire.flow_add.cache_clear()
            for f in flows:
                wire.bundle_add(1, 3, wire.flow_add(f), 1)

        a, b = list(self.policy.vms)[:2]
        after = self.policy.copy()
        after.add_pair(PairRequest(a, b, "tcp", "64999"))
        state = self.root / "t.json"
        store.save(state, self.policy)

        def one_pair() -> None:
            fs = FlowSet.build(self.policy, self.attached, 1)
            t0 = time.perf_counter()
            fs.update(after, self.attached, 1)
            self.timing["update"] = (time.perf_counter() - t0) * 1000

        def record() -> None:
            store.record(state, self.policy, after)
            store.record(state, after, self.policy)

        # What Ryu's own encoding cost per flow-mod, for comparison with wire.py.
        dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
        parser = dp.ofproto_parser
        sample = flows[-1000:]

        def ryu_pack() -> None:
            for f in sample:
                match = parser.OFPMatch(in_port=f.match.in_port or 1, eth_dst="52:54:00:00:00:01")
                act = [parser.OFPActionOutput(dp.ofproto.OFPP_NORMAL)]
                inst = [parser.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS, act)]
                mod = parser.OFPFlowMod(dp, cookie=f.cookie, table_id=f.table, match=match,
                                        priority=f.priority, instructions=inst)  # fmt: skip
                add = parser.ONFBundleAddMsg(dp, 1, 3, mod, [])
                add.xid = 1
                add.serialize()

        one_pair()
        facts = {
            "compile from scratch, all flows": ms(cold, 1),
            f"pack {len(flows)} bundled flow-mods (wire.py)": ms(pack, 1),
            "Ryu's encoder, same count, simpler matches (for comparison)": ms(ryu_pack, 1)
            * len(flows)
            / len(sample),
            "update the flow set for one new pair": self.timing["update"],
            "store one change (journal record)": ms(lambda: record(), 10) / 2,
            "store the whole policy (snapshot)": ms(lambda: store.save(state, self.policy)),
        }
        for what, value in facts.items():
            self.facts[f"time: {what}"] = f"{value:.1f} ms"
        self.timing.update(
            zip(("cold", "pack", "ryu", "update", "record", "save"), facts.values(), strict=True)
        )
        self.timing["flows"] = len(flows)

    def footprint(self) -> None:
        flows = compile_switch(self.policy, self.attached, 1)
        kinds = Counter(cookie_kind(f.cookie) for f in flows)
        per_service: dict[str, list[int]] = {}
        for pair in self.policy.pairs.values():
            # The service lines (commit and output); a pair's other lines belong to its
            # initiator -> responder link, one set however many pairs the two VMs have.
            lines = pair_unit_flows(self.policy, pair, self.attached, 1)
            n = sum(1 for f in lines if f.match.ct_state in OPENING and f.match.ip_frag is None)
            kind = pair.protocol
            if pair.ports:
                kind += " range" if "-" in pair.ports else " one port"
            per_service.setdefault(kind, []).append(n)
        self.facts["flows per VM (report)"] = f"{kinds[KIND_VM] / len(self.policy.vms):.1f}"
        self.facts["service lines per pair-service (+new and +est per prefix block per family)"] = (
            ", ".join(f"{svc}: {max(ns)}" for svc, ns in sorted(per_service.items()))
        )
        self.facts["lines per initiator -> responder link (shared by its pairs)"] = "5"
        sizes = []
        for scale in (1, 2, 4):
            policy = make_policy(self.vms // scale, self.pairs // scale)
            attached = {
                name: Attachment(FIRST_OFPORT + i, vm.mac)
                for i, (name, vm) in enumerate(policy.vms.items())
            }
            sizes.append((len(policy.pairs), len(compile_switch(policy, attached, 1))))
        (big_pairs, big_flows), (small_pairs, small_flows) = sizes[0], sizes[-1]
        self.facts["growth: flows for pairs (with VMs in proportion)"] = (
            ", ".join(f"{n} for {p}" for p, n in reversed(sizes))
            + f" ({big_flows / small_flows:.2f}x flows for {big_pairs / small_pairs:.0f}x pairs)"
        )

    def datapath(self) -> None:
        """TCP connection rate and throughput between two namespace VMs, three pipelines."""
        vm1 = lab.Vm("ctbench-vm1", "ctbenchp1", "52:54:00:bb:00:01", ["198.19.0.1/24"]).create()
        vm2 = lab.Vm("ctbench-vm2", "ctbenchp2", "52:54:00:bb:00:02", ["198.19.0.2/24"]).create()
        servers: list[subprocess.Popen[str]] = []
        try:
            p1, p2 = vm1.plug(self.ovs, self.bridge, 2), vm2.plug(self.ovs, self.bridge, 3)
            servers = [vm2.serve("tcp", 5001), vm2.serve("tcp", 5002, sink=True)]
            self.start_attached()
            for vm in (vm1, vm2):
                self.ctl.ok(
                    "PUT", f"/ctfw/v1/vms/{vm.ns}", {"port": vm.port, "mac": vm.mac, "ips": [vm.ip]}
                )
            pair = {"initiator": vm1.ns, "responder": vm2.ns}
            pair_id = self.ctl.ok("POST", "/ctfw/v1/pairs", pair)["id"]
            ctfw_count = self.flow_count()
            seed = [
                "priority=100,ip,actions=ct(table=1)",
                "priority=10,arp,actions=normal",
                "priority=1,actions=drop",
                f"table=1,in_port={p1},ip,ct_state=+new,actions=ct(commit),normal",
                f"table=1,in_port={p1},ip,ct_state=+est,actions=normal",
                f"table=1,in_port={p2},ip,ct_state=+new,actions=drop",
                f"table=1,in_port={p2},ip,ct_state=+est,actions=normal",
            ]
            results: dict[str, dict[str, list[float]]] = {}
            packet_ins = 0
            logged = 0
            self.client(vm1, "tcp-rate", vm2.ip, 5001, seconds=1.0)  # warm-up, not counted
            pipelines = ["ctfw", "ctfw-log", "seed", "normal"]
            for r in range(self.datapath_repeat or self.repeat):
                # Each repeat starts with the next pipeline, so none is always measured first
                # (or always right after a controller start).
                for name in pipelines[r % 4 :] + pipelines[: r % 4]:
                    if name.startswith("ctfw"):  # the controller attached, as in production
                        if self.ctl.proc is None:
                            self.start_attached(ctfw_count)
                    else:
                        self.ctl.stop()
                        self.detach()
                        flows = seed if name == "seed" else ["actions=NORMAL"]
                        self.ovs.ofctl("add-flows", self.bridge, self.flows_file(flows))
                    if name == "ctfw-log":
                        # The same pair logging its connections (one packet-in per new
                        # connection, metered): the connection log on, as an operator runs it.
                        self.ctl.ok("DELETE", f"/ctfw/v1/pairs/{pair_id}")
                        pair_id = self.ctl.ok("POST", "/ctfw/v1/pairs", {**pair, "log": True})["id"]
                    before = self.packet_ins() if name.startswith("ctfw") else 0
                    measured = results.setdefault(name, {"rate": [], "bulk": []})
                    measured["rate"].append(self.client(vm1, "tcp-rate", vm2.ip, 5001))
                    measured["bulk"].append(self.client(vm1, "tcp-bulk", vm2.ip, 5002) * 8 / 1e6)
                    if name == "ctfw":
                        packet_ins += self.packet_ins() - before
                    elif name == "ctfw-log":
                        logged += self.packet_ins() - before
                        self.ctl.ok("DELETE", f"/ctfw/v1/pairs/{pair_id}")
                        pair_id = self.ctl.ok("POST", "/ctfw/v1/pairs", pair)["id"]
            for metric, unit, label in (
                ("rate", "conn/s", "new TCP connections per second"),
                ("bulk", "Mbit/s", "bulk TCP throughput"),
            ):
                for ours, base in (("ctfw", "seed"), ("ctfw", "normal"), ("ctfw-log", "seed")):
                    logging = " (the pair logging its connections)" if ours == "ctfw-log" else ""
                    self.rows.append(
                        Row(
                            f"{label}{self.scope}{logging} vs {base}",
                            results[ours][metric],
                            results[base][metric],
                            unit,
                            ">= 0.9x" if base == "seed" else ">= 0x (report)",
                            lower_is_better=False,
                            note="ctfw with this pair only"
                            if self.scope
                            else f"ctfw with the {len(self.policy.pairs)}-pair policy loaded",
                        )
                    )
            self.facts[f"packet-ins during data traffic{self.scope} (target 0)"] = str(packet_ins)
            self.facts[
                f"packet-ins with the pair logging{self.scope} (one per connection, metered)"
            ] = str(logged)
        finally:
            for s in servers:
                s.kill()
            vm1.destroy()
            vm2.destroy()

    # --- helpers ----------------------------------------------------------------------------
    def syncs(self) -> int:
        """How many times the controller has reported a switch in sync so far."""
        log = self.ctl.log_file
        return log.read_text().count(" in sync ") if log.exists() else 0

    def sync_report(self, before: int) -> tuple[tuple[float, int], list[float]]:
        """Wait for the next "in sync" report: ((seconds after connect, flow-mods), phases)."""
        lab.wait_for(lambda: self.syncs() > before, 120, "the switch in sync")
        line = self.ctl.log_file.read_text().split(" in sync ")[-1].splitlines()[0]
        m = re.search(
            r"([\d.]+) s after connect: \d+ flows of ours found, (\d+) added or changed,"
            r" (\d+) deleted \(compiled and packed ([\d.]+) s, read back ([\d.]+) s,"
            r" compared ([\d.]+) s, sent and confirmed ([\d.]+) s",
            line,
        )
        assert m, line
        return (float(m[1]), int(m[2]) + int(m[3])), [float(m[i]) for i in range(4, 8)]

    def packet_ins(self) -> int:
        sw = self.ctl.ok("GET", "/ctfw/v1/switches")["switches"]
        return sum(s["packet_ins"] for s in sw)

    def flows_file(self, flows: list[str]) -> str:
        path = self.root / "dp-flows.txt"
        path.write_text("\n".join(flows) + "\n")
        return str(path)

    def client(
        self, vm: lab.Vm, cmd: str, dst: str, port: int, seconds: float | None = None
    ) -> float:
        """One measurement from a clean slate: no connections left in the switch's
        conntrack or in TIME-WAIT in the client (it closes first; the server has none) from
        the one before. Left there, the client runs out of local ports after some 14,000
        connections and every pipeline then measures the kernel's 60 s TIME-WAIT expiry,
        about 240 connections a second."""
        self.ovs.flush_conntrack()
        vm.forget_closed_connections()
        seconds = seconds or self.seconds
        out = vm.exec(lab.lab_cmd(cmd, dst, str(port), str(seconds)), timeout=seconds + 30)
        return float(out.stdout.strip())

    def rss(self) -> None:
        self.start_attached()
        pid = self.ctl.proc.pid  # type: ignore[union-attr]
        status = Path(f"/proc/{pid}/status").read_text()
        self.facts["ryu-manager resident memory at scale"] = re.search(r"VmRSS:\s+(.*)", status)[
            1
        ].strip()  # type: ignore[index]
        self.ctl.stop()


@dataclass
class AloneBench(Bench):
    """The datapath rows again on a bridge with only the two VMs, as the seed's post has it:
    at scale the switch's main thread polls every VM's port in turn, and that poll, the
    same for every pipeline, sets the pace of short connections."""

    scope: ClassVar[str] = ", two VMs alone on the switch,"

    def make_policy(self) -> Policy:
        return Policy()


@dataclass
class GroupsBench(Bench):
    """The groups scenario (issue 11): VMs in groups, group pairs compiled to conjunctive
    matches, on a bridge of its own in the same switch (the pair scenario's bridge is gone
    by then)."""

    groups: int = 20
    sizes: tuple[int, ...] = (10, 50, 100)
    costs: dict[int, dict[str, int]] = field(default_factory=dict)
    bridge: ClassVar[str] = "ctbench1"

    def make_policy(self) -> Policy:
        return groups.make_policy(self.vms, self.groups, self.pairs)

    def synced(self) -> list[tuple[int, int]]:
        """(added or changed, deleted) of every change the controller has sent so far."""
        log = self.ctl.log_file.read_text() if self.ctl.log_file.exists() else ""
        found = re.findall(r" synced: (\d+) flows added or changed, (\d+) deleted", log)
        return [(int(a), int(d)) for a, d in found]

    def put_group(self, name: str, members: tuple[str, ...]) -> tuple[float, int]:
        """PUT the group; (seconds until the answer, flow-mods the controller sent)."""
        before = len(self.synced())
        t0 = time.perf_counter()
        status, answer = self.ctl.api("PUT", f"/ctfw/v1/groups/{name}", {"members": members})
        took = time.perf_counter() - t0
        assert status == 200, answer
        lab.wait_for(lambda: len(self.synced()) > before, 10, "the change's sync report")
        sent = self.synced()[before:]
        assert len(sent) == 1, sent
        return took, sum(sent[0])

    def member_change(self) -> None:
        """A VM joins a group (it is then in two) and leaves it again: latency until the
        answer (the switch has confirmed the bundle by then) and the flow-mods sent, each
        checked against what the compiler says the change costs."""
        self.start_attached()
        fs = FlowSet.build(self.policy, self.attached, groups.ZONE)
        added, removed, mods_added, mods_removed = [], [], [], []
        for g, v in groups.member_plan(self.policy, self.changes):
            members = self.policy.groups[g].members
            after = groups.with_member(self.policy, g, v)
            want_add = groups.mods(fs.update(after, self.attached, groups.ZONE))
            want_remove = groups.mods(fs.update(self.policy, self.attached, groups.ZONE))
            took, sent = self.put_group(g, (*members, v))
            assert sent == want_add, (g, v, sent, want_add)
            added.append(took * 1000)
            mods_added.append(sent)
            took, sent = self.put_group(g, members)
            assert sent == want_remove, (g, v, sent, want_remove)
            removed.append(took * 1000)
            mods_removed.append(sent)
            # Invariant: a membership change sends its member's lines, a few per link of
            # the group whatever the group's size, not its pairs' (hundreds per link).
            bound = 8 * groups.links_of(self.policy, g) + 4
            assert max(mods_added[-1], mods_removed[-1]) <= bound, (g, v, sent, bound)
        # Baseline: one ovs-ofctl process sending the same flow-mods as one bundle, for the
        # first of the changes, forward (the member added) and back (removed).
        g, v = groups.member_plan(self.policy, 1)[0]
        forward = fs.update(groups.with_member(self.policy, g, v), self.attached, groups.ZONE)
        back = fs.update(self.policy, self.attached, groups.ZONE)
        files = []
        for name, diff in (("forward", forward), ("back", back)):
            path = self.root / f"member-{name}.txt"
            path.write_text(
                "".join(f"add cookie=0x{f.cookie:x},{f.text()}\n" for f in diff.add)
                + "".join(
                    f"delete_strict table={f.table},priority={f.priority},{f.match.text()}\n"
                    for f in diff.delete
                )
            )
            files.append(str(path))
        base_added, base_removed = [], []
        for _ in range(min(20, max(self.changes, self.repeat))):
            for path, times in zip(files, (base_added, base_removed), strict=True):
                t0 = time.perf_counter()
                lab.run([*BUNDLE_ADD, self.bridge, path], self.ovs.env)
                times.append((time.perf_counter() - t0) * 1000)
        assert self.flow_count() == self.expected_flows()
        self.ctl.stop()
        n = len(added)
        for what, ours, base, sent in (
            ("added", added, base_added, mods_added),
            ("removed", removed, base_removed, mods_removed),
        ):
            q = statistics.quantiles(ours, n=100, method="inclusive")
            self.facts[f"member {what}: latency p50 / p99 / max"] = (
                f"{statistics.median(ours):.1f} / {q[98]:.1f} / {max(ours):.1f} ms"
            )
            self.facts[f"member {what}: flow-mods sent (absolute; as the compiler predicts)"] = (
                stats(sent)  # type: ignore[arg-type]
            )
            self.rows.append(
                Row(
                    f"a member {what}, {n} PUT /groups",
                    ours,
                    base,
                    "ms",
                    "<= 1.0x",
                    note="baseline: one ovs-ofctl --bundle add-flows process, the same flow-mods",
                )
            )
        self.facts["baseline flow-mods (member added / removed)"] = (
            f"{groups.mods(forward)} / {groups.mods(back)}"
        )

    def footprint(self) -> None:
        """Flows per member and per group pair, growth, and the one-pair table: the
        compiler alone."""
        self.facts.update(groups.footprint(self.policy, self.attached))
        self.facts.update(groups.growth(self.vms, self.groups, self.pairs))
        self.costs = groups.scaling(self.sizes)

    def where_time_goes(self) -> None:
        from ryu_ctfw.app import tune_gc
        from ryu_ctfw.compiler import KIND_PAIR, link_flows, pair_flows, vm_port_flows

        def cold() -> float:
            for cache in (pair_flows, link_flows, vm_port_flows):
                cache.cache_clear()
            t0 = time.perf_counter()
            FlowSet.build(self.policy, self.attached, groups.ZONE)
            return (time.perf_counter() - t0) * 1000

        def update_ms(policy: Policy) -> tuple[list[float], int]:
            """FlowSet.update for a member added, and the lines of the group's pairs it
            recompiles and compares (median), at this policy."""
            attached = groups.attachments(policy)
            fs = FlowSet.build(policy, attached, groups.ZONE)
            times, lines = [], []
            for g, v in groups.member_plan(policy, 20, seed=3):
                t0 = time.perf_counter()
                fs.update(groups.with_member(policy, g, v), attached, groups.ZONE)
                times.append((time.perf_counter() - t0) * 1000)
                lines.append(
                    sum(len(fs.units.get((KIND_PAIR, p.id), ())) for p in policy.pairs_of(g))
                )
                fs.update(policy, attached, groups.ZONE)
            return times, int(statistics.median(lines))

        tune_gc()  # as ryu-manager runs with ryu_ctfw.app
        self.facts["time: compile from scratch, all flows"] = f"{cold():.1f} ms"
        times, lines = update_ms(self.policy)
        self.timing.update(update=statistics.median(times), lines=lines)
        self.facts[
            f"time: update the flow set for a member added ({lines} lines of the group's pairs)"
        ] = f"{stats(times)} ms"
        # The same VMs and pairs in a quarter as many groups (four times their size): the
        # update recompiles and compares every line of the group's pairs.
        bigger = groups.make_policy(self.vms, max(2, self.groups // 4), self.pairs)
        times, lines = update_ms(bigger)
        self.timing.update(
            update_big=statistics.median(times),
            lines_big=lines,
            big_groups=len(bigger.groups),
            big_size=self.vms // len(bigger.groups),
        )
        self.facts[
            f"time: the same, {len(bigger.groups)} groups of {self.vms // len(bigger.groups)}"
            f" ({lines} lines of the group's pairs)"
        ] = f"{stats(times)} ms"


def make_policy(vms: int, pairs: int) -> Policy:
    policy = Policy()
    for i in range(vms):
        policy.put_vm(
            Vm(
                f"b{i}",
                f"ctbq{i}",
                f"52:54:00:b0:{i >> 8:02x}:{i & 255:02x}",
                (f"198.18.{i >> 8}.{i & 255 or 254}",),
            )
        )
    rng = random.Random(1)
    names = list(policy.vms)
    while len(policy.pairs) < pairs:
        a, b = rng.sample(names, 2)
        protocol, ports = rng.choice(SERVICES)
        with contextlib.suppress(PolicyError):
            policy.add_pair(PairRequest(a, b, protocol, ports))
    return policy


def phase_text(phases: list[list[float]]) -> str:
    """Median moments of the sync, in seconds after it began (they overlap: the switch
    dumps its table while the controller compiles)."""
    med = [statistics.median(p[i] for p in phases) for i in range(4)]
    return (
        f"compiled and packed at {med[0]:.3f} s, switch's flows read back at {med[1]:.3f} s,"
        f" compared at {med[2]:.3f} s, sent and confirmed at {med[3]:.3f} s"
    )


def stats(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3g} ({min(values):.3g}-{max(values):.3g})"


def machine() -> str:
    ovs = lab.run(["ovs-vswitchd", "--version"]).stdout.splitlines()[0]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    cores = len(
        [
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("processor")
        ]
    )
    return (
        f"{cores} cores ({cpu}), {ovs}, userspace datapath; Python "
        f"{platform.python_version()}, Ryu {getattr(ryu, '__version__', '4.34')}"
    )


def report(
    bench: Bench,
    args: argparse.Namespace,
    grouped: GroupsBench | None = None,
    many: hosts.HostsBench | None = None,
) -> str:
    services = ", ".join(f"{s} {p or ''}".strip() for s, p in SERVICES)
    lines = [
        "# ryu-ctfw benchmark results",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{' '.join(args.argv)}`:"
        f" {bench.vms} VMs, {bench.pairs} pairs (services {services}),"
        f" {bench.repeat} repeats ({bench.datapath_repeat or bench.repeat} for the datapath).",
        "",
        f"Machine: {machine()}.",
        "",
        f"Noise: the machine is shared; load average {args.load[0]:.2f} at the start and"
        f" {os.getloadavg()[0]:.2f} at the end (other test suites may run beside the bench,"
        " which has its own network namespace and switch). Absolute times move with that;"
        " compare the ratios, each against a baseline measured in the same run, beside it.",
        "",
        *rows_table(bench.rows),
    ]
    lines += ["", "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in bench.facts.items()]
    lines += ["", "## Where the time goes", "", *explain(bench)]
    if grouped is not None:
        lines += ["", *groups_report(grouped)]
    if many is not None:
        lines += ["", *hosts_report(many)]
    return "\n".join(lines) + "\n"


def hosts_rows(h: hosts.HostsBench) -> list[Row]:
    r = h.results
    return [
        Row(
            f"bring-up, {h.hosts} bridges: every switch reported in sync",
            r["sync"],
            r["base"],
            "s",
            "<= 1.5x",
            note="baseline: ovs-ofctl --bundle add-flows of each bridge's same flows, bridge"
            " by bridge",
        ),
        Row(
            f"bring-up, {h.hosts} bridges: every switch holds all its flows",
            r["flows"],
            r["base"],
            "s",
            "<= 1.5x",
            note="the same baseline",
        ),
        Row(
            f"resync after a controller restart, {h.hosts} bridges",
            r["restart"],
            r["restart_base"],
            "s",
            "<= 2x",
            note="ours: the slowest switch's connect to in sync; baseline: one ovs-ofctl"
            " dump-flows of each bridge, bridge by bridge",
        ),
    ]


def hosts_report(h: hosts.HostsBench) -> list[str]:
    flows = h.facts.get("flows: per bridge / all bridges", "?")
    services = ", ".join(f"{s} {p or ''}".strip() for s, p in hosts.SERVICES)
    lines = [
        "## Multi-host scenario",
        "",
        f"{h.hosts} bridges standing for {h.hosts} hypervisors (one ovs-vswitchd, distinct"
        f" dpids, each bridge its own controller connection), {h.vms} VMs on each naming"
        ' their bridge (`"switch"`), each bridge with a fabric port (an internal port, not'
        " linked: bring-up and flow-mods are measured, not traffic; bridge 1's named by"
        " `[ctfw] fabric_port`, the others' by their own setting in the state file, since one"
        " Open vSwitch cannot have two interfaces of one name). Pairs: VM j of host k to VM"
        " j of host k+1 (cross-host, compiled on both bridges, checked in the dumps: each"
        " bridge has lines from its fabric port matching the MAC of every remote VM a pair"
        " joins with one of its own, and of no other) and to VM j+1 of its own host, services"
        f" drawn from {services};"
        f" {len(h.policy.pairs)} pairs, {flows} flows. {h.repeat} repeats; times are ratios"
        " against a baseline from the same run, flow-mods are absolute counts.",
        "",
        *rows_table(h.rows),
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in h.facts.items()),
    ]
    mods = h.facts.get("restart with the state unchanged: flow-mods to all bridges (target 0)")
    if mods and any(int(x) for x in mods.split(", ")):
        lines += [
            "",
            "Restart: NOT hitless with several hosts: a restart with the state unchanged"
            " sent flow-mods (a switch compared before the switches of its remote VMs were"
            " known loses its fabric-port lines for them until they connect; see the"
            " controller log's in sync and synced lines).",
        ]
    return lines


def rows_table(rows: list[Row]) -> list[str]:
    lines = [
        "| measure | ryu-ctfw | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {stats(r.ours)} {r.unit} | {stats(r.base)} {r.unit} | "
            f"{r.ratio:.2f}x | {r.target} | {'yes' if r.met() else 'NO'} |"
        )
    lines += ["", "Medians, with (min-max) over the repeats. Baselines:", ""]
    lines += [f"- {r.what}: {r.note}" for r in rows if r.note]
    return lines


def groups_report(g: GroupsBench) -> list[str]:
    services = ", ".join(f"{s} {p or ''}".strip() for s, p in groups.SERVICES)
    size = g.vms // g.groups
    lines = [
        "## Groups scenario",
        "",
        f"{g.vms} VMs in {g.groups} groups of {size} (each VM in one), {g.pairs} group pairs"
        f" drawn at random between them (a group may be paired with itself; services"
        f" {services}), {g.repeat} repeats; a member added is a VM joining a second group"
        f" (PUT /groups with one more member), {g.changes} times, each undone (a member"
        " removed) before the next. Pairs with a group side compile to conjunctive matches"
        " (compiler.link_flows). Times are ratios against a baseline from the same run;"
        " flow counts and flow-mods are absolute.",
        "",
        *rows_table(g.rows),
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in g.facts.items()),
        "",
        "### One group pair against the VM pairs it replaces",
        "",
        "Every VM of group a (N VMs) may open tcp/5432 to every VM of group b (N VMs): the"
        " table-1 lines as one group pair and as N x N VM pairs, and the flow-mods one more"
        " member of a and one more service (udp/53, a second pair) cost each. Compiler only"
        " (FlowSet, pure); the VMs' own port lines (21 each, the same for both) left out.",
        "",
        *groups.scaling_table(g.costs),
        "",
        *groups_explain(g),
    ]
    return lines


def groups_explain(g: GroupsBench) -> list[str]:
    rows = {r.what.split(",")[0]: r for r in g.rows}
    out = ["What the figures are made of:", ""]
    r = rows.get(next((k for k in rows if k.startswith("bring-up")), ""))
    if r is not None:
        out.append(
            f"- Bring-up ({r.ratio:.2f}x, {'met' if r.met() else 'MISSED'}): the path of the"
            " pair scenario (compile, pack, one bundle sent while packing, confirmed); a"
            " group pair's lines are ordinary flow-mods there, conjunction actions or not."
            f" Phases: {g.facts.get('bring-up, inside the controller', '?')}."
        )
    text = {
        "added": "sends only the lines that name the member: its own lines in each link of"
        " the group (its commit, reply and related lines where the group initiates, its"
        " clause lines where it responds), new, and the clause lines it already had from"
        " its other group, replaced with one more conjunction action",
        "removed": "sends the same lines the other way: the member's own lines deleted, its"
        " shared clause lines replaced with one conjunction action fewer",
    }
    t = g.timing
    for what, how in text.items():
        r = rows.get(f"a member {what}")
        if r is not None:
            out.append(
                f"- A member {what} ({r.ratio:.2f}x, {'met' if r.met() else 'MISSED'}): the"
                f" controller recompiles the group's pairs and {how}; then one bundle,"
                " confirmed before the answer. The baseline is one ovs-ofctl process sending"
                " those same flow-mods as one bundle."
            )
    if "update" in t:
        out.append(
            "- Inside the controller, a membership change recompiles and compares every line"
            f" of the group's pairs, not only the member's (FlowSet.update: {t['update']:.1f}"
            f" ms median for the {t['lines']:.0f} lines of a group's pairs here;"
            f" {t['update_big']:.0f} ms with the same VMs and pairs in {t['big_groups']:.0f}"
            f" groups of {t['big_size']:.0f}, {t['lines_big']:.0f} lines), so its cost grows"
            " as group size x pairs of the group while the flow-mods it sends stay a few."
        )
    sizes = sorted(g.costs)
    if len(sizes) > 1:
        lo, hi = g.costs[sizes[0]], g.costs[sizes[-1]]
        slope = (hi["group"] - lo["group"]) / (sizes[-1] - sizes[0])
        intercept = lo["group"] - slope * sizes[0]
        own = g.facts.get("flows per member: its own port's lines", "?")
        out.append(
            "- Flows: a pair with a group side is three conjunctive matches per link"
            " (original direction: source port x destination MAC x service; back; there),"
            " so its lines grow as the members of its two sides plus its services: for two"
            f" groups of N, {slope:g}N + {intercept:g} lines for the first service,"
            f" {lo['group service']} more for each other, {lo['group member']} for one more"
            " member of the initiating group, whatever N (the table); the same allowance as"
            f" VM pairs costs {lo['vm'] // sizes[0] ** 2} lines per VM pair, N x N of them. A"
            f" member's own port lines ({own}) are those of any VM."
        )
    return out


def explain(bench: Bench) -> list[str]:
    """What each timed row is made of, with this run's own numbers (met or not)."""
    t, rows = bench.timing, {r.what.split(" ")[0]: r for r in bench.rows}
    out = []
    if "bring-up" in rows:
        r = rows["bring-up"]
        out.append(
            f"- Bring-up ({r.ratio:.2f}x, {'met' if r.met() else 'MISSED'}): the controller "
            f"compiles the policy from scratch ({t['cold']:.0f} ms) and packs "
            f"{t['flows']:.0f} bundled flow-mods itself ({t['pack']:.0f} ms, wire.py; Ryu's "
            f"generic encoder would take about {t['ryu'] / 1000:.1f} s for as many), sending "
            "them in 64 KiB chunks while it packs the next, so ovs-vswitchd installs them in "
            "parallel; the rest is the switch's own work, which the baseline has too. Phases: "
            f"{bench.facts.get('bring-up, inside the controller', '?')}."
        )
    if "policy" in rows:
        r = rows["policy"]
        out.append(
            f"- Policy change ({r.ratio:.2f}x, {'met' if r.met() else 'MISSED'}): a change "
            f"recompiles and compares only the units it touches ({t['update']:.2f} ms for one "
            f"pair at this scale, flowset.py) and appends one journal record "
            f"({t['record']:.2f} ms with fsync, against {t['save']:.1f} ms for rewriting the "
            "whole state file); the rest is HTTP, one bundle round trip and the switch's own "
            "work. The baseline pays for starting an ovs-ofctl process."
        )
    if "resync" in rows:
        r = rows["resync"]
        out.append(
            f"- Resync ({r.ratio:.2f}x, {'met' if r.met() else 'MISSED'}): the controller asks "
            "for its flows (by cookie) and compiles and packs the policy while the switch "
            "dumps them; the reply is cut into bytes, not decoded (wire.py), and compared with "
            "the packed flows; nothing is sent when they agree. Phases: "
            f"{bench.facts.get('resync, inside the controller', '?')}. The baseline only dumps "
            "and prints."
        )
    out.append(
        "- Flows: a VM takes about 22 lines (IPv4 and its link-local address): its port's "
        "checks (tag, ARP, ND with link-layer options, IP, guard), the claim lines that keep "
        "every other port from sending from its MAC and addresses, its ARP/ND delivery "
        "line and its log-table line. A pair-service takes two commit lines (+new, which "
        "counts its connections, and +est) per address family and prefix block (8000-8100: "
        "4 blocks, 16 lines); the replies, related ICMP and later fragments of its two VMs' "
        "link take 5 more, once per link however many pairs it has."
    )
    return out


def run_step(name: str, step: Callable[[], None]) -> None:
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    step()
    print(f"   {name}: {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="small and quick: checks the suite runs")
    ap.add_argument("--out", type=Path, help="write the report here (default: print only)")
    args = ap.parse_args(argv)
    args.argv = ["python", "-m", "bench.run", *argv]
    args.load = os.getloadavg()
    lab.require_root_and_tools()
    lab.isolate_network()  # its own network namespace: runs beside the tests
    size = (
        dict(vms=20, pairs=100, repeat=1, changes=20, seconds=1.0)
        if args.smoke
        else dict(vms=500, pairs=5000, repeat=3, changes=1000, seconds=1.0, datapath_repeat=15)
    )
    group_size = (
        dict(vms=40, groups=4, pairs=6, repeat=1, changes=5, seconds=0.0, sizes=(2, 4, 8))
        if args.smoke
        else dict(vms=1000, groups=20, pairs=40, repeat=3, changes=200, seconds=0.0)
    )
    host_size = (
        dict(hosts=3, vms=4, repeat=1, changes=2)
        if args.smoke
        else dict(hosts=20, vms=25, repeat=3, changes=10)
    )
    with tempfile.TemporaryDirectory(prefix="ctfw-bench-") as tmp:
        bench = Bench(Path(tmp), **size)  # type: ignore[arg-type]
        grouped = GroupsBench(Path(tmp) / "groups", **group_size)  # type: ignore[arg-type]
        grouped.ovs = bench.ovs  # one switch (one per namespace), a bridge each in turn
        many = hosts.HostsBench(Path(tmp) / "hosts", bench.ovs, **host_size)  # type: ignore[arg-type]
        alone: AloneBench | None = None
        bench.ovs.start()
        try:
            bench.add_ports()
            for step in (
                bench.bring_up,
                bench.change_latency,
                bench.resync,
                bench.footprint,
                bench.where_time_goes,
                bench.rss,
                bench.datapath,
            ):
                run_step(step.__name__, step)
            # Its ports go (the next bridge alone). Deleting 500 tap ports outlasts
            # ovs-vsctl's usual 10 s on a busy machine.
            lab.run(
                ["ovs-vsctl", "--timeout=300", "del-br", bench.bridge], bench.ovs.env, timeout=330
            )
            alone = AloneBench(
                Path(tmp) / "alone",
                vms=0,
                pairs=0,
                repeat=bench.repeat,
                changes=0,
                seconds=bench.seconds,
                datapath_repeat=bench.datapath_repeat,
            )
            alone.ovs = bench.ovs
            alone.add_ports()  # the bridge, with no ports but the datapath VMs'
            run_step("alone: datapath", alone.datapath)
            bench.rows += alone.rows
            bench.facts.update(alone.facts)
            lab.run(["ovs-vsctl", "del-br", alone.bridge], bench.ovs.env)
            run_step("groups: add_ports", grouped.add_ports)
            for step in (
                grouped.bring_up,
                grouped.member_change,
                grouped.footprint,
                grouped.where_time_goes,
            ):
                run_step(f"groups: {step.__name__}", step)
            lab.run(
                ["ovs-vsctl", "--timeout=300", "del-br", grouped.bridge],
                bench.ovs.env,
                timeout=330,
            )
            for step in (many.add_ports, many.bring_up, many.change, many.restart):
                run_step(f"hosts: {step.__name__}", step)
            many.rows = hosts_rows(many)
        finally:
            bench.ctl.stop()
            if alone is not None:
                alone.ctl.stop()
            grouped.ctl.stop()
            many.ctl.stop()
            bench.ovs.stop()
    text = report(bench, args, grouped, many)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
