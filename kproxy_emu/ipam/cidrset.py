"""Node pod CIDRs as kube-controller-manager's node IPAM controller allocates them.

Sources (kubernetes/kubernetes):

* ``pkg/controller/nodeipam/ipam/cidrset/cidr_set.go``: ``CidrSet``, one cluster CIDR cut
  into ``2^(nodeMask - clusterMask)`` subnets tracked in a bitmap; ``AllocateNext`` takes the
  first free index at or after ``nextCandidate`` (wrapping) and moves ``nextCandidate`` past
  it, so a fresh set hands out subnets in address order and a released one is only reused
  after the search wraps; ``Occupy``/``Release`` mark every index a CIDR covers (a CIDR
  wider than the cluster CIDR covers all of it), and neither moves ``nextCandidate``; an
  IPv6 set refuses a node mask more than ``clusterSubnetMaxDiff`` = 16 bits longer than
  the cluster mask (IPv4 has no such limit in the current code).
* ``pkg/controller/nodeipam/ipam/range_allocator.go``: one CidrSet per cluster CIDR (at
  most two, one per family: dual-stack), a node gets ``AllocateNext`` from each, in the
  order of ``--cluster-cidr``; nodes that already have ``spec.podCIDRs`` are occupied
  (``podCIDRs[i]`` in set ``i``; a CIDR outside its cluster CIDR stops the controller);
  the service CIDRs are occupied first where they overlap (``filterOutServiceRange``).
* ``cmd/kube-controller-manager/app/core.go``: ``setNodeCIDRMaskSizes`` (default /24 for
  IPv4, /64 for IPv6; ``--node-cidr-mask-size`` is refused with dual-stack, the per-family
  flags with the other family's single stack) and ``validateCIDRs``;
  ``pkg/controller/nodeipam/node_ipam_controller.go``: a cluster mask longer than the node
  mask is an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ..errors import InputError
from ..ipaddr import IPNetwork, parse_cidr

CLUSTER_SUBNET_MAX_DIFF = 16  # cidr_set.go clusterSubnetMaxDiff (IPv6 only)
DEFAULT_NODE_MASK = {4: 24, 6: 64}  # kube-controller-manager's defaults
MAX_SUBNETS = 1 << 24  # kproxy-emu's own bound on one set's bitmap (16 MiB)


class Bitmap:
    """A byte per slot (``bytearray``): set, clear and the next free slot at C speed."""

    __slots__ = ("buf", "count", "size")

    def __init__(self, size: int):
        self.size = size
        self.buf = bytearray(size)
        self.count = 0

    def has(self, i: int) -> bool:
        return bool(self.buf[i])

    def set(self, i: int) -> bool:
        if self.buf[i]:
            return False
        self.buf[i] = 1
        self.count += 1
        return True

    def clear(self, i: int) -> bool:
        if not self.buf[i]:
            return False
        self.buf[i] = 0
        self.count -= 1
        return True

    def set_range(self, begin: int, end: int) -> int:
        """Set ``[begin, end]``; how many were free."""
        fresh = (end - begin + 1) - self.buf.count(1, begin, end + 1)
        self.buf[begin : end + 1] = b"\x01" * (end - begin + 1)
        self.count += fresh
        return fresh

    def clear_range(self, begin: int, end: int) -> int:
        used = self.buf.count(1, begin, end + 1)
        self.buf[begin : end + 1] = bytes(end - begin + 1)
        self.count -= used
        return used

    def first_free(self, start: int, lo: int, hi: int) -> int:
        """The first free slot in ``[start, hi)``, then in ``[lo, start)``; -1 when none."""
        i = self.buf.find(0, start, hi)
        if i < 0:
            i = self.buf.find(0, lo, start)
        return i

    def used(self) -> list[int]:
        out, i = [], self.buf.find(1)
        while i >= 0:
            out.append(i)
            i = self.buf.find(1, i + 1)
        return out


class CidrSet:
    """One cluster CIDR split into node subnets (``cidrset.CidrSet``)."""

    def __init__(self, cluster_cidr: str | IPNetwork, node_mask_size: int):
        net = parse_cidr(cluster_cidr) if isinstance(cluster_cidr, str) else cluster_cidr
        bits = net.max_prefixlen
        if not net.prefixlen <= node_mask_size <= bits:
            raise InputError(
                f"node CIDR mask size must be between the cluster CIDR's /{net.prefixlen} "
                f"and /{bits} (kube-controller-manager: mask size of cluster CIDR must be "
                "less than or equal to --node-cidr-mask-size)",
                field="node-cidr-mask-size",
                value=node_mask_size,
            )
        diff = node_mask_size - net.prefixlen
        if net.version == 6 and diff > CLUSTER_SUBNET_MAX_DIFF:
            raise InputError(
                f"node CIDR size is too big: /{node_mask_size} is more than "
                f"{CLUSTER_SUBNET_MAX_DIFF} bits longer than the cluster CIDR {net} "
                "(cidr_set.go clusterSubnetMaxDiff)",
                field="node-cidr-mask-size",
                value=node_mask_size,
            )
        if (1 << diff) > MAX_SUBNETS:
            raise InputError(
                f"{net} in /{node_mask_size} subnets is 2^{diff} node CIDRs; kproxy-emu "
                "models at most 2^24 per cluster CIDR",
                field="node-cidr-mask-size",
                value=node_mask_size,
            )
        self.cluster_cidr: IPNetwork = net
        self.node_mask_size = node_mask_size
        self.max_cidrs = 1 << diff
        self.next_candidate = 0
        self.used = Bitmap(self.max_cidrs)
        self._shift = bits - node_mask_size
        self._base = int(net.network_address)

    @property
    def family(self) -> int:
        return self.cluster_cidr.version

    @property
    def allocated(self) -> int:
        return self.used.count

    @property
    def free(self) -> int:
        return self.max_cidrs - self.used.count

    def index_to_cidr(self, index: int) -> IPNetwork:
        """``indexToCIDRBlock``: the ``index``-th subnet of the cluster CIDR."""
        addr = self._base | (index << self._shift)
        return ipaddress.ip_network((addr, self.node_mask_size))

    def allocate_next(self) -> IPNetwork:
        """``AllocateNext``; InputError when the set is full."""
        if self.used.count == self.max_cidrs:
            raise InputError(
                "CIDR allocation failed; there are no remaining CIDRs left to allocate in the "
                "accepted range",
                field="cluster-cidr",
                value=str(self.cluster_cidr),
            )
        candidate = self.used.first_free(self.next_candidate, 0, self.max_cidrs)
        self.next_candidate = (candidate + 1) % self.max_cidrs
        self.used.set(candidate)
        return self.index_to_cidr(candidate)

    def _indices(self, cidr: IPNetwork) -> tuple[int, int]:
        """``getBeginningAndEndIndices``; ValueError when the CIDR misses the cluster CIDR."""
        if cidr.version != self.family or not cidr.overlaps(self.cluster_cidr):
            raise ValueError(f"cidr {cidr} is out the range of cluster cidr {self.cluster_cidr}")
        if cidr.prefixlen <= self.cluster_cidr.prefixlen:
            return 0, self.max_cidrs - 1
        first = int(cidr.network_address) - self._base
        last = int(cidr.broadcast_address) - self._base
        return first >> self._shift, last >> self._shift

    def occupy(self, cidr: str | IPNetwork) -> int:
        """``Occupy``: mark every subnet the CIDR covers; how many were free. ValueError
        when the CIDR is outside the cluster CIDR."""
        begin, end = self._indices(parse_cidr(cidr) if isinstance(cidr, str) else cidr)
        return self.used.set_range(begin, end)

    def release(self, cidr: str | IPNetwork) -> int:
        """``Release``: free every subnet the CIDR covers; how many were used."""
        begin, end = self._indices(parse_cidr(cidr) if isinstance(cidr, str) else cidr)
        return self.used.clear_range(begin, end)

    def contains(self, cidr: IPNetwork) -> bool:
        return cidr.version == self.family and cidr.subnet_of(self.cluster_cidr)  # type: ignore[arg-type]


def node_mask_sizes(
    cluster_cidrs: Sequence[IPNetwork],
    *,
    mask_size: int | None = None,
    mask_size_ipv4: int | None = None,
    mask_size_ipv6: int | None = None,
) -> list[int]:
    """The node mask size of each cluster CIDR as kube-controller-manager picks it
    (core.go ``validateCIDRs`` and ``setNodeCIDRMaskSizes``); InputError naming the flag."""
    families = [c.version for c in cluster_cidrs]
    if not cluster_cidrs:
        raise InputError("no cluster CIDR", field="cluster-cidr")
    if len(cluster_cidrs) > 2:
        raise InputError(
            f"length of clusterCIDRs is {len(cluster_cidrs)}, more than max allowed of 2",
            field="cluster-cidr",
            value=",".join(map(str, cluster_cidrs)),
        )
    if len(cluster_cidrs) == 2 and families[0] == families[1]:
        raise InputError(
            "two cluster CIDRs must be dual-stack (one of each IP family)",
            field="cluster-cidr",
            value=",".join(map(str, cluster_cidrs)),
        )
    v4, v6 = DEFAULT_NODE_MASK[4], DEFAULT_NODE_MASK[6]
    if len(cluster_cidrs) == 2:
        if mask_size is not None:
            raise InputError(
                "usage of --node-cidr-mask-size is not allowed with dual-stack clusters",
                field="node-cidr-mask-size",
                value=mask_size,
            )
        v4 = mask_size_ipv4 if mask_size_ipv4 is not None else v4
        v6 = mask_size_ipv6 if mask_size_ipv6 is not None else v6
    elif mask_size is not None:
        if mask_size_ipv4 is not None or mask_size_ipv6 is not None:
            raise InputError(
                "usage of --node-cidr-mask-size-ipv4 and --node-cidr-mask-size-ipv6 is not "
                "allowed if --node-cidr-mask-size is set",
                field="node-cidr-mask-size",
                value=mask_size,
            )
        v4 = v6 = mask_size
    else:
        if mask_size_ipv4 is not None:
            if families[0] == 6:
                raise InputError(
                    "usage of --node-cidr-mask-size-ipv4 is not allowed for a single-stack "
                    "IPv6 cluster",
                    field="node-cidr-mask-size-ipv4",
                    value=mask_size_ipv4,
                )
            v4 = mask_size_ipv4
        if mask_size_ipv6 is not None:
            if families[0] == 4:
                raise InputError(
                    "usage of --node-cidr-mask-size-ipv6 is not allowed for a single-stack "
                    "IPv4 cluster",
                    field="node-cidr-mask-size-ipv6",
                    value=mask_size_ipv6,
                )
            v6 = mask_size_ipv6
    return [v6 if f == 6 else v4 for f in families]


class NodeCidrAllocator:
    """The range allocator: one CidrSet per cluster CIDR, a node takes one subnet of each
    (``range_allocator.go``). ``service_cidrs`` overlapping a cluster CIDR are occupied
    first, as ``filterOutServiceRange`` does."""

    def __init__(
        self,
        cluster_cidrs: Sequence[str | IPNetwork],
        mask_sizes: Sequence[int] | None = None,
        *,
        service_cidrs: Sequence[str | IPNetwork] = (),
    ):
        nets = [parse_cidr(c) if isinstance(c, str) else c for c in cluster_cidrs]
        sizes = list(mask_sizes) if mask_sizes is not None else node_mask_sizes(nets)
        if len(sizes) != len(nets):
            raise InputError(
                "one node mask size per cluster CIDR", field="node-cidr-mask-size", value=sizes
            )
        self.sets = [CidrSet(net, size) for net, size in zip(nets, sizes)]
        self.filtered: list[tuple[IPNetwork, IPNetwork, int]] = []  # (service, cluster, n)
        for svc in service_cidrs:
            snet = parse_cidr(svc) if isinstance(svc, str) else svc
            for s in self.sets:
                if snet.version == s.family and snet.overlaps(s.cluster_cidr):
                    self.filtered.append((snet, s.cluster_cidr, s.occupy(snet)))

    def allocate(self) -> list[IPNetwork]:
        """``AllocateOrOccupyCIDR`` for a node without podCIDRs: ``AllocateNext`` of each
        set in order. When a set is full the error is raised and, as upstream, the subnets
        already taken from the sets before it stay marked (the node gets none; a restart of
        the controller, which re-occupies from the Nodes, frees them)."""
        return [s.allocate_next() for s in self.sets]

    def occupy(self, pod_cidrs: Sequence[str | IPNetwork]) -> list[int]:
        """Occupy a node's ``spec.podCIDRs``, ``podCIDRs[i]`` in set ``i`` (``occupyCIDRs``);
        ValueError naming the index when one does not fit."""
        fresh = []
        for idx, c in enumerate(pod_cidrs):
            if idx >= len(self.sets):
                raise ValueError(
                    f"podCIDRs[{idx}] {c} has no cluster CIDR at index {idx} to occupy it in"
                )
            try:
                fresh.append(self.sets[idx].occupy(c))
            except ValueError as exc:
                raise ValueError(f"podCIDRs[{idx}]: {exc}") from None
        return fresh

    @property
    def nodes_left(self) -> int:
        """Nodes that can still get podCIDRs: a node needs one subnet of every set."""
        return min(s.free for s in self.sets)
