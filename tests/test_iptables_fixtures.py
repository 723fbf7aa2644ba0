"""kube-proxy's own iptables unit-test expectations, byte for byte (sorted form)."""
import difflib

import pytest

from kproxy_emu.modes.iptables import compile_ruleset
from kproxy_emu.netfilter.iptables_text import render_sorted

from .iptables_env import fixture, view_for


def _assert_same(got, expected):
    if got != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(),
                                              "expected", "got", lineterm=""))
        pytest.fail(f"rules differ:\n{diff}")


def test_overall_iptables_rules(tmp_path):
    fx = fixture("iptables-overall.json")
    view = view_for(fx["environment"], fx["input"]["services"], fx["input"]["endpointSlices"],
                    tmp_path)
    _assert_same(render_sorted(compile_ruleset(view)), fx["expected"]["text"])


def test_sync_repeated_first_full_sync(tmp_path):
    fx = fixture("iptables-sync-repeated.json")
    step = fx["steps"][0]
    view = view_for(fx["environment"], step["services_add"], step["endpointSlices_add"], tmp_path)
    _assert_same(render_sorted(compile_ruleset(view)), step["expectedText"])
