"""The whole policy as one JSON document: export, and replace (issue 13, point 5).

Placeholder until that work lands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ryu_ctfw.policy import PolicyError

if TYPE_CHECKING:
    from ryu_ctfw.firewall import Firewall


class NotYet(PolicyError):
    status = 501


def export(fw: Firewall) -> dict[str, Any]:
    raise NotYet("policy export is not implemented yet")


def apply(fw: Firewall, body: Any, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    raise NotYet("policy apply is not implemented yet")
