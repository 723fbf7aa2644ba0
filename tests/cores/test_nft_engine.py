"""The Cython nftables engine (cext/nftmaps.pyx over nft_lowering) against the nftables
reference evaluator and kube-proxy's own packet-flow expectations: same verdicts, DNAT
destinations among the reference's candidates, the same masquerade decision; numgen's
uniform choice; conntrack and session affinity over emulated time; determinism; errors."""

import types

import numpy as np
import pytest

from kproxy_emu import packets, synth
from kproxy_emu._cext import nftmaps, pipeline
from kproxy_emu._cext.conntrack import ConntrackTable
from kproxy_emu.dataplane import nft_lowering as nl
from kproxy_emu.dataplane.dataplane import resolve_node
from kproxy_emu.dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
from kproxy_emu.dataplane.reference import Flow
from kproxy_emu.errors import InputError
from kproxy_emu.modes.nftables import compile_nftables
from kproxy_emu.netfilter.nft import NftChain, NftRule, NftRuleset, NftSet
from kproxy_emu.netfilter.nft_text import parse_list
from kproxy_emu.proxy import ProxyOptions, ProxyView
from tests.helpers.fixtures import FIXTURES
from tests.helpers.nftables_env import (
    SERVICE_CIDRS,
    fixture,
    nft_env,
    options_for,
    shared_flow_steps,
    view_of,
)
from tests.modes.test_nftables_packets import _env_for, _origin, _slice, _svc

ACTIONS = {"DROP": packets.Action.DROP, "REJECT": packets.Action.REJECT}


class Engine:
    """What the Dataplane keeps per node for the engine: the lowered table, the random
    stream, the dynamic-set table and (optionally) conntrack."""

    def __init__(self, table, options, seed=1, conntrack=False, dyn_slots=1 << 12):
        self.table, self.options = table, options
        self.low = nl.lower_nft(table)
        self.rng = pipeline.Rng(seed)
        self.ct = ConntrackTable(1 << 16, 7) if conntrack else None
        self.dyn = (np.zeros(dyn_slots, np.uint64), np.zeros(dyn_slots)) if dyn_slots else None
        self.local = np.array(
            [packets.ip_to_u32(ip) for ip in options.node.local_ips if ":" not in ip], np.uint32
        )
        self.engine = nftmaps.NftEngine(
            *self.low.engine_arrays(),
            self.local,
            packets.ip_to_u32(options.node.primary_ip),
            dyn=self.dyn,
        )

    def process(self, batch):
        out = packets.empty_verdicts(len(batch))
        pipeline.run(self.engine, batch, out, self.ct, self.rng)
        assert not self.engine.dyn_full
        return out

    def endpoint(self, v):
        return self.low.endpoints[int(v["endpoint"])] if v["endpoint"] >= 0 else None


def agree(engine, batch):
    """Every engine verdict is one of the reference's outcomes for the flow's first packet."""
    verdicts = engine.process(batch)
    ev = NftEvaluator(engine.table, engine.options.node.local_ips)
    problems = []
    for p, v in zip(batch, verdicts):
        flow = Flow.from_packet(p)
        outcome = evaluate_nft_flow(ev, flow)
        action = int(v["action"])
        ok = False
        for b in outcome.branches:
            if b.verdict in ("DROP", "REJECT"):
                ok = action == ACTIONS[b.verdict]
            elif b.dnat:
                ok = (
                    action == packets.Action.DNAT
                    and packets.dnat_text(v) == b.dnat
                    and engine.endpoint(v) == b.dnat
                    and bool(v["snat_ip"]) == b.snat
                )
            else:
                ok = (
                    action == packets.Action.ACCEPT
                    and not v["dnat_ip"]
                    and bool(v["snat_ip"]) == b.snat
                )
            if ok:
                break
        if not ok:
            problems.append(
                f"{flow}: engine {v}, reference {outcome.kube_proxy_output()!r} "
                f"masq={outcome.masquerade}"
            )
    assert not problems, "\n".join(problems[:10])
    return verdicts


def kube_proxy_expectations(engine, tests, overrides=None, skip=(), draws=64):
    """kube-proxy's packetFlowTest tables on the engine: over ``draws`` new flows, the set of
    endpoints reached is the expected output, or every packet gets the expected verdict."""
    failures = []
    for t in tests:
        if ":" in t["sourceIP"] + t["destIP"] or t["name"] in skip:
            continue
        want_out, want_masq = t["output"], t.get("masq", False)
        if overrides and t["name"] in overrides:
            want_out = overrides[t["name"]].get("output", want_out)
            want_masq = overrides[t["name"]].get("masq", want_masq)
        proto = t.get("protocol", "tcp").lower()
        lines = [
            f"{proto} {t['sourceIP']}:{40000 + i} -> {t['destIP']}:{t['destPort']}"
            for i in range(draws)
        ]
        v = engine.process(packets.from_strings(lines, origin=_origin(t["sourceIP"])))
        actions = set(v["action"].tolist())
        if want_out in ("DROP", "REJECT"):
            got_ok = actions == {ACTIONS[want_out]}
        elif want_out == "":
            got_ok = actions == {packets.Action.ACCEPT} and not v["dnat_ip"].any()
        else:
            reached = {packets.dnat_text(x) for x in v}
            got_ok = actions == {packets.Action.DNAT} and reached == set(want_out.split(", "))
        masq = bool(v["snat_ip"].any())
        if not got_ok or masq != want_masq or (v["snat_ip"].all() != masq):
            failures.append(
                f"{t['name']}: got {sorted({packets.dnat_text(x) for x in v} - {None})} "
                f"actions {actions} masq={masq}, want {want_out!r} masq={want_masq}"
            )
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- layout
def test_dtypes_match_the_c_structs():
    layout = nftmaps.layout()
    for cname, dtype in (
        ("expr_t", nl.EXPR_DTYPE),
        ("base_t", nl.BASE_DTYPE),
        ("nset_t", nl.SET_DTYPE),
        ("slot_t", nl.SLOT_DTYPE),
        ("interval_t", nl.INTERVAL_DTYPE),
        ("cell_t", nl.CELL_DTYPE),
    ):
        assert layout[cname]["itemsize"] == dtype.itemsize, cname
        for name, offset in layout[cname]["fields"].items():
            assert dtype.fields[name][1] == offset, (cname, name)


# ---------------------------------------------------------------------- kube-proxy's tables
@pytest.mark.parametrize(
    "name", ["iptables-external-traffic-policy.json", "iptables-no-endpoints-and-itp.json"]
)
def test_shared_packet_flows(tmp_path, name):
    for table, options, tests in shared_flow_steps(name, tmp_path):
        kube_proxy_expectations(Engine(table, options), tests)


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
        kube_proxy_expectations(
            Engine(table, options), fx["packetTests"], variant["overrides"], skip=localhost
        )


def test_cluster_ip_reject_drop_and_load_balancer_source_ranges(tmp_path):
    """TestClusterIPGeneral / TestLoadBalancer cases: REJECT for a ClusterIP's undefined
    port, DROP for an unallocated service address, LoadBalancerSourceRanges before DNAT."""
    options = options_for(nft_env(), tmp_path)
    services = [
        _svc(
            "ns1",
            "svc1",
            "172.30.0.41",
            [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            type="LoadBalancer",
            loadBalancerSourceRanges=["192.168.0.0/24", "203.0.113.0/25"],
            status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
        ),
        _svc("ns2", "svc2", "172.30.0.42", [{"name": "dns", "port": 53, "protocol": "UDP"}]),
    ]
    slices = [
        _slice(
            "ns1",
            "svc1",
            [{"addresses": ["10.180.0.1"]}],
            [{"name": "p80", "port": 80, "protocol": "TCP"}],
        ),
        _slice(
            "ns2",
            "svc2",
            [{"addresses": ["10.180.0.2"]}, {"addresses": ["10.180.0.3"]}],
            [{"name": "dns", "port": 53, "protocol": "UDP"}],
        ),
    ]
    table = compile_nftables(view_of(options, services, slices), service_cidrs=SERVICE_CIDRS)
    ep = "10.180.0.1:80"

    def p(name, src, dst, port, output, masq=False, protocol="TCP"):
        return {
            "name": name,
            "sourceIP": src,
            "destIP": dst,
            "destPort": port,
            "output": output,
            "masq": masq,
            "protocol": protocol,
        }

    kube_proxy_expectations(
        Engine(table, options),
        [
            p("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, ep),
            p(
                "udp to two endpoints",
                "10.0.0.2",
                "172.30.0.42",
                53,
                "10.180.0.2:53, 10.180.0.3:53",
                protocol="UDP",
            ),
            p("undefined port", "10.0.0.2", "172.30.0.41", 443, "REJECT"),
            p("wrong protocol", "10.0.0.2", "172.30.0.42", 53, "REJECT"),
            p("unallocated cluster IP", "10.0.0.2", "172.30.0.50", 80, "DROP"),
            p("outside the service CIDR", "10.0.0.2", "8.8.8.8", 80, ""),
            p("external to nodePort", "203.0.113.2", "192.168.0.2", 3001, ep, True),
            p("accepted external to LB", "203.0.113.2", "1.2.3.4", 80, ep, True),
            p("blocked external to LB", "203.0.113.130", "1.2.3.4", 80, "DROP"),
            p("node to LB", "192.168.0.2", "1.2.3.4", 80, ep, True),
            p("hairpin", "10.180.0.1", "172.30.0.41", 80, ep, True),
        ],
    )


def test_overall_fixture_agrees_with_the_reference(tmp_path):
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    table = compile_nftables(
        view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"]),
        service_cidrs=SERVICE_CIDRS,
    )
    lines, origins = [], []
    for svc in fx["input"]["services"]:
        spec = svc["spec"]
        dsts = (
            [spec.get("clusterIP")]
            + spec.get("externalIPs", [])
            + [
                i["ip"]
                for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])
                if "ip" in i
            ]
        )
        for port in spec.get("ports", []):
            for dst in dsts:
                if dst and ":" not in dst and dst != "None":
                    for src in ("10.0.0.2", "203.0.113.9", "192.168.0.2", "10.180.0.4"):
                        lines.append(
                            f"{port.get('protocol', 'TCP').lower()} {src}:40000 -> "
                            f"{dst}:{port['port']}"
                        )
                        origins.append(_origin(src))
            if port.get("nodePort"):
                for src in ("203.0.113.9", "10.0.0.2", "192.168.0.2"):
                    lines.append(
                        f"{port.get('protocol', 'TCP').lower()} {src}:40000 -> "
                        f"192.168.0.2:{port['nodePort']}"
                    )
                    origins.append(_origin(src))
    assert len(lines) > 20
    batch = packets.from_strings(lines * 8)
    batch["origin"] = [packets.Origin[o.upper()] for o in origins * 8]
    compiled = agree(Engine(table, options), batch)
    # a real node's ``nft list ruleset`` of the same rules (nft's own spelling: meta mark |,
    # &, ^, hex marks) lowers and runs the same way
    live = parse_list((FIXTURES / "live" / "nftables-overall.nft-list-ruleset.txt").read_text())
    listed = agree(Engine(live, options), batch)
    assert (listed["action"] == compiled["action"]).all()
    assert (listed["snat_ip"] == compiled["snat_ip"]).all()


# ---------------------------------------------------------------------- synthetic clusters
def _synth_engine(n, seed, **kw):
    cluster = synth.cluster(n, seed=seed, **kw)
    options = ProxyOptions.build(resolve_node(cluster), None, cluster_cidr="10.0.0.0/8")
    view = ProxyView(cluster, options)
    table = compile_nftables(view, service_cidrs=["172.16.0.0/12"])
    return cluster, options, table


@pytest.mark.parametrize("seed", range(3))
def test_random_clusters_and_traffic_agree_with_the_reference(seed):
    cluster, options, table = _synth_engine(120, seed, endpoints="uniform:0-5", nodes=3)
    traffic = packets.synth(cluster, 600, seed=seed, new_flow_share=1.0)
    # and addresses no service holds: inside the service CIDR (DROP) and outside it
    # ICMP to service addresses (REJECTed at ClusterIPs: no port of theirs matches)
    vips = sorted({str(packets.u32_to_ip(int(ip))) for ip in traffic["dst_ip"][:40]})
    extra = packets.from_strings(
        [f"tcp 10.0.0.5:4000{i} -> 172.31.255.{i}:80" for i in range(5)]
        + ["udp 10.0.0.5:5353 -> 8.8.8.8:53"]
        + [f"icmp 10.0.0.5 -> {ip}" for ip in vips],
        origin="pod",
    )
    agree(Engine(table, options, seed=seed + 1), np.concatenate([traffic, extra]))


@pytest.mark.parametrize(
    "extra",
    [
        {"detectLocalMode": "BridgeInterface", "detectLocal": {"bridgeInterface": "cni0"}},
        {"detectLocalMode": "InterfaceNamePrefix", "detectLocal": {"interfaceNamePrefix": "veth"}},
        {"nftables": {"masqueradeAll": True}, "nodePortAddresses": ["192.168.0.0/16"]},
    ],
    ids=["bridge", "prefix", "masquerade-all"],
)
def test_node_options_agree_with_the_reference(tmp_path, extra):
    """iifname detectors, masqueradeAll and nodePortAddresses lower and run as the
    reference evaluates them."""
    import yaml

    from kproxy_emu.model.config import load_kube_proxy_config

    path = tmp_path / "kube-proxy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "nftables",
                **extra,
            }
        )
    )
    cluster = synth.cluster(150, seed=3, endpoints="uniform:0-5", nodes=3)
    options = ProxyOptions.build(resolve_node(cluster), load_kube_proxy_config(path))
    table = compile_nftables(ProxyView(cluster, options), service_cidrs=["172.16.0.0/12"])
    traffic = packets.synth(
        cluster.packet_targets(node_ips=options.node.local_ips), 1000, seed=5, new_flow_share=1.0
    )
    v = agree(Engine(table, options), traffic)
    assert (v["action"] == packets.Action.DNAT).any() and v["snat_ip"].any()


def _one_service(endpoints=4, **kw):
    cluster = synth.cluster(
        1,
        endpoints=endpoints,
        seed=2,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        affinity_share=0,
        prefer_close_share=0,
        **kw,
    )
    svc = next(iter(cluster.services.values()))
    return cluster, svc, f"{svc.cluster_ip}:{svc.ports[0].port}"


def _engine_for(cluster, **kw):
    options = ProxyOptions.build(resolve_node(cluster), None, cluster_cidr="10.0.0.0/8")
    return Engine(compile_nftables(ProxyView(cluster, options)), options, **kw)


def test_numgen_choice_is_uniform():
    cluster, _svc, vip = _one_service(endpoints=5)
    engine = _engine_for(cluster, seed=9)
    n = 50_000
    lines = [f"tcp 10.0.{i >> 14}.7:{1024 + (i & 16383)} -> {vip}" for i in range(n)]
    v = engine.process(packets.from_strings(lines, origin="pod"))
    assert (v["action"] == packets.Action.DNAT).all()
    counts = np.bincount(v["endpoint"], minlength=5)
    assert len(counts) == 5
    chi2 = (((counts - n / 5) ** 2) / (n / 5)).sum()
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001
    # every DNAT destination is the endpoint the verdict names
    assert {packets.dnat_text(x) for x in v[:200]} == {
        engine.low.endpoints[e] for e in v["endpoint"][:200]
    }


def test_same_seed_same_verdicts_different_seed_different():
    cluster, options, table = _synth_engine(50, 4)
    traffic = packets.synth(cluster, 5000, seed=1, new_flow_share=1.0)
    a = Engine(table, options, seed=1).process(traffic)
    b = Engine(table, options, seed=1).process(traffic)
    c = Engine(table, options, seed=2).process(traffic)
    assert (a == b).all()  # fields, not bytes: verdict_t has padding
    assert not (a == c).all()
    # the stream continues across calls: two halves equal one batch
    e = Engine(table, options, seed=1)
    halves = np.concatenate([e.process(traffic[:2500]), e.process(traffic[2500:])])
    assert (halves == a).all()


def test_cost_is_lookups_not_rules():
    """nftables finds a service with map lookups: the rules walked and the lookups made do
    not depend on how many services the table holds."""
    costs = []
    for n in (20, 400):
        cluster = synth.cluster(
            n,
            endpoints=2,
            seed=3,
            type_mix={"ClusterIP": 1},
            ports_per_service=(1.0,),
            itp_local_share=0,
            affinity_share=0,
            terminating_share=0,
            not_ready_share=0,
        )
        engine = _engine_for(cluster)
        svc = list(cluster.services.values())[-1]
        line = (
            f"{svc.ports[0].protocol.lower()} 10.0.0.7:40000 -> "
            f"{svc.cluster_ip}:{svc.ports[0].port}"
        )
        v = engine.process(packets.from_strings([line] * 50, origin="pod"))
        assert (v["action"] == packets.Action.DNAT).all()
        costs.append((int(v["rules"].max()), int(v["probes"].max())))
    assert costs[0][0] == costs[1][0]
    assert costs[1][1] <= costs[0][1] + 3  # a few extra collision probes at most
    assert 0 < costs[0][0] < 30 and costs[0][1] >= 4


def test_fast_parse_agrees_with_parse_rule():
    """The lowering's shortcut for kube-proxy's per-endpoint rule shapes gives exactly the
    items of the general parser, on whole tables (and declines anything else)."""
    from kproxy_emu.netfilter.nft import parse_rule

    _cluster, _options, table = _synth_engine(150, 5, endpoints="uniform:0-12", affinity_share=0.3)
    fast = 0
    for chain in table.chains.values():
        for r in chain.rules:
            items = nl.fast_parse(r.full_text)
            if items is not None:
                fast += 1
                assert items == parse_rule(r.full_text)[0], r.full_text
    assert fast > table.rule_count / 2
    # and the endpoint rules emitted directly give the rows of the general lowering
    a, b = nl.lower_nft(table), nl.lower_nft(table, direct=False)
    for name in (
        "exprs",
        "sets",
        "slots",
        "intervals",
        "cells",
        "hook_off",
        "bases",
        "chain_start",
        "rule_start",
    ):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and (x == y).all(), name
    assert a.endpoints == b.endpoints and a.dynamic_sets == b.dynamic_sets
    for text in (
        'ip saddr 10.0.0.1 jump x comment "c"',
        "ip saddr != 10.0.0.1 jump x",
        "meta l4proto tcp dnat to 10.0.0.1",
        "numgen inc mod 2 vmap { 0 : goto a }",
    ):
        assert nl.fast_parse(text) is None


def test_direct_lowering_agrees_on_odd_texts():
    """nftmaps.lower_rules takes only the exact endpoint shapes (and the builder the exact
    numgen dispatch): near misses lower the general way, to the same rows, or fail with
    the same error."""
    texts = [
        "ip saddr 10.0.0.1 jump sub",
        "ip saddr 010.0.0.1 jump sub",  # inet_pton refuses a leading zero
        "ip saddr 10.0.0.256 jump sub",
        "ip saddr 10.0.0.0/8 jump sub",
        "ip saddr 10.0.0 jump sub",
        "ip saddr  10.0.0.1 jump sub",
        "ip saddr 10.0.0.1 jump sub ",
        "ip saddr 10.0.0.1 goto sub",
        "ip saddr 10.0.0.1 jump nowhere",
        "ip saddr 10.0.0.1 jump süb",
        "meta l4proto tcp dnat to 10.0.0.1:80",
        "meta l4proto udp dnat to 10.0.0.1:080",
        "meta l4proto sctp dnat to 10.0.0.1:65535",
        "meta l4proto tcp dnat to 10.0.0.1:65536",
        "meta l4proto tcp dnat to 10.0.0.1:",
        "meta l4proto tcp dnat to 10.0.0.1",
        "meta l4proto tcp dnat to 1.2.3.04:80",
        "meta l4proto icmp dnat to 10.0.0.1:80",
        "meta l4proto tcp dnat to 10.0.0.1:80 ",
        "numgen random mod 2 vmap { 0 : goto sub , 1 : goto süb }",
        "numgen random mod 2 vmap { 1 : goto sub , 0 : goto süb }",
        "numgen random mod 2 vmap { 0 : goto sub , 1 : goto nowhere }",
        "numgen random mod 02 vmap { 0 : goto sub , 1 : goto süb }",
        "numgen random mod 1 vmap { 0 : goto sub }",
        "numgen random mod 2 vmap { 0 : goto sub , 1 : goto sub , 2 : goto sub }",
        "numgen random mod 3 vmap { 0 : goto sub , 1 : goto sub }",
        "numgen random mod 2 vmap { 0 : goto sub ,  1 : goto sub }",
        "numgen random mod 2 vmap { 00 : goto sub , 1 : goto sub }",
        "numgen random mod 2 vmap { 0 : goto s€b , 1 : goto sub }",
        "numgen random mod 0 vmap { }",
        "numgen random mod 65537 vmap { 0 : goto sub }",
        "ip saddr 10.0.0.1 jump s€b",
    ]
    for text in texts:
        table = _table([("fwd", text), ("fwd", "drop")], chains=["sub", "süb", "s€b"])
        got = []
        for direct in (True, False):
            try:
                low = nl.lower_nft(table, direct=direct)
            except InputError as exc:
                got.append(("error", str(exc)))
            else:
                got.append(
                    (
                        low.exprs.tobytes(),
                        low.cells.tobytes(),
                        low.rule_start.tolist(),
                        low.endpoints,
                    )
                )
        assert got[0] == got[1], text


# ---------------------------------------------------------------------- conntrack
def test_conntrack_established_flow_keeps_its_endpoint_and_replies_are_un_natted():
    cluster, _svc, vip = _one_service(endpoints=3)
    engine = _engine_for(cluster, seed=3, conntrack=True)
    node = engine.options.node.primary_ip
    first = engine.process(packets.from_strings([f"tcp {node}:40000 -> {vip}"]))[0]
    assert first["action"] == packets.Action.DNAT and not first["ct_hit"]
    assert first["snat_ip"] == packets.ip_to_u32(node)  # host traffic: masqueraded
    endpoint = engine.endpoint(first)
    assert packets.dnat_text(first) == endpoint
    # the SYN/ACK from the endpoint comes back from the service address to the client
    reply = engine.process(
        packets.from_strings([f"tcp {endpoint} -> {node}:{first['snat_port']} flags=SA"], ts=0.5)
    )[0]
    assert reply["ct_hit"] and reply["endpoint"] == -1
    assert f"{packets.u32_to_ip(int(reply['snat_ip']))}:{reply['snat_port']}" == vip
    later = engine.process(
        packets.from_strings([f"tcp {node}:40000 -> {vip} flags=A"] * 20, ts=1.0)
    )
    assert later["ct_hit"].all() and {packets.dnat_text(v) for v in later} == {endpoint}
    assert (later["rules"] < first["rules"]).all()  # a known flow skips the nat chains
    assert (later["probes"] > 0).all()


def test_conntrack_pod_flows_keep_their_endpoints_and_dropped_flows_are_not_kept():
    cluster, svc, vip = _one_service(endpoints=4)
    engine = _engine_for(cluster, seed=11, conntrack=True)
    syn = packets.from_strings(
        [f"tcp 10.0.1.{i}:40000 -> {vip}" for i in range(1, 101)], origin="pod"
    )
    first = engine.process(syn)
    assert len({packets.dnat_text(v) for v in first}) == 4 and not first["ct_hit"].any()
    # the handshake: SYN/ACKs from the endpoints come back un-NATed to the clients
    synack = packets.from_strings(
        [
            f"tcp {packets.dnat_text(v)} -> 10.0.1.{i}:40000 flags=SA"
            for i, v in enumerate(first, 1)
        ],
        ts=0.5,
        origin="pod",
    )
    replies = engine.process(synack)
    assert (
        replies["ct_hit"].all()
        and (replies["snat_ip"] == packets.ip_to_u32(svc.cluster_ip)).all()
        and not replies["dnat_ip"].any()
    )
    ack = syn.copy()
    ack["tcp_flags"] = packets.TcpFlag.ACK
    ack["ts"] = 1.0
    again = engine.process(ack)
    assert again["ct_hit"].all()
    assert [packets.dnat_text(v) for v in again] == [packets.dnat_text(v) for v in first]
    # an ACK before the SYN/ACK is INVALID (tcp_conntracks): no entry, so no NAT either
    early = packets.from_strings(
        [f"tcp 10.0.2.1:40000 -> {vip}", f"tcp 10.0.2.1:40000 -> {vip} flags=A"], origin="pod"
    )
    v = engine.process(early)
    assert v[0]["action"] == packets.Action.DNAT
    assert not v[1]["ct_hit"] and v[1]["action"] == packets.Action.ACCEPT and not v[1]["dnat_ip"]
    # a REJECTed flow (undefined port of the ClusterIP) leaves no conntrack entry
    bad = packets.from_strings([f"tcp 10.0.1.1:41000 -> {svc.cluster_ip}:1"], origin="pod")
    assert engine.process(bad)[0]["action"] == packets.Action.REJECT
    assert not engine.process(bad)[0]["ct_hit"]


def test_conntrack_nodeport_flow_from_outside_is_masqueraded_and_its_reply_restored():
    cluster = synth.cluster(
        1,
        endpoints=2,
        seed=2,
        type_mix={"NodePort": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        etp_local_share=0,
        affinity_share=0,
        prefer_close_share=0,
    )
    svc = next(iter(cluster.services.values()))
    engine = _engine_for(cluster, seed=4, conntrack=True)
    node = engine.options.node.primary_ip
    frontend = f"{node}:{svc.ports[0].node_port}"
    first = engine.process(
        packets.from_strings([f"tcp 203.0.113.9:50000 -> {frontend}"], origin="external")
    )[0]
    assert first["action"] == packets.Action.DNAT and first["snat_ip"] == packets.ip_to_u32(node)
    # the endpoint answers the node's masquerade address; the reply goes back to the client
    # from the NodePort
    reply = engine.process(
        packets.from_strings(
            [f"tcp {packets.dnat_text(first)} -> {node}:{first['snat_port']} flags=SA"],
            ts=0.1,
            origin="pod",
        )
    )[0]
    assert reply["ct_hit"] and packets.dnat_text(reply) == "203.0.113.9:50000"
    assert f"{packets.u32_to_ip(int(reply['snat_ip']))}:{reply['snat_port']}" == frontend
    assert reply["rules"] <= 3  # filter chains only, and their ct state new rules miss


# ---------------------------------------------------------------------- affinity
def test_client_ip_affinity_sticks_within_its_timeout_and_expires_after():
    cluster, svc, vip = _one_service(endpoints=3)
    svc.session_affinity, svc.affinity_timeout = "ClientIP", 10
    engine = _engine_for(cluster, seed=5)
    assert any(s.startswith("affinity-") for s in engine.low.dynamic_sets)
    clients = [f"10.1.0.{i}" for i in range(1, 41)]

    def choose(ts, port):
        v = engine.process(
            packets.from_strings([f"tcp {c}:{port} -> {vip}" for c in clients], ts=ts, origin="pod")
        )
        assert (v["action"] == packets.Action.DNAT).all()
        return [engine.endpoint(x) for x in v]

    first = choose(0.0, 40000)
    assert len(set(first)) > 1  # clients are spread over the endpoints
    assert choose(5.0, 40001) == first  # new flows, same endpoint per client
    assert choose(14.0, 40002) == first  # 9 s after the last use: still within 10 s
    later = choose(30.0, 40003)  # 16 s idle: the affinity entries have expired
    assert later != first
    assert choose(35.0, 40004) == later  # and the new choice sticks again


def test_without_a_dynamic_table_affinity_sets_stay_empty():
    cluster, svc, vip = _one_service(endpoints=3)
    svc.session_affinity, svc.affinity_timeout = "ClientIP", 10
    engine = _engine_for(cluster, seed=5, dyn_slots=0)
    v = engine.process(
        packets.from_strings(
            [f"tcp 10.1.0.1:{40000 + i} -> {vip}" for i in range(60)], origin="pod"
        )
    )
    assert len({packets.dnat_text(x) for x in v}) == 3


def test_a_full_dynamic_table_is_reported():
    cluster, svc, vip = _one_service(endpoints=3)
    svc.session_affinity, svc.affinity_timeout = "ClientIP", 10
    engine = _engine_for(cluster, seed=5, dyn_slots=4)
    batch = packets.from_strings(
        [f"tcp 10.1.0.{i}:40000 -> {vip}" for i in range(1, 4)], origin="pod"
    )
    engine.process(batch)  # three clients: three of the four slots
    more = packets.from_strings(
        [f"tcp 10.1.1.{i}:40000 -> {vip}" for i in range(1, 4)], origin="pod"
    )
    out = packets.empty_verdicts(len(more))
    pipeline.run(engine.engine, more, out, None, engine.rng)
    assert engine.engine.dyn_full and (out["action"] == packets.Action.DNAT).all()


def test_dynamic_set_ids_and_endpoints_are_stable_across_lowerings():
    cluster, svc, _vip = _one_service(endpoints=3)
    svc.session_affinity, svc.affinity_timeout = "ClientIP", 10
    options = ProxyOptions.build(resolve_node(cluster), None, cluster_cidr="10.0.0.0/8")
    table = compile_nftables(ProxyView(cluster, options))
    endpoints, dyn = ["1.1.1.1:1"], ["affinity-gone"]
    low = nl.lower_nft(table, endpoints, dyn)
    assert low.endpoints is endpoints and endpoints[0] == "1.1.1.1:1" and len(endpoints) == 4
    assert dyn[0] == "affinity-gone" and len(dyn) == 4
    again = nl.lower_nft(table, endpoints, dyn)
    assert again.endpoints == low.endpoints and again.dynamic_sets == low.dynamic_sets


# ---------------------------------------------------------------------- expressions
def _table(rules, sets=(), chains=()):
    """An ``ip kube-proxy`` table with a prerouting nat chain and a forward filter chain."""
    t = NftRuleset()
    t.exists = True
    t.chains["pre"] = NftChain("pre", "nat", "prerouting", -100)
    t.chains["fwd"] = NftChain("fwd", "filter", "forward", 0)
    t.chains["post"] = NftChain("post", "nat", "postrouting", 100)
    for name in chains:
        t.chains[name] = NftChain(name)
    for s in sets:
        t.sets[s.name] = s
    for chain, text in rules:
        t.chains[chain].rules.append(NftRule(chain, text))
    return t


def _run(table, lines, origin="pod", local=("192.168.0.2",), **kw):
    options = types.SimpleNamespace(
        node=types.SimpleNamespace(local_ips=list(local), primary_ip=local[0])
    )
    engine = Engine(table, options, **kw)
    return engine, engine.process(packets.from_strings(lines, origin=origin))


def test_expressions_compare_sets_intervals_marks_and_verdicts():
    from kproxy_emu.netfilter.nft import NftElement

    ports = NftSet("ports", "set", "inet_service", ("interval",))
    for k in ("80", "8000-8080"):
        ports.elements[(k,)] = NftElement((k,))
    nets = NftSet("nets", "set", "ipv4_addr", ("interval",))
    for k in ("10.1.0.0/16", "10.2.0.0/16", "10.3.3.3"):
        nets.elements[(k,)] = NftElement((k,))
    table = _table(
        [
            ("fwd", "th dport @ports ip saddr @nets drop"),
            ("fwd", "ip saddr 10.9.0.0/16 tcp dport != 22 reject"),
            ("fwd", "meta mark set mark or 0x10"),
            ("fwd", "mark and 0x10 == 0x10 jump sub"),
            ("sub", "ip daddr { 1.1.1.1, 2.2.2.2 } accept"),
            ("sub", "return"),
            ("fwd", "ip daddr 3.3.3.3 drop"),
            ("fwd", "ip daddr vmap { 20.0.0.0/8 : drop , 21.0.0.0-21.0.0.9 : accept }"),
            ("fwd", "ip daddr . th dport { 21.0.0.5 . 80 , 22.0.0.1 . 443 } reject"),
            ("post", "ip daddr 4.4.4.4 masquerade"),
            ("post", "ip daddr 22.0.0.1 snat to 1.2.3.4"),
        ],
        sets=[ports, nets],
        chains=["sub"],
    )
    _, v = _run(
        table,
        [
            "tcp 10.1.2.3:1 -> 9.9.9.9:80",  # drop: port and source in the sets
            "tcp 10.2.0.1:1 -> 9.9.9.9:8080",  # drop: port range
            "tcp 10.3.3.4:1 -> 9.9.9.9:80",  # source just outside 10.3.3.3: on to the next
            "tcp 10.9.0.1:1 -> 9.9.9.9:23",  # reject (tcp dport != 22)
            "udp 10.9.0.1:1 -> 9.9.9.9:23",  # tcp dport implies tcp: no reject
            "tcp 10.4.0.1:1 -> 1.1.1.1:23",  # accepted in sub: 3.3.3.3 rule not reached
            "tcp 10.4.0.1:1 -> 3.3.3.3:23",  # sub returns, then drop
            "tcp 10.4.0.1:1 -> 4.4.4.4:23",  # masquerade
            "tcp 10.4.0.1:1 -> 20.1.2.3:23",  # interval map: drop
            "tcp 10.4.0.1:1 -> 21.0.0.5:80",  # interval map: accept (the next rule not reached)
            "tcp 10.4.0.1:1 -> 21.0.0.10:80",  # outside both ranges: on to the next rule
            "tcp 10.4.0.1:1 -> 22.0.0.1:443",  # concatenated literal set: reject
            "tcp 10.4.0.1:1 -> 22.0.0.1:80",  # not in the set: SNAT in postrouting
        ],
    )
    A = packets.Action
    assert v["action"].tolist() == [
        A.DROP,
        A.DROP,
        A.ACCEPT,
        A.REJECT,
        A.ACCEPT,
        A.ACCEPT,
        A.DROP,
        A.ACCEPT,
        A.DROP,
        A.ACCEPT,
        A.ACCEPT,
        A.REJECT,
        A.ACCEPT,
    ]
    assert v["snat_ip"].tolist() == [0] * 7 + [packets.ip_to_u32("192.168.0.2")] + [0] * 4 + [
        packets.ip_to_u32("1.2.3.4")
    ]
    assert v["snat_port"][12] == 1  # the source port kept (no conntrack: nothing clashes)
    assert v["rules"][0] == 1 and v["rules"][6] == 7


def test_goto_does_not_come_back_and_fib_is_the_node_addresses():
    table = _table(
        [
            ("pre", "fib daddr type local goto local"),
            ("pre", "ip daddr 5.5.5.5 dnat to 10.0.0.9:8080"),
            ("local", "ip saddr 10.0.0.1 return"),
            ("local", "meta l4proto tcp dnat to 10.0.0.8:80"),
            ("pre", "ip daddr 6.6.6.6 dnat to 10.0.0.3:80"),
            ("fwd", "ct status dnat ip saddr 10.0.0.3 reject"),
            ("fwd", 'oifname "eth0" iifname "cni*" ip daddr 10.0.0.9 drop'),
        ],
        chains=["local"],
    )
    _, v = _run(
        table,
        [
            "tcp 10.0.0.2:1 -> 192.168.0.2:30000",  # local: DNAT
            "tcp 10.0.0.1:1 -> 192.168.0.2:30000",  # return: the base chain ends
            "tcp 10.0.0.2:1 -> 127.0.0.5:30000",  # 127/8 is local too
            "tcp 10.0.0.2:1 -> 5.5.5.5:80",  # DNAT, then dropped
            "tcp 10.0.0.3:1 -> 6.6.6.6:80",  # DNATed: ct status dnat
            "tcp 10.0.0.3:1 -> 7.7.7.7:80",
        ],
    )  # not DNATed: passes
    A = packets.Action
    assert v["action"].tolist() == [A.DNAT, A.ACCEPT, A.DNAT, A.DROP, A.REJECT, A.ACCEPT]
    assert packets.dnat_text(v[0]) == "10.0.0.8:80" and not v[1]["dnat_ip"]
    _, ext = _run(table, ["tcp 10.0.0.2:1 -> 5.5.5.5:80"], origin="external")
    assert ext[0]["action"] == A.DNAT  # iifname eth0 is not cni*


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "text, message",
    [
        ("ip dscp 10 drop", "ip dscp"),
        ("meta skuid 0 accept", "meta skuid"),
        ("ct state new notrack", "notrack"),
        ("numgen inc mod 2 vmap { 0 : accept, 1 : drop }", "numgen"),
        ("fib daddr type unicast accept", "fib"),
        ("ip daddr @missing drop", "not in the table"),
        ("ip daddr . th dport @ports drop", "key type"),
        ("jump nowhere", "lacks"),
        ("numgen random mod 2 vmap { 0 : accept, x : drop }", "x"),
        ("mark set mark or zz", "zz"),
        ("ip daddr 1.2.3.400 drop", "1.2.3.400"),
        ("th dport 70000 drop", "70000"),
    ],
)
def test_rules_the_engine_does_not_understand_name_chain_and_rule(text, message):
    ports = NftSet("ports", "set", "inet_service")
    table = _table([("fwd", text)], sets=[ports])
    with pytest.raises(InputError, match=message) as info:
        nl.lower_nft(table)
    assert info.value.obj == "chain fwd" and info.value.value == text


def test_jump_loops_and_bad_maps_are_refused():
    table = _table(
        [("fwd", "jump a"), ("a", "jump b"), ("b", "ip saddr 1.2.3.4 goto a")], chains=["a", "b"]
    )
    with pytest.raises(InputError, match="jump loop"):
        nl.lower_nft(table)
    from kproxy_emu.netfilter.nft import NftElement

    m = NftSet("m", "map", "ipv4_addr : verdict")
    m.elements[("1.2.3.4",)] = NftElement(("1.2.3.4",), ("goto nowhere",))
    with pytest.raises(InputError, match="nowhere"):
        nl.lower_nft(_table([("fwd", "ip daddr vmap @m")], sets=[m]))
    over = NftSet("o", "map", "ipv4_addr : verdict", ("interval",))
    over.elements[("10.0.0.0/8",)] = NftElement(("10.0.0.0/8",), ("drop",))
    over.elements[("10.1.0.0/16",)] = NftElement(("10.1.0.0/16",), ("accept",))
    with pytest.raises(InputError, match="overlapping"):
        nl.lower_nft(_table([("fwd", "ip daddr vmap @o")], sets=[over]))


def test_jump_depth_limit_and_loops_through_maps():
    """The depth check in rounds over all edges draws the kernel's line where the chain
    walk does (16 jumps deep), and finds a loop closed through a verdict map."""
    from itertools import pairwise

    from kproxy_emu.netfilter.nft import NftElement

    for k in (14, 15, 16, 17):  # fwd -> c0 -> ... -> ck: depth k + 2
        names = [f"c{i}" for i in range(k + 1)]
        rules = [("fwd", "jump c0")] + [(a, f"jump {b}") for a, b in pairwise(names)]
        table = _table(rules, chains=names)
        if k + 2 > nl.MAX_JUMP_DEPTH + 1:
            with pytest.raises(InputError, match="nest deeper"):
                nl.lower_nft(table)
        else:
            nl.lower_nft(table)
    m = NftSet("m", "map", "ipv4_addr : verdict")
    m.elements[("1.2.3.4",)] = NftElement(("1.2.3.4",), ("goto a",))
    table = _table([("fwd", "jump a"), ("a", "ip daddr vmap @m")], sets=[m], chains=["a"])
    with pytest.raises(InputError, match="jump loop"):
        nl.lower_nft(table)


def test_process_checks_the_arrays():
    table = _table([("fwd", "ip daddr 1.1.1.1 drop")])
    low = nl.lower_nft(table)
    batch = packets.from_strings(["tcp 10.0.0.1:1 -> 1.1.1.1:1"])
    args = list(low.engine_arrays())
    bad = low.exprs.copy()
    bad["next"][np.flatnonzero(bad["op"] != nl.E["END"])[0]] = len(bad) + 1
    args[0] = bad
    with pytest.raises(ValueError, match="out of bounds"):
        nftmaps.NftEngine(*args, np.zeros(0, np.uint32), 0)
    with pytest.raises(ValueError, match="out of bounds"):
        nftmaps.check(*args)
    cells = np.zeros(1, nl.CELL_DTYPE)
    cells["vkind"], cells["vchain"] = nl.VK["goto"], len(low.exprs)
    with pytest.raises(ValueError, match="numgen verdict chain"):
        nftmaps.check(*low.engine_arrays()[:4], cells, *low.engine_arrays()[5:])
    unclosed = low.exprs.copy()
    unclosed["op"][-1] = nl.E["NOP"]
    with pytest.raises(ValueError, match="END"):
        nftmaps.check(unclosed, *low.engine_arrays()[1:])
    engine = nftmaps.NftEngine(*low.engine_arrays(), np.zeros(0, np.uint32), 0)
    with pytest.raises(ValueError, match="shorter"):
        pipeline.run(engine, batch, packets.empty_verdicts(0))
    with pytest.raises(ValueError, match="power-of-two"):
        nftmaps.NftEngine(
            *low.engine_arrays(),
            np.zeros(0, np.uint32),
            0,
            dyn=(np.zeros(3, np.uint64), np.zeros(3)),
        )
