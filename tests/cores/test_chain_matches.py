"""Chain VM matches and targets beyond kube-proxy's own rules, on hand-written node tables:
multiport, statistic nth, SNAT/MASQUERADE source-port choice (kernel get_unique_tuple)."""

import numpy as np
import pytest

from kproxy_emu import Dataplane, IptablesOptions, packets
from kproxy_emu.errors import InputError
from kproxy_emu.model.cluster import Cluster
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.netfilter.iptables_parse import parse

NODE = NodeConfig.from_node("node-a", ["192.168.0.2"])


def _dataplane(nat_rules: str, filter_rules: str = "", **kw) -> Dataplane:
    dump = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        f":POSTROUTING ACCEPT [0:0]\n{nat_rules}COMMIT\n"
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        f"{filter_rules}COMMIT\n"
    )
    return Dataplane(
        Cluster(),
        IptablesOptions(tables=parse(dump)),
        node_config=NODE,
        cluster_cidr="10.0.0.0/8",
        **kw,
    )


def _run(dp, lines, origin="pod", ts=0.0):
    return dp.process(packets.from_strings(lines, origin=origin, ts=ts))


@pytest.mark.parametrize("negate", [False, True])
def test_multiport_dports_with_ranges(negate):
    bang = "! " if negate else ""
    dp = _dataplane(
        "-A PREROUTING -p tcp -m multiport "
        f"{bang}--dports 80,443,8000:8002 -j DNAT --to-destination 10.1.1.1:9\n",
        conntrack=False,
    )
    ports = [80, 81, 443, 7999, 8000, 8001, 8002, 8003]
    out = _run(dp, [f"tcp 10.0.0.5:1000 -> 10.9.9.9:{p}" for p in ports])
    hit = [p in (80, 443, 8000, 8001, 8002) for p in ports]
    expect = [h != negate for h in hit]
    assert list(out["action"] == packets.Action.DNAT) == expect


def test_multiport_ports_matches_either_side():
    dp = _dataplane(
        "-A PREROUTING -p udp -m multiport --ports 53 -j DNAT --to-destination 10.1.1.1:53\n",
        conntrack=False,
    )
    out = _run(
        dp,
        [
            "udp 10.0.0.5:53 -> 10.9.9.9:1000",
            "udp 10.0.0.5:1000 -> 10.9.9.9:53",
            "udp 10.0.0.5:1000 -> 10.9.9.9:1001",
        ],
    )
    assert list(out["action"]) == [packets.Action.DNAT, packets.Action.DNAT, packets.Action.ACCEPT]


def test_statistic_nth_counts_packets_across_batches():
    # --every 3 --packet 1: packets 1, 4, 7, ... match (xt_statistic's counter)
    dp = _dataplane(
        "-A PREROUTING -p tcp -m statistic --mode nth --every 3 --packet 1 "
        "-j DNAT --to-destination 10.1.1.1:80\n",
        conntrack=False,
    )
    lines = [f"tcp 10.0.0.5:{1000 + i} -> 10.9.9.9:80" for i in range(5)]
    first = _run(dp, lines)
    second = _run(dp, lines)
    matched = np.concatenate([first["action"], second["action"]]) == packets.Action.DNAT
    assert list(np.flatnonzero(matched)) == [1, 4, 7]


def test_statistic_nth_negated():
    dp = _dataplane(
        "-A PREROUTING -p tcp -m statistic --mode nth ! --every 2 "
        "-j DNAT --to-destination 10.1.1.1:80\n",
        conntrack=False,
    )
    out = _run(dp, [f"tcp 10.0.0.5:{1000 + i} -> 10.9.9.9:80" for i in range(4)])
    assert list(out["action"] == packets.Action.DNAT) == [False, True, False, True]


def test_nth_packet_must_be_below_every():
    with pytest.raises(InputError, match="--packet"):  # the parser refuses it, as iptables
        _dataplane("-A PREROUTING -m statistic --mode nth --every 2 --packet 2 -j ACCEPT\n")


MASQ = "-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE{}\n"


def test_masquerade_keeps_the_source_port_when_free_and_moves_it_on_a_clash():
    dp = _dataplane(
        "-A PREROUTING -p tcp -d 10.96.0.1 -j DNAT --to-destination 10.2.0.1:80\n" + MASQ.format("")
    )
    # two pods, same source port, same endpoint: after masquerade the second tuple would
    # equal the first's, so the kernel picks another port from 1024-65535
    out = _run(dp, ["tcp 10.0.0.5:40000 -> 10.96.0.1:80", "tcp 10.0.0.6:40000 -> 10.96.0.1:80"])
    assert list(out["snat_ip"]) == [packets.ip_to_u32("192.168.0.2")] * 2
    assert out["snat_port"][0] == 40000
    assert out["snat_port"][1] != 40000 and 1024 <= out["snat_port"][1] <= 65535
    # low ports stay in their class (1-511 here)
    low = _run(dp, ["tcp 10.0.0.5:500 -> 10.96.0.1:80", "tcp 10.0.0.6:500 -> 10.96.0.1:80"])
    assert low["snat_port"][0] == 500 and 1 <= low["snat_port"][1] <= 511
    # replies to the moved port are un-NATed to the second pod
    reply = _run(dp, [f"tcp 10.2.0.1:80 -> 192.168.0.2:{out['snat_port'][1]} flags=SA"], ts=0.1)
    assert reply["ct_hit"][0] and reply["dnat_ip"][0] == packets.ip_to_u32("10.0.0.6")
    assert reply["dnat_port"][0] == 40000


def test_masquerade_random_fully_draws_ports_from_the_seed():
    def ports(seed):
        dp = _dataplane(MASQ.format(" --random-fully"), seed=seed)
        out = _run(dp, [f"tcp 10.0.0.{i}:40000 -> 10.3.0.1:80" for i in range(1, 50)])
        assert (out["snat_ip"] == packets.ip_to_u32("192.168.0.2")).all()
        return out["snat_port"]

    a, b = ports(1), ports(2)
    assert (a >= 1024).all() and len(set(a.tolist())) == len(a)  # unique tuples
    assert (a != 40000).mean() > 0.9
    assert (ports(1) == a).all() and (a != b).any()


def test_snat_to_source():
    dp = _dataplane("-A POSTROUTING -p udp -j SNAT --to-source 192.168.0.9\n")
    out = _run(dp, ["udp 10.0.0.5:5000 -> 10.3.0.1:53"])
    assert out["snat_ip"][0] == packets.ip_to_u32("192.168.0.9")
    assert out["snat_port"][0] == 5000


AFFINITY = (
    "-A PREROUTING -p tcp -d 10.96.0.1 -m recent --name A --rcheck --seconds {s}{reap} "
    "-j DNAT --to-destination 10.2.0.1:80\n"
    "-A PREROUTING -p tcp -d 10.96.0.1 -m recent --set --name A "
    "-j DNAT --to-destination 10.2.0.2:80\n"
)


def _client(dp, k, ts):
    out = _run(dp, [f"tcp 10.0.{k // 250}.{k % 250 + 1}:{1000 + int(ts)} -> 10.96.0.1:80"], ts=ts)
    return packets.u32_to_ip(int(out["dnat_ip"][0]))


def test_recent_list_keeps_ip_list_tot_addresses_and_evicts_the_least_recent():
    dp = _dataplane(AFFINITY.format(s=1000, reap=""), conntrack=False)
    for k in range(101):  # the 101st address pushes out the first (ip_list_tot = 100)
        assert _client(dp, k, float(k)) == "10.2.0.2"
    assert dp.backend._recent[2][0] == 100
    assert _client(dp, 1, 200.0) == "10.2.0.1"  # still listed
    assert _client(dp, 0, 201.0) == "10.2.0.2"  # evicted: a first packet again (re-set)
    assert _client(dp, 2, 202.0) == "10.2.0.1"


def test_recent_seconds_and_reap():
    dp = _dataplane(AFFINITY.format(s=10, reap=" --reap"), conntrack=False)
    for k in range(5):
        _client(dp, k, float(k))
    assert _client(dp, 4, 9.5) == "10.2.0.1"  # nothing is older than 10 s yet
    assert dp.backend._recent[2][0] == 5
    assert _client(dp, 4, 14.0) == "10.2.0.1"  # seen at 4, checked at 14: 4 >= 14 - 10
    assert dp.backend._recent[2][0] == 4  # reap: the oldest (client 0, seen at 0) goes
    assert _client(dp, 3, 30.0) == "10.2.0.2"  # stale: no match, --set refreshes it


def test_invalid_packets_skip_the_nat_table():
    """nf_nat only runs for packets with a conntrack entry: an ACK in SYN_SENT is INVALID
    (no entry), so it is not DNATed, while the flow's SYN was."""
    dp = _dataplane(
        "-A PREROUTING -p tcp -d 10.96.0.1 -j DNAT --to-destination 10.2.0.1:80\n",
        "-A FORWARD -m conntrack --ctstate INVALID -j DROP\n",
    )
    syn = _run(dp, ["tcp 10.0.0.5:1234 -> 10.96.0.1:80"])
    assert syn["action"][0] == packets.Action.DNAT
    ack = _run(dp, ["tcp 10.0.0.5:1234 -> 10.96.0.1:80 flags=A"], ts=0.1)
    assert ack["action"][0] == packets.Action.DROP and ack["dnat_ip"][0] == 0
    dp2 = _dataplane("-A PREROUTING -p tcp -d 10.96.0.1 -j DNAT --to-destination 10.2.0.1:80\n")
    _run(dp2, ["tcp 10.0.0.5:1234 -> 10.96.0.1:80"])
    ack = _run(dp2, ["tcp 10.0.0.5:1234 -> 10.96.0.1:80 flags=A"], ts=0.1)
    assert ack["action"][0] == packets.Action.ACCEPT and ack["dnat_ip"][0] == 0
