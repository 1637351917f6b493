"""A datapath for unit tests: an Open vSwitch in miniature that SwitchManager can sync.

It records every message it is sent (Ryu objects and the raw bytes wire.py packs, in
order), keeps a flow table that committed bundles change, and answers as OVS would:
flow-stats requests with what the table holds (as bytes, through Ryu's parser table and
ryu_compat's raw hook, so the sync reads them exactly as from a real switch), barriers,
and bundle commits with success or a configured refusal. It can fall silent (a lost
reply, a switch that hangs) and disconnect in the middle of a sync.

Answers arrive from a green thread of their own, as Ryu's receive loop delivers them, and
wait for `gate` to be open: a test can hold them to act while a sync is in flight.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ryu.lib import hub
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_ctfw import ryu_compat, wire
from ryu_ctfw.compiler import Flow

OFP_HEADER = struct.Struct("!BBHI")
STATS_HEAD = struct.Struct("!HBxIIHHHH4xQQQ")  # ofp_flow_stats up to its match
MULTIPART_HEAD = struct.Struct("!HH4x")
ONF_BUNDLE_ERROR = 2305  # ONFERR_ET_BUNDLE_FAILED-like: the experimenter error of a commit


def everything(msg: Any) -> bool:
    return True


def nothing(msg: Any) -> bool:
    return False


def is_commit(msg: Any) -> bool:
    return isinstance(msg, parser.ONFBundleCtrlMsg) and msg.type == ofp.ONF_BCT_COMMIT_REQUEST


def is_read_back(msg: Any) -> bool:
    return isinstance(msg, parser.OFPFlowStatsRequest)


def raw_flow(flow: Flow, packets: int = 0) -> wire.RawFlow:
    """The entry a switch holding `flow` has for it."""
    return wire.RawFlow(
        wire.wire_key(flow), flow.cookie, wire.instructions_bytes(flow.actions), packets, 0, 0.0
    )


@dataclass(frozen=True)
class FlowMod:
    """One flow-mod that came inside a bundle, cut at its fields."""

    command: int
    cookie: int
    key: wire.WireKey
    instructions: bytes
    data: bytes  # the flow-mod as sent, with xid 0: compare with wire.flow_add(flow)


def cut_flow_mod(data: bytes) -> FlowMod:
    _v, _t, _len, _xid, cookie, _mask, table, command, *_rest, prio, _buf, _port, _group, _fl = (
        wire._FLOW_MOD.unpack_from(data)
    )
    body = data[wire._FLOW_MOD.size :]
    match_len = struct.unpack_from("!H", body, 2)[0]
    match_end = match_len + (-match_len % 8)
    return FlowMod(
        command, cookie, (table, prio, body[:match_end]), body[match_end:], wire.with_xid(data, 0)
    )


class FakeSwitch:
    """A datapath `mgr` (a SwitchManager) talks to. `holds`: flows already on the switch.

    What it answers is set by attributes a test may change at any time:
    `silence(msg)`: do what this message asks but never answer it (default: answer all);
    `refuse`: (error type, error code) to refuse the next bundles with, naming their first
    flow-mod, as OVS does; None commits; `disconnect(msg)`: the connection goes when this
    message is sent (it is not answered); `gate`: answers wait while it is clear;
    `hold_commits`: a commit is neither applied nor answered until the next message on
    this connection (a switch handles a connection's messages in order) or `apply_held()`.
    Two connections of one switch share its flows: `FakeSwitch(mgr, table=other.table)`.
    """

    def __init__(
        self,
        mgr: Any,
        ports: dict[int, str] | None = None,
        holds: Iterable[wire.RawFlow] = (),
        dpid: int = 1,
        parts: int = 1,
        table: dict[wire.WireKey, wire.RawFlow] | None = None,
    ) -> None:
        ryu_compat.install_raw_flow_stats_parser()  # what the app does at start
        self.mgr = mgr
        self.id = dpid
        self.ofproto, self.ofproto_parser = ofp, parser
        names = ports or {ofp.OFPP_LOCAL: "br0", 2: "tap2", 3: "tap3"}
        self.ports = {no: SimpleNamespace(port_no=no, name=n.encode()) for no, n in names.items()}
        self.xid = 0
        self.is_active = True
        self.table: dict[wire.WireKey, wire.RawFlow] = {r.key: r for r in holds}
        if table is not None:
            self.table = table
        self.parts = parts  # flow-stats answers cut in this many multipart replies
        self.sent: list[Any] = []  # every message: Ryu objects and raw bytes, in order
        self.bundles: dict[int, list[tuple[int, FlowMod]]] = {}  # open bundles: (xid, mod)
        self.committed: list[list[FlowMod]] = []
        self.refused: list[list[FlowMod]] = []
        self.silence: Callable[[Any], bool] = nothing
        self.disconnect: Callable[[Any], bool] = nothing
        self.refuse: tuple[int, int] | None = None
        self.hold_commits = False
        self.held: list[Any] = []
        self.gate = hub.Event()
        self.gate.set()

    # --- what Ryu's Datapath offers -------------------------------------------------------
    def set_xid(self, msg: Any) -> None:
        self.xid = (self.xid + 1) & ofp.MAX_XID
        msg.xid = self.xid

    def send(self, data: bytes) -> None:
        """Raw bytes: the bundle adds wire.py packs, any number of messages back to back."""
        self.sent.append(data)
        offset = 0
        while offset < len(data):
            _v, msg_type, length, xid = OFP_HEADER.unpack_from(data, offset)
            msg = data[offset : offset + length]
            offset += length
            if msg_type == wire.OFPT_EXPERIMENTER:
                fields = wire._BUNDLE_ADD.unpack_from(msg)
                assert fields[5] == wire.ONF_ET_BUNDLE_ADD_MESSAGE, "only bundle adds go raw"
                inner = msg[wire._BUNDLE_ADD.size :]
                self.bundles.setdefault(fields[6], []).append((xid, cut_flow_mod(inner)))

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)
        if not self.is_active:
            return
        if self.hold_commits and is_commit(msg):
            self.held.append(msg)
            return
        self.apply_held()
        if self.disconnect(msg):
            self.is_active = False
            hub.spawn(self.mgr.disconnected, self)  # Ryu notices from its own loop
            return
        answers = self._answers(msg)  # a silenced commit is still applied: the reply is lost
        if answers and not self.silence(msg):
            hub.spawn(self._deliver, answers)

    def apply_held(self) -> None:
        """Apply the held commits now; their replies are lost."""
        held, self.held = self.held, []
        for msg in held:
            self._commit(msg)

    # --- what a test looks at ---------------------------------------------------------------
    def asked(self, kind: type) -> list[Any]:
        return [m for m in self.sent if isinstance(m, kind)]

    def commits(self) -> list[Any]:
        return [m for m in self.sent if is_commit(m)]

    def holds(self, flows: Iterable[Flow]) -> bool:
        """Whether the table is exactly these flows."""
        return self.table == {r.key: r for r in map(raw_flow, flows)}

    # --- answers ----------------------------------------------------------------------------
    def _answers(self, msg: Any) -> list[tuple[str, Any]]:
        if isinstance(msg, parser.OFPFlowStatsRequest):
            return [("reply", r) for r in self._flow_stats(msg.xid)]
        if isinstance(msg, parser.OFPBarrierRequest):
            return [("reply", SimpleNamespace(xid=msg.xid))]
        if is_commit(msg):
            return self._commit(msg)
        return []  # meter-mods, set-config, bundle open: OVS answers success with silence

    def _flow_stats(self, xid: int) -> list[Any]:
        """The table as flow-stats replies, parsed by Ryu (so by ryu_compat's raw hook)."""
        entries = [self._entry(r) for r in self.table.values()]
        size = -(-len(entries) // self.parts) or 1
        chunks = [entries[i : i + size] for i in range(0, len(entries), size)] or [[]]
        out = []
        for n, chunk in enumerate(chunks):
            more = ofp.OFPMPF_REPLY_MORE if n < len(chunks) - 1 else 0
            body = MULTIPART_HEAD.pack(ofp.OFPMP_FLOW, more) + b"".join(chunk)
            buf = OFP_HEADER.pack(4, ofp.OFPT_MULTIPART_REPLY, OFP_HEADER.size + len(body), xid)
            buf += body
            out.append(ofproto_parser.msg(self, 4, ofp.OFPT_MULTIPART_REPLY, len(buf), xid, buf))
        return out

    @staticmethod
    def _entry(raw: wire.RawFlow) -> bytes:
        table, prio, match = raw.key
        length = STATS_HEAD.size + len(match) + len(raw.instructions)
        head = STATS_HEAD.pack(
            length, table, 7, 0, prio, 0, 0, 0, raw.cookie, raw.packets, raw.bytes
        )
        return head + match + raw.instructions

    def _commit(self, msg: Any) -> list[tuple[str, Any]]:
        mods = self.bundles.pop(msg.bundle_id, [])
        if self.refuse is not None:
            self.refused.append([m for _x, m in mods])
            type_, code = self.refuse
            out: list[tuple[str, Any]] = []
            if mods:
                out.append(("error", SimpleNamespace(xid=mods[0][0], type=type_, code=code)))
            exp = SimpleNamespace(
                xid=msg.xid, type=ofp.OFPET_EXPERIMENTER, code=0,
                exp_type=ONF_BUNDLE_ERROR, experimenter=wire.ONF_EXPERIMENTER_ID,
            )  # fmt: skip
            return [*out, ("error", exp)]
        for _xid, mod in mods:  # in order: the bundle is ordered
            if mod.command == wire.OFPFC_ADD:
                self.table[mod.key] = wire.RawFlow(mod.key, mod.cookie, mod.instructions, 0, 0, 0)
            elif mod.command == wire.OFPFC_DELETE_STRICT:
                held = self.table.get(mod.key)
                if held is not None and held.cookie == mod.cookie:
                    del self.table[mod.key]
        self.committed.append([m for _x, m in mods])
        reply = parser.ONFBundleCtrlMsg(
            self, msg.bundle_id, ofp.ONF_BCT_COMMIT_REPLY, msg.flags, []
        )
        reply.xid = msg.xid
        return [("reply", reply)]

    def _deliver(self, answers: list[tuple[str, Any]]) -> None:
        self.gate.wait()
        for kind, msg in answers:
            if not self.is_active:
                return  # the connection went before the answer came
            if kind == "reply":
                self.mgr.reply(self, msg)
            else:
                self.mgr.error(self, msg)
            hub.sleep(0)
