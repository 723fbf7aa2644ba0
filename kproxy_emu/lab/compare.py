"""verify(): the kernel and the emulator on the same cluster and the same flows.

Each flow's emulator outcome comes from ``Dataplane.trace`` (every statistic branch with its
probability). A deterministic outcome must match the kernel's exactly (verdict; DNAT
destination and masquerade when the flow is accepted). A probabilistic one: the kernel's
choice must be one of the emulator's outcomes, and for a few flow classes (seeded choice)
many flows compare the kernel's counts with the emulator's probabilities (chi-square, and
every outcome expected at least 10 times must be seen). ClientIP affinity really sticks in
the kernel, so those flows only check membership of the first choice and stickiness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import packets as pk
from .. import signals
from ..errors import InputError
from .replay import KernelResult, Probe
from .session import Clients, NodeLab
from .topology import LabError

Signature = tuple  # (verdict, dnat or None, masquerade)
ALPHA = 1e-3
MIN_EXPECTED_SEEN = 10.0


# ------------------------------------------------------------------ statistics
def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): the regularized upper incomplete gamma
    Q(dof/2, x/2) (series below a+1, Lentz continued fraction above)."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    gln = math.lgamma(a)
    if z < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - gln))
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - gln) * h)


def chi2_stat(counts: list[int], probs: list[float]) -> tuple[float, int]:
    n = sum(counts)
    stat = sum((k - n * p) ** 2 / (n * p) for k, p in zip(counts, probs) if p > 0)
    return stat, len([p for p in probs if p > 0]) - 1


def agreement_row(name: str, pair: Sequence[int]) -> str:
    """One line of a lab report's agreement table: agreed / total and the share."""
    agree, total = pair
    pct = f"{100.0 * agree / total:6.2f}%" if total else "     -"
    return f"  {name:34} {agree:7d} / {total:<7d} {pct}"


# ------------------------------------------------------------------ expectations
@dataclass
class Expectation:
    support: dict[Signature, float]  # outcome -> probability
    affinity: bool  # ClientIP affinity on the path (xt_recent)

    @property
    def deterministic(self) -> bool:
        return len(self.support) == 1


def _signature(verdict: str, dnat: str | None, masq: bool) -> Signature:
    if verdict in ("DROP", "REJECT"):
        return (verdict, None, False)
    return ("DNAT" if dnat else "ACCEPT", dnat, bool(masq))


def expectation(dp, probe: Probe) -> Expectation:
    signals.check()  # thousands of traces at scale: a safe point for a pending Ctrl-C
    t = dp.trace(probe.packet(), origin=probe.origin, all_rules=False)
    support: dict[Signature, float] = {}
    for o in t["outcomes"]:
        sig = _signature(o["verdict"], o["dnat"], o["masquerade"])
        support[sig] = support.get(sig, 0.0) + o["probability"]
    support = {s: p for s, p in support.items() if p > 1e-12}
    # xt_recent (iptables) or a dynamic affinity set (nftables) on the path: a first
    # packet's path sets the client's entry (``--set``, ``update @affinity-...``)
    affinity = any("-m recent" in s["text"] or "@affinity-" in s["text"] for s in t["steps"])
    return Expectation(support, affinity)


# ------------------------------------------------------------------ report
@dataclass
class Disagreement:
    probe: Probe
    kind: str  # deterministic, support, sticky, set
    expected: dict[Signature, float]
    got: Signature | None
    client: str = ""

    def __str__(self) -> str:
        p = self.probe
        exp = ", ".join(f"{_fmt(s)} p={q:.3g}" for s, q in self.expected.items())
        got = _fmt(self.got) if self.got else "-"
        return (
            f"[{self.kind}] {p.proto} {p.src}:{p.sport} -> {p.dst}:{p.dport} from "
            f"{p.origin}: kernel {got} ({self.client}), emulator {exp}"
        )


def _fmt(sig: Signature) -> str:
    verdict, dnat, masq = sig
    if verdict in ("DROP", "REJECT", "UNKNOWN"):
        return verdict
    return (f"DNAT {dnat}" if dnat else "ACCEPT") + (" +masq" if masq else "")


@dataclass
class ClassStat:
    key: tuple
    flows: int
    observed: dict[Signature, int]
    expected: dict[Signature, float]
    chi2: float
    dof: int
    p: float
    missing: list[Signature] = field(default_factory=list)


@dataclass
class VerifyReport:
    mode: str
    node: str
    services: int
    seed: int
    flows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    deterministic: list[int] = field(default_factory=lambda: [0, 0])  # agree, total
    in_support: list[int] = field(default_factory=lambda: [0, 0])
    sticky: list[int] = field(default_factory=lambda: [0, 0])
    engine: list[int] = field(default_factory=lambda: [0, 0])  # Cython engine vs kernel
    classes: list[ClassStat] = field(default_factory=list)
    chi2: float = 0.0
    dof: int = 0
    p_value: float = 1.0
    min_p_corrected: float = 1.0
    # the first sample's (chi2, dof, p) when it failed and a fresh sample was judged instead
    first_sample: tuple[float, int, float] | None = None
    disagreements: list[Disagreement] = field(default_factory=list)
    load_seconds: float = 0.0
    replay_seconds: float = 0.0
    emulate_seconds: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    explicit: list[KernelResult] = field(default_factory=list)  # the ``flows`` asked for

    @property
    def distribution_ok(self) -> bool:
        return (
            self.p_value >= ALPHA
            and self.min_p_corrected >= ALPHA
            and not any(c.missing for c in self.classes)
        )

    @property
    def ok(self) -> bool:
        return not self.disagreements and self.distribution_ok and self.flows > 0

    def table(self) -> str:
        lines = [
            f"kernel lab: mode {self.mode}, node {self.node}, {self.services} services, "
            f"{self.flows} flows, seed {self.seed}",
            f"  rules loaded in {self.load_seconds:.3f} s; replay {self.replay_seconds:.2f} s;"
            f" emulator {self.emulate_seconds:.2f} s",
            "  kernel verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())),
            agreement_row("deterministic outcomes agree", self.deterministic),
            agreement_row("random choices in emulator's set", self.in_support),
            agreement_row("session affinity sticks", self.sticky),
            agreement_row("compiled engine agrees", self.engine),
        ]
        for c in self.classes:
            proto, dst, dport, origin, src = c.key
            lines.append(
                f"  distribution {proto} {src} -> {dst}:{dport} ({origin}): "
                f"{c.flows} flows, {len(c.expected)} outcomes, chi2 {c.chi2:.2f} "
                f"dof {c.dof} p {c.p:.3g}"
                + (f", never seen: {', '.join(_fmt(s) for s in c.missing)}" if c.missing else "")
            )
        if self.classes:
            lines.append(
                f"  distribution overall: chi2 {self.chi2:.2f} dof {self.dof} "
                f"p {self.p_value:.3g}; smallest per-class p x classes "
                f"{self.min_p_corrected:.3g} (pass: both >= {ALPHA:g})"
            )
        if self.first_sample:
            chi2, dof, p = self.first_sample
            lines.append(
                f"  distribution first sample: chi2 {chi2:.2f} dof {dof} p {p:.3g} failed;"
                " the classes above are a fresh sample (a real bias fails both)"
            )
        for name, n in sorted(self.skipped.items()):
            lines.append(f"  skipped: {n} {name}")
        for d in self.disagreements[:20]:
            lines.append("  DISAGREE " + str(d))
        if len(self.disagreements) > 20:
            lines.append(f"  ... {len(self.disagreements) - 20} more disagreements")
        lines.append("  AGREE" if self.ok else "  DISAGREE")
        return "\n".join(lines)


# ------------------------------------------------------------------ verify
def flows_for(dp, clients: Clients, n: int, seed: int) -> tuple[list[tuple], dict[str, int]]:
    """n flows (proto, src, dst, dport, origin) at the node's frontends from the lab's
    clients (seeded), and what was skipped (protocols the lab cannot send)."""
    # every frontend this node serves, NodePorts on its own addresses only
    targets = dp.cluster.packet_targets(node_ips=dp.options.node.local_ips)
    if len(targets) == 0 or n == 0:
        return [], {}
    sources = {o: clients.of(o) for o in pk.ORIGIN_NAMES if clients.of(o)}
    mix = {o: s for o, s in pk.DEFAULT_ORIGIN_MIX.items() if o in sources}
    batch = pk.synth(targets, n, seed=seed, sources=sources, origin_mix=mix, new_flow_share=1.0)
    flows: list[tuple[str, str, str, int, str]] = []
    skipped: dict[str, int] = {}
    for row in batch:
        proto = pk.PROTO_NAMES[int(row["proto"])]
        if proto not in ("tcp", "udp"):
            skipped[f"{proto} flows (the lab sends tcp and udp)"] = (
                skipped.get(f"{proto} flows (the lab sends tcp and udp)", 0) + 1
            )
            continue
        flows.append(
            (
                proto,
                pk.u32_to_ip(int(row["src_ip"])),
                pk.u32_to_ip(int(row["dst_ip"])),
                int(row["dst_port"]),
                pk.ORIGIN_NAMES[int(row["origin"])],
            )
        )
    return flows, skipped


def verify(
    cluster,
    mode: str = "iptables",
    node: str | None = None,
    packets: int = 2000,
    seed: int = 0,
    *,
    dataplane=None,
    flows: list[tuple] | None = None,
    distribution_classes: int = 4,
    distribution_flows: int = 300,
    timeout: float = 0.6,
    **dataplane_options,
) -> VerifyReport:
    """Load the node's rules for ``cluster`` into a lab, send ``packets`` new flows
    (seeded) plus the distribution flows, and compare every kernel verdict with the
    emulator's. ``flows``: more flows to send, (proto, src, dst, dport, origin) each
    (e.g. kube-proxy's packet-flow tests); their kernel results are ``report.explicit``.
    ``dataplane_options`` go to ``Dataplane`` (node_config, node_ips, config,
    cluster_cidr, masquerade_all, mark_text)."""
    import time

    from .node import lab_dataplane

    n = packets
    if n < 0:
        raise InputError("must be >= 0", field="--packets", value=n)
    dp = dataplane or lab_dataplane(cluster, mode, node=node, seed=seed, **dataplane_options)
    report = VerifyReport(
        mode=dp.mode, node=dp.options.node.name, services=len(dp.cluster.services), seed=seed
    )
    rng = np.random.default_rng(seed)
    cache: dict[tuple, Expectation] = {}

    def expect(p: Probe) -> Expectation:
        key = (p.proto, p.src, p.dst, p.dport, p.origin)
        if key not in cache:
            start = time.perf_counter()
            cache[key] = expectation(dp, p)
            report.emulate_seconds += time.perf_counter() - start
        return cache[key]

    explicit = [_explicit_flow(f, dp) for f in (flows or [])]
    extra = Clients()
    for _proto, src, _dst, _dport, origin in explicit:
        if origin != "host":
            extra.of(origin).append(src)
    with NodeLab(dp, seed=seed, extra_clients=extra) as lab:
        report.load_seconds = lab.load_result.seconds if lab.load_result else 0.0
        random_flows, report.skipped = flows_for(dp, lab.clients, n, seed)
        probes = [
            Probe(proto, src, lab.alloc.take(src), dst, dport, origin)
            for proto, src, dst, dport, origin in explicit + random_flows
        ]
        lab.add_listeners(probes)
        overflows = lab.neighbour_overflows()
        start = time.perf_counter()
        results = lab.probe(probes, timeout=timeout)
        report.replay_seconds += time.perf_counter() - start
        _lab_failures(lab, results, overflows, timeout)
        report.explicit = results[: len(explicit)]
        _judge(report, results, expect)
        # distribution: seeded classes among the probabilistic, affinity-free ones
        classes = sorted(
            {
                (p.proto, p.dst, p.dport, p.origin, p.src)
                for p in probes
                if not expect(p).deterministic and not expect(p).affinity
            }
        )
        picked = [classes[i] for i in rng.permutation(len(classes))[:distribution_classes]]
        dist_probes: list[Probe] = []
        for proto, dst, dport, origin, src in picked:
            exp = expect(Probe(proto, src, 0, dst, dport, origin))
            # enough flows that the rarest outcome is expected 15 times (seen: >= 10)
            rarest = min(exp.support.values())
            count = int(
                min(4000, max(distribution_flows, math.ceil(MIN_EXPECTED_SEEN * 1.5 / rarest)))
            )
            dist_probes += [
                Probe(proto, src, lab.alloc.take(src), dst, dport, origin) for _ in range(count)
            ]
        dist_results: list[KernelResult] = []
        # At most two samples: a fair kernel fails the test at ALPHA by chance (once in a
        # thousand runs, per run of many verify calls a flaky gate), so a failed sample is
        # judged again on fresh flows; a real bias fails both.
        for _sample in range(2):
            if not dist_probes:
                break
            start = time.perf_counter()
            sample = lab.probe(dist_probes, timeout=timeout)
            report.replay_seconds += time.perf_counter() - start
            _lab_failures(lab, sample, overflows, timeout)
            _judge(report, sample, expect)
            dist_results += sample
            _distribution(report, picked, sample, expect)
            if report.distribution_ok:
                break
            report.first_sample = (report.chi2, report.dof, report.p_value)
            dist_probes = [
                Probe(p.proto, p.src, lab.alloc.take(p.src), p.dst, p.dport, p.origin)
                for p in dist_probes
            ]
        start = time.perf_counter()
        _engine(report, dp, results + dist_results, expect)
        report.emulate_seconds += time.perf_counter() - start
    return report


def _lab_failures(
    lab: NodeLab, results: list[KernelResult], overflows: int, timeout: float
) -> None:
    """Flows the lab lost (``NodeLab.lost``) make the run a lab error, never
    disagreements: the kernel's verdict on them is unknown."""
    lost = [r for r in results if r.client == "lost"]
    errors = [r for r in results if r.client.startswith("error:")]
    if not lost and not errors:
        return
    parts = []
    if lost:
        r = lost[0]
        to = f" (DNAT to {r.dnat})" if r.dnat else ""
        parts.append(
            f"{len(lost)} of {len(results)} flows passed the node's rules (conntrack "
            f"confirmed them) but got no answer within {timeout:g} s, e.g. "
            f"{r.probe.packet()} from {r.probe.origin}{to}"
        )
    if errors:
        kinds = sorted({r.client.removeprefix("error:") for r in errors})
        parts.append(f"{len(errors)} flows failed in their client: {', '.join(kinds)}")
    grown = lab.neighbour_overflows() - overflows
    if grown > 0:
        parts.append(f"the kernel's neighbour table overflowed {grown} times meanwhile")
    raise LabError("lab failure, not a verdict: " + "; ".join(parts))


def _engine(report: VerifyReport, dp, results: list[KernelResult], expect) -> None:
    """The same flows, in the kernel's order, through the compiled engine
    (``Dataplane.process`` from a fresh state): a deterministic flow must get the kernel's
    verdict, a random one an outcome the reference allows."""
    if not hasattr(dp, "process") or not results:
        return
    dp.reset_state()
    lines = [r.probe.packet() for r in results]
    batch = pk.from_strings(lines, ts=np.arange(len(lines)) * 1e-4)
    batch["origin"] = [pk.ORIGIN_NAMES.index(r.probe.origin) for r in results]
    out = dp.process(batch)
    for r, v in zip(results, out):
        dnat = pk.dnat_text(v)
        sig = _signature(pk.Action(int(v["action"])).name, dnat, bool(v["snat_ip"]))
        exp = expect(r.probe)
        ok = sig == r.signature if exp.deterministic else sig in exp.support
        report.engine[1] += 1
        if ok:
            report.engine[0] += 1
        else:
            report.disagreements.append(
                Disagreement(r.probe, "engine", exp.support, sig, f"kernel {_fmt(r.signature)}")
            )


def _explicit_flow(flow: tuple, dp) -> tuple[str, str, str, int, str]:
    """Check one caller-given flow: tcp/udp, IPv4, an origin the lab has (host sources
    must be the node's own addresses or loopback)."""
    try:
        proto, src, dst, dport, origin = flow
    except (TypeError, ValueError):
        raise InputError(
            "a flow is (proto, src, dst, dport, origin)", field="flows", value=flow
        ) from None
    proto = str(proto).lower()
    if proto not in ("tcp", "udp"):
        raise InputError("the lab sends tcp and udp flows", field="flows", value=flow)
    if origin not in pk.ORIGIN_NAMES:
        raise InputError("origin must be pod, external or host", field="flows", value=flow)
    for ip in (src, dst):
        pk.ip_to_u32(ip)  # InputError for anything but IPv4
    if origin == "host" and src not in dp.options.node.local_ips and not src.startswith("127."):
        raise InputError(
            "a host flow's source must be one of the node's addresses", field="flows", value=flow
        )
    return proto, src, dst, int(dport), origin


def _judge(report: VerifyReport, results: list[KernelResult], expect) -> None:
    first_choice: dict[tuple, str | None] = {}
    for r in results:
        report.flows += 1
        report.verdicts[r.verdict] = report.verdicts.get(r.verdict, 0) + 1
        exp = expect(r.probe)
        got = r.signature
        if exp.deterministic:
            report.deterministic[1] += 1
            if got in exp.support:
                report.deterministic[0] += 1
            else:
                report.disagreements.append(
                    Disagreement(r.probe, "deterministic", exp.support, got, r.client)
                )
            continue
        report.in_support[1] += 1
        if got in exp.support:
            report.in_support[0] += 1
        else:
            report.disagreements.append(
                Disagreement(r.probe, "support", exp.support, got, r.client)
            )
        if exp.affinity:
            # one recent list per service: the same client sticks to its first endpoint
            key = (r.probe.src, frozenset(s[1] for s in exp.support))
            if key in first_choice:
                report.sticky[1] += 1
                if r.dnat == first_choice[key]:
                    report.sticky[0] += 1
                else:
                    report.disagreements.append(
                        Disagreement(r.probe, "sticky", exp.support, got, r.client)
                    )
            else:
                first_choice[key] = r.dnat


def _distribution(
    report: VerifyReport, picked: list[tuple], results: list[KernelResult], expect
) -> None:
    by_class: dict[tuple, list[KernelResult]] = {}
    for r in results:
        p = r.probe
        by_class.setdefault((p.proto, p.dst, p.dport, p.origin, p.src), []).append(r)
    stats = []
    for key in picked:
        rs = by_class.get(key, [])
        if not rs:
            continue
        exp = expect(rs[0].probe)
        sigs = list(exp.support)
        counts = [sum(1 for r in rs if r.signature == s) for s in sigs]
        stat, dof = chi2_stat(counts, [exp.support[s] for s in sigs])
        p_value = chi2_sf(stat, dof)
        missing = [
            s
            for s, k in zip(sigs, counts)
            if k == 0 and exp.support[s] * len(rs) >= MIN_EXPECTED_SEEN
        ]
        stats.append(
            ClassStat(
                key, len(rs), dict(zip(sigs, counts)), exp.support, stat, dof, p_value, missing
            )
        )
    report.classes = stats
    if stats:
        report.chi2 = sum(c.chi2 for c in stats)
        report.dof = sum(c.dof for c in stats)
        report.p_value = chi2_sf(report.chi2, report.dof)
        report.min_p_corrected = min(1.0, min(c.p for c in stats) * len(stats))
