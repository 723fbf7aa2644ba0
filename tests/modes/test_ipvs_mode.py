"""IPVS mode compiler and renderers.

The fixture cluster is kube-proxy's TestOverallIPTablesRules input; what IPVS mode makes of
it is worked out by hand from pkg/proxy/ipvs/proxier.go (syncProxyRules,
writeIptablesRules) for the same fake node (192.168.0.2, 192.168.1.2, 192.168.99.11).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from kproxy_emu import packets as P
from kproxy_emu import synth
from kproxy_emu._cext import vstable as V
from kproxy_emu.dataplane import ipvs_kernel as K
from kproxy_emu.dataplane import ipvs_reference as R
from kproxy_emu.dataplane.dataplane import resolve_node
from kproxy_emu.errors import InputError
from kproxy_emu.modes import ipvs as M
from kproxy_emu.netfilter.iptables_text import render
from kproxy_emu.netfilter.ipvs import IpvsState
from kproxy_emu.netfilter.ipvs_text import (
    _sorted_dests,
    _sorted_services,
    cmp_dests,
    cmp_services,
    glibc_msort,
    render_ipset_save,
    render_ipvsadm_list,
    render_ipvsadm_save,
)
from kproxy_emu.netfilter.ruleset import Ruleset
from kproxy_emu.proxy import ProxyOptions, ProxyView
from tests.helpers.iptables_env import fixture, view_for

NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11"]


@pytest.fixture
def overall(tmp_path):
    f = fixture("iptables-overall.json")
    return view_for(
        f["environment"], f["input"]["services"], f["input"]["endpointSlices"], tmp_path
    )


def _vs(state):
    return {str(vs): vs for vs in state.virtual_servers}


def test_virtual_servers_of_the_overall_fixture(overall):
    st = M.compile_ipvs(overall)
    vss = _vs(st)
    want = {
        "172.30.0.41:80/TCP",
        "172.30.0.42:80/TCP",
        "192.168.99.22:80/TCP",
        "1.2.3.4:80/TCP",
        "172.30.0.43:80/TCP",
        "172.30.0.44:80/TCP",
        "192.168.99.33:80/TCP",
        "172.30.0.45:80/TCP",
        "5.6.7.8:80/TCP",
        "172.30.0.46:80/TCP",
    }
    want |= {f"{ip}:{np_}/TCP" for ip in NODE_IPS for np_ in (3001, 3003, 3002)}
    assert set(vss) == want and len(st.virtual_servers) == len(want)
    assert [str(r) for r in vss["172.30.0.41:80/TCP"].real_servers] == ["10.180.0.1:80"]
    # svc2 is eTP Local with no local endpoint: IPVS falls back to the cluster endpoints
    for key in ("192.168.99.22:80/TCP", "1.2.3.4:80/TCP", "192.168.0.2:3001/TCP"):
        assert [str(r) for r in vss[key].real_servers] == ["10.180.0.2:80"]
    assert st.no_local_external == {"ns2/svc2"} and not st.no_local_internal
    assert [str(r) for r in vss["172.30.0.44:80/TCP"].real_servers] == [
        "10.180.0.4:80",
        "10.180.0.5:80",
    ]
    # svc6 has no endpoints: a virtual server without real servers (no REJECT rule)
    assert vss["172.30.0.46:80/TCP"].real_servers == []
    # ClientIP affinity: persistent with the sticky timeout
    for key, vs in vss.items():
        persistent = key.startswith(("172.30.0.45:", "5.6.7.8:")) or key.endswith(":3002/TCP")
        assert (vs.flags, vs.timeout) == ((M.FLAG_PERSISTENT, 10800) if persistent else (0, 0))
        assert vs.scheduler == "rr" and all(r.weight == 1 for r in vs.real_servers)
    assert {vs.kind for vs in st.virtual_servers} == {
        "cluster-ip",
        "external-ip",
        "load-balancer",
        "node-port",
    }
    # ClusterIPs, external IPs and LB IPs are bound to kube-ipvs0, node IPs never
    assert set(st.bound_addresses) == {
        "172.30.0.41",
        "172.30.0.42",
        "192.168.99.22",
        "1.2.3.4",
        "172.30.0.43",
        "172.30.0.44",
        "192.168.99.33",
        "172.30.0.45",
        "5.6.7.8",
        "172.30.0.46",
    }
    assert st.endpoints == sorted(set(st.endpoints), key=st.endpoints.index)


def test_ipsets_of_the_overall_fixture(overall):
    st = M.compile_ipvs(overall)
    e = {name: s.entries for name, s in st.ipsets.items()}
    assert list(st.ipsets) == [name for name, _, _ in M.IPSET_INFO]
    assert e["KUBE-CLUSTER-IP"] == {f"172.30.0.4{i},tcp:80" for i in range(1, 7)}
    assert e["KUBE-LOOP-BACK"] == {"10.180.0.5,tcp:80,10.180.0.5"}
    assert e["KUBE-EXTERNAL-IP"] == {"192.168.99.33,tcp:80"}
    assert e["KUBE-EXTERNAL-IP-LOCAL"] == {"192.168.99.22,tcp:80"}
    assert e["KUBE-LOAD-BALANCER"] == {"1.2.3.4,tcp:80", "5.6.7.8,tcp:80"}
    assert e["KUBE-LOAD-BALANCER-LOCAL"] == {"1.2.3.4,tcp:80"}
    assert e["KUBE-LOAD-BALANCER-FW"] == {"5.6.7.8,tcp:80"}
    assert e["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {"5.6.7.8,tcp:80,203.0.113.0/25"}
    assert e["KUBE-LOAD-BALANCER-SOURCE-IP"] == set()  # range lacks the node IP
    assert e["KUBE-NODE-PORT-TCP"] == {"3001", "3002", "3003"}
    assert e["KUBE-NODE-PORT-LOCAL-TCP"] == {"3001"}
    assert e["KUBE-HEALTH-CHECK-NODE-PORT"] == {"30000"}  # svc5's is eTP Cluster: none
    assert e["KUBE-IPVS-IPS"] == set(st.bound_addresses)
    assert st.ipsets["KUBE-LOOP-BACK"].set_type == "hash:ip,port,ip"


def test_iptables_rules_of_the_overall_fixture(overall):
    st = M.compile_ipvs(overall)
    text = render(st.ruleset)
    assert list(st.ruleset.tables) == ["nat", "filter"]  # natChains/natRules first
    lines = text.splitlines()
    assert lines[:7] == [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-LOAD-BALANCER - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
    ]
    must = [
        '-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip '
        'for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set '
        "--match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
        '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with '
        'externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN',
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for '
        'masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 '
        "-j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        "-A KUBE-IPVS-OUT-FILTER -s 5.6.7.8 -m ipvs --vaddr 5.6.7.8 --vproto tcp --vport 80 -j DROP",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
        "-j REJECT",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]
    for line in must:
        assert line in lines, line
    # the LOCAL nodeport set is matched before the masquerading one (ipsetWithIptablesChain)
    assert lines.index(must[2]) < next(
        i for i, x in enumerate(lines) if "KUBE-NODE-PORT-TCP dst" in x
    )
    # no per-service chains, no SOURCE-IP rule (empty set)
    assert not any("KUBE-SVC-" in x or "KUBE-LOAD-BALANCER-SOURCE-IP" in x for x in lines)
    assert [j[:2] for j in M.builtin_jumps()][:3] == [
        ("nat", "OUTPUT"),
        ("nat", "PREROUTING"),
        ("nat", "POSTROUTING"),
    ]


def test_masquerade_all_and_no_detector(tmp_path):
    f = fixture("iptables-overall.json")
    args = (f["environment"], f["input"]["services"], f["input"]["endpointSlices"], tmp_path)
    text = render(M.compile_ipvs(view_for(*args, masquerade_all=True)).ruleset)
    assert "--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ" in text
    text = render(M.compile_ipvs(view_for(*args, detector=False)).ruleset)
    assert "--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ" in text


def test_schedulers_and_mh_flag(overall):
    assert M.compile_ipvs(overall, scheduler=None).scheduler == "rr"
    st = M.compile_ipvs(overall, scheduler="mh")
    assert all(vs.flags & M.FLAG_SOURCE_HASH for vs in st.virtual_servers)
    assert M.SCHEDULERS == V.SCHEDULERS == R.SCHEDULERS
    with pytest.raises(InputError) as exc:
        M.compile_ipvs(overall, scheduler="fifo")
    assert exc.value.field == "ipvs.scheduler" and exc.value.value == "fifo"


def test_ipv6_set_names():
    assert (
        M.ipset_name("KUBE-LOAD-BALANCER-SOURCE-CIDR", "IPv6") == "KUBE-6-LOAD-BALANCER-SOURCE-CID"
    )
    assert M.ipset_name("KUBE-CLUSTER-IP", "IPv6") == "KUBE-6-CLUSTER-IP"
    assert M.ipset_name("KUBE-CLUSTER-IP", "IPv4") == "KUBE-CLUSTER-IP"


def _synth_view(n=40, **kw):
    c = synth.cluster(n, endpoints=3, seed=5, **kw)
    return ProxyView(c, ProxyOptions.build(resolve_node(c), cluster_cidr="10.0.0.0/8"))


def test_synthetic_cluster_compiles_consistently():
    view = _synth_view()
    st = M.compile_ipvs(view)
    cluster_vs = [vs for vs in st.virtual_servers if vs.kind == "cluster-ip"]
    assert len(cluster_vs) == len(view.service_ports)
    assert {f"{vs.address},{vs.protocol.lower()}:{vs.port}" for vs in cluster_vs} == st.ipsets[
        "KUBE-CLUSTER-IP"
    ].entries
    for vs in st.virtual_servers:
        assert vs.bound == (vs.address in st.bound_addresses)
        for rs in vs.real_servers:
            assert st.endpoints[rs.endpoint] == str(rs)
    services, dests = K.lower(st)
    assert services.dtype == V.SERVICE_DTYPE == R.SERVICE_DTYPE
    assert dests.dtype == V.DEST_DTYPE == R.DEST_DTYPE
    assert len(dests) == sum(len(vs.real_servers) for vs in st.virtual_servers)


def test_engine_on_a_compiled_cluster():
    """Packets to every virtual server land on one of its real servers."""
    st = M.compile_ipvs(_synth_view())
    services, dests = K.lower(st)
    t = V.VirtualServerTable(services, dests, "rr", seed=1)
    ref = R.VirtualServerTable(services, dests, "rr", seed=1)
    pk = P.empty_packets(len(services))
    pk["proto"], pk["dst_ip"], pk["dst_port"] = (
        services["proto"],
        services["addr"],
        services["port"],
    )
    pk["src_ip"] = P.ip_to_u32("10.1.2.3")
    pk["src_port"] = 40000
    pk["tcp_flags"] = 2
    pk["family"] = 4
    out, out_ref = P.empty_verdicts(len(pk)), P.empty_verdicts(len(pk))
    res = t.process(pk, out)
    ref.process(pk, out_ref)
    assert np.array_equal(out, out_ref)
    for i, vs in enumerate(st.virtual_servers):
        if vs.real_servers:
            assert res[i] == V.RESULT_DNAT
            assert st.endpoints[out["endpoint"][i]] in {str(r) for r in vs.real_servers}
            assert P.u32_to_ip(int(out["dnat_ip"][i])) in {r.address for r in vs.real_servers}
        else:
            assert res[i] == V.RESULT_REJECT


# ------------------------------------------------------------------------- renderers


def test_ipvsadm_list_and_save(overall):
    st = M.compile_ipvs(overall)
    text = render_ipvsadm_list(st)
    lines = text.splitlines()
    assert lines[:3] == [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    assert "TCP  172.30.0.45:80 rr persistent 10800" in lines
    i = lines.index("TCP  172.30.0.44:80 rr")
    # "  -> %-28s %-7s %-6d %-10u %-10u", as in a real node's
    # "  -> 172.17.0.5:8000              Masq    1      0          0         "
    assert lines[i + 1] == "  -> 10.180.0.4:80" + " " * 16 + "Masq    1      0          0         "
    save = render_ipvsadm_save(st).splitlines()
    assert "-A -t 5.6.7.8:80 -s rr -p 10800" in save
    assert "-a -t 172.30.0.41:80 -r 10.180.0.1:80 -m -w 1" in save
    assert len([x for x in save if x.startswith("-A ")]) == len(st.virtual_servers)
    # libipvs compares addresses by int subtraction: 0x01020304 (1.2.3.4) - 0xC0A86321
    # (192.168.99.33) wraps positive, so the LB addresses list after every 192.168 one;
    # 192.168.x - 172.30.x does not wrap
    heads = [x.split()[2] for x in save if x.startswith("-A ")]
    assert heads[:7] == [f"172.30.0.4{i}:80" for i in range(1, 7)] + ["192.168.0.2:3001"]
    assert heads[-4:] == ["192.168.99.22:80", "192.168.99.33:80", "1.2.3.4:80", "5.6.7.8:80"]


def test_ipvsadm_list_counters_and_flags(overall):
    st = M.compile_ipvs(overall, scheduler="mh")
    services, dests = K.lower(st)
    t = V.VirtualServerTable(services, dests, "mh", seed=0)
    pk = P.from_strings(["tcp 10.0.0.9:1234 -> 172.30.0.41:80 flags=S"])
    t.process(pk, P.empty_verdicts(1))
    text = render_ipvsadm_list(st, counters=t.dest_stats())
    assert "TCP  172.30.0.41:80 mh (mh-port)" in text
    assert "  -> 10.180.0.1:80" + " " * 16 + "Masq    1      0          1         " in text
    assert "-A -t 172.30.0.41:80 -s mh -b mh-port" in render_ipvsadm_save(st)


def test_wrapped_sort_follows_glibc_merge_sort():
    vs = [
        M.VirtualServer(ip, "TCP", 80, "rr")
        for ip in ("200.0.0.1", "100.0.0.1", "10.0.0.1", "150.0.0.1")
    ]
    # int(a - b) wraps for addresses 2^31 apart, so 10 > 150 but 10 < 100 < 150 < 200 < 10.
    # msort: [200 100] -> [100 200]; [10 150] -> [150 10] (10 - 150 wraps positive);
    # merge: 100 (100 < 150), 150 (200 > 150), 200 (200 - 10 wraps negative), 10
    out = [v.address for v in glibc_msort(vs, cmp_services)]
    assert out == ["100.0.0.1", "150.0.0.1", "200.0.0.1", "10.0.0.1"]
    assert [v.address for _, v in _sorted_services_for(vs)] == out


@settings(max_examples=200, deadline=None)
@given(
    hst.lists(
        hst.tuples(
            hst.sampled_from(["TCP", "UDP", "SCTP"]),
            hst.one_of(hst.ip_addresses(v=4), hst.ip_addresses(v=6)).map(str),
            hst.integers(1, 65535),
        ),
        max_size=40,
    )
)
def test_compiled_ipvsadm_sort_is_the_reference_merge_sort(rows):
    """The renderers' compiled sort (_cext.msort) orders virtual servers and real servers
    exactly as the interpreted glibc merge sort with ipvs_cmp_services / ipvs_cmp_dests,
    non-transitive wrapped comparisons and mixed families included."""
    vss = [M.VirtualServer(ip, proto, port, "rr") for proto, ip, port in rows]
    want = [str(v) for v in glibc_msort(vss, cmp_services)]
    got = [str(v) for _, v in _sorted_services_for(vss)]
    assert got == want
    # a virtual server's real servers are of its own family
    dests = [(ip, port) for _, ip, port in rows if (":" in ip) == (":" in rows[0][1])]
    holder = M.VirtualServer("10.0.0.1", "TCP", 80, "rr")
    holder.real_servers = [M.RealServer(ip, port, 1, i) for i, (ip, port) in enumerate(dests)]
    order = _sorted_dests(holder, False)
    assert [dests[i] for i in order] == glibc_msort(dests, cmp_dests)


def _sorted_services_for(vss):
    state = IpvsState("IPv4", "rr", vss, [], {}, Ruleset(), [])
    return _sorted_services(state, False)


def test_ipset_save(overall):
    st = M.compile_ipvs(overall)
    lines = render_ipset_save(st).splitlines()
    assert lines[0] == (
        "create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536"
    )
    assert "add KUBE-LOOP-BACK 10.180.0.5,tcp:80,10.180.0.5" in lines
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535" in lines
    assert lines.index("add KUBE-NODE-PORT-TCP 3001") < lines.index("add KUBE-NODE-PORT-TCP 3002")
    assert "add KUBE-LOAD-BALANCER-SOURCE-CIDR 5.6.7.8,tcp:80,203.0.113.0/25" in lines
    seeded = render_ipset_save(st, initval_seed=3)
    assert seeded == render_ipset_save(st, initval_seed=3)
    assert " bucketsize 12 initval 0x" in seeded


# --------------------------------------------------------------------------- ipsets


@pytest.mark.parametrize(
    "name,dirs,packet,hit",
    [
        ("KUBE-CLUSTER-IP", "dst,dst", "tcp 10.0.0.1:5 -> 172.30.0.41:80", True),
        ("KUBE-CLUSTER-IP", "dst,dst", "tcp 10.0.0.1:5 -> 172.30.0.41:81", False),
        ("KUBE-CLUSTER-IP", "dst,dst", "udp 10.0.0.1:5 -> 172.30.0.41:80", False),
        ("KUBE-CLUSTER-IP", "src,dst", "tcp 172.30.0.41:5 -> 1.1.1.1:80", True),
        ("KUBE-LOOP-BACK", "dst,dst,src", "tcp 10.180.0.5:9 -> 10.180.0.5:80", True),
        ("KUBE-LOOP-BACK", "dst,dst,src", "tcp 10.180.0.6:9 -> 10.180.0.5:80", False),
        ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "dst,dst,src", "tcp 203.0.113.2:9 -> 5.6.7.8:80", True),
        (
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            "dst,dst,src",
            "tcp 203.0.113.130:9 -> 5.6.7.8:80",
            False,
        ),
        ("KUBE-NODE-PORT-TCP", "dst", "tcp 1.1.1.1:9 -> 192.168.0.2:3001", True),
        ("KUBE-NODE-PORT-TCP", "dst", "tcp 1.1.1.1:9 -> 192.168.0.2:3004", False),
        ("KUBE-IPVS-IPS", "dst", "icmp 1.1.1.1 -> 172.30.0.46", True),
        ("KUBE-IPVS-IPS", "dst", "tcp 1.1.1.1:9 -> 192.168.0.2:22", False),
    ],
)
def test_ipset_membership(overall, name, dirs, packet, hit):
    st = M.compile_ipvs(overall)
    s = st.ipsets[name]
    engine = V.IPSet(s.name, s.set_type, sorted(s.entries), seed=4)
    assert len(engine) == len(s.entries)
    assert engine.test(P.from_strings([packet]), dirs).tolist() == [hit]


def test_ipset_rejects_bad_entries():
    with pytest.raises(ValueError, match="bad protocol"):
        V.IPSet("X", "hash:ip,port", ["1.2.3.4,icmp:80"])
    with pytest.raises(ValueError, match="unsupported ipset type"):
        V.IPSet("X", "list:set")


# ------------------------------------------------------------------ successive syncs


def _cluster_with(endpoints, proto="TCP", affinity=False):
    from kproxy_emu.model import Cluster

    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "clusterIP": "172.30.0.10",
            "ports": [{"name": "http", "port": 80, "protocol": proto}],
        },
    }
    if affinity:
        svc["spec"]["sessionAffinity"] = "ClientIP"
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "ns",
            "name": "web-1",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip]} for ip in endpoints],
        "ports": [{"name": "http", "port": 8080, "protocol": proto}],
    }
    return Cluster.from_dicts([svc, eps])


def _state(cluster):
    from kproxy_emu.model.config import NodeConfig

    node = NodeConfig.from_node("node-a", ["192.168.0.2"])
    return M.compile_ipvs(ProxyView(cluster, ProxyOptions.build(node, cluster_cidr="10.0.0.0/8")))


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_graceful_termination_across_syncs(engine):
    sync = K.IpvsSync(engine, seed=2)
    assert sync.sync(_state(_cluster_with(["10.1.0.1", "10.1.0.2"])))["dests_added"] == 2
    t = sync.table
    vip = P.ip_to_u32("172.30.0.10")
    syn = P.from_strings(["tcp 10.0.0.7:5000 -> 172.30.0.10:80 flags=S"])
    out = P.empty_verdicts(1)
    t.process(syn, out)
    busy = sync.endpoints[out["endpoint"][0]]
    # the busy endpoint goes away: weight 0 and on the list (it has a connection)
    left = "10.1.0.1" if busy.startswith("10.1.0.2") else "10.1.0.2"
    res = sync.sync(_state(_cluster_with([left])), now=1)
    assert res["dests_graceful"] == 1 and res["dests_deleted"] == 0
    weights = {P.u32_to_ip(int(r[1])): int(r[3]) for r in t.dest_stats()}
    assert weights == {busy.split(":")[0]: 0, left: 1}
    assert t.find_service(6, vip, 80) >= 0
    # the SYN_RECV connection times out after 60 s; the next loop run deletes the server
    assert sync.tick(30) == 0
    assert sync.tick(61.5) == 1
    assert len(t.service_dests(t.find_service(6, vip, 80))) == 1
    # the service disappears: cleanLegacyService deletes the virtual server
    from kproxy_emu.model import Cluster

    assert sync.sync(_state(Cluster.from_dicts([])))["services_deleted"] == 1
    assert t.find_service(6, vip, 80) == -1


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_udp_real_servers_are_deleted_at_once(engine):
    sync = K.IpvsSync(engine)
    sync.sync(_state(_cluster_with(["10.1.0.1", "10.1.0.2"], "UDP")))
    sync.table.process(
        P.from_strings([f"udp 10.0.0.{i}:53 -> 172.30.0.10:80" for i in (1, 2)]),
        P.empty_verdicts(2),
    )
    res = sync.sync(_state(_cluster_with(["10.1.0.1"], "UDP")))
    assert res["dests_deleted"] == 1 and res["dests_graceful"] == 0


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_endpoint_back_while_terminating_is_re_added(engine):
    sync = K.IpvsSync(engine)
    sync.sync(_state(_cluster_with(["10.1.0.1"])))
    sync.table.process(
        P.from_strings(["tcp 10.0.0.7:5000 -> 172.30.0.10:80 flags=S"]), P.empty_verdicts(1)
    )
    assert sync.sync(_state(_cluster_with([])))["dests_graceful"] == 1
    res = sync.sync(_state(_cluster_with(["10.1.0.1"])))
    assert res["dests_deleted"] == 1 and res["dests_added"] == 1
    # MoveRSOutofGracefulDeleteList deletes it, AddRealServer takes the same destination
    # back from the kernel's trash (ip_vs_trash_get_dest): its connection still counts
    stats = sync.table.dest_stats()
    assert [bool(r[7]) for r in stats] == [True] and int(stats[0][3]) == 1
    assert int(stats[0][4]) + int(stats[0][5]) == 1
    assert sync.endpoints == ["10.1.0.1:8080"]


@pytest.mark.parametrize("engine", [V.VirtualServerTable, R.VirtualServerTable])
def test_affinity_change_updates_the_virtual_server(engine):
    sync = K.IpvsSync(engine)
    sync.sync(_state(_cluster_with(["10.1.0.1"])))
    res = sync.sync(_state(_cluster_with(["10.1.0.1"], affinity=True)))
    assert res["services_updated"] == 1 and res["services_added"] == 0
    assert sync.table.service_flags(0) == (M.FLAG_PERSISTENT | M.FLAG_HASHED, 10800)
    assert sync.sync(_state(_cluster_with(["10.1.0.1"], affinity=True)))["services_updated"] == 0


def test_render_dispatch_and_engine_sets(overall):
    from kproxy_emu.netfilter import ipvs_text

    st = M.compile_ipvs(overall)
    assert ipvs_text.render(st, "iptables-restore") == render(st.ruleset)
    assert ipvs_text.render(st) == render_ipvsadm_save(st)
    with pytest.raises(InputError):
        ipvs_text.render(st, "json")
    sets = K.build_ipsets(st, seed=3)
    assert set(sets) == {s.name for s in st.ipsets.values()}
    pk = P.from_strings(["tcp 10.0.0.1:5 -> 1.2.3.4:80"])
    assert sets["KUBE-LOAD-BALANCER-LOCAL"].test(pk, "dst,dst").tolist() == [True]
    assert sets["KUBE-LOAD-BALANCER-FW"].test(pk, "dst,dst").tolist() == [False]


def test_ipv6_node():
    from kproxy_emu.model import Cluster
    from kproxy_emu.model.config import NodeConfig

    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "clusterIP": "fd00:30::10",
            "type": "NodePort",
            "ipFamilies": ["IPv6"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        },
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "ns",
            "name": "web-1",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv6",
        "endpoints": [{"addresses": ["fd00:10::5"], "nodeName": "n"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    node = NodeConfig.from_node("n", ["2001:db8::1"])
    view = ProxyView(
        Cluster.from_dicts([svc, eps]), ProxyOptions.build(node, cluster_cidr="fd00:10::/64")
    )
    st = M.compile_ipvs(view)
    assert [str(v) for v in st.virtual_servers] == [
        "[fd00:30::10]:80/TCP",
        "[2001:db8::1]:30080/TCP",
    ]
    assert st.ipsets["KUBE-LOOP-BACK"].name == "KUBE-6-LOOP-BACK"
    assert st.ipsets["KUBE-LOOP-BACK"].entries == {"fd00:10::5,tcp:8080,fd00:10::5"}
    text = render_ipvsadm_list(st)
    assert "TCP  [fd00:30::10]:80 rr\n  -> [fd00:10::5]:8080            Masq" in text
    assert "create KUBE-6-CLUSTER-IP hash:ip,port family inet6" in render_ipset_save(st)
    assert "-A KUBE-SERVICES -s ::1/128 -j RETURN" in render(st.ruleset)
    with pytest.raises(InputError, match="IPv4 only"):
        K.lower(st)
