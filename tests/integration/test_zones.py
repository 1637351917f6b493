"""Each bridge's connections live in their own conntrack zone."""

from __future__ import annotations

from conftest import Lab


def test_two_bridges_with_the_same_addresses_share_no_state(labenv: Lab) -> None:
    other = f"ctbs{labenv.token}"
    labenv.ovs.add_bridge(other, labenv.ctl.ofp_port)
    labenv.ctl.wait_connected(other)
    # The same IPs and MACs on both bridges: a1/a2 are 198.18.0.1, b1/b2 198.18.0.2.
    a1, b1 = labenv.vm("a1", 2, 1), labenv.vm("b1", 3, 2)
    a2 = labenv.vm("a2", 2, 1, bridge=other)
    b2 = labenv.vm("b2", 3, 2, bridge=other)
    labenv.pair("a1", "b1")
    labenv.pair("a2", "b2")
    switches = labenv.ctl.ok("GET", "/ctfw/v1/switches")["switches"]
    zones = {sw["name"]: sw["zone"] for sw in switches}
    assert len(set(zones.values())) == 2, zones

    srv = b1.serve("udp", 53)
    try:
        assert a1.udp(b1.ip, 53, sport=40000), "a1:40000 -> b1:53 is now established"
    finally:
        srv.kill()
    conntrack = labenv.ovs.conntrack()
    assert f"zone={zones[labenv.bridge]}" in conntrack, conntrack

    # In a shared zone b2's packet would look like b1's reply to that connection and
    # pass; in its own zone it is a new connection from a responder, and is dropped.
    listener = a2.udp_listen(40000, 3)
    b2.exec(
        [
            "python3",
            "-c",
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
            " s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', 53));"
            f" [s.sendto(b'x', ('{a2.ip}', 40000)) for _ in range(3)]",
        ]
    )
    listener.wait(timeout=10)
    assert listener.returncode == 1, "b2 reached a2 through a1/b1's connection"
    assert a2.ping(b2.ip), "while the pair on the second bridge works"
