"""The compiled hop passes (cext/clusterhop.pyx) against the numpy definitions they
replace: the verdict struct's layout, the Outcome/Path codes, the routing lookup."""

import numpy as np
import pytest

from kproxy_emu import synth
from kproxy_emu._cext import clusterhop
from kproxy_emu.cluster_net import ClusterDataplane
from kproxy_emu.cluster_net.network import CLUSTER_VERDICT_DTYPE, Outcome, Path


def test_struct_matches_dtype():
    layout = clusterhop.struct_layout()
    assert layout["itemsize"] == CLUSTER_VERDICT_DTYPE.itemsize
    assert layout["fields"] == {k: v[1] for k, v in CLUSTER_VERDICT_DTYPE.fields.items()}


def test_codes_match_enums():
    assert clusterhop.OUT_DELIVERED == Outcome.DELIVERED
    assert clusterhop.OUT_LEFT == Outcome.LEFT
    assert clusterhop.OUT_DROPPED == Outcome.DROPPED
    assert clusterhop.OUT_REJECTED == Outcome.REJECTED
    assert clusterhop.OUT_MTU == Outcome.MTU
    assert clusterhop.OUT_NO_ROUTE == Outcome.NO_ROUTE
    assert clusterhop.PATH_NONE == Path.NONE
    assert clusterhop.PATH_LOCAL == Path.LOCAL
    assert clusterhop.PATH_OUT == Path.OUT


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", None])
def test_compiled_route_equals_numpy_route(cidr):
    cluster = synth.cluster(30, endpoints=3, nodes=4, seed=3, type_mix={"ClusterIP": 1})
    cdp = ClusterDataplane(cluster, "iptables", cluster_cidr=cidr)
    rng = np.random.default_rng(0)
    ends = cdp._net_start | ~cdp._net_mask
    known = np.concatenate(
        [cdp._host_keys, cdp._host_keys + 1, cdp._host_keys - 1, cdp._net_start - 1]
        + [cdp._net_start, cdp._net_start + 7, ends, ends + 1, np.array([0, 2**32 - 1])]
    )
    ips = np.concatenate(
        [known, rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32)]
    ).astype(np.uint32)
    ips = np.concatenate([ips, (ips & 0xFF00FFFF) | 0x0A000000]).astype(np.uint32)
    got = cdp._compiled_routes().route(ips)
    want = cdp.route(ips)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


def test_bad_indices_raise():
    cluster = synth.cluster(5, endpoints=2, nodes=2, seed=3, type_mix={"ClusterIP": 1})
    cdp = ClusterDataplane(cluster, "iptables")
    with pytest.raises(ValueError):
        clusterhop.group(np.array([0, 5], np.int16), 2)
    bounds = clusterhop.group(np.array([1, -1, 0, 1, 0], np.int16), 2)
    assert bounds.tolist() == [0, 2, 4]
    with pytest.raises(ValueError):
        clusterhop.Routes([0, 5], [0, 2], [0, 0], 2)  # owner out of range
    with pytest.raises(ValueError):
        clusterhop.Routes([1, 5], [0, 1], [0, 0], 2)  # not from 0
    with pytest.raises(ValueError):
        clusterhop.Routes([0, 5, 5], [0, 1, 1], [0, 0, 0], 2)  # not ascending
    assert cdp._compiled_routes().n_nodes == 2


def test_compiled_route_with_overlapping_pod_cidrs():
    cluster = synth.cluster(10, endpoints=2, nodes=3, seed=3, type_mix={"ClusterIP": 1})
    names = sorted(cluster.nodes)
    first = cluster.nodes[names[0]].pod_cidrs[0]
    wider = first.rsplit("/", 1)[0] + "/" + str(int(first.rsplit("/", 1)[1]) - 4)
    cluster.nodes[names[2]].pod_cidrs = [wider]
    cdp = ClusterDataplane(cluster, "iptables", cluster_cidr="10.0.0.0/8")
    assert not cdp._nets_disjoint
    start = np.array([n for n, _, _ in cdp._nets], np.int64)
    ips = (start[:, None] + np.arange(-3, 5000, 37)[None, :]).ravel() % 2**32
    ips = ips.astype(np.uint32)
    got = cdp._compiled_routes().route(ips)
    for g, w in zip(got, cdp.route(ips), strict=True):
        assert np.array_equal(g, w)


def test_verdict_rows_have_zero_padding():
    cluster = synth.cluster(20, endpoints=3, nodes=3, seed=3, type_mix={"ClusterIP": 1})
    cdp = ClusterDataplane(cluster, "iptables", cluster_cidr="10.0.0.0/8")
    from kproxy_emu import packets

    targets = cluster.packet_targets()
    cidrs = [c for n in cluster.nodes.values() for c in n.pod_cidrs]
    batch = packets.synth(targets, 500, seed=1, origin_mix={"pod": 1.0}, sources={"pod": cidrs})
    lengths = np.where(np.arange(500) % 7 == 0, 9000, 60)
    v = cdp.process(batch, None, lengths)
    pad = v.view(np.uint8).reshape(len(v), CLUSTER_VERDICT_DTYPE.itemsize)[:, 27:]
    assert (v["outcome"] == Outcome.MTU).any() and not pad.any()
