"""The incremental sync (FlowSet) always ends where a full compile would, and costs what a
change touches.

After every REST change, port event or learned MAC the controller sends a switch only
`FlowSet.update()`'s Diff, never the whole flow table, so a wrong diff would leave a switch
allowing a deleted pair or dropping an allowed one until it reconnects. The reference is
`compile_keyed`: after any sequence of changes, made the way the app makes them (a shallow
`Policy.copy()` mutated, attachments recomputed as SwitchManager.attachments does), both
the FlowSet and a simulated switch that applied each Diff must hold exactly
`compile_keyed` of the current inputs, cookies included (a strict delete only removes a
flow carrying the cookie it names). Policies draw from small pools of MACs and port ranges
so that units collide on OpenFlow identities (two pairs between the same VMs whose ranges
share a prefix block, two responders with the same MAC): the case where the first owner
of a flow goes and the next one must take it over instead of the flow being deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from shapes import round_trip_policy

from ryu_ctfw import flowset
from ryu_ctfw.compiler import (
    KIND_NETWORK,
    KIND_PAIR,
    KIND_VM,
    Attachment,
    Ct,
    Flow,
    Log,
    Output,
    compile_keyed,
    cookie,
    opens_connections,
    pair_unit_flows,
)
from ryu_ctfw.flowset import BASE, Diff, FlowSet
from ryu_ctfw.policy import Group, Network, PairRequest, Policy, PolicyError, Vm

NAMES = tuple(f"vm{i}" for i in range(7))
PORTS = tuple(f"tap{i}" for i in range(7))
MACS = ("52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03")  # few: they repeat
IPS = ("198.18.0.1", "198.18.0.2", "2001:db8::1", "fd00::2")
OFPORTS = (1, 2, 3, 4, 5, 6, 65000)
ZONES = (1, 7, 65535)
# Ranges sharing prefix blocks: 8000-8003 and 8000-8005 both make 8000/0xfffc, 8000-8063
# and 8000-8100 both make 8000/0xffc0, 7999-8000 and 8000 both make 8000 exactly.
PORT_RANGES = ("8000-8003", "8000-8005", "8000-8063", "8000-8100", "7999-8000", "8000", "22")
OVERLAPS = {
    "8000-8003": "8000-8005", "8000-8005": "8000-8003", "8000-8063": "8000-8100",
    "8000-8100": "8000-8063", "7999-8000": "8000", "8000": "7999-8000",
}  # fmt: skip
SERVICES = (
    ("any", None), ("icmp", None), ("tcp", None), ("udp", None),
    *((proto, ports) for proto in ("tcp", "udp") for ports in PORT_RANGES),
)  # fmt: skip
GROUPS = ("g1", "g2")
NETWORK, UPLINK = "net", "up0"
CIDRS = ("198.19.0.0/24", "198.19.0.0/16", "2001:db8:19::/48")
STEPS = (
    "add pair", "add pair", "add overlapping pair", "add overlapping pair", "delete pair",
    "delete pair", "put vm", "delete vm", "attach", "detach", "renumber", "swap ofports",
    "learn mac", "nothing", "rollback", "zone", "put group", "put group", "delete group",
    "put network", "delete network", "add side pair", "add side pair",
)  # fmt: skip


# --- the world the FlowSet follows ---------------------------------------------------------


@dataclass
class World:
    """A policy changed as the app changes it, and one switch's ports as it reports them."""

    policy: Policy
    ports: dict[str, int]  # port name -> ofport
    zone: int = 1
    before: Policy | None = None  # the policy before the last change (a rollback's target)

    def attached(self) -> dict[str, Attachment]:
        """As SwitchManager.attachments: configured MAC, else the learned one unless a VM on
        the switch is configured with it."""
        here = [vm for vm in self.policy.vms.values() if vm.port in self.ports]
        configured = {vm.mac for vm in here if vm.mac is not None}
        out = {}
        for vm in here:
            mac = vm.mac
            if mac is None and vm.learned_mac not in configured:
                mac = vm.learned_mac
            out[vm.name] = Attachment(self.ports[vm.port], mac)
        for net in self.policy.networks.values():
            if net.port in self.ports:
                out[net.name] = Attachment(self.ports[net.port], None)
        return out

    def change(self, mutate: Callable[[Policy], object]) -> bool:
        """As Firewall.change: mutate a shallow copy; a refused change changes nothing."""
        candidate = self.policy.copy()
        try:
            mutate(candidate)
        except PolicyError:
            return False
        self.before, self.policy = self.policy, candidate
        return True

    def free_ofports(self) -> list[int]:
        return [p for p in OFPORTS if p not in self.ports.values()]


VM_SHAPES = st.builds(
    lambda port, mac, ips: (port, mac, tuple(ips)),
    st.sampled_from(PORTS),
    st.sampled_from((*MACS, None)),
    st.lists(st.sampled_from(IPS), unique=True, max_size=2),
)


def pair_ends(names: list[str]) -> st.SearchStrategy[tuple[str, str]]:
    """Initiator and responder, often the first two VMs or the first VM to any, so that
    pairs pile up between the same VMs, or lead to VMs that may share a MAC (and their flows
    overlap)."""
    return (
        st.just((names[0], names[1]))
        | st.tuples(st.just(names[0]), st.sampled_from(names))
        | st.tuples(st.sampled_from(names), st.sampled_from(names))
    )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """3-6 VMs (some without MAC), a few pairs, some VMs attached, some MACs learned."""
    count = draw(st.integers(3, 6))
    names = draw(st.permutations(NAMES))[:count]
    ports = draw(st.permutations(PORTS))[:count]
    ofports = draw(st.permutations(OFPORTS))
    policy = Policy()
    world = World(policy, {}, zone=draw(st.sampled_from(ZONES)))
    for name, port, ofport in zip(sorted(names), ports, ofports, strict=False):
        mac = draw(st.sampled_from((*MACS, None)))
        ips = tuple(draw(st.lists(st.sampled_from(IPS), unique=True, max_size=2)))
        policy.put_vm(Vm(name, port, mac, ips))
        if draw(st.integers(0, 3)) < 3:  # most VMs are attached
            world.ports[port] = ofport
            if mac is None and draw(st.booleans()):
                policy.learn_mac(name, draw(st.sampled_from(MACS)))
    for _ in range(draw(st.integers(0, 4))):
        ini, res = draw(pair_ends(sorted(policy.vms)))
        protocol, ports_ = draw(st.sampled_from(SERVICES))
        with contextlib.suppress(PolicyError):
            policy.add_pair(PairRequest(ini, res, protocol, ports_))
    # Groups sharing members, and a network, with pairs between them: conjunction clauses
    # that several pairs share.
    for group in GROUPS[: draw(st.integers(0, 2))]:
        members = draw(st.lists(st.sampled_from(sorted(policy.vms)), unique=True, max_size=4))
        policy.put_group(Group(group, tuple(members)))
    if draw(st.booleans()):
        policy.put_network(Network(NETWORK, UPLINK, (draw(st.sampled_from(CIDRS)),)))
        world.ports[UPLINK] = 100
    ends = [*policy.groups, *policy.networks, *sorted(policy.vms)[:2]]
    for _ in range(draw(st.integers(0, 4))):
        ini, res = draw(st.sampled_from(ends)), draw(st.sampled_from(ends))
        protocol, ports_ = draw(st.sampled_from(SERVICES))
        with contextlib.suppress(PolicyError):
            policy.add_pair(PairRequest(ini, res, protocol, ports_))
    return world


def step(world: World, kind: str, data: st.DataObject) -> str:
    """Apply one change of `kind` to the world; returns what was done, for the report."""
    pick = data.draw
    policy = world.policy
    names = sorted(policy.vms)
    if kind == "add pair" and len(names) >= 2:
        ini, res = pick(pair_ends(names))
        protocol, ports = pick(st.sampled_from(SERVICES))
        req = PairRequest(ini, res, protocol, ports, log=pick(st.booleans()))
        return f"add pair {req} -> {world.change(lambda p: p.add_pair(req))}"
    if kind == "add overlapping pair" and len(names) >= 2:
        # A range sharing a prefix block with an existing pair's, between the same VMs.
        ranged = [p for p in policy.pairs.values() if p.ports in OVERLAPS]
        if ranged:
            other = pick(st.sampled_from(ranged))
            ini, res, protocol = other.initiator, other.responder, other.protocol
            ports = OVERLAPS[other.ports]
        else:
            ini, res = pick(pair_ends(names))
            protocol, ports = (
                pick(st.sampled_from(("tcp", "udp"))),
                pick(st.sampled_from(sorted(OVERLAPS))),
            )
        # A logging pair's opening lines differ from a silent one's only in their actions:
        # a flow of one identity that changes hands must change its actions too.
        req = PairRequest(ini, res, protocol, ports, log=pick(st.booleans()))
        return f"add pair {req} -> {world.change(lambda p: p.add_pair(req))}"
    if kind == "delete pair" and policy.pairs:
        pid = pick(st.sampled_from(sorted(policy.pairs)))
        world.change(lambda p: p.delete_pair(pid))
        return f"delete pair {pid}"
    if kind == "put vm":
        name = pick(st.sampled_from(NAMES))
        port, mac, ips = pick(VM_SHAPES)
        if name in policy.vms and pick(st.booleans()):
            port = policy.vms[name].port  # a replacement in place, not a move
        vm = Vm(name, port, mac, ips)
        return f"put {vm} -> {world.change(lambda p: p.put_vm(vm))}"
    if kind == "delete vm" and names:
        unpaired = [n for n in names if not policy.pairs_of(n)]
        name = pick(st.sampled_from(unpaired or names))
        return f"delete vm {name} -> {world.change(lambda p: p.delete_vm(name))}"
    if kind == "attach":
        free_ports = [p for p in PORTS if p not in world.ports]
        if free_ports and world.free_ofports():
            port = pick(st.sampled_from(free_ports))
            world.ports[port] = pick(st.sampled_from(world.free_ofports()))
            return f"attach {port} as {world.ports[port]}"
    if kind == "detach" and world.ports:
        port = pick(st.sampled_from(sorted(world.ports)))
        del world.ports[port]  # a learned MAC stays with the VM, in the policy
        return f"detach {port}"
    if kind == "renumber" and world.ports and world.free_ofports():
        port = pick(st.sampled_from(sorted(world.ports)))
        world.ports[port] = pick(st.sampled_from(world.free_ofports()))
        return f"renumber {port} to {world.ports[port]}"
    if kind == "swap ofports" and len(world.ports) >= 2:
        a, b = pick(
            st.lists(st.sampled_from(sorted(world.ports)), min_size=2, max_size=2, unique=True)
        )
        world.ports[a], world.ports[b] = world.ports[b], world.ports[a]
        return f"swap ofports of {a} and {b}"
    if kind == "learn mac":
        # As Firewall.learn_mac: only for an attached VM that has no MAC known at all.
        unknown = sorted(
            n for n, at in world.attached().items()
            if n in policy.vms and at.mac is None and policy.vms[n].known_mac is None
        )  # fmt: skip
        if unknown:
            name = pick(st.sampled_from(unknown))
            mac = pick(st.sampled_from(MACS))
            world.change(lambda p: p.learn_mac(name, mac))
            return f"learn {mac} for {name}"
    if kind == "put group":
        members = pick(st.lists(st.sampled_from(names), unique=True, max_size=4))
        group = Group(pick(st.sampled_from(GROUPS)), tuple(members))
        return f"put {group} -> {world.change(lambda p: p.put_group(group))}"
    if kind == "delete group" and policy.groups:
        name = pick(st.sampled_from(sorted(policy.groups)))
        return f"delete group {name} -> {world.change(lambda p: p.delete_group(name))}"
    if kind == "put network":
        cidrs = tuple(pick(st.lists(st.sampled_from(CIDRS), unique=True, min_size=1)))
        net = Network(NETWORK, UPLINK, cidrs)
        if UPLINK not in world.ports and world.free_ofports() and pick(st.booleans()):
            world.ports[UPLINK] = pick(st.sampled_from(world.free_ofports()))
        return f"put {net} -> {world.change(lambda p: p.put_network(net))}"
    if kind == "delete network" and policy.networks:
        return f"delete network -> {world.change(lambda p: p.delete_network(NETWORK))}"
    if kind == "add side pair":
        ends = [*names, *policy.groups, *policy.networks]
        if ends:
            ini, res = pick(st.sampled_from(ends)), pick(st.sampled_from(ends))
            protocol, ports = pick(st.sampled_from(SERVICES))
            req = PairRequest(ini, res, protocol, ports)
            return f"add pair {req} -> {world.change(lambda p: p.add_pair(req))}"
    if kind == "rollback" and world.before is not None:
        # As Firewall.change when a switch refuses: back to the very same policy object.
        # Kept as `before`, so that a later rollback redoes it (pairs come back as they were).
        world.policy, world.before = world.before, world.policy
        return "roll the last change back"
    if kind == "zone":
        world.zone = pick(st.sampled_from(ZONES))
        # Sometimes with another change in the same update.
        also = pick(st.sampled_from(("nothing", *(k for k in STEPS if k != "zone"))))
        return f"zone {world.zone}, and {step(world, also, data)}"
    return "nothing"


def apply(switch: dict[tuple, Flow], diff: Diff) -> None:
    """Apply a Diff as the switch does (adds, then strict deletes by cookie), checking
    that it is minimal and that every delete names a flow the switch holds."""
    added = {f.key for f in diff.add}
    assert len(added) == len(diff.add), "a flow is added twice"
    for f in diff.add:
        assert switch.get(f.key) != f, f"re-sending a flow the switch already has: {f.text()}"
    deleted = {f.key for f in diff.delete}
    assert len(deleted) == len(diff.delete), "a flow is deleted twice"
    assert not added & deleted, "a flow is both added and deleted"
    for f in diff.add:
        switch[f.key] = f
    for f in diff.delete:
        held = switch.get(f.key)
        assert held is not None, f"deleting a flow the switch does not hold: {f.text()}"
        # DELETE_STRICT with the full cookie mask: another cookie would leave it in place.
        assert held.cookie == f.cookie, f"deleting {held.text()} by the cookie of {f.text()}"
        del switch[f.key]


def check_update(fs: FlowSet, world: World) -> Diff:
    """Update `fs` to the world and check the result and its Diff against compile_keyed."""
    attached = world.attached()
    want = compile_keyed(world.policy, attached, world.zone)
    switch = fs.flows()
    held_before = dict(switch)
    diff = fs.update(world.policy, attached, world.zone)
    apply(switch, diff)
    for f in diff.add:
        held = held_before.get(f.key)
        if held is not None and held.cookie != f.cookie:
            event("a held flow changes hands")
    assert fs.flows() == want
    assert switch == want
    if held_before == want:
        assert not diff, diff
    # The bookkeeping is what a fresh build would have: the next update starts right.
    built = FlowSet.build(world.policy, attached, world.zone)
    assert built.flows() == want
    assert fs.owners == built.owners
    return diff


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds(), st.data())
def test_any_sequence_of_updates_ends_as_the_full_compile(
    world: World, data: st.DataObject
) -> None:
    fs = FlowSet()
    check_update(fs, world)  # from nothing: the Diff is the whole set
    for _ in range(data.draw(st.integers(1, 15), label="steps")):
        kind = data.draw(st.sampled_from(STEPS))
        done = step(world, kind, data)
        note(done)
        event(kind if done != "nothing" else "nothing")
        diff = check_update(fs, world)
        if any(len(owners) > 1 for owners in fs.owners.values()):
            event("a flow made by two units")
        if done == "nothing":
            assert not diff


@pytest.mark.parametrize("zone", [1, 65535])
def test_a_build_is_the_full_compile_of_the_round_trip_policy(zone: int) -> None:
    policy, attached = round_trip_policy()
    assert FlowSet.build(policy, attached, zone).flows() == compile_keyed(policy, attached, zone)


def test_an_update_from_nothing_is_the_build() -> None:
    policy, attached = round_trip_policy()
    fs = FlowSet()
    diff = fs.update(policy, attached, 9)
    want = compile_keyed(policy, attached, 9)
    assert diff.delete == []
    assert {f.key: f for f in diff.add} == want
    assert fs.owners == FlowSet.build(policy, attached, 9).owners
    assert not fs.update(policy, attached, 9)


# --- a flow two pairs make ----------------------------------------------------------------

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"


def two_overlapping_pairs() -> tuple[Policy, dict[str, Attachment]]:
    """vm1 -> vm2 tcp 8000-8005 (id 1: 8000/0xfffc and 8004/0xfffe) and tcp 8000-8003 (id 2:
    8000/0xfffc only), so every line of pair 2 is also one of pair 1."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap1", MAC1, ("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap2", MAC2, ("198.18.0.2",)))
    policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8005"))
    policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8003"))
    return policy, {"vm1": Attachment(1, MAC1), "vm2": Attachment(2, MAC2)}


def test_the_next_pair_takes_a_shared_flow_over_when_its_owner_goes() -> None:
    policy, attached = two_overlapping_pairs()
    one, two = policy.pairs[1], policy.pairs[2]
    flows_one = pair_unit_flows(policy, one, attached, 1)
    flows_two = pair_unit_flows(policy, two, attached, 1)
    shared = {f.key for f in flows_two}
    # Pair 2's service lines (8000/0xfffc, both families, +new and +est) are pair 1's, and
    # so are the lines of their link: later fragments (2), the replies and related ICMP (3).
    assert shared < {f.key for f in flows_one} and len(shared) == 4 + 5
    services = [f for f in flows_two if f.match.tp_dst is not None]
    assert len(services) == 4 and all("tp_dst=0x1f40/0xfffc" in f.text() for f in services)
    fs = FlowSet.build(policy, attached, 1)
    for key in shared:
        assert fs.flows()[key].cookie == cookie(KIND_PAIR, 1)  # the first pair's

    candidate = policy.copy()
    candidate.delete_pair(1)
    diff = fs.update(candidate, attached, 1)
    # The shared lines stay, now pair 2's: re-added with its cookie, never deleted.
    assert {f.key for f in diff.add} == shared and len(diff.add) == len(shared)
    assert all(f.cookie == cookie(KIND_PAIR, 2) for f in diff.add)
    assert {f.key: f for f in diff.add} == {f.key: f for f in flows_two}
    # What only pair 1 made goes, named by pair 1's cookie: 8004/0xfffe, both families,
    # +new and +est.
    only_one = [f for f in flows_one if f.key not in shared]
    assert [f.match.tp_dst for f in only_one] == [(8004, 0xFFFE)] * 4
    assert set(diff.delete) == set(only_one) and len(diff.delete) == len(only_one)
    assert fs.flows() == compile_keyed(candidate, attached, 1)


def test_a_logging_pair_beside_a_silent_one_has_its_own_opening_lines() -> None:
    """Pair 2 logs, pair 1 does not, and pair 1 admits all pair 2 does: pair 2's opening
    lines are its own (one priority up), so its connections are logged from the start, and
    they stay as they are when pair 1 goes; the +est lines the two share pass over."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap1", MAC1, ("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap2", MAC2, ("198.18.0.2",)))
    policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8005"))
    logging = policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8003", log=True))
    attached = {"vm1": Attachment(1, MAC1), "vm2": Attachment(2, MAC2)}
    fs = FlowSet.build(policy, attached, 1)
    mine = pair_unit_flows(policy, logging, attached, 1)
    opening = [f for f in mine if opens_connections(f)]
    assert len(opening) == 2 and all(Log(1) in f.actions for f in opening)
    assert all(fs.flows()[f.key] == f for f in opening)  # on the switch, with their Log
    shared = [f for f in mine if not opens_connections(f) and f.cookie != fs.flows()[f.key].cookie]
    assert shared  # pair 1's, the first
    candidate = policy.copy()
    candidate.delete_pair(1)
    diff = fs.update(candidate, attached, 1)
    assert not set(opening) & set(diff.add) and not set(opening) & set(diff.delete)
    assert set(shared) <= set(diff.add)  # taken over: pair 2's cookie
    assert fs.flows() == compile_keyed(candidate, attached, 1)


def test_deleting_the_pair_that_does_not_own_the_shared_flows_changes_nothing() -> None:
    policy, attached = two_overlapping_pairs()
    fs = FlowSet.build(policy, attached, 1)
    candidate = policy.copy()
    candidate.delete_pair(2)
    assert not fs.update(candidate, attached, 1)
    assert fs.flows() == compile_keyed(candidate, attached, 1)
    # ...and putting it back (with a new id) does not either: pair 1 still comes first.
    again = candidate.copy()
    again.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8003"))
    assert not fs.update(again, attached, 1)
    assert fs.flows() == compile_keyed(again, attached, 1)


def test_a_rolled_back_pair_takes_its_shared_flows_back() -> None:
    """Firewall.change rolls a refused change back to the very same policy object: pair 1
    comes back after pair 2 took its shared lines over, and must own them again."""
    policy, attached = two_overlapping_pairs()
    fs = FlowSet.build(policy, attached, 1)
    without_one = policy.copy()
    without_one.delete_pair(1)
    fs.update(without_one, attached, 1)
    diff = fs.update(policy, attached, 1)  # the rollback
    flows_one = pair_unit_flows(policy, policy.pairs[1], attached, 1)
    assert set(diff.add) == set(flows_one) and len(diff.add) == len(flows_one)
    assert diff.delete == []
    assert fs.flows() == compile_keyed(policy, attached, 1)


def test_a_lower_pair_that_starts_making_a_held_flow_takes_it_over() -> None:
    """Pair 1 (vm1 -> vm3) makes nothing until vm3's MAC is known; vm3 turns out to have
    vm2's MAC (attachments that SwitchManager never makes, but the FlowSet must follow any),
    so pair 1's service and fragment lines towards it have the identities of pair 2's
    (vm1 -> vm2) lines, and pair 1, first in compile order, takes them over."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap1", MAC1))
    policy.put_vm(Vm("vm2", "tap2", MAC2))
    policy.put_vm(Vm("vm3", "tap3"))  # MAC to be learned
    policy.add_pair(PairRequest("vm1", "vm3", "icmp"))  # id 1
    policy.add_pair(PairRequest("vm1", "vm2", "icmp"))  # id 2
    attached = {
        "vm1": Attachment(1, MAC1),
        "vm2": Attachment(2, MAC2),
        "vm3": Attachment(3, None),
    }
    fs = FlowSet.build(policy, attached, 1)
    learned = {**attached, "vm3": Attachment(3, MAC2)}
    diff = fs.update(policy, learned, 1)
    want = compile_keyed(policy, learned, 1)
    assert fs.flows() == want
    there = {f.key for f in pair_unit_flows(policy, policy.pairs[2], attached, 1)}
    there &= {f.key for f in pair_unit_flows(policy, policy.pairs[1], learned, 1)}
    # Echo requests (+new and +est) and later fragments, both families, towards MAC2 from
    # port 1; the replies and related lines carry each link's own mark and do not collide.
    assert len(there) == 2 * 2 + 2
    assert all(want[key].cookie == cookie(KIND_PAIR, 1) for key in there)
    assert all(want[key].actions[-1] == Output(3) for key in there)  # to vm3's port
    assert there <= {f.key for f in diff.add}
    switch = compile_keyed(policy, attached, 1)
    apply(switch, diff)
    assert switch == want


# --- zones ---------------------------------------------------------------------------------


def zones_of(flow: Flow) -> set[int | None]:
    return {a.zone for a in flow.actions if isinstance(a, Ct)}


def test_a_zone_change_rebuilds_every_flow_that_names_the_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy, attached = round_trip_policy()
    fs = FlowSet.build(policy, attached, 1)
    assert any(zones_of(f) == {1} for f in fs.flows().values())
    calls = count_unit_compiles(monkeypatch)
    diff = fs.update(policy, attached, 2)
    # Every unit is compiled again: the base, each VM, each network, each pair.
    assert set(calls) == {
        BASE,
        *((KIND_VM, n) for n in policy.vms),
        *((KIND_NETWORK, n) for n in policy.networks),
        *((KIND_PAIR, i) for i in policy.pairs),
    }
    assert len(calls) == len(set(calls))
    want = compile_keyed(policy, attached, 2)
    assert diff.delete == []
    # Every flow with a ct action is re-sent, in the new zone; the rest stays as it is.
    assert {f.key for f in diff.add} == {k for k, f in want.items() if zones_of(f)}
    assert all(zones_of(f) == {2} for f in diff.add)
    assert all(zones_of(f) in (set(), {2}) for f in fs.flows().values())
    assert fs.flows() == want


# --- cost ----------------------------------------------------------------------------------


@cache
def big() -> tuple[Policy, dict[str, Attachment]]:
    """The benchmark's 500 VMs and 5,000 pairs, attached as bench/run.py attaches them."""
    # bench/ is not a package: importable from the repository root, where `make test` runs
    # `python -m pytest`; imported here so that only this test needs that.
    from bench.run import FIRST_OFPORT, make_policy

    policy = make_policy(500, 5000)
    attached = {
        name: Attachment(FIRST_OFPORT + i, vm.mac)
        for i, (name, vm) in enumerate(policy.vms.items())
    }
    return policy, attached


def count_unit_compiles(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    real = flowset._unit_flows

    def counting(unit: tuple, *args: object) -> tuple[Flow, ...]:
        calls.append(unit)
        return real(unit, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(flowset, "_unit_flows", counting)
    return calls


def test_a_one_pair_change_compiles_one_unit_whatever_the_policy_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy, attached = big()
    fs = FlowSet.build(policy, attached, 1)
    calls = count_unit_compiles(monkeypatch)

    added = policy.copy()
    pair = added.add_pair(PairRequest("b0", "b1", "tcp", "4242"))  # a service nobody has
    flows = pair_unit_flows(added, pair, attached, 1)
    diff = fs.update(added, attached, 1)
    assert calls == [(KIND_PAIR, pair.id)]
    assert diff.delete == []
    assert set(diff.add) == set(flows) and len(diff.add) == len(flows)

    calls.clear()
    removed = added.copy()
    removed.delete_pair(pair.id)
    diff = fs.update(removed, attached, 1)
    assert calls == [(KIND_PAIR, pair.id)]
    assert diff.add == []
    assert set(diff.delete) == set(flows) and len(diff.delete) == len(flows)

    calls.clear()
    assert not fs.update(removed, attached, 1)
    assert calls == []
    monkeypatch.undo()
    assert fs.flows() == compile_keyed(removed, attached, 1)
