"""The state file and its journal with groups and networks (issue 11).

Groups and networks are journalled like VMs: one record a changed group or network, its
whole value or null, replayed on load, checked as strictly as REST input. A state file
written before they existed has no lists for them and loads as it did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ryu_ctfw import store
from ryu_ctfw.policy import Group, Network, PairRequest, Policy, Vm
from ryu_ctfw.store import StateFileError

OUTSIDE = ("198.19.0.0/24", "2001:db8:19::/48")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


@pytest.fixture
def mixed(seed_policy: Policy) -> Policy:
    """The seed (vm1, vm2, pair vm1 -> vm2) with vm3, a network, a group and pairs of both."""
    seed_policy.put_vm(Vm("vm3", "tap5"))
    seed_policy.put_network(Network("outside", "uplink0", OUTSIDE))
    seed_policy.put_group(Group("web", ("vm1", "vm3")))
    seed_policy.add_pair(PairRequest("web", "outside", "udp", "53"))
    seed_policy.add_pair(PairRequest("outside", "vm2", "tcp", "443"))
    return seed_policy


def changed(policy: Policy, mutate: Callable[[Policy], object]) -> Policy:
    """A changed copy, as Firewall.change makes it."""
    after = policy.copy()
    mutate(after)
    return after


def journal(state: Path) -> Path:
    return store.journal_path(state)


def journal_lines(state: Path) -> list[Any]:
    return [json.loads(line) for line in journal(state).read_text().splitlines()]


def test_save_then_load_round_trips(state: Path, mixed: Policy) -> None:
    store.save(state, mixed)
    loaded = store.load(state)
    assert loaded == mixed
    assert loaded.to_dict() == mixed.to_dict()  # the order too
    assert loaded.networks["outside"] == Network("outside", "uplink0", OUTSIDE, 4)
    assert loaded.groups["web"] == Group("web", ("vm1", "vm3"), 5)
    assert loaded.put_network(Network("dns", "uplink0", ("198.51.100.53/32",))) is True
    assert loaded.networks["dns"].id == 6  # the one space of ids carried on


def test_record_appends_each_change_and_load_replays_them(state: Path, mixed: Policy) -> None:
    store.save(state, mixed)
    snapshot = state.read_bytes()
    steps: list[Callable[[Policy], object]] = [
        lambda p: p.put_network(Network("dns", "uplink0", ("198.51.100.53/32",))),
        lambda p: p.put_group(Group("web", ("vm3",))),  # a membership change
        lambda p: p.put_network(Network("outside", "uplink1", OUTSIDE)),  # replaced
        lambda p: p.put_group(Group("db", ())),
        lambda p: p.add_pair(PairRequest("web", "db", "tcp", "5432")),
        lambda p: (p.delete_pair(4), p.delete_group("db")),  # two in one change
        lambda p: p.delete_network("dns"),
    ]
    policy = mixed
    for step in steps:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
        assert store.load(state) == policy
    assert state.read_bytes() == snapshot  # only the journal was written
    lines = journal_lines(state)
    assert lines[:4] == [
        {"network": "dns", "value": {"name": "dns", "id": 6, "port": "uplink0",
                                     "cidrs": ["198.51.100.53/32"]}},
        {"next_vm_id": 7},
        {"group": "web", "value": {"name": "web", "id": 5, "members": ["vm3"]}},
        {"network": "outside", "value": {"name": "outside", "id": 4, "port": "uplink1",
                                         "cidrs": list(OUTSIDE)}},
    ]  # fmt: skip
    assert {"group": "db", "value": None} in lines
    assert lines[-1] == {"network": "dns", "value": None}
    loaded = store.load(state)
    assert list(loaded.networks) == ["outside"] and list(loaded.groups) == ["web"]
    assert loaded.to_dict() == policy.to_dict()


def test_a_record_without_a_difference_writes_nothing(state: Path, mixed: Policy) -> None:
    store.save(state, mixed)

    def put_them_again(p: Policy) -> None:
        p.put_group(Group("web", ("vm1", "vm3")))
        p.put_network(Network("outside", "uplink0", OUTSIDE))

    same = changed(mixed, put_them_again)
    store.record(state, mixed, same)
    assert os.listdir(state.parent) == ["state.json"]


def test_a_state_file_from_before_groups_and_networks_loads(
    state: Path, seed_policy: Policy
) -> None:
    old = seed_policy.to_dict()
    del old["groups"], old["networks"]
    state.write_text(json.dumps(old))
    assert store.load(state) == seed_policy
    # And a journal written since replays over it.
    journal(state).write_text(
        '{"network": "outside", "value": {"name": "outside", "id": 3, "port": "uplink0",'
        ' "cidrs": ["198.19.0.0/24"]}}\n'
        '{"group": "web", "value": {"name": "web", "id": 4, "members": ["vm1"]}}\n'
        '{"next_vm_id": 5}\n'
    )
    loaded = store.load(state)
    assert loaded.networks == {"outside": Network("outside", "uplink0", ("198.19.0.0/24",), 3)}
    assert loaded.groups == {"web": Group("web", ("vm1",), 4)}
    assert loaded.next_vm_id == 5


def test_the_journal_is_compacted_with_groups_and_networks(
    state: Path, mixed: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "COMPACT_AFTER", 3)
    store.save(state, mixed)
    policy = mixed
    for i in range(4):
        after = changed(policy, lambda p, i=i: p.put_group(Group("web", ("vm1",) * (i % 2))))
        store.record(state, policy, after)
        policy = after
        net = Network(f"n{i}", "uplink9", (f"10.{i}.0.0/16",))
        after = changed(policy, lambda p, net=net: p.put_network(net))
        store.record(state, policy, after)
        policy = after
        assert store.load(state) == policy
    assert len(journal_lines(state)) <= 3 + 2  # compacted on the way
    assert "n0" in json.loads(state.read_text())["networks"][1]["name"]
    store.compact(state, store.load(state))
    assert os.listdir(state.parent) == ["state.json"]
    assert store.load(state) == policy


def test_a_crash_between_compaction_and_journal_delete_loses_nothing(
    state: Path, mixed: Policy
) -> None:
    store.save(state, mixed)
    policy = mixed
    for step in [
        lambda p: p.put_group(Group("db", ("vm2",))),
        lambda p: p.put_group(Group("db", ())),  # the same group twice: the last one wins
        lambda p: p.put_network(Network("dns", "uplink0", ("198.51.100.53/32",))),
        lambda p: p.delete_network("dns"),
    ]:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
    old_journal = journal(state).read_bytes()
    store.compact(state, store.load(state))
    journal(state).write_bytes(old_journal)  # the delete never happened
    assert store.load(state).to_dict() == policy.to_dict()


def test_a_torn_last_line_is_ignored(state: Path, mixed: Policy) -> None:
    store.save(state, mixed)
    after = changed(mixed, lambda p: p.put_group(Group("web", ("vm1",))))
    store.record(state, mixed, after)
    with journal(state).open("a") as f:
        f.write('{"network": "dns", "value": {"name": "dns", "id": 6, "po')  # a crash
    assert store.load(state) == after
    again = changed(after, lambda p: p.put_group(Group("db", ())))
    store.record(state, after, again)  # not glued to the torn line
    assert store.load(state) == again


NET = '"name": "n", "id": 9, "port": "uplink9", "cidrs": ["10.0.0.0/8"]'


@pytest.mark.parametrize(
    "line",
    [
        '{"group": "g"}',
        '{"group": "g", "value": null, "extra": 1}',
        '{"group": 5, "value": null}',
        '{"group": "-g", "value": null}',
        '{"group": "g", "value": ["vm1"]}',
        '{"group": "g", "value": {"name": "h", "id": 9, "members": []}}',
        '{"group": "g", "value": {"name": "g", "members": []}}',  # no id
        '{"group": "g", "value": {"name": "g", "id": 0, "members": []}}',
        '{"group": "g", "value": {"name": "g", "id": true, "members": []}}',
        '{"group": "g", "value": {"name": "g", "id": 32768, "members": []}}',
        '{"group": "g", "value": {"name": "g", "id": 9}}',
        '{"group": "g", "value": {"name": "g", "id": 9, "members": "vm1"}}',
        '{"group": "g", "value": {"name": "g", "id": 9, "members": ["vm1", "vm1"]}}',
        '{"group": "g", "value": {"name": "g", "id": 9, "members": ["a b"]}}',
        '{"group": "g", "value": {"name": "g", "id": 9, "members": [], "colour": "red"}}',
        '{"network": "n"}',
        '{"network": "n", "group": "n", "value": null}',
        '{"network": "a/b", "value": null}',
        '{"network": "n", "value": 1}',
        '{"network": "m", "value": {' + NET + "}}",
        '{"network": "n", "value": {' + NET.replace('"id": 9', '"id": -1') + "}}",
        '{"network": "n", "value": {' + NET.replace('"id": 9, ', "") + "}}",
        '{"network": "n", "value": {' + NET.replace('"uplink9"', '"a b"') + "}}",
        '{"network": "n", "value": {' + NET.replace('"uplink9"', "null") + "}}",
        '{"network": "n", "value": {' + NET.replace("10.0.0.0/8", "10.0.0.1/8") + "}}",
        '{"network": "n", "value": {' + NET.replace("10.0.0.0/8", "fe80::%eth0/64") + "}}",
        '{"network": "n", "value": {' + NET.replace('["10.0.0.0/8"]', "[]") + "}}",
        '{"network": "n", "value": {' + NET + ', "members": []}}',
        '{"Network": "n", "value": null}',
    ],
)
def test_a_corrupt_record_is_an_error_naming_the_file_and_line(
    state: Path, mixed: Policy, line: str
) -> None:
    store.save(state, mixed)
    after = changed(mixed, lambda p: p.put_group(Group("web", ("vm1",))))
    store.record(state, mixed, after)
    with journal(state).open("a") as f:
        f.write(line + "\n")
    content = journal(state).read_bytes()
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert f"journal {journal(state)} line 2 is corrupt" in str(exc.value)
    assert journal(state).read_bytes() == content  # left alone for a human to look at


@pytest.mark.parametrize(
    ("line", "words"),
    [
        # Each well-formed, but the policy it leads to is not.
        ('{"vm": "vm3", "value": null}', "no VM named 'vm3'"),  # web lists it
        ('{"network": "outside", "value": null}', "named 'outside'"),  # pairs 2, 3 name it
        ('{"group": "web", "value": null}', "named 'web'"),
        ('{"group": "web", "value": {"name": "web", "id": 5, "members": ["vm9"]}}', "'vm9'"),
        ('{"group": "vm1", "value": {"name": "vm1", "id": 9, "members": []}}', "taken by a vm"),
        ('{"network": "dns", "value": {"name": "dns", "id": 9, "port": "tap2",'
         ' "cidrs": ["10.0.0.0/8"]}}', "tap2"),
        ('{"network": "dns", "value": {"name": "dns", "id": 1, "port": "uplink9",'
         ' "cidrs": ["10.0.0.0/8"]}}', "id 1"),
    ],
)  # fmt: skip
def test_a_journal_leading_to_an_invalid_policy_is_an_error(
    state: Path, mixed: Policy, line: str, words: str
) -> None:
    store.save(state, mixed)
    journal(state).write_text(line + "\n")
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert str(state) in str(exc.value) and str(journal(state)) in str(exc.value)
    assert words in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("groups", {"web": []}), ("networks", [1]), ("groups", [{"members": []}])],
)
def test_a_bad_list_in_the_snapshot_is_an_error_naming_the_file(
    state: Path, mixed: Policy, field: str, value: Any
) -> None:
    raw = mixed.to_dict()
    raw[field] = value
    state.write_text(json.dumps(raw))
    with pytest.raises(StateFileError, match=str(state)):
        store.load(state)
    # With a journal too (the replay reads the lists first).
    journal(state).write_text('{"next_pair_id": 9}\n')
    with pytest.raises(StateFileError, match=str(state)):
        store.load(state)
