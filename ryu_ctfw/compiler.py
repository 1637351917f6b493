"""The flow compiler: policy + where each VM is attached in, flow specs out.

Pure: no Ryu, no I/O. Every flow the app ever installs is made here, so this is where the
firewall's correctness lives, and `Flow.text()` prints each one in ovs-ofctl syntax.

The layout, for one switch (see README, "The flows"):

  table 0 (classify)
    priority=100,ip                 actions=ct(table=1)          IPv4 through conntrack
    priority=11,arp,in_port=P       actions=NORMAL,CONTROLLER    learn the MAC of a VM
                                                                 registered without one
    priority=10,arp                 actions=NORMAL               ARP cannot be tracked
    priority=1                      actions=drop                 anything else
  table 1 (policy)
    priority=100,ct_state=+new+trk,ip,in_port=I,dl_dst=R         a pair lets its initiator
                                    actions=ct(commit),NORMAL    open connections to its
                                                                 responder (and no one else)
    priority=100,ct_state=+est+trk,ip,in_port=V  actions=NORMAL  packets of connections a
                                                                 pair committed, both ways
    priority=0                      actions=drop                 the rest, counted

The seed's two-VM flows matched only in_port on the +new line; with a third VM that would
let the initiator open connections to anyone. Here the responder is pinned by its MAC
(given, or learned from its ARP) or, when only its IPs are known, by nw_dst.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ryu_ctfw.policy import Pair, Policy, Vm

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806

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
    (CT_NEW, "new"),
    (CT_EST, "est"),
    (CT_REL, "rel"),
    (CT_RPL, "rpl"),
    (CT_INV, "inv"),
    (CT_TRK, "trk"),
]


def cookie(kind: int, ident: int = 0) -> int:
    return COOKIE_TAG | (kind << 40) | (ident & ((1 << 40) - 1))


def cookie_kind(value: int) -> int:
    return (value >> 40) & 0xFF


@dataclass(frozen=True)
class CtState:
    """ct_state flags: `value` among the bits of `mask` (+flag set, -flag clear)."""

    value: int
    mask: int

    @classmethod
    def of(cls, *required: int) -> CtState:
        bits = 0
        for flag in required:
            bits |= flag
        return cls(bits, bits)

    def text(self) -> str:
        out = ""
        for bit, name in _CT_NAMES:
            if self.mask & bit:
                out += ("+" if self.value & bit else "-") + name
        return out


@dataclass(frozen=True)
class Match:
    in_port: int | None = None
    eth_type: int | None = None
    eth_dst: str | None = None
    ipv4_dst: str | None = None
    ct_state: CtState | None = None

    def fields(self) -> dict[str, str | int]:
        """The match as ovs-ofctl field names and values (for the REST view)."""
        out: dict[str, str | int] = {}
        if self.ct_state is not None:
            out["ct_state"] = self.ct_state.text()
        if self.eth_type is not None:
            out["dl_type"] = f"0x{self.eth_type:04x}"
        if self.in_port is not None:
            out["in_port"] = self.in_port
        if self.eth_dst is not None:
            out["dl_dst"] = self.eth_dst
        if self.ipv4_dst is not None:
            out["nw_dst"] = self.ipv4_dst
        return out

    def text(self) -> str:
        parts: list[str] = []
        if self.ct_state is not None:
            parts.append(f"ct_state={self.ct_state.text()}")
        if self.eth_type == ETH_TYPE_IP:
            parts.append("ip")
        elif self.eth_type == ETH_TYPE_ARP:
            parts.append("arp")
        elif self.eth_type is not None:
            parts.append(f"dl_type=0x{self.eth_type:04x}")
        if self.in_port is not None:
            parts.append(f"in_port={self.in_port}")
        if self.eth_dst is not None:
            parts.append(f"dl_dst={self.eth_dst}")
        if self.ipv4_dst is not None:
            parts.append(f"nw_dst={self.ipv4_dst}")
        return ",".join(parts)


@dataclass(frozen=True)
class Output:
    """Output to a port number or to one of "NORMAL" / "CONTROLLER"."""

    port: int | str
    max_len: int = 128  # only for CONTROLLER

    def text(self) -> str:
        if self.port == "CONTROLLER":
            return f"CONTROLLER:{self.max_len}"
        return str(self.port) if isinstance(self.port, str) else f"output:{self.port}"


@dataclass(frozen=True)
class Ct:
    """The conntrack action: send through conntrack, optionally commit and recirculate."""

    commit: bool = False
    table: int | None = None
    zone: int | None = None

    def text(self) -> str:
        args = []
        if self.commit:
            args.append("commit")
        if self.zone is not None:
            args.append(f"zone={self.zone}")
        if self.table is not None:
            args.append(f"table={self.table}")
        return f"ct({','.join(args)})"


Action = Output | Ct


@dataclass(frozen=True)
class Flow:
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


@dataclass(frozen=True)
class Attachment:
    """Where a VM is on one switch right now, and the MAC it is known by."""

    ofport: int
    mac: str | None  # configured, else learned from its ARP, else None


NORMAL = Output("NORMAL")


def base_flows() -> list[Flow]:
    """Table 0 and the table-1 default: the seed's lines 1-3, and line 7 made general."""
    base = cookie(KIND_BASE)
    return [
        Flow(TABLE_CLASSIFY, 100, Match(eth_type=ETH_TYPE_IP), (Ct(table=TABLE_POLICY),), base),
        Flow(TABLE_CLASSIFY, 10, Match(eth_type=ETH_TYPE_ARP), (NORMAL,), base),
        Flow(TABLE_CLASSIFY, 1, Match(), (), base),
        Flow(TABLE_POLICY, 0, Match(), (), base),
    ]


def responder_matches(vm: Vm, at: Attachment) -> list[Match]:
    """How a packet is recognised as going to `vm`: by MAC, else by its IPv4 addresses."""
    if at.mac:
        return [Match(eth_dst=at.mac)]
    v4 = [ip for ip in vm.ips if ipaddress.ip_address(ip).version == 4]
    return [Match(ipv4_dst=ip) for ip in v4]


def pair_flows(pair: Pair, initiator: Attachment, responder: Vm, r_at: Attachment) -> list[Flow]:
    new = CtState.of(CT_NEW, CT_TRK)
    flows = []
    for dst in responder_matches(responder, r_at):
        match = Match(
            in_port=initiator.ofport,
            eth_type=ETH_TYPE_IP,
            eth_dst=dst.eth_dst,
            ipv4_dst=dst.ipv4_dst,
            ct_state=new,
        )
        flows.append(
            Flow(TABLE_POLICY, 100, match, (Ct(commit=True), NORMAL), cookie(KIND_PAIR, pair.id))
        )
    return flows


def established_flow(at: Attachment) -> Flow:
    match = Match(in_port=at.ofport, eth_type=ETH_TYPE_IP, ct_state=CtState.of(CT_EST, CT_TRK))
    return Flow(TABLE_POLICY, 100, match, (NORMAL,), cookie(KIND_VM, at.ofport))


def learn_flow(at: Attachment) -> Flow:
    match = Match(in_port=at.ofport, eth_type=ETH_TYPE_ARP)
    return Flow(
        TABLE_CLASSIFY, 11, match, (NORMAL, Output("CONTROLLER")), cookie(KIND_LEARN, at.ofport)
    )


def compile_switch(policy: Policy, attached: Mapping[str, Attachment]) -> list[Flow]:
    """All flows one switch should hold. `attached` maps VM name -> where it is on it."""
    flows = base_flows()
    for name, at in attached.items():
        vm = policy.vms[name]
        if vm.mac is None and at.mac is None:
            flows.append(learn_flow(at))
    in_a_pair: set[str] = set()
    for pair in policy.pairs.values():
        ini, res = attached.get(pair.initiator), attached.get(pair.responder)
        if ini is None or res is None:
            continue
        flows += pair_flows(pair, ini, policy.vms[pair.responder], res)
        in_a_pair.update((pair.initiator, pair.responder))
    flows += [established_flow(attached[name]) for name in sorted(in_a_pair)]
    return dedupe(flows)


def dedupe(flows: Iterable[Flow]) -> list[Flow]:
    """Keep the first flow for each OpenFlow identity, in order."""
    seen: dict[tuple, Flow] = {}
    for f in flows:
        seen.setdefault(f.key, f)
    return list(seen.values())


def render(flows: Iterable[Flow]) -> str:
    """Flows in the order dump-flows lists them: by table, then priority high to low."""
    ordered = sorted(flows, key=lambda f: (f.table, -f.priority))
    return "\n".join(f.text() for f in ordered)
