"""NetworkPolicy reachability matrix (kproxy_emu.policy.reachability), numpy.

Run: python -m pytest benchmarks/bench_policy.py  (about half a minute; not part of tests/).
The issue's target: 1,000 pods x 500 policies (10^6 pod pairs) in seconds. Reports the
best round in seconds in extra_info (``s_best``) beside pytest-benchmark's statistics.
"""

from __future__ import annotations

import random

import pytest

from kproxy_emu.model import Cluster, Namespace, NetworkPolicy, Pod
from kproxy_emu.model.objects import ContainerPort
from kproxy_emu.policy import compile_policies, reachability


def make_cluster(pods: int, policies: int, seed: int = 1) -> Cluster:
    """Pods over 20 namespaces (labels app/tier/env, a named port), and a mix of policies:
    default denies, pod/namespace/both selectors, matchExpressions, ipBlocks with except,
    numeric, ranged, named and protocol-only ports, ingress and egress."""
    rng = random.Random(seed)
    c = Cluster()
    namespaces = [f"ns{i}" for i in range(20)]
    for i, ns in enumerate(namespaces):
        c.add(Namespace(ns, labels={"team": f"t{i % 5}", "stage": rng.choice(["dev", "prod"])}))
    for i in range(pods):
        ns = namespaces[i % len(namespaces)]
        c.add(
            Pod(
                ns,
                f"pod-{i}",
                pod_ips=[f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"],
                labels={
                    "app": f"app{rng.randrange(50)}",
                    "tier": rng.choice(["web", "api", "db"]),
                    **({"env": "canary"} if rng.random() < 0.1 else {}),
                },
                container_ports=[ContainerPort(rng.choice([80, 8080, 9090]), "TCP", "http")],
            )
        )

    def selector() -> dict:
        kind = rng.randrange(4)
        if kind == 0:
            return {}
        if kind == 1:
            return {"matchLabels": {"app": f"app{rng.randrange(50)}"}}
        if kind == 2:
            return {"matchLabels": {"tier": rng.choice(["web", "api", "db"])}}
        return {
            "matchExpressions": [
                {
                    "key": "app",
                    "operator": "In",
                    "values": [f"app{rng.randrange(50)}" for _ in range(3)],
                },
                {"key": "env", "operator": rng.choice(["Exists", "DoesNotExist"])},
            ]
        }

    def peer() -> dict:
        kind = rng.randrange(4)
        if kind == 0:
            return {"podSelector": selector()}
        if kind == 1:
            return {"namespaceSelector": {"matchLabels": {"team": f"t{rng.randrange(5)}"}}}
        if kind == 2:
            return {
                "namespaceSelector": {"matchLabels": {"stage": "prod"}},
                "podSelector": selector(),
            }
        return {"ipBlock": {"cidr": "10.0.0.0/22", "except": [f"10.0.{rng.randrange(4)}.0/24"]}}

    def ports() -> list:
        kind = rng.randrange(5)
        if kind == 0:
            return []
        if kind == 1:
            return [{"port": rng.choice([80, 443, 8080])}]
        if kind == 2:
            return [{"port": 8000, "endPort": 8100}]
        if kind == 3:
            return [{"port": "http"}]
        return [{"protocol": "UDP"}]

    for k in range(policies):
        ns = namespaces[k % len(namespaces)]
        spec: dict = {"podSelector": selector()}
        direction = rng.choice(["ingress", "egress", "both"])
        if direction in ("ingress", "both"):
            spec["ingress"] = [
                {"from": [peer() for _ in range(rng.randrange(3))], "ports": ports()}
                for _ in range(rng.randrange(3))
            ]
        if direction in ("egress", "both"):
            spec["egress"] = [
                {"to": [peer() for _ in range(rng.randrange(3))], "ports": ports()}
                for _ in range(rng.randrange(3))
            ]
            spec["policyTypes"] = ["Egress"] if direction == "egress" else ["Ingress", "Egress"]
        c.add(NetworkPolicy(ns, f"pol-{k}", spec=spec))
    return c


@pytest.mark.parametrize("pods, policies", [(1000, 500), (2000, 1000)])
def test_reachability_matrix(benchmark, pods: int, policies: int) -> None:
    cluster = make_cluster(pods, policies)
    names, matrix = benchmark.pedantic(
        reachability, args=(cluster, 8080, "TCP"), rounds=5, iterations=1
    )
    assert matrix.shape == (pods, pods) and len(names) == pods
    assert 0 < matrix.sum() < pods * pods  # some allowed, some denied
    benchmark.extra_info["s_best"] = benchmark.stats.stats.min


def test_compile_policies(benchmark) -> None:
    """Parsing and validating the 500 specs alone (part of the matrix time above)."""
    cluster = make_cluster(1000, 500)
    compiled = benchmark(compile_policies, cluster.network_policies.values())
    assert len(compiled) == 500
