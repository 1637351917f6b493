"""The eventlet compatibility hook.

What the .pth in the venv does at interpreter start is checked in fresh interpreters of the
venv's python (sys.executable: these tests run as `.venv/bin/python -m pytest`), from a
scratch folder so that the repository is not on sys.path by accident. The test process
itself has imported eventlet and ryu long before these tests run, so only the pieces that
do not depend on start-up are checked in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pytest

from ryu_ctfw import eventlet_compat
from ryu_ctfw.eventlet_compat import PTH_LINE, PTH_NAME, TARGET, _Finder, _PatchingLoader

PYTHON = sys.executable


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(
        [PYTHON, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_json(code: str, cwd: Path) -> dict:
    """Run `code`, which prints one JSON object as its last line; return that object."""
    proc = run_python("-c", code, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


# --- in fresh interpreters -----------------------------------------------------------------


def test_the_pth_is_installed_in_this_venv() -> None:
    pth = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    assert pth.is_file(), f"{pth} missing: run `make venv` (or use the venv's python)"
    assert pth.read_text() == PTH_LINE


def test_start_up_registers_the_hook_without_importing_eventlet(tmp_path: Path) -> None:
    result = run_json(
        "import json, sys\n"
        "print(json.dumps({\n"
        "    'eventlet': sorted(m for m in sys.modules if m.split('.')[0] == 'eventlet'),\n"
        "    'ryu': 'ryu' in sys.modules,\n"
        "    'finders': [type(f).__module__ + '.' + type(f).__name__ for f in sys.meta_path],\n"
        "}))",
        tmp_path,
    )
    assert result["eventlet"] == []
    assert result["ryu"] is False
    assert result["finders"].count("ryu_ctfw.eventlet_compat._Finder") == 1


def test_eventlet_wsgi_gets_already_handled(tmp_path: Path) -> None:
    result = run_json(
        "import json, eventlet.wsgi\n"
        "value = getattr(eventlet.wsgi, 'ALREADY_HANDLED', None)\n"
        "print(json.dumps({'has': value is not None}))",
        tmp_path,
    )
    assert result == {"has": True}


def test_without_the_hook_eventlet_wsgi_lacks_already_handled(tmp_path: Path) -> None:
    """The pinned eventlet really lacks the name, so the test above checks the hook."""
    result = run_json(
        "import json, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_Finder']\n"
        "import eventlet.wsgi\n"
        "print(json.dumps({'has': hasattr(eventlet.wsgi, 'ALREADY_HANDLED')}))",
        tmp_path,
    )
    assert result == {"has": False}


def test_ryu_app_wsgi_imports(tmp_path: Path) -> None:
    result = run_json(
        "import json, eventlet.wsgi, ryu.app.wsgi\n"
        "same = ryu.app.wsgi._AlreadyHandledResponse._ALREADY_HANDLED is"
        " eventlet.wsgi.ALREADY_HANDLED\n"
        "print(json.dumps({'same': same, 'app': hasattr(ryu.app.wsgi, 'WSGIApplication')}))",
        tmp_path,
    )
    assert result == {"same": True, "app": True}


def test_the_written_pth_line_installs_the_hook(tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    eventlet_compat.install(site_dir)
    result = run_json(
        "import json, site, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_Finder']\n"
        f"site.addsitedir({str(site_dir)!r})\n"
        "import eventlet.wsgi\n"
        "print(json.dumps({\n"
        "    'finders': sum(type(f).__name__ == '_Finder' for f in sys.meta_path),\n"
        "    'has': hasattr(eventlet.wsgi, 'ALREADY_HANDLED'),\n"
        "}))",
        tmp_path,
    )
    assert result == {"finders": 1, "has": True}


def test_module_main_refuses_other_arguments(tmp_path: Path) -> None:
    proc = run_python("-m", "ryu_ctfw.eventlet_compat", "uninstall", cwd=tmp_path)
    assert proc.returncode != 0
    assert "usage" in proc.stderr


# --- in this process -----------------------------------------------------------------------


@pytest.fixture
def clean_hooks(monkeypatch: pytest.MonkeyPatch) -> list:
    """sys.meta_path without our finder, and eventlet.wsgi not imported (both restored)."""
    meta_path = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    monkeypatch.setattr(sys, "meta_path", meta_path)
    monkeypatch.delitem(sys.modules, TARGET, raising=False)
    return meta_path


def test_register_is_idempotent(clean_hooks: list) -> None:
    eventlet_compat.register()
    eventlet_compat.register()
    finders = [f for f in sys.meta_path if isinstance(f, _Finder)]
    assert len(finders) == 1
    assert sys.meta_path[0] is finders[0]


def test_register_patches_an_already_imported_module(
    clean_hooks: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType(TARGET)
    monkeypatch.setitem(sys.modules, TARGET, module)
    eventlet_compat.register()
    sentinel = module.ALREADY_HANDLED
    eventlet_compat.register()
    assert module.ALREADY_HANDLED is sentinel
    assert not [f for f in sys.meta_path if isinstance(f, _Finder)]  # no hook needed


def test_patch_keeps_an_existing_value() -> None:
    module = types.ModuleType(TARGET)
    module.ALREADY_HANDLED = "mine"  # type: ignore[attr-defined]
    eventlet_compat._patch(module)
    assert module.ALREADY_HANDLED == "mine"  # type: ignore[attr-defined]


def test_finder_only_wraps_eventlet_wsgi() -> None:
    import eventlet

    finder = _Finder()
    assert finder.find_spec("eventlet.greenio", eventlet.__path__) is None
    assert finder.find_spec("json", None) is None
    spec = finder.find_spec(TARGET, eventlet.__path__)
    assert spec is not None
    assert isinstance(spec.loader, _PatchingLoader)
    assert spec.origin is not None and spec.origin.endswith(os.path.join("eventlet", "wsgi.py"))


def test_install_writes_the_pth_line(tmp_path: Path) -> None:
    path = eventlet_compat.install(tmp_path)
    assert path == tmp_path / PTH_NAME
    assert path.read_text() == PTH_LINE
    assert PTH_LINE.startswith("import ")  # site only executes .pth lines starting so
    assert PTH_LINE.count("\n") == 1
    eventlet_compat.install(tmp_path)  # again: overwritten, not appended
    assert path.read_text() == PTH_LINE
    assert os.listdir(tmp_path) == [PTH_NAME]
