"""The whole policy as one JSON document: export, and replace (issue 13, point 5).

GET /policy answers `{"vms", "groups", "networks", "pairs", "switches"}`: the first four
hold the very objects the list endpoints answer, "switches" the per-switch settings
(`{"dpid", "fabric_port"}`, as PUT /switches/{dpid} sets them). PUT /policy takes such a
document and makes the policy exactly that, in one change (one atomic bundle per switch).

On the way in, the fields the controller computes (ids, dpid, ofport, ambiguous,
learned_mac, the pair sides' kinds) are ignored, so an export can be applied as it is.
"vms", "groups", "networks" and "pairs" must all be there (`[]` for none: a missing list
must not silently delete everything); "switches" may be left out, and then the switch
settings stay as they are. Anything else is refused.

A VM, group or network is kept (its id too) when the document has one of that name and
kind; it is changed only if its fields differ. A pair is kept, with its id, when the
document has a pair with the same initiator, responder, protocol, ports and log, and its
sides are still of the same kind; the document's other pairs are added, in its order.
So applying an export changes nothing (no flow-mod, nothing stored), and applying one
document twice is the same as applying it once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ryu_ctfw.policy import (
    Conflict,
    Group,
    InvalidInput,
    Network,
    NotFound,
    Pair,
    PairRequest,
    Policy,
    PolicyError,
    Vm,
    group_from_body,
    pair_request_from_body,
    switch_settings_from_body,
    validate_cidrs,
    validate_dpid,
    validate_ips,
    validate_mac,
    validate_port_name,
    validate_switch,
    validate_vm_name,
)
from ryu_ctfw.switch import dpid_str

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall

LISTS = ("vms", "groups", "networks", "pairs")
OPTIONAL = ("switches",)
# What the controller computes, by list: shown by export, ignored by apply.
COMPUTED = {
    "vms": {"id", "dpid", "ofport", "ambiguous", "learned_mac"},
    "groups": {"id"},
    "networks": {"id", "dpid", "ofport"},
    "pairs": {"id", "initiator_kind", "responder_kind"},
    "switches": set(),
}
EXAMPLE = '{"vms": [], "groups": [], "networks": [], "pairs": []}'

PairKey = tuple[str, str, str, str | None, bool]


@dataclass(frozen=True)
class Document:
    """A validated policy document: what the policy should be."""

    vms: tuple[Vm, ...]  # without the fields the policy gives (id, learned MAC)
    groups: tuple[Group, ...]
    networks: tuple[Network, ...]
    pairs: tuple[PairRequest, ...]
    fabric: dict[int, str] | None  # None: leave the switch settings as they are
    kinds: dict[str, str] = field(default_factory=dict)  # name -> "vm" | "group" | "network"

    def kind_of(self, name: str) -> str | None:
        return self.kinds.get(name)


@dataclass
class Section:
    """Names of what was added, changed or removed, by kind; pairs as views."""

    vms: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    switches: list[str] = field(default_factory=list)


@dataclass
class Difference:
    added: Section = field(default_factory=Section)
    changed: Section = field(default_factory=Section)
    removed: Section = field(default_factory=Section)

    def view(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- export ----------------------------------------------------------------------------------


def export(fw: Firewall) -> dict[str, Any]:
    policy = fw.policy
    return {
        "vms": [fw.vm_view(v) for v in policy.vms.values()],
        "groups": [g.to_dict() for g in policy.groups.values()],
        "networks": [fw.network_view(n) for n in policy.networks.values()],
        "pairs": [policy.pair_view(p) for p in policy.pairs.values()],
        "switches": [
            {"dpid": dpid_str(dpid), "fabric_port": port}
            for dpid, port in sorted(policy.fabric.items())
        ],
    }


# --- apply -----------------------------------------------------------------------------------


def apply(fw: Firewall, body: Any, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the whole policy by the document `body`; the difference it made. Validated
    whole first: a bad document changes nothing. With `plan`, a dry run (Firewall.change)."""
    doc = parse(body)

    def replace(policy: Policy) -> Difference:
        diff = replace_policy(policy, doc)
        _check_macs(fw, policy, doc, {*diff.added.vms, *diff.changed.vms})
        return diff

    return fw.change(replace, plan).view()


def _check_macs(fw: Firewall, policy: Policy, doc: Document, put: set[str]) -> None:
    """As PUT /vms/{name} refuses: a MAC given to a VM put here must not be another VM's on
    a switch that has both ports (either could receive the other's traffic). Checked on the
    policy the document makes, so two VMs may swap MACs in one document; by an index per
    switch, as a document may put thousands of VMs."""
    for sw in fw.switches.switches.values():
        owners: dict[str, list[str]] = {}
        for vm in policy.vms.values():
            if vm.port in sw.ports and vm.known_mac:
                owners.setdefault(vm.known_mac, []).append(vm.name)
        for i, vm in enumerate(doc.vms):
            if vm.name not in put or not vm.mac or vm.port not in sw.ports:
                continue
            other = next((n for n in owners.get(vm.mac, ()) if n != vm.name), None)
            if other is not None:
                raise Conflict(f"vms[{i}]: MAC {vm.mac} already belongs to VM {other!r} on"
                               f" switch {dpid_str(sw.dpid)}")  # fmt: skip


def parse(body: Any) -> Document:
    """The document validated on its own (names, fields, references between entries), before
    anything is compared with the policy."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the policy document must be a JSON object like {EXAMPLE}")
    unknown = sorted(set(body) - set(LISTS) - set(OPTIONAL))
    if unknown:
        raise InvalidInput(
            f"unknown field(s) in the policy document: {', '.join(unknown)}; it has "
            f"{', '.join(LISTS + OPTIONAL)}"
        )
    for key in LISTS:
        if key not in body:
            raise InvalidInput(f"missing field: {key} (give [] for none)")
    doc = Document(
        vms=tuple(_vm(f"vms[{i}]", e) for i, e in _entries(body, "vms")),
        groups=tuple(_group(f"groups[{i}]", e) for i, e in _entries(body, "groups")),
        networks=tuple(_network(f"networks[{i}]", e) for i, e in _entries(body, "networks")),
        pairs=tuple(_pair(f"pairs[{i}]", e) for i, e in _entries(body, "pairs")),
        fabric=_fabric(body["switches"]) if "switches" in body else None,
    )
    _check_references(doc)
    return doc


def _entries(body: dict[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each entry of a list, without the computed fields; refuses what is not an object."""
    items = body[key]
    if not isinstance(items, list):
        raise InvalidInput(f"{key}: expected a list of objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidInput(f"{key}[{i}]: expected an object")
        yield i, {k: v for k, v in item.items() if k not in COMPUTED[key]}


@contextmanager
def _entry(where: str) -> Iterator[None]:
    """Name the entry (and field) in the error of whatever is checked inside."""
    try:
        yield
    except PolicyError as e:
        raise type(e)(f"{where}: {e}") from None


def _fields(where: str, entry: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s): {', '.join(unknown)}")
    missing = sorted(required - set(entry))
    if missing:
        raise InvalidInput(f"{where}: missing field(s): {', '.join(missing)}")


def _vm(where: str, entry: dict[str, Any]) -> Vm:
    _fields(where, entry, {"name", "port", "mac", "ips", "switch"}, {"name", "port"})
    with _entry(f"{where}.name"):
        name = validate_vm_name(entry["name"])
    with _entry(f"{where}.port"):
        port = validate_port_name(entry["port"])
    with _entry(f"{where}.mac"):
        mac = validate_mac(entry.get("mac"))
    with _entry(f"{where}.ips"):
        ips = validate_ips(entry.get("ips"))
    with _entry(f"{where}.switch"):
        switch = validate_switch(entry.get("switch"))
    return Vm(name, port, mac, ips, switch=switch)


def _group(where: str, entry: dict[str, Any]) -> Group:
    _fields(where, entry, {"name", "members"}, {"name", "members"})
    with _entry(f"{where}.name"):
        name = validate_vm_name(entry["name"], "group")
    with _entry(f"{where}.members"):
        return group_from_body(name, {"members": entry["members"]})


def _network(where: str, entry: dict[str, Any]) -> Network:
    _fields(where, entry, {"name", "port", "cidrs"}, {"name", "port", "cidrs"})
    with _entry(f"{where}.name"):
        name = validate_vm_name(entry["name"], "network")
    with _entry(f"{where}.port"):
        port = validate_port_name(entry["port"])
    with _entry(f"{where}.cidrs"):
        cidrs = validate_cidrs(entry["cidrs"])
    return Network(name, port, cidrs)


def _pair(where: str, entry: dict[str, Any]) -> PairRequest:
    # pair_request_from_body names the field in its messages and knows every pair option.
    with _entry(where):
        return pair_request_from_body(entry)


def _fabric(items: Any) -> dict[int, str]:
    if not isinstance(items, list):
        raise InvalidInput('switches: expected a list like [{"dpid": ..., "fabric_port": ...}]')
    out: dict[int, str] = {}
    for i, item in enumerate(items):
        where = f"switches[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: expected an object")
        _fields(where, item, {"dpid", "fabric_port"}, {"dpid", "fabric_port"})
        with _entry(f"{where}.dpid"):
            dpid = validate_dpid(item["dpid"])
        if dpid in out:
            raise Conflict(f"{where}.dpid: switch {dpid_str(dpid)} is listed twice")
        with _entry(f"{where}.fabric_port"):
            port = switch_settings_from_body({"fabric_port": item["fabric_port"]})
        if port is not None:  # null: no setting of its own, as if not listed
            out[dpid] = port
    return out


def _check_references(doc: Document) -> None:
    """Names unique across VMs, groups and networks (one namespace), ports not shared by a
    VM and a network, groups listing VMs of the document, pairs naming things in it, and
    no pair twice."""
    seen: dict[str, str] = {}
    lists = (("vms", "vm", doc.vms), ("groups", "group", doc.groups),
             ("networks", "network", doc.networks))  # fmt: skip
    for key, kind, things in lists:
        for i, thing in enumerate(things):
            where = f"{key}[{i}]"
            if thing.name in seen:
                raise Conflict(f"{where}.name: {thing.name!r} is also {seen[thing.name]}'s name")
            seen[thing.name] = where
            doc.kinds[thing.name] = kind
    vm_ports = {vm.port: i for i, vm in enumerate(doc.vms)}
    for i, net in enumerate(doc.networks):
        if net.port in vm_ports:
            raise Conflict(
                f"networks[{i}].port: {net.port!r} is the port of vms[{vm_ports[net.port]}]"
            )
    vms = {vm.name for vm in doc.vms}
    for i, group in enumerate(doc.groups):
        for member in group.members:
            if member not in vms:
                raise NotFound(
                    f"groups[{i}].members: no VM named {member!r} in the document (groups list VMs)"
                )
    pairs: dict[PairKey, int] = {}
    for i, req in enumerate(doc.pairs):
        for side in ("initiator", "responder"):
            name = getattr(req, side)
            if doc.kind_of(name) is None:
                raise NotFound(f"pairs[{i}].{side}: no VM, group or network named {name!r} in"
                               " the document")  # fmt: skip
        key = pair_key(req)
        if key in pairs:
            raise Conflict(f"pairs[{i}]: the same pair as pairs[{pairs[key]}]")
        pairs[key] = i


def pair_key(pair: Pair | PairRequest) -> PairKey:
    """What makes two pairs the same pair: its sides and what it allows (and whether it
    logs). A pair without the log option is a pair that does not log."""
    return (pair.initiator, pair.responder, pair.protocol, pair.ports,
            bool(getattr(pair, "log", False)))  # fmt: skip


# --- replacing the policy: one mutation, inside Firewall.change ------------------------------


def replace_policy(policy: Policy, doc: Document) -> Difference:
    """Make `policy` what `doc` says, keeping what is the same (and its id). Pure: the
    firewall calls it on its candidate copy. Deletes come first, so a document may free a
    name or a port and use it elsewhere; the order of the rest lets each step find what it
    needs (a group its members, a pair its sides)."""
    diff = Difference()
    kept = _remove_pairs(policy, doc, diff)
    _remove_things(policy, doc, diff)
    _put_vms(policy, doc, diff)
    _put_networks(policy, doc, diff)
    _put_groups(policy, doc, diff)
    for i, req in enumerate(doc.pairs):
        if pair_key(req) not in kept:
            with _entry(f"pairs[{i}]"):
                diff.added.pairs.append(policy.pair_view(policy.add_pair(req)))
    if doc.fabric is not None:
        _put_fabric(policy, doc.fabric, diff)
    return diff


def _remove_pairs(policy: Policy, doc: Document, diff: Difference) -> set[PairKey]:
    """Delete the pairs the document does not have; the keys of those it keeps. A pair whose
    side changes kind (a VM named like a group now) is not the same pair: it goes."""
    wanted = {pair_key(req) for req in doc.pairs}
    kept = set()
    for pair in list(policy.pairs.values()):
        key = pair_key(pair)
        same_sides = all(policy.kind_of(n) == doc.kind_of(n)
                         for n in (pair.initiator, pair.responder))  # fmt: skip
        if key in wanted and same_sides:
            kept.add(key)
            continue
        diff.removed.pairs.append(policy.pair_view(pair))
        policy.delete_pair(pair.id)
    return kept


def _remove_things(policy: Policy, doc: Document, diff: Difference) -> None:
    """Delete the groups, networks and VMs the document does not have (as that kind). A kept
    group first loses the members it will not have, so a VM leaving it can go."""
    for group in list(policy.groups.values()):
        if doc.kind_of(group.name) != "group":
            policy.delete_group(group.name)
            diff.removed.groups.append(group.name)
    for new in doc.groups:
        old = policy.groups.get(new.name)
        if old is not None and not set(old.members) <= set(new.members):
            kept = tuple(m for m in old.members if m in new.members)
            policy.put_group(Group(old.name, kept))
            diff.changed.groups.append(old.name)
    for net in list(policy.networks.values()):
        if doc.kind_of(net.name) != "network":
            policy.delete_network(net.name)
            diff.removed.networks.append(net.name)
    for vm in list(policy.vms.values()):
        if doc.kind_of(vm.name) != "vm":
            policy.delete_vm(vm.name)
            diff.removed.vms.append(vm.name)


def _put_vms(policy: Policy, doc: Document, diff: Difference) -> None:
    for i, vm in enumerate(doc.vms):
        old = policy.vms.get(vm.name)
        if old is not None and (old.port, old.mac, old.ips, old.switch) == (
            vm.port, vm.mac, vm.ips, vm.switch
        ):  # fmt: skip
            continue  # untouched, not even replaced by an equal VM: nothing to recompile
        with _entry(f"vms[{i}]"):
            created = policy.put_vm(vm)
        (diff.added if created else diff.changed).vms.append(vm.name)


def _put_networks(policy: Policy, doc: Document, diff: Difference) -> None:
    for i, net in enumerate(doc.networks):
        old = policy.networks.get(net.name)
        if old is not None and (old.port, old.cidrs) == (net.port, net.cidrs):
            continue
        with _entry(f"networks[{i}]"):
            created = policy.put_network(net)
        (diff.added if created else diff.changed).networks.append(net.name)


def _put_groups(policy: Policy, doc: Document, diff: Difference) -> None:
    for i, group in enumerate(doc.groups):
        old = policy.groups.get(group.name)
        if old is not None and old.members == group.members:
            continue
        with _entry(f"groups[{i}]"):
            created = policy.put_group(group)
        names = (diff.added if created else diff.changed).groups
        if group.name not in names:  # shrunk first (_remove_things): already listed
            names.append(group.name)


def _put_fabric(policy: Policy, fabric: dict[int, str], diff: Difference) -> None:
    for dpid in sorted(set(policy.fabric) - set(fabric)):
        policy.set_fabric_port(dpid, None)
        diff.removed.switches.append(dpid_str(dpid))
    for dpid, port in sorted(fabric.items()):
        old = policy.fabric.get(dpid)
        if old != port:
            policy.set_fabric_port(dpid, port)
            (diff.changed if old else diff.added).switches.append(dpid_str(dpid))
