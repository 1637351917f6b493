"""Many hosts on the switch side, without root (issue 12): where a VM is, which VMs of
other hosts a switch sees at its fabric port, and the lines those make."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fake_switch import FakeSwitch
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp

from ryu_ctfw.compiler import Attachment, compile_switch, render
from ryu_ctfw.policy import Group, PairRequest, Policy, Vm
from ryu_ctfw.switch import SwitchManager

MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
A, B = 0xA, 0xB


@pytest.fixture
def world() -> Iterator[dict]:
    """Host A (bridge brA: vnet0, fab) and host B (bridge brB: vnet0, vnet1, fab)."""
    policy = Policy()
    policy.fabric = {A: "fab", B: "fab"}
    mgr = SwitchManager(logging.getLogger("test"), lambda: policy, lambda dpid: 1)
    a = FakeSwitch(mgr, {ofp.OFPP_LOCAL: "brA", 1: "vnet0", 9: "fab"}, dpid=A)
    b = FakeSwitch(mgr, {ofp.OFPP_LOCAL: "brB", 1: "vnet0", 2: "vnet1", 9: "fab"}, dpid=B)
    mgr.connected(a)
    mgr.connected(b)
    yield {"policy": policy, "mgr": mgr, "a": mgr.switches[A], "b": mgr.switches[B]}
    for sw in mgr.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def test_a_vm_naming_its_switch_is_there_and_one_port_name_serves_two_hosts(world) -> None:
    policy, mgr = world["policy"], world["mgr"]
    policy.put_vm(Vm("vm1", "vnet0", MAC1, ("198.18.0.1",), switch="brA"))
    policy.put_vm(Vm("vm2", "vnet0", MAC2, ("198.18.0.2",), switch=f"{B:016x}"))
    assert mgr.locations(policy) == {"vm1": (A, 1), "vm2": (B, 1)}


def test_a_port_name_on_two_switches_binds_a_vm_that_names_neither_nowhere(world) -> None:
    policy, mgr = world["policy"], world["mgr"]
    policy.put_vm(Vm("vm1", "vnet0", MAC1))
    policy.put_vm(Vm("vm3", "vnet1", MAC3))
    assert mgr.locations(policy) == {"vm1": None, "vm3": (B, 2)}
    assert mgr.locate_vm("vm1") == "ambiguous"
    assert "vm1" not in mgr.attachments(world["a"]) and "vm1" not in mgr.attachments(world["b"])


def test_a_disconnected_switch_keeps_its_vms_where_they_were(world) -> None:
    policy, mgr = world["policy"], world["mgr"]
    policy.put_vm(Vm("vm3", "vnet1", MAC3))
    dp = world["b"].dp
    dp.is_active = False
    mgr.disconnected(dp)
    assert not world["b"].connected
    assert mgr.locations(policy) == {"vm3": (B, 2)}


def paired(policy: Policy) -> None:
    policy.put_vm(Vm("vm1", "vnet0", MAC1, ("198.18.0.1",), switch="brA"))
    policy.put_vm(Vm("vm2", "vnet0", MAC2, ("198.18.0.2",), switch="brB"))
    policy.put_vm(Vm("vm3", "vnet1", MAC3, ("198.18.0.3",), switch="brB"))
    policy.add_pair(PairRequest("vm1", "vm2", "tcp", "22"))


def test_a_switch_sees_at_its_fabric_port_only_the_remote_vms_paired_with_its_own(world):
    policy, mgr = world["policy"], world["mgr"]
    paired(policy)
    assert mgr.attachments(world["a"]) == {
        "vm1": Attachment(1, MAC1),
        "vm2": Attachment(9, MAC2, remote=True),
    }
    assert mgr.attachments(world["b"]) == {
        "vm2": Attachment(1, MAC2),
        "vm3": Attachment(2, MAC3),
        "vm1": Attachment(9, MAC1, remote=True),
    }
    # A pair between two VMs of B changes nothing that A sees.
    before = mgr.attachments(world["a"])
    policy.add_pair(PairRequest("vm2", "vm3"))
    assert mgr.attachments(world["a"]) == before
    # Without a fabric port a switch sees no VM of another host.
    policy.fabric = {}
    assert mgr.attachments(world["a"]) == {"vm1": Attachment(1, MAC1)}


def test_lines_across_the_fabric(world) -> None:
    policy, mgr = world["policy"], world["mgr"]
    paired(policy)
    on_a = render(compile_switch(policy, mgr.attachments(world["a"]), 1))
    on_b = render(compile_switch(policy, mgr.attachments(world["b"]), 2))
    # A: vm1's connection leaves by the fabric; vm2's replies come back from the fabric
    # with vm2's MAC, bound in table 0 to vm2's address.
    for state in ("+new", "+est"):  # opening and established: two lines
        assert (f"priority=100,ct_state={state}-rel-rpl+trk,tcp,in_port=1,"
                "dl_dst=52:54:00:00:00:02,tp_dst=22 actions=ct(commit,zone=1,"
                "exec(set_field:0x10002->ct_mark)),output:9") in on_a  # fmt: skip
    assert (
        "priority=100,ct_state=+est+rpl+trk,ct_mark=0x10002,in_port=9,"
        "dl_src=52:54:00:00:00:02,dl_dst=52:54:00:00:00:01 actions=output:1"
    ) in on_a
    assert (
        "priority=130,ip,in_port=9,dl_src=52:54:00:00:00:02,nw_src=198.18.0.2 "
        "actions=ct(table=1,zone=1)"
    ) in on_a
    assert "table=2, priority=100,dl_dst=52:54:00:00:00:02 actions=output:9" in on_a
    # Anything else from the fabric is a forged source, an event...
    assert "priority=106,in_port=9 actions=write_metadata:0x4,goto_table:3" in on_a
    # ...logged through the fabric port's meter: the remote VM has none of its own.
    log = [line for line in on_a.splitlines() if line.startswith("table=3,")]
    assert log == [  # the first four: no event of these
        "table=3, priority=200,ipv6,metadata=0x1,ipv6_dst=ff02::/16 actions=drop",
        "table=3, priority=200,ipv6,metadata=0x2,ipv6_dst=ff02::/16 actions=drop",
        "table=3, priority=200,ip,metadata=0x1,nw_dst=224.0.0.0/24 actions=drop",
        "table=3, priority=200,ip,metadata=0x2,nw_dst=224.0.0.0/24 actions=drop",
        "table=3, priority=100,in_port=1 actions=meter:1,CONTROLLER:128",
        "table=3, priority=100,in_port=9 actions=meter:9,CONTROLLER:128",
        "table=3, priority=0 actions=meter:65280,CONTROLLER:128",
    ]
    assert "52:54:00:00:00:03" not in on_a  # vm3 is paired with nothing on A
    # B: only vm1, from the fabric, may open ssh to vm2, and nothing to vm3.
    for state in ("+new", "+est"):
        assert (f"priority=100,ct_state={state}-rel-rpl+trk,tcp,in_port=9,"
                "dl_src=52:54:00:00:00:01,dl_dst=52:54:00:00:00:02,tp_dst=22 actions=ct("
                "commit,zone=2,exec(set_field:0x10002->ct_mark)),output:1") in on_b  # fmt: skip
    pair_lines = [line for line in on_b.splitlines() if "table=1, priority=100" in line]
    assert not [line for line in pair_lines if "dl_dst=52:54:00:00:00:03" in line]


def test_group_pairs_across_the_fabric_tell_remote_members_apart_by_mac(world) -> None:
    policy, mgr = world["policy"], world["mgr"]
    paired(policy)
    policy.put_group(Group("web", ("vm2", "vm3")))
    policy.add_pair(PairRequest("web", "vm1", "udp", "53"))
    on_a = render(compile_switch(policy, mgr.attachments(world["a"]), 1))
    assert "priority=90,in_port=9,dl_src=52:54:00:00:00:02 actions=conjunction(" in on_a
    assert "priority=90,in_port=9,dl_src=52:54:00:00:00:03 actions=conjunction(" in on_a
    assert "conj_id=" in on_a and ",in_port=9,dl_src=52:54:00:00:00:03 actions=ct(commit" in on_a


def test_a_vm_naming_a_switch_not_seen_yet_is_on_another_host(world) -> None:
    # After a controller restart the first switch to connect must keep its lines for the
    # VMs of hosts that have not reconnected yet (a hitless restart sends no flow-mod).
    policy, mgr = world["policy"], world["mgr"]
    policy.put_vm(Vm("vm1", "vnet0", MAC1, ("198.18.0.1",), switch="brA"))
    policy.put_vm(Vm("vm4", "vnet4", MAC3, ("198.18.0.4",), switch="brC"))
    policy.add_pair(PairRequest("vm1", "vm4"))
    assert mgr.attachments(world["a"])["vm4"] == Attachment(9, MAC3, remote=True)
    assert "vm4" not in mgr.locations(policy)  # its view: not placed
