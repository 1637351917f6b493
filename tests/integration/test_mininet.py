"""The seed's Step 4 with Mininet hosts built from mininet/seed_topo.py.

The same checks as test_seed.py, but the VMs are Mininet hosts and the bridge is the one
Mininet creates (OVSSwitch, userspace datapath) in this test's private Open vSwitch.
Mininet shells out to ovs-vsctl, so the private instance is found through OVS_RUNDIR,
OVS_LOGDIR and OVS_DBDIR in os.environ, set for the test only. Everything started here
is stopped by pid or by net.stop(); Mininet's cleanup (`mn -c`) is never used.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ryu_ctfw import lab


def mininet_missing() -> str | None:
    """Why this interpreter cannot import Mininet, or None when it can.

    Mininet is Debian's (python3-mininet), installed for the system Python, and the venv
    sees it only when it is made from that Python (the Makefile's --system-site-packages).
    A venv of another Python, pyenv's 3.13 say, cannot import it. The check does not
    import Mininet; a `mininet` folder without __init__.py (this repository's, when the
    working directory is on sys.path) is a namespace package, not Mininet.
    """
    spec = importlib.util.find_spec("mininet")
    if spec is not None and spec.origin is not None:
        return None
    here = f"Python {sys.version.split()[0]} ({sys.executable})"
    debian = Path("/usr/lib/python3/dist-packages/mininet/__init__.py")
    if debian.exists():
        system = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        where = f"Debian's python3-mininet is installed for /usr/bin/python3 (Python {system})"
    else:
        where = "Debian's python3-mininet is not installed (`make deps`)"
    return f"module 'mininet' is not importable by {here}: {where}"


MININET_MISSING = mininet_missing()
# The system Python is the one Mininet is packaged for: there a missing Mininet is an
# error (require_mininet), never a skip. Any other interpreter skips, saying why.
SKIP_MININET = MININET_MISSING is not None and sys.base_prefix != "/usr"

pytestmark = [
    pytest.mark.skipif(SKIP_MININET, reason=f"{MININET_MISSING}; run it with the system Python"),
    pytest.mark.integration,
]

ROOT = Path(__file__).resolve().parents[2]
TOPO_FILE = ROOT / "mininet" / "seed_topo.py"
# The interpreter that runs the echo servers and clients inside the Mininet hosts: this
# venv's (the tests run as `<venv>/bin/python -m pytest`), where ryu_ctfw is installed.
# Not .venv's by name: `make test PYTHON=...` runs from a venv of its own.
PYTHON = sys.executable
DROP = "priority=0 actions=write_metadata:0x1,goto_table:3"  # no pair allows it (an event)
THERE = "-rel-rpl+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 "  # after +new or +est


def load_seed_topo() -> ModuleType:
    """mininet/seed_topo.py, imported by path (the folder is not a package on purpose)."""
    spec = importlib.util.spec_from_file_location("ctfw_seed_topo", TOPO_FILE)
    assert spec is not None and spec.loader is not None, f"cannot load {TOPO_FILE}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_mininet() -> None:
    if MININET_MISSING is not None:
        raise lab.LabError(MININET_MISSING)
    if shutil.which("mnexec") is None:
        raise lab.LabError("mnexec not found: install Debian's mininet (`make deps`)")
    # The userspace datapath of every ovs-vswitchd opens a tap device named ovs-netdev;
    # a second instance on the machine cannot, and its bridges silently fail to appear.
    # (Give the instance of a test that just finished a moment to go.)
    try:
        lab.wait_for(lambda: not Path("/sys/class/net/ovs-netdev").exists(), 3, "ovs-netdev")
    except lab.LabError:
        raise lab.LabError(
            "an interface ovs-netdev exists: another userspace-datapath Open vSwitch runs"
            " on this machine (another test run, `make demo`?); run this test alone"
        ) from None


@dataclass
class MnLab:
    ovs: lab.Ovs
    ctl: lab.Controller
    net: Any
    topo: ModuleType
    prefix: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}s1"

    def host(self, name: str) -> Any:
        return self.net.get(name)

    def port(self, ofport: int) -> str:
        return self.topo.switch_port(self.prefix, ofport)

    # --- traffic, inside the Mininet hosts --------------------------------------------------
    def run(self, host: Any, argv: list[str], timeout: float) -> int:
        proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return proc.returncode

    def ping(self, src: str, dst: str) -> bool:
        argv = ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", self.ip(dst)]
        return self.run(self.host(src), argv, 15) == 0

    def probe(self, proto: str, src: str, dst: str, port: int, timeout: float = 1.0) -> bool:
        """The lab's tcp/udp echo client: True when the echo came back."""
        argv = [PYTHON, "-m", "ryu_ctfw.lab", f"{proto}-client", self.ip(dst), str(port)]
        return self.run(self.host(src), [*argv, str(timeout)], timeout + 15) == 0

    def serve(self, name: str, proto: str, port: int) -> None:
        argv = [PYTHON, "-m", "ryu_ctfw.lab", f"{proto}-server", str(port)]
        proc = self.host(name).popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening" not in line:
            proc.kill()
            _, err = proc.communicate()
            raise lab.LabError(f"{proto} server on {name}:{port} did not start: {err}")

    def ip(self, name: str) -> str:
        return self.host(name).IP()

    # --- what the controller and the switch say ---------------------------------------------
    def counter(self, text_part: str, table: int = 1) -> int:
        flows = self.ctl.ok("GET", "/ctfw/v1/flows")["flows"]
        hits = [f for f in flows if f["table"] == table and text_part in f["text"]]
        assert len(hits) == 1, f"expected one flow matching {text_part!r}, got {hits}"
        return hits[0]["packets"]

    def counter_reaches(self, text_part: str, at_least: int) -> int:
        """Poll: the userspace datapath reports packets a little late."""
        lab.wait_for(
            lambda: self.counter(text_part) >= at_least, 5, f"{text_part} to count {at_least}"
        )
        return self.counter(text_part)

    def settled_counter(self, text_part: str) -> int:
        """The counter once it stopped moving (late packets of earlier traffic included)."""
        last = self.counter(text_part)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.counter(text_part)
            if now == last:
                return now
            last = now
        return last


def _stop_procs(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _quietly(step: Callable[[], object], errors: list[BaseException]) -> None:
    """Run one teardown step; remember its error so the others still run."""
    try:
        step()
    except Exception as e:
        errors.append(e)


@pytest.fixture
def mnlab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MnLab]:
    lab.require_root_and_tools()
    require_mininet()
    topo = load_seed_topo()
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    ovs = lab.Ovs(tmp_path / "ovs")
    for var in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR"):
        monkeypatch.setenv(var, str(ovs.root))
    ctl = lab.Controller(tmp_path / "ctl")
    prefix = f"mn{secrets.token_hex(2)}"
    setLogLevel("info")
    net = Mininet(
        topo=topo.SeedTopo(prefix=prefix),
        switch=partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="secure"),
        controller=partial(RemoteController, ip="127.0.0.1", port=ctl.ofp_port),
        build=False,
    )
    env = MnLab(ovs, ctl, net, topo, prefix)
    try:
        ovs.start()
        ctl.start()
        net.build()  # inside the try: a half-built network is still stopped below
        net.start()
        topo.disable_offload(net)
        ctl.wait_connected(env.bridge)
        yield env
    finally:
        errors: list[BaseException] = []
        _quietly(lambda: _stop_procs(env.procs), errors)
        _quietly(net.stop, errors)
        _quietly(ctl.stop, errors)
        _quietly(ovs.stop, errors)
        if errors:
            raise errors[0]


def test_seed_step4_with_mininet_hosts(mnlab: MnLab) -> None:
    # The switch Mininet made has the seed's numbering: vm1 on ofport 2, vm2 on ofport 3.
    assert mnlab.ovs.ofport(mnlab.port(2)) == 2
    assert mnlab.ovs.ofport(mnlab.port(3)) == 3
    for name, ofport in (("vm1", 2), ("vm2", 3)):
        host = mnlab.host(name)
        body = {"port": mnlab.port(ofport), "mac": host.MAC(), "ips": [host.IP()]}
        mnlab.ctl.ok("PUT", f"/ctfw/v1/vms/{name}", body)
    assert mnlab.host("vm1").MAC() == "52:54:00:60:84:ff"
    assert mnlab.host("vm2").MAC() == "52:54:00:99:90:78"
    mnlab.ctl.ok("POST", "/ctfw/v1/pairs", {"initiator": "vm1", "responder": "vm2"})

    # vm2 -> vm1: everything fails, and table 1's last entry counts it.
    mnlab.serve("vm1", "tcp", 23)
    mnlab.serve("vm1", "udp", 53)
    drops = mnlab.settled_counter(DROP)
    assert not mnlab.ping("vm2", "vm1"), "ping vm2 -> vm1 must fail"
    assert not mnlab.probe("tcp", "vm2", "vm1", 23), "telnet vm2 -> vm1 must fail"
    assert not mnlab.probe("udp", "vm2", "vm1", 53), "dns vm2 -> vm1 must fail"
    mnlab.counter_reaches(DROP, drops + 4)
    assert mnlab.counter(f"+new{THERE}") == mnlab.counter(f"+est{THERE}") == 0

    # vm1 -> vm2: everything works, nothing more is dropped.
    mnlab.serve("vm2", "tcp", 22)
    mnlab.serve("vm2", "udp", 53)
    drops = mnlab.settled_counter(DROP)
    assert mnlab.ping("vm1", "vm2"), "ping vm1 -> vm2 must work"
    assert mnlab.probe("tcp", "vm1", "vm2", 22, timeout=3), "telnet vm1 -> vm2 22 must work"
    assert mnlab.probe("udp", "vm1", "vm2", 53, timeout=3), "dig @vm2 must work"
    # Three connections open on the +new line; their other packets meet the +est line.
    mnlab.counter_reaches(f"+new{THERE}", 3)
    mnlab.counter_reaches(f"+est{THERE}", 3)
    mnlab.counter_reaches("+est+rpl+trk,ct_mark=0x10002,in_port=3", 3)
    assert mnlab.settled_counter(DROP) == drops

    # Conntrack holds the three connections vm1 opened, as `conntrack -L -s` did in the seed.
    for proto, extra in (("icmp", "type=8"), ("tcp", "dport=22"), ("udp", "dport=53")):
        entries = mnlab.ovs.conntrack_entries(proto, mnlab.ip("vm1"), mnlab.ip("vm2"), extra)
        assert entries, f"no {proto} conntrack entry from vm1:\n{mnlab.ovs.conntrack()}"
