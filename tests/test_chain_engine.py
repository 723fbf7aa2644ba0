"""The Cython chain VM against the reference evaluator: same verdicts, same endpoint sets,
the probabilities kube-proxy's statistic rules encode."""
import numpy as np
import pytest

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu._cext import chains
from kproxy_emu.dataplane.lowering import CHAIN_DTYPE, RULE_DTYPE
from kproxy_emu.dataplane.reference import Flow, ReferenceEvaluator, evaluate_new_flow
from kproxy_emu.errors import InputError

from .iptables_env import fixture
from .test_iptables_packets import _dataplane

ORIGINS = {0: "pod", 1: "external", 2: "host"}
PROTOS = {6: "tcp", 17: "udp", 132: "sctp"}
ACTIONS = {"DROP": packets.Action.DROP, "REJECT": packets.Action.REJECT}


def test_lowered_dtypes_match_the_c_structs():
    layout = chains.layout()
    assert layout["rule_t"]["itemsize"] == RULE_DTYPE.itemsize
    assert layout["chain_t"]["itemsize"] == CHAIN_DTYPE.itemsize
    for name, offset in layout["rule_t"]["fields"].items():
        assert RULE_DTYPE.fields[name][1] == offset, name
    for name, offset in layout["chain_t"]["fields"].items():
        assert CHAIN_DTYPE.fields[name][1] == offset, name


def agree(dp, batch):
    """Every engine verdict must be one of the reference evaluator's outcomes."""
    verdicts = dp.process(batch)
    ev = ReferenceEvaluator(dp.tables, dp.options.node.local_ips)
    problems = []
    for p, v in zip(batch, verdicts):
        flow = Flow(str(packets.u32_to_ip(int(p["src_ip"]))),
                    str(packets.u32_to_ip(int(p["dst_ip"]))), PROTOS[int(p["proto"])],
                    int(p["src_port"]), int(p["dst_port"]), ORIGINS[int(p["origin"])])
        outcome = evaluate_new_flow(ev, flow)
        candidates = {c[0]: c for c in outcome.candidates}
        action = int(v["action"])
        if candidates:
            ep = dp.endpoints[int(v["endpoint"])] if v["endpoint"] >= 0 else None
            ok = (action == packets.Action.DNAT and ep in candidates
                  and candidates[ep][2] == bool(v["snat_ip"])
                  and f"{packets.u32_to_ip(int(v['dnat_ip']))}:{int(v['dnat_port'])}" == ep)
        else:
            expected = ACTIONS.get(outcome.kube_proxy_output(), packets.Action.ACCEPT)
            ok = action == expected and bool(v["snat_ip"]) == outcome.masquerade
        if not ok:
            problems.append(f"{flow}: engine {v}, reference {outcome.kube_proxy_output()!r} "
                            f"masq={outcome.masquerade}")
    assert not problems, "\n".join(problems[:10])
    return verdicts


def test_fixture_packet_flows_agree_with_the_reference(tmp_path):
    fx = fixture("iptables-overall.json")
    env = fx["environment"]
    dp = _dataplane(env, fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path)
    lines = [f"{t['protocol'].lower()} {t['sourceIP']}:40000 -> {t['destIP']}:{t['destPort']}"
             for t in fx["packetTests"] if ":" not in t["sourceIP"] + t["destIP"]]
    batch = packets.from_strings(lines * 20)
    packets.resolve_origins(batch, ["10.0.0.0/8"], env["tracerNodeIPs"])
    agree(dp, batch)


@pytest.mark.parametrize("seed", range(3))
def test_random_clusters_and_traffic_agree_with_the_reference(seed):
    cluster = synth.cluster(120, endpoints="uniform:0-5", nodes=3, seed=seed)
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=seed)
    agree(dp, packets.synth(cluster, 600, seed=seed, new_flow_share=1.0))


def test_endpoint_choice_follows_kube_proxys_probabilities():
    cluster = synth.cluster(1, endpoints=4, seed=2, type_mix={"ClusterIP": 1},
                            ports_per_service=(1.0,), terminating_share=0,
                            not_ready_share=0, itp_local_share=0, affinity_share=0,
                            prefer_close_share=0)
    svc = next(iter(cluster.services.values()))
    line = f"{svc.ports[0].protocol.lower()} 10.0.0.7:40000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    n = 40_000
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8", seed=9)
    verdicts = dp.process(packets.from_strings([line] * n, origin="pod"))
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
    cluster = synth.cluster(400, endpoints=1, seed=3, type_mix={"ClusterIP": 1},
                            ports_per_service=(1.0,), itp_local_share=0)
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
    services = list(cluster.services.values())
    lines = [f"{s.ports[0].protocol.lower()} 10.0.0.7:40000 -> {s.cluster_ip}:{s.ports[0].port}"
             for s in (services[0], services[-1])]
    first, last = dp.process(packets.from_strings(lines, origin="pod"))["rules"]
    assert last > first + 300


def test_process_rejects_a_wrong_array():
    dp = Dataplane(synth.cluster(5, seed=1))
    with pytest.raises(InputError, match="PACKET_DTYPE"):
        dp.process(np.zeros(3))
