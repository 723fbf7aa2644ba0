"""kproxy-emu render in iptables mode: kube-proxy's fixture environment given as
--config / --node-config files, and the errors bad options get."""

import json

from kproxy_emu import synth
from kproxy_emu.model import Cluster
from tests.helpers.fixtures import as_manifests
from tests.helpers.iptables_env import config_files, fixture


def test_cli_render_with_fixture_environment_as_config_files(cli, tmp_path):
    """The fixture's fake-proxier environment, given as --config and --node-config."""
    fx = fixture("iptables-overall.json")
    cfg, node = config_files(fx["environment"], tmp_path)
    manifests = tmp_path / "in.json"
    manifests.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": as_manifests(fx["input"]["services"], fx["input"]["endpointSlices"]),
            }
        )
    )
    proc = cli("render", "--config", cfg, "--node-config", node, "--sorted", manifests)
    assert proc.returncode == 0, proc.stderr
    # real kube-proxy writes 0x00004000; the unit tests' fake proxier used 0x4000
    assert proc.stdout.replace("0x00004000", "0x4000") == fx["expected"]["text"]
    proc = cli(
        "render",
        "--config",
        cfg,
        "--node-config",
        node,
        "--sorted",
        "--mark-text",
        "0x4000",
        manifests,
    )
    assert proc.stdout == fx["expected"]["text"]


def test_cli_render_errors_exit_2(cli, tmp_path):
    path = tmp_path / "c.yaml"
    synth.cluster(10).dump(path)
    for extra in (["--node", "nope"], ["--node-ip", "1.2.3"], ["--mode", "winkernel"]):
        proc = cli("render", path, *extra)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
    empty = tmp_path / "svc.json"
    Cluster.from_dicts([]).dump(empty)
    proc = cli("render", empty)
    assert proc.returncode == 2 and "no node to emulate" in proc.stderr
