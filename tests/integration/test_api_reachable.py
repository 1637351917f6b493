"""The REST API stays reachable under 1,200 idle connections; chunked bodies are read.

Needs no switch: only ryu-manager and connections to its REST port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ryu_ctfw import lab, wsgi_limits

IDLE = 1200
SYSTEMD_SOFT_LIMIT = 1024  # what ryu-manager gets as a service: LimitNOFILE's default soft


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def nofile_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def http(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def chunked_put(port: int, path: str, pieces: list[bytes], encoding: str = "chunked") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: {encoding}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def test_1200_idle_connections_do_not_starve_the_api(tmp_path: Path) -> None:
    # Started as a service would be (soft limit 1024): the app raises it to the hard limit.
    with soft_nofile(SYSTEMD_SOFT_LIMIT):
        ctl = lab.Controller(tmp_path).start()
    assert ctl.proc is not None
    idle: list[socket.socket] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        ryu_soft, ryu_hard = nofile_of(ctl.proc.pid)
        assert ryu_soft == ryu_hard, "soft descriptor limit raised to the hard one"
        log = ctl.log_file.read_text()
        size = wsgi_limits.max_connections(ryu_soft)
        assert f"serves at most {size} connections at once" in log
        assert size <= ryu_soft - wsgi_limits.RESERVED_FDS

        # This process needs descriptors for its 1,200 too.
        if soft < IDLE + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE + 400), hard))
        t0 = time.monotonic()
        for _ in range(IDLE):
            idle.append(socket.create_connection(("127.0.0.1", ctl.api_port), timeout=5))
        opened = time.monotonic()
        assert opened - t0 < 30

        t = time.monotonic()
        assert ctl.api("GET", "/ctfw/v1/vms") == (200, {"vms": []})
        assert time.monotonic() - t < 3, "a real client is answered at once"
        t = time.monotonic()
        ctl.ok("PUT", "/ctfw/v1/vms/vm1", {"port": "tap1", "ips": ["198.18.0.1"]})
        ctl.ok("PUT", "/ctfw/v1/vms/vm2", {"port": "tap2", "ips": ["198.18.0.2"]})
        ctl.ok("POST", "/ctfw/v1/pairs", {"initiator": "vm1", "responder": "vm2"})
        assert time.monotonic() - t < 5
        fds = len(list(Path(f"/proc/{ctl.proc.pid}/fd").iterdir()))
        assert fds < ryu_soft - wsgi_limits.RESERVED_FDS // 2, fds  # descriptors remain

        # Idle clients time out: the server closes them (EOF) after its socket timeout.
        deadline = opened + wsgi_limits.SOCKET_TIMEOUT + 15
        for s in idle[:: IDLE // 20]:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert s.recv(1) == b"", "closed by the server"
        assert time.monotonic() - t0 >= wsgi_limits.SOCKET_TIMEOUT - 1, "not before the timeout"
        assert ctl.api("GET", "/ctfw/v1/pairs")[0] == 200
        assert [p["initiator"] for p in ctl.stored()["pairs"]] == ["vm1"]
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        ctl.stop()


def test_a_slow_client_is_cut_off_and_others_are_served(tmp_path: Path) -> None:
    ctl = lab.Controller(tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", ctl.api_port), timeout=30) as s:
            # Stops half-way through its headers.
            s.sendall(b"PUT /ctfw/v1/vms/vm1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            assert ctl.api("GET", "/ctfw/v1/vms")[0] == 200
            t = time.monotonic()
            assert s.recv(1) == b""
            assert time.monotonic() - t < wsgi_limits.SOCKET_TIMEOUT + 5
        assert ctl.stored()["vms"] == []
    finally:
        ctl.stop()


def trickle(port: int, head: bytes, body: bytes, every: float, out: dict[str, Any]) -> None:
    """Send `head` at once, then `body` a byte at a time; record when the server hung up
    and what it answered."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        try:
            s.sendall(head)
            for i in range(len(body)):
                s.sendall(body[i : i + 1])
                s.settimeout(every)
                with contextlib.suppress(TimeoutError):
                    if (data := s.recv(4096)) is not None:
                        out["answer"] = data
                        break
            s.settimeout(60)
            out["answer"] = out.get("answer", b"") + s.recv(4096)
        except OSError as e:
            out["error"] = repr(e)
    out["after"] = time.monotonic() - t0


def test_a_client_trickling_its_request_is_cut_at_the_deadline(tmp_path: Path) -> None:
    # A byte every 2 s keeps the socket timeout from ever firing; the request's deadline
    # does, for one trickling its headers and one trickling its body.
    ctl = lab.Controller(tmp_path).start()
    port = ctl.api_port
    body = json.dumps({"port": "tap1", "ips": ["198.18.0.1"]}).encode()
    head = (
        b"PUT /ctfw/v1/vms/vm1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    slow_head, slow_body = {}, {}  # type: ignore[var-annotated]
    threads = [
        threading.Thread(target=trickle, args=(port, b"", head + body, 2.0, slow_head)),
        threading.Thread(target=trickle, args=(port, head, body, 2.0, slow_body)),
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        assert ctl.api("GET", "/ctfw/v1/vms") == (200, {"vms": []}), "others are served"
        for t in threads:
            t.join(timeout=wsgi_limits.REQUEST_DEADLINE + 20)
        for out in (slow_head, slow_body):
            assert "after" in out, "the trickling client was not cut off"
            assert out["answer"].startswith(b"HTTP/1.1 408"), out
            assert out["after"] > wsgi_limits.REQUEST_DEADLINE - 1
            assert out["after"] < wsgi_limits.REQUEST_DEADLINE + 5
        assert ctl.stored()["vms"] == [], "neither request did anything"
        # Control: the same request sent whole is taken.
        status, _ = http(
            port, head.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n") + body
        )
        assert status == 201
    finally:
        ctl.stop()


def test_chunked_bodies_are_read_not_taken_as_empty(tmp_path: Path) -> None:
    ctl = lab.Controller(tmp_path).start()
    port = ctl.api_port
    try:
        pieces = [b'{"port": "ta', b'p1", "ips": ', b'["198.18.0.1"]}']
        status, body = http(port, chunked_put(port, "/ctfw/v1/vms/vm1", pieces))
        assert status == 201, body
        assert ctl.stored()["vms"][0]["ips"] == ["198.18.0.1"]

        # The 64 KiB cap holds for chunks as for Content-Length; nothing changes.
        before = ctl.stored_bytes()
        big = [b'{"port": "tap2", "ips": [' + b" " * 70_000 + b'"198.18.0.2"]}']
        status, body = http(port, chunked_put(port, "/ctfw/v1/vms/vm2", big))
        assert status == 413, body
        # Malformed chunk sizes, other transfer codings: clear 4xx, nothing changes.
        bad = (
            "PUT /ctfw/v1/vms/vm2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        )
        status, body = http(port, bad.encode())
        assert status == 400 and b"could not be read" in body, body
        status, body = http(port, chunked_put(port, "/ctfw/v1/vms/vm2", pieces, "gzip"))
        assert status == 411 and b"Transfer-Encoding 'gzip' is not supported" in body, body
        assert ctl.stored_bytes() == before
        assert ctl.api("GET", "/ctfw/v1/vms/vm2")[0] == 404
    finally:
        ctl.stop()
