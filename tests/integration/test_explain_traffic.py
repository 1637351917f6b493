"""GET /ctfw/v1/explain against what the switch really does (issue 13, point 3): for every
case explain names, ask it, then send the very traffic, and check the verdict is what the
traffic met. Allowed: the client got its echo, the responder's NIC saw the packets, and a
bystander's saw none; the flows explain shows counted them. Denied: the client failed and
the destination's NIC (a real port on the bridge wherever it can be) saw nothing.
"""

from __future__ import annotations

import itertools
import urllib.parse
from dataclasses import dataclass, field

import pytest
from conftest import Hosts, Lab
from frames import flow_marker
from sniff import Sniffer, seen

from ryu_ctfw import compiler, lab

SPORTS = itertools.count(42001)  # a source port per attempt: each its own marker


def explain(env: Lab, **params: str) -> dict:
    query = urllib.parse.urlencode({("from" if k == "src" else k): v for k, v in params.items()})
    return env.ctl.ok("GET", f"/ctfw/v1/explain?{query}")


@dataclass
class Attempt:
    """One connection attempt: `src` opens `proto`/`port` to `dst_ip`; `receiver` is the
    NIC it is for, `bystanders` NICs that must see none of it."""

    src: lab.Vm
    dst_ip: str
    proto: str
    port: int
    receiver: lab.Vm
    bystanders: list[lab.Vm] = field(default_factory=list)

    def run(self) -> tuple[bool, int, list[int]]:
        """Whether the client got its echo; marked frames at the receiver and each
        bystander."""
        sport = next(SPORTS)
        mark = flow_marker(self.src.ip, self.dst_ip, sport, self.port)
        watch = [Sniffer(vm, mark) for vm in (self.receiver, *self.bystanders)]
        client = self.src.tcp if self.proto == "tcp" else self.src.udp
        ok = client(self.dst_ip, self.port, timeout=1, sport=sport)
        to_receiver, *to_bystanders = seen(watch)
        return ok, to_receiver, to_bystanders


def pair_cookies(answer: dict) -> set[str]:
    return {f"0x{compiler.cookie(compiler.KIND_PAIR, p['id']):x}" for p in answer["pairs"]}


def new_counts(answer: dict) -> dict[tuple[str, str], int]:
    """Packets of the lines explain says carry the connection's first packets."""
    return {(f["dpid"], f["text"]): f["packets"] for f in answer["flows"] if "new" in f["carries"]}


def agrees(env: Lab, attempt: Attempt, src: str, to: str, verdict: str, reason: str) -> dict:
    """Explain, asked from `src` to `to` for the attempt's service, says `verdict` for
    `reason`, and the attempt's traffic does just that."""
    params = {"src": src, "to": to, "protocol": attempt.proto, "port": str(attempt.port)}
    answer = explain(env, **params)
    assert (answer["verdict"], answer["reason"]) == (verdict, reason), answer
    assert answer["why"], answer
    before = new_counts(answer)
    ok, to_receiver, to_bystanders = attempt.run()
    assert to_bystanders == [0] * len(attempt.bystanders), f"{params}: a bystander saw it"
    if verdict == "allowed":
        assert ok and to_receiver >= 1, f"{params}: explain allows it, the traffic did not pass"
        assert answer["flows"] and {f["cookie"] for f in answer["flows"]} <= pair_cookies(answer)
        assert all(f["table"] == compiler.TABLE_POLICY for f in answer["flows"])
        assert before, "explain names the lines that open the connection"

        def rose() -> bool:
            after = new_counts(explain(env, **params))
            return any(after.get(key, 0) > n for key, n in before.items())

        lab.wait_for(rose, 5, f"the counters of the lines explain shows for {params} to rise")
    else:
        assert not ok and to_receiver == 0, f"{params}: explain denies it, yet it reached"
        assert answer["flows"] == []
    return answer


def static_neighbour(vm: lab.Vm, ip: str, mac: str) -> None:
    """Let `vm` send to `ip` without asking ARP (whose answer would not come)."""
    vm.exec(["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"])


@dataclass
class Estate:
    env: Lab
    vms: dict[str, lab.Vm]
    up: lab.Uplink

    def __getitem__(self, name: str) -> lab.Vm:
        return self.vms[name]


@pytest.fixture
def estate(labenv: Lab) -> Estate:
    """One bridge: vm1-vm4 on ofports 2-5 (198.18.0.1-4), vm5 on 6 registered without a
    MAC and with ARP off (its MAC is never learned), vm6 and vm7 plugged on 7 and 8 but
    registered with ports the bridge does not have (absent, though their NICs are on the
    bridge to sniff and send from); the uplink on 9 (network "outside"). Pairs: vm1 -> vm2
    tcp/5432, group clients [vm4] -> vm2 udp/5353, vm1 -> outside tcp/8080, vm1 -> vm5
    tcp/5432, vm1 -> vm6 tcp/5432, vm7 -> vm2 tcp/5432."""
    env = labenv
    vms = {f"vm{n}": env.vm(f"vm{n}", n + 1, n) for n in (1, 2, 3, 4)}
    vm5 = env.vm("vm5", 6, 5, register=False)
    vm5.exec(["ip", "link", "set", "eth0", "arp", "off"])
    env.ctl.ok("PUT", "/ctfw/v1/vms/vm5", {"port": vm5.port, "ips": [vm5.ip]})
    vms["vm5"] = vm5
    for n in (6, 7):
        vm = env.vm(f"vm{n}", n + 1, n, register=False)
        env.ctl.ok(
            "PUT",
            f"/ctfw/v1/vms/vm{n}",
            {"port": f"ct{env.token}no{n}", "mac": vm.mac, "ips": [vm.ip]},
        )
        vms[f"vm{n}"] = vm
    up = env.uplink(9, "outside")
    env.pair("vm1", "vm2", "tcp", "5432")
    env.group("clients", ["vm4"])
    env.pair("clients", "vm2", "udp", "5353")
    env.pair("vm1", "outside", "tcp", "8080")
    for ini, res in (("vm1", "vm5"), ("vm1", "vm6"), ("vm7", "vm2")):
        env.pair(ini, res, "tcp", "5432")
    return Estate(env, vms, up)


def test_explain_matches_the_traffic_on_one_switch(estate: Estate) -> None:
    env, e, out = estate.env, estate, estate.up.outside
    vm1, vm2, vm3, vm4, vm5, vm6, vm7 = (e[f"vm{n}"] for n in range(1, 8))
    # Where ARP would not be answered (no MAC known, no port registered), the senders know
    # the MACs already, so the packets do reach the switch and meet its lines.
    static_neighbour(vm1, vm6.ip, vm6.mac)
    static_neighbour(vm1, vm5.ip, vm5.mac)
    static_neighbour(vm5, vm1.ip, vm1.mac)
    static_neighbour(vm7, vm2.ip, vm2.mac)
    cases = [
        # (attempt, from, to, verdict, reason)
        (Attempt(vm1, vm2.ip, "tcp", 5432, vm2, [vm3, vm4]), "vm1", "vm2", "allowed", "pair"),
        # Through a group pair, asked by the member's address.
        (Attempt(vm4, vm2.ip, "udp", 5353, vm2, [vm3, vm1]), vm4.ip, "vm2", "allowed", "pair"),
        # To a network, asked by an address in it.
        (Attempt(vm1, lab.OUTSIDE4, "tcp", 8080, out, [vm2, vm3]), "vm1", lab.OUTSIDE4,
         "allowed", "pair"),
        # The pair vm1 -> vm2 does not let vm3 in.
        (Attempt(vm3, vm2.ip, "tcp", 5432, vm2, [vm1]), "vm3", "vm2", "denied", "no-pair"),
        # vm2 listens on 22, but its pair with vm1 is for 5432.
        (Attempt(vm1, vm2.ip, "tcp", 22, vm2, [vm3]), "vm1", "vm2", "denied", "other-service"),
        # vm6's NIC is on the bridge, but not under the port it is registered with.
        (Attempt(vm1, vm6.ip, "tcp", 5432, vm6, [vm3]), "vm1", "vm6", "denied",
         "responder-absent"),
        (Attempt(vm1, vm5.ip, "tcp", 5432, vm5, [vm3]), "vm1", "vm5", "denied",
         "responder-mac-unknown"),
        # vm7 sends from a port no VM is registered with.
        (Attempt(vm7, vm2.ip, "tcp", 5432, vm2, [vm3]), "vm7", "vm2", "denied",
         "initiator-absent"),
    ]  # fmt: skip
    with (
        lab.servers(vm2, ("tcp", 5432), ("tcp", 22), ("udp", 5353)),
        lab.servers(vm5, ("tcp", 5432)),
        lab.servers(vm6, ("tcp", 5432)),
        lab.servers(out, ("tcp", 8080)),
    ):
        answers = [agrees(env, *case) for case in cases]
    vm_pair, group_pair, network_pair, _, other_service = answers[:5]
    assert [(p["initiator"], p["initiator_kind"]) for p in vm_pair["pairs"]] == [("vm1", "vm")]
    assert {"new", "established", "reply"} <= {c for f in vm_pair["flows"] for c in f["carries"]}
    assert [(p["initiator"], p["initiator_kind"]) for p in group_pair["pairs"]] == [
        ("clients", "group")
    ]
    assert "vm4 is in group clients" in group_pair["why"]
    assert [p["responder_kind"] for p in network_pair["pairs"]] == ["network"]
    by_name = explain(env, src="vm1", to="outside", protocol="tcp", port="8080")
    assert (by_name["verdict"], by_name["pairs"]) == ("allowed", network_pair["pairs"])
    assert "tcp/5432" in other_service["why"] and "tcp/22" in other_service["why"]
    assert env.ctl.ok("GET", "/ctfw/v1/vms/vm5")["learned_mac"] is None, "still not learned"


def test_explain_changes_nothing_and_refuses_bad_questions(estate: Estate) -> None:
    env = estate.env
    before = env.ctl.stored_bytes()
    flows = {(f["dpid"], f["text"]) for f in env.flows()}
    for query, status in (
        ("from=vm1&to=vm2&protocol=tcp&port=5432", 200),
        ("from=vm1&to=198.19.0.1", 200),
        ("from=vm1", 400),
        ("from=vm1&to=vm2&protocol=sctp", 400),
        ("from=vm1&to=vm2&protocol=icmp&port=7", 400),
        ("from=vm1&to=vm2&protocol=tcp&port=70000", 400),
        ("from=vm1&to=vm2&colour=red", 400),
        ("from=vm1&to=vm2&to=vm3", 400),
        ("from=vm1&to=nobody", 404),
        ("from=198.18.0.99&to=vm1", 404),
    ):
        code, answer = env.ctl.api("GET", f"/ctfw/v1/explain?{query}")
        assert code == status, (query, answer)
        if status != 200:
            assert isinstance(answer, dict) and answer["error"], answer
    assert env.ctl.stored_bytes() == before, "nothing stored"
    assert {(f["dpid"], f["text"]) for f in env.flows()} == flows, "no flow changed"
    assert env.ctl.ok("GET", "/ctfw/v1/vms/vm1")["name"] == "vm1", "the controller lives on"


def test_explain_across_hosts_and_without_a_fabric(hosts: Hosts) -> None:
    h = hosts
    vm1, vm2 = h.vm("vm1", h.a, 1), h.vm("vm2", h.b, 2)
    vm3, vm4 = h.vm("vm3", h.b, 3), h.vm("vm4", h.a, 4)  # bystanders on B and on A
    h.env.pair("vm1", "vm2", "tcp", "7000")
    attempt = Attempt(vm1, vm2.ip, "tcp", 7000, vm2, [vm3, vm4])
    with lab.servers(vm2, ("tcp", 7000)), lab.servers(vm3, ("tcp", 7000)):
        answer = agrees(h.env, attempt, "vm1", "vm2", "allowed", "pair")
        carrying = {(f["dpid"], c) for f in answer["flows"] for c in f["carries"]}
        for dpid in (h.a.dpid, h.b.dpid):
            assert {(dpid, "new"), (dpid, "reply")} <= carrying, "lines on both hosts"
        static_neighbour(vm1, vm2.ip, vm2.mac)  # ARP would not cross either
        h.env.ctl.ok("PUT", f"/ctfw/v1/switches/{h.b.dpid}", {"fabric_port": None})
        answer = agrees(h.env, attempt, "vm1", "vm2", "denied", "no-fabric")
        assert f"switch {h.b.dpid} has no fabric port set" in answer["why"]
        # Set again: allowed again, and so it is.
        h.env.ctl.ok("PUT", f"/ctfw/v1/switches/{h.b.dpid}", {"fabric_port": h.b.fabric})
        agrees(h.env, attempt, "vm1", "vm2", "allowed", "pair")
