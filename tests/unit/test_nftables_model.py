"""The nftables model, parser, transactions and evaluator on hand-written tables, and the
errors bad input gets."""

import pytest

from kproxy_emu.dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
from kproxy_emu.dataplane.reference import Flow
from kproxy_emu.errors import InputError, KproxyError
from kproxy_emu.model import Cluster
from kproxy_emu.modes.nftables import NftProxier, hash_and_truncate, service_cidrs_for
from kproxy_emu.netfilter.nft import (
    Match,
    NftChain,
    NftError,
    NftRuleset,
    NftSet,
    NftTransaction,
    Statement,
    parse_rule,
)
from kproxy_emu.netfilter.nft_text import parse_dump, render_dump, render_list
from tests.helpers.nftables_env import nft_env, options_for

TABLE = """
add table ip t
add chain ip t pre { type filter hook prerouting priority -110 ; }
add chain ip t nat { type nat hook prerouting priority -100 ; }
add chain ip t fwd { type filter hook forward priority 0 ; }
add chain ip t post { type nat hook postrouting priority 100 ; }
add chain ip t sub
add chain ip t via-goto
add chain ip t gone
add set ip t blocked { type ipv4_addr ; flags interval ; }
add map ip t dispatch { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip t pre ip saddr @blocked drop
add rule ip t pre tcp dport { 22, 2000-2999 } reject
add rule ip t pre iifname != eth* accept
add rule ip t pre mark set mark or 0x10
add rule ip t nat ip daddr . meta l4proto . th dport vmap @dispatch
add rule ip t nat ip daddr 10.9.9.9 dnat to 10.1.1.1:80
add rule ip t sub mark and 0x10 == 0x10 return
add rule ip t sub drop
add rule ip t via-goto numgen random mod 4 vmap { 0 : goto gone , 1 : goto gone , 3 : jump sub }
add rule ip t via-goto dnat to 10.2.2.2:8080
add rule ip t gone dnat to 10.3.3.3:80
add rule ip t fwd meta mark & 0x10 == 0 drop
add rule ip t post masquerade
add element ip t blocked { 192.0.2.0/24 }
add element ip t dispatch { 10.0.0.1 . tcp . 80 : goto via-goto }
add element ip t dispatch { 10.0.0.2 . tcp . 80 : jump sub }
"""


def _run(src, dst, port, proto="tcp", iface=""):
    ev = NftEvaluator(parse_dump(TABLE), ["192.168.0.2"])
    return evaluate_nft_flow(ev, Flow(src, dst, proto, 1234, port, "external", iface))


def test_parse_rule_forms():
    items, comment = parse_rule('ip daddr . meta l4proto . th dport vmap @m comment "x y"')
    assert comment == "x y"
    assert items == [
        Match((("ip", "daddr"), ("meta", "l4proto"), ("th", "dport")), set_name="m", is_vmap=True)
    ]
    items, _ = parse_rule("mark and 0x4000 == 0 return")
    assert items == [Match((("meta", "mark"),), values=("0",), mask="0x4000"), Statement("return")]
    items, _ = parse_rule("meta mark set meta mark | 0x00004000")
    assert items == [Statement("mark_set", ("or", "0x00004000"))]
    items, _ = parse_rule("ip saddr != { 1.2.3.0/24 , 5.6.7.8 } drop")
    assert items[0].values == ("1.2.3.0/24", "5.6.7.8") and items[0].op == "!="
    items, _ = parse_rule("update @aff { ip saddr }")
    assert items == [Statement("set_update", ("aff", ("ip", "saddr")))]
    for bad in ("bogus stuff", "ip daddr { 1.2.3.4", "dnat 1.2.3.4"):
        with pytest.raises(NftError):
            parse_rule(bad)


def test_evaluator_semantics():
    # the set of blocked sources drops in the first base chain
    assert _run("192.0.2.7", "10.0.0.1", 80).kube_proxy_output() == "DROP"
    # an anonymous set with a port range rejects
    assert _run("203.0.113.1", "10.0.0.1", 2500).kube_proxy_output() == "REJECT"
    # accept ends that base chain only: no mark, so the forward chain drops
    out = _run("203.0.113.1", "10.0.0.9", 80, iface="cni0")
    assert out.kube_proxy_output() == "DROP"
    # the numgen branches: two gotos (0.5), a jump to a chain that returns (0.25, then the
    # next rule DNATs), an index with no element (0.25: the rule does not match, and the
    # via-goto chain was reached by goto from the map, so the packet goes on un-DNATed)
    out = _run("203.0.113.1", "10.0.0.1", 80, iface="eth0")
    cands = {ep: round(p, 6) for ep, p, _ in out.candidates}
    assert cands == {"10.3.3.3:80": 0.5, "10.2.2.2:8080": 0.5}
    assert all(b.snat for b in out.branches)  # masquerade in postrouting
    # a jump from a map returns to the rule after it
    out = _run("203.0.113.1", "10.0.0.2", 80, iface="eth0")
    assert out.kube_proxy_output() == "" and out.branches[0].lookups >= 2
    # the mark set in prerouting is still there in forward
    assert _run("203.0.113.1", "10.9.9.9", 80, iface="eth0").kube_proxy_output() == "10.1.1.1:80"


def test_transactions_are_atomic_and_checked():
    rs = NftRuleset()
    tx = NftTransaction()
    tx.add("table", None)
    tx.add_chain("a")
    tx.add_chain("b")
    tx.add_rule("a", "jump b")
    rs.apply(tx)
    assert list(rs.chains) == ["a", "b"]
    for build in (
        lambda t: t.delete("chain", NftChain("b")),  # still jumped to
        lambda t: t.flush("chain", NftChain("zz")),  # missing
        lambda t: t.add_rule("zz", "accept"),
        lambda t: t.add_rule("a", "ip daddr @nope accept"),
        lambda t: t.add_element("nope", ("1.2.3.4",)),
        lambda t: t.add("chain", NftChain("a", "filter", "input", 0)),
    ):
        bad = NftTransaction()
        bad.add_rule("a", "accept")  # applied first, then undone by the failure
        build(bad)
        before = render_dump(rs)
        with pytest.raises(NftError):
            rs.apply(bad)
        assert render_dump(rs) == before
    ok = NftTransaction()
    ok.flush("chain", NftChain("a"))
    ok.delete("chain", NftChain("b"))
    rs.apply(ok)
    assert list(rs.chains) == ["a"]


def test_first_transaction_onto_an_empty_table():
    """The first sync's transaction takes a path without undo steps: it checks the same,
    a failure leaves the table empty, and a delete in it sees the jumps added before."""
    for build in (
        lambda t: t.add_rule("a", "jump zz"),
        lambda t: t.add_rule("a", "ip daddr @nope accept"),
        lambda t: t.add_rule("zz", "accept"),
        lambda t: t.delete("chain", NftChain("b")),  # still jumped to
    ):
        tx = NftTransaction()
        tx.add("table", "c")
        tx.add_chain("a")
        tx.add_chain("b")
        tx.add_chain("x")
        tx.delete("chain", NftChain("x"))  # builds the jump index mid-transaction
        tx.add_rule("a", "jump b")
        build(tx)
        rs = NftRuleset()
        with pytest.raises(NftError):
            rs.apply(tx)
        assert not rs.exists and not rs.chains and not rs.sets and render_dump(rs) == ""
        tx.ops.pop()
        rs.apply(tx)
        assert list(rs.chains) == ["a", "b"] and [r.text for r in rs.chains["a"].rules] == [
            "jump b"
        ]
        # the table adopted the operations' chain objects: applying the transaction to
        # another empty table copies them, and the two tables stay apart
        other = NftRuleset()
        other.apply(tx)
        assert render_dump(other) == render_dump(rs)
        more = NftTransaction()
        more.add_rule("b", "accept")
        other.apply(more)
        assert not rs.chains["b"].rules and len(other.chains["b"].rules) == 1


def test_names_are_hashed_and_truncated_like_kube_proxy():
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert (
        hash_and_truncate("testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80")
        == "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"
    )
    long = (
        "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx/"
        "very-long-service-name-why-would-you-even-do-this-i-mean-really/sctp/"
        "port-443-providing-the-hypertext-transmission-protocol-with-tls__"
        "1234.5678.9abc.def0..abcd.1234.5678/443"
    )
    assert hash_and_truncate(long) == (
        "CI6C53Q3-very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx/"
        "very-long-service-name-why-would-you-even-do-this-i-mean-really/sctp/"
        "port-443-providing-the-hypertext-transmission-protocol-with-tls__"
        "1234.5678.9abc.def0..abcd.1234..."
    )


def test_bad_service_cidrs(tmp_path):
    with pytest.raises(InputError) as e:
        service_cidrs_for(Cluster(), override=["172.30.0.0/33"])
    assert e.value.field == "--service-cidr" and e.value.value == "172.30.0.0/33"
    assert service_cidrs_for(Cluster(), override=["172.30.0.0/16", "fd00::/108"]) == [
        "172.30.0.0/16"
    ]
    options = options_for(nft_env(), tmp_path)
    with pytest.raises(InputError) as e:
        NftProxier(options, ["fd00::/108"])
    assert e.value.value == "fd00::/108"


def test_bad_dumps():
    cases = [
        ("add table ip t\nbogus line", "not a knftables dump line"),
        ("add chain ip t c", "before its 'add table'"),
        ("add table ip t\nadd rule ip t c accept", "undeclared chain"),
        ("add table ip t\nadd element ip t s { 1.2.3.4 }", "undeclared set"),
        ("add table ip t\nadd table ip6 u", "second table"),
        ("# nothing\n", "empty"),
    ]
    for text, message in cases:
        with pytest.raises(InputError) as e:
            parse_dump(text)
        assert message in e.value.message, (text, e.value.message)


def test_evaluator_rejects_what_it_cannot_run():
    rs = parse_dump(
        "add table ip t\nadd chain ip t c { type filter hook input priority 0 ; }\n"
        "add rule ip t c ct mark 4 accept\n"
    )
    with pytest.raises(InputError) as e:
        NftEvaluator(rs, [])
    assert e.value.field == "chain c rule 0" and e.value.value == "ct mark 4 accept"
    rs = parse_dump("add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr { 1.2.3.4\n")
    with pytest.raises(KproxyError):
        NftEvaluator(rs, [])
    rs = parse_dump(
        "add table ip t\nadd chain ip t c { type filter hook input priority 0 ; }\n"
        "add rule ip t c fib daddr type unicast accept\n"
    )
    with pytest.raises(InputError) as e:
        evaluate_nft_flow(
            NftEvaluator(rs, ["2.2.2.2"]), Flow("1.1.1.1", "2.2.2.2", "tcp", 1, 2, "external")
        )
    assert e.value.value == "unicast"
    empty = NftRuleset()
    assert render_list(empty) == "" and render_dump(empty) == ""
    assert NftSet("s", "set", "ipv4_addr").key_types == ["ipv4_addr"]
