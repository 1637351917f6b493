"""GET /metrics against a fake switch (fake_switch.py): the exposition parses with the
Prometheus client's own parser, and each metric says what the switch's counters and the
firewall's state say, with the labels the design names."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wsgi_client
from fake_switch import FakeSwitch, is_read_back
from prometheus_client.parser import text_string_to_metric_families
from ryu.app.wsgi import WSGIApplication
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3 as ofp
from shapes import MAC1, MAC2
from webob import Request

from ryu_ctfw import channel, compiler, metrics, rest, wire
from ryu_ctfw.compiler import Flow
from ryu_ctfw.firewall import Firewall, SwitchRejected
from ryu_ctfw.policy import NotFound, PairRequest, Policy, Vm

BR0 = {ofp.OFPP_LOCAL: "br0", 2: "tap2", 3: "tap4"}  # vm1 on ofport 2, vm2 on 3
IP1, IP2 = "198.18.0.1", "198.18.0.2"
PAIR = {"switch": "br0", "pair": "1", "initiator": "vm1", "responder": "vm2"}
SHORT = 0.05  # REPLY_TIMEOUT: a silent switch is found out at once

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def parse(body: bytes) -> Samples:
    """Every sample of a scrape by name, then by its labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(frozenset(labels.items()))


def scrape(fw: Firewall) -> Samples:
    body, content_type = metrics.scrape(fw)
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body)


class Lab:
    """A firewall with the seed's policy and the fake switch br0 it keeps in sync."""

    def __init__(self, state: Path) -> None:
        self.fw = Firewall(state)
        self.fw.change(_seed)
        self.switch = FakeSwitch(self.fw.switches, ports=BR0, parts=4)
        self.fw.switches.connected(self.switch)
        self.fw.switches.sync_all(timeout=5)

    def lines(self, dpid: int = 1) -> list[Flow]:
        """The flows the switch holds, as the compiler made them."""
        flowset = self.fw.switches.switches[dpid].flows
        assert flowset is not None, "the switch is not in sync"
        return list(flowset.flows().values())

    def count(self, which: Callable[[Flow], bool], packets: Callable[[int], int]) -> list[Flow]:
        """Let the switch count packets (the nth chosen line `packets(n)`, 100 bytes each)
        on the lines `which` chooses; the lines chosen."""
        chosen = [f for f in self.lines() if which(f)]
        for n, flow in enumerate(chosen):
            key = wire.wire_key(flow)
            held = self.switch.table[key]
            self.switch.table[key] = held._replace(packets=packets(n), bytes=100 * packets(n))
        return chosen


def _seed(policy: Policy) -> None:
    policy.put_vm(Vm("vm1", "tap2", MAC1, (IP1,)))
    policy.put_vm(Vm("vm2", "tap4", MAC2, (IP2,)))
    policy.add_pair(PairRequest("vm1", "vm2"))


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "REPLY_TIMEOUT", SHORT)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path / "state.json")
    yield made
    for sw in made.fw.switches.switches.values():
        if sw.worker is not None:
            hub.kill(sw.worker)


def is_pair(flow: Flow) -> bool:
    return compiler.cookie_kind(flow.cookie) == compiler.KIND_PAIR


def drops_for(reason: str, in_port: int | None = None) -> Callable[[Flow], bool]:
    return lambda f: (
        compiler.drop_reason(f) == reason and (in_port is None or f.match.in_port == in_port)
    )


# --- the exposition --------------------------------------------------------------------------


def test_a_scrape_has_every_metric_the_design_names(lab: Lab) -> None:
    body, _ = metrics.scrape(lab.fw)
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert {
        "ctfw_pair_packets": "counter",
        "ctfw_pair_bytes": "counter",
        "ctfw_pair_connections": "counter",
        "ctfw_port_drops": "counter",
        "ctfw_policy_drops": "counter",
        "ctfw_events": "counter",
        "ctfw_events_dropped": "counter",
        "ctfw_switches_connected": "gauge",
        "ctfw_sync_duration_seconds": "histogram",
        "ctfw_change_duration_seconds": "histogram",
        "ctfw_rest_responses": "counter",
        "ctfw_scrape_errors": "counter",
        "ctfw_info": "gauge",  # the text format has no info type: a gauge at 1
    }.items() <= families.items()
    samples = parse(body)
    assert value(samples, "ctfw_switches_connected") == 1
    version = importlib.metadata.version("ryu-ctfw")
    assert value(samples, "ctfw_info", version=version) == 1


def test_pair_counters_are_the_sums_of_the_pairs_lines(lab: Lab) -> None:
    assert value(scrape(lab.fw), "ctfw_pair_packets_total", **PAIR) == 0  # nothing yet
    lines = lab.count(is_pair, lambda n: n + 1)
    lab.count(drops_for("no-pair"), lambda n: 7)  # a drop is no pair's traffic
    samples = scrape(lab.fw)
    packets = sum(range(1, len(lines) + 1))
    opening = sum(n + 1 for n, f in enumerate(lines) if compiler.opens_connections(f))
    assert value(samples, "ctfw_pair_packets_total", **PAIR) == packets
    assert value(samples, "ctfw_pair_bytes_total", **PAIR) == 100 * packets
    assert value(samples, "ctfw_pair_connections_total", **PAIR) == opening
    assert 0 < opening < packets  # the replies' lines open no connection
    assert len(samples["ctfw_pair_packets_total"]) == 1  # one pair, one switch


def test_drops_by_port_and_reason_and_the_policy_drops(lab: Lab) -> None:
    lab.count(drops_for("forged-source", in_port=2), lambda n: 3)
    lab.count(drops_for("tagged", in_port=3), lambda n: 4)
    lab.count(drops_for("no-pair"), lambda n: 7)
    lab.count(drops_for("invalid"), lambda n: 2)
    samples = scrape(lab.fw)
    port = "ctfw_port_drops_total"
    assert value(samples, port, switch="br0", port="tap2", vm="vm1", reason="forged-source") == 3
    assert value(samples, port, switch="br0", port="tap4", vm="vm2", reason="tagged") == 4
    # The other port's lines are there, at zero: a series exists before its first drop.
    assert value(samples, port, switch="br0", port="tap4", vm="vm2", reason="forged-source") == 0
    assert value(samples, port, switch="br0", port="tap2", vm="vm1", reason="tagged") == 0
    policy = "ctfw_policy_drops_total"
    assert value(samples, policy, switch="br0", reason="no-pair") == 7
    assert value(samples, policy, switch="br0", reason="invalid") == 2
    assert value(samples, policy, switch="br0", reason="revoked") == 0
    # Table 1's drops are no port's, a port's guards no policy's.
    assert {dict(k)["reason"] for k in samples[policy]} == {"no-pair", "invalid", "revoked"}
    assert not {dict(k)["reason"] for k in samples[port]} & {"no-pair", "invalid", "revoked"}
    assert value(samples, "ctfw_pair_packets_total", **PAIR) == 0


def test_events_and_the_events_meters_dropped(lab: Lab) -> None:
    for _ in range(2):
        lab.fw.events.add(
            switch="br0", vm="vm2", peer="vm1", protocol="tcp", src=IP2, dst=IP1,
            sport=40000, dport=23, verdict="denied", reason="no-pair", pair=None,
        )  # fmt: skip
    lab.fw.switches.switches[1].meter_drops = {3: 4, compiler.SHARED_METER: 1}
    samples = scrape(lab.fw)
    assert value(samples, "ctfw_events_total", verdict="denied", reason="no-pair") == 2
    dropped = "ctfw_events_dropped_total"
    assert value(samples, dropped, switch="br0", port="tap4") == 4
    assert value(samples, dropped, switch="br0", port="other") == 1  # the shared meter
    assert len(samples[dropped]) == 2


# --- the counters the hooks feed --------------------------------------------------------------


def count_of(samples: Samples, histogram: str, **labels: str) -> float:
    return value(samples, f"{histogram}_count", **labels) or 0


def test_change_latency_counts_real_changes_only(lab: Lab) -> None:
    change = "ctfw_change_duration_seconds"
    before = count_of(scrape(lab.fw), change, outcome="applied")
    assert before == 1  # the seed's change
    lab.fw.change(lambda p: p.put_vm(Vm("vm3", "tap5")))
    lab.fw.change(lambda p: p.put_vm(Vm("vm4", "tap6")), plan={})  # a dry run: not timed
    with pytest.raises(NotFound):  # refused before anything changed: not timed
        lab.fw.change(lambda p: p.delete_vm("nobody"))
    lab.switch.refuse = (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD)
    with pytest.raises(SwitchRejected):
        lab.fw.change(lambda p: p.add_pair(PairRequest("vm2", "vm1")))
    samples = scrape(lab.fw)
    assert count_of(samples, change, outcome="applied") == 2
    assert count_of(samples, change, outcome="refused") == 1
    assert value(samples, f"{change}_sum", outcome="applied") > 0
    # The histogram's buckets are cumulative and end with every change at +Inf.
    buckets = sorted(
        (float(dict(k)["le"]), v)
        for k, v in samples[f"{change}_bucket"].items()
        if dict(k)["outcome"] == "applied"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), 2)


def test_sync_duration_by_kind(lab: Lab) -> None:
    sync = "ctfw_sync_duration_seconds"
    samples = scrape(lab.fw)
    assert count_of(samples, sync, kind="full") == 1  # the read-back after the connect
    updates = count_of(samples, sync, kind="update")
    lab.fw.change(lambda p: p.put_vm(Vm("vm3", "tap5")))
    samples = scrape(lab.fw)
    assert count_of(samples, sync, kind="update") == updates + 1
    assert count_of(samples, sync, kind="full") == 1


def test_rest_answers_by_method_and_status(tmp_path: Path) -> None:
    wsgi = WSGIApplication()
    fw = Firewall(tmp_path / "state.json")
    rest.register(wsgi, fw)

    def call(method: str, path: str, body: Any = None) -> int:
        return wsgi_client.call(wsgi, method, path, body).status_int

    assert call("GET", "/vms") == 200
    assert call("PUT", "/vms/vm1", {"port": "tap2"}) == 201
    assert call("PUT", "/vms/vm1", {"port": "tap2", "bogus": 1}) == 400
    assert call("GET", "/vms/nobody") == 404
    assert call("GET", "/vms/nobody") == 404
    assert call("BREW", "/vms") == 405  # a method HTTP does not have: labelled "other"
    assert call("DELETE", "/vms/vm1?dry_run=true") == 200
    assert call("GET", "/ctfw/nowhere") == 404  # no route: unknown_path answers
    assert call("GET", "/vms/vm1\n") == 404  # dispatch answers with unknown_path: once
    resp = Request.blank("/metrics").get_response(wsgi)
    assert resp.status_int == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse(resp.body)
    rest_answers = {
        (dict(k)["method"], dict(k)["status"]): v
        for k, v in samples["ctfw_rest_responses_total"].items()
    }
    # The scrape's own answer is counted once it is given: the next scrape shows it.
    assert rest_answers == {
        ("GET", "200"): 1, ("PUT", "201"): 1, ("PUT", "400"): 1, ("GET", "404"): 4,
        ("other", "405"): 1, ("DELETE", "200"): 1,
    }  # fmt: skip
    again = parse(Request.blank("/metrics").get_response(wsgi).body)
    assert value(again, "ctfw_rest_responses_total", method="GET", status="200") == 2
    # The dry run changed nothing, so timed nothing: one change, the PUT.
    assert count_of(again, "ctfw_change_duration_seconds", outcome="applied") == 1


def test_each_firewall_counts_its_own(lab: Lab, tmp_path: Path) -> None:
    other = Firewall(tmp_path / "other.json")
    samples = scrape(other)
    assert count_of(samples, "ctfw_change_duration_seconds", outcome="applied") == 0
    assert count_of(samples, "ctfw_sync_duration_seconds", kind="full") == 0
    assert value(samples, "ctfw_switches_connected") == 0
    assert "ctfw_pair_packets_total" not in samples
    assert count_of(scrape(lab.fw), "ctfw_change_duration_seconds", outcome="applied") == 1


# --- switches that cannot be read -------------------------------------------------------------


def test_a_switch_that_does_not_answer_is_skipped_and_counted(lab: Lab) -> None:
    br1 = FakeSwitch(lab.fw.switches, ports={ofp.OFPP_LOCAL: "br1", 7: "tap7"}, dpid=2)
    lab.fw.switches.connected(br1)
    lab.fw.switches.sync_all(timeout=5)
    lab.count(drops_for("no-pair"), lambda n: 7)
    lab.switch.silence = is_read_back  # br0 falls silent to the flow read
    for scrapes in (1, 2):
        samples = scrape(lab.fw)
        assert value(samples, "ctfw_scrape_errors_total", switch="br0") == scrapes
        assert value(samples, "ctfw_scrape_errors_total", switch="br1") is None
        # br0's counters are left out, not shown as zero; br1's are there.
        assert value(samples, "ctfw_policy_drops_total", switch="br0", reason="no-pair") is None
        assert value(samples, "ctfw_policy_drops_total", switch="br1", reason="no-pair") == 0
        assert "ctfw_pair_packets_total" not in samples
        assert value(samples, "ctfw_switches_connected") == 2
    lab.switch.silence = lambda msg: False
    samples = scrape(lab.fw)
    assert value(samples, "ctfw_policy_drops_total", switch="br0", reason="no-pair") == 7
    assert value(samples, "ctfw_scrape_errors_total", switch="br0") == 2


def test_a_disconnected_switch_is_not_read(lab: Lab) -> None:
    lab.fw.switches.disconnected(lab.switch)
    reads = len(lab.switch.asked(type(channel.our_flows(lab.switch))))
    samples = scrape(lab.fw)
    assert value(samples, "ctfw_switches_connected") == 0
    assert "ctfw_pair_packets_total" not in samples
    assert samples.get("ctfw_scrape_errors_total", {}) == {}
    assert len(lab.switch.asked(type(channel.our_flows(lab.switch)))) == reads


def test_a_switch_without_a_bridge_name_is_labelled_by_its_dpid(lab: Lab) -> None:
    lab.fw.switches.switches[1].name = None
    samples = scrape(lab.fw)
    label = {**PAIR, "switch": "0000000000000001"}
    assert value(samples, "ctfw_pair_packets_total", **label) == 0


def test_a_flow_that_is_nothing_we_make_counts_nothing(lab: Lab) -> None:
    stats = [(fake_raw, None) for fake_raw in lab.switch.table.values()]
    stats = [(raw._replace(packets=9, bytes=900), flow) for raw, flow in stats]
    counts = metrics.count_flows(stats)
    assert counts == metrics.count_flows([])
