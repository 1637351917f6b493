"""GET /metrics in the Prometheus text format (issue 13, point 2). Placeholder."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall


def scrape(fw: Firewall) -> tuple[bytes, str]:
    return b"", "text/plain; version=0.0.4; charset=utf-8"
