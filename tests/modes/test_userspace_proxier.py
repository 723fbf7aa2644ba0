"""The userspace proxier's iptables rules (pkg/proxy/userspace/proxier.go), its port
allocator (port_allocator.go) and its service lifecycle."""

from __future__ import annotations

import pytest

from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.modes.userspace import (
    EPHEMERAL_HIGH,
    EPHEMERAL_LOW,
    PortRange,
    ProxyPortAllocator,
    UserspaceProxier,
)
from kproxy_emu.netfilter.iptables_live import render_live
from kproxy_emu.netfilter.iptables_parse import parse
from kproxy_emu.netfilter.iptables_text import render
from kproxy_emu.proxy import ProxyOptions, ProxyView


def svc(name, ip, ports, type_="ClusterIP", ext=(), lb=(), aff=None, ns="ns1"):
    spec = {"clusterIP": ip, "type": type_, "ports": ports}
    if ext:
        spec["externalIPs"] = list(ext)
    if aff:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": aff}}
    d = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }
    if lb:
        d["status"] = {"loadBalancer": {"ingress": [{"ip": i} for i in lb]}}
    return d


def port(name, number, proto="TCP", node_port=None):
    p = {"name": name, "port": number, "protocol": proto, "targetPort": number}
    if node_port:
        p["nodePort"] = node_port
    return p


def slice_(name, ips, ports, ns="ns1", ready=True, family="IPv4"):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": ns,
            "name": f"{name}-x",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


NODE = NodeConfig.from_dict({"name": "node1", "ips": ["192.168.0.2"]})
OPTS = ProxyOptions.build(NODE)


def view(*objects, options=OPTS):
    return ProxyView(Cluster.from_dicts(list(objects)), options)


A = svc("a", "172.30.0.41", [port("p80", 80)])
B = svc(
    "b",
    "172.30.0.42",
    [port("p80", 80, node_port=3001)],
    type_="LoadBalancer",
    ext=["192.168.99.11"],
    lb=["1.2.3.4"],
    aff=100,
)
C = svc("c", "172.30.0.43", [port("", 53, "UDP")])
A_EPS = slice_("a", ["10.180.0.1", "10.180.0.2"], [("p80", 80, "TCP")])
B_EPS = slice_("b", ["10.180.0.3"], [("p80", 80, "TCP")])

EXPECTED = """\
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
-A INPUT -m comment --comment "Ensure that non-local NodePort traffic can flow" -j KUBE-NODEPORT-NON-LOCAL
-A KUBE-NODEPORT-NON-LOCAL -m comment --comment ns1/b:p80 -p tcp -m tcp --dport {b} -m state --state NEW -j ACCEPT
COMMIT
*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-A PREROUTING -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-CONTAINER
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-CONTAINER
-A OUTPUT -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-HOST
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-HOST
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/a:p80 -p tcp -m tcp --dport 80 -d 172.30.0.41/32 -j {to_a}
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 172.30.0.42/32 -j {to_b}
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 192.168.99.11/32 -m physdev ! --physdev-is-in -j {to_b}
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 192.168.99.11/32 -m addrtype --dst-type LOCAL -j {to_b}
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 1.2.3.4/32 -j {to_b}
-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/c -p udp -m udp --dport 53 -d 172.30.0.43/32 -j {to_c}
-A KUBE-PORTALS-HOST -m comment --comment ns1/a:p80 -p tcp -m tcp --dport 80 -d 172.30.0.41/32 -j DNAT --to-destination {host}:{a}
-A KUBE-PORTALS-HOST -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 172.30.0.42/32 -j DNAT --to-destination {host}:{b}
-A KUBE-PORTALS-HOST -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 192.168.99.11/32 -m addrtype --dst-type LOCAL -j DNAT --to-destination {host}:{b}
-A KUBE-PORTALS-HOST -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 80 -d 1.2.3.4/32 -j DNAT --to-destination {host}:{b}
-A KUBE-PORTALS-HOST -m comment --comment ns1/c -p udp -m udp --dport 53 -d 172.30.0.43/32 -j DNAT --to-destination {host}:{c}
-A KUBE-NODEPORT-CONTAINER -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 3001 -j {to_b}
-A KUBE-NODEPORT-HOST -m comment --comment ns1/b:p80 -p tcp -m tcp --dport 3001 -j DNAT --to-destination {host}:{b}
COMMIT
"""


def expected(px, listen=None):
    ports = {
        k: px.services[n].proxy_port
        for k, n in (("a", "ns1/a:p80"), ("b", "ns1/b:p80"), ("c", "ns1/c"))
    }
    if listen is None:
        to = {f"to_{k}": f"REDIRECT --to-ports {p}" for k, p in ports.items()}
    else:
        to = {f"to_{k}": f"DNAT --to-destination {listen}:{p}" for k, p in ports.items()}
    return EXPECTED.format(host=listen or "192.168.0.2", **ports, **to)


@pytest.mark.parametrize("seed", [0, 1, 99])
def test_rules_listening_on_any_address(seed):
    px = UserspaceProxier(OPTS, seed=seed)
    result = px.sync(view(A, A_EPS, B, B_EPS, C))
    assert result.text == expected(px)
    assert render(result.payload) == result.text
    assert result.errors == [] and result.full
    assert result.opened == ["ns1/a:p80", "ns1/b:p80", "ns1/c"]
    # proxy ports: ephemeral (no --proxy-port-range), TCP ones odd, distinct
    tcp = [px.services[n].proxy_port for n in ("ns1/a:p80", "ns1/b:p80")]
    assert all(EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH and p % 2 == 1 for p in tcp)
    assert len(set(tcp)) == 2
    # the restore text parses back to the same rules
    assert render(parse(result.text)) == result.text


def test_rules_listening_on_one_address():
    px = UserspaceProxier(OPTS, seed=3, listen_ip="192.168.0.9", port_range="40000-40099")
    result = px.sync(view(A, A_EPS, B, B_EPS, C))
    assert result.text == expected(px, listen="192.168.0.9")
    assert all(40000 <= s.proxy_port <= 40099 for s in px.services.values())


def test_iptables_save_form():
    px = UserspaceProxier(OPTS, seed=3)
    px.sync(view(A, B))
    live = render_live(px.ruleset())
    b = px.services["ns1/b:p80"].proxy_port
    assert (
        f'-A KUBE-PORTALS-CONTAINER -d 192.168.99.11/32 -p tcp -m comment --comment "ns1/b:p80" '
        f"-m tcp --dport 80 -m physdev ! --physdev-is-in -j REDIRECT --to-ports {b}"
    ) in live.splitlines()


def test_deterministic_for_a_seed():
    texts = {UserspaceProxier(OPTS, seed=5).sync(view(A, B, C)).text for _ in range(3)}
    assert len(texts) == 1
    others = {UserspaceProxier(OPTS, seed=s).sync(view(A, B, C)).text for s in range(6)}
    assert len(others) > 1


def test_ipv6_node():
    node = NodeConfig.from_dict({"name": "node1", "ips": ["fd00::2"]})
    opts = ProxyOptions.build(node)
    s = svc("v6", "fd00:30::41", [port("http", 80, node_port=30080)], type_="NodePort")
    s["spec"]["ipFamilies"] = ["IPv6"]
    px = UserspaceProxier(opts, seed=0)
    text = px.sync(view(s, options=opts)).text
    p = px.services["ns1/v6:http"].proxy_port
    assert (
        f"-A KUBE-PORTALS-HOST -m comment --comment ns1/v6:http -p tcp -m tcp --dport 80 "
        f"-d fd00:30::41/128 -j DNAT --to-destination [fd00::2]:{p}"
    ) in text.splitlines()
    assert (
        f"-A KUBE-NODEPORT-CONTAINER -m comment --comment ns1/v6:http -p tcp -m tcp --dport 30080 -j REDIRECT --to-ports {p}"
        in text
    )


def test_localhost_bind_refused():
    with pytest.raises(InputError, match="cannot proxy on localhost"):
        UserspaceProxier(OPTS, listen_ip="127.0.0.1")
    with pytest.raises(InputError):
        UserspaceProxier(OPTS, listen_ip="not-an-ip")


# ---- lifecycle ----------------------------------------------------------------------------


def chain(px, table, name):
    return [r for r in px.ruleset().tables[table].rules if r.chain == name]


def test_changed_service_restarts_at_the_end_unchanged_untouched():
    px = UserspaceProxier(OPTS, seed=1, port_range="40000-40999")
    px.sync(view(A, B, C))
    a_port = px.services["ns1/a:p80"].proxy_port
    b_port = px.services["ns1/b:p80"].proxy_port
    # A moves to another port number: stopped (rules gone, port released), started again
    a2 = svc("a", "172.30.0.41", [port("p80", 81)])
    result = px.sync(view(a2, B, C), changed={("ns1", "a")})
    assert not result.full
    assert result.opened == ["ns1/a:p80"] and result.closed == []
    assert px.services["ns1/b:p80"].proxy_port == b_port
    new_a = px.services["ns1/a:p80"].proxy_port
    assert new_a != a_port  # a fresh port from the allocator's look-ahead
    portals = [r.comment for r in chain(px, "nat", "KUBE-PORTALS-CONTAINER")]
    assert portals == ["ns1/b:p80"] * 4 + ["ns1/c", "ns1/a:p80"]
    assert f"--dport 81 -d 172.30.0.41/32 -j REDIRECT --to-ports {new_a}" in result.text


def test_affinity_timeout_alone_is_the_same_config():
    px = UserspaceProxier(OPTS, seed=1)
    px.sync(view(B, B_EPS))
    before = px.services["ns1/b:p80"].proxy_port
    b2 = svc(
        "b",
        "172.30.0.42",
        [port("p80", 80, node_port=3001)],
        type_="LoadBalancer",
        ext=["192.168.99.11"],
        lb=["1.2.3.4"],
        aff=5,
    )
    result = px.sync(view(b2, B_EPS), changed={("ns1", "b")})
    assert result.opened == [] and px.services["ns1/b:p80"].proxy_port == before
    assert px.services["ns1/b:p80"].sticky_max_age_seconds == 100


def test_deleted_service_and_port():
    px = UserspaceProxier(OPTS, seed=2)
    two = svc("d", "172.30.0.44", [port("x", 1), port("y", 2)])
    px.sync(view(A, A_EPS, two))
    assert px.load_balancer.services() == ["ns1/a:p80", "ns1/d:x", "ns1/d:y"]
    one = svc("d", "172.30.0.44", [port("x", 1)])
    result = px.sync(view(A, A_EPS, one), changed={("ns1", "d")})
    assert result.closed == ["ns1/d:y"] and "ns1/d:y" not in result.text
    assert "ns1/d:y" not in px.load_balancer.services()
    result = px.sync(view(one), changed={("ns1", "a")})
    assert result.closed == ["ns1/a:p80"] and set(px.services) == {"ns1/d:x"}
    assert "ns1/a:p80" not in result.text
    # the balancer's state of a is gone (DeleteService) and the endpoints left it empty
    assert px.load_balancer.endpoints("ns1/a:p80") == []


def test_partial_and_full_syncs_agree():
    seq = [
        (view(A, B, C), None),
        (view(A, C), {("ns1", "b")}),
        (view(A, B, C), {("ns1", "b")}),
        (view(svc("a", "172.30.0.51", [port("p80", 80)]), B, C), {("ns1", "a")}),
    ]
    partial = UserspaceProxier(OPTS, seed=4, port_range="41000-41999")
    full = UserspaceProxier(OPTS, seed=4, port_range="41000-41999")
    for v, changed in seq:
        assert partial.sync(v, changed).text == full.sync(v).text


def test_node_port_conflict_resolves_when_owner_goes():
    first = svc("e", "172.30.0.45", [port("p", 80, node_port=30100)], type_="NodePort")
    second = svc("f", "172.30.0.46", [port("p", 80, node_port=30100)], type_="NodePort")
    px = UserspaceProxier(OPTS, seed=0)
    result = px.sync(view(first, second))
    assert any("Port conflict detected on port <nil>:30100/TCP" in e for e in result.errors)
    nodeports = [r.comment for r in chain(px, "nat", "KUBE-NODEPORT-CONTAINER")]
    assert nodeports == ["ns1/e:p"]
    # f's portal rules exist (they come before the NodePort in openPortal)
    assert "-d 172.30.0.46/32" in result.text
    result = px.sync(view(second), changed={("ns1", "e")})
    assert [r.comment for r in chain(px, "nat", "KUBE-NODEPORT-CONTAINER")] == ["ns1/f:p"]
    assert [r.comment for r in chain(px, "filter", "KUBE-NODEPORT-NON-LOCAL")] == ["ns1/f:p"]
    assert px.port_map == {("<nil>", 30100, "TCP"): "ns1/f:p"}


def test_local_external_ip_claim_conflict_stops_the_portal_list():
    # an externalIP that is the node's own address is claimed: a second service on the
    # same address and port is refused there, and openPortal stops (its NodePort stays shut)
    g = svc("g", "172.30.0.47", [port("p", 80)], ext=["192.168.0.2"])
    h = svc(
        "h", "172.30.0.48", [port("p", 80, node_port=30200)], type_="NodePort", ext=["192.168.0.2"]
    )
    px = UserspaceProxier(OPTS, seed=0)
    result = px.sync(view(g, h))
    assert any("192.168.0.2:80/TCP" in e for e in result.errors)
    assert "ns1/h:p" not in {r.comment for r in chain(px, "nat", "KUBE-NODEPORT-CONTAINER")}
    assert ("192.168.0.2", 80, "TCP") in px.port_map
    h_rules = [r for r in chain(px, "nat", "KUBE-PORTALS-CONTAINER") if r.comment == "ns1/h:p"]
    assert len(h_rules) == 1  # the ClusterIP portal only


def test_duplicate_portal_rules_are_ensured_once():
    # a LoadBalancer ingress IP equal to the ClusterIP writes the same rule: EnsureRule
    # finds it and adds nothing
    s = svc("i", "172.30.0.49", [port("p", 80)], type_="LoadBalancer", lb=["172.30.0.49"])
    px = UserspaceProxier(OPTS, seed=0)
    px.sync(view(s))
    assert len(chain(px, "nat", "KUBE-PORTALS-CONTAINER")) == 1
    assert len(chain(px, "nat", "KUBE-PORTALS-HOST")) == 1


def test_sctp_is_not_proxied_and_leaks_its_range_port():
    s = svc("j", "172.30.0.50", [port("p", 80, "SCTP")])
    px = UserspaceProxier(OPTS, seed=0, port_range="42000-42001")
    result = px.sync(view(s))
    assert result.opened == [] and "ns1/j:p" not in result.text
    assert any("unknown protocol" in e for e in result.errors)
    # the range has two ports; SCTP took one for good (port_allocator: never released)
    result = px.sync(view(s, A), changed={("ns1", "a")})
    assert result.opened == ["ns1/a:p80"]
    result = px.sync(view(s, A, C), changed={("ns1", "c")})
    assert any("no remaining ports" in e for e in result.errors)
    assert "ns1/c" not in px.services


def test_endpoints_reach_the_balancer_before_the_service():
    """kube-proxy hands Endpoints to the balancer as they arrive and merges Services at
    the sync: a port with endpoints gets its balancer state first, with the default TTL,
    and NewService then only sets the affinity type."""
    px = UserspaceProxier(OPTS, seed=0)
    px.sync(view(B, B_EPS))
    lb = px.load_balancer
    assert lb.endpoints("ns1/b:p80") == ["10.180.0.3:80"]
    lb.next_endpoint("ns1/b:p80", "10.0.0.1", now=0)
    assert "10.0.0.1" in lb.affinity("ns1/b:p80")
    # timeoutSeconds 100 is not what the balancer uses: still pinned after 1000 s
    assert lb.next_endpoint("ns1/b:p80", "10.0.0.1", now=1000) == "10.180.0.3:80"
    assert "10.0.0.1" in lb.affinity("ns1/b:p80")
    # a not-ready endpoint is no endpoint of v1 Endpoints' addresses
    px.sync(view(A, slice_("a", ["10.180.0.9"], [("p80", 80, "TCP")], ready=False)))
    assert lb.endpoints("ns1/a:p80") == [] and not lb.service_has_endpoints("ns1/a:p80")


def test_sticky_sessions_cleaned_at_sync():
    px = UserspaceProxier(OPTS, seed=0)
    b_no_eps_first = view(B)
    px.sync(b_no_eps_first)  # NewService before any endpoints: the TTL (100 s) holds
    px.sync(view(B, B_EPS), changed={("ns1", "b")})
    lb = px.load_balancer
    lb.next_endpoint("ns1/b:p80", "10.0.0.1", now=10)
    px.sync(view(B, B_EPS), changed=set(), now=109.9)
    assert "10.0.0.1" in lb.affinity("ns1/b:p80")
    px.sync(view(B, B_EPS), changed=set(), now=110)
    assert lb.affinity("ns1/b:p80") == {}


# ---- the port allocator -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base", "size"),
    [("", 0, 0), ("  ", 0, 0), ("30000-30009", 30000, 10), ("40000+5", 40000, 6), ("7", 7, 1)],
)
def test_port_range_parse(text, base, size):
    assert PortRange.parse(text) == PortRange(base, size)


@pytest.mark.parametrize("text", ["a-b", "1-2-3", "1+2-3", "70000", "10-5", "1-65536"])
def test_port_range_parse_errors(text):
    with pytest.raises(InputError):
        PortRange.parse(text)


def test_range_allocator_look_ahead_and_release():
    alloc = ProxyPortAllocator(PortRange(50000, 40), seed=8)
    first = [alloc.allocate_next() for _ in range(5)]
    assert len(set(first)) == 5 and all(50000 <= p < 50040 for p in first)
    # a released port is chosen again only after the 17 already chosen are handed out
    alloc.release(first[0])
    nxt = [alloc.allocate_next() for _ in range(17 - 5)]
    assert first[0] not in nxt
    again = ProxyPortAllocator(PortRange(50000, 40), seed=8)
    assert [again.allocate_next() for _ in range(5)] == first


def test_range_allocator_exhaustion():
    alloc = ProxyPortAllocator(PortRange(50000, 3), seed=0)
    got = sorted(alloc.allocate_next() for _ in range(3))
    assert got == [50000, 50001, 50002]
    with pytest.raises(Exception, match="no remaining ports"):
        alloc.allocate_next()
    alloc.release(50001)
    assert alloc.allocate_next() == 50001


def test_ephemeral_ports():
    alloc = ProxyPortAllocator(PortRange(), seed=0)
    assert alloc.allocate_next() == 0
    tcp = [alloc.bind("TCP", 0) for _ in range(50)]
    udp = [alloc.bind("UDP", 0) for _ in range(50)]
    assert all(p % 2 == 1 and EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH for p in tcp)
    assert all(EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH for p in udp)
    assert len(set(tcp)) == 50 and len(set(udp)) == 50
