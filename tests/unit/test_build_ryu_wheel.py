"""tools/build_ryu_wheel.py, on a small sdist of Ryu's shape made here (no network).

The real sdist is checked by the Makefile's install (and every test that runs Ryu); these
tests check the wheel format and the refusals.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "build_ryu_wheel.py"

PKG_INFO = """Metadata-Version: 1.1
Name: ryu
Version: 4.34
Summary: Component-based Software-defined Networking Framework
Home-page: http://osrg.github.io/ryu/
Author: Ryu project team
Author-email: ryu-devel@lists.sourceforge.net
License: Apache License 2.0
Description: What's Ryu
        ==========
        Ryu is a component-based software defined networking framework.
Keywords: openflow,openvswitch,openstack
Platform: any
Classifier: Programming Language :: Python :: 3
Classifier: Operating System :: Unix
"""
ENTRY_POINTS = "[console_scripts]\nryu-manager = ryu.cmd.manager:main\n"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_ryu_wheel", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_sdist(path: Path, requires: str = "eventlet>=0.18.2\nwebob>=1.2\n") -> bytes:
    files = {
        "PKG-INFO": PKG_INFO,
        "LICENSE": "Apache License\n",
        "setup.py": "raise SystemExit('never run')\n",
        "etc/ryu/ryu.conf": "[DEFAULT]\n",
        "ryu/__init__.py": "version_info = (4, 34)\n",
        "ryu/cmd/manager.py": "def main():\n    pass\n",
        "ryu/cmd/__pycache__/manager.cpython-311.pyc": "stale",
        "ryu/lib/of_config/of-config-1.1.xsd": "<xs:schema/>\n",
        "ryu.egg-info/requires.txt": requires,
        "ryu.egg-info/entry_points.txt": ENTRY_POINTS,
        "ryu.egg-info/top_level.txt": "ryu\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"ryu-4.34/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def tool() -> ModuleType:
    return load_tool()


def build(tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw) -> Path:
    sdist = tmp_path / "ryu-4.34.tar.gz"
    data = make_sdist(sdist, **kw)
    monkeypatch.setattr(tool, "SDIST_SHA256", hashlib.sha256(data).hexdigest())
    return tool.build(tmp_path / "out", sdist)


def test_the_wheel_holds_the_package_data_and_metadata(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = build(tool, tmp_path, monkeypatch)
    assert wheel.name == "ryu-4.34-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert names == [
            "ryu-4.34.data/data/etc/ryu/ryu.conf",
            "ryu/__init__.py",
            "ryu/cmd/manager.py",
            "ryu/lib/of_config/of-config-1.1.xsd",
            "ryu-4.34.dist-info/LICENSE",
            "ryu-4.34.dist-info/METADATA",
            "ryu-4.34.dist-info/WHEEL",
            "ryu-4.34.dist-info/entry_points.txt",
            "ryu-4.34.dist-info/top_level.txt",
            "ryu-4.34.dist-info/RECORD",
        ]
        meta = whl.read("ryu-4.34.dist-info/METADATA").decode()
        wheel_txt = whl.read("ryu-4.34.dist-info/WHEEL").decode()
        assert whl.read("ryu-4.34.dist-info/entry_points.txt").decode() == ENTRY_POINTS
        rows = list(csv.reader(io.StringIO(whl.read("ryu-4.34.dist-info/RECORD").decode())))
        for path, digest, size in rows[:-1]:
            content = whl.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={expected.decode()}", len(content)), path
        assert rows[-1] == ["ryu-4.34.dist-info/RECORD", "", ""]
        assert {i.date_time for i in whl.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    head, _, body = meta.partition("\n\n")
    assert head.splitlines() == [
        "Metadata-Version: 2.1",
        "Name: ryu",
        "Version: 4.34",
        "Summary: Component-based Software-defined Networking Framework",
        "Home-page: http://osrg.github.io/ryu/",
        "Author: Ryu project team",
        "Author-email: ryu-devel@lists.sourceforge.net",
        "License: Apache License 2.0",
        "Keywords: openflow,openvswitch,openstack",
        "Platform: any",
        "Classifier: Programming Language :: Python :: 3",
        "Classifier: Operating System :: Unix",
        "Requires-Dist: eventlet>=0.18.2",
        "Requires-Dist: webob>=1.2",
        "Description-Content-Type: text/x-rst",
    ]
    assert body == (
        "What's Ryu\n==========\nRyu is a component-based software defined networking framework.\n"
    )
    assert "Root-Is-Purelib: true\n" in wheel_txt and "Tag: py3-none-any\n" in wheel_txt


def test_the_same_sdist_gives_the_same_wheel(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(tool, tmp_path, monkeypatch).read_bytes()
    assert build(tool, tmp_path, monkeypatch).read_bytes() == first


def test_a_wrong_sdist_is_refused(
    tool: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdist = tmp_path / "ryu-4.34.tar.gz"
    make_sdist(sdist)
    assert tool.main(["--sdist", str(sdist), "--out", str(tmp_path / "out")]) == 1
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ryu-4.34-py3-none-any.whl").exists()


def test_requirement_sections_are_refused(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(tool.BuildError, match="section"):
        build(tool, tmp_path, monkeypatch, requires="six\n[:python_version < '3']\nenum34\n")


def test_the_tool_pins_ryu_434() -> None:
    tool = load_tool()
    assert (tool.NAME, tool.VERSION) == ("ryu", "4.34")
    assert tool.SDIST_URL.endswith("/ryu-4.34.tar.gz")
    assert len(tool.SDIST_SHA256) == 64
