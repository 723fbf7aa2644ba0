# cython: language_level=3
"""iptables-style linear chain VM: the node's hooks evaluated rule by rule over packed arrays.

Rules are rows of ``rule_t`` (lowered by kproxy_emu/dataplane/lowering.py), chains are
ranges of rows, jumps are chain indices. ``process`` walks the node's hooks for each packet
of a batch the way ``ipt_do_table`` walks a table: every rule's matches in turn, ``-j`` pushes
a return point, ``-g`` does not, RETURN pops, the end of a built-in chain applies its policy.
The statistic match draws a 31-bit random number and compares it with the probability scaled
to 2^31, as xt_statistic does, from a seeded xorshift64* generator. Each packet is treated as
the first of its flow unless a conntrack table is given: then, as in the kernel, a packet
of a known flow (either direction) skips the nat table and gets the stored translation, and
only the filter hooks see it (ctstate ESTABLISHED); a new flow is allocated in conntrack
before the rules (a full table drops it), and confirmed with the NAT the rules chose unless
the filter dropped it.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

from ipset_core cimport ipset_t, ipset_test, ipset_find
from ipvs_core cimport ipvs_table_t, ipvs_in, ipvs_out, IPVS_DNAT, IPVS_DROP, IPVS_REJECT
from conntrack_core cimport (ct_table_t, ct_result_t, ct_lookup, ct_alloc, ct_abort, ct_find,
                             ct_confirm, ct_translate, CT_ERR_FULL, CTSTATE_UNTRACKED,
                             CTSTATE_INVALID)

from natport cimport choose_snat_port, rand31
from packet cimport (packet_t, verdict_t, verdict_reset, ACT_ACCEPT, ACT_DNAT, ACT_DROP,
                     ACT_REJECT, ORIGIN_HOST)

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
    uint32_t recent_seconds # 0: no --seconds limit
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
    # what the rules read besides the packet: node addresses, xt_recent lists, multiport
    # ranges, statistic nth counters (the last two owned by the caller, per rule set)
    const uint32_t* local_ips
    Py_ssize_t n_local
    recent_t* recent
    const uint16_t* port_ranges
    uint32_t* nth_counters
    uint32_t masquerade_ip
    const uintptr_t* sets           # ipset_t addresses (-m set), by rule_t.set_id
    const ipset_t* local_set        # hash:ip of more local addresses (IPVS: kube-ipvs0)
    const uint32_t* ipvs_words      # -m ipvs matches

ctypedef struct chain_t:
    int32_t start
    int32_t end
    uint8_t policy      # V_CONTINUE for user chains, V_ACCEPT / V_DROP for built-ins
    uint8_t builtin
    uint16_t _pad

ctypedef struct state_t:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto
    uint8_t origin_bit
    uint8_t snat
    uint8_t random_fully    # the SNAT/MASQUERADE rule asked for --random-fully
    uint32_t snat_ip
    uint32_t mark
    uint32_t ctstate
    uint32_t rules
    int32_t endpoint
    uint64_t rng
    uint32_t probes         # set and IPVS lookups
    uint32_t ipvs_vaddr     # the IPVS connection's virtual service (ipvs_prop set)
    uint16_t ipvs_vport
    uint8_t ipvs_vproto
    uint8_t ipvs_prop       # skb->ipvs_property: IPVS sent this packet on
    uint8_t ipvs_hit        # IPVS found the packet's connection


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


cdef inline bint is_local(uint32_t ip, const env_t* env) noexcept nogil:
    """The local routing table: loopback, the node's addresses, then (IPVS mode) the
    addresses bound to kube-ipvs0, a hash set since there is one per ClusterIP."""
    cdef Py_ssize_t k
    cdef uint32_t unused = 0
    if (ip >> 24) == 127:
        return True
    for k in range(env.n_local):
        if env.local_ips[k] == ip:
            return True
    if env.local_set != NULL:
        return ipset_find(env.local_set, (<uint64_t>ip) << 32, 0, &unused)
    return False


cdef inline bint set_match(const rule_t* r, state_t* st, const env_t* env) noexcept nogil:
    """xt_set: the packet as it stands (after any DNAT so far) tested against the set."""
    cdef packet_t q
    q.ts = 0
    q.src_ip = st.src
    q.dst_ip = st.dst
    q.src_port = st.sport
    q.dst_port = st.dport
    q.proto = st.proto
    q.tcp_flags = 0
    q.origin = 0
    q.family = 4
    return ipset_test(<const ipset_t*>env.sets[r.set_id], &q, r.set_dirs, &st.probes)


cdef inline bint ipvs_match(const rule_t* r, const state_t* st, const env_t* env) noexcept nogil:
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


cdef inline bint multiport_match(const rule_t* r, const state_t* st,
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


cdef inline bint recent_match(const rule_t* r, state_t* st, recent_t* rt) noexcept nogil:
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


cdef inline bint cold_matches(const rule_t* r, state_t* st, const env_t* env) noexcept nogil:
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
    if r.mport_kind:
        if multiport_match(r, st, env) == ((f & F_MPORT_NEG) != 0):
            return False
    if r.src_type != A_ANY:
        if is_local(st.src, env) != (r.src_type == A_LOCAL):
            return False
    if r.dst_type != A_ANY:
        if is_local(st.dst, env) != (r.dst_type == A_LOCAL):
            return False
    if r.set_id >= 0:
        if set_match(r, st, env) == ((f & F_SET_NEG) != 0):
            return False
    if r.ipvs_match >= 0:
        if not ipvs_match(r, st, env):
            return False
    if r.recent_list >= 0 and env.recent != NULL:
        if not recent_match(r, st, env.recent):
            return False
    if r.prob != NO_STATISTIC:
        ok = rand31(&st.rng) < r.prob
        if ok == ((f & F_STAT_NEG) != 0):
            return False
    if f & F_NTH:
        if nth_match(r, env) == ((f & F_STAT_NEG) != 0):
            return False
    return True


cdef int run_chain(const hot_t* hot, const rule_t[::1] rules, const chain_t[::1] chains,
                   int32_t chain, state_t* st, const env_t* env) noexcept nogil:
    """Evaluate one hook's chain; V_CONTINUE means the packet went on (policy ACCEPT)."""
    cdef int32_t stack_chain[MAX_DEPTH]
    cdef int32_t stack_pos[MAX_DEPTH]
    cdef int depth = 0
    cdef int32_t cur = chain
    cdef int32_t i, j, end
    cdef const rule_t* r
    cdef uint8_t kind
    if chain < 0:
        return V_CONTINUE
    i = chains[cur].start
    while True:
        end = chains[cur].end
        j = first_hot_match(hot, i, end, st.src, st.dst, st.proto, st.origin_bit)
        st.rules += j - i
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
        if (hot[i - 1].flags & F_COLD) and not cold_matches(r, st, env):
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


cdef inline int ipvs_step(ipvs_table_t* vs, const packet_t* p, state_t* st) noexcept nogil:
    """ip_vs_in on the packet as it stands (LOCAL_IN, or LOCAL_OUT for the host's own):
    a DNAT moves it to the real server and marks it as IPVS's (ipvs_property)."""
    cdef packet_t q = p[0]
    cdef verdict_t v
    cdef int res
    q.src_ip = st.src
    q.dst_ip = st.dst
    q.src_port = st.sport
    q.dst_port = st.dport
    verdict_reset(&v)
    res = ipvs_in(vs, &q, &v)
    st.probes += v.probes
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


def process(const packet_t[::1] packets, verdict_t[::1] out, const rule_t[::1] rules,
            const hot_t[::1] hot, const chain_t[::1] chains, const int32_t[::1] hooks,
            const uint32_t[::1] local_ips, uint32_t masquerade_ip, uint64_t seed,
            uintptr_t conntrack=0, uint32_t[::1] recent_addrs=None, double[::1] recent_stamps=None,
            uint32_t[::1] recent_counts=None,
            const uint16_t[::1] port_ranges=None, uint32_t[::1] nth_counters=None,
            const uintptr_t[::1] sets=None, uintptr_t local_set=0,
            const uint32_t[::1] ipvs_words=None, uintptr_t ipvs=0, bint checked=False):
    """Walk the node's hooks for each packet; returns the generator state to continue from.

    hooks: chain index (or -1) of nat PREROUTING, nat OUTPUT, nat POSTROUTING,
    filter INPUT, filter FORWARD, filter OUTPUT. conntrack: a ConntrackTable's
    table_address() (0: every packet is a flow's first); the caller keeps it alive.
    recent_addrs/recent_stamps/recent_counts: the xt_recent lists, ``cap`` slots per list
    (len(recent_addrs) // len(recent_counts)), zeroed at start and kept by the caller
    between calls; None: ``-m recent`` checks never match.
    port_ranges: the (lo, hi) pairs multiport rules index; nth_counters: one counter per
    ``--mode nth`` rule (kept by the caller: the kernel's counters live as long as the rule).
    sets: ipset_t addresses (vstable.IPSet.set_address()) that ``-m set`` rules index;
    local_set: a hash:ip set of further local addresses (0: none); ipvs_words: the
    ``-m ipvs`` matches; ipvs: a VirtualServerTable's table_address() (0: no IPVS). With
    IPVS, packets to a local address meet ip_vs_in after filter INPUT (LOCAL_IN), the
    host's packets after nat OUTPUT (LOCAL_OUT); a packet IPVS sends on then passes filter
    OUTPUT and nat POSTROUTING; a known flow keeps its virtual address until IPVS (the
    kernel DNATs each packet in IPVS, not in nf_nat), and replies update IPVS's connection
    (ip_vs_out). The caller keeps every object behind an address alive.
    checked: the caller already ran this check of the rules against the side arrays with
    the same arrays (a scan of every rule: a few ms per call at 100k services).
    Returns the generator state.
    """
    cdef Py_ssize_t n = packets.shape[0], k
    cdef state_t st
    cdef int v, f
    cdef uint64_t rng = seed if seed != 0 else 0x9E3779B97F4A7C15ULL
    cdef const packet_t* p
    cdef ct_table_t* ct = <ct_table_t*>conntrack
    cdef ct_result_t r
    cdef int32_t entry
    cdef uint32_t cprobes, sip, dip
    cdef uint16_t sport, dport, snat_port
    cdef bint hit, nat_hooks
    cdef recent_t rt
    cdef env_t env
    cdef Py_ssize_t needed_ranges = 0, needed_counters = 0, needed_sets = 0, needed_words = 0
    cdef ipvs_table_t* vs = <ipvs_table_t*>ipvs
    cdef packet_t q
    cdef verdict_t iv
    cdef int g
    cdef const hot_t* hp = NULL
    if not checked:
        for k in range(rules.shape[0]):
            if rules[k].mport_kind and rules[k].mport_off + rules[k].mport_n > needed_ranges:
                needed_ranges = rules[k].mport_off + rules[k].mport_n
            if rules[k].flags & F_NTH and rules[k].nth_slot + 1 > needed_counters:
                needed_counters = rules[k].nth_slot + 1
            if rules[k].set_id + 1 > needed_sets:
                needed_sets = rules[k].set_id + 1
            if rules[k].ipvs_match >= 0 and rules[k].ipvs_match + 4 > needed_words:
                needed_words = rules[k].ipvs_match + 4
    else:  # trusted: the side arrays as given
        needed_ranges = port_ranges.shape[0] // 2 if port_ranges is not None else 0
        needed_counters = nth_counters.shape[0] if nth_counters is not None else 0
        needed_sets = sets.shape[0] if sets is not None else 0
        needed_words = ipvs_words.shape[0] if ipvs_words is not None else 0
    if needed_ranges and (port_ranges is None or port_ranges.shape[0] < 2 * needed_ranges):
        raise ValueError("multiport rules need their port_ranges")
    if needed_counters and (nth_counters is None or nth_counters.shape[0] < needed_counters):
        raise ValueError("statistic nth rules need their nth_counters")
    env.local_ips = &local_ips[0] if local_ips.shape[0] else NULL
    env.n_local = local_ips.shape[0]
    env.port_ranges = &port_ranges[0] if needed_ranges else NULL
    env.nth_counters = &nth_counters[0] if needed_counters else NULL
    env.masquerade_ip = masquerade_ip
    if needed_sets and (sets is None or sets.shape[0] < needed_sets):
        raise ValueError("-m set rules need their sets")
    if needed_words and (ipvs_words is None or ipvs_words.shape[0] < needed_words):
        raise ValueError("-m ipvs rules need their ipvs_words")
    if sets is not None:
        for k in range(needed_sets):
            if sets[k] == 0:
                raise ValueError("a -m set rule names a missing set")
    env.sets = &sets[0] if needed_sets else NULL
    env.ipvs_words = &ipvs_words[0] if needed_words else NULL
    env.local_set = <const ipset_t*>local_set
    env.recent = NULL
    if recent_addrs is not None:
        if recent_stamps is None or recent_counts is None or recent_counts.shape[0] == 0 \
                or recent_stamps.shape[0] != recent_addrs.shape[0] \
                or recent_addrs.shape[0] % recent_counts.shape[0]:
            raise ValueError("recent lists: addrs and stamps of cap slots per counts entry")
        for k in range(0 if checked else rules.shape[0]):
            if rules[k].recent_list >= recent_counts.shape[0]:
                raise ValueError("a rule names a recent list beyond recent_counts")
        rt.addrs = &recent_addrs[0]
        rt.stamps = &recent_stamps[0]
        rt.counts = &recent_counts[0]
        rt.cap = recent_addrs.shape[0] // recent_counts.shape[0]
        env.recent = &rt
    if out.shape[0] < n:
        raise ValueError("verdict array shorter than the packet array")
    if hot.shape[0] != rules.shape[0]:
        raise ValueError("hot and rules must have one row per rule")
    if hot.shape[0]:
        hp = &hot[0]
    with nogil:
        for k in range(n):
            p = &packets[k]
            rt.now = p.ts
            st.src = p.src_ip
            st.dst = p.dst_ip
            st.sport = p.src_port
            st.dport = p.dst_port
            st.proto = p.proto
            st.origin_bit = <uint8_t>(1 << p.origin) if p.origin < 8 else 0
            st.snat = 0
            st.snat_ip = 0
            st.random_fully = 0
            st.mark = 0
            st.ctstate = CT_NEW
            st.rules = 0
            st.endpoint = -1
            st.rng = rng
            st.probes = 0
            st.ipvs_prop = 0
            st.ipvs_hit = 0
            f = V_CONTINUE
            hit = False
            entry = -1
            r.probes = 0
            cprobes = 0
            snat_port = 0
            if ct != NULL:
                ct_lookup(ct, p, &r)
                st.ctstate = r.state
                if r.entry >= 0:  # a known flow: the stored translation, no nat rules
                    hit = True
                    ct_translate(ct, r.entry, r.dir, &sip, &sport, &dip, &dport)
                    st.snat = sip != p.src_ip or sport != p.src_port
                    # the filter hooks see the source before SNAT (applied in POSTROUTING)
                    st.snat_ip = sip
                    snat_port = sport
                    st.dst = dip
                    st.dport = dport
                    st.endpoint = ct.e[r.entry].endpoint if r.dir == 0 else -1
                    if vs != NULL and r.dir == 0:
                        # IPVS, not nf_nat, moves each packet: it reaches LOCAL_IN as sent
                        st.dst = p.dst_ip
                        st.dport = p.dst_port
                        st.endpoint = -1
                elif r.state != CTSTATE_UNTRACKED and r.state != CTSTATE_INVALID:
                    entry = ct_alloc(ct, p)  # before the rules, as the conntrack hook is
                    if entry == CT_ERR_FULL:
                        f = V_DROP
            # nf_nat only runs for packets with a conntrack entry: a flow's first packet
            # (or every packet without conntrack), never INVALID/UNTRACKED ones
            nat_hooks = ct == NULL or entry >= 0
            if f == V_DROP:
                pass
            elif p.origin == ORIGIN_HOST:
                if nat_hooks:
                    run_chain(hp, rules, chains, hooks[1], &st, &env)
                if vs != NULL and (not hit or r.dir == 0):
                    f = ipvs_step(vs, p, &st)  # ip_vs_local_request4, after nat OUTPUT
                if f != V_DROP and f != V_REJECT:
                    f = run_chain(hp, rules, chains, hooks[5], &st, &env)
                if f != V_DROP and f != V_REJECT:
                    if nat_hooks:
                        run_chain(hp, rules, chains, hooks[2], &st, &env)
                    if is_local(st.dst, &env):
                        f = run_chain(hp, rules, chains, hooks[3], &st, &env)
            else:
                if nat_hooks:
                    run_chain(hp, rules, chains, hooks[0], &st, &env)
                if is_local(st.dst, &env):
                    f = run_chain(hp, rules, chains, hooks[3], &st, &env)
                    if vs != NULL and f != V_DROP and f != V_REJECT and (not hit or r.dir == 0):
                        g = ipvs_step(vs, p, &st)  # LOCAL_IN, after filter INPUT
                        if g == V_DNAT:
                            # ip_vs_nat_xmit sends it on through LOCAL_OUT (nat OUTPUT
                            # already bound) and POSTROUTING
                            f = run_chain(hp, rules, chains, hooks[5], &st, &env)
                            if f != V_DROP and f != V_REJECT and nat_hooks:
                                run_chain(hp, rules, chains, hooks[2], &st, &env)
                        elif g != V_CONTINUE:
                            f = g
                else:
                    f = run_chain(hp, rules, chains, hooks[4], &st, &env)
                    if f != V_DROP and f != V_REJECT and nat_hooks:
                        run_chain(hp, rules, chains, hooks[2], &st, &env)
            rng = st.rng
            if vs != NULL and hit and r.dir == 1 and f != V_DROP and f != V_REJECT:
                q = p[0]  # ip_vs_out sees the reply after conntrack undid the masquerade
                q.dst_ip = st.dst
                q.dst_port = st.dport
                verdict_reset(&iv)
                ipvs_out(vs, &q, &iv)
                st.probes += iv.probes
            if st.snat and not hit and f != V_DROP and f != V_REJECT:
                snat_port = choose_snat_port(ct, st.proto, st.snat_ip, st.dst, st.dport,
                                             p.src_port, st.random_fully, &rng, p.ts,
                                             &cprobes)
            if entry >= 0:
                if f == V_DROP or f == V_REJECT:
                    ct_abort(ct, entry)  # never confirmed: the packet died
                else:
                    entry = ct_confirm(ct, entry,
                                       st.dst if st.dst != p.dst_ip or st.dport != p.dst_port else 0,
                                       st.dport if st.dst != p.dst_ip or st.dport != p.dst_port else 0,
                                       st.snat_ip if st.snat else 0,
                                       snat_port if st.snat else 0, st.endpoint, st.mark,
                                       p.ts, &cprobes)
                    if entry < 0:
                        f = V_DROP  # insert clash
            if f == V_DROP:
                out[k].action = ACT_DROP
            elif f == V_REJECT:
                out[k].action = ACT_REJECT
            elif st.endpoint >= 0 or st.dst != p.dst_ip or st.dport != p.dst_port:
                out[k].action = ACT_DNAT
            else:
                out[k].action = ACT_ACCEPT
            if st.dst != p.dst_ip or st.dport != p.dst_port:
                out[k].dnat_ip = st.dst
                out[k].dnat_port = st.dport
            else:
                out[k].dnat_ip = 0
                out[k].dnat_port = 0
            out[k].snat_ip = st.snat_ip if st.snat else 0
            out[k].snat_port = snat_port if st.snat else 0
            out[k].endpoint = st.endpoint
            out[k].rules = st.rules
            out[k].probes = r.probes + cprobes + st.probes
            out[k].ct_hit = hit or st.ipvs_hit
    return rng
