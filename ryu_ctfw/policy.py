"""The policy model: VMs, groups, networks, pairs and their validation. Pure Python, no Ryu.

A VM is a name bound to the name of its NIC's port on a bridge (vm1 -> tap2, as in the
seed), optionally with its MAC and IP addresses. A group is a named set of VMs. A network
is a set of addresses (CIDRs) reached through a port that is no VM's (an uplink to a
router). A pair says "initiator may open connections to responder", each side a VM, a
group or a network (not both networks); replies come back, nothing else.

VMs, groups and networks share one namespace of names and one space of ids: an id is
half of the ct_mark of the connections a pair between two of them admits.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any


class PolicyError(Exception):
    """A request the policy refuses. `status` is the HTTP status the REST layer uses."""

    status = 400


class InvalidInput(PolicyError):
    status = 400


class NotFound(PolicyError):
    status = 404


class Conflict(PolicyError):
    status = 409


VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Linux interface names: at most 15 bytes, no '/', no whitespace. We also refuse the few
# characters that would need quoting in ovs-vsctl or a shell, which no real NIC uses.
PORT_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Each IP costs a VM about four flows (its IP, claim and ND lines): a bound keeps one request
# from compiling into thousands. VMs and pairs are bounded likewise.
MAX_IPS_PER_VM = 64
MAX_VMS = 10_000
MAX_PAIRS = 100_000


def set_limits(vms: int, pairs: int, ips_per_vm: int) -> None:
    """The bounds from the configuration ([ctfw] max_vms, max_pairs, max_ips_per_vm), set
    once at start."""
    global MAX_VMS, MAX_PAIRS, MAX_IPS_PER_VM
    MAX_VMS, MAX_PAIRS, MAX_IPS_PER_VM = vms, pairs, ips_per_vm


# An id (of a VM, group or network) is half of a connection's ct_mark (16 bits), and 15
# bits of a conjunction id (compiler.conj_id packs two ids and a kind into 32 bits).
MAX_ID = 0x7FFF
MAX_VM_ID = MAX_ID
MAX_CIDRS_PER_NETWORK = 64
KINDS = ("vm", "group", "network")


@dataclass(frozen=True)
class Vm:
    name: str
    port: str
    mac: str | None = None
    ips: tuple[str, ...] = ()
    # Given by the policy, never by a client: the VM's half of the ct_mark its connections
    # carry. Kept while the VM exists, so a restart or an update keeps its connections.
    id: int = 0
    learned_mac: str | None = None  # the MAC first seen on its port, when none was given
    # The switch it sits on: a dpid (16 hex digits) or a bridge name; None: wherever its
    # port name is, as long as one connected switch has it.
    switch: str | None = None

    @property
    def known_mac(self) -> str | None:
        return self.mac or self.learned_mac

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "id": self.id, "port": self.port, "mac": self.mac,
            "ips": list(self.ips), "learned_mac": self.learned_mac, "switch": self.switch,
        }  # fmt: skip


@dataclass(frozen=True)
class Network:
    """Addresses reached through a port that is no VM's: `cidrs` are normalised networks."""

    name: str
    port: str
    cidrs: tuple[str, ...]
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "port": self.port, "cidrs": list(self.cidrs)}


@dataclass(frozen=True)
class Group:
    """A named set of VMs (by name), in the order given."""

    name: str
    members: tuple[str, ...] = ()
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "members": list(self.members)}


PROTOCOLS = ("any", "tcp", "udp", "icmp")


@dataclass(frozen=True)
class Pair:
    """initiator may open `protocol` connections (to `ports`, for tcp/udp) to responder."""

    id: int
    initiator: str
    responder: str
    protocol: str = "any"
    ports: str | None = None  # "22" or "8000-8100"; None: every port
    log: bool = False  # its admitted connections are events too (the connection log)

    @property
    def service(self) -> tuple[str, str, str, str | None]:
        return (self.initiator, self.responder, self.protocol, self.ports)

    def port_range(self) -> tuple[int, int] | None:
        if self.ports is None:
            return None
        lo, _, hi = self.ports.partition("-")
        return int(lo), int(hi or lo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "initiator": self.initiator,
            "responder": self.responder,
            "protocol": self.protocol,
            "ports": self.ports,
            "log": self.log,
        }


def validate_vm_name(name: Any, what: str = "VM") -> str:
    if not isinstance(name, str) or not VM_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}: 1-64 characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return name


DPID_RE = re.compile(r"^[0-9a-f]{16}$")


def validate_switch(switch: Any) -> str | None:
    """A switch as a VM names it: a dpid of 16 hex digits (lower case), or a bridge name."""
    if switch is None:
        return None
    if isinstance(switch, str) and DPID_RE.fullmatch(switch.lower()):
        return switch.lower()
    if not isinstance(switch, str) or not PORT_NAME_RE.fullmatch(switch):
        raise InvalidInput(f"invalid switch {switch!r}: a dpid of 16 hex digits or a bridge name")
    return switch


def validate_cidrs(cidrs: Any) -> tuple[str, ...]:
    """A non-empty list of IPv4/IPv6 networks without host bits or scope ids, normalised."""
    if not isinstance(cidrs, list) or not cidrs:
        raise InvalidInput(f"invalid cidrs {cidrs!r}: expected a non-empty list of networks")
    if len(cidrs) > MAX_CIDRS_PER_NETWORK:
        raise InvalidInput(f"invalid cidrs: {len(cidrs)} networks, at most {MAX_CIDRS_PER_NETWORK}")
    out: list[str] = []
    for text in cidrs:
        if not isinstance(text, str) or "%" in text:
            raise InvalidInput(f"invalid cidrs: {text!r} is not a network like 198.19.0.0/24")
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            # strict: 198.19.0.1/24 is refused ("has host bits set"): it is either a typo
            # for the network or for a host, and guessing would allow the wrong addresses.
            raise InvalidInput(f"invalid cidrs: {text!r}: {e}") from None
        if str(net) in out:
            raise InvalidInput(f"invalid cidrs: {text!r} is listed twice")
        out.append(str(net))
    return tuple(out)


def _only(body: Any, allowed: set[str], required: tuple[str, ...], example: str) -> None:
    if not isinstance(body, dict):
        raise InvalidInput(f"body must be a JSON object like {example}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    for key in required:
        if key not in body:
            raise InvalidInput(f"missing field: {key}")


def network_from_body(name: str, body: Any) -> Network:
    _only(body, {"port", "cidrs"}, ("port", "cidrs"),
          '{"port": "uplink0", "cidrs": ["198.19.0.0/24"]}')  # fmt: skip
    return Network(validate_vm_name(name, "network"), validate_port_name(body["port"]),
                   validate_cidrs(body["cidrs"]))  # fmt: skip


def group_from_body(name: str, body: Any) -> Group:
    _only(body, {"members"}, ("members",), '{"members": ["vm1", "vm3"]}')
    members = body["members"]
    if not isinstance(members, list):
        raise InvalidInput(f"invalid members {members!r}: expected a list of VM names")
    if len(members) > MAX_VMS:
        raise InvalidInput(f"invalid members: {len(members)} names, at most {MAX_VMS}")
    seen: list[str] = []
    for member in members:
        validate_vm_name(member)
        if member in seen:
            raise InvalidInput(f"invalid members: {member!r} is listed twice")
        seen.append(member)
    return Group(validate_vm_name(name, "group"), tuple(seen))


def switch_settings_from_body(body: Any) -> str | None:
    """A PUT /switches/{dpid} body: `{"fabric_port": "NAME"}`, or null to clear it."""
    _only(body, {"fabric_port"}, ("fabric_port",), '{"fabric_port": "eth1"}')
    port = body["fabric_port"]
    return None if port is None else validate_port_name(port)


def validate_dpid(text: Any) -> int:
    if not isinstance(text, str) or not DPID_RE.fullmatch(text.lower()):
        raise InvalidInput(f"invalid switch {text!r}: a dpid of 16 hex digits")
    return int(text, 16)


def _state_id(kind: str, name: Any, raw: dict[str, Any]) -> int:
    value = raw.get("id", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise InvalidInput(f"bad id {value!r} for {kind} {name!r}")
    return value


def validate_port_name(port: Any) -> str:
    if not isinstance(port, str) or not PORT_NAME_RE.fullmatch(port) or port in (".", ".."):
        raise InvalidInput(
            f"invalid port name {port!r}: a network interface name of 1-15 characters"
            " (letters, digits, '_', '.', ':', '@', '-')"
        )
    return port


def validate_mac(mac: Any) -> str | None:
    if mac is None:
        return None
    if not isinstance(mac, str) or not MAC_RE.fullmatch(mac.lower()):
        raise InvalidInput(f"invalid mac {mac!r}: expected six hex octets like 52:54:00:60:84:ff")
    mac = mac.lower()
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid mac {mac!r}: a multicast address cannot be a VM's MAC")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput("invalid mac '00:00:00:00:00:00'")
    return mac


def validate_ips(ips: Any) -> tuple[str, ...]:
    if ips is None:
        return ()
    if not isinstance(ips, list):
        raise InvalidInput(f"invalid ips {ips!r}: expected a list of IP addresses")
    if len(ips) > MAX_IPS_PER_VM:
        raise InvalidInput(f"invalid ips: {len(ips)} addresses, at most {MAX_IPS_PER_VM}")
    out: list[str] = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip) if isinstance(ip, str) else None
        except ValueError:
            addr = None
        if addr is None:
            raise InvalidInput(f"invalid ips: {ip!r} is not an IPv4 or IPv6 address")
        if addr.is_multicast or addr.is_unspecified:
            raise InvalidInput(f"invalid ips: {ip!r} cannot be a VM's own address")
        if getattr(addr, "scope_id", None):
            # fe80::1%eth0 is fe80::1 on the wire: a scope names the host's interface, not
            # the VM's, and two spellings of one address would make the same flows twice.
            raise InvalidInput(f"invalid ips: {ip!r} has a scope id; give the address alone")
        if str(addr) in out:
            raise InvalidInput(f"invalid ips: {ip!r} is listed twice")
        out.append(str(addr))
    return tuple(out)


def vm_from_state(name: Any, raw: Any) -> Vm:
    """A VM as the state file stores it: the PUT body plus the policy's own fields."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"VM {name!r} is not an object")
    body = {k: v for k, v in raw.items() if k not in ("id", "learned_mac", "name")}
    vm = vm_from_body(name, body)
    vm_id = _state_id("VM", name, raw)  # absent (0) in state files written before ids
    learned = validate_mac(raw.get("learned_mac"))
    return dataclasses.replace(vm, id=vm_id, learned_mac=None if vm.mac else learned)


def vm_from_body(name: str, body: Any) -> Vm:
    """Build a VM from a PUT body, refusing anything not in the contract."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object like {"port": "tap2"}')
    unknown = sorted(set(body) - {"port", "mac", "ips", "switch"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    if "port" not in body:
        raise InvalidInput("missing field: port")
    return Vm(
        name=validate_vm_name(name),
        port=validate_port_name(body["port"]),
        mac=validate_mac(body.get("mac")),
        ips=validate_ips(body.get("ips")),
        switch=validate_switch(body.get("switch")),
    )


@dataclass(frozen=True)
class PairRequest:
    """A validated POST /pairs body: what a new pair should allow."""

    initiator: str
    responder: str
    protocol: str = "any"
    ports: str | None = None
    log: bool = False


def validate_ports(protocol: str, ports: Any) -> str | None:
    """Normalise "22" / "8000-8100" (or an int) for tcp/udp; refuse ports elsewhere."""
    if ports is None:
        return None
    if protocol not in ("tcp", "udp"):
        raise InvalidInput(f"invalid ports: protocol {protocol!r} has no ports (tcp or udp only)")
    text = str(ports) if isinstance(ports, int) and not isinstance(ports, bool) else ports
    m = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", text) if isinstance(text, str) else None
    if m is None:
        raise InvalidInput(
            f'invalid ports {ports!r}: expected a port like "22" or a range like "8000-8100"'
        )
    lo, hi = int(m[1]), int(m[2] or m[1])
    for port in (lo, hi):
        if not 1 <= port <= 65535:
            raise InvalidInput(f"invalid ports {ports!r}: {port} is outside 1-65535")
    if hi < lo:
        raise InvalidInput(f"invalid ports {ports!r}: the range is reversed")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def pair_request_from_body(body: Any) -> PairRequest:
    if not isinstance(body, dict):
        raise InvalidInput(
            'body must be a JSON object like {"initiator": "vm1", "responder": "vm2"}'
        )
    unknown = sorted(set(body) - {"initiator", "responder", "protocol", "ports", "log"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    for key in ("initiator", "responder"):
        if key not in body:
            raise InvalidInput(f"missing field: {key}")
        if not isinstance(body[key], str):
            raise InvalidInput(f"invalid {key}: expected the name of a VM, group or network")
    protocol = body.get("protocol", "any")
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    ports = validate_ports(protocol, body.get("ports"))
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise InvalidInput(f"invalid log {log!r}: true or false")
    return PairRequest(body["initiator"], body["responder"], protocol, ports, log)


@dataclass
class Policy:
    """All VMs, groups, networks and pairs. Methods validate first and change nothing when
    they raise."""

    vms: dict[str, Vm] = field(default_factory=dict)
    pairs: dict[int, Pair] = field(default_factory=dict)
    next_pair_id: int = 1
    next_vm_id: int = 1  # the next id for a VM, group or network (one space of ids)
    # Each bridge's connections live in their own conntrack zone; kept with the policy so
    # a restart finds its connections where it left them.
    zones: dict[int, int] = field(default_factory=dict)
    # Pair.service -> pair id: finds a duplicate without scanning every pair (a restart
    # loads thousands of pairs through add_pair).
    _services: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)
    groups: dict[str, Group] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    # dpid -> the port of that bridge that leads to the other hosts (PUT /switches/{dpid});
    # a switch not listed uses [ctfw] fabric_port, if set.
    fabric: dict[int, str] = field(default_factory=dict)

    # --- names ---------------------------------------------------------------------------
    def kind_of(self, name: str) -> str | None:
        """ "vm", "group" or "network": what `name` is, or None."""
        if name in self.vms:
            return "vm"
        if name in self.groups:
            return "group"
        if name in self.networks:
            return "network"
        return None

    def endpoint_id(self, name: str) -> int:
        thing = self.vms.get(name) or self.groups.get(name) or self.networks.get(name)
        if thing is None:
            raise NotFound(f"no VM, group or network named {name!r}")
        return thing.id

    def members(self, name: str) -> tuple[str, ...]:
        """The VMs a pair side stands for: the VM itself, a group's members, or none."""
        if name in self.vms:
            return (name,)
        group = self.groups.get(name)
        return group.members if group is not None else ()

    def _name_free(self, name: str, kind: str) -> None:
        other = self.kind_of(name)
        if other is not None and other != kind:
            raise Conflict(f"the name {name!r} is taken by a {other}")

    def _id_in_use(self, ident: int, name: str) -> bool:
        return any(
            o.id == ident and o.name != name
            for o in (*self.vms.values(), *self.groups.values(), *self.networks.values())
        )

    # --- VMs -------------------------------------------------------------------------
    def get_vm(self, name: str) -> Vm:
        try:
            return self.vms[name]
        except KeyError:
            raise NotFound(f"no VM named {name!r}") from None

    def put_vm(self, vm: Vm) -> bool:
        """Create or replace a VM; returns True when it was created.

        An update keeps the VM's id, and its learned MAC while it stays on the same port
        (and switch) with no MAC given; a new VM gets the next id. MACs and IPs may repeat:
        VMs on different bridges are different L2 domains (and conntrack zones), so the
        same addresses there are legitimate. Two VMs may have the same port name only when
        each names its switch, and not the same one (libvirt's vnet0 on two hosts).
        """
        self._name_free(vm.name, "vm")
        for other in self.vms.values():
            if other.name != vm.name and other.port == vm.port and not _apart(vm, other):
                where = f" on switch {vm.switch}" if vm.switch else ""
                raise Conflict(
                    f"port {vm.port!r}{where} already belongs to VM {other.name!r} (give"
                    " each VM its switch to use one port name on several switches)"
                )
        for net in self.networks.values():
            if net.port == vm.port:
                raise Conflict(f"port {vm.port!r} is the port of network {net.name!r}")
        old = self.vms.get(vm.name)
        if old is None and len(self.vms) >= MAX_VMS:
            raise Conflict(f"the policy holds the most VMs it may ({MAX_VMS})")
        if vm.id == 0:  # from a client: the policy's own fields come from the old VM
            same_place = old is not None and (old.port, old.switch) == (vm.port, vm.switch)
            learned = old.learned_mac if old and same_place and not vm.mac else None
            vm = dataclasses.replace(vm, id=old.id if old else self._new_vm_id(),
                                     learned_mac=learned)  # fmt: skip
        elif self._id_in_use(vm.id, vm.name):
            raise InvalidInput(f"id {vm.id} is given twice")
        self.vms[vm.name] = vm
        self.next_vm_id = max(self.next_vm_id, vm.id + 1)
        return old is None

    def _new_vm_id(self) -> int:
        if self.next_vm_id <= MAX_VM_ID:
            return self.next_vm_id
        # Ids are not reused while there are fresh ones (a new VM must not match marks of
        # an old one's connections); after that, the lowest free one.
        used = {o.id for o in (*self.vms.values(), *self.groups.values(),
                               *self.networks.values())}  # fmt: skip
        free = next((i for i in range(1, MAX_ID + 1) if i not in used), None)
        if free is None:
            raise Conflict(f"all {MAX_ID} ids for VMs, groups and networks are in use")
        return free

    def learn_mac(self, name: str, mac: str) -> None:
        """Bind a VM registered without a MAC to the MAC it was seen using."""
        vm = self.get_vm(name)
        if vm.mac is None:
            self.vms[name] = dataclasses.replace(vm, learned_mac=mac)

    def delete_vm(self, name: str) -> None:
        self.get_vm(name)
        groups = [g.name for g in self.groups.values() if name in g.members]
        if groups:
            raise Conflict(f"VM {name!r} is a member of group(s) {', '.join(groups)}; remove it"
                           " from them first")  # fmt: skip
        users = [p.id for p in self.pairs_of(name)]
        if users:
            ids = ", ".join(str(i) for i in users)
            raise Conflict(f"VM {name!r} is used by pair(s) {ids}; delete them first")
        del self.vms[name]

    # --- networks ----------------------------------------------------------------------
    def get_network(self, name: str) -> Network:
        try:
            return self.networks[name]
        except KeyError:
            raise NotFound(f"no network named {name!r}") from None

    def put_network(self, net: Network) -> bool:
        """Create or replace a network; returns True when it was created. Several networks
        may share a port (a DNS server and an office subnet behind one uplink)."""
        self._name_free(net.name, "network")
        for vm in self.vms.values():
            if vm.port == net.port:
                raise Conflict(f"port {net.port!r} belongs to VM {vm.name!r}")
        return self._put_named(self.networks, net, "networks")

    def delete_network(self, name: str) -> None:
        self.get_network(name)
        self._unused(name, "network")
        del self.networks[name]

    # --- groups ----------------------------------------------------------------------
    def get_group(self, name: str) -> Group:
        try:
            return self.groups[name]
        except KeyError:
            raise NotFound(f"no group named {name!r}") from None

    def put_group(self, group: Group) -> bool:
        """Create or replace a group (its members must be VMs); True when created."""
        self._name_free(group.name, "group")
        for member in group.members:
            if member not in self.vms:
                raise NotFound(f"no VM named {member!r} (groups list VMs)")
        return self._put_named(self.groups, group, "groups")

    def delete_group(self, name: str) -> None:
        self.get_group(name)
        self._unused(name, "group")
        del self.groups[name]

    def _put_named(self, table: dict[str, Any], thing: Any, what: str) -> bool:
        """Store a group or network under its name, with its old id (or a new one when
        created, or the given one from a state file); True when created."""
        old = table.get(thing.name)
        if old is None and len(table) >= MAX_VMS:
            raise Conflict(f"the policy holds the most {what} it may ({MAX_VMS})")
        if thing.id == 0:
            thing = dataclasses.replace(thing, id=old.id if old else self._new_vm_id())
        elif self._id_in_use(thing.id, thing.name):
            raise InvalidInput(f"id {thing.id} is given twice")
        table[thing.name] = thing
        self.next_vm_id = max(self.next_vm_id, thing.id + 1)
        return old is None

    def _unused(self, name: str, kind: str) -> None:
        users = [p.id for p in self.pairs_of(name)]
        if users:
            ids = ", ".join(str(i) for i in users)
            raise Conflict(f"{kind} {name!r} is used by pair(s) {ids}; delete them first")

    # --- pairs -----------------------------------------------------------------------
    def get_pair(self, pair_id: int) -> Pair:
        try:
            return self.pairs[pair_id]
        except KeyError:
            raise NotFound(f"no pair with id {pair_id}") from None

    def add_pair(self, req: PairRequest) -> Pair:
        kinds = []
        for name in (req.initiator, req.responder):
            kind = self.kind_of(name)
            if kind is None:
                raise NotFound(f"no VM, group or network named {name!r}")
            kinds.append(kind)
        if kinds == ["network", "network"]:
            raise InvalidInput("a pair cannot join two networks: one side must be a VM or group")
        if req.initiator == req.responder and kinds[0] == "vm":
            raise InvalidInput(f"a VM cannot be paired with itself ({req.initiator!r})")
        if len(self.pairs) >= MAX_PAIRS:
            raise Conflict(f"the policy holds the most pairs it may ({MAX_PAIRS})")
        pair = Pair(
            self.next_pair_id, req.initiator, req.responder, req.protocol, req.ports, req.log
        )
        same = self._services.get(pair.service)
        if same is not None:
            p = self.pairs[same]
            what = f"{p.initiator} -> {p.responder} {p.protocol}" + (
                f"/{p.ports}" if p.ports else ""
            )
            raise Conflict(f"pair {what} already exists (id {p.id})")
        self.pairs[pair.id] = pair
        self._services[pair.service] = pair.id
        self.next_pair_id += 1
        return pair

    def delete_pair(self, pair_id: int) -> None:
        pair = self.get_pair(pair_id)
        del self.pairs[pair_id]
        self._services.pop(pair.service, None)

    def pairs_of(self, name: str) -> list[Pair]:
        """The pairs naming `name` (a VM, group or network) as a side."""
        return [p for p in self.pairs.values() if name in (p.initiator, p.responder)]

    def pair_view(self, pair: Pair) -> dict[str, Any]:
        """A pair as the API shows it: its fields and what each side is."""
        return {**pair.to_dict(), "initiator_kind": self.kind_of(pair.initiator),
                "responder_kind": self.kind_of(pair.responder)}  # fmt: skip

    def zone_for(self, dpid: int) -> int:
        """The bridge's conntrack zone, assigning the lowest free one (1-65535) if new."""
        if dpid not in self.zones:
            used = set(self.zones.values())
            free = next((z for z in range(1, 65536) if z not in used), None)
            if free is None:
                raise Conflict("all 65535 conntrack zones are in use")
            self.zones[dpid] = free
        return self.zones[dpid]

    # --- switches --------------------------------------------------------------------
    def set_fabric_port(self, dpid: int, port: str | None) -> None:
        """The port of switch `dpid` that leads to the other hosts; None: the default."""
        if port is None:
            self.fabric.pop(dpid, None)
        else:
            self.fabric[dpid] = port

    # --- persistence form ------------------------------------------------------------
    def copy(self) -> Policy:
        # VMs and pairs are immutable: copying the dicts is enough, and cheap at scale.
        return Policy(
            dict(self.vms), dict(self.pairs), self.next_pair_id, self.next_vm_id,
            dict(self.zones), dict(self._services), dict(self.groups), dict(self.networks),
            dict(self.fabric),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "vms": [vm.to_dict() for vm in self.vms.values()],
            "pairs": [p.to_dict() for p in self.pairs.values()],
            "groups": [g.to_dict() for g in self.groups.values()],
            "networks": [n.to_dict() for n in self.networks.values()],
            "next_pair_id": self.next_pair_id,
            "next_vm_id": self.next_vm_id,
            "zones": {f"{dpid:016x}": zone for dpid, zone in sorted(self.zones.items())},
            "switches": self.fabric_table(),
        }

    def fabric_table(self) -> dict[str, dict[str, str]]:
        """The per-switch settings as stored: dpid (16 hex digits) -> the PUT body."""
        return {f"{dpid:016x}": {"fabric_port": port} for dpid, port in sorted(self.fabric.items())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Rebuild a policy, validating it as strictly as REST input."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise InvalidInput("not a ryu-ctfw state (version 1)")
        policy = cls()
        next_vm_id = data.get("next_vm_id", 1)
        if not isinstance(next_vm_id, int) or isinstance(next_vm_id, bool) or next_vm_id < 1:
            raise InvalidInput(f"bad next_vm_id {next_vm_id!r}")
        policy.next_vm_id = next_vm_id
        unnumbered = []
        for raw in data.get("vms", []):
            vm = vm_from_state(raw.get("name") if isinstance(raw, dict) else None, raw)
            if vm.id:
                policy.put_vm(vm)
            else:
                unnumbered.append(vm)
        for vm in unnumbered:  # a state file from before VM ids: number them in order
            policy.put_vm(dataclasses.replace(vm, learned_mac=None))
            if vm.learned_mac:
                policy.learn_mac(vm.name, vm.learned_mac)
        for raw in _objects(data, "networks"):
            net = network_from_body(raw.get("name"), _without(raw, "id", "name"))
            policy.put_network(Network(net.name, net.port, net.cidrs,
                                       _state_id("network", net.name, raw)))  # fmt: skip
        for raw in _objects(data, "groups"):
            group = group_from_body(raw.get("name"), _without(raw, "id", "name"))
            policy.put_group(Group(group.name, group.members,
                                   _state_id("group", group.name, raw)))  # fmt: skip
        for raw in data.get("pairs", []):
            pair_id = raw.get("id")
            if (
                not isinstance(pair_id, int)
                or isinstance(pair_id, bool)  # JSON true is not an id, though bool is an int
                or pair_id < 1
                or pair_id in policy.pairs
            ):
                raise InvalidInput(f"bad pair id {pair_id!r}")
            request = pair_request_from_body({k: v for k, v in raw.items() if k != "id"})
            policy.next_pair_id = pair_id
            policy.add_pair(request)
        zones = data.get("zones", {})
        if not isinstance(zones, dict):
            raise InvalidInput("zones must be an object of dpid -> zone")
        for dpid, zone in zones.items():
            if not isinstance(dpid, str) or not re.fullmatch(r"[0-9a-f]{16}", dpid):
                raise InvalidInput(f"bad switch id {dpid!r} in zones")
            if not isinstance(zone, int) or isinstance(zone, bool) or not 1 <= zone <= 65535:
                raise InvalidInput(f"bad zone {zone!r} for switch {dpid}")
            if zone in policy.zones.values():
                raise InvalidInput(f"zone {zone} is given to two switches")
            policy.zones[int(dpid, 16)] = zone
        switches = data.get("switches", {})
        if not isinstance(switches, dict):
            raise InvalidInput("switches must be an object of dpid -> settings")
        for dpid, settings in switches.items():
            if not isinstance(dpid, str) or not DPID_RE.fullmatch(dpid):
                raise InvalidInput(f"bad switch id {dpid!r} in switches")
            policy.set_fabric_port(int(dpid, 16), switch_settings_from_body(settings))
        next_id = data.get("next_pair_id", 1)
        if not isinstance(next_id, int) or isinstance(next_id, bool) or next_id < 1:
            raise InvalidInput(f"bad next_pair_id {next_id!r}")
        policy.next_pair_id = max([next_id, *(p + 1 for p in policy.pairs)])
        return policy


def _objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"{key} must be a list of objects")
    return items


def _without(raw: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in keys}


def _apart(a: Vm, b: Vm) -> bool:
    """Whether two VMs are told apart by the switches they name."""
    return a.switch is not None and b.switch is not None and a.switch != b.switch
