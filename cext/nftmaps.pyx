# cython: language_level=3
"""nftables packet engine: the node's base chains walked expression by expression over
packed arrays, with sets and verdict maps as hash tables.

A chain is a run of ``expr_t`` rows closed by an END row (lowered by
kproxy_emu/dataplane/nft_lowering.py); each row knows where its rule ends. Rules run in
order as nft_do_chain runs them: a match that fails ends the rule (NFT_BREAK), a verdict
ends it with that verdict; ``jump`` pushes a return point (the next rule), ``goto`` does
not, ``return`` or the end of a regular chain pops, the end of a base chain is its policy
(accept). Jump targets are row indices, so a walk touches only the rows it runs. A NAT statement accepts for its base chain, as nft_nat_eval does. Set and
map lookups hash the concatenated key (packed into 64 bits) into the set's open-addressing
table, or binary-search an interval set's sorted ranges. ``numgen random mod N`` draws
reciprocal_scale(get_random_u32(), N) from a seeded xorshift64* stream and indexes an
inline verdict table. Dynamic sets (session affinity) are one open-addressing table the
caller owns, (set id, address) -> expiry in emulated time.

Each hook runs its base chains in priority order. With a conntrack table, a packet of a
known flow skips the nat chains and gets the stored translation where the kernel's NAT hook
applies it (destination at priority -100 of prerouting/output, so the pre-dnat filter chains
see the original destination); a new flow is allocated before the chains and confirmed
with the NAT chosen, or aborted when dropped.
"""
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t

from conntrack_core cimport (ct_table_t, ct_result_t, ct_lookup, ct_alloc, ct_abort,
                             ct_confirm, ct_translate, CT_ERR_FULL, CTSTATE_UNTRACKED,
                             CTSTATE_INVALID)
from hashing cimport mix64
from natport cimport choose_snat_port, rand32
from packet cimport (packet_t, verdict_t, ACT_ACCEPT, ACT_DNAT, ACT_DROP, ACT_REJECT,
                     ORIGIN_HOST)

cdef enum:
    # expr_t.op
    E_CMP = 1
    E_LOOKUP = 2
    E_VMAP = 3
    E_NUMGEN = 4
    E_FIB = 5
    E_CT_STATE = 6
    E_IIF = 7
    E_OIF = 8
    E_MARK_SET = 9
    E_SET_UPDATE = 10
    E_DNAT = 11
    E_MASQ = 12
    E_SNAT = 13
    E_VERDICT = 14
    E_NOP = 15
    E_END = 16
    # verdict kinds (expr_t.vkind, slot/cell vkind)
    VK_NONE = 0
    VK_ACCEPT = 1
    VK_DROP = 2
    VK_REJECT = 3
    VK_RETURN = 4
    VK_JUMP = 5
    VK_GOTO = 6
    VK_CONTINUE = 7
    # selectors
    SEL_SADDR = 1
    SEL_DADDR = 2
    SEL_L4PROTO = 3
    SEL_DPORT = 4
    SEL_SPORT = 5
    SEL_MARK = 6
    # set kinds
    SK_HASH = 1
    SK_INTERVAL = 2
    SK_DYNAMIC = 3
    # hooks (hook_off index)
    H_PREROUTING = 0
    H_INPUT = 1
    H_FORWARD = 2
    H_OUTPUT = 3
    H_POSTROUTING = 4
    # base-chain / hook outcomes
    V_CONTINUE = 0
    V_DROP = 2
    V_REJECT = 3
    CT_NEW = 8
    CT_DNAT = 1024
    NAT_DST_PRIORITY = -100   # NF_IP_PRI_NAT_DST
    MAX_DEPTH = 16            # NFT_JUMP_STACK_SIZE

ctypedef struct expr_t:
    uint8_t op
    uint8_t neg
    uint8_t nsel
    uint8_t vkind
    uint8_t sel0
    uint8_t sel1
    uint8_t sel2
    uint8_t sel3
    int32_t set       # set index; numgen: first cell
    uint32_t arg      # compare: mask; numgen: modulus; dnat: endpoint; masq/snat: fully-random;
                      # fib: 1 saddr, 2 daddr
    int32_t target    # jump/goto: the target chain's first row
    int32_t next      # the first row after this row's rule
    uint32_t lo       # compare range / ct bits / iif bits / mark and-mask / NAT address
    uint32_t hi       # compare range / mark xor / DNAT port

ctypedef struct base_t:
    int32_t start     # the base chain's first row
    int32_t priority
    uint8_t nat       # a nat-type chain (runs only for a flow's first packet)

ctypedef struct nset_t:
    uint8_t kind
    uint8_t is_map
    uint8_t nkey
    uint8_t _pad
    int32_t off       # hash: first slot; interval: first range; dynamic: the set's id
    int32_t n
    uint32_t mask     # hash: slots - 1
    double timeout    # dynamic: seconds, 0 = never expires

ctypedef struct slot_t:
    uint64_t key
    uint8_t used
    uint8_t vkind
    int32_t vchain

ctypedef struct interval_t:
    uint64_t lo
    uint64_t hi
    uint8_t vkind
    int32_t vchain

ctypedef struct cell_t:
    uint8_t vkind
    int32_t vchain

ctypedef struct dyn_t:
    # the dynamic sets: key = (set id + 1) << 32 | address, value = expiry time
    uint64_t* keys
    double* expires
    uint64_t mask
    bint full

ctypedef struct env_t:
    const expr_t* exprs
    const nset_t* sets
    const slot_t* slots
    const interval_t* intervals
    const cell_t* cells
    const uint32_t* local_ips
    Py_ssize_t n_local
    uint32_t masquerade_ip
    dyn_t* dyn

ctypedef struct state_t:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto
    uint8_t origin_bit
    uint8_t snat
    uint8_t random_fully
    uint8_t has_oif        # the current hook has an output interface (eth0)
    uint32_t snat_ip
    uint32_t mark
    uint32_t ctstate
    uint32_t rules
    uint32_t probes
    int32_t endpoint
    uint64_t rng
    double now


def layout():
    """sizeof/offsetof of the structs, to check the numpy dtypes against."""
    cdef expr_t e
    cdef base_t c
    cdef nset_t s
    cdef slot_t sl
    cdef interval_t iv
    cdef cell_t ce
    eb, cb, sb = <size_t>&e, <size_t>&c, <size_t>&s
    slb, ivb, ceb = <size_t>&sl, <size_t>&iv, <size_t>&ce
    return {
        "expr_t": {"itemsize": sizeof(expr_t), "fields": {
            "op": <size_t>&e.op - eb, "sel0": <size_t>&e.sel0 - eb, "sel3": <size_t>&e.sel3 - eb,
            "set": <size_t>&e.set - eb, "arg": <size_t>&e.arg - eb,
            "target": <size_t>&e.target - eb, "next": <size_t>&e.next - eb,
            "lo": <size_t>&e.lo - eb, "hi": <size_t>&e.hi - eb}},
        "base_t": {"itemsize": sizeof(base_t), "fields": {
            "start": <size_t>&c.start - cb, "priority": <size_t>&c.priority - cb,
            "nat": <size_t>&c.nat - cb}},
        "nset_t": {"itemsize": sizeof(nset_t), "fields": {
            "off": <size_t>&s.off - sb, "n": <size_t>&s.n - sb, "mask": <size_t>&s.mask - sb,
            "timeout": <size_t>&s.timeout - sb}},
        "slot_t": {"itemsize": sizeof(slot_t), "fields": {
            "used": <size_t>&sl.used - slb, "vkind": <size_t>&sl.vkind - slb,
            "vchain": <size_t>&sl.vchain - slb}},
        "interval_t": {"itemsize": sizeof(interval_t), "fields": {
            "hi": <size_t>&iv.hi - ivb, "vkind": <size_t>&iv.vkind - ivb,
            "vchain": <size_t>&iv.vchain - ivb}},
        "cell_t": {"itemsize": sizeof(cell_t), "fields": {"vchain": <size_t>&ce.vchain - ceb}},
    }


def build_hash(slot_t[::1] slots, const uint64_t[::1] keys, const uint8_t[::1] vkinds,
               const int32_t[::1] vchains):
    """Insert keys (with their verdicts) into an empty power-of-two table; returns how
    many were inserted (fewer: duplicate keys, or the table is too small)."""
    cdef Py_ssize_t n = keys.shape[0], k, size = slots.shape[0]
    cdef uint64_t mask = <uint64_t>size - 1, i, h, step
    cdef Py_ssize_t done = 0
    if size == 0 or size & (size - 1):
        raise ValueError("the slot table needs a power-of-two size")
    if vkinds.shape[0] != n or vchains.shape[0] != n:
        raise ValueError("keys, vkinds and vchains differ in length")
    with nogil:
        for k in range(n):
            h = mix64(keys[k])
            for step in range(<uint64_t>size):
                i = (h + step) & mask
                if not slots[i].used:
                    slots[i].used = 1
                    slots[i].key = keys[k]
                    slots[i].vkind = vkinds[k]
                    slots[i].vchain = vchains[k]
                    done += 1
                    break
                if slots[i].key == keys[k]:
                    break
    return done


# ---------------------------------------------------------------------------------------
# matches

cdef inline uint32_t sel_value(uint8_t sel, const state_t* st) noexcept nogil:
    if sel == SEL_SADDR:
        return st.src
    if sel == SEL_DADDR:
        return st.dst
    if sel == SEL_L4PROTO:
        return st.proto
    if sel == SEL_DPORT:
        return st.dport
    if sel == SEL_SPORT:
        return st.sport
    return st.mark


cdef inline uint32_t sel_bits(uint8_t sel) noexcept nogil:
    if sel == SEL_L4PROTO:
        return 8
    if sel == SEL_DPORT or sel == SEL_SPORT:
        return 16
    return 32


cdef inline uint64_t build_key(const expr_t* e, const state_t* st) noexcept nogil:
    """The concatenated key, first component in the high bits (as the lowering packs)."""
    cdef uint64_t key = sel_value(e.sel0, st)
    if e.nsel > 1:
        key = (key << sel_bits(e.sel1)) | sel_value(e.sel1, st)
    if e.nsel > 2:
        key = (key << sel_bits(e.sel2)) | sel_value(e.sel2, st)
    if e.nsel > 3:
        key = (key << sel_bits(e.sel3)) | sel_value(e.sel3, st)
    return key


cdef inline bint is_local(uint32_t ip, const env_t* env) noexcept nogil:
    """fib type local: a node address or 127.0.0.0/8."""
    cdef Py_ssize_t k
    if (ip >> 24) == 127:
        return True
    for k in range(env.n_local):
        if env.local_ips[k] == ip:
            return True
    return False


cdef inline Py_ssize_t dyn_slot(dyn_t* d, uint64_t key, uint32_t* probes) noexcept nogil:
    """The slot holding key, or the empty slot where it would go (-1: table full)."""
    cdef uint64_t h = mix64(key)
    cdef uint64_t i, n
    for n in range(d.mask + 1):
        i = (h + n) & d.mask
        probes[0] += 1
        if d.keys[i] == key or d.keys[i] == 0:
            return <Py_ssize_t>i
    return -1


cdef inline bint set_lookup(const env_t* env, int32_t idx, uint64_t key, state_t* st,
                            uint8_t* vkind, int32_t* vchain) noexcept nogil:
    """Is key in the set (with its verdict for a map)?"""
    cdef const nset_t* s = &env.sets[idx]
    cdef uint64_t h, i, n
    cdef const slot_t* sl
    cdef int32_t a, b, m
    cdef Py_ssize_t slot
    if s.kind == SK_HASH:
        h = mix64(key)
        for n in range(<uint64_t>s.mask + 1):
            i = (h + n) & s.mask
            sl = &env.slots[s.off + i]
            st.probes += 1
            if not sl.used:
                return False
            if sl.key == key:
                vkind[0] = sl.vkind
                vchain[0] = sl.vchain
                return True
        return False
    if s.kind == SK_INTERVAL:
        st.probes += 1
        a = s.off
        b = s.off + s.n  # the first range with lo > key, then check the one before
        while a < b:
            m = (a + b) >> 1
            if env.intervals[m].lo <= key:
                a = m + 1
            else:
                b = m
        if a == s.off or env.intervals[a - 1].hi < key:
            return False
        vkind[0] = env.intervals[a - 1].vkind
        vchain[0] = env.intervals[a - 1].vchain
        return True
    if env.dyn == NULL:
        return False
    slot = dyn_slot(env.dyn, ((<uint64_t>s.off + 1) << 32) | <uint32_t>key, &st.probes)
    if slot < 0 or env.dyn.keys[slot] == 0:
        return False
    return st.now < env.dyn.expires[slot]  # nft_set_elem_expired: expiry <= now


cdef inline void set_update(const env_t* env, int32_t idx, uint32_t addr,
                            state_t* st) noexcept nogil:
    """``update @set { ip saddr }``: add the element or refresh its timeout."""
    cdef const nset_t* s = &env.sets[idx]
    cdef uint64_t key = ((<uint64_t>s.off + 1) << 32) | addr
    cdef Py_ssize_t slot
    if env.dyn == NULL:
        return
    slot = dyn_slot(env.dyn, key, &st.probes)
    if slot < 0:
        env.dyn.full = True
        return
    env.dyn.keys[slot] = key
    if s.timeout > 0:
        env.dyn.expires[slot] = st.now + s.timeout
    else:
        env.dyn.expires[slot] = INFINITY


cdef void eval_rule(const env_t* env, int32_t start, int32_t end, state_t* st, uint8_t* vkind,
                   int32_t* vchain) noexcept nogil:
    """Run one rule's rows; sets vkind/vchain (VK_NONE: no verdict, next rule)."""
    cdef int32_t i
    cdef const expr_t* e
    cdef uint32_t v, idx
    cdef bint ok
    cdef const cell_t* cell
    vkind[0] = VK_NONE
    for i in range(start, end):
        e = &env.exprs[i]
        if e.op == E_CMP:
            v = sel_value(e.sel0, st) & e.arg
            ok = e.lo <= v and v <= e.hi
            if ok == e.neg:
                return
        elif e.op == E_LOOKUP:
            ok = set_lookup(env, e.set, build_key(e, st), st, vkind, vchain)
            vkind[0] = VK_NONE
            if ok == e.neg:
                return
        elif e.op == E_VMAP:
            if not set_lookup(env, e.set, build_key(e, st), st, vkind, vchain):
                vkind[0] = VK_NONE  # a miss: NFT_BREAK
            return
        elif e.op == E_NUMGEN:
            # nft_ng_random_eval: reciprocal_scale(get_random_u32(), modulus)
            idx = <uint32_t>((<uint64_t>rand32(&st.rng) * <uint32_t>e.arg) >> 32)
            cell = &env.cells[e.set + idx]
            st.probes += 1  # the anonymous map lookup
            if cell.vkind == VK_NONE:
                return
            vkind[0] = cell.vkind
            vchain[0] = cell.vchain
            return
        elif e.op == E_FIB:
            ok = is_local(st.src if e.arg == 1 else st.dst, env)
            if ok == e.neg:
                return
        elif e.op == E_CT_STATE:
            ok = (st.ctstate & e.lo) != 0
            if ok == e.neg:
                return
        elif e.op == E_IIF:
            ok = (e.lo & st.origin_bit) != 0
            if ok == e.neg:
                return
        elif e.op == E_OIF:
            ok = (e.lo & (2 if st.has_oif else 1)) != 0
            if ok == e.neg:
                return
        elif e.op == E_MARK_SET:
            st.mark = (st.mark & e.lo) ^ e.hi
        elif e.op == E_SET_UPDATE:
            set_update(env, e.set, st.src if e.sel0 == SEL_SADDR else st.dst, st)
        elif e.op == E_DNAT:
            st.dst = e.lo
            if e.hi:
                st.dport = <uint16_t>e.hi
            st.endpoint = <int32_t>e.arg
            st.ctstate |= CT_DNAT
            vkind[0] = VK_ACCEPT  # nft_nat_eval: the verdict of nf_nat_setup_info
            return
        elif e.op == E_MASQ or e.op == E_SNAT:
            st.snat = 1
            st.snat_ip = e.lo if e.op == E_SNAT else env.masquerade_ip
            st.random_fully = e.arg != 0
            vkind[0] = VK_ACCEPT
            return
        elif e.op == E_VERDICT:
            vkind[0] = e.vkind
            vchain[0] = e.target
            return


cdef int run_base(const env_t* env, int32_t base, state_t* st) noexcept nogil:
    """One base chain (from its first row): V_CONTINUE (accepted: the next base chain
    runs), V_DROP or V_REJECT."""
    cdef int32_t stack[MAX_DEPTH]
    cdef int depth = 0
    cdef int32_t pc = base, nxt
    cdef uint8_t vk
    cdef int32_t vc = -1
    while True:
        if env.exprs[pc].op == E_END:
            if depth == 0:
                return V_CONTINUE  # the base chain's policy: accept
            depth -= 1
            pc = stack[depth]
            continue
        st.rules += 1
        nxt = env.exprs[pc].next
        eval_rule(env, pc, nxt, st, &vk, &vc)
        pc = nxt
        if vk == VK_NONE or vk == VK_CONTINUE:
            continue
        if vk == VK_ACCEPT:
            return V_CONTINUE
        if vk == VK_DROP:
            return V_DROP
        if vk == VK_REJECT:
            return V_REJECT
        if vk == VK_RETURN:
            if depth == 0:
                return V_CONTINUE
            depth -= 1
            pc = stack[depth]
        elif vk == VK_JUMP:
            if depth >= MAX_DEPTH:
                return V_DROP  # the lowering refuses such rulesets, as the kernel does
            stack[depth] = pc
            depth += 1
            pc = vc
        elif vk == VK_GOTO:
            pc = vc


cdef int run_hook(const env_t* env, const int32_t* hook_off, const base_t* bases,
                  int hook, state_t* st, bint skip_nat, bint* pending, uint32_t pdst,
                  uint16_t pdport) noexcept nogil:
    """A hook's base chains in priority order. ``pending``: a known flow's destination
    translation, applied where the NAT hook sits (before the first chain at priority
    >= -100, else after the last)."""
    cdef int32_t k
    cdef int v
    st.has_oif = hook == H_FORWARD or hook == H_OUTPUT or hook == H_POSTROUTING
    for k in range(hook_off[hook], hook_off[hook + 1]):
        if pending[0] and bases[k].priority >= NAT_DST_PRIORITY:
            st.dst = pdst
            st.dport = pdport
            pending[0] = False
        if skip_nat and bases[k].nat:
            continue
        v = run_base(env, bases[k].start, st)
        if v != V_CONTINUE:
            return v
    if pending[0]:
        st.dst = pdst
        st.dport = pdport
        pending[0] = False
    return V_CONTINUE


def process(const packet_t[::1] packets, verdict_t[::1] out, const expr_t[::1] exprs,
            const nset_t[::1] sets, const slot_t[::1] slots, const interval_t[::1] intervals,
            const cell_t[::1] cells, const int32_t[::1] hook_off, const base_t[::1] bases,
            const uint32_t[::1] local_ips, uint32_t masquerade_ip, uint64_t seed,
            uintptr_t conntrack=0, uint64_t[::1] dyn_keys=None, double[::1] dyn_expires=None,
            bint checked=False):
    """Walk the node's hooks for each packet; returns (generator state to continue from,
    whether the dynamic-set table ran out of room).

    The arrays after ``out`` are LoweredNft.engine_arrays(). conntrack: a ConntrackTable's
    table_address() (0: every packet is a flow's first); the caller keeps it alive.
    dyn_keys/dyn_expires: the dynamic sets (session affinity), equal power-of-two sizes,
    zeroed at start and kept by the caller between calls; None: affinity sets stay empty.
    checked: the arrays passed ``check`` (lower_nft runs it) and were not changed since, so
    the O(table) index validation is skipped (it is a large share of a small batch's time
    on a 100k-service table).
    """
    cdef Py_ssize_t n = packets.shape[0], k
    cdef state_t st
    cdef env_t env
    cdef dyn_t dyn
    cdef int f
    cdef uint64_t rng = seed if seed != 0 else 0x9E3779B97F4A7C15ULL
    cdef const packet_t* p
    cdef ct_table_t* ct = <ct_table_t*>conntrack
    cdef ct_result_t r
    cdef int32_t entry
    cdef uint32_t cprobes, sip, dip
    cdef uint16_t sport, dport, snat_port
    cdef bint hit, pending, moved, skip_nat
    cdef const base_t* bases_p
    if not checked:
        check(exprs, sets, slots, intervals, cells, hook_off, bases)
    if out.shape[0] < n:
        raise ValueError("verdict array shorter than the packet array")
    env.exprs = &exprs[0] if exprs.shape[0] else NULL
    bases_p = &bases[0] if bases.shape[0] else NULL
    env.sets = &sets[0] if sets.shape[0] else NULL
    env.slots = &slots[0] if slots.shape[0] else NULL
    env.intervals = &intervals[0] if intervals.shape[0] else NULL
    env.cells = &cells[0] if cells.shape[0] else NULL
    env.local_ips = &local_ips[0] if local_ips.shape[0] else NULL
    env.n_local = local_ips.shape[0]
    env.masquerade_ip = masquerade_ip
    env.dyn = NULL
    dyn.full = False
    if dyn_keys is not None:
        if dyn_expires is None or dyn_expires.shape[0] != dyn_keys.shape[0] or \
                dyn_keys.shape[0] == 0 or dyn_keys.shape[0] & (dyn_keys.shape[0] - 1):
            raise ValueError("dynamic-set tables: equal power-of-two sizes")
        dyn.keys = &dyn_keys[0]
        dyn.expires = &dyn_expires[0]
        dyn.mask = dyn_keys.shape[0] - 1
        env.dyn = &dyn
    with nogil:
        for k in range(n):
            p = &packets[k]
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
            st.probes = 0
            st.endpoint = -1
            st.rng = rng
            st.now = p.ts
            f = V_CONTINUE
            hit = False
            pending = False
            dip = 0
            dport = 0
            entry = -1
            r.probes = 0
            cprobes = 0
            snat_port = 0
            if ct != NULL:
                ct_lookup(ct, p, &r)
                st.ctstate = r.state
                if r.entry >= 0:  # a known flow: the stored translation, no nat chains
                    hit = True
                    ct_translate(ct, r.entry, r.dir, &sip, &sport, &dip, &dport)
                    st.snat = sip != p.src_ip or sport != p.src_port
                    st.snat_ip = sip  # the source changes in postrouting: filters see the old
                    snat_port = sport
                    pending = dip != p.dst_ip or dport != p.dst_port
                    st.endpoint = ct.e[r.entry].endpoint if r.dir == 0 else -1
                elif r.state != CTSTATE_UNTRACKED and r.state != CTSTATE_INVALID:
                    entry = ct_alloc(ct, p)  # before the chains, as the conntrack hook is
                    if entry == CT_ERR_FULL:
                        f = V_DROP
            # nf_nat_inet_fn runs the nat chains only for a packet with a conntrack entry:
            # a new flow's first packet (a known flow gets the stored binding; INVALID and
            # UNTRACKED packets have no entry and pass un-NATed)
            skip_nat = hit or (ct != NULL and entry < 0)
            if f == V_DROP:
                pass
            elif p.origin == ORIGIN_HOST:
                f = run_hook(&env, &hook_off[0], bases_p, H_OUTPUT, &st, skip_nat,
                             &pending, dip, dport)
                if f == V_CONTINUE:
                    f = run_hook(&env, &hook_off[0], bases_p, H_POSTROUTING, &st, skip_nat,
                                 &pending, dip, dport)
                if f == V_CONTINUE and is_local(st.dst, &env):
                    f = run_hook(&env, &hook_off[0], bases_p, H_INPUT, &st, skip_nat,
                                 &pending, dip, dport)
            else:
                f = run_hook(&env, &hook_off[0], bases_p, H_PREROUTING, &st, skip_nat,
                             &pending, dip, dport)
                if f == V_CONTINUE:
                    if is_local(st.dst, &env):
                        f = run_hook(&env, &hook_off[0], bases_p, H_INPUT, &st, skip_nat,
                                     &pending, dip, dport)
                    else:
                        f = run_hook(&env, &hook_off[0], bases_p, H_FORWARD, &st, skip_nat,
                                     &pending, dip, dport)
                        if f == V_CONTINUE:
                            f = run_hook(&env, &hook_off[0], bases_p, H_POSTROUTING,
                                         &st, skip_nat, &pending, dip, dport)
            rng = st.rng
            if st.snat and not hit and f == V_CONTINUE:
                snat_port = choose_snat_port(ct, st.proto, st.snat_ip, st.dst, st.dport,
                                             p.src_port, st.random_fully, &rng, p.ts, &cprobes)
            moved = st.dst != p.dst_ip or st.dport != p.dst_port
            if entry >= 0:
                if f != V_CONTINUE:
                    ct_abort(ct, entry)  # never confirmed: the packet died
                else:
                    entry = ct_confirm(ct, entry, st.dst if moved else 0,
                                       st.dport if moved else 0, st.snat_ip if st.snat else 0,
                                       snat_port if st.snat else 0, st.endpoint, st.mark,
                                       p.ts, &cprobes)
                    if entry < 0:
                        f = V_DROP  # insert clash
            if f == V_DROP:
                out[k].action = ACT_DROP
            elif f == V_REJECT:
                out[k].action = ACT_REJECT
            elif st.endpoint >= 0 or moved:
                out[k].action = ACT_DNAT
            else:
                out[k].action = ACT_ACCEPT
            out[k].dnat_ip = st.dst if moved else 0
            out[k].dnat_port = st.dport if moved else 0
            out[k].snat_ip = st.snat_ip if st.snat else 0
            out[k].snat_port = snat_port if st.snat else 0
            out[k].endpoint = st.endpoint
            out[k].rules = st.rules
            out[k].probes = st.probes + r.probes + cprobes
            out[k].ct_hit = hit
    return rng, dyn.full


def check(const expr_t[::1] exprs, const nset_t[::1] sets, const slot_t[::1] slots,
          const interval_t[::1] intervals, const cell_t[::1] cells,
          const int32_t[::1] hook_off, const base_t[::1] bases):
    """Every index the per-packet loop follows stays inside its array (it runs unchecked);
    ValueError otherwise."""
    cdef Py_ssize_t i, n = exprs.shape[0]
    cdef const expr_t* e
    cdef const nset_t* s
    if hook_off.shape[0] != 6 or hook_off[0] != 0 or hook_off[5] != bases.shape[0]:
        raise ValueError("hook_off: 6 offsets into bases")
    for i in range(5):
        if hook_off[i] > hook_off[i + 1]:
            raise ValueError("hook_off must not decrease")
    if n and exprs[n - 1].op != E_END:
        raise ValueError("the last chain is not closed by an END row")
    for i in range(bases.shape[0]):
        if not 0 <= bases[i].start < n:
            raise ValueError("base chain start out of bounds")
    for i in range(sets.shape[0]):
        s = &sets[i]
        if s.kind == SK_HASH:
            if s.mask & (s.mask + 1) or s.off < 0 or s.off + <Py_ssize_t>s.mask + 1 > slots.shape[0]:
                raise ValueError("hash set slots out of bounds")
        elif s.kind == SK_INTERVAL:
            if s.off < 0 or s.n < 0 or s.off + s.n > intervals.shape[0]:
                raise ValueError("interval set ranges out of bounds")
        elif s.kind != SK_DYNAMIC:
            raise ValueError("unknown set kind")
    for i in range(slots.shape[0]):
        if slots[i].used and (slots[i].vkind == VK_JUMP or slots[i].vkind == VK_GOTO) and \
                not 0 <= slots[i].vchain < n:
            raise ValueError("map verdict chain out of bounds")
    for i in range(intervals.shape[0]):
        if (intervals[i].vkind == VK_JUMP or intervals[i].vkind == VK_GOTO) and \
                not 0 <= intervals[i].vchain < n:
            raise ValueError("map verdict chain out of bounds")
    for i in range(cells.shape[0]):
        if (cells[i].vkind == VK_JUMP or cells[i].vkind == VK_GOTO) and not 0 <= cells[i].vchain < n:
            raise ValueError("numgen verdict chain out of bounds")
    for i in range(n):
        e = &exprs[i]
        if e.op == E_END:
            continue
        if not i < e.next <= n:  # a rule ends after its rows: the walk always moves on
            raise ValueError("rule end out of bounds")
        if (e.op == E_LOOKUP or e.op == E_VMAP or e.op == E_SET_UPDATE) and not 0 <= e.set < sets.shape[0]:
            raise ValueError("expression set index out of bounds")
        if e.op == E_SET_UPDATE and sets[e.set].kind != SK_DYNAMIC:
            raise ValueError("set update of a non-dynamic set")
        if e.op == E_NUMGEN and (e.arg == 0 or e.set < 0 or e.set + <Py_ssize_t>e.arg > cells.shape[0]):
            raise ValueError("numgen table out of bounds")
        if e.op == E_VERDICT and (e.vkind == VK_JUMP or e.vkind == VK_GOTO) and \
                not 0 <= e.target < n:
            raise ValueError("verdict chain out of bounds")
        if e.nsel > 4 or ((e.op == E_LOOKUP or e.op == E_VMAP) and e.nsel == 0):
            raise ValueError("bad selector count")
