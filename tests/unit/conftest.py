"""Shared fixtures for the unit tests: the seed's policy, and quiet imports."""

from __future__ import annotations

import warnings

import pytest

from ryu_ctfw.policy import PairRequest, Policy, Vm

# Ryu's imports warn about their own dependencies: eventlet says it is deprecated, webob
# imports the deprecated cgi module, pkg_resources its deprecated helpers. None of that is
# about this project, so the first imports (cached for the whole session) happen here with
# deprecation warnings silenced; warnings from our own code still show.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    # ryu.app.wsgi brings ryu.lib.hub, eventlet and webob; ryu's packet library brings
    # pkg_resources.
    import ryu.app.wsgi
    import ryu.lib.packet.packet  # noqa: F401

# The seed (see ../shared/seed/README.md): VM1 on tap2 = ofport 2, VM2 on tap4 = ofport 3,
# on the test-only range 198.18.0.0/15 (as in README.md).
SEED_MAC1 = "52:54:00:60:84:ff"
SEED_MAC2 = "52:54:00:99:90:78"
SEED_IP1 = "198.18.0.1"
SEED_IP2 = "198.18.0.2"


@pytest.fixture
def seed_policy() -> Policy:
    """vm1 (tap2) and vm2 (tap4) with the seed's MACs and IPs, and the pair vm1 -> vm2 (any)."""
    policy = Policy()
    policy.put_vm(Vm("vm1", "tap2", SEED_MAC1, (SEED_IP1,)))
    policy.put_vm(Vm("vm2", "tap4", SEED_MAC2, (SEED_IP2,)))
    policy.add_pair(PairRequest("vm1", "vm2"))
    return policy
