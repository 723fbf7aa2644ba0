"""nftables engine: ns per packet for new and established flows, and the lowering time.

    pytest benchmarks/bench_nft.py --benchmark-only
KPROXY_EMU_BENCH_SERVICES: the cluster sizes, comma-separated (default "1000,10000").
nftables finds a service with map lookups, so the per-packet cost must be flat in the
service count: compare the rows of different sizes (extra_info has rules and probes per
packet, which must not grow either).
"""

import os

import numpy as np
import pytest

from kproxy_emu import packets, synth
from kproxy_emu._cext import nftmaps, pipeline
from kproxy_emu._cext.conntrack import ConntrackTable
from kproxy_emu.dataplane.dataplane import resolve_node
from kproxy_emu.dataplane.nft_lowering import lower_nft
from kproxy_emu.modes.nftables import compile_nftables
from kproxy_emu.proxy import ProxyOptions, ProxyView

SIZES = [int(s) for s in os.environ.get("KPROXY_EMU_BENCH_SERVICES", "1000,10000").split(",")]
BATCH = 100_000
DYN_SLOTS = 1 << 20


class _Node:
    def __init__(self, services: int):
        self.cluster = synth.cluster(services, endpoints=10, seed=1)
        self.options = ProxyOptions.build(
            resolve_node(self.cluster), None, cluster_cidr="10.0.0.0/8"
        )
        self.table = compile_nftables(
            ProxyView(self.cluster, self.options), service_cidrs=["172.16.0.0/12"]
        )
        self.low = lower_nft(self.table)
        self.local = np.array(
            [packets.ip_to_u32(ip) for ip in self.options.node.local_ips if ":" not in ip],
            np.uint32,
        )
        self.masq = packets.ip_to_u32(self.options.node.primary_ip)
        # frontends this node serves (NodePorts on its own addresses)
        self.targets = self.cluster.packet_targets(node_ips=self.options.node.local_ips)

    def run(self, batch, ct=None, rng=1):
        out = packets.empty_verdicts(len(batch))
        dyn = (np.zeros(DYN_SLOTS, np.uint64), np.zeros(DYN_SLOTS))
        engine = nftmaps.NftEngine(*self.low.engine_arrays(), self.local, self.masq, dyn=dyn)
        pipeline.run(engine, batch, out, ct, pipeline.Rng(rng))
        return out


@pytest.fixture(scope="module", params=SIZES, ids=[f"{n}svc" for n in SIZES])
def node(request):
    return _Node(request.param)


def _record(benchmark, verdicts):
    benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.median / len(verdicts) * 1e9
    benchmark.extra_info["rules_per_packet"] = float(verdicts["rules"].mean())
    benchmark.extra_info["probes_per_packet"] = float(verdicts["probes"].mean())


def test_new_flows_without_conntrack(benchmark, node):
    """Every packet is a flow's first: all hooks, every lookup, a numgen draw."""
    batch = packets.synth(node.targets, BATCH, seed=1, new_flow_share=1.0)
    verdicts = benchmark(node.run, batch)
    _record(benchmark, verdicts)
    assert (verdicts["action"] == packets.Action.DNAT).mean() > 0.8


def test_new_flows_to_one_service(benchmark, node):
    """The same first packet over and over (hot caches): the engine's own work per packet,
    which must not depend on the table's size."""
    svc = next(s for s in node.cluster.services.values() if s.type == "ClusterIP")
    line = f"{svc.ports[0].protocol.lower()} 10.0.0.7:40000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    verdicts = benchmark(node.run, packets.from_strings([line] * BATCH, origin="pod"))
    _record(benchmark, verdicts)
    assert (verdicts["action"] == packets.Action.DNAT).all()


def test_new_flows_with_conntrack(benchmark, node):
    """New flows into an empty conntrack table: allocate, walk the chains, confirm."""
    batch = packets.synth(node.targets, BATCH, seed=2, new_flow_share=1.0)

    def fresh():
        return (batch, ConntrackTable(2 * BATCH, 7)), {}

    verdicts = benchmark.pedantic(node.run, setup=fresh, rounds=5, iterations=1)
    _record(benchmark, verdicts)
    assert not verdicts["ct_hit"].any()


def test_established_flows(benchmark, node):
    """Packets of flows conntrack holds (after the handshake): stored translation, filter
    chains only."""
    syn = packets.synth(node.targets, BATCH, seed=3, new_flow_share=1.0, origin_mix={"pod": 1.0})
    ct = ConntrackTable(4 * BATCH, 7)
    first = node.run(syn, ct)
    ok = first["action"] == packets.Action.DNAT
    syn, first = syn[ok], first[ok]
    reply = syn.copy()
    reply["src_ip"], reply["src_port"] = first["dnat_ip"], first["dnat_port"]
    reply["dst_ip"] = np.where(first["snat_ip"] != 0, first["snat_ip"], syn["src_ip"])
    reply["dst_port"] = np.where(first["snat_ip"] != 0, first["snat_port"], syn["src_port"])
    reply["tcp_flags"] = np.where(syn["proto"] == 6, packets.TcpFlag.SYN | packets.TcpFlag.ACK, 0)
    reply["ts"] = 0.5
    node.run(reply, ct)
    ack = syn.copy()
    ack["tcp_flags"] = np.where(syn["proto"] == 6, packets.TcpFlag.ACK, 0)
    ack["ts"] = 1.0
    verdicts = benchmark(node.run, ack, ct)
    _record(benchmark, verdicts)
    assert verdicts["ct_hit"].mean() > 0.99


def test_lowering(benchmark, node):
    """The table to the engine's arrays (once per sync)."""
    low = benchmark.pedantic(lower_nft, args=(node.table,), rounds=2, iterations=1)
    benchmark.extra_info["rules"] = len(low.rule_start)
    benchmark.extra_info["rows"] = len(low.exprs)
    benchmark.extra_info["set_elements"] = int(node.table.element_count)
