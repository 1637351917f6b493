"""One in-process request to the REST app, for the unit tests."""

from __future__ import annotations

import json
from typing import Any

from ryu.app.wsgi import WSGIApplication
from webob import Request, Response

API = "/ctfw/v1"


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
