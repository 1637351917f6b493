"""Let Ryu 4.34 import on the eventlet that works on Python 3.11.

Why this exists: `ryu-manager` imports `ryu.app.wsgi` before it loads any app, and that
module does `from eventlet.wsgi import ALREADY_HANDLED`. eventlet dropped that name
(0.30.3), but the last eventlet that has it (0.30.2) crashes on Python 3.11. Ryu fixed the
import after 4.34, and no release carries the fix. So the name has to exist before
`ryu-manager` runs any code of ours.

How: `python -m ryu_ctfw.eventlet_compat install` writes a one-line `.pth` file into the
environment's site-packages. At interpreter start it registers a tiny import hook; nothing
else is imported. Only when something imports `eventlet.wsgi` does the hook add
`ALREADY_HANDLED` (a sentinel, as old eventlet had) if it is missing. Ryu uses the name
only for websocket responses, which ryu-ctfw does not serve.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import sysconfig
from pathlib import Path

TARGET = "eventlet.wsgi"
PTH_NAME = "ryu_ctfw_eventlet_compat.pth"
PTH_LINE = "import ryu_ctfw.eventlet_compat as m; m.register()\n"


def _patch(module: object) -> None:
    if not hasattr(module, "ALREADY_HANDLED"):
        module.ALREADY_HANDLED = object()  # type: ignore[attr-defined]


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def register() -> None:
    """Install the hook (idempotent); patch at once if eventlet.wsgi is already loaded."""
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def install(site_packages: Path | None = None) -> Path:
    """Write the .pth file into this interpreter's site-packages."""
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(PTH_LINE)
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m ryu_ctfw.eventlet_compat install")
    print(f"wrote {install()}")
