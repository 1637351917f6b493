"""Explain: why a connection from one endpoint to another is allowed or denied.

GET /ctfw/v1/explain?from=vm1&to=vm2&protocol=tcp&port=5432 answers with a verdict, a
reason (a slug) and one sentence, the pairs that admit it (or the related ones), and the
table-1 flows that carry it with the switch's live counters.

The verdict is computed, not guessed: the policy says which pairs cover the two endpoints
and the service; where the VMs are (the switch side's placement) says what stands in the
way; and a packet of the connection is walked through the very table-1 lines the compiler
makes for those pairs on each switch it crosses (compiler.pair_unit_flows), so "allowed"
means the compiler's lines deliver it to the responder's port. `decide()` is all of that,
pure; `answer()` gathers the placement from the switch side and reads the counters.

Endpoints: a VM, a group (every member, each checked), a network, or an address (the VM
that registered it, else the networks whose CIDRs hold it, most specific first).
A group or network endpoint is checked member by member: allowed when every member may.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ryu_ctfw import compiler, wire
from ryu_ctfw.compiler import (
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    FAMILIES,
    TABLE_DELIVER,
    TABLE_POLICY,
    Attachment,
    Conjunction,
    Ct,
    Flow,
    Goto,
    Match,
    Output,
)
from ryu_ctfw.fields import CT_EST, CT_NEW, CT_RPL, CT_TRK, FRAG
from ryu_ctfw.policy import (
    PROTOCOLS,
    InvalidInput,
    NotFound,
    Pair,
    Policy,
    validate_vm_name,
)

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall
    from ryu_ctfw.switch import SwitchManager

PARAMS = ("from", "to", "protocol", "port")
# Each combination of members is walked through its switches' lines; the controller does it
# between other work, so a question about two large groups is refused, not left to stall it.
MAX_COMBINATIONS = 256
ALLOWED = "allowed"
DENIED = "denied"

# Reasons, in the order they are checked (the first that applies is given).
R_PAIR = "pair"  # allowed
R_NETWORKS = "network-to-network"
R_NO_PAIR = "no-pair"
R_OTHER_SERVICE = "other-service"
R_RESPONDER_ABSENT = "responder-absent"
R_RESPONDER_MAC = "responder-mac-unknown"
R_INITIATOR_ABSENT = "initiator-absent"
R_INITIATOR_MAC = "initiator-mac-unknown"
R_NO_FABRIC = "no-fabric"
R_NETWORK_ELSEWHERE = "network-elsewhere"
R_EMPTY_GROUP = "empty-group"
# A safety net: every check above passed, yet the compiler's lines do not deliver it.
R_NOT_CARRIED = "not-carried"
REASONS = (
    R_PAIR,
    R_NETWORKS,
    R_EMPTY_GROUP,
    R_NO_PAIR,
    R_OTHER_SERVICE,
    R_RESPONDER_ABSENT,
    R_RESPONDER_MAC,
    R_INITIATOR_ABSENT,
    R_INITIATOR_MAC,
    R_NETWORK_ELSEWHERE,
    R_NO_FABRIC,
    R_NOT_CARRIED,
)


# --- the question ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """What `from` or `to` names: a VM, group or network, or an address resolved to one."""

    name: str  # the VM, group or network (for an address: the first that holds it)
    kind: str  # "vm", "group" or "network"
    address: str | None = None  # as given, normalised
    # For an address inside networks: every network holding it, most specific first (the
    # flows let a pair of any of them take it).
    networks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.address} ({self.kind} {self.name})" if self.address else self.name


@dataclass(frozen=True)
class Question:
    src: Endpoint
    dst: Endpoint
    protocol: str = "any"
    port: int | None = None

    @property
    def service(self) -> str:
        if self.protocol == "any":
            return "any traffic"
        if self.protocol == "icmp":
            return "icmp (ping)"
        return f"{self.protocol}/{self.port}" if self.port else f"{self.protocol} on every port"

    @property
    def families(self) -> tuple[int, ...]:
        """The IP families asked about: the addresses', or both."""
        for ep in (self.src, self.dst):
            if ep.address is not None:
                return (_family_of(ep.address),)
        return FAMILIES


def _family_of(address: str) -> int:
    return ETH_TYPE_IP if ipaddress.ip_address(address).version == 4 else ETH_TYPE_IPV6


def question_from_params(policy: Policy, params: Mapping[str, str]) -> Question:
    """The query string checked and resolved against the policy (InvalidInput: malformed
    or unknown parameter; NotFound: a name or address nobody has)."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; explain takes " + ", ".join(PARAMS)
        )
    for key in ("from", "to"):
        if not params.get(key):
            raise InvalidInput(f"missing query parameter: {key} (a VM, group, network or address)")
    protocol = params.get("protocol", "any").strip().lower() or "any"
    if protocol not in PROTOCOLS:
        raise InvalidInput(
            f"invalid protocol {params['protocol']!r}: one of {', '.join(PROTOCOLS)}"
        )
    port = _port(params.get("port"), protocol)
    src, dst = resolve(policy, params["from"], "from"), resolve(policy, params["to"], "to")
    if src.kind == "vm" and src == dst:
        raise InvalidInput(f"from and to are the same VM ({src.name!r}): it never reaches a switch")
    if src.address and dst.address and _family_of(src.address) != _family_of(dst.address):
        raise InvalidInput(f"from {src.address} and to {dst.address} are of different IP families")
    return Question(src, dst, protocol, port)


def _port(text: str | None, protocol: str) -> int | None:
    if text is None:
        return None
    if protocol not in ("tcp", "udp"):
        raise InvalidInput(f"invalid port: protocol {protocol!r} has no ports (tcp or udp only)")
    if not re.fullmatch(r"[0-9]{1,5}", text.strip()) or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"invalid port {text!r}: a number in 1-65535")
    return int(text)


def resolve(policy: Policy, text: str, what: str) -> Endpoint:
    """A name or an address, as an endpoint of the policy."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        addr = None
    if addr is None:
        name = validate_vm_name(text, f"{what} (a VM, group or network)")
        kind = policy.kind_of(name)
        if kind is None:
            raise NotFound(f"no VM, group or network named {name!r} ({what})")
        return Endpoint(name, kind)
    address = str(addr)
    owners = [vm.name for vm in policy.vms.values() if address in vm.ips]
    if len(owners) > 1:
        raise InvalidInput(
            f"address {address} ({what}) is registered by VMs {', '.join(sorted(owners))}"
            " (on different switches): name the VM instead"
        )
    if owners:
        return Endpoint(owners[0], "vm", address)
    holders = sorted(
        (
            (ipaddress.ip_network(c).prefixlen, net.name)
            for net in policy.networks.values()
            for c in net.cidrs
            if addr in ipaddress.ip_network(c)
        ),
        key=lambda pn: (-pn[0], pn[1]),
    )
    names = tuple(dict.fromkeys(name for _, name in holders))
    if not names:
        raise NotFound(
            f"address {address} ({what}) is no VM's and in no network's CIDRs: nobody has it"
        )
    return Endpoint(names[0], "network", address, names)


# --- where things are (from the switch side, gathered once) ---------------------------------


@dataclass(frozen=True)
class SwitchPlace:
    """One switch as the flows see it: its ports, fabric port and what is attached."""

    dpid: int
    connected: bool
    ports: Mapping[str, int]
    fabric: str | None  # the fabric port's name in effect (set, or the default)
    attached: Mapping[str, Attachment]  # as SwitchManager.attachments gives it
    zone: int = 0

    @property
    def fabric_ofport(self) -> int | None:
        return self.ports.get(self.fabric) if self.fabric else None


@dataclass(frozen=True)
class Placement:
    switches: Mapping[int, SwitchPlace]
    # VM -> (dpid, ofport); None: ambiguous; absent: no switch has its port.
    locations: Mapping[str, tuple[int, int] | None]


def placement(mgr: SwitchManager, policy: Policy) -> Placement:
    """What the switch side knows of where everything is, for `decide` (no I/O)."""
    switches = {
        dpid: SwitchPlace(
            dpid,
            sw.connected,
            dict(sw.ports),
            mgr.fabric_port(dpid, policy),
            mgr.attachments(sw, policy),
            policy.zones.get(dpid, 0),
        )
        for dpid, sw in mgr.switches.items()
    }
    return Placement(switches, dict(mgr.locations(policy)))


# --- the decision (pure) ----------------------------------------------------------------------


@dataclass
class Decision:
    verdict: str
    reason: str
    why: str
    pairs: list[Pair] = field(default_factory=list)
    # (dpid, flow, what of the connection it carries: "new", "established", "reply")
    flows: list[tuple[int, Flow, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Packet:
    """A packet of the connection as table 1 sees it. None: not known, or any value (a
    line that checks the field does not carry every such packet)."""

    in_port: int
    eth_type: int
    ct: int  # the packet's ct_state bits
    ct_mark: int = 0
    eth_src: str | None = None
    eth_dst: str | None = None
    src: str | None = None  # an address or a network (a network side's CIDR)
    dst: str | None = None
    ip_proto: int | None = None
    tp_dst: int | None = None
    icmp_type: int | None = None


NEW = CT_TRK | CT_NEW
ESTABLISHED = CT_TRK | CT_EST
REPLY = CT_TRK | CT_EST | CT_RPL


def decide(policy: Policy, q: Question, place: Placement) -> Decision:
    """The verdict on `q`: for a group or network endpoint, each member VM (or address) in
    turn; allowed when all are, else the first denial."""
    if q.src.kind == "network" and q.dst.kind == "network":
        return Decision(
            DENIED,
            R_NETWORKS,
            f"{q.src.label} and {q.dst.label} are networks: a"
            " pair cannot join two networks, so nothing passes between them",
        )
    combos = [(s, d) for s in _members(policy, q.src) for d in _members(policy, q.dst) if s != d]
    if len(combos) > MAX_COMBINATIONS:
        raise InvalidInput(
            f"{q.src.name} -> {q.dst.name} is {len(combos)} combinations of members, more than"
            f" the {MAX_COMBINATIONS} explain walks at once: ask about a member"
        )
    if not combos:
        empty = q.src if not _members(policy, q.src) else q.dst
        return Decision(
            DENIED,
            R_EMPTY_GROUP,
            f"group {empty.name} has no members: there is"
            " nobody for a connection to come from or go to",
        )
    groups = q.src.kind == "group" or q.dst.kind == "group"
    allowed = Decision(ALLOWED, R_PAIR, "")
    whys = []
    for s, d in combos:
        one = _decide_one(policy, q, s, d, place)
        if one.verdict == DENIED:
            if groups:
                one.why = f"{s} -> {d}: {one.why}"
            return one
        whys.append(one.why)
        allowed.pairs += [p for p in one.pairs if p not in allowed.pairs]
        allowed.flows += [f for f in one.flows if f not in allowed.flows]
    if len(whys) == 1:
        allowed.why = whys[0]
    else:
        shown = "; ".join(whys[:3]) + ("; ..." if len(whys) > 3 else "")
        allowed.why = f"all {len(whys)} combinations of members are allowed: {shown}"
    return allowed


def _members(policy: Policy, ep: Endpoint) -> list[str]:
    """The VMs (or the network) an endpoint stands for, one check each."""
    return [ep.name] if ep.kind == "network" else list(policy.members(ep.name))


def _covers(policy: Policy, side: str, name: str, ep: Endpoint) -> bool:
    """Whether a pair side takes in `name` (a VM, or the endpoint's network)."""
    if ep.kind == "network":
        return side in (ep.networks or (ep.name,))
    return name in policy.members(side)


def _service_covers(pair: Pair, q: Question) -> bool:
    """Whether the pair allows all of what is asked (any: everything; tcp without a port:
    every port)."""
    if pair.protocol == "any":
        return True
    if pair.protocol != q.protocol:
        return False
    rng = pair.port_range()
    if rng is None:
        return True
    return q.port is not None and rng[0] <= q.port <= rng[1]


def _service_text(pair: Pair) -> str:
    if pair.protocol == "any":
        return "any traffic"
    if pair.protocol == "icmp":
        return "icmp (ping)"
    return f"{pair.protocol}/{pair.ports}" if pair.ports else f"{pair.protocol} on every port"


def _pair_text(pair: Pair) -> str:
    return f"pair {pair.id} ({pair.initiator} -> {pair.responder} {_service_text(pair)})"


def _decide_one(policy: Policy, q: Question, s: str, d: str, place: Placement) -> Decision:
    between = [
        p
        for p in policy.pairs.values()
        if _covers(policy, p.initiator, s, q.src) and _covers(policy, p.responder, d, q.dst)
    ]
    if not between:
        back = [
            p
            for p in policy.pairs.values()
            if _covers(policy, p.initiator, d, q.dst) and _covers(policy, p.responder, s, q.src)
        ]
        why = f"no pair lets {_name(s, q.src)} open connections to {_name(d, q.dst)}"
        if back:
            why += (
                f" ({', '.join(_pair_text(p) for p in back)} allows the other way only:"
                " the responder may answer, never start)"
            )
        return Decision(DENIED, R_NO_PAIR, why, back)
    admit = [p for p in between if _service_covers(p, q)]
    if not admit:
        allowed = ", ".join(dict.fromkeys(_service_text(p) for p in between))
        return Decision(
            DENIED,
            R_OTHER_SERVICE,
            f"the pairs from {_name(s, q.src)} to"
            f" {_name(d, q.dst)} allow {allowed}, not {q.service}",
            between,
        )
    # An address in several networks: the network of the pair that takes it.
    s = admit[0].initiator if q.src.kind == "network" else s
    d = admit[0].responder if q.dst.kind == "network" else d
    admit = [
        p
        for p in admit
        if _covers(policy, p.initiator, s, q.src) and _covers(policy, p.responder, d, q.dst)
    ]
    stop = _where(policy, q, s, d, place)
    if stop is not None:
        stop.pairs = admit
        return stop
    return _walk_all(policy, q, s, d, place, admit)


def _name(member: str, ep: Endpoint) -> str:
    if ep.kind == "network":
        return ep.label
    if ep.address:
        return ep.label
    return member  # a group's member: _membership says how it is on the pair's side


def _where(policy: Policy, q: Question, s: str, d: str, place: Placement) -> Decision | None:
    """What in the placement stands in the way, in the order the reasons are checked."""
    res = _locate(policy, d, place, "responder", R_RESPONDER_ABSENT, R_RESPONDER_MAC)
    if isinstance(res, Decision):
        return res
    ini = _locate(policy, s, place, "initiator", R_INITIATOR_ABSENT, R_INITIATOR_MAC)
    if isinstance(ini, Decision):
        return ini
    vm_at, net, net_at = (ini, d, res) if d in policy.networks else (res, s, ini)
    if net in policy.networks:
        if vm_at[0] not in net_at:
            where = ", ".join(_dpid(x) for x in sorted(net_at))
            return Decision(
                DENIED,
                R_NETWORK_ELSEWHERE,
                f"network {net} is reached through"
                f" port {policy.networks[net].port} on switch {where}, not on"
                f" switch {_dpid(vm_at[0])} where the VM is: a network is reached"
                " only on the hosts that have its port",
            )
        return None
    if ini[0] == res[0]:
        return None
    for dpid in (ini[0], res[0]):
        sw = place.switches[dpid]
        if sw.fabric is None or sw.fabric_ofport is None:
            missing = (
                "has no fabric port set"
                if sw.fabric is None
                else f"has no port {sw.fabric} (its fabric port)"
            )
            return Decision(
                DENIED,
                R_NO_FABRIC,
                f"{s} is on switch {_dpid(ini[0])} and {d} on"
                f" switch {_dpid(res[0])}, and switch {_dpid(dpid)} {missing}, so"
                " nothing crosses between the hosts (PUT /ctfw/v1/switches/"
                f'{_dpid(dpid)} {{"fabric_port": ...}})',
            )
    return None


def _locate(
    policy: Policy, name: str, place: Placement, role: str, absent: str, no_mac: str
) -> tuple[int, int] | set[int] | Decision:
    """(dpid, ofport) of a VM with a known MAC; for a network, the connected switches with
    its port; or why it is not there."""
    net = policy.networks.get(name)
    if net is not None:
        dpids = {d for d, sw in place.switches.items() if sw.connected and net.port in sw.ports}
        if not dpids:
            return Decision(
                DENIED,
                absent,
                f"the {role}, network {name}, is reached through"
                f" port {net.port}, which no connected switch has",
            )
        return dpids
    vm = policy.vms[name]
    if name not in place.locations:
        return Decision(
            DENIED, absent, f"the {role} {name}'s port {vm.port} is on no connected switch"
        )
    where = place.locations[name]
    if where is None:
        return Decision(
            DENIED,
            absent,
            f"the {role} {name}'s port {vm.port} is on several"
            " switches and it names none of them: it is placed on none",
        )
    sw = place.switches[where[0]]
    if not sw.connected:
        return Decision(
            DENIED, absent, f"the {role} {name}'s switch {_dpid(sw.dpid)} is not connected"
        )
    at = sw.attached.get(name)
    if at is None or at.mac is None:
        why = (
            "it was registered without one and has not been seen sending ARP or a Neighbor"
            " Solicitation to learn it from"
            if vm.known_mac is None
            else f"the MAC it was learned with ({vm.known_mac}) is configured for another VM"
            f" on switch {_dpid(sw.dpid)}"
        )
        return Decision(DENIED, no_mac, f"the {role} {name}'s MAC is not known yet: {why}")
    return where


def _dpid(dpid: int) -> str:
    return f"{dpid:016x}"


# --- walking a packet through the compiler's lines --------------------------------------------


@dataclass(frozen=True)
class _End:
    """One end of a connection: a VM or a network, and the address asked about, if any."""

    name: str
    network: bool
    address: str | None

    def address_in(self, policy: Policy, family: int) -> str | bool | None:
        """What a packet's source (or destination) is at this end: a network's address or
        CIDR of the family; None for a VM (table 1 knows it by its MAC and port; table 0
        holds it to its addresses); False when a network has no CIDR of the family."""
        if not self.network:
            return None
        if self.address is not None and _family_of(self.address) == family:
            return self.address
        cidrs = [
            c for c in policy.networks[self.name].cidrs if _family_of(c.split("/")[0]) == family
        ]
        return cidrs[0] if cidrs else False


Hops = list[tuple[int, Flow, int | None]]  # (dpid, the line, the mark it commits)


@dataclass
class _Walker:
    """Walks packets of one connection through the table-1 lines of the pairs that admit
    it, as the compiler makes them for each switch."""

    policy: Policy
    place: Placement
    admit: list[Pair]
    _lines: dict[int, list[Flow]] = field(default_factory=dict)

    def lines(self, dpid: int) -> list[Flow]:
        if dpid not in self._lines:
            sw = self.place.switches[dpid]
            self._lines[dpid] = [
                f
                for p in self.admit
                for f in compiler.pair_unit_flows(self.policy, p, sw.attached, sw.zone)
            ]
        return self._lines[dpid]

    def first_packet(
        self, src: _End, dst: _End, family: int, fields: dict[str, Any]
    ) -> tuple[int, Packet] | None:
        """Where a packet from `src` to `dst` comes in, and what table 1 sees of it."""
        src_ip, dst_ip = src.address_in(self.policy, family), dst.address_in(self.policy, family)
        if src_ip is False or dst_ip is False:
            return None  # no address of this family at one end: nothing to ask
        locations, switches = self.place.locations, self.place.switches
        if not src.network:
            dpid, ofport = locations[src.name]  # type: ignore[misc]
            mac = switches[dpid].attached[src.name].mac
        else:  # a network initiator: on the VM's switch (_where made sure it has the port)
            dpid = locations[dst.name][0]  # type: ignore[index]
            ofport, mac = switches[dpid].ports[self.policy.networks[src.name].port], None
        dst_mac = None
        if not dst.network:  # its MAC as its own switch knows it (_locate: it has one)
            dst_mac = switches[locations[dst.name][0]].attached[dst.name].mac  # type: ignore[index]
        return dpid, Packet(ofport, family, NEW, 0, mac, dst_mac, src_ip, dst_ip, **fields)

    def walk(self, dpid: int, pkt: Packet, target: _End) -> Hops | str:
        """The lines that take `pkt` from switch `dpid` to the target's port, crossing the
        fabric once at most, or why it stops."""
        hops: Hops = []
        for _ in range(2):
            sw = self.place.switches[dpid]
            line = _table1(self.lines(dpid), pkt)
            if line is None:
                return f"no line of switch {_dpid(dpid)} takes it"
            mark = next((a.mark for a in line.actions if isinstance(a, Ct) and a.commit), None)
            hops.append((dpid, line, mark))
            out = _out_port(line, sw, pkt)
            if out is not None and out == self._port_of(target, sw):
                return hops
            if out is None or out != sw.fabric_ofport:
                return f"switch {_dpid(dpid)} sends it to port {out}, not {target.name}'s"
            there = self._other_host(target, dpid)
            if there is None:
                return f"switch {_dpid(dpid)} sends it to its fabric port, but nothing is beyond"
            dpid = there
            pkt = dataclasses.replace(pkt, in_port=self.place.switches[dpid].fabric_ofport)
        return "it crosses the fabric more than once"

    def _port_of(self, end: _End, sw: SwitchPlace) -> int | None:
        """The end's own port on this switch (not the fabric port a remote VM is at)."""
        if end.network:
            return sw.ports.get(self.policy.networks[end.name].port)
        at = sw.attached.get(end.name)
        return at.ofport if at is not None and not at.remote else None

    def _other_host(self, end: _End, here: int) -> int | None:
        if not end.network:
            where = self.place.locations.get(end.name)
            return where[0] if where and where[0] != here else None
        port = self.policy.networks[end.name].port
        return next(
            (d for d, sw in self.place.switches.items() if d != here and port in sw.ports), None
        )


def _walk_all(
    policy: Policy, q: Question, s: str, d: str, place: Placement, admit: list[Pair]
) -> Decision:
    """Allowed when, in every family asked about, the connection's first packet is taken
    by the admitting pairs' lines to the responder's port; the flows are those lines, and
    those its later packets and replies take."""
    src = _End(s, s in policy.networks, q.src.address)
    dst = _End(d, d in policy.networks, q.dst.address)
    walker = _Walker(policy, place, admit)
    flows: list[tuple[int, Flow, str]] = []
    for family in q.families:
        first = walker.first_packet(src, dst, family, _service_fields(q, family))
        if first is None:
            continue
        start, pkt = first
        hops = walker.walk(start, pkt, dst)
        if isinstance(hops, str):
            lines = ", ".join(_pair_text(p) for p in admit)
            return Decision(
                DENIED,
                R_NOT_CARRIED,
                f"the lines the compiler makes for {lines} do not deliver it: {hops}",
                admit,
            )
        flows += [(dpid, f, "new") for dpid, f, _ in hops]
        mark = next((m for _, _, m in hops if m is not None), 0)
        later = walker.walk(start, dataclasses.replace(pkt, ct=ESTABLISHED, ct_mark=mark), dst)
        if not isinstance(later, str):
            flows += [(dpid, f, "established") for dpid, f, _ in later]
        back = walker.first_packet(dst, src, family, {})
        if back is not None:
            replies = walker.walk(
                back[0], dataclasses.replace(back[1], ct=REPLY, ct_mark=mark), src
            )
            if not isinstance(replies, str):
                flows += [(dpid, f, "reply") for dpid, f, _ in replies]
    if not flows:
        return Decision(
            DENIED,
            R_NOT_CARRIED,
            "the networks at its ends have no CIDRs of one family: no packet can go between them",
            admit,
        )
    cookies = {f.cookie for _, f, _ in flows}
    via = [p for p in admit if compiler.cookie(compiler.KIND_PAIR, p.id) in cookies] or admit
    why = (
        f"{' and '.join(_pair_text(p) for p in via)} {'allows' if len(via) == 1 else 'allow'}"
        f" {_name(s, q.src)} to open connections to {_name(d, q.dst)} for {q.service}"
        f"{_membership(policy, via, s, d)}"
    )
    return Decision(ALLOWED, R_PAIR, why, via, _merged(flows))


def _membership(policy: Policy, pairs: list[Pair], s: str, d: str) -> str:
    """How a VM is on a pair's group side, when it is: "(vm4 is in group clients)"."""
    notes = [
        f"{vm} is in group {side}"
        for p in pairs
        for vm, side in ((s, p.initiator), (d, p.responder))
        if side in policy.groups
    ]
    return f" ({', '.join(dict.fromkeys(notes))})" if notes else ""


def _merged(flows: list[tuple[int, Flow, str]]) -> list[tuple[int, Flow, str]]:
    """One entry per switch and line, saying everything it carries ("new,established")."""
    seen: dict[tuple[int, tuple], tuple[int, Flow, str]] = {}
    for dpid, f, what in flows:
        have = seen.get((dpid, f.key))
        if have is None:
            seen[(dpid, f.key)] = (dpid, f, what)
        elif what not in have[2].split(","):
            seen[(dpid, f.key)] = (dpid, have[1], f"{have[2]},{what}")
    return list(seen.values())


def _service_fields(q: Question, family: int) -> dict[str, Any]:
    """The packet's protocol fields; none for "any" (a line checking them would not carry
    every packet asked about)."""
    if q.protocol == "any":
        return {}
    if q.protocol == "icmp":
        proto, request, _ = compiler.ECHO[family]
        return {"ip_proto": proto, "icmp_type": request}
    return {"ip_proto": compiler.IP_PROTO[q.protocol], "tp_dst": q.port}


def _out_port(line: Flow, sw: SwitchPlace, pkt: Packet) -> int | None:
    """Where the line sends the packet: its output port, or, through table 2, the port of
    the MAC it is for (table 2 delivers to the attachment with that MAC)."""
    for action in line.actions:
        if isinstance(action, Output) and isinstance(action.port, int):
            return action.port
        if isinstance(action, Goto) and action.table == TABLE_DELIVER:
            return next(
                (
                    at.ofport
                    for at in sw.attached.values()
                    if at.mac is not None and at.mac == pkt.eth_dst
                ),
                None,
            )
    return None


def _table1(lines: Iterable[Flow], pkt: Packet) -> Flow | None:
    """The table-1 line (of these) that takes the packet: the highest-priority plain line
    that matches it, conjunctive matches resolved as OVS does (all clauses of an id)."""
    lines = [f for f in lines if f.table == TABLE_POLICY]
    clauses: dict[int, set[int]] = {}
    needed: dict[int, int] = {}
    for f in lines:
        if compiler.is_clause(f) and _matches(f.match, pkt):
            for a in f.actions:
                if isinstance(a, Conjunction):
                    clauses.setdefault(a.id, set()).add(a.clause)
                    needed[a.id] = a.n_clauses
    met = {cid for cid, got in clauses.items() if len(got) == needed[cid]}
    best: Flow | None = None
    for f in lines:
        if compiler.is_clause(f):
            continue
        cid = f.match.conj_id
        if cid is not None and cid not in met:
            continue
        if _matches(f.match._replace(conj_id=None), pkt) and (
            best is None or f.priority > best.priority
        ):
            best = f
    return best


def _matches(m: Match, pkt: Packet) -> bool:
    """Whether a line's match takes every packet `pkt` stands for."""
    unchecked = (
        m.vlan_tci,
        m.arp_spa,
        m.arp_sha,
        m.nd_target,
        m.nd_sll,
        m.nd_tll,
        m.conj_id,
    )
    if any(v is not None for v in unchecked):
        return False
    if m.ip_frag is not None and FRAG[m.ip_frag][0] != 0:  # a Packet is a whole one
        return False
    checks = (
        (m.in_port, pkt.in_port),
        (m.eth_type, pkt.eth_type),
        (m.eth_src, pkt.eth_src),
        (m.ip_proto, pkt.ip_proto),
        (m.icmp_type, pkt.icmp_type),
    )
    if any(want is not None and want != have for want, have in checks):
        return False
    if m.eth_dst is not None and not _mac_matches(m.eth_dst, pkt.eth_dst):
        return False
    if m.ct_mark is not None and m.ct_mark != pkt.ct_mark:
        return False
    if m.ct_state is not None and (pkt.ct & m.ct_state.mask) != m.ct_state.value:
        return False
    if m.tp_dst is not None:
        value, mask = m.tp_dst
        if pkt.tp_dst is None or pkt.tp_dst & mask != value:
            return False
    for want, have in ((m.ipv4_src or m.ipv6_src, pkt.src), (m.ipv4_dst or m.ipv6_dst, pkt.dst)):
        if want is not None and not _within(have, want):
            return False
    return True


def _mac_matches(want: str, have: str | None) -> bool:
    if have is None:
        return False
    value, _, mask = want.partition("/")
    if not mask:
        return value == have
    v, m, h = (int(x.replace(":", ""), 16) for x in (value, mask, have))
    return h & m == v & m


def _within(have: str | None, want: str) -> bool:
    """Whether every address `have` stands for (an address or a network) is in `want`."""
    if have is None:
        return False
    inner, outer = ipaddress.ip_network(have, strict=False), ipaddress.ip_network(want)
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


# --- the answer (live counters) -----------------------------------------------------------------


def answer(fw: Firewall, params: dict[str, str]) -> dict[str, Any]:
    """GET /ctfw/v1/explain: the decision, with the flows' live counters read from the
    switches. Changes nothing."""
    policy = fw.policy
    q = question_from_params(policy, params)
    d = decide(policy, q, placement(fw.switches, policy))
    return {
        "verdict": d.verdict,
        "reason": d.reason,
        "why": d.why,
        "from": _endpoint_view(q.src),
        "to": _endpoint_view(q.dst),
        "protocol": q.protocol,
        "port": q.port,
        "pairs": [policy.pair_view(p) for p in d.pairs],
        "flows": _live(fw, d.flows),
    }


def _endpoint_view(ep: Endpoint) -> dict[str, Any]:
    return {"name": ep.name, "kind": ep.kind, "address": ep.address}


def _live(fw: Firewall, flows: list[tuple[int, Flow, str]]) -> list[dict[str, Any]]:
    """The flows as the switches hold them, with their counters, matched by flow key (a
    clause another pair shares carries that pair's cookie; the key is the same)."""
    from ryu_ctfw.firewall import SwitchRejected, _flow_view
    from ryu_ctfw.switch import SwitchError

    wanted: dict[int, dict[wire.WireKey, str]] = {}
    for dpid, f, what in flows:
        wanted.setdefault(dpid, {})[wire.wire_key(f)] = what
    out = []
    for dpid, keys in sorted(wanted.items()):
        try:
            stats = fw.switches.flow_stats(dpid)
        except SwitchError as e:
            raise SwitchRejected(f"cannot read flows of {_dpid(dpid)}: {e}") from e
        for raw, flow in sorted(stats, key=lambda rf: (rf[0].key[0], -rf[0].key[1])):
            if raw.key in keys:
                out.append({**_flow_view(dpid, raw, flow), "carries": keys[raw.key].split(",")})
    return out
