"""Label selectors: one object at a time and vectorised, and the namespace label."""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu.model import Cluster
from kproxy_emu.model.netpol import LabelSelector, Requirement
from kproxy_emu.policy import LabelTable, matches, namespace_labels

OBJECTS = [{"app": "web", "tier": "front"}, {"app": "db"}, {}, {"tier": "back"}]


def sel(labels=(), *exprs):
    return LabelSelector(tuple(labels), tuple(Requirement(k, op, tuple(v)) for k, op, v in exprs))


CASES = [
    (sel(), [True, True, True, True]),  # empty: everything
    (sel([("app", "web")]), [True, False, False, False]),
    (sel([("app", "web"), ("tier", "back")]), [False, False, False, False]),
    (sel([("app", "nope")]), [False, False, False, False]),
    (sel((), ("app", "In", ["web", "db"])), [True, True, False, False]),
    (sel((), ("app", "NotIn", ["web"])), [False, True, True, True]),  # lacking the key: yes
    (sel((), ("tier", "Exists", [])), [True, False, False, True]),
    (sel((), ("tier", "DoesNotExist", [])), [False, True, True, False]),
    (sel([("tier", "front")], ("app", "In", ["web"])), [True, False, False, False]),
    (sel((), ("app", "In", ["web"]), ("app", "NotIn", ["web"])), [False, False, False, False]),
]


@pytest.mark.parametrize("selector, expected", CASES)
def test_selector_one_by_one_and_vectorised(selector, expected):
    assert [matches(selector, o) for o in OBJECTS] == expected
    table = LabelTable(OBJECTS)
    assert table.mask(selector).tolist() == expected
    assert table.mask(selector) is table.mask(selector)  # cached
    assert not table.mask(selector).flags.writeable


def test_empty_table():
    assert LabelTable([]).mask(sel([("a", "b")])).shape == (0,)
    assert np.array_equal(LabelTable([]).mask(sel()), np.zeros(0, bool))


def test_namespace_label_is_added_and_wins():
    cluster = Cluster.from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "x",
                    "labels": {"team": "a", "kubernetes.io/metadata.name": "other"},
                },
            }
        ]
    )
    assert namespace_labels(cluster, "x") == {"team": "a", "kubernetes.io/metadata.name": "x"}
    # a namespace the manifests do not hold still has its name label
    assert namespace_labels(cluster, "y") == {"kubernetes.io/metadata.name": "y"}
