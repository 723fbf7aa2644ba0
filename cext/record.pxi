# record.pxi: the branch draws and trace records engines make (included by the engines
# and the pipeline). On the batch path ``st.rec`` is NULL: one predictable test per draw.
from libc.stdint cimport int32_t, uint32_t, uint64_t

from kproxy_emu._cext.pipeline cimport (pkt_state_t, recorder_t, step_t, MAX_DRAWS,
                                        STEP_POLICY,
                                        DRAW_STATISTIC, DRAW_NUMGEN)

include "rng.pxi"


cdef inline uint32_t record_draw(recorder_t* rec, uint32_t kind, uint32_t n, uint32_t threshold,
                                 uint32_t natural) noexcept nogil:
    """Note a branch point; when the trace forces draws, the outcome it forces (outcomes
    that cannot happen, e.g. a statistic match at probability 0, are never forced)."""
    cdef int32_t k = rec.ndraws
    cdef uint32_t chosen = natural
    if rec.nforced >= 0:
        if k < rec.nforced and k < MAX_DRAWS:
            chosen = <uint32_t>rec.forced[k]
        elif kind == DRAW_STATISTIC and threshold == 0:
            chosen = 1  # the statistic cannot match
        else:
            chosen = 0
    if k < MAX_DRAWS:
        rec.draws[k].kind = kind
        rec.draws[k].n = n
        rec.draws[k].threshold = threshold
        rec.draws[k].chosen = chosen
    rec.ndraws = k + 1
    return chosen


cdef inline bint draw_statistic(pkt_state_t* st, uint32_t prob) noexcept nogil:
    """xt_statistic --mode random: (get_random_u32() & 0x7FFFFFFF) < probability."""
    cdef bint hit = rand31(&st.rng) < prob
    if st.rec != NULL:
        hit = record_draw(st.rec, DRAW_STATISTIC, 2, prob, 0 if hit else 1) == 0
    return hit


cdef inline uint32_t draw_numgen(pkt_state_t* st, uint32_t modulus) noexcept nogil:
    """nft_ng_random_eval: reciprocal_scale(get_random_u32(), modulus)."""
    cdef uint32_t idx = <uint32_t>((<uint64_t>rand32(&st.rng) * modulus) >> 32)
    if st.rec != NULL:
        idx = record_draw(st.rec, DRAW_NUMGEN, modulus, 0, idx)
    return idx


cdef inline void count_lookup(pkt_state_t* st) noexcept nogil:
    st.lookups += 1


cdef inline void record_step(recorder_t* rec, uint8_t kind, int32_t index, bint matched,
                             uint16_t extra, int32_t value) noexcept nogil:
    cdef step_t* s
    if rec.nsteps < rec.cap:
        s = &rec.steps[rec.nsteps]
        s.kind = kind
        s.index = index
        s.matched = matched
        s.extra = extra
        s.value = value
    rec.nsteps += 1


cdef inline void record_policy(recorder_t* rec, int direction, int detail,
                               int32_t rule) noexcept nogil:
    """A NetworkPolicy decision (STEP_POLICY): direction 0 egress, 1 ingress; detail
    POL_OPEN / POL_ALLOWED / POL_DENIED; the allowing rule's number or -1. Always a
    matched step: the decision is on the packet's path, whichever it is."""
    record_step(rec, STEP_POLICY, direction, True, <uint16_t>detail, rule)
