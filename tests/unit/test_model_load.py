"""Loading manifests as kubectl writes them, defaults, canonical values, round trips."""

import json

import pytest

from kproxy_emu.model import Cluster, UnsupportedKindWarning
from kproxy_emu.model.mirror import MANAGED_BY_LABEL, MIRROR_CONTROLLER
from tests.helpers.fixtures import as_manifests, fixture_inputs

SERVICE_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  type: LoadBalancer
  clusterIP: 172.30.0.041
  ports:
  - name: http
    port: 80
    targetPort: http-alt
    nodePort: 30080
  - name: dns
    port: 53
    protocol: UDP
  externalIPs: [192.168.99.022]
  loadBalancerSourceRanges: [" 203.0.113.5/25"]
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  healthCheckNodePort: 30000
status:
  loadBalancer:
    ingress:
    - ip: 1.2.3.4
    - ip: 5.6.7.8
      ipMode: Proxy
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.0.1.5]
  nodeName: node-a
  zone: zone-a
  hints: {forZones: [{name: zone-a}]}
- addresses: [10.0.2.7]
  conditions: {ready: false, serving: true, terminating: true}
ports:
- name: http
  port: 8080
- name: dns
  port: 53
  protocol: UDP
"""


@pytest.mark.parametrize(
    "where,services,slices", fixture_inputs(), ids=[f[0] for f in fixture_inputs()]
)
def test_every_kube_proxy_fixture_loads_and_round_trips(where, services, slices):
    cluster = Cluster.from_dicts(as_manifests(services, slices))
    assert len(cluster.services) == len(services)
    assert len(cluster.endpoint_slices) == len(slices)
    assert Cluster.from_dicts(cluster.to_manifests()) == cluster


def test_service_fields_defaults_and_canonical_values(write):
    cluster = Cluster.from_files(write("web.yaml", SERVICE_YAML))
    svc = cluster.services[("shop", "web")]
    assert svc.cluster_ip == "172.30.0.41"  # leading zeros read as kube-proxy reads them
    assert svc.cluster_ips == ["172.30.0.41"]
    assert svc.external_ips == ["192.168.99.22"]
    assert svc.lb_source_ranges == ["203.0.113.0/25"]  # trimmed and masked
    http, dns = svc.ports
    assert (http.protocol, http.target_port, http.node_port) == ("TCP", "http-alt", 30080)
    assert (dns.protocol, dns.target_port, dns.node_port) == ("UDP", 53, 0)
    assert svc.session_affinity == "ClientIP" and svc.affinity_timeout == 10800
    assert [i.ip_mode for i in svc.lb_ingress] == ["", "Proxy"]
    assert svc.external_traffic_policy == "Local"
    assert svc.internal_traffic_policy == "Cluster"
    assert svc.proxied and not svc.headless

    eps = cluster.endpoint_slices[("shop", "web-abcde")]
    assert eps.service_name == "web"
    first, second = eps.endpoints
    assert (first.ready, first.serving, first.terminating) == (None, None, None)
    assert (first.is_ready, first.is_serving, first.is_terminating) == (True, True, False)
    assert first.hints_zones == ["zone-a"] and first.zone == "zone-a"
    assert (second.is_ready, second.is_serving, second.is_terminating) == (False, True, True)
    assert [p.protocol for p in eps.ports] == ["TCP", "UDP"]
    assert cluster.slices_by_service() == {("shop", "web"): [eps]}


def test_yaml_json_list_and_typed_list_and_directory_load_the_same(write, tmp_path):
    from_yaml = Cluster.from_files(write("a/web.yaml", SERVICE_YAML))
    docs = from_yaml.to_manifests()
    as_list = write("b/list.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert Cluster.from_files(as_list) == from_yaml
    typed = {
        "apiVersion": "v1",
        "kind": "ServiceList",
        "items": [{k: v for k, v in docs[0].items() if k not in ("kind", "apiVersion")}],
    }
    write("c/services.json", json.dumps(typed))
    write("c/nested/slices.yaml", json.dumps(docs[1]))
    write("c/README.txt", "not a manifest")
    assert Cluster.from_files(tmp_path / "c") == from_yaml


def test_headless_externalname_and_minimal_objects():
    cluster = Cluster.from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "h"},
                "spec": {"clusterIP": "None"},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"type": "ExternalName", "externalName": "example.com"},
            },
        ]
    )
    h, x = cluster.services[("default", "h")], cluster.services[("default", "x")]
    assert h.headless and not h.proxied and h.ports == []
    assert x.type == "ExternalName" and not x.proxied


def test_nodes_pods_namespaces_servicecidrs_networkpolicies_round_trip():
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "ns1", "labels": {"team": "a"}},
        },
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "ExternalIP", "address": "203.0.113.9"},
                    {"type": "InternalIP", "address": "192.168.0.2"},
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns1"},
            "spec": {"nodeName": "n1", "hostNetwork": False},
            "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "phase": "Running"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.0/12"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "ns1"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                        "ports": [{"protocol": "TCP", "port": 80}],
                    }
                ],
            },
        },
    ]
    cluster = Cluster.from_dicts(docs)
    node = cluster.node("n1")
    assert node.zone == "z1" and node.ips == ["192.168.0.2", "203.0.113.9"]
    assert node.pod_cidrs == ["10.244.1.0/24", "fd00:1::/64"]
    assert cluster.pods[("ns1", "p")].pod_ips == ["10.244.1.5"]
    assert cluster.service_cidrs[("", "kubernetes")].cidrs == ["10.96.0.0/12"]
    assert cluster.network_policies[("ns1", "deny")].spec["ingress"][0]["ports"][0]["port"] == 80
    assert Cluster.from_dicts(cluster.to_manifests()) == cluster


def test_legacy_endpoints_are_mirrored_into_slices():
    cluster = Cluster.from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "db", "namespace": "ns"},
                "subsets": [
                    {
                        "addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}, {"ip": "fd00::1"}],
                        "notReadyAddresses": [{"ip": "10.0.0.2"}],
                        "ports": [{"name": "pg", "port": 5432}],
                    }
                ],
            },
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": "skipped",
                    "namespace": "ns",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                },
                "subsets": [{"addresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 1}]}],
            },
        ]
    )
    slices = cluster.slices_by_service()
    assert list(slices) == [("ns", "db")]
    by_family = {s.address_type: s for s in slices[("ns", "db")]}
    v4 = by_family["IPv4"]
    assert [(e.addresses, e.ready, e.node_name) for e in v4.endpoints] == [
        (["10.0.0.1"], True, "n1"),
        (["10.0.0.2"], False, ""),
    ]
    assert [(p.name, p.port, p.protocol) for p in v4.ports] == [("pg", 5432, "TCP")]
    assert v4.labels[MANAGED_BY_LABEL] == MIRROR_CONTROLLER
    assert [e.addresses for e in by_family["IPv6"].endpoints] == [["fd00::1"]]


def test_endpoints_ignored_when_the_service_has_slices():
    cluster = Cluster.from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "db"},
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 5432}]}],
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "db-x", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.7"]}],
                "ports": [{"port": 5432}],
            },
        ]
    )
    assert list(cluster.endpoint_slices) == [("default", "db-x")]


def test_v1beta1_slice_topology_is_converted():
    cluster = Cluster.from_dicts(
        [
            {
                "apiVersion": "discovery.k8s.io/v1beta1",
                "kind": "EndpointSlice",
                "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "svc"}},
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": ["10.0.0.1"],
                        "topology": {
                            "kubernetes.io/hostname": "n1",
                            "topology.kubernetes.io/zone": "z",
                        },
                    }
                ],
                "ports": [{"port": 80}],
            }
        ]
    )
    ep = cluster.endpoint_slices[("default", "s")].endpoints[0]
    assert (ep.node_name, ep.zone) == ("n1", "z")


def test_unknown_kinds_are_skipped_with_a_warning(write):
    path = write(
        "mixed.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n" + SERVICE_YAML,
    )
    with pytest.warns(UnsupportedKindWarning, match="Deployment d"):
        cluster = Cluster.from_files(path)
    assert len(cluster.services) == 1


def test_slow_path_and_fast_path_endpoints_agree():
    """Endpoint decoding takes a short path for common slices; it must equal the full one."""
    base = {
        "addresses": ["10.0.0.1"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": "n1",
        "zone": "z",
    }
    slow = dict(base, hints={"forZones": [{"name": "z"}]})  # hints force the full path
    c = Cluster.from_dicts(
        [
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "s"},
                "addressType": "IPv4",
                "endpoints": [base, slow],
            }
        ]
    )
    fast_ep, slow_ep = c.endpoint_slices[("default", "s")].endpoints
    slow_ep.hints_zones = []
    assert fast_ep == slow_ep


def test_kube_proxy_fixtures_are_present():
    from tests.helpers.fixtures import require_fixtures

    require_fixtures()
    assert fixture_inputs()
