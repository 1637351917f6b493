"""The flow compiler: which flows a switch gets, and how they print."""

from __future__ import annotations

import pytest

from ryu_ctfw.compiler import (
    COOKIE_MASK,
    COOKIE_TAG,
    CT_EST,
    CT_NEW,
    CT_TRK,
    KIND_BASE,
    KIND_LEARN,
    KIND_PAIR,
    KIND_VM,
    TABLE_CLASSIFY,
    TABLE_POLICY,
    Attachment,
    Ct,
    CtState,
    Flow,
    Match,
    Output,
    compile_switch,
    cookie,
    cookie_kind,
    dedupe,
    render,
)
from ryu_ctfw.policy import Policy, Vm

MAC1 = "52:54:00:60:84:ff"
MAC2 = "52:54:00:99:90:78"
MAC_A = "52:54:00:00:00:0a"
MAC_B = "52:54:00:00:00:0b"
MAC_C = "52:54:00:00:00:0c"

SEED_FLOWS = """\
table=0, priority=100,ip actions=ct(table=1)
table=0, priority=10,arp actions=NORMAL
table=0, priority=1 actions=drop
table=1, priority=100,ct_state=+new+trk,ip,in_port=2,dl_dst=52:54:00:99:90:78 actions=ct(commit),NORMAL
table=1, priority=100,ct_state=+est+trk,ip,in_port=2 actions=NORMAL
table=1, priority=100,ct_state=+est+trk,ip,in_port=3 actions=NORMAL
table=1, priority=0 actions=drop"""  # noqa: E501


def cookie_ident(value: int) -> int:
    return value & ((1 << 40) - 1)


def new_flows(flows: list[Flow]) -> list[Flow]:
    """The flows that let a connection be opened (+new)."""
    return [f for f in flows if f.match.ct_state and f.match.ct_state.value & CT_NEW]


def est_flows(flows: list[Flow]) -> list[Flow]:
    return [f for f in flows if f.match.ct_state and f.match.ct_state.value & CT_EST]


def abc_policy(*pairs: tuple[str, str]) -> Policy:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", MAC_B))
    policy.put_vm(Vm("C", "tapC", MAC_C))
    for initiator, responder in pairs:
        policy.add_pair(initiator, responder)
    return policy


ABC_ATTACHED = {
    "A": Attachment(5, MAC_A),
    "B": Attachment(6, MAC_B),
    "C": Attachment(7, MAC_C),
}


# --- the seed ------------------------------------------------------------------------------


def test_seed_policy_renders_as_the_seed_flows(seed_policy: Policy) -> None:
    attached = {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2)}
    assert render(compile_switch(seed_policy, attached)) == SEED_FLOWS


def test_seed_render_does_not_depend_on_the_attachment_order(seed_policy: Policy) -> None:
    attached = {"vm2": Attachment(3, MAC2), "vm1": Attachment(2, MAC1)}
    # The est flows come in VM-name order, whatever the order of the attachments.
    assert render(compile_switch(seed_policy, attached)) == SEED_FLOWS


# --- render() ordering ---------------------------------------------------------------------


def _flow(table: int, priority: int, in_port: int | None = None) -> Flow:
    return Flow(table, priority, Match(in_port=in_port), (), cookie(KIND_BASE))


def test_render_sorts_by_table_then_priority_descending_and_is_stable() -> None:
    flows = [
        _flow(1, 0),
        _flow(1, 100, in_port=9),
        _flow(0, 1),
        _flow(1, 100, in_port=3),
        _flow(0, 100),
        _flow(1, 100, in_port=5),
    ]
    assert render(flows).splitlines() == [
        "table=0, priority=100 actions=drop",
        "table=0, priority=1 actions=drop",
        "table=1, priority=100,in_port=9 actions=drop",  # equal keys keep their order
        "table=1, priority=100,in_port=3 actions=drop",
        "table=1, priority=100,in_port=5 actions=drop",
        "table=1, priority=0 actions=drop",
    ]


def test_render_of_nothing_is_empty() -> None:
    assert render([]) == ""


# --- text ----------------------------------------------------------------------------------


def test_text_of_each_part() -> None:
    assert CtState.of(CT_NEW, CT_TRK).text() == "+new+trk"
    assert CtState(CT_TRK, CT_TRK | CT_EST).text() == "-est+trk"
    assert Ct(commit=True, zone=5, table=1).text() == "ct(commit,zone=5,table=1)"
    assert Ct().text() == "ct()"
    assert Output("NORMAL").text() == "NORMAL"
    assert Output("CONTROLLER", 64).text() == "CONTROLLER:64"
    assert Output(4).text() == "output:4"
    m = Match(in_port=2, eth_type=0x86DD, eth_dst=MAC1, ipv4_dst="10.0.0.1")
    assert m.text() == f"dl_type=0x86dd,in_port=2,dl_dst={MAC1},nw_dst=10.0.0.1"
    assert m.fields() == {
        "dl_type": "0x86dd",
        "in_port": 2,
        "dl_dst": MAC1,
        "nw_dst": "10.0.0.1",
    }


# --- which flows ---------------------------------------------------------------------------


def test_empty_policy_gets_only_the_base_flows() -> None:
    flows = compile_switch(Policy(), {})
    assert render(flows) == "\n".join(
        [
            "table=0, priority=100,ip actions=ct(table=1)",
            "table=0, priority=10,arp actions=NORMAL",
            "table=0, priority=1 actions=drop",
            "table=1, priority=0 actions=drop",
        ]
    )


def test_a_pair_lets_its_initiator_reach_only_its_responder() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED)
    new = new_flows(flows)
    assert len(new) == 1
    assert new[0].match.in_port == 5
    assert new[0].match.eth_dst == MAC_B
    assert new[0].match.ipv4_dst is None
    assert new[0].table == TABLE_POLICY
    assert new[0].actions == (Ct(commit=True), Output("NORMAL"))
    assert sorted(f.match.in_port for f in est_flows(flows)) == [5, 6]
    # C is in no pair: no table-1 flow mentions its port at all.
    assert not [f for f in flows if f.match.in_port == 7]


def test_both_directions_make_two_new_flows() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("B", "A")), ABC_ATTACHED)
    new = {(f.match.in_port, f.match.eth_dst) for f in new_flows(flows)}
    assert new == {(5, MAC_B), (6, MAC_A)}
    # A and B are in two pairs each but get one est flow each.
    assert sorted(f.match.in_port for f in est_flows(flows)) == [5, 6]


def test_one_initiator_with_two_responders() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("A", "C")), ABC_ATTACHED)
    assert {(f.match.in_port, f.match.eth_dst) for f in new_flows(flows)} == {
        (5, MAC_B),
        (5, MAC_C),
    }


@pytest.mark.parametrize("absent", ["A", "B"])
def test_a_vm_not_attached_gets_no_pair_flows(absent: str) -> None:
    attached = {name: at for name, at in ABC_ATTACHED.items() if name != absent}
    flows = compile_switch(abc_policy(("A", "B")), attached)
    assert new_flows(flows) == []
    assert est_flows(flows) == []
    assert flows == compile_switch(Policy(), {})  # only the base flows


def test_a_renumbered_ofport_changes_in_port(seed_policy: Policy) -> None:
    before = compile_switch(seed_policy, {"vm1": Attachment(2, MAC1), "vm2": Attachment(3, MAC2)})
    after = compile_switch(seed_policy, {"vm1": Attachment(9, MAC1), "vm2": Attachment(3, MAC2)})
    assert [f.match.in_port for f in new_flows(before)] == [2]
    assert [f.match.in_port for f in new_flows(after)] == [9]
    assert sorted(f.match.in_port for f in est_flows(after)) == [3, 9]
    assert not [f for f in after if f.match.in_port == 2]


def test_responder_without_mac_is_pinned_by_each_ipv4() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("10.0.0.2", "fd00::2", "10.0.1.2")))
    policy.add_pair("A", "B")
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, None)})
    new = new_flows(flows)
    assert [(f.match.in_port, f.match.ipv4_dst, f.match.eth_dst) for f in new] == [
        (5, "10.0.0.2", None),
        (5, "10.0.1.2", None),
    ]
    assert [f.text() for f in new] == [
        "table=1, priority=100,ct_state=+new+trk,ip,in_port=5,nw_dst=10.0.0.2"
        " actions=ct(commit),NORMAL",
        "table=1, priority=100,ct_state=+new+trk,ip,in_port=5,nw_dst=10.0.1.2"
        " actions=ct(commit),NORMAL",
    ]


def test_a_learned_mac_pins_the_responder_like_a_configured_one() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("10.0.0.2",)))
    policy.add_pair("A", "B")
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, MAC_B)})
    assert [(f.match.eth_dst, f.match.ipv4_dst) for f in new_flows(flows)] == [(MAC_B, None)]
    assert not [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]


def test_a_vm_with_no_mac_known_gets_the_learn_flow() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB"))
    flows = compile_switch(policy, {"A": Attachment(5, MAC_A), "B": Attachment(6, None)})
    learn = [f for f in flows if f.priority == 11]
    assert [f.text() for f in learn] == [
        "table=0, priority=11,arp,in_port=6 actions=NORMAL,CONTROLLER:128"
    ]
    assert learn[0].table == TABLE_CLASSIFY
    assert cookie_kind(learn[0].cookie) == KIND_LEARN
    assert cookie_ident(learn[0].cookie) == 6
    # It sits between the IP flow and the general ARP flow.
    assert render(flows).splitlines()[:4] == [
        "table=0, priority=100,ip actions=ct(table=1)",
        "table=0, priority=11,arp,in_port=6 actions=NORMAL,CONTROLLER:128",
        "table=0, priority=10,arp actions=NORMAL",
        "table=0, priority=1 actions=drop",
    ]


def test_a_vm_with_a_configured_mac_gets_no_learn_flow() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    # The attachment's MAC is the configured one in practice; even if it were missing,
    # a configured MAC means there is nothing to learn.
    flows = compile_switch(policy, {"A": Attachment(5, None)})
    assert not [f for f in flows if f.priority == 11]


def test_a_responder_with_no_mac_and_no_ip_makes_no_new_flow() -> None:
    policy = Policy()
    policy.put_vm(Vm("A", "tapA", MAC_A))
    policy.put_vm(Vm("B", "tapB", None, ("fd00::2",)))  # IPv6 only: no IPv4 to pin
    policy.put_vm(Vm("C", "tapC"))
    policy.add_pair("A", "B")
    policy.add_pair("A", "C")
    attached = {"A": Attachment(5, MAC_A), "B": Attachment(6, None), "C": Attachment(7, None)}
    flows = compile_switch(policy, attached)
    assert new_flows(flows) == []
    # Nothing can be opened, but B and C can still have their MACs learned.
    assert sorted(f.match.in_port for f in flows if f.priority == 11) == [6, 7]


# --- cookies -------------------------------------------------------------------------------


def test_cookie_layout() -> None:
    assert COOKIE_TAG & ~COOKIE_MASK == 0
    for kind in (KIND_BASE, KIND_VM, KIND_PAIR, KIND_LEARN):
        value = cookie(kind, 12345)
        assert value & COOKIE_MASK == COOKIE_TAG
        assert cookie_kind(value) == kind
        assert cookie_ident(value) == 12345
        assert value < 1 << 64
    assert len({KIND_BASE, KIND_VM, KIND_PAIR, KIND_LEARN}) == 4


def test_cookies_say_which_part_of_the_policy_made_each_flow() -> None:
    policy = abc_policy(("A", "B"), ("B", "C"))
    policy.put_vm(Vm("D", "tapD"))
    attached = {**ABC_ATTACHED, "D": Attachment(8, None)}
    flows = compile_switch(policy, attached)
    for f in flows:
        assert f.cookie & COOKIE_MASK == COOKIE_TAG, f.text()
    base = [f for f in flows if cookie_kind(f.cookie) == KIND_BASE]
    assert [(f.table, f.priority) for f in base] == [(0, 100), (0, 10), (0, 1), (1, 0)]
    assert all(cookie_ident(f.cookie) == 0 for f in base)
    new = new_flows(flows)
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie), f.match.eth_dst) for f in new} == {
        (KIND_PAIR, 1, MAC_B),
        (KIND_PAIR, 2, MAC_C),
    }
    est = est_flows(flows)
    assert {(cookie_kind(f.cookie), cookie_ident(f.cookie)) for f in est} == {
        (KIND_VM, 5),
        (KIND_VM, 6),
        (KIND_VM, 7),
    }
    assert all(cookie_ident(f.cookie) == f.match.in_port for f in est)
    learn = [f for f in flows if cookie_kind(f.cookie) == KIND_LEARN]
    assert [cookie_ident(f.cookie) for f in learn] == [8]
    assert len(base) + len(new) + len(est) + len(learn) == len(flows)


def test_ct_states_are_tracked() -> None:
    flows = compile_switch(abc_policy(("A", "B")), ABC_ATTACHED)
    for f in new_flows(flows) + est_flows(flows):
        assert f.match.ct_state is not None
        assert f.match.ct_state.value & CT_TRK and f.match.ct_state.mask & CT_TRK


# --- dedupe --------------------------------------------------------------------------------


def test_dedupe_keeps_the_first_flow_per_key_in_order() -> None:
    one = Flow(1, 100, Match(in_port=2), (Output("NORMAL"),), cookie(KIND_VM, 2))
    same_key = Flow(1, 100, Match(in_port=2), (), cookie(KIND_PAIR, 9))
    other_priority = Flow(1, 90, Match(in_port=2), (), cookie(KIND_VM, 2))
    other_table = Flow(0, 100, Match(in_port=2), (), cookie(KIND_VM, 2))
    assert dedupe([one, same_key, other_priority, one, other_table]) == [
        one,
        other_priority,
        other_table,
    ]
    assert dedupe([]) == []


def test_compiled_flows_have_unique_keys() -> None:
    flows = compile_switch(abc_policy(("A", "B"), ("B", "A"), ("C", "A")), ABC_ATTACHED)
    keys = [f.key for f in flows]
    assert len(keys) == len(set(keys))
