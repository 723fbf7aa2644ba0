"""The planner's report: utilisation of the pod and service ranges, what is left before
they run out, and the overlaps and conflicts that break a cluster (``kproxy-emu ipam``).

Every range says where it came from (a flag, a ServiceCIDR object, or inferred from the
manifests). Existing assignments are occupied the way the controllers do on start-up
(nodes' ``spec.podCIDRs`` in the CidrSets, Services' ClusterIPs in the service ranges);
what cannot be occupied is a conflict.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..ipaddr import IPAddress, IPNetwork, parse_cidr, parse_ip
from ..model import Cluster
from .cidrset import DEFAULT_NODE_MASK, CidrSet, node_mask_sizes
from .serviceip import ServiceIPAllocator, ServiceIPRange, first_address

KUBERNETES_RESERVED = "default/kubernetes (kube-apiserver's own, not in the manifests)"
NEAR_FULL = 0.9  # a range at or above this share used is a warning
INFERRED_NODE_PREFIX = {4: 24, 6: 64}
KINDS = ("pod", "service", "node", "external")
KIND_TEXT = {
    "pod": "pod range",
    "service": "service range",
    "node": "node network",
    "external": "external range",
}


@dataclass
class Source:
    kind: str  # pod, service, node, external
    cidr: IPNetwork
    source: str


@dataclass
class IpamReport:
    ranges: list[Source] = field(default_factory=list)
    node_mask_sizes: dict[str, tuple[int, str]] = field(default_factory=dict)  # cidr: (size, src)
    allocator: str = "ipaddress"
    pod: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    nodes: int = 0
    nodes_left: int | None = None
    services_left: dict[str, int] = field(default_factory=dict)
    assigned: dict[str, list[str]] = field(default_factory=dict)  # nodes without podCIDRs
    reserved: list[str] = field(default_factory=list)  # default/kubernetes's, not in manifests
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranges": [
                {"kind": r.kind, "cidr": str(r.cidr), "source": r.source} for r in self.ranges
            ],
            "allocator": self.allocator,
            "pod": self.pod,
            "nodes": self.nodes,
            "nodes_left": self.nodes_left,
            "would_assign": self.assigned,
            "services": self.services,
            "services_left": self.services_left,
            "reserved": self.reserved,
            "warnings": self.warnings,
        }

    def text(self) -> str:
        out = ["ranges:"]
        width = max((len(str(r.cidr)) for r in self.ranges), default=0)
        for r in self.ranges:
            extra = ""
            if r.kind == "pod":
                size, src = self.node_mask_sizes[str(r.cidr)]
                extra = f"; node CIDRs /{size} ({src})"
            elif r.kind == "service":
                extra = f"; {self.allocator} allocator"
            out.append(f"  {r.kind:<8} {r.cidr!s:<{width}}  {r.source}{extra}")
        if self.pod:
            out.append("pod CIDRs:")
            for p in self.pod:
                line = (
                    f"  {p['cidr']} in /{p['node_mask_size']}: {p['allocated']}/{p['capacity']} "
                    f"node CIDRs used ({p['percent']:.1f}%), {p['free']} free"
                )
                if p["service_filtered"]:
                    line += f" ({p['service_filtered']} kept out for service ranges)"
                out.append(line)
            pending = (
                f" (after the {len(self.assigned)} node(s) without podCIDRs get theirs)"
                if self.assigned
                else ""
            )
            out.append(
                f"nodes: {self.nodes}; nodes left before exhaustion: {self.nodes_left}{pending}"
            )
            for node, cidrs in self.assigned.items():
                out.append(f"  {node} has no podCIDRs; would get {', '.join(cidrs)}")
        if self.services:
            out.append("service CIDRs:")
            for s in self.services:
                out.append(
                    f"  {s['cidr']}: {s['allocated']}/{s['capacity']} addresses used "
                    f"({s['percent']:.1f}%)"
                )
                for band in ("static", "dynamic"):
                    b = s[band]
                    if b is not None:
                        out.append(
                            f"    {band} band {b['first']}-{b['last']}: "
                            f"{b['allocated']}/{b['size']} used"
                        )
            for ip in self.reserved:
                out.append(f"  {ip} counted as used: Service default/kubernetes, not in the files")
            left = ", ".join(f"{fam} {n}" for fam, n in self.services_left.items())
            out.append(f"services left before exhaustion: {left}")
        out.append(f"warnings: {len(self.warnings)}")
        return "\n".join(out) + "\n"


def _covering(nets: Sequence[IPNetwork]) -> IPNetwork:
    """The smallest prefix covering every network (all of one family)."""
    lo = min(int(n.network_address) for n in nets)
    hi = max(int(n.broadcast_address) for n in nets)
    bits = nets[0].max_prefixlen
    prefix = bits - (lo ^ hi).bit_length()
    return ipaddress.ip_network((lo, prefix), strict=False)


def _family(n: int) -> str:
    return f"IPv{n}"


def _net(text: str, flag: str) -> IPNetwork:
    try:
        return parse_cidr(text)
    except ValueError:
        raise InputError("invalid CIDR", field=flag, value=text) from None


def _names(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def report(
    cluster: Cluster,
    *,
    cluster_cidrs: Sequence[str] = (),
    service_cidrs: Sequence[str] = (),
    node_cidr_mask_size: int | None = None,
    node_cidr_mask_size_ipv4: int | None = None,
    node_cidr_mask_size_ipv6: int | None = None,
    node_networks: Sequence[str] = (),
    externals: Sequence[str] = (),
    allocator: str = "ipaddress",
) -> IpamReport:
    """The IPAM report of a cluster; InputError on a bad flag (named as the CLI spells it)."""
    rep = IpamReport(allocator=allocator)
    warn = rep.warnings.append
    nodes = list(cluster.nodes.values())
    rep.nodes = len(nodes)

    # ---- pod ranges (cluster CIDRs) and node mask sizes
    pods: list[Source] = []
    if cluster_cidrs:
        pods = [Source("pod", _net(c, "--cluster-cidr"), "--cluster-cidr") for c in cluster_cidrs]
    else:
        by_family: dict[int, list[IPNetwork]] = {}
        for n in nodes:
            for c in n.pod_cidrs:
                net = parse_cidr(c)
                by_family.setdefault(net.version, []).append(net)
        order = sorted(
            by_family,
            key=lambda f: min(  # the family of the first podCIDRs[0]
                (
                    i
                    for i, n in enumerate(nodes)
                    if n.pod_cidrs and parse_cidr(n.pod_cidrs[0]).version == f
                ),
                default=len(nodes),
            ),
        )
        for fam in order:
            nets = by_family[fam]
            pods.append(
                Source(
                    "pod",
                    _covering(nets),
                    f"inferred: the smallest prefix covering {len(nets)} node podCIDRs",
                )
            )
    flags_given = any(
        v is not None
        for v in (node_cidr_mask_size, node_cidr_mask_size_ipv4, node_cidr_mask_size_ipv6)
    )
    if pods:
        nets = [p.cidr for p in pods]
        if flags_given:
            sizes = node_mask_sizes(
                nets,
                mask_size=node_cidr_mask_size,
                mask_size_ipv4=node_cidr_mask_size_ipv4,
                mask_size_ipv6=node_cidr_mask_size_ipv6,
            )
            srcs = []
            for net in nets:
                per_family = (
                    node_cidr_mask_size_ipv4 if net.version == 4 else (node_cidr_mask_size_ipv6)
                )
                if node_cidr_mask_size is not None:
                    srcs.append("--node-cidr-mask-size")
                elif per_family is not None:
                    srcs.append(f"--node-cidr-mask-size-ipv{net.version}")
                else:
                    srcs.append("kube-controller-manager default")
        else:
            node_mask_sizes(nets)  # the cluster CIDR checks (count, families)
            sizes, srcs = [], []
            for net in nets:
                seen = Counter(
                    parse_cidr(c).prefixlen
                    for n in nodes
                    for c in n.pod_cidrs
                    if parse_cidr(c).version == net.version
                )
                if seen:
                    sizes.append(seen.most_common(1)[0][0])
                    srcs.append("inferred: the nodes' podCIDRs")
                else:
                    sizes.append(DEFAULT_NODE_MASK[net.version])
                    srcs.append("kube-controller-manager default")
        for net, size, src in zip(nets, sizes, srcs):
            rep.node_mask_sizes[str(net)] = (size, src)

    # ---- service ranges
    services_src: list[Source] = []
    if service_cidrs:
        services_src = [
            Source("service", _net(c, "--service-cidr"), "--service-cidr") for c in service_cidrs
        ]
    else:
        objs = sorted(cluster.service_cidrs.values(), key=lambda o: o.name != "kubernetes")
        for obj in objs:
            for c in obj.cidrs:
                services_src.append(Source("service", parse_cidr(c), f"ServiceCIDR {obj.name}"))
        if not services_src:
            by_family_ip: dict[int, list[IPNetwork]] = {}
            for ip, _ in _cluster_ips(cluster):
                by_family_ip.setdefault(ip.version, []).append(ipaddress.ip_network(ip))
            for fam in sorted(by_family_ip):
                nets_ = by_family_ip[fam]
                services_src.append(
                    Source(
                        "service",
                        _covering(nets_),
                        f"inferred: the smallest prefix covering {len(nets_)} ClusterIPs",
                    )
                )
    try:
        salloc = ServiceIPAllocator([s.cidr for s in services_src], allocator=allocator)
    except InputError as exc:
        if exc.field == "service-cidr":
            exc.field = "--service-cidr" if service_cidrs else "ServiceCIDR spec.cidrs"
        raise

    # ---- node networks and external ranges
    node_src: list[Source] = []
    if node_networks:
        node_src = [
            Source("node", _net(c, "--node-network"), "--node-network") for c in node_networks
        ]
    else:
        around: dict[int, list[IPNetwork]] = {}
        for n in nodes:
            for addr in n.addresses:
                if addr.type == "InternalIP":
                    ip = parse_ip(addr.address)
                    net = ipaddress.ip_network(
                        (int(ip), INFERRED_NODE_PREFIX[ip.version]), strict=False
                    )
                    around.setdefault(ip.version, []).append(net)
        for fam in sorted(around):
            for net in ipaddress.collapse_addresses(around[fam]):  # type: ignore[type-var]
                node_src.append(
                    Source(
                        "node",
                        net,
                        f"inferred: the /{INFERRED_NODE_PREFIX[fam]} of each node InternalIP",
                    )
                )
    ext_src = [Source("external", _net(c, "--external"), "--external") for c in externals]
    rep.ranges = pods + services_src + node_src + ext_src

    # ---- node podCIDRs: occupy, conflicts, simulate nodes without
    sets: list[CidrSet] = []
    for p in pods:
        size, _ = rep.node_mask_sizes[str(p.cidr)]
        try:
            sets.append(CidrSet(p.cidr, size))
        except InputError as exc:
            exc.field = "--" + (exc.field or "node-cidr-mask-size")
            if not flags_given and exc.field == "--node-cidr-mask-size":
                exc.field = f"--cluster-cidr {p.cidr} (node mask /{size})"
            raise
    filtered: dict[int, int] = {}
    for i, s in enumerate(sets):
        for sr in services_src:
            if sr.cidr.version == s.family and sr.cidr.overlaps(s.cluster_cidr):
                filtered[i] = filtered.get(i, 0) + s.occupy(sr.cidr)
    by_set: dict[int, list[tuple[str, IPNetwork]]] = {}
    without: list[str] = []
    for n in nodes:
        if not n.pod_cidrs:
            without.append(n.name)
            continue
        fams = [parse_cidr(c).version for c in n.pod_cidrs]
        if sets and fams != [s.family for s in sets][: len(fams)]:
            warn(
                f"Node {n.name}: podCIDRs {', '.join(n.pod_cidrs)} are not in the order of the "
                f"cluster CIDRs ({', '.join(str(s.cluster_cidr) for s in sets)}): "
                "kube-controller-manager occupies podCIDRs[i] in cluster CIDR i and fails to "
                "start on a family mismatch"
            )
        for c in n.pod_cidrs:
            net = parse_cidr(c)
            idx = next((i for i, s in enumerate(sets) if s.family == net.version), None)
            if idx is None:
                if sets:
                    warn(
                        f"Node {n.name}: podCIDR {net} has no {_family(net.version)} cluster "
                        "CIDR: kube-controller-manager fails to start (the node has an "
                        "allocated cidr that does not exist in cluster cidrs configuration)"
                    )
                continue
            s = sets[idx]
            if not net.overlaps(s.cluster_cidr):
                warn(
                    f"Node {n.name}: podCIDR {net} is outside the cluster CIDR "
                    f"{s.cluster_cidr}: kube-controller-manager fails to start (CIDR out of "
                    "range); renumber the node or widen --cluster-cidr"
                )
                continue
            if net.prefixlen != s.node_mask_size:
                count = 1 << max(0, s.node_mask_size - net.prefixlen)
                warn(
                    f"Node {n.name}: podCIDR {net} is not a /{s.node_mask_size} node CIDR: it "
                    f"occupies {count} node CIDR(s) of {s.cluster_cidr}"
                )
            for sr in services_src:
                if sr.cidr.version == net.version and sr.cidr.overlaps(net):
                    warn(
                        f"Node {n.name}: podCIDR {net} overlaps service range {sr.cidr}: its "
                        "pods can get addresses kube-proxy treats as ClusterIPs (traffic to "
                        "them is load-balanced to a Service's endpoints); give the node a new "
                        "podCIDR"
                    )
            s.occupy(net)
            by_set.setdefault(idx, []).append((n.name, net))
    for entries in by_set.values():
        entries.sort(key=lambda e: (int(e[1].network_address), -e[1].prefixlen))
        widest: tuple[str, IPNetwork] | None = None
        for other, nb in entries:
            if widest is not None and widest[1].overlaps(nb):
                first, na = widest
                warn(
                    f"Nodes {first} and {other} have overlapping podCIDRs {na} and {nb}: pods "
                    "on both nodes can get the same address; give one of them a new podCIDR"
                )
            if widest is None or int(nb.broadcast_address) > int(widest[1].broadcast_address):
                widest = (other, nb)
    for i, s in enumerate(sets):
        rep.pod.append(
            {
                "cidr": str(s.cluster_cidr),
                "node_mask_size": s.node_mask_size,
                "capacity": s.max_cidrs,
                "allocated": s.allocated,
                "service_filtered": filtered.get(i, 0),
                "free": s.free,
                "percent": 100.0 * s.allocated / s.max_cidrs,
                "addresses_per_node": 1 << (s.cluster_cidr.max_prefixlen - s.node_mask_size),
            }
        )
    if sets:
        for name in without:
            try:
                rep.assigned[name] = [str(s.allocate_next()) for s in sets]
            except InputError:
                rep.assigned[name] = ["none (CIDRNotAvailable)"]
        rep.nodes_left = min(s.free for s in sets)
        for s in sets:
            if s.free == 0:
                warn(
                    f"pod range {s.cluster_cidr} is exhausted: a new node gets no podCIDR "
                    "(kube-controller-manager records CIDRNotAvailable and the node's pods "
                    "get no network); widen --cluster-cidr or lengthen the node mask"
                )
            elif s.allocated >= NEAR_FULL * s.max_cidrs:
                warn(
                    f"pod range {s.cluster_cidr} is {100.0 * s.allocated / s.max_cidrs:.0f}% "
                    f"used: {s.free} more node(s) before new nodes get no podCIDR"
                )
    elif nodes:
        warn("no cluster CIDR (no --cluster-cidr and no node has podCIDRs): pod ranges not checked")

    # ---- ClusterIPs: occupy, conflicts
    cluster_ips = _cluster_ips(cluster)
    held = {ip for ip, _ in cluster_ips}
    if "default/kubernetes" not in {o for _, o in cluster_ips}:
        for fam in salloc.families():
            kube_ip = first_address([r.cidr for r in salloc.ranges], fam)
            if kube_ip is not None and kube_ip not in held and salloc.containing(kube_ip):
                salloc.allocate(kube_ip, KUBERNETES_RESERVED)
                rep.reserved.append(str(kube_ip))
    for ip, owner in cluster_ips:
        if not salloc.containing(ip):
            ranges = [r for r in salloc.ranges if r.family == ip.version]
            if any(ip in r.cidr for r in ranges):
                why = "is the network or broadcast address of its service range, never allocated"
            elif ranges:
                why = "is outside every service range: kube-apiserver's repair loop reports it "
                why += "(ClusterIPOutOfRange) and a new range holding it must be added"
            else:
                why = f"has no {_family(ip.version)} service range"
            warn(f"Service {owner}: clusterIP {ip} {why}")
            continue
        if ip in salloc.owner:
            warn(
                f"Services {salloc.owner[ip]} and {owner} have the same clusterIP {ip}: "
                "kube-proxy sends both Services' traffic to one set of endpoints; recreate one"
            )
            continue
        salloc.allocate(ip, owner)
    for r in salloc.ranges:
        rep.services.append(_range_stats(r))
    for fam in salloc.families():
        rep.services_left[_family(fam)] = salloc.free(fam)
        top = salloc.top_level(fam)
        size = sum(r.size for r in top)
        if salloc.free(fam) == 0:
            warn(
                f"{_family(fam)} service ranges are full: creating a Service fails "
                "(range is full); add a ServiceCIDR"
            )
        elif size and (size - salloc.free(fam)) >= NEAR_FULL * size:
            warn(
                f"{_family(fam)} service ranges are {100.0 * (size - salloc.free(fam)) / size:.0f}%"
                f" used: {salloc.free(fam)} more Service(s) before creation fails; add a "
                "ServiceCIDR"
            )
        for r in top:
            if r.size > r.offset and r.used.count - r.static_used >= r.size - r.offset and r.free:
                warn(
                    f"service range {r.cidr}: the dynamic band is full, so new Services take "
                    f"addresses from the static band ({_band(r.static_band())}), where a Service "
                    "asking for a fixed clusterIP may find it taken"
                )

    # ---- overlaps between kinds
    tagged = rep.ranges
    for i, ra in enumerate(tagged):
        for rb in tagged[i + 1 :]:
            if ra.kind == rb.kind or ra.cidr.version != rb.cidr.version:
                continue
            if not ra.cidr.overlaps(rb.cidr):
                continue
            warn(_overlap_text(ra, rb, sets))
    node_ips = [
        (n.name, parse_ip(a.address)) for n in nodes for a in n.addresses if a.type == "InternalIP"
    ]
    for name, ip in node_ips:
        for n in nodes:
            for c in n.pod_cidrs:
                if ip in parse_cidr(c):
                    warn(
                        f"Node {name}: InternalIP {ip} is inside Node {n.name}'s podCIDR {c}: "
                        "a pod can get the node's address; traffic to one reaches the other"
                    )
        for r in salloc.ranges:
            if ip in r.cidr:
                warn(
                    f"Node {name}: InternalIP {ip} is inside service range {r.cidr}: a "
                    "Service can get the node's address as its clusterIP, and kube-proxy then "
                    "DNATs traffic meant for the node"
                )
    return rep


def _overlap_text(a: Source, b: Source, sets: list[CidrSet]) -> str:
    kinds = {a.kind, b.kind}
    both = (
        f"{KIND_TEXT[a.kind]} {a.cidr} ({a.source}) overlaps "
        f"{KIND_TEXT[b.kind]} {b.cidr} ({b.source})"
    )
    if kinds == {"pod", "service"}:
        pod = a if a.kind == "pod" else b
        s = next((x for x in sets if x.cluster_cidr == pod.cidr), None)
        kept = ""
        if s is not None:
            svc = b.cidr if pod is a else a.cidr
            begin, end = s._indices(svc)
            kept = f" ({end - begin + 1} node CIDR(s))"
        return (
            f"{both}: kube-controller-manager keeps the overlap out of node podCIDRs{kept}, but "
            "a pod at an address there is shadowed by kube-proxy's ClusterIP rules; make the "
            "ranges disjoint"
        )
    if kinds == {"pod", "node"}:
        return (
            f"{both}: pod and node addresses collide, so the pod routes shadow nodes (or the "
            "node route shadows pods); move the pod range"
        )
    if kinds == {"service", "node"}:
        return (
            f"{both}: a ClusterIP can equal a node address, and kube-proxy then DNATs traffic "
            "meant for that node; move the service range"
        )
    other = b if a.kind == "external" else a
    return (
        f"{both}: hosts in the overlap are unreachable from the cluster (traffic to them "
        f"stays in the {KIND_TEXT[other.kind]}); renumber one side"
    )


def _band(band: tuple[IPAddress, IPAddress] | None) -> str:
    return "none" if band is None else f"{band[0]}-{band[1]}"


def _cluster_ips(cluster: Cluster) -> list[tuple[IPAddress, str]]:
    out = []
    for svc in cluster.services.values():
        ips = svc.cluster_ips or ([svc.cluster_ip] if svc.cluster_ip else [])
        for ip in ips:
            if ip and ip != "None":
                out.append((parse_ip(ip), f"{svc.namespace}/{svc.name}"))
    return out


def _range_stats(r: ServiceIPRange) -> dict[str, Any]:
    static_used = r.static_used
    out: dict[str, Any] = {
        "cidr": str(r.cidr),
        "capacity": r.size,
        "allocated": r.allocated,
        "free": r.free,
        "percent": 100.0 * r.allocated / r.size if r.size else 100.0,
        "static": None,
        "dynamic": None,
    }
    sb, db = r.static_band(), r.dynamic_band()
    if sb is not None:
        out["static"] = {
            "first": str(sb[0]),
            "last": str(sb[1]),
            "size": r.offset,
            "allocated": static_used,
        }
    if db is not None:
        out["dynamic"] = {
            "first": str(db[0]),
            "last": str(db[1]),
            "size": r.size - r.offset,
            "allocated": r.allocated - static_used,
        }
    return out
