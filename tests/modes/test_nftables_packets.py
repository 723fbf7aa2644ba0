"""kube-proxy's nftables packet-flow expectations through the nftables reference evaluator.

kube-proxy's nftables unit tests (commit B) run the same packetFlowTest tables as the
iptables ones for TestNoEndpointsReject, TestInternalTrafficPolicy,
TestExternalTrafficPolicyLocal/Cluster and TestInternalExternalMasquerade, so those fixtures
are checked here against the nftables mode too. The nftables-only tables (TestClusterIPGeneral,
TestLoadBalancer, TestNodePorts) are transcribed below from
kubernetes/kubernetes pkg/proxy/nftables/proxier_test.go @ 81810de6.
"""

import ipaddress

import pytest

from kproxy_emu.dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
from kproxy_emu.dataplane.reference import Flow
from kproxy_emu.modes.nftables import compile_nftables
from tests.helpers.nftables_env import (
    SERVICE_CIDRS,
    fixture,
    nft_env,
    options_for,
    shared_flow_steps,
    view_of,
)

POD_CIDR = ipaddress.ip_network("10.0.0.0/8")
NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11"]


def _origin(src):
    if src in NODE_IPS or src.startswith("127."):
        return "host"
    return "pod" if ipaddress.ip_address(src) in POD_CIDR else "external"


def _run(table, options, tests, overrides=None, skip=()):
    ev = NftEvaluator(table, options.node.local_ips)
    failures = []
    for t in tests:
        if ":" in t["sourceIP"] or ":" in t["destIP"] or t["name"] in skip:
            continue
        want_out, want_masq = t["output"], t.get("masq", False)
        if overrides and t["name"] in overrides:
            want_out = overrides[t["name"]].get("output", want_out)
            want_masq = overrides[t["name"]].get("masq", want_masq)
        flow = Flow(
            t["sourceIP"],
            t["destIP"],
            t.get("protocol", "tcp").lower(),
            40000,
            t["destPort"],
            _origin(t["sourceIP"]),
        )
        got = evaluate_nft_flow(ev, flow)
        if (got.kube_proxy_output(), got.masquerade) != (want_out, want_masq):
            failures.append(
                f"{t['name']}: got {got.kube_proxy_output()!r} "
                f"masq={got.masquerade}, want {want_out!r} masq={want_masq}"
            )
    assert not failures, "\n".join(failures)


def _env_for(ipt_fixture):
    """The nftables fake's environment, with the node name the shared inputs use."""
    return dict(nft_env(), nodeName=ipt_fixture["environment"]["nodeName"])


@pytest.mark.parametrize(
    "name", ["iptables-external-traffic-policy.json", "iptables-no-endpoints-and-itp.json"]
)
def test_shared_packet_flows(tmp_path, name):
    for table, options, tests in shared_flow_steps(name, tmp_path):
        _run(table, options, tests)


def test_internal_external_masquerade_variants(tmp_path):
    fx = fixture("iptables-internal-external-masquerade.json")
    localhost = {t["name"] for t in fx["packetTests"] if t["sourceIP"].startswith("127.")}
    for variant in fx["optionVariants"]:
        options = options_for(
            _env_for(fx),
            tmp_path,
            masquerade_all=variant["masqueradeAll"],
            detector=variant["localDetector"],
        )
        table = compile_nftables(
            view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"]),
            service_cidrs=SERVICE_CIDRS,
        )
        _run(table, options, fx["packetTests"], variant["overrides"], skip=localhost)


def test_localhost_nodeports_never_work(tmp_path):
    """SPEC §4.2: the iptables mode accepts NodePorts on 127.0.0.1; nftables never does."""
    fx = fixture("iptables-internal-external-masquerade.json")
    options = options_for(_env_for(fx), tmp_path)
    table = compile_nftables(
        view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"]),
        service_cidrs=SERVICE_CIDRS,
    )
    cases = [
        dict(t, output="", masq=False)
        for t in fx["packetTests"]
        if t["sourceIP"].startswith("127.")
    ]
    assert cases and all(
        fx_case["output"] for fx_case in fx["packetTests"] if fx_case["sourceIP"].startswith("127.")
    )
    _run(table, options, cases)


def _svc(ns, name, cluster_ip, ports, **spec):
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": dict(clusterIP=cluster_ip, ports=ports, **spec),
        **({"status": spec.pop("status")} if "status" in spec else {}),
    }


def _slice(ns, svc, endpoints, ports):
    return {
        "metadata": {
            "namespace": ns,
            "name": f"{svc}-1",
            "labels": {"kubernetes.io/service-name": svc},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def _p(name, src, dst, port, output, masq=False, protocol="TCP"):
    return {
        "name": name,
        "sourceIP": src,
        "destIP": dst,
        "destPort": port,
        "output": output,
        "masq": masq,
        "protocol": protocol,
    }


def test_cluster_ip_general(tmp_path):
    """TestClusterIPGeneral: protocols, target ports, REJECT for a ClusterIP's undefined
    port, DROP for an unallocated address in the service CIDR."""
    options = options_for(nft_env(), tmp_path)
    services = [
        _svc("ns1", "svc1", "172.30.0.41", [{"name": "http", "port": 80, "protocol": "TCP"}]),
        _svc(
            "ns2",
            "svc2",
            "172.30.0.42",
            [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
                {"name": "dns-sctp", "port": 53, "protocol": "SCTP"},
            ],
        ),
    ]
    slices = [
        _slice(
            "ns1",
            "svc1",
            [{"addresses": ["10.180.0.1"], "nodeName": "test-node"}],
            [{"name": "http", "port": 80, "protocol": "TCP"}],
        ),
        _slice(
            "ns2",
            "svc2",
            [
                {"addresses": ["10.180.0.1"], "nodeName": "test-node"},
                {"addresses": ["10.180.2.1"], "nodeName": "node2"},
            ],
            [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "https", "port": 8443, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
                {"name": "dns-sctp", "port": 53, "protocol": "SCTP"},
            ],
        ),
    ]
    table = compile_nftables(view_of(options, services, slices), service_cidrs=SERVICE_CIDRS)
    _run(
        table,
        options,
        [
            _p("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
            _p("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
            _p(
                "clusterIP with multiple endpoints",
                "10.180.0.2",
                "172.30.0.42",
                80,
                "10.180.0.1:80, 10.180.2.1:80",
            ),
            _p(
                "clusterIP with TargetPort",
                "10.180.0.2",
                "172.30.0.42",
                443,
                "10.180.0.1:8443, 10.180.2.1:8443",
            ),
            _p(
                "same port (TCP)",
                "10.180.0.2",
                "172.30.0.42",
                53,
                "10.180.0.1:5353, 10.180.2.1:5353",
            ),
            _p(
                "same port (UDP)",
                "10.180.0.2",
                "172.30.0.42",
                53,
                "10.180.0.1:53, 10.180.2.1:53",
                protocol="UDP",
            ),
            _p(
                "same port (SCTP)",
                "10.180.0.2",
                "172.30.0.42",
                53,
                "10.180.0.1:53, 10.180.2.1:53",
                protocol="SCTP",
            ),
            _p(
                "TCP-only port does not match UDP traffic",
                "10.180.0.2",
                "172.30.0.42",
                80,
                "REJECT",
                protocol="UDP",
            ),
            _p("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "REJECT"),
            _p("packet to unallocated cluster ip", "10.180.0.2", "172.30.0.50", 80, "DROP"),
        ],
    )


def test_load_balancer_source_ranges(tmp_path):
    """TestLoadBalancer: LoadBalancerSourceRanges drop before DNAT, NodePorts bypass them,
    and a range holding the node IP also admits the LB IPs themselves."""
    options = options_for(nft_env(), tmp_path)
    services = [
        _svc(
            "ns1",
            "svc1",
            "172.30.0.41",
            [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            type="LoadBalancer",
            loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}},
        )
    ]
    slices = [
        _slice(
            "ns1",
            "svc1",
            [{"addresses": ["10.180.0.1"]}],
            [{"name": "p80", "port": 80, "protocol": "TCP"}],
        )
    ]
    table = compile_nftables(view_of(options, services, slices), service_cidrs=SERVICE_CIDRS)
    ep = "10.180.0.1:80"
    _run(
        table,
        options,
        [
            _p("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, ep),
            _p("external to nodePort", "203.0.113.2", "192.168.0.2", 3001, ep, True),
            _p(
                "nodePort bypasses LoadBalancerSourceRanges",
                "203.0.113.130",
                "192.168.0.2",
                3001,
                ep,
                True,
            ),
            _p("accepted external to LB1", "203.0.113.2", "1.2.3.4", 80, ep, True),
            _p("accepted external to LB2", "203.0.113.2", "5.6.7.8", 80, ep, True),
            _p("blocked external to LB1", "203.0.113.130", "1.2.3.4", 80, "DROP"),
            _p("blocked external to LB2", "203.0.113.130", "5.6.7.8", 80, "DROP"),
            _p(
                "pod to LB1 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "DROP",
            ),
            _p(
                "pod to LB2 (blocked by LoadBalancerSourceRanges)",
                "10.0.0.2",
                "5.6.7.8",
                80,
                "DROP",
            ),
            _p(
                "node to LB1 (allowed by LoadBalancerSourceRanges)",
                "192.168.0.2",
                "1.2.3.4",
                80,
                ep,
                True,
            ),
            _p(
                "node to LB2 (allowed by LoadBalancerSourceRanges)",
                "192.168.0.2",
                "5.6.7.8",
                80,
                ep,
                True,
            ),
            _p(
                "same node to LB1, SNATted to LB1 (implicitly allowed)",
                "1.2.3.4",
                "1.2.3.4",
                80,
                ep,
                True,
            ),
            _p(
                "same node to LB2, SNATted to LB2 (implicitly allowed)",
                "5.6.7.8",
                "5.6.7.8",
                80,
                ep,
                True,
            ),
        ],
    )


@pytest.mark.parametrize(
    "addresses, alt_accepted",
    [(None, False), (["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], True)],
)
def test_node_ports(tmp_path, addresses, alt_accepted):
    """TestNodePorts (IPv4 cases): nodePortAddresses select the addresses NodePorts answer on."""
    options = options_for(nft_env(), tmp_path, node_port_addresses=addresses)
    services = [
        _svc(
            "ns1",
            "svc1",
            "172.30.0.41",
            [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            type="NodePort",
        )
    ]
    slices = [
        _slice(
            "ns1",
            "svc1",
            [{"addresses": ["10.180.0.1"]}, {"addresses": ["10.180.2.1"], "nodeName": "test-node"}],
            [{"name": "p80", "port": 80, "protocol": "TCP"}],
        )
    ]
    table = compile_nftables(view_of(options, services, slices), service_cidrs=SERVICE_CIDRS)
    both = "10.180.0.1:80, 10.180.2.1:80"
    _run(
        table,
        options,
        [
            _p("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both),
            _p("external to nodePort", "203.0.113.2", "192.168.0.2", 3001, both, True),
            _p("node to nodePort", "192.168.0.2", "192.168.0.2", 3001, both, True),
            _p(
                "alt node IP",
                "203.0.113.2",
                "192.168.1.2",
                3001,
                both if alt_accepted else "",
                alt_accepted,
            ),
        ],
    )


def test_trace_steps_and_cost(tmp_path):
    """The evaluator reports each rule visited, matched or not, and the lookups made."""
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    table = compile_nftables(
        view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"]),
        service_cidrs=SERVICE_CIDRS,
    )
    ev = NftEvaluator(table, options.node.local_ips)
    out = evaluate_nft_flow(ev, Flow("10.0.0.2", "172.30.0.44", "tcp", 40000, 80, "pod"))
    assert [c[0] for c in out.candidates] == ["10.180.0.4:80", "10.180.0.5:80"]
    assert [round(c[1], 9) for c in out.candidates] == [0.5, 0.5]
    b = out.branches[0]
    chains = [s[1] for s in b.steps]
    assert chains[:2] == ["filter-prerouting-pre-dnat", "firewall-check"]
    assert "services" in chains and "service-LAUZTJTB-ns4/svc4/tcp/p80" in chains
    firewall = next(s for s in b.steps if s[1] == "firewall-check")
    assert firewall[4] is False  # no firewall-ips element for this destination
    assert b.lookups >= 4 and b.rules_evaluated == len(b.steps)
