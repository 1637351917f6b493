"""What a pair allows: transport port ranges as masks, and services per family."""

from __future__ import annotations

import itertools
import random

import pytest

from ryu_ctfw.compiler import (
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Match,
    Ports,
    Service,
    port_masks,
    services,
)
from ryu_ctfw.policy import Pair

ALL_PORTS = 1 << 16


def block(value: int, mask: int) -> tuple[int, int]:
    """The ports (first, last) a prefix value/mask covers; fails for any other mask."""
    size = (~mask & 0xFFFF) + 1
    assert size & (size - 1) == 0, f"mask 0x{mask:04x} is not a prefix mask"
    assert 0 <= value <= 0xFFFF and 0 <= mask <= 0xFFFF
    assert value & ~mask == 0, f"value {value} has bits outside mask 0x{mask:04x}"
    return value, value + size - 1


def assert_tiles(masks: list[Ports], lo: int, hi: int) -> None:
    """The blocks are disjoint and their union is exactly lo..hi."""
    blocks = sorted(block(v, m) for v, m in masks)
    assert blocks, "no masks"
    assert blocks[0][0] == lo
    assert blocks[-1][1] == hi
    for (_, last), (first, _) in itertools.pairwise(blocks):
        assert first == last + 1, f"gap or overlap between {last} and {first}"


def covered(masks: list[Ports]) -> set[int]:
    """Every port some mask matches, by the OpenFlow rule (port & mask) == value."""
    return {p for p in range(ALL_PORTS) if any(p & m == v for v, m in masks)}


def minimal_count(lo: int, hi: int) -> int:
    """Brute force: the fewest aligned power-of-two blocks that partition lo..hi.

    A value/mask pair with a prefix mask is such a block; two blocks either nest or are
    disjoint, so this is also the fewest prefix masks whose union is lo..hi.
    """

    best = [0] * (hi - lo + 2)  # best[i]: fewest blocks for lo + i .. hi
    for start in range(hi, lo - 1, -1):
        options = []
        size = 1
        while start % size == 0 and start + size - 1 <= hi:
            options.append(1 + best[start + size - lo])
            size *= 2
            if size > ALL_PORTS:
                break
        best[start - lo] = min(options)
    return best[0]


# --- port_masks examples -------------------------------------------------------------------


def test_8000_to_8100_is_four_masks() -> None:
    masks = port_masks(8000, 8100)
    assert masks == [(8000, 0xFFC0), (8064, 0xFFE0), (8096, 0xFFFC), (8100, 0xFFFF)]
    assert [block(*m) for m in masks] == [(8000, 8063), (8064, 8095), (8096, 8099), (8100, 8100)]


@pytest.mark.parametrize("port", [1, 22, 80, 443, 8100, 65535])
def test_a_single_port_is_one_exact_match(port: int) -> None:
    assert port_masks(port, port) == [(port, 0xFFFF)]


def test_every_port_from_1_is_sixteen_masks() -> None:
    masks = port_masks(1, 65535)
    assert len(masks) == 16  # 1, 2-3, 4-7, ..., 32768-65535
    assert masks[0] == (1, 0xFFFF)
    assert masks[-1] == (32768, 0x8000)
    assert_tiles(masks, 1, 65535)


def test_every_port_is_one_wildcard() -> None:
    assert port_masks(0, 65535) == [(0, 0)]


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 0, [(0, 0xFFFF)]),
        (0, 1, [(0, 0xFFFE)]),
        (1024, 2047, [(1024, 0xFC00)]),
        (32768, 65535, [(32768, 0x8000)]),
        (65534, 65535, [(65534, 0xFFFE)]),
        (1023, 1024, [(1023, 0xFFFF), (1024, 0xFFFF)]),
        (20, 23, [(20, 0xFFFC)]),
        (21, 23, [(21, 0xFFFF), (22, 0xFFFE)]),
    ],
)
def test_small_examples(lo: int, hi: int, expected: list[Ports]) -> None:
    assert port_masks(lo, hi) == expected


def test_an_empty_range_is_no_mask() -> None:
    assert port_masks(10, 9) == []


@pytest.mark.parametrize(
    ("lo", "hi"), [(8000, 8100), (1, 65535), (0, 65535), (1023, 1025), (65530, 65535)]
)
def test_masks_match_exactly_the_range_port_by_port(lo: int, hi: int) -> None:
    assert covered(port_masks(lo, hi)) == set(range(lo, hi + 1))


# --- port_masks properties -----------------------------------------------------------------


def test_random_ranges_are_tiled_exactly_with_the_fewest_masks() -> None:
    rng = random.Random(20240611)  # fixed: a failure is reproducible
    for _ in range(3000):
        lo = rng.randrange(ALL_PORTS)
        hi = rng.randrange(lo, ALL_PORTS)
        masks = port_masks(lo, hi)
        assert_tiles(masks, lo, hi)
        # A 16-bit range never needs more than 2 * 16 - 2 prefixes.
        assert len(masks) <= 30, (lo, hi)


def test_small_random_ranges_use_the_minimal_number_of_masks() -> None:
    rng = random.Random(7)
    for _ in range(400):
        lo = rng.randrange(ALL_PORTS)
        hi = min(ALL_PORTS - 1, lo + rng.randrange(300))
        masks = port_masks(lo, hi)
        assert_tiles(masks, lo, hi)
        assert len(masks) == minimal_count(lo, hi), (lo, hi)


def test_every_range_within_0_to_130_is_minimal() -> None:
    for lo in range(131):
        for hi in range(lo, 131):
            masks = port_masks(lo, hi)
            assert_tiles(masks, lo, hi)
            assert len(masks) == minimal_count(lo, hi), (lo, hi)


def test_the_worst_ranges_take_30_masks() -> None:
    assert len(port_masks(1, 65534)) == 30
    assert minimal_count(1, 65534) == 30


# --- services ------------------------------------------------------------------------------


def test_any_is_both_families_without_protocol() -> None:
    assert services(Pair(1, "a", "b")) == [Service(ETH_TYPE_IP), Service(ETH_TYPE_IPV6)]


def test_icmp_is_echo_per_family() -> None:
    assert services(Pair(1, "a", "b", "icmp")) == [
        Service(ETH_TYPE_IP, PROTO_ICMP, None, 8),
        Service(ETH_TYPE_IPV6, PROTO_ICMPV6, None, 128),
    ]


@pytest.mark.parametrize(("protocol", "number"), [("tcp", PROTO_TCP), ("udp", PROTO_UDP)])
def test_tcp_and_udp_without_ports_are_every_port(protocol: str, number: int) -> None:
    assert services(Pair(1, "a", "b", protocol)) == [
        Service(ETH_TYPE_IP, number, None),
        Service(ETH_TYPE_IPV6, number, None),
    ]


@pytest.mark.parametrize(("protocol", "number"), [("tcp", PROTO_TCP), ("udp", PROTO_UDP)])
def test_tcp_and_udp_with_one_port(protocol: str, number: int) -> None:
    assert services(Pair(1, "a", "b", protocol, "22")) == [
        Service(ETH_TYPE_IP, number, (22, 0xFFFF)),
        Service(ETH_TYPE_IPV6, number, (22, 0xFFFF)),
    ]


def test_a_port_range_is_one_service_per_mask_and_family() -> None:
    got = services(Pair(1, "a", "b", "udp", "8000-8100"))
    masks = port_masks(8000, 8100)
    assert got == [
        Service(fam, PROTO_UDP, m) for fam in (ETH_TYPE_IP, ETH_TYPE_IPV6) for m in masks
    ]


def test_service_matches_look_from_the_initiator() -> None:
    tcp = Service(ETH_TYPE_IPV6, PROTO_TCP, (22, 0xFFFF))
    assert tcp.original() == Match(eth_type=ETH_TYPE_IPV6, ip_proto=PROTO_TCP, tp_dst=(22, 0xFFFF))
    icmp = Service(ETH_TYPE_IP, PROTO_ICMP, None, 8)
    assert icmp.original() == Match(eth_type=ETH_TYPE_IP, ip_proto=PROTO_ICMP, icmp_type=8)
    assert Service(ETH_TYPE_IP).original() == Match(eth_type=ETH_TYPE_IP)


def test_pair_port_range() -> None:
    assert Pair(1, "a", "b").port_range() is None
    assert Pair(1, "a", "b", "tcp").port_range() is None
    assert Pair(1, "a", "b", "tcp", "22").port_range() == (22, 22)
    assert Pair(1, "a", "b", "udp", "8000-8100").port_range() == (8000, 8100)
    assert Pair(1, "a", "b", "udp", "53").service == ("a", "b", "udp", "53")
