"""Services on a pair, IPv6, and conntrack's states, with real traffic."""

from __future__ import annotations

import frames
from conftest import Lab

from ryu_ctfw import lab


def test_tcp_22_allows_only_ssh(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b", "tcp", "22")
    with lab.servers(b, ("tcp", 22), ("tcp", 23), ("udp", 53)):
        assert a.tcp(b.ip, 22), "tcp/22 is the service"
        assert not a.tcp(b.ip, 23, timeout=1), "tcp/23 is not"
        assert not a.udp(b.ip, 53, timeout=1), "udp is not"
        assert not a.ping(b.ip, count=1), "icmp is not"


def test_port_range_edges(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b", "tcp", "8000-8100")
    with lab.servers(b, ("tcp", 7999), ("tcp", 8000), ("tcp", 8100), ("tcp", 8101)):
        assert a.tcp(b.ip, 8000), "first port of the range"
        assert a.tcp(b.ip, 8100), "last port of the range"
        assert not a.tcp(b.ip, 8101, timeout=1), "one past the range"
        assert not a.tcp(b.ip, 7999, timeout=1), "one before the range"
    news = [f["text"] for f in labenv.flows() if "+new-rel-rpl+trk,tcp," in f["text"]]
    assert len(news) == 4, "8000-8100 is four masked tp_dst matches"
    est = [f["text"] for f in labenv.flows() if "+est-rel-rpl+trk,tcp," in f["text"]]
    assert [t.replace("+est", "+new") for t in est] == news, "each has its +est twin"


def test_several_services_for_the_same_vms(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b", "tcp", "22")
    labenv.pair("a", "b", "udp", "53")
    labenv.pair("a", "b", "icmp")
    with lab.servers(b, ("tcp", 22), ("tcp", 80), ("udp", 53), ("udp", 54)):
        assert a.tcp(b.ip, 22) and a.udp(b.ip, 53) and a.ping(b.ip)
        assert not a.tcp(b.ip, 80, timeout=1)
        assert not a.udp(b.ip, 54, timeout=1)


def test_responder_cannot_start_anything(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1, ipv6=True), labenv.vm("b", 3, 2, ipv6=True)
    labenv.pair("a", "b")
    a6 = "2001:db8::1"
    with lab.servers(a, ("tcp", 22), ("udp", 53)), lab.servers(b, ("tcp", 22)):
        assert a.tcp(b.ip, 22), "the pair works"
        assert not b.ping(a.ip, count=1)
        assert not b.tcp(a.ip, 22, timeout=1)
        assert not b.udp(a.ip, 53, timeout=1)
        assert not b.ping(a6, count=1)
        assert not b.tcp(a6, 22, timeout=1)


def test_ipv6_goes_through_conntrack_like_ipv4(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1, ipv6=True), labenv.vm("b", 3, 2, ipv6=True)
    labenv.pair("a", "b")
    b6 = "2001:db8::2"
    with lab.servers(b, ("tcp", 22), ("udp", 53)):
        assert a.ping(b6), "ping6 a -> b"
        assert a.tcp(b6, 22), "tcp over IPv6"
        assert a.udp(b6, 53), "udp over IPv6"
    conntrack = labenv.ovs.conntrack()
    assert "icmpv6,orig=(src=2001:db8::1,dst=2001:db8::2" in conntrack, conntrack
    assert "tcp,orig=(src=2001:db8::1,dst=2001:db8::2" in conntrack, conntrack


def test_invalid_is_dropped_and_counted_apart(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b")
    inv_before = labenv.counter("ct_state=+inv+trk")
    deny_before = labenv.drop_counter()
    # An echo reply nobody asked for is invalid to conntrack.
    a.send_frame(frames.icmp_echo_frame(a.mac, b.mac, a.ip, b.ip, icmp_type=0), count=3)
    labenv.counter_reaches("ct_state=+inv+trk", inv_before + 3)
    assert labenv.drop_counter() == deny_before


def test_related_icmp_errors_pass_unrelated_do_not(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b")
    # Nothing listens on udp/9999 in b: its "port unreachable" is related to a's flow.
    refused = a.exec(lab.lab_cmd("udp-client", b.ip, "9999", "3"), check=False)
    assert refused.returncode == 1 and "refused" in refused.stderr, refused.stderr
    # b's error about a's connection passes on the link's related line, to a's port.
    assert labenv.counter("ct_state=+rel+trk,ct_mark=0x10002,in_port=3") >= 1
    # The same error out of the blue, about no connection, is invalid and dropped.
    inv_before = labenv.counter("ct_state=+inv+trk")
    inner = frames.ipv4(a.ip, b.ip, 17, bytes.fromhex("9c4027100010") + b"\0\0" + b"x" * 8)
    error = frames.icmp(3, 3, rest=b"\0\0\0\0", data=inner)
    b.send_frame(frames.ethernet(a.mac, b.mac, 0x0800, frames.ipv4(b.ip, a.ip, 1, error)))
    labenv.counter_reaches("ct_state=+inv+trk", inv_before + 1)
