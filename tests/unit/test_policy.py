"""The policy model: validation, conflicts, pairs, and the persistence form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ryu_ctfw import policy as policy_mod
from ryu_ctfw.policy import (
    MAX_VM_ID,
    Conflict,
    InvalidInput,
    NotFound,
    Pair,
    PairRequest,
    Policy,
    PolicyError,
    Vm,
    pair_request_from_body,
    validate_ips,
    validate_mac,
    validate_port_name,
    validate_vm_name,
    vm_from_body,
    vm_from_state,
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
    p.add_pair(PairRequest("vm1", "vm2"))
    return p


def put(policy: Policy, name: Any, body: Any) -> bool:
    """What PUT /vms/{name} does to the policy."""
    return policy.put_vm(vm_from_body(name, body))


def post(policy: Policy, body: Any) -> Pair:
    """What POST /pairs does to the policy."""
    return policy.add_pair(pair_request_from_body(body))


def req(
    initiator: str, responder: str, protocol: str = "any", ports: str | None = None
) -> PairRequest:
    return PairRequest(initiator, responder, protocol, ports)


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
    assert policy.get_vm("vm9") == Vm("vm9", "tap9", None, (), id=4)
    assert put(policy, "vm9", {"port": "tap10", "mac": "52:54:00:00:00:0A", "ips": []}) is False
    # An update keeps the id the VM was given.
    assert policy.get_vm("vm9") == Vm("vm9", "tap10", "52:54:00:00:00:0a", (), id=4)


def test_a_vm_may_keep_its_own_port_mac_and_ips(policy: Policy) -> None:
    assert put(policy, "vm1", {"port": "tap2", "mac": MAC1, "ips": ["192.168.0.1"]}) is False


@pytest.mark.parametrize(
    "body",
    [
        {"port": "tap2"},  # vm1's port
        {"port": "tap2", "mac": "52:54:00:00:00:09", "ips": ["10.9.9.9"]},
    ],
)
def test_the_port_of_another_vm_is_409_and_changes_nothing(
    policy: Policy, body: dict[str, Any]
) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        put(policy, "vm9", body)
    assert exc.value.status == 409
    assert "vm1" in str(exc.value) and "tap2" in str(exc.value)
    assert policy.to_dict() == before


@pytest.mark.parametrize(
    "body",
    [
        {"port": "tap9", "mac": MAC1},  # vm1's MAC
        {"port": "tap9", "mac": MAC1.upper()},  # the same MAC, spelled differently
        {"port": "tap9", "ips": ["10.9.9.9", "192.168.0.1"]},  # vm1's IP
        {"port": "tap9", "mac": MAC1, "ips": ["192.168.0.1"]},  # both: a twin on another bridge
    ],
)
def test_the_mac_and_ips_of_another_vm_are_allowed(policy: Policy, body: dict[str, Any]) -> None:
    # VMs on different bridges are different L2 domains and conntrack zones.
    assert put(policy, "vm9", body) is True
    vm9 = policy.get_vm("vm9")
    assert vm9.mac in (None, MAC1)
    assert policy.get_vm("vm1") == Vm("vm1", "tap2", MAC1, ("192.168.0.1",), id=1)
    assert put(policy, "vm8", body | {"port": "tap8"}) is True  # and a third one
    assert (vm9.id, policy.get_vm("vm8").id) == (4, 5)


def test_updating_a_vm_onto_another_vms_port_is_409(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict):
        put(policy, "vm1", {"port": "tap4"})
    assert policy.to_dict() == before


def test_a_repeated_ipv6_is_allowed_and_stored_normalised(policy: Policy) -> None:
    put(policy, "vm9", {"port": "tap9", "ips": ["fd00::9"]})
    assert put(policy, "vm8", {"port": "tap8", "ips": ["fd00:0:0::09"]}) is True
    assert policy.get_vm("vm8").ips == policy.get_vm("vm9").ips == ("fd00::9",)


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
    pair = policy.add_pair(req("vm2", "vm1"))  # the reverse direction is another pair
    assert pair == Pair(2, "vm2", "vm1")
    assert policy.get_pair(2) == pair
    assert [p.id for p in policy.pairs_of("vm1")] == [1, 2]
    assert policy.pairs_of("vm3") == []


def test_pair_with_itself_is_400(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        policy.add_pair(req("vm3", "vm3"))
    assert exc.value.status == 400
    assert policy.to_dict() == before


@pytest.mark.parametrize(("initiator", "responder"), [("nope", "vm1"), ("vm1", "nope")])
def test_pair_with_unknown_vm_is_404(policy: Policy, initiator: str, responder: str) -> None:
    before = policy.to_dict()
    with pytest.raises(NotFound) as exc:
        policy.add_pair(req(initiator, responder))
    assert exc.value.status == 404
    assert "nope" in str(exc.value)
    assert policy.to_dict() == before


def test_duplicate_pair_is_409(policy: Policy) -> None:
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        policy.add_pair(req("vm1", "vm2"))
    assert exc.value.status == 409
    assert policy.to_dict() == before


def test_pair_ids_increase_and_are_never_reused(policy: Policy) -> None:
    second = policy.add_pair(req("vm1", "vm3"))
    assert second.id == 2
    policy.delete_pair(2)  # the highest id
    policy.delete_pair(1)
    assert policy.pairs == {}
    assert policy.add_pair(req("vm1", "vm3")).id == 3
    assert policy.add_pair(req("vm1", "vm2")).id == 4


def test_pair_ids_are_not_reused_after_a_round_trip(policy: Policy) -> None:
    policy.add_pair(req("vm1", "vm3"))
    policy.delete_pair(2)
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again.add_pair(req("vm2", "vm3")).id == 3


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
        pair_request_from_body(body)


def test_pair_body() -> None:
    assert pair_request_from_body({"initiator": "a", "responder": "b"}) == PairRequest(
        "a", "b", "any", None
    )


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
            {
                "name": "vm1",
                "id": 1,
                "port": "tap2",
                "mac": MAC1,
                "ips": ["192.168.0.1"],
                "learned_mac": None,
                "switch": None,
            },
            {
                "name": "vm2",
                "id": 2,
                "port": "tap4",
                "mac": MAC2,
                "ips": ["192.168.0.2"],
                "learned_mac": None,
                "switch": None,
            },
            {
                "name": "vm3",
                "id": 3,
                "port": "tap5",
                "mac": None,
                "ips": [],
                "learned_mac": None,
                "switch": None,
            },
        ],
        "pairs": [
            {
                "id": 1,
                "initiator": "vm1",
                "responder": "vm2",
                "protocol": "any",
                "ports": None,
                "log": False,
            }
        ],
        "groups": [],
        "networks": [],
        "next_pair_id": 2,
        "next_vm_id": 4,
        "zones": {},
        "switches": {},
    }


def test_round_trip_through_json(policy: Policy) -> None:
    policy.add_pair(req("vm2", "vm3"))
    policy.add_pair(req("vm3", "vm1"))
    policy.delete_pair(2)
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert again.to_dict() == policy.to_dict()


def test_round_trip_keeps_a_pairs_log(policy: Policy) -> None:
    logged = policy.add_pair(PairRequest("vm2", "vm3", "tcp", "22", log=True))
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again.get_pair(logged.id).log is True
    assert again.get_pair(1).log is False


def test_round_trip_keeps_vm_ids_learned_macs_and_next_vm_id(policy: Policy) -> None:
    policy.learn_mac("vm3", "52:54:00:00:00:03")
    policy.delete_vm("vm3")
    put(policy, "vm3", {"port": "tap5"})  # a new VM of an old name: a new id
    policy.learn_mac("vm3", "52:54:00:00:00:33")
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert again.get_vm("vm3") == Vm("vm3", "tap5", None, (), 4, "52:54:00:00:00:33")
    assert again.next_vm_id == 5
    put(again, "vm7", {"port": "tap7"})
    assert again.get_vm("vm7").id == 5  # not 3, the deleted VM's


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
    assert policy.add_pair(req("b", "a")).id == 8


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
        _state(pairs=[{"id": True, "initiator": "a", "responder": "b"}]),
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
        _state(pairs=[{"id": 1, "initiator": "a", "responder": "b", "protocol": "sctp"}]),
        _state(pairs=[{"id": 1, "initiator": "a", "responder": "b", "ports": "22"}]),
        _state(
            pairs=[{"id": 1, "initiator": "a", "responder": "b", "protocol": "tcp", "ports": "0"}]
        ),
        _state(
            pairs=[
                {"id": 1, "initiator": "a", "responder": "b", "protocol": "tcp", "ports": 22},
                {"id": 2, "initiator": "a", "responder": "b", "protocol": "tcp", "ports": "22"},
            ]
        ),
        _state(zones={"0000000000000001": 0}),
    ],
)
def test_from_dict_rejects_garbage(data: Any) -> None:
    with pytest.raises(PolicyError):
        Policy.from_dict(data)


@pytest.mark.parametrize("next_pair_id", [0, -5, "x", 1.5, None])
def test_from_dict_rejects_a_bad_next_pair_id(next_pair_id: Any) -> None:
    with pytest.raises(InvalidInput):
        Policy.from_dict(_state(pairs=[], next_pair_id=next_pair_id))


# --- pair requests: protocol and ports -----------------------------------------------------

AB = {"initiator": "a", "responder": "b"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, PairRequest("a", "b", "any", None)),
        ({"protocol": "any"}, PairRequest("a", "b", "any", None)),
        ({"protocol": "icmp"}, PairRequest("a", "b", "icmp", None)),
        ({"protocol": "tcp"}, PairRequest("a", "b", "tcp", None)),
        ({"protocol": "udp", "ports": None}, PairRequest("a", "b", "udp", None)),
        ({"protocol": "tcp", "ports": "22"}, PairRequest("a", "b", "tcp", "22")),
        ({"protocol": "tcp", "ports": 22}, PairRequest("a", "b", "tcp", "22")),  # an int
        ({"protocol": "udp", "ports": "8000-8100"}, PairRequest("a", "b", "udp", "8000-8100")),
        ({"protocol": "udp", "ports": "53-53"}, PairRequest("a", "b", "udp", "53")),
        ({"protocol": "tcp", "ports": "022"}, PairRequest("a", "b", "tcp", "22")),
        ({"protocol": "tcp", "ports": "1-65535"}, PairRequest("a", "b", "tcp", "1-65535")),
        ({"protocol": "tcp", "ports": 65535}, PairRequest("a", "b", "tcp", "65535")),
        ({"protocol": "tcp", "ports": "1"}, PairRequest("a", "b", "tcp", "1")),
        ({"log": True}, PairRequest("a", "b", "any", None, log=True)),
        ({"log": False}, PairRequest("a", "b", "any", None, log=False)),
        ({"protocol": "tcp", "ports": "22", "log": True}, PairRequest("a", "b", "tcp", "22", True)),
    ],
)
def test_good_pair_requests_are_normalised(extra: dict[str, Any], expected: PairRequest) -> None:
    assert pair_request_from_body(AB | extra) == expected


@pytest.mark.parametrize(
    ("extra", "field", "detail"),
    [
        ({"protocol": "sctp"}, "protocol", "any, tcp, udp, icmp"),
        ({"protocol": "TCP"}, "protocol", "any, tcp, udp, icmp"),
        ({"protocol": None}, "protocol", "any, tcp, udp, icmp"),
        ({"protocol": 6}, "protocol", "any, tcp, udp, icmp"),
        ({"ports": "22"}, "ports", "'any' has no ports"),  # any is the default
        ({"protocol": "any", "ports": 22}, "ports", "'any' has no ports"),
        ({"protocol": "icmp", "ports": "8"}, "ports", "'icmp' has no ports"),
        ({"protocol": "tcp", "ports": "0"}, "ports", "0 is outside 1-65535"),
        ({"protocol": "tcp", "ports": 0}, "ports", "0 is outside 1-65535"),
        ({"protocol": "udp", "ports": "65536"}, "ports", "65536 is outside 1-65535"),
        ({"protocol": "udp", "ports": 70000}, "ports", "70000 is outside 1-65535"),
        ({"protocol": "tcp", "ports": "0-10"}, "ports", "0 is outside 1-65535"),
        ({"protocol": "tcp", "ports": "1-99999"}, "ports", "99999 is outside 1-65535"),
        ({"protocol": "tcp", "ports": "8100-8000"}, "ports", "reversed"),
        ({"protocol": "tcp", "ports": "ssh"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "22,80"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "22-"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "-22"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": " 22"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "22\n"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "123456"}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": "\u0662\u0662"}, "ports", 'like "22"'),  # Arabic 22
        ({"protocol": "tcp", "ports": ""}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": -1}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": True}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": 22.0}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": [22]}, "ports", 'like "22"'),
        ({"protocol": "tcp", "ports": {"from": 1}}, "ports", 'like "22"'),
        ({"log": "true"}, "log", "true or false"),  # JSON true, not a string
        ({"log": 1}, "log", "true or false"),
        ({"log": None}, "log", "true or false"),
        ({"port": "22"}, "port", "unknown field"),
        ({"initiator": 5}, "initiator", "expected the name of a VM, group or network"),
        ({"responder": None}, "responder", "expected the name of a VM, group or network"),
    ],
)
def test_bad_pair_requests_are_400_naming_the_field(
    policy: Policy, extra: dict[str, Any], field: str, detail: str
) -> None:
    body = {"initiator": "vm1", "responder": "vm3"} | extra
    before = policy.to_dict()
    with pytest.raises(InvalidInput) as exc:
        post(policy, body)
    assert exc.value.status == 400
    message = str(exc.value)
    assert field in message and detail in message, message
    assert policy.to_dict() == before


@pytest.mark.parametrize("missing", ["initiator", "responder"])
def test_a_missing_vm_in_a_pair_request_is_named(missing: str) -> None:
    body = {k: v for k, v in AB.items() if k != missing}
    with pytest.raises(InvalidInput, match=f"missing field: {missing}"):
        pair_request_from_body(body)


# --- pairs: services -----------------------------------------------------------------------


def test_a_pair_has_protocol_ports_and_service(policy: Policy) -> None:
    pair = post(policy, {"initiator": "vm1", "responder": "vm3", "protocol": "tcp", "ports": 22})
    assert pair == Pair(2, "vm1", "vm3", "tcp", "22")
    assert pair.service == ("vm1", "vm3", "tcp", "22")
    assert pair.port_range() == (22, 22)
    assert pair.to_dict() == {
        "id": 2,
        "initiator": "vm1",
        "responder": "vm3",
        "protocol": "tcp",
        "ports": "22",
        "log": False,
    }
    assert policy.get_pair(1).to_dict()["protocol"] == "any"
    assert policy.get_pair(1).to_dict()["ports"] is None


def test_the_same_vms_may_have_several_services(policy: Policy) -> None:
    services = [
        ("tcp", "22"),
        ("tcp", "80"),
        ("tcp", "8000-8100"),
        ("tcp", "8000-8063"),  # overlaps the range above: still another service
        ("tcp", None),
        ("udp", "22"),
        ("udp", None),
        ("icmp", None),
    ]
    ids = [policy.add_pair(req("vm1", "vm2", p, ports)).id for p, ports in services]
    assert ids == list(range(2, 2 + len(services)))
    assert [(p.protocol, p.ports) for p in policy.pairs_of("vm2")] == [("any", None), *services]


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ({}, {}),
        ({}, {"protocol": "any"}),
        ({"protocol": "tcp", "ports": "22"}, {"protocol": "tcp", "ports": 22}),
        ({"protocol": "tcp", "ports": "22"}, {"protocol": "tcp", "ports": "22-22"}),
        ({"protocol": "udp", "ports": "8000-8100"}, {"protocol": "udp", "ports": "08000-8100"}),
        ({"protocol": "icmp"}, {"protocol": "icmp"}),
        ({"protocol": "tcp"}, {"protocol": "tcp", "ports": None}),
    ],
)
def test_a_duplicate_service_is_409_and_changes_nothing(
    first: dict[str, Any], again: dict[str, Any]
) -> None:
    policy = Policy()
    policy.put_vm(Vm("a", "p1"))
    policy.put_vm(Vm("b", "p2"))
    existing = post(policy, AB | first)
    before = policy.to_dict()
    with pytest.raises(Conflict) as exc:
        post(policy, AB | again)
    assert exc.value.status == 409
    assert f"(id {existing.id})" in str(exc.value)
    assert "a -> b" in str(exc.value)
    assert policy.to_dict() == before


def test_the_reverse_of_a_service_is_another_pair(policy: Policy) -> None:
    post(policy, {"initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": "22"})
    reverse = post(
        policy, {"initiator": "vm2", "responder": "vm1", "protocol": "tcp", "ports": "22"}
    )
    assert reverse.id == 3


def test_a_refused_pair_does_not_use_up_an_id(policy: Policy) -> None:
    with pytest.raises(Conflict):
        policy.add_pair(req("vm1", "vm2"))
    with pytest.raises(NotFound):
        policy.add_pair(req("vm1", "nope", "tcp", "22"))
    assert policy.add_pair(req("vm1", "vm2", "udp")).id == 2


# --- zones ---------------------------------------------------------------------------------

DPID1 = 0x0000_0000_0000_0001
DPID2 = 0x0000_5254_0060_84FF
DPID3 = 0xFFFF_FFFF_FFFF_FFFF


def test_zone_for_assigns_the_lowest_free_zone_once() -> None:
    policy = Policy()
    assert policy.zone_for(DPID2) == 1
    assert policy.zone_for(DPID1) == 2
    assert policy.zone_for(DPID2) == 1  # kept
    assert policy.zone_for(DPID3) == 3
    assert policy.zones == {DPID2: 1, DPID1: 2, DPID3: 3}


def test_zone_for_fills_gaps() -> None:
    policy = Policy(zones={DPID1: 1, DPID2: 3})
    assert policy.zone_for(DPID3) == 2
    assert policy.zone_for(0x42) == 4


def test_zones_are_persisted_by_dpid() -> None:
    policy = Policy()
    policy.zone_for(DPID3)
    policy.zone_for(DPID1)
    data = policy.to_dict()
    assert data["zones"] == {"0000000000000001": 2, "ffffffffffffffff": 1}
    assert list(data["zones"]) == sorted(data["zones"])  # by dpid
    again = Policy.from_dict(json.loads(json.dumps(data)))
    assert again.zones == {DPID3: 1, DPID1: 2}
    assert again.zone_for(DPID1) == 2
    assert again.zone_for(DPID2) == 3  # not a zone another bridge already has


def test_copy_keeps_zones_apart() -> None:
    policy = Policy()
    policy.zone_for(DPID1)
    clone = policy.copy()
    clone.zone_for(DPID2)
    assert policy.zones == {DPID1: 1}


def test_a_state_without_zones_or_services_still_loads() -> None:
    """A state file written before protocols, ports and zones existed."""
    old = {
        "version": 1,
        "vms": [{"name": "a", "port": "p1", "mac": None, "ips": []}, {"name": "b", "port": "p2"}],
        "pairs": [{"id": 3, "initiator": "a", "responder": "b"}],
        "next_pair_id": 4,
    }
    policy = Policy.from_dict(old)
    assert policy.get_pair(3) == Pair(3, "a", "b", "any", None)
    assert policy.zones == {}
    assert policy.next_pair_id == 4


def test_pairs_with_services_round_trip(policy: Policy) -> None:
    policy.add_pair(req("vm1", "vm2", "tcp", "8000-8100"))
    policy.add_pair(req("vm2", "vm1", "icmp"))
    policy.add_pair(req("vm1", "vm3", "udp", "53"))
    policy.zone_for(DPID2)
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert again.to_dict() == policy.to_dict()


@pytest.mark.parametrize(
    "zones",
    [
        {"0000000000000001": 0},
        {"0000000000000001": 65536},
        {"0000000000000001": -1},
        {"0000000000000001": "1"},
        {"0000000000000001": None},
        {"0000000000000001": 1.0},
    ],
)
def test_from_dict_rejects_bad_zones(zones: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="bad zone"):
        Policy.from_dict(_state(zones=zones))


@pytest.mark.parametrize(
    "zones",
    [
        pytest.param(
            {"0000000000000001": 1, "0000000000000002": 1},
            id="one zone for two bridges",
        ),
        pytest.param(
            {"0000000000000001": True},
            id="bool zone",
        ),
        pytest.param(
            {"switch-1": 1},
            id="dpid not hex",
        ),
        pytest.param(
            {"-1": 1},
            id="negative dpid",
        ),
        pytest.param(
            {"10000000000000000": 1},
            id="dpid over 64 bits",
        ),
    ],
)
def test_from_dict_rejects_bad_zone_keys_and_shared_zones(zones: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        Policy.from_dict(_state(zones=zones))


# --- VM ids --------------------------------------------------------------------------------


def test_new_vms_get_increasing_ids_and_an_update_keeps_its_id(policy: Policy) -> None:
    assert [policy.get_vm(n).id for n in ("vm1", "vm2", "vm3")] == [1, 2, 3]
    assert policy.next_vm_id == 4
    put(policy, "vm2", {"port": "tap9", "mac": "52:54:00:00:00:09", "ips": ["10.0.0.9"]})
    assert policy.get_vm("vm2").id == 2
    put(policy, "vm9", {"port": "tap10"})
    assert policy.get_vm("vm9").id == 4
    assert policy.next_vm_id == 5


def test_an_id_given_by_a_client_body_is_not_possible() -> None:
    with pytest.raises(InvalidInput, match="id"):
        vm_from_body("vm1", {"port": "tap2", "id": 7})
    with pytest.raises(InvalidInput, match="learned_mac"):
        vm_from_body("vm1", {"port": "tap2", "learned_mac": MAC1})


def test_ids_of_deleted_vms_are_not_reused_while_fresh_ones_are_left(policy: Policy) -> None:
    policy.delete_vm("vm3")
    put(policy, "vm3", {"port": "tap5"})
    assert policy.get_vm("vm3").id == 4
    put(policy, "vm4", {"port": "tap6"})
    assert policy.get_vm("vm4").id == 5


def test_a_refused_put_uses_no_id(policy: Policy) -> None:
    with pytest.raises(Conflict):
        put(policy, "vm9", {"port": "tap2"})
    put(policy, "vm9", {"port": "tap9"})
    assert policy.get_vm("vm9").id == 4


def test_once_ids_run_out_the_lowest_free_one_is_reused() -> None:
    policy = Policy()
    for name in ("a", "b", "c"):
        put(policy, name, {"port": f"p{name}"})
    policy.next_vm_id = MAX_VM_ID
    put(policy, "d", {"port": "pd"})
    assert policy.get_vm("d").id == MAX_VM_ID  # the last fresh one
    assert policy.next_vm_id == MAX_VM_ID + 1
    policy.delete_vm("b")
    put(policy, "e", {"port": "pe"})
    assert policy.get_vm("e").id == 2  # b's
    policy.delete_vm("a")
    policy.delete_vm("c")
    put(policy, "f", {"port": "pf"})
    assert policy.get_vm("f").id == 1
    assert policy.next_vm_id == MAX_VM_ID + 1  # reusing lowers nothing


def test_when_every_id_is_in_use_a_new_vm_is_409_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy_mod, "MAX_VMS", MAX_VM_ID + 10)  # ids run out first here
    policy = Policy()
    policy.vms = {f"v{i}": Vm(f"v{i}", f"p{i}", id=i) for i in range(1, MAX_VM_ID + 1)}
    policy.next_vm_id = MAX_VM_ID + 1
    with pytest.raises(Conflict, match="ids for VMs, groups and networks"):
        put(policy, "one-more", {"port": "px"})
    assert "one-more" not in policy.vms
    assert put(policy, "v7", {"port": "p7", "ips": ["10.0.0.7"]}) is False  # updates still work
    assert policy.get_vm("v7").id == 7


def test_two_stored_vms_with_one_id_are_refused() -> None:
    data = _state(vms=[{"name": "a", "port": "p1", "id": 3}, {"name": "b", "port": "p2", "id": 3}])
    with pytest.raises(InvalidInput, match="id 3"):
        Policy.from_dict(data)


@pytest.mark.parametrize("vm_id", [-1, MAX_VM_ID + 1, 0xFFFF, "1", 1.0, True, None])
def test_a_stored_vm_with_a_bad_id_is_refused(vm_id: Any) -> None:
    with pytest.raises(InvalidInput, match="bad id"):
        Policy.from_dict(_state(vms=[{"name": "a", "port": "p1", "id": vm_id}]))


@pytest.mark.parametrize("next_vm_id", [0, -5, "x", 1.5, True])
def test_from_dict_rejects_a_bad_next_vm_id(next_vm_id: Any) -> None:
    with pytest.raises(InvalidInput, match="next_vm_id"):
        Policy.from_dict(_state(next_vm_id=next_vm_id))


def test_a_state_without_vm_ids_numbers_its_vms_in_order() -> None:
    """A state file written before VM ids: the VMs get 1, 2, ... as listed."""
    old = {
        "version": 1,
        "vms": [
            {"name": "z", "port": "p1", "mac": MAC1, "ips": []},
            {"name": "a", "port": "p2"},
            {"name": "m", "port": "p3"},
        ],
        "pairs": [{"id": 1, "initiator": "z", "responder": "a"}],
        "next_pair_id": 2,
    }
    policy = Policy.from_dict(old)
    assert {n: vm.id for n, vm in policy.vms.items()} == {"z": 1, "a": 2, "m": 3}
    assert policy.next_vm_id == 4
    put(policy, "new", {"port": "p4"})
    assert policy.get_vm("new").id == 4


def test_unnumbered_stored_vms_get_ids_after_the_numbered_ones() -> None:
    data = _state(
        vms=[{"name": "a", "port": "p1"}, {"name": "b", "port": "p2", "id": 5}],
        next_vm_id=6,
    )
    policy = Policy.from_dict(data)
    assert (policy.get_vm("a").id, policy.get_vm("b").id, policy.next_vm_id) == (6, 5, 7)


def test_from_dict_never_lowers_next_vm_id() -> None:
    data = _state(vms=[{"name": "a", "port": "p1", "id": 9}], pairs=[], next_vm_id=2)
    policy = Policy.from_dict(data)
    assert policy.next_vm_id == 10
    stale_gap = Policy.from_dict(_state(vms=[{"name": "a", "port": "p1", "id": 1}], pairs=[],
                                        next_vm_id=50))  # fmt: skip
    assert stale_gap.next_vm_id == 50  # ids 2..49 were given once: still not reused


def test_copy_keeps_next_vm_id(policy: Policy) -> None:
    clone = policy.copy()
    put(clone, "vm9", {"port": "tap9"})
    assert (policy.next_vm_id, clone.next_vm_id) == (4, 5)
    assert "vm9" not in policy.vms


# --- learned MACs --------------------------------------------------------------------------

MAC_L = "52:54:00:00:00:1e"


def test_learn_mac_binds_a_vm_without_mac(policy: Policy) -> None:
    policy.learn_mac("vm3", MAC_L)
    vm3 = policy.get_vm("vm3")
    assert (vm3.mac, vm3.learned_mac, vm3.known_mac, vm3.id) == (None, MAC_L, MAC_L, 3)


def test_learn_mac_never_overrides_a_configured_mac(policy: Policy) -> None:
    policy.learn_mac("vm1", MAC_L)
    vm1 = policy.get_vm("vm1")
    assert (vm1.mac, vm1.learned_mac, vm1.known_mac) == (MAC1, None, MAC1)


def test_learn_mac_of_an_unknown_vm_is_404(policy: Policy) -> None:
    with pytest.raises(NotFound):
        policy.learn_mac("nope", MAC_L)


def test_known_mac_is_the_configured_mac_else_the_learned_one() -> None:
    assert Vm("a", "p", MAC1, learned_mac=MAC2).known_mac == MAC1
    assert Vm("a", "p", None, learned_mac=MAC2).known_mac == MAC2
    assert Vm("a", "p").known_mac is None


def test_an_update_on_the_same_port_without_a_mac_keeps_the_learned_mac(policy: Policy) -> None:
    policy.learn_mac("vm3", MAC_L)
    assert put(policy, "vm3", {"port": "tap5", "ips": ["10.0.0.3"]}) is False
    assert policy.get_vm("vm3") == Vm("vm3", "tap5", None, ("10.0.0.3",), 3, MAC_L)


@pytest.mark.parametrize(
    "body",
    [
        {"port": "tap9"},  # another port: maybe another NIC
        {"port": "tap5", "mac": MAC2.replace("78", "79")},  # a MAC given: it wins
    ],
    ids=["moved", "mac given"],
)
def test_an_update_that_moves_the_vm_or_gives_a_mac_forgets_the_learned_mac(
    policy: Policy, body: dict[str, Any]
) -> None:
    policy.learn_mac("vm3", MAC_L)
    put(policy, "vm3", body)
    vm3 = policy.get_vm("vm3")
    assert vm3.learned_mac is None and vm3.id == 3
    # Dropping the MAC again does not bring the forgotten one back.
    put(policy, "vm3", {"port": "tap5"})
    assert policy.get_vm("vm3").known_mac is None


def test_a_deleted_and_recreated_vm_learns_afresh(policy: Policy) -> None:
    policy.learn_mac("vm3", MAC_L)
    policy.delete_vm("vm3")
    put(policy, "vm3", {"port": "tap5"})
    assert policy.get_vm("vm3").learned_mac is None


def test_vm_to_dict_has_the_policys_fields_too() -> None:
    vm = Vm("a", "p1", None, ("10.0.0.1",), 7, MAC_L)
    assert vm.to_dict() == {
        "name": "a", "id": 7, "port": "p1", "mac": None, "ips": ["10.0.0.1"],
        "learned_mac": MAC_L, "switch": None,
    }  # fmt: skip
    assert vm_from_state("a", vm.to_dict()) == vm


def test_a_stored_learned_mac_is_dropped_when_a_mac_is_configured() -> None:
    raw = {"name": "a", "id": 2, "port": "p1", "mac": MAC1, "ips": [], "learned_mac": MAC2}
    assert vm_from_state("a", raw) == Vm("a", "p1", MAC1, (), 2, None)


@pytest.mark.parametrize(
    "raw",
    [
        {"port": "p1", "learned_mac": "ff:ff:ff:ff:ff:ff"},
        {"port": "p1", "learned_mac": "not a mac"},
        {"port": "p1", "learned_mac": 5},
        {"port": "p1", "colour": "red"},
        {"id": 1},
        "p1",
    ],
)
def test_vm_from_state_refuses_what_rest_would(raw: Any) -> None:
    with pytest.raises(InvalidInput):
        vm_from_state("a", raw)


# --- limits and address spellings (issue 10, point 9) ---------------------------------------


def test_a_scoped_ipv6_address_is_refused() -> None:
    with pytest.raises(policy_mod.InvalidInput, match="scope id"):
        policy_mod.validate_ips(["fe80::1%eth0"])
    assert policy_mod.validate_ips(["fe80::1"]) == ("fe80::1",)


def test_two_spellings_of_one_address_are_one_address() -> None:
    assert policy_mod.validate_ips(["2001:DB8:0::1"]) == ("2001:db8::1",)
    with pytest.raises(policy_mod.InvalidInput, match="listed twice"):
        policy_mod.validate_ips(["2001:db8::1", "2001:DB8:0:0::1"])


def test_too_many_ips_for_one_vm_are_refused() -> None:
    many = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(policy_mod.MAX_IPS_PER_VM + 1)]
    with pytest.raises(policy_mod.InvalidInput, match=f"at most {policy_mod.MAX_IPS_PER_VM}"):
        policy_mod.validate_ips(many)
    assert len(policy_mod.validate_ips(many[:-1])) == policy_mod.MAX_IPS_PER_VM


def test_the_number_of_vms_and_pairs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_mod, "MAX_VMS", 2)
    monkeypatch.setattr(policy_mod, "MAX_PAIRS", 1)
    p = policy_mod.Policy()
    p.put_vm(policy_mod.Vm("a", "tapa"))
    p.put_vm(policy_mod.Vm("b", "tapb"))
    with pytest.raises(policy_mod.Conflict, match="most VMs"):
        p.put_vm(policy_mod.Vm("c", "tapc"))
    p.put_vm(policy_mod.Vm("a", "tapa2"))  # an update is not a new VM
    p.add_pair(policy_mod.PairRequest("a", "b"))
    with pytest.raises(policy_mod.Conflict, match="most pairs"):
        p.add_pair(policy_mod.PairRequest("b", "a"))
    assert sorted(p.vms) == ["a", "b"] and len(p.pairs) == 1
