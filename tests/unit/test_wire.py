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

import struct
from types import SimpleNamespace
from typing import Any

import pytest
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from shapes import ROUND_TRIP_FLOWS

from ryu_ctfw import wire
from ryu_ctfw.compiler import Flow, Match
from ryu_ctfw.switch import (
    RAW_XIDS,
    from_ofp_actions,
    from_ofp_match,
    install_raw_flow_stats_parser,
)

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
    assert from_ofp_match(match) == flow.match
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
    assert from_ofp_match(mod.match) == flow.match
    assert from_ofp_actions(DP, mod.instructions) == flow.actions
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
    assert from_ofp_match(mod.match) == flow.match
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
    sample = ROUND_TRIP_FLOWS[::5]
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
    assert [from_ofp_match(s.match) for s in ryu_reply.body] == [f.match for f in flows]
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
    assert [from_ofp_match(s.match) for s in parsed.body] == [f.match for f in flows]
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
