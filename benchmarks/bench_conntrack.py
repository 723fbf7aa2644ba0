"""Conntrack lookup speed: 1M lookups of established flows in a 100k-entry table.

Run: python -m pytest benchmarks/bench_conntrack.py  (a few seconds; not part of tests/).
Reports ns per lookup and probes per lookup (machine-independent) in extra_info.
"""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import packets as P
from kproxy_emu._cext import conntrack as C

FLOWS = 100_000
LOOKUPS = 1_000_000


def _flows(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = P.empty_packets(n)
    a["src_ip"] = P.ip_to_u32("10.0.0.0") + rng.permutation(1 << 20)[:n].astype(np.uint32)
    a["src_port"] = rng.integers(32768, 61000, n)
    a["dst_ip"] = P.ip_to_u32("10.96.0.0") + rng.integers(0, 10_000, n).astype(np.uint32)
    a["dst_port"] = 80
    a["proto"] = 6
    a["family"] = 4
    return a


def _established_table(buckets: int | None):
    syn = _flows(FLOWS)
    t = C.ConntrackTable(FLOWS, 7, buckets=buckets, **C.KUBE_PROXY_TIMEOUTS)
    v = P.empty_verdicts(FLOWS)
    v["dnat_ip"] = P.ip_to_u32("10.244.0.0") + (np.arange(FLOWS) % 5000).astype(np.uint32)
    v["dnat_port"] = 8080
    syn["tcp_flags"] = P.TcpFlag.SYN
    t.track_batch(syn, v)
    reply = syn.copy()
    reply["src_ip"], reply["dst_ip"] = v["dnat_ip"], syn["src_ip"]
    reply["src_port"], reply["dst_port"] = 8080, syn["src_port"]
    reply["tcp_flags"] = P.TcpFlag.SYN | P.TcpFlag.ACK
    t.track_batch(reply, P.empty_verdicts(FLOWS))
    ack = syn.copy()
    ack["tcp_flags"] = P.TcpFlag.ACK
    t.track_batch(ack, P.empty_verdicts(FLOWS))
    assert len(t) == FLOWS and t.stats()["drop"] == 0
    rows = t.entries()
    assert (rows["state"] == 3).all() and (rows["status"] & C.STATUS_ASSURED).all()
    pk = ack[np.random.default_rng(2).integers(0, FLOWS, LOOKUPS)]
    pk["ts"] = 1.0 + np.arange(LOOKUPS) * 1e-6
    return t, pk


@pytest.mark.parametrize("buckets", [None, FLOWS // 4], ids=["kernel-default", "kube-proxy"])
def test_lookup_1m_established(benchmark, buckets) -> None:
    t, pk = _established_table(buckets)
    st = np.empty(LOOKUPS, np.uint32)
    en = np.empty(LOOKUPS, np.int32)
    di = np.empty(LOOKUPS, np.int8)
    total = benchmark.pedantic(t.lookup_batch, args=(pk, st, en, di), rounds=5, iterations=1)
    assert (en >= 0).all() and (st & C.STATE_ESTABLISHED).all()
    benchmark.extra_info["ns_per_lookup"] = benchmark.stats.stats.min / LOOKUPS * 1e9
    benchmark.extra_info["probes_per_lookup"] = total / LOOKUPS
    benchmark.extra_info["buckets"] = t.buckets


def test_track_1m_mixed(benchmark) -> None:
    """track_batch (lookup + NAT into verdicts) on the same traffic."""
    t, pk = _established_table(None)
    v = P.empty_verdicts(LOOKUPS)
    total = benchmark.pedantic(t.track_batch, args=(pk, v), rounds=3, iterations=1)
    assert v["ct_hit"].all()
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.min / LOOKUPS * 1e9
    benchmark.extra_info["probes_per_packet"] = total / LOOKUPS
