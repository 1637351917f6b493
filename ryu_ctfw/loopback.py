"""Whether a host is this machine's loopback: one rule for the REST layer's rebinding guard
and the CLI (which talks to a loopback controller without any proxy). Pure."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """'localhost', 127.x or ::1 (already lower-cased, brackets and final dot removed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
