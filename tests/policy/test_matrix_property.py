"""The vectorised matrix (``reachability``) equals the per-pair ``allowed()`` on random
small clusters and policies (two independent implementations of the same semantics)."""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu.model import Cluster
from kproxy_emu.policy import allowed, compile_policies, reachability

NAMESPACES = ("x", "y", "z")
KEYS = ("app", "tier", "env")
VALUES = ("a", "b", "c")
PROTOCOLS = ("TCP", "UDP", "SCTP")
PORT_NAMES = ("web", "dns", "metrics")
PORTS = (53, 80, 81, 8080)

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@st.composite
def selectors(draw):
    sel = {}
    if draw(st.booleans()):
        sel["matchLabels"] = draw(labels)
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
        e = {"key": draw(st.sampled_from(KEYS + ("kubernetes.io/metadata.name",))), "operator": op}
        if op in ("In", "NotIn"):
            e["values"] = draw(
                st.lists(st.sampled_from(VALUES + NAMESPACES), min_size=1, max_size=2)
            )
        exprs.append(e)
    if exprs:
        sel["matchExpressions"] = exprs
    return sel


@st.composite
def peers(draw):
    kind = draw(st.sampled_from(("pod", "ns", "both", "ip")))
    if kind == "ip":
        prefix = draw(st.integers(22, 32))
        cidr = f"10.0.{draw(st.integers(0, 2))}.{draw(st.integers(0, 31))}/{prefix}"
        block = {"cidr": cidr}  # host bits set: accepted, as the API server does
        net = ipaddress.ip_network(cidr, strict=False)
        if prefix < 32 and draw(st.booleans()):
            sub_prefix = draw(st.integers(prefix + 1, 32))
            subnets = list(net.subnets(new_prefix=sub_prefix))
            block["except"] = [str(draw(st.sampled_from(subnets[:64])))]
        return {"ipBlock": block}
    peer = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = draw(selectors())
    if kind in ("ns", "both"):
        peer["namespaceSelector"] = draw(selectors())
    return peer


@st.composite
def port_entries(draw):
    entry = {}
    if draw(st.booleans()):
        entry["protocol"] = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("none", "number", "range", "name")))
    if kind in ("number", "range"):
        entry["port"] = draw(st.sampled_from(PORTS))
        if kind == "range":
            entry["endPort"] = entry["port"] + draw(st.integers(0, 30))
    elif kind == "name":
        entry["port"] = draw(st.sampled_from(PORT_NAMES))
    return entry


@st.composite
def rules(draw, peers_key):
    rule = {}
    if draw(st.booleans()):
        rule[peers_key] = draw(st.lists(peers(), max_size=3))
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(port_entries(), max_size=3))
    return rule


@st.composite
def policies(draw, index):
    spec = {"podSelector": draw(selectors())}
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rules("from"), max_size=2))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(rules("to"), max_size=2))
    if draw(st.booleans()):  # else defaulted
        spec["policyTypes"] = draw(
            st.lists(st.sampled_from(("Ingress", "Egress")), min_size=1, max_size=2, unique=True)
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"p{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
        "spec": spec,
    }


@st.composite
def clusters(draw):
    docs = []
    for ns in NAMESPACES:
        if draw(st.booleans()):  # else no Namespace object: only the automatic label
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": draw(labels)},
                }
            )
    n = draw(st.integers(1, 7))
    for i in range(n):
        ports = []
        for name in draw(st.lists(st.sampled_from(PORT_NAMES), max_size=2, unique=True)):
            ports.append(
                {
                    "name": name,
                    "containerPort": draw(st.sampled_from(PORTS)),
                    "protocol": draw(st.sampled_from(PROTOCOLS)),
                }
            )
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p{i}",
                    "namespace": draw(st.sampled_from(NAMESPACES)),
                    "labels": draw(labels),
                },
                "spec": {"containers": [{"name": "c", "ports": ports}]},
                "status": {"podIP": f"10.0.{draw(st.integers(0, 2))}.{i}"},
            }
        )
    docs += [draw(policies(k)) for k in range(draw(st.integers(0, 4)))]
    return Cluster.from_dicts(docs)


@settings(max_examples=150, deadline=None)
@given(
    cluster=clusters(), port=st.sampled_from(PORTS + (90, 100)), protocol=st.sampled_from(PROTOCOLS)
)
def test_matrix_equals_per_pair_allowed(cluster, port, protocol):
    names, matrix = reachability(cluster, port, protocol)
    compiled = compile_policies(cluster.network_policies.values())
    pods = [cluster.pods[tuple(n.split("/"))] for n in names]
    expected = np.array(
        [
            [allowed(cluster, s, d, port, protocol, policies=compiled).allowed for d in pods]
            for s in pods
        ],
        dtype=bool,
    ).reshape(len(pods), len(pods))
    assert matrix.dtype == bool
    assert (matrix == expected).all(), (names, matrix, expected)


@settings(max_examples=50, deadline=None)
@given(cluster=clusters(), port=st.sampled_from(PORTS), protocol=st.sampled_from(PROTOCOLS))
def test_a_subset_of_pods_gives_the_same_cells(cluster, port, protocol):
    names, matrix = reachability(cluster, port, protocol)
    keep = names[::2]
    sub_names, sub = reachability(cluster, port, protocol, pods=keep)
    assert sub_names == keep
    idx = [names.index(n) for n in keep]
    assert (sub == matrix[np.ix_(idx, idx)]).all()


def test_the_generator_reaches_both_outcomes():
    """The property above is only worth something if random clusters mix allowed and
    denied pairs, and ipBlock excepts, named ports and both-selector peers occur."""
    seen = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(cluster=clusters())
    def probe(cluster):
        _, matrix = reachability(cluster, 80, "TCP")
        seen.update(bool(v) for v in matrix.ravel())

    probe()
    assert seen == {True, False}
