"""Many hypervisors, one controller (issue 12): host A (vm1) and host B (vm2, vm3), each an
Open vSwitch bridge connected to the controller on its own, joined by a veth whose ends are
their fabric ports (conftest's `hosts`; B's ovs-vswitchd runs in a namespace of its own, so
both hosts can have a port of one name, as two hypervisors do).

As in test_isolation.py: every allowed exchange also sniffs a port that must stay silent,
every refusal shows (Sniffer) that the destination saw nothing and comes with a control
showing the same path delivers, and every forged frame comes with an honest one.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass

import frames
import pytest
from conftest import Host, Hosts, is_drop
from frames import flow_marker
from sniff import Sniffer, seen
from sniff import watch as sniff

from ryu_ctfw import lab


@dataclass
class Three:
    h: Hosts
    vm1: lab.HostVm  # on A
    vm2: lab.HostVm  # on B
    vm3: lab.HostVm  # on B


@pytest.fixture
def three(hosts: Hosts) -> Three:
    """vm1 on A (its switch named by dpid), vm2 on B (by dpid), vm3 on B (by bridge name);
    no pairs yet."""
    vm1 = hosts.vm("vm1", hosts.a, 1)
    vm2 = hosts.vm("vm2", hosts.b, 2)
    vm3 = hosts.vm("vm3", hosts.b, 3, switch="bridge")
    return Three(hosts, vm1, vm2, vm3)


def marker() -> bytes:
    return b"ctfw-hosts-" + secrets.token_hex(6).encode()


def view(h: Hosts, name: str) -> dict:
    return h.env.ctl.ok("GET", f"/ctfw/v1/vms/{name}")


def switch_view(h: Hosts, dpid: str) -> dict:
    for sw in h.env.ctl.ok("GET", "/ctfw/v1/switches")["switches"]:
        if sw["dpid"] == dpid:
            return sw
    raise AssertionError(f"switch {dpid} not in GET /switches")


def port_lines(host: Host, ofport: int, with_drops: bool = True) -> list[str]:
    """Flows of `host` that take packets in from, or send them out of, `ofport` (without
    `with_drops`: leaving out the lines that drop what comes in from it, and its log line,
    which only tells the controller of those drops)."""
    pat = re.compile(rf"in_port={ofport}\b|output:{ofport}\b")
    lines = [f"{k} {v}" for k, v in host.flows().items() if pat.search(f"{k} {v}")]
    return [t for t in lines if with_drops or not (is_drop(t) or t.startswith("table=3,"))]


def drops(h: Hosts, dpid: str) -> int:
    """Packets counted by the drop lines of switch `dpid`."""
    flows = h.env.ctl.ok("GET", "/ctfw/v1/flows")["flows"]
    return sum(f["packets"] for f in flows if f["dpid"] == dpid and is_drop(f["text"]))


def ping_times(proc: subprocess.Popen[str], timeout: float) -> list[float]:
    out, _ = proc.communicate(timeout=timeout)
    return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]


def stream_times(proc: subprocess.Popen[str], timeout: float) -> list[float]:
    out, _ = proc.communicate(timeout=timeout)
    return [float(line) for line in out.split() if re.fullmatch(r"\d+\.\d+", line)]


# --- where VMs are, and pairs across hosts ---------------------------------------------------


def test_a_pair_across_hosts_works_and_reaches_nobody_else(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    for name, host, vm, switch in (("vm1", h.a, vm1, h.a.dpid), ("vm2", h.b, vm2, h.b.dpid),
                                   ("vm3", h.b, vm3, h.b.bridge)):  # fmt: skip
        v = view(h, name)
        assert (v["switch"], v["dpid"], v["ofport"]) == (switch, host.dpid, host.ofport(vm.port))
    assert switch_view(h, h.a.dpid)["fabric_port"] == h.a.fabric
    assert switch_view(h, h.b.dpid)["fabric_port"] == h.b.fabric
    vm4 = h.vm("vm4", h.a, 4)  # beside vm1 on A: must see none of vm2's replies
    h.env.pair("vm1", "vm2", "tcp", "7000")
    h.env.pair("vm1", "vm2", "icmp")
    with lab.servers(vm2, ("tcp", 7000)), lab.servers(vm3, ("tcp", 7000)):
        watch = sniff(lab.PROBE, vm2, vm3)
        watch += sniff(flow_marker(vm1.ip, vm2.ip), vm3) + sniff(flow_marker(vm2.ip, vm1.ip), vm3)
        watch += sniff(flow_marker(vm2.ip, vm1.ip), vm1, vm4)
        assert vm1.tcp(vm2.ip, 7000), "vm1 -> vm2 tcp/7000 across the fabric, echoed back"
        assert vm1.ping(vm2.ip), "vm1 -> vm2 ping across the fabric"
        to_vm2, *to_vm3, to_vm1, to_vm4 = seen(watch)
        assert to_vm2 >= 1 and to_vm3 == [0, 0, 0], "vm2 got it; vm3 saw no request or reply"
        assert to_vm1 >= 1 and to_vm4 == 0, "the replies came back to vm1 alone"
    # Committed on both hosts, each in its own conntrack table.
    for host in (h.a, h.b):
        assert host.ovs.conntrack_entries("tcp", vm1.ip, vm2.ip, "dport=7000"), host.label


def test_no_pair_no_path_between_hosts(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    h.env.pair("vm1", "vm2", "tcp", "7000")
    h.env.pair("vm1", "vm2", "icmp")
    with (
        lab.servers(vm1, ("tcp", 7000)),
        lab.servers(vm2, ("tcp", 7000)),
        lab.servers(vm3, ("tcp", 7000)),
    ):
        # Controls: the same hosts, the same fabric, both ways (vm2's replies reach vm1).
        assert vm1.tcp(vm2.ip, 7000) and vm1.ping(vm2.ip)
        watch = [
            Sniffer(vm1, flow_marker(vm2.ip, vm1.ip, 40701, 7000)),
            Sniffer(vm1, flow_marker(vm2.ip, vm1.ip)),
            Sniffer(vm3, flow_marker(vm1.ip, vm3.ip)),
        ]
        assert not vm2.tcp(vm1.ip, 7000, timeout=1, sport=40701), "vm2 -> vm1: the wrong way"
        assert not vm2.ping(vm1.ip, count=1), "vm2 -> vm1 ping: the wrong way"
        assert not vm1.tcp(vm3.ip, 7000, timeout=1), "vm1 -> vm3: no pair"
        assert not vm1.ping(vm3.ip, count=1), "vm1 -> vm3 ping: no pair"
        assert seen(watch) == [0, 0, 0], "nothing vm2 started reached vm1, nothing reached vm3"


def test_arp_crosses_the_fabric(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    h.env.pair("vm1", "vm2", "icmp")
    mark = marker()
    watch = sniff(mark, vm2, vm3)
    vm1.send_frame(frames.arp_frame(vm1.mac, "ff:ff:ff:ff:ff:ff", 1, vm1.mac, vm1.ip, vm2.ip, mark))
    assert seen(watch) == [1, 1], "a broadcast ARP request from A is flooded on B"
    watch = sniff(mark, vm2, vm3)
    vm1.send_frame(frames.arp_frame(vm1.mac, vm2.mac, 1, vm1.mac, vm1.ip, vm2.ip, mark))
    assert seen(watch) == [1, 0], "a unicast ARP to vm2's MAC reaches vm2 alone"
    watch = sniff(mark, vm1, vm3)
    vm2.send_frame(frames.arp_frame(vm2.mac, vm1.mac, 2, vm2.mac, vm2.ip, vm1.ip, mark))
    assert seen(watch) == [1, 0], "vm2's ARP reply to vm1's MAC crosses back to vm1 alone"
    watch = sniff(mark, vm1, vm3)
    vm2.send_frame(frames.arp_frame(vm2.mac, "ff:ff:ff:ff:ff:ff", 1, vm2.mac, vm2.ip, vm1.ip, mark))
    assert seen(watch) == [1, 1], "and B's broadcast reaches A (and vm3 beside it)"


def test_neighbour_discovery_crosses_the_fabric(hosts: Hosts) -> None:
    h = hosts
    vm1, vm2 = h.vm("vm1", h.a, 1, ipv6=True), h.vm("vm2", h.b, 2, ipv6=True)
    vm3 = h.vm("vm3", h.b, 3, ipv6=True)
    h.env.pair("vm1", "vm2", "icmp")
    a1, a2 = "2001:db8::1", "2001:db8::2"
    mark = marker()
    watch = sniff(mark, vm2, vm3)
    vm1.send_frame(frames.nd_frame(135, vm1.mac, a1, a2, vm1.mac, padding=mark))
    assert seen(watch) == [1, 1], "a multicast solicitation from A is flooded on B"
    watch = sniff(mark, vm2, vm3)
    vm1.send_frame(frames.nd_frame(135, vm1.mac, a1, a2, vm1.mac, vm2.mac, a2, mark))
    assert seen(watch) == [1, 0], "a unicast solicitation to vm2's MAC reaches vm2 alone"
    watch = sniff(mark, vm1, vm3)
    vm2.send_frame(frames.nd_frame(136, vm2.mac, a2, a2, vm2.mac, vm1.mac, a1, mark))
    assert seen(watch) == [1, 0], "vm2's advertisement to vm1's MAC crosses back to vm1 alone"
    watch = [Sniffer(vm3, flow_marker(a1, a2)), Sniffer(vm3, flow_marker(a2, a1))]
    assert vm1.ping(a2), "ping6 across the fabric (its ND too)"
    assert seen(watch) == [0, 0]


def test_one_port_name_on_both_hosts_for_two_vms(hosts: Hosts) -> None:
    h = hosts
    tap = f"ct{h.env.token}tap"
    p1 = h.vm("p1", h.a, 11, port=tap)  # names A by dpid
    p2 = h.vm("p2", h.b, 12, port=tap, switch="bridge")  # names B by bridge name
    other = h.vm("q", h.b, 13)
    assert h.a.ofport(tap) and h.b.ofport(tap)
    for name, host in (("p1", h.a), ("p2", h.b)):
        v = view(h, name)
        assert (v["port"], v["dpid"], v["ofport"]) == (tap, host.dpid, host.ofport(tap)), v
    h.env.pair("p1", "p2", "icmp")
    h.env.pair("p1", "p2", "tcp", "7000")
    with (
        lab.servers(p2, ("tcp", 7000)),
        lab.servers(other, ("tcp", 7000)),
        lab.servers(p1, ("tcp", 7000)),
    ):
        watch = sniff(lab.PROBE, p2, other)
        assert p1.tcp(p2.ip, 7000) and p1.ping(p2.ip), "p1 (A's tap) -> p2 (B's tap)"
        to_p2, to_other = seen(watch)
        assert to_p2 >= 1 and to_other == 0
        watch = [
            Sniffer(p1, flow_marker(p2.ip, p1.ip)),
            Sniffer(other, flow_marker(p1.ip, other.ip)),
        ]
        assert not p2.ping(p1.ip, count=1), "p2 -> p1 is the wrong way"
        assert not p1.ping(other.ip, count=1), "p1 -> q has no pair"
        assert seen(watch) == [0, 0]


def test_a_port_name_on_both_hosts_binds_a_vm_that_names_no_switch_nowhere(
    three: Three,
) -> None:
    h, vm1, vm3 = three.h, three.vm1, three.vm3
    dup = f"ct{h.env.token}dup"
    amb = h.vm("amb", h.a, 5, port=dup, switch=None)
    h.env.pair("vm1", "amb", "icmp")
    h.env.pair("amb", "vm3", "icmp")
    # Control: while only A has the port, amb is there and both its pairs work.
    assert view(h, "amb")["dpid"] == h.a.dpid
    assert vm1.ping(amb.ip) and amb.ping(vm3.ip)
    # A port of that name appears on B (another VM's, not registered).
    twin = h.vm("twin", h.b, 6, port=dup, mac="52:54:00:00:12:66", register=False)
    lab.wait_for(lambda: view(h, "amb")["dpid"] is None, 2, "amb to be bound nowhere")
    v = view(h, "amb")
    assert (v["dpid"], v["ofport"]) == (None, None), v
    for host in (h.a, h.b):
        text = "\n".join(f"{k} {v}" for k, v in host.flows().items())
        assert amb.mac not in text, f"no flow on {host.label} guesses where amb is: {text}"
        assert not port_lines(host, host.ofport(dup), with_drops=False), host.label
    watch = [Sniffer(amb, flow_marker(vm1.ip, amb.ip)), Sniffer(twin, flow_marker(vm1.ip, amb.ip)),
             Sniffer(vm3, flow_marker(amb.ip, vm3.ip))]  # fmt: skip
    assert not vm1.ping(amb.ip, count=1)
    assert not amb.ping(vm3.ip, count=1)
    assert seen(watch) == [0, 0, 0], "amb gets nothing, and sends nothing"
    # Naming its switch binds it again.
    h.env.ctl.ok("PUT", "/ctfw/v1/vms/amb",
                 {"port": dup, "mac": amb.mac, "ips": [amb.ip], "switch": h.a.dpid})  # fmt: skip
    assert view(h, "amb")["dpid"] == h.a.dpid
    lab.wait_for(lambda: vm1.ping(amb.ip, count=1), 3, "vm1 -> amb again")


# --- changes, moves, disconnects ---------------------------------------------------------------

DURATION = 8.0


def test_revocation_across_hosts_within_a_second(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    any_id = h.env.pair("vm1", "vm2")
    h.env.pair("vm1", "vm2", "tcp", "22")  # overlaps "any" for ssh: that one lives on
    h.env.pair("vm3", "vm2")
    procs = [vm2.serve("tcp", 22), vm2.serve("tcp", 2222), vm2.serve("tcp", 2223, push=True)]
    try:
        ssh = vm1.stream(vm2.ip, 22, DURATION)
        echo = vm1.stream(vm2.ip, 2222, DURATION)
        push = vm1.stream(vm2.ip, 2223, DURATION, push=True)
        local = vm3.stream(vm2.ip, 2222, DURATION)  # on B alone
        ping = vm1.popen(["ping", "-n", "-D", "-i", "0.2", "-w", str(int(DURATION)), vm2.ip])
        time.sleep(2)
        cut = time.time()
        assert h.env.ctl.api("DELETE", f"/ctfw/v1/pairs/{any_id}")[0] == 204
        answered = time.time()
        t = DURATION + 10
        ssh_t, echo_t, push_t = stream_times(ssh, t), stream_times(echo, t), stream_times(push, t)
        local_t, ping_t = stream_times(local, t), ping_times(ping, t)
    finally:
        for p in procs:
            p.kill()
    assert answered - cut < 5, "the change is confirmed in seconds"
    late = answered + 1.0
    for name, times in (("echo", echo_t), ("push", push_t), ("ping", ping_t)):
        assert any(x < cut for x in times), f"{name} never worked before the cut"
        assert not [x for x in times if x > late], f"{name} still passed after the cut: {times}"
    for name, times in (("ssh (tcp/22 pair remains)", ssh_t), ("vm3 -> vm2 on B", local_t)):
        assert any(x > cut + 2 for x in times), f"{name} should have lived on: {times}"


@pytest.mark.parametrize("how", ["switch unset", "switch updated by PUT"])
def test_a_vm_moved_from_a_to_b_takes_its_pairs(three: Three, how: str) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    mv = h.vm("mv", h.a, 4, switch=None if how == "switch unset" else "dpid")
    h.env.pair("vm1", "mv", "icmp")  # local on A before the move, across hosts after
    h.env.pair("mv", "vm2", "icmp")  # across hosts before, local on B after
    assert vm1.ping(mv.ip) and mv.ping(vm2.ip), "control: both pairs work before the move"
    # Their neighbour entries stay put: a ping queued behind the kernel's ARP retry (1 s
    # apart) would measure the VM, not the switches.
    for vm, peer in ((vm1, mv), (mv, vm1), (mv, vm2), (vm2, mv)):
        vm.exec(["ip", "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", "eth0",
                 "nud", "permanent"])  # fmt: skip
    old = h.a.ofport(mv.port)
    assert port_lines(h.a, old), "A has flows for mv's port"
    pings = [vm1.popen(["ping", "-n", "-D", "-i", "0.1", "-w", "7", mv.ip]),
             mv.popen(["ping", "-n", "-D", "-i", "0.1", "-w", "7", vm2.ip])]  # fmt: skip
    time.sleep(1)
    moved = time.time()
    h.move(mv, h.a, h.b)
    if how != "switch unset":
        body = {"port": mv.port, "mac": mv.mac, "ips": [mv.ip], "switch": h.b.dpid}
        h.env.ctl.ok("PUT", "/ctfw/v1/vms/mv", body)
    arrived = time.time()  # the port is on B (and, by PUT, the policy says so)
    vm1_t, mv_t = (ping_times(p, 20) for p in pings)
    for name, times in (("vm1 -> mv", vm1_t), ("mv -> vm2", mv_t)):
        assert any(t < moved for t in times), f"{name} never worked before the move"
        after = [t for t in times if t > arrived]
        assert after and after[0] - arrived < 1.0, f"{name} after the move: {times}, {arrived}"
    v = view(h, "mv")
    assert (v["dpid"], v["ofport"]) == (h.b.dpid, h.b.ofport(mv.port))
    assert not port_lines(h.a, old), "A holds no flow of mv's old port"
    watch = [Sniffer(mv, flow_marker(vm3.ip, mv.ip))]
    assert not vm3.ping(mv.ip, count=1), "on B too mv is reached only as its pairs say"
    assert seen(watch) == [0]


def _disconnected(h: Hosts, dpid: str) -> bool:
    return not switch_view(h, dpid)["connected"]


def test_a_host_cut_from_the_controller_keeps_enforcing_and_is_mended(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    ctl = h.env.ctl
    h.env.pair("vm1", "vm2", "tcp", "7000")
    h.env.pair("vm1", "vm2", "icmp")
    h.env.pair("vm2", "vm3", "tcp", "7001")
    with lab.servers(vm2, ("tcp", 7000)), lab.servers(vm3, ("tcp", 7000), ("tcp", 7001)):
        assert vm1.tcp(vm2.ip, 7000) and vm2.tcp(vm3.ip, 7001)
        across = vm1.stream(vm2.ip, 7000, 12)
        local = vm2.stream(vm3.ip, 7001, 12)
        time.sleep(1)
        before = h.a.flows()
        reports = len(ctl.sync_reports_by_switch())
        # A's controller target becomes a port nobody listens on: OVS drops the connection
        # and keeps its flows (fail_mode=secure; removing the last target would flush them).
        h.a.ovs.vsctl("set-controller", h.a.bridge, f"tcp:127.0.0.1:{lab.free_port()}")
        cut = time.time()
        lab.wait_for(lambda: _disconnected(h, h.a.dpid), 10, "A to disconnect")
        assert switch_view(h, h.b.dpid)["connected"]
        # B goes on: its traffic, and a change that only B's VMs feel.
        assert vm2.tcp(vm3.ip, 7001), "vm2 -> vm3 on B while A is away"
        h.env.pair("vm3", "vm2", "icmp")
        assert vm3.ping(vm2.ip), "a change made while A is away works on B"
        # A enforces what it has: allowed stays allowed, denied stays denied.
        assert vm1.tcp(vm2.ip, 7000) and vm1.ping(vm2.ip), "vm1 -> vm2 while A is away"
        watch = [Sniffer(vm3, flow_marker(vm1.ip, vm3.ip))]
        assert not vm1.tcp(vm3.ip, 7000, timeout=1)
        assert seen(watch) == [0], "vm1 -> vm3 is still denied"
        # A change touching A while it is away: applied when it is back.
        h.env.pair("vm1", "vm3", "tcp", "7000")
        assert h.a.flows() == before, "A saw nothing while it was away"
        lab.wait_for(lambda: _disconnected(h, h.a.dpid), 1, "A still away")
        h.a.ovs.set_controller(h.a.bridge, ctl.ofp_port)
        lab.wait_for(lambda: len(ctl.sync_reports_by_switch()) > reports, 20, "A in sync")
        back = time.time()
        across_t, local_t = stream_times(across, 20), stream_times(local, 20)
    new = ctl.sync_reports_by_switch()[reports:]
    assert [r[0] for r in new] == [h.a.dpid], f"only A reconnected: {new}"
    _, found, added, deleted = new[0]
    after = h.a.flows()
    changed = [k for k, v in after.items() if before.get(k) != v]
    gone = [k for k in before if k not in after]
    assert found == len(before), "A kept every flow it had"
    assert (added, deleted) == (len(changed), len(gone)), "only the difference was sent"
    assert 0 < added + deleted < found
    for name, times in (("vm1 -> vm2 (A away)", across_t), ("vm2 -> vm3 (on B)", local_t)):
        assert any(cut + 1 < t < back for t in times), f"{name} went on while A was away"
    with lab.servers(vm3, ("tcp", 7000)):
        lab.wait_for(lambda: vm1.tcp(vm3.ip, 7000, timeout=1), 5, "vm1 -> vm3 after A is back")


def test_frames_forged_from_the_fabric_are_dropped(three: Three) -> None:
    h, vm1, vm2, vm3 = three.h, three.vm1, three.vm2, three.vm3
    h.env.pair("vm1", "vm2", "udp", "7777")
    h.env.pair("vm2", "vm1", "udp", "7778")
    mark = marker()
    bogus_mac = "52:54:00:de:ad:12"

    # Towards B, as if from A's side of the fabric.
    to_b = [
        frames.udp_frame(vm1.mac, vm2.mac, "198.18.0.77", vm2.ip, mark),  # no VM's address
        frames.udp_frame(vm2.mac, vm2.mac, vm1.ip, vm2.ip, mark),  # vm2's own MAC
        frames.udp_frame(vm1.mac, vm2.mac, vm3.ip, vm2.ip, mark),  # vm3 (on B) is no remote
        frames.udp_frame(bogus_mac, vm2.mac, vm1.ip, vm2.ip, mark),  # vm1's IP, no VM's MAC
        frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark, dst_port=7778),  # no pair
        frames.udp_frame(vm1.mac, vm3.mac, vm1.ip, vm3.ip, mark),  # vm1 -> vm3: no pair
        frames.udp_frame(vm1.mac, vm3.mac, vm1.ip, vm2.ip, mark),  # vm2's packet to vm3's MAC
    ]
    dropped = drops(h, h.b.dpid)
    watch = sniff(mark, vm2, vm3)
    lab.send_frame_on(h.a.fabric, frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark))
    for frame in to_b:
        lab.send_frame_on(h.a.fabric, frame)
    assert seen(watch) == [1, 0], "only vm1's honest datagram to vm2 got through on B"
    lab.wait_for(lambda: drops(h, h.b.dpid) >= dropped + len(to_b), 5, "B to count the drops")

    # Towards A, as if from B's side.
    to_a = [
        frames.udp_frame(vm2.mac, vm1.mac, vm2.ip, vm1.ip, mark, dst_port=7777),  # no pair
        frames.udp_frame(vm1.mac, vm1.mac, vm2.ip, vm1.ip, mark, dst_port=7778),  # vm1's MAC
        frames.udp_frame(vm2.mac, vm1.mac, "198.18.0.77", vm1.ip, mark, dst_port=7778),
    ]
    dropped = drops(h, h.a.dpid)
    watch = sniff(mark, vm1)
    honest = frames.udp_frame(vm2.mac, vm1.mac, vm2.ip, vm1.ip, mark, dst_port=7778)
    lab.send_frame_on(h.b.fabric, honest, ns=h.b.ns)
    for frame in to_a:
        lab.send_frame_on(h.b.fabric, frame, ns=h.b.ns)
    assert seen(watch) == [1], "only vm2's honest datagram to vm1 got through on A"
    lab.wait_for(lambda: drops(h, h.a.dpid) >= dropped + len(to_a), 5, "A to count the drops")


@pytest.mark.parametrize("named_by", ["dpid", "bridge"])
def test_controller_restart_with_both_hosts_sends_no_flow_mod(hosts: Hosts, named_by: str) -> None:
    """Both pairs' VMs name their switch (README: one placed by its port name alone is
    known only once its host is back), by dpid or by bridge name."""
    h = hosts
    vm1, vm2 = h.vm("vm1", h.a, 1, switch=named_by), h.vm("vm2", h.b, 2, switch=named_by)
    vm3 = h.vm("vm3", h.b, 3, switch=named_by)
    ctl = h.env.ctl
    h.env.pair("vm1", "vm2")
    h.env.pair("vm3", "vm2", "icmp")
    assert vm1.ping(vm2.ip) and vm3.ping(vm2.ip)
    flows_a, flows_b = h.a.flows(), h.b.flows()
    sent = (ctl.changes_sent(h.a.dpid), ctl.changes_sent(h.b.dpid))
    reports = len(ctl.sync_reports_by_switch())
    across = vm1.popen(["ping", "-n", "-i", "0.05", "-c", "100", vm2.ip])
    local = vm3.popen(["ping", "-n", "-i", "0.05", "-c", "100", vm2.ip])
    time.sleep(1)
    ctl.stop(signal.SIGKILL)
    time.sleep(1)
    ctl.start()
    lab.wait_for(lambda: len(ctl.sync_reports_by_switch()) >= reports + 2, 20, "both in sync")
    outs = [proc.communicate(timeout=30)[0] for proc in (across, local)]
    new = ctl.sync_reports_by_switch()[reports:]
    by = {d: (found, added, deleted) for d, found, added, deleted in new}
    assert set(by) == {h.a.dpid, h.b.dpid}, new
    assert by[h.a.dpid] == (len(flows_a), 0, 0), "no flow-mod to A"
    assert by[h.b.dpid] == (len(flows_b), 0, 0), "no flow-mod to B"
    assert (ctl.changes_sent(h.a.dpid), ctl.changes_sent(h.b.dpid)) == sent
    assert (h.a.flows(), h.b.flows()) == (flows_a, flows_b)
    for out, name in zip(outs, ("vm1 -> vm2", "vm3 -> vm2"), strict=True):
        answered = {int(n) for n in re.findall(r"icmp_seq=(\d+) ", out)}
        missing = sorted(set(range(1, 101)) - answered)
        assert "100 packets transmitted, 100 received" in out, f"{name}: lost {missing}"


def test_a_change_on_a_sends_nothing_to_b(three: Three) -> None:
    h, vm1, vm2 = three.h, three.vm1, three.vm2
    ctl = h.env.ctl
    vm4 = h.vm("vm4", h.a, 4)
    h.env.pair("vm1", "vm2", "icmp")
    assert vm1.ping(vm2.ip)
    flows_b, sent_b, sent_a = h.b.flows(), ctl.changes_sent(h.b.dpid), ctl.changes_sent(h.a.dpid)
    pair = h.env.pair("vm1", "vm4", "tcp", "7000")
    with lab.servers(vm4, ("tcp", 7000)), lab.servers(vm2, ("tcp", 7000)):
        watch = sniff(lab.PROBE, vm2)
        assert vm1.tcp(vm4.ip, 7000), "control: the change took effect on A"
        assert not vm1.tcp(vm2.ip, 7000, timeout=1), "and reaches only vm4"
        assert seen(watch) == [0]
    assert ctl.changes_sent(h.a.dpid) > sent_a, "A got the change"
    h.env.ctl.ok("DELETE", f"/ctfw/v1/pairs/{pair}")
    # An address more for vm4 (paired with nobody on B) is A's business too.
    ctl.ok(
        "PUT",
        "/ctfw/v1/vms/vm4",
        {"port": vm4.port, "mac": vm4.mac, "ips": [vm4.ip, "198.18.0.44"], "switch": h.a.dpid},
    )
    assert ctl.changes_sent(h.a.dpid) > sent_a + 1, "A got both changes"
    assert ctl.changes_sent(h.b.dpid) == sent_b, "nothing was sent to B"
    assert h.b.flows() == flows_b, "B's flows are as they were"
