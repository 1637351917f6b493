"""The switch side without a switch: flows through the wire format and back, learning.

The controller packs its flow-mods itself (wire.py) and the REST flow view reads flows
back through Ryu's parser. Ryu is an independent decoder, so every flow the compiler makes
must survive Flow -> wire.py bytes -> Ryu's parser -> Flow: that checks the packing
against OpenFlow as Ryu reads it, and the view's decoding against the packing.
"""

from __future__ import annotations

import logging
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from ryu.lib.packet import arp, ethernet, icmpv6, ipv6, packet
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from shapes import MAC1, MAC3, MAC5, ROUND_TRIP_FLOWS

from ryu_ctfw import wire
from ryu_ctfw.compiler import (
    KIND_LEARN,
    Attachment,
    Flow,
    Match,
    cookie_kind,
)
from ryu_ctfw.policy import Policy, Vm
from ryu_ctfw.switch import (
    Switch,
    SwitchManager,
    flow_from_raw,
    from_ofp_actions,
    from_ofp_match,
)

DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser)  # what from_ofp_actions needs of one


def flow_id(flow: Flow) -> str:
    return f"t{flow.table}p{flow.priority}:{flow.match.text() or '(all)'}"


def ryu_match(match: Match) -> Any:
    """The OFPMatch Ryu parses from the bytes wire.py packs."""
    return parser.OFPMatch.parser(wire.match_bytes(match), 0)


def ryu_instructions(flow: Flow) -> list[Any]:
    """The instructions Ryu parses from the bytes wire.py packs."""
    buf = wire.instructions_bytes(flow.actions)
    out, offset = [], 0
    while offset < len(buf):
        inst = parser.OFPInstruction.parser(buf, offset)
        out.append(inst)
        offset += inst.len
    return out


def test_the_round_trip_set_covers_every_kind_of_field() -> None:
    text = "\n".join(f.text() for f in ROUND_TRIP_FLOWS)
    for part in (
        "arp_spa=", "arp_sha=", "nd_target=2001:db8::3", "nw_src=", "ipv6_src=fd00::3",
        "tp_dst=0x1f40/0xffc0", "tp_src=0x8000/0x8000", "tp_dst=53", "tcp6", "udp6",
        "icmp_type=129", "icmp_type=0", "+est-rpl+trk", "+est+rpl+trk", "+inv+trk",
        "+rel+trk", "CONTROLLER:128", "in_port=65000", "ct(commit,zone=65535)",
        "ct(table=1,zone=65535)",
    ):  # fmt: skip
        assert part in text, part
    assert [f for f in ROUND_TRIP_FLOWS if cookie_kind(f.cookie) == KIND_LEARN]


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_a_match_survives_ryus_wire_format(flow: Flow) -> None:
    assert from_ofp_match(ryu_match(flow.match)) == flow.match


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_actions_survive_ryus_wire_format(flow: Flow) -> None:
    assert from_ofp_actions(DP, ryu_instructions(flow)) == flow.actions


def raw_entry(flow: Flow, match: bytes | None = None, instructions: bytes | None = None) -> Any:
    """A flow-stats entry for `flow` as the sync reads it, with parts replaced if given."""
    key = (flow.table, flow.priority, wire.match_bytes(flow.match) if match is None else match)
    instructions = wire.instructions_bytes(flow.actions) if instructions is None else instructions
    return wire.RawFlow(key, flow.cookie, instructions, 0, 0, 0.0)


def test_a_flow_read_back_raw_decodes_to_the_flow() -> None:
    for flow in ROUND_TRIP_FLOWS:
        assert flow_from_raw(raw_entry(flow)) == flow, flow.text()


def test_a_raw_entry_that_is_not_ours_or_not_openflow_decodes_to_none() -> None:
    flow = ROUND_TRIP_FLOWS[0]
    goto_table = struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, 1)
    assert flow_from_raw(raw_entry(flow, instructions=goto_table)) is None
    assert flow_from_raw(raw_entry(flow, match=b"\xff" * 8)) is None  # garbage


@pytest.mark.parametrize(
    "fields",
    [
        {"eth_dst": (MAC1, "ff:ff:ff:00:00:00")},  # a mask we never set
        {"ipv4_src": ("10.0.0.0", "255.0.0.0")},
        {"ipv4_dst": "10.0.0.1"},  # a field we never set
        {"vlan_vid": 0x1000 | 5},
        {"in_port": 2, "eth_type": 0x0800, "ip_dscp": 10},
    ],
    ids=["masked eth_dst", "masked ipv4_src", "ipv4_dst", "vlan_vid", "ip_dscp"],
)
def test_a_match_that_is_not_ours_reads_back_as_none(fields: dict[str, Any]) -> None:
    """The sync deletes what it cannot read back: it must never misread it as ours."""
    buf = bytearray()
    parser.OFPMatch(**fields).serialize(buf, 0)
    assert from_ofp_match(parser.OFPMatch.parser(bytes(buf), 0)) is None


def test_an_instruction_that_is_not_ours_reads_back_as_none() -> None:
    goto = parser.OFPInstructionGotoTable(1)
    assert from_ofp_actions(DP, [goto]) is None
    other_action = parser.OFPInstructionActions(
        ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionSetField(eth_dst=MAC1)]
    )
    assert from_ofp_actions(DP, [other_action]) is None


# --- learning a MAC ------------------------------------------------------------------------


def manager(policy: Policy) -> tuple[SwitchManager, Switch]:
    mgr = SwitchManager(logging.getLogger("test"), lambda: policy, lambda dpid: 1)
    sw = Switch(1, dp=object(), name="br0", ports={"tap2": 2, "tap6": 5})
    mgr.switches[1] = sw
    return mgr, sw


def arp_from(src: str, sender: str | None = None) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src, 0x0806))
    pkt.add_protocol(arp.arp_ip(1, sender or src, "198.18.0.4", "00:00:00:00:00:00", "198.18.0.1"))
    pkt.serialize()
    return bytes(pkt.data)


def ns_from(src: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("33:33:ff:00:00:01", src, 0x86DD))
    pkt.add_protocol(ipv6.ipv6(src="::", dst="ff02::1:ff00:1", nxt=58))
    pkt.add_protocol(icmpv6.icmpv6(type_=135, data=icmpv6.nd_neighbor(dst="fe80::1")))
    pkt.serialize()
    return bytes(pkt.data)


def packet_in(mgr: SwitchManager, in_port: int, data: bytes) -> None:
    mgr.packet_in(SimpleNamespace(id=1), SimpleNamespace(match={"in_port": in_port}, data=data))


def learning_policy() -> Policy:
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1))
    policy.put_vm(Vm("vm4", "tap6"))
    return policy


@pytest.mark.parametrize("data", [arp_from(MAC5), ns_from(MAC5)], ids=["arp", "nd-ns"])
def test_a_vm_without_mac_is_learned_from_its_arp_or_ns(data: bytes) -> None:
    policy = learning_policy()
    mgr, sw = manager(policy)
    packet_in(mgr, 5, data)
    assert sw.learned == {"vm4": MAC5}
    assert sw.requested == 1  # a sync was asked for
    assert mgr.attachments(sw) == {"vm1": Attachment(2, MAC1), "vm4": Attachment(5, MAC5)}
    # The learned MAC sticks until the port goes away.
    packet_in(mgr, 5, arp_from(MAC3))
    assert sw.learned == {"vm4": MAC5}


def test_nothing_is_learned_for_a_vm_with_a_mac_or_from_a_lying_arp() -> None:
    policy = learning_policy()
    mgr, sw = manager(policy)
    packet_in(mgr, 2, arp_from(MAC5))  # vm1 has a configured MAC
    packet_in(mgr, 5, arp_from(MAC5, sender=MAC3))  # eth src and ARP sender disagree
    packet_in(mgr, 9, arp_from(MAC5))  # no VM on that port
    assert sw.learned == {}
    assert sw.requested == 0


def test_a_multicast_source_mac_is_not_learned_and_does_not_raise() -> None:
    policy = learning_policy()
    mgr, sw = manager(policy)
    packet_in(mgr, 5, arp_from("01:00:5e:00:00:01"))
    assert sw.learned == {}


def test_attachments_carry_the_configured_mac_else_the_learned_one() -> None:
    policy = learning_policy()
    mgr, sw = manager(policy)
    sw.learned["vm1"] = MAC3  # never used for a VM with a configured MAC
    assert mgr.attachments(sw) == {"vm1": Attachment(2, MAC1), "vm4": Attachment(5, None)}
    sw.learned["vm4"] = MAC5
    assert mgr.attachments(sw)["vm4"] == Attachment(5, MAC5)
    del sw.ports["tap6"]
    assert "vm4" not in mgr.attachments(sw)
