"""How `ctfw` shows the API's objects to a person: aligned tables, key/value blocks, the
dry-run plan, and an outline for answers of no fixed shape. `--json` bypasses all of it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

NONE = "-"


def cell(value: Any) -> str:
    """One value as a table cell: null is '-', a list is comma-joined, a bool yes/no."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) if value else NONE
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> str:
    """Columns padded to their widest cell (the last one is not padded); `right` names the
    columns aligned right (counts)."""
    lines = [list(headers)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    right_cols = {headers.index(h) for h in right}
    out = []
    for line in lines:
        cells = [
            c.rjust(w) if i in right_cols else (c if i == len(line) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def block(pairs: Iterable[tuple[str, Any]]) -> str:
    """'key:  value' lines, the values aligned."""
    items = [(k, cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in items)


# --- the objects -----------------------------------------------------------------------------
def service(pair: dict[str, Any]) -> str:
    """A pair's service as the CLI writes it: any, icmp, tcp, tcp/22, udp/8000-8100."""
    protocol = pair.get("protocol") or "any"
    ports = pair.get("ports")
    return f"{protocol}/{ports}" if ports else protocol


def vm_mac(vm: dict[str, Any]) -> str:
    if vm.get("mac"):
        return str(vm["mac"])
    learned = vm.get("learned_mac")
    return f"{learned} (learned)" if learned else NONE


def vm_where(vm: dict[str, Any]) -> str:
    if vm.get("ambiguous"):
        return "ambiguous"
    if vm.get("ofport") is None:
        return "absent"
    return f"{vm.get('dpid')}:{vm.get('ofport')}"


def vms_table(vms: list[dict[str, Any]]) -> str:
    rows = [
        (v.get("name"), v.get("id"), v.get("port"), vm_mac(v), v.get("ips"), v.get("switch"),
         vm_where(v))
        for v in vms
    ]  # fmt: skip
    return table(("NAME", "ID", "PORT", "MAC", "IPS", "SWITCH", "AT (DPID:OFPORT)"), rows,
                 right=("ID",))  # fmt: skip


def vm_block(vm: dict[str, Any]) -> str:
    return block([
        ("name", vm.get("name")), ("id", vm.get("id")), ("port", vm.get("port")),
        ("mac", vm_mac(vm)), ("ips", vm.get("ips")), ("switch", vm.get("switch")),
        ("dpid", vm.get("dpid")), ("ofport", vm.get("ofport")),
        ("ambiguous", vm.get("ambiguous")),
    ])  # fmt: skip


def networks_table(nets: list[dict[str, Any]]) -> str:
    rows = [(n.get("name"), n.get("id"), n.get("port"), n.get("cidrs"), _at(n)) for n in nets]
    return table(("NAME", "ID", "PORT", "CIDRS", "AT (DPID:OFPORT)"), rows, right=("ID",))


def _at(obj: dict[str, Any]) -> str:
    return "absent" if obj.get("ofport") is None else f"{obj.get('dpid')}:{obj.get('ofport')}"


def groups_table(groups: list[dict[str, Any]]) -> str:
    rows = [(g.get("name"), g.get("id"), g.get("members")) for g in groups]
    return table(("NAME", "ID", "MEMBERS"), rows, right=("ID",))


def pair_label(pair: dict[str, Any]) -> str:
    return f"{pair.get('initiator')} -> {pair.get('responder')} {service(pair)}"


def pairs_table(pairs: list[dict[str, Any]]) -> str:
    rows = [
        (p.get("id"), _side(p, "initiator"), _side(p, "responder"), service(p), p.get("log"))
        for p in pairs
    ]
    return table(("ID", "INITIATOR", "RESPONDER", "SERVICE", "LOG"), rows, right=("ID",))


def _side(pair: dict[str, Any], side: str) -> str:
    kind = pair.get(f"{side}_kind")
    name = str(pair.get(side))
    return name if kind in (None, "vm") else f"{name} ({kind})"


def switches_table(switches: list[dict[str, Any]]) -> str:
    rows = [
        (s.get("dpid"), s.get("name"), s.get("connected"), s.get("zone"), s.get("fabric_port"),
         len(s.get("ports") or []), s.get("packet_ins"))
        for s in switches
    ]  # fmt: skip
    return table(("DPID", "NAME", "CONNECTED", "ZONE", "FABRIC PORT", "PORTS", "PACKET-INS"),
                 rows, right=("ZONE", "PORTS", "PACKET-INS"))  # fmt: skip


def switch_block(sw: dict[str, Any]) -> str:
    head = block([(k, sw.get(k)) for k in
                  ("dpid", "name", "connected", "zone", "fabric_port", "packet_ins")])  # fmt: skip
    ports = sw.get("ports") or []
    if not ports:
        return head
    rows = [(p.get("ofport"), p.get("name"), p.get("vm"), p.get("networks")) for p in ports]
    return head + "\n\n" + table(("OFPORT", "PORT", "VM", "NETWORKS"), rows, right=("OFPORT",))


def flows_table(flows: list[dict[str, Any]]) -> str:
    rows = [(f.get("dpid"), f.get("packets"), f.get("bytes"), f.get("text")) for f in flows]
    return table(("DPID", "PACKETS", "BYTES", "FLOW"), rows, right=("PACKETS", "BYTES"))


# --- events ----------------------------------------------------------------------------------
EVENT_HEADERS = ("ID", "TIME", "VERDICT", "REASON", "VM", "PEER", "PROTO", "FROM", "TO",
                 "PAIR", "SWITCH")  # fmt: skip
# Followed events are printed as they come, so their columns cannot be measured first.
EVENT_WIDTHS = (6, 19, 7, 14, 12, 12, 5, 26, 26, 4, 0)


def clock(epoch: Any) -> str:
    """Seconds since the epoch as local time, to the second."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return cell(epoch)


def _endpoint(addr: Any, port: Any) -> str:
    if addr is None:
        return NONE
    addr = str(addr)
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def event_cells(e: dict[str, Any]) -> list[str]:
    return [cell(v) for v in (
        e.get("id"), clock(e.get("time")), e.get("verdict"), e.get("reason"), e.get("vm"),
        e.get("peer"), e.get("protocol"), _endpoint(e.get("src"), e.get("sport")),
        _endpoint(e.get("dst"), e.get("dport")), e.get("pair"), e.get("switch"),
    )]  # fmt: skip


def events_table(events: list[dict[str, Any]]) -> str:
    return table(EVENT_HEADERS, [event_cells(e) for e in events], right=("ID", "PAIR"))


def event_line(cells: Sequence[str]) -> str:
    """One row of a followed log, in fixed columns (wider cells push the rest along)."""
    return "  ".join(c.ljust(w) for c, w in zip(cells, EVENT_WIDTHS, strict=True)).rstrip()


# --- explain, dry runs and free-form answers -------------------------------------------------
def explanation(answer: dict[str, Any]) -> str:
    out = [f"{str(answer.get('verdict', '?')).upper()}: {answer.get('why', '')}".rstrip()]
    pairs = answer.get("pairs") or []
    if pairs:
        out += ["", "pairs:", indent(pairs_table(pairs))]
    flows = answer.get("flows") or []
    if flows:
        out += ["", "flows:", indent(flows_table(flows))]
    return "\n".join(out)


PLAN_SIGNS = {"add": "+", "added": "+", "delete": "-", "deleted": "-", "remove": "-"}
DRY_RUN_KEYS = ("dry_run", "status", "answer")


def plan(answer: dict[str, Any]) -> str:
    """A dry run's plan (everything in the answer besides dry_run, status and answer): the
    flows each switch would get (+) and lose (-), the pairs whose connections are cut."""
    out: list[str] = []
    for key, value in answer.items():
        if key in DRY_RUN_KEYS:
            continue
        if key == "switches" and isinstance(value, list):
            out += _plan_switches(value)
        elif key == "cut" and isinstance(value, list):
            if value:
                out.append(f"connections cut: {len(value)} pair(s)")
                out += [f"  {_pair_or_value(p)}" for p in value]
            else:
                out.append("connections cut: none")
        else:
            out += _outline(key, value, 0)
    return "\n".join(out) if out else "(nothing would change)"


def _plan_switches(switches: list[Any]) -> list[str]:
    if not switches:
        return ["flows: no switch would change"]
    out = []
    for sw in switches:
        if not isinstance(sw, dict):
            out.append(f"switch {cell(sw)}")
            continue
        label = " ".join(cell(sw[k]) for k in ("dpid", "name", "switch") if sw.get(k))
        counts = ", ".join(
            f"{PLAN_SIGNS[k]}{len(v)}"
            for k, v in sw.items()
            if k in PLAN_SIGNS and isinstance(v, list)
        )
        out.append(f"switch {label or '?'}: {counts or 'no flow change'}")
        for key, value in sw.items():
            if key in ("dpid", "name", "switch"):
                continue
            if key in PLAN_SIGNS and isinstance(value, list):
                out += [f"  {PLAN_SIGNS[key]} {_flow_text(f)}" for f in value]
            else:
                out += _outline(key, value, 1)
    return out


def _flow_text(flow: Any) -> str:
    return str(flow.get("text", json.dumps(flow))) if isinstance(flow, dict) else str(flow)


def _pair_or_value(value: Any) -> str:
    if isinstance(value, dict) and "initiator" in value:
        return f"pair {value.get('id')}: {pair_label(value)}"
    return f"pair {cell(value)}"


DIFF_SIGNS = {"added": "+", "changed": "~", "removed": "-"}
SINGULAR = {"vms": "vm", "groups": "group", "networks": "network", "pairs": "pair",
            "switches": "switch"}  # fmt: skip


def difference(answer: Any) -> str:
    """PUT /policy's answer ({"added", "changed", "removed"}: names by kind, pairs as
    views) as one line per thing: '+ vm vm3', '~ group web', '- pair 1: vm1 -> vm2 any'."""
    if not isinstance(answer, dict) or not answer or not set(answer) <= set(DIFF_SIGNS):
        return outline(answer)
    lines = []
    for what, sign in DIFF_SIGNS.items():
        for kind, items in (answer.get(what) or {}).items():
            for item in items:
                if isinstance(item, dict) and "initiator" in item:
                    lines.append(f"{sign} {_pair_or_value(item)}")
                else:
                    lines.append(f"{sign} {SINGULAR.get(kind, kind)} {cell(item)}")
    return "\n".join(lines) if lines else "no change"


def outline(value: Any) -> str:
    """Any JSON answer as an indented outline (objects as one line each when they have a
    name or id)."""
    if isinstance(value, dict):
        lines = [line for k, v in value.items() for line in _outline(k, v, 0)]
        return "\n".join(lines) if lines else "(empty)"
    return cell(value)


def _outline(key: str, value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        if not value:
            return [f"{pad}{key}: {NONE}"]
        return [f"{pad}{key}:"] + [ln for k, v in value.items() for ln in _outline(k, v, depth + 1)]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [f"{pad}{key}: {len(value)}"] + [f"{pad}  {_summary(v)}" for v in value]
    return [f"{pad}{key}: {cell(value)}"]


def _summary(obj: Any) -> str:
    if isinstance(obj, dict):
        if "initiator" in obj:
            return _pair_or_value(obj)
        if "text" in obj:
            return _flow_text(obj)
        if "name" in obj:
            rest = {k: v for k, v in obj.items() if k != "name"}
            return f"{obj['name']} {cell(rest)}" if rest else str(obj["name"])
    return cell(obj)


def indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())
