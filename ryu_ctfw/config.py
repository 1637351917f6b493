"""The app's options (the `[ctfw]` group of ryu-manager's --config-file) and their checks.

ryu-manager parses its command line before loading apps, so an app cannot add flags; like
Ryu's own apps, ours read a `[ctfw]` section of the files given with --config-file. But
oslo.config ignores options nobody registered, so `api_tokn = x` would leave the API open
without a word: `check()` refuses unknown options and bad values before anything starts.

This module imports oslo.config only (not Ryu, not eventlet): oslo-config-generator loads
`list_opts()` through the `oslo.config.opts` entry point to write etc/ryu-ctfw.conf.sample.
"""

from __future__ import annotations

import copy
import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oslo_config import cfg

from ryu_ctfw.policy import PolicyError, validate_port_name

GROUP = "ctfw"
DEFAULT_STATE_FILE = "/var/lib/ryu-ctfw/state.json"

OPTS = [
    cfg.StrOpt(
        "state_file",
        default=DEFAULT_STATE_FILE,
        help="Where VMs, pairs and conntrack zones are stored: a JSON snapshot, replaced"
        " atomically, and a journal beside it (<state_file>.journal). Its folder is created"
        " if missing and must be writable. One ryu-ctfw at a time may use a state file: it"
        " holds a lock on <state_file>.lock while it runs.",
    ),
    cfg.StrOpt(
        "api_token",
        default=None,
        secret=True,
        help="When set, every PUT, POST and DELETE of the REST API needs the header"
        " 'Authorization: Bearer <api_token>'. Unset, the API takes changes from anyone who"
        " can reach it. Must not be empty.",
    ),
    # Bounds on what one request or the whole policy may hold: each IP costs a VM about
    # four flows, each VM about twenty, each pair a few (see README, "Performance").
    cfg.IntOpt("max_vms", default=10_000, min=1, help="The most VMs the policy may hold."),
    cfg.IntOpt("max_pairs", default=100_000, min=1, help="The most pairs the policy may hold."),
    cfg.IntOpt(
        "max_ips_per_vm", default=64, min=1, max=4096, help="The most IPs one VM may be given."
    ),
    cfg.StrOpt(
        "fabric_port",
        default=None,
        help="The name of the port that leads to the other hypervisors (a NIC on a shared"
        " segment, or a tunnel port), for every bridge that has a port of that name and no"
        " fabric port of its own (PUT /ctfw/v1/switches/{dpid}). Unset: none.",
    ),
]


class ConfigError(Exception):
    """The configuration cannot be used as written; starting anyway would hide that."""


@dataclass(frozen=True)
class Settings:
    state_file: Path
    api_token: str | None
    max_vms: int = 10_000
    max_pairs: int = 100_000
    max_ips_per_vm: int = 64
    fabric_port: str | None = None


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options by group, for oslo-config-generator (`--namespace ryu_ctfw`)."""
    return [(GROUP, copy.deepcopy(OPTS))]


def check(conf: cfg.ConfigOpts) -> Settings:
    """The settings, once every config file's [ctfw] names only known options and the
    values are usable; raises ConfigError naming the file and option otherwise."""
    known = sorted(opt.dest for opt in OPTS)
    for path in config_files(conf):
        for name in ctfw_options(path):
            if name not in known:
                raise ConfigError(
                    f"unknown option {name!r} in [{GROUP}] of {path}; known: {', '.join(known)}"
                )
    token = conf.ctfw.api_token
    if token is not None and not token.strip():
        raise ConfigError(
            "api_token in [ctfw] is empty: remove the line to leave the API open, or set a token"
        )
    state_file = Path(conf.ctfw.state_file)
    check_state_folder(state_file)
    try:
        c = conf.ctfw
        fabric = c.fabric_port
        if fabric is not None:
            try:
                validate_port_name(fabric)
            except PolicyError as e:
                raise ConfigError(f"fabric_port in [{GROUP}]: {e}") from None
        return Settings(state_file, token, c.max_vms, c.max_pairs, c.max_ips_per_vm, fabric)
    except cfg.ConfigFileValueError as e:  # e.g. "max_vms = 0": say so, not a traceback
        raise ConfigError(f"bad value in [{GROUP}]: {e}") from e


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files oslo.config read, in its order: --config-file ones, then --config-dir's."""
    files = [f for f in conf.config_file or [] if os.path.exists(f)]
    dirs = conf.config_dir or []
    for folder in [dirs] if isinstance(dirs, str) else dirs:  # a list in oslo.config >= 5
        files += sorted(glob.glob(os.path.join(folder, "*.conf")))
    return files


def ctfw_options(path: str) -> list[str]:
    """The option names written in a file's [ctfw] section(s).

    ConfigOpts keeps what it parsed in private attributes only (`_namespace`), and has no
    public way to list a group's keys. So the file is read again with oslo.config's own
    (public) `cfg.ConfigParser`, which gives exactly the sections and keys oslo.config saw
    (Python's configparser disagrees on details: repeated keys, `%`, continuation lines).
    Group names are matched as oslo.config does, case-insensitively (except DEFAULT).
    """
    sections: dict[str, dict[str, list[str]]] = {}
    try:
        cfg.ConfigParser(path, sections).parse()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    names: list[str] = []
    for section, values in sections.items():
        if section != "DEFAULT" and section.lower() == GROUP:
            names += values
    return names


def check_state_folder(state_file: Path) -> None:
    """The state file's folder exists (created if need be) and takes a new file."""
    folder = state_file.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # An unnamed file where the OS supports it (O_TMPFILE): nothing shows up in the
        # folder, so nothing another instance owns or looks for is touched.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"state_file {state_file}: its folder {folder} cannot be created or written:"
            f" {e.strerror or e}"
        ) from e
