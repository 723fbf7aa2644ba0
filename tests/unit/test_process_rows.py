"""Dataplane.process checks its rows before the pipeline, the same in every mode (issue 18
item 6): a NaN time made conntrack entries that never expire, a time going back moved
expiries back, and IPVS mode DNATed family-6 rows the other modes passed untranslated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets
from kproxy_emu.bench import sweep
from kproxy_emu.errors import InputError

MODES = ("iptables", "nftables", "ipvs", "userspace")


@pytest.fixture(scope="module")
def cluster():
    return sweep.make_cluster(20, 3, 5)


def _dp(cluster, mode):
    return Dataplane(cluster, mode, cluster_cidr="10.0.0.0/8", seed=1)


def _batch(dp, n=6):
    batch = sweep.traffic(dp, sweep.BenchSpec(services=[20], packets=n), 3)
    batch["ts"] = np.arange(n, dtype=float)
    return batch


def _error(dp, batch) -> str:
    with pytest.raises(InputError) as info:
        dp.process(batch)
    return str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_nan_and_infinite_times_are_refused_with_the_row(cluster, mode):
    dp = _dp(cluster, mode)
    batch = _batch(dp)
    batch["ts"][3] = math.nan
    assert _error(dp, batch) == "packets[3]: ts: timestamp must be finite: nan"
    batch["ts"][3] = math.inf
    assert _error(dp, batch) == "packets[3]: ts: timestamp must be finite: inf"
    # refused before the pipeline: no flow was opened, the clock did not move
    assert dp.conntrack is not None and len(dp.conntrack) == 0
    assert dp.clock == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_time_going_back_in_a_batch_or_across_calls_is_refused(cluster, mode):
    dp = _dp(cluster, mode)
    batch = _batch(dp)
    batch["ts"][4] = 1.5
    message = _error(dp, batch)
    assert message.startswith("packets[4]: ts: earlier than the row before (3)"), message
    assert message.endswith(": 1.5")
    batch["ts"][4] = 4.0
    dp.process(batch)
    assert dp.clock == 5.0
    message = _error(dp, batch)  # the same batch again: time 0 after time 5
    assert message.startswith("packets[0]: ts: before the node's clock 5 s"), message
    with pytest.raises(InputError, match=r"^time: before the node's clock 5 s"):
        dp.trace("tcp 10.0.0.9:4000 -> 10.0.0.1:80", time=1.0, commit=True)
    dp.trace("tcp 10.0.0.9:4000 -> 10.0.0.1:80", time=1.0)  # a question: any time
    assert dp.clock == 5.0
    dp.trace("tcp 10.0.0.9:4000 -> 10.0.0.1:80", time=7.0, commit=True)
    assert dp.clock == 7.0
    dp.reset_state()  # a node just booted: time starts again
    dp.process(batch)


@pytest.mark.parametrize("mode", MODES)
def test_family_6_and_unknown_origins_are_refused_in_every_mode(cluster, mode):
    dp = _dp(cluster, mode)
    batch = _batch(dp)
    batch["family"][2] = 6
    assert _error(dp, batch) == (
        "packets[2]: family: must be 4: the IPv6 dataplane is not emulated: 6"
    )
    batch["family"][2] = 4
    batch["origin"][5] = 7
    assert _error(dp, batch) == (
        "packets[5]: origin: must be 0 (pod), 1 (external), 2 (host) or 255 (auto): 7"
    )
    batch["origin"][5] = packets.Origin.AUTO
    assert len(dp.process(batch)) == len(batch)


def test_trace_time_must_be_a_finite_number(cluster):
    dp = _dp(cluster, "iptables")
    with pytest.raises(InputError, match=r"^time: must be finite: nan"):
        dp.trace("tcp 10.0.0.9:4000 -> 10.0.0.1:80", time=math.nan)
    with pytest.raises(InputError, match=r"^time: must be a number of seconds"):
        dp.trace("tcp 10.0.0.9:4000 -> 10.0.0.1:80", time="1")  # type: ignore[arg-type]
