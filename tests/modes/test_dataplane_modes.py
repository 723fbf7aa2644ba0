"""The Dataplane facade in every mode: the same calls, the same verdict arrays, and the
engine's choices inside the reference tracer's candidates."""

import numpy as np
import pytest

from kproxy_emu import Dataplane, IpvsOptions, packets
from kproxy_emu.bench import sweep
from kproxy_emu.errors import InputError

MODES = ("iptables", "nftables", "ipvs", "userspace", "ebpf")


@pytest.fixture(scope="module")
def cluster():
    return sweep.make_cluster(60, 4, 5)


@pytest.mark.parametrize("mode", MODES)
def test_engine_verdicts_are_among_the_tracers_outcomes(cluster, mode):
    dp = Dataplane(cluster, mode=mode, cluster_cidr="10.0.0.0/8", seed=3)
    spec = sweep.BenchSpec(
        services=[60], packets=400, origin_mix={"pod": 1, "external": 1, "host": 1}
    )
    batch = sweep.traffic(dp, spec, 9)
    out = dp.process(batch)
    # a node without flows can draw any endpoint in iptables and nftables mode; IPVS and
    # the userspace proxy schedule from their state, so there the trace runs on a twin
    # that saw the same packets
    stateless = mode not in ("ipvs", "userspace")
    tracer = Dataplane(
        cluster, mode=mode, cluster_cidr="10.0.0.0/8", conntrack=not stateless, seed=3
    )
    for line, row, v in zip(packets.to_strings(batch[:150]), batch[:150], out[:150]):
        t = tracer.trace(line, time=float(row["ts"]), commit=not stateless)
        verdicts = {
            o["verdict"]
            if o["verdict"] in ("DROP", "REJECT")
            else ("DNAT" if o["dnat"] else "ACCEPT")
            for o in t["outcomes"]
        }
        assert packets.Action(int(v["action"])).name in verdicts, (mode, line, t["outcomes"])
        if v["action"] == packets.Action.DNAT:
            ep = dp.endpoints[int(v["endpoint"])]
            assert ep == packets.dnat_text(v)
            assert ep in {c["endpoint"] for c in t["candidates"]}
            masq = {c["masquerade"] for c in t["candidates"] if c["endpoint"] == ep}
            assert bool(v["snat_ip"]) in masq


def test_modes_agree_on_verdict_counts(cluster):
    counts = []
    for mode in MODES:
        dp = Dataplane(cluster, mode=mode, cluster_cidr="10.0.0.0/8", seed=3)
        batch = sweep.traffic(dp, sweep.BenchSpec(services=[60], packets=1000), 4)
        out = dp.process(batch)
        counts.append(np.bincount(out["action"], minlength=4).tolist())
    assert counts[0] == counts[1]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])  # ipvs: test_ipvs_dataplane.py
def test_update_and_established_flows(cluster, mode):
    dp = Dataplane(cluster, mode=mode, cluster_cidr="10.0.0.0/8", seed=3)
    batch = sweep.traffic(dp, sweep.BenchSpec(services=[60], packets=500), 2)
    first = dp.process(batch)
    alive = first["action"] <= packets.Action.DNAT
    result = dp.update(sweep.one_endpoint_changed(cluster))
    assert result.ok and not result.full and result.cost()["bytes"] > 0
    dp.process(packets.replies(batch[alive], first[alive], start=dp.clock))
    again = dp.process(
        packets.next_packets(batch[alive], start=dp.clock + 1.0)
    )  # SCTP COOKIE_WAIT lasts 3 s
    assert again["ct_hit"].all()
    assert (again["endpoint"] == first["endpoint"][alive]).all()


def test_render_formats_and_errors(cluster, tmp_path):
    dp = Dataplane(cluster, mode="nftables", cluster_cidr="10.0.0.0/8")
    assert dp.render().startswith("add table ip kube-proxy")
    assert dp.render(format="save").startswith("table ip kube-proxy {")
    assert "add rule ip kube-proxy" in dp.render(sorted=True)
    with pytest.raises(InputError, match="--format"):
        dp.render(format="xml")
    with pytest.raises(InputError, match="mode"):
        Dataplane(cluster, mode="winkernel")


def test_ipvs_connection_table_size(cluster):
    """conn_tab_bits sizes IPVS's connection hash: with the kernel's 4,096 buckets and
    thousands of connections, established packets walk longer chains (more probes)."""
    batch = None
    probes = {}
    for bits in (8, 16):
        dp = Dataplane(cluster, IpvsOptions(conn_tab_bits=bits), cluster_cidr="10.0.0.0/8", seed=3)
        if batch is None:
            batch = sweep.traffic(dp, sweep.BenchSpec(services=[60], packets=3000), 8)
        first = dp.process(batch)
        alive = first["action"] == packets.Action.DNAT
        dp.process(packets.replies(batch[alive], first[alive], start=dp.clock))
        again = dp.process(packets.next_packets(batch[alive], start=dp.clock + 1.0))
        assert again["ct_hit"].all()
        probes[bits] = float(again["probes"].mean())
    assert probes[8] > probes[16] + 2
    for bad in (7, 21, True, "12"):
        with pytest.raises(InputError, match="conn_tab_bits"):
            IpvsOptions(conn_tab_bits=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--ipvs-conn-tab-bits"):
        sweep.BenchSpec(ipvs_conn_tab_bits=30).validate()


@pytest.mark.parametrize("mode", MODES)
def test_update_sees_a_cluster_changed_in_place(mode):
    """update() without a new cluster: replaced, added and removed objects in the
    Dataplane's own cluster are found (a partial sync of exactly those services)."""
    import dataclasses

    cluster = sweep.make_cluster(30, 3, 8)
    dp = Dataplane(cluster, mode=mode, cluster_cidr="10.0.0.0/8")
    key, sl = next((k, s) for k, s in cluster.endpoint_slices.items() if s.endpoints)
    eps = [dataclasses.replace(sl.endpoints[0], ready=False, serving=False)] + sl.endpoints[1:]
    cluster.endpoint_slices[key] = dataclasses.replace(sl, endpoints=eps)
    result = dp.update()
    assert result.changed == {(sl.namespace, sl.service_name)}
    assert dp.update().changed == set()  # nothing new since
    svc_key = next(iter(cluster.services))
    del cluster.services[svc_key]
    assert svc_key in dp.update().changed
