"""`ctfw`'s command line: global options, the commands and their help (exit codes too)."""

from __future__ import annotations

import argparse
import os
import textwrap

from ryu_ctfw.cli import commands as cmd
from ryu_ctfw.cli.client import DEFAULT_TIMEOUT, DEFAULT_URL, EXIT_CODES

DESCRIPTION = "ctfw: the command line of ryu-ctfw, the conntrack firewall for Open vSwitch."
EPILOG = (
    "global options go before the command: ctfw --json pair ls.\n"
    "environment: CTFW_URL (default for --url), CTFW_TOKEN (for --token; better than\n"
    "  --token, which other users can see in ps).\n"
    "every command that changes something takes --dry-run: the controller answers what it\n"
    "  would do (flows to add and delete per switch, pairs whose connections are cut) and\n"
    "  changes nothing.\n\n"
    "exit codes:\n"
    + "\n".join(
        textwrap.fill(text, 79, initial_indent=f"  {int(code):<4}", subsequent_indent=" " * 6)
        for code, text in EXIT_CODES
    )
    + "\n\nexamples:\n"
    "  ctfw vm add vm1 --port tap2 --mac 52:54:00:60:84:ff --ip 198.18.0.1 2001:db8::1\n"
    "  ctfw pair add vm1 vm2 --tcp 22\n"
    "  ctfw explain vm1 vm2 tcp/5432\n"
    "  ctfw events --follow --denied\n"
    "  ctfw policy export policy.json && ctfw policy apply policy.json --dry-run\n"
)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: a whole number, 1 or more")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: a number above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctfw", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--url",
        default=os.environ.get("CTFW_URL") or DEFAULT_URL,
        help="the controller's REST API (env CTFW_URL; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CTFW_TOKEN"),
        help="api_token, sent as 'Authorization: Bearer' (env CTFW_TOKEN)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the API's JSON on standard output instead of tables",
    )
    parser.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for an answer (default %(default)g)")  # fmt: skip
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _vm(top)
    _network(top)
    _group(top)
    _pair(top)
    _switch(top)
    _flows(top)
    _explain(top)
    _events(top)
    _policy(top)
    return parser


def _nouns(top: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    p = top.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest="action", metavar="ACTION", required=True)


def _command(
    sub: argparse._SubParsersAction, name: str, func: object, help: str, mutating: bool = False
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    if mutating:
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="show what it would do (flows, connections cut); change nothing",
        )
    else:
        p.set_defaults(dry_run=False)
    return p


def _vm(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "vm", "VMs: a name for a bridge port, with the MAC and IPs it may use")
    p = _command(sub, "add", cmd.vm_add, "add a VM, or replace the VM of that name", True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--port", required=True, help="its NIC's port on the bridge (tap2)")
    p.add_argument("--mac", help="the MAC it may send from (else learned from its traffic)")
    p.add_argument(
        "--ip",
        nargs="+",
        action="extend",
        metavar="IP",
        help="IPv4/IPv6 addresses it may send from (repeatable)",
    )
    p.add_argument("--switch", help="its bridge, by name or dpid (several hypervisors)")
    _command(sub, "ls", cmd.vm_ls, "list VMs and where they are")
    _command(sub, "show", cmd.vm_show, "show one VM").add_argument("name", metavar="NAME")
    _command(sub, "rm", cmd.vm_rm, "remove a VM (no pair or group may use it)",
             True).add_argument("name", metavar="NAME")  # fmt: skip


def _network(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "network", "networks: addresses reached through a port no VM has")
    p = _command(sub, "add", cmd.network_add, "add a network, or replace the one of that name",
                 True)  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("--port", required=True, help="the uplink port on the bridge")
    p.add_argument(
        "--cidr",
        required=True,
        nargs="+",
        action="extend",
        metavar="CIDR",
        help="its networks, like 198.19.0.0/24 2001:db8:19::/48 (repeatable)",
    )
    _command(sub, "ls", cmd.network_ls, "list networks")
    _command(sub, "show", cmd.network_show, "show one network").add_argument("name", metavar="NAME")
    _command(sub, "rm", cmd.network_rm, "remove a network", True).add_argument(
        "name", metavar="NAME"
    )


def _group(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "group", "groups of VMs, to pair many at once")
    p = _command(
        sub,
        "add",
        cmd.group_add,
        "add a group, or set an existing group's members to exactly these",
        True,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("members", nargs="*", metavar="MEMBER", help="VM names")
    for name, func, text in (
        ("join", cmd.group_join, "add VMs to a group"),
        ("leave", cmd.group_leave, "take VMs out of a group"),
    ):
        p = _command(sub, name, func, text, True)
        p.add_argument("name", metavar="NAME")
        p.add_argument("vms", nargs="+", metavar="VM")
    _command(sub, "ls", cmd.group_ls, "list groups")
    _command(sub, "show", cmd.group_show, "show one group").add_argument("name", metavar="NAME")
    _command(sub, "rm", cmd.group_rm, "remove a group (no pair may use it)",
             True).add_argument("name", metavar="NAME")  # fmt: skip


def _pair(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "pair", "pairs: who may open connections to whom, for which service")
    p = _command(sub, "add", cmd.pair_add,
                 "let INITIATOR open connections to RESPONDER (VMs, groups or networks);"
                 " replies come back", True)  # fmt: skip
    p.add_argument("initiator", metavar="INITIATOR", help="a VM, group or network")
    p.add_argument("responder", metavar="RESPONDER", help="a VM, group or network")
    service = p.add_mutually_exclusive_group()
    service.add_argument("--tcp", metavar="PORTS", help='tcp to a port or range: 22, 8000-8100,'
                         ' or "all"')  # fmt: skip
    service.add_argument("--udp", metavar="PORTS", help="udp likewise")
    service.add_argument("--icmp", action="store_true", help="ping (echo), IPv4 and IPv6")
    service.add_argument("--any", action="store_true", help="every protocol (the default)")
    p.add_argument("--log", action="store_true", help="log its admitted connections as events")
    _command(sub, "ls", cmd.pair_ls, "list pairs")
    _command(sub, "show", cmd.pair_show, "show one pair").add_argument(
        "id", metavar="ID", type=positive_int
    )
    _command(sub, "rm", cmd.pair_rm, "remove a pair: its connections are cut",
             True).add_argument("id", metavar="ID", type=positive_int)  # fmt: skip


def _switch(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "switch", "the bridges (switches) the controller knows")
    _command(sub, "ls", cmd.switch_ls, "list switches")
    _command(sub, "show", cmd.switch_show, "show one switch and its ports").add_argument(
        "switch", metavar="DPID", help="its dpid (16 hex digits) or bridge name"
    )
    p = _command(sub, "set", cmd.switch_set, "set a switch's fabric port", True)
    p.add_argument("switch", metavar="DPID", help="its dpid (16 hex digits) or bridge name")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--fabric-port", metavar="PORT", help="the port that leads to the other hosts"
    )
    what.add_argument(
        "--clear", action="store_true", help="clear the setting ([ctfw] fabric_port applies again)"
    )


def _flows(top: argparse._SubParsersAction) -> None:
    p = _command(top, "flows", cmd.flows, "the app's flows on the switches, with counters")
    p.add_argument("--vm", metavar="NAME", help="only the flows of this VM's port and its pairs")
    p.add_argument("--switch", metavar="DPID", help="only this switch's (dpid or bridge name)")


def _explain(top: argparse._SubParsersAction) -> None:
    p = _command(
        top,
        "explain",
        cmd.explain,
        "why a connection is allowed or denied (exit 0 allowed, 4 denied)",
    )
    p.add_argument("source", metavar="FROM", help="a VM, group, network or address")
    p.add_argument("destination", metavar="TO", help="a VM, group, network or address")
    p.add_argument(
        "service", metavar="SERVICE", nargs="?", help="tcp/5432, udp/53, tcp, udp, icmp or any"
    )


def _events(top: argparse._SubParsersAction) -> None:
    p = _command(
        top,
        "events",
        cmd.events,
        "the connection log: denied attempts, and logged pairs' connections",
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events until Ctrl-C (with --json: one per line)",
    )
    verdict = p.add_mutually_exclusive_group()
    verdict.add_argument("--denied", action="store_true", help="only denied attempts")
    verdict.add_argument("--allowed", action="store_true", help="only admitted connections")
    p.add_argument("--vm", metavar="NAME", help="only events from or for this VM")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="an age (300, 5m, 2h, 1d), @EPOCH_SECONDS or an ISO 8601 time",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="at most the latest N (the API's default 100)",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often --follow asks (default %(default)g)",
    )


def _policy(top: argparse._SubParsersAction) -> None:
    sub = _nouns(top, "policy", "the whole policy as one JSON document (keep it in git)")
    p = _command(sub, "export", cmd.policy_export, "write the policy as JSON")
    p.add_argument("file", nargs="?", metavar="FILE", help="where to (default: standard output)")
    p = _command(
        sub,
        "apply",
        cmd.policy_apply,
        "replace the whole policy by FILE's (- for standard input)",
        True,
    )
    p.add_argument("file", metavar="FILE")
