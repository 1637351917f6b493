"""The groups scenario's policy and its compiler-only figures (issue 11, point 5).

VMs spread over groups (VM i in group i mod groups), group pairs drawn at random with mixed
services, and how the flows grow: one group pair between two groups of N VMs against the
N x N VM pairs that allow the same, for a few N. Pure: no switch, no controller (run.py
measures the live part: bring-up, a member added, a member removed).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import statistics
from collections import Counter
from collections.abc import Mapping

from ryu_ctfw.compiler import (
    KIND_PAIR,
    KIND_VM,
    Attachment,
    compile_switch,
    cookie_kind,
    pair_unit_flows,
)
from ryu_ctfw.flowset import Diff, FlowSet
from ryu_ctfw.policy import Group, PairRequest, Policy, PolicyError, Vm

SERVICES = [
    ("tcp", "5432"),
    ("tcp", "443"),
    ("udp", "53"),
    ("icmp", None),
    ("any", None),
    ("tcp", "8000-8100"),
]
FIRST_OFPORT = 10
ZONE = 1  # the controller gives the first bridge it sees zone 1


def vm(i: int, prefix: str = "g") -> Vm:
    return Vm(
        f"{prefix}{i}",
        f"ctb{prefix}{i}",
        f"52:54:00:b1:{i >> 8:02x}:{i & 255:02x}",
        (f"198.18.{i >> 8}.{i & 255 or 254}",),
    )


def make_policy(vms: int, groups: int, pairs: int, seed: int = 1) -> Policy:
    """`vms` VMs, VM i in group i mod `groups`, `pairs` group pairs (a group may be paired
    with itself) with services drawn from SERVICES."""
    policy = Policy()
    for i in range(vms):
        policy.put_vm(vm(i))
    names = list(policy.vms)
    for k in range(groups):
        policy.put_group(Group(f"grp{k}", tuple(names[k::groups])))
    rng = random.Random(seed)
    group_names = list(policy.groups)
    assert pairs <= len(group_names) ** 2 * len(SERVICES), "more pairs than there can be"
    while len(policy.pairs) < pairs:
        protocol, ports = rng.choice(SERVICES)
        a, b = rng.choice(group_names), rng.choice(group_names)
        with contextlib.suppress(PolicyError):
            policy.add_pair(PairRequest(a, b, protocol, ports))
    return policy


def attachments(policy: Policy) -> dict[str, Attachment]:
    """Every VM on the bridge, at the ofport the bench asks for."""
    return {
        name: Attachment(FIRST_OFPORT + i, v.mac) for i, (name, v) in enumerate(policy.vms.items())
    }


def member_plan(policy: Policy, count: int, seed: int = 7) -> list[tuple[str, str]]:
    """`count` (group, VM) changes: a VM joins a group it is not in (so it is then in two)."""
    rng = random.Random(seed)
    names, groups = list(policy.vms), list(policy.groups)
    plan = []
    while len(plan) < count:
        g, v = rng.choice(groups), rng.choice(names)
        if v not in policy.groups[g].members:
            plan.append((g, v))
    return plan


def with_member(policy: Policy, group: str, member: str) -> Policy:
    after = policy.copy()
    after.put_group(Group(group, (*policy.groups[group].members, member)))
    return after


def mods(diff: Diff) -> int:
    """The flow-mods a diff costs: adds and replacements plus deletes."""
    return len(diff.add) + len(diff.delete)


def links_of(policy: Policy, group: str) -> int:
    """Distinct initiator -> responder links naming `group` (a link's pairs share lines)."""
    return len({(p.initiator, p.responder) for p in policy.pairs_of(group)})


def stats(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3g} ({min(values):.3g}-{max(values):.3g})"


def footprint(policy: Policy, attached: Mapping[str, Attachment]) -> dict[str, str]:
    """Flows by what made them, per member and per group pair, at this scale."""
    flows = compile_switch(policy, attached, ZONE)
    kinds = Counter(cookie_kind(f.cookie) for f in flows)
    per_pair = [len(pair_unit_flows(policy, p, attached, ZONE)) for p in policy.pairs.values()]
    sizes = sorted({len(g.members) for g in policy.groups.values()})
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    links = {(p.initiator, p.responder) for p in policy.pairs.values()}
    # A member's share of the pairs' lines: what adding one more member to a group costs.
    fs = FlowSet.build(policy, attached, ZONE)
    marginal = []
    for g, v in member_plan(policy, min(20, len(policy.vms)), seed=11):
        diff = fs.update(with_member(policy, g, v), attached, ZONE)
        marginal.append(mods(diff) / max(1, links_of(policy, g)))
        fs.update(policy, attached, ZONE)
    return {
        "flows at scale": str(len(flows)),
        "flows: base / VM port lines / group-pair lines (table 1)": (
            f"{len(flows) - kinds[KIND_VM] - kinds[KIND_PAIR]} / {kinds[KIND_VM]} /"
            f" {kinds[KIND_PAIR]}"
        ),
        "flows per member: its own port's lines": f"{kinds[KIND_VM] / len(policy.vms):.1f}",
        "flows per member per link of its group (member added, flow-mods / links)": stats(marginal),
        f"lines one group pair compiles to ({size}-VM groups), before sharing": stats(
            per_pair  # type: ignore[arg-type]
        ),
        "group-pair lines per link (after sharing: pairs of one link share all but their"
        " service lines)": f"{kinds[KIND_PAIR] / len(links):.0f} ({len(links)} links)",
    }


def growth(vms: int, groups: int, pairs: int) -> dict[str, str]:
    """Whole-scenario flow counts as members grow (groups and pairs fixed) and as pairs grow
    (members fixed): both linear, neither a product."""
    out = {}
    rows = []
    for scale in (4, 2, 1):
        policy = make_policy(vms // scale, groups, pairs)
        rows.append((len(policy.vms), len(compile_switch(policy, attachments(policy), ZONE))))
    (v0, f0), (v1, f1) = rows[0], rows[-1]
    out["growth: flows as members grow (same groups and pairs)"] = (
        ", ".join(f"{f} for {v} VMs" for v, f in rows) + f" ({f1 / f0:.2f}x flows for"
        f" {v1 / v0:.0f}x members)"
    )
    rows = []
    for scale in (4, 2, 1):
        policy = make_policy(vms, groups, max(1, pairs // scale))
        flows = compile_switch(policy, attachments(policy), ZONE)
        rows.append(
            (len(policy.pairs), sum(1 for f in flows if cookie_kind(f.cookie) == KIND_PAIR))
        )
    out["growth: group-pair lines as group pairs grow (same members)"] = ", ".join(
        f"{f} for {p} pairs" for p, f in rows
    )
    return out


def one_pair_costs(n: int) -> dict[str, int]:
    """Table-1 lines for "every VM of a (n VMs) may open tcp/5432 to every VM of b (n VMs)",
    as one group pair and as n x n VM pairs, and what one more member and one more service
    (udp/53) add to each, measured as flow-mods by the flow set (VM port lines, the same for
    both, left out)."""
    base = Policy()
    for i in range(2 * n + 1):  # the last VM joins `a` below
        base.put_vm(vm(i, "s"))
    names = list(base.vms)
    a, b, extra = names[:n], names[n : 2 * n], names[2 * n]
    attached = attachments(base)
    plain = len(compile_switch(base, attached, ZONE))
    out: dict[str, int] = {}

    group = base.copy()
    group.put_group(Group("a", tuple(a)))
    group.put_group(Group("b", tuple(b)))
    group.add_pair(PairRequest("a", "b", "tcp", "5432"))
    fs = FlowSet.build(group, attached, ZONE)
    out["group"] = len(fs.flows()) - plain
    more = group.copy()
    more.put_group(Group("a", (*a, extra)))
    out["group member"] = mods(fs.update(more, attached, ZONE))
    fs.update(group, attached, ZONE)
    more = group.copy()
    more.add_pair(PairRequest("a", "b", "udp", "53"))
    out["group service"] = mods(fs.update(more, attached, ZONE))

    pairs = base.copy()
    for x in a:
        for y in b:
            pairs.add_pair(PairRequest(x, y, "tcp", "5432"))
    fs = FlowSet.build(pairs, attached, ZONE)
    out["vm pairs"] = len(pairs.pairs)
    out["vm"] = len(fs.flows()) - plain
    more = pairs.copy()
    for y in b:
        more.add_pair(PairRequest(extra, y, "tcp", "5432"))
    out["vm member"] = mods(fs.update(more, attached, ZONE))
    fs.update(pairs, attached, ZONE)
    more = pairs.copy()
    for x in a:
        for y in b:
            more.add_pair(PairRequest(x, y, "udp", "53"))
    out["vm service"] = mods(fs.update(more, attached, ZONE))
    return out


def scaling(sizes: tuple[int, ...]) -> dict[int, dict[str, int]]:
    """one_pair_costs for each size, with the invariants checked: the group pair's lines
    grow linearly in N with a constant cost per member, the VM pairs' as N x N."""
    costs = {n: one_pair_costs(n) for n in sizes}
    per_member = {c["group member"] for c in costs.values()}
    assert len(per_member) == 1, f"a member's cost depends on the group's size: {costs}"
    slopes = {
        (costs[m]["group"] - costs[n]["group"]) / (m - n) for n, m in itertools.pairwise(sizes)
    }
    assert len(slopes) == 1, f"a group pair's lines are not linear in its members: {costs}"
    per_vm_pair = {c["vm"] / (n * n) for n, c in costs.items()}
    assert len(per_vm_pair) == 1, f"VM pairs' lines are not N x N: {costs}"
    per_service = {c["group service"] for c in costs.values()}
    assert len(per_service) == 1, f"a service's cost depends on the groups' size: {costs}"
    return costs


def scaling_table(costs: dict[int, dict[str, int]]) -> list[str]:
    lines = [
        "| N (VMs per side) | group pair: lines | +1 member | +1 service (udp/53) |"
        " as VM pairs: pairs | lines | +1 member | +1 service | VM pairs / group pair |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, c in costs.items():
        lines.append(
            f"| {n} | {c['group']} | {c['group member']} | {c['group service']} |"
            f" {c['vm pairs']:,} | {c['vm']:,} | {c['vm member']:,} | {c['vm service']:,} |"
            f" {c['vm'] / c['group']:.0f}x |"
        )
    return lines
