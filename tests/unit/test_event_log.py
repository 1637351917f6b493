"""The connection log's pure parts: the ring and its queries, and packet-ins as events."""

from __future__ import annotations

import pytest
from ryu.lib.packet import ethernet, ipv4, packet, tcp, udp

from ryu_ctfw import events
from ryu_ctfw.compiler import KIND_PAIR, REASON_BY_NAME, TABLE_LOG, TABLE_POLICY, Attachment, cookie
from ryu_ctfw.events import EventLog, Query, query_from_params
from ryu_ctfw.policy import InvalidInput, Network, PairRequest, Policy, Vm

MAC1, MAC2, MAC6 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:06"


def frame(src_mac: str, dst_mac: str, src: str, dst: str, l4: object) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst_mac, src_mac, 0x0800))
    proto = 6 if isinstance(l4, tcp.tcp) else 17
    pkt.add_protocol(ipv4.ipv4(src=src, dst=dst, proto=proto))
    pkt.add_protocol(l4)
    pkt.serialize()
    return bytes(pkt.data)


def udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int) -> bytes:
    return frame(src_mac, dst_mac, src, dst, udp.udp(sport, dport))


def tcp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int) -> bytes:
    return frame(src_mac, dst_mac, src, dst, tcp.tcp(sport, dport, bits=tcp.TCP_SYN))


def add(log: EventLog, **fields: object) -> None:
    base = {"switch": "br0", "vm": None, "peer": None, "protocol": "tcp", "src": None,
            "dst": None, "sport": None, "dport": None, "verdict": "denied",
            "reason": "no-pair", "pair": None}  # fmt: skip
    log.add(**{**base, **fields})


def test_select_answers_the_newest_matches_oldest_first() -> None:
    log = EventLog()
    for i in range(10):
        add(log, vm="vm1" if i % 2 else "vm2", peer="vm3", time=100.0 + i, dport=i)
    assert [e["dport"] for e in log.select(Query(limit=3))] == [7, 8, 9]
    assert [e["dport"] for e in log.select(Query(vm="vm1"))] == [1, 3, 5, 7, 9]
    assert [e["dport"] for e in log.select(Query(vm="vm3", limit=2))] == [8, 9], "peer too"
    assert [e["dport"] for e in log.select(Query(since=107.0))] == [7, 8, 9]
    assert [e["id"] for e in log.select(Query(after=8))] == [9, 10]
    assert log.select(Query(verdict="allowed")) == []


def test_the_ring_keeps_the_latest_and_ids_keep_rising() -> None:
    log = EventLog(size=3)
    for i in range(5):
        add(log, dport=i)
    assert [e["id"] for e in log.select(Query())] == [3, 4, 5]
    assert log.counts == {("denied", "no-pair"): 5}


@pytest.mark.parametrize(
    "params",
    [{"verdict": "maybe"}, {"since": "yesterday"}, {"since": "nan"}, {"since": "-1"},
     {"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"after": "-1"}, {"vmm": "vm1"}],
)  # fmt: skip
def test_bad_queries_are_refused_by_name(params: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as e:
        query_from_params(params)
    assert next(iter(params)) in str(e.value)


def test_a_good_query() -> None:
    q = query_from_params({"verdict": "denied", "vm": "vm1", "since": "1.5", "limit": "7"})
    assert q == Query(verdict="denied", vm="vm1", since=1.5, limit=7)


def policy_and_attachments() -> tuple[Policy, dict[str, Attachment]]:
    p = Policy()
    p.put_vm(Vm("vm1", "tap1", MAC1, ("198.18.0.1",)))
    p.put_vm(Vm("vm2", "tap2", MAC2, ("198.18.0.2",)))
    p.put_vm(Vm("vm6", "vnet6", MAC6, ("198.18.0.6",), switch="brB"))
    p.put_network(Network("outside", "up1", ("198.19.0.0/24",)))
    p.add_pair(PairRequest("vm1", "vm2", "tcp", "22", log=True))
    attached = {
        "vm1": Attachment(1, MAC1),
        "vm2": Attachment(2, MAC2),
        "vm6": Attachment(8, MAC6, remote=True),
        "outside": Attachment(9, None),
    }
    return p, attached


def test_a_denied_packet_names_its_sender_addressee_and_reason() -> None:
    policy, attached = policy_and_attachments()
    frame = udp_frame(MAC2, MAC1, "198.18.0.2", "198.18.0.1", 40000, 53)
    code = REASON_BY_NAME["no-pair"].code
    event = events.describe(policy, attached, 2, frame, TABLE_LOG, cookie(0), code)
    assert event == {"vm": "vm2", "peer": "vm1", "protocol": "udp", "src": "198.18.0.2",
                     "dst": "198.18.0.1", "sport": 40000, "dport": 53, "verdict": "denied",
                     "reason": "no-pair", "pair": None}  # fmt: skip


def test_a_remote_vm_is_told_apart_by_its_mac_and_a_network_by_its_cidrs() -> None:
    policy, attached = policy_and_attachments()
    frame = tcp_frame(MAC6, "52:54:00:ff:ff:ff", "198.18.0.6", "198.19.0.9", 1234, 80)
    code = REASON_BY_NAME["no-pair"].code
    event = events.describe(policy, attached, 8, frame, TABLE_LOG, cookie(0), code)
    assert (event["vm"], event["peer"], event["protocol"]) == ("vm6", "outside", "tcp")
    # From the network's port: no VM sent it.
    frame = tcp_frame("52:54:00:aa:aa:aa", MAC1, "198.19.0.9", "198.18.0.1", 1234, 80)
    event = events.describe(policy, attached, 9, frame, TABLE_LOG, cookie(0), code)
    assert (event["vm"], event["peer"]) == (None, "vm1")


def test_an_admitted_connection_names_its_pair() -> None:
    policy, attached = policy_and_attachments()
    frame = tcp_frame(MAC1, MAC2, "198.18.0.1", "198.18.0.2", 5555, 22)
    event = events.describe(policy, attached, 1, frame, TABLE_POLICY, cookie(KIND_PAIR, 1), 0)
    assert (event["verdict"], event["reason"], event["pair"]) == ("allowed", "admitted", 1)
    assert (event["vm"], event["peer"], event["dport"]) == ("vm1", "vm2", 22)


def test_a_frame_that_does_not_parse_is_still_an_event() -> None:
    policy, attached = policy_and_attachments()
    code = REASON_BY_NAME["tagged"].code
    event = events.describe(policy, attached, 1, b"\x01\x02", TABLE_LOG, cookie(0), code)
    assert (event["vm"], event["reason"], event["protocol"]) == ("vm1", "tagged", "unknown")
