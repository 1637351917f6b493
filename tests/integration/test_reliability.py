"""Changes are atomic and confirmed; restarts of either side are non-events."""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import Lab

from ryu_ctfw import lab


def flow_texts(env: Lab) -> list[str]:
    return sorted(f["text"] for f in env.flows())


def test_a_change_the_switch_refuses_leaves_nothing_behind(seed: Lab) -> None:
    table1 = sum(1 for f in seed.flows() if f["table"] == 1)
    # Let table 1 hold no more flows than it has: the next pair cannot fit.
    seed.ovs.vsctl(
        "--",
        "--id=@ft",
        "create",
        "Flow_Table",
        f"flow_limit={table1}",
        "overflow_policy=refuse",
        "--",
        "set",
        "Bridge",
        seed.bridge,
        "flow_tables:1=@ft",
    )
    flows, pairs = flow_texts(seed), seed.ctl.ok("GET", "/ctfw/v1/pairs")
    state = seed.ctl.stored()

    status, body = seed.ctl.api("POST", "/ctfw/v1/pairs", {"initiator": "vm2", "responder": "vm1"})
    assert status == 502, body
    assert "OFPFMFC_TABLE_FULL" in body["error"], body
    assert "table=1, priority=100,ct_state=+new-rel-rpl+trk" in body["error"], "names the flow"
    assert flow_texts(seed) == flows, "nothing of the change stays on the switch"
    assert seed.ctl.ok("GET", "/ctfw/v1/pairs") == pairs
    assert seed.ctl.stored() == state
    log = seed.ctl.log_file.read_text()
    assert "switch rejected table=1" in log and "OFPFMFC_TABLE_FULL" in log

    seed.ovs.vsctl("clear", "Bridge", seed.bridge, "flow_tables")
    assert (
        seed.ctl.api("POST", "/ctfw/v1/pairs", {"initiator": "vm2", "responder": "vm1"})[0] == 201
    )
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    assert vm2.ping(vm1.ip)


def stream_gaps(proc: subprocess.Popen[str]) -> tuple[int, float]:
    """(echoes, longest silence in seconds) of a finished lab stream."""
    out, _ = proc.communicate(timeout=30)
    times = [float(t) for t in out.split() if re.fullmatch(r"\d+\.\d+", t)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return len(times), max(gaps, default=float("inf"))


def ping_loss(proc: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=60)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m[1]), int(m[2])


def test_controller_sigkill_and_restart_lose_nothing(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    # A flow that is not ours, which the controller must leave alone.
    foreign = "table=0,priority=1000,udp,tp_dst=9 actions=drop"
    seed.ovs.ofctl("add-flow", seed.bridge, foreign)
    srv = vm2.serve("tcp", 22)
    try:
        stream = vm1.stream(vm2.ip, 22, 8)
        ping = vm1.popen(["ping", "-n", "-i", "0.05", "-c", "140", vm2.ip])
        time.sleep(1.5)
        syncs = seed.ctl.log_file.read_text().count("synced:")
        reports = len(seed.ctl.sync_reports())
        seed.ctl.stop(signal.SIGKILL)
        time.sleep(1)
        seed.ctl.start()
        seed.ctl.wait_connected(seed.bridge)
        sent, received = ping_loss(ping)
        echoes, gap = stream_gaps(stream)
    finally:
        srv.kill()
    assert sent == 140 and received == sent, f"lost {sent - received} of {sent} pings"
    assert echoes > 40 and gap < 0.6, f"TCP stream stalled for {gap:.2f}s"
    found, added, deleted = seed.ctl.wait_in_sync(reports)
    assert found > 0 and (added, deleted) == (0, 0), "no flow-mod was needed at connect"
    assert seed.ctl.log_file.read_text().count("synced:") == syncs, "nor after it"
    assert "priority=1000,udp,tp_dst=9 actions=drop" in seed.ovs.dump_flows(seed.bridge)
    # A policy change after the restart still leaves the foreign flow in place.
    seed.pair("vm2", "vm1", "icmp")
    assert "priority=1000,udp,tp_dst=9 actions=drop" in seed.ovs.dump_flows(seed.bridge)


def test_switch_restart_gets_the_whole_policy_back(
    seed: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    flows = flow_texts(seed)
    ping = vm1.popen(["ping", "-n", "-i", "0.05", "-c", "100", vm2.ip])
    time.sleep(1)
    seed.ovs.stop_vswitchd()
    seed.ovs.start_vswitchd()
    lab.wait_for(lambda: flow_texts(seed) == flows, 20, "the flows back after the restart")
    sent, received = ping_loss(ping)
    with capsys.disabled():
        print(f"\n  switch restart: lost {sent - received} of {sent} pings (50 ms apart)")
    assert received > 0, "traffic resumed"
    assert vm1.ping(vm2.ip)
    srv = vm1.serve("tcp", 22)
    try:
        assert not vm2.tcp(vm1.ip, 22, timeout=1), "and the policy is the policy again"
    finally:
        srv.kill()


def test_fifty_concurrent_changes_end_consistent(labenv: Lab) -> None:
    names = [f"v{i}" for i in range(6)]
    for i, name in enumerate(names):
        labenv.vm(name, 10 + i, 10 + i)

    def call(i: int) -> int:
        a, b = names[i % 6], names[(i * 7 + 1) % 6]
        kind = i % 5
        if kind == 0:
            vm = labenv.vms[a]
            return labenv.ctl.api(
                "PUT", f"/ctfw/v1/vms/{a}", {"port": vm.port, "mac": vm.mac, "ips": [vm.ip]}
            )[0]
        if kind == 4:
            return labenv.ctl.api("DELETE", f"/ctfw/v1/pairs/{i // 2}")[0]
        proto = ("any", "tcp", "udp", "icmp")[kind]
        body = {"initiator": a, "responder": b, "protocol": proto}
        if proto in ("tcp", "udp"):
            body["ports"] = str(1000 + i % 3)
        return labenv.ctl.api("POST", "/ctfw/v1/pairs", body)[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(call, range(50)))
    assert all(s < 500 for s in statuses), statuses
    assert statuses.count(201) > 10, statuses

    api = {
        "vms": labenv.ctl.ok("GET", "/ctfw/v1/vms")["vms"],
        "pairs": labenv.ctl.ok("GET", "/ctfw/v1/pairs")["pairs"],
    }
    stored = labenv.ctl.stored()
    # The API's view adds what each side is (all VMs here) to the stored pair.
    kinds = {"initiator_kind": "vm", "responder_kind": "vm"}
    assert api["pairs"] == [{**p, **kinds} for p in stored["pairs"]]
    assert {v["name"] for v in api["vms"]} == {v["name"] for v in stored["vms"]}
    # The switch holds exactly what the stored policy compiles to: a controller that
    # starts from the state file finds nothing to change.
    syncs = labenv.ctl.log_file.read_text().count("synced:")
    reports = len(labenv.ctl.sync_reports())
    labenv.ctl.stop()
    labenv.ctl.start()
    found, added, deleted = labenv.ctl.wait_in_sync(reports)
    assert found > 0 and (added, deleted) == (0, 0)
    time.sleep(0.5)
    assert labenv.ctl.log_file.read_text().count("synced:") == syncs


def test_state_file_survives_sigkill_mid_write(labenv: Lab) -> None:
    labenv.vm("a", 2, 1)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                labenv.ctl.api("PUT", f"/ctfw/v1/vms/w{i % 40}", {"port": f"w{i % 40}"})
            except OSError:
                return
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.5)
    labenv.ctl.stop(signal.SIGKILL)
    stop.set()
    thread.join()
    state = labenv.ctl.stored()  # loads: whole, never torn
    assert {"version", "vms", "pairs"} <= set(state)
    labenv.ctl.start()
    assert not list(labenv.ctl.state_file.parent.glob(".state.json.*")), "temp files cleaned"
    names = {v["name"] for v in labenv.ctl.ok("GET", "/ctfw/v1/vms")["vms"]}
    assert names == {v["name"] for v in state["vms"]}
