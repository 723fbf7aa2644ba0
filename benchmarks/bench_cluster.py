"""``ClusterDataplane.process`` over a 10-node cluster against the single-node engines
doing the same hops: the per-packet cost of the cluster is the single-node engine's for
each hop (a packet to a remote endpoint goes through a second node's dataplane, as a
packet to a pod IP) plus the cluster layer's routing and bookkeeping.

    python3 benchmarks/bench_cluster.py [--services N] [--packets N] [--mode M] [--cni C]

Process CPU time (time.process_time), the median of three runs, each on fresh
dataplanes: new flows (pod -> ClusterIP, every packet its flow's first), their replies,
then the same flows' next packets (established). Three measurements per run:
- one node's ``Dataplane.process`` on the batch (one hop, for scale);
- the cluster's ``process``;
- the same hops on single-node engines alone: every ``Dataplane.process`` call the cluster
  made (recorded in an untimed run: the rows each node got, in order) replayed on fresh
  dataplanes of the same nodes, timed call by call. The cluster's time less this is what
  the cluster layer adds (grouping, routing, MTU, outcome and path).
Prints one line per measurement (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu.cluster_net import ClusterDataplane, Outcome


def _traffic(cluster, n: int, seed: int):
    nodes = sorted(cluster.nodes.values(), key=lambda x: x.name)
    cidrs = [c for node in nodes for c in node.pod_cidrs]
    targets = cluster.packet_targets()
    targets = targets[targets["origins"] & 1 != 0]
    batch = packets.synth(
        targets,
        n,
        seed=seed,
        new_flow_share=1.0,
        origin_mix={"pod": 1.0},
        sources={"pod": cidrs},
    )
    return batch


def _cpu(fn, *args) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn(*args)
    return time.process_time() - t0, out


def _recorded_calls(cdp, phases):
    """Run ``phases`` (a function of the cluster) with each node's ``process`` recording
    the rows it gets: [(phase, node index, rows)] in call order."""
    calls: list[tuple[str, int, np.ndarray]] = []
    phase = ["new"]
    for i, node in enumerate(cdp.nodes):
        real = node.process

        def record(rows, i=i, real=real):
            calls.append((phase[0], i, rows.copy()))
            return real(rows)

        node.process = record
    phases(cdp, phase)
    return calls


def _replay(cdp, calls) -> dict[str, float]:
    """The recorded calls on ``cdp``'s fresh node dataplanes: CPU time per phase."""
    spent: dict[str, float] = {}
    for phase, i, rows in calls:
        t, _ = _cpu(cdp.nodes[i].process, rows)
        spent[phase] = spent.get(phase, 0.0) + t
    return spent


PARTS = ("single", "cluster", "alone")


def _part(a, part: str) -> dict[str, float]:
    """One measurement, in a process of its own (``--part``): every part first makes the
    same untimed, recorded cluster run and frees it, so the three start from the same
    process history (the engines' new-flow cost moves with the memory they get: huge
    pages or not, fragmentation)."""
    import gc

    cluster = synth.cluster(
        a.services,
        endpoints=10,
        nodes=a.nodes,
        seed=1,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
    )
    batch = _traffic(cluster, a.packets, seed=2)

    def fresh_cluster():
        cdp = ClusterDataplane(cluster, a.mode, cni=a.cni, cluster_cidr="10.0.0.0/8", seed=1)
        for node in cdp.nodes:
            node.prepare()
        return cdp

    def phases(cdp, phase):
        """The cluster run: new flows, replies, established; CPU time of new and est."""
        nodes = cdp.entry_nodes(batch)
        phase[0] = "new"
        t_new, v = _cpu(cdp.process, batch, nodes)
        phase[0] = "replies"
        rep, rep_nodes = cdp.replies(batch, v)
        cdp.process(rep, rep_nodes)
        phase[0] = "est"
        start = max(x.clock for x in cdp.nodes) + 1
        t_est, v2 = _cpu(cdp.process, packets.next_packets(batch, start=start), nodes)
        return t_new, t_est, v, v2

    calls = _recorded_calls(fresh_cluster(), phases)
    gc.collect()
    if part == "single":
        dp = Dataplane(cluster, a.mode, cluster_cidr="10.0.0.0/8", seed=1)
        dp.prepare()
        t_new, v1 = _cpu(dp.process, batch)
        ok = v1["action"] <= packets.Action.DNAT
        dp.process(packets.replies(batch[ok], v1[ok], start=dp.clock + 0.001))
        t_est, _ = _cpu(dp.process, packets.next_packets(batch, start=dp.clock + 1))
        return {"new": t_new, "est": t_est}
    if part == "cluster":
        t_new, t_est, v, v2 = phases(fresh_cluster(), ["new"])
        return {
            "new": t_new,
            "est": t_est,
            "hops": float(v["hops"].mean()),
            "delivered": float((v["outcome"] == Outcome.DELIVERED).mean()),
            "est_delivered": float((v2["outcome"] == Outcome.DELIVERED).mean()),
        }
    alone = _replay(fresh_cluster(), calls)
    return {"new": alone["new"], "est": alone["est"]}


def main() -> None:
    import json
    import subprocess
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--mode", default="iptables")
    ap.add_argument("--cni", default="routes")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        print(json.dumps(_part(a, a.part)))
        return
    args = [
        f"--services={a.services}",
        f"--nodes={a.nodes}",
        f"--packets={a.packets}",
        f"--mode={a.mode}",
        f"--cni={a.cni}",
    ]
    got: dict[str, list[dict[str, float]]] = {part: [] for part in PARTS}
    for run in range(a.runs):
        # interleaved, the order rotated each run: no part always goes first
        for k in range(len(PARTS)):
            part = PARTS[(run + k) % len(PARTS)]
            out = subprocess.run(
                [sys.executable, __file__, *args, f"--part={part}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            got[part].append(json.loads(out.strip().splitlines()[-1]))
    n = a.packets

    def ns(part: str, key: str) -> float:
        return statistics.median(r[key] for r in got[part]) / n * 1e9

    def layer(key: str) -> float:
        return (
            statistics.median(c[key] - e[key] for c, e in zip(got["cluster"], got["alone"]))
            / n
            * 1e9
        )

    c0 = got["cluster"][0]
    print(
        f"{a.mode} {a.cni}, {a.services} services, {a.nodes} nodes, {n} packets "
        f"(median of {a.runs}, process CPU time, ns per packet of the batch)"
    )
    rows = {
        "single node, one hop": ("single", ""),
        "same hops, engines alone": ("alone", f"   (mean hops {c0['hops']:.2f})"),
        "cluster": (
            "cluster",
            f"   (delivered {c0['delivered']:.1%} / {c0['est_delivered']:.1%})",
        ),
    }
    for label, (part, extra) in rows.items():
        print(f"{label:<25} new {ns(part, 'new'):6.0f}   established {ns(part, 'est'):5.0f}{extra}")
    print(
        f"cluster / same hops alone: new {ns('cluster', 'new') / ns('alone', 'new'):.2f}, "
        f"established {ns('cluster', 'est') / ns('alone', 'est'):.2f}; cluster layer "
        f"{layer('new'):.0f} / {layer('est'):.0f} ns per packet; cluster / one hop: new "
        f"{ns('cluster', 'new') / ns('single', 'new'):.2f}, established "
        f"{ns('cluster', 'est') / ns('single', 'est'):.2f}"
    )


if __name__ == "__main__":
    main()
