"""The sync worker against a fake switch (fake_switch.py): reconcile, bundles, refusals,
timeouts, a disconnect mid-sync, coalesced requests. What integration tests show on a
real Open vSwitch, here without root and in milliseconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_switch import FakeSwitch, everything, is_commit, is_read_back, raw_flow
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser
from shapes import MAC1, MAC2

from ryu_ctfw import channel, wire
from ryu_ctfw.compiler import Attachment, Flow, Output
from ryu_ctfw.flowset import FlowSet
from ryu_ctfw.policy import PairRequest, Policy, Vm
from ryu_ctfw.switch import SwitchManager, SyncResult

SHORT = 0.05  # REPLY_TIMEOUT in these tests: a silent switch is found out at once


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "REPLY_TIMEOUT", SHORT)


def two_vms() -> Policy:
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1, ips=("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap3", MAC2, ips=("198.18.0.2",)))
    return policy


def paired() -> Policy:
    policy = two_vms()
    policy.add_pair(PairRequest("vm1", "vm2"))
    return policy


def compiled(policy: Policy) -> list[Flow]:
    """What the switch should hold for `policy` (vm1 on ofport 2, vm2 on 3, zone 1)."""
    attached = {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2)}
    return list(FlowSet.build(policy, attached, 1).flows().values())


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    """A manager whose policy a test may replace (world["policy"]), and its workers
    killed afterwards."""
    state: dict[str, Any] = {"policy": paired()}
    mgr = SwitchManager(logging.getLogger("test"), lambda: state["policy"], lambda dpid: 1)
    state["mgr"] = mgr
    yield state
    for sw in mgr.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def settle(until: Callable[[], object], seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if until():
            return
        hub.sleep(0.01)
    raise AssertionError("the worker did not get there")


def sync(mgr: SwitchManager) -> SyncResult:
    (result,) = mgr.sync_all(timeout=5)
    return result


def unknown_because(result: SyncResult, why: str) -> bool:
    """Neither confirmed nor refused, for exactly `why` (the reason alone: the bundle's
    error also carries its xids, which must not reach a 504's text)."""
    return result.errors == [] and result.unknown == [why]


def bundled(switch: FakeSwitch, n: int = -1) -> list[bytes]:
    """The flow-mods of a committed bundle, as sent (xid 0)."""
    return [m.data for m in switch.committed[n]]


# --- connect: read back, send only the difference ------------------------------------------


def test_first_connect_reads_back_and_sends_only_the_difference(world: dict) -> None:
    mgr = world["mgr"]
    want = compiled(world["policy"])
    kept, changed, missing = want[0], want[1], want[2]
    other_actions = changed._replace(actions=(Output(99),))
    stale = raw_flow(compiled(two_vms())[0]._replace(priority=7))  # ours, no longer wanted
    held = [raw_flow(f) for f in want if f not in (changed, missing)]
    switch = FakeSwitch(mgr, holds=[*held, raw_flow(other_actions), stale], parts=3)
    mgr.connected(switch)
    result = sync(mgr)
    assert result == SyncResult(1)
    (read,) = switch.asked(parser.OFPFlowStatsRequest)
    assert (read.cookie, read.cookie_mask) != (0, 0)  # only flows with our cookie tag
    # One bundle: the stale flow deleted, the changed one and the missing one added; the
    # flows the switch already held exactly are not sent again.
    assert len(switch.committed) == 1
    assert bundled(switch) == [
        wire.flow_delete(*stale.key, stale.cookie),
        *sorted([wire.flow_add(changed), wire.flow_add(missing)], key=bundled_order(want)),
    ]
    assert wire.flow_add(kept) not in bundled(switch)
    assert switch.holds(want)
    assert mgr.switches[1].flows is not None


def bundled_order(want: list[Flow]) -> Callable[[bytes], int]:
    """Adds go in the order the flow set lists its flows."""
    order = {wire.flow_add(f): n for n, f in enumerate(want)}
    return lambda data: order[data]


def test_a_switch_already_in_sync_is_sent_no_bundle(world: dict) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr, holds=map(raw_flow, compiled(world["policy"])))
    mgr.connected(switch)
    assert sync(mgr) == SyncResult(1)
    assert switch.asked(parser.OFPFlowStatsRequest) and switch.commits() == []


def test_after_the_read_back_a_change_sends_only_its_own_flows(world: dict) -> None:
    mgr = world["mgr"]
    world["policy"] = two_vms()
    switch = FakeSwitch(mgr)
    mgr.connected(switch)
    assert sync(mgr) == SyncResult(1)
    world["policy"] = paired()
    assert sync(mgr) == SyncResult(1)
    assert len(switch.asked(parser.OFPFlowStatsRequest)) == 1  # not read back again
    pair_flows = set(compiled(paired())) - set(compiled(two_vms()))
    assert set(bundled(switch)) == {wire.flow_add(f) for f in pair_flows}
    assert switch.holds(compiled(paired()))


# --- refused: errors, and read back next time ----------------------------------------------


def test_a_refused_bundle_is_an_error_and_the_flows_are_read_back_next_time(
    world: dict,
) -> None:
    mgr = world["mgr"]
    world["policy"] = two_vms()
    switch = FakeSwitch(mgr)
    mgr.connected(switch)
    assert sync(mgr) == SyncResult(1)
    before = dict(switch.table)
    world["policy"] = paired()
    switch.refuse = (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD)
    result = sync(mgr)
    assert result.unknown == []
    (first_refused,) = [m for m in switch.refused[-1][:1]]
    assert result.errors == [
        f"switch rejected {flow_text(first_refused)}: OFPET_BAD_MATCH OFPBMC_BAD_FIELD"
    ]
    assert switch.table == before  # the bundle is atomic: nothing of it applied
    sw = mgr.switches[1]
    assert sw.flows is None  # what the switch holds is not known: read it back
    switch.refuse = None
    assert sync(mgr) == SyncResult(1)
    assert len(switch.asked(parser.OFPFlowStatsRequest)) == 2
    assert switch.holds(compiled(paired()))


def flow_text(mod: Any) -> str:
    """How a refused add is named: the flow in ovs-ofctl syntax."""
    (flow,) = [f for f in compiled(paired()) if wire.flow_add(f) == mod.data]
    return flow.text()


def test_a_refused_commit_with_no_flow_named_says_the_change_was_refused(
    world: dict,
) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr)
    switch.refuse = (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD)
    original = switch._commit

    def commit_error_only(msg: Any) -> list[tuple[str, Any]]:
        return [a for a in original(msg) if a[1].xid == msg.xid]

    switch._commit = commit_error_only  # type: ignore[method-assign]
    mgr.connected(switch)
    result = sync(mgr)
    assert result.errors == ["switch refused the change: experimenter 0x4f4e4600 error 2305"]
    assert switch.table == {}


# --- silence: unknown, not refused -----------------------------------------------------------


def test_a_silent_switch_gives_unknown_after_the_timeout(world: dict) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr)
    switch.silence = everything
    mgr.connected(switch)
    t0 = time.monotonic()
    result = sync(mgr)
    assert result == SyncResult(1, unknown=["switch did not answer in time"])
    assert time.monotonic() - t0 < 1  # the patched timeout, not the real 5 s
    assert mgr.switches[1].flows is None and mgr.switches[1].pending == {}


def test_a_commit_left_unanswered_is_unknown_and_read_back_next_time(world: dict) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr)
    switch.silence = is_commit
    mgr.connected(switch)
    result = sync(mgr)
    # The switch may have applied it: not "refused", and the next sync reads it back.
    assert unknown_because(result, "switch did not answer in time")
    assert switch.holds(compiled(world["policy"]))  # it did, here
    switch.silence = lambda msg: False
    assert sync(mgr) == SyncResult(1)
    assert len(switch.asked(parser.OFPFlowStatsRequest)) == 2
    assert len(switch.commits()) == 1  # read back in sync: nothing sent again


def test_a_slow_read_back_is_waited_for_while_parts_keep_coming(world: dict) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr, holds=map(raw_flow, compiled(world["policy"])), parts=4)
    deliver = switch._deliver

    def slowly(answers: list[tuple[str, Any]]) -> None:
        for answer in answers:  # each part within the timeout, all of them beyond it
            hub.sleep(SHORT * 0.6)
            deliver([answer])

    switch._deliver = slowly  # type: ignore[method-assign]
    mgr.connected(switch)
    assert sync(mgr) == SyncResult(1)
    assert switch.commits() == []


# --- disconnect mid-sync ------------------------------------------------------------------


@pytest.mark.parametrize("when", [is_read_back, is_commit], ids=["read-back", "commit"])
def test_a_disconnect_mid_sync_gives_unknown_and_the_worker_ends(
    world: dict, when: Callable[[Any], bool]
) -> None:
    mgr = world["mgr"]
    switch = FakeSwitch(mgr)
    switch.disconnect = when
    mgr.connected(switch)
    sw = mgr.switches[1]
    worker = sw.worker
    assert unknown_because(sync(mgr), "switch disconnected")
    settle(lambda: worker.dead)
    assert not sw.connected and sw.flows is None and sw.pending == {}
    assert mgr.sync_all(timeout=1) == []  # nothing connected to sync


def test_a_switch_reconnecting_after_a_disconnect_mid_commit_is_read_back(
    world: dict,
) -> None:
    mgr = world["mgr"]
    gone = FakeSwitch(mgr)
    gone.disconnect = is_commit
    mgr.connected(gone)
    assert unknown_because(sync(mgr), "switch disconnected")
    back = FakeSwitch(mgr, holds=gone.table.values())
    mgr.connected(back)
    assert sync(mgr) == SyncResult(1)
    assert back.asked(parser.OFPFlowStatsRequest)
    assert back.holds(compiled(world["policy"]))


def test_a_commit_in_flight_on_a_replaced_open_connection_is_waited_for(world: dict) -> None:
    # A pair's bundle is committed on the connection in use; before the switch applies
    # it, the pair is revoked and a second connection (a second controller target)
    # replaces the first, which stays open. Read back at once, the new connection would
    # miss the pair's flows, and the old commit would add them after: a revoked pair
    # allowed. The read-back waits for a barrier on the old connection first.
    mgr = world["mgr"]
    world["policy"] = two_vms()
    old = FakeSwitch(mgr)
    mgr.connected(old)
    assert sync(mgr) == SyncResult(1)
    old.hold_commits = True
    world["policy"] = paired()
    mgr.request_sync(1)
    settle(lambda: old.held)  # sent, not yet applied
    world["policy"] = two_vms()
    new = FakeSwitch(mgr, table=old.table)
    mgr.connected(new)
    assert sync(mgr) == SyncResult(1)
    old.apply_held()  # whatever the old connection still had takes effect by now at last
    assert old.asked(parser.OFPBarrierRequest)
    assert new.holds(compiled(two_vms())), "the revoked pair's flows are gone"


def test_a_replaced_connection_that_closes_ends_the_wait(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel, "FENCE_TIMEOUT", 5.0)  # the close, not a timeout, ends it
    mgr = world["mgr"]
    old = FakeSwitch(mgr)
    mgr.connected(old)
    assert sync(mgr) == SyncResult(1)
    old.silence = lambda msg: isinstance(msg, parser.OFPBarrierRequest)
    new = FakeSwitch(mgr, table=old.table)
    mgr.connected(new)
    settle(lambda: old.asked(parser.OFPBarrierRequest))
    t = time.monotonic()
    old.is_active = False
    mgr.disconnected(old)
    assert sync(mgr) == SyncResult(1)
    assert time.monotonic() - t < 1.0
    assert new.asked(parser.OFPFlowStatsRequest)


# --- requests made while a sync runs coalesce -------------------------------------------------


def test_requests_while_a_sync_runs_coalesce_into_one_more_sync(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = world["mgr"]
    world["policy"] = two_vms()
    switch = FakeSwitch(mgr)
    syncs: list[int] = []
    real_sync = mgr._sync

    def counted(sw: Any) -> SyncResult:
        syncs.append(sw.requested)
        return real_sync(sw)

    monkeypatch.setattr(mgr, "_sync", counted)
    switch.gate.clear()  # hold the switch's answers: the first sync stays in flight
    mgr.connected(switch)
    sw = mgr.switches[1]
    settle(lambda: switch.asked(parser.OFPFlowStatsRequest))
    world["policy"] = paired()
    gens = [mgr.request_sync(1) for _ in range(3)]
    waits = []
    for gen in gens:
        ev = hub.Event()
        sw.waiters.append((gen, ev))
        waits.append(ev)
    switch.gate.set()
    for ev in waits:
        assert ev.wait(timeout=5)
    settle(lambda: sw.finished == sw.requested)
    hub.sleep(SHORT)  # room for a sync too many, if there were one
    assert syncs == [1, 4]  # the connect's own, then one for all three requests
    assert [sw.results[g] for g in gens] == [SyncResult(1)] * 3
    assert len(switch.commits()) == 2  # the first policy, then the pair
    assert switch.holds(compiled(paired()))
