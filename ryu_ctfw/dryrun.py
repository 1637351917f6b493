"""What a change would do, without doing it (issue 13, point 4). Placeholder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall
    from ryu_ctfw.policy import Policy


def plan(fw: Firewall, before: Policy, after: Policy) -> dict[str, Any]:
    return {"switches": [], "cut": []}
