# cython: language_level=3
"""nftables packet engine: the node's base chains walked expression by expression over
packed arrays, with sets and verdict maps as hash tables.

A chain is a run of ``expr_t`` rows closed by an END row (lowered by
kproxy_emu/dataplane/nft_lowering.py); each row knows where its rule ends. Rules run in
order as nft_do_chain runs them: a match that fails ends the rule (NFT_BREAK), a verdict
ends it with that verdict; ``jump`` pushes a return point (the next rule), ``goto`` does
not, ``return`` or the end of a regular chain pops, the end of a base chain is its policy
(accept). Jump targets are row indices, so a walk touches only the rows it runs. A NAT
statement accepts for its base chain, as nft_nat_eval does. Set and
map lookups hash the concatenated key (packed into 64 bits) into the set's open-addressing
table, or binary-search an interval set's sorted ranges. ``numgen random mod N`` draws
reciprocal_scale(get_random_u32(), N) from a seeded xorshift64* stream and indexes an
inline verdict table. Dynamic sets (session affinity) are one open-addressing table the
engine holds, (set id, address) -> expiry in emulated time.

``NftEngine`` runs each hook's base chains in priority order for the packet pipeline
(pipeline.pyx). A packet of a known flow skips the nat chains and gets the stored
translation where the kernel's NAT hook applies it (destination at priority -100 of
prerouting/output, so the pre-dnat filter chains see the original destination).
"""
from cpython cimport array
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.unicode cimport (
    PyUnicode_1BYTE_KIND,
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
)
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np

from packet cimport packet_t
from kproxy_emu._cext.pipeline cimport Engine, pkt_state_t, STEP_NFT_RULE

include "hashing.pxi"
include "record.pxi"

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
    # arg: compare: mask; numgen: modulus; dnat: endpoint; masq/snat: fully-random;
    # fib: 1 saddr, 2 daddr
    uint32_t arg
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

cdef inline uint32_t sel_value(uint8_t sel, const pkt_state_t* st) noexcept nogil:
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


cdef inline uint64_t build_key(const expr_t* e, const pkt_state_t* st) noexcept nogil:
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


cdef inline bint set_lookup(const env_t* env, int32_t idx, uint64_t key, pkt_state_t* st,
                            uint8_t* vkind, int32_t* vchain, int32_t* elem) noexcept nogil:
    """Is key in the set (with its verdict for a map)? ``elem``: where it was found (the
    slot or range within the set), which a trace turns back into the element."""
    cdef const nset_t* s = &env.sets[idx]
    count_lookup(st)
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
                elem[0] = <int32_t>i
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
        elem[0] = a - 1 - s.off
        return True
    if env.dyn == NULL:
        return False
    slot = dyn_slot(env.dyn, ((<uint64_t>s.off + 1) << 32) | <uint32_t>key, &st.probes)
    if slot < 0 or env.dyn.keys[slot] == 0:
        return False
    return st.now < env.dyn.expires[slot]  # nft_set_elem_expired: expiry <= now


cdef inline void set_update(const env_t* env, int32_t idx, uint32_t addr,
                            pkt_state_t* st) noexcept nogil:
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


cdef bint eval_rule(const env_t* env, int32_t start, int32_t end, pkt_state_t* st,
                    uint8_t* vkind, int32_t* vchain, int32_t* elem) noexcept nogil:
    """Run one rule's rows; sets vkind/vchain (VK_NONE: no verdict, next rule). Returns
    whether the rule matched (its matches held and any verdict map had an element);
    ``elem``: the verdict map's element that gave the verdict (-1: none)."""
    cdef int32_t i
    cdef const expr_t* e
    cdef uint32_t v, idx
    cdef bint ok
    cdef const cell_t* cell
    cdef int32_t found = -1
    vkind[0] = VK_NONE
    elem[0] = -1
    for i in range(start, end):
        e = &env.exprs[i]
        if e.op == E_CMP:
            v = sel_value(e.sel0, st) & e.arg
            ok = e.lo <= v and v <= e.hi
            if ok == e.neg:
                return False
        elif e.op == E_LOOKUP:
            ok = set_lookup(env, e.set, build_key(e, st), st, vkind, vchain, &found)
            vkind[0] = VK_NONE
            if ok == e.neg:
                return False
        elif e.op == E_VMAP:
            if not set_lookup(env, e.set, build_key(e, st), st, vkind, vchain, &found):
                vkind[0] = VK_NONE  # a miss: NFT_BREAK
                return False
            elem[0] = found
            return True
        elif e.op == E_NUMGEN:
            idx = draw_numgen(st, <uint32_t>e.arg)
            cell = &env.cells[e.set + idx]
            st.probes += 1  # the anonymous map lookup
            count_lookup(st)
            if cell.vkind == VK_NONE:
                return False
            vkind[0] = cell.vkind
            vchain[0] = cell.vchain
            elem[0] = <int32_t>idx
            return True
        elif e.op == E_FIB:
            ok = is_local(st.src if e.arg == 1 else st.dst, env)
            if ok == e.neg:
                return False
        elif e.op == E_CT_STATE:
            ok = (st.ctstate & e.lo) != 0
            if ok == e.neg:
                return False
        elif e.op == E_IIF:
            ok = (e.lo & st.origin_bit) != 0
            if ok == e.neg:
                return False
        elif e.op == E_OIF:
            ok = (e.lo & (2 if st.has_oif else 1)) != 0
            if ok == e.neg:
                return False
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
            return True
        elif e.op == E_MASQ or e.op == E_SNAT:
            st.snat = 1
            st.snat_ip = e.lo if e.op == E_SNAT else env.masquerade_ip
            st.random_fully = e.arg != 0
            vkind[0] = VK_ACCEPT
            return True
        elif e.op == E_VERDICT:
            vkind[0] = e.vkind
            vchain[0] = e.target
            return True
    return True


cdef int run_base(const env_t* env, int32_t base, pkt_state_t* st) noexcept nogil:
    """One base chain (from its first row): V_CONTINUE (accepted: the next base chain
    runs), V_DROP or V_REJECT."""
    cdef int32_t stack[MAX_DEPTH]
    cdef int depth = 0
    cdef int32_t pc = base, nxt
    cdef uint8_t vk
    cdef int32_t vc = -1
    cdef bint matched
    cdef int32_t elem
    while True:
        if env.exprs[pc].op == E_END:
            if depth == 0:
                return V_CONTINUE  # the base chain's policy: accept
            depth -= 1
            pc = stack[depth]
            continue
        st.rules += 1
        nxt = env.exprs[pc].next
        matched = eval_rule(env, pc, nxt, st, &vk, &vc, &elem)
        if st.rec != NULL:
            record_step(st.rec, STEP_NFT_RULE, pc, matched, 0, elem)
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
                  int hook, pkt_state_t* st) noexcept nogil:
    """A hook's base chains in priority order. ``st.pending``: a known flow's destination
    translation, applied where the NAT hook sits (before the first chain at priority
    >= -100, else after the last)."""
    cdef int32_t k
    cdef int v
    st.has_oif = hook == H_FORWARD or hook == H_OUTPUT or hook == H_POSTROUTING
    for k in range(hook_off[hook], hook_off[hook + 1]):
        if st.pending and bases[k].priority >= NAT_DST_PRIORITY:
            st.dst = st.pend_dst
            st.dport = st.pend_dport
            st.pending = 0
        if st.skip_nat and bases[k].nat:
            continue
        v = run_base(env, bases[k].start, st)
        if v != V_CONTINUE:
            return v
    if st.pending:
        st.dst = st.pend_dst
        st.dport = st.pend_dport
        st.pending = 0
    return V_CONTINUE


cdef class NftEngine(Engine):
    """The node's nftables (kube-proxy's ``ip kube-proxy`` table) for the packet pipeline.

    The arrays are LoweredNft.engine_arrays() (checked here once: ValueError if an index
    the packet loop follows leaves its array). ``dyn``: (keys, expires), the dynamic sets'
    table (session affinity), equal power-of-two sizes, kept by the caller across engines
    like the kernel's set elements; None: affinity sets stay empty. ``dyn_full`` tells
    whether an update found no room.
    """
    cdef env_t env
    cdef dyn_t dyn
    cdef const int32_t* hook_off
    cdef const base_t* bases
    cdef object _arrays
    cdef readonly object dyn_tables

    def __init__(self, exprs, sets, slots, intervals, cells, hook_off, bases, local_ips,
                 uint32_t masquerade_ip, *, dyn=None):
        Engine.__init__(self, local_ips, masquerade_ip)
        self.no_after_hooks = True  # nothing runs after the hooks here
        for name, a in (("exprs", exprs), ("sets", sets), ("slots", slots),
                        ("intervals", intervals), ("cells", cells), ("hook_off", hook_off),
                        ("bases", bases)):
            if not isinstance(a, np.ndarray) or a.ndim != 1:
                raise TypeError(f"{name} must be a one-dimensional numpy array")
        check(exprs, sets, slots, intervals, cells, hook_off, bases)
        cdef const expr_t[::1] ev = exprs
        cdef const nset_t[::1] sv = sets
        cdef const slot_t[::1] slv = slots
        cdef const interval_t[::1] iv = intervals
        cdef const cell_t[::1] cv = cells
        cdef const int32_t[::1] hv = hook_off
        cdef const base_t[::1] bv = bases
        cdef uint64_t[::1] dk
        cdef double[::1] de
        self._arrays = (exprs, sets, slots, intervals, cells, hook_off, bases)
        # hooks whose base chains are all nat ones: a known flow's packet skips the call
        cdef int h
        cdef int32_t k
        cdef bint only_nat
        for h in range(hv.shape[0] - 1):
            only_nat = True
            for k in range(hv[h], hv[h + 1]):
                only_nat = only_nat and bv[k].nat
            if only_nat:
                self.nat_only_hooks |= <uint8_t>(1 << h)
        self.env.exprs = &ev[0] if ev.shape[0] else NULL
        self.env.sets = &sv[0] if sv.shape[0] else NULL
        self.env.slots = &slv[0] if slv.shape[0] else NULL
        self.env.intervals = &iv[0] if iv.shape[0] else NULL
        self.env.cells = &cv[0] if cv.shape[0] else NULL
        self.env.local_ips = self.local_ips
        self.env.n_local = self.n_local
        self.env.masquerade_ip = masquerade_ip
        self.hook_off = &hv[0]
        self.bases = &bv[0] if bv.shape[0] else NULL
        self.env.dyn = NULL
        self.dyn.full = False
        self.dyn_tables = None
        if dyn is not None:
            keys, expires = dyn
            if not isinstance(keys, np.ndarray) or not isinstance(expires, np.ndarray):
                raise TypeError("dyn: (keys, expires) numpy arrays")
            dk = keys
            de = expires
            if de.shape[0] != dk.shape[0] or dk.shape[0] == 0 or dk.shape[0] & (dk.shape[0] - 1):
                raise ValueError("dynamic-set tables: equal power-of-two sizes")
            self.dyn.keys = &dk[0]
            self.dyn.expires = &de[0]
            self.dyn.mask = dk.shape[0] - 1
            self.env.dyn = &self.dyn
            self.dyn_tables = (keys, expires)

    @property
    def dyn_full(self):
        return bool(self.dyn.full)

    def snapshot(self):
        """The state packets change (the dynamic sets), for ``restore``."""
        return (self, tuple(a.copy() for a in self.dyn_tables)
                if self.dyn_tables is not None else None, self.dyn.full)

    def restore(self, snap):
        if not isinstance(snap, tuple) or len(snap) != 3 or snap[0] is not self:
            raise ValueError("not a snapshot of this engine")
        if snap[1] is not None:
            for a, saved in zip(self.dyn_tables, snap[1]):
                a[:] = saved
        self.dyn.full = snap[2]

    cdef int begin(self) except -1:
        return 0

    cdef void known_flow(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        pass  # the stored destination is applied at the NAT hook's priority (run_hook)

    cdef int hook(self, int hook, const packet_t* p, pkt_state_t* st) noexcept nogil:
        return run_hook(&self.env, self.hook_off, self.bases, hook, st)


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


# ---------------------------------------------------------------------- lowering help
# (kproxy_emu/dataplane/nft_lowering.py): the rules of one chain, the two shapes of every
# endpoint chain (most rules of a large table) turned into rows here, the others handed
# back to the builder. Text is read as Latin-1 code units; anything unusual goes back.

cdef inline bint _at(const uint8_t* s, Py_ssize_t n, Py_ssize_t i, const char* word,
                     Py_ssize_t k) noexcept:
    """s[i:i+k] == word."""
    cdef Py_ssize_t j
    if i + k > n:
        return False
    for j in range(k):
        if s[i + j] != <uint8_t>word[j]:
            return False
    return True


cdef inline Py_ssize_t _quad(const uint8_t* s, Py_ssize_t i, Py_ssize_t end,
                             uint32_t* out) noexcept:
    """inet_pton's dotted quad in s[i:end] (four parts 0-255, no leading zero, nothing
    else): 1 with the address in out, else 0."""
    cdef uint32_t v = 0, part = 0
    cdef int parts = 0, digits = 0
    cdef uint8_t c
    while i < end:
        c = s[i]
        if c >= 48 and c <= 57:
            if digits and part == 0:
                return 0  # a leading zero
            part = part * 10 + (c - 48)
            digits += 1
            if part > 255:
                return 0
        elif c == 46 and digits and parts < 3:
            v = (v << 8) | part
            parts += 1
            part = 0
            digits = 0
        else:
            return 0
        i += 1
    if parts != 3 or not digits:
        return 0
    out[0] = (v << 8) | part
    return 1


cdef inline Py_ssize_t _space(const uint8_t* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and s[i] != 32:
        i += 1
    return i


cdef inline expr_t* _rows(bytearray out, Py_ssize_t k) except NULL:
    """Room for k more rows at the end of out."""
    cdef Py_ssize_t n = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, n + k * <Py_ssize_t>sizeof(expr_t))
    cdef expr_t* e = <expr_t*>(PyByteArray_AS_STRING(out) + n)
    memset(e, 0, k * sizeof(expr_t))
    return e


cdef inline void _cmp(expr_t* e, uint8_t sel, uint32_t value) noexcept:
    e.op, e.nsel, e.sel0 = E_CMP, 1, sel
    e.set, e.arg, e.target, e.next = -1, 0xFFFFFFFF, -1, -1
    e.lo = e.hi = value


cdef bint _endpoint_rule(str text, bytearray out, dict chain_index, dict endpoint_index,
                         list endpoints, array.array edge_src, array.array edge_dst,
                         long chain) except -1:
    """``ip saddr A jump C`` or ``meta l4proto P dnat to A:PORT`` (single spaces, nothing
    more) as the two rows match()/statement() give; False: another text."""
    if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return False
    cdef const uint8_t* s = <const uint8_t*>PyUnicode_DATA(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), i, j, k
    cdef uint32_t ip, port = 0, proto
    cdef expr_t* e
    if _at(s, n, 0, b"ip saddr ", 9):
        j = _space(s, 9, n)
        if not _at(s, n, j, b" jump ", 6) or not _quad(s, 9, j, &ip):
            return False
        if _space(s, j + 6, n) != n:
            return False
        target = chain_index.get(text[j + 6:])
        if target is None:
            return False
        e = _rows(out, 2)
        _cmp(e, SEL_SADDR, ip)
        e[1].op, e[1].vkind, e[1].set, e[1].target, e[1].next = E_VERDICT, VK_JUMP, -1, target, -1
        _push(edge_src, chain)
        _push(edge_dst, <long>target)
        return True
    if not _at(s, n, 0, b"meta l4proto ", 13):
        return False
    if _at(s, n, 13, b"tcp dnat to ", 12):
        proto, i = 6, 25
    elif _at(s, n, 13, b"udp dnat to ", 12):
        proto, i = 17, 25
    elif _at(s, n, 13, b"sctp dnat to ", 13):
        proto, i = 132, 26
    else:
        return False
    if _space(s, i, n) != n:
        return False
    j = n - 1  # the last ":" (rpartition)
    while j >= i and s[j] != 58:
        j -= 1
    if j < i or j == n - 1 or not _quad(s, i, j, &ip):
        return False
    for k in range(j + 1, n):
        if s[k] < 48 or s[k] > 57:
            return False
        port = port * 10 + (s[k] - 48)
        if port > 0xFFFF:
            return False
    dest = text[i:]
    ep = endpoint_index.get(dest)
    if ep is None:
        ep = endpoint_index[dest] = len(endpoints)
        endpoints.append(dest)
    e = _rows(out, 2)
    _cmp(e, SEL_L4PROTO, proto)
    e[1].op, e[1].set, e[1].arg, e[1].target, e[1].next = E_DNAT, -1, ep, -1, -1
    e[1].lo, e[1].hi = ip, port
    return True


cdef Py_ssize_t _find(const uint8_t* s, Py_ssize_t n, Py_ssize_t i, const char* word,
                      Py_ssize_t k) noexcept:
    """The first index >= i of word in s[:n], else -1."""
    while i + k <= n:
        if _at(s, n, i, word, k):
            return i
        i += 1
    return -1


cdef bint _numgen_rule(str text, bytearray out, dict chain_index, list cells,
                       array.array edge_src, array.array edge_dst, long chain,
                       long max_n) except -1:
    """``numgen random mod N vmap { 0 : goto a , 1 : goto b ... }`` with the keys 0..N-1
    in order (as kube-proxy writes it; split at " , " like str.split) as match() lowers
    it: N goto cells and a NUMGEN row; False: another text."""
    if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return False
    cdef const uint8_t* s = <const uint8_t*>PyUnicode_DATA(text)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 18, j, k, digits
    cdef long count = 0, key
    cdef expr_t* e
    if not _at(s, n, 0, b"numgen random mod ", 18) or i >= n or s[i] == 48:
        return False
    while i < n and s[i] >= 48 and s[i] <= 57:
        count = count * 10 + (s[i] - 48)
        if count > max_n:
            return False
        i += 1
    if count == 0 or not _at(s, n, i, b" vmap { ", 8) or not _at(s, n, n - 2, b" }", 2):
        return False
    i += 8
    targets = []
    for k in range(count):
        key, digits = 0, 0  # the key: k written as str(k)
        while i < n and s[i] >= 48 and s[i] <= 57 and digits < 12:
            key = key * 10 + (s[i] - 48)
            digits += 1
            i += 1
        if key != k or digits == 0 or (digits > 1 and s[i - digits] == 48):
            return False
        if not _at(s, n, i, b" : goto ", 8):
            return False
        i += 8
        j = _find(s, n - 2, i, b" , ", 3)
        if (j < 0) != (k == count - 1):
            return False  # more or fewer parts than N
        if j < 0:
            j = n - 2
        target = chain_index.get(text[i:j])
        if target is None:
            return False
        targets.append(target)
        i = j + 3
    off = len(cells)
    for target in targets:
        cells.append((VK_GOTO, target))
        _push(edge_src, chain)
        _push(edge_dst, <long>target)
    e = _rows(out, 1)
    e.op, e.set, e.arg, e.target, e.next = E_NUMGEN, <int32_t>off, <uint32_t>count, -1, -1
    return True


def lower_chains(builder, list chains, array.array starts, array.array bounds, bint direct,
                 long max_numgen):
    """Append the chains' rows to ``builder.exprs`` (rows as expr_t), each closed by an END
    row: each chain's first row to ``starts``, each rule's first row and the row after it
    to ``bounds`` (byte offsets). The endpoint shapes and the service chains' numgen
    dispatch (at most ``max_numgen`` ways) are lowered here (when ``direct``),
    any other rule by ``builder.lower_rule(chain, text, index)`` (``builder.cur_chain``
    set to the chain's index); a rule that gave no row gets a NOP (the engine counts
    every rule)."""
    cdef bytearray out = builder.exprs
    cdef dict chain_index = builder.chain_index, endpoint_index = builder.endpoint_index
    cdef list endpoints = builder.endpoints, rules
    cdef array.array edge_src = builder.edge_src, edge_dst = builder.edge_dst
    cdef list cells = builder.cells
    cdef Py_ssize_t first, i, cid
    cdef expr_t* e
    lower_rule = builder.lower_rule
    for cid in range(len(chains)):
        chain = chains[cid]
        rules = chain.rules
        _push(starts, PyByteArray_GET_SIZE(out))
        if not rules:
            _end(out)
            continue
        builder.cur_chain = cid
        name = chain.name
        for i in range(len(rules)):
            r = rules[i]
            text = r.text if r.comment is None else r.full_text
            first = PyByteArray_GET_SIZE(out)
            if not (direct and type(text) is str and (
                    _endpoint_rule(text, out, chain_index, endpoint_index, endpoints,
                                   edge_src, edge_dst, cid)
                    or _numgen_rule(text, out, chain_index, cells, edge_src, edge_dst, cid,
                                    max_numgen))):
                lower_rule(name, text, i)
            if PyByteArray_GET_SIZE(out) == first:
                e = _rows(out, 1)
                e.op, e.set, e.target, e.next = E_NOP, -1, -1, -1
            _push(bounds, first)
            _push(bounds, PyByteArray_GET_SIZE(out))
        _end(out)
    builder.cur_chain = -1


cdef inline void _push(array.array a, long v) except *:
    array.resize_smart(a, len(a) + 1)
    a.data.as_longs[len(a) - 1] = v


cdef inline void _end(bytearray out) except *:
    cdef expr_t* e = _rows(out, 1)
    e.op, e.set, e.arg, e.target, e.next = E_END, -1, 0, -1, -1
