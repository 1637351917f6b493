"""ryu_compat.check(): the installed Ryu has what ryu-ctfw uses, or the start names what
is missing (the app turns it into `ryu-ctfw: ...` and exits, as for config errors)."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_ctfw import app, ryu_compat, wire


def parser_without(*names: str, **replaced: Any) -> SimpleNamespace:
    """A copy of Ryu's OpenFlow 1.3 parser module lacking `names`."""
    attrs = {n: getattr(parser, n) for n in ryu_compat.PARSER_CLASSES}
    attrs["_MSG_PARSERS"] = dict(parser._MSG_PARSERS)
    attrs.update(replaced)
    for name in names:
        attrs.pop(name)
    return SimpleNamespace(**attrs)


def test_the_installed_ryu_has_the_expected_shape() -> None:
    ryu_compat.check()
    ryu_compat.install_raw_flow_stats_parser()
    ryu_compat.check()  # still, with the hook installed


@pytest.mark.parametrize(
    ("module", "missing"),
    [
        (parser_without("ONFBundleCtrlMsg"), "ofproto_v1_3_parser.ONFBundleCtrlMsg"),
        (parser_without("_MSG_PARSERS"), "ofproto_v1_3_parser._MSG_PARSERS"),
        (parser_without(_MSG_PARSERS={}), "_MSG_PARSERS[OFPT_MULTIPART_REPLY]"),
        (
            parser_without(_MSG_PARSERS={ofp.OFPT_MULTIPART_REPLY: "not a parser"}),
            "_MSG_PARSERS[OFPT_MULTIPART_REPLY]",
        ),
        (
            parser_without(OFPFlowStatsReply=type("OFPFlowStatsReply", (), {})),
            "OFPFlowStatsReply.set_headers",
        ),
    ],
    ids=["bundle-class", "parser-table", "no-multipart-parser", "not-callable", "reply-shape"],
)
def test_a_ryu_of_another_shape_is_named_at_start(module: Any, missing: str) -> None:
    with pytest.raises(ryu_compat.RyuShapeError, match=r"Ryu 4\.34") as e:
        ryu_compat.check(parser=module)
    assert missing in str(e.value)


def test_every_missing_name_is_listed_at_once() -> None:
    ofproto = SimpleNamespace(**{n: getattr(ofp, n) for n in ryu_compat.OFPROTO_NAMES})
    del ofproto.ONF_BF_ATOMIC
    with pytest.raises(ryu_compat.RyuShapeError) as e:
        ryu_compat.check(ofproto, parser_without("OFPMeterMod", "OFPSetConfig"))
    text = str(e.value)
    for name in ("ONF_BF_ATOMIC", "OFPMeterMod", "OFPSetConfig"):
        assert name in text


def test_the_app_stops_with_the_message_like_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise ryu_compat.RyuShapeError("missing: ofproto_v1_3_parser.ONFBundleCtrlMsg")

    monkeypatch.setattr(ryu_compat, "check", broken)
    with pytest.raises(SystemExit, match=r"^ryu-ctfw: missing: .*ONFBundleCtrlMsg"):
        app.CtfwApp(wsgi=None)


def _multipart(kind: int, body: bytes, xid: int = 9) -> bytes:
    payload = struct.pack("!HH4x", kind, 0) + body
    return struct.pack("!BBHI", 4, 19, 8 + len(payload), xid) + payload


def _parse(buf: bytes) -> object:
    ryu_compat.install_raw_flow_stats_parser()
    dp = SimpleNamespace(id=1)
    return parser._MSG_PARSERS[19](dp, 4, 19, len(buf), 9, buf)


def test_a_multipart_reply_of_unknown_type_is_malformed_not_a_typeerror() -> None:
    with pytest.raises(wire.MalformedReply, match="unknown type 30583"):
        _parse(_multipart(0x7777, b""))


def test_any_flow_stats_reply_with_a_zero_length_entry_is_malformed() -> None:
    # Not only the sync's own (raw) replies: Ryu's parser would loop forever on it.
    entry = bytearray(wire._STATS_ENTRY.size + 8)
    struct.pack_into("!HH", entry, wire._STATS_ENTRY.size, 1, 4)
    with pytest.raises(wire.MalformedReply):
        _parse(_multipart(wire.OFPMP_FLOW, bytes(entry)))


def test_other_multipart_replies_are_still_ryus() -> None:
    msg = _parse(_multipart(13, b""))  # an empty port description
    assert isinstance(msg, parser.OFPPortDescStatsReply)
