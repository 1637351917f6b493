"""The connection log: events (denied attempts, and admitted connections of pairs that ask
for it) in a bounded ring, and the queries GET /ctfw/v1/events answers.

Events come from the switch as metered packet-ins (compiler.py, "the log table"); the
switch side turns each into an Event; this module keeps and selects them."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ryu_ctfw.policy import InvalidInput

RING_SIZE = 10_000
DEFAULT_LIMIT = 100
MAX_LIMIT = RING_SIZE
VERDICTS = ("allowed", "denied")
LOG = logging.getLogger("ryu_ctfw.events")


@dataclass(frozen=True)
class Event:
    """One line of the connection log, as the API shows it."""

    id: int  # rises by one per event: `after=` resumes a follow without gaps or repeats
    time: float  # seconds since the epoch
    switch: str  # the bridge's name, else its dpid
    vm: str | None  # the VM whose port the packet came in by
    peer: str | None  # the VM, group or network it was for
    protocol: str
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    verdict: str  # "allowed" | "denied"
    reason: str
    pair: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    verdict: str | None = None
    vm: str | None = None  # the event's vm or peer
    since: float | None = None  # time >= since
    after: int | None = None  # id > after
    limit: int = DEFAULT_LIMIT


QUERY_PARAMS = ("verdict", "vm", "since", "after", "limit")


def query_from_params(params: Mapping[str, str]) -> Query:
    """GET /events' query string; anything unknown or malformed is refused by name."""
    keys = list(params.keys())
    unknown = sorted(set(keys) - set(QUERY_PARAMS))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"events takes {', '.join(QUERY_PARAMS)}"
        )
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InvalidInput(f"query parameter(s) given more than once: {', '.join(twice)}")
    verdict = params.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise InvalidInput(f"invalid verdict {verdict!r}: allowed or denied")
    since = params.get("since")
    since_value = None
    if since is not None:
        try:
            since_value = float(since)
        except ValueError:
            since_value = math.nan
        if not math.isfinite(since_value) or since_value < 0:
            raise InvalidInput(f"invalid since {since!r}: seconds since the epoch")
    return Query(
        verdict=verdict,
        vm=params.get("vm") or None,
        since=since_value,
        after=_count(params, "after", 0, None),
        limit=_count(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT,
    )


def _count(params: Mapping[str, str], key: str, lo: int, hi: int | None) -> int | None:
    text = params.get(key)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 12 or int(text) < lo or (hi and int(text) > hi):
        bound = f"{lo}-{hi}" if hi else f"{lo} or more"
        raise InvalidInput(f"invalid {key} {text!r}: a whole number, {bound}")
    return int(text)


class EventLog:
    """The latest events, oldest first; each is also logged as one JSON line."""

    def __init__(self, size: int = RING_SIZE, logger: logging.Logger | None = None) -> None:
        self.ring: deque[Event] = deque(maxlen=size)
        self.next_id = 1
        self.log = logger or LOG
        self.counts: dict[tuple[str, str], int] = {}  # (verdict, reason) -> events seen

    def add(self, **fields: Any) -> Event:
        fields.setdefault("time", time.time())
        event = Event(id=self.next_id, **fields)
        self.next_id += 1
        self.ring.append(event)
        key = (event.verdict, event.reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.log.info("event %s", json.dumps(event.to_dict(), sort_keys=True))
        return event

    def select(self, query: Query) -> list[dict[str, Any]]:
        """The newest `limit` events that match, oldest first."""
        out: list[Event] = []
        for event in reversed(self.ring):
            if query.after is not None and event.id <= query.after:
                break
            if query.since is not None and event.time < query.since:
                break
            if query.verdict is not None and event.verdict != query.verdict:
                continue
            if query.vm is not None and query.vm not in (event.vm, event.peer):
                continue
            out.append(event)
            if len(out) >= query.limit:
                break
        return [e.to_dict() for e in reversed(out)]
