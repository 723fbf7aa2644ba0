"""Kubernetes model: objects, manifest loading and validation, configuration inputs."""

from .cluster import Cluster, UnsupportedKindWarning
from .objects import (
    ContainerPort,
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
    "ContainerPort",
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
