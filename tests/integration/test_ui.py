"""GET /ctfw/ui/ in a real headless Chromium (Debian's `chromium`) against the real
controller, switch and traffic: the page shows who may reach whom with live counters, and
the denied attempts as they happen.

Chromium runs once per look (`--dump-dom` after a virtual-time budget, in which the page's
2 s refresh loop runs a few times), in this test's network namespace (conftest), with a
private profile, in a session of its own that is killed by its pid when it overstays.
The DOM it prints is read with the standard library's HTML parser.

Set CTFW_UI_SCREENSHOTS=/some/folder to keep a screenshot of the page at the end of each
test against the controller (<test>.png, 1200x800), to look at.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Lab
from frames import flow_marker
from prometheus_client.parser import text_string_to_metric_families
from sniff import Sniffer, seen

from ryu_ctfw import lab, ui

UI = "/ctfw/ui/"
BUDGET_MS = 4000  # virtual time: two refreshes of the page at least
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


# --- the browser ------------------------------------------------------------------------------
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise lab.LabError("chromium not found: run `make deps` (Debian package: chromium)")
    return path


def run_chromium(url: str, *how: str, timeout: float = 90) -> str:
    """Chromium's standard output for `url`, looked at in `how` (--dump-dom, --screenshot)."""
    with tempfile.TemporaryDirectory(prefix="ctfw-chromium-") as profile:
        argv = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu",  # root needs no-sandbox
            f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update",
            "--disable-dev-shm-usage", f"--virtual-time-budget={BUDGET_MS}", *how, url,
        ]  # fmt: skip
        env = {**os.environ, "HOME": profile}  # it writes caches under $HOME too
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=profile, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = "", f"(no answer in {timeout} s)"
        finally:
            # Its renderer and helpers are in the session it leads: the group of its pid.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.returncode != 0 or (not out and "--dump-dom" in how):
            raise lab.LabError(f"chromium {url} failed ({proc.returncode}): {err[-2000:]}")
        return out


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # text inside, children's included

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements under (and including) this one with `tag` and `attrs` (data_x: data-x)."""
        return [
            e
            for e in self.walk()
            if (tag is None or e.tag == tag)
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        hits = self.all(tag, **attrs)
        assert len(hits) == 1, f"expected one {tag} {attrs}, got {len(hits)} in {self.text!r}"
        return hits[0]


class _Dom(HTMLParser):
    """The element tree of a dumped DOM, with attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if any(e.tag == tag for e in self.open[1:]):
            while self.open.pop().tag != tag:
                pass

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.parts.append(data)


@dataclass
class Page:
    html: str
    root: Element

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return self.root.all(tag, **attrs)

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        return self.root.one(tag, **attrs)

    def by_id(self, ident: str) -> Element:
        return self.one(id=ident)

    def pairs(self, initiator: str, responder: str) -> list[Element]:
        """The pair chips in the matrix cell initiator -> responder (which must exist)."""
        cell = self.one("td", data_initiator=initiator, data_responder=responder)
        return [e for e in cell.walk() if "data-pair" in e.attrs]

    def events(self) -> list[list[str]]:
        """The denied attempts' rows, newest first: the text of each cell."""
        rows = [e for e in self.all("tr") if e.attrs.get("class") == "event"]
        return [[td.text for td in row.children if td.tag == "td"] for row in rows]


def look(url: str) -> Page:
    html = run_chromium(url, "--dump-dom")
    dom = _Dom()
    dom.feed(html)
    dom.close()
    return Page(html, dom.root)


def page_url(env: Lab) -> str:
    return f"http://127.0.0.1:{env.ctl.api_port}{UI}"


def screenshot(env: Lab, name: str) -> None:
    folder = os.environ.get("CTFW_UI_SCREENSHOTS")
    if folder:
        shot = Path(folder) / f"{name}.png"
        run_chromium(page_url(env), f"--screenshot={shot}", "--window-size=1200,800")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def ok(page: Page) -> None:
    """The page refreshed and had nothing to complain about."""
    status = page.by_id("status")
    problems = page.by_id("problems").text
    assert status.attrs.get("data-state") == "ok", f"{status.text}: {problems}"


# --- the page's own bytes -------------------------------------------------------------------
def test_the_script_is_the_one_its_content_security_policy_allows() -> None:
    html = ui.page().decode()
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1, "one inline script, allowed by its hash"
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp, "the page carries its Content-Security-Policy"
    assert f"'sha256-{digest}'" in csp.group(1), f"update the script hash to sha256-{digest}"
    assert "connect-src 'self'" in csp.group(1) and "default-src 'none'" in csp.group(1)
    # Offline: nothing is loaded from anywhere else.
    assert not re.search(r"https?://|\b(src|href)\s*=", html), "the page names no URL"


# --- against the controller ------------------------------------------------------------------
def test_the_page_shows_the_seeds_pair(seed: Lab) -> None:
    page = look(page_url(seed))
    ok(page)
    for name in ("vm1", "vm2"):
        page.one("th", scope="col", title=f"{name} (vm)")
        page.one("th", scope="row", title=f"{name} (vm)")
    (chip,) = page.pairs("vm1", "vm2")
    assert chip.attrs["data-service"] == "any" and chip.attrs["data-log"] == "false"
    assert chip.text.startswith("any #1"), chip.text
    # vm2 may open nothing to vm1, and nobody to itself.
    assert page.pairs("vm2", "vm1") == page.pairs("vm1", "vm1") == page.pairs("vm2", "vm2") == []
    # The VMs' own chatter may be denied already (IPv6 multicast); the list is there.
    events = page.by_id("events")
    assert events.all("table", id="events-table") or events.text == "No denied attempts yet."
    screenshot(seed, "seed")


def test_services_and_log_markers_are_shown_per_pair(seed: Lab) -> None:
    seed.vm("vm3", 4, 3)
    seed.group("pals", ["vm1", "vm3"])
    seed.pair("vm2", "vm1", "tcp", "22")
    seed.pair("vm2", "vm1", "udp", "53-54")
    logged = {"initiator": "pals", "responder": "vm2", "protocol": "icmp", "log": True}
    seed.ctl.ok("POST", "/ctfw/v1/pairs", logged)
    page = look(page_url(seed))
    ok(page)
    page.one("th", scope="col", title="pals (group)")
    screenshot(seed, "services")
    assert [c.attrs["data-service"] for c in page.pairs("vm2", "vm1")] == ["tcp/22", "udp/53-54"]
    assert [c.attrs["data-log"] for c in page.pairs("vm2", "vm1")] == ["false", "false"]
    (chip,) = page.pairs("pals", "vm2")
    assert chip.attrs["data-service"] == "icmp" and chip.attrs["data-log"] == "true"
    assert chip.one("span", **{"class": "log"}).text == "log"
    assert [c.attrs["data-service"] for c in page.pairs("vm1", "vm2")] == ["any"]
    assert page.pairs("vm2", "pals") == page.pairs("vm3", "vm2") == []


def pair_packets(env: Lab, pair: int) -> tuple[int, int, int]:
    """Packets, bytes and new connections of `pair` summed over the switches, from a scrape
    of /metrics parsed by prometheus-client's own parser."""
    url = f"http://127.0.0.1:{env.ctl.api_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:  # text, not JSON: not ctl.api()
        text = resp.read().decode()
    totals = {"ctfw_pair_packets_total": 0, "ctfw_pair_bytes_total": 0,
              "ctfw_pair_connections_total": 0}  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("pair") == str(pair):
                totals[sample.name] += int(sample.value)
    return tuple(totals.values())  # type: ignore[return-value]


def counters(chip: Element) -> tuple[int, int, int]:
    shown = tuple(chip.attrs[f"data-{k}"] for k in ("packets", "bytes", "connections"))
    assert "-" not in shown, f"the page shows no counters for pair {chip.attrs['data-pair']}"
    return tuple(int(n) for n in shown)  # type: ignore[return-value]


def test_counters_in_the_cell_rise_with_traffic(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    bystander = seed.vm("vm3", 4, 3)
    other = seed.pair("vm2", "vm1", "udp", "53")
    page = look(page_url(seed))
    (seed_pair,), (back,) = page.pairs("vm1", "vm2"), page.pairs("vm2", "vm1")
    assert back.attrs["data-pair"] == str(other)
    before, back_before = counters(seed_pair), counters(back)
    server = vm2.serve("tcp", 22)
    try:
        watch = [Sniffer(bystander, flow_marker(vm1.ip, vm2.ip))]
        for sport in (40101, 40102, 40103):
            assert vm1.tcp(vm2.ip, 22, sport=sport), "vm1 -> vm2 tcp/22 is allowed"
        assert vm1.ping(vm2.ip), "and so is ping"
        assert seen(watch) == [0], "vm3 saw none of it"
    finally:
        server.kill()
    # The userspace datapath reports counters a little late: wait for the switch itself.
    lab.wait_for(lambda: pair_packets(seed, 1)[2] >= before[2] + 4, 5, "4 new connections")
    scraped = pair_packets(seed, 1)
    page = look(page_url(seed))
    ok(page)
    (seed_pair,), (back,) = page.pairs("vm1", "vm2"), page.pairs("vm2", "vm1")
    packets, octets, conns = counters(seed_pair)
    assert packets >= max(scraped[0], before[0] + 12), "3 handshakes, probes and pings"
    assert octets >= max(scraped[1], before[1] + 12 * 40)
    assert conns >= max(scraped[2], before[2] + 4)
    # Replies ride on the pair that opened the connection: the pair the other way saw none.
    assert counters(back) == back_before == (0, 0, 0)
    assert f"{conns} new" in seed_pair.text
    screenshot(seed, "counters")


def test_a_denied_attempt_appears_after_it_happens(seed: Lab) -> None:
    vm1, vm2 = seed.vms["vm1"], seed.vms["vm2"]
    sport = 40000 + secrets.randbelow(20000)
    attempt = f"198.18.0.2:{sport} → 198.18.0.1:23"
    page = look(page_url(seed))
    ok(page)
    assert not [row for row in page.events() if attempt in row]
    server = vm1.serve("tcp", 23)
    try:
        watch = [Sniffer(vm1, flow_marker(vm2.ip, vm1.ip, sport, 23))]
        assert not vm2.tcp(vm1.ip, 23, timeout=1, sport=sport), "vm2 -> vm1 is denied"
        assert seen(watch) == [0], "and vm1 saw nothing of it"
    finally:
        server.kill()

    def logged() -> bool:
        events = seed.ctl.ok("GET", "/ctfw/v1/events?verdict=denied")["events"]
        return any(e["sport"] == sport for e in events)

    lab.wait_for(logged, 5, f"the denied attempt from port {sport} in GET /events")
    page = look(page_url(seed))
    ok(page)
    rows = [row[1:] for row in page.events() if row[5] == attempt]
    assert rows, f"no row for {attempt} in {page.events()}"
    assert rows[0] == [seed.bridge, "vm2", "vm1", "tcp", attempt, "no-pair"]
    screenshot(seed, "denied")


# --- without a controller, and with hostile data --------------------------------------------
@contextlib.contextmanager
def stub_api(answers: dict[str, tuple[int, str, bytes]], once: bool = False) -> Iterator[str]:
    """A web server answering path -> (status, content type, body); with `once`, it serves
    one request (the page) and stops listening, as a controller that went away."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, kind, body = answers.get(self.path, (404, "application/json", b"{}"))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def serve_once() -> None:
        server.handle_request()
        server.server_close()  # from now on, connections are refused

    thread = threading.Thread(target=serve_once if once else server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{UI}"
    finally:
        if not once:
            server.shutdown()
        thread.join(timeout=5)
        if not once:
            server.server_close()


def test_the_page_says_when_the_controller_cannot_be_reached() -> None:
    page_only = {UI: (200, "text/html; charset=utf-8", ui.page())}
    with stub_api(page_only, once=True) as url:
        page = look(url)
    assert page.by_id("status").attrs["data-state"] == "error"
    assert "Cannot reach the controller" in page.by_id("problems").text
    assert page.by_id("matrix").text == "", "nothing made up"


HOSTILE = '<img src=x onerror="document.title=1">&amp;"'


def _json(doc: object) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(doc).encode()


@pytest.mark.parametrize("source", ["policy", "lists"])
def test_text_from_the_api_stays_text_and_counters_sum_over_switches(source: str) -> None:
    """Names the real API refuses (it allows letters, digits, '_.-'): the page shows them
    as text and runs none of it. From GET /policy, or, where that is missing (501), from
    the four lists."""
    policy = {
        "vms": [{"name": "web"}, {"name": HOSTILE}],
        "groups": [{"name": "g1", "members": ["web"]}],
        "networks": [{"name": "out", "cidrs": ["0.0.0.0/0"]}],
        "pairs": [
            {"id": 1, "initiator": "web", "responder": HOSTILE, "protocol": "tcp", "ports": "22",
             "log": True},
            {"id": 2, "initiator": "g1", "responder": "out", "protocol": "any", "ports": None},
        ],
    }  # fmt: skip
    metrics = (
        "# HELP ctfw_pair_packets_total Packets.\n# TYPE ctfw_pair_packets_total counter\n"
        'ctfw_pair_packets_total{switch="a",pair="1",initiator="web",responder="x\\"}"} 5.0\n'
        'ctfw_pair_packets_total{switch="b",pair="1",initiator="web",responder="x"} 7.0\n'
        'ctfw_pair_bytes_total{switch="a",pair="1"} 1500.0\n'
        'ctfw_pair_connections_total{switch="a",pair="1"} 2.0\n'
        'ctfw_pair_connections_total{switch="b",pair="1"} 1.0\n'
    )
    event = {"id": 9, "time": 1.7e9, "switch": HOSTILE, "vm": "web", "peer": None,
             "protocol": "tcp", "src": "2001:db8::1", "dst": "2001:db8::2", "sport": 1234,
             "dport": 22, "verdict": "denied", "reason": HOSTILE, "pair": None}  # fmt: skip
    if source == "policy":
        documents = {"/ctfw/v1/policy": _json(policy)}
    else:
        documents = {f"/ctfw/v1/{k}": _json({k: v}) for k, v in policy.items()}
        documents["/ctfw/v1/policy"] = (501, "application/json", b'{"error": "not yet"}')
    answers = {
        UI: (200, "text/html; charset=utf-8", ui.page()),
        **documents,
        "/metrics": (200, "text/plain; version=0.0.4", metrics.encode()),
        "/ctfw/v1/events?verdict=denied&limit=20": _json({"events": [event]}),
    }
    with stub_api(answers) as url:
        page = look(url)
    ok(page)
    assert not page.all("img"), "markup in a name is not markup"
    assert page.one("title").text == "ryu-ctfw: who may reach whom"
    page.one("th", scope="col", title=f"{HOSTILE} (vm)")
    (chip,) = page.pairs("web", HOSTILE)
    assert chip.attrs["data-service"] == "tcp/22" and chip.attrs["data-log"] == "true"
    assert counters(chip) == (12, 1500, 3), "summed over both switches"
    assert "log" in chip.text and "12 pkt · 1.5 kB · 3 new" in chip.text
    (unknown,) = page.pairs("g1", "out")
    assert [unknown.attrs[f"data-{k}"] for k in ("packets", "bytes", "connections")] == ["-"] * 3
    (row,) = page.events()
    assert row[1:] == [HOSTILE, "web", "-", "tcp", "[2001:db8::1]:1234 → [2001:db8::2]:22",
                       HOSTILE]  # fmt: skip
