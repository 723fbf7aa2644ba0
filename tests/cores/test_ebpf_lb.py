"""The compiled service lookup (kproxy_emu._cext.ebpflb.LbTable) against its pure-Python
twin (kproxy_emu.dataplane.ebpf_reference.EbpfDatapath) on random clusters and flows:
the same verdicts, backends, picks, affinity hits and lookup counts, flow by flow."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu.dataplane.ebpf_lowering import lower
from kproxy_emu.dataplane.ebpf_reference import EbpfDatapath
from kproxy_emu.modes.ebpf import compile_ebpf

from ..modes.test_ebpf_maps import _clusters, _nodeport, _view

VERDICTS = {"DNAT": 0, "NO_SERVICE": 1, "NO_BACKEND": 2}


class _Draws:
    """A random.Random stand-in handing out the value set for the current row."""

    value = 0

    def getrandbits(self, k: int) -> int:
        return self.value


def _run_both(maps, algorithm, m, flows, capacity):
    table = lower(maps, algorithm=algorithm, maglev_table_size=m, affinity_entries=capacity)
    draws = _Draws()
    ref = EbpfDatapath(
        maps, algorithm=algorithm, maglev_table_size=m, rng=draws, affinity_entries=capacity
    )
    n = len(flows)
    cols = {
        "client_ip": np.array([int(ipaddress.IPv4Address(f[0])) for f in flows], np.uint32),
        "client_port": np.array([f[1] for f in flows], np.uint16),
        "vip": np.array([int(ipaddress.IPv4Address(f[2])) for f in flows], np.uint32),
        "vport": np.array([f[3] for f in flows], np.uint16),
        "proto": np.array([f[4] for f in flows], np.uint8),
        "from_cluster": np.array([f[5] for f in flows], np.uint8),
        "now": np.array([f[6] for f in flows], np.float64),
        "draws": np.array([f[7] for f in flows], np.uint32),
    }
    out = {
        "verdict": np.empty(n, np.uint8),
        "backend": np.empty(n, np.uint32),
        "pick": np.empty(n, np.int32),
        "affinity_hit": np.empty(n, np.uint8),
        "lookups": np.empty(n, np.uint8),
    }
    table.new_flows(**cols, **out)
    for k, (src, sport, dst, dport, proto, inside, now, draw) in enumerate(flows):
        draws.value = draw
        r = ref.new_flow(src, sport, dst, dport, proto, from_cluster=bool(inside), now=now)
        got = (
            int(out["verdict"][k]),
            int(out["backend"][k]),
            int(out["pick"][k]),
            bool(out["affinity_hit"][k]),
            int(out["lookups"][k]),
        )
        want = (VERDICTS[r.verdict], r.backend_id, r.pick, r.affinity_hit, len(r.lookups))
        assert got == want, (k, flows[k], got, want, r.lookups)
    assert len(table) == len(ref.affinity)


def _flows(maps, rng: random.Random, n: int):
    fronts = [(k.address, k.port, k.proto) for k in maps.frontends()] or [("10.0.0.1", 80, 6)]
    out, now = [], 0.0
    for _ in range(n):
        addr, port, proto = rng.choice(fronts)
        if rng.random() < 0.1:
            port += 1  # no such frontend (mostly)
        now += rng.choice([0.0, 0.3, 0.8, 2.5])
        client = f"10.9.{rng.randrange(3)}.{rng.randrange(1, 5)}"
        out.append(
            (
                client,
                rng.randrange(1024, 1100),
                addr,
                port,
                proto,
                rng.random() < 0.4,
                now,
                rng.getrandbits(32),
            )
        )
    return out


@settings(max_examples=40, deadline=None)
@given(
    _clusters(),
    st.sampled_from(["random", "maglev"]),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 3, 1000]),
)
def test_compiled_equals_reference(objs, algorithm, seed, capacity) -> None:
    r = compile_ebpf(_view(objs), lb_algorithm=algorithm, maglev_table_size=251)
    flows = _flows(r.maps, random.Random(seed), 200)
    _run_both(r.maps, algorithm, 251, flows, capacity)


@pytest.mark.parametrize("algorithm", ["random", "maglev"])
def test_affinity_and_nodeport(algorithm) -> None:
    r = compile_ebpf(_view(_nodeport(True)), lb_algorithm=algorithm, maglev_table_size=1021)
    flows = _flows(r.maps, random.Random(5), 2000)
    _run_both(r.maps, algorithm, 1021, flows, 4)


def test_bad_tables() -> None:
    from kproxy_emu._cext.ebpflb import LbTable

    z32 = np.zeros(1, np.uint32)
    args = dict(
        fe_addr=z32,
        fe_port=np.zeros(1, np.uint16),
        fe_proto=np.zeros(1, np.uint8),
        fe_scope=np.zeros(1, np.uint8),
        fe_count=np.ones(1, np.uint32),
        fe_flags=z32,
        fe_rev_nat=z32,
        fe_timeout=z32,
        fe_first=np.zeros(1, np.int32),
        fe_lut=np.full(1, -1, np.int32),
        slot_be=np.zeros(0, np.uint32),
        luts=np.zeros((0, 251), np.uint32),
        be_ids=z32,
        match=np.zeros(0, np.uint64),
        m=251,
        jhash_seed=0,
    )
    with pytest.raises(ValueError, match="slots"):
        LbTable(**args)
    with pytest.raises(ValueError, match="same length"):
        LbTable(**(args | {"fe_port": np.zeros(2, np.uint16)}))
