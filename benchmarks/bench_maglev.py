"""Maglev table build and slot pick (kproxy_emu.maglev, cext/maglev.pyx).

Run: python -m pytest benchmarks/bench_maglev.py  (a few seconds; not part of tests/).
The issue's target: a table for 100 backends at M = 16381 in under 5 ms. Reports the best
round in ms in extra_info (``ms_best``) beside pytest-benchmark's own statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import maglev


def _backends(n: int) -> list[str]:
    return [f"10.{i // 250}.{i % 250}.7:8080/TCP" for i in range(n)]


@pytest.mark.parametrize("n, m", [(100, 16381), (1000, 16381), (100, 131071)])
def test_table_build(benchmark, n: int, m: int) -> None:
    backends = _backends(n)
    table = benchmark.pedantic(maglev.lookup_table, args=(backends, m), rounds=20, iterations=1)
    assert table.shape == (m,)
    benchmark.extra_info["ms_best"] = benchmark.stats.stats.min * 1e3


def test_table_build_weighted(benchmark) -> None:
    backends = _backends(100)
    weights = [1 + (i * 37) % 200 for i in range(100)]
    table = benchmark.pedantic(
        maglev.lookup_table, args=(backends, 16381), kwargs={"weights": weights}, rounds=20
    )
    assert table.shape == (16381,)
    benchmark.extra_info["ms_best"] = benchmark.stats.stats.min * 1e3


def test_slots_1m(benchmark) -> None:
    """The datapath hash per flow (jhash_3words % M), 1M flows."""
    n = 1_000_000
    rng = np.random.default_rng(1)
    ip = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    cport = rng.integers(1024, 65535, n, dtype=np.uint16)
    sport = np.full(n, 80, np.uint16)
    proto = np.full(n, 6, np.uint8)
    out = benchmark.pedantic(maglev.slots, args=(ip, cport, sport, proto), rounds=5)
    assert out.max() < maglev.DEFAULT_TABLE_SIZE
    benchmark.extra_info["ns_per_flow"] = benchmark.stats.stats.min / n * 1e9
