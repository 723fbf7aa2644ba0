"""What a trace tells a reader (issue 18, items 11 and 12): the matched path by default,
named cheaply; the Service the packet was addressed to, the same in every mode; the nft
map element and the IPVS virtual and real server met; candidates in numeric order with
exact fractions."""

import ipaddress

import pytest

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu.dataplane.backend import IpvsOptions
from kproxy_emu.dataplane.tracer import endpoint_key

MODES = ("iptables", "nftables", "ipvs")
CIDR = "10.0.0.0/8"
CLIENT = "10.0.0.9"


def _cluster(services=3, endpoints=12, types=None):
    return synth.cluster(
        services,
        endpoints=endpoints,
        seed=3,
        type_mix=types or {"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        terminating_share=0,
        not_ready_share=0,
        itp_local_share=0,
        affinity_share=0,
        prefer_close_share=0,
    )


def _svc_port(cluster, k=0):
    svc = list(cluster.services.values())[k]
    return svc, svc.ports[0]


def test_matched_path_names_only_the_matched_rules(monkeypatch):
    """Item 11: the default trace names (renders) only the matched rules, not every rule
    of a long KUBE-SERVICES chain, and says how many it left out."""
    from kproxy_emu.netfilter import iptables_text

    cluster = _cluster(services=400, endpoints=2)
    svc, port = _svc_port(cluster, 399)  # the last service: KUBE-SERVICES is walked whole
    dp = Dataplane(cluster, cluster_cidr=CIDR, seed=1)
    rendered = []
    real = iptables_text.render_rule
    monkeypatch.setattr(
        iptables_text, "render_rule", lambda *a, **k: rendered.append(1) or real(*a, **k)
    )
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    path = dp.trace(line, "pod", all_rules=False)
    evaluated = path["cost"]["rules_evaluated"]
    assert evaluated > 400
    assert all(s["matched"] for s in path["steps"])
    assert len(rendered) == len(path["steps"]) < 20
    assert path["steps_omitted"] == evaluated - len(path["steps"])
    full = dp.trace(line, "pod")  # the library default keeps every rule
    assert len(full["steps"]) == evaluated and full["steps_omitted"] == 0
    assert [s for s in full["steps"] if s["matched"]] == path["steps"]
    for key in ("verdict", "dnat", "endpoint", "candidates", "outcomes", "service"):
        assert full[key] == path[key]


def test_mh_trace_builds_no_table(monkeypatch):
    """Item 11: the mh (Maglev) lookup tables are built with the node; a trace runs on them
    and restores only what packets change: building a VirtualServerTable during a trace
    (as the old pure-Python twin rebuilt Maglev per destination) fails here."""
    from kproxy_emu._cext import vstable

    cluster = _cluster(services=20, endpoints=7)
    svc, port = _svc_port(cluster, 5)
    dp = Dataplane(cluster, IpvsOptions(scheduler="mh"), cluster_cidr=CIDR, seed=1)
    dp.prepare()
    table = dp.backend.ipvs.table
    before = [table.sched_table(s).tobytes() for s in range(table.num_services)]

    def refuse(*args, **kwargs):
        raise AssertionError("a trace built an IPVS table")

    monkeypatch.setattr(vstable, "VirtualServerTable", refuse)
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    t = dp.trace(line, "pod")
    assert t["verdict"] == "DNAT" and len(t["candidates"]) == 1  # mh: hashed, no draw
    assert dp.backend.ipvs.table is table
    assert [table.sched_table(s).tobytes() for s in range(table.num_services)] == before


@pytest.mark.parametrize("via", ["cluster-ip", "node-port"])
def test_service_is_named_the_same_in_every_mode(via):
    """Item 12: the Service port the packet was addressed to, in the result and consistent
    with what each mode's own path shows (the iptables comment, the nft service chain, the
    IPVS virtual server)."""
    cluster = _cluster(services=6, endpoints=3, types={"NodePort": 1})
    # externalTrafficPolicy Cluster: any node forwards it
    svc = next(s for s in cluster.services.values() if s.external_traffic_policy == "Cluster")
    port = svc.ports[0]
    spn = f"{svc.namespace}/{svc.name}" + (f":{port.name}" if port.name else "")
    got = {}
    for mode in MODES:
        dp = Dataplane(cluster, mode, cluster_cidr=CIDR, seed=1)
        node_ip = dp.options.node.ips[0]
        if via == "cluster-ip":
            line, origin, address = (
                f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}",
                "pod",
                f"{svc.cluster_ip}:{port.port}",
            )
        else:
            line, origin, address = (
                f"tcp 203.0.113.7:40000 -> {node_ip}:{port.node_port}",
                "external",
                f"{node_ip}:{port.node_port}",
            )
        t = dp.trace(line, origin, all_rules=False)
        assert t["verdict"] == "DNAT"
        s = t["service"]
        assert s is not None and s["name"] == spn and s["via"] == via
        assert (s["namespace"], s["service"], s["port"]) == (svc.namespace, svc.name, port.port)
        assert s["address"] == address and s["protocol"] == "TCP"
        got[mode] = s
        texts = " ".join(st["text"] for st in t["steps"])
        if mode == "iptables":
            assert f'"{spn}' in texts or f" {spn} " in texts
        elif mode == "nftables":
            chain = f"{svc.namespace}/{svc.name}/tcp/{port.name}"
            assert any(chain in (st["chain"] or "") for st in t["steps"])
        else:
            (vs_step,) = [st for st in t["steps"] if st["table"] == "ipvs"]
            assert vs_step["virtual_server"] == f"TCP {address}"
            assert vs_step["real_server"] == t["endpoint"]
            assert spn in vs_step["text"] and t["endpoint"] in vs_step["text"]
        # the reply (to the masqueraded source, if it was) belongs to the same Service
        v = dp.process(packets.from_strings([line], origin=origin))[0]
        back = line.split(" -> ")[0].split(" ", 1)[1]
        if v["snat_ip"]:
            back = f"{packets.u32_to_ip(int(v['snat_ip']))}:{int(v['snat_port'])}"
        endpoint = dp.endpoints[int(v["endpoint"])]
        reply = dp.trace(f"tcp {endpoint} -> {back} flags=SA", "pod", time=1.0)
        assert reply["conntrack"] == "reply" and reply["service"] == s
    assert got["iptables"] == got["nftables"] == got["ipvs"]


def test_no_service_for_a_plain_address():
    cluster = _cluster(services=2, endpoints=2)
    for mode in MODES:
        t = Dataplane(cluster, mode, cluster_cidr=CIDR).trace(f"tcp {CLIENT}:1 -> 8.8.8.8:53")
        assert t["service"] is None


def test_nft_names_the_map_elements_that_matched():
    """Item 12: the nft steps carry their chain and the verdict map element that matched:
    the service-ips element of the ClusterIP, then numgen's element for the endpoint."""
    cluster = _cluster(services=3, endpoints=5)
    svc, port = _svc_port(cluster, 1)
    dp = Dataplane(cluster, "nftables", cluster_cidr=CIDR, seed=2)
    t = dp.trace(f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}", "pod", all_rules=False)
    elements = {s["chain"]: s["element"] for s in t["steps"] if "element" in s}
    svc_chain = next(c for c in elements if c.startswith("service-"))
    assert elements["services"] == f"{svc.cluster_ip} . tcp . {port.port} : goto {svc_chain}"
    number, _, verdict = elements[svc_chain].partition(" : ")
    assert 0 <= int(number) < 5
    ip, _, p = t["endpoint"].partition(":")
    assert verdict.startswith("goto endpoint-") and verdict.endswith(f"__{ip}/{p}")
    assert all(s["chain"] for s in t["steps"])


def test_candidates_in_numeric_order_with_exact_fractions():
    """Item 12: 10.x.0.10 after 10.x.0.9 (not in string order); nftables' numgen gives
    exactly 1/N; iptables' --probability 0.5 is exactly 1/2, 0.3333333333 is not 1/3."""
    cluster = _cluster(services=2, endpoints=12)
    svc, port = _svc_port(cluster)
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    t = Dataplane(cluster, "nftables", cluster_cidr=CIDR).trace(line, "pod")
    names = [c["endpoint"] for c in t["candidates"]]
    assert names == sorted(names, key=endpoint_key) != sorted(names)
    assert [int(ipaddress.ip_address(n.split(":")[0])) for n in names] == sorted(
        int(ipaddress.ip_address(n.split(":")[0])) for n in names
    )
    assert {c["fraction"] for c in t["candidates"]} == {"1/12"}
    assert {o["fraction"] for o in t["outcomes"]} == {"1/12"}
    two = _cluster(services=1, endpoints=2)
    svc2, port2 = _svc_port(two)
    line2 = f"tcp {CLIENT}:40000 -> {svc2.cluster_ip}:{port2.port}"
    t2 = Dataplane(two, "iptables", cluster_cidr=CIDR).trace(line2, "pod")
    assert [c["fraction"] for c in t2["candidates"]] == ["1/2", "1/2"]
    three = _cluster(services=1, endpoints=3)
    svc3, port3 = _svc_port(three)
    line3 = f"tcp {CLIENT}:40000 -> {svc3.cluster_ip}:{port3.port}"
    t3 = Dataplane(three, "iptables", cluster_cidr=CIDR).trace(line3, "pod")
    assert [c["fraction"] for c in t3["candidates"]] == [None] * 3
    assert sum(c["probability"] for c in t3["candidates"]) == pytest.approx(1)


def test_ipvs_reply_names_the_real_server():
    cluster = _cluster(services=2, endpoints=3)
    svc, port = _svc_port(cluster)
    dp = Dataplane(cluster, "ipvs", cluster_cidr=CIDR, seed=1)
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    first = dp.trace(line, "pod", commit=True)
    v = dp.process(packets.from_strings([f"tcp {first['endpoint']} -> {CLIENT}:40000 flags=SA"]))
    assert v["action"][0] == packets.Action.ACCEPT
    reply = dp.trace(f"tcp {first['endpoint']} -> {CLIENT}:40000 flags=A", "pod", time=2.0)
    outs = [s for s in reply["steps"] if s["table"] == "ipvs"]
    assert outs and all(s["real_server"] == first["endpoint"] for s in outs)


def test_a_nodes_own_dump_names_the_service_from_its_comments():
    """trace --iptables-save without manifests: the Service comes from the comment
    kube-proxy wrote on the KUBE-SERVICES rule the packet matched, as the manifests give it."""
    from kproxy_emu import Cluster
    from kproxy_emu.dataplane.backend import IptablesOptions
    from kproxy_emu.model.config import NodeConfig
    from kproxy_emu.netfilter.iptables_parse import parse

    cluster = _cluster(services=3, endpoints=3)
    svc, port = _svc_port(cluster, 1)
    compiled = Dataplane(cluster, cluster_cidr=CIDR, seed=1)
    node = NodeConfig.from_node("node", list(compiled.options.node.ips))
    dump = Dataplane(
        Cluster(), IptablesOptions(tables=parse(compiled.render(format="save"))), node_config=node
    )
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    want = compiled.trace(line, "pod")["service"]
    got = dump.trace(line, "pod", all_rules=False)["service"]
    assert want is not None and got == want


@pytest.mark.parametrize("mode", MODES)
def test_a_walk_longer_than_the_recorder_keeps_every_step(monkeypatch, mode):
    """A packet that is tested against more rules than the recorder holds (65,536: the
    KUBE-SERVICES chain of a 100k-service node) still gets every step, the matched ones
    past the limit included."""
    from kproxy_emu.dataplane import tracer

    cluster = _cluster(services=30, endpoints=2)
    svc, port = _svc_port(cluster, 29)
    line = f"tcp {CLIENT}:40000 -> {svc.cluster_ip}:{port.port}"
    want = Dataplane(cluster, mode, cluster_cidr=CIDR, seed=1).trace(line, "pod")
    monkeypatch.setattr(tracer, "RECORDER_STEPS", 4)
    got = Dataplane(cluster, mode, cluster_cidr=CIDR, seed=1).trace(line, "pod")
    assert len(got["steps"]) == got["cost"]["rules_evaluated"] + (mode == "ipvs") > 4
    assert got == want
