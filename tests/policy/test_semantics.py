"""Hand-written NetworkPolicy cases for what the truth tables leave thin: endPort, named
ports on egress rules, protocol-only entries, defaulted policyTypes, ipBlock except,
external addresses, the Decision's policy and rule names, --via-service."""

from __future__ import annotations

import json

import pytest

from kproxy_emu.model import Cluster
from kproxy_emu.policy import allowed, reachability, service_frontend


def ns(name, labels=None):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }


def pod(namespace, name, ip, labels=None, ports=()):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "ports": list(ports)}]},
        "status": {"podIP": ip},
    }


def policy(namespace, name, spec):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


BASE = [
    ns("x"),
    ns("y", {"team": "blue"}),
    pod("x", "a", "10.0.0.1", {"app": "a"}, [{"name": "web", "containerPort": 8080}]),
    pod("x", "b", "10.0.0.2", {"app": "b"}, [{"name": "web", "containerPort": 9090}]),
    pod(
        "y",
        "c",
        "10.0.1.3",
        {"app": "c"},
        [{"name": "web", "containerPort": 8080, "protocol": "UDP"}],
    ),
]


def build(*policies):
    return Cluster.from_dicts(BASE + list(policies))


def P(cluster, key):
    return cluster.pods[tuple(key.split("/"))]


def test_no_policy_allows_everything():
    c = build()
    names, m = reachability(c, 80, "TCP")
    assert names == ["x/a", "x/b", "y/c"] and m.all()


def test_end_port_is_inclusive():
    c = build(
        policy("x", "r", {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 83}]}]})
    )
    got = [allowed(c, P(c, "y/c"), P(c, "x/a"), p).allowed for p in (80, 81, 82, 83, 84)]
    assert got == [False, True, True, True, False]
    assert not allowed(c, P(c, "y/c"), P(c, "x/a"), 82, "UDP").allowed  # default TCP


def test_protocol_only_entry_is_every_port():
    c = build(policy("x", "r", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}))
    assert allowed(c, P(c, "y/c"), P(c, "x/a"), 12345, "UDP").allowed
    assert not allowed(c, P(c, "y/c"), P(c, "x/a"), 12345, "TCP").allowed


def test_named_port_on_egress_resolves_on_the_destination_pod():
    spec = {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "web"}]}]}  # fmt: skip
    c = build(policy("x", "r", spec))
    assert allowed(c, P(c, "x/a"), P(c, "x/b"), 9090).allowed  # b's web is 9090
    assert not allowed(c, P(c, "x/a"), P(c, "x/b"), 8080).allowed
    assert not allowed(c, P(c, "x/a"), P(c, "y/c"), 8080).allowed  # c's web is UDP
    assert allowed(c, P(c, "x/a"), P(c, "y/c"), 8080, "TCP").egress.policies == ("x/r",)
    assert not allowed(c, P(c, "x/a"), "203.0.113.1", 8080).allowed  # no pod: no name
    _names, m = reachability(c, 9090, "TCP")
    assert m.tolist()[0] == [False, True, False]


def test_policy_types_default_and_zero_rule_isolation():
    # egress given: Egress is defaulted in, and isolates; an empty egress list does not
    c = build(policy("x", "r", {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]}))
    d = allowed(c, P(c, "x/a"), P(c, "y/c"), 80)
    assert not d.allowed and d.egress.policies == ("x/r",) and d.ingress.isolated is False
    c = build(policy("x", "r", {"podSelector": {}, "egress": []}))
    assert allowed(c, P(c, "x/a"), P(c, "y/c"), 80).allowed
    # Ingress is always defaulted in: zero ingress rules deny every ingress
    assert not allowed(c, P(c, "y/c"), P(c, "x/a"), 80).allowed


def test_union_and_decision_names_every_rule():
    c = build(
        policy("x", "deny", {"podSelector": {}}),
        policy("x", "allow-y", {"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]},
            {"ports": [{"port": 80}]},
        ]}),
    )  # fmt: skip
    d = allowed(c, P(c, "y/c"), P(c, "x/a"), 80)
    assert d.allowed
    assert d.ingress.policies == ("x/allow-y", "x/deny")
    assert [str(r) for r in d.ingress.allowed_by] == [
        "x/allow-y ingress[0]",
        "x/allow-y ingress[1]",
    ]
    assert d.egress.pod == "y/c" and not d.egress.isolated
    assert not allowed(c, P(c, "x/b"), P(c, "x/a"), 81).allowed


def test_ip_block_except_and_external_sources():
    c = build(policy("x", "r", {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.77/16", "except": ["10.0.1.0/24"]}}]}]}))  # fmt: skip
    assert allowed(c, P(c, "x/b"), P(c, "x/a"), 80).allowed  # 10.0.0.2
    assert not allowed(c, P(c, "y/c"), P(c, "x/a"), 80).allowed  # 10.0.1.3: except
    assert allowed(c, "10.0.200.9", P(c, "x/a"), 80).allowed
    assert not allowed(c, "192.0.2.1", P(c, "x/a"), 80).allowed
    # an IP string naming a pod is that pod
    assert allowed(c, "10.0.0.2", "10.0.0.1", 80).src == "x/b"


def test_pod_and_namespace_selector_in_one_peer_is_and():
    and_peer = {
        "podSelector": {"matchLabels": {"app": "c"}},
        "namespaceSelector": {"matchLabels": {"team": "red"}},
    }
    c = build(policy("x", "r", {"podSelector": {}, "ingress": [{"from": [and_peer]}]}))
    assert not allowed(c, P(c, "y/c"), P(c, "x/a"), 80).allowed
    or_peers = [
        {"podSelector": {"matchLabels": {"app": "c"}}},
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
    ]
    c = build(policy("x", "r", {"podSelector": {}, "ingress": [{"from": or_peers}]}))
    assert allowed(c, P(c, "y/c"), P(c, "x/a"), 80).allowed


def test_service_frontend_resolves_target_ports():
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "x"},
        "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "a"},
                 "ports": [{"name": "h", "port": 80, "targetPort": "web"}]},
    }  # fmt: skip
    c = Cluster.from_dicts(BASE + [svc])
    found = service_frontend(c, P(c, "x/a"), 8080, "TCP")
    assert found is not None and found[0].name == "s" and found[1].port == 80
    assert service_frontend(c, P(c, "x/a"), 80, "TCP") is None
    assert service_frontend(c, P(c, "x/b"), 9090, "TCP") is None


def test_reach_via_service_denies_unreachable_columns_with_a_warning(cli, tmp_path):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "x"},
        "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "a"}, "ports": [{"port": 8080}]},
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": BASE + [svc]}))
    r = cli("reach", path, "--port", "8080", "--via-service")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "-\tx/a\tx/b\ty/c",
        "x/a\t.\tX\tX",
        "x/b\t.\tX\tX",
        "y/c\t.\tX\tX",
    ]
    assert r.stderr == (
        "kproxy-emu: warning: no Service reaches 2 pod(s) on 8080/TCP (denied in the matrix): "
        "x/b, y/c\n"
    )
    r = cli("reach", path, "--port", "8080")
    assert r.stdout.splitlines()[1] == "x/a\t.\t.\t."


@pytest.mark.parametrize("protocol", ["udp", "SCTP"])
def test_reach_json_shape(cli, tmp_path, protocol):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": BASE}))
    r = cli("reach", path, "--protocol", protocol, "--port", "53", "--json")
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout) == {
        "pods": ["x/a", "x/b", "y/c"],
        "port": 53,
        "protocol": protocol.upper(),
        "allowed": [[True] * 3] * 3,
    }


def test_container_ports_load_and_round_trip():
    c = build()
    a = P(c, "x/a")
    assert [(p.container_port, p.protocol, p.name) for p in a.container_ports] == [
        (8080, "TCP", "web")
    ]
    again = Cluster.from_dicts(c.to_manifests())
    assert again.pods == c.pods
