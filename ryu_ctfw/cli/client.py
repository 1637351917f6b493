"""The REST client behind `ctfw`: one JSON call, and what its failure means.

Standard library only (urllib), so the CLI needs nothing the package does not already have.
Each failure is an exception that carries the exit code the CLI ends with (see EXIT_CODES).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ryu_ctfw.loopback import is_loopback

API = "/ctfw/v1"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 60.0  # a change waits for its switches; the API answers once they confirmed


class Exit(IntEnum):
    """What `ctfw` exits with. `ctfw --help` lists these (EXIT_CODES)."""

    OK = 0  # done; explain: allowed
    REFUSED = 1  # the API refused the request (4xx other than 409): bad input, unknown name
    USAGE = 2  # the command line is wrong, or a file cannot be read (nothing was sent)
    UNAVAILABLE = 3  # no answer (unreachable, timeout) or the controller failed (5xx)
    DENIED = 4  # explain: the connection would be denied
    CONFLICT = 5  # 409: it exists already, is in use, or conflicts with something
    INTERRUPTED = 130  # Ctrl-C (but `events --follow` ends with 0 on Ctrl-C)


EXIT_CODES = (
    (Exit.OK, "done (explain: the connection is allowed)"),
    (Exit.REFUSED, "the API refused the request (400 bad input, 401 token, 404 unknown, ...);"
     " nothing changed"),
    (Exit.USAGE, "usage error: wrong command line or unreadable file; nothing was sent"),
    (Exit.UNAVAILABLE, "cannot reach the controller, no answer in time, or it failed"
     " (5xx: 502 a switch refused the change, 504 not confirmed in time)"),
    (Exit.DENIED, "explain: the connection would be denied"),
    (Exit.CONFLICT, "conflict (409): the name or pair exists, or it is in use; nothing changed"),
    (Exit.INTERRUPTED, "interrupted by Ctrl-C (events --follow exits 0)"),
)  # fmt: skip


class CliError(Exception):
    """Ends the command with `code`, saying `message` on standard error."""

    code: Exit = Exit.UNAVAILABLE

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CliError):
    code = Exit.USAGE


class Unreachable(CliError):
    code = Exit.UNAVAILABLE


class ApiError(CliError):
    """The API answered with an error status; `message` is its {"error": ...}."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message, exit_for_status(status))
        self.status = status
        self.body = body


def exit_for_status(status: int) -> Exit:
    if status == 409:
        return Exit.CONFLICT
    if 400 <= status < 500:
        return Exit.REFUSED
    return Exit.UNAVAILABLE


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the decoded JSON; None for an empty answer (204)


def base_url(url: str) -> str:
    """The controller's root URL: http://host:port, whether or not /ctfw/v1 was given."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid --url {url!r}: expected http://HOST:PORT")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as e:
        raise UsageError(f"invalid --url {url!r}: {e}") from None
    return url.removesuffix(API)


class Client:
    """JSON calls to one controller. `dry_run` adds ?dry_run=true to every mutating call."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.url = base_url(url)
        self.token = token or None
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A proxy from the environment cannot reach the controller's loopback address.
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
        self.opener = urllib.request.build_opener(*handlers)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.call("GET", path, params=params).body

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Answer:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        if dry_run:
            query["dry_run"] = "true"
        url = self.url + API + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return self._send(req, method, path)

    def _send(self, req: urllib.request.Request, method: str, path: str) -> Answer:
        where = f"{method} {API}{path}"
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return Answer(resp.status, _decode(resp.read(), where))
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                body = None
            message = body.get("error") if isinstance(body, dict) else None
            if not isinstance(message, str):
                text = raw.decode("utf-8", "replace").strip().splitlines()
                message = f"{where}: HTTP {e.code} {e.reason}" + (f": {text[0]}" if text else "")
            raise ApiError(e.code, message, body) from None
        except TimeoutError:
            raise Unreachable(
                f"no answer from the controller at {self.url} within {self.timeout:g} s"
                f" ({where}); a change may still have been applied: check with a get"
            ) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise Unreachable(
                    f"no answer from the controller at {self.url} within {self.timeout:g} s"
                ) from None
            raise Unreachable(f"cannot reach the controller at {self.url}: {reason}") from None
        except (OSError, ValueError) as e:  # connection reset mid-answer, bad status line
            raise Unreachable(f"the connection to {self.url} failed ({where}): {e}") from None


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(raw: bytes, where: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise Unreachable(f"{where}: the answer is not JSON; is this ryu-ctfw's API?") from None
