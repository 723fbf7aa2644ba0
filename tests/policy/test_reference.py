"""Every NetworkPolicy truth table in tests/data/netpol/ (see its README for the upstream
sources): Kubernetes e2e matrices (off the diagonal), np-guard eval queries and connlists,
cyclonus matcher cases; through the Python API and ``reach --json``."""

from __future__ import annotations

import json

import pytest

from kproxy_emu.model import Cluster
from kproxy_emu.policy import (
    allowed,
    compile_policies,
    connections,
    format_connections,
    reachability,
)

from . import refdata

E2E = list(refdata.e2e_steps())
EVAL = refdata.load("npguard_eval_cases.json")["scenarios"]
CONNLIST = refdata.load("npguard_connlist_cases.json")["cases"]
CYCLONUS = refdata.load("cyclonus_matcher_cases.json")["cases"]
EXTERNAL = "0.0.0.0-255.255.255.255[External]"
OUTSIDE_IP = "203.0.113.7"


def _pod(cluster: Cluster, key: str):
    ns, name = key.split("/")
    return cluster.pods[(ns, name)]


def _off_diagonal_mismatches(names, matrix, expected):
    return [
        f"{a} -> {b}: got {bool(matrix[i][j])}, expected {expected[a][b]}"
        for i, a in enumerate(names)
        for j, b in enumerate(names)
        if i != j and bool(matrix[i][j]) != expected[a][b]
    ]


def test_the_reference_set_is_complete():
    assert len(E2E) == 14  # 10 cases, 14 probes (multi-step and multi-port ones)
    assert sum(len(s["queries"]) for s in EVAL) == 62
    assert sum(len(c["expectedConnlist"]) for c in CONNLIST) == 22
    assert len(CYCLONUS) == 6


@pytest.mark.parametrize("ident, case, manifests, probe", E2E, ids=[e[0] for e in E2E])
def test_e2e_matrix_python_api(ident, case, manifests, probe):
    cluster = Cluster.from_dicts(manifests)
    names, matrix = reachability(cluster, probe["port"], probe["protocol"])
    assert names == list(probe["expected"])
    assert _off_diagonal_mismatches(names, matrix, probe["expected"]) == []
    policies = compile_policies(cluster.network_policies.values())
    for a in names:
        for b in names:
            if a != b:
                d = allowed(
                    cluster,
                    _pod(cluster, a),
                    _pod(cluster, b),
                    probe["port"],
                    probe["protocol"],
                    policies=policies,
                )
                assert d.allowed == probe["expected"][a][b], (a, b, d)


@pytest.mark.parametrize("via_service", [False, True], ids=["pod-ip", "via-service"])
@pytest.mark.parametrize("ident, case, manifests, probe", E2E, ids=[e[0] for e in E2E])
def test_e2e_matrix_reach_json(cli, tmp_path, ident, case, manifests, probe, via_service):
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    args = [path, "--port", probe["port"], "--protocol", probe["protocol"], "--json"]
    result = cli("reach", *args, *(["--via-service"] if via_service else []))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert list(doc) == ["pods", "port", "protocol", "allowed"]
    assert doc["port"] == probe["port"] and doc["protocol"] == probe["protocol"]
    assert doc["pods"] == list(probe["expected"])
    assert _off_diagonal_mismatches(doc["pods"], doc["allowed"], probe["expected"]) == []


QUERIES = [(s, q) for s in EVAL for q in s["queries"]]


@pytest.mark.parametrize(
    "scenario, query", QUERIES, ids=[f"{s['id']}-{q['testEntry']}" for s, q in QUERIES]
)
def test_npguard_eval_query(scenario, query):
    cluster = refdata.npguard_eval_cluster(scenario)

    def endpoint(text):  # every pod shares one IP upstream: name pods as objects
        return _pod(cluster, text) if "/" in text else text

    src, dst = endpoint(query["src"]), endpoint(query["dst"])
    d = allowed(cluster, src, dst, query["port"], query["protocol"])
    assert d.allowed == query["expectedAllowed"], d
    conns = format_connections(connections(cluster, src, dst))
    assert conns == query["expectedAllAllowedConnections"]


@pytest.mark.parametrize("case", CONNLIST, ids=[c["id"] for c in CONNLIST])
def test_npguard_connlist(case):
    cluster, groups = refdata.connlist_cluster(case)
    assert all(
        "ipBlock" not in json.dumps(p) for p in case["policies"]
    )  # one address stands for the whole outside
    expected = {(r["src"], r["dst"]): r["connections"] for r in case["expectedConnlist"]}
    policies = compile_policies(cluster.network_policies.values())
    labels = [*groups, EXTERNAL]
    got = {}
    for a in labels:
        for b in labels:
            if a == b:  # a workload to itself is never reported
                continue
            srcs = [OUTSIDE_IP] if a == EXTERNAL else [_pod(cluster, k) for k in groups[a]]
            dsts = [OUTSIDE_IP] if b == EXTERNAL else [_pod(cluster, k) for k in groups[b]]
            texts = {
                format_connections(connections(cluster, s, d, policies=policies))
                for s in srcs
                for d in dsts
            }
            assert len(texts) == 1, (a, b, texts)  # replicas of a workload agree
            got[(a, b)] = texts.pop()
    for pair, text in got.items():
        assert text == expected.get(pair, "No Connections"), pair
    assert set(expected) <= set(got)


@pytest.mark.parametrize("case", CYCLONUS, ids=[f"{c['describe']} / {c['it']}" for c in CYCLONUS])
def test_cyclonus_matcher_case(case):
    cluster, src_key, dst_key, port = refdata.cyclonus_cluster(case)
    t = case["traffic"]
    src = _pod(cluster, src_key) if src_key else t["source"]["ip"]
    dst = _pod(cluster, dst_key) if dst_key else t["destination"]["ip"]
    d = allowed(cluster, src, dst, port, t["protocol"])
    assert d.allowed == case["expectedAllowed"], d
