"""IP address management: node pod CIDRs as kube-controller-manager allocates them and
Service ClusterIPs as kube-apiserver does, and the planner's report (docs/ipam.md).

Layer: imports ``model`` only (beside ``proxy``, ``policy`` and ``dns``)."""

from .cidrset import DEFAULT_NODE_MASK, CidrSet, NodeCidrAllocator, node_mask_sizes
from .serviceip import (
    ALLOCATORS,
    ServiceIPAllocator,
    ServiceIPRange,
    range_offset,
)

__all__ = [
    "ALLOCATORS",
    "DEFAULT_NODE_MASK",
    "CidrSet",
    "NodeCidrAllocator",
    "ServiceIPAllocator",
    "ServiceIPRange",
    "node_mask_sizes",
    "range_offset",
]
