"""verify_policies(): NetworkPolicy in the real kernel against the emulator.

The lab loads the node's proxy rules (iptables or nftables mode, as ``verify`` does), then
the policy stage's ``chains`` form exactly as ``Dataplane.render_policy()`` prints it: the
ipsets (``ipset restore``) and the filter text (``iptables-restore --noflush``), with
``KUBE-NWPLCY-MAIN`` hooked from INPUT, FORWARD and OUTPUT. It sends real connections and
checks each against

* the emulator with the policy stage (``Dataplane(..., policy_engine="chains")``): the
  trace's outcomes (``verify``'s judge: a deterministic outcome exactly, a random one in
  the emulator's set) and the compiled engine (``Dataplane.process``) on the same flows;
* the reference: the proxy rules alone (a Dataplane without a policy stage) with each
  outcome's destination (the endpoint after DNAT) decided by
  ``kproxy_emu.policy.allowed``: allowed keeps the outcome, denied is a DROP.

Flows (seeded samples, tcp and udp): pod → pod direct, pod → Service frontend (ClusterIP,
NodePort, external and load-balancer IPs), external client → pod, node → pod; the ports
are those the policies name (numbers, both ends of ranges, named ports resolved on the
pods), the pods' container ports and one port nothing names.

**Where the chains hook**: the emulator runs the policy stage after every hook of the
mode, on flows still alive (kube-proxy's REJECTs and DROPs come first, and kube-proxy's
filter ACCEPTs do not skip it). The lab reproduces that order by placing the filter text
in the ``security`` table, whose INPUT/FORWARD/OUTPUT chains run after the filter table's
(and after kube-proxy's nftables filter chains) and before POSTROUTING's SNAT: every
chain, rule and set is the rendered one, only the table differs. (A CNI hooks them into
the filter table's FORWARD ahead of kube-proxy's ACCEPTs; there a flow kube-proxy REJECTs
for lack of endpoints could meet a policy DROP first.) Pods are addresses of the lab's pod
namespace, their traffic routed through the node's cni0 (topology.py), so the chains see
the pod's address as source and the post-DNAT pod address as destination in FORWARD.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import packets as pk
from ..errors import InputError
from .compare import (
    Disagreement,
    Expectation,
    VerifyReport,
    _engine,
    _judge,
    _lab_failures,
    _signature,
    agreement_row,
    expectation,
)
from .env import LabUnavailable, check, missing_tools
from .load import LoadResult, load_iptables
from .replay import KernelResult, Probe
from .session import Clients, NodeLab
from .topology import LabError

HOOKS = ("INPUT", "FORWARD", "OUTPUT")
KINDS = ("pod-pod", "pod-service", "external-pod", "host-pod")
POLICY_TOOLS = {"ipset": "ipset", "iptables-restore": "iptables"}
UNNAMED_PORT = 7777  # a port no generated policy names: "every port" rules and isolation


def kernel_policy_text(text: str) -> str:
    """The chains form's filter text (``ChainsProgram.text``) as the lab loads it: the same
    chains and rules in the ``security`` table, plus the hooks' jumps to KUBE-NWPLCY-MAIN."""
    from ..dataplane.policy_chains import MAIN_CHAIN

    lines = text.rstrip("\n").split("\n")
    if lines[0] != "*filter" or lines[-1] != "COMMIT" or "COMMIT" in lines[1:-1]:
        raise LabError("the chains form's text is not one filter table")
    jumps = [f"-A {hook} -j {MAIN_CHAIN}" for hook in HOOKS]
    return "\n".join(["*security", *lines[1:-1], *jumps, "COMMIT"]) + "\n"


def check_marks(dp) -> None:
    """The policy's mark bits (16-31) must not overlap kube-proxy's masquerade bit."""
    from ..dataplane.policy_chains import MARK_MASK

    bit = getattr(dp.options, "masquerade_bit", 14)
    if (1 << int(bit)) & MARK_MASK:
        raise InputError(
            "the policy chains use mark bits 16-31; kube-proxy's masquerade bit must be "
            "below 16 for the lab",
            field="masqueradeBit",
            value=bit,
        )


class PolicyNodeLab(NodeLab):
    """NodeLab that also loads the policy stage's chains form (module doc)."""

    def __init__(self, dp, **kwargs):
        if dp.policy is None or dp.policy.kind != "chains":
            raise InputError(
                "the lab loads the chains form: Dataplane(..., policy_engine='chains')",
                field="policy_engine",
                value=dp.policy_engine,
            )
        super().__init__(dp, **kwargs)
        self.policy_load: LoadResult | None = None

    def __enter__(self) -> PolicyNodeLab:
        super().__enter__()
        return self

    def load_rules(self) -> LoadResult:
        result = super().load_rules()
        assert self.lab is not None
        missing = missing_tools(POLICY_TOOLS)
        if missing:
            raise LabUnavailable("missing tool(s): " + ", ".join(missing))
        program = self.dp.policy
        start = time.perf_counter()
        sets = program.render_sets()
        if sets:
            self.lab.run("node", ["ipset", "restore"], input=sets)
        text = kernel_policy_text(program.text)
        loaded = load_iptables(self.lab, text, noflush=True, backend=self.backend)
        self.policy_load = LoadResult(
            "ipset+" + loaded.tool,
            time.perf_counter() - start,
            sets.count("\n") + loaded.lines,
            loaded.user,
            loaded.sys,
        )
        return result


# ------------------------------------------------------------------ flows
def probe_ports(dp) -> list[tuple[str, int]]:
    """(proto, port) worth probing: what the policies name, the pods' container ports, 80
    and one port nothing names; tcp and udp only (the lab sends those)."""
    out: set[tuple[str, int]] = {("tcp", 80), ("tcp", UNNAMED_PORT), ("udp", UNNAMED_PORT)}
    program = dp.policy
    for pod in program.pods:
        for c in pod.container_ports:
            if c.protocol in ("TCP", "UDP"):
                out.add((c.protocol.lower(), int(c.container_port)))
    for pol in program.policies:
        for direction in ("Ingress", "Egress"):
            for rule in pol.rules(direction):
                for e in rule.ports:
                    if e.protocol not in ("TCP", "UDP") or not isinstance(e.port, int):
                        continue
                    proto = e.protocol.lower()
                    out.add((proto, e.port))
                    if e.end_port is not None:
                        out.add((proto, e.end_port))
                        out.add((proto, min(65535, e.end_port + 1)))
    return sorted(out)


def _sample(rng: np.random.Generator, items: list, n: int | None) -> list:
    if n is None or len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False).tolist())]


def policy_flows(
    dp,
    clients: Clients,
    *,
    seed: int = 0,
    ports: list[tuple[str, int]] | None = None,
    pod_pairs: int | None = 2000,
    service_flows: int | None = 1000,
    external_flows: int | None = 200,
    host_flows: int | None = 100,
) -> list[tuple[tuple[str, str, str, int, str], str]]:
    """Seeded samples of each kind of flow: ((proto, src, dst, dport, origin), kind)."""
    rng = np.random.default_rng(seed)
    program = dp.policy
    pod_ips = sorted({pk.u32_to_ip(ip) for ip in program.pod_of_ip}, key=ipaddress.IPv4Address)
    ports = sorted(set(ports)) if ports is not None else probe_ports(dp)
    ports = [(p.lower(), n) for p, n in ports if p.lower() in ("tcp", "udp")]
    direct = [(proto, s, d, port) for s in pod_ips for d in pod_ips for proto, port in ports]
    out = [((p, s, d, n, "pod"), "pod-pod") for p, s, d, n in _sample(rng, direct, pod_pairs)]
    targets = dp.cluster.packet_targets(node_ips=dp.options.node.local_ips)
    svc: list[tuple[str, str, str, int, str]] = []
    for t in targets:
        proto = pk.PROTO_NAMES[int(t["proto"])]
        if proto not in ("tcp", "udp"):
            continue
        dst, port, origins = pk.u32_to_ip(int(t["ip"])), int(t["port"]), int(t["origins"])
        if origins & 1:
            svc += [(proto, s, dst, port, "pod") for s in pod_ips]
        if origins & 2:
            svc += [(proto, s, dst, port, "external") for s in clients.external]
        if origins & 4:
            svc += [(proto, s, dst, port, "host") for s in clients.host]
    out += [(f, "pod-service") for f in _sample(rng, svc, service_flows)]
    ext = [(p, s, d, n, "external") for s in clients.external for d in pod_ips for p, n in ports]
    out += [(f, "external-pod") for f in _sample(rng, ext, external_flows)]
    host = [(p, s, d, n, "host") for s in clients.host for d in pod_ips for p, n in ports]
    out += [(f, "host-pod") for f in _sample(rng, host, host_flows)]
    return out


# ------------------------------------------------------------------ reference
def twin_without_policy(dp):
    """The same node and options without a policy stage (the reference's proxy rules)."""
    from ..dataplane import Dataplane

    return Dataplane(dp.cluster, dp.mode_options, **{**dp._build_args, "policy_engine": None})


def reference_support(plain, cluster, probe: Probe) -> dict[tuple, float]:
    """The reference's outcomes: the proxy rules alone (``plain``: no policy stage), each
    passing outcome's final destination decided by ``policy.allowed``."""
    from ..policy import allowed

    t = plain.trace(probe.packet(), origin=probe.origin, all_rules=False)
    out: dict[tuple, float] = {}
    for o in t["outcomes"]:
        sig = _signature(o["verdict"], o["dnat"], o["masquerade"])
        if sig[0] in ("DNAT", "ACCEPT"):
            ip, port = o["dnat"].rsplit(":", 1) if o["dnat"] else (probe.dst, probe.dport)
            if not allowed(cluster, probe.src, ip, int(port), probe.proto.upper()).allowed:
                sig = ("DROP", None, False)
        out[sig] = out.get(sig, 0.0) + o["probability"]
    return {s: p for s, p in out.items() if p > 1e-12}


# ------------------------------------------------------------------ report
@dataclass
class PolicyVerifyReport(VerifyReport):
    pods: int = 0
    policies: int = 0
    rules: int = 0  # lines of the chains form's filter text
    sets: int = 0
    reference: list[int] = field(default_factory=lambda: [0, 0])  # allowed() vs kernel
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    policy_load_seconds: float = 0.0
    results: list[tuple[str, KernelResult]] = field(default_factory=list)  # (kind, result)

    @property
    def ok(self) -> bool:
        return not self.disagreements and self.flows > 0

    def table(self) -> str:
        lines = [
            f"kernel lab, NetworkPolicy (chains form): mode {self.mode}, node {self.node}, "
            f"{self.pods} pods, {self.policies} policies, {self.services} services, "
            f"{self.flows} flows, seed {self.seed}",
            f"  proxy rules loaded in {self.load_seconds:.3f} s; policy ({self.rules} rules, "
            f"{self.sets} ipsets) in {self.policy_load_seconds:.3f} s; replay "
            f"{self.replay_seconds:.2f} s; emulator {self.emulate_seconds:.2f} s",
            "  kernel verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())),
        ]
        for kind in KINDS:
            c = self.by_kind.get(kind)
            if c:
                lines.append(
                    f"  {kind:13} {c['flows']:6d} flows: kernel allowed {c['allowed']} "
                    f"({c['masquerade']} masqueraded), denied by policy {c['denied']}, "
                    f"other verdicts {c['other']}"
                )
        lines += [
            agreement_row(
                "emulator (trace) agrees",
                [
                    self.deterministic[0] + self.in_support[0],
                    self.deterministic[1] + self.in_support[1],
                ],
            ),
            agreement_row("  deterministic outcomes", self.deterministic),
            agreement_row("  random choices in emulator's set", self.in_support),
            agreement_row("compiled engine agrees", self.engine),
            agreement_row("proxy rules + allowed() agree", self.reference),
        ]
        for d in self.disagreements[:20]:
            lines.append("  DISAGREE " + str(d))
        if len(self.disagreements) > 20:
            lines.append(f"  ... {len(self.disagreements) - 20} more disagreements")
        lines.append("  AGREE" if self.ok else "  DISAGREE")
        return "\n".join(lines)


# ------------------------------------------------------------------ verify
def verify_policies(
    cluster,
    mode: str = "iptables",
    node: str | None = None,
    seed: int = 0,
    *,
    dataplane=None,
    reference=None,
    ports: list[tuple[str, int]] | None = None,
    pod_pairs: int | None = 2000,
    service_flows: int | None = 1000,
    external_flows: int | None = 200,
    host_flows: int | None = 100,
    timeout: float = 0.6,
    **dataplane_options,
) -> PolicyVerifyReport:
    """Load the node's proxy rules and the chains form of ``cluster``'s NetworkPolicies
    into a lab, send the seeded flows (``policy_flows``; None: every flow of a kind) and
    compare each kernel verdict with the emulator's and the reference's (module doc).
    ``dataplane``: a Dataplane with ``policy_engine="chains"`` (else one is built from
    ``mode``, ``node`` and ``dataplane_options``); ``reference``: the same without a policy
    stage. ``ports``: (proto, port) to probe (default ``probe_ports``)."""
    from .node import lab_dataplane

    dp = dataplane or lab_dataplane(
        cluster, mode, node=node, seed=seed, policy_engine="chains", **dataplane_options
    )
    plain = reference or twin_without_policy(dp)
    check(dp.mode)
    check_marks(dp)
    program: Any = dp.policy
    if program is None or program.kind != "chains":
        raise InputError(
            "needs a Dataplane with policy_engine='chains'", field="dataplane", value=dp
        )
    report = PolicyVerifyReport(
        mode=dp.mode,
        node=dp.options.node.name,
        services=len(dp.cluster.services),
        seed=seed,
        pods=len(program.pod_of_ip),
        policies=len(program.policies),
        rules=program.text.count("\n-A "),
        sets=len(program.sets),
    )
    cache: dict[tuple, Expectation] = {}
    ref_cache: dict[tuple, dict] = {}

    def expect(p: Probe) -> Expectation:
        key = (p.proto, p.src, p.dst, p.dport, p.origin)
        if key not in cache:
            start = time.perf_counter()
            cache[key] = expectation(dp, p)
            ref_cache[key] = reference_support(plain, dp.cluster, p)
            report.emulate_seconds += time.perf_counter() - start
        return cache[key]

    pods = sorted({pk.u32_to_ip(ip) for ip in program.pod_of_ip}, key=ipaddress.IPv4Address)
    with PolicyNodeLab(dp, seed=seed, extra_clients=Clients(pod=pods)) as lab:
        report.load_seconds = lab.load_result.seconds if lab.load_result else 0.0
        report.policy_load_seconds = lab.policy_load.seconds if lab.policy_load else 0.0
        flows = policy_flows(
            dp,
            lab.clients,
            seed=seed,
            ports=ports,
            pod_pairs=pod_pairs,
            service_flows=service_flows,
            external_flows=external_flows,
            host_flows=host_flows,
        )
        probes = [
            Probe(proto, src, lab.alloc.take(src), dst, dport, origin)
            for (proto, src, dst, dport, origin), _ in flows
        ]
        kinds = [kind for _, kind in flows]
        lab.add_listeners(probes)
        overflows = lab.neighbour_overflows()
        start = time.perf_counter()
        results = lab.probe(probes, timeout=timeout)
        report.replay_seconds = time.perf_counter() - start
        _lab_failures(lab, results, overflows, timeout)
        _judge(report, results, expect)
        _reference(report, results, kinds, expect, ref_cache)
        report.results = list(zip(kinds, results))
        start = time.perf_counter()
        _engine(report, dp, results, expect)
        report.emulate_seconds += time.perf_counter() - start
    return report


def _reference(
    report: PolicyVerifyReport,
    results: list[KernelResult],
    kinds: list[str],
    expect,
    ref_cache: dict[tuple, dict],
) -> None:
    for r, kind in zip(results, kinds):
        p = r.probe
        expect(p)
        ref = ref_cache[(p.proto, p.src, p.dst, p.dport, p.origin)]
        c = report.by_kind.setdefault(
            kind, {"flows": 0, "allowed": 0, "masquerade": 0, "denied": 0, "other": 0}
        )
        c["flows"] += 1
        if r.verdict in ("ACCEPT", "DNAT"):
            c["allowed"] += 1
            c["masquerade"] += int(r.masquerade)
        elif r.verdict == "DROP" and ("DROP", None, False) in ref:
            c["denied"] += 1
        else:
            c["other"] += 1
        report.reference[1] += 1
        if r.signature in ref:
            report.reference[0] += 1
        else:
            report.disagreements.append(Disagreement(p, "reference", ref, r.signature, r.client))


__all__ = [
    "PolicyNodeLab",
    "PolicyVerifyReport",
    "kernel_policy_text",
    "policy_flows",
    "probe_ports",
    "reference_support",
    "twin_without_policy",
    "verify_policies",
]
