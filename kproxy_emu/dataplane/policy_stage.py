"""The NetworkPolicy stage of the packet pipeline: what both compiled forms share.

A CNI filters a flow's first packet after kube-proxy's DNAT, on the pod address and
port: the egress of the source pod, then the ingress of the destination pod; conntrack
lets the flow's later packets and its replies through. ``Dataplane(...,
policy_engine="chains"|"identity")`` builds one of the two forms over the cluster's
NetworkPolicies (``policy_chains.py``: iptables chains and ipsets as Calico and
kube-router write them, walked by the chain VM; ``policy_identity.py``: Cilium's label
identities and per-endpoint policy maps, hash lookups) and hands its compiled stage to
the pipeline (``Engine.policy``; cext/pipeline.pyx calls it for every new flow still
alive after the hooks). Both decide exactly as ``kproxy_emu.policy.allowed``.

``PolicyProgram`` holds what traces name: the pods by address, the policies selecting
each, and the rules by number (a rule's number is its position in policy order, ingress
rules before egress rules of each policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import InputError
from ..model import Cluster, Pod
from ..packets import ip_to_u32
from ..policy import CompiledPolicy, PolicyMasks, RuleRef, compile_policies, probe_pods

if TYPE_CHECKING:
    import numpy as np

POLICY_ENGINES = ("chains", "identity")
DIRECTIONS = ("Egress", "Ingress")  # STEP_POLICY index 0, 1
POL_OPEN, POL_ALLOWED, POL_DENIED = 0, 1, 2  # cext/pipeline.pxd


class TracePolicySide(TypedDict):
    pod: str | None  # namespace/name whose policies apply; None: not a pod
    policies: list[str]  # the policies selecting it for this direction (isolation)
    allowed: bool
    allowed_by: str | None  # the rule the dataplane matched ("ns/name egress[0]")
    text: str


class TracePolicy(TypedDict):
    """The NetworkPolicy stage of a traced packet (``None`` in a trace without a policy
    engine). ``evaluated`` False: a packet of a known flow, which the stage does not see
    (the flow passed it when it was new); then the sides are null."""

    engine: str  # chains or identity
    evaluated: bool
    allowed: bool
    egress: TracePolicySide | None
    ingress: TracePolicySide | None


@dataclass(frozen=True)
class RuleInfo:
    ref: RuleRef
    policy_index: int


def check_policy_engine(value: object) -> str | None:
    if value is None:
        return None
    if value not in POLICY_ENGINES:
        raise InputError("must be None, chains or identity", field="policy_engine", value=value)
    return str(value)


class PolicyProgram:
    """The cluster's NetworkPolicies compiled for the pipeline (one of the two forms)."""

    kind = ""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.policies: list[CompiledPolicy] = compile_policies(cluster.network_policies.values())
        self.pods: list[Pod] = probe_pods(cluster, None)
        index = {id(p): i for i, p in enumerate(self.pods)}
        # an address is a pod's when exactly one pod (not on the host network) has it,
        # as allowed() decides; IPv4 only (the pipeline's family)
        owners: dict[str, list[Pod]] = {}
        for p in cluster.pods.values():
            if p.host_network:
                continue
            for ip in p.pod_ips:
                owners.setdefault(ip, []).append(p)
        self.pod_of_ip: dict[int, int] = {}
        for ip, found in owners.items():
            if len(found) == 1 and ":" not in ip and id(found[0]) in index:
                self.pod_of_ip[ip_to_u32(ip)] = index[id(found[0])]
        self.masks = PolicyMasks(cluster, self.pods, self.policies)
        self.rules: list[RuleInfo] = []
        self.rule_number: dict[tuple[int, str, int], int] = {}
        for k, pol in enumerate(self.policies):
            for direction in ("Ingress", "Egress"):
                for i in range(len(pol.rules(direction))):
                    self.rule_number[(k, direction, i)] = len(self.rules)
                    self.rules.append(RuleInfo(RuleRef(pol.key, direction, i), k))
        # per pod and direction: the selecting policies listing it, in policy order
        self.selecting: dict[str, list[list[int]]] = {d: [] for d in DIRECTIONS}
        for i in range(len(self.pods)):
            for d in DIRECTIONS:
                self.selecting[d].append(
                    [
                        k
                        for k, pol in enumerate(self.policies)
                        if self.masks.selected[k, i] and pol.applies(d)
                    ]
                )
        self.stage: Any = None

    def pod_name(self, i: int) -> str:
        p = self.pods[i]
        return f"{p.namespace}/{p.name}"

    def render(self) -> str:
        raise NotImplementedError

    def describe(self, row: Any, steps: np.ndarray, verdict: Any) -> TracePolicy:
        """The trace's policy section from the recorded STEP_POLICY rows."""
        side: dict[int, TracePolicySide] = {}
        allowed = True
        for r in steps:
            if int(r["kind"]) != 6:
                continue
            d = int(r["index"])
            detail, rule = int(r["extra"]), int(r["value"])
            direction = DIRECTIONS[d]
            # egress: the source as sent; ingress: the destination after DNAT
            if d == 0:
                ip = int(row["src_ip"])
            else:
                ip = int(verdict["dnat_ip"]) or int(row["dst_ip"])
            pod = self.pod_of_ip.get(ip)
            pols = (
                [self.policies[k].key for k in self.selecting[direction][pod]]
                if pod is not None
                else []
            )
            ref = str(self.rules[rule].ref) if rule >= 0 else None
            if detail == POL_OPEN:
                text = (
                    "not a pod: no policy applies"
                    if pod is None
                    else f"{self.pod_name(pod)}: no policy selects it for {direction.lower()}"
                )
            elif detail == POL_ALLOWED:
                text = f"{self.pod_name(pod) if pod is not None else '?'}: allowed by {ref}"
            else:
                allowed = False
                text = (
                    f"{self.pod_name(pod) if pod is not None else '?'}: isolated by "
                    f"{', '.join(pols)}; no rule allows it: DROP"
                )
            side[d] = {
                "pod": self.pod_name(pod) if pod is not None else None,
                "policies": pols,
                "allowed": detail != POL_DENIED,
                "allowed_by": ref,
                "text": text,
            }
        return {
            "engine": self.kind,
            "evaluated": bool(side),
            "allowed": allowed,
            "egress": side.get(0),
            "ingress": side.get(1),
        }


def build_program(kind: str, cluster: Cluster) -> PolicyProgram:
    if kind == "chains":
        from .policy_chains import ChainsProgram

        return ChainsProgram(cluster)
    from .policy_identity import IdentityProgram

    return IdentityProgram(cluster)


def port_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The aligned (prefix length, first port) blocks covering lo..hi (a port is 16 bits)."""
    out = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((16 - (size.bit_length() - 1), lo))
        lo += size
    return out


def ipv4_block(block: Any) -> tuple[int, int, list[tuple[int, int]]] | None:
    """(network, mask, [(except network, mask)]) of an IPv4 ipBlock; None for IPv6."""
    net, excepts = block.networks()
    if net.version != 4:
        return None
    return (
        int(net.network_address),
        int(net.netmask),
        [(int(e.network_address), int(e.netmask)) for e in excepts],
    )


def in_block(ip: int, parts: tuple[int, int, list[tuple[int, int]]]) -> bool:
    net, mask, excepts = parts
    return (ip & mask) == net and not any((ip & m) == n for n, m in excepts)
