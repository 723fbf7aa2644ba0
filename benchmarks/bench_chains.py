"""Chain VM: ns per packet and per rule for new flows to the first, middle and last service
of KUBE-SERVICES (cost must grow with rule position, ~1-2 ns per rule walked).

    pytest benchmarks/bench_chains.py --benchmark-only
KPROXY_EMU_BENCH_SERVICES sets the cluster size (default 1000).
"""

import os

import pytest

from kproxy_emu import Dataplane, packets, synth

SERVICES = int(os.environ.get("KPROXY_EMU_BENCH_SERVICES", "1000"))
BATCH = 20_000


@pytest.fixture(scope="module")
def dataplane():
    cluster = synth.cluster(
        SERVICES, endpoints=10, seed=1, type_mix={"ClusterIP": 1}, ports_per_service=(1.0,)
    )
    # no conntrack: every packet of the batch is a flow's first and walks the rules
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", conntrack=False)
    dp.prepare()  # lowering is measured elsewhere; keep it out of the per-packet figures
    return dp


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_new_flow(benchmark, dataplane, position):
    services = list(dataplane.cluster.services.values())
    svc = {"first": services[0], "middle": services[len(services) // 2], "last": services[-1]}[
        position
    ]
    line = f"{svc.ports[0].protocol.lower()} 10.0.0.7:40000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    batch = packets.from_strings([line] * BATCH, origin="pod")
    verdicts = benchmark(dataplane.process, batch)
    rules = float(verdicts["rules"].mean())
    benchmark.extra_info["rules_per_packet"] = rules
    benchmark.extra_info["ns_per_rule"] = benchmark.stats.stats.median / BATCH / rules * 1e9
    assert (verdicts["action"] == packets.Action.DNAT).all()
