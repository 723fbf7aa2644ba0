"""kproxy-emu synth and check."""

from kproxy_emu import synth
from kproxy_emu.model import Cluster


def test_cli_synth_writes_a_cluster_that_loads_back(cli, tmp_path):
    out = tmp_path / "c.yaml"
    proc = cli("synth", "--services", "1000", "--seed", "4", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "1000 services" in proc.stderr
    assert Cluster.from_files(out) == synth.cluster(1000, seed=4)
    check = cli("check", out)
    assert check.returncode == 0 and check.stdout.startswith("1000 services")
