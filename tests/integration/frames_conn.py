"""Hand-made frames, a frame decoder and small traffic programs for test_connections.py.

Built on frames.py. Run inside a VM's namespace as
`python frames_conn.py <command> ...`:

- `udp-recv SECONDS COUNT PORT...`: bind the ports (IPv4 and IPv6), print "ready", then one
  line "<port> <peer> <length> <sha256>" per datagram received, until SECONDS have passed
  or (COUNT > 0) COUNT datagrams came.
  A bound socket also keeps the kernel from answering with ICMP port unreachable.
- `udp-send DST PORT SIZE PAYLOAD_HEX [DST PORT SIZE PAYLOAD_HEX ...]`: for each group,
  one datagram of SIZE bytes (PAYLOAD repeated) from a real socket, so the kernel
  fragments it when it exceeds the MTU.
- `arp-flood IFACE RATE SECONDS MAX MARKER_HEX`: ARP requests whose Ethernet source and
  ARP sender MAC differ (random, unicast), RATE per second, for at most SECONDS and MAX
  frames; prints how many were sent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass

import frames  # beside this file, also when it runs as a script in a namespace
from frames import _mac as mac_bytes
from frames import checksum, ethernet

ETH_IP, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_FRAG6 = 1, 6, 17, 44
TCP_SYN, TCP_ACK = 0x02, 0x10


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0x4321) -> bytes:
    return frames.ipv4(src, dst, proto, payload, ident)


def _l4_checksummed(src: str, dst: str, proto: int, segment: bytes, at: int) -> bytes:
    pseudo = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!xBH", proto, len(segment))
    )
    value = checksum(pseudo + segment) or 0xFFFF
    return segment[:at] + struct.pack("!H", value) + segment[at + 2 :]


def udp4_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes
) -> bytes:
    """An IPv4 UDP datagram with a correct checksum."""
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    seg = _l4_checksummed(src_ip, dst_ip, PROTO_UDP, seg, 6)
    return ethernet(dst_mac, src_mac, ETH_IP, ipv4(src_ip, dst_ip, PROTO_UDP, seg))


def tcp4_frame(
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    flags: int,
    payload: bytes = b"",
    seq: int = 1000,
    ack: int = 0,
) -> bytes:
    """An IPv4 TCP segment (no options) with a correct checksum."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0) + payload
    seg = _l4_checksummed(src_ip, dst_ip, PROTO_TCP, seg, 16)
    return ethernet(dst_mac, src_mac, ETH_IP, ipv4(src_ip, dst_ip, PROTO_TCP, seg))


def icmp4_error_frame(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, quoted: bytes, code: int = 3
) -> bytes:
    """An ICMP destination unreachable (default code: port unreachable) quoting `quoted`,
    the offending IP packet (its header and at least 8 bytes of what follows)."""
    body = struct.pack("!BBHI", 3, code, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return ethernet(dst_mac, src_mac, ETH_IP, ipv4(src_ip, dst_ip, PROTO_ICMP, body))


def arp_frame(
    src_mac: str,
    sender_mac: str,
    sender_ip: str,
    target_ip: str,
    dst_mac: str = "ff:ff:ff:ff:ff:ff",
    op: int = 1,
    padding: bytes = b"",
) -> bytes:
    """An ARP request (op 1) or reply (op 2); `padding` after it carries a test's marker."""
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_IP,
        6,
        4,
        op,
        mac_bytes(sender_mac),
        ipaddress.IPv4Address(sender_ip).packed,
        b"\0" * 6,
        ipaddress.IPv4Address(target_ip).packed,
    )
    return ethernet(dst_mac, src_mac, ETH_ARP, arp + padding)


@dataclass(frozen=True)
class Seen:
    """What a sniffed frame is, as far as these tests care."""

    eth_dst: str
    eth_src: str
    eth_type: int
    proto: int | None = None  # IP protocol (for IPv6: the first next header)
    src: str | None = None
    dst: str | None = None
    fragment: bool = False  # IPv4 MF bit or offset, or an IPv6 fragment header
    first_fragment: bool = True
    sport: int | None = None  # only for unfragmented or first-fragment TCP/UDP
    dport: int | None = None
    tcp_flags: int | None = None


def decode(frame: bytes) -> Seen:
    eth_dst, eth_src = mac_text(frame[:6]), mac_text(frame[6:12])
    eth_type = struct.unpack("!H", frame[12:14])[0]
    base = {"eth_dst": eth_dst, "eth_src": eth_src, "eth_type": eth_type}
    l3 = frame[14:]
    if eth_type == ETH_IP and len(l3) >= 20:
        ihl = (l3[0] & 0x0F) * 4
        flags_off = struct.unpack("!H", l3[6:8])[0]
        mf, offset = bool(flags_off & 0x2000), flags_off & 0x1FFF
        proto = l3[9]
        src, dst = str(ipaddress.IPv4Address(l3[12:16])), str(ipaddress.IPv4Address(l3[16:20]))
        l4, first = l3[ihl:], offset == 0
        fragment = mf or offset > 0
    elif eth_type == ETH_IPV6 and len(l3) >= 40:
        proto = l3[6]
        src, dst = str(ipaddress.IPv6Address(l3[8:24])), str(ipaddress.IPv6Address(l3[24:40]))
        l4, first, fragment = l3[40:], True, proto == PROTO_FRAG6
        if fragment and len(l4) >= 8:
            first = struct.unpack("!H", l4[2:4])[0] >> 3 == 0
            proto, l4 = l4[0], l4[8:]
    else:
        return Seen(**base)
    ports: dict = {}
    if first and proto in (PROTO_TCP, PROTO_UDP) and len(l4) >= 4:
        ports = dict(zip(("sport", "dport"), struct.unpack("!HH", l4[:4]), strict=True))
        if proto == PROTO_TCP and len(l4) >= 14:
            ports["tcp_flags"] = l4[13]
    return Seen(
        **base, proto=proto, src=src, dst=dst, fragment=fragment, first_fragment=first, **ports
    )


def repeated(marker: bytes, size: int) -> bytes:
    """`size` bytes of `marker` over and over: every fragment of it holds the marker."""
    return (marker * (size // len(marker) + 1))[:size]


# --- programs run inside a VM's namespace ------------------------------------------------------


def cmd_udp_recv(seconds: float, count: int, ports: list[int]) -> int:
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        socks.append(s)
    print("ready", flush=True)
    deadline, got = time.monotonic() + seconds, 0
    while (left := deadline - time.monotonic()) > 0 and not 0 < count <= got:
        for s in select.select(socks, [], [], left)[0]:
            data, peer = s.recvfrom(65535)
            digest = hashlib.sha256(data).hexdigest()
            print(s.getsockname()[1], peer[0], len(data), digest, flush=True)
            got += 1
    return 0


def cmd_udp_send(dst: str, port: int, size: int, payload: bytes) -> int:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(repeated(payload, size), (dst, port))
    return 0


def cmd_arp_flood(iface: str, rate: float, seconds: float, limit: int, marker: bytes) -> int:
    frames = []
    for i in range(512):
        eth_src = bytes([0x02]) + os.urandom(5)  # locally administered, unicast
        sender = bytes([0x06]) + os.urandom(5)  # another unicast MAC: never the same
        frames.append(
            arp_frame(
                mac_text(eth_src),
                mac_text(sender),
                f"198.18.1.{i % 250 + 1}",
                "198.18.0.1",
                padding=marker,
            )
        )
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        start = time.monotonic()
        while sent < limit and (elapsed := time.monotonic() - start) < seconds:
            due = min(limit, int(elapsed * rate) + 1)
            while sent < due:
                try:
                    s.send(frames[sent % len(frames)])
                except BlockingIOError:
                    break
                sent += 1
            time.sleep(0.001)
    print(sent, flush=True)
    return 0


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "udp-recv":
        return cmd_udp_recv(float(args[0]), int(args[1]), [int(p) for p in args[2:]])
    if cmd == "udp-send":
        for i in range(0, len(args), 4):
            dst, port, size, payload = args[i : i + 4]
            cmd_udp_send(dst, int(port), int(size), bytes.fromhex(payload))
        return 0
    if cmd == "arp-flood":
        rate, seconds, limit = float(args[1]), float(args[2]), int(args[3])
        return cmd_arp_flood(args[0], rate, seconds, limit, bytes.fromhex(args[4]))
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
