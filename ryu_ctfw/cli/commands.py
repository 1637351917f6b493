"""What each `ctfw` command does: the API calls it makes and what it prints.

Each command is a function `(ctx, args) -> exit code` that parser.py names. Output goes
through `Context`, which prints the API's JSON as it came with `--json`, and a table or
block for a person without.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from ryu_ctfw import compiler
from ryu_ctfw.cli import render
from ryu_ctfw.cli.client import Answer, Client, CliError, Exit, Unreachable, UsageError

FOLLOW_LIMIT = 10_000  # the API's largest limit: a poll that gets this many may have missed some


@dataclass
class Context:
    client: Client
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"ctfw: {text}", file=self.err, flush=True)

    def print_json(self, body: Any) -> None:
        self.print(json.dumps(body, indent=2))

    def show(self, body: Any, human: Callable[[Any], str]) -> int:
        if self.json:
            self.print_json(body)
        else:
            self.print(readable(body, human))
        return Exit.OK

    def mutate(
        self,
        args: argparse.Namespace,
        method: str,
        path: str,
        body: Any,
        done: Callable[[Answer], str],
    ) -> int:
        """A change, or its dry run with --dry-run: the API's answer as JSON, or `done`'s
        text (for a dry run: what the real call would answer, then the plan)."""
        answer = self.client.call(method, path, body, dry_run=args.dry_run)
        if self.json:
            if answer.body is not None:
                self.print_json(answer.body)
            return Exit.OK
        if not args.dry_run:
            self.print(readable(answer, done))
            return Exit.OK
        plan = answer.body if isinstance(answer.body, dict) else {}
        would = Answer(int(plan.get("status", answer.status)), plan.get("answer"))
        self.print(f"dry run, nothing changed; the call would answer {would.status}:")
        self.print(render.indent(readable(would, done)))
        self.print(render.plan(plan))
        return Exit.OK


def readable(body: Any, human: Callable[[Any], str]) -> str:
    """`human`'s text, or the JSON itself for an answer of a shape it does not know (a newer
    or older controller): the user still sees what the API said."""
    try:
        return human(body)
    except (KeyError, AttributeError, TypeError, ValueError):
        value = body.body if isinstance(body, Answer) else body
        return json.dumps(value, indent=2)


def _name(value: str) -> str:
    return quote(value, safe="")


def _created(answer: Answer, what: str) -> str:
    return f"{what} {'created' if answer.status == 201 else 'updated'}"


# --- vms -------------------------------------------------------------------------------------
def vm_add(ctx: Context, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"port": args.port}
    if args.mac is not None:
        body["mac"] = args.mac
    if args.ip is not None:
        body["ips"] = args.ip
    if args.switch is not None:
        body["switch"] = args.switch
    return ctx.mutate(args, "PUT", f"/vms/{_name(args.name)}", body, lambda a: (
        f"{_created(a, 'vm ' + args.name)}\n{render.vm_block(a.body or {})}"))  # fmt: skip


def vm_ls(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get("/vms"), lambda b: render.vms_table(b["vms"]))


def vm_show(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get(f"/vms/{_name(args.name)}"), render.vm_block)


def vm_rm(ctx: Context, args: argparse.Namespace) -> int:
    return _remove(ctx, args, f"/vms/{_name(args.name)}", f"vm {args.name}")


def _remove(ctx: Context, args: argparse.Namespace, path: str, what: str) -> int:
    return ctx.mutate(args, "DELETE", path, None, lambda a: f"{what} removed")


# --- networks --------------------------------------------------------------------------------
def network_add(ctx: Context, args: argparse.Namespace) -> int:
    body = {"port": args.port, "cidrs": args.cidr}
    return ctx.mutate(args, "PUT", f"/networks/{_name(args.name)}", body, lambda a: (
        f"{_created(a, 'network ' + args.name)}\n"
        f"{render.networks_table([a.body] if a.body else [])}"))  # fmt: skip


def network_ls(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get("/networks"), lambda b: render.networks_table(b["networks"]))


def network_show(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.get(f"/networks/{_name(args.name)}")
    return ctx.show(body, lambda b: render.networks_table([b]))


def network_rm(ctx: Context, args: argparse.Namespace) -> int:
    return _remove(ctx, args, f"/networks/{_name(args.name)}", f"network {args.name}")


# --- groups ----------------------------------------------------------------------------------
def _put_group(ctx: Context, args: argparse.Namespace, members: list[str]) -> int:
    return ctx.mutate(args, "PUT", f"/groups/{_name(args.name)}", {"members": members},
                      lambda a: f"{_created(a, 'group ' + args.name)}\n"
                                f"{render.groups_table([a.body] if a.body else [])}")  # fmt: skip


def group_add(ctx: Context, args: argparse.Namespace) -> int:
    return _put_group(ctx, args, args.members)


def group_join(ctx: Context, args: argparse.Namespace) -> int:
    members = list(ctx.client.get(f"/groups/{_name(args.name)}")["members"])
    return _put_group(ctx, args, members + [m for m in dict.fromkeys(args.vms) if m not in members])


def group_leave(ctx: Context, args: argparse.Namespace) -> int:
    members = list(ctx.client.get(f"/groups/{_name(args.name)}")["members"])
    missing = [m for m in args.vms if m not in members]
    if missing:
        raise CliError(f"not in group {args.name!r}: {', '.join(missing)}", Exit.REFUSED)
    return _put_group(ctx, args, [m for m in members if m not in args.vms])


def group_ls(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get("/groups"), lambda b: render.groups_table(b["groups"]))


def group_show(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.get(f"/groups/{_name(args.name)}")
    return ctx.show(body, lambda b: render.groups_table([b]))


def group_rm(ctx: Context, args: argparse.Namespace) -> int:
    return _remove(ctx, args, f"/groups/{_name(args.name)}", f"group {args.name}")


# --- pairs -----------------------------------------------------------------------------------
ALL_PORTS = ("all", "any")


def pair_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"initiator": args.initiator, "responder": args.responder}
    if args.tcp is not None or args.udp is not None:
        protocol, ports = ("tcp", args.tcp) if args.tcp is not None else ("udp", args.udp)
        body["protocol"] = protocol
        if ports.lower() not in ALL_PORTS:
            body["ports"] = ports
    elif args.icmp:
        body["protocol"] = "icmp"
    elif args.any:
        body["protocol"] = "any"
    if args.log:
        body["log"] = True  # only when asked: a controller without logging knows no "log"
    return body


def pair_add(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.mutate(args, "POST", "/pairs", pair_body(args), lambda a: (
        f"pair {(a.body or {}).get('id')} added\n"
        f"{render.pairs_table([a.body] if a.body else [])}"))  # fmt: skip


def pair_ls(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get("/pairs"), lambda b: render.pairs_table(b["pairs"]))


def pair_show(ctx: Context, args: argparse.Namespace) -> int:
    return ctx.show(ctx.client.get(f"/pairs/{args.id}"), lambda b: render.pairs_table([b]))


def pair_rm(ctx: Context, args: argparse.Namespace) -> int:
    return _remove(ctx, args, f"/pairs/{args.id}", f"pair {args.id}")


# --- switches --------------------------------------------------------------------------------
def switch_ls(ctx: Context, args: argparse.Namespace) -> int:
    body = ctx.client.get("/switches")
    return ctx.show(body, lambda b: render.switches_table(b["switches"]))


def switch_show(ctx: Context, args: argparse.Namespace) -> int:
    dpid = resolve_switch(ctx.client, args.switch)
    return ctx.show(ctx.client.get(f"/switches/{dpid}"), render.switch_block)


def switch_set(ctx: Context, args: argparse.Namespace) -> int:
    dpid = resolve_switch(ctx.client, args.switch)
    body = {"fabric_port": None if args.clear else args.fabric_port}
    return ctx.mutate(args, "PUT", f"/switches/{dpid}", body,
                      lambda a: render.switch_block(a.body or {}))  # fmt: skip


DPID_RE = re.compile(r"^[0-9A-Fa-f]{16}$")


def resolve_switch(client: Client, given: str) -> str:
    """A dpid as given, or the dpid of the bridge of that name (GET /switches)."""
    if DPID_RE.match(given):
        return given.lower()
    named = [s["dpid"] for s in client.get("/switches")["switches"] if s.get("name") == given]
    if not named:
        raise CliError(f"no switch named {given!r} (give its dpid, 16 hex digits)", Exit.REFUSED)
    return str(named[0])


# --- flows -----------------------------------------------------------------------------------
def flows(ctx: Context, args: argparse.Namespace) -> int:
    # The VM first: an unknown name is refused before the (large) flow dump is read.
    keep = vm_flow_filter(ctx.client, args.vm) if args.vm else None
    dpid = resolve_switch(ctx.client, args.switch) if args.switch else None
    selected = [
        f for f in ctx.client.get("/flows")["flows"]
        if (dpid is None or f.get("dpid") == dpid) and (keep is None or keep(f))
    ]  # fmt: skip
    return ctx.show({"flows": selected}, lambda b: render.flows_table(b["flows"]))


def vm_flow_filter(client: Client, name: str) -> Callable[[dict[str, Any]], bool]:
    """The flows of a VM: those of its port (the port's cookies, or matching in_port, on
    its switch) and those of every pair it is in, itself or through a group."""
    vm = client.get(f"/vms/{_name(name)}")
    groups = {g["name"] for g in client.get("/groups")["groups"] if name in g.get("members", [])}
    sides = {name} | groups
    pair_cookies = {
        compiler.cookie(compiler.KIND_PAIR, p["id"])
        for p in client.get("/pairs")["pairs"]
        if p.get("initiator") in sides or p.get("responder") in sides
    }
    ofport, dpid = vm.get("ofport"), vm.get("dpid")
    port_cookies = (
        {compiler.cookie(compiler.KIND_VM, ofport), compiler.cookie(compiler.KIND_LEARN, ofport)}
        if ofport is not None else set()
    )  # fmt: skip

    def keep(flow: dict[str, Any]) -> bool:
        cookie = _cookie(flow.get("cookie"))
        if cookie in pair_cookies:
            return True
        if ofport is None or flow.get("dpid") != dpid:
            return False
        match = flow.get("match") or {}
        return cookie in port_cookies or match.get("in_port") == ofport

    return keep


def _cookie(text: Any) -> int | None:
    try:
        return int(str(text), 16)
    except ValueError:
        return None


# --- explain ---------------------------------------------------------------------------------
SERVICE_RE = re.compile(r"^(tcp|udp)(?:/([0-9]{1,5}))?$|^(icmp|any)$")


def service_params(text: str | None) -> dict[str, Any]:
    """tcp/5432, udp/53, tcp, icmp or any as explain's protocol and port."""
    if text is None:
        return {}
    m = SERVICE_RE.match(text.strip().lower())
    if not m:
        raise UsageError(f"invalid service {text!r}: tcp/PORT, udp/PORT, tcp, udp, icmp or any")
    if m.group(3):
        return {"protocol": m.group(3)}
    port = m.group(2)
    if port is not None and not 1 <= int(port) <= 65535:
        raise UsageError(f"invalid port {port!r} in {text!r}: 1-65535")
    return {"protocol": m.group(1), "port": int(port) if port else None}


def explain(ctx: Context, args: argparse.Namespace) -> int:
    params = {"from": args.source, "to": args.destination, **service_params(args.service)}
    answer = ctx.client.get("/explain", params)
    ctx.show(answer, render.explanation)
    return Exit.OK if answer.get("verdict") == "allowed" else Exit.DENIED


# --- events ----------------------------------------------------------------------------------
AGO_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """--since: an age (300, 90s, 5m, 2h, 1d: that long ago), @EPOCH (seconds since the
    epoch), or an ISO 8601 time (2026-12-02T03:00:00Z; without a zone: local time)."""
    now = time.time() if now is None else now
    text = text.strip()
    m = AGO_RE.match(text)
    if m:
        return max(0.0, now - float(m.group(1)) * UNITS[m.group(2)])
    if text.startswith("@"):
        try:
            value = float(text[1:])
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    else:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise UsageError(
        f"invalid --since {text!r}: an age (300, 5m, 2h, 1d), @EPOCH_SECONDS or an ISO time"
        " (2026-12-02T03:00:00Z)"
    )


def event_params(args: argparse.Namespace) -> dict[str, Any]:
    verdict = "denied" if args.denied else "allowed" if args.allowed else None
    since = parse_since(args.since) if args.since is not None else None
    return {"verdict": verdict, "vm": args.vm, "since": since, "limit": args.limit}


def events(ctx: Context, args: argparse.Namespace) -> int:
    params = event_params(args)
    first = ctx.client.get("/events", params)
    if not args.follow:
        return ctx.show(first, lambda b: render.events_table(b["events"]))
    return follow(ctx, params, first["events"], args.interval)


def follow(
    ctx: Context, params: dict[str, Any], seen: list[dict[str, Any]], interval: float
) -> int:
    """Print events as they come until Ctrl-C (exit 0); with --json, one event object per
    line. A controller that stops answering is waited for (see Follower)."""
    if not ctx.json:
        ctx.print(render.event_line(render.EVENT_HEADERS))
    follower = Follower(ctx, params)
    try:
        while True:
            follower.show(seen)
            ctx.sleep(interval)
            seen = follower.poll()
    except KeyboardInterrupt:
        return Exit.OK


@dataclass
class Follower:
    """Where a followed log is: polls ask for the events after the last id printed.

    The controller keeps its events in memory, so after a restart its ids start again at
    1 and `after=` would skip them. So every poll also reads the newest event of any kind:
    when it is later than the last one printed but has no larger id, or its id went down,
    the log started again.
    Then, and whenever the controller answers again after being away, one poll asks by
    time instead (since the last event printed, leaving out those already printed)."""

    ctx: Context
    params: dict[str, Any]
    last_id: int = 0
    last_time: float | None = None
    ids_at_last_time: set[int] = field(default_factory=set)  # printed, with time == last_time
    newest: tuple[int, float] | None = None  # the log's newest event (any kind) when last read
    away: bool = False

    def show(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.ctx.print(json.dumps(event) if self.ctx.json else
                           render.event_line(render.event_cells(event)))  # fmt: skip
            ident, when = _ident(event), _time(event)
            self.last_id = max(self.last_id, ident)
            if self.last_time is None or when > self.last_time:
                self.last_time, self.ids_at_last_time = when, set()
            self.ids_at_last_time.add(ident)

    def poll(self) -> list[dict[str, Any]]:
        try:
            events = self._catch_up(False) if self.away else self._after()
            if self.away:
                self.ctx.warn("the controller answers again")
                self.away = False
            if self._restarted():
                self.ctx.warn("the controller's event log started again (a restart); following it")
                events = self._catch_up(True)
            return events
        except Unreachable as e:
            if not self.away:
                self.ctx.warn(f"{e}; still trying")
            self.away = True
            return []

    def _after(self) -> list[dict[str, Any]]:
        query = {**self.params, "after": self.last_id, "limit": FOLLOW_LIMIT}
        events = self.ctx.client.get("/events", query)["events"]
        if len(events) >= FOLLOW_LIMIT:
            self.ctx.warn(f"{FOLLOW_LIMIT} events or more since the last poll: some were missed")
        return events

    def _restarted(self) -> bool:
        found = self.ctx.client.get("/events", {"limit": 1})["events"]
        if not found:
            return False
        before, self.newest = self.newest, (_ident(found[-1]), _time(found[-1]))
        ident, when = self.newest
        # In one log, ids and times rise together: an event later than the last printed
        # with no larger id, or a newest event older than the one read before, is another
        # log's.
        if self.last_time is not None and when > self.last_time and ident <= self.last_id:
            return True
        return before is not None and (
            ident < before[0] or (ident == before[0] and when != before[1])
        )

    def _catch_up(self, restarted: bool) -> list[dict[str, Any]]:
        """The events since the last one printed, by time (the ids may have started again)."""
        if self.last_time is None:  # nothing printed yet: every event the log has is new
            if restarted:
                self.last_id = 0
            return self._after()
        since = max(self.last_time, float(self.params.get("since") or 0))
        query = {**self.params, "since": since, "limit": FOLLOW_LIMIT}
        fresh = [e for e in self.ctx.client.get("/events", query)["events"] if not self._printed(e)]
        if fresh:
            self.last_id = max(_ident(e) for e in fresh)
        elif restarted:
            self.last_id = 0
        return fresh

    def _printed(self, event: dict[str, Any]) -> bool:
        assert self.last_time is not None
        when = _time(event)
        return when < self.last_time or (
            when == self.last_time and _ident(event) in self.ids_at_last_time
        )


def _ident(event: dict[str, Any]) -> int:
    return int(event.get("id") or 0)


def _time(event: dict[str, Any]) -> float:
    return float(event.get("time") or 0)


# --- the policy as a file --------------------------------------------------------------------
def policy_export(ctx: Context, args: argparse.Namespace) -> int:
    doc = ctx.client.get("/policy")
    text = json.dumps(doc, indent=2) + "\n"
    if args.file in (None, "-"):
        ctx.out.write(text)
        ctx.out.flush()
        return Exit.OK
    write_atomically(Path(args.file), text)
    if not ctx.json:
        counts = ", ".join(f"{len(v)} {k}" for k, v in doc.items() if isinstance(v, list))
        ctx.print(f"policy written to {args.file} ({counts})")
    return Exit.OK


def write_atomically(path: Path, text: str) -> None:
    """The whole new file or the old one, never half of it (it may live in git)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e}") from None


def read_document(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {name}: {e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError(f"{name} is not valid JSON: {e}") from None


def policy_apply(ctx: Context, args: argparse.Namespace) -> int:
    doc = read_document(args.file)
    return ctx.mutate(args, "PUT", "/policy", doc,
                      lambda a: render.difference(a.body))  # fmt: skip
