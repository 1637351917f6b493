"""The multi-host scenario (issue 12, point 6): many bridges, one controller.

`hosts` bridges stand for as many hypervisors, all in the bench's one private Open vSwitch
(one ovs-vswitchd; each bridge has its own dpid and its own controller connection to the
one controller), `vms` VMs on each, every VM naming its switch (its bridge's name). Each
bridge has a fabric port (an internal port, not linked anywhere: the bring-up and the
flow-mods are what is measured, not traffic). Interface names are unique within one Open
vSwitch, so one name cannot be every bridge's fabric port here: bridge 1's is named by
`[ctfw] fabric_port` in the controller's config file, every other bridge's by its own
setting (the `switches` table of the state file, as PUT /ctfw/v1/switches/{dpid} stores it).

Pairs: VM j of host k opens a service to VM j of host k+1 (cross-host, compiled on both
bridges: the remote VM is attached at the fabric port) and to VM j+1 of its own host
(local). Measured against baselines from the same run:

- bring-up: a controller start with the whole policy in its state file until every switch
  reported in sync and holds its flows, against `ovs-ofctl --bundle add-flows` of the same
  flows, bridge by bridge;
- a change on host 1 (a pair between two of its VMs, added, then deleted): the flow-mods it
  sends to every other bridge (target 0) and to bridge 1 (absolute); a cross-host pair,
  which must reach its two bridges only;
- a restart with the state unchanged: flow-mods to every bridge (target 0), and the time
  until every switch is in sync against one `ovs-ofctl dump-flows` of each bridge.
"""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ryu_ctfw import lab, store
from ryu_ctfw.compiler import Attachment, compile_switch
from ryu_ctfw.policy import PairRequest, Policy, Vm

SERVICES = [("tcp", "22"), ("udp", "53"), ("icmp", None), ("tcp", "8000-8100"), ("any", None)]
FIRST_OFPORT = 10
FABRIC_OFPORT = 5
FABRIC = "ctfab"  # [ctfw] fabric_port: bridge 1's (the others have their own, see above)
BUNDLE_ADD = ["ovs-ofctl", "-O", "OpenFlow14", "--bundle", "add-flows"]


def bridge(k: int) -> str:
    return f"cthost{k}"


def dpid(k: int) -> int:
    return 0xC7F000 + k


def fabric(k: int) -> str:
    return FABRIC if k == 1 else f"{FABRIC}{k}"


def vm_name(k: int, j: int) -> str:
    return f"h{k}v{j}"


def make_policy(hosts: int, vms: int, seed: int = 1) -> Policy:
    """`vms` VMs on each of `hosts` bridges, each naming its bridge; VM j of host k pairs
    with VM j of host k+1 (cross-host) and VM j+1 of host k (local); hosts 2.. have their
    own fabric port setting."""
    policy = Policy()
    for k in range(1, hosts + 1):
        for j in range(vms):
            policy.put_vm(
                Vm(
                    vm_name(k, j),
                    vm_name(k, j),  # the port: names are unique within one Open vSwitch
                    f"52:54:00:c7:{k:02x}:{j:02x}",
                    (f"198.18.{k}.{j + 1}",),
                    switch=bridge(k),
                )
            )
        if k > 1:
            policy.set_fabric_port(dpid(k), fabric(k))
    rng = random.Random(seed)
    for k in range(1, hosts + 1):
        for j in range(vms):
            for other in (vm_name(k % hosts + 1, j), vm_name(k, (j + 1) % vms)):
                protocol, ports = rng.choice(SERVICES)
                policy.add_pair(PairRequest(vm_name(k, j), other, protocol, ports))
    return policy


def attachments(policy: Policy, hosts: int, vms: int, k: int) -> dict[str, Attachment]:
    """What the controller should attach on bridge k: its VMs at their ports, and the VMs of
    other hosts that a pair joins with one here at the fabric port (as switch.py does)."""
    places = {vm_name(h, j): (dpid(h), FIRST_OFPORT + j)
              for h in range(1, hosts + 1) for j in range(vms)}  # fmt: skip
    local = {vm_name(k, j) for j in range(vms)}
    out = {name: Attachment(places[name][1], policy.vms[name].mac) for name in sorted(local)}
    remote = set()
    for pair in policy.pairs.values():
        for this, other in ((pair.initiator, pair.responder), (pair.responder, pair.initiator)):
            if this in local and other not in local:
                remote.add(other)
    for name in sorted(remote):
        out[name] = Attachment(FABRIC_OFPORT, policy.vms[name].mac, remote=True)
    return out


def stats(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3g} ({min(values):.3g}-{max(values):.3g})"


@dataclass
class FabricController(lab.Controller):
    """lab.Controller with `[ctfw] fabric_port` in its config file."""

    fabric_port: str = FABRIC

    def start(self, timeout: float = 20) -> FabricController:
        # As lab.Controller.start, with one more line in the config file.
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "ctfw.conf"
        conf.write_text(
            f"[ctfw]\nstate_file = {self.state_file}\nfabric_port = {self.fabric_port}\n"
        )
        ryu_manager = Path(sys.executable).with_name("ryu-manager")
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ryu_manager), "--config-file", str(conf),
                 "--ofp-tcp-listen-port", str(self.ofp_port),
                 "--wsapi-port", str(self.api_port), "ryu_ctfw.app"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        lab.wait_for(self._api_up, timeout, "ryu-manager's REST API")
        return self


@dataclass
class HostsBench:
    root: Path
    ovs: lab.Ovs
    hosts: int
    vms: int
    repeat: int
    changes: int
    rows: list = field(default_factory=list)  # run.Row, filled by run.py's caller
    facts: dict[str, str] = field(default_factory=dict)
    results: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ctl = FabricController(self.root / "ctl")
        self.policy = make_policy(self.hosts, self.vms)
        self.ks = list(range(1, self.hosts + 1))
        self.expected = {
            k: len(
                compile_switch(self.policy, attachments(self.policy, self.hosts, self.vms, k), 1)
            )
            for k in self.ks
        }

    # --- set-up ----------------------------------------------------------------------------
    def add_ports(self) -> None:
        for k in self.ks:
            br = bridge(k)
            cmd = ["add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                   "protocols=OpenFlow13,OpenFlow14", "fail_mode=secure",
                   f"other-config:datapath-id={dpid(k):016x}",
                   "--", "add-port", br, fabric(k), "--", "set", "interface", fabric(k),
                   "type=internal", f"ofport_request={FABRIC_OFPORT}"]  # fmt: skip
            for j in range(self.vms):
                port = vm_name(k, j)
                cmd += ["--", "add-port", br, port, "--", "set", "interface", port,
                        "type=internal", f"ofport_request={FIRST_OFPORT + j}"]  # fmt: skip
            lab.run(["ovs-vsctl", "--timeout=120", *cmd], self.ovs.env, timeout=150)

    def remove(self) -> None:
        cmd: list[str] = []
        for k in self.ks:
            cmd += ["--", "del-br", bridge(k)]
        lab.run(["ovs-vsctl", "--timeout=300", *cmd[1:]], self.ovs.env, timeout=330)

    def detach(self) -> None:
        cmd: list[str] = []
        for k in self.ks:
            cmd += ["--", "del-controller", bridge(k)]
        self.ovs.vsctl(*cmd[1:])
        for k in self.ks:
            self.ovs.ofctl("del-flows", bridge(k))

    def attach(self) -> None:
        """Every bridge to the controller, in one transaction."""
        cmd: list[str] = []
        for k in self.ks:
            # Retry a restarted controller within a second (as lab.Ovs.set_controller).
            cmd += ["--", f"--id=@c{k}", "create", "controller",
                    f"target=tcp\\:127.0.0.1\\:{self.ctl.ofp_port}", "max_backoff=1000",
                    "--", "set", "bridge", bridge(k), f"controller=@c{k}"]  # fmt: skip
        self.ovs.vsctl(*cmd[1:])

    def flow_count(self, k: int) -> int:
        out = self.ovs.ofctl("dump-aggregate", bridge(k))
        return int(re.search(r"flow_count=(\d+)", out)[1])  # type: ignore[index]

    # --- the log ---------------------------------------------------------------------------
    def log(self) -> str:
        return self.ctl.log_file.read_text() if self.ctl.log_file.exists() else ""

    def in_sync(self, since: int = 0) -> dict[int, tuple[int, int, float]]:
        """dpid -> (added or changed, deleted, seconds after connect) of its last connect's
        sync, in the log after byte `since`."""
        found = re.findall(
            r"switch ([0-9a-f]{16}) in sync ([\d.]+) s after connect: \d+ flows of ours found,"
            r" (\d+) added or changed, (\d+) deleted",
            self.log()[since:],
        )
        return {int(d, 16): (int(a), int(b), float(t)) for d, t, a, b in found}

    def synced(self, since: int = 0) -> Counter[int]:
        """dpid -> flow-mods sent outside a connect ("synced:" lines) after byte `since`."""
        out: Counter[int] = Counter()
        for d, a, b in re.findall(
            r"switch ([0-9a-f]{16}) synced: (\d+) flows added or changed, (\d+) deleted",
            self.log()[since:],
        ):
            out[int(d, 16)] += int(a) + int(b)
        return out

    def mark(self) -> int:
        return len(self.log())

    # --- the measurements -------------------------------------------------------------------
    def bring_up(self) -> None:
        ours_sync, ours_flows, base, extra = [], [], [], []
        dumps: dict[int, str] = {}
        for _ in range(self.repeat):
            self.detach()
            store.save(self.ctl.state_file, self.policy)  # no zones yet: a first start
            self.ctl.start(timeout=60)
            since = self.mark()
            t0 = time.perf_counter()
            self.attach()
            t_sync = None
            todo = set(self.ks)
            while todo or t_sync is None:
                late = time.perf_counter() - t0 - (t_sync or 0)
                if late > (30 if t_sync else 600):  # every switch said in sync, long ago
                    have = {k: (self.expected[k], self.flow_count(k)) for k in sorted(todo)}
                    raise lab.LabError(f"flows (bridge: expected, held): {have}")
                if t_sync is None and len(self.in_sync(since)) == self.hosts:
                    t_sync = time.perf_counter() - t0
                todo = {k for k in todo if self.flow_count(k) != self.expected[k]}
                if not todo:
                    t_flows = time.perf_counter() - t0
                time.sleep(0.01)
            ours_sync.append(t_sync)
            ours_flows.append(max(t_flows, t_sync))
            time.sleep(1.0)  # later syncs (a switch that connected after this one) land
            reports = self.in_sync(since)
            assert set(reports) == {dpid(k) for k in self.ks}, reports
            extra.append(sum(self.synced(since).values()))
            for k in self.ks:
                assert self.flow_count(k) == self.expected[k], (k, self.expected[k])
            self.check_both_ends()
            dumps = {k: self.ovs.dump_flows(bridge(k), "--no-stats") for k in self.ks}
            self.ctl.stop()
            self.detach()
            files = []
            for k in self.ks:
                path = self.root / f"flows-{k}.txt"
                path.write_text(dumps[k])
                files.append((k, path))
                self.ovs.add_meters(bridge(k), dumps[k])  # untimed: in the baseline's favour
            t0 = time.perf_counter()
            for k, path in files:
                lab.run([*BUNDLE_ADD, bridge(k), str(path)], self.ovs.env, timeout=600)
            base.append(time.perf_counter() - t0)
            for k in self.ks:
                assert self.flow_count(k) == self.expected[k]
        total = sum(self.expected.values())
        self.results.update(sync=ours_sync, flows=ours_flows, base=base)
        per = sorted(self.expected.values())
        self.facts["flows: per bridge / all bridges"] = (
            f"{per[0]:,}-{per[-1]:,} (median {int(statistics.median(per)):,}) / {total:,}"
        )
        self.facts["bring-up: flow-mods sent after a switch's own connect sync (absolute)"] = (
            ", ".join(map(str, extra))
        )

    def check_both_ends(self) -> None:
        """Every cross-host pair is compiled on both bridges: each bridge has lines from the
        fabric port that match the MAC of every remote VM a pair joins with one of its own,
        and VMs of hosts it has no pair with have none."""
        for k in self.ks:
            dump = self.ovs.dump_flows(bridge(k), "--no-stats")
            at_fabric = [line for line in dump.splitlines()
                         if f"in_port={FABRIC_OFPORT}," in line or
                         f"in_port={fabric(k)}," in line]  # fmt: skip
            macs = {m for line in at_fabric for m in re.findall(r"dl_src=([0-9a-f:]{17})", line)}
            want = {
                self.policy.vms[n].mac
                for n, at in attachments(self.policy, self.hosts, self.vms, k).items()
                if at.remote
            }
            neighbours = {k % self.hosts + 1, (k - 2) % self.hosts + 1} - {k}
            assert want == {self.policy.vms[vm_name(h, j)].mac
                            for h in neighbours for j in range(self.vms)}, (k, want)  # fmt: skip
            assert macs == want, (k, sorted(want - macs), sorted(macs - want))

    def start_attached(self) -> None:
        if self.ctl.proc is None:
            since = self.mark()
            self.ctl.start(timeout=60)
            self.attach()
            lab.wait_for(lambda: len(self.in_sync(since)) == self.hosts, 120, "every switch")
        lab.wait_for(
            lambda: all(self.flow_count(k) == self.expected[k] for k in self.ks), 60, "flows"
        )

    def change(self) -> None:
        """A pair between two VMs of host 1, added and deleted, `changes` times; then a
        cross-host pair (hosts 1 and 2) the same way."""
        self.start_attached()
        mods: dict[str, dict[str, list[int]]] = {}
        latency: dict[str, list[float]] = {}
        other = vm_name(1, 2) if self.vms > 2 else vm_name(1, 1)
        plans = {
            "local": (vm_name(1, 0), other, {dpid(1)}),
            "cross": (vm_name(1, 0), vm_name(2, 1), {dpid(1), dpid(2)}),
        }
        for what, (a, b, touched) in plans.items():
            m = mods.setdefault(what, {"here": [], "elsewhere": []})
            for i in range(self.changes):
                for step in ("add", "delete"):
                    since = self.mark()
                    t0 = time.perf_counter()
                    if step == "add":
                        body = {"initiator": a, "responder": b, "protocol": "tcp",
                                "ports": str(40000 + i)}  # fmt: skip
                        status, answer = self.ctl.api("POST", "/ctfw/v1/pairs", body)
                        assert status == 201, answer
                        pair_id = answer["id"]
                    else:
                        self.ctl.ok("DELETE", f"/ctfw/v1/pairs/{pair_id}")
                    latency.setdefault(f"{what} {step}", []).append(
                        (time.perf_counter() - t0) * 1000
                    )
                    # The answer follows every switch's confirmation; the log line came first.
                    lab.wait_for(lambda s=since, t=touched: set(self.synced(s)) >= t, 10, "its log")
                    sent = self.synced(since)
                    m["here"].append(sum(sent[d] for d in touched))
                    m["elsewhere"].append(sum(n for d, n in sent.items() if d not in touched))
                    assert set(sent) == touched, (what, step, sent)
            for k in self.ks:
                assert self.flow_count(k) == self.expected[k]
        self.ctl.stop()
        self.results["mods"] = mods  # type: ignore[assignment]
        self.results["latency"] = latency  # type: ignore[assignment]
        n = self.hosts - 1
        self.facts[
            f"a pair between two VMs of bridge 1, added / deleted ({self.changes} each):"
            f" flow-mods to the {n} other bridges (target 0)"
        ] = f"{sum(mods['local']['elsewhere'])} in all"
        self.facts["the same: flow-mods to bridge 1 (absolute), added / deleted"] = (
            f"{stats(mods['local']['here'][0::2])} / {stats(mods['local']['here'][1::2])}"
        )
        self.facts[
            f"a pair from bridge 1 to bridge 2, added / deleted: flow-mods to the {n - 1} others"
            " (target 0)"
        ] = f"{sum(mods['cross']['elsewhere'])} in all"
        self.facts[
            "the same: flow-mods to bridges 1 and 2 together (absolute), added / deleted"
        ] = f"{stats(mods['cross']['here'][0::2])} / {stats(mods['cross']['here'][1::2])}"
        for what, ms in latency.items():
            self.facts[f"latency: {what} (answer after every switch confirmed)"] = f"{stats(ms)} ms"

    def restart(self) -> None:
        """The controller restarted with its state unchanged: every switch reconnects and is
        compared; nothing should be sent."""
        self.start_attached()
        ours, base, mods, after_connect = [], [], [], []
        for _ in range(self.repeat):
            self.ctl.stop()
            since = self.mark()
            t0 = time.perf_counter()
            self.ctl.start(timeout=60)
            lab.wait_for(lambda s=since: len(self.in_sync(s)) == self.hosts, 120, "every switch")
            ours.append(time.perf_counter() - t0)
            time.sleep(1.0)  # later syncs, if any, land
            reports = self.in_sync(since)
            sent = sum(a + d for a, d, _ in reports.values()) + sum(self.synced(since).values())
            mods.append(sent)
            after_connect.append(max(t for _, _, t in reports.values()))
            for k in self.ks:
                assert self.flow_count(k) == self.expected[k]
            t0 = time.perf_counter()
            for k in self.ks:
                self.ovs.dump_flows(bridge(k))
            base.append(time.perf_counter() - t0)
        self.check_both_ends()
        self.ctl.stop()
        self.results.update(restart=after_connect, restart_base=base)
        self.facts["restart to every switch in sync (start, load, reconnect, resync; absolute)"] = (
            f"{stats(ours)} s"
        )
        self.facts["restart with the state unchanged: flow-mods to all bridges (target 0)"] = (
            ", ".join(map(str, mods))
        )
        self.restart_mods = mods
