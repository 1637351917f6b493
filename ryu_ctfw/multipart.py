"""Every OFPT_MULTIPART_REPLY checked, by its lengths, before Ryu 4.34's parser sees it.

Why: Ryu's parsers (ofproto_v1_3_parser) trust every length a switch writes. An entry or
nested element of length 0 never moves their offset on, so Ryu loops forever inside its
receive loop and the whole controller is wedged; a length past the end raises struct.error
(or an assertion) deep inside Ryu. `check` walks a reply as Ryu will, and raises
wire.MalformedReply naming the reply type, the byte offset in the message and what is wrong.
It only reads lengths and types with `struct` (no Ryu import), one table, SHAPES, by type.

The loops of Ryu's parser that this checks, outermost first:

- OFPMultipartReply.parser: the body's entries (length field or fixed size per type);
  DESC, AGGREGATE, GROUP_FEATURES and EXPERIMENTER are one entry each
  (Ryu takes body[0]: an empty body is an IndexError); TABLE, PORT_STATS, QUEUE,
  METER_FEATURES and PORT_DESC a whole number of fixed-size entries; FLOW, GROUP,
  GROUP_DESC, METER, METER_CONFIG and TABLE_FEATURES entries carry their length.
- FLOW (OFPFlowStats): the match's OXM TLVs (OFPMatch.parser, twice); the instructions
  (OFPFlowStats.parser); the actions of write/apply/clear-actions instructions
  (OFPInstructionActions.parser); the actions nested in a Nicira ct action
  (NXActionCT.parser), and a set-field action's OXM (OFPActionSetField.parser).
- GROUP (OFPGroupStats): the bucket counters, 16 bytes each.
- GROUP_DESC (OFPGroupDescStats): the buckets (OFPBucket), and each bucket's actions.
- METER (OFPMeterStats): the band stats, 16 bytes each.
- METER_CONFIG (OFPMeterConfigStats): the bands (OFPMeterBandHeader: drop, dscp-remark,
  experimenter, 16 bytes each).
- TABLE_FEATURES (OFPTableFeaturesStats): the properties, each padded to 8
  (OFPPropBase.parse); in them the instruction ids and action ids (a length each), the
  OXM ids (4 bytes, 8 for the experimenter class), and the 4-byte words of experimenter
  properties (OFPPropCommonExperimenter4ByteData). Next-tables ids are single bytes.
- EXPERIMENTER (OFPExperimenterMultipart): Ryu takes the rest of the body as data but steps
  16 bytes (it sets the entry's length to OFP_METER_FEATURES_SIZE) and parses an 8-byte
  header again there, so a body whose last 16-byte step has fewer than 8 bytes is a
  struct.error in Ryu: refused here.

Not walked: the bodies of Nicira actions other than ct (learn specs, controller2
properties): their loops always move on, a truncation there is an error Ryu logs.
Lengths of fixed-size elements (output 16, goto/meter 8, write-metadata 24, bands 16) must
be that size: Ryu steps over them by their class's size, not by the length on the wire.
The sync's own flow-stats replies (ryu_compat's raw path) are not walked here: they never
reach Ryu's parser, and wire.flow_stats_entries checks their entries as it cuts them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ryu_ctfw.wire import MalformedReply

HEADER_SIZE = 16  # ofp_header 8, type 2, flags 2, pad 4
_U16 = struct.Struct("!H")
_TL = struct.Struct("!HH")  # the (type, length) that starts most TLVs
_U32 = struct.Struct("!I")

OFPXMC_EXPERIMENTER = 0xFFFF
OFPAT_SET_FIELD = 25
OFPAT_EXPERIMENTER = 0xFFFF
NX_EXPERIMENTER_ID = 0x00002320
NXAST_CT = 35
NX_CT_SIZE = 24  # ofp_action_experimenter_header 8 + subtype 2 + ct's fields 14
# Action types Ryu 4.34 parses, and the size its class steps over (None: the wire length).
ACTION_SIZES: dict[int, int | None] = {
    0: 16,  # output
    **dict.fromkeys((11, 12, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27), 8),
    OFPAT_SET_FIELD: None,
    OFPAT_EXPERIMENTER: None,
}
# Instruction types likewise: goto-table, write-metadata, the three actions ones, meter.
INSTRUCTION_SIZES: dict[int, int | None] = {1: 8, 2: 24, 3: None, 4: None, 5: None, 6: 8}
ACTIONS_INSTRUCTIONS = frozenset((3, 4, 5))
METER_BAND_TYPES = frozenset((1, 2, 0xFFFF))  # drop, dscp-remark, experimenter
METER_BAND_SIZE = 16
COUNTER_SIZE = 16  # ofp_bucket_counter and ofp_meter_band_stats
BUCKET_SIZE = 16
EXPERIMENTER_PROP_SIZE = 12  # type, length, experimenter, exp_type


class Where(NamedTuple):
    """What a nested check needs to name the place of a fault."""

    kind: str  # the reply type, e.g. "GROUP_DESC"
    entry: int  # byte offset of the entry in the message


def _fault(where: Where, at: int, what: str) -> MalformedReply:
    return MalformedReply(
        f"{where.kind} multipart reply, entry at byte {where.entry}: {what} (at byte {at})"
    )


def _tlvs(
    buf: bytes, at: int, end: int, where: Where, what: str, minimum: int, length_first: bool = False
) -> Iterator[tuple[int, int, int]]:
    """(offset, type, length) of each (type, length)-headed element in buf[at:end], each
    at least `minimum` long and inside the span: the loops Ryu steps by that length.
    (A bucket starts with its length, then its weight, reported as the type.)"""
    while at < end:
        if end - at < _TL.size:
            raise _fault(where, at, f"{what} header truncated: {end - at} bytes left")
        kind, length = _TL.unpack_from(buf, at)
        if length_first:
            kind, length = length, kind
        if length < minimum or length > end - at:
            raise _fault(
                where, at, f"{what} of type {kind} has length {length}, {end - at} bytes left"
                f" (at least {minimum})"
            )  # fmt: skip
        yield at, kind, length
        at += length


# --- flow stats: match, instructions, actions ---------------------------------------------


def _oxm(buf: bytes, at: int, end: int, where: Where) -> int:
    """One OXM TLV in buf[at:end] (a 4-byte header, then its payload); where it ends."""
    if end - at < 4:
        raise _fault(where, at, f"OXM header truncated: {end - at} bytes left")
    (header,) = _U32.unpack_from(buf, at)
    payload = header & 0xFF
    value = payload - (4 if header >> 16 == OFPXMC_EXPERIMENTER else 0)
    if header & 0x100:
        value //= 2  # value and mask
    if value <= 0 or 4 + payload > end - at:  # Ryu asserts a value of at least 1 byte
        raise _fault(where, at, f"OXM {header:#010x} of length {payload}, {end - at} bytes left")
    return at + 4 + payload


def _oxms(buf: bytes, at: int, end: int, where: Where) -> None:
    """A match's OXM TLVs, which fill it exactly (its padding is outside its length)."""
    while at < end:
        at = _oxm(buf, at, end, where)


def _actions(buf: bytes, at: int, end: int, where: Where) -> None:
    # A plain loop, not _tlvs: this and _instructions run for every flow-stats entry.
    while at < end:
        if end - at < 8:
            raise _fault(where, at, f"action truncated: {end - at} bytes left")
        kind, length = _TL.unpack_from(buf, at)
        if kind not in ACTION_SIZES:
            raise _fault(where, at, f"action of type {kind}, which Ryu 4.34 cannot parse")
        size = ACTION_SIZES[kind]
        if length < 8 or length > end - at or length % 8 or (size and length != size):
            raise _fault(
                where, at, f"action of type {kind} has length {length}, {end - at} bytes left"
                f" (at least 8, a multiple of 8{f', {size}' if size else ''})"
            )  # fmt: skip
        if kind == OFPAT_SET_FIELD:
            _oxm(buf, at + 4, at + length, where)  # one OXM, then padding
        elif kind == OFPAT_EXPERIMENTER:
            _experimenter_action(buf, at, length, where)
        at += length


def _experimenter_action(buf: bytes, at: int, length: int, where: Where) -> None:
    """Nicira's ct action holds actions of its own (Ryu loops over them too)."""
    (experimenter,) = _U32.unpack_from(buf, at + 4)
    if experimenter != NX_EXPERIMENTER_ID:
        return
    if length < 16:  # the subtype, Ryu's NXAction.parse reads it
        raise _fault(where, at, f"Nicira action of length {length}")
    (subtype,) = _U16.unpack_from(buf, at + 8)
    if subtype == NXAST_CT:
        if length < NX_CT_SIZE:
            raise _fault(where, at, f"ct action of length {length}")
        _actions(buf, at + NX_CT_SIZE, at + length, where)


def _instructions(buf: bytes, at: int, end: int, where: Where) -> None:
    while at < end:
        if end - at < 8:
            raise _fault(where, at, f"instruction truncated: {end - at} bytes left")
        kind, length = _TL.unpack_from(buf, at)
        if kind not in INSTRUCTION_SIZES:
            raise _fault(where, at, f"instruction of type {kind}, which Ryu 4.34 cannot parse")
        size = INSTRUCTION_SIZES[kind]
        if length < 8 or length > end - at or (size and length != size):
            raise _fault(
                where, at, f"instruction of type {kind} has length {length}, {end - at} bytes"
                f" left (at least 8{f', {size}' if size else ''})"
            )  # fmt: skip
        if kind in ACTIONS_INSTRUCTIONS:
            _actions(buf, at + 8, at + length, where)
        at += length


def _flow(buf: bytes, at: int, end: int, where: Where) -> None:
    """ofp_flow_stats: 48 bytes, the match padded to 8, then the instructions."""
    (match_len,) = _U16.unpack_from(buf, at + 50)
    instructions = at + 48 + match_len + (-match_len % 8)
    if match_len < 4 or instructions > end:
        raise _fault(where, at + 48, f"match of length {match_len} in an entry of {end - at}")
    _oxms(buf, at + 52, at + 48 + match_len, where)
    _instructions(buf, instructions, end, where)


# --- groups, meters ------------------------------------------------------------------------


def _counters(first: int) -> Callable[[bytes, int, int, Where], None]:
    """Group stats' bucket counters, meter stats' band stats: 16 bytes each after `first`."""

    def check(buf: bytes, at: int, end: int, where: Where) -> None:
        if (end - at - first) % COUNTER_SIZE:
            raise _fault(where, at, f"{end - at - first} bytes of 16-byte counters")

    return check


def _buckets(buf: bytes, at: int, end: int, where: Where) -> None:
    for b, _, length in _tlvs(buf, at + 8, end, where, "bucket", BUCKET_SIZE, True):
        _actions(buf, b + BUCKET_SIZE, b + length, where)


def _bands(buf: bytes, at: int, end: int, where: Where) -> None:
    for b, kind, length in _tlvs(buf, at + 8, end, where, "meter band", METER_BAND_SIZE):
        if kind not in METER_BAND_TYPES or length != METER_BAND_SIZE:
            raise _fault(where, b, f"meter band of type {kind} and length {length}")


# --- table features --------------------------------------------------------------------


def _ids(buf: bytes, at: int, end: int, where: Where) -> None:
    """Instruction or action ids: (type, length), stepped by that length."""
    for _ in _tlvs(buf, at, end, where, "id", 4):
        pass


def _oxm_ids(buf: bytes, at: int, end: int, where: Where) -> None:
    while at < end:
        size = 8 if end - at >= 2 and _U16.unpack_from(buf, at)[0] == OFPXMC_EXPERIMENTER else 4
        if end - at < size:
            raise _fault(where, at, f"OXM id of {size} bytes, {end - at} bytes left")
        at += size


def _experimenter_words(buf: bytes, at: int, end: int, where: Where) -> None:
    if end - at < EXPERIMENTER_PROP_SIZE - 4 or (end - at - 8) % 4:
        raise _fault(where, at, f"experimenter property of {end - at + 4} bytes")


_PROPERTY_BODIES: dict[int, Callable[[bytes, int, int, Where], None]] = {
    **dict.fromkeys((0, 1, 4, 5, 6, 7), _ids),
    **dict.fromkeys((8, 10, 12, 13, 14, 15), _oxm_ids),
    **dict.fromkeys((0xFFFE, 0xFFFF), _experimenter_words),
}


def _table_features(buf: bytes, at: int, end: int, where: Where) -> None:
    """The properties: (type, length), each padded to 8, which Ryu steps over."""
    at += 64
    while at < end:
        if end - at < _TL.size:
            raise _fault(where, at, f"property header truncated: {end - at} bytes left")
        kind, length = _TL.unpack_from(buf, at)
        padded = length + (-length % 8)
        if length < _TL.size or padded > end - at:
            raise _fault(
                where, at, f"table-features property of type {kind} has length {length}"
                f" ({padded} padded), {end - at} bytes left (at least 4)"
            )  # fmt: skip
        body = _PROPERTY_BODIES.get(kind)
        if body is not None:
            body(buf, at + 4, at + length, where)
        at += padded


# --- the table -----------------------------------------------------------------------------


class Shape(NamedTuple):
    """How Ryu 4.34 reads one multipart reply type's body."""

    name: str
    size: int  # a fixed-size entry's size, or a variable one's fixed part
    length_at: int | None  # where a variable entry's 16-bit length is; None: fixed size
    single: bool  # Ryu returns one entry (body[0]), not a list
    inner: Callable[[bytes, int, int, Where], None] | None = None  # nested elements


SHAPES: dict[int, Shape] = {
    0: Shape("DESC", 1056, None, True),
    1: Shape("FLOW", 56, 0, False, _flow),
    2: Shape("AGGREGATE", 24, None, True),
    3: Shape("TABLE", 24, None, False),
    4: Shape("PORT_STATS", 112, None, False),
    5: Shape("QUEUE", 40, None, False),
    6: Shape("GROUP", 40, 0, False, _counters(40)),
    7: Shape("GROUP_DESC", 8, 0, False, _buckets),
    8: Shape("GROUP_FEATURES", 40, None, True),
    9: Shape("METER", 40, 4, False, _counters(40)),
    10: Shape("METER_CONFIG", 8, 0, False, _bands),
    11: Shape("METER_FEATURES", 16, None, False),  # a list in Ryu 4.34, unlike the others
    12: Shape("TABLE_FEATURES", 64, 0, False, _table_features),
    13: Shape("PORT_DESC", 64, None, False),
    0xFFFF: Shape("EXPERIMENTER", 8, None, True),
}
EXPERIMENTER = 0xFFFF
_RYU_EXPERIMENTER_STEP = 16  # Ryu's stats.length for an experimenter body (see above)


def reply_type(buf: bytes) -> int:
    """The multipart type of a reply, or MalformedReply if there cannot be one."""
    if len(buf) < HEADER_SIZE:
        raise MalformedReply(f"multipart reply of {len(buf)} bytes")
    return _U16.unpack_from(buf, 8)[0]


def check(buf: bytes) -> None:
    """Raise MalformedReply unless Ryu 4.34 can parse `buf`, a whole multipart reply,
    without looping forever or reading past an element's end."""
    kind = reply_type(buf)
    (length,) = _U16.unpack_from(buf, 2)
    if length != len(buf):  # Ryu's loops stop at the header's length, this at the buffer's
        raise MalformedReply(f"multipart reply of {len(buf)} bytes says it has {length}")
    shape = SHAPES.get(kind)
    if shape is None:
        raise MalformedReply(f"multipart reply of unknown type {kind}")
    body = len(buf) - HEADER_SIZE
    if shape.single:
        _check_single(shape, kind, body)
    elif shape.length_at is None:
        if body % shape.size:
            raise MalformedReply(
                f"{shape.name} multipart reply: body of {body} bytes is not a whole number"
                f" of {shape.size}-byte entries (entry at byte {len(buf) - body % shape.size}"
                " is truncated)"
            )
    else:
        _check_entries(buf, shape)


def _check_single(shape: Shape, kind: int, body: int) -> None:
    if kind == EXPERIMENTER:
        # Ryu reads an experimenter header again every 16 bytes, into its one entry's data.
        tail = body % _RYU_EXPERIMENTER_STEP
        if body < shape.size or 0 < tail < shape.size:
            raise MalformedReply(
                f"EXPERIMENTER multipart reply: body of {body} bytes (Ryu 4.34 reads an"
                f" 8-byte header every 16 bytes; the one at byte"
                f" {HEADER_SIZE + body - tail if tail else HEADER_SIZE} is truncated)"
            )
    elif body != shape.size:
        raise MalformedReply(
            f"{shape.name} multipart reply: body of {body} bytes, not one {shape.size}-byte"
            f" entry (entry at byte {HEADER_SIZE})"
        )


def _check_entries(buf: bytes, shape: Shape) -> None:
    """Variable-length entries: each one's length covers its fixed part and fits."""
    end = len(buf)
    at = HEADER_SIZE
    length_at = shape.length_at or 0
    inner = shape.inner
    while at < end:
        if end - at < shape.size:
            raise MalformedReply(
                f"{shape.name} multipart reply, entry at byte {at}: truncated, {end - at}"
                f" bytes left of a {shape.size}-byte fixed part"
            )
        (length,) = _U16.unpack_from(buf, at + length_at)
        if length < shape.size or length > end - at:
            raise MalformedReply(
                f"{shape.name} multipart reply, entry at byte {at}: length {length},"
                f" {end - at} bytes left (at least {shape.size})"
            )
        if inner is not None:
            inner(buf, at, at + length, Where(shape.name, at))
        at += length
