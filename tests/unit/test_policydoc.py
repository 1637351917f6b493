"""The policy as one document (issue 13, point 5): GET /policy exports it, PUT /policy
replaces the whole policy in one change. Driven in-process (test_rest.py's Api) with a fake
switch connected (fake_switch.py), so "no flow-mod" is what the switch was sent."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_switch import FakeSwitch
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp
from test_rest import Api, assert_error, make_api

from ryu_ctfw import policydoc, store
from ryu_ctfw.policy import InvalidInput, Policy

MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
PORTS = {ofp.OFPP_LOCAL: "br0", 2: "tap2", 3: "tap3", 4: "tap4", 5: "tap5", 9: "up0"}
DPID = "0000000000000001"


class World:
    def __init__(self, api: Api, switch: FakeSwitch) -> None:
        self.api, self.switch = api, switch

    def state(self) -> tuple[Any, ...]:
        """Everything a change could touch: the policy (ids and counters too), every byte
        stored, and what the switch was sent and holds."""
        journal = store.journal_path(self.api.state_file)
        return (
            self.api.fw.policy.to_dict(),
            self.api.state_file.read_bytes() if self.api.state_file.exists() else None,
            journal.read_bytes() if journal.exists() else None,
            len(self.switch.committed),
            len(self.switch.sent),  # not a message: no read, no barrier, no bundle
            dict(self.switch.table),
        )

    def put(self, doc: Any, query: str = "") -> Any:
        resp = self.api.call("PUT", f"/policy{query}", doc)
        assert resp.status_int == 200, resp.text
        return resp.json


def settle(until: Any) -> None:
    for _ in range(300):
        if until():
            return
        hub.sleep(0.01)
    raise AssertionError("the switch was not brought in sync")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """vm1 (tap2), vm2 (tap3), vm3 (tap4), group web = [vm1, vm3], network outside on up0,
    pairs vm1 -> vm2, web -> outside udp/53; one switch connected with those ports."""
    api = make_api(tmp_path / "state.json")
    switch = FakeSwitch(api.fw.switches, PORTS)
    api.fw.switches.connected(switch)
    settle(lambda: api.fw.switches.switches[1].flows is not None)
    calls = [
        ("PUT", "/vms/vm1", {"port": "tap2", "mac": MAC1, "ips": ["198.18.0.1"]}),
        ("PUT", "/vms/vm2", {"port": "tap3", "mac": MAC2, "ips": ["198.18.0.2"]}),
        ("PUT", "/vms/vm3", {"port": "tap4", "mac": MAC3, "ips": ["198.18.0.3"]}),
        ("PUT", "/groups/web", {"members": ["vm1", "vm3"]}),
        ("PUT", "/networks/outside", {"port": "up0", "cidrs": ["198.19.0.0/24"]}),
        ("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}),
        ("POST", "/pairs", {"initiator": "web", "responder": "outside", "protocol": "udp",
                            "ports": "53"}),
        ("PUT", "/switches/00000000000000aa", {"fabric_port": "eth1"}),
    ]  # fmt: skip
    for method, path, body in calls:
        resp = api.call(method, path, body)
        assert resp.status_int in (200, 201), resp.text
    yield World(api, switch)
    for sw in api.fw.switches.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def empty_difference() -> dict[str, Any]:
    section = {"vms": [], "groups": [], "networks": [], "pairs": [], "switches": []}
    return {"added": section, "changed": section, "removed": section}


# --- export ----------------------------------------------------------------------------------


def test_export_holds_what_the_list_endpoints_answer(world: World) -> None:
    api = world.api
    doc = api.get_json("/policy")
    assert doc == {
        "vms": api.get_json("/vms")["vms"],
        "groups": api.get_json("/groups")["groups"],
        "networks": api.get_json("/networks")["networks"],
        "pairs": api.get_json("/pairs")["pairs"],
        "switches": [{"dpid": "00000000000000aa", "fabric_port": "eth1"}],
    }
    assert [v["ofport"] for v in doc["vms"]] == [2, 3, 4]  # computed fields are shown


# --- apply: no-op, idempotent, ids kept -------------------------------------------------------


def test_applying_the_export_changes_nothing_and_sends_no_flow_mod(world: World) -> None:
    before = world.state()
    assert world.put(world.api.get_json("/policy")) == empty_difference()
    assert world.state() == before


def test_a_document_without_the_computed_fields_is_the_same_policy(world: World) -> None:
    doc = world.api.get_json("/policy")
    for vm in doc["vms"]:
        for key in ("id", "dpid", "ofport", "ambiguous", "learned_mac"):
            del vm[key]
    for pair in doc["pairs"]:
        for key in ("id", "initiator_kind", "responder_kind"):
            del pair[key]
    before = world.state()
    assert world.put(doc) == empty_difference()
    assert world.state() == before


def test_wrong_computed_fields_are_ignored(world: World) -> None:
    doc = world.api.get_json("/policy")
    doc["vms"][0].update(id=999, dpid="00000000000000ff", ofport=77, ambiguous=True)
    doc["pairs"][0].update(id=42, initiator_kind="group")
    before = world.state()
    assert world.put(doc) == empty_difference()
    assert world.state() == before


def test_a_change_keeps_the_ids_of_what_stays_and_applying_twice_is_once(world: World) -> None:
    api = world.api
    ids = {v["name"]: v["id"] for v in api.get_json("/vms")["vms"]}
    doc = api.get_json("/policy")
    doc["vms"].append({"name": "vm4", "port": "tap5", "mac": "52:54:00:00:00:04"})
    doc["vms"][1]["ips"] = ["198.18.0.22"]  # vm2 changed
    doc["pairs"] = [*doc["pairs"][1:], {"initiator": "vm4", "responder": "vm1"}]
    next_pair, next_id = api.fw.policy.next_pair_id, api.fw.policy.next_vm_id
    answer = world.put(doc)
    assert answer["added"]["vms"] == ["vm4"]
    assert answer["changed"]["vms"] == ["vm2"]
    assert [p["id"] for p in answer["removed"]["pairs"]] == [1]
    assert [(p["id"], p["initiator"]) for p in answer["added"]["pairs"]] == [(next_pair, "vm4")]
    vms = {v["name"]: v for v in api.get_json("/vms")["vms"]}
    assert {n: vms[n]["id"] for n in ids} == ids
    assert vms["vm4"]["id"] == next_id
    assert [p["id"] for p in api.get_json("/pairs")["pairs"]] == [2, next_pair]
    assert api.get_json("/groups")["groups"][0]["id"] == doc["groups"][0]["id"]
    # The same document again: nothing to do.
    before = world.state()
    assert world.put(doc) == empty_difference()
    assert world.state() == before


def test_the_whole_policy_is_replaced_in_one_change_and_one_bundle(world: World) -> None:
    api = world.api
    commits = len(world.switch.committed)
    doc = {
        "vms": [{"name": "vm2", "port": "tap3", "mac": MAC2, "ips": ["198.18.0.2"]},
                {"name": "web", "port": "tap2", "mac": MAC1}],
        "groups": [{"name": "vm1", "members": ["web"]}],  # the names change kind
        "networks": [],
        "pairs": [{"initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": 22}],
        "switches": [],
    }  # fmt: skip
    answer = world.put(doc)
    assert answer["removed"]["vms"] == ["vm1", "vm3"]
    assert answer["removed"]["groups"] == ["web"]
    assert answer["removed"]["networks"] == ["outside"]
    assert answer["removed"]["switches"] == ["00000000000000aa"]
    assert [p["id"] for p in answer["removed"]["pairs"]] == [1, 2]
    assert answer["added"]["vms"] == ["web"] and answer["added"]["groups"] == ["vm1"]
    (pair,) = answer["added"]["pairs"]
    assert (pair["initiator_kind"], pair["ports"]) == ("group", "22")
    assert len(world.switch.committed) == commits + 1  # one atomic bundle
    exported = api.get_json("/policy")
    assert [v["name"] for v in exported["vms"]] == ["vm2", "web"]
    assert exported["switches"] == []
    assert store.load(api.state_file).to_dict() == api.fw.policy.to_dict()


def test_a_member_leaving_a_group_and_the_policy_in_one_document(world: World) -> None:
    doc = world.api.get_json("/policy")
    doc["vms"] = [v for v in doc["vms"] if v["name"] != "vm3"]
    doc["groups"][0]["members"] = ["vm1"]
    answer = world.put(doc)
    assert answer["removed"]["vms"] == ["vm3"]
    assert answer["changed"]["groups"] == ["web"]
    assert world.api.get_json("/groups/web")["members"] == ["vm1"]


def test_switches_left_out_keeps_the_settings(world: World) -> None:
    doc = world.api.get_json("/policy")
    del doc["switches"]
    before = world.state()
    assert world.put(doc) == empty_difference()
    assert world.state() == before
    doc["switches"] = [{"dpid": "00000000000000AA", "fabric_port": "eth2"}]
    assert world.put(doc)["changed"]["switches"] == ["00000000000000aa"]
    assert world.api.fw.policy.fabric == {0xAA: "eth2"}


def test_a_dry_run_answers_the_difference_and_the_plan_and_changes_nothing(world: World) -> None:
    doc = world.api.get_json("/policy")
    doc["pairs"] = [*doc["pairs"][:1], {"initiator": "vm2", "responder": "vm3"}]
    before = world.state()
    dry = world.put(doc, "?dry_run=true")
    assert world.state() == before
    assert dry["dry_run"] is True and dry["status"] == 200
    assert [p["id"] for p in dry["cut"]] == [2]
    (sw,) = dry["switches"]
    assert sw["dpid"] == DPID and sw["add"] and sw["delete"]
    assert world.put(doc) == dry["answer"]  # the real call does what the dry run said


# --- bad documents: a clear error, and nothing changed --------------------------------------


def _doc(world: World) -> dict[str, Any]:
    return world.api.get_json("/policy")


BAD: list[tuple[str, Any, int, str]] = [
    ("not an object", lambda d: [d], 400, "JSON object"),
    ("unknown key", lambda d: {**d, "vm": []}, 400, "unknown field(s) in the policy document: vm"),
    ("missing list", lambda d: {k: v for k, v in d.items() if k != "pairs"}, 400,
     "missing field: pairs"),
    ("list not a list", lambda d: {**d, "groups": {}}, 400, "groups: expected a list"),
    ("entry not an object", lambda d: {**d, "vms": [*d["vms"], "vm9"]}, 400, "vms[3]: expected"),
    ("bad mac", lambda d: _set(d, "vms", 2, mac="01:00:00:00:00:01"), 400, "vms[2].mac: invalid"),
    ("bad ip", lambda d: _set(d, "vms", 1, ips=["198.18.0.300"]), 400, "vms[1].ips: invalid"),
    ("bad port", lambda d: _set(d, "vms", 0, port="a b"), 400, "vms[0].port: invalid"),
    ("bad name", lambda d: _set(d, "vms", 0, name="-x"), 400, "vms[0].name: invalid"),
    ("unknown field", lambda d: _set(d, "vms", 0, colour="red"), 400,
     "vms[0]: unknown field(s): colour"),
    ("no port", lambda d: _drop(d, "vms", 1, "port"), 400, "vms[1]: missing field(s): port"),
    ("bad cidr", lambda d: _set(d, "networks", 0, cidrs=["198.19.0.1/24"]), 400,
     "networks[0].cidrs: invalid"),
    ("bad members", lambda d: _set(d, "groups", 0, members="vm1"), 400,
     "groups[0].members: invalid"),
    ("bad protocol", lambda d: _set(d, "pairs", 1, protocol="sctp"), 400,
     "pairs[1]: invalid protocol"),
    ("bad dpid", lambda d: {**d, "switches": [{"dpid": "12", "fabric_port": "e"}]}, 400,
     "switches[0].dpid: invalid"),
    ("member unknown", lambda d: _set(d, "groups", 0, members=["vm1", "vm9"]), 404,
     "groups[0].members: no VM named 'vm9'"),
    ("side unknown", lambda d: _set(d, "pairs", 0, responder="vm9"), 404,
     "pairs[0].responder: no VM, group or network named 'vm9'"),
    ("name twice", lambda d: _set(d, "groups", 0, name="vm2"), 409,
     "groups[0].name: 'vm2' is also vms[1]'s name"),
    ("pair twice", lambda d: {**d, "pairs": [*d["pairs"], d["pairs"][0]]}, 409,
     "pairs[2]: the same pair as pairs[0]"),
    ("port twice", lambda d: _set(d, "vms", 2, port="tap3"), 409,
     "vms[2]: port 'tap3' already belongs to VM 'vm2'"),
    ("network on a VM port", lambda d: _set(d, "networks", 0, port="tap2"), 409,
     "networks[0].port: 'tap2' is the port of vms[0]"),
    ("mac twice", lambda d: _set(d, "vms", 2, mac=MAC1), 409, "vms[2]: MAC 52:54:00:00:00:01"),
    ("self pair", lambda d: _set(d, "pairs", 0, responder="vm1"), 400,
     "pairs[0]: a VM cannot be paired with itself"),
]  # fmt: skip


def _set(doc: dict[str, Any], key: str, i: int, **fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc[key][i].update(fields)
    return doc


def _drop(doc: dict[str, Any], key: str, i: int, field: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    del doc[key][i][field]
    return doc


@pytest.mark.parametrize(("make", "status", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
@pytest.mark.parametrize("query", ["", "?dry_run=true"])
def test_a_bad_document_is_refused_naming_the_entry_and_changes_nothing(
    world: World, make: Any, status: int, message: str, query: str
) -> None:
    before = world.state()
    error = assert_error(world.api.call("PUT", f"/policy{query}", make(_doc(world))), status)
    assert message in error
    assert world.state() == before


def test_parse_alone_refuses_before_looking_at_the_policy() -> None:
    with pytest.raises(InvalidInput, match=r"vms\[0\]\.mac"):
        policydoc.parse({"vms": [{"name": "a", "port": "p", "mac": "x"}], "groups": [],
                         "networks": [], "pairs": []})  # fmt: skip


def test_replace_policy_is_pure_and_matches_pairs_by_what_they_allow() -> None:
    policy = Policy()
    doc = policydoc.parse({
        "vms": [{"name": "a", "port": "p1"}, {"name": "b", "port": "p2"}],
        "groups": [], "networks": [],
        "pairs": [{"initiator": "a", "responder": "b", "protocol": "tcp", "ports": "22"},
                  {"initiator": "a", "responder": "b", "protocol": "tcp", "ports": 80}],
    })  # fmt: skip
    first = policydoc.replace_policy(policy, doc)
    assert [p["id"] for p in first.added.pairs] == [1, 2]
    again = policydoc.replace_policy(policy, doc)
    assert again == policydoc.Difference()
    assert sorted(policy.pairs) == [1, 2] and policy.next_pair_id == 3


def test_the_openapi_document_is_what_parse_accepts() -> None:
    from ryu_ctfw.openapi import SCHEMAS

    schema = SCHEMAS["PolicyDocument"]
    assert set(schema["properties"]) == {*policydoc.LISTS, *policydoc.OPTIONAL}
    assert schema["required"] == list(policydoc.LISTS)
    assert schema["additionalProperties"] is False
    assert set(SCHEMAS["SwitchSetting"]["properties"]) == {"dpid", "fabric_port"}
    assert set(SCHEMAS["PolicyChanges"]["properties"]) == {
        f.name for f in dataclasses.fields(policydoc.Section)
    }


def test_a_document_larger_than_other_bodies_is_taken_up_to_its_own_limit(world: World) -> None:
    from ryu_ctfw import rest

    doc = world.api.get_json("/policy")
    doc["vms"] += [{"name": f"x{i}", "port": f"x{i}", "ips": [f"198.18.{i >> 8}.{i & 255}"]}
                   for i in range(1500)]  # fmt: skip
    body = json.dumps(doc).encode()
    assert rest.MAX_BODY < len(body) < rest.MAX_POLICY_BODY
    answer = world.put(body)
    assert len(answer["added"]["vms"]) == 1500
    before = world.state()
    huge = b'{"vms": [' + b" " * rest.MAX_POLICY_BODY + b"]}"
    assert "larger than" in assert_error(world.api.call("PUT", "/policy", huge), 413)
    assert world.state() == before
