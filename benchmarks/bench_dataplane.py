"""Per-mode dataplane figures with pytest-benchmark: new and established flows on the
bench sweep's traffic, one endpoint change, engine build (lowering).

    pytest benchmarks/bench_dataplane.py --benchmark-only
KPROXY_EMU_BENCH_SERVICES sets the cluster size (default 3000); KPROXY_EMU_BENCH_MODES
the modes (default: every mode the sweep knows).
"""

import os

import numpy as np
import pytest

from kproxy_emu import Dataplane
from kproxy_emu.bench import sweep

SERVICES = int(os.environ.get("KPROXY_EMU_BENCH_SERVICES", "3000"))
MODES = os.environ.get("KPROXY_EMU_BENCH_MODES", ",".join(sweep.MODES)).split(",")
SPEC = sweep.BenchSpec(services=[SERVICES], packets=50_000)


@pytest.fixture(scope="module")
def cluster():
    return sweep.make_cluster(SERVICES, SPEC.endpoints, SPEC.seed)


@pytest.fixture(scope="module", params=MODES)
def dataplane(request, cluster):
    dp = Dataplane(cluster, mode=request.param, cluster_cidr="10.0.0.0/8")
    dp.prepare()
    return dp


def test_new_flows(benchmark, dataplane):
    batch = sweep.traffic(dataplane, SPEC, 1)

    def fresh():  # a node with no flows yet (not timed)
        dataplane.reset_state()
        return (batch,), {}

    verdicts = benchmark.pedantic(dataplane.process, setup=fresh, rounds=5)
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.median / len(batch) * 1e9
    benchmark.extra_info["rules_mean"] = float(verdicts["rules"].mean())
    assert not verdicts["ct_hit"].any()


def test_established_flows(benchmark, dataplane):
    batch = sweep.traffic(dataplane, SPEC, 1)
    dataplane.reset_state()
    first = dataplane.process(batch)
    alive = first["action"] <= 1  # ACCEPT or DNAT
    dataplane.process(sweep.replies(batch[alive], first[alive]))
    follow = sweep.established_packets(batch[alive], 10.0)
    verdicts = benchmark(dataplane.process, follow)
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.median / len(follow) * 1e9
    assert verdicts["ct_hit"].all()


def test_engine_build(benchmark, cluster):
    def build():
        dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
        dp.prepare()
        return dp

    benchmark.pedantic(build, rounds=1, iterations=1)


def test_one_endpoint_update(benchmark, cluster):
    changed = sweep.one_endpoint_changed(cluster)

    def setup():
        return (Dataplane(cluster, cluster_cidr="10.0.0.0/8"),), {}

    result = benchmark.pedantic(lambda dp: dp.update(changed), setup=setup, rounds=3)
    benchmark.extra_info["sync_lines"] = result.lines
    assert result.ok and np.isfinite(result.bytes)
