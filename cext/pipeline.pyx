# cython: language_level=3
"""The packet pipeline, written once for every proxy mode.

Per packet, as the kernel runs it (see docs/engine.md for the picture):

1. conntrack (nf_conntrack_in): a packet of a known flow gets the flow's stored
   translation and skips the nat chains; a new flow gets an unconfirmed entry before the
   hooks (a full table drops the packet); INVALID and UNTRACKED packets pass un-NATed.
2. the netfilter hooks in routing order: from a pod or outside PREROUTING, then INPUT for
   a local destination (IPVS may send it on through OUTPUT and POSTROUTING) or FORWARD and
   POSTROUTING; from the host OUTPUT, POSTROUTING, then INPUT when the destination is
   local. At each hook the mode's ``Engine`` runs what it owns there.
3. SNAT/MASQUERADE source-port choice (nf_nat_l4proto_unique_tuple), then the entry is
   confirmed with the NAT chosen (a clash drops the packet) or aborted if the packet died.
4. the verdict row.

Engines plug in by subclassing ``Engine`` (pipeline.pxd) and overriding its cdef methods;
the dispatch is a C vtable call, no Python objects per packet.
"""
cimport cython
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

from packet cimport (packet_t, verdict_t, ACT_ACCEPT, ACT_DNAT, ACT_DROP, ACT_REJECT,
                     ORIGIN_HOST)
from conntrack_core cimport *

include "hashing.pxi"
include "conntrack_core.pxi"

include "record.pxi"
include "conntrack.pxi"

STEP_KINDS = {"rule": STEP_RULE, "nft_rule": STEP_NFT_RULE, "ipvs_in": STEP_IPVS_IN,
              "ipvs_out": STEP_IPVS_OUT, "bpf_map": STEP_BPF_MAP, "policy": STEP_POLICY,
              "policy_rule": STEP_POLICY_RULE}
HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
STEP_DTYPE = np.dtype([("kind", "u1"), ("matched", "u1"), ("extra", "u2"), ("index", "i4"),
                       ("value", "i4")])
DEFAULT_SEED = 0x9E3779B97F4A7C15


cdef class PolicyStage:
    """Base of the NetworkPolicy stages (netpolicy.IdentityPolicy, chains.ChainPolicy);
    alone it allows everything. ``counters``: (checked, egress_drops, ingress_drops),
    settable (a trace that must leave the node as it was puts them back)."""

    cdef int check(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        return POLICY_PASS

    @property
    def counters(self):
        return (self.checked, self.egress_drops, self.ingress_drops)

    @counters.setter
    def counters(self, value):
        checked, egress, ingress = value
        self.checked = checked
        self.egress_drops = egress
        self.ingress_drops = ingress

    def snapshot(self):
        """What packets change (the counters), for ``restore``."""
        return (self, self.counters)

    def restore(self, snap):
        if not isinstance(snap, tuple) or len(snap) != 2 or snap[0] is not self:
            raise ValueError("not a snapshot of this policy stage")
        self.counters = snap[1]


cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil


cdef enum:
    # conntrack prefetching across the batch (run): a row's bucket is loaded CT_AHEAD rows
    # before its chain's first entry is, which is CT_AHEAD rows before the lookup (the
    # second entry as a third stage made established packets 30-50% slower: reading the
    # first entry to find it stalls the loop)
    CT_AHEAD = 8
    CT_RING = 32        # > 2 * CT_AHEAD, a power of two: the rows' buckets in flight


cdef inline void ct_prefetch_bucket(const ct_table_t* t, const packet_t* p,
                                    uint32_t* slot) noexcept nogil:
    """Stage one: the row's bucket (kept in ``slot`` for stage two and the lookup)."""
    slot[0] = ct_tuple_bucket(t, p)
    __builtin_prefetch(&t.buckets[slot[0]])


cdef inline void ct_prefetch_node(const ct_table_t* t, int32_t node) noexcept nogil:
    """A chain node's entry, both its cache lines."""
    cdef const char* e
    if node != -1:
        e = <const char*>&t.e[node >> 1]
        __builtin_prefetch(e)
        __builtin_prefetch(e + sizeof(ct_entry_t) - 1)


cdef inline void ct_prefetch_entry(const ct_table_t* t, uint32_t bucket) noexcept nogil:
    """Stage two: the first entry of the bucket's chain."""
    ct_prefetch_node(t, t.buckets[bucket])


cdef extern from *:
    """
    #if defined(__x86_64__) || defined(__i386__)
    #include <x86intrin.h>
    /* rdtscp waits for the instructions before it (their loads included): a stage's
       cache misses are charged to it, not to the next one */
    static inline unsigned long long kp_ticks(void) { unsigned int aux; return __rdtscp(&aux); }
    #else
    #include <time.h>
    static inline unsigned long long kp_ticks(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
    }
    #endif
    """
    unsigned long long kp_ticks() noexcept nogil


# where a profiled run's ticks go (Engine.set_profile; bench --profile)
cdef enum:
    P_CONNTRACK = 0     # conntrack lookup, the known flow's translation, a new entry
    P_HOOKS = 1         # the mode's hooks: rules, maps, IPVS, the eBPF programs
    P_POLICY = 2        # the NetworkPolicy stage
    P_NAT = 3           # the SNAT port choice and the conntrack confirm
    P_VERDICT = 4       # writing the verdict row
    P_TOTAL = 5         # the whole loop (prefetching and per-packet set-up included)
    P_PACKETS = 6
    P_SLOTS = 8

PROF_CONNTRACK = P_CONNTRACK
PROF_HOOKS = P_HOOKS
PROF_POLICY = P_POLICY
PROF_NAT = P_NAT
PROF_VERDICT = P_VERDICT
PROF_TOTAL = P_TOTAL
PROF_PACKETS = P_PACKETS
PROF_SLOTS = P_SLOTS


def ticks() -> int:
    """The profile clock (the TSC on x86, else nanoseconds)."""
    return kp_ticks()


def tick_cost(int n=10000):
    """Median ticks between two back-to-back clock reads (``n`` pairs): what one read
    adds to the stage it closes."""
    cdef int i
    cdef unsigned long long a, b
    d = np.empty(max(n, 1), np.uint64)
    cdef uint64_t[::1] dv = d
    with nogil:
        for i in range(dv.shape[0]):
            a = kp_ticks()
            b = kp_ticks()
            dv[i] = b - a
    return int(np.median(d))


cdef class Engine:
    """Base of the mode engines: the node's own addresses (``local_ips``, uint32) and the
    address MASQUERADE picks. Not usable alone: every hook lets packets through."""

    def set_profile(self, counters):
        """Add each packet's ticks per stage to ``counters`` (uint64, PROF_SLOTS long,
        indexed by PROF_*) in later ``pipeline.run`` calls; None stops. The clock reads
        cost a few ns each: a profiled run is slower than a plain one."""
        cdef uint64_t[::1] view
        if counters is None:
            self.prof = NULL
            self._prof = None
            return
        if not isinstance(counters, np.ndarray) or counters.dtype != np.uint64 \
                or counters.ndim != 1 or counters.shape[0] != PROF_SLOTS \
                or not counters.flags.c_contiguous or not counters.flags.writeable:
            raise ValueError(f"counters: a writeable uint64 array of {PROF_SLOTS}")
        view = counters
        self._prof = counters
        self.prof = &view[0]

    def __init__(self, local_ips, uint32_t masquerade_ip):
        arr = np.ascontiguousarray(local_ips, dtype=np.uint32)
        if arr.ndim != 1:
            raise ValueError("local_ips: a one-dimensional array of IPv4 addresses")
        cdef const uint32_t[::1] view = arr
        self._local_ips = arr
        self.local_ips = &view[0] if view.shape[0] else NULL
        self.n_local = view.shape[0]
        self.masquerade_ip = masquerade_ip

    cdef int hook(self, int hook, const packet_t* p, pkt_state_t* st) noexcept nogil:
        return HV_CONTINUE

    cdef bint is_local(self, uint32_t ip) noexcept nogil:
        """The local routing table: loopback and the node's addresses."""
        return own_address(self, ip)

    cdef void known_flow(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        """A packet of a known flow, before the hooks: by default nf_nat applies the
        stored destination at once (engines with a NAT hook priority apply it later)."""
        if st.pending:
            st.dst = st.pend_dst
            st.dport = st.pend_dport
            st.pending = 0

    cdef void after_hooks(self, const packet_t* p, pkt_state_t* st, int verdict) noexcept nogil:
        pass

    cdef void prefetch(self, const packet_t* p, int stage) noexcept nogil:
        """A packet ahead (see ``prefetch_distance``): start loading what it will need."""
        pass

    cdef int begin(self) except -1:
        """Called with the GIL before a batch: the engine's last checks."""
        if type(self) is Engine:
            raise TypeError("Engine is a base class: use a mode's engine")
        return 0


@cython.auto_pickle(False)
cdef class Rng:
    """The seeded xorshift64* stream statistic matches, numgen and NAT ports draw from."""

    def __init__(self, uint64_t seed=0):
        self.x = seed if seed != 0 else DEFAULT_SEED

    @property
    def state(self):
        """The generator's 64-bit state (0 is not a state: setting it seeds the default)."""
        return self.x

    @state.setter
    def state(self, uint64_t value):
        self.x = value if value != 0 else DEFAULT_SEED


cdef class Recorder:
    """What a traced packet did: the steps (up to ``capacity`` stored), the branch draws
    met, conntrack's view. ``force(choices)`` makes the next run take those outcomes at
    its first draws (and the first possible outcome at the rest)."""

    def __init__(self, Py_ssize_t capacity=1 << 16):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._steps = np.zeros(capacity, STEP_DTYPE)
        cdef step_t[::1] view = self._steps
        self.r.steps = &view[0]
        self.r.cap = capacity
        self.r.nforced = -1
        self.clear()

    def clear(self):
        self.r.nsteps = 0
        self.r.ndraws = 0
        self.r.ct_state = 0
        self.r.ct_dir = -1
        self.r.ct_hit = 0
        self.r.ct_probes = 0
        self.r.lookups = 0

    def force(self, choices):
        """Draw k takes choices[k]; None: draws come from the stream again."""
        if choices is None:
            self.r.nforced = -1
            return
        choices = list(choices)
        if len(choices) > MAX_DRAWS:
            raise ValueError(f"at most {MAX_DRAWS} forced draws")
        for k, c in enumerate(choices):
            if not 0 <= c < (1 << 31):
                raise ValueError("a forced outcome is a non-negative index")
            self.r.forced[k] = c
        self.r.nforced = len(choices)

    @property
    def steps(self):
        """The stored steps (STEP_DTYPE rows)."""
        return self._steps[:min(self.r.nsteps, self.r.cap)].copy()

    @property
    def steps_taken(self):
        return self.r.nsteps

    @property
    def draws(self):
        """(kind, outcomes, threshold, chosen) of each branch draw met, in order; kind
        is "statistic" (outcome 0: the rule's probability matched, threshold: that
        probability scaled to 2^31) or "numgen" (outcome k: the value k, equally likely)."""
        cdef int32_t k
        return [("statistic" if self.r.draws[k].kind == DRAW_STATISTIC else "numgen",
                 self.r.draws[k].n, self.r.draws[k].threshold, self.r.draws[k].chosen)
                for k in range(min(self.r.ndraws, MAX_DRAWS))]

    @property
    def draws_truncated(self):
        return self.r.ndraws > MAX_DRAWS

    @property
    def lookups(self):
        """Set, map and IPVS lookups made (each once, however many probes it took)."""
        return self.r.lookups

    @property
    def conntrack(self):
        """(ctstate bits, direction or -1, whether conntrack held the flow, the chain
        nodes conntrack inspected: lookup, NAT port checks and confirm)."""
        return self.r.ct_state, self.r.ct_dir, bool(self.r.ct_hit), self.r.ct_probes


cdef inline bint tuple_used(ConntrackTable ct, uint8_t proto, uint32_t ip, uint16_t port,
                            uint32_t dst, uint16_t dport, double now,
                            uint32_t* probes) noexcept nogil:
    """nf_nat_used_tuple: a flow already holds the reply tuple (dst:dport -> ip:port)."""
    cdef int32_t d
    return ct_find(&ct.tab, dst, dport, ip, port, proto, now, &d, probes) >= 0


cdef uint16_t choose_snat_port(ConntrackTable ct, uint8_t proto, uint32_t snat_ip,
                               uint32_t dst, uint16_t dport, uint16_t sport,
                               bint random_fully, uint64_t* rng, double now,
                               uint32_t* probes) noexcept nogil:
    """get_unique_tuple / nf_nat_l4proto_unique_tuple for MASQUERADE/SNAT: the original
    port when the new tuple is free (unless fully random), else a port from the original
    port's class (1-511, 600-1023, 1024-65535) starting at a random offset, up to 128
    attempts, then halving rounds from new random offsets. Not a branch point of traces."""
    cdef uint32_t lo, size, attempts, i, off
    cdef uint16_t port = sport
    if proto != 6 and proto != 17 and proto != 132:
        return sport
    if not random_fully and (ct is None or not tuple_used(
            ct, proto, snat_ip, sport, dst, dport, now, probes)):
        return sport
    if sport < 512:
        lo, size = 1, 511
    elif sport < 1024:
        lo, size = 600, 424
    else:
        lo, size = 1024, 64512
    off = rand31(rng) & 0xFFFF  # get_random_u16()
    attempts = 128 if size > 128 else size
    while True:
        for i in range(attempts):
            port = <uint16_t>(lo + (off + i) % size)
            if ct is None or not tuple_used(ct, proto, snat_ip, port, dst, dport, now, probes):
                return port
        if attempts >= size or attempts < 16:
            return port  # the kernel gives up and the confirm clashes
        attempts //= 2
        off = rand31(rng) & 0xFFFF


cdef inline bint alive(int v) noexcept nogil:
    return v != HV_DROP and v != HV_REJECT


cdef inline bint own_address(Engine eng, uint32_t ip) noexcept nogil:
    """Loopback or one of the node's addresses."""
    cdef Py_ssize_t k
    if (ip >> 24) == 127:
        return True
    for k in range(eng.n_local):
        if eng.local_ips[k] == ip:
            return True
    return False


cdef inline bint route_local(Engine eng, uint32_t ip) noexcept nogil:
    """The routing decision: is the destination this node? (the engine's is_local,
    called only when it knows more local addresses than the node's own)"""
    if eng.more_local:
        return eng.is_local(ip)
    return own_address(eng, ip)


cdef inline int call_hook(Engine eng, int hook, const packet_t* p,
                          pkt_state_t* st) noexcept nogil:
    # (a known flow's DNAT still pending is applied by the engine at its NAT hook: call it)
    if st.skip_nat and not st.pending and (eng.nat_only_hooks >> hook) & 1:
        return HV_CONTINUE
    return eng.hook(hook, p, st)


cdef int walk_hooks(Engine eng, const packet_t* p, pkt_state_t* st) noexcept nogil:
    """The netfilter hooks in routing order; the engine runs what it owns at each."""
    cdef int v
    if p.origin == ORIGIN_HOST:
        v = call_hook(eng, HOOK_OUTPUT, p, st)
        if alive(v):
            v = call_hook(eng, HOOK_POSTROUTING, p, st)
        if alive(v) and route_local(eng, st.dst):
            v = call_hook(eng, HOOK_INPUT, p, st)
        return v
    v = call_hook(eng, HOOK_PREROUTING, p, st)
    if not alive(v):
        return v
    if route_local(eng, st.dst):
        v = call_hook(eng, HOOK_INPUT, p, st)
        if v == HV_SENT_ON:  # ip_vs_nat_xmit: out through LOCAL_OUT and POSTROUTING
            st.sent_on = 1
            v = call_hook(eng, HOOK_OUTPUT, p, st)
            if alive(v):
                v = call_hook(eng, HOOK_POSTROUTING, p, st)
        return v
    v = call_hook(eng, HOOK_FORWARD, p, st)
    if alive(v):
        v = call_hook(eng, HOOK_POSTROUTING, p, st)
    return v


cdef inline int policy_stage(PolicyStage pol, const packet_t* p, pkt_state_t* st) noexcept nogil:
    """A new flow's NetworkPolicy verdict on the packet as the hooks left it (the source as
    sent, the destination after DNAT); counted by direction."""
    cdef int r = pol.check(p, st)
    pol.checked += 1
    if r == POLICY_EGRESS_DENIED:
        pol.egress_drops += 1
    elif r == POLICY_INGRESS_DENIED:
        pol.ingress_drops += 1
    return r


cdef void run_packet(Engine eng, ConntrackTable ct, const packet_t* p, verdict_t* out,
                     uint64_t* rng, recorder_t* rec, PolicyStage pol,
                     uint32_t ct_bucket) noexcept nogil:
    cdef uint64_t* prof = eng.prof
    cdef unsigned long long t0 = 0, t1 = 0
    cdef pkt_state_t st
    cdef ct_result_t r
    cdef int v = HV_CONTINUE
    cdef int32_t entry = -1
    cdef uint32_t cprobes = 0, sip, dip
    cdef uint16_t sport, dport, snat_port = 0
    cdef bint hit = False, moved
    st.src = p.src_ip
    st.dst = p.dst_ip
    st.sport = p.src_port
    st.dport = p.dst_port
    st.proto = p.proto
    st.origin_bit = <uint8_t>(1 << p.origin) if p.origin < 8 else 0
    st.snat = 0
    st.snat_ip = 0
    st.random_fully = 0
    st.skip_nat = 0
    st.has_oif = 0
    st.pending = 0
    st.sent_on = 0
    st.ipvs_prop = 0
    st.ipvs_hit = 0
    st.ipvs_vproto = 0
    st.ipvs_vport = 0
    st.ipvs_vaddr = 0
    st.ct_hit = 0
    st.snat_fixed = 0
    st.snat_port = 0
    st.ct_dir = -1
    st.pend_dst = 0
    st.pend_dport = 0
    st.mark = 0
    st.ctstate = PS_CT_NEW
    st.rules = 0
    st.probes = 0
    st.lookups = 0
    st.endpoint = -1
    st.rng = rng[0]
    st.now = p.ts
    st.rec = rec
    r.probes = 0
    r.state = PS_CT_NEW
    r.dir = -1
    if prof != NULL:
        t0 = kp_ticks()
    if ct is not None:
        ct_lookup_in(&ct.tab, p, &r, ct_bucket)  # the bucket run's prefetch hashed
        st.ctstate = r.state
        if r.entry >= 0:  # a known flow: the stored translation, no nat rules
            hit = True
            st.ct_hit = 1
            st.ct_dir = <int8_t>r.dir
            ct_translate(&ct.tab, r.entry, r.dir, &sip, &sport, &dip, &dport)
            st.snat = sip != p.src_ip or sport != p.src_port
            st.snat_ip = sip  # the source changes in POSTROUTING: the filters see the old
            snat_port = sport
            st.pend_dst = dip
            st.pend_dport = dport
            st.pending = dip != p.dst_ip or dport != p.dst_port
            st.endpoint = ct.tab.e[r.entry].endpoint if r.dir == 0 else -1
            if not eng.plain_known_flow:
                eng.known_flow(p, &st)
            elif st.pending:  # Engine.known_flow, without the call
                st.dst = st.pend_dst
                st.dport = st.pend_dport
                st.pending = 0
        elif r.state != CTSTATE_UNTRACKED and r.state != CTSTATE_INVALID:
            entry = ct_alloc(&ct.tab, p)  # before the hooks, as the conntrack hook is
            if entry == CT_ERR_FULL:
                v = HV_DROP
    if prof != NULL:
        t1 = kp_ticks()
        prof[P_CONNTRACK] += t1 - t0
        t0 = t1
    if rec != NULL:
        rec.ct_state = r.state
        rec.ct_dir = r.dir if hit else -1
        rec.ct_hit = hit
    # nf_nat runs the nat chains only for a packet with a new conntrack entry (or for
    # every packet without conntrack); never for INVALID/UNTRACKED ones
    st.skip_nat = ct is not None and entry < 0
    if v != HV_DROP:
        v = walk_hooks(eng, p, &st)
    if not eng.no_after_hooks:
        eng.after_hooks(p, &st, v)
    if prof != NULL:
        t1 = kp_ticks()
        prof[P_HOOKS] += t1 - t0
        t0 = t1
    # NetworkPolicy (a CNI's filter) on a flow's first packet: a known flow (conntrack's,
    # or an engine's own flow table: st.ct_hit) passed it when it was new
    if pol is not None and not st.ct_hit and alive(v):
        if policy_stage(pol, p, &st) != POLICY_PASS:
            v = HV_DROP
    if prof != NULL:
        t1 = kp_ticks()
        prof[P_POLICY] += t1 - t0
        t0 = t1
    rng[0] = st.rng
    if st.snat and st.snat_fixed:
        snat_port = st.snat_port  # the engine's own NAT (eBPF: its SNAT map)
    elif st.snat and not hit and alive(v):
        snat_port = choose_snat_port(ct, st.proto, st.snat_ip, st.dst, st.dport, p.src_port,
                                     st.random_fully, rng, p.ts, &cprobes)
    moved = st.dst != p.dst_ip or st.dport != p.dst_port
    if entry >= 0:
        if not alive(v):
            ct_abort(&ct.tab, entry)  # never confirmed: the packet died
        else:
            entry = ct_confirm(&ct.tab, entry, st.dst if moved else 0, st.dport if moved else 0,
                               st.snat_ip if st.snat else 0, snat_port if st.snat else 0,
                               st.endpoint, st.mark, p.ts, &cprobes)
            if entry < 0:
                v = HV_DROP  # insert clash
    if prof != NULL:
        t1 = kp_ticks()
        prof[P_NAT] += t1 - t0
        t0 = t1
    if v == HV_DROP:
        out.action = ACT_DROP
    elif v == HV_REJECT:
        out.action = ACT_REJECT
    elif st.endpoint >= 0 or moved:
        out.action = ACT_DNAT
    else:
        out.action = ACT_ACCEPT
    out.dnat_ip = st.dst if moved else 0
    out.dnat_port = st.dport if moved else 0
    out.snat_ip = st.snat_ip if st.snat else 0
    out.snat_port = snat_port if st.snat else 0
    out.endpoint = st.endpoint
    out.rules = st.rules
    out.probes = r.probes + cprobes + st.probes
    out.ct_hit = st.ct_hit or st.ipvs_hit
    out.lookups = <uint16_t>(st.lookups if st.lookups < 65535 else 65535)
    if prof != NULL:
        prof[P_VERDICT] += kp_ticks() - t0
    if rec != NULL:
        rec.ct_probes += r.probes + cprobes
        rec.lookups += st.lookups
        if ct is None and st.ct_hit:  # an engine with its own flow table (eBPF)
            rec.ct_hit = 1
            rec.ct_dir = st.ct_dir


def run(Engine engine not None, const packet_t[::1] packets, verdict_t[::1] out,
        ConntrackTable conntrack=None, Rng rng=None, Recorder recorder=None,
        PolicyStage policy=None):
    """Every packet of the batch through conntrack and the node's hooks, in order.

    ``conntrack``: the node's table (None: every packet is its flow's first); ``rng``: the
    node's random stream, advanced in place (None: a fresh stream from seed 0);
    ``recorder``: record what each packet did (traces; None on the batch path);
    ``policy``: the NetworkPolicy stage new flows pass after the hooks (None: the engine's
    ``policy``, which is None unless the Dataplane set one).
    """
    cdef Py_ssize_t n = packets.shape[0], k
    cdef int ahead = engine.prefetch_distance, half = ahead // 2, quarter = ahead // 4
    cdef recorder_t* rec = NULL
    cdef uint64_t state
    if out.shape[0] < n:
        raise ValueError("verdict array shorter than the packet array")
    if rng is None:
        rng = Rng()
    if recorder is not None:
        rec = &recorder.r
    if policy is None:
        policy = engine.policy
    engine.begin()
    state = rng.x
    cdef uint64_t* prof = engine.prof
    cdef unsigned long long start = 0
    cdef ct_table_t* tab = &conntrack.tab if conntrack is not None else NULL
    cdef uint32_t ring[CT_RING]
    with nogil:
        if prof != NULL:
            start = kp_ticks()
        if tab != NULL:  # the first rows' buckets: stage one for rows 0 .. 2 * CT_AHEAD - 1
            for k in range(min(2 * CT_AHEAD, n)):
                ct_prefetch_bucket(tab, &packets[k], &ring[k & (CT_RING - 1)])
        for k in range(n):
            if tab != NULL:
                if k + 2 * CT_AHEAD < n:
                    ct_prefetch_bucket(tab, &packets[k + 2 * CT_AHEAD],
                                       &ring[(k + 2 * CT_AHEAD) & (CT_RING - 1)])
                if k + CT_AHEAD < n:
                    ct_prefetch_entry(tab, ring[(k + CT_AHEAD) & (CT_RING - 1)])
            if ahead > 0:
                if k + ahead < n:
                    engine.prefetch(&packets[k + ahead], 0)
                if half and k + half < n:
                    engine.prefetch(&packets[k + half], 1)
                if quarter and k + quarter < n:
                    engine.prefetch(&packets[k + quarter], 2)
            run_packet(engine, conntrack, &packets[k], &out[k], &state, rec, policy,
                       ring[k & (CT_RING - 1)] if tab != NULL else 0)
        if prof != NULL:
            prof[P_TOTAL] += kp_ticks() - start
            prof[P_PACKETS] += n
    rng.x = state
