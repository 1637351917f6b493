"""Explain's decision, without root: the real SwitchManager placing VMs on two fake hosts,
the real compiler's lines walked for every case the issue names (and the query checks)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from fake_switch import FakeSwitch, raw_flow
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp

from ryu_ctfw import compiler, explain
from ryu_ctfw.compiler import TABLE_POLICY
from ryu_ctfw.explain import Decision
from ryu_ctfw.policy import (
    Group,
    InvalidInput,
    Network,
    NotFound,
    PairRequest,
    Policy,
    Vm,
)
from ryu_ctfw.switch import SwitchManager

A, B = 0xA, 0xB
FAB = 10
MAC = {n: f"52:54:00:00:00:0{n}" for n in range(1, 8)}


def vm(n: int, port: str | None = None, mac: bool = True, switch: str | None = None) -> Vm:
    return Vm(
        f"vm{n}", port or f"vnet{n}", MAC[n] if mac else None, (f"198.18.0.{n}",), switch=switch
    )


@pytest.fixture
def world() -> Iterator[tuple[Policy, SwitchManager]]:
    """Host A (vnet1-3 on ofports 1-3, the uplink up0 on 9, fabric fab on 10) and host B
    (vnet4 on 1, fab on 10): vm1-vm3 on A, vm4 on B, vm5 registered on a port nobody has,
    vm7 on A without a MAC (none learned); network outside behind up0."""
    policy = Policy()
    policy.fabric = {A: "fab", B: "fab"}
    mgr = SwitchManager(logging.getLogger("test"), lambda: policy, lambda dpid: 1)
    ports_a = {
        ofp.OFPP_LOCAL: "brA",
        1: "vnet1",
        2: "vnet2",
        3: "vnet3",
        7: "vnet7",
        9: "up0",
        FAB: "fab",
    }
    mgr.connected(FakeSwitch(mgr, ports_a, dpid=A))
    mgr.connected(FakeSwitch(mgr, {ofp.OFPP_LOCAL: "brB", 1: "vnet4", FAB: "fab"}, dpid=B))
    for v in (vm(1), vm(2), vm(3), vm(4), vm(5, "gone"), vm(7, mac=False)):
        policy.put_vm(v)
    policy.put_network(Network("outside", "up0", ("198.19.0.0/24", "2001:db8:19::/48")))
    policy.zones = {A: 1, B: 2}
    yield policy, mgr
    for sw in mgr.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def ask(world: tuple[Policy, SwitchManager], **params: str) -> Decision:
    policy, mgr = world
    params = {("from" if k == "src" else "to" if k == "dst" else k): v for k, v in params.items()}
    q = explain.question_from_params(policy, params)
    return explain.decide(policy, q, explain.placement(mgr, policy))


def pair(policy: Policy, ini: str, res: str, protocol: str = "any", ports: str | None = None):
    return policy.add_pair(PairRequest(ini, res, protocol, ports))


def pair_lines(d: Decision, pair_id: int) -> list[tuple[int, compiler.Flow, str]]:
    own = compiler.cookie(compiler.KIND_PAIR, pair_id)
    return [(dpid, f, what) for dpid, f, what in d.flows if f.cookie == own]


# --- allowed -------------------------------------------------------------------------------------


def test_a_vm_pair_allows_its_service_and_names_the_lines_that_carry_it(world) -> None:
    policy, _ = world
    p = pair(policy, "vm1", "vm2", "tcp", "5432")
    d = ask(world, src="vm1", dst="vm2", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("allowed", "pair")
    assert d.pairs == [p] and f"pair {p.id}" in d.why
    lines = pair_lines(d, p.id)
    assert lines and len(lines) == len(d.flows), "only the pair's own lines"
    assert {dpid for dpid, _, _ in lines} == {A}, "both on host A: nothing on B"
    assert all(f.table == TABLE_POLICY for _, f, _ in lines)
    carried = {w for _, _, what in lines for w in what.split(",")}
    assert carried == {"new", "established", "reply"}
    # Each line really takes what it is said to: new ones commit and go to vm2's port.
    new = [f for _, f, what in lines if "new" in what]
    assert all(compiler.Output(2) in f.actions for f in new)
    replies = [f for _, f, what in lines if what == "reply"]
    assert replies and all(compiler.Output(1) in f.actions for f in replies)
    # The range of a pair counts, and both families are walked.
    assert {f.match.eth_type for f in new} == set(compiler.FAMILIES)


def test_a_port_range_and_protocols_are_taken_exactly(world) -> None:
    policy, _ = world
    pair(policy, "vm1", "vm2", "tcp", "8000-8100")
    assert ask(world, src="vm1", dst="vm2", protocol="tcp", port="8050").verdict == "allowed"
    assert ask(world, src="vm1", dst="vm2", protocol="tcp", port="8100").verdict == "allowed"
    for params in (
        {"protocol": "tcp", "port": "8101"},
        {"protocol": "tcp"},
        {"protocol": "udp", "port": "8050"},
        {},
        {"protocol": "icmp"},
    ):
        d = ask(world, src="vm1", dst="vm2", **params)
        assert (d.verdict, d.reason) == ("denied", "other-service"), params
        assert "tcp/8000-8100" in d.why
    pair(policy, "vm1", "vm2", "icmp")
    assert ask(world, src="vm1", dst="vm2", protocol="icmp").verdict == "allowed"
    pair(policy, "vm1", "vm2")  # any: everything
    assert ask(world, src="vm1", dst="vm2", protocol="udp", port="53").verdict == "allowed"
    assert ask(world, src="vm1", dst="vm2").verdict == "allowed"


def test_a_group_pair_allows_each_member_and_the_group_as_a_whole(world) -> None:
    policy, _ = world
    policy.put_group(Group("web", ("vm1", "vm3")))
    p = pair(policy, "web", "vm2", "tcp", "5432")
    for src in ("vm3", "vm1", "web", "198.18.0.3"):
        d = ask(world, src=src, dst="vm2", protocol="tcp", port="5432")
        assert (d.verdict, d.reason, d.pairs) == ("allowed", "pair", [p]), src
        lines = pair_lines(d, p.id)
        assert lines and all(f.priority == compiler.P_LINK for _, f, _ in lines)
        assert {"new", "reply"} <= {w for _, _, what in lines for w in what.split(",")}
    d = ask(world, src="198.18.0.3", dst="vm2", protocol="tcp", port="5432")
    families = {f.match.eth_type for _, f, _ in d.flows}
    assert compiler.ETH_TYPE_IP in families and compiler.ETH_TYPE_IPV6 not in families
    d = ask(world, src="vm2", dst="web", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("denied", "no-pair")
    assert d.why.startswith("vm2 -> vm1: ") and d.pairs == [p]


def test_a_group_is_allowed_only_when_every_member_is(world) -> None:
    policy, _ = world
    policy.put_group(Group("web", ("vm1", "vm7")))  # vm7: no MAC yet
    pair(policy, "web", "vm2", "tcp", "5432")
    d = ask(world, src="web", dst="vm2", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("denied", "initiator-mac-unknown")
    assert d.why.startswith("vm7 -> vm2: ")
    assert ask(world, src="vm1", dst="vm2", protocol="tcp", port="5432").verdict == "allowed"


def test_a_network_is_reached_and_reaches_in_by_name_or_address(world) -> None:
    policy, _ = world
    out = pair(policy, "vm1", "outside", "tcp", "80")
    back = pair(policy, "outside", "vm2", "tcp", "22")
    for dst in ("outside", "198.19.0.1", "2001:db8:19::1"):
        d = ask(world, src="vm1", dst=dst, protocol="tcp", port="80")
        assert (d.verdict, d.pairs) == ("allowed", [out]), dst
        new = [f for _, f, what in d.flows if "new" in what]
        assert new and all(compiler.Output(9) in f.actions for f in new), "out the uplink"
    d = ask(world, src="198.19.0.7", dst="vm2", protocol="tcp", port="22")
    assert (d.verdict, d.pairs) == ("allowed", [back])
    new = [f for _, f, what in d.flows if "new" in what]
    assert new and all(compiler.TO_DELIVERY in f.actions for f in new), "delivered by MAC"
    d = ask(world, src="outside", dst="vm1", protocol="tcp", port="80")
    assert (d.verdict, d.reason, d.pairs) == ("denied", "no-pair", [out])
    assert "the other way" in d.why


def test_a_pair_across_hosts_has_lines_on_both(world) -> None:
    policy, _ = world
    p = pair(policy, "vm1", "vm4", "udp", "53")
    d = ask(world, src="vm1", dst="vm4", protocol="udp", port="53")
    assert d.verdict == "allowed"
    lines = pair_lines(d, p.id)
    on = {
        dpid: [f for dpid2, f, what in lines if dpid2 == dpid and "new" in what] for dpid in (A, B)
    }
    assert all(compiler.Output(FAB) in f.actions for f in on[A]) and on[A], "A: to the fabric"
    assert all(compiler.Output(1) in f.actions for f in on[B]) and on[B], "B: to vm4's port"
    assert all(f.match.in_port == FAB for f in on[B])


# --- denied, each reason -------------------------------------------------------------------------


def test_no_pair_between_them(world) -> None:
    policy, _ = world
    d = ask(world, src="vm3", dst="vm2", protocol="tcp", port="5432")
    assert (d.verdict, d.reason, d.pairs, d.flows) == ("denied", "no-pair", [], [])
    assert d.why == "no pair lets vm3 open connections to vm2"
    p = pair(policy, "vm2", "vm3", "tcp", "5432")
    d = ask(world, src="vm3", dst="vm2", protocol="tcp", port="5432")
    assert (d.reason, d.pairs) == ("no-pair", [p]) and "the other way" in d.why


def test_a_pair_for_another_service_says_which(world) -> None:
    policy, _ = world
    p1 = pair(policy, "vm1", "vm2", "tcp", "22")
    p2 = pair(policy, "vm1", "vm2", "icmp")
    d = ask(world, src="vm1", dst="vm2", protocol="tcp", port="5432")
    assert (d.verdict, d.reason, d.pairs, d.flows) == ("denied", "other-service", [p1, p2], [])
    assert "tcp/22" in d.why and "icmp" in d.why and "tcp/5432" in d.why


def test_the_responder_absent_or_without_mac(world) -> None:
    policy, _ = world
    pair(policy, "vm1", "vm5", "tcp", "5432")
    d = ask(world, src="vm1", dst="vm5", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("denied", "responder-absent")
    assert "gone" in d.why and d.flows == []
    pair(policy, "vm1", "vm7", "tcp", "5432")
    d = ask(world, src="vm1", dst="vm7", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("denied", "responder-mac-unknown")
    policy.learn_mac("vm7", MAC[7])  # seen now: allowed
    assert ask(world, src="vm1", dst="vm7", protocol="tcp", port="5432").verdict == "allowed"


def test_the_initiator_absent_checked_after_the_responder(world) -> None:
    policy, _ = world
    pair(policy, "vm5", "vm2", "tcp", "5432")
    d = ask(world, src="vm5", dst="vm2", protocol="tcp", port="5432")
    assert (d.verdict, d.reason) == ("denied", "initiator-absent")
    pair(policy, "vm5", "vm7", "tcp", "5432")
    d = ask(world, src="vm5", dst="vm7", protocol="tcp", port="5432")
    assert d.reason == "responder-mac-unknown", "the responder is checked first"


def test_a_vm_on_two_switches_naming_neither_is_absent(world) -> None:
    policy, mgr = world
    mgr.switches[B].ports["vnet6"] = 6
    mgr.switches[A].ports["vnet6"] = 6
    policy.put_vm(Vm("vm6", "vnet6", MAC[6]))
    pair(policy, "vm1", "vm6")
    d = ask(world, src="vm1", dst="vm6")
    assert (d.reason, "several switches" in d.why) == ("responder-absent", True)


def test_two_hosts_without_a_fabric_port(world) -> None:
    policy, _ = world
    pair(policy, "vm1", "vm4", "tcp", "7000")
    policy.fabric = {A: "fab"}  # B has none
    d = ask(world, src="vm1", dst="vm4", protocol="tcp", port="7000")
    assert (d.verdict, d.reason) == ("denied", "no-fabric")
    assert f"switch {B:016x} has no fabric port set" in d.why
    policy.fabric = {A: "fab", B: "eth9"}  # set, but no such port on B
    d = ask(world, src="vm1", dst="vm4", protocol="tcp", port="7000")
    assert d.reason == "no-fabric" and "has no port eth9" in d.why
    policy.fabric = {A: "fab", B: "fab"}
    assert ask(world, src="vm1", dst="vm4", protocol="tcp", port="7000").verdict == "allowed"


def test_a_network_on_another_host_is_not_reached(world) -> None:
    policy, _ = world
    pair(policy, "vm4", "outside", "tcp", "80")
    d = ask(world, src="vm4", dst="outside", protocol="tcp", port="80")
    assert (d.verdict, d.reason) == ("denied", "network-elsewhere")


def test_network_to_network_is_never_allowed(world) -> None:
    policy, _ = world
    policy.put_network(Network("office", "up0", ("198.19.9.0/24",)))
    d = ask(world, src="outside", dst="198.19.9.1")
    assert (d.verdict, d.reason) == ("denied", "network-to-network")


def test_an_empty_group_allows_nothing(world) -> None:
    policy, _ = world
    policy.put_group(Group("none", ()))
    pair(policy, "none", "vm2")
    d = ask(world, src="none", dst="vm2")
    assert (d.verdict, d.reason) == ("denied", "empty-group")


def test_the_walk_refuses_what_the_lines_do_not_carry(world) -> None:
    """The safety net: every check passes, but the lines send it elsewhere (here: vm2
    attached on A as if it were on another host, at the fabric port)."""
    policy, mgr = world
    pair(policy, "vm1", "vm2")
    assert ask(world, src="vm1", dst="vm2").verdict == "allowed"
    place = explain.placement(mgr, policy)
    sw = place.switches[A]
    moved = {**sw.attached, "vm2": compiler.Attachment(FAB, MAC[2], remote=True)}
    switches = {**place.switches, A: explain.SwitchPlace(A, True, sw.ports, sw.fabric, moved, 1)}
    q = explain.question_from_params(policy, {"from": "vm1", "to": "vm2"})
    d = explain.decide(policy, q, explain.Placement(switches, place.locations))
    assert (d.verdict, d.reason) == ("denied", "not-carried")
    assert d.flows == []


# --- the question ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error", "text"),
    [
        ({"from": "vm1"}, InvalidInput, "missing query parameter: to"),
        ({"to": "vm1"}, InvalidInput, "missing query parameter: from"),
        ({"from": "vm1", "to": "vm2", "proto": "tcp"}, InvalidInput, "unknown query parameter"),
        ({"from": "vm1", "to": "vm2", "protocol": "sctp"}, InvalidInput, "invalid protocol"),
        ({"from": "vm1", "to": "vm2", "protocol": "icmp", "port": "1"}, InvalidInput, "no ports"),
        ({"from": "vm1", "to": "vm2", "port": "22"}, InvalidInput, "no ports"),
        ({"from": "vm1", "to": "vm2", "protocol": "tcp", "port": "0"}, InvalidInput, "1-65535"),
        ({"from": "vm1", "to": "vm2", "protocol": "tcp", "port": "65536"}, InvalidInput, "1-65535"),
        ({"from": "vm1", "to": "vm2", "protocol": "tcp", "port": "2x"}, InvalidInput, "1-65535"),
        ({"from": "vm1", "to": "vm1"}, InvalidInput, "the same VM"),
        ({"from": "vm/1", "to": "vm2"}, InvalidInput, "invalid from"),
        ({"from": "198.18.0.1", "to": "2001:db8:19::1"}, InvalidInput, "different IP families"),
        ({"from": "vm1", "to": "nobody"}, NotFound, "no VM, group or network named 'nobody'"),
        ({"from": "198.18.9.9", "to": "vm1"}, NotFound, "nobody has it"),
    ],
)
def test_bad_questions_are_refused_clearly(world, params, error, text) -> None:
    policy, _ = world
    with pytest.raises(error) as e:
        explain.question_from_params(policy, params)
    assert text in str(e.value)


def test_an_address_is_its_vm_or_the_most_specific_network(world) -> None:
    policy, _ = world
    policy.put_network(Network("lab", "up0", ("198.19.0.0/28",)))
    ep = explain.resolve(policy, "198.18.0.2", "to")
    assert (ep.name, ep.kind, ep.address) == ("vm2", "vm", "198.18.0.2")
    ep = explain.resolve(policy, "198.19.0.3", "to")
    assert (ep.name, ep.kind, ep.networks) == ("lab", "network", ("lab", "outside"))
    assert explain.resolve(policy, "198.19.0.99", "to").name == "outside"
    # A pair of the wider network takes the address too.
    pair(policy, "vm1", "outside", "tcp", "80")
    d = ask(world, src="vm1", dst="198.19.0.3", protocol="tcp", port="80")
    assert d.verdict == "allowed"


def test_explain_changes_nothing(world) -> None:
    policy, _ = world
    pair(policy, "vm1", "vm2", "tcp", "5432")
    before = policy.to_dict()
    for params in (
        {"src": "vm1", "dst": "vm2"},
        {"src": "vm2", "dst": "vm1"},
        {"src": "vm1", "dst": "vm5"},
    ):
        ask(world, **params)
    assert policy.to_dict() == before


# --- the answer: live counters matched by flow key -----------------------------------------------


def test_the_answer_shows_the_switches_counters_of_the_lines_that_carry_it(world) -> None:
    policy, mgr = world
    p = pair(policy, "vm1", "vm4", "tcp", "5432")
    other = pair(policy, "vm2", "vm3", "tcp", "22")
    params = {"from": "vm1", "to": "vm4", "protocol": "tcp", "port": "5432"}
    q = explain.question_from_params(policy, params)
    d = explain.decide(policy, q, explain.placement(mgr, policy))
    assert d.verdict == "allowed"
    held: dict[int, list] = {A: [], B: []}
    for n, (dpid, f, _) in enumerate(d.flows):
        held[dpid].append((raw_flow(f, packets=100 + n), f))
    # A line of another pair on the switch, which must not be shown.
    unrelated = compiler.pair_unit_flows(policy, other, mgr.attachments(mgr.switches[A]), 1)
    held[A] += [(raw_flow(f, packets=7), f) for f in unrelated]
    asked = []
    mgr.flow_stats = lambda dpid: asked.append(dpid) or held[dpid]  # type: ignore[method-assign]
    fw = SimpleNamespace(policy=policy, switches=mgr)
    out = explain.answer(fw, params)  # type: ignore[arg-type]
    assert (out["verdict"], out["reason"]) == ("allowed", "pair")
    assert [x["id"] for x in out["pairs"]] == [p.id] and out["pairs"][0]["initiator_kind"] == "vm"
    assert sorted(asked) == [A, B], "each switch it crosses read once"
    assert len(out["flows"]) == len(d.flows)
    assert {x["packets"] for x in out["flows"]} == {100 + n for n in range(len(d.flows))}
    own = f"0x{compiler.cookie(compiler.KIND_PAIR, p.id):x}"
    assert all(x["cookie"] == own and x["table"] == TABLE_POLICY for x in out["flows"])
    assert {x["dpid"] for x in out["flows"]} == {f"{A:016x}", f"{B:016x}"}
    assert all(set(x["carries"]) <= {"new", "established", "reply"} for x in out["flows"])
    assert out["from"] == {"name": "vm1", "kind": "vm", "address": None}
    # Denied: nothing is read.
    asked.clear()
    out = explain.answer(fw, {"from": "vm4", "to": "vm1"})  # type: ignore[arg-type]
    assert (out["verdict"], out["flows"], asked) == ("denied", [], [])


def test_a_question_about_two_large_groups_is_refused_not_walked(world) -> None:
    policy, _ = world
    many = [Vm(f"m{n}", f"m{n}", f"52:54:00:00:01:{n:02x}") for n in range(17)]
    for v in many:
        policy.put_vm(v)
    policy.put_group(Group("big", tuple(v.name for v in many)))
    pair(policy, "big", "big")
    with pytest.raises(InvalidInput, match="272 combinations"):
        ask(world, src="big", dst="big")
    policy.put_group(Group("web", ("vm1", "vm3")))
    pair(policy, "web", "vm2", "tcp", "5432")
    d = ask(world, src="web", dst="vm2", protocol="tcp", port="5432")
    assert d.verdict == "allowed" and "(vm1 is in group web)" in d.why


# --- through the REST layer ----------------------------------------------------------------------


def test_get_explain_answers_json_and_bad_questions_are_clear_errors(tmp_path) -> None:
    from test_rest import assert_error, make_api

    api = make_api(tmp_path / "state.json")
    assert api.call("PUT", "/vms/vm1", {"port": "tap2", "mac": MAC[1]}).status_int == 201
    assert api.call("PUT", "/vms/vm2", {"port": "tap3", "mac": MAC[2]}).status_int == 201
    api.call(
        "POST", "/pairs", {"initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": "22"}
    )
    before = api.snapshot()
    out = api.get_json("/explain?from=vm1&to=vm2&protocol=tcp&port=22")
    # No switch is connected: the pair is there, the responder's port is not.
    assert (out["verdict"], out["reason"], out["flows"]) == ("denied", "responder-absent", [])
    assert [p["id"] for p in out["pairs"]] == [1] and out["pairs"][0]["responder_kind"] == "vm"
    assert set(out) == {
        "verdict",
        "reason",
        "why",
        "from",
        "to",
        "protocol",
        "port",
        "pairs",
        "flows",
    }
    assert api.get_json("/explain?from=vm1&to=vm2&protocol=udp")["reason"] == "other-service"
    assert api.get_json("/explain?from=vm2&to=vm1")["reason"] == "no-pair"
    for query, status in (
        ("from=vm1&to=vm2&port=22", 400),
        ("from=vm1&to=vm2&to=vm1", 400),
        ("to=vm2", 400),
        ("from=vm1&to=ghost", 404),
        ("from=vm1&to=198.51.100.1", 404),
    ):
        assert_error(api.call("GET", f"/explain?{query}"), status)
    assert api.snapshot() == before, "explain changed nothing"
