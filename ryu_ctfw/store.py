"""Persistence: the policy as one JSON file, replaced atomically.

A write goes to a temporary file in the same folder, is fsynced, renamed over the old file
and the folder is fsynced, so after a crash at any moment the file holds either the old
policy or the new one, never a mix or nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ryu_ctfw.policy import Policy, PolicyError


class StateFileError(Exception):
    """The state file exists but cannot be used; starting empty would lose the policy."""


def load(path: Path) -> Policy:
    """The stored policy, or an empty one when the file does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Policy()
    except OSError as e:
        raise StateFileError(f"cannot read state file {path}: {e.strerror}") from e
    try:
        return Policy.from_dict(json.loads(raw))
    except (ValueError, PolicyError, TypeError, AttributeError, RecursionError) as e:
        raise StateFileError(f"state file {path} is corrupt: {e}") from e


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files a crash mid-save left next to the state file (at start only:
    while we run, a temporary file there is a save in progress)."""
    stale = list(path.parent.glob(f".{path.name}.*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save(path: Path, policy: Policy) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One line, no indentation: at thousands of pairs this is written on every change.
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
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
