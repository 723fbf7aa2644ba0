"""Synthetic clusters: seeded, deterministic, and fast enough for 100,000 services.

Every random choice comes from one ``numpy.random.Generator`` seeded with ``seed``; the
draws are made in bulk per kind of choice, so the same spec and seed give the same cluster.
Addresses are allocated sequentially from the configured ranges (no collisions).

NetworkPolicies (``policies=N``, mixed by ``policy_mix``) come from a second generator
seeded from ``seed``, so asking for them leaves every other draw (services, endpoints,
pods) as it was; with policies, namespaces carry ``team`` and ``env`` labels and pods
their containers' ports (the services' target ports, named as the service ports).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .ipam import NodeCidrAllocator, ServiceIPAllocator
from .model.cluster import Cluster, paused_gc
from .model.objects import (
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
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

SERVICE_KINDS = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Headless")
DEFAULT_TYPE_MIX = {
    "ClusterIP": 0.75,
    "NodePort": 0.10,
    "LoadBalancer": 0.08,
    "ExternalName": 0.02,
    "Headless": 0.05,
}
DEFAULT_PROTOCOL_MIX = {"TCP": 0.85, "UDP": 0.12, "SCTP": 0.03}
COMMON_PORTS = (80, 443, 8080, 53, 9090, 5432, 6379, 3306, 8443, 9000, 11211, 27017)
MAX_ENDPOINTS_PER_SLICE = 100  # the EndpointSlice controller's default
ZONES = ("zone-a", "zone-b", "zone-c")
_NAME_ALPHABET = np.array(list("bcdfghjklmnpqrstvwxz2456789"))  # k8s utilrand alphabet
_MANAGED_BY = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
POLICY_KINDS = ("default-deny", "allow-from-namespace", "allow-from-app", "ipblock-egress")
DEFAULT_POLICY_MIX = {
    "default-deny": 0.2,
    "allow-from-namespace": 0.3,
    "allow-from-app": 0.3,
    "ipblock-egress": 0.2,
}
ENVS = ("prod", "staging", "dev")


@dataclass
class SynthSpec:
    services: int = 1000
    endpoints: int | str = 10  # K, "fixed:K", "uniform:A-B" or "poisson:MEAN"
    nodes: int = 10
    seed: int = 0
    namespaces: int = 0  # 0: about one per 50 services
    type_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_MIX))
    protocol_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PROTOCOL_MIX))
    ports_per_service: tuple[float, ...] = (0.80, 0.15, 0.05)  # share with 1, 2, 3 ports
    lb_source_range_share: float = 0.5
    lb_proxy_mode_share: float = 0.05
    external_ip_share: float = 0.05
    etp_local_share: float = 0.3
    itp_local_share: float = 0.05
    affinity_share: float = 0.1
    prefer_close_share: float = 0.05
    terminating_share: float = 0.02
    not_ready_share: float = 0.03
    pods: bool = False
    # NetworkPolicies: how many, and the share of each kind (POLICY_KINDS; see _policies)
    policies: int = 0
    policy_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_POLICY_MIX))
    service_cidr: str = "172.16.0.0/12"
    cluster_cidr: str = "10.0.0.0/8"
    node_cidr: str = "192.168.0.0/16"
    external_ip_cidr: str = "198.18.0.0/15"  # RFC 2544 benchmarking range
    lb_ip_cidr: str = "100.64.0.0/10"
    node_port_range: tuple[int, int] | None = None  # None: 30000-32767, widened if too small
    # node podCIDRs come from kproxy_emu.ipam's CidrSet (kube-controller-manager's order);
    # None: the smallest size that fits the nodes, at most /24 (the size before ipam)
    node_cidr_mask_size: int | None = None
    # ClusterIPs: "sequential" (service i takes the i-th address) or "apiserver" (the
    # ipam allocator: random in the dynamic band, the first address kept for kubernetes)
    ip_allocation: str = "sequential"


def cluster(services: int = 1000, **options: Any) -> Cluster:
    """A synthetic cluster; see SynthSpec for the options."""
    return generate(SynthSpec(services=services, **options))


def parse_endpoint_spec(spec: int | str) -> tuple[str, float, float]:
    """``10`` / ``fixed:10`` / ``uniform:1-20`` / ``poisson:8`` -> (kind, a, b)."""
    is_int = isinstance(spec, int) and not isinstance(spec, bool)
    if is_int or (isinstance(spec, str) and re.fullmatch(r"\d+", spec.strip())):
        kind, a, b = "fixed", float(spec), 0.0
    elif isinstance(spec, str) and (m := re.fullmatch(r"fixed:(\d+)", spec.strip())):
        kind, a, b = "fixed", float(m[1]), 0.0
    elif isinstance(spec, str) and (m := re.fullmatch(r"uniform:(\d+)-(\d+)", spec.strip())):
        kind, a, b = "uniform", float(m[1]), float(m[2])
        if a > b:
            raise InputError("uniform range must be low-high", field="endpoints", value=spec)
    elif isinstance(spec, str) and (m := re.fullmatch(r"poisson:(\d+(\.\d+)?)", spec.strip())):
        kind, a, b = "poisson", float(m[1]), 0.0
    else:
        raise InputError(
            "must be a count K, fixed:K, uniform:A-B or poisson:MEAN", field="endpoints", value=spec
        )
    if max(a, b) > 100_000:
        raise InputError("at most 100000 endpoints per service", field="endpoints", value=spec)
    return kind, a, b


def _validate(spec: SynthSpec) -> None:
    def bad(name: str, message: str, value: object) -> InputError:
        return InputError(message, field=name, value=value)

    for name in ("services", "nodes", "seed", "namespaces", "policies"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(name, "must be a non-negative integer", value)
    if spec.services > 2_000_000:
        raise bad("services", "at most 2000000", spec.services)
    if spec.nodes < 1:
        raise bad("nodes", "at least one node is needed", spec.nodes)
    for name in (
        "lb_source_range_share",
        "lb_proxy_mode_share",
        "external_ip_share",
        "etp_local_share",
        "itp_local_share",
        "affinity_share",
        "prefer_close_share",
        "terminating_share",
        "not_ready_share",
    ):
        value = getattr(spec, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise bad(name, "must be a share between 0 and 1", value)
    if spec.terminating_share + spec.not_ready_share > 1.0:
        raise bad(
            "terminating_share",
            "terminating and not-ready shares add up to more than 1",
            spec.terminating_share + spec.not_ready_share,
        )
    if spec.policies > 1_000_000:
        raise bad("policies", "at most 1000000", spec.policies)
    for name, mix, allowed in (
        ("type_mix", spec.type_mix, SERVICE_KINDS),
        ("protocol_mix", spec.protocol_mix, ("TCP", "UDP", "SCTP")),
        ("policy_mix", spec.policy_mix, POLICY_KINDS),
    ):
        for key, share in mix.items():
            if key not in allowed:
                raise bad(f"{name}.{key}", f"must be one of {', '.join(allowed)}", key)
            if not isinstance(share, (int, float)) or share < 0:
                raise bad(f"{name}.{key}", "must be a non-negative share", share)
        if sum(mix.values()) <= 0:
            raise bad(name, "shares must not all be zero", mix)
    if (
        not spec.ports_per_service
        or min(spec.ports_per_service) < 0
        or sum(spec.ports_per_service) <= 0
    ):
        raise bad(
            "ports_per_service", "must be non-negative shares, not all zero", spec.ports_per_service
        )
    if len(spec.ports_per_service) > len(COMMON_PORTS):
        raise bad(
            "ports_per_service",
            f"at most {len(COMMON_PORTS)} ports per service",
            len(spec.ports_per_service),
        )
    for name in ("service_cidr", "cluster_cidr", "node_cidr", "external_ip_cidr", "lb_ip_cidr"):
        try:
            net = ipaddress.ip_network(getattr(spec, name), strict=False)
        except ValueError:
            raise bad(name, "invalid CIDR", getattr(spec, name)) from None
        if net.version != 4:
            raise bad(name, "only IPv4 ranges are generated for now", getattr(spec, name))
    if spec.ip_allocation not in ("sequential", "apiserver"):
        raise bad("ip_allocation", "must be sequential or apiserver", spec.ip_allocation)
    mask = spec.node_cidr_mask_size
    if mask is not None and (isinstance(mask, bool) or not isinstance(mask, int)):
        raise bad("node_cidr_mask_size", "must be an integer", mask)
    parse_endpoint_spec(spec.endpoints)


class _Allocator:
    """Sequential addresses from a CIDR (skipping the network address)."""

    def __init__(self, cidr: str, what: str):
        self.net = ipaddress.ip_network(cidr, strict=False)
        self.base = int(self.net.network_address)
        self.next = 1
        self.what = what

    def take(self, count: int) -> list[str]:
        if self.next + count >= self.net.num_addresses:
            raise InputError(
                f"range too small for {self.next + count - 1} {self.what}",
                field=self.what.replace(" ", "_") + "_cidr",
                value=str(self.net),
            )
        start = self.base + self.next
        self.next += count
        return [str(ipaddress.IPv4Address(start + i)) for i in range(count)]


def _next_ip(alloc: ServiceIPAllocator, ns: str, name: str) -> str:
    try:
        return str(alloc.allocate_next(4, f"{ns}/{name}"))
    except InputError as exc:
        raise InputError(exc.message, field="service_cidr", value=exc.value) from None


def _ipv4_strings(values: npt.NDArray[np.integer[Any]]) -> list[str]:
    v = values.astype(np.uint32)
    return [
        f"{a}.{b}.{c}.{d}"
        for a, b, c, d in zip(
            (v >> 24).tolist(),
            ((v >> 16) & 255).tolist(),
            ((v >> 8) & 255).tolist(),
            (v & 255).tolist(),
        )
    ]


def _shares(mix: dict[str, float], keys: tuple[str, ...]) -> npt.NDArray[np.float64]:
    weights = np.array([float(mix.get(k, 0.0)) for k in keys])
    shares: npt.NDArray[np.float64] = weights / weights.sum()
    return shares


def generate(spec: SynthSpec) -> Cluster:
    _validate(spec)
    with paused_gc():
        return _generate(spec)


def _generate(spec: SynthSpec) -> Cluster:
    rng = np.random.default_rng(spec.seed)
    n = spec.services
    out = Cluster()

    # ---- nodes, each with a pod CIDR block of the cluster CIDR
    cluster_net = ipaddress.ip_network(spec.cluster_cidr, strict=False)
    block_prefix = min(24, cluster_net.prefixlen + max(1, math.ceil(math.log2(spec.nodes))))
    if spec.node_cidr_mask_size is None and block_prefix - cluster_net.prefixlen < math.log2(
        spec.nodes
    ):
        raise InputError(
            f"too small for {spec.nodes} nodes with /24 pod blocks",
            field="cluster_cidr",
            value=spec.cluster_cidr,
        )
    try:
        pod_alloc = NodeCidrAllocator(
            [cluster_net],
            [spec.node_cidr_mask_size or block_prefix],
            service_cidrs=[spec.service_cidr],
        )
    except InputError as exc:
        raise InputError(exc.message, field="node_cidr_mask_size", value=exc.value) from None
    node_ips = _Allocator(spec.node_cidr, "node").take(spec.nodes)
    node_names = [f"node-{i + 1:04d}" for i in range(spec.nodes)]
    node_zones = [ZONES[i % len(ZONES)] for i in range(spec.nodes)]
    node_pod_base, _node_pod_next, node_pod_size = [], [0] * spec.nodes, []
    for i, name in enumerate(node_names):
        try:
            block = pod_alloc.allocate()[0]
        except InputError as exc:
            raise InputError(exc.message, field="cluster_cidr", value=spec.cluster_cidr) from None
        node_pod_base.append(int(block.network_address))
        node_pod_size.append(block.num_addresses)
        out.add(
            Node(
                name=name,
                addresses=[NodeAddress("InternalIP", node_ips[i]), NodeAddress("Hostname", name)],
                pod_cidrs=[str(block)],
                labels={ZONE_LABEL: node_zones[i], "kubernetes.io/hostname": name},
            )
        )
    out.add(
        ServiceCIDR(
            name="kubernetes", cidrs=[str(ipaddress.ip_network(spec.service_cidr, strict=False))]
        )
    )

    # ---- namespaces
    n_ns = spec.namespaces or max(1, min(1000, math.ceil(n / 50)))
    ns_names = [f"ns-{i + 1:04d}" for i in range(n_ns)]
    teams = max(1, n_ns // 3)
    for i, name in enumerate(ns_names):
        labels = {"kubernetes.io/metadata.name": name}
        if spec.policies:
            labels.update(team=f"team-{i % teams}", env=ENVS[i % len(ENVS)])
        out.add(Namespace(name=name, labels=labels))
    apps: list[tuple[str, str, list[ServicePort]]] = []  # (namespace, app, ports) for policies

    # ---- bulk draws, one array per kind of choice
    kinds = rng.choice(len(SERVICE_KINDS), size=n, p=_shares(spec.type_mix, SERVICE_KINDS))
    port_counts = 1 + rng.choice(
        len(spec.ports_per_service),
        size=n,
        p=np.array(spec.ports_per_service) / sum(spec.ports_per_service),
    )
    protocols = ("TCP", "UDP", "SCTP")
    proto_draw = rng.choice(
        3, size=(n, len(spec.ports_per_service)), p=_shares(spec.protocol_mix, protocols)
    )
    port_offset = rng.integers(0, len(COMMON_PORTS), size=n)
    unnamed = rng.random(n) < 0.3
    ns_draw = rng.integers(0, n_ns, size=n)
    flags = rng.random((n, 8))
    ep_kind, a, b = parse_endpoint_spec(spec.endpoints)
    if ep_kind == "fixed":
        ep_counts = np.full(n, int(a), dtype=np.int64)
    elif ep_kind == "uniform":
        ep_counts = rng.integers(int(a), int(b) + 1, size=n)
    else:
        ep_counts = np.minimum(rng.poisson(a, size=n), 100_000)
    is_lb_or_np = np.isin(kinds, (1, 2))
    ep_counts[kinds == 3] = 0  # ExternalName services have no endpoints

    # node ports: one per port of NodePort/LoadBalancer services, plus health checks
    needed = int(port_counts[is_lb_or_np].sum()) + int((kinds == 2).sum())
    lo, hi = spec.node_port_range or (30000, 32767 if needed <= 2768 else 65535)
    if not 1 <= lo <= hi <= 65535 or hi - lo + 1 < needed:
        raise InputError(f"{needed} node ports needed", field="node_port_range", value=(lo, hi))
    node_ports = iter(range(lo, hi + 1))

    apiserver = ServiceIPAllocator([spec.service_cidr], seed=spec.seed)
    if spec.ip_allocation == "apiserver":
        apiserver.allocate(apiserver.ranges[0].address(0), "default/kubernetes")
        service_ips = []
    else:
        service_ips = _Allocator(spec.service_cidr, "service").take(n)
    ext_alloc = _Allocator(spec.external_ip_cidr, "external ip")
    lb_alloc = _Allocator(spec.lb_ip_cidr, "lb ip")

    total_eps = int(ep_counts.sum())
    ep_nodes = rng.integers(0, spec.nodes, size=total_eps)
    ep_state = rng.random(total_eps)
    n_slices = int(np.maximum(1, -(-ep_counts // MAX_ENDPOINTS_PER_SLICE)).sum())
    suffixes = _NAME_ALPHABET[rng.integers(0, len(_NAME_ALPHABET), size=(n_slices, 5))]
    suffix_strings = ["".join(row) for row in suffixes]
    suffix_i = 0
    # endpoint pod IPs: the k-th endpoint placed on a node takes the k-th address of its block
    order = np.argsort(ep_nodes, kind="stable")
    per_node = np.bincount(ep_nodes, minlength=spec.nodes)
    if per_node.size and int(per_node.max()) >= min(node_pod_size) - 2:
        raise InputError(
            f"pod CIDR blocks too small for {total_eps} endpoints on {spec.nodes} nodes",
            field="cluster_cidr",
            value=spec.cluster_cidr,
        )
    rank = np.empty(total_eps, dtype=np.int64)
    rank[order] = np.arange(total_eps) - np.repeat(np.cumsum(per_node) - per_node, per_node)
    ep_ips = _ipv4_strings(np.asarray(node_pod_base, dtype=np.int64)[ep_nodes] + 1 + rank)

    conditions = ((True, True, False), (False, True, True), (False, False, False))
    ep_cond = np.where(
        ep_state < spec.terminating_share,
        1,
        np.where(ep_state < spec.terminating_share + spec.not_ready_share, 2, 0),
    ).tolist()
    ep_nodes_l = ep_nodes.tolist()
    ep_cursor = 0
    kinds_l, counts_l, ports_l = kinds.tolist(), ep_counts.tolist(), port_counts.tolist()
    for i in range(n):
        kind = SERVICE_KINDS[kinds_l[i]]
        ns = ns_names[int(ns_draw[i])]
        name = f"svc-{i + 1:06d}"
        f = flags[i]
        svc = Service(namespace=ns, name=name, selector={"app": name}, labels={"app": name})
        if kind == "ExternalName":
            svc.type = "ExternalName"
            svc.external_name = f"{name}.{ns}.example.com"
            svc.selector = None
            out.add(svc)
            continue
        svc.type = "ClusterIP" if kind == "Headless" else kind
        if kind == "Headless":
            svc.cluster_ip, svc.cluster_ips = "None", ["None"]
        else:
            svc.cluster_ip = service_ips[i] if service_ips else _next_ip(apiserver, ns, name)
            svc.cluster_ips = [svc.cluster_ip]
        svc.ip_families, svc.ip_family_policy = ["IPv4"], "SingleStack"
        count = ports_l[i]
        for j in range(count):
            number = COMMON_PORTS[(int(port_offset[i]) + j) % len(COMMON_PORTS)]
            proto = protocols[int(proto_draw[i, j])]
            pname = "" if count == 1 and unnamed[i] else f"{proto.lower()}-{number}"
            svc.ports.append(
                ServicePort(
                    port=number,
                    protocol=proto,
                    name=pname,
                    target_port=number + 8000,
                    node_port=next(node_ports) if kind in ("NodePort", "LoadBalancer") else 0,
                )
            )
        if kind in ("NodePort", "LoadBalancer"):
            svc.external_traffic_policy = "Local" if f[0] < spec.etp_local_share else "Cluster"
        if kind == "LoadBalancer":
            ingress = LoadBalancerIngress(ip=lb_alloc.take(1)[0])
            if f[1] < spec.lb_proxy_mode_share:
                ingress.ip_mode = "Proxy"
            svc.lb_ingress = [ingress]
            if f[2] < spec.lb_source_range_share:
                svc.lb_source_ranges = ["203.0.113.0/25"]
            if svc.external_traffic_policy == "Local":
                svc.health_check_node_port = next(node_ports)
        if kind != "Headless" and f[3] < spec.external_ip_share:
            svc.external_ips = ext_alloc.take(1)
        if kind != "Headless" and f[4] < spec.itp_local_share:
            svc.internal_traffic_policy = "Local"
        if kind != "Headless" and f[5] < spec.affinity_share:
            svc.session_affinity = "ClientIP"
        prefer_close = kind != "Headless" and f[6] < spec.prefer_close_share
        if prefer_close:
            svc.traffic_distribution = "PreferClose"
        out.add(svc)
        apps.append((ns, name, svc.ports))
        container_ports = (
            [ContainerPort(cast(int, p.target_port), p.protocol, p.name) for p in svc.ports]
            if spec.policies
            else []
        )

        # ---- endpoint slices: at most 100 endpoints each, as the controller cuts them
        total = counts_l[i]
        slice_ports = [
            # synthetic services always target a port number, never a named port
            EndpointPort(port=cast(int, p.target_port), protocol=p.protocol, name=p.name)
            for p in svc.ports
        ]
        first = True
        while first or total > 0:
            first = False
            take = min(total, MAX_ENDPOINTS_PER_SLICE)
            endpoints = []
            for k in range(ep_cursor, ep_cursor + take):
                node = ep_nodes_l[k]
                ready, serving, terminating = conditions[ep_cond[k]]
                endpoint = Endpoint(
                    addresses=[ep_ips[k]],
                    ready=ready,
                    serving=serving,
                    terminating=terminating,
                    node_name=node_names[node],
                    zone=node_zones[node],
                    hints_zones=[node_zones[node]] if prefer_close else [],
                )
                endpoints.append(endpoint)
                if spec.pods:  # pods only when asked: a million of them is a lot of memory
                    pod_name = f"{name}-{k:07x}"
                    endpoint.target_ref = {"kind": "Pod", "namespace": ns, "name": pod_name}
                    out.add(
                        Pod(
                            namespace=ns,
                            name=pod_name,
                            node_name=node_names[node],
                            pod_ips=[ep_ips[k]],
                            labels={"app": name},
                            phase="Running",
                            container_ports=list(container_ports),
                        )
                    )
            ep_cursor += take
            total -= take
            slice_name = f"{name}-{suffix_strings[suffix_i]}"
            if (ns, slice_name) in out.endpoint_slices:  # same random suffix twice
                slice_name = f"{slice_name}{suffix_i}"
            out.add(
                EndpointSlice(
                    namespace=ns,
                    name=slice_name,
                    address_type="IPv4",
                    endpoints=endpoints,
                    ports=list(slice_ports),
                    labels={SERVICE_NAME_LABEL: name, **_MANAGED_BY},
                )
            )
            suffix_i += 1
    if spec.policies:
        size = pod_alloc.sets[0].node_mask_size
        pod_blocks = [f"{_ipv4_strings(np.array([b]))[0]}/{size}" for b in node_pod_base]
        for pol in _policies(spec, ns_names, teams, apps, pod_blocks):
            out.add(pol)
    return out


def _policies(
    spec: SynthSpec,
    ns_names: list[str],
    teams: int,
    apps: list[tuple[str, str, list[ServicePort]]],
    pod_blocks: list[str],
) -> list[NetworkPolicy]:
    """``spec.policies`` NetworkPolicies, each kind as clusters write them:

    * default-deny: every pod of a namespace isolated for ingress (a fifth also for egress,
      then allowed to its own namespace);
    * allow-from-namespace: an app's pods accept its first port from the namespaces of one
      team (``namespaceSelector`` matchLabels), half of them on every port;
    * allow-from-app: an app's pods accept another app of their namespace (``podSelector``)
      or, a third of the time, that app in prod/staging namespaces (both selectors, a
      matchExpressions In), on the port by name when it has one;
    * ipblock-egress: an app's pods may reach one node's pod range minus its first /28 on
      their first port's protocol (half of them on a port range), and the internet (0/0
      except the cluster range).
    """
    rng = np.random.default_rng([spec.seed, 14])  # issue 14: leaves the cluster's draws alone
    n = spec.policies
    kinds = rng.choice(len(POLICY_KINDS), size=n, p=_shares(spec.policy_mix, POLICY_KINDS))
    picks = rng.integers(0, max(1, len(apps)), size=(n, 2))
    coins = rng.random((n, 3))
    team_draw = rng.integers(0, teams, size=n)
    block_draw = rng.integers(0, len(pod_blocks), size=n)
    ns_draw = rng.integers(0, len(ns_names), size=n)
    cluster_net = str(ipaddress.ip_network(spec.cluster_cidr, strict=False))
    by_ns: dict[str, list[int]] = {}
    for k, (ns, _, _) in enumerate(apps):
        by_ns.setdefault(ns, []).append(k)
    out = []
    for i in range(n):
        kind = POLICY_KINDS[int(kinds[i])] if apps else "default-deny"
        c = coins[i]
        pol_spec: dict[str, Any]
        if kind == "default-deny":
            ns = apps[int(picks[i, 0])][0] if apps else ns_names[int(ns_draw[i])]
            pol_spec = {"podSelector": {}, "policyTypes": ["Ingress"]}
            if c[0] < 0.2:
                pol_spec["policyTypes"] = ["Ingress", "Egress"]
                pol_spec["egress"] = [{"to": [{"podSelector": {}}]}]
            out.append(NetworkPolicy(namespace=ns, name=f"{kind}-{i:05d}", spec=pol_spec))
            continue
        ns, app, ports = apps[int(picks[i, 0])]
        first = ports[0] if ports else None
        port_entry = (
            [{"protocol": first.protocol, "port": cast(int, first.target_port)}] if first else []
        )
        if kind == "allow-from-namespace":
            rule: dict[str, Any] = {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"team": f"team-{int(team_draw[i])}"}}}
                ]
            }
            if c[0] < 0.5 and port_entry:
                rule["ports"] = port_entry
            pol_spec = {"podSelector": {"matchLabels": {"app": app}}, "ingress": [rule]}
        elif kind == "allow-from-app":
            same = by_ns[ns]
            other = apps[same[int(picks[i, 1]) % len(same)]][1]
            peer: dict[str, Any] = {"podSelector": {"matchLabels": {"app": other}}}
            if c[0] < 1 / 3:
                peer["namespaceSelector"] = {
                    "matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["prod", "staging"]}
                    ]
                }
            rule = {"from": [peer]}
            if first is not None:
                named = first.name and c[1] < 0.5
                rule["ports"] = [
                    {
                        "protocol": first.protocol,
                        "port": first.name if named else cast(int, first.target_port),
                    }
                ]
            pol_spec = {"podSelector": {"matchLabels": {"app": app}}, "ingress": [rule]}
        else:  # ipblock-egress
            block = ipaddress.ip_network(pod_blocks[int(block_draw[i])])
            first28 = f"{block.network_address}/28"
            to_pods: dict[str, Any] = {
                "to": [{"ipBlock": {"cidr": str(block), "except": [first28]}}]
            }
            if first is not None:
                entry: dict[str, Any] = {"protocol": first.protocol}
                if c[0] < 0.5:
                    entry["port"] = cast(int, first.target_port)
                    if c[1] < 0.5:
                        entry["endPort"] = min(65535, cast(int, first.target_port) + 100)
                to_pods["ports"] = [entry]
            internet = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [cluster_net]}}]}
            pol_spec = {
                "podSelector": {"matchLabels": {"app": app}},
                "policyTypes": ["Egress"],
                "egress": [to_pods, internet],
            }
        out.append(NetworkPolicy(namespace=ns, name=f"{kind}-{i:05d}", spec=pol_spec))
    return out
