"""No cross-site writes, no DNS rebinding (issue 10, point 2).

A web page open in a browser on the host can reach the API on 127.0.0.1. Writes the
browser marks as cross-site (Origin, Sec-Fetch-Site) are refused with 403, a body not
declared JSON with 415, and while the API listens on loopback only loopback Host names are
answered. Scripts (no Origin, no Sec-Fetch-*) work as before; every refusal changes nothing,
in memory or on disk (snapshot and journal).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import wsgi_client
from ryu.app.wsgi import WSGIApplication
from webob import Response

from ryu_ctfw import openapi, rest, store
from ryu_ctfw.firewall import Firewall

TOKEN = "s3cret"
GOOD = f"Bearer {TOKEN}"
JSON = {"Content-Type": "application/json"}


class Api(wsgi_client.App):
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        host: str | None = None,
    ) -> Response:
        environ = {"HTTP_HOST": host} if host is not None else None
        return self.request(method, path, body, headers, environ)

    def state(self) -> tuple[Any, dict[str, bytes]]:
        """The policy, and every file of the state folder with its bytes (journal too)."""
        folder = self.state_file.parent
        return self.fw.policy.to_dict(), {p.name: p.read_bytes() for p in folder.iterdir()}


def make_api(tmp_path: Path, token: str | None = None, listen: str = "127.0.0.1") -> Api:
    wsgi = WSGIApplication()
    fw = Firewall(tmp_path / "state.json")
    rest.register(wsgi, fw, token, listen_host=listen)
    api = Api(wsgi, fw, tmp_path / "state.json")
    auth = {"Authorization": GOOD} if token else {}
    for method, path, body in wsgi_client.POPULATE:
        resp = api.call(method, path, body, {**JSON, **auth})
        assert resp.status_int == 201, resp.text
    return api


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return make_api(tmp_path)


def error(resp: Response, status: int) -> str:
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    body = json.loads(resp.body)
    assert list(body) == ["error"] and body["error"]
    return str(body["error"])


MUTATIONS, IDS = wsgi_client.MUTATIONS, wsgi_client.MUTATION_IDS


def _template(path: str) -> str:
    """The route template a concrete path is served by: "/vms/vm9" -> "/vms/{name}"."""
    for template in rest.ROUTES:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"no route serves {path}")


def test_every_mutating_route_is_covered() -> None:
    routes = {(m, t) for t, methods in rest.ROUTES.items() for m in methods if m in rest.MUTATING}
    covered = {(m, _template(p)) for m, p, _, _ in MUTATIONS}
    assert routes == covered
    assert {("PUT", "/networks/{name}"), ("DELETE", "/groups/{name}")} <= covered
    assert {m for m, _, _, _ in MUTATIONS} == set(rest.MUTATING)


FOREIGN = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://evil.example:80"},
    {"Origin": "null"},  # sandboxed iframes, file:// pages
    {"Origin": "https://localhost"},  # another scheme is another origin
    {"Origin": "http://localhost:8080"},  # another port too (the request went to :80)
    {"Origin": "http://127.0.0.1"},  # another host name, though the same machine
    {"Origin": "http://localhost/path"},
    {"Origin": "not a url"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "Cross-Site"},
    {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
]
FOREIGN_IDS = [" ".join(f"{k}={v}" for k, v in h.items()) for h in FOREIGN]


@pytest.mark.parametrize(("method", "path", "body", "_status"), MUTATIONS, ids=IDS)
@pytest.mark.parametrize("headers", FOREIGN, ids=FOREIGN_IDS)
def test_a_cross_site_write_is_403_and_changes_nothing(
    api: Api, method: str, path: str, body: Any, _status: int, headers: dict[str, str]
) -> None:
    before = api.state()
    message = error(api.call(method, path, body, {**JSON, **headers}), 403)
    assert "cross-" in message and ("Origin" in message or "Sec-Fetch-Site" in message)
    assert api.state() == before


@pytest.mark.parametrize(("method", "path", "body", "status"), MUTATIONS, ids=IDS)
@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts
        {"Origin": "http://localhost"},
        {"Origin": "http://localhost:80"},
        {"Origin": "HTTP://LOCALHOST"},
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
    ],
    ids=["none", "own", "own-port", "own-case", "own-same-origin", "fetch-none"],
)
def test_a_same_origin_or_script_write_is_accepted(
    api: Api, method: str, path: str, body: Any, status: int, headers: dict[str, str]
) -> None:
    resp = api.call(method, path, body, {**JSON, **headers})
    assert resp.status_int == status, resp.text
    assert store.load(api.state_file).to_dict() == api.fw.policy.to_dict()


def test_own_origin_follows_the_host_the_request_was_addressed_to(tmp_path: Path) -> None:
    api = make_api(tmp_path, listen="0.0.0.0")
    headers = {**JSON, "Origin": "http://fw.example:8080"}
    body = {"port": "tap9"}
    resp = api.call("PUT", "/vms/vm9", body, headers, host="fw.example:8080")
    assert resp.status_int == 201, resp.text
    error(api.call("PUT", "/vms/vm8", {"port": "tap8"}, headers, host="fw.example:8081"), 403)
    resp = api.call("PUT", "/vms/vm7", {"port": "tap7"}, {**JSON, "Origin": "http://[::1]:8080"},
                    host="[::1]:8080")  # fmt: skip
    assert resp.status_int == 201, resp.text


def test_reads_are_not_refused_for_their_origin(api: Api) -> None:
    """A cross-site page cannot read the answer anyway (no CORS headers); links still work."""
    for headers in FOREIGN:
        assert api.call("GET", "/vms", headers=headers).status_int == 200


# --- Content-Type --------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body", "_status"), MUTATIONS, ids=IDS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x",
                     "application/xml", "application/jsonx"],
)  # fmt: skip
@pytest.mark.parametrize("browser", [False, True])
def test_a_body_not_declared_json_is_415_and_changes_nothing(
    api: Api, method: str, path: str, body: Any, _status: int, content_type: str, browser: bool
) -> None:
    headers = {"Content-Type": content_type}
    if browser:
        headers["Origin"] = "http://localhost"
    before = api.state()
    raw = json.dumps(body if body is not None else {}).encode()
    message = error(api.call(method, path, raw, headers), 415)
    assert "application/json" in message and content_type in message
    assert api.state() == before


@pytest.mark.parametrize(
    "browser",
    [{"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Mode": "cors"}],
)
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_browser_must_declare_json(
    api: Api, browser: dict[str, str], content_type: str | None
) -> None:
    """fetch() with a Blob body sends no Content-Type, and form-urlencoded is "simple":
    neither needs a preflight, so from a browser only application/json is taken."""
    headers = dict(browser)
    if content_type:
        headers["Content-Type"] = content_type
    before = api.state()
    message = error(api.call("POST", "/pairs", {"initiator": "vm2", "responder": "vm3"}, headers),
                    415)  # fmt: skip
    assert "application/json" in message
    assert api.state() == before


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "application/json",
     "application/json; charset=utf-8", "Application/JSON"],
)  # fmt: skip
def test_scripts_may_send_what_curl_and_urllib_send(api: Api, content_type: str | None) -> None:
    """`curl -d` sends form-urlencoded, requests' data= nothing: they keep working."""
    headers = {"Content-Type": content_type} if content_type else None
    resp = api.call("PUT", "/vms/vm9", {"port": "tap9"}, headers)
    assert resp.status_int == 201, resp.text


def test_a_delete_without_body_needs_no_content_type(api: Api) -> None:
    assert api.call("DELETE", "/pairs/1", headers={"Origin": "http://localhost"}).status_int == 204


def test_an_empty_body_is_still_a_400(api: Api) -> None:
    error(api.call("PUT", "/vms/vm9", b"", JSON), 400)


# --- DNS rebinding -------------------------------------------------------------------------
LOOPBACK_HOSTS = ["localhost", "localhost:8080", "LOCALHOST:80", "127.0.0.1", "127.0.0.1:8080",
                  "[::1]", "[::1]:8080", "127.1.2.3:8080"]  # fmt: skip
FOREIGN_HOSTS = ["evil.example", "evil.example:8080", "localhost.evil.example:8080",
                 "127.0.0.1.evil.example", "10.0.0.1:8080", "[2001:db8::1]:8080",
                 "localhost:bad", "[::1"]  # fmt: skip
READS = [t.replace("{name}", "vm1").replace("{pair_id}", "1") for t in rest.ROUTES]


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_rebound_host_is_refused_while_on_loopback(api: Api, path: str, host: str) -> None:
    message = error(api.call("GET", path, host=host), 403)
    assert "Host" in message and "rebinding" in message
    assert "vm1" not in message and "tap2" not in message


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_rebound_host_cannot_write_either(api: Api, host: str) -> None:
    """Its Origin is its own name, which matches its Host: only the Host check stops it."""
    before = api.state()
    origin = {"Origin": f"http://{host}"}
    error(api.call("DELETE", "/pairs/1", None, origin, host=host), 403)
    error(api.call("PUT", "/vms/vm9", {"port": "tap9"}, {**JSON, **origin}, host=host), 403)
    assert api.state() == before


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_hosts_are_answered(api: Api, host: str) -> None:
    resp = api.call("GET", "/vms/vm1", host=host)
    assert resp.status_int == 200, resp.text
    resp = api.call("PUT", "/vms/vm9", {"port": "tap9"}, {**JSON, "Origin": f"http://{host}"},
                    host=host)  # fmt: skip
    assert resp.status_int == 201, resp.text


@pytest.mark.parametrize("listen", ["0.0.0.0", "", "::", "192.0.2.7", "fw.example"])
@pytest.mark.parametrize("host", ["evil.example:8080", "10.0.0.1:8080", "localhost"])
def test_any_host_is_answered_when_not_on_loopback(tmp_path: Path, listen: str, host: str) -> None:
    api = make_api(tmp_path, listen=listen)
    resp = api.call("GET", "/vms", host=host)
    assert resp.status_int == 200, resp.text


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.1.1.1", False)],
)  # fmt: skip
def test_listens_on_loopback(listen: str, loopback: bool) -> None:
    assert rest.listens_on_loopback(listen) is loopback


def test_register_defaults_to_ryus_wsapi_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ryu import cfg

    for listen, status in (("127.0.0.1", 403), ("0.0.0.0", 200)):
        monkeypatch.setattr(cfg.CONF, "wsapi_host", listen, raising=False)
        wsgi = WSGIApplication()
        rest.register(wsgi, Firewall(tmp_path / f"{status}.json"))
        resp = wsgi_client.call(wsgi, "GET", "/vms", environ={"HTTP_HOST": "evil.example"})
        assert resp.status_int == status, resp.text


# --- together with the token ----------------------------------------------------------------
@pytest.fixture
def guarded(tmp_path: Path) -> Api:
    return make_api(tmp_path, TOKEN)


@pytest.mark.parametrize(("method", "path", "body", "status"), MUTATIONS, ids=IDS)
def test_the_token_still_works_with_these_checks(
    guarded: Api, method: str, path: str, body: Any, status: int
) -> None:
    before = guarded.state()
    error(guarded.call(method, path, body, JSON), 401)
    error(guarded.call(method, path, body, {**JSON, "Origin": "http://evil.example",
                                            "Authorization": GOOD}), 403)  # fmt: skip
    raw = json.dumps(body or {}).encode()
    error(guarded.call(method, path, raw, {"Content-Type": "text/plain"}), 401)
    error(guarded.call(method, path, raw, {"Content-Type": "text/plain", "Authorization": GOOD}),
          415)  # fmt: skip
    error(guarded.call(method, path, body, {**JSON, "Authorization": GOOD}, host="evil.example"),
          403)  # fmt: skip
    assert guarded.state() == before
    headers = {**JSON, "Authorization": GOOD, "Origin": "http://localhost"}
    assert guarded.call(method, path, body, headers).status_int == status
    assert store.load(guarded.state_file).to_dict() == guarded.fw.policy.to_dict()


def test_a_cross_site_write_is_refused_before_the_token_is_checked(guarded: Api) -> None:
    """The token would not help it: the answer names the real reason."""
    resp = guarded.call("DELETE", "/pairs/1", headers={"Sec-Fetch-Site": "cross-site"})
    assert "Sec-Fetch-Site" in error(resp, 403)


# --- the description says so ----------------------------------------------------------------
def test_the_openapi_description_lists_the_refusals() -> None:
    for path, item in openapi.SPEC["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert "403" in op["responses"], f"{method} {path}"
            if method.upper() in rest.MUTATING:
                assert "415" in op["responses"], f"{method} {path}"


# --- what eventlet's server hands over -----------------------------------------------------
def eventlet_environ(content_type: str | None) -> dict[str, Any]:
    """eventlet puts 'text/plain' in CONTENT_TYPE when no Content-Type came; headers_raw
    holds the headers as received."""
    raw = (("Host", "127.0.0.1:8080"),) + ((("Content-Type", content_type),)
                                             if content_type else ())  # fmt: skip
    return {"CONTENT_TYPE": content_type or "text/plain", "headers_raw": raw}


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("DELETE", "/pairs/1", None, None, 204),  # curl -X DELETE, urllib
        ("PUT", "/vms/vm9", {"port": "tap9"}, None, 201),  # requests' data=
        ("PUT", "/vms/vm9", {"port": "tap9"}, "application/x-www-form-urlencoded", 201),
        ("PUT", "/vms/vm9", {"port": "tap9"}, "application/json", 201),
        ("PUT", "/vms/vm9", {"port": "tap9"}, "text/plain", 415),
        ("POST", "/pairs", {"initiator": "vm2", "responder": "vm3"}, "text/plain", 415),
    ],
)
def test_what_eventlet_says_is_read_as_the_client_sent_it(
    api: Api, method: str, path: str, body: Any, content_type: str | None, status: int
) -> None:
    environ = eventlet_environ(content_type)
    raw = json.dumps(body).encode() if body is not None else None
    resp = wsgi_client.call(api.wsgi, method, path, raw, None, environ)
    assert resp.status_int == status, resp.text


def test_a_browser_without_content_type_is_refused_under_eventlet(api: Api) -> None:
    before = api.state()
    environ = eventlet_environ(None)
    raw = json.dumps({"initiator": "vm2", "responder": "vm3"}).encode()
    resp = wsgi_client.call(api.wsgi, "POST", "/pairs", raw, {"Origin": "http://localhost"},
                            environ)  # fmt: skip
    assert "no Content-Type" in error(resp, 415)
    assert api.state() == before
