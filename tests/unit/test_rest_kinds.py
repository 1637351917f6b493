"""The REST API for networks and groups, and pairs between any two kinds (issue 11).

Driven in-process as test_rest.py does (its Api, make_api and assert_error), from a policy
with all three kinds: vm1..vm3, the network "outside" behind uplink0, the group "web"
(vm1, vm3) and pair 1 (vm1 -> vm2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_rest import Api, assert_error, make_api, on_one_switch

from ryu_ctfw import store
from ryu_ctfw.switch import SyncResult

OUTSIDE = {"port": "uplink0", "cidrs": ["198.19.0.0/24", "2001:db8:19::/48"]}
DNS = {"port": "uplink0", "cidrs": ["198.51.100.53/32"]}


@pytest.fixture
def world(tmp_path: Path) -> Api:
    api = make_api(tmp_path / "state.json")
    for path, body in [
        ("/vms/vm1", {"port": "tap2", "ips": ["198.18.0.1"]}),
        ("/vms/vm2", {"port": "tap4"}),
        ("/vms/vm3", {"port": "tap5"}),
        ("/networks/outside", OUTSIDE),
        ("/groups/web", {"members": ["vm1", "vm3"]}),
    ]:
        resp = api.call("PUT", path, body)
        assert resp.status_int == 201, resp.text
    assert api.call("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}).status_int == 201
    return api


def post_pair(api: Api, initiator: str, responder: str, **service: Any) -> Any:
    resp = api.call("POST", "/pairs", {"initiator": initiator, "responder": responder, **service})
    assert resp.status_int == 201, resp.text
    return resp.json


# --- networks ------------------------------------------------------------------------------


def test_put_network_creates_then_updates(world: Api) -> None:
    body = {"port": "uplink1", "cidrs": ["2001:DB8:20:0::/48", "198.19.20.0/24"]}
    resp = world.call("PUT", "/networks/office", body)
    assert resp.status_int == 201, resp.text
    assert resp.content_type == "application/json"
    created = resp.json
    assert created == {
        "name": "office",
        "id": 6,  # after vm1..vm3, outside and web: one space of ids
        "port": "uplink1",
        "cidrs": ["2001:db8:20::/48", "198.19.20.0/24"],  # normalised, in the order given
        "dpid": None,
        "ofport": None,
    }
    assert world.get_json("/networks/office") == created

    resp = world.call("PUT", "/networks/office", {"port": "uplink2", "cidrs": ["10.0.0.0/8"]})
    assert resp.status_int == 200, resp.text
    updated = resp.json
    assert (updated["id"], updated["port"], updated["cidrs"]) == (6, "uplink2", ["10.0.0.0/8"])
    assert world.get_json("/networks") == {
        "networks": [world.get_json("/networks/outside"), updated]
    }


def test_a_network_view_says_where_its_port_is(world: Api) -> None:
    on_one_switch(world, tap2=2, uplink0=9)
    view = world.get_json("/networks/outside")
    assert (view["dpid"], view["ofport"]) == ("0000000000000001", 9)
    # Written as the VM view writes it.
    vm1 = world.get_json("/vms/vm1")
    assert (vm1["dpid"], vm1["ofport"]) == ("0000000000000001", 2)


def test_networks_may_share_a_port(world: Api) -> None:
    resp = world.call("PUT", "/networks/dns", DNS)
    assert resp.status_int == 201, resp.text
    assert [n["port"] for n in world.get_json("/networks")["networks"]] == ["uplink0", "uplink0"]


def test_delete_network(world: Api) -> None:
    assert world.call("PUT", "/networks/dns", DNS).status_int == 201
    resp = world.call("DELETE", "/networks/dns")
    assert (resp.status_int, resp.body) == (204, b"")
    assert_error(world.call("GET", "/networks/dns"), 404)
    assert_error(world.call("DELETE", "/networks/dns"), 404)
    assert [n["name"] for n in world.get_json("/networks")["networks"]] == ["outside"]


def test_delete_network_in_a_pair_is_409_until_the_pair_is_gone(world: Api) -> None:
    pair = post_pair(world, "outside", "vm2", protocol="tcp", ports="443")
    message = assert_error(world.call("DELETE", "/networks/outside"), 409)
    assert "network 'outside'" in message and re.search(rf"\bpair\(s\) {pair['id']}\b", message)
    assert world.call("DELETE", f"/pairs/{pair['id']}").status_int == 204
    assert world.call("DELETE", "/networks/outside").status_int == 204


# --- groups --------------------------------------------------------------------------------


def test_put_group_creates_then_updates(world: Api) -> None:
    resp = world.call("PUT", "/groups/db", {"members": []})
    assert resp.status_int == 201, resp.text
    assert resp.json == {"name": "db", "id": 6, "members": []}
    resp = world.call("PUT", "/groups/db", {"members": ["vm3", "vm2"]})
    assert resp.status_int == 200, resp.text
    assert resp.json == {"name": "db", "id": 6, "members": ["vm3", "vm2"]}  # order kept
    assert world.get_json("/groups/db") == resp.json
    assert world.get_json("/groups") == {
        "groups": [
            {"name": "web", "id": 5, "members": ["vm1", "vm3"]},
            {"name": "db", "id": 6, "members": ["vm3", "vm2"]},
        ]
    }


@pytest.mark.parametrize("member", ["nope", "outside", "web"])
def test_a_group_member_that_is_no_vm_is_404(world: Api, member: str) -> None:
    before = world.snapshot()
    message = assert_error(world.call("PUT", "/groups/db", {"members": ["vm2", member]}), 404)
    assert repr(member) in message
    assert_error(world.call("PUT", "/groups/web", {"members": [member]}), 404)
    assert world.snapshot() == before


def test_delete_group(world: Api) -> None:
    resp = world.call("DELETE", "/groups/web")
    assert (resp.status_int, resp.body) == (204, b"")
    assert_error(world.call("GET", "/groups/web"), 404)
    assert_error(world.call("DELETE", "/groups/web"), 404)
    assert world.get_json("/groups") == {"groups": []}


def test_delete_group_in_a_pair_is_409_until_the_pair_is_gone(world: Api) -> None:
    pair = post_pair(world, "web", "web")
    message = assert_error(world.call("DELETE", "/groups/web"), 409)
    assert "group 'web'" in message and re.search(rf"\bpair\(s\) {pair['id']}\b", message)
    assert world.call("DELETE", f"/pairs/{pair['id']}").status_int == 204
    assert world.call("DELETE", "/groups/web").status_int == 204


def test_delete_vm_a_group_lists_is_409_until_it_leaves(world: Api) -> None:
    assert world.call("PUT", "/groups/db", {"members": ["vm3"]}).status_int == 201
    before = world.snapshot()
    message = assert_error(world.call("DELETE", "/vms/vm3"), 409)
    assert "vm3" in message and "web, db" in message  # names every group in the way
    assert world.snapshot() == before
    assert world.call("PUT", "/groups/web", {"members": ["vm1"]}).status_int == 200
    assert world.call("DELETE", "/groups/db").status_int == 204
    assert world.call("DELETE", "/vms/vm3").status_int == 204


# --- one namespace -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "taken_by"),
    [
        ("/vms/outside", {"port": "tap9"}, "network"),
        ("/vms/web", {"port": "tap9"}, "group"),
        ("/networks/vm1", {"port": "uplink9", "cidrs": ["10.0.0.0/8"]}, "vm"),
        ("/networks/web", {"port": "uplink9", "cidrs": ["10.0.0.0/8"]}, "group"),
        ("/groups/vm1", {"members": []}, "vm"),
        ("/groups/outside", {"members": []}, "network"),
    ],
)
def test_a_name_is_one_thing_across_kinds(world: Api, path: str, body: Any, taken_by: str) -> None:
    before = world.snapshot()
    message = assert_error(world.call("PUT", path, body), 409)
    assert f"is taken by a {taken_by}" in message
    assert world.snapshot() == before


def test_a_network_cannot_sit_on_a_vms_port_nor_a_vm_on_a_networks(world: Api) -> None:
    before = world.snapshot()
    message = assert_error(world.call("PUT", "/networks/lan", {**DNS, "port": "tap2"}), 409)
    assert "tap2" in message and "vm1" in message
    message = assert_error(world.call("PUT", "/vms/vm9", {"port": "uplink0"}), 409)
    assert "uplink0" in message and "outside" in message
    assert world.snapshot() == before


# --- pairs between any two kinds -----------------------------------------------------------


@pytest.mark.parametrize(
    ("initiator", "responder", "kinds"),
    [
        ("web", "outside", ("group", "network")),
        ("outside", "vm2", ("network", "vm")),
        ("vm2", "web", ("vm", "group")),
        ("web", "vm2", ("group", "vm")),
        ("web", "web", ("group", "group")),  # its members reach each other
        ("vm2", "outside", ("vm", "network")),
        ("outside", "web", ("network", "group")),
        ("vm2", "vm3", ("vm", "vm")),
    ],
)
def test_a_pair_view_says_what_each_side_is(
    world: Api, initiator: str, responder: str, kinds: tuple[str, str]
) -> None:
    pair = post_pair(world, initiator, responder, protocol="udp", ports=53)
    expected = {
        "id": 2,
        "initiator": initiator,
        "responder": responder,
        "protocol": "udp",
        "ports": "53",
        "log": False,
        "initiator_kind": kinds[0],
        "responder_kind": kinds[1],
    }
    assert pair == expected
    assert world.get_json("/pairs/2") == expected
    assert world.get_json("/pairs")["pairs"] == [
        {"id": 1, "initiator": "vm1", "responder": "vm2", "protocol": "any", "ports": None,
         "log": False, "initiator_kind": "vm", "responder_kind": "vm"},
        expected,
    ]  # fmt: skip
    # The store keeps the pair as given; kinds are what the names are now.
    stored = store.load(world.state_file).to_dict()["pairs"][-1]
    assert stored == {k: v for k, v in expected.items() if not k.endswith("_kind")}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"initiator": "outside", "responder": "outside"}, 400, "two networks"),
        ({"initiator": "outside", "responder": "dns"}, 400, "two networks"),
        ({"initiator": "vm1", "responder": "vm1"}, 400, "itself"),
        ({"initiator": "web", "responder": "nope"}, 404, "'nope'"),
        ({"initiator": "nope", "responder": "outside"}, 404, "'nope'"),
        ({"initiator": "vm1", "responder": "vm2", "protocol": "any"}, 409, "id 1"),
    ],
)
def test_a_pair_the_policy_refuses_changes_nothing(
    world: Api, body: dict[str, Any], status: int, words: str
) -> None:
    assert world.call("PUT", "/networks/dns", DNS).status_int == 201
    before = world.snapshot()
    assert words in assert_error(world.call("POST", "/pairs", body), status)
    assert world.snapshot() == before


def test_the_same_group_pair_with_two_services_is_two_pairs_and_a_third_is_409(
    world: Api,
) -> None:
    post_pair(world, "web", "outside", protocol="udp", ports="53")
    post_pair(world, "web", "outside", protocol="tcp", ports="443")
    before = world.snapshot()
    message = assert_error(
        world.call("POST", "/pairs", {"initiator": "web", "responder": "outside",
                                      "protocol": "tcp", "ports": 443}), 409)  # fmt: skip
    assert "web -> outside tcp/443" in message
    assert world.snapshot() == before


# --- errors change nothing -----------------------------------------------------------------

NET = {"port": "uplink9", "cidrs": ["198.19.9.0/24"]}

BAD_REQUESTS = [
    # (method, path, body, status)
    ("PUT", "/networks/net9", {"port": "uplink9"}, 400),
    ("PUT", "/networks/net9", {"cidrs": ["198.19.9.0/24"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": []}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": "198.19.9.0/24"}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": ["198.19.9.1/24"]}, 400),  # host bits
    ("PUT", "/networks/net9", {**NET, "cidrs": ["2001:db8::1/48"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": ["fe80::%eth0/64"]}, 400),  # a scope id
    ("PUT", "/networks/net9", {**NET, "cidrs": ["fe80::/64%eth0"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": ["198.19.9.0/33"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": ["198.19.9.0/24", "198.19.9.0/24"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": ["nope"]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": [24]}, 400),
    ("PUT", "/networks/net9", {**NET, "cidrs": [f"10.{i}.0.0/16" for i in range(65)]}, 400),
    ("PUT", "/networks/net9", {**NET, "port": "a b"}, 400),
    ("PUT", "/networks/net9", {**NET, "port": "a" * 16}, 400),
    ("PUT", "/networks/net9", {**NET, "port": None}, 400),
    ("PUT", "/networks/net9", {**NET, "id": 7}, 400),
    ("PUT", "/networks/net9", {**NET, "name": "net9"}, 400),
    ("PUT", "/networks/net9", [NET], 400),
    ("PUT", "/networks/net9", b'{"port": "uplink9"', 400),
    ("PUT", "/networks/net9", b"", 400),
    ("PUT", "/networks/net9", None, 400),
    ("PUT", "/networks/-net9", NET, 400),
    ("PUT", "/networks/" + "n" * 65, NET, 400),
    ("PUT", "/networks/net9", {**NET, "port": "tap4"}, 409),
    ("PUT", "/networks/vm2", NET, 409),
    ("PUT", "/networks/web", NET, 409),
    ("PUT", "/networks/outside", {**OUTSIDE, "port": "tap5"}, 409),
    ("GET", "/networks/nope", None, 404),
    ("DELETE", "/networks/nope", None, 404),
    ("DELETE", "/networks/-nope", None, 400),
    ("DELETE", "/networks/vm1", None, 404),  # a VM is no network
    ("PUT", "/groups/db", {}, 400),
    ("PUT", "/groups/db", {"members": "vm1"}, 400),
    ("PUT", "/groups/db", {"members": [1]}, 400),
    ("PUT", "/groups/db", {"members": ["vm1", "vm1"]}, 400),
    ("PUT", "/groups/db", {"members": ["-vm1"]}, 400),
    ("PUT", "/groups/db", {"members": [], "id": 3}, 400),
    ("PUT", "/groups/db", ["vm1"], 400),
    ("PUT", "/groups/db", b"members=vm1", 400),
    ("PUT", "/groups/db", None, 400),
    ("PUT", "/groups/-db", {"members": []}, 400),
    ("PUT", "/groups/db", {"members": ["vm1", "nope"]}, 404),
    ("PUT", "/groups/web", {"members": ["outside"]}, 404),
    ("PUT", "/groups/vm1", {"members": []}, 409),
    ("PUT", "/groups/outside", {"members": []}, 409),
    ("GET", "/groups/nope", None, 404),
    ("DELETE", "/groups/nope", None, 404),
    ("DELETE", "/groups/-nope", None, 400),
    ("DELETE", "/groups/outside", None, 404),  # a network is no group
    ("DELETE", "/vms/vm3", None, 409),  # web lists it
    ("DELETE", "/vms/outside", None, 404),
    ("POST", "/pairs", {"initiator": "outside", "responder": "outside"}, 400),
    ("POST", "/pairs", {"initiator": "web", "responder": "nope"}, 404),
    ("POST", "/networks", NET, 405),
    ("DELETE", "/networks", None, 405),
    ("POST", "/networks/net9", NET, 405),
    ("PATCH", "/groups/web", {"members": []}, 405),
    ("PUT", "/groups", {"members": []}, 405),
    ("GET", "/ctfw/v1/networks/", None, 404),
    ("DELETE", "/ctfw/v1/groups/web/vm1", None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    BAD_REQUESTS,
    ids=[f"{m} {p[:40]} {s}" for m, p, _, s in BAD_REQUESTS],
)
def test_errors_are_json_and_change_nothing(
    world: Api, method: str, path: str, body: Any, status: int
) -> None:
    before = world.snapshot()
    assert_error(world.call(method, path, body), status)
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/networks", "GET"),
        ("/networks/outside", "DELETE, GET, PUT"),
        ("/groups", "GET"),
        ("/groups/web", "DELETE, GET, PUT"),
    ],
)
def test_wrong_method_is_405_with_allow(world: Api, path: str, allowed: str) -> None:
    for method in ("GET", "PUT", "POST", "DELETE", "PATCH"):
        if method not in allowed.split(", "):
            resp = world.call(method, path, {})
            assert method in assert_error(resp, 405)
            assert resp.headers["Allow"] == allowed


# --- every change is a change like any other -----------------------------------------------

CHANGES = [
    ("PUT", "/networks/dns", DNS),
    ("PUT", "/networks/outside", DNS),
    ("DELETE", "/networks/outside", None),
    ("PUT", "/groups/db", {"members": ["vm2"]}),
    ("PUT", "/groups/web", {"members": []}),
    ("DELETE", "/groups/web", None),
    ("POST", "/pairs", {"initiator": "web", "responder": "outside"}),
]


def stored_views(api: Api) -> tuple[Any, ...]:
    return (api.get_json("/networks"), api.get_json("/groups"), api.get_json("/pairs"),
            store.load(api.state_file).to_dict())  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body"), CHANGES, ids=[f"{m} {p}" for m, p, _ in CHANGES]
)
def test_a_change_a_switch_refuses_is_502_and_rolled_back(
    world: Api, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: Any
) -> None:
    before = stored_views(world)
    calls: list[int] = []

    def refusing_sync_all() -> list[SyncResult]:
        calls.append(len(calls))
        return [SyncResult(1, ["OFPET_BAD_MATCH OFPBMC_BAD_PREREQ"])] if len(calls) == 1 else []

    monkeypatch.setattr(world.fw.switches, "sync_all", refusing_sync_all)
    assert "OFPBMC_BAD_PREREQ" in assert_error(world.call(method, path, body), 502)
    assert calls == [0, 1]  # the rollback was synced too
    assert stored_views(world) == before


@pytest.mark.parametrize(
    ("method", "path", "body"), CHANGES, ids=[f"{m} {p}" for m, p, _ in CHANGES]
)
def test_a_change_no_switch_confirmed_is_504_and_kept(
    world: Api, monkeypatch: pytest.MonkeyPatch, method: str, path: str, body: Any
) -> None:
    resynced: list[int] = []
    unconfirmed = [SyncResult(7, unknown=["switch did not confirm in time"])]
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: unconfirmed)
    monkeypatch.setattr(world.fw.switches, "request_sync", resynced.append)
    before = stored_views(world)
    assert "stored" in assert_error(world.call(method, path, body), 504)
    assert resynced == [7]
    after = stored_views(world)
    assert after != before
    assert after[3] == world.fw.policy.to_dict(), "kept in the store"


def test_a_failed_save_is_a_json_500_and_changes_nothing(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    before = world.snapshot()
    monkeypatch.setattr(store, "record", full_disk)
    for method, path, body in CHANGES:
        assert_error(world.call(method, path, body), 500)
    monkeypatch.undo()
    assert world.snapshot() == before


# --- persistence ---------------------------------------------------------------------------


def test_a_new_firewall_on_the_same_file_shows_the_same(world: Api) -> None:
    assert world.call("PUT", "/networks/dns", DNS).status_int == 201
    assert world.call("PUT", "/groups/db", {"members": ["vm2"]}).status_int == 201
    post_pair(world, "web", "dns", protocol="udp", ports="53")
    post_pair(world, "outside", "db", protocol="tcp", ports="5432")
    assert world.call("PUT", "/groups/web", {"members": ["vm3"]}).status_int == 200
    assert world.call("DELETE", "/pairs/1").status_int == 204
    paths = ["/vms", "/networks", "/groups", "/pairs", "/networks/dns", "/groups/web",
             "/pairs/3"]  # fmt: skip
    shown = [world.get_json(p) for p in paths]
    assert store.has_journal(world.state_file)  # the journal holds the changes
    again = make_api(world.state_file)  # replays it, and compacts it into the snapshot
    assert [again.get_json(p) for p in paths] == shown
    assert not store.has_journal(world.state_file)
    third = make_api(world.state_file)  # from the compacted snapshot alone
    assert [third.get_json(p) for p in paths] == shown
    # And ids carry on in the one space.
    assert third.call("PUT", "/groups/new", {"members": []}).json["id"] == 8
