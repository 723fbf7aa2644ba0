"""The Cython chain VM against the reference evaluator: same verdicts, same endpoint sets,
the probabilities kube-proxy's statistic rules encode."""

import copy

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu._cext import chains
from kproxy_emu.dataplane.lowering import CHAIN_DTYPE, HOT_DTYPE, RULE_DTYPE
from kproxy_emu.dataplane.reference import Flow, ReferenceEvaluator, evaluate_new_flow
from kproxy_emu.errors import InputError
from tests.helpers.iptables_env import fixture
from tests.modes.test_iptables_packets import _dataplane

ACTIONS = {"DROP": packets.Action.DROP, "REJECT": packets.Action.REJECT}


def test_lowered_dtypes_match_the_c_structs():
    layout = chains.layout()
    assert layout["rule_t"]["itemsize"] == RULE_DTYPE.itemsize
    assert layout["chain_t"]["itemsize"] == CHAIN_DTYPE.itemsize
    for name, offset in layout["rule_t"]["fields"].items():
        assert RULE_DTYPE.fields[name][1] == offset, name
    for name, offset in layout["chain_t"]["fields"].items():
        assert CHAIN_DTYPE.fields[name][1] == offset, name
    assert layout["hot_t"]["itemsize"] == HOT_DTYPE.itemsize
    for name, offset in layout["hot_t"]["fields"].items():
        assert HOT_DTYPE.fields[name][1] == offset, name


def agree(dp, batch):
    """Every engine verdict must be one of the reference evaluator's outcomes."""
    verdicts = dp.process(batch)
    ev = ReferenceEvaluator(dp.tables, dp.options.node.local_ips)
    problems = []
    for p, v in zip(batch, verdicts):
        flow = Flow.from_packet(p)
        outcome = evaluate_new_flow(ev, flow)
        candidates = {c[0]: c for c in outcome.candidates}
        action = int(v["action"])
        if candidates:
            ep = dp.endpoints[int(v["endpoint"])] if v["endpoint"] >= 0 else None
            ok = (
                action == packets.Action.DNAT
                and ep in candidates
                and candidates[ep][2] == bool(v["snat_ip"])
                and packets.dnat_text(v) == ep
            )
        else:
            expected = ACTIONS.get(outcome.kube_proxy_output(), packets.Action.ACCEPT)
            ok = action == expected and bool(v["snat_ip"]) == outcome.masquerade
        if not ok:
            problems.append(
                f"{flow}: engine {v}, reference {outcome.kube_proxy_output()!r} "
                f"masq={outcome.masquerade}"
            )
    assert not problems, "\n".join(problems[:10])
    return verdicts


def test_fixture_packet_flows_agree_with_the_reference(tmp_path):
    fx = fixture("iptables-overall.json")
    env = fx["environment"]
    dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path)
    lines = [
        f"{t['protocol'].lower()} {t['sourceIP']}:40000 -> {t['destIP']}:{t['destPort']}"
        for t in fx["packetTests"]
        if ":" not in t["sourceIP"] + t["destIP"]
    ]
    batch = packets.from_strings(lines * 20)
    packets.resolve_origins(batch, ["10.0.0.0/8"], env["tracerNodeIPs"])
    agree(dp, batch)


@pytest.mark.parametrize("seed", range(3))
def test_random_clusters_and_traffic_agree_with_the_reference(seed):
    cluster = synth.cluster(120, endpoints="uniform:0-5", nodes=3, seed=seed)
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=seed)
    agree(dp, packets.synth(cluster, 600, seed=seed, new_flow_share=1.0))


def test_endpoint_choice_follows_kube_proxys_probabilities():
    cluster = synth.cluster(
        1,
        endpoints=4,
        seed=2,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        affinity_share=0,
        prefer_close_share=0,
    )
    svc = next(iter(cluster.services.values()))
    proto, dst = svc.ports[0].protocol.lower(), f"{svc.cluster_ip}:{svc.ports[0].port}"
    n = 40_000
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=9)
    lines = [f"{proto} 10.0.{i >> 14}.7:{1024 + (i & 16383)} -> {dst}" for i in range(n)]
    verdicts = dp.process(packets.from_strings(lines, origin="pod"))  # n distinct flows
    assert (verdicts["action"] == packets.Action.DNAT).all()
    counts = np.bincount(verdicts["endpoint"], minlength=4)
    assert len(counts) == 4
    chi2 = (((counts - n / 4) ** 2) / (n / 4)).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001


def test_same_seed_same_verdicts_different_seed_different():
    cluster = synth.cluster(50, seed=4)
    traffic = packets.synth(cluster, 5000, seed=1, new_flow_share=1.0)
    a = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=1).process(traffic)
    b = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=1).process(traffic)
    c = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=2).process(traffic)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_rules_evaluated_grow_with_the_service_position():
    cluster = synth.cluster(
        400,
        endpoints=1,
        seed=3,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        itp_local_share=0,
    )
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
    services = list(cluster.services.values())
    lines = [
        f"{s.ports[0].protocol.lower()} 10.0.0.7:40000 -> {s.cluster_ip}:{s.ports[0].port}"
        for s in (services[0], services[-1])
    ]
    first, last = dp.process(packets.from_strings(lines, origin="pod"))["rules"]
    assert last > first + 300


def test_process_rejects_a_wrong_array():
    dp = Dataplane(synth.cluster(5, seed=1))
    with pytest.raises(InputError, match="PACKET_DTYPE"):
        dp.process(np.zeros(3))


def _one_service(endpoints=3):
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
    )
    svc = next(iter(cluster.services.values()))
    return cluster, svc, f"{svc.cluster_ip}:{svc.ports[0].port}"


def test_conntrack_established_flow_keeps_its_endpoint_and_replies_are_un_natted():
    cluster, svc, vip = _one_service()
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=3)
    node = dp.options.node.primary_ip
    first = dp.process(packets.from_strings([f"tcp {node}:40000 -> {vip}"]))[0]
    assert first["action"] == packets.Action.DNAT and not first["ct_hit"]
    assert first["snat_ip"] == packets.ip_to_u32(node)  # host traffic: masqueraded
    endpoint = dp.endpoints[first["endpoint"]]
    # the SYN/ACK from the endpoint comes back from the service address to the client
    reply = dp.process(
        packets.from_strings([f"tcp {endpoint} -> {node}:{first['snat_port']} flags=SA"], ts=0.5)
    )[0]
    assert reply["ct_hit"]
    assert f"{packets.u32_to_ip(int(reply['snat_ip']))}:{reply['snat_port']}" == vip
    # the endpoints change; the established flow keeps its endpoint, as conntrack does
    changed = synth.cluster(
        1,
        endpoints=3,
        seed=77,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
    )
    for s in changed.endpoint_slices.values():
        s.namespace = svc.namespace
        s.labels["kubernetes.io/service-name"] = svc.name
        for p in s.ports:
            p.name = svc.ports[0].name
    updated = copy.copy(cluster)  # update() compares with the cluster it holds: a new object
    updated.endpoint_slices = {(s.namespace, s.name): s for s in changed.endpoint_slices.values()}
    result = dp.update(updated)
    assert result.ok and result.changed == {svc.key}
    again = dp.process(packets.from_strings([f"tcp {node}:40000 -> {vip} flags=A"], ts=1.0))[0]
    assert again["ct_hit"] and again["action"] == packets.Action.DNAT
    assert f"{packets.u32_to_ip(int(again['dnat_ip']))}:{again['dnat_port']}" == endpoint
    # a new flow after the change reaches only the new endpoints
    new_endpoints = {
        f"{e.addresses[0]}:{s.ports[0].port}"
        for s in updated.endpoint_slices.values()
        for e in s.endpoints
    }
    assert endpoint not in new_endpoints
    new = dp.process(packets.from_strings([f"tcp {node}:40001 -> {vip}"], ts=2.0))[0]
    assert not new["ct_hit"] and dp.endpoints[new["endpoint"]] in new_endpoints
    assert again["rules"] < new["rules"]  # a known flow skips the nat rules


def test_conntrack_entries_expire_in_emulated_time():
    cluster, _svc, vip = _one_service()
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
    line = f"udp 10.0.0.9:5000 -> {vip}"
    dp.process(packets.from_strings([line], ts=0.0))
    assert dp.process(packets.from_strings([line], ts=10.0))[0]["ct_hit"]
    # an unreplied UDP flow lives 30 s after its last packet
    assert not dp.process(packets.from_strings([line], ts=40.5))[0]["ct_hit"]


def test_without_conntrack_every_packet_walks_the_rules():
    cluster, _svc, vip = _one_service()
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", conntrack=False)
    v = dp.process(packets.from_strings([f"tcp 10.0.0.9:5000 -> {vip}"] * 3))
    assert not v["ct_hit"].any() and (v["action"] == packets.Action.DNAT).all()
    assert (v["probes"] == 0).all()


def test_client_ip_affinity_sticks_within_its_timeout_and_expires_after():
    cluster, svc, vip = _one_service(endpoints=3)
    svc.session_affinity, svc.affinity_timeout = "ClientIP", 10
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=5)
    clients = [f"10.1.0.{i}" for i in range(1, 41)]

    def choose(ts, port):
        batch = packets.from_strings([f"tcp {c}:{port} -> {vip}" for c in clients], ts=ts)
        v = dp.process(batch)
        assert not v["ct_hit"].any() and (v["action"] == packets.Action.DNAT).all()
        return [dp.endpoints[e] for e in v["endpoint"]]

    first = choose(0.0, 40000)
    assert len(set(first)) > 1  # clients are spread over the endpoints
    assert choose(5.0, 40001) == first  # new flows, same endpoint per client
    assert choose(14.0, 40002) == first  # 9 s after the last use: still within 10 s
    later = choose(30.0, 40003)  # 16 s idle: the affinity entries have expired
    assert later != first
    assert choose(35.0, 40004) == later  # and the new choice sticks again


def test_trace_sequence_sees_conntrack_and_time():
    """trace(commit=True) leaves state like process: the flow's next packet is established
    (no nat rules), its reply un-NATed, and after the timeout the flow is new again."""
    cluster, _svc, vip = _one_service()
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=5)
    first = dp.trace(f"tcp 10.0.0.9:40000 -> {vip}", commit=True)
    assert first["conntrack"] == "new" and first["verdict"] == "DNAT"
    assert first["endpoint"] in {c["endpoint"] for c in first["candidates"]}
    assert first["cost"]["rules_evaluated"] > 0
    # the client's ACK before any SYN-ACK is out of window: INVALID, not NATed (as process)
    early = dp.trace(f"tcp 10.0.0.9:40000 -> {vip} flags=A", time=0.5)
    assert early["conntrack"] == "invalid" and early["verdict"] != "DNAT"
    reply = dp.trace(f"tcp {first['endpoint']} -> 10.0.0.9:40000 flags=SA", time=1.0, commit=True)
    assert reply["conntrack"] == "reply"
    again = dp.trace(f"tcp 10.0.0.9:40000 -> {vip} flags=A", time=1.0)
    assert again["conntrack"] == "established" and again["endpoint"] == first["endpoint"]
    assert not [s for s in again["steps"] if s["table"] == "nat"]  # known flows skip nat
    # a half-open connection lives 60 s (nf_conntrack_tcp_timeout_syn_recv)
    late = dp.trace(f"tcp 10.0.0.9:40000 -> {vip} flags=A", time=500.0)
    assert late["conntrack"] == "new"
