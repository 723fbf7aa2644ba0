"""Per-packet cost of the NetworkPolicy stage in the pipeline (Dataplane(policy_engine=)).

Run: python benchmarks/bench_policy_stage.py  (a minute or two; not part of tests/).
A cluster of bench_policy.make_cluster (pods over 20 namespaces, a mix of policies), no
Services: new flows between random pod pairs on port 80 or 8080, processed in iptables
mode with no policy stage, the chains form and the identity form. Process CPU time per
packet, best of three, ns (every packet is a new flow, so each one meets the stage).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_policy import make_cluster

from kproxy_emu import Dataplane
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.packets import Action, empty_packets, ip_to_u32

NODE = NodeConfig.from_node("node-1", ["192.168.0.2"])


def batch(cluster, n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ips = np.array([ip_to_u32(p.pod_ips[0]) for p in cluster.pods.values()], dtype=np.uint32)
    out = empty_packets(n)
    out["family"] = 4
    out["src_ip"] = ips[rng.integers(0, len(ips), n)]
    out["dst_ip"] = ips[rng.integers(0, len(ips), n)]
    out["src_port"] = 1024 + np.arange(n) % 60000
    out["dst_port"] = rng.choice([80, 8080], n)
    out["proto"] = 6
    out["tcp_flags"] = 2
    out["origin"] = 0
    out["ts"] = np.linspace(1.0, 2.0, n)
    return out


def measure(pods: int, policies: int, n: int = 50_000) -> None:
    cluster = make_cluster(pods, policies)
    packets = batch(cluster, n)
    print(f"{pods} pods, {policies} policies, {n} new flows:")
    for engine in (None, "chains", "identity"):
        t0 = time.perf_counter()
        dp = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
        build = time.perf_counter() - t0
        best = float("inf")
        for _ in range(3):
            dp.reset_state()
            t = time.process_time()
            out = dp.process(packets)
            best = min(best, time.process_time() - t)
        denied = int((out["action"] == Action.DROP).sum())
        rules = float(out["rules"].mean())
        lookups = float(out["lookups"].mean())
        print(
            f"  {engine or 'none':9} {best / n * 1e9:8.0f} ns/packet  build {build:6.2f} s  "
            f"denied {denied / n:5.1%}  rules {rules:7.1f}  lookups {lookups:4.1f}"
        )


if __name__ == "__main__":
    for pods, policies in ((100, 20), (1000, 100), (2000, 500)):
        measure(pods, policies)
