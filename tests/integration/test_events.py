"""The connection log on the real switch: every denied attempt is an event, a pair that
logs makes its admitted connections events too, established traffic never reaches the
controller, and one VM flooding denied packets fills its own meter, not the others'.

Each denied case checks that the destination saw nothing; each allowed one that a third
VM stayed silent; forged frames come with a control frame the path delivers."""

from __future__ import annotations

import secrets
import time
from typing import Any

import frames
import sniff
from conftest import Lab

from ryu_ctfw import lab
from ryu_ctfw.channel import LEARN_BURST, LEARN_RATE


def marker() -> bytes:
    return b"ctfw-events-" + secrets.token_hex(6).encode()


def events(
    env: Lab, query: str = "", expect: int = 1, timeout: float = 5, **fields: Any
) -> list[dict]:
    """GET /events?query once at least `expect` events match, keeping those whose
    `fields` are as given (the VMs' kernels send some IPv6 of their own, denied too)."""
    path = "/ctfw/v1/events" + (f"?{query}" if query else "")

    def mine() -> list[dict]:
        found = env.ctl.ok("GET", path)["events"]
        return [e for e in found if all(e[k] == v for k, v in fields.items())]

    if expect == 0:
        time.sleep(1)
        return mine()
    return lab.wait_for(lambda: (found := mine()) and len(found) >= expect and found,
                        timeout, f"{expect} events for {query!r} {fields}")  # fmt: skip


def switch_view(env: Lab) -> dict[str, Any]:
    return env.ctl.ok("GET", "/ctfw/v1/switches")["switches"][0]


def three_vms(env: Lab) -> tuple[lab.Vm, lab.Vm, lab.Vm]:
    """vm1 may open tcp/22 to vm2 (logged) and udp/5000 (not logged); vm3 has no pair."""
    vm1, vm2, vm3 = env.vm("vm1", 2, 1), env.vm("vm2", 3, 2), env.vm("vm3", 4, 3)
    body = {"initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": "22"}
    env.ctl.ok("POST", "/ctfw/v1/pairs", {**body, "log": True})
    env.pair("vm1", "vm2", "udp", "5000")
    return vm1, vm2, vm3


def test_a_denied_attempt_is_an_event_and_reaches_nobody(labenv: Lab) -> None:
    vm1, vm2, vm3 = three_vms(labenv)
    since = time.time()
    mark = marker()
    watch = sniff.watch(mark, vm1, vm3)
    # vm2 may not open anything to vm1: a UDP datagram it tries is dropped at table 1.
    vm2.send_frame(frames.udp_frame(vm2.mac, vm1.mac, vm2.ip, vm1.ip, mark, dst_port=80))
    assert sniff.seen(watch) == [0, 0], "vm1 (and vm3) saw nothing"
    [event] = events(labenv, f"verdict=denied&since={since}", dport=80)
    assert event["vm"] == "vm2" and event["peer"] == "vm1"
    assert (event["protocol"], event["src"], event["dst"]) == ("udp", vm2.ip, vm1.ip)
    assert (event["sport"], event["dport"]) == (40000, 80)
    assert (event["reason"], event["pair"], event["switch"]) == ("no-pair", None, labenv.bridge)
    assert since <= event["time"] <= time.time()
    # vm= matches either side; other VMs' events are not listed.
    assert events(labenv, "vm=vm1&verdict=denied", dport=80) == [event]
    assert events(labenv, "vm=vm3", expect=0, dport=80) == []
    assert events(labenv, "verdict=allowed", expect=0) == []
    assert all(e["verdict"] == "denied" for e in events(labenv, "verdict=denied"))


def test_a_logging_pair_logs_each_connection_once_and_never_its_traffic(labenv: Lab) -> None:
    vm1, vm2, vm3 = three_vms(labenv)
    mark = marker()
    with lab.servers(vm2, ("tcp", 22), ("udp", 5000)):
        before, since = switch_view(labenv)["packet_ins"], time.time()
        watch = sniff.watch(mark, vm3)
        stream = vm1.stream(vm2.ip, 22, duration=2)  # a byte every 0.1 s, echoed
        out, _ = stream.communicate(timeout=15)
        assert len(out.split()) >= 10, "control: the connection carried traffic"
        vm1.send_frame(frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark,
                                        dst_port=5000), count=3)  # fmt: skip
        assert sniff.seen(watch) == [0], "vm3 saw none of it"
        assert vm1.udp(vm2.ip, 5000), "control: the pair that does not log admits too"
    [event] = events(labenv, "verdict=allowed")
    pair = next(p for p in labenv.ctl.ok("GET", "/ctfw/v1/pairs")["pairs"] if p["log"])
    assert (event["vm"], event["peer"], event["pair"]) == ("vm1", "vm2", pair["id"])
    assert (event["protocol"], event["dport"], event["reason"]) == ("tcp", 22, "admitted")
    # Every packet-in meanwhile is an event: the opening packet, and whatever the VMs'
    # kernels sent that is denied; the established traffic and the non-logging pair's
    # datagrams never reached the controller.
    logged = events(labenv, f"since={since}", expect=0)
    assert switch_view(labenv)["packet_ins"] - before == len(logged)
    assert [e["dport"] for e in logged if e["verdict"] == "allowed"] == [22]
    assert not [e for e in logged if e["dport"] in (22, 5000) and e["verdict"] == "denied"]


def test_forged_and_tagged_frames_are_events_with_their_reason(labenv: Lab) -> None:
    vm1, vm2, vm3 = three_vms(labenv)
    mark = marker()
    watch = sniff.watch(mark, vm2, vm3)
    # vm1 sends as vm3 (a registered address: claimed), and tagged; then its own datagram.
    vm1.send_frame(frames.udp_frame(vm1.mac, vm2.mac, vm3.ip, vm2.ip, mark, dst_port=5000))
    plain = frames.udp_frame(vm1.mac, vm2.mac, vm1.ip, vm2.ip, mark, dst_port=5000)
    vm1.send_frame(frames.tagged(plain, 5))
    vm1.send_frame(plain)
    assert sniff.seen(watch) == [1, 0], "only the control datagram reached vm2"
    found = events(labenv, "verdict=denied&vm=vm1", expect=2, dport=5000)
    assert [(e["reason"], e["vm"], e["src"], e["peer"]) for e in found] == [
        ("claimed-address", "vm1", vm3.ip, "vm2"),
        ("tagged", "vm1", vm1.ip, "vm2"),
    ]


def test_a_noisy_vm_fills_its_own_meter_not_the_others(labenv: Lab) -> None:
    vm1, vm2, vm3 = three_vms(labenv)
    mark = marker()
    since = time.time()
    # vm3 floods denied datagrams, far over its port's rate...
    flood = frames.udp_frame(vm3.mac, vm1.mac, vm3.ip, vm1.ip, mark, dst_port=9)
    watch = sniff.watch(mark, vm1)
    vm3.send_frame(flood, count=2000)
    # ...and vm2's one denied attempt right after is still logged.
    vm2.send_frame(frames.udp_frame(vm2.mac, vm1.mac, vm2.ip, vm1.ip, mark, dst_port=81))
    assert sniff.seen(watch) == [0], "vm1 saw none of it"
    [from_vm2] = events(labenv, f"vm=vm2&since={since}", dport=81)
    assert from_vm2["reason"] == "no-pair"
    elapsed = time.time() - since
    from_vm3 = events(labenv, f"vm=vm3&since={since}&limit=10000", dport=9)
    assert 1 <= len(from_vm3) <= LEARN_BURST + LEARN_RATE * (elapsed + 1)
    # The meter's drops are logged when the meters are next read (every 5 s).
    lab.wait_for(lambda: "dropped" in labenv.ctl.log_file.read_text(), 12, "the meter's log")
    line = next(x for x in labenv.ctl.log_file.read_text().splitlines() if "dropped" in x)
    assert vm3.port in line and "events" in line


def test_bad_event_queries_are_refused(labenv: Lab) -> None:
    for query in ("verdict=maybe", "since=yesterday", "limit=0", "limit=x", "vmm=vm1"):
        status, answer = labenv.ctl.api("GET", f"/ctfw/v1/events?{query}")
        assert status == 400 and answer["error"], query


def test_the_log_says_what_runs_and_what_each_change_changed(labenv: Lab) -> None:
    three_vms(labenv)
    log = labenv.ctl.log_file.read_text()
    start = next(x for x in log.splitlines() if "starting:" in x)
    assert "ryu-ctfw " in start and f"state_file={labenv.ctl.state_file}" in start
    assert "api_token=" in start and "max_vms=" in start
    assert '"protocol":"tcp","ports":"22","log":true' in log
    assert "change: pair 2 added" in log and "change: vm vm3 added" in log
