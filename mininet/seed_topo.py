"""The seed's lab as a Mininet topology: one switch, vm1 on port 2, vm2 on port 3.

The seed (a blog post, see README.md) plugs two KVM guests into Open vSwitch bridge br0:
VM1 (MAC 52:54:00:60:84:ff) on ofport 2 and VM2 (MAC 52:54:00:99:90:78) on ofport 3.
Here the bridge is the Mininet switch "s1" and the guests are Mininet hosts "vm1" and
"vm2" with the seed's MACs, on the test-only range 198.18.0.0/24 (RFC 2544) instead of
the seed's 192.168.0.0/24, so that they can never be confused with a real network.

By hand (as root), with ryu-manager already running (`ryu-manager ryu_ctfw.app`, which
listens for switches on 6653 and serves the REST API on 127.0.0.1:8080):

    mn --custom mininet/seed_topo.py --topo seed \\
       --switch ovs,datapath=user,protocols=OpenFlow13,failMode=secure \\
       --controller remote,ip=127.0.0.1,port=6653

`datapath=user` because the machine has no openvswitch kernel module: the bridge uses
OVS's userspace (netdev) datapath and its own conntrack. Mininet drives OVS with
ovs-vsctl, so it uses whichever ovsdb-server that finds: the system one
(`service openvswitch-switch start`) or a private one when OVS_RUNDIR (and OVS_LOGDIR,
OVS_DBDIR) are exported in the shell that runs `mn`.

Checksum offload: the userspace datapath does not complete the partial checksums a
veth hands it, so conntrack would see TCP and UDP as invalid (ping works, TCP and UDP
silently do not). The hosts of this topology turn tx checksum offload off on their own
interfaces when Mininet configures them (OffloadFreeHost), so nothing else is needed.
Should you build the hosts some other way, `disable_offload(net)` does it after
`net.start()`, and by hand in the Mininet CLI it is:

    mininet> vm1 ethtool -K vm1-eth0 tx off
    mininet> vm2 ethtool -K vm2-eth0 tx off

Then tell the controller about the VMs and the pair (the switch-side port names are
Mininet's, s1-eth2 and s1-eth3):

    curl -X PUT -d '{"port": "s1-eth2", "mac": "52:54:00:60:84:ff", "ips": ["198.18.0.1"]}' \\
         http://127.0.0.1:8080/ctfw/v1/vms/vm1
    curl -X PUT -d '{"port": "s1-eth3", "mac": "52:54:00:99:90:78", "ips": ["198.18.0.2"]}' \\
         http://127.0.0.1:8080/ctfw/v1/vms/vm2
    curl -X POST -d '{"initiator": "vm1", "responder": "vm2"}' \\
         http://127.0.0.1:8080/ctfw/v1/pairs

and try the seed's Step 4: `vm1 ping -c1 198.18.0.2` works, `vm2 ping -c1 198.18.0.1`
does not. Leave the CLI with `exit`: Mininet deletes the bridge and the links.

Careful on a shared machine: never run `mn -c`, and know that `mn` runs the same
cleanup by itself when it dies of an exception or of Ctrl-C outside its CLI: it kills
every ryu-manager, ping and mnexec by name, deletes every OVS bridge it can see and
every interface named like foo-ethN. `python3 mininet/seed_topo.py [--port 6653]` starts
the same network and CLI without that (it only ever stops what it started).

Tests build the topology with a `prefix` (SeedTopo(prefix="mn1a2b")), which goes in
front of the switch's name and so of the bridge and of its interface names: the
userspace datapath makes host-visible devices with those names, and a prefix keeps one
run from touching another's. The datapath id is set explicitly (1), since Mininet would
otherwise derive it from the first number in the switch's name.

This file is read by `mn --custom` (which executes it and takes `topos`) and imported by
path by tests/integration/test_mininet.py. It must not become a package named
`mininet`: this folder has no __init__.py on purpose, or it would shadow Mininet itself.
"""

from __future__ import annotations

import re
from typing import Any

from mininet.node import Host
from mininet.topo import Topo

SEED_VM1_MAC = "52:54:00:60:84:ff"
SEED_VM2_MAC = "52:54:00:99:90:78"
SEED_VM1_IP = "198.18.0.1/24"
SEED_VM2_IP = "198.18.0.2/24"
SEED_VM1_OFPORT = 2
SEED_VM2_OFPORT = 3
SEED_DPID = "0000000000000001"
# Linux interface names have at most 15 characters; "<prefix>s1-eth2" must fit.
SEED_MAX_PREFIX = 15 - len("s1-eth2")


def disable_host_offload(host: Any) -> None:
    """Turn tx checksum offload off on every interface of a Mininet host, and check it."""
    for intf in host.intfNames():
        if intf == "lo":
            continue
        host.cmd("ethtool", "-K", intf, "tx", "off")
        state = host.cmd("ethtool", "-k", intf)
        if "tx-checksumming: off" not in state:
            raise RuntimeError(
                f"could not turn tx checksum offload off on {host.name}:{intf}"
                f" (is ethtool installed?): {state.strip()[:200]}"
            )


def disable_offload(net: Any) -> None:
    """Turn tx checksum offload off on the interfaces of every host of `net`.

    Call it after net.start(). OffloadFreeHost already does this while Mininet configures
    the hosts; doing it again is harmless and checks that it held.
    """
    for host in net.hosts:
        disable_host_offload(host)


class OffloadFreeHost(Host):
    """A Mininet host whose interfaces compute their own checksums (see the docstring)."""

    def config(self, **params: Any) -> Any:
        result = super().config(**params)
        disable_host_offload(self)
        return result


class SeedTopo(Topo):
    """Switch s1 (the seed's br0), vm1 on its port 2 and vm2 on its port 3."""

    def build(self, prefix: str = "", dpid: str = SEED_DPID) -> None:  # type: ignore[override]
        if prefix and not re.fullmatch(rf"[A-Za-z0-9-]{{1,{SEED_MAX_PREFIX}}}", prefix):
            raise ValueError(f"prefix {prefix!r}: at most {SEED_MAX_PREFIX} letters, digits or '-'")
        switch = self.addSwitch(f"{prefix}s1", dpid=dpid)
        vm1 = self.addHost("vm1", cls=OffloadFreeHost, mac=SEED_VM1_MAC, ip=SEED_VM1_IP)
        vm2 = self.addHost("vm2", cls=OffloadFreeHost, mac=SEED_VM2_MAC, ip=SEED_VM2_IP)
        # Without a prefix Mininet names the switch ends s1-eth2 and s1-eth3 itself.
        self.addLink(
            vm1, switch, port2=SEED_VM1_OFPORT, intfName2=switch_port(prefix, SEED_VM1_OFPORT)
        )
        self.addLink(
            vm2, switch, port2=SEED_VM2_OFPORT, intfName2=switch_port(prefix, SEED_VM2_OFPORT)
        )


def switch_port(prefix: str, ofport: int) -> str:
    """The name of the switch-side interface on `ofport` (Mininet's own scheme)."""
    return f"{prefix}s1-eth{ofport}"


topos = {"seed": SeedTopo}


def _run_by_hand() -> None:
    """`python3 mininet/seed_topo.py`: like the mn command above, minus mn's cleanup."""
    import argparse
    from functools import partial

    from mininet.cli import CLI
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.1", help="controller address")
    parser.add_argument("--port", type=int, default=6653, help="controller OpenFlow port")
    args = parser.parse_args()
    setLogLevel("info")
    net = Mininet(
        topo=SeedTopo(),
        switch=partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="secure"),
        controller=partial(RemoteController, ip=args.ip, port=args.port),
        build=False,
    )
    try:
        net.build()
        net.start()
        disable_offload(net)
        CLI(net)
    finally:
        net.stop()


# `mn --custom` executes this file with __name__ unset, which then reads "builtins".
if __name__ == "__main__":
    _run_by_hand()
