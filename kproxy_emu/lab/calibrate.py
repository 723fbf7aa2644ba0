"""Kernel costs measured in the lab, for the emulator's cost model.

For each service count N: a kube-proxy-shaped cluster (ClusterIP, TCP, 3 endpoints per
service, seeded) is compiled by the iptables mode, loaded with iptables-restore into a
fresh lab (wall, user and sys time), and new host-originated connections (nat OUTPUT, the
path kernel-anchors.md measured) are timed to services at several KUBE-SERVICES rule
positions, interleaved round by round so drift hits every position alike. The per-rule
cost is the least-squares slope of the median connect time against the rule position.

nftables: ``calibrate(..., mode="nftables")`` needs the nftables renderer
(``kproxy_emu/netfilter/nft_text.py``) and Dataplane mode "nftables"; until those exist it
raises a clear error (the loader, ``load.load_nftables``, is ready).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from .replay import Probe, send
from .session import NodeLab

DEFAULT_SERVICES = (100, 1000, 5000, 10000, 20000)


@dataclass
class PositionTiming:
    position: int          # 1-based rule index in KUBE-SERVICES
    rules: int             # rules the emulator evaluates for this flow (all hooks)
    service: str
    samples: int
    median_us: float
    p10_us: float
    p90_us: float
    failed: int


@dataclass
class RunResult:
    services: int
    kube_services_rules: int
    lines: int
    load_seconds: float
    load_user: float
    load_sys: float
    positions: list[PositionTiming] = field(default_factory=list)
    ns_per_rule: float = 0.0


def kube_services_positions(dp) -> dict[tuple[str, int], int]:
    """(cluster IP, port) -> 1-based position of its rule in nat KUBE-SERVICES."""
    nat = dp.tables.tables["nat"]
    out: dict[tuple[str, int], int] = {}
    pos = 0
    for rule in nat.rules:
        if rule.chain != "KUBE-SERVICES":
            continue
        pos += 1
        dst = port = None
        for opt in rule.opts:
            if opt.flag == "-d" and opt.args:
                dst = opt.args[0].split("/")[0]
            elif opt.flag in ("--dport", "--destination-port") and opt.args:
                port = int(opt.args[0])
        if dst is not None and port is not None:
            out.setdefault((dst, port), pos)
    return out


def _shaped_cluster(n: int, seed: int):
    from .. import synth
    return synth.cluster(n, endpoints=3, nodes=3, seed=seed,
                         type_mix={"ClusterIP": 1.0}, protocol_mix={"TCP": 1.0},
                         ports_per_service=(1.0,), affinity_share=0.0,
                         terminating_share=0.0, not_ready_share=0.0, itp_local_share=0.0,
                         prefer_close_share=0.0)


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or len(set(xs)) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def measure(n: int, *, samples: int = 200, positions: int = 5, seed: int = 0,
            backend: str = "nft", mode: str = "iptables", warmup: int = 20) -> RunResult:
    """One service count: load time and connect time at ``positions`` rule positions."""
    from ..dataplane import Dataplane
    if mode != "iptables":
        raise InputError("calibration of this mode needs its renderer in the Dataplane "
                         "(only iptables is available)", field="--mode", value=mode)
    cluster = _shaped_cluster(n, seed)
    dp = Dataplane(cluster, "iptables", seed=seed)
    where = kube_services_positions(dp)
    by_pos = sorted((pos, key) for key, pos in where.items())
    if not by_pos:
        raise InputError("the cluster has no ClusterIP service rules", field="--services",
                         value=n)
    idx = sorted({int(round(i)) for i in np.linspace(0, len(by_pos) - 1, positions)})
    chosen = [by_pos[i] for i in idx]
    # the endpoints of the chosen services only
    keys = {key for _, key in chosen}
    svc_eps: dict[tuple[str, int], str] = {}
    eps: set[str] = set()
    for (ns, name), svc in cluster.services.items():
        for p in svc.ports:
            if (svc.cluster_ip, p.port) in keys:
                svc_eps[(svc.cluster_ip, p.port)] = f"{ns}/{name}"
    eps.update(_endpoint_ips(dp, keys))
    lines = 0
    with NodeLab(dp, backend=backend, only_endpoints=eps) as lab:
        load = lab.load_result
        assert load is not None
        lines = load.lines
        src = lab.clients.host[0]
        result = RunResult(services=n, kube_services_rules=len(
            [r for r in dp.tables.tables["nat"].rules if r.chain == "KUBE-SERVICES"]),
            lines=lines, load_seconds=load.seconds, load_user=load.user, load_sys=load.sys)
        times: dict[int, list[float]] = {pos: [] for pos, _ in chosen}
        failed = {pos: 0 for pos, _ in chosen}
        for r in range(warmup + samples):
            order = chosen if r % 2 == 0 else list(reversed(chosen))
            for pos, (ip, port) in order:
                probe = Probe("tcp", src, lab.alloc.take(src), ip, port, "host")
                (fate, waited), = send(lab.lab, [probe], timeout=1.0, wave=1)
                if r < warmup:
                    continue
                if fate == "answered":
                    times[pos].append(waited * 1e6)
                else:
                    failed[pos] += 1
        for pos, key in chosen:
            t = np.asarray(times[pos]) if times[pos] else np.asarray([np.nan])
            trace = dp.trace(f"tcp {src}:40000 -> {key[0]}:{key[1]}", origin="host")
            result.positions.append(PositionTiming(
                pos, int(trace["cost"]["rules_evaluated"]),
                svc_eps.get(key, f"{key[0]}:{key[1]}"), len(times[pos]),
                float(np.median(t)), float(np.percentile(t, 10)), float(np.percentile(t, 90)),
                failed[pos]))
    ok = [p for p in result.positions if p.samples]
    result.ns_per_rule = slope([p.rules for p in ok], [p.median_us * 1e3 for p in ok])
    return result


def _endpoint_ips(dp, keys: set[tuple[str, int]]) -> list[str]:
    """Endpoint addresses behind the given (cluster IP, port) frontends, read from the
    rules: KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* -> DNAT."""
    nat = dp.tables.tables["nat"]

    def fields(rule):
        got = {}
        for opt in rule.opts:
            if opt.args and opt.flag in ("-d", "--dport", "-j", "--to-destination"):
                got[opt.flag] = opt.args[0]
        return got

    svc_chains, sep_chains, out = set(), set(), []
    for rule in nat.rules:
        f = fields(rule)
        if rule.chain == "KUBE-SERVICES" and "-d" in f and "--dport" in f:
            if (f["-d"].split("/")[0], int(f["--dport"])) in keys:
                svc_chains.add(f.get("-j"))
    for rule in nat.rules:
        f = fields(rule)
        if rule.chain in svc_chains and f.get("-j", "").startswith("KUBE-SEP-"):
            sep_chains.add(f["-j"])
    for rule in nat.rules:
        f = fields(rule)
        if rule.chain in sep_chains and "--to-destination" in f:
            out.append(f["--to-destination"].rsplit(":", 1)[0])
    return out


def calibrate(services=DEFAULT_SERVICES, *, samples: int = 200, positions: int = 5,
              seed: int = 0, backend: str = "nft", mode: str = "iptables",
              progress=None) -> dict:
    """Every service count in turn; the JSON-ready result (see ``fit``)."""
    runs = []
    for n in services:
        start = time.perf_counter()
        run = measure(int(n), samples=samples, positions=positions, seed=seed,
                      backend=backend, mode=mode)
        runs.append(run)
        if progress:
            progress(run, time.perf_counter() - start)
    pts = [(r.services, p.rules, p.median_us * 1e3) for r in runs for p in r.positions
           if p.samples]
    common, base = fit(pts)
    return {
        "kind": "kproxy-emu kernel calibration",
        "kernel": platform.release(), "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "path": "host-originated TCP connect to a ClusterIP (nat OUTPUT, DNAT to a pod, "
                "SYN to SYN-ACK), a new flow each time; medians",
        "samples_per_position": samples, "seed": seed,
        # what `kproxy-emu bench` reads: latency = base_ns + rules evaluated x ns_per_rule
        "modes": {mode: {"base_ns": base, "ns_per_rule": common,
                         "backend": "iptables-nft" if backend == "nft" else "iptables-legacy"}},
        "runs": [asdict(r) for r in runs],
    }


def fit(points: list[tuple[int, int, float]]) -> tuple[float, float]:
    """(ns per rule, base ns) from (run, rules, median ns) points: one slope shared by
    every run, each run centred on its own mean first (drift between runs moves whole
    runs, kernel-anchors.md caveats), the base from the pooled means."""
    runs: dict[int, list[tuple[int, float]]] = {}
    for run, x, y in points:
        runs.setdefault(run, []).append((x, y))
    cx, cy = [], []
    for pts in runs.values():
        if len(pts) > 1:
            mx = sum(x for x, _ in pts) / len(pts)
            my = sum(y for _, y in pts) / len(pts)
            cx += [x - mx for x, _ in pts]
            cy += [y - my for _, y in pts]
    sxx = float(np.dot(cx, cx)) if cx else 0.0
    common = float(np.dot(cx, cy)) / sxx if sxx > 0 else 0.0
    if not points:
        return common, 0.0
    mx = sum(x for _, x, _ in points) / len(points)
    my = sum(y for _, _, y in points) / len(points)
    return common, my - common * mx


def write(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
