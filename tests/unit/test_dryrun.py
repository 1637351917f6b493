"""Dry run (issue 13, point 4): `?dry_run=true` on every mutating call answers what the
call would do (the flows to add and delete per switch, the pairs cut) and changes nothing.

The pure parts (dryrun.flow_diff, dryrun.cut_pairs) on compiled policies; the whole path
in-process (test_rest.py's Api) with a fake switch (fake_switch.py) whose flow table shows
what the real call then did."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wsgi_client
from fake_switch import FakeSwitch
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp
from test_rest import Api, make_api

from ryu_ctfw import dryrun, store, wire
from ryu_ctfw.compiler import (
    KIND_PAIR,
    Attachment,
    Flow,
    Output,
    compile_keyed,
    cookie,
    pair_unit_flows,
)
from ryu_ctfw.policy import Group, PairRequest, Policy, Vm

MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
AT = {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2), "vm3": Attachment(4, MAC3)}


def three_vms() -> Policy:
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1, ("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap3", MAC2, ("198.18.0.2",)))
    policy.put_vm(Vm("vm3", "tap4", MAC3, ("198.18.0.3",)))
    return policy


def held_units(policy: Policy) -> dict[int, tuple[Flow, ...]]:
    return {i: pair_unit_flows(policy, p, AT, 1) for i, p in policy.pairs.items()}


# --- pure: the diff and the cut ------------------------------------------------------------


def test_flow_diff_lists_a_changed_line_in_both_and_an_owner_change_in_neither() -> None:
    policy = three_vms()
    policy.add_pair(PairRequest("vm1", "vm2"))
    held = compile_keyed(policy, AT, 1)
    key, flow = next((k, f) for k, f in held.items() if f.table == 1 and f.priority == 100)
    changed = flow._replace(actions=(Output(9),))
    owner = next(f for f in held.values() if f.key != key and f.table == 1)
    want = {**held, key: changed, owner.key: owner._replace(cookie=cookie(KIND_PAIR, 99))}
    gone = next(f for f in held.values() if f.table == 0)
    del want[gone.key]
    add, delete = dryrun.flow_diff(held, want)
    assert add == [changed.text()]
    assert delete == [gone.text(), flow.text()]  # table 0 first, as dump-flows lists them
    assert dryrun.flow_diff(held, held) == ([], [])


def test_a_removed_pair_is_cut_and_a_pair_that_only_gains_lines_is_not() -> None:
    before = three_vms()
    before.put_group(Group("web", ("vm1",)))
    web = before.add_pair(PairRequest("web", "vm3", "tcp", "80")).id
    direct = before.add_pair(PairRequest("vm1", "vm2")).id
    after = before.copy()
    after.delete_pair(direct)
    after.put_group(Group("web", ("vm1", "vm2")))  # a member joins: more lines, none lost
    cut = dryrun.cut_pairs(held_units(before), after, AT, 1)
    assert cut == {direct} and web not in cut


def test_a_member_leaving_a_group_cuts_the_groups_pairs() -> None:
    before = three_vms()
    before.put_group(Group("web", ("vm1", "vm2")))
    web = before.add_pair(PairRequest("web", "vm3")).id
    other = before.add_pair(PairRequest("vm3", "vm1", "udp", "53")).id
    after = before.copy()
    after.put_group(Group("web", ("vm1",)))
    assert dryrun.cut_pairs(held_units(before), after, AT, 1) == {web}
    assert other not in dryrun.cut_pairs(held_units(before), after, AT, 1)


def test_a_vm_changing_its_mac_cuts_its_pairs() -> None:
    before = three_vms()
    ident = before.add_pair(PairRequest("vm1", "vm2")).id
    moved = {**AT, "vm2": Attachment(3, "52:54:00:00:00:22")}
    assert dryrun.cut_pairs(held_units(before), before, moved, 1) == {ident}
    assert dryrun.cut_pairs(held_units(before), before, AT, 1) == set()


# --- through the API, with a switch ----------------------------------------------------------

PORTS = {ofp.OFPP_LOCAL: "br0", 1: "eth1", 2: "tap2", 4: "tap4", 5: "tap5", 6: "tap6",
         9: "tap9", 10: "uplink0", 11: "uplink9"}  # fmt: skip


class World:
    def __init__(self, api: Api, switch: FakeSwitch) -> None:
        self.api, self.switch = api, switch

    def state(self) -> tuple[Any, ...]:
        """The policy (counters too), every stored byte, what the switch holds and was sent."""
        journal = store.journal_path(self.api.state_file)
        return (
            self.api.fw.policy.to_dict(),
            self.api.fw.policy.next_pair_id,
            self.api.fw.policy.next_vm_id,
            self.api.state_file.read_bytes(),
            journal.read_bytes() if journal.exists() else None,
            len(self.switch.committed),
            len(self.switch.sent),  # not a message: no read, no barrier, no bundle
            dict(self.switch.table),
        )

    def table(self) -> set[str]:
        """What the switch holds, as ovs-ofctl shows it."""
        return {wire.flow_from_raw(raw).text() for raw in self.switch.table.values()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """wsgi_client's populated policy, its VMs' MACs learned, on one connected switch."""
    api = make_api(tmp_path / "state.json")
    switch = FakeSwitch(api.fw.switches, PORTS)
    api.fw.switches.connected(switch)
    for method, path, body in wsgi_client.POPULATE:
        assert api.call(method, path, body).status_int == 201
    for name, mac in (("vm1", MAC1), ("vm2", MAC2), ("vm3", MAC3)):
        api.fw.learn_mac(name, mac)
    assert api.fw.switches.switches[1].flows is not None
    yield World(api, switch)
    for sw in api.fw.switches.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def dry(path: str) -> str:
    return path + ("&" if "?" in path else "?") + "dry_run=true"


@pytest.mark.parametrize(("method", "path", "body", "status"), wsgi_client.MUTATIONS,
                         ids=wsgi_client.MUTATION_IDS)  # fmt: skip
def test_a_dry_run_changes_nothing_and_says_exactly_what_the_call_then_does(
    world: World, method: str, path: str, body: Any, status: int
) -> None:
    before, table = world.state(), world.table()
    resp = world.api.call(method, dry(path), body)
    assert resp.status_int == 200, resp.text
    plan = resp.json
    assert world.state() == before  # store, switch, counters
    assert plan["dry_run"] is True and plan["status"] == status
    real = world.api.call(method, path, body)
    assert real.status_int == status, real.text
    assert plan["answer"] == (real.json if real.body else None)  # ids as predicted
    (sw,) = plan["switches"]
    assert sw["dpid"] == "0000000000000001" and sw["name"] == "br0"
    now = world.table()
    assert set(sw["add"]) == now - table
    assert set(sw["delete"]) == table - now
    assert len(sw["add"]) == len(set(sw["add"])) and len(sw["delete"]) == len(set(sw["delete"]))


def test_the_calls_that_change_no_flow_are_those_that_touch_no_line(world: World) -> None:
    """The table above means something: every call changes flows but those whose subject
    is in no line here (groups no pair uses, fabric ports with no VM of another host)."""
    still = []
    for method, path, body, _ in wsgi_client.MUTATIONS:
        (sw,) = world.api.call(method, dry(path), body).json["switches"]
        if not (sw["add"] or sw["delete"]):
            still.append(f"{method} {path}")
    assert still == [
        "PUT /groups/grp9", "PUT /groups/web", "DELETE /groups/web",
        "PUT /switches/0000000000000001", "PUT /switches/00005254006084FF",
    ]  # fmt: skip


def test_deleting_a_pair_names_it_as_cut(world: World) -> None:
    plan = world.api.call("DELETE", dry("/pairs/1")).json
    assert [p["id"] for p in plan["cut"]] == [1]
    assert plan["cut"][0] == world.api.get_json("/pairs/1")
    # A VM changing its port cuts the pairs whose lines it is in; a new VM cuts nothing.
    moved = world.api.call("PUT", dry("/vms/vm2"), {"port": "tap6"}).json
    assert [p["id"] for p in moved["cut"]] == [1]
    assert world.api.call("PUT", dry("/vms/vm9"), {"port": "tap9"}).json["cut"] == []


def test_a_group_losing_a_member_cuts_its_pairs(world: World) -> None:
    api = world.api
    assert api.call("PUT", "/groups/web", {"members": ["vm1", "vm3"]}).status_int == 200
    body = {"initiator": "web", "responder": "vm2", "protocol": "tcp", "ports": "5432"}
    ident = api.call("POST", "/pairs", body).json["id"]
    plan = api.call("PUT", dry("/groups/web"), {"members": ["vm1"]}).json
    assert [p["id"] for p in plan["cut"]] == [ident]
    grow = api.call("PUT", dry("/groups/web"), {"members": ["vm1", "vm3", "vm2"]}).json
    assert grow["cut"] == [] and grow["switches"][0]["add"]


BAD_CALLS = [
    ("PUT", "/vms/vm9", {"port": "tap2"}),  # 409: vm1's port
    ("PUT", "/vms/-x", {"port": "tap9"}),  # 400
    ("DELETE", "/vms/vm1", None),  # 409: in a group and a pair
    ("DELETE", "/vms/nope", None),  # 404
    ("PUT", "/groups/g", {"members": ["nope"]}),  # 404
    ("DELETE", "/networks/nope", None),  # 404
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}),  # 409: exists
    ("POST", "/pairs", {"initiator": "vm1"}),  # 400
    ("DELETE", "/pairs/77", None),  # 404
    ("PUT", "/switches/xyz", {"fabric_port": "eth1"}),  # 400
    ("PUT", "/policy", {"vms": []}),  # 400
    ("PUT", "/vms/vm9", b"{not json"),  # 400
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_CALLS)
def test_a_dry_run_of_a_bad_call_answers_what_the_call_answers(
    world: World, method: str, path: str, body: Any
) -> None:
    before = world.state()
    got = world.api.call(method, dry(path), body)
    assert 400 <= got.status_int < 500
    assert world.state() == before
    real = world.api.call(method, path, body)
    assert (got.status_int, got.json) == (real.status_int, real.json)
    assert world.state() == before


@pytest.mark.parametrize("value", ["yes", "", "2"])
def test_a_bad_dry_run_value_or_another_parameter_is_400(world: World, value: str) -> None:
    before = world.state()
    assert world.api.call("DELETE", f"/pairs/1?dry_run={value}").status_int == 400
    assert world.api.call("DELETE", "/pairs/1?dryrun=true").status_int == 400
    assert world.state() == before


def test_a_switch_not_read_back_is_compared_with_the_policy_in_force(world: World) -> None:
    sw = world.api.fw.switches.switches[1]
    body = {"initiator": "vm2", "responder": "vm3"}
    with_flows = world.api.call("POST", dry("/pairs"), body).json
    flows, sw.flows = sw.flows, None
    try:
        assert world.api.call("POST", dry("/pairs"), body).json == with_flows
    finally:
        sw.flows = flows


def test_a_disconnected_switch_is_left_out(world: World) -> None:
    sw = world.api.fw.switches.switches[1]
    sw.dp, dp = None, sw.dp
    try:
        plan = world.api.call("DELETE", dry("/pairs/1")).json
    finally:
        sw.dp = dp
    assert plan["switches"] == [] and [p["id"] for p in plan["cut"]] == [1]


def test_plan_is_read_only_on_the_policies_it_is_given(world: World) -> None:
    fw = world.api.fw
    before = fw.policy
    after = before.copy()
    after.put_vm(dataclasses.replace(before.vms["vm2"], ips=("198.18.0.22",)))
    frozen = (before.to_dict(), after.to_dict())
    plan = dryrun.plan(fw, before, after)
    assert (before.to_dict(), after.to_dict()) == frozen
    assert plan["switches"][0]["add"] and plan["cut"] == []


def test_a_fabric_port_set_on_a_vms_port_is_planned_by_the_candidates_setting(
    world: World,
) -> None:
    """A VM whose port becomes the fabric port is no longer there: the plan places VMs by
    the settings of the change, not by those in force."""
    api = world.api
    assert (
        api.call("PUT", "/vms/vm9", {"port": "eth1", "mac": "52:54:00:00:00:09"}).status_int == 201
    )
    ident = api.call("POST", "/pairs", {"initiator": "vm9", "responder": "vm2"}).json["id"]
    before = world.table()
    plan = api.call("PUT", dry("/switches/0000000000000001"), {"fabric_port": "eth1"}).json
    assert [p["id"] for p in plan["cut"]] == [ident]
    assert api.call("PUT", "/switches/0000000000000001", {"fabric_port": "eth1"}).status_int == 200
    (sw,) = plan["switches"]
    now = world.table()
    assert sw["delete"] and set(sw["delete"]) == before - now
    assert set(sw["add"]) == now - before
