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

from conntrack_core cimport (ct_table_t, ct_result_t, ct_lookup, ct_alloc, ct_abort,
                             ct_confirm, ct_translate, CT_ERR_FULL, CTSTATE_UNTRACKED,
                             CTSTATE_INVALID)

from packet cimport (packet_t, verdict_t, ACT_ACCEPT, ACT_DNAT, ACT_DROP, ACT_REJECT,
                     ORIGIN_HOST)

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
    uint16_t _pad1

ctypedef struct recent_t:
    # xt_recent's address lists, one open-addressing table for all lists:
    # key = (list + 1) << 32 | address, value = last time seen
    uint64_t* keys
    double* stamps
    uint64_t mask
    double now
    bint full

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
    uint8_t _pad
    uint32_t mark
    uint32_t ctstate
    uint32_t rules
    int32_t endpoint
    uint64_t rng


def layout():
    """sizeof/offsetof of rule_t and chain_t, to check the numpy dtypes against."""
    cdef rule_t r
    cdef chain_t c
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
            "recent_op": <size_t>&r.recent_op - base}},
        "chain_t": {"itemsize": sizeof(chain_t), "fields": {
            "start": <size_t>&c.start - cbase, "end": <size_t>&c.end - cbase,
            "policy": <size_t>&c.policy - cbase, "builtin": <size_t>&c.builtin - cbase}},
    }


cdef inline uint32_t next_rand31(state_t* st) noexcept nogil:
    # xorshift64*: fast, seedable, good enough for branch draws
    cdef uint64_t x = st.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    st.rng = x
    return <uint32_t>((x * 2685821657736338717ULL) >> 33) & 0x7FFFFFFF


cdef inline bint is_local(uint32_t ip, const uint32_t[::1] local_ips) noexcept nogil:
    cdef Py_ssize_t k
    if (ip >> 24) == 127:
        return True
    for k in range(local_ips.shape[0]):
        if local_ips[k] == ip:
            return True
    return False


cdef inline Py_ssize_t recent_slot(recent_t* rt, uint64_t key) noexcept nogil:
    """The slot holding key, or the empty slot where it would go (-1: table full)."""
    cdef uint64_t h = (key * 0x9E3779B97F4A7C15ULL) >> 17
    cdef uint64_t i, n
    for n in range(rt.mask + 1):
        i = (h + n) & rt.mask
        if rt.keys[i] == key or rt.keys[i] == 0:
            return <Py_ssize_t>i
    return -1


cdef inline bint recent_match(const rule_t* r, state_t* st, recent_t* rt) noexcept nogil:
    """xt_recent: --set records the address and matches; --rcheck/--update match when the
    address is in the list and, with --seconds, was seen less than that long ago
    (time_after(stamp, now - seconds)); --update also refreshes the time."""
    cdef uint32_t addr = st.dst if r.recent_rdest else st.src
    cdef uint64_t key = ((<uint64_t>r.recent_list + 1) << 32) | addr
    cdef Py_ssize_t slot = recent_slot(rt, key)
    if r.recent_op == R_SET:
        if slot < 0:
            rt.full = True
            return True
        rt.keys[slot] = key
        rt.stamps[slot] = rt.now
        return True
    if slot < 0 or rt.keys[slot] != key:
        return False
    if r.recent_seconds and not (rt.stamps[slot] > rt.now - r.recent_seconds):
        return False
    if r.recent_op == R_UPDATE:
        rt.stamps[slot] = rt.now
    return True


cdef inline bint rule_matches(const rule_t* r, state_t* st,
                              const uint32_t[::1] local_ips, recent_t* rt) noexcept nogil:
    cdef uint32_t f = r.flags
    cdef bint ok
    if f & F_NEVER:
        return False
    if ((st.src & r.src_mask) == r.src) == ((f & F_SRC_NEG) != 0):
        return False
    if ((st.dst & r.dst_mask) == r.dst) == ((f & F_DST_NEG) != 0):
        return False
    if r.proto != 0 and ((st.proto == r.proto) == ((f & F_PROTO_NEG) != 0)):
        return False
    if (r.in_origins & st.origin_bit) == 0:
        return False
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
    if r.src_type != A_ANY:
        if is_local(st.src, local_ips) != (r.src_type == A_LOCAL):
            return False
    if r.dst_type != A_ANY:
        if is_local(st.dst, local_ips) != (r.dst_type == A_LOCAL):
            return False
    if r.recent_list >= 0 and rt != NULL:
        if not recent_match(r, st, rt):
            return False
    if r.prob != NO_STATISTIC:
        ok = next_rand31(st) < r.prob
        if ok == ((f & F_STAT_NEG) != 0):
            return False
    return True


cdef int run_chain(const rule_t[::1] rules, const chain_t[::1] chains, int32_t chain,
                   state_t* st, const uint32_t[::1] local_ips, recent_t* rt) noexcept nogil:
    """Evaluate one hook's chain; V_CONTINUE means the packet went on (policy ACCEPT)."""
    cdef int32_t stack_chain[MAX_DEPTH]
    cdef int32_t stack_pos[MAX_DEPTH]
    cdef int depth = 0
    cdef int32_t cur = chain
    cdef int32_t i
    cdef const rule_t* r
    cdef uint8_t kind
    if chain < 0:
        return V_CONTINUE
    i = chains[cur].start
    while True:
        if i >= chains[cur].end:
            if depth == 0:
                return chains[chain].policy if chains[chain].builtin else V_CONTINUE
            depth -= 1
            cur = stack_chain[depth]
            i = stack_pos[depth]
            continue
        r = &rules[i]
        i += 1
        st.rules += 1
        if not rule_matches(r, st, local_ips, rt):
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
            return V_SNAT


def process(const packet_t[::1] packets, verdict_t[::1] out, const rule_t[::1] rules,
            const chain_t[::1] chains, const int32_t[::1] hooks,
            const uint32_t[::1] local_ips, uint32_t masquerade_ip, uint64_t seed,
            uintptr_t conntrack=0, uint64_t[::1] recent_keys=None, double[::1] recent_stamps=None):
    """Walk the node's hooks for each packet; returns the generator state to continue from.

    hooks: chain index (or -1) of nat PREROUTING, nat OUTPUT, nat POSTROUTING,
    filter INPUT, filter FORWARD, filter OUTPUT. conntrack: a ConntrackTable's
    table_address() (0: every packet is a flow's first); the caller keeps it alive.
    recent_keys/recent_stamps: the xt_recent lists (a power-of-two size, zeroed at start,
    kept by the caller between calls); None: ``-m recent`` checks never match.
    Returns (generator state, whether the recent table ran out of room).
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
    cdef uint16_t sport, dport
    cdef bint hit, nat_hooks
    cdef recent_t rt
    cdef recent_t* rtp = NULL
    if recent_keys is not None:
        if recent_stamps is None or recent_stamps.shape[0] != recent_keys.shape[0] or \
                recent_keys.shape[0] & (recent_keys.shape[0] - 1):
            raise ValueError("recent tables: equal power-of-two sizes")
        rt.keys = &recent_keys[0]
        rt.stamps = &recent_stamps[0]
        rt.mask = recent_keys.shape[0] - 1
        rt.full = False
        rtp = &rt
    if out.shape[0] < n:
        raise ValueError("verdict array shorter than the packet array")
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
            st.mark = 0
            st.ctstate = CT_NEW
            st.rules = 0
            st.endpoint = -1
            st.rng = rng
            f = V_CONTINUE
            hit = False
            entry = -1
            r.probes = 0
            cprobes = 0
            if ct != NULL:
                ct_lookup(ct, p, &r)
                st.ctstate = r.state
                if r.entry >= 0:  # a known flow: the stored translation, no nat rules
                    hit = True
                    ct_translate(ct, r.entry, r.dir, &sip, &sport, &dip, &dport)
                    st.src = sip
                    st.sport = sport
                    st.dst = dip
                    st.dport = dport
                    st.snat = sip != p.src_ip or sport != p.src_port
                    st.endpoint = ct.e[r.entry].endpoint if r.dir == 0 else -1
                elif r.state != CTSTATE_UNTRACKED and r.state != CTSTATE_INVALID:
                    entry = ct_alloc(ct, p)  # before the rules, as the conntrack hook is
                    if entry == CT_ERR_FULL:
                        f = V_DROP
            nat_hooks = not hit
            if f == V_DROP:
                pass
            elif p.origin == ORIGIN_HOST:
                if nat_hooks:
                    run_chain(rules, chains, hooks[1], &st, local_ips, rtp)
                f = run_chain(rules, chains, hooks[5], &st, local_ips, rtp)
                if f != V_DROP and f != V_REJECT:
                    if nat_hooks:
                        run_chain(rules, chains, hooks[2], &st, local_ips, rtp)
                    if is_local(st.dst, local_ips):
                        f = run_chain(rules, chains, hooks[3], &st, local_ips, rtp)
            else:
                if nat_hooks:
                    run_chain(rules, chains, hooks[0], &st, local_ips, rtp)
                if is_local(st.dst, local_ips):
                    f = run_chain(rules, chains, hooks[3], &st, local_ips, rtp)
                else:
                    f = run_chain(rules, chains, hooks[4], &st, local_ips, rtp)
                    if f != V_DROP and f != V_REJECT and nat_hooks:
                        run_chain(rules, chains, hooks[2], &st, local_ips, rtp)
            rng = st.rng
            if entry >= 0:
                if f == V_DROP or f == V_REJECT:
                    ct_abort(ct, entry)  # never confirmed: the packet died
                else:
                    entry = ct_confirm(ct, entry,
                                       st.dst if st.dst != p.dst_ip or st.dport != p.dst_port else 0,
                                       st.dport if st.dst != p.dst_ip or st.dport != p.dst_port else 0,
                                       masquerade_ip if st.snat else 0, 0, st.endpoint, st.mark,
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
            if hit:
                out[k].snat_ip = st.src if st.snat else 0
                out[k].snat_port = st.sport if st.snat else 0
            else:
                out[k].snat_ip = masquerade_ip if st.snat else 0
                out[k].snat_port = 0
            out[k].endpoint = st.endpoint
            out[k].rules = st.rules
            out[k].probes = r.probes + cprobes
            out[k].ct_hit = hit
    return rng, (rtp != NULL and rt.full)
