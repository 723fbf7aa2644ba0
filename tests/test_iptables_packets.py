"""kube-proxy's packet-flow expectations (packetFlowTest tables) through the reference
evaluator walking the node's hooks: every DNAT destination, DROP/REJECT/ACCEPT, masquerade."""
import ipaddress

import pytest

from kproxy_emu import Dataplane
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
        flow = Flow(t["sourceIP"], t["destIP"], t["protocol"].lower(), 40000, t["destPort"],
                    _origin(t["sourceIP"], node_ips))
        got = evaluate_new_flow(ev, flow)
        if (got.kube_proxy_output(), got.masquerade) != (expected_output, expected_masq):
            failures.append(f"{t['name']}: got {got.kube_proxy_output()!r} masq="
                            f"{got.masquerade}, want {expected_output!r} masq={expected_masq}")
    assert not failures, "\n".join(failures)


def _dataplane(env, services, slices, tmp_path, **kw):
    options = view_for(env, [], [], tmp_path, **kw).options
    cluster = Cluster.from_dicts(as_manifests(services, slices))
    return Dataplane(cluster, node_config=options.node, mark_text=env["masqueradeMark"],
                     config=None, cluster_cidr=options.detect_local_value or None,
                     masquerade_all=options.masquerade_all)


def _evaluator(dp):
    return ReferenceEvaluator(dp.tables, dp.options.node.local_ips)


def test_overall_packet_flows(tmp_path):
    fx = fixture("iptables-overall.json")
    env = fx["environment"]
    dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path)
    _check(_evaluator(dp), env["tracerNodeIPs"], fx["packetTests"])


@pytest.mark.parametrize("name", ["iptables-external-traffic-policy.json",
                                  "iptables-no-endpoints-and-itp.json"])
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
        dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path,
                        masquerade_all=variant["masqueradeAll"],
                        detector=variant["localDetector"])
        _check(_evaluator(dp), env["tracerNodeIPs"], fx["packetTests"], variant["overrides"])


def test_trace_static_ruleset(tmp_path):
    fx = fixture("iptables-trace-static.json")
    env = fixture("iptables-overall.json")["environment"]
    tables = parse(fx["input"]["iptablesRestoreData"])  # holds its own built-in chain jumps
    node_ips = env["tracerNodeIPs"]
    _check(ReferenceEvaluator(tables, node_ips), node_ips, fx["packetTests"])
