"""synth's addresses come from the ipam allocators: the default reproduces the sequential
assignment it always had; ip_allocation="apiserver" is kube-apiserver's allocator."""

import ipaddress

import pytest

from kproxy_emu import synth
from kproxy_emu.errors import InputError


def test_default_node_blocks_are_the_cluster_cidr_in_order():
    c = synth.cluster(100, endpoints=2, nodes=10, seed=1)
    blocks = list(ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=12))[:10]
    assert [n.pod_cidrs for n in c.nodes.values()] == [[str(b)] for b in blocks]


def test_default_cluster_ips_are_sequential():
    c = synth.cluster(50, endpoints=1, nodes=2, seed=4)
    for i, svc in enumerate(c.services.values()):
        if svc.proxied:
            assert svc.cluster_ip == str(ipaddress.ip_address("172.16.0.1") + i)


def test_node_cidr_mask_size_as_kube_controller_manager():
    c = synth.cluster(20, endpoints=1, nodes=3, seed=0, node_cidr_mask_size=24)
    assert [n.pod_cidrs[0] for n in c.nodes.values()] == [
        "10.0.0.0/24",
        "10.0.1.0/24",
        "10.0.2.0/24",
    ]


def test_apiserver_allocation_is_seeded_and_in_the_dynamic_band():
    a = synth.cluster(200, endpoints=1, nodes=2, seed=9, ip_allocation="apiserver")
    b = synth.cluster(200, endpoints=1, nodes=2, seed=9, ip_allocation="apiserver")
    ips = [s.cluster_ip for s in a.services.values() if s.proxied]
    assert ips == [s.cluster_ip for s in b.services.values() if s.proxied]
    assert len(set(ips)) == len(ips)
    low = int(ipaddress.ip_address("172.16.1.0"))  # static band: 172.16.0.1-172.16.1.0
    assert all(int(ipaddress.ip_address(ip)) > low for ip in ips)
    # the other draws are untouched by the allocator
    seq = synth.cluster(200, endpoints=1, nodes=2, seed=9)
    assert [s.ports for s in seq.services.values()] == [s.ports for s in a.services.values()]


def test_apiserver_allocation_exhaustion_names_the_flag():
    with pytest.raises(InputError, match="service_cidr: range is full"):
        synth.cluster(
            40,
            endpoints=1,
            nodes=2,
            seed=0,
            ip_allocation="apiserver",
            service_cidr="172.16.0.0/27",
        )


def test_service_range_inside_the_pod_range_is_kept_out_of_node_blocks():
    c = synth.cluster(
        20,
        endpoints=1,
        nodes=3,
        seed=0,
        node_cidr_mask_size=24,
        cluster_cidr="10.0.0.0/16",
        service_cidr="10.0.0.0/23",
    )
    assert [n.pod_cidrs[0] for n in c.nodes.values()] == [
        "10.0.2.0/24",
        "10.0.3.0/24",
        "10.0.4.0/24",
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ip_allocation": "random"}, "ip_allocation: must be sequential or apiserver"),
        ({"node_cidr_mask_size": 4}, "node_cidr_mask_size: node CIDR mask size"),
        ({"node_cidr_mask_size": "24"}, "node_cidr_mask_size: must be an integer"),
        ({"node_cidr_mask_size": 30, "nodes": 3}, None),
    ],
)
def test_bad_options(options, message):
    options = {"nodes": 2, **options}
    if message is None:  # /30 blocks are too small for the endpoints: the old check
        with pytest.raises(InputError, match="pod CIDR blocks too small"):
            synth.cluster(10, endpoints=5, seed=0, **options)
        return
    with pytest.raises(InputError, match=message):
        synth.cluster(10, endpoints=1, seed=0, **options)


def test_explicit_mask_decides_how_many_nodes_fit():
    c = synth.cluster(
        10, endpoints=1, nodes=300, seed=0, cluster_cidr="10.0.0.0/16", node_cidr_mask_size=26
    )
    assert list(c.nodes.values())[-1].pod_cidrs == ["10.0.74.192/26"]
    with pytest.raises(InputError, match="cluster_cidr: CIDR allocation failed"):
        synth.cluster(
            10, endpoints=1, nodes=300, seed=0, cluster_cidr="10.0.0.0/16", node_cidr_mask_size=23
        )
