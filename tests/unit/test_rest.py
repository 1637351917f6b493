"""The REST API, driven through Ryu's own WSGI application with webob requests.

No server and no switch: `Request.get_response()` calls the WSGI app in this process.

The Firewall takes an eventlet semaphore (hub.Semaphore) in change() and, with switches
connected, waits on eventlet events. Calling it from the test's main greenlet is fine here:
an uncontended eventlet Semaphore is acquired without switching greenlets, and with no
switch connected SwitchManager.sync_all() has nothing to wait for and returns []. So no
hub.spawn is needed (these tests never run two changes at once).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import wsgi_client
from ryu.app.wsgi import WSGIApplication
from webob import Response

from ryu_ctfw import rest, store
from ryu_ctfw.firewall import Firewall
from ryu_ctfw.switch import Switch, SyncResult

API = "/ctfw/v1"
MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"
# What a pair view adds for two VMs (GET /pairs, POST's answer).
VM_VM = {"initiator_kind": "vm", "responder_kind": "vm"}


class Api(wsgi_client.App):
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        environ: dict[str, Any] | None = None,
    ) -> Response:
        return self.request(method, path, body, environ=environ)

    def get_json(self, path: str) -> Any:
        resp = self.call("GET", path)
        assert resp.status_int == 200, resp.text
        assert resp.content_type == "application/json"
        return resp.json

    def snapshot(self) -> tuple[Any, ...]:
        """What the API shows and what is stored (bytes and inode: a rewrite shows; the
        journal's bytes, where a change goes first)."""
        exists = self.state_file.exists()
        journal = store.journal_path(self.state_file)
        return (
            self.get_json("/vms"),
            self.get_json("/pairs"),
            self.state_file.read_bytes() if exists else None,
            self.state_file.stat().st_ino if exists else None,
            self.get_json("/networks"),
            self.get_json("/groups"),
            journal.read_bytes() if journal.exists() else None,
        )


def make_api(state_file: Path) -> Api:
    wsgi = WSGIApplication()
    fw = Firewall(state_file)
    rest.register(wsgi, fw)
    return Api(wsgi, fw, state_file)


def assert_error(resp: Response, status: int) -> str:
    """The response is `status` with a JSON body {"error": "..."}; returns the message."""
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    assert "Traceback" not in resp.text
    body = json.loads(resp.body)
    assert list(body) == ["error"]
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return make_api(tmp_path / "state.json")


@pytest.fixture
def populated(api: Api) -> Api:
    """vm1 -> vm2 as in the seed, plus vm3 in no pair."""
    vm1 = {"port": "tap2", "mac": MAC1, "ips": ["192.168.0.1"]}
    assert api.call("PUT", "/vms/vm1", vm1).status_int == 201
    assert api.call("PUT", "/vms/vm2", {"port": "tap4", "mac": MAC2}).status_int == 201
    assert api.call("PUT", "/vms/vm3", {"port": "tap5"}).status_int == 201
    resp = api.call("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"})
    assert resp.status_int == 201
    return api


# --- reading -------------------------------------------------------------------------------


def test_a_new_firewall_shows_empty_lists(api: Api) -> None:
    assert api.get_json("/vms") == {"vms": []}
    assert api.get_json("/pairs") == {"pairs": []}
    assert api.get_json("/switches") == {"switches": []}
    assert api.get_json("/flows") == {"flows": []}
    assert not api.state_file.exists()  # reading writes nothing


def test_get_vm(populated: Api) -> None:
    body = populated.get_json("/vms/vm1")
    expected = {
        "name": "vm1",
        "port": "tap2",
        "mac": MAC1,
        "ips": ["192.168.0.1"],
        "dpid": None,
        "ofport": None,
    }
    assert {k: body[k] for k in expected} == expected
    assert populated.get_json("/vms") == {
        "vms": [populated.get_json(f"/vms/{name}") for name in ("vm1", "vm2", "vm3")]
    }


@pytest.mark.parametrize("name", ["nope", "-bad", "a" * 80])
def test_get_unknown_vm_is_404(populated: Api, name: str) -> None:
    assert name in assert_error(populated.call("GET", f"/vms/{name}"), 404)


# --- VMs -----------------------------------------------------------------------------------


def test_put_vm_creates_then_updates(api: Api) -> None:
    resp = api.call("PUT", "/vms/vm1", {"port": "tap2", "mac": MAC1.upper(), "ips": []})
    assert resp.status_int == 201
    assert resp.content_type == "application/json"
    created = resp.json
    assert created["name"] == "vm1"
    assert created["port"] == "tap2"
    assert created["mac"] == MAC1  # normalised
    assert created["ips"] == []
    assert created["dpid"] is None and created["ofport"] is None
    assert api.get_json("/vms/vm1") == created

    resp = api.call("PUT", "/vms/vm1", {"port": "tap3", "ips": ["fd00:0::1", "10.0.0.1"]})
    assert resp.status_int == 200
    updated = resp.json
    assert (updated["port"], updated["mac"], updated["ips"]) == (
        "tap3",
        None,  # a PUT replaces the whole VM
        ["fd00::1", "10.0.0.1"],
    )
    assert api.get_json("/vms/vm1") == updated
    assert api.get_json("/vms") == {"vms": [updated]}


def test_put_vm_answers_the_stored_vm_with_its_id(api: Api) -> None:
    resp = api.call("PUT", "/vms/vm1", {"port": "tap2"})
    assert resp.status_int == 201
    assert (resp.json["id"], resp.json["learned_mac"]) == (1, None)
    resp = api.call("PUT", "/vms/vm2", {"port": "tap4", "mac": MAC2})
    assert resp.json["id"] == 2
    resp = api.call("PUT", "/vms/vm1", {"port": "tap3", "mac": MAC1})
    assert resp.status_int == 200
    assert resp.json["id"] == 1  # an update keeps it
    assert resp.json == api.get_json("/vms/vm1")
    assert api.call("DELETE", "/vms/vm1").status_int == 204
    assert api.call("PUT", "/vms/vm1", {"port": "tap2"}).json["id"] == 3  # never given again


def test_put_vm_without_mac_and_ips(api: Api) -> None:
    resp = api.call("PUT", "/vms/vm.2", {"port": "tap4"})
    assert resp.status_int == 201
    assert (resp.json["name"], resp.json["mac"], resp.json["ips"]) == ("vm.2", None, [])


def test_delete_vm(populated: Api) -> None:
    resp = populated.call("DELETE", "/vms/vm3")
    assert resp.status_int == 204
    assert resp.body == b""
    assert_error(populated.call("GET", "/vms/vm3"), 404)
    assert_error(populated.call("DELETE", "/vms/vm3"), 404)
    assert [v["name"] for v in populated.get_json("/vms")["vms"]] == ["vm1", "vm2"]


@pytest.mark.parametrize("name", ["vm1", "vm2"])
def test_delete_vm_in_a_pair_is_409_until_the_pair_is_gone(populated: Api, name: str) -> None:
    message = assert_error(populated.call("DELETE", f"/vms/{name}"), 409)
    assert re.search(r"\bpair\(s\) 1\b", message)  # names the pair in the way
    assert populated.call("DELETE", "/pairs/1").status_int == 204
    assert populated.call("DELETE", f"/vms/{name}").status_int == 204


# --- pairs ---------------------------------------------------------------------------------


def test_post_pair(populated: Api) -> None:
    resp = populated.call("POST", "/pairs", {"initiator": "vm2", "responder": "vm3"})
    assert resp.status_int == 201
    assert resp.json == {
        "id": 2,
        "initiator": "vm2",
        "responder": "vm3",
        "protocol": "any",
        "ports": None,
        "log": False,
        **VM_VM,
    }
    # webob makes Location absolute; the path is what the API defines.
    assert resp.location.endswith(f"{API}/pairs/2")
    location = resp.location[resp.location.index("/ctfw") :]
    assert populated.get_json(location) == resp.json
    assert populated.get_json("/pairs") == {
        "pairs": [
            {
                "id": 1,
                "initiator": "vm1",
                "responder": "vm2",
                "protocol": "any",
                "ports": None,
                "log": False,
                **VM_VM,
            },
            {
                "id": 2,
                "initiator": "vm2",
                "responder": "vm3",
                "protocol": "any",
                "ports": None,
                "log": False,
                **VM_VM,
            },
        ]
    }


def test_delete_pair_and_ids_are_not_reused(populated: Api) -> None:
    resp = populated.call("DELETE", "/pairs/1")
    assert resp.status_int == 204
    assert resp.body == b""
    assert populated.get_json("/pairs") == {"pairs": []}
    assert_error(populated.call("GET", "/pairs/1"), 404)
    assert_error(populated.call("DELETE", "/pairs/1"), 404)
    resp = populated.call("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"})
    assert resp.json["id"] == 2


# --- errors change nothing -----------------------------------------------------------------

BIG = b'{"port": "tap9", "pad": "' + b"x" * (64 * 1024) + b'"}'

VM1_VM3 = {"initiator": "vm1", "responder": "vm3"}

BAD_REQUESTS = [
    # (method, path, body, status)
    ("PUT", "/vms/vm9", b'{"port": "tap9"', 400),
    ("PUT", "/vms/vm9", b"port=tap9", 400),
    ("PUT", "/vms/vm9", b"", 400),
    ("PUT", "/vms/vm9", b"  \n\t ", 400),
    ("PUT", "/vms/vm9", b"\xff\xfe{}", 400),
    ("PUT", "/vms/vm9", BIG, 413),
    ("PUT", "/vms/vm9", [], 400),
    ("PUT", "/vms/vm9", "tap9", 400),
    ("PUT", "/vms/vm9", None, 400),  # no body at all
    ("PUT", "/vms/vm9", {"port": "a b"}, 400),
    ("PUT", "/vms/vm9", {"port": "x/y"}, 400),
    ("PUT", "/vms/vm9", {"port": ""}, 400),
    ("PUT", "/vms/vm9", {"port": "a" * 16}, 400),
    ("PUT", "/vms/vm9", {"port": 9}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "colour": "red"}, 400),
    ("PUT", "/vms/vm9", {"mac": "52:54:00:00:00:09"}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "mac": "01:00:5e:00:00:01"}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "mac": "52:54:00:00:09"}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "ips": ["10.0.0.300"]}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "ips": ["10.0.0.9", "10.0.0.9"]}, 400),
    ("PUT", "/vms/vm9", {"port": "tap9", "ips": "10.0.0.9"}, 400),
    ("PUT", "/vms/-vm9", {"port": "tap9"}, 400),
    ("PUT", "/vms/vm9", {"port": "tap2"}, 409),
    ("PUT", "/vms/vm9", {"port": "tap2", "mac": "52:54:00:00:00:09"}, 409),
    ("PUT", "/vms/vm1", {"port": "tap4"}, 409),
    ("PUT", "/vms/vm1", {"port": "tap2", "mac": "nope"}, 400),
    ("DELETE", "/vms/vm1", None, 409),
    ("DELETE", "/vms/vm2", None, 409),
    ("DELETE", "/vms/nope", None, 404),
    ("GET", "/vms/nope", None, 404),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm1"}, 400),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "nope"}, 404),
    ("POST", "/pairs", {"initiator": "nope", "responder": "vm1"}, 404),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"}, 409),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm2", "protocol": "any"}, 409),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "sctp"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "TCP"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": None}, 400),
    ("POST", "/pairs", VM1_VM3 | {"ports": "22"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "any", "ports": 22}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "icmp", "ports": "8"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "tcp", "ports": 0}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "tcp", "ports": "65536"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "udp", "ports": "90-80"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "udp", "ports": "dns"}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "tcp", "ports": True}, 400),
    ("POST", "/pairs", VM1_VM3 | {"protocol": "tcp", "ports": [22]}, 400),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "nope", "protocol": "udp"}, 404),
    ("POST", "/pairs", {"initiator": "vm1"}, 400),
    ("POST", "/pairs", {"initiator": "vm1", "responder": "vm3", "id": 7}, 400),
    ("POST", "/pairs", {"initiator": ["vm1"], "responder": "vm3"}, 400),
    ("POST", "/pairs", ["vm1", "vm3"], 400),
    ("POST", "/pairs", b"vm1 -> vm3", 400),
    ("POST", "/pairs", b"", 400),
    ("POST", "/pairs", BIG, 413),
    ("GET", "/pairs/99", None, 404),
    ("DELETE", "/pairs/99", None, 404),
    ("DELETE", "/pairs/0", None, 404),
    ("DELETE", "/pairs/abc", None, 404),
    ("DELETE", "/pairs/-1", None, 404),
    ("DELETE", "/pairs/1.0", None, 404),
    ("DELETE", "/pairs/9999999999999999999999", None, 404),
    ("POST", "/vms", {"port": "tap9"}, 405),
    ("DELETE", "/vms", None, 405),
    ("POST", "/vms/vm9", {"port": "tap9"}, 405),
    ("PATCH", "/vms/vm1", {"port": "tap9"}, 405),
    ("PUT", "/pairs", {"initiator": "vm1", "responder": "vm3"}, 405),
    ("DELETE", "/pairs", None, 405),
    ("PUT", "/pairs/1", {"initiator": "vm1", "responder": "vm3"}, 405),
    ("POST", "/switches", {}, 405),
    ("DELETE", "/flows", None, 405),
    ("GET", "/ctfw/v1/nope", None, 404),
    ("GET", "/ctfw/v1/vms/", None, 404),
    ("DELETE", "/ctfw/v1/vms/vm3/extra", None, 404),
    ("PUT", "/ctfw/v2/vms/vm9", {"port": "tap9"}, 404),
    ("GET", "/ctfw/", None, 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    BAD_REQUESTS,
    ids=[f"{m} {p} {s}" for m, p, _, s in BAD_REQUESTS],
)
def test_errors_are_json_and_change_nothing(
    populated: Api, method: str, path: str, body: Any, status: int
) -> None:
    before = populated.snapshot()
    assert_error(populated.call(method, path, body), status)
    assert populated.snapshot() == before


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/vms", "GET"),
        ("/vms/vm1", "DELETE, GET, PUT"),
        ("/pairs", "GET, POST"),
        ("/pairs/1", "DELETE, GET"),
        ("/switches", "GET"),
        ("/flows", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(populated: Api, path: str, allowed: str) -> None:
    for method in ("GET", "PUT", "POST", "DELETE", "PATCH"):
        if method in allowed.split(", "):
            continue
        resp = populated.call(method, path, {})
        message = assert_error(resp, 405)
        assert resp.headers["Allow"] == allowed
        assert method in message


def test_body_size_limit_is_exactly_64_kib(api: Api) -> None:
    body = b'{"port": "tap9"}'
    at_limit = body + b" " * (rest.MAX_BODY - len(body))
    assert len(at_limit) == 64 * 1024
    assert api.call("PUT", "/vms/vm9", at_limit).status_int == 201
    assert_error(api.call("PUT", "/vms/vm9", at_limit + b" "), 413)


def test_oversized_body_without_content_length_is_413(populated: Api) -> None:
    """A chunked upload has no Content-Length; the limit still holds."""
    before = populated.snapshot()
    resp = populated.call(
        "PUT", "/vms/vm9", BIG, environ={"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
    )
    assert_error(resp, 413)
    assert populated.snapshot() == before


def test_body_without_content_length_is_read(api: Api) -> None:
    resp = api.call(
        "PUT",
        "/vms/vm9",
        {"port": "tap9"},
        environ={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert resp.status_int == 201


def test_a_failed_save_is_a_json_500_and_changes_nothing(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    before = populated.snapshot()
    monkeypatch.setattr(store, "record", full_disk)
    assert_error(populated.call("PUT", "/vms/vm9", {"port": "tap9"}), 500)
    assert_error(populated.call("DELETE", "/pairs/1"), 500)
    monkeypatch.undo()
    assert populated.snapshot() == before


def test_a_change_a_switch_refuses_is_502_and_rolled_back(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = populated.snapshot()
    calls: list[int] = []

    def refusing_sync_all() -> list[SyncResult]:
        calls.append(len(calls))
        return [SyncResult(1, ["OFPET_BAD_ACTION OFPBAC_BAD_TYPE"])] if len(calls) == 1 else []

    monkeypatch.setattr(populated.fw.switches, "sync_all", refusing_sync_all)
    message = assert_error(populated.call("DELETE", "/pairs/1"), 502)
    assert "OFPBAC_BAD_TYPE" in message
    assert calls == [0, 1]  # the rollback was synced too
    vms, pairs, content, _inode, *rest_of_it = populated.snapshot()
    assert (vms, pairs, content) == before[:3]  # rewritten, with the old content
    assert rest_of_it[:2] == list(before[4:6])


def test_a_change_no_switch_confirmed_is_504_and_kept(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lost reply or a timeout: the switch may or may not have applied it. Saying 502
    # ("refused, nothing changed") would be a lie; the change is kept and the switch is
    # read back, so it converges to what the store holds.
    resynced: list[int] = []
    monkeypatch.setattr(
        populated.fw.switches,
        "sync_all",
        lambda: [SyncResult(7, unknown=["switch did not confirm in time"])],
    )
    monkeypatch.setattr(populated.fw.switches, "request_sync", resynced.append)
    message = assert_error(populated.call("DELETE", "/pairs/1"), 504)
    assert "stored" in message and "did not confirm in time" in message
    assert resynced == [7]
    assert 1 not in populated.fw.policy.pairs
    assert 1 not in store.load(populated.fw.state_file).pairs, "kept in the store"


def test_a_refusal_wins_over_an_unknown_outcome(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def mixed() -> list[SyncResult]:
        calls.append(1)
        if len(calls) > 1:
            return []
        return [SyncResult(1, ["OFPET_BAD_MATCH OFPBMC_BAD_FIELD"]),
                SyncResult(2, unknown=["switch disconnected"])]  # fmt: skip

    monkeypatch.setattr(populated.fw.switches, "sync_all", mixed)
    assert_error(populated.call("DELETE", "/pairs/1"), 502)
    assert 1 in populated.fw.policy.pairs, "rolled back everywhere"
    assert 1 in store.load(populated.fw.state_file).pairs


def test_non_ascii_digit_pair_id_is_404(populated: Api) -> None:
    before = populated.snapshot()
    # %B9 is '\u00b9' (superscript one) in the latin-1 PATH_INFO that WSGI gives.
    assert_error(populated.call("DELETE", "/pairs/%B9"), 404)
    assert populated.snapshot() == before


def test_non_utf8_unknown_path_is_a_json_404(populated: Api) -> None:
    assert_error(populated.call("GET", "/ctfw/v1/%FF"), 404)


def test_deeply_nested_body_is_400(populated: Api) -> None:
    before = populated.snapshot()
    assert_error(populated.call("PUT", "/vms/vm9", b"[" * 50_000), 400)
    assert populated.snapshot() == before


# --- persistence ---------------------------------------------------------------------------


def test_state_file_holds_what_the_api_shows(populated: Api) -> None:
    populated.call("PUT", "/vms/vm3", {"port": "tap5", "ips": ["fd00::3"]})
    populated.call("POST", "/pairs", {"initiator": "vm3", "responder": "vm1"})
    populated.call("DELETE", "/pairs/1")
    stored = store.load(populated.state_file).to_dict()
    shown_vms = populated.get_json("/vms")["vms"]
    # The view is the stored VM (ids and learned MACs too) plus where it is attached.
    assert stored["vms"] == [
        {k: v for k, v in vm.items() if k not in ("dpid", "ofport", "ambiguous")}
        for vm in shown_vms
    ]
    assert [vm["id"] for vm in stored["vms"]] == [1, 2, 3]
    # The view adds what each side is; the store keeps the pair as given.
    assert [{**p, **VM_VM} for p in stored["pairs"]] == populated.get_json("/pairs")["pairs"]
    assert [p["id"] for p in stored["pairs"]] == [2]


def test_a_new_firewall_on_the_same_file_shows_the_same(populated: Api) -> None:
    populated.call("POST", "/pairs", {"initiator": "vm3", "responder": "vm1"})
    populated.call("DELETE", "/pairs/1")
    again = make_api(populated.state_file)
    for path in ("/vms", "/pairs", "/vms/vm1", "/pairs/2"):
        assert again.get_json(path) == populated.get_json(path)
    # And it carries on numbering where the first one stopped.
    resp = again.call("POST", "/pairs", {"initiator": "vm1", "responder": "vm2"})
    assert resp.json["id"] == 3


def test_no_temp_files_are_left_behind(populated: Api) -> None:
    populated.call("DELETE", "/pairs/1")
    populated.call("PUT", "/vms/vm9", {"port": "tap2"})  # 409
    assert set(os.listdir(populated.state_file.parent)) <= {"state.json", "state.json.journal"}


# --- pairs with protocol and ports ---------------------------------------------------------


def pair_body(initiator: str, responder: str, **extra: Any) -> dict[str, Any]:
    return {"initiator": initiator, "responder": responder, **extra}


@pytest.mark.parametrize(
    ("extra", "protocol", "ports"),
    [
        ({"protocol": "tcp", "ports": "22"}, "tcp", "22"),
        ({"protocol": "tcp", "ports": 22}, "tcp", "22"),  # an int is normalised to a string
        ({"protocol": "udp", "ports": "8000-8100"}, "udp", "8000-8100"),
        ({"protocol": "udp", "ports": "53-53"}, "udp", "53"),
        ({"protocol": "tcp"}, "tcp", None),
        ({"protocol": "icmp"}, "icmp", None),
        ({"protocol": "any"}, "any", None),
        ({"protocol": "tcp", "ports": "22", "log": True}, "tcp", "22"),
        ({"protocol": "icmp", "log": False}, "icmp", None),
    ],
)
def test_post_pair_with_protocol_and_ports(
    populated: Api, extra: dict[str, Any], protocol: str, ports: str | None
) -> None:
    resp = populated.call("POST", "/pairs", pair_body("vm2", "vm3", **extra))
    assert resp.status_int == 201, resp.text
    expected = {
        "id": 2,
        "initiator": "vm2",
        "responder": "vm3",
        "protocol": protocol,
        "ports": ports,
        "log": extra.get("log", False),  # false unless asked for
        **VM_VM,
    }
    assert resp.json == expected
    assert populated.get_json("/pairs/2") == expected
    assert populated.get_json("/pairs")["pairs"][-1] == expected
    stored = store.load(populated.state_file).to_dict()
    assert stored["pairs"][-1] == {k: v for k, v in expected.items() if k not in VM_VM}


def test_the_same_vms_with_two_services_are_two_pairs(populated: Api) -> None:
    ssh = populated.call("POST", "/pairs", pair_body("vm1", "vm3", protocol="tcp", ports=22))
    dns = populated.call("POST", "/pairs", pair_body("vm1", "vm3", protocol="udp", ports="53"))
    assert (ssh.status_int, dns.status_int) == (201, 201)
    assert (ssh.json["id"], dns.json["id"]) == (2, 3)
    pairs = populated.get_json("/pairs")["pairs"]
    assert [(p["initiator"], p["responder"], p["protocol"], p["ports"]) for p in pairs] == [
        ("vm1", "vm2", "any", None),
        ("vm1", "vm3", "tcp", "22"),
        ("vm1", "vm3", "udp", "53"),
    ]


def test_a_duplicate_service_is_409_and_changes_nothing(populated: Api) -> None:
    resp = populated.call("POST", "/pairs", pair_body("vm1", "vm3", protocol="tcp", ports="22"))
    assert resp.status_int == 201
    before = populated.snapshot()
    for again in ("22", 22, "22-22"):
        body = pair_body("vm1", "vm3", protocol="tcp", ports=again)
        message = assert_error(populated.call("POST", "/pairs", body), 409)
        assert "id 2" in message
    assert populated.snapshot() == before
    # Another port of the same VMs is fine, and ids carry on.
    resp = populated.call("POST", "/pairs", pair_body("vm1", "vm3", protocol="tcp", ports="23"))
    assert resp.json["id"] == 3


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"protocol": "sctp"}, "protocol"),
        ({"ports": "22"}, "ports"),
        ({"protocol": "icmp", "ports": 8}, "ports"),
        ({"protocol": "tcp", "ports": "0"}, "ports"),
        ({"protocol": "tcp", "ports": 65536}, "ports"),
        ({"protocol": "tcp", "ports": "100-10"}, "ports"),
        ({"protocol": "tcp", "ports": "http"}, "ports"),
        ({"log": "yes"}, "log"),
        ({"protocol": "tcp", "ports": "22", "log": 1}, "log"),
    ],
)
def test_a_bad_service_is_a_400_naming_the_field(
    populated: Api, extra: dict[str, Any], field: str
) -> None:
    before = populated.snapshot()
    message = assert_error(populated.call("POST", "/pairs", pair_body("vm1", "vm3", **extra)), 400)
    assert f"invalid {field}" in message
    assert populated.snapshot() == before


# --- MACs and IPs may repeat ---------------------------------------------------------------


def test_the_mac_and_ip_of_another_vm_are_allowed(populated: Api) -> None:
    twin = {"port": "tap9", "mac": MAC1.upper(), "ips": ["192.168.0.1"]}
    resp = populated.call("PUT", "/vms/vm9", twin)
    assert resp.status_int == 201, resp.text
    assert (resp.json["mac"], resp.json["ips"]) == (MAC1, ["192.168.0.1"])
    assert populated.get_json("/vms/vm1")["mac"] == MAC1
    # And an existing VM may take a MAC that another VM has.
    resp = populated.call("PUT", "/vms/vm3", {"port": "tap5", "mac": MAC1})
    assert resp.status_int == 200


def on_one_switch(api: Api, **ports: int) -> Switch:
    sw = Switch(0x1, dp=object(), name="br0", ports=dict(ports))
    api.fw.switches.switches[0x1] = sw
    return sw


def test_a_mac_another_vm_on_the_same_switch_has_is_409(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_one_switch(populated, tap2=2, tap4=3, tap5=4)
    monkeypatch.setattr(populated.fw.switches, "sync_all", lambda: [])
    before = populated.snapshot()
    message = assert_error(populated.call("PUT", "/vms/vm3", {"port": "tap5", "mac": MAC1}), 409)
    assert MAC1 in message and "vm1" in message
    assert_error(populated.call("PUT", "/vms/vm9", {"port": "tap5", "mac": MAC2.upper()}), 409)
    assert populated.snapshot() == before
    # A VM keeping its own MAC is no conflict; nor is a VM on a port of another switch.
    assert populated.call("PUT", "/vms/vm1", {"port": "tap2", "mac": MAC1}).status_int == 200
    assert populated.call("PUT", "/vms/vm8", {"port": "tap8", "mac": MAC1}).status_int == 201


def test_a_mac_another_vm_on_the_switch_learned_is_409(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_one_switch(populated, tap2=2, tap5=4, tap6=5)
    monkeypatch.setattr(populated.fw.switches, "sync_all", lambda: [])
    populated.fw.learn_mac("vm3", "52:54:00:00:00:33")
    assert_error(populated.call("PUT", "/vms/vm9", {"port": "tap6", "mac": "52:54:00:00:00:33"}),
                 409)  # fmt: skip
    assert "vm9" not in populated.fw.policy.vms


def test_a_learned_mac_is_stored_shown_and_kept(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_one_switch(populated, tap5=4)
    monkeypatch.setattr(populated.fw.switches, "sync_all", lambda: [])
    populated.fw.learn_mac("vm3", "52:54:00:00:00:33")
    assert populated.get_json("/vms/vm3")["learned_mac"] == "52:54:00:00:00:33"
    populated.fw.learn_mac("vm3", "52:54:00:00:00:44")  # the first one sticks
    populated.fw.learn_mac("vm1", "52:54:00:00:00:44")  # a configured MAC is never replaced
    populated.fw.learn_mac("gone", "52:54:00:00:00:44")  # a VM deleted meanwhile: nothing
    assert populated.get_json("/vms/vm3")["learned_mac"] == "52:54:00:00:00:33"
    assert populated.get_json("/vms/vm1")["learned_mac"] is None
    # Stored: a restart still knows it.
    again = make_api(populated.state_file)
    assert again.get_json("/vms/vm3")["learned_mac"] == "52:54:00:00:00:33"
    # An update on the same port without a MAC keeps it; a move forgets it.
    resp = populated.call("PUT", "/vms/vm3", {"port": "tap5", "ips": ["10.0.0.3"]})
    assert resp.json["learned_mac"] == "52:54:00:00:00:33"
    resp = populated.call("PUT", "/vms/vm3", {"port": "tap6"})
    assert (resp.json["learned_mac"], resp.json["id"]) == (None, 3)


# --- switches and zones --------------------------------------------------------------------


def test_get_switches_shows_each_bridge_and_its_vms(populated: Api) -> None:
    switches = populated.fw.switches.switches
    switches[0x5254006084FF] = Switch(
        0x5254006084FF, dp=object(), name="br0", ports={"tap4": 3, "tap2": 2, "eth1": 1}
    )
    switches[0x2] = Switch(0x2, name="br1", ports={"tap5": 7})  # disconnected
    populated.fw.policy.zones.update({0x5254006084FF: 1, 0x2: 2})
    assert populated.get_json("/switches") == {
        "switches": [
            {
                "dpid": "0000000000000002",
                "name": "br1",
                "zone": 2,
                "connected": False,
                "packet_ins": 0,
                "fabric_port": None,
                "ports": [{"name": "tap5", "ofport": 7, "vm": "vm3", "networks": []}],
            },
            {
                "dpid": "00005254006084ff",
                "name": "br0",
                "zone": 1,
                "connected": True,
                "packet_ins": 0,
                "fabric_port": None,
                "ports": [
                    {"name": "eth1", "ofport": 1, "vm": None, "networks": []},
                    {"name": "tap2", "ofport": 2, "vm": "vm1", "networks": []},
                    {"name": "tap4", "ofport": 3, "vm": "vm2", "networks": []},
                ],
            },
        ]
    }
    # The VM views say where each VM is; a disconnected switch keeps its VMs (it still
    # enforces its flows, issue 12).
    vm1 = populated.get_json("/vms/vm1")
    assert (vm1["dpid"], vm1["ofport"]) == ("00005254006084ff", 2)
    vm3 = populated.get_json("/vms/vm3")
    assert (vm3["dpid"], vm3["ofport"]) == ("0000000000000002", 7)


def test_a_bridge_gets_a_zone_that_is_stored_at_once(populated: Api) -> None:
    fw = populated.fw
    assert fw.zone_for(0xAB) == 1
    assert fw.zone_for(0xCD) == 2
    assert fw.zone_for(0xAB) == 1
    stored = store.load(populated.state_file).to_dict()
    assert stored["zones"] == {"00000000000000ab": 1, "00000000000000cd": 2}
    again = make_api(populated.state_file)
    assert again.fw.policy.zones == {0xAB: 1, 0xCD: 2}
    assert again.fw.zone_for(0xEF) == 3


def test_changes_and_rollbacks_keep_the_zones(
    populated: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    populated.fw.zone_for(0xAB)
    assert populated.call("POST", "/pairs", pair_body("vm2", "vm3")).status_int == 201
    assert store.load(populated.state_file).to_dict()["zones"] == {"00000000000000ab": 1}

    calls: list[int] = []

    def refusing_sync_all() -> list[SyncResult]:
        calls.append(len(calls))
        if len(calls) == 1:
            # A bridge connects while the change waits for its switches.
            populated.fw.zone_for(0xCD)
            return [SyncResult(1, ["OFPET_BAD_MATCH OFPBMC_BAD_FIELD"])]
        return []

    monkeypatch.setattr(populated.fw.switches, "sync_all", refusing_sync_all)
    assert_error(populated.call("DELETE", "/pairs/2"), 502)
    assert calls == [0, 1]
    assert populated.fw.policy.zones == {0xAB: 1, 0xCD: 2}
    stored = store.load(populated.state_file).to_dict()
    assert stored["zones"] == {"00000000000000ab": 1, "00000000000000cd": 2}
    assert [p["id"] for p in stored["pairs"]] == [1, 2]  # the change itself was undone
