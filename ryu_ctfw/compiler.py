"""The flow compiler: policy + where each VM is attached in, flow specs out.

Pure: no Ryu, no I/O. Every flow the app installs is made here, so this is where the
firewall's correctness lives; `Flow.text()` prints each one in ovs-ofctl syntax and
README.md ("The flows") explains them line by line.

Table 0 classifies: a VM's port may only send from its own MAC and IPs (ARP and ND, their
link-layer options included), untagged; nobody else may send from a VM's MAC or registered
addresses; IPv4 and IPv6 go through conntrack in the bridge's zone, ARP and Neighbor
Discovery go to table 2, the rest is dropped. Table 1 is the policy: every original-
direction packet must meet a pair's service line, which commits it with the mark of its
initiator -> responder link and outputs it to the responder's port; replies and related
ICMP pass only with that mark, between the link's two ports; invalid packets are dropped
apart, established ones no pair allows any more are marked blocked, and everything else is
dropped and counted. Table 2 delivers ARP and ND to the port of the VM they are for, or
floods broadcast and multicast. Nothing uses NORMAL: the bridge's MAC table never decides
where a packet goes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import NamedTuple

from ryu_ctfw.fields import (
    BY_ATTR,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    TEXT_ORDER,
    CtState,
)
from ryu_ctfw.policy import Network, Pair, Policy, Vm

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
TABLE_DELIVER = 2  # ARP and ND to the port of the VM they are for, or flooded
TABLE_LOG = 3  # what is dropped as an event: to the controller, through its port's meter

# Cookies say which part of the policy made a flow: 16 bits app tag, 8 bits kind, 40 bits id.
COOKIE_TAG = 0xC7F0 << 48
COOKIE_MASK = 0xFFFF << 48
KIND_BASE = 0
KIND_VM = 1  # id = ofport
KIND_PAIR = 2  # id = pair id
KIND_LEARN = 3  # id = ofport
KIND_NETWORK = 4  # id = the network's id

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


# The original direction, new or established: what the pair's service lines check, in two
# lines (a packet is either), so the first counts the connections a pair admits.
ORIGINAL = CtState.of(CT_TRK, clear=CT_REL | CT_RPL)
ORIGINAL_NEW = CtState.of(CT_NEW, CT_TRK, clear=CT_REL | CT_RPL)
ORIGINAL_EST = CtState.of(CT_EST, CT_TRK, clear=CT_REL | CT_RPL)
OPENING = (ORIGINAL_NEW, ORIGINAL_EST)
EST_ORIGINAL = CtState.of(CT_EST, CT_TRK, clear=CT_RPL)
EST_REPLY = CtState.of(CT_EST, CT_RPL, CT_TRK)
RELATED = CtState.of(CT_REL, CT_TRK)
INVALID = CtState.of(CT_INV, CT_TRK)

Ports = tuple[int, int]  # (value, mask) of a transport port; mask 0xffff is exact

MULTICAST = "01:00:00:00:00:00/01:00:00:00:00:00"  # the group bit: broadcast and multicast
NO_MAC = "00:00:00:00:00:00"  # an ND message without its link-layer address option
VLAN_TAGGED = (0x1000, 0x1000)  # vlan_tci: a VLAN header is present (any VID, priority too)


class Match(NamedTuple):
    """The fields ryu-ctfw matches on; fields.py says how each is printed and packed."""

    in_port: int | None = None
    eth_type: int | None = None
    vlan_tci: tuple[int, int] | None = None
    eth_src: str | None = None
    eth_dst: str | None = None  # a MAC, or "mac/mask"
    ip_proto: int | None = None
    ipv4_src: str | None = None  # an address, or a network "addr/prefix"
    ipv6_src: str | None = None
    ip_frag: str | None = None  # "later", as ovs-ofctl spells it
    arp_spa: str | None = None
    arp_sha: str | None = None
    tp_src: Ports | None = None
    tp_dst: Ports | None = None
    icmp_type: int | None = None
    nd_target: str | None = None
    nd_sll: str | None = None
    nd_tll: str | None = None
    ct_state: CtState | None = None
    ct_mark: int | None = None
    conj_id: int | None = None
    ipv4_dst: str | None = None  # an address or a network "addr/prefix", as the sources
    ipv6_dst: str | None = None
    metadata: int | None = None  # the log table: the reason a drop wrote

    def fields(self) -> dict[str, str | int]:
        """The match as ovs-ofctl field names and values (for the REST view)."""
        out: dict[str, str | int] = {}
        for part in self._parts():
            name, _, value = part.partition("=")
            out[name] = int(value) if value.isdigit() else (value or True)  # type: ignore[assignment]
        return out

    def _parts(self) -> list[str]:
        parts: list[str] = []
        for attr in TEXT_ORDER:
            value = getattr(self, attr)
            if attr == "eth_type":
                if value is not None:
                    name = _PROTO_NAMES.get((value, self.ip_proto))
                    if name is None:
                        parts.append(f"dl_type=0x{value:04x}")
                        if self.ip_proto is not None:
                            parts.append(f"nw_proto={self.ip_proto}")
                    else:
                        parts.append(name)
            elif value is not None:
                field = BY_ATTR[attr]
                parts.append(f"{field.label}={field.codec.text(value)}")
        return parts

    def text(self) -> str:
        return ",".join(self._parts())


class Output(NamedTuple):
    """Output to a port number or to one of "FLOOD" / "CONTROLLER"."""

    port: int | str
    max_len: int = 128  # only for CONTROLLER

    def text(self) -> str:
        if self.port == "CONTROLLER":
            return f"CONTROLLER:{self.max_len}"
        return str(self.port) if isinstance(self.port, str) else f"output:{self.port}"


class Ct(NamedTuple):
    """The conntrack action: track in `zone`, optionally commit (setting ct_mark to
    `mark`) and recirculate to `table`."""

    commit: bool = False
    table: int | None = None
    zone: int | None = None
    mark: int | None = None

    def text(self) -> str:
        args = []
        if self.commit:
            args.append("commit")
        if self.table is not None:
            args.append(f"table={self.table}")
        if self.zone is not None:
            args.append(f"zone={self.zone}")
        if self.mark is not None:
            args.append(f"exec(set_field:0x{self.mark:x}->ct_mark)")
        return f"ct({','.join(args)})"


class Conjunction(NamedTuple):
    """One dimension (`clause` of `n_clauses`, from 1) of the conjunctive match `id`: a
    flow whose actions are only these takes part in conjunctive matches, never acts."""

    id: int
    clause: int
    n_clauses: int

    def text(self) -> str:
        return f"conjunction({self.id},{self.clause}/{self.n_clauses})"


class Log(NamedTuple):
    """A copy of the packet to the controller, through meter `meter_id` (Nicira's
    controller2 action: the meter limits the copies only, never the packet itself)."""

    meter_id: int
    max_len: int = 128
    kind: str = "log"  # see Goto

    def text(self) -> str:
        return f"controller(max_len={self.max_len},meter_id={self.meter_id})"


class WriteMetadata(NamedTuple):
    """Set the packet's metadata (an OpenFlow write-metadata instruction, all 64 bits)."""

    value: int
    kind: str = "write_metadata"  # see Goto

    def text(self) -> str:
        return f"write_metadata:0x{self.value:x}"


class Goto(NamedTuple):
    """Continue in a later table (an OpenFlow goto-table instruction)."""

    table: int
    # Actions are tuples, compared and hashed as such: without a field of its own,
    # Goto(2) would equal Meter(2) (and Log(3) Output(3)), and one flow could pass for
    # another in a comparison or a cache.
    kind: str = "goto"

    def text(self) -> str:
        return f"goto_table:{self.table}"


class Meter(NamedTuple):
    """Pass the packet through an OpenFlow meter first (a meter instruction)."""

    meter_id: int
    kind: str = "meter"  # see Goto

    def text(self) -> str:
        return f"meter:{self.meter_id}"


Action = Output | Ct | Goto | Meter | Conjunction | Log | WriteMetadata


class Reason(NamedTuple):
    """Why a line drops what it matches, as events and metrics name it. The line writes
    `code` to the packet's metadata and sends it to the log table, so the packet-in says
    which line it met."""

    code: int
    name: str
    text: str


REASONS = (
    Reason(1, "no-pair", "no pair allows it (table 1's default drop)"),
    Reason(2, "invalid", "conntrack found it invalid (+inv)"),
    Reason(3, "tagged", "a VLAN-tagged frame from an access port"),
    Reason(4, "forged-source", "sent from a port with a MAC or address that is not its own"),
    Reason(5, "forged-nd", "Neighbor Discovery about an address that is not the sender's"),
    Reason(6, "claimed-address", "a VM's registered address, sent from another port"),
    Reason(7, "claimed-mac", "a VM's MAC, sent or advertised from another port"),
    Reason(8, "outside-cidrs", "IP from a network's port with a source outside its CIDRs"),
    Reason(9, "revoked", "a packet of a connection that no pair allows any more"),
)
REASON_BY_CODE = {r.code: r for r in REASONS}
REASON_BY_NAME = {r.name: r for r in REASONS}
QUIET_REASONS = (REASON_BY_NAME["no-pair"].code, REASON_BY_NAME["invalid"].code)


@cache
def deny(reason: str) -> tuple[Action, ...]:
    """A drop that is an event: say why in the metadata, and go to the log table."""
    return (WriteMetadata(REASON_BY_NAME[reason].code), Goto(TABLE_LOG))


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
    """Where a VM is on one switch right now, and the MAC it is known by. A VM on another
    host is attached at this switch's fabric port (`remote`): it is told apart from the
    other remote VMs there by its MAC, bound to its addresses in table 0."""

    ofport: int
    mac: str | None  # configured, else learned from its ARP or ND, else None
    remote: bool = False


FLOOD = Output("FLOOD")
CONTROLLER = Output("CONTROLLER")
# Events from a port that is no VM's or network's (or from no port: the claims) share one
# meter; a VM's or network's port has its own, id = its ofport (OVS ofports end at 0xfeff).
SHARED_METER = 0xFF00
TO_DELIVERY = Goto(TABLE_DELIVER)
BLOCKED = 0xFFFFFFFF  # ct_mark of a connection no pair allows any more

# Priorities, highest first. Table 0: a VM port's own lines sit above the generic ones, and
# a VM bound to addresses (given IPs) above the address claims, which sit above the lines
# of VMs bound to a MAC alone: nobody else may send from a VM's registered address.
P_VM_TAGGED = 150  # 802.1Q / 802.1ad frames from a VM: it is an access port
P_VM_NEIGHBOUR = 140  # a VM's ARP / ND, checked against its MAC and addresses
P_VM_FALSE_ND = 135  # a VM's other ND: it claims an address it does not own
P_VM_IP = 130  # a VM's IP from its own MAC and addresses, to conntrack
P_CLAIMED_ADDRESS = 125  # a VM's registered address, sent from anywhere else
P_MAC_VM_NEIGHBOUR = 122  # a VM bound by MAC alone: its ARP / ND, checked against its MAC
P_MAC_VM_FALSE_ND = 121
P_MAC_VM_IP = 120
P_VM_GUARD = 110  # anything else from a VM port: forged, dropped
P_CLAIMED_MAC = 108  # a VM's MAC, sent (or advertised) from another port
# A network's port, below the claims: nothing from it may use a VM's MAC or addresses.
P_NET_IN = 107  # IP from the network's CIDRs (to conntrack), and its ND
P_NET_SPOOFED = 106  # other IP from the network's port: a source it cannot have, dropped
# Anything else by the fabric port (VMs of other hosts come in above, with their MAC and
# addresses): below a network's lines, for a gateway on the hosts' shared segment.
P_FABRIC_GUARD = 106
P_ND = 105  # Neighbor Discovery from other ports (it must not go through conntrack)
P_IP = 100  # IPv4 / IPv6 from other ports, to conntrack
P_ARP = 10
P_DEFAULT_DROP = 1
# Table 1.
P_INVALID = 200
P_PAIR = 100
# A logging pair's opening lines sit one above its kind's: a connection that a logging
# and a silent pair both admit is logged (and named for the logging pair), whichever
# came first, instead of OVS choosing between two overlapping lines of one priority.
P_PAIR_LOGGED = P_PAIR + 1
# Pairs with a group or a network side: conjunctive matches, below the VM pairs' plain
# lines (a packet both allow takes the VM pair's; the two kinds must not share a priority).
P_LINK = 90
P_LINK_LOGGED = P_LINK + 1  # a logging group / network pair's original direction
P_BLOCK = 10
P_DENY = 0
# Table 3.
P_LOG_QUIET = 200
P_LOG_PORT = 100
P_LOG_OTHER = 0
# Table 2.
P_DELIVER = 100
P_FLOOD = 50
P_TO_NETWORK = 40  # unicast ARP / ND for a MAC that is no VM's (a gateway's): to a network


@lru_cache(maxsize=64)
def base_flows(zone: int) -> tuple[Flow, ...]:
    """Lines every switch has, whatever the policy."""
    base = cookie(KIND_BASE)
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    block = (Ct(commit=True, zone=zone, mark=BLOCKED),)
    flows = [Flow(TABLE_CLASSIFY, P_IP, Match(eth_type=fam), to_ct, base) for fam in FAMILIES]
    flows += [
        Flow(TABLE_CLASSIFY, P_ND, _icmp6(nd), (TO_DELIVERY,), base)
        for nd in (ND_RS, ND_RA, ND_NS, ND_NA)
    ]
    flows += [
        Flow(TABLE_CLASSIFY, P_ARP, Match(eth_type=ETH_TYPE_ARP), (TO_DELIVERY,), base),
        Flow(TABLE_CLASSIFY, P_DEFAULT_DROP, Match(), (), base),
        Flow(TABLE_POLICY, P_INVALID, Match(ct_state=INVALID), deny("invalid"), base),
        # An established connection's packet in the original direction that no pair's
        # line took: its pair is gone. Marking it blocked kills its replies too.
        *(Flow(TABLE_POLICY, P_BLOCK, Match(eth_type=fam, ct_state=EST_ORIGINAL),
               block + deny("revoked"), base) for fam in FAMILIES),
        Flow(TABLE_POLICY, P_DENY, Match(), deny("no-pair"), base),
        Flow(TABLE_DELIVER, P_FLOOD, Match(eth_dst=MULTICAST), (FLOOD,), base),
        Flow(TABLE_DELIVER, P_DENY, Match(), (), base),
        # Link-local multicast every host sends on its own (MLD reports, router
        # solicitations, IGMP, mDNS) that no pair took: dropped like the rest, but no event
        # of it. Only for these reasons: a forged advertisement to all nodes is one.
        *(Flow(TABLE_LOG, P_LOG_QUIET, _destination(link_local)._replace(metadata=code),
               (), base)
          for link_local in ("ff02::/16", "224.0.0.0/24") for code in QUIET_REASONS),
        Flow(TABLE_LOG, P_LOG_OTHER, Match(), (Meter(SHARED_METER), CONTROLLER), base),
    ]  # fmt: skip
    return tuple(flows)


def _icmp6(icmp_type: int, **fields: object) -> Match:
    return Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_ICMPV6, icmp_type=icmp_type, **fields)  # type: ignore[arg-type]


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address a NIC with `mac` configures."""
    octets = [int(b, 16) for b in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def _split(vm: Vm) -> tuple[list[str], list[str]]:
    v4 = [ip for ip in vm.ips if ipaddress.ip_address(ip).version == 4]
    v6 = [ip for ip in vm.ips if ipaddress.ip_address(ip).version == 6]
    return v4, v6


Line = tuple[int, int, Match, tuple[Action, ...]]  # (table, priority, match, actions)


# Both are pure functions of immutable inputs: remembering their answers makes a recompile
# after a small change cost little more than walking the policy.
@lru_cache(maxsize=1 << 16)
def vm_port_flows(vm: Vm, at: Attachment, zone: int) -> tuple[Flow, ...]:
    """A VM's lines: its port's checks in table 0, nobody else claiming its MAC or
    addresses, and ARP / ND for its MAC delivered to its port only (table 2)."""
    port = at.ofport
    tagged = (TABLE_CLASSIFY, P_VM_TAGGED, Match(in_port=port, vlan_tci=VLAN_TAGGED),
              deny("tagged"))  # fmt: skip
    guard = (TABLE_CLASSIFY, P_FABRIC_GUARD if at.remote else P_VM_GUARD, Match(in_port=port),
             deny("forged-source"))  # fmt: skip
    log = _log_line(port)
    if at.mac is None:
        lines = [tagged, *_learning_lines(vm, port), *_address_claims(vm, None), guard, log]
        return _flows(lines, cookie(KIND_LEARN, port))
    # The fabric port is shared: ND from it that no remote VM's line took is no lie of
    # theirs; it meets the fabric guard, or a gateway's network lines.
    lies = not at.remote
    own = (_own_lines(vm, port, at.mac, zone, lies) if vm.ips
           else _mac_only_lines(port, at.mac, zone, lies))  # fmt: skip
    lines = [
        tagged,
        *own,
        *_address_claims(vm, at.mac),
        guard,
        *_mac_claims(at.mac),
        (TABLE_DELIVER, P_DELIVER, Match(eth_dst=at.mac), (Output(port),)),
        log,
    ]
    return _flows(lines, cookie(KIND_VM, port))


def _log_line(port: int) -> Line:
    """Events of a port go to the controller through the port's own meter: one noisy VM
    fills its own meter, not the others' (nor the controller)."""
    return (TABLE_LOG, P_LOG_PORT, Match(in_port=port), (Meter(port), CONTROLLER))


def _flows(lines: Iterable[Line], flow_cookie: int) -> tuple[Flow, ...]:
    return tuple(Flow(table, prio, match, acts, flow_cookie) for table, prio, match, acts in lines)


def _own_lines(vm: Vm, port: int, mac: str, zone: int, lies: bool = True) -> list[Line]:
    """A VM bound to its MAC and IPs: ARP and ND only about them, IP only from them."""
    v4, v6 = _split(vm)
    v6_sources = [link_local(mac), *v6]  # a VM always owns its link-local address
    own = Match(in_port=port, eth_src=mac)
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    t0, nb = TABLE_CLASSIFY, P_VM_NEIGHBOUR
    return [
        *((t0, nb, own._replace(eth_type=ETH_TYPE_ARP, arp_spa=ip, arp_sha=mac), (TO_DELIVERY,))
          for ip in v4),
        # An advertisement names its target and, optionally, the link-layer address it is
        # at; a solicitation teaches its receivers "source address is at this MAC".
        *((t0, nb, _icmp6(ND_NA, in_port=port, eth_src=mac, nd_target=ip, nd_tll=ll),
           (TO_DELIVERY,)) for ip in v6_sources for ll in (mac, NO_MAC)),
        *((t0, nb, _icmp6(ND_NS, in_port=port, eth_src=mac, ipv6_src=ip, nd_sll=ll),
           (TO_DELIVERY,)) for ip in v6_sources for ll in (mac, NO_MAC)),
        # Duplicate address detection solicits from :: and may carry no link-layer address.
        (t0, nb, _icmp6(ND_NS, in_port=port, eth_src=mac, ipv6_src="::", nd_sll=NO_MAC),
         (TO_DELIVERY,)),
        # Any other ND from the port lies about an address (and, sent from the VM's own
        # address, would otherwise pass the IPv6 line below).
        *((t0, P_VM_FALSE_ND, _icmp6(nd, in_port=port), deny("forged-nd"))
          for nd in (ND_NS, ND_NA) if lies),
        *((t0, P_VM_IP, own._replace(eth_type=ETH_TYPE_IP, ipv4_src=ip), to_ct) for ip in v4),
        *((t0, P_VM_IP, own._replace(eth_type=ETH_TYPE_IPV6, ipv6_src=ip), to_ct)
          for ip in v6_sources),
    ]  # fmt: skip


def _mac_only_lines(port: int, mac: str, zone: int, lies: bool = True) -> list[Line]:
    """A VM bound to its MAC alone (as OVN's port security with a bare MAC): any source
    address that no other VM registered, but ARP and ND only with its own MAC."""
    own = Match(in_port=port, eth_src=mac)
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    t0, nb = TABLE_CLASSIFY, P_MAC_VM_NEIGHBOUR
    return [
        (t0, nb, own._replace(eth_type=ETH_TYPE_ARP, arp_sha=mac), (TO_DELIVERY,)),
        *((t0, nb, _icmp6(ND_NA, in_port=port, eth_src=mac, nd_tll=ll), (TO_DELIVERY,))
          for ll in (mac, NO_MAC)),
        *((t0, nb, _icmp6(ND_NS, in_port=port, eth_src=mac, nd_sll=ll), (TO_DELIVERY,))
          for ll in (mac, NO_MAC)),
        *((t0, P_MAC_VM_FALSE_ND, _icmp6(nd, in_port=port), deny("forged-nd"))
          for nd in (ND_NS, ND_NA) if lies),
        *((t0, P_MAC_VM_IP, own._replace(eth_type=fam), to_ct) for fam in FAMILIES),
    ]  # fmt: skip


def _learning_lines(vm: Vm, port: int) -> list[Line]:
    """MAC not given and not seen yet: show the port's ARP and solicitations to the
    controller, which binds the VM to the MAC they carry, through the port's meter (a
    port that floods ARPs must not flood the controller); pass nothing meanwhile."""
    show = (Meter(port), CONTROLLER)
    t0 = TABLE_CLASSIFY
    if not vm.ips:
        return [
            (t0, P_MAC_VM_NEIGHBOUR, Match(in_port=port, eth_type=ETH_TYPE_ARP), show),
            (t0, P_MAC_VM_NEIGHBOUR, _icmp6(ND_NS, in_port=port), show),
        ]
    v4, v6 = _split(vm)
    # Its registered addresses are claimed below: its own ARP and ND about them go first.
    return [
        *((t0, P_VM_NEIGHBOUR, Match(in_port=port, eth_type=ETH_TYPE_ARP, arp_spa=ip), show)
          for ip in v4),
        *((t0, P_VM_NEIGHBOUR, _icmp6(ND_NS, in_port=port, ipv6_src=ip), show)
          for ip in [*v6, "::"]),
    ]  # fmt: skip


def _address_claims(vm: Vm, mac: str | None) -> list[Line]:
    """Nobody but the VM may send from its registered addresses or advertise them."""
    v4, v6 = _split(vm)
    if vm.ips and mac is not None:
        v6 = [link_local(mac), *v6]
    t0, pc, drop = TABLE_CLASSIFY, P_CLAIMED_ADDRESS, deny("claimed-address")
    return [
        *((t0, pc, Match(eth_type=ETH_TYPE_IP, ipv4_src=ip), drop) for ip in v4),
        *((t0, pc, Match(eth_type=ETH_TYPE_ARP, arp_spa=ip), drop) for ip in v4),
        *((t0, pc, Match(eth_type=ETH_TYPE_IPV6, ipv6_src=ip), drop) for ip in v6),
        *((t0, pc, _icmp6(ND_NA, nd_target=ip), drop) for ip in v6),
    ]


def _mac_claims(mac: str) -> list[Line]:
    """Nobody but the VM may send from its MAC or say in ARP or ND that it has it."""
    t0, pc, drop = TABLE_CLASSIFY, P_CLAIMED_MAC, deny("claimed-mac")
    return [
        (t0, pc, Match(eth_src=mac), drop),
        (t0, pc, Match(eth_type=ETH_TYPE_ARP, arp_sha=mac), drop),
        (t0, pc, _icmp6(ND_NS, nd_sll=mac), drop),
        (t0, pc, _icmp6(ND_NA, nd_tll=mac), drop),
    ]


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

    eth_type: int
    ip_proto: int | None = None
    ports: Ports | None = None  # destination port
    icmp_request: int | None = None

    def original(self) -> Match:
        """What an original-direction packet of the service matches (replies are checked by
        the connection's mark instead)."""
        return Match(
            eth_type=self.eth_type,
            ip_proto=self.ip_proto,
            tp_dst=self.ports,
            icmp_type=self.icmp_request,
        )


def services(pair: Pair) -> list[Service]:
    if pair.protocol == "any":
        return [Service(fam) for fam in FAMILIES]
    if pair.protocol == "icmp":
        return [Service(fam, proto, None, req) for fam, (proto, req, _) in ECHO.items()]
    rng = pair.port_range()
    masks: list[Ports | None] = port_masks(*rng) if rng else [None]
    return [Service(fam, IP_PROTO[pair.protocol], m) for fam in FAMILIES for m in masks]


def link_mark(initiator_id: int, responder_id: int) -> int:
    """The ct_mark of connections the pairs from one VM to another admit."""
    return initiator_id << 16 | responder_id


@lru_cache(maxsize=1 << 16)
def pair_flows(
    pair: Pair, initiator: Attachment, responder: Attachment, zone: int, mark: int
) -> tuple[Flow, ...]:
    """Table 1 for one pair.

    Every packet in the original direction, new or established, meets the pair's service
    lines, which commit the connection with the mark of its initiator -> responder link and
    output it to the responder's port. Replies and related ICMP pass on the link's lines
    only with that mark, from the port they must come from, to the port they are for. The
    link's lines are the same for every pair of the two VMs (the flow set keeps one copy).
    A VM on another host is at the fabric port, where its MAC (bound to its addresses in
    table 0) tells it from the other remote VMs: lines from it match its MAC as source.
    """
    pc = cookie(KIND_PAIR, pair.id)
    ini, res = initiator, responder
    there = Match(in_port=ini.ofport, eth_dst=res.mac, eth_src=ini.mac if ini.remote else None)
    admit = (Ct(commit=True, zone=zone, mark=mark), Output(res.ofport))
    opened = _logged(admit, pair, ini.ofport)
    to_initiator, to_responder = (Output(ini.ofport),), (Output(res.ofport),)
    lines: Lines = []
    for svc in services(pair):
        for state in OPENING:
            line = _merge(there, svc.original(), state)
            if state == ORIGINAL_NEW and pair.log and svc.ip_proto is None:
                # A line that checks no ports would take the later fragments of an opening
                # datagram too (logging each again): those stay on the fragment lines.
                line = line._replace(ip_frag="not_later")
            lines.append((line, opened if state == ORIGINAL_NEW else admit))
    # Later fragments carry no ports: they go through the same commit as their first
    # fragment, whose ports a service line checked, and the switch's reassembly lets
    # them out only together with it (none of them when the first was refused).
    lines += [
        (there._replace(ct_state=ORIGINAL, eth_type=fam, ip_frag="later"), admit)
        for fam in FAMILIES
    ]  # fmt: skip
    back = Match(in_port=res.ofport, eth_dst=ini.mac, ct_mark=mark,
                 eth_src=res.mac if res.remote else None)  # fmt: skip
    lines += [
        (back._replace(ct_state=EST_REPLY), to_initiator),
        (back._replace(ct_state=RELATED), to_initiator),
        (there._replace(ct_state=RELATED, ct_mark=mark), to_responder),
    ]
    return tuple(
        Flow(TABLE_POLICY, P_PAIR_LOGGED if Log in map(type, acts) else P_PAIR, match, acts, pc)
        for match, acts in lines
    )


def _logged(admit: tuple[Action, ...], pair: Pair, ofport: int) -> tuple[Action, ...]:
    """A pair that logs its connections sends each opening packet to the controller too,
    through the initiator's port meter."""
    return (*admit, Log(ofport)) if pair.log else admit


def _merge(where: Match, what: Match, state: CtState) -> Match:
    # Spelled out rather than _replace: this runs for every pair line.
    return Match(
        in_port=where.in_port, eth_src=where.eth_src, eth_dst=where.eth_dst, ct_state=state,
        eth_type=what.eth_type, ip_proto=what.ip_proto, tp_dst=what.tp_dst,
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
        if name in policy.vms:
            flows += vm_port_flows(policy.vms[name], at, zone)
    for name, at in sorted(attached.items()):
        if name in policy.networks:
            flows += network_port_flows(policy.networks[name], at, zone)
    for _, pair in sorted(policy.pairs.items()):
        flows += pair_unit_flows(policy, pair, attached, zone)
    return dedupe_keyed(flows)


def pair_unit_flows(
    policy: Policy, pair: Pair, attached: Mapping[str, Attachment], zone: int
) -> tuple[Flow, ...]:
    """A pair's lines on one switch, or none while its sides are not there (nothing to
    allow here): a VM pair's plain lines, or a group / network pair's conjunctions."""
    if pair.initiator in policy.vms and pair.responder in policy.vms:
        ini, res = attached.get(pair.initiator), attached.get(pair.responder)
        if ini is None or res is None or ini.mac is None or res.mac is None:
            return ()
        if ini.remote and res.remote:
            return ()  # both on other hosts: nothing passes here
        mark = link_mark(policy.vms[pair.initiator].id, policy.vms[pair.responder].id)
        return pair_flows(pair, ini, res, zone, mark)
    x, y = side(policy, pair.initiator, attached), side(policy, pair.responder, attached)
    if x is None or y is None or not (x.here or y.here):
        return ()
    return link_flows(pair, x, y, zone)


def dedupe(flows: Iterable[Flow]) -> list[Flow]:
    """Keep the first flow for each OpenFlow identity, in order."""
    return list(dedupe_keyed(flows).values())


def dedupe_keyed(flows: Iterable[Flow]) -> dict[tuple, Flow]:
    """One flow per OpenFlow identity: the first, or, for a conjunction clause that several
    conjunctive matches share, one flow with all their conjunction actions."""
    seen: dict[tuple, Flow] = {}
    for f in flows:
        have = seen.get(f.key)
        if have is None:
            seen[f.key] = f
        elif is_clause(have) and is_clause(f) and have.actions != f.actions:
            seen[f.key] = merge_clauses([have, f])
    return seen


def is_clause(flow: Flow) -> bool:
    return bool(flow.actions) and all(isinstance(a, Conjunction) for a in flow.actions)


def merge_clauses(flows: Iterable[Flow]) -> Flow:
    """One flow for clauses of several conjunctive matches with the same match: the first's
    identity and cookie, every conjunction action once, in a fixed order (the switch keeps
    the order it is given, so the bytes compare equal on read-back)."""
    flows = list(flows)
    actions = sorted({a for f in flows for a in f.actions})  # type: ignore[type-var]
    return flows[0]._replace(actions=tuple(actions))


# --- networks, and pairs with a group or network side ----------------------------------------


def _family(cidr: str) -> int:
    return ETH_TYPE_IP if ipaddress.ip_network(cidr).version == 4 else ETH_TYPE_IPV6


def _source(cidr: str) -> Match:
    return _address_match(cidr, "ipv4_src", "ipv6_src")


def _destination(cidr: str) -> Match:
    return _address_match(cidr, "ipv4_dst", "ipv6_dst")


def _address_match(cidr: str, v4: str, v6: str) -> Match:
    """IP from / to a network; 0.0.0.0/0 and ::/0 are the family alone (a zero mask is no
    match at all: the switch would drop the field, and the read-back would differ)."""
    fam = _family(cidr)
    if ipaddress.ip_network(cidr).prefixlen == 0:
        return Match(eth_type=fam)
    return Match(eth_type=fam, **{v4 if fam == ETH_TYPE_IP else v6: cidr})  # type: ignore[arg-type]


@lru_cache(maxsize=1 << 12)
def network_port_flows(net: Network, at: Attachment, zone: int) -> tuple[Flow, ...]:
    """A network's port in table 0: untagged IP from its CIDRs goes to conntrack, its ARP
    and Neighbor Discovery to delivery, any other IP is a forged source (counted, dropped).
    The claim lines above already stop it using a VM's MAC or registered addresses. In
    table 2, unicast ARP / ND for a MAC that is no VM's (the gateway's) goes out here."""
    port = at.ofport
    t0 = TABLE_CLASSIFY
    to_ct = (Ct(table=TABLE_POLICY, zone=zone),)
    lines: list[Line] = [
        (t0, P_VM_TAGGED, Match(in_port=port, vlan_tci=VLAN_TAGGED), deny("tagged")),
        *((t0, P_NET_IN, _icmp6(nd, in_port=port), (TO_DELIVERY,))
          for nd in (ND_RS, ND_RA, ND_NS, ND_NA)),
        (t0, P_NET_IN, Match(in_port=port, eth_type=ETH_TYPE_ARP), (TO_DELIVERY,)),
        *((t0, P_NET_IN, _source(cidr)._replace(in_port=port), to_ct) for cidr in net.cidrs),
        *((t0, P_NET_SPOOFED, Match(in_port=port, eth_type=fam), deny("outside-cidrs"))
          for fam in FAMILIES),
        (TABLE_DELIVER, P_TO_NETWORK, Match(), (Output(port),)),
        _log_line(port),
    ]  # fmt: skip
    return _flows(lines, cookie(KIND_NETWORK, net.id))


class Member(NamedTuple):
    """A VM of a pair side, attached here with a known MAC (or, `remote`, on another host:
    at the fabric port, told apart by its MAC)."""

    ofport: int
    id: int  # the VM's id: the initiator half of the marks of connections it opens
    mac: str
    remote: bool = False

    def source(self) -> Match:
        """What a packet from this VM matches as it comes in."""
        return Match(in_port=self.ofport, eth_src=self.mac if self.remote else None)


class Side(NamedTuple):
    """One side of a pair as the flows see it on one switch: VMs (one, or a group's
    members), or a network (its port and CIDRs)."""

    id: int  # the VM's, group's or network's id
    members: tuple[Member, ...] = ()
    network_port: int | None = None
    cidrs: tuple[str, ...] = ()

    @property
    def sources(self) -> list[Match]:
        """Where its packets come in: each member's port (and MAC, for a VM on another
        host), or the network's port."""
        if self.network_port is not None:
            return [Match(in_port=self.network_port)]
        return [m.source() for m in self.members]

    @property
    def here(self) -> bool:
        """Whether anything of it is on this switch (not only VMs of other hosts)."""
        return self.network_port is not None or any(not m.remote for m in self.members)


def side(policy: Policy, name: str, attached: Mapping[str, Attachment]) -> Side | None:
    """A pair side on this switch, or None when nothing of it is here: a network whose port
    is absent, or a VM / group with no member attached with a known MAC."""
    net = policy.networks.get(name)
    if net is not None:
        at = attached.get(name)
        return None if at is None else Side(net.id, (), at.ofport, net.cidrs)
    members = []
    for vm_name in policy.members(name):
        at = attached.get(vm_name)
        if at is not None and at.mac is not None:
            members.append(Member(at.ofport, policy.vms[vm_name].id, at.mac, at.remote))
    if not members:
        return None
    return Side(policy.endpoint_id(name), tuple(sorted(members)))


def conj_id(kind: int, initiator_id: int, responder_id: int) -> int:
    """The id of one of a link's conjunctive matches: unique in table 1, fixed by the link."""
    return kind << 30 | initiator_id << 15 | responder_id


# A logging pair's original direction is a conjunctive match of its own, one priority up:
# a connection it and a silent pair of the same sides both admit is logged; one only the
# silent pair admits is not.
CONJ_ORIGINAL, CONJ_BACK, CONJ_THERE, CONJ_ORIGINAL_LOGGED = 0, 1, 2, 3
Lines = list[tuple[Match, tuple[Action, ...]]]


@lru_cache(maxsize=1 << 14)
def link_flows(pair: Pair, x: Side, y: Side, zone: int) -> tuple[Flow, ...]:
    """Table 1 for a pair whose initiator side `x` or responder side `y` is a group or a
    network, as three conjunctive matches, so the lines grow with members plus services,
    not members times members.

    The mark of a connection says which initiator opened it and to which responder side:
    `member id << 16 | y id` (for a network initiator, its own id), so a reply can be held
    to the one member that opened the connection, not any member of its group.

    Original direction (new or established): the packet comes in by a port of x (a network:
    from its CIDRs), is for a MAC of y (or an address in y's CIDRs) and is one of the pair's
    services; the conj_id line for its in_port commits it with that member's mark and
    delivers it: table 2 outputs it to the port of the MAC it is for, or it goes out the
    network's port. Back: replies and related packets from a port of y, carrying a member's
    mark, for that member's MAC (or, for a network, an address in its CIDRs). There:
    related packets with a member's mark from that member's port to y. A member that leaves
    a side loses its lines, and with them its connections' next packets (blocked) and
    replies (no line)."""
    pc = cookie(KIND_PAIR, pair.id)
    lines: Lines = []
    back = conj_id(CONJ_BACK, x.id, y.id)
    lines += [(m, (Conjunction(back, 1, 2),)) for m in y.sources]
    lines += [(m, (Conjunction(back, 2, 2),)) for m in _marked_to(x, y)]
    lines += [(Match(conj_id=back, ct_state=st), (_deliver(x),)) for st in (EST_REPLY, RELATED)]

    there = conj_id(CONJ_THERE, x.id, y.id)
    lines += [(where._replace(ct_mark=mark), (Conjunction(there, 1, 2),))
              for where, mark in _marks(x, y)]  # fmt: skip
    lines += [(m, (Conjunction(there, 2, 2),)) for m in _to(y)]
    lines.append((Match(conj_id=there, ct_state=RELATED), (_deliver(y),)))
    opening = P_LINK_LOGGED if pair.log else P_LINK
    flows = [Flow(TABLE_POLICY, opening, m, a, pc) for m, a in _original_lines(pair, x, y, zone)]
    flows += [Flow(TABLE_POLICY, P_LINK, m, a, pc) for m, a in lines]
    return tuple(dedupe(flows))


def _original_lines(pair: Pair, x: Side, y: Side, zone: int) -> Lines:
    """The conjunctive match of a link's original direction, and its conj_id lines."""
    orig = conj_id(CONJ_ORIGINAL_LOGGED if pair.log else CONJ_ORIGINAL, x.id, y.id)
    lines: Lines = []
    lines += [(m, (Conjunction(orig, 1, 3),)) for m in _from(x)]
    lines += [(m, (Conjunction(orig, 2, 3),)) for m in _to(y)]
    svc = [s.original()._replace(ct_state=ORIGINAL) for s in services(pair)]
    svc += [Match(ct_state=ORIGINAL, eth_type=fam, ip_frag="later") for fam in FAMILIES]
    lines += [(m, (Conjunction(orig, 3, 3),)) for m in svc]
    for where, mark in _marks(x, y):  # ct needs ip: one line per family
        ct = Ct(commit=True, zone=zone, mark=mark)
        admit: tuple[Action, ...] = (ct, _deliver(y))
        for fam in FAMILIES:
            line = where._replace(conj_id=orig, eth_type=fam)
            if not pair.log:
                lines += [(line._replace(ct_state=state), admit) for state in OPENING]
                continue
            # The later fragments of an opening datagram meet the same conj_id: they pass
            # without being logged again, or counted as connections.
            opened = (ct, Log(where.in_port), _deliver(y))
            lines.append((line._replace(ct_state=ORIGINAL_NEW, ip_frag="not_later"), opened))
            lines.append((line._replace(ct_state=ORIGINAL_EST), admit))
            lines.append((line._replace(ct_state=ORIGINAL, ip_frag="later"), admit))
    return lines


def _marks(x: Side, y: Side) -> list[tuple[Match, int]]:
    """Each initiator of side `x` (a member's port, or the network's port) and the mark
    of the connections it opens to side `y`."""
    if x.network_port is not None:
        return [(Match(in_port=x.network_port), link_mark(x.id, y.id))]
    return [(m.source(), link_mark(m.id, y.id)) for m in x.members]


def _from(s: Side) -> list[Match]:
    """Where a new connection of side `s` comes from: a member's port, or the network's
    port with a source in its CIDRs (two networks may share a port; table 0 lets in the
    sources of all of them)."""
    if s.network_port is not None:
        return [_source(c)._replace(in_port=s.network_port) for c in s.cidrs]
    return s.sources


def _to(s: Side) -> list[Match]:
    """What a packet for side `s` matches: a member's MAC, or an address in its CIDRs."""
    if s.network_port is not None:
        return [_destination(c) for c in s.cidrs]
    return [Match(eth_dst=m.mac) for m in s.members]


def _marked_to(x: Side, y: Side) -> list[Match]:
    """A reply for the initiator that opened the connection: its mark and its MAC (for a
    network: the network's mark and an address in its CIDRs)."""
    if x.network_port is not None:
        mark = link_mark(x.id, y.id)
        return [_destination(c)._replace(ct_mark=mark) for c in x.cidrs]
    return [Match(ct_mark=link_mark(m.id, y.id), eth_dst=m.mac) for m in x.members]


def _deliver(s: Side) -> Action:
    return Output(s.network_port) if s.network_port is not None else TO_DELIVERY


def render(flows: Iterable[Flow]) -> str:
    """Flows in the order dump-flows lists them: by table, then priority high to low."""
    ordered = sorted(flows, key=lambda f: (f.table, -f.priority))
    return "\n".join(f.text() for f in ordered)


# --- what the counters of a flow mean (metrics, explain) -------------------------------------


def drop_reason(flow: Flow) -> str | None:
    """The reason (a REASONS name) a line drops what it matches, None for a line that
    passes it on, and for drops that are no event (table 0's and table 2's last lines:
    traffic that is no IP, ARP or ND, and ARP / ND for nobody)."""
    for action in flow.actions:
        if isinstance(action, WriteMetadata):
            reason = REASON_BY_CODE.get(action.value)
            return reason.name if reason else None
    return None


def opens_connections(flow: Flow) -> bool:
    """Whether the line's packets are the opening packets of connections a pair admits:
    its packet count is the pair's new connections."""
    return (
        flow.table == TABLE_POLICY
        and flow.match.ct_state == ORIGINAL_NEW
        and cookie_kind(flow.cookie) == KIND_PAIR
    )
