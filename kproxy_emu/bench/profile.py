"""Where a mode's time goes per packet (``kproxy-emu bench --profile``).

A profiled batch runs through the same pipeline with the engine's stage counters on
(``Engine.set_profile``, cext/pipeline.pyx): the pipeline reads the CPU's time-stamp
counter between its stages and adds up the ticks of

- ``conntrack``: the conntrack lookup, a known flow's stored translation, a new entry;
- ``lookups``: the mode's hooks (iptables rules, nftables maps, IPVS tables, eBPF maps);
- ``policy``: the NetworkPolicy stage (0 without one);
- ``nat``: the SNAT port choice and the conntrack confirm (the NAT binding);
- ``verdict``: writing the verdict row;
- ``other``: the rest of the loop (prefetching, the per-packet set-up, the calls).

The counter is read with ``rdtscp``, which waits for the instructions before it, so a
stage's cache misses are charged to that stage. Ticks become nanoseconds by the counter's
rate, measured against ``time.perf_counter``. The cost of a read (measured back to back)
is taken off each stage and off the total (six reads a packet); what the reads still
disturb (the pipeline's overlap of one packet's misses with the next one's work) makes a
profiled total somewhat above the plain run's ns per packet, reported beside it.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np

STAGES = ("conntrack", "lookups", "policy", "nat", "verdict")


@lru_cache(maxsize=1)
def tick_ns() -> float:
    """Nanoseconds per tick of the profile clock (20 ms against perf_counter)."""
    from .._cext import pipeline

    t0, k0 = time.perf_counter(), pipeline.ticks()
    while time.perf_counter() - t0 < 0.02:
        pass
    t1, k1 = time.perf_counter(), pipeline.ticks()
    return (t1 - t0) * 1e9 / max(k1 - k0, 1)


@lru_cache(maxsize=1)
def read_cost_ticks() -> float:
    """Ticks one counter read adds to the stage it ends (the median of back-to-back
    reads)."""
    from .._cext import pipeline

    return float(pipeline.tick_cost(20_000))


def profiled(dp: Any, packets: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """``dp.process(packets)`` with the stage counters on: the verdicts and
    {stage: ns per packet} for STAGES, ``other`` and ``total`` (the profiled loop)."""
    from .._cext import pipeline

    counters = np.zeros(pipeline.PROF_SLOTS, np.uint64)
    engines = []

    def watch(engine: Any) -> Any:
        if engine not in engines:
            engine.set_profile(counters)
            engines.append(engine)
        return engine

    # the backend asks for its engine when it runs the batch (a sync may have built a new
    # one): counters go on whichever it gets, for this call only
    backend = dp.backend
    real_engine = backend.engine
    backend.engine = lambda: watch(real_engine())
    try:
        dp.prepare()
        verdicts = dp.process(packets)
    finally:
        backend.engine = real_engine
        for engine in engines:
            engine.set_profile(None)
    # per packet of the batch: userspace runs two pipeline passes a batch (the clients'
    # packets, then the proxy's own connections), both counted, its compiled proxy hop
    # between them not (bench prints the plain ns/pkt beside the total)
    n = len(packets)
    if n == 0 or int(counters[pipeline.PROF_PACKETS]) == 0:
        return verdicts, {s: 0.0 for s in (*STAGES, "other", "total")}
    per = tick_ns() / n
    read = read_cost_ticks()
    passed = int(counters[pipeline.PROF_PACKETS])  # rows through the pipeline: reads made
    slots = (
        pipeline.PROF_CONNTRACK,
        pipeline.PROF_HOOKS,
        pipeline.PROF_POLICY,
        pipeline.PROF_NAT,
        pipeline.PROF_VERDICT,
    )
    out = {s: max(float(counters[k]) - read * passed, 0.0) * per for s, k in zip(STAGES, slots)}
    # the loop's total holds every read: the first of each packet and one per stage
    reads = len(STAGES) + 1
    total = max(float(counters[pipeline.PROF_TOTAL]) - read * reads * passed, 0.0) * per
    out["other"] = max(total - sum(out.values()), 0.0)
    # the stages' read costs are estimates: should they overshoot, the total is at least
    # what the stages add up to (so the shares never exceed 100%)
    out["total"] = max(total, sum(out.values()))
    return verdicts, {k: round(v, 2) for k, v in out.items()}
