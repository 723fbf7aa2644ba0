"""The eBPF mode's maps (modes/ebpf.py, netfilter/bpfmaps.py) against Cilium's own
expectations: the ``lb/maps-dump`` texts of its load-balancer script tests
(cilium/cilium pkg/loadbalancer/tests/testdata/trafficpolicy.txtar,
pkg/loadbalancer/experimental/testdata/graceful-termination.txtar) and the map dumps of
its reconciler test (pkg/loadbalancer/experimental/bpf_reconciler_test.go: NodePort,
SessionAffinity, the MAGLEV lines at M = 1021), Apache-2.0, quoted below."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import InputError, maglev
from kproxy_emu.model import Cluster
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.modes.ebpf import EbpfProxier, IdAllocator, compile_ebpf
from kproxy_emu.netfilter import bpfmaps as B
from kproxy_emu.proxy.options import ProxyOptions
from kproxy_emu.proxy.view import ProxyView


def _options(node: str = "testnode", ips: tuple[str, ...] = ("192.168.0.10",)) -> ProxyOptions:
    return ProxyOptions.build(NodeConfig.from_node(node, list(ips)))


def _service(name, spec, status=None, namespace="test"):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": status or {"loadBalancer": {}},
    }


def _slice(name, service, endpoints, port=80, port_name="http", namespace="test"):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


def _ep(ip, node, ready=True, serving=True, terminating=False):
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": node,
    }


def _view(objects, options=None):
    options = options or _options()
    return ProxyView(Cluster.from_dicts(objects), options)


# -- trafficpolicy.txtar ---------------------------------------------------------------

ECHO_SLICE = _slice(
    "echo-kvlm2", "echo", [_ep("10.244.1.1", "testnode"), _ep("10.244.2.1", "othernode")]
)


def _echo(etp, itp):
    return _service(
        "echo",
        {
            "clusterIP": "10.96.50.104",
            "clusterIPs": ["10.96.50.104"],
            "externalTrafficPolicy": etp,
            "internalTrafficPolicy": itp,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}],
            "selector": {"name": "echo"},
            "type": "LoadBalancer",
        },
        {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}},
    )


TP_LOCAL = """\
BE: ID=1 ADDR=10.244.1.1:80/TCP STATE=active
REV: ID=1 ADDR=1.1.1.1:80
REV: ID=2 ADDR=10.96.50.104:80
SVC: ID=1 ADDR=1.1.1.1:80/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=0 FLAGS=LoadBalancer+Local+InternalLocal
SVC: ID=1 ADDR=1.1.1.1:80/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=LoadBalancer+Local+InternalLocal
SVC: ID=2 ADDR=10.96.50.104:80/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=0 FLAGS=ClusterIP+Local+InternalLocal+non-routable
SVC: ID=2 ADDR=10.96.50.104:80/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+Local+InternalLocal+non-routable
"""

TP_MIXED = """\
BE: ID=1 ADDR=10.244.1.1:80/TCP STATE=active
BE: ID=2 ADDR=10.244.2.1:80/TCP STATE=active
REV: ID=1 ADDR=1.1.1.1:80
REV: ID=2 ADDR=10.96.50.104:80
REV: ID=3 ADDR=1.1.1.1:80
SVC: ID=1 ADDR=1.1.1.1:80/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=2 QCOUNT=0 FLAGS=LoadBalancer+InternalLocal+two-scopes
SVC: ID=1 ADDR=1.1.1.1:80/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=LoadBalancer+InternalLocal+two-scopes
SVC: ID=1 ADDR=1.1.1.1:80/TCP SLOT=2 BEID=2 COUNT=0 QCOUNT=0 FLAGS=LoadBalancer+InternalLocal+two-scopes
SVC: ID=2 ADDR=10.96.50.104:80/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=0 FLAGS=ClusterIP+InternalLocal+non-routable
SVC: ID=2 ADDR=10.96.50.104:80/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+InternalLocal+non-routable
SVC: ID=3 ADDR=1.1.1.1:80/TCP/i SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=0 FLAGS=LoadBalancer+InternalLocal+two-scopes
SVC: ID=3 ADDR=1.1.1.1:80/TCP/i SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=LoadBalancer+InternalLocal+two-scopes
"""


def test_traffic_policies_and_two_scopes() -> None:
    """Local/Local: only the node's backend; then Cluster/Local: the LoadBalancer gets an
    internal-scope twin (a new ID) with the local backend, the external one all."""
    options = _options()
    proxier = EbpfProxier(options)
    first = proxier.sync(_view([_echo("Local", "Local"), ECHO_SLICE], options))
    assert first.render() == TP_LOCAL
    second = proxier.sync(_view([_echo("Cluster", "Local"), ECHO_SLICE], options))
    assert second.render() == TP_MIXED


# -- graceful-termination.txtar ----------------------------------------------------------

GRACEFUL_SVC = _service(
    "graceful-term-svc",
    {
        "clusterIP": "10.96.116.33",
        "clusterIPs": ["10.96.116.33"],
        "internalTrafficPolicy": "Cluster",
        "ports": [{"port": 8081, "protocol": "TCP", "targetPort": 8081}],
        "selector": {"app": "graceful-term-server"},
        "sessionAffinity": "None",
        "type": "ClusterIP",
    },
)


def _graceful_slice(term1, ready1, term2, ready2):
    node = "graceful-term-control-plane"
    return _slice(
        "graceful-term-svc-pg7nd",
        "graceful-term-svc",
        [
            _ep("10.244.0.112", node, ready=ready1, terminating=term1),
            _ep("10.244.0.113", node, ready=ready2, terminating=term2),
        ],
        port=8081,
        port_name="",
    )


GRACEFUL_ACTIVE = """\
BE: ID=1 ADDR=10.244.0.112:8081/TCP STATE=active
BE: ID=2 ADDR=10.244.0.113:8081/TCP STATE=active
REV: ID=1 ADDR=10.96.116.33:8081
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=2 QCOUNT=0 FLAGS=ClusterIP+non-routable
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+non-routable
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=2 BEID=2 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+non-routable
"""

GRACEFUL_TERMINATING1 = """\
BE: ID=1 ADDR=10.244.0.112:8081/TCP STATE=terminating
BE: ID=2 ADDR=10.244.0.113:8081/TCP STATE=active
REV: ID=1 ADDR=10.96.116.33:8081
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=1 FLAGS=ClusterIP+non-routable
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=1 BEID=2 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+non-routable
SVC: ID=1 ADDR=10.96.116.33:8081/TCP SLOT=2 BEID=1 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+non-routable
"""


def test_graceful_termination() -> None:
    """Upstream's expectations (LBALG=random there: that test ran an older agent whose
    master entry carried the default algorithm; the newest writes undef, as here)."""
    options = _options("graceful-term-control-plane")
    proxier = EbpfProxier(options)
    active = proxier.sync(_view([GRACEFUL_SVC, _graceful_slice(False, True, False, True)], options))
    assert active.render() == GRACEFUL_ACTIVE
    term1 = proxier.sync(_view([GRACEFUL_SVC, _graceful_slice(True, False, False, True)], options))
    assert term1.render() == GRACEFUL_TERMINATING1
    # both terminating: no active backend, so the terminating ones are used (count)
    both = proxier.sync(_view([GRACEFUL_SVC, _graceful_slice(True, False, True, False)], options))
    master = both.maps.services[B.ServiceKey("10.96.116.33", 8081, 6)]
    assert (master.count, master.qcount) == (2, 0)


def test_not_serving_endpoints_are_dropped() -> None:
    sl = _graceful_slice(False, False, False, True)
    sl["endpoints"][0]["conditions"]["serving"] = False
    r = compile_ebpf(_view([GRACEFUL_SVC, sl], _options("graceful-term-control-plane")))
    assert [be.address for be in r.maps.backends.values()] == ["10.244.0.113"]


# -- bpf_reconciler_test.go: NodePort, SessionAffinity, Maglev -----------------------------


def _nodeport(affinity: bool):
    spec = {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Local",
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30781}],
        "selector": {"app": "test"},
        "type": "NodePort",
    }
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 1}}
    backends = _slice(
        "test-1",
        "test",
        [_ep("10.1.0.1", "testnode"), _ep("10.1.0.2", "testnode")],
        port_name="",
    )
    return [_service("test", spec), backends]


NODEPORT_AFFINITY = """\
AFF: ID=1 BEID=1
AFF: ID=1 BEID=2
AFF: ID=2 BEID=1
AFF: ID=2 BEID=2
BE: ID=1 ADDR=10.1.0.1:80/TCP STATE=active
BE: ID=2 ADDR=10.1.0.2:80/TCP STATE=active
REV: ID=1 ADDR=<zero>
REV: ID=2 ADDR=<nodePort>
SVC: ID=1 ADDR=<zero>/TCP SLOT=0 LBALG=random AFFTimeout=1 COUNT=2 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity+non-routable
SVC: ID=1 ADDR=<zero>/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity+non-routable
SVC: ID=1 ADDR=<zero>/TCP SLOT=2 BEID=2 COUNT=0 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity+non-routable
SVC: ID=2 ADDR=<nodePort>/TCP SLOT=0 LBALG=random AFFTimeout=1 COUNT=2 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity
SVC: ID=2 ADDR=<nodePort>/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity
SVC: ID=2 ADDR=<nodePort>/TCP SLOT=2 BEID=2 COUNT=0 QCOUNT=0 FLAGS=NodePort+Local+InternalLocal+sessionAffinity
"""


@pytest.mark.parametrize("affinity", [False, True])
def test_nodeport_and_session_affinity(affinity: bool) -> None:
    """The NodePort wildcard entry (non-routable) and one per node address, the affinity
    match entries of the active backends, and the Maglev table of the routable entry
    (upstream's MAGLEV line at M = 1021). The ClusterIP frontend, which upstream's case
    does not have, comes after them and is left out of the comparison."""
    r = compile_ebpf(_view(_nodeport(affinity)), lb_algorithm="maglev", maglev_table_size=1021)
    lines = [
        line.replace("0.0.0.0:30781", "<zero>").replace("192.168.0.10:30781", "<nodePort>")
        for line in r.maps.dump_lines()
        if not line.startswith(("AFF: ID=3 ", "REV: ID=3 ", "SVC: ID=3 ", "MAGLEV"))
    ]
    want = [line.replace("LBALG=random", "LBALG=undef") for line in NODEPORT_AFFINITY.splitlines()]
    if not affinity:
        want = [
            line.replace("+sessionAffinity", "").replace("AFFTimeout=1", "AFFTimeout=0")
            for line in want
            if not line.startswith("AFF")
        ]
    assert lines == want
    assert {rid: B.maglev_counts_text(t) for rid, t in r.maps.maglev.items()} == {
        2: "1(511), 2(510)"
    }


def test_maglev_tables_are_cilium_tables() -> None:
    """Each LUT is maglev.lookup_table over the frontend's active backends, mapped to
    their backend IDs; the ClusterIP has none unless external_clusterip."""
    objs = _nodeport(False)
    r = compile_ebpf(_view(objs), lb_algorithm="maglev", maglev_table_size=251)
    want = maglev.lookup_table(["10.1.0.1:80/TCP", "10.1.0.2:80/TCP"], 251) + 1
    assert set(r.maps.maglev) == {2}
    assert np.array_equal(r.maps.maglev[2], want)
    r = compile_ebpf(
        _view(objs), lb_algorithm="maglev", maglev_table_size=251, external_clusterip=True
    )
    assert set(r.maps.maglev) == {2, 3}
    cluster = r.maps.services[B.ServiceKey("10.96.0.10", 80, 6)]
    assert "non-routable" not in B.flags_string(cluster.flags)


def test_random_algorithm_has_no_tables() -> None:
    r = compile_ebpf(_view(_nodeport(False)))
    assert r.maps.maglev == {}


# -- ID allocation, JSON, bad options ----------------------------------------------------


def test_ids_are_not_reused_at_once() -> None:
    """idAllocator: a released ID is taken again only after the others (wrap-around)."""
    alloc = IdAllocator(1, 4)
    assert [alloc.acquire(x) for x in "abc"] == [1, 2, 3]
    alloc.release("b")
    assert alloc.acquire("d") == 2  # 4 is max: wraps to the first free
    assert alloc.acquire("a") == 1
    with pytest.raises(InputError):
        alloc.acquire("e")


def test_frontend_ids_survive_syncs() -> None:
    options = _options()
    proxier = EbpfProxier(options)
    a = proxier.sync(_view([_echo("Local", "Local"), ECHO_SLICE], options))
    b = proxier.sync(_view([_echo("Local", "Local"), ECHO_SLICE], options))
    assert a.render() == b.render()
    gone = proxier.sync(_view([], options))
    assert gone.render() == ""
    again = proxier.sync(_view([_echo("Local", "Local"), ECHO_SLICE], options))
    assert "SVC: ID=3 ADDR=1.1.1.1:80/TCP SLOT=0" in again.render()  # next free, not 1


def test_json() -> None:
    r = compile_ebpf(_view(_nodeport(True)), lb_algorithm="maglev", maglev_table_size=251)
    d = json.loads(json.dumps(r.maps.to_json()))
    assert {b["address"] for b in d["backends"]} == {"10.1.0.1", "10.1.0.2"}
    assert d["maglev"] == [{"id": 2, "size": 251, "counts": [[1, 126], [2, 125]]}]
    master = next(s for s in d["services"] if s["key"]["address"] == "0.0.0.0")
    assert master["value"]["affinity_timeout"] == 1
    assert master["value"]["flags_text"].startswith("NodePort+Local")


@pytest.mark.parametrize(
    "kwargs",
    [{"lb_algorithm": "rr"}, {"maglev_table_size": 1000}, {"maglev_hash_seed": "AAAA"}],
)
def test_bad_options(kwargs) -> None:
    with pytest.raises(InputError):
        EbpfProxier(_options(), **kwargs)


def test_flags_strings() -> None:
    """ServiceFlags.String() order (pkg/loadbalancer)."""
    f = B.service_flags(B.NODE_PORT, ext_local=True, session_affinity=True, routable=True)
    assert B.flags_string(f) == "NodePort+Local+two-scopes+sessionAffinity"
    f = B.service_flags(B.LOAD_BALANCER, check_source_range=True, dsr=True, routable=True)
    assert B.flags_string(f) == "LoadBalancer+check source-range+dsr"


# -- invariants on random clusters -------------------------------------------------------

_POLICIES = st.sampled_from(["Cluster", "Local"])


@st.composite
def _clusters(draw):
    objs = []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
        spec = {
            "clusterIP": f"10.96.0.{i + 1}",
            "ports": [
                {"name": "p", "port": 80 + i, "protocol": "TCP", "targetPort": 80}
                | ({"nodePort": 30000 + i} if kind != "ClusterIP" else {})
            ],
            "selector": {"app": f"a{i}"},
            "type": kind,
            "internalTrafficPolicy": draw(_POLICIES),
        }
        if kind != "ClusterIP":
            spec["externalTrafficPolicy"] = draw(_POLICIES)
        if draw(st.booleans()):
            spec["externalIPs"] = [f"203.0.113.{i + 1}"]
        if draw(st.booleans()):
            spec["sessionAffinity"] = "ClientIP"
        status = {"loadBalancer": {"ingress": [{"ip": f"198.51.100.{i + 1}"}]}}
        objs.append(_service(f"s{i}", spec, status if kind == "LoadBalancer" else None))
        eps = []
        for j in range(draw(st.integers(0, 5))):
            ready = draw(st.booleans())
            eps.append(
                _ep(
                    f"10.244.{i}.{j + 1}",
                    draw(st.sampled_from(["testnode", "other"])),
                    ready=ready,
                    serving=ready or draw(st.booleans()),
                    terminating=not ready and draw(st.booleans()),
                )
            )
        objs.append(_slice(f"s{i}-x", f"s{i}", eps, port_name="p"))
    return objs


@settings(max_examples=60, deadline=None)
@given(_clusters(), st.sampled_from(["random", "maglev"]))
def test_map_invariants(objs, algorithm) -> None:
    r = compile_ebpf(_view(objs), lb_algorithm=algorithm, maglev_table_size=251)
    maps = r.maps
    masters = maps.frontends()
    assert len({v.rev_nat_index for v in masters.values()}) == len(masters)
    for key, v in masters.items():
        slots = maps.slots(key)
        assert len(slots) == v.count + v.qcount
        assert all(b in maps.backends for b in slots)
        states = [maps.backends[b].state for b in slots]
        assert states == sorted(states)  # active first
        active = [b for b, s in zip(slots, states) if s == B.STATE_ACTIVE]
        if active:
            assert v.count == len(active)
        rn = maps.rev_nat[v.rev_nat_index]
        assert (rn.address, rn.port) == (key.address, key.port)
        if v.rev_nat_index in maps.maglev:
            assert set(maps.maglev[v.rev_nat_index].tolist()) <= set(slots[: v.count])
        if key.scope == B.SCOPE_INTERNAL:
            assert v.flags & B.FLAG_TWO_SCOPES
            assert B.ServiceKey(key.address, key.port, key.proto) in masters
    # every backend is some frontend's
    used = {s.backend_id for k, s in maps.services.items() if k.slot}
    assert used == set(maps.backends)
    # the same input, a fresh proxier: the same maps (deterministic)
    again = compile_ebpf(_view(objs), lb_algorithm=algorithm, maglev_table_size=251)
    assert again.render() == r.render()
