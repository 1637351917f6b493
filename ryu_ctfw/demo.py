"""`make demo`: the seed's Step 4, end to end, on this machine.

Builds the seed's lab from nothing in a private temporary folder: an Open vSwitch of its
own (userspace datapath) with bridge br0, two "VMs" (network namespaces vm1 and vm2 with
the seed's MACs, plugged in as tap2 on ofport 2 and tap4 on ofport 3), and
`ryu-manager ryu_ctfw.app`. It tells the controller about the VMs and the pair
"vm1 may open connections to vm2" over REST, printing the equivalent curl commands,
then repeats the seed's Step 4 and shows the flows with their counters and the conntrack
entries. Everything it started is stopped by pid and deleted at the end; it refuses to
run if any of the names it needs is already taken on the machine.

Addresses: the seed used 192.168.0.1 and 192.168.0.2. This demo uses 198.18.0.1/24 and
198.18.0.2/24 from 198.18.0.0/15, the range RFC 2544 reserves for benchmarking, so that
it can never clash with, or be mistaken for, a real 192.168.0.0/24 network this machine
might be on. Nothing is routed out of the namespaces.

Exit status: 0 when every expectation held, 1 when one did not, 2 when the lab could
not be built.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ryu_ctfw import lab

BRIDGE = "br0"
SUBNET_NOTE = "198.18.0.0/24 (RFC 2544 test range) instead of the seed's 192.168.0.0/24"
DROP = "priority=0 actions=drop"  # table 1's last entry: the seed's "+new,in_port=3 drop"


@dataclass(frozen=True)
class VmSpec:
    name: str  # also the network namespace's name
    port: str  # the host end of its NIC, plugged into br0
    ofport: int
    mac: str
    ip: str  # with prefix length


SEED_VMS = (
    VmSpec("vm1", "tap2", 2, "52:54:00:60:84:ff", "198.18.0.1/24"),
    VmSpec("vm2", "tap4", 3, "52:54:00:99:90:78", "198.18.0.2/24"),
)


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def shell(argv: list[str]) -> str:
    return "$ " + shlex.join(argv)


@dataclass
class Demo:
    root: Path
    ovs: lab.Ovs = field(init=False)
    ctl: lab.Controller = field(init=False)
    vms: dict[str, lab.Vm] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ovs = lab.Ovs(self.root / "ovs")
        self.ctl = lab.Controller(self.root / "ctl")

    # --- set-up -----------------------------------------------------------------------------
    def start_switch(self) -> None:
        heading(f"Open vSwitch: a private instance in {self.ovs.root}")
        self.ovs.start()
        print(f"ovsdb-server and ovs-vswitchd run with OVS_RUNDIR={self.ovs.root}")
        print("(the machine has no openvswitch kernel module: bridges use datapath_type=netdev)")

    def start_controller(self) -> None:
        heading("The controller: ryu-manager ryu_ctfw.app")
        self.ctl.start()
        assert self.ctl.proc is not None
        print(shell([str(a) for a in self.ctl.proc.args]))
        print(f"pid {self.ctl.proc.pid}, log {self.ctl.log_file}")
        conf = self.root / "ctl" / "ctfw.conf"
        print(f"{conf}:\n  " + conf.read_text().strip().replace("\n", "\n  "))

    def add_bridge(self) -> None:
        heading(f"Bridge {BRIDGE}, controlled by 127.0.0.1:{self.ctl.ofp_port}")
        self.ovs.add_bridge(BRIDGE, self.ctl.ofp_port)
        # With another userspace-datapath OVS on the machine, ovs-vsctl succeeds but the
        # bridge never appears (both want the tap device ovs-netdev).
        lab.wait_for(
            lambda: Path(f"/sys/class/net/{BRIDGE}").exists(),
            10,
            f"bridge {BRIDGE} to appear (see {self.ovs.root}/ovs-vswitchd.log)",
        )
        sw = self.ctl.wait_connected(BRIDGE)
        print(f"{BRIDGE} (dpid {sw['dpid']}) is connected to the controller")

    def create_vms(self) -> None:
        heading(f"Two VMs as network namespaces, on {SUBNET_NOTE}")
        for spec in SEED_VMS:
            vm = lab.Vm(ns=spec.name, port=spec.port, mac=spec.mac, ips=[spec.ip])
            refuse_taken([spec.port], [spec.name])
            self.vms[spec.name] = vm  # from here on the names are ours to delete
            vm.create()
            ofport = vm.plug(self.ovs, BRIDGE, spec.ofport)
            print(
                f"{spec.name}: eth0 {spec.mac} {spec.ip}, host side {spec.port} = ofport {ofport}"
            )
        for line in self.ovs.ofctl("show", BRIDGE).splitlines():
            if "addr:" in line:
                print("  " + line.strip())

    def register(self) -> None:
        heading("Tell the controller about the VMs and the pair (REST)")
        for spec in SEED_VMS:
            body = {"port": spec.port, "mac": spec.mac, "ips": [spec.ip.split("/")[0]]}
            self.rest("PUT", f"/ctfw/v1/vms/{spec.name}", body)
        self.rest("POST", "/ctfw/v1/pairs", {"initiator": "vm1", "responder": "vm2"})

    def rest(self, method: str, path: str, body: Any) -> None:
        url = f"http://127.0.0.1:{self.ctl.api_port}{path}"
        curl = ["curl", "-s", "-X", method, "-H", "Content-Type: application/json"]
        print(shell([*curl, "-d", json.dumps(body), url]))
        status, answer = self.ctl.api(method, path, body)
        print(f"  -> {status} {json.dumps(answer)}")
        if not 200 <= status < 300:
            raise lab.LabError(f"{method} {path} was refused: {status} {answer}")

    # --- Step 4 -----------------------------------------------------------------------------
    def step4_vm2_to_vm1(self) -> None:
        heading("Step 4a: vm2 -> vm1 (nothing allowed)")
        vm1, vm2 = self.vms["vm1"], self.vms["vm2"]
        self.serve(vm1, "tcp", 23)
        self.serve(vm1, "udp", 53)
        drops = self.settled(DROP)
        self.expect("vm2 -> vm1 ping", vm2.ping(vm1.ip), want=False)
        self.expect("vm2 -> vm1 telnet (tcp 23)", vm2.tcp(vm1.ip, 23, timeout=1), want=False)
        self.expect("vm2 -> vm1 dig (udp 53)", vm2.udp(vm1.ip, 53, timeout=1), want=False)
        self.expect_counter(DROP, drops, rises=True)

    def step4_vm1_to_vm2(self) -> None:
        heading("Step 4b: vm1 -> vm2 (vm1 may open connections, vm2 may answer)")
        vm1, vm2 = self.vms["vm1"], self.vms["vm2"]
        self.serve(vm2, "tcp", 22)
        self.serve(vm2, "udp", 53)
        drops = self.settled(DROP)
        self.expect("vm1 -> vm2 ping", vm1.ping(vm2.ip), want=True)
        self.expect("vm1 -> vm2 telnet (tcp 22)", vm1.tcp(vm2.ip, 22), want=True)
        self.expect("vm1 -> vm2 dig (udp 53)", vm1.udp(vm2.ip, 53), want=True)
        self.expect_counter(DROP, drops, rises=False)

    def serve(self, vm: lab.Vm, proto: str, port: int) -> None:
        self.servers.append(vm.serve(proto, port))
        print(f"({vm.ns} echoes {proto} {port})")

    def expect(self, what: str, worked: bool, want: bool) -> None:
        result = "works" if worked else "blocked"
        verdict = "expected" if worked == want else "UNEXPECTED"
        print(f"{what}: {result} ({verdict})", flush=True)
        if worked != want:
            self.failures.append(f"{what}: {result}")

    def counter(self, text_part: str) -> int:
        flows = self.ctl.ok("GET", "/ctfw/v1/flows")["flows"]
        hits = [f for f in flows if f["table"] == 1 and text_part in f["text"]]
        if len(hits) != 1:
            raise lab.LabError(f"expected one table-1 flow with {text_part!r}, found {hits}")
        return hits[0]["packets"]

    def settled(self, text_part: str, timeout: float = 5) -> int:
        """A counter once it stopped moving: userspace datapath counters lag a little."""
        last = self.counter(text_part)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.counter(text_part)
            if now == last:
                break
            last = now
        return last

    def expect_counter(self, text_part: str, before: int, rises: bool) -> None:
        deadline = time.monotonic() + (5 if rises else 1)
        after = self.counter(text_part)
        while (after > before) != rises and time.monotonic() < deadline:
            time.sleep(0.2)
            after = self.counter(text_part)
        if not rises:
            after = self.settled(text_part)
        what = f'table 1 "{text_part}" n_packets {before} -> {after}'
        ok = (after > before) == rises
        verdict = "expected" if ok else "UNEXPECTED"
        print(f"{what}: {'rose' if after > before else 'unchanged'} ({verdict})")
        if not ok:
            self.failures.append(what)

    # --- what the switch shows ----------------------------------------------------------------
    def show_flows(self) -> None:
        heading("The flows, with their counters")
        self.settled(DROP)
        print(shell(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", BRIDGE]))
        print(self.ovs.dump_flows(BRIDGE).rstrip())

    def show_conntrack(self) -> None:
        heading("Conntrack entries from vm1 (the seed's `conntrack -L -s`)")
        src = "src=" + self.vms["vm1"].ip + ","
        print(shell(["ovs-appctl", "dpctl/dump-conntrack"]) + f" | grep 'orig=({src}'")
        entries = [e for e in self.ovs.conntrack().splitlines() if f"orig=({src}" in e]
        print("\n".join(entries) if entries else "(none)")
        protos = sorted({e.split(",", 1)[0] for e in entries})
        want = ["icmp", "tcp", "udp"]
        missing = [p for p in want if p not in protos]
        verdict = "expected" if not missing else f"UNEXPECTED, missing {', '.join(missing)}"
        print(f"connections vm1 opened: {', '.join(protos) or 'none'} ({verdict})")
        if missing:
            self.failures.append(f"conntrack entries missing: {missing}")

    # --- tear-down ----------------------------------------------------------------------------
    def stop(self) -> None:
        heading("Stopping everything the demo started")
        steps: list[tuple[str, Callable[[], None]]] = [
            ("echo servers", self.stop_servers),
            ("ryu-manager", self.ctl.stop),
            *[(f"{name} ({vm.port})", vm.destroy) for name, vm in self.vms.items()],
            (f"Open vSwitch and {BRIDGE}", self.ovs.stop),
        ]
        for what, step in steps:
            try:
                step()
                print(f"stopped {what}")
            except Exception as e:  # keep going: the rest must still be stopped
                print(f"could not stop {what}: {e}", file=sys.stderr)
                self.failures.append(f"tear-down of {what}: {e}")

    def stop_servers(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def refuse_taken(interfaces: list[str], namespaces: list[str]) -> None:
    """Never touch what isn't ours: stop if a name the demo needs is in use already."""
    taken = [f"interface {i}" for i in interfaces if Path(f"/sys/class/net/{i}").exists()]
    taken += [f"network namespace {n}" for n in namespaces if Path(f"/run/netns/{n}").exists()]
    if taken:
        raise lab.LabError(
            f"{', '.join(taken)} already exist(s) on this machine; the demo needs these"
            " names and will not touch what it did not create. Remove them or run the"
            " demo elsewhere."
        )


def refuse_other_ovs() -> None:
    """Two userspace datapaths cannot share a machine: both need the tap ovs-netdev."""
    if Path("/sys/class/net/ovs-netdev").exists():
        raise lab.LabError(
            "interface ovs-netdev exists: another userspace-datapath Open vSwitch runs on"
            " this machine (a test run?), and a second one cannot create its bridges."
            " Run the demo once it has stopped."
        )


def run_demo(demo: Demo) -> None:
    demo.start_switch()
    demo.start_controller()
    demo.add_bridge()
    demo.create_vms()
    demo.register()
    demo.step4_vm2_to_vm1()
    demo.step4_vm1_to_vm2()
    demo.show_flows()
    demo.show_conntrack()


def main() -> int:
    try:
        lab.require_root_and_tools()
        lab.isolate_network()  # its own network namespace: runs beside the tests
        refuse_taken([BRIDGE, *(s.port for s in SEED_VMS)], [s.name for s in SEED_VMS])
        refuse_other_ovs()
    except lab.LabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    print(f"ryu-ctfw demo: the seed's Step 4 on {SUBNET_NOTE}")
    with tempfile.TemporaryDirectory(prefix="ryu-ctfw-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            run_demo(demo)
        except (lab.LabError, subprocess.SubprocessError) as e:
            print(f"demo: {e}", file=sys.stderr)
            demo.failures.append(str(e))
            broken = True
        else:
            broken = False
        finally:
            demo.stop()
    if broken:
        return 2
    if demo.failures:
        heading("FAILED")
        print("\n".join(demo.failures))
        return 1
    heading("All of the seed's Step 4 expectations held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
