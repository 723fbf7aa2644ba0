"""Property: on random synthetic clusters the nftables and iptables modes, each through its
own reference evaluator (iptables via Dataplane.trace), send every first packet to the same
endpoints with the same probabilities and masquerade, and drop/reject the same packets,
except where kube-proxy's two modes are known to differ: a ClusterIP's undefined port is
REJECTed and an unallocated address of the service CIDR DROPped by nftables, while iptables
lets both through untouched (SPEC §4.5); for a service with no endpoints, the node's own
connections to its external or load-balancer IPs are REJECTed by nftables (filter-output
jumps to service-endpoints-check) but not by iptables (OUTPUT does not jump to
KUBE-EXTERNAL-SERVICES, SPEC §2.1); and nftables applies loadBalancerSourceRanges (DROP)
even then, where iptables has no KUBE-FW chain without endpoints and REJECTs (SPEC §4.4)."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, synth
from kproxy_emu.dataplane.dataplane import resolve_node
from kproxy_emu.dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
from kproxy_emu.dataplane.reference import Flow
from kproxy_emu.modes.nftables import NftProxier, service_cidrs_for
from kproxy_emu.proxy import ProxyOptions, ProxyView
from kproxy_emu.proxy.view import categorize_endpoints

CLUSTER_CIDR = "10.0.0.0/8"
POD, EXTERNAL = "10.99.0.7", "203.0.113.9"


def _summary(candidates, outcomes):
    dnat = frozenset((ep, round(p, 6), m) for ep, p, m in candidates)
    other = frozenset(v for v, d in outcomes if not d)
    return dnat, other


def _flows(view, cluster_ips, service_cidrs, node_ip):
    """(flow, known difference) pairs: every way into every service port."""
    out = []
    node = view.options.node
    for sp in view.service_ports:
        proto = sp.proto
        no_endpoints = not categorize_endpoints(sp, node.name, node.zone).has_any
        srcs = [(POD, "pod"), (EXTERNAL, "external"), (node_ip, "host")]
        if sp.endpoints:
            srcs.append((sp.endpoints[0].ip, "pod"))  # hairpin
        for src, origin in srcs:
            out.append((Flow(src, sp.cluster_ip, proto, 40000, sp.port, origin), None))
            if sp.node_port:
                out.append((Flow(src, node_ip, proto, 40000, sp.node_port, origin), None))
            for ip in sp.external_ips + sp.lb_ips:
                out.append(
                    (
                        Flow(src, ip, proto, 40000, sp.port, origin),
                        _no_endpoint_difference(sp, ip, src, origin, node_ip)
                        if no_endpoints
                        else None,
                    )
                )
        for cidr in sp.source_ranges[:1]:
            inside = str(next(ipaddress.ip_network(cidr).hosts(), ipaddress.ip_network(cidr)[0]))
            for ip in sp.lb_ips:
                out.append(
                    (
                        Flow(inside, ip, proto, 40000, sp.port, "external"),
                        _no_endpoint_difference(sp, ip, inside, "external", node_ip)
                        if no_endpoints
                        else None,
                    )
                )
        used = {(p.cluster_ip, p.proto, p.port) for p in view.service_ports}
        wrong = sp.port % 65535 + 1
        if (sp.cluster_ip, proto, wrong) not in used:
            out.append((Flow(POD, sp.cluster_ip, proto, 40000, wrong, "pod"), ("REJECT", "ACCEPT")))
    for cidr in service_cidrs:
        for host in ipaddress.ip_network(cidr).hosts():
            if str(host) not in cluster_ips:
                out.append((Flow(POD, str(host), "tcp", 40000, 80, "pod"), ("DROP", "ACCEPT")))
                break
    return out


def _in(ip, cidrs):
    return any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in cidrs)


def _no_endpoint_difference(sp, ip, src, origin, node_ip):
    """(nftables verdict, iptables verdict) for an external/LB IP of an endpointless service."""
    ipt = "ACCEPT" if origin == "host" else "REJECT"
    allowed = _in(src, sp.source_ranges) or (_in(node_ip, sp.source_ranges) and src in sp.lb_ips)
    nft = "DROP" if ip in sp.lb_ips and sp.source_ranges and not allowed else "REJECT"
    return (nft, ipt) if nft != ipt else None


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), services=st.integers(3, 12))
def test_modes_agree_on_endpoints_and_masquerade(seed, services):
    cluster = synth.cluster(
        services=services,
        endpoints="uniform:0-4",
        nodes=3,
        seed=seed,
        etp_local_share=0.4,
        itp_local_share=0.2,
        terminating_share=0.1,
        not_ready_share=0.1,
    )
    node = resolve_node(cluster)
    ipt = Dataplane(
        cluster, mode="iptables", node_config=node, cluster_cidr=CLUSTER_CIDR, conntrack=False
    )
    options = ProxyOptions.build(node, cluster_cidr=CLUSTER_CIDR)
    view = ProxyView(cluster, options)
    cidrs = service_cidrs_for(cluster)
    proxier = NftProxier(options, cidrs)
    assert proxier.sync(view).ok
    ev = NftEvaluator(proxier.table, options.node.local_ips)
    cluster_ips = {sp.cluster_ip for sp in view.service_ports}
    checked = differences = 0
    for flow, known in _flows(view, cluster_ips, cidrs, node.primary_ip):
        got = evaluate_nft_flow(ev, flow)
        nft = _summary(got.candidates, [(b.verdict or "ACCEPT", b.dnat) for b in got.branches])
        trace = ipt.trace(
            f"{flow.proto} {flow.src}:{flow.sport} -> {flow.dst}:{flow.dport}", flow.origin
        )
        ip = _summary(
            [(c["endpoint"], c["probability"], c["masquerade"]) for c in trace["candidates"]],
            [(o["verdict"], o["dnat"]) for o in trace["outcomes"]],
        )
        if known is None:
            assert nft == ip, (flow, nft, ip)
            checked += 1
        else:  # a known difference, asserted as one
            assert nft == (frozenset(), frozenset({known[0]})), (flow, nft)
            assert ip == (frozenset(), frozenset({known[1]})), (flow, ip)
            differences += 1
    assert checked and differences
