"""The eBPF mode on the packet pipeline (Dataplane(cluster, "ebpf")): socket-level
balancing of pod and host traffic, the NodePort path with SNAT / DSR and its replies,
traffic policies, source ranges, Maglev's node-independence, the LRU CT maps, and how
its verdicts compare with iptables mode's (the same wherever the modes agree; each known
difference asserted as one)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, EbpfOptions, InputError, packets
from kproxy_emu.model import Cluster

from .test_ebpf_maps import _ep, _service, _slice

NODE_IP = "192.168.0.10"
CLIENT = "203.0.113.7"
POD = "10.244.1.50"  # a pod on this node (10.244.1.0/24)
CIDR = "10.244.0.0/16"


def _nodes():
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
        for name, cidr, ip in (
            ("testnode", "10.244.1.0/24", NODE_IP),
            ("othernode", "10.244.2.0/24", "192.168.0.11"),
        )
    ]


def _web(etp="Cluster", affinity=False, ranges=None, endpoints=None):
    spec = {
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        "externalTrafficPolicy": etp,
        "externalIPs": ["198.51.100.9"],
    }
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 100}}
    if ranges:
        spec["loadBalancerSourceRanges"] = ranges
    svc = _service("web", spec, {"loadBalancer": {"ingress": [{"ip": "100.64.0.1"}]}})
    eps = endpoints or [
        _ep("10.244.1.11", "testnode"),
        _ep("10.244.2.21", "othernode"),
        _ep("10.244.2.22", "othernode"),
    ]
    return Cluster.from_dicts([*_nodes(), svc, _slice("web-1", "web", eps, port=8080)])


def _dp(cluster, seed=1, **options):
    return Dataplane(cluster, EbpfOptions(**options), node="testnode", cluster_cidr=CIDR, seed=seed)


def _one(dp, line, t):
    return dp.process(packets.from_strings([line], ts=t))[0]


def _ip(v, field):
    return packets.u32_to_ip(int(v[field]))


# ------------------------------------------------------------------ NodePort path


@pytest.mark.parametrize("lb_mode", ["snat", "dsr", "hybrid"])
def test_nodeport_to_a_remote_backend_snat_or_dsr(lb_mode):
    dp = _dp(_web(), lb_mode=lb_mode, lb_algorithm="maglev")
    remote = {"10.244.2.21:8080", "10.244.2.22:8080"}
    seen_snat = 0
    for k in range(60):
        sport = 1000 + 997 * k % 60000
        for proto in ("tcp", "udp"):
            if proto == "udp":
                continue  # the service is TCP only
            line = f"{proto} {CLIENT}:{sport} -> {NODE_IP}:30080 from=external"
            v = _one(dp, line, float(k))
            assert v["action"] == packets.Action.DNAT
            ep = dp.endpoints[int(v["endpoint"])]
            if ep not in remote:
                assert v["snat_ip"] == 0  # a local backend: the client's address stays
                continue
            if lb_mode == "snat":
                seen_snat += 1
                assert _ip(v, "snat_ip") == NODE_IP
                port = int(v["snat_port"])
                assert port == sport if sport >= 32768 else 32768 <= port <= 65535
                # the backend's reply to the node comes back as the frontend's
                be_ip, be_port = ep.split(":")
                r = _one(
                    dp,
                    f"tcp {be_ip}:{be_port} -> {NODE_IP}:{port} flags=SA from=external",
                    float(k) + 0.5,
                )
                assert r["action"] == packets.Action.DNAT and r["ct_hit"]
                assert (_ip(r, "dnat_ip"), int(r["dnat_port"])) == (CLIENT, sport)
                assert (_ip(r, "snat_ip"), int(r["snat_port"])) == (NODE_IP, 30080)
            else:  # DSR (hybrid: TCP goes DSR): the backend answers the client itself
                assert v["snat_ip"] == 0
    assert (seen_snat > 0) == (lb_mode == "snat")


def test_local_backend_reply_gets_the_frontend_back():
    dp = _dp(_web(etp="Local"))
    v = _one(dp, f"tcp {CLIENT}:40000 -> 100.64.0.1:80 from=external", 0.0)
    assert v["action"] == packets.Action.DNAT and v["snat_ip"] == 0  # client IP kept
    assert dp.endpoints[int(v["endpoint"])] == "10.244.1.11:8080"  # the only local one
    r = _one(dp, f"tcp 10.244.1.11:8080 -> {CLIENT}:40000 flags=SA from=pod", 0.5)
    assert r["ct_hit"] and (_ip(r, "snat_ip"), int(r["snat_port"])) == ("100.64.0.1", 80)
    est = _one(dp, f"tcp {CLIENT}:40000 -> 100.64.0.1:80 flags=A from=external", 1.0)
    assert est["ct_hit"] and est["endpoint"] == v["endpoint"]


def test_reply_source_comes_from_the_reverse_nat_map():
    """The frontend a reply's source becomes is the reverse-NAT map's entry for the flow's
    rev_nat_index: once the Service is gone, the reply keeps the backend's address."""
    dp = _dp(_web(etp="Local"))
    _one(dp, f"tcp {CLIENT}:40000 -> 100.64.0.1:80 from=external", 0.0)
    dp.update(Cluster.from_dicts(_nodes()))  # the Service and its slice deleted
    r = _one(dp, f"tcp 10.244.1.11:8080 -> {CLIENT}:40000 flags=SA from=pod", 0.5)
    assert r["ct_hit"] and r["snat_ip"] == 0
    t = dp.trace(f"tcp 10.244.1.11:8080 -> {CLIENT}:40000 flags=A from=pod", time=1.0)
    rev = [s for s in t["steps"] if s["chain"] == "cilium_lb4_reverse_nat"]
    assert rev and not rev[0]["matched"]


def test_clusterip_from_outside_is_not_balanced_unless_external_clusterip():
    line = f"tcp {CLIENT}:40000 -> 10.96.0.10:80 from=external"
    v = _one(_dp(_web()), line, 0.0)
    assert v["action"] == packets.Action.ACCEPT and v["dnat_ip"] == 0  # non-routable
    v = _one(_dp(_web(), external_clusterip=True), line, 0.0)
    assert v["action"] == packets.Action.DNAT


def test_source_ranges():
    dp = _dp(_web(ranges=["203.0.113.0/28"]))
    inside = _one(dp, "tcp 203.0.113.7:40000 -> 100.64.0.1:80 from=external", 0.0)
    outside = _one(dp, "tcp 203.0.113.70:40000 -> 100.64.0.1:80 from=external", 0.0)
    assert inside["action"] == packets.Action.DNAT
    assert outside["action"] == packets.Action.DROP
    t = dp.trace("tcp 203.0.113.70:40001 -> 100.64.0.1:80", "external", time=1.0)
    assert any("not in loadBalancerSourceRanges" in s["text"] for s in t["steps"])


def test_no_backend_external_drops_pod_connect_is_refused():
    dp = _dp(_web(etp="Local", endpoints=[_ep("10.244.2.21", "othernode")]))
    ext = _one(dp, f"tcp {CLIENT}:40000 -> {NODE_IP}:30080 from=external", 0.0)
    assert ext["action"] == packets.Action.DROP  # eTP=Local, no local backend
    # from a pod the internal scope (all backends) serves the same frontend
    pod = _one(dp, f"tcp {POD}:40000 -> {NODE_IP}:30080 from=pod", 0.0)
    assert pod["action"] == packets.Action.DNAT
    empty = _dp(_web(endpoints=[_ep("10.244.2.21", "othernode", ready=False, serving=False)]))
    refused = _one(empty, f"tcp {POD}:40000 -> 10.96.0.10:80 from=pod", 0.0)
    assert refused["action"] == packets.Action.REJECT  # connect(): EHOSTUNREACH


# ------------------------------------------------------------------ Maglev


def test_maglev_picks_the_same_backend_on_every_node_and_frontend():
    """The VIP is not hashed, the frontend port is: a client flow gets the same backend on
    every node's NodePort, and on every address of the service's port 80 (LB IP,
    externalIP), from any node."""
    cluster = _web()
    here = _dp(cluster, lb_algorithm="maglev")
    there = Dataplane(
        cluster, EbpfOptions(lb_algorithm="maglev"), node="othernode", cluster_cidr=CIDR, seed=9
    )
    backends = set()
    for k in range(50):
        sport = 20000 + 37 * k
        t = float(k)
        a = _one(here, f"tcp {CLIENT}:{sport} -> {NODE_IP}:30080 from=external", t)
        b = _one(there, f"tcp {CLIENT}:{sport} -> 192.168.0.11:30080 from=external", t)
        assert here.endpoints[int(a["endpoint"])] == there.endpoints[int(b["endpoint"])]
        c = _one(here, f"tcp {CLIENT}:{sport} -> 100.64.0.1:80 from=external", t)
        d = _one(there, f"tcp {CLIENT}:{sport} -> 198.51.100.9:80 from=external", t)
        assert here.endpoints[int(c["endpoint"])] == there.endpoints[int(d["endpoint"])]
        backends.add(here.endpoints[int(c["endpoint"])])
    assert len(backends) == 3


# ------------------------------------------------------------------ sockets and CT


def test_socket_lb_keeps_a_connected_flow_on_its_backend():
    cluster = _web()
    dp = _dp(cluster)
    first = {}
    for k in range(30):
        line = f"tcp {POD}:{40000 + k} -> 10.96.0.10:80 from=pod"
        v = _one(dp, line, 0.0)
        assert v["action"] == packets.Action.DNAT and v["snat_ip"] == 0 and not v["ct_hit"]
        first[k] = dp.endpoints[int(v["endpoint"])]
    victim = first[0]
    eps = [
        _ep(ip, n)
        for ip, n in (
            ("10.244.1.11", "testnode"),
            ("10.244.2.21", "othernode"),
            ("10.244.2.22", "othernode"),
        )
        if f"{ip}:8080" != victim
    ]
    dp.update(_web(endpoints=eps))
    for k in range(30):
        v = _one(dp, f"tcp {POD}:{40000 + k} -> 10.96.0.10:80 flags=A from=pod", 1.0)
        assert v["ct_hit"] and dp.endpoints[int(v["endpoint"])] == first[k]  # the socket's
        assert v["lookups"] == 1  # bpf_lxc's CT lookup only
    for k in range(30):
        v = _one(dp, f"tcp {POD}:{41000 + k} -> 10.96.0.10:80 from=pod", 2.0)
        assert dp.endpoints[int(v["endpoint"])] != victim


def test_session_affinity_for_pods():
    dp = _dp(_web(affinity=True))
    eps = {
        dp.endpoints[
            int(_one(dp, f"tcp {POD}:{40000 + k} -> 10.96.0.10:80 from=pod", k)["endpoint"])
        ]
        for k in range(20)
    }
    assert len(eps) == 1
    # past the timeout (100 s) the client is balanced again
    later = {
        dp.endpoints[
            int(
                _one(dp, f"tcp {POD}:{41000 + k} -> 10.96.0.10:80 from=pod", 200.0 + 200 * k)[
                    "endpoint"
                ]
            )
        ]
        for k in range(20)
    }
    assert len(later) > 1


def test_full_ct_map_evicts_and_flows_go_on():
    dp = _dp(_web(), ct_tcp_max=8, lb_algorithm="maglev")
    first = []
    for k in range(40):
        v = _one(dp, f"tcp {CLIENT}:{30000 + k} -> {NODE_IP}:30080 from=external", float(k))
        assert v["action"] == packets.Action.DNAT
        first.append(int(v["endpoint"]))
    ct = dp.backend.state["ct_tcp"]
    assert len(ct) == 8 and ct.evictions > 0
    # an evicted flow is balanced again: Maglev gives it the same backend
    v = _one(dp, f"tcp {CLIENT}:30000 -> {NODE_IP}:30080 flags=A from=external", 50.0)
    assert int(v["endpoint"]) == first[0]


def test_reset_state_and_seed_determinism():
    cluster = _web()
    lines = [f"tcp {POD}:{40000 + k} -> 10.96.0.10:80 from=pod" for k in range(200)]
    batch = packets.from_strings(lines)
    a, b = _dp(cluster, seed=3), _dp(cluster, seed=3)
    va, vb = a.process(batch), b.process(batch)
    assert va.tobytes() == vb.tobytes()
    a.reset_state()
    assert a.process(batch).tobytes() == va.tobytes()
    assert _dp(cluster, seed=4).process(batch).tobytes() != va.tobytes()


def test_options_are_checked():
    for kwargs, field in (
        ({"lb_algorithm": "wrr"}, "lb_algorithm"),
        ({"maglev_table_size": 1000}, "maglev_table_size"),
        ({"maglev_hash_seed": "short"}, "maglev_hash_seed"),
        ({"lb_mode": "tunnel"}, "lb_mode"),
        ({"ct_tcp_max": 0}, "ct_tcp_max"),
    ):
        with pytest.raises(InputError, match=field):
            EbpfOptions(**kwargs)


def test_render_formats():
    dp = _dp(_web(ranges=["203.0.113.0/28"]))
    dump = dp.render()
    assert "SVC: ID=" in dump and "SRCRANGE:" in dump
    save = dp.render(format="save")
    assert "# cilium_lb4_services_v2" in save and "Found" in save
    # the ClusterIP's master entry: 10.96.0.10:80 (0a 60 00 0a, 00 50), slot 0, TCP
    assert "key: 0a 60 00 0a 00 50 00 00  06 00 00 00" in save
    assert '"services"' in dp.render(format="json")


# ------------------------------------------------------------------ against iptables mode


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    etp=st.sampled_from(["Cluster", "Local"]),
    ready=st.lists(st.booleans(), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_same_verdicts_as_iptables_where_the_modes_agree(etp, ready, seed):
    """Pods to the ClusterIP, NodePort and LB IP; outside clients to the NodePort, LB IP
    and ClusterIP: both modes balance onto the same endpoints (the eBPF endpoint is one of
    iptables' candidates), drop or refuse alike, except the known differences:
    - a ClusterIP from outside: iptables DNATs it, eBPF leaves it (non-routable);
    - no endpoint, from outside: iptables REJECTs (ICMP), eBPF DROPs (DROP_NO_SERVICE);
    - pod traffic: eBPF never masquerades (the socket connects to the backend itself);
    - external traffic to a remote backend: both SNAT to the node (kube-proxy MASQUERADE,
      Cilium's NodePort SNAT), the port kept or chosen by each one's own allocator."""
    names = (
        ("10.244.1.11", "testnode"),
        ("10.244.2.21", "othernode"),
        ("10.244.2.22", "othernode"),
    )
    eps = [_ep(ip, n, ready=r, serving=r) for (ip, n), r in zip(names, ready)]
    cluster = _web(etp=etp, endpoints=eps)
    ebpf = _dp(cluster, seed=seed)
    ipt = Dataplane(cluster, "iptables", node="testnode", cluster_cidr=CIDR, seed=seed)
    cases = [
        ("pod", f"tcp {POD}:40000 -> 10.96.0.10:80"),
        ("pod", f"tcp {POD}:40001 -> {NODE_IP}:30080"),
        ("pod", f"tcp {POD}:40002 -> 100.64.0.1:80"),
        ("external", f"tcp {CLIENT}:40003 -> {NODE_IP}:30080"),
        ("external", f"tcp {CLIENT}:40004 -> 100.64.0.1:80"),
        ("external", f"tcp {CLIENT}:40005 -> 10.96.0.10:80"),
    ]
    for k, (origin, line) in enumerate(cases):
        t = ipt.trace(line, origin, time=float(k))
        v = ebpf.process(packets.from_strings([line], origin=origin, ts=float(k)))[0]
        action = packets.Action(int(v["action"])).name
        if origin == "external" and "10.96.0.10" in line:
            assert action == "ACCEPT" and v["dnat_ip"] == 0
            continue
        if t["verdict"] == "DNAT":
            assert action == "DNAT", (line, t["verdict"], action)
            ep = ebpf.endpoints[int(v["endpoint"])]
            assert ep in {c["endpoint"] for c in t["candidates"]}
            if origin == "pod":
                assert v["snat_ip"] == 0
            elif ep.startswith("10.244.2.") and etp == "Cluster":
                assert t["masquerade"] and _ip(v, "snat_ip") == NODE_IP
        elif origin == "external":
            assert t["verdict"] in ("DROP", "REJECT") and action == "DROP", (line, t["verdict"])
        else:
            assert (t["verdict"], action) == ("REJECT", "REJECT"), line


def test_trace_names_every_map_lookup():
    dp = _dp(_web(), lb_algorithm="maglev")
    t = dp.trace(f"tcp {CLIENT}:40000 -> 100.64.0.1:80", "external", all_rules=True)
    chains = [s["chain"] for s in t["steps"]]
    assert chains[:3] == ["cilium_lb4_services_v2", "cilium_ct4_global", "cilium_lb4_maglev"]
    assert "cilium_lb4_backends_v3" in chains
    assert t["cost"]["lookups"] == len(chains) - (1 if "socket" in chains else 0)
    assert np.isclose(sum(c["probability"] for c in t["candidates"]), 1.0)
