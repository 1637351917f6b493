"""GET /ctfw/ui/: one static page (ui/index.html), no build step."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def page() -> bytes:
    return resources.files("ryu_ctfw").joinpath("ui/index.html").read_bytes()
