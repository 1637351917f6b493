"""The switch side: connected bridges, their ports, and keeping their flows in sync.

Each connected switch has one sync worker (a green thread). Everything that changes what a
switch should hold (a REST change, a port event, a learned MAC) only asks that worker to
sync, so Ryu's event handlers never wait and REST calls can wait for the worker to confirm
their change. The worker:

- when the switch connects, reads back every flow carrying our cookie tag (raw bytes, see
  wire.py), compiles the whole policy meanwhile, and sends only the difference;
- after that, keeps the switch's flows per unit (flowset.py), so a change recompiles and
  compares only the VMs and pairs it touched;
- sends every difference as one atomic bundle of hand-packed flow-mods, confirmed by the
  bundle's commit reply.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ryu.lib import hub
from ryu.lib.packet import arp, ethernet, icmpv6, packet
from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from ryu_ctfw import wire
from ryu_ctfw.compiler import COOKIE_MASK, COOKIE_TAG, Attachment, Flow, Meter
from ryu_ctfw.flowset import Diff, FlowSet
from ryu_ctfw.policy import Policy, PolicyError, validate_mac

REPLY_TIMEOUT = 5.0
SYNC_TIMEOUT = 600.0  # a backstop: every step of a sync has a timeout of its own
SEND_CHUNK = 1 << 16  # bytes of bundled flow-mods handed to Ryu's send queue at once
# A learning port's packet-ins, limited in the switch (meter id = the port's ofport): a port
# that floods ARPs costs the controller at most this many packets a second.
LEARN_RATE = 20
LEARN_BURST = 20
# OVS's fragment handling that shows the L4 ports of a first fragment to the flow table
# (OFPC_FRAG_NX_MATCH): a port-restricted pair then checks them; later fragments follow
# their first one through conntrack's reassembly (compiler.pair_flows).
OFPC_FRAG_NX_MATCH = 3


def dpid_str(dpid: int) -> str:
    return f"{dpid:016x}"


class SwitchError(Exception):
    """The switch did not confirm a request: no answer in time, or the connection went."""


class SwitchRefused(SwitchError):
    """The switch answered a request with an error: it did not do it."""


@dataclass
class SyncResult:
    dpid: int
    errors: list[str] = field(default_factory=list)  # refused: the switch applied none of it
    unknown: list[str] = field(default_factory=list)  # neither confirmed nor refused


@dataclass
class _Pending:
    """Replies collected for one request (by xid)."""

    done: hub.Event = field(default_factory=hub.Event)
    replies: list[Any] = field(default_factory=list)
    error: Any = None


@dataclass
class _Asked:
    """A request on its way: the datapath it went to, its xid, its replies."""

    dp: Any
    xid: int
    pending: _Pending


@dataclass
class Switch:
    dpid: int
    dp: Any = None  # ryu Datapath while connected: the connection in use
    # Other open connections from this dpid, oldest first: a bridge with two controller
    # targets, or an old connection that died unnoticed. One takes over if `dp` closes.
    standby: list[Any] = field(default_factory=list)
    name: str | None = None  # bridge name (its LOCAL port)
    ports: dict[str, int] = field(default_factory=dict)  # port name -> ofport
    learning: set[str] = field(default_factory=set)  # VMs whose learned MAC is being stored
    meters: set[int] = field(default_factory=set)  # meters known to exist on the switch
    flows: FlowSet | None = None  # what the switch holds; None: not read back yet
    pending: dict[int, _Pending] = field(default_factory=dict)
    errors: dict[int, Any] = field(default_factory=dict)  # xid -> error msg, during a sync
    wake: hub.Event = field(default_factory=hub.Event)
    requested: int = 0
    finished: int = 0
    results: dict[int, SyncResult] = field(default_factory=dict)
    waiters: list[tuple[int, hub.Event]] = field(default_factory=list)
    worker: Any = None
    bundle_id: int = 0
    connected_at: float = 0.0
    packet_ins: int = 0  # only MAC learning sends packets here; the API shows the count

    @property
    def connected(self) -> bool:
        return self.dp is not None

    def port_name(self, ofport: int) -> str | None:
        for name, no in self.ports.items():
            if no == ofport:
                return name
        return None


# --- the switches ---------------------------------------------------------------------------


class SwitchManager:
    """All switches this controller knows, connected or not."""

    def __init__(
        self,
        logger: logging.Logger,
        policy: Callable[[], Policy],
        zone_of: Callable[[int], int],
        learned: Callable[[str, str], object] = lambda vm, mac: None,
    ) -> None:
        self.log = logger
        self.policy = policy
        self.zone_of = zone_of  # dpid -> the bridge's conntrack zone
        # (VM name, MAC): store a learned MAC with the policy, then sync. Called in a
        # green thread of its own: storing waits for the switches.
        self.learned = learned
        self.switches: dict[int, Switch] = {}
        install_raw_flow_stats_parser()

    # --- events from Ryu (never block) -----------------------------------------------------
    def connected(self, dp: Any) -> None:
        """The switch finished its handshake and Ryu has its port list.

        Connections are tracked per connection, not per dpid: a new connection from a
        known dpid (a second controller target, or a reconnect before Ryu noticed the old
        connection die) replaces the one in use, which stays on standby until it closes."""
        sw = self.switches.setdefault(dp.id, Switch(dp.id))
        if sw.dp is dp:
            return
        if sw.dp is not None:
            self.log.warning(
                "switch %s connected again: the new connection replaces the one in use",
                dpid_str(dp.id),
            )
            sw.standby.append(sw.dp)
        self._use(sw, dp)

    def _use(self, sw: Switch, dp: Any) -> None:
        """Make `dp` the switch's connection: what was asked on another one fails, its
        worker ends, and `dp` is read back and synced from scratch."""
        if dp in sw.standby:
            sw.standby.remove(dp)
        if sw.worker is not None:
            hub.kill(sw.worker)
            sw.worker = None
        for pending in sw.pending.values():  # e.g. a flows view waiting on the old one
            pending.error = pending.error or "switch reconnected"
            pending.done.set()
        sw.errors.clear()
        sw.dp = dp
        sw.connected_at = time.monotonic()
        sw.flows = None  # read it back before changing anything
        sw.pending.clear()
        sw.meters.clear()
        sw.ports = {}
        for port in dp.ports.values():
            self._port_added(sw, port)
        self.log.info(
            "switch %s (%s) connected with ports %s",
            dpid_str(dp.id),
            sw.name,
            sorted(sw.ports.items(), key=lambda kv: kv[1]),
        )
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self._send(dp, parser.OFPSetConfig(dp, OFPC_FRAG_NX_MATCH, ofp.OFPCML_NO_BUFFER))
        sw.worker = hub.spawn(self._worker, sw, dp)
        self.request_sync(sw.dpid)

    def disconnected(self, dp: Any) -> None:
        """A connection closed: the switch is gone only if it was the one in use and no
        other connection from the switch is open."""
        dpid = dp.id
        sw = self.switches.get(dpid)
        if sw is None:
            return
        if dp in sw.standby:
            sw.standby.remove(dp)
            self.log.info(
                "switch %s: a connection not in use closed; still connected", dpid_str(dpid)
            )
            return
        if sw.dp is not dp:
            return
        live = [d for d in sw.standby if getattr(d, "is_active", True)]
        if live:
            self.log.warning(
                "switch %s: the connection in use closed; using its other connection",
                dpid_str(dpid),
            )
            sw.standby = live
            self._use(sw, live[-1])
            return
        self.log.info("switch %s disconnected", dpid_str(dpid))
        sw.standby.clear()
        sw.dp = None
        sw.flows = None
        for pending in sw.pending.values():
            pending.done.set()
        sw.wake.set()  # lets the worker see the switch is gone and end
        self._finish(sw, sw.requested, SyncResult(dpid, unknown=["switch disconnected"]))

    def port_status(self, dp: Any, reason: int, port: Any) -> None:
        sw = self.switches.get(dp.id)
        if sw is None or sw.dp is None:
            return
        ofp = dp.ofproto
        name = _name(port)
        if reason == ofp.OFPPR_DELETE:
            if sw.ports.get(name) == port.port_no:
                del sw.ports[name]
            self.log.info("port %s (ofport %d) removed from %s", name, port.port_no, sw.name)
        else:
            old = sw.ports.get(name)
            self._port_added(sw, port)
            if old != port.port_no:
                self.log.info("port %s is ofport %d on %s", name, port.port_no, sw.name)
        self.request_sync(sw.dpid)

    def packet_in(self, dp: Any, msg: Any) -> None:
        """Learn the MAC of a VM registered without one, from its ARP or ND."""
        sw = self.switches.get(dp.id)
        if sw is None:
            return
        sw.packet_ins += 1
        port = sw.port_name(msg.match.get("in_port", -1))
        policy = self.policy()
        vm = next((v for v in policy.vms.values() if v.port == port), None)
        if vm is None or vm.known_mac or vm.name in sw.learning:
            return
        mac = _sender_mac(msg.data)
        if mac is None:
            return
        # A MAC another VM on this bridge has is not this VM's to take.
        taken = {v.known_mac for v in policy.vms.values() if v.port in sw.ports} - {None}
        if mac in taken:
            self.log.warning(
                "VM %s on port %s uses MAC %s, which another VM on %s has: not learned",
                vm.name, port, mac, sw.name,
            )  # fmt: skip
            return
        sw.learning.add(vm.name)
        self.log.info("learned mac %s for VM %s on port %s", mac, vm.name, port)
        hub.spawn(self._store_learned, sw, vm.name, mac)

    def _store_learned(self, sw: Switch, vm_name: str, mac: str) -> None:
        try:
            self.learned(vm_name, mac)
        except Exception:  # a refused change is logged by the firewall; learn again later
            self.log.exception("storing the learned MAC of VM %s failed", vm_name)
        finally:
            sw.learning.discard(vm_name)

    def reply(self, dp: Any, msg: Any) -> None:
        """A multipart, barrier or bundle reply: hand it to whoever waits for that xid
        (only from the connection in use: xids are per connection)."""
        sw = self.switches.get(dp.id)
        pending = sw.pending.get(msg.xid) if sw is not None and sw.dp is dp else None
        if pending is None:
            return
        pending.replies.append(msg)
        multipart = isinstance(msg, dp.ofproto_parser.OFPMultipartReply)
        if not (multipart and msg.flags & dp.ofproto.OFPMPF_REPLY_MORE):
            pending.done.set()

    def error(self, dp: Any, msg: Any) -> None:
        sw = self.switches.get(dp.id)
        text = _error_text(dp, msg)
        if sw is None or sw.dp is not dp:
            self.log.error("switch %s error (connection not in use): %s", dpid_str(dp.id), text)
            return
        pending = sw.pending.get(msg.xid)
        if pending is not None:
            pending.error = text
            pending.done.set()
        sw.errors[msg.xid] = text

    # --- sync ------------------------------------------------------------------------------
    def request_sync(self, dpid: int) -> int:
        """Ask the switch's worker to sync; returns the generation to wait for."""
        sw = self.switches[dpid]
        sw.requested += 1
        sw.wake.set()
        return sw.requested

    def sync_all(self, timeout: float = SYNC_TIMEOUT) -> list[SyncResult]:
        """Sync every connected switch and wait until each has confirmed (or failed).

        The worker's own requests time out on silence, and a bundle's commit gets time in
        proportion to its size, so a sync always ends; `timeout` is only a backstop."""
        waits = []
        for sw in self.switches.values():
            if sw.connected:
                gen = self.request_sync(sw.dpid)
                ev = hub.Event()
                sw.waiters.append((gen, ev))
                waits.append((sw, gen, ev))
        results = []
        for sw, gen, ev in waits:
            if not ev.wait(timeout=timeout):
                results.append(SyncResult(sw.dpid, unknown=["switch did not confirm in time"]))
            else:
                results.append(sw.results.get(gen) or SyncResult(sw.dpid))
        return results

    def _worker(self, sw: Switch, dp: Any) -> None:
        """Syncs `sw` while `dp` is its connection."""
        while sw.dp is dp:
            sw.wake.wait()
            sw.wake.clear()
            if sw.dp is not dp:
                break
            target = sw.requested
            try:
                result = self._sync(sw)
            except SwitchRefused as e:
                sw.flows = None
                result = SyncResult(sw.dpid, [str(e)])
            except SwitchError as e:
                sw.flows = None  # read back before the next change
                result = SyncResult(sw.dpid, unknown=[str(e)])
            except Exception as e:  # a bug must not kill the worker for good
                self.log.exception("sync of switch %s failed", dpid_str(sw.dpid))
                sw.flows = None
                # The answer reaches API clients: the details stay in the log.
                result = SyncResult(
                    sw.dpid, unknown=[f"internal error ({type(e).__name__}); see the log"]
                )
            self._finish(sw, target, result)

    def _finish(self, sw: Switch, target: int, result: SyncResult) -> None:
        sw.finished = max(sw.finished, target)
        sw.results[target] = result
        for gen in [g for g in sw.results if g < target]:
            sw.results[gen] = result  # a later sync covers earlier requests
        still = []
        for gen, ev in sw.waiters:
            if gen <= sw.finished:
                if gen not in sw.results:
                    sw.results[gen] = result
                ev.set()
            else:
                still.append((gen, ev))
        sw.waiters = still
        if len(sw.results) > 64:
            for gen in sorted(sw.results)[:-64]:
                del sw.results[gen]

    def attachments(self, sw: Switch) -> dict[str, Attachment]:
        here = [vm for vm in self.policy().vms.values() if vm.port in sw.ports]
        given = {vm.mac for vm in here if vm.mac}
        out = {}
        for vm in here:
            mac = vm.known_mac
            if vm.mac is None and mac in given:
                mac = None  # learned elsewhere, but another VM here is configured with it
            out[vm.name] = Attachment(sw.ports[vm.port], mac)
        return out

    def _sync(self, sw: Switch) -> SyncResult:
        policy, attached, zone = self.policy(), self.attachments(sw), self.zone_of(sw.dpid)
        if sw.flows is None:
            return self._reconcile(sw, policy, attached, zone)
        diff = sw.flows.update(policy, attached, zone)
        result = SyncResult(sw.dpid)
        if not diff:
            return result
        if self._send_diff(sw, diff, [], result):
            self.log.info(
                "switch %s synced: %d flows added or changed, %d deleted",
                dpid_str(sw.dpid), len(diff.add), len(diff.delete),
            )  # fmt: skip
        else:
            sw.flows = None  # the switch kept its old flows: read them back next time
        return result

    def _reconcile(
        self, sw: Switch, policy: Policy, attached: dict[str, Attachment], zone: int
    ) -> SyncResult:
        """First sync after connecting: compare the whole policy with what the switch holds
        (flows carrying our cookie tag) and send only the difference."""
        result = SyncResult(sw.dpid)
        t0 = time.monotonic()
        # Ask for our flows first and compile while the switch dumps its table. Pausing now
        # and then lets Ryu read the dump as it comes: unread, it would stall in the
        # socket and the switch would send the rest only after the compile.
        asked = self._ask(sw, _our_flows(sw.dp), raw=True)
        flows = FlowSet.build(policy, attached, zone, pause=lambda: hub.sleep(0))
        want = _by_bytes(flows, pause=lambda: hub.sleep(0))
        t_compile = time.monotonic() - t0
        held = {entry.key: entry for reply in self._answer(sw, asked) for entry in reply.body}
        t_read = time.monotonic() - t0
        found = len(held)
        diff = Diff()
        for key, flow in want.items():
            have = held.pop(key, None)
            if have is None or not wire.holds(have, flow):
                diff.add.append(flow)
        stale = list(held.values())  # ours by cookie, but not (or no longer) wanted
        t_compare = time.monotonic() - t0
        if (diff or stale) and not self._send_diff(sw, diff, stale, result):
            return result
        sw.flows = flows
        self.log.info(
            "switch %s in sync %.3f s after connect: %d flows of ours found, %d added or"
            " changed, %d deleted (compiled and packed %.3f s, read back %.3f s, compared %.3f s,"
            " sent and confirmed %.3f s after the sync began)",
            dpid_str(sw.dpid), time.monotonic() - sw.connected_at, found, len(diff.add),
            len(stale), t_compile, t_read, t_compare, time.monotonic() - t0,
        )  # fmt: skip
        return result

    def _send_diff(
        self, sw: Switch, diff: Diff, stale: list[wire.RawFlow], result: SyncResult
    ) -> bool:
        """Send a diff as one bundle; on refusal, name the flows refused in `result`."""
        try:
            self._ensure_meters(sw, {a.meter_id for f in diff.add for a in f.actions
                                     if isinstance(a, Meter)})  # fmt: skip
        except SwitchRefused as e:
            result.errors.append(f"switch refused a meter: {e}")
            self.log.error("switch %s: %s", dpid_str(sw.dpid), result.errors[-1])
            return False
        except SwitchError as e:
            result.unknown.append(f"switch did not confirm a meter: {e}")
            self.log.error("switch %s: %s", dpid_str(sw.dpid), result.unknown[-1])
            return False
        # Deletes first: a stale entry whose match bytes differ from ours but mean the same
        # match (another OVS writing fields in another order) is the very flow an add below
        # puts back; deleted after the add, it would take the wanted flow with it. The
        # bundle is atomic and ordered, so traffic never sees the gap.
        msgs = [wire.flow_delete(*r.key, r.cookie) for r in stale]
        msgs += [wire.flow_delete(*wire.wire_key(f), f.cookie) for f in diff.delete]
        msgs += [wire.flow_add(f) for f in diff.add]
        sw.errors.clear()
        try:
            self._bundle(sw, msgs)
            return True
        except SwitchRefused as e:
            # The bundle is atomic: the switch applied none of it. Name what it refused.
            what = [f"deleting table={r.key[0]}, priority={r.key[1]}" for r in stale]
            what += [f"deleting {f.text()}" for f in diff.delete]
            what += [f.text() for f in diff.add]
            by_xid = dict(zip(e.args[1], what, strict=True))
            for xid, text in sw.errors.items():
                if xid in by_xid:
                    result.errors.append(f"switch rejected {by_xid[xid]}: {text}")
            result.errors = result.errors or [f"switch refused the change: {e.args[0]}"]
            for text in result.errors:
                self.log.error("switch %s: %s", dpid_str(sw.dpid), text)
            return False

    def _ensure_meters(self, sw: Switch, meter_ids: set[int]) -> None:
        """Create the meters that flows about to be added use (a flow naming a missing meter
        is refused). Meter-mods cannot go in a bundle, so they go first; a meter left by an
        earlier run is set to our rate instead. Never deleted: a handful, and deleting a
        meter deletes the flows that use it."""
        dp = sw.dp
        ofp, parser = dp.ofproto, dp.ofproto_parser
        for meter_id in sorted(meter_ids - sw.meters):
            bands = [parser.OFPMeterBandDrop(rate=LEARN_RATE, burst_size=LEARN_BURST)]
            flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST
            for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY):
                xid = self._send(dp, parser.OFPMeterMod(dp, command, flags, meter_id, bands))
                self._request(sw, parser.OFPBarrierRequest(dp))
                error = sw.errors.pop(xid, None)
                if error is None:
                    break
                if "METER_EXISTS" not in error:
                    raise SwitchRefused(f"meter {meter_id}: {error}")
            else:
                raise SwitchRefused(f"meter {meter_id} exists and cannot be modified")
            sw.meters.add(meter_id)

    def _bundle(self, sw: Switch, msgs: list[bytes]) -> list[int]:
        """Send flow-mods (wire.py bytes) as one atomic ONF bundle; wait for the commit.

        The switch applies all of them or none; the commit reply is the confirmation (it
        comes after the bundle took effect, so no barrier is needed). Returns the xids of
        the messages; raises SwitchError(reason, xids) if the switch refused.
        """
        dp = sw.dp
        ofp, parser = dp.ofproto, dp.ofproto_parser
        sw.bundle_id = (sw.bundle_id + 1) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        self._send(
            dp, parser.ONFBundleCtrlMsg(dp, sw.bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, [])
        )
        xids = _take_xids(dp, len(msgs))
        chunk: list[bytes] = []
        size = 0
        for xid, msg in zip(xids, msgs, strict=True):
            add = wire.bundle_add(sw.bundle_id, flags, msg, xid)
            chunk.append(add)
            size += len(add)
            if size >= SEND_CHUNK:
                dp.send(b"".join(chunk))
                chunk, size = [], 0
                hub.sleep(0)  # Ryu's send loop writes this chunk while we pack the next
        if chunk:
            dp.send(b"".join(chunk))
        commit = parser.ONFBundleCtrlMsg(dp, sw.bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
        try:
            # Committing tens of thousands of flows takes the switch a while.
            self._request(sw, commit, timeout=REPLY_TIMEOUT + len(msgs) / 2000)
        except SwitchError as e:
            raise type(e)(str(e), xids) from e
        return xids

    def _send(self, dp: Any, msg: Any) -> int:
        dp.set_xid(msg)
        dp.send_msg(msg)
        return msg.xid

    def _request(
        self, sw: Switch, msg: Any, timeout: float = REPLY_TIMEOUT, raw: bool = False
    ) -> list[Any]:
        """Send `msg`, wait for its whole answer; `timeout` is the longest silence allowed
        (a long multipart answer may take longer as a whole, as long as parts keep coming).
        `raw`: a flow-stats request whose entries come back as wire.RawFlow."""
        return self._answer(sw, self._ask(sw, msg, raw), timeout)

    def _ask(self, sw: Switch, msg: Any, raw: bool = False) -> _Asked:
        """Send a request; `_answer` collects its answer (work may go on in between)."""
        dp = sw.dp
        if dp is None:
            raise SwitchError("switch disconnected")
        dp.set_xid(msg)
        asked = _Asked(dp, msg.xid, _Pending())
        sw.pending[msg.xid] = asked.pending
        if raw:
            dp.__dict__.setdefault(RAW_XIDS, set()).add(msg.xid)
        dp.send_msg(msg)
        return asked

    def _answer(self, sw: Switch, asked: _Asked, timeout: float = REPLY_TIMEOUT) -> list[Any]:
        pending = asked.pending
        try:
            seen = -1
            while not pending.done.wait(timeout=timeout):
                if len(pending.replies) == seen:
                    raise SwitchError("switch did not answer in time")
                seen = len(pending.replies)
            if pending.error:
                raise SwitchRefused(pending.error)
            if sw.dp is not asked.dp:
                raise SwitchError("switch disconnected")
            return pending.replies
        finally:
            sw.pending.pop(asked.xid, None)
            asked.dp.__dict__.get(RAW_XIDS, set()).discard(asked.xid)

    def flow_stats(self, dpid: int) -> list[tuple[wire.RawFlow, Flow | None]]:
        """Every flow of ours on the switch, with the Flow it is (None: not one we make).

        Read raw, like the sync: a flow the sync installed is recognised by its bytes, so
        only flows changed behind our back are decoded (by Ryu, slowly)."""
        sw = self.switches.get(dpid)
        if sw is None or sw.dp is None:
            raise SwitchError(f"switch {dpid_str(dpid)} is not connected")
        replies = self._request(sw, _our_flows(sw.dp), raw=True)
        by_bytes = {} if sw.flows is None else _by_bytes(sw.flows)
        out = []
        for reply in replies:
            for raw in reply.body:
                flow = by_bytes.get(raw.key)
                if flow is None or not wire.holds(raw, flow):
                    flow = wire.flow_from_raw(raw)
                out.append((raw, flow))
        return out

    # --- views -----------------------------------------------------------------------------
    def locate(self, port: str) -> tuple[int, int] | None:
        """(dpid, ofport) of a port name on a connected switch."""
        for sw in self.switches.values():
            if sw.connected and port in sw.ports:
                return sw.dpid, sw.ports[port]
        return None

    # --- helpers ---------------------------------------------------------------------------
    def _port_added(self, sw: Switch, port: Any) -> None:
        ofp = sw.dp.ofproto
        name = _name(port)
        if port.port_no == ofp.OFPP_LOCAL:
            sw.name = name
            return
        if port.port_no > ofp.OFPP_MAX:
            return
        for other, no in list(sw.ports.items()):
            if no == port.port_no and other != name:
                del sw.ports[other]  # renamed
        sw.ports[name] = port.port_no


def _our_flows(dp: Any) -> Any:
    """A flow-stats request for every flow carrying our cookie tag, in all tables."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(
        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, COOKIE_TAG, COOKIE_MASK,
        parser.OFPMatch(),
    )  # fmt: skip


def _by_bytes(
    flows: FlowSet, pause: Callable[[], object] = lambda: None
) -> dict[wire.WireKey, Flow]:
    """A switch's flows by their identity as bytes, what flow-stats entries are looked up by
    (`pause` now and then: packing tens of thousands of matches takes a while)."""
    out = {}
    for n, flow in enumerate(flows.flows().values(), start=1):
        out[wire.wire_key(flow)] = flow
        if n % 4096 == 0:
            pause()
    return out


def _take_xids(dp: Any, count: int) -> list[int]:
    """`count` consecutive xids from the datapath's counter (what set_xid does one by one)."""
    first = dp.xid + 1
    dp.xid = (dp.xid + count) & dp.ofproto.MAX_XID
    return [(first + i) & dp.ofproto.MAX_XID for i in range(count)]


# --- raw flow stats --------------------------------------------------------------------------
RAW_XIDS = "ctfw_raw_flow_stats_xids"  # Datapath attribute: xids whose replies stay raw


def install_raw_flow_stats_parser() -> None:
    """Let the sync read flow stats without Ryu decoding every entry.

    Ryu parses each flow-stats entry into an object tree (tens of microseconds apiece, most
    of a resync at scale), while the sync only compares bytes (wire.py). Ryu looks its
    parser up per message type in a table at every message, so this wraps the one for
    multipart replies: a flow-stats reply to an xid its datapath lists under RAW_XIDS gets
    wire.RawFlow entries as its body; every other message, of this app or any other, is
    parsed by Ryu as before.
    """
    parsers = ofproto_v1_3_parser._MSG_PARSERS
    ryu_parser = parsers[ofproto_v1_3.OFPT_MULTIPART_REPLY]
    if getattr(ryu_parser, "ctfw_raw", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        if xid not in getattr(datapath, RAW_XIDS, ()) or not wire.is_flow_stats_reply(buf):
            return ryu_parser(datapath, version, msg_type, msg_len, xid, buf)
        msg = ofproto_v1_3_parser.OFPFlowStatsReply(datapath)
        msg.set_headers(version, msg_type, msg_len, xid)
        msg.set_buf(buf)
        msg.type, msg.flags = struct.unpack_from("!HH", buf, 8)
        try:
            msg.body = list(wire.flow_stats_entries(bytes(buf)))
        except wire.MalformedReply as e:
            # Raised out of Ryu's receive loop, it ends this connection; the switch
            # reconnects and is read back again.
            logging.getLogger("ryu_ctfw").error(
                "switch %s sent a malformed flow-stats reply, closing: %s",
                dpid_str(getattr(datapath, "id", 0) or 0), e,
            )  # fmt: skip
            raise
        return msg

    parse.ctfw_raw = True  # type: ignore[attr-defined]
    parsers[ofproto_v1_3.OFPT_MULTIPART_REPLY] = parse


def _sender_mac(data: bytes) -> str | None:
    """The MAC an ARP or a Neighbor Solicitation was sent from, when its ARP sender address
    agrees and it is a unicast MAC; else None."""
    pkt = packet.Packet(data)
    eth, arp_pkt = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(arp.arp)
    nd = pkt.get_protocol(icmpv6.icmpv6)
    if eth is None:
        return None
    if arp_pkt is not None:
        if eth.src != arp_pkt.src_mac:
            return None
    elif nd is None or nd.type_ != icmpv6.ND_NEIGHBOR_SOLICIT:
        return None
    try:
        return validate_mac(eth.src)
    except PolicyError:
        return None


def _name(port: Any) -> str:
    name = port.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _error_text(dp: Any, msg: Any) -> str:
    ofp = dp.ofproto
    if getattr(msg, "exp_type", None) is not None:  # an extension's error (bundles are ONF's)
        return f"experimenter 0x{msg.experimenter:x} error {msg.exp_type}"
    types = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
    type_name = types.get(msg.type, str(msg.type))
    prefix = {
        "OFPET_BAD_REQUEST": "OFPBRC_",
        "OFPET_BAD_ACTION": "OFPBAC_",
        "OFPET_BAD_INSTRUCTION": "OFPBIC_",
        "OFPET_BAD_MATCH": "OFPBMC_",
        "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
        "OFPET_METER_MOD_FAILED": "OFPMMFC_",
    }.get(type_name)
    code_name = str(msg.code)
    if prefix:
        codes = {v: k for k, v in vars(ofp).items() if k.startswith(prefix) and isinstance(v, int)}
        code_name = codes.get(msg.code, code_name)
    return f"{type_name} {code_name}"
