"""One connection, decided the way NetworkPolicy defines it (pure Python, per pair).

A connection src -> dst:port/protocol is allowed iff
  (src is not selected by any policy of its namespace listing Egress, or an egress rule of
   one selecting policy matches dst and port) AND
  (the same for dst with Ingress and the source).
Policies only add: no deny rule, no order. A side that is not a pod (an IP outside the
cluster) has no policies: its direction is allowed. ``Decision`` names every policy that
isolates each side and every (policy, rule index) that allowed it.

This is the reference the vectorised matrix (``reachability``) is checked against.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from ..ipaddr import canonical_ip
from ..model import Cluster, NetworkPolicy, Pod
from ..model.netpol import PolicySpec, PortEntry, Rule, ip_in_block, parse_policy_spec
from ..model.objects import PROTOCOLS
from .selectors import matches, namespace_labels


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A NetworkPolicy with its spec parsed, validated and defaulted."""

    namespace: str
    name: str
    spec: PolicySpec

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def applies(self, direction: str) -> bool:
        """Whether the policy lists ``Ingress``/``Egress`` in its (defaulted) policyTypes."""
        return direction in self.spec.policy_types

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.spec.ingress if direction == "Ingress" else self.spec.egress


def compile_policies(policies: Iterable[NetworkPolicy]) -> list[CompiledPolicy]:
    """Parse every policy (InputError naming the policy, field and value on a bad one),
    sorted by namespace/name (the union has no order; this keeps output stable)."""
    out = [CompiledPolicy(p.namespace, p.name, parse_policy_spec(p.spec, p.ref)) for p in policies]
    out.sort(key=lambda c: (c.namespace, c.name))
    return out


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Rule ``index`` of ``policy``'s ``spec.ingress`` or ``spec.egress`` list."""

    policy: str  # namespace/name
    direction: str  # Ingress or Egress
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction.lower()}[{self.index}]"


@dataclass(frozen=True, slots=True)
class DirectionDecision:
    """One side of a connection: the egress of the source or the ingress of the
    destination. ``pod`` is None for an address outside the cluster (never isolated)."""

    direction: str  # Ingress or Egress
    pod: str | None  # namespace/name of the pod whose policies apply
    policies: tuple[str, ...]  # selecting policies listing this direction (isolation)
    allowed_by: tuple[RuleRef, ...]  # every rule of those policies that matched

    @property
    def isolated(self) -> bool:
        return bool(self.policies)

    @property
    def allowed(self) -> bool:
        return not self.policies or bool(self.allowed_by)


@dataclass(frozen=True, slots=True)
class Decision:
    src: str  # namespace/name or an IP address
    dst: str
    dst_ip: str | None
    port: int
    protocol: str
    egress: DirectionDecision
    ingress: DirectionDecision

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed


def check_probe(port: int, protocol: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError("must be between 1 and 65535", field="port", value=port)
    if protocol not in PROTOCOLS:
        raise InputError(
            "unknown protocol (must be TCP, UDP or SCTP)", field="protocol", value=protocol
        )


def port_matches(entry: PortEntry, dst: Pod | None, port: int, protocol: str) -> bool:
    """One ``ports`` entry against the probe; a named port resolves on the destination pod
    (a containerPort with that name AND the entry's protocol)."""
    if entry.protocol != protocol:
        return False
    if entry.port is None:
        return True
    if isinstance(entry.port, int):
        end = entry.end_port if entry.end_port is not None else entry.port
        return entry.port <= port <= end
    if dst is None:
        return False
    return any(
        c.name == entry.port and c.protocol == protocol and c.container_port == port
        for c in dst.container_ports
    )


def _peer_matches(
    cluster: Cluster, rule: Rule, policy_ns: str, peer_pod: Pod | None, peer_ip: str | None
) -> bool:
    if not rule.peers:
        return True
    for peer in rule.peers:
        if peer.ip_block is not None:
            if peer_ip is not None and ip_in_block(peer_ip, peer.ip_block):
                return True
            continue
        if peer_pod is None:
            continue
        if peer.namespace_selector is not None:
            ns_ok = matches(peer.namespace_selector, namespace_labels(cluster, peer_pod.namespace))
        else:
            ns_ok = peer_pod.namespace == policy_ns
        if ns_ok and (peer.pod_selector is None or matches(peer.pod_selector, peer_pod.labels)):
            return True
    return False


def _side(
    cluster: Cluster,
    policies: list[CompiledPolicy],
    direction: str,
    pod: Pod | None,
    peer_pod: Pod | None,
    peer_ip: str | None,
    dst_pod: Pod | None,
    port: int,
    protocol: str,
) -> DirectionDecision:
    if pod is None:
        return DirectionDecision(direction, None, (), ())
    selecting = []
    allowed_by = []
    for pol in policies:
        if pol.namespace != pod.namespace or not pol.applies(direction):
            continue
        if not matches(pol.spec.pod_selector, pod.labels):
            continue
        selecting.append(pol.key)
        for i, rule in enumerate(pol.rules(direction)):
            if rule.ports and not any(port_matches(e, dst_pod, port, protocol) for e in rule.ports):
                continue
            if _peer_matches(cluster, rule, pol.namespace, peer_pod, peer_ip):
                allowed_by.append(RuleRef(pol.key, direction, i))
    return DirectionDecision(
        direction, f"{pod.namespace}/{pod.name}", tuple(selecting), tuple(allowed_by)
    )


def _endpoint(cluster: Cluster, who: Pod | str, what: str) -> tuple[Pod | None, str | None]:
    """(pod, its address) for a Pod; an IP string is the pod owning it (when exactly one
    does), else an address outside the cluster."""
    if isinstance(who, Pod):
        return who, (who.pod_ips[0] if who.pod_ips else None)
    if not isinstance(who, str):
        raise InputError("must be a Pod or an IP address", field=what, value=who)
    try:
        ip = canonical_ip(who)
    except ValueError:
        raise InputError("invalid IP address", field=what, value=who) from None
    owners = [p for p in cluster.pods.values() if ip in p.pod_ips and not p.host_network]
    return (owners[0] if len(owners) == 1 else None), ip


def allowed(
    cluster: Cluster,
    src: Pod | str,
    dst: Pod | str,
    dst_port: int,
    protocol: str = "TCP",
    *,
    policies: list[CompiledPolicy] | None = None,
) -> Decision:
    """Decide src -> dst:dst_port/protocol. ``src``/``dst``: a Pod, or an IP address (the pod
    that has it, else outside the cluster). The destination is probed at its pod IP (its
    first), after any Service DNAT. ``policies``: ``compile_policies(...)`` of the cluster's
    network_policies, to reuse across many calls."""
    check_probe(dst_port, protocol)
    if policies is None:
        policies = compile_policies(cluster.network_policies.values())
    src_pod, src_ip = _endpoint(cluster, src, "src")
    dst_pod, dst_ip = _endpoint(cluster, dst, "dst")
    egress = _side(
        cluster, policies, "Egress", src_pod, dst_pod, dst_ip, dst_pod, dst_port, protocol
    )
    ingress = _side(
        cluster, policies, "Ingress", dst_pod, src_pod, src_ip, dst_pod, dst_port, protocol
    )
    return Decision(
        src=f"{src_pod.namespace}/{src_pod.name}" if src_pod else str(src_ip),
        dst=f"{dst_pod.namespace}/{dst_pod.name}" if dst_pod else str(dst_ip),
        dst_ip=dst_ip,
        port=dst_port,
        protocol=protocol,
        egress=egress,
        ingress=ingress,
    )


def connections(
    cluster: Cluster,
    src: Pod | str,
    dst: Pod | str,
    *,
    policies: list[CompiledPolicy] | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """Every port src may open on dst, per protocol, as inclusive (first, last) ranges.

    The decision can only change at a port some policy names (a number, a range end, a
    named port resolved on the destination pod), so one ``allowed`` per segment between
    those points gives the exact set."""
    if policies is None:
        policies = compile_policies(cluster.network_policies.values())
    dst_pod, _ = _endpoint(cluster, dst, "dst")
    out: dict[str, list[tuple[int, int]]] = {}
    for protocol in PROTOCOLS:
        cuts = {1, 65536}
        for pol in policies:
            for rule in pol.spec.ingress + pol.spec.egress:
                for e in rule.ports:
                    if e.protocol != protocol or e.port is None:
                        continue
                    if isinstance(e.port, int):
                        cuts.update((e.port, (e.end_port or e.port) + 1))
                    elif dst_pod is not None:
                        for c in dst_pod.container_ports:
                            if c.name == e.port and c.protocol == protocol:
                                cuts.update((c.container_port, c.container_port + 1))
        points = sorted(cuts)
        ranges: list[tuple[int, int]] = []
        for lo, hi in itertools.pairwise(points):
            if allowed(cluster, src, dst, lo, protocol, policies=policies).allowed:
                if ranges and ranges[-1][1] == lo - 1:
                    ranges[-1] = (ranges[-1][0], hi - 1)
                else:
                    ranges.append((lo, hi - 1))
        out[protocol] = ranges
    return out


def format_connections(conns: dict[str, list[tuple[int, int]]]) -> str:
    """np-guard's spelling: ``All Connections``, ``No Connections`` or ``TCP 80,UDP 53``
    (protocols sorted, ranges as a-b)."""
    if all(conns.get(p) == [(1, 65535)] for p in PROTOCOLS):
        return "All Connections"
    parts = []
    for protocol in sorted(conns):
        ranges = conns[protocol]
        if ranges:
            text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
            parts.append(f"{protocol} {text}")
    return ",".join(parts) if parts else "No Connections"
