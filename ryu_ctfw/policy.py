"""The policy model: VMs, pairs and their validation. Pure Python, no Ryu.

A VM is a name bound to the name of its NIC's port on a bridge (vm1 -> tap2, as in the
seed), optionally with its MAC and IP addresses. A pair says "initiator may open
connections to responder"; replies come back, nothing else.
"""

from __future__ import annotations

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


MAX_VM_ID = 0xFFFE  # a VM id is 16 bits of a connection's ct_mark; 0xffff is "blocked"


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

    @property
    def known_mac(self) -> str | None:
        return self.mac or self.learned_mac

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "id": self.id, "port": self.port, "mac": self.mac,
            "ips": list(self.ips), "learned_mac": self.learned_mac,
        }  # fmt: skip


PROTOCOLS = ("any", "tcp", "udp", "icmp")


@dataclass(frozen=True)
class Pair:
    """initiator may open `protocol` connections (to `ports`, for tcp/udp) to responder."""

    id: int
    initiator: str
    responder: str
    protocol: str = "any"
    ports: str | None = None  # "22" or "8000-8100"; None: every port

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
        }


def validate_vm_name(name: Any) -> str:
    if not isinstance(name, str) or not VM_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid VM name {name!r}: 1-64 characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return name


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
    vm_id = raw.get("id", 0)  # absent in state files written before ids
    if not isinstance(vm_id, int) or isinstance(vm_id, bool) or not 0 <= vm_id <= MAX_VM_ID:
        raise InvalidInput(f"bad id {vm_id!r} for VM {name!r}")
    learned = validate_mac(raw.get("learned_mac"))
    return Vm(vm.name, vm.port, vm.mac, vm.ips, vm_id, None if vm.mac else learned)


def vm_from_body(name: str, body: Any) -> Vm:
    """Build a VM from a PUT body, refusing anything not in the contract."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object like {"port": "tap2"}')
    unknown = sorted(set(body) - {"port", "mac", "ips"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    if "port" not in body:
        raise InvalidInput("missing field: port")
    return Vm(
        name=validate_vm_name(name),
        port=validate_port_name(body["port"]),
        mac=validate_mac(body.get("mac")),
        ips=validate_ips(body.get("ips")),
    )


@dataclass(frozen=True)
class PairRequest:
    """A validated POST /pairs body: what a new pair should allow."""

    initiator: str
    responder: str
    protocol: str = "any"
    ports: str | None = None


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
    unknown = sorted(set(body) - {"initiator", "responder", "protocol", "ports"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    for key in ("initiator", "responder"):
        if key not in body:
            raise InvalidInput(f"missing field: {key}")
        if not isinstance(body[key], str):
            raise InvalidInput(f"invalid {key}: expected a VM name")
    protocol = body.get("protocol", "any")
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    ports = validate_ports(protocol, body.get("ports"))
    return PairRequest(body["initiator"], body["responder"], protocol, ports)


@dataclass
class Policy:
    """All VMs and pairs. Methods validate first and change nothing when they raise."""

    vms: dict[str, Vm] = field(default_factory=dict)
    pairs: dict[int, Pair] = field(default_factory=dict)
    next_pair_id: int = 1
    next_vm_id: int = 1
    # Each bridge's connections live in their own conntrack zone; kept with the policy so
    # a restart finds its connections where it left them.
    zones: dict[int, int] = field(default_factory=dict)
    # Pair.service -> pair id: finds a duplicate without scanning every pair (a restart
    # loads thousands of pairs through add_pair).
    _services: dict[tuple, int] = field(default_factory=dict, repr=False, compare=False)

    # --- VMs -------------------------------------------------------------------------
    def get_vm(self, name: str) -> Vm:
        try:
            return self.vms[name]
        except KeyError:
            raise NotFound(f"no VM named {name!r}") from None

    def put_vm(self, vm: Vm) -> bool:
        """Create or replace a VM; returns True when it was created.

        An update keeps the VM's id, and its learned MAC while it stays on the same port
        with no MAC given; a new VM gets the next id. MACs and IPs may repeat: VMs on
        different bridges are different L2 domains (and conntrack zones), so the same
        addresses there are legitimate.
        """
        for other in self.vms.values():
            if other.name != vm.name and other.port == vm.port:
                raise Conflict(f"port {vm.port!r} already belongs to VM {other.name!r}")
        old = self.vms.get(vm.name)
        if old is None and len(self.vms) >= MAX_VMS:
            raise Conflict(f"the policy holds the most VMs it may ({MAX_VMS})")
        if vm.id == 0:  # from a client: the policy's own fields come from the old VM
            learned = old.learned_mac if old and old.port == vm.port and not vm.mac else None
            vm = Vm(vm.name, vm.port, vm.mac, vm.ips, old.id if old else self._new_vm_id(),
                    learned)  # fmt: skip
        elif any(o.id == vm.id and o.name != vm.name for o in self.vms.values()):
            raise InvalidInput(f"VM id {vm.id} is given to two VMs")
        self.vms[vm.name] = vm
        self.next_vm_id = max(self.next_vm_id, vm.id + 1)
        return old is None

    def _new_vm_id(self) -> int:
        if self.next_vm_id <= MAX_VM_ID:
            return self.next_vm_id
        # Ids are not reused while there are fresh ones (a new VM must not match marks of
        # an old one's connections); after that, the lowest free one.
        used = {vm.id for vm in self.vms.values()}
        free = next((i for i in range(1, MAX_VM_ID + 1) if i not in used), None)
        if free is None:
            raise Conflict(f"all {MAX_VM_ID} VM ids are in use")
        return free

    def learn_mac(self, name: str, mac: str) -> None:
        """Bind a VM registered without a MAC to the MAC it was seen using."""
        vm = self.get_vm(name)
        if vm.mac is None:
            self.vms[name] = Vm(vm.name, vm.port, None, vm.ips, vm.id, mac)

    def delete_vm(self, name: str) -> None:
        self.get_vm(name)
        users = [p.id for p in self.pairs_of(name)]
        if users:
            ids = ", ".join(str(i) for i in users)
            raise Conflict(f"VM {name!r} is used by pair(s) {ids}; delete them first")
        del self.vms[name]

    # --- pairs -----------------------------------------------------------------------
    def get_pair(self, pair_id: int) -> Pair:
        try:
            return self.pairs[pair_id]
        except KeyError:
            raise NotFound(f"no pair with id {pair_id}") from None

    def add_pair(self, req: PairRequest) -> Pair:
        if req.initiator == req.responder:
            raise InvalidInput(f"a VM cannot be paired with itself ({req.initiator!r})")
        self.get_vm(req.initiator)
        self.get_vm(req.responder)
        if len(self.pairs) >= MAX_PAIRS:
            raise Conflict(f"the policy holds the most pairs it may ({MAX_PAIRS})")
        pair = Pair(self.next_pair_id, req.initiator, req.responder, req.protocol, req.ports)
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

    def pairs_of(self, vm_name: str) -> list[Pair]:
        return [p for p in self.pairs.values() if vm_name in (p.initiator, p.responder)]

    def zone_for(self, dpid: int) -> int:
        """The bridge's conntrack zone, assigning the lowest free one (1-65535) if new."""
        if dpid not in self.zones:
            used = set(self.zones.values())
            free = next((z for z in range(1, 65536) if z not in used), None)
            if free is None:
                raise Conflict("all 65535 conntrack zones are in use")
            self.zones[dpid] = free
        return self.zones[dpid]

    # --- persistence form ------------------------------------------------------------
    def copy(self) -> Policy:
        # VMs and pairs are immutable: copying the dicts is enough, and cheap at scale.
        return Policy(
            dict(self.vms), dict(self.pairs), self.next_pair_id, self.next_vm_id,
            dict(self.zones), dict(self._services),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "vms": [vm.to_dict() for vm in self.vms.values()],
            "pairs": [p.to_dict() for p in self.pairs.values()],
            "next_pair_id": self.next_pair_id,
            "next_vm_id": self.next_vm_id,
            "zones": {f"{dpid:016x}": zone for dpid, zone in sorted(self.zones.items())},
        }

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
            policy.put_vm(Vm(vm.name, vm.port, vm.mac, vm.ips))
            if vm.learned_mac:
                policy.learn_mac(vm.name, vm.learned_mac)
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
        next_id = data.get("next_pair_id", 1)
        if not isinstance(next_id, int) or isinstance(next_id, bool) or next_id < 1:
            raise InvalidInput(f"bad next_pair_id {next_id!r}")
        policy.next_pair_id = max([next_id, *(p + 1 for p in policy.pairs)])
        return policy
