"""The state file: round trips, corrupt files, and saves that fail half-way."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ryu_ctfw import store
from ryu_ctfw.policy import Pair, PairRequest, Policy, Vm
from ryu_ctfw.store import StateFileError


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


def test_save_then_load_round_trips(state: Path, seed_policy: Policy) -> None:
    seed_policy.put_vm(Vm("vm3", "tap5", None, ("fd00::3",)))
    seed_policy.add_pair(PairRequest("vm3", "vm1"))
    seed_policy.delete_pair(1)
    store.save(state, seed_policy)
    loaded = store.load(state)
    assert loaded == seed_policy
    assert loaded.add_pair(PairRequest("vm1", "vm2")).id == 3  # next_pair_id survived too


def test_services_and_zones_round_trip(state: Path, seed_policy: Policy) -> None:
    seed_policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8100"))
    seed_policy.add_pair(PairRequest("vm2", "vm1", "icmp"))
    seed_policy.zone_for(0x5254006084FF)
    seed_policy.zone_for(0x1)
    store.save(state, seed_policy)
    loaded = store.load(state)
    assert loaded == seed_policy
    assert loaded.zones == {0x5254006084FF: 1, 0x1: 2}
    assert json.loads(state.read_text())["zones"] == {
        "0000000000000001": 2,
        "00005254006084ff": 1,
    }
    assert [(p.protocol, p.ports) for p in loaded.pairs.values()] == [
        ("any", None),
        ("tcp", "8000-8100"),
        ("icmp", None),
    ]


def test_the_file_is_the_policy_as_json(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    assert json.loads(state.read_text()) == seed_policy.to_dict()


def test_save_replaces_the_old_policy(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    store.save(state, Policy())
    assert store.load(state) == Policy()
    assert os.listdir(state.parent) == ["state.json"]


def test_save_creates_missing_folders(tmp_path: Path, seed_policy: Policy) -> None:
    path = tmp_path / "var" / "lib" / "ryu-ctfw" / "state.json"
    store.save(path, seed_policy)
    assert store.load(path) == seed_policy


def test_load_of_a_missing_file_is_an_empty_policy(state: Path) -> None:
    policy = store.load(state)
    assert policy == Policy()
    assert not state.exists()  # loading does not create it


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "{",
        '{"version": 1, "vms": [}',
        "null",
        "[]",
        '"state"',
        "{}",
        '{"version": 2, "vms": [], "pairs": []}',
        '{"version": 1, "vms": 5}',
        '{"version": 1, "vms": {"a": 1}}',
        '{"version": 1, "vms": [5]}',
        '{"version": 1, "vms": [{"name": "a b", "port": "tap1"}]}',
        '{"version": 1, "pairs": [5]}',
        '{"version": 1, "pairs": [{"id": 1, "initiator": "a", "responder": "b"}]}',
        '{"version": 1, "zones": {"0000000000000001": 0}}',
        '{"version": 1, "zones": {"0000000000000001": "1"}}',
        '{"version": 1, "zones": {"switch-1": 1}}',
        '{"version": 1, "zones": 5}',
        '{"version": 1, "vms": [{"name": "a", "port": "p1"}, {"name": "b", "port": "p2"}],'
        ' "pairs": [{"id": 1, "initiator": "a", "responder": "b", "protocol": "gre"}]}',
        '{"version": 1, "vms": [{"name": "a", "port": "p1"}, {"name": "b", "port": "p2"}],'
        ' "pairs": [{"id": 1, "initiator": "a", "responder": "b", "protocol": "icmp",'
        ' "ports": "8"}]}',
    ],
)
def test_a_corrupt_file_is_an_error_naming_the_file(state: Path, content: str) -> None:
    state.write_text(content)
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert str(state) in str(exc.value)
    assert state.read_text() == content  # left alone for a human to look at


def test_an_unreadable_state_file_is_an_error_naming_the_file(state: Path) -> None:
    state.mkdir()  # reading a folder fails with an OSError other than "not found"
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert str(state) in str(exc.value)


def test_a_file_that_is_not_utf8_is_a_state_file_error(state: Path) -> None:
    state.write_bytes(b"\xff\xfe\x00\x01 not a state file")
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert str(state) in str(exc.value)


def test_a_deeply_nested_file_is_a_state_file_error(state: Path) -> None:
    state.write_text("[" * 100_000)
    with pytest.raises(StateFileError):
        store.load(state)


# --- failed saves --------------------------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    "target",
    [
        (store.json, "dumps"),  # before any file is made
        (store.os, "fsync"),  # after the temp file is written
        (store.os, "replace"),  # at the rename
    ],
    ids=["json.dumps", "os.fsync", "os.replace"],
)
def test_a_failed_save_leaves_the_old_file_and_no_temp_files(
    state: Path,
    seed_policy: Policy,
    monkeypatch: pytest.MonkeyPatch,
    target: tuple[Any, str],
) -> None:
    store.save(state, seed_policy)
    old = state.read_bytes()
    changed = seed_policy.copy()
    changed.delete_pair(1)
    changed.delete_vm("vm2")

    with monkeypatch.context() as m:
        m.setattr(*target, _boom)
        with pytest.raises(OSError, match="No space left"):
            store.save(state, changed)

    assert state.read_bytes() == old
    assert os.listdir(state.parent) == ["state.json"]
    assert store.load(state) == seed_policy
    # And the next save works.
    store.save(state, changed)
    assert store.load(state) == changed
    assert os.listdir(state.parent) == ["state.json"]


def test_a_failed_first_save_leaves_no_file(
    state: Path, seed_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.os, "replace", _boom)
    with pytest.raises(OSError):
        store.save(state, seed_policy)
    assert os.listdir(state.parent) == []


def test_stale_temp_files_from_a_crash_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store.save(path, Policy())
    leftovers = [tmp_path / ".state.json.abc123", tmp_path / ".state.json.zz"]
    for p in leftovers:
        p.write_text('{"half": ')
    other = tmp_path / ".other.json.abc"
    other.write_text("not ours")
    assert sorted(store.remove_stale_temps(path)) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert other.exists() and path.exists()


# --- the journal ---------------------------------------------------------------------------


def changed(policy: Policy, mutate: Callable[[Policy], object]) -> Policy:
    """A changed copy, as Firewall.change makes it (unchanged VMs and pairs shared)."""
    after = policy.copy()
    mutate(after)
    return after


def journal(state: Path) -> Path:
    return state.with_name("state.json.journal")


def journal_lines(state: Path) -> list[Any]:
    return [json.loads(line) for line in journal(state).read_text().splitlines()]


def test_record_appends_each_change_and_load_replays_them(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    snapshot = state.read_bytes()
    steps: list[Callable[[Policy], object]] = [
        lambda p: p.put_vm(Vm("vm3", "tap5", None, ("fd00::3",))),  # add a VM
        lambda p: p.put_vm(Vm("vm1", "tap9", "52:54:00:00:00:01")),  # replace one
        lambda p: p.add_pair(PairRequest("vm3", "vm1", "tcp", "22")),  # add a pair
        lambda p: p.delete_pair(1),  # delete one
        lambda p: p.zone_for(0xAB),
        lambda p: (p.delete_vm("vm2"), p.put_vm(Vm("vm4", "tap4"))),  # two in one change
        lambda p: p.add_pair(PairRequest("vm4", "vm1", "icmp", log=True)),  # replays its log
        lambda p: (p.delete_pair(3), p.delete_vm("vm4")),
    ]
    policy = seed_policy
    for step in steps:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
        assert store.load(state) == policy
    assert state.read_bytes() == snapshot  # only the journal was written
    assert store.load(state).add_pair(PairRequest("vm1", "vm3")).id == 4  # next id survived
    lines = journal_lines(state)
    # A new VM is its record (with the id it was given) and the next id to give.
    assert lines[:5] == [
        {"vm": "vm3", "value": {"name": "vm3", "id": 3, "port": "tap5", "mac": None,
                                "ips": ["fd00::3"], "learned_mac": None, "switch": None}},
        {"next_vm_id": 4},
        {"vm": "vm1", "value": {"name": "vm1", "id": 1, "port": "tap9",
                                "mac": "52:54:00:00:00:01", "ips": [], "learned_mac": None,
                                "switch": None}},
        {"pair": 2, "value": {"id": 2, "initiator": "vm3", "responder": "vm1",
                              "protocol": "tcp", "ports": "22", "log": False}},
        {"next_pair_id": 3},
    ]  # fmt: skip
    assert {"next_vm_id": 5} in lines  # vm4
    logged = {"id": 3, "initiator": "vm4", "responder": "vm1", "protocol": "icmp",
              "ports": None, "log": True}  # fmt: skip
    assert {"pair": 3, "value": logged} in lines
    assert store.load(state).vms["vm1"].id == 1  # the replaced VM kept its id
    assert {"pair": 1, "value": None} in journal_lines(state)
    assert {"zones": {"00000000000000ab": 1}} in journal_lines(state)
    assert {"vm": "vm2", "value": None} in journal_lines(state)


def test_vm_ids_and_learned_macs_round_trip(state: Path, seed_policy: Policy) -> None:
    seed_policy.put_vm(Vm("vm3", "tap5"))
    seed_policy.learn_mac("vm3", "52:54:00:00:00:33")
    store.save(state, seed_policy)
    loaded = store.load(state)
    assert loaded == seed_policy
    assert {n: (vm.id, vm.learned_mac) for n, vm in loaded.vms.items()} == {
        "vm1": (1, None), "vm2": (2, None), "vm3": (3, "52:54:00:00:00:33"),
    }  # fmt: skip
    assert json.loads(state.read_text())["next_vm_id"] == 4


def test_a_learned_mac_and_a_deleted_vm_are_journalled(state: Path, seed_policy: Policy) -> None:
    seed_policy.put_vm(Vm("vm3", "tap5"))
    store.save(state, seed_policy)
    policy = seed_policy
    for step in [
        lambda p: p.learn_mac("vm3", "52:54:00:00:00:33"),
        lambda p: p.delete_vm("vm3"),
        lambda p: p.put_vm(Vm("vm3", "tap5")),  # a new VM of the old name: a new id
    ]:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
    assert journal_lines(state)[0] == {"vm": "vm3", "value": {
        "name": "vm3", "id": 3, "port": "tap5", "mac": None, "ips": [],
        "learned_mac": "52:54:00:00:00:33", "switch": None}}  # fmt: skip
    loaded = store.load(state)
    assert loaded == policy
    assert (loaded.vms["vm3"].id, loaded.vms["vm3"].learned_mac, loaded.next_vm_id) == (4, None, 5)
    store._journal_lines.clear()
    # A restart then a new VM: the ids given before are still not given again.
    after = changed(loaded, lambda p: p.put_vm(Vm("vm9", "tap9")))
    assert after.vms["vm9"].id == 5


def test_an_old_state_file_without_vm_ids_loads_with_ids_in_order(state: Path) -> None:
    state.write_text(json.dumps({
        "version": 1,
        "vms": [
            {"name": "vm2", "port": "tap4", "mac": "52:54:00:99:90:78", "ips": ["198.18.0.2"]},
            {"name": "vm1", "port": "tap2", "mac": None, "ips": []},
        ],
        "pairs": [{"id": 1, "initiator": "vm1", "responder": "vm2", "protocol": "any",
                   "ports": None}],
        "next_pair_id": 2,
        "zones": {"0000000000000001": 1},
    }))  # fmt: skip
    loaded = store.load(state)
    assert [(vm.name, vm.id) for vm in loaded.vms.values()] == [("vm2", 1), ("vm1", 2)]
    assert loaded.next_vm_id == 3
    # Saved again, the ids are in the file and stay.
    store.save(state, loaded)
    assert [vm["id"] for vm in json.loads(state.read_text())["vms"]] == [1, 2]
    assert store.load(state) == loaded


def test_an_old_journal_record_without_an_id_replays(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    journal(state).write_text(
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5", "mac": null, "ips": []}}\n'
    )
    loaded = store.load(state)
    assert loaded.vms["vm3"].id == 3  # after the numbered ones
    assert loaded.next_vm_id == 4


def test_replay_keeps_the_order_of_vms_and_pairs(state: Path, seed_policy: Policy) -> None:
    seed_policy.put_vm(Vm("vm3", "tap5"))
    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.put_vm(Vm("vm1", "tap1")))  # replaced in place
    store.record(state, seed_policy, after)
    again = changed(after, lambda p: p.put_vm(Vm("vm0", "tap0")))  # new ones at the end
    store.record(state, after, again)
    assert list(store.load(state).vms) == ["vm1", "vm2", "vm3", "vm0"]


def test_a_record_without_a_difference_writes_nothing(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    stat = state.stat()
    store.record(state, seed_policy, seed_policy.copy())
    # A VM replaced by an equal one is not a difference either.
    store.record(state, seed_policy, changed(seed_policy, lambda p: p.put_vm(Vm(**_vm1(p)))))
    assert os.listdir(state.parent) == ["state.json"]
    assert state.stat().st_mtime_ns == stat.st_mtime_ns


def _vm1(policy: Policy) -> dict[str, Any]:
    vm = policy.vms["vm1"]
    return {"name": vm.name, "port": vm.port, "mac": vm.mac, "ips": vm.ips}


def test_the_first_record_writes_a_snapshot(state: Path, seed_policy: Policy) -> None:
    store.record(state, Policy(), seed_policy)
    assert os.listdir(state.parent) == ["state.json"]  # a journal never exists alone
    assert json.loads(state.read_text()) == seed_policy.to_dict()


def _add_vms(state: Path, policy: Policy, count: int, first: int = 0) -> Policy:
    for i in range(first, first + count):
        after = changed(policy, lambda p, i=i: p.put_vm(Vm(f"x{i}", f"tapx{i}")))
        store.record(state, policy, after)
        policy = after
    return policy


def test_the_journal_is_compacted_after_compact_after_records(
    state: Path, seed_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "COMPACT_AFTER", 6)
    store.save(state, seed_policy)
    policy = _add_vms(state, seed_policy, 3)
    assert len(journal_lines(state)) == 6  # each new VM: its record and the next VM id
    assert store.load(state) == policy
    # The next change folds the journal into the snapshot first, then starts a new one.
    after = _add_vms(state, policy, 1, first=3)
    assert json.loads(state.read_text()) == policy.to_dict()
    assert journal_lines(state) == [
        {"vm": "x3", "value": after.vms["x3"].to_dict()},
        {"next_vm_id": after.next_vm_id},
    ]
    assert store.load(state) == after
    store.compact(state, after)
    assert os.listdir(state.parent) == ["state.json"]
    assert store.load(state) == after


def test_a_journal_left_by_an_earlier_run_is_counted(
    state: Path, seed_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "COMPACT_AFTER", 6)
    store.save(state, seed_policy)
    policy = _add_vms(state, seed_policy, 3)
    store._journal_lines.clear()  # as after a restart
    after = _add_vms(state, policy, 1, first=3)
    assert len(journal_lines(state)) == 2
    assert store.load(state) == after


class Crash(BaseException):
    """The process dies here."""


def test_a_crash_between_compaction_and_journal_delete_loses_nothing(
    state: Path, seed_policy: Policy
) -> None:
    store.save(state, seed_policy)
    policy = seed_policy
    for step in [
        lambda p: p.put_vm(Vm("vm3", "tap5")),
        lambda p: p.add_pair(PairRequest("vm3", "vm1")),
        lambda p: p.delete_pair(2),  # the same pair twice: replay must keep the last
        lambda p: p.zone_for(0x1),
    ]:
        after = changed(policy, step)
        store.record(state, policy, after)
        policy = after
    old_journal = journal(state).read_bytes()
    store.compact(state, store.load(state))
    journal(state).write_bytes(old_journal)  # the delete never happened
    assert store.load(state) == policy
    assert store.load(state).to_dict() == policy.to_dict()  # the order too


def test_a_crash_in_a_compacting_record_leaves_the_old_policy(
    state: Path, seed_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change that triggers a compaction touches what the journal holds: the new
    snapshot must not hold that change, or replaying the old journal over it would undo
    part of it and leave a mix."""
    monkeypatch.setattr(store, "COMPACT_AFTER", 2)
    store.save(state, seed_policy)
    policy = _add_vms(state, seed_policy, 2)  # the journal holds x0 and x1
    after = changed(policy, lambda p: (p.delete_vm("x0"), p.put_vm(Vm("x2", "tapx2"))))

    def crash(path: Path) -> bool:
        raise Crash

    monkeypatch.setattr(store, "_unlink", crash)
    with pytest.raises(Crash):
        store.record(state, policy, after)
    assert store.load(state) == policy


def test_a_torn_last_line_is_ignored(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.put_vm(Vm("vm3", "tap5")))
    store.record(state, seed_policy, after)
    with journal(state).open("a") as f:
        f.write('{"vm": "vm4", "value": {"name": "vm4", "po')  # a crash mid-append
    assert store.load(state) == after
    # And the next change is not glued to it.
    again = changed(after, lambda p: p.put_vm(Vm("vm5", "tap6")))
    store.record(state, after, again)
    assert store.load(state) == again
    assert len(journal_lines(state)) == 4  # two new VMs, each with the next VM id


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "",
        "[]",
        "null",
        '{"vm": "vm3"}',
        '{"vm": "vm3", "value": null, "extra": 1}',
        '{"pair": 1, "value": null, "vm": "vm1"}',
        '{"VM": "vm3", "value": null}',
        '{"vm": 5, "value": null}',
        '{"vm": "a b", "value": null}',
        '{"vm": "vm3", "value": "tap5"}',
        '{"vm": "vm3", "value": {"name": "vm4", "port": "tap5", "mac": null, "ips": []}}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": 5, "mac": null, "ips": []}}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5", "colour": "red"}}',
        '{"pair": "1", "value": null}',
        '{"pair": true, "value": null}',
        '{"pair": 0, "value": null}',
        '{"pair": 1, "value": [1]}',
        '{"pair": 1, "value": {"id": 2, "initiator": "vm1", "responder": "vm2"}}',
        '{"pair": 1, "value": {"id": true, "initiator": "vm1", "responder": "vm2"}}',
        '{"pair": 1, "value": {"id": 1, "initiator": "vm1", "responder": "vm2",'
        ' "protocol": "gre"}}',
        '{"zones": 5}',
        '{"zones": {"ab": 1}}',
        '{"zones": {"00000000000000ab": 0}}',
        '{"zones": {"00000000000000ab": "1"}}',
        '{"next_pair_id": 0}',
        '{"next_pair_id": "2"}',
        '{"next_pair_id": false}',
        '{"next_vm_id": 0}',
        '{"next_vm_id": "2"}',
        '{"next_vm_id": true}',
        '{"next_vm_id": 2, "next_pair_id": 2}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5", "id": -1}}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5", "id": 65535}}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5", "id": "3"}}',
        '{"vm": "vm3", "value": {"name": "vm3", "port": "tap5",'
        ' "learned_mac": "01:00:5e:00:00:01"}}',
        "[" * 100_000,
    ],
)
def test_a_corrupt_journal_line_is_an_error_naming_the_file_and_line(
    state: Path, seed_policy: Policy, line: str
) -> None:
    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.put_vm(Vm("vm3", "tap5")))
    store.record(state, seed_policy, after)
    lineno = len(journal_lines(state)) + 1
    with journal(state).open("a") as f:
        f.write(line + "\n")
    store.record(state, after, changed(after, lambda p: p.delete_pair(1)))
    content = journal(state).read_bytes()
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert lineno == 3  # after the new VM's record and the next VM id
    assert f"journal {journal(state)} line {lineno} is corrupt" in str(exc.value)
    assert journal(state).read_bytes() == content  # left alone for a human to look at


def test_a_corrupt_last_line_with_its_newline_is_an_error(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    journal(state).write_text('{"vm": "vm3", "value": {"name": "vm3", "po\n')
    with pytest.raises(StateFileError, match="line 1 is corrupt"):
        store.load(state)


def test_a_journal_leading_to_an_invalid_policy_is_an_error(
    state: Path, seed_policy: Policy
) -> None:
    store.save(state, seed_policy)
    journal(state).write_text('{"vm": "vm2", "value": null}\n')  # pair 1 still uses vm2
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert str(state) in str(exc.value) and str(journal(state)) in str(exc.value)


@pytest.mark.parametrize(
    "snapshot",
    [
        '{"version": 1, "vms": 5}',
        '{"version": 1, "vms": [5]}',
        '{"version": 1, "vms": [{"port": "tap1"}]}',
        '{"version": 1, "pairs": [{"id": 1}, {"id": 1}]}',
        "[]",
    ],
)
def test_a_corrupt_snapshot_under_a_journal_is_an_error_naming_it(
    state: Path, snapshot: str
) -> None:
    state.write_text(snapshot)
    journal(state).write_text('{"next_pair_id": 3}\n')
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert f"state file {state} is corrupt" in str(exc.value)


def test_a_journal_without_its_snapshot_is_an_error(state: Path) -> None:
    journal(state).write_text('{"next_pair_id": 3}\n')
    with pytest.raises(StateFileError, match="without its state file"):
        store.load(state)


def test_an_unreadable_journal_is_an_error_naming_it(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    journal(state).mkdir()
    with pytest.raises(StateFileError) as exc:
        store.load(state)
    assert f"cannot read journal {journal(state)}" in str(exc.value)


def test_stale_temp_files_removal_leaves_the_journal(state: Path, seed_policy: Policy) -> None:
    store.save(state, seed_policy)
    store.record(state, seed_policy, changed(seed_policy, lambda p: p.delete_pair(1)))
    assert store.remove_stale_temps(state) == []
    assert sorted(os.listdir(state.parent)) == ["state.json", "state.json.journal"]


def _half_then_boom(real: Callable[[int, Any], int]) -> Callable[[int, Any], int]:
    """os.write that writes half of the first buffer, then fails: a full disk mid-append."""
    calls: list[int] = []

    def write(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) > 1:
            _boom()
        return real(fd, bytes(data[: len(data) // 2]))

    return write


@pytest.mark.parametrize(
    ("target", "new_journal"),
    [
        *((target, new) for target in ("os.write", "half a write", "os.fsync") for new in (0, 1)),
        ("folder fsync", 1),  # only a new journal's name needs it
    ],
)
def test_a_failed_record_stores_nothing(
    state: Path,
    seed_policy: Policy,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    new_journal: bool,
) -> None:
    store.save(state, seed_policy)
    policy = seed_policy
    if not new_journal:
        policy = changed(seed_policy, lambda p: p.put_vm(Vm("vm3", "tap5")))
        store.record(state, seed_policy, policy)
    files = {name: (state.parent / name).read_bytes() for name in os.listdir(state.parent)}
    after = changed(policy, lambda p: (p.delete_pair(1), p.delete_vm("vm2")))

    with monkeypatch.context() as m:
        if target == "os.write":
            m.setattr(store.os, "write", _boom)
        elif target == "half a write":
            m.setattr(store.os, "write", _half_then_boom(os.write))
        elif target == "os.fsync":
            m.setattr(store.os, "fsync", _boom)
        else:
            m.setattr(store, "_fsync_dir", _boom)
        with pytest.raises(OSError, match="No space left"):
            store.record(state, policy, after)

    assert store.load(state) == policy  # the REST call fails, and nothing changed
    for name, content in files.items():
        assert (state.parent / name).read_bytes() == content
    # And the next record works.
    store.record(state, policy, after)
    assert store.load(state) == after


def _big_policy(pairs: int) -> Policy:
    policy = Policy()
    for i in range(100):
        policy.put_vm(Vm(f"vm{i}", f"tap{i}"))
    ends = [(a, b) for a in range(100) for b in range(100) if a != b][:pairs]
    for pair_id, (a, b) in enumerate(ends, 1):
        policy.pairs[pair_id] = Pair(pair_id, f"vm{a}", f"vm{b}")
    policy.next_pair_id = 9001  # the same new id, so the same record, at every size
    return policy


def test_the_cost_of_a_record_does_not_grow_with_the_policy(tmp_path: Path) -> None:
    appended = []
    for size in (10, 5000):
        state = tmp_path / str(size) / "state.json"
        policy = _big_policy(size)
        store.save(state, policy)
        after = changed(policy, lambda p: p.add_pair(PairRequest("vm7", "vm0", "tcp", "22")))
        store.record(state, policy, after)
        appended.append(journal(state).stat().st_size)
        assert store.load(state) == after
    assert appended[0] == appended[1] > 0


def test_a_firewall_compacts_the_journal_when_it_starts(state: Path, seed_policy: Policy) -> None:
    from ryu_ctfw.firewall import Firewall

    store.save(state, seed_policy)
    after = changed(seed_policy, lambda p: p.put_vm(Vm("vm3", "tap5")))
    store.record(state, seed_policy, after)
    fw = Firewall(state)
    assert fw.policy == after
    assert os.listdir(state.parent) == ["state.json"]
    assert json.loads(state.read_text()) == after.to_dict()
    # Its changes go to the journal, and a new firewall sees them.
    fw.change(lambda p: p.delete_pair(1))
    fw.zone_for(0xAB)
    assert journal_lines(state) == [{"pair": 1, "value": None}, {"zones": {"00000000000000ab": 1}}]
    assert Firewall(state).policy == fw.policy


def test_a_zone_that_cannot_be_stored_is_not_given(
    state: Path, seed_policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ryu_ctfw.firewall import Firewall

    store.save(state, seed_policy)
    fw = Firewall(state)
    with monkeypatch.context() as m:
        m.setattr(store.os, "fsync", _boom)
        with pytest.raises(OSError, match="No space left"):
            fw.zone_for(0xAB)
    assert fw.policy.zones == {} == store.load(state).zones
    assert fw.zone_for(0xAB) == 1
    assert store.load(state).zones == {0xAB: 1}
