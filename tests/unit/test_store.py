"""The state file: round trips, corrupt files, and saves that fail half-way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ryu_ctfw import store
from ryu_ctfw.policy import PairRequest, Policy, Vm
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
