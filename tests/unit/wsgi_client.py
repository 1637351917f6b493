"""One in-process request to the REST app, for the unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryu.app.wsgi import WSGIApplication
from webob import Request, Response

API = "/ctfw/v1"

# Every mutating route, with a body that succeeds on the unit tests' populated policy
# (vm1..vm3, pair 1): the auth and cross-site tests run each of them.
MUTATIONS = [
    ("PUT", "/vms/vm9", {"port": "tap9"}, 201),
    ("PUT", "/vms/vm3", {"port": "tap6"}, 200),
    ("DELETE", "/vms/vm3", None, 204),
    ("POST", "/pairs", {"initiator": "vm2", "responder": "vm3"}, 201),
    ("DELETE", "/pairs/1", None, 204),
]
MUTATION_IDS = [f"{m} {p}" for m, p, _, _ in MUTATIONS]


def call(
    wsgi: WSGIApplication,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    environ: dict[str, Any] | None = None,
) -> Response:
    """`path` is under /ctfw/v1 unless it starts with /ctfw; a non-bytes body goes as JSON."""
    url = path if path.startswith("/ctfw") else API + path
    kwargs: dict[str, Any] = {"method": method}
    if body is not None:
        kwargs["body"] = body if isinstance(body, bytes) else json.dumps(body).encode()
    if headers:
        kwargs["headers"] = headers
    req = Request.blank(url, **kwargs)
    if environ:
        req.environ.update(environ)
    return req.get_response(wsgi)


@dataclass
class App:
    """The REST app under test with its firewall and state file; each test module's `Api`
    adds the `call` shape it needs on top of `request`."""

    wsgi: WSGIApplication
    fw: Any  # ryu_ctfw.firewall.Firewall
    state_file: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        environ: dict[str, Any] | None = None,
    ) -> Response:
        return call(self.wsgi, method, path, body, headers, environ)
