"""multipart.check: every multipart reply Ryu 4.34 parses is checked by its lengths first.

For each type a valid reply, built by hand with struct from the shapes of OpenFlow 1.3,
passes the checker and is what Ryu's own parser reads; the same reply with a length zeroed,
or cut short, is a MalformedReply, through the installed hook too (raised, not looped on:
each hook call runs in a thread joined with a timeout). Ryu's parser alone loops forever
or raises struct.error on such replies, as the first tests show.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_ctfw import multipart, ryu_compat, wire
from ryu_ctfw.compiler import Ct, Goto, Match, Meter, Output

HOOK_TIMEOUT = 10.0  # seconds; a check takes microseconds, a regression loops forever
DP = SimpleNamespace(id=0x2A)


def reply(kind: int, body: bytes, xid: int = 5) -> bytes:
    head = struct.pack("!BBHIHH4x", 4, ofp.OFPT_MULTIPART_REPLY, 16 + len(body), xid, kind, 0)
    return head + body


def zeroed(body: bytes, at: int) -> bytes:
    """`body` with the 16-bit length field at `at` set to 0."""
    return set_length(body, at, 0)


def set_length(body: bytes, at: int, length: int) -> bytes:
    return body[:at] + struct.pack("!H", length) + body[at + 2 :]


def ryu_alone(buf: bytes) -> Any:
    """The reply as Ryu's own multipart parser reads it (not the hook)."""
    return parser.OFPMultipartReply.parser(DP, 4, ofp.OFPT_MULTIPART_REPLY, len(buf), 5, buf)


def through_hook(buf: bytes, parse: Any = None) -> Any:
    """The installed hook's result for `buf`, run in a thread so that a loop fails the test
    instead of hanging it; an exception is returned, not raised."""
    ryu_compat.install_raw_flow_stats_parser()
    parse = parse or (lambda b: parser._MSG_PARSERS[ofp.OFPT_MULTIPART_REPLY](
        DP, 4, ofp.OFPT_MULTIPART_REPLY, len(b), 5, b))  # fmt: skip
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(parse(buf))
        except Exception as e:  # the result under test
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HOOK_TIMEOUT)
    assert not thread.is_alive(), "the hook did not return: it loops on this reply"
    return out[0]


# --- the shapes, by hand -------------------------------------------------------------------

OUTPUT = struct.pack("!HHIH6x", 0, 16, 3, 0)
GROUP_ACTION = struct.pack("!HHI", 22, 8, 7)


class Case(NamedTuple):
    """A valid body of one multipart type, and bodies of it that Ryu cannot parse."""

    name: str
    kind: int
    body: bytes
    reply_class: type
    bad: dict[str, bytes]  # what is wrong -> the bad body


def fixed(name: str, kind: int, entry: bytes, count: int, cls: type) -> Case:
    """Fixed-size entries: `count` of them (one for a single-entry type)."""
    body = entry * count
    bad = {"truncated": body[:-1], "short by an entry's tail": body[: len(body) - 4]}
    if count == 1:
        bad |= {"empty": b"", "two entries": body * 2}
    return Case(name, kind, body, cls, bad)


def varied(name: str, kind: int, body: bytes, cls: type, lengths: dict[str, int]) -> Case:
    """Variable-length entries: each named 16-bit length zeroed, and the body cut short."""
    bad = {f"zero {what}": zeroed(body, at) for what, at in lengths.items()}
    bad |= {f"too long {what}": set_length(body, at, 0xFFF8) for what, at in lengths.items()}
    bad |= {"truncated": body[:-1], "cut inside the first entry's fixed part": body[:4]}
    return Case(name, kind, body, cls, bad)


def flow_case() -> Case:
    """Two flow-stats entries as wire.py packs them: a match, then meter, apply-actions
    (output and a ct with a set-field nested in it) and goto-table."""
    head = struct.Struct("!HBxIIHHHH4xQQQ")
    match = wire.match_bytes(Match(in_port=2, eth_type=0x0800, ip_proto=6))
    actions = (Meter(1), Output(3), Ct(commit=True, table=None, zone=5, mark=9), Goto(2))
    instructions = wire.instructions_bytes(actions)
    assert instructions[8:10] == b"\0\x04"  # meter (8 bytes), then apply-actions
    length = head.size + len(match) + len(instructions)
    entry = head.pack(length, 0, 1, 2, 100, 0, 0, 0, 0xC7, 10, 1000) + match + instructions
    apply = head.size + len(match) + 8
    ct = apply + 8 + 16  # the apply header, then the 16-byte output
    lengths = {
        "entry length": 0,
        "match length": 50,
        "meter instruction length": head.size + len(match) + 2,
        "apply-actions length": apply + 2,
        "output action length": apply + 8 + 2,
        "ct action length": ct + 2,
        "set-field action nested in ct": ct + 24 + 2,
        "second entry length": len(entry),
    }
    return varied("FLOW", 1, entry * 2, parser.OFPFlowStatsReply, lengths)


def group_case() -> Case:
    entry = struct.pack("!H2xII4xQQII", 40 + 32, 7, 1, 10, 1000, 3, 4)
    entry += struct.pack("!QQ", 1, 2) * 2
    case = varied("GROUP", 6, entry, parser.OFPGroupStatsReply, {"entry length": 0})
    case.bad["length not a whole number of counters"] = struct.pack("!H", 40 + 24) + entry[2:]
    return case


def group_desc_case() -> Case:
    bucket = struct.pack("!HHII4x", 16 + 24, 1, 0xFFFFFFFF, 0xFFFFFFFF) + OUTPUT + GROUP_ACTION
    entry = struct.pack("!HBxI", 8 + len(bucket) * 2, 0, 7) + bucket * 2
    lengths = {"entry length": 0, "bucket length": 8, "action length": 8 + 16 + 2,
               "second bucket's action": 8 + len(bucket) + 16 + 16 + 2}  # fmt: skip
    return varied("GROUP_DESC", 7, entry, parser.OFPGroupDescStatsReply, lengths)


def meter_case() -> Case:
    entry = struct.pack("!IH6xIQQII", 1, 40 + 16, 2, 10, 1000, 3, 4) + struct.pack("!QQ", 5, 6)
    case = varied("METER", 9, entry * 2, parser.OFPMeterStatsReply, {"entry length": 4})
    case.bad["length not a whole number of band stats"] = entry[:4] + b"\0\x30" + entry[6:]
    return case


def meter_config_case() -> Case:
    drop = struct.pack("!HHII4x", 1, 16, 1000, 100)
    dscp = struct.pack("!HHIIB3x", 2, 16, 2000, 200, 1)
    entry = struct.pack("!HHI", 8 + 32, 1, 1) + drop + dscp
    lengths = {"entry length": 0, "band length": 8 + 2, "second band length": 24 + 2}
    case = varied("METER_CONFIG", 10, entry, parser.OFPMeterConfigStatsReply, lengths)
    case.bad["band of unknown type"] = entry[:8] + b"\0\x09" + entry[10:]
    return case


def table_features_case() -> Case:
    def prop(kind: int, data: bytes) -> bytes:
        raw = struct.pack("!HH", kind, 4 + len(data)) + data
        return raw + bytes(-len(raw) % 8)

    props = [
        prop(0, struct.pack("!HHHH", 1, 4, 4, 4)),  # instruction ids: goto, apply-actions
        prop(2, bytes((1, 2, 3))),  # next tables
        prop(6, struct.pack("!HH", 0, 4) + struct.pack("!HHI", 0xFFFF, 8, 0x2320)),  # action ids
        prop(8, struct.pack("!II", 0x80000004, 0x80000A02)),  # OXM ids: in_port, eth_type
        prop(0xFFFF, struct.pack("!III", 0x2320, 1, 42)),  # experimenter, one data word
    ]
    head = struct.Struct("!HB5x32sQQII")
    body = b"".join(props)
    entry = head.pack(head.size + len(body), 0, b"classifier", 0, 0, 3, 1_000_000) + body
    at = [head.size]
    for p in props:
        at.append(at[-1] + len(p))
    lengths = {
        "entry length": 0,
        "property length": at[0] + 2,
        "instruction id length": at[0] + 4 + 2,
        "action id length": at[2] + 4 + 2,
        "experimenter action id length": at[2] + 8 + 2,
        "experimenter property length": at[4] + 2,
    }
    return varied("TABLE_FEATURES", 12, entry * 2, parser.OFPTableFeaturesStatsReply, lengths)


PORT = struct.pack("!I4x6s2x16sIIIIIIII", 1, b"\x52\x54\0\0\0\1", b"tap2", 0, 4, *(0,) * 4, 10, 10)
CASES = [
    fixed(
        "DESC",
        0,
        struct.pack("!256s256s256s32s256s", b"Nicira", b"OVS", b"3.3", b"None", b"br0"),
        1,
        parser.OFPDescStatsReply,
    ),
    flow_case(),
    fixed("AGGREGATE", 2, struct.pack("!QQI4x", 10, 1000, 3), 1, parser.OFPAggregateStatsReply),
    fixed("TABLE", 3, struct.pack("!B3xIQQ", 0, 3, 100, 90), 2, parser.OFPTableStatsReply),
    fixed(
        "PORT_STATS", 4, struct.pack("!I4x12QII", 1, *range(12), 5, 6), 2, parser.OFPPortStatsReply
    ),
    fixed("QUEUE", 5, struct.pack("!IIQQQII", 1, 0, 10, 1, 0, 5, 6), 2, parser.OFPQueueStatsReply),
    group_case(),
    group_desc_case(),
    fixed(
        "GROUP_FEATURES",
        8,
        struct.pack("!II4I4I", 15, 7, *(8,) * 4, *(1,) * 4),
        1,
        parser.OFPGroupFeaturesStatsReply,
    ),
    meter_case(),
    meter_config_case(),
    fixed(
        "METER_FEATURES",
        11,
        struct.pack("!IIIBB2x", 1000, 6, 15, 8, 0),
        2,
        parser.OFPMeterFeaturesStatsReply,
    ),
    table_features_case(),
    fixed("PORT_DESC", 13, PORT, 2, parser.OFPPortDescStatsReply),
    Case(
        "EXPERIMENTER",
        0xFFFF,
        struct.pack("!II8s", 0x2320, 1, b"opaque!!"),
        parser.OFPExperimenterStatsReply,
        {
            "empty": b"",
            "header truncated": struct.pack("!I", 0x2320),
            "a 4-byte tail Ryu reads a header in": struct.pack("!II12s", 0x2320, 1, b"x"),
        },
    ),
]
BAD = [(c, what, body) for c in CASES for what, body in c.bad.items()]
BAD_IDS = [f"{c.name}-{what}" for c, what, _ in BAD]


def test_every_type_ryu_parses_has_a_case_and_a_shape() -> None:
    ryus = parser.OFPMultipartReply._STATS_MSG_TYPES
    assert {c.kind for c in CASES} == set(ryus) == set(multipart.SHAPES)
    for kind, shape in multipart.SHAPES.items():
        assert shape.single == ryus[kind].cls_body_single_struct, shape.name
        assert ofp.__dict__[f"OFPMP_{shape.name}"] == kind


def test_the_nested_tables_are_ryus() -> None:
    # The types Ryu parses in each nested loop, and the size its class steps over.
    ryu_actions = parser.OFPAction._ACTION_TYPES
    assert set(multipart.ACTION_SIZES) == set(ryu_actions)
    for kind, size in multipart.ACTION_SIZES.items():
        if size is not None:
            assert size == ryu_actions[kind].cls_action_len, kind
    assert set(multipart.INSTRUCTION_SIZES) == set(parser.OFPInstruction._INSTRUCTION_TYPES)
    assert set(parser.OFPMeterBandHeader._METER_BAND) == multipart.METER_BAND_TYPES
    walked = set(multipart._PROPERTY_BODIES) | {ofp.OFPTFPT_NEXT_TABLES,
                                                  ofp.OFPTFPT_NEXT_TABLES_MISS}  # fmt: skip
    assert walked == set(parser.OFPTableFeatureProp._TYPES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_valid_reply_passes_and_is_what_ryu_parses(case: Case) -> None:
    buf = reply(case.kind, case.body)
    multipart.check(buf)
    ryus = ryu_alone(buf)
    assert isinstance(ryus, case.reply_class)
    hooked = through_hook(buf)
    assert isinstance(hooked, case.reply_class), hooked
    assert str(hooked.body) == str(ryus.body)


def test_the_valid_replies_are_read_as_built() -> None:
    flows = ryu_alone(reply(1, CASES[1].body)).body
    assert [(f.priority, f.cookie, len(f.instructions)) for f in flows] == [(100, 0xC7, 3)] * 2
    ct = flows[0].instructions[1].actions[1]
    assert (ct.zone_ofs_nbits, [a.key for a in ct.actions]) == (5, ["ct_mark"])
    desc = ryu_alone(reply(7, group_desc_case().body)).body[0]
    assert [len(b.actions) for b in desc.buckets] == [2, 2]
    tf = ryu_alone(reply(12, table_features_case().body)).body[0]
    assert [p.type for p in tf.properties] == [0, 2, 6, 8, 0xFFFF]
    assert tf.properties[4].data == [42]


@pytest.mark.parametrize(("case", "what", "body"), BAD, ids=BAD_IDS)
def test_a_malformed_reply_is_refused_by_the_checker_and_the_hook(
    case: Case, what: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    buf = reply(case.kind, body)
    with pytest.raises(wire.MalformedReply, match=rf"\b{case.name}\b.* byte \d+"):
        multipart.check(buf)
    error = through_hook(buf)
    assert isinstance(error, wire.MalformedReply), error
    assert "sent a malformed multipart reply, closing" in caplog.text


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (reply(0x7777, b""), "unknown type 30583"),
        (reply(3, b"")[:15], "multipart reply of 15 bytes"),
        (reply(3, b"") + bytes(24), "of 40 bytes says it has 16"),
    ],
    ids=["unknown-type", "short-header", "length-field"],
)
def test_a_reply_that_is_no_multipart_reply_is_refused(buf: bytes, message: str) -> None:
    with pytest.raises(wire.MalformedReply, match=message):
        multipart.check(buf)
    assert isinstance(through_hook(buf), wire.MalformedReply)


def test_the_message_names_the_type_the_entry_and_the_fault() -> None:
    match = wire.match_bytes(Match(in_port=2, eth_type=0x0800, ip_proto=6))
    nested = 16 + 48 + len(match) + 8 + 8 + 16 + 24  # meter, apply, output, then in ct
    with pytest.raises(wire.MalformedReply) as e:
        multipart.check(reply(1, CASES[1].bad["zero set-field action nested in ct"]))
    assert str(e.value) == (
        "FLOW multipart reply, entry at byte 16: action of type 25 has length 0,"
        f" 16 bytes left (at least 8, a multiple of 8) (at byte {nested})"
    )


# --- why: Ryu's parser alone ---------------------------------------------------------------

LOOPS = {
    "zero-length meter-config entry": reply(10, zeroed(meter_config_case().body, 0)),
    "zero-length bucket in a group description": reply(7, zeroed(group_desc_case().body, 8)),
}


@pytest.mark.parametrize("buf", LOOPS.values(), ids=LOOPS.keys())
def test_ryus_parser_alone_loops_forever_on_a_zero_length(buf: bytes) -> None:
    # In a child process, which can be killed (a thread could not); it appends to a list
    # forever, so it is given little time.
    code = textwrap.dedent(f"""
        from types import SimpleNamespace
        from ryu.ofproto import ofproto_v1_3_parser as parser
        buf = {buf!r}
        parser.OFPMultipartReply.parser(SimpleNamespace(id=1), 4, 19, len(buf), 5, buf)
        print("finished")
    """)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=4, check=False)
    assert isinstance(through_hook(buf), wire.MalformedReply)


def test_ryus_parser_alone_raises_struct_error_and_its_msg_drops_the_reply() -> None:
    buf = reply(4, CASES[4].body[:-1])  # port stats, one byte short
    with pytest.raises(struct.error):
        ryu_alone(buf)
    # Ryu's msg() logs any parser error and returns None: the reply is lost, the connection
    # goes on. The hook's error is one msg() re-raises, so the connection ends.
    ryu_compat.install_raw_flow_stats_parser()
    error = through_hook(buf, lambda b: ofproto_parser.msg(DP, 4, 19, len(b), 5, b))
    assert isinstance(error, ryu_compat.ConnectionEndingReply)
    assert isinstance(error, wire.MalformedReply) and "PORT_STATS" in str(error)


def test_the_raw_flow_stats_path_still_cuts_entries_itself() -> None:
    ryu_compat.install_raw_flow_stats_parser()
    dp = SimpleNamespace(id=1, **{ryu_compat.RAW_XIDS: {5}})
    msg = parser._MSG_PARSERS[19](dp, 4, 19, 16 + len(CASES[1].body), 5, reply(1, CASES[1].body))
    assert [type(e) for e in msg.body] == [wire.RawFlow] * 2
    bad = reply(1, CASES[1].bad["zero entry length"])
    error = through_hook(bad, lambda b: parser._MSG_PARSERS[19](dp, 4, 19, len(b), 5, b))
    assert isinstance(error, ryu_compat.ConnectionEndingReply)
