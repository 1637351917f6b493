"""Connections are tracked per connection, not per dpid (issue 10, point 5).

A bridge with two controller targets reaches the controller twice; closing one of the two
connections must leave the switch connected by the other. A switch whose connection is
cut and restored while a change is being made ends up with exactly the stored policy.
"""

from __future__ import annotations

import threading
import time

from conftest import Lab

from ryu_ctfw import lab


def set_targets(env: Lab, *hosts: str) -> None:
    """The bridge's controller targets: one per loopback address, all the same controller."""
    env.ovs.vsctl("set-controller", env.bridge, *(f"tcp:{h}:{env.ctl.ofp_port}" for h in hosts))
    for uuid in env.ovs.vsctl("get", "bridge", env.bridge, "controller").strip("[]").split(","):
        env.ovs.vsctl("set", "controller", uuid.strip(), "max_backoff=1000")


def log_count(env: Lab, text: str) -> int:
    return env.ctl.log_file.read_text().count(text)


def connected(env: Lab) -> bool:
    return env.ctl.ok("GET", "/ctfw/v1/switches")["switches"][0]["connected"]


def test_closing_one_of_two_connections_keeps_the_switch(labenv: Lab) -> None:
    a, b = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2)
    assert not a.ping(b.ip, count=1), "no pair yet"
    reports = len(labenv.ctl.sync_reports())
    set_targets(labenv, "127.0.0.1", "127.0.0.2")
    # The second connection replaces the first and is read back and synced.
    lab.wait_for(lambda: log_count(labenv, "connected again") >= 1, 10, "a second connection")
    labenv.ctl.wait_in_sync(reports)
    assert connected(labenv)

    set_targets(labenv, "127.0.0.1")  # one of the two connections closes
    lab.wait_for(
        lambda: (
            log_count(labenv, "a connection not in use closed")
            + log_count(labenv, "using its other connection")
            >= 1
        ),
        10,
        "one connection to close",
    )
    assert "disconnected" not in labenv.ctl.log_file.read_text().split("connected again")[-1]
    assert connected(labenv)

    labenv.pair("a", "b")  # made after the close: it must reach the switch
    dump = labenv.ovs.dump_flows(labenv.bridge)
    assert "-rel-rpl+trk" in dump, dump
    assert a.ping(b.ip), "the pair's flows are on the switch"
    assert not b.ping(a.ip, count=1), "and only one way"


def test_a_cut_and_restored_connection_during_changes_ends_with_the_stored_policy(
    labenv: Lab,
) -> None:
    names = [f"v{i}" for i in range(6)]
    vms = dict(zip(names, (labenv.vm(n, 2 + i, 1 + i) for i, n in enumerate(names)), strict=True))
    answers: list[int] = []
    stop = threading.Event()

    def changes() -> None:
        # Pairs made and revoked one after another, all the time the connections change.
        made: list[int] = []
        n = 0
        while not stop.is_set():
            src, dst = names[n % 6], names[(n + 1 + n // 6) % 6]
            n += 1
            if src == dst:
                continue
            status, body = labenv.ctl.api(
                "POST", "/ctfw/v1/pairs", {"initiator": src, "responder": dst}
            )
            answers.append(status)
            if status == 201:
                made.append(body["id"])
            if len(made) > 3:
                answers.append(labenv.ctl.api("DELETE", f"/ctfw/v1/pairs/{made.pop(0)}")[0])

    worker = threading.Thread(target=changes)
    worker.start()
    try:
        # A second connection replacing the one in use mid-change, the one in use closing,
        # and a plain cut and reconnect, while changes are on their way.
        for hosts in (
            ("127.0.0.1", "127.0.0.2"),
            ("127.0.0.2",),
            ("127.0.0.1", "127.0.0.2"),
            ("127.0.0.1",),
            ("127.0.0.2",),
            ("127.0.0.1",),
        ):
            set_targets(labenv, *hosts)
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
    # 504: a change in flight when its connection went (kept, and the switch converges).
    assert len(answers) > 10 and set(answers) <= {201, 204, 404, 409, 502, 504}, answers
    assert 201 in answers
    lab.wait_for(lambda: connected(labenv), 20, "the switch to reconnect")

    # What the API shows is what a fresh compile of the stored policy makes: a freshly
    # started controller compares the two and has nothing to add and nothing to delete.
    shown = sorted(f["text"] for f in labenv.flows())
    reports = len(labenv.ctl.sync_reports())
    labenv.ctl.stop()
    labenv.ctl.start()
    found, added, deleted = labenv.ctl.wait_in_sync(reports)
    assert (found, added, deleted) == (len(shown), 0, 0)
    assert sorted(f["text"] for f in labenv.flows()) == shown
    stored = labenv.ctl.stored()["pairs"]
    assert stored, "some pairs are stored"
    for pair in stored:
        src, dst = vms[pair["initiator"]], vms[pair["responder"]]
        assert src.ping(dst.ip), f"{pair['initiator']} -> {pair['responder']} is stored"
