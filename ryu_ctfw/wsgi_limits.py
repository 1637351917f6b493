"""The REST API's WSGI server, with the limits that keep it reachable.

Ryu's own server (ryu.app.wsgi.start_service -> hub.WSGIServer.serve_forever) calls
`eventlet.wsgi.server(sock, app, log)` with nothing else: no socket timeout, so an idle or
slow client holds its green thread forever, and eventlet's default pool of 1,024 green
threads, which is also ryu-manager's usual descriptor limit (a systemd service's soft
RLIMIT_NOFILE). 1,024 idle TCP connections then leave every real client unanswered, and
the OpenFlow listener and the state file can run out of descriptors.

How this changes it without editing site-packages or patching Ryu: `start_service` only
starts a server for a context whose class *is* `WSGIApplication` (it compares
`instance.__class__ == WSGIApplication`). The app declares this module's subclass as its
"wsgi" context instead, so Ryu starts none, and the app starts `LimitedWSGIServer` itself
(CtfwApp.start): Ryu's WSGIServer (same --wsapi-host/--wsapi-port, same listening socket,
same "wsgi starting up" log line) whose serve_forever passes the limits to eventlet.
(The cost: another Ryu app in the same ryu-manager that asks for the plain
WSGIApplication context would clash with ours; ryu-ctfw runs alone.)

The limits:
- the soft descriptor limit is raised to the hard one at start (`raise_nofile_limit`);
- every client socket read or write times out after SOCKET_TIMEOUT seconds, so idle
  connections, clients that stop mid-request and idle keep-alive connections are closed;
- at most `max_connections()` connections are served at once, always RESERVED_FDS below
  the descriptor limit, so the OpenFlow listener, switch connections, the state file and
  the log always have descriptors. Connections beyond that wait in the kernel's listen
  backlog (they cost the process no descriptor) until a slot frees.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

import eventlet.wsgi
from ryu.app import wsgi as ryu_wsgi
from ryu.lib import hub

LOG = logging.getLogger("ryu_ctfw.wsgi_limits")

SOCKET_TIMEOUT = 10.0  # seconds a client may stay silent, before or within a request
RESERVED_FDS = 256  # kept free for OpenFlow, the state file and journal, logs, Ryu
MAX_CONNECTIONS = 8192  # green threads cost memory; more than this is an attack anyway


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit: Linux refuses more than fs.nr_open (1,048,576 by default).
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            LOG.warning("ryu-ctfw: could not raise the descriptor limit to %d: %s", target, e)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def max_connections(nofile_soft: int) -> int:
    """Concurrent REST connections for a descriptor limit: RESERVED_FDS below it (half of
    it on a limit under twice that), never more than MAX_CONNECTIONS, at least 1."""
    if nofile_soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    reserve = min(RESERVED_FDS, nofile_soft // 2)
    return max(1, min(MAX_CONNECTIONS, nofile_soft - reserve))


class LimitedWSGIApplication(ryu_wsgi.WSGIApplication):
    """Ryu's WSGIApplication under another class, so that Ryu's start_service leaves the
    serving to the app (see the module docstring). Routing and controllers are Ryu's."""


class LimitedWSGIServer(ryu_wsgi.WSGIServer):
    """Ryu's WSGIServer (binds --wsapi-host:--wsapi-port) serving with limits."""

    def __init__(self, application: ryu_wsgi.WSGIApplication, max_size: int) -> None:
        super().__init__(application)
        self.max_size = max_size

    def serve_forever(self) -> None:
        self.logger = hub.LoggingWrapper()
        eventlet.wsgi.server(
            self.server,
            self.handle,
            self.logger,
            max_size=self.max_size,
            socket_timeout=SOCKET_TIMEOUT,
        )


def start(application: ryu_wsgi.WSGIApplication, logger: logging.Logger) -> Any:
    """Raise the descriptor limit, bind the API's socket (an error here stops the start, as
    Ryu's own server would), and serve it in a green thread, which is returned."""
    soft, hard = raise_nofile_limit()
    size = max_connections(soft)
    server = LimitedWSGIServer(application, size)
    logger.info(
        "ryu-ctfw: REST API serves at most %d connections at once, %.0f s socket timeout"
        " (descriptor limit %d, hard %d)",
        size,
        SOCKET_TIMEOUT,
        soft,
        hard,
    )
    return hub.spawn(server)
