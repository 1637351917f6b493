"""Explain: why a connection from one endpoint to another is allowed or denied.

Placeholder until the explain work lands (issue 13, point 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ryu_ctfw.policy import PolicyError

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall


class NotYet(PolicyError):
    status = 501


def answer(fw: Firewall, params: dict[str, str]) -> dict[str, Any]:
    raise NotYet("explain is not implemented yet")
