"""The seed's Step 4 on a real switch, driven by the controller instead of ovs-ofctl."""

from __future__ import annotations

import re

from conftest import Lab

SEED_FLOWS = {
    "priority=150,in_port=2,vlan_tci=0x1000/0x1000 actions=drop",
    "priority=150,in_port=3,vlan_tci=0x1000/0x1000 actions=drop",
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
    "priority=135,icmp6,in_port=2,icmp_type=135 actions=drop",
    "priority=135,icmp6,in_port=2,icmp_type=136 actions=drop",
    "priority=135,icmp6,in_port=3,icmp_type=135 actions=drop",
    "priority=135,icmp6,in_port=3,icmp_type=136 actions=drop",
    "priority=130,ip,in_port=2,dl_src=52:54:00:60:84:ff,nw_src=198.18.0.1 actions=ct(table=1,zone=1)",
    "priority=130,ipv6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff actions=ct(table=1,zone=1)",
    "priority=130,ip,in_port=3,dl_src=52:54:00:99:90:78,nw_src=198.18.0.2 actions=ct(table=1,zone=1)",
    "priority=130,ipv6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078 actions=ct(table=1,zone=1)",
    "priority=125,ip,nw_src=198.18.0.1 actions=drop",
    "priority=125,arp,arp_spa=198.18.0.1 actions=drop",
    "priority=125,ipv6,ipv6_src=fe80::5054:ff:fe60:84ff actions=drop",
    "priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff actions=drop",
    "priority=125,ip,nw_src=198.18.0.2 actions=drop",
    "priority=125,arp,arp_spa=198.18.0.2 actions=drop",
    "priority=125,ipv6,ipv6_src=fe80::5054:ff:fe99:9078 actions=drop",
    "priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078 actions=drop",
    "priority=110,in_port=2 actions=drop",
    "priority=110,in_port=3 actions=drop",
    "priority=108,dl_src=52:54:00:60:84:ff actions=drop",
    "priority=108,arp,arp_sha=52:54:00:60:84:ff actions=drop",
    "priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:60:84:ff actions=drop",
    "priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:60:84:ff actions=drop",
    "priority=108,dl_src=52:54:00:99:90:78 actions=drop",
    "priority=108,arp,arp_sha=52:54:00:99:90:78 actions=drop",
    "priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:99:90:78 actions=drop",
    "priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:99:90:78 actions=drop",
    "priority=105,icmp6,icmp_type=133 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=134 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=135 actions=goto_table:2",
    "priority=105,icmp6,icmp_type=136 actions=goto_table:2",
    "priority=100,ip actions=ct(table=1,zone=1)",
    "priority=100,ipv6 actions=ct(table=1,zone=1)",
    "priority=10,arp actions=goto_table:2",
    "priority=1 actions=drop",
    "table=1, priority=200,ct_state=+inv+trk actions=drop",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3",
    "table=1, priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=2,dl_dst=52:54:00:99:90:78 actions=output:3",
    "table=1, priority=10,ct_state=+est-rpl+trk,ip actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark))",
    "table=1, priority=10,ct_state=+est-rpl+trk,ipv6 actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark))",
    "table=1, priority=0 actions=drop",
    "table=2, priority=100,dl_dst=52:54:00:60:84:ff actions=output:2",
    "table=2, priority=100,dl_dst=52:54:00:99:90:78 actions=output:3",
    "table=2, priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD",
    "table=2, priority=0 actions=drop",
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
        assert seed.counter("-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 ") == 0
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
        # New and established alike meet the pair's line (the seed's lines 5 and 6); the
        # replies pass on the line of the connection's mark (the seed's line 8).
        seed.counter_reaches("-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 ", 6)
        seed.counter_reaches("+est+rpl+trk,ct_mark=0x10002,in_port=3", 3)
        assert seed.drop_counter() == drops
    finally:
        tcp_srv.kill()
        udp_srv.kill()
    for proto, extra in (("icmp", "type=8"), ("tcp", "dport=22"), ("udp", "dport=53")):
        entries = seed.ovs.conntrack_entries(proto, vm1.ip, vm2.ip, extra)
        assert entries, f"no {proto} conntrack entry from vm1:\n{seed.ovs.conntrack()}"
