"""GET /metrics: the firewall in the Prometheus text format (issue 13, point 2).

Two kinds of metric. What happens inside the controller (REST answers, change latency,
sync duration, scrape errors) is counted as it happens, by the one-line hooks below, into
a registry of the firewall's own: tests run many firewalls in one process, and the global
registry would mix them. What the switches count (packets of a pair's lines, drops by
reason) and the firewall's state (events, meter drops, switches connected) is read on
each scrape by `_Live`, from the switches' flow counters: nothing is kept twice.

A pair's or a drop's counter is the sum of its lines' counters; a line the controller
replaces (a change to the pair) starts again at zero, which Prometheus takes as a counter
reset.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from ryu.lib import hub

from ryu_ctfw import compiler
from ryu_ctfw.channel import SwitchError, dpid_str
from ryu_ctfw.policy import Policy, PolicyError

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall
    from ryu_ctfw.switch import Switch, SwitchManager

LOG = logging.getLogger("ryu_ctfw.metrics")
# The text format every Prometheus version reads (the client's newer 1.0.0 differs only for
# names outside the legacy character set, which ours never are).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Table 1's drops: what the policy refuses. Every other drop reason is a port's guard.
POLICY_REASONS = frozenset({"no-pair", "invalid", "revoked"})
# A change or a sync takes milliseconds, a first sync of tens of thousands of flows seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0, 120.0)  # fmt: skip
# Methods a client may send are unbounded; the label keeps to those HTTP defines.
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"})
# Why a change that got as far as the switches ended (its answer's status: firewall.py).
CHANGE_OUTCOMES = {502: "refused", 504: "unknown"}
COUNTED = "ryu_ctfw.metrics.counted"  # in a request's WSGI environ: its answer is counted

COOKIE_ID = (1 << 40) - 1  # a cookie's low bits: the id of what made the line (compiler)

T = TypeVar("T")


# --- what is counted as it happens ----------------------------------------------------------


class Recorder:
    """The metrics one firewall counts as things happen, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rest_responses = Counter(
            "ctfw_rest_responses", "REST answers, by request method and status",
            ["method", "status"], registry=self.registry,
        )  # fmt: skip
        self.change_seconds = Histogram(
            "ctfw_change_duration_seconds",
            "Policy changes from the call to the switches' confirmation (waiting for the"
            " change before included), by outcome: applied, refused or unknown",
            ["outcome"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.sync_seconds = Histogram(
            "ctfw_sync_duration_seconds",
            "Syncs of a switch's flows: full (read back and compared, after a connect) or"
            " update (a change's units)",
            ["kind"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.scrape_errors = Counter(
            "ctfw_scrape_errors", "Scrapes that could not read a switch's flow counters",
            ["switch"], registry=self.registry,
        )  # fmt: skip


# Keyed by the switch manager: the switch side knows no firewall, and the firewall and its
# REST layer reach the manager as fw.switches. Weak: a firewall's metrics go with it.
_recorders: weakref.WeakKeyDictionary[SwitchManager, Recorder] = weakref.WeakKeyDictionary()


def recorder(mgr: SwitchManager) -> Recorder:
    rec = _recorders.get(mgr)
    if rec is None:
        rec = _recorders[mgr] = Recorder()
    return rec


def counts_responses(action: Callable[..., T]) -> Callable[..., T]:
    """rest.CtfwController's actions (dispatch, unknown_path): every answer, counted by
    method and status, once (dispatch answers some requests with unknown_path)."""

    @functools.wraps(action)
    def counted(ctl: Any, req: Any, *args: Any, **kwargs: Any) -> T:
        resp = action(ctl, req, *args, **kwargs)
        if not req.environ.get(COUNTED):
            req.environ[COUNTED] = True
            method = req.method if req.method in METHODS else "other"
            recorder(ctl.fw.switches).rest_responses.labels(method, str(resp.status_code)).inc()
        return resp

    return counted


def times_change(change: Callable[..., T]) -> Callable[..., T]:
    """firewall.Firewall.change: how long real changes take (dry runs change nothing, and
    a change its own checks refused never reached a switch: neither is timed)."""

    @functools.wraps(change)
    def timed(fw: Firewall, mutate: Callable[..., T], plan: Any = None) -> T:
        if plan is not None:
            return change(fw, mutate, plan)
        start = time.perf_counter()
        outcome: str | None = None
        try:
            result = change(fw, mutate)
            outcome = "applied"
            return result
        except PolicyError as e:
            outcome = CHANGE_OUTCOMES.get(e.status)
            raise
        finally:
            if outcome is not None:
                seconds = time.perf_counter() - start
                recorder(fw.switches).change_seconds.labels(outcome).observe(seconds)

    return timed


def times_sync(sync: Callable[[SwitchManager, Switch], T]) -> Callable[[SwitchManager, Switch], T]:
    """switch.SwitchManager._sync: how long each sync of a switch takes, failed ones too."""

    @functools.wraps(sync)
    def timed(mgr: SwitchManager, sw: Switch) -> T:
        kind = "full" if sw.flows is None else "update"  # _sync reconciles an unread switch
        start = time.perf_counter()
        try:
            return sync(mgr, sw)
        finally:
            recorder(mgr).sync_seconds.labels(kind).observe(time.perf_counter() - start)

    return timed


# --- what is read on scrape ------------------------------------------------------------------


def scrape(fw: Firewall) -> tuple[bytes, str]:
    """The exposition of one scrape: the firewall's own counters, then what is read now."""
    registry = CollectorRegistry()
    registry.register(_Live(fw))  # first: its reads count their errors in the recorder's
    registry.register(recorder(fw.switches).registry)
    return generate_latest(registry), CONTENT_TYPE


@dataclass
class _Counts:
    """One switch's flow counters, summed by what they count."""

    pair_packets: Tally[int]  # pair id -> packets
    pair_bytes: Tally[int]
    pair_connections: Tally[int]
    port_drops: Tally[tuple[int | None, str]]  # (in_port or None, reason) -> packets
    policy_drops: Tally[str]  # reason -> packets


def count_flows(
    stats: list[tuple[Any, compiler.Flow | None]], pause: Callable[[], object] = lambda: None
) -> _Counts:
    """Sum a switch's flow-stats entries (RawFlow, Flow) by pair and by drop reason
    (`pause` now and then: tens of thousands of flows take a while)."""
    counts = _Counts(Tally(), Tally(), Tally(), Tally(), Tally())
    pair_kind = compiler.KIND_PAIR
    for n, (raw, flow) in enumerate(stats, start=1):
        if n % 4096 == 0:
            pause()
        if flow is None:  # ours by its cookie tag, but nothing we make: it counts nothing
            continue
        reason = compiler.drop_reason(flow)
        if reason is not None:
            if reason in POLICY_REASONS:
                counts.policy_drops[reason] += raw.packets
            else:
                counts.port_drops[(flow.match.in_port, reason)] += raw.packets
        elif compiler.cookie_kind(flow.cookie) == pair_kind:
            pair = flow.cookie & COOKIE_ID
            counts.pair_packets[pair] += raw.packets
            counts.pair_bytes[pair] += raw.bytes
            if compiler.opens_connections(flow):
                counts.pair_connections[pair] += raw.packets
    return counts


class _Families:
    """The metrics read from the switches, filled one switch at a time."""

    def __init__(self) -> None:
        pair = ["switch", "pair", "initiator", "responder"]
        self.packets = CounterMetricFamily(
            "ctfw_pair_packets", "Packets a pair's lines passed, both directions", labels=pair
        )
        self.bytes = CounterMetricFamily(
            "ctfw_pair_bytes", "Bytes a pair's lines passed, both directions", labels=pair
        )
        self.connections = CounterMetricFamily(
            "ctfw_pair_connections", "New connections a pair admitted", labels=pair
        )
        self.port_drops = CounterMetricFamily(
            "ctfw_port_drops",
            "Packets a port's guards dropped, by reason (port and vm empty: a line for no"
            " one port, such as another port claiming a VM's address)",
            labels=["switch", "port", "vm", "reason"],
        )
        self.policy_drops = CounterMetricFamily(
            "ctfw_policy_drops", "Packets the policy table dropped, by reason",
            labels=["switch", "reason"],
        )  # fmt: skip
        self.events_dropped = CounterMetricFamily(
            "ctfw_events_dropped",
            "Events a switch's meters dropped, by the port they came in by (other: the"
            " meter shared by ports without one of their own)",
            labels=["switch", "port"],
        )

    def all(self) -> tuple[Metric, ...]:
        return (self.packets, self.bytes, self.connections, self.port_drops,
                self.policy_drops, self.events_dropped)  # fmt: skip

    def add_meters(self, sw: Switch) -> None:
        ports = _port_names(sw)
        for meter, n in sorted(sw.meter_drops.items()):
            self.events_dropped.add_metric([_switch_label(sw), ports.get(meter, "other")], n)

    def add_pairs(self, sw: Switch, counts: _Counts, policy: Policy) -> None:
        for pair_id, n in sorted(counts.pair_packets.items()):
            pair = policy.pairs.get(pair_id)
            if pair is None:  # a line of a pair deleted meanwhile
                continue
            labels = [_switch_label(sw), str(pair_id), pair.initiator, pair.responder]
            self.packets.add_metric(labels, n)
            self.bytes.add_metric(labels, counts.pair_bytes[pair_id])
            self.connections.add_metric(labels, counts.pair_connections[pair_id])

    def add_drops(self, sw: Switch, counts: _Counts, vms: dict[int, str]) -> None:
        """`vms`: the VM on each of the switch's ports (ofport -> name)."""
        name, ports = _switch_label(sw), _port_names(sw)
        for (ofport, reason), n in sorted(counts.port_drops.items(), key=_by_port):
            port = "" if ofport is None else ports.get(ofport, str(ofport))
            vm = "" if ofport is None else vms.get(ofport, "")
            self.port_drops.add_metric([name, port, vm, reason], n)
        for reason, n in sorted(counts.policy_drops.items()):
            self.policy_drops.add_metric([name, reason], n)


class _Live:
    """A collector of one scrape: reads the switches' flow counters and the firewall's
    state. Made per scrape, so no registry keeps a firewall alive."""

    def __init__(self, fw: Firewall) -> None:
        self.fw = fw

    def collect(self) -> Iterator[Metric]:
        fw, policy, families = self.fw, self.fw.policy, _Families()
        places = fw.switches.locations(policy)
        switches = sorted((s for s in fw.switches.switches.values() if s.connected),
                          key=lambda s: s.dpid)  # fmt: skip
        # All at once: a switch that does not answer keeps the scrape waiting for its
        # timeout once, not once per silent switch.
        reads = [hub.spawn(self._read, sw, raise_error=True) for sw in switches]
        for sw, read in zip(switches, reads, strict=True):
            families.add_meters(sw)
            counts = read.wait()
            if counts is None:
                continue
            families.add_pairs(sw, counts, policy)
            vms = {p[1]: vm for vm, p in places.items() if p is not None and p[0] == sw.dpid}
            families.add_drops(sw, counts, vms)
        yield from families.all()
        yield _events(fw)
        yield GaugeMetricFamily(
            "ctfw_switches_connected", "Switches connected to this controller now", len(switches)
        )
        yield InfoMetricFamily("ctfw", "The ryu-ctfw that runs", {"version": _version()})

    def _read(self, sw: Switch) -> _Counts | None:
        """The switch's counters; None (and counted) when it does not answer the read."""
        try:
            # Pausing lets the controller's other work (switches, REST) go on meanwhile.
            return count_flows(self.fw.switches.flow_stats(sw.dpid), lambda: hub.sleep(0))
        except SwitchError as e:
            name = _switch_label(sw)
            LOG.warning("metrics: cannot read the flows of switch %s: %s", name, e)
            recorder(self.fw.switches).scrape_errors.labels(name).inc()
            return None


def _port_names(sw: Switch) -> dict[int, str]:
    """The switch's port names by ofport."""
    return {no: port for port, no in sw.ports.items()}


def _switch_label(sw: Switch) -> str:
    return sw.name or dpid_str(sw.dpid)


def _by_port(item: tuple[tuple[int | None, str], int]) -> tuple[int, str]:
    (ofport, reason), _n = item
    return (-1 if ofport is None else ofport, reason)


def _events(fw: Firewall) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "ctfw_events", "Events of the connection log, by verdict and reason",
        labels=["verdict", "reason"],
    )  # fmt: skip
    for (verdict, reason), n in sorted(fw.events.counts.items()):
        family.add_metric([verdict, reason], n)
    return family


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("ryu-ctfw")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"
