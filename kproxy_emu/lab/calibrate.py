"""Kernel costs measured in the lab, for the emulator's cost model.

For each mode and service count N: a kube-proxy-shaped cluster (ClusterIP, TCP, 3
endpoints per service, seeded) is compiled by the mode and loaded (iptables-restore /
nft -f) into a fresh lab (wall, user and sys time); then new host-originated connections
(nat OUTPUT, the path kernel-anchors.md measured) are timed to services at several
KUBE-SERVICES rule positions, interleaved round by round so drift hits every position
alike. The cost per rule is the least-squares slope of the median connect time against
the rules the emulator counts for the same flow (``fit``).

nftables (``modes=("nftables",)``): the same flows against ``nft -f`` of the nftables
mode's table; "position" is then the order the services' map elements were added in, and
the fit is against the emulator's lookups (kernel-anchors.md: flat at any N).

userspace (``modes=("userspace",)``): no rules and no service counts; a real userspace TCP
relay on the node against the direct path (kproxy_emu.lab.relay): ns per connection and
ns per byte copied, the figures bench's userspace cost model multiplies.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from .replay import Probe, send
from .session import NodeLab

DEFAULT_SERVICES = (100, 1000, 5000, 10000, 20000)


@dataclass
class PositionTiming:
    position: int  # 1-based rule index in KUBE-SERVICES
    rules: int  # rules the emulator evaluates for this flow (all hooks)
    lookups: int  # hash / map lookups the emulator counts for it
    service: str
    samples: int
    median_us: float
    p10_us: float
    p90_us: float
    failed: int


@dataclass
class RunResult:
    services: int
    kube_services_rules: int  # iptables: rules in KUBE-SERVICES; nftables: map elements
    lines: int
    load_seconds: float
    load_user: float
    load_sys: float
    mode: str = "iptables"
    positions: list[PositionTiming] = field(default_factory=list)
    # slope of the medians: iptables per rule evaluated, nftables per map position
    ns_per_step: float = 0.0


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

    return synth.cluster(
        n,
        endpoints=3,
        nodes=3,
        seed=seed,
        type_mix={"ClusterIP": 1.0},
        protocol_mix={"TCP": 1.0},
        ports_per_service=(1.0,),
        affinity_share=0.0,
        terminating_share=0.0,
        not_ready_share=0.0,
        itp_local_share=0.0,
        prefer_close_share=0.0,
    )


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2 or len(set(xs)) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def frontends(cluster) -> list[tuple[tuple[str, str], str, int]]:
    """(service key, cluster IP, port) of every ClusterIP service's first TCP port, in the
    cluster's order (the order the modes write their rules and map elements in)."""
    out = []
    for key, svc in cluster.services.items():
        if not svc.proxied or ":" in svc.cluster_ip or svc.cluster_ip in ("", "None"):
            continue
        ports = [p for p in svc.ports if p.protocol == "TCP"]
        if ports:
            out.append((key, svc.cluster_ip, ports[0].port))
    return out


def measure(
    n: int,
    *,
    samples: int = 200,
    positions: int = 5,
    seed: int = 0,
    backend: str = "nft",
    mode: str = "iptables",
    warmup: int = 20,
) -> RunResult:
    """One service count: load time, and connect time at ``positions`` services spread
    over the rule order (iptables: KUBE-SERVICES rule positions; nftables: the order the
    verdict-map elements were added in)."""
    from .node import lab_dataplane

    cluster = _shaped_cluster(n, seed)
    dp = lab_dataplane(cluster, mode, seed=seed)
    fronts = frontends(cluster)
    if not fronts:
        raise InputError("the cluster has no ClusterIP service", field="--services", value=n)
    if mode == "iptables":
        where = kube_services_positions(dp)
        ordered = sorted(
            (where[(ip, port)], key, ip, port) for key, ip, port in fronts if (ip, port) in where
        )
    else:
        ordered = [(i + 1, key, ip, port) for i, (key, ip, port) in enumerate(fronts)]
    idx = sorted({round(i) for i in np.linspace(0, len(ordered) - 1, positions)})
    chosen = [ordered[i] for i in idx]
    slices = cluster.slices_by_service()
    eps = {
        a
        for _, key, _, _ in chosen
        for sl in slices.get(key, [])
        for ep in sl.endpoints
        for a in ep.addresses
    }
    with NodeLab(dp, backend=backend, only_endpoints=eps) as lab:
        load = lab.load_result
        assert load is not None and lab.lab is not None
        src = lab.clients.host[0]
        rules = (
            len([r for r in dp.tables.tables["nat"].rules if r.chain == "KUBE-SERVICES"])
            if mode == "iptables"
            else len(fronts)
        )
        result = RunResult(
            services=n,
            kube_services_rules=rules,
            lines=load.lines,
            load_seconds=load.seconds,
            load_user=load.user,
            load_sys=load.sys,
            mode=mode,
        )
        times: dict[int, list[float]] = {pos: [] for pos, *_ in chosen}
        failed = {pos: 0 for pos, *_ in chosen}
        for r in range(warmup + samples):
            order = chosen if r % 2 == 0 else list(reversed(chosen))
            for pos, _, ip, port in order:
                probe = Probe("tcp", src, lab.alloc.take(src), ip, port, "host")
                ((fate, waited),) = send(
                    lab.lab, [probe], timeout=1.0, wave=1, after_wave=lab.conntrack.flush
                )
                if r < warmup:
                    continue
                if fate == "answered":
                    times[pos].append(waited * 1e6)
                else:
                    failed[pos] += 1
        for pos, key, ip, port in chosen:
            t = np.asarray(times[pos]) if times[pos] else np.asarray([np.nan])
            cost = dp.trace(f"tcp {src}:40000 -> {ip}:{port}", origin="host")["cost"]
            result.positions.append(
                PositionTiming(
                    pos,
                    int(cost["rules_evaluated"]),
                    int(cost.get("lookups", 0)),
                    f"{key[0]}/{key[1]}",
                    len(times[pos]),
                    float(np.median(t)),
                    float(np.percentile(t, 10)),
                    float(np.percentile(t, 90)),
                    failed[pos],
                )
            )
    ok = [p for p in result.positions if p.samples]
    xs = [p.rules if mode == "iptables" else p.position for p in ok]
    result.ns_per_step = slope(xs, [p.median_us * 1e3 for p in ok])
    return result


def calibrate(
    services=DEFAULT_SERVICES,
    *,
    samples: int = 200,
    positions: int = 5,
    seed: int = 0,
    backend: str = "nft",
    modes=("iptables",),
    progress=None,
    relay_bytes: int = 64 << 20,
    relay_repeats: int = 5,
) -> dict:
    """Every mode and service count in turn; the JSON-ready result. ``modes`` holds what
    ``kproxy-emu bench`` reads: iptables latency = base_ns + rules evaluated x ns_per_rule,
    nftables = base_ns + lookups x ns_per_lookup (each fitted by ``fit``); userspace:
    ns_per_connection and ns_per_byte measured against a real relay (``relay.measure``:
    ``samples`` connections, ``relay_repeats`` uploads of ``relay_bytes``)."""
    runs: list[RunResult] = []
    entries: dict[str, dict] = {}
    for mode in modes:
        if mode == "userspace":
            from . import relay

            start = time.perf_counter()
            cal = relay.measure(
                samples=samples, bulk_bytes=relay_bytes, bulk_repeats=relay_repeats, seed=seed
            )
            entries[mode] = cal.entry()
            if progress:
                progress(cal, time.perf_counter() - start)
            continue
        mine = []
        for n in services:
            start = time.perf_counter()
            run = measure(
                int(n), samples=samples, positions=positions, seed=seed, backend=backend, mode=mode
            )
            mine.append(run)
            if progress:
                progress(run, time.perf_counter() - start)
        runs += mine
        if mode == "iptables":
            per, base = fit(
                [
                    (r.services, p.rules, p.median_us * 1e3)
                    for r in mine
                    for p in r.positions
                    if p.samples
                ]
            )
            entries[mode] = {
                "base_ns": base,
                "ns_per_rule": per,
                "backend": "iptables-nft" if backend == "nft" else "iptables-legacy",
            }
        else:
            per, base = fit(
                [
                    (r.services, p.lookups, p.median_us * 1e3)
                    for r in mine
                    for p in r.positions
                    if p.samples
                ]
            )
            # every probed flow makes the same lookups, so ns_per_lookup cannot be told
            # from the base here (0 = unidentified); the slope against the map position
            # is the measured figure (flat: the verdict-map lookup is O(1))
            entries[mode] = {
                "base_ns": base,
                "ns_per_lookup": per,
                "ns_per_position": fit(
                    [
                        (r.services, p.position, p.median_us * 1e3)
                        for r in mine
                        for p in r.positions
                        if p.samples
                    ]
                )[0],
            }
        entries[mode]["load_seconds"] = {str(r.services): r.load_seconds for r in mine}
    return {
        "kind": "kproxy-emu kernel calibration",
        "kernel": platform.release(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "path": "host-originated TCP connect to a ClusterIP (nat OUTPUT, DNAT to a pod, "
        "SYN to SYN-ACK), a new flow each time; medians",
        "samples_per_position": samples,
        "seed": seed,
        "modes": entries,
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


def merge(old: dict, new: dict) -> dict:
    """``old`` with the modes (and their runs) that ``new`` measured replaced, e.g. a
    userspace relay calibration added to a kernel one. The top-level fields (kernel, date,
    path, ...) stay ``old``'s; each new mode's entry records its own date and kernel."""
    fresh = {
        m: {**e, "date": new.get("date"), "kernel": new.get("kernel")}
        for m, e in new.get("modes", {}).items()
    }
    kept = {m: e for m, e in old.get("modes", {}).items() if m not in fresh}
    runs = [r for r in old.get("runs", []) if r.get("mode", "iptables") in kept]
    merged = {
        **old,
        "modes": {**kept, **fresh},
        "runs": runs + list(new.get("runs", [])),
    }
    if "sync_model" in new:  # calibrate --syncs: its model, timings and validation
        for key in ("sync_model", "sync_runs", "sync_validation", "sync_kernel", "sync_date"):
            if key in new:
                merged[key] = new[key]
    return merged


def calibrate_syncs(
    services: Sequence[int],
    validate: Sequence[int] = (),
    *,
    modes=("iptables", "nftables"),
    repeats: int = 3,
    seed: int = 0,
    backend: str = "nft",
    progress=None,
) -> dict:
    """``calibrate --syncs``: sync timings at ``services`` (the fit) and at ``validate``
    (not used by the fit; each prediction's error against the measurement kept)."""
    from ..programtime import SyncTimeModel, timings_to_json, validation
    from .synctime import measure_all

    fit_on = measure_all(
        services, modes, seed=seed, repeats=repeats, backend=backend, progress=progress
    )
    model = SyncTimeModel.fit(fit_on)
    held_out = measure_all(
        validate, modes, seed=seed + 1, repeats=repeats, backend=backend, progress=progress
    )
    return {
        "kind": "kproxy-emu kernel calibration",
        "kernel": platform.release(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modes": {},
        "runs": [],
        "sync_kernel": platform.release(),
        "sync_date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sync_model": model.to_dict(),
        "sync_runs": timings_to_json(fit_on + held_out),
        "sync_validation": validation(model, held_out),
    }
