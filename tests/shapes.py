"""A policy that makes every kind of flow the compiler knows, shared by unit and
integration tests: each packing, parsing and read-back check runs over all of them."""

from __future__ import annotations

from ryu_ctfw.compiler import Attachment, compile_switch
from ryu_ctfw.policy import Group, Network, PairRequest, Policy, Vm

MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"
MAC3 = "52:54:00:00:00:0c"
MAC5 = "52:54:00:00:00:0e"
MAC6 = "52:54:00:00:00:0f"


def round_trip_policy() -> tuple[Policy, dict[str, Attachment]]:
    """The seed, plus a tcp range, an icmp and a udp pair, a dual-stack VM, a MAC-only VM
    and a VM whose MAC is still to be learned; a network on an uplink and two groups, with
    pairs group -> group, a group with itself, VM -> network and network -> group; pairs
    that log."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", MAC1, ("198.18.0.1",)))
    policy.put_vm(Vm("vm2", "tap4", MAC2, ("198.18.0.2",)))
    policy.put_vm(Vm("vm3", "tap5", MAC3, ("198.18.0.3", "2001:db8::3", "fd00::3")))
    policy.put_vm(Vm("vm4", "tap6"))  # MAC to be learned
    policy.put_vm(Vm("vm5", "tap7", MAC5))  # MAC only, no IPs
    policy.add_pair(PairRequest("vm1", "vm2"))
    policy.add_pair(PairRequest("vm1", "vm2", "tcp", "8000-8100"))
    policy.add_pair(PairRequest("vm3", "vm1", "icmp"))
    policy.add_pair(PairRequest("vm2", "vm3", "udp", "53"))
    policy.add_pair(PairRequest("vm5", "vm3", "tcp", "32768-65535"))
    policy.add_pair(PairRequest("vm5", "vm4"))  # not compiled: vm4's MAC is unknown
    policy.put_network(Network("outside", "up1", ("198.19.0.0/24", "2001:db8:19::/48")))
    policy.put_network(Network("internet", "up1", ("0.0.0.0/0", "::/0")))
    policy.put_group(Group("web", ("vm1", "vm3")))
    policy.put_group(Group("db", ("vm2", "vm5", "vm4")))
    policy.add_pair(PairRequest("web", "db", "tcp", "5432"))
    policy.add_pair(PairRequest("web", "web", "icmp"))
    policy.add_pair(PairRequest("vm3", "outside", "udp", "53"))
    policy.add_pair(PairRequest("outside", "web", "tcp", "443"))
    policy.add_pair(PairRequest("db", "internet", "tcp", "80"))
    # A VM of another host, at the fabric port, in a VM pair and a group pair.
    policy.put_vm(Vm("vm6", "vnet6", MAC6, ("198.18.0.6",), switch="brB"))
    policy.add_pair(PairRequest("vm6", "vm1", "tcp", "22"))
    policy.put_group(Group("far", ("vm6",)))
    policy.add_pair(PairRequest("far", "web", "udp", "5353"))
    # Pairs that log their connections: controller2 with a meter on the opening lines.
    policy.add_pair(PairRequest("vm2", "vm1", "tcp", "22", log=True))
    policy.add_pair(PairRequest("db", "web", "udp", "5000", log=True))
    attached = {
        "vm1": Attachment(2, MAC1),
        "vm2": Attachment(3, MAC2),
        "vm3": Attachment(4, MAC3),
        "vm4": Attachment(5, None),
        "vm5": Attachment(65000, MAC5),
        "outside": Attachment(9, None),
        "internet": Attachment(9, None),
        "vm6": Attachment(8, MAC6, remote=True),
    }
    return policy, attached


ROUND_TRIP_FLOWS = compile_switch(*round_trip_policy(), zone=65535)
