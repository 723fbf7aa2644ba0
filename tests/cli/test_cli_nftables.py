"""kproxy-emu render and trace in nftables mode."""

import json


def test_cli_nftables(cli, cluster, tmp_path):
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    svc = next(s for s in cluster.services.values() if s.cluster_ip and s.ports)
    node = next(iter(cluster.nodes.values())).name
    proc = cli("render", "--mode", "nftables", "--format", "save", "--node", node, path)
    assert proc.returncode == 0, proc.stderr
    assert "map service-ips" in proc.stdout
    pkt = f"{svc.ports[0].protocol.lower()} 10.0.0.9:4000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    proc = cli(
        "trace",
        "--mode",
        "nftables",
        "--node",
        node,
        "--json",
        "--cluster-cidr",
        "10.0.0.0/8",
        path,
        "--packet",
        pkt,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "DNAT" and out["cost"]["lookups"] > 0
    assert abs(sum(c["probability"] for c in out["candidates"]) - 1) < 1e-9
    proc = cli("render", "--mode", "nftables", "--service-cidr", "bogus", "--node", node, path)
    assert proc.returncode == 2 and "--service-cidr" in proc.stderr
