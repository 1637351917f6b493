"""The OpenAPI description (ryu_ctfw/openapi.py) is kept in step with the code.

The routes, methods and handler names come from rest.ROUTES, the limits from the policy's
own validators; these tests fail when one of them changes and the description does not.
The structure is checked by hand (no openapi-spec-validator needed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ryu.app.wsgi import WSGIApplication
from webob import Request

from ryu_ctfw import openapi, policy, rest
from ryu_ctfw.firewall import Firewall
from ryu_ctfw.openapi import SPEC
from ryu_ctfw.policy import (
    KINDS,
    MAC_RE,
    MAX_CIDRS_PER_NETWORK,
    PORT_NAME_RE,
    PROTOCOLS,
    VM_NAME_RE,
    InvalidInput,
    group_from_body,
    network_from_body,
    pair_request_from_body,
    vm_from_body,
)

API = rest.API
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
MUTATING = {m.lower() for m in rest.MUTATING}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation in the description."""
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


OPERATIONS = list(operations())
OPERATION_IDS = [f"{m.upper()} {p}" for p, m, _ in OPERATIONS]


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) below `node`."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from walk(value, f"{where}/{escaped}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


def resolve(ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = SPEC
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(key)]
        else:
            assert isinstance(node, dict) and key in node, f"{ref} does not resolve at {key!r}"
            node = node[key]
    return node


def schema(name: str) -> dict[str, Any]:
    return SPEC["components"]["schemas"][name]


def regex(pattern: str) -> re.Pattern[str]:
    """An OpenAPI (ECMA) pattern as used here; the ones in the spec are plain Python too."""
    return re.compile(pattern)


# --- the spec is a well-formed OpenAPI 3.0 document ---------------------------------------


def test_top_level_structure() -> None:
    assert re.fullmatch(r"3\.0\.\d+", SPEC["openapi"])
    assert isinstance(SPEC["info"]["title"], str) and SPEC["info"]["title"]
    assert isinstance(SPEC["info"]["version"], str) and SPEC["info"]["version"]
    assert set(SPEC) <= {"openapi", "info", "servers", "paths", "components", "security", "tags"}
    assert isinstance(SPEC["paths"], dict) and SPEC["paths"]
    for path in SPEC["paths"]:
        assert path.startswith("/"), path
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes == {"bearer": {"type": "http", "scheme": "bearer"}}


def test_the_spec_is_plain_json() -> None:
    """It is served with json.dumps; a tuple or set would change on the way out."""
    assert json.loads(json.dumps(SPEC)) == SPEC


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=OPERATION_IDS)
def test_each_operation_is_well_formed(path: str, method: str, op: dict[str, Any]) -> None:
    assert isinstance(op["operationId"], str)
    responses = op["responses"]
    assert responses, "an operation needs at least one response"
    assert any(code.startswith("2") for code in responses), "no success response"
    for code, response in responses.items():
        assert re.fullmatch(r"[1-5][0-9][0-9]", code), code
        assert isinstance(response["description"], str) and response["description"]
        for media, content in response.get("content", {}).items():
            assert media == "application/json"
            assert "schema" in content
        if not code.startswith("2"):
            # Every error is JSON {"error": ...}.
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    if "requestBody" in op:
        body = op["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"application/json"}
    for item in op.get("security", []):
        for scheme in item:
            assert scheme in SPEC["components"]["securitySchemes"]


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in OPERATIONS]
    assert len(ids) == len(set(ids))


def test_every_ref_resolves() -> None:
    refs = [
        (where, node["$ref"])
        for where, node in walk(SPEC)
        if isinstance(node, dict) and "$ref" in node
    ]
    assert refs, "the spec uses $ref; the walk found none"
    for where, ref in refs:
        target = resolve(ref)
        assert isinstance(target, dict), f"{where}: {ref} is not an object"


def test_every_schema_is_used() -> None:
    used = {
        node["$ref"].rsplit("/", 1)[1]
        for _, node in walk(SPEC["paths"])
        if isinstance(node, dict) and "$ref" in node
    }
    # Schemas may refer to other schemas too.
    for _, node in walk(SPEC["components"]["schemas"]):
        if isinstance(node, dict) and "$ref" in node:
            used.add(node["$ref"].rsplit("/", 1)[1])
    assert used == set(SPEC["components"]["schemas"])


def test_schemas_are_well_formed() -> None:
    types = {"object", "array", "string", "integer", "number", "boolean"}
    for where, node in walk(SPEC["components"]["schemas"], "#/components/schemas"):
        # A schema has a string "type"; a "properties" map (whose values are schemas) not.
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            continue
        assert node["type"] in types, where
        if node["type"] == "array":
            assert "items" in node, f"{where}: an array needs items"
        if "required" in node:
            assert set(node["required"]) <= set(node.get("properties", {})), where
        if "pattern" in node:
            regex(node["pattern"])
        if "enum" in node:
            assert isinstance(node["enum"], list) and node["enum"], where
        for key in ("nullable", "additionalProperties"):
            assert isinstance(node.get(key, False), bool), where


# --- the spec matches rest.ROUTES -----------------------------------------------------------


def test_paths_are_the_routes() -> None:
    assert set(SPEC["paths"]) == {API + p for p in rest.ROUTES}


@pytest.mark.parametrize("template", list(rest.ROUTES))
def test_methods_and_operation_ids_are_the_routes(template: str) -> None:
    item = SPEC["paths"][API + template]
    described = {m: op["operationId"] for m, op in item.items() if m in HTTP_METHODS}
    routed = {m.lower(): handler for m, handler in rest.ROUTES[template].items()}
    assert described == routed
    # Nothing else under the path item but parameters (and the usual descriptive keys).
    assert set(item) - HTTP_METHODS <= {"parameters", "summary", "description"}


@pytest.mark.parametrize("template", list(rest.ROUTES))
def test_handlers_named_in_the_routes_exist(template: str) -> None:
    for handler in rest.ROUTES[template].values():
        assert callable(getattr(rest.CtfwController, handler, None)), handler


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=OPERATION_IDS)
def test_mutating_operations_need_the_token(path: str, method: str, op: dict[str, Any]) -> None:
    if method in MUTATING:
        assert op.get("security") == [{"bearer": []}]
        assert "401" in op["responses"]
        assert "405" in op["responses"]
    else:
        # The code asks no token for reading; the description must not say otherwise.
        assert "security" not in op
    assert "security" not in SPEC, "a global security requirement would cover GETs"


@pytest.mark.parametrize("template", list(rest.ROUTES))
def test_path_parameters_match_the_placeholders(template: str) -> None:
    path = API + template
    item = SPEC["paths"][path]
    placeholders = set(re.findall(r"\{([^}]+)\}", path))
    for method, op in item.items():
        if method not in HTTP_METHODS:
            continue
        params = [*item.get("parameters", []), *op.get("parameters", [])]
        in_path = [p for p in params if p["in"] == "path"]
        names = [p["name"] for p in in_path]
        assert len(names) == len(set(names)), f"{method} {path}: a parameter twice"
        assert set(names) == placeholders, f"{method} {path}"
        for param in in_path:
            assert param["required"] is True, "path parameters are always required"
            assert "schema" in param


@pytest.mark.parametrize("kind", ["vms", "networks", "groups"])
def test_the_name_parameter_is_the_one_name_rule(kind: str) -> None:
    (param,) = SPEC["paths"][f"{API}/{kind}/{{name}}"]["parameters"]
    assert param["schema"]["pattern"] == VM_NAME_RE.pattern


def test_the_pair_id_parameter_matches_what_the_api_accepts() -> None:
    (param,) = SPEC["paths"][f"{API}/pairs/{{pair_id}}"]["parameters"]
    assert param["schema"]["type"] == "integer"
    assert param["schema"]["minimum"] == 1


# --- the spec matches the policy's rules ----------------------------------------------------


def test_the_protocol_enum_is_the_policy_protocols() -> None:
    assert schema("PairBody")["properties"]["protocol"]["enum"] == list(PROTOCOLS)
    assert schema("Pair")["properties"]["protocol"]["enum"] == list(PROTOCOLS)
    assert schema("PairBody")["properties"]["protocol"]["default"] == "any"
    assert pair_request_from_body({"initiator": "a", "responder": "b"}).protocol == "any"


def test_the_pair_kinds_are_the_policy_kinds() -> None:
    for side in ("initiator_kind", "responder_kind"):
        assert schema("Pair")["properties"][side] == {"type": "string", "enum": list(KINDS)}
    assert KINDS == ("vm", "group", "network")


def test_the_network_body_is_what_network_from_body_accepts() -> None:
    body = schema("NetworkBody")
    assert body["additionalProperties"] is False
    assert body["properties"]["port"]["pattern"] == PORT_NAME_RE.pattern
    cidrs = body["properties"]["cidrs"]
    assert (cidrs["minItems"], cidrs["maxItems"]) == (1, MAX_CIDRS_PER_NETWORK)
    full = {"port": "uplink0", "cidrs": ["198.19.0.0/24", "2001:db8:19::/48"]}
    assert set(full) == set(body["properties"]) == set(body["required"])
    network_from_body("net9", full)
    for missing in body["required"]:
        with pytest.raises(InvalidInput, match=f"missing field: {missing}"):
            network_from_body("net9", {k: v for k, v in full.items() if k != missing})
    with pytest.raises(InvalidInput, match="unknown field"):
        network_from_body("net9", {**full, "id": 7})
    for count, ok in ((0, False), (1, True), (MAX_CIDRS_PER_NETWORK, True),
                      (MAX_CIDRS_PER_NETWORK + 1, False)):  # fmt: skip
        many = {**full, "cidrs": [f"10.{i // 256}.{i % 256}.0/24" for i in range(count)]}
        if ok:
            network_from_body("net9", many)
        else:
            with pytest.raises(InvalidInput, match="invalid cidrs"):
                network_from_body("net9", many)


def test_the_group_body_is_what_group_from_body_accepts() -> None:
    body = schema("GroupBody")
    assert body["additionalProperties"] is False
    assert set(body["properties"]) == set(body["required"]) == {"members"}
    assert body["properties"]["members"]["items"]["pattern"] == VM_NAME_RE.pattern
    group_from_body("web", {"members": []})
    group_from_body("web", {"members": ["vm1", "vm3"]})
    with pytest.raises(InvalidInput, match="missing field: members"):
        group_from_body("web", {})
    with pytest.raises(InvalidInput, match="unknown field"):
        group_from_body("web", {"members": [], "id": 7})
    with pytest.raises(InvalidInput, match="invalid VM name"):
        group_from_body("web", {"members": ["-vm1"]})


@pytest.mark.parametrize(("name", "shown"), [("Vm", "vms"), ("Network", "networks"),
                                             ("Group", "groups")])  # fmt: skip
def test_the_views_describe_what_the_api_shows(tmp_path: Path, name: str, shown: str) -> None:
    wsgi = WSGIApplication()
    rest.register(wsgi, Firewall(tmp_path / "state.json"))
    bodies = {"vms": {"port": "tap2"}, "groups": {"members": ["vm1"]},
              "networks": {"port": "uplink0", "cidrs": ["198.19.0.0/24"]}}  # fmt: skip
    for kind in ("vms", shown):
        body = json.dumps(bodies[kind]).encode()
        Request.blank(f"{API}/{kind}/{kind[:-1]}1", method="PUT", body=body).get_response(wsgi)
    view = json.loads(Request.blank(f"{API}/{shown}/{shown[:-1]}1").get_response(wsgi).body)
    assert set(view) == set(schema(name)["properties"])


def test_the_pair_view_is_described(tmp_path: Path) -> None:
    wsgi = WSGIApplication()
    rest.register(wsgi, Firewall(tmp_path / "state.json"))
    for path, body in (("/vms/vm1", {"port": "tap2"}), ("/vms/vm2", {"port": "tap4"})):
        Request.blank(API + path, method="PUT", body=json.dumps(body).encode()).get_response(wsgi)
    pair = {"initiator": "vm1", "responder": "vm2"}
    resp = Request.blank(f"{API}/pairs", method="POST",
                         body=json.dumps(pair).encode()).get_response(wsgi)  # fmt: skip
    assert resp.status_int == 201, resp.text
    assert set(resp.json) == set(schema("Pair")["properties"])


def test_the_vm_body_is_what_vm_from_body_accepts() -> None:
    body = schema("VmBody")
    assert body["additionalProperties"] is False
    assert body["properties"]["port"]["pattern"] == PORT_NAME_RE.pattern
    full = {"port": "tap9", "mac": "52:54:00:00:00:09", "ips": ["10.0.0.9"], "switch": "br0"}
    assert set(full) == set(body["properties"])
    vm_from_body("vm9", full)  # every described property is accepted
    for missing in body["required"]:
        with pytest.raises(InvalidInput, match=f"missing field: {missing}"):
            vm_from_body("vm9", {k: v for k, v in full.items() if k != missing})
    with pytest.raises(InvalidInput, match="unknown field"):
        vm_from_body("vm9", {**full, "colour": "red"})
    optional = set(body["properties"]) - set(body["required"])
    vm_from_body("vm9", {k: v for k, v in full.items() if k not in optional})


@pytest.mark.parametrize(
    "mac", ["52:54:00:00:00:09", "52:54:00:AB:cd:EF", "5254:00:00:00:09", "52:54:00:00:00:0g"]
)
def test_the_mac_pattern_agrees_with_the_validator(mac: str) -> None:
    pattern = regex(schema("VmBody")["properties"]["mac"]["pattern"])
    assert bool(pattern.fullmatch(mac)) == bool(MAC_RE.fullmatch(mac.lower()))


def test_the_pair_body_is_what_pair_request_from_body_accepts() -> None:
    body = schema("PairBody")
    assert body["additionalProperties"] is False
    full = {"initiator": "a", "responder": "b", "protocol": "tcp", "ports": "22", "log": True}
    assert set(full) == set(body["properties"])
    assert pair_request_from_body(full).log is True
    without_log = {k: v for k, v in full.items() if k != "log"}
    assert body["properties"]["log"]["default"] is pair_request_from_body(without_log).log
    for missing in body["required"]:
        with pytest.raises(InvalidInput, match=f"missing field: {missing}"):
            pair_request_from_body({k: v for k, v in full.items() if k != missing})
    with pytest.raises(InvalidInput, match="unknown field"):
        pair_request_from_body({**full, "id": 7})


@pytest.mark.parametrize(
    ("ports", "ok"),
    [
        ("22", True),
        ("8000-8100", True),
        ("65535", True),
        (22, True),
        (65535, True),
        ("22-", False),
        ("-22", False),
        ("123456", False),
        ("a", False),
        (0, False),
        (65536, False),
    ],
)
def test_the_ports_schema_agrees_with_the_validator(ports: Any, ok: bool) -> None:
    """Within what a schema can say (the range checks are the validator's)."""
    one_of = schema("PairBody")["properties"]["ports"]["oneOf"]
    by_type = {s["type"]: s for s in one_of}
    if isinstance(ports, str):
        described = bool(regex(by_type["string"]["pattern"]).fullmatch(ports))
    else:
        described = by_type["integer"]["minimum"] <= ports <= by_type["integer"]["maximum"]
    try:
        policy.validate_ports("tcp", ports)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == ok
    assert described == ok


def test_the_described_limits_are_the_code_limits() -> None:
    assert "413" in SPEC["paths"][f"{API}/vms/{{name}}"]["put"]["responses"]
    assert f"{rest.MAX_BODY // 1024} KiB" in openapi.COMMON_ERRORS["413"]["description"]


def test_the_error_schema_is_what_errors_look_like() -> None:
    assert schema("Error") == {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }


# --- it is served -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_get_openapi_json_serves_exactly_the_spec(tmp_path: Path, token: str | None) -> None:
    wsgi = WSGIApplication()
    rest.register(wsgi, Firewall(tmp_path / "state.json"), token)
    resp = Request.blank(f"{API}/openapi.json").get_response(wsgi)
    assert resp.status_int == 200, resp.text
    assert resp.content_type == "application/json"
    assert json.loads(resp.body) == SPEC
    assert not (tmp_path / "state.json").exists()


def test_the_openapi_path_takes_only_get(tmp_path: Path) -> None:
    wsgi = WSGIApplication()
    rest.register(wsgi, Firewall(tmp_path / "state.json"))
    resp = Request.blank(f"{API}/openapi.json", method="POST", body=b"{}").get_response(wsgi)
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "GET"
    assert list(resp.json) == ["error"]


# --- switches (issue 12) -------------------------------------------------------------------


def test_the_switch_body_is_what_switch_settings_from_body_accepts() -> None:
    body = schema("SwitchBody")
    assert body["additionalProperties"] is False
    assert set(body["properties"]) == set(body["required"]) == {"fabric_port"}
    port = body["properties"]["fabric_port"]
    assert (port["pattern"], port["nullable"]) == (PORT_NAME_RE.pattern, True)
    assert policy.switch_settings_from_body({"fabric_port": "eth1"}) == "eth1"
    assert policy.switch_settings_from_body({"fabric_port": None}) is None
    with pytest.raises(InvalidInput, match="missing field: fabric_port"):
        policy.switch_settings_from_body({})
    with pytest.raises(InvalidInput, match="unknown field"):
        policy.switch_settings_from_body({"fabric_port": "eth1", "zone": 1})


@pytest.mark.parametrize(
    "dpid",
    ["0000000000000001", "00005254006084FF", "00005254006084ff", "1", "000000000000000g",
     "00000000000000001", "0x00000000000001", "-000000000000001"],
)  # fmt: skip
def test_the_dpid_parameter_agrees_with_the_validator(dpid: str) -> None:
    (param,) = SPEC["paths"][f"{API}/switches/{{dpid}}"]["parameters"]
    try:
        policy.validate_dpid(dpid)
        ok = True
    except InvalidInput:
        ok = False
    assert bool(regex(param["schema"]["pattern"]).fullmatch(dpid)) == ok


@pytest.mark.parametrize(
    "switch",
    ["br0", "br-int", "0000000000000001", "00005254006084FF", "a" * 15, "a" * 16, "a" * 17,
     "br/0", "", "br 0", "000000000000000g0", "0000000000000001x"],
)  # fmt: skip
def test_the_vm_switch_pattern_agrees_with_the_validator(switch: str) -> None:
    prop = schema("VmBody")["properties"]["switch"]
    assert prop["nullable"] is True
    try:
        policy.validate_switch(switch)
        ok = True
    except InvalidInput:
        ok = False
    assert bool(regex(prop["pattern"]).fullmatch(switch)) == ok


def test_the_switch_view_is_described(tmp_path: Path) -> None:
    wsgi = WSGIApplication()
    rest.register(wsgi, Firewall(tmp_path / "state.json"))
    body = json.dumps({"fabric_port": "eth1"}).encode()
    resp = Request.blank(f"{API}/switches/0000000000000001", method="PUT", body=body)
    answer = json.loads(resp.get_response(wsgi).body)
    assert set(answer) == set(schema("Switch")["properties"])
    listed = json.loads(Request.blank(f"{API}/switches").get_response(wsgi).body)
    assert listed == {"switches": [answer]}
    port = schema("Switch")["properties"]["ports"]["items"]["properties"]
    assert set(port) == {"name", "ofport", "vm", "networks"}
