"""ryu-ctfw: a conntrack-based stateful firewall controller for Open vSwitch."""
