"""``ClusterDataplane.process`` over a 10-node cluster against one node's
``Dataplane.process``: the per-packet cost of the cluster is the single-node engine's plus
the extra hops (a packet to a remote endpoint goes through a second node's dataplane).

    python3 benchmarks/bench_cluster.py [--services N] [--packets N] [--mode M] [--cni C]

Process CPU time (time.process_time), the median of three runs, each on fresh
dataplanes: new flows (pod -> ClusterIP, every packet its flow's first), then the same
flows' next packets (established). Prints one line per measurement (docs/cluster.md).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--mode", default="iptables")
    ap.add_argument("--cni", default="routes")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    cluster = synth.cluster(
        a.services,
        endpoints=10,
        nodes=a.nodes,
        seed=1,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
    )
    batch = _traffic(cluster, a.packets, seed=2)
    single_new, single_est, clus_new, clus_est, hops = [], [], [], [], []
    for _ in range(a.runs):
        dp = Dataplane(cluster, a.mode, cluster_cidr="10.0.0.0/8", seed=1)
        dp.prepare()
        t, v1 = _cpu(dp.process, batch)
        single_new.append(t)
        ok = v1["action"] <= packets.Action.DNAT
        dp.process(packets.replies(batch[ok], v1[ok], start=dp.clock + 0.001))
        t, _ = _cpu(dp.process, packets.next_packets(batch, start=dp.clock + 1))
        single_est.append(t)
        cdp = ClusterDataplane(cluster, a.mode, cni=a.cni, cluster_cidr="10.0.0.0/8", seed=1)
        for node in cdp.nodes:
            node.prepare()
        nodes = cdp.entry_nodes(batch)
        t, v = _cpu(cdp.process, batch, nodes)
        clus_new.append(t)
        hops.append(float(v["hops"].mean()))
        delivered = float((v["outcome"] == Outcome.DELIVERED).mean())
        rep, rep_nodes = cdp.replies(batch, v)
        cdp.process(rep, rep_nodes)
        start = max(x.clock for x in cdp.nodes) + 1
        t, v2 = _cpu(cdp.process, packets.next_packets(batch, start=start), nodes)
        clus_est.append(t)
        est_ok = float((v2["outcome"] == Outcome.DELIVERED).mean())
    n = a.packets
    ns = lambda xs: statistics.median(xs) / n * 1e9  # noqa: E731
    print(
        f"{a.mode} {a.cni}, {a.services} services, {a.nodes} nodes, {n} packets "
        f"(median of {a.runs}, process CPU time)"
    )
    print(f"single node   new {ns(single_new):8.0f} ns/packet   established {ns(single_est):6.0f}")
    print(
        f"cluster       new {ns(clus_new):8.0f} ns/packet   established {ns(clus_est):6.0f}"
        f"   (mean hops {statistics.median(hops):.2f}, delivered {delivered:.1%} / {est_ok:.1%})"
    )
    print(
        f"cluster / single: new {ns(clus_new) / ns(single_new):.2f}, "
        f"established {ns(clus_est) / ns(single_est):.2f}; "
        f"per hop: new {ns(clus_new) / np.median(hops) / ns(single_new):.2f}"
    )


if __name__ == "__main__":
    main()
