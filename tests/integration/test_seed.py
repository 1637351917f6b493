"""The seed's Step 4 on a real switch, driven by the controller instead of ovs-ofctl."""

from __future__ import annotations

import re

from conftest import Lab

VM1, VM2 = "dl_src=52:54:00:60:84:ff", "dl_src=52:54:00:99:90:78"
LL1, LL2 = "fe80::5054:ff:fe60:84ff", "fe80::5054:ff:fe99:9078"
SEED_FLOWS = {
    # table 0: a VM's port may only use its own MAC and addresses
    f"priority=130,arp,in_port=2,{VM1},arp_spa=198.18.0.1,arp_sha=52:54:00:60:84:ff actions=NORMAL",
    f"priority=130,icmp6,in_port=2,{VM1},icmp_type=136,nd_target={LL1} actions=NORMAL",
    f"priority=130,icmp6,in_port=2,{VM1},ipv6_src={LL1},icmp_type=135 actions=NORMAL",
    f"priority=130,icmp6,in_port=2,{VM1},ipv6_src=::,icmp_type=135 actions=NORMAL",
    "priority=125,icmp6,in_port=2,icmp_type=136 actions=drop",
    f"priority=120,ip,in_port=2,{VM1},nw_src=198.18.0.1 actions=ct(table=1,zone=1)",
    f"priority=120,ipv6,in_port=2,{VM1},ipv6_src={LL1} actions=ct(table=1,zone=1)",
    "priority=110,in_port=2 actions=drop",
    f"priority=130,arp,in_port=3,{VM2},arp_spa=198.18.0.2,arp_sha=52:54:00:99:90:78 actions=NORMAL",
    f"priority=130,icmp6,in_port=3,{VM2},icmp_type=136,nd_target={LL2} actions=NORMAL",
    f"priority=130,icmp6,in_port=3,{VM2},ipv6_src={LL2},icmp_type=135 actions=NORMAL",
    f"priority=130,icmp6,in_port=3,{VM2},ipv6_src=::,icmp_type=135 actions=NORMAL",
    "priority=125,icmp6,in_port=3,icmp_type=136 actions=drop",
    f"priority=120,ip,in_port=3,{VM2},nw_src=198.18.0.2 actions=ct(table=1,zone=1)",
    f"priority=120,ipv6,in_port=3,{VM2},ipv6_src={LL2} actions=ct(table=1,zone=1)",
    "priority=110,in_port=3 actions=drop",
    # table 0: the seed's lines, with IPv6 and Neighbor Discovery
    "priority=105,icmp6,icmp_type=133 actions=NORMAL",
    "priority=105,icmp6,icmp_type=134 actions=NORMAL",
    "priority=105,icmp6,icmp_type=135 actions=NORMAL",
    "priority=105,icmp6,icmp_type=136 actions=NORMAL",
    "priority=100,ip actions=ct(table=1,zone=1)",
    "priority=100,ipv6 actions=ct(table=1,zone=1)",
    "priority=10,arp actions=NORMAL",
    "priority=1 actions=drop",
    # table 1: the policy
    "table=1, priority=200,ct_state=+inv+trk actions=drop",
    "table=1, priority=100,ct_state=+new+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78"
    " actions=ct(commit,zone=1),NORMAL",
    "table=1, priority=100,ct_state=+new+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78"
    " actions=ct(commit,zone=1),NORMAL",
    "table=1, priority=100,ct_state=+est-rpl+trk,in_port=2,dl_dst=52:54:00:99:90:78 actions=NORMAL",
    "table=1, priority=100,ct_state=+est+rpl+trk,in_port=3,dl_dst=52:54:00:60:84:ff actions=NORMAL",
    "table=1, priority=50,ct_state=+rel+trk actions=NORMAL",
    "table=1, priority=0 actions=drop",
}


def test_flows_read_like_the_seed(seed: Lab) -> None:
    dump = seed.ovs.dump_flows(seed.bridge, "--no-stats")
    lines = {
        re.sub(r"^\s*cookie=0x[0-9a-f]+, ", "", line).strip()
        for line in dump.splitlines()
        if "actions=" in line
    }
    assert lines == SEED_FLOWS
    # The API's `text` is what the switch holds, rendered like ovs-ofctl does.
    api_texts = {f["text"] for f in seed.flows()}
    assert api_texts == {
        line if line.startswith("table=") else f"table=0, {line}" for line in lines
    }


def test_step4_vm2_cannot_reach_vm1(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    tcp_srv, udp_srv = vm1.serve("tcp", 23), vm1.serve("udp", 53)
    try:
        before = seed.drop_counter()
        assert not vm2.ping(vm1.ip), "ping vm2 -> vm1 must fail"
        assert not vm2.tcp(vm1.ip, 23, timeout=1), "telnet vm2 -> vm1 must fail"
        assert not vm2.udp(vm1.ip, 53, timeout=1), "dns vm2 -> vm1 must fail"
        seed.counter_reaches("priority=0 actions=drop", before + 4)
        assert seed.counter("+new+trk,ip,in_port=2") == 0
    finally:
        tcp_srv.kill()
        udp_srv.kill()


def test_step4_vm1_reaches_vm2(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    tcp_srv, udp_srv = vm2.serve("tcp", 22), vm2.serve("udp", 53)
    try:
        drops = seed.drop_counter()
        assert vm1.ping(vm2.ip), "ping vm1 -> vm2 must work"
        assert vm1.tcp(vm2.ip, 22), "telnet vm1 -> vm2 22 must work"
        assert vm1.udp(vm2.ip, 53), "dig @vm2 must work"
        seed.counter_reaches("+new+trk,ip,in_port=2", 3)
        seed.counter_reaches("+est-rpl+trk,in_port=2", 1)
        seed.counter_reaches("+est+rpl+trk,in_port=3", 1)
        assert seed.drop_counter() == drops
    finally:
        tcp_srv.kill()
        udp_srv.kill()
    for proto, extra in (("icmp", "type=8"), ("tcp", "dport=22"), ("udp", "dport=53")):
        entries = seed.ovs.conntrack_entries(proto, vm1.ip, vm2.ip, extra)
        assert entries, f"no {proto} conntrack entry from vm1:\n{seed.ovs.conntrack()}"
