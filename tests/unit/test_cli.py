"""`ctfw` against a stub of the REST API: a real HTTP server on 127.0.0.1 in a thread that
records every request and answers what each test tells it. Checks what the CLI sends (paths,
bodies, query, token), what it prints (tables, --json), and the exit codes.

The CLI against the real controller and Open vSwitch: tests/integration/test_ctfw.py."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from ryu_ctfw import compiler
from ryu_ctfw.cli import main
from ryu_ctfw.cli.client import UsageError
from ryu_ctfw.cli.commands import parse_since, service_params

API = "/ctfw/v1"


@dataclass
class Request:
    method: str
    path: str  # without /ctfw/v1 and the query
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON; bytes are sent as they are
    delay: float = 0.0


@dataclass
class Stub:
    """The API's stand-in: `answer(method, path, ...)` sets what a path answers (a list:
    one reply per call, the last repeated); unknown paths get 404 JSON."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    replies: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    routes: dict[tuple[str, str], Callable[[Request], Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, *replies: Reply | Any, status: int = 200) -> None:
        self.replies[(method, path)] = [
            r if isinstance(r, Reply) else Reply(status, r) for r in replies
        ]

    def route(self, method: str, path: str, answer: Callable[[Request], Any]) -> None:
        """`answer(request)` decides each reply (a Reply, or a body for 200)."""
        self.routes[(method, path)] = answer

    def reply_for(self, req: Request) -> Reply:
        method, path = req.method, req.path
        with self.lock:
            if (method, path) in self.routes:
                reply = self.routes[(method, path)](req)
                return reply if isinstance(reply, Reply) else Reply(200, reply)
            queue = self.replies.get((method, path))
            if not queue:
                return Reply(404, {"error": f"stub: no such resource: {path}"})
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def sent(self, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if method is None or r.method == method]

    def changes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = parts.path.removeprefix(API)
            req = Request(
                self.command, path, dict(parse_qsl(parts.query)), dict(self.headers.items()),
                json.loads(raw) if raw else None,
            )  # fmt: skip
            stub.requests.append(req)
            reply = stub.reply_for(req)
            time.sleep(reply.delay)
            data = reply.body if isinstance(reply.body, bytes) else (
                b"" if reply.body is None else json.dumps(reply.body).encode())  # fmt: skip
            self.send_response(reply.status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    monkeypatch.delenv("CTFW_URL", raising=False)
    monkeypatch.delenv("CTFW_TOKEN", raising=False)
    stub = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def ctfw(api: Stub, capsys: pytest.CaptureFixture[str]) -> Any:
    """ctfw(*argv): main() against the stub (--url given first unless `url=False`)."""

    def run(*argv: str, url: bool = True) -> Run:
        capsys.readouterr()
        code = main([*(["--url", api.url] if url else []), *argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


VM1 = {"name": "vm1", "id": 1, "port": "tap2", "mac": "52:54:00:60:84:ff",
       "ips": ["198.18.0.1", "2001:db8::1"], "learned_mac": None, "switch": None,
       "dpid": "00000000000000a1", "ofport": 2, "ambiguous": False}  # fmt: skip
VM2 = {"name": "vm2-long-name", "id": 2, "port": "tap4", "mac": None, "ips": [],
       "learned_mac": "52:54:00:99:90:78", "switch": "br0", "dpid": None, "ofport": None,
       "ambiguous": False}  # fmt: skip
PAIR1 = {"id": 1, "initiator": "vm1", "responder": "vm2", "protocol": "tcp", "ports": "22",
         "initiator_kind": "vm", "responder_kind": "vm"}  # fmt: skip
PAIR2 = {"id": 12, "initiator": "web", "responder": "vm3", "protocol": "any", "ports": None,
         "initiator_kind": "group", "responder_kind": "vm", "log": True}  # fmt: skip
PLAN = {
    "dry_run": True, "status": 201, "answer": PAIR1,
    "switches": [{"dpid": "00000000000000a1", "add": ["table=1, priority=100, tcp,tp_dst=22"
                  " actions=ct(commit),output:3"], "delete": ["table=1, priority=5 actions=drop"]}],
    "cut": [PAIR2],
}  # fmt: skip


# --- tables and --json -----------------------------------------------------------------------
def test_vm_ls_prints_an_aligned_table(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/vms", {"vms": [VM1, VM2]})
    run = ctfw("vm", "ls")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "PORT", "MAC", "IPS", "SWITCH", "AT", "(DPID:OFPORT)"]
    assert lines[1].split() == ["vm1", "1", "tap2", "52:54:00:60:84:ff",
                                "198.18.0.1,2001:db8::1", "-", "00000000000000a1:2"]  # fmt: skip
    assert lines[2].split() == ["vm2-long-name", "2", "tap4", "52:54:00:99:90:78", "(learned)",
                                "-", "br0", "absent"]  # fmt: skip
    # Aligned: every column starts where its header does.
    for header in ("PORT", "MAC", "SWITCH"):
        col = lines[0].index(header)
        assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines[1:]), header


@pytest.mark.parametrize(
    ("argv", "path", "body"),
    [
        (["vm", "ls"], "/vms", {"vms": [VM1, VM2]}),
        (["vm", "show", "vm1"], "/vms/vm1", VM1),
        (["pair", "ls"], "/pairs", {"pairs": [PAIR1, PAIR2]}),
        (["group", "ls"], "/groups", {"groups": [{"name": "web", "id": 4, "members": []}]}),
        (["switch", "ls"], "/switches", {"switches": []}),
        (["events"], "/events", {"events": []}),
    ],
)
def test_json_prints_exactly_the_apis_object(
    api: Stub, ctfw: Any, argv: list[str], path: str, body: Any
) -> None:
    api.answer("GET", path, body)
    run = ctfw("--json", *argv)
    assert run.code == 0, run.err
    assert run.json() == body
    assert run.err == ""


def test_pair_ls_shows_services_kinds_and_log(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/pairs", {"pairs": [PAIR1, PAIR2]})
    lines = ctfw("pair", "ls").out.splitlines()
    assert lines[0].split() == ["ID", "INITIATOR", "RESPONDER", "SERVICE", "LOG"]
    assert lines[1].split() == ["1", "vm1", "vm2", "tcp/22", "-"]
    assert lines[2].split() == ["12", "web", "(group)", "vm3", "any", "yes"]
    assert lines[1].index("1") == lines[2].index("2")  # ids right-aligned


# --- what is sent ----------------------------------------------------------------------------
def test_vm_add_puts_the_body_and_says_created(api: Stub, ctfw: Any) -> None:
    api.answer("PUT", "/vms/vm1", VM1, status=201)
    run = ctfw(
        "vm",
        "add",
        "vm1",
        "--port",
        "tap2",
        "--mac",
        "52:54:00:60:84:ff",
        "--ip",
        "198.18.0.1",
        "2001:db8::1",
        "--ip",
        "198.18.0.9",
        "--switch",
        "br0",
    )
    assert run.code == 0, run.err
    (req,) = api.sent()
    assert (req.method, req.path, req.query) == ("PUT", "/vms/vm1", {})
    assert req.body == {"port": "tap2", "mac": "52:54:00:60:84:ff", "switch": "br0",
                        "ips": ["198.18.0.1", "2001:db8::1", "198.18.0.9"]}  # fmt: skip
    assert req.headers["Content-Type"] == "application/json"
    assert "Authorization" not in req.headers
    assert run.out.startswith("vm vm1 created\n")
    assert ["ofport:", "2"] in [line.split() for line in run.out.splitlines()]


def test_vm_add_of_an_existing_vm_says_updated(api: Stub, ctfw: Any) -> None:
    api.answer("PUT", "/vms/vm1", VM1, status=200)
    run = ctfw("vm", "add", "vm1", "--port", "tap2")
    assert run.code == 0 and run.out.startswith("vm vm1 updated\n")
    assert api.sent()[0].body == {"port": "tap2"}  # nothing the user did not give


@pytest.mark.parametrize(
    ("flags", "body"),
    [
        ([], {}),
        (["--tcp", "22"], {"protocol": "tcp", "ports": "22"}),
        (["--udp", "8000-8100"], {"protocol": "udp", "ports": "8000-8100"}),
        (["--tcp", "all"], {"protocol": "tcp"}),
        (["--icmp"], {"protocol": "icmp"}),
        (["--any", "--log"], {"protocol": "any", "log": True}),
    ],
)
def test_pair_add_bodies(api: Stub, ctfw: Any, flags: list[str], body: dict) -> None:
    api.answer("POST", "/pairs", PAIR1, status=201)
    run = ctfw("pair", "add", "vm1", "vm2", *flags)
    assert run.code == 0, run.err
    assert api.sent()[0].body == {"initiator": "vm1", "responder": "vm2", **body}
    assert run.out.startswith("pair 1 added\n")


def test_names_are_quoted_in_paths(api: Stub, ctfw: Any) -> None:
    run = ctfw("vm", "show", "a/../b?c")
    assert run.code == 1
    assert api.sent()[0].path == "/vms/a%2F..%2Fb%3Fc"


def test_group_join_and_leave_put_the_new_member_list(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/groups/web", {"name": "web", "id": 4, "members": ["vm1", "vm2"]})
    api.answer("PUT", "/groups/web", {"name": "web", "id": 4, "members": []})
    assert ctfw("group", "join", "web", "vm3", "vm1", "vm3").code == 0
    assert api.sent("PUT")[-1].body == {"members": ["vm1", "vm2", "vm3"]}
    assert ctfw("group", "leave", "web", "vm1").code == 0
    assert api.sent("PUT")[-1].body == {"members": ["vm2"]}
    run = ctfw("group", "leave", "web", "vm9")
    assert run.code == 1 and "not in group 'web': vm9" in run.err
    assert len(api.sent("PUT")) == 2  # the refused leave sent no change


def test_group_add_sets_exactly_the_members(api: Stub, ctfw: Any) -> None:
    api.answer("PUT", "/groups/web", {"name": "web", "id": 4, "members": []}, status=201)
    assert ctfw("group", "add", "web").code == 0
    assert api.sent()[0].body == {"members": []}


def test_switch_set_and_clear(api: Stub, ctfw: Any) -> None:
    dpid = "00000000000000A1"
    api.answer("PUT", f"/switches/{dpid.lower()}", {"dpid": dpid.lower(), "ports": []})
    assert ctfw("switch", "set", dpid, "--fabric-port", "eth1").code == 0
    assert ctfw("switch", "set", dpid, "--clear").code == 0
    assert [r.body for r in api.sent("PUT")] == [{"fabric_port": "eth1"}, {"fabric_port": None}]
    assert ctfw("switch", "set", dpid).code == 2  # one of the two is required


def test_switch_by_bridge_name(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/switches", {"switches": [{"dpid": "00000000000000a1", "name": "br0"}]})
    api.answer("GET", "/switches/00000000000000a1", {"dpid": "00000000000000a1", "name": "br0",
               "ports": [{"name": "tap2", "ofport": 2, "vm": "vm1", "networks": []}]})  # fmt: skip
    run = ctfw("switch", "show", "br0")
    assert run.code == 0, run.err
    assert ["2", "tap2", "vm1", "-"] in [line.split() for line in run.out.splitlines()]
    run = ctfw("switch", "show", "nosuchbr")
    assert run.code == 1 and "no switch named 'nosuchbr'" in run.err


# --- token, url, environment -----------------------------------------------------------------
def test_token_is_sent_as_bearer(api: Stub, ctfw: Any) -> None:
    ctfw("--token", "s3cret", "pair", "rm", "3")
    assert api.sent()[0].headers["Authorization"] == "Bearer s3cret"


def test_environment_gives_url_and_token(
    api: Stub, ctfw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.answer("GET", "/pairs", {"pairs": []})
    monkeypatch.setenv("CTFW_URL", api.url + "/ctfw/v1/")  # the API's root works too
    monkeypatch.setenv("CTFW_TOKEN", "from-env")
    run = ctfw("pair", "ls", url=False)
    assert run.code == 0, run.err
    assert api.sent()[0].headers["Authorization"] == "Bearer from-env"
    # Options win over the environment.
    monkeypatch.setenv("CTFW_URL", "http://127.0.0.1:9")
    run = ctfw("--token", "opt", "pair", "ls")
    assert run.code == 0 and api.sent()[-1].headers["Authorization"] == "Bearer opt"


def test_default_url_is_localhost_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    from ryu_ctfw.cli.parser import build_parser

    monkeypatch.delenv("CTFW_URL", raising=False)
    assert build_parser().parse_args(["vm", "ls"]).url == "http://127.0.0.1:8080"


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    api: Stub, ctfw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.answer("GET", "/vms", {"vms": []})
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    assert ctfw("vm", "ls").code == 0


# --- exit codes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 1), (401, 1), (403, 1), (404, 1), (409, 5), (500, 3), (501, 3), (502, 3), (504, 3)],
)
def test_api_errors_give_the_message_and_exit_code(
    api: Stub, ctfw: Any, status: int, code: int
) -> None:
    api.answer("POST", "/pairs", {"error": f"the reason {status}"}, status=status)
    run = ctfw("pair", "add", "vm1", "vm2")
    assert (run.code, run.out) == (code, "")
    assert run.err == f"ctfw: the reason {status}\n"


def test_error_without_json_body(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/vms", Reply(502, b"<html>Bad Gateway</html>"))
    run = ctfw("vm", "ls")
    assert run.code == 3
    assert "HTTP 502" in run.err and "Bad Gateway" in run.err


def test_unreachable_controller_exits_3(ctfw: Any, unused_port: int) -> None:
    run = ctfw("--url", f"http://127.0.0.1:{unused_port}", "vm", "ls", url=False)
    assert run.code == 3
    assert f"cannot reach the controller at http://127.0.0.1:{unused_port}" in run.err


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_timeout_exits_3(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/vms", Reply(200, {"vms": []}, delay=2))
    started = time.monotonic()
    run = ctfw("--timeout", "0.3", "vm", "ls")
    assert run.code == 3 and "within 0.3 s" in run.err
    assert time.monotonic() - started < 1.5


def test_an_answer_that_is_not_json_exits_3(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/vms", Reply(200, b"<html>hello</html>"))
    run = ctfw("vm", "ls")
    assert run.code == 3 and "not JSON" in run.err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuch"],
        ["vm", "add", "vm1"],  # --port is required
        ["pair", "add", "vm1", "vm2", "--tcp", "22", "--udp", "53"],
        ["pair", "rm", "abc"],
        ["explain", "vm1", "vm2", "tcp/99999"],
        ["explain", "vm1", "vm2", "sctp/1"],
        ["events", "--denied", "--allowed"],
        ["events", "--since", "yesterday"],
        ["events", "--limit", "0"],
        ["--timeout", "0", "vm", "ls"],
        ["--url", "ftp://x", "vm", "ls"],
        ["policy", "apply", "/nonexistent/policy.json"],
    ],
)
def test_usage_errors_exit_2_and_send_nothing(api: Stub, ctfw: Any, argv: list[str]) -> None:
    run = ctfw(*argv)
    assert run.code == 2, run
    assert run.err.strip()
    assert api.requests == []


def test_help_documents_the_exit_codes(ctfw: Any) -> None:
    run = ctfw("--help")
    assert run.code == 0
    text = " ".join(run.out.split())
    for line in ("0 done", "1 the API refused", "2 usage error", "3 cannot reach the controller",
                 "4 explain: the connection would be denied", "5 conflict (409)"):  # fmt: skip
        assert line in text
    assert "CTFW_URL" in text and "CTFW_TOKEN" in text


def test_console_script_entry_point() -> None:
    """setup.cfg's `ctfw = ryu_ctfw.cli:main`, run as a program."""
    done = subprocess.run([sys.executable, "-m", "ryu_ctfw.cli", "--help"],
                          capture_output=True, text=True, env=_env(), timeout=30)  # fmt: skip
    assert done.returncode == 0 and "exit codes:" in done.stdout
    text = Path(__file__).parents[2].joinpath("setup.cfg").read_text()
    assert "ctfw = ryu_ctfw.cli:main" in text


def _env() -> dict[str, str]:
    root = str(Path(__file__).parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --- dry run ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "method", "path"),
    [
        (["vm", "add", "vm1", "--port", "tap2"], "PUT", "/vms/vm1"),
        (["vm", "rm", "vm1"], "DELETE", "/vms/vm1"),
        (["network", "add", "out", "--port", "up0", "--cidr", "198.19.0.0/24"],
         "PUT", "/networks/out"),
        (["network", "rm", "out"], "DELETE", "/networks/out"),
        (["group", "add", "web", "vm1"], "PUT", "/groups/web"),
        (["group", "rm", "web"], "DELETE", "/groups/web"),
        (["pair", "add", "vm1", "vm2", "--tcp", "22"], "POST", "/pairs"),
        (["pair", "rm", "1"], "DELETE", "/pairs/1"),
        (["switch", "set", "00000000000000a1", "--clear"], "PUT", "/switches/00000000000000a1"),
    ],
)  # fmt: skip
def test_every_change_takes_dry_run(
    api: Stub, ctfw: Any, argv: list[str], method: str, path: str
) -> None:
    api.answer(method, path, PLAN)
    run = ctfw(*argv, "--dry-run")
    assert run.code == 0, run.err
    (req,) = api.sent()
    assert (req.method, req.path, req.query) == (method, path, {"dry_run": "true"})
    assert run.out.startswith("dry run, nothing changed; the call would answer 201:")
    # Without --dry-run the same call carries no query at all.
    ctfw(*argv)
    assert api.sent()[-1].query == {}


def test_dry_run_prints_the_plan(api: Stub, ctfw: Any) -> None:
    api.answer("POST", "/pairs", PLAN)
    out = ctfw("pair", "add", "vm1", "vm2", "--tcp", "22", "--dry-run").out
    assert "switch 00000000000000a1: +1, -1" in out
    assert "  + table=1, priority=100, tcp,tp_dst=22 actions=ct(commit),output:3" in out
    assert "  - table=1, priority=5 actions=drop" in out
    assert "connections cut: 1 pair(s)\n  pair 12: web -> vm3 any" in out
    assert "pair 1 added" in out  # what the real call would answer, shown under the header


def test_dry_run_json_is_the_apis_answer(api: Stub, ctfw: Any) -> None:
    api.answer("DELETE", "/pairs/12", PLAN)
    run = ctfw("--json", "pair", "rm", "12", "--dry-run")
    assert run.code == 0 and run.json() == PLAN


def test_dry_run_refused_exits_like_the_real_call(api: Stub, ctfw: Any) -> None:
    api.answer("DELETE", "/vms/vm1", {"error": "VM 'vm1' is used by pair 1"}, status=409)
    run = ctfw("vm", "rm", "vm1", "--dry-run")
    assert run.code == 5 and "used by pair 1" in run.err and run.out == ""


def test_removal_prints_what_went(api: Stub, ctfw: Any) -> None:
    api.answer("DELETE", "/pairs/3", None, status=204)
    run = ctfw("pair", "rm", "3")
    assert (run.code, run.out) == (0, "pair 3 removed\n")
    run = ctfw("--json", "pair", "rm", "3")
    assert (run.code, run.out) == (0, "")  # 204 has no object to print


# --- flows -----------------------------------------------------------------------------------
def _flow(dpid: str, cookie: int, text: str, **match: Any) -> dict[str, Any]:
    return {"dpid": dpid, "table": 1, "priority": 10, "match": match, "actions": [],
            "cookie": f"0x{cookie:x}", "packets": 7, "bytes": 700, "duration": 1.0,
            "text": text}  # fmt: skip


def test_flows_of_a_vm_are_its_port_and_its_pairs(api: Stub, ctfw: Any) -> None:
    a, b = "00000000000000a1", "00000000000000b2"
    c = compiler.cookie
    flows = [
        _flow(a, c(compiler.KIND_VM, 2), "port-of-vm1"),
        _flow(a, c(compiler.KIND_LEARN, 2), "learn-of-vm1"),
        _flow(a, c(compiler.KIND_BASE), "base-in-port-2", in_port=2),
        _flow(a, c(compiler.KIND_PAIR, 1), "pair-1"),
        _flow(b, c(compiler.KIND_PAIR, 1), "pair-1-on-b"),
        _flow(b, c(compiler.KIND_PAIR, 12), "pair-12-group"),
        _flow(a, c(compiler.KIND_VM, 3), "port-of-vm2"),
        _flow(b, c(compiler.KIND_VM, 2), "ofport-2-of-another-switch"),
        _flow(a, c(compiler.KIND_PAIR, 5), "pair-5-not-vm1"),
        _flow(a, c(compiler.KIND_BASE), "base"),
    ]
    api.answer("GET", "/vms/vm1", VM1)
    api.answer(
        "GET",
        "/groups",
        {
            "groups": [
                {"name": "web", "id": 4, "members": ["vm1"]},
                {"name": "db", "id": 5, "members": ["vm2"]},
            ]
        },
    )
    api.answer(
        "GET",
        "/pairs",
        {"pairs": [PAIR1, PAIR2, {**PAIR1, "id": 5, "initiator": "db", "responder": "vm2"}]},
    )
    api.answer("GET", "/flows", {"flows": flows})  # fmt: skip
    run = ctfw("--json", "flows", "--vm", "vm1")
    assert run.code == 0, run.err
    assert [f["text"] for f in run.json()["flows"]] == [
        "port-of-vm1",
        "learn-of-vm1",
        "base-in-port-2",
        "pair-1",
        "pair-1-on-b",
        "pair-12-group",
    ]
    run = ctfw("flows", "--vm", "vm1", "--switch", b)
    lines = run.out.splitlines()
    assert lines[0].split() == ["DPID", "PACKETS", "BYTES", "FLOW"]
    assert [line.split()[-1] for line in lines[1:]] == ["pair-1-on-b", "pair-12-group"]


def test_flows_of_an_unknown_vm_exit_1_before_reading_flows(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/vms/nope", {"error": "no VM named 'nope'"}, status=404)
    run = ctfw("flows", "--vm", "nope")
    assert run.code == 1 and run.err == "ctfw: no VM named 'nope'\n"
    assert [r.path for r in api.requests] == ["/vms/nope"]


# --- explain ---------------------------------------------------------------------------------
EXPLAINED = {
    "verdict": "allowed",
    "why": "pair 1 admits tcp/22",
    "pairs": [PAIR1],
    "flows": [_flow("00000000000000a1", 1, "table=1, tcp,tp_dst=22 actions=x")],
}


@pytest.mark.parametrize(
    ("service", "params"),
    [
        ([], {}),
        (["tcp/5432"], {"protocol": "tcp", "port": "5432"}),
        (["UDP/53"], {"protocol": "udp", "port": "53"}),
        (["tcp"], {"protocol": "tcp"}),
        (["icmp"], {"protocol": "icmp"}),
        (["any"], {"protocol": "any"}),
    ],
)
def test_explain_sends_from_to_and_service(
    api: Stub, ctfw: Any, service: list[str], params: dict
) -> None:
    api.answer("GET", "/explain", EXPLAINED)
    run = ctfw("explain", "vm1", "198.18.0.2", *service)
    assert run.code == 0, run.err
    assert api.sent()[0].query == {"from": "vm1", "to": "198.18.0.2", **params}


def test_explain_exit_codes_and_output(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/explain", EXPLAINED)
    run = ctfw("explain", "vm1", "vm2", "tcp/22")
    assert run.code == 0
    assert run.out.startswith("ALLOWED: pair 1 admits tcp/22\n")
    assert "tcp/22" in run.out and "table=1, tcp,tp_dst=22 actions=x" in run.out
    denied = {"verdict": "denied", "why": "no pair between vm2 and vm1", "pairs": [], "flows": []}
    api.answer("GET", "/explain", denied)
    run = ctfw("explain", "vm2", "vm1", "tcp/22")
    assert (run.code, run.out) == (4, "DENIED: no pair between vm2 and vm1\n")
    run = ctfw("--json", "explain", "vm2", "vm1")
    assert run.code == 4 and run.json() == denied


def test_service_params() -> None:
    assert service_params("tcp/1") == {"protocol": "tcp", "port": 1}
    assert service_params(None) == {}
    for bad in ("tcp/0", "tcp/", "icmp/8", "tcp/22-23", "22"):
        with pytest.raises(UsageError):
            service_params(bad)


# --- events ----------------------------------------------------------------------------------
def _event(ident: int, verdict: str = "denied") -> dict[str, Any]:
    return {"id": ident, "time": 1_800_000_000 + ident, "switch": "br0", "vm": "vm2",
            "peer": "vm1", "protocol": "tcp", "src": "198.18.0.2", "dst": "198.18.0.1",
            "sport": 40000 + ident, "dport": 22, "verdict": verdict, "reason": "no-pair",
            "pair": None}  # fmt: skip


def test_events_query_and_table(api: Stub, ctfw: Any) -> None:
    api.answer("GET", "/events", {"events": [_event(1), _event(2, "allowed")]})
    before = time.time()
    run = ctfw("events", "--denied", "--vm", "vm2", "--since", "5m", "--limit", "20")
    assert run.code == 0, run.err
    query = api.sent()[0].query
    assert {k: v for k, v in query.items() if k != "since"} == {
        "verdict": "denied", "vm": "vm2", "limit": "20"}  # fmt: skip
    assert before - 300 - 1 <= float(query["since"]) <= time.time() - 300
    lines = run.out.splitlines()
    assert lines[0].split()[:4] == ["ID", "TIME", "VERDICT", "REASON"]
    assert "198.18.0.2:40001" in lines[1] and "198.18.0.1:22" in lines[1]
    assert ctfw("events", "--allowed").code == 0
    assert api.sent()[-1].query == {"verdict": "allowed"}


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("300", now) == now - 300
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1.5m", now) == now - 90
    assert parse_since("@1700000000", now) == 1_700_000_000
    utc = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T08:00:00Z", now) == utc
    assert parse_since("2027-01-15T08:00:00", now) == datetime(2027, 1, 15, 8, 0).timestamp()
    assert parse_since("2027-01-15T08:00:00+00:00", now) == parse_since("2027-01-15T08:00:00Z")
    assert parse_since("1970-01-01T00:00:10Z", now) == 10
    for bad in ("", "soon", "@-1", "@nan", "5w", "-5"):
        with pytest.raises(UsageError):
            parse_since(bad, now)


def test_follow_polls_after_the_last_id_and_ctrl_c_exits_0(api: Stub) -> None:
    """A real `ctfw events --follow` process: it prints the events it had, then new ones as
    they come (asking after= the last id it printed), and Ctrl-C (SIGINT) ends it with 0."""
    log = [_event(1), _event(2)]
    arrivals = [[], [_event(3)], [_event(4), _event(5)]]  # one batch per poll

    def events(req: Request) -> Any:
        if "after" in req.query:
            log.extend(arrivals.pop(0) if arrivals else [])
            return {"events": [e for e in log if e["id"] > int(req.query["after"])]}
        return {"events": log[-int(req.query.get("limit", 100)) :]}

    api.route("GET", "/events", events)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ryu_ctfw.cli", "--url", api.url, "--json", "events",
         "--follow", "--denied", "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        got = [json.loads(line) for line in _lines(proc, 5, timeout=20)]
        assert [e["id"] for e in got] == [1, 2, 3, 4, 5]
        assert got[0] == _event(1)  # each line is the API's event object
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    queries = [r.query for r in api.sent()]
    assert queries[0] == {"verdict": "denied"}
    polls = [q for q in queries if "after" in q]
    assert polls[:3] == [{"verdict": "denied", "after": a, "limit": "10000"}
                         for a in ("2", "2", "3")]  # fmt: skip
    assert all(q["after"] == "5" for q in polls[3:])
    # An empty poll also looked at the newest event (a restarted log): there was none.
    assert {"limit": "1"} in queries


def _lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """`count` lines of the process' output, failing (not hanging) after `timeout`."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or ()], daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            got.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"only {got} within {timeout} s ({proc.poll()})") from None
    return got


# --- the policy as a file --------------------------------------------------------------------
DOC = {"vms": [VM1], "groups": [], "networks": [], "pairs": [PAIR1]}


def test_policy_export_to_stdout_and_file(api: Stub, ctfw: Any, tmp_path: Path) -> None:
    api.answer("GET", "/policy", DOC)
    run = ctfw("policy", "export")
    assert run.code == 0 and json.loads(run.out) == DOC
    target = tmp_path / "policy.json"
    target.write_text("old")
    run = ctfw("policy", "export", str(target))
    assert run.code == 0, run.err
    assert json.loads(target.read_text()) == DOC
    assert "1 vms, 0 groups, 0 networks, 1 pairs" in run.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json"]  # no temp left


def test_policy_export_failure_leaves_the_file(api: Stub, ctfw: Any, tmp_path: Path) -> None:
    api.answer("GET", "/policy", {"error": "not implemented"}, status=501)
    target = tmp_path / "policy.json"
    target.write_text("old")
    assert ctfw("policy", "export", str(target)).code == 3
    assert target.read_text() == "old"


def test_policy_apply_sends_the_document(api: Stub, ctfw: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DOC))
    empty = {"vms": [], "groups": [], "networks": [], "pairs": [], "switches": []}
    diff = {
        "added": {**empty, "vms": ["vm3"], "pairs": [PAIR1]},
        "changed": {**empty, "groups": ["web"], "switches": ["00000000000000a1"]},
        "removed": {**empty, "pairs": [PAIR2]},
    }
    api.answer("PUT", "/policy", diff)
    run = ctfw("policy", "apply", str(path))
    assert run.code == 0, run.err
    assert api.sent()[0].body == DOC and api.sent()[0].query == {}
    assert run.out.splitlines() == [
        "+ vm vm3",
        "+ pair 1: vm1 -> vm2 tcp/22",
        "~ group web",
        "~ switch 00000000000000a1",
        "- pair 12: web -> vm3 any",
    ]
    api.answer("PUT", "/policy", {"added": empty, "changed": empty, "removed": empty})
    assert ctfw("policy", "apply", str(path)).out == "no change\n"
    api.answer("PUT", "/policy", {**PLAN, "status": 200, "answer": {"added": {}}})
    run = ctfw("policy", "apply", str(path), "--dry-run")
    assert run.code == 0 and api.sent()[-1].query == {"dry_run": "true"}
    assert "connections cut: 1 pair(s)" in run.out


def test_policy_apply_of_bad_json_sends_nothing(api: Stub, ctfw: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"vms": [')
    run = ctfw("policy", "apply", str(path))
    assert run.code == 2 and "is not valid JSON" in run.err
    assert api.requests == []


def test_a_reader_that_leaves_early_is_no_error(api: Stub) -> None:
    """`ctfw vm ls | head -1`: the pipe closes under the CLI; it ends quietly with 0."""
    api.answer("GET", "/vms", {"vms": [{**VM1, "name": f"vm{i}"} for i in range(5000)]})
    cli = subprocess.Popen([sys.executable, "-m", "ryu_ctfw.cli", "--url", api.url, "vm", "ls"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())  # fmt: skip
    assert cli.stdout is not None and cli.stderr is not None
    assert cli.stdout.readline().split()[0] == b"NAME"
    cli.stdout.close()  # as head does after its line
    assert cli.wait(timeout=30) == 0
    assert cli.stderr.read() == b""


def test_base_url_forms() -> None:
    from ryu_ctfw.cli.client import base_url

    assert base_url("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert base_url("http://ctl.example:8080/ctfw/v1/") == "http://ctl.example:8080"
    assert base_url("https://[::1]:8443") == "https://[::1]:8443"
    for bad in ("ftp://h", "http://", "http://h:port", "http://h:99999"):
        with pytest.raises(UsageError):
            base_url(bad)


@dataclass
class FakeLog:
    """The controller's event ring, as GET /events answers it; `restart()` empties it and
    starts the ids again at 1, as a controller restart does."""

    ring: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1
    clock: float = 1_800_000_000.0

    def add(self, count: int = 1) -> None:
        for _ in range(count):
            self.ring.append({**_event(self.next_id), "time": self.clock})
            self.next_id += 1
            self.clock += 1.0

    def restart(self) -> None:
        self.ring, self.next_id = [], 1

    def answer(self, req: Request) -> Any:
        q = req.query
        found = [e for e in self.ring if q.get("verdict") in (None, e["verdict"])]
        found = [e for e in found if e["id"] > int(q.get("after", -1))]
        found = [e for e in found if e["time"] >= float(q.get("since", 0))]
        return {"events": found[-int(q.get("limit", 100)) :]}


def test_follow_survives_an_unreachable_and_a_restarted_controller(
    api: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process, the clock (sleep) playing the controller: it goes away and comes back
    restarted (ids from 1 again), then restarts between two polls. Every event is printed
    once, none is lost."""
    from ryu_ctfw.cli import commands
    from ryu_ctfw.cli.client import Client

    log = FakeLog()
    api.route("GET", "/events", log.answer)
    log.add(2)
    dead = "http://127.0.0.1:9"

    def controller(poll: int) -> None:
        ctx.client.url = dead if poll == 2 else api.url
        if poll == 1:
            log.add()  # id 3
        elif poll == 3:
            log.restart()
            log.add(2)  # ids 1, 2 again, later times
        elif poll == 4:
            log.add()  # id 3 of the new log
        elif poll == 5:
            log.restart()  # quickly, between two polls
            log.add()
        elif poll == 7:
            log.restart()  # again: the new event has the id last printed (1)
            log.add()
        elif poll == 9:
            raise KeyboardInterrupt

    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        controller(len(polls))

    ctx = commands.Context(Client(api.url), sleep=sleep)
    first = log.answer(Request("GET", "/events", {"verdict": "denied"}, {}, None))["events"]
    assert commands.follow(ctx, {"verdict": "denied"}, first, 0.5) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "VERDICT"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "1", "2", "3", "1", "1"]
    times = [" ".join(line.split()[1:3]) for line in lines[1:]]
    assert times == sorted(times) and len(set(times)) == 8, "each event once, in order"
    assert err.count("cannot reach the controller") == 1 and "answers again" in err
    assert err.count("started again") == 3  # polls 3, 5 and 7
    assert polls == [0.5] * 9
