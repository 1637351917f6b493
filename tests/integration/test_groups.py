"""Groups of VMs in pairs (issue 11), with real traffic: web (w1, w2, w3) and db (d1, d2,
d3) on one bridge, and x, a VM in neither group.

As in test_isolation.py: every allowed exchange also sniffs a port that must stay silent,
every refusal shows (Sniffer) that the destination saw nothing and comes with a control
that shows the same path delivers.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import frames
import pytest
from conftest import Lab
from frames import flow_marker
from sniff import Sniffer, seen

from ryu_ctfw import lab


@dataclass
class Estate:
    env: Lab
    vms: dict[str, lab.Vm]

    def __getitem__(self, name: str) -> lab.Vm:
        return self.vms[name]


@pytest.fixture
def estate(labenv: Lab) -> Estate:
    """w1-w3 on ofports 2-4 (198.18.0.11-13), d1-d3 on 5-7 (198.18.0.21-23), x on 8
    (198.18.0.30), all dual-stack; groups web = [w1, w2, w3] and db = [d1, d2, d3]."""
    specs = [("w1", 2, 11), ("w2", 3, 12), ("w3", 4, 13),
             ("d1", 5, 21), ("d2", 6, 22), ("d3", 7, 23), ("x", 8, 30)]  # fmt: skip
    vms = {name: labenv.vm(name, ofport, host, ipv6=True) for name, ofport, host in specs}
    labenv.group("web", ["w1", "w2", "w3"])
    labenv.group("db", ["d1", "d2", "d3"])
    return Estate(labenv, vms)


def v6(vm: lab.Vm) -> str:
    return next(ip.split("/")[0] for ip in vm.ips if ":" in ip)


@contextlib.contextmanager
def servers(vms: list[lab.Vm], proto: str, port: int) -> Iterator[None]:
    procs = [vm.serve(proto, port) for vm in vms]
    try:
        yield
    finally:
        for p in procs:
            p.kill()


def refused(attempts: list[tuple[lab.Vm, lab.Vm, int, int]]) -> list[int]:
    """Each (client, server, port, source port) TCP attempt must fail; returns how many
    frames of each the server saw (all must be 0)."""
    watch = [Sniffer(dst, flow_marker(src.ip, dst.ip, sport, port))
             for src, dst, port, sport in attempts]  # fmt: skip
    for src, dst, port, sport in attempts:
        assert not src.tcp(dst.ip, port, timeout=1, sport=sport), f"{src.ns} -> {dst.ip}:{port}"
    return seen(watch)


def test_every_web_member_may_open_5432_to_every_db_member(estate: Estate) -> None:
    env, e = estate.env, estate
    env.pair("web", "db", "tcp", "5432")
    with servers([e["d1"], e["d2"], e["d3"]], "tcp", 5432):
        # Allowed: every web member to every db member (each member on both sides, the
        # last ones included), and IPv6; x, in neither group, sees none of it.
        watch = [Sniffer(e["x"], lab.PROBE)]
        for w, d in (("w1", "d1"), ("w1", "d3"), ("w2", "d2"), ("w3", "d1"), ("w3", "d3")):
            assert e[w].tcp(e[d].ip, 5432), f"{w} -> {d} tcp/5432"
        assert e["w3"].tcp(v6(e["d3"]), 5432), "w3 -> d3 over IPv6"
        assert e["w1"].tcp(v6(e["d2"]), 5432), "w1 -> d2 over IPv6"
        assert seen(watch) == [0], "x saw nothing of web's traffic to db"


def test_db_cannot_start_towards_web_nor_x_reach_db(estate: Estate) -> None:
    env, e = estate.env, estate
    env.pair("web", "db", "tcp", "5432")
    with servers([vm for name, vm in e.vms.items() if name != "x"], "tcp", 5432):
        # Control: the path between web and db delivers, both ways.
        assert e["w1"].tcp(e["d1"].ip, 5432) and e["w3"].tcp(e["d3"].ip, 5432)
        # Refused: db cannot start anything towards web, x cannot reach db, and neither
        # group is paired with itself.
        sniffed = refused([
            (e["d1"], e["w1"], 5432, 41001),
            (e["d3"], e["w3"], 5432, 41002),
            (e["x"], e["d1"], 5432, 41003),
            (e["x"], e["d3"], 5432, 41004),
            (e["w1"], e["w2"], 5432, 41005),
            (e["d1"], e["d2"], 5432, 41006),
        ])  # fmt: skip
        assert sniffed == [0] * 6
        watch = [Sniffer(e["w1"], flow_marker(e["d1"].ip, e["w1"].ip))]
        assert not e["d1"].ping(e["w1"].ip, count=1), "a service pair allows no ping"
        assert seen(watch) == [0]
        assert e["w1"].tcp(e["d1"].ip, 5432), "control: w1 -> d1 still works"


def test_a_group_paired_with_itself_lets_its_members_reach_each_other(estate: Estate) -> None:
    env, e = estate.env, estate
    env.pair("web", "web", "tcp", "8080")
    with servers([e["w1"], e["w2"], e["w3"], e["x"], e["d1"]], "tcp", 8080):
        watch = [Sniffer(e["x"], lab.PROBE), Sniffer(e["d1"], lab.PROBE)]
        for a, b in (("w1", "w2"), ("w2", "w3"), ("w3", "w1"), ("w2", "w1"), ("w1", "w3")):
            assert e[a].tcp(e[b].ip, 8080), f"{a} -> {b} tcp/8080"
        assert e["w3"].tcp(v6(e["w2"]), 8080), "w3 -> w2 over IPv6"
        assert seen(watch) == [0, 0], "nobody outside web saw it"
        sniffed = refused([
            (e["x"], e["w1"], 8080, 41011),
            (e["w1"], e["x"], 8080, 41012),
            (e["w1"], e["d1"], 8080, 41013),
            (e["d1"], e["w3"], 8080, 41014),
            (e["w1"], e["w2"], 8081, 41015),  # another port
        ])  # fmt: skip
        assert sniffed == [0] * 5


DURATION = 6.0


def stream_times(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate(timeout=DURATION + 10)
    return [float(line) for line in out.split() if re.fullmatch(r"\d+\.\d+", line)]


def test_membership_changes_cut_and_grant_connections(estate: Estate) -> None:
    env, e = estate.env, estate
    env.pair("web", "db", "tcp", "5432")
    d1 = e["d1"]
    with servers([d1, e["d3"]], "tcp", 5432):
        s1 = e["w1"].stream(d1.ip, 5432, DURATION)
        s2 = e["w2"].stream(d1.ip, 5432, DURATION)
        s3 = e["w3"].stream(v6(d1), 5432, DURATION)
        time.sleep(2)
        cut = time.time()
        assert env.group("web", ["w1", "w3"])["members"] == ["w1", "w3"]
        t1, t2, t3 = stream_times(s1), stream_times(s2), stream_times(s3)
        assert any(t < cut for t in t2), "w2's connection never worked before the cut"
        late = [t - cut for t in t2 if t > cut + 1.0]
        assert not late, f"w2's connection still passed after it left web (s after): {late}"
        for name, times in (("w1", t1), ("w3 (IPv6)", t3)):
            assert any(t > cut + 2 for t in times), f"{name}'s connection should live on"
        assert refused([(e["w2"], d1, 5432, 41021)]) == [0], "w2 cannot open a new one"

        # A new VM is granted by joining the group, not before.
        w4 = env.vm("w4", 9, 14, ipv6=True)
        assert refused([(w4, d1, 5432, 41022)]) == [0], "control: w4 is not in web yet"
        env.group("web", ["w1", "w3", "w4"])
        watch = [Sniffer(e["x"], lab.PROBE)]
        assert w4.tcp(d1.ip, 5432), "w4 joined web: it may open tcp/5432 to db"
        assert w4.tcp(v6(e["d3"]), 5432), "to every member, over IPv6 too"
        assert seen(watch) == [0]


def test_a_responder_leaving_is_cut_and_a_member_of_two_groups_keeps_the_other(
    estate: Estate,
) -> None:
    env, e = estate.env, estate
    env.pair("web", "db", "tcp", "5432")
    env.group("ops", ["w2"])
    env.pair("ops", "db", "tcp", "5432")  # the same service for w2 by another group
    with servers([e["d1"], e["d3"]], "tcp", 5432):
        to_d1 = e["w1"].stream(e["d1"].ip, 5432, DURATION)
        to_d3 = e["w1"].stream(e["d3"].ip, 5432, DURATION)
        w2_d3 = e["w2"].stream(e["d3"].ip, 5432, DURATION)
        time.sleep(2)
        cut_db = time.time()
        env.group("db", ["d2", "d3"])  # d1 leaves db
        env.group("web", ["w1", "w3"])  # w2 leaves web, but stays in ops
        t_d1, t_d3, t_w2 = stream_times(to_d1), stream_times(to_d3), stream_times(w2_d3)
    assert any(t < cut_db for t in t_d1), "w1 -> d1 never worked before the cut"
    late = [t - cut_db for t in t_d1 if t > cut_db + 1.0]
    assert not late, f"w1 -> d1 still passed after d1 left db (s after): {late}"
    assert any(t > cut_db + 2 for t in t_d3), "w1 -> d3 should live on"
    assert any(t > cut_db + 2 for t in t_w2), "w2 -> d3 is still allowed through ops"


def test_a_vm_listed_by_a_group_cannot_be_deleted(estate: Estate) -> None:
    env = estate.env
    status, answer = env.ctl.api("DELETE", "/ctfw/v1/vms/w1")
    assert status == 409, answer
    assert env.ctl.ok("GET", "/ctfw/v1/vms/w1")["name"] == "w1", "still there"
    pair_id = env.pair("web", "db", "tcp", "5432")
    pair = env.ctl.ok("GET", f"/ctfw/v1/pairs/{pair_id}")
    assert (pair["initiator_kind"], pair["responder_kind"]) == ("group", "group")
    status, answer = env.ctl.api("DELETE", "/ctfw/v1/groups/web")
    assert status == 409, answer
    status, answer = env.ctl.api("PUT", "/ctfw/v1/groups/web", {"members": ["w1", "nobody"]})
    assert status == 404, answer
    assert env.ctl.ok("GET", "/ctfw/v1/groups/web")["members"] == ["w1", "w2", "w3"]
    status, answer = env.ctl.api("PUT", "/ctfw/v1/groups/x", {"members": []})
    assert status == 409, "x is a VM's name"
    env.group("web", ["w2", "w3"])
    assert env.ctl.api("DELETE", "/ctfw/v1/vms/w1")[0] == 204, "no group lists it now"
    assert env.ctl.api("DELETE", f"/ctfw/v1/pairs/{pair_id}")[0] == 204
    assert env.ctl.api("DELETE", "/ctfw/v1/groups/web")[0] == 204
    assert env.ctl.api("GET", "/ctfw/v1/groups/web")[0] == 404


def test_pairs_between_a_vm_and_a_group(estate: Estate) -> None:
    env, e = estate.env, estate
    env.pair("x", "db", "tcp", "5432")  # VM -> group
    env.pair("web", "x", "tcp", "80")  # group -> VM
    at_5432 = [e["d1"], e["d2"], e["d3"], e["x"]]
    with servers(at_5432, "tcp", 5432), servers([e["x"], e["w1"], e["d1"]], "tcp", 80):
        watch = [Sniffer(e["w1"], lab.PROBE)]
        for d in ("d1", "d2", "d3"):
            assert e["x"].tcp(e[d].ip, 5432), f"x -> {d} tcp/5432"
        assert e["x"].tcp(v6(e["d3"]), 5432), "x -> d3 over IPv6"
        assert seen(watch) == [0], "w1 saw none of x's traffic to db"
        watch = [Sniffer(e["d1"], lab.PROBE)]
        for w in ("w1", "w2", "w3"):
            assert e[w].tcp(e["x"].ip, 80), f"{w} -> x tcp/80"
        assert seen(watch) == [0], "d1 saw none of web's traffic to x"
        sniffed = refused([
            (e["d1"], e["x"], 5432, 41031),  # db only answers x
            (e["x"], e["w1"], 80, 41032),  # x only answers web
            (e["d2"], e["x"], 80, 41033),  # db is not web
            (e["w1"], e["d1"], 5432, 41034),  # web -> db is no pair here
            (e["x"], e["d1"], 80, 41035),  # another port
        ])  # fmt: skip
        assert sniffed == [0] * 5


def test_two_group_pairs_do_not_mix_their_services(estate: Estate) -> None:
    env, e = estate.env, estate
    env.group("ops", ["w3", "x"])  # w3 is in web and in ops
    env.pair("web", "db", "tcp", "5432")
    env.pair("ops", "db", "tcp", "22")
    with servers([e["d1"], e["d2"]], "tcp", 5432), servers([e["d1"], e["d2"]], "tcp", 22):
        assert e["w1"].tcp(e["d1"].ip, 5432), "web -> db tcp/5432"
        assert e["x"].tcp(e["d2"].ip, 22), "ops -> db tcp/22"
        assert e["w3"].tcp(e["d1"].ip, 22) and e["w3"].tcp(e["d2"].ip, 5432), "w3: both"
        sniffed = refused([
            (e["w1"], e["d1"], 22, 41041),  # web has no tcp/22
            (e["w2"], e["d2"], 22, 41042),
            (e["x"], e["d2"], 5432, 41043),  # ops has no tcp/5432
        ])  # fmt: skip
        assert sniffed == [0] * 3


def test_a_reply_goes_only_to_the_member_that_opened_the_connection(estate: Estate) -> None:
    """The group pair's mark says web -> db, not which member: a db member must not be
    able to steer a reply of w1's connection to another web member (or flood it)."""
    env, e = estate.env, estate
    env.pair("web", "db", "udp", "5353")
    d1, w1, w2 = e["d1"], e["w1"], e["w2"]
    with servers([d1], "udp", 5353):
        assert w1.udp(d1.ip, 5353, sport=41051), "w1's connection 41051 -> d1:5353"
    mark = b"ctfw-groups-reply-" + secrets.token_hex(6).encode()

    def reply(dst_mac: str) -> bytes:
        return frames.udp_frame(d1.mac, dst_mac, d1.ip, w1.ip, mark, dst_port=41051,
                                src_port=5353)  # fmt: skip

    watch = [Sniffer(w1, mark), Sniffer(w2, mark), Sniffer(e["w3"], mark)]
    d1.send_frame(reply(w2.mac))  # steered to another web member
    d1.send_frame(reply("ff:ff:ff:ff:ff:ff"))
    d1.send_frame(reply(w1.mac))  # control: a true late reply
    assert seen(watch) == [1, 0, 0], "only w1 got its reply"
