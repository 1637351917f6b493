"""The state file and its journal with per-switch settings and VMs that name their switch
(issue 12).

The fabric ports set by PUT /switches/{dpid} are journalled as one record holding the whole
table (`{"switches": {"<dpid>": {"fabric_port": "NAME"}}}`), as the zones are, replayed on
load and checked as strictly as REST input. A VM record carries its "switch". A state file
written before either existed loads as it did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ryu_ctfw import store
from ryu_ctfw.policy import Policy, Vm
from ryu_ctfw.store import StateFileError

A, B = 0x1, 0x5254006084FF  # two hosts' bridges


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


def changed(policy: Policy, mutate: Callable[[Policy], object]) -> Policy:
    """A changed copy, as Firewall.change makes it."""
    after = policy.copy()
    mutate(after)
    return after


def journal(state: Path) -> Path:
    return store.journal_path(state)


def journal_lines(state: Path) -> list[Any]:
    return [json.loads(line) for line in journal(state).read_text().splitlines()]


def test_fabric_ports_round_trip_through_the_snapshot(state: Path, seed_policy: Policy) -> None:
    seed_policy.set_fabric_port(B, "eth1")
    seed_policy.set_fabric_port(A, "veth-a")
    store.save(state, seed_policy)
    assert json.loads(state.read_text())["switches"] == {
        "0000000000000001": {"fabric_port": "veth-a"},
        "00005254006084ff": {"fabric_port": "eth1"},
    }
    loaded = store.load(state)
    assert loaded == seed_policy
    assert loaded.fabric == {A: "veth-a", B: "eth1"}


def test_each_fabric_change_is_one_whole_table_record(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    snapshot = state.read_bytes()
    steps: list[Callable[[Policy], object]] = [
        lambda p: p.set_fabric_port(A, "eth1"),  # a switch not connected yet
        lambda p: p.set_fabric_port(B, "eth2"),
        lambda p: p.set_fabric_port(A, "eth3"),  # replaced
        lambda p: p.set_fabric_port(B, None),  # cleared
        lambda p: p.set_fabric_port(B, None),  # cleared again: nothing to record
        lambda p: p.set_fabric_port(A, "eth3"),  # the same again: nothing either
    ]
    policy = seed_policy
    for step in steps:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
        assert store.load(state) == policy
    assert state.read_bytes() == snapshot  # only the journal was written
    assert journal_lines(state) == [
        {"switches": {"0000000000000001": {"fabric_port": "eth1"}}},
        {"switches": {"0000000000000001": {"fabric_port": "eth1"},
                      "00005254006084ff": {"fabric_port": "eth2"}}},
        {"switches": {"0000000000000001": {"fabric_port": "eth3"},
                      "00005254006084ff": {"fabric_port": "eth2"}}},
        {"switches": {"0000000000000001": {"fabric_port": "eth3"}}},
    ]  # fmt: skip
    assert store.load(state).fabric == {A: "eth3"}
    # Compacted: the snapshot holds it, the journal is gone.
    store.compact(state, store.load(state))
    assert not journal(state).exists()
    assert store.load(state).fabric == {A: "eth3"}


def test_clearing_the_last_setting_replays_to_none(state: Path, seed_policy: Policy) -> None:
    seed_policy.set_fabric_port(A, "eth1")
    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.set_fabric_port(A, None))
    store.record(state, seed_policy, after)
    assert journal_lines(state) == [{"switches": {}}]
    assert store.load(state).fabric == {}


def test_a_fabric_change_and_a_vm_change_go_in_one_write(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)

    def both(p: Policy) -> None:
        p.set_fabric_port(A, "eth1")
        p.put_vm(Vm("vm3", "vnet0", switch="br1"))

    after = changed(seed_policy, both)
    store.record(state, seed_policy, after)
    lines = journal_lines(state)
    assert {"switches": {"0000000000000001": {"fabric_port": "eth1"}}} in lines
    assert store.load(state) == after


def test_a_vm_record_carries_its_switch(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    policy = seed_policy
    for step in [
        lambda p: p.put_vm(Vm("vm3", "vnet0", switch="00005254006084ff")),
        lambda p: p.put_vm(Vm("vm4", "vnet0", switch="br1")),  # one port name, two hosts
        lambda p: p.put_vm(Vm("vm4", "vnet1")),  # no longer names its switch
    ]:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
    lines = journal_lines(state)
    assert lines[0] == {"vm": "vm3", "value": {
        "name": "vm3", "id": 3, "port": "vnet0", "mac": None, "ips": [], "learned_mac": None,
        "switch": "00005254006084ff"}}  # fmt: skip
    assert {"vm": "vm4", "value": {**lines[0]["value"], "name": "vm4", "id": 4,
                                   "switch": "br1"}} in lines  # fmt: skip
    loaded = store.load(state)
    assert loaded == policy
    assert (loaded.vms["vm3"].switch, loaded.vms["vm4"].switch) == ("00005254006084ff", None)


def test_an_old_vm_record_without_a_switch_loads(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    journal(state).write_text(
        '{"vm": "vm3", "value": {"name": "vm3", "id": 3, "port": "tap5", "mac": null,'
        ' "ips": [], "learned_mac": null}}\n{"next_vm_id": 4}\n'
    )
    assert store.load(state).vms["vm3"] == Vm("vm3", "tap5", id=3)


def test_an_old_state_file_without_switches_loads_as_before(
    state: Path, seed_policy: Policy
) -> None:
    raw = seed_policy.to_dict()
    del raw["switches"]
    for vm in raw["vms"]:
        del vm["switch"]
    state.write_text(json.dumps(raw))
    loaded = store.load(state)
    assert loaded == seed_policy
    assert loaded.fabric == {}
    # A journal of this version replays over it.
    journal(state).write_text('{"switches": {"0000000000000001": {"fabric_port": "eth1"}}}\n')
    assert store.load(state).fabric == {A: "eth1"}


FABRIC = '{"0000000000000001": {"fabric_port": "eth1"}}'


@pytest.mark.parametrize(
    "line",
    [
        '{"switches": []}',
        '{"switches": null}',
        '{"switches": "eth1"}',
        '{"switches": {"1": {"fabric_port": "eth1"}}}',  # not 16 digits
        '{"switches": {"000000000000000G": {"fabric_port": "eth1"}}}',
        '{"switches": {"00005254006084FF": {"fabric_port": "eth1"}}}',  # written lower-case
        '{"switches": {"0000000000000001": {"fabric_port": null}}}',  # cleared is absent
        '{"switches": {"0000000000000001": {"fabric_port": "eth/1"}}}',
        '{"switches": {"0000000000000001": {"fabric_port": "a-name-too-long-x"}}}',
        '{"switches": {"0000000000000001": {"fabric_port": 1}}}',
        '{"switches": {"0000000000000001": {}}}',
        '{"switches": {"0000000000000001": {"fabric_port": "eth1", "mtu": 9000}}}',
        '{"switches": {"0000000000000001": "eth1"}}',
        '{"switches": ' + FABRIC + ', "zones": {}}',
        '{"switch": ' + FABRIC + "}",
        '{"vm": "vm3", "value": {"name": "vm3", "id": 3, "port": "tap5", "switch": "br/1"}}',
        '{"vm": "vm3", "value": {"name": "vm3", "id": 3, "port": "tap5", "switch": 1}}',
    ],
)
def test_a_corrupt_switches_record_is_an_error_naming_the_file_and_line(
    state: Path, seed_policy: Policy, line: str
) -> None:
    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.set_fabric_port(A, "eth1"))
    store.record(state, seed_policy, after)
    with journal(state).open("a") as f:
        f.write(line + "\n")
    content = journal(state).read_bytes()
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert f"journal {journal(state)} line 2 is corrupt" in str(exc.value)
    assert journal(state).read_bytes() == content  # left alone for a human to look at


@pytest.mark.parametrize(
    "switches",
    [[], {"1": {"fabric_port": "eth1"}}, {"0000000000000001": {"fabric_port": "a b"}},
     {"0000000000000001": {"port": "eth1"}}],
)  # fmt: skip
def test_a_bad_switches_table_in_the_snapshot_is_an_error(
    state: Path, seed_policy: Policy, switches: Any
) -> None:
    raw = seed_policy.to_dict()
    raw["switches"] = switches
    state.write_text(json.dumps(raw))
    with pytest.raises(StateFileError, match=str(state)):
        store.load(state)
