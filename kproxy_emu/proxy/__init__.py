"""The per-node proxy view every mode compiles from (mirrors kube-proxy's pkg/proxy)."""

from .options import ProxyOptions
from .view import EndpointInfo, ProxyView, ServicePortInfo, categorize_endpoints

__all__ = ["EndpointInfo", "ProxyOptions", "ProxyView", "ServicePortInfo", "categorize_endpoints"]
