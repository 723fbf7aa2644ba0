"""Service ports and their endpoints as one kube-proxy instance sees them.

Mirrors pkg/proxy (servicechangetracker, endpointslicecache, topology.go): which services
are programmed, ServicePortName strings, endpoints matched by port name and protocol and
sorted by their ``IP:port`` string, and CategorizeEndpoints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..model.cluster import Cluster
from ..model.objects import EndpointSlice, Service
from .options import ProxyOptions

# one shared empty set: an empty frozenset is 216 bytes, and most endpoints have no hints
NO_HINTS: frozenset[str] = frozenset()


@dataclass(slots=True)
class EndpointInfo:
    ip: str
    port: int
    string: str  # "IP:port" ("[IP]:port" for IPv6): kube-proxy's endpoint string
    is_local: bool
    ready: bool
    serving: bool
    terminating: bool
    zone_hints: frozenset[str] = NO_HINTS
    node_hints: frozenset[str] = NO_HINTS
    has_zone_hints: bool = False
    has_node_hints: bool = False

    @staticmethod
    def format(ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(slots=True)
class ServicePortInfo:
    namespace: str
    name: str
    port_name: str
    protocol: str  # TCP, UDP, SCTP
    cluster_ip: str
    port: int
    node_port: int
    external_ips: list[str]
    lb_ips: list[str]
    source_ranges: list[str]
    affinity_timeout: int  # 0: no session affinity
    external_policy_local: bool
    internal_policy_local: bool
    health_check_node_port: int
    traffic_distribution: str = ""
    endpoints: list[EndpointInfo] = field(default_factory=list)

    @property
    def spn(self) -> str:
        """ServicePortName.String(): ``ns/name`` plus ``:port`` when the port is named."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.lb_ips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (
            self.external_policy_local and self.externally_accessible
        )


def _family_of(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def _service_ports(svc: Service, family: str) -> list[ServicePortInfo]:
    if not svc.proxied:
        return []
    cluster_ip = next(
        (
            ip
            for ip in svc.cluster_ips or [svc.cluster_ip]
            if ip not in ("", "None") and _family_of(ip) == family
        ),
        None,
    )
    if cluster_ip is None:
        return []
    external_ips = [ip for ip in svc.external_ips if _family_of(ip) == family]
    lb_ips = [
        i.ip for i in svc.lb_ingress if i.ip and i.ip_mode != "Proxy" and _family_of(i.ip) == family
    ]
    ranges = [c for c in svc.lb_source_ranges if _family_of(c.partition("/")[0]) == family]
    needs_health_check = svc.type == "LoadBalancer" and svc.external_traffic_policy == "Local"
    # apiservice.ExternallyAccessible: NodePort/LoadBalancer, or ClusterIP with externalIPs
    externally_accessible = svc.type in ("NodePort", "LoadBalancer") or bool(svc.external_ips)
    ports = []
    for p in svc.ports:
        ports.append(
            ServicePortInfo(
                namespace=svc.namespace,
                name=svc.name,
                port_name=p.name,
                protocol=p.protocol,
                cluster_ip=cluster_ip,
                port=p.port,
                node_port=p.node_port,
                external_ips=external_ips,
                lb_ips=lb_ips,
                source_ranges=ranges,
                affinity_timeout=svc.affinity_timeout if svc.session_affinity == "ClientIP" else 0,
                external_policy_local=svc.external_traffic_policy == "Local"
                and externally_accessible,
                internal_policy_local=svc.internal_traffic_policy == "Local",
                health_check_node_port=svc.health_check_node_port if needs_health_check else 0,
                traffic_distribution=svc.traffic_distribution,
            )
        )
    return ports


def build_service_ports(
    svc: Service, slices: Iterable[EndpointSlice], options: ProxyOptions
) -> list[ServicePortInfo]:
    """One Service's programmed ports with their endpoints (kube-proxy's
    serviceToServiceMap, then the endpoint slice cache for each port)."""
    ports = _service_ports(svc, options.family)
    if not ports:
        return ports
    node_name = options.node.name
    # endpoint string -> info per (port name, protocol); a ready copy wins
    by_port: dict[tuple[str, str], dict[str, EndpointInfo]] = {}
    for s in slices:
        if s.address_type != options.family:
            continue
        for sp in s.ports:
            if sp.port is None:
                continue
            seen = by_port.setdefault((sp.name, sp.protocol), {})
            port = sp.port
            for ep in s.endpoints:
                ip = ep.addresses[0]
                string = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"  # .format, inlined
                zones, nodes = ep.hints_zones, ep.hints_nodes
                # positional, in field order: a million-endpoint view builds millions
                info = EndpointInfo(
                    ip,
                    port,
                    string,
                    ep.node_name == node_name and bool(node_name),
                    ep.ready is None or ep.ready,
                    ep.serving is None or ep.serving,
                    bool(ep.terminating),
                    frozenset(zones) if zones else NO_HINTS,
                    frozenset(nodes) if nodes else NO_HINTS,
                    bool(zones),
                    bool(nodes),
                )
                old = seen.get(string)
                if old is None or (info.ready and not old.ready):
                    seen[string] = info
    for sp in ports:
        found = by_port.get((sp.port_name, sp.protocol), {})
        # kube-proxy keeps endpoints sorted by their string ("10.1.1.11:11" < "10.1.1.1:11")
        sp.endpoints = [found[k] for k in sorted(found)]
    return ports


LOG_LENGTH = 16  # apply() calls whose removed and added ports a compiler can ask for


class ProxyView:
    """Every programmed service port of a cluster, with its endpoints, for one node.

    Kept per Service (``by_service``, in the cluster's Service order) so that a sync after
    a change rebuilds only the changed Services' ServicePortInfos (``apply``); the others
    keep their objects, which the modes' compilers use as cache keys."""

    def __init__(self, cluster: Cluster, options: ProxyOptions):
        self.options = options
        slices = cluster.slices_by_service()
        self.by_service: dict[tuple[str, str], list[ServicePortInfo]] = {
            key: build_service_ports(svc, slices.get(key, ()), options)
            for key, svc in cluster.services.items()
        }
        self._flat: list[ServicePortInfo] | None = None
        self._total = sum(len(sp.endpoints) for ports in self.by_service.values() for sp in ports)
        # the ports each apply() removed and added, for compilers that keep per-port state
        self.version = 0
        self._log: list[tuple[int, list[ServicePortInfo], list[ServicePortInfo]]] = []

    @property
    def service_ports(self) -> list[ServicePortInfo]:
        """Every programmed service port, in Service order then port order."""
        if self._flat is None:
            self._flat = list(itertools.chain.from_iterable(self.by_service.values()))
        return self._flat

    @property
    def total_endpoints(self) -> int:
        return self._total

    def apply(
        self,
        changed: Iterable[tuple[str, str]],
        services: Mapping[tuple[str, str], Service],
        slices_for: Callable[[tuple[str, str]], Iterable[EndpointSlice]],
        *,
        reorder: bool = False,
    ) -> None:
        """Rebuild the ServicePortInfos of the ``changed`` Services from their current
        Service (``services``; absent: deleted) and EndpointSlices. ``services`` orders
        the view: an added Service comes last, as in the cluster's dict; ``reorder``: the
        Service order changed otherwise (a Service deleted and added again, a rebuilt
        dict), so follow ``services`` throughout."""
        by_service = self.by_service
        removed: list[ServicePortInfo] = []
        added: list[ServicePortInfo] = []
        for key in changed:
            old = by_service.pop(key, None) if key not in services else by_service.get(key)
            if old:
                self._total -= sum(len(sp.endpoints) for sp in old)
                removed += old
            svc = services.get(key)
            if svc is not None:
                ports = build_service_ports(svc, slices_for(key), self.options)
                by_service[key] = ports
                self._total += sum(len(sp.endpoints) for sp in ports)
                added += ports
        if reorder:
            self.by_service = {key: by_service[key] for key in services}
        self._flat = None
        self.version += 1
        self._log = [*self._log[-(LOG_LENGTH - 1) :], (self.version, removed, added)]

    def changes_since(
        self, version: int
    ) -> tuple[list[ServicePortInfo], list[ServicePortInfo]] | None:
        """The ports removed from and added to the view since ``version`` (a port added
        and removed again in between is in neither); None when that is too long ago."""
        if version == self.version:
            return [], []
        entries = [e for e in self._log if e[0] > version]
        if len(entries) != self.version - version:
            return None
        removed = [sp for e in entries for sp in e[1]]
        added = [sp for e in entries for sp in e[2]]
        gone = {id(sp) for sp in removed}
        new = {id(sp) for sp in added}
        # the log keeps the objects alive, so an id means one object throughout
        return [sp for sp in removed if id(sp) not in new], [
            sp for sp in added if id(sp) not in gone
        ]


@dataclass(slots=True)
class Categorized:
    cluster: list[EndpointInfo]
    local: list[EndpointInfo]
    all_reachable: list[EndpointInfo]
    has_any: bool


def _topology_filter(
    endpoints: list[EndpointInfo], node_name: str, zone: str | None
) -> list[EndpointInfo]:
    """Hints are used only when every ready endpoint carries them and one names this node
    (PreferSameNode node hints) or its zone; otherwise they are ignored altogether."""
    if all(e.has_node_hints for e in endpoints):
        picked = [e for e in endpoints if node_name in e.node_hints]
        if picked:
            return picked
    if zone and all(e.has_zone_hints for e in endpoints):
        picked = [e for e in endpoints if zone in e.zone_hints]
        if picked:
            return picked
    return endpoints


def categorize_endpoints(
    sp: ServicePortInfo, node_name: str, zone: str | None = None
) -> Categorized:
    """CategorizeEndpoints (pkg/proxy/topology.go)."""
    cluster: list[EndpointInfo] = []
    local: list[EndpointInfo] = []
    has_any = False
    endpoints = sp.endpoints
    if sp.uses_cluster_endpoints:
        ready = [e for e in endpoints if e.ready]
        cluster = _topology_filter(ready, node_name, zone) if ready else []
        if not cluster:
            cluster = [e for e in endpoints if e.serving and e.terminating]
        has_any = bool(cluster)
    if sp.uses_local_endpoints:
        has_local_ready = has_local_serving_terminating = False
        for e in endpoints:
            if e.ready:
                has_any = True
                if e.is_local:
                    has_local_ready = True
            elif e.serving and e.terminating:
                has_any = True
                if e.is_local:
                    has_local_serving_terminating = True
        if has_local_ready:
            local = [e for e in endpoints if e.is_local and e.ready]
        elif has_local_serving_terminating:
            local = [e for e in endpoints if e.is_local and e.serving and e.terminating]
    if not sp.uses_local_endpoints:
        all_reachable = cluster
    elif not sp.uses_cluster_endpoints:
        all_reachable = local
    else:
        merged = {e.string: e for e in cluster}
        for e in local:
            merged.setdefault(e.string, e)
        all_reachable = [merged[k] for k in sorted(merged)]
    return Categorized(cluster, local, all_reachable, has_any)
