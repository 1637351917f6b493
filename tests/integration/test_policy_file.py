"""The policy as a file on a real switch (issue 13, point 5): GET /policy written to a
file, edited, and PUT back as CI would. A file that adds a pair lets its traffic through
and nothing else; one that drops it cuts its connection; the same file twice sends the
switch nothing the second time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import Lab
from frames import flow_marker
from sniff import Sniffer, seen
from test_dryrun_traffic import STREAM, everything, table, times

API = "/ctfw/v1"


def export_to(env: Lab, path: Path) -> dict[str, Any]:
    path.write_text(json.dumps(env.ctl.ok("GET", f"{API}/policy"), indent=2))
    return json.loads(path.read_text())


def apply_file(env: Lab, path: Path) -> dict[str, Any]:
    status, answer = env.ctl.api("PUT", f"{API}/policy", raw=path.read_bytes())
    assert status == 200, answer
    return answer


def three_vms(env: Lab) -> None:
    """vm1, vm2, vm3 on ofports 2-4, no pair."""
    env.vm("vm1", 2, 1)
    env.vm("vm2", 3, 2)
    env.vm("vm3", 4, 3)


def test_a_file_that_adds_a_pair_lets_that_through_and_nothing_else(
    labenv: Lab, tmp_path: Path
) -> None:
    env = labenv
    three_vms(env)
    vm1, vm2, vm3 = env.vms["vm1"], env.vms["vm2"], env.vms["vm3"]
    policy = tmp_path / "policy.json"
    doc = export_to(env, policy)
    ids = {v["name"]: v["id"] for v in doc["vms"]}
    doc["pairs"].append({"initiator": "vm1", "responder": "vm2", "protocol": "tcp",
                         "ports": "2222"})  # fmt: skip
    policy.write_text(json.dumps(doc))
    answer = apply_file(env, policy)
    (pair,) = answer["added"]["pairs"]
    assert (pair["id"], pair["initiator"], pair["responder"]) == (1, "vm1", "vm2")
    assert {v["name"]: v["id"] for v in env.ctl.ok("GET", f"{API}/vms")["vms"]} == ids
    servers = [vm2.serve("tcp", 2222), vm3.serve("tcp", 2222), vm2.serve("tcp", 2223)]
    try:
        bystander = [Sniffer(vm3, flow_marker(vm1.ip, vm2.ip))]
        assert vm1.tcp(vm2.ip, 2222), "the file's pair lets vm1 reach vm2 on 2222"
        assert seen(bystander) == [0], "vm3 saw vm1's traffic to vm2"
        refused = [
            Sniffer(vm3, flow_marker(vm1.ip, vm3.ip, 41001, 2222)),
            Sniffer(vm2, flow_marker(vm1.ip, vm2.ip, 41002, 2223)),
            Sniffer(vm1, flow_marker(vm2.ip, vm1.ip)),
        ]
        assert not vm1.tcp(vm3.ip, 2222, timeout=1, sport=41001), "no pair to vm3"
        assert not vm1.tcp(vm2.ip, 2223, timeout=1, sport=41002), "only 2222 is allowed"
        assert not vm2.ping(vm1.ip), "vm2 may not start anything towards vm1"
        assert seen(refused) == [0, 0, 0]
    finally:
        for s in servers:
            s.kill()


def test_a_file_that_drops_the_pair_cuts_its_connection(seed: Lab, tmp_path: Path) -> None:
    env = seed
    vm1, vm2 = env.vms["vm1"], env.vms["vm2"]
    policy = tmp_path / "policy.json"
    doc = export_to(env, policy)
    doc["pairs"] = []
    policy.write_text(json.dumps(doc))
    server = vm2.serve("tcp", 2222)
    try:
        stream = vm1.stream(vm2.ip, 2222, STREAM)
        time.sleep(2)
        dry = env.ctl.ok("PUT", f"{API}/policy?dry_run=true", doc)
        assert [p["id"] for p in dry["cut"]] == [1]
        answer = apply_file(env, policy)
        answered = time.time()
        assert [p["id"] for p in answer["removed"]["pairs"]] == [1]
        seen_t = times(stream)
        watch = [Sniffer(vm2, flow_marker(vm1.ip, vm2.ip, 41003, 2222))]
        assert not vm1.tcp(vm2.ip, 2222, timeout=1, sport=41003)
        assert seen(watch) == [0], "vm2 saw a new connection from vm1 after the pair went"
    finally:
        server.kill()
    assert any(t < answered - 1 for t in seen_t), "the stream never worked"
    assert not [t for t in seen_t if t > answered + 1.0], f"the stream lived on: {seen_t}"
    assert env.ctl.ok("GET", f"{API}/pairs") == {"pairs": []}


def test_the_same_file_twice_sends_the_switch_nothing_the_second_time(
    seed: Lab, tmp_path: Path
) -> None:
    env = seed
    env.vm("vm3", 4, 3)
    dpid = env.ctl.wait_connected(env.bridge)["dpid"]
    policy = tmp_path / "policy.json"
    doc = export_to(env, policy)
    doc["groups"].append({"name": "web", "members": ["vm1", "vm3"]})
    doc["pairs"].append({"initiator": "web", "responder": "vm2", "protocol": "udp",
                         "ports": "53"})  # fmt: skip
    policy.write_text(json.dumps(doc))
    sent = env.ctl.changes_sent(dpid)
    first = apply_file(env, policy)
    assert first["added"]["groups"] == ["web"] and len(first["added"]["pairs"]) == 1
    assert env.ctl.changes_sent(dpid) == sent + 1, "the first apply is one change"
    before, flows = everything(env), env.ovs.dump_flows(env.bridge, "--no-stats")
    second = apply_file(env, policy)
    assert second == {k: {key: [] for key in first[k]} for k in ("added", "changed", "removed")}
    assert everything(env) == before  # nothing stored, the table as it was
    assert env.ovs.dump_flows(env.bridge, "--no-stats") == flows
    assert env.ctl.changes_sent(dpid) == sent + 1, "the second apply sent a flow-mod"
    # The export of what the file made applies as a no-op too, and keeps its ids.
    again = env.ctl.ok("GET", f"{API}/policy")
    assert env.ctl.ok("PUT", f"{API}/policy", again) == second
    assert env.ctl.ok("GET", f"{API}/policy") == again
    assert table(env) == before[1] and env.ctl.changes_sent(dpid) == sent + 1


def test_a_bad_file_names_the_entry_and_changes_nothing(seed: Lab, tmp_path: Path) -> None:
    env = seed
    policy = tmp_path / "policy.json"
    doc = export_to(env, policy)
    before = everything(env)
    doc["vms"][1]["mac"] = "not-a-mac"
    doc["pairs"].append({"initiator": "vm2", "responder": "vm1"})
    policy.write_text(json.dumps(doc))
    status, answer = env.ctl.api("PUT", f"{API}/policy", raw=policy.read_bytes())
    assert status == 400 and answer["error"].startswith("vms[1].mac: invalid mac"), answer
    status, answer = env.ctl.api("PUT", f"{API}/policy", {**doc, "extra": 1})
    assert status == 400 and "extra" in answer["error"]
    assert everything(env) == before
