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

What talks to the datapath (requests, replies, errors, bundles, meters) is channel.py;
decoding what the switch holds is wire.py; the hook into Ryu's parser is ryu_compat.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ryu.lib import hub
from ryu.lib.packet import arp, ethernet, icmpv6, packet

from ryu_ctfw import channel, events, metrics, wire
from ryu_ctfw.channel import Pending, SwitchError, SwitchRefused, dpid_str
from ryu_ctfw.compiler import (
    KIND_PAIR,
    TABLE_LOG,
    TABLE_POLICY,
    Attachment,
    Flow,
    Log,
    Meter,
    cookie_kind,
)
from ryu_ctfw.flowset import Diff, FlowSet
from ryu_ctfw.policy import Policy, PolicyError, Vm, validate_mac

SYNC_TIMEOUT = 600.0  # a backstop: every step of a sync has a timeout of its own
METER_POLL = 5.0  # how often the meters are read, to log the events they dropped
# OVS's fragment handling that shows the L4 ports of a first fragment to the flow table
# (OFPC_FRAG_NX_MATCH): a port-restricted pair then checks them; later fragments follow
# their first one through conntrack's reassembly (compiler.pair_flows).
OFPC_FRAG_NX_MATCH = 3


@dataclass
class SyncResult:
    dpid: int
    errors: list[str] = field(default_factory=list)  # refused: the switch applied none of it
    unknown: list[str] = field(default_factory=list)  # neither confirmed nor refused


@dataclass
class Switch:
    dpid: int
    dp: Any = None  # ryu Datapath while connected: the connection in use
    # Other open connections from this dpid, oldest first: a bridge with two controller
    # targets, or an old connection that died unnoticed. One takes over if `dp` closes.
    standby: list[Any] = field(default_factory=list)
    # The connection `dp` replaced while it was still open: what was sent on it (a commit
    # in flight) may still take effect, so the first read-back waits for it (channel.fence).
    replaced: Any = None
    fences: dict[tuple[int, int], Pending] = field(default_factory=dict)  # (id(dp), xid)
    name: str | None = None  # bridge name (its LOCAL port)
    ports: dict[str, int] = field(default_factory=dict)  # port name -> ofport
    learning: set[str] = field(default_factory=set)  # VMs whose learned MAC is being stored
    meters: set[int] = field(default_factory=set)  # meters known to exist on the switch
    flows: FlowSet | None = None  # what the switch holds; None: not read back yet
    # `flows` by their identity as bytes (_by_bytes), with the FlowSet and generation it
    # was made from: flow reads (scrapes, explain, GET /flows) look entries up in it.
    index: tuple[FlowSet, int, dict[wire.WireKey, Flow]] | None = None
    pending: dict[int, Pending] = field(default_factory=dict)
    errors: dict[int, Any] = field(default_factory=dict)  # xid -> error msg, during a sync
    wake: hub.Event = field(default_factory=hub.Event)
    requested: int = 0
    finished: int = 0
    results: dict[int, SyncResult] = field(default_factory=dict)
    waiters: list[tuple[int, hub.Event]] = field(default_factory=list)
    worker: Any = None
    bundle_id: int = 0
    connected_at: float = 0.0
    packet_ins: int = 0  # MAC learning and the connection log; the API shows the count
    # Events the switch's meters dropped, by meter id (a VM port's ofport, or
    # compiler.SHARED_METER), as last read from its meter stats.
    meter_drops: dict[int, int] = field(default_factory=dict)

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
        default_fabric_port: str | None = None,
        event_log: events.EventLog | None = None,
    ) -> None:
        self.log = logger
        self.policy = policy
        self.zone_of = zone_of  # dpid -> the bridge's conntrack zone
        self.default_fabric_port = default_fabric_port  # [ctfw] fabric_port
        # (VM name, MAC): store a learned MAC with the policy, then sync. Called in a
        # green thread of its own: storing waits for the switches.
        self.learned = learned
        self.switches: dict[int, Switch] = {}
        self._placed: _Placement | None = None
        self.events = event_log if event_log is not None else events.EventLog()

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
            sw.replaced = sw.dp
        self._use(sw, dp)

    def _use(self, sw: Switch, dp: Any) -> None:
        """Make `dp` the switch's connection: what was asked on another one fails, its
        worker ends, and `dp` is read back and synced from scratch."""
        if dp in sw.standby:
            sw.standby.remove(dp)
        if sw.worker is not None:
            hub.kill(sw.worker)
            sw.worker = None
        channel.fail_pending(sw, "switch reconnected")  # e.g. a flows view on the old one
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
        channel.send(dp, parser.OFPSetConfig(dp, OFPC_FRAG_NX_MATCH, ofp.OFPCML_NO_BUFFER))
        sw.worker = hub.spawn(self._worker, sw, dp)
        self.sync_everywhere()  # its ports may place VMs that other switches see remotely

    def disconnected(self, dp: Any) -> None:
        """A connection closed: the switch is gone only if it was the one in use and no
        other connection from the switch is open."""
        dpid = dp.id
        sw = self.switches.get(dpid)
        if sw is None:
            return
        if dp in sw.standby:
            sw.standby.remove(dp)
            channel.end_fences(sw, dp)  # a closed connection applies nothing more
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
        channel.fail_pending(sw, None)  # their answers see the connection gone
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
        self.sync_everywhere()

    def packet_in(self, dp: Any, msg: Any) -> None:
        """An event of the connection log (a drop that is one, from the log table, or an
        opening packet of a pair that logs), or a packet to learn a MAC from."""
        sw = self.switches.get(dp.id)
        if sw is None:
            return
        sw.packet_ins += 1
        if msg.table_id == TABLE_LOG or (
            msg.table_id == TABLE_POLICY and cookie_kind(msg.cookie) == KIND_PAIR
        ):
            self._log_event(sw, msg)
            return
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

    def _log_event(self, sw: Switch, msg: Any) -> None:
        try:
            policy = self.policy()
            # The attachments the switch's flows were last compiled with: what sent the
            # packet here, and no placement worked out again per packet-in.
            held = sw.flows
            attached = held.attached if held is not None else self.attachments(sw, policy)
            event = events.describe(
                policy,
                attached,
                msg.match.get("in_port"),
                msg.data,
                msg.table_id,
                msg.cookie,
                msg.match.get("metadata", 0),
            )
        except Exception:  # a packet we cannot read must not stop the next one
            self.log.exception("switch %s: an event could not be read", dpid_str(sw.dpid))
            return
        self.events.add(switch=sw.name or dpid_str(sw.dpid), **event)

    def start_meter_poll(self) -> None:
        """Read every switch's meters now and then, and log what they dropped: events over a
        port's rate are lost in the switch, and the log must say so."""
        hub.spawn(self._meter_poll)

    def _meter_poll(self) -> None:
        while True:
            hub.sleep(METER_POLL)
            for sw in list(self.switches.values()):
                if sw.connected:
                    try:
                        self.read_meters(sw)
                    except SwitchError as e:
                        self.log.debug("switch %s: meters not read: %s", dpid_str(sw.dpid), e)
                    except Exception:
                        self.log.exception("switch %s: reading meters", dpid_str(sw.dpid))

    def read_meters(self, sw: Switch) -> None:
        dp = sw.dp
        ofp, parser = dp.ofproto, dp.ofproto_parser
        replies = channel.request(sw, parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL))
        for reply in replies:
            for stat in reply.body:
                dropped = sum(b.packet_band_count for b in stat.band_stats)
                before = sw.meter_drops.get(stat.meter_id, 0)
                sw.meter_drops[stat.meter_id] = dropped
                if dropped > before:
                    port = sw.port_name(stat.meter_id) or "other ports"
                    self.log.warning(
                        "switch %s: the meter of %s dropped %d events (over %d a second)"
                        " in the last %.0f s; GET /events misses them",
                        sw.name or dpid_str(sw.dpid), port, dropped - before,
                        channel.LEARN_RATE, METER_POLL,
                    )  # fmt: skip

    def _store_learned(self, sw: Switch, vm_name: str, mac: str) -> None:
        try:
            self.learned(vm_name, mac)
        except Exception:  # a refused change is logged by the firewall; learn again later
            self.log.exception("storing the learned MAC of VM %s failed", vm_name)
        finally:
            sw.learning.discard(vm_name)

    def reply(self, dp: Any, msg: Any) -> None:
        """A multipart, barrier or bundle reply (channel.py hands it to its request)."""
        sw = self.switches.get(dp.id)
        if sw is not None:
            channel.deliver_reply(sw, dp, msg)

    def error(self, dp: Any, msg: Any) -> None:
        sw = self.switches.get(dp.id)
        text = channel.error_text(dp, msg)
        if sw is None or sw.dp is not dp:
            self.log.error("switch %s error (connection not in use): %s", dpid_str(dp.id), text)
            return
        channel.deliver_error(sw, msg.xid, text)

    # --- sync ------------------------------------------------------------------------------
    def sync_everywhere(self) -> None:
        """Where VMs are changed (a port came, went, or a switch connected): every
        connected switch compares its flows again; those whose flows did not change are
        sent nothing."""
        for sw in self.switches.values():
            if sw.connected:
                self.request_sync(sw.dpid)

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
            # The reason alone (args[0]): a bundle's error also carries every xid it sent.
            except SwitchRefused as e:
                sw.flows = None
                result = SyncResult(sw.dpid, [str(e.args[0])])
            except SwitchError as e:
                sw.flows = None  # read back before the next change
                result = SyncResult(sw.dpid, unknown=[str(e.args[0])])
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

    def attachments(self, sw: Switch, policy: Policy | None = None) -> dict[str, Attachment]:
        """Where each VM and network that matters to this switch is, by name: its VMs at
        their ports, the networks whose port it has, and VMs on other hosts that a pair
        joins with something here, at its fabric port (when it has one). Of the policy in
        force, or of another one (a dry run's)."""
        policy = self.policy() if policy is None else policy
        placed = self._placement(policy)
        places = placed.places
        here = placed.by_dpid.get(sw.dpid, [])
        given = {vm.mac for vm in here if vm.mac}
        out = {}
        for vm in here:
            mac = vm.known_mac
            if vm.mac is None and mac in given:
                mac = None  # learned elsewhere, but another VM here is configured with it
            out[vm.name] = Attachment(places[vm.name][1], mac)  # type: ignore[index]
        for net in policy.networks.values():
            if net.port in sw.ports:
                out[net.name] = Attachment(sw.ports[net.port], None)
        fabric_name = self.fabric_port(sw.dpid, policy)
        fabric = sw.ports.get(fabric_name or "")
        if fabric is not None:
            local = {vm.name for vm in here}
            if any(net.port == fabric_name for net in policy.networks.values()):
                # A gateway shares the fabric's segment: it must not pose as any VM of any
                # host, so every VM of another host gets its lines (its claims) here.
                peers = placed.unseen | {n for n, p in places.items() if p and p[0] != sw.dpid}
            else:
                peers = _remote_peers(placed.sides, local, places, sw.dpid, placed.unseen)
            for name in sorted(peers):
                vm = policy.vms[name]
                if vm.known_mac is not None and name not in out:
                    out[name] = Attachment(fabric, vm.known_mac, remote=True)
        return out

    def _ports_state(self, policy: Policy) -> tuple:
        """What placements depend on besides the policy's VMs, pairs and groups: each
        switch's ports, name, connection and fabric port (the policy's: a dry run's may
        differ from the one in force)."""
        return tuple(
            (sw.dpid, sw.name, sw.connected, self.fabric_port(sw.dpid, policy),
             hash(frozenset(sw.ports.items())))
            for sw in self.switches.values()
        )  # fmt: skip

    def _placement(self, policy: Policy) -> _Placement:
        """Where the VMs are, worked out once per policy and port change, not per switch
        (a change syncs every switch, and each asks)."""
        cached = self._placed
        gen = self._ports_state(policy)
        if (
            cached is not None
            and cached.gen == gen
            and _same(cached.vms, policy.vms)
            and _same(cached.pairs, policy.pairs)
            and _same(cached.groups, policy.groups)
        ):
            return cached
        places = self._locate(policy)
        by_dpid: dict[int, list[Vm]] = {}
        for vm in policy.vms.values():
            place = places.get(vm.name)
            if place is not None:
                by_dpid.setdefault(place[0], []).append(vm)
        # A VM naming a switch not seen since the start is on another host too: a restart
        # that meets one switch first keeps its lines there for that VM.
        by_name = self._by_name()
        unseen = {vm.name for vm in policy.vms.values()
                  if vm.switch is not None and vm.switch not in by_name}  # fmt: skip
        sides = [
            (set(policy.members(p.initiator)), set(policy.members(p.responder)))
            for p in policy.pairs.values()
        ]
        self._placed = _Placement(
            gen, dict(policy.vms), dict(policy.pairs), dict(policy.groups),
            places, by_dpid, unseen, sides,
        )  # fmt: skip
        return self._placed

    def fabric_port(self, dpid: int, policy: Policy | None = None) -> str | None:
        """The port of switch `dpid` that leads to the other hosts, if any: its own
        setting, else [ctfw] fabric_port."""
        policy = self.policy() if policy is None else policy
        return policy.fabric.get(dpid, self.default_fabric_port)

    def locations(self, policy: Policy) -> dict[str, tuple[int, int] | None]:
        """Where each VM is (see _locate), worked out once per state of the policy and
        ports."""
        return self._placement(policy).places

    def _locate(self, policy: Policy) -> dict[str, tuple[int, int] | None]:
        """(dpid, ofport) of each VM's port; None for a VM whose place is ambiguous (its
        port name, with no switch named, is on two switches). A VM whose port no switch
        has is left out. A switch that disconnected keeps its last ports: it still
        enforces its flows, so its VMs stay where they were for the other hosts."""
        named: dict[tuple[int, str], int] = {}  # (dpid, port) -> VMs naming that switch
        out: dict[str, tuple[int, int] | None] = {}
        by_name = self._by_name()
        for vm in policy.vms.values():
            if vm.switch is not None:
                sw = by_name.get(vm.switch)
                if sw is not None and vm.port in sw.ports:
                    named[(sw.dpid, vm.port)] = named.get((sw.dpid, vm.port), 0) + 1
                    out[vm.name] = (sw.dpid, sw.ports[vm.port])
        for vm in policy.vms.values():
            if vm.switch is not None:
                continue
            found = [sw for sw in self.switches.values() if vm.port in sw.ports
                     and (sw.dpid, vm.port) not in named
                     and vm.port != self.fabric_port(sw.dpid, policy)]  # fmt: skip
            live = [sw for sw in found if sw.connected] or found
            if len(live) == 1:
                out[vm.name] = (live[0].dpid, live[0].ports[vm.port])
            elif live:
                out[vm.name] = None
        for vm in policy.vms.values():  # two VMs naming one switch's port: neither
            place = out.get(vm.name)
            if vm.switch is not None and place and named[(place[0], vm.port)] > 1:
                out[vm.name] = None
        return out

    def _by_name(self) -> dict[str, Switch]:
        """The switches by dpid (16 hex digits) and by bridge name, as VMs name them."""
        out: dict[str, Switch] = {}
        for sw in self.switches.values():
            out[dpid_str(sw.dpid)] = sw
            if sw.name is not None:
                out.setdefault(sw.name, sw)
        return out

    @metrics.times_sync
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
        self._fence_replaced(sw)
        t0 = time.monotonic()
        # Ask for our flows first and compile while the switch dumps its table. Pausing now
        # and then lets Ryu read the dump as it comes: unread, it would stall in the
        # socket and the switch would send the rest only after the compile.
        asked = channel.ask(sw, channel.our_flows(sw.dp), raw=True)
        flows = FlowSet.build(policy, attached, zone, pause=lambda: hub.sleep(0))
        want = _by_bytes(flows, pause=lambda: hub.sleep(0))
        t_compile = time.monotonic() - t0
        held = {entry.key: entry for reply in channel.answer(sw, asked) for entry in reply.body}
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
        sw.index = (flows, flows.generation, want)  # already made for the comparison
        self.log.info(
            "switch %s in sync %.3f s after connect: %d flows of ours found, %d added or"
            " changed, %d deleted (compiled and packed %.3f s, read back %.3f s, compared %.3f s,"
            " sent and confirmed %.3f s after the sync began)",
            dpid_str(sw.dpid), time.monotonic() - sw.connected_at, found, len(diff.add),
            len(stale), t_compile, t_read, t_compare, time.monotonic() - t0,
        )  # fmt: skip
        return result

    def _fence_replaced(self, sw: Switch) -> None:
        """Before reading back over a new connection, let the switch finish what was sent
        on the one it replaced, if that one is still open: a bundle committed there just
        before (for a change since undone, say) would otherwise land after the read-back,
        unseen, and stay. The switch handles each connection's messages in order, so a
        barrier's reply on the old connection means all of it is done."""
        old, sw.replaced = sw.replaced, None
        if old is None or old not in sw.standby or not getattr(old, "is_active", True):
            return
        if not channel.fence(sw, old):
            self.log.warning(
                "switch %s: the replaced connection did not answer a barrier in time;"
                " reading back anyway", dpid_str(sw.dpid),
            )  # fmt: skip

    def _send_diff(
        self, sw: Switch, diff: Diff, stale: list[wire.RawFlow], result: SyncResult
    ) -> bool:
        """Send a diff as one bundle; on refusal, name the flows refused in `result`."""
        try:
            channel.ensure_meters(sw, {a.meter_id for f in diff.add for a in f.actions
                                     if isinstance(a, Meter | Log)})  # fmt: skip
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
            channel.bundle(sw, msgs)
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

    def flow_stats(self, dpid: int) -> list[tuple[wire.RawFlow, Flow | None]]:
        """Every flow of ours on the switch, with the Flow it is (None: not one we make).

        Read raw, like the sync: a flow the sync installed is recognised by its bytes, so
        only flows changed behind our back are decoded (by Ryu, slowly)."""
        sw = self.switches.get(dpid)
        if sw is None or sw.dp is None:
            raise SwitchError(f"switch {dpid_str(dpid)} is not connected")
        replies = channel.request(sw, channel.our_flows(sw.dp), raw=True)
        by_bytes = _index(sw)
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

    def locate_vm(self, name: str) -> tuple[int, int] | str | None:
        """Where a VM is: (dpid, ofport), "ambiguous", or None when no switch has its port."""
        places = self.locations(self.policy())
        if name not in places:
            return None
        place = places[name]
        return "ambiguous" if place is None else place

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


def _remote_peers(
    sides: list[tuple[set[str], set[str]]],
    local: set[str],
    places: dict[str, tuple[int, int] | None],
    dpid: int,
    unseen: set[str],
) -> set[str]:
    """VMs on other switches that a pair joins with a VM here (a side, or a member of a
    group side): only those get lines here, so a pair between two VMs of another host
    changes nothing on this one. (A network is reached on the hosts that have its port.)"""
    out: set[str] = set()
    for ini, res in sides:
        for this, other in ((ini, res), (res, ini)):
            if this & local:
                out |= {
                    n for n in other
                    if n in unseen or ((place := places.get(n)) and place[0] != dpid)
                }  # fmt: skip
    return out


def _same(old: dict[Any, Any], new: dict[Any, Any]) -> bool:
    """The same keys holding the very same objects."""
    return len(old) == len(new) and all(new.get(k) is v for k, v in old.items())


@dataclass
class _Placement:
    """SwitchManager._placement's answer for one state of the VMs, pairs, groups and
    ports (VMs, pairs and groups are immutable: the same objects, the same answer)."""

    gen: tuple  # SwitchManager._ports_state() then
    vms: dict[str, Vm]
    pairs: dict[int, Any]
    groups: dict[str, Any]
    places: dict[str, tuple[int, int] | None]
    by_dpid: dict[int, list[Vm]]
    unseen: set[str]
    sides: list[tuple[set[str], set[str]]]  # per pair: the VMs of each side


def _index(sw: Switch) -> dict[wire.WireKey, Flow]:
    """The switch's flows by bytes, made again only when the flow set changed."""
    flows = sw.flows
    if flows is None:
        return {}
    if sw.index is None or sw.index[0] is not flows or sw.index[1] != flows.generation:
        sw.index = (flows, flows.generation, _by_bytes(flows))
    return sw.index[2]


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
