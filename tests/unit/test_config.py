"""The [ctfw] options: unknown ones and bad values stop the start; the sample is current;
one process per state file (the lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from oslo_config import cfg, generator

from ryu_ctfw import config, store
from ryu_ctfw.config import ConfigError

SAMPLE = Path(__file__).parents[2] / "etc" / "ryu-ctfw.conf.sample"


def parsed(tmp_path: Path, *texts: str, config_dir: str | None = None) -> cfg.ConfigOpts:
    """A ConfigOpts with our options, parsed from files holding `texts`, as ryu-manager's."""
    conf = cfg.ConfigOpts()
    config.register(conf)
    args = []
    for n, text in enumerate(texts):
        path = tmp_path / f"ctfw{n}.conf"
        path.write_text(text)
        args += ["--config-file", str(path)]
    if config_dir:
        args += ["--config-dir", config_dir]
    conf(args=args, project="ryu", default_config_files=[])
    return conf


def state_conf(tmp_path: Path, extra: str = "") -> str:
    return f"[ctfw]\nstate_file = {tmp_path / 'var' / 'state.json'}\n{extra}"


def test_known_options_give_the_settings(tmp_path: Path) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path, "api_token = s3cret\n"))
    assert config.check(conf) == config.Settings(tmp_path / "var" / "state.json", "s3cret")


def test_defaults_without_a_config_file() -> None:
    conf = cfg.ConfigOpts()
    config.register(conf)
    conf(args=[], project="ryu", default_config_files=[])
    assert conf.ctfw.state_file == config.DEFAULT_STATE_FILE
    assert conf.ctfw.api_token is None


@pytest.mark.parametrize("typo", ["state_fiel", "api_tokn", "API_TOKEN", "state-file"])
def test_an_unknown_option_is_refused_with_the_file_and_the_known_ones(
    tmp_path: Path, typo: str
) -> None:
    conf = parsed(tmp_path, f"[ctfw]\n{typo} = x\n")
    with pytest.raises(ConfigError) as err:
        config.check(conf)
    assert str(err.value) == (
        f"unknown option {typo!r} in [ctfw] of {tmp_path / 'ctfw0.conf'};"
        " known: api_token, fabric_port, max_ips_per_vm, max_pairs, max_vms, state_file"
    )


def test_a_misspelt_token_never_leaves_the_api_open_in_silence(tmp_path: Path) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path, "api_tokn = s3cret\n"))
    assert conf.ctfw.api_token is None  # what oslo.config alone would run with
    with pytest.raises(ConfigError, match="unknown option 'api_tokn'"):
        config.check(conf)


def test_every_config_file_is_checked_and_named(tmp_path: Path) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path), "[ctfw]\napi_token = a\n[CTFW]\ntoken = b\n")
    with pytest.raises(ConfigError, match=rf"'token' in \[ctfw\] of {tmp_path / 'ctfw1.conf'};"):
        config.check(conf)


def test_files_of_the_config_dir_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    (folder / "10-ctfw.conf").write_text("[ctfw]\nstatefile = x\n")
    (folder / "ignored.txt").write_text("[ctfw]\nnot_a_conf_file = x\n")
    conf = parsed(tmp_path, state_conf(tmp_path), config_dir=str(folder))
    with pytest.raises(ConfigError, match=rf"'statefile' in \[ctfw\] of {folder / '10-ctfw.conf'}"):
        config.check(conf)


def test_other_sections_are_not_ours_to_judge(tmp_path: Path) -> None:
    text = "[DEFAULT]\nwhatever = 1\n[other]\nstate_fiel = x\n" + state_conf(tmp_path)
    assert config.check(parsed(tmp_path, text)).api_token is None


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_is_refused(tmp_path: Path, value: str) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path, f"api_token = {value}\n"))
    with pytest.raises(ConfigError, match="api_token in \\[ctfw\\] is empty"):
        config.check(conf)


def test_the_state_folder_is_created_and_left_empty(tmp_path: Path) -> None:
    config.check(parsed(tmp_path, state_conf(tmp_path)))
    assert list((tmp_path / "var").iterdir()) == []


def test_a_state_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    conf = parsed(tmp_path, f"[ctfw]\nstate_file = {tmp_path / 'file' / 'sub' / 'state.json'}\n")
    with pytest.raises(ConfigError, match=f"folder {tmp_path / 'file' / 'sub'} cannot be created"):
        config.check(conf)


def test_a_state_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    # /proc/self exists and takes no new file, not even from root.
    conf = parsed(tmp_path, "[ctfw]\nstate_file = /proc/self/state.json\n")
    with pytest.raises(ConfigError, match="folder /proc/self cannot be created or written"):
        config.check(conf)


def test_the_shipped_sample_is_what_the_generator_makes(tmp_path: Path) -> None:
    """Through the entry point, as `make config-sample` does: run it when this fails."""
    out = tmp_path / "sample.conf"
    generator.main(["--namespace", "ryu_ctfw", "--output-file", str(out)])
    assert SAMPLE.read_text() == out.read_text(), "stale: run `make config-sample`"
    for opt in config.OPTS:
        assert f"#{opt.dest} = " in out.read_text()


def test_list_opts_gives_copies() -> None:
    ((group, opts),) = config.list_opts()
    assert group == "ctfw"
    assert [o.dest for o in opts] == [o.dest for o in config.OPTS]
    assert all(a is not b for a, b in zip(opts, config.OPTS, strict=True))


# --- the state file's lock ------------------------------------------------------------


def test_the_lock_file_holds_the_pid(tmp_path: Path) -> None:
    state = tmp_path / "new" / "state.json"
    fd = store.lock(state)
    try:
        assert store.lock_path(state).read_text() == f"{os.getpid()}\n"
        assert sorted(os.listdir(state.parent)) == ["state.json.lock"]
    finally:
        os.close(fd)


def test_a_second_holder_is_refused_naming_the_file_and_pid(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{}")
    in_flight = tmp_path / ".state.json.abc123"  # the first one's save in progress
    in_flight.write_text("x")
    fd = store.lock(state)
    try:
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        # Another open of the file is another lock, as another process's would be.
        with pytest.raises(store.StateFileLocked) as err:
            store.lock(state)
        assert f"state file {state} is in use by another ryu-ctfw (pid {os.getpid()}," in str(
            err.value
        )
        assert isinstance(err.value, store.StateFileError)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    finally:
        os.close(fd)
    os.close(store.lock(state))  # closed: free again


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    store.lock_path(state).write_text("999999\n")  # left by a process long gone
    fd = store.lock(state)
    try:
        assert store.lock_path(state).read_text() == f"{os.getpid()}\n"
    finally:
        os.close(fd)


def test_the_os_releases_the_lock_of_a_killed_process(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    code = (
        "import sys, pathlib; from ryu_ctfw import store\n"
        f"store.lock(pathlib.Path({str(state)!r})); print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"
        with pytest.raises(store.StateFileLocked, match=f"pid {proc.pid},"):
            store.lock(state)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    os.close(store.lock(state))


def test_the_limits_are_options(tmp_path: Path) -> None:
    conf = parsed(
        tmp_path, state_conf(tmp_path, "max_vms = 5\nmax_pairs = 7\nmax_ips_per_vm = 2\n")
    )
    settings = config.check(conf)
    assert (settings.max_vms, settings.max_pairs, settings.max_ips_per_vm) == (5, 7, 2)
    defaults = config.check(parsed(tmp_path, state_conf(tmp_path)))
    assert (defaults.max_vms, defaults.max_pairs, defaults.max_ips_per_vm) == (10_000, 100_000, 64)


@pytest.mark.parametrize("line", ["max_vms = 0", "max_pairs = -1", "max_ips_per_vm = many"])
def test_a_bad_limit_is_refused(tmp_path: Path, line: str) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path, line + "\n"))
    with pytest.raises(ConfigError, match="bad value in \\[ctfw\\]"):
        config.check(conf)


def test_a_fabric_port_is_a_setting_and_must_be_a_port_name(tmp_path: Path) -> None:
    conf = parsed(tmp_path, state_conf(tmp_path, "fabric_port = eth1\n"))
    assert config.check(conf).fabric_port == "eth1"
    conf = parsed(tmp_path, state_conf(tmp_path, "fabric_port = eth 1\n"))
    with pytest.raises(ConfigError, match=r"fabric_port in \[ctfw\]: invalid port name"):
        config.check(conf)
