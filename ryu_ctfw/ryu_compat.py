"""What ryu-ctfw needs of the installed Ryu, checked at start, and its one hook into Ryu.

Why this exists: the sync reads flow stats raw by wrapping an entry of Ryu's private
parser table (`ofproto_v1_3_parser._MSG_PARSERS`), and the switch side builds bundles,
meters and requests with Ryu's message classes. A Ryu of another shape would not fail at
start but at the first switch, deep in a receive loop. `check()` looks for every name
used, once, when the app starts, and names what is missing.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from ryu import exception
from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from ryu_ctfw import multipart, wire

RAW_XIDS = "ctfw_raw_flow_stats_xids"  # Datapath attribute: xids whose replies stay raw

# Message classes the switch side sends or receives (channel.py, switch.py, app.py).
PARSER_CLASSES = (
    "OFPBarrierRequest",
    "OFPFlowStatsReply",
    "OFPFlowStatsRequest",
    "OFPMatch",
    "OFPMeterBandDrop",
    "OFPMeterMod",
    "OFPMultipartReply",
    "OFPSetConfig",
    "ONFBundleCtrlMsg",
)
# Constants the same code reads from the datapath's ofproto module.
OFPROTO_NAMES = (
    "MAX_XID",
    "OFPCML_NO_BUFFER",
    "OFPG_ANY",
    "OFPMC_ADD",
    "OFPMC_MODIFY",
    "OFPMF_BURST",
    "OFPMF_PKTPS",
    "OFPMPF_REPLY_MORE",
    "OFPPR_DELETE",
    "OFPP_ANY",
    "OFPP_LOCAL",
    "OFPP_MAX",
    "OFPTT_ALL",
    "OFPT_MULTIPART_REPLY",
    "ONF_BCT_COMMIT_REQUEST",
    "ONF_BCT_OPEN_REQUEST",
    "ONF_BF_ATOMIC",
    "ONF_BF_ORDERED",
)
# What the raw parser does with the reply object it builds (see install_raw_flow_stats_parser).
REPLY_METHODS = ("set_headers", "set_buf")


class RyuShapeError(RuntimeError):
    """The installed Ryu lacks something ryu-ctfw relies on."""


class ConnectionEndingReply(wire.MalformedReply, exception.OFPTruncatedMessage):
    """A MalformedReply as raised out of the hook. Ryu's ofproto_parser.msg() logs and drops
    any exception of a parser (the connection would go on, the reply silently lost), except
    OFPTruncatedMessage, which it re-raises: out of Datapath._recv_loop, which closes the
    socket. So this is both, and the switch reconnects."""

    def __init__(self, cause: wire.MalformedReply) -> None:
        Exception.__init__(self, str(cause))
        self.ofpmsg, self.residue, self.original_exception = None, b"", cause
        self.kwargs = {"orig_ex": str(cause)}


def check(ofproto: Any = ofproto_v1_3, parser: Any = ofproto_v1_3_parser) -> None:
    """Raise RyuShapeError naming everything missing from the installed Ryu."""
    missing = [f"ofproto_v1_3.{n}" for n in OFPROTO_NAMES if not hasattr(ofproto, n)]
    missing += [f"ofproto_v1_3_parser.{n}" for n in PARSER_CLASSES if not hasattr(parser, n)]
    reply = getattr(parser, "OFPFlowStatsReply", None)
    if reply is not None:
        missing += [
            f"ofproto_v1_3_parser.OFPFlowStatsReply.{m}"
            for m in REPLY_METHODS
            if not callable(getattr(reply, m, None))
        ]
    if not isinstance(getattr(getattr(parser, "OFPMultipartReply", None), "_STATS_MSG_TYPES",
                              None), dict):  # fmt: skip
        missing.append("ofproto_v1_3_parser.OFPMultipartReply._STATS_MSG_TYPES (a dict)")
    else:
        missing += _unchecked_multipart_types(parser.OFPMultipartReply._STATS_MSG_TYPES)
    parsers = getattr(parser, "_MSG_PARSERS", None)
    multipart = getattr(ofproto, "OFPT_MULTIPART_REPLY", None)
    if not hasattr(parsers, "get") or not hasattr(parsers, "__setitem__"):
        missing.append("ofproto_v1_3_parser._MSG_PARSERS (a table of parsers by message type)")
    elif multipart is not None and not callable(parsers.get(multipart)):
        missing.append("ofproto_v1_3_parser._MSG_PARSERS[OFPT_MULTIPART_REPLY] (a parser)")
    if missing:
        raise RyuShapeError(
            "the installed Ryu is not the one ryu-ctfw was written for (Ryu 4.34); missing: "
            + ", ".join(missing)
        )


def _unchecked_multipart_types(ryus: dict) -> list[str]:
    """Multipart types Ryu parses that multipart.SHAPES does not know: they would all be
    refused as of unknown type, so a Ryu with others is not the one the checker was made for."""
    return [
        f"ofproto_v1_3_parser.OFPMultipartReply._STATS_MSG_TYPES[{t}] (a multipart type"
        " ryu_ctfw.multipart does not check)"
        for t in sorted(set(ryus) - set(multipart.SHAPES))
    ]


def install_raw_flow_stats_parser() -> None:
    """Let the sync read flow stats without Ryu decoding every entry.

    Ryu parses each flow-stats entry into an object tree (tens of microseconds apiece, most
    of a resync at scale), while the sync only compares bytes (wire.py). Ryu looks its
    parser up per message type in a table at every message, so this wraps the one for
    multipart replies: a flow-stats reply to an xid its datapath lists under RAW_XIDS gets
    wire.RawFlow entries as its body; every other message, of this app or any other, is
    parsed by Ryu as before.
    """
    parsers = ofproto_v1_3_parser._MSG_PARSERS
    ryu_parser = parsers[ofproto_v1_3.OFPT_MULTIPART_REPLY]
    if getattr(ryu_parser, "ctfw_raw", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
        try:
            return _parse(datapath, version, msg_type, msg_len, xid, bytes(buf))
        except wire.MalformedReply as e:
            # Raised out of Ryu's receive loop, it ends this connection; the switch
            # reconnects and is read back again.
            logging.getLogger("ryu_ctfw").error(
                "switch %016x sent a malformed multipart reply, closing: %s",
                getattr(datapath, "id", 0) or 0, e,
            )  # fmt: skip
            if isinstance(e, exception.OFPTruncatedMessage):
                raise
            raise ConnectionEndingReply(e) from e

    def _parse(
        datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes
    ) -> Any:
        kind = multipart.reply_type(buf)
        if kind == wire.OFPMP_FLOW and xid in getattr(datapath, RAW_XIDS, ()):
            # The sync's own flow stats never reach Ryu's parser: wire.flow_stats_entries
            # checks each entry's lengths as it cuts it (the resync's hot path).
            return _raw_flow_stats(datapath, version, msg_type, msg_len, xid, buf)
        # Every other reply, asked for or not, is checked to the depth Ryu parses it:
        # Ryu's parser loops forever on a length of 0 anywhere in it.
        multipart.check(buf)
        return ryu_parser(datapath, version, msg_type, msg_len, xid, buf)

    parse.ctfw_raw = True  # type: ignore[attr-defined]
    parsers[ofproto_v1_3.OFPT_MULTIPART_REPLY] = parse


def _raw_flow_stats(
    datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes
) -> Any:
    """A flow-stats reply with wire.RawFlow entries as its body."""
    entries = list(wire.flow_stats_entries(buf))
    msg = ofproto_v1_3_parser.OFPFlowStatsReply(datapath)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    msg.type, msg.flags = struct.unpack_from("!HH", buf, 8)
    msg.body = entries
    return msg


def install_controller2_meter_id() -> None:
    """Teach Ryu's parser controller2's meter_id property (OVS 2.16, after Ryu 4.34).

    The connection log's admitted-connection lines carry `controller(meter_id=N)`; Ryu
    4.34 fails on the property (AttributeError) wherever it parses such a flow: a flow
    read by anything other than the raw reader, an error quoting a flow-mod. The property
    class lives in a closure of Ryu's NXActionController2 parser, so it is reached there."""
    for parser in (ofproto_v1_3_parser,):
        action = parser.NXActionController2
        cells = dict(
            zip(action.parser.__func__.__code__.co_freevars, action.parser.__func__.__closure__,
                strict=True)
        )  # fmt: skip
        prop = cells["NXActionController2Prop"].cell_contents
        if METER_ID_PROP in prop._TYPES:
            continue

        class MeterId(prop):  # type: ignore[misc, valid-type]
            _arg_name = "meter_id"

            @classmethod
            def parser_prop(cls, buf: bytes, length: int) -> tuple[int, int]:
                return struct.unpack_from("!I", buf, 0)[0], 4

            @classmethod
            def serialize_prop(cls, meter_id: int) -> bytearray:
                return bytearray(struct.pack("!HHI", METER_ID_PROP, 8, meter_id))

        prop.register_type(METER_ID_PROP)(MeterId)


METER_ID_PROP = 5  # NXAC2PT_METER_ID
