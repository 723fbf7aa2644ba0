"""kube-proxy's packet-flow expectations (packetFlowTest tables) through the reference
evaluator walking the node's hooks: every DNAT destination, DROP/REJECT/ACCEPT, masquerade."""

import ipaddress

import pytest

from kproxy_emu import Dataplane, IptablesOptions
from kproxy_emu.dataplane.reference import Flow, ReferenceEvaluator, evaluate_new_flow
from kproxy_emu.model import Cluster
from kproxy_emu.netfilter.iptables_parse import parse

from .conftest import as_manifests
from .iptables_env import fixture, view_for

POD_CIDR = ipaddress.ip_network("10.0.0.0/8")


def _origin(src, node_ips):
    if src in node_ips or src.startswith("127."):
        return "host"
    return "pod" if ipaddress.ip_address(src) in POD_CIDR else "external"


def _check(ev, node_ips, tests, overrides=None):
    failures = []
    for t in tests:
        if ":" in t["sourceIP"] or ":" in t["destIP"]:
            continue  # IPv6 cases: the IPv6 proxier is not emulated yet
        expected_output, expected_masq = t["output"], t["masq"]
        if overrides and t["name"] in overrides:
            o = overrides[t["name"]]
            expected_output = o.get("output", expected_output)
            expected_masq = o.get("masq", expected_masq)
        flow = Flow(
            t["sourceIP"],
            t["destIP"],
            t["protocol"].lower(),
            40000,
            t["destPort"],
            _origin(t["sourceIP"], node_ips),
        )
        got = evaluate_new_flow(ev, flow)
        if (got.kube_proxy_output(), got.masquerade) != (expected_output, expected_masq):
            failures.append(
                f"{t['name']}: got {got.kube_proxy_output()!r} masq="
                f"{got.masquerade}, want {expected_output!r} masq={expected_masq}"
            )
    assert not failures, "\n".join(failures)


def _dataplane(env, services, slices, tmp_path, **kw):
    options = view_for(env, [], [], tmp_path, **kw).options
    cluster = Cluster.from_dicts(as_manifests(services, slices))
    return Dataplane(
        cluster,
        node_config=options.node,
        mark_text=env["masqueradeMark"],
        config=None,
        cluster_cidr=options.detect_local_value or None,
        masquerade_all=options.masquerade_all,
    )


def _evaluator(dp):
    return ReferenceEvaluator(dp.tables, dp.options.node.local_ips)


def test_overall_packet_flows(tmp_path):
    fx = fixture("iptables-overall.json")
    env = fx["environment"]
    dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path)
    _check(_evaluator(dp), env["tracerNodeIPs"], fx["packetTests"])


@pytest.mark.parametrize(
    "name", ["iptables-external-traffic-policy.json", "iptables-no-endpoints-and-itp.json"]
)
def test_policy_packet_flows(tmp_path, name):
    fx = fixture(name)
    env = fx["environment"]
    for test in fx["tests"]:
        for case in test.get("cases", [test]):
            services, slices = case["input"]["services"], case["input"]["endpointSlices"]
            dp = _dataplane(env, services, slices, tmp_path)
            _check(_evaluator(dp), env["tracerNodeIPs"], case["packetTests"])
            if "afterEndpointSliceDeleted" in case:
                dp.update(Cluster.from_dicts(as_manifests(services, [])))
                _check(_evaluator(dp), env["tracerNodeIPs"], case["afterEndpointSliceDeleted"])


def test_internal_external_masquerade_variants(tmp_path):
    fx = fixture("iptables-internal-external-masquerade.json")
    env = fx["environment"]
    for variant in fx["optionVariants"]:
        dp = _dataplane(
            env,
            fx["input"]["services"],
            fx["input"]["endpointSlices"],
            tmp_path,
            masquerade_all=variant["masqueradeAll"],
            detector=variant["localDetector"],
        )
        _check(_evaluator(dp), env["tracerNodeIPs"], fx["packetTests"], variant["overrides"])


def test_trace_static_ruleset(tmp_path):
    fx = fixture("iptables-trace-static.json")
    env = fixture("iptables-overall.json")["environment"]
    tables = parse(fx["input"]["iptablesRestoreData"])  # holds its own built-in chain jumps
    node_ips = env["tracerNodeIPs"]
    _check(ReferenceEvaluator(tables, node_ips), node_ips, fx["packetTests"])


def test_trace_api_and_cli_json(tmp_path):
    import json
    import subprocess
    import sys

    from .iptables_env import config_files

    fx = fixture("iptables-overall.json")
    env = fx["environment"]
    dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path)
    # svc4 has two endpoints: both are candidates, each with probability 1/2
    result = dp.trace("tcp 10.0.0.2:40000 -> 172.30.0.44:80")
    assert result["from"] == "pod" and result["verdict"] == "DNAT"
    assert [(c["endpoint"], c["probability"]) for c in result["candidates"]] == [
        ("10.180.0.4:80", 0.5),
        ("10.180.0.5:80", 0.5),
    ]
    assert result["endpoint"] in ("10.180.0.4:80", "10.180.0.5:80")
    assert result["masquerade"] is False
    assert result["cost"]["rules_evaluated"] == sum(1 for _ in result["steps"])
    matched = [s["chain"] for s in result["steps"] if s["matched"]]
    assert matched[:2] == ["PREROUTING", "KUBE-SERVICES"]
    # no endpoints: REJECT; a blocked LB client: DROP
    assert dp.trace("tcp 10.0.0.2:40000 -> 172.30.0.46:80")["verdict"] == "REJECT"
    blocked = dp.trace("tcp 203.0.113.130:40000 -> 5.6.7.8:80")
    assert blocked["from"] == "external" and blocked["verdict"] == "DROP"
    node = dp.trace("tcp 192.168.0.2:40000 -> 172.30.0.41:80")
    assert node["from"] == "host" and node["masquerade"] is True

    cfg, node_cfg = config_files(env, tmp_path)
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
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kproxy_emu.cli",
            "trace",
            "--config",
            str(cfg),
            "--node-config",
            str(node_cfg),
            str(manifests),
            "--json",
            "--packet",
            "tcp 203.0.113.2:40000 -> 5.6.7.8:80",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "DNAT" and out["dnat"] == "10.180.0.3:80" and out["masquerade"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "kproxy_emu.cli",
            "trace",
            str(manifests),
            "--node-config",
            str(node_cfg),
            "--packet",
            "tcp 1.2.3:1 -> 4.5.6.7:8",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_packet_flows_through_a_real_nodes_iptables_save(tmp_path):
    """The overall fixture's rules as a real kernel's iptables-save printed them: the same
    packet flows, through the reference evaluator and through the chain VM."""
    import subprocess
    import sys

    from kproxy_emu import packets
    from kproxy_emu.netfilter.iptables_parse import parse

    from .conftest import FIXTURES
    from .test_chain_engine import agree

    fx = fixture("iptables-overall.json")  # skips (fails in CI) without the fixtures
    env = fx["environment"]
    dump = FIXTURES / "live" / "iptables-overall.iptables-save.txt"
    node = view_for(env, [], [], tmp_path).options.node
    dp = Dataplane(
        Cluster(),
        IptablesOptions(tables=parse(dump.read_text())),
        node_config=node,
        cluster_cidr="10.0.0.0/8",
    )
    _check(_evaluator(dp), env["tracerNodeIPs"], fx["packetTests"])
    lines = [
        f"{t['protocol'].lower()} {t['sourceIP']}:40000 -> {t['destIP']}:{t['destPort']}"
        for t in fx["packetTests"]
        if ":" not in t["sourceIP"] + t["destIP"]
    ]
    batch = packets.from_strings(lines)
    packets.resolve_origins(batch, ["10.0.0.0/8"], env["tracerNodeIPs"])
    dp_vm = Dataplane(
        Cluster(),
        IptablesOptions(tables=parse(dump.read_text())),
        node_config=node,
        cluster_cidr="10.0.0.0/8",
        conntrack=False,
    )
    agree(dp_vm, batch)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kproxy_emu.cli",
            "trace",
            "--iptables-save",
            str(dump),
            "--node-ip",
            "192.168.0.2",
            "--cluster-cidr",
            "10.0.0.0/8",
            "--json",
            "--packet",
            "tcp 10.0.0.2:40000 -> 172.30.0.41:80",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"dnat": "10.180.0.1:80"' in proc.stdout
