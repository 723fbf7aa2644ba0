"""IPVS mode through the Dataplane facade: the chain VM with ipsets and ip_vs_in/out,
IpvsSync across updates, traces with the scheduler's candidates, renders, CLI and bench.

Cross-mode property (random synthetic clusters): IPVS and iptables send every first packet
to the same endpoints with the same probabilities and masquerade, except where kube-proxy's
two modes are known to differ, each asserted as a difference:
* a Local traffic policy with no local endpoint: IPVS falls back to the cluster's
  endpoints (syncEndpoint), iptables drops;
* IPVS applies externalTrafficPolicy Local to every source (the virtual server holds the
  local endpoints only), where iptables sends pods and the host to all endpoints, and does
  not mark the host's packets for masquerade;
* a service IP's undefined port: IPVS REJECTs (KUBE-IPVS-FILTER), iptables lets it through;
* the host's packets to an endpointless service's external/LB IP: REJECTed by IPVS (no
  destination), untouched by iptables.
Flows that no mode models alike are compared on endpoints only: a hairpin from an
endpoint on another node (IPVS's KUBE-LOOP-BACK holds this node's endpoints only), and
the host to a LoadBalancer IP with source ranges (IPVS filters it by the LB source address
the kernel picks, KUBE-IPVS-OUT-FILTER; the flow here comes from the node IP).
"""

import copy
import dataclasses
import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, IpvsOptions, packets, synth
from kproxy_emu.bench import sweep
from kproxy_emu.dataplane.dataplane import resolve_node
from kproxy_emu.errors import InputError
from kproxy_emu.modes.nftables import service_cidrs_for
from kproxy_emu.proxy.view import categorize_endpoints
from tests.modes.test_nftables_vs_iptables import _flows

CIDR = "10.0.0.0/8"


def _reference(dp, pkt, origin):
    """The pure-Python reference's view of a flow's first packet on a fresh node (every
    branch followed; IPVS: every destination the scheduler may pick), in the shape of a
    trace: the oracle these cross-mode tests compare (Dataplane.trace runs the engine from
    the node's current state instead)."""
    from kproxy_emu.dataplane.ipvs_kernel import build_ipsets, lower
    from kproxy_emu.dataplane.ipvs_reference import VirtualServerTable as RefTable
    from kproxy_emu.dataplane.ipvs_reference import evaluate_ipvs_flow
    from kproxy_emu.dataplane.reference import Flow, ReferenceEvaluator, evaluate_new_flow

    flow = Flow.from_packet(dp._resolve_origins(packets.parse(pkt, origin=origin))[0])
    options, backend = dp.options, dp.backend
    if dp.mode == "iptables":
        ev = ReferenceEvaluator(backend.tables, options.node.local_ips, options.family)
        outcome = evaluate_new_flow(ev, flow)
    else:
        state = backend.state
        ev = ReferenceEvaluator(
            backend.tables,
            [*options.node.local_ips, *state.bound_addresses],
            options.family,
            ipsets=build_ipsets(state, seed=backend._seed),
        )
        services, dests = lower(state)
        dests["endpoint"] = [
            backend.ipvs.endpoint_index(str(rs))
            for vs in state.virtual_servers
            for rs in vs.real_servers
        ]
        table = RefTable(
            services, dests, state.scheduler, backend._seed, **backend._table_options()
        )
        outcome = evaluate_ipvs_flow(ev, table, backend.endpoints, flow)
    first = outcome.branches[0]
    verdict = first.verdict if first.verdict in ("DROP", "REJECT") else None
    return {
        "verdict": verdict or ("DNAT" if first.dnat else "ACCEPT"),
        "candidates": [
            {"endpoint": ep, "probability": p, "masquerade": m} for ep, p, m in outcome.candidates
        ],
        "outcomes": [
            {"probability": b.prob, "verdict": b.verdict or "ACCEPT", "dnat": b.dnat}
            for b in outcome.branches
        ],
    }


@pytest.fixture(scope="module")
def cluster():
    return sweep.make_cluster(60, 4, 5)


def _summary(trace, masquerade=True):
    dnat = frozenset(
        (c["endpoint"], round(c["probability"], 6), c["masquerade"] if masquerade else None)
        for c in trace["candidates"]
    )
    other = frozenset(o["verdict"] for o in trace["outcomes"] if not o["dnat"])
    return dnat, other


def _service_of(view, flow, node_ip):
    for sp in view.service_ports:
        if sp.proto != flow.proto:
            continue
        if flow.dst == sp.cluster_ip and flow.dport == sp.port:
            return sp, "cluster-ip"
        if flow.dst == node_ip and sp.node_port and flow.dport == sp.node_port:
            return sp, "node-port"
        if flow.dport == sp.port and flow.dst in sp.external_ips:
            return sp, "external-ip"
        if flow.dport == sp.port and flow.dst in sp.lb_ips:
            return sp, "load-balancer"
    return None, None


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), services=st.integers(3, 10))
def test_ipvs_and_iptables_agree_but_for_known_differences(seed, services):
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
    ipt = Dataplane(cluster, mode="iptables", node_config=node, cluster_cidr=CIDR, conntrack=False)
    ipvs = Dataplane(cluster, mode="ipvs", node_config=node, cluster_cidr=CIDR, conntrack=False)
    view = ipt.view
    node_ip = node.primary_ip
    cluster_ips = {sp.cluster_ip for sp in view.service_ports}
    counts = dict.fromkeys(("same", "fallback", "local", "port", "endpoints"), 0)
    for flow, _ in _flows(view, cluster_ips, service_cidrs_for(cluster), node_ip):
        pkt = f"{flow.proto} {flow.src}:{flow.sport} -> {flow.dst}:{flow.dport}"
        a, b = _reference(ipt, pkt, flow.origin), _reference(ipvs, pkt, flow.origin)
        sp, kind = _service_of(view, flow, node_ip)
        if sp is None:
            if flow.dst in cluster_ips:  # an undefined port of a service IP
                assert _summary(b) == (frozenset(), frozenset({"REJECT"})), (flow, b)
                assert _summary(a) == (frozenset(), frozenset({"ACCEPT"})), (flow, a)
                counts["port"] += 1
            else:  # an unallocated address of the service CIDR: not IPVS's
                assert _summary(a) == _summary(b), flow
                counts["same"] += 1
            continue
        cat = categorize_endpoints(sp, node.name, node.zone)
        local_policy = (
            sp.internal_policy_local if kind == "cluster-ip" else sp.external_policy_local
        )
        # what the virtual server holds (syncEndpoint), with rr's equal shares
        eps = sorted(e.string for e in (cat.local if local_policy and cat.local else cat.cluster))
        got = sorted((c["endpoint"], round(c["probability"], 6)) for c in b["candidates"])
        if eps and not (kind == "load-balancer" and sp.source_ranges and b["verdict"] == "DROP"):
            assert got == [(e, round(1 / len(eps), 6)) for e in eps], (flow, eps, got)
        elif not eps:
            assert not got and b["verdict"] in ("REJECT", "DROP"), (flow, b)
        if local_policy:
            if (
                not cat.local
                and cat.cluster
                and (kind == "cluster-ip" or flow.origin == "external")
            ):
                # the known difference: iptables drops, IPVS falls back to the cluster
                assert _summary(a) == (frozenset(), frozenset({"DROP"})), (flow, a)
                assert got, (flow, b)
                counts["fallback"] += 1
            else:
                counts["local"] += 1
            continue
        if (
            not cat.has_any
            and kind == "load-balancer"
            and flow.origin != "host"
            and sp.source_ranges
            and not any(
                ipaddress.ip_address(flow.src) in ipaddress.ip_network(r, strict=False)
                for r in sp.source_ranges
            )
        ):
            # as in nftables mode: the source-range firewall DROPs before the missing
            # endpoints are noticed; iptables' KUBE-EXTERNAL-SERVICES REJECTs first
            assert _summary(a) == (frozenset(), frozenset({"REJECT"})), (flow, a)
            assert _summary(b) == (frozenset(), frozenset({"DROP"})), (flow, b)
            counts["port"] += 1
            continue
        if not cat.has_any and flow.origin == "host" and kind in ("external-ip", "load-balancer"):
            assert _summary(b) == (frozenset(), frozenset({"REJECT"})), (flow, b)
            counts["port"] += 1
            continue
        remote_hairpin = flow.src in {e.ip for e in sp.endpoints if not e.is_local}
        if remote_hairpin or (
            flow.origin == "host" and kind == "load-balancer" and sp.source_ranges
        ):
            if a["candidates"] and b["candidates"]:
                assert _summary(a, False)[0] == _summary(b, False)[0], flow
            counts["endpoints"] += 1
            continue
        assert _summary(a) == _summary(b), (flow, _summary(a), _summary(b))
        counts["same"] += 1
    assert counts["same"] > 0, counts


def test_fallback_is_a_real_difference():
    """One cluster where an iTP-Local service has endpoints on other nodes only."""
    for seed in range(200):
        cluster = synth.cluster(
            services=6,
            endpoints="uniform:1-3",
            nodes=3,
            seed=seed,
            itp_local_share=1.0,
            etp_local_share=0.0,
            affinity_share=0,
        )
        ipt = Dataplane(cluster, mode="iptables", cluster_cidr=CIDR, conntrack=False)
        ipvs = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, conntrack=False)
        node = ipt.options.node
        for sp in ipt.view.service_ports:
            cat = categorize_endpoints(sp, node.name, node.zone)
            if cat.cluster and not cat.local:
                pkt = f"{sp.proto} 10.99.0.7:40000 -> {sp.cluster_ip}:{sp.port}"
                a, b = _reference(ipt, pkt, "pod"), _reference(ipvs, pkt, "pod")
                assert a["verdict"] == "DROP" and not a["candidates"]
                assert b["verdict"] == "DNAT"
                assert {c["endpoint"] for c in b["candidates"]} == {e.string for e in cat.cluster}
                return
    pytest.fail("no seed gave an iTP-Local service without local endpoints")


def test_engine_verdicts_are_among_the_tracers_outcomes(cluster):
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, seed=3)
    spec = sweep.BenchSpec(
        services=[60], packets=400, origin_mix={"pod": 1, "external": 1, "host": 1}
    )
    batch = sweep.traffic(dp, spec, 9)
    out = dp.process(batch)
    assert (out["rules"] > 0).all() and (out["probes"] > 0).all()
    # IPVS schedules from its state: the trace runs on a twin node that saw the same packets
    tracer = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, seed=3)
    seen = set()
    for line, row, v in zip(packets.to_strings(batch[:150]), batch[:150], out[:150]):
        t = tracer.trace(line, time=float(row["ts"]), commit=True)
        if v["ct_hit"]:
            continue
        verdicts = {
            o["verdict"]
            if o["verdict"] in ("DROP", "REJECT")
            else ("DNAT" if o["dnat"] else "ACCEPT")
            for o in t["outcomes"]
        }
        action = packets.Action(int(v["action"])).name
        assert action in verdicts, (line, t["outcomes"])
        seen.add(action)
        if action == "DNAT":
            ep = dp.endpoints[int(v["endpoint"])]
            assert ep == packets.dnat_text(v)
            assert ep in {c["endpoint"] for c in t["candidates"]}
            masq = {c["masquerade"] for c in t["candidates"] if c["endpoint"] == ep}
            assert bool(v["snat_ip"]) in masq
    assert "DNAT" in seen


def _cluster_ip_service(cluster, dp, n_endpoints=3, affinity=False):
    for sp in dp.view.service_ports:
        cat = categorize_endpoints(sp, dp.options.node.name, dp.options.node.zone)
        if (
            sp.proto == "tcp"
            and len(cat.cluster) == n_endpoints
            and bool(sp.affinity_timeout) == affinity
            and not sp.internal_policy_local
        ):
            return sp, sorted(e.string for e in cat.cluster)
    raise AssertionError("no such service in the cluster")


def _syns(src_ips, dst, port, t0=0.0, sport=40000):
    lines = [f"tcp {ip}:{sport + k} -> {dst}:{port}" for k, ip in enumerate(src_ips)]
    return packets.from_strings(lines, origin="pod", ts=[t0 + 0.001 * k for k in range(len(lines))])


def test_rr_order_through_process():
    cluster = synth.cluster(
        services=30,
        endpoints=3,
        nodes=3,
        seed=11,
        affinity_share=0,
        itp_local_share=0,
        etp_local_share=0,
        terminating_share=0,
        not_ready_share=0,
        prefer_close_share=0,
    )
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    sp, eps = _cluster_ip_service(cluster, dp)
    out = dp.process(_syns(["10.99.0.7"] * 7, sp.cluster_ip, sp.port))
    assert (out["action"] == packets.Action.DNAT).all()
    got = [dp.endpoints[i] for i in out["endpoint"]]
    # real servers are added in endpoint-string order and the kernel puts each new one at
    # the head of the list; ip_vs_rr walks the list from its head
    order = sorted(eps, reverse=True)
    assert got == [order[k % 3] for k in range(7)]


def test_client_ip_affinity_through_process():
    cluster = synth.cluster(
        services=30,
        endpoints=3,
        nodes=3,
        seed=12,
        affinity_share=1.0,
        itp_local_share=0,
        etp_local_share=0,
        terminating_share=0,
        not_ready_share=0,
        prefer_close_share=0,
    )
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    sp, _eps = _cluster_ip_service(cluster, dp, affinity=True)
    assert f"-p {sp.affinity_timeout}" in dp.render()
    clients = ["10.99.0.7"] * 4 + ["10.99.0.8"] * 4 + ["10.99.0.9"] * 4
    out = dp.process(_syns(clients, sp.cluster_ip, sp.port))
    got = [dp.endpoints[i] for i in out["endpoint"]]
    for k in range(0, 12, 4):
        assert len(set(got[k : k + 4])) == 1, got  # one client, one endpoint
    firsts = [got[k] for k in range(0, 12, 4)]
    assert len(set(firsts)) == 3  # new clients are scheduled round robin
    # within the persistence timeout a new connection of a client follows its template;
    # long after it, the client is scheduled afresh: rr is back at the first endpoint
    within = dp.process(_syns(["10.99.0.8"], sp.cluster_ip, sp.port, t0=100.0, sport=50000))
    assert dp.endpoints[int(within["endpoint"][0])] == firsts[1]
    later = dp.process(
        _syns(["10.99.0.8"], sp.cluster_ip, sp.port, t0=sp.affinity_timeout + 2000.0, sport=50001)
    )
    assert dp.endpoints[int(later["endpoint"][0])] == firsts[0] != firsts[1]


def test_established_flows_keep_their_endpoint_after_an_update(cluster):
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, seed=3)
    batch = sweep.traffic(dp, sweep.BenchSpec(services=[60], packets=500), 2)
    first = dp.process(batch)
    alive = first["action"] == packets.Action.DNAT
    changed = sweep.one_endpoint_changed(cluster)
    result = dp.update(changed)
    assert result.ok and result.cost()["ipvs_operations"] >= 1
    assert result.extra["dests_graceful"] + result.extra["dests_deleted"] >= 1
    dp.process(packets.replies(batch[alive], first[alive], start=dp.clock))
    again = dp.process(packets.next_packets(batch[alive], start=dp.clock + 1.0))
    assert again["ct_hit"].all()
    # the endpoint that stopped being ready: its TCP connections go on (graceful
    # termination), UDP/SCTP ones are dropped (expire_nodest_conn: the real server was
    # deleted at once); every other flow keeps its real server
    sl = next(sl for sl in cluster.endpoint_slices.values() if sl.endpoints)
    changed_ip = packets.ip_to_u32(sl.endpoints[0].addresses[0])
    to_changed = first["dnat_ip"][alive] == changed_ip
    tcp = batch["proto"][alive] == 6
    assert to_changed.any() and (~to_changed).any()
    keep = ~to_changed | tcp
    assert (again["endpoint"][keep] == first["endpoint"][alive][keep]).all()
    assert (again["dnat_ip"][keep] == first["dnat_ip"][alive][keep]).all()
    assert (again["action"][to_changed & ~tcp] == packets.Action.DROP).all()


def test_graceful_termination_runs_on_packet_time():
    cluster = synth.cluster(
        services=30,
        endpoints=3,
        nodes=3,
        seed=11,
        affinity_share=0,
        itp_local_share=0,
        etp_local_share=0,
        terminating_share=0,
        not_ready_share=0,
        prefer_close_share=0,
    )
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    sp, _eps = _cluster_ip_service(cluster, dp)
    out = dp.process(_syns([f"10.99.0.{k}" for k in range(1, 7)], sp.cluster_ip, sp.port))
    gone = dp.endpoints[int(out["endpoint"][0])]
    # the endpoint leaves its slice: weight 0 while its connections live
    gone_ip = gone.rsplit(":", 1)[0]
    new = copy.copy(cluster)
    new.endpoint_slices = {
        key: dataclasses.replace(
            sl, endpoints=[e for e in sl.endpoints if gone_ip not in e.addresses]
        )
        for key, sl in cluster.endpoint_slices.items()
    }
    result = dp.update(new)
    assert result.extra["dests_graceful"] >= 1
    ipvs = dp.backend.ipvs
    graceful = list(ipvs.graceful)
    stats = ipvs.table.dest_stats()
    assert all(stats[d]["linked"] and stats[d]["weight"] == 0 for d in graceful)
    # its established flow still reaches it; new clients do not
    ack = _syns(["10.99.0.1"], sp.cluster_ip, sp.port, t0=1.0)
    ack["tcp_flags"] = 0x10  # ACK
    assert dp.endpoints[int(dp.process(ack)["endpoint"][0])] == gone
    fresh = dp.process(_syns([f"10.98.0.{k}" for k in range(1, 7)], sp.cluster_ip, sp.port, t0=2.0))
    assert gone not in {dp.endpoints[i] for i in fresh["endpoint"]}
    # an hour of packet time later the connections have expired and the minute loop
    # deleted the real server
    dp.process(_syns(["10.97.0.1"], sp.cluster_ip, sp.port, t0=3600.0))
    assert not ipvs.graceful
    stats = ipvs.table.dest_stats()
    assert not any(stats[d]["linked"] for d in graceful)


def test_masquerade_as_kube_proxys_ipvs_rules_say():
    cluster = synth.cluster(
        services=40,
        endpoints=1,
        nodes=1,
        seed=21,
        affinity_share=0,
        itp_local_share=0,
        etp_local_share=0,
        terminating_share=0,
        not_ready_share=0,
        prefer_close_share=0,
        type_mix={"ClusterIP": 0.5, "NodePort": 0.5},
    )
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    node_ip = packets.ip_to_u32(dp.options.node.primary_ip)
    sp = next(
        s
        for s in dp.view.service_ports
        if s.proto == "tcp"
        and s.node_port
        and any(e.is_local for e in s.endpoints)
        and len(s.endpoints) == 1
    )
    pod = sp.endpoints[0]
    lines = [
        f"tcp 10.99.0.7:40000 -> {sp.cluster_ip}:{sp.port} from=pod",  # plain
        f"tcp {pod.ip}:40001 -> {sp.cluster_ip}:{sp.port} from=pod",  # hairpin
        f"tcp 203.0.113.9:40002 -> {sp.cluster_ip}:{sp.port} from=external",
        f"tcp 203.0.113.9:40003 -> {dp.options.node.primary_ip}:{sp.node_port} from=external",
    ]
    out = dp.process(packets.from_strings(lines))
    assert (out["action"] == packets.Action.DNAT).all()
    assert [int(v) for v in out["snat_ip"]] == [0, node_ip, node_ip, node_ip]
    assert all(dp.endpoints[i] == pod.string for i in out["endpoint"])
    for line, v in zip(lines, out):
        pkt, _, origin = line.rpartition(" from=")
        t = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR).trace(pkt, origin)
        assert t["masquerade"] == bool(v["snat_ip"])
        assert t["steps"][-1]["table"] == "nat" or any(s["table"] == "ipvs" for s in t["steps"])


def test_replies_reach_the_client_and_advance_ipvs(cluster):
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, seed=1)
    batch = sweep.traffic(
        dp, sweep.BenchSpec(services=[60], packets=200, origin_mix={"pod": 1.0}), 5
    )
    batch = batch[batch["proto"] == 6]
    batch = batch[np.sort(np.unique(batch["src_port"], return_index=True)[1])]  # in time order
    first = dp.process(batch)
    ok = first["action"] == packets.Action.DNAT
    before = dp.backend.ipvs.table.connections()
    rep = dp.process(packets.replies(batch[ok], first[ok], start=dp.clock))
    assert rep["ct_hit"].all()
    assert (rep["dnat_ip"] == np.where(first["snat_ip"][ok] != 0, batch["src_ip"][ok], 0)).all()
    after = dp.backend.ipvs.table.connections()
    # ip_vs_out met each connection: its timer restarted at the reply (the SYN-ACK keeps
    # SYN_RECV in the OUTPUT row); the client's ACK then makes it ESTABLISHED
    conns = ~before["template"]
    assert (before["state"][conns] == 3).all() and (after["state"][conns] == 3).all()
    assert (after["expires"][conns] > before["expires"][conns]).all()
    dp.process(packets.next_packets(batch[ok], start=dp.clock + 0.5))
    final = dp.backend.ipvs.table.connections()
    assert (final["state"][~final["template"]] == 1).all()


def test_render_formats_and_errors(cluster):
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    assert dp.render().startswith("-A -t ")
    assert dp.render(format="ipvsadm-save") == dp.render()
    assert dp.render(format="save").startswith("IP Virtual Server version")
    assert dp.render(format="ipset-save").startswith("create KUBE-LOOP-BACK")
    assert "-j KUBE-IPVS-FILTER" not in dp.render(format="iptables-restore")
    assert "-A KUBE-IPVS-FILTER" in dp.render(format="iptables-restore", sorted=True)
    with pytest.raises(InputError, match="--format"):
        dp.render(format="xml")
    with pytest.raises(InputError, match="scheduler"):
        Dataplane(cluster, IpvsOptions(scheduler="fastest"))
    with pytest.raises(InputError, match="unsupported mode"):
        Dataplane(cluster, mode="winkernel")
    sh = Dataplane(cluster, IpvsOptions(scheduler="sh"), cluster_cidr=CIDR)
    assert " -s sh" in sh.render() and " -s rr" not in sh.render()


def test_counters_in_ipvsadm_list(cluster):
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    batch = sweep.traffic(
        dp, sweep.BenchSpec(services=[60], packets=50, origin_mix={"pod": 1.0}), 1
    )
    out = dp.process(batch[batch["proto"] == 6])
    listed = dp.render(format="save")
    counts = [
        int(line.split()[4]) + int(line.split()[5])
        for line in listed.splitlines()
        if line.startswith("  -> ") and "Masq" in line
    ]
    assert sum(counts) == int((out["action"] == packets.Action.DNAT).sum())


def test_bench_cell_ipvs():
    spec = sweep.BenchSpec(services=[200], modes=["ipvs"], packets=2000, repeat=1)
    records = sweep.run_cell("ipvs", 200, spec)
    new, est = records
    assert new["cost_unit"] == "probes" and new["probes_p50"] >= 1
    assert est["ct_hit_share"] > 0.9
    assert new["actions"].get("DNAT", 0) > 0


def test_ipvs_out_filter_drops_the_nodes_own_lb_traffic_outside_source_ranges():
    """KUBE-IPVS-OUT-FILTER (-m ipvs): the host reaching a LoadBalancer IP whose source
    ranges leave the node out, from that LB address (the source the kernel picks for a
    kube-ipvs0 destination), is dropped after IPVS scheduled it; from the node IP not."""
    cluster = synth.cluster(
        services=20,
        endpoints=2,
        nodes=2,
        seed=4,
        affinity_share=0,
        type_mix={"LoadBalancer": 1.0},
        lb_source_range_share=1.0,
        etp_local_share=0,
        itp_local_share=0,
        terminating_share=0,
        not_ready_share=0,
        prefer_close_share=0,
    )
    dp = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR)
    rules = [
        r
        for r in dp.backend.state.ruleset.tables["filter"].rules
        if r.chain == "KUBE-IPVS-OUT-FILTER"
    ]
    assert rules
    opts = {o.flag: o.args[0] for o in rules[0].opts}
    lb, proto, port = opts["-s"], opts["--vproto"], opts["--vport"]
    sp = next(s for s in dp.view.service_ports if lb in s.lb_ips and s.port == int(port))
    lines = [
        f"{proto} {lb}:40000 -> {lb}:{port}",
        f"{proto} {dp.options.node.primary_ip}:40001 -> {lb}:{port}",
    ]
    out = dp.process(packets.from_strings(lines, origin="host"))
    assert [packets.Action(int(a)).name for a in out["action"]] == ["DROP", "DNAT"]
    tracer = Dataplane(cluster, mode="ipvs", cluster_cidr=CIDR, conntrack=False)
    dropped = tracer.trace(lines[0], "host")
    assert dropped["verdict"] == "DROP"
    assert any("-m ipvs" in s["text"] and s["matched"] for s in dropped["steps"])
    assert tracer.trace(lines[1], "host")["verdict"] == "DNAT"
    assert sp.source_ranges
