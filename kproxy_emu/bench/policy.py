"""``kproxy-emu bench-policy``: the NetworkPolicy stage's cost, pods x policies x form.

A separate small sweep (``bench``'s records are unchanged): per cell a synthetic cluster
(``synth`` with ``pods=True`` and ``policies=N``: the default policy mix), the node in
iptables mode with no policy stage, the ``chains`` form and the ``identity`` form, and a
batch of new flows between random pods on the destination's first container port (tcp or
udp), so every packet meets the stage. Per record: CPU time per packet (best of
``repeats``), the rules the chain VM walked and the lookups per packet, the denied share,
the stage's compile time and size (docs/bench-output.md, "bench-policy records").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

ENGINES = ("none", "chains", "identity")
ENDPOINTS_PER_SERVICE = 10


def policy_cluster(pods: int, policies: int, seed: int = 0):
    """About ``pods`` pods (``ENDPOINTS_PER_SERVICE`` per Service), one namespace per 50
    pods (at least 4), ``policies`` NetworkPolicies of synth's default mix."""
    from .. import synth

    services = max(1, -(-pods // ENDPOINTS_PER_SERVICE))
    return synth.cluster(
        services,
        endpoints=ENDPOINTS_PER_SERVICE,
        nodes=10,
        namespaces=max(4, pods // 50),
        pods=True,
        policies=policies,
        seed=seed,
        type_mix={"ClusterIP": 1.0},
        protocol_mix={"TCP": 0.85, "UDP": 0.15},
    )


def flows(cluster, n: int, seed: int = 0) -> np.ndarray:
    """n new flows between random pods, each on its destination's first container port."""
    from ..packets import empty_packets, ip_to_u32

    rng = np.random.default_rng(seed)
    pods = [p for p in cluster.pods.values() if p.pod_ips]
    ips = np.array([ip_to_u32(p.pod_ips[0]) for p in pods], dtype=np.uint32)
    ports = np.array(
        [p.container_ports[0].container_port if p.container_ports else 80 for p in pods],
        dtype=np.uint16,
    )
    udp = np.array(
        [bool(p.container_ports) and p.container_ports[0].protocol == "UDP" for p in pods]
    )
    src = rng.integers(0, len(pods), n)
    dst = rng.integers(0, len(pods), n)
    out = empty_packets(n)
    out["family"] = 4
    out["src_ip"] = ips[src]
    out["dst_ip"] = ips[dst]
    out["src_port"] = 1024 + np.arange(n) % 60000
    out["dst_port"] = ports[dst]
    out["proto"] = np.where(udp[dst], 17, 6)
    out["tcp_flags"] = np.where(udp[dst], 0, 2)
    out["origin"] = 0
    out["ts"] = np.linspace(1.0, 2.0, n)
    return out


def _size(dp) -> dict[str, int]:
    prog = dp.policy
    if prog is None:
        return {"policy_rules": 0, "ipsets": 0, "identities": 0, "map_entries": 0}
    if prog.kind == "chains":
        return {
            "policy_rules": prog.text.count("\n-A "),
            "ipsets": len(prog.sets),
            "identities": 0,
            "map_entries": 0,
        }
    return {
        "policy_rules": 0,
        "ipsets": 0,
        "identities": len(prog.identities),
        "map_entries": len(prog.map[0]),  # (endpoint, identity, port word, rule) rows
    }


def sweep(
    pods: list[int],
    policies: list[int],
    engines: Sequence[str] = ENGINES,
    *,
    packets: int = 20_000,
    repeats: int = 3,
    seed: int = 0,
    progress=None,
) -> list[dict[str, Any]]:
    """One record per (pods, policies, engine); see the module doc."""
    from ..dataplane import Dataplane
    from ..model.config import NodeConfig
    from ..packets import Action

    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise InputError("engines are none, chains and identity", field="engines", value=engines)
    for name, values in (("pods", pods), ("policies", policies)):
        if not values or any(v < 0 for v in values):
            raise InputError("must be non-negative counts", field=name, value=values)
    if packets <= 0 or repeats <= 0:
        raise InputError("must be positive", field="packets/repeats", value=(packets, repeats))
    node = NodeConfig.from_node("node-0001", ["192.168.0.1"])
    records = []
    for n_pods in pods:
        for n_pol in policies:
            cluster = policy_cluster(max(1, n_pods), n_pol, seed)
            batch = flows(cluster, packets, seed)
            for engine in engines:
                t0 = time.perf_counter()
                dp = Dataplane(
                    cluster,
                    "iptables",
                    node_config=node,
                    policy_engine=None if engine == "none" else engine,
                )
                compile_s = time.perf_counter() - t0
                best = float("inf")
                out = None
                for _ in range(repeats):
                    dp.reset_state()
                    t = time.process_time()
                    out = dp.process(batch)
                    best = min(best, time.process_time() - t)
                assert out is not None
                rec = {
                    "pods": len(cluster.pods),
                    "policies": n_pol,
                    "engine": engine,
                    "packets": packets,
                    "ns_per_packet": round(best / packets * 1e9, 1),
                    "rules_per_packet": round(float(out["rules"].mean()), 2),
                    "lookups_per_packet": round(float(out["lookups"].mean()), 2),
                    "denied_share": round(float((out["action"] == Action.DROP).mean()), 4),
                    "build_seconds": round(compile_s, 3),
                    **_size(dp),
                }
                records.append(rec)
                if progress is not None:
                    progress(rec)
    return records


def table(records: list[dict[str, Any]]) -> str:
    head = (
        f"{'pods':>6} {'policies':>8} {'engine':>9} {'ns/pkt':>8} {'rules':>8} "
        f"{'lookups':>7} {'denied':>7} {'build s':>8} {'size':>10}"
    )
    lines = [head]
    for r in records:
        size = (
            f"{r['policy_rules']} rules"
            if r["engine"] == "chains"
            else (f"{r['map_entries']} entries" if r["engine"] == "identity" else "-")
        )
        lines.append(
            f"{r['pods']:>6} {r['policies']:>8} {r['engine']:>9} {r['ns_per_packet']:>8.0f} "
            f"{r['rules_per_packet']:>8.1f} {r['lookups_per_packet']:>7.1f} "
            f"{r['denied_share']:>7.1%} {r['build_seconds']:>8.2f} {size:>10}"
        )
    return "\n".join(lines)
