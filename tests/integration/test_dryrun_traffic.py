"""Dry run on a real switch (issue 13, point 4): `?dry_run=true` on every mutating route
changes nothing (not the stored state, not the switch's flow table, not the policy's next
ids), answers what the real call then answers, and its flows to add and delete are exactly
how the switch's table then changes; "cut" names the pairs whose open connections the real
call then cuts, with real traffic."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

from conftest import Host, Hosts, Lab
from frames import flow_marker
from sniff import Sniffer, seen

from ryu_ctfw import lab

API = "/ctfw/v1"
STREAM = 8.0  # a stream's length: it starts, meets the dry run, then the real call


def table(env: Lab) -> set[str]:
    """The bridge's flows as ovs-ofctl prints them, without cookies and counters."""
    flows = lab.flow_table(env.ovs.dump_flows(env.bridge, "--no-stats"))
    return {f"{key} actions={rest.split(' actions=', 1)[1]}" for key, rest in flows.items()}


def as_dumped(texts: list[str]) -> set[str]:
    """The plan's flow texts as dump-flows prints them (it leaves table 0 out)."""
    return {t.removeprefix("table=0, ") for t in texts}


def everything(env: Lab) -> tuple[Any, ...]:
    """What a dry run must not change: every stored byte, the switch's table, the policy."""
    return env.ctl.stored_bytes(), table(env), env.ctl.ok("GET", f"{API}/policy")


def still(answer: Any) -> Any:
    """An answer without its live counter: a switch's packet_ins moves with every packet the
    switch sends up (an ND probe between the dry run and the real call is enough)."""
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k != "packet_ins"}
    return answer


def dry_then_real(env: Lab, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The dry run of a call, checked against the real call made right after it."""
    before = everything(env)
    status, plan = env.ctl.api(method, f"{API}{path}?dry_run=true", body)
    assert status == 200, f"{method} {path}: {plan}"
    assert plan["dry_run"] is True
    assert everything(env) == before, f"the dry run of {method} {path} changed something"
    status, answer = env.ctl.api(method, f"{API}{path}", body)
    assert status == plan["status"], f"{method} {path}: {answer}"
    assert still(answer) == still(plan["answer"]), f"{method} {path}: the real call differs"
    (sw,) = plan["switches"]
    assert sw["name"] == env.bridge
    now = table(env)
    assert as_dumped(sw["add"]) == now - before[1], f"{method} {path}: added"
    assert as_dumped(sw["delete"]) == before[1] - now, f"{method} {path}: deleted"
    return plan


def test_every_mutating_route_dry_runs_to_exactly_what_it_then_does(seed: Lab) -> None:
    env = seed
    env.vm("vm3", 4, 3)
    vm4 = env.vm("vm4", 5, 4, register=False)
    up = env.uplink(ofport=9, network=None)
    dpid = env.ctl.wait_connected(env.bridge)["dpid"]
    vm4_body = {"port": vm4.port, "mac": vm4.mac, "ips": [vm4.ip]}
    outside = {"port": up.port, "cidrs": lab.OUTSIDE_CIDRS}
    steps: list[tuple[str, str, Any]] = [
        ("PUT", "/vms/vm4", vm4_body),
        ("POST", "/pairs", {"initiator": "vm1", "responder": "vm4", "protocol": "tcp",
                            "ports": "8080"}),
        ("PUT", "/groups/web", {"members": ["vm1", "vm3"]}),
        ("POST", "/pairs", {"initiator": "web", "responder": "vm2", "protocol": "tcp",
                            "ports": "5432"}),
        ("PUT", "/groups/web", {"members": ["vm3"]}),
        ("PUT", "/networks/outside", outside),
        ("POST", "/pairs", {"initiator": "vm3", "responder": "outside", "protocol": "udp",
                            "ports": "53"}),
        ("PUT", "/vms/vm3", {"port": env.vms["vm3"].port, "mac": env.vms["vm3"].mac,
                             "ips": ["198.18.0.33"]}),
        ("PUT", f"/switches/{dpid}", {"fabric_port": up.port}),
        ("PUT", f"/switches/{dpid}", {"fabric_port": None}),
        ("DELETE", "/pairs/4", None),
        ("DELETE", "/networks/outside", None),
        ("DELETE", "/pairs/3", None),
        ("DELETE", "/groups/web", None),
        ("DELETE", "/pairs/2", None),
        ("DELETE", "/vms/vm4", None),
    ]  # fmt: skip
    unchanged = []
    for n, (method, path, body) in enumerate(steps):
        plan = dry_then_real(env, method, path, body)
        if not (plan["switches"][0]["add"] or plan["switches"][0]["delete"]):
            unchanged.append(n)
    # Only a group no pair uses and a fabric port with no VM of another host change no
    # line: every other step checked a real difference.
    assert unchanged == [2, 8, 9, 13]
    # PUT /policy: the export less vm3, plus a pair back to vm1.
    doc = env.ctl.ok("GET", f"{API}/policy")
    doc["vms"] = [v for v in doc["vms"] if v["name"] != "vm3"]
    doc["pairs"].append({"initiator": "vm2", "responder": "vm1", "protocol": "icmp"})
    plan = dry_then_real(env, "PUT", "/policy", doc)
    assert plan["answer"]["removed"]["vms"] == ["vm3"]
    assert [p["id"] for p in plan["answer"]["added"]["pairs"]] == [5]  # the next id, kept


def test_the_ids_a_dry_run_predicts_are_the_ids_the_calls_then_get(seed: Lab) -> None:
    env = seed
    env.vm("vm3", 4, 3)
    body = {"initiator": "vm3", "responder": "vm2"}
    predicted = env.ctl.ok("POST", f"{API}/pairs?dry_run=true", body)["answer"]["id"]
    again = env.ctl.ok("POST", f"{API}/pairs?dry_run=true", body)["answer"]["id"]
    assert predicted == again == 2
    assert env.pair("vm3", "vm2") == predicted
    vm = env.ctl.ok("PUT", f"{API}/vms/vm9?dry_run=true", {"port": "nowhere9"})["answer"]
    assert env.ctl.ok("PUT", f"{API}/vms/vm9", {"port": "nowhere9"})["id"] == vm["id"]


def test_a_dry_run_of_a_bad_call_answers_the_real_calls_4xx_and_changes_nothing(
    seed: Lab,
) -> None:
    env = seed
    before = everything(env)
    for method, path, body in [
        ("PUT", "/vms/vm9", {"port": f"ct{env.token}vm1"}),  # 409: vm1's port
        ("DELETE", "/vms/vm1", None),  # 409: pair 1 uses it
        ("DELETE", "/pairs/9", None),  # 404
        ("POST", "/pairs", {"initiator": "vm1", "responder": "nope"}),  # 404
        ("PUT", "/groups/g", {"members": 3}),  # 400
        ("PUT", "/switches/zz", {"fabric_port": "x"}),  # 400
        ("PUT", "/policy", {"vms": [], "groups": [], "networks": []}),  # 400
    ]:
        dry = env.ctl.api(method, f"{API}{path}?dry_run=true", body)
        real = env.ctl.api(method, f"{API}{path}", body)
        assert 400 <= dry[0] < 500 and dry == real, f"{method} {path}: {dry} / {real}"
    assert env.ctl.api("DELETE", f"{API}/pairs/1?dry_run=maybe")[0] == 400
    assert everything(env) == before


def times(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate(timeout=STREAM + 10)
    return [float(line) for line in out.split() if re.fullmatch(r"\d+\.\d+", line)]


def test_cut_names_the_pair_whose_connections_the_real_call_cuts(seed: Lab) -> None:
    """vm1 and vm3 stream to vm2: vm1 by pair 1, vm3 by a pair of its own. The dry run of
    deleting pair 1 names pair 1 alone and cuts nothing; the real call cuts vm1's stream
    only, and vm1 can open no new connection (vm2 sees none of it)."""
    env = seed
    vm1, vm2, vm3 = env.vms["vm1"], env.vms["vm2"], env.vm("vm3", 4, 3)
    other = env.pair("vm3", "vm2")
    server = vm2.serve("tcp", 2222)
    try:
        cut_stream, kept_stream = vm1.stream(vm2.ip, 2222, STREAM), vm3.stream(vm2.ip, 2222, STREAM)
        time.sleep(2)
        dry_at = time.time()
        plan = env.ctl.ok("DELETE", f"{API}/pairs/1?dry_run=true")
        assert [p["id"] for p in plan["cut"]] == [1] and other != 1
        time.sleep(1.5)
        real_at = time.time()
        assert env.ctl.api("DELETE", f"{API}/pairs/1")[0] == 204
        answered = time.time()
        cut_t, kept_t = times(cut_stream), times(kept_stream)
        watch = [Sniffer(vm2, flow_marker(vm1.ip, vm2.ip, 41111, 2222))]
        assert not vm1.tcp(vm2.ip, 2222, timeout=1, sport=41111)
        assert seen(watch) == [0], "vm2 saw vm1's new connection after the cut"
    finally:
        server.kill()
    assert any(dry_at + 0.5 < t < real_at for t in cut_t), "the dry run cut vm1's stream"
    assert not [t for t in cut_t if t > answered + 1.0], f"vm1's stream lived on: {cut_t}"
    assert any(t > answered + 1.5 for t in kept_t), f"vm3's stream was cut too: {kept_t}"


def test_a_member_leaving_a_group_is_a_cut_of_the_groups_pair(seed: Lab) -> None:
    env = seed
    vm1, vm2, vm3 = env.vms["vm1"], env.vms["vm2"], env.vm("vm3", 4, 3)
    env.ctl.ok("DELETE", f"{API}/pairs/1")
    env.group("web", ["vm1", "vm3"])
    ident = env.pair("web", "vm2", "tcp", "2222")
    server = vm2.serve("tcp", 2222)
    try:
        leaving, staying = vm1.stream(vm2.ip, 2222, STREAM), vm3.stream(vm2.ip, 2222, STREAM)
        time.sleep(2)
        plan = env.ctl.ok("PUT", f"{API}/groups/web?dry_run=true", {"members": ["vm3"]})
        assert [p["id"] for p in plan["cut"]] == [ident]
        grow = env.ctl.ok("PUT", f"{API}/groups/web?dry_run=true",
                          {"members": ["vm1", "vm3", "vm2"]})  # fmt: skip
        assert grow["cut"] == []  # more members: nobody's connection goes
        time.sleep(1)
        env.group("web", ["vm3"])
        answered = time.time()
        leaving_t, staying_t = times(leaving), times(staying)
    finally:
        server.kill()
    assert any(t < answered - 1 for t in leaving_t), "vm1's stream never worked"
    assert not [t for t in leaving_t if t > answered + 1.0], f"vm1 lived on: {leaving_t}"
    assert any(t > answered + 1.5 for t in staying_t), f"vm3 was cut too: {staying_t}"


def host_table(host: Host) -> set[str]:
    return {f"{key} actions={rest.split(' actions=', 1)[1]}" for key, rest in host.flows().items()}


def test_on_two_hosts_the_plan_is_each_switchs_own_difference(hosts: Hosts) -> None:
    """A pair across hosts changes both switches, each its own way; a VM moving its MAC
    cuts it; the plan says so per switch, in dpid order, and the real calls match."""
    env, a, b = hosts.env, hosts.a, hosts.b
    hosts.vm("vm1", a, 1)
    vm2 = hosts.vm("vm2", b, 2)
    body = {"initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": "2222"}
    for method, path, payload in [
        ("POST", "/pairs", body),
        ("PUT", "/vms/vm2", {"port": vm2.port, "mac": "52:54:00:00:12:99", "ips": [vm2.ip],
                             "switch": b.dpid}),
        ("DELETE", "/pairs/1", None),
    ]:  # fmt: skip
        before = everything(env), host_table(a), host_table(b)
        plan = env.ctl.ok(method, f"{API}{path}?dry_run=true", payload)
        assert (everything(env), host_table(a), host_table(b)) == before
        assert [sw["dpid"] for sw in plan["switches"]] == sorted([a.dpid, b.dpid])
        status, answer = env.ctl.api(method, f"{API}{path}", payload)
        assert (status, answer) == (plan["status"], plan["answer"])
        for sw, host, was in zip(plan["switches"], (a, b), before[1:], strict=True):
            now = host_table(host)
            assert sw["name"] == host.bridge
            assert sw["add"] or sw["delete"], f"{method} {path}: nothing on {host.label}"
            assert as_dumped(sw["add"]) == now - was, f"{method} {path} on {host.label}"
            assert as_dumped(sw["delete"]) == was - now, f"{method} {path} on {host.label}"
        cut = [p["id"] for p in plan["cut"]]
        assert cut == ([] if method == "POST" else [1]), f"{method} {path}: {cut}"
