"""A rolling update of every Deployment of a cluster under traffic, in SimPy, through the
step API (kproxy_emu.Simulator), for several kube-proxy modes.

The cluster: N ClusterIP Services (TCP, one port), each backed by a Deployment of E pods.
Clients in pods open new connections at a steady rate to Services picked uniformly. The
rolling update (maxSurge 1, maxUnavailable 0) replaces the pods of each Deployment one at
a time, Deployments starting one after another over ``--spread`` seconds: a surge pod
becomes ready, then an old pod starts terminating, which the EndpointSlice shows at once
(the new endpoint ready, the old one terminating, not ready: kube-proxy stops sending it
new connections) and which the pod's container follows after ``--prestop`` seconds (a
preStop sleep; 0: it exits at once); its endpoint leaves the slice ``--grace`` seconds
later.

kube-proxy (one node) sees each EndpointSlice change ``--watch-delay`` seconds after it
happened and syncs as its sync loop does: at most once per minSyncPeriod (kube-proxy's
defaults: 1 s in iptables and nftables mode, 0 in IPVS mode), one sync at a time, each
taking the kernel programming time the calibration predicts for what that sync writes
(``StepSync.predicted_program_s``; IPVS, userspace and eBPF have no calibrated
programming time and are taken as programmed at once: their figures are lower bounds).
The rules a sync writes take effect when programming ends: a shadow Simulator (no
traffic) receives each sync's events first, to know what it writes and so how long it
takes, then the node's Simulator applies them at that time, so the connections opened
meanwhile meet the old rules, as on a node.

A new connection fails when its verdict is not DNAT (no endpoint) or its DNAT target is a
pod whose container has exited: the connections a node sends to a pod that is gone.
Sync latency: from the oldest change a sync carries to the end of its programming.

    python examples/rolling_update.py                     # 1,000 services: the README's plot
    python examples/rolling_update.py --small --out /tmp/r.png   # the CI's size (seconds)

Needs simpy and matplotlib (``pip install 'kproxy-emu[sweep,plot]'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from kproxy_emu import Simulator, StepSync, Updated, packets, synth
from kproxy_emu.model import Cluster, EndpointSlice

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "benchmarks" / "kernel-calibration.json"
# kube-proxy's default minSyncPeriod per mode (KubeProxyConfiguration v1alpha1)
MIN_SYNC_PERIOD = {"iptables": 1.0, "nftables": 1.0, "ipvs": 0.0, "userspace": 1.0, "ebpf": 0.0}
NEW_PODS = ipaddress.ip_network("10.250.0.0/16")  # the surge pods' addresses
CLIENTS = int(ipaddress.ip_address("10.200.0.0"))  # the clients' pod addresses


@dataclasses.dataclass
class Options:
    services: int = 1000
    endpoints: int = 3
    rate: float = 500.0  # new connections per second, all Services together
    start: float = 5.0  # the first Deployment's rollout begins
    spread: float = 60.0  # Deployments start one after another over this many seconds
    step: float = 2.0  # a surge pod's start-up: one pod replaced every `step` seconds
    prestop: float = 0.0  # the old pod keeps serving this long after it starts terminating
    grace: float = 5.0  # its endpoint leaves the slice this long after
    watch_delay: float = 0.05  # an EndpointSlice change reaches kube-proxy after this
    tail: float = 10.0  # simulated seconds after the last pod replacement
    seed: int = 1
    bin: float = 1.0  # seconds per point of the failed-connections curve

    @property
    def duration(self) -> float:
        return self.start + self.spread + self.endpoints * self.step + self.grace + self.tail


def make_cluster(o: Options) -> Cluster:
    return synth.cluster(
        o.services,
        endpoints=o.endpoints,
        seed=o.seed,
        type_mix={"ClusterIP": 1.0},
        protocol_mix={"TCP": 1.0},
        ports_per_service=(1.0,),
        terminating_share=0,
        not_ready_share=0,
        affinity_share=0,
        prefer_close_share=0,
        itp_local_share=0,
    )


def traffic(cluster: Cluster, o: Options) -> np.ndarray:
    """Every new connection of the run (PACKET_DTYPE SYNs from pods), by time: Poisson
    arrivals at ``rate``, each to a Service picked uniformly, a 5-tuple never reused."""
    rng = np.random.default_rng(o.seed)
    n = int(rng.poisson(o.rate * o.duration))
    svcs = list(cluster.services.values())
    ips = packets.ip_to_u32([s.cluster_ip for s in svcs])
    ports = np.array([s.ports[0].port for s in svcs], np.uint16)
    pick = rng.integers(0, len(svcs), n)
    out = packets.empty_packets(n)
    out["ts"] = np.sort(rng.uniform(0.0, o.duration, n))
    k = np.arange(n)
    out["src_ip"] = CLIENTS + k // 50_000
    out["src_port"] = 10_000 + k % 50_000
    out["dst_ip"] = ips[pick]
    out["dst_port"] = ports[pick]
    out["proto"] = 6
    out["tcp_flags"] = packets.TcpFlag.SYN
    out["origin"] = packets.Origin.POD
    return out


class Run:
    """One mode's run: the node, its shadow, the traffic cursor and what was measured."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, mode: str, o: Options,
                 batch: np.ndarray, calibration: Any) -> None:  # fmt: skip
        self.env, self.mode, self.o = env, mode, o
        kw: dict[str, Any] = dict(seed=o.seed, calibration=calibration, cpus=8)
        t0 = time.perf_counter()
        self.node = Simulator(cluster, mode, **kw)
        self.shadow = Simulator(cluster, mode, **kw)  # one sync ahead: what a sync writes
        self.compile_s = time.perf_counter() - t0
        self.batch = batch
        self.cursor = 0  # packets before it are processed
        self.slices: dict[tuple[str, str], EndpointSlice] = dict(cluster.endpoint_slices)
        self.pending: list[tuple[float, Updated]] = []  # (when it happened, event)
        self.wake = env.event()
        self.dead: dict[str, float] = {}  # "ip:port" -> when its container exited
        self.failed_at: list[float] = []
        self.syncs: list[dict[str, Any]] = []
        self.min_sync = MIN_SYNC_PERIOD.get(mode, 1.0)
        self.next_pod = 0

    # -------------------------------------------------------------- traffic
    def advance(self, until: float) -> None:
        """Process the connections opened before ``until`` against the rules in place."""
        end = int(np.searchsorted(self.batch["ts"], until, side="left"))
        if end <= self.cursor:
            return
        rows = self.batch[self.cursor : end]
        self.cursor = end
        v = self.node.process(rows)
        ok = v["action"] == packets.Action.DNAT
        targets = [
            f"{packets.u32_to_ip(int(ip))}:{int(port)}" if good else ""
            for ip, port, good in zip(v["dnat_ip"], v["dnat_port"], ok)
        ]
        for ts, target, good in zip(rows["ts"].tolist(), targets, ok.tolist()):
            gone = self.dead.get(target)
            if not good or (gone is not None and gone <= ts):
                self.failed_at.append(ts)

    def clients(self):  # a SimPy process: the traffic, processed as time passes
        while True:
            yield self.env.timeout(0.1)
            self.advance(self.env.now)

    # -------------------------------------------------------------- the rollout
    def change(self, key: tuple[str, str], sl: EndpointSlice) -> None:
        """An EndpointSlice change now; kube-proxy sees it after the watch delay."""
        self.slices[key] = sl
        event = Updated(sl)
        happened = self.env.now

        def deliver():
            yield self.env.timeout(self.o.watch_delay)
            self.pending.append((happened, event))
            if not self.wake.triggered:
                self.wake.succeed()

        self.env.process(deliver())

    def deployment(self, key: tuple[str, str], start: float):  # a SimPy process
        o = self.o
        yield self.env.timeout(start)
        port = self.slices[key].ports[0].port
        for k in range(o.endpoints):
            yield self.env.timeout(o.step)  # the surge pod starts and becomes ready
            sl = self.slices[key]
            old = sl.endpoints[k]
            ip = str(NEW_PODS.network_address + 1 + self.next_pod)
            self.next_pod += 1
            new = dataclasses.replace(old, addresses=[ip], target_ref=None)
            leaving = dataclasses.replace(old, ready=False, serving=True, terminating=True)
            eps = list(sl.endpoints)
            eps[k] = leaving
            eps.append(new)
            self.change(key, dataclasses.replace(sl, endpoints=eps))
            self.env.process(self.terminate(key, f"{old.addresses[0]}:{port}", old.addresses[0]))

    def terminate(self, key: tuple[str, str], target: str, ip: str):  # a SimPy process
        yield self.env.timeout(self.o.prestop)
        self.dead[target] = self.env.now  # the container exits
        yield self.env.timeout(self.o.grace)
        sl = self.slices[key]
        eps = [e for e in sl.endpoints if e.addresses[0] != ip]
        self.change(key, dataclasses.replace(sl, endpoints=eps))

    # -------------------------------------------------------------- kube-proxy
    def kube_proxy(self):  # a SimPy process: the sync loop
        last_start = -1e9
        while True:
            if not self.pending:
                self.wake = self.env.event()
                yield self.wake
            wait = last_start + self.min_sync - self.env.now
            if wait > 0:
                yield self.env.timeout(wait)
            taken, self.pending = self.pending, []
            start = last_start = self.env.now
            events = [e for _, e in taken]
            step: StepSync = self.shadow.apply(events, at=start)
            program = step.predicted_program_s or 0.0
            if program:
                yield self.env.timeout(program)
            done = self.env.now
            self.advance(done)  # the connections opened while programming: old rules
            applied = self.node.apply(events, at=done)
            # iptables and nftables syncs are a function of the events: the shadow wrote
            # the same (IPVS's depend on live connections too: graceful deletes)
            assert step.predicted_program_s is None or applied.result.text == step.result.text
            self.syncs.append(
                {
                    "at": done,
                    "latency_s": done - min(t for t, _ in taken),
                    "events": len(events),
                    "lines": step.lines,
                    "program_s": step.predicted_program_s,
                    "wall_s": applied.wall_s,
                }
            )


def run_mode(cluster: Cluster, mode: str, o: Options, batch: np.ndarray,
             calibration: Any) -> dict[str, Any]:  # fmt: skip
    env = simpy.Environment()
    r = Run(env, cluster, mode, o, batch, calibration)
    t0 = time.perf_counter()
    keys = sorted(r.slices)
    for i, key in enumerate(keys):
        env.process(r.deployment(key, o.start + o.spread * i / max(len(keys), 1)))
    env.process(r.kube_proxy())
    env.process(r.clients())
    env.run(until=o.duration)
    r.advance(o.duration + 1.0)
    bins = np.arange(0.0, o.duration + o.bin, o.bin)
    failed, _ = np.histogram(r.failed_at, bins)
    lat = [s["latency_s"] for s in r.syncs]
    prog = [s["program_s"] for s in r.syncs if s["program_s"] is not None]
    snap = r.node.snapshot()
    return {
        "mode": mode,
        "connections": len(batch),
        "failed": len(r.failed_at),
        "failed_share": round(len(r.failed_at) / max(len(batch), 1), 6),
        "syncs": len(r.syncs),
        "sync_latency_mean_s": round(float(np.mean(lat)), 4) if lat else None,
        "sync_latency_max_s": round(float(np.max(lat)), 4) if lat else None,
        "program_mean_s": round(float(np.mean(prog)), 5) if prog else None,
        "program_basis": r.node.syncs[-1].program_basis,
        "sync_lines_mean": round(float(np.mean([s["lines"] for s in r.syncs])), 1)
        if r.syncs
        else None,
        "conntrack_entries": snap.counters.get("conntrack_entries"),
        "compile_s": round(r.compile_s, 2),
        "run_s": round(time.perf_counter() - t0, 2),
        "failed_per_bin": failed.tolist(),
        "bins": bins[:-1].tolist(),
        "sync_points": [(round(s["at"], 4), round(s["latency_s"], 4)) for s in r.syncs],
    }


def plot(results: list[dict[str, Any]], o: Options, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for k, r in enumerate(results):
        color = f"C{k}"
        top.step(r["bins"], r["failed_per_bin"], where="post", color=color,
                 label=f"{r['mode']}: {r['failed']} of {r['connections']} failed")  # fmt: skip
        if r["sync_points"]:
            xs, ys = zip(*r["sync_points"])
            bottom.plot(xs, ys, "o", ms=3, color=color, label=r["mode"])
    top.set_ylabel(f"failed new connections / {o.bin:g} s")
    top.set_title(
        f"Rolling update of {o.services} Deployments x {o.endpoints} pods under "
        f"{o.rate:g} conn/s (preStop {o.prestop:g} s, watch delay {o.watch_delay:g} s)"
    )
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel("sync latency (s): change -> rules programmed")
    bottom.set_xlabel("simulated time (s)")
    bottom.set_yscale("log")
    bottom.legend()
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="iptables,nftables,ipvs", help="comma-separated")
    p.add_argument("--small", action="store_true",
                   help="a small run (60 services, 20 s): what CI runs; also "
                   "KPROXY_EMU_EXAMPLE_SMALL=1")  # fmt: skip
    p.add_argument("--services", type=int)
    p.add_argument("--rate", type=float)
    p.add_argument("--prestop", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--calibration", default=str(CALIBRATION) if CALIBRATION.exists() else None)
    p.add_argument("--out", default=str(ROOT / "docs" / "rolling-update.png"), help="the plot")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    o = Options(prestop=args.prestop, seed=args.seed)
    if args.small or os.environ.get("KPROXY_EMU_EXAMPLE_SMALL"):
        o = dataclasses.replace(o, services=60, rate=200.0, spread=8.0, step=1.0, grace=2.0,
                                tail=3.0, start=2.0)  # fmt: skip
    if args.services:
        o = dataclasses.replace(o, services=args.services)
    if args.rate:
        o = dataclasses.replace(o, rate=args.rate)
    cluster = make_cluster(o)
    batch = traffic(cluster, o)
    results = []
    for mode in args.modes.split(","):
        r = run_mode(cluster, mode, o, batch, args.calibration)
        results.append(r)
        print(
            f"{mode:9} {r['failed']:6} of {r['connections']} new connections failed "
            f"({100 * r['failed_share']:.2f} %); {r['syncs']} syncs, latency mean "
            f"{r['sync_latency_mean_s']} s, max {r['sync_latency_max_s']} s; programming "
            f"mean {r['program_mean_s']} s; {r['sync_lines_mean']} lines a sync "
            f"(compile {r['compile_s']} s, run {r['run_s']} s)"
        )
    plot(results, o, args.out)
    print(f"plot: {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"options": dataclasses.asdict(o), "results": results}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
