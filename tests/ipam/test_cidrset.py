"""Node pod CIDRs: kube-controller-manager's CidrSet and range allocator, checked against
the cases of pkg/controller/nodeipam/ipam/cidrset/cidr_set_test.go and core.go."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu.errors import InputError
from kproxy_emu.ipaddr import parse_cidr
from kproxy_emu.ipam import CidrSet, NodeCidrAllocator, node_mask_sizes


def test_default_split_256_nodes_in_order():
    s = CidrSet("10.244.0.0/16", 24)
    assert s.max_cidrs == 256
    got = [str(s.allocate_next()) for _ in range(256)]
    assert got[:3] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert got[-1] == "10.244.255.0/24"
    with pytest.raises(InputError, match="no remaining CIDRs"):
        s.allocate_next()


def test_released_cidr_is_reused_only_after_the_search_wraps():
    s = CidrSet("10.244.0.0/16", 24)
    for _ in range(3):
        s.allocate_next()
    s.release("10.244.0.0/24")
    # nextCandidate moved on: the next node gets .3, not the released .0
    assert str(s.allocate_next()) == "10.244.3.0/24"
    for _ in range(252):
        s.allocate_next()
    assert str(s.allocate_next()) == "10.244.0.0/24"  # wrapped


def test_fully_allocated_single_subnet():  # TestCIDRSetFullyAllocated
    for cidr in ("127.123.234.0/30", "beef:1234::/30"):
        s = CidrSet(cidr, 30)
        p = s.allocate_next()
        assert str(p) == cidr
        with pytest.raises(InputError):
            s.allocate_next()
        s.release(p)
        assert s.allocate_next() == p


@pytest.mark.parametrize(
    "cluster, mask, index, block",
    [  # TestIndexToCIDRBlock
        ("127.123.3.0/16", 24, 0, "127.123.0.0/24"),
        ("127.123.0.0/16", 24, 15, "127.123.15.0/24"),
        ("192.168.5.219/28", 32, 5, "192.168.5.213/32"),
        ("2001:0db8:1234:3::/48", 64, 0, "2001:db8:1234::/64"),
        ("2001:0db8:1234::/48", 64, 15, "2001:db8:1234:f::/64"),
        ("2001:0db8:85a3::8a2e:0370:7334/50", 63, 6425, "2001:db8:85a3:3232::/63"),
        ("2001:0db8::/32", 48, 15, "2001:db8:f::/48"),
        ("2001:0db8:85a3::8a2e:0370:7334/32", 48, 6425, "2001:db8:1919::/48"),
        ("2001:0db8:1234:ff00::/56", 72, 15, "2001:db8:1234:ff00:f00::/72"),
        ("2001:0db8:1234:ff00::0370:7334/56", 72, 6425, "2001:db8:1234:ff19:1900::/72"),
        ("2001:0db8:1234:0:1234::/80", 96, 15, "2001:db8:1234:0:1234:f::/96"),
        ("2001:0db8:1234:ff00::0370:7334/80", 96, 6425, "2001:db8:1234:ff00:0:1919::/96"),
    ],
)
def test_index_to_cidr_block(cluster, mask, index, block):
    assert str(CidrSet(cluster, mask).index_to_cidr(index)) == block


@pytest.mark.parametrize(
    "cluster, mask, occupy, begin, end",
    [  # TestOccupy
        ("127.0.0.0/8", 16, "127.0.0.0/8", 0, 255),
        ("2001:beef:1200::/40", 48, "2001:beef:1200::/40", 0, 255),
        ("127.0.0.0/8", 16, "127.0.0.0/2", 0, 255),
        ("127.0.0.0/8", 16, "127.0.0.0/16", 0, 0),
        ("127.0.0.0/8", 32, "127.0.0.0/16", 0, 65535),
        ("2001:beef:1200::/48", 64, "2001:beef:1200::/48", 0, 65535),
        ("127.0.0.0/7", 16, "127.0.0.0/15", 256, 257),
        ("2001:beef:7f00::/39", 48, "2001:beef:7f00::/47", 256, 257),
        ("127.0.0.0/7", 15, "127.0.0.0/15", 128, 128),
        ("127.0.0.0/7", 18, "127.0.0.0/15", 1024, 1031),
    ],
)
def test_occupy_marks_the_covered_indices(cluster, mask, occupy, begin, end):
    s = CidrSet(cluster, mask)
    s.occupy(occupy)
    assert s.used.used() == list(range(begin, end + 1))


def test_double_occupy_release():  # TestDoubleOccupyRelease
    s = CidrSet("10.42.0.0/16", 24)
    steps = [
        ("occupy", "10.42.5.0/24", 1),
        ("occupy", "10.42.9.0/24", 2),
        ("occupy", "10.42.8.0/22", 5),
        ("occupy", "10.42.9.0/24", 5),
        ("release", "10.42.9.0/24", 4),
        ("release", "10.42.9.0/24", 4),
        ("release", "10.42.4.0/22", 3),
    ]
    for op, cidr, count in steps:
        getattr(s, op)(cidr)
        assert s.allocated == count
    for _ in range(256 - 3):
        s.allocate_next()
    with pytest.raises(InputError):
        s.allocate_next()


def test_occupy_outside_the_cluster_cidr_fails():  # TestGetBitforCIDR error cases
    with pytest.raises(ValueError, match="out the range"):
        CidrSet("192.168.0.0/16", 24).occupy("127.168.224.0/24")
    with pytest.raises(ValueError):
        CidrSet("beef::/16", 24).occupy("2001:db00::/24")


def test_occupy_does_not_move_next_candidate():  # TestCidrSetMetricsHistogram
    s = CidrSet("10.0.0.0/16", 24)
    s.occupy("10.0.0.0/17")
    assert s.allocated == 128
    assert str(s.allocate_next()) == "10.0.128.0/24"


def test_cluster_subnet_max_diff_is_ipv6_only():  # TestCIDRSetv6
    with pytest.raises(InputError, match="clusterSubnetMaxDiff"):
        CidrSet("beef:1234::/32", 49)
    s = CidrSet("2001:beef:1234:369b::/60", 64)
    assert [str(s.allocate_next()), str(s.allocate_next())] == [
        "2001:beef:1234:3690::/64",
        "2001:beef:1234:3691::/64",
    ]
    # IPv4 has no such limit: 127.0.0.0/8 in /32s (2^24 subnets)
    s = CidrSet("127.0.0.0/8", 32)
    assert [str(s.allocate_next()), str(s.allocate_next())] == ["127.0.0.0/32", "127.0.0.1/32"]


def test_node_mask_shorter_than_cluster_mask_is_refused():
    with pytest.raises(InputError, match="less than or equal to --node-cidr-mask-size"):
        CidrSet("10.42.0.0/25", 24)


def test_dual_stack_pairs_one_per_family():
    alloc = NodeCidrAllocator(["10.244.0.0/16", "fd00:10:244::/56"])
    assert [s.node_mask_size for s in alloc.sets] == [24, 64]
    pairs = [[str(c) for c in alloc.allocate()] for _ in range(3)]
    assert pairs == [
        ["10.244.0.0/24", "fd00:10:244::/64"],
        ["10.244.1.0/24", "fd00:10:244:1::/64"],
        ["10.244.2.0/24", "fd00:10:244:2::/64"],
    ]
    assert alloc.nodes_left == 253


def test_dual_stack_full_family_leaks_the_other_as_upstream():
    alloc = NodeCidrAllocator(["10.244.0.0/16", "fd00::/127"], [24, 128])
    alloc.allocate()
    alloc.allocate()
    with pytest.raises(InputError):
        alloc.allocate()
    # AllocateOrOccupyCIDR returns on the full IPv6 set without releasing the IPv4 subnet
    # it took for the node (a controller restart frees it)
    assert [s.allocated for s in alloc.sets] == [3, 2]


def test_service_range_is_filtered_out():  # filterOutServiceRange
    alloc = NodeCidrAllocator(["10.0.0.0/16"], [24], service_cidrs=["10.0.4.0/22"])
    assert alloc.sets[0].allocated == 4
    got = [str(alloc.allocate()[0]) for _ in range(6)]
    assert got == [f"10.0.{i}.0/24" for i in (0, 1, 2, 3, 8, 9)]


def test_occupy_pre_assigned_by_index():
    alloc = NodeCidrAllocator(["10.244.0.0/16", "fd00::/48"])
    alloc.occupy(["10.244.0.0/24", "fd00::/64"])
    assert str(alloc.allocate()[0]) == "10.244.1.0/24"
    with pytest.raises(ValueError, match="podCIDRs\\[0\\]"):
        alloc.occupy(["fd00::/64"])
    with pytest.raises(ValueError, match="no cluster CIDR at index 2"):
        alloc.occupy(["10.244.9.0/24", "fd00:0:0:9::/64", "10.1.0.0/24"])


@pytest.mark.parametrize(
    "cidrs, kwargs, expect",
    [
        (["10.0.0.0/8"], {}, [24]),
        (["fd00::/48"], {}, [64]),
        (["10.0.0.0/8"], {"mask_size": 26}, [26]),
        (["10.0.0.0/8"], {"mask_size_ipv4": 25}, [25]),
        (["fd00::/48"], {"mask_size_ipv6": 56}, [56]),
        (["fd00::/48", "10.0.0.0/8"], {"mask_size_ipv4": 25}, [64, 25]),
    ],
)
def test_node_mask_sizes(cidrs, kwargs, expect):
    assert node_mask_sizes([parse_cidr(c) for c in cidrs], **kwargs) == expect


@pytest.mark.parametrize(
    "cidrs, kwargs, message",
    [
        (["10.0.0.0/8", "fd00::/48"], {"mask_size": 24}, "not allowed with dual-stack"),
        (["10.0.0.0/8"], {"mask_size": 24, "mask_size_ipv4": 24}, "not allowed if"),
        (["10.0.0.0/8"], {"mask_size_ipv6": 64}, "single-stack IPv4"),
        (["fd00::/48"], {"mask_size_ipv4": 24}, "single-stack IPv6"),
        (["10.0.0.0/8", "10.1.0.0/16"], {}, "dual-stack"),
        (["10.0.0.0/8", "fd00::/48", "fd01::/48"], {}, "max allowed of 2"),
    ],
)
def test_node_mask_sizes_refused(cidrs, kwargs, message):
    with pytest.raises(InputError, match=message):
        node_mask_sizes([parse_cidr(c) for c in cidrs], **kwargs)


@given(
    prefix=st.integers(8, 28),
    extra=st.integers(0, 10),
    releases=st.lists(st.integers(0, 2000), max_size=10),
)
def test_property_never_two_nodes_the_same_cidr(prefix, extra, releases):
    mask = min(32, prefix + extra)
    s = CidrSet(f"10.0.0.0/{prefix}", mask)
    held = set()
    for step in range(s.max_cidrs + len(releases)):
        if step in releases and held:
            victim = sorted(held, key=str)[step % len(held)]
            s.release(victim)
            held.discard(victim)
            continue
        if s.free == 0:
            break
        got = s.allocate_next()
        assert got not in held
        assert got.subnet_of(ipaddress.ip_network(f"10.0.0.0/{prefix}"))
        held.add(got)
    assert len(held) == s.allocated
