"""The eBPF mode's reference datapath (dataplane/ebpf_reference.py): service lookup with
scopes, random and Maglev backend choice, session affinity, and the disruption figures."""

from __future__ import annotations

import random

import pytest

from kproxy_emu import InputError, maglev
from kproxy_emu.dataplane.ebpf_reference import EbpfDatapath, client_flows, disruption
from kproxy_emu.modes.ebpf import EbpfProxier, compile_ebpf
from kproxy_emu.netfilter import bpfmaps as B

from .test_ebpf_maps import ECHO_SLICE, _echo, _ep, _nodeport, _options, _service, _slice, _view


def _mixed_maps(**kw):
    return compile_ebpf(_view([_echo("Cluster", "Local"), ECHO_SLICE]), **kw).maps


def test_scopes() -> None:
    """Cluster/Local LoadBalancer: from outside both backends, from inside the internal
    scope entry (the local backend only)."""
    dp = EbpfDatapath(_mixed_maps(), rng=random.Random(3))
    outside = {
        dp.new_flow("8.8.8.8", p, "1.1.1.1", 80, "TCP", from_cluster=False).backend.address
        for p in range(2000, 2100)
    }
    assert outside == {"10.244.1.1", "10.244.2.1"}
    inside = dp.new_flow("10.244.2.1", 40000, "1.1.1.1", 80, "TCP", from_cluster=True)
    assert inside.frontend.scope == B.SCOPE_INTERNAL
    assert inside.backend.address == "10.244.1.1"
    assert inside.lookups == ["services", "services", "services", "backends"]


def test_no_service_and_no_backend() -> None:
    maps = compile_ebpf(
        _view([_echo("Local", "Local"), _slice("s", "echo", [_ep("10.244.2.1", "othernode")])])
    ).maps
    dp = EbpfDatapath(maps)
    assert dp.new_flow("8.8.8.8", 1, "1.1.1.1", 80, 6, from_cluster=False).verdict == "NO_BACKEND"
    assert dp.new_flow("8.8.8.8", 1, "1.1.1.1", 81, 6, from_cluster=False).verdict == "NO_SERVICE"


def test_maglev_pick_is_the_lut_entry() -> None:
    r = compile_ebpf(_view(_nodeport(False)), lb_algorithm="maglev", maglev_table_size=251)
    dp = EbpfDatapath(r.maps, algorithm="maglev", maglev_table_size=251)
    for port in range(30000, 30050):
        res = dp.new_flow("172.16.5.9", port, "192.168.0.10", 30781, "TCP", from_cluster=False)
        idx = maglev.slot("172.16.5.9", port, 30781, "TCP", m=251)
        assert res.pick == idx
        assert res.backend_id == r.maps.maglev[res.rev_nat_index][idx]
        assert res.lookups == ["services", "maglev", "backends"]
    # east-west: the socket-level LB picks a random slot, Maglev or not
    ew = dp.new_flow("10.1.0.1", 1234, "192.168.0.10", 30781, "TCP", from_cluster=True)
    assert 1 <= ew.pick <= 2 and ew.lookups == ["services", "services", "backends"]


def test_random_is_seeded() -> None:
    maps = _mixed_maps()
    a = [
        EbpfDatapath(maps, rng=random.Random(9))
        .new_flow("8.8.8.8", p, "1.1.1.1", 80, 6, from_cluster=False)
        .backend_id
        for p in range(50)
    ]
    b = [
        EbpfDatapath(maps, rng=random.Random(9))
        .new_flow("8.8.8.8", p, "1.1.1.1", 80, 6, from_cluster=False)
        .backend_id
        for p in range(50)
    ]
    assert a == b


def test_session_affinity() -> None:
    """Sticky for [last_used, last_used + timeout) in whole seconds; a backend that left
    the affinity-match map is forgotten."""
    maps = compile_ebpf(_view(_nodeport(True))).maps
    dp = EbpfDatapath(maps, rng=random.Random(1))
    first = dp.new_flow("8.8.8.8", 1000, "192.168.0.10", 30781, 6, from_cluster=False, now=10.0)
    assert not first.affinity_hit
    for t, port in ((10.5, 1001), (10.9, 1002)):
        r = dp.new_flow("8.8.8.8", port, "192.168.0.10", 30781, 6, from_cluster=False, now=t)
        assert r.affinity_hit and r.backend_id == first.backend_id
    # timeout 1 s: last used at 10.9 -> int(10.9) + 1 <= 11: expired at 11.0
    late = dp.new_flow("8.8.8.8", 1003, "192.168.0.10", 30781, 6, from_cluster=False, now=11.0)
    assert not late.affinity_hit
    maps.affinity_match.discard((late.rev_nat_index, late.backend_id))
    again = dp.new_flow("8.8.8.8", 1004, "192.168.0.10", 30781, 6, from_cluster=False, now=11.2)
    assert not again.affinity_hit


def test_affinity_map_is_lru() -> None:
    maps = compile_ebpf(_view(_nodeport(True))).maps
    dp = EbpfDatapath(maps, affinity_entries=2)
    for c in ("8.8.8.1", "8.8.8.2", "8.8.8.3"):
        dp.new_flow(c, 1, "192.168.0.10", 30781, 6, from_cluster=False)
    assert [k[1] for k in dp.affinity] == ["8.8.8.2", "8.8.8.3"]


def _ten(drop: int | None = None, n: int = 10):
    eps = [_ep(f"10.2.0.{i + 1}", "node-x") for i in range(n) if i != drop]
    svc = _service(
        "web",
        {
            "clusterIP": "10.96.0.20",
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "type": "LoadBalancer",
            "selector": {"app": "web"},
        },
        {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}]}},
    )
    return [svc, _slice("web-1", "web", eps, port_name="")]


@pytest.mark.parametrize("algorithm", ["random", "maglev"])
def test_disruption(algorithm: str) -> None:
    """One of ten backends removed: with Maglev the removed backend's flows move plus a
    small share of the others' (< 2 % here at M = 16381); with random every new
    connection is drawn again, so ~1 - 1/9 of them land elsewhere."""
    options = _options()
    proxier = EbpfProxier(options, lb_algorithm=algorithm)
    before = proxier.sync(_view(_ten(), options)).maps
    after = proxier.sync(_view(_ten(drop=3), options)).maps
    flows = client_flows(4000, "5.5.5.5", 80)
    share = disruption(before, after, flows, algorithm=algorithm)
    if algorithm == "maglev":
        assert 0.09 < share < 0.12
    else:
        assert 0.85 < share < 0.93


def test_bad_algorithm() -> None:
    with pytest.raises(InputError):
        EbpfDatapath(B.BpfMaps(), algorithm="rr")


def test_bad_protocol() -> None:
    with pytest.raises(InputError, match="protocol"):
        EbpfDatapath(B.BpfMaps()).new_flow("8.8.8.8", 1, "1.1.1.1", 80, "ICMP")
