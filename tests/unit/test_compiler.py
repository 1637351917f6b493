"""The flow compiler: which flows a switch gets, and how they print."""

from __future__ import annotations

import pytest

from ryu_ctfw.compiler import (
    COOKIE_MASK,
    COOKIE_TAG,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    EST_ORIGINAL,
    EST_REPLY,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    KIND_BASE,
    KIND_LEARN,
    KIND_PAIR,
    KIND_VM,
    NEW,
    P_VM_FALSE_NA,
    P_VM_GUARD,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    TABLE_CLASSIFY,
    TABLE_POLICY,
    Attachment,
    Ct,
    CtState,
    Flow,
    Match,
    Output,
    base_flows,
    compile_switch,
    cookie,
    cookie_kind,
    dedupe,
    link_local,
    pair_flows,
    render,
    vm_port_flows,
)
from ryu_ctfw.policy import Pair, PairRequest, Policy, Vm

MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"
MAC_A = "52:54:00:00:00:0a"
MAC_B = "52:54:00:00:00:0b"
MAC_C = "52:54:00:00:00:0c"
LL1 = "fe80::5054:ff:fe60:84ff"  # link_local(MAC1)
LL2 = "fe80::5054:ff:fe99:9078"  # link_local(MAC2)
LL_A = "fe80::5054:ff:fe00:a"  # link_local(MAC_A)

SEED_ATTACHED = {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2)}

# The seed (vm1 = ofport 2, vm2 = ofport 3, pair vm1 -> vm2 any) in zone 1, as render()
# prints it: by table, then priority high to low; equal priorities in compile order.
#
# Table 0, per VM port (130/120/110): ARP only with its own MAC and IPv4 (arp_sha and
# arp_spa); Neighbor Advertisements only for its link-local address (no IPv6 given);
# Neighbor Solicitations from its MAC; IPv4 only from its IP and IPv6 only from its
# link-local address, both to conntrack in zone 1; anything else from the port dropped.
# Then the generic lines: ND from other ports passes without conntrack (105), IPv4 and IPv6
# from other ports to conntrack (100), ARP (10), the rest dropped (1).
# Table 1: invalid dropped first (200); the pair's new connections, IPv4 and IPv6, from
# vm1 (in_port 2) to vm2's MAC are committed in zone 1; established packets of those
# connections in the original direction (vm1 -> vm2) and replies (vm2 -> vm1's MAC) pass;
# related (ICMP errors) pass (50); everything else is dropped (0).
SEED_FLOWS = """\
table=0, priority=130,arp,in_port=2,dl_src=52:54:00:60:84:ff,arp_spa=198.18.0.1,arp_sha=52:54:00:60:84:ff actions=NORMAL
table=0, priority=130,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff actions=NORMAL
table=0, priority=130,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff,icmp_type=135 actions=NORMAL
table=0, priority=130,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=::,icmp_type=135 actions=NORMAL
table=0, priority=130,arp,in_port=3,dl_src=52:54:00:99:90:78,arp_spa=198.18.0.2,arp_sha=52:54:00:99:90:78 actions=NORMAL
table=0, priority=130,icmp6,in_port=3,dl_src=52:54:00:99:90:78,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078 actions=NORMAL
table=0, priority=130,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078,icmp_type=135 actions=NORMAL
table=0, priority=130,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=::,icmp_type=135 actions=NORMAL
table=0, priority=125,icmp6,in_port=2,icmp_type=136 actions=drop
table=0, priority=125,icmp6,in_port=3,icmp_type=136 actions=drop
table=0, priority=120,ip,in_port=2,dl_src=52:54:00:60:84:ff,nw_src=198.18.0.1 actions=ct(table=1,zone=1)
table=0, priority=120,ipv6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff actions=ct(table=1,zone=1)
table=0, priority=120,ip,in_port=3,dl_src=52:54:00:99:90:78,nw_src=198.18.0.2 actions=ct(table=1,zone=1)
table=0, priority=120,ipv6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078 actions=ct(table=1,zone=1)
table=0, priority=110,in_port=2 actions=drop
table=0, priority=110,in_port=3 actions=drop
table=0, priority=105,icmp6,icmp_type=133 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=134 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=135 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=136 actions=NORMAL
table=0, priority=100,ip actions=ct(table=1,zone=1)
table=0, priority=100,ipv6 actions=ct(table=1,zone=1)
table=0, priority=10,arp actions=NORMAL
table=0, priority=1 actions=drop
table=1, priority=200,ct_state=+inv+trk actions=drop
table=1, priority=100,ct_state=+new+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1),NORMAL
table=1, priority=100,ct_state=+est-rpl+trk,in_port=2,dl_dst=52:54:00:99:90:78 actions=NORMAL
table=1, priority=100,ct_state=+est+rpl+trk,in_port=3,dl_dst=52:54:00:60:84:ff actions=NORMAL
table=1, priority=100,ct_state=+new+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1),NORMAL
table=1, priority=50,ct_state=+rel+trk actions=NORMAL
table=1, priority=0 actions=drop"""  # noqa: E501

BASE_FLOWS_ZONE_1 = """\
table=0, priority=105,icmp6,icmp_type=133 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=134 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=135 actions=NORMAL
table=0, priority=105,icmp6,icmp_type=136 actions=NORMAL
table=0, priority=100,ip actions=ct(table=1,zone=1)
table=0, priority=100,ipv6 actions=ct(table=1,zone=1)
table=0, priority=10,arp actions=NORMAL
table=0, priority=1 actions=drop
table=1, priority=200,ct_state=+inv+trk actions=drop
table=1, priority=50,ct_state=+rel+trk actions=NORMAL
table=1, priority=0 actions=drop"""


def cookie_ident(value: int) -> int:
    return value & ((1 << 40) - 1)


def has(state: CtState | None, flag: int) -> bool:
    return state is not None and bool(state.mask & flag) and bool(state.value & flag)


def new_flows(flows: list[Flow]) -> list[Flow]:
    """The flows that let a connection be opened (+new)."""
    return [f for f in flows if f.match.ct_state == NEW]


def est_flows(flows: list[Flow]) -> list[Flow]:
    """The pairs' established lines (original direction and replies)."""
    return [f for f in flows if f.match.ct_state in (EST_ORIGINAL, EST_REPLY)]


def in_ports(flows: list[Flow]) -> list[int]:
    """The in_port of each flow, sorted (every flow here has one)."""
    ports = [f.match.in_port for f in flows]
    assert None not in ports
    return sorted(p for p in ports if p is not None)


def table(flows: list[Flow], number: int) -> list[Flow]:
    return [f for f in flows if f.table == number]


def abc_policy(*pairs: tuple[str, str]) -> Policy:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", MAC_B))
    policy.put_vm(Vm("C", "tapC", MAC_C))
    for initiator, responder in pairs:
        policy.add_pair(PairRequest(initiator, responder))
    return policy


ABC_ATTACHED = {
    "A": Attachment(5, MAC_A),
    "B": Attachment(6, MAC_B),
    "C": Attachment(7, MAC_C),
}


def base_and_vm_flows(policy: Policy, attached: dict[str, Attachment], zone: int) -> list[Flow]:
    """What a switch gets without any pair."""
    flows = list(base_flows(zone))
    for name, at in attached.items():
        flows += vm_port_flows(policy.vms[name], at, zone)
    return flows


# --- the seed ------------------------------------------------------------------------------


def test_seed_policy_renders_as_the_seed_flows(seed_policy: Policy) -> None:
    assert render(compile_switch(seed_policy, SEED_ATTACHED, 1)) == SEED_FLOWS


def test_seed_flows_do_not_depend_on_the_attachment_order(seed_policy: Policy) -> None:
    reversed_order = dict(reversed(SEED_ATTACHED.items()))
    flows = compile_switch(seed_policy, reversed_order, 1)
    assert set(flows) == set(compile_switch(seed_policy, SEED_ATTACHED, 1))
    assert sorted(render(flows).splitlines()) == sorted(SEED_FLOWS.splitlines())


def test_seed_render_does_not_depend_on_the_attachment_order(seed_policy: Policy) -> None:
    reversed_order = dict(reversed(SEED_ATTACHED.items()))
    assert render(compile_switch(seed_policy, reversed_order, 1)) == SEED_FLOWS


def test_the_seed_in_another_zone_differs_only_in_the_zone(seed_policy: Policy) -> None:
    text = render(compile_switch(seed_policy, SEED_ATTACHED, 4242))
    assert "zone=1)" not in text
    assert text == SEED_FLOWS.replace("zone=1)", "zone=4242)")


# --- render() ordering ---------------------------------------------------------------------


def _flow(table: int, priority: int, in_port: int | None = None) -> Flow:
    return Flow(table, priority, Match(in_port=in_port), (), cookie(KIND_BASE))


def test_render_sorts_by_table_then_priority_descending_and_is_stable() -> None:
    flows = [
        _flow(1, 0),
        _flow(1, 100, in_port=9),
        _flow(0, 1),
        _flow(1, 100, in_port=3),
        _flow(0, 100),
        _flow(1, 100, in_port=5),
    ]
    assert render(flows).splitlines() == [
        "table=0, priority=100 actions=drop",
        "table=0, priority=1 actions=drop",
        "table=1, priority=100,in_port=9 actions=drop",  # equal keys keep their order
        "table=1, priority=100,in_port=3 actions=drop",
        "table=1, priority=100,in_port=5 actions=drop",
        "table=1, priority=0 actions=drop",
    ]


def test_render_of_nothing_is_empty() -> None:
    assert render([]) == ""


# --- text ----------------------------------------------------------------------------------


def test_text_of_each_part() -> None:
    assert CtState.of(CT_NEW, CT_TRK).text() == "+new+trk"
    assert CtState(CT_TRK, CT_TRK | CT_EST).text() == "-est+trk"
    assert EST_ORIGINAL.text() == "+est-rpl+trk"
    assert EST_REPLY.text() == "+est+rpl+trk"
    assert CtState.of(CT_INV, CT_TRK).text() == "+inv+trk"
    assert CtState.of(CT_REL, CT_TRK).text() == "+rel+trk"
    # ovs-ofctl's order: commit, table, zone.
    assert Ct(commit=True, zone=5, table=1).text() == "ct(commit,table=1,zone=5)"
    assert Ct(table=1, zone=7).text() == "ct(table=1,zone=7)"
    assert Ct().text() == "ct()"
    assert Output("NORMAL").text() == "NORMAL"
    assert Output("CONTROLLER", 64).text() == "CONTROLLER:64"
    assert Output("CONTROLLER").text() == "CONTROLLER:128"
    assert Output(4).text() == "output:4"


def test_match_text_follows_ovs_ofctl() -> None:
    m = Match(
        in_port=2,
        eth_type=ETH_TYPE_IPV6,
        ip_proto=PROTO_TCP,
        eth_dst=MAC1,
        eth_src=MAC2,
        ipv6_src="fd00::1",
        tp_dst=(8000, 0xFFC0),
        tp_src=(22, 0xFFFF),
        ct_state=NEW,
    )
    assert m.text() == (
        f"ct_state=+new+trk,tcp6,in_port=2,dl_src={MAC2},dl_dst={MAC1},ipv6_src=fd00::1,"
        "tp_src=22,tp_dst=0x1f40/0xffc0"
    )
    assert m.fields() == {
        "ct_state": "+new+trk",
        "tcp6": True,
        "in_port": 2,
        "dl_src": MAC2,
        "dl_dst": MAC1,
        "ipv6_src": "fd00::1",
        "tp_src": 22,
        "tp_dst": "0x1f40/0xffc0",
    }
    arp = Match(eth_type=ETH_TYPE_ARP, in_port=2, eth_src=MAC1, arp_spa="10.0.0.1", arp_sha=MAC1)
    assert arp.text() == f"arp,in_port=2,dl_src={MAC1},arp_spa=10.0.0.1,arp_sha={MAC1}"
    na = Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=136, nd_target=LL1)
    assert na.text() == f"icmp6,icmp_type=136,nd_target={LL1}"
    assert Match(eth_type=ETH_TYPE_IP, ip_proto=PROTO_ICMP, icmp_type=8).text() == (
        "icmp,icmp_type=8"
    )
    assert Match(eth_type=ETH_TYPE_IP, ipv4_src="10.0.0.1").text() == "ip,nw_src=10.0.0.1"
    assert Match(eth_type=0x88CC).text() == "dl_type=0x88cc"
    assert Match().text() == ""
    assert Match().fields() == {}


# --- link_local ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "address"),
    [
        (MAC1, LL1),
        (MAC2, LL2),
        (MAC_A, LL_A),
        ("00:00:00:00:00:01", "fe80::200:ff:fe00:1"),  # the U/L bit is flipped on...
        ("02:00:00:00:00:01", "fe80::ff:fe00:1"),  # ...and off
        ("fe:ff:ff:ff:ff:ff", "fe80::fcff:ffff:feff:ffff"),
    ],
)
def test_link_local_is_the_eui64_address(mac: str, address: str) -> None:
    assert link_local(mac) == address


# --- the base flows ------------------------------------------------------------------------


def test_empty_policy_gets_only_the_base_flows() -> None:
    flows = compile_switch(Policy(), {}, 1)
    assert flows == list(base_flows(1))
    assert render(flows) == BASE_FLOWS_ZONE_1
    assert all(cookie_kind(f.cookie) == KIND_BASE for f in flows)


def test_base_flows_track_in_the_given_zone() -> None:
    cts = [a for f in base_flows(65535) for a in f.actions if isinstance(a, Ct)]
    assert cts == [Ct(table=TABLE_POLICY, zone=65535)] * 2  # IPv4 and IPv6


def test_a_vm_registered_but_not_attached_changes_nothing(seed_policy: Policy) -> None:
    assert compile_switch(seed_policy, {}, 1) == list(base_flows(1))


# --- table 0: a VM's port ------------------------------------------------------------------


def test_a_vm_with_mac_and_ipv4_only() -> None:
    vm = Vm("vm1", "tap2", MAC1, ("198.18.0.1",))
    flows = vm_port_flows(vm, Attachment(2, MAC1), 3)
    assert [f.text() for f in flows] == [
        # ARP only with its own IPv4 and MAC.
        f"table=0, priority=130,arp,in_port=2,dl_src={MAC1},arp_spa=198.18.0.1,arp_sha={MAC1}"
        " actions=NORMAL",
        # NA only for its link-local address (it was given no IPv6).
        f"table=0, priority=130,icmp6,in_port=2,dl_src={MAC1},icmp_type=136,nd_target={LL1}"
        " actions=NORMAL",
        # NS only from its own addresses, or from :: while it checks for duplicates.
        f"table=0, priority=130,icmp6,in_port=2,dl_src={MAC1},ipv6_src={LL1},icmp_type=135"
        " actions=NORMAL",
        f"table=0, priority=130,icmp6,in_port=2,dl_src={MAC1},ipv6_src=::,icmp_type=135"
        " actions=NORMAL",
        # Any other NA would claim an address it does not own.
        "table=0, priority=125,icmp6,in_port=2,icmp_type=136 actions=drop",
        f"table=0, priority=120,ip,in_port=2,dl_src={MAC1},nw_src=198.18.0.1"
        " actions=ct(table=1,zone=3)",
        # IPv6 only from the link-local address.
        f"table=0, priority=120,ipv6,in_port=2,dl_src={MAC1},ipv6_src={LL1}"
        " actions=ct(table=1,zone=3)",
        "table=0, priority=110,in_port=2 actions=drop",
    ]
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie)) for f in flows} == {(KIND_VM, 2)}
    assert all(f.table == TABLE_CLASSIFY for f in flows)


def test_a_dual_stack_vm() -> None:
    vm = Vm("d", "tapD", MAC_A, ("10.0.0.5", "fd00::5", "10.0.1.5", "2001:db8::5"))
    flows = vm_port_flows(vm, Attachment(9, MAC_A), 2)
    own = f"in_port=9,dl_src={MAC_A}"
    assert [f.text() for f in flows] == [
        f"table=0, priority=130,arp,{own},arp_spa=10.0.0.5,arp_sha={MAC_A} actions=NORMAL",
        f"table=0, priority=130,arp,{own},arp_spa=10.0.1.5,arp_sha={MAC_A} actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},icmp_type=136,nd_target={LL_A} actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},icmp_type=136,nd_target=fd00::5 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},icmp_type=136,nd_target=2001:db8::5 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},ipv6_src={LL_A},icmp_type=135 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},ipv6_src=fd00::5,icmp_type=135 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},ipv6_src=2001:db8::5,icmp_type=135 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},ipv6_src=::,icmp_type=135 actions=NORMAL",
        "table=0, priority=125,icmp6,in_port=9,icmp_type=136 actions=drop",
        f"table=0, priority=120,ip,{own},nw_src=10.0.0.5 actions=ct(table=1,zone=2)",
        f"table=0, priority=120,ip,{own},nw_src=10.0.1.5 actions=ct(table=1,zone=2)",
        f"table=0, priority=120,ipv6,{own},ipv6_src={LL_A} actions=ct(table=1,zone=2)",
        f"table=0, priority=120,ipv6,{own},ipv6_src=fd00::5 actions=ct(table=1,zone=2)",
        f"table=0, priority=120,ipv6,{own},ipv6_src=2001:db8::5 actions=ct(table=1,zone=2)",
        "table=0, priority=110,in_port=9 actions=drop",
    ]


def test_an_ipv6_only_vm_has_no_arp_and_no_ipv4_line() -> None:
    flows = vm_port_flows(Vm("d", "tapD", MAC_A, ("fd00::5",)), Attachment(9, MAC_A), 2)
    assert not [f for f in flows if f.match.eth_type in (ETH_TYPE_ARP, ETH_TYPE_IP)]
    assert [f.match.ipv6_src for f in flows if f.priority == 120] == [LL_A, "fd00::5"]
    assert flows[-1].text() == "table=0, priority=110,in_port=9 actions=drop"


def test_a_vm_without_ips_is_bound_to_its_mac_only() -> None:
    flows = vm_port_flows(Vm("A", "tapA", MAC_A), Attachment(5, MAC_A), 1)
    own = f"in_port=5,dl_src={MAC_A}"
    assert [f.text() for f in flows] == [
        f"table=0, priority=130,arp,{own},arp_sha={MAC_A} actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},icmp_type=136 actions=NORMAL",
        f"table=0, priority=130,icmp6,{own},icmp_type=135 actions=NORMAL",
        f"table=0, priority=120,ip,{own} actions=ct(table=1,zone=1)",
        f"table=0, priority=120,ipv6,{own} actions=ct(table=1,zone=1)",
        "table=0, priority=110,in_port=5 actions=drop",
    ]


def test_a_vm_with_no_mac_known_gets_the_learn_flows() -> None:
    flows = vm_port_flows(Vm("B", "tapB", None, ("10.0.0.2",)), Attachment(6, None), 1)
    assert [f.text() for f in flows] == [
        "table=0, priority=130,arp,in_port=6 actions=NORMAL,CONTROLLER:128",
        "table=0, priority=130,icmp6,in_port=6,icmp_type=135 actions=NORMAL,CONTROLLER:128",
        "table=0, priority=110,in_port=6 actions=drop",
    ]
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie)) for f in flows} == {(KIND_LEARN, 6)}
    # Nothing of it goes to conntrack until the MAC is known.
    assert not [a for f in flows for a in f.actions if isinstance(a, Ct)]


def test_a_learned_mac_binds_the_port_like_a_configured_one() -> None:
    learned = vm_port_flows(Vm("B", "tapB", None, ("10.0.0.2",)), Attachment(6, MAC_B), 1)
    configured = vm_port_flows(Vm("B", "tapB", MAC_B, ("10.0.0.2",)), Attachment(6, MAC_B), 1)
    assert learned == configured
    assert not [f for f in learned if cookie_kind(f.cookie) == KIND_LEARN]


def test_vm_port_lines_sit_above_the_generic_ones_in_table_0(seed_policy: Policy) -> None:
    flows = compile_switch(seed_policy, SEED_ATTACHED, 1)
    vm_lines = [f for f in flows if cookie_kind(f.cookie) == KIND_VM]
    generic = [f for f in table(flows, TABLE_CLASSIFY) if cookie_kind(f.cookie) == KIND_BASE]
    assert min(f.priority for f in vm_lines) > max(f.priority for f in generic)
    # Every VM line is about that VM's port; every line that lets a packet through pins its
    # MAC as source (the others drop).
    for f in vm_lines:
        assert f.match.in_port == cookie_ident(f.cookie)
        if f.actions:
            assert f.match.eth_src == {2: MAC1, 3: MAC2}[f.match.in_port]
        else:
            assert f.priority in (P_VM_FALSE_NA, P_VM_GUARD)


# --- table 1: pairs ------------------------------------------------------------------------

INI = Attachment(2, MAC1)
RES = Attachment(3, MAC2)


def pair_text(pair: Pair, zone: int = 1) -> list[str]:
    return [f.text() for f in pair_flows(pair, INI, RES, zone)]


def test_an_any_pair_makes_new_lines_per_family_and_one_est_line_each_way() -> None:
    assert pair_text(Pair(1, "vm1", "vm2")) == [
        f"table=1, priority=100,ct_state=+new+trk,ip,in_port=2,dl_dst={MAC2}"
        " actions=ct(commit,zone=1),NORMAL",
        f"table=1, priority=100,ct_state=+est-rpl+trk,in_port=2,dl_dst={MAC2} actions=NORMAL",
        f"table=1, priority=100,ct_state=+est+rpl+trk,in_port=3,dl_dst={MAC1} actions=NORMAL",
        # The IPv6 service shares the est lines above: four lines in all.
        f"table=1, priority=100,ct_state=+new+trk,ipv6,in_port=2,dl_dst={MAC2}"
        " actions=ct(commit,zone=1),NORMAL",
    ]


def test_a_tcp_22_pair() -> None:
    there = f"in_port=2,dl_dst={MAC2}"
    back = f"in_port=3,dl_dst={MAC1}"
    assert pair_text(Pair(4, "vm1", "vm2", "tcp", "22"), zone=9) == [
        f"table=1, priority=100,ct_state=+new+trk,tcp,{there},tp_dst=22"
        " actions=ct(commit,zone=9),NORMAL",
        f"table=1, priority=100,ct_state=+est-rpl+trk,tcp,{there},tp_dst=22 actions=NORMAL",
        f"table=1, priority=100,ct_state=+est+rpl+trk,tcp,{back},tp_src=22 actions=NORMAL",
        f"table=1, priority=100,ct_state=+new+trk,tcp6,{there},tp_dst=22"
        " actions=ct(commit,zone=9),NORMAL",
        f"table=1, priority=100,ct_state=+est-rpl+trk,tcp6,{there},tp_dst=22 actions=NORMAL",
        f"table=1, priority=100,ct_state=+est+rpl+trk,tcp6,{back},tp_src=22 actions=NORMAL",
    ]
    flows = pair_flows(Pair(4, "vm1", "vm2", "tcp", "22"), INI, RES, 9)
    replies = [f for f in flows if f.match.ct_state == EST_REPLY]
    assert {(f.match.in_port, f.match.eth_dst, f.match.tp_src) for f in replies} == {
        (3, MAC1, (22, 0xFFFF))
    }
    assert all(f.match.tp_dst is None for f in replies)
    assert {cookie(KIND_PAIR, 4)} == {f.cookie for f in flows}


def test_a_udp_range_pair_has_one_line_per_mask_family_and_state() -> None:
    flows = pair_flows(Pair(2, "vm1", "vm2", "udp", "8000-8100"), INI, RES, 1)
    assert len(flows) == 4 * 2 * 3  # 4 masks, 2 families, new / est-rpl / est+rpl
    masks = [(8000, 0xFFC0), (8064, 0xFFE0), (8096, 0xFFFC), (8100, 0xFFFF)]
    for state, side in ((NEW, "tp_dst"), (EST_ORIGINAL, "tp_dst"), (EST_REPLY, "tp_src")):
        lines = [f.match for f in flows if f.match.ct_state == state]
        assert [getattr(m, side) for m in lines] == masks * 2
        assert [m.eth_type for m in lines] == [ETH_TYPE_IP] * 4 + [ETH_TYPE_IPV6] * 4
        assert {m.ip_proto for m in lines} == {17}
    assert "tp_dst=0x1f40/0xffc0" in render(flows)


def test_a_tcp_pair_without_ports_matches_any_port() -> None:
    flows = pair_flows(Pair(2, "vm1", "vm2", "tcp"), INI, RES, 1)
    assert len(flows) == 6
    assert all(f.match.ip_proto == PROTO_TCP for f in flows)
    assert all(f.match.tp_src is None and f.match.tp_dst is None for f in flows)


def test_an_icmp_pair_allows_echo_request_there_and_echo_reply_back() -> None:
    flows = pair_flows(Pair(3, "vm1", "vm2", "icmp"), INI, RES, 1)
    got = [
        (f.match.ct_state, f.match.eth_type, f.match.ip_proto, f.match.icmp_type, f.match.in_port)
        for f in flows
    ]
    assert got == [
        (NEW, ETH_TYPE_IP, PROTO_ICMP, 8, 2),
        (EST_ORIGINAL, ETH_TYPE_IP, PROTO_ICMP, 8, 2),
        (EST_REPLY, ETH_TYPE_IP, PROTO_ICMP, 0, 3),
        (NEW, ETH_TYPE_IPV6, PROTO_ICMPV6, 128, 2),
        (EST_ORIGINAL, ETH_TYPE_IPV6, PROTO_ICMPV6, 128, 2),
        (EST_REPLY, ETH_TYPE_IPV6, PROTO_ICMPV6, 129, 3),
    ]
    assert render(flows).splitlines()[0] == (
        f"table=1, priority=100,ct_state=+new+trk,icmp,in_port=2,dl_dst={MAC2},icmp_type=8"
        " actions=ct(commit,zone=1),NORMAL"
    )


@pytest.mark.parametrize(
    "pair",
    [
        Pair(1, "vm1", "vm2"),
        Pair(1, "vm1", "vm2", "tcp"),
        Pair(1, "vm1", "vm2", "udp", "53"),
        Pair(1, "vm1", "vm2", "tcp", "1-65535"),
        Pair(1, "vm1", "vm2", "icmp"),
    ],
    ids=lambda p: f"{p.protocol}/{p.ports}",
)
@pytest.mark.parametrize("zone", [1, 77, 65535])
def test_pair_flows_are_exactly_new_est_rpl_and_est_plus_rpl(pair: Pair, zone: int) -> None:
    flows = pair_flows(pair, INI, RES, zone)
    assert {f.match.ct_state for f in flows} == {NEW, EST_ORIGINAL, EST_REPLY}
    assert all(f.table == TABLE_POLICY and f.priority == 100 for f in flows)
    for f in flows:
        if f.match.ct_state == NEW:
            # Every new line commits in the bridge's zone, then forwards.
            assert f.actions == (Ct(commit=True, zone=zone), Output("NORMAL"))
            assert (f.match.in_port, f.match.eth_dst) == (2, MAC2)
        elif f.match.ct_state == EST_ORIGINAL:
            assert f.actions == (Output("NORMAL"),)
            assert (f.match.in_port, f.match.eth_dst) == (2, MAC2)
        else:
            assert f.actions == (Output("NORMAL"),)
            assert (f.match.in_port, f.match.eth_dst) == (3, MAC1)
    news = [f for f in flows if f.match.ct_state == NEW]
    assert {f.match.eth_type for f in news} == {ETH_TYPE_IP, ETH_TYPE_IPV6}


def test_every_ct_action_of_a_switch_uses_its_zone() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.add_pair(PairRequest("C", "A", "icmp"))
    policy.add_pair(PairRequest("A", "C", "tcp", "8000-8100"))
    for zone in (1, 2, 65535):
        flows = compile_switch(policy, ABC_ATTACHED, zone)
        cts = [(f.table, a) for f in flows for a in f.actions if isinstance(a, Ct)]
        assert cts
        for table_id, ct in cts:
            assert ct.zone == zone
            # Table 0 sends to conntrack and on to table 1; table 1 only commits.
            expected = Ct(table=TABLE_POLICY, zone=zone) if table_id == 0 else Ct(True, None, zone)
            assert ct == expected


# --- which pairs compile -------------------------------------------------------------------


def test_a_pair_lets_its_initiator_reach_only_its_responder() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    new = new_flows(flows)
    assert [(f.match.in_port, f.match.eth_dst, f.match.eth_type) for f in new] == [
        (5, MAC_B, ETH_TYPE_IP),
        (5, MAC_B, ETH_TYPE_IPV6),
    ]
    assert all(f.table == TABLE_POLICY for f in new)
    assert all(f.actions == (Ct(commit=True, zone=1), Output("NORMAL")) for f in new)
    assert sorted((f.match.in_port, f.match.eth_dst) for f in est_flows(flows)) == [
        (5, MAC_B),
        (6, MAC_A),
    ]
    # C is in no pair: no table-1 flow mentions its port or its MAC.
    for f in table(flows, TABLE_POLICY):
        assert f.match.in_port != 7 and f.match.eth_dst != MAC_C


def test_both_directions_make_new_lines_each_way() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("B", "A")), ABC_ATTACHED, 1)
    new = {(f.match.in_port, f.match.eth_dst) for f in new_flows(flows)}
    assert new == {(5, MAC_B), (6, MAC_A)}
    est = est_flows(flows)
    assert in_ports([f for f in est if f.match.ct_state == EST_ORIGINAL]) == [5, 6]
    assert in_ports([f for f in est if f.match.ct_state == EST_REPLY]) == [5, 6]
    assert len(est) == 4


def test_one_initiator_with_two_responders() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("A", "C")), ABC_ATTACHED, 1)
    assert {(f.match.in_port, f.match.eth_dst) for f in new_flows(flows)} == {
        (5, MAC_B),
        (5, MAC_C),
    }


def _towards(flows: list[Flow], src: Attachment, dst: Attachment) -> set[CtState | None]:
    return {
        f.match.ct_state
        for f in table(flows, TABLE_POLICY)
        if f.match.in_port == src.ofport and f.match.eth_dst == dst.mac
    }


@pytest.mark.parametrize(
    "pairs",
    [
        [("A", "B", "any", None)],
        [("A", "B", "tcp", "22"), ("A", "B", "icmp", None)],
        [("A", "B", "udp", "53"), ("B", "C", "any", None), ("C", "A", "tcp", None)],
        [("A", "B", "any", None), ("A", "C", "any", None), ("B", "C", "tcp", "80-90")],
    ],
)
def test_a_responder_cannot_open_or_continue_towards_its_initiator(
    pairs: list[tuple[str, str, str, str | None]],
) -> None:
    policy = abc_policy()
    for ini, res, proto, ports in pairs:
        policy.add_pair(PairRequest(ini, res, proto, ports))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    directions = {(ini, res) for ini, res, _, _ in pairs}
    for ini, res in directions:
        there = _towards(flows, ABC_ATTACHED[ini], ABC_ATTACHED[res])
        back = _towards(flows, ABC_ATTACHED[res], ABC_ATTACHED[ini])
        assert there == {NEW, EST_ORIGINAL}
        if (res, ini) not in directions:
            assert back == {EST_REPLY}  # replies only
    # And VMs in no pair together have no line between them at all.
    for x in "ABC":
        for y in "ABC":
            if x != y and (x, y) not in directions and (y, x) not in directions:
                assert _towards(flows, ABC_ATTACHED[x], ABC_ATTACHED[y]) == set()


def test_a_reverse_pair_adds_new_and_est_rpl_lines_back() -> None:
    policy = abc_policy(("A", "B"))
    before = _towards(compile_switch(policy, ABC_ATTACHED, 1), ABC_ATTACHED["B"], ABC_ATTACHED["A"])
    policy.add_pair(PairRequest("B", "A"))
    after = _towards(compile_switch(policy, ABC_ATTACHED, 1), ABC_ATTACHED["B"], ABC_ATTACHED["A"])
    assert (before, after) == ({EST_REPLY}, {NEW, EST_ORIGINAL, EST_REPLY})


def test_two_services_of_the_same_vms_compile_side_by_side() -> None:
    policy = abc_policy()
    policy.add_pair(PairRequest("A", "B", "tcp", "22"))
    policy.add_pair(PairRequest("A", "B", "udp", "53"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    new = new_flows(flows)
    assert sorted((cookie_ident(f.cookie), f.match.ip_proto, f.match.tp_dst) for f in new) == [
        (1, 6, (22, 0xFFFF)),
        (1, 6, (22, 0xFFFF)),
        (2, 17, (53, 0xFFFF)),
        (2, 17, (53, 0xFFFF)),
    ]


@pytest.mark.parametrize("absent", ["A", "B"])
def test_a_vm_not_attached_gets_no_pair_flows(absent: str) -> None:
    policy = abc_policy(("A", "B"))
    attached = {name: at for name, at in ABC_ATTACHED.items() if name != absent}
    flows = compile_switch(policy, attached, 1)
    assert new_flows(flows) == []
    assert est_flows(flows) == []
    assert flows == base_and_vm_flows(policy, attached, 1)  # no pair flows at all


def test_a_renumbered_ofport_changes_in_port(seed_policy: Policy) -> None:
    before = compile_switch(seed_policy, SEED_ATTACHED, 1)
    after = compile_switch(seed_policy, {"vm1": Attachment(9, MAC1), "vm2": Attachment(3, MAC2)}, 1)
    assert {f.match.in_port for f in new_flows(before)} == {2}
    assert {f.match.in_port for f in new_flows(after)} == {9}
    assert in_ports(est_flows(after)) == [3, 9]
    assert not [f for f in after if f.match.in_port == 2]
    assert {cookie_ident(f.cookie) for f in after if cookie_kind(f.cookie) == KIND_VM} == {3, 9}


def test_a_responder_without_a_known_mac_gets_no_pair_flows() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("10.0.0.2", "fd00::2", "10.0.1.2")))
    policy.add_pair(PairRequest("A", "B"))
    attached = {"A": Attachment(5, MAC_A), "B": Attachment(6, None)}
    flows = compile_switch(policy, attached, 1)
    # No pinning by IP any more: nothing opens until B's MAC is known.
    assert new_flows(flows) == [] and est_flows(flows) == []
    assert table(flows, TABLE_POLICY) == table(base_flows(1), TABLE_POLICY)
    assert [f.text() for f in flows if cookie_kind(f.cookie) == KIND_LEARN] == [
        "table=0, priority=130,arp,in_port=6 actions=NORMAL,CONTROLLER:128",
        "table=0, priority=130,icmp6,in_port=6,icmp_type=135 actions=NORMAL,CONTROLLER:128",
        "table=0, priority=110,in_port=6 actions=drop",
    ]


def test_an_initiator_without_a_known_mac_gets_no_pair_flows() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA"))
    policy.put_vm(Vm("B", "tapB", MAC_B))
    policy.add_pair(PairRequest("A", "B"))
    flows = compile_switch(policy, {"A": Attachment(5, None), "B": Attachment(6, MAC_B)}, 1)
    assert new_flows(flows) == [] and est_flows(flows) == []


def test_a_learned_mac_pins_the_responder_like_a_configured_one() -> None:
    def flows_with(b_mac: str | None) -> list[Flow]:
        policy = Policy()
        policy.put_vm(Vm("A", "tapA", MAC_A))
        policy.put_vm(Vm("B", "tapB", b_mac, ("10.0.0.2",)))
        policy.add_pair(PairRequest("A", "B"))
        return compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, MAC_B)}, 1)

    learned = flows_with(None)
    assert {(f.match.eth_dst, f.match.in_port) for f in new_flows(learned)} == {(MAC_B, 5)}
    assert not [f for f in learned if cookie_kind(f.cookie) == KIND_LEARN]
    assert learned == flows_with(MAC_B)


def test_a_vm_with_no_mac_known_gets_the_learn_flows_in_table_0() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB"))
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, None)}, 1)
    learn = [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert [(f.table, f.priority, cookie_ident(f.cookie)) for f in learn] == [
        (TABLE_CLASSIFY, 130, 6),
        (TABLE_CLASSIFY, 130, 6),
        (TABLE_CLASSIFY, 110, 6),
    ]
    lines = render(flows).splitlines()
    # Above the generic ND (105) and ARP (10) lines, so they see B's ARP and NS first.
    learn_at = [lines.index(f.text()) for f in learn]
    assert max(learn_at) < lines.index("table=0, priority=105,icmp6,icmp_type=135 actions=NORMAL")
    assert max(learn_at) < lines.index("table=0, priority=10,arp actions=NORMAL")


def test_a_vm_with_a_configured_mac_gets_no_learn_flow() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    # The attachment carries the configured MAC (SwitchManager.attachments: configured,
    # else learned); there is nothing to learn.
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A)}, 1)
    assert not [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert not [a for f in flows for a in f.actions if a == Output("CONTROLLER")]


def test_responders_with_no_mac_make_no_new_flow_but_can_be_learned() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("fd00::2",)))
    policy.put_vm(Vm("C", "tapC"))
    policy.add_pair(PairRequest("A", "B"))
    policy.add_pair(PairRequest("A", "C"))
    attached = {"A": Attachment(5, MAC_A), "B": Attachment(6, None), "C": Attachment(7, None)}
    flows = compile_switch(policy, attached, 1)
    assert new_flows(flows) == []
    learn = [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert sorted(set(in_ports(learn))) == [6, 7]


def test_same_mac_and_ip_on_two_vms_compile_each_on_its_port() -> None:
    # Allowed by the policy (VMs on different bridges); each bridge only sees its own.
    policy = Policy()
    policy.put_vm(Vm("x1", "tapX1", MAC_A, ("10.0.0.1",)))
    policy.put_vm(Vm("x2", "tapX2", MAC_A, ("10.0.0.1",)))
    one = compile_switch(policy, {"x1": Attachment(4, MAC_A)}, 1)
    two = compile_switch(policy, {"x2": Attachment(4, MAC_A)}, 2)
    assert render(one) == render(two).replace("zone=2)", "zone=1)")


# --- cookies -------------------------------------------------------------------------------


def test_cookie_layout() -> None:
    assert COOKIE_TAG & ~COOKIE_MASK == 0
    for kind in (KIND_BASE, KIND_VM, KIND_PAIR, KIND_LEARN):
        value = cookie(kind, 12345)
        assert value & COOKIE_MASK == COOKIE_TAG
        assert cookie_kind(value) == kind
        assert cookie_ident(value) == 12345
        assert value < 1 << 64
    assert len({KIND_BASE, KIND_VM, KIND_PAIR, KIND_LEARN}) == 4


def test_cookies_say_which_part_of_the_policy_made_each_flow() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.put_vm(Vm("D", "tapD"))
    attached = {**ABC_ATTACHED, "D": Attachment(8, None)}
    flows = compile_switch(policy, attached, 1)
    for f in flows:
        assert f.cookie & COOKIE_MASK == COOKIE_TAG, f.text()
    base = [f for f in flows if cookie_kind(f.cookie) == KIND_BASE]
    assert [(f.table, f.priority) for f in base] == [
        (0, 100),
        (0, 100),
        (0, 105),
        (0, 105),
        (0, 105),
        (0, 105),
        (0, 10),
        (0, 1),
        (1, 200),
        (1, 50),
        (1, 0),
    ]
    assert all(cookie_ident(f.cookie) == 0 for f in base)
    vm = [f for f in flows if cookie_kind(f.cookie) == KIND_VM]
    assert {cookie_ident(f.cookie) for f in vm} == {5, 6, 7}
    assert all(f.table == TABLE_CLASSIFY and cookie_ident(f.cookie) == f.match.in_port for f in vm)
    pair = [f for f in flows if cookie_kind(f.cookie) == KIND_PAIR]
    assert all(f.table == TABLE_POLICY for f in pair)
    assert {(cookie_ident(f.cookie), f.match.eth_dst) for f in new_flows(flows)} == {
        (1, MAC_B),
        (2, MAC_C),
    }
    assert set(new_flows(flows) + est_flows(flows)) == set(pair)
    learn = [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert {cookie_ident(f.cookie) for f in learn} == {8}
    assert len(base) + len(vm) + len(pair) + len(learn) == len(flows)


def test_ct_states_are_tracked_and_only_in_table_1() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.add_pair(PairRequest("C", "A", "icmp"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    for f in flows:
        if f.table == TABLE_CLASSIFY:
            assert f.match.ct_state is None
        elif f.match.ct_state is not None:
            assert has(f.match.ct_state, CT_TRK), f.text()
    # Only the reply lines and the est-rpl lines look at the direction.
    for f in est_flows(flows):
        assert f.match.ct_state is not None and f.match.ct_state.mask & CT_RPL


# --- dedupe --------------------------------------------------------------------------------


def test_dedupe_keeps_the_first_flow_per_key_in_order() -> None:
    one = Flow(1, 100, Match(in_port=2), (Output("NORMAL"),), cookie(KIND_VM, 2))
    same_key = Flow(1, 100, Match(in_port=2), (), cookie(KIND_PAIR, 9))
    other_priority = Flow(1, 90, Match(in_port=2), (), cookie(KIND_VM, 2))
    other_table = Flow(0, 100, Match(in_port=2), (), cookie(KIND_VM, 2))
    assert dedupe([one, same_key, other_priority, one, other_table]) == [
        one,
        other_priority,
        other_table,
    ]
    assert dedupe([]) == []


def test_compiled_flows_have_unique_keys() -> None:
    policy = abc_policy(("A", "B"), ("B", "A"), ("C", "A"))
    policy.add_pair(PairRequest("A", "B", "tcp", "8000-8100"))
    policy.add_pair(PairRequest("A", "B", "tcp", "8000-8063"))  # shares a mask with the above
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    keys = [f.key for f in flows]
    assert len(keys) == len(set(keys))


def test_an_any_pair_has_its_est_lines_once() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    assert len(est_flows(flows)) == 2
    assert len(new_flows(flows)) == 2
