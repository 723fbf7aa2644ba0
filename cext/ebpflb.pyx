# cython: language_level=3
"""The eBPF mode's service lookup, compiled: Cilium's new-flow path over packed maps.

``LbTable`` holds one node's load-balancing maps (lowered by
kproxy_emu/dataplane/ebpf_lowering.py from netfilter/bpfmaps.py) in flat arrays and hash
tables, and ``new_flows`` runs a batch of new flows through what
kproxy_emu/dataplane/ebpf_reference.py models in Python (its twin):
``lb4_lookup_service`` with the scope switch, the session-affinity LRU map with its
expiry and affinity-match check, the random slot or Maglev LUT pick (east-west flows
random), the backend map; every map lookup counted. IPv4.

It is the core of the eBPF mode's engine; the mode (Backend, pipeline Engine) is not
wired yet (docs/ebpf.md).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

include "jhash.pxi"

include "hashing.pxi"


cdef enum:
    V_DNAT = 0
    V_NO_SERVICE = 1
    V_NO_BACKEND = 2
    FLAG_SESSION_AFFINITY = 1 << 4
    FLAG_TWO_SCOPES = 1 << 13
    SCOPE_INT = 1


cdef inline uint64_t svc_key(uint32_t addr, uint16_t port, uint8_t proto,
                             uint8_t scope) noexcept nogil:
    # +1: 0 marks an empty bucket
    return ((<uint64_t>addr << 32) | (<uint64_t>port << 16) | (<uint64_t>proto << 8) | scope) + 1


cdef inline int64_t ht_find(const uint64_t* keys, uint64_t mask, uint64_t key) noexcept nogil:
    """Linear probing: the bucket holding ``key``, or -(empty bucket) - 1."""
    cdef uint64_t pos = mix64(key) & mask
    while True:
        if keys[pos] == key:
            return <int64_t>pos
        if keys[pos] == 0:
            return -<int64_t>pos - 1
        pos = (pos + 1) & mask


cdef inline uint32_t bswap32(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24)


cdef inline uint32_t bswap16(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 8) | ((x >> 8) & 0xff)


def _table_size(Py_ssize_t n):
    cdef Py_ssize_t size = 16
    while size < 2 * n:
        size <<= 1
    return size


cdef class LbTable:
    """One node's maps, packed (see ``kproxy_emu.dataplane.ebpf_lowering.lower``)."""

    # services (slot 0 entries): key -> frontend index
    cdef uint64_t[::1] svc_keys
    cdef int32_t[::1] svc_fe
    cdef uint64_t svc_mask
    # frontends
    cdef uint32_t[::1] fe_count
    cdef uint32_t[::1] fe_flags
    cdef uint32_t[::1] fe_rev_nat
    cdef uint32_t[::1] fe_timeout
    cdef int32_t[::1] fe_first      # first slot in slot_be
    cdef int32_t[::1] fe_lut        # Maglev row, -1: none
    cdef uint32_t[::1] slot_be      # backend IDs, slot order
    cdef uint32_t[:, ::1] luts
    cdef uint32_t m
    cdef uint32_t jhash_seed
    cdef bint use_maglev            # the node's algorithm: Maglev (else random)
    # backends: ID -> index; affinity match: (rev_nat << 32 | ID) + 1
    cdef uint64_t[::1] be_keys
    cdef int32_t[::1] be_index
    cdef uint64_t be_mask
    cdef uint64_t[::1] match_keys
    cdef uint64_t match_mask
    # the affinity LRU map: buckets -> entries; entries in a recency list
    cdef uint64_t[::1] aff_keys
    cdef int32_t[::1] aff_entry
    cdef uint64_t aff_mask
    cdef uint64_t[::1] e_key
    cdef uint32_t[::1] e_backend
    cdef double[::1] e_last
    cdef int32_t[::1] e_prev
    cdef int32_t[::1] e_next
    cdef int32_t head, tail, free, n_aff
    cdef readonly int32_t capacity

    def __init__(self, const uint32_t[::1] fe_addr, const uint16_t[::1] fe_port,
                 const uint8_t[::1] fe_proto, const uint8_t[::1] fe_scope,
                 const uint32_t[::1] fe_count, const uint32_t[::1] fe_flags,
                 const uint32_t[::1] fe_rev_nat, const uint32_t[::1] fe_timeout,
                 const int32_t[::1] fe_first, const int32_t[::1] fe_lut,
                 const uint32_t[::1] slot_be, const uint32_t[:, ::1] luts,
                 const uint32_t[::1] be_ids, const uint64_t[::1] match,
                 uint32_t m, uint32_t jhash_seed, bint use_maglev=False,
                 int32_t capacity=65536):
        cdef Py_ssize_t i, n = fe_addr.shape[0], size
        cdef int64_t pos
        cdef uint64_t key
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
        self.fe_count = np.array(fe_count, np.uint32)
        self.fe_flags = np.array(fe_flags, np.uint32)
        self.fe_rev_nat = np.array(fe_rev_nat, np.uint32)
        self.fe_timeout = np.array(fe_timeout, np.uint32)
        self.fe_first = np.array(fe_first, np.int32)
        self.fe_lut = np.array(fe_lut, np.int32)
        self.slot_be = np.array(slot_be, np.uint32)
        self.luts = np.array(luts, np.uint32).reshape(luts.shape[0], luts.shape[1])
        self.m = m
        self.jhash_seed = jhash_seed
        self.use_maglev = use_maglev
        size = _table_size(n)
        self.svc_keys = np.zeros(size, np.uint64)
        self.svc_fe = np.full(size, -1, np.int32)
        self.svc_mask = size - 1
        for i in range(n):
            key = svc_key(fe_addr[i], fe_port[i], fe_proto[i], fe_scope[i])
            pos = ht_find(&self.svc_keys[0], self.svc_mask, key)
            if pos >= 0:
                raise ValueError("duplicate frontend")
            self.svc_keys[-pos - 1] = key
            self.svc_fe[-pos - 1] = i
        size = _table_size(be_ids.shape[0])
        self.be_keys = np.zeros(size, np.uint64)
        self.be_index = np.full(size, -1, np.int32)
        self.be_mask = size - 1
        for i in range(be_ids.shape[0]):
            key = <uint64_t>be_ids[i] + 1
            pos = ht_find(&self.be_keys[0], self.be_mask, key)
            if pos < 0:
                self.be_keys[-pos - 1] = key
                self.be_index[-pos - 1] = i
        for i in range(slot_be.shape[0]):
            if ht_find(&self.be_keys[0], self.be_mask, <uint64_t>slot_be[i] + 1) < 0:
                raise ValueError("a slot names an unknown backend")
        size = _table_size(match.shape[0])
        self.match_keys = np.zeros(size, np.uint64)
        self.match_mask = size - 1
        for i in range(match.shape[0]):
            key = match[i] + 1
            pos = ht_find(&self.match_keys[0], self.match_mask, key)
            if pos < 0:
                self.match_keys[-pos - 1] = key
        self.capacity = capacity
        size = _table_size(capacity)
        self.aff_keys = np.zeros(size, np.uint64)
        self.aff_entry = np.full(size, -1, np.int32)
        self.aff_mask = size - 1
        self.e_key = np.zeros(capacity, np.uint64)
        self.e_backend = np.zeros(capacity, np.uint32)
        self.e_last = np.zeros(capacity, np.float64)
        self.e_prev = np.full(capacity, -1, np.int32)
        self.e_next = np.arange(1, capacity + 1, dtype=np.int32)
        self.e_next[capacity - 1] = -1
        self.head = self.tail = -1
        self.free = 0
        self.n_aff = 0

    # -- the affinity LRU ---------------------------------------------------------------

    cdef void _unlink(self, int32_t e) noexcept nogil:
        if self.e_prev[e] >= 0:
            self.e_next[self.e_prev[e]] = self.e_next[e]
        else:
            self.head = self.e_next[e]
        if self.e_next[e] >= 0:
            self.e_prev[self.e_next[e]] = self.e_prev[e]
        else:
            self.tail = self.e_prev[e]

    cdef void _push_mru(self, int32_t e) noexcept nogil:
        self.e_prev[e] = self.tail
        self.e_next[e] = -1
        if self.tail >= 0:
            self.e_next[self.tail] = e
        else:
            self.head = e
        self.tail = e

    cdef void _bucket_delete(self, uint64_t pos) noexcept nogil:
        """Backward-shift deletion (linear probing keeps no tombstones)."""
        cdef uint64_t mask = self.aff_mask, j = pos, home
        while True:
            j = (j + 1) & mask
            if self.aff_keys[j] == 0:
                break
            home = mix64(self.aff_keys[j]) & mask
            # move j back to pos when its home is not in (pos, j]
            if (pos <= j and (home <= pos or home > j)) or (pos > j and home <= pos and home > j):
                self.aff_keys[pos] = self.aff_keys[j]
                self.aff_entry[pos] = self.aff_entry[j]
                pos = j
        self.aff_keys[pos] = 0
        self.aff_entry[pos] = -1

    cdef void _aff_remove(self, uint64_t pos) noexcept nogil:
        cdef int32_t e = self.aff_entry[pos]
        self._bucket_delete(pos)
        self._unlink(e)
        self.e_next[e] = self.free
        self.free = e
        self.n_aff -= 1

    cdef void _aff_update(self, uint64_t key, uint32_t backend, double now) noexcept nogil:
        cdef int64_t pos = ht_find(&self.aff_keys[0], self.aff_mask, key)
        cdef int32_t e
        if pos >= 0:
            e = self.aff_entry[pos]
            self._unlink(e)
        else:
            if self.n_aff == self.capacity:  # full: the least recently used goes
                self._aff_remove(<uint64_t>ht_find(&self.aff_keys[0], self.aff_mask,
                                                   self.e_key[self.head]))
                pos = ht_find(&self.aff_keys[0], self.aff_mask, key)
            e = self.free
            self.free = self.e_next[e]
            self.n_aff += 1
            self.aff_keys[-pos - 1] = key
            self.aff_entry[-pos - 1] = e
            self.e_key[e] = key
        self.e_backend[e] = backend
        self.e_last[e] = now
        self._push_mru(e)

    # -- the batch -----------------------------------------------------------------------

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
        cdef int64_t pos
        cdef int32_t fe, e
        cdef uint32_t count, flags, rid, bid, nlook, idx
        cdef uint64_t akey
        cdef bint sticky
        if (client_port.shape[0] != n or vip.shape[0] != n or vport.shape[0] != n
                or proto.shape[0] != n or from_cluster.shape[0] != n or now.shape[0] != n
                or draws.shape[0] != n):
            raise ValueError("input columns must have the same length")
        if (verdict.shape[0] < n or backend.shape[0] < n or pick.shape[0] < n
                or affinity_hit.shape[0] < n or lookups.shape[0] < n):
            raise ValueError("an output column is shorter than the input")
        with nogil:
            for k in range(n):
                verdict[k] = V_DNAT
                backend[k] = 0
                pick[k] = -1
                affinity_hit[k] = 0
                # lb4_lookup_service
                nlook = 1
                pos = ht_find(&self.svc_keys[0], self.svc_mask,
                              svc_key(vip[k], vport[k], proto[k], 0))
                if pos < 0:
                    verdict[k] = V_NO_SERVICE
                    lookups[k] = nlook
                    continue
                fe = self.svc_fe[pos]
                if from_cluster[k] and self.fe_flags[fe] & FLAG_TWO_SCOPES:
                    nlook += 1
                    pos = ht_find(&self.svc_keys[0], self.svc_mask,
                                  svc_key(vip[k], vport[k], proto[k], SCOPE_INT))
                    fe = self.svc_fe[pos] if pos >= 0 else -1
                if fe < 0 or self.fe_count[fe] == 0:
                    verdict[k] = V_NO_BACKEND
                    lookups[k] = nlook
                    continue
                count = self.fe_count[fe]
                flags = self.fe_flags[fe]
                rid = self.fe_rev_nat[fe]
                bid = 0
                sticky = (flags & FLAG_SESSION_AFFINITY) != 0
                akey = ((<uint64_t>rid << 32) | client_ip[k]) + 1
                if sticky:
                    nlook += 1
                    pos = ht_find(&self.aff_keys[0], self.aff_mask, akey)
                    if pos >= 0:
                        e = self.aff_entry[pos]
                        if <int64_t>self.e_last[e] + self.fe_timeout[fe] <= <int64_t>now[k]:
                            self._aff_remove(pos)
                        else:
                            nlook += 1
                            if ht_find(&self.match_keys[0], self.match_mask,
                                       ((<uint64_t>rid << 32) | self.e_backend[e]) + 1) < 0:
                                self._aff_remove(pos)
                            else:
                                bid = self.e_backend[e]
                                self.e_last[e] = now[k]
                                self._unlink(e)
                                self._push_mru(e)
                    if bid:
                        nlook += 1  # the backend map
                        if ht_find(&self.be_keys[0], self.be_mask, <uint64_t>bid + 1) < 0:
                            bid = 0
                        else:
                            affinity_hit[k] = 1
                if not bid:
                    if from_cluster[k] or not self.use_maglev:
                        idx = draws[k] % count + 1
                        pick[k] = idx
                        nlook += 1
                        bid = self.slot_be[self.fe_first[fe] + idx - 1]
                    else:
                        nlook += 1
                        if self.fe_lut[fe] < 0:
                            verdict[k] = V_NO_BACKEND
                            nlook += 1
                            lookups[k] = nlook
                            continue
                        idx = jhash_3words(bswap32(client_ip[k]),
                                           (bswap16(vport[k]) << 16)
                                           | (0 if sticky else bswap16(client_port[k])),
                                           proto[k], self.jhash_seed) % self.m
                        pick[k] = idx
                        bid = self.luts[self.fe_lut[fe], idx]
                    nlook += 1
                    if ht_find(&self.be_keys[0], self.be_mask, <uint64_t>bid + 1) < 0:
                        verdict[k] = V_NO_BACKEND
                        lookups[k] = nlook
                        continue
                if sticky:
                    self._aff_update(akey, bid, now[k])
                backend[k] = bid
                lookups[k] = nlook

    def __len__(self):
        """Entries in the affinity map."""
        return self.n_aff
