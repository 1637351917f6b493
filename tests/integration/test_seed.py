"""The seed's Step 4 on a real switch, driven by the controller instead of ovs-ofctl."""

from __future__ import annotations

import re

from conftest import NO_PAIR_DROP, Lab

SEED_FLOWS = {
    "priority=150,in_port=2,vlan_tci=0x1000/0x1000 actions=write_metadata:0x3,goto_table:3",
    "priority=150,in_port=3,vlan_tci=0x1000/0x1000 actions=write_metadata:0x3,goto_table:3",
    "priority=140,arp,in_port=2,dl_src=52:54:00:60:84:ff,arp_spa=198.18.0.1,arp_sha=52:54:00:60:84:ff actions=goto_table:2",
    "priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff,nd_tll=52:54:00:60:84:ff actions=goto_table:2",
    "priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff,nd_tll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff,icmp_type=135,nd_sll=52:54:00:60:84:ff actions=goto_table:2",
    "priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=::,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=140,arp,in_port=3,dl_src=52:54:00:99:90:78,arp_spa=198.18.0.2,arp_sha=52:54:00:99:90:78 actions=goto_table:2",
    "priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078,nd_tll=52:54:00:99:90:78 actions=goto_table:2",
    "priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078,nd_tll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078,icmp_type=135,nd_sll=52:54:00:99:90:78 actions=goto_table:2",
    "priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=::,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2",
    "priority=135,icmp6,in_port=2,icmp_type=135 actions=write_metadata:0x5,goto_table:3",
    "priority=135,icmp6,in_port=2,icmp_type=136 actions=write_metadata:0x5,goto_table:3",
    "priority=135,icmp6,in_port=3,icmp_type=135 actions=write_metadata:0x5,goto_table:3",
    "priority=135,icmp6,in_port=3,icmp_type=136 actions=write_metadata:0x5,goto_table:3",
    "priority=130,ip,in_port=2,dl_src=52:54:00:60:84:ff,nw_src=198.18.0.1 actions=ct(table=1,zone=1)",
    "priority=130,ipv6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff actions=ct(table=1,zone=1)",
    "priority=130,ip,in_port=3,dl_src=52:54:00:99:90:78,nw_src=198.18.0.2 actions=ct(table=1,zone=1)",
    "priority=130,ipv6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078 actions=ct(table=1,zone=1)",
    "priority=125,ip,nw_src=198.18.0.1 actions=write_metadata:0x6,goto_table:3",
    "priority=125,arp,arp_spa=198.18.0.1 actions=write_metadata:0x6,goto_table:3",
    "priority=125,ipv6,ipv6_src=fe80::5054:ff:fe60:84ff actions=write_metadata:0x6,goto_table:3",
    "priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff actions=write_metadata:0x6,goto_table:3",
    "priority=125,ip,nw_src=198.18.0.2 actions=write_metadata:0x6,goto_table:3",
    "priority=125,arp,arp_spa=198.18.0.2 actions=write_metadata:0x6,goto_table:3",
    "priority=125,ipv6,ipv6_src=fe80::5054:ff:fe99:9078 actions=write_metadata:0x6,goto_table:3",
    "priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078 actions=write_metadata:0x6,goto_table:3",
    "priority=110,in_port=2 actions=write_metadata:0x4,goto_table:3",
    "priority=110,in_port=3 actions=write_metadata:0x4,goto_table:3",
    "priority=108,dl_src=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3",
    "priority=108,arp,arp_sha=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3",
    "priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3",
    "priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3",
    "priority=108,dl_src=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3",
    "priority=108,arp,arp_sha=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3",
    "priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3",
    "priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3",
    "priority=105,icmp6,icmp_type=133 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=134 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=135 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=136 actions=goto_table:2",
    "priority=100,ip actions=ct(table=1,zone=1)",
    "priority=100,ipv6 actions=ct(table=1,zone=1)",
    "priority=10,arp actions=goto_table:2",
    "priority=1 actions=drop",
    "table=1, priority=200,ct_state=+inv+trk actions=write_metadata:0x2,goto_table:3",
    "table=1, priority=100,ct_state=+new-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=+est-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=+new-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=+est-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=2,dl_dst=52:54:00:99:90:78 actions=output:3",
    "table=1, priority=10,ct_state=+est-rpl+trk,ip actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3",
    "table=1, priority=10,ct_state=+est-rpl+trk,ipv6 actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3",
    "table=1, priority=0 actions=write_metadata:0x1,goto_table:3",
    "table=2, priority=100,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=2, priority=100,dl_dst=52:54:00:99:90:78 actions=output:3",
    "table=2, priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD",
    "table=2, priority=0 actions=drop",
    "table=3, priority=200,ipv6,metadata=0x1,ipv6_dst=ff02::/16 actions=drop",
    "table=3, priority=200,ipv6,metadata=0x2,ipv6_dst=ff02::/16 actions=drop",
    "table=3, priority=200,ip,metadata=0x1,nw_dst=224.0.0.0/24 actions=drop",
    "table=3, priority=200,ip,metadata=0x2,nw_dst=224.0.0.0/24 actions=drop",
    "table=3, priority=100,in_port=2 actions=meter:2,CONTROLLER:128",
    "table=3, priority=100,in_port=3 actions=meter:3,CONTROLLER:128",
    "table=3, priority=0 actions=meter:65280,CONTROLLER:128",
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
        logged = seed.counter("in_port=3 actions=meter:3,", table=3)
        assert not vm2.ping(vm1.ip), "ping vm2 -> vm1 must fail"
        assert not vm2.tcp(vm1.ip, 23, timeout=1), "telnet vm2 -> vm1 must fail"
        assert not vm2.udp(vm1.ip, 53, timeout=1), "dns vm2 -> vm1 must fail"
        seed.counter_reaches(NO_PAIR_DROP, before + 4)
        # Each drop is an event: to the log table, through vm2's port's meter.
        seed.counter_reaches("in_port=3 actions=meter:3,", logged + 4, table=3)
        for state in ("+new", "+est"):
            assert seed.counter(f"{state}-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 ") == 0
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
        # New and established meet the pair's lines (the seed's lines 5 and 6, each split
        # in two): the +new line counts the three connections, the +est line the rest; the
        # replies pass on the line of the connection's mark (the seed's line 8).
        there = "-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 "
        seed.counter_reaches(f"+new{there}", 3)
        seed.counter_reaches(f"+est{there}", 4)  # the second echo request, tcp's ACKs
        seed.counter_reaches("+est+rpl+trk,ct_mark=0x10002,in_port=3", 3)
        assert seed.counter(f"+new{there}") == 3  # one opening packet per connection
        assert seed.drop_counter() == drops
    finally:
        tcp_srv.kill()
        udp_srv.kill()
    for proto, extra in (("icmp", "type=8"), ("tcp", "dport=22"), ("udp", "dport=53")):
        entries = seed.ovs.conntrack_entries(proto, vm1.ip, vm2.ip, extra)
        assert entries, f"no {proto} conntrack entry from vm1:\n{seed.ovs.conntrack()}"
