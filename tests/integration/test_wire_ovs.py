"""wire.py against a real Open vSwitch: the bytes it packs are what OVS reads and writes.

The sync compares the flows it compiles with the switch's flows as bytes, so a flow packed
by wire.py must be byte for byte what OVS reports for it, for every shape the compiler
makes (tests/shapes.py). Both directions are checked through the bridge's management
socket, without Ryu: flows installed from the compiler's ovs-ofctl text read back as
exactly our bytes, and flows installed from our bytes dump as exactly the compiler's text.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from shapes import ROUND_TRIP_FLOWS

from ryu_ctfw import lab, wire
from ryu_ctfw.compiler import Meter, render

pytestmark = pytest.mark.integration
BRIDGE = "ctwire0"


@pytest.fixture
def ovs(tmp_path: Path) -> Iterator[lab.Ovs]:
    lab.require_root_and_tools()
    ovs = lab.Ovs(tmp_path / "ovs").start()
    try:
        ovs.add_bridge(BRIDGE)
        # Flows naming a meter need it to exist (the controller makes them first too).
        for meter_id in sorted({a.meter_id for f in ROUND_TRIP_FLOWS for a in f.actions
                                if isinstance(a, Meter)}):  # fmt: skip
            ovs.ofctl("add-meter", BRIDGE, f"meter={meter_id},pktps,burst,band=type=drop,"
                      "rate=20,burst_size=20")  # fmt: skip
        yield ovs
    finally:
        ovs.stop()


class OpenFlowClient:
    """Just enough OpenFlow 1.3 over a bridge's management socket for these tests."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.xid = 0
        self.send(struct.pack("!BBHI", 4, 0, 8, 0))  # hello
        assert self.recv()[1] == 0, "the switch answers hello with hello"

    def send(self, msg: bytes) -> None:
        self.xid += 1
        self.sock.sendall(wire.with_xid(msg, self.xid))

    def recv(self) -> bytes:
        head = self._read(8)
        return head + self._read(struct.unpack("!H", head[2:4])[0] - 8)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the switch closed the connection"
            data += chunk
        return data

    def barrier(self) -> None:
        """Wait until everything sent so far is done; fail on any error reply."""
        self.send(struct.pack("!BBHI", 4, 20, 8, 0))
        while (msg := self.recv())[1] != 21:
            assert msg[1] != 1, f"switch error: {msg.hex()}"

    def flows(self) -> list[wire.RawFlow]:
        """All flows, from one OFPMP_FLOW request (all tables, any cookie)."""
        self.send(
            struct.pack("!BBHIHH4xB3xII4xQQHH4x", 4, 18, 56, 0, 1, 0, 0xFF, wire.OFPP_ANY,
                        wire.OFPG_ANY, 0, 0, 1, 4)
        )  # fmt: skip
        out: list[wire.RawFlow] = []
        while True:
            msg = self.recv()
            if not wire.is_flow_stats_reply(msg):
                assert msg[1] != 1, f"switch error: {msg.hex()}"
                continue
            out += wire.flow_stats_entries(msg)
            if not struct.unpack_from("!H", msg, 10)[0] & 1:  # no REPLY_MORE
                return out


def test_flows_installed_from_text_read_back_as_our_bytes(ovs: lab.Ovs, tmp_path: Path) -> None:
    flows_file = tmp_path / "flows.txt"
    flows_file.write_text("".join(f"cookie=0x{f.cookie:x},{f.text()}\n" for f in ROUND_TRIP_FLOWS))
    ovs.ofctl("add-flows", BRIDGE, str(flows_file))

    held = {raw.key: raw for raw in OpenFlowClient(ovs.root / f"{BRIDGE}.mgmt").flows()}
    assert len(held) == len(ROUND_TRIP_FLOWS)
    for flow in ROUND_TRIP_FLOWS:
        raw = held.get(wire.wire_key(flow))
        assert raw is not None, f"match bytes differ for {flow.text()}"
        assert raw.cookie == flow.cookie, flow.text()
        assert raw.instructions == wire.instructions_bytes(flow.actions), flow.text()


def test_flows_installed_from_our_bytes_dump_as_the_compilers_text(ovs: lab.Ovs) -> None:
    client = OpenFlowClient(ovs.root / f"{BRIDGE}.mgmt")
    for flow in ROUND_TRIP_FLOWS:
        client.send(wire.flow_add(flow))
    client.barrier()

    dumped = ovs.dump_flows(BRIDGE, "--no-stats").splitlines()
    # dump-flows leaves table 0 and default cookies out; the compiler's text keeps the table.
    expected = {line.replace("table=0, ", "") for line in render(ROUND_TRIP_FLOWS).splitlines()}
    got = {line.split("cookie=", 1)[1].split(", ", 1)[1].strip() for line in dumped if line}
    assert got == expected


def test_a_strict_delete_with_our_bytes_removes_exactly_that_flow(ovs: lab.Ovs) -> None:
    client = OpenFlowClient(ovs.root / f"{BRIDGE}.mgmt")
    for flow in ROUND_TRIP_FLOWS:
        client.send(wire.flow_add(flow))
    victim = ROUND_TRIP_FLOWS[-1]
    # The wrong cookie deletes nothing: never touch a flow someone else owns.
    client.send(wire.flow_delete(*wire.wire_key(victim), victim.cookie ^ 1))
    client.barrier()
    assert len(client.flows()) == len(ROUND_TRIP_FLOWS)
    client.send(wire.flow_delete(*wire.wire_key(victim), victim.cookie))
    client.barrier()
    left = {raw.key for raw in client.flows()}
    assert left == {wire.wire_key(f) for f in ROUND_TRIP_FLOWS} - {wire.wire_key(victim)}
