"""OpenFlow 1.3 bytes for the compiler's flows, packed by hand; flow stats read back raw.

Ryu builds every message as an object tree and serializes it through generic OXM code:
about 70 us per bundled flow-mod, more than OVS needs to install the flow. The compiler
only ever makes the match fields of fields.py and a handful of actions and instructions, so
this module packs those directly with `struct` and remembers the bytes of each flow (compiles
hand back the same Flow objects, so a flow is packed once in the controller's life).
Reading flows back is the mirror image: a flow-stats entry is cut into (table, priority,
match bytes) and (cookie, instruction bytes), and compared with the bytes this module would
send, without decoding either; flows changed behind our back are decoded here too.

That comparison only works if a flow packed here is byte for byte what Open vSwitch hands
back for it, so fields are packed in the order OVS writes them (nx_put_raw in OVS's
lib/nx-match.c: in_port, Ethernet, L3, L4, ARP, then conntrack) and actions as OVS
re-encodes them. tests/integration/test_wire_ovs.py checks exactly that against a real switch,
for every shape the compiler makes; a mismatch would only cost a redundant re-add.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from ryu_ctfw import fields
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

OFP_VERSION = 0x04
OFPT_EXPERIMENTER = 4
OFPT_FLOW_MOD = 14
OFPT_MULTIPART_REPLY = 19
OFPFC_ADD = 0
OFPFC_DELETE_STRICT = 4
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPP_FLOOD = 0xFFFFFFFB
OFPP_NORMAL = 0xFFFFFFFA
OFPP_CONTROLLER = 0xFFFFFFFD
OFPIT_GOTO_TABLE = 1
OFPIT_WRITE_METADATA = 2
OFPIT_APPLY_ACTIONS = 4
OFPIT_METER = 6
OFPAT_OUTPUT = 0
OFPAT_SET_FIELD = 25
OFPAT_EXPERIMENTER = 0xFFFF
OFPMP_FLOW = 1
NX_VENDOR_ID = 0x00002320
NXAST_CT = 35
NXAST_CONJUNCTION = 34
NXAST_CONTROLLER2 = 37
NXAC2PT_MAX_LEN = 0
NXAC2PT_METER_ID = 5
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_ADD_MESSAGE = 2301
ALL_COOKIE_BITS = 0xFFFF_FFFF_FFFF_FFFF
_SPECIAL_PORTS = {"NORMAL": OFPP_NORMAL, "CONTROLLER": OFPP_CONTROLLER, "FLOOD": OFPP_FLOOD}
_PORT_NAMES = {v: k for k, v in _SPECIAL_PORTS.items()}

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # header .. pad, then the match
_BUNDLE_ADD = struct.Struct("!BBHIIIIHH")  # header, ONF id, exp_type, bundle, pad, flags
_STATS_ENTRY = struct.Struct("!HBxIIHHHH4xQQQ")  # ofp_flow_stats up to the match
_MATCH_HEADER = struct.Struct("!HH")
_OXM_HEADER = struct.Struct("!HBB")
_OUTPUT = struct.Struct("!HHIH6x")
_CT = struct.Struct("!HHIHHIHB3xH")
_CONJUNCTION = struct.Struct("!HHIHBBI")  # ..., clause (from 0), n_clauses, id
_ACTION_HEADER = struct.Struct("!HH")
_INSTRUCTION_HEADER = struct.Struct("!HH4x")
_GOTO = struct.Struct("!HHB3x")
_METER = struct.Struct("!HHI")
_WRITE_METADATA = struct.Struct("!HH4xQQ")  # type, length, pad, metadata, mask
_NX_HEADER = struct.Struct("!HHIH6x")  # an NX action's header, padded (controller2)
# controller2's properties as OVS writes them: type, length 8, value (u16 then 2 bytes of
# padding, or u32).
_PROP_U16 = struct.Struct("!HHH2x")
_PROP_U32 = struct.Struct("!HHI")
ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
_CT_MARK_TLV = fields.BY_ATTR["ct_mark"].oxm  # set by ct(commit,exec(set_field...))


def _oxm(cls: int, field: int, value: bytes, mask: bytes | None = None) -> bytes:
    if mask is None:
        return _OXM_HEADER.pack(cls, field << 1, len(value)) + value
    return _OXM_HEADER.pack(cls, (field << 1) | 1, 2 * len(value)) + value + mask


@lru_cache(maxsize=1 << 16)
def _tlv(attr: str, cls: int, field: int, value: object) -> bytes:
    return _oxm(cls, field, *fields.BY_ATTR[attr].codec.pack(value))


# The table in three parts, each packed and remembered on its own: a pair's lines share where
# they go (in_port, MACs), the services of all pairs are few, and so are conntrack states,
# so most parts are cache hits and a match costs three lookups. (The L4 fields' TLV depends
# on eth_type and ip_proto, which are in the same part.) Per part: a getter of its values
# from a Match, and (attribute, fixed TLV or None) for each of its fields.
_PART_ENDS = ("eth_dst", "arp_sha", "ct_mark")
_PLANS: list[tuple[tuple[str, tuple[int, int] | None], ...]] = [()]
for _f in fields.FIELDS:
    _PLANS[-1] += ((_f.attr, _f.oxm if isinstance(_f.oxm, tuple) else None),)
    if _f.attr in _PART_ENDS:
        _PLANS.append(())
assert _PLANS.pop() == () and len(_PLANS) == len(_PART_ENDS), "fields.FIELDS ends each part"
_WHERE, _WHAT, _STATE = (
    operator.itemgetter(*(Match._fields.index(attr) for attr, _ in plan)) for plan in _PLANS
)
_ETH_TYPE_AT = [attr for attr, _ in _PLANS[1]].index("eth_type")
_IP_PROTO_AT = [attr for attr, _ in _PLANS[1]].index("ip_proto")


@lru_cache(maxsize=1 << 16)
def _part_bytes(part: int, values: tuple) -> bytes:
    out = []
    for (attr, tlv), value in zip(_PLANS[part], values, strict=True):
        if value is None:
            continue
        if tlv is None:  # an L4 field: its TLV follows this part's eth_type and ip_proto
            tlv = fields.BY_ATTR[attr].oxm(values[_ETH_TYPE_AT], values[_IP_PROTO_AT])  # type: ignore[operator]
        out.append(_tlv(attr, *tlv, value))
    return b"".join(out)


@lru_cache(maxsize=1 << 17)
def match_bytes(m: Match) -> bytes:
    """ofp_match (OXM), padded to 8 bytes, fields in the order OVS writes them."""
    oxms = _part_bytes(0, _WHERE(m)) + _part_bytes(1, _WHAT(m)) + _part_bytes(2, _STATE(m))
    return _pad(_MATCH_HEADER.pack(1, 4 + len(oxms)) + oxms)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def _action(a: Output | Ct | Conjunction | Log) -> bytes:
    if isinstance(a, Log):
        # As OVS writes controller(max_len=..,meter_id=..): controller2, one property each.
        props = _PROP_U16.pack(NXAC2PT_MAX_LEN, 8, a.max_len) + _PROP_U32.pack(
            NXAC2PT_METER_ID, 8, a.meter_id
        )
        size = _NX_HEADER.size + len(props)
        return _NX_HEADER.pack(OFPAT_EXPERIMENTER, size, NX_VENDOR_ID, NXAST_CONTROLLER2) + props
    if isinstance(a, Conjunction):
        return _CONJUNCTION.pack(OFPAT_EXPERIMENTER, _CONJUNCTION.size, NX_VENDOR_ID,
                                 NXAST_CONJUNCTION, a.clause - 1, a.n_clauses, a.id)  # fmt: skip
    if isinstance(a, Ct):
        nested = b"" if a.mark is None else _set_field(*_CT_MARK_TLV, struct.pack("!I", a.mark))
        return _CT.pack(
            OFPAT_EXPERIMENTER, _CT.size + len(nested), NX_VENDOR_ID, NXAST_CT,
            NX_CT_F_COMMIT if a.commit else 0,
            0,  # zone_src: none, the zone is the immediate value
            a.zone or 0,
            NX_CT_RECIRC_NONE if a.table is None else a.table,
            0,  # alg
        ) + nested  # fmt: skip
    port = _SPECIAL_PORTS.get(a.port) if isinstance(a.port, str) else a.port
    max_len = a.max_len if a.port == "CONTROLLER" else 0
    return _OUTPUT.pack(OFPAT_OUTPUT, _OUTPUT.size, port, max_len)


def _set_field(cls: int, field: int, value: bytes) -> bytes:
    tlv = _oxm(cls, field, value)
    size = _ACTION_HEADER.size + len(tlv)
    return _pad(_ACTION_HEADER.pack(OFPAT_SET_FIELD, size + (-size % 8)) + tlv)


@lru_cache(maxsize=1 << 16)  # outputs to ports and per-link marks: one per link and port
def instructions_bytes(actions: tuple[Action, ...]) -> bytes:
    """The meter, apply-actions, write-metadata and goto-table instructions, in the order
    OVS writes them; none at all for a drop (as OVS reports a drop)."""
    meter = b"".join(_METER.pack(OFPIT_METER, _METER.size, a.meter_id)
                     for a in actions if isinstance(a, Meter))  # fmt: skip
    body = b"".join(_action(a) for a in actions if isinstance(a, Output | Ct | Conjunction | Log))
    apply = (
        _INSTRUCTION_HEADER.pack(OFPIT_APPLY_ACTIONS, _INSTRUCTION_HEADER.size + len(body)) + body
        if body
        else b""
    )
    metadata = b"".join(
        _WRITE_METADATA.pack(OFPIT_WRITE_METADATA, _WRITE_METADATA.size, a.value, ALL_BITS)
        for a in actions if isinstance(a, WriteMetadata)
    )  # fmt: skip
    goto = b"".join(_GOTO.pack(OFPIT_GOTO_TABLE, _GOTO.size, a.table)
                    for a in actions if isinstance(a, Goto))  # fmt: skip
    return meter + apply + metadata + goto


# --- decoding (the REST view of flows changed behind our back) ------------------------------


def match_from_bytes(data: bytes) -> Match | None:
    """The Match an ofp_match is, or None if it holds anything the compiler never sets."""
    length = _MATCH_HEADER.unpack_from(data, 0)[1]
    values: dict[str, object] = {}
    offset = _MATCH_HEADER.size
    while offset < length:
        cls, field_hm, size = _OXM_HEADER.unpack_from(data, offset)
        body = data[offset + 4 : offset + 4 + size]
        offset += 4 + size
        f = fields.BY_TLV.get((cls, field_hm >> 1))
        if f is None:
            return None
        if field_hm & 1:
            value, mask = body[: size // 2], body[size // 2 :]
        else:
            value, mask = body, None
        decoded = f.codec.unpack(value, mask)
        if decoded is None:
            return None
        values[f.attr] = decoded
    try:
        match = Match(**values)  # type: ignore[arg-type]
    except TypeError:
        return None
    return match if match_bytes(match) == _pad(data[:length]) else None


def actions_from_bytes(data: bytes) -> tuple[Action, ...] | None:
    """The actions of a flow's instructions, or None if they hold anything we never make."""
    meter: list[Action] = []
    applied: list[Action] = []
    metadata: list[Action] = []
    goto: list[Action] = []
    offset = 0
    while offset < len(data):
        kind, length = _ACTION_HEADER.unpack_from(data, offset)
        if kind == OFPIT_METER:
            meter.append(Meter(_METER.unpack_from(data, offset)[2]))
        elif kind == OFPIT_WRITE_METADATA:
            value, mask = _WRITE_METADATA.unpack_from(data, offset)[2:]
            if mask != ALL_BITS:
                return None
            metadata.append(WriteMetadata(value))
        elif kind == OFPIT_GOTO_TABLE:
            goto.append(Goto(_GOTO.unpack_from(data, offset)[2]))
        elif kind == OFPIT_APPLY_ACTIONS:
            inner = _decode_actions(data[offset + _INSTRUCTION_HEADER.size : offset + length])
            if inner is None:
                return None
            applied += inner
        else:
            return None
        offset += max(length, 8)
    actions = (*meter, *applied, *metadata, *goto)
    return actions if instructions_bytes(actions) == data else None


def _decode_actions(data: bytes) -> list[Action] | None:
    out: list[Action] = []
    offset = 0
    while offset < len(data):
        kind, length = _ACTION_HEADER.unpack_from(data, offset)
        if kind == OFPAT_OUTPUT:
            _, _, port, max_len = _OUTPUT.unpack_from(data, offset)
            name = _PORT_NAMES.get(port)
            out.append(Output(name, max_len) if name == "CONTROLLER" else Output(name or port))
        elif kind == OFPAT_EXPERIMENTER and _nx_subtype(data, offset) == NXAST_CONTROLLER2:
            log = _controller2(data[offset + _NX_HEADER.size : offset + length])
            if log is None:
                return None
            out.append(log)
        elif kind == OFPAT_EXPERIMENTER and length == _CONJUNCTION.size:
            _, _, vendor, subtype, clause, n_clauses, cid = _CONJUNCTION.unpack_from(data, offset)
            if (vendor, subtype) != (NX_VENDOR_ID, NXAST_CONJUNCTION):
                return None
            out.append(Conjunction(cid, clause + 1, n_clauses))
        elif kind == OFPAT_EXPERIMENTER and length >= _CT.size:
            ct = _CT.unpack_from(data, offset)
            if ct[2:4] != (NX_VENDOR_ID, NXAST_CT) or ct[5] or ct[8]:
                return None
            mark = None
            if length > _CT.size:
                nested = data[offset + _CT.size : offset + length]
                if len(nested) != 16 or nested[:2] != b"\x00\x19":
                    return None
                mark = struct.unpack_from("!I", nested, 8)[0]
            table = None if ct[7] == NX_CT_RECIRC_NONE else ct[7]
            out.append(Ct(bool(ct[4] & NX_CT_F_COMMIT), table, ct[6] or None, mark))
        else:
            return None
        offset += max(length, 8)
    return out


def _nx_subtype(data: bytes, offset: int) -> int | None:
    _, length, vendor, subtype = struct.unpack_from("!HHIH", data, offset)
    return subtype if vendor == NX_VENDOR_ID and length >= _NX_HEADER.size else None


def _controller2(props: bytes) -> Log | None:
    """controller2's properties as a Log, if they are the two a Log has (the rest of the
    encoding is checked by re-packing)."""
    values: dict[int, int] = {}
    offset = 0
    while offset + 4 <= len(props):
        kind, length = struct.unpack_from("!HH", props, offset)
        if kind == NXAC2PT_MAX_LEN and length == 8:
            values[kind] = _PROP_U16.unpack_from(props, offset)[2]
        elif kind == NXAC2PT_METER_ID and length == 8:
            values[kind] = _PROP_U32.unpack_from(props, offset)[2]
        else:
            return None
        offset += (length + 7) // 8 * 8
    if NXAC2PT_METER_ID not in values:
        return None
    return Log(values[NXAC2PT_METER_ID], values.get(NXAC2PT_MAX_LEN, 0xFFFF))


def flow_from_raw(raw: RawFlow) -> Flow | None:
    """A flow-stats entry as the Flow it is, or None if it is nothing the compiler makes."""
    table, priority, match_data = raw.key
    try:
        match = match_from_bytes(match_data)
        actions = actions_from_bytes(raw.instructions)
    except (struct.error, ValueError, KeyError, IndexError):
        return None
    if match is None or actions is None:
        return None
    return Flow(table, priority, match, actions, raw.cookie)


# A flow's OpenFlow identity as bytes, what a flow-stats entry is looked up by:
# (table, priority, packed match). A plain tuple: tens of thousands are made per resync.
WireKey = tuple[int, int, bytes]


def wire_key(flow: Flow) -> WireKey:
    return (flow.table, flow.priority, match_bytes(flow.match))


@lru_cache(maxsize=1 << 17)
def flow_add(flow: Flow) -> bytes:
    """OFPT_FLOW_MOD adding (or replacing) `flow`, xid 0 (set_xid writes one in)."""
    body = match_bytes(flow.match) + instructions_bytes(flow.actions)
    return _flow_mod(OFPFC_ADD, flow.cookie, 0, flow.table, flow.priority, body)


def flow_delete(table: int, priority: int, match: bytes, cookie: int) -> bytes:
    """OFPT_FLOW_MOD deleting exactly one flow, and only if it carries `cookie`: never
    touches a flow someone else owns. (table, priority, match) is a WireKey."""
    return _flow_mod(OFPFC_DELETE_STRICT, cookie, ALL_COOKIE_BITS, table, priority, match)


def _flow_mod(command: int, cookie: int, mask: int, table: int, prio: int, body: bytes) -> bytes:
    head = _FLOW_MOD.pack(
        OFP_VERSION, OFPT_FLOW_MOD, _FLOW_MOD.size + len(body), 0,
        cookie, mask, table, command, 0, 0, prio, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0,
    )  # fmt: skip
    return head + body


def with_xid(msg: bytes, xid: int) -> bytes:
    return msg[:4] + xid.to_bytes(4, "big") + msg[8:]


def bundle_add(bundle_id: int, flags: int, inner: bytes, xid: int) -> bytes:
    """ONF bundle-add (OpenFlow 1.3 extension) carrying `inner`; both share `xid`, as the
    extension requires, so an error about the inner message names this xid."""
    head = _BUNDLE_ADD.pack(
        OFP_VERSION, OFPT_EXPERIMENTER, _BUNDLE_ADD.size + len(inner), xid,
        ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, 0, flags,
    )  # fmt: skip
    return head + with_xid(inner, xid)


class RawFlow(NamedTuple):
    """One flow-stats entry, cut at its fields but not decoded."""

    key: WireKey
    cookie: int
    instructions: bytes
    packets: int
    bytes: int
    duration: float


class MalformedReply(ValueError):
    """A switch's reply that cannot be what it says it is (the connection should end)."""


def flow_stats_entries(buf: bytes, offset: int = 16) -> Iterator[RawFlow]:
    """The entries of one OFPMP_FLOW reply (`buf` is the whole message). Raises
    MalformedReply for an entry whose lengths do not fit (a zero length would otherwise
    never move on)."""
    end = len(buf)
    while offset < end:
        if end - offset < _STATS_ENTRY.size + _MATCH_HEADER.size:
            raise MalformedReply(f"flow-stats entry at byte {offset} is truncated")
        length, table, sec, nsec, prio, _idle, _hard, _flags, cookie, packets, nbytes = (
            _STATS_ENTRY.unpack_from(buf, offset)
        )
        match_at = offset + _STATS_ENTRY.size
        match_len = _MATCH_HEADER.unpack_from(buf, match_at)[1]
        instr_at = match_at + match_len + (-match_len % 8)
        if (
            length < _STATS_ENTRY.size + _MATCH_HEADER.size
            or offset + length > end
            or (match_len < _MATCH_HEADER.size or instr_at > offset + length)
        ):
            raise MalformedReply(
                f"flow-stats entry at byte {offset}: length {length}, match length"
                f" {match_len}, in a reply of {end} bytes"
            )
        yield RawFlow(
            (table, prio, bytes(buf[match_at:instr_at])),
            cookie,
            bytes(buf[instr_at : offset + length]),
            packets,
            nbytes,
            sec + nsec / 1e9,
        )
        offset += length


def is_flow_stats_reply(buf: bytes) -> bool:
    return (
        len(buf) >= 16
        and buf[1] == OFPT_MULTIPART_REPLY
        and int.from_bytes(buf[8:10], "big") == OFPMP_FLOW
    )


def holds(raw: RawFlow, flow: Flow) -> bool:
    """Whether the switch's entry `raw`, found under `flow`'s wire key (so the same
    identity), is `flow` exactly: same cookie and actions. (Looking the key up again was
    half of comparing 51,209 flows: 62 ms against 29 ms.)"""
    return raw.cookie == flow.cookie and raw.instructions == instructions_bytes(flow.actions)
