"""What talks to one datapath: requests by xid and their replies, errors, bundles, meters.

Every function here works on one Switch's connection (`sw.dp`) and the bookkeeping kept
with it (`sw.pending`, `sw.errors`, `sw.meters`, `sw.bundle_id`); switch.py decides what
to send and when. A request waits for its answer with a timeout on silence, so nothing
here waits forever on a switch that stopped talking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ryu.lib import hub

from ryu_ctfw import wire
from ryu_ctfw.compiler import COOKIE_MASK, COOKIE_TAG
from ryu_ctfw.ryu_compat import RAW_XIDS

if TYPE_CHECKING:
    from ryu_ctfw.switch import Switch

# The longest silence a request waits through; read at each call, so tests can shorten it.
REPLY_TIMEOUT = 5.0
# How long a new connection's read-back waits for the replaced one's barrier: short, since
# the usual replaced connection is one that died unnoticed and will never answer.
FENCE_TIMEOUT = 1.0
SEND_CHUNK = 1 << 16  # bytes of bundled flow-mods handed to Ryu's send queue at once
# A learning port's packet-ins, limited in the switch (meter id = the port's ofport): a port
# that floods ARPs costs the controller at most this many packets a second.
LEARN_RATE = 20
LEARN_BURST = 20


def dpid_str(dpid: int) -> str:
    return f"{dpid:016x}"


class SwitchError(Exception):
    """The switch did not confirm a request: no answer in time, or the connection went."""


class SwitchRefused(SwitchError):
    """The switch answered a request with an error: it did not do it."""


@dataclass
class Pending:
    """Replies collected for one request (by xid)."""

    done: hub.Event = field(default_factory=hub.Event)
    replies: list[Any] = field(default_factory=list)
    error: Any = None


@dataclass
class Asked:
    """A request on its way: the datapath it went to, its xid, its replies."""

    dp: Any
    xid: int
    pending: Pending


# --- replies and errors, as Ryu hands them over --------------------------------------------
def deliver_reply(sw: Switch, dp: Any, msg: Any) -> None:
    """A multipart, barrier or bundle reply: hand it to whoever waits for that xid
    (only from the connection in use: xids are per connection), or a fence's barrier."""
    if sw.dp is not dp:
        fenced = sw.fences.get((id(dp), msg.xid))
        if fenced is not None:
            fenced.done.set()
        return
    pending = sw.pending.get(msg.xid)
    if pending is None:
        return
    pending.replies.append(msg)
    multipart = isinstance(msg, dp.ofproto_parser.OFPMultipartReply)
    if not (multipart and msg.flags & dp.ofproto.OFPMPF_REPLY_MORE):
        pending.done.set()


def deliver_error(sw: Switch, xid: int, text: str) -> None:
    """An error from the connection in use: it fails the request it answers, and is kept
    by xid for a sync to name what a bundle or meter-mod refused."""
    pending = sw.pending.get(xid)
    if pending is not None:
        pending.error = text
        pending.done.set()
    sw.errors[xid] = text


def fail_pending(sw: Switch, why: str | None) -> None:
    """Wake everyone waiting on the switch (the connection changed or went); `why`, when
    given, is the error they see unless they already have one."""
    for pending in sw.pending.values():
        if why is not None:
            pending.error = pending.error or why
        pending.done.set()


# --- requests ---------------------------------------------------------------------------------
def send(dp: Any, msg: Any) -> int:
    """Send a message no one waits for; its xid, to match an error to it."""
    dp.set_xid(msg)
    dp.send_msg(msg)
    return msg.xid


def request(sw: Switch, msg: Any, timeout: float | None = None, raw: bool = False) -> list[Any]:
    """Send `msg`, wait for its whole answer; `timeout` is the longest silence allowed
    (a long multipart answer may take longer as a whole, as long as parts keep coming).
    `raw`: a flow-stats request whose entries come back as wire.RawFlow."""
    return answer(sw, ask(sw, msg, raw), timeout)


def ask(sw: Switch, msg: Any, raw: bool = False) -> Asked:
    """Send a request; `answer` collects its answer (work may go on in between)."""
    dp = sw.dp
    if dp is None:
        raise SwitchError("switch disconnected")
    dp.set_xid(msg)
    asked = Asked(dp, msg.xid, Pending())
    sw.pending[msg.xid] = asked.pending
    if raw:
        dp.__dict__.setdefault(RAW_XIDS, set()).add(msg.xid)
    dp.send_msg(msg)
    return asked


def answer(sw: Switch, asked: Asked, timeout: float | None = None) -> list[Any]:
    """The replies to an asked request; SwitchRefused if the switch answered with an error,
    SwitchError if it fell silent for `timeout` or the connection changed meanwhile."""
    timeout = REPLY_TIMEOUT if timeout is None else timeout
    pending = asked.pending
    try:
        seen = -1
        while not pending.done.wait(timeout=timeout):
            if len(pending.replies) == seen:
                raise SwitchError("switch did not answer in time")
            seen = len(pending.replies)
        if pending.error:
            raise SwitchRefused(pending.error)
        if sw.dp is not asked.dp:
            raise SwitchError("switch disconnected")
        return pending.replies
    finally:
        sw.pending.pop(asked.xid, None)
        asked.dp.__dict__.get(RAW_XIDS, set()).discard(asked.xid)


def fence(sw: Switch, old: Any, timeout: float | None = None) -> bool:
    """Send a barrier on `old`, an open connection of the switch no longer in use, and wait
    for its reply: then the switch has handled everything sent on `old` before. False if
    it did not answer within `timeout` (the connection closing ends the wait at once)."""
    msg = old.ofproto_parser.OFPBarrierRequest(old)
    old.set_xid(msg)
    key = (id(old), msg.xid)
    sw.fences[key] = waiting = Pending()
    try:
        old.send_msg(msg)
        return bool(waiting.done.wait(timeout=FENCE_TIMEOUT if timeout is None else timeout))
    finally:
        sw.fences.pop(key, None)


def end_fences(sw: Switch, closed: Any) -> None:
    """`closed` went away: a fence waiting on it is over."""
    for (dp_id, _xid), waiting in sw.fences.items():
        if dp_id == id(closed):
            waiting.done.set()


def our_flows(dp: Any) -> Any:
    """A flow-stats request for every flow carrying our cookie tag, in all tables."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(
        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, COOKIE_TAG, COOKIE_MASK,
        parser.OFPMatch(),
    )  # fmt: skip


# --- bundles and meters -------------------------------------------------------------------
def bundle(sw: Switch, msgs: list[bytes]) -> list[int]:
    """Send flow-mods (wire.py bytes) as one atomic ONF bundle; wait for the commit.

    The switch applies all of them or none; the commit reply is the confirmation (it
    comes after the bundle took effect, so no barrier is needed). Returns the xids of
    the messages; raises SwitchError(reason, xids) if the switch refused.
    """
    dp = sw.dp
    ofp, parser = dp.ofproto, dp.ofproto_parser
    sw.bundle_id = (sw.bundle_id + 1) & 0xFFFFFFFF
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    send(dp, parser.ONFBundleCtrlMsg(dp, sw.bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, []))
    xids = take_xids(dp, len(msgs))
    chunk: list[bytes] = []
    size = 0
    for xid, msg in zip(xids, msgs, strict=True):
        add = wire.bundle_add(sw.bundle_id, flags, msg, xid)
        chunk.append(add)
        size += len(add)
        if size >= SEND_CHUNK:
            dp.send(b"".join(chunk))
            chunk, size = [], 0
            hub.sleep(0)  # Ryu's send loop writes this chunk while we pack the next
    if chunk:
        dp.send(b"".join(chunk))
    commit = parser.ONFBundleCtrlMsg(dp, sw.bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
    try:
        # Committing tens of thousands of flows takes the switch a while.
        request(sw, commit, timeout=REPLY_TIMEOUT + len(msgs) / 2000)
    except SwitchError as e:
        raise type(e)(str(e), xids) from e
    return xids


def ensure_meters(sw: Switch, meter_ids: set[int]) -> None:
    """Create the meters that flows about to be added use (a flow naming a missing meter
    is refused): every VM port has one (the connection log). Meter-mods cannot go in a
    bundle, so they go first, all at once with one barrier; a meter left by an earlier run
    is then set to our rate instead. Never deleted: deleting a meter deletes the flows that
    use it."""
    dp = sw.dp
    ofp, parser = dp.ofproto, dp.ofproto_parser
    bands = [parser.OFPMeterBandDrop(rate=LEARN_RATE, burst_size=LEARN_BURST)]
    flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    todo = sorted(meter_ids - sw.meters)
    for command in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY):
        if not todo:
            break
        xids = {send(dp, parser.OFPMeterMod(dp, command, flags, m, bands)): m for m in todo}
        request(sw, parser.OFPBarrierRequest(dp))
        errors = {m: sw.errors.pop(xid) for xid, m in xids.items() if xid in sw.errors}
        sw.meters.update(m for m in todo if m not in errors)
        for meter_id, error in errors.items():
            if command == ofp.OFPMC_MODIFY or "METER_EXISTS" not in error:
                raise SwitchRefused(f"meter {meter_id}: {error}")
        todo = sorted(errors)  # they exist: set them to our rate


def take_xids(dp: Any, count: int) -> list[int]:
    """`count` consecutive xids from the datapath's counter (what set_xid does one by one)."""
    first = dp.xid + 1
    dp.xid = (dp.xid + count) & dp.ofproto.MAX_XID
    return [(first + i) & dp.ofproto.MAX_XID for i in range(count)]


def error_text(dp: Any, msg: Any) -> str:
    """An error message as names (OFPET_... OFPxxC_...), for logs and API answers."""
    ofp = dp.ofproto
    if getattr(msg, "exp_type", None) is not None:  # an extension's error (bundles are ONF's)
        return f"experimenter 0x{msg.experimenter:x} error {msg.exp_type}"
    types = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
    type_name = types.get(msg.type, str(msg.type))
    prefix = {
        "OFPET_BAD_REQUEST": "OFPBRC_",
        "OFPET_BAD_ACTION": "OFPBAC_",
        "OFPET_BAD_INSTRUCTION": "OFPBIC_",
        "OFPET_BAD_MATCH": "OFPBMC_",
        "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
        "OFPET_METER_MOD_FAILED": "OFPMMFC_",
    }.get(type_name)
    code_name = str(msg.code)
    if prefix:
        codes = {v: k for k, v in vars(ofp).items() if k.startswith(prefix) and isinstance(v, int)}
        code_name = codes.get(msg.code, code_name)
    return f"{type_name} {code_name}"
