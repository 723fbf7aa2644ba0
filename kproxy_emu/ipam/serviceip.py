"""Service ClusterIPs as kube-apiserver allocates them.

Sources (kubernetes/kubernetes, ``pkg/registry/core/service/``):

* ``ipallocator/bitmap.go`` (``Range``, the allocator behind ``--service-cluster-ip-range``
  before ServiceCIDR objects): a bitmap over the range without the network address and,
  for IPv4, the broadcast address; an IPv6 range is capped at 65,536 addresses (bitmap
  offsets 0..65,534 after the network address). ``calculateRangeOffset`` (KEP-3070):
  ``min(max(16, size/16), 256)`` of the lowest addresses, 0 when the range has 16
  addresses or fewer, is the *static* band: ``allocator/bitmap.go``
  ``randomScanStrategyWithOffset`` picks a dynamic address at a random offset in the upper
  band and scans forward (wrapping within the band); only when the upper band is full does
  it do the same in the lower band.
* ``ipallocator/ipallocator.go`` (``Allocator``, one per ServiceCIDR CIDR, the
  MultiCIDRServiceAllocator path, IPAddress objects as the store): the same bands and the
  same random-offset scan (``allocateNextService``, ``ipIterator``), over the whole range
  (``hostsPerNetwork``: 2^h - 2 for IPv4, 2^h - 1 for IPv6, no 65,536 cap); an IPv6 range
  shorter than /64 is refused.
* ``ipallocator/cidrallocator.go`` (``MetaAllocator``): a dynamic allocation tries each
  ServiceCIDR's allocator of the family until one is not full (upstream walks a Go map,
  so the order is unspecified; kproxy-emu takes the ServiceCIDRs in the order given);
  overlapping ServiceCIDRs share the IPAddress objects, so an address taken through one
  is taken in all; ``Free`` counts only the top-level prefixes.

The first address of the primary range is kube-apiserver's own Service
(``default/kubernetes``, allocated statically at start-up).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence

from ..errors import InputError
from ..ipaddr import IPAddress, IPNetwork, parse_cidr, parse_ip
from .cidrset import Bitmap

ALLOCATORS = ("ipaddress", "bitmap")
BITMAP_IPV6_CAP = 65536  # bitmap.go: "Limit the max size, since the allocator keeps a bitmap"
DENSE_LIMIT = 1 << 24  # ranges up to this many addresses keep a bytearray, larger a set


def to_address(family: int, value: int) -> IPAddress:
    if family == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def range_size(net: IPNetwork) -> int:
    """k8s.io/utils/net ``RangeSize``: 2^host bits, 0 for an IPv4 /0, /1 (IPv6 /0, /1)."""
    host = net.max_prefixlen - net.prefixlen
    if (net.version == 4 and host >= 31) or (net.version == 6 and host >= 127):
        return 0
    return (1 << 63) - 1 if host >= 63 else 1 << host


def range_offset(cidr: str | IPNetwork) -> int:
    """``calculateRangeOffset``: the size of the static band, ``min(max(16, size/16), 256)``
    (0 when the range has at most 16 addresses)."""
    net = parse_cidr(cidr) if isinstance(cidr, str) else cidr
    size = range_size(net)
    if size <= 16:
        return 0
    return min(max(16, size // 16), 256)


class _Sparse:
    """The Bitmap interface over a set, for ranges too large for a byte per address."""

    __slots__ = ("count", "size", "taken")

    def __init__(self, size: int):
        self.size = size
        self.taken: set[int] = set()
        self.count = 0

    def has(self, i: int) -> bool:
        return i in self.taken

    def set(self, i: int) -> bool:
        if i in self.taken:
            return False
        self.taken.add(i)
        self.count += 1
        return True

    def clear(self, i: int) -> bool:
        if i not in self.taken:
            return False
        self.taken.discard(i)
        self.count -= 1
        return True

    def first_free(self, start: int, lo: int, hi: int) -> int:
        i = start
        while True:
            if i not in self.taken:
                return i
            i += 1
            if i == hi:
                i = lo
            if i == start:
                return -1

    def used(self) -> list[int]:
        return sorted(self.taken)


class ServiceIPRange:
    """One service CIDR's allocator: offsets 0.. are the addresses after the network
    address; ``offset`` of them form the static band."""

    def __init__(self, cidr: str | IPNetwork, *, allocator: str = "ipaddress", rng=None):
        net = parse_cidr(cidr) if isinstance(cidr, str) else cidr
        if allocator not in ALLOCATORS:
            raise InputError(
                f"must be one of {', '.join(ALLOCATORS)}", field="allocator", value=allocator
            )
        host = net.max_prefixlen - net.prefixlen
        if allocator == "ipaddress":
            if net.version == 6 and net.prefixlen < 64:
                raise InputError(
                    "shortest allowed prefix length for service CIDR is 64",
                    field="service-cidr",
                    value=str(net),
                )
            size = (1 << min(host, 64)) - 1  # hostsPerNetwork: at most MaxUint64
            if net.version == 4 and size > 0:
                size -= 1
        else:
            size = range_size(net)
            if net.version == 6:
                size = min(size, BITMAP_IPV6_CAP)
            else:
                size -= 1
            size = max(0, size - 1)
        self.cidr: IPNetwork = net
        self.allocator = allocator
        self.size = size
        self.offset = min(range_offset(net), size)
        self.base = int(net.network_address) + 1  # offset 0
        self.rng = rng if rng is not None else random.Random(0)
        self.used: Bitmap | _Sparse = Bitmap(size) if size <= DENSE_LIMIT else _Sparse(size)

    @property
    def family(self) -> int:
        return self.cidr.version

    @property
    def allocated(self) -> int:
        return self.used.count

    @property
    def free(self) -> int:
        return self.size - self.used.count

    @property
    def static_used(self) -> int:
        if isinstance(self.used, Bitmap):
            return self.used.buf.count(1, 0, self.offset)
        return sum(1 for i in self.used.taken if i < self.offset)

    def address(self, offset: int) -> IPAddress:
        return to_address(self.family, self.base + offset)

    def offset_of(self, ip: str | IPAddress) -> int | None:
        """The address's offset, None when it is not allocatable here (outside the range,
        its network address or, IPv4, its broadcast address, or past the IPv6 bitmap cap)."""
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        if addr.version != self.family or addr not in self.cidr:
            return None
        off = int(addr) - self.base
        return off if 0 <= off < self.size else None

    def static_band(self) -> tuple[IPAddress, IPAddress] | None:
        if not self.offset:
            return None
        return self.address(0), self.address(self.offset - 1)

    def dynamic_band(self) -> tuple[IPAddress, IPAddress] | None:
        if self.size <= self.offset:
            return None
        return self.address(self.offset), self.address(self.size - 1)

    def has(self, ip: str | IPAddress) -> bool:
        off = self.offset_of(ip)
        return off is not None and self.used.has(off)

    def mark(self, ip: str | IPAddress) -> bool:
        """Mark an address taken; False when it already was (or is not allocatable here)."""
        off = self.offset_of(ip)
        return off is not None and self.used.set(off)

    def unmark(self, ip: str | IPAddress) -> bool:
        off = self.offset_of(ip)
        return off is not None and self.used.clear(off)

    def next_free(self) -> int:
        """``randomScanStrategyWithOffset.AllocateBit`` / ``allocateNextService``: a random
        start in the upper band, scan forward wrapping in the band; then the same in the
        lower (static) band. -1 when the range is full. Draws as upstream does: one
        random number for the upper band, one more only when it is full."""
        if self.used.count >= self.size:
            return -1
        upper = self.size - self.offset
        if upper > 0:
            start = self.offset + self.rng.randrange(upper)
            at = self.used.first_free(start, self.offset, self.size)
            if at >= 0:
                return at
        if self.offset:
            start = self.rng.randrange(self.offset)
            return self.used.first_free(start, 0, self.offset)
        return -1


class ServiceIPAllocator:
    """The ClusterIP allocator over every service CIDR (``MetaAllocator``); with one CIDR
    per family, the bitmap ``Range`` of ``--service-cluster-ip-range``."""

    def __init__(
        self,
        cidrs: Iterable[str | IPNetwork],
        *,
        allocator: str = "ipaddress",
        seed: int | None = 0,
    ):
        self.rng = random.Random(seed)
        self.ranges: list[ServiceIPRange] = []
        seen: set[IPNetwork] = set()
        for c in cidrs:
            net = parse_cidr(c) if isinstance(c, str) else c
            if net in seen:  # two ServiceCIDRs with one prefix share one allocator
                continue
            seen.add(net)
            self.ranges.append(ServiceIPRange(net, allocator=allocator, rng=self.rng))
        self.owner: dict[IPAddress, str] = {}

    def families(self) -> list[int]:
        return sorted({r.family for r in self.ranges})

    def containing(self, ip: str | IPAddress) -> list[ServiceIPRange]:
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        return [r for r in self.ranges if r.offset_of(addr) is not None]

    def allocate(self, ip: str | IPAddress, owner: str = "") -> IPAddress:
        """A static allocation (``AllocateService`` with a given IP); InputError when no
        range holds it or it is taken."""
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        ranges = self.containing(addr)
        if not ranges:
            raise InputError(
                "not in any service CIDR's allocatable addresses",
                field="spec.clusterIP",
                value=str(addr),
            )
        if addr in self.owner:
            raise InputError(
                f"provided IP is already allocated (to {self.owner[addr]})",
                field="spec.clusterIP",
                value=str(addr),
            )
        for r in ranges:
            r.mark(addr)
        self.owner[addr] = owner
        return addr

    def allocate_next(self, family: int = 4, owner: str = "") -> IPAddress:
        """A dynamic allocation in ``family``; InputError when every range of it is full."""
        for r in self.ranges:
            if r.family != family:
                continue
            at = r.next_free()
            if at < 0:
                continue
            addr = r.address(at)
            for other in self.containing(addr):
                other.mark(addr)
            self.owner[addr] = owner
            return addr
        raise InputError(
            "range is full",
            field="service-cidr",
            value=",".join(str(r.cidr) for r in self.ranges if r.family == family) or "none",
        )

    def release(self, ip: str | IPAddress) -> None:
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        for r in self.containing(addr):
            r.unmark(addr)
        self.owner.pop(addr, None)

    def top_level(self, family: int) -> list[ServiceIPRange]:
        """The ranges of a family no other range contains (``isNotContained``)."""
        rs = [r for r in self.ranges if r.family == family]
        return [
            r
            for r in rs
            if not any(
                o is not r and o.cidr.prefixlen < r.cidr.prefixlen and r.cidr.overlaps(o.cidr)
                for o in rs
            )
        ]

    def free(self, family: int) -> int:
        """Addresses left in a family (``MetaAllocator.Free``: top-level prefixes only)."""
        return sum(r.free for r in self.top_level(family))


def first_address(cidrs: Sequence[str | IPNetwork], family: int) -> IPAddress | None:
    """The first address of the first range of a family: ``default/kubernetes``'s."""
    for c in cidrs:
        net = parse_cidr(c) if isinstance(c, str) else c
        if net.version == family and net.num_addresses > 1:
            return to_address(family, int(net.network_address) + 1)
    return None
