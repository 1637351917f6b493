"""`ryu-manager ryu_ctfw.app` starts on Python 3.11 with Ryu 4.34, configured by file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ryu_ctfw import lab, store


def test_ryu_manager_starts_and_serves_on_loopback(tmp_path: Path) -> None:
    ctl = lab.Controller(tmp_path).start()
    try:
        log = ctl.log_file.read_text()
        assert "instantiating app ryu_ctfw.app" in log
        assert f"wsgi starting up on http://127.0.0.1:{ctl.api_port}" in log
        assert ctl.api("GET", "/ctfw/v1/vms") == (200, {"vms": []})
    finally:
        ctl.stop()


def test_corrupt_state_file_stops_the_app_with_its_name(tmp_path: Path) -> None:
    ctl = lab.Controller(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    ctl.state_file.write_text('{"version": 1, "vms": [{"name": "vm1"}]')  # cut short
    with pytest.raises(lab.LabError) as err:
        ctl.start(timeout=20)
    assert "ryu-manager exited" in str(err.value)
    assert f"state file {ctl.state_file} is corrupt" in ctl.log_file.read_text()
    assert ctl.state_file.read_text().startswith('{"version": 1'), "left as it was"


def test_ryu_manager_without_the_compat_hook_would_fail() -> None:
    """Why the .pth hook exists: eventlet no longer has what Ryu 4.34 imports."""
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path"
        " if type(f).__name__ != '_Finder']\n"
        "import eventlet.wsgi; print(hasattr(eventlet.wsgi, 'ALREADY_HANDLED'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def run_ryu_manager(root: Path, conf_text: str, timeout: float = 30) -> tuple[int, str, float]:
    """ryu-manager with this config file, expected to stop by itself: (code, output, s)."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "ctfw.conf"
    conf.write_text(conf_text)
    ryu_manager = Path(sys.executable).with_name("ryu-manager")
    args = [str(ryu_manager), "--config-file", str(conf)]
    args += ["--ofp-tcp-listen-port", str(lab.free_port()), "--wsapi-port", str(lab.free_port())]
    t0 = time.monotonic()
    out = subprocess.run(
        [*args, "ryu_ctfw.app"], capture_output=True, text=True, timeout=timeout, check=False
    )
    return out.returncode, out.stdout + out.stderr, time.monotonic() - t0


@pytest.mark.parametrize("typo", ["state_fiel", "api_tokn"])
def test_a_misspelt_option_stops_the_start_naming_it(tmp_path: Path, typo: str) -> None:
    code, out, took = run_ryu_manager(tmp_path, f"[ctfw]\n{typo} = {tmp_path / 'x.json'}\n")
    conf = tmp_path / "ctfw.conf"
    assert code != 0
    assert (
        f"ryu-ctfw: unknown option {typo!r} in [ctfw] of {conf}; known: api_token,"
        " fabric_port, max_ips_per_vm, max_pairs, max_vms, state_file"
    ) in out
    assert "wsgi starting up" not in out
    assert took < 15, "fails fast"


def test_an_empty_token_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    code, out, _ = run_ryu_manager(tmp_path, f"[ctfw]\nstate_file = {state}\napi_token =\n")
    assert code != 0
    assert "ryu-ctfw: api_token in [ctfw] is empty" in out
    assert not state.exists()


def test_an_unwritable_state_folder_stops_the_start(tmp_path: Path) -> None:
    code, out, _ = run_ryu_manager(tmp_path, "[ctfw]\nstate_file = /proc/self/ctfw/state.json\n")
    assert code != 0
    assert "ryu-ctfw: state_file /proc/self/ctfw/state.json: its folder /proc/self/ctfw" in out


def test_a_second_instance_on_one_state_file_refuses_and_touches_nothing(tmp_path: Path) -> None:
    first = lab.Controller(tmp_path / "first").start()
    try:
        first.ok("PUT", "/ctfw/v1/vms/vm1", {"port": "tap1", "ips": ["198.18.0.1"]})
        first.ok("PUT", "/ctfw/v1/vms/vm2", {"port": "tap2", "ips": ["198.18.0.2"]})
        first.ok("POST", "/ctfw/v1/pairs", {"initiator": "vm1", "responder": "vm2"})
        folder = first.state_file.parent
        # What a save in progress of the first would leave; the second's start would
        # remove it as stale, and compact the first's journal, if it did not hold the lock.
        (folder / f".{first.state_file.name}.inflight").write_text("half a save")
        assert store.journal_path(first.state_file).exists()
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".log"}

        code, out, _ = run_ryu_manager(
            tmp_path / "second", f"[ctfw]\nstate_file = {first.state_file}\n"
        )
        assert code != 0
        assert first.proc is not None
        assert (
            f"ryu-ctfw: state file {first.state_file} is in use by another ryu-ctfw"
            f" (pid {first.proc.pid}," in out
        )
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".log"} == before
        assert first.api("GET", "/ctfw/v1/vms")[0] == 200
        first.ok("PUT", "/ctfw/v1/vms/vm3", {"port": "tap3", "ips": ["198.18.0.3"]})
        assert {vm["name"] for vm in first.stored()["vms"]} == {"vm1", "vm2", "vm3"}
    finally:
        first.stop()


def test_the_lock_dies_with_a_killed_instance(tmp_path: Path) -> None:
    ctl = lab.Controller(tmp_path).start()
    ctl.ok("PUT", "/ctfw/v1/vms/vm1", {"port": "tap1", "ips": ["198.18.0.1"]})
    ctl.stop(signal.SIGKILL)
    assert store.lock_path(ctl.state_file).exists()  # left behind, but nobody holds it
    ctl.start()
    try:
        assert ctl.api("GET", "/ctfw/v1/vms/vm1")[0] == 200
    finally:
        ctl.stop()
