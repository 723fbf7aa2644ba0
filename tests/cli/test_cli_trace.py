"""kproxy-emu trace: a packet sequence over emulated time."""

import json

from tests.cores.test_chain_engine import _one_service


def test_cli_trace_sequence(cli, tmp_path):
    cluster, _svc, vip = _one_service()
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    node = next(iter(cluster.nodes.values())).name
    proc = cli(
        "trace",
        path,
        "--node",
        node,
        "--json",
        "--packet",
        f"tcp 10.0.0.9:40000 -> {vip}",
        "--packet",  # the SYN again (a retransmission: the ACK would be INVALID)
        f"tcp 10.0.0.9:40000 -> {vip}",
        "--time",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["conntrack"] for r in out] == ["new", "established"]
    assert [r["time"] for r in out] == [3.0, 4.0]
    assert out[0]["endpoint"] == out[1]["endpoint"]
