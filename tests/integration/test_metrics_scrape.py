"""GET /metrics on the real controller and a real switch: scraped before and after real
traffic, parsed with the Prometheus client's own parser, the counters rose as the traffic
says. Allowed traffic sniffs a bystander that must stay silent; each refusal shows that
its destination saw nothing."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import frames
from conftest import Lab
from frames import flow_marker
from prometheus_client.parser import text_string_to_metric_families
from sniff import Sniffer, seen

from ryu_ctfw import lab

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]
FORGED_IP = "198.18.0.77"  # nobody's address


def scrape(env: Lab) -> Samples:
    url = f"http://127.0.0.1:{env.ctl.api_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not there yet (a counter that never rose)."""
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def scrape_until(env: Lab, done: Callable[[Samples], bool], what: str) -> Samples:
    """The first scrape for which `done` holds: the userspace datapath reports its
    counters a little late."""
    got: list[Samples] = []

    def check() -> bool:
        got[:] = [scrape(env)]
        return done(got[0])

    lab.wait_for(check, 10, what)
    return got[0]


def test_counters_rise_with_allowed_denied_and_forged_traffic(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    vm3 = seed.vm("vm3", 4, 3)  # in no pair: a bystander
    sw = seed.bridge
    pair = {"switch": sw, "pair": "1", "initiator": "vm1", "responder": "vm2"}
    guard1 = {"switch": sw, "port": vm1.port, "vm": "vm1", "reason": "forged-source"}
    no_pair = {"switch": sw, "reason": "no-pair"}
    before = scrape(seed)
    assert value(before, "ctfw_switches_connected") == 1
    assert seed.ctl.api("GET", "/ctfw/v1/vms/nobody")[0] == 404

    # Allowed: vm1 -> vm2, ping, TCP and UDP; the bystander sees none of it.
    with lab.servers(vm2, ("tcp", 22), ("udp", 53)):
        bystander = [Sniffer(vm3, flow_marker(vm1.ip, vm2.ip))]
        assert vm1.ping(vm2.ip) and vm1.tcp(vm2.ip, 22) and vm1.udp(vm2.ip, 53)
        assert seen(bystander) == [0]
    # Denied: vm2 -> vm1 has no pair; vm1 sees nothing.
    with lab.servers(vm1, ("tcp", 23)):
        dst = [Sniffer(vm1, flow_marker(vm2.ip, vm1.ip))]
        assert not vm2.ping(vm1.ip) and not vm2.tcp(vm1.ip, 23, timeout=1)
        assert seen(dst) == [0]
    # Forged: vm1 sends from nobody's address; vm2 sees nothing.
    dst = [Sniffer(vm2, flow_marker(FORGED_IP, vm2.ip))]
    vm1.send_frame(frames.icmp_echo_frame(vm1.mac, vm2.mac, FORGED_IP, vm2.ip), count=3)
    assert seen(dst) == [0]

    def rose(name: str, at_least: float, **labels: str) -> Callable[[Samples], bool]:
        return lambda s: value(s, name, **labels) - value(before, name, **labels) >= at_least

    # ping: 2 requests and 2 replies; TCP: handshake, data, echo, close; UDP: there and back.
    checks = [
        rose("ctfw_pair_packets_total", 12, **pair),
        rose("ctfw_pair_connections_total", 3, **pair),  # ping, TCP, UDP
        rose("ctfw_policy_drops_total", 3, **no_pair),  # 2 echo requests and a SYN at least
        rose("ctfw_port_drops_total", 3, **guard1),
        # Each drop is an event too (the port's meter lets a few through at least).
        rose("ctfw_events_total", 1, verdict="denied", reason="no-pair"),
        rose("ctfw_events_total", 1, verdict="denied", reason="forged-source"),
    ]
    after = scrape_until(seed, lambda s: all(c(s) for c in checks), "the counters to rise")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    packets = delta("ctfw_pair_packets_total", **pair)
    # The smallest frame the pair passes is a 42-byte ARP-sized one; ours are bigger.
    assert delta("ctfw_pair_bytes_total", **pair) >= 42 * packets
    assert delta("ctfw_pair_connections_total", **pair) < packets  # not the replies
    # Nothing of it was counted for the other VMs' guards, nor as another pair.
    for vm, name in ((vm2, "vm2"), (vm3, "vm3")):
        guard = {**guard1, "port": vm.port, "vm": name}
        assert delta("ctfw_port_drops_total", **guard) == 0
    assert {dict(k)["pair"] for k in after["ctfw_pair_packets_total"]} == {"1"}
    # The REST answers: the 404 above, the VMs registered (201) and this test's scrape.
    rest = "ctfw_rest_responses_total"
    assert delta(rest, method="GET", status="404") == 1
    assert value(after, rest, method="PUT", status="201") == 3  # vm1, vm2, vm3
    assert value(after, rest, method="POST", status="201") == 1  # the pair
    assert delta(rest, method="GET", status="200") >= 1  # the first scrape at least
    assert value(after, "ctfw_switches_connected") == 1
    assert value(after, "ctfw_sync_duration_seconds_count", kind="full") >= 1
    assert value(after, "ctfw_change_duration_seconds_count", outcome="applied") >= 4
    assert after.get("ctfw_scrape_errors_total", {}) == {}


def test_pair_connections_count_new_connections_not_packets(seed: Lab) -> None:
    """Needs the pair's original lines split into +new and +est (opens_connections): the
    connections counter rises once per connection, however many packets it carries."""
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    pair = {"switch": seed.bridge, "pair": "1", "initiator": "vm1", "responder": "vm2"}
    before = scrape(seed)
    with lab.servers(vm2, ("tcp", 22)):
        for _ in range(3):
            assert vm1.tcp(vm2.ip, 22)

    def delta(s: Samples, name: str) -> float:
        return value(s, name, **pair) - value(before, name, **pair)

    # Each connection: SYN, ACK, data, FIN and ACK from vm1 at least. The datapath
    # reports each line's counters in its own time: wait for both, then for stragglers.
    scrape_until(
        seed,
        lambda s: (
            delta(s, "ctfw_pair_packets_total") >= 3 * 5
            and delta(s, "ctfw_pair_connections_total") >= 3
        ),
        "the pair's packets and connections",
    )
    time.sleep(1.5)
    after = scrape(seed)
    assert delta(after, "ctfw_pair_connections_total") == 3
    assert delta(after, "ctfw_pair_packets_total") >= 3 * 5
