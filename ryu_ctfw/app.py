"""The Ryu application: `ryu-manager ryu_ctfw.app`.

Only wiring lives here: configuration, Ryu's OpenFlow events handed to the switch side,
and the REST API mounted on Ryu's WSGI server. OpenFlow 1.3 only.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
from typing import Any

from ryu import cfg
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from ryu.ofproto import ofproto_v1_3

from ryu_ctfw import config, policy, rest, ryu_compat, store, wsgi_limits
from ryu_ctfw.firewall import Firewall
from ryu_ctfw.store import StateFileError

# Options and their checks live in config.py; registered at import, as Ryu's apps do, so
# oslo.config has them before the app's __init__ reads them.
config.register(cfg.CONF)
# Ryu listens on all interfaces by default; a firewall's API should not. --wsapi-host
# still overrides this.
cfg.CONF.set_default("wsapi_host", "127.0.0.1")


class CtfwApp(app_manager.RyuApp):
    # Ryu reads these class attributes by name.
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]  # noqa: RUF012
    # Not Ryu's WSGIApplication itself: Ryu then starts no server of its own, and start()
    # below serves the API with timeouts and a connection bound (wsgi_limits.py says why).
    _CONTEXTS = {"wsgi": wsgi_limits.LimitedWSGIApplication}  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            # First: a Ryu of another shape would otherwise fail only at the first switch,
            # inside Ryu's receive loop.
            ryu_compat.check()
            ryu_compat.install_raw_flow_stats_parser()
            ryu_compat.install_controller2_meter_id()
            settings = config.check(cfg.CONF)
            policy.set_limits(settings.max_vms, settings.max_pairs, settings.max_ips_per_vm)
            # Before Firewall touches the folder (stale temporary files, compaction): those
            # may be another running instance's, which this one must leave alone.
            self._state_lock = store.lock(settings.state_file)
            self.fw = Firewall(settings.state_file, self.logger, settings.fabric_port)
        except (ryu_compat.RyuShapeError, config.ConfigError, StateFileError) as e:
            # Starting anyway would silently open the API, lose or mix up the policy, or
            # fail at the first switch.
            self.logger.error("ryu-ctfw: %s", e)
            raise SystemExit(f"ryu-ctfw: {e}") from None
        self.logger.info("ryu-ctfw %s starting: %s", _version(), _options(settings))
        self.logger.info(
            "ryu-ctfw: %d VMs, %d pairs from %s",
            len(self.fw.policy.vms),
            len(self.fw.policy.pairs),
            settings.state_file,
        )
        self._wsgi = kwargs["wsgi"]
        rest.register(self._wsgi, self.fw, settings.api_token)
        tune_gc()

    def start(self) -> Any:
        super().start()
        self.fw.switches.start_meter_poll()
        # Returned, as Ryu's OpenFlow handler returns its server: ryu-manager then waits on
        # it, as it waited on the WSGI server it used to start itself.
        server = wsgi_limits.start(self._wsgi, self.logger)
        self.threads.append(server)
        return server

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
            self.fw.switches.disconnected(dp)

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
            ofp_event.EventOFPMeterStatsReply,
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


def _version() -> str:
    try:
        return importlib.metadata.version("ryu-ctfw")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "(not installed)"


def _options(settings: config.Settings) -> str:
    """The options in force, for the start's log line; the API token is not shown."""
    shown = {**dataclasses.asdict(settings), "api_token": "set" if settings.api_token else None}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


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
