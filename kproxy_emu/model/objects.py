"""The Kubernetes objects kube-proxy (and later NetworkPolicy, DNS, IPAM work) reads.

Plain dataclasses holding validated, canonical values (IP addresses re-printed the way
kube-proxy prints them). Optional API booleans keep their nil (None) so a dump writes back
what was read; the properties apply the API's nil defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"
DEFAULT_AFFINITY_TIMEOUT = 10800  # API default of sessionAffinityConfig.clientIP.timeoutSeconds

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(slots=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | str = 0  # number, or a named container port
    node_port: int = 0  # 0: none allocated


@dataclass(slots=True)
class LoadBalancerIngress:
    ip: str = ""
    hostname: str = ""
    ip_mode: str = ""  # "", "VIP" or "Proxy" (kube-proxy skips Proxy)


@dataclass(slots=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ip: str = ""  # "" none yet, "None" headless
    cluster_ips: list[str] = field(default_factory=list)
    ports: list[ServicePort] = field(default_factory=list)
    selector: dict[str, str] | None = None
    external_ips: list[str] = field(default_factory=list)
    load_balancer_ip: str = ""  # deprecated spec.loadBalancerIP
    lb_ingress: list[LoadBalancerIngress] = field(default_factory=list)
    lb_source_ranges: list[str] = field(default_factory=list)  # trimmed, canonical CIDRs
    session_affinity: str = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    external_traffic_policy: str = ""  # "", "Cluster", "Local"
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int = 0
    ip_families: list[str] = field(default_factory=list)
    ip_family_policy: str = ""
    traffic_distribution: str = ""
    external_name: str = ""
    publish_not_ready_addresses: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    kind = "Service"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"Service {self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def proxied(self) -> bool:
        """kube-proxy programs nothing for headless, IP-less and ExternalName services."""
        return self.type != "ExternalName" and self.cluster_ip not in ("", "None")


@dataclass(slots=True)
class Endpoint:
    addresses: list[str]
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    node_name: str = ""
    zone: str = ""
    hostname: str = ""
    hints_zones: list[str] = field(default_factory=list)
    hints_nodes: list[str] = field(default_factory=list)
    target_ref: dict[str, str] | None = None  # kind/namespace/name of the backing pod

    @property
    def is_ready(self) -> bool:
        return self.ready is None or self.ready

    @property
    def is_serving(self) -> bool:
        # kube-proxy's endpoint cache reads a nil serving as true (as the v1 API doc says)
        return self.serving is None or self.serving

    @property
    def is_terminating(self) -> bool:
        return bool(self.terminating)


@dataclass(slots=True)
class EndpointPort:
    port: int | None  # None: the API allows it; kube-proxy skips such ports
    protocol: str = "TCP"
    name: str = ""
    app_protocol: str = ""


@dataclass(slots=True)
class EndpointSlice:
    namespace: str
    name: str
    address_type: str  # IPv4, IPv6, FQDN
    endpoints: list[Endpoint] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    kind = "EndpointSlice"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"EndpointSlice {self.namespace}/{self.name}"

    @property
    def service_name(self) -> str:
        """The owning service's name; "" when the label is missing (kube-proxy ignores it)."""
        return self.labels.get(SERVICE_NAME_LABEL, "")


@dataclass(slots=True)
class NodeAddress:
    type: str  # InternalIP, ExternalIP, Hostname, InternalDNS, ExternalDNS
    address: str


@dataclass(slots=True)
class Node:
    name: str
    addresses: list[NodeAddress] = field(default_factory=list)
    pod_cidrs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    kind = "Node"
    namespace = ""

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    @property
    def ref(self) -> str:
        return f"Node {self.name}"

    @property
    def zone(self) -> str:
        return self.labels.get(ZONE_LABEL) or self.labels.get(LEGACY_ZONE_LABEL, "")

    @property
    def ips(self) -> list[str]:
        """Node IPs, InternalIP before ExternalIP, as kube-proxy picks its node IPs."""
        internal = [a.address for a in self.addresses if a.type == "InternalIP"]
        external = [a.address for a in self.addresses if a.type == "ExternalIP"]
        return internal + external


@dataclass(slots=True)
class ContainerPort:
    """One ``spec.containers[].ports[]`` entry (NetworkPolicy resolves named ports on them)."""

    container_port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(slots=True)
class Pod:
    namespace: str
    name: str
    node_name: str = ""
    pod_ips: list[str] = field(default_factory=list)
    host_network: bool = False
    phase: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    container_ports: list[ContainerPort] = field(default_factory=list)  # every container's

    kind = "Pod"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"Pod {self.namespace}/{self.name}"


@dataclass(slots=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    kind = "Namespace"
    namespace = ""

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    @property
    def ref(self) -> str:
        return f"Namespace {self.name}"


@dataclass(slots=True)
class ServiceCIDR:
    name: str
    cidrs: list[str]
    labels: dict[str, str] = field(default_factory=dict)

    kind = "ServiceCIDR"
    namespace = ""

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)

    @property
    def ref(self) -> str:
        return f"ServiceCIDR {self.name}"


@dataclass(slots=True)
class NetworkPolicy:
    """Kept whole: ``spec`` is the manifest's dict, validated on load as the API server
    validates it (model/netpol.py; kproxy_emu.policy evaluates it)."""

    namespace: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    kind = "NetworkPolicy"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"NetworkPolicy {self.namespace}/{self.name}"


KubeObject = Service | EndpointSlice | Node | Pod | Namespace | ServiceCIDR | NetworkPolicy
