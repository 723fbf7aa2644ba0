# cython: language_level=3
"""The eBPF mode's datapath, compiled: Cilium's service load balancer over packed maps.

- ``LbTable``: one node's load-balancing maps (lowered by
  kproxy_emu/dataplane/ebpf_lowering.py from netfilter/bpfmaps.py) in flat arrays and
  hash tables: ``lb4_lookup_service`` with the scope switch, the session-affinity map
  with its expiry and affinity-match check, the random slot or Maglev LUT pick, the
  backend map. ``new_flows`` runs a batch of new flows through that lookup alone (what
  kproxy_emu/dataplane/ebpf_reference.py models in Python: its twin).
- ``LruMap``: a BPF_MAP_TYPE_LRU_HASH (128-bit keys; the least recently used entry goes
  when an insert finds the map full): Cilium's CT, SNAT and affinity maps, and the
  connected sockets' translations.
- ``EbpfEngine``: the mode's engine on the one packet pipeline. Pods and the host are
  balanced by the socket-level load balancer at connect time (the packet leaves with
  the backend's address; no per-packet NAT afterwards) and tracked by bpf_lxc's CT
  lookups; external traffic (NodePort, LoadBalancer, externalIPs) by the tc path
  (``nodeport_lb4``): service lookup, CT_SERVICE entry, backend, then delivery to a local
  backend or SNAT / DSR to a remote one. Every map lookup is counted (``st.lookups``)
  and, in traces, recorded as a step. docs/ebpf.md says what follows Cilium exactly and
  what is simplified.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

from packet cimport (packet_t, ORIGIN_EXTERNAL, ORIGIN_HOST, PROTO_TCP, TCP_SYN, TCP_ACK,
                     TCP_FIN, TCP_RST)
from kproxy_emu._cext.pipeline cimport (Engine, pkt_state_t, HOOK_PREROUTING, HOOK_OUTPUT,
                                        HV_CONTINUE, HV_DROP, HV_REJECT, STEP_BPF_MAP,
                                        DRAW_NUMGEN)

cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil

include "jhash.pxi"
include "hashing.pxi"
include "record.pxi"


cdef enum:
    V_DNAT = 0
    V_NO_SERVICE = 1
    V_NO_BACKEND = 2
    FLAG_SESSION_AFFINITY = 1 << 4
    FLAG_ROUTABLE = 1 << 6
    FLAG_SOURCE_RANGE = 1 << 7
    FLAG_TWO_SCOPES = 1 << 13
    SCOPE_INT = 1
    FE_NONE = -1            # no frontend
    FE_EMPTY = -2           # a frontend without a usable backend
    # the maps a trace step names (step index)
    MAP_SERVICES = 0        # extra: 0 external scope, 1 internal scope, 2 a backend slot
    MAP_BACKENDS = 1
    MAP_AFFINITY = 2
    MAP_AFFINITY_MATCH = 3
    MAP_MAGLEV = 4
    MAP_CT = 5              # extra: 0 forward, 1 reverse (reply), 2 the CT_SERVICE entry
    MAP_SNAT = 6            # extra: 0 forward mapping, 1 reverse (reply), 2 a port tried
    MAP_SOURCE_RANGE = 7
    MAP_REV_NAT = 8
    MAP_SOCKET = 9          # the connected socket's translation (not a map lookup)
    # LruMap key tags: which map an entry belongs to (kb's low byte)
    TAG_CT = 0
    TAG_SERVICE = 1
    TAG_SOCKET = 2
    TAG_NAT_FWD = 3
    TAG_NAT_REV = 4
    # entry flags
    CTF_REV_NAT = 1         # replies get the frontend (the reverse-NAT map's) as their source
    CTF_SEEN_NON_SYN = 2
    CTF_CLOSING = 4
    # Cilium's NodePort SNAT port range and retries (bpf/lib/nat.h, node_config.h)
    PREFETCH_DISTANCE = 16   # rows ahead (measured: docs/ebpf.md)
    NAT_PORT_MIN = 32768
    NAT_PORT_MAX = 65535
    SNAT_COLLISION_RETRIES = 32


ctypedef struct lru_entry_t:
    uint64_t ka             # key: (src << 32) | dst
    uint64_t kb             # key: sport << 48 | dport << 32 | proto << 8 | tag
    double expires          # CT / SNAT / socket entries: end of life; affinity: last used
    uint32_t backend        # backend ID
    uint32_t rev_nat        # rev_nat_index
    uint32_t addr           # the address the entry translates to
    uint32_t hint           # a socket's entry: its flow's CT entry + 1 (0: none known)
    uint16_t port
    uint16_t flags          # CTF_*
    uint16_t ref            # CLOCK maps: used since the hand last passed
    int32_t endpoint        # the endpoint table's index of the backend, -1
    int32_t prev            # recency list (head: least recently used)
    int32_t next

LRU_ENTRY_DTYPE = np.dtype(
    [("ka", "u8"), ("kb", "u8"), ("expires", "f8"), ("backend", "u4"), ("rev_nat", "u4"),
     ("addr", "u4"), ("hint", "u4"), ("port", "u2"), ("flags", "u2"),
     ("ref", "u2"), ("endpoint", "i4"), ("prev", "i4"), ("next", "i4")], align=True)


cdef inline uint64_t key_a(uint32_t src, uint32_t dst) noexcept nogil:
    return (<uint64_t>src << 32) | dst


cdef inline uint64_t key_b(uint16_t sport, uint16_t dport, uint8_t proto,
                           uint8_t tag) noexcept nogil:
    return (<uint64_t>sport << 48) | (<uint64_t>dport << 32) | (<uint64_t>proto << 8) | tag


cdef inline uint64_t svc_key(uint32_t addr, uint16_t port, uint8_t proto,
                             uint8_t scope) noexcept nogil:
    # +1: 0 marks an empty bucket
    return ((<uint64_t>addr << 32) | (<uint64_t>port << 16) | (<uint64_t>proto << 8) | scope) + 1


cdef inline uint32_t bswap32(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24)


cdef inline uint32_t bswap16(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 8) | ((x >> 8) & 0xff)


cdef inline void map_step(pkt_state_t* st, int32_t which, bint found, uint16_t extra,
                          int32_t value) noexcept nogil:
    """One map lookup: counted, and recorded in a trace."""
    st.lookups += 1
    if st.rec != NULL:
        record_step(st.rec, STEP_BPF_MAP, which, found, extra, value)


def _table_size(Py_ssize_t n):
    cdef Py_ssize_t size = 16
    while size < 2 * n:
        size <<= 1
    return size


# ------------------------------------------------------------------------ LRU hash map


ctypedef struct lru_t:
    lru_entry_t* e
    int32_t* buckets
    uint64_t mask
    int32_t head
    int32_t tail
    int32_t free_list       # entries freed by removals (-1: none)
    int32_t used            # entries ever taken: [used, capacity) are untouched
    int32_t n
    int32_t capacity
    int32_t hand            # CLOCK maps: the next entry the eviction sweep looks at
    bint exact              # exact LRU (a recency list) or CLOCK (reference bits)
    uint64_t evictions


cdef inline uint64_t lru_home(const lru_t* m, uint64_t ka, uint64_t kb) noexcept nogil:
    return mix64(ka ^ mix64(kb)) & m.mask


cdef int64_t lru_slot(const lru_t* m, uint64_t ka, uint64_t kb, uint32_t* probes) noexcept nogil:
    """The bucket holding the key, or -(the empty bucket it would take) - 1."""
    cdef uint64_t pos = lru_home(m, ka, kb)
    cdef int32_t i
    while True:
        probes[0] += 1
        i = m.buckets[pos] - 1  # buckets hold entry + 1: 0 is empty
        if i < 0:
            return -<int64_t>pos - 1
        if m.e[i].ka == ka and m.e[i].kb == kb:
            return <int64_t>pos
        pos = (pos + 1) & m.mask


cdef inline void lru_unlink(lru_t* m, int32_t i) noexcept nogil:
    if m.e[i].prev >= 0:
        m.e[m.e[i].prev].next = m.e[i].next
    else:
        m.head = m.e[i].next
    if m.e[i].next >= 0:
        m.e[m.e[i].next].prev = m.e[i].prev
    else:
        m.tail = m.e[i].prev


cdef inline void lru_push_mru(lru_t* m, int32_t i) noexcept nogil:
    m.e[i].prev = m.tail
    m.e[i].next = -1
    if m.tail >= 0:
        m.e[m.tail].next = i
    else:
        m.head = i
    m.tail = i


cdef inline void lru_touch(lru_t* m, int32_t i) noexcept nogil:
    if m.tail != i:
        lru_unlink(m, i)
        lru_push_mru(m, i)


cdef int32_t lru_find(lru_t* m, uint64_t ka, uint64_t kb, uint32_t* probes) noexcept nogil:
    """The entry of the key (now the most recently used), or -1."""
    cdef int64_t pos = lru_slot(m, ka, kb, probes)
    cdef int32_t i
    if pos < 0:
        return -1
    i = m.buckets[pos] - 1
    if m.exact:
        lru_touch(m, i)
    else:
        m.e[i].ref = 1
    return i


cdef void lru_remove(lru_t* m, int32_t i) noexcept nogil:
    """Delete entry ``i`` (backward-shift deletion: linear probing keeps no tombstones)."""
    cdef uint32_t dummy = 0
    cdef int64_t found = lru_slot(m, m.e[i].ka, m.e[i].kb, &dummy)
    cdef uint64_t pos, j, h
    cdef int32_t k
    if found < 0:
        return
    pos = <uint64_t>found
    j = pos
    while True:
        j = (j + 1) & m.mask
        k = m.buckets[j] - 1
        if k < 0:
            break
        h = lru_home(m, m.e[k].ka, m.e[k].kb)
        if (pos <= j and (h <= pos or h > j)) or (pos > j and h <= pos and h > j):
            m.buckets[pos] = k + 1
            pos = j
    m.buckets[pos] = 0
    if m.exact:
        lru_unlink(m, i)
    m.e[i].next = m.free_list
    m.e[i].prev = -1
    m.free_list = i
    m.n -= 1


cdef int32_t lru_clock_victim(lru_t* m) noexcept nogil:
    """CLOCK (second chance) over a full map: entries used since the hand last passed
    lose their reference bit and stay; the first one without it goes."""
    cdef int32_t i
    while True:
        i = m.hand
        m.hand = (m.hand + 1) % m.capacity
        if m.e[i].ref:
            m.e[i].ref = 0
        else:
            return i


cdef int32_t lru_insert(lru_t* m, uint64_t ka, uint64_t kb, uint32_t* probes) noexcept nogil:
    """A blank entry for the key (the existing one, blanked, if the key is there); a
    full map first evicts its least recently used entry."""
    cdef int64_t pos = lru_slot(m, ka, kb, probes)
    cdef int32_t i
    if pos >= 0:
        i = m.buckets[pos] - 1
        if m.exact:
            lru_touch(m, i)
    else:
        if m.n == m.capacity:
            lru_remove(m, m.head if m.exact else lru_clock_victim(m))
            m.evictions += 1
            pos = lru_slot(m, ka, kb, probes)
        if m.free_list >= 0:
            i = m.free_list
            m.free_list = m.e[i].next
        else:
            i = m.used
            m.used += 1
        m.n += 1
        m.buckets[-pos - 1] = i + 1
        m.e[i].ka = ka
        m.e[i].kb = kb
        if m.exact:
            lru_push_mru(m, i)
    m.e[i].ref = 1
    m.e[i].expires = 0
    m.e[i].backend = 0
    m.e[i].rev_nat = 0
    m.e[i].addr = 0
    m.e[i].hint = 0
    m.e[i].port = 0
    m.e[i].flags = 0
    m.e[i].endpoint = -1
    return i


cdef class LruMap:
    """A BPF_MAP_TYPE_LRU_HASH of ``capacity`` entries: 128-bit keys, open addressing
    over entry indices; a lookup marks the entry used and an insert into a full map
    evicts one not used lately. ``exact``: a recency list, the least recently used entry
    goes; else reference bits swept by a CLOCK hand, the approximation the kernel's LRU
    makes too (``bpf_lru_node_set_ref`` on lookup, referenced nodes rotated, not evicted):
    a lookup is one write to the entry it reads."""

    cdef lru_t t
    cdef object _entries
    cdef object _buckets

    def __init__(self, int32_t capacity, bint exact=True):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        # zeroed memory: the kernel maps it in as the map fills (a fresh map costs nothing)
        self._entries = np.zeros(capacity, LRU_ENTRY_DTYPE)
        self._buckets = np.zeros(_table_size(capacity), np.int32)
        cdef lru_entry_t[::1] ev = self._entries
        cdef int32_t[::1] bv = self._buckets
        self.t.e = &ev[0]
        self.t.buckets = &bv[0]
        self.t.mask = bv.shape[0] - 1
        self.t.capacity = capacity
        self.t.exact = exact
        self.t.hand = 0
        self.t.head = self.t.tail = self.t.free_list = -1
        self.t.used = self.t.n = 0
        self.t.evictions = 0

    @property
    def capacity(self):
        return self.t.capacity

    @property
    def evictions(self):
        """Entries evicted by inserts into the full map."""
        return self.t.evictions

    def clear(self):
        """Empty the map."""
        self._buckets[:] = 0
        self.t.hand = 0
        self.t.head = self.t.tail = self.t.free_list = -1
        self.t.used = self.t.n = 0
        self.t.evictions = 0

    def __len__(self):
        return self.t.n

    @property
    def exact(self):
        return bool(self.t.exact)

    def entries(self):
        """The live entries (a copy; LRU_ENTRY_DTYPE): least recently used first in an
        exact map, in slot order in a CLOCK one."""
        order = []
        cdef int32_t i
        if self.t.exact:
            i = self.t.head
            while i >= 0:
                order.append(i)
                i = self.t.e[i].next
        else:
            live = self._buckets[self._buckets > 0] - 1
            order = sorted(int(k) for k in live)
        return self._entries[np.array(order, np.int64)].copy()

    def snapshot(self):
        """The map's state (the entries taken so far and the buckets), for ``restore``."""
        return (self, self._entries[:self.t.used].copy(), self._buckets.copy(), self.t.head,
                self.t.tail, self.t.free_list, self.t.used, self.t.n, self.t.evictions,
                self.t.hand)

    def restore(self, snap):
        if not isinstance(snap, tuple) or len(snap) != 10 or snap[0] is not self:
            raise ValueError("not a snapshot of this map")
        used = snap[6]
        self._entries[:used] = snap[1]
        self._buckets[:] = snap[2]
        (self.t.head, self.t.tail, self.t.free_list, self.t.used, self.t.n,
         self.t.evictions, self.t.hand) = snap[3:]


# ------------------------------------------------------------------------ the LB maps


cdef enum:
    TAG_AFFINITY = 5


ctypedef struct fe_t:           # one frontend (a slot-0 entry of the services map)
    uint32_t count              # backends new flows may get
    uint32_t flags
    uint32_t rev_nat
    uint32_t timeout            # session affinity, seconds
    int32_t first               # its first slot in ``slots``
    int32_t lut                 # its Maglev row, -1: none
    int32_t sr_first            # its source ranges in sr_net / sr_mask
    int32_t sr_count

ctypedef struct be_t:           # one backend (the backends map's value)
    uint32_t id
    uint32_t addr
    int32_t endpoint            # index in the endpoint table, -1
    uint16_t port
    uint8_t local               # runs on this node
    uint8_t _pad

ctypedef struct bucket_t:       # open addressing: key + 1 (0: empty) -> index
    uint64_t key
    int32_t value
    int32_t _pad

FE_DTYPE = np.dtype([("count", "u4"), ("flags", "u4"), ("rev_nat", "u4"), ("timeout", "u4"),
                     ("first", "i4"), ("lut", "i4"), ("sr_first", "i4"), ("sr_count", "i4")],
                    align=True)
BE_DTYPE = np.dtype([("id", "u4"), ("addr", "u4"), ("endpoint", "i4"), ("port", "u2"),
                     ("local", "u1"), ("_pad", "u1")], align=True)
BUCKET_DTYPE = np.dtype([("key", "u8"), ("value", "i4"), ("_pad", "i4")], align=True)


cdef inline int64_t bucket_find(const bucket_t* t, uint64_t mask, uint64_t key) noexcept nogil:
    """Linear probing: the bucket holding ``key``, or -(empty bucket) - 1."""
    cdef uint64_t pos = mix64(key) & mask
    while True:
        if t[pos].key == key:
            return <int64_t>pos
        if t[pos].key == 0:
            return -<int64_t>pos - 1
        pos = (pos + 1) & mask


def _buckets(keys, values):
    """A bucket table over ``keys`` (already +1; duplicates keep the first)."""
    cdef Py_ssize_t size = _table_size(len(keys)), i
    cdef int64_t pos
    arr = np.zeros(size, BUCKET_DTYPE)
    cdef bucket_t[::1] t = arr
    for i in range(len(keys)):
        pos = bucket_find(&t[0], size - 1, keys[i])
        if pos < 0:
            t[-pos - 1].key = keys[i]
            t[-pos - 1].value = values[i]
    return arr


cdef class LbTable:
    """One node's maps, packed (see ``kproxy_emu.dataplane.ebpf_lowering.lower``): the
    services map as buckets over frontend records, slots and Maglev rows as backend
    indices, the backends map as buckets over backend records (one cache line or less
    per lookup).

    Backends are indexed in ``be_ids`` order; ``be_addr``/``be_port``/``be_endpoint``/
    ``be_local`` (optional for the lookup alone) give each one's address, port, index in
    the endpoint table and whether it runs on this node. ``rn_addr``/``rn_port``: the
    reverse-NAT map by rev_nat_index. ``fe_sr_first``/``fe_sr_count`` index ``sr_net``/
    ``sr_mask``: a LoadBalancer frontend's source ranges. ``affinity``: the session-
    affinity LRU map (kept across syncs by the caller; else a new one of ``capacity``)."""

    cdef const bucket_t* svc
    cdef uint64_t svc_mask
    cdef const fe_t* fe
    cdef Py_ssize_t n_fe
    cdef const int32_t* slots       # backend index of each slot
    cdef const int32_t* luts        # backend index of each Maglev cell, row-major
    cdef Py_ssize_t n_luts
    cdef uint32_t m
    cdef uint32_t jhash_seed
    cdef bint use_maglev            # the node's algorithm: Maglev (else random)
    cdef const bucket_t* bes        # backend ID + 1 -> index
    cdef uint64_t be_mask
    cdef const be_t* be
    cdef Py_ssize_t n_be
    cdef const bucket_t* match      # (rev_nat << 32 | ID) + 1
    cdef uint64_t match_mask
    cdef const uint32_t* sr_net
    cdef const uint32_t* sr_mask
    cdef const uint32_t* rn_addr    # the reverse-NAT map by rev_nat_index (0: no entry)
    cdef const uint16_t* rn_port
    cdef readonly Py_ssize_t n_rev_nat
    cdef object _arrays             # the numpy arrays behind the pointers
    cdef readonly LruMap affinity

    def __init__(self, const uint32_t[::1] fe_addr, const uint16_t[::1] fe_port,
                 const uint8_t[::1] fe_proto, const uint8_t[::1] fe_scope,
                 const uint32_t[::1] fe_count, const uint32_t[::1] fe_flags,
                 const uint32_t[::1] fe_rev_nat, const uint32_t[::1] fe_timeout,
                 const int32_t[::1] fe_first, const int32_t[::1] fe_lut,
                 const uint32_t[::1] slot_be, const uint32_t[:, ::1] luts,
                 const uint32_t[::1] be_ids, const uint64_t[::1] match,
                 uint32_t m, uint32_t jhash_seed, bint use_maglev=False,
                 int32_t capacity=65536, LruMap affinity=None,
                 be_addr=None, be_port=None, be_endpoint=None, be_local=None,
                 rn_addr=None, rn_port=None, fe_sr_first=None, fe_sr_count=None,
                 sr_net=None, sr_mask=None):
        cdef Py_ssize_t i, n = fe_addr.shape[0], nb = be_ids.shape[0]
        if (fe_port.shape[0] != n or fe_proto.shape[0] != n or fe_scope.shape[0] != n
                or fe_count.shape[0] != n or fe_flags.shape[0] != n or fe_rev_nat.shape[0] != n
                or fe_timeout.shape[0] != n or fe_first.shape[0] != n or fe_lut.shape[0] != n):
            raise ValueError("frontend columns must have the same length")
        if capacity < 1:
            raise ValueError("capacity must be positive")
        for i in range(n):
            if fe_first[i] < 0 or fe_first[i] + <Py_ssize_t>fe_count[i] > slot_be.shape[0]:
                raise ValueError("a frontend's slots run past slot_be")
            if fe_lut[i] >= luts.shape[0] or (fe_lut[i] >= 0 and luts.shape[1] != m):
                raise ValueError("a frontend's Maglev row is out of range")
        if luts.shape[0] and m == 0:
            raise ValueError("m must be positive")
        ids = np.asarray(be_ids, np.uint64)
        be_table = _buckets(ids + 1, np.arange(nb, dtype=np.int32))
        index_of = {int(b): k for k, b in enumerate(be_ids)}

        def indices(id_array):
            flat = np.asarray(id_array, np.uint32).ravel()
            try:
                return np.array([index_of[int(b)] for b in flat], np.int32)
            except KeyError:
                raise ValueError("a slot or Maglev row names an unknown backend") from None

        slots = indices(slot_be)
        lut_idx = indices(luts)
        fe = np.zeros(n, FE_DTYPE)
        fe["count"] = fe_count
        fe["flags"] = fe_flags
        fe["rev_nat"] = fe_rev_nat
        fe["timeout"] = fe_timeout
        fe["first"] = fe_first
        fe["lut"] = fe_lut
        fe["sr_first"] = _column(fe_sr_first, n, np.int32, 0, "fe_sr_first")
        fe["sr_count"] = _column(fe_sr_count, n, np.int32, 0, "fe_sr_count")
        net = np.ascontiguousarray(sr_net if sr_net is not None else [], np.uint32)
        mask = np.ascontiguousarray(sr_mask if sr_mask is not None else [], np.uint32)
        if mask.shape[0] != net.shape[0]:
            raise ValueError("sr_net and sr_mask must have the same length")
        if n and ((fe["sr_first"] < 0).any() or (fe["sr_count"] < 0).any()
                  or (fe["sr_first"] + fe["sr_count"] > net.shape[0]).any()):
            raise ValueError("a frontend's source ranges run past sr_net")
        be = np.zeros(nb, BE_DTYPE)
        be["id"] = be_ids
        be["addr"] = _column(be_addr, nb, np.uint32, 0, "be_addr")
        be["port"] = _column(be_port, nb, np.uint16, 0, "be_port")
        be["endpoint"] = _column(be_endpoint, nb, np.int32, -1, "be_endpoint")
        be["local"] = _column(be_local, nb, np.uint8, 0, "be_local")
        keys = ((np.asarray(fe_addr, np.uint64) << 32) | (np.asarray(fe_port, np.uint64) << 16)
                | (np.asarray(fe_proto, np.uint64) << 8) | np.asarray(fe_scope, np.uint64)) + 1
        if len(np.unique(keys)) != n:
            raise ValueError("duplicate frontend")
        svc = _buckets(keys, np.arange(n, dtype=np.int32))
        match_table = _buckets(np.asarray(match, np.uint64) + 1,
                               np.zeros(match.shape[0], np.int32))
        rna = np.ascontiguousarray(rn_addr if rn_addr is not None else [], np.uint32)
        rnp = np.ascontiguousarray(rn_port if rn_port is not None else [], np.uint16)
        if rna.ndim != 1 or rnp.shape != rna.shape:
            raise ValueError("rn_addr and rn_port must have the same length")
        self.n_rev_nat = rna.shape[0]
        self._arrays = (svc, fe, slots, lut_idx, be_table, be, match_table, net, mask, rna, rnp)
        cdef const uint32_t[::1] vra = rna
        cdef const uint16_t[::1] vrp = rnp
        self.rn_addr = &vra[0] if vra.shape[0] else NULL
        self.rn_port = &vrp[0] if vrp.shape[0] else NULL
        cdef const bucket_t[::1] vs = svc
        cdef const fe_t[::1] vf = fe
        cdef const be_t[::1] vb = be
        cdef const bucket_t[::1] vbt = be_table
        cdef const bucket_t[::1] vm = match_table
        cdef const int32_t[::1] vsl = slots
        cdef const int32_t[::1] vl = lut_idx
        cdef const uint32_t[::1] vn = net
        cdef const uint32_t[::1] vk = mask
        self.svc = &vs[0]
        self.svc_mask = vs.shape[0] - 1
        self.fe = &vf[0] if n else NULL
        self.n_fe = n
        self.slots = &vsl[0] if vsl.shape[0] else NULL
        self.luts = &vl[0] if vl.shape[0] else NULL
        self.n_luts = luts.shape[0]
        self.m = m
        self.jhash_seed = jhash_seed
        self.use_maglev = use_maglev
        self.bes = &vbt[0]
        self.be_mask = vbt.shape[0] - 1
        self.be = &vb[0] if nb else NULL
        self.n_be = nb
        self.match = &vm[0]
        self.match_mask = vm.shape[0] - 1
        self.sr_net = &vn[0] if vn.shape[0] else NULL
        self.sr_mask = &vk[0] if vk.shape[0] else NULL
        self.affinity = affinity if affinity is not None else LruMap(capacity)

    @property
    def capacity(self):
        """Entries the affinity map holds at most."""
        return self.affinity.capacity

    # -- the lookups the datapath makes ----------------------------------------------------

    cdef int32_t frontend(self, uint32_t vip, uint16_t vport, uint8_t proto, bint scope_switch,
                          pkt_state_t* st, int32_t* ext) noexcept nogil:
        """lb4_lookup_service: the external-scope entry (in ``ext``); for traffic from
        inside the cluster of a two-scopes frontend, the internal one. FE_NONE without
        an entry, FE_EMPTY when the entry has no usable backend."""
        cdef int64_t pos = bucket_find(self.svc, self.svc_mask, svc_key(vip, vport, proto, 0))
        cdef int32_t fe
        if pos < 0:
            map_step(st, MAP_SERVICES, False, 0, -1)
            ext[0] = -1
            return FE_NONE
        fe = self.svc[pos].value
        map_step(st, MAP_SERVICES, True, 0, fe)
        ext[0] = fe
        if scope_switch and self.fe[fe].flags & FLAG_TWO_SCOPES:
            pos = bucket_find(self.svc, self.svc_mask, svc_key(vip, vport, proto, SCOPE_INT))
            fe = self.svc[pos].value if pos >= 0 else -1
            map_step(st, MAP_SERVICES, fe >= 0, 1, fe)
        if fe < 0 or self.fe[fe].count == 0:
            return FE_EMPTY
        return fe

    cdef inline int32_t backend_index(self, uint32_t bid) noexcept nogil:
        cdef int64_t pos = bucket_find(self.bes, self.be_mask, <uint64_t>bid + 1)
        return self.bes[pos].value if pos >= 0 else -1

    cdef bint in_source_ranges(self, int32_t fe, uint32_t ip) noexcept nogil:
        cdef int32_t k
        for k in range(self.fe[fe].sr_first, self.fe[fe].sr_first + self.fe[fe].sr_count):
            if ip & self.sr_mask[k] == self.sr_net[k]:
                return True
        return False

    cdef int32_t choose(self, int32_t fe, uint32_t client_ip, uint16_t client_port,
                        uint16_t vport, uint8_t proto, bint east_west, pkt_state_t* st,
                        bint stream, uint32_t draw, int32_t* pick,
                        uint8_t* affinity_hit) noexcept nogil:
        """The backend (its index; -1: none usable) for a new flow of frontend ``fe``: the
        affinity map first (sticky clients), else a random slot (east-west traffic, or the
        node's algorithm is random) or the Maglev LUT, then the backend map. The random
        draw comes from the node's stream (``stream``) or is given (``draw``)."""
        cdef const fe_t* f = &self.fe[fe]
        cdef uint32_t rid = f.rev_nat, bid = 0, idx
        cdef bint sticky = (f.flags & FLAG_SESSION_AFFINITY) != 0, ok
        cdef uint64_t ka = (<uint64_t>rid << 32) | client_ip
        cdef int32_t i, bi = -1
        cdef lru_t* aff = &self.affinity.t
        pick[0] = -1
        affinity_hit[0] = 0
        if sticky:
            i = lru_find(aff, ka, TAG_AFFINITY, &st.probes)
            map_step(st, MAP_AFFINITY, i >= 0, 0, <int32_t>aff.e[i].backend if i >= 0 else -1)
            if i >= 0:
                if <int64_t>aff.e[i].expires + f.timeout <= <int64_t>st.now:
                    lru_remove(aff, i)  # expired
                else:
                    ok = bucket_find(self.match, self.match_mask,
                                     ((<uint64_t>rid << 32) | aff.e[i].backend) + 1) >= 0
                    map_step(st, MAP_AFFINITY_MATCH, ok, 0, <int32_t>aff.e[i].backend)
                    if not ok:
                        lru_remove(aff, i)  # the backend left the service
                    else:
                        bid = aff.e[i].backend
                        aff.e[i].expires = st.now
            if bid:
                bi = self.backend_index(bid)
                map_step(st, MAP_BACKENDS, bi >= 0, 0, <int32_t>bid)
                if bi >= 0:
                    affinity_hit[0] = 1
        if bi < 0:
            if east_west or not self.use_maglev:
                if stream:
                    idx = <uint32_t>rand32(&st.rng) % f.count
                    if st.rec != NULL:
                        idx = record_draw(st.rec, DRAW_NUMGEN, f.count, 0, idx)
                else:
                    idx = draw % f.count
                idx += 1
                pick[0] = idx
                bi = self.slots[f.first + idx - 1]
                map_step(st, MAP_SERVICES, True, 2, <int32_t>idx)
            else:
                if f.lut < 0:
                    map_step(st, MAP_MAGLEV, False, 0, -1)
                    map_step(st, MAP_BACKENDS, False, 0, 0)
                    return -1
                idx = jhash_3words(bswap32(client_ip),
                                   (bswap16(vport) << 16)
                                   | (0 if sticky else bswap16(client_port)),
                                   proto, self.jhash_seed) % self.m
                pick[0] = idx
                bi = self.luts[<Py_ssize_t>f.lut * self.m + idx]
                map_step(st, MAP_MAGLEV, True, 0, <int32_t>idx)
            # the backends map by the slot's ID (every slot's backend is in it: checked
            # when the table was built, so the emulator reads the record directly)
            map_step(st, MAP_BACKENDS, True, 0, <int32_t>self.be[bi].id)
        if sticky:
            i = lru_insert(aff, ka, TAG_AFFINITY, &st.probes)
            aff.e[i].backend = self.be[bi].id
            aff.e[i].expires = st.now
        return bi

    # -- the batch of new flows (the lookup alone) -------------------------------------------

    def new_flows(self, const uint32_t[::1] client_ip, const uint16_t[::1] client_port,
                  const uint32_t[::1] vip, const uint16_t[::1] vport,
                  const uint8_t[::1] proto, const uint8_t[::1] from_cluster,
                  const double[::1] now, const uint32_t[::1] draws,
                  uint8_t[::1] verdict, uint32_t[::1] backend, int32_t[::1] pick,
                  uint8_t[::1] affinity_hit, uint8_t[::1] lookups):
        """One new flow per row (see the module docstring); ``draws``: the random
        stream's value for each row (used by random picks only). Writes the verdict
        (0 DNAT, 1 no service, 2 no backend), the backend ID, the pick (slot or LUT
        index, -1), whether affinity chose it, and the map lookups made."""
        cdef Py_ssize_t k, n = client_ip.shape[0]
        cdef int32_t fe, ext, bi
        cdef pkt_state_t st
        if (client_port.shape[0] != n or vip.shape[0] != n or vport.shape[0] != n
                or proto.shape[0] != n or from_cluster.shape[0] != n or now.shape[0] != n
                or draws.shape[0] != n):
            raise ValueError("input columns must have the same length")
        if (verdict.shape[0] < n or backend.shape[0] < n or pick.shape[0] < n
                or affinity_hit.shape[0] < n or lookups.shape[0] < n):
            raise ValueError("an output column is shorter than the input")
        st.rec = NULL
        st.rng = 0
        with nogil:
            for k in range(n):
                st.lookups = 0
                st.probes = 0
                st.now = now[k]
                verdict[k] = V_DNAT
                backend[k] = 0
                pick[k] = -1
                affinity_hit[k] = 0
                fe = self.frontend(vip[k], vport[k], proto[k], from_cluster[k], &st, &ext)
                if fe == FE_NONE:
                    verdict[k] = V_NO_SERVICE
                elif fe == FE_EMPTY:
                    verdict[k] = V_NO_BACKEND
                else:
                    bi = self.choose(fe, client_ip[k], client_port[k], vport[k], proto[k],
                                     from_cluster[k], &st, False, draws[k], &pick[k],
                                     &affinity_hit[k])
                    if bi < 0:
                        verdict[k] = V_NO_BACKEND
                    else:
                        backend[k] = self.be[bi].id
                lookups[k] = <uint8_t>st.lookups

    def __len__(self):
        """Entries in the affinity map."""
        return self.affinity.t.n


def _column(values, Py_ssize_t n, dtype, fill, name):
    if values is None:
        return np.full(n, fill, dtype)
    arr = np.ascontiguousarray(values, dtype)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per backend / frontend")
    return arr


# ------------------------------------------------------------------------ the engine


cdef class EbpfEngine(Engine):
    """The eBPF mode on the packet pipeline (module docstring). ``lb``: the node's maps;
    ``ct_tcp``/``ct_any``: Cilium's CT maps (cilium_ct4_global, cilium_ct_any4_global);
    ``sockets``: the connected sockets' translations; ``snat``: the NodePort SNAT map;
    ``nat_ip``: the address remote-backend NodePort traffic is SNATed to; ``lb_mode``: 0
    SNAT, 1 DSR (direct server return), 2 hybrid (DSR for TCP, SNAT otherwise); ``timeouts``: CT lifetimes in
    seconds (regular TCP, non-TCP, TCP SYN, TCP closing). The maps are the caller's: they
    outlive syncs, as the kernel's do; the pipeline runs with no netfilter conntrack."""

    cdef readonly LbTable lb
    cdef readonly LruMap ct_tcp
    cdef readonly LruMap ct_any
    cdef readonly LruMap sockets
    cdef readonly LruMap snat
    cdef readonly uint32_t nat_ip
    cdef readonly int lb_mode
    cdef double t_tcp, t_any, t_syn, t_fin
    cdef readonly uint64_t nat_failures
    cdef lru_t* ct_tcp_t
    cdef lru_t* ct_any_t
    cdef lru_t* sock_t
    cdef lru_t* nat_t
    # the packet's connected socket (-1: none) and its CT entry as last seen: a hint that
    # spares the emulator the CT map's hash probe when the entry still holds the same key
    cdef int32_t sock_idx

    def __init__(self, LbTable lb not None, local_ips, uint32_t nat_ip, LruMap ct_tcp not None,
                 LruMap ct_any not None, LruMap sockets not None, LruMap snat not None,
                 int lb_mode=0, timeouts=(21600.0, 60.0, 60.0, 10.0)):
        Engine.__init__(self, local_ips, nat_ip)
        self.lb = lb
        self.ct_tcp = ct_tcp
        self.ct_any = ct_any
        self.sockets = sockets
        self.snat = snat
        self.ct_tcp_t = &ct_tcp.t
        self.ct_any_t = &ct_any.t
        self.sock_t = &sockets.t
        self.nat_t = &snat.t
        self.nat_ip = nat_ip
        if lb_mode not in (0, 1, 2):
            raise ValueError("lb_mode: 0 (snat), 1 (dsr) or 2 (hybrid)")
        self.lb_mode = lb_mode
        self.t_tcp, self.t_any, self.t_syn, self.t_fin = [float(t) for t in timeouts]
        if min(self.t_tcp, self.t_any, self.t_syn, self.t_fin) <= 0:
            raise ValueError("timeouts must be positive")
        self.plain_known_flow = True
        self.no_after_hooks = True
        self.nat_only_hooks = 0
        self.prefetch_distance = PREFETCH_DISTANCE

    def reset_counters(self):
        self.nat_failures = 0

    def snapshot(self):
        """The state packets change (every map), for ``restore``."""
        return (self, self.lb.affinity.snapshot(), self.ct_tcp.snapshot(),
                self.ct_any.snapshot(), self.sockets.snapshot(), self.snat.snapshot(),
                self.nat_failures)

    def restore(self, snap):
        if not isinstance(snap, tuple) or len(snap) != 7 or snap[0] is not self:
            raise ValueError("not a snapshot of this engine")
        self.lb.affinity.restore(snap[1])
        self.ct_tcp.restore(snap[2])
        self.ct_any.restore(snap[3])
        self.sockets.restore(snap[4])
        self.snat.restore(snap[5])
        self.nat_failures = snap[6]

    cdef int begin(self) except -1:
        return 0

    cdef void prefetch(self, const packet_t* p, int stage) noexcept nogil:
        """What a packet ahead will read, in dependent steps. Stage 0: its service bucket
        and, from a pod or the host, its socket's bucket. Stage 1: the socket's entry if
        the socket is connected (an established flow), else the frontend record the
        service bucket names. Stage 2: the socket's CT entry, or the frontend's slots and
        backend. On tables larger than the caches each is a miss otherwise."""
        cdef int64_t pos
        cdef int32_t fe, i
        cdef uint64_t ka, kb
        cdef const fe_t* f
        if stage == 0:
            __builtin_prefetch(&self.lb.svc[mix64(svc_key(p.dst_ip, p.dst_port, p.proto, 0))
                                            & self.lb.svc_mask])
            if p.origin != ORIGIN_EXTERNAL:
                __builtin_prefetch(&self.sock_t.buckets[
                    lru_home(self.sock_t, key_a(p.src_ip, p.dst_ip),
                             key_b(p.src_port, p.dst_port, p.proto, TAG_SOCKET))])
            return
        if p.origin != ORIGIN_EXTERNAL:
            ka = key_a(p.src_ip, p.dst_ip)
            kb = key_b(p.src_port, p.dst_port, p.proto, TAG_SOCKET)
            i = self.sock_t.buckets[lru_home(self.sock_t, ka, kb)] - 1
            if i >= 0:  # most likely its own (else a probe further: left to the lookup)
                if stage == 1:
                    __builtin_prefetch(&self.sock_t.e[i])
                elif self.sock_t.e[i].ka == ka and self.sock_t.e[i].kb == kb:
                    i = <int32_t>self.sock_t.e[i].hint - 1
                    if i >= 0:
                        __builtin_prefetch(&(self.ct_tcp_t if p.proto == PROTO_TCP
                                             else self.ct_any_t).e[i])
                return
        pos = bucket_find(self.lb.svc, self.lb.svc_mask,
                          svc_key(p.dst_ip, p.dst_port, p.proto, 0))
        if pos < 0:
            return
        fe = self.lb.svc[pos].value
        if stage == 1:
            __builtin_prefetch(&self.lb.fe[fe])
            return
        f = &self.lb.fe[fe]
        for i in range(f.first, f.first + (f.count if f.count < 16 else 16)):
            __builtin_prefetch(&self.lb.be[self.lb.slots[i]])

    cdef int hook(self, int hook, const packet_t* p, pkt_state_t* st) noexcept nogil:
        if hook == HOOK_PREROUTING:
            if p.origin == ORIGIN_EXTERNAL:
                return self.from_netdev(p, st)
            return self.from_pod(p, st)
        if hook == HOOK_OUTPUT and p.origin == ORIGIN_HOST:
            return self.socket_lb(p, st, True)
        return HV_CONTINUE

    # -- entry lifetimes -----------------------------------------------------------------

    cdef void refresh(self, lru_entry_t* e, const packet_t* p, double now) noexcept nogil:
        """ct_update_timeout: a TCP flow lives CT_SYN_TIMEOUT until a packet other than
        a bare SYN, then the regular lifetime; FIN or RST: the closing timeout."""
        if p.proto != PROTO_TCP:
            e.expires = now + self.t_any
            return
        if p.tcp_flags & (TCP_FIN | TCP_RST):
            e.flags |= CTF_CLOSING
        elif (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
            e.flags |= CTF_SEEN_NON_SYN
        if e.flags & CTF_CLOSING:
            e.expires = now + self.t_fin
        elif e.flags & CTF_SEEN_NON_SYN:
            e.expires = now + self.t_tcp
        else:
            e.expires = now + self.t_syn

    cdef inline bint stale(self, lru_entry_t* e, const packet_t* p, double now) noexcept nogil:
        """An entry that no longer stands for this packet's flow: past its lifetime (the
        agent's CT garbage collector would have removed it), or closed and met by a new
        SYN (the port is reused)."""
        return e.expires <= now or (
            (e.flags & CTF_CLOSING) != 0 and (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)

    cdef int32_t live(self, lru_t* m, uint64_t ka, uint64_t kb, const packet_t* p,
                      pkt_state_t* st) noexcept nogil:
        cdef int32_t i = lru_find(m, ka, kb, &st.probes)
        if i >= 0 and self.stale(&m.e[i], p, st.now):
            lru_remove(m, i)
            return -1
        return i

    # -- pods and the host: socket-level LB, bpf_lxc's CT ----------------------------------

    cdef int from_pod(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        cdef int v
        self.sock_idx = -1
        v = self.socket_lb(p, st, False)
        if v != HV_CONTINUE:
            return v
        return self.lxc_ct(p, st)

    cdef int socket_lb(self, const packet_t* p, pkt_state_t* st, bint host) noexcept nogil:
        """cgroup connect4 / sendmsg4 (``__sock4_xlate_fwd``): a connected socket keeps
        its translation (no map lookup); a connect (TCP SYN) or a datagram sent without
        one looks the service up and picks a backend at random. No backend: the
        connect fails (EHOSTUNREACH, a REJECT)."""
        cdef lru_t* socks = self.sock_t
        cdef uint64_t ka = key_a(p.src_ip, p.dst_ip)
        cdef uint64_t kb = key_b(p.src_port, p.dst_port, p.proto, TAG_SOCKET)
        cdef int32_t i = self.live(socks, ka, kb, p, st), fe, ext, bi, pick
        cdef uint8_t hit
        if i >= 0:
            self.sock_idx = i
            st.dst = socks.e[i].addr
            st.dport = socks.e[i].port
            st.endpoint = socks.e[i].endpoint
            self.refresh(&socks.e[i], p, st.now)
            if st.rec != NULL:
                record_step(st.rec, STEP_BPF_MAP, MAP_SOCKET, True, 0, i)
            return HV_CONTINUE
        if p.proto == PROTO_TCP and (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
            return HV_CONTINUE  # not a connect: no socket hook runs
        fe = self.lb.frontend(p.dst_ip, p.dst_port, p.proto, True, st, &ext)
        if fe == FE_NONE and host and Engine.is_local(self, p.dst_ip):
            # sock4_wildcard_lookup: a NodePort on any local address of the host
            fe = self.lb.frontend(0, p.dst_port, p.proto, True, st, &ext)
        if fe == FE_NONE:
            return HV_CONTINUE
        if fe == FE_EMPTY:
            return HV_REJECT
        bi = self.lb.choose(fe, p.src_ip, p.src_port, p.dst_port, p.proto, True, st, True, 0,
                            &pick, &hit)
        if bi < 0:
            return HV_REJECT
        st.dst = self.lb.be[bi].addr
        st.dport = self.lb.be[bi].port
        st.endpoint = self.lb.be[bi].endpoint
        i = lru_insert(socks, ka, kb, &st.probes)
        socks.e[i].backend = self.lb.be[bi].id
        socks.e[i].rev_nat = self.lb.fe[fe].rev_nat
        socks.e[i].addr = st.dst
        socks.e[i].port = st.dport
        socks.e[i].endpoint = st.endpoint
        self.refresh(&socks.e[i], p, st.now)
        self.sock_idx = i
        return HV_CONTINUE

    cdef int lxc_ct(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        """bpf_lxc's ct_lookup4 on the packet as it leaves the pod: the tuple, then the
        reversed tuple (a reply); a miss creates the entry. A reply of an external flow
        served by a pod on this node gets the frontend back as its source."""
        cdef lru_t* m = self.ct_tcp_t if p.proto == PROTO_TCP else self.ct_any_t
        cdef uint64_t ka = key_a(st.src, st.dst)
        cdef uint64_t kb = key_b(st.sport, st.dport, st.proto, TAG_CT)
        cdef int32_t i = -1
        cdef lru_t* socks = self.sock_t
        if self.sock_idx >= 0 and socks.e[self.sock_idx].hint:
            # the entry this socket's flow had: still its own? (else the hash lookup)
            i = <int32_t>socks.e[self.sock_idx].hint - 1
            if i >= m.used or m.e[i].ka != ka or m.e[i].kb != kb:
                i = -1
            elif self.stale(&m.e[i], p, st.now):
                lru_remove(m, i)
                i = -2
            else:
                m.e[i].ref = 1
                if m.exact:
                    lru_touch(m, i)
        if i == -1:
            i = self.live(m, ka, kb, p, st)
        elif i == -2:
            i = -1
        map_step(st, MAP_CT, i >= 0, 0, i)
        if i >= 0:
            st.ct_hit = 1
            st.ct_dir = 0
            self.refresh(&m.e[i], p, st.now)
            if self.sock_idx >= 0:
                socks.e[self.sock_idx].hint = <uint32_t>i + 1
            return HV_CONTINUE
        i = self.live(m, key_a(st.dst, st.src), key_b(st.dport, st.sport, st.proto, TAG_CT), p, st)
        map_step(st, MAP_CT, i >= 0, 1, i)
        if i >= 0:
            st.ct_hit = 1
            st.ct_dir = 1
            self.refresh(&m.e[i], p, st.now)
            if m.e[i].flags & CTF_REV_NAT:
                self.reverse_nat(m.e[i].rev_nat, st)
            return HV_CONTINUE
        i = lru_insert(m, ka, kb, &st.probes)
        m.e[i].endpoint = st.endpoint
        self.refresh(&m.e[i], p, st.now)
        if self.sock_idx >= 0:
            socks.e[self.sock_idx].hint = <uint32_t>i + 1
        return HV_CONTINUE

    # -- external traffic: the tc / XDP NodePort path -------------------------------------

    cdef int from_netdev(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        """nodeport_lb4: a routable frontend's packet is balanced here (CT_SERVICE entry,
        backend), then delivered to a local backend or sent on to a remote one with SNAT
        to the node's address (or DSR); anything else goes to the stack untouched, except
        the replies of flows this node SNATed, which get their addresses back."""
        cdef lru_t* m = self.ct_tcp_t if p.proto == PROTO_TCP else self.ct_any_t
        cdef int32_t ext, i, j, bi = -1, pick
        cdef int32_t fe = self.lb.frontend(p.dst_ip, p.dst_port, p.proto, False, st, &ext)
        cdef uint32_t bid = 0
        cdef uint8_t hit
        cdef bint in_range
        if fe == FE_NONE or not (self.lb.fe[ext].flags & FLAG_ROUTABLE):
            # not a frontend served from outside (a ClusterIP is non-routable)
            if p.dst_ip == self.nat_ip:
                return self.reverse_snat(p, st)
            return HV_CONTINUE
        if fe == FE_EMPTY:
            return HV_DROP  # DROP_NO_SERVICE
        if self.lb.fe[fe].flags & FLAG_SOURCE_RANGE:
            in_range = self.lb.in_source_ranges(fe, p.src_ip)
            map_step(st, MAP_SOURCE_RANGE, in_range, 0, fe)
            if not in_range:
                return HV_DROP  # DROP_NOT_IN_SRC_RANGE
        i = self.live(m, key_a(p.src_ip, p.dst_ip),
                      key_b(p.src_port, p.dst_port, p.proto, TAG_SERVICE), p, st)
        map_step(st, MAP_CT, i >= 0, 2, i)
        if i >= 0:
            bid = m.e[i].backend
            bi = self.lb.backend_index(bid)
            map_step(st, MAP_BACKENDS, bi >= 0, 0, <int32_t>bid)
            if bi >= 0:
                st.ct_hit = 1
                st.ct_dir = 0
        if bi < 0:  # a new flow, or its backend is gone: choose (again)
            bi = self.lb.choose(fe, p.src_ip, p.src_port, p.dst_port, p.proto, False, st,
                                True, 0, &pick, &hit)
            if bi < 0:
                return HV_DROP  # DROP_NO_SERVICE
            bid = self.lb.be[bi].id
            if i < 0:
                i = lru_insert(m, key_a(p.src_ip, p.dst_ip),
                               key_b(p.src_port, p.dst_port, p.proto, TAG_SERVICE), &st.probes)
            m.e[i].backend = bid
            m.e[i].rev_nat = self.lb.fe[fe].rev_nat
        self.refresh(&m.e[i], p, st.now)
        st.dst = self.lb.be[bi].addr
        st.dport = self.lb.be[bi].port
        st.endpoint = self.lb.be[bi].endpoint
        if self.lb.be[bi].local:
            # to the pod: its CT entry (bpf_lxc ingress) carries the rev_nat_index
            j = self.live(m, key_a(p.src_ip, st.dst),
                          key_b(p.src_port, st.dport, p.proto, TAG_CT), p, st)
            map_step(st, MAP_CT, j >= 0, 0, j)
            if j < 0:
                j = lru_insert(m, key_a(p.src_ip, st.dst),
                               key_b(p.src_port, st.dport, p.proto, TAG_CT), &st.probes)
            m.e[j].flags |= CTF_REV_NAT
            m.e[j].rev_nat = self.lb.fe[fe].rev_nat
            m.e[j].endpoint = st.endpoint
            self.refresh(&m.e[j], p, st.now)
            return HV_CONTINUE
        if self.lb_mode == 1 or (self.lb_mode == 2 and p.proto == PROTO_TCP):
            return HV_CONTINUE  # DSR: the backend answers the client itself
        return self.forward_snat(p, st, fe)

    cdef int forward_snat(self, const packet_t* p, pkt_state_t* st, int32_t fe) noexcept nogil:
        """snat_v4_nat for a NodePort flow to a remote backend: the flow's mapping, or a
        new one keeping the client's port when it is in the NAT range and free, else
        random ports of the range (SNAT_COLLISION_RETRIES + 1 tries; then the packet is
        dropped). The reverse entry holds the client and the rev_nat_index for the reply."""
        cdef lru_t* nat = self.nat_t
        cdef uint64_t ka = key_a(p.src_ip, st.dst)
        cdef uint64_t kb = key_b(p.src_port, st.dport, p.proto, TAG_NAT_FWD)
        cdef int32_t i = self.live(nat, ka, kb, p, st), r, _
        cdef uint32_t port = p.src_port
        map_step(st, MAP_SNAT, i >= 0, 0, i)
        if i < 0:
            if port < NAT_PORT_MIN:
                port = NAT_PORT_MIN + rand32(&st.rng) % (NAT_PORT_MAX - NAT_PORT_MIN + 1)
            for _ in range(SNAT_COLLISION_RETRIES + 1):
                r = self.live(nat, key_a(st.dst, self.nat_ip),
                              key_b(st.dport, <uint16_t>port, p.proto, TAG_NAT_REV), p, st)
                map_step(st, MAP_SNAT, r >= 0, 2, <int32_t>port)
                if r < 0:
                    break
                port = NAT_PORT_MIN + rand32(&st.rng) % (NAT_PORT_MAX - NAT_PORT_MIN + 1)
            else:
                self.nat_failures += 1
                return HV_DROP  # DROP_NAT_NO_MAPPING
            i = lru_insert(nat, ka, kb, &st.probes)
            nat.e[i].addr = self.nat_ip
            nat.e[i].port = <uint16_t>port
            r = lru_insert(nat, key_a(st.dst, self.nat_ip),
                           key_b(st.dport, <uint16_t>port, p.proto, TAG_NAT_REV), &st.probes)
            nat.e[r].addr = p.src_ip
            nat.e[r].port = p.src_port
            nat.e[r].rev_nat = self.lb.fe[fe].rev_nat
            nat.e[r].endpoint = st.endpoint
            self.refresh(&nat.e[r], p, st.now)
        self.refresh(&nat.e[i], p, st.now)
        st.snat = 1
        st.snat_ip = self.nat_ip
        st.snat_port = nat.e[i].port
        st.snat_fixed = 1
        return HV_CONTINUE

    cdef int reverse_snat(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        """A reply from a remote backend to the node's NAT address: the SNAT map gives
        the client back as the destination and the reverse-NAT map the frontend as the
        source."""
        cdef lru_t* nat = self.nat_t
        cdef int32_t i = self.live(nat, key_a(p.src_ip, p.dst_ip),
                                   key_b(p.src_port, p.dst_port, p.proto, TAG_NAT_REV), p, st)
        map_step(st, MAP_SNAT, i >= 0, 1, i)
        if i < 0:
            return HV_CONTINUE  # the node's own traffic
        self.refresh(&nat.e[i], p, st.now)
        st.ct_hit = 1
        st.ct_dir = 1
        st.dst = nat.e[i].addr
        st.dport = nat.e[i].port
        self.reverse_nat(nat.e[i].rev_nat, st)
        return HV_CONTINUE

    cdef void reverse_nat(self, uint32_t rid, pkt_state_t* st) noexcept nogil:
        """lb4_rev_nat: the reverse-NAT map gives the frontend a reply's source becomes
        (a frontend deleted since leaves the source as it is)."""
        cdef bint found = rid < self.lb.n_rev_nat and self.lb.rn_addr[rid] != 0
        map_step(st, MAP_REV_NAT, found, 0, <int32_t>rid)
        if found:
            st.snat = 1
            st.snat_ip = self.lb.rn_addr[rid]
            st.snat_port = self.lb.rn_port[rid]
            st.snat_fixed = 1
