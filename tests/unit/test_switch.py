"""The switch side without a switch: learning a MAC, attachments, meters, the handshake.

Decoding flows read back from a switch is wire.py's (tests in test_wire.py); here is what
SwitchManager decides: which packet-in teaches which VM its MAC (the policy stores it, through
the callback the firewall gives), which MAC each VM is compiled with, and what it sends a
switch besides flows.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from ryu.lib import hub
from ryu.lib.packet import arp, ethernet, icmpv6, ipv6, packet
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from shapes import MAC1, MAC2, MAC3, MAC5

from ryu_ctfw import channel, wire
from ryu_ctfw.channel import LEARN_BURST, LEARN_RATE
from ryu_ctfw.compiler import CONTROLLER, Attachment, Flow, Match, Meter, Output, cookie
from ryu_ctfw.flowset import Diff
from ryu_ctfw.policy import PairRequest, Policy, Vm
from ryu_ctfw.switch import (
    OFPC_FRAG_NX_MATCH,
    Switch,
    SwitchError,
    SwitchManager,
    SyncResult,
    _sender_mac,
)

# --- learning a MAC ------------------------------------------------------------------------


class Learned:
    """The firewall's side of learning: records what it is asked to store."""

    def __init__(self, policy: Policy, fail: bool = False) -> None:
        self.policy = policy
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def __call__(self, vm: str, mac: str) -> None:
        self.calls.append((vm, mac))
        if self.fail:
            raise RuntimeError("the state file is gone")
        self.policy.learn_mac(vm, mac)


def manager(policy: Policy, fail: bool = False) -> tuple[SwitchManager, Switch, Learned]:
    learned = Learned(policy, fail)
    mgr = SwitchManager(logging.getLogger("test"), lambda: policy, lambda dpid: 1, learned)
    sw = Switch(1, dp=object(), name="br0", ports={"tap2": 2, "tap6": 5, "tap7": 6})
    mgr.switches[1] = sw
    return mgr, sw, learned


def arp_from(src: str, sender: str | None = None) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src, 0x0806))
    pkt.add_protocol(arp.arp_ip(1, sender or src, "198.18.0.4", "00:00:00:00:00:00", "198.18.0.1"))
    pkt.serialize()
    return bytes(pkt.data)


def nd_from(src: str, type_: int = 135) -> bytes:
    body = icmpv6.nd_neighbor(dst="fe80::1")
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("33:33:ff:00:00:01", src, 0x86DD))
    pkt.add_protocol(ipv6.ipv6(src="::", dst="ff02::1:ff00:1", nxt=58))
    pkt.add_protocol(icmpv6.icmpv6(type_=type_, data=body))
    pkt.serialize()
    return bytes(pkt.data)


def packet_in(mgr: SwitchManager, in_port: int, data: bytes) -> None:
    mgr.packet_in(
        SimpleNamespace(id=1),
        SimpleNamespace(table_id=0, cookie=0, match={"in_port": in_port}, data=data),
    )
    hub.sleep(0)  # the store runs in a green thread of its own
    hub.sleep(0)


def learning_policy() -> Policy:
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1))
    policy.put_vm(Vm("vm4", "tap6"))
    return policy


def test_the_sender_mac_of_an_arp_or_a_solicitation() -> None:
    assert _sender_mac(arp_from(MAC5)) == MAC5
    assert _sender_mac(nd_from(MAC5)) == MAC5
    assert _sender_mac(arp_from(MAC5.upper())) == MAC5
    assert _sender_mac(arp_from(MAC5, sender=MAC3)) is None  # eth src and ARP sender differ
    assert _sender_mac(nd_from(MAC5, type_=136)) is None  # an advertisement teaches nothing
    assert _sender_mac(arp_from("01:00:5e:00:00:01")) is None  # multicast
    assert _sender_mac(arp_from("00:00:00:00:00:00")) is None
    assert _sender_mac(b"") is None
    assert _sender_mac(b"garbage") is None


@pytest.mark.parametrize("data", [arp_from(MAC5), nd_from(MAC5)], ids=["arp", "nd-ns"])
def test_a_vm_without_mac_is_learned_from_its_arp_or_ns(data: bytes) -> None:
    policy = learning_policy()
    mgr, sw, learned = manager(policy)
    packet_in(mgr, 5, data)
    assert learned.calls == [("vm4", MAC5)]
    assert sw.learning == set()  # done storing
    assert sw.packet_ins == 1
    assert policy.vms["vm4"].learned_mac == MAC5
    assert mgr.attachments(sw) == {"vm1": Attachment(2, MAC1), "vm4": Attachment(5, MAC5)}
    # The learned MAC sticks: a VM with a known MAC is not learned again.
    packet_in(mgr, 5, arp_from(MAC3))
    assert learned.calls == [("vm4", MAC5)]
    assert sw.packet_ins == 2


def test_nothing_is_learned_for_a_vm_with_a_mac_or_from_a_lying_arp() -> None:
    policy = learning_policy()
    mgr, sw, learned = manager(policy)
    packet_in(mgr, 2, arp_from(MAC5))  # vm1 has a configured MAC
    packet_in(mgr, 5, arp_from(MAC5, sender=MAC3))  # eth src and ARP sender disagree
    packet_in(mgr, 5, nd_from(MAC5, type_=136))  # an NA
    packet_in(mgr, 9, arp_from(MAC5))  # no VM on that port
    packet_in(mgr, 6, arp_from(MAC5))  # a port with no VM either (tap7)
    assert learned.calls == []
    assert sw.packet_ins == 5  # counted all the same


def test_a_multicast_source_mac_is_not_learned_and_does_not_raise() -> None:
    mgr, _sw, learned = manager(learning_policy())
    packet_in(mgr, 5, arp_from("01:00:5e:00:00:01"))
    assert learned.calls == []


@pytest.mark.parametrize("how", ["configured", "learned"])
def test_a_mac_another_vm_on_the_switch_has_is_not_learned(how: str) -> None:
    policy = learning_policy()
    policy.put_vm(Vm("vm5", "tap7", MAC2 if how == "configured" else None))
    if how == "learned":
        policy.learn_mac("vm5", MAC2)
    mgr, _sw, learned = manager(policy)
    packet_in(mgr, 5, arp_from(MAC2))
    packet_in(mgr, 5, arp_from(MAC1))  # vm1's
    assert learned.calls == []
    packet_in(mgr, 5, arp_from(MAC3))  # free
    assert learned.calls == [("vm4", MAC3)]


def test_a_mac_a_vm_on_another_switch_has_can_be_learned() -> None:
    policy = learning_policy()
    policy.put_vm(Vm("far", "tap99", MAC5))  # tap99 is not on this switch
    mgr, _sw, learned = manager(policy)
    packet_in(mgr, 5, arp_from(MAC5))
    assert learned.calls == [("vm4", MAC5)]


def test_packet_ins_while_a_mac_is_being_stored_store_it_once() -> None:
    policy = learning_policy()
    mgr, sw, learned = manager(policy)
    dp, msg = (
        SimpleNamespace(id=1),
        SimpleNamespace(table_id=0, cookie=0, match={"in_port": 5}, data=arp_from(MAC5)),
    )
    mgr.packet_in(dp, msg)
    assert sw.learning == {"vm4"}  # storing: it waits for the switches, in its own thread
    mgr.packet_in(
        dp, SimpleNamespace(table_id=0, cookie=0, match={"in_port": 5}, data=arp_from(MAC3))
    )
    hub.sleep(0)
    hub.sleep(0)
    assert learned.calls == [("vm4", MAC5)]
    assert sw.learning == set()


def test_a_failed_store_is_logged_and_learning_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    policy = learning_policy()
    mgr, sw, learned = manager(policy, fail=True)
    packet_in(mgr, 5, arp_from(MAC5))
    assert learned.calls == [("vm4", MAC5)]
    assert sw.learning == set()
    assert "storing the learned MAC of VM vm4 failed" in caplog.text
    packet_in(mgr, 5, arp_from(MAC5))  # tried again on the next packet
    assert learned.calls == [("vm4", MAC5)] * 2


def test_a_packet_in_from_an_unknown_switch_is_ignored() -> None:
    mgr, _sw, learned = manager(learning_policy())
    mgr.packet_in(
        SimpleNamespace(id=2), SimpleNamespace(table_id=0, cookie=0, match={"in_port": 5}, data=b"")
    )
    assert learned.calls == []


# --- attachments ----------------------------------------------------------------------------


def test_attachments_carry_the_configured_mac_else_the_learned_one() -> None:
    policy = learning_policy()
    mgr, sw, _ = manager(policy)
    assert mgr.attachments(sw) == {"vm1": Attachment(2, MAC1), "vm4": Attachment(5, None)}
    policy.learn_mac("vm4", MAC5)
    assert mgr.attachments(sw)["vm4"] == Attachment(5, MAC5)
    del sw.ports["tap6"]
    assert "vm4" not in mgr.attachments(sw)
    sw.ports["tap6"] = 8  # back, renumbered: the learned MAC is still the VM's
    assert mgr.attachments(sw)["vm4"] == Attachment(8, MAC5)


def test_a_learned_mac_another_vm_here_is_configured_with_is_not_used() -> None:
    policy = learning_policy()
    policy.learn_mac("vm4", MAC2)  # learned on another switch, say
    mgr, sw, _ = manager(policy)
    assert mgr.attachments(sw)["vm4"] == Attachment(5, MAC2)
    policy.put_vm(Vm("vm5", "tap7", MAC2))
    assert mgr.attachments(sw) == {
        "vm1": Attachment(2, MAC1),
        "vm4": Attachment(5, None),  # learning again
        "vm5": Attachment(6, MAC2),
    }
    # A configured MAC on another switch does not shadow it.
    policy.put_vm(Vm("vm5", "tap99", MAC2))
    assert mgr.attachments(sw)["vm4"] == Attachment(5, MAC2)


# --- what a switch is sent besides flows ------------------------------------------------------


class FakeDp:
    """A datapath that records what it is sent and answers barriers at once; meter-mods
    ADDing a meter in `existing` fail as OVS fails them, others as told by `refuse`."""

    def __init__(self, mgr: SwitchManager, existing: set[int] = frozenset(), refuse: str = ""):  # type: ignore[assignment]
        self.id = 1
        self.ofproto, self.ofproto_parser = ofp, parser
        self.ports: dict[int, Any] = {}
        self.xid = 0
        self.sent: list[Any] = []
        self.mgr, self.existing, self.refuse = mgr, existing, refuse

    def set_xid(self, msg: Any) -> None:
        self.xid += 1
        msg.xid = self.xid

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)
        sw = self.mgr.switches.get(self.id)
        if isinstance(msg, parser.OFPMeterMod) and sw is not None:
            if msg.command == ofp.OFPMC_ADD and msg.meter_id in self.existing:
                sw.errors[msg.xid] = "OFPET_METER_MOD_FAILED OFPMMFC_METER_EXISTS"
            elif self.refuse:
                sw.errors[msg.xid] = self.refuse
        if isinstance(msg, parser.OFPBarrierRequest):
            self.mgr.reply(self, SimpleNamespace(xid=msg.xid))


def meter_manager(**dp_args: Any) -> tuple[SwitchManager, Switch, FakeDp]:
    mgr = SwitchManager(logging.getLogger("test"), Policy, lambda dpid: 1)
    dp = FakeDp(mgr, **dp_args)
    sw = Switch(1, dp=dp, name="br0")
    mgr.switches[1] = sw
    return mgr, sw, dp


def meter_mods(dp: FakeDp) -> list[tuple[int, int]]:
    return [(m.command, m.meter_id) for m in dp.sent if isinstance(m, parser.OFPMeterMod)]


def test_meters_are_created_once_at_the_learning_rate() -> None:
    _mgr, sw, dp = meter_manager()
    channel.ensure_meters(sw, {7, 5})
    assert meter_mods(dp) == [(ofp.OFPMC_ADD, 5), (ofp.OFPMC_ADD, 7)]
    mod = next(m for m in dp.sent if isinstance(m, parser.OFPMeterMod))
    assert mod.flags == ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    assert [(type(b), b.rate, b.burst_size) for b in mod.bands] == [
        (parser.OFPMeterBandDrop, LEARN_RATE, LEARN_BURST)
    ]
    assert sw.meters == {5, 7}
    dp.sent.clear()
    channel.ensure_meters(sw, {5, 7})
    assert dp.sent == []  # known to exist


def test_a_meter_left_by_an_earlier_run_is_set_to_our_rate() -> None:
    _mgr, sw, dp = meter_manager(existing={5})
    channel.ensure_meters(sw, {5})
    assert meter_mods(dp) == [(ofp.OFPMC_ADD, 5), (ofp.OFPMC_MODIFY, 5)]
    assert sw.meters == {5}


def test_a_meter_the_switch_refuses_is_a_switch_error() -> None:
    _mgr, sw, _dp = meter_manager(refuse="OFPET_METER_MOD_FAILED OFPMMFC_OUT_OF_METERS")
    with pytest.raises(SwitchError, match=r"meter 5.*OUT_OF_METERS"):
        channel.ensure_meters(sw, {5})
    assert sw.meters == set()


LEARN_FLOW = Flow(0, 122, Match(in_port=5, eth_type=0x0806), (Meter(5), CONTROLLER), cookie(3, 5))
PORT_FLOW = Flow(2, 100, Match(eth_dst=MAC1), (Output(2),), cookie(1, 2))


def test_meters_are_ensured_before_the_flows_that_use_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mgr, sw, _dp = meter_manager()
    calls: list[Any] = []
    monkeypatch.setattr(channel, "ensure_meters", lambda sw, ids: calls.append(("meters", ids)))
    monkeypatch.setattr(channel, "bundle", lambda sw, msgs: calls.append(("bundle", len(msgs))))
    assert mgr._send_diff(sw, Diff(add=[PORT_FLOW, LEARN_FLOW]), [], SyncResult(1))
    assert calls == [("meters", {5}), ("bundle", 2)]
    calls.clear()
    assert mgr._send_diff(sw, Diff(delete=[LEARN_FLOW]), [], SyncResult(1))
    assert calls == [("meters", set()), ("bundle", 1)]  # deleting needs no meter


def test_a_refused_meter_sends_no_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    mgr, sw, _dp = meter_manager(refuse="OFPET_METER_MOD_FAILED OFPMMFC_OUT_OF_METERS")
    bundles: list[Any] = []
    monkeypatch.setattr(channel, "bundle", lambda sw, msgs: bundles.append(msgs))
    result = SyncResult(1)
    assert not mgr._send_diff(sw, Diff(add=[LEARN_FLOW]), [], result)
    assert bundles == []
    assert len(result.errors) == 1 and "meter" in result.errors[0]


def test_a_connecting_switch_is_told_to_show_l4_ports_of_first_fragments() -> None:
    mgr = SwitchManager(logging.getLogger("test"), Policy, lambda dpid: 1)
    dp = FakeDp(mgr)
    mgr.connected(dp)
    try:
        configs = [m for m in dp.sent if isinstance(m, parser.OFPSetConfig)]
        assert [(m.flags, m.miss_send_len) for m in configs] == [
            (OFPC_FRAG_NX_MATCH, ofp.OFPCML_NO_BUFFER)
        ]
        assert OFPC_FRAG_NX_MATCH == 3  # OVS's nx-match fragment handling
        assert mgr.switches[1].meters == set()  # read nothing about meters yet: ensure again
    finally:
        hub.kill(mgr.switches[1].worker)


def test_stale_entries_are_deleted_before_the_flows_that_replace_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A switch that writes match fields in another order hands back bytes that differ from
    # ours for the same match: the reconcile deletes its entry and adds ours. Sent the other
    # way round, the strict delete would remove the flow the add had just put back.
    mgr, sw, _dp = meter_manager()
    bundles: list[list[bytes]] = []
    monkeypatch.setattr(channel, "bundle", lambda sw, msgs: bundles.append(msgs))
    key = wire.wire_key(PORT_FLOW)
    swapped = (key[0], key[1], key[2][:4] + key[2][4:][::-1])  # same flow, other byte order
    stale = wire.RawFlow(swapped, PORT_FLOW.cookie, b"", 0, 0, 0.0)
    assert mgr._send_diff(sw, Diff(add=[PORT_FLOW], delete=[LEARN_FLOW]), [stale], SyncResult(1))
    (msgs,) = bundles
    assert msgs == [
        wire.flow_delete(*swapped, PORT_FLOW.cookie),
        wire.flow_delete(*wire.wire_key(LEARN_FLOW), LEARN_FLOW.cookie),
        wire.flow_add(PORT_FLOW),
    ]


# --- connections are tracked per connection, not per dpid -----------------------------------


class SyncingDp(FakeDp):
    """A FakeDp a sync can run against: it answers flow-stats (the switch holds none of
    our flows) and bundle commits at once, or, with `answer=False`, nothing at all (a
    connection that died unnoticed)."""

    def __init__(self, mgr: SwitchManager, answer: bool = True) -> None:
        super().__init__(mgr)
        self.answer = answer
        self.is_active = True
        self.raw: list[bytes] = []
        names = {ofp.OFPP_LOCAL: b"br0", 2: b"tap2", 3: b"tap3"}
        self.ports = {no: SimpleNamespace(port_no=no, name=n) for no, n in names.items()}

    def send(self, data: bytes) -> None:  # bundled flow-mods, packed by wire.py
        self.raw.append(data)

    def send_msg(self, msg: Any) -> None:
        if not self.answer:
            self.sent.append(msg)
            return
        super().send_msg(msg)
        if isinstance(msg, parser.OFPFlowStatsRequest):
            reply = parser.OFPFlowStatsReply(self)
            reply.xid, reply.flags, reply.body = msg.xid, 0, []
            self.mgr.reply(self, reply)
        elif isinstance(msg, parser.ONFBundleCtrlMsg) and msg.type == ofp.ONF_BCT_COMMIT_REQUEST:
            self.mgr.reply(self, SimpleNamespace(xid=msg.xid))

    def asked(self, kind: type) -> list[Any]:
        return [m for m in self.sent if isinstance(m, kind)]


def pair_policy() -> Policy:
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1, ips=("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap3", MAC2, ips=("198.18.0.2",)))
    policy.add_pair(PairRequest("vm1", "vm2"))
    return policy


def syncing_manager() -> SwitchManager:
    policy = pair_policy()
    return SwitchManager(logging.getLogger("test"), lambda: policy, lambda dpid: 1)


def view_flows(mgr: SwitchManager) -> Any:
    try:
        return mgr.flow_stats(1)
    except SwitchError as e:
        return e


def settle(mgr: SwitchManager, until: Any, rounds: int = 200) -> None:
    for _ in range(rounds):
        if until():
            return
        hub.sleep(0.01)
    raise AssertionError("the workers did not get there")


def kill_workers(mgr: SwitchManager) -> None:
    for sw in mgr.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def test_a_second_connection_replaces_the_first_and_a_late_disconnect_leaves_it() -> None:
    mgr = syncing_manager()
    old, new = SyncingDp(mgr, answer=False), SyncingDp(mgr)
    try:
        mgr.connected(old)
        sw = mgr.switches[1]
        settle(mgr, lambda: old.asked(parser.OFPFlowStatsRequest))  # read-back on its way
        view = hub.spawn(view_flows, mgr)  # a flows view waiting on the old connection
        settle(mgr, lambda: len(sw.pending) == 2)
        old_worker = sw.worker
        t0 = time.monotonic()
        mgr.connected(new)
        # What was asked on the old connection fails now, not after a timeout.
        failed = view.wait()
        assert isinstance(failed, SwitchError) and "reconnected" in str(failed)
        assert time.monotonic() - t0 < 1
        assert old_worker.dead and sw.worker is not old_worker
        assert sw.dp is new and sw.standby == [old]
        # The new connection is read back and synced: the whole policy in one bundle.
        (result,) = mgr.sync_all(timeout=2)
        assert result.errors == []
        assert new.asked(parser.OFPFlowStatsRequest) and new.raw
        assert sw.flows is not None and len(sw.flows.flows()) > 0
        # A late answer and a late error on the old connection change nothing.
        stale_xid = old.asked(parser.OFPFlowStatsRequest)[0].xid
        mgr.reply(old, SimpleNamespace(xid=stale_xid, flags=0))
        mgr.error(old, SimpleNamespace(xid=stale_xid, type=1, code=1))
        assert sw.errors == {}
        # The old connection's late disconnect leaves the switch connected on the new one.
        mgr.disconnected(old)
        assert sw.connected and sw.dp is new and sw.standby == []
        assert sw.flows is not None and not sw.worker.dead
        # And the new one closing is a disconnect.
        mgr.disconnected(new)
        assert not sw.connected and sw.flows is None
    finally:
        kill_workers(mgr)


def test_when_the_connection_in_use_closes_the_other_open_one_takes_over() -> None:
    # A bridge with two controller targets: both connections stay open; closing the one in
    # use (the newer) falls back to the other, which is read back and synced again.
    mgr = syncing_manager()
    first, second = SyncingDp(mgr), SyncingDp(mgr)
    try:
        mgr.connected(first)
        assert mgr.sync_all(timeout=2)[0].errors == []
        mgr.connected(second)
        assert mgr.sync_all(timeout=2)[0].errors == []
        sw = mgr.switches[1]
        first.sent.clear()
        mgr.disconnected(second)
        assert sw.connected and sw.dp is first and sw.standby == []
        assert sw.flows is None  # read back again before changing anything
        assert mgr.sync_all(timeout=2)[0].errors == []
        assert first.asked(parser.OFPFlowStatsRequest) and sw.flows is not None
        # A connection that Ryu already marked dead does not take over.
        third = SyncingDp(mgr)
        mgr.connected(third)
        first.is_active = False
        mgr.disconnected(third)
        assert not sw.connected
        mgr.disconnected(first)  # its own late disconnect: nothing left to do
        assert not sw.connected
    finally:
        kill_workers(mgr)


def test_replies_and_errors_from_a_connection_not_in_use_are_ignored() -> None:
    mgr = syncing_manager()
    dp, other = SyncingDp(mgr, answer=False), SyncingDp(mgr, answer=False)
    try:
        mgr.connected(dp)
        sw = mgr.switches[1]
        settle(mgr, lambda: len(sw.pending) == 1)
        (xid,) = sw.pending
        pending = sw.pending[xid]
        other.id = dp.id  # same dpid, another connection (xids are per connection)
        mgr.reply(other, SimpleNamespace(xid=xid, flags=0))
        mgr.error(other, SimpleNamespace(xid=xid, type=1, code=1))
        assert not pending.done.is_set() and pending.replies == [] and pending.error is None
        assert sw.errors == {}
    finally:
        kill_workers(mgr)
