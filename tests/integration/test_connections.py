"""An attacker on the real switch: connections, their replies and related ICMP pass only on
the link their ct_mark names, fragments follow their first fragment, and MAC learning can be
neither hijacked nor used to flood the controller.

Every refusal is shown by sniffers on the destination and a bystander (a third VM or an
unregistered port) seeing nothing with the test's marker, next to a control that shows the
same path delivers the legitimate frame.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import frames_conn as fc
from conftest import Lab, drop
from sniff import Sniffer

from ryu_ctfw import lab

FRAMES_CONN = str(Path(fc.__file__).resolve())
SNIFF_LIMIT = 60.0  # a sniffer stops when read; this only bounds a forgotten one


def new_marker() -> bytes:
    return b"ctfw-" + secrets.token_hex(6).encode()


class Watch:
    """Sniffers on several VMs for one marker; they run until read (or the test ends)."""

    def __init__(self, marker: bytes, vms: dict[str, lab.Vm]) -> None:
        self.sniffers: dict[str, Sniffer] = {}
        try:
            for name, vm in vms.items():
                self.sniffers[name] = Sniffer(vm, marker, SNIFF_LIMIT)
        except BaseException:
            self.__exit__()
            raise

    def frames(self) -> dict[str, list[bytes]]:
        """The marked frames each VM received. Read once the switch has handled the test's
        frames; the first read waits a little for frames still on their way."""
        return {
            name: s.frames(settle=0.5 if i == 0 else 0.0)
            for i, (name, s) in enumerate(self.sniffers.items())
        }

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        for s in self.sniffers.values():
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()


def sniff(marker: bytes, **vms: lab.Vm) -> Watch:
    return Watch(marker, vms)


def helper(vm: lab.Vm, *args: str) -> subprocess.Popen[str]:
    """frames_conn.py's program `args` in `vm`, started (it printed its first line)."""
    proc = vm.popen([sys.executable, FRAMES_CONN, *args])
    if (proc.stdout.readline() if proc.stdout else "").strip() != "ready":
        proc.kill()
        raise lab.LabError(f"{args[0]} in {vm.ns} did not start: {proc.stderr.read()}")
    return proc


def datagrams(proc: subprocess.Popen[str]) -> list[tuple[int, str, int, str]]:
    """(port, peer, length, sha256) of every datagram a `udp-recv` got."""
    out, _ = proc.communicate(timeout=30)
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [(int(p), peer, int(n), digest) for p, peer, n, digest in rows]


def vm_id(env: Lab, name: str) -> int:
    return env.ctl.ok("GET", f"/ctfw/v1/vms/{name}")["id"]


def mark(env: Lab, initiator: str, responder: str) -> str:
    """The ct_mark of a connection from `initiator` to `responder`, as ovs-ofctl shows it."""
    return hex(vm_id(env, initiator) << 16 | vm_id(env, responder))


def refused(env: Lab) -> int:
    """Packets table 1 dropped: invalid, or matched no line."""
    return env.counter("ct_state=+inv+trk") + env.drop_counter()


def settled(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> list[str]:
    """Wait for a sign that the switch handled the test's frames (its counters lag a
    little). A leak may take the frames elsewhere: the sniffers' verdict comes first, so a
    timeout is returned, to be asserted after them, not raised."""
    try:
        lab.wait_for(predicate, timeout, what)
        return []
    except lab.LabError as e:
        return [str(e)]


def refused_reaches(env: Lab, at_least: int) -> list[str]:
    return settled(lambda: refused(env) >= at_least, f"table 1 to drop {at_least} packets")


def counted(env: Lab, text: str, at_least: int, table: int = 1) -> list[str]:
    what = f"{text!r} (table {table}) to count {at_least} packets"
    return settled(lambda: env.counter(text, table) >= at_least, what)


def evidence(env: Lab, seen: dict[str, list[bytes]] | None = None) -> str:
    text = env.ovs.dump_flows(env.bridge) + "\nconntrack:\n" + env.ovs.conntrack()
    if seen:
        for name, got in seen.items():
            text += f"\n{name} saw {len(got)} marked frame(s): {[fc.decode(f) for f in got]}"
    return text


def with_tag(got: list[bytes], tag: bytes) -> list[bytes]:
    return [f for f in got if tag in f]


def test_related_icmp_and_replies_pass_only_on_their_link(labenv: Lab) -> None:
    vm1, vm2, vm3 = labenv.vm("vm1", 2, 1), labenv.vm("vm2", 3, 2), labenv.vm("vm3", 4, 3)
    spy = labenv.vm("spy", 9, 9, register=False)
    labenv.pair("vm1", "vm2")
    link = mark(labenv, "vm1", "vm2")
    # A bound socket on vm2: its kernel answers nothing (no port unreachable of its own).
    sink = helper(vm2, "udp-recv", "60", "0", "7001", "7003")
    try:
        # --- 1. Related ICMP is not global ---------------------------------------------------
        m = new_marker()
        dgram = fc.udp4_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, 40001, 7001, m + b"-dgram")
        vm1.send_frame(dgram)
        lab.wait_for(
            lambda: labenv.ovs.conntrack_entries("udp", vm1.ip, vm2.ip, "sport=40001"),
            5,
            "vm1's udp connection to vm2:7001 in conntrack",
        )
        # Port unreachable quoting vm1's datagram: its IP header and first 8 bytes (what
        # RFC 792 asks for; these 28 bytes are the sniffers' marker), or all of it.
        short, full = dgram[14:42], dgram[14:]
        with sniff(short, vm1=vm1, vm2=vm2, spy=spy) as sniffers:
            before = refused(labenv)
            related = f"ct_state=+rel+trk,ct_mark={link},in_port=3,"
            related_before = labenv.counter(related)
            # From vm3's own MAC and IP (vm3 is paired with nobody), then the same from vm2.
            for sender in (vm3, vm2):
                for quote in (short, full):
                    sender.send_frame(
                        fc.icmp4_error_frame(sender.mac, vm1.mac, sender.ip, vm1.ip, quote)
                    )
            late = counted(labenv, related, related_before + 2) + refused_reaches(
                labenv, before + 2
            )
            seen = sniffers.frames()
        at_vm1 = [(fc.decode(f).src, m in f) for f in seen["vm1"]]  # (sender, full quote)
        assert not [got for got in at_vm1 if got[0] != vm2.ip], (
            "vm3's ICMP error about vm1's connection to vm2 reached vm1\n" + evidence(labenv, seen)
        )
        assert sorted(at_vm1) == [(vm2.ip, False), (vm2.ip, True)], (
            "control: vm2's ICMP errors (short and full quote) should reach vm1\n"
            + evidence(labenv, seen)
        )
        assert not seen["vm2"] and not seen["spy"], evidence(labenv, seen)
        assert not late, late

        # --- 3. Replies go only where the mark says ------------------------------------------
        labenv.pair("vm3", "vm2")
        m = new_marker()
        vm1.send_frame(fc.udp4_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, 40003, 7003, m + b"-open"))
        lab.wait_for(
            lambda: labenv.ovs.conntrack_entries("udp", vm1.ip, vm2.ip, "sport=40003"),
            5,
            "vm1's udp connection to vm2:7003 in conntrack",
        )
        with sniff(m, vm1=vm1, vm3=vm3, spy=spy) as sniffers:
            before = refused(labenv)
            reply_line = f"ct_state=+est+rpl+trk,ct_mark={link},in_port=3,"
            replies_before = labenv.counter(reply_line)

            def reply(dst_mac: str, tag: bytes) -> bytes:  # vm1's connection, tuple reversed
                return fc.udp4_frame(vm2.mac, dst_mac, vm2.ip, vm1.ip, 7003, 40003, m + tag)

            vm2.send_frame(reply(vm3.mac, b"-to-vm3"))  # vm3 has a pair with vm2 too
            vm2.send_frame(reply(spy.mac, b"-to-spy"))
            vm2.send_frame(reply("ff:ff:ff:ff:ff:ff", b"-to-all"))
            vm2.send_frame(reply(vm1.mac, b"-to-vm1"))
            late = counted(labenv, reply_line, replies_before + 1) + refused_reaches(
                labenv, before + 3
            )
            seen = sniffers.frames()
        assert not seen["vm3"] and not seen["spy"], (
            "a reply of vm1's connection reached another port\n" + evidence(labenv, seen)
        )
        assert [fc.decode(f).eth_dst for f in seen["vm1"]] == [vm1.mac], (
            "control: vm1 gets exactly the reply addressed to it\n" + evidence(labenv, seen)
        )
        assert not late, late
    finally:
        sink.kill()


def test_vm_without_ips_cannot_ride_another_vms_connection(labenv: Lab) -> None:
    vm1, vm2 = labenv.vm("vm1", 2, 1), labenv.vm("vm2", 3, 2)
    vm3 = labenv.vm("vm3", 4, 3, register=False)
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/vm3", {"port": vm3.port, "mac": vm3.mac})  # no IPs
    spy = labenv.vm("spy", 9, 9, register=False)
    labenv.pair("vm1", "vm2")
    labenv.pair("vm3", "vm2")
    m = new_marker()
    sink = helper(vm2, "udp-recv", "60", "0", "7002")
    try:
        with sniff(m, vm2=vm2, vm1=vm1, spy=spy) as sniffers:
            # vm1's own flow to vm2, then vm3 sending with vm1's source address and ports.
            vm1.send_frame(
                fc.udp4_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, 40001, 7002, m + b"-vm1")
            )
            claim = f"priority=125,ip,nw_src=198.18.0.1 {drop('claimed-address')}"
            arp_claim = f"priority=125,arp,arp_spa=198.18.0.1 {drop('claimed-address')}"
            claims_before = labenv.counter(claim, table=0), labenv.counter(arp_claim, table=0)
            forged = fc.udp4_frame(vm3.mac, vm2.mac, vm1.ip, vm2.ip, 40001, 7002, m + b"-forged")
            vm3.send_frame(forged, count=3)
            forged_tcp = fc.tcp4_frame(
                vm3.mac, vm2.mac, vm1.ip, vm2.ip, 40001, 7002, fc.TCP_ACK, m + b"-forged-tcp"
            )
            vm3.send_frame(forged_tcp)
            # Control: an address no VM registered is vm3's to use.
            vm3.send_frame(
                fc.udp4_frame(vm3.mac, vm2.mac, "198.18.0.99", vm2.ip, 40001, 7002, m + b"-free")
            )
            # ARP claiming vm1's IP, then (control) ARP for vm3's own, unregistered address.
            vm3.send_frame(fc.arp_frame(vm3.mac, vm3.mac, vm1.ip, vm2.ip, padding=m + b"-arp-vm1"))
            vm3.send_frame(fc.arp_frame(vm3.mac, vm3.mac, vm3.ip, vm2.ip, padding=m + b"-arp-own"))
            late = counted(labenv, claim, claims_before[0] + 4, table=0)
            late += counted(labenv, arp_claim, claims_before[1] + 1, table=0)
            seen = sniffers.frames()
    finally:
        sink.kill()
    for tag in (b"-forged", b"-arp-vm1"):  # (b"-forged" also covers b"-forged-tcp")
        for name in ("vm2", "vm1", "spy"):
            assert not with_tag(seen[name], m + tag), (
                f"vm3's {tag.decode()} frame reached {name}\n" + evidence(labenv, seen)
            )
    for tag in (b"-vm1", b"-free", b"-arp-own"):
        assert with_tag(seen["vm2"], m + tag), (
            f"control {tag.decode()} did not reach vm2\n" + evidence(labenv, seen)
        )
    # The broadcast control ARP floods; no unicast frame reached a bystander.
    assert all(fc.decode(f).eth_type == fc.ETH_ARP for f in seen["vm1"] + seen["spy"]), evidence(
        labenv, seen
    )
    assert not late, "the claim lines of vm1's addresses did not count vm3's frames: " + str(late)


def test_the_responder_cannot_start_anything(labenv: Lab) -> None:
    vm1, vm2 = labenv.vm("vm1", 2, 1), labenv.vm("vm2", 3, 2)
    spy = labenv.vm("spy", 9, 9, register=False)
    labenv.pair("vm1", "vm2")
    m = new_marker()
    servers = [vm1.serve("tcp", 2201), vm1.serve("udp", 2202)]
    servers += [vm2.serve("tcp", 2203), vm2.serve("udp", 2204)]
    try:
        # Every IPv4 packet from vm2 to vm1 starts with these 8 bytes (source, destination).
        vm2_to_vm1 = bytes(map(int, vm2.ip.split("."))) + bytes(map(int, vm1.ip.split(".")))
        with sniff(vm2_to_vm1, vm1=vm1, spy=spy) as sniffers:
            before = refused(labenv)
            attempts = [
                vm2.popen(lab.lab_cmd("tcp-client", vm1.ip, "2201", "1.5", "--sport", "41001")),
                vm2.popen(lab.lab_cmd("udp-client", vm1.ip, "2202", "1.5", "--sport", "41002")),
            ]
            # A bare ACK: conntrack would pick it up as a new connection, from the responder.
            bare_ack = fc.tcp4_frame(
                vm2.mac, vm1.mac, vm2.ip, vm1.ip, 41003, 2201, fc.TCP_ACK, m + b"-ack", ack=777
            )
            vm2.send_frame(bare_ack, count=2)
            # Control, at the same time: vm1's connections to vm2 and their replies pass.
            assert vm1.tcp(vm2.ip, 2203), "control: vm1 -> vm2 tcp"
            assert vm1.udp(vm2.ip, 2204), "control: vm1 -> vm2 udp"
            results = [p.wait(timeout=20) for p in attempts]
            late = refused_reaches(labenv, before + 4)
            seen = sniffers.frames()
    finally:
        for p in servers:
            p.kill()
    assert results == [1, 1], f"vm2 opened something to vm1: {results}\n" + evidence(labenv)
    decoded = [fc.decode(f) for f in seen["vm1"]]
    started = [d for d in decoded if d.dport in (2201, 2202) or d.sport in (41001, 41002, 41003)]
    assert not started, "vm2's SYN, UDP or bare ACK reached vm1\n" + evidence(labenv, seen)
    assert not with_tag(seen["vm1"], m), evidence(labenv, seen)
    for port in (2203, 2204):
        assert [d for d in decoded if d.sport == port], (
            f"control: vm2's replies from port {port} did not reach vm1\n" + evidence(labenv, seen)
        )
    assert not seen["spy"], evidence(labenv, seen)
    assert not late, late


def test_fragments_follow_their_first_fragment(labenv: Lab) -> None:
    vm1 = labenv.vm("vm1", 2, 1, ipv6=True)
    vm2 = labenv.vm("vm2", 3, 2, ipv6=True)
    vm3 = labenv.vm("vm3", 4, 3, ipv6=True)
    labenv.pair("vm1", "vm2", "udp", "5000")
    m = new_marker()
    size = 4000  # MTU 1500: vm1's kernel sends three fragments
    sends = {  # in this order
        b"-a4": (vm2.ip, 5000),
        b"-b4": (vm2.ip, 5001),
        b"-a6": ("2001:db8::2", 5000),
        b"-b6": ("2001:db8::2", 5001),
    }
    # Ends once two datagrams came (the ones to udp/5000 are sent first of each family).
    recv = helper(vm2, "udp-recv", "10", "2", "5000", "5001")
    with sniff(m, vm2=vm2, vm3=vm3) as sniffers:
        before = refused(labenv)
        args = []
        for tag, (dst, port) in sends.items():
            args += [dst, str(port), str(size), (m + tag).hex()]
        vm1.exec([sys.executable, FRAMES_CONN, "udp-send", *args])
        # The first fragments to udp/5001 (IPv4 and IPv6) are dropped.
        late = refused_reaches(labenv, before + 2)
        seen = sniffers.frames()
    got = datagrams(recv)

    def digest(tag: bytes) -> str:
        return hashlib.sha256(fc.repeated(m + tag, size)).hexdigest()

    assert (5000, "::ffff:198.18.0.1", size, digest(b"-a4")) in got, (
        f"the IPv4 datagram to the allowed port did not arrive whole: {got}\n"
        + evidence(labenv, seen)
    )
    assert (5000, "2001:db8::1", size, digest(b"-a6")) in got, (
        f"the IPv6 datagram to the allowed port did not arrive whole: {got}\n"
        + evidence(labenv, seen)
    )
    assert not [d for d in got if d[0] == 5001], f"udp/5001 got {got}"
    for tag in (b"-a4", b"-a6"):
        frags = [fc.decode(f) for f in with_tag(seen["vm2"], m + tag)]
        assert len(frags) >= 3 and all(d.fragment and d.eth_src == vm1.mac for d in frags), (
            f"control: vm2 should see {tag.decode()}'s fragments\n" + evidence(labenv, seen)
        )
    for tag in (b"-b4", b"-b6"):
        leaked = [fc.decode(f) for f in with_tag(seen["vm2"], m + tag)]
        assert not leaked, (
            f"fragments of the datagram to udp/5001 ({tag.decode()}) reached vm2: {leaked}\n"
            + evidence(labenv, seen)
        )
    assert not seen["vm3"], "a bystander saw fragments\n" + evidence(labenv, seen)
    assert not late, late


def packet_ins(env: Lab) -> int:
    switches = env.ctl.ok("GET", "/ctfw/v1/switches")["switches"]
    return next(sw["packet_ins"] for sw in switches if sw["name"] == env.bridge)


def learned(env: Lab, name: str = "vm4") -> str | None:
    return env.ctl.ok("GET", f"/ctfw/v1/vms/{name}")["learned_mac"]


def stays_unlearned(env: Lab, seconds: float = 1.0) -> bool:
    """A refusal cannot be waited for: watch that nothing gets learned for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if learned(env) is not None:
            return False
        time.sleep(0.1)
    return learned(env) is None


def test_mac_learning_cannot_be_abused(labenv: Lab) -> None:
    vm1, vm2 = labenv.vm("vm1", 2, 1), labenv.vm("vm2", 3, 2)
    vm4 = labenv.vm("vm4", 5, 4, register=False)
    spy = labenv.vm("spy", 9, 9, register=False)
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/vm4", {"port": vm4.port})
    assert learned(labenv) is None
    m = new_marker()
    with sniff(m, vm1=vm1, vm2=vm2, spy=spy) as sniffers:
        # (a) vm4 speaks ARP with vm2's MAC: not learned, and not passed anywhere.
        start = packet_ins(labenv)
        vm4.send_frame(fc.arp_frame(vm2.mac, vm2.mac, vm4.ip, vm1.ip, padding=m + b"-vm2-mac"))
        vm4.send_frame(fc.arp_frame(vm2.mac, vm4.mac, vm4.ip, vm1.ip, padding=m + b"-vm2-eth"))
        lab.wait_for(lambda: packet_ins(labenv) >= start + 2, 5, "vm4's ARPs at the controller")
        assert stays_unlearned(labenv), f"vm4 learned {learned(labenv)} (vm2's MAC)"

        # (b) A flood of ARPs whose Ethernet and sender MACs differ: metered, and the
        # controller keeps answering.
        flood_start = packet_ins(labenv)
        flood = vm4.popen(
            [sys.executable, FRAMES_CONN, "arp-flood", "eth0", "10000", "3", "30000", m.hex()]
        )
        time.sleep(1.0)  # into the flood
        t0 = time.monotonic()
        new_pair = {"initiator": "vm1", "responder": "vm2"}
        status, body = labenv.ctl.api("POST", "/ctfw/v1/pairs", new_pair)
        elapsed = time.monotonic() - t0
        during = flood.poll() is None
        out, err = flood.communicate(timeout=20)
        assert flood.returncode == 0, err
        sent = int(out.split()[-1])
        lab.wait_for(lambda: packet_ins(labenv) > flood_start, 5, "the flood at the controller")
        flood_ins = packet_ins(labenv) - flood_start
        seen = sniffers.frames()
    assert status == 201, body
    assert during, "the flood ended before POST /pairs answered: measure again"
    assert elapsed < 0.5, f"POST /pairs took {elapsed:.2f} s during the flood"
    assert sent >= 10000, f"the flood sent only {sent} frames"
    assert flood_ins < 200, f"{flood_ins} packet-ins for {sent} flooded frames: not metered"
    assert learned(labenv) is None, "a flood frame got learned"
    for name, got in seen.items():
        assert not got, f"{name} saw vm4's spoofed or flooded ARPs\n" + evidence(labenv, seen)
    assert vm1.ping(vm2.ip, count=1), "the pair added during the flood works"

    # (c) vm4's kernel's own ARP binds its MAC; a pair with vm4 then works.
    pair = labenv.pair("vm4", "vm1")
    lab.wait_for(lambda: vm4.ping(vm1.ip, count=1), 15, "vm4 -> vm1 ping once vm4 is learned")
    assert learned(labenv) == vm4.mac

    # (d) Deleted and registered again: unknown until seen again.
    assert labenv.ctl.api("DELETE", f"/ctfw/v1/pairs/{pair}")[0] == 204
    assert labenv.ctl.api("DELETE", "/ctfw/v1/vms/vm4")[0] == 204
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/vm4", {"port": vm4.port})
    assert learned(labenv) is None, "a re-registered VM kept its old learned MAC"
    vm4.send_frame(fc.arp_frame(vm4.mac, vm4.mac, vm4.ip, vm1.ip))
    lab.wait_for(lambda: learned(labenv) == vm4.mac, 5, "vm4's MAC to be learned again")
