"""The REST layer: parse, validate, call the firewall, render JSON. Nothing else.

Ryu's WSGI answers a wrong method with 404 and lets exceptions escape as 500 pages, so
each path is one route that dispatches on the method itself, and every answer, error or
not, is JSON.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ryu import cfg
from ryu.app.wsgi import ControllerBase, Response, WSGIApplication

from ryu_ctfw import events, explain, metrics, openapi, policydoc, ui
from ryu_ctfw.loopback import is_loopback
from ryu_ctfw.policy import (
    Group,
    Network,
    Policy,
    PolicyError,
    group_from_body,
    network_from_body,
    pair_request_from_body,
    switch_settings_from_body,
    validate_dpid,
    validate_vm_name,
    vm_from_body,
)

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall

API = "/ctfw/v1"
APP_KEY = "ctfw_app"
TOKEN_KEY = "ctfw_api_token"
LOOPBACK_KEY = "ctfw_listens_on_loopback"
MUTATING = ("PUT", "POST", "DELETE")
# Path (under API) -> method -> handler. The routes, the 405 answers and the OpenAPI
# description (openapi.py, checked against this table by the tests) all come from here.
ROUTES: dict[str, dict[str, str]] = {
    "/vms": {"GET": "list_vms"},
    "/vms/{name}": {"GET": "get_vm", "PUT": "put_vm", "DELETE": "delete_vm"},
    "/networks": {"GET": "list_networks"},
    "/networks/{name}": {"GET": "get_network", "PUT": "put_network", "DELETE": "delete_network"},
    "/groups": {"GET": "list_groups"},
    "/groups/{name}": {"GET": "get_group", "PUT": "put_group", "DELETE": "delete_group"},
    "/pairs": {"GET": "list_pairs", "POST": "add_pair"},
    "/pairs/{pair_id}": {"GET": "get_pair", "DELETE": "delete_pair"},
    "/switches": {"GET": "list_switches"},
    "/switches/{dpid}": {"GET": "get_switch", "PUT": "put_switch"},
    "/flows": {"GET": "list_flows"},
    "/events": {"GET": "list_events"},
    "/explain": {"GET": "explain"},
    "/policy": {"GET": "get_policy", "PUT": "put_policy"},
    "/openapi.json": {"GET": "openapi"},
}
# Outside the versioned API: Prometheus' scrape path and the page (not JSON, not in OpenAPI).
OTHER_ROUTES: dict[str, dict[str, str]] = {
    "/metrics": {"GET": "metrics"},
    "/ctfw/ui/": {"GET": "ui_page"},
}
MAX_BODY = 64 * 1024
# PUT /policy carries the whole policy (a VM is about 200 bytes of it): room for thousands.
MAX_POLICY_BODY = 16 * 1024 * 1024
LOG = logging.getLogger("ryu_ctfw.rest")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def json_response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    resp = Response(status=status, headers=headers or {})
    if body is not None:
        resp.content_type = "application/json"
        resp.text = json.dumps(body, indent=2) + "\n"
    return resp


def parse_body(req: Any, limit: int = MAX_BODY) -> Any:
    raw = _read_body(req, limit)
    if len(raw) > limit:
        raise HttpError(413, f"body larger than {limit} bytes")
    if not raw.strip():
        raise HttpError(400, "body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise HttpError(400, f"body is not valid JSON: {e}") from None


def _read_body(req: Any, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the body, sent with Content-Length or chunked.

    webob reads a body without Content-Length only when the server sets
    `wsgi.input_terminated`, which eventlet does not: a chunked body would read as empty.
    eventlet's wsgi.input itself decodes chunks and ends at the last one, so a chunked body
    is read from it directly, with the same cap."""
    encoding = req.environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise HttpError(
                411, f"Transfer-Encoding {encoding!r} is not supported; send the body with "
                "Content-Length or 'Transfer-Encoding: chunked'",
            )  # fmt: skip
        if req.environ.get("CONTENT_LENGTH"):
            # RFC 9112 6.3: a request with both is ambiguous (request smuggling): refuse it.
            raise HttpError(400, "both Content-Length and Transfer-Encoding given; send one")
        body = req.environ["wsgi.input"]
    else:
        if req.content_length is not None and req.content_length > limit:
            raise HttpError(413, f"body larger than {limit} bytes")
        body = req.body_file
    try:
        return bytes(body.read(limit + 1))
    except TimeoutError as e:
        # Silent for the socket timeout, or not all there by the request's deadline.
        raise HttpError(408, f"body not received in time: {e}") from None
    except (OSError, ValueError) as e:
        # A client that stopped sending (socket timeout), cut the connection, or sent
        # malformed chunks (eventlet's ChunkReadError is a ValueError).
        raise HttpError(400, f"body could not be read: {e}") from None


class CtfwController(ControllerBase):
    def __init__(self, req: Any, link: Any, data: dict, **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.fw: Firewall = data[APP_KEY]
        self.plan: dict[str, Any] | None = None  # set for a dry run (dispatch)

    def change(self, mutate: Any) -> Any:
        """Firewall.change, or its dry run when the call asked for one."""
        return self.fw.change(mutate, plan=self.plan)

    @metrics.counts_responses
    def dispatch(self, req: Any, template: str, **params: Any) -> Response:
        """Every route ends here: method check, auth, handler, errors as JSON."""
        if req.environ.get("PATH_INFO", "").endswith("\n"):
            # Routes' `$` also matches before a final newline: "vm3\n" is not "vm3".
            return self.unknown_path(req)
        try:
            self._check_host(req)
            methods = ROUTES.get(template) or OTHER_ROUTES[template]
            if req.method not in methods:
                allow = ", ".join(sorted(methods))
                raise HttpError(
                    405, f"method {req.method} not allowed here; use {allow}", {"Allow": allow}
                )
            if req.method in MUTATING:
                _check_same_origin(req)
                self._authorize(req)
                _check_content_type(req)
                # A dry run fills `plan` (firewall.change) instead of changing anything.
                self.plan = {} if dry_run_asked(req) else None
            resp = getattr(self, methods[req.method])(req, **params)
            return resp if self.plan is None else _dry_run_answer(resp, self.plan)
        except HttpError as e:
            return json_response(e.status, {"error": str(e)}, e.headers)
        except PolicyError as e:
            return json_response(e.status, {"error": str(e)})
        except Exception:
            LOG.exception("REST %s %s failed", req.method, _path(req))
            return json_response(500, {"error": "internal error; see the controller log"})

    def _authorize(self, req: Any) -> None:
        token = self.data.get(TOKEN_KEY)
        if not token:
            return
        given = req.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HttpError(
                401,
                "this call needs 'Authorization: Bearer <api_token>'",
                {"WWW-Authenticate": 'Bearer realm="ryu-ctfw"'},
            )

    def _check_host(self, req: Any) -> None:
        """DNS rebinding: a page at evil.example whose name is rebound to 127.0.0.1 is
        same-origin to the browser, so neither Origin nor CORS stops it reading (or writing);
        but its requests still say `Host: evil.example`. While we listen on loopback only
        a loopback name can be right, so any other Host is refused, reads included."""
        if not self.data.get(LOOPBACK_KEY):
            return
        host = _split_host(req.host)
        if host is None or not is_loopback(host[0]):
            raise HttpError(
                403,
                f"Host {req.host!r} is not a loopback name; the API listens on loopback "
                "and answers only localhost, 127.0.0.1 or [::1] (DNS rebinding guard)",
            )

    @metrics.counts_responses
    def unknown_path(self, req: Any, **_: Any) -> Response:
        return json_response(404, {"error": f"no such resource: {_path(req)}"})

    # --- handlers --------------------------------------------------------------------------
    def list_vms(self, req: Any) -> Response:
        return json_response(
            200, {"vms": [self.fw.vm_view(v) for v in self.fw.policy.vms.values()]}
        )

    def get_vm(self, req: Any, name: str) -> Response:
        return json_response(200, self.fw.vm_view(self.fw.policy.get_vm(name)))

    def put_vm(self, req: Any, name: str) -> Response:
        vm = vm_from_body(name, parse_body(req))
        created, view = self.fw.put_vm(vm, plan=self.plan)
        return json_response(201 if created else 200, view)

    def delete_vm(self, req: Any, name: str) -> Response:
        validate_vm_name(name)
        self.change(lambda policy: policy.delete_vm(name))
        return json_response(204)

    def list_networks(self, req: Any) -> Response:
        policy = self.fw.policy
        return json_response(
            200, {"networks": [self.fw.network_view(n) for n in policy.networks.values()]}
        )

    def get_network(self, req: Any, name: str) -> Response:
        return json_response(200, self.fw.network_view(self.fw.policy.get_network(name)))

    def put_network(self, req: Any, name: str) -> Response:
        net = network_from_body(name, parse_body(req))

        # The stored network (with its id) is taken inside the change: the next change may
        # already have replaced it by the time we answer.
        def put(policy: Policy) -> tuple[bool, Network]:
            return policy.put_network(net), policy.networks[name]

        created, stored = self.change(put)
        return json_response(201 if created else 200, self.fw.network_view(stored))

    def delete_network(self, req: Any, name: str) -> Response:
        validate_vm_name(name, "network")
        self.change(lambda policy: policy.delete_network(name))
        return json_response(204)

    def list_groups(self, req: Any) -> Response:
        return json_response(200, {"groups": [g.to_dict() for g in self.fw.policy.groups.values()]})

    def get_group(self, req: Any, name: str) -> Response:
        return json_response(200, self.fw.policy.get_group(name).to_dict())

    def put_group(self, req: Any, name: str) -> Response:
        group = group_from_body(name, parse_body(req))

        def put(policy: Policy) -> tuple[bool, Group]:  # as in put_network
            return policy.put_group(group), policy.groups[name]

        created, stored = self.change(put)
        return json_response(201 if created else 200, stored.to_dict())

    def delete_group(self, req: Any, name: str) -> Response:
        validate_vm_name(name, "group")
        self.change(lambda policy: policy.delete_group(name))
        return json_response(204)

    def list_pairs(self, req: Any) -> Response:
        policy = self.fw.policy
        return json_response(200, {"pairs": [policy.pair_view(p) for p in policy.pairs.values()]})

    def get_pair(self, req: Any, pair_id: str) -> Response:
        policy = self.fw.policy
        return json_response(200, policy.pair_view(policy.get_pair(_pair_id(pair_id))))

    def add_pair(self, req: Any) -> Response:
        request = pair_request_from_body(parse_body(req))
        # The view is made in the change: what the sides are when the pair was made.
        view = self.change(lambda policy: policy.pair_view(policy.add_pair(request)))
        return json_response(201, view, {"Location": f"{API}/pairs/{view['id']}"})

    def delete_pair(self, req: Any, pair_id: str) -> Response:
        ident = _pair_id(pair_id)
        self.change(lambda policy: policy.delete_pair(ident))
        return json_response(204)

    def list_switches(self, req: Any) -> Response:
        return json_response(200, {"switches": self.fw.switches_view()})

    def get_switch(self, req: Any, dpid: str) -> Response:
        return json_response(200, self.fw.switch_view(validate_dpid(dpid)))

    def put_switch(self, req: Any, dpid: str) -> Response:
        ident = validate_dpid(dpid)  # before the body: a bad path is the first thing wrong
        port = switch_settings_from_body(parse_body(req))
        return json_response(200, self.fw.set_fabric_port(ident, port, plan=self.plan))

    def list_flows(self, req: Any) -> Response:
        return json_response(200, {"flows": self.fw.flows_view()})

    def list_events(self, req: Any) -> Response:
        query = events.query_from_params(_params(req))
        return json_response(200, {"events": self.fw.events.select(query)})

    def explain(self, req: Any) -> Response:
        return json_response(200, explain.answer(self.fw, _params(req)))

    def get_policy(self, req: Any) -> Response:
        return json_response(200, policydoc.export(self.fw))

    def put_policy(self, req: Any) -> Response:
        body = parse_body(req, MAX_POLICY_BODY)
        return json_response(200, policydoc.apply(self.fw, body, plan=self.plan))

    def openapi(self, req: Any) -> Response:
        return json_response(200, openapi.SPEC)

    def metrics(self, req: Any) -> Response:
        body, content_type = metrics.scrape(self.fw)
        resp = Response(status=200, body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    def ui_page(self, req: Any) -> Response:
        resp = Response(status=200, body=ui.page())
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
        resp.headers["Cache-Control"] = "no-cache"
        return resp


def _params(req: Any) -> dict[str, str]:
    """The query string as a dict; a parameter given twice is refused (which one meant?)."""
    out: dict[str, str] = {}
    for key, value in req.GET.items():
        if key in out:
            raise HttpError(400, f"query parameter {key!r} given more than once")
        out[key] = value
    return out


def dry_run_asked(req: Any) -> bool:
    """?dry_run=true on a mutating call; any other query parameter (a misspelt option) or
    value is refused, before anything is done."""
    params = _params(req)
    unknown = sorted(set(params) - {"dry_run"})
    if unknown:
        raise HttpError(
            400, f"unknown query parameter(s): {', '.join(unknown)}; a change takes only dry_run"
        )
    value = params.get("dry_run", "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise HttpError(400, f"invalid dry_run {params['dry_run']!r}: true or false")
    return value in ("true", "1")


def _dry_run_answer(resp: Response, plan: dict[str, Any]) -> Response:
    """What a dry run answers: 200, the answer the real call would have given, and the plan
    (flows per switch, pairs cut). Errors are answered as the real call would (4xx)."""
    if resp.status_int >= 300:
        return resp
    body = json.loads(resp.text) if resp.text else None
    return json_response(200, {"dry_run": True, "status": resp.status_int, "answer": body, **plan})


def _path(req: Any) -> str:
    """The request path for messages; a path that is not UTF-8 must not raise."""
    raw = req.environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


# --- cross-site and rebinding guards ---------------------------------------------------------
# The API has no token by default and listens on 127.0.0.1, which every web page open in a
# browser on the host can reach. Browsers mark what they send: Origin on every cross-origin
# write (and on same-origin POST/PUT/DELETE), Sec-Fetch-Site on everything (since 2020-23);
# curl, urllib and other scripts send neither. So a write that a browser marks as coming
# from another site is refused, and unmarked requests work exactly as before.
DEFAULT_PORTS = {"http": 80, "https": 443}
CROSS_SITE = ("cross-site", "same-site")  # same-site: another port or subdomain, not us
JSON = "application/json"
# What curl -d and urllib send by default (and requests' data= sends no Content-Type).
SCRIPT_TYPES = ("", "application/x-www-form-urlencoded")


def _split_host(hostport: str) -> tuple[str, int | None] | None:
    """'Host: a:8080' / '[::1]:80' -> (host lower-cased, port or None); None if malformed."""
    try:
        parts = urlsplit("//" + hostport)
        return (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return None


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int | None]:
    return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme)


def _own_origin(req: Any) -> tuple[str, str, int | None] | None:
    """scheme://host:port this request was addressed to (the Host header, as browsers see it)."""
    host = _split_host(req.host)
    return None if host is None else _origin(req.scheme, *host)


def _parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """An Origin header as (scheme, host, port); None for 'null' or anything malformed."""
    try:
        parts = urlsplit(value.strip())
        if parts.path or parts.query or parts.fragment or not parts.hostname:
            return None
        return _origin(parts.scheme.lower(), parts.hostname.rstrip("."), parts.port)
    except ValueError:
        return None


def _check_same_origin(req: Any) -> None:
    """CSRF: refuse a write a browser says comes from another origin or site (nothing has
    changed yet: this runs before the handler). No Origin at all is a script: allowed."""
    site = req.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in CROSS_SITE:
        raise HttpError(
            403, f"cross-site write refused: Sec-Fetch-Site is {site!r}; "
            "this API takes changes only from its own origin or from non-browser clients",
        )  # fmt: skip
    origin = req.headers.get("Origin")
    if origin is None:
        return
    own = _own_origin(req)
    if own is None or _parse_origin(origin) != own:
        where = f"{own[0]}://{req.host}" if own else "this API"
        raise HttpError(
            403, f"cross-origin write refused: Origin {origin!r} is not {where}; "
            "this API takes changes only from its own origin or from non-browser clients",
        )  # fmt: skip


def _from_a_browser(req: Any) -> bool:
    return "Origin" in req.headers or any(k.lower().startswith("sec-fetch-") for k in req.headers)


def _check_content_type(req: Any) -> None:
    """A body must be declared JSON. Without this, a page can send a JSON text as text/plain
    (a "simple" request: no CORS preflight, so the browser sends it without asking; Origin
    is then the only line of defence, and old browsers omit it on form posts).

    Decision: requests that no browser marked (no Origin, no Sec-Fetch-*) may also send no
    Content-Type or application/x-www-form-urlencoded, which is what `curl -d`, urllib and
    requests send unless told otherwise. Every existing script and the README's examples
    keep working, as the API promised, and it opens nothing: a browser sends Sec-Fetch-*
    (or Origin) with every write, and an HTML form, the one writer that may lack both in an
    old browser, percent-encodes its fields, so its body is never valid JSON. text/plain
    and everything else are refused from everyone: no client sends them by accident."""
    if not _has_body(req):
        return
    declared = _declared_content_type(req)
    media = declared.partition(";")[0].strip().lower()
    if media == JSON or (media in SCRIPT_TYPES and not _from_a_browser(req)):
        return
    given = f"Content-Type {declared!r}" if declared else "no Content-Type"
    raise HttpError(415, f"{given}: the body must be sent as 'Content-Type: {JSON}'")


def _declared_content_type(req: Any) -> str:
    """The Content-Type the client sent, "" for none. eventlet's server fills CONTENT_TYPE
    with 'text/plain' when none was sent (the email package's default), so a DELETE from
    curl would look like a text/plain post; its headers_raw has what really came."""
    raw = req.environ.get("headers_raw")
    if raw is not None:
        return next((v for k, v in raw if k.lower() == "content-type"), "")
    return str(req.environ.get("CONTENT_TYPE", ""))


def _has_body(req: Any) -> bool:
    """A declared body: a length, chunks, or a Content-Type (empty bodies are 400 later)."""
    return bool(
        req.content_length
        or req.environ.get("HTTP_TRANSFER_ENCODING")
        or _declared_content_type(req)
    )


def _pair_id(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise HttpError(404, f"no pair with id {text!r}")
    return int(text)


def listens_on_loopback(host: str) -> bool:
    """ryu's --wsapi-host: '127.0.0.1' (our default), '::1', 'localhost' are loopback;
    '0.0.0.0', '' or a real address are not (then Host names can be anything)."""
    return is_loopback(host.strip("[]").lower().rstrip("."))


def register(
    wsgi: WSGIApplication,
    fw: Firewall,
    api_token: str | None = None,
    listen_host: str | None = None,
) -> None:
    """listen_host: where the API listens; by default ryu's --wsapi-host (parsed by the time
    ryu-manager creates the apps). It only decides whether the rebinding guard applies."""
    if listen_host is None:
        listen_host = cfg.CONF.wsapi_host
    wsgi.register(
        CtfwController,
        {APP_KEY: fw, TOKEN_KEY: api_token, LOOPBACK_KEY: listens_on_loopback(listen_host)},
    )
    for template in ROUTES:
        # Any method: dispatch() answers a wrong one with 405 (Ryu's own routing would 404).
        wsgi.mapper.connect(
            "ctfw", API + template, controller=CtfwController, action="dispatch", template=template
        )
    for path in OTHER_ROUTES:
        wsgi.mapper.connect(
            "ctfw_other", path, controller=CtfwController, action="dispatch", template=path
        )
    # Registered last so that it only catches what no route above matched.
    wsgi.mapper.connect(
        "ctfw_unknown", "/ctfw{path:[\\s\\S]*}", controller=CtfwController, action="unknown_path"
    )
