"""pcap / pcapng in, translated pcap out (kproxy_emu.pcap) and ``kproxy-emu process``."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import dpkt
import numpy as np
import pytest

from kproxy_emu import Dataplane, InputError, packets, pcap, synth

POD, EXT = "10.244.1.5", "203.0.113.7"


@pytest.fixture(scope="module")
def cluster():
    return synth.cluster(
        8,
        seed=4,
        endpoints=2,
        type_mix={"ClusterIP": 0.5, "NodePort": 0.5},
        protocol_mix={"TCP": 0.4, "UDP": 0.3, "SCTP": 0.3},
    )


def _ip(src, dst, l4, proto, **kw):
    ip = dpkt.ip.IP(
        src=struct.pack("!I", packets.ip_to_u32(src)),
        dst=struct.pack("!I", packets.ip_to_u32(dst)),
        p=proto,
        ttl=64,
        data=l4,
        **kw,
    )
    ip.len = len(bytes(ip))
    return ip


def _tcp(src, sport, dst, dport, flags=dpkt.tcp.TH_SYN):
    return _ip(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=b"x"), 6)


def _udp(src, sport, dst, dport):
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=b"hello")
    udp.ulen = len(bytes(udp))
    return _ip(src, dst, udp, 17)


def _sctp(src, sport, dst, dport):
    init = struct.pack("!BBHIIHHI", 1, 0, 20, 0x1234, 65535, 10, 10, 1)  # an INIT chunk
    sctp = dpkt.sctp.SCTP(struct.pack("!HHII", sport, dport, 0, 0) + init)
    sctp.sum = 0  # dpkt computes the CRC32c
    return _ip(src, dst, bytes(sctp), 132)


def _eth(payload, ethertype=dpkt.ethernet.ETH_TYPE_IP):
    return bytes(
        dpkt.ethernet.Ethernet(
            src=b"\x02" * 6, dst=b"\x04" * 6, type=ethertype, data=bytes(payload)
        )
    )


def _frontends(cluster, node_ip):
    """(ip, port, proto) of a TCP ClusterIP, a UDP NodePort and an SCTP service port."""
    out = {}
    for svc in cluster.services.values():
        p = svc.ports[0]
        if p.protocol == "TCP" and "tcp" not in out:
            out["tcp"] = (svc.cluster_ip, p.port)
        if p.protocol == "UDP" and p.node_port and "udp" not in out:
            out["udp"] = (node_ip, p.node_port)
        if p.protocol == "SCTP" and "sctp" not in out:
            out["sctp"] = (svc.cluster_ip, p.port)
    return out


def _capture(path, cluster, node_ip):
    fe = _frontends(cluster, node_ip)
    frames = [
        _eth(_tcp(POD, 40000, *fe["tcp"])),
        _eth(_udp(EXT, 50000, *fe["udp"])),
        _eth(_sctp(POD, 40001, *fe["sctp"])),
        _eth(b"\x60" + b"\0" * 39, dpkt.ethernet.ETH_TYPE_IP6),  # IPv6
        _eth(b"\0" * 28, dpkt.ethernet.ETH_TYPE_ARP),
        _eth(_ip(POD, EXT, dpkt.icmp.ICMP(type=8, data=b"ping"), 1)),
        _eth(_ip(POD, EXT, b"frag", 6, mf=1)),
        _eth(bytes(_tcp(POD, 40002, *fe["tcp"]))[:22]),  # ports cut by the snap length
        # 802.1Q VLAN tag, then the same TCP flow's ACK
        b"\x04" * 6
        + b"\x02" * 6
        + b"\x81\x00\x00\x05\x08\x00"
        + bytes(_tcp(POD, 40000, *fe["tcp"], flags=dpkt.tcp.TH_ACK)),
    ]
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for k, frame in enumerate(frames):
            w.writepkt(frame, ts=1_700_000_000.0 + k * 0.001)
    return fe


def test_read_counts_what_it_keeps_and_skips(tmp_path, cluster):
    dp = Dataplane(cluster, "iptables", cluster_cidr="10.244.0.0/16")
    node_ip = dp.options.node.primary_ip
    fe = _capture(tmp_path / "in.pcap", cluster, node_ip)
    cap = pcap.read(tmp_path / "in.pcap", node_ips=[node_ip], pod_cidrs=["10.244.0.0/16"])
    assert cap.total == 9 and len(cap.packets) == 4
    assert cap.skipped == {"not IPv4": 2, "ICMP": 1, "IPv4 fragment": 1, "truncated": 1}
    assert "9 packets read, 4 IPv4 TCP/UDP/SCTP kept, 5 skipped" in cap.summary()
    rows = packets.to_strings(cap.packets)
    assert rows[0] == f"tcp {POD}:40000 -> {fe['tcp'][0]}:{fe['tcp'][1]} from=pod"
    assert rows[1].startswith(f"udp {EXT}:50000") and rows[1].endswith("from=external")
    assert rows[2].startswith("sctp")
    assert rows[3].endswith("flags=A from=pod")
    assert cap.packets["ts"][0] == 0.0 and cap.packets["ts"][3] == pytest.approx(0.008, abs=2e-6)
    assert cap.start == pytest.approx(1_700_000_000.0)


def test_translated_pcap_reads_back_with_valid_checksums(tmp_path, cluster):
    dp = Dataplane(cluster, "iptables", cluster_cidr="10.244.0.0/16", seed=1)
    node_ip = dp.options.node.primary_ip
    _capture(tmp_path / "in.pcap", cluster, node_ip)
    cap = pcap.read(tmp_path / "in.pcap", node_ips=[node_ip], pod_cidrs=["10.244.0.0/16"])
    verdicts = dp.process(cap.packets)
    assert (verdicts["action"][:3] == packets.Action.DNAT).all()
    # the last packet: the TCP flow's ACK with no SYN-ACK seen, INVALID to conntrack, which
    # kube-proxy's iptables rules drop
    assert verdicts["action"][3] == packets.Action.DROP
    n = pcap.write(tmp_path / "out.pcap", cap, verdicts)
    assert n == 3
    verdicts = verdicts[:3]
    with open(tmp_path / "out.pcap", "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == pcap.LINKTYPE_RAW
        out = list(reader)
    assert len(out) == 3
    assert out[0][0] == pytest.approx(1_700_000_000.0, abs=1e-6)
    for (_, buf), v in zip(out, verdicts):
        ip = dpkt.ip.IP(buf)
        assert struct.unpack("!I", ip.dst)[0] == v["dnat_ip"] and ip.data.dport == v["dnat_port"]
        if v["snat_ip"]:
            assert struct.unpack("!I", ip.src)[0] == v["snat_ip"]
            assert ip.data.sport == v["snat_port"]
        sums = (ip.sum, ip.data.sum)
        ip.sum = 0
        if ip.p == 132:
            ip.data.sum = 0
            again = dpkt.ip.IP(bytes(ip))
            assert again.data.sum == sums[1]
        else:
            ip.data.sum = 0
            again = dpkt.ip.IP(bytes(ip))
            assert (again.sum, again.data.sum) == sums


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_translated_pcap_opens_in_tcpdump(tmp_path, cluster):
    """A standard reader (libpcap's tcpdump -r, -vv: checksums verified) reads the written
    capture: the translated packets with their new addresses and correct checksums."""
    dp = Dataplane(cluster, "iptables", cluster_cidr="10.244.0.0/16", seed=1)
    node_ip = dp.options.node.primary_ip
    _capture(tmp_path / "in.pcap", cluster, node_ip)
    cap = pcap.read(tmp_path / "in.pcap", node_ips=[node_ip], pod_cidrs=["10.244.0.0/16"])
    verdicts = dp.process(cap.packets)
    assert pcap.write(tmp_path / "out.pcap", cap, verdicts) == 3
    proc = subprocess.run(
        ["tcpdump", "-nn", "-vv", "-r", str(tmp_path / "out.pcap")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " > " in line]
    assert len(lines) == 3
    for line, v in zip(lines, verdicts[:3]):
        dst = f"{packets.u32_to_ip(int(v['dnat_ip']))}.{int(v['dnat_port'])}"
        assert f"> {dst}:" in line, line
    assert "incorrect" not in proc.stdout and "bad cksum" not in proc.stdout


@pytest.mark.parametrize("kind", ["sll", "sll2", "raw", "pcapng", "null"])
def test_link_types_and_pcapng(tmp_path, kind):
    pkt = bytes(_tcp(POD, 40000, "172.16.0.1", 80))
    path = tmp_path / f"{kind}.cap"
    with open(path, "wb") as f:
        if kind == "pcapng":
            w = dpkt.pcapng.Writer(f)
            w.writepkt(_eth(pkt), ts=5.0)
        else:
            linktype, frame = {
                "sll": (113, b"\0\0\0\1\0\6" + b"\2" * 6 + b"\0\0" + b"\x08\x00" + pkt),
                "sll2": (276, b"\x08\x00\0\0" + b"\0\0\0\2" + b"\0\1\0\6" + b"\2" * 8 + pkt),
                "raw": (101, pkt),
                "null": (0, struct.pack("=I", 2) + pkt),
            }[kind]
            w = dpkt.pcap.Writer(f, linktype=linktype)
            w.writepkt(frame, ts=5.0)
    cap = pcap.read(path)
    assert len(cap.packets) == 1 and cap.skipped == {}
    assert packets.to_strings(cap.packets)[0] == f"tcp {POD}:40000 -> 172.16.0.1:80"


def test_out_of_order_captures_are_sorted_and_bad_files_refused(tmp_path):
    path = tmp_path / "two.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=101)
        w.writepkt(bytes(_tcp(POD, 1, "172.16.0.1", 80)), ts=2.0)
        w.writepkt(bytes(_tcp(POD, 2, "172.16.0.1", 80)), ts=1.0)
    cap = pcap.read(path, relative=False)
    assert cap.reordered == 2 and list(cap.packets["src_port"]) == [2, 1]
    assert list(cap.packets["ts"]) == [1.0, 2.0]
    (tmp_path / "junk.pcap").write_bytes(b"not a capture at all")
    with pytest.raises(InputError, match="not a pcap"):
        pcap.read(tmp_path / "junk.pcap")
    with pytest.raises(InputError, match="cannot read"):
        pcap.read(tmp_path / "missing.pcap")
    with pytest.raises(InputError, match="one verdict per packet"):
        pcap.write(tmp_path / "o.pcap", cap, packets.empty_verdicts(1))


def test_process_command(tmp_path, cluster, cli):
    cluster.dump(tmp_path / "cluster.yaml")
    dp = Dataplane(cluster, "nftables", cluster_cidr="10.244.0.0/16")
    node_ip = dp.options.node.primary_ip
    _capture(tmp_path / "in.pcap", cluster, node_ip)
    res = cli(
        "process",
        tmp_path / "cluster.yaml",
        "--pcap",
        tmp_path / "in.pcap",
        "--mode",
        "nftables",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--out",
        tmp_path / "out.pcap",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["packets_read"] == 9 and out["packets"] == 4
    assert out["skipped"]["not IPv4"] == 2
    verdicts = dp.process(pcap.read(tmp_path / "in.pcap").packets)
    for action in packets.Action:
        assert out["verdicts"][action.name] == int(np.count_nonzero(verdicts["action"] == action))
    assert out["written"] == out["verdicts"]["DNAT"] + out["verdicts"]["ACCEPT"] >= 3
    res = cli("process", tmp_path / "cluster.yaml", "--pcap", tmp_path / "in.pcap")
    assert res.returncode == 0 and "verdicts: ACCEPT 0, DNAT 3" in res.stdout
    res = cli("process", tmp_path / "cluster.yaml", "--pcap", tmp_path / "missing.pcap")
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_bench_replays_a_capture_in_every_mode(tmp_path, cluster):
    """bench --pcap: the capture's packets through each mode on the cluster it was taken
    on (the cells' size is that cluster's), the same records as the synthetic sweep's."""
    from kproxy_emu.bench import report, sweep

    manifests = tmp_path / "cluster.json"
    cluster.dump(str(manifests))
    node_ip = Dataplane(cluster, "iptables").options.node.primary_ip
    _capture(tmp_path / "in.pcap", cluster, node_ip)
    spec = sweep.BenchSpec(
        modes=("iptables", "nftables", "ebpf"),
        repeat=1,
        pcap=str(tmp_path / "in.pcap"),
        files=(str(manifests),),
        cluster_cidr="10.244.0.0/16",
    )
    result = sweep.run(spec, progress=False, isolate=False)
    new = [r for r in result["records"] if r["flow"] == "new"]
    assert [r["mode"] for r in new] == ["iptables", "nftables", "ebpf"]
    for r in new:
        assert r["packets"] == 4 and r["services"] == len(cluster.services)
        assert r["actions"].get("DNAT", 0) >= 2  # the TCP and SCTP flows to Services
    assert result["disruption"] == []  # a synthetic-cluster figure: not with a capture
    assert "iptables" in report.table(result)


def test_bench_pcap_needs_the_cluster(tmp_path, cli):
    proc = cli("bench", "--pcap", str(tmp_path / "x.pcap"))
    assert proc.returncode == 2
    assert "--pcap: a capture needs the cluster it was taken on" in proc.stderr


def test_bench_pcap_bad_capture_is_an_error(tmp_path, cluster, cli):
    manifests = tmp_path / "cluster.json"
    cluster.dump(str(manifests))
    (tmp_path / "bad.pcap").write_text("garbage")
    for name in ("none.pcap", "bad.pcap"):
        args = ["--pcap", str(tmp_path / name), "--manifests", str(manifests)]
        proc = cli("bench", *args, "--modes", "iptables", "--no-progress")
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
