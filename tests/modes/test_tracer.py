"""Dataplane.trace runs the packet through the same pipeline and node state as process:
it cannot disagree with it (the four scenarios of issue 12, then random sequences)."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu.cli import main as cli_main
from kproxy_emu.model.config import ConntrackConfig, KubeProxyConfig

MODES = ("iptables", "nftables", "ipvs", "userspace", "ebpf")
CIDR = "10.0.0.0/8"
CLIENT = "10.0.0.9"


def _cluster(endpoints=3, affinity=0.0, services=1):
    return synth.cluster(
        services,
        endpoints=endpoints,
        seed=2,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        affinity_share=affinity,
        prefer_close_share=0,
    )


def _vip(cluster, k=0):
    svc = list(cluster.services.values())[k]
    return f"{svc.cluster_ip}:{svc.ports[0].port}"


def _agrees(trace, verdict, dp):
    """The trace's verdict is the engine's: action, translation, masquerade, endpoint."""
    assert trace["verdict"] == packets.Action(int(verdict["action"])).name
    assert trace["dnat"] == packets.dnat_text(verdict)
    ep = int(verdict["endpoint"])
    assert trace["endpoint"] == (dp.endpoints[ep] if ep >= 0 else None)
    if trace["conntrack"] != "reply":
        assert trace["masquerade"] == bool(verdict["snat_ip"])


@pytest.mark.parametrize("mode", MODES)
def test_affinity_hit_is_one_candidate(mode):
    """(a) ClientIP affinity: the client's second connection is pinned, and the trace says
    so: the affinity path matched, one candidate at p=1, the endpoint process picks."""
    cluster = _cluster(endpoints=4, affinity=1.0)
    vip = _vip(cluster)
    dp = Dataplane(cluster, mode=mode, cluster_cidr=CIDR, seed=4)
    fresh = dp.trace(f"tcp {CLIENT}:40000 -> {vip}")
    # rr and the userspace round robin: their one choice
    assert len(fresh["candidates"]) == (1 if mode in ("ipvs", "userspace") else 4)
    first = dp.process(packets.from_strings([f"tcp {CLIENT}:40000 -> {vip}"], origin="pod"))[0]
    pinned = dp.endpoints[int(first["endpoint"])]
    t = dp.trace(f"tcp {CLIENT}:40001 -> {vip}", "pod", time=1.0)
    assert t["conntrack"] == "new" and t["endpoint"] == pinned
    # the userspace proxy connects from the node: the endpoint sees the node's address
    masq = mode == "userspace"
    assert t["candidates"] == [
        {"endpoint": pinned, "probability": 1.0, "fraction": "1", "masquerade": masq}
    ]
    assert [o["probability"] for o in t["outcomes"]] == [1.0]
    if mode == "iptables":
        assert any("--rcheck" in s["text"] and s["matched"] for s in t["steps"])
    elif mode == "nftables":
        assert any("@affinity" in s["text"] and s["matched"] for s in t["steps"])
    elif mode == "userspace":
        assert any("ClientIP affinity" in s["text"] for s in t["steps"])
    again = dp.process(
        packets.from_strings([f"tcp {CLIENT}:40001 -> {vip}"], origin="pod", ts=1.0)
    )[0]
    _agrees(t, again, dp)


@pytest.mark.parametrize("mode", MODES)
def test_acks_without_syn_ack_follow_conntrack(mode):
    """(b) A SYN, then client ACKs that never saw a SYN-ACK: conntrack calls them
    INVALID; iptables drops them (KUBE-FORWARD), nftables lets them through un-NATed.
    eBPF: Cilium's CT tracks no TCP window or handshake state, and the connected socket
    keeps its backend: the ACKs are its established flow."""
    cluster = _cluster()
    vip = _vip(cluster)
    dp = Dataplane(cluster, mode=mode, cluster_cidr=CIDR, seed=1)
    lines = [f"tcp {CLIENT}:40000 -> {vip}"] + [f"tcp {CLIENT}:40000 -> {vip} flags=A"] * 2
    got = []
    for k, line in enumerate(lines):
        t = dp.trace(line, "pod", time=float(k))
        v = dp.process(packets.from_strings([line], origin="pod", ts=float(k)))[0]
        _agrees(t, v, dp)
        got.append(t["verdict"])
        if k:
            assert t["conntrack"] == ("established" if mode == "ebpf" else "invalid")
    if mode == "iptables":
        assert got == ["DNAT", "DROP", "DROP"]
    elif mode == "nftables":
        assert got == ["DNAT", "ACCEPT", "ACCEPT"]
    elif mode == "ebpf":
        assert got == ["DNAT", "DNAT", "DNAT"]


# userspace: the client's flow and the proxy's own connection are two entries, and the
# reply below would come from the proxy, not the endpoint; eBPF: no netfilter conntrack
# (its LRU CT maps evict instead: tests/modes/test_ebpf_dataplane.py)
@pytest.mark.parametrize("mode", [m for m in MODES if m not in ("userspace", "ebpf")])
def test_conntrack_full_drops_the_new_flow(mode):
    """(c) A one-entry conntrack table holding an assured connection: the next SYN finds
    no room (early_drop spares assured entries) and is dropped, in trace as in process."""
    cluster = _cluster()
    vip = _vip(cluster)
    # a one-entry table: max(maxPerCore 1 x 1 CPU, min 1), as kube-proxy sizes it
    config = KubeProxyConfig(conntrack=ConntrackConfig(min=1, max_per_core=1))
    dp = Dataplane(cluster, mode=mode, cluster_cidr=CIDR, config=config, seed=1, cpus=1)
    syn = f"tcp {CLIENT}:40000 -> {vip}"
    first = dp.trace(syn, "pod", commit=True)
    assert first["verdict"] == "DNAT"
    ep = first["endpoint"]
    dp.trace(f"tcp {ep} -> {CLIENT}:40000 flags=SA", "pod", time=1.0, commit=True)
    dp.trace(f"tcp {CLIENT}:40000 -> {vip} flags=A", "pod", time=2.0, commit=True)
    line = f"tcp {CLIENT}:40001 -> {vip}"
    t = dp.trace(line, "pod", time=3.0)
    assert t["verdict"] == "DROP" and t["outcomes"][0]["verdict"] == "DROP"
    assert not t["candidates"]
    v = dp.process(packets.from_strings([line], origin="pod", ts=3.0))[0]
    assert v["action"] == packets.Action.DROP
    _agrees(t, v, dp)


def test_cli_seed_drives_the_draws(tmp_path, capsys):
    """(d) kproxy-emu trace --seed N with several --packet: the draws follow the node's
    seeded stream, as process gives them for that seed."""
    cluster = _cluster(endpoints=6)
    vip = _vip(cluster)
    path = tmp_path / "c.json"
    cluster.dump(str(path))
    node = next(iter(cluster.nodes.values())).name
    lines = [f"tcp {CLIENT}:{40000 + k} -> {vip}" for k in range(6)]
    sequences = set()
    for seed in (1, 2, 3):
        argv = ["trace", str(path), "--node", node, "--json", "--seed", str(seed)]
        for line in lines:
            argv += ["--packet", line]
        assert cli_main([*argv, "--from", "pod"]) == 0
        got = [r["endpoint"] for r in json.loads(capsys.readouterr().out)]
        dp = Dataplane(cluster, node=node, seed=seed)
        batch = packets.from_strings(lines, origin="pod")
        batch["ts"] = np.arange(len(lines), dtype=float)
        want = [dp.endpoints[int(v["endpoint"])] for v in dp.process(batch)]
        assert got == want
        sequences.add(tuple(got))
    assert len(sequences) > 1


# ------------------------------------------------------------------ random sequences

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["new", "reply", "ack", "invalid", "fin", "update"]),
        st.integers(0, 3),  # client
        st.integers(0, 1),  # service
        st.integers(0, 2),  # source port
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.parametrize("mode", MODES)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=_OPS, full=st.booleans())
def test_trace_commit_equals_process(mode, ops, full):
    """The same packets (new flows, replies, established and invalid packets, affinity
    services, a conntrack table that fills up, updates of the cluster in between) through
    two identical nodes: trace(commit=True) on one, process on the other, identical
    verdicts; and trace(commit=False) predicts the next process verdict."""
    clusters = [_cluster(3, 0.5, services=2), _cluster(2, 0.5, services=2)]
    config = KubeProxyConfig(conntrack=ConntrackConfig(min=3, max_per_core=1)) if full else None
    a = Dataplane(clusters[0], mode=mode, cluster_cidr=CIDR, config=config, seed=7, cpus=1)
    b = Dataplane(clusters[0], mode=mode, cluster_cidr=CIDR, config=config, seed=7, cpus=1)
    last: dict = {}  # (client, service, port) -> endpoint of the flow's first packet
    version = 0
    for k, (op, client, svc, port) in enumerate(ops):
        now = 9.0 * k  # crosses IPVS mode's 60 s graceful-termination runs
        src = f"10.0.{client}.9:{40000 + port}"
        vip = _vip(clusters[version], svc)
        if op == "update":
            version = 1 - version
            a.update(clusters[version])
            b.update(clusters[version])
            continue
        if op == "reply":
            ep = last.get((client, svc, port))
            if ep is None:
                continue
            line = f"tcp {ep} -> {src} flags=SA"
        else:
            flags = {"new": "", "ack": " flags=A", "invalid": " flags=A", "fin": " flags=FA"}[op]
            if op == "invalid":
                src = f"10.0.{client}.9:{41000 + port}"  # never opened
            line = f"tcp {src} -> {vip}{flags}"
        predicted = b.trace(line, "pod", time=now)
        v = b.process(packets.from_strings([line], origin="pod", ts=now))[0]
        committed = a.trace(line, "pod", time=now, commit=True)
        _agrees(predicted, v, b)
        _agrees(committed, v, b)
        assert predicted["candidates"] == committed["candidates"]
        if op == "new" and committed["endpoint"] is not None:
            last[(client, svc, port)] = committed["endpoint"]
    if a.conntrack is not None:
        assert a.conntrack.entries().tobytes() == b.conntrack.entries().tobytes()
    assert a.rng.state == b.rng.state


def test_trace_of_a_nodes_own_iptables_dump():
    """trace --iptables-save DUMP: the node's parsed tables run in the same engine; the
    affinity list filled by one connection pins the next, in trace as in process."""
    from kproxy_emu.dataplane.backend import IptablesOptions
    from kproxy_emu.netfilter.iptables_parse import parse

    cluster = _cluster(endpoints=3, affinity=1.0)
    vip = _vip(cluster)
    dump = Dataplane(cluster, cluster_cidr=CIDR).render(format="save")
    nodes = [Dataplane(cluster, IptablesOptions(tables=parse(dump)), seed=5) for _ in range(2)]
    tracer, engine = nodes
    first = tracer.trace(f"tcp {CLIENT}:40000 -> {vip}", "pod", commit=True)
    assert sorted(c["probability"] for c in first["candidates"]) == pytest.approx([1 / 3] * 3)
    assert any(s["chain"].startswith("KUBE-SVC-") and s["matched"] for s in first["steps"])
    v = engine.process(packets.from_strings([f"tcp {CLIENT}:40000 -> {vip}"], origin="pod"))[0]
    _agrees(first, v, engine)
    line = f"tcp {CLIENT}:40001 -> {vip}"
    second = tracer.trace(line, "pod", time=2.0)
    assert [c["endpoint"] for c in second["candidates"]] == [first["endpoint"]]
    v = engine.process(packets.from_strings([line], origin="pod", ts=2.0))[0]
    _agrees(second, v, engine)


def test_ipvs_trace_across_a_graceful_termination_run_changes_nothing():
    """A packet after kube-proxy's 60 s loop is due: trace runs the loop as process would,
    then puts the IPVS table, its bookkeeping and the clock back."""
    from kproxy_emu.dataplane.backend import IpvsOptions

    cluster, smaller = _cluster(endpoints=3), _cluster(endpoints=2)
    vip = _vip(cluster)
    dp = Dataplane(cluster, IpvsOptions(scheduler="lc"), cluster_cidr=CIDR, seed=1)
    for t, client in ((0.0, 1), (1.0, 2), (2.0, 3)):
        dp.process(packets.from_strings([f"tcp 10.0.0.{client}:40000 -> {vip}"], "pod", ts=t))
    dp.update(smaller)  # one real server goes to graceful termination (weight 0)
    backend = dp.backend

    def state():
        sync = backend.ipvs
        return (
            backend.clock,
            backend._next_tick,
            sync.table.connections().tobytes(),
            sync.table.dest_stats().tobytes(),
            dict(sync.graceful),
            dict(sync.dests),
        )

    before = state()
    assert before[4], "no real server in graceful termination"
    line = f"tcp 10.0.0.4:40000 -> {vip}"
    t = dp.trace(line, "pod", time=130.0)
    assert state() == before
    v = dp.process(packets.from_strings([line], origin="pod", ts=130.0))[0]
    _agrees(t, v, dp)
    assert state() != before  # process did run the loop


@pytest.mark.parametrize("mode", ("iptables", "nftables"))
def test_matched_path_is_the_matched_steps_of_the_full_trace(mode):
    """``all_rules=False`` (what verify uses at scale) keeps exactly the matched steps, the
    same as the full trace names them, and the same verdict and outcomes; and after an update
    the names come from the new tables."""
    cluster = _cluster(endpoints=3, affinity=1.0, services=40)
    dp = Dataplane(cluster, mode=mode, cluster_cidr=CIDR, seed=4)
    for k in (0, 17, 39, 17):
        packet = f"tcp {CLIENT}:40000 -> {_vip(cluster, k)}"
        full = dp.trace(packet)
        path = dp.trace(packet, all_rules=False)
        assert path["steps"] == [s for s in full["steps"] if s["matched"]]
        assert len(path["steps"]) < len(full["steps"])
        assert {k: v for k, v in path.items() if k not in ("steps", "steps_omitted")} == {
            k: v for k, v in full.items() if k not in ("steps", "steps_omitted")
        }
    # a changed cluster: new lowered tables, names from them
    dp.update(synth.cluster(40, endpoints=2, seed=9, type_mix={"ClusterIP": 1}))
    svc = next(iter(dp.cluster.services.values()))
    fresh = Dataplane(dp.cluster, mode=mode, cluster_cidr=CIDR, seed=4)
    packet = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    assert dp.trace(packet)["steps"] == fresh.trace(packet)["steps"]
