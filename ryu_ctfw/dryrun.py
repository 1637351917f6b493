"""What a change would do, without doing it (issue 13, point 4).

`plan()` is what `Firewall.change(mutate, plan=...)` answers for `?dry_run=true`: for every
connected switch, the flows the change would add and delete there (in ovs-ofctl syntax), and
the pairs whose connections it would cut. It reads the switches and the policies it is
given and writes nothing: the dry run's candidate policy is thrown away afterwards.

The flows are compared with what the switch holds now, as the controller knows it (its
FlowSet, which the sync keeps equal to the switch's table), so the plan is the very diff the
real call sends. A switch not read back yet is compared with the compile of the policy in
force, which is what it will hold once read back. Switches that are not connected are left
out: they get the stored policy when they connect.

"delete" lists every line the switch would lose, "add" every line it would gain: a line whose
actions change is in both (old text, new text), so the two lists are exactly the difference
between `ovs-ofctl dump-flows` before and after. A line that only changes owner (its cookie,
which the text does not show: a pair sharing a line with another goes) is in neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ryu_ctfw.compiler import (
    KIND_PAIR,
    TABLE_POLICY,
    Attachment,
    Flow,
    compile_keyed,
    pair_unit_flows,
)
from ryu_ctfw.switch import dpid_str

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall
    from ryu_ctfw.policy import Policy

Key = tuple  # Flow.key: (table, priority, match)


class SwitchPlan(NamedTuple):
    """One switch's part of a plan: the lines it would gain and lose, as ovs-ofctl shows
    them."""

    dpid: int
    name: str | None
    add: list[str]
    delete: list[str]

    def view(self) -> dict[str, Any]:
        return {"dpid": dpid_str(self.dpid), "name": self.name, "add": self.add,
                "delete": self.delete}  # fmt: skip


def plan(fw: Firewall, before: Policy, after: Policy) -> dict[str, Any]:
    """{"switches": [every connected switch, by dpid: {"dpid", "name", "add", "delete"}],
    "cut": [pair views (of `before`) whose connections the change would cut]}."""
    switches = []
    cut: set[int] = set(before.pairs) - set(after.pairs)
    for sw in sorted(fw.switches.switches.values(), key=lambda s: s.dpid):
        zone = before.zones.get(sw.dpid)
        if not sw.connected or zone is None:
            continue  # it gets the stored policy when it connects (and its zone then)
        if sw.flows is not None:
            held = sw.flows.flows()
            units = {i: sw.flows.units.get((KIND_PAIR, i), ()) for i in before.pairs}
        else:  # not read back yet: it will hold the policy in force
            was = fw.switches.attachments(sw, before)
            held = compile_keyed(before, was, zone)
            units = {i: pair_unit_flows(before, p, was, zone) for i, p in before.pairs.items()}
        will = fw.switches.attachments(sw, after)
        add, delete = flow_diff(held, compile_keyed(after, will, zone))
        switches.append(SwitchPlan(sw.dpid, sw.name, add, delete).view())
        cut |= cut_pairs(units, after, will, zone)
    return {
        "switches": switches,
        "cut": [before.pair_view(before.pairs[i]) for i in sorted(cut)],
    }


def flow_diff(held: Mapping[Key, Flow], want: Mapping[Key, Flow]) -> tuple[list[str], list[str]]:
    """(lines to gain, lines to lose) going from `held` to `want`, as ovs-ofctl shows them
    and in its order (table, then priority from the highest)."""
    return _lines(want, held), _lines(held, want)


def _lines(these: Mapping[Key, Flow], other: Mapping[Key, Flow]) -> list[str]:
    """The lines of `these` that `other` does not show: most are the very same flow in
    both, so texts are made only where they are not (a text costs far more)."""
    out = []
    for key, flow in these.items():
        there = other.get(key)
        if there != flow and (text := flow.text()) != _text(there):
            out.append((flow.table, -flow.priority, text))
    return [text for *_, text in sorted(out)]


def cut_pairs(
    held_units: Mapping[int, Iterable[Flow]],
    after: Policy,
    attached: Mapping[str, Attachment],
    zone: int,
) -> set[int]:
    """The pairs (by id) that lose one of their table-1 lines on this switch, or whose line
    would do something else: their connections' next packets meet no line of theirs (a
    member leaving a group, a VM moving or changing its MAC). A pair that only gains lines
    (a member joining), or conjunctions on a line it has, keeps every connection."""
    out = set()
    for ident, flows in held_units.items():
        pair = after.pairs.get(ident)
        if pair is None:
            out.add(ident)
            continue
        keep = {f.key: f for f in pair_unit_flows(after, pair, attached, zone)}
        if any(f.table == TABLE_POLICY and not _kept(f, keep.get(f.key)) for f in flows):
            out.add(ident)
    return out


def _kept(old: Flow, new: Flow | None) -> bool:
    """Whether `new` still does all that `old` did (it may take part in more conjunctions)."""
    return new is not None and set(old.actions) <= set(new.actions)


def _text(flow: Flow | None) -> str | None:
    return None if flow is None else flow.text()
