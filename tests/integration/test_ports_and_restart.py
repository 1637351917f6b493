"""Rules follow VMs as ports come, go and get renumbered; a restart restores everything."""

from __future__ import annotations

import signal

from conftest import Lab

from ryu_ctfw import lab


def vm_view(env: Lab, name: str) -> dict:
    return env.ctl.ok("GET", f"/ctfw/v1/vms/{name}")


def test_port_unplugged_and_back_with_another_ofport(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    assert vm1.ping(vm2.ip)
    assert vm_view(seed, "vm2")["ofport"] == 3

    vm2.unplug(seed.ovs, seed.bridge)
    lab.wait_for(lambda: vm_view(seed, "vm2")["ofport"] is None, 5, "vm2 to be absent")
    assert vm_view(seed, "vm2")["dpid"] is None
    texts = "\n".join(f["text"] for f in seed.flows())
    assert "in_port=3" not in texts and "-rel-rpl+trk" not in texts, texts

    assert vm2.plug(seed.ovs, seed.bridge, 7) == 7
    lab.wait_for(lambda: vm_view(seed, "vm2")["ofport"] == 7, 5, "vm2 on ofport 7")
    lab.wait_for(
        lambda: "in_port=7" in "\n".join(f["text"] for f in seed.flows()), 5, "flows for ofport 7"
    )
    texts = [f["text"] for f in seed.flows()]
    assert (
        "table=1, priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=7,"
        "dl_dst=52:54:00:60:84:ff actions=output:2" in texts
    )
    assert not any("in_port=3" in t for t in texts)
    assert vm1.ping(vm2.ip), "vm1 -> vm2 works again on the new port"
    srv = vm1.serve("tcp", 22)
    try:
        assert not vm2.tcp(vm1.ip, 22, timeout=1), "and still only one way"
    finally:
        srv.kill()

    ports = {p["name"]: p for p in seed.ctl.ok("GET", "/ctfw/v1/switches")["switches"][0]["ports"]}
    assert ports[vm2.port] == {"name": vm2.port, "ofport": 7, "vm": "vm2", "networks": []}


def test_vm_registered_before_its_port_exists(labenv: Lab) -> None:
    a = labenv.vm("a", 2, 1)
    labenv.ctl.ok(
        "PUT", "/ctfw/v1/vms/b", {"port": f"ct{labenv.token}b", "mac": "52:54:00:00:00:05"}
    )
    labenv.pair("a", "b")
    assert vm_view(labenv, "b")["ofport"] is None
    assert not any("-rel-rpl+trk" in f["text"] for f in labenv.flows())
    b = labenv.vm("b", 5, 5, mac="52:54:00:00:00:05", register=False)
    lab.wait_for(lambda: any("-rel-rpl+trk" in f["text"] for f in labenv.flows()), 5, "pair flows")
    assert a.ping(b.ip)


def test_controller_restart_restores_policy_without_touching_flows(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    assert vm1.ping(vm2.ip)
    before_vms = seed.ctl.ok("GET", "/ctfw/v1/vms")
    before_pairs = seed.ctl.ok("GET", "/ctfw/v1/pairs")
    before_flows = sorted(f["text"] for f in seed.flows())
    stored = seed.ctl.stored()
    assert {v["name"] for v in stored["vms"]} == {"vm1", "vm2"}

    syncs_before = seed.ctl.log_file.read_text().count("synced:")
    reports = len(seed.ctl.sync_reports())
    seed.ctl.stop(signal.SIGKILL)
    # fail_mode=secure: the switch keeps its flows while the controller is away.
    assert vm1.ping(vm2.ip), "forwarding goes on without the controller"
    dump = seed.ovs.dump_flows(seed.bridge)
    assert "ct(commit,zone=1,exec(set_field:0x10002->ct_mark))" in dump

    seed.ctl.start()
    found, added, deleted = seed.ctl.wait_in_sync(reports)
    assert found == len(before_flows) and (added, deleted) == (0, 0), "no flow-mod at connect"
    assert seed.ctl.ok("GET", "/ctfw/v1/vms") == before_vms
    assert seed.ctl.ok("GET", "/ctfw/v1/pairs") == before_pairs
    lab.wait_for(
        lambda: sorted(f["text"] for f in seed.flows()) == before_flows,
        5,
        "the same flows after restart",
    )
    # Nothing was re-added: every flow is older than the controller restart.
    syncs_after = seed.ctl.log_file.read_text().count("synced:")
    assert syncs_after == syncs_before, "the restarted controller sent no flow change"
    assert vm1.ping(vm2.ip)


def test_controller_restores_flows_the_switch_lost(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    before = sorted(f["text"] for f in seed.flows())
    reports = len(seed.ctl.sync_reports())
    seed.ctl.stop()
    seed.ovs.ofctl("del-flows", seed.bridge)
    assert not vm1.ping(vm2.ip, count=1), "no flows: fail_mode=secure drops everything"
    seed.ctl.start()
    assert seed.ctl.wait_in_sync(reports) == (0, len(before), 0)
    assert sorted(f["text"] for f in seed.flows()) == before
    # The switch confirmed the flows; its datapath cache and vm1's ARP retry catch up.
    lab.wait_for(lambda: vm1.ping(vm2.ip), 5, "pings through the restored flows")


def test_policy_made_while_switch_away_is_applied_on_connect(labenv: Lab) -> None:
    labenv.ovs.vsctl("del-controller", labenv.bridge)
    lab.wait_for(
        lambda: not labenv.ctl.ok("GET", "/ctfw/v1/switches")["switches"][0]["connected"],
        10,
        "the switch to disconnect",
    )
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b")
    # Removing the last controller made OVS flush the bridge; reconnecting restores all.
    labenv.ovs.set_controller(labenv.bridge, labenv.ctl.ofp_port)
    labenv.ctl.wait_connected(labenv.bridge)
    lab.wait_for(lambda: any("-rel-rpl+trk" in f["text"] for f in labenv.flows()), 5, "pair flows")
    assert a.ping(b.ip)


def test_connect_mends_flows_of_ours_that_were_changed_or_left_behind(seed: Lab) -> None:
    """Flows with our cookie tag that the policy does not make are deleted at connect,
    and a flow of ours whose actions were changed is put back; nothing else is sent."""
    reports = len(seed.ctl.sync_reports())
    before = sorted(f["text"] for f in seed.flows())
    seed.ctl.stop()
    tagged = "0xc7f0020000000063"  # a pair id the policy never had
    seed.ovs.ofctl(
        "add-flow", seed.bridge, f"cookie={tagged},table=1,priority=100,in_port=9 actions=NORMAL"
    )
    seed.ovs.ofctl(  # a shape the compiler never makes
        "add-flow", seed.bridge, f"cookie={tagged},table=0,priority=7,dl_vlan=5 actions=drop"
    )
    # The seed's reply line now drops instead of passing.
    reply_line = (
        "table=1,priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=3,"
        "dl_dst=52:54:00:60:84:ff"
    )
    seed.ovs.ofctl("mod-flows", seed.bridge, "--strict", f"{reply_line} actions=drop")
    seed.ctl.start()
    found, added, deleted = seed.ctl.wait_in_sync(reports)
    assert (found, added, deleted) == (len(before) + 2, 1, 2)
    assert sorted(f["text"] for f in seed.flows()) == before
    assert tagged[2:] not in seed.ovs.dump_flows(seed.bridge)
    assert seed.vms["vm1"].ping(seed.vms["vm2"].ip)
