"""The pod-to-pod reachability matrix, vectorised with numpy.

Per policy: the mask of pods it selects. Per rule: the mask of pods its peers match and,
per destination pod, whether its ports match the probe (named ports resolve on each
destination pod). Then

  egress_ok[s, d]  = not egress-isolated(s)  or  OR over (policy selecting s, egress rule r)
                                                 of peers_r[d] and ports_r[d]
  ingress_ok[s, d] = not ingress-isolated(d) or  OR over (policy selecting d, ingress rule r)
                                                 of peers_r[s] and ports_r[d]

each OR a matrix product of 0/1 masks (float32 BLAS; counts stay exact below 2**24).
``PolicyMasks`` holds those per-policy and per-rule masks so a rule compiler can reuse them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..model import Cluster, Pod, Service, ServicePort
from ..model.netpol import IPBlock, LabelSelector, Rule
from .evaluate import CompiledPolicy, check_probe, compile_policies
from .selectors import LabelTable, matches, namespace_labels


def probe_pods(cluster: Cluster, pods: Iterable[Pod | str | tuple[str, str]] | None) -> list[Pod]:
    """The pods of a matrix: ``pods`` (Pods, "ns/name" or keys) in that order, default every
    pod with an IP that is not on the host network, sorted by namespace/name."""
    if pods is None:
        chosen = [p for p in cluster.pods.values() if p.pod_ips and not p.host_network]
        chosen.sort(key=lambda p: (p.namespace, p.name))
        return chosen
    out = []
    for item in pods:
        if isinstance(item, Pod):
            pod = item
        else:
            key = tuple(item.split("/", 1)) if isinstance(item, str) else tuple(item)
            found = cluster.pods.get(key) if len(key) == 2 else None  # type: ignore[arg-type]
            if found is None:
                raise InputError("no such Pod in the manifests", field="pods", value=item)
            pod = found
        if not pod.pod_ips:
            raise InputError("the pod has no IP to probe", obj=pod.ref, field="status.podIPs")
        out.append(pod)
    return out


@dataclass
class PolicyMasks:
    """Selector, peer and port masks of every policy over one list of pods."""

    cluster: Cluster
    pods: list[Pod]
    policies: list[CompiledPolicy]
    labels: LabelTable = field(init=False)
    ns_index: np.ndarray = field(init=False)  # pod -> index into namespaces
    namespaces: list[str] = field(init=False)
    ip_v4: np.ndarray = field(init=False)  # first pod IP as uint32 (0 when not IPv4)
    is_v4: np.ndarray = field(init=False)
    selected: np.ndarray = field(init=False)  # [policy, pod] the policy selects the pod
    _ns_masks: dict[LabelSelector, np.ndarray] = field(init=False, default_factory=dict)
    _block_masks: dict[IPBlock, np.ndarray] = field(init=False, default_factory=dict)
    _named: dict[tuple[str, str], np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        pods = self.pods
        self.labels = LabelTable([p.labels for p in pods])
        names = sorted({p.namespace for p in pods} | {c.namespace for c in self.policies})
        where = {n: i for i, n in enumerate(names)}
        self.namespaces = names
        self.ns_index = np.fromiter(
            (where[p.namespace] for p in pods), dtype=np.intp, count=len(pods)
        )
        first = [p.pod_ips[0] if p.pod_ips else "" for p in pods]
        self.is_v4 = np.fromiter((":" not in ip and ip != "" for ip in first), bool, len(pods))
        self.ip_v4 = np.fromiter(
            (int(ipaddress.IPv4Address(ip)) if v4 else 0 for ip, v4 in zip(first, self.is_v4)),
            dtype=np.uint32,
            count=len(pods),
        )
        self.selected = np.zeros((len(self.policies), len(pods)), dtype=bool)
        for k, pol in enumerate(self.policies):
            self.selected[k] = self.in_namespace(pol.namespace) & self.labels.mask(
                pol.spec.pod_selector
            )

    def in_namespace(self, namespace: str) -> np.ndarray:
        if namespace not in self.namespaces:
            return np.zeros(len(self.pods), dtype=bool)
        return self.ns_index == self.namespaces.index(namespace)

    def namespace_mask(self, selector: LabelSelector) -> np.ndarray:
        """Pods whose namespace the selector matches."""
        cached = self._ns_masks.get(selector)
        if cached is None:
            per_ns = np.fromiter(
                (matches(selector, namespace_labels(self.cluster, n)) for n in self.namespaces),
                dtype=bool,
                count=len(self.namespaces),
            )
            cached = per_ns[self.ns_index]
            self._ns_masks[selector] = cached
        return cached

    def block_mask(self, block: IPBlock) -> np.ndarray:
        """Pods whose (first) IP is in the block's cidr and in none of its excepts."""
        cached = self._block_masks.get(block)
        if cached is not None:
            return cached
        net, excepts = block.networks()
        if net.version == 4:

            def inside(n: ipaddress.IPv4Network) -> np.ndarray:
                mask = np.uint32(int(n.netmask))
                return self.is_v4 & ((self.ip_v4 & mask) == np.uint32(int(n.network_address)))

            out = inside(net)
            for e in excepts:
                out &= ~inside(e)
        else:  # IPv6: the few such pods one by one
            out = np.zeros(len(self.pods), dtype=bool)
            for i, p in enumerate(self.pods):
                if p.pod_ips and ":" in p.pod_ips[0]:
                    a = ipaddress.ip_address(p.pod_ips[0])
                    out[i] = a in net and not any(a in e for e in excepts)
        self._block_masks[block] = out
        return out

    def peer_mask(self, rule: Rule, policy_ns: str) -> np.ndarray:
        """Pods the rule's from/to matches (every pod when it lists no peer)."""
        n = len(self.pods)
        if not rule.peers:
            return np.ones(n, dtype=bool)
        out = np.zeros(n, dtype=bool)
        for peer in rule.peers:
            if peer.ip_block is not None:
                out |= self.block_mask(peer.ip_block)
                continue
            if peer.namespace_selector is not None:
                m = self.namespace_mask(peer.namespace_selector)
            else:
                m = self.in_namespace(policy_ns)
            if peer.pod_selector is not None:
                m = m & self.labels.mask(peer.pod_selector)
            out |= m
        return out

    def named_port(self, name: str, protocol: str) -> np.ndarray:
        """Per pod: the number of its containerPort ``name`` with ``protocol`` (0: none)."""
        key = (name, protocol)
        cached = self._named.get(key)
        if cached is None:
            cached = np.fromiter(
                (
                    next(
                        (
                            c.container_port
                            for c in p.container_ports
                            if c.name == name and c.protocol == protocol
                        ),
                        0,
                    )
                    for p in self.pods
                ),
                dtype=np.int32,
                count=len(self.pods),
            )
            self._named[key] = cached
        return cached

    def port_mask(self, rule: Rule, port: int, protocol: str) -> np.ndarray:
        """Destination pods on which the rule's ports match port/protocol."""
        n = len(self.pods)
        if not rule.ports:
            return np.ones(n, dtype=bool)
        out = np.zeros(n, dtype=bool)
        for e in rule.ports:
            if e.protocol != protocol:
                continue
            if e.port is None:
                return np.ones(n, dtype=bool)
            if isinstance(e.port, int):
                end = e.end_port if e.end_port is not None else e.port
                if e.port <= port <= end:
                    return np.ones(n, dtype=bool)
                continue
            out |= self.named_port(e.port, protocol) == port
        return out


def _any_product(left: list[np.ndarray], right: list[np.ndarray], n: int) -> np.ndarray:
    """OR over k of left[k][:, None] & right[k][None, :], as one float32 matrix product."""
    if not left:
        return np.zeros((n, n), dtype=bool)
    a = np.asarray(left, dtype=np.float32).T  # [n, k]
    b = np.asarray(right, dtype=np.float32)  # [k, n]
    return (a @ b) > 0.5


def reachability_masks(
    masks: PolicyMasks, port: int, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    """(egress_ok, ingress_ok) bool matrices [src, dst] for port/protocol."""
    n = len(masks.pods)
    egress_iso = np.zeros(n, dtype=bool)
    ingress_iso = np.zeros(n, dtype=bool)
    e_sel: list[np.ndarray] = []
    e_dst: list[np.ndarray] = []
    i_src: list[np.ndarray] = []
    i_dst: list[np.ndarray] = []
    for k, pol in enumerate(masks.policies):
        sel = masks.selected[k]
        if not sel.any():
            continue
        if pol.applies("Egress"):
            egress_iso |= sel
            reach = np.zeros(n, dtype=bool)
            for rule in pol.spec.egress:
                reach |= masks.peer_mask(rule, pol.namespace) & masks.port_mask(
                    rule, port, protocol
                )
            if reach.any():
                e_sel.append(sel)
                e_dst.append(reach)
        if pol.applies("Ingress"):
            ingress_iso |= sel
            for rule in pol.spec.ingress:
                dst = sel & masks.port_mask(rule, port, protocol)
                if dst.any():
                    src = masks.peer_mask(rule, pol.namespace)
                    if src.any():
                        i_src.append(src)
                        i_dst.append(dst)
    egress_ok = _any_product(e_sel, e_dst, n)
    egress_ok |= ~egress_iso[:, None]
    ingress_ok = _any_product(i_src, i_dst, n)
    ingress_ok |= ~ingress_iso[None, :]
    return egress_ok, ingress_ok


def reachability(
    cluster: Cluster,
    port: int,
    protocol: str = "TCP",
    pods: Iterable[Pod | str | tuple[str, str]] | None = None,
    *,
    policies: list[CompiledPolicy] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(["ns/name", ...], allowed[src, dst]): may each pod open port/protocol on each pod's
    IP? Rows are sources, columns destinations, both in the returned order. The diagonal
    (a pod to its own IP) is decided like any other pair."""
    check_probe(port, protocol)
    if policies is None:
        policies = compile_policies(cluster.network_policies.values())
    chosen = probe_pods(cluster, pods)
    masks = PolicyMasks(cluster, chosen, policies)
    egress_ok, ingress_ok = reachability_masks(masks, port, protocol)
    return [f"{p.namespace}/{p.name}" for p in chosen], egress_ok & ingress_ok


def service_frontend(
    cluster: Cluster, pod: Pod, port: int, protocol: str
) -> tuple[Service, ServicePort] | None:
    """A Service (with a ClusterIP) selecting ``pod`` and its port whose targetPort
    resolves to ``port``/``protocol`` on that pod; the first by Service name, else None."""
    for svc in sorted(cluster.services.values(), key=lambda s: s.name):
        if svc.namespace != pod.namespace or not svc.proxied or not svc.selector:
            continue
        if any(pod.labels.get(k) != v for k, v in svc.selector.items()):
            continue
        for sp in svc.ports:
            if sp.protocol != protocol:
                continue
            target = sp.target_port
            if isinstance(target, int):
                if target == port:
                    return svc, sp
            elif any(
                c.name == target and c.protocol == protocol and c.container_port == port
                for c in pod.container_ports
            ):
                return svc, sp
    return None


def service_frontends(
    cluster: Cluster, pods: Sequence[Pod], port: int, protocol: str
) -> list[tuple[Service, ServicePort] | None]:
    return [service_frontend(cluster, p, port, protocol) for p in pods]
