"""The compiled userspace proxy hop (cext/userspace.pyx) against its Python twin
(dataplane/userspace_reference.py): on random clusters (TCP, UDP, SCTP; ClientIP affinity
with short and long TTLs), random batches (new and known flows, UDP clients inside and
past the idle timeout), endpoint updates between batches, picks from Python between
batches and traces, both give the same verdicts, endpoints, local ports, trace steps,
``last_portals``, ``proxy_stats`` and balancer state."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu.bench.sweep import _proxy_replies
from kproxy_emu.dataplane.backend import UserspaceOptions
from kproxy_emu.packets import PACKET_DTYPE, Origin


def _cluster(seed: int, ttl: int):
    cl = synth.cluster(
        12,
        seed=seed,
        endpoints="uniform:0-4",
        affinity_share=0.5,
        protocol_mix={"TCP": 0.6, "UDP": 0.35, "SCTP": 0.05},
    )
    services = {
        k: dataclasses.replace(s, affinity_timeout=ttl) if s.session_affinity == "ClientIP" else s
        for k, s in cl.services.items()
    }
    return dataclasses.replace(cl, services=services)


def _changed(cl, seed: int):
    """Some slices lose an endpoint, others reorder theirs (the same multiset)."""
    rng = np.random.default_rng(seed)
    slices = dict(cl.endpoint_slices)
    for key in list(slices):
        sl = slices[key]
        eps = list(sl.endpoints)
        r = rng.random()
        if r < 0.3 and len(eps) > 1:
            eps.pop(int(rng.integers(len(eps))))
        elif r < 0.6:
            eps.reverse()
        slices[key] = dataclasses.replace(sl, endpoints=eps)
    return dataclasses.replace(cl, endpoint_slices=slices)


def _batch(dp, rng, n: int, start: float, gaps) -> np.ndarray:
    targets = dp.packet_targets()
    b = np.zeros(n, PACKET_DTYPE)
    t = rng.integers(len(targets), size=n)
    b["dst_ip"] = targets["ip"][t]
    b["dst_port"] = targets["port"][t]
    b["proto"] = targets["proto"][t]
    b["src_ip"] = packets.ip_to_u32("10.244.1.0") + rng.integers(1, 4, size=n)
    b["src_port"] = rng.integers(4000, 4003, size=n)
    b["tcp_flags"] = np.where(b["proto"] == 6, rng.choice([2, 16], size=n), 0)
    b["origin"] = Origin.POD
    b["family"] = 4
    b["ts"] = start + np.cumsum(rng.choice(gaps, size=n))
    return b


def _balancer(dp):
    lb = dp.backend.proxier.load_balancer
    return [
        (name, lb.endpoints(name), lb.affinity(name), lb._services[_spn(name)].index)
        for name in lb.services()
    ] + [lb.last_affinity_hit]


def _spn(name):
    from kproxy_emu.modes.userspace import ServicePortName

    return ServicePortName.parse(name)


def _pair(cl, seed, timeout):
    opts = UserspaceOptions(udp_idle_timeout=timeout)
    kw = {"seed": seed, "cluster_cidr": "10.0.0.0/8"}
    fast, ref = Dataplane(cl, opts, **kw), Dataplane(cl, opts, **kw)
    ref.backend.use_reference()
    return fast, ref


def _same(fast, ref, out_fast, out_ref):
    assert out_fast.tobytes() == out_ref.tobytes()
    assert fast.endpoints == ref.endpoints
    assert fast.backend.proxy_stats == ref.backend.proxy_stats
    assert fast.backend.last_portals == ref.backend.last_portals
    assert fast.backend.hop_steps == ref.backend.hop_steps


@settings(max_examples=25, deadline=None)
@given(
    cluster_seed=st.integers(0, 10_000),
    seed=st.integers(0, 5),
    traffic_seed=st.integers(0, 10_000),
    ttl=st.sampled_from([1, 3, 10800]),
    timeout=st.sampled_from([0.25, 2.0]),
    plan=st.lists(st.sampled_from(["batch", "update", "pick", "trace", "reset"]), max_size=8),
)
def test_compiled_hop_equals_python_hop(cluster_seed, seed, traffic_seed, ttl, timeout, plan):
    cl = _cluster(cluster_seed, ttl)
    fast, ref = _pair(cl, seed, timeout)
    rng_f = np.random.default_rng(traffic_seed)
    rng_r = np.random.default_rng(traffic_seed)
    gaps = [0.0, 0.05, 0.3, 1.5, 4.0]
    now = 1.0
    for k, step in enumerate(["batch", *plan, "batch"]):
        if step == "batch":
            bf = _batch(fast, rng_f, 120, now, gaps)
            br = _batch(ref, rng_r, 120, now, gaps)
            assert bf.tobytes() == br.tobytes()
            now = float(bf["ts"][-1]) + 0.01
            of, orr = fast.process(bf), ref.process(br)
            _same(fast, ref, of, orr)
            # the endpoints answer the proxy, the proxy answers the clients
            alive = of["action"] <= packets.Action.DNAT
            for dp, b, o in ((fast, bf, of), (ref, br, orr)):
                portals = dp.backend.last_portals
                dp.process(packets.replies(b[alive], o[alive], start=now))
                dp.process(_proxy_replies(b, o, alive, portals, start=dp.clock + 0.001))
            assert fast.backend.proxy_stats == ref.backend.proxy_stats
            now = fast.clock + 0.01
        elif step == "update":
            cl = _changed(cl, traffic_seed + k)
            fast.update(cl)
            ref.update(cl)
        elif step == "pick":
            # a pick from Python between batches: the compiled state written back first,
            # loaded again after
            lb_f = fast.backend.proxier.load_balancer
            lb_r = ref.backend.proxier.load_balancer
            for name in lb_r.services():
                if lb_r.service_has_endpoints(name):
                    a = lb_f.next_endpoint(name, "10.244.1.2", now=now)
                    assert a == lb_r.next_endpoint(name, "10.244.1.2", now=now)
                    break
        elif step == "trace":
            b = _batch(fast, rng_f, 1, now, gaps)
            _batch(ref, rng_r, 1, now, gaps)
            text = packets.to_strings(b)[0]
            for commit in (False, True):
                tf = fast.trace(text, origin="pod", time=now, commit=commit)
                tr = ref.trace(text, origin="pod", time=now, commit=commit)
                assert tf == tr
        elif step == "reset":
            fast.reset_state()
            ref.reset_state()
            now = 1.0
        assert _balancer(fast) == _balancer(ref)
        assert fast.backend.proxy_stats == ref.backend.proxy_stats


def test_connect_ports_follow_python_random():
    """The compiled connect() ports are ``random.Random(f"{seed}/connect")``'s draws."""
    import random

    from kproxy_emu._cext.userspace import Proxy

    for seed in (0, 1, 7):
        py = random.Random(f"{seed}/connect")
        p = Proxy()
        _, state, _ = py.getstate()
        p.reset(list(state[:624]), state[624])
        words, pos = p.rng_state()
        assert (3, (*words, pos), None) == py.getstate()
