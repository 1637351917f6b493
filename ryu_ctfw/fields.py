"""The match fields ryu-ctfw uses: one table that drives text, wire bytes and decoding.

Each `Field` says how one attribute of `compiler.Match` is printed (its ovs-ofctl name and
place in the line), which OXM TLV carries it, and how its value is packed and unpacked.
The table is in the order Open vSwitch writes fields into a match (nx_put_raw in OVS's
lib/nx-match.c), so a match packed by walking it is byte for byte what the switch hands
back; `TEXT_ORDER` is the order `ovs-ofctl dump-flows` prints them in. A new field is one
row here (and one attribute on Match).

Pure: no Ryu, no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

OXM_OF = 0x8000  # OpenFlow basic class
NXM_1 = 0x0001  # Nicira extension class (ct_state, ct_mark, ip_frag live there)

ETH_TYPE_IPV6 = 0x86DD
PROTO_TCP, PROTO_UDP = 6, 17

# ip_frag values as ovs-ofctl spells them: (value, mask) of OVS's two fragment bits.
FRAG = {"no": (0, 1), "yes": (1, 1), "first": (1, 3), "later": (3, 3), "not_later": (0, 2)}
_FRAG_NAMES = {v: k for k, v in FRAG.items()}


class Codec(NamedTuple):
    """How one kind of value becomes TLV bytes (value, mask or None) and back."""

    pack: Callable[[Any], tuple[bytes, bytes | None]]
    unpack: Callable[[bytes, bytes | None], Any]
    text: Callable[[Any], str]


def _uint(size: int, hex_text: bool = False) -> Codec:
    fmt = {1: "!B", 2: "!H", 4: "!I", 8: "!Q"}[size]
    return Codec(
        lambda v: (struct.pack(fmt, v), None),
        lambda b, m: struct.unpack(fmt, b)[0] if m is None else None,
        (lambda v: f"0x{v:x}") if hex_text else str,
    )


def _masked16() -> Codec:
    """(value, mask); a full mask is packed as an exact match, as OVS does."""

    def pack(v: tuple[int, int]) -> tuple[bytes, bytes | None]:
        value, mask = v
        return struct.pack("!H", value), None if mask == 0xFFFF else struct.pack("!H", mask)

    def unpack(b: bytes, m: bytes | None) -> tuple[int, int]:
        return struct.unpack("!H", b)[0], 0xFFFF if m is None else struct.unpack("!H", m)[0]

    return Codec(pack, unpack, lambda v: str(v[0]) if v[1] == 0xFFFF else f"0x{v[0]:x}/0x{v[1]:x}")


def _vlan() -> Codec:
    c = _masked16()
    return Codec(c.pack, c.unpack, lambda v: f"0x{v[0]:04x}" if v[1] == 0xFFFF else
                 f"0x{v[0]:x}/0x{v[1]:x}")  # fmt: skip


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _mac() -> Codec:
    """A MAC, or "mac/mask" for a masked match (the multicast bit, say)."""

    def pack(v: str) -> tuple[bytes, bytes | None]:
        value, _, mask = v.partition("/")
        return _mac_bytes(value), _mac_bytes(mask) if mask else None

    def unpack(b: bytes, m: bytes | None) -> str:
        return _mac_text(b) if m is None else f"{_mac_text(b)}/{_mac_text(m)}"

    return Codec(pack, unpack, str)


def _ip() -> Codec:
    return Codec(
        lambda v: (ipaddress.ip_address(v).packed, None),
        lambda b, m: str(ipaddress.ip_address(b)) if m is None else None,
        str,
    )


def _ip_or_net() -> Codec:
    """An address, or a network "addr/prefix" (a CIDR mask; a full one packs exact, as
    OVS does)."""

    def pack(v: str) -> tuple[bytes, bytes | None]:
        if "/" not in v:
            return ipaddress.ip_address(v).packed, None
        net = ipaddress.ip_network(v)
        if net.prefixlen == net.max_prefixlen:
            return net.network_address.packed, None
        return net.network_address.packed, net.netmask.packed

    def unpack(b: bytes, m: bytes | None) -> str | None:
        addr = ipaddress.ip_address(b)
        if m is None:
            return str(addr)
        bits = int.from_bytes(m, "big")
        width = 8 * len(m)
        prefix = width - (~bits & ((1 << width) - 1)).bit_length()
        if bits != ((1 << width) - 1) ^ ((1 << (width - prefix)) - 1):
            return None  # not a CIDR mask: nothing we make
        try:
            return str(ipaddress.ip_network(f"{addr}/{prefix}"))
        except ValueError:  # host bits set
            return None

    return Codec(pack, unpack, str)


CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_CT_NAMES = [
    (CT_NEW, "new"), (CT_EST, "est"), (CT_REL, "rel"),
    (CT_RPL, "rpl"), (CT_INV, "inv"), (CT_TRK, "trk"),
]  # fmt: skip


class CtState(NamedTuple):
    """ct_state flags: `value` among the bits of `mask` (+flag set, -flag clear)."""

    value: int
    mask: int

    @classmethod
    def of(cls, *required: int, clear: int = 0) -> CtState:
        bits = 0
        for flag in required:
            bits |= flag
        return cls(bits, bits | clear)

    def text(self) -> str:
        out = ""
        for bit, name in _CT_NAMES:
            if self.mask & bit:
                out += ("+" if self.value & bit else "-") + name
        return out


def _ct_state() -> Codec:
    return Codec(
        lambda v: (struct.pack("!I", v.value), struct.pack("!I", v.mask)),
        lambda b, m: CtState(
            struct.unpack("!I", b)[0], 0xFFFFFFFF if m is None else struct.unpack("!I", m)[0]
        ),
        lambda v: v.text(),
    )


def _frag() -> Codec:
    def pack(v: str) -> tuple[bytes, bytes | None]:
        value, mask = FRAG[v]
        return bytes((value,)), None if mask == 3 else bytes((mask,))

    def unpack(b: bytes, m: bytes | None) -> str | None:
        return _FRAG_NAMES.get((b[0], 3 if m is None else m[0]))

    return Codec(pack, unpack, str)


# (eth_type, ip_proto) of the match -> (class, field) of the TLV: L4 fields have one per
# protocol.
OxmOf = Callable[[int | None, int | None], tuple[int, int]]


def _l4(tcp: int, udp: int) -> OxmOf:
    return lambda eth_type, ip_proto: (OXM_OF, tcp if ip_proto == PROTO_TCP else udp)


def _icmp(v4: int, v6: int) -> OxmOf:
    return lambda eth_type, ip_proto: (OXM_OF, v6 if eth_type == ETH_TYPE_IPV6 else v4)


class Field(NamedTuple):
    attr: str  # the attribute of compiler.Match
    label: str  # ovs-ofctl's name for it
    codec: Codec
    oxm: tuple[int, int] | OxmOf  # (class, field number), or which one for this match
    decode_as: tuple[tuple[int, int], ...] = ()  # every TLV that unpacks into `attr`


def _f(attr: str, label: str, codec: Codec, cls: int, field: int) -> Field:
    return Field(attr, label, codec, (cls, field), ((cls, field),))


# In the order OVS writes them (OpenFlow 1.3 OXM numbers, section 7.2.3.7; Nicira's NXM_1).
FIELDS: tuple[Field, ...] = (
    _f("conj_id", "conj_id", _uint(4), NXM_1, 37),
    _f("in_port", "in_port", _uint(4), OXM_OF, 0),
    _f("eth_src", "dl_src", _mac(), OXM_OF, 4),
    _f("eth_dst", "dl_dst", _mac(), OXM_OF, 3),
    _f("eth_type", "dl_type", _uint(2), OXM_OF, 5),
    _f("vlan_tci", "vlan_tci", _vlan(), OXM_OF, 6),
    _f("ipv4_src", "nw_src", _ip_or_net(), OXM_OF, 11),
    _f("ipv4_dst", "nw_dst", _ip_or_net(), OXM_OF, 12),
    _f("ipv6_src", "ipv6_src", _ip_or_net(), OXM_OF, 26),
    _f("ipv6_dst", "ipv6_dst", _ip_or_net(), OXM_OF, 27),
    _f("ip_frag", "nw_frag", _frag(), NXM_1, 26),
    _f("ip_proto", "nw_proto", _uint(1), OXM_OF, 10),
    Field("tp_src", "tp_src", _masked16(), _l4(13, 15), ((OXM_OF, 13), (OXM_OF, 15))),
    Field("tp_dst", "tp_dst", _masked16(), _l4(14, 16), ((OXM_OF, 14), (OXM_OF, 16))),
    Field("icmp_type", "icmp_type", _uint(1), _icmp(19, 29), ((OXM_OF, 19), (OXM_OF, 29))),
    _f("nd_target", "nd_target", _ip(), OXM_OF, 31),
    _f("nd_sll", "nd_sll", _mac(), OXM_OF, 32),
    _f("nd_tll", "nd_tll", _mac(), OXM_OF, 33),
    _f("arp_spa", "arp_spa", _ip(), OXM_OF, 22),
    _f("arp_sha", "arp_sha", _mac(), OXM_OF, 24),
    _f("ct_state", "ct_state", _ct_state(), NXM_1, 105),
    _f("ct_mark", "ct_mark", _uint(4, hex_text=True), NXM_1, 107),
    _f("metadata", "metadata", _uint(8, hex_text=True), OXM_OF, 2),
)
BY_ATTR = {f.attr: f for f in FIELDS}
BY_TLV = {tlv: f for f in FIELDS for tlv in f.decode_as}

# How ovs-ofctl orders them in a line. eth_type and ip_proto print as one protocol name
# ("tcp6") where they have one, in the place of eth_type.
TEXT_ORDER: tuple[str, ...] = (
    "conj_id", "ct_state", "ct_mark", "eth_type", "metadata", "in_port", "vlan_tci", "eth_src",
    "eth_dst",
    "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "arp_spa", "arp_sha", "ip_frag", "tp_src",
    "tp_dst", "icmp_type", "nd_target", "nd_sll", "nd_tll",
)  # fmt: skip
