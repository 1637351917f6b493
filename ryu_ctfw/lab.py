"""A lab on one machine: a private Open vSwitch, namespace VMs, a controller, traffic.

Used by `make demo` and by the integration tests. Everything here is started in a folder
the caller owns and is stopped by the pids it recorded; nothing is ever killed by name.
Needs root, Open vSwitch and iproute2. `isolate_network()` moves the calling process into
a network namespace of its own first, so that several labs (test workers, the demo, the
benchmark) run side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class LabError(RuntimeError):
    pass


def run(
    argv: list[str], env: dict[str, str] | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def require_root_and_tools() -> None:
    """Fail loudly, with the reason, when the lab cannot run here."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth, Open vSwitch)")
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ip", "ethtool"):
        if shutil.which(tool) is None:
            raise LabError(
                f"{tool} not found: run `make deps` (Debian: openvswitch-switch, iproute2, ethtool)"
            )
    if not SCHEMA.exists():
        raise LabError(f"{SCHEMA} missing: is openvswitch-switch installed?")


# --- isolation: one network namespace per lab ----------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
NETNS_RUN_DIR = Path("/run/netns")


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    c_str, c_ulong = ctypes.c_char_p, ctypes.c_ulong
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [c_str, c_str, c_str, c_ulong, ctypes.c_void_p]
    libc.umount2.argtypes = [c_str, ctypes.c_int]
    return libc


def _check(what: str, result: int) -> None:
    if result != 0:
        raise LabError(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def isolate_network() -> None:
    """Put this process into a fresh network namespace, before it starts anything.

    Everything started afterwards (ovsdb-server, ovs-vswitchd with its `ovs-netdev`
    device, ryu-manager on 127.0.0.1, the host ends of veth pairs, Mininet) lives in it
    and cannot see, or collide with, another lab on the machine: this is what lets the
    test workers, the demo and the benchmark run at the same time. It also gets a mount
    namespace of its own with /sys mounted afresh (as `ip netns exec` does), so that
    /sys/class/net shows this namespace's interfaces and not the machine's, and a private
    /run/netns, so that `ip netns add` names are this lab's alone; mounts are made slaves
    first, so nothing done here propagates back to the machine.

    Only the calling thread moves (namespaces are per thread): call it from the thread
    that starts the lab, before starting other threads that do. Needs root.
    """
    if os.geteuid() != 0:
        raise LabError("isolating the lab needs root (unshare of network and mount namespaces)")
    libc = _libc()
    _check("unshare(CLONE_NEWNET | CLONE_NEWNS)", libc.unshare(CLONE_NEWNET | CLONE_NEWNS))
    _check("making / a slave mount", libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None))
    _check("unmounting /sys", libc.umount2(b"/sys", MNT_DETACH))
    _check("mounting sysfs on /sys", libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None))
    # `ip netns add` names live in /run/netns, which the whole machine shares: a tmpfs of
    # our own there makes them this lab's, so fixed names (the demo's vm1, the
    # benchmark's) meet no other lab's, and nothing is left there when the lab ends.
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    tmpfs = libc.mount(b"tmpfs", bytes(NETNS_RUN_DIR), b"tmpfs", flags, b"mode=0755")
    _check(f"mounting a tmpfs on {NETNS_RUN_DIR}", tmpfs)
    run(["ip", "link", "set", "lo", "up"])


def interface_exists(name: str) -> bool:
    """Whether the caller's network namespace has interface `name` (unlike
    /sys/class/net, which shows the namespace of whoever mounted /sys)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_pidfile(pidfile: Path, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    _kill_pid(pid, sig, wait)


def _kill_pid(pid: int, sig: int, wait: float) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- Open vSwitch ----------------------------------------------------------------------------


@dataclass
class Ovs:
    """A private ovsdb-server + ovs-vswitchd whose sockets, db and logs live in `root`."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        d = str(self.root)
        return {**os.environ, "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d}

    def start(self) -> Ovs:
        if interface_exists("ovs-netdev"):
            # The userspace datapath's device belongs to the network namespace
            # ovs-vswitchd runs in: a second instance in the same namespace cannot open
            # its datapath and every bridge fails to come up. Instances in different
            # namespaces (isolate_network) do not meet.
            raise LabError(
                "another Open vSwitch with the userspace datapath is running in this "
                "network namespace (interface ovs-netdev exists); only one can run per "
                "namespace (see lab.isolate_network)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        r = self.root
        run(["ovsdb-tool", "create", str(r / "conf.db"), str(SCHEMA)], self.env)
        run(
            [
                "ovsdb-server",
                str(r / "conf.db"),
                f"--remote=punix:{r}/db.sock",
                f"--pidfile={r}/ovsdb-server.pid",
                "--detach",
                "--log-file",
            ],
            self.env,
        )
        run(["ovs-vsctl", f"--db=unix:{r}/db.sock", "--no-wait", "init"], self.env)
        self.start_vswitchd()
        return self

    def start_vswitchd(self) -> None:
        r = self.root
        run(
            [
                "ovs-vswitchd",
                f"unix:{r}/db.sock",
                f"--pidfile={r}/ovs-vswitchd.pid",
                "--detach",
                "--log-file",
            ],
            self.env,
        )

    def stop_vswitchd(self) -> None:
        _kill_pidfile(self.root / "ovs-vswitchd.pid")

    def stop(self) -> None:
        # Netdev bridges leave tap devices (the bridge's own and ovs-netdev) in the host
        # unless the bridges are deleted while ovs-vswitchd still runs.
        try:
            for bridge in self.vsctl("list-br").split():
                self.vsctl("del-br", bridge)
        except (LabError, subprocess.TimeoutExpired):
            pass
        self.stop_vswitchd()
        _kill_pidfile(self.root / "ovsdb-server.pid")

    def vsctl(self, *args: str) -> str:
        return run(["ovs-vsctl", "--timeout=10", *args], self.env).stdout.strip()

    def ofctl(self, *args: str) -> str:
        return run(["ovs-ofctl", "-O", "OpenFlow13", *args], self.env).stdout

    def appctl(self, *args: str) -> str:
        return run(["ovs-appctl", *args], self.env).stdout

    def add_bridge(
        self, name: str, controller_port: int | None = None, dpid: str | None = None
    ) -> None:
        cmd = [
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            "fail_mode=secure",
        ]
        if dpid:
            cmd.append(f"other-config:datapath-id={dpid}")
        self.vsctl(*cmd)
        if controller_port is not None:
            self.set_controller(name, controller_port)

    def set_controller(self, bridge: str, port: int) -> None:
        self.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{port}")
        # Retry a restarted controller within a second instead of up to eight.
        uuid = self.vsctl("get", "bridge", bridge, "controller").strip("[]")
        self.vsctl("set", "controller", uuid, "max_backoff=1000")

    def add_meters(self, bridge: str, flows_text: str) -> None:
        """The meters the flows in `flows_text` (dump-flows or add-flows syntax) use, as
        the controller makes them: a baseline that installs flows with ovs-ofctl needs them
        first (a flow naming a missing meter is refused, and OVS deletes every meter when a
        bridge's controller changes)."""
        ids = sorted({int(n) for n in re.findall(r"meter(?::|_id=)(\d+)", flows_text)})
        band = "band=type=drop,rate=20,burst_size=20"
        for meter in ids:
            self.ofctl(
                "-O", "OpenFlow13", "add-meter", bridge, f"meter={meter},pktps,burst,stats,{band}"
            )

    def dump_flows(self, bridge: str, *extra: str) -> str:
        return self.ofctl("dump-flows", bridge, *extra)

    def conntrack(self) -> str:
        return self.appctl("dpctl/dump-conntrack")

    def flush_conntrack(self) -> None:
        self.appctl("dpctl/flush-conntrack")

    def conntrack_entries(self, proto: str, src: str, dst: str, extra: str = "") -> list[str]:
        """Conntrack entries of `proto` from src to dst whose text also holds `extra`."""
        orig = f"src={src},dst={dst}"
        return [
            line
            for line in self.conntrack().splitlines()
            if line.startswith(proto) and orig in line and extra in line
        ]

    def ofport(self, port: str) -> int:
        return int(self.vsctl("get", "interface", port, "ofport"))


# --- VMs as network namespaces ---------------------------------------------------------------


@dataclass
class Vm:
    """A namespace with one NIC (eth0) whose host end (`port`) can be plugged into a bridge."""

    ns: str
    port: str
    mac: str
    ips: list[str] = field(default_factory=list)  # with prefix length, e.g. 198.18.0.1/24

    @property
    def ip(self) -> str:
        return self.ips[0].split("/")[0]

    def create(self) -> Vm:
        if (NETNS_RUN_DIR / self.ns).exists():
            raise LabError(f"network namespace {self.ns} already exists; not touching it")
        if interface_exists(self.port):
            raise LabError(f"interface {self.port} already exists; not touching it")
        run(["ip", "netns", "add", self.ns])
        try:
            veth = ["ip", "link", "add", self.port, "type", "veth"]
            run([*veth, "peer", "name", "eth0", "netns", self.ns])
            run(["ip", "link", "set", self.port, "up"])
            self.exec(["ip", "link", "set", "lo", "up"])
            self.exec(["ip", "link", "set", "eth0", "address", self.mac])
            # No duplicate address detection: while its link-local address is tentative
            # the kernel sends MLD reports from ::, which the VM's port (rightly) drops,
            # and tests that count drops would see them.
            self.exec(["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
            for ip in self.ips:
                family = "-6" if ":" in ip else "-4"
                self.exec(
                    ["ip", family, "addr", "add", ip, "dev", "eth0", "nodad"]
                    if family == "-6"
                    else ["ip", "addr", "add", ip, "dev", "eth0"]
                )
            self.exec(["ip", "link", "set", "eth0", "up"])
            # The userspace datapath does not finish partial checksums: without this,
            # conntrack sees TCP/UDP as invalid (NOTES.md).
            self.exec(["ethtool", "-K", "eth0", "tx", "off"])
        except BaseException:
            self.destroy()  # leave no half-made namespace or veth behind
            raise
        return self

    def destroy(self) -> None:
        run(["ip", "link", "del", self.port], check=False)
        run(["ip", "netns", "del", self.ns], check=False)

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def exec(
        self, argv: list[str], check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), check=check, timeout=timeout)

    def forget_closed_connections(self) -> None:
        """Drop this VM's TIME-WAIT sockets. A client that closes first keeps each local port
        for 60 s, so a run of short connections soon waits for ports, not for the network."""
        self.exec(["ss", "--kill", "--tcp", "state", "time-wait"])

    def popen(self, argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def plug(self, ovs: Ovs, bridge: str, ofport: int | None = None) -> int:
        cmd = ["add-port", bridge, self.port]
        if ofport is not None:
            cmd += ["--", "set", "interface", self.port, f"ofport_request={ofport}"]
        ovs.vsctl(*cmd)
        return ovs.ofport(self.port)

    def unplug(self, ovs: Ovs, bridge: str) -> None:
        ovs.vsctl("del-port", bridge, self.port)

    # --- traffic ---------------------------------------------------------------------------
    def ping(self, dst: str, count: int = 2, timeout: float = 1.0) -> bool:
        """True when at least one echo reply came back."""
        cmd = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", str(timeout), dst]
        return self.exec(cmd, check=False, timeout=count * timeout + 10).returncode == 0

    def tcp(self, dst: str, port: int, timeout: float = 2.0, sport: int | None = None) -> bool:
        """True when a TCP connection opened and the server echoed our bytes."""
        return self._client("tcp", dst, port, timeout, sport)

    def udp(self, dst: str, port: int, timeout: float = 2.0, sport: int | None = None) -> bool:
        """True when a UDP datagram got its echo back."""
        return self._client("udp", dst, port, timeout, sport)

    def _client(self, proto: str, dst: str, port: int, timeout: float, sport: int | None) -> bool:
        cmd = lab_cmd(f"{proto}-client", dst, str(port), str(timeout))
        if sport is not None:
            cmd += ["--sport", str(sport)]
        return self.exec(cmd, check=False, timeout=timeout + 10).returncode == 0

    def _started(self, argv: list[str], what: str) -> subprocess.Popen[str]:
        proc = self.popen(argv)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip():
            proc.kill()
            raise LabError(f"{what} in {self.ns} did not start: {proc.stderr.read()}")
        return proc

    def serve(
        self, proto: str, port: int, push: bool = False, sink: bool = False
    ) -> subprocess.Popen[str]:
        """A server for `proto` ("tcp" or "udp") on `port` that echoes (or, with `push`,
        sends a byte every 0.1 s unasked; with `sink`, swallows); the caller stops it."""
        flags = (["--push"] if push else []) + (["--sink"] if sink else [])
        argv = lab_cmd(f"{proto}-server", str(port), *flags)
        return self._started(argv, f"{proto} server")

    def stream(
        self, dst: str, port: int, duration: float, push: bool = False
    ) -> subprocess.Popen[str]:
        """A long-lived TCP connection printing the time of every byte that came back."""
        argv = lab_cmd("tcp-stream", dst, str(port), str(duration), *(["--push"] if push else []))
        return self._started(argv, "tcp stream")

    def send_frame(self, frame: bytes, count: int = 1) -> None:
        self.exec(lab_cmd("send-frame", frame.hex(), "--count", str(count)))

    def udp_listen(self, port: int, timeout: float) -> subprocess.Popen[str]:
        return self._started(lab_cmd("udp-listen", str(port), str(timeout)), "udp listener")


# --- several hosts: a second Open vSwitch in a namespace of its own (issue 12) -------------


@dataclass
class Netns:
    """A bare network namespace (a second "host" whose Open vSwitch runs inside it)."""

    name: str

    def create(self) -> Netns:
        if (NETNS_RUN_DIR / self.name).exists():
            raise LabError(f"network namespace {self.name} already exists; not touching it")
        run(["ip", "netns", "add", self.name])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), check=check)

    def destroy(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


def _ip(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def _no_tx_offload(dev: str, ns: str | None) -> None:
    # As Vm.create: the userspace datapath does not finish partial checksums.
    run((["ip", "netns", "exec", ns] if ns else []) + ["ethtool", "-K", dev, "tx", "off"])


@dataclass
class Link:
    """A veth pair `name` (in this namespace) <-> `peer` (in `peer_ns`, or here), both up,
    tx checksum offload off on both ends, optionally with an IPv4 address on each end."""

    name: str
    peer: str
    peer_ns: str | None = None
    addr: str | None = None  # e.g. 198.19.254.1/30
    peer_addr: str | None = None

    def create(self) -> Link:
        if interface_exists(self.name):
            raise LabError(f"interface {self.name} already exists; not touching it")
        where = ["netns", self.peer_ns] if self.peer_ns else []
        run(["ip", "link", "add", self.name, "type", "veth", "peer", "name", self.peer, *where])
        try:
            for dev, ns, addr in ((self.name, None, self.addr),
                                  (self.peer, self.peer_ns, self.peer_addr)):  # fmt: skip
                if addr:
                    _ip(ns, "addr", "add", addr, "dev", dev)
                _ip(ns, "link", "set", dev, "up")
                _no_tx_offload(dev, ns)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        _ip(None, "link", "del", self.name, check=False)  # takes its peer with it


@dataclass
class NsOvs(Ovs):
    """An Ovs whose ovs-vswitchd runs in network namespace `ns` (ovsdb-server and the
    sockets stay in `root`, reachable from here): one more host with a datapath and a
    conntrack table of its own, and port names of its own. Its bridges reach the controller
    at `controller_host` (an address of this namespace on a Link into `ns`)."""

    ns: str = ""
    controller_host: str = "127.0.0.1"

    def start(self) -> NsOvs:
        if run(["ip", "-n", self.ns, "link", "show", "ovs-netdev"], check=False).returncode == 0:
            raise LabError(f"an Open vSwitch already runs in network namespace {self.ns}")
        self.root.mkdir(parents=True, exist_ok=True)
        r = self.root
        run(["ovsdb-tool", "create", str(r / "conf.db"), str(SCHEMA)], self.env)
        run(["ovsdb-server", str(r / "conf.db"), f"--remote=punix:{r}/db.sock",
             f"--pidfile={r}/ovsdb-server.pid", "--detach", "--log-file"], self.env)  # fmt: skip
        run(["ovs-vsctl", f"--db=unix:{r}/db.sock", "--no-wait", "init"], self.env)
        self.start_vswitchd()
        return self

    def start_vswitchd(self) -> None:
        r = self.root
        run(["ip", "netns", "exec", self.ns, "ovs-vswitchd", f"unix:{r}/db.sock",
             f"--pidfile={r}/ovs-vswitchd.pid", "--detach", "--log-file"], self.env)  # fmt: skip

    def set_controller(self, bridge: str, port: int) -> None:
        self.set_controller_at(bridge, self.controller_host, port)

    def set_controller_at(self, bridge: str, host: str, port: int) -> None:
        self.vsctl("set-controller", bridge, f"tcp:{host}:{port}")
        uuid = self.vsctl("get", "bridge", bridge, "controller").strip("[]")
        self.vsctl("set", "controller", uuid, "max_backoff=1000")


@dataclass
class HostVm(Vm):
    """A Vm whose host end (`port`) may live in another network namespace (`port_ns`, a
    second host's; None: this one), and may be moved there, renamed on the way."""

    port_ns: str | None = None

    def create_in(self, port_ns: str | None, tmp_port: str) -> HostVm:
        """Create the VM with its host end named `tmp_port` here, then move that end into
        `port_ns` as `port` (two hosts may each have a port of the same name)."""
        final, self.port = self.port, tmp_port
        self.create()
        self.move_port(port_ns, final)
        return self

    def move_port(self, port_ns: str | None, new_name: str | None = None) -> None:
        """Move the (unplugged) host end into `port_ns` (None: this namespace)."""
        target = port_ns or str(os.getpid())
        _ip(self.port_ns, "link", "set", "dev", self.port, "netns", target)
        self.port_ns = port_ns
        if new_name and new_name != self.port:
            _ip(port_ns, "link", "set", "dev", self.port, "name", new_name)
            self.port = new_name
        _ip(port_ns, "link", "set", "dev", self.port, "up")

    def destroy(self) -> None:
        _ip(self.port_ns, "link", "del", self.port, check=False)
        run(["ip", "netns", "del", self.ns], check=False)


_SEND_ON = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
    "s.bind((sys.argv[1],0))\n"
    "[s.send(bytes.fromhex(sys.argv[2])) for _ in range(int(sys.argv[3]))]\n"
)


def send_frame_on(iface: str, frame: bytes, count: int = 1, ns: str | None = None) -> None:
    """Put a hand-made frame on interface `iface` (of namespace `ns`, or this one): sent on
    one end of a veth, it arrives by the other end (a bridge's fabric port, say)."""
    argv = [sys.executable, "-c", _SEND_ON, iface, frame.hex(), str(count)]
    run((["ip", "netns", "exec", ns] if ns else []) + argv)


def flow_table(dump: str) -> dict[str, str]:
    """An `ovs-ofctl dump-flows --no-stats` dump as {table, priority and match: cookie and
    actions}: what a sync adds or changes (new or other value) and deletes (gone keys)."""
    out = {}
    for line in dump.splitlines():
        line = line.strip()
        if " actions=" not in line:
            continue
        head, actions = line.split(" actions=", 1)
        cookie, _, key = head.partition(", ") if head.startswith("cookie=") else ("", "", head)
        out[key] = f"{cookie} actions={actions}"
    return out


# --- a router on a port that is no VM, and the outside world behind it ---------------------

GATEWAY4, GATEWAY6 = "198.18.0.254", "2001:db8::fe"  # the VMs' default gateway
OUTSIDE4, OUTSIDE6 = "198.19.0.1", "2001:db8:19::1"  # a host behind it, in the network
OUTSIDE4_OTHER = "198.19.0.77"  # another address of that host, in the network too
BEYOND4 = "198.20.0.1"  # an address behind the router that is outside the network's CIDRs
OUTSIDE_CIDRS = ["198.19.0.0/24", "2001:db8:19::/48"]


def default_route(vm: Vm, gateway4: str = GATEWAY4, gateway6: str = GATEWAY6) -> None:
    """Give `vm` default routes via the gateway (IPv6 only when it has an IPv6 address)."""
    vm.exec(["ip", "route", "replace", "default", "via", gateway4, "dev", "eth0"])
    if any(":" in ip for ip in vm.ips):
        vm.exec(["ip", "-6", "route", "replace", "default", "via", gateway6, "dev", "eth0"])


@dataclass
class Uplink:
    """A router namespace whose eth0 is the bridge port `port` (a network's port: no VM),
    with GATEWAY4/GATEWAY6 on that side and IP forwarding on, and a second veth to an
    "outside" namespace that holds OUTSIDE4, OUTSIDE4_OTHER, BEYOND4 and OUTSIDE6 and
    routes everything back via the router.

    `router` and `outside` are Vms (their eth0 is sniffable, `send_frame` from the router
    puts a frame on the bridge port); `destroy()` removes both namespaces and the veths.
    """

    router: Vm
    outside: Vm

    @classmethod
    def named(cls, prefix: str, port: str) -> Uplink:
        """Namespaces `<prefix>-router` / `<prefix>-outside`; `port` is the bridge end."""
        router = Vm(ns=f"{prefix}-router", port=port, mac="52:54:00:fe:00:01",
                    ips=[f"{GATEWAY4}/24", f"{GATEWAY6}/64"])  # fmt: skip
        # The outside's veth is made in this namespace (as a Vm's is) and its host end is
        # then moved into the router, so the router has eth0 (bridge) and `<port>o`.
        outside = Vm(ns=f"{prefix}-outside", port=f"{port}o", mac="52:54:00:fe:00:02",
                     ips=[f"{OUTSIDE4}/24", f"{OUTSIDE4_OTHER}/24", f"{BEYOND4}/24",
                          f"{OUTSIDE6}/64"])  # fmt: skip
        return cls(router, outside)

    @property
    def port(self) -> str:
        return self.router.port

    @property
    def mac(self) -> str:
        return self.router.mac

    def create(self) -> Uplink:
        try:
            self.router.create()
            self.outside.create()
            inner = self.outside.port
            run(["ip", "link", "set", inner, "netns", self.router.ns])
            r = self.router.exec
            r(["sysctl", "-qw", f"net.ipv6.conf.{inner}.accept_dad=0"])
            r(["ip", "addr", "add", "198.19.0.254/24", "dev", inner])
            r(["ip", "-6", "addr", "add", "2001:db8:19::fe/64", "dev", inner, "nodad"])
            r(["ip", "link", "set", inner, "up"])
            r(["ethtool", "-K", inner, "tx", "off"])  # as Vm.create: checksums done here
            r(["ip", "route", "add", "198.20.0.0/24", "via", OUTSIDE4, "dev", inner])
            r(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            r(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            o = self.outside.exec
            o(["ip", "route", "add", "default", "via", "198.19.0.254", "dev", "eth0"])
            o(["ip", "-6", "route", "add", "default", "via", "2001:db8:19::fe", "dev", "eth0"])
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        self.router.destroy()
        self.outside.destroy()

    def plug(self, ovs: Ovs, bridge: str, ofport: int | None = None) -> int:
        return self.router.plug(ovs, bridge, ofport)


# --- a shared L2 segment: hosts' fabric ports and a gateway on one Linux bridge -----------


@dataclass
class Segment:
    """A shared L2 segment (issue 12): a Linux bridge `bridge` in a namespace `ns` of its
    own, to which veths are attached: each host's fabric port, a gateway's NIC. Every veth
    end has tx checksum offload off (the userspace datapath does not finish checksums).
    IPv6 is off in the segment's namespace, so the bridge itself says nothing on it. With
    `hub` (the default) the bridge learns no MACs (ageing_time 0): every frame reaches every
    other port, so frames forged with a VM's MAC cannot steer the segment, and each host
    sees all the segment's traffic (the worst case for its flows).
    `destroy()` deletes the veths it made or adopted and the namespace."""

    ns: str
    bridge: str = "seg0"
    hub: bool = True
    ends: list[str] = field(default_factory=list)  # its side of each veth

    def create(self) -> Segment:
        Netns(self.ns).create()
        try:
            for conf in ("all", "default"):
                _ip_exec(self.ns, ["sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1"])
            _ip(self.ns, "link", "add", self.bridge, "type", "bridge", "stp_state", "0",
                "mcast_snooping", "0", *(["ageing_time", "0"] if self.hub else []))  # fmt: skip
            _ip(self.ns, "link", "set", self.bridge, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def _enslave(self, end: str) -> None:
        self.ends.append(end)
        _ip(self.ns, "link", "set", end, "master", self.bridge)
        _ip(self.ns, "link", "set", end, "up")
        _no_tx_offload(end, self.ns)

    def attach(self, dev: str, dev_ns: str | None, end: str) -> str:
        """A veth `dev` in `dev_ns` (None: this namespace), up, whose other end `end` is a
        port of the segment's bridge; returns `dev`."""
        if run(["ip", *(["-n", dev_ns] if dev_ns else []), "link", "show", dev],
               check=False).returncode == 0:  # fmt: skip
            raise LabError(f"interface {dev} already exists; not touching it")
        _ip(dev_ns, "link", "add", dev, "type", "veth", "peer", "name", end, "netns", self.ns)
        try:
            self._enslave(end)
            _ip(dev_ns, "link", "set", dev, "up")
            _no_tx_offload(dev, dev_ns)
        except BaseException:
            _ip(dev_ns, "link", "del", dev, check=False)
            raise
        return dev

    def adopt(self, end: str) -> None:
        """Move `end` (a veth end in this namespace, e.g. an Uplink's `port`: its router's
        eth0 is the other end) into the segment and make it a port of its bridge."""
        run(["ip", "link", "set", end, "netns", self.ns])
        self._enslave(end)

    def destroy(self) -> None:
        for end in self.ends:
            _ip(self.ns, "link", "del", end, check=False)  # takes its peer with it
        self.ends.clear()
        _ip(self.ns, "link", "del", self.bridge, check=False)
        Netns(self.ns).destroy()


def _ip_exec(ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv])


@contextlib.contextmanager
def servers(vm: Vm, *specs: tuple[str, int]) -> Iterator[None]:
    """Servers (protocol, port) in `vm` while the block runs, killed after it."""
    procs = [vm.serve(proto, port) for proto, port in specs]
    try:
        yield
    finally:
        for p in procs:
            p.kill()


def lab_cmd(*args: str) -> list[str]:
    """This module's traffic programs (below), run with the same interpreter."""
    return [sys.executable, "-m", "ryu_ctfw.lab", *args]


# --- the controller --------------------------------------------------------------------------


@dataclass
class Controller:
    """`ryu-manager ryu_ctfw.app` with its own config file, state file and ports."""

    root: Path
    ofp_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    options: str = ""  # more lines for its [ctfw] section, like "api_token = x\n"

    def __post_init__(self) -> None:
        # Two free_port() calls in a row can return the same port (about 1 in 10,000 here);
        # ryu-manager then serves REST but cannot listen for switches, and no bridge connects.
        while self.api_port == self.ofp_port:
            self.api_port = free_port()

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def log_file(self) -> Path:
        return self.root / "ryu-manager.log"

    def sync_reports(self) -> list[tuple[int, int, int]]:
        """(flows of ours found, added or changed, deleted) for every time a switch
        connected and was brought in sync, from the log, oldest first."""
        log = self.log_file.read_text() if self.log_file.exists() else ""
        found = re.findall(
            r"in sync [\d.]+ s after connect: (\d+) flows of ours found, (\d+) added or"
            r" changed, (\d+) deleted",
            log,
        )
        return [(int(a), int(b), int(c)) for a, b, c in found]

    def sync_reports_by_switch(self) -> list[tuple[str, int, int, int]]:
        """(dpid, flows of ours found, added or changed, deleted) for every time a switch
        connected and was brought in sync, from the log, oldest first."""
        log = self.log_file.read_text() if self.log_file.exists() else ""
        found = re.findall(
            r"switch ([0-9a-f]{16}) in sync [\d.]+ s after connect: (\d+) flows of ours"
            r" found, (\d+) added or changed, (\d+) deleted",
            log,
        )
        return [(d, int(a), int(b), int(c)) for d, a, b, c in found]

    def changes_sent(self, dpid: str) -> int:
        """How many times a change was sent to switch `dpid` outside a connect ("synced:"
        lines of the log: a diff with at least one flow-mod)."""
        log = self.log_file.read_text() if self.log_file.exists() else ""
        return len(re.findall(rf"switch {dpid} synced: ", log))

    def wait_in_sync(self, reports_before: int, timeout: float = 20) -> tuple[int, int, int]:
        """The report of the next connect after `reports_before` reports."""
        wait_for(lambda: len(self.sync_reports()) > reports_before, timeout, "a switch in sync")
        return self.sync_reports()[-1]

    def stored(self) -> dict[str, Any]:
        """The policy the state file (snapshot plus journal) holds, as JSON."""
        from ryu_ctfw import store  # not at import: lab.py also runs inside namespaces

        return store.load(self.state_file).to_dict()

    def stored_bytes(self) -> bytes:
        """Every byte of the stored state, to check that something wrote nothing."""
        from ryu_ctfw import store

        journal = store.journal_path(self.state_file)
        return self.state_file.read_bytes() + (journal.read_bytes() if journal.exists() else b"")

    def start(self, timeout: float = 20) -> Controller:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "ctfw.conf"
        conf.write_text(f"[ctfw]\nstate_file = {self.state_file}\n{self.options}")
        ryu_manager = Path(sys.executable).with_name("ryu-manager")
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                str(ryu_manager),
                "--config-file",
                str(conf),
                "--ofp-tcp-listen-port",
                str(self.ofp_port),
                "--wsapi-port",
                str(self.api_port),
                "ryu_ctfw.app",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._api_up, timeout, "ryu-manager's REST API")
        return self

    def _api_up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(
                f"ryu-manager exited ({self.proc.returncode}); log:\n"
                + self.log_file.read_text()[-3000:]
            )
        try:
            return self.api("GET", "/ctfw/v1/vms")[0] == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            # Our child: wait() reaps it. (Polling with kill(pid, 0), as for the daemons
            # below, would see the unreaped zombie and wait out the whole timeout.)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def api(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text) if text else None
            except ValueError:
                return e.code, text

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """api() that insists on a 2xx answer."""
        status, answer = self.api(method, path, body)
        if not 200 <= status < 300:
            raise LabError(f"{method} {path} -> {status} {answer}")
        return answer

    def wait_connected(self, bridge: str, timeout: float = 20) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for sw in self.api("GET", "/ctfw/v1/switches")[1]["switches"]:
                if sw["name"] == bridge and sw["connected"]:
                    return sw
            return None

        return wait_for(find, timeout, f"bridge {bridge} to connect to the controller")


# --- tiny traffic programs run inside the namespaces -----------------------------------------
# `python -m ryu_ctfw.lab <command> ...`; each prints what it saw and exits 0 on success.

PROBE = b"ryu-ctfw lab probe"


def _any_addr(family: int) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def _serve_tcp_conn(conn: socket.socket, push: bool, sink: bool = False) -> None:
    with conn:
        try:
            while True:
                if sink:  # swallow everything (bulk throughput)
                    if not conn.recv(1 << 20):
                        return
                    continue
                if push:  # talk without being asked: only replies flow back
                    conn.sendall(b"x")
                    time.sleep(0.1)
                    continue
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return


def cmd_server(proto: str, port: int, push: bool, sink: bool = False) -> int:
    import threading

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6, kind) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        if proto == "tcp":
            s.listen(128)
        print("listening", flush=True)
        while True:
            if proto == "tcp":
                conn, _ = s.accept()
                args = (conn, push, sink)
                threading.Thread(target=_serve_tcp_conn, args=args, daemon=True).start()
            else:
                data, peer = s.recvfrom(2048)
                s.sendto(data, peer)


def cmd_client(proto: str, dst: str, port: int, timeout: float, sport: int | None) -> int:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        try:
            if sport is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((_any_addr(family), sport))
            if proto == "tcp":
                s.connect((dst, port))
                s.sendall(PROBE)
                got = s.recv(1024)
            else:
                s.connect((dst, port))  # connected, so an ICMP error is reported to us
                s.send(PROBE)
                got = s.recv(2048)
        except OSError as e:
            print(f"{proto} {dst}:{port}: {e}", file=sys.stderr)
            return 1
    return 0 if got == PROBE else 1


def cmd_stream(dst: str, port: int, duration: float, push: bool) -> int:
    """A long-lived TCP connection: print the time of every chunk that came back."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    end = time.time() + duration
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect((dst, port))
        print("connected", flush=True)
        s.settimeout(0.2)
        while time.time() < end:
            try:
                if not push:
                    s.sendall(b"x")
                if s.recv(4096):
                    print(f"{time.time():.3f}", flush=True)
            except TimeoutError:
                pass
            except OSError as e:
                print(f"error {e}", flush=True)
                return 1
            if not push:
                time.sleep(0.1)
    return 0


def cmd_send_frame(frame_hex: str, count: int) -> int:
    """Put a hand-made Ethernet frame on eth0, e.g. one with a forged source."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind(("eth0", 0))
        for _ in range(count):
            s.send(bytes.fromhex(frame_hex))
    return 0


def cmd_tcp_rate(dst: str, port: int, duration: float) -> int:
    """New TCP connections per second: connect, one byte each way, close; print the rate."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    done, start = 0, time.time()
    while time.time() - start < duration:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((dst, port))
            s.sendall(b"x")
            if s.recv(1) != b"x":
                return 1
        done += 1
    print(f"{done / (time.time() - start):.1f}", flush=True)
    return 0


def cmd_tcp_bulk(dst: str, port: int, duration: float) -> int:
    """Bulk TCP throughput to a sink server: print bytes per second sent."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    chunk, sent = b"\0" * 65536, 0
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((dst, port))
        start = time.time()
        while time.time() - start < duration:
            s.sendall(chunk)
            sent += len(chunk)
        elapsed = time.time() - start
    print(f"{sent / elapsed:.0f}", flush=True)
    return 0


def cmd_udp_listen(port: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        print("listening", flush=True)
        s.settimeout(timeout)
        try:
            _, peer = s.recvfrom(2048)
        except TimeoutError:
            return 1
        print(f"got from {peer[0]}", flush=True)
        return 0


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ryu_ctfw.lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for proto in ("tcp", "udp"):
        srv = sub.add_parser(f"{proto}-server")
        srv.add_argument("port", type=int)
        srv.add_argument("--push", action="store_true")
        srv.add_argument("--sink", action="store_true")
        cli = sub.add_parser(f"{proto}-client")
        cli.add_argument("dst")
        cli.add_argument("port", type=int)
        cli.add_argument("timeout", type=float)
        cli.add_argument("--sport", type=int)
    for name in ("tcp-rate", "tcp-bulk"):
        p = sub.add_parser(name)
        p.add_argument("dst")
        p.add_argument("port", type=int)
        p.add_argument("duration", type=float)
    st = sub.add_parser("tcp-stream")
    st.add_argument("dst")
    st.add_argument("port", type=int)
    st.add_argument("duration", type=float)
    st.add_argument("--push", action="store_true")
    fr = sub.add_parser("send-frame")
    fr.add_argument("frame_hex")
    fr.add_argument("--count", type=int, default=1)
    ul = sub.add_parser("udp-listen")
    ul.add_argument("port", type=int)
    ul.add_argument("timeout", type=float)
    a = ap.parse_args(argv)
    proto, _, kind = a.cmd.partition("-")
    if kind == "server":
        return cmd_server(proto, a.port, a.push, a.sink)
    if kind == "client":
        return cmd_client(proto, a.dst, a.port, a.timeout, a.sport)
    if a.cmd == "tcp-rate":
        return cmd_tcp_rate(a.dst, a.port, a.duration)
    if a.cmd == "tcp-bulk":
        return cmd_tcp_bulk(a.dst, a.port, a.duration)
    if a.cmd == "tcp-stream":
        return cmd_stream(a.dst, a.port, a.duration, a.push)
    if a.cmd == "send-frame":
        return cmd_send_frame(a.frame_hex, a.count)
    return cmd_udp_listen(a.port, a.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
