"""Traffic a node would see, and why any of it is dropped (issue 18 item 13): the README's
snippet gave 36.7% DROP with no explanation (other nodes' NodePorts; repeats that are
ACKs before any reply)."""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets
from kproxy_emu.bench import report, sweep
from kproxy_emu.errors import InputError

MODES = ("iptables", "nftables", "ipvs")


@pytest.fixture(scope="module")
def cluster():
    return sweep.make_cluster(300, 4, 3)


def _frontends(arr) -> set[tuple[int, int, int]]:
    return set(zip(arr["dst_ip"].tolist(), arr["dst_port"].tolist(), arr["proto"].tolist()))


def test_traffic_aimed_at_a_dataplane_is_what_its_node_serves(cluster):
    dp = Dataplane(cluster, "iptables", node="node-0001", cluster_cidr="10.0.0.0/8")
    served = set(
        zip(*(dp.packet_targets()[f].tolist() for f in ("ip", "port", "proto")), strict=True)
    )
    mine = packets.synth(dp, 5000, seed=7)
    assert _frontends(mine) <= served
    # aimed at the whole cluster, other nodes' NodePorts are in it (this node forwards them)
    assert not _frontends(packets.synth(cluster, 5000, seed=7)) <= served
    sources = dp.packet_sources()
    assert sources["pod"] == ["10.0.0.0/8"] and sources["host"] == list(dp.options.node.ips[:1])


@pytest.mark.parametrize("mode", MODES)
def test_the_readme_flow_drops_only_by_policy_and_replies_make_flows_established(cluster, mode):
    dp = Dataplane(cluster, mode, node="node-0001", cluster_cidr="10.0.0.0/8", seed=1)
    traffic = packets.synth(dp, 3000, seed=7, new_flow_share=1.0)
    verdicts = dp.process(traffic)
    ok = verdicts["action"] <= packets.Action.DNAT
    dp.process(packets.replies(traffic[ok], verdicts[ok], start=dp.clock))
    established = dp.process(packets.next_packets(traffic[ok], start=dp.clock + 1))
    assert established["ct_hit"].all()
    assert (established["action"] == verdicts["action"][ok]).all()
    twin = Dataplane(cluster, mode, node="node-0001", cluster_cidr="10.0.0.0/8", seed=1)
    reasons = sweep.drop_reasons(twin, traffic, twin.process(traffic))
    assert sum(reasons.values()) == int((~ok).sum()) > 0
    assert not any(r.startswith("not traced") for r in reasons), reasons
    # a Service's own policy, named as kube-proxy's rules name it
    assert any("KUBE-FW" in r or "SOURCE-RANGES" in r or "saddr" in r for r in reasons), reasons


def test_no_drop_no_reasons(cluster):
    dp = Dataplane(cluster, "nftables", cluster_cidr="10.0.0.0/8")
    batch = packets.synth(dp, 50, seed=1, new_flow_share=1.0)
    out = dp.process(batch)
    keep = out["action"] == packets.Action.DNAT
    assert sweep.drop_reasons(dp, batch[keep], out[keep]) == {}


def test_bench_records_and_table_give_the_drop_reasons(cluster):
    spec = sweep.BenchSpec(
        services=[300],
        endpoints=4,
        packets=2000,
        repeat=1,
        seed=3,
        # the modes with drops for this traffic (eBPF: its connect() refusals)
        modes=("iptables", "nftables", "ipvs", "ebpf"),
    )
    result = sweep.run(spec, progress=False)
    new = [r for r in result["records"] if r["flow"] == "new"]
    assert len(new) == len(spec.modes)
    for rec in new:
        dropped = rec["actions"].get("DROP", 0) + rec["actions"].get("REJECT", 0)
        assert sum(rec["drop_reasons"].values()) == dropped > 0, rec["drop_reasons"]
    text = report.table(result)
    assert "new flows dropped or rejected (the deciding rule, from traces):" in text
    assert "has no local endpoints" in text


def test_replies_check_their_verdicts(cluster):
    dp = Dataplane(cluster, "iptables", cluster_cidr="10.0.0.0/8")
    batch = packets.synth(dp, 10, seed=1)
    with pytest.raises(InputError, match="verdicts: must be the VERDICT_DTYPE array"):
        packets.replies(batch, np.zeros(3))
    rep = packets.replies(batch, dp.process(batch))
    assert rep["ts"][0] == pytest.approx(batch["ts"][-1] + 0.001)
    assert np.diff(rep["ts"]) == pytest.approx(np.diff(batch["ts"]))
