"""The bench refuses a cell its memory model says will not fit, with the estimate."""

import pytest

from kproxy_emu.bench import memory, report, sweep


def test_estimate_grows_with_services_and_endpoints():
    for mode in memory.RSS_MODEL:
        small = memory.estimate_mb(mode, 1000, 10)
        assert memory.estimate_mb(mode, 10000, 10) > small
        assert memory.estimate_mb(mode, 1000, 40) > small
    # the model against the 100,000-service sweep's measured peaks (README): within 15%
    # (and IPVS at 1,000,000 services, 16.9 GB measured)
    for mode, measured in (("iptables", 6570), ("nftables", 3748), ("ipvs", 1968)):
        assert memory.estimate_mb(mode, 100_000, 10) == pytest.approx(measured, rel=0.15)
    assert memory.estimate_mb("ipvs", 1_000_000, 10) == pytest.approx(16_870, rel=0.15)


def test_refusal_names_the_estimate():
    assert memory.refusal("nftables", 1000, 10, available=20_000) is None
    assert memory.refusal("nftables", 1000, 10, available=None) is None
    why = memory.refusal("nftables", 1_000_000, 10, available=22_000)
    assert why is not None and "estimated peak memory 36.1 GB" in why and "21.5 GB" in why


def test_meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal: 100 kB\nMemAvailable:   2097152 kB\n")
    assert memory.available_mb(str(f)) == 2048.0
    assert memory.available_mb(str(tmp_path / "none")) is None


def test_sweep_skips_a_cell_that_would_not_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_mb", lambda: 50.0)  # 50 MB left
    spec = sweep.BenchSpec(services=[40], packets=500, repeat=1, modes=("ipvs",), disruption=False)
    result = sweep.run(spec, progress=False, isolate=False)
    assert result["records"] == []
    (cell,) = result["skipped"]
    assert "estimated peak memory" in cell["reason"]
    assert "skipped: ipvs at 40 services: estimated peak memory" in report.table(result)
