"""Fixtures for tests against a real Open vSwitch (userspace datapath) and real traffic.

Each test gets its own private OVS in its tmp folder, a bridge with a unique name, a
`ryu-manager ryu_ctfw.app`, and namespace VMs on test-only addresses (198.18.0.0/15).
Everything is stopped by pid and deleted afterwards. Without root or OVS the fixtures
raise LabError: the test errors with the reason, it never passes silently.

Every process that runs these tests (each pytest-xdist worker, or pytest itself without
xdist) first moves into a network namespace of its own (`lab.isolate_network`), so the
workers' Open vSwitch instances, controllers and veths never meet, and none of them
touches the machine's own network namespace.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ryu_ctfw import lab

pytestmark = pytest.mark.integration


def pytest_configure(config: pytest.Config) -> None:
    # Runs when this file is loaded, which is at collection, before any test. The xdist
    # controller only hands out tests and starts nothing: it stays where it is.
    xdist_controller = config.getoption("dist", "no") != "no" and not hasattr(config, "workerinput")
    if xdist_controller or os.geteuid() != 0:
        return  # without root, every lab fixture fails with the reason instead
    try:
        lab.isolate_network()
    except lab.LabError as e:
        raise pytest.UsageError(f"cannot isolate the integration tests: {e}") from e


SEED_MACS = {"vm1": "52:54:00:60:84:ff", "vm2": "52:54:00:99:90:78"}


@dataclass
class Lab:
    root: Path
    ovs: lab.Ovs
    ctl: lab.Controller
    bridge: str
    token: str
    vms: dict[str, lab.Vm] = field(default_factory=dict)

    def vm(
        self,
        name: str,
        ofport: int,
        host: int,
        mac: str | None = None,
        register: bool = True,
        give_mac: bool = True,
        ipv6: bool = False,
        bridge: str | None = None,
    ) -> lab.Vm:
        """A namespace VM `name` on `ofport` with 198.18.0.<host>/24 (and, with `ipv6`,
        2001:db8::<host>/64), registered over REST with its port, IPs and MAC."""
        mac = mac or SEED_MACS.get(name) or f"52:54:00:00:00:{host:02x}"
        ips = [f"198.18.0.{host}/24"] + ([f"2001:db8::{host:x}/64"] if ipv6 else [])
        vm = lab.Vm(ns=f"ctfw-{self.token}-{name}", port=f"ct{self.token}{name}", mac=mac, ips=ips)
        self.vms[name] = vm.create()
        vm.plug(self.ovs, bridge or self.bridge, ofport)
        if register:
            body: dict = {"port": vm.port, "ips": [ip.split("/")[0] for ip in ips]}
            if give_mac:
                body["mac"] = mac
            self.ctl.ok("PUT", f"/ctfw/v1/vms/{name}", body)
        return vm

    def pair(
        self, initiator: str, responder: str, protocol: str = "any", ports: str | None = None
    ) -> int:
        body = {"initiator": initiator, "responder": responder, "protocol": protocol}
        if ports is not None:
            body["ports"] = ports
        return self.ctl.ok("POST", "/ctfw/v1/pairs", body)["id"]

    def flows(self) -> list[dict]:
        return self.ctl.ok("GET", "/ctfw/v1/flows")["flows"]

    def counter(self, text_part: str, table: int = 1) -> int:
        """Packets of the one flow in `table` whose ovs-ofctl text contains `text_part`."""
        hits = [f for f in self.flows() if f["table"] == table and text_part in f["text"]]
        assert len(hits) == 1, f"expected one flow matching {text_part!r}, got {hits}"
        return hits[0]["packets"]

    def counter_reaches(self, text_part: str, at_least: int, table: int = 1) -> int:
        """Wait for a counter: the userspace datapath reports packets a little late."""
        lab.wait_for(
            lambda: self.counter(text_part, table) >= at_least,
            5,
            f"{text_part} to count {at_least} packets",
        )
        return self.counter(text_part, table)

    def drop_counter(self) -> int:
        return self.counter("priority=0 actions=drop")

    # --- networks, groups and the world behind an uplink (issue 11) ----------------------
    def network(self, name: str, port: str, cidrs: list[str]) -> dict:
        """PUT a network: addresses `cidrs` reached through bridge port `port`."""
        return self.ctl.ok("PUT", f"/ctfw/v1/networks/{name}", {"port": port, "cidrs": cidrs})

    def group(self, name: str, members: list[str]) -> dict:
        """PUT a group with exactly these members (VM names)."""
        return self.ctl.ok("PUT", f"/ctfw/v1/groups/{name}", {"members": members})

    def uplink(
        self, ofport: int = 9, network: str | None = "outside", bridge: str | None = None
    ) -> lab.Uplink:
        """A router namespace on `ofport` (lab.GATEWAY4 / lab.GATEWAY6 on the bridge side)
        and an outside namespace behind it (lab.OUTSIDE4, lab.OUTSIDE6, ...). Every VM made
        so far gets its default routes via the router (later ones: `lab.default_route`).
        Registered as network `network` with lab.OUTSIDE_CIDRS unless that is None. Torn
        down with the VMs (it sits in `vms` under "uplink:router" and "uplink:outside",
        names no VM can have)."""
        up = lab.Uplink.named(f"ctfw-{self.token}", f"ct{self.token}up")
        vms = list(self.vms.values())
        up.create()
        self.vms["uplink:router"], self.vms["uplink:outside"] = up.router, up.outside
        up.plug(self.ovs, bridge or self.bridge, ofport)
        for vm in vms:
            lab.default_route(vm)
        if network is not None:
            self.network(network, up.port, lab.OUTSIDE_CIDRS)
        return up


def _connect_logs(ovs: lab.Ovs, ctl: lab.Controller) -> str:
    """What both sides logged, for a bridge that never connected."""
    out = [f"ofp port {ctl.ofp_port}, api port {ctl.api_port}"]
    for log in (ctl.log_file, ovs.root / "ovs-vswitchd.log"):
        text = log.read_text() if log.exists() else "(none)"
        out.append(f"--- {log}:\n{text[-3000:]}")
    return "\n".join(out)


@pytest.fixture
def labenv(tmp_path: Path) -> Iterator[Lab]:
    lab.require_root_and_tools()
    token = secrets.token_hex(2)
    ovs = lab.Ovs(tmp_path / "ovs").start()
    ctl = lab.Controller(tmp_path / "ctl")
    env = Lab(tmp_path, ovs, ctl, f"ctbr{token}", token)
    try:
        ctl.start()
        # A fixed dpid: a restarted ovs-vswitchd must come back as the same switch.
        ovs.add_bridge(env.bridge, ctl.ofp_port, dpid=f"00000000{token}0001")
        try:
            ctl.wait_connected(env.bridge)
        except lab.LabError as e:
            raise lab.LabError(f"{e}\n{_connect_logs(ovs, ctl)}") from None
        yield env
    finally:
        ctl.stop()
        for vm in env.vms.values():
            vm.destroy()
        ovs.stop()


@pytest.fixture
def seed(labenv: Lab) -> Lab:
    """The seed's setup: vm1 on ofport 2, vm2 on ofport 3, pair vm1 -> vm2."""
    labenv.vm("vm1", 2, 1)
    labenv.vm("vm2", 3, 2)
    labenv.pair("vm1", "vm2")
    return labenv
