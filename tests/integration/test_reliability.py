"""Changes are atomic and confirmed; restarts of either side are non-events."""

from __future__ import annotations

from conftest import Lab


def flow_texts(env: Lab) -> list[str]:
    return sorted(f["text"] for f in env.flows())


def test_a_change_the_switch_refuses_leaves_nothing_behind(seed: Lab) -> None:
    table1 = sum(1 for f in seed.flows() if f["table"] == 1)
    # Let table 1 hold no more flows than it has: the next pair cannot fit.
    seed.ovs.vsctl("--", "--id=@ft", "create", "Flow_Table", f"flow_limit={table1}",
                   "overflow_policy=refuse", "--", "set", "Bridge", seed.bridge,
                   "flow_tables:1=@ft")
    flows, pairs = flow_texts(seed), seed.ctl.ok("GET", "/ctfw/v1/pairs")
    state = seed.ctl.state_file.read_text()

    status, body = seed.ctl.api("POST", "/ctfw/v1/pairs",
                                {"initiator": "vm2", "responder": "vm1"})
    assert status == 502, body
    assert "OFPFMFC_TABLE_FULL" in body["error"], body
    assert "table=1, priority=100,ct_state=+new+trk" in body["error"], "names the flow"
    assert flow_texts(seed) == flows, "nothing of the change stays on the switch"
    assert seed.ctl.ok("GET", "/ctfw/v1/pairs") == pairs
    assert seed.ctl.state_file.read_text() == state
    log = seed.ctl.log_file.read_text()
    assert "switch rejected table=1" in log and "OFPFMFC_TABLE_FULL" in log

    seed.ovs.vsctl("clear", "Bridge", seed.bridge, "flow_tables")
    assert seed.ctl.api("POST", "/ctfw/v1/pairs",
                        {"initiator": "vm2", "responder": "vm1"})[0] == 201
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    assert vm2.ping(vm1.ip)
