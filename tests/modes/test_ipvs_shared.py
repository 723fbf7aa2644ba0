"""A virtual server several service ports claim (issue 19).

kube-proxy's IPVS proxier (pkg/proxy/ipvs/proxier.go, syncProxyRules) runs syncService
then syncEndpoint for every claim of an address:port/protocol: one virtual server, its
flags set by each syncService (UpdateVirtualServer), its real servers by each
syncEndpoint (add this port's endpoints, gracefully delete the rest), so the last claim's
endpoints stay. kube-proxy's order is its svcPortMap's (a Go map: random); kproxy-emu's is
the ServicePortName order.

The first test is kube-proxy's TestHealthCheckNodePort (pkg/proxy/ipvs/proxier_test.go):
three LoadBalancer Services on ClusterIP 10.20.30.41:80/TCP, nodePort 3000, no
endpoints; two eTP Local (health-check node ports 30000 and 30001), one Cluster (30002);
node 100.101.102.103/24 (eth0) and 2001:db8::/64 (eth1), nodePortAddresses
100.101.102.0/24.
"""

import random
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kproxy_emu
from kproxy_emu import Dataplane
from kproxy_emu import packets as P
from kproxy_emu._cext import vstable as V
from kproxy_emu.bench import sweep
from kproxy_emu.dataplane import ipvs_kernel as K
from kproxy_emu.dataplane import ipvs_reference as R
from kproxy_emu.errors import KproxyError
from kproxy_emu.model import Cluster
from kproxy_emu.model.config import NodeConfig, load_kube_proxy_config, load_node_config
from kproxy_emu.modes import ipvs as M
from kproxy_emu.proxy import ProxyOptions, ProxyView
from kproxy_emu.proxy.tracker import Added, Deleted

SHARED = kproxy_emu.SharedVirtualServerWarning


def _hc_services():
    def lb(name, policy, hc):
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"namespace": "ns1", "name": name},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.20.30.41",
                "externalTrafficPolicy": policy,
                "healthCheckNodePort": hc,
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3000}],
            },
        }

    return [
        lb("valid-svc1", "Local", 30000),
        lb("valid-svc2", "Local", 30001),
        lb("invalid-svc3", "Cluster", 30002),
    ]


@pytest.fixture
def hc_files(tmp_path):
    node = {
        "name": "test-hostname",
        "ips": ["100.101.102.103"],
        "interfaces": {
            "lo": ["127.0.0.1/8"],
            "eth0": ["100.101.102.103/24"],
            "eth1": ["2001:db8::/64"],
        },
    }
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "ipvs",
        "nodePortAddresses": ["100.101.102.0/24"],
    }
    paths = {}
    for name, doc in (("node.yaml", node), ("kube-proxy.yaml", config)):
        paths[name] = tmp_path / name
        paths[name].write_text(yaml.safe_dump(doc))
    paths["services.yaml"] = tmp_path / "services.yaml"
    paths["services.yaml"].write_text(yaml.safe_dump_all(_hc_services()))
    return paths


def _hc_dataplane(hc_files, mode="ipvs"):
    return Dataplane(
        Cluster.from_dicts(_hc_services()),
        mode,
        node_config=load_node_config(hc_files["node.yaml"]),
        config=load_kube_proxy_config(hc_files["kube-proxy.yaml"]),
    )


def test_kube_proxys_health_check_node_port(hc_files):
    with pytest.warns(SHARED) as caught:
        dp = _hc_dataplane(hc_files)
    # one warning naming the three Services and both shared virtual servers
    (w,) = [w for w in caught if issubclass(w.category, SHARED)]
    text = str(w.message)
    assert "ns1/invalid-svc3, ns1/valid-svc1, ns1/valid-svc2" in text
    assert "10.20.30.41:80/TCP, 100.101.102.103:3000/TCP" in text
    st_ = dp.backend.state
    sets = {name: s.entries for name, s in st_.ipsets.items()}
    # kube-proxy's expectation: only the valid health-check node ports
    assert sets["KUBE-HEALTH-CHECK-NODE-PORT"] == {"30000", "30001"}
    assert sets["KUBE-CLUSTER-IP"] == {"10.20.30.41,tcp:80"}
    assert sets["KUBE-NODE-PORT-TCP"] == {"3000"} == sets["KUBE-NODE-PORT-LOCAL-TCP"]
    assert sets["KUBE-IPVS-IPS"] == {"10.20.30.41"} and st_.bound_addresses == ["10.20.30.41"]
    # one virtual server per address, each claimed by the three ports in name order
    assert [str(vs) for vs in st_.virtual_servers] == [
        "10.20.30.41:80/TCP",
        "100.101.102.103:3000/TCP",
    ]
    for vs in st_.virtual_servers:
        assert [c.service for c in vs.claims] == [
            "ns1/invalid-svc3:p80",
            "ns1/valid-svc1:p80",
            "ns1/valid-svc2:p80",
        ]
        assert vs.real_servers == [] and vs.service == "ns1/valid-svc2:p80"
    # kube-proxy's KUBE-NODE-PORT chains (checkIptables: RETURN, KUBE-MARK-MASQ, ACCEPT)
    rules = dp.render(format="iptables-restore").splitlines()
    node_port = [r for r in rules if r.startswith("-A KUBE-NODE-PORT ")]
    assert [r.split("--match-set ")[1].split()[0] for r in node_port] == [
        "KUBE-NODE-PORT-LOCAL-TCP",
        "KUBE-NODE-PORT-TCP",
        "KUBE-HEALTH-CHECK-NODE-PORT",
    ]
    assert [r.rsplit("-j ", 1)[1] for r in node_port] == ["RETURN", "KUBE-MARK-MASQ", "ACCEPT"]
    assert dp.render(format="ipvsadm-save") == (
        "-A -t 10.20.30.41:80 -s rr\n-A -t 100.101.102.103:3000 -s rr\n"
    )
    for fmt in dp.backend.formats:
        assert dp.render(format=fmt)
    ipset = dp.render(format="ipset-save")
    assert "add KUBE-HEALTH-CHECK-NODE-PORT 30001\n" in ipset and "30002" not in ipset
    # no endpoint: the ClusterIP and the NodePort are rejected, in trace and process
    pkts = ["tcp 10.0.0.9:4000 -> 10.20.30.41:80", "tcp 1.1.1.1:4000 -> 100.101.102.103:3000"]
    for pkt in pkts:
        assert dp.trace(pkt, time=1.0)["verdict"] == "REJECT"
    out = dp.process(P.from_strings(pkts, "external"))
    assert list(out["action"]) == [P.Action.REJECT] * 2


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_the_other_modes_take_the_health_check_input(hc_files, mode):
    text = _hc_dataplane(hc_files, mode).render()
    assert "10.20.30.41" in text and "30002" not in text
    if mode == "iptables":  # the health-check node ports' ACCEPT rules
        assert "--dport 30000 -j ACCEPT" in text and "--dport 30001 -j ACCEPT" in text


def test_cli_with_kube_proxys_input(cli, hc_files):
    files = [
        "--config",
        hc_files["kube-proxy.yaml"],
        "--node-config",
        hc_files["node.yaml"],
        hc_files["services.yaml"],
    ]
    for fmt in ("restore", "save", "ipvsadm-save", "ipvsadm-list", "ipset-save"):
        proc = cli("render", "--mode", "ipvs", "--format", fmt, *files)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("warning: IPVS: Services ns1/invalid-svc3") == 1
    proc = cli("render", "--mode", "ipvs", "--format", "iptables-restore", "--sorted", *files)
    assert proc.returncode == 0 and "KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT" in proc.stdout
    proc = cli("trace", "--mode", "ipvs", *files, "--packet", "tcp 10.0.0.9:4000 -> 10.20.30.41:80")
    assert proc.returncode == 0 and "REJECT" in proc.stdout, proc.stderr
    for mode in ("iptables", "nftables"):
        proc = cli("render", "--mode", mode, *files)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr


# ---------------------------------------------------------------- two ClusterIP Services

NODE = NodeConfig.from_node("node-a", ["192.168.0.2"])
VIP = "172.30.0.10"


def _service(name, endpoints, affinity=False, proto="TCP"):
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": VIP, "ports": [{"name": "http", "port": 80, "protocol": proto}]},
    }
    if affinity:
        svc["spec"]["sessionAffinity"] = "ClientIP"
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "ns",
            "name": f"{name}-1",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]} for ip in endpoints],
        "ports": [{"name": "http", "port": 8080, "protocol": proto}],
    }
    return [svc, eps]


A = ["10.1.0.1", "10.1.0.2"]  # ns/a's endpoints
B = ["10.1.0.3", "10.1.0.4"]  # ns/b's (ClientIP affinity)


def _pair(order="ab", b_endpoints=B):
    parts = {"a": _service("a", A), "b": _service("b", b_endpoints, affinity=True)}
    return Cluster.from_dicts([o for name in order for o in parts[name]])


def _dp(cluster, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SHARED)
        return Dataplane(cluster, "ipvs", node_config=NODE, cluster_cidr="10.0.0.0/8", **kw)


def _rs(dp):
    (vs,) = dp.backend.state.virtual_servers
    return [str(r) for r in vs.real_servers], (vs.flags, vs.timeout)


def test_the_last_claim_in_name_order_wins_whatever_the_manifest_order():
    ab, ba = _dp(_pair("ab")), _dp(_pair("ba"))
    for fmt in ab.backend.formats:
        assert ab.render(format=fmt) == ba.render(format=fmt)
    assert _rs(ab) == (["10.1.0.3:8080", "10.1.0.4:8080"], (M.FLAG_PERSISTENT, 10800))
    syns = P.from_strings([f"tcp 10.0.0.{i}:5000 -> {VIP}:80 flags=S" for i in range(1, 9)])
    for dp in (ab, ba):
        out = dp.process(syns)
        assert {dp.endpoints[e] for e in out["endpoint"]} <= {"10.1.0.3:8080", "10.1.0.4:8080"}
        trace = dp.trace(f"tcp 10.0.0.77:5000 -> {VIP}:80", time=2.0)
        assert trace["verdict"] == "DNAT" and trace["dnat"] in ("10.1.0.3:8080", "10.1.0.4:8080")
    assert np.array_equal(ab.process(syns)["endpoint"], ba.process(syns)["endpoint"])


def test_a_service_claiming_its_own_address_twice():
    """An externalIP equal to the Service's own ClusterIP: one virtual server, its
    ClusterIP claim then its externalIP claim (kube-proxy's order within a port)."""
    svc, eps = _service("a", A)
    svc["spec"]["externalIPs"] = [VIP]
    with pytest.warns(SHARED, match="Service ns/a claims the virtual server"):
        dp = Dataplane(Cluster.from_dicts([svc, eps]), "ipvs", node_config=NODE)
    (vs,) = dp.backend.state.virtual_servers
    assert [c.kind for c in vs.claims] == ["cluster-ip", "external-ip"]
    assert [str(r) for r in vs.real_servers] == ["10.1.0.1:8080", "10.1.0.2:8080"]
    assert dp.backend.state.ipsets["KUBE-EXTERNAL-IP"].entries == {f"{VIP},tcp:80"}


def _state(cluster):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SHARED)
        return M.compile_ipvs(ProxyView(cluster, ProxyOptions.build(NODE)))


def _weights(table):
    return {
        P.u32_to_ip(int(r[1])): int(r[3]) for r in table.dest_stats() if r[7]
    }  # linked destinations only


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_every_sync_replays_each_claim(engine):
    """A resync with connections on b's real servers: a's syncEndpoint sets them to
    weight 0 (graceful), b's takes them off the list (delete) and adds them again; a's
    own servers, added by a's syncEndpoint, go at b's (no connection); the flags follow
    each syncService."""
    sync = K.IpvsSync(engine, seed=3)
    state = _state(_pair())
    first = sync.sync(state)
    assert first["services_added"] == 1 and first["dests_added"] == 4
    assert first["dests_deleted"] == 2 and first["services_updated"] == 1
    assert _weights(sync.table) == {"10.1.0.3": 1, "10.1.0.4": 1}
    syns = P.from_strings([f"tcp 10.0.0.{i}:5000 -> {VIP}:80 flags=S" for i in (1, 2, 3)])
    sync.table.process(syns, P.empty_verdicts(3))
    again = sync.sync(state, now=1)
    assert again["services_updated"] == 2  # a's flags, then b's persistence again
    assert again["dests_graceful"] == 2 and again["dests_added"] == 4
    assert again["dests_deleted"] == 4  # b's off the list, then a's
    assert _weights(sync.table) == {"10.1.0.3": 1, "10.1.0.4": 1} and not sync.graceful


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_a_new_claim_drains_the_old_real_servers_gracefully(engine):
    """Only a at first, with connections; b (later in name order) claims the address
    too: b's syncEndpoint puts a's busy servers at weight 0 until their connections end."""
    sync = K.IpvsSync(engine, seed=3)
    sync.sync(_state(Cluster.from_dicts(_service("a", A))))
    syns = P.from_strings([f"tcp 10.0.0.{i}:5000 -> {VIP}:80 flags=S" for i in (1, 2)])
    sync.table.process(syns, P.empty_verdicts(2))
    res = sync.sync(_state(_pair()), now=1)
    assert res["dests_graceful"] == 2 and res["services_updated"] == 1
    assert _weights(sync.table) == {"10.1.0.1": 0, "10.1.0.2": 0, "10.1.0.3": 1, "10.1.0.4": 1}
    # the SYN_RECV connections time out (60 s); the loop's next run deletes a's servers
    assert sync.tick(61.5) == 2
    assert _weights(sync.table) == {"10.1.0.3": 1, "10.1.0.4": 1}


def test_an_established_flow_survives_every_resync():
    """At each sync a's syncEndpoint puts b's busy server at weight 0 and b's deletes it
    and adds it again: the kernel takes it back from its trash, so the connection goes
    on (no expire_nodest_conn drop)."""
    dp = _dp(_pair())
    syn = dp.process(P.from_strings([f"tcp 10.0.0.5:5000 -> {VIP}:80 flags=S"], ts=1.0))
    endpoint = dp.endpoints[syn["endpoint"][0]]
    dp.process(P.from_strings([f"tcp {endpoint} -> 10.0.0.5:5000 flags=SA from=pod"], ts=1.1))
    ack = f"tcp 10.0.0.5:5000 -> {VIP}:80 flags=A"
    before = dp.process(P.from_strings([ack], ts=1.2))
    for t in (2.0, 3.0):
        res = dp.update()
        assert f"-e -t {VIP}:80 -r {endpoint} -m -w 0" in res.text
        assert res.extra["dests_graceful"] == 1
        after = dp.process(P.from_strings([ack], ts=t))
        assert after["action"][0] == P.Action.DNAT and after["ct_hit"][0]
        assert after["endpoint"][0] == before["endpoint"][0] == syn["endpoint"][0]
    listed = dp.render(format="ipvsadm-list")
    assert f"-> {endpoint}" in listed and " 1      1          0" in listed


def test_updates_add_and_remove_a_sharing_service():
    dp = _dp(Cluster.from_dicts(_service("a", A)))
    assert _rs(dp) == (["10.1.0.1:8080", "10.1.0.2:8080"], (0, 0))
    with pytest.warns(SHARED, match="Services ns/a, ns/b share the virtual server 172.30.0.10"):
        res = dp.apply(
            [Added(o) for o in Cluster.from_dicts(_service("b", B, affinity=True)).objects()]
        )
    assert res.ok and _rs(dp) == (["10.1.0.3:8080", "10.1.0.4:8080"], (M.FLAG_PERSISTENT, 10800))
    assert "-A -t" not in res.text and "-a -t 172.30.0.10:80 -r 10.1.0.3:8080" in res.text
    fresh = _dp(_pair())
    assert dp.render(format="ipvsadm-save") == fresh.render(format="ipvsadm-save")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unrelated resync names nobody again
        dp.update(_pair(b_endpoints=["10.1.0.3"]))
    assert _rs(dp)[0] == ["10.1.0.3:8080"]
    # b goes: a's claim alone sets the virtual server (flags, real servers)
    res = dp.apply([Deleted("Service", "ns", "b"), Deleted("EndpointSlice", "ns", "b-1")])
    assert res.ok and _rs(dp) == (["10.1.0.1:8080", "10.1.0.2:8080"], (0, 0))
    assert res.text.endswith(
        "-E -t 172.30.0.10:80 -s rr\n"
        "-a -t 172.30.0.10:80 -r 10.1.0.1:8080 -m -w 1\n"
        "-a -t 172.30.0.10:80 -r 10.1.0.2:8080 -m -w 1\n"
        "-d -t 172.30.0.10:80 -r 10.1.0.3:8080\n"
    )
    assert not dp.backend.state.virtual_servers[0].claims
    alone = _dp(Cluster.from_dicts(_service("a", A)))
    assert dp.render(format="ipvsadm-save") == alone.render(format="ipvsadm-save")


def test_bench_cell_on_a_shared_address():
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]},
    }
    cluster = Cluster.from_dicts([node, *_service("a", A), *_service("b", B, affinity=True)])
    spec = sweep.BenchSpec(services=[2], modes=["ipvs"], packets=300, repeat=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SHARED)
        new, est = sweep.run_cell("ipvs", 2, spec, cluster=cluster)
    assert new["actions"] == {"DNAT": 300} and est["ct_hit_share"] == 1.0


# ---------------------------------------------------------------- colliding clusters

NODE_IP = "192.168.0.2"
ADDRESSES = ["172.30.0.10", "172.30.0.11", NODE_IP, "1.2.3.4"]


def _colliding_cluster(rng: random.Random) -> list[dict]:
    """Services drawing their ClusterIPs, externalIPs, LB IPs, ports and NodePorts from
    small pools (the node IP among them): shared virtual servers, duplicate NodePorts, an
    externalIP on a ClusterIP, an LB IP on the node IP."""
    objs: list[dict] = []
    for i in range(rng.randint(2, 4)):
        kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        proto = rng.choice(["TCP", "UDP"])
        spec: dict = {
            "type": kind,
            "clusterIP": rng.choice(ADDRESSES[:2]),
            "ports": [{"name": "p", "port": rng.choice([80, 3000]), "protocol": proto}],
        }
        if kind != "ClusterIP":
            spec["ports"][0]["nodePort"] = rng.choice([3000, 3001])
            spec["externalTrafficPolicy"] = rng.choice(["Local", "Cluster"])
            if kind == "LoadBalancer":
                spec["healthCheckNodePort"] = rng.choice([30000, 30001])
        if rng.random() < 0.4:
            spec["externalIPs"] = [rng.choice(ADDRESSES)]
        if rng.random() < 0.3:
            spec["sessionAffinity"] = "ClientIP"
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"namespace": "ns", "name": f"s{i}"},
            "spec": spec,
        }
        if kind == "LoadBalancer" and rng.random() < 0.7:
            svc["status"] = {"loadBalancer": {"ingress": [{"ip": rng.choice(ADDRESSES)}]}}
        endpoints = [
            {"addresses": [f"10.1.{i}.{j}"], "nodeName": rng.choice(["node-a", "node-b"])}
            for j in range(rng.randint(0, 2))
        ]
        eps = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": "ns",
                "name": f"s{i}-1",
                "labels": {"kubernetes.io/service-name": f"s{i}"},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "p", "port": 8080, "protocol": proto}],
        }
        objs += [svc, eps]
    return objs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_colliding_addresses_in_every_mode(seed):
    """No traceback: every mode renders, traces, processes and updates (one Service
    removed) such a cluster; IPVS keeps one virtual server per address and the engine's
    table agrees with the state; trace and process agree on the verdict."""
    objs = _colliding_cluster(random.Random(seed))
    targets = [
        (proto, flags, ip, port)
        for proto, flags in (("tcp", " flags=S"), ("udp", ""))
        for ip in ADDRESSES
        for port in (80, 3000, 3001)
    ]
    # one source port each: two flows DNATed to one endpoint must not clash
    pkts = [
        f"{proto} 203.0.113.9:{4000 + i} -> {ip}:{port}{flags}"
        for i, (proto, flags, ip, port) in enumerate(targets)
    ]
    node = NodeConfig.from_node("node-a", [NODE_IP])
    for mode in ("iptables", "nftables", "ipvs"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SHARED)
            try:
                dp = Dataplane(
                    Cluster.from_dicts(objs), mode, node_config=node, cluster_cidr="10.0.0.0/8"
                )
            except KproxyError:  # a one-line error is an acceptable answer
                continue
            for fmt in dp.backend.formats:
                dp.render(format=fmt)
            traced = [dp.trace(p, "external")["verdict"] for p in pkts]
            out = dp.process(P.from_strings(pkts, "external"))
            assert traced == [P.Action(int(a)).name for a in out["action"]]
            if mode == "ipvs":
                keys = [str(vs) for vs in dp.backend.state.virtual_servers]
                assert len(keys) == len(set(keys)) == len(dp.backend.ipvs.services)
            rest = [o for o in objs if o["metadata"]["name"] not in ("s0", "s0-1")]
            assert dp.update(Cluster.from_dicts(rest)).ok
            dp.process(P.from_strings(pkts))
            if mode == "ipvs":
                fresh = Dataplane(
                    Cluster.from_dicts(rest), mode, node_config=node, cluster_cidr="10.0.0.0/8"
                )
                assert dp.render(format="ipvsadm-save") == fresh.render(format="ipvsadm-save")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=4))
def test_replaying_the_shared_ones_equals_comparing_whole_states(seeds):
    """While virtual servers are shared, a sync visits the fresh and the shared ones
    only: the same kernel operations, text and table as comparing the whole states."""
    node = NodeConfig.from_node("node-a", [NODE_IP])
    clusters = [_colliding_cluster(random.Random(seed)) for seed in seeds]
    syns = P.from_strings(
        [f"tcp 203.0.113.{i}:5000 -> {ip}:80 flags=S" for i, ip in enumerate(ADDRESSES)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SHARED)
        replaying, comparing = (
            Dataplane(Cluster.from_dicts(clusters[0]), "ipvs", node_config=node, seed=5)
            for _ in range(2)
        )
        proxier = comparing.backend.proxier
        compile_state = proxier.compile

        def whole(view):
            result = compile_state(view)
            result.shared_keys = True
            return result

        proxier.compile = whole
        for objs in clusters[1:]:
            for dp in (replaying, comparing):
                dp.process(syns)  # busy real servers: graceful deletions
            a = replaying.update(Cluster.from_dicts(objs))
            b = comparing.update(Cluster.from_dicts(objs))
            assert (a.text, a.extra) == (b.text, b.extra)
            assert replaying.render(format="save") == comparing.render(format="save")
