"""`ctfw` end to end: the console script's code run as a program against the running
controller and a real Open vSwitch, with real traffic between namespace VMs.

What the CLI prints is checked against what the API answers (GET with lab.Controller.api),
what it changes against the switch's flows, the state file and real connections; what it
refuses against all of those staying exactly as they were."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab
from sniff import Sniffer, seen

from ryu_ctfw import compiler, lab

ROOT = Path(__file__).parents[2]
# Counters and ages move between two reads of the same flow.
LIVE = ("packets", "bytes", "duration")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def rows(self) -> list[list[str]]:
        return [line.split() for line in self.out.splitlines()]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CTFW_")}
    return {**clean, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def ctfw(labenv: Lab, *argv: str, environ: dict[str, str] | None = None) -> Ran:
    """`ctfw --url <this controller> ARGV`, as a program (python -m ryu_ctfw.cli)."""
    url = f"http://127.0.0.1:{labenv.ctl.api_port}"
    done = subprocess.run([sys.executable, "-m", "ryu_ctfw.cli", "--url", url, *argv],
                          capture_output=True, text=True, env={**env(), **(environ or {})},
                          timeout=60)  # fmt: skip
    return Ran(done.returncode, done.stdout, done.stderr)


def api(labenv: Lab, path: str) -> Any:
    return labenv.ctl.ok("GET", f"/ctfw/v1{path}")


def still(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k not in LIVE} for f in flows]


@dataclass
class Snapshot:
    """Everything a refused or dry-run command must leave as it was."""

    stored: bytes
    switch: dict[str, str]
    answers: dict[str, Any]


def snapshot(labenv: Lab) -> Snapshot:
    return Snapshot(
        labenv.ctl.stored_bytes(),
        lab.flow_table(labenv.ovs.dump_flows(labenv.bridge, "--no-stats")),
        {p: api(labenv, p) for p in ("/vms", "/pairs", "/groups", "/networks")},
    )


def two_vms(labenv: Lab) -> tuple[lab.Vm, lab.Vm]:
    """vm1 (ofport 2) and vm2 (ofport 3) plugged in, registered with `ctfw vm add`."""
    vm1 = labenv.vm("vm1", 2, 1, register=False)
    vm2 = labenv.vm("vm2", 3, 2, register=False)
    for name, vm in (("vm1", vm1), ("vm2", vm2)):
        ran = ctfw(labenv, "vm", "add", name, "--port", vm.port, "--mac", vm.mac,
                   "--ip", vm.ip)  # fmt: skip
        assert ran.code == 0, ran.err
        assert ran.out.startswith(f"vm {name} created\n")
    return vm1, vm2


def pair_cookie(pair_id: int) -> str:
    return f"0x{compiler.cookie(compiler.KIND_PAIR, pair_id):x}"


def test_pair_lifecycle_with_real_traffic(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    assert api(labenv, "/vms/vm1")["ofport"] == 2
    assert api(labenv, "/vms/vm1")["ips"] == [vm1.ip]
    with lab.servers(vm2, ("tcp", 22), ("tcp", 23)), lab.servers(vm1, ("tcp", 22)):
        watch = [Sniffer(vm2, lab.PROBE)]
        assert not vm1.tcp(vm2.ip, 22, timeout=1), "no pair yet"
        assert seen(watch) == [0], "vm2 saw nothing before the pair"

        ran = ctfw(labenv, "pair", "add", "vm1", "vm2", "--tcp", "22")
        assert ran.code == 0, ran.err
        pair_id = api(labenv, "/pairs")["pairs"][0]["id"]
        assert ran.out.startswith(f"pair {pair_id} added\n")
        assert [str(pair_id), "vm1", "vm2", "tcp/22", "no"] in ran.rows()

        assert vm1.tcp(vm2.ip, 22), "the pair's service"
        watch = [Sniffer(vm2, lab.PROBE), Sniffer(vm1, lab.PROBE)]
        assert not vm1.tcp(vm2.ip, 23, timeout=1), "another port"
        assert not vm2.tcp(vm1.ip, 22, timeout=1), "the other way"
        assert seen(watch) == [0, 0], "neither saw the connections no pair admits"

        # pair ls: the table, and --json exactly the API's answer.
        ran = ctfw(labenv, "pair", "ls")
        assert ran.code == 0 and ran.rows()[1:] == [[str(pair_id), "vm1", "vm2", "tcp/22", "no"]]
        ran = ctfw(labenv, "--json", "pair", "ls")
        assert ran.code == 0 and ran.json() == api(labenv, "/pairs")

        # flows --vm: every flow of the pair (by cookie) and of vm1's port, none of vm2's.
        ran = ctfw(labenv, "--json", "flows", "--vm", "vm1")
        assert ran.code == 0, ran.err
        mine = ran.json()["flows"]
        every = api(labenv, "/flows")["flows"]
        pair_flows = [f for f in every if f["cookie"] == pair_cookie(pair_id)]
        port2 = [f for f in every if f["match"].get("in_port") == 2]
        vm2_port = f"0x{compiler.cookie(compiler.KIND_VM, 3):x}"
        assert pair_flows and port2
        assert all(f in still(mine) for f in still(pair_flows + port2))
        # vm2's own port lines (the pair's reply lines match in_port=3 too: they stay).
        assert not [f for f in mine if f["cookie"] != pair_cookie(pair_id)
                    and (f["cookie"] == vm2_port or f["match"].get("in_port") == 3)]  # fmt: skip
        assert [f for f in every if f["cookie"] == vm2_port], "vm2 has port lines to leave out"
        assert set(map(json.dumps, still(mine))) <= set(map(json.dumps, still(every)))
        assert sum(f["packets"] for f in mine if f["cookie"] == pair_cookie(pair_id)) > 0, (
            "the pair's lines counted the ssh connection")  # fmt: skip
        ran = ctfw(labenv, "flows", "--vm", "vm1")
        assert ran.rows()[0] == ["DPID", "PACKETS", "BYTES", "FLOW"]
        assert len(ran.rows()) == len(mine) + 1

        # pair rm: the service is gone, on the switch and for real.
        ran = ctfw(labenv, "pair", "rm", str(pair_id))
        assert (ran.code, ran.out) == (0, f"pair {pair_id} removed\n"), ran.err
        assert api(labenv, "/pairs") == {"pairs": []}
        assert not [f for f in api(labenv, "/flows")["flows"]
                    if f["cookie"] == pair_cookie(pair_id)]  # fmt: skip
        watch = [Sniffer(vm2, lab.PROBE)]
        assert not vm1.tcp(vm2.ip, 22, timeout=1), "the pair is gone"
        assert seen(watch) == [0]
        ran = ctfw(labenv, "pair", "rm", str(pair_id))
        assert ran.code == 1 and f"{pair_id}" in ran.err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["pair", "add", "vm1", "nosuch", "--tcp", "22"], 1),  # 404
        (["pair", "add", "vm1", "vm2", "--tcp", "70000"], 1),  # 400
        (["pair", "add", "vm1", "vm1"], 1),  # a VM paired with itself
        (["pair", "add", "vm1", "vm2", "--tcp", "22"], 5),  # the same pair exists: 409
        (["vm", "add", "vm3", "--port", "tap9", "--mac", "zz:zz"], 1),  # bad MAC
        (["vm", "rm", "vm2"], 5),  # a pair uses it
        (["vm", "rm", "nosuch"], 1),
        (["group", "add", "web", "vm1", "nosuch"], 1),
        (["network", "add", "out", "--port", "up0", "--cidr", "198.19.0.1/24"], 1),  # host bits
        (["switch", "set", "nosuchbridge", "--fabric-port", "fab0"], 1),
        (["pair", "rm", "999"], 1),
    ],
)
def test_refused_commands_exit_nonzero_and_change_nothing(
    labenv: Lab, argv: list[str], code: int
) -> None:
    vm1, vm2 = two_vms(labenv)
    labenv.pair("vm1", "vm2", "tcp", "22")
    before = snapshot(labenv)
    ran = ctfw(labenv, *argv)
    assert ran.code == code, ran
    assert ran.out == ""
    assert ran.err.startswith("ctfw: ") and len(ran.err.strip()) > len("ctfw: ")
    assert snapshot(labenv) == before
    with lab.servers(vm2, ("tcp", 22)):
        assert vm1.tcp(vm2.ip, 22), "the pair still works"


def test_api_error_message_is_the_apis(labenv: Lab) -> None:
    two_vms(labenv)
    body = {"initiator": "vm1", "responder": "nosuch", "protocol": "tcp", "ports": "22"}
    status, answer = labenv.ctl.api("POST", "/ctfw/v1/pairs", body)
    assert status == 404
    ran = ctfw(labenv, "pair", "add", "vm1", "nosuch", "--tcp", "22")
    assert (ran.code, ran.err) == (1, f"ctfw: {answer['error']}\n")


def test_json_output_is_the_apis(labenv: Lab) -> None:
    two_vms(labenv)
    labenv.group("web", ["vm1"])
    labenv.pair("web", "vm2", "icmp")
    for argv, path in (
        (["vm", "ls"], "/vms"),
        (["vm", "show", "vm2"], "/vms/vm2"),
        (["group", "ls"], "/groups"),
        (["network", "ls"], "/networks"),
        (["pair", "ls"], "/pairs"),
    ):
        ran = ctfw(labenv, "--json", *argv)
        assert ran.code == 0, ran.err
        assert ran.json() == api(labenv, path), argv
    ran = ctfw(labenv, "--json", "flows")
    assert still(ran.json()["flows"]) == still(api(labenv, "/flows")["flows"])
    ran = ctfw(labenv, "--json", "switch", "ls")
    assert ran.code == 0
    switches = api(labenv, "/switches")["switches"]
    drop = "packet_ins"  # moves with every packet the switch sends up
    assert [{k: v for k, v in s.items() if k != drop} for s in ran.json()["switches"]] == [
        {k: v for k, v in s.items() if k != drop} for s in switches]  # fmt: skip
    # And the tables show the same things.
    rows = ctfw(labenv, "vm", "ls").rows()
    assert rows[1][:3] == ["vm1", str(api(labenv, "/vms/vm1")["id"]), f"ct{labenv.token}vm1"]
    dpid = switches[0]["dpid"]
    assert rows[1][-1] == f"{dpid}:2" and rows[2][-1] == f"{dpid}:3"
    rows = ctfw(labenv, "switch", "ls").rows()
    assert rows[1][:3] == [dpid, labenv.bridge, "yes"]


def test_groups_networks_and_switch_settings(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    assert ctfw(labenv, "group", "add", "web").code == 0
    assert ctfw(labenv, "group", "join", "web", "vm1", "vm2").code == 0
    assert api(labenv, "/groups/web")["members"] == ["vm1", "vm2"]
    assert ctfw(labenv, "group", "leave", "web", "vm2").code == 0
    assert api(labenv, "/groups/web")["members"] == ["vm1"]
    assert ctfw(labenv, "pair", "add", "web", "vm2", "--icmp").code == 0
    assert vm1.ping(vm2.ip), "web (vm1) may ping vm2"
    assert ctfw(labenv, "group", "rm", "web").code == 5, "a pair uses it"

    ran = ctfw(labenv, "network", "add", "out", "--port", "up0", "--cidr", "198.19.0.0/24",
               "2001:db8:19::/48")  # fmt: skip
    assert ran.code == 0, ran.err
    assert api(labenv, "/networks/out")["cidrs"] == ["198.19.0.0/24", "2001:db8:19::/48"]
    assert ctfw(labenv, "network", "rm", "out").code == 0
    assert api(labenv, "/networks") == {"networks": []}

    dpid = api(labenv, "/switches")["switches"][0]["dpid"]
    ran = ctfw(labenv, "switch", "set", labenv.bridge, "--fabric-port", "fab0")
    assert ran.code == 0, ran.err
    assert api(labenv, f"/switches/{dpid}")["fabric_port"] == "fab0"
    assert ctfw(labenv, "switch", "set", dpid, "--clear").code == 0
    assert api(labenv, f"/switches/{dpid}")["fabric_port"] is None


def test_dry_run_changes_nothing(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    pair_id = labenv.pair("vm1", "vm2", "tcp", "22")
    before = snapshot(labenv)
    for argv in (
        ["pair", "rm", str(pair_id)],
        ["pair", "add", "vm2", "vm1", "--udp", "53"],
        ["vm", "add", "vm1", "--port", "elsewhere"],
        ["group", "add", "web", "vm1"],
    ):
        ran = ctfw(labenv, *argv, "--dry-run")
        assert ran.code == 0, (argv, ran.err)
        assert ran.out.startswith("dry run, nothing changed; the call would answer 2"), ran.out
        assert snapshot(labenv) == before, argv
    ran = ctfw(labenv, "--json", "pair", "rm", str(pair_id), "--dry-run")
    assert ran.code == 0
    answer = ran.json()
    assert (answer["dry_run"], answer["status"], answer["answer"]) == (True, 204, None)
    assert snapshot(labenv) == before
    # A dry run the API refuses exits as the real call would.
    ran = ctfw(labenv, "vm", "rm", "vm2", "--dry-run")
    assert ran.code == 5 and snapshot(labenv) == before
    with lab.servers(vm2, ("tcp", 22)):
        assert vm1.tcp(vm2.ip, 22), "the pair still works"


def test_token_from_option_or_environment(labenv: Lab) -> None:
    """With api_token set, a change needs it: without it or with a wrong one the CLI exits 1
    with the API's 401 message and nothing changes; --token or CTFW_TOKEN bring it."""
    labenv.ctl.stop()
    labenv.ctl.options = "api_token = s3cret-token\n"
    labenv.ctl.start()
    labenv.ctl.wait_connected(labenv.bridge)
    vm1 = labenv.vm("vm1", 2, 1, register=False)
    add = ["vm", "add", "vm1", "--port", vm1.port, "--ip", vm1.ip]
    before = snapshot(labenv)
    for argv, environ in (
        (add, {}),
        (["--token", "wrong", *add], {}),
        (add, {"CTFW_TOKEN": "wrong"}),
        (["--token", "wrong", *add], {"CTFW_TOKEN": "s3cret-token"}),  # the option wins
    ):
        ran = ctfw(labenv, *argv, environ=environ)
        assert ran.code == 1, (argv, environ, ran)
        assert "Authorization: Bearer <api_token>" in ran.err
        assert snapshot(labenv) == before
    assert ctfw(labenv, "vm", "ls").code == 0, "reads need no token"
    ran = ctfw(labenv, "--token", "s3cret-token", *add)
    assert ran.code == 0, ran.err
    ran = ctfw(labenv, "vm", "rm", "vm1", environ={"CTFW_TOKEN": "s3cret-token"})
    assert ran.code == 0, ran.err
    assert api(labenv, "/vms") == {"vms": []}


def test_controller_gone_exits_3(labenv: Lab) -> None:
    assert ctfw(labenv, "vm", "ls").code == 0
    labenv.ctl.stop()
    ran = ctfw(labenv, "vm", "ls")
    assert ran.code == 3 and "cannot reach the controller" in ran.err


# --- explain, events, policy (their endpoints: issue 13, points 1, 3, 5) -------------------
def test_explain_agrees_with_real_traffic(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    assert ctfw(labenv, "pair", "add", "vm1", "vm2", "--tcp", "22").code == 0
    with lab.servers(vm2, ("tcp", 22), ("tcp", 5432)), lab.servers(vm1, ("tcp", 22)):
        ran = ctfw(labenv, "explain", "vm1", "vm2", "tcp/22")
        assert ran.code == 0, ran.err
        assert ran.out.startswith("ALLOWED: ")
        assert vm1.tcp(vm2.ip, 22), "explain said allowed"
        for source, dest, service, target in (
            ("vm1", "vm2", "tcp/5432", (vm1, vm2, 5432)),
            ("vm2", "vm1", "tcp/22", (vm2, vm1, 22)),
        ):
            ran = ctfw(labenv, "explain", source, dest, service)
            assert ran.code == 4, (source, dest, service, ran.err)
            assert ran.out.startswith("DENIED: ")
            client, server, port = target
            watch = [Sniffer(server, lab.PROBE)]
            assert not client.tcp(server.ip, port, timeout=1), "explain said denied"
            assert seen(watch) == [0]  # fmt: skip
    params = "from=vm1&to=vm2&protocol=tcp&port=22"
    ran = ctfw(labenv, "--json", "explain", "vm1", "vm2", "tcp/22")
    want = api(labenv, f"/explain?{params}")
    got = ran.json()
    assert {k: got[k] for k in ("verdict", "why", "pairs")} == {
        k: want[k] for k in ("verdict", "why", "pairs")}  # fmt: skip
    assert still(got["flows"]) == still(want["flows"]) and got["flows"]
    ran = ctfw(labenv, "explain", "vm1", "nosuch", "tcp/22")
    assert ran.code == 1 and ran.err.startswith("ctfw: ")


def _wait_denied(labenv: Lab, vm: lab.Vm, dport: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        ran = ctfw(labenv, "--json", "events", "--denied", "--vm", "vm2")
        assert ran.code == 0, ran.err
        return [e for e in ran.json()["events"] if e["dport"] == dport and e["src"] == vm.ip]

    return lab.wait_for(found, 10, f"a denied event to port {dport}")


def test_events_show_and_follow_denied_attempts(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    assert ctfw(labenv, "pair", "add", "vm1", "vm2", "--tcp", "22").code == 0
    assert not vm2.tcp(vm1.ip, 2222, timeout=1)
    (event, *_) = _wait_denied(labenv, vm2, 2222)
    assert (event["verdict"], event["vm"], event["protocol"]) == ("denied", "vm2", "tcp")
    assert (event["dst"], event["reason"]) == (vm1.ip, "no-pair")
    assert event in api(labenv, "/events?verdict=denied&vm=vm2")["events"]
    rows = ctfw(labenv, "events", "--denied", "--since", "5m").rows()
    assert rows[0][:4] == ["ID", "TIME", "VERDICT", "REASON"]
    assert [r for r in rows[1:] if f"{vm1.ip}:2222" in r and "denied" in r]

    with Followed(labenv, "--denied", "--vm", "vm2", "--since", f"@{event['time'] + 1e-6}") as log:
        assert not vm2.tcp(vm1.ip, 2323, timeout=1)
        # Other denied chatter (IPv6 multicast from the namespaces) may come first.
        followed = log.until(lambda e: e["dport"] == 2323, 10)
        assert all(e["verdict"] == "denied" and "vm2" in (e["vm"], e["peer"]) for e in followed)
        assert (followed[-1]["vm"], followed[-1]["src"], followed[-1]["dst"]) == (
            "vm2", vm2.ip, vm1.ip)  # fmt: skip
        assert all(e["time"] > event["time"] for e in followed), "--since: only newer ones"
        code, err = log.interrupt()
        assert code == 0, err


class Followed:
    """`ctfw --json events --follow ARGS` running; its lines read by a thread (a line may
    wait in the pipe's buffer, where select() does not see it)."""

    def __init__(self, labenv: Lab, *argv: str) -> None:
        url = f"http://127.0.0.1:{labenv.ctl.api_port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ryu_ctfw.cli", "--url", url, "--json", "events", "--follow",
             "--interval", "0.2", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        out = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in out or ()], daemon=True).start()

    def __enter__(self) -> Followed:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float) -> list[dict[str, Any]]:
        """The events printed from now up to the first one `done` accepts."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while not got or not done(got[-1]):
            try:
                got.append(
                    json.loads(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
                )
            except queue.Empty:
                raise AssertionError(
                    f"the followed log did not show it in {timeout} s: {got}"
                ) from None
        return got

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and what it said on standard error."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        return code, self.proc.stderr.read() if self.proc.stderr else ""


def test_follow_goes_on_across_a_controller_restart(labenv: Lab) -> None:
    """A restart is a non-event for a followed log too: the CLI waits for the controller,
    and the new process's events (ids from 1 again) are shown."""
    vm1, vm2 = two_vms(labenv)
    assert not vm2.tcp(vm1.ip, 2222, timeout=1)
    _wait_denied(labenv, vm2, 2222)
    with Followed(labenv, "--denied", "--vm", "vm2") as log:
        before = log.until(lambda e: e["dport"] == 2222, 10)
        labenv.ctl.stop()
        labenv.ctl.start()
        labenv.ctl.wait_connected(labenv.bridge)
        assert not vm2.tcp(vm1.ip, 2424, timeout=1)
        (event, *_) = _wait_denied(labenv, vm2, 2424)
        followed = log.until(lambda e: e["dport"] == 2424, 15)
        assert followed[-1] == event
        # Nothing printed twice (a retransmitted SYN to 2222 is a new event, shown once).
        shown = [(e["time"], e["sport"], e["dport"]) for e in before + followed]
        assert len(shown) == len(set(shown)), "nothing old again"
        code, err = log.interrupt()
        assert code == 0, err
        assert "still trying" in err and "answers again" in err


def test_logged_pair_shows_allowed_connections(labenv: Lab) -> None:
    vm1, vm2 = two_vms(labenv)
    ran = ctfw(labenv, "pair", "add", "vm1", "vm2", "--tcp", "22", "--log")
    assert ran.code == 0, ran.err
    pair_id = api(labenv, "/pairs")["pairs"][0]["id"]
    assert api(labenv, f"/pairs/{pair_id}")["log"] is True
    assert [r[-1] for r in ctfw(labenv, "pair", "ls").rows()[1:]] == ["yes"]
    with lab.servers(vm2, ("tcp", 22)):
        assert vm1.tcp(vm2.ip, 22)

    def allowed() -> list[dict[str, Any]]:
        ran = ctfw(labenv, "--json", "events", "--allowed", "--vm", "vm1")
        return [e for e in ran.json()["events"] if e["pair"] == pair_id and e["dport"] == 22]

    (event, *_) = lab.wait_for(allowed, 10, "the logged pair's connection")
    assert (event["verdict"], event["src"], event["dst"]) == ("allowed", vm1.ip, vm2.ip)


def test_policy_export_and_apply_round_trip(labenv: Lab, tmp_path: Path) -> None:
    vm1, vm2 = two_vms(labenv)
    assert ctfw(labenv, "pair", "add", "vm1", "vm2", "--tcp", "22").code == 0
    saved = tmp_path / "policy.json"
    ran = ctfw(labenv, "policy", "export", str(saved))
    assert ran.code == 0, ran.err
    doc = json.loads(saved.read_text())
    assert doc == api(labenv, "/policy")
    assert json.loads(ctfw(labenv, "policy", "export").out) == doc

    # The pair taken out of the file: a dry run changes nothing, the apply cuts the pair.
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({**doc, "pairs": []}))
    before = snapshot(labenv)
    ran = ctfw(labenv, "policy", "apply", str(cut), "--dry-run")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("dry run, nothing changed")
    assert snapshot(labenv) == before
    with lab.servers(vm2, ("tcp", 22)):
        assert vm1.tcp(vm2.ip, 22), "the dry run cut nothing"
        assert ctfw(labenv, "policy", "apply", str(cut)).code == 0
        assert api(labenv, "/pairs") == {"pairs": []}
        watch = [Sniffer(vm2, lab.PROBE)]
        assert not vm1.tcp(vm2.ip, 22, timeout=1), "applied: the pair is gone"
        assert seen(watch) == [0]

        # A document naming a VM it does not have is refused and changes nothing.
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**doc, "pairs": [{"initiator": "vm1", "responder": "ghost",
                                                     "protocol": "any"}]}))  # fmt: skip
        before = snapshot(labenv)
        ran = ctfw(labenv, "policy", "apply", str(bad))
        assert ran.code == 1 and ran.err.startswith("ctfw: ")
        assert snapshot(labenv) == before

        # Back to the saved file: the pair is there again.
        assert ctfw(labenv, "policy", "apply", str(saved)).code == 0
        assert vm1.tcp(vm2.ip, 22), "the saved policy's pair"


def test_dry_run_plan_is_what_the_real_call_then_does(labenv: Lab) -> None:
    """The plan's flows per switch are the switch's own difference after the real call, and
    the pair removed is named as cut (issue 13, point 4)."""
    two_vms(labenv)
    pair_id = labenv.pair("vm1", "vm2", "tcp", "22")
    pair = api(labenv, f"/pairs/{pair_id}")
    dpid = api(labenv, "/switches")["switches"][0]["dpid"]
    texts_before = {f["text"] for f in api(labenv, "/flows")["flows"]}
    ran = ctfw(labenv, "--json", "pair", "rm", str(pair_id), "--dry-run")
    assert ran.code == 0, ran.err
    plan = ran.json()
    assert plan["cut"] == [pair]
    (switch,) = plan["switches"]
    assert switch["dpid"] == dpid
    assert switch["delete"], "the pair's lines go"
    rows = ctfw(labenv, "pair", "rm", str(pair_id), "--dry-run").out.splitlines()
    assert f"switch {dpid} {labenv.bridge}: +{len(switch['add'])}, -{len(switch['delete'])}" in rows
    assert f"  pair {pair_id}: vm1 -> vm2 tcp/22" in rows
    assert [r[4:] for r in rows if r.startswith("  - ")] == switch["delete"]

    assert ctfw(labenv, "pair", "rm", str(pair_id)).code == 0
    texts_after = {f["text"] for f in api(labenv, "/flows")["flows"]}
    assert texts_after == (texts_before - set(switch["delete"])) | set(switch["add"])
