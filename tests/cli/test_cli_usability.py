"""Small things users expect (issue 18 item 15)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from kproxy_emu import Dataplane, __version__
from kproxy_emu.bench import report
from kproxy_emu.model import Cluster
from kproxy_emu.model.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag(cli):
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"kproxy-emu {__version__}"


def test_python_dash_m_kproxy_emu():
    res = subprocess.run(
        [sys.executable, "-m", "kproxy_emu", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == 0 and res.stdout.strip() == f"kproxy-emu {__version__}", res.stderr


def test_packet_help_lists_the_suffixes(cli):
    text = " ".join(cli("trace", "--help").stdout.split())
    assert "flags=LETTERS" in text and "from=pod|external|host" in text


def test_verify_help_has_no_ipvs_only_flags(cli):
    res = cli("verify", "--help")
    assert res.returncode == 0
    assert "--scheduler" not in res.stdout and "--ipvs-conn-tab-bits" not in res.stdout
    assert "--scheduler" in cli("render", "--help").stdout


def test_plot_needs_matplotlib_before_the_sweep(cli, monkeypatch):
    real_find_spec = __import__("importlib.util").util.find_spec

    def no_matplotlib(name, *args):
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr("importlib.util.find_spec", no_matplotlib)

    def no_sweep(*args, **kwargs):  # the sweep must not start
        raise AssertionError("the sweep ran")

    monkeypatch.setattr("kproxy_emu.bench.sweep.run", no_sweep)
    res = cli("bench", "--plot", "out.png", "--no-progress")
    assert res.returncode == 2
    assert "--plot: plotting needs matplotlib" in res.stderr


def test_csv_has_no_float_noise(tmp_path):
    records = [
        {"mode": "iptables", "probes_p99": 0.009999999999990905, "cost_p99": 44.00999999999999}
    ]
    out = tmp_path / "b.csv"
    report.write_csv({"records": records}, str(out))
    row = next(csv.DictReader(out.read_text().splitlines()))
    assert row == {"mode": "iptables", "probes_p99": "0.01", "cost_p99": "44.01"}


def test_license_matches_pyproject_and_changelog_exists():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "Apache-2.0"} and meta["version"] == __version__
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    for doc in ("node-config.md", "bench-output.md"):
        assert (ROOT / "docs" / doc).exists()


def test_bench_outputs_are_ignored_by_git():
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert {"bench.json", "bench.csv"} <= set(lines)


def test_repr_is_short():
    from kproxy_emu import synth

    cluster = synth.cluster(300, endpoints=5, seed=1)
    assert repr(cluster) == f"<Cluster: {cluster.summary()}>"
    dp = Dataplane(cluster, "nftables", cluster_cidr="10.0.0.0/8", seed=3)
    text = repr(dp)
    assert text.startswith("<Dataplane nftables node=node-0001 seed=3 clock=0") and len(text) < 200
    assert (
        repr(Cluster())
        == "<Cluster: 0 services, 0 endpoint slices (0 endpoints), 0 nodes, 0 pods, 0 namespaces>"
    )


def test_node_file_cpus():
    base = {"name": "n1", "ips": ["10.0.0.1"]}
    assert NodeConfig.from_dict(base).cpus == 4
    assert NodeConfig.from_dict({**base, "cpus": 16}).cpus == 16
    with pytest.raises(Exception, match="cpus: must be at least 1: 0"):
        NodeConfig.from_dict({**base, "cpus": 0})
    with pytest.raises(Exception, match="cpus: must be an integer: 'x'"):
        NodeConfig.from_dict({**base, "cpus": "x"})
    with pytest.raises(Exception, match="cpus: must be an integer >= 1: 0"):
        Dataplane(Cluster(), node_config=NodeConfig.from_dict(base), cpus=0)
