"""kproxy-emu render (ipvsadm, ipset formats) and trace in IPVS mode."""

import json

CIDR = "10.0.0.0/8"


def test_cli_ipvs(cli, cluster, tmp_path):
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    svc = next(s for s in cluster.services.values() if s.cluster_ip and s.ports)
    proc = cli("render", "--mode", "ipvs", path)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"-A -{svc.ports[0].protocol.lower()[0]} {svc.cluster_ip}:{svc.ports[0].port}"
        in proc.stdout
    )
    proc = cli("render", "--mode", "ipvs", "--format", "ipset-save", path)
    assert proc.returncode == 0 and "create KUBE-CLUSTER-IP hash:ip,port" in proc.stdout
    proc = cli("render", "--mode", "ipvs", "--scheduler", "wrr", "--format", "ipvsadm-list", path)
    assert proc.returncode == 0 and " wrr" in proc.stdout
    pkt = f"{svc.ports[0].protocol.lower()} 10.0.0.9:4000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    proc = cli("trace", "--mode", "ipvs", "--json", "--cluster-cidr", CIDR, path, "--packet", pkt)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] in ("DNAT", "REJECT")
    if out["verdict"] == "DNAT":
        assert abs(sum(c["probability"] for c in out["candidates"]) - 1) < 1e-9
        assert any(s["table"] == "ipvs" for s in out["steps"])
    for bad, message in (
        (["--scheduler", "fastest"], "unknown IPVS scheduler"),
        (["--format", "ipset-save", "--mode", "iptables"], "--format"),
        (["--scheduler", "sh", "--mode", "iptables"], "--scheduler: applies to ipvs mode only"),
        (["--ipvs-conn-tab-bits", "16", "--mode", "nftables"], "--ipvs-conn-tab-bits"),
    ):
        args = ["render", *bad, str(path)]
        if "--mode" not in bad:
            args[1:1] = ["--mode", "ipvs"]
        proc = cli(*args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
