"""The REST server's descriptor and connection limits (wsgi_limits.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

from ryu.app import wsgi as ryu_wsgi

from ryu_ctfw import app, wsgi_limits


def test_connections_stay_below_the_descriptor_limit() -> None:
    assert wsgi_limits.max_connections(1024) == 1024 - wsgi_limits.RESERVED_FDS
    assert wsgi_limits.max_connections(20_000) == wsgi_limits.MAX_CONNECTIONS
    assert wsgi_limits.max_connections(300) == 150  # a tiny limit keeps half free
    assert wsgi_limits.max_connections(1) == 1
    assert wsgi_limits.max_connections(resource.RLIM_INFINITY) == wsgi_limits.MAX_CONNECTIONS


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    # In a child: the limit of this process stays as it is.
    code = (
        "import resource\n"
        "s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, h), h))\n"
        "from ryu_ctfw import wsgi_limits\n"
        "print(wsgi_limits.raise_nofile_limit() == (h, h) or h == resource.RLIM_INFINITY)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_ryu_starts_no_unlimited_server_of_its_own() -> None:
    """ryu.app.wsgi.start_service serves only a context that *is* WSGIApplication; the app's
    context is a subclass, which the app serves itself with the limits."""
    context = app.CtfwApp._CONTEXTS["wsgi"]
    assert context is wsgi_limits.LimitedWSGIApplication
    assert issubclass(context, ryu_wsgi.WSGIApplication)

    class Manager:
        contexts = {"wsgi": context()}  # noqa: RUF012

    assert ryu_wsgi.start_service(Manager()) is None
