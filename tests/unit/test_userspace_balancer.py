"""The userspace mode's round-robin balancer against upstream's roundrobin_test.go.

tests/data/userspace/roundrobin_cases.json (vendored reference scenarios) runs for several
seeds; the other upstream tests of pkg/proxy/userspace/roundrobin_test.go (and the
winuserspace twin's sessionAffinityReset test) are transcribed below in the same op
format, plus the TTL, cleanup and input rules the module docstring states.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kproxy_emu.errors import InputError, KproxyError
from kproxy_emu.modes.userspace import (
    DEFAULT_AFFINITY_TTL_SECONDS,
    BalancerError,
    LoadBalancerRR,
    MissingEndpointsError,
    MissingServiceEntryError,
    ServicePortName,
    build_ports_to_endpoints,
    is_valid_endpoint,
    join_host_port,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "userspace" / "roundrobin_cases.json"
REFERENCE = json.loads(DATA.read_text())
SEEDS = [0, 1, 2, 3, 7, 42, 2024, 123456789]


def run_ops(ops, seed):
    """Run ops in the reference's format; returns the balancer."""
    lb = LoadBalancerRR(seed=seed)
    bound: dict[str, str] = {}
    now = 0.0
    for n, op in enumerate(ops):
        kind = op["op"]
        where = f"op {n} ({kind})"
        if kind == "setEndpoints":
            lb.on_endpoints(op["objects"])
        elif kind == "newService":
            lb.new_service(op["servicePort"], op.get("affinity", "None"), op.get("ttl", 0))
        elif kind == "advance":
            now += op["seconds"]
        elif kind == "cleanup":
            lb.cleanup_stale_sticky_sessions(op["servicePort"], now=now)
        elif kind == "assertEndpointSet":
            stored = lb.endpoints(op["servicePort"])
            assert set(op["containsAll"]) <= set(stored), where
            assert len(stored) == len(op["containsAll"]), where
        elif kind == "assertAffinityCount":
            assert len(lb.affinity(op["servicePort"])) == op["count"], where
        elif kind == "nextEndpoint":
            sp, expect = op["servicePort"], op.get("expect")
            args = (sp, op.get("client"), op.get("sessionAffinityReset", False))
            if expect and expect.get("error"):
                with pytest.raises(KproxyError):
                    lb.next_endpoint(*args, now=now)
                continue
            wanted = None
            if expect is not None:
                if "literal" in expect:
                    wanted = expect["literal"]
                elif "shuffled" in expect:
                    wanted = lb.endpoints(sp)[expect["shuffled"]]
                elif "var" in expect:
                    wanted = bound[expect["var"]]
                else:
                    pytest.fail(f"{where}: unknown expectation {expect}")
            got = lb.next_endpoint(*args, now=now)
            if wanted is not None:
                assert got == wanted, f"{where}: {op}"
            if op.get("bind"):
                bound[op["bind"]] = got
        else:
            pytest.fail(f"{where}: unknown op")
    return lb


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: c["test"])
def test_reference_cases(case, seed):
    run_ops(case["ops"], seed)


def test_reference_unit_cases():
    for row in REFERENCE["unitCases"]["TestValidateWorks"]:
        assert is_valid_endpoint(row["host"], row["port"]) is row["valid"], row
    filt = REFERENCE["unitCases"]["TestFilterWorks"]
    obj = {
        "metadata": {"namespace": "ns", "name": "x"},
        "subsets": [
            {"addresses": [{"ip": host}], "ports": [{"name": "p", "port": port}]}
            for host, port in filt["input"]
        ],
    }
    assert build_ports_to_endpoints(obj) == {"p": filt["expectedFlattened"]}


# ---- the rest of upstream's roundrobin_test.go, in the same op format -----------------


def eps(name, *subsets, namespace="testnamespace"):
    return {"metadata": {"namespace": namespace, "name": name}, "subsets": list(subsets)}


def subset(ips, ports):
    return {
        "addresses": [{"ip": ip} for ip in ips],
        "ports": [{"name": n, "port": p} if n else {"port": p} for n, p in ports],
    }


def nxt(sp, expect=None, client=None, reset=False, bind=None):
    op = {"op": "nextEndpoint", "servicePort": sp, "client": client}
    op["sessionAffinityReset"] = reset
    if isinstance(expect, int):
        op["expect"] = {"shuffled": expect}
    elif isinstance(expect, str):
        op["expect"] = {"var": expect} if expect.startswith("$") else {"literal": expect}
    elif expect == "error" or expect is False:
        op["expect"] = {"error": True}
    if bind:
        op["bind"] = bind
    return op


def err(sp):
    return {"op": "nextEndpoint", "servicePort": sp, "client": None, "expect": {"error": True}}


def setep(*objects):
    return {"op": "setEndpoints", "objects": list(objects)}


def newsvc(sp, affinity="ClientIP", ttl=0):
    return {"op": "newService", "servicePort": sp, "affinity": affinity, "ttl": ttl}


C1, C2, C3 = "127.0.0.1", "127.0.0.2", "127.0.0.3"
P, Q = "testnamespace/foo:p", "testnamespace/foo:q"
FOO, BAR = "testnamespace/foo", "testnamespace/bar"

UPSTREAM = {
    "TestLoadBalanceWorksWithMultipleEndpointsAndUpdates": [
        err(P),
        setep(
            eps(
                "foo",
                subset(["endpoint1"], [("p", 1), ("q", 10)]),
                subset(["endpoint2"], [("p", 2), ("q", 20)]),
                subset(["endpoint3"], [("p", 3), ("q", 30)]),
            )
        ),
        {
            "op": "assertEndpointSet",
            "servicePort": P,
            "containsAll": ["endpoint1:1", "endpoint2:2", "endpoint3:3"],
        },
        *[nxt(P, i) for i in (0, 1, 2, 0)],
        {
            "op": "assertEndpointSet",
            "servicePort": Q,
            "containsAll": ["endpoint1:10", "endpoint2:20", "endpoint3:30"],
        },
        *[nxt(Q, i) for i in (0, 1, 2, 0)],
        # one fewer endpoint: start at the beginning again
        setep(
            eps(
                "foo",
                subset(["endpoint4"], [("p", 4), ("q", 40)]),
                subset(["endpoint5"], [("p", 5), ("q", 50)]),
            )
        ),
        {
            "op": "assertEndpointSet",
            "servicePort": P,
            "containsAll": ["endpoint4:4", "endpoint5:5"],
        },
        *[nxt(P, i) for i in (0, 1, 0, 1)],
        {
            "op": "assertEndpointSet",
            "servicePort": Q,
            "containsAll": ["endpoint4:40", "endpoint5:50"],
        },
        *[nxt(Q, i) for i in (0, 1, 0, 1)],
        setep(eps("foo")),
        err(P),
    ],
    "TestLoadBalanceWorksWithServiceRemoval": [
        err("testnamespace/foo:p"),
        setep(
            eps("foo", subset(["endpoint1", "endpoint2", "endpoint3"], [("p", 123)])),
            eps("bar", subset(["endpoint4", "endpoint5", "endpoint6"], [("p", 456)])),
        ),
        *[nxt(P, i) for i in (0, 1, 2, 0, 1)],
        *[nxt("testnamespace/bar:p", i) for i in (0, 1, 2, 0, 1)],
        setep(eps("bar", subset(["endpoint4", "endpoint5", "endpoint6"], [("p", 456)]))),
        err(P),
        # bar is unchanged: its list, index continue
        *[nxt("testnamespace/bar:p", i) for i in (2, 0, 1, 2)],
    ],
    "TestStickyLoadBalanceWorksWithNewServiceCalledFirst": [
        err(FOO),
        newsvc(FOO),
        setep(
            eps(
                "foo",
                subset(["endpoint1"], [("", 1)]),
                subset(["endpoint2"], [("", 2)]),
                subset(["endpoint3"], [("", 3)]),
            )
        ),
        nxt(FOO, client=C1, bind="$1"),
        *[nxt(FOO, "$1", client=C1)] * 3,
        nxt(FOO, client=C2, bind="$2"),
        *[nxt(FOO, "$2", client=C2)] * 3,
        nxt(FOO, client=C3, bind="$3"),
        *[nxt(FOO, "$3", client=C3)] * 3,
        *[nxt(FOO, f"${i}", client=c) for i, c in ((1, C1), (2, C2), (3, C3))] * 2,
    ],
    "TestStickyLoadBalanceWorksWithNewServiceCalledSecond": [
        err(FOO),
        setep(eps("foo", subset(["endpoint1"], [("", 1)]), subset(["endpoint2"], [("", 2)]))),
        newsvc(FOO),
        nxt(FOO, client=C1, bind="$1"),
        *[nxt(FOO, "$1", client=C1)] * 3,
        nxt(FOO, client=C2, bind="$2"),
        *[nxt(FOO, "$2", client=C2)] * 3,
        nxt(FOO, client=C3, bind="$3"),
        *[nxt(FOO, "$3", client=C3)] * 3,
        *[nxt(FOO, f"${i}", client=c) for i, c in ((1, C1), (2, C2), (3, C3))] * 2,
    ],
    "TestStickyLoadBalanceWorksWithMultipleEndpointsAndUpdates": [
        err(FOO),
        newsvc(FOO),
        setep(eps("foo", subset(["endpoint"], [("", 1), ("", 2), ("", 3)]))),
        nxt(FOO, 0, C1),
        nxt(FOO, 0, C1),
        nxt(FOO, 1, C2),
        nxt(FOO, 1, C2),
        nxt(FOO, 2, C3),
        nxt(FOO, 0, C1),
        nxt(FOO, 1, C2),
        setep(eps("foo", subset(["endpoint"], [("", 4), ("", 5)]))),
        nxt(FOO, 0, C1),
        nxt(FOO, 1, C2),
        nxt(FOO, 0, C1),
        nxt(FOO, 0, C1),
        nxt(FOO, 1, C2),
        nxt(FOO, 1, C2),
        setep(eps("foo")),
        err(FOO),
    ],
    "TestStickyLoadBalanceWorksWithServiceRemoval": [
        err(FOO),
        newsvc(FOO),
        newsvc(BAR),
        setep(
            eps("foo", subset(["endpoint"], [("", 1), ("", 2), ("", 3)])),
            eps("bar", subset(["endpoint"], [("", 4), ("", 5)])),
        ),
        *[nxt(FOO, i, c) for i, c in ((0, C1), (1, C2), (2, C3), (0, C1), (0, C1))],
        *[nxt(FOO, i, c) for i, c in ((1, C2), (1, C2), (2, C3), (2, C3))],
        *[nxt(BAR, i, c) for i, c in ((0, C1), (1, C2), (0, C1), (0, C1), (1, C2), (1, C2))],
        setep(eps("bar", subset(["endpoint"], [("", 4), ("", 5)]))),
        err(FOO),
        *[nxt(BAR, i, c) for i, c in ((0, C1), (1, C2), (0, C1), (1, C2), (0, C1), (0, C1))],
    ],
    # pkg/proxy/winuserspace/roundrobin_test.go: sessionAffinityReset
    "TestStickyLoadBalanceWorksWithEndpointFails": [
        err(FOO),
        newsvc(FOO),
        setep(
            eps(
                "foo",
                subset(["endpoint1"], [("", 1)]),
                subset(["endpoint2"], [("", 2)]),
                subset(["endpoint3"], [("", 3)]),
            )
        ),
        nxt(FOO, client=C1, bind="$1"),
        nxt(FOO, client=C2, bind="$2"),
        nxt(FOO, client=C3, bind="$3"),
        nxt(FOO, "$1", C1, reset=True),
        nxt(FOO, "$2", C1, reset=True),
        nxt(FOO, "$3", C1, reset=True),
        nxt(FOO, "$2", C2),
        nxt(FOO, "$1", C2, reset=True),
        nxt(FOO, "$2", C3, reset=True),
        nxt(FOO, "$3", C1, reset=True),
        nxt(FOO, "$1", C2, reset=True),
        nxt(FOO, "$2", C3, reset=True),
    ],
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_upstream_cases(name, seed):
    run_ops(UPSTREAM[name], seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_sticky_remove_one(seed):
    """TestStickyLoadBalanaceWorksWithMultipleEndpointsRemoveOne: only the client pinned
    to the removed endpoint moves (to the new list's first); an added endpoint keeps the
    others' pins and new clients take the new list in order."""
    lb = LoadBalancerRR(seed=seed)
    with pytest.raises(MissingServiceEntryError):
        lb.next_endpoint(FOO, None)
    lb.new_service(FOO, "ClientIP", 0)
    lb.on_endpoints([eps("foo", subset(["endpoint"], [("", 1), ("", 2), ("", 3)]))])
    sh = lb.endpoints(FOO)
    assert lb.next_endpoint(FOO, C1) == sh[0]
    pins = {C1: sh[0]}
    assert lb.next_endpoint(FOO, C1) == sh[0]
    assert lb.next_endpoint(FOO, C2) == sh[1]
    pins[C2] = sh[1]
    assert lb.next_endpoint(FOO, C2) == sh[1]
    assert lb.next_endpoint(FOO, C3) == sh[2]
    pins[C3] = sh[2]

    lb.on_endpoints([eps("foo", subset(["endpoint"], [("", 1), ("", 2)]))])
    sh = lb.endpoints(FOO)
    for client in (C1, C2, C3):
        if pins[client] == "endpoint:3":
            pins[client] = sh[0]
            break
    for client in (C1, C2, C3):
        assert lb.next_endpoint(FOO, client) == pins[client]

    lb.on_endpoints([eps("foo", subset(["endpoint"], [("", 1), ("", 2), ("", 4)]))])
    sh = lb.endpoints(FOO)
    for client in (C1, C2, C3):
        assert lb.next_endpoint(FOO, client) == pins[client]
    assert lb.next_endpoint(FOO, "127.0.0.4") == sh[0]
    assert lb.next_endpoint(FOO, "127.0.0.5") == sh[1]
    assert lb.next_endpoint(FOO, "127.0.0.6") == sh[2]


# ---- the facts of the reference README --------------------------------------------------

THREE = [eps("foo", subset(["10.0.0.1", "10.0.0.2", "10.0.0.3"], [("p", 80)]))]


def test_affinity_hit_does_not_advance_round_robin():
    lb = LoadBalancerRR(seed=5)
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    sh = lb.endpoints(P)
    assert lb.next_endpoint(P, C1) == sh[0]
    for _ in range(5):
        assert lb.next_endpoint(P, C1) == sh[0]
    assert lb.next_endpoint(P, C2) == sh[1]
    # the reset flag takes the round robin and re-pins
    assert lb.next_endpoint(P, C1, reset_affinity=True) == sh[2]
    assert lb.next_endpoint(P, C1) == sh[2]
    assert lb.affinity(P)[C1] == (sh[2], 0.0)


def test_affinity_keyed_by_ip_only():
    lb = LoadBalancerRR(seed=1)
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    first = lb.next_endpoint(P, "10.1.0.1:40000")
    assert lb.next_endpoint(P, "10.1.0.1:40001") == first
    assert lb.next_endpoint(P, "10.1.0.1") == first
    assert list(lb.affinity(P)) == ["10.1.0.1"]
    assert lb.next_endpoint(P, "[fd00::1]:5") == lb.next_endpoint(P, "fd00:0::1")


def test_ttl_truncated_to_whole_seconds():
    lb = LoadBalancerRR(seed=3)
    lb.new_service(P, "ClientIP", 2)
    lb.on_endpoints(THREE)
    sh = lb.endpoints(P)
    assert lb.next_endpoint(P, C1, now=10.0) == sh[0]
    # 1.999 s: int() == 1 < 2, a hit, refreshed to 11.999
    assert lb.next_endpoint(P, C1, now=11.999) == sh[0]
    assert lb.affinity(P)[C1] == (sh[0], 11.999)
    # 2.0 s after the last use: int() == 2, not < 2: the next in the round robin
    assert lb.next_endpoint(P, C1, now=13.999) == sh[1]
    assert lb.affinity(P)[C1] == (sh[1], 13.999)


def test_default_ttl_and_new_service_keeps_ttl():
    lb = LoadBalancerRR(seed=4)
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    sh = lb.endpoints(P)
    assert lb.next_endpoint(P, C1, now=0.0) == sh[0]
    assert lb.next_endpoint(P, C1, now=DEFAULT_AFFINITY_TTL_SECONDS - 0.001) == sh[0]
    # NewService on an existing port changes only the type, never the TTL
    lb.new_service(P, "ClientIP", 5)
    t = DEFAULT_AFFINITY_TTL_SECONDS - 0.001
    assert lb.next_endpoint(P, C1, now=t + 100) == sh[0]
    assert lb.next_endpoint(P, C1, now=t + 100 + DEFAULT_AFFINITY_TTL_SECONDS) == sh[1]
    # the type does change: None stops the pinning, the TTL is still the old one
    lb.new_service(P, "None", 7)
    assert lb.next_endpoint(P, C1, now=0) == sh[2]


def test_endpoints_before_new_service_default_type_none():
    lb = LoadBalancerRR(seed=4)
    lb.on_endpoints(THREE)
    sh = lb.endpoints(P)
    assert [lb.next_endpoint(P, C1) for _ in range(4)] == [sh[0], sh[1], sh[2], sh[0]]
    assert lb.affinity(P) == {}
    # the state was made by the endpoints update with the default TTL: ttl 3 is ignored
    lb.new_service(P, "ClientIP", 3)
    assert lb.next_endpoint(P, C1, now=0) == sh[1]
    assert lb.next_endpoint(P, C1, now=100) == sh[1]


def test_cleanup_stale_sticky_sessions():
    lb = LoadBalancerRR(seed=9)
    lb.new_service(P, "ClientIP", 10)
    lb.on_endpoints(THREE)
    lb.next_endpoint(P, C1, now=0.0)
    lb.next_endpoint(P, C2, now=5.0)
    lb.cleanup_stale_sticky_sessions(P, now=9.999)
    assert sorted(lb.affinity(P)) == [C1, C2]
    lb.cleanup_stale_sticky_sessions(P, now=10.0)  # elapsed 10 >= 10
    assert sorted(lb.affinity(P)) == [C2]
    lb.cleanup_stale_sticky_sessions(P, now=15.0)
    assert lb.affinity(P) == {}
    lb.cleanup_stale_sticky_sessions("ns/unknown:x", now=1.0)  # unknown: nothing


@pytest.mark.parametrize("seed", SEEDS)
def test_unchanged_multiset_keeps_list_index_affinity(seed):
    lb = LoadBalancerRR(seed=seed)
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    before = lb.endpoints(P)
    pinned = lb.next_endpoint(P, C1)
    lb.next_endpoint(P, C2)
    # the same endpoints in another order and subsets: the same multiset
    lb.on_endpoints(
        [
            eps(
                "foo",
                subset(["10.0.0.3"], [("p", 80)]),
                subset(["10.0.0.2", "10.0.0.1"], [("p", 80)]),
            )
        ]
    )
    assert lb.endpoints(P) == before
    assert lb.next_endpoint(P, C3) == before[2]
    assert lb.next_endpoint(P, C1) == pinned


def test_changed_update_drops_only_vanished_affinities():
    lb = LoadBalancerRR(seed=11)
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    got = {c: lb.next_endpoint(P, c) for c in (C1, C2, C3)}
    gone = got[C2]
    keep = [e for e in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] if e != gone]
    hosts = [e.split(":")[0] for e in keep] + ["10.0.0.9"]
    lb.on_endpoints([eps("foo", subset(hosts, [("p", 80)]))])
    aff = lb.affinity(P)
    assert sorted(aff) == sorted([C1, C3])
    assert aff[C1][0] == got[C1] and aff[C3][0] == got[C3]
    assert lb.next_endpoint(P, C2) == lb.endpoints(P)[0]  # index reset to 0


def test_vanished_port_is_reset_not_deleted():
    lb = LoadBalancerRR(seed=0)
    with pytest.raises(MissingServiceEntryError):
        lb.next_endpoint(P, None)
    lb.new_service(P, "ClientIP", 0)
    with pytest.raises(MissingEndpointsError):
        lb.next_endpoint(P, C1)
    lb.on_endpoints(THREE)
    lb.next_endpoint(P, C1)
    lb.on_endpoints([])
    assert P in lb.services() and lb.endpoints(P) == [] and lb.affinity(P) == {}
    assert not lb.service_has_endpoints(P)
    with pytest.raises(MissingEndpointsError):
        lb.next_endpoint(P, C1)
    lb.delete_service(P)
    with pytest.raises(MissingServiceEntryError):
        lb.next_endpoint(P, C1)
    assert issubclass(MissingEndpointsError, KproxyError)
    assert issubclass(MissingServiceEntryError, BalancerError)


def test_build_order_hosts_ipv6_and_invalid():
    obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"namespace": "ns", "name": "svc"},
        "subsets": [
            {
                "addresses": [{"ip": "fd00::1"}, {"ip": "pod-a.example"}, {"ip": ""}],
                "notReadyAddresses": [{"ip": "10.9.9.9"}],
                "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 0}],
            },
            {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "a", "port": 81}]},
            {"addresses": [], "ports": [{"name": "c", "port": 1}]},
        ],
    }
    assert build_ports_to_endpoints(obj) == {
        "a": ["[fd00::1]:80", "pod-a.example:80", "10.0.0.1:81"],
    }
    assert join_host_port("::1", 5) == "[::1]:5"
    lb = LoadBalancerRR(seed=2)
    lb.on_endpoints([obj])
    assert sorted(lb.endpoints("ns/svc:a")) == sorted(
        ["[fd00::1]:80", "pod-a.example:80", "10.0.0.1:81"]
    )
    assert lb.services() == ["ns/svc:a"]


def test_unnamed_port_names():
    assert str(ServicePortName.parse("ns/n")) == "ns/n"
    assert ServicePortName.parse("ns/n:") == ServicePortName.parse("ns/n")
    assert ServicePortName.parse("ns/n:http") == ServicePortName("ns", "n", "http")


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_shuffle_is_go_perm_on_random_random(seed):
    """The documented determinism: rand.Perm's algorithm on random.Random(seed), s[i]
    placed at perm[i]; the first shuffle takes the list in build order, a later one of the
    same length the sorted list (slicesEquiv sorted it in place)."""

    def perm(rng, n):
        m = [0] * n
        for i in range(n):
            j = rng.randrange(i + 1)
            m[i] = m[j]
            m[j] = i
        return m

    def shuffle(rng, items):
        out = [None] * len(items)
        for i, j in enumerate(perm(rng, len(items))):
            out[j] = items[i]
        return out

    rng = random.Random(seed)
    first = [f"h{k}:{k + 1}" for k in (5, 3, 9, 1, 7)]
    second = [f"h{k}:{k + 1}" for k in (8, 2, 6, 4, 0)]
    lb = LoadBalancerRR(seed=seed)
    lb.on_endpoints(
        [eps("foo", *[subset([e.split(":")[0]], [("p", int(e.split(":")[1]))]) for e in first])]
    )
    assert lb.endpoints(P) == shuffle(rng, first)
    lb.on_endpoints(
        [eps("foo", *[subset([e.split(":")[0]], [("p", int(e.split(":")[1]))]) for e in second])]
    )
    assert lb.endpoints(P) == shuffle(rng, sorted(second))
    # same seed, same life: same lists
    again = LoadBalancerRR(seed=seed)
    again.on_endpoints(
        [eps("foo", *[subset([e.split(":")[0]], [("p", int(e.split(":")[1]))]) for e in first])]
    )
    assert again.endpoints(P) == shuffle(random.Random(seed), first)


def test_seeds_give_different_orders():
    hosts = [f"10.0.0.{i}" for i in range(1, 9)]
    orders = set()
    for seed in range(20):
        lb = LoadBalancerRR(seed=seed)
        lb.on_endpoints([eps("foo", subset(hosts, [("p", 80)]))])
        assert sorted(lb.endpoints(P)) == sorted(f"{h}:80" for h in hosts)
        orders.add(tuple(lb.endpoints(P)))
    assert len(orders) > 10


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda lb: lb.new_service(P, "Sticky", 0), "affinity"),
        (lambda lb: lb.new_service(P, "ClientIP", -1), "ttl_seconds"),
        (lambda lb: lb.new_service("no-slash", "None", 0), "name"),
        (lambda lb: lb.on_endpoints([{"subsets": []}]), "[0].metadata"),
        (
            lambda lb: lb.on_endpoints(
                [eps("x", {"addresses": [{"ip": 5}], "ports": [{"port": 1}]})]
            ),
            "[0].subsets[0].addresses[0].ip",
        ),
        (
            lambda lb: lb.on_endpoints([eps("x", {"addresses": [], "ports": [{"port": "80"}]})]),
            "[0].subsets[0].ports[0]",
        ),
        (lambda lb: lb.on_endpoints({"metadata": {}}), None),
    ],
)
def test_bad_input(call, field):
    lb = LoadBalancerRR()
    with pytest.raises(InputError) as info:
        call(lb)
    assert info.value.field == field


def test_bad_client_address():
    lb = LoadBalancerRR()
    lb.new_service(P, "ClientIP", 0)
    lb.on_endpoints(THREE)
    for bad in (None, "", "1.2.3.4:x", "a:b:c"):
        with pytest.raises(BalancerError):
            lb.next_endpoint(P, bad)
    # without affinity the client is not read
    lb.new_service(P, "None", 0)
    assert lb.next_endpoint(P, None) in lb.endpoints(P)
    with pytest.raises(InputError):
        LoadBalancerRR(seed="1")  # type: ignore[arg-type]


# ---- update_endpoints (the changed objects only) == on_endpoints (the whole set) ---------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_object_states = st.one_of(
    st.none(),  # the Endpoints object does not exist
    st.lists(
        st.tuples(st.sampled_from(["p", "q"]), st.integers(1, 4), st.integers(0, 3)),
        max_size=5,
    ),
)


def _object(name, state):
    return eps(name, *[subset([f"10.0.{h}.{name[-1]}"], [(pn, port)]) for pn, port, h in state])


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.dictionaries(st.sampled_from(["s1", "s2", "s3"]), _object_states), min_size=1, max_size=6
    ),
    seed=st.integers(0, 5),
)
def test_update_endpoints_equals_on_endpoints(steps, seed):
    full, part = LoadBalancerRR(seed=seed), LoadBalancerRR(seed=seed)
    for lb in (full, part):
        lb.new_service("testnamespace/s1:p", "ClientIP", 0)
    current: dict[str, list] = {}
    now = 0.0
    for step in steps:
        changed, removed = [], []
        for name, state in sorted(step.items()):
            if state is None:
                if current.pop(name, None) is not None:
                    removed.append(("testnamespace", name))
            else:
                current[name] = state
                changed.append(_object(name, state))
        full.on_endpoints([_object(n, st_) for n, st_ in sorted(current.items())])
        part.update_endpoints(changed, removed)
        assert full.services() == part.services()
        for sp in full.services():
            assert full.endpoints(sp) == part.endpoints(sp), sp
            assert full.affinity(sp) == part.affinity(sp), sp
        now += 1.0
        for sp in full.services():
            for client in ("10.9.0.1", "10.9.0.2"):
                try:
                    a = full.next_endpoint(sp, client, now=now)
                except KproxyError:
                    with pytest.raises(KproxyError):
                        part.next_endpoint(sp, client, now=now)
                    continue
                assert part.next_endpoint(sp, client, now=now) == a
