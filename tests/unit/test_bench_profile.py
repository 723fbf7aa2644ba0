"""bench --profile's stage counters (bench/profile.py, Engine.set_profile)."""

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu._cext import pipeline
from kproxy_emu.bench.profile import STAGES, profiled


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs", "ebpf", "userspace"])
def test_profiling_changes_no_verdict_and_accounts_for_the_loop(mode):
    cluster = synth.cluster(40, endpoints=3, seed=5)
    plain, counted = (Dataplane(cluster, mode, seed=2) for _ in range(2))
    batch = packets.synth(plain, 2000, seed=3)
    expected = plain.process(batch)
    got, prof = profiled(counted, batch)
    assert got.tobytes() == expected.tobytes()  # same verdicts, same random stream
    assert set(prof) == {*STAGES, "other", "total"}
    assert prof["total"] > 0 and all(prof[s] >= 0 for s in (*STAGES, "other"))
    # the counters are off again: a later batch goes through the plain path
    again = counted.process(packets.next_packets(batch, start=counted.clock + 1))
    assert (
        again.tobytes()
        == plain.process(packets.next_packets(batch, start=plain.clock + 1)).tobytes()
    )


def test_the_lookups_of_a_long_chain_dominate_an_iptables_new_flow():
    """A measurement that can fail: at 3,000 services an iptables new flow spends most of
    its time walking KUBE-SERVICES, an established one almost none there."""
    dp = Dataplane(synth.cluster(3000, endpoints=2, seed=1, type_mix={"ClusterIP": 1}), seed=1)
    batch = packets.synth(dp, 5000, seed=1, origin_mix={"pod": 1.0})
    v, new = profiled(dp, batch)
    ok = v["action"] == packets.Action.DNAT
    dp.process(packets.replies(batch[ok], v[ok], start=dp.clock + 0.001))
    # the least of three passes: a pass the machine preempted would not say much
    est_lookups = min(
        profiled(dp, packets.next_packets(batch[ok], start=dp.clock + 1))[1]["lookups"]
        for _ in range(3)
    )
    assert new["lookups"] > 0.5 * new["total"]
    assert est_lookups < new["lookups"] / 10


def test_set_profile_takes_only_a_counter_array():
    engine = pipeline.Engine(np.zeros(1, np.uint32), 0)
    with pytest.raises(ValueError, match="uint64"):
        engine.set_profile(np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="uint64"):
        engine.set_profile(np.zeros(pipeline.PROF_SLOTS, np.int64))
    engine.set_profile(np.zeros(pipeline.PROF_SLOTS, np.uint64))
    engine.set_profile(None)
    assert pipeline.tick_cost(100) >= 0 and pipeline.ticks() > 0
