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

from ryu.app.wsgi import ControllerBase, Response, WSGIApplication

from ryu_ctfw import openapi
from ryu_ctfw.policy import PolicyError, pair_request_from_body, validate_vm_name, vm_from_body

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall

API = "/ctfw/v1"
APP_KEY = "ctfw_app"
TOKEN_KEY = "ctfw_api_token"
MUTATING = ("PUT", "POST", "DELETE")
# Path (under API) -> method -> handler. The routes, the 405 answers and the OpenAPI
# description (openapi.py, checked against this table by the tests) all come from here.
ROUTES: dict[str, dict[str, str]] = {
    "/vms": {"GET": "list_vms"},
    "/vms/{name}": {"GET": "get_vm", "PUT": "put_vm", "DELETE": "delete_vm"},
    "/pairs": {"GET": "list_pairs", "POST": "add_pair"},
    "/pairs/{pair_id}": {"GET": "get_pair", "DELETE": "delete_pair"},
    "/switches": {"GET": "list_switches"},
    "/flows": {"GET": "list_flows"},
    "/openapi.json": {"GET": "openapi"},
}
MAX_BODY = 64 * 1024
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


def parse_body(req: Any) -> Any:
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    raw = req.body_file.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    if not raw.strip():
        raise HttpError(400, "body is empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise HttpError(400, f"body is not valid JSON: {e}") from None


class CtfwController(ControllerBase):
    def __init__(self, req: Any, link: Any, data: dict, **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.fw: Firewall = data[APP_KEY]

    def dispatch(self, req: Any, template: str, **params: Any) -> Response:
        """Every route ends here: method check, auth, handler, errors as JSON."""
        if req.environ.get("PATH_INFO", "").endswith("\n"):
            # Routes' `$` also matches before a final newline: "vm3\n" is not "vm3".
            return self.unknown_path(req)
        try:
            methods = ROUTES[template]
            if req.method not in methods:
                allow = ", ".join(sorted(methods))
                raise HttpError(
                    405, f"method {req.method} not allowed here; use {allow}", {"Allow": allow}
                )
            if req.method in MUTATING:
                self._authorize(req)
            return getattr(self, methods[req.method])(req, **params)
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
        created = self.fw.put_vm(vm)
        return json_response(201 if created else 200, self.fw.vm_view(self.fw.policy.vms[name]))

    def delete_vm(self, req: Any, name: str) -> Response:
        validate_vm_name(name)
        self.fw.change(lambda policy: policy.delete_vm(name))
        return json_response(204)

    def list_pairs(self, req: Any) -> Response:
        return json_response(200, {"pairs": [p.to_dict() for p in self.fw.policy.pairs.values()]})

    def get_pair(self, req: Any, pair_id: str) -> Response:
        return json_response(200, self.fw.policy.get_pair(_pair_id(pair_id)).to_dict())

    def add_pair(self, req: Any) -> Response:
        request = pair_request_from_body(parse_body(req))
        pair = self.fw.change(lambda policy: policy.add_pair(request))
        return json_response(201, pair.to_dict(), {"Location": f"{API}/pairs/{pair.id}"})

    def delete_pair(self, req: Any, pair_id: str) -> Response:
        ident = _pair_id(pair_id)
        self.fw.change(lambda policy: policy.delete_pair(ident))
        return json_response(204)

    def list_switches(self, req: Any) -> Response:
        return json_response(200, {"switches": self.fw.switches_view()})

    def list_flows(self, req: Any) -> Response:
        return json_response(200, {"flows": self.fw.flows_view()})

    def openapi(self, req: Any) -> Response:
        return json_response(200, openapi.SPEC)


def _path(req: Any) -> str:
    """The request path for messages; a path that is not UTF-8 must not raise."""
    raw = req.environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _pair_id(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise HttpError(404, f"no pair with id {text!r}")
    return int(text)


def register(wsgi: WSGIApplication, fw: Firewall, api_token: str | None = None) -> None:
    wsgi.register(CtfwController, {APP_KEY: fw, TOKEN_KEY: api_token})
    for template in ROUTES:
        # Any method: dispatch() answers a wrong one with 405 (Ryu's own routing would 404).
        wsgi.mapper.connect(
            "ctfw", API + template, controller=CtfwController, action="dispatch", template=template
        )
    # Registered last so that it only catches what no route above matched.
    wsgi.mapper.connect(
        "ctfw_unknown", "/ctfw{path:[\\s\\S]*}", controller=CtfwController, action="unknown_path"
    )
