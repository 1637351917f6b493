"""One in-process request to the REST app, for the unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryu.app.wsgi import WSGIApplication
from webob import Request, Response

API = "/ctfw/v1"

# The unit tests' populated policy, as requests: vm1..vm3, the network "outside" behind
# uplink0, the group "web" of vm1, and pair 1 (vm1 -> vm2).
OUTSIDE = {"port": "uplink0", "cidrs": ["198.19.0.0/24", "2001:db8:19::/48"]}
POPULATE = [
    ("PUT", "/vms/vm1", {"port": "tap2"}),
    ("PUT", "/vms/vm2", {"port": "tap4"}),
    ("PUT", "/vms/vm3", {"port": "tap5"}),
    ("PUT", "/networks/outside", OUTSIDE),
    ("PUT", "/groups/web", {"members": ["vm1"]}),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}),
]

WEB_TO_DNS = {"initiator": "web", "responder": "outside", "protocol": "udp", "ports": "53"}
# A whole policy document (PUT /policy): vm1 and vm2 kept, vm3, the network and the group
# removed, pair 1 kept and vm2 -> vm1 added.
POLICY_DOC = {
    "vms": [{"name": "vm1", "port": "tap2"}, {"name": "vm2", "port": "tap4"}],
    "groups": [],
    "networks": [],
    "pairs": [
        {"initiator": "vm1", "responder": "vm2"},
        {"initiator": "vm2", "responder": "vm1", "protocol": "tcp", "ports": "22"},
    ],
}
# Every mutating route, with a body that succeeds on that populated policy: the auth and
# cross-site tests run each of them.
MUTATIONS = [
    ("PUT", "/vms/vm9", {"port": "tap9"}, 201),
    ("PUT", "/vms/vm3", {"port": "tap6"}, 200),
    ("DELETE", "/vms/vm3", None, 204),
    ("PUT", "/networks/net9", {"port": "uplink9", "cidrs": ["198.19.9.0/24"]}, 201),
    ("PUT", "/networks/outside", {"port": "uplink0", "cidrs": ["198.19.0.0/24"]}, 200),
    ("DELETE", "/networks/outside", None, 204),
    ("PUT", "/groups/grp9", {"members": ["vm2", "vm3"]}, 201),
    ("PUT", "/groups/web", {"members": []}, 200),
    ("DELETE", "/groups/web", None, 204),
    ("POST", "/pairs", {"initiator": "vm2", "responder": "vm3"}, 201),
    ("POST", "/pairs", WEB_TO_DNS, 201),
    ("DELETE", "/pairs/1", None, 204),
    ("PUT", "/switches/0000000000000001", {"fabric_port": "eth1"}, 200),  # not connected yet
    ("PUT", "/switches/00005254006084FF", {"fabric_port": None}, 200),  # none to clear
    ("PUT", "/policy", POLICY_DOC, 200),
]
# "POST /pairs", "POST /pairs #2": a route tried twice keeps readable, distinct ids.
MUTATION_IDS = [
    f"{m} {p}" + (f" #{n}" if n > 1 else "")
    for i, (m, p, _, _) in enumerate(MUTATIONS)
    for n in [sum((m, p) == (m2, p2) for m2, p2, _, _ in MUTATIONS[: i + 1])]
]


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
