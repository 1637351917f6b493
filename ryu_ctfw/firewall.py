"""The firewall service: the one place a policy change goes through.

`change()` applies a change to the policy, stores it, has every connected switch confirm
the new flows, and undoes all of that if a switch refuses them. The REST layer calls it;
the views render what the API shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ryu.lib import hub

from ryu_ctfw import dryrun, metrics, store, wire
from ryu_ctfw.compiler import Flow
from ryu_ctfw.events import EventLog
from ryu_ctfw.policy import Conflict, Network, NotFound, Policy, PolicyError, Vm
from ryu_ctfw.switch import SwitchError, SwitchManager, dpid_str

T = TypeVar("T")


class SwitchRejected(PolicyError):
    """A switch refused the flows of a change: it applied none of them (bundles are atomic),
    and the change was undone everywhere."""

    status = 502


class OutcomeUnknown(PolicyError):
    """A switch neither confirmed nor refused a change in time (a lost reply, a timeout, a
    disconnect mid-commit). The change is kept in the store; the switch is read back and
    brought to the stored policy when it answers again."""

    status = 504


class Firewall:
    def __init__(
        self,
        state_file: Path,
        logger: logging.Logger | None = None,
        default_fabric_port: str | None = None,
    ) -> None:
        self.log = logger or logging.getLogger("ryu_ctfw")
        self.state_file = state_file
        self.policy = store.load(state_file)
        for tmp in store.remove_stale_temps(state_file):
            self.log.warning("removed %s, left by a crash in the middle of a save", tmp)
        if store.has_journal(state_file):
            # Start from a clean snapshot: the journal of the last run is folded into it.
            store.compact(state_file, self.policy)
        self.events = EventLog()
        self.switches = SwitchManager(
            self.log, lambda: self.policy, self.zone_for, learned=self.learn_mac,
            default_fabric_port=default_fabric_port, event_log=self.events,
        )  # fmt: skip
        # One change at a time: a change waits for its switches, and a rollback must not
        # undo somebody else's change made meanwhile.
        self._lock = hub.Semaphore(1)

    @metrics.times_change
    def change(self, mutate: Callable[[Policy], T], plan: dict[str, Any] | None = None) -> T:
        """Apply `mutate` to a copy of the policy, store it, and have every connected switch
        confirm it (or undo it all). A dry run (`plan` given) stops after `mutate`: `plan`
        is filled with what the change would do (dryrun.py) and nothing is stored or sent."""
        with self._lock:
            before = self.policy
            candidate = self.policy.copy()
            # Zones are the controller's bookkeeping, not part of any change: a switch
            # that connects while this change waits must keep the zone it was given.
            candidate.zones = before.zones
            result = mutate(candidate)  # raises PolicyError before anything changed
            if plan is not None:
                plan.update(dryrun.plan(self, before, candidate))
                return result
            records = store.record(self.state_file, before, candidate)
            self.policy = candidate
            results = self.switches.sync_all()
            refused = [e for r in results for e in r.errors]
            if refused:
                # Nothing of it was applied where it was refused; a switch whose outcome is
                # unknown is read back by this resync and converges to the old policy too.
                self.log.error("change refused by a switch, rolling back: %s", refused)
                store.record(self.state_file, candidate, before)
                self.policy = before
                self.switches.sync_all()
                raise SwitchRejected("; ".join(refused))
            if records:
                # The audit trail: every accepted change, in one line (stored already).
                self.log.info("change: %s", store.audit_text(before, records))
            unknown = [(r.dpid, e) for r in results for e in r.unknown]
            if unknown:
                for dpid, _ in unknown:
                    self.switches.request_sync(dpid)  # read back and converge meanwhile
                what = "; ".join(f"switch {dpid_str(d)}: {e}" for d, e in unknown)
                self.log.warning("change stored, not confirmed by every switch: %s", what)
                raise OutcomeUnknown(
                    f"the change is stored, but not confirmed: {what}; the switch is brought"
                    " to the stored policy when it answers"
                )
            return result

    def put_vm(self, vm: Vm, plan: dict[str, Any] | None = None) -> tuple[bool, dict[str, Any]]:
        """Create or update a VM; whether it was created, and the view of the VM stored
        (made inside the change, of the policy it made: the next change may replace it
        before the caller answers, and a dry run's policy is never in force)."""

        def put(policy: Policy) -> tuple[bool, dict[str, Any]]:
            if vm.mac:
                self._check_mac_is_free(policy, vm)
            created = policy.put_vm(vm)
            return created, self.vm_view(policy.vms[vm.name], policy)

        return self.change(put, plan)

    def _check_mac_is_free(self, policy: Policy, vm: Vm) -> None:
        # Two VMs with one MAC on one bridge: either could receive the other's traffic.
        for sw in self.switches.switches.values():
            if vm.port not in sw.ports:
                continue
            for other in policy.vms.values():
                if other.name != vm.name and other.port in sw.ports and other.known_mac == vm.mac:
                    raise Conflict(
                        f"MAC {vm.mac} already belongs to VM {other.name!r} on switch"
                        f" {dpid_str(sw.dpid)}"
                    )

    def learn_mac(self, vm_name: str, mac: str) -> None:
        """Store the MAC a VM registered without one was seen using (switch side calls)."""

        def learn(policy: Policy) -> None:
            vm = policy.vms.get(vm_name)
            if vm is not None and vm.known_mac is None:
                policy.learn_mac(vm_name, mac)

        self.change(learn)

    def zone_for(self, dpid: int) -> int:
        if dpid not in self.policy.zones:
            before = self.policy.copy()  # zone_for changes the policy in place
            zone = self.policy.zone_for(dpid)
            try:
                store.record(self.state_file, before, self.policy)
            except BaseException:
                # Not stored, so not given: the next connection asks again.
                del self.policy.zones[dpid]
                raise
            self.log.info("switch %s gets conntrack zone %d", dpid_str(dpid), zone)
        return self.policy.zones[dpid]

    # --- views -----------------------------------------------------------------------------
    def vm_view(self, vm: Vm, policy: Policy | None = None) -> dict[str, Any]:
        """The VM and where it is: dpid and ofport (null while absent, or while its port
        name is on two switches and it names neither: "ambiguous" says so). Placed by the
        policy in force, or by `policy` (a change's, not in force yet)."""
        if policy is None:
            place = self.switches.locate_vm(vm.name)
        else:
            places = self.switches.locations(policy)
            place = None if vm.name not in places else places[vm.name] or "ambiguous"
        where = place if isinstance(place, tuple) else None
        return {
            **vm.to_dict(),
            "dpid": dpid_str(where[0]) if where else None,
            "ofport": where[1] if where else None,
            "ambiguous": place == "ambiguous",
        }

    def network_view(self, net: Network) -> dict[str, Any]:
        return {**net.to_dict(), **self._where(net.port)}

    def _where(self, port: str) -> dict[str, Any]:
        """Where a port is right now: dpid and ofport, null while no connected switch has it."""
        where = self.switches.locate(port)
        return {"dpid": dpid_str(where[0]) if where else None,
                "ofport": where[1] if where else None}  # fmt: skip

    @property
    def default_fabric_port(self) -> str | None:
        """[ctfw] fabric_port: kept by the switch side, which builds the flows with it."""
        return self.switches.default_fabric_port

    @default_fabric_port.setter
    def default_fabric_port(self, port: str | None) -> None:
        self.switches.default_fabric_port = port

    def switches_view(self, policy: Policy | None = None) -> list[dict[str, Any]]:
        """Every switch known (connected now or before) or with a setting of its own."""
        policy = self.policy if policy is None else policy
        dpids = sorted({*self.switches.switches, *policy.fabric})
        return [self._switch_view(dpid, policy) for dpid in dpids]

    def switch_view(self, dpid: int, policy: Policy | None = None) -> dict[str, Any]:
        """One switch, as GET /switches lists it; NotFound when it would not be listed."""
        policy = self.policy if policy is None else policy
        if dpid not in self.switches.switches and dpid not in policy.fabric:
            raise NotFound(f"no switch {dpid_str(dpid)} is known or has a setting")
        return self._switch_view(dpid, policy)

    def _switch_view(self, dpid: int, policy: Policy) -> dict[str, Any]:
        sw = self.switches.switches.get(dpid)
        ports = []
        if sw is not None:
            # The VM on each port is the one the VM views place there (an ambiguous one
            # is on none).
            places = self.switches.locations(policy)
            at = {place: name for name, place in places.items() if place and place[0] == dpid}
            networks: dict[str, list[str]] = {}
            for net in policy.networks.values():
                networks.setdefault(net.port, []).append(net.name)
            ports = [
                {
                    "name": name,
                    "ofport": no,
                    "vm": at.get((dpid, no)),
                    "networks": sorted(networks.get(name, [])),
                }
                for name, no in sorted(sw.ports.items(), key=lambda kv: kv[1])
            ]
        return {
            "dpid": dpid_str(dpid),
            "name": sw.name if sw else None,
            "zone": policy.zones.get(dpid),
            "connected": sw.connected if sw else False,
            "packet_ins": sw.packet_ins if sw else 0,
            "fabric_port": self.switches.fabric_port(dpid, policy),
            "ports": ports,
        }

    def set_fabric_port(
        self, dpid: int, port: str | None, plan: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """PUT /switches/{dpid}: set (None: clear) the switch's own fabric port, through
        change() like every mutation; the switch's view after it. The switch need not be
        connected or known yet (a host that has not connected); its view is answered even
        when a cleared setting leaves it unlisted."""

        def put(policy: Policy) -> Policy:
            policy.set_fabric_port(dpid, port)
            return policy

        # The view of the policy this change made: the next change may follow at once.
        return self._switch_view(dpid, self.change(put, plan))

    def flows_view(self) -> list[dict[str, Any]]:
        out = []
        for sw in sorted(self.switches.switches.values(), key=lambda s: s.dpid):
            if not sw.connected:
                continue
            try:
                stats = self.switches.flow_stats(sw.dpid)
            except SwitchError as e:
                raise SwitchRejected(f"cannot read flows of {dpid_str(sw.dpid)}: {e}") from e
            for raw, flow in sorted(stats, key=lambda rf: (rf[0].key[0], -rf[0].key[1])):
                out.append(_flow_view(sw.dpid, raw, flow))
        return out


def _flow_view(dpid: int, raw: wire.RawFlow, flow: Flow | None) -> dict[str, Any]:
    table, priority, match = raw.key
    view: dict[str, Any] = {
        "dpid": dpid_str(dpid),
        "table": table,
        "priority": priority,
        "cookie": f"0x{raw.cookie:x}",
        "packets": raw.packets,
        "bytes": raw.bytes,
        "duration": round(raw.duration, 3),
    }
    if flow is None:  # carries our cookie tag, but is nothing we make: show its bytes
        view.update(
            match={"oxm": match.hex()},
            actions=None,
            text=f"table={table}, priority={priority} (unparsed)",
        )
    else:
        view.update(
            match=flow.match.fields(), actions=[a.text() for a in flow.actions], text=flow.text()
        )
    return view
