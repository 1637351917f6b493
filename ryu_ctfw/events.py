"""The connection log: events (denied attempts, and admitted connections of pairs that ask
for it) in a bounded ring, and the queries GET /ctfw/v1/events answers.

Events come from the switch as metered packet-ins (compiler.py, "the log table"); the
switch side turns each into an Event; this module keeps and selects them."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ryu.lib.packet import arp, ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp

from ryu_ctfw.compiler import (
    KIND_PAIR,
    REASON_BY_CODE,
    TABLE_LOG,
    Attachment,
    cookie_kind,
)
from ryu_ctfw.policy import InvalidInput, Policy

RING_SIZE = 10_000
DEFAULT_LIMIT = 100
MAX_LIMIT = RING_SIZE
VERDICTS = ("allowed", "denied")
LOG = logging.getLogger("ryu_ctfw.events")


@dataclass(frozen=True)
class Event:
    """One line of the connection log, as the API shows it."""

    id: int  # rises by one per event: `after=` resumes a follow without gaps or repeats
    time: float  # seconds since the epoch
    switch: str  # the bridge's name, else its dpid
    vm: str | None  # the VM whose port the packet came in by
    peer: str | None  # the VM, group or network it was for
    protocol: str
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    verdict: str  # "allowed" | "denied"
    reason: str
    pair: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    verdict: str | None = None
    vm: str | None = None  # the event's vm or peer
    since: float | None = None  # time >= since
    after: int | None = None  # id > after
    limit: int = DEFAULT_LIMIT


QUERY_PARAMS = ("verdict", "vm", "since", "after", "limit")


def query_from_params(params: Mapping[str, str]) -> Query:
    """GET /events' query string (each parameter once: rest._params), anything unknown or
    malformed refused by name."""
    unknown = sorted(set(params) - set(QUERY_PARAMS))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"events takes {', '.join(QUERY_PARAMS)}"
        )
    verdict = params.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise InvalidInput(f"invalid verdict {verdict!r}: allowed or denied")
    since = params.get("since")
    since_value = None
    if since is not None:
        try:
            since_value = float(since)
        except ValueError:
            since_value = math.nan
        if not math.isfinite(since_value) or since_value < 0:
            raise InvalidInput(f"invalid since {since!r}: seconds since the epoch")
    return Query(
        verdict=verdict,
        vm=params.get("vm") or None,
        since=since_value,
        after=_count(params, "after", 0, None),
        limit=_count(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT,
    )


def _count(params: Mapping[str, str], key: str, lo: int, hi: int | None) -> int | None:
    text = params.get(key)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 12 or int(text) < lo or (hi and int(text) > hi):
        bound = f"{lo}-{hi}" if hi else f"{lo} or more"
        raise InvalidInput(f"invalid {key} {text!r}: a whole number, {bound}")
    return int(text)


class EventLog:
    """The latest events, oldest first; each is also logged as one JSON line."""

    def __init__(self, size: int = RING_SIZE, logger: logging.Logger | None = None) -> None:
        self.ring: deque[Event] = deque(maxlen=size)
        self.next_id = 1
        self.log = logger or LOG
        self.counts: dict[tuple[str, str], int] = {}  # (verdict, reason) -> events seen

    def add(self, **fields: Any) -> Event:
        fields.setdefault("time", time.time())
        event = Event(id=self.next_id, **fields)
        self.next_id += 1
        self.ring.append(event)
        key = (event.verdict, event.reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.log.info("event %s", json.dumps(event.to_dict(), sort_keys=True))
        return event

    def select(self, query: Query) -> list[dict[str, Any]]:
        """The newest `limit` events that match, oldest first."""
        out: list[Event] = []
        for event in reversed(self.ring):
            if query.after is not None and event.id <= query.after:
                break
            if query.since is not None and event.time < query.since:
                break
            if query.verdict is not None and event.verdict != query.verdict:
                continue
            if query.vm is not None and query.vm not in (event.vm, event.peer):
                continue
            out.append(event)
            if len(out) >= query.limit:
                break
        return [e.to_dict() for e in reversed(out)]


# --- packet-ins as events ---------------------------------------------------------------------

COOKIE_ID = (1 << 40) - 1
ADMITTED = "admitted"  # the reason of an allowed event: a pair that logs admitted it


def describe(
    policy: Policy,
    attached: Mapping[str, Attachment],
    in_port: int | None,
    data: bytes,
    table: int,
    flow_cookie: int,
    metadata: int,
) -> dict[str, Any]:
    """An event's fields (all but id, time and switch) from a packet-in: the log table's
    (a drop, its reason in the metadata) or a logging pair's opening line (its cookie)."""
    pkt = _Packet.parse(data)
    vm = _sender(policy, attached, in_port, pkt.eth_src)
    if table == TABLE_LOG:
        reason = REASON_BY_CODE.get(metadata)
        verdict, why, pair_id = "denied", reason.name if reason else f"code {metadata}", None
        peer = _addressee(policy, attached, pkt)
    else:
        pair_id = flow_cookie & COOKIE_ID if cookie_kind(flow_cookie) == KIND_PAIR else None
        pair = policy.pairs.get(pair_id) if pair_id is not None else None
        verdict, why = "allowed", ADMITTED
        peer = pair.responder if pair is not None else _addressee(policy, attached, pkt)
    return {
        "vm": vm, "peer": peer, "protocol": pkt.protocol, "src": pkt.src, "dst": pkt.dst,
        "sport": pkt.sport, "dport": pkt.dport, "verdict": verdict, "reason": why,
        "pair": pair_id,
    }  # fmt: skip


def _sender(
    policy: Policy, attached: Mapping[str, Attachment], in_port: int | None, mac: str | None
) -> str | None:
    """The VM whose port the packet came in by: the VM at that port, or, at the fabric
    port, the VM of another host whose MAC it was sent from."""
    remote = None
    for name, at in attached.items():
        if at.ofport != in_port or name not in policy.vms:
            continue
        if not at.remote:
            return name
        if at.mac == mac:
            remote = name
    return remote


def _addressee(policy: Policy, attached: Mapping[str, Attachment], pkt: _Packet) -> str | None:
    """The VM, or else the network, a packet was for: by its destination MAC, else its
    destination address."""
    for name, vm in policy.vms.items():
        if pkt.eth_dst is not None and vm.known_mac == pkt.eth_dst:
            return name
    if pkt.dst is None:
        return None
    try:
        dst = ipaddress.ip_address(pkt.dst)
    except ValueError:
        return None
    for name, vm in policy.vms.items():
        if pkt.dst in vm.ips:
            return name
    best: tuple[int, str] | None = None
    for name, net in policy.networks.items():
        for cidr in net.cidrs:
            network = ipaddress.ip_network(cidr)
            inside = dst.version == network.version and dst in network
            if inside and (best is None or network.prefixlen > best[0]):
                best = (network.prefixlen, name)
    return best[1] if best else None


@dataclass(frozen=True)
class _Packet:
    """What an event says of a packet (the first 128 bytes of it)."""

    eth_src: str | None = None
    eth_dst: str | None = None
    protocol: str = "unknown"
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> _Packet:
        try:
            pkt = packet.Packet(data)
        except Exception:  # Ryu's parser on a truncated or odd frame
            return cls()
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None:
            return cls()
        macs = {"eth_src": eth.src, "eth_dst": eth.dst}
        a = pkt.get_protocol(arp.arp)
        if a is not None:
            return cls(**macs, protocol="arp", src=a.src_ip, dst=a.dst_ip)
        ip = pkt.get_protocol(ipv4.ipv4) or pkt.get_protocol(ipv6.ipv6)
        if ip is None:
            return cls(**macs, protocol=f"0x{eth.ethertype:04x}")
        v6 = isinstance(ip, ipv6.ipv6)
        addresses = {"src": ip.src, "dst": ip.dst}
        for proto, name in ((tcp.tcp, "tcp"), (udp.udp, "udp")):
            l4 = pkt.get_protocol(proto)
            if l4 is not None:
                return cls(**macs, **addresses, protocol=name,
                           sport=l4.src_port, dport=l4.dst_port)  # fmt: skip
        if pkt.get_protocol(icmpv6.icmpv6) is not None:
            return cls(**macs, **addresses, protocol="icmp6")
        if pkt.get_protocol(icmp.icmp) is not None:
            return cls(**macs, **addresses, protocol="icmp")
        return cls(**macs, **addresses, protocol="ipv6" if v6 else "ip")
