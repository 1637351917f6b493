"""The policy model: validation, conflicts, pairs, and the persistence form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ryu_ctfw.policy import (
    Conflict,
    InvalidInput,
    NotFound,
    Pair,
    Policy,
    PolicyError,
    Vm,
    pair_names_from_body,
    validate_ips,
    validate_mac,
    validate_port_name,
    validate_vm_name,
    vm_from_body,
)

MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"


@pytest.fixture
def policy() -> Policy:
    """Three VMs and the pair vm1 -> vm2, built through the public methods."""
    p = Policy()
    p.put_vm(vm_from_body("vm1", {"port": "tap2", "mac": MAC1, "ips": ["192.168.0.1"]}))
    p.put_vm(vm_from_body("vm2", {"port": "tap4", "mac": MAC2, "ips": ["192.168.0.2"]}))
    p.put_vm(vm_from_body("vm3", {"port": "tap5"}))
    p.add_pair("vm1", "vm2")
    return p


def put(policy: Policy, name: Any, body: Any) -> bool:
    """What PUT /vms/{name} does to the policy."""
    return policy.put_vm(vm_from_body(name, body))


# --- status codes --------------------------------------------------------------------------


def test_error_classes_carry_their_http_status() -> None:
    assert (InvalidInput.status, NotFound.status, Conflict.status) == (400, 404, 409)
    for cls in (InvalidInput, NotFound, Conflict):
        assert issubclass(cls, PolicyError)


# --- VM validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "-vm", ".vm", "_vm", "vm 1", "vm/1", "vm:1", "a" * 65, "vm\t", "vmé", 5, None, ["vm1"]],
)
def test_bad_vm_names_are_400_and_change_nothing(policy: Policy, name: Any) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        put(policy, name, {"port": "tap9"})
    assert exc.value.status == 400
    assert policy.to_dict() == before


@pytest.mark.parametrize("name", ["v", "vm1", "VM-1.a_b", "1vm", "a" * 64])
def test_good_vm_names(name: str) -> None:
    assert validate_vm_name(name) == name


@pytest.mark.parametrize(
    "port",
    ["a b", "x/y", "", "a" * 16, ".", "..", "tap 2", "tap\t2", "tap$2", "tap'2", 2, None, ["tap2"]],
)
def test_bad_port_names_are_400_and_change_nothing(policy: Policy, port: Any) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        put(policy, "vm9", {"port": port})
    assert exc.value.status == 400
    assert policy.to_dict() == before


@pytest.mark.parametrize("port", ["t", "tap2", "a" * 15, "eth0.100", "veth@if3", "br-ex:1"])
def test_good_port_names(port: str) -> None:
    assert validate_port_name(port) == port


@pytest.mark.parametrize(
    "mac",
    [
        "52:54:00:60:84",  # five octets
        "52:54:00:60:84:ff:00",
        "52-54-00-60-84-ff",
        "5254.0060.84ff",
        "52:54:00:60:84:fg",
        "52:54:0:60:84:ff",
        "01:00:5e:00:00:01",  # multicast
        "33:33:00:00:00:01",  # IPv6 multicast
        "ff:ff:ff:ff:ff:ff",  # broadcast
        "00:00:00:00:00:00",
        "",
        5,
        ["52:54:00:60:84:ff"],
    ],
)
def test_bad_macs_are_400_and_change_nothing(policy: Policy, mac: Any) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        put(policy, "vm9", {"port": "tap9", "mac": mac})
    assert exc.value.status == 400
    assert policy.to_dict() == before


def test_mac_is_normalised_to_lower_case() -> None:
    assert validate_mac("52:54:00:60:84:FF") == MAC1
    assert validate_mac(None) is None


@pytest.mark.parametrize(
    "ips",
    [
        "192.168.0.9",  # not a list
        {"ip": "192.168.0.9"},
        ["192.168.0.256"],
        ["192.168.0"],
        ["not-an-ip"],
        ["192.168.0.9/24"],
        [""],
        [5],
        [None],
        ["224.0.0.1"],  # multicast
        ["ff02::1"],
        ["0.0.0.0"],  # unspecified
        ["::"],
        ["192.168.0.9", "192.168.0.9"],  # twice
        ["fd00::1", "fd00:0::0001"],  # twice, spelled differently
    ],
)
def test_bad_ips_are_400_and_change_nothing(policy: Policy, ips: Any) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        put(policy, "vm9", {"port": "tap9", "ips": ips})
    assert exc.value.status == 400
    assert policy.to_dict() == before


def test_ips_are_normalised_and_keep_their_order() -> None:
    assert validate_ips(["fd00:0::0001", "10.0.0.1"]) == ("fd00::1", "10.0.0.1")
    assert validate_ips(None) == ()
    assert validate_ips([]) == ()


@pytest.mark.parametrize(
    "body",
    [
        {"port": "tap9", "name": "vm9"},  # unknown field
        {"port": "tap9", "ofport": 9},
        {"mac": "52:54:00:00:00:09"},  # no port
        {},
        [],  # not an object
        ["tap9"],
        "tap9",
        None,
        9,
    ],
)
def test_bad_bodies_are_400_and_change_nothing(policy: Policy, body: Any) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        put(policy, "vm9", body)
    assert exc.value.status == 400
    assert policy.to_dict() == before


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(InvalidInput, match="colour"):
        vm_from_body("vm9", {"port": "tap9", "colour": "red"})
    with pytest.raises(InvalidInput, match="missing field: port"):
        vm_from_body("vm9", {})


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("vm9\n", {"port": "tap9"}),
        ("vm9", {"port": "tap9\n"}),
        ("vm9", {"port": "a" * 15 + "\n"}),  # 16 characters
        ("vm9", {"port": "tap9", "mac": "52:54:00:00:00:09\n"}),
    ],
)
def test_trailing_newline_is_refused(policy: Policy, name: str, body: dict[str, Any]) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput):
        put(policy, name, body)
    assert policy.to_dict() == before


# --- VM create, update, conflicts ----------------------------------------------------------


def test_put_vm_creates_then_replaces(policy: Policy) -> None:
    assert put(policy, "vm9", {"port": "tap9"}) is True
    assert policy.get_vm("vm9") == Vm("vm9", "tap9", None, ())
    assert put(policy, "vm9", {"port": "tap10", "mac": "52:54:00:00:00:0A", "ips": []}) is False
    assert policy.get_vm("vm9") == Vm("vm9", "tap10", "52:54:00:00:00:0a", ())


def test_a_vm_may_keep_its_own_port_mac_and_ips(policy: Policy) -> None:
    assert put(policy, "vm1", {"port": "tap2", "mac": MAC1, "ips": ["192.168.0.1"]}) is False


@pytest.mark.parametrize(
    "body",
    [
        {"port": "tap2"},  # vm1's port
        {"port": "tap9", "mac": MAC1},  # vm1's MAC
        {"port": "tap9", "mac": MAC1.upper()},  # the same MAC, spelled differently
        {"port": "tap9", "ips": ["10.9.9.9", "192.168.0.1"]},  # vm1's IP
    ],
)
def test_resources_of_another_vm_are_409_and_change_nothing(
    policy: Policy, body: dict[str, Any]
) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        put(policy, "vm9", body)
    assert exc.value.status == 409
    assert "vm1" in str(exc.value)
    assert policy.to_dict() == before


def test_updating_a_vm_onto_another_vms_port_is_409(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict):
        put(policy, "vm1", {"port": "tap4"})
    assert policy.to_dict() == before


def test_ipv6_conflicts_compare_normalised_addresses(policy: Policy) -> None:
    put(policy, "vm9", {"port": "tap9", "ips": ["fd00::9"]})
    with pytest.raises(Conflict):
        put(policy, "vm8", {"port": "tap8", "ips": ["fd00:0:0::09"]})


def test_vms_without_mac_do_not_conflict_with_each_other(policy: Policy) -> None:
    assert put(policy, "vm9", {"port": "tap9"}) is True  # vm3 has no MAC either
    assert policy.vms["vm3"].mac is None and policy.vms["vm9"].mac is None


def test_get_unknown_vm_is_404(policy: Policy) -> None:
    with pytest.raises(NotFound) as exc:
        policy.get_vm("nope")
    assert exc.value.status == 404


def test_delete_vm(policy: Policy) -> None:
    policy.delete_vm("vm3")
    assert "vm3" not in policy.vms
    with pytest.raises(NotFound):
        policy.delete_vm("vm3")


@pytest.mark.parametrize("name", ["vm1", "vm2"])  # initiator and responder
def test_delete_vm_used_by_a_pair_is_409_and_changes_nothing(policy: Policy, name: str) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        policy.delete_vm(name)
    assert exc.value.status == 409
    assert policy.to_dict() == before
    policy.delete_pair(1)
    policy.delete_vm(name)
    assert name not in policy.vms


# --- pairs ---------------------------------------------------------------------------------


def test_add_pair(policy: Policy) -> None:
    pair = policy.add_pair("vm2", "vm1")  # the reverse direction is another pair
    assert pair == Pair(2, "vm2", "vm1")
    assert policy.get_pair(2) == pair
    assert [p.id for p in policy.pairs_of("vm1")] == [1, 2]
    assert policy.pairs_of("vm3") == []


def test_pair_with_itself_is_400(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        policy.add_pair("vm3", "vm3")
    assert exc.value.status == 400
    assert policy.to_dict() == before


@pytest.mark.parametrize(("initiator", "responder"), [("nope", "vm1"), ("vm1", "nope")])
def test_pair_with_unknown_vm_is_404(policy: Policy, initiator: str, responder: str) -> None:
    before = policy.to_dict()
    with pytest.raises(NotFound) as exc:
        policy.add_pair(initiator, responder)
    assert exc.value.status == 404
    assert "nope" in str(exc.value)
    assert policy.to_dict() == before


def test_duplicate_pair_is_409(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        policy.add_pair("vm1", "vm2")
    assert exc.value.status == 409
    assert policy.to_dict() == before


def test_pair_ids_increase_and_are_never_reused(policy: Policy) -> None:
    second = policy.add_pair("vm1", "vm3")
    assert second.id == 2
    policy.delete_pair(2)  # the highest id
    policy.delete_pair(1)
    assert policy.pairs == {}
    assert policy.add_pair("vm1", "vm3").id == 3
    assert policy.add_pair("vm1", "vm2").id == 4


def test_pair_ids_are_not_reused_after_a_round_trip(policy: Policy) -> None:
    policy.add_pair("vm1", "vm3")
    policy.delete_pair(2)
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again.add_pair("vm2", "vm3").id == 3


def test_unknown_pair_is_404(policy: Policy) -> None:
    with pytest.raises(NotFound):
        policy.get_pair(99)
    with pytest.raises(NotFound):
        policy.delete_pair(99)
    assert list(policy.pairs) == [1]


@pytest.mark.parametrize(
    "body",
    [
        [],
        "vm1",
        None,
        {"initiator": "vm1"},
        {"responder": "vm2"},
        {"initiator": "vm1", "responder": "vm2", "id": 5},
        {"initiator": 1, "responder": "vm2"},
        {"initiator": "vm1", "responder": ["vm2"]},
    ],
)
def test_bad_pair_bodies_are_400(body: Any) -> None:
    with pytest.raises(InvalidInput):
        pair_names_from_body(body)


def test_pair_body() -> None:
    assert pair_names_from_body({"initiator": "a", "responder": "b"}) == ("a", "b")


# --- persistence form ----------------------------------------------------------------------


def test_copy_is_deep(policy: Policy) -> None:
    clone = policy.copy()
    clone.delete_pair(1)
    clone.delete_vm("vm1")
    assert 1 in policy.pairs and "vm1" in policy.vms


def test_to_dict(policy: Policy) -> None:
    assert policy.to_dict() == {
        "version": 1,
        "vms": [
            {"name": "vm1", "port": "tap2", "mac": MAC1, "ips": ["192.168.0.1"]},
            {"name": "vm2", "port": "tap4", "mac": MAC2, "ips": ["192.168.0.2"]},
            {"name": "vm3", "port": "tap5", "mac": None, "ips": []},
        ],
        "pairs": [{"id": 1, "initiator": "vm1", "responder": "vm2"}],
        "next_pair_id": 2,
    }


def test_round_trip_through_json(policy: Policy) -> None:
    policy.add_pair("vm2", "vm3")
    policy.add_pair("vm3", "vm1")
    policy.delete_pair(2)
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert again.to_dict() == policy.to_dict()


def test_round_trip_of_empty_policy() -> None:
    assert Policy.from_dict(Policy().to_dict()) == Policy()


def test_from_dict_never_lowers_next_pair_id() -> None:
    data = {
        "version": 1,
        "vms": [{"name": "a", "port": "p1"}, {"name": "b", "port": "p2"}],
        "pairs": [{"id": 7, "initiator": "a", "responder": "b"}],
        "next_pair_id": 3,  # stale: lower than an existing id
    }
    policy = Policy.from_dict(data)
    assert policy.get_pair(7) == Pair(7, "a", "b")
    assert policy.add_pair("b", "a").id == 8


def _state(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "vms": [{"name": "a", "port": "p1"}, {"name": "b", "port": "p2"}],
        "pairs": [{"id": 1, "initiator": "a", "responder": "b"}],
        "next_pair_id": 2,
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "state",
        {},
        _state(version=2),
        _state(version="1"),
        _state(vms=[{"name": "a b", "port": "p1"}]),
        _state(vms=[{"name": "a", "port": "p 1"}]),
        _state(vms=[{"port": "p1"}]),
        _state(vms=[{"name": "a", "port": "p1", "colour": "red"}]),
        _state(vms=[{"name": "a", "port": "p1", "mac": "ff:ff:ff:ff:ff:ff"}]),
        _state(vms=[{"name": "a", "port": "p1"}, {"name": "b", "port": "p1"}]),  # same port
        _state(pairs=[{"id": 1, "initiator": "a", "responder": "c"}]),  # unknown VM
        _state(pairs=[{"id": 1, "initiator": "a", "responder": "a"}]),
        _state(pairs=[{"id": 0, "initiator": "a", "responder": "b"}]),
        _state(pairs=[{"id": "1", "initiator": "a", "responder": "b"}]),
        _state(pairs=[{"initiator": "a", "responder": "b"}]),
        _state(
            pairs=[
                {"id": 1, "initiator": "a", "responder": "b"},
                {"id": 1, "initiator": "b", "responder": "a"},
            ]
        ),
        _state(
            pairs=[
                {"id": 1, "initiator": "a", "responder": "b"},
                {"id": 2, "initiator": "a", "responder": "b"},
            ]
        ),
        _state(pairs=[{"id": 1, "initiator": "a", "responder": "b", "note": "x"}]),
    ],
)
def test_from_dict_rejects_garbage(data: Any) -> None:
    with pytest.raises(PolicyError):
        Policy.from_dict(data)


@pytest.mark.parametrize("next_pair_id", [0, -5, "x", 1.5, None])
def test_from_dict_rejects_a_bad_next_pair_id(next_pair_id: Any) -> None:
    with pytest.raises(InvalidInput):
        Policy.from_dict(_state(pairs=[], next_pair_id=next_pair_id))
