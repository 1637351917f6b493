"""The API token: with register(wsgi, fw, token), PUT/POST/DELETE need 'Bearer <token>'.

Reading needs no token, a refused call changes nothing, and without a token configured
nothing is asked for.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import wsgi_client
from hypothesis import given, settings
from hypothesis import strategies as st
from ryu.app.wsgi import WSGIApplication
from webob import Response

from ryu_ctfw import rest, store
from ryu_ctfw.firewall import Firewall

API = rest.API
TOKEN = "s3cret"
GOOD = f"Bearer {TOKEN}"


class Api(wsgi_client.App):
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        authorization: str | None = None,
    ) -> Response:
        headers = {"Authorization": authorization} if authorization is not None else None
        return self.request(method, path, body, headers)

    def state(self) -> tuple[dict[str, Any], bytes | None, list[str]]:
        """The policy, the state file's bytes and the folder's files (no temp files left)."""
        exists = self.state_file.exists()
        return (
            self.fw.policy.to_dict(),
            self.state_file.read_bytes() if exists else None,
            sorted(p.name for p in self.state_file.parent.iterdir()),
        )


def make_api(state_file: Path, token: str | None) -> Api:
    wsgi = WSGIApplication()
    fw = Firewall(state_file)
    rest.register(wsgi, fw, token)
    return Api(wsgi, fw, state_file)


def populate(api: Api, authorization: str | None) -> None:
    """vm1 -> vm2, vm3 in no pair, the network outside and the group web (vm1)."""
    for method, path, body in wsgi_client.POPULATE:
        resp = api.call(method, path, body, authorization)
        assert resp.status_int == 201, resp.text


@pytest.fixture
def guarded(tmp_path: Path) -> Api:
    api = make_api(tmp_path / "state.json", TOKEN)
    populate(api, GOOD)
    return api


def assert_401(resp: Response) -> None:
    assert resp.status_int == 401, resp.text
    assert resp.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert resp.content_type == "application/json"
    body = json.loads(resp.body)
    assert list(body) == ["error"]
    assert isinstance(body["error"], str) and body["error"]
    assert TOKEN not in resp.text, "the answer must not show the token"
    assert "Traceback" not in resp.text


MUTATIONS, MUTATION_IDS = wsgi_client.MUTATIONS, wsgi_client.MUTATION_IDS

BAD_AUTHORIZATION = [
    None,  # no header at all
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    "Bearer s3cre",
    "Bearer s3cret2",
    "Bearer S3CRET",
    "Basic s3cret",
    "Basic czNjcmV0",
    "Token s3cret",
    "s3cret",
    "Bearers3cret",
    "Bearer\ts3cret",
]


@pytest.mark.parametrize(("method", "path", "body", "_status"), MUTATIONS, ids=MUTATION_IDS)
@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION)
def test_a_mutating_call_without_the_token_is_401_and_changes_nothing(
    guarded: Api, method: str, path: str, body: Any, _status: int, authorization: str | None
) -> None:
    before = guarded.state()
    assert_401(guarded.call(method, path, body, authorization))
    assert guarded.state() == before


@pytest.mark.parametrize(("method", "path", "body", "status"), MUTATIONS, ids=MUTATION_IDS)
@pytest.mark.parametrize("authorization", [GOOD, "bearer s3cret", "BEARER s3cret"])
def test_a_mutating_call_with_the_token_succeeds(
    guarded: Api, method: str, path: str, body: Any, status: int, authorization: str
) -> None:
    resp = guarded.call(method, path, body, authorization)
    assert resp.status_int == status, resp.text
    stored = store.load(guarded.state_file).to_dict()
    assert stored == guarded.fw.policy.to_dict()


def test_the_token_is_checked_before_the_body(guarded: Api) -> None:
    """An unauthenticated caller learns nothing from validation: 401, not 400/404/409."""
    before = guarded.state()
    for method, path, body in [
        ("PUT", "/vms/vm9", b"not json"),
        ("PUT", "/vms/-bad", {"port": "tap9"}),
        ("PUT", "/vms/vm9", {"port": "tap2"}),  # would be 409
        ("DELETE", "/vms/nope", None),  # would be 404
        ("DELETE", "/vms/vm1", None),  # would be 409
        ("POST", "/pairs", {"initiator": "vm1"}),
        ("DELETE", "/pairs/99", None),
        ("DELETE", "/pairs/abc", None),
        ("PUT", "/vms/vm9", b"x" * (rest.MAX_BODY + 1)),  # would be 413
    ]:
        assert_401(guarded.call(method, path, body))
    assert guarded.state() == before


def test_the_first_change_of_a_new_firewall_refused_writes_no_state_file(tmp_path: Path) -> None:
    api = make_api(tmp_path / "state.json", TOKEN)
    assert_401(api.call("PUT", "/vms/vm1", {"port": "tap2"}))
    assert_401(api.call("PUT", "/vms/vm1", {"port": "tap2"}, "Bearer nope"))
    assert not api.state_file.exists()
    assert list(tmp_path.iterdir()) == []
    assert api.fw.policy.to_dict()["vms"] == []


GETS = ["/vms", "/vms/vm1", "/networks", "/networks/outside", "/groups", "/groups/web",
        "/pairs", "/pairs/1", "/switches", "/flows", "/openapi.json"]  # fmt: skip


@pytest.mark.parametrize("path", GETS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic s3cret", GOOD])
def test_reading_needs_no_token(guarded: Api, path: str, authorization: str | None) -> None:
    before = guarded.state()
    resp = guarded.call("GET", path, authorization=authorization)
    assert resp.status_int == 200, resp.text
    assert resp.content_type == "application/json"
    assert "WWW-Authenticate" not in resp.headers
    assert guarded.state() == before


def test_a_refused_call_leaves_the_api_working(guarded: Api) -> None:
    assert_401(guarded.call("DELETE", "/pairs/1"))
    assert guarded.call("GET", "/pairs/1").status_int == 200
    assert guarded.call("DELETE", "/pairs/1", authorization=GOOD).status_int == 204
    assert guarded.call("GET", "/pairs/1").status_int == 404


@pytest.mark.parametrize("token", [None, ""])
@pytest.mark.parametrize("authorization", [None, "Bearer anything", "Basic s3cret"])
def test_without_a_token_configured_no_header_is_needed(
    tmp_path: Path, token: str | None, authorization: str | None
) -> None:
    for i, (method, path, body, status) in enumerate(MUTATIONS):
        api = make_api(tmp_path / str(i) / "state.json", token)
        populate(api, authorization)
        resp = api.call(method, path, body, authorization)
        assert resp.status_int == status, f"{method} {path}: {resp.text}"
        assert "WWW-Authenticate" not in resp.headers
        stored = store.load(api.state_file).to_dict()
        assert stored == api.fw.policy.to_dict()


def test_the_401_is_described_with_the_www_authenticate_realm(guarded: Api) -> None:
    resp = guarded.call("PUT", "/vms/vm9", {"port": "tap9"})
    assert_401(resp)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="ryu-ctfw"'


# What a WSGI server hands over is a latin-1 string (the raw header bytes).
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)


def might_be_accepted(header: str) -> bool:
    """'Bearer s3cret' in any case, also read leniently (more spaces, spaces around)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value == TOKEN:
        return True
    parts = header.split()
    return len(parts) == 2 and parts[0].lower() == "bearer" and parts[1] == TOKEN


@settings(max_examples=150, deadline=None, database=None)
@given(
    header=st.one_of(
        HEADER_TEXT,
        st.builds(
            lambda s, t: f"{s} {t}", st.sampled_from(["Bearer", "bearer", "Basic"]), HEADER_TEXT
        ),
        st.builds(lambda t: f"Bearer {TOKEN}{t}", HEADER_TEXT.filter(bool)),
        st.builds(lambda t: f"Bearer {t}{TOKEN}", HEADER_TEXT.filter(bool)),
    ),
    method=st.sampled_from(["PUT", "DELETE", "POST"]),
)
def test_any_other_authorization_is_refused(header: str, method: str) -> None:
    if might_be_accepted(header):
        return
    with tempfile.TemporaryDirectory() as d:
        api = make_api(Path(d) / "state.json", TOKEN)
        path, body = {
            "PUT": ("/vms/vm9", {"port": "tap9"}),
            "DELETE": ("/pairs/1", None),
            "POST": ("/pairs", {"initiator": "vm1", "responder": "vm2"}),
        }[method]
        assert_401(api.call(method, path, body, header))
        assert not api.state_file.exists()
