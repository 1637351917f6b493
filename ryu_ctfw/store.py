"""Persistence: a snapshot of the policy, and a journal of the changes made since.

The snapshot (`state.json`) is the whole policy as one JSON object. It is written to a
temporary file in the same folder, fsynced, renamed over the old one and the folder is
fsynced, so after a crash it holds either the old policy or the new one, never a mix.

Rewriting the snapshot costs O(policy), so a change is instead appended to the journal
(`state.json.journal`, next to it): one JSON record a line, each setting one entity (a VM,
a group, a network, a pair, the zones, the per-switch settings, the next pair id) to its
new value, null meaning deleted. A change's
records go in one write, then an fsync, before the change is answered; a crash in the
middle leaves a last line without its newline, which loading ignores, so a change is in
or out, never half. Any other bad line is an error: skipping it would lose a change that
was answered as done.

Replaying a record sets an entity to a value, so replaying a record the snapshot already
contains changes nothing. That is what makes compaction (writing the snapshot of the
policy the journal leads to, then deleting the journal) safe at any moment: a crash after
the rename but before the delete replays the journal over a snapshot that already has it.
It only holds if the snapshot is exactly the snapshot plus the journal, no more, so the
change that triggers a compaction is appended to the new, empty journal after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ryu_ctfw.policy import (
    DPID_RE,
    MAX_ID,
    Policy,
    PolicyError,
    group_from_body,
    network_from_body,
    pair_request_from_body,
    switch_settings_from_body,
    validate_vm_name,
    vm_from_state,
)

# Records in the journal before the next change compacts it into the snapshot: bounds the
# journal (and the time to load it) at little cost, one O(policy) write per this many.
COMPACT_AFTER = 1000


class StateFileError(Exception):
    """The state file exists but cannot be used; starting empty would lose the policy."""


# --- paths -------------------------------------------------------------------------------


def journal_path(path: Path) -> Path:
    # No leading dot: remove_stale_temps deletes `.{name}.*` and must never delete this.
    return path.with_name(path.name + ".journal")


def has_journal(path: Path) -> bool:
    return journal_path(path).exists()


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class StateFileLocked(StateFileError):
    """Another process (a running ryu-ctfw) holds the state file's lock."""


def lock(path: Path) -> int:
    """Take the state file's lock for this process's life; the locked descriptor.

    An OS lock (flock) on `<state>.lock`, which holds the pid of its holder: the OS drops
    it when the process dies, SIGKILL included, so a stale lock file never blocks a start.
    Take it before anything else touches the state's folder (remove_stale_temps, compact):
    the other instance's temporary file is a save in progress. Keep the descriptor open:
    closing it releases the lock.
    """
    lpath = lock_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lpath, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StateFileError(f"cannot open lock file {lpath}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateFileLocked(
            f"state file {path} is in use by another ryu-ctfw (pid {holder}, lock {lpath});"
            " stop it first, or give this one another state_file"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # Ours now: the pid only tells the next one who holds it (the lock is the flock).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files a crash mid-save left next to the state file (at start only:
    while we run, a temporary file there is a save in progress)."""
    stale = list(path.parent.glob(f".{path.name}.*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


# --- loading -----------------------------------------------------------------------------


_MISSING = object()  # no snapshot (None would be a snapshot holding `null`)


def load(path: Path) -> Policy:
    """The stored policy (the snapshot with the journal replayed over it), or an empty one
    when neither file exists yet."""
    raw = _read_snapshot(path)
    records = _read_journal(path)
    if raw is _MISSING:
        if records is not None:
            raise StateFileError(
                f"journal {journal_path(path)} exists without its state file {path};"
                " remove both to start empty"
            )
        return Policy()
    if records:
        raw = _replay(path, raw, records)
    try:
        return Policy.from_dict(raw)
    except (ValueError, PolicyError, TypeError, AttributeError, RecursionError) as e:
        where = f" with its journal {journal_path(path)}" if records else ""
        raise StateFileError(f"state file {path}{where} is corrupt: {e}") from e


def _read_snapshot(path: Path) -> Any:
    """The snapshot's JSON, or _MISSING when there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _MISSING
    except OSError as e:
        raise StateFileError(f"cannot read state file {path}: {e.strerror}") from e
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise StateFileError(f"state file {path} is corrupt: {e}") from e


Record = tuple[str, Any, Any]  # (kind, key, value): ("vm", name, {...} | None), ...
# The entities journalled one by one: record kind -> the snapshot's list and its key.
ENTITIES = {
    "vm": ("vms", "name"),
    "network": ("networks", "name"),
    "group": ("groups", "name"),
    "pair": ("pairs", "id"),
}


def _read_journal(path: Path) -> list[Record] | None:
    """The journal's records, or None when there is no journal."""
    jpath = journal_path(path)
    try:
        data = jpath.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(f"cannot read journal {jpath}: {e.strerror}") from e
    lines = data.split(b"\n")
    # The last piece is empty when the journal ends with a newline. Otherwise it is an
    # append a crash cut short: its fsync never returned, so its change was never answered.
    lines.pop()
    return [_parse_record(jpath, n, line) for n, line in enumerate(lines, 1)]


def _parse_record(jpath: Path, lineno: int, line: bytes) -> Record:
    try:
        return _record_from_json(json.loads(line))
    except (ValueError, PolicyError, TypeError, RecursionError) as e:
        raise StateFileError(f"journal {jpath} line {lineno} is corrupt: {e}") from e


def _record_from_json(obj: Any) -> Record:
    """Check one journal line's shape and values as strictly as REST input."""
    keys = set(obj) if isinstance(obj, dict) else None
    if keys == {"vm", "value"}:
        name, value = validate_vm_name(obj["vm"]), obj["value"]
        if value is not None:
            _check_entity(value, "name", name)
            vm_from_state(name, value)
        return ("vm", name, value)
    for kind, from_body in (("group", group_from_body), ("network", network_from_body)):
        if keys == {kind, "value"}:
            name, value = validate_vm_name(obj[kind], kind), obj["value"]
            if value is not None:
                _check_entity(value, "name", name)
                _check_id(kind, value)
                from_body(name, {k: v for k, v in value.items() if k not in ("id", "name")})
            return (kind, name, value)
    if keys == {"pair", "value"}:
        pair_id, value = obj["pair"], obj["value"]
        if not _is_count(pair_id):
            raise ValueError(f"bad pair id {pair_id!r}")
        if value is not None:
            _check_entity(value, "id", pair_id)
            pair_request_from_body({k: v for k, v in value.items() if k != "id"})
        return ("pair", pair_id, value)
    if keys == {"zones"}:
        zones = obj["zones"]
        if not isinstance(zones, dict) or not all(
            re.fullmatch(r"[0-9a-f]{16}", dpid) and _is_count(zone) and zone <= 65535
            for dpid, zone in zones.items()
        ):
            raise ValueError(f"bad zones {zones!r}")
        return ("zones", None, zones)
    if keys == {"switches"}:
        _check_switches(obj["switches"])
        return ("switches", None, obj["switches"])
    for counter in ("next_pair_id", "next_vm_id"):
        if keys == {counter}:
            if not _is_count(obj[counter]):
                raise ValueError(f"bad {counter} {obj[counter]!r}")
            return (counter, None, obj[counter])
    raise ValueError(f"unknown record {obj!r}")


def _check_switches(switches: Any) -> None:
    """The whole table of per-switch settings: dpid (16 lower-case hex digits) -> the PUT
    /switches/{dpid} body. A cleared setting is absent, never null: Policy.to_dict writes
    only the switches that have one."""
    if not isinstance(switches, dict):
        raise ValueError(f"bad switches {switches!r}: an object of dpid -> settings")
    for dpid, settings in switches.items():
        if not DPID_RE.fullmatch(dpid):
            raise ValueError(f"bad switch id {dpid!r} in switches")
        if switch_settings_from_body(settings) is None:
            raise ValueError(f"switch {dpid} has a null fabric_port (a cleared one is absent)")


def _check_entity(value: Any, key: str, expected: Any) -> None:
    if not isinstance(value, dict) or value.get(key) != expected or type(value[key]) is bool:
        raise ValueError(f"value {value!r} is not the {key} {expected!r} it is recorded for")


def _check_id(kind: str, value: dict[str, Any]) -> None:
    # Groups and networks were journalled with their ids from the start: unlike an old
    # VM record, one without an id is not from an earlier version but damaged.
    ident = value.get("id")
    if not _is_count(ident) or ident > MAX_ID:
        raise ValueError(f"bad id {ident!r} for {kind} {value['name']!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _replay(path: Path, raw: Any, records: list[Record]) -> dict[str, Any]:
    """The snapshot's JSON with the journal applied, still to be validated as a whole."""
    if not isinstance(raw, dict):
        raise StateFileError(f"state file {path} is corrupt: not a JSON object")
    # A snapshot from before groups and networks has no lists for them: empty ones.
    entities = {kind: _keyed(path, raw, field, key) for kind, (field, key) in ENTITIES.items()}
    out = dict(raw)
    for kind, key, value in records:
        if kind in entities:
            if value is None:
                entities[kind].pop(key, None)
            else:
                entities[kind][key] = value  # in place if known, else at the end
        else:
            out[kind] = value
    for kind, (field, _) in ENTITIES.items():
        out[field] = list(entities[kind].values())
    return out


def _keyed(path: Path, raw: dict[str, Any], field: str, key: str) -> dict[Any, Any]:
    """The snapshot's list of VMs, groups, networks or pairs by name or id, in order."""
    items = raw.get(field, [])
    if not isinstance(items, list):
        raise StateFileError(f"state file {path} is corrupt: {field} is not a list")
    out: dict[Any, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(key), str | int):
            raise StateFileError(f"state file {path} is corrupt: bad {field} entry {item!r}")
        if item[key] in out:  # keying them would hide the duplicate
            raise StateFileError(f"state file {path} is corrupt: {key} {item[key]!r} twice")
        out[item[key]] = item
    return out


# --- writing -----------------------------------------------------------------------------


def save(path: Path, policy: Policy) -> None:
    """Write `policy` as the snapshot and delete the journal.

    Crash-safe at every step only when `policy` is what is stored (the snapshot plus the
    journal, as `load` returns it) or when there is no journal: a crash between the
    rename and the delete replays the old journal over the new snapshot.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(policy.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename must be on disk before the journal's delete is: the other way round, a
    # crash could leave the old snapshot without the journal that brings it up to date.
    _fsync_dir(path.parent)
    jpath = journal_path(path)
    _journal_lines.pop(jpath, None)
    if _unlink(jpath):
        _fsync_dir(path.parent)


def compact(path: Path, policy: Policy) -> None:
    """Fold the journal into the snapshot; `policy` must be what `load` returned."""
    save(path, policy)


def record(path: Path, before: Policy, after: Policy) -> list[dict[str, Any]]:
    """Store the change from `before` (what is stored now) to `after`, in O(change).

    Returns the journal's records of it (what changed) once the change is on disk; raises,
    having stored nothing, if it cannot be.
    """
    records = _diff(before, after)
    if not records:
        return records
    if not path.exists():
        # The first change: a snapshot to journal against (a journal never exists alone).
        save(path, after)
        return records
    jpath = journal_path(path)
    lines = _journal_length(jpath)
    if lines >= COMPACT_AFTER:
        # Snapshot `before`, not `after`: see the module docstring.
        save(path, before)
        lines = 0
    data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    _append(jpath, data.encode(), lines + len(records))
    return records


def audit_text(before: Policy, records: list[dict[str, Any]]) -> str:
    """A change's journal records as one audit line: what was added, changed or removed,
    with the new value (the journal's own form)."""
    parts = []
    for r in records:
        kind = next((k for k in ENTITIES if k in r), None)
        if kind is None:  # zones, switches, counters: their record as it is
            parts.append(json.dumps(r, separators=(",", ":"), sort_keys=True))
            continue
        key, value = r[kind], r["value"]
        was = getattr(before, ENTITIES[kind][0]).get(key)
        verb = "removed" if value is None else "changed" if was is not None else "added"
        text = "" if value is None else " " + json.dumps(value, separators=(",", ":"))
        parts.append(f"{kind} {key} {verb}{text}")
    return "; ".join(parts)


def _diff(before: Policy, after: Policy) -> list[dict[str, Any]]:
    """Journal records that turn `before` into `after`."""
    out: list[dict[str, Any]] = []
    for kind, (field, _key) in ENTITIES.items():  # Policy's dicts have the snapshot's names
        old, new = getattr(before, field), getattr(after, field)
        for key in _changed(old, new):
            thing = new.get(key)
            out.append({kind: key, "value": thing.to_dict() if thing else None})
    if before.zones != after.zones:
        zones = {f"{dpid:016x}": zone for dpid, zone in sorted(after.zones.items())}
        out.append({"zones": zones})
    if before.fabric != after.fabric:
        # The whole table, as for the zones: a handful of switches, changed rarely.
        out.append({"switches": after.fabric_table()})
    if before.next_pair_id != after.next_pair_id:
        out.append({"next_pair_id": after.next_pair_id})
    if before.next_vm_id != after.next_vm_id:
        out.append({"next_vm_id": after.next_vm_id})
    return out


def _changed(old: dict[Any, Any], new: dict[Any, Any]) -> list[Any]:
    """Keys whose value differs. `Policy.copy` shares unchanged (frozen) entities, so
    the identity test skips them without comparing fields; `!=` then drops replacements by
    an equal value (a PUT of the same VM)."""
    changed = []
    for key, value in new.items():
        was = old.get(key)
        if was is not value and was != value:
            changed.append(key)
    # Deleted keys: only worth a pass over `old` when its size says there are some.
    kept = len(new) - sum(key not in old for key in changed)
    if len(old) > kept:
        changed += [key for key in old if key not in new]
    return changed


# (st_dev, st_ino, st_size, st_mtime_ns) of the journal after our last append, and its
# number of lines then: counting them again on every change would cost O(journal).
_journal_lines: dict[Path, tuple[tuple[int, int, int, int], int]] = {}


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _journal_length(jpath: Path) -> int:
    """Complete lines in the journal (0 when there is none)."""
    try:
        st = os.stat(jpath)
    except FileNotFoundError:
        return 0
    known = _journal_lines.get(jpath)
    if known is not None and known[0] == _signature(st):
        return known[1]
    # Not ours since our last append (another process, or a restart): count once.
    return jpath.read_bytes().count(b"\n")


def _append(jpath: Path, data: bytes, lines: int) -> None:
    fd = os.open(jpath, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = _drop_torn_tail(fd)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            if size == 0:
                # A new journal's name must be on disk too, or a crash could lose it whole.
                _fsync_dir(jpath.parent)
        except BaseException:
            # Take the append back: the caller reports the change as failed, so the journal
            # must not hold it, and the next append must not start in the middle of a line.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        _journal_lines[jpath] = (_signature(os.fstat(fd)), lines)
    finally:
        os.close(fd)


def _drop_torn_tail(fd: int) -> int:
    """Cut a last line a crash left without its newline (so the next append does not
    extend it into a corrupt line); the journal's size after that."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = os.pread(fd, size, 0).rfind(b"\n") + 1
    os.ftruncate(fd, keep)
    return keep


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
