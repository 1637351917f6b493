"""The REST API described as OpenAPI 3, served at /ctfw/v1/openapi.json.

tests/unit/test_openapi.py checks it against rest.ROUTES and the policy's own limits, so it
cannot drift from the code unnoticed.
"""

from __future__ import annotations

from typing import Any

from ryu_ctfw.explain import REASONS as EXPLAIN_REASONS
from ryu_ctfw.policy import (
    KINDS,
    MAX_CIDRS_PER_NETWORK,
    PORT_NAME_RE,
    PROTOCOLS,
    VM_NAME_RE,
)

API = "/ctfw/v1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


NULLABLE_STR = {"type": "string", "nullable": True}
# VMs, groups and networks share one rule for names (and one namespace).
NAME = {"type": "string", "pattern": VM_NAME_RE.pattern}
NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": NAME}
PORT = {"type": "string", "pattern": PORT_NAME_RE.pattern}
KIND = {"type": "string", "enum": list(KINDS)}
PAIR_ID_PARAM = {"name": "pair_id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1}}  # fmt: skip
# A dpid in a path: 16 hex digits, either case (answered in lower case).
DPID = {"type": "string", "pattern": "^[0-9A-Fa-f]{16}$"}
DPID_PARAM = {"name": "dpid", "in": "path", "required": True, "schema": DPID}
# Where a VM says it is: a dpid, or a bridge name (the port-name rule).
SWITCH = {"type": "string", "pattern": f"^(?:[0-9A-Fa-f]{{16}}|{PORT_NAME_RE.pattern[1:-1]})$"}
AUTH = [{"bearer": []}]
DRY_RUN_PARAM = {"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
                 "description": "answer what the call would do, and do nothing"}  # fmt: skip
# Every call, reads included (rest.CtfwController._check_host).
REBINDING = _error(
    "the API listens on loopback and the Host header is not a loopback name (DNS rebinding)"
)
COMMON_ERRORS = {
    "400": _error("the body is not valid JSON or breaks a rule; the message names the field"),
    "401": _error("api_token is set and the call did not bring it"),
    "403": _error(
        "a browser sent it from another site (Origin not this API's own, or Sec-Fetch-Site "
        "cross-site/same-site), or the Host is not loopback while the API listens on loopback"
    ),
    "405": _error("method not allowed on this path"),
    "408": _error("the request did not arrive whole within 20 s; the connection is closed"),
    "411": _error("a Transfer-Encoding other than chunked"),
    "413": _error("body larger than 64 KiB"),
    "415": _error(
        "the body is not declared 'Content-Type: application/json' (clients that send no "
        "Origin and no Sec-Fetch-* may also send none, or application/x-www-form-urlencoded)"
    ),
    "502": _error("a switch refused the change; nothing of it was applied"),
    "504": _error(
        "a switch neither confirmed nor refused the change in time: the change is stored,"
        " and the switch is brought to the stored policy when it answers"
    ),
}

# VMs, groups and networks: one space of ids, given by the controller.
ID = {"type": "integer", "description": "given by the controller; its half of the connections'"
      " ct_mark"}  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "VmBody": {
        "type": "object",
        "required": ["port"],
        "additionalProperties": False,
        "properties": {
            "port": {**PORT, "description": "name of the VM's NIC's port on the bridge"},
            "mac": {
                "type": "string",
                "nullable": True,
                "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
            },
            "ips": {
                "type": "array",
                "items": {"type": "string"},
                "description": "IPv4 and/or IPv6 addresses the VM may send from",
            },
            "switch": {
                **SWITCH,
                "nullable": True,
                "description": "the switch the VM is on: its dpid (16 hex digits) or bridge"
                " name; without it, the one connected switch that has its port",
            },
        },
    },
    "Vm": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "id": ID,
            "port": {"type": "string"},
            "mac": NULLABLE_STR,
            "ips": {"type": "array", "items": {"type": "string"}},
            "dpid": NULLABLE_STR,
            "ofport": {"type": "integer", "nullable": True},
            "learned_mac": NULLABLE_STR,
            "switch": {**NULLABLE_STR, "description": "as given: a dpid or a bridge name"},
            "ambiguous": {
                "type": "boolean",
                "description": "its port name is on several switches and it names none:"
                " dpid and ofport are null and no flows guess",
            },
        },
    },
    "NetworkBody": {
        "type": "object",
        "required": ["port", "cidrs"],
        "additionalProperties": False,
        "properties": {
            "port": {**PORT, "description": "the port (no VM's) the network is reached through"},
            "cidrs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_CIDRS_PER_NETWORK,
                "items": {"type": "string"},
                "description": "IPv4 and/or IPv6 networks without host bits or scope ids,"
                ' like "198.19.0.0/24" and "2001:db8:19::/48"',
            },
        },
    },
    "Network": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "id": ID,
            "port": {"type": "string"},
            "cidrs": {"type": "array", "items": {"type": "string"}},
            "dpid": NULLABLE_STR,
            "ofport": {"type": "integer", "nullable": True},
        },
    },
    "GroupBody": {
        "type": "object",
        "required": ["members"],
        "additionalProperties": False,
        "properties": {
            "members": {
                "type": "array",
                "items": NAME,
                "description": "names of VMs, each once (may be empty)",
            },
        },
    },
    "Group": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "id": ID,
            "members": {"type": "array", "items": {"type": "string"}},
        },
    },
    "PairBody": {
        "type": "object",
        "required": ["initiator", "responder"],
        "additionalProperties": False,
        "properties": {
            "initiator": {"type": "string", "description": "a VM, group or network"},
            "responder": {"type": "string", "description": "a VM, group or network"},
            "protocol": {"type": "string", "enum": list(PROTOCOLS), "default": "any"},
            "ports": {
                "oneOf": [
                    {"type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$"},
                    {"type": "integer", "minimum": 1, "maximum": 65535},
                ],
                "description": 'tcp/udp only: "22" or "8000-8100"',
            },
            "log": {
                "type": "boolean",
                "default": False,
                "description": "log the connections it admits (GET /events)",
            },
        },
    },
    "Pair": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "initiator": {"type": "string"},
            "responder": {"type": "string"},
            "protocol": {"type": "string", "enum": list(PROTOCOLS)},
            "ports": NULLABLE_STR,
            "log": {"type": "boolean"},
            "initiator_kind": KIND,
            "responder_kind": KIND,
        },
    },
    "SwitchBody": {
        "type": "object",
        "required": ["fabric_port"],
        "additionalProperties": False,
        "properties": {
            "fabric_port": {
                **PORT,
                "nullable": True,
                "description": "the port of this bridge that leads to the other hosts; null"
                " clears it (then [ctfw] fabric_port applies)",
            },
        },
    },
    "Switch": {
        "type": "object",
        "properties": {
            "dpid": {"type": "string"},
            "name": {**NULLABLE_STR, "description": "the bridge's name; null until it connects"},
            "zone": {"type": "integer", "nullable": True},
            "connected": {"type": "boolean"},
            "packet_ins": {"type": "integer", "description": "packets sent to the controller"},
            "fabric_port": {
                **NULLABLE_STR,
                "description": "the fabric port in effect: the switch's own setting, else"
                " [ctfw] fabric_port; null: none",
            },
            "ports": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "ofport": {"type": "integer"},
                        "vm": NULLABLE_STR,
                        "networks": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "time": {"type": "number", "description": "seconds since the epoch"},
            "switch": {"type": "string"},
            "vm": NULLABLE_STR,
            "peer": NULLABLE_STR,
            "protocol": {"type": "string"},
            "src": NULLABLE_STR,
            "dst": NULLABLE_STR,
            "sport": {"type": "integer", "nullable": True},
            "dport": {"type": "integer", "nullable": True},
            "verdict": {"type": "string", "enum": ["allowed", "denied"]},
            "reason": {"type": "string"},
            "pair": {"type": "integer", "nullable": True},
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["verdict", "reason", "why", "pairs", "flows"],
        "properties": {
            "verdict": {"type": "string", "enum": ["allowed", "denied"]},
            "reason": {
                "type": "string",
                "enum": list(EXPLAIN_REASONS),
                "description": "why, for scripts: pair (allowed), or the first of the denials"
                " that applies, in this order",
            },
            "why": {"type": "string", "description": "the reason as one sentence"},
            "from": _ref("ExplainedEndpoint"),
            "to": _ref("ExplainedEndpoint"),
            "protocol": {"type": "string", "enum": list(PROTOCOLS)},
            "port": {"type": "integer", "nullable": True},
            "pairs": {
                "type": "array",
                "items": _ref("Pair"),
                "description": "allowed: the pairs that admit it; denied: the related ones"
                " (the other way, or for other services)",
            },
            "flows": {
                "type": "array",
                "description": "allowed: the table-1 flows that carry it on each switch it"
                " crosses, with their live counters",
                "items": {
                    "allOf": [
                        _ref("Flow"),
                        {
                            "type": "object",
                            "properties": {
                                "carries": {
                                    "type": "array",
                                    "items": {
                                        "type": "string",
                                        "enum": ["new", "established", "reply"],
                                    },
                                    "description": "which packets of the connection it takes",
                                }
                            },
                        },
                    ]
                },
            },
        },
    },
    "ExplainedEndpoint": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "the VM, group or network"},
            "kind": KIND,
            "address": {**NULLABLE_STR, "description": "the address asked about, if any"},
        },
    },
    "PolicyDocument": {
        "type": "object",
        "description": "the whole policy: the objects the list endpoints answer, and the"
        " switches' own settings. On the way in (PUT /policy) the fields the controller"
        " computes (id, dpid, ofport, ambiguous, learned_mac, initiator_kind,"
        " responder_kind) are ignored; vms, groups, networks and pairs are required ([] for"
        " none); switches may be left out (its settings then stay as they are)",
        "required": ["vms", "groups", "networks", "pairs"],
        "additionalProperties": False,
        "properties": {
            "vms": {
                "type": "array",
                "items": _ref("Vm"),
                "description": "each with its name; as in PUT /vms/{name} otherwise",
            },
            "groups": {"type": "array", "items": _ref("Group")},
            "networks": {"type": "array", "items": _ref("Network")},
            "pairs": {
                "type": "array",
                "items": _ref("Pair"),
                "description": "a pair with the same initiator, responder, protocol,"
                " ports and log as one in force is that pair, and keeps its id",
            },
            "switches": {"type": "array", "items": _ref("SwitchSetting")},
        },
    },
    "SwitchSetting": {
        "type": "object",
        "required": ["dpid", "fabric_port"],
        "additionalProperties": False,
        "properties": {
            "dpid": DPID,
            "fabric_port": {
                **PORT,
                "nullable": True,
                "description": "as PUT /switches/{dpid} sets it; null: none",
            },
        },
    },
    "PolicyChanges": {
        "type": "object",
        "description": "names of the VMs, groups and networks, the pairs (as views: the"
        " added with their new ids) and the dpids of the switch settings",
        "properties": {
            "vms": {"type": "array", "items": {"type": "string"}},
            "groups": {"type": "array", "items": {"type": "string"}},
            "networks": {"type": "array", "items": {"type": "string"}},
            "pairs": {"type": "array", "items": _ref("Pair")},
            "switches": {"type": "array", "items": {"type": "string"}},
        },
    },
    "PolicyDifference": {
        "type": "object",
        "description": "what PUT /policy changed; all empty when the policy was already"
        " the document (then nothing is stored or sent to a switch)",
        "properties": {
            "added": _ref("PolicyChanges"),
            "changed": _ref("PolicyChanges"),
            "removed": _ref("PolicyChanges"),
        },
    },
    "DryRun": {
        "type": "object",
        "description": "what a call with ?dry_run=true would do; nothing was done",
        "properties": {
            "dry_run": {"type": "boolean", "enum": [True]},
            "status": {"type": "integer", "description": "the status the call would answer"},
            "answer": {
                "type": "object",
                "nullable": True,
                "description": "the body the call would answer (null for 204)",
            },
            "switches": {
                "type": "array",
                "description": "every connected switch: the lines its table would gain and"
                " lose, as ovs-ofctl dump-flows shows them (a line whose actions change is"
                " in both)",
                "items": {
                    "type": "object",
                    "properties": {
                        "dpid": {"type": "string"},
                        "name": NULLABLE_STR,
                        "add": {"type": "array", "items": {"type": "string"}},
                        "delete": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "cut": {
                "type": "array",
                "items": _ref("Pair"),
                "description": "pairs whose open connections the call would cut: those"
                " it deletes, and those losing a line on some switch",
            },
        },
    },
    "Flow": {
        "type": "object",
        "properties": {
            "dpid": {"type": "string"},
            "table": {"type": "integer"},
            "priority": {"type": "integer"},
            "cookie": {"type": "string"},
            "packets": {"type": "integer"},
            "bytes": {"type": "integer"},
            "duration": {"type": "number"},
            "match": {"type": "object"},
            "actions": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "text": {"type": "string", "description": "the flow in ovs-ofctl syntax"},
        },
    },
}


def _list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "array", "items": _ref(item)}}}


def _named(
    plural: str, kind: str, schema: str, put_errors: dict[str, Any], delete_conflict: str
) -> dict[str, Any]:
    """The list and item paths of a resource named in the path (VMs, networks, groups):
    list, get, put (201 / 200), delete."""
    item = {"parameters": [NAME_PARAM],
        "get": {"operationId": f"get_{kind}", "responses": {
            "200": _json(_ref(schema), f"the {kind}"), "404": _error(f"no such {kind}"),
            "403": REBINDING}},
        "put": {"operationId": f"put_{kind}", "security": AUTH,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref(f"{schema}Body")}}},
                "responses": {"201": _json(_ref(schema), "created"),
                              "200": _json(_ref(schema), "updated"),
                              **put_errors, **COMMON_ERRORS}},
        "delete": {"operationId": f"delete_{kind}", "security": AUTH, "responses": {
            "204": {"description": "deleted"}, "404": _error(f"no such {kind}"),
            "409": _error(delete_conflict), **COMMON_ERRORS}},
    }  # fmt: skip
    return {
        f"{API}/{plural}": {"get": {"operationId": f"list_{plural}", "responses": {
            "200": _json(_list(plural, schema), f"all {plural}"), "403": REBINDING}}},
        f"{API}/{plural}/{{name}}": item,
    }  # fmt: skip


PATHS: dict[str, Any] = {
    **_named("vms", "vm", "Vm", {"409": _error(
        "the name is a group's or a network's, the port is another VM's or a network's, or"
        " the MAC is another VM's on its bridge")}, "a pair uses the VM, or a group lists it"),
    **_named("networks", "network", "Network", {"409": _error(
        "the name is a VM's or a group's, or the port is a VM's")}, "a pair uses the network"),
    **_named("groups", "group", "Group", {"404": _error("a member is no VM"), "409": _error(
        "the name is a VM's or a network's")}, "a pair uses the group"),
    f"{API}/pairs": {
        "get": {"operationId": "list_pairs",
                "responses": {"200": _json(_list("pairs", "Pair"), "all pairs"), "403": REBINDING}},
        "post": {"operationId": "add_pair", "security": AUTH,
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": _ref("PairBody")}}},
                 "responses": {"201": _json(_ref("Pair"), "created"),
                               "404": _error("no VM, group or network of that name"),
                               "409": _error("the same pair and service exists"),
                               **COMMON_ERRORS}},
    },
    f"{API}/pairs/{{pair_id}}": {
        "parameters": [PAIR_ID_PARAM],
        "get": {"operationId": "get_pair", "responses": {
            "200": _json(_ref("Pair"), "the pair"), "404": _error("no such pair"),
            "403": REBINDING}},
        "delete": {"operationId": "delete_pair", "security": AUTH, "responses": {
            "204": {"description": "deleted"}, "404": _error("no such pair"), **COMMON_ERRORS}},
    },
    f"{API}/switches": {
        "get": {"operationId": "list_switches",
                "responses": {"200": _json(_list("switches", "Switch"),
                                           "known switches, and those with a setting"),
                              "403": REBINDING}},
    },
    f"{API}/switches/{{dpid}}": {
        "parameters": [DPID_PARAM],
        "get": {"operationId": "get_switch", "responses": {
            "200": _json(_ref("Switch"), "the switch"),
            "400": _error("the dpid is not 16 hex digits"),
            "404": _error("no such switch is known, and it has no setting"), "403": REBINDING}},
        "put": {"operationId": "put_switch", "security": AUTH,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("SwitchBody")}}},
                "responses": {"200": _json(_ref("Switch"),
                                           "set (a switch not connected yet is allowed)"),
                              **COMMON_ERRORS}},
    },
    f"{API}/flows": {
        "get": {"operationId": "list_flows", "responses": {
            "200": _json(_list("flows", "Flow"), "the app's flows, read from the switches"),
            "403": REBINDING, "502": _error("a switch did not answer")}},
    },
    f"{API}/events": {
        "get": {"operationId": "list_events",
                "parameters": [
                    {"name": "verdict", "in": "query",
                     "schema": {"type": "string", "enum": ["allowed", "denied"]}},
                    {"name": "vm", "in": "query", "schema": NAME,
                     "description": "events whose vm or peer is this"},
                    {"name": "since", "in": "query", "schema": {"type": "number"},
                     "description": "seconds since the epoch"},
                    {"name": "after", "in": "query", "schema": {"type": "integer"},
                     "description": "events with a larger id (to follow the log)"},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10000,
                                "default": 100}}],
                "responses": {"200": _json(_list("events", "Event"),
                                           "the latest events that match, oldest first"),
                              "400": _error("an unknown or malformed query parameter"),
                              "403": REBINDING}},
    },
    f"{API}/explain": {
        "get": {"operationId": "explain",
                "parameters": [
                    {"name": "from", "in": "query", "required": True,
                     "schema": {"type": "string"},
                     "description": "a VM, group or network, or an address"},
                    {"name": "to", "in": "query", "required": True,
                     "schema": {"type": "string"},
                     "description": "a VM, group or network, or an address"},
                    {"name": "protocol", "in": "query",
                     "schema": {"type": "string", "enum": ["tcp", "udp", "icmp", "any"]}},
                    {"name": "port", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
                     "description": "tcp and udp only; without it, every port"}],
                "responses": {"200": _json(_ref("Explanation"), "the verdict and why"),
                              "400": _error("a missing, repeated, unknown or malformed query"
                                            " parameter"),
                              "404": _error("no VM, group or network of that name, or an"
                                            " address no VM registered and no network holds"),
                              "502": _error("a switch the flows are on could not be read"),
                              "403": REBINDING}},
    },
    f"{API}/policy": {
        "get": {"operationId": "get_policy", "responses": {
            "200": _json(_ref("PolicyDocument"), "the whole policy"), "403": REBINDING}},
        "put": {"operationId": "put_policy", "security": AUTH,
                "description": "Replace the whole policy with the document, in one change"
                " (one atomic bundle per switch). Errors name the entry, like"
                " 'vms[2].mac: ...', and change nothing.",
                "parameters": [DRY_RUN_PARAM],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("PolicyDocument")}}},
                "responses": {"200": _json(
                                  {"oneOf": [_ref("PolicyDifference"), _ref("DryRun")]},
                                  "replaced: the difference it made (with dry_run: what"
                                  " it would do)"),
                              "404": _error("a pair or group names something the document"
                                            " does not have"),
                              "409": _error("two entries conflict (a name or pair twice, a"
                                            " port or MAC of two VMs)"),
                              **COMMON_ERRORS,
                              "413": _error("body larger than 16 MiB")}},
    },
    f"{API}/openapi.json": {
        "get": {"operationId": "openapi",
                "responses": {"200": {"description": "this description"}, "403": REBINDING}},
    },
}  # fmt: skip


def _with_dry_run(paths: dict[str, Any]) -> None:
    """Every mutating operation takes ?dry_run=true and may then answer the DryRun."""
    for item in paths.values():
        for method in ("put", "post", "delete"):
            op = item.get(method)
            if op is None:
                continue
            if DRY_RUN_PARAM not in op.get("parameters", []):
                op["parameters"] = [*op.get("parameters", []), DRY_RUN_PARAM]
            if "200" not in op["responses"]:
                op["responses"]["200"] = _json(_ref("DryRun"), "with dry_run: what it would do")


_with_dry_run(PATHS)

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "ryu-ctfw",
        "version": "1",
        "description": "Stateful (conntrack) firewall for Open vSwitch: VMs, groups of VMs, "
        "networks behind uplink ports, and the pairs of them that may open connections. "
        'Every error is JSON {"error": ...}.',
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
