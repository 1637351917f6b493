"""Hostile REST input against a live controller: no 5xx, and a 4xx changes nothing."""

from __future__ import annotations

import json
import urllib.parse

from conftest import Lab
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(["port", "mac", "ips", "initiator", "responder", "protocol", "ports"])
BODIES = (
    JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(FIELDS, JSON, max_size=4).map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)
PATHS = st.sampled_from(["/vms", "/vms/{}", "/pairs", "/pairs/{}", "/switches", "/flows"])
METHODS = st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"])


def snapshot(env: Lab) -> tuple:
    dump = env.ovs.dump_flows(env.bridge, "--no-stats")
    return (sorted(dump.splitlines()), env.ctl.stored_bytes())


def test_hostile_requests_never_break_or_half_apply(seed: Lab) -> None:
    before = snapshot(seed)

    @settings(
        max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(method=METHODS, path=PATHS, param=st.text(max_size=30), body=BODIES)
    def one(method: str, path: str, param: str, body: bytes) -> None:
        nonlocal before
        url = "/ctfw/v1" + path.format(urllib.parse.quote(param, safe=""))
        status, answer = seed.ctl.api(method, url, raw=body if method != "GET" else None)
        assert status < 500, (method, url, body, status, answer)
        if status >= 400:
            assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
            assert "Traceback" not in json.dumps(answer)
            assert snapshot(seed) == before, f"{method} {url} {body!r} -> {status} changed things"
        elif method != "GET":
            before = snapshot(seed)  # a valid change: the new baseline

    one()
