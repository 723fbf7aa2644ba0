# cython: language_level=3
"""iptables-style linear chain VM: the node's hooks evaluated rule by rule over packed arrays.

Rules are rows of ``rule_t`` (lowered by kproxy_emu/dataplane/lowering.py), chains are
ranges of rows, jumps are chain indices. ``ChainEngine`` runs the chains a hook owns the way
``ipt_do_table`` walks a table: every rule's matches in turn, ``-j`` pushes a return point,
``-g`` does not, RETURN pops, the end of a built-in chain applies its policy. The statistic
match compares a 31-bit draw with the probability scaled to 2^31, as xt_statistic does.
The engine also owns the rules' state (xt_recent lists, statistic nth counters), the
ipsets ``-m set`` reads, and in IPVS mode the IPVS table: ip_vs_in at LOCAL_IN (after
filter INPUT) and LOCAL_OUT (after nat OUTPUT), ip_vs_out for replies. Conntrack, NAT
ports and verdicts are the pipeline's (pipeline.pyx): ``pipeline.run(engine, ...)``.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

from ipset_core cimport *
from ipvs_core cimport *
from packet cimport packet_t, verdict_t, ORIGIN_HOST
from kproxy_emu._cext.pipeline cimport (
    Engine, PolicyStage, pkt_state_t, HOOK_PREROUTING, HOOK_INPUT, HOOK_FORWARD, HOOK_OUTPUT,
    HOOK_POSTROUTING, HV_CONTINUE, HV_SENT_ON, STEP_RULE, STEP_IPVS_IN, STEP_IPVS_OUT,
    STEP_POLICY_RULE, POL_OPEN, POL_ALLOWED, POL_DENIED, POLICY_PASS, POLICY_EGRESS_DENIED,
    POLICY_INGRESS_DENIED)

include "packet.pxi"
include "record.pxi"
include "vstable.pxi"

cdef enum:
    # rule_t.target_kind
    T_NONE = 0
    T_ACCEPT = 1
    T_DROP = 2
    T_REJECT = 3
    T_RETURN = 4
    T_JUMP = 5
    T_GOTO = 6
    T_DNAT = 7
    T_MASQUERADE = 8
    T_SNAT = 9
    T_MARK = 10
    # rule_t.flags
    F_SRC_NEG = 1
    F_DST_NEG = 2
    F_PROTO_NEG = 4
    F_DPORT = 8
    F_DPORT_NEG = 16
    F_SPORT = 32
    F_SPORT_NEG = 64
    F_MARK = 128
    F_MARK_NEG = 256
    F_CT = 512
    F_CT_NEG = 1024
    F_NEVER = 2048
    F_STAT_NEG = 4096
    F_MPORT_NEG = 8192
    F_NTH = 16384
    F_RANDOM_FULLY = 32768
    F_COLD = 65536          # the rule has matches beyond its hot_t row
    F_SET_NEG = 131072      # ! --match-set
    F_RARE = 262144         # (hot_t flags only) a cold match beyond ports, mark, ctstate
    # -m ipvs words (4 per match): vaddr, vaddr mask, vproto << 16 | vport, IM_* bits
    IM_VADDR = 1
    IM_VADDR_NEG = 2
    IM_VPORT = 4
    IM_VPORT_NEG = 8
    IM_VPROTO = 16
    IM_VPROTO_NEG = 32
    IM_IPVS = 64            # --ipvs: the packet went through IPVS
    IM_IPVS_NEG = 128
    # rule_t.mport_kind (-m multiport)
    MP_DPORTS = 1
    MP_SPORTS = 2
    MP_PORTS = 3
    # addrtype
    A_ANY = 0
    A_LOCAL = 1
    A_NOT_LOCAL = 2
    # ctstate bits (xt_conntrack XT_CONNTRACK_STATE_*, as conntrack_core reports them)
    CT_NEW = 8
    CT_DNAT = 1024
    # recent ops
    R_SET = 1
    R_RCHECK = 2
    R_UPDATE = 3
    # hook verdicts
    V_CONTINUE = 0
    V_ACCEPT = 1
    V_DROP = 2
    V_REJECT = 3
    V_DNAT = 4
    V_SNAT = 5
    MAX_DEPTH = 64
    NO_STATISTIC = 0xFFFFFFFF

ctypedef struct rule_t:
    int32_t chain
    uint32_t src
    uint32_t src_mask
    uint32_t dst
    uint32_t dst_mask
    uint32_t flags
    uint8_t proto
    uint8_t src_type
    uint8_t dst_type
    uint8_t in_origins
    uint16_t dport_lo
    uint16_t dport_hi
    uint16_t sport_lo
    uint16_t sport_hi
    uint32_t mark_value
    uint32_t mark_mask
    uint32_t ctstate
    uint32_t prob
    uint8_t target_kind
    uint8_t _pad0
    uint16_t to_port
    int32_t target_chain
    uint32_t to_ip
    uint32_t mark_and
    uint32_t mark_xor
    int32_t endpoint
    int32_t recent_list     # -1: no -m recent
    uint32_t recent_seconds  # 0: no --seconds limit
    uint8_t recent_op       # R_SET / R_RCHECK / R_UPDATE
    uint8_t recent_rdest    # 1: --rdest (key on the destination address)
    uint8_t recent_reap     # 1: --reap (drop the list's oldest entry when it is stale)
    uint8_t _pad1
    int32_t mport_off       # -m multiport: first (lo, hi) pair in port_ranges
    uint8_t mport_n         # number of pairs (at most 15, as xt_multiport)
    uint8_t mport_kind      # MP_DPORTS / MP_SPORTS / MP_PORTS; 0: no multiport
    uint16_t _pad2
    uint32_t nth_every      # -m statistic --mode nth: every - 1 (as libxt_statistic stores it)
    int32_t nth_slot        # this rule's counter in nth_counters
    int32_t set_id          # -m set: the set's index in the sets array; -1: no -m set
    uint32_t set_dirs       # --match-set's directions, bit i = dimension i from dst
    int32_t ipvs_match      # -m ipvs: first of its 4 words in ipvs_words; -1: none

ctypedef struct hot_t:
    # the matches almost every rule has, packed apart from rule_t so a walk down a long
    # chain streams 24 bytes per rule instead of 104 (KUBE-SERVICES at 10k services: ~190 KB)
    uint32_t src
    uint32_t src_mask
    uint32_t dst
    uint32_t dst_mask
    uint32_t flags
    uint8_t proto
    uint8_t in_origins
    uint16_t _pad

ctypedef struct recent_t:
    # xt_recent's address lists: list L holds up to cap addresses (ip_list_tot) in
    # addrs/stamps[L * cap .. L * cap + counts[L]); a stamp is the last --set/--update
    # time, so the smallest stamp is the kernel's LRU head
    uint32_t* addrs
    double* stamps
    uint32_t* counts
    uint32_t cap
    double now

ctypedef struct env_t:
    # what the rules read besides the packet, owned by the ChainEngine
    const rule_t* rules
    const hot_t* hot
    const chain_t* chains
    recent_t* recent                # NULL: -m recent checks never match
    const uint16_t* port_ranges
    uint32_t* nth_counters
    uint32_t masquerade_ip
    const ipset_t** sets            # -m set, by rule_t.set_id
    const uint32_t* ipvs_words      # -m ipvs matches
    const uint32_t* local_ips       # the node's addresses (Engine.local_ips)
    Py_ssize_t n_local
    const ipset_t* local_set        # kube-ipvs0's addresses, or NULL


ctypedef struct chain_t:
    int32_t start
    int32_t end
    uint8_t policy      # V_CONTINUE for user chains, V_ACCEPT / V_DROP for built-ins
    uint8_t builtin
    uint16_t _pad


def layout():
    """sizeof/offsetof of rule_t and chain_t, to check the numpy dtypes against."""
    cdef rule_t r
    cdef chain_t c
    cdef hot_t h
    base = <size_t>&r
    cbase = <size_t>&c
    return {
        "rule_t": {"itemsize": sizeof(rule_t), "fields": {
            "chain": <size_t>&r.chain - base, "flags": <size_t>&r.flags - base,
            "proto": <size_t>&r.proto - base, "dport_lo": <size_t>&r.dport_lo - base,
            "mark_value": <size_t>&r.mark_value - base, "prob": <size_t>&r.prob - base,
            "target_kind": <size_t>&r.target_kind - base, "to_port": <size_t>&r.to_port - base,
            "target_chain": <size_t>&r.target_chain - base, "to_ip": <size_t>&r.to_ip - base,
            "endpoint": <size_t>&r.endpoint - base,
            "recent_list": <size_t>&r.recent_list - base,
            "recent_seconds": <size_t>&r.recent_seconds - base,
            "recent_op": <size_t>&r.recent_op - base,
            "mport_off": <size_t>&r.mport_off - base, "mport_n": <size_t>&r.mport_n - base,
            "nth_every": <size_t>&r.nth_every - base, "nth_slot": <size_t>&r.nth_slot - base,
            "set_id": <size_t>&r.set_id - base, "set_dirs": <size_t>&r.set_dirs - base,
            "ipvs_match": <size_t>&r.ipvs_match - base}},
        "hot_t": {"itemsize": sizeof(hot_t), "fields": {
            "src": <size_t>&h.src - <size_t>&h, "dst": <size_t>&h.dst - <size_t>&h,
            "flags": <size_t>&h.flags - <size_t>&h, "proto": <size_t>&h.proto - <size_t>&h,
            "in_origins": <size_t>&h.in_origins - <size_t>&h}},
        "chain_t": {"itemsize": sizeof(chain_t), "fields": {
            "start": <size_t>&c.start - cbase, "end": <size_t>&c.end - cbase,
            "policy": <size_t>&c.policy - cbase, "builtin": <size_t>&c.builtin - cbase}},
    }


cdef inline bint set_match(const rule_t* r, pkt_state_t* st, const env_t* env) noexcept nogil:
    """xt_set: the packet as it stands (after any DNAT so far) tested against the set."""
    cdef packet_t q
    count_lookup(st)
    q.ts = 0
    q.src_ip = st.src
    q.dst_ip = st.dst
    q.src_port = st.sport
    q.dst_port = st.dport
    q.proto = st.proto
    q.tcp_flags = 0
    q.origin = 0
    q.family = 4
    return ipset_member(env.sets[r.set_id], &q, r.set_dirs, &st.probes)


cdef inline bint ipvs_match(const rule_t* r, const pkt_state_t* st, const env_t* env) noexcept nogil:
    """xt_ipvs: --ipvs tests skb->ipvs_property; every other option needs it and compares
    the IPVS connection's virtual service (its protocol, address under the mask, port)."""
    cdef const uint32_t* w = env.ipvs_words + r.ipvs_match
    cdef uint32_t bits = w[3]
    if bits & IM_IPVS and (st.ipvs_prop != 0) == ((bits & IM_IPVS_NEG) != 0):
        return False
    if bits & (IM_VADDR | IM_VPORT | IM_VPROTO):
        if not st.ipvs_prop:
            return False
        if bits & IM_VPROTO and (st.ipvs_vproto == (w[2] >> 16)) == ((bits & IM_VPROTO_NEG) != 0):
            return False
        if bits & IM_VADDR and ((st.ipvs_vaddr & w[1]) == w[0]) == ((bits & IM_VADDR_NEG) != 0):
            return False
        if bits & IM_VPORT and (st.ipvs_vport == (w[2] & 0xFFFF)) == ((bits & IM_VPORT_NEG) != 0):
            return False
    return True


cdef inline bint multiport_match(const rule_t* r, const pkt_state_t* st,
                                 const env_t* env) noexcept nogil:
    """xt_multiport: any listed port or range holds the packet's port (--ports: either)."""
    cdef const uint16_t* pr = env.port_ranges + 2 * r.mport_off
    cdef int k
    for k in range(r.mport_n):
        if r.mport_kind != MP_SPORTS and pr[2 * k] <= st.dport <= pr[2 * k + 1]:
            return True
        if r.mport_kind != MP_DPORTS and pr[2 * k] <= st.sport <= pr[2 * k + 1]:
            return True
    return False


cdef inline bint nth_match(const rule_t* r, const env_t* env) noexcept nogil:
    """xt_statistic --mode nth: the rule's counter steps 0..every-1 and matches on wrap."""
    cdef uint32_t* count = &env.nth_counters[r.nth_slot]
    count[0] = 0 if count[0] == r.nth_every else count[0] + 1
    return count[0] == 0


cdef inline Py_ssize_t recent_find(const recent_t* rt, Py_ssize_t base, uint32_t n,
                                   uint32_t addr) noexcept nogil:
    cdef uint32_t k
    for k in range(n):
        if rt.addrs[base + k] == addr:
            return base + k
    return -1


cdef inline Py_ssize_t recent_oldest(const recent_t* rt, Py_ssize_t base,
                                     uint32_t n) noexcept nogil:
    cdef Py_ssize_t k, best = base
    for k in range(base + 1, base + n):
        if rt.stamps[k] < rt.stamps[best]:
            best = k
    return best


cdef inline void recent_remove(recent_t* rt, int32_t lst, Py_ssize_t slot) noexcept nogil:
    cdef Py_ssize_t last = <Py_ssize_t>lst * rt.cap + rt.counts[lst] - 1
    rt.addrs[slot] = rt.addrs[last]
    rt.stamps[slot] = rt.stamps[last]
    rt.counts[lst] -= 1


cdef inline bint recent_match(const rule_t* r, pkt_state_t* st, recent_t* rt) noexcept nogil:
    """xt_recent (recent_mt): --set records the address (evicting the list's least
    recently seen one when the list holds ip_list_tot) and matches; --rcheck/--update
    match when the address is listed and, with --seconds, was seen at or after
    now - seconds; a matching --update refreshes it; --reap then drops the list's oldest
    entry (not this one) if it is stale."""
    cdef uint32_t addr = st.dst if r.recent_rdest else st.src
    cdef int32_t lst = r.recent_list
    cdef Py_ssize_t base = <Py_ssize_t>lst * rt.cap
    cdef Py_ssize_t slot = recent_find(rt, base, rt.counts[lst], addr)
    cdef Py_ssize_t old
    cdef bint ok
    if r.recent_op == R_SET:
        if slot < 0:
            if rt.counts[lst] >= rt.cap:
                recent_remove(rt, lst, recent_oldest(rt, base, rt.counts[lst]))
            slot = base + rt.counts[lst]
            rt.counts[lst] += 1
            rt.addrs[slot] = addr
        rt.stamps[slot] = rt.now
        return True
    if slot < 0:
        return False
    ok = not r.recent_seconds or rt.stamps[slot] >= rt.now - r.recent_seconds
    if r.recent_seconds and r.recent_reap:
        old = recent_oldest(rt, base, rt.counts[lst])
        if old != slot and rt.stamps[old] < rt.now - r.recent_seconds:
            if rt.counts[lst] - 1 == <uint32_t>(slot - base):
                slot = old  # the last entry (this one) moves into the hole
            recent_remove(rt, lst, old)
    if ok and r.recent_op == R_UPDATE:
        rt.stamps[slot] = rt.now
    return ok


cdef inline int32_t first_hot_match(const hot_t* hot, int32_t i, int32_t end, uint32_t src,
                                    uint32_t dst, uint8_t proto,
                                    uint8_t origin_bit) noexcept nogil:
    """The first rule in [i, end) whose hot matches hold (end: none). The packet's fields
    are arguments, not loads through a pointer, so this loop runs from registers: it is
    where a long chain's time goes."""
    cdef const hot_t* h
    cdef uint32_t f
    while i < end:
        h = &hot[i]
        f = h.flags
        if (((dst & h.dst_mask) == h.dst) != ((f & F_DST_NEG) != 0)
                and ((src & h.src_mask) == h.src) != ((f & F_SRC_NEG) != 0)
                and (h.proto == 0 or (proto == h.proto) != ((f & F_PROTO_NEG) != 0))
                and (h.in_origins & origin_bit) != 0
                and not (f & F_NEVER)):
            return i
        i += 1
    return end


cdef inline bint env_is_local(const env_t* env, uint32_t ip) noexcept nogil:
    """The local routing table: loopback, the node's addresses, then (IPVS mode) the
    addresses bound to kube-ipvs0, a hash set since there is one per ClusterIP."""
    cdef Py_ssize_t k
    if (ip >> 24) == 127:
        return True
    for k in range(env.n_local):
        if env.local_ips[k] == ip:
            return True
    if env.local_set != NULL:
        return ipset_has_ip(env.local_set, ip)
    return False


cdef inline bint cold_matches(const rule_t* r, pkt_state_t* st, const env_t* env,
                              uint32_t hot_flags) noexcept nogil:
    """The rest of a rule's matches, in iptables-save order of cost: ports, mark,
    conntrack, multiport, addrtype, then the stateful ones (recent, statistic) last."""
    cdef uint32_t f = r.flags
    cdef bint ok
    if f & F_DPORT:
        ok = r.dport_lo <= st.dport <= r.dport_hi
        if ok == ((f & F_DPORT_NEG) != 0):
            return False
    if f & F_SPORT:
        ok = r.sport_lo <= st.sport <= r.sport_hi
        if ok == ((f & F_SPORT_NEG) != 0):
            return False
    if f & F_MARK:
        ok = (st.mark & r.mark_mask) == r.mark_value
        if ok == ((f & F_MARK_NEG) != 0):
            return False
    if f & F_CT:
        ok = (st.ctstate & r.ctstate) != 0
        if ok == ((f & F_CT_NEG) != 0):
            return False
    # the rest, rarer and larger, out of line (this part inlines into the chain walk)
    return not (hot_flags & F_RARE) or rare_matches(r, st, env)


cdef bint rare_matches(const rule_t* r, pkt_state_t* st, const env_t* env) noexcept nogil:
    """cold_matches' second half: multiport, addrtype, set, ipvs, then the stateful ones."""
    cdef uint32_t f = r.flags
    cdef bint ok
    if r.mport_kind:
        if multiport_match(r, st, env) == ((f & F_MPORT_NEG) != 0):
            return False
    if r.src_type != A_ANY:
        if env_is_local(env, st.src) != (r.src_type == A_LOCAL):
            return False
    if r.dst_type != A_ANY:
        if env_is_local(env, st.dst) != (r.dst_type == A_LOCAL):
            return False
    if r.set_id >= 0:
        if set_match(r, st, env) == ((f & F_SET_NEG) != 0):
            return False
    if r.ipvs_match >= 0:
        if not ipvs_match(r, st, env):
            return False
    if r.recent_list >= 0 and env.recent != NULL:
        env.recent.now = st.now
        if not recent_match(r, st, env.recent):
            return False
    if r.prob != NO_STATISTIC:
        ok = draw_statistic(st, r.prob)
        if ok == ((f & F_STAT_NEG) != 0):
            return False
    if f & F_NTH:
        if nth_match(r, env) == ((f & F_STAT_NEG) != 0):
            return False
    return True


cdef int run_chain(int32_t chain, pkt_state_t* st, const env_t* env) noexcept nogil:
    """Evaluate one hook's chain; V_CONTINUE means the packet went on (policy ACCEPT)."""
    if chain < 0:
        return V_CONTINUE
    if st.rec == NULL:
        return walk_chain(chain, st, env, <batch_walk*>NULL)  # the batch path
    return walk_chain(chain, st, env, <traced_walk*>NULL)


# walk_chain is compiled twice (a fused type picks the copy at compile time), so the batch
# path carries no recorder tests
ctypedef struct batch_walk:
    char unused
ctypedef struct traced_walk:
    char unused
ctypedef fused walk_kind:
    batch_walk
    traced_walk


cdef int walk_chain(int32_t chain, pkt_state_t* st, const env_t* env,
                    walk_kind* kind_tag) noexcept nogil:
    """run_chain's loop."""
    cdef int32_t stack_chain[MAX_DEPTH]
    cdef int32_t stack_pos[MAX_DEPTH]
    cdef int depth = 0
    cdef int32_t cur = chain
    cdef int32_t i, j, end
    cdef const rule_t* r
    # the tables in locals: stores through st cannot make the compiler reload them
    cdef const chain_t* chains = env.chains
    cdef const hot_t* hot = env.hot
    cdef const rule_t* rules = env.rules
    cdef uint8_t kind
    cdef bint ok
    i = chains[cur].start
    while True:
        end = chains[cur].end
        j = first_hot_match(hot, i, end, st.src, st.dst, st.proto, st.origin_bit)
        st.rules += j - i
        if walk_kind is traced_walk:
            while i < j:
                record_step(st.rec, STEP_RULE, i, False, 0, 0)
                i += 1
        i = j
        if i >= end:
            if depth == 0:
                return chains[chain].policy if chains[chain].builtin else V_CONTINUE
            depth -= 1
            cur = stack_chain[depth]
            i = stack_pos[depth]
            continue
        st.rules += 1
        r = &rules[i]
        i += 1
        ok = not (hot[i - 1].flags & F_COLD) or cold_matches(r, st, env, hot[i - 1].flags)
        if walk_kind is traced_walk:
            record_step(st.rec, STEP_RULE, i - 1, ok, 0, 0)
        if not ok:
            continue
        kind = r.target_kind
        if kind == T_NONE:
            continue
        elif kind == T_ACCEPT:
            return V_ACCEPT
        elif kind == T_DROP:
            return V_DROP
        elif kind == T_REJECT:
            return V_REJECT
        elif kind == T_RETURN:
            if depth == 0:
                return chains[chain].policy if chains[chain].builtin else V_CONTINUE
            depth -= 1
            cur = stack_chain[depth]
            i = stack_pos[depth]
        elif kind == T_JUMP:
            if depth >= MAX_DEPTH:
                return V_DROP  # the kernel refuses loops at load time; never here
            stack_chain[depth] = cur
            stack_pos[depth] = i
            depth += 1
            cur = r.target_chain
            i = chains[cur].start
        elif kind == T_GOTO:
            cur = r.target_chain
            i = chains[cur].start
        elif kind == T_MARK:
            st.mark = (st.mark & r.mark_and) ^ r.mark_xor
        elif kind == T_DNAT:
            st.dst = r.to_ip
            if r.to_port:
                st.dport = r.to_port
            st.endpoint = r.endpoint
            st.ctstate |= CT_DNAT
            return V_DNAT
        elif kind == T_MASQUERADE or kind == T_SNAT:
            st.snat = 1
            st.snat_ip = r.to_ip if kind == T_SNAT else env.masquerade_ip
            st.random_fully = (r.flags & F_RANDOM_FULLY) != 0
            return V_SNAT


cdef inline int hook_verdict(int v) noexcept nogil:
    """A chain's verdict as the pipeline sees it: DROP, REJECT or on to the next hook."""
    return v if v == V_DROP or v == V_REJECT else HV_CONTINUE


def _array(value, dtype, name, allow_none=True):
    """A checked one-dimensional array argument (structured arrays: their layout is checked
    when a typed memoryview takes them)."""
    if value is None:
        if allow_none:
            return np.zeros(0, dtype)
        raise TypeError(f"{name} is required")
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(value).__name__}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, not {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return np.ascontiguousarray(value)


def _ipsets(sets):
    """The ``sets`` argument of an engine: a tuple of IPSet objects (TypeError)."""
    sets = tuple(sets)
    for s in sets:
        if not isinstance(s, IPSet):
            raise TypeError(f"sets must hold IPSet objects, not {type(s).__name__}")
    return sets


def _check_hot(hot, rules):
    if hot.shape[0] != rules.shape[0]:
        raise ValueError("hot and rules must have one row per rule")


cdef int check_rule_rows(const rule_t[::1] rv, const chain_t[::1] cv, Py_ssize_t n_port_ranges,
                         Py_ssize_t n_sets) except -1:
    """The indices every chain walk follows (chain ranges, jump targets, multiport ranges,
    set ids) stay inside their arrays: the walk runs unchecked."""
    cdef Py_ssize_t k, nrules = rv.shape[0], nchains = cv.shape[0]
    cdef const rule_t* r
    for k in range(nchains):
        if not 0 <= cv[k].start <= cv[k].end <= nrules:
            raise ValueError("chains: rule range out of bounds")
    for k in range(nrules):
        r = &rv[k]
        if (r.target_kind == T_JUMP or r.target_kind == T_GOTO) and \
                not 0 <= r.target_chain < nchains:
            raise ValueError("a jump names a chain out of range")
        if r.mport_kind and (r.mport_off < 0 or r.mport_n > 15
                             or 2 * (r.mport_off + r.mport_n) > n_port_ranges):
            raise ValueError("multiport rules need their port_ranges")
        if r.set_id >= 0 and r.set_id >= n_sets:
            raise ValueError("-m set rules need their sets")
    return 0


cdef class ChainEngine(Engine):
    """The iptables hooks of one node (and, with ``ipvs``, IPVS at LOCAL_IN/LOCAL_OUT).

    ``rules``/``hot``/``chains``/``hooks``/``port_ranges``/``ipvs_words``: the lowered
    arrays (kproxy_emu.dataplane.lowering.Lowered; hooks: chain index or -1 of nat
    PREROUTING, nat OUTPUT, nat POSTROUTING, filter INPUT, filter FORWARD, filter OUTPUT).
    The rules' state is the engine's and lives as long as it is given: ``nth_counters``
    (one per ``--mode nth`` rule), ``recent`` = (addrs, stamps, counts), the xt_recent
    lists of ``len(addrs) // len(counts)`` slots each (None: ``-m recent`` never matches).
    ``sets``: the IPSet objects ``-m set`` rules index; ``local_set``: a hash:ip IPSet of
    further local addresses (kube-ipvs0); ``ipvs``: the node's VirtualServerTable.
    Every index the packet loop follows is checked here (ValueError), once.
    """
    cdef env_t env
    cdef recent_t rt
    cdef const int32_t* hooks
    cdef object _arrays
    cdef readonly object nth_counters
    cdef readonly object recent
    cdef readonly tuple sets
    cdef readonly IPSet local_set
    cdef readonly VirtualServerTable ipvs
    cdef const ipset_t* local_set_p

    def __init__(self, rules, hot, chains, hooks, local_ips, uint32_t masquerade_ip, *,
                 port_ranges=None, nth_counters=None, recent=None, sets=(), IPSet local_set=None,
                 ipvs_words=None, VirtualServerTable ipvs=None):
        Engine.__init__(self, local_ips, masquerade_ip)
        rules = _array(rules, None, "rules", False)
        hot = _array(hot, None, "hot", False)
        chains = _array(chains, None, "chains", False)
        hooks = _array(hooks, np.dtype(np.int32), "hooks", False)
        port_ranges = _array(port_ranges, np.dtype(np.uint16), "port_ranges")
        ipvs_words = _array(ipvs_words, np.dtype(np.uint32), "ipvs_words")
        nth = _array(nth_counters, np.dtype(np.uint32), "nth_counters")
        if not nth.flags.writeable:
            raise ValueError("nth_counters must be writeable (the engine counts in it)")
        sets = _ipsets(sets)
        _check_hot(hot, rules)
        if hooks.shape[0] != 6:
            raise ValueError("hooks: six chain indices (or -1)")
        cdef const rule_t[::1] rv = rules
        cdef const chain_t[::1] cv = chains
        cdef const int32_t[::1] hv = hooks
        cdef Py_ssize_t k, nrules = rv.shape[0], nchains = cv.shape[0]
        cdef Py_ssize_t nlists = 0, cap = 0
        cdef const rule_t* r
        if recent is not None:
            addrs, stamps, counts = recent
            addrs = _array(addrs, np.dtype(np.uint32), "recent addrs", False)
            stamps = _array(stamps, np.dtype(np.float64), "recent stamps", False)
            counts = _array(counts, np.dtype(np.uint32), "recent counts", False)
            if counts.shape[0] == 0 or stamps.shape[0] != addrs.shape[0] \
                    or addrs.shape[0] % counts.shape[0] or addrs.shape[0] == 0:
                raise ValueError("recent lists: addrs and stamps of cap slots per counts entry")
            nlists = counts.shape[0]
            cap = addrs.shape[0] // nlists
            if (np.asarray(counts) > cap).any():
                raise ValueError("a recent list count exceeds its slots")
            recent = (addrs, stamps, counts)
        for k in range(6):
            if not -1 <= hv[k] < nchains:
                raise ValueError("hooks: chain index out of range")
        check_rule_rows(rv, cv, port_ranges.shape[0], len(sets))
        for k in range(nrules):
            r = &rv[k]
            if r.flags & F_NTH and not 0 <= r.nth_slot < nth.shape[0]:
                raise ValueError("statistic nth rules need their nth_counters")
            if r.ipvs_match >= 0 and r.ipvs_match + 4 > ipvs_words.shape[0]:
                raise ValueError("-m ipvs rules need their ipvs_words")
            if recent is not None and r.recent_list >= nlists:
                raise ValueError("a rule names a recent list beyond recent_counts")
        self._arrays = (rules, hot, chains, hooks, port_ranges, ipvs_words)
        self.nth_counters = nth
        self.recent = recent
        self.sets = sets
        self.local_set = local_set
        self.ipvs = ipvs
        self.env.rules = &rv[0] if nrules else NULL
        cdef const hot_t[::1] hotv = hot
        self.env.hot = &hotv[0] if nrules else NULL
        self.env.chains = &cv[0] if nchains else NULL
        self.hooks = &hv[0]
        cdef const uint16_t[::1] pv = port_ranges
        self.env.port_ranges = &pv[0] if pv.shape[0] else NULL
        cdef uint32_t[::1] nv = nth
        self.env.nth_counters = &nv[0] if nv.shape[0] else NULL
        cdef const uint32_t[::1] wv = ipvs_words
        self.env.ipvs_words = &wv[0] if wv.shape[0] else NULL
        self.env.masquerade_ip = masquerade_ip
        self.env.sets = <const ipset_t**>malloc(max(len(sets), 1) * sizeof(ipset_t*))
        if self.env.sets == NULL:
            raise MemoryError()
        for k in range(len(sets)):
            self.env.sets[k] = &(<IPSet>sets[k]).s
        self.local_set_p = &local_set.s if local_set is not None else NULL
        self.more_local = self.local_set_p != NULL
        self.env.local_ips = self.local_ips
        self.env.n_local = self.n_local
        self.env.local_set = self.local_set_p
        # nat PREROUTING and POSTROUTING are all this engine runs at those hooks
        self.nat_only_hooks = (1 << HOOK_PREROUTING) | (1 << HOOK_POSTROUTING)
        # IPVS aside, a known flow is nf_nat's and nothing runs after the hooks
        self.plain_known_flow = ipvs is None
        self.no_after_hooks = ipvs is None
        cdef uint32_t[::1] ra
        cdef double[::1] rs
        cdef uint32_t[::1] rc
        self.env.recent = NULL
        if recent is not None:
            ra, rs, rc = recent
            self.rt.addrs = &ra[0]
            self.rt.stamps = &rs[0]
            self.rt.counts = &rc[0]
            self.rt.cap = <uint32_t>cap
            self.rt.now = 0
            self.env.recent = &self.rt

    def __dealloc__(self):
        free(self.env.sets)

    def snapshot(self):
        """The state packets change (nth counters, recent lists, the IPVS table), for
        ``restore``."""
        return (self, self.nth_counters.copy(),
                tuple(a.copy() for a in self.recent) if self.recent is not None else None,
                self.ipvs.snapshot() if self.ipvs is not None else None)

    def restore(self, snap):
        if not isinstance(snap, tuple) or len(snap) != 4 or snap[0] is not self:
            raise ValueError("not a snapshot of this engine")
        self.nth_counters[:] = snap[1]
        if snap[2] is not None:
            for a, saved in zip(self.recent, snap[2]):
                a[:] = saved
        if snap[3] is not None:
            self.ipvs.restore(snap[3])

    cdef int begin(self) except -1:
        return 0

    cdef bint is_local(self, uint32_t ip) noexcept nogil:
        return env_is_local(&self.env, ip)

    cdef void known_flow(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        if self.ipvs is not None and st.ct_dir == 0:
            # IPVS, not nf_nat, moves each packet: it reaches LOCAL_IN as sent
            st.pending = 0
            st.endpoint = -1
        elif st.pending:  # nf_nat: the stored destination at once (Engine.known_flow)
            st.dst = st.pend_dst
            st.dport = st.pend_dport
            st.pending = 0

    cdef int hook(self, int hook, const packet_t* p, pkt_state_t* st) noexcept nogil:
        cdef int f, g
        cdef bint to_ipvs
        if hook == HOOK_FORWARD:  # first: every forwarded packet's one filter hook
            return hook_verdict(run_chain(self.hooks[4], st, &self.env))
        to_ipvs = self.ipvs is not None and (not st.ct_hit or st.ct_dir == 0)
        if hook == HOOK_PREROUTING:
            if not st.skip_nat:
                run_chain(self.hooks[0], st, &self.env)
            return HV_CONTINUE
        if hook == HOOK_INPUT:
            f = hook_verdict(run_chain(self.hooks[3], st, &self.env))
            if f == HV_CONTINUE and to_ipvs and p.origin != ORIGIN_HOST:
                g = self.ipvs_step(p, st, HOOK_INPUT)  # LOCAL_IN, after filter INPUT
                if g == V_DNAT:
                    return HV_SENT_ON
                return hook_verdict(g)
            return f
        if hook == HOOK_OUTPUT:
            if not st.sent_on:  # sent on by IPVS: nat OUTPUT is already bound
                if not st.skip_nat:
                    run_chain(self.hooks[1], st, &self.env)
                if to_ipvs:
                    g = self.ipvs_step(p, st, HOOK_OUTPUT)  # ip_vs_local_request4
                    if g == V_DROP or g == V_REJECT:
                        return g
            return hook_verdict(run_chain(self.hooks[5], st, &self.env))
        if hook == HOOK_POSTROUTING:
            if not st.skip_nat:
                run_chain(self.hooks[2], st, &self.env)
        return HV_CONTINUE

    cdef int ipvs_step(self, const packet_t* p, pkt_state_t* st, int hook) noexcept nogil:
        """ip_vs_in on the packet as it stands: a DNAT moves it to the real server and
        marks it as IPVS's (ipvs_property)."""
        cdef packet_t q = p[0]
        cdef verdict_t v
        cdef int res
        q.src_ip = st.src
        q.dst_ip = st.dst
        q.src_port = st.sport
        q.dst_port = st.dport
        verdict_reset(&v)
        res = self.ipvs.c_in(&q, &v)
        st.probes += v.probes
        count_lookup(st)
        if st.rec != NULL:
            record_step(st.rec, STEP_IPVS_IN, hook, res == IPVS_DNAT or res == IPVS_DROP
                        or res == IPVS_REJECT, <uint16_t>res, v.endpoint)
        if res == IPVS_DNAT:
            st.ipvs_prop = 1
            st.ipvs_hit = v.ct_hit
            st.ipvs_vaddr = q.dst_ip
            st.ipvs_vport = q.dst_port
            st.ipvs_vproto = q.proto
            st.dst = v.dnat_ip
            st.dport = v.dnat_port
            st.endpoint = v.endpoint
            return V_DNAT
        if res == IPVS_DROP:
            return V_DROP
        if res == IPVS_REJECT:
            return V_REJECT
        return V_CONTINUE  # PASS / NOSCHED: the local stack gets it

    cdef void after_hooks(self, const packet_t* p, pkt_state_t* st, int verdict) noexcept nogil:
        cdef packet_t q
        cdef verdict_t iv
        cdef int res
        if self.ipvs is None or not st.ct_hit or st.ct_dir != 1 or \
                verdict == V_DROP or verdict == V_REJECT:
            return
        q = p[0]  # ip_vs_out sees the reply after conntrack undid the masquerade
        q.dst_ip = st.dst
        q.dst_port = st.dport
        verdict_reset(&iv)
        res = self.ipvs.c_out(&q, &iv)
        st.probes += iv.probes
        count_lookup(st)
        if st.rec != NULL:
            record_step(st.rec, STEP_IPVS_OUT, HOOK_POSTROUTING, iv.ct_hit, <uint16_t>res,
                        iv.endpoint)


# the chains form of NetworkPolicy (kproxy_emu/dataplane/policy_chains.py renders and
# lowers it): an allowing rule sets this mark bit with its rule number in the low bits
# an allowing policy rule sets bit 31 and its number in bits 16-30 (0x7fff: a number too
# large to carry), under the mask 0xffff0000: kube-proxy's mark bits (14, 15) survive
cdef uint32_t POLICY_ACCEPT_MARK = 0x80000000
cdef uint32_t POLICY_RULE_SHIFT = 16
cdef uint32_t POLICY_RULE_NONE = 0x7fff
POLICY_MARK = POLICY_ACCEPT_MARK
POLICY_MARK_MASK = 0xffff0000
POLICY_RULE_MAX = POLICY_RULE_NONE - 1


cdef class ChainPolicy(PolicyStage):
    """NetworkPolicy as iptables chains (Calico / kube-router style), walked by the chain
    VM: the egress dispatch chain (per source pod address) then the ingress one (per
    destination pod address). DROP (or REJECT): no rule allowed it; otherwise the accept
    bit of the packet mark says a policy rule allowed it (its number in bits 16-30; the
    stage clears the mark before each side and puts the flow's back after: kube-proxy's
    mark is the flow's), and without it the pod is not isolated. (ACCEPT counts as
    allowed too.) The chains RETURN rather than ACCEPT so that a kernel walking both
    sides from one hook chain sees the ingress side after an allowed egress.

    ``rules``/``hot``/``chains``/``port_ranges``: the lowered filter table
    (kproxy_emu.dataplane.lowering.Lowered); ``sets``: the IPSet objects its ``-m set``
    rules index; ``egress``/``ingress``: the dispatch chains' indices."""
    cdef env_t env
    cdef int32_t egress
    cdef int32_t ingress
    cdef object _arrays
    cdef readonly tuple sets

    def __init__(self, rules, hot, chains, port_ranges, sets, int32_t egress, int32_t ingress):
        rules = _array(rules, None, "rules", False)
        hot = _array(hot, None, "hot", False)
        chains = _array(chains, None, "chains", False)
        port_ranges = _array(port_ranges, np.dtype(np.uint16), "port_ranges")
        sets = _ipsets(sets)
        _check_hot(hot, rules)
        cdef const rule_t[::1] rv = rules
        cdef const chain_t[::1] cv = chains
        cdef const hot_t[::1] hotv = hot
        cdef const uint16_t[::1] pv = port_ranges
        cdef Py_ssize_t k, nrules = rv.shape[0], nchains = cv.shape[0]
        cdef const rule_t* r
        if not (0 <= egress < nchains and 0 <= ingress < nchains):
            raise ValueError("egress/ingress: chain index out of range")
        check_rule_rows(rv, cv, port_ranges.shape[0], len(sets))
        for k in range(nrules):
            r = &rv[k]
            if r.flags & F_NTH or r.recent_op or r.ipvs_match >= 0 or r.prob != NO_STATISTIC \
                    or r.src_type != A_ANY or r.dst_type != A_ANY:
                raise ValueError("policy chains use no stateful, IPVS or addrtype match")
            if r.target_kind in (T_DNAT, T_SNAT, T_MASQUERADE):
                raise ValueError("policy chains do not translate")
        self._arrays = (rules, hot, chains, port_ranges)
        self.sets = sets
        self.egress = egress
        self.ingress = ingress
        self.env.rules = &rv[0] if nrules else NULL
        self.env.hot = &hotv[0] if nrules else NULL
        self.env.chains = &cv[0]
        self.env.recent = NULL
        self.env.port_ranges = &pv[0] if pv.shape[0] else NULL
        self.env.nth_counters = NULL
        self.env.masquerade_ip = 0
        self.env.ipvs_words = NULL
        self.env.local_ips = NULL
        self.env.n_local = 0
        self.env.local_set = NULL
        self.env.sets = <const ipset_t**>malloc(max(len(sets), 1) * sizeof(ipset_t*))
        if self.env.sets == NULL:
            raise MemoryError()
        for k in range(len(sets)):
            self.env.sets[k] = &(<IPSet>sets[k]).s

    def __dealloc__(self):
        free(self.env.sets)

    cdef inline int side(self, int32_t chain, int direction, pkt_state_t* st) noexcept nogil:
        """One dispatch chain: POL_OPEN, POL_ALLOWED or POL_DENIED (recorded in traces)."""
        cdef Py_ssize_t first = 0, k
        cdef int v, detail
        cdef int32_t rule = -1
        st.mark = 0
        if st.rec != NULL:
            first = st.rec.nsteps
        v = run_chain(chain, st, &self.env)
        if v == V_DROP or v == V_REJECT:
            detail = POL_DENIED
        elif st.mark & POLICY_ACCEPT_MARK or v == V_ACCEPT:
            detail = POL_ALLOWED
            if st.mark & POLICY_ACCEPT_MARK:
                rule = <int32_t>((st.mark >> POLICY_RULE_SHIFT) & POLICY_RULE_NONE)
                if rule == <int32_t>POLICY_RULE_NONE:
                    rule = -1
        else:
            detail = POL_OPEN
        if st.rec != NULL:
            for k in range(first, min(st.rec.nsteps, st.rec.cap)):
                st.rec.steps[k].kind = STEP_POLICY_RULE  # rows of the policy table
            record_policy(st.rec, direction, detail, rule)
        return detail

    cdef int check(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        cdef uint32_t mark = st.mark
        cdef int r = POLICY_PASS
        if self.side(self.egress, 0, st) == POL_DENIED:
            r = POLICY_EGRESS_DENIED
        elif self.side(self.ingress, 1, st) == POL_DENIED:
            r = POLICY_INGRESS_DENIED
        st.mark = mark
        return r
