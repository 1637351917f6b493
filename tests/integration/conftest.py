"""Fixtures for tests against a real Open vSwitch (userspace datapath) and real traffic.

Each test gets its own private OVS in its tmp folder, a bridge with a unique name, a
`ryu-manager ryu_ctfw.app`, and namespace VMs on test-only addresses (198.18.0.0/15).
Everything is stopped by pid and deleted afterwards. Without root or OVS the fixtures
raise LabError: the test errors with the reason, it never passes silently.

Every process that runs these tests (each pytest-xdist worker, or pytest itself without
xdist) first moves into a network namespace of its own (`lab.isolate_network`), so the
workers' Open vSwitch instances, controllers and veths never meet, and none of them
touches the machine's own network namespace.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ryu_ctfw import lab
from ryu_ctfw.compiler import REASON_BY_NAME

pytestmark = pytest.mark.integration


def pytest_configure(config: pytest.Config) -> None:
    # Runs when this file is loaded, which is at collection, before any test. The xdist
    # controller only hands out tests and starts nothing: it stays where it is.
    xdist_controller = config.getoption("dist", "no") != "no" and not hasattr(config, "workerinput")
    if xdist_controller or os.geteuid() != 0:
        return  # without root, every lab fixture fails with the reason instead
    try:
        lab.isolate_network()
    except lab.LabError as e:
        raise pytest.UsageError(f"cannot isolate the integration tests: {e}") from e


SEED_MACS = {"vm1": "52:54:00:60:84:ff", "vm2": "52:54:00:99:90:78"}


def drop(reason: str) -> str:
    """The actions of a line that drops as an event, as the switch prints them: the reason's
    code to the metadata, then the log table (which tells the controller)."""
    return f"actions=write_metadata:0x{REASON_BY_NAME[reason].code:x},goto_table:3"


def is_drop(text: str) -> bool:
    """Whether a flow (its ovs-ofctl text) drops what it matches: silently (no action), or
    as an event (to the log table)."""
    return text.endswith("actions=drop") or "goto_table:3" in text


# Table 1's last line: no pair allows the packet.
NO_PAIR_DROP = f"priority=0 {drop('no-pair')}"


@dataclass
class Lab:
    root: Path
    ovs: lab.Ovs
    ctl: lab.Controller
    bridge: str
    token: str
    vms: dict[str, lab.Vm] = field(default_factory=dict)

    def vm(
        self,
        name: str,
        ofport: int,
        host: int,
        mac: str | None = None,
        register: bool = True,
        give_mac: bool = True,
        ipv6: bool = False,
        bridge: str | None = None,
    ) -> lab.Vm:
        """A namespace VM `name` on `ofport` with 198.18.0.<host>/24 (and, with `ipv6`,
        2001:db8::<host>/64), registered over REST with its port, IPs and MAC."""
        mac = mac or SEED_MACS.get(name) or f"52:54:00:00:00:{host:02x}"
        ips = [f"198.18.0.{host}/24"] + ([f"2001:db8::{host:x}/64"] if ipv6 else [])
        vm = lab.Vm(ns=f"ctfw-{self.token}-{name}", port=f"ct{self.token}{name}", mac=mac, ips=ips)
        self.vms[name] = vm.create()
        vm.plug(self.ovs, bridge or self.bridge, ofport)
        if register:
            body: dict = {"port": vm.port, "ips": [ip.split("/")[0] for ip in ips]}
            if give_mac:
                body["mac"] = mac
            self.ctl.ok("PUT", f"/ctfw/v1/vms/{name}", body)
        return vm

    def pair(
        self, initiator: str, responder: str, protocol: str = "any", ports: str | None = None
    ) -> int:
        body = {"initiator": initiator, "responder": responder, "protocol": protocol}
        if ports is not None:
            body["ports"] = ports
        return self.ctl.ok("POST", "/ctfw/v1/pairs", body)["id"]

    def flows(self) -> list[dict]:
        return self.ctl.ok("GET", "/ctfw/v1/flows")["flows"]

    def counter(self, text_part: str, table: int = 1) -> int:
        """Packets of the one flow in `table` whose ovs-ofctl text contains `text_part`."""
        hits = [f for f in self.flows() if f["table"] == table and text_part in f["text"]]
        assert len(hits) == 1, f"expected one flow matching {text_part!r}, got {hits}"
        return hits[0]["packets"]

    def counter_reaches(self, text_part: str, at_least: int, table: int = 1) -> int:
        """Wait for a counter: the userspace datapath reports packets a little late."""
        lab.wait_for(
            lambda: self.counter(text_part, table) >= at_least,
            5,
            f"{text_part} to count {at_least} packets",
        )
        return self.counter(text_part, table)

    def drop_counter(self) -> int:
        """Packets table 1's last line dropped (no pair allows them: an event)."""
        return self.counter(NO_PAIR_DROP)

    # --- networks, groups and the world behind an uplink (issue 11) ----------------------
    def network(self, name: str, port: str, cidrs: list[str]) -> dict:
        """PUT a network: addresses `cidrs` reached through bridge port `port`."""
        return self.ctl.ok("PUT", f"/ctfw/v1/networks/{name}", {"port": port, "cidrs": cidrs})

    def group(self, name: str, members: list[str]) -> dict:
        """PUT a group with exactly these members (VM names)."""
        return self.ctl.ok("PUT", f"/ctfw/v1/groups/{name}", {"members": members})

    def uplink(
        self, ofport: int = 9, network: str | None = "outside", bridge: str | None = None
    ) -> lab.Uplink:
        """A router namespace on `ofport` (lab.GATEWAY4 / lab.GATEWAY6 on the bridge side)
        and an outside namespace behind it (lab.OUTSIDE4, lab.OUTSIDE6, ...). Every VM made
        so far gets its default routes via the router (later ones: `lab.default_route`).
        Registered as network `network` with lab.OUTSIDE_CIDRS unless that is None. Torn
        down with the VMs (it sits in `vms` under "uplink:router" and "uplink:outside",
        names no VM can have)."""
        up = lab.Uplink.named(f"ctfw-{self.token}", f"ct{self.token}up")
        vms = list(self.vms.values())
        up.create()
        self.vms["uplink:router"], self.vms["uplink:outside"] = up.router, up.outside
        up.plug(self.ovs, bridge or self.bridge, ofport)
        for vm in vms:
            lab.default_route(vm)
        if network is not None:
            self.network(network, up.port, lab.OUTSIDE_CIDRS)
        return up


def _connect_logs(ovs: lab.Ovs, ctl: lab.Controller) -> str:
    """What both sides logged, for a bridge that never connected."""
    out = [f"ofp port {ctl.ofp_port}, api port {ctl.api_port}"]
    for log in (ctl.log_file, ovs.root / "ovs-vswitchd.log"):
        text = log.read_text() if log.exists() else "(none)"
        out.append(f"--- {log}:\n{text[-3000:]}")
    return "\n".join(out)


@pytest.fixture
def labenv(tmp_path: Path) -> Iterator[Lab]:
    lab.require_root_and_tools()
    token = secrets.token_hex(2)
    ovs = lab.Ovs(tmp_path / "ovs").start()
    ctl = lab.Controller(tmp_path / "ctl")
    env = Lab(tmp_path, ovs, ctl, f"ctbr{token}", token)
    try:
        ctl.start()
        # A fixed dpid: a restarted ovs-vswitchd must come back as the same switch.
        ovs.add_bridge(env.bridge, ctl.ofp_port, dpid=f"00000000{token}0001")
        try:
            ctl.wait_connected(env.bridge)
        except lab.LabError as e:
            raise lab.LabError(f"{e}\n{_connect_logs(ovs, ctl)}") from None
        yield env
    finally:
        ctl.stop()
        for vm in env.vms.values():
            vm.destroy()
        ovs.stop()


@pytest.fixture
def seed(labenv: Lab) -> Lab:
    """The seed's setup: vm1 on ofport 2, vm2 on ofport 3, pair vm1 -> vm2."""
    labenv.vm("vm1", 2, 1)
    labenv.vm("vm2", 3, 2)
    labenv.pair("vm1", "vm2")
    return labenv


# --- two hosts (issue 12) ------------------------------------------------------------------
# Host A is labenv's bridge (this namespace's Open vSwitch). Host B is a second Open vSwitch
# whose ovs-vswitchd runs in a network namespace of its own: one OVS database cannot hold
# two ports of one name (Port and Interface names are unique in it), and two hypervisors
# do (libvirt's vnet0). B reaches the controller over a veth into its namespace
# (CTL_LINK_A here, CTL_LINK_B there), and the two bridges are joined by a veth whose ends
# are their fabric ports.

CTL_LINK_A, CTL_LINK_B = "198.19.254.1/30", "198.19.254.2/30"


@dataclass
class Host:
    label: str  # "A" or "B"
    ovs: lab.Ovs
    bridge: str
    dpid: str  # 16 hex digits
    fabric: str  # the fabric port's name
    ns: str | None = None  # where its ports live (None: this namespace)

    def flows(self) -> dict[str, str]:
        """Our flows on this bridge (no counters), keyed by table, priority and match."""
        return lab.flow_table(self.ovs.dump_flows(self.bridge, "--no-stats"))

    def ofport(self, port: str) -> int:
        return self.ovs.ofport(port)


@dataclass
class Hosts:
    env: Lab
    a: Host
    b: Host

    def vm(
        self,
        name: str,
        host: Host,
        ip: int,
        port: str | None = None,
        mac: str | None = None,
        switch: str | None = "dpid",
        register: bool = True,
        ofport: int | None = None,
        ipv6: bool = False,
    ) -> lab.HostVm:
        """A namespace VM `name` with 198.18.0.<ip>/24 (and, with `ipv6`, 2001:db8::<ip>/64)
        on `host`'s bridge (port name `port`, default ct<token><name>), registered with its
        MAC and IPs, and with its switch named by "dpid", by "bridge" name, or not at all
        (None)."""
        env = self.env
        mac = mac or f"52:54:00:00:12:{ip:02x}"
        port = port or f"ct{env.token}{name}"
        ns = f"ctfw-{env.token}-{name}"
        ips = [f"198.18.0.{ip}/24"] + ([f"2001:db8::{ip:x}/64"] if ipv6 else [])
        vm = lab.HostVm(ns=ns, port=port, mac=mac, ips=ips)
        env.vms[name] = vm
        if host.ns is None:
            vm.create()
        else:
            vm.create_in(host.ns, f"cx{env.token}{ip:x}")
        vm.plug(host.ovs, host.bridge, ofport)
        if register:
            body: dict = {"port": port, "mac": mac, "ips": [i.split("/")[0] for i in ips]}
            if switch is not None:
                body["switch"] = host.dpid if switch == "dpid" else host.bridge
            env.ctl.ok("PUT", f"/ctfw/v1/vms/{name}", body)
        return vm

    def move(self, vm: lab.HostVm, src: Host, dst: Host, ofport: int | None = None) -> int:
        """Unplug `vm`'s port from `src`, take it to `dst`'s namespace, plug it into `dst`."""
        vm.unplug(src.ovs, src.bridge)
        vm.move_port(dst.ns)
        return vm.plug(dst.ovs, dst.bridge, ofport)


@pytest.fixture
def hosts(labenv: Lab) -> Iterator[Hosts]:
    """Two hosts A (labenv's bridge) and B, each connected to the controller on its own,
    joined by fab<token>a (A's fabric port) <-> fab<token>b (B's), set over REST."""
    tok = labenv.token
    a = Host("A", labenv.ovs, labenv.bridge, f"00000000{tok}0001", f"fab{tok}a")
    netns = lab.Netns(f"ctfw-{tok}-hostb")
    ovs_b = lab.NsOvs(labenv.root / "ovs-b", ns=netns.name,
                      controller_host=CTL_LINK_A.split("/")[0])  # fmt: skip
    b = Host("B", ovs_b, f"ctbb{tok}", f"00000000{tok}0002", f"fab{tok}b", netns.name)
    links = [
        lab.Link(f"ctl{tok}a", f"ctl{tok}b", netns.name, CTL_LINK_A, CTL_LINK_B),
        lab.Link(a.fabric, b.fabric, netns.name),
    ]
    made: list[lab.Link] = []
    try:
        netns.create()
        for link in links:
            made.append(link.create())
        ovs_b.start()
        ovs_b.add_bridge(b.bridge, labenv.ctl.ofp_port, dpid=b.dpid)
        try:
            labenv.ctl.wait_connected(b.bridge)
        except lab.LabError as e:
            raise lab.LabError(f"{e}\n{_connect_logs(ovs_b, labenv.ctl)}") from None
        a.ovs.vsctl("add-port", a.bridge, a.fabric, "--", "set", "interface", a.fabric,
                    "ofport_request=1000")  # fmt: skip
        b.ovs.vsctl("add-port", b.bridge, b.fabric, "--", "set", "interface", b.fabric,
                    "ofport_request=1000")  # fmt: skip
        for host in (a, b):
            labenv.ctl.ok("PUT", f"/ctfw/v1/switches/{host.dpid}", {"fabric_port": host.fabric})
        yield Hosts(labenv, a, b)
    finally:
        ovs_b.stop()
        for link in made:
            link.destroy()
        netns.destroy()


# --- two hosts on a shared segment with a gateway (issue 12, networks by the fabric) ---------


@dataclass
class SegmentHosts(Hosts):
    segment: lab.Segment | None = None
    up: lab.Uplink | None = None  # the gateway (router) on the segment, and the outside


@pytest.fixture
def segment_hosts(labenv: Lab) -> Iterator[SegmentHosts]:
    """As `hosts`, but the fabric is a shared segment: a Linux bridge in a namespace of its
    own (ctfw-<token>-seg; a hub, it learns no MACs) with A's fabric port, B's fabric port
    and a gateway router's NIC attached, so A, B and the router sit on one L2 segment. Both
    hosts' fabric ports have the same name, fab<token> (each set over REST). The router
    (lab.Uplink: lab.GATEWAY4 / lab.GATEWAY6 on the segment, forwarding) routes to an
    outside namespace (lab.OUTSIDE4, lab.OUTSIDE6, ...); no network is registered, and no
    VM routed via it yet."""
    tok = labenv.token
    fabric = f"fab{tok}"
    a = Host("A", labenv.ovs, labenv.bridge, f"00000000{tok}0001", fabric)
    netns = lab.Netns(f"ctfw-{tok}-hostb")
    ovs_b = lab.NsOvs(labenv.root / "ovs-b", ns=netns.name,
                      controller_host=CTL_LINK_A.split("/")[0])  # fmt: skip
    b = Host("B", ovs_b, f"ctbb{tok}", f"00000000{tok}0002", fabric, netns.name)
    ctl_link = lab.Link(f"ctl{tok}a", f"ctl{tok}b", netns.name, CTL_LINK_A, CTL_LINK_B)
    segment = lab.Segment(f"ctfw-{tok}-seg", bridge=f"seg{tok}")
    up = lab.Uplink.named(f"ctfw-{tok}-gw", f"ct{tok}gw")
    made: list = []
    try:
        netns.create()
        made.append(netns)
        made.append(ctl_link.create())
        made.append(segment.create())
        segment.attach(a.fabric, None, f"sg{tok}a")
        segment.attach(b.fabric, b.ns, f"sg{tok}b")
        labenv.vms["gw:router"], labenv.vms["gw:outside"] = up.router, up.outside
        up.create()
        segment.adopt(up.port)
        ovs_b.start()
        made.append(ovs_b)
        ovs_b.add_bridge(b.bridge, labenv.ctl.ofp_port, dpid=b.dpid)
        try:
            labenv.ctl.wait_connected(b.bridge)
        except lab.LabError as e:
            raise lab.LabError(f"{e}\n{_connect_logs(ovs_b, labenv.ctl)}") from None
        for host in (a, b):
            host.ovs.vsctl("add-port", host.bridge, host.fabric, "--", "set", "interface",
                           host.fabric, "ofport_request=1000")  # fmt: skip
            labenv.ctl.ok("PUT", f"/ctfw/v1/switches/{host.dpid}", {"fabric_port": host.fabric})
        yield SegmentHosts(labenv, a, b, segment, up)
    finally:
        for thing in reversed(made):
            if isinstance(thing, lab.Ovs):
                thing.stop()
            else:
                thing.destroy()
        up.destroy()
