"""A switch that writes match fields in another order loses no flow on reconnect (issue 10,
point 7).

Open vSwitch hands back matches in the order its nx_put_raw writes them, which is the
order wire.py packs; another switch (or OVS version) may use another. Then every flow the
switch holds differs in bytes from the wanted one: the resync re-adds it and deletes the
switch's copy, which is the same flow. The deletes must come first, or the re-added flows
are gone.

`ReorderingProxy` stands between the real switch and the controller and rewrites every
flow-stats reply so that its matches list their fields in another valid order (the fields
no other field depends on come first, reversed; OVS checks each field's prerequisites as it
reads them, so the rest keep their order). Everything else passes untouched.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import threading
from collections.abc import Callable

import frames
from conftest import Lab
from sniff import Sniffer

from ryu_ctfw import fields, lab

OFPT_MULTIPART_REPLY, OFPMP_FLOW = 19, 1
HEADER = struct.Struct("!BBHI")
ENTRY_HEAD = 48  # ofp_flow_stats up to its match
# Fields that need no other field before them (OpenFlow 1.3, 7.2.3.6; NXM ct fields).
FREE = {(fields.OXM_OF, n) for n in (0, 3, 4, 5, 6)} | {(fields.NXM_1, n) for n in (105, 107)}


def tlvs(oxm: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(oxm):
        length = oxm[at + 3]
        out.append(oxm[at : at + 4 + length])
        at += 4 + length
    return out


def reorder(oxm: bytes) -> bytes:
    parts = tlvs(oxm)
    key = lambda t: ((t[0] << 8) | t[1], t[2] >> 1)  # noqa: E731 (class, field)
    free = [t for t in parts if key(t) in FREE]
    return b"".join([*reversed(free), *(t for t in parts if key(t) not in FREE)])


def rewrite_flow_stats(msg: bytes) -> tuple[bytes, int]:
    """The reply with every entry's match fields reordered; and how many entries changed."""
    out, at, changed = bytearray(msg[:16]), 16, 0
    while at + ENTRY_HEAD + 4 <= len(msg):
        length = struct.unpack_from("!H", msg, at)[0]
        entry = msg[at : at + length]
        match_len = struct.unpack_from("!H", entry, ENTRY_HEAD + 2)[0]
        oxm = entry[ENTRY_HEAD + 4 : ENTRY_HEAD + match_len]
        new = reorder(oxm)
        changed += new != oxm
        out += entry[: ENTRY_HEAD + 4] + new + entry[ENTRY_HEAD + match_len :]
        at += length
    return bytes(out), changed


class ReorderingProxy:
    """Listens on `port`; each switch connection is relayed to the controller's port."""

    def __init__(
        self, upstream: int, rewrite: Callable[[bytes], tuple[bytes, int]] | None = None
    ) -> None:
        self.upstream = upstream
        self.rewrite = rewrite or rewrite_flow_stats
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.rewritten = 0  # flow-stats entries whose bytes the proxy changed
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for s in [self.listener, *self.socks]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                switch, _ = self.listener.accept()
                ctl = socket.create_connection(("127.0.0.1", self.upstream))
                self.socks += [switch, ctl]
                threading.Thread(target=self._pipe, args=(ctl, switch), daemon=True).start()
                threading.Thread(target=self._from_switch, args=(switch, ctl), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _from_switch(self, src: socket.socket, dst: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                buf += data
                while len(buf) >= HEADER.size:
                    _v, kind, length, _x = HEADER.unpack_from(buf)
                    if len(buf) < length:
                        break
                    msg, buf = buf[:length], buf[length:]
                    if kind == OFPT_MULTIPART_REPLY and struct.unpack_from("!H", msg, 8)[0] == 1:
                        msg, changed = self.rewrite(msg)
                        self.rewritten += changed
                    dst.sendall(msg)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def flow_lines(env: Lab) -> list[str]:
    return sorted(env.ovs.ofctl("dump-flows", env.bridge, "--no-stats").splitlines()[1:])


def test_reordering_changes_bytes_not_meaning() -> None:
    # The proxy itself: a match of ours, reordered, is another byte string of the same TLVs.
    from ryu_ctfw import wire
    from ryu_ctfw.compiler import Match
    from ryu_ctfw.fields import CtState

    match = Match(in_port=2, eth_type=0x0800, eth_dst="52:54:00:00:00:02",
                  ct_state=CtState(0x20, 0x20))  # fmt: skip
    packed = wire.match_bytes(match)
    oxm = packed[4 : struct.unpack_from("!H", packed, 2)[0]]
    assert reorder(oxm) != oxm
    assert sorted(tlvs(reorder(oxm))) == sorted(tlvs(oxm))


def test_a_switch_writing_fields_in_another_order_keeps_every_flow(labenv: Lab) -> None:
    a, b, c = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2), labenv.vm("c", 4, 3)
    labenv.pair("a", "b")
    assert a.ping(b.ip)
    before = flow_lines(labenv)
    reports = len(labenv.ctl.sync_reports())

    proxy = ReorderingProxy(labenv.ctl.ofp_port)
    try:
        labenv.ovs.set_controller(labenv.bridge, proxy.port)  # a new connection, via the proxy
        found, changed, deleted = labenv.ctl.wait_in_sync(reports)
        # The scenario happened: the controller saw other bytes and re-added those flows.
        assert proxy.rewritten > 0
        assert changed == deleted == proxy.rewritten, (found, changed, deleted)
        assert flow_lines(labenv) == before, "every flow is still on the switch"

        mark = secrets.token_bytes(8)
        watch = [Sniffer(vm, mark) for vm in (b, c)]
        a.send_frame(frames.udp_frame(a.mac, b.mac, a.ip, b.ip, mark), count=3)
        assert [len(s.frames()) for s in watch] == [3, 0], "delivered to b, and only to b"
        watch = [Sniffer(vm, mark) for vm in (a, c)]
        b.send_frame(frames.udp_frame(b.mac, a.mac, b.ip, a.ip, mark), count=3)
        assert [len(s.frames()) for s in watch] == [0, 0], "b still may not start anything"

        # And the connection through the proxy carries changes as any other.
        labenv.pair("c", "a")
        assert c.ping(a.ip)
    finally:
        labenv.ovs.set_controller(labenv.bridge, labenv.ctl.ofp_port)
        proxy.close()
    lab.wait_for(lambda: labenv.ctl.sync_reports()[-1][1:] == (0, 0), 20, "a direct reconnect")


def test_a_malformed_reply_ends_the_connection_and_the_switch_comes_back(labenv: Lab) -> None:
    # Issue 10, point 8 on the real switch: the first flow-stats reply through the proxy
    # gets an entry of length 0 (Ryu's parser would loop on it forever).
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    labenv.pair("a", "b")
    spoiled: list[int] = []

    def spoil_once(msg: bytes) -> tuple[bytes, int]:
        if spoiled or len(msg) < 18:
            return msg, 0
        spoiled.append(1)
        return msg[:16] + b"\x00\x00" + msg[18:], 0

    reports = len(labenv.ctl.sync_reports())
    proxy = ReorderingProxy(labenv.ctl.ofp_port, spoil_once)
    try:
        labenv.ovs.set_controller(labenv.bridge, proxy.port)
        lab.wait_for(
            lambda: "sent a malformed multipart reply, closing" in labenv.ctl.log_file.read_text(),
            20,
            "the malformed reply to be logged",
        )
        # The connection ended and the switch came back (through the proxy, unspoiled).
        found, changed, deleted = labenv.ctl.wait_in_sync(reports)
        assert spoiled and (changed, deleted) == (0, 0), (found, changed, deleted)
        assert labenv.ctl.proc is not None and labenv.ctl.proc.poll() is None, "the app lives"
        assert labenv.ctl.wait_connected(labenv.bridge)["connected"]
        assert a.ping(b.ip)
        labenv.pair("b", "a", "icmp")  # changes reach the switch over the new connection
        assert b.ping(a.ip)
    finally:
        labenv.ovs.set_controller(labenv.bridge, labenv.ctl.ofp_port)
        proxy.close()
