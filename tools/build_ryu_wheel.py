"""Build Ryu 4.34's wheel from its sdist with nothing but this interpreter's standard library.

Why this exists: Ryu 4.34 (the last release) ships only an sdist, and its setup.py cannot run
on a current setuptools: `ryu.hooks.save_orig()` reads `easy_install.get_script_args`,
which setuptools 58 removed, and setuptools < 58 cannot run on Python 3.12+ (it needs the
standard library's distutils, gone in 3.12). Even `pip download` runs that setup.py (to
read the metadata), so on a machine with only Python 3.12 or 3.13 neither pip nor
setuptools can turn the sdist into a wheel.

The sdist needs no build at all: Ryu is pure Python, and the sdist already holds what a
wheel is made of, the package tree (ryu/), its metadata (PKG-INFO) and what pbr generated
at release time (ryu.egg-info/requires.txt, entry_points.txt, top_level.txt). This script
puts those into a py3-none-any wheel (the format of PEP 427 / the wheel spec); pip then
installs it like any other, console scripts (`ryu-manager`) included. It runs on any
Python 3.11+ and needs neither setuptools nor pbr nor network access beyond the sdist,
so every interpreter builds the same wheel the same way.

The sdist is checked against its sha256, so nothing but Ryu 4.34 as published is built.

    python tools/build_ryu_wheel.py [--sdist FILE] [--out DIR]

prints the wheel's path. Without --sdist, the sdist is taken from DIR if it is there and
downloaded from PyPI otherwise (`RYU_SDIST_URL` names another place, e.g. a mirror).
"""

from __future__ import annotations

import argparse
import base64
import csv
import email.parser
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

NAME = "ryu"
VERSION = "4.34"
SDIST = f"{NAME}-{VERSION}.tar.gz"
SDIST_SHA256 = "a31041eb53aee0c36ca428645ad2607163ca5e1390f5a3d6ef2025b7829ce93e"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/25/30/"
    f"1c1972b3f9bf52de32d2fdf7c5206ff7099e739bf69b6004f4a71bcbde18/{SDIST}"
)
WHEEL = f"{NAME}-{VERSION}-py3-none-any.whl"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
DATA = f"{NAME}-{VERSION}.data"
TOP = f"{NAME}-{VERSION}/"  # every member of the sdist lies under this folder
# pbr's data_files (setup.cfg [files]): the sample config, installed as <prefix>/etc/ryu/.
DATA_FILES = {"etc/ryu/ryu.conf": f"{DATA}/data/etc/ryu/ryu.conf"}
# The metadata fields of PKG-INFO (Metadata-Version 1.1) that carry over unchanged.
FIELDS = ("Name", "Version", "Summary", "Home-page", "Author", "Author-email", "License")
MULTI_FIELDS = ("Keywords", "Platform", "Classifier")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same sdist gives the same wheel


class BuildError(RuntimeError):
    pass


def fetch_sdist(out: Path, sdist: Path | None) -> bytes:
    """The sdist's bytes, checked against SDIST_SHA256 (cached in `out` once downloaded)."""
    cached = out / SDIST
    if sdist is None and cached.is_file():
        sdist = cached
    if sdist is not None:
        data = sdist.read_bytes()
        where = str(sdist)
    else:
        where = os.environ.get("RYU_SDIST_URL", SDIST_URL)
        print(f"downloading {where}", file=sys.stderr)
        try:
            with urllib.request.urlopen(where, timeout=120) as response:
                data = response.read()
        except OSError as e:
            raise BuildError(f"cannot download {where}: {e} (or pass --sdist FILE)") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise BuildError(f"{where}: sha256 {digest}, expected {SDIST_SHA256} ({SDIST})")
    if where != str(cached):
        cached.write_bytes(data)
    return data


def read_members(data: bytes) -> dict[str, bytes]:
    """Regular files of the sdist by path below its top folder (no extraction to disk)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            if not member.name.startswith(TOP) or ".." in member.name.split("/"):
                raise BuildError(f"unexpected member in the sdist: {member.name}")
            extracted = tar.extractfile(member)
            assert extracted is not None
            files[member.name[len(TOP) :]] = extracted.read()
    return files


def metadata(files: dict[str, bytes]) -> bytes:
    """METADATA (version 2.1) from PKG-INFO and pbr's requires.txt."""
    pkg_info = email.parser.Parser().parsestr(files["PKG-INFO"].decode())
    if (pkg_info["Name"], pkg_info["Version"]) != (NAME, VERSION):
        raise BuildError(f"PKG-INFO is {pkg_info['Name']} {pkg_info['Version']}")
    lines = ["Metadata-Version: 2.1"]
    lines += [f"{f}: {pkg_info[f]}" for f in FIELDS if pkg_info[f]]
    lines += [f"{f}: {v}" for f in MULTI_FIELDS for v in pkg_info.get_all(f) or ()]
    for req in files[f"{NAME}.egg-info/requires.txt"].decode().splitlines():
        req = req.strip()
        if req.startswith("["):  # extras or markers: Ryu 4.34 has none, so none are handled
            raise BuildError(f"requires.txt has a section, which is not handled: {req}")
        if req:
            lines.append(f"Requires-Dist: {req}")
    lines.append("Description-Content-Type: text/x-rst")
    # PKG-INFO 1.1 folds the description into a header, each further line indented by 8.
    description = (pkg_info["Description"] or "").replace("\n        ", "\n")
    return ("\n".join(lines) + "\n\n" + description.strip() + "\n").encode()


def wheel_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """Every file of the wheel but RECORD, by its path in the wheel."""
    out = {
        path: content
        for path, content in files.items()
        if path.startswith(f"{NAME}/") and "__pycache__" not in path and not path.endswith(".pyc")
    }
    if f"{NAME}/cmd/manager.py" not in out:
        raise BuildError(f"no {NAME}/cmd/manager.py in the sdist")
    for source, target in DATA_FILES.items():
        out[target] = files[source]
    egg_info = f"{NAME}.egg-info"
    out[f"{DIST_INFO}/METADATA"] = metadata(files)
    out[f"{DIST_INFO}/WHEEL"] = (
        b"Wheel-Version: 1.0\n"
        b"Generator: ryu-ctfw tools/build_ryu_wheel.py\n"
        b"Root-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    out[f"{DIST_INFO}/entry_points.txt"] = files[f"{egg_info}/entry_points.txt"]
    out[f"{DIST_INFO}/top_level.txt"] = files[f"{egg_info}/top_level.txt"]
    out[f"{DIST_INFO}/LICENSE"] = files["LICENSE"]
    return out


def record(contents: dict[str, bytes]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for path, content in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        writer.writerow([path, f"sha256={digest.decode()}", len(content)])
    writer.writerow([f"{DIST_INFO}/RECORD", "", ""])
    return buf.getvalue().encode()


def build(out: Path, sdist: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    contents = wheel_files(read_members(fetch_sdist(out, sdist)))
    # Package files first, .dist-info last, as the wheel spec recommends.
    ordered = dict(sorted(contents.items(), key=lambda kv: (kv[0].startswith(DIST_INFO), kv[0])))
    ordered[f"{DIST_INFO}/RECORD"] = record(ordered)
    target = out / WHEEL
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".", suffix=".whl")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as whl:
            for path, content in ordered.items():
                info = zipfile.ZipInfo(path, date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                whl.writestr(info, content)
        os.replace(tmp, target)  # a half-written wheel never carries the final name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help=f"a local {SDIST} (checked by sha256)")
    parser.add_argument("--out", type=Path, default=Path("build/wheels"), help="output folder")
    args = parser.parse_args(argv)
    try:
        print(build(args.out, args.sdist))
    except BuildError as e:
        print(f"build_ryu_wheel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
