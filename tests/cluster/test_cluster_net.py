"""The cluster as nodes joined by a CNI model (kproxy_emu.cluster_net): the end-to-end
trace in every proxy mode and both CNI models, NodePort to a remote endpoint, the VXLAN
MTU, NetworkPolicy, DNS failures, and batch process against per-packet traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kproxy_emu import packets as P
from kproxy_emu.cli import main
from kproxy_emu.cluster_net import ClusterDataplane, Outcome
from kproxy_emu.cluster_net.e2e import end_to_end
from kproxy_emu.cluster_net.network import OUTCOME_NAMES, PATH_NAMES
from kproxy_emu.model import Cluster

EXAMPLE = Path(__file__).parents[2] / "examples" / "multinode"
MODES = ("iptables", "nftables", "ipvs", "userspace", "ebpf")
CIDR = "10.244.0.0/16"
NODE_IPS = ("192.168.10.1", "192.168.10.2", "192.168.10.3")


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster.from_files([str(EXAMPLE / "cluster.yaml")])


@pytest.fixture(scope="module")
def policed() -> Cluster:
    return Cluster.from_files([str(EXAMPLE / "cluster.yaml"), str(EXAMPLE / "policy.yaml")])


def cdp(cluster: Cluster, mode: str = "iptables", cni: str = "routes", **kw) -> ClusterDataplane:
    return ClusterDataplane(cluster, mode, cni=cni, cluster_cidr=CIDR, **kw)


@pytest.mark.parametrize("cni", ["routes", "vxlan"])
@pytest.mark.parametrize("mode", MODES)
def test_pod_to_dns_name_to_remote_endpoint(cluster, mode, cni):
    r = end_to_end(
        cdp(cluster, mode, cni), from_pod="shop/client-7d4", to="web.shop.svc.cluster.local:80"
    )
    assert r["failed"] is None, r["failed"]
    kinds = [s["step"] for s in r["steps"]]
    assert kinds[0] == "dns" and kinds[-1] == "reply"
    dns = r["steps"][0]
    assert dns["answer"] == ["10.96.100.10"] and dns["status"] == "answered"
    # ndots:5: the search list first, the name as typed last
    assert [t["rcode"] for t in dns["tries"]] == ["NXDOMAIN"] * 3 + ["NOERROR"]
    q = dns["query_packet"]  # the DNS query: through node-1's proxy to CoreDNS on node-3
    assert q["outcome"] == "delivered" and q["node"] == "node-3"
    assert q["delivered_to"] == "10.244.3.53:53" and q["pod"] == "kube-system/coredns-5d7"
    assert r["outcome"] == "delivered" and r["delivered"]["node"] in ("node-2", "node-3")
    assert r["path"] == ("route" if cni == "routes" else "vxlan")
    proxies = [s for s in r["steps"] if s["step"] == "proxy"]
    assert [p["node"] for p in proxies] == ["node-1", r["delivered"]["node"]]
    assert proxies[0]["trace"]["dnat"] == r["delivered"]["address"]
    route = next(s for s in r["steps"] if s["step"] == "route")
    assert route["mtu"] == (1500 if cni == "routes" else 1450)
    rep = r["steps"][-1]["trace"]
    assert rep["outcome"] == "delivered" and rep["node"] == "node-1"
    if mode == "userspace":  # the proxy's second connection ends at node-1's host
        assert rep["delivered_to"].startswith("192.168.10.1:")
    elif mode == "ebpf":  # socket LB: the wire carries the endpoint's address both ways
        assert rep["source_seen"] == r["delivered"]["address"]
    else:
        assert rep["source_seen"] == "10.96.100.10:80"  # conntrack on node-1 undid the DNAT


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs", "ebpf"])
def test_nodeport_cluster_policy_masquerades_to_remote_endpoint(cluster, mode):
    r = end_to_end(cdp(cluster, mode), from_external="203.0.113.7", to="node-1:30080")
    assert r["failed"] is None, r["failed"]
    assert r["delivered"]["node"] == "node-2" and r["path"] == "route"
    assert r["delivered"]["source_seen"].startswith("192.168.10.1:")  # masqueraded
    rep = r["steps"][-1]["trace"]
    assert rep["outcome"] == "left" and rep["source_seen"] == "192.168.10.1:30080"


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ebpf"])
def test_nodeport_local_policy_drops_without_local_endpoint(cluster, mode):
    r = end_to_end(cdp(cluster, mode), from_external="203.0.113.7", to="node-1:30081")
    assert r["failed"]["step"] == "proxy" and "no endpoints" in r["failed"]["reason"]
    # on the endpoint's own node it is delivered, the client's address kept
    r = end_to_end(cdp(cluster, mode), from_external="203.0.113.7", to="node-2:30081")
    assert r["failed"] is None and r["path"] == "local"
    assert r["delivered"]["source_seen"].startswith("203.0.113.7:")


def test_nodeport_local_ipvs_falls_back_and_the_reply_goes_astray(cluster):
    """kube-proxy's IPVS syncEndpoint uses the cluster endpoints when a node has no local
    one, without masquerade: the endpoint's node answers the client directly."""
    r = end_to_end(cdp(cluster, "ipvs"), from_external="203.0.113.7", to="node-1:30081")
    assert r["delivered"]["node"] == "node-2"
    assert r["delivered"]["source_seen"].startswith("203.0.113.7:")
    assert r["failed"]["step"] == "reply" and "another path" in r["failed"]["reason"]


def test_vxlan_mtu_drops_oversize_packet_routes_deliver(cluster):
    for cni, ok in (("routes", True), ("vxlan", False)):
        r = end_to_end(
            cdp(cluster, "iptables", cni),
            from_external="203.0.113.7",
            to="node-1:30080",
            length=1500,
        )
        assert (r["failed"] is None) == ok
        if not ok:
            assert r["failed"]["step"] == "route"
            assert "MTU exceeded: 1500 bytes > 1450" in r["failed"]["reason"]
    # 1450 fits the overlay
    r = end_to_end(
        cdp(cluster, "iptables", "vxlan"),
        from_external="203.0.113.7",
        to="node-1:30080",
        length=1450,
    )
    assert r["failed"] is None


@pytest.mark.parametrize("engine", ["chains", "identity"])
def test_policy_denial_is_named(policed, engine):
    r = end_to_end(
        cdp(policed, "iptables", policy_engine=engine),
        from_pod="shop/client-7d4",
        to="web.shop.svc.cluster.local:80",
    )
    assert r["failed"]["step"] == "policy"
    assert "policy denied" in r["failed"]["reason"] and "web-from-frontend" in r["failed"]["reason"]
    pol = next(s for s in r["steps"] if s["step"] == "policy")
    assert not pol["policy"]["allowed"]


def test_nxdomain_and_no_endpoints_are_named(cluster):
    r = end_to_end(cdp(cluster), from_pod="shop/client-7d4", to="nope.shop.svc.cluster.local:80")
    assert r["failed"]["step"] == "dns" and r["failed"]["reason"].startswith("NXDOMAIN")
    r = end_to_end(cdp(cluster), from_pod="shop/client-7d4", to="empty:80")
    assert r["steps"][0]["answered"] == "empty.shop.svc.cluster.local."
    assert r["failed"]["step"] == "proxy" and "no endpoints" in r["failed"]["reason"]


def test_to_pod_and_ip_and_no_route(cluster):
    c = cdp(cluster)
    r = end_to_end(c, from_pod="shop/client-7d4", to="shop/web-1:8080")
    assert r["failed"] is None and r["delivered"]["pod"] == "shop/web-1"
    assert r["steps"][0]["step"] == "proxy"
    c = cdp(cluster)
    r = end_to_end(c, from_pod="shop/client-7d4", to="10.244.9.9:80")
    assert r["failed"]["step"] == "route" and "no route" in r["failed"]["reason"]
    r = end_to_end(c, from_pod="shop/client-7d4", to="8.8.8.8:443")
    assert r["failed"] is None and r["outcome"] == "left" and r["path"] == "out"


def test_cli_end_to_end_text_and_json(capsys):
    files = [str(EXAMPLE / "cluster.yaml")]
    base = ["trace", *files, "--cluster-cidr", CIDR, "--from-pod", "shop/client-7d4"]
    assert main([*base, "--to", "web.shop.svc.cluster.local:80", "--cni", "vxlan"]) == 0
    text = capsys.readouterr().out
    assert "1. dns: resolve web.shop.svc.cluster.local" in text
    assert "VXLAN overlay node-1 -> node-" in text and "result: delivered" in text
    assert main([*base, "--to", "nope:80", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"]["step"] == "dns"
    assert main(["trace", *files, "--packet", "tcp 10.244.1.5:1 -> 10.96.100.10:80"]) == 0
    capsys.readouterr()
    assert main(["trace", *files, "--to", "web:80"]) == 2  # no client
    assert "--from-pod" in capsys.readouterr().err


# ----------------------------------------------------------- batch == per-packet traces

POD_IPS = ("10.244.1.5", "10.244.2.10", "10.244.3.11", "10.244.3.53")
TARGETS_POD = (
    ("tcp", "10.96.100.10", 80),
    ("tcp", "10.96.100.20", 80),
    ("udp", "10.96.0.10", 53),
    ("tcp", "10.96.100.30", 80),
    ("tcp", "10.244.2.10", 8080),
    ("tcp", "10.244.3.11", 8080),
    ("tcp", "10.244.7.1", 80),  # in the cluster CIDR, no node's: no route
    ("tcp", "8.8.8.8", 443),
)

flow = st.one_of(
    st.tuples(
        st.just("pod"),
        st.sampled_from(POD_IPS),
        st.sampled_from(TARGETS_POD),
        st.sampled_from((60, 1400, 1460, 1500)),
    ),
    st.tuples(
        st.just("external"),
        st.sampled_from(("203.0.113.7", "198.51.100.2")),
        st.tuples(st.just("tcp"), st.sampled_from(NODE_IPS), st.sampled_from((30080, 30081))),
        st.sampled_from((60, 1450, 1451, 1500)),
    ),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flows=st.lists(flow, min_size=1, max_size=25), cni=st.sampled_from(("routes", "vxlan")))
@pytest.mark.parametrize("mode", MODES)
def test_batch_process_equals_per_packet_traces(cluster, mode, flows, cni):
    lines = []
    for k, (origin, src, (proto, dst, dport), _) in enumerate(flows):
        lines.append(f"{proto} {src}:{20000 + k} -> {dst}:{dport} from={origin}")
    batch = P.from_strings(lines)
    batch["ts"] = np.arange(len(lines)) * 0.001
    lengths = np.array([f[3] for f in flows])
    a, b = cdp(cluster, mode, cni, seed=3), cdp(cluster, mode, cni, seed=3)
    got = a.process(batch, lengths=lengths)
    for k, line in enumerate(lines):
        t = b.trace(line, time=float(batch["ts"][k]), length=int(lengths[k]), commit=True)
        row = got[k]
        assert OUTCOME_NAMES[row["outcome"]] == t["outcome"], (line, t["failed"])
        assert PATH_NAMES[row["path"]] == t["path"], line
        assert b.node_names[row["node"]] == t["node"], line
        if t["outcome"] in ("delivered", "left"):
            assert f"{P.u32_to_ip(int(row['dst_ip']))}:{row['dst_port']}" == t["delivered_to"]
            assert f"{P.u32_to_ip(int(row['src_ip']))}:{row['src_port']}" == t["source_seen"]


def test_replies_come_back_through_conntrack(cluster):
    c = cdp(cluster, "iptables", "vxlan")
    lines = [f"tcp 10.244.1.5:{30000 + k} -> 10.96.100.10:80 from=pod" for k in range(50)]
    batch = P.from_strings(lines)
    batch["ts"] = np.arange(50) * 0.001
    got = c.process(batch)
    assert (got["outcome"] == Outcome.DELIVERED).all() and (got["hops"] == 2).all()
    assert set(got["node"]) == {1, 2}  # both endpoints, on node-2 and node-3
    rep, nodes = c.replies(batch, got)
    back = c.process(rep, nodes)
    assert (back["outcome"] == Outcome.DELIVERED).all() and (back["node"] == 0).all()
    assert (back["src_ip"] == P.ip_to_u32("10.96.100.10")).all()
    assert (back["dst_port"] == batch["src_port"]).all()
