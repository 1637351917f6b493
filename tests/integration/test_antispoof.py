"""A VM cannot dodge the policy by forging its MAC or addresses, ARP and ND included."""

from __future__ import annotations

import frames
from conftest import Lab, drop

from ryu_ctfw import lab


def guard(env: Lab, ofport: int) -> int:
    return env.counter(f"priority=110,in_port={ofport} {drop('forged-source')}", table=0)


def test_forged_sources_are_dropped_at_the_port(labenv: Lab) -> None:
    a = labenv.vm("a", 2, 1, ipv6=True)
    b = labenv.vm("b", 3, 2, ipv6=True)
    c = labenv.vm("c", 4, 3)
    labenv.pair("a", "b")
    labenv.pair("c", "b")
    new_a = f"+new-rel-rpl+trk,ip,in_port=2,dl_dst={b.mac} "
    est_a = f"+est-rel-rpl+trk,ip,in_port=2,dl_dst={b.mac} "

    # Control: the same hand-made frame with a's true addresses is forwarded as a new
    # connection, so what is dropped below is dropped for its forged field alone.
    before = guard(labenv, 2), labenv.counter(new_a), labenv.counter(est_a)
    a.send_frame(frames.icmp_echo_frame(a.mac, b.mac, a.ip, b.ip))
    labenv.counter_reaches(new_a, before[1] + 1)
    assert guard(labenv, 2) == before[0]

    # Each forged frame, and the line that must drop it in table 0: the port's guard for
    # what is nobody's, the claim lines for another VM's registered address.
    forged = [
        (frames.icmp_echo_frame(a.mac, b.mac, "198.18.0.77", b.ip),  # nobody's IP
         f"priority=110,in_port=2 {drop('forged-source')}"),
        (frames.icmp_echo_frame(a.mac, b.mac, c.ip, b.ip),  # c's IP
         f"priority=125,ip,nw_src={c.ip} {drop('claimed-address')}"),
        (frames.icmp_echo_frame("52:54:00:de:ad:01", b.mac, a.ip, b.ip),  # another MAC
         f"priority=125,ip,nw_src={a.ip} {drop('claimed-address')}"),
        (frames.icmp_echo_frame(c.mac, b.mac, c.ip, b.ip),  # c altogether
         f"priority=125,ip,nw_src={c.ip} {drop('claimed-address')}"),
        (frames.arp_reply_frame(a.mac, a.mac, b.ip, c.ip),  # "b's IP is at a's MAC"
         f"priority=125,arp,arp_spa={b.ip} {drop('claimed-address')}"),
        # "b's IPv6 address is at a's MAC", sent from a's own address.
        (frames.neighbor_advert_frame(a.mac, "2001:db8::1", "2001:db8::2"),
         f"priority=135,icmp6,in_port=2,icmp_type=136 {drop('forged-nd')}"),
    ]  # fmt: skip
    for frame, line in forged:
        was = labenv.counter(line, table=0)
        a.send_frame(frame)
        labenv.counter_reaches(line, was + 1, table=0)
    # No forged packet reached the policy, as a new connection or an established one.
    assert labenv.counter(new_a) == before[1] + 1, "no forged packet reached the policy"
    assert labenv.counter(est_a) == before[2]

    # a's real traffic, both families, still works.
    assert a.ping(b.ip) and a.ping("2001:db8::2")


def test_vm_without_addresses_is_bound_to_its_first_mac(labenv: Lab) -> None:
    a = labenv.vm("a", 2, 1)
    b = labenv.vm("b", 3, 2, register=False)
    labenv.ctl.ok("PUT", "/ctfw/v1/vms/b", {"port": b.port})
    labenv.pair("a", "b")
    b.exec(["ping", "-c", "1", "-W", "1", a.ip], check=False)  # b's ARP binds its MAC
    lab.wait_for(
        lambda: labenv.ctl.ok("GET", "/ctfw/v1/vms/b")["learned_mac"] == b.mac,
        5,
        "b's MAC to be learned",
    )
    assert a.ping(b.ip)
    before = guard(labenv, 3)
    b.send_frame(frames.icmp_echo_frame("52:54:00:de:ad:02", a.mac, b.ip, a.ip))
    labenv.counter_reaches(f"priority=110,in_port=3 {drop('forged-source')}", before + 1, table=0)
    # With no IPs given only the MAC is bound (as OVN's port security does): b may use
    # another source IP from its own MAC, and the policy still applies to it.
    texts = "\n".join(f["text"] for f in labenv.flows())
    assert f"priority=120,ip,in_port=3,dl_src={b.mac} actions=ct(table=1,zone=1)" in texts
