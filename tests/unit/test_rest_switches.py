"""The REST API for many hypervisors (issue 12): per-switch settings and VMs naming their
switch.

`PUT /switches/{dpid}` sets (or, with null, clears) one switch's fabric port, through
Firewall.change like every mutation; `GET /switches/{dpid}` shows one switch; `GET
/switches` shows the fabric port in effect and lists switches that only have a setting.
Driven in-process as test_rest.py does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_rest import Api, assert_error, make_api, on_one_switch

from ryu_ctfw import store
from ryu_ctfw.switch import Switch, SyncResult

A = "0000000000000001"
B = "00005254006084ff"


@pytest.fixture
def world(tmp_path: Path) -> Api:
    """vm1 (tap2), vm2 (tap4) and the pair vm1 -> vm2; no switch connected."""
    api = make_api(tmp_path / "state.json")
    assert api.call("PUT", "/vms/vm1", {"port": "tap2"}).status_int == 201
    assert api.call("PUT", "/vms/vm2", {"port": "tap4"}).status_int == 201
    assert api.call("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}).status_int == 201
    return api


def snapshot(api: Api) -> tuple[Any, ...]:
    """Everything the API shows and stores, the switches and their settings included."""
    return (*api.snapshot(), api.get_json("/switches"), dict(api.fw.policy.fabric))


def unconnected(dpid: str, fabric_port: str | None) -> dict[str, Any]:
    return {"dpid": dpid, "name": None, "zone": None, "connected": False, "packet_ins": 0,
            "fabric_port": fabric_port, "ports": []}  # fmt: skip


# --- PUT /switches/{dpid} ------------------------------------------------------------------


def test_put_sets_the_fabric_port_of_a_switch_not_connected_yet(world: Api) -> None:
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"})
    assert resp.status_int == 200, resp.text
    assert resp.content_type == "application/json"
    assert resp.json == unconnected(A, "eth1")
    assert world.get_json(f"/switches/{A}") == resp.json
    assert world.get_json("/switches") == {"switches": [resp.json]}
    assert world.fw.policy.fabric == {1: "eth1"}


def test_put_again_replaces_and_null_clears(world: Api) -> None:
    assert world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}).status_int == 200
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": "veth-a"})
    assert (resp.status_int, resp.json["fabric_port"]) == (200, "veth-a")
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": None})
    assert resp.status_int == 200, resp.text
    assert resp.json == unconnected(A, None)
    # Cleared, never connected: nothing is known of it any more.
    assert world.get_json("/switches") == {"switches": []}
    assert_error(world.call("GET", f"/switches/{A}"), 404)
    assert store.load(world.state_file).fabric == {}


def test_a_dpid_in_upper_case_is_the_same_switch(world: Api) -> None:
    resp = world.call("PUT", f"/switches/{B.upper()}", {"fabric_port": "eth1"})
    assert resp.status_int == 200, resp.text
    assert resp.json["dpid"] == B
    assert world.get_json(f"/switches/{B.upper()}") == world.get_json(f"/switches/{B}")


def test_the_setting_is_stored_journalled_and_survives_a_restart(world: Api) -> None:
    journal = store.journal_path(world.state_file)
    before = journal.read_bytes() if journal.exists() else b""
    assert world.call("PUT", f"/switches/{B}", {"fabric_port": "eth1"}).status_int == 200
    added = journal.read_bytes()[len(before) :]
    assert added == b'{"switches":{"00005254006084ff":{"fabric_port":"eth1"}}}\n'
    # The same value again is no change: nothing is written.
    content = journal.read_bytes()
    assert world.call("PUT", f"/switches/{B}", {"fabric_port": "eth1"}).status_int == 200
    assert journal.read_bytes() == content
    again = make_api(world.state_file)  # folds the journal into the snapshot
    assert again.fw.policy.fabric == {0x5254006084FF: "eth1"}
    assert again.get_json(f"/switches/{B}") == unconnected(B, "eth1")


def test_clearing_a_setting_that_is_not_there_is_200_and_writes_nothing(world: Api) -> None:
    before = snapshot(world)
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": None})
    assert (resp.status_int, resp.json) == (200, unconnected(A, None))
    assert snapshot(world) == before


BAD_DPIDS = [
    "1",
    "000000000000001",
    "00000000000000001",
    "000000000000000g",
    "0x00000000000001",
    "-000000000000001",
    "+000000000000001",
    " 000000000000001",
    "00000000-0000001",
    "\uff10" * 15 + "\uff11",
]  # fmt: skip (full-width digits)


@pytest.mark.parametrize("dpid", BAD_DPIDS)
def test_a_bad_dpid_is_400_and_changes_nothing(world: Api, dpid: str) -> None:
    dpid = quote(dpid)  # the full-width digits go as UTF-8, percent-encoded
    before = snapshot(world)
    message = assert_error(world.call("PUT", f"/switches/{dpid}", {"fabric_port": "eth1"}), 400)
    assert "16 hex digits" in message
    assert "16 hex digits" in assert_error(world.call("GET", f"/switches/{dpid}"), 400)
    assert snapshot(world) == before


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "missing field: fabric_port"),
    ({"port": "eth1"}, "unknown field(s): port"),
    ({"fabric_port": "eth1", "zone": 3}, "unknown field(s): zone"),
    ({"fabric_port": "eth/1"}, "invalid port name"),
    ({"fabric_port": "a-name-too-long-x"}, "invalid port name"),
    ({"fabric_port": ""}, "invalid port name"),
    ({"fabric_port": ".."}, "invalid port name"),
    ({"fabric_port": 1}, "invalid port name"),
    ({"fabric_port": ["eth1"]}, "invalid port name"),
    ({"fabric_port": True}, "invalid port name"),
    (["eth1"], "JSON object"),
    ("eth1", "JSON object"),
    (None, "JSON object"),  # the JSON text null
    (b"", "body is empty"),
    (b"{", "not valid JSON"),
    (b'{"fabric_port": "eth1"', "not valid JSON"),
]


@pytest.mark.parametrize(("body", "words"), BAD_BODIES, ids=[repr(b) for b, _ in BAD_BODIES])
def test_a_bad_body_is_400_naming_what_is_wrong_and_changes_nothing(
    world: Api, body: Any, words: str
) -> None:
    assert world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}).status_int == 200
    before = snapshot(world)
    raw = b"null" if body is None else body
    message = assert_error(world.call("PUT", f"/switches/{A}", raw), 400)
    assert words in message
    assert snapshot(world) == before


def test_a_bad_dpid_is_reported_before_a_bad_body(world: Api) -> None:
    message = assert_error(world.call("PUT", "/switches/nope", {"colour": "red"}), 400)
    assert "16 hex digits" in message


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(world: Api, method: str) -> None:
    before = snapshot(world)
    resp = world.call(method, f"/switches/{A}", {"fabric_port": "eth1"})
    assert method in assert_error(resp, 405)
    assert resp.headers["Allow"] == "GET, PUT"
    assert snapshot(world) == before


def test_a_path_below_a_switch_is_404(world: Api) -> None:
    assert_error(world.call("GET", f"/switches/{A}/ports"), 404)
    assert_error(world.call("PUT", f"/switches/{A}/", {"fabric_port": "eth1"}), 404)
    assert_error(world.call("GET", f"/switches/{A}\n"), 404)


def test_a_failed_save_is_a_json_500_and_changes_nothing(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    before = snapshot(world)
    monkeypatch.setattr(store, "record", full_disk)
    assert_error(world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}), 500)
    monkeypatch.undo()
    assert snapshot(world) == before


def test_a_setting_a_switch_refuses_is_502_and_rolled_back(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}).status_int == 200
    before = snapshot(world)
    calls: list[int] = []

    def refusing_sync_all() -> list[SyncResult]:
        calls.append(len(calls))
        return [SyncResult(1, ["OFPET_BAD_ACTION OFPBAC_BAD_OUT_PORT"])] if len(calls) == 1 else []

    monkeypatch.setattr(world.fw.switches, "sync_all", refusing_sync_all)
    message = assert_error(world.call("PUT", f"/switches/{A}", {"fabric_port": "eth2"}), 502)
    assert "OFPBAC_BAD_OUT_PORT" in message
    assert calls == [0, 1]  # the rollback was synced too
    assert world.fw.policy.fabric == {1: "eth1"}
    assert store.load(world.state_file).fabric == {1: "eth1"}
    after = snapshot(world)
    # The journal gained the change and its undoing; everything else is as it was.
    assert after[:6] == before[:6] and after[7:] == before[7:]


def test_a_setting_no_switch_confirmed_is_504_and_kept(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    resynced: list[int] = []
    unknown = [SyncResult(7, unknown=["switch did not confirm in time"])]
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: unknown)
    monkeypatch.setattr(world.fw.switches, "request_sync", resynced.append)
    message = assert_error(world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}), 504)
    assert "stored" in message and "did not confirm in time" in message
    assert resynced == [7]
    assert world.fw.policy.fabric == {1: "eth1"}
    assert store.load(world.state_file).fabric == {1: "eth1"}, "kept in the store"


def test_the_change_is_made_under_the_firewalls_lock(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    change = world.fw.change

    def spy(mutate: Any, plan: Any = None) -> Any:
        seen.append(mutate)
        return change(mutate, plan)

    monkeypatch.setattr(world.fw, "change", spy)
    assert world.call("PUT", f"/switches/{A}", {"fabric_port": "eth1"}).status_int == 200
    assert len(seen) == 1


# --- GET /switches, GET /switches/{dpid} ---------------------------------------------------


def test_get_an_unknown_switch_is_404(world: Api) -> None:
    assert A in assert_error(world.call("GET", f"/switches/{A}"), 404)


def test_a_connected_switch_shows_the_default_fabric_port_until_it_has_its_own(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: [])
    on_one_switch(world, tap2=2, tap4=3, eth1=1)
    world.fw.policy.zones[1] = 1
    view = world.get_json(f"/switches/{A}")
    assert view == {
        "dpid": A, "name": "br0", "zone": 1, "connected": True, "packet_ins": 0,
        "fabric_port": None,
        "ports": [{"name": "eth1", "ofport": 1, "vm": None, "networks": []},
                  {"name": "tap2", "ofport": 2, "vm": "vm1", "networks": []},
                  {"name": "tap4", "ofport": 3, "vm": "vm2", "networks": []}],
    }  # fmt: skip
    world.fw.default_fabric_port = "eth1"  # [ctfw] fabric_port = eth1
    assert world.get_json(f"/switches/{A}")["fabric_port"] == "eth1"
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": "eth9"})
    assert resp.json == {**view, "fabric_port": "eth9"}
    assert world.get_json("/switches") == {"switches": [resp.json]}
    # Cleared: the default again, and still listed (it is connected).
    resp = world.call("PUT", f"/switches/{A}", {"fabric_port": None})
    assert resp.json == {**view, "fabric_port": "eth1"}
    assert world.get_json("/switches") == {"switches": [resp.json]}


def test_switches_with_only_a_setting_are_listed_in_dpid_order(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.fw.default_fabric_port = "eth0"
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: [])
    world.fw.switches.switches[2] = Switch(2, name="br2", ports={"tap9": 4})  # disconnected
    assert world.call("PUT", f"/switches/{B}", {"fabric_port": "eth1"}).status_int == 200
    assert world.call("PUT", f"/switches/{A}", {"fabric_port": "eth2"}).status_int == 200
    listed = world.get_json("/switches")["switches"]
    assert [(s["dpid"], s["connected"], s["fabric_port"]) for s in listed] == [
        (A, False, "eth2"),
        ("0000000000000002", False, "eth0"),  # no setting of its own: the default
        (B, False, "eth1"),
    ]
    assert listed[0] == unconnected(A, "eth2")
    assert listed[1]["ports"] == [{"name": "tap9", "ofport": 4, "vm": None, "networks": []}]
    for view in listed:
        assert world.get_json(f"/switches/{view['dpid']}") == view


def test_each_port_shows_the_vm_that_is_on_that_switch(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt's vnet0 on two hosts: two VMs, each naming its switch (by name or dpid)."""
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: [])
    world.fw.switches.switches[1] = Switch(1, name="br-a", ports={"vnet0": 5})
    world.fw.switches.switches[2] = Switch(2, name="br-b", ports={"vnet0": 6})
    assert world.call("PUT", "/vms/vm5", {"port": "vnet0", "switch": "br-a"}).status_int == 201
    body = {"port": "vnet0", "switch": "0000000000000002"}
    assert world.call("PUT", "/vms/vm6", body).status_int == 201
    ports = {s["dpid"]: s["ports"] for s in world.get_json("/switches")["switches"]}
    assert ports[A] == [{"name": "vnet0", "ofport": 5, "vm": "vm5", "networks": []}]
    assert ports["0000000000000002"] == [{"name": "vnet0", "ofport": 6, "vm": "vm6",
                                          "networks": []}]  # fmt: skip


# --- VMs naming their switch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [("br1", "br1"), (B, B), (B.upper(), B), ("0000000000000001", A), (None, None)],
)
def test_a_vm_may_name_its_switch(world: Api, given: str | None, shown: str | None) -> None:
    resp = world.call("PUT", "/vms/vm9", {"port": "vnet0", "switch": given})
    assert resp.status_int == 201, resp.text
    assert resp.json["switch"] == shown
    assert world.get_json("/vms/vm9")["switch"] == shown
    assert store.load(world.state_file).vms["vm9"].switch == shown


def test_a_vm_view_shows_its_switch(world: Api) -> None:
    assert world.get_json("/vms/vm1")["switch"] is None
    assert world.call("PUT", "/vms/vm1", {"port": "tap2", "switch": "br0"}).status_int == 200
    view = world.get_json("/vms/vm1")
    assert (view["switch"], view["id"], view["port"]) == ("br0", 1, "tap2")


def test_one_port_name_on_two_switches_for_two_vms_naming_them(world: Api) -> None:
    assert world.call("PUT", "/vms/vm5", {"port": "vnet0", "switch": "br-a"}).status_int == 201
    assert world.call("PUT", "/vms/vm6", {"port": "vnet0", "switch": "br-b"}).status_int == 201
    before = snapshot(world)
    # The same switch twice, or a VM naming none: which one is on vnet0 is not clear.
    for body in ({"port": "vnet0", "switch": "br-a"}, {"port": "vnet0"}):
        assert "vnet0" in assert_error(world.call("PUT", "/vms/vm7", body), 409)
    assert snapshot(world) == before


@pytest.mark.parametrize(
    "switch", ["br/0", "", "a-name-too-long-x", 1, ["br0"], True, "000000000000000g0"]
)
def test_a_bad_switch_is_400_and_changes_nothing(world: Api, switch: Any) -> None:
    before = snapshot(world)
    message = assert_error(world.call("PUT", "/vms/vm9", {"port": "vnet0", "switch": switch}), 400)
    assert "invalid switch" in message
    assert_error(world.call("PUT", "/vms/vm1", {"port": "tap2", "switch": switch}), 400)
    assert snapshot(world) == before


def test_a_vm_whose_port_name_is_on_two_switches_is_on_neither(
    world: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.fw.switches, "sync_all", lambda: [])
    world.fw.switches.switches[1] = Switch(1, name="br-a", ports={"vnet0": 5})
    world.fw.switches.switches[2] = Switch(2, name="br-b", ports={"vnet0": 6})
    assert world.call("PUT", "/vms/vm5", {"port": "vnet0"}).status_int == 201
    view = world.get_json("/vms/vm5")
    assert (view["dpid"], view["ofport"], view["ambiguous"]) == (None, None, True)
    for listed in world.get_json("/switches")["switches"]:
        assert [p["vm"] for p in listed["ports"]] == [None]
