"""OpenFlow 1.3 bytes for the compiler's flows, packed by hand; flow stats read back raw.

Ryu builds every message as an object tree and serializes it through generic OXM code:
about 70 us per bundled flow-mod, more than OVS needs to install the flow. The compiler
only ever makes a dozen match fields and four actions, so this module packs those directly
with `struct` and remembers the bytes of each flow (compiles hand back the same Flow objects,
so a flow is packed once in the controller's life). Reading flows back is the mirror image:
a flow-stats entry is cut into (table, priority, match bytes) and (cookie, instruction
bytes), and compared with the bytes this module would send, without decoding either.

That comparison only works if a flow packed here is byte for byte what Open vSwitch hands
back for it, so fields are packed in the order OVS writes them (nx_put_raw in OVS's
lib/nx-match.c: in_port, Ethernet, L3, L4, ARP, then conntrack) and actions as OVS
re-encodes them. tests/integration/test_wire.py checks exactly that against a real switch,
for every shape the compiler makes; a mismatch would only cost a redundant re-add.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from ryu_ctfw.compiler import (
    ETH_TYPE_IPV6,
    PROTO_TCP,
    PROTO_UDP,
    Action,
    Ct,
    CtState,
    Flow,
    Match,
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
OFPP_NORMAL = 0xFFFFFFFA
OFPP_CONTROLLER = 0xFFFFFFFD
OFPIT_APPLY_ACTIONS = 4
OFPAT_OUTPUT = 0
OFPAT_EXPERIMENTER = 0xFFFF
OFPMP_FLOW = 1
NX_VENDOR_ID = 0x00002320
NXAST_CT = 35
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_ADD_MESSAGE = 2301
ALL_COOKIE_BITS = 0xFFFF_FFFF_FFFF_FFFF

OXM_OF = 0x8000  # OpenFlow basic class
NXM_1 = 0x0001  # Nicira extension class (ct_state lives there)

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # header .. pad, then the match
_BUNDLE_ADD = struct.Struct("!BBHIIIIHH")  # header, ONF id, exp_type, bundle, pad, flags
_STATS_ENTRY = struct.Struct("!HBxIIHHHH4xQQQ")  # ofp_flow_stats up to the match
_MATCH_HEADER = struct.Struct("!HH")
_OUTPUT = struct.Struct("!HHIH6x")
_CT = struct.Struct("!HHIHHIHB3xH")
_INSTRUCTION_HEADER = struct.Struct("!HH4x")


def _oxm(cls: int, field: int, value: bytes, mask: bytes | None = None) -> bytes:
    if mask is None:
        return struct.pack("!HBB", cls, field << 1, len(value)) + value
    return struct.pack("!HBB", cls, (field << 1) | 1, 2 * len(value)) + value + mask


@lru_cache(maxsize=1 << 14)
def _mac(field: int, mac: str) -> bytes:
    return _oxm(OXM_OF, field, bytes.fromhex(mac.replace(":", "")))


@lru_cache(maxsize=1 << 14)
def _ip(field: int, ip: str) -> bytes:
    return _oxm(OXM_OF, field, ipaddress.ip_address(ip).packed)


@lru_cache(maxsize=1 << 12)
def _u32(field: int, value: int) -> bytes:
    return _oxm(OXM_OF, field, struct.pack("!I", value))


@lru_cache(maxsize=1 << 10)
def _u16(field: int, value: int) -> bytes:
    return _oxm(OXM_OF, field, struct.pack("!H", value))


@lru_cache(maxsize=1 << 10)
def _u8(field: int, value: int) -> bytes:
    return _oxm(OXM_OF, field, bytes((value,)))


@lru_cache(maxsize=64)
def _ct_state(state: CtState) -> bytes:
    value, mask = struct.pack("!I", state.value), struct.pack("!I", state.mask)
    return _oxm(NXM_1, NXM_NX_CT_STATE, value, mask)


@lru_cache(maxsize=1 << 12)
def _port(field: int, ports: tuple[int, int]) -> bytes:
    value, mask = ports
    if mask == 0xFFFF:
        return _u16(field, value)
    return _oxm(OXM_OF, field, struct.pack("!H", value), struct.pack("!H", mask))


# OXM field numbers (OpenFlow 1.3 section 7.2.3.7) and Nicira's ct_state.
IN_PORT, ETH_DST, ETH_SRC, ETH_TYPE, IP_PROTO, IPV4_SRC = 0, 3, 4, 5, 10, 11
TCP_SRC, TCP_DST, UDP_SRC, UDP_DST, ICMPV4_TYPE = 13, 14, 15, 16, 19
ARP_SPA, ARP_SHA, IPV6_SRC, ICMPV6_TYPE, IPV6_ND_TARGET = 22, 24, 26, 29, 31
NXM_NX_CT_STATE = 105
_L4_FIELDS = {PROTO_TCP: (TCP_SRC, TCP_DST), PROTO_UDP: (UDP_SRC, UDP_DST)}


@lru_cache(maxsize=1 << 17)
def match_bytes(m: Match) -> bytes:
    """ofp_match (OXM), padded to 8 bytes, fields in the order OVS writes them."""
    # Packed in three parts, each remembered on its own: a pair's lines share where they
    # go (in_port, MACs) and the services of all pairs are few, so most parts are hits.
    oxms = (
        _where(m.in_port, m.eth_src, m.eth_dst)
        + _what(
            m.eth_type, m.ipv4_src, m.ipv6_src, m.ip_proto, m.tp_src, m.tp_dst, m.icmp_type,
            m.nd_target, m.arp_spa, m.arp_sha,
        )
        + (b"" if m.ct_state is None else _ct_state(m.ct_state))
    )  # fmt: skip
    return _pad(_MATCH_HEADER.pack(1, 4 + len(oxms)) + oxms)


@lru_cache(maxsize=1 << 15)
def _where(in_port: int | None, eth_src: str | None, eth_dst: str | None) -> bytes:
    parts = []
    if in_port is not None:
        parts.append(_u32(IN_PORT, in_port))
    if eth_src is not None:
        parts.append(_mac(ETH_SRC, eth_src))
    if eth_dst is not None:
        parts.append(_mac(ETH_DST, eth_dst))
    return b"".join(parts)


@lru_cache(maxsize=1 << 15)
def _what(
    eth_type: int | None,
    ipv4_src: str | None,
    ipv6_src: str | None,
    ip_proto: int | None,
    tp_src: tuple[int, int] | None,
    tp_dst: tuple[int, int] | None,
    icmp_type: int | None,
    nd_target: str | None,
    arp_spa: str | None,
    arp_sha: str | None,
) -> bytes:
    parts = []
    if eth_type is not None:
        parts.append(_u16(ETH_TYPE, eth_type))
    if ipv4_src is not None:
        parts.append(_ip(IPV4_SRC, ipv4_src))
    if ipv6_src is not None:
        parts.append(_ip(IPV6_SRC, ipv6_src))
    if ip_proto is not None:
        parts.append(_u8(IP_PROTO, ip_proto))
    if tp_src is not None or tp_dst is not None:
        src, dst = _L4_FIELDS[ip_proto]  # type: ignore[index]
        if tp_src is not None:
            parts.append(_port(src, tp_src))
        if tp_dst is not None:
            parts.append(_port(dst, tp_dst))
    if icmp_type is not None:
        parts.append(_u8(ICMPV6_TYPE if eth_type == ETH_TYPE_IPV6 else ICMPV4_TYPE, icmp_type))
    if nd_target is not None:
        parts.append(_ip(IPV6_ND_TARGET, nd_target))
    if arp_spa is not None:
        parts.append(_ip(ARP_SPA, arp_spa))
    if arp_sha is not None:
        parts.append(_mac(ARP_SHA, arp_sha))
    return b"".join(parts)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def _action(a: Action) -> bytes:
    if isinstance(a, Ct):
        return _CT.pack(
            OFPAT_EXPERIMENTER, _CT.size, NX_VENDOR_ID, NXAST_CT,
            NX_CT_F_COMMIT if a.commit else 0,
            0,  # zone_src: none, the zone is the immediate value
            a.zone or 0,
            NX_CT_RECIRC_NONE if a.table is None else a.table,
            0,  # alg
        )  # fmt: skip
    if a.port == "NORMAL":
        return _OUTPUT.pack(OFPAT_OUTPUT, _OUTPUT.size, OFPP_NORMAL, 0)
    if a.port == "CONTROLLER":
        return _OUTPUT.pack(OFPAT_OUTPUT, _OUTPUT.size, OFPP_CONTROLLER, a.max_len)
    return _OUTPUT.pack(OFPAT_OUTPUT, _OUTPUT.size, int(a.port), 0)


@lru_cache(maxsize=256)
def instructions_bytes(actions: tuple[Action, ...]) -> bytes:
    """One apply-actions instruction; none at all for a drop (as OVS reports a drop)."""
    if not actions:
        return b""
    body = b"".join(_action(a) for a in actions)
    return (
        _INSTRUCTION_HEADER.pack(OFPIT_APPLY_ACTIONS, _INSTRUCTION_HEADER.size + len(body)) + body
    )


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


def flow_stats_entries(buf: bytes, offset: int = 16) -> Iterator[RawFlow]:
    """The entries of one OFPMP_FLOW reply (`buf` is the whole message)."""
    end = len(buf)
    while offset < end:
        length, table, sec, nsec, prio, _idle, _hard, _flags, cookie, packets, nbytes = (
            _STATS_ENTRY.unpack_from(buf, offset)
        )
        match_at = offset + _STATS_ENTRY.size
        match_len = _MATCH_HEADER.unpack_from(buf, match_at)[1]
        instr_at = match_at + match_len + (-match_len % 8)
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
    """Whether the switch's entry `raw` is `flow` exactly: same identity, cookie and actions."""
    return (
        raw.key == wire_key(flow)
        and raw.cookie == flow.cookie
        and raw.instructions == instructions_bytes(flow.actions)
    )
