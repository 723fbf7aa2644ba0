"""ClusterIP allocation: the KEP-3070 static/dynamic bands (ipallocator/bitmap.go
calculateRangeOffset), the random-offset scan, exhaustion, several ServiceCIDRs."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu.errors import InputError
from kproxy_emu.ipam import ServiceIPAllocator, ServiceIPRange, range_offset


@pytest.mark.parametrize(
    "cidr, offset, static, dynamic",
    [
        ("10.96.0.0/28", 0, None, ("10.96.0.1", "10.96.0.14")),
        ("10.96.0.0/27", 16, ("10.96.0.1", "10.96.0.16"), ("10.96.0.17", "10.96.0.30")),
        ("10.96.0.0/24", 16, ("10.96.0.1", "10.96.0.16"), ("10.96.0.17", "10.96.0.254")),
        ("10.96.0.0/20", 256, ("10.96.0.1", "10.96.1.0"), ("10.96.1.1", "10.96.15.254")),
        ("10.96.0.0/16", 256, ("10.96.0.1", "10.96.1.0"), ("10.96.1.1", "10.96.255.254")),
        ("10.96.0.0/12", 256, ("10.96.0.1", "10.96.1.0"), ("10.96.1.1", "10.111.255.254")),
        ("fd00::/108", 256, ("fd00::1", "fd00::100"), ("fd00::101", "fd00::f:ffff")),
    ],
)
def test_static_and_dynamic_bands(cidr, offset, static, dynamic):
    r = ServiceIPRange(cidr)
    assert range_offset(cidr) == offset == r.offset
    band = r.static_band()
    assert (None if band is None else tuple(map(str, band))) == static
    assert tuple(map(str, r.dynamic_band())) == dynamic


@pytest.mark.parametrize(
    "cidr, ipaddress_size, bitmap_size",
    [
        ("10.96.0.0/28", 14, 14),
        ("10.96.0.0/24", 254, 254),
        ("10.96.0.0/16", 65534, 65534),
        ("10.96.0.0/12", 1048574, 1048574),
        ("fd00::/108", 2**20 - 1, 65535),  # the bitmap caps IPv6 at 65536 addresses
        ("fd00::/64", 2**64 - 1, 65535),
    ],
)
def test_capacity_per_allocator(cidr, ipaddress_size, bitmap_size):
    assert ServiceIPRange(cidr).size == ipaddress_size
    assert ServiceIPRange(cidr, allocator="bitmap").size == bitmap_size


def test_bitmap_ipv6_cap_keeps_the_top_out():
    r = ServiceIPRange("fd00::/108", allocator="bitmap")
    assert r.offset_of("fd00::ffff") == 65534
    assert r.offset_of("fd00::1:0") is None
    assert ServiceIPRange("fd00::/108").offset_of("fd00::1:0") == 65535


def test_ipv6_shorter_than_64_refused_by_the_ipaddress_allocator():
    with pytest.raises(InputError, match="shortest allowed prefix length"):
        ServiceIPRange("fd00::/48")
    assert ServiceIPRange("fd00::/48", allocator="bitmap").size == 65535


def test_network_and_broadcast_are_never_allocatable():
    r = ServiceIPRange("10.96.0.0/24")
    assert r.offset_of("10.96.0.0") is None
    assert r.offset_of("10.96.0.255") is None
    assert r.offset_of("10.96.0.1") == 0
    v6 = ServiceIPRange("fd00::/120")
    assert v6.offset_of("fd00::ff") == 254  # IPv6 has no broadcast address


def test_dynamic_allocation_fills_the_upper_band_first():
    alloc = ServiceIPAllocator(["10.96.0.0/24"], seed=7)
    r = alloc.ranges[0]
    got = [alloc.allocate_next() for _ in range(238)]
    assert all(int(ip) >= int(ipaddress.ip_address("10.96.0.17")) for ip in got)
    assert r.static_used == 0
    nxt = alloc.allocate_next()  # upper band full: now from the static band
    assert int(nxt) <= int(ipaddress.ip_address("10.96.0.16"))
    for _ in range(15):
        alloc.allocate_next()
    with pytest.raises(InputError, match="range is full"):
        alloc.allocate_next()


def test_seeded_and_deterministic():
    a = [str(ServiceIPAllocator(["10.96.0.0/16"], seed=3).allocate_next()) for _ in range(2)]
    b1 = ServiceIPAllocator(["10.96.0.0/16"], seed=3)
    b2 = ServiceIPAllocator(["10.96.0.0/16"], seed=4)
    assert a[0] == a[1] == str(b1.allocate_next())
    assert str(b1.allocate_next()) != a[0]
    assert str(b2.allocate_next()) != a[0]


def test_random_offset_scan_takes_the_next_free_after_the_start():
    class Fixed:
        def randrange(self, n):
            return 0

    r = ServiceIPRange("10.96.0.0/24", rng=Fixed())
    assert r.next_free() == 16  # the first offset of the dynamic band: 10.96.0.17
    r.mark("10.96.0.17")
    r.mark("10.96.0.18")
    assert str(r.address(r.next_free())) == "10.96.0.19"


def test_static_allocation_conflicts():
    alloc = ServiceIPAllocator(["10.96.0.0/24"])
    alloc.allocate("10.96.0.10", "kube-system/kube-dns")
    with pytest.raises(InputError, match="already allocated \\(to kube-system/kube-dns\\)"):
        alloc.allocate("10.96.0.10", "x/y")
    with pytest.raises(InputError, match="not in any service CIDR"):
        alloc.allocate("10.97.0.10")


def test_several_service_cidrs_share_addresses_and_count_top_level():
    alloc = ServiceIPAllocator(["10.96.0.0/24", "10.96.0.0/25", "10.97.0.0/28"])
    alloc.allocate("10.96.0.5")
    assert [r.allocated for r in alloc.ranges] == [1, 1, 0]
    assert alloc.free(4) == 253 + 14
    # the first range full, a dynamic allocation moves to the next non-full one
    for _ in range(253):
        alloc.allocate_next()
    assert alloc.ranges[1].free == 0  # the nested /25 filled through the /24
    assert str(alloc.allocate_next()).startswith("10.97.0.")


@given(prefix=st.integers(24, 30), seed=st.integers(0, 2**32 - 1))
def test_property_allocation_until_exhaustion_gives_capacity_distinct_addresses(prefix, seed):
    alloc = ServiceIPAllocator([f"10.96.0.0/{prefix}"], seed=seed)
    cap = alloc.ranges[0].size
    got = {alloc.allocate_next() for _ in range(cap)}
    assert len(got) == cap
    net = ipaddress.ip_network(f"10.96.0.0/{prefix}")
    assert all(ip in net and ip not in (net.network_address, net.broadcast_address) for ip in got)
    with pytest.raises(InputError):
        alloc.allocate_next()


@given(prefix=st.integers(112, 124), seed=st.integers(0, 1000), n=st.integers(1, 200))
def test_property_ipv6_dynamic_before_static(prefix, seed, n):
    alloc = ServiceIPAllocator([f"fd00::/{prefix}"], seed=seed)
    r = alloc.ranges[0]
    n = min(n, r.size - r.offset)
    for _ in range(n):
        alloc.allocate_next(6)
    assert r.static_used == 0 and r.allocated == n
