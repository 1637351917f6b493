"""VMs and the world outside the bridge (issue 11): a network is the addresses (CIDRs)
reached through a port that is no VM. A router namespace sits on that port (the VMs'
default gateway, 198.18.0.254 / 2001:db8::fe) and routes to an "outside" namespace holding
198.19.0.1, 198.19.0.77 and 2001:db8:19::1 (in the network) and 198.20.0.1 (behind the same
router, outside the network's CIDRs).

As in test_isolation.py: every allowed exchange also sniffs a port that must stay silent,
every refusal shows (Sniffer) that the destination saw nothing and comes with a control
that shows the same path delivers, and every forged frame comes with an honest one.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from dataclasses import dataclass

import frames
import pytest
from conftest import Lab, drop
from frames import flow_marker
from sniff import Sniffer, seen
from sniff import watch as sniff

from ryu_ctfw import lab

NET = "outside"
OUT4, OUT6 = lab.OUTSIDE4, lab.OUTSIDE6


@dataclass
class World:
    env: Lab
    vm1: lab.Vm
    vm2: lab.Vm
    up: lab.Uplink

    @property
    def out(self) -> lab.Vm:
        return self.up.outside


@pytest.fixture
def world(labenv: Lab) -> World:
    """vm1 and vm2 (dual-stack) routed via the router on ofport 9, network "outside"."""
    vm1 = labenv.vm("vm1", 2, 1, ipv6=True)
    vm2 = labenv.vm("vm2", 3, 2, ipv6=True)
    up = labenv.uplink(9, NET)
    return World(labenv, vm1, vm2, up)


def v6(vm: lab.Vm) -> str:
    return next(ip.split("/")[0] for ip in vm.ips if ":" in ip)


def marker() -> bytes:
    return b"ctfw-networks-" + secrets.token_hex(6).encode()


def test_a_vm_may_open_udp53_to_the_network_and_nothing_more(world: World) -> None:
    env, vm1, vm2, out = world.env, world.vm1, world.vm2, world.out
    env.pair("vm1", NET, "udp", "53")
    with lab.servers(out, ("udp", 53), ("tcp", 22)):
        # Allowed, both families: the requests reach the outside host (by the uplink),
        # the replies come back, and vm2 sees none of it.
        watch = sniff(lab.PROBE, out, vm2)
        assert vm1.udp(OUT4, 53), "vm1 -> 198.19.0.1 udp/53 (the reply came back)"
        assert vm1.udp(OUT6, 53), "vm1 -> 2001:db8:19::1 udp/53"
        assert seen(watch) == [2, 0], "the two requests reached the outside, vm2 none"

        # Refused (the control is the udp/53 exchange above on the same path): another
        # service, an address behind the router outside the CIDRs, a VM with no pair.
        denied = [
            (vm1, vm1.ip, OUT4, "tcp", 22, 40122),
            (vm1, v6(vm1), OUT6, "tcp", 22, 40123),
            (vm1, vm1.ip, lab.BEYOND4, "udp", 53, 40124),
            (vm2, vm2.ip, OUT4, "udp", 53, 40125),
        ]
        watch = [Sniffer(out, flow_marker(src, dst, sport, port))
                 for _, src, dst, _, port, sport in denied]  # fmt: skip
        for vm, _, dst, proto, port, sport in denied:
            client = vm.tcp if proto == "tcp" else vm.udp
            assert not client(dst, port, timeout=1, sport=sport), f"{proto} {dst}:{port}"
        assert seen(watch) == [0, 0, 0, 0], "the outside saw none of the refused attempts"


def test_the_network_cannot_start_anything_towards_a_vm(world: World) -> None:
    env, vm1, out = world.env, world.vm1, world.out
    env.pair("vm1", NET, "udp", "53")
    with lab.servers(out, ("udp", 53)), lab.servers(vm1, ("tcp", 22), ("udp", 53)):
        # Control: vm1's exchange, whose replies come from the outside to vm1.
        assert vm1.udp(OUT4, 53) and vm1.udp(OUT6, 53)
        watch = sniff(flow_marker(OUT4, vm1.ip), vm1) + sniff(flow_marker(OUT6, v6(vm1)), vm1)
        assert not out.tcp(vm1.ip, 22, timeout=1)
        assert not out.udp(vm1.ip, 53, timeout=1)
        assert not out.ping(vm1.ip, count=1)
        assert not out.tcp(v6(vm1), 22, timeout=1)
        assert not out.ping(v6(vm1), count=1)
        assert seen(watch) == [0, 0], "vm1 saw nothing the outside started"
        assert vm1.udp(OUT4, 53), "and vm1's own service still works"


def test_the_network_may_open_tcp443_to_vm2_and_nothing_else(world: World) -> None:
    env, vm1, vm2, out = world.env, world.vm1, world.vm2, world.out
    env.pair(NET, "vm2", "tcp", "443")
    with (
        lab.servers(vm2, ("tcp", 443), ("tcp", 444), ("udp", 443)),
        lab.servers(vm1, ("tcp", 443)),
        lab.servers(out, ("tcp", 443)),
    ):
        watch = sniff(lab.PROBE, vm1)
        assert out.tcp(vm2.ip, 443), "198.19.0.1 -> vm2 tcp/443"
        assert out.tcp(v6(vm2), 443), "2001:db8:19::1 -> vm2 tcp/443"
        assert seen(watch) == [0], "vm1 saw none of it"

        # Nothing else: another port, udp, icmp, and vm1 on the same port.
        watch = [
            Sniffer(vm2, flow_marker(OUT4, vm2.ip, 40444, 444)),
            Sniffer(vm2, flow_marker(OUT4, vm2.ip, 40445, 443)),
            Sniffer(vm2, flow_marker(OUT6, v6(vm2), 40446, 444)),
            Sniffer(vm1, flow_marker(OUT4, vm1.ip)),
        ]
        assert not out.tcp(vm2.ip, 444, timeout=1, sport=40444), "tcp/444"
        assert not out.udp(vm2.ip, 443, timeout=1, sport=40445), "udp/443"
        assert not out.tcp(v6(vm2), 444, timeout=1, sport=40446), "tcp/444 over IPv6"
        assert not out.tcp(vm1.ip, 443, timeout=1), "vm1 is not the pair's responder"
        assert seen(watch) == [0, 0, 0, 0]
        assert out.tcp(vm2.ip, 443), "control: tcp/443 still goes through"

        # vm2 may only answer: it cannot start anything towards the outside.
        watch = sniff(flow_marker(vm2.ip, OUT4), out)
        assert not vm2.tcp(OUT4, 443, timeout=1)
        assert not vm2.ping(OUT4, count=1)
        assert seen(watch) == [0]


def test_vms_resolve_their_gateway_and_ping_through_it(world: World) -> None:
    env, vm1, vm2, out, up = world.env, world.vm1, world.vm2, world.out, world.up
    env.pair("vm1", NET, "icmp")
    # The ping through the router needs ARP and ND between vm1 and the uplink both ways.
    watch = sniff(flow_marker(vm1.ip, OUT4), vm2) + sniff(flow_marker(OUT4, vm1.ip), vm2)
    assert vm1.ping(OUT4), "vm1 pings 198.19.0.1 via 198.18.0.254"
    assert vm1.ping(OUT6), "vm1 pings 2001:db8:19::1 via 2001:db8::fe"
    # Any address in the CIDRs (a ping, since the lab's UDP server answers from its
    # primary address).
    assert vm1.ping(lab.OUTSIDE4_OTHER), "vm1 pings 198.19.0.77"
    assert seen(watch) == [0, 0], "requests and replies went by port, vm2 saw none"
    for gateway in (lab.GATEWAY4, lab.GATEWAY6):
        neigh = vm1.exec(["ip", "neigh", "show", gateway]).stdout
        assert f"lladdr {up.mac}" in neigh, f"vm1 resolved {gateway}: {neigh!r}"
    for addr in (vm1.ip, v6(vm1)):
        neigh = up.router.exec(["ip", "neigh", "show", addr]).stdout
        assert f"lladdr {vm1.mac}" in neigh, f"the router resolved {addr}: {neigh!r}"

    # vm2 has no pair: it resolves its gateway (ARP and ND are no policy) but its ping
    # does not reach the outside.
    watch = sniff(flow_marker(vm2.ip, OUT4), out) + sniff(flow_marker(v6(vm2), OUT6), out)
    assert not vm2.ping(OUT4, count=1)
    assert not vm2.ping(OUT6, count=1)
    assert seen(watch) == [0, 0]
    for gateway in (lab.GATEWAY4, lab.GATEWAY6):
        neigh = vm2.exec(["ip", "neigh", "show", gateway]).stdout
        assert f"lladdr {up.mac}" in neigh, f"vm2 resolved {gateway}: {neigh!r}"


def test_forged_frames_from_the_uplink_are_dropped(world: World) -> None:
    env, vm1, vm2, up = world.env, world.vm1, world.vm2, world.up
    env.pair(NET, "vm1", "udp", "7777")
    mark = marker()
    r = up.router
    vm1_6, vm2_6 = v6(vm1), v6(vm2)
    honest = [
        frames.udp_frame(up.mac, vm1.mac, "198.19.0.9", vm1.ip, mark),
        frames.udp6_frame(up.mac, vm1.mac, "2001:db8:19::9", vm1_6, mark),
        frames.arp_frame(up.mac, "ff:ff:ff:ff:ff:ff", 1, up.mac, lab.GATEWAY4, vm1.ip, mark),
        frames.nd_frame(136, up.mac, lab.GATEWAY6, lab.GATEWAY6, up.mac, padding=mark),
    ]
    # Each forged frame and the table-0 line that must drop (and count) it (README: 125
    # and 108 are the claim lines, 106 the uplink's sources outside every CIDR).
    bcast, port = "ff:ff:ff:ff:ff:ff", 9
    forged = [
        (frames.udp_frame(up.mac, vm1.mac, vm2.ip, vm1.ip, mark),  # a VM's address
         f"priority=125,ip,nw_src={vm2.ip} {drop('claimed-address')}"),
        (frames.udp_frame(up.mac, vm1.mac, "198.20.0.9", vm1.ip, mark),  # outside the CIDRs
         f"priority=106,ip,in_port={port} {drop('outside-cidrs')}"),
        (frames.udp_frame(vm2.mac, vm1.mac, "198.19.0.9", vm1.ip, mark),  # a VM's MAC
         f"priority=108,dl_src={vm2.mac} {drop('claimed-mac')}"),
        (frames.udp6_frame(up.mac, vm1.mac, vm2_6, vm1_6, mark),
         f"priority=125,ipv6,ipv6_src={vm2_6} {drop('claimed-address')}"),
        (frames.udp6_frame(up.mac, vm1.mac, "2001:db8:20::9", vm1_6, mark),
         f"priority=106,ipv6,in_port={port} {drop('outside-cidrs')}"),
        (frames.udp6_frame(vm2.mac, vm1.mac, "2001:db8:19::9", vm1_6, mark),
         f"priority=108,dl_src={vm2.mac} {drop('claimed-mac')}"),
        # The gateway claims vm2's address (ARP, ND) or its MAC (as the ARP sender, in
        # the target link-layer option of its own advertisement).
        (frames.arp_frame(up.mac, bcast, 2, up.mac, vm2.ip, vm1.ip, mark),
         f"priority=125,arp,arp_spa={vm2.ip} {drop('claimed-address')}"),
        (frames.arp_frame(up.mac, bcast, 1, vm2.mac, lab.GATEWAY4, vm1.ip, mark),
         f"priority=108,arp,arp_sha={vm2.mac} {drop('claimed-mac')}"),
        (frames.nd_frame(136, up.mac, lab.GATEWAY6, vm2_6, up.mac, padding=mark),
         f"priority=125,icmp6,icmp_type=136,nd_target={vm2_6} {drop('claimed-address')}"),
        (frames.nd_frame(136, up.mac, lab.GATEWAY6, lab.GATEWAY6, vm2.mac, padding=mark),
         f"priority=108,icmp6,icmp_type=136,nd_tll={vm2.mac} {drop('claimed-mac')}"),
    ]  # fmt: skip
    watch = sniff(mark, vm1, vm2)
    log_line = f"in_port={port} actions=meter:{port},"  # the uplink's events, its own meter
    logged = env.counter(log_line, table=3)
    for frame, line in forged:
        was = env.counter(line, table=0)
        r.send_frame(frame)
        env.counter_reaches(line, was + 1, table=0)
    # Each is an event too, through the uplink's own meter (the advertisements to all
    # nodes: test_forged_advertisements_to_all_nodes_are_events).
    unicast = [frame for frame, _ in forged if not frame.startswith(b"\x33\x33")]
    env.counter_reaches(log_line, logged + len(unicast), table=3)
    for frame in honest:
        r.send_frame(frame)
    # vm1: the two datagrams from the network, the ARP request and the advertisement;
    # vm2: the (flooded) ARP request and advertisement. Nothing forged.
    assert seen(watch) == [4, 2]


def test_forged_advertisements_to_all_nodes_are_events(world: World) -> None:
    """A Neighbor Advertisement claiming a VM's address or MAC is dropped by the claim lines
    and is an event, sent to one VM or, as an unsolicited advertisement is, to all nodes
    (ff02::1): the link-local multicast the log table drops without an event is the chatter
    every host sends, not a claim."""
    env, vm1, vm2, up = world.env, world.vm1, world.vm2, world.up
    mark, port = marker(), 9
    vm1_6, vm2_6 = v6(vm1), v6(vm2)
    log_line = f"in_port={port} actions=meter:{port},"
    na = "priority={},icmp6,icmp_type=136,{} {}"
    claims = [  # (target, target link-layer option, the claim line)
        (vm2_6, up.mac, na.format(125, f"nd_target={vm2_6}", drop("claimed-address"))),
        (lab.GATEWAY6, vm2.mac, na.format(108, f"nd_tll={vm2.mac}", drop("claimed-mac"))),
    ]
    watch = sniff(mark, vm1, vm2)
    for to_all in (False, True):  # to vm1 first: the control
        where = {} if to_all else {"dst_mac": vm1.mac, "dst_ip": vm1_6}
        for target, option, line in claims:
            frame = frames.nd_frame(136, up.mac, lab.GATEWAY6, target, option, padding=mark,
                                    **where)  # fmt: skip
            dropped, logged = env.counter(line, table=0), env.counter(log_line, table=3)
            up.router.send_frame(frame)
            env.counter_reaches(line, dropped + 1, table=0)
            what = f"an advertisement of {target} at {option} to {'all nodes' if to_all else 'vm1'}"
            try:
                env.counter_reaches(log_line, logged + 1, table=3)
            except lab.LabError as e:
                raise AssertionError(f"{what} was dropped but is no event") from e
    assert seen(watch) == [0, 0]


def test_frames_from_a_vm_to_the_network_leave_by_its_port_untagged(world: World) -> None:
    env, vm1, up = world.env, world.vm1, world.up
    env.pair("vm1", NET, "udp", "53")
    mark = marker()
    plain = frames.udp_frame(vm1.mac, up.mac, vm1.ip, OUT4, mark, dst_port=53)
    watch = sniff(mark, up.router, world.vm2)
    vm1.send_frame(plain)  # control
    for tci, tpid in ((5, 0x8100), (0, 0x8100), (5, 0x88A8)):
        vm1.send_frame(frames.tagged(plain, tci, tpid))
    assert seen(watch) == [1, 0], "only the untagged datagram reaches the uplink"

    # Traffic for the network goes by its port: addressed to vm2's MAC or to broadcast,
    # a datagram for the outside is not delivered to vm2 (the control is above).
    watch = sniff(mark, world.vm2)
    vm1.send_frame(frames.udp_frame(vm1.mac, world.vm2.mac, vm1.ip, OUT4, mark, dst_port=53))
    vm1.send_frame(frames.udp_frame(vm1.mac, "ff:ff:ff:ff:ff:ff", vm1.ip, OUT4, mark, dst_port=53))
    assert seen(watch) == [0]


def test_replies_from_the_network_reach_only_the_vm_that_asked(world: World) -> None:
    env, vm1, vm2, up = world.env, world.vm1, world.vm2, world.up
    env.pair("vm1", NET, "udp", "53")
    env.pair("vm2", NET, "udp", "53")
    with lab.servers(world.out, ("udp", 53)):
        assert vm1.udp(OUT4, 53, sport=40601), "vm1's connection 40601 -> 198.19.0.1:53"
    mark = marker()

    def reply(dst_mac: str, dst_ip: str) -> bytes:
        return frames.udp_frame(up.mac, dst_mac, OUT4, dst_ip, mark, dst_port=40601,
                                src_port=53)  # fmt: skip

    watch = sniff(mark, vm1, vm2)
    # Steered to vm2 (its MAC, with vm1's or its own address), or broadcast: vm2 also
    # has a udp/53 pair with the network, but this connection is vm1's.
    up.router.send_frame(reply(vm2.mac, vm1.ip))
    up.router.send_frame(reply(vm2.mac, vm2.ip))
    up.router.send_frame(reply("ff:ff:ff:ff:ff:ff", vm1.ip))
    up.router.send_frame(reply(vm1.mac, vm1.ip))  # control: a true late reply
    assert seen(watch) == [1, 0], "only the true reply, and only to vm1"


DURATION = 6.0


def stream_times(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate(timeout=DURATION + 10)
    return [float(line) for line in out.split() if re.fullmatch(r"\d+\.\d+", line)]


def test_deleting_a_network_pair_cuts_its_open_connections(world: World) -> None:
    env, vm1, vm2, out = world.env, world.vm1, world.vm2, world.out
    outbound = env.pair("vm1", NET, "tcp", "5000")
    inbound = env.pair(NET, "vm2", "tcp", "443")
    env.pair("vm2", NET, "tcp", "5001")  # stays
    with lab.servers(out, ("tcp", 5000), ("tcp", 5001)), lab.servers(vm2, ("tcp", 443)):
        s4 = vm1.stream(OUT4, 5000, DURATION)
        s6 = vm1.stream(OUT6, 5000, DURATION)
        s_in = out.stream(vm2.ip, 443, DURATION)
        s_keep = vm2.stream(OUT4, 5001, DURATION)
        time.sleep(2)
        cut_out = time.time()
        assert env.ctl.api("DELETE", f"/ctfw/v1/pairs/{outbound}")[0] == 204
        cut_in = time.time()
        assert env.ctl.api("DELETE", f"/ctfw/v1/pairs/{inbound}")[0] == 204
        got = {name: stream_times(p) for name, p in
               (("vm1 -> outside v4", s4), ("vm1 -> outside v6", s6),
                ("outside -> vm2", s_in), ("vm2 -> outside (pair kept)", s_keep))}  # fmt: skip
    for name, cut in (("vm1 -> outside v4", cut_out), ("vm1 -> outside v6", cut_out),
                      ("outside -> vm2", cut_in)):  # fmt: skip
        assert any(t < cut for t in got[name]), f"{name} never worked before the cut"
        late = [t - cut for t in got[name] if t > cut + 1.0]
        assert not late, f"{name} still passed after the cut (s after): {late}"
    kept = got["vm2 -> outside (pair kept)"]
    assert any(t > cut_in + 2 for t in kept), f"the kept pair's stream died: {kept}"


def test_network_api_and_a_network_in_use(world: World) -> None:
    env, up = world.env, world.up
    net = env.ctl.ok("GET", f"/ctfw/v1/networks/{NET}")
    assert (net["port"], net["cidrs"], net["ofport"]) == (up.port, lab.OUTSIDE_CIDRS, 9)
    assert net["dpid"] is not None
    assert [n["name"] for n in env.ctl.ok("GET", "/ctfw/v1/networks")["networks"]] == [NET]
    pair_id = env.pair("vm1", NET, "udp", "53")
    pair = env.ctl.ok("GET", f"/ctfw/v1/pairs/{pair_id}")
    assert (pair["initiator_kind"], pair["responder_kind"]) == ("vm", "network")
    status, answer = env.ctl.api("DELETE", f"/ctfw/v1/networks/{NET}")
    assert status == 409, answer
    assert env.ctl.ok("GET", f"/ctfw/v1/networks/{NET}")["name"] == NET, "still there"
    # Network to network is no pair; a VM's port is no network's.
    env.network("office", up.port, ["198.19.1.0/24"])
    status, answer = env.ctl.api(
        "POST", "/ctfw/v1/pairs", {"initiator": NET, "responder": "office"}
    )
    assert status == 400, answer
    status, answer = env.ctl.api(
        "PUT", "/ctfw/v1/networks/bad", {"port": world.vm1.port, "cidrs": ["198.19.2.0/24"]}
    )
    assert status == 409, answer
    assert env.ctl.api("DELETE", f"/ctfw/v1/pairs/{pair_id}")[0] == 204
    assert env.ctl.api("DELETE", f"/ctfw/v1/networks/{NET}")[0] == 204
    assert env.ctl.api("GET", f"/ctfw/v1/networks/{NET}")[0] == 404


def test_a_group_and_the_network(world: World) -> None:
    env, vm1, vm2, out = world.env, world.vm1, world.vm2, world.out
    vm3 = env.vm("vm3", 4, 3, ipv6=True)  # in no group
    lab.default_route(vm3)
    env.group("clients", ["vm1", "vm2"])
    env.pair("clients", NET, "udp", "53")
    env.pair(NET, "clients", "tcp", "443")
    with (
        lab.servers(out, ("udp", 53)),
        lab.servers(vm1, ("tcp", 443)),
        lab.servers(vm2, ("tcp", 443)),
        lab.servers(vm3, ("tcp", 443)),
    ):
        watch = sniff(lab.PROBE, vm3)
        assert vm1.udp(OUT4, 53) and vm2.udp(OUT4, 53), "every member -> the network"
        assert vm2.udp(OUT6, 53), "over IPv6 too"
        assert out.tcp(vm1.ip, 443) and out.tcp(vm2.ip, 443), "the network -> every member"
        assert out.tcp(v6(vm1), 443), "over IPv6 too"
        assert seen(watch) == [0], "vm3 saw none of it"
        # vm3 is in no group: the controls are vm1's and vm2's exchanges above.
        watch = [
            Sniffer(out, flow_marker(vm3.ip, OUT4, 40531, 53)),
            Sniffer(vm3, flow_marker(OUT4, vm3.ip, 40532, 443)),
        ]
        assert not vm3.udp(OUT4, 53, timeout=1, sport=40531)
        assert not out.tcp(vm3.ip, 443, timeout=1, sport=40532)
        assert seen(watch) == [0, 0]


def test_a_network_speaks_only_by_its_own_port(world: World) -> None:
    """Sources in a network's CIDRs pass only by that network's port: not from a VM bound
    to its MAC alone (which may use any address no VM registered), not from a port that
    is nobody's, not from another network's port."""
    env, vm1, vm2, up = world.env, world.vm1, world.vm2, world.up
    nomad = env.vm("nomad", 4, 4, register=False)
    env.ctl.ok("PUT", "/ctfw/v1/vms/nomad", {"port": nomad.port, "mac": nomad.mac})
    stray = env.vm("stray", 5, 5, register=False)  # no VM, no network
    office = env.vm("office", 6, 6, register=False, mac="52:54:00:fe:01:01")
    env.network("office", office.port, ["198.19.1.0/24"])
    env.pair(NET, "vm1", "udp", "7777")
    env.pair("office", "vm1", "udp", "7777")
    mark = marker()

    def to_vm1(sender: lab.Vm, src_ip: str, sport: int) -> bytes:
        return frames.udp_frame(sender.mac, vm1.mac, src_ip, vm1.ip, mark, src_port=sport)

    watch = sniff(mark, vm1, vm2)
    nomad.send_frame(to_vm1(nomad, "198.19.0.9", 40701))
    stray.send_frame(to_vm1(stray, "198.19.0.9", 40702))
    office.send_frame(to_vm1(office, "198.19.0.9", 40703))  # outside's CIDR, office's port
    up.router.send_frame(to_vm1(up.router, "198.19.1.9", 40704))  # office's, by the uplink
    up.router.send_frame(to_vm1(up.router, "198.19.0.9", 40705))  # control
    office.send_frame(to_vm1(office, "198.19.1.9", 40706))  # control
    # The same 5-tuple as the router's admitted datagram, now established, from elsewhere.
    nomad.send_frame(to_vm1(nomad, "198.19.0.9", 40705))
    stray.send_frame(to_vm1(stray, "198.19.0.9", 40705))
    assert seen(watch) == [2, 0], "only the two datagrams by their network's own port"


def test_replies_from_the_network_to_a_group_reach_only_the_member_that_asked(
    world: World,
) -> None:
    """A group -> network pair's mark names the group, not the member: the network must
    not be able to steer a reply of vm1's connection to vm2, vm1's fellow member."""
    env, vm1, vm2, up = world.env, world.vm1, world.vm2, world.up
    env.group("clients", ["vm1", "vm2"])
    env.pair("clients", NET, "udp", "53")
    with lab.servers(world.out, ("udp", 53)):
        assert vm1.udp(OUT4, 53, sport=40801), "vm1's connection 40801 -> 198.19.0.1:53"
    mark = marker()

    def reply(dst_mac: str) -> bytes:
        return frames.udp_frame(up.mac, dst_mac, OUT4, vm1.ip, mark, dst_port=40801,
                                src_port=53)  # fmt: skip

    watch = sniff(mark, vm1, vm2)
    up.router.send_frame(reply(vm2.mac))  # steered to the other member
    up.router.send_frame(reply("ff:ff:ff:ff:ff:ff"))
    up.router.send_frame(reply(vm1.mac))  # control: a true late reply
    assert seen(watch) == [1, 0], "only vm1 got its reply"


def test_a_networks_port_may_come_later_and_move(labenv: Lab) -> None:
    vm1 = labenv.vm("vm1", 2, 1, ipv6=True)
    vm2 = labenv.vm("vm2", 3, 2)
    up = labenv.uplink(9, network=None)
    up.router.unplug(labenv.ovs, labenv.bridge)
    net = labenv.network(NET, up.port, lab.OUTSIDE_CIDRS)
    assert (net["dpid"], net["ofport"]) == (None, None), "its port is on no switch yet"
    labenv.pair("vm1", NET, "udp", "53")

    def at(ofport: int) -> None:
        up.plug(labenv.ovs, labenv.bridge, ofport)
        lab.wait_for(
            lambda: labenv.ctl.ok("GET", f"/ctfw/v1/networks/{NET}")["ofport"] == ofport,
            5,
            f"the network's port on ofport {ofport}",
        )

    with lab.servers(up.outside, ("udp", 53)):
        at(10)
        watch = sniff(lab.PROBE, vm2)
        assert vm1.udp(OUT4, 53) and vm1.udp(OUT6, 53), "through ofport 10"
        up.router.unplug(labenv.ovs, labenv.bridge)
        assert not vm1.udp(OUT4, 53, timeout=1), "no port, no way out"
        at(11)
        assert vm1.udp(OUT4, 53) and vm1.udp(OUT6, 53), "through ofport 11"
        assert seen(watch) == [0], "vm2 saw none of it, port or no port"
