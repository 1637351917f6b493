"""wire.py's hand-packed bytes are OpenFlow 1.3 as the spec lays it out and Ryu reads it.

The controller never lets Ryu serialize a flow-mod: wire.py packs flow-mods, bundle-adds and
flow deletes with `struct`, and cuts flow-stats replies apart without decoding them. A
wrong offset, length or constant there would not raise anywhere; the switch would refuse
the bundle (or, worse, install something else), and a misread stats reply would make every
reconcile re-add or delete the wrong flows. So every message is unpacked here field by
field from the OpenFlow 1.3 layouts (independently of wire.py's own formats) and, where
Ryu has a parser or a serializer for it, cross-checked against Ryu, an independent
implementation: its parser must read back every flow the compiler makes (ROUND_TRIP_FLOWS
covers every shape), and its ONF bundle-add serializer must give the same bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from shapes import ROUND_TRIP_FLOWS

from ryu_ctfw import wire
from ryu_ctfw.compiler import (
    Action,
    Conjunction,
    Ct,
    Flow,
    Goto,
    Log,
    Match,
    Meter,
    Output,
    WriteMetadata,
)
from ryu_ctfw.ryu_compat import (
    RAW_XIDS,
    install_controller2_meter_id,
    install_raw_flow_stats_parser,
)

# As the app does at start: Ryu 4.34 cannot parse controller2's meter_id without it.
install_controller2_meter_id()

# The OpenFlow 1.3 layouts, spelled out from the spec rather than taken from wire.py.
OFP_HEADER = struct.Struct("!BBHI")  # version, type, length, xid
# ofp_flow_mod after the header: cookie, cookie_mask, table_id, command, idle_timeout,
# hard_timeout, priority, buffer_id, out_port, out_group, flags, pad[2]; the match at 48.
FLOW_MOD_BODY = struct.Struct("!QQBBHHHIIIH2x")
FLOW_MOD_MATCH_AT = 48
# ONF bundle-add (OpenFlow 1.3 extension 230): ofp_experimenter_header (experimenter,
# exp_type), bundle_id, pad[2], flags; the inner message at 24.
BUNDLE_ADD_BODY = struct.Struct("!IIIxxH")
BUNDLE_ADD_MESSAGE_AT = 24
# ofp_multipart_reply after the header: type, flags, pad[4].
MULTIPART_BODY = struct.Struct("!HH4x")
# ofp_flow_stats up to its match: length, table_id, pad, duration_sec, duration_nsec,
# priority, idle_timeout, hard_timeout, flags, pad[4], cookie, packet_count, byte_count.
FLOW_STATS_HEAD = struct.Struct("!HBxIIHHHH4xQQQ")
OFPMT_OXM = 1
DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser)  # all Ryu's parsers need of one
OFPMP_DESC, OFPMP_FLOW, OFPMP_TABLE, OFPMP_PORT_STATS = 0, 1, 3, 4
OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY = 18, 19
ANY = 0xFFFFFFFF


# Ryu's names for the fields of a Match, and the name of the OF field per protocol: written
# out here from OpenFlow 1.3 and Ryu's OXM table, independently of fields.py.
_RYU_NAMES = {
    "in_port": "in_port", "eth_src": "eth_src", "eth_dst": "eth_dst", "eth_type": "eth_type",
    "vlan_tci": "vlan_vid", "ipv4_src": "ipv4_src", "ipv6_src": "ipv6_src",
    "ipv4_dst": "ipv4_dst", "ipv6_dst": "ipv6_dst", "conj_id": "conj_id",
    "ip_frag": "ip_frag", "ip_proto": "ip_proto", "nd_target": "ipv6_nd_target",
    "nd_sll": "ipv6_nd_sll", "nd_tll": "ipv6_nd_tll", "arp_spa": "arp_spa",
    "arp_sha": "arp_sha", "ct_state": "ct_state", "ct_mark": "ct_mark", "metadata": "metadata",
}  # fmt: skip
_FRAG_BITS: dict[str, Any] = {"later": 3, "not_later": (0, 2)}  # Ryu: (value, mask)


def ryu_fields(m: Match) -> dict[str, Any]:
    """The fields Ryu's OFPMatch should read from the match's bytes."""
    out: dict[str, Any] = {}
    for attr, value in m._asdict().items():
        if value is None:
            continue
        if attr in ("tp_src", "tp_dst"):
            name = ("tcp_" if m.ip_proto == 6 else "udp_") + attr[3:]
            out[name] = value[0] if value[1] == 0xFFFF else value
        elif attr == "icmp_type":
            out["icmpv6_type" if m.eth_type == 0x86DD else "icmpv4_type"] = value
        elif attr == "eth_dst" and "/" in value:
            out["eth_dst"] = tuple(value.split("/"))
        elif attr in ("ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst") and "/" in value:
            net = ipaddress.ip_network(value)
            out[attr] = (str(net.network_address), str(net.netmask))
        elif attr == "ct_state":
            out["ct_state"] = (value.value, value.mask)
        elif attr == "ip_frag":
            out["ip_frag"] = _FRAG_BITS[value]
        else:
            out[_RYU_NAMES[attr]] = value
    return out


def ryu_actions(instructions: list[Any]) -> tuple[Action, ...]:
    """Ryu's parsed instructions as the compiler's actions (meter, applied, metadata, goto)."""
    names = {ofp.OFPP_CONTROLLER: "CONTROLLER", ofp.OFPP_FLOOD: "FLOOD"}
    out: list[Action] = []
    metadata: list[Action] = []
    goto: list[Action] = []
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionMeter):
            out.append(Meter(inst.meter_id))
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto.append(Goto(inst.table_id))
        elif isinstance(inst, parser.OFPInstructionWriteMetadata):
            assert inst.metadata_mask == 0xFFFF_FFFF_FFFF_FFFF
            metadata.append(WriteMetadata(inst.metadata))
        else:
            assert isinstance(inst, parser.OFPInstructionActions)
            assert inst.type == ofp.OFPIT_APPLY_ACTIONS
            for a in inst.actions:
                if isinstance(a, parser.OFPActionOutput):
                    name = names.get(a.port)
                    if name == "CONTROLLER":
                        out.append(Output(name, a.max_len))
                    else:
                        assert a.max_len == 0
                        out.append(Output(name or a.port))
                elif isinstance(a, parser.NXActionController2):
                    out.append(Log(a.meter_id, a.max_len))
                elif isinstance(a, parser.NXActionConjunction):
                    out.append(Conjunction(a.id, a.clause + 1, a.n_clauses))  # 0-based on the wire
                else:
                    assert isinstance(a, parser.NXActionCT), a
                    assert (a.zone_src, a.alg) in (("", 0), (None, 0))
                    marks = [n.value for n in a.actions if n.key == "ct_mark"]
                    assert len(marks) == len(a.actions) <= 1
                    out.append(Ct(bool(a.flags & 1), None if a.recirc_table == 255 else
                                  a.recirc_table, a.zone_ofs_nbits or None,
                                  marks[0] if marks else None))  # fmt: skip
    return (*out, *metadata, *goto)


def flow_id(flow: Flow) -> str:
    return f"t{flow.table}p{flow.priority}:{flow.match.text() or '(all)'}"


def padded(n: int) -> int:
    return n + (-n % 8)


def ryu_parse(msg: bytes) -> Any:
    """The message as Ryu's own parser reads it."""
    version, msg_type, length, xid = OFP_HEADER.unpack_from(msg)
    return ofproto_parser.msg(DP, version, msg_type, length, xid, msg)


def oxm_tlvs(match: bytes) -> list[tuple[int, int, bool, bytes]]:
    """(class, field, has_mask, payload) of each OXM TLV in an ofp_match, walked by hand."""
    _type, length = struct.unpack_from("!HH", match)
    out, at = [], 4
    while at < length:
        oxm_class, field_and_mask, size = struct.unpack_from("!HBB", match, at)
        out.append(
            (oxm_class, field_and_mask >> 1, bool(field_and_mask & 1), match[at + 4 :][:size])
        )
        at += 4 + size
    assert at == length, "the TLVs overrun the ofp_match length"
    return out


# --- flow-mods -----------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_a_flow_add_is_an_ofpt_flow_mod_add_of_the_flow(flow: Flow) -> None:
    msg = wire.flow_add(flow)
    version, msg_type, length, _xid = OFP_HEADER.unpack_from(msg)
    assert (version, msg_type, length) == (4, 14, len(msg))
    (cookie, cookie_mask, table, command, idle, hard, priority, buffer_id, out_port, out_group,
     flags) = FLOW_MOD_BODY.unpack_from(msg, OFP_HEADER.size)  # fmt: skip
    assert (cookie, cookie_mask, table, command) == (flow.cookie, 0, flow.table, ofp.OFPFC_ADD)
    assert (idle, hard, priority, flags) == (0, 0, flow.priority, 0)
    assert (buffer_id, out_port, out_group) == (ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY)
    # The match, as Ryu reads it, is the flow's match...
    match = parser.OFPMatch.parser(msg, FLOW_MOD_MATCH_AT)
    assert dict(match._fields2) == ryu_fields(flow.match)
    assert len(match._fields2) == len(ryu_fields(flow.match))  # each field once
    # ...and everything after it (padded to 8) is the instructions: none for a drop.
    rest = msg[FLOW_MOD_MATCH_AT + padded(match.length) :]
    assert rest == wire.instructions_bytes(flow.actions)
    assert (rest == b"") == (flow.actions == ())
    # Ryu's flow-mod parser agrees on all of it, instructions included.
    mod = ryu_parse(msg)
    assert isinstance(mod, parser.OFPFlowMod)
    assert (mod.cookie, mod.table_id, mod.priority, mod.command) == (
        flow.cookie, flow.table, flow.priority, ofp.OFPFC_ADD,
    )  # fmt: skip
    assert dict(mod.match._fields2) == ryu_fields(flow.match)
    assert ryu_actions(mod.instructions) == flow.actions
    assert (mod.instructions == []) == (flow.actions == ())


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_a_flow_delete_is_a_strict_delete_of_that_cookie_only(flow: Flow) -> None:
    match = wire.match_bytes(flow.match)
    msg = wire.flow_delete(
        table=flow.table, priority=flow.priority, match=match, cookie=flow.cookie
    )
    version, msg_type, length, _xid = OFP_HEADER.unpack_from(msg)
    assert (version, msg_type, length) == (4, 14, len(msg))
    (cookie, cookie_mask, table, command, _idle, _hard, priority, buffer_id, out_port,
     out_group, _flags) = FLOW_MOD_BODY.unpack_from(msg, OFP_HEADER.size)  # fmt: skip
    assert command == ofp.OFPFC_DELETE_STRICT == 4
    assert (cookie, cookie_mask) == (flow.cookie, 0xFFFF_FFFF_FFFF_FFFF)
    assert (table, priority) == (flow.table, flow.priority)
    assert (buffer_id, out_port, out_group) == (ANY, ANY, ANY)
    # The match bytes as given, and nothing after them: no instructions.
    assert msg[FLOW_MOD_MATCH_AT:] == match
    mod = ryu_parse(msg)
    assert dict(mod.match._fields2) == ryu_fields(flow.match)
    assert mod.instructions == []


def test_with_xid_rewrites_the_xid_and_nothing_else() -> None:
    msg = wire.flow_add(ROUND_TRIP_FLOWS[0])
    out = wire.with_xid(msg, 0xDEADBEEF)
    assert OFP_HEADER.unpack_from(out)[3] == 0xDEADBEEF
    assert out[:4] + out[8:] == msg[:4] + msg[8:]
    assert len(out) == len(msg)


# --- bundles -------------------------------------------------------------------------------


class RawInner(parser.MsgBase):
    """A message Ryu serializes as the given bytes with its xid written in (by hand here)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(DP)
        self.data = data

    def serialize(self) -> None:
        buf = bytearray(self.data)
        struct.pack_into("!I", buf, 4, self.xid)
        self.buf = buf


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS[::11], ids=flow_id)
def test_a_bundle_add_wraps_the_message_under_the_same_xid(flow: Flow) -> None:
    inner = wire.with_xid(wire.flow_add(flow), 0x11223344)  # an xid that must be replaced
    bundle_id, flags, xid = 0xA1B2C3D4, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED, 0x0BADF00D
    msg = wire.bundle_add(bundle_id, flags, inner, xid)
    version, msg_type, length, msg_xid = OFP_HEADER.unpack_from(msg)
    assert (version, msg_type, length, msg_xid) == (4, 4, len(msg), xid)
    experimenter, exp_type, bid, bflags = BUNDLE_ADD_BODY.unpack_from(msg, OFP_HEADER.size)
    assert (experimenter, exp_type) == (0x4F4E4600, 2301)
    assert (bid, bflags) == (bundle_id, flags)
    carried = msg[BUNDLE_ADD_MESSAGE_AT:]
    assert len(carried) == len(inner)
    assert OFP_HEADER.unpack_from(carried)[3] == xid
    assert carried[:4] + carried[8:] == inner[:4] + inner[8:]
    # Ryu's ONF bundle-add serializer, given the same inner message, makes the same bytes.
    ryu_msg = parser.ONFBundleAddMsg(DP, bundle_id, flags, RawInner(inner), [])
    ryu_msg.set_xid(xid)
    ryu_msg.serialize()
    assert bytes(ryu_msg.buf) == msg


# --- flow stats read back ------------------------------------------------------------------


def stats_entry(flow: Flow, packets: int, nbytes: int, sec: int, nsec: int) -> bytes:
    """One ofp_flow_stats as a switch sends it for `flow` (timeouts and flags set, to be
    skipped), with the match and instructions as wire.py packs them."""
    match = wire.match_bytes(flow.match)
    instructions = wire.instructions_bytes(flow.actions)
    length = FLOW_STATS_HEAD.size + len(match) + len(instructions)
    head = FLOW_STATS_HEAD.pack(
        length, flow.table, sec, nsec, flow.priority, 300, 600, 0x1F, flow.cookie,
        packets, nbytes,
    )  # fmt: skip
    return head + match + instructions


def multipart_reply(mp_type: int, body: bytes, xid: int = 77, flags: int = 0) -> bytes:
    length = OFP_HEADER.size + MULTIPART_BODY.size + len(body)
    return (
        OFP_HEADER.pack(4, OFPT_MULTIPART_REPLY, length, xid)
        + MULTIPART_BODY.pack(mp_type, flags)
        + body
    )


def stats_sample() -> list[Flow]:
    """Flows whose ofp_match is padded and unpadded, with and without instructions."""
    every_fifth = ROUND_TRIP_FLOWS[::5]
    sample = every_fifth + [f for f in ROUND_TRIP_FLOWS if not f.actions][:2]
    unpadded = [
        f for f in sample if struct.unpack_from("!HH", wire.match_bytes(f.match))[1] % 8 == 0
    ]
    drops = [f for f in sample if not f.actions]
    assert unpadded and len(unpadded) < len(sample) and drops and len(drops) < len(sample)
    return sample


def test_flow_stats_entries_cut_a_reply_into_its_flows() -> None:
    flows = stats_sample()
    counters = [(1000 + i, 64_000 + 7 * i, 3 + i, 250_000_000 * (i % 4)) for i in range(len(flows))]
    body = b"".join(stats_entry(f, *c) for f, c in zip(flows, counters, strict=True))
    reply = multipart_reply(OFPMP_FLOW, body)
    assert wire.is_flow_stats_reply(reply)
    # The hand-built reply is a valid one: Ryu reads back what was put in.
    ryu_reply = ryu_parse(reply)
    assert isinstance(ryu_reply, parser.OFPFlowStatsReply)
    assert [(s.table_id, s.priority, s.cookie, s.packet_count) for s in ryu_reply.body] == [
        (f.table, f.priority, f.cookie, c[0]) for f, c in zip(flows, counters, strict=True)
    ]
    assert [dict(s.match._fields2) for s in ryu_reply.body] == [ryu_fields(f.match) for f in flows]
    raw = list(wire.flow_stats_entries(reply))
    assert len(raw) == len(flows)
    for got, flow, (packets, nbytes, sec, nsec) in zip(raw, flows, counters, strict=True):
        assert got.key == wire.wire_key(flow), flow.text()
        assert got.cookie == flow.cookie
        assert got.instructions == wire.instructions_bytes(flow.actions), flow.text()
        assert (got.packets, got.bytes) == (packets, nbytes)
        assert got.duration == pytest.approx(sec + nsec / 1e9)


def test_ryu_hands_back_raw_entries_only_for_the_xids_asked_raw() -> None:
    """The sync reads flow stats raw through a hook in Ryu's parser table; every other
    reply, and a flow-stats reply to any other request, must still be parsed by Ryu."""
    install_raw_flow_stats_parser()
    install_raw_flow_stats_parser()  # installing twice wraps once
    flows = stats_sample()
    body = b"".join(stats_entry(f, 1, 2, 3, 4) for f in flows)
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser, **{RAW_XIDS: {77}})

    def parse(msg: bytes) -> Any:
        version, msg_type, length, xid = OFP_HEADER.unpack_from(msg)
        return ofproto_parser.msg(dp, version, msg_type, length, xid, msg)

    raw = parse(multipart_reply(OFPMP_FLOW, body, xid=77, flags=1))
    assert isinstance(raw, parser.OFPFlowStatsReply)
    assert (raw.xid, raw.flags) == (77, 1)  # REPLY_MORE kept: the sync waits for the rest
    assert raw.body == list(wire.flow_stats_entries(multipart_reply(OFPMP_FLOW, body)))
    parsed = parse(multipart_reply(OFPMP_FLOW, body, xid=78))
    assert [type(s) for s in parsed.body] == [parser.OFPFlowStats] * len(flows)
    assert [dict(s.match._fields2) for s in parsed.body] == [ryu_fields(f.match) for f in flows]
    table_stats = parse(multipart_reply(OFPMP_TABLE, bytes(24), xid=77))
    assert isinstance(table_stats, parser.OFPTableStatsReply), "other replies stay Ryu's"


def test_flow_stats_entries_of_an_empty_reply_are_none() -> None:
    assert list(wire.flow_stats_entries(multipart_reply(OFPMP_FLOW, b""))) == []


def test_only_a_flow_stats_reply_is_taken_for_one() -> None:
    entry = stats_entry(ROUND_TRIP_FLOWS[0], 1, 2, 3, 4)
    reply = multipart_reply(OFPMP_FLOW, entry)
    assert wire.is_flow_stats_reply(reply)
    assert wire.is_flow_stats_reply(reply[:16])  # the header alone: an empty reply
    for mp_type in (OFPMP_DESC, OFPMP_TABLE, OFPMP_PORT_STATS, 0xFFFF):
        assert not wire.is_flow_stats_reply(multipart_reply(mp_type, entry)), mp_type
    request = bytearray(reply)
    request[1] = OFPT_MULTIPART_REQUEST
    assert not wire.is_flow_stats_reply(bytes(request))
    for short in (b"", reply[:1], reply[:10], reply[:15]):
        assert not wire.is_flow_stats_reply(short), short
    assert not wire.is_flow_stats_reply(wire.flow_add(ROUND_TRIP_FLOWS[0]))


# --- ofp_match -----------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_a_match_is_padded_to_8_and_its_length_counts_the_tlvs_only(flow: Flow) -> None:
    match = wire.match_bytes(flow.match)
    match_type, length = struct.unpack_from("!HH", match)
    assert match_type == OFPMT_OXM
    assert len(match) % 8 == 0
    tlvs = oxm_tlvs(match)
    assert length == 4 + sum(4 + len(payload) for *_, payload in tlvs)
    assert len(match) == padded(length)
    assert match[length:] == bytes(len(match) - length)  # the padding is zeros
    # One TLV per field the flow matches on (ports of tcp/udp and ct_state carry masks).
    set_fields = [name for name, value in flow.match._asdict().items() if value is not None]
    assert len(tlvs) == len(set_fields)


def test_the_empty_match_is_eight_bytes() -> None:
    assert wire.match_bytes(Match()) == bytes([0, 1, 0, 4, 0, 0, 0, 0])


def test_distinct_matches_give_distinct_bytes() -> None:
    by_key = {flow.key: wire.wire_key(flow) for flow in ROUND_TRIP_FLOWS}
    assert len(by_key) == len(ROUND_TRIP_FLOWS)
    assert len(set(by_key.values())) == len(by_key)
    by_match = {flow.match: wire.match_bytes(flow.match) for flow in ROUND_TRIP_FLOWS}
    assert len(set(by_match.values())) == len(by_match)


# --- decoding: wire.py's bytes back into flows -------------------------------------------------


def test_the_round_trip_set_covers_every_kind_of_field_and_action() -> None:
    text = "\n".join(f.text() for f in ROUND_TRIP_FLOWS)
    for part in (
        "arp_spa=", "arp_sha=", "nd_target=2001:db8::3", "nw_src=", "ipv6_src=fd00::3",
        "nd_sll=52:54", "nd_tll=52:54", "nd_sll=00:00:00:00:00:00", "vlan_tci=0x1000/0x1000",
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00", "nw_frag=later", "ct_mark=0x",
        "tp_dst=0x1f40/0xffc0", "tp_dst=0x8000/0x8000", "tp_dst=53", "tcp6", "udp6",
        "icmp_type=128", "icmp_type=8", "-rel-rpl+trk", "+est-rpl+trk", "+est+rpl+trk",
        "+inv+trk", "+rel+trk", "in_port=65000", "output:65000", "FLOOD", "goto_table:2",
        "meter:5,CONTROLLER:128", "ct(table=1,zone=65535)",
        "ct(commit,zone=65535,exec(set_field:0x10002->ct_mark))",
        "exec(set_field:0xffffffff->ct_mark)",
    ):  # fmt: skip
        assert part in text, part


@pytest.mark.parametrize("flow", ROUND_TRIP_FLOWS, ids=flow_id)
def test_a_match_and_its_actions_decode_back_from_their_bytes(flow: Flow) -> None:
    assert wire.match_from_bytes(wire.match_bytes(flow.match)) == flow.match
    assert wire.actions_from_bytes(wire.instructions_bytes(flow.actions)) == flow.actions


def raw_entry(flow: Flow, match: bytes | None = None, instructions: bytes | None = None) -> Any:
    """A flow-stats entry for `flow` as the sync reads it, with parts replaced if given."""
    key = (flow.table, flow.priority, wire.match_bytes(flow.match) if match is None else match)
    instructions = wire.instructions_bytes(flow.actions) if instructions is None else instructions
    return wire.RawFlow(key, flow.cookie, instructions, 0, 0, 0.0)


def test_every_flow_read_back_raw_decodes_to_the_flow() -> None:
    for flow in ROUND_TRIP_FLOWS:
        assert wire.flow_from_raw(raw_entry(flow)) == flow, flow.text()


def oxm(cls: int, field: int, value: bytes, mask: bytes | None = None) -> bytes:
    """One OXM TLV, laid out by hand (class, field << 1 | hasmask, length, payload)."""
    payload = value + (mask or b"")
    return struct.pack("!HBB", cls, field << 1 | (mask is not None), len(payload)) + payload


def ofp_match(*tlvs: bytes) -> bytes:
    body = b"".join(tlvs)
    data = struct.pack("!HH", OFPMT_OXM, 4 + len(body)) + body
    return data + bytes(-len(data) % 8)


OF, NX = 0x8000, 0x0001
IN_PORT_2 = oxm(OF, 0, struct.pack("!I", 2))
ETH_IP = oxm(OF, 5, struct.pack("!H", 0x0800))
ETH_IPV6 = oxm(OF, 5, struct.pack("!H", 0x86DD))


def test_hand_laid_matches_decode_as_the_compiler_spells_them() -> None:
    assert wire.match_from_bytes(ofp_match()) == Match()
    assert wire.match_from_bytes(ofp_match(IN_PORT_2, ETH_IP)) == Match(in_port=2, eth_type=0x0800)
    tagged = ofp_match(IN_PORT_2, oxm(OF, 6, b"\x10\x00", b"\x10\x00"))
    assert wire.match_from_bytes(tagged) == Match(in_port=2, vlan_tci=(0x1000, 0x1000))
    group = ofp_match(oxm(OF, 3, bytes([1, 0, 0, 0, 0, 0]), bytes([1, 0, 0, 0, 0, 0])))
    assert wire.match_from_bytes(group) == Match(eth_dst="01:00:00:00:00:00/01:00:00:00:00:00")
    later = ofp_match(IN_PORT_2, ETH_IP, oxm(NX, 26, b"\x03"))
    assert wire.match_from_bytes(later) == Match(in_port=2, eth_type=0x0800, ip_frag="later")
    marked = ofp_match(oxm(NX, 105, struct.pack("!I", 0x2A), struct.pack("!I", 0x2A)),
                       oxm(NX, 107, struct.pack("!I", 0x10002)))  # fmt: skip
    assert wire.match_from_bytes(marked) == Match(ct_state=(0x2A, 0x2A), ct_mark=0x10002)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(ofp_match(ETH_IP, oxm(OF, 8, bytes([10]))), id="ip_dscp: never set"),
        pytest.param(
            ofp_match(ETH_IP, oxm(OF, 11, bytes([10, 0, 0, 0]), bytes([255, 0, 255, 0]))),
            id="ipv4_src with a mask that is no prefix",
        ),
        pytest.param(
            ofp_match(ETH_IP, oxm(OF, 12, bytes([10, 0, 0, 1]), bytes([255, 0, 0, 0]))),
            id="ipv4_dst network with host bits",
        ),
        pytest.param(
            ofp_match(oxm(OF, 0, struct.pack("!I", 2), struct.pack("!I", 0xFF))),
            id="masked in_port",
        ),
        pytest.param(ofp_match(ETH_IP, oxm(OF, 8, b"\x0a")), id="ip_dscp"),
        pytest.param(ofp_match(oxm(NX, 108, bytes(16))), id="ct_label"),
        pytest.param(ofp_match(oxm(0xFFFF, 1, bytes(8))), id="experimenter class"),
        pytest.param(
            ofp_match(ETH_IP, oxm(OF, 10, b"\x11"), oxm(OF, 13, b"\x00\x35")),
            id="tcp_src in a udp match",
        ),
        pytest.param(
            ofp_match(ETH_IPV6, oxm(OF, 10, b"\x3a"), oxm(OF, 19, b"\x88")),
            id="icmpv4 type in an icmp6 match",
        ),
        pytest.param(ofp_match(ETH_IP, IN_PORT_2), id="out of OVS's order"),
        pytest.param(ofp_match(IN_PORT_2, IN_PORT_2), id="a field twice"),
        pytest.param(ofp_match(ETH_IP, oxm(NX, 26, b"\x02", b"\x02")), id="unknown nw_frag"),
        pytest.param(
            ofp_match(oxm(NX, 107, struct.pack("!I", 1), struct.pack("!I", 1))), id="masked ct_mark"
        ),
    ],
)
def test_a_match_we_never_make_decodes_to_none(data: bytes) -> None:
    """The sync deletes what it cannot read back: it must never misread it as ours."""
    assert wire.match_from_bytes(data) is None
    flow = ROUND_TRIP_FLOWS[0]
    assert wire.flow_from_raw(raw_entry(flow, match=data)) is None


def apply_actions(*actions: bytes) -> bytes:
    body = b"".join(actions)
    return struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(body)) + body


def output(port: int, max_len: int = 0) -> bytes:
    return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, 16, port, max_len)


def ct_action(flags: int = 1, zone: int = 1, table: int = 0xFF, alg: int = 0,
              nested: bytes = b"") -> bytes:  # fmt: skip
    return struct.pack("!HHIHHIHB3xH", 0xFFFF, 24 + len(nested), 0x2320, 35, flags, 0, zone,
                       table, alg) + nested  # fmt: skip


def set_field(tlv: bytes) -> bytes:
    size = 4 + len(tlv)
    data = struct.pack("!HH", ofp.OFPAT_SET_FIELD, size + (-size % 8)) + tlv
    return data + bytes(-len(data) % 8)


CT_MARK_5 = set_field(oxm(NX, 107, struct.pack("!I", 5)))
GOTO_2 = struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, 2)
METER_5 = struct.pack("!HHI", ofp.OFPIT_METER, 8, 5)


def test_hand_laid_instructions_decode_as_the_compiler_spells_them() -> None:
    assert wire.actions_from_bytes(b"") == ()
    assert wire.actions_from_bytes(GOTO_2) == (Goto(2),)
    assert wire.actions_from_bytes(METER_5 + apply_actions(output(ofp.OFPP_CONTROLLER, 128))) == (
        Meter(5), Output("CONTROLLER", 128),
    )  # fmt: skip
    assert wire.actions_from_bytes(apply_actions(ct_action(nested=CT_MARK_5), output(3))) == (
        Ct(True, None, 1, 5), Output(3),
    )  # fmt: skip
    assert wire.actions_from_bytes(apply_actions(ct_action(0, 7, 1))) == (Ct(False, 1, 7, None),)
    assert wire.actions_from_bytes(apply_actions(output(ofp.OFPP_FLOOD))) == (Output("FLOOD"),)


def test_a_normal_output_left_by_an_older_version_still_reads_as_normal() -> None:
    actions = wire.actions_from_bytes(apply_actions(output(ofp.OFPP_NORMAL)))
    assert actions is not None and [a.text() for a in actions] == ["NORMAL"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            struct.pack("!HH4x", ofp.OFPIT_WRITE_ACTIONS, 24) + output(3), id="write-actions"
        ),
        pytest.param(struct.pack("!HH4x", ofp.OFPIT_CLEAR_ACTIONS, 8), id="clear-actions"),
        pytest.param(
            struct.pack("!HHIQQ", ofp.OFPIT_WRITE_METADATA, 24, 0, 1, 1), id="write-metadata"
        ),
        pytest.param(apply_actions(set_field(oxm(OF, 3, bytes(6)))), id="set_field eth_dst"),
        pytest.param(apply_actions(output(3, max_len=64)), id="max_len on a port"),
        pytest.param(apply_actions(ct_action(alg=21)), id="ct alg=ftp"),
        pytest.param(apply_actions(ct_action(flags=3)), id="ct force"),
        pytest.param(
            apply_actions(ct_action(nested=set_field(oxm(OF, 3, bytes(6))))),
            id="ct exec setting eth_dst",
        ),
        pytest.param(apply_actions(ct_action(nested=CT_MARK_5 + CT_MARK_5)), id="ct exec twice"),
        pytest.param(
            apply_actions(struct.pack("!HHIH6x", 0xFFFF, 16, 0x2320, 1)), id="another nicira action"
        ),
        pytest.param(GOTO_2 + METER_5, id="goto before meter"),
        pytest.param(apply_actions(), id="an empty apply-actions"),
        pytest.param(b"\xff" * 8, id="garbage"),
    ],
)
def test_instructions_we_never_make_decode_to_none(data: bytes) -> None:
    assert wire.actions_from_bytes(data) is None
    assert wire.flow_from_raw(raw_entry(ROUND_TRIP_FLOWS[0], instructions=data)) is None


@pytest.mark.parametrize(
    ("match", "instructions"),
    [
        (b"\xff" * 8, None),
        (b"", None),
        (ofp_match(IN_PORT_2)[:6], None),  # cut short
        (None, GOTO_2[:5]),
        (None, apply_actions(ct_action())[:20]),
    ],
    ids=["garbage match", "no match", "short match", "short goto", "short ct"],
)
def test_a_broken_entry_decodes_to_none_without_raising(
    match: bytes | None, instructions: bytes | None
) -> None:
    assert wire.flow_from_raw(raw_entry(ROUND_TRIP_FLOWS[0], match, instructions)) is None


def _stats_reply(entry: bytes) -> bytes:
    body = struct.pack("!HH4x", wire.OFPMP_FLOW, 0) + entry
    return struct.pack("!BBHI", 4, wire.OFPT_MULTIPART_REPLY, 8 + len(body), 7) + body


@pytest.mark.parametrize("length", [0, 8, 10_000])
def test_a_flow_stats_entry_whose_length_does_not_fit_is_malformed(length: int) -> None:
    # A zero length used to make the reader loop forever inside Ryu's receive loop.
    entry = bytearray(wire._STATS_ENTRY.size + 8)
    struct.pack_into("!H", entry, 0, length)
    struct.pack_into("!HH", entry, wire._STATS_ENTRY.size, 1, 4)
    with pytest.raises(wire.MalformedReply):
        list(wire.flow_stats_entries(_stats_reply(bytes(entry))))


def test_a_truncated_flow_stats_entry_is_malformed() -> None:
    with pytest.raises(wire.MalformedReply):
        list(wire.flow_stats_entries(_stats_reply(b"\x00\x40" + bytes(10))))
