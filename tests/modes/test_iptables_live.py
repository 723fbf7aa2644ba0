"""render_live: what a live node's iptables-save (v1.8.9, nf_tables) prints for a Ruleset.

The expected texts here are the real tool's output, not this code's: the kube-proxy live
fixture, and corpora recorded with iptables-restore + iptables-save in a network
namespace (below). The lab tests (tests/lab/test_iptables_lab.py) re-run the real tool
when they can (root, unshare, iptables-nft) and compare again.
"""

import datetime
import json

import pytest

from kproxy_emu.errors import InputError
from kproxy_emu.netfilter.iptables_live import (
    comparable_lines,
    probability_live,
    render_live,
    render_live_rule,
    save_string,
)
from kproxy_emu.netfilter.iptables_parse import parse
from kproxy_emu.netfilter.ruleset import Opt, Rule, Ruleset
from tests.helpers.fixtures import FIXTURES, require_fixtures

LIVE = FIXTURES / "live" / "iptables-overall.iptables-save.txt"

# kube-proxy's jump rules from the built-in chains (SPEC 2.1), in the order kube-proxy
# ensures them, each with "iptables -I CHAIN 1" (so later ones end up first)
JUMPS = """*filter
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-I INPUT 1 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I FORWARD 1 -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
COMMIT
*nat
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
*filter
-I INPUT 1 -j KUBE-FIREWALL
-I OUTPUT 1 -j KUBE-FIREWALL
COMMIT
"""


def overall_as_loaded() -> Ruleset:
    """The overall fixture's restore text as kube-proxy loads it: restore, then the jumps."""
    text = json.loads((FIXTURES / "iptables-overall.json").read_text())["expected"]["text"]
    return parse(JUMPS, into=parse(text))


def corpus(name):
    text, saved, family = CORPORA[name]
    return text.replace("<TAB>", "\t"), saved.replace("<TAB>", "\t"), family


# ----------------------------------------------------------------- the live fixture


def test_overall_fixture_renders_as_the_live_dump():
    require_fixtures()
    live = LIVE.read_text()
    got = render_live(overall_as_loaded())
    assert comparable_lines(got) == comparable_lines(live)
    assert got == live  # the live file has no "#" lines: byte for byte


def test_live_dump_parses_and_renders_back_unchanged():
    require_fixtures()
    live = LIVE.read_text()
    ruleset = parse(live, file=str(LIVE))
    assert list(ruleset.tables) == ["filter", "nat"]
    nat = ruleset.tables["nat"]
    assert nat.chains["PREROUTING"].policy == "ACCEPT"
    assert len(nat.rules) == 58 and len(ruleset.tables["filter"].rules) == 21
    assert render_live(ruleset) == live


def test_live_dump_is_the_restore_text_after_normalisation():
    """Every rule of the fixture's restore text appears, normalised, in the live dump."""
    require_fixtures()
    ruleset = overall_as_loaded()
    live = set(comparable_lines(LIVE.read_text()))
    for table in ruleset.tables.values():
        for rule in table.rules:
            for line in render_live_rule(rule):
                assert line in live


# ----------------------------------------------------------------- recorded corpora


@pytest.mark.parametrize("name", ["modules", "targets", "foreign", "edge", "ipv6"])
def test_corpus_matches_recorded_iptables_save(name):
    text, saved, family = corpus(name)
    got = render_live(parse(text, family=family))
    # iptables-restore without --counters ignores chain counters; the Ruleset keeps them
    assert comparable_lines(got, counters=False) == comparable_lines(saved, counters=False)


@pytest.mark.parametrize("name", ["modules", "targets", "foreign", "edge", "ipv6"])
def test_real_output_is_a_fixed_point(name):
    """What iptables-save printed parses back and renders to itself."""
    _, saved, family = corpus(name)
    assert render_live(parse(saved, family=family)) == saved


# ----------------------------------------------------------------- single rules


def live(rule_text, table="filter", family="IPv4"):
    ruleset = parse(f"*{table}\n{rule_text}\nCOMMIT\n", family=family)
    lines = []
    for rule in ruleset.tables[table].rules:
        lines += render_live_rule(rule, family)
    return lines


@pytest.mark.parametrize(
    "given,printed",
    [
        ("0.5000000000", "0.50000000000"),
        ("0.3333333333", "0.33333333349"),
        ("0.2500000000", "0.25000000000"),
        ("0.1000000000", "0.10000000009"),
        ("0.0000100000", "0.00001000008"),
        ("0.0000099999", "0.00001000008"),  # rounds to the same stored value as 0.00001
        ("0.1428571429", "0.14285714272"),
        ("0.9999999999", "1.00000000000"),
        ("1.0000000000", "1.00000000000"),
        ("0", "0.00000000000"),
    ],
)
def test_probability_as_the_kernel_stores_it(given, printed):
    """Values seen in real iptables-save output (the edge corpus and the live fixture)."""
    assert probability_live(given) == printed


def test_kube_proxy_rule_forms():
    assert live(
        '-A KUBE-SVC-X -m comment --comment "ns/s:p cluster IP" -m tcp -p tcp '
        "-d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"
    ) == [
        "-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment "
        '--comment "ns/s:p cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ'
    ]
    assert live("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000", "nat") == [
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"
    ]
    assert live("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000", "nat") == [
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0"
    ]
    assert live(
        "-A KUBE-POSTROUTING -m comment --comment x -j MASQUERADE --random-fully", "nat"
    ) == ["-A KUBE-POSTROUTING -m comment --comment x -j MASQUERADE --random-fully"]
    assert live("-A X -m comment --comment ns/s:p -m tcp -p tcp -j REJECT") == [
        '-A X -p tcp -m comment --comment "ns/s:p" -m tcp -j REJECT '
        "--reject-with icmp-port-unreachable"
    ]
    assert live("-A X -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP") == [
        "-A X -m nfacct --nfacct-name  ct_state_invalid_dropped_pkts -j DROP"
    ]
    assert live("-A X -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j Y") == [
        "-A X -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A "
        "--mask 255.255.255.255 --rsource -j Y"
    ]
    assert live(
        '-A X -m comment --comment "a b" -m statistic --mode random --probability 0.3333333333 -j Y'
    ) == [
        '-A X -m comment --comment "a b" -m statistic --mode random '
        "--probability 0.33333333349 -j Y"
    ]
    assert live("-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN", "nat") == [
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN"
    ]
    assert live("-A X -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP") == [
        "-A X -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    ]
    assert live("-A X -m conntrack --ctstate DNAT,ESTABLISHED,NEW,INVALID -j DROP") == [
        "-A X -m conntrack --ctstate INVALID,NEW,ESTABLISHED,DNAT -j DROP"
    ]


def test_ipvs_mode_rules():
    """IPVS-mode forms (SPEC 3.4); the ipvs match follows libxt_ipvs's save (no kernel
    module in the lab to check it against)."""
    assert live(
        "-A KUBE-IPVS-OUT-FILTER -s 1.2.3.4 -m ipvs --vaddr 1.2.3.4 --vproto tcp --vport 80 -j DROP"
    ) == [
        "-A KUBE-IPVS-OUT-FILTER -s 1.2.3.4/32 -m ipvs --vproto 6 --vaddr 1.2.3.4 "
        "--vport 80 -j DROP"
    ]
    assert live(
        '-A KUBE-EXTERNAL-IP -m comment --comment "x y" -m set --match-set '
        "KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! "
        "--src-type LOCAL -j ACCEPT",
        "nat",
    ) == [
        '-A KUBE-EXTERNAL-IP -m comment --comment "x y" -m set --match-set KUBE-EXTERNAL-IP '
        "dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
    ]


def test_basic_matches_move_to_the_front_in_canonical_order():
    assert live(
        "-A X -p udp -m comment --comment c -o eth1 -f -i eth0+ -d 10.1.2.3/16 "
        "! -s 1.2.3.4 -j ACCEPT"
    ) == [
        "-A X ! -s 1.2.3.4/32 -d 10.1.0.0/16 -i eth0+ -o eth1 -p udp -f -m comment "
        "--comment c -j ACCEPT"
    ]


def test_implicit_protocol_match_is_spelled_out_where_it_was_loaded():
    assert live("-A X -m comment --comment c -p tcp --dport 80 -m mark --mark 1 -j ACCEPT") == [
        "-A X -p tcp -m comment --comment c -m tcp --dport 80 -m mark --mark 0x1 -j ACCEPT"
    ]


def test_address_lists_become_one_rule_each():
    assert live("-A X -s 1.1.1.1,2.2.2.2 -d 3.3.3.3 -j DROP") == [
        "-A X -s 1.1.1.1/32 -d 3.3.3.3/32 -j DROP",
        "-A X -s 2.2.2.2/32 -d 3.3.3.3/32 -j DROP",
    ]


def test_ipv6_addresses_and_reject():
    assert live("-A X -d fd00:10:96:0::a -p tcp -m tcp --dport 53 -j REJECT", family="IPv6") == [
        "-A X -d fd00:10:96::a/128 -p tcp -m tcp --dport 53 -j REJECT "
        "--reject-with icmp6-port-unreachable"
    ]


def test_save_string_quoting():
    assert save_string("abc_-09") == "abc_-09"
    assert save_string("ns/svc:p") == '"ns/svc:p"'
    assert save_string("") == '""'
    assert save_string("a\"b'c\\d") == '"a\\"b\\\'c\\\\d"'


def test_layout_tables_chains_policies_and_deletions():
    ruleset = parse("""*nat
:KUBE-SVC-B - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-GONE - [0:0]
-A KUBE-SVC-B -j KUBE-SVC-A
-A KUBE-SVC-A -j RETURN
-X KUBE-SEP-GONE
COMMIT
*raw
:PREROUTING DROP [3:120]
COMMIT
*filter
:lower - [0:0]
:Upper - [0:0]
COMMIT
*mangle
COMMIT
""")
    assert (
        render_live(ruleset)
        == """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*raw
:PREROUTING DROP [3:120]
:OUTPUT ACCEPT [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:Upper - [0:0]
:lower - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SVC-B - [0:0]
-A KUBE-SVC-A -j RETURN
-A KUBE-SVC-B -j KUBE-SVC-A
COMMIT
"""
    )


def test_header_comments_are_optional():
    ruleset = parse("*filter\nCOMMIT\n")
    when = datetime.datetime(2026, 3, 5, 9, 8, 7)
    text = render_live(ruleset, comments=True, when=when)
    assert (
        text.splitlines()[0]
        == "# Generated by iptables-save v1.8.9 (nf_tables) on Thu Mar  5 09:08:07 2026"
    )
    assert text.splitlines()[-1] == "# Completed on Thu Mar  5 09:08:07 2026"
    assert comparable_lines(text) == comparable_lines(render_live(ruleset))


def test_opaque_and_unusual_rules_are_printed_as_written():
    ruleset = parse(
        "*filter\n:X - [0:0]\n-A X -m frobnicate --level 11 -j ACCEPT\nCOMMIT\n", keep_unknown=True
    )
    assert render_live_rule(ruleset.tables["filter"].rules[0]) == [
        "-A X -m frobnicate --level 11 -j ACCEPT"
    ]
    # a value iptables would refuse, in a hand-built rule (parse refuses it): as written
    rule = Rule("X", (Opt("-m", ("mark",)), Opt("--mark", ("nonsense",)), Opt("-j", ("ACCEPT",))))
    assert render_live_rule(rule) == ["-A X -m mark --mark nonsense -j ACCEPT"]
    # an option no module has, in a hand-built rule
    rule = Rule("X", (Opt("--nonsense", ("1",)), Opt("-j", ("ACCEPT",))))
    assert render_live_rule(rule) == ["-A X --nonsense 1 -j ACCEPT"]


def test_bad_family_is_an_input_error():
    with pytest.raises(InputError):
        parse("*filter\nCOMMIT\n", family="IPv5")


# ----------------------------------------------------------------- recorded outputs
#
# Each corpus is restore input and what iptables-save v1.8.9 (nf_tables) printed after
# "iptables-restore" of it in a fresh network namespace (the ipsets and the nfacct object
# "foo" created first; see LAB_SETUP), "#" lines dropped. <TAB> stands for a tab.

# matches of many extensions (filter table)
MODULES_IN = r"""*filter
:FOO - [0:0]
:BAR - [0:0]
-A FOO -p tcp --dport 80 -m comment --comment x -j ACCEPT
-A FOO -m comment --comment x -p tcp --dport 80 -j ACCEPT
-A FOO -m comment --comment "a\"b'c\\d" -j ACCEPT
-A FOO -m comment --comment "" -j ACCEPT
-A FOO -m comment --comment "a b" -j ACCEPT
-A FOO -m comment --comment a_b-c9 -j ACCEPT
-A FOO -m comment --comment a.b -j ACCEPT
-A FOO -s 10.1.2.3/8 -j ACCEPT
-A FOO -s 10.1.2.3/255.0.255.0 -j ACCEPT
-A FOO -s 0.0.0.0/0 -j ACCEPT
-A FOO -p 6 -j ACCEPT
-A FOO -p TCP -j ACCEPT
-A FOO -p all -j ACCEPT
-A FOO ! -p udp -j ACCEPT
-A FOO -p 47 -j ACCEPT
-A FOO -p icmp --icmp-type 8 -j ACCEPT
-A FOO -p icmp --icmp-type echo-request -j ACCEPT
-A FOO -p icmp -m icmp --icmp-type any -j ACCEPT
-A FOO -o eth0 -i eth+ -f -j ACCEPT
-A FOO ! -i eth0 ! -o lo ! -f -j ACCEPT
-A FOO -g BAR
-A FOO -m tcp -p tcp --sport 1:2 ! --dport 3:65535 --tcp-flags SYN,RST,ACK,FIN SYN -j ACCEPT
-A FOO -p tcp --syn -j ACCEPT
-A FOO -p tcp ! --syn -j ACCEPT
-A FOO -p tcp --tcp-flags ALL NONE -j ACCEPT
-A FOO -p tcp --tcp-option 2 -j ACCEPT
-A FOO -p tcp --dport 0:65535 -j ACCEPT
-A FOO -p tcp --dport :80 -j ACCEPT
-A FOO -p tcp --dport 80: -j ACCEPT
-A FOO -p tcp --dport http -j ACCEPT
-A FOO -p udp --sport 53 --dport 53 -j ACCEPT
-A FOO -p udp -m multiport --dports 53,80:90,443 -j ACCEPT
-A FOO -p udp -m multiport ! --sports 53 -j ACCEPT
-A FOO -p udp -m multiport --ports 53 -j ACCEPT
-A FOO -m mark --mark 0x4000 -j ACCEPT
-A FOO -m mark --mark 0x4000/0xffffffff -j ACCEPT
-A FOO -m mark --mark 16384/0x4000 -j ACCEPT
-A FOO -m mark ! --mark 0x0/0x0 -j ACCEPT
-A FOO -m addrtype --src-type LOCAL,UNICAST ! --dst-type BROADCAST --limit-iface-in -j ACCEPT
-A FOO -m addrtype --dst-type local -j ACCEPT
-A FOO -m statistic --mode random --probability 0.3333333333 -j ACCEPT
-A FOO -m statistic --mode random ! --probability 0.1 -j ACCEPT
-A FOO -m statistic --mode random --probability 1 -j ACCEPT
-A FOO -m statistic --mode random --probability 0.0000099999 -j ACCEPT
-A FOO -m statistic --mode nth --every 3 --packet 0 -j ACCEPT
-A FOO -m statistic --mode nth --every 3 --packet 1 -j ACCEPT
-A FOO -m conntrack --ctstate ESTABLISHED,RELATED,NEW,INVALID,UNTRACKED,SNAT,DNAT -j ACCEPT
-A FOO -m conntrack --ctstatus ASSURED,EXPECTED,SEEN_REPLY,CONFIRMED -j ACCEPT
-A FOO -m conntrack --ctorigdst 10.0.0.1 --ctorigdstport 80 --ctproto tcp --ctdir REPLY -j ACCEPT
-A FOO -m conntrack --ctorigsrc 10.0.0.0/8 ! --ctrepldst 1.2.3.4 --ctexpire 10:20 -j ACCEPT
-A FOO -m state --state ESTABLISHED,RELATED,NEW,INVALID,UNTRACKED -j ACCEPT
-A FOO -m limit --limit 5/min --limit-burst 10 -j ACCEPT
-A FOO -m limit -j ACCEPT
-A FOO -m pkttype --pkt-type multicast -j ACCEPT
-A FOO -m owner --uid-owner 0 -j ACCEPT
-A FOO -m owner ! --uid-owner 0-10 --gid-owner 5 --socket-exists -j ACCEPT
-A FOO -m physdev --physdev-in eth0 ! --physdev-is-in --physdev-is-bridged -j ACCEPT
-A FOO -m physdev ! --physdev-is-in -j ACCEPT
-A FOO -m string --algo bm --string "GET /" --from 10 --to 100 -j ACCEPT
-A FOO -m iprange --src-range 10.0.0.1-10.0.0.9 -j ACCEPT
-A FOO -m length --length 100:200 -j ACCEPT
-A FOO -m mac --mac-source 00:11:22:33:44:55 -j ACCEPT
-A FOO -m connmark --mark 0x1/0xff -j ACCEPT
-A FOO -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A FOO -m set ! --match-set foo src -j ACCEPT
-A FOO -m helper --helper ftp -j ACCEPT
-A FOO -m recent --set -j ACCEPT
-A FOO -m recent --name foo --update --seconds 60 --hitcount 3 --rttl --rdest -j ACCEPT
-A FOO -m recent ! --rcheck --mask 255.255.0.0 -j ACCEPT
-A FOO -m recent --remove -j ACCEPT
-A FOO -m connlimit --connlimit-above 10 -j ACCEPT
-A FOO -m tos --tos 0x10 -j ACCEPT
-A FOO -m dscp --dscp 10 -j ACCEPT
-A FOO -m ttl --ttl-gt 3 -j ACCEPT
-A FOO -m quota --quota 1000 -j ACCEPT
-A FOO -m policy --dir in --pol ipsec -j ACCEPT
-A FOO -m policy --dir out --pol none -j ACCEPT
-A FOO -m socket -j ACCEPT
-A FOO -m cpu --cpu 1 -j ACCEPT
-A FOO -m connbytes --connbytes 10:100 --connbytes-dir both --connbytes-mode bytes -j ACCEPT
-A FOO -m nfacct --nfacct-name  foo -j ACCEPT
-A FOO -m ecn --ecn-tcp-cwr -p tcp -j ACCEPT
-A FOO -m esp --espspi 5 -p esp -j ACCEPT
-A FOO -p sctp --dport 80 --chunk-types any INIT -j ACCEPT
-A FOO -p sctp -m sctp --sport 5 -j ACCEPT
-A FOO -m tcpmss --mss 1000:1500 -p tcp -j ACCEPT
-A FOO -p dccp --dport 5 -j ACCEPT
-A FOO -p udplite -j ACCEPT
COMMIT
"""
MODULES_SAVED = r"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:BAR - [0:0]
:FOO - [0:0]
-A FOO -p tcp -m tcp --dport 80 -m comment --comment x -j ACCEPT
-A FOO -p tcp -m comment --comment x -m tcp --dport 80 -j ACCEPT
-A FOO -m comment --comment "a\"b\'c\\d" -j ACCEPT
-A FOO -m comment --comment "" -j ACCEPT
-A FOO -m comment --comment "a b" -j ACCEPT
-A FOO -m comment --comment a_b-c9 -j ACCEPT
-A FOO -m comment --comment "a.b" -j ACCEPT
-A FOO -s 10.0.0.0/8 -j ACCEPT
-A FOO -s 10.0.2.0/255.0.255.0 -j ACCEPT
-A FOO -j ACCEPT
-A FOO -p tcp -j ACCEPT
-A FOO -p tcp -j ACCEPT
-A FOO -j ACCEPT
-A FOO ! -p udp -j ACCEPT
-A FOO -p gre -j ACCEPT
-A FOO -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A FOO -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A FOO -p icmp -m icmp --icmp-type any -j ACCEPT
-A FOO -i eth+ -o eth0 -f -j ACCEPT
-A FOO ! -i eth0 ! -o lo ! -f -j ACCEPT
-A FOO -g BAR
-A FOO -p tcp -m tcp --sport 1:2 ! --dport 3:65535 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
-A FOO -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
-A FOO -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
-A FOO -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j ACCEPT
-A FOO -p tcp -m tcp --tcp-option 2 -j ACCEPT
-A FOO -p tcp -m tcp -j ACCEPT
-A FOO -p tcp -m tcp --dport 0:80 -j ACCEPT
-A FOO -p tcp -m tcp --dport 80:65535 -j ACCEPT
-A FOO -p tcp -m tcp --dport 80 -j ACCEPT
-A FOO -p udp -m udp --sport 53 --dport 53 -j ACCEPT
-A FOO -p udp -m multiport --dports 53,80:90,443 -j ACCEPT
-A FOO -p udp -m multiport ! --sports 53 -j ACCEPT
-A FOO -p udp -m multiport --ports 53 -j ACCEPT
-A FOO -m mark --mark 0x4000 -j ACCEPT
-A FOO -m mark --mark 0x4000 -j ACCEPT
-A FOO -m mark --mark 0x4000/0x4000 -j ACCEPT
-A FOO -m mark ! --mark 0x0/0x0 -j ACCEPT
-A FOO -m addrtype --src-type UNICAST,LOCAL ! --dst-type BROADCAST --limit-iface-in -j ACCEPT
-A FOO -m addrtype --dst-type LOCAL -j ACCEPT
-A FOO -m statistic --mode random --probability 0.33333333349 -j ACCEPT
-A FOO -m statistic --mode random ! --probability 0.10000000009 -j ACCEPT
-A FOO -m statistic --mode random --probability 1.00000000000 -j ACCEPT
-A FOO -m statistic --mode random --probability 0.00001000008 -j ACCEPT
-A FOO -m statistic --mode nth --every 3 --packet 0 -j ACCEPT
-A FOO -m statistic --mode nth --every 3 --packet 1 -j ACCEPT
-A FOO -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED,SNAT,DNAT -j ACCEPT
-A FOO -m conntrack --ctstatus EXPECTED,SEEN_REPLY,ASSURED,CONFIRMED -j ACCEPT
-A FOO -m conntrack --ctproto 6 --ctorigdst 10.0.0.1 --ctorigdstport 80 --ctdir REPLY -j ACCEPT
-A FOO -m conntrack --ctorigsrc 10.0.0.0/8 ! --ctrepldst 1.2.3.4 --ctexpire 10:20 -j ACCEPT
-A FOO -m state --state INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED -j ACCEPT
-A FOO -m limit --limit 5/min --limit-burst 10 -j ACCEPT
-A FOO -m limit --limit 3/hour -j ACCEPT
-A FOO -m pkttype --pkt-type multicast -j ACCEPT
-A FOO -m owner --uid-owner 0 -j ACCEPT
-A FOO -m owner --socket-exists ! --uid-owner 0-10 --gid-owner 5 -j ACCEPT
-A FOO -m physdev ! --physdev-is-in --physdev-in eth0 --physdev-is-bridged -j ACCEPT
-A FOO -m physdev ! --physdev-is-in -j ACCEPT
-A FOO -m string --string "GET /" --algo bm --from 10 --to 100 -j ACCEPT
-A FOO -m iprange --src-range 10.0.0.1-10.0.0.9 -j ACCEPT
-A FOO -m length --length 100:200 -j ACCEPT
-A FOO -m mac --mac-source 00:11:22:33:44:55 -j ACCEPT
-A FOO -m connmark --mark 0x1/0xff -j ACCEPT
-A FOO -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A FOO -m set ! --match-set foo src -j ACCEPT
-A FOO -m helper --helper ftp -j ACCEPT
-A FOO -m recent --set --name DEFAULT --mask 255.255.255.255 --rsource -j ACCEPT
-A FOO -m recent --update --seconds 60 --hitcount 3 --rttl --name foo --mask 255.255.255.255 --rdest -j ACCEPT
-A FOO -m recent ! --rcheck --name DEFAULT --mask 255.255.0.0 --rsource -j ACCEPT
-A FOO -m recent --remove --name DEFAULT --mask 255.255.255.255 --rsource -j ACCEPT
-A FOO -m connlimit --connlimit-above 10 --connlimit-mask 32 --connlimit-saddr -j ACCEPT
-A FOO -m tos --tos 0x10/0xff -j ACCEPT
-A FOO -m dscp --dscp 0x0a -j ACCEPT
-A FOO -m ttl --ttl-gt 3 -j ACCEPT
-A FOO -m quota --quota 1000 -j ACCEPT
-A FOO -m policy --dir in --pol ipsec -j ACCEPT
-A FOO -m policy --dir out --pol none -j ACCEPT
-A FOO -m socket -j ACCEPT
-A FOO -m cpu --cpu 1 -j ACCEPT
-A FOO -m connbytes --connbytes 10:100 --connbytes-mode bytes --connbytes-dir both -j ACCEPT
-A FOO -m nfacct --nfacct-name  foo -j ACCEPT
-A FOO -p tcp -m ecn --ecn-tcp-cwr -j ACCEPT
-A FOO -p esp -m esp --espspi 5 -j ACCEPT
-A FOO -p sctp -m sctp --dport 80 --chunk-types any INIT -j ACCEPT
-A FOO -p sctp -m sctp --sport 5 -j ACCEPT
-A FOO -p tcp -m tcpmss --mss 1000:1500 -j ACCEPT
-A FOO -p dccp -m dccp --dport 5 -j ACCEPT
-A FOO -p udplite -j ACCEPT
COMMIT
"""

# targets in all four tables
TARGETS_IN = r"""*nat
:FOO - [0:0]
-A FOO -p tcp -j DNAT --to-destination 10.0.0.1:80
-A FOO -p tcp -j DNAT --to-destination 10.0.0.1:80-90 --random --persistent
-A FOO -j DNAT --to-destination 10.0.0.1-10.0.0.5
-A FOO -j DNAT --to-destination 10.0.0.1
-A FOO -p tcp -j DNAT --to-destination :80
-A FOO -j SNAT --to-source 1.2.3.4 --random-fully
-A FOO -j SNAT --to-source 1.2.3.4 --random --persistent
-A FOO -j MASQUERADE
-A FOO -p tcp -j MASQUERADE --to-ports 1000-2000 --random
-A FOO -j MASQUERADE --random-fully
-A FOO -p tcp -j REDIRECT --to-ports 8080
-A FOO -j REDIRECT
-A FOO -j NETMAP --to 10.0.0.0/8
-A FOO -j RETURN
-A FOO -j ACCEPT
-A FOO -j MARK --set-mark 0x1
-A FOO -j MARK --set-mark 0x1/0xff
-A FOO -j MARK --set-xmark 0x1/0xff
-A FOO -j MARK --and-mark 0xff
-A FOO -j MARK --or-mark 0x4000
-A FOO -j MARK --xor-mark 0x4000
-A FOO -j MARK --set-mark 16384
COMMIT
*filter
:FOO - [0:0]
-A FOO -j REJECT
-A FOO -j REJECT --reject-with icmp-host-prohibited
-A FOO -j REJECT --reject-with icmp-net-unreachable
-A FOO -p tcp -j REJECT --reject-with tcp-reset
-A FOO -j REJECT --reject-with icmp-admin-prohibited
-A FOO -j DROP
-A FOO -j LOG
-A FOO -j LOG --log-prefix "hello: " --log-level 4
-A FOO -j LOG --log-prefix "x" --log-level debug --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid
-A FOO -j LOG --log-level 6
-A FOO -j NFLOG --nflog-group 5 --nflog-prefix "pfx" --nflog-threshold 1
-A FOO -j NFLOG
-A FOO -j CONNMARK --save-mark
-A FOO -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff
-A FOO -j CONNMARK --set-mark 0x1
-A FOO -j CONNMARK --set-xmark 0x1/0x3
-A FOO -j CONNMARK --or-mark 0x1
-A FOO -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
-A FOO -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1400
-A FOO -j NFQUEUE --queue-num 3 --queue-bypass
-A FOO -j SET --add-set foo src --exist
-A FOO -j TRACE
-A FOO -j AUDIT --type accept
COMMIT
*raw
:FOO - [0:0]
-A FOO -j NOTRACK
-A FOO -j CT --notrack
-A FOO -p udp -j CT --helper tftp
-A FOO -j CT --zone 5
-A FOO -j TRACE
COMMIT
*mangle
:FOO - [0:0]
-A FOO -j MARK --set-xmark 0x4000/0x4000
-A FOO -j DSCP --set-dscp 10
-A FOO -j TOS --set-tos 0x10
-A FOO -j TTL --ttl-set 64
-A FOO -j CHECKSUM --checksum-fill
-A FOO -j CLASSIFY --set-class 1:2
-A FOO -p tcp -j TPROXY --on-port 80 --on-ip 1.2.3.4 --tproxy-mark 0x1/0x1
-A FOO -j CONNMARK --restore-mark
COMMIT
"""
TARGETS_SAVED = r"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOO - [0:0]
-A FOO -j MARK --set-xmark 0x4000/0x4000
-A FOO -j DSCP --set-dscp 0x0a
-A FOO -j TOS --set-tos 0x10/0xff
-A FOO -j TTL --ttl-set 64
-A FOO -j CHECKSUM --checksum-fill
-A FOO -j CLASSIFY --set-class 0001:0002
-A FOO -p tcp -j TPROXY --on-port 80 --on-ip 1.2.3.4 --tproxy-mark 0x1/0x1
-A FOO -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOO - [0:0]
-A FOO -j NOTRACK
-A FOO -j CT --notrack
-A FOO -p udp -j CT --helper tftp
-A FOO -j CT --zone 5
-A FOO -j TRACE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOO - [0:0]
-A FOO -j REJECT --reject-with icmp-port-unreachable
-A FOO -j REJECT --reject-with icmp-host-prohibited
-A FOO -j REJECT --reject-with icmp-net-unreachable
-A FOO -p tcp -j REJECT --reject-with tcp-reset
-A FOO -j REJECT --reject-with icmp-admin-prohibited
-A FOO -j DROP
-A FOO -j LOG
-A FOO -j LOG --log-prefix "hello: "
-A FOO -j LOG --log-prefix x --log-level 7 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid
-A FOO -j LOG --log-level 6
-A FOO -j NFLOG --nflog-prefix pfx --nflog-group 5 --nflog-threshold 1
-A FOO -j NFLOG
-A FOO -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A FOO -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff
-A FOO -j CONNMARK --set-xmark 0x1/0xffffffff
-A FOO -j CONNMARK --set-xmark 0x1/0x3
-A FOO -j CONNMARK --set-xmark 0x1/0x1
-A FOO -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
-A FOO -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1400
-A FOO -j NFQUEUE --queue-num 3 --queue-bypass
-A FOO -j SET --add-set foo src --exist
-A FOO -j TRACE
-A FOO -j AUDIT --type accept
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOO - [0:0]
-A FOO -p tcp -j DNAT --to-destination 10.0.0.1:80
-A FOO -p tcp -j DNAT --to-destination 10.0.0.1:80-90 --random --persistent
-A FOO -j DNAT --to-destination 10.0.0.1-10.0.0.5
-A FOO -j DNAT --to-destination 10.0.0.1
-A FOO -p tcp -j DNAT --to-destination :80
-A FOO -j SNAT --to-source 1.2.3.4 --random-fully
-A FOO -j SNAT --to-source 1.2.3.4 --random --persistent
-A FOO -j MASQUERADE
-A FOO -p tcp -j MASQUERADE --to-ports 1000-2000 --random
-A FOO -j MASQUERADE --random-fully
-A FOO -p tcp -j REDIRECT --to-ports 8080
-A FOO -j REDIRECT
-A FOO -j NETMAP --to 10.0.0.0/8
-A FOO -j RETURN
-A FOO -j ACCEPT
-A FOO -j MARK --set-xmark 0x1/0xffffffff
-A FOO -j MARK --set-xmark 0x1/0xff
-A FOO -j MARK --set-xmark 0x1/0xff
-A FOO -j MARK --set-xmark 0x0/0xffffff00
-A FOO -j MARK --set-xmark 0x4000/0x4000
-A FOO -j MARK --set-xmark 0x4000/0x0
-A FOO -j MARK --set-xmark 0x4000/0xffffffff
COMMIT
"""

# a node with Docker, Flannel, Calico, Cilium and kube-proxy (IPVS mode) rules
FOREIGN_IN = r"""*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:cali-PREROUTING - [0:0]
:CILIUM_PRE_mangle - [0:0]
-A PREROUTING -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING
-A PREROUTING -m comment --comment "cilium-feeder: CILIUM_PRE_mangle" -j CILIUM_PRE_mangle
-A cali-PREROUTING -m comment --comment "cali:6BJqBjBC7crtA-7-" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A cali-PREROUTING -m comment --comment "cali:KX7AGNd6rMcDUai6" -m mark --mark 0x10000/0x10000 -j ACCEPT
-A CILIUM_PRE_mangle -m socket --transparent -m comment --comment "cilium: any->pod redirect proxied traffic to host proxy" -j MARK --set-xmark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p tcp -m mark --mark 0x9a4e0200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 40093 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p udp -m mark --mark 0x9a4e0200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 40093 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
-A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
COMMIT
*raw
:PREROUTING ACCEPT [5:300]
:OUTPUT ACCEPT [0:0]
:CILIUM_OUTPUT_raw - [0:0]
:CILIUM_PRE_raw - [0:0]
-A PREROUTING -m comment --comment "cilium-feeder: CILIUM_PRE_raw" -j CILIUM_PRE_raw
-A OUTPUT -m comment --comment "cilium-feeder: CILIUM_OUTPUT_raw" -j CILIUM_OUTPUT_raw
-A CILIUM_OUTPUT_raw -o lxc+ -m mark --mark 0xa00/0xfffffeff -m comment --comment "cilium: NOTRACK for proxy return traffic" -j CT --notrack
-A CILIUM_OUTPUT_raw -o cilium_host -m mark --mark 0xa00/0xfffffeff -m comment --comment "cilium: NOTRACK for proxy return traffic" -j CT --notrack
-A CILIUM_PRE_raw -m mark --mark 0x200/0xf00 -m comment --comment "cilium: NOTRACK for proxy traffic" -j CT --notrack
-A PREROUTING -p udp --dport 53 -j NOTRACK
-A OUTPUT -p udp -m udp --sport 53 -j CT --notrack
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [10:600]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:cali-FORWARD - [0:0]
:cali-from-wl-dispatch - [0:0]
:cali-fw-cali12345abcde - [0:0]
:cali-pri-_kJqfZpgUe7r2t4A-14 - [0:0]
:cali-tw-cali12345abcde - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-IPVS-FILTER
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A cali-FORWARD -m comment --comment "cali:vjrMJCRpqwy5oRoX" -j MARK --set-xmark 0x0/0xe0000
-A cali-FORWARD -m comment --comment "cali:A_sPAO0mcxbT9mOV" -m mark --mark 0x0/0x10000 -j cali-from-wl-dispatch
-A cali-from-wl-dispatch -i cali12345abcde -m comment --comment "cali:abcdefgh" -g cali-fw-cali12345abcde
-A cali-from-wl-dispatch -m comment --comment "cali:zTj6P0TIgYvgz-md" -m comment --comment "Unknown interface" -j DROP
-A cali-fw-cali12345abcde -m comment --comment "cali:x" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A cali-fw-cali12345abcde -m comment --comment "cali:y" -m conntrack --ctstate INVALID -j DROP
-A cali-fw-cali12345abcde -p udp -m comment --comment "cali:z" -m comment --comment "Drop VXLAN encapped packets originating in workloads" -m multiport --dports 4789 -j DROP
-A cali-fw-cali12345abcde -p ipencap -m comment --comment "cali:w" -j DROP
-A cali-fw-cali12345abcde -m comment --comment "cali:v" -j cali-pri-_kJqfZpgUe7r2t4A-14
-A cali-fw-cali12345abcde -m comment --comment "cali:u" -m mark --mark 0x10000/0x10000 -j RETURN
-A cali-pri-_kJqfZpgUe7r2t4A-14 -m comment --comment "cali:t" -m comment --comment "Profile kns.default ingress" -j MARK --set-xmark 0x10000/0x10000
-A cali-tw-cali12345abcde -p tcp -m comment --comment "cali:s" -m set --match-set cali40s:abcdefg src -m multiport --dports 80,443,8000:8100 -j MARK --set-xmark 0x10000/0x10000
-A cali-tw-cali12345abcde -m comment --comment "cali:r" -m mark ! --mark 0x10000/0x10000 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:cali-nat-outgoing - [0:0]
:CILIUM_POST_nat - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A cali-nat-outgoing -m comment --comment "cali:flqWnvo8yq4ULQLa" -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully
-A CILIUM_POST_nat ! -s 10.0.0.0/8 ! -d 10.0.0.0/8 -o cilium_host -m comment --comment "cilium host->cluster masquerade" -j SNAT --to-source 10.0.0.1
COMMIT
"""
FOREIGN_SAVED = r"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CILIUM_PRE_mangle - [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:cali-PREROUTING - [0:0]
-A PREROUTING -m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING
-A PREROUTING -m comment --comment "cilium-feeder: CILIUM_PRE_mangle" -j CILIUM_PRE_mangle
-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
-A CILIUM_PRE_mangle -m socket --transparent -m comment --comment "cilium: any->pod redirect proxied traffic to host proxy" -j MARK --set-xmark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p tcp -m mark --mark 0x9a4e0200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 40093 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p udp -m mark --mark 0x9a4e0200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 40093 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
-A cali-PREROUTING -m comment --comment "cali:6BJqBjBC7crtA-7-" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A cali-PREROUTING -m comment --comment "cali:KX7AGNd6rMcDUai6" -m mark --mark 0x10000/0x10000 -j ACCEPT
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CILIUM_OUTPUT_raw - [0:0]
:CILIUM_PRE_raw - [0:0]
-A PREROUTING -m comment --comment "cilium-feeder: CILIUM_PRE_raw" -j CILIUM_PRE_raw
-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK
-A OUTPUT -m comment --comment "cilium-feeder: CILIUM_OUTPUT_raw" -j CILIUM_OUTPUT_raw
-A OUTPUT -p udp -m udp --sport 53 -j CT --notrack
-A CILIUM_OUTPUT_raw -o lxc+ -m mark --mark 0xa00/0xfffffeff -m comment --comment "cilium: NOTRACK for proxy return traffic" -j CT --notrack
-A CILIUM_OUTPUT_raw -o cilium_host -m mark --mark 0xa00/0xfffffeff -m comment --comment "cilium: NOTRACK for proxy return traffic" -j CT --notrack
-A CILIUM_PRE_raw -m mark --mark 0x200/0xf00 -m comment --comment "cilium: NOTRACK for proxy traffic" -j CT --notrack
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:FLANNEL-FWD - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:cali-FORWARD - [0:0]
:cali-from-wl-dispatch - [0:0]
:cali-fw-cali12345abcde - [0:0]
:cali-pri-_kJqfZpgUe7r2t4A-14 - [0:0]
:cali-tw-cali12345abcde - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-IPVS-FILTER
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FORWARD -m comment --comment "cali:wUHhoiAYhphO9Mso" -j cali-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A cali-FORWARD -m comment --comment "cali:vjrMJCRpqwy5oRoX" -j MARK --set-xmark 0x0/0xe0000
-A cali-FORWARD -m comment --comment "cali:A_sPAO0mcxbT9mOV" -m mark --mark 0x0/0x10000 -j cali-from-wl-dispatch
-A cali-from-wl-dispatch -i cali12345abcde -m comment --comment "cali:abcdefgh" -g cali-fw-cali12345abcde
-A cali-from-wl-dispatch -m comment --comment "cali:zTj6P0TIgYvgz-md" -m comment --comment "Unknown interface" -j DROP
-A cali-fw-cali12345abcde -m comment --comment "cali:x" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A cali-fw-cali12345abcde -m comment --comment "cali:y" -m conntrack --ctstate INVALID -j DROP
-A cali-fw-cali12345abcde -p udp -m comment --comment "cali:z" -m comment --comment "Drop VXLAN encapped packets originating in workloads" -m multiport --dports 4789 -j DROP
-A cali-fw-cali12345abcde -p ipencap -m comment --comment "cali:w" -j DROP
-A cali-fw-cali12345abcde -m comment --comment "cali:v" -j cali-pri-_kJqfZpgUe7r2t4A-14
-A cali-fw-cali12345abcde -m comment --comment "cali:u" -m mark --mark 0x10000/0x10000 -j RETURN
-A cali-pri-_kJqfZpgUe7r2t4A-14 -m comment --comment "cali:t" -m comment --comment "Profile kns.default ingress" -j MARK --set-xmark 0x10000/0x10000
-A cali-tw-cali12345abcde -p tcp -m comment --comment "cali:s" -m set --match-set cali40s:abcdefg src -m multiport --dports 80,443,8000:8100 -j MARK --set-xmark 0x10000/0x10000
-A cali-tw-cali12345abcde -m comment --comment "cali:r" -m mark ! --mark 0x10000/0x10000 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CILIUM_POST_nat - [0:0]
:DOCKER - [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:cali-nat-outgoing - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A CILIUM_POST_nat ! -s 10.0.0.0/8 ! -d 10.0.0.0/8 -o cilium_host -m comment --comment "cilium host->cluster masquerade" -j SNAT --to-source 10.0.0.1
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A cali-nat-outgoing -m comment --comment "cali:flqWnvo8yq4ULQLa" -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully
COMMIT
"""

# long and abbreviated options, implicit matches, -I, value normalisation
EDGE_IN = r"""*filter
:FOO - [0:0]
:BAR - [0:0]
-A FOO --source 10.1.2.3 --dst 10.0.0.0/255.255.0.0 --protocol TCP --dport 80 --jump ACCEPT
-A FOO --in-interface eth0 --out-interface eth1 --fragments --goto BAR
-A FOO -p tcp --dest 1.2.3.4 --destination-port 443 -j ACCEPT
-A FOO -s 1.1.1.1,2.2.2.2 -d 3.3.3.3,4.4.4.4 -j DROP
-A FOO -p tcp ! --syn -m conntrack --ctstate NEW -j DROP
-A FOO -p udp -m udp ! --dport 53 -m comment --comment "q\"x" -j DROP
-A FOO -m mark --mark 0x4001/0x4000 -j ACCEPT
-A FOO -m conntrack --ctorigsrc 10.1.2.3/8 --ctorigdstport http --ctstate est,rel -j ACCEPT
-A FOO -m conntrack --ctorigsrcport 1000:2000 --ctstatus none -j ACCEPT
-A FOO -p tcp -m tcp --sport 1024: -m multiport --dports http,https -j ACCEPT
-A FOO -m recent --name "a-b_c" --rcheck --seconds 10800 --reap -j BAR
-A FOO -m statistic --mode random --probability 0.0000099999 -j BAR
-A FOO -m statistic --mode random --probability 0.0000100000 -j BAR
-A FOO -m statistic --mode random --probability 0.1428571429 -j BAR
-A FOO -m statistic --mode random --probability 0.0909090909 -j BAR
-A FOO -m statistic --mode random --probability 0.0588235294 -j BAR
-A FOO -m statistic --mode random --probability 0.0010000000 -j BAR
-A FOO -m statistic --mode random --probability 0.9999999999 -j BAR
-A FOO -m statistic --mode random --probability 0 -j BAR
-A FOO -p icmp -m icmp --icmp-type port-unreachable -j ACCEPT
-A FOO -p icmp --icmp-type 3/4 -j ACCEPT
-A FOO -p icmp ! --icmp-type ping -j ACCEPT
-A FOO -m addrtype ! --src-type local -j ACCEPT
-A FOO -m limit --limit 7/minute -j ACCEPT
-A FOO -m limit --limit 100/s --limit-burst 200 -j ACCEPT
-A FOO -m limit --limit 1/d -j ACCEPT
-A FOO -m pkttype --pkt-type BCAST -j DROP
-A FOO -m iprange --dst-range 10.0.0.5 -j DROP
-A FOO -m mac --mac-source AA:bb:0C:1:2:3 -j DROP
-A FOO -m length ! --length 100 -j DROP
-A FOO -m helper --helper "ftp-21" -j DROP
-A FOO -m set --match-set foo src --return-nomatch ! --update-counters --packets-gt 10 -j DROP
-A FOO -m owner --uid-owner 1000-2000 ! --gid-owner 7 -j DROP
-A FOO -m connmark ! --mark 1/3 -j DROP
-A FOO -m state --state NEW,ESTABLISHED -j ACCEPT
-A FOO -m comment --comment "tab<TAB>in" -j ACCEPT
-A FOO -m comment --comment 'single' -j ACCEPT
-A FOO -j REJECT --reject-with tcp-reset -p tcp
-A FOO -p tcp -j REJECT --reject-with icmp-host-prohib
-A FOO -j REJECT --reject-with host-unreach
-A FOO -j LOG --log-prefix "[k8s] " --log-level warning
-A FOO -j LOG --log-level 3
-A FOO -j NFLOG --nflog-group 0 --nflog-range 10
-A FOO -j CONNMARK --mask 0xff --save-mark
-A FOO -j CONNMARK --and-mark 0xf
-A FOO -j MARK --and-mark 0xffff0000
-A FOO -j MARK --set-mark 0x100/0xff
-A FOO -m comment --comment "no target"
-A FOO -c 5 10 -j ACCEPT
-I FOO 1 -m comment --comment first -j ACCEPT
-I FOO 3 -m comment --comment third -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:X - [0:0]
-A X -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3:80-90
-A X -p udp -j DNAT --to-destination 10.0.0.1:53 --persistent --random
-A X -p tcp -j SNAT --to-source 1.2.3.4:1000-2000 --random-fully --random
-A X -p tcp -j REDIRECT --to-ports 8080-8081 --random
-A X -j MASQUERADE --random --random-fully
-A X -p sctp -m sctp --dport 80:90 -j DNAT --to-destination 10.0.0.1
COMMIT
"""
EDGE_SAVED = r"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:BAR - [0:0]
:FOO - [0:0]
-A FOO -m comment --comment first -j ACCEPT
-A FOO -s 10.1.2.3/32 -d 10.0.0.0/16 -p tcp -m tcp --dport 80 -j ACCEPT
-A FOO -m comment --comment third -j ACCEPT
-A FOO -i eth0 -o eth1 -f -g BAR
-A FOO -d 1.2.3.4/32 -p tcp -m tcp --dport 443 -j ACCEPT
-A FOO -s 1.1.1.1/32 -d 3.3.3.3/32 -j DROP
-A FOO -s 1.1.1.1/32 -d 4.4.4.4/32 -j DROP
-A FOO -s 2.2.2.2/32 -d 3.3.3.3/32 -j DROP
-A FOO -s 2.2.2.2/32 -d 4.4.4.4/32 -j DROP
-A FOO -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
-A FOO -p udp -m udp ! --dport 53 -m comment --comment "q\"x" -j DROP
-A FOO -m mark --mark 0x4001/0x4000 -j ACCEPT
-A FOO -m conntrack --ctstate RELATED,ESTABLISHED --ctorigsrc 10.1.2.3/8 --ctorigdstport 80 -j ACCEPT
-A FOO -m conntrack --ctorigsrcport 1000:2000 --ctstatus NONE -j ACCEPT
-A FOO -p tcp -m tcp --sport 1024:65535 -m multiport --dports 80,443 -j ACCEPT
-A FOO -m recent --rcheck --seconds 10800 --reap --name a-b_c --mask 255.255.255.255 --rsource -j BAR
-A FOO -m statistic --mode random --probability 0.00001000008 -j BAR
-A FOO -m statistic --mode random --probability 0.00001000008 -j BAR
-A FOO -m statistic --mode random --probability 0.14285714272 -j BAR
-A FOO -m statistic --mode random --probability 0.09090909082 -j BAR
-A FOO -m statistic --mode random --probability 0.05882352963 -j BAR
-A FOO -m statistic --mode random --probability 0.00100000016 -j BAR
-A FOO -m statistic --mode random --probability 1.00000000000 -j BAR
-A FOO -m statistic --mode random --probability 0.00000000000 -j BAR
-A FOO -p icmp -m icmp --icmp-type 3/3 -j ACCEPT
-A FOO -p icmp -m icmp --icmp-type 3/4 -j ACCEPT
-A FOO -p icmp -m icmp ! --icmp-type 8 -j ACCEPT
-A FOO -m addrtype ! --src-type LOCAL -j ACCEPT
-A FOO -m limit --limit 7/min -j ACCEPT
-A FOO -m limit --limit 100/sec --limit-burst 200 -j ACCEPT
-A FOO -m limit --limit 1/day -j ACCEPT
-A FOO -m pkttype --pkt-type broadcast -j DROP
-A FOO -m iprange --dst-range 10.0.0.5-10.0.0.5 -j DROP
-A FOO -m mac --mac-source aa:bb:0c:01:02:03 -j DROP
-A FOO -m length ! --length 100 -j DROP
-A FOO -m helper --helper ftp-21 -j DROP
-A FOO -m set --match-set foo src --return-nomatch ! --update-counters --packets-gt 10 -j DROP
-A FOO -m owner --uid-owner 1000-2000 ! --gid-owner 7 -j DROP
-A FOO -m connmark ! --mark 0x1/0x3 -j DROP
-A FOO -m state --state NEW,ESTABLISHED -j ACCEPT
-A FOO -m comment --comment "tab<TAB>in" -j ACCEPT
-A FOO -m comment --comment "\'single\'" -j ACCEPT
-A FOO -p tcp -j REJECT --reject-with tcp-reset
-A FOO -p tcp -j REJECT --reject-with icmp-host-prohibited
-A FOO -j REJECT --reject-with icmp-host-unreachable
-A FOO -j LOG --log-prefix "[k8s] "
-A FOO -j LOG --log-level 3
-A FOO -j NFLOG
-A FOO -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff
-A FOO -j CONNMARK --set-xmark 0x0/0xfffffff0
-A FOO -j MARK --set-xmark 0x0/0xffff
-A FOO -j MARK --set-xmark 0x100/0x1ff
-A FOO -m comment --comment "no target"
-A FOO -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:X - [0:0]
-A X -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3:80-90
-A X -p udp -j DNAT --to-destination 10.0.0.1:53 --random --persistent
-A X -p tcp -j SNAT --to-source 1.2.3.4:1000-2000 --random --random-fully
-A X -p tcp -j REDIRECT --to-ports 8080-8081 --random
-A X -j MASQUERADE --random --random-fully
-A X -p sctp -m sctp --dport 80:90 -j DNAT --to-destination 10.0.0.1
COMMIT
"""

# ip6tables rules
IPV6_IN = r"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00:10:96::a -p tcp -m comment --comment "ns/svc:dns-tcp has no endpoints" -m tcp --dport 53 -j REJECT
-A KUBE-SERVICES -d 2001:db8:0:0:0:0:0:1/64 -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-adm-prohibited
-A KUBE-SERVICES -s ::ffff:1.2.3.4 -j DROP
-A KUBE-SERVICES -s ::1.2.3.4 -j DROP
-A KUBE-SERVICES -s 2001:db8::1:0:0:1 -j DROP
-A KUBE-SERVICES -s 2001:0:0:1:0:0:0:1 -j DROP
-A KUBE-SERVICES ! -s fd00:10::/64 -d fd00:10:96::1 -j DROP
-A KUBE-SERVICES -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j ACCEPT
-A KUBE-SERVICES -p icmpv6 --icmpv6-type 1/3 -j ACCEPT
-A KUBE-SERVICES -m conntrack --ctorigdst fd00::1/64 -j ACCEPT
-A KUBE-SERVICES -m recent --set -j ACCEPT
-A KUBE-SERVICES -p tcp -j REJECT --reject-with tcp-reset
-A KUBE-FIREWALL -m set --match-set foo6 src -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SEP-X - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-SEP-X
-A KUBE-SEP-X -s fd00:10:244::5/128 -m comment --comment ns/svc:p -j KUBE-MARK-MASQ
-A KUBE-SEP-X -m comment --comment ns/svc:p -m tcp -p tcp -j DNAT --to-destination [fd00:10:244::5]:8080
-A KUBE-SEP-X -p tcp -j DNAT --to-destination fd00:10:244::5
-A KUBE-SEP-X -p tcp -j DNAT --to-destination [fd00:10:244::5-fd00:10:244::9]:80-81
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A POSTROUTING -p udp -j MASQUERADE --to-ports 1000-2000
COMMIT
"""
IPV6_SAVED = r"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FIREWALL -m set --match-set foo6 src -j DROP
-A KUBE-SERVICES -d fd00:10:96::a/128 -p tcp -m comment --comment "ns/svc:dns-tcp has no endpoints" -m tcp --dport 53 -j REJECT --reject-with icmp6-port-unreachable
-A KUBE-SERVICES -d 2001:db8::/64 -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-adm-prohibited
-A KUBE-SERVICES -s ::ffff:1.2.3.4/128 -j DROP
-A KUBE-SERVICES -s ::1.2.3.4/128 -j DROP
-A KUBE-SERVICES -s 2001:db8::1:0:0:1/128 -j DROP
-A KUBE-SERVICES -s 2001:0:0:1::1/128 -j DROP
-A KUBE-SERVICES ! -s fd00:10::/64 -d fd00:10:96::1/128 -j DROP
-A KUBE-SERVICES -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT
-A KUBE-SERVICES -p ipv6-icmp -m icmp6 --icmpv6-type 1/3 -j ACCEPT
-A KUBE-SERVICES -m conntrack --ctorigdst fd00::1/64 -j ACCEPT
-A KUBE-SERVICES -m recent --set --name DEFAULT --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j ACCEPT
-A KUBE-SERVICES -p tcp -j REJECT --reject-with tcp-reset
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SEP-X - [0:0]
-A PREROUTING ! -d ::1/128 -m addrtype --dst-type LOCAL -j KUBE-SEP-X
-A POSTROUTING -p udp -j MASQUERADE --to-ports 1000-2000
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SEP-X -s fd00:10:244::5/128 -m comment --comment "ns/svc:p" -j KUBE-MARK-MASQ
-A KUBE-SEP-X -p tcp -m comment --comment "ns/svc:p" -m tcp -j DNAT --to-destination [fd00:10:244::5]:8080
-A KUBE-SEP-X -p tcp -j DNAT --to-destination fd00:10:244::5
-A KUBE-SEP-X -p tcp -j DNAT --to-destination [fd00:10:244::5-fd00:10:244::9]:80-81
COMMIT
"""

CORPORA = {
    "modules": (MODULES_IN, MODULES_SAVED, "IPv4"),
    "targets": (TARGETS_IN, TARGETS_SAVED, "IPv4"),
    "foreign": (FOREIGN_IN, FOREIGN_SAVED, "IPv4"),
    "edge": (EDGE_IN, EDGE_SAVED, "IPv4"),
    "ipv6": (IPV6_IN, IPV6_SAVED, "IPv6"),
}
