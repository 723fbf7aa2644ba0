"""Kubernetes model: objects, manifest loading and validation, configuration inputs."""

from .cluster import Cluster, UnsupportedKindWarning
from .objects import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    LoadBalancerIngress,
    Namespace,
    NetworkPolicy,
    Node,
    NodeAddress,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
)

__all__ = [
    "Cluster",
    "Endpoint",
    "EndpointPort",
    "EndpointSlice",
    "LoadBalancerIngress",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "NodeAddress",
    "Pod",
    "Service",
    "ServiceCIDR",
    "ServicePort",
    "UnsupportedKindWarning",
]
