"""kproxy-emu render / trace / bench in eBPF mode, and its flags' errors."""

import json

from kproxy_emu.bench import sweep

CIDR = "10.0.0.0/8"


def test_cli_ebpf_render_and_trace(cli, cluster, tmp_path):
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    svc = next(s for s in cluster.services.values() if s.cluster_ip and s.ports)
    proc = cli("render", "--mode", "ebpf", path)
    assert proc.returncode == 0, proc.stderr
    assert f"ADDR={svc.cluster_ip}:{svc.ports[0].port}/" in proc.stdout
    proc = cli("render", "--mode", "ebpf", "--format", "save", path)
    assert proc.returncode == 0 and "# cilium_lb4_backends_v3" in proc.stdout
    proc = cli("render", "--mode", "ebpf", "--format", "json", "--lb-algorithm", "maglev", path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["maglev"]
    pkt = f"{svc.ports[0].protocol.lower()} 10.0.0.9:4000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    proc = cli("trace", "--mode", "ebpf", "--json", "--cluster-cidr", CIDR, path, "--packet", pkt)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] in ("DNAT", "REJECT")
    assert out["steps"][0]["chain"] == "cilium_lb4_services_v2"
    assert out["cost"]["lookups"] >= 1
    proc = cli("trace", "--mode", "ebpf", "--cluster-cidr", CIDR, path, "--packet", pkt)
    assert proc.returncode == 0 and "map lookups)" in proc.stdout


def test_cli_ebpf_flag_errors(cli, cluster, tmp_path):
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    for bad, message in (
        (["--lb-algorithm", "wrr"], "--lb-algorithm: must be random or maglev"),
        (["--maglev-table-size", "1000"], "--maglev-table-size: must be one of 251"),
        (["--maglev-hash-seed", "x"], "--maglev-hash-seed"),
        (["--bpf-lb-mode", "tunnel"], "--bpf-lb-mode: must be snat, dsr or hybrid"),
        (["--bpf-lb-map-max", "10"], "raise bpf-lb-map-max"),
        (["--mode", "nftables", "--lb-algorithm", "maglev"], "applies to ebpf mode only"),
        (["--mode", "iptables", "--bpf-lb-external-clusterip"], "applies to ebpf mode only"),
    ):
        args = ["render", *bad, str(path)]
        if "--mode" not in bad:
            args[1:1] = ["--mode", "ebpf"]
        proc = cli(*args)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def test_bench_skips_a_cell_the_mode_cannot_hold(monkeypatch):
    # a bpf-lb-map-max too small for the cluster: the cell is reported, the sweep goes on
    monkeypatch.setattr(sweep, "EBPF_LB_MAP_MAX", 10)
    spec = sweep.BenchSpec(
        services=[40], packets=500, repeat=1, modes=("nftables", "ebpf"), disruption=False
    )
    result = sweep.run(spec, progress=False, isolate=False)
    assert {r["mode"] for r in result["records"]} == {"nftables"}
    (cell,) = result["skipped"]
    assert cell["mode"] == "ebpf" and "bpf-lb-map-max" in cell["reason"]
    from kproxy_emu.bench import report

    assert "skipped: ebpf at 40 services" in report.table(result)
