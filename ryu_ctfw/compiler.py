"""The flow compiler: policy + where each VM is attached in, flow specs out.

Pure: no Ryu, no I/O. Every flow the app installs is made here, so this is where the
firewall's correctness lives; `Flow.text()` prints each one in ovs-ofctl syntax and
README.md ("The flows") explains them line by line.

Table 0 classifies: a VM's port may only send from its own MAC and IPs (ARP and ND
included), IPv4 and IPv6 go through conntrack in the bridge's zone, ARP and Neighbor
Discovery pass, the rest is dropped. Table 1 is the policy: for every pair service, new
connections from the initiator to the responder are committed, established packets in the
original direction and the responder's replies pass while the pair exists, invalid packets
are dropped apart, related ICMP errors pass, and everything else is dropped and counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from ryu_ctfw.policy import Pair, Policy, Vm

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
FAMILIES = (ETH_TYPE_IP, ETH_TYPE_IPV6)
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
IP_PROTO = {"tcp": PROTO_TCP, "udp": PROTO_UDP}
# ICMP echo request / reply, per family.
ECHO = {ETH_TYPE_IP: (PROTO_ICMP, 8, 0), ETH_TYPE_IPV6: (PROTO_ICMPV6, 128, 129)}
ND_RS, ND_RA, ND_NS, ND_NA = 133, 134, 135, 136

TABLE_CLASSIFY = 0
TABLE_POLICY = 1

# Cookies say which part of the policy made a flow: 16 bits app tag, 8 bits kind, 40 bits id.
COOKIE_TAG = 0xC7F0 << 48
COOKIE_MASK = 0xFFFF << 48
KIND_BASE = 0
KIND_VM = 1  # id = ofport
KIND_PAIR = 2  # id = pair id
KIND_LEARN = 3  # id = ofport

CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20
_CT_NAMES = [
    (CT_NEW, "new"), (CT_EST, "est"), (CT_REL, "rel"),
    (CT_RPL, "rpl"), (CT_INV, "inv"), (CT_TRK, "trk"),
]  # fmt: skip

_PROTO_NAMES = {
    (ETH_TYPE_IP, None): "ip", (ETH_TYPE_IP, PROTO_TCP): "tcp",
    (ETH_TYPE_IP, PROTO_UDP): "udp", (ETH_TYPE_IP, PROTO_ICMP): "icmp",
    (ETH_TYPE_IPV6, None): "ipv6", (ETH_TYPE_IPV6, PROTO_TCP): "tcp6",
    (ETH_TYPE_IPV6, PROTO_UDP): "udp6", (ETH_TYPE_IPV6, PROTO_ICMPV6): "icmp6",
    (ETH_TYPE_ARP, None): "arp",
}  # fmt: skip


def cookie(kind: int, ident: int = 0) -> int:
    return COOKIE_TAG | (kind << 40) | (ident & ((1 << 40) - 1))


def cookie_kind(value: int) -> int:
    return (value >> 40) & 0xFF


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


NEW = CtState.of(CT_NEW, CT_TRK)
EST_ORIGINAL = CtState.of(CT_EST, CT_TRK, clear=CT_RPL)
EST_REPLY = CtState.of(CT_EST, CT_RPL, CT_TRK)
RELATED = CtState.of(CT_REL, CT_TRK)
INVALID = CtState.of(CT_INV, CT_TRK)

Ports = tuple[int, int]  # (value, mask) of a transport port; mask 0xffff is exact


class Match(NamedTuple):
    """The fields ryu-ctfw matches on. Names follow OpenFlow's OXM fields."""

    in_port: int | None = None
    eth_type: int | None = None
    eth_src: str | None = None
    eth_dst: str | None = None
    ip_proto: int | None = None
    ipv4_src: str | None = None
    ipv6_src: str | None = None
    arp_spa: str | None = None
    arp_sha: str | None = None
    tp_src: Ports | None = None
    tp_dst: Ports | None = None
    icmp_type: int | None = None
    nd_target: str | None = None
    ct_state: CtState | None = None

    def fields(self) -> dict[str, str | int]:
        """The match as ovs-ofctl field names and values (for the REST view)."""
        out: dict[str, str | int] = {}
        for part in self._parts():
            name, _, value = part.partition("=")
            out[name] = int(value) if value.isdigit() else (value or True)  # type: ignore[assignment]
        return out

    def _parts(self) -> list[str]:
        parts: list[str] = []
        if self.ct_state is not None:
            parts.append(f"ct_state={self.ct_state.text()}")
        if self.eth_type is not None:
            name = _PROTO_NAMES.get((self.eth_type, self.ip_proto))
            if name is None:
                parts.append(f"dl_type=0x{self.eth_type:04x}")
                if self.ip_proto is not None:
                    parts.append(f"nw_proto={self.ip_proto}")
            else:
                parts.append(name)
        for label, value in (
            ("in_port", self.in_port), ("dl_src", self.eth_src), ("dl_dst", self.eth_dst),
            ("nw_src", self.ipv4_src), ("ipv6_src", self.ipv6_src),
            ("arp_spa", self.arp_spa), ("arp_sha", self.arp_sha),
            ("tp_src", _ports_text(self.tp_src)), ("tp_dst", _ports_text(self.tp_dst)),
            ("icmp_type", self.icmp_type), ("nd_target", self.nd_target),
        ):  # fmt: skip
            if value is not None:
                parts.append(f"{label}={value}")
        return parts

    def text(self) -> str:
        return ",".join(self._parts())


def _ports_text(ports: Ports | None) -> str | None:
    if ports is None:
        return None
    value, mask = ports
    return str(value) if mask == 0xFFFF else f"0x{value:x}/0x{mask:x}"


class Output(NamedTuple):
    """Output to a port number or to one of "NORMAL" / "CONTROLLER"."""

    port: int | str
    max_len: int = 128  # only for CONTROLLER

    def text(self) -> str:
        if self.port == "CONTROLLER":
            return f"CONTROLLER:{self.max_len}"
        return str(self.port) if isinstance(self.port, str) else f"output:{self.port}"


class Ct(NamedTuple):
    """The conntrack action: track in `zone`, optionally commit and recirculate."""

    commit: bool = False
    table: int | None = None
    zone: int | None = None

    def text(self) -> str:
        args = []
        if self.commit:
            args.append("commit")
        if self.table is not None:
            args.append(f"table={self.table}")
        if self.zone is not None:
            args.append(f"zone={self.zone}")
        return f"ct({','.join(args)})"


Action = Output | Ct


class Flow(NamedTuple):
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int

    @property
    def key(self) -> tuple[int, int, Match]:
        """OpenFlow identifies a flow by table, priority and match."""
        return (self.table, self.priority, self.match)

    def actions_text(self) -> str:
        return ",".join(a.text() for a in self.actions) or "drop"

    def text(self) -> str:
        """The flow as `ovs-ofctl dump-flows --no-stats` prints it (table always shown)."""
        match = self.match.text()
        head = f"table={self.table}, priority={self.priority}" + (f",{match}" if match else "")
        return f"{head} actions={self.actions_text()}"


class Attachment(NamedTuple):
    """Where a VM is on one switch right now, and the MAC it is known by."""

    ofport: int
    mac: str | None  # configured, else learned from its ARP or ND, else None


NORMAL = Output("NORMAL")
CONTROLLER = Output("CONTROLLER")

# Priorities, highest first. Table 0: a VM port's own lines sit above the generic ones.
P_VM_NEIGHBOUR = 130  # a VM's ARP / ND, checked against its addresses
P_VM_FALSE_NA = 125  # a VM's other advertisements: they claim an address it does not own
P_VM_IP = 120  # a VM's IP, checked against its addresses, to conntrack
P_VM_GUARD = 110  # anything else from a VM port: spoofed, dropped
P_ND = 105  # Neighbor Discovery from other ports (it must not go through conntrack)
P_IP = 100  # IPv4 / IPv6 from other ports, to conntrack
P_ARP = 10
P_DEFAULT_DROP = 1
# Table 1.
P_INVALID = 200
P_PAIR = 100
P_RELATED = 50
P_DENY = 0


@lru_cache(maxsize=64)
def base_flows(zone: int) -> tuple[Flow, ...]:
    """Lines every switch has, whatever the policy."""
    base = cookie(KIND_BASE)
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    flows = [Flow(TABLE_CLASSIFY, P_IP, Match(eth_type=fam), to_ct, base) for fam in FAMILIES]
    flows += [
        Flow(TABLE_CLASSIFY, P_ND, _icmp6(nd), (NORMAL,), base)
        for nd in (ND_RS, ND_RA, ND_NS, ND_NA)
    ]
    flows += [
        Flow(TABLE_CLASSIFY, P_ARP, Match(eth_type=ETH_TYPE_ARP), (NORMAL,), base),
        Flow(TABLE_CLASSIFY, P_DEFAULT_DROP, Match(), (), base),
        Flow(TABLE_POLICY, P_INVALID, Match(ct_state=INVALID), (), base),
        Flow(TABLE_POLICY, P_RELATED, Match(ct_state=RELATED), (NORMAL,), base),
        Flow(TABLE_POLICY, P_DENY, Match(), (), base),
    ]
    return tuple(flows)


def _icmp6(icmp_type: int, **fields: object) -> Match:
    return Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=icmp_type, **fields)  # type: ignore[arg-type]


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address a NIC with `mac` configures."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


# Both are pure functions of immutable inputs: remembering their answers makes a recompile
# after a small change cost little more than walking the policy.
@lru_cache(maxsize=1 << 16)
def vm_port_flows(vm: Vm, at: Attachment, zone: int) -> tuple[Flow, ...]:
    """Table 0 for a VM's port: only its own MAC and addresses get through."""
    vm_cookie = cookie(KIND_VM, at.ofport)
    port = at.ofport
    if at.mac is None:
        # MAC not given and not seen yet: let ARP and ND through and show them to the
        # controller, which binds the VM to the MAC they carry; drop the rest meanwhile.
        learn = cookie(KIND_LEARN, port)
        return (
            Flow(TABLE_CLASSIFY, P_VM_NEIGHBOUR, Match(in_port=port, eth_type=ETH_TYPE_ARP),
                 (NORMAL, CONTROLLER), learn),
            Flow(TABLE_CLASSIFY, P_VM_NEIGHBOUR, _icmp6(ND_NS, in_port=port),
                 (NORMAL, CONTROLLER), learn),
            Flow(TABLE_CLASSIFY, P_VM_GUARD, Match(in_port=port), (), learn),
        )  # fmt: skip
    mac = at.mac
    v4 = [ip for ip in vm.ips if ipaddress.ip_address(ip).version == 4]
    v6 = [ip for ip in vm.ips if ipaddress.ip_address(ip).version == 6]
    checked = bool(vm.ips)  # no IPs given: only the MAC is bound (as OVN does)
    # A VM always owns its link-local address; other IPv6 sources only when given.
    v6_sources = [link_local(mac), *v6] if checked else [None]
    v4_sources = v4 if checked else [None]
    own = Match(in_port=port, eth_src=mac)
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    # A solicitation teaches its receivers "source address is at this MAC", so it too may
    # only come from the VM's own addresses (or from :: while the VM checks for duplicates).
    ns_sources = [*v6_sources, "::"] if checked else [None]
    lines: list[tuple[int, Match, tuple[Action, ...]]] = [
        *((P_VM_NEIGHBOUR, own._replace(eth_type=ETH_TYPE_ARP, arp_spa=ip, arp_sha=mac), (NORMAL,))
          for ip in v4_sources),
        *((P_VM_NEIGHBOUR, _icmp6(ND_NA, in_port=port, eth_src=mac, nd_target=ip), (NORMAL,))
          for ip in v6_sources),
        *((P_VM_NEIGHBOUR, _icmp6(ND_NS, in_port=port, eth_src=mac, ipv6_src=ip), (NORMAL,))
          for ip in ns_sources),
        # Without this an advertisement for another VM's address, sent from the VM's own
        # source address, would pass the IPv6 line below (conntrack would then call it
        # invalid, but the port is the place to stop a lie about addresses).
        *([(P_VM_FALSE_NA, _icmp6(ND_NA, in_port=port), ())] if checked else []),
        *((P_VM_IP, own._replace(eth_type=ETH_TYPE_IP, ipv4_src=ip), to_ct) for ip in v4_sources),
        *((P_VM_IP, own._replace(eth_type=ETH_TYPE_IPV6, ipv6_src=ip), to_ct)
          for ip in v6_sources),
        (P_VM_GUARD, Match(in_port=port), ()),
    ]  # fmt: skip
    return tuple(Flow(TABLE_CLASSIFY, prio, match, acts, vm_cookie) for prio, match, acts in lines)


def port_masks(lo: int, hi: int) -> list[Ports]:
    """The fewest prefix (value, mask) pairs whose union is exactly the ports lo..hi.

    Prefix masks (ones then zeros) keep each match a plain aligned block, readable in
    dump-flows; arbitrary bit masks could occasionally save a line.
    """
    out: list[Ports] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16  # largest block aligned at lo...
        while size > hi - lo + 1:  # ...that does not pass hi
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


@dataclass(frozen=True)
class Service:
    """One family's worth of what a pair allows, seen from the initiator."""

    eth_type: int | None  # None: both families (only where no protocol is matched)
    ip_proto: int | None = None
    ports: Ports | None = None  # destination port on the way there, source port back
    icmp_request: int | None = None
    icmp_reply: int | None = None

    def original(self) -> Match:
        return Match(
            eth_type=self.eth_type,
            ip_proto=self.ip_proto,
            tp_dst=self.ports,
            icmp_type=self.icmp_request,
        )

    def reply(self) -> Match:
        return Match(
            eth_type=self.eth_type,
            ip_proto=self.ip_proto,
            tp_src=self.ports,
            icmp_type=self.icmp_reply,
        )


def services(pair: Pair) -> list[Service]:
    if pair.protocol == "any":
        return [Service(fam) for fam in FAMILIES]
    if pair.protocol == "icmp":
        return [Service(fam, proto, None, req, rep) for fam, (proto, req, rep) in ECHO.items()]
    rng = pair.port_range()
    masks: list[Ports | None] = port_masks(*rng) if rng else [None]
    return [Service(fam, IP_PROTO[pair.protocol], m) for fam in FAMILIES for m in masks]


@lru_cache(maxsize=1 << 16)
def pair_flows(
    pair: Pair, initiator: Attachment, responder: Attachment, zone: int
) -> tuple[Flow, ...]:
    """Table 1 for one pair: commit new, pass established both ways, while it exists."""
    pc = cookie(KIND_PAIR, pair.id)
    there = Match(in_port=initiator.ofport, eth_dst=responder.mac)
    back = Match(in_port=responder.ofport, eth_dst=initiator.mac)
    commit = (Ct(commit=True, zone=zone), NORMAL)
    flows: list[Flow] = []
    for svc in services(pair):
        orig, rep = svc.original(), svc.reply()
        flows.append(Flow(TABLE_POLICY, P_PAIR, _merge(there, orig, NEW), commit, pc))
        # Established packets need no protocol prerequisite for ct_state; with no
        # protocol to match, one line serves both families.
        if pair.protocol == "any":
            orig = rep = Match()
        flows.append(Flow(TABLE_POLICY, P_PAIR, _merge(there, orig, EST_ORIGINAL), (NORMAL,), pc))
        flows.append(Flow(TABLE_POLICY, P_PAIR, _merge(back, rep, EST_REPLY), (NORMAL,), pc))
    return tuple(dedupe(flows))  # `any`: both families share the established lines


def _merge(where: Match, what: Match, state: CtState) -> Match:
    # Spelled out rather than dataclasses.replace: this runs for every pair line.
    return Match(
        in_port=where.in_port, eth_dst=where.eth_dst, ct_state=state, eth_type=what.eth_type,
        ip_proto=what.ip_proto, tp_src=what.tp_src, tp_dst=what.tp_dst,
        icmp_type=what.icmp_type,
    )  # fmt: skip


def compile_switch(policy: Policy, attached: Mapping[str, Attachment], zone: int) -> list[Flow]:
    """All flows one switch should hold. `attached` maps VM name -> where it is on it."""
    return list(compile_keyed(policy, attached, zone).values())


def compile_keyed(
    policy: Policy, attached: Mapping[str, Attachment], zone: int
) -> dict[tuple, Flow]:
    """compile_switch as OpenFlow identity -> flow, the form a sync compares."""
    flows = list(base_flows(zone))
    for name, at in sorted(attached.items()):
        flows += vm_port_flows(policy.vms[name], at, zone)
    for _, pair in sorted(policy.pairs.items()):
        ini, res = attached.get(pair.initiator), attached.get(pair.responder)
        if ini is None or res is None or ini.mac is None or res.mac is None:
            continue  # not both on this switch with known MACs: nothing to allow here
        flows += pair_flows(pair, ini, res, zone)
    return dedupe_keyed(flows)


def dedupe(flows: Iterable[Flow]) -> list[Flow]:
    """Keep the first flow for each OpenFlow identity, in order."""
    return list(dedupe_keyed(flows).values())


def dedupe_keyed(flows: Iterable[Flow]) -> dict[tuple, Flow]:
    seen: dict[tuple, Flow] = {}
    for f in flows:
        seen.setdefault(f.key, f)
    return seen


def render(flows: Iterable[Flow]) -> str:
    """Flows in the order dump-flows lists them: by table, then priority high to low."""
    ordered = sorted(flows, key=lambda f: (f.table, -f.priority))
    return "\n".join(f.text() for f in ordered)
