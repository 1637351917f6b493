"""The flow compiler: which flows a switch gets, and how they print."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from shapes import MAC6, round_trip_policy

from ryu_ctfw.compiler import (
    BLOCKED,
    CONJ_ORIGINAL_LOGGED,
    CONTROLLER,
    COOKIE_MASK,
    COOKIE_TAG,
    EST_ORIGINAL,
    EST_REPLY,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FLOOD,
    INVALID,
    KIND_BASE,
    KIND_LEARN,
    KIND_NETWORK,
    KIND_PAIR,
    KIND_VM,
    MULTICAST,
    NO_MAC,
    OPENING,
    ORIGINAL,
    ORIGINAL_EST,
    ORIGINAL_NEW,
    P_ARP,
    P_BLOCK,
    P_CLAIMED_ADDRESS,
    P_CLAIMED_MAC,
    P_DEFAULT_DROP,
    P_DELIVER,
    P_DENY,
    P_FABRIC_GUARD,
    P_FLOOD,
    P_INVALID,
    P_IP,
    P_LINK,
    P_LINK_LOGGED,
    P_LOG_OTHER,
    P_LOG_PORT,
    P_LOG_QUIET,
    P_MAC_VM_FALSE_ND,
    P_MAC_VM_IP,
    P_MAC_VM_NEIGHBOUR,
    P_ND,
    P_PAIR,
    P_PAIR_LOGGED,
    P_VM_FALSE_ND,
    P_VM_GUARD,
    P_VM_IP,
    P_VM_NEIGHBOUR,
    P_VM_TAGGED,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    REASON_BY_CODE,
    REASON_BY_NAME,
    REASONS,
    RELATED,
    SHARED_METER,
    TABLE_CLASSIFY,
    TABLE_DELIVER,
    TABLE_LOG,
    TABLE_POLICY,
    VLAN_TAGGED,
    Attachment,
    Conjunction,
    Ct,
    CtState,
    Flow,
    Goto,
    Log,
    Match,
    Meter,
    Output,
    WriteMetadata,
    base_flows,
    compile_switch,
    cookie,
    cookie_kind,
    dedupe,
    deny,
    drop_reason,
    is_clause,
    link_local,
    link_mark,
    network_port_flows,
    opens_connections,
    pair_flows,
    pair_unit_flows,
    render,
    vm_port_flows,
)
from ryu_ctfw.fields import CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_TRK, FRAG
from ryu_ctfw.policy import Pair, PairRequest, Policy, Vm

MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"
MAC_A = "52:54:00:00:00:0a"
MAC_B = "52:54:00:00:00:0b"
MAC_C = "52:54:00:00:00:0c"
LL1 = "fe80::5054:ff:fe60:84ff"  # link_local(MAC1)
LL2 = "fe80::5054:ff:fe99:9078"  # link_local(MAC2)
LL_A = "fe80::5054:ff:fe00:a"  # link_local(MAC_A)

# Drops that are events, as ovs-ofctl prints them: the reason's code to the metadata, then
# the log table (compiler.REASONS).
TAGGED = "actions=write_metadata:0x3,goto_table:3"
FORGED_SOURCE = "actions=write_metadata:0x4,goto_table:3"
FORGED_ND = "actions=write_metadata:0x5,goto_table:3"
CLAIMED_ADDRESS = "actions=write_metadata:0x6,goto_table:3"
CLAIMED_MAC = "actions=write_metadata:0x7,goto_table:3"

SEED_ATTACHED = {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2)}

# The seed (vm1 = id 1 on ofport 2, vm2 = id 2 on ofport 3, pair vm1 -> vm2 any) in zone 1,
# as render() prints it: by table, then priority high to low; equal priorities in compile
# order (base, VMs by name, pairs by id).
#
# A drop that is an event writes its reason's code to the metadata and goes to table 3
# (write_metadata:0x<code>,goto_table:3): tagged 3, forged-source 4, forged-nd 5,
# claimed-address 6, claimed-mac 7, no-pair 1, invalid 2, revoked 9.
#
# Table 0, per VM port: tagged frames dropped (150: an access port); ARP only with its own
# IPv4 and MAC, NA only for its link-local address (it was given no IPv6) with its MAC or no
# link-layer option, NS only from its link-local address with its MAC or none, or from ::
# without one (DAD), all to the delivery table (140); any other NS / NA from the port dropped
# (135); IPv4 only from its IP and IPv6 only from its link-local address, to conntrack (130).
# Then the claims: nobody else sends from, ARPs or advertises its addresses (125). Anything
# else from a VM port is dropped (110); nobody else sends from or advertises its MAC (108).
# The generic lines: ND from other ports to the delivery table (105), IPv4 / IPv6 from
# other ports to conntrack (100), ARP to the delivery table (10), the rest dropped, silently
# (1: no IP, ARP or ND, no event).
# Table 1: invalid dropped first (200); the pair's lines: vm1's packets in the original
# direction to vm2's MAC, per family, new and established (not related) in two lines (the
# first counts the connections), and its later fragments, committed with the link's mark
# 1 << 16 | 2 and sent to vm2's port; replies with that mark from vm2's port to vm1's MAC,
# and related ICMP both ways, to the other port. Established original packets no pair took
# are marked blocked and dropped as revoked (10); the rest is dropped: no pair (0).
# Table 2: ARP and ND for a VM's MAC to its port; multicast and broadcast flooded; the rest
# dropped, silently.
# Table 3: link-local multicast every host sends on its own (IPv6 ff02::/16, IPv4
# 224.0.0.0/24) is dropped without an event (200); the events of each VM's port go to the
# controller through the port's meter (id = its ofport), the others' through the shared
# meter 0xff00.
SEED_FLOWS = """\
table=0, priority=150,in_port=2,vlan_tci=0x1000/0x1000 actions=write_metadata:0x3,goto_table:3
table=0, priority=150,in_port=3,vlan_tci=0x1000/0x1000 actions=write_metadata:0x3,goto_table:3
table=0, priority=140,arp,in_port=2,dl_src=52:54:00:60:84:ff,arp_spa=198.18.0.1,arp_sha=52:54:00:60:84:ff actions=goto_table:2
table=0, priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff,nd_tll=52:54:00:60:84:ff actions=goto_table:2
table=0, priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff,nd_tll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff,icmp_type=135,nd_sll=52:54:00:60:84:ff actions=goto_table:2
table=0, priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=140,icmp6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=::,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=140,arp,in_port=3,dl_src=52:54:00:99:90:78,arp_spa=198.18.0.2,arp_sha=52:54:00:99:90:78 actions=goto_table:2
table=0, priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078,nd_tll=52:54:00:99:90:78 actions=goto_table:2
table=0, priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078,nd_tll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078,icmp_type=135,nd_sll=52:54:00:99:90:78 actions=goto_table:2
table=0, priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=140,icmp6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=::,icmp_type=135,nd_sll=00:00:00:00:00:00 actions=goto_table:2
table=0, priority=135,icmp6,in_port=2,icmp_type=135 actions=write_metadata:0x5,goto_table:3
table=0, priority=135,icmp6,in_port=2,icmp_type=136 actions=write_metadata:0x5,goto_table:3
table=0, priority=135,icmp6,in_port=3,icmp_type=135 actions=write_metadata:0x5,goto_table:3
table=0, priority=135,icmp6,in_port=3,icmp_type=136 actions=write_metadata:0x5,goto_table:3
table=0, priority=130,ip,in_port=2,dl_src=52:54:00:60:84:ff,nw_src=198.18.0.1 actions=ct(table=1,zone=1)
table=0, priority=130,ipv6,in_port=2,dl_src=52:54:00:60:84:ff,ipv6_src=fe80::5054:ff:fe60:84ff actions=ct(table=1,zone=1)
table=0, priority=130,ip,in_port=3,dl_src=52:54:00:99:90:78,nw_src=198.18.0.2 actions=ct(table=1,zone=1)
table=0, priority=130,ipv6,in_port=3,dl_src=52:54:00:99:90:78,ipv6_src=fe80::5054:ff:fe99:9078 actions=ct(table=1,zone=1)
table=0, priority=125,ip,nw_src=198.18.0.1 actions=write_metadata:0x6,goto_table:3
table=0, priority=125,arp,arp_spa=198.18.0.1 actions=write_metadata:0x6,goto_table:3
table=0, priority=125,ipv6,ipv6_src=fe80::5054:ff:fe60:84ff actions=write_metadata:0x6,goto_table:3
table=0, priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe60:84ff actions=write_metadata:0x6,goto_table:3
table=0, priority=125,ip,nw_src=198.18.0.2 actions=write_metadata:0x6,goto_table:3
table=0, priority=125,arp,arp_spa=198.18.0.2 actions=write_metadata:0x6,goto_table:3
table=0, priority=125,ipv6,ipv6_src=fe80::5054:ff:fe99:9078 actions=write_metadata:0x6,goto_table:3
table=0, priority=125,icmp6,icmp_type=136,nd_target=fe80::5054:ff:fe99:9078 actions=write_metadata:0x6,goto_table:3
table=0, priority=110,in_port=2 actions=write_metadata:0x4,goto_table:3
table=0, priority=110,in_port=3 actions=write_metadata:0x4,goto_table:3
table=0, priority=108,dl_src=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3
table=0, priority=108,arp,arp_sha=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3
table=0, priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3
table=0, priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:60:84:ff actions=write_metadata:0x7,goto_table:3
table=0, priority=108,dl_src=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3
table=0, priority=108,arp,arp_sha=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3
table=0, priority=108,icmp6,icmp_type=135,nd_sll=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3
table=0, priority=108,icmp6,icmp_type=136,nd_tll=52:54:00:99:90:78 actions=write_metadata:0x7,goto_table:3
table=0, priority=105,icmp6,icmp_type=133 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=134 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=135 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=136 actions=goto_table:2
table=0, priority=100,ip actions=ct(table=1,zone=1)
table=0, priority=100,ipv6 actions=ct(table=1,zone=1)
table=0, priority=10,arp actions=goto_table:2
table=0, priority=1 actions=drop
table=1, priority=200,ct_state=+inv+trk actions=write_metadata:0x2,goto_table:3
table=1, priority=100,ct_state=+new-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=+est-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=+new-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=+est-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=-rel-rpl+trk,ipv6,in_port=2,dl_dst=52:54:00:99:90:78,nw_frag=later actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3
table=1, priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2
table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=3,dl_dst=52:54:00:60:84:ff actions=output:2
table=1, priority=100,ct_state=+rel+trk,ct_mark=0x10002,in_port=2,dl_dst=52:54:00:99:90:78 actions=output:3
table=1, priority=10,ct_state=+est-rpl+trk,ip actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3
table=1, priority=10,ct_state=+est-rpl+trk,ipv6 actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3
table=1, priority=0 actions=write_metadata:0x1,goto_table:3
table=2, priority=100,dl_dst=52:54:00:60:84:ff actions=output:2
table=2, priority=100,dl_dst=52:54:00:99:90:78 actions=output:3
table=2, priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD
table=2, priority=0 actions=drop
table=3, priority=200,ipv6,metadata=0x1,ipv6_dst=ff02::/16 actions=drop
table=3, priority=200,ipv6,metadata=0x2,ipv6_dst=ff02::/16 actions=drop
table=3, priority=200,ip,metadata=0x1,nw_dst=224.0.0.0/24 actions=drop
table=3, priority=200,ip,metadata=0x2,nw_dst=224.0.0.0/24 actions=drop
table=3, priority=100,in_port=2 actions=meter:2,CONTROLLER:128
table=3, priority=100,in_port=3 actions=meter:3,CONTROLLER:128
table=3, priority=0 actions=meter:65280,CONTROLLER:128"""  # noqa: E501

BASE_FLOWS_ZONE_1 = """\
table=0, priority=105,icmp6,icmp_type=133 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=134 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=135 actions=goto_table:2
table=0, priority=105,icmp6,icmp_type=136 actions=goto_table:2
table=0, priority=100,ip actions=ct(table=1,zone=1)
table=0, priority=100,ipv6 actions=ct(table=1,zone=1)
table=0, priority=10,arp actions=goto_table:2
table=0, priority=1 actions=drop
table=1, priority=200,ct_state=+inv+trk actions=write_metadata:0x2,goto_table:3
table=1, priority=10,ct_state=+est-rpl+trk,ip actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3
table=1, priority=10,ct_state=+est-rpl+trk,ipv6 actions=ct(commit,zone=1,exec(set_field:0xffffffff->ct_mark)),write_metadata:0x9,goto_table:3
table=1, priority=0 actions=write_metadata:0x1,goto_table:3
table=2, priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD
table=2, priority=0 actions=drop
table=3, priority=200,ipv6,metadata=0x1,ipv6_dst=ff02::/16 actions=drop
table=3, priority=200,ipv6,metadata=0x2,ipv6_dst=ff02::/16 actions=drop
table=3, priority=200,ip,metadata=0x1,nw_dst=224.0.0.0/24 actions=drop
table=3, priority=200,ip,metadata=0x2,nw_dst=224.0.0.0/24 actions=drop
table=3, priority=0 actions=meter:65280,CONTROLLER:128"""  # noqa: E501


def cookie_ident(value: int) -> int:
    return value & ((1 << 40) - 1)


def has(state: CtState | None, flag: int) -> bool:
    return state is not None and bool(state.mask & flag) and bool(state.value & flag)


def service_flows(flows: list[Flow]) -> list[Flow]:
    """The pairs' service lines: what opens (+new) and keeps open (+est) a connection, two
    lines per service, fragments apart."""
    return [f for f in flows if f.match.ct_state in OPENING and f.match.ip_frag is None]


def opening_flows(flows: list[Flow]) -> list[Flow]:
    """The service lines that open a connection (+new): one per service."""
    return [f for f in service_flows(flows) if f.match.ct_state == ORIGINAL_NEW]


def holds(flow: Flow, action: object) -> bool:
    """Whether the flow has this very action. Not `in`: actions are NamedTuples, and ones of
    different kinds with the same values compare equal (WriteMetadata(2) == Goto(2),
    Log(3) == Output(3))."""
    return any(type(a) is type(action) and a == action for a in flow.actions)


def passes(flow: Flow) -> bool:
    """Whether a line lets its packet on: out of a port (or flooded), through conntrack to
    table 1, or to the delivery table. A drop that is an event goes to table 3, which only
    tells the controller; a learning line only shows the controller the packet."""
    for a in flow.actions:
        if isinstance(a, Output) and a != CONTROLLER:
            return True
        if isinstance(a, Goto) and a.table != TABLE_LOG:
            return True
        if isinstance(a, Ct) and a.table is not None:
            return True
    return False


def assert_drops(flow: Flow, reason: str | None) -> None:
    """The line lets nothing on; a drop that is an event (`reason`) ends by writing its
    reason's code and going to the log table; a silent one has no action at all."""
    assert not passes(flow), flow.text()
    assert drop_reason(flow) == reason, flow.text()
    if reason is None:
        assert flow.actions == (), flow.text()
    else:
        assert flow.actions[-2:] == deny(reason), flow.text()


def reply_flows(flows: list[Flow]) -> list[Flow]:
    return [f for f in flows if f.match.ct_state == EST_REPLY]


def in_ports(flows: list[Flow]) -> list[int]:
    """The in_port of each flow, sorted (every flow here has one)."""
    ports = [f.match.in_port for f in flows]
    assert None not in ports
    return sorted(p for p in ports if p is not None)


def table(flows: list[Flow], number: int) -> list[Flow]:
    return [f for f in flows if f.table == number]


def abc_policy(*pairs: tuple[str, str]) -> Policy:
    """A, B, C: ids 1, 2, 3, bound to their MACs alone."""
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


# --- a packet through table 1 ---------------------------------------------------------------


def ports_match(want: tuple[int, int] | None, port: int | None) -> bool:
    return want is None or (port is not None and port & want[1] == want[0])


def hit(m: Match, pkt: dict[str, object]) -> bool:
    """Whether a table-1 match takes this packet (only the fields table 1 uses)."""
    state = pkt["ct_state"]
    assert isinstance(state, int)
    if m.ct_state is not None and state & m.ct_state.mask != m.ct_state.value:
        return False
    if m.ct_mark is not None and pkt.get("ct_mark", 0) != m.ct_mark:
        return False
    for attr in ("in_port", "eth_dst", "eth_type", "ip_proto", "icmp_type", "ip_frag"):
        want = getattr(m, attr)
        if want is not None and pkt.get(attr) != want:
            return False
    return ports_match(m.tp_dst, pkt.get("tp_dst")) and ports_match(m.tp_src, pkt.get("tp_src"))  # type: ignore[arg-type]


def policy_verdict(flows: list[Flow], **pkt: object) -> Flow:
    """The table-1 flow a packet meets: the highest priority that matches (ambiguity at one
    priority would be a bug: OpenFlow leaves it undefined). A +new packet meets a pair's
    opening line, an established one its +est twin."""
    candidates = [f for f in table(flows, TABLE_POLICY) if hit(f.match, pkt)]
    top = max(f.priority for f in candidates)
    best = [f for f in candidates if f.priority == top]
    assert len({f.actions for f in best}) == 1, [f.text() for f in best]
    return best[0]


NEW_TRK = CT_NEW | CT_TRK
EST_TRK = CT_EST | CT_TRK
REPLY_TRK = CT_EST | CT_RPL | CT_TRK


# --- the seed ------------------------------------------------------------------------------


def test_seed_policy_renders_as_the_seed_flows(seed_policy: Policy) -> None:
    assert render(compile_switch(seed_policy, SEED_ATTACHED, 1)) == SEED_FLOWS


def test_seed_flows_do_not_depend_on_the_attachment_order(seed_policy: Policy) -> None:
    reversed_order = dict(reversed(SEED_ATTACHED.items()))
    flows = compile_switch(seed_policy, reversed_order, 1)
    assert set(flows) == set(compile_switch(seed_policy, SEED_ATTACHED, 1))
    assert render(flows) == SEED_FLOWS


def test_the_seed_in_another_zone_differs_only_in_the_zone(seed_policy: Policy) -> None:
    text = render(compile_switch(seed_policy, SEED_ATTACHED, 4242))
    assert "zone=1)" not in text and "zone=1," not in text
    assert text == SEED_FLOWS.replace("zone=1)", "zone=4242)").replace("zone=1,", "zone=4242,")


def test_nothing_uses_the_bridges_mac_learning(seed_policy: Policy) -> None:
    """Every output names a port, or floods multicast, or goes to the controller."""
    abc = abc_policy(("A", "B"))
    abc.put_vm(Vm("D", "tapD"))
    flows = compile_switch(seed_policy, SEED_ATTACHED, 1) + compile_switch(
        abc, {**ABC_ATTACHED, "D": Attachment(9, None)}, 1
    )
    assert "NORMAL" not in render(flows)
    outputs = {a.port for f in flows for a in f.actions if isinstance(a, Output)}
    assert outputs == {2, 3, 5, 6, 7, "FLOOD", "CONTROLLER"}
    # The controller hears a packet only through a meter: D's learning lines (its port's),
    # and table 3's lines (a port's own meter, or the shared one).
    to_controller = [f for f in flows if CONTROLLER in f.actions]
    assert [f.actions for f in table(to_controller, TABLE_CLASSIFY)] == [(Meter(9), CONTROLLER)] * 2
    assert {f.table for f in to_controller} == {TABLE_CLASSIFY, TABLE_LOG}
    for f in to_controller:
        assert f.actions == (Meter(f.match.in_port or SHARED_METER), CONTROLLER), f.text()
    flood = [f for f in flows if FLOOD in f.actions]
    assert {(f.table, f.match) for f in flood} == {(TABLE_DELIVER, Match(eth_dst=MULTICAST))}


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
    assert ORIGINAL.text() == "-rel-rpl+trk"
    assert EST_ORIGINAL.text() == "+est-rpl+trk"
    assert EST_REPLY.text() == "+est+rpl+trk"
    assert INVALID.text() == "+inv+trk"
    assert RELATED.text() == "+rel+trk"
    assert CtState.of(CT_INV, CT_TRK) == INVALID
    # ovs-ofctl's order: commit, table, zone, then the nested actions.
    assert Ct(commit=True, zone=5, table=1).text() == "ct(commit,table=1,zone=5)"
    assert Ct(table=1, zone=7).text() == "ct(table=1,zone=7)"
    assert Ct(True, None, 9, 0x10002).text() == "ct(commit,zone=9,exec(set_field:0x10002->ct_mark))"
    assert Ct(True, None, 9, BLOCKED).text() == (
        "ct(commit,zone=9,exec(set_field:0xffffffff->ct_mark))"
    )
    assert Ct().text() == "ct()"
    assert FLOOD.text() == "FLOOD"
    assert Output("CONTROLLER", 64).text() == "CONTROLLER:64"
    assert CONTROLLER.text() == "CONTROLLER:128"
    assert Output(4).text() == "output:4"
    assert Goto(2).text() == "goto_table:2"
    assert Meter(5).text() == "meter:5"
    assert WriteMetadata(9).text() == "write_metadata:0x9"
    assert Log(7).text() == "controller(max_len=128,meter_id=7)"
    assert Log(65280, 64).text() == "controller(max_len=64,meter_id=65280)"
    assert ORIGINAL_NEW.text() == "+new-rel-rpl+trk"
    assert ORIGINAL_EST.text() == "+est-rel-rpl+trk"
    deny_tagged = Flow(0, 150, Match(in_port=2), deny("tagged"), cookie(KIND_VM, 2))
    assert deny_tagged.actions_text() == "write_metadata:0x3,goto_table:3"
    flow = Flow(0, 1, Match(in_port=5), (Meter(5), CONTROLLER), cookie(KIND_LEARN, 5))
    assert flow.actions_text() == "meter:5,CONTROLLER:128"
    assert Flow(0, 1, Match(), (), 0).text() == "table=0, priority=1 actions=drop"


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
        ct_state=ORIGINAL,
        ct_mark=0x10002,
    )
    assert m.text() == (
        f"ct_state=-rel-rpl+trk,ct_mark=0x10002,tcp6,in_port=2,dl_src={MAC2},dl_dst={MAC1},"
        "ipv6_src=fd00::1,tp_src=22,tp_dst=0x1f40/0xffc0"
    )
    assert m.fields() == {
        "ct_state": "-rel-rpl+trk",
        "ct_mark": "0x10002",
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
    na = Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=136, nd_target=LL1,
               nd_tll=NO_MAC)  # fmt: skip
    assert na.text() == f"icmp6,icmp_type=136,nd_target={LL1},nd_tll=00:00:00:00:00:00"
    ns = Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=135, nd_sll=MAC1)
    assert ns.text() == f"icmp6,icmp_type=135,nd_sll={MAC1}"
    assert Match(eth_type=ETH_TYPE_IP, ip_proto=PROTO_ICMP, icmp_type=8).text() == (
        "icmp,icmp_type=8"
    )
    assert Match(eth_type=ETH_TYPE_IP, ipv4_src="10.0.0.1").text() == "ip,nw_src=10.0.0.1"
    frag = Match(eth_type=ETH_TYPE_IPV6, in_port=3, ip_frag="later")
    assert frag.text() == "ipv6,in_port=3,nw_frag=later"
    assert Match(in_port=2, vlan_tci=VLAN_TAGGED).text() == "in_port=2,vlan_tci=0x1000/0x1000"
    assert Match(vlan_tci=(0x1005, 0xFFFF)).text() == "vlan_tci=0x1005"
    assert Match(eth_dst=MULTICAST).text() == "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
    assert Match(eth_dst=MULTICAST).fields() == {"dl_dst": MULTICAST}
    assert Match(eth_type=0x88CC).text() == "dl_type=0x88cc"
    assert Match().text() == ""
    assert Match().fields() == {}


def test_the_fragment_names_are_ovs_ofctls() -> None:
    assert FRAG["later"] == (3, 3)  # OVS's "is a fragment" and "not the first" bits
    assert set(FRAG) == {"no", "yes", "first", "later", "not_later"}


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
    cts = [(f.table, a) for f in base_flows(65535) for a in f.actions if isinstance(a, Ct)]
    assert cts == [
        (TABLE_CLASSIFY, Ct(table=TABLE_POLICY, zone=65535)),  # IPv4 and IPv6 to conntrack
        (TABLE_CLASSIFY, Ct(table=TABLE_POLICY, zone=65535)),
        (TABLE_POLICY, Ct(commit=True, zone=65535, mark=BLOCKED)),  # and the block lines
        (TABLE_POLICY, Ct(commit=True, zone=65535, mark=BLOCKED)),
    ]


def test_the_block_lines_mark_established_original_packets_no_pair_took() -> None:
    block = [f for f in table(list(base_flows(1)), TABLE_POLICY) if f.priority == P_BLOCK]
    assert [(f.table, f.match.eth_type, f.match.ct_state) for f in block] == [
        (TABLE_POLICY, ETH_TYPE_IP, EST_ORIGINAL),
        (TABLE_POLICY, ETH_TYPE_IPV6, EST_ORIGINAL),
    ]
    # Marked blocked, and dropped (no output) as an event: revoked.
    assert all(f.actions == (Ct(True, None, 1, BLOCKED), *deny("revoked")) for f in block)
    for f in block:
        assert_drops(f, "revoked")
    # No base line lets a related packet through any more: only a link's lines do.
    assert not [f for f in base_flows(1) if f.match.ct_state == RELATED]


def test_the_delivery_table_floods_multicast_and_drops_the_rest() -> None:
    deliver = table(list(base_flows(1)), TABLE_DELIVER)
    assert [(f.priority, f.match, f.actions) for f in deliver] == [
        (P_FLOOD, Match(eth_dst=MULTICAST), (FLOOD,)),
        (P_DENY, Match(), ()),
    ]
    assert_drops(deliver[-1], None)  # ARP / ND for nobody: no event


def test_arp_and_nd_from_other_ports_go_to_the_delivery_table() -> None:
    flows = list(base_flows(1))
    to_delivery = [f for f in flows if f.actions == (Goto(TABLE_DELIVER),)]
    assert [(f.priority, f.match.eth_type, f.match.icmp_type) for f in to_delivery] == [
        (P_ND, ETH_TYPE_IPV6, 133), (P_ND, ETH_TYPE_IPV6, 134),
        (P_ND, ETH_TYPE_IPV6, 135), (P_ND, ETH_TYPE_IPV6, 136),
        (P_ARP, ETH_TYPE_ARP, None),
    ]  # fmt: skip
    assert [f.priority for f in flows if f.match == Match() and f.table == 0] == [P_DEFAULT_DROP]
    # What is no IP, ARP or ND is dropped there without an event.
    (default,) = [f for f in table(flows, TABLE_CLASSIFY) if f.priority == P_DEFAULT_DROP]
    assert_drops(default, None)


def test_a_vm_registered_but_not_attached_changes_nothing(seed_policy: Policy) -> None:
    assert compile_switch(seed_policy, {}, 1) == list(base_flows(1))


# --- table 0: a VM's port ------------------------------------------------------------------


def test_a_vm_with_mac_and_ipv4_only() -> None:
    vm = Vm("vm1", "tap2", MAC1, ("198.18.0.1",), id=1)
    flows = vm_port_flows(vm, Attachment(2, MAC1), 3)
    own = f"in_port=2,dl_src={MAC1}"
    assert [f.text() for f in flows] == [
        # An access port: tagged frames never pass.
        f"table=0, priority=150,in_port=2,vlan_tci=0x1000/0x1000 {TAGGED}",
        # ARP only with its own IPv4 and MAC.
        f"table=0, priority=140,arp,{own},arp_spa=198.18.0.1,arp_sha={MAC1} actions=goto_table:2",
        # NA only for its link-local address (it was given no IPv6), at its MAC or without
        # a link-layer option.
        f"table=0, priority=140,icmp6,{own},icmp_type=136,nd_target={LL1},nd_tll={MAC1}"
        " actions=goto_table:2",
        f"table=0, priority=140,icmp6,{own},icmp_type=136,nd_target={LL1},nd_tll={NO_MAC}"
        " actions=goto_table:2",
        # NS only from its own addresses, saying its MAC or nothing; from :: (DAD) nothing.
        f"table=0, priority=140,icmp6,{own},ipv6_src={LL1},icmp_type=135,nd_sll={MAC1}"
        " actions=goto_table:2",
        f"table=0, priority=140,icmp6,{own},ipv6_src={LL1},icmp_type=135,nd_sll={NO_MAC}"
        " actions=goto_table:2",
        f"table=0, priority=140,icmp6,{own},ipv6_src=::,icmp_type=135,nd_sll={NO_MAC}"
        " actions=goto_table:2",
        # Any other ND from the port claims what it does not own.
        f"table=0, priority=135,icmp6,in_port=2,icmp_type=135 {FORGED_ND}",
        f"table=0, priority=135,icmp6,in_port=2,icmp_type=136 {FORGED_ND}",
        f"table=0, priority=130,ip,{own},nw_src=198.18.0.1 actions=ct(table=1,zone=3)",
        # IPv6 only from the link-local address.
        f"table=0, priority=130,ipv6,{own},ipv6_src={LL1} actions=ct(table=1,zone=3)",
        # Its addresses, sent or claimed from anywhere else.
        f"table=0, priority=125,ip,nw_src=198.18.0.1 {CLAIMED_ADDRESS}",
        f"table=0, priority=125,arp,arp_spa=198.18.0.1 {CLAIMED_ADDRESS}",
        f"table=0, priority=125,ipv6,ipv6_src={LL1} {CLAIMED_ADDRESS}",
        f"table=0, priority=125,icmp6,icmp_type=136,nd_target={LL1} {CLAIMED_ADDRESS}",
        f"table=0, priority=110,in_port=2 {FORGED_SOURCE}",
        # Its MAC, sent or claimed from anywhere else.
        f"table=0, priority=108,dl_src={MAC1} {CLAIMED_MAC}",
        f"table=0, priority=108,arp,arp_sha={MAC1} {CLAIMED_MAC}",
        f"table=0, priority=108,icmp6,icmp_type=135,nd_sll={MAC1} {CLAIMED_MAC}",
        f"table=0, priority=108,icmp6,icmp_type=136,nd_tll={MAC1} {CLAIMED_MAC}",
        # ARP and ND for its MAC, to its port.
        f"table=2, priority=100,dl_dst={MAC1} actions=output:2",
        # Its port's events, to the controller through the port's meter.
        "table=3, priority=100,in_port=2 actions=meter:2,CONTROLLER:128",
    ]
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie)) for f in flows} == {(KIND_VM, 2)}


def test_a_dual_stack_vm() -> None:
    vm = Vm("d", "tapD", MAC_A, ("10.0.0.5", "fd00::5", "10.0.1.5", "2001:db8::5"), id=4)
    flows = vm_port_flows(vm, Attachment(9, MAC_A), 2)
    own = f"in_port=9,dl_src={MAC_A}"
    v6 = (LL_A, "fd00::5", "2001:db8::5")
    goto = "actions=goto_table:2"
    assert [f.text() for f in flows if f.priority == P_VM_NEIGHBOUR] == [
        f"table=0, priority=140,arp,{own},arp_spa=10.0.0.5,arp_sha={MAC_A} {goto}",
        f"table=0, priority=140,arp,{own},arp_spa=10.0.1.5,arp_sha={MAC_A} {goto}",
        *(f"table=0, priority=140,icmp6,{own},icmp_type=136,nd_target={ip},nd_tll={ll} {goto}"
          for ip in v6 for ll in (MAC_A, NO_MAC)),
        *(f"table=0, priority=140,icmp6,{own},ipv6_src={ip},icmp_type=135,nd_sll={ll} {goto}"
          for ip in v6 for ll in (MAC_A, NO_MAC)),
        f"table=0, priority=140,icmp6,{own},ipv6_src=::,icmp_type=135,nd_sll={NO_MAC} {goto}",
    ]  # fmt: skip
    assert [f.text() for f in flows if f.priority == P_VM_IP] == [
        f"table=0, priority=130,ip,{own},nw_src=10.0.0.5 actions=ct(table=1,zone=2)",
        f"table=0, priority=130,ip,{own},nw_src=10.0.1.5 actions=ct(table=1,zone=2)",
        *(f"table=0, priority=130,ipv6,{own},ipv6_src={ip} actions=ct(table=1,zone=2)"
          for ip in v6),
    ]  # fmt: skip
    assert [f.match.text() for f in flows if f.priority == P_CLAIMED_ADDRESS] == [
        "ip,nw_src=10.0.0.5",
        "ip,nw_src=10.0.1.5",
        "arp,arp_spa=10.0.0.5",
        "arp,arp_spa=10.0.1.5",
        *(f"ipv6,ipv6_src={ip}" for ip in v6),
        *(f"icmp6,icmp_type=136,nd_target={ip}" for ip in v6),
    ]


def test_an_ipv6_only_vm_has_no_arp_and_no_ipv4_line() -> None:
    flows = vm_port_flows(Vm("d", "tapD", MAC_A, ("fd00::5",)), Attachment(9, MAC_A), 2)
    assert not [f for f in flows if f.match.eth_type in (ETH_TYPE_ARP, ETH_TYPE_IP)
                and f.match.arp_sha is None and f.match.arp_spa is None]  # fmt: skip
    assert not [f for f in flows if f.match.eth_type == ETH_TYPE_IP]
    assert not [f for f in flows if f.match.arp_spa is not None]
    assert [f.match.ipv6_src for f in flows if f.priority == P_VM_IP] == [LL_A, "fd00::5"]


def test_a_vm_without_ips_is_bound_to_its_mac_only() -> None:
    flows = vm_port_flows(Vm("A", "tapA", MAC_A, id=1), Attachment(5, MAC_A), 1)
    own = f"in_port=5,dl_src={MAC_A}"
    goto = "actions=goto_table:2"
    assert [f.text() for f in flows] == [
        f"table=0, priority=150,in_port=5,vlan_tci=0x1000/0x1000 {TAGGED}",
        # ARP and ND about any address no other VM registered, but only with its own MAC.
        f"table=0, priority=122,arp,{own},arp_sha={MAC_A} {goto}",
        f"table=0, priority=122,icmp6,{own},icmp_type=136,nd_tll={MAC_A} {goto}",
        f"table=0, priority=122,icmp6,{own},icmp_type=136,nd_tll={NO_MAC} {goto}",
        f"table=0, priority=122,icmp6,{own},icmp_type=135,nd_sll={MAC_A} {goto}",
        f"table=0, priority=122,icmp6,{own},icmp_type=135,nd_sll={NO_MAC} {goto}",
        f"table=0, priority=121,icmp6,in_port=5,icmp_type=135 {FORGED_ND}",
        f"table=0, priority=121,icmp6,in_port=5,icmp_type=136 {FORGED_ND}",
        f"table=0, priority=120,ip,{own} actions=ct(table=1,zone=1)",
        f"table=0, priority=120,ipv6,{own} actions=ct(table=1,zone=1)",
        f"table=0, priority=110,in_port=5 {FORGED_SOURCE}",
        # No addresses to claim, but its MAC is its own.
        f"table=0, priority=108,dl_src={MAC_A} {CLAIMED_MAC}",
        f"table=0, priority=108,arp,arp_sha={MAC_A} {CLAIMED_MAC}",
        f"table=0, priority=108,icmp6,icmp_type=135,nd_sll={MAC_A} {CLAIMED_MAC}",
        f"table=0, priority=108,icmp6,icmp_type=136,nd_tll={MAC_A} {CLAIMED_MAC}",
        f"table=2, priority=100,dl_dst={MAC_A} actions=output:5",
        "table=3, priority=100,in_port=5 actions=meter:5,CONTROLLER:128",
    ]


def test_a_learned_mac_binds_the_port_like_a_configured_one() -> None:
    learned = vm_port_flows(Vm("B", "tapB", None, ("10.0.0.2",)), Attachment(6, MAC_B), 1)
    configured = vm_port_flows(Vm("B", "tapB", MAC_B, ("10.0.0.2",)), Attachment(6, MAC_B), 1)
    assert learned == configured
    assert not [f for f in learned if cookie_kind(f.cookie) == KIND_LEARN]


def test_every_vm_port_drops_tagged_frames_first() -> None:
    for vm, at in [
        (Vm("a", "p", MAC_A, ("10.0.0.1",)), Attachment(5, MAC_A)),
        (Vm("a", "p", MAC_A), Attachment(5, MAC_A)),
        (Vm("a", "p", None, ("10.0.0.1",)), Attachment(5, None)),
        (Vm("a", "p"), Attachment(5, None)),
    ]:
        flows = vm_port_flows(vm, at, 1)
        top = max(flows, key=lambda f: (f.table == TABLE_CLASSIFY, f.priority))
        assert top.priority == P_VM_TAGGED
        assert top.match == Match(in_port=5, vlan_tci=VLAN_TAGGED)
        assert_drops(top, "tagged")
        guard = [f for f in table(list(flows), TABLE_CLASSIFY) if f.match == Match(in_port=5)]
        assert [f.priority for f in guard] == [P_VM_GUARD]
        assert_drops(guard[0], "forged-source")


def test_table_0_priorities_keep_the_design_order() -> None:
    assert P_VM_TAGGED > P_VM_NEIGHBOUR > P_VM_FALSE_ND > P_VM_IP > P_CLAIMED_ADDRESS
    assert P_CLAIMED_ADDRESS > P_MAC_VM_NEIGHBOUR > P_MAC_VM_FALSE_ND > P_MAC_VM_IP
    assert P_MAC_VM_IP > P_VM_GUARD > P_CLAIMED_MAC > P_ND > P_IP > P_ARP > P_DEFAULT_DROP
    assert P_INVALID > P_PAIR > P_BLOCK > P_DENY
    assert P_DELIVER > P_FLOOD > P_DENY


def test_vm_port_lines_pass_only_from_the_vms_mac(seed_policy: Policy) -> None:
    flows = compile_switch(seed_policy, SEED_ATTACHED, 1)
    vm_lines = table([f for f in flows if cookie_kind(f.cookie) == KIND_VM], TABLE_CLASSIFY)
    for f in vm_lines:
        if f.match.in_port is not None:
            # A line about the VM's port: it lets a packet on only from the VM's MAC.
            assert f.match.in_port == cookie_ident(f.cookie)
            if passes(f):
                assert f.match.eth_src == {2: MAC1, 3: MAC2}[f.match.in_port]
            else:
                reason = {P_VM_TAGGED: "tagged", P_VM_FALSE_ND: "forged-nd",
                          P_VM_GUARD: "forged-source"}[f.priority]  # fmt: skip
                assert_drops(f, reason)
        else:
            # A claim: about any other port, and always a drop.
            reason = {P_CLAIMED_ADDRESS: "claimed-address", P_CLAIMED_MAC: "claimed-mac"}
            assert_drops(f, reason[f.priority])


# --- claims ---------------------------------------------------------------------------------


def test_a_vms_addresses_are_claimed_from_every_other_port() -> None:
    vm = Vm("v", "p", MAC_A, ("10.0.0.5", "fd00::5"))
    claims = [f for f in vm_port_flows(vm, Attachment(9, MAC_A), 1)
              if f.priority == P_CLAIMED_ADDRESS]  # fmt: skip
    assert [f.match for f in claims] == [
        Match(eth_type=ETH_TYPE_IP, ipv4_src="10.0.0.5"),
        Match(eth_type=ETH_TYPE_ARP, arp_spa="10.0.0.5"),
        Match(eth_type=ETH_TYPE_IPV6, ipv6_src=LL_A),  # its link-local address too
        Match(eth_type=ETH_TYPE_IPV6, ipv6_src="fd00::5"),
        Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=136, nd_target=LL_A),
        Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=136, nd_target="fd00::5"),
    ]
    assert all(f.match.in_port is None for f in claims)
    for f in claims:
        assert_drops(f, "claimed-address")


def test_a_learning_vms_addresses_are_claimed_but_not_a_link_local_one() -> None:
    vm = Vm("v", "p", None, ("10.0.0.5", "fd00::5"))
    claims = [f.match.text() for f in vm_port_flows(vm, Attachment(9, None), 1)
              if f.priority == P_CLAIMED_ADDRESS]  # fmt: skip
    assert claims == [
        "ip,nw_src=10.0.0.5",
        "arp,arp_spa=10.0.0.5",
        "ipv6,ipv6_src=fd00::5",
        "icmp6,icmp_type=136,nd_target=fd00::5",
    ]


def test_a_mac_only_vm_claims_no_address_and_cannot_use_a_registered_one() -> None:
    policy = abc_policy()
    policy.put_vm(Vm("D", "tapD", "52:54:00:00:00:0d", ("10.0.0.4",)))
    attached = {"A": ABC_ATTACHED["A"], "D": Attachment(8, "52:54:00:00:00:0d")}
    flows = compile_switch(policy, attached, 1)
    a_lines = [f for f in flows if cookie_ident(f.cookie) == 5]
    assert not [f for f in a_lines if f.priority == P_CLAIMED_ADDRESS]
    # D's address claims sit above every line of A's that lets a packet on.
    d_claims = [f for f in flows if f.priority == P_CLAIMED_ADDRESS]
    assert {f.match.ipv4_src or f.match.arp_spa for f in d_claims if f.match.eth_type != 0x86DD} \
        == {"10.0.0.4"}  # fmt: skip
    assert min(f.priority for f in d_claims) > max(
        f.priority for f in table(a_lines, TABLE_CLASSIFY) if passes(f)
    )


def test_mac_claims_are_below_every_vm_ports_own_lines(seed_policy: Policy) -> None:
    flows = compile_switch(seed_policy, SEED_ATTACHED, 1)
    claims = [f for f in flows if f.priority == P_CLAIMED_MAC]
    assert [f.match for f in claims[:4]] == [
        Match(eth_src=MAC1),
        Match(eth_type=ETH_TYPE_ARP, arp_sha=MAC1),
        Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=135, nd_sll=MAC1),
        Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=136, nd_tll=MAC1),
    ]
    assert len(claims) == 8
    for f in claims:
        assert_drops(f, "claimed-mac")
    # Below the port guards (a VM's own port never reaches them) and above the generic
    # lines that would let the claim through from another port.
    assert P_VM_GUARD > P_CLAIMED_MAC > P_ND


def test_two_vms_with_one_address_share_a_claim_line() -> None:
    # The policy allows it (different bridges); on one switch the claim is made once.
    policy = Policy()
    policy.put_vm(Vm("x1", "tapX1", MAC_A, ("10.0.0.1",)))
    policy.put_vm(Vm("x2", "tapX2", MAC_B, ("10.0.0.1",)))
    flows = compile_switch(policy, {"x1": Attachment(4, MAC_A), "x2": Attachment(5, MAC_B)}, 1)
    claims = [f for f in flows if f.match == Match(eth_type=ETH_TYPE_IP, ipv4_src="10.0.0.1")]
    assert len(claims) == 1 and cookie_ident(claims[0].cookie) == 4


# --- learning a MAC -------------------------------------------------------------------------


def test_a_vm_with_no_mac_known_shows_its_arp_and_ns_to_the_controller_through_a_meter() -> None:
    flows = vm_port_flows(Vm("B", "tapB"), Attachment(6, None), 1)
    assert [f.text() for f in flows] == [
        f"table=0, priority=150,in_port=6,vlan_tci=0x1000/0x1000 {TAGGED}",
        "table=0, priority=122,arp,in_port=6 actions=meter:6,CONTROLLER:128",
        "table=0, priority=122,icmp6,in_port=6,icmp_type=135 actions=meter:6,CONTROLLER:128",
        f"table=0, priority=110,in_port=6 {FORGED_SOURCE}",
        # Its events go through the meter its learning lines use.
        "table=3, priority=100,in_port=6 actions=meter:6,CONTROLLER:128",
    ]
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie)) for f in flows} == {(KIND_LEARN, 6)}


def test_a_learning_vm_with_ips_shows_only_arp_and_ns_from_them() -> None:
    flows = vm_port_flows(Vm("B", "tapB", None, ("10.0.0.2", "fd00::2")), Attachment(6, None), 1)
    learn = [f for f in flows if CONTROLLER in f.actions and f.table == TABLE_CLASSIFY]
    assert [f.text() for f in learn] == [
        "table=0, priority=140,arp,in_port=6,arp_spa=10.0.0.2 actions=meter:6,CONTROLLER:128",
        "table=0, priority=140,icmp6,in_port=6,ipv6_src=fd00::2,icmp_type=135"
        " actions=meter:6,CONTROLLER:128",
        "table=0, priority=140,icmp6,in_port=6,ipv6_src=::,icmp_type=135"
        " actions=meter:6,CONTROLLER:128",
    ]
    # Nothing passes meanwhile: no conntrack, no delivery (to the table or to its port);
    # the rest of table 0 drops as events, which go to the port's meter as well.
    assert all(f.actions == (Meter(6), CONTROLLER) for f in learn)
    assert not [f for f in flows if passes(f)]
    assert not table(list(flows), TABLE_DELIVER)
    for f in table(list(flows), TABLE_CLASSIFY):
        assert f in learn or drop_reason(f) is not None, f.text()
    assert [f.actions for f in table(list(flows), TABLE_LOG)] == [(Meter(6), CONTROLLER)]
    assert {cookie_kind(f.cookie) for f in flows} == {KIND_LEARN}


@pytest.mark.parametrize("ofport", [1, 6, 65000])
def test_the_meter_of_a_learning_port_is_its_ofport(ofport: int) -> None:
    flows = vm_port_flows(Vm("B", "tapB"), Attachment(ofport, None), 1)
    meters = {a for f in flows for a in f.actions if isinstance(a, Meter)}
    assert meters == {Meter(ofport)}


def test_learning_lines_come_before_the_generic_arp_and_nd() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB"))
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, None)}, 1)
    learn = [f for f in table(flows, TABLE_CLASSIFY) if CONTROLLER in f.actions]
    assert len(learn) == 2
    assert min(f.priority for f in learn) > P_VM_GUARD > P_ND > P_ARP


def test_a_vm_with_a_configured_mac_gets_no_learn_flow() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A)}, 1)
    assert not [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    # Nothing shows the controller A's packets but its port's log line (its events).
    telling = [f for f in flows if f.table == TABLE_LOG and f.actions]
    assert [f for f in flows if CONTROLLER in f.actions or any(isinstance(a, Meter)
            for a in f.actions)] == telling  # fmt: skip
    assert {f.match.in_port for f in telling} == {5, None}


# --- table 2: delivery ------------------------------------------------------------------------


def test_arp_and_nd_for_a_vms_mac_go_to_its_port_only() -> None:
    flows = compile_switch(abc_policy(), ABC_ATTACHED, 1)
    deliver = [f for f in table(flows, TABLE_DELIVER) if f.priority == P_DELIVER]
    assert {(f.match, f.actions) for f in deliver} == {
        (Match(eth_dst=MAC_A), (Output(5),)),
        (Match(eth_dst=MAC_B), (Output(6),)),
        (Match(eth_dst=MAC_C), (Output(7),)),
    }
    assert all(cookie(KIND_VM, f.actions[0].port) == f.cookie for f in deliver)  # type: ignore[union-attr, arg-type]


def test_only_arp_and_nd_reach_the_delivery_table() -> None:
    policy, attached = abc_policy(), dict(ABC_ATTACHED)
    policy.put_vm(Vm("D", "tapD", "52:54:00:00:00:0d", ("10.0.0.4", "fd00::4")))
    attached["D"] = Attachment(8, "52:54:00:00:00:0d")
    for f in compile_switch(policy, attached, 1):
        if holds(f, Goto(TABLE_DELIVER)):
            assert f.table == TABLE_CLASSIFY and f.actions == (Goto(TABLE_DELIVER),)
            is_nd = f.match.ip_proto == PROTO_ICMPV6 and f.match.icmp_type in range(133, 137)
            assert f.match.eth_type == ETH_TYPE_ARP or is_nd, f.text()


def test_a_renumbered_port_moves_its_delivery_line(seed_policy: Policy) -> None:
    moved = {"vm1": Attachment(9, MAC1), "vm2": Attachment(3, MAC2)}
    flows = compile_switch(seed_policy, moved, 1)
    deliver = {f.match.eth_dst: f.actions for f in table(flows, TABLE_DELIVER)}
    assert deliver[MAC1] == (Output(9),)


# --- table 1: pairs -------------------------------------------------------------------------

INI = Attachment(2, MAC1)
RES = Attachment(3, MAC2)
MARK = link_mark(1, 2)


def pair_text(pair: Pair, zone: int = 1, mark: int = MARK) -> list[str]:
    return [f.text() for f in pair_flows(pair, INI, RES, zone, mark)]


def commit(zone: int = 1, mark: int = MARK) -> str:
    return f"ct(commit,zone={zone},exec(set_field:0x{mark:x}->ct_mark))"


def link_lines(zone: int = 1, mark: int = MARK) -> list[str]:
    """The lines of the link vm1 -> vm2 (port 2 -> port 3), whatever its pairs allow."""
    there, back = f"in_port=2,dl_dst={MAC2}", f"in_port=3,dl_dst={MAC1}"
    return [
        f"table=1, priority=100,ct_state=-rel-rpl+trk,ip,{there},nw_frag=later"
        f" actions={commit(zone, mark)},output:3",
        f"table=1, priority=100,ct_state=-rel-rpl+trk,ipv6,{there},nw_frag=later"
        f" actions={commit(zone, mark)},output:3",
        f"table=1, priority=100,ct_state=+est+rpl+trk,ct_mark=0x{mark:x},{back} actions=output:2",
        f"table=1, priority=100,ct_state=+rel+trk,ct_mark=0x{mark:x},{back} actions=output:2",
        f"table=1, priority=100,ct_state=+rel+trk,ct_mark=0x{mark:x},{there} actions=output:3",
    ]


def test_link_marks_put_the_initiator_id_above_the_responders() -> None:
    assert link_mark(1, 2) == 0x10002
    assert link_mark(2, 1) == 0x20001
    assert link_mark(0xFFFE, 0xFFFE) == 0xFFFEFFFE != BLOCKED  # the highest: never "blocked"
    assert link_mark(1, 1) != 0  # a connection no pair committed carries 0


def test_an_any_pair_makes_two_lines_per_family_and_its_links_lines() -> None:
    there = f"in_port=2,dl_dst={MAC2}"
    # Per family: the opening packet (+new), then the rest of the connection (+est).
    assert pair_text(Pair(1, "vm1", "vm2")) == [
        f"table=1, priority=100,ct_state=+new-rel-rpl+trk,ip,{there} actions={commit()},output:3",
        f"table=1, priority=100,ct_state=+est-rel-rpl+trk,ip,{there} actions={commit()},output:3",
        f"table=1, priority=100,ct_state=+new-rel-rpl+trk,ipv6,{there} actions={commit()},output:3",
        f"table=1, priority=100,ct_state=+est-rel-rpl+trk,ipv6,{there} actions={commit()},output:3",
        *link_lines(),
    ]


def test_a_tcp_22_pair() -> None:
    there = f"in_port=2,dl_dst={MAC2}"
    assert pair_text(Pair(4, "vm1", "vm2", "tcp", "22"), zone=9) == [
        *(f"table=1, priority=100,ct_state={state}-rel-rpl+trk,{proto},{there},tp_dst=22"
          f" actions={commit(9)},output:3"
          for proto in ("tcp", "tcp6") for state in ("+new", "+est")),
        *link_lines(zone=9),
    ]  # fmt: skip
    flows = pair_flows(Pair(4, "vm1", "vm2", "tcp", "22"), INI, RES, 9, MARK)
    assert {cookie(KIND_PAIR, 4)} == {f.cookie for f in flows}
    # Replies are told apart by the mark, not by ports: a link's replies are one line.
    assert all(f.match.tp_src is None and f.match.tp_dst is None for f in reply_flows(flows))


def test_a_udp_range_pair_has_one_line_per_mask_and_family() -> None:
    flows = pair_flows(Pair(2, "vm1", "vm2", "udp", "8000-8100"), INI, RES, 1, MARK)
    assert len(flows) == 4 * 2 * 2 + 5  # 4 masks, 2 families, +new / +est; the link's 5 lines
    masks = [(8000, 0xFFC0), (8064, 0xFFE0), (8096, 0xFFFC), (8100, 0xFFFF)]
    lines = [f.match for f in opening_flows(list(flows))]
    assert [m.tp_dst for m in lines] == masks * 2
    assert [m.eth_type for m in lines] == [ETH_TYPE_IP] * 4 + [ETH_TYPE_IPV6] * 4
    assert {m.ip_proto for m in lines} == {17}
    # Each opening line has its +est twin, the same but for the state.
    est = [f.match for f in service_flows(list(flows)) if f.match.ct_state == ORIGINAL_EST]
    assert est == [m._replace(ct_state=ORIGINAL_EST) for m in lines]
    assert "tp_dst=0x1f40/0xffc0" in render(flows)


def test_a_tcp_pair_without_ports_matches_any_port() -> None:
    flows = pair_flows(Pair(2, "vm1", "vm2", "tcp"), INI, RES, 1, MARK)
    services = service_flows(list(flows))
    assert len(services) == 2 * 2  # both families, +new and +est
    assert all(f.match.ip_proto == PROTO_TCP and f.match.tp_dst is None for f in services)


def test_an_icmp_pair_allows_echo_request_there_and_its_link_back() -> None:
    flows = pair_flows(Pair(3, "vm1", "vm2", "icmp"), INI, RES, 1, MARK)
    got = [(f.match.eth_type, f.match.ip_proto, f.match.icmp_type, f.match.in_port,
            f.match.ct_state) for f in service_flows(list(flows))]  # fmt: skip
    assert got == [
        (ETH_TYPE_IP, PROTO_ICMP, 8, 2, ORIGINAL_NEW),
        (ETH_TYPE_IP, PROTO_ICMP, 8, 2, ORIGINAL_EST),
        (ETH_TYPE_IPV6, PROTO_ICMPV6, 128, 2, ORIGINAL_NEW),
        (ETH_TYPE_IPV6, PROTO_ICMPV6, 128, 2, ORIGINAL_EST),
    ]
    assert [f.text() for f in flows][4:] == link_lines()


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
def test_pair_flows_commit_there_with_the_mark_and_pass_back_only_with_it(
    pair: Pair, zone: int
) -> None:
    mark = link_mark(7, 9)
    flows = pair_flows(pair, INI, RES, zone, mark)
    # Services opening and established, later fragments (either), replies and related.
    assert {f.match.ct_state for f in flows} == {*OPENING, ORIGINAL, EST_REPLY, RELATED}
    assert all(f.table == TABLE_POLICY and f.priority == P_PAIR for f in flows)
    assert len(opening_flows(list(flows))) * 2 == len(service_flows(list(flows)))
    for f in flows:
        if f.match.ct_state in (*OPENING, ORIGINAL):
            # New or established, the original direction commits with the link's mark and
            # goes to the responder's port (a pair that does not log: nothing else).
            assert f.actions == (Ct(commit=True, zone=zone, mark=mark), Output(3))
            assert (f.match.in_port, f.match.eth_dst, f.match.ct_mark) == (2, MAC2, None)
        else:
            assert f.match.ct_mark == mark
            there = (f.match.in_port, f.match.eth_dst) == (2, MAC2)
            assert there or (f.match.in_port, f.match.eth_dst) == (3, MAC1)
            assert f.actions == ((Output(3),) if there else (Output(2),))
            assert there == (f.match.ct_state == RELATED and f.match.in_port == 2)


def test_every_ct_action_of_a_switch_uses_its_zone() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.add_pair(PairRequest("C", "A", "icmp"))
    policy.add_pair(PairRequest("A", "C", "tcp", "8000-8100"))
    marks = {link_mark(1, 2), link_mark(2, 3), link_mark(3, 1), link_mark(1, 3)}
    for zone in (1, 2, 65535):
        flows = compile_switch(policy, ABC_ATTACHED, zone)
        cts = [(f.table, a) for f in flows for a in f.actions if isinstance(a, Ct)]
        assert cts
        for table_id, ct in cts:
            assert ct.zone == zone
            # Table 0 sends to conntrack and on to table 1; table 1 only commits, marking.
            if table_id == TABLE_CLASSIFY:
                assert ct == Ct(table=TABLE_POLICY, zone=zone)
            else:
                assert ct.commit and ct.table is None and ct.mark in marks | {BLOCKED}
        assert {ct.mark for t, ct in cts if t == TABLE_POLICY} == marks | {BLOCKED}


# --- link marks -------------------------------------------------------------------------------


def test_pair_unit_flows_mark_with_the_vm_ids() -> None:
    policy = abc_policy(("C", "A"))
    pair = policy.pairs[1]
    flows = pair_unit_flows(policy, pair, ABC_ATTACHED, 1)
    assert flows == pair_flows(pair, ABC_ATTACHED["C"], ABC_ATTACHED["A"], 1, 0x30001)
    assert {f.match.ct_mark for f in flows} == {None, 0x30001}


def test_the_pairs_of_one_link_share_its_lines() -> None:
    policy = abc_policy(("A", "B"))
    policy.add_pair(PairRequest("A", "B", "tcp", "22"))
    policy.add_pair(PairRequest("A", "B", "udp", "53"))
    one, two, three = (pair_unit_flows(policy, policy.pairs[i], ABC_ATTACHED, 1)
                       for i in (1, 2, 3))  # fmt: skip
    links = [{f for f in flows if f not in service_flows(list(flows))} for flows in (one, two,
             three)]  # fmt: skip
    keys = [{f.key for f in link} for link in links]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 5
    # Compiled together, each link line is there once, with the first pair's cookie.
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    shared = [f for f in flows if f.key in keys[0]]
    assert len(shared) == 5 and {f.cookie for f in shared} == {cookie(KIND_PAIR, 1)}
    assert len(service_flows(flows)) == (2 + 2 + 2) * 2  # each service: +new and +est


def test_different_links_have_different_marks() -> None:
    policy = abc_policy(("A", "B"), ("B", "A"), ("A", "C"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    by_mark: dict[int, set[tuple[int | None, str | None]]] = {}
    for f in flows:
        for a in f.actions:
            if isinstance(a, Ct) and a.mark not in (None, BLOCKED):
                by_mark.setdefault(a.mark, set()).add((f.match.in_port, f.match.eth_dst))
    assert by_mark == {
        0x10002: {(5, MAC_B)},  # A -> B
        0x20001: {(6, MAC_A)},  # B -> A: another link, not A -> B's replies
        0x10003: {(5, MAC_C)},  # A -> C
    }
    replies = {(f.match.ct_mark, f.match.in_port, f.match.eth_dst) for f in reply_flows(flows)}
    assert replies == {(0x10002, 6, MAC_A), (0x20001, 5, MAC_B), (0x10003, 7, MAC_A)}


def test_a_responders_own_new_connection_finds_nothing() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    a, b = ABC_ATTACHED["A"], ABC_ATTACHED["B"]
    for fam in (ETH_TYPE_IP, ETH_TYPE_IPV6):
        there = {"in_port": a.ofport, "eth_dst": b.mac, "eth_type": fam}
        back = {"in_port": b.ofport, "eth_dst": a.mac, "eth_type": fam}
        # A opens (the opening line, which counts it) and continues (its +est twin)
        # towards B.
        opened = policy_verdict(flows, ct_state=NEW_TRK, **there)
        assert opened.actions[-1] == Output(6) and opens_connections(opened)
        assert opened.match.ct_state == ORIGINAL_NEW
        going = policy_verdict(flows, ct_state=EST_TRK, ct_mark=MARK, **there)
        assert going.actions[-1] == Output(6) and not opens_connections(going)
        assert going.match.ct_state == ORIGINAL_EST
        # B's replies pass with the link's mark...
        reply = policy_verdict(flows, ct_state=REPLY_TRK, ct_mark=MARK, **back)
        assert reply.actions == (Output(5),)
        # ...but B's own connections towards A meet the final drop, new or established.
        for mark in (None, MARK):
            denied = policy_verdict(flows, ct_state=NEW_TRK, ct_mark=mark, **back)
            assert denied.priority == P_DENY
            assert_drops(denied, "no-pair")
        # An established B -> A connection (committed before, say) is marked blocked, and
        # dropped as revoked.
        blocked = policy_verdict(flows, ct_state=EST_TRK, **back)
        assert blocked.actions == (Ct(True, None, 1, BLOCKED), *deny("revoked"))
        assert_drops(blocked, "revoked")


def test_a_reply_with_another_links_mark_is_dropped() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("C", "A")), ABC_ATTACHED, 1)
    back = {"in_port": 6, "eth_dst": MAC_A, "eth_type": ETH_TYPE_IP}
    assert policy_verdict(flows, ct_state=REPLY_TRK, ct_mark=0x10002, **back).actions == (
        Output(5),
    )
    for mark in (0, 0x30001, 0x20001, BLOCKED):
        for state in (REPLY_TRK, CT_REL | CT_TRK):
            verdict = policy_verdict(flows, ct_state=state, ct_mark=mark, **back)
            assert verdict.priority == P_DENY
            assert_drops(verdict, "no-pair")


def test_a_deleted_pair_blocks_its_connections_and_their_replies() -> None:
    policy = abc_policy(("A", "B"))
    before = compile_switch(policy, ABC_ATTACHED, 1)
    there = {"in_port": 5, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IP}
    back = {"in_port": 6, "eth_dst": MAC_A, "eth_type": ETH_TYPE_IP}
    assert policy_verdict(before, ct_state=EST_TRK, ct_mark=MARK, **there).actions[-1] == Output(6)
    policy.delete_pair(1)
    after = compile_switch(policy, ABC_ATTACHED, 1)
    blocked = policy_verdict(after, ct_state=EST_TRK, ct_mark=MARK, **there)
    assert blocked.actions == (Ct(True, None, 1, BLOCKED), *deny("revoked"))
    assert_drops(blocked, "revoked")
    reply = policy_verdict(after, ct_state=REPLY_TRK, ct_mark=BLOCKED, **back)
    assert reply.priority == P_DENY
    assert_drops(reply, "no-pair")


def test_invalid_packets_are_dropped_before_any_pair() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    pkt = {"in_port": 5, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IP, "ct_mark": MARK}
    verdict = policy_verdict(flows, ct_state=CT_INV | CT_TRK | CT_EST, **pkt)
    assert verdict.priority == P_INVALID
    assert_drops(verdict, "invalid")


def test_a_port_restricted_pair_admits_only_its_ports_but_all_later_fragments() -> None:
    policy = abc_policy()
    policy.add_pair(PairRequest("A", "B", "tcp", "22"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    tcp = {"in_port": 5, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IP, "ip_proto": PROTO_TCP}
    assert policy_verdict(flows, ct_state=NEW_TRK, tp_dst=22, **tcp).actions[-1] == Output(6)
    assert policy_verdict(flows, ct_state=EST_TRK, tp_dst=22, **tcp).actions[-1] == Output(6)
    for state in (NEW_TRK, EST_TRK):
        other_port = policy_verdict(flows, ct_state=state, tp_dst=23, **tcp)
        assert_drops(other_port, "no-pair" if state == NEW_TRK else "revoked")
    # A later fragment has no ports: it goes with the same commit as its first fragment.
    frag = policy_verdict(flows, ct_state=NEW_TRK, ip_frag="later", **tcp)
    assert frag.actions == (Ct(True, None, 1, MARK), Output(6))
    # From another port, to another MAC, or in reply: not the link's fragments.
    assert_drops(policy_verdict(flows, ct_state=NEW_TRK, ip_frag="later",
                                **(tcp | {"in_port": 7})), "no-pair")  # fmt: skip
    assert_drops(policy_verdict(flows, ct_state=REPLY_TRK, ip_frag="later", ct_mark=0,
                                **tcp), "no-pair")  # fmt: skip


def test_fragment_lines_are_per_link_for_both_families() -> None:
    policy = abc_policy(("A", "B"), ("B", "A"))
    policy.add_pair(PairRequest("A", "B", "icmp"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    frags = [f for f in flows if f.match.ip_frag is not None]
    assert {(f.match.in_port, f.match.eth_dst, f.match.eth_type, f.match.ip_frag)
            for f in frags} == {
        (5, MAC_B, ETH_TYPE_IP, "later"), (5, MAC_B, ETH_TYPE_IPV6, "later"),
        (6, MAC_A, ETH_TYPE_IP, "later"), (6, MAC_A, ETH_TYPE_IPV6, "later"),
    }  # fmt: skip
    assert len(frags) == 4  # the icmp pair's are the any pair's
    for f in frags:
        assert f.match.ct_state == ORIGINAL and f.match.ip_proto is None
        assert f.actions[0] == Ct(True, None, 1, 0x10002 if f.match.in_port == 5 else 0x20001)


# --- which pairs compile -------------------------------------------------------------------


def test_a_pair_lets_its_initiator_reach_only_its_responder() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    services = service_flows(flows)
    assert [(f.match.in_port, f.match.eth_dst, f.match.eth_type, f.match.ct_state)
            for f in services] == [
        (5, MAC_B, ETH_TYPE_IP, ORIGINAL_NEW),
        (5, MAC_B, ETH_TYPE_IP, ORIGINAL_EST),
        (5, MAC_B, ETH_TYPE_IPV6, ORIGINAL_NEW),
        (5, MAC_B, ETH_TYPE_IPV6, ORIGINAL_EST),
    ]  # fmt: skip
    assert all(f.actions == (Ct(True, None, 1, MARK), Output(6)) for f in services)
    assert [(f.match.in_port, f.match.eth_dst) for f in reply_flows(flows)] == [(6, MAC_A)]
    # C is in no pair: no table-1 flow mentions its port or its MAC, or outputs to it.
    for f in table(flows, TABLE_POLICY):
        assert f.match.in_port != 7 and f.match.eth_dst != MAC_C
        assert not holds(f, Output(7))


def test_both_directions_are_two_links() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("B", "A")), ABC_ATTACHED, 1)
    assert {(f.match.in_port, f.match.eth_dst) for f in service_flows(flows)} == {
        (5, MAC_B),
        (6, MAC_A),
    }
    assert in_ports(reply_flows(flows)) == [5, 6]
    # Each link: two families, +new and +est, and its 5 lines; the base's 4.
    assert len(table(flows, TABLE_POLICY)) == 2 * (2 * 2 + 5) + 4


def test_one_initiator_with_two_responders() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("A", "C")), ABC_ATTACHED, 1)
    assert {(f.match.in_port, f.match.eth_dst, f.actions[-1]) for f in service_flows(flows)} == {
        (5, MAC_B, Output(6)),
        (5, MAC_C, Output(7)),
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
        assert there == {*OPENING, ORIGINAL, RELATED}  # ORIGINAL: later fragments
        if (res, ini) not in directions:
            assert back == {EST_REPLY, RELATED}  # replies and related ICMP only
    # And VMs in no pair together have no line between them at all.
    for x in "ABC":
        for y in "ABC":
            if x != y and (x, y) not in directions and (y, x) not in directions:
                assert _towards(flows, ABC_ATTACHED[x], ABC_ATTACHED[y]) == set()


def test_a_reverse_pair_adds_its_own_link() -> None:
    policy = abc_policy(("A", "B"))
    b, a = ABC_ATTACHED["B"], ABC_ATTACHED["A"]
    before = _towards(compile_switch(policy, ABC_ATTACHED, 1), b, a)
    policy.add_pair(PairRequest("B", "A"))
    after = _towards(compile_switch(policy, ABC_ATTACHED, 1), b, a)
    assert before == {EST_REPLY, RELATED}
    assert after == {*OPENING, ORIGINAL, EST_REPLY, RELATED}


def test_two_services_of_the_same_vms_compile_side_by_side() -> None:
    policy = abc_policy()
    policy.add_pair(PairRequest("A", "B", "tcp", "22"))
    policy.add_pair(PairRequest("A", "B", "udp", "53"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    got = [(cookie_ident(f.cookie), f.match.ip_proto, f.match.tp_dst) for f in service_flows(flows)]
    # Each: two families, +new and +est.
    assert sorted(got) == [(1, 6, (22, 0xFFFF))] * 4 + [(2, 17, (53, 0xFFFF))] * 4


@pytest.mark.parametrize("absent", ["A", "B"])
def test_a_vm_not_attached_gets_no_pair_flows(absent: str) -> None:
    policy = abc_policy(("A", "B"))
    attached = {name: at for name, at in ABC_ATTACHED.items() if name != absent}
    flows = compile_switch(policy, attached, 1)
    assert pair_unit_flows(policy, policy.pairs[1], attached, 1) == ()
    assert flows == base_and_vm_flows(policy, attached, 1)  # no pair flows at all


def test_a_renumbered_ofport_changes_in_port_and_output(seed_policy: Policy) -> None:
    before = compile_switch(seed_policy, SEED_ATTACHED, 1)
    after = compile_switch(seed_policy, {"vm1": Attachment(9, MAC1), "vm2": Attachment(3, MAC2)}, 1)
    assert {f.match.in_port for f in service_flows(before)} == {2}
    assert {f.match.in_port for f in service_flows(after)} == {9}
    assert {f.actions for f in reply_flows(after)} == {(Output(9),)}
    assert not [f for f in after if f.match.in_port == 2 or holds(f, Output(2))]
    assert {cookie_ident(f.cookie) for f in after if cookie_kind(f.cookie) == KIND_VM} == {3, 9}


def test_a_responder_without_a_known_mac_gets_no_pair_flows() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("10.0.0.2", "fd00::2", "10.0.1.2")))
    policy.add_pair(PairRequest("A", "B"))
    attached = {"A": Attachment(5, MAC_A), "B": Attachment(6, None)}
    flows = compile_switch(policy, attached, 1)
    # No pinning by IP: nothing opens until B's MAC is known.
    assert table(flows, TABLE_POLICY) == table(list(base_flows(1)), TABLE_POLICY)
    # Only B's learning lines (and the log table) show the controller anything.
    assert [f for f in table(flows, TABLE_CLASSIFY) if CONTROLLER in f.actions] == [
        f
        for f in table(flows, TABLE_CLASSIFY)
        if cookie_kind(f.cookie) == KIND_LEARN and f.actions and not drop_reason(f)
    ]
    assert not [a for f in flows for a in f.actions if isinstance(a, Log)]


def test_an_initiator_without_a_known_mac_gets_no_pair_flows() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA"))
    policy.put_vm(Vm("B", "tapB", MAC_B))
    policy.add_pair(PairRequest("A", "B"))
    flows = compile_switch(policy, {"A": Attachment(5, None), "B": Attachment(6, MAC_B)}, 1)
    assert table(flows, TABLE_POLICY) == table(list(base_flows(1)), TABLE_POLICY)


def test_a_learned_mac_pins_the_responder_like_a_configured_one() -> None:
    def flows_with(b_mac: str | None) -> list[Flow]:
        policy = Policy()
        policy.put_vm(Vm("A", "tapA", MAC_A))
        policy.put_vm(Vm("B", "tapB", b_mac, ("10.0.0.2",)))
        if b_mac is None:
            policy.learn_mac("B", MAC_B)
        policy.add_pair(PairRequest("A", "B"))
        return compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, MAC_B)}, 1)

    learned = flows_with(None)
    assert {(f.match.eth_dst, f.match.in_port) for f in service_flows(learned)} == {(MAC_B, 5)}
    assert not [f for f in learned if cookie_kind(f.cookie) == KIND_LEARN]
    assert learned == flows_with(MAC_B)


def test_same_mac_and_ip_on_two_vms_compile_each_on_its_port() -> None:
    # Allowed by the policy (VMs on different bridges); each bridge only sees its own.
    policy = Policy()
    policy.put_vm(Vm("x1", "tapX1", MAC_A, ("10.0.0.1",)))
    policy.put_vm(Vm("x2", "tapX2", MAC_A, ("10.0.0.1",)))
    one = compile_switch(policy, {"x1": Attachment(4, MAC_A)}, 1)
    two = compile_switch(policy, {"x2": Attachment(4, MAC_A)}, 2)
    assert render(one) == render(two).replace("zone=2)", "zone=1)").replace("zone=2,", "zone=1,")


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
        (0, 100), (0, 100), (0, 105), (0, 105), (0, 105), (0, 105), (0, 10), (0, 1),
        (1, 200), (1, 10), (1, 10), (1, 0), (2, 50), (2, 0), (3, 200), (3, 200), (3, 200),
        (3, 200), (3, 0),
    ]  # fmt: skip
    assert all(cookie_ident(f.cookie) == 0 for f in base)
    vm = [f for f in flows if cookie_kind(f.cookie) == KIND_VM]
    assert {cookie_ident(f.cookie) for f in vm} == {5, 6, 7}
    assert {f.table for f in vm} == {TABLE_CLASSIFY, TABLE_DELIVER, TABLE_LOG}
    pair = [f for f in flows if cookie_kind(f.cookie) == KIND_PAIR]
    assert all(f.table == TABLE_POLICY for f in pair)
    assert {(cookie_ident(f.cookie), f.match.eth_dst) for f in service_flows(flows)} == {
        (1, MAC_B),
        (2, MAC_C),
    }
    assert {cookie_ident(f.cookie) for f in pair} == {1, 2}
    learn = [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert {cookie_ident(f.cookie) for f in learn} == {8}
    assert len(base) + len(vm) + len(pair) + len(learn) == len(flows)


def test_ct_states_are_tracked_and_only_in_table_1() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.add_pair(PairRequest("C", "A", "icmp"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    for f in flows:
        if f.table != TABLE_POLICY:
            assert f.match.ct_state is None and f.match.ct_mark is None
        elif f.match.ct_state is not None:
            assert has(f.match.ct_state, CT_TRK), f.text()
    # Every pair line says which way it looks, or (related) is pinned by the mark.
    for f in table(flows, TABLE_POLICY):
        if f.priority == P_PAIR:
            state = f.match.ct_state
            assert state is not None
            assert state.mask & CT_RPL or (has(state, CT_REL) and f.match.ct_mark is not None)


# --- dedupe --------------------------------------------------------------------------------


def test_dedupe_keeps_the_first_flow_per_key_in_order() -> None:
    one = Flow(1, 100, Match(in_port=2), (Output(3),), cookie(KIND_VM, 2))
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


def test_an_any_pair_has_its_link_lines_once() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED, 1)
    assert len(reply_flows(flows)) == 1
    assert len(service_flows(flows)) == 2 * 2
    assert len([f for f in flows if f.match.ct_state == RELATED]) == 2


# --- groups and networks (issue 11) --------------------------------------------------------


def _groups_of(n: int) -> tuple[Policy, dict[str, Attachment]]:
    from ryu_ctfw.policy import Group

    policy, attached = Policy(), {}
    for side in ("a", "b"):
        for i in range(n):
            name = f"{side}{i}"
            mac = f"52:54:00:{'0a' if side == 'a' else '0b'}:{i >> 8:02x}:{i & 0xFF:02x}"
            policy.put_vm(Vm(name, f"t{side}{i}", mac, ()))
            attached[name] = Attachment(len(attached) + 2, mac)
        policy.put_group(Group(side, tuple(f"{side}{i}" for i in range(n))))
    policy.add_pair(PairRequest("a", "b", "tcp", "5432"))
    return policy, attached


def test_a_group_pair_grows_with_members_plus_services_not_members_times_members() -> None:
    from ryu_ctfw.compiler import pair_unit_flows

    def cost(n: int) -> int:
        policy, attached = _groups_of(n)
        return len(pair_unit_flows(policy, policy.pairs[1], attached, 1))

    per_two = cost(2) - cost(1)  # a member more on each side
    assert cost(100) == cost(1) + 99 * per_two, "linear in the members"
    # An initiator: its source clause, its four commit lines (the mark names it, one per
    # family, +new and +est), its reply clause (back) and its related clause (there). A
    # responder: its MAC (original and there) and its port (back).
    assert per_two == 7 + 2
    assert cost(100) < 1_000 < 100 * 100


def test_two_networks_on_one_port_keep_their_sources_apart() -> None:
    from ryu_ctfw.policy import Group, Network

    policy = Policy()
    policy.put_vm(Vm("web1", "tap2", MAC1, ("198.18.0.2",)))
    policy.put_group(Group("web", ("web1",)))
    policy.put_network(Network("office", "up0", ("198.19.1.0/24",)))
    policy.put_network(Network("internet", "up0", ("0.0.0.0/0",)))
    policy.add_pair(PairRequest("office", "web", "tcp", "22"))
    attached = {"web1": Attachment(2, MAC1), "office": Attachment(1, None),
                "internet": Attachment(1, None)}  # fmt: skip
    text = render(compile_switch(policy, attached, 1))
    # Table 0 lets both networks' sources in by the uplink...
    assert "priority=107,ip,in_port=1,nw_src=198.19.1.0/24 actions=ct(table=1,zone=1)" in text
    assert "priority=107,ip,in_port=1 actions=ct(table=1,zone=1)" in text  # 0.0.0.0/0
    # ...but only the office may open ssh: the pair's source clause names its CIDR.
    (source,) = [line for line in text.splitlines() if "/3)" in line and "in_port=1" in line]
    assert "nw_src=198.19.1.0/24" in source and "1/3" in source


# --- the connection log (issue 13) -----------------------------------------------------------

# The drops that are no event: table 0's last line (no IP, ARP or ND), table 2's (ARP or ND
# for nobody), and in table 3, of what was dropped, the link-local multicast every host
# sends on its own.
SILENT_DROPS = {(TABLE_CLASSIFY, P_DEFAULT_DROP), (TABLE_DELIVER, P_DENY), (TABLE_LOG, P_LOG_QUIET)}
# Only for the drops that are no lie: a forged advertisement to all nodes is an event.
LINK_LOCAL_MULTICAST = {
    Match(eth_type=fam, metadata=REASON_BY_NAME[reason].code, **{field: net})  # type: ignore[arg-type]
    for fam, field, net in ((ETH_TYPE_IPV6, "ipv6_dst", "ff02::/16"),
                            (ETH_TYPE_IP, "ipv4_dst", "224.0.0.0/24"))
    for reason in ("no-pair", "invalid")
}  # fmt: skip


def pair_between(policy: Policy, initiator: str, responder: str) -> Pair:
    (pair,) = [p for p in policy.pairs.values() if (p.initiator, p.responder) == (initiator,
               responder)]  # fmt: skip
    return pair


def round_trip_flows(zone: int = 7) -> tuple[Policy, dict[str, Attachment], list[Flow]]:
    policy, attached = round_trip_policy()
    return policy, attached, compile_switch(policy, attached, zone)


def test_the_reasons_have_one_code_and_one_name_each() -> None:
    codes, names = [r.code for r in REASONS], [r.name for r in REASONS]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    # Metadata 0 is a packet that no drop line marked: no reason may be it.
    assert 0 not in codes
    for r in REASONS:
        assert REASON_BY_CODE[r.code] == REASON_BY_NAME[r.name] == r
        assert deny(r.name) == (WriteMetadata(r.code), Goto(TABLE_LOG))
        assert drop_reason(Flow(TABLE_POLICY, 1, Match(), deny(r.name), 0)) == r.name
    with pytest.raises(KeyError):
        deny("no-such-reason")


def test_every_drop_that_is_an_event_says_why_and_goes_to_the_log_table() -> None:
    _, _, flows = round_trip_flows()
    reasons = set()
    for f in flows:
        reason = drop_reason(f)
        to_log = holds(f, Goto(TABLE_LOG))
        # Nothing reaches table 3 without its reason in the metadata, nor the reverse.
        assert to_log == (reason is not None), f.text()
        if reason is not None:
            assert_drops(f, reason)
            assert f.table in (TABLE_CLASSIFY, TABLE_POLICY), f.text()
            metadata = [a for a in f.actions if isinstance(a, WriteMetadata)]
            assert metadata == [WriteMetadata(REASON_BY_NAME[reason].code)], f.text()
            reasons.add(reason)
        elif not passes(f) and not is_clause(f) and CONTROLLER not in f.actions:
            # A line that lets nothing on and tells nobody: only the silent drops.
            assert (f.table, f.priority) in SILENT_DROPS and f.actions == (), f.text()
            assert f.match in ({Match()} | LINK_LOCAL_MULTICAST), f.text()
    # The round-trip policy makes every kind of drop there is.
    assert reasons == {r.name for r in REASONS}


def test_drop_reason_names_the_base_drops_and_nothing_that_passes() -> None:
    base = list(base_flows(1))
    by_place = {(f.table, f.priority): drop_reason(f) for f in base}
    assert by_place[(TABLE_POLICY, P_DENY)] == "no-pair"
    assert by_place[(TABLE_POLICY, P_INVALID)] == "invalid"
    assert by_place[(TABLE_POLICY, P_BLOCK)] == "revoked"
    assert by_place[(TABLE_CLASSIFY, P_DEFAULT_DROP)] is None
    assert by_place[(TABLE_DELIVER, P_DENY)] is None
    assert [(f.table, f.priority) for f in base if drop_reason(f)] == [
        (TABLE_POLICY, P_INVALID), (TABLE_POLICY, P_BLOCK), (TABLE_POLICY, P_BLOCK),
        (TABLE_POLICY, P_DENY),
    ]  # fmt: skip
    # The log table's own lines and a learning line report, they do not drop for a reason.
    assert [drop_reason(f) for f in table(base, TABLE_LOG)] == [None] * 5
    learning = vm_port_flows(Vm("B", "tapB"), Attachment(6, None), 1)
    assert [drop_reason(f) for f in learning if CONTROLLER in f.actions] == [None] * 3
    # A code no reason has is no reason (a flow the controller did not make).
    assert drop_reason(Flow(TABLE_POLICY, 1, Match(), (WriteMetadata(99), Goto(3)), 0)) is None


def test_drop_reason_of_the_claims_and_the_port_guards() -> None:
    vm = Vm("v", "p", MAC_A, ("10.0.0.5", "fd00::5"))
    flows = vm_port_flows(vm, Attachment(9, MAC_A), 1)
    by_priority = {f.priority: {drop_reason(g) for g in flows if g.priority == f.priority}
                   for f in table(list(flows), TABLE_CLASSIFY)}  # fmt: skip
    assert by_priority[P_CLAIMED_ADDRESS] == {"claimed-address"}
    assert by_priority[P_CLAIMED_MAC] == {"claimed-mac"}
    assert by_priority[P_VM_TAGGED] == {"tagged"}
    assert by_priority[P_VM_FALSE_ND] == {"forged-nd"}
    assert by_priority[P_VM_GUARD] == {"forged-source"}
    assert by_priority[P_VM_NEIGHBOUR] == by_priority[P_VM_IP] == {None}
    remote = vm_port_flows(vm, Attachment(8, MAC_A, remote=True), 1)
    (guard,) = [f for f in remote if f.priority == P_FABRIC_GUARD]
    assert_drops(guard, "forged-source")
    # A mac-only VM's false ND too.
    mac_only = vm_port_flows(Vm("m", "p", MAC_B), Attachment(4, MAC_B), 1)
    false_nd = [f for f in mac_only if f.priority == P_MAC_VM_FALSE_ND]
    assert len(false_nd) == 2
    for f in false_nd:
        assert_drops(f, "forged-nd")


def test_a_networks_port_drops_sources_outside_its_cidrs_as_events() -> None:
    from ryu_ctfw.policy import Network

    net = Network("outside", "up1", ("198.19.0.0/24",), id=3)
    flows = network_port_flows(net, Attachment(9, None), 1)
    spoofed = [f for f in flows if drop_reason(f) == "outside-cidrs"]
    assert {f.match for f in spoofed} == {
        Match(in_port=9, eth_type=ETH_TYPE_IP),
        Match(in_port=9, eth_type=ETH_TYPE_IPV6),
    }
    for f in spoofed:
        assert_drops(f, "outside-cidrs")
    tagged = [f for f in flows if f.priority == P_VM_TAGGED]
    assert [drop_reason(f) for f in tagged] == ["tagged"]
    # Its events go through the meter of its port.
    assert [(f.priority, f.match, f.actions) for f in table(list(flows), TABLE_LOG)] == [
        (P_LOG_PORT, Match(in_port=9), (Meter(9), CONTROLLER)),
    ]


def test_each_local_vm_port_and_network_port_has_its_log_line_with_its_own_meter() -> None:
    _, attached, flows = round_trip_flows()
    log = [f for f in table(flows, TABLE_LOG) if f.priority != P_LOG_QUIET]
    ports = {at.ofport for at in attached.values()}  # the VMs', the networks', the fabric's
    assert {f.match.in_port for f in log} == ports | {None}
    for f in log:
        if f.match.in_port is None:
            # Everything else (another port, or a claim) shares one meter, at the bottom.
            assert (f.priority, f.match, f.actions) == (
                P_LOG_OTHER, Match(), (Meter(SHARED_METER), CONTROLLER),
            )  # fmt: skip
        else:
            port = f.match.in_port
            assert (f.priority, f.match, f.actions) == (
                P_LOG_PORT, Match(in_port=port), (Meter(port), CONTROLLER),
            )  # fmt: skip
            # It is the port's owner's line: it goes when the VM or network goes.
            assert cookie_kind(f.cookie) in (KIND_VM, KIND_LEARN, KIND_NETWORK)
    assert len(log) == len(ports) + 1  # one line per port, even shared by two networks
    assert SHARED_METER > 0xFEFF  # no ofport is ever the shared meter's id


def test_every_meter_a_flow_names_is_one_a_meter_instruction_makes() -> None:
    """The switch side creates the meters the flows' Meter instructions name; a logging
    pair's controller(meter_id) must name one of them, or its copies go nowhere."""
    _, attached, flows = round_trip_flows()
    meters = {a.meter_id for f in flows for a in f.actions if isinstance(a, Meter)}
    logs = {a.meter_id for f in flows for a in f.actions if isinstance(a, Log)}
    assert meters == {at.ofport for at in attached.values()} | {SHARED_METER}
    assert logs and logs <= meters - {SHARED_METER}


def test_a_remote_vm_has_no_meter_of_its_own_but_the_fabric_ports() -> None:
    vm6 = Vm("vm6", "vnet6", MAC_C, ("198.18.0.6",), switch="brB")
    flows = vm_port_flows(vm6, Attachment(8, MAC_C, remote=True), 1)
    assert {a for f in flows for a in f.actions if isinstance(a, Meter)} == {Meter(8)}
    # Two VMs behind the fabric port: one log line for the port.
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("far1", "v1", MAC_B, switch="brB"))
    policy.put_vm(Vm("far2", "v2", MAC_C, switch="brB"))
    policy.add_pair(PairRequest("far1", "A", "tcp", "22", log=True))
    attached = {
        "A": Attachment(5, MAC_A),
        "far1": Attachment(8, MAC_B, remote=True),
        "far2": Attachment(8, MAC_C, remote=True),
    }
    compiled = compile_switch(policy, attached, 1)
    log_ports = [f.match.in_port for f in table(compiled, TABLE_LOG) if f.actions]
    assert sorted(log_ports, key=str) == [5, 8, None]
    meters = {a.meter_id for f in compiled for a in f.actions if isinstance(a, Meter | Log)}
    assert meters == {5, 8, SHARED_METER}
    # A remote initiator's opening packets are logged through the fabric port's meter.
    opening = [f for f in compiled if opens_connections(f)]
    assert len(opening) == 2 and all(holds(f, Log(8)) for f in opening)
    assert all(f.match.eth_src == MAC_B for f in opening)  # told apart by its MAC


def test_opens_connections_is_true_exactly_for_the_pairs_opening_lines() -> None:
    policy, _, flows = round_trip_flows()
    opening = [f for f in flows if opens_connections(f)]
    for f in flows:
        is_opening = (
            f.table == TABLE_POLICY
            and f.match.ct_state == ORIGINAL_NEW
            and cookie_kind(f.cookie) == KIND_PAIR
        )
        assert opens_connections(f) == is_opening, f.text()
    # Every opening line has its +est twin, which does not count connections.
    for f in opening:
        twin = f.match._replace(ct_state=ORIGINAL_EST, ip_frag=None)  # (a logged "any")
        (est,) = [g for g in flows if g.table == TABLE_POLICY and g.match == twin]
        assert not opens_connections(est)
        assert [a for a in f.actions if not isinstance(a, Log)] == list(est.actions)
    # A VM pair opens by one line per service here; a group or network pair by its
    # conjunctive match's line per initiator port (and MAC, for a remote member) and family.
    ssh = pair_between(policy, "vm6", "vm1")
    mine = [f for f in opening if f.cookie == cookie(KIND_PAIR, ssh.id)]
    assert [(f.match.in_port, f.match.eth_src, f.match.eth_type) for f in mine] == [
        (8, MAC6, ETH_TYPE_IP), (8, MAC6, ETH_TYPE_IPV6),
    ]  # fmt: skip
    web_db = pair_between(policy, "web", "db")
    mine = [f for f in opening if f.cookie == cookie(KIND_PAIR, web_db.id)]
    assert all(f.match.conj_id is not None for f in mine)
    # web: vm1 on port 2, vm3 on port 4.
    assert sorted((f.match.in_port, f.match.eth_type) for f in mine) == [
        (2, ETH_TYPE_IP), (2, ETH_TYPE_IPV6), (4, ETH_TYPE_IP), (4, ETH_TYPE_IPV6),
    ]  # fmt: skip


def test_the_line_a_new_connection_meets_is_the_one_that_counts_it() -> None:
    policy = abc_policy()
    policy.add_pair(PairRequest("A", "B", "tcp", "22"))
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    tcp = {"eth_type": ETH_TYPE_IP, "ip_proto": PROTO_TCP}
    there = {"in_port": 5, "eth_dst": MAC_B, "tp_dst": 22, **tcp}
    back = {"in_port": 6, "eth_dst": MAC_A, **tcp}
    assert opens_connections(policy_verdict(flows, ct_state=NEW_TRK, **there))
    later_fragment = {"in_port": 5, "eth_dst": MAC_B, "ip_frag": "later", **tcp}  # no ports
    for state, mark, pkt in [
        (EST_TRK, MARK, there),  # the rest of the connection
        (NEW_TRK, None, later_fragment),  # of its first packet
        (REPLY_TRK, MARK, back),
        (CT_REL | CT_TRK, MARK, back),
        (CT_REL | CT_TRK, MARK, there),
        (NEW_TRK, None, back),  # denied
    ]:
        verdict = policy_verdict(flows, ct_state=state, ct_mark=mark, **pkt)
        assert not opens_connections(verdict), verdict.text()
    # No base, VM or network line ever counts as a pair's connections.
    _, _, round_trip = round_trip_flows()
    assert not [f for f in round_trip if opens_connections(f)
                and cookie_kind(f.cookie) != KIND_PAIR]  # fmt: skip


def _logged_and_silent(
    policy: Policy, pair: Pair, attached: dict[str, Attachment]
) -> tuple[tuple[Flow, ...], tuple[Flow, ...]]:
    silent = dataclasses.replace(pair, log=False)
    logged = dataclasses.replace(pair, log=True)
    return (pair_unit_flows(policy, logged, attached, 1),
            pair_unit_flows(policy, silent, attached, 1))  # fmt: skip


def _as_silent(flow: Flow) -> Flow:
    """What a logging pair's line is for the same pair silent: no Log, the silent
    priority, the silent conjunctive match, any fragment."""

    def conj(cid: int) -> int:
        logged = cid >> 30 == CONJ_ORIGINAL_LOGGED
        return cid & ~(CONJ_ORIGINAL_LOGGED << 30) if logged else cid

    actions = tuple(
        Conjunction(conj(a.id), a.clause, a.n_clauses) if isinstance(a, Conjunction) else a
        for a in flow.actions
        if not isinstance(a, Log)
    )
    match = flow.match
    if match.conj_id is not None:
        match = match._replace(conj_id=conj(match.conj_id))
    if match.ip_frag == "not_later":
        match = match._replace(ip_frag=None)
    silent = {P_PAIR_LOGGED: P_PAIR, P_LINK_LOGGED: P_LINK}.get(flow.priority, flow.priority)
    return flow._replace(priority=silent, match=match, actions=actions)


def _clauses_apart(flows: Iterable[Flow]) -> set[Flow]:
    out: set[Flow] = set()
    for f in flows:
        out |= {f._replace(actions=(a,)) for a in f.actions} if is_clause(f) else {f}
    return out


def _assert_logs_only_its_opening_lines(
    logged: tuple[Flow, ...], silent: tuple[Flow, ...], meter_of: dict[int, int]
) -> None:
    """`logged` is `silent` but for its opening lines. Each carries one Log, through the
    meter `meter_of[in_port]` (the initiator's port's), one priority above the silent
    line (a group or network pair: its whole original direction, a conjunctive match of
    its own), so it wins over a silent pair admitting the same connection. One whose
    match does not keep later fragments out by itself (they carry no ports or ICMP type:
    an "any" service, a conjunctive match) takes first fragments only; the later ones pass
    without a Log on a fragment line."""
    opening = [f for f in logged if opens_connections(f)]
    assert opening and len(opening) == len([f for f in silent if opens_connections(f)])
    fragments: set[Flow] = set()
    for mine in opening:
        logs = [a for a in mine.actions if isinstance(a, Log)]
        assert logs == [Log(meter_of[mine.match.in_port])], mine.text()  # type: ignore[index]
        assert "controller(max_len=128,meter_id=" in mine.text()
        assert mine.priority in (P_PAIR_LOGGED, P_LINK_LOGGED), mine.text()
        if mine.match.ip_frag is None:
            assert mine.match.tp_dst is not None or mine.match.icmp_type is not None
            continue
        assert mine.match.ip_frag == "not_later", mine.text()
        later = mine.match._replace(ct_state=ORIGINAL, ip_frag="later")
        (line,) = [f for f in logged if f.match == later]
        assert not [a for a in line.actions if isinstance(a, Log)], line.text()
        assert line.priority in (mine.priority, mine.priority - 1)  # the pair's, or the link's
        fragments.add(line)
    extra = {f for f in fragments if f.priority == P_LINK_LOGGED}  # a conjunctive match's
    # One clause line can serve two conjunctive matches (a member's port: the original
    # direction and "there"), which a logging pair keeps at two priorities: compare each
    # conjunction on its own.
    assert _clauses_apart(_as_silent(f) for f in logged if f not in extra) == _clauses_apart(silent)
    assert not [f for f in silent if any(isinstance(a, Log) for a in f.actions)]
    assert [f for f in logged if f.priority in (P_PAIR_LOGGED, P_LINK_LOGGED)]


def test_a_logging_vm_pair_logs_its_opening_packets_through_the_initiators_meter() -> None:
    policy = abc_policy()
    pair = policy.add_pair(PairRequest("A", "B", "tcp", "8000-8100", log=True))
    logged, silent = _logged_and_silent(policy, pair, ABC_ATTACHED)
    _assert_logs_only_its_opening_lines(logged, silent, {5: 5})
    assert len([f for f in logged if opens_connections(f)]) == 4 * 2  # 4 masks, 2 families
    # Compiled, nothing else on the switch logs: the admitted connection is the event.
    flows = compile_switch(policy, ABC_ATTACHED, 1)
    assert [f for f in flows if any(isinstance(a, Log) for a in f.actions)] == [
        f for f in logged if opens_connections(f)
    ]
    # The opening packet still goes on to its responder; only a copy is logged.
    tcp = {"in_port": 5, "eth_dst": MAC_B, "eth_type": ETH_TYPE_IP, "ip_proto": PROTO_TCP}
    opened = policy_verdict(flows, ct_state=NEW_TRK, tp_dst=8080, **tcp)
    assert opened.actions == (Ct(True, None, 1, MARK), Output(6), Log(5))
    assert passes(opened) and drop_reason(opened) is None
    going = policy_verdict(flows, ct_state=EST_TRK, tp_dst=8080, ct_mark=MARK, **tcp)
    assert going.actions == (Ct(True, None, 1, MARK), Output(6))


def test_a_logging_group_pair_logs_its_opening_packets_through_each_members_meter() -> None:
    policy, attached = round_trip_policy()
    web_db = pair_between(policy, "web", "db")  # web: vm1 on 2, vm3 on 4
    assert not web_db.log
    logged, silent = _logged_and_silent(policy, web_db, attached)
    _assert_logs_only_its_opening_lines(logged, silent, {2: 2, 4: 4})
    assert len([f for f in logged if opens_connections(f)]) == 2 * 2  # 2 members, 2 families
    # A network initiator logs through its port's meter.
    outside_web = pair_between(policy, "outside", "web")
    logged, silent = _logged_and_silent(policy, outside_web, attached)
    _assert_logs_only_its_opening_lines(logged, silent, {9: 9})
    # A remote member of the initiator group: the fabric port's meter.
    far_web = pair_between(policy, "far", "web")
    logged, silent = _logged_and_silent(policy, far_web, attached)
    _assert_logs_only_its_opening_lines(logged, silent, {8: 8})


def test_the_round_trip_policys_logging_pairs_log_exactly_their_opening_lines() -> None:
    policy, _, flows = round_trip_flows()
    logging_ids = {p.id for p in policy.pairs.values() if p.log}
    assert len(logging_ids) == 2
    with_log = [f for f in flows if any(isinstance(a, Log) for a in f.actions)]
    assert with_log == [
        f for f in flows if opens_connections(f) and cookie_ident(f.cookie) in logging_ids
    ]
    # Their meters are their initiators' ports' (vm2: 3; db's members here: vm2 3, vm5 65000).
    assert {(a.meter_id, f.match.in_port) for f in with_log for a in f.actions
            if isinstance(a, Log)} == {(3, 3), (65000, 65000)}  # fmt: skip


def test_link_local_multicast_that_was_dropped_is_no_event() -> None:
    """What every host sends on its own (MLD reports, router solicitations, IGMP, mDNS) is
    dropped like the rest, above the port lines of the log table, so it fills no meter."""
    log = table(list(base_flows(1)), TABLE_LOG)
    quiet = [f for f in log if f.priority == P_LOG_QUIET]
    assert {f.match for f in quiet} == LINK_LOCAL_MULTICAST and len(quiet) == 4
    for f in quiet:
        assert_drops(f, None)
    assert P_LOG_QUIET > P_LOG_PORT > P_LOG_OTHER
    # Only table 3 drops it quietly: before, no line singles it out (in table 1 it meets
    # the no-pair drop like any other packet).
    assert not [
        f for f in base_flows(1) if f.table != TABLE_LOG and f.match in LINK_LOCAL_MULTICAST
    ]


def test_actions_of_different_kinds_never_compare_equal() -> None:
    """Actions are tuples: with the same values, two kinds must still differ, or a flow
    could pass for another in the flow set's comparisons and the packing cache."""
    kinds = [Output(3), Log(3), Goto(3), Meter(3), WriteMetadata(3),
             Conjunction(3, 1, 2), Ct(True, 3, 3, 3)]  # fmt: skip
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert a != b, (a, b)
    assert len(set(kinds)) == len(kinds)
