"""One-endpoint update: Dataplane.update() wall time after one EndpointSlice is replaced
with one endpoint's readiness flipped (the issue's target: <= 50 ms at 10k services,
<= 300 ms at 100k, every mode), and the same change through Dataplane.apply().

    pytest benchmarks/bench_update.py --benchmark-only
KPROXY_EMU_BENCH_UPDATE_SERVICES sets the cluster size (default 10000; 100000 takes a
few minutes and ~3 GB per mode to build).
"""

import copy
import dataclasses
import os

import pytest

from kproxy_emu import Dataplane, synth
from kproxy_emu.proxy.tracker import Updated

SERVICES = int(os.environ.get("KPROXY_EMU_BENCH_UPDATE_SERVICES", "10000"))


@pytest.fixture(scope="module")
def cluster():
    return synth.cluster(SERVICES, endpoints=10, seed=1)


def _flipped(dp: Dataplane):
    """The first sliced service's slice with its first endpoint's readiness flipped."""
    key = next(k for k, s in dp.cluster.endpoint_slices.items() if s.endpoints)
    s = dp.cluster.endpoint_slices[key]
    first = s.endpoints[0]
    ready = not first.is_ready
    eps = [dataclasses.replace(first, ready=ready, serving=ready), *s.endpoints[1:]]
    return key, dataclasses.replace(s, endpoints=eps)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_one_endpoint_update(benchmark, cluster, mode):
    dp = Dataplane(cluster, mode)

    def setup():
        key, s = _flipped(dp)
        new = copy.copy(dp.cluster)
        new.endpoint_slices = {**dp.cluster.endpoint_slices, key: s}
        return (new,), {}

    result = benchmark.pedantic(dp.update, setup=setup, rounds=8, warmup_rounds=1)
    assert result.ok and len(result.changed) == 1
    benchmark.extra_info["sync_lines"] = result.lines
    benchmark.extra_info["sync_bytes"] = result.bytes


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_one_endpoint_apply(benchmark, cluster, mode):
    dp = Dataplane(cluster, mode)

    def setup():
        return ([Updated(_flipped(dp)[1])],), {}

    result = benchmark.pedantic(dp.apply, setup=setup, rounds=8, warmup_rounds=1)
    assert result.ok and len(result.changed) == 1
