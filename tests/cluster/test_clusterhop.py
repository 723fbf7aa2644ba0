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
    known = np.concatenate([cdp._host_keys, cdp._net_start, cdp._net_start + 7])
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
        clusterhop.Routes(cdp._host_keys, cdp._host_vals + 5, [], [], [], True, [], [], [], [], 2)
