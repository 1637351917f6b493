"""The flows one switch should hold, kept per unit so a change costs what it touches.

A unit is a part of the policy that makes flows on its own: the base lines, one VM's port,
one network's port, one pair. `FlowSet.update()` takes the policy, the attachments and the
zone, recompiles only the units whose inputs changed since the last update (VMs, groups,
networks and pairs are immutable and policies are shallow copies, so "changed" is mostly
an identity test), and returns the flows to add or replace and the flows to delete. A
REST call that adds one pair thus
compiles and compares that pair's half dozen flows, not the whole switch.

Two units can make a flow with the same OpenFlow identity (two pairs between the same VMs
whose port ranges share a prefix block). The switch holds one flow per identity, so each
identity keeps the list of units that make it and the first unit in compile order (base,
VMs by name, networks by name, pairs by id, as `compile_keyed` does) decides the flow's
cookie; when that unit goes, the next one takes the flow over instead of the flow
disappearing. A conjunction clause is the exception: two group pairs that share a member
share its clause line, which then carries both conjunction actions (compiler.merge_clauses).

Pure: no Ryu, no I/O. tests/unit/test_flowset.py checks that any sequence of updates ends
with exactly `compile_keyed` of the final inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ryu_ctfw.compiler import (
    KIND_BASE,
    KIND_NETWORK,
    KIND_PAIR,
    KIND_VM,
    Attachment,
    Flow,
    base_flows,
    is_clause,
    merge_clauses,
    network_port_flows,
    pair_unit_flows,
    vm_port_flows,
)
from ryu_ctfw.policy import Policy

# (KIND_BASE, 0) | (KIND_VM, vm name) | (KIND_NETWORK, network name) | (KIND_PAIR, pair id)
Unit = tuple[int, str | int]
Key = tuple  # Flow.key: (table, priority, match)
BASE: Unit = (KIND_BASE, 0)


@dataclass
class Diff:
    """What a switch needs sent to go from the old flow set to the new one."""

    add: list[Flow] = field(default_factory=list)  # new flows and replacements
    delete: list[Flow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)


@dataclass
class FlowSet:
    """One switch's flows by unit, and the inputs they were compiled from."""

    units: dict[Unit, tuple[Flow, ...]] = field(default_factory=dict)
    # Every unit making a flow with this identity, and its flow, first in compile order.
    owners: dict[Key, list[tuple[Unit, Flow]]] = field(default_factory=dict)
    # The inputs of the last update: what the next one is compared with.
    policy: Policy | None = None
    attached: Mapping[str, Attachment] = field(default_factory=dict)
    zone: int | None = None
    # Rises with every unit replaced: what is derived from the set (the switch side's
    # index by bytes) knows when to be made again.
    generation: int = 0

    def flow(self, key: Key) -> Flow | None:
        """The flow the switch should hold for `key`: its first owner's."""
        owners = self.owners.get(key)
        if not owners:
            return None
        return owners[0][1] if len(owners) == 1 else _shared(owners)

    def flows(self) -> dict[Key, Flow]:
        return {
            key: owners[0][1] if len(owners) == 1 else _shared(owners)
            for key, owners in self.owners.items()
        }

    @classmethod
    def build(
        cls,
        policy: Policy,
        attached: Mapping[str, Attachment],
        zone: int,
        pause: Callable[[], object] = lambda: None,
    ) -> FlowSet:
        """The whole set at once (a switch connecting): `update` from nothing, minus the
        bookkeeping of what changed, which is everything. `pause` is called every few
        hundred units (the switch side lets its network I/O run there)."""
        fs = cls(policy=policy, attached=dict(attached), zone=zone)
        owners = fs.owners
        for n, unit in enumerate((BASE, *_all_units(policy))):  # compile order: append keeps it
            if n % 256 == 255:
                pause()
            flows = _unit_flows(unit, policy, attached, zone)
            if not flows:
                continue
            fs.units[unit] = flows
            for f in flows:
                key = f.key
                have = owners.get(key)
                if have is None:
                    owners[key] = [(unit, f)]
                elif have[-1][0] != unit:
                    have.append((unit, f))
        return fs

    def update(self, policy: Policy, attached: Mapping[str, Attachment], zone: int) -> Diff:
        """Bring the set to these inputs; returns what changed."""
        if zone != self.zone or self.policy is None:
            units: Iterable[Unit] = [BASE, *self.units, *_all_units(policy)]
        else:
            units = self._touched(policy, attached)
        before: dict[Key, Flow | None] = {}
        for unit in dict.fromkeys(units):  # once each, in order
            flows = _unit_flows(unit, policy, attached, zone)
            old = self.units.get(unit, ())
            if flows is old:
                continue  # the memoized compile gave back the very same flows
            for f in (*old, *flows):
                if f.key not in before:
                    before[f.key] = self.flow(f.key)
            self._replace(unit, old, flows)
        self.policy, self.attached, self.zone = policy, dict(attached), zone
        diff = Diff()
        for key, old_flow in before.items():
            new_flow = self.flow(key)
            if new_flow is None:
                if old_flow is not None:
                    diff.delete.append(old_flow)
            elif new_flow is not old_flow and new_flow != old_flow:
                diff.add.append(new_flow)
        return diff

    def _touched(self, policy: Policy, attached: Mapping[str, Attachment]) -> list[Unit]:
        old_policy, old_attached = self.policy, self.attached
        assert old_policy is not None

        def changed(old: Mapping, new: Mapping, where: bool = True) -> set:
            return {
                name
                for name in old.keys() | new.keys()
                if old.get(name) is not new.get(name)
                or (where and old_attached.get(name) != attached.get(name))
            }

        vms = changed(old_policy.vms, policy.vms)
        networks = changed(old_policy.networks, policy.networks)
        groups = changed(old_policy.groups, policy.groups, where=False)
        # A group pair's flows depend on its members' places and MACs as well.
        groups |= {g.name for g in policy.groups.values() if vms.intersection(g.members)}
        sides = vms | networks | groups
        pairs = changed(old_policy.pairs, policy.pairs, where=False)
        if sides:  # a pair's flows depend on where its sides are and which MACs they have
            pairs |= {
                p.id for p in policy.pairs.values() if p.initiator in sides or p.responder in sides
            }
        return [
            *((KIND_VM, n) for n in sorted(vms)),
            *((KIND_NETWORK, n) for n in sorted(networks)),
            *((KIND_PAIR, i) for i in sorted(pairs)),
        ]

    def _replace(self, unit: Unit, old: tuple[Flow, ...], flows: tuple[Flow, ...]) -> None:
        self.generation += 1
        for key in {f.key for f in old}:
            owners = [o for o in self.owners[key] if o[0] != unit]
            if owners:
                self.owners[key] = owners
            else:
                del self.owners[key]
        for f in flows:
            owners = self.owners.setdefault(f.key, [])
            if all(u != unit for u, _ in owners):  # a unit's first flow for a key counts
                owners.append((unit, f))
                if len(owners) > 1:
                    owners.sort(key=lambda o: o[0])
        if flows:
            self.units[unit] = flows
        else:
            self.units.pop(unit, None)


def _shared(owners: list[tuple[Unit, Flow]]) -> Flow:
    """The flow several units make with one identity: the first's, or all their
    conjunction actions on one clause line."""
    first = owners[0][1]
    if not is_clause(first):
        return first
    return merge_clauses(f for _, f in owners if is_clause(f))


def _all_units(policy: Policy) -> list[Unit]:
    return [
        *((KIND_VM, n) for n in sorted(policy.vms)),
        *((KIND_NETWORK, n) for n in sorted(policy.networks)),
        *((KIND_PAIR, i) for i in sorted(policy.pairs)),
    ]


def _unit_flows(
    unit: Unit, policy: Policy, attached: Mapping[str, Attachment], zone: int
) -> tuple[Flow, ...]:
    kind, ident = unit
    if kind == KIND_BASE:
        return base_flows(zone)
    if kind == KIND_VM:
        vm, at = policy.vms.get(ident), attached.get(ident)  # type: ignore[arg-type]
        return vm_port_flows(vm, at, zone) if vm is not None and at is not None else ()
    if kind == KIND_NETWORK:
        net, at = policy.networks.get(ident), attached.get(ident)  # type: ignore[arg-type]
        return network_port_flows(net, at, zone) if net is not None and at is not None else ()
    pair = policy.pairs.get(ident)  # type: ignore[arg-type]
    return () if pair is None else pair_unit_flows(policy, pair, attached, zone)
