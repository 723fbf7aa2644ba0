"""Synthetic clusters: determinism, the requested mix, and a load/dump round trip."""

from collections import Counter

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu import synth
from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster
from kproxy_emu.model.files import to_yaml


def test_same_seed_same_cluster_and_different_seed_differs():
    a = synth.cluster(300, seed=5)
    assert synth.cluster(300, seed=5) == a
    assert synth.cluster(300, seed=6) != a


@pytest.mark.parametrize("suffix", [pytest.param(".yaml", marks=pytest.mark.slow), ".json"])
def test_dump_and_load_round_trip(tmp_path, suffix):
    cluster = synth.cluster(400, endpoints="uniform:0-120", nodes=7, seed=3, pods=True)
    path = tmp_path / f"c{suffix}"
    cluster.dump(path)
    assert Cluster.from_files(path) == cluster


def test_mix_of_types_policies_and_conditions():
    cluster = synth.cluster(4000, seed=1)
    services = list(cluster.services.values())
    kinds = Counter("Headless" if s.headless else s.type for s in services)
    assert set(kinds) == {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Headless"}
    assert 0.70 < kinds["ClusterIP"] / 4000 < 0.80  # default share 0.75
    lbs = [s for s in services if s.type == "LoadBalancer"]
    assert any(s.lb_source_ranges for s in lbs) and any(not s.lb_source_ranges for s in lbs)
    assert any(s.external_traffic_policy == "Local" and s.health_check_node_port for s in lbs)
    assert any(s.internal_traffic_policy == "Local" for s in services)
    assert any(s.session_affinity == "ClientIP" for s in services)
    assert {p.protocol for s in services for p in s.ports} == {"TCP", "UDP", "SCTP"}
    assert any(len(s.ports) > 1 for s in services)
    for s in services:
        assert len({p.name for p in s.ports}) == len(s.ports)
    eps = [e for sl in cluster.endpoint_slices.values() for e in sl.endpoints]
    states = Counter((e.ready, e.serving, e.terminating) for e in eps)
    assert states[(False, True, True)] > 0 and states[(False, False, False)] > 0
    # no ExternalName service has endpoints; every other service has a slice
    by_service = cluster.slices_by_service()
    for s in services:
        assert (s.key in by_service) == (s.type != "ExternalName")


def test_addresses_are_unique_and_inside_their_ranges():
    cluster = synth.cluster(2000, endpoints=12, nodes=5, seed=2)
    ips = [s.cluster_ip for s in cluster.services.values() if s.proxied]
    assert len(ips) == len(set(ips))
    pod_ips = [
        a for sl in cluster.endpoint_slices.values() for e in sl.endpoints for a in e.addresses
    ]
    assert len(pod_ips) == len(set(pod_ips))
    import ipaddress

    blocks = {n.name: ipaddress.ip_network(n.pod_cidrs[0]) for n in cluster.nodes.values()}
    for sl in cluster.endpoint_slices.values():
        for e in sl.endpoints:
            assert ipaddress.ip_address(e.addresses[0]) in blocks[e.node_name]
    node_ports = [p.node_port for s in cluster.services.values() for p in s.ports if p.node_port]
    node_ports += [
        s.health_check_node_port for s in cluster.services.values() if s.health_check_node_port
    ]
    assert len(node_ports) == len(set(node_ports))
    assert all(30000 <= p <= 32767 for p in node_ports)


def test_endpoint_count_distributions_and_slice_size():
    fixed = synth.cluster(50, endpoints=250, seed=1, type_mix={"ClusterIP": 1})
    for _key, slices in fixed.slices_by_service().items():
        assert [len(s.endpoints) for s in slices] == [100, 100, 50]
    uniform = synth.cluster(300, endpoints="uniform:2-4", seed=1, type_mix={"ClusterIP": 1})
    counts = {sum(len(s.endpoints) for s in sl) for sl in uniform.slices_by_service().values()}
    assert counts == {2, 3, 4}
    poisson = synth.cluster(300, endpoints="poisson:3", seed=1, type_mix={"ClusterIP": 1})
    counts = [sum(len(s.endpoints) for s in sl) for sl in poisson.slices_by_service().values()]
    assert 0 in counts and 2.5 < sum(counts) / len(counts) < 3.5


@pytest.mark.parametrize(
    "options,field",
    [
        ({"endpoints": "lots"}, "endpoints"),
        ({"endpoints": "uniform:5-2"}, "endpoints"),
        ({"nodes": 0}, "nodes"),
        ({"type_mix": {"Ingress": 1.0}}, "type_mix.Ingress"),
        ({"type_mix": {"ClusterIP": 0}}, "type_mix"),
        ({"terminating_share": 1.5}, "terminating_share"),
        ({"service_cidr": "10.0.0.0/33"}, "service_cidr"),
        ({"service_cidr": "10.0.0.0/28"}, "service_cidr"),
    ],
)
def test_bad_options_are_clear_errors(options, field):
    with pytest.raises(InputError, match=f"^{field}: "):
        synth.cluster(100, **options)


_scalars = st.one_of(st.text(max_size=20), st.integers(-(10**6), 10**6), st.booleans(), st.none())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(
    st.lists(
        st.dictionaries(st.text(min_size=1, max_size=10), _values, min_size=1, max_size=5),
        min_size=1,
        max_size=3,
    )
)
def test_yaml_writer_reads_back_identically_with_pyyaml(docs):
    assert list(yaml.safe_load_all(to_yaml(docs))) == docs
