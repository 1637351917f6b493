"""Every accepted change writes one audit line saying what changed; refused ones none."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ryu_ctfw.firewall import Firewall
from ryu_ctfw.policy import PairRequest, PolicyError, Vm


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("change: ")]


def test_each_accepted_change_is_one_line_naming_what_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fw = Firewall(tmp_path / "state.json", logging.getLogger("ctfw-audit-test"))
    caplog.set_level(logging.INFO)
    fw.put_vm(Vm("vm1", "tap1", "52:54:00:00:00:01", ("198.18.0.1",)))
    fw.put_vm(Vm("vm2", "tap2"))
    fw.change(lambda p: p.add_pair(PairRequest("vm1", "vm2", "tcp", "22", log=True)))
    fw.put_vm(Vm("vm2", "tap3"))
    fw.change(lambda p: p.delete_pair(1))
    lines = audit_lines(caplog)
    assert len(lines) == 5
    assert lines[0].startswith('change: vm vm1 added {"name":"vm1","id":1,"port":"tap1"')
    assert '"ips":["198.18.0.1"]' in lines[0] and "next_vm_id" in lines[0]
    assert lines[2].startswith("change: pair 1 added {")
    assert '"protocol":"tcp","ports":"22","log":true' in lines[2]
    assert lines[3].startswith('change: vm vm2 changed {"name":"vm2","id":2,"port":"tap3"')
    assert lines[4] == "change: pair 1 removed"


def test_a_refused_or_empty_change_writes_no_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fw = Firewall(tmp_path / "state.json", logging.getLogger("ctfw-audit-test"))
    fw.put_vm(Vm("vm1", "tap1"))
    caplog.set_level(logging.INFO)
    with pytest.raises(PolicyError):
        fw.change(lambda p: p.add_pair(PairRequest("vm1", "nobody")))
    fw.put_vm(Vm("vm1", "tap1"))  # the same again: nothing changes
    assert audit_lines(caplog) == []
