"""kube-proxy's own nftables unit-test expectations (knftables dump, sorted as the tests
sort it), the transactions of repeated syncs, and what a live node prints."""

import difflib

import pytest

from kproxy_emu.dataplane.dataplane import changed_services
from kproxy_emu.model import Cluster
from kproxy_emu.modes.nftables import NftProxier, compile_nftables
from kproxy_emu.netfilter.nft_text import (
    parse_dump,
    render_dump,
    render_list,
    render_nft_file,
    sort_dump,
)
from tests.helpers.fixtures import FIXTURES, as_manifests
from tests.helpers.nftables_env import SERVICE_CIDRS, fixture, options_for, view_of


def _assert_same(got, expected):
    got, expected = sort_dump(got), sort_dump(expected)
    if got != expected:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), got.splitlines(), "expected", "got", lineterm=""
            )
        )
        pytest.fail(f"nftables state differs:\n{diff}")


def test_overall_nftables_rules(tmp_path):
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    view = view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"])
    table = compile_nftables(view, service_cidrs=SERVICE_CIDRS)
    _assert_same(render_dump(table), fx["expected"]["baseRules"] + fx["expected"]["expectedExtra"])


def test_live_node_listing_of_the_overall_rules():
    """``nft list ruleset`` on a kernel loaded with the fixture (loaded in fixture order, so
    the parsed fixture keeps the creation order the live node saw)."""
    fx = fixture("nftables-overall.json")
    table = parse_dump(fx["expected"]["baseRules"] + fx["expected"]["expectedExtra"])
    live = (FIXTURES / "live" / "nftables-overall.nft-list-ruleset.txt").read_text()
    got = render_list(table)
    assert got == live, "\n".join(
        difflib.unified_diff(live.splitlines(), got.splitlines(), "live", "got", lineterm="")
    )


def test_dump_round_trips_through_the_parser(tmp_path):
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    view = view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"])
    table = compile_nftables(view, service_cidrs=SERVICE_CIDRS)
    again = parse_dump(render_dump(table))
    assert render_dump(again) == render_dump(table)
    assert render_list(again) == render_list(table)


def test_nft_file_declares_before_use(tmp_path):
    fx = fixture("nftables-overall.json")
    options = options_for(fx["environment"], tmp_path)
    view = view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"])
    text = render_nft_file(compile_nftables(view, service_cidrs=SERVICE_CIDRS))
    declared, seen_rule = set(), False
    for line in text.splitlines():
        words = line.split()
        if words[1] in ("chain", "set", "map"):
            assert not seen_rule, f"declaration after a rule: {line}"
            declared.add(words[4])
        elif words[1] in ("rule", "element"):
            seen_rule = True
            assert words[4] in declared, line
            for ref in [w[1:] for w in words[5:] if w.startswith("@")]:
                assert ref in declared, line
            for i, w in enumerate(words[:-1]):
                if w in ("jump", "goto"):
                    assert words[i + 1] in declared, line


def _key(obj):
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def test_sync_repeated_states_transactions_and_stale_chains(tmp_path):
    """TestSyncProxyRulesRepeated: state after every sync, the operation count of the last
    transaction, flushed-then-deleted stale chains (deleted > 1 s later, separately)."""
    fx = fixture("nftables-sync-repeated.json")
    options = options_for(fx["environment"], tmp_path)
    proxier = NftProxier(options, SERVICE_CIDRS)
    services, slices = {}, {}
    cluster = Cluster()
    now = 100.0
    base = fx["expected"]["baseRules"]

    def sync():
        nonlocal cluster
        new = Cluster.from_dicts(as_manifests(list(services.values()), list(slices.values())))
        changed = None if not proxier.syncs else changed_services(cluster, new)
        cluster = new
        result = proxier.sync(
            view_of(options, list(services.values()), list(slices.values())), changed, now
        )
        assert result.ok, result.error
        return result

    svc3_slice = None
    for step in fx["steps"]:
        n = step["step"]
        if n in (4, 8):
            now += 2.0  # ageStaleChains()
        for s in step.get("services_add", []):
            services[_key(s)] = s
        for s in step.get("endpointSlices_add", []) + step.get("endpointSlices_update", []):
            slices[_key(s)] = s
        for name in step.get("services_delete", []):
            del services[name]
        if n == 11:  # empty svc3, sync, age, restore, sync
            restored = slices["ns3/svc3-1"]
            slices["ns3/svc3-1"] = svc3_slice
            sync()
            now += 2.0
            slices["ns3/svc3-1"] = restored
        result = sync()
        if n == 9:
            svc3_slice = slices["ns3/svc3-1"]
        now += 0.1
        _assert_same(render_dump(proxier.table), base + step["expectedExtra"])
        if "lastTransactionOps" in step:
            assert result.ops == step["lastTransactionOps"], (n, result.ops)
        if n == 6:  # svc4 gets an endpoint: one service-ips add, one no-endpoint delete
            assert (result.element_ops, result.rule_ops) == (2, 4)
        if "expectedStaleChains" in step:
            assert sorted(proxier.stale_chains) == sorted(step["expectedStaleChains"]), n
    assert not proxier.syncs[0].full or len(proxier.syncs) > 1
    assert [r.full for r in proxier.syncs].count(True) == 1


def test_sync_startup_reuses_existing_state(tmp_path):
    """TestSyncProxyRulesStartup: a restarted proxier keeps elements and endpoint chains
    already in the table; its first transaction is the setup plus 14 operations."""
    fx = fixture("nftables-sync-repeated.json")
    st = fx["startup"]
    options = options_for(fx["environment"], tmp_path)
    fresh = NftProxier(options, SERVICE_CIDRS)
    setup_ops = fresh.sync(view_of(options, [], [])).ops
    table = parse_dump(fx["expected"]["baseRules"] + st["preloadedExtra"])
    proxier = NftProxier(options, SERVICE_CIDRS, table=table)
    result = proxier.sync(view_of(options, st["services"], st["endpointSlices"]))
    assert result.ok, result.error
    _assert_same(render_dump(proxier.table), fx["expected"]["baseRules"] + st["expectedExtra"])
    assert result.ops == setup_ops + 14


def test_failed_transaction_changes_nothing_and_forces_a_full_sync(tmp_path):
    fx = fixture("nftables-sync-repeated.json")
    options = options_for(fx["environment"], tmp_path)
    step = fx["steps"][0]
    proxier = NftProxier(options, SERVICE_CIDRS)
    view = view_of(options, step["services_add"], step["endpointSlices_add"])
    assert proxier.sync(view).ok
    before = render_dump(proxier.table)
    # someone else deletes a map kube-proxy fills: the next partial sync, which must
    # delete svc2's element from it, fails as a whole
    del proxier.table.sets["service-ips"]
    broken = render_dump(proxier.table)
    only_svc1 = view_of(options, step["services_add"][:1], step["endpointSlices_add"][:1])
    result = proxier.sync(only_svc1, {("ns2", "svc2")})
    assert not result.ok and "service-ips" in result.error
    assert render_dump(proxier.table) == broken  # nothing of the transaction applied
    assert proxier.need_full_sync
    result = proxier.sync(view, set())  # the retry is a full sync and repairs the table
    assert result.ok and result.full
    _assert_same(render_dump(proxier.table), before)


def test_live_listing_parses_back_and_traces_like_the_compiled_table(tmp_path):
    """A real node's ``nft list ruleset`` (with other tables around it) parses into a table
    that lists back identically and sends every packet where the compiled table does."""
    from kproxy_emu.dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
    from kproxy_emu.dataplane.reference import Flow
    from kproxy_emu.netfilter.nft_text import parse_list

    fx = fixture("nftables-overall.json")
    live = (FIXTURES / "live" / "nftables-overall.nft-list-ruleset.txt").read_text()
    other = (
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; "
        "policy accept;\n\t\tct state established accept # handle 3\n\t}\n}\n"
    )
    parsed = parse_list(other + live)
    assert render_list(parsed) == live
    options = options_for(fx["environment"], tmp_path)
    view = view_of(options, fx["input"]["services"], fx["input"]["endpointSlices"])
    compiled = compile_nftables(view, service_cidrs=SERVICE_CIDRS)
    a, b = (NftEvaluator(t, options.node.local_ips) for t in (compiled, parsed))
    flows = 0
    for sp in view.service_ports:
        for src, origin in (
            ("10.0.0.2", "pod"),
            ("203.0.113.2", "external"),
            ("203.0.113.130", "external"),
            ("192.168.0.2", "host"),
            ("10.180.0.3", "pod"),
        ):
            dests = [
                (sp.cluster_ip, sp.port),
                (sp.cluster_ip, sp.port + 1),
                *((ip, sp.port) for ip in sp.external_ips + sp.lb_ips),
            ]
            if sp.node_port:
                dests.append(("192.168.0.2", sp.node_port))
            for dst, port in dests:
                flow = Flow(src, dst, sp.proto, 40000, port, origin)
                x, y = evaluate_nft_flow(a, flow), evaluate_nft_flow(b, flow)
                assert (x.candidates, x.kube_proxy_output(), x.masquerade) == (
                    y.candidates,
                    y.kube_proxy_output(),
                    y.masquerade,
                ), flow
                flows += 1
    assert flows > 50


def test_bad_listing():
    from kproxy_emu.errors import InputError
    from kproxy_emu.netfilter.nft_text import parse_list

    with pytest.raises(InputError) as e:
        parse_list("table ip other {\n}\n")
    assert "no 'table ip kube-proxy'" in e.value.message
    with pytest.raises(InputError) as e:
        parse_list(
            "table ip kube-proxy {\n\tchain c {\n\t\ttype filter hook input priority "
            "bogus; policy accept;\n\t}\n}\n"
        )
    assert e.value.value == "bogus"
