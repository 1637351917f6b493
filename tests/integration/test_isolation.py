"""Allowed traffic reaches the responder's port and nothing else, whatever a VM or a stray
port forges. Every case sniffs the ports that must stay silent (a third VM, a port that is
no VM) and sends a control frame showing that the path delivers the legitimate frame."""

from __future__ import annotations

import secrets
import signal
import time

import frames
from conftest import Lab, drop
from sniff import Sniffer

from ryu_ctfw import lab


def marker() -> bytes:
    return b"ctfw-isolation-" + secrets.token_hex(6).encode()


def three_vms_and_a_stray(env: Lab) -> tuple[lab.Vm, lab.Vm, lab.Vm, lab.Vm]:
    """vm1 -> vm2 `any`, vm3 paired with nobody, and `stray`: a port that is no VM."""
    vm1, vm2 = env.vm("vm1", 2, 1, ipv6=True), env.vm("vm2", 3, 2, ipv6=True)
    vm3 = env.vm("vm3", 4, 3, ipv6=True)
    stray = env.vm("stray", 5, 9, register=False, ipv6=True)
    env.pair("vm1", "vm2")
    return vm1, vm2, vm3, stray


def sniff(mark: bytes, *vms: lab.Vm) -> list[Sniffer]:
    return [Sniffer(vm, mark) for vm in vms]


def seen(sniffers: list[Sniffer]) -> list[int]:
    return [len(s.frames()) for s in sniffers]


def test_allowed_traffic_is_not_flooded_when_the_bridge_forgets_macs(labenv: Lab) -> None:
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    assert vm1.ping(vm2.ip)
    mark = marker()
    for _ in range(2):
        # A forgotten MAC table (aged out, flushed, a vswitchd restart) used to make NORMAL
        # flood allowed packets to every port.
        labenv.ovs.appctl("fdb/flush", labenv.bridge)
        watch = sniff(mark, vm2, vm3, stray)
        vm1.send_frame(frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark), count=3)
        to_vm2, to_vm3, to_stray = seen(watch)
        assert to_vm2 == 3, "control: the allowed datagrams reach vm2"
        assert (to_vm3, to_stray) == (0, 0), "and nobody else"


def test_unicast_arp_and_nd_go_to_their_vm_only(labenv: Lab) -> None:
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    mark = marker()
    watch = sniff(mark, vm2, vm3, stray)
    vm1.send_frame(frames.arp_frame(vm1.mac, vm2.mac, 1, vm1.mac, vm1.ip, vm2.ip, mark))
    solicit = frames.nd_frame(
        135, vm1.mac, "2001:db8::1", "2001:db8::2", vm1.mac, vm2.mac, "2001:db8::2", mark
    )
    vm1.send_frame(solicit)
    assert seen(watch) == [2, 0, 0], "unicast ARP and NS reach vm2 alone"
    # A broadcast request is flooded, to the others only.
    watch = sniff(mark, vm1, vm2, vm3, stray)
    vm1.send_frame(frames.arp_frame(vm1.mac, "ff:ff:ff:ff:ff:ff", 1, vm1.mac, vm1.ip, vm3.ip, mark))
    assert seen(watch) == [0, 1, 1, 1]
    # ARP to a MAC that is no VM's is not flooded either.
    watch = sniff(mark, vm2, vm3, stray)
    vm1.send_frame(frames.arp_frame(vm1.mac, "52:54:00:de:ad:77", 1, vm1.mac, vm1.ip,
                                    vm2.ip, mark))  # fmt: skip
    assert seen(watch) == [0, 0, 0]


def test_vlan_tagged_frames_from_a_vm_are_dropped(labenv: Lab) -> None:
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    mark = marker()
    plain = frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark)
    tagged_line = f"priority=150,in_port=2,vlan_tci=0x1000/0x1000 {drop('tagged')}"
    before = labenv.counter(tagged_line, table=0)
    watch = sniff(mark, vm2, vm3, stray)
    vm1.send_frame(plain)  # control
    tags = [(5, 0x8100), (0, 0x8100), (0x2000, 0x8100), (5, 0x88A8)]  # VID 5, priority...
    for tci, tpid in tags:
        vm1.send_frame(frames.tagged(plain, tci, tpid))
    vm1.send_frame(frames.tagged(frames.tagged(plain, 7), 5, 0x88A8))  # double tagged
    assert seen(watch) == [1, 0, 0], "only the untagged frame reaches vm2; no tag floods"
    labenv.counter_reaches(tagged_line, before + len(tags) + 1, table=0)


def test_a_port_that_is_no_vm_cannot_take_a_vms_mac_or_address(labenv: Lab) -> None:
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    assert vm1.ping(vm2.ip)
    mark = marker()
    # The stray port claims vm2's MAC (as Ethernet source and in ARP and ND) and addresses.
    claims = [
        frames.arp_frame(vm2.mac, "ff:ff:ff:ff:ff:ff", 2, vm2.mac, vm2.ip, vm1.ip, mark),
        frames.arp_frame(stray.mac, "ff:ff:ff:ff:ff:ff", 2, stray.mac, vm2.ip, vm1.ip, mark),
        frames.arp_frame(stray.mac, "ff:ff:ff:ff:ff:ff", 1, vm2.mac, "198.18.0.9", vm1.ip, mark),
        frames.nd_frame(136, stray.mac, "2001:db8::9", "2001:db8::2", stray.mac, padding=mark),
        frames.nd_frame(136, stray.mac, "2001:db8::9", "2001:db8::9", vm2.mac, padding=mark),
        frames.nd_frame(135, stray.mac, "2001:db8::9", "2001:db8::1", vm2.mac, padding=mark),
        frames.udp_frame(stray.mac, vm1.mac, vm2.ip, vm1.ip, mark),
    ]
    watch = sniff(mark, vm1, vm3)
    for frame in claims:
        stray.send_frame(frame)
    # Control: the stray port's ARP about its own address is delivered.
    stray.send_frame(
        frames.arp_frame(stray.mac, "ff:ff:ff:ff:ff:ff", 1, stray.mac, "198.18.0.9", vm1.ip, mark)
    )
    assert seen(watch) == [1, 1], "only the stray port's honest ARP got through"
    # vm1's allowed traffic still goes to vm2, and the stray port gets none of it.
    watch = sniff(mark, vm2, stray)
    vm1.send_frame(frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark), count=2)
    assert seen(watch) == [2, 0]
    assert vm1.ping(vm2.ip)


def test_neighbour_discovery_is_as_strict_as_arp(labenv: Lab) -> None:
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    mark = marker()
    own = "2001:db8::1"
    watch = sniff(mark, vm2, vm3, stray)
    # Controls: vm1 advertises and solicits as itself, with and without the options.
    honest = [
        frames.nd_frame(136, vm1.mac, own, own, vm1.mac, padding=mark),
        frames.nd_frame(136, vm1.mac, own, own, None, padding=mark),
        frames.nd_frame(135, vm1.mac, own, "2001:db8::2", vm1.mac, padding=mark),
    ]
    for frame in honest:
        vm1.send_frame(frame)
    assert seen(watch) == [3, 3, 3], "honest ND is flooded to the others"
    false_nd = "priority=135,icmp6,in_port=2,icmp_type=13"
    before = labenv.counter(false_nd + f"6 {drop('forged-nd')}", table=0)
    watch = sniff(mark, vm2, vm3, stray)
    lies = [
        frames.nd_frame(136, vm1.mac, own, own, vm3.mac, padding=mark),  # own address, not MAC
        frames.nd_frame(136, vm1.mac, own, own, "52:54:00:de:ad:03", padding=mark),
        frames.nd_frame(135, vm1.mac, own, "2001:db8::2", vm3.mac, padding=mark),
        frames.nd_frame(136, vm1.mac, own, "2001:db8::3", vm1.mac, padding=mark),  # vm3's IP
    ]
    for frame in lies:
        vm1.send_frame(frame)
    assert seen(watch) == [0, 0, 0], "no false advertisement or solicitation is delivered"
    labenv.counter_reaches(false_nd + f"6 {drop('forged-nd')}", before + 3, table=0)


def test_false_neighbour_discovery_is_an_event_sent_to_one_or_to_all(labenv: Lab) -> None:
    """A VM's lie in ND is dropped and is an event (forged-nd, through its port's meter),
    addressed to one VM or, as advertisements and solicitations mostly are, to a multicast
    group: the link-local multicast the log table drops without an event is the chatter
    every host sends, not a lie."""
    vm1, vm2, vm3, stray = three_vms_and_a_stray(labenv)
    mark, own = marker(), "2001:db8::1"
    false_na = f"priority=135,icmp6,in_port=2,icmp_type=136 {drop('forged-nd')}"
    log_line = "in_port=2 actions=meter:2,"
    watch = sniff(mark, vm2, vm3, stray)
    for where in ({"dst_mac": vm2.mac, "dst_ip": "2001:db8::2"}, {}):  # to vm2; to ff02::1
        lie = frames.nd_frame(136, vm1.mac, own, "2001:db8::3", vm1.mac, padding=mark, **where)
        dropped, logged = labenv.counter(false_na, table=0), labenv.counter(log_line, table=3)
        vm1.send_frame(lie)
        labenv.counter_reaches(false_na, dropped + 1, table=0)
        what = f"vm1's advertisement of vm3's address to {where.get('dst_ip', 'ff02::1')}"
        try:
            labenv.counter_reaches(log_line, logged + 1, table=3)
        except lab.LabError as e:
            raise AssertionError(f"{what} was dropped but is no event") from e
    assert seen(watch) == [0, 0, 0]


def test_a_restart_keeps_vms_whose_mac_was_learned(labenv: Lab) -> None:
    vm1 = labenv.vm("vm1", 2, 1, give_mac=False)
    vm2 = labenv.vm("vm2", 3, 2, give_mac=False)
    labenv.pair("vm1", "vm2")
    for vm, name in ((vm1, "vm1"), (vm2, "vm2")):
        vm.exec(["ping", "-c", "1", "-W", "1", "198.18.0.250"], check=False)  # an ARP
        lab.wait_for(
            lambda n=name: labenv.ctl.ok("GET", f"/ctfw/v1/vms/{n}")["learned_mac"], 5, "a MAC"
        )
    assert labenv.ctl.stored()["vms"][0]["learned_mac"] == vm1.mac, "stored with the policy"
    assert vm1.ping(vm2.ip)
    ping = vm1.popen(["ping", "-n", "-i", "0.05", "-c", "120", vm2.ip])
    time.sleep(1)
    reports = len(labenv.ctl.sync_reports())
    labenv.ctl.stop(signal.SIGKILL)
    time.sleep(1)
    labenv.ctl.start()
    labenv.ctl.wait_connected(labenv.bridge)
    out, _ = ping.communicate(timeout=60)
    assert "120 packets transmitted, 120 received" in out, out[-300:]
    found, added, deleted = labenv.ctl.wait_in_sync(reports)
    assert found > 0 and (added, deleted) == (0, 0), "the restart sent no flow-mod"
    # A VM registered again on another port learns afresh.
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/vm2", {"port": "ctnope0"})
    assert labenv.ctl.ok("GET", "/ctfw/v1/vms/vm2")["learned_mac"] is None
