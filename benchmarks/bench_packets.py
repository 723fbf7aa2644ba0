"""Speed of packet text parsing and traffic synthesis (1M packets each).

Run: python -m pytest benchmarks/bench_packets.py  (a few seconds; not part of tests/).
"""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import packets as P

N = 1_000_000


def _targets(n: int = 10_000) -> np.ndarray:
    t = P.empty_targets(n)
    t["ip"] = P.ip_to_u32("10.96.0.0") + np.arange(n)
    t["port"] = 80
    t["proto"] = np.where(np.arange(n) % 5 == 0, 17, 6)
    t["origins"] = 7
    return t


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return P.to_strings(P.synth(_targets(), N, seed=1))


def test_parse_1m_lines(benchmark, lines: list[str]) -> None:
    out = benchmark.pedantic(P.from_strings, args=(lines,), rounds=3, iterations=1)
    assert len(out) == N
    benchmark.extra_info["lines_per_s"] = N / benchmark.stats.stats.min


def test_format_1m_packets(benchmark, lines: list[str]) -> None:
    pk = P.from_strings(lines)
    out = benchmark.pedantic(P.to_strings, args=(pk,), rounds=3, iterations=1)
    assert out == lines
    benchmark.extra_info["lines_per_s"] = N / benchmark.stats.stats.min


@pytest.mark.parametrize("popularity", ["uniform", "zipf"])
def test_synth_1m_packets(benchmark, popularity: str) -> None:
    t = _targets()
    out = benchmark.pedantic(
        P.synth, args=(t, N), kwargs=dict(seed=7, popularity=popularity), rounds=3, iterations=1
    )
    assert len(out) == N
    benchmark.extra_info["packets_per_s"] = N / benchmark.stats.stats.min


def test_ip_to_u32_1m(benchmark) -> None:
    ips = P.u32_to_ip(np.arange(N, dtype=np.uint32) * 4099).tolist()
    out = benchmark.pedantic(P.ip_to_u32, args=(ips,), rounds=3, iterations=1)
    assert len(out) == N
