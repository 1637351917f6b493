"""Exactness beyond two VMs: a pair opens exactly initiator -> responder, nothing else."""

from __future__ import annotations

from conftest import Lab, drop

from ryu_ctfw import lab


def test_pair_does_not_open_a_third_vm(labenv: Lab) -> None:
    a, b, c = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2), labenv.vm("c", 4, 3)
    labenv.pair("a", "b")
    servers = [vm.serve("tcp", 22) for vm in (a, b, c)]
    try:
        assert a.ping(b.ip) and a.tcp(b.ip, 22), "a -> b is the pair"
        assert not a.ping(c.ip, count=1), "a -> c: no pair"
        assert not a.tcp(c.ip, 22, timeout=1), "a -> c: no pair"
        assert not b.ping(a.ip, count=1), "b is the responder: it cannot start anything"
        assert not b.tcp(a.ip, 22, timeout=1)
        for src, dst in ((c, a), (c, b), (b, c)):
            assert not src.ping(dst.ip, count=1), f"{src.ns} -> {dst.ns}: no pair"
    finally:
        for s in servers:
            s.kill()


def test_pairs_both_ways(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b")
    labenv.pair("b", "a")
    servers = [a.serve("tcp", 22), b.serve("tcp", 22), a.serve("udp", 53), b.serve("udp", 53)]
    try:
        assert a.ping(b.ip) and b.ping(a.ip)
        assert a.tcp(b.ip, 22) and b.tcp(a.ip, 22)
        assert a.udp(b.ip, 53) and b.udp(a.ip, 53)
    finally:
        for s in servers:
            s.kill()


def test_deleting_the_pair_stops_new_connections(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    pair_id = labenv.pair("a", "b")
    assert a.ping(b.ip)
    assert labenv.ctl.api("DELETE", f"/ctfw/v1/pairs/{pair_id}")[0] == 204
    assert not any("+new" in f["text"] for f in labenv.flows())
    srv = b.serve("tcp", 22)
    try:
        assert not a.tcp(b.ip, 22, timeout=1)
    finally:
        srv.kill()


def test_mac_learned_from_arp_when_not_given(labenv: Lab) -> None:
    """A VM registered without MAC or IPs is bound to the MAC its ARP shows on its port."""
    a = labenv.vm("a", 2, 1)
    b = labenv.vm("b", 3, 2, give_mac=False, register=False)
    # IPv6 off, so that no Neighbor Solicitation of b's own teaches its MAC before we look.
    b.exec(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/b", {"port": b.port})
    labenv.pair("a", "b")
    texts = [f["text"] for f in labenv.flows()]
    # Its ARP goes to the controller through the port's meter, and nowhere else yet.
    assert "table=0, priority=122,arp,in_port=3 actions=meter:3,CONTROLLER:128" in texts
    assert f"table=0, priority=110,in_port=3 {drop('forged-source')}" in texts, "the rest waits"
    assert not any("-rel-rpl+trk" in t for t in texts), "responder's MAC unknown: nothing opens"

    b.exec(["ping", "-c", "1", "-W", "1", a.ip], check=False)  # its ARP teaches the MAC
    vm = lab.wait_for(
        lambda: (v := labenv.ctl.ok("GET", "/ctfw/v1/vms/b"))["learned_mac"] and v,
        5,
        "b's MAC to be learned",
    )
    assert vm["learned_mac"] == b.mac and vm["mac"] is None
    texts = [f["text"] for f in labenv.flows()]
    admit = "actions=ct(commit,zone=1,exec(set_field:0x10002->ct_mark)),output:3"
    assert f"dl_dst={b.mac} {admit}" in "\n".join(texts)
    # The learning lines are gone once learned (table 3 tells the controller of drops only).
    learning = [t for t in texts if "CONTROLLER" in t and not t.startswith("table=3,")]
    assert not learning, "learning flow gone once learned"
    assert a.ping(b.ip)
