"""The Ryu application: `ryu-manager ryu_ctfw.app`.

Only wiring lives here: configuration, Ryu's OpenFlow events handed to the switch side,
and the REST API mounted on Ryu's WSGI server. OpenFlow 1.3 only.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from ryu.ofproto import ofproto_v1_3

from ryu_ctfw import rest
from ryu_ctfw.firewall import Firewall
from ryu_ctfw.store import StateFileError

DEFAULT_STATE_FILE = "/var/lib/ryu-ctfw/state.json"

# ryu-manager parses its command line before loading apps, so an app cannot add flags;
# like Ryu's own apps, ours read a [ctfw] section of the file given with --config-file.
cfg.CONF.register_opts(
    [
        cfg.StrOpt(
            "state_file",
            default=DEFAULT_STATE_FILE,
            help="where VMs and pairs are stored (JSON, replaced atomically)",
        ),
        cfg.StrOpt(
            "api_token",
            default=None,
            secret=True,
            help="when set, PUT/POST/DELETE need 'Authorization: Bearer <api_token>'",
        ),
    ],
    group="ctfw",
)
# Ryu listens on all interfaces by default; a firewall's API should not. --wsapi-host
# still overrides this.
cfg.CONF.set_default("wsapi_host", "127.0.0.1")


class CtfwApp(app_manager.RyuApp):
    # Ryu reads these class attributes by name.
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]  # noqa: RUF012
    _CONTEXTS = {"wsgi": WSGIApplication}  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state_file = Path(cfg.CONF.ctfw.state_file)
        try:
            self.fw = Firewall(state_file, self.logger)
        except StateFileError as e:
            # Starting with an empty policy would silently open or close every pair.
            self.logger.error("%s", e)
            raise SystemExit(f"ryu-ctfw: {e}") from None
        self.logger.info(
            "ryu-ctfw: %d VMs, %d pairs from %s",
            len(self.fw.policy.vms),
            len(self.fw.policy.pairs),
            state_file,
        )
        rest.register(kwargs["wsgi"], self.fw, cfg.CONF.ctfw.api_token)
        tune_gc()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.logger.info("switch %016x says hello (OpenFlow 0x%02x)", dp.id, dp.ofproto.OFP_VERSION)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            # Ryu moves here once it has the switch's port list (dp.ports).
            self.fw.switches.connected(dp)
        elif dp.id is not None:
            self.fw.switches.disconnected(dp.id)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        self.fw.switches.port_status(msg.datapath, msg.reason, msg.desc)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev: Any) -> None:
        self.fw.switches.packet_in(ev.msg.datapath, ev.msg)

    @set_ev_cls(
        [
            ofp_event.EventOFPFlowStatsReply,
            ofp_event.EventOFPBarrierReply,
            ofp_event.EventONFBundleCtrlMsg,
        ],
        MAIN_DISPATCHER,
    )
    def _reply(self, ev: Any) -> None:
        self.fw.switches.reply(ev.msg.datapath, ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev: Any) -> None:
        self.fw.switches.error(ev.msg.datapath, ev.msg)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a process holding a big policy.

    A switch's flows are tens of thousands of small immutable objects without cycles, and
    every full collection walks all of them: with CPython's default thresholds a bring-up
    of 50,000 flows spends a third of its time collecting (bench/results.md). Objects
    alive at start (Ryu, the loaded policy) are frozen out of collection, and a young
    generation of 50,000 objects makes collections rare. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
