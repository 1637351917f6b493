"""A hypothesis-driven fuzz of every REST operation, in-process.

Each example starts from a populated policy (four VMs, a network, a group, four pairs, a
zone, a known switch) and sends a short sequence of requests: every operation in
rest.ROUTES, right and wrong methods, path parameters of any text (encoded, or raw as a
server would pass them), and bodies from arbitrary bytes to almost-valid and valid JSON.
After every request:

* the answer is never a 5xx;
* every error is JSON {"error": "<text>"} without a traceback (HEAD has no body);
* a 4xx changed nothing: neither the policy nor the state file's bytes;
* a GET changed nothing, whatever its answer;
* the state file always holds the policy in memory, and a restart could load it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ryu.app.wsgi import WSGIApplication
from webob import Request, Response

from ryu_ctfw import rest, store
from ryu_ctfw.firewall import Firewall
from ryu_ctfw.policy import (
    PORT_NAME_RE,
    PROTOCOLS,
    VM_NAME_RE,
    Group,
    Network,
    PairRequest,
    Policy,
    Vm,
)
from ryu_ctfw.switch import Switch

API = rest.API
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")
TEMPLATES = sorted(rest.ROUTES)
NAMES = ["vm1", "vm2", "vm3", "vm.4", "vm9", "outside", "web", "nope", "VM1", "-vm1", ".", ".."]
PAIR_IDS = ["1", "2", "3", "4", "99", "0", "-1", "01", "1.0", "1e0", "0x1", " 1", "9" * 13]


# --- the populated policy ------------------------------------------------------------------


@cache
def seed_state() -> bytes:
    """The state file of the populated policy, as store.save writes it."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", "52:54:00:60:84:ff", ("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap4", "52:54:00:99:90:78", ("198.18.0.2", "fd00::2")))
    policy.put_vm(Vm("vm3", "tap5"))
    policy.put_vm(Vm("vm.4", "eth0.10"))
    policy.add_pair(PairRequest("vm1", "vm2"))
    policy.add_pair(PairRequest("vm2", "vm3", "tcp", "22"))
    policy.add_pair(PairRequest("vm3", "vm1", "udp", "8000-8100"))
    policy.put_network(Network("outside", "uplink0", ("198.19.0.0/24", "2001:db8:19::/48")))
    policy.put_group(Group("web", ("vm1", "vm3")))
    policy.add_pair(PairRequest("web", "outside", "udp", "53"))
    policy.zone_for(0xAB)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.json"
        store.save(path, policy)
        return path.read_bytes()


@dataclass
class World:
    wsgi: WSGIApplication
    fw: Firewall
    state_file: Path

    def snapshot(self) -> tuple[dict[str, Any], bytes, list[str]]:
        return (
            self.fw.policy.to_dict(),
            self.state_file.read_bytes()
            + b"|"
            + (
                store.journal_path(self.state_file).read_bytes()
                if store.has_journal(self.state_file)
                else b""
            ),
            sorted(p.name for p in self.state_file.parent.iterdir()),
        )


def make_world(folder: Path) -> World:
    state_file = folder / "state.json"
    state_file.write_bytes(seed_state())
    fw = Firewall(state_file)
    # A known but disconnected bridge, so /switches and the VM views have something to show.
    fw.switches.switches[0xAB] = Switch(0xAB, name="br0", ports={"tap2": 2, "tap4": 3})
    wsgi = WSGIApplication()
    rest.register(wsgi, fw)
    return World(wsgi, fw, state_file)


# --- strategies ----------------------------------------------------------------------------

ODD_CHARS = "/%.?#&+;= \\\t\n\r\x00\x7f~é\u00ff\u2603\u202e\ufeff\U0001f600"

PARAMS = st.one_of(
    st.sampled_from(NAMES + PAIR_IDS),
    st.text(max_size=20),
    st.text(st.sampled_from(ODD_CHARS + "vm1"), max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.just(""),
    st.text(st.characters(max_codepoint=0x7F), min_size=60, max_size=300),
    st.sampled_from(["a" * 5000, "9" * 5000, "%" * 300, "/" * 50, "%2F" * 20]),
)

# Whole paths that no template builds; all under /ctfw/ (the API's catch-all).
ODD_PATHS = [
    "/ctfw/",
    "/ctfw/v1",
    "/ctfw/v1/",
    "/ctfw/v2/vms",
    "/ctfw/v1//vms",
    "/ctfw/v1/vms/",
    "/ctfw/v1/vms/./vm1",
    "/ctfw/v1/vms/../pairs",
    "/ctfw/v1/vms/vm1/",
    "/ctfw/v1/vms/vm1/extra",
    "/ctfw/v1/vms/%76m1",
    "/ctfw/v1/vms/vm1%00",
    "/ctfw/v1/vms/%",
    "/ctfw/v1/vms/%zz",
    "/ctfw/v1/vms/%FF%FE",
    "/ctfw/v1/vms/a b",
    "/ctfw/v1/vms/a;b=c",
    "/ctfw/v1/pairs/%31",
    "/ctfw/v1/pairs/1/",
    "/ctfw/v1/pairs/%B9",
    "/ctfw/v1/pairs/%EF%BC%91",  # fullwidth digit one
    "/ctfw/v1/OPENAPI.JSON",
    "/ctfw/v1/openapi.json/",
    "/ctfw/v1/switches/1",
    "/ctfw/v1/flows/x",
]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 0, -1, 65535, 65536]),
    st.floats(),  # NaN and infinities too: json.dumps writes them, json.loads reads them
    st.text(max_size=30),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EDGE = st.one_of(
    SCALARS,
    JSON_VALUES,
    st.text(min_size=40, max_size=200),
    st.just("x" * 3000),
    st.integers(1, 400).map(lambda n: json.loads("[" * n + "]" * n)),
    st.integers(1, 100).map(lambda n: json.loads('{"a":' * n + "0" + "}" * n)),
)
VALID_PORT = st.one_of(
    st.sampled_from(["tap2", "tap4", "tap5", "eth0.10", "tap9", "tap6", "veth@if3", "uplink0"]),
    st.from_regex(PORT_NAME_RE, fullmatch=True).filter(lambda p: p not in (".", "..")),
)
VALID_MAC = st.sampled_from(
    [None, "52:54:00:00:00:09", "52:54:00:60:84:FF", "02:00:00:00:00:01", "01:00:5e:00:00:01"]
)
VALID_IPS = st.lists(st.ip_addresses().map(str), max_size=3, unique=True)
VM_NAMES = st.sampled_from(NAMES)
EXISTING = st.sampled_from(["vm1", "vm2", "vm3", "vm.4", "outside", "web"])

VM_BODIES = st.one_of(
    st.fixed_dictionaries({"port": VALID_PORT}, optional={"mac": VALID_MAC, "ips": VALID_IPS}),
    st.fixed_dictionaries(
        {"port": EDGE | VALID_PORT},
        optional={
            "mac": EDGE | VALID_MAC,
            "ips": EDGE | VALID_IPS | st.lists(EDGE, max_size=3),
            "colour": EDGE,
        },
    ),
    st.dictionaries(st.sampled_from(["port", "mac", "ips", "name", ""]), EDGE, max_size=4),
)
VALID_CIDR = st.one_of(
    st.sampled_from(["198.19.0.0/24", "2001:db8:19::/48", "10.0.0.0/8", "0.0.0.0/0", "::/0",
                     "198.19.0.1/24", "fe80::/64%eth0", "198.19.0.0/33"]),
    st.ip_addresses().map(lambda a: f"{a}/{a.max_prefixlen}"),
)  # fmt: skip
NETWORK_BODIES = st.one_of(
    st.fixed_dictionaries(
        {
            "port": st.sampled_from(["uplink0", "uplink9", "eth1"]) | VALID_PORT,
            "cidrs": st.lists(VALID_CIDR, min_size=1, max_size=3, unique=True),
        }
    ),
    st.fixed_dictionaries(
        {"port": EDGE | VALID_PORT, "cidrs": EDGE | st.lists(EDGE | VALID_CIDR, max_size=3)},
        optional={"id": EDGE, "name": EDGE},
    ),
    st.dictionaries(st.sampled_from(["port", "cidrs", "id", ""]), EDGE, max_size=3),
)
GROUP_BODIES = st.one_of(
    st.fixed_dictionaries({"members": st.lists(VM_NAMES, max_size=4)}),
    st.fixed_dictionaries(
        {"members": EDGE | st.lists(EDGE | VM_NAMES, max_size=3)}, optional={"id": EDGE}
    ),
    st.dictionaries(st.sampled_from(["members", "id", ""]), EDGE, max_size=2),
)
PUT_BODIES = {"/vms/{name}": VM_BODIES, "/networks/{name}": NETWORK_BODIES,
              "/groups/{name}": GROUP_BODIES}  # fmt: skip
PORTS = st.one_of(
    st.sampled_from([22, "22", "8000-8100", "53-53", "100-10", "0", 65536, None]),
    st.integers(-10, 70_000),
    st.from_regex(r"[0-9]{1,6}(-[0-9]{1,6})?", fullmatch=True),
)
PAIR_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"initiator": EXISTING, "responder": EXISTING},
        optional={"protocol": st.sampled_from(PROTOCOLS)},
    ),
    st.fixed_dictionaries(
        {"initiator": EXISTING, "responder": EXISTING, "protocol": st.sampled_from(["tcp", "udp"])},
        optional={"ports": PORTS},
    ),
    st.fixed_dictionaries(
        {"initiator": VM_NAMES, "responder": VM_NAMES},
        optional={"protocol": st.sampled_from(PROTOCOLS), "ports": PORTS},
    ),
    st.fixed_dictionaries(
        {"initiator": EDGE | VM_NAMES, "responder": EDGE | VM_NAMES},
        optional={
            "protocol": EDGE | st.sampled_from([*PROTOCOLS, "TCP", "sctp", ""]),
            "ports": EDGE | PORTS,
            "id": EDGE,
        },
    ),
    st.dictionaries(
        st.sampled_from(["initiator", "responder", "protocol", "ports", "id"]), EDGE, max_size=5
    ),
)


def encode_json(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


JSON_BODIES = st.builds(
    encode_json,
    st.one_of(JSON_VALUES, VM_BODIES, NETWORK_BODIES, GROUP_BODIES, PAIR_BODIES, EDGE),
    st.booleans(),
)
BYTE_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"  \n\t ",
            b"\xef\xbb\xbf{}",  # a UTF-8 BOM
            b'{"port": "tap9"',
            b'{"port": "tap9"}{}',
            b"NaN",
            b"1" * 5000,  # more digits than int() converts
            b'{"port": 1' + b"0" * 5000 + b"}",
            b"[" * 100_000,
            b'{"a":' * 20_000,
            b'{"port": "tap9", "pad": "' + b"x" * rest.MAX_BODY + b'"}',
            b" " * rest.MAX_BODY + b"{}",
            json.dumps({"port": "tap9"}).encode("utf-16"),
            json.dumps({"initiator": "vm1", "responder": "vm3"}).encode("utf-32"),
        ]
    ),
)
BODIES = st.one_of(st.none(), JSON_BODIES, BYTE_BODIES)


@dataclass(frozen=True)
class Call:
    """One request: a template filled with `param`, or one of ODD_PATHS."""

    method: str
    template: str | None
    param: str
    raw: bool  # the param goes into PATH_INFO as-is instead of %-encoded
    body: bytes | None
    path: str | None = None

    def request(self) -> Request:
        kwargs: dict[str, Any] = {"method": self.method}
        if self.body is not None:
            kwargs["body"] = self.body
        if self.path is not None:
            return Request.blank(self.path, **kwargs)
        assert self.template is not None
        filled = self.template.split("{", 1)[0]
        if "{" in self.template:
            filled += self.param if self.raw else quote(self.param, safe="")
        if not self.raw:
            return Request.blank(API + filled, **kwargs)
        # As a server passes a raw request line: the bytes, as latin-1 text (PEP 3333).
        req = Request.blank(API + "/", **kwargs)
        req.environ["PATH_INFO"] = (API + filled).encode("utf-8").decode("latin-1")
        return req


# Every operation of the API, and every path with any method.
OPERATIONS = [(t, m) for t in TEMPLATES for m in sorted(rest.ROUTES[t])]
ANY_METHOD = st.tuples(st.sampled_from(TEMPLATES), st.sampled_from(METHODS))
GOOD_NAMES = st.sampled_from(["vm1", "vm2", "vm3", "vm.4", "vm9", "web-1", "db"]) | st.from_regex(
    VM_NAME_RE, fullmatch=True
)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return Call(
            draw(st.sampled_from(METHODS)),
            None,
            "",
            False,
            draw(BODIES),
            draw(st.sampled_from(ODD_PATHS)),
        )
    template, method = draw(ANY_METHOD if choice <= 2 else st.sampled_from(OPERATIONS))
    if template in PUT_BODIES:
        param = draw(GOOD_NAMES | st.sampled_from(NAMES) | PARAMS)
    elif template == "/pairs/{pair_id}":
        param = draw(st.sampled_from(PAIR_IDS) | PARAMS)
    else:
        param = ""
    if method == "PUT" and template in PUT_BODIES and draw(st.integers(0, 2)):
        body = draw(st.builds(encode_json, PUT_BODIES[template], st.booleans()))
    elif method == "POST" and draw(st.integers(0, 2)):
        body = draw(st.builds(encode_json, PAIR_BODIES, st.booleans()))
    else:
        body = draw(BODIES)
    return Call(method, template, param, draw(st.booleans()), body)


# --- the checks ----------------------------------------------------------------------------


def check_answer(call: Call, req: Request, resp: Response) -> None:
    status = resp.status_int
    assert status < 500, f"{call}: {resp.status}\n{resp.text[:2000]}"
    everything = resp.body + "".join(f"{k}: {v}" for k, v in resp.headerlist).encode("latin-1")
    assert b"Traceback (most recent call last)" not in everything, call
    if call.method == "HEAD" or status == 204:
        return
    if not 200 <= status < 300:
        assert resp.content_type == "application/json", f"{call}: {resp.status} {resp.body!r}"
        body = json.loads(resp.body)
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str), body
        assert body["error"], body
    else:
        assert resp.content_type == "application/json", call
        json.loads(resp.body)
    if status == 405:
        allowed = resp.headers["Allow"].split(", ")
        assert call.method not in allowed
        if call.template is not None and not call.raw:
            assert allowed == sorted(rest.ROUTES[call.template])


def check_state(world: World, call: Call, status: int, before: tuple[Any, ...]) -> None:
    after = world.snapshot()
    policy, _stored, files = after
    assert set(files) <= {"state.json", "state.json.journal"}, (
        f"{call}: temporary files left: {files}"
    )
    # The files always hold the policy in memory, and a restart can load it.
    assert store.load(world.state_file).to_dict() == policy, call
    if 400 <= status < 500:
        assert after == before, f"{call} answered {status} but changed the policy or the file"
    if call.method in ("GET", "HEAD", "OPTIONS"):
        assert after == before, f"{call} changed the policy or the file"


@settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(calls(), min_size=1, max_size=4))
def test_no_request_breaks_the_api_or_changes_state_on_a_4xx(sequence: list[Call]) -> None:
    with tempfile.TemporaryDirectory() as d:
        world = make_world(Path(d))
        before = world.snapshot()
        for call in sequence:
            req = call.request()
            resp = req.get_response(world.wsgi)
            check_answer(call, req, resp)
            check_state(world, call, resp.status_int, before)
            # --hypothesis-show-statistics shows what the run reached.
            event(f"{call.method} {call.template or 'odd path'} -> {resp.status_int}")
            before = world.snapshot()  # a 2xx may have changed things; that is the new baseline


@settings(max_examples=60, deadline=None, database=None)
@given(
    template=st.sampled_from(TEMPLATES),
    method=st.sampled_from(METHODS),
    param=PARAMS,
    raw=st.booleans(),
)
def test_without_a_body_nothing_is_a_5xx(template: str, method: str, param: str, raw: bool) -> None:
    """The bodiless calls (GET, DELETE, wrong methods) on their own."""
    with tempfile.TemporaryDirectory() as d:
        world = make_world(Path(d))
        before = world.snapshot()
        call = Call(method, template, param, raw, None)
        req = call.request()
        resp = req.get_response(world.wsgi)
        check_answer(call, req, resp)
        check_state(world, call, resp.status_int, before)


def test_the_fuzz_starts_from_a_populated_policy(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    policy = world.fw.policy.to_dict()
    assert [v["name"] for v in policy["vms"]] == ["vm1", "vm2", "vm3", "vm.4"]
    assert [p["id"] for p in policy["pairs"]] == [1, 2, 3, 4]
    assert [n["name"] for n in policy["networks"]] == ["outside"]
    assert [g["name"] for g in policy["groups"]] == ["web"]
    for path in ("/vms/vm.4", "/pairs/3", "/switches", "/networks/outside", "/groups/web"):
        resp = Request.blank(API + path).get_response(world.wsgi)
        assert resp.status_int == 200, resp.text


# --- found by the fuzz ---------------------------------------------------------------------

# Routes matches '^...$', and '$' also matches before a final newline: '/vms/vm3\n' must
# not act on vm3.


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/vms/vm3%0A", None),
        ("PUT", "/vms/vm9%0A", {"port": "tap9"}),
        ("DELETE", "/pairs/1%0A", None),
        ("POST", "/pairs%0A", {"initiator": "vm2", "responder": "vm1"}),
    ],
)
def test_a_trailing_newline_is_not_the_same_resource(
    tmp_path: Path, method: str, path: str, body: Any
) -> None:
    world = make_world(tmp_path)
    before = world.snapshot()
    kwargs: dict[str, Any] = {"method": method}
    if body is not None:
        kwargs["body"] = json.dumps(body).encode()
    resp = Request.blank(API + path, **kwargs).get_response(world.wsgi)
    assert resp.status_int in (400, 404), f"{resp.status}: {resp.text}"
    assert world.snapshot() == before


@pytest.mark.parametrize("path", ["/vms/vm3%0A%0A", "/vms/vm3%0D", "/pairs/1%0D%0A"])
def test_other_line_ends_are_not_stripped(tmp_path: Path, path: str) -> None:
    world = make_world(tmp_path)
    before = world.snapshot()
    resp = Request.blank(API + path, method="DELETE").get_response(world.wsgi)
    assert resp.status_int in (400, 404), resp.text
    assert world.snapshot() == before


# The catch-all must also catch paths with a newline inside ('.' stops at one).


@pytest.mark.parametrize(
    "path", ["/ctfw/v1/pairs/%2F%0A0", "/ctfw/v1/vms/a%0Ab/c", "/ctfw/v1/x%0Ay", "/ctfw/%0Ax"]
)
def test_an_unknown_path_with_a_newline_is_a_json_404(tmp_path: Path, path: str) -> None:
    world = make_world(tmp_path)
    resp = Request.blank(path, method="DELETE").get_response(world.wsgi)
    assert resp.status_int == 404
    assert resp.content_type == "application/json", resp.text
    assert isinstance(resp.json["error"], str)
