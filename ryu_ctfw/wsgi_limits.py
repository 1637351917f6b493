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
- a request must arrive whole (request line, headers and body) within REQUEST_DEADLINE
  seconds of the server starting to wait for it, so a client that trickles a byte now
  and then, never silent for SOCKET_TIMEOUT, cannot hold its slot either (it gets a 408
  and the connection is closed); the time the app takes to answer is not counted;
- at most `max_connections()` connections are served at once, always RESERVED_FDS below
  the descriptor limit, so the OpenFlow listener, switch connections, the state file and
  the log always have descriptors. Connections beyond that wait in the kernel's listen
  backlog (they cost the process no descriptor) until a slot frees.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import eventlet
import eventlet.wsgi
from ryu.app import wsgi as ryu_wsgi
from ryu.lib import hub

LOG = logging.getLogger("ryu_ctfw.wsgi_limits")

SOCKET_TIMEOUT = 10.0  # seconds a client may stay silent, before or within a request
REQUEST_DEADLINE = 20.0  # seconds to send a whole request (a 64 KiB body at 3.2 KB/s)
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


class RequestTooSlow(TimeoutError):
    """The client did not send its whole request within REQUEST_DEADLINE."""


_408_BODY = b'{"error": "request not received in time; send it whole"}\n'
RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_408_BODY), _408_BODY)
)


class _DeadlineInput:
    """wsgi.input whose reads end at the request's deadline (a TimeoutError the REST layer
    answers with 408); everything else is eventlet's Input."""

    def __init__(self, inner: Any, deadline: float, expired: Callable[[], None]) -> None:
        self._inner = inner
        self._deadline = deadline
        self._expired = expired  # the connection is closed after the answer

    def _bounded(self, method: str, *args: Any) -> Any:
        error = RequestTooSlow(f"request body not received within {REQUEST_DEADLINE:.0f} s")
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise error
            with eventlet.Timeout(left, error):
                return getattr(self._inner, method)(*args)
        except TimeoutError:
            # Not waiting for the rest of the body: eventlet would read it, unbounded, to
            # keep the connection.
            self._expired()
            raise

    def read(self, *args: Any) -> bytes:
        return self._bounded("read", *args)

    def readline(self, *args: Any) -> bytes:
        return self._bounded("readline", *args)

    def readlines(self, *args: Any) -> list[bytes]:
        return self._bounded("readlines", *args)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class DeadlineProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP handler with a deadline for receiving each request whole: the
    request line and headers are read under a timer, the body through _DeadlineInput;
    the timer stops when the app is called, so a slow change is never cut."""

    def handle_one_request(self) -> None:
        self._ctfw_deadline = time.monotonic() + REQUEST_DEADLINE
        self._ctfw_timer = eventlet.Timeout(REQUEST_DEADLINE, RequestTooSlow("headers"))
        try:
            super().handle_one_request()
        except RequestTooSlow:
            self.close_connection = 1
            try:
                self.wfile.write(RESPONSE_408)
                self.wfile.flush()
            except OSError:
                pass
        finally:
            self._ctfw_timer.cancel()

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["wsgi.input"] = _DeadlineInput(env["wsgi.input"], self._ctfw_deadline, self._close)
        return env

    def _close(self) -> None:
        self.close_connection = 1

    def handle_one_response(self) -> None:
        self._ctfw_timer.cancel()
        super().handle_one_response()


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
            protocol=DeadlineProtocol,
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
