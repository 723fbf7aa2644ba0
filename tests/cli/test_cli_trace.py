"""kproxy-emu trace: a packet sequence over emulated time."""

import json

from kproxy_emu.dataplane.tracer import endpoint_key
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


def _many_services(tmp_path, services=300, endpoints=12):
    from kproxy_emu import synth

    cluster = synth.cluster(
        services,
        endpoints=endpoints,
        seed=4,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        affinity_share=0,
        prefer_close_share=0,
    )
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    svc = list(cluster.services.values())[-1]  # last: every KUBE-SERVICES rule is tested
    port = svc.ports[0]
    name = f"{svc.namespace}/{svc.name}"
    return path, svc, port, name


def test_cli_trace_prints_the_matched_path_unless_all_rules(cli, tmp_path):
    """Issue 18 item 12: a trace through 300 services printed every rule tested; now the
    matched path, the Service it hit and the candidates in numeric order, and every rule
    only with --all-rules."""
    path, svc, port, name = _many_services(tmp_path)
    pkt = f"tcp 10.0.0.9:40000 -> {svc.cluster_ip}:{port.port}"
    short = cli("trace", path, "--cluster-cidr", "10.0.0.0/8", "--packet", pkt)
    assert short.returncode == 0, short.stderr
    lines = short.stdout.splitlines()
    full = cli("trace", path, "--cluster-cidr", "10.0.0.0/8", "--packet", pkt, "--all-rules")
    assert full.returncode == 0, full.stderr
    assert len(full.stdout.splitlines()) > 300 > 20 + 12 > len(lines)
    rules = [ln for ln in lines if ln.startswith(("=>", "  -A", "   "))]
    assert rules and all(ln.startswith("=>") for ln in rules)
    assert any("rules evaluated without matching not shown; --all-rules" in ln for ln in lines)
    port_name = port.name or str(port.port)
    assert f"service: {name} port {port_name} (TCP {port.port})" in short.stdout
    assert f"cluster IP {svc.cluster_ip}:{port.port}" in short.stdout
    shown = [ln.split()[0] for ln in lines[lines.index("could reach (12 endpoints):") + 1 :]]
    assert shown == sorted(shown, key=endpoint_key) != sorted(shown)


def test_cli_trace_json_keeps_its_fields_and_adds_the_service(cli, tmp_path):
    path, svc, port, name = _many_services(tmp_path, services=5, endpoints=4)
    pkt = f"tcp 10.0.0.9:40000 -> {svc.cluster_ip}:{port.port}"
    proc = cli("trace", path, "--mode", "nftables", "--json", "--packet", pkt)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    old = ("packet", "from", "time", "conntrack", "verdict", "dnat", "masquerade", "endpoint")
    for key in (*old, "candidates", "outcomes", "steps", "cost"):
        assert key in out
    assert out["service"]["name"].startswith(name) and out["service"]["via"] == "cluster-ip"
    assert [(c["probability"], c["fraction"]) for c in out["candidates"]] == [(0.25, "1/4")] * 4
    assert all(s["matched"] for s in out["steps"]) and out["steps_omitted"] > 0
    assert any(s.get("element", "").startswith(f"{svc.cluster_ip} . tcp .") for s in out["steps"])
    text = cli("trace", path, "--mode", "nftables", "--packet", pkt).stdout
    assert (
        "p=1/4" in text
        and "path (table ip kube-proxy):" in text
        and "=> services: ip daddr" in text
        and "[element " in text
    )
    ipvs = cli("trace", path, "--mode", "ipvs", "--scheduler", "mh", "--packet", pkt).stdout
    assert f"virtual server TCP {svc.cluster_ip}:{port.port} (mh, {name}" in ipvs


def test_readme_trace_example_is_what_trace_prints(cli, tmp_path):
    """The README's trace example, run: its lines are the command's first lines."""
    import pathlib
    import shlex

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("$ kproxy-emu trace c.json", 1)[1].split("```", 1)[0]
    args, *shown = block.splitlines()
    shown = shown[: shown.index("  ...")]
    path = tmp_path / "c.json"
    assert cli("synth", "--services", "20", "--seed", "1", "-o", path).returncode == 0
    proc = cli("trace", path, *shlex.split(args))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[: len(shown)] == shown
