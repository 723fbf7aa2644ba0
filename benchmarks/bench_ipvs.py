"""IPVS engine: ns per packet for new and established flows, by service count.

    pytest benchmarks/bench_ipvs.py --benchmark-only
Sizes from KPROXY_EMU_BENCH_IPVS_SERVICES (default "1000,10000,100000"); each service has
10 real servers; the same FLOWS flows (random services) are used at every size, so the
time per packet should not grow with the service count. extra_info gives ns per packet
and hash probes per packet (services + connections, machine-independent).
"""

import os

import numpy as np
import pytest

from kproxy_emu import packets as P
from kproxy_emu._cext import vstable as V

SIZES = [
    int(s) for s in os.environ.get("KPROXY_EMU_BENCH_IPVS_SERVICES", "1000,10000,100000").split(",")
]
FLOWS = 200_000
DESTS = 10
CONN_BITS = 17  # ip_vs conn_tab_bits (kernel default 12; module parameter up to 20)
# mh tables are per service: 4093 slots (the kernel default) x 100k services is 1.6 GB
OPTS = {"conn_bits": CONN_BITS, "max_conns": FLOWS, "mh_tab_index": 8}


def _tables(n: int, scheduler: str):
    rng = np.random.default_rng(n)
    svcs = np.zeros(n, V.SERVICE_DTYPE)
    svcs["proto"] = 6
    svcs["addr"] = P.ip_to_u32("172.16.0.0") + rng.permutation(1 << 20)[:n].astype(np.uint32)
    svcs["port"] = rng.choice([80, 443, 8080, 53], n)
    dests = np.zeros(n * DESTS, V.DEST_DTYPE)
    dests["svc"] = np.repeat(np.arange(n), DESTS)
    dests["addr"] = P.ip_to_u32("10.0.0.0") + np.arange(n * DESTS, dtype=np.uint32)
    dests["port"] = 8080
    dests["weight"] = 1
    dests["endpoint"] = np.arange(n * DESTS)
    t = V.VirtualServerTable(svcs, dests, scheduler, seed=1, **OPTS)
    pick = rng.integers(0, n, FLOWS)
    pk = P.empty_packets(FLOWS)
    pk["proto"] = 6
    pk["dst_ip"] = svcs["addr"][pick]
    pk["dst_port"] = svcs["port"][pick]
    pk["src_ip"] = P.ip_to_u32("10.128.0.0") + rng.permutation(1 << 20)[:FLOWS].astype(np.uint32)
    pk["src_port"] = rng.integers(32768, 61000, FLOWS)
    pk["tcp_flags"] = P.TcpFlag.SYN
    pk["family"] = 4
    pk["ts"] = 1.0
    return t, pk, (svcs, dests)


@pytest.mark.parametrize("scheduler", ["rr", "mh"])
@pytest.mark.parametrize("services", SIZES)
def test_new_flows(benchmark, services, scheduler):
    _, pk, (svcs, dests) = _tables(services, scheduler)
    out = P.empty_verdicts(FLOWS)

    def fresh():
        return (V.VirtualServerTable(svcs, dests, scheduler, seed=1, **OPTS), pk, out), {}

    res = benchmark.pedantic(lambda t, p, o: t.process(p, o), setup=fresh, rounds=3)
    assert (res == V.RESULT_DNAT).all()
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.min / FLOWS * 1e9
    benchmark.extra_info["probes_per_packet"] = float(out["probes"].mean())


@pytest.mark.parametrize("services", SIZES)
def test_established_flows(benchmark, services):
    t, pk, _ = _tables(services, "rr")
    out = P.empty_verdicts(FLOWS)
    t.process(pk, out)
    ack = pk.copy()
    ack["tcp_flags"] = P.TcpFlag.ACK
    ack["ts"] = 2.0
    res = benchmark.pedantic(t.process, args=(ack, out), rounds=5)
    assert (res == V.RESULT_DNAT).all() and out["ct_hit"].all()
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.min / FLOWS * 1e9
    benchmark.extra_info["probes_per_packet"] = float(out["probes"].mean())
