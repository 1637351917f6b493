"""`ryu-manager ryu_ctfw.app` starts on Python 3.11 with Ryu 4.34, configured by file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ryu_ctfw import lab


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
