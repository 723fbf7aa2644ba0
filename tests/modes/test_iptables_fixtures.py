"""kube-proxy's own iptables unit-test expectations, byte for byte (sorted form)."""

import difflib

import pytest

from kproxy_emu.modes.iptables import compile_ruleset
from kproxy_emu.netfilter.iptables_text import render_sorted
from tests.helpers.iptables_env import fixture, view_for


def _assert_same(got, expected):
    if got != expected:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), got.splitlines(), "expected", "got", lineterm=""
            )
        )
        pytest.fail(f"rules differ:\n{diff}")


def test_overall_iptables_rules(tmp_path):
    fx = fixture("iptables-overall.json")
    view = view_for(
        fx["environment"], fx["input"]["services"], fx["input"]["endpointSlices"], tmp_path
    )
    _assert_same(render_sorted(compile_ruleset(view)), fx["expected"]["text"])


def test_sync_repeated_first_full_sync(tmp_path):
    fx = fixture("iptables-sync-repeated.json")
    step = fx["steps"][0]
    view = view_for(fx["environment"], step["services_add"], step["endpointSlices_add"], tmp_path)
    _assert_same(render_sorted(compile_ruleset(view)), step["expectedText"])


def test_sync_repeated_partial_syncs_stale_chains_and_failed_restore(tmp_path):
    """TestSyncProxyRulesRepeated: partial syncs, -X of stale chains, and a restore that
    fails (a chain still referenced) followed by a full resync."""
    from kproxy_emu import Dataplane
    from kproxy_emu.model import Cluster
    from kproxy_emu.netfilter.ruleset import Opt, Rule
    from tests.helpers.fixtures import as_manifests
    from tests.helpers.iptables_env import view_for

    fx = fixture("iptables-sync-repeated.json")
    env = fx["environment"]
    services, slices = {}, {}

    def key(obj):
        return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"

    dp = None
    for step in fx["steps"]:
        for s in step.get("services_add", []):
            services[key(s)] = s
        for s in step.get("endpointSlices_add", []) + step.get("endpointSlices_update", []):
            slices[key(s)] = s
        for name in step.get("services_delete", []):
            del services[name]
        cluster = Cluster.from_dicts(as_manifests(list(services.values()), list(slices.values())))
        if dp is None:
            options = view_for(env, [], [], tmp_path).options
            dp = Dataplane(
                cluster,
                node_config=options.node,
                mark_text="0x4000",
                cluster_cidr=env["localDetector"]["cidr"],
            )
            result = dp.syncs[-1]
        else:
            if step["step"] == 9:
                # the test injects a rule that keeps svc4's endpoint chain referenced
                nat = dp.tables.tables["nat"]
                nat.rules.append(
                    Rule("KUBE-SVC-X27LE4BHSL4DOUIK", (Opt("-j", ("KUBE-SEP-AYCN5HPXMIRJNJXU",)),))
                )
                failed = dp.update(cluster)
                assert not failed.ok and not failed.full
                assert "KUBE-SEP-AYCN5HPXMIRJNJXU" in failed.error
                result = dp.sync(set())  # the retry is a full sync
                assert result.full
            else:
                result = dp.update(cluster)
        assert result.ok, (step["step"], result.error)
        assert result.full == (step["step"] in (1, 9))
        _assert_same(render_sorted(result.payload), step["expectedText"])
