"""The eBPF mode's compiled service lookup (kproxy_emu._cext.ebpflb.LbTable), on its own:
ns per new flow over 200,000 flows to synthetic clusters, random and Maglev, and the map
compile (EbpfProxier.sync). Not the mode's end-to-end figure: that is
bench_ebpf_targets.py (the mode on the packet pipeline; docs/ebpf.md).

Run: python -m pytest benchmarks/bench_ebpf.py  (under a minute; not part of tests/).
"""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest

from kproxy_emu import synth
from kproxy_emu.dataplane.ebpf_lowering import lower
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.modes.ebpf import EbpfProxier
from kproxy_emu.proxy.options import ProxyOptions
from kproxy_emu.proxy.view import ProxyView

FLOWS = 200_000


def _setup(services: int, algorithm: str):
    opts = ProxyOptions.build(NodeConfig.from_node("node-1", ["10.0.0.1"]))
    view = ProxyView(synth.cluster(services, endpoints=10, seed=1), opts)
    maps = EbpfProxier(opts, lb_algorithm=algorithm, external_clusterip=True).sync(view).maps
    table = lower(maps, algorithm=algorithm)
    fronts = [(k.address, k.port, k.proto) for k in maps.frontends()]
    rng = random.Random(7)
    picks = [rng.choice(fronts) for _ in range(FLOWS)]
    cols = {
        "client_ip": np.array(
            [int(ipaddress.IPv4Address("10.128.0.0")) + rng.randrange(1 << 20) for _ in picks],
            np.uint32,
        ),
        "client_port": np.array([rng.randrange(1024, 65536) for _ in picks], np.uint16),
        "vip": np.array([int(ipaddress.IPv4Address(p[0])) for p in picks], np.uint32),
        "vport": np.array([p[1] for p in picks], np.uint16),
        "proto": np.array([p[2] for p in picks], np.uint8),
        "from_cluster": np.zeros(FLOWS, np.uint8),
        "now": np.zeros(FLOWS),
        "draws": np.array([rng.getrandbits(32) for _ in picks], np.uint32),
    }
    out = {
        "verdict": np.empty(FLOWS, np.uint8),
        "backend": np.empty(FLOWS, np.uint32),
        "pick": np.empty(FLOWS, np.int32),
        "affinity_hit": np.empty(FLOWS, np.uint8),
        "lookups": np.empty(FLOWS, np.uint8),
    }
    return opts, view, table, cols, out


@pytest.mark.parametrize("algorithm", ["random", "maglev"])
@pytest.mark.parametrize("services", [100, 2000])
def test_new_flows(benchmark, services: int, algorithm: str) -> None:
    _, _, table, cols, out = _setup(services, algorithm)
    benchmark.pedantic(table.new_flows, kwargs=cols | out, rounds=5, iterations=1)
    assert not (out["verdict"] == 1).any()  # every flow hits a frontend
    benchmark.extra_info["dnat_share"] = float((out["verdict"] == 0).mean())
    benchmark.extra_info["ns_per_flow"] = benchmark.stats.stats.min / FLOWS * 1e9
    benchmark.extra_info["lookups_per_flow"] = float(out["lookups"].mean())


def test_compile_1000_services(benchmark) -> None:
    opts, view, *_ = _setup(1000, "random")
    benchmark.pedantic(lambda: EbpfProxier(opts).sync(view), rounds=3, iterations=1)
    benchmark.extra_info["s_best"] = benchmark.stats.stats.min
