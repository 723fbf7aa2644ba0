"""Real traffic recorded in the kernel lab replays through ``process`` with the kernel's
verdicts, and the translated pcap written back reads with a standard reader (dpkt).

The capture: an AF_PACKET socket in the lab's node namespace (kproxy_emu.lab.capture;
tcpdump is not needed), the frames entering the node while the lab's real connections
(TCP connects, UDP datagrams from pods and from outside) go through kube-proxy's rules
loaded in the kernel."""

from __future__ import annotations

import dpkt
import pytest

from kproxy_emu import pcap, synth
from kproxy_emu.packets import PROTO_NUMBERS, Action, ip_to_u32, u32_to_ip

pytestmark = [
    pytest.mark.lab,
    pytest.mark.usefixtures("lab_available"),
]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_capture_of_real_traffic_replays_with_the_kernels_verdicts(tmp_path, mode):
    from kproxy_emu.lab.capture import Capture
    from kproxy_emu.lab.compare import expectation, flows_for
    from kproxy_emu.lab.node import lab_dataplane
    from kproxy_emu.lab.replay import Probe
    from kproxy_emu.lab.session import NodeLab, pod_prefixes

    # one endpoint per Service (or none): the kernel's choice is the only one, so its
    # verdict can be compared flow by flow
    cluster = synth.cluster(
        16,
        seed=3,
        endpoints=1,
        type_mix={"ClusterIP": 0.6, "NodePort": 0.4},
        protocol_mix={"TCP": 0.7, "UDP": 0.3},
        ports_per_service=(1.0,),
        not_ready_share=0.15,
        terminating_share=0,
        affinity_share=0,
    )
    dp = lab_dataplane(cluster, mode, seed=0)
    with NodeLab(dp, seed=0) as lab:
        flows, _ = flows_for(dp, lab.clients, 80, seed=1)
        flows = [f for f in flows if f[4] != "host"]  # a host's packets enter no interface
        probes = [
            Probe(proto, src, lab.alloc.take(src), dst, dport, origin)
            for proto, src, dst, dport, origin in flows
        ]
        lab.add_listeners(probes)
        assert lab.lab is not None
        with Capture(lab.lab) as cap:
            results = lab.probe(probes)
        written = cap.write(tmp_path / "node-in.pcap")
    assert written >= len(probes)

    capture = pcap.read(
        tmp_path / "node-in.pcap", node_ips=dp.options.node.local_ips, pod_cidrs=pod_prefixes(dp)
    )
    assert len(capture.packets) >= len(probes)
    replay = lab_dataplane(cluster, mode, seed=0)
    verdicts = replay.process(capture.packets)
    first: dict[tuple, int] = {}
    for i, row in enumerate(capture.packets):
        key = (int(row["proto"]), int(row["src_ip"]), int(row["src_port"]), int(row["dst_ip"]),
               int(row["dst_port"]))  # fmt: skip
        first.setdefault(key, i)
    compared, mismatches, kinds = 0, [], set()
    for r in results:
        p = r.probe
        if r.verdict == "UNKNOWN" or not expectation(dp, p).deterministic:
            continue
        key = (
            PROTO_NUMBERS[p.proto],
            int(ip_to_u32(p.src)),
            p.sport,
            int(ip_to_u32(p.dst)),
            p.dport,
        )
        assert key in first, f"{p.packet()} not in the capture"
        v = verdicts[first[key]]
        action = Action(int(v["action"])).name
        dnat = f"{u32_to_ip(int(v['dnat_ip']))}:{int(v['dnat_port'])}" if v["dnat_ip"] else None
        emulated = (action, dnat, bool(v["snat_ip"])) if action in ("DNAT", "ACCEPT") else (
            action, None, False)  # fmt: skip
        compared += 1
        kinds.add(r.verdict)
        if emulated != r.signature:
            mismatches.append((p.packet(), p.origin, r.signature, emulated))
    print(
        f"{mode}: {len(probes)} flows, {capture.summary()}; {compared} flows compared "
        f"({sorted(kinds)}), {len(mismatches)} disagree; {int(verdicts['ct_hit'].sum())} "
        "conntrack hits in the replay"
    )
    assert compared >= 30, compared
    assert mismatches == []
    assert {"DNAT", "REJECT"} <= kinds
    # the replies the endpoints sent are conntrack hits of those flows in the replay
    assert int(verdicts["ct_hit"].sum()) > 0

    n = pcap.write(tmp_path / "node-out.pcap", capture, verdicts)
    with open(tmp_path / "node-out.pcap", "rb") as f:
        out = list(dpkt.pcap.Reader(f))
    assert len(out) == n == int(((verdicts["action"] == 0) | (verdicts["action"] == 1)).sum())
    for _, buf in out:
        ip = dpkt.ip.IP(buf)
        assert ip.v == 4 and len(buf) == ip.len
