"""The one packet pipeline and its engine objects: typed arguments (a wrong one is a
Python error, never a crash), snapshots, the recorder, and the batch path's determinism."""

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu._cext import chains, nftmaps, pipeline, vstable
from kproxy_emu._cext.conntrack import ConntrackTable
from kproxy_emu.model.config import KubeProxyConfig

CIDR = "10.0.0.0/8"


def _cluster(affinity=0.0):
    return synth.cluster(
        3,
        endpoints=3,
        seed=2,
        type_mix={"ClusterIP": 1},
        ports_per_service=(1.0,),
        protocol_mix={"TCP": 1},
        affinity_share=affinity,
        terminating_share=0,
        not_ready_share=0,
    )


@pytest.fixture(scope="module")
def dp():
    return Dataplane(_cluster(), cluster_cidr=CIDR, seed=3)


def _batch(dp, n=50):
    return packets.synth(dp.packet_targets(), n, seed=1, new_flow_share=1.0)


def _chain_args(dp):
    low = dp.backend.lowered
    return [low.rules, low.hot, low.chains, low.hooks, np.zeros(0, np.uint32), 0]


def test_run_rejects_wrong_arguments(dp):
    batch, out = _batch(dp), packets.empty_verdicts(50)
    engine = dp.backend.engine()
    with pytest.raises(TypeError):
        pipeline.run(object(), batch, out)
    with pytest.raises(TypeError):
        pipeline.run(None, batch, out)
    with pytest.raises(TypeError):
        pipeline.run(engine, batch, out, conntrack=12345)  # an address is not a table
    with pytest.raises(TypeError):
        pipeline.run(engine, batch, out, rng=7)
    with pytest.raises(TypeError):
        pipeline.run(engine, batch, out, recorder="steps")
    with pytest.raises(ValueError):
        pipeline.run(engine, np.zeros(5, np.float64), out)
    with pytest.raises(ValueError):
        pipeline.run(engine, batch, packets.empty_verdicts(3))
    with pytest.raises(TypeError):
        pipeline.run(pipeline.Engine(np.zeros(0, np.uint32), 0), batch, out)


def test_chain_engine_checks_its_arrays(dp):
    args = _chain_args(dp)
    chains.ChainEngine(*args)
    with pytest.raises(TypeError):
        chains.ChainEngine(args[0].tolist(), *args[1:])
    with pytest.raises(ValueError):
        chains.ChainEngine(args[0][:-1], *args[1:])  # hot and rules differ
    with pytest.raises(ValueError):
        chains.ChainEngine(args[1], *args[1:])  # not rule rows
    with pytest.raises(ValueError):
        chains.ChainEngine(*args[:3], args[3][:4], *args[4:])
    hooks = args[3].copy()
    hooks[0] = len(args[2]) + 5
    with pytest.raises(ValueError, match="chain index"):
        chains.ChainEngine(*args[:3], hooks, *args[4:])
    rules = args[0].copy()
    jumps = np.flatnonzero(rules["target_kind"] == 5)
    rules["target_chain"][jumps[0]] = len(args[2])
    with pytest.raises(ValueError, match="jump"):
        chains.ChainEngine(rules, *args[1:])
    rules = args[0].copy()
    rules["set_id"][0] = 0
    with pytest.raises(ValueError, match="-m set"):
        chains.ChainEngine(rules, *args[1:])
    with pytest.raises(TypeError):
        chains.ChainEngine(*args, sets=["KUBE-LOOP-BACK"])
    with pytest.raises(TypeError):
        chains.ChainEngine(*args, ipvs=object())
    with pytest.raises(TypeError):
        chains.ChainEngine(*args, nth_counters=np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        chains.ChainEngine(
            *args, recent=(np.zeros(10, np.uint32), np.zeros(10), np.zeros(3, np.uint32))
        )


def test_nft_engine_checks_its_arrays():
    dp = Dataplane(_cluster(), mode="nftables", cluster_cidr=CIDR)
    arrays = list(dp.backend.lowered.engine_arrays())
    with pytest.raises(TypeError):
        nftmaps.NftEngine(*arrays[:6], None, np.zeros(0, np.uint32), 0)
    with pytest.raises(ValueError):
        nftmaps.NftEngine(arrays[1], *arrays[1:], np.zeros(0, np.uint32), 0)
    with pytest.raises(TypeError):
        nftmaps.NftEngine(*arrays, np.zeros(0, np.uint32), 0, dyn=(1, 2))


def test_engine_run_equals_dataplane_process(dp):
    """pipeline.run over the backend's engine is what Dataplane.process runs."""
    batch = _batch(dp, 300)
    a = Dataplane(_cluster(), cluster_cidr=CIDR, seed=3)
    b = Dataplane(_cluster(), cluster_cidr=CIDR, seed=3)
    want = a.process(batch)
    out = packets.empty_verdicts(len(batch))
    pipeline.run(b.backend.engine(), batch, out, b.conntrack, b.rng)
    assert out.tobytes() == want.tobytes() and a.rng.state == b.rng.state


def test_recorder_does_not_change_the_batch_path(dp):
    """With or without a recorder: the same verdicts, state and stream."""
    batch = _batch(dp, 200)
    results = []
    for rec in (None, pipeline.Recorder(capacity=8)):
        d = Dataplane(_cluster(affinity=1.0), cluster_cidr=CIDR, seed=9)
        out = packets.empty_verdicts(len(batch))
        pipeline.run(d.backend.engine(), batch, out, d.conntrack, d.rng, rec)
        results.append((out.tobytes(), d.rng.state, d.conntrack.entries().tobytes()))
        if rec is not None:
            assert rec.steps_taken > 8 and len(rec.steps) == 8  # stored up to capacity
    assert results[0] == results[1]


def test_recorder_forcing():
    rec = pipeline.Recorder()
    with pytest.raises(ValueError):
        rec.force([-1])
    with pytest.raises(ValueError):
        rec.force([0] * 5000)
    with pytest.raises(ValueError):
        pipeline.Recorder(capacity=0)
    rec.force([1, 0])
    rec.force(None)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_engine_snapshot_restore(mode):
    """An engine's snapshot gives back its per-rule state (affinity lists or sets, nth
    counters, the IPVS table) exactly, and refuses another engine's."""
    d = Dataplane(_cluster(affinity=1.0), mode=mode, cluster_cidr=CIDR, seed=2)
    engine = d.backend.engine()
    snap = engine.snapshot()
    before = [np.copy(a) for a in _state_arrays(engine)]
    batch = _batch(d, 100)
    d.process(batch)
    changed = _state_arrays(engine)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(before, changed))
    engine.restore(snap)
    assert all(np.array_equal(x, y) for x, y in zip(before, _state_arrays(engine)))
    other = Dataplane(_cluster(), mode=mode, cluster_cidr=CIDR).backend.engine()
    with pytest.raises(ValueError):
        other.restore(snap)


def _state_arrays(engine):
    if isinstance(engine, nftmaps.NftEngine):
        return list(engine.dyn_tables or ())
    arrays = [engine.nth_counters, *(engine.recent or ())]
    if engine.ipvs is not None:
        arrays.append(engine.ipvs.connections())
        arrays.append(engine.ipvs.dest_stats())
    return arrays


def test_no_raw_addresses_in_the_public_api():
    for obj in (ConntrackTable(4, 1), vstable.IPSet("s", "hash:ip", ["10.0.0.1"])):
        assert not [n for n in dir(obj) if "address" in n]
    assert not hasattr(vstable.VirtualServerTable, "table_address")
    assert not hasattr(chains, "process") and not hasattr(nftmaps, "process")


def test_conntrack_full_config_gives_a_one_entry_table():
    cfg = KubeProxyConfig()
    cfg.conntrack.min, cfg.conntrack.max_per_core = 1, 1
    d = Dataplane(_cluster(), cluster_cidr=CIDR, config=cfg, cpus=1)
    assert d.conntrack.max_entries == 1


@pytest.mark.parametrize(
    ("max_per_core", "minimum", "cpus", "expected"),
    [
        (32768, 131072, None, 131072),  # kube-proxy's defaults on the default 4-CPU node
        (32768, 131072, 8, 262144),  # scaled: maxPerCore x CPUs above the floor
        (32768, 131072, 2, 131072),  # the floor
        (1000, 0, 3, 3000),
        (0, 131072, 8, 262144),  # maxPerCore 0: kube-proxy leaves the kernel's default
    ],
)
def test_conntrack_is_sized_as_kube_proxy_sizes_it(max_per_core, minimum, cpus, expected):
    """getConntrackMax (cmd/kube-proxy/app/conntrack.go): max(maxPerCore x CPUs, min)
    when maxPerCore > 0, else nf_conntrack_max untouched; the CPUs are the node's."""
    cfg = KubeProxyConfig()
    cfg.conntrack.min, cfg.conntrack.max_per_core = minimum, max_per_core
    d = Dataplane(_cluster(), cluster_cidr=CIDR, config=cfg, cpus=cpus)
    assert d.conntrack.max_entries == expected
    d.reset_state()
    assert d.conntrack.max_entries == expected
