"""Hand-made frames for tests that must send what a normal stack would not (forged sources)."""

from __future__ import annotations

import ipaddress
import struct


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: str, src: str, eth_type: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", eth_type) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0x1234) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        ident,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def icmp(
    icmp_type: int, code: int = 0, rest: bytes = b"\0\x01\0\x01", data: bytes = b"x" * 16
) -> bytes:
    body = struct.pack("!BBH", icmp_type, code, 0) + rest + data
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def icmp_echo_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, icmp_type: int = 8
) -> bytes:
    """An IPv4 ICMP echo request (type 8) or reply (type 0)."""
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src_ip, dst_ip, 1, icmp(icmp_type)))


def arp_reply_frame(src_mac: str, sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """A gratuitous-style ARP reply saying `sender_ip` is at `sender_mac`."""
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        2,
        _mac(sender_mac),
        ipaddress.IPv4Address(sender_ip).packed,
        b"\xff" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )
    return ethernet("ff:ff:ff:ff:ff:ff", src_mac, 0x0806, arp)


def neighbor_advert_frame(src_mac: str, src_ip: str, target: str) -> bytes:
    """An unsolicited ICMPv6 Neighbor Advertisement claiming `target` is at `src_mac`."""
    body = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, ipaddress.IPv6Address(target).packed)
    body += struct.pack("!BB6s", 2, 1, _mac(src_mac))  # target link-layer address option
    src, dst = ipaddress.IPv6Address(src_ip).packed, ipaddress.IPv6Address("ff02::1").packed
    pseudo = src + dst + struct.pack("!IxxxB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, src, dst)
    return ethernet("33:33:00:00:00:01", src_mac, 0x86DD, ip6 + body)


def udp(src_port: int, dst_port: int, payload: bytes) -> bytes:
    """A UDP header and payload with checksum 0 (none, which IPv4 allows)."""
    return struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes,
              dst_port: int = 7777, src_port: int = 40000) -> bytes:  # fmt: skip
    return ethernet(dst_mac, src_mac, 0x0800, ipv4(src_ip, dst_ip, 17, udp(src_port, dst_port,
                                                                         payload)))  # fmt: skip


def tagged(frame: bytes, tci: int, tpid: int = 0x8100) -> bytes:
    """`frame` with a VLAN tag after its MACs (0x8100 802.1Q, 0x88a8 802.1ad)."""
    return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]


def arp_frame(src_mac: str, dst_mac: str, op: int, sender_mac: str, sender_ip: str,
              target_ip: str, padding: bytes = b"") -> bytes:  # fmt: skip
    """An ARP request (op 1) or reply (op 2) in a frame to `dst_mac`."""
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, _mac(sender_mac),
        ipaddress.IPv4Address(sender_ip).packed, b"\0" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )  # fmt: skip
    return ethernet(dst_mac, src_mac, 0x0806, arp + padding)


def _icmp6_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, body: bytes) -> bytes:
    src, dst = ipaddress.IPv6Address(src_ip).packed, ipaddress.IPv6Address(dst_ip).packed
    pseudo = src + dst + struct.pack("!IxxxB", len(body), 58)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, src, dst)
    return ethernet(dst_mac, src_mac, 0x86DD, ip6 + body)


def nd_frame(kind: int, src_mac: str, src_ip: str, target: str, option_mac: str | None,
             dst_mac: str = "33:33:00:00:00:01", dst_ip: str = "ff02::1",
             padding: bytes = b"") -> bytes:  # fmt: skip
    """A Neighbor Solicitation (135, with a source link-layer option) or Advertisement
    (136, with a target link-layer option) about `target`; `option_mac` None: no option."""
    flags = 0x20000000 if kind == 136 else 0
    body = struct.pack("!BBHI16s", kind, 0, 0, flags, ipaddress.IPv6Address(target).packed)
    if option_mac is not None:
        body += struct.pack("!BB6s", 1 if kind == 135 else 2, 1, _mac(option_mac))
    return _icmp6_frame(src_mac, dst_mac, src_ip, dst_ip, body) + padding  # a trailer


def flow_marker(src: str, dst: str, sport: int | None = None, dport: int | None = None) -> bytes:
    """The bytes every IPv4 or IPv6 packet from `src` to `dst` carries in a row (source and
    destination address, and, for TCP and UDP without IP options or IPv6 extension headers,
    the ports right after them): a Sniffer marker that catches the SYN of a refused TCP
    connection or the echo request of a refused ping, which carry no marker of their own."""
    out = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    if sport is not None or dport is not None:
        if sport is None or dport is None:
            raise ValueError("give both ports or neither")
        out += struct.pack("!HH", sport, dport)
    return out


def udp6_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes,
               dst_port: int = 7777, src_port: int = 40000) -> bytes:  # fmt: skip
    """An IPv6 UDP datagram with its (mandatory) checksum."""
    src, dst = ipaddress.IPv6Address(src_ip).packed, ipaddress.IPv6Address(dst_ip).packed
    seg = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    pseudo = src + dst + struct.pack("!IxxxB", len(seg), 17)
    seg = seg[:6] + struct.pack("!H", checksum(pseudo + seg) or 0xFFFF) + seg[8:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(seg), 17, 64, src, dst)
    return ethernet(dst_mac, src_mac, 0x86DD, ip6 + seg)
