"""iptables mode: compile and render time at scale (not part of the default test run).

    pytest benchmarks/bench_iptables.py --benchmark-only
Set KPROXY_EMU_BENCH_SERVICES (default 10000) for the cluster size; 100000 is the target.
"""

import os

import pytest

from kproxy_emu import Dataplane, synth
from kproxy_emu.netfilter.iptables_text import render

SERVICES = int(os.environ.get("KPROXY_EMU_BENCH_SERVICES", "10000"))


@pytest.fixture(scope="module")
def cluster():
    return synth.cluster(SERVICES, endpoints=10, seed=1)


def test_compile(benchmark, cluster):
    dp = benchmark.pedantic(
        lambda: Dataplane(cluster, cluster_cidr="10.0.0.0/8"), rounds=1, iterations=1
    )
    assert dp.view.service_ports


def test_render(benchmark, cluster):
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
    text = benchmark.pedantic(lambda: render(dp.ruleset), rounds=1, iterations=1)
    assert text.endswith("COMMIT\n")
