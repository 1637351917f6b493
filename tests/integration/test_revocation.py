"""Deleting a pair cuts its open connections at once, and only those."""

from __future__ import annotations

import re
import subprocess
import time

from conftest import Lab

DURATION = 8.0  # room for the streams to start on a loaded machine, and 2 s after the cut


def times(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate(timeout=DURATION + 10)
    return [float(line) for line in out.split() if re.fullmatch(r"\d+\.\d+", line)]


def ping_times(proc: subprocess.Popen[str]) -> list[float]:
    out, _ = proc.communicate(timeout=DURATION + 10)
    return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]


def test_delete_pair_cuts_what_no_other_pair_allows(labenv: Lab) -> None:
    a, b, c = labenv.vm("a", 2, 1), labenv.vm("b", 3, 2), labenv.vm("c", 4, 3)
    any_id = labenv.pair("a", "b")
    labenv.pair("a", "b", "tcp", "22")  # overlaps "any" for ssh
    labenv.pair("c", "b")
    procs = [b.serve("tcp", 22), b.serve("tcp", 2222), b.serve("tcp", 2223, push=True)]
    try:
        ssh = a.stream(b.ip, 22, DURATION)
        echo = a.stream(b.ip, 2222, DURATION)
        push = a.stream(b.ip, 2223, DURATION, push=True)  # only b talks: replies alone
        other = c.stream(b.ip, 2222, DURATION)
        ping = a.popen(["ping", "-n", "-D", "-i", "0.2", "-w", str(int(DURATION)), b.ip])
        time.sleep(2)
        cut = time.time()
        assert labenv.ctl.api("DELETE", f"/ctfw/v1/pairs/{any_id}")[0] == 204
        answered = time.time()  # the switch has confirmed: the promise runs from here
        ssh_t, echo_t, push_t, other_t, ping_t = (
            times(ssh),
            times(echo),
            times(push),
            times(other),
            ping_times(ping),
        )
    finally:
        for p in procs:
            p.kill()
    assert answered - cut < 5, "the change is confirmed in seconds"
    late = answered + 1.0
    for name, seen in (("echo", echo_t), ("push", push_t), ("ping", ping_t)):
        assert any(t < cut for t in seen), f"{name} never worked before the cut"
        assert not [t for t in seen if t > late], f"{name} still passed after the cut: {seen}"
    for name, seen in (("ssh (tcp/22 pair remains)", ssh_t), ("c -> b", other_t)):
        assert any(t > cut + 2 for t in seen), f"{name} should have lived on: {seen}"

    # Adding the pair back lets new connections through again.
    labenv.pair("a", "b")
    srv = b.serve("tcp", 2224)
    try:
        assert a.tcp(b.ip, 2224)
    finally:
        srv.kill()
