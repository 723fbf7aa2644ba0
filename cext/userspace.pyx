# cython: language_level=3
"""The userspace mode's proxy hop, compiled (driven by dataplane/userspace_backend.py).

After the pipeline ran a batch, a row whose destination became a proxy port (the node's
address and a listener's port) is handed to that service port's proxy: the state the
proxy process holds lives here, in packed arrays and open-addressing tables:

- per service port (an id the backend gives each ``ns/name:port``): the round-robin
  balancer's state as ``LoadBalancerRR`` stores it (loaded from it at sync boundaries):
  the shuffled endpoint list (endpoint slots), the index, ClientIP affinity (type, TTL in
  whole seconds, client IP -> endpoint and last use, in insertion order);
- the TCP connections (client ip:port and the service address -> endpoint and the local
  port of the proxy's own connection), the UDP clients (service port, client ip:port ->
  endpoint, local port, last packet's time: ``ClientCache`` with its idle timeout);
- the seeded source of ``connect()`` ports: a Mersenne Twister with the state of the
  ``random.Random`` the Python twin draws from, ``randrange`` as CPython computes it;
- the counts (``connections``, ``relayed``, ``relay_rules``, ``no_endpoint``).

``Proxy.hop`` walks the rows in order without the GIL and writes, per row it took, what
it did (a record the backend turns into trace steps and ``last_portals`` only when they
are read) and, per row with an endpoint, the proxy's own packet (the second pass through
the node's hooks is another ``pipeline.run`` over those packets).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

from packet cimport packet_t, verdict_t, ACT_ACCEPT, ACT_DNAT, ORIGIN_HOST

cdef enum:
    # what a record's ``how`` says
    C_HOW_NONE = 0          # no endpoint (missing service entry or endpoints)
    C_HOW_ROUND_ROBIN = 1
    C_HOW_AFFINITY = 2      # ClientIP affinity hit
    C_HOW_CONNECTION = 3    # a known TCP connection's
    C_HOW_SESSION = 4       # the UDP client's session
    # error codes of hop()
    C_HOP_OK = 0
    C_HOP_NO_MEMORY = -1
    C_HOP_BAD_ENDPOINT = -2  # an endpoint whose host is not an IPv4 address was chosen

HOW_NONE = C_HOW_NONE
HOW_ROUND_ROBIN = C_HOW_ROUND_ROBIN
HOW_AFFINITY = C_HOW_AFFINITY
HOW_CONNECTION = C_HOW_CONNECTION
HOW_SESSION = C_HOW_SESSION
HOP_OK = C_HOP_OK
HOP_NO_MEMORY = C_HOP_NO_MEMORY
HOP_BAD_ENDPOINT = C_HOP_BAD_ENDPOINT

RECORD_DTYPE = np.dtype([("row", "i8"), ("sid", "i4"), ("slot", "i4"), ("portal_ip", "u4"),
                         ("portal_port", "u2"), ("out_port", "u2"), ("how", "u1"),
                         ("proto", "u1")], align=True)

cdef enum:
    MT_N = 624
    MT_M = 397
    CONNECT_LOW = 32768
    CONNECT_SPAN = 14116    # (60999 - 32768 + 1) // 2: the even ports of the range
    CONNECT_BITS = 14       # CONNECT_SPAN.bit_length()


ctypedef struct entry_t:       # one row of a table: two key words and a payload
    uint64_t k0
    uint64_t k1
    int32_t a                   # endpoint slot
    int32_t b                   # local port (TCP, UDP); affinity: foreign index or -1
    double t                    # UDP: last packet; affinity: last used


ctypedef struct table_t:       # insert-only open addressing; rows in insertion order
    entry_t* e
    int32_t* buckets            # -1: empty
    Py_ssize_t n
    Py_ssize_t cap              # rows allocated
    Py_ssize_t nb               # buckets, a power of two


ctypedef struct record_t:      # mirrors RECORD_DTYPE
    int64_t row
    int32_t sid
    int32_t slot
    uint32_t portal_ip
    uint16_t portal_port
    uint16_t out_port
    uint8_t how
    uint8_t proto


cdef inline uint64_t mix(uint64_t k0, uint64_t k1) noexcept nogil:
    cdef uint64_t x = k0 * 0x9E3779B97F4A7C15ULL ^ (k1 + 0x632BE59BD9B4E019ULL)
    x ^= x >> 31
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 29
    x *= 0x94D049BB133111EBULL
    x ^= x >> 32
    return x


cdef int tab_init(table_t* t, Py_ssize_t rows) noexcept nogil:
    cdef Py_ssize_t nb = 16
    while nb < 2 * rows:
        nb *= 2
    t.e = <entry_t*>malloc(max(rows, <Py_ssize_t>8) * sizeof(entry_t))
    t.buckets = <int32_t*>malloc(nb * sizeof(int32_t))
    if t.e == NULL or t.buckets == NULL:
        return -1
    memset(t.buckets, 0xFF, nb * sizeof(int32_t))
    t.n = 0
    t.cap = max(rows, <Py_ssize_t>8)
    t.nb = nb
    return 0


cdef void tab_free(table_t* t) noexcept nogil:
    free(t.e)
    free(t.buckets)
    t.e = NULL
    t.buckets = NULL
    t.n = t.cap = t.nb = 0


cdef inline Py_ssize_t tab_find(const table_t* t, uint64_t k0, uint64_t k1) noexcept nogil:
    cdef Py_ssize_t mask = t.nb - 1
    cdef Py_ssize_t b = <Py_ssize_t>(mix(k0, k1) & <uint64_t>mask)
    cdef int32_t r
    while True:
        r = t.buckets[b]
        if r < 0:
            return -1
        if t.e[r].k0 == k0 and t.e[r].k1 == k1:
            return r
        b = (b + 1) & mask


cdef int tab_rehash(table_t* t, Py_ssize_t nb) noexcept nogil:
    cdef int32_t* buckets = <int32_t*>malloc(nb * sizeof(int32_t))
    cdef Py_ssize_t i, b, mask = nb - 1
    if buckets == NULL:
        return -1
    memset(buckets, 0xFF, nb * sizeof(int32_t))
    for i in range(t.n):
        b = <Py_ssize_t>(mix(t.e[i].k0, t.e[i].k1) & <uint64_t>mask)
        while buckets[b] >= 0:
            b = (b + 1) & mask
        buckets[b] = <int32_t>i
    free(t.buckets)
    t.buckets = buckets
    t.nb = nb
    return 0


cdef Py_ssize_t tab_add(table_t* t, uint64_t k0, uint64_t k1) noexcept nogil:
    """A new row for a key not in the table (the caller looked); -1 when out of memory."""
    cdef entry_t* grown
    cdef Py_ssize_t b, mask
    if t.n >= t.cap:
        grown = <entry_t*>realloc(t.e, 2 * t.cap * sizeof(entry_t))
        if grown == NULL:
            return -1
        t.e = grown
        t.cap *= 2
    if 2 * (t.n + 1) > t.nb:
        if tab_rehash(t, 2 * t.nb) < 0:
            return -1
    mask = t.nb - 1
    b = <Py_ssize_t>(mix(k0, k1) & <uint64_t>mask)
    while t.buckets[b] >= 0:
        b = (b + 1) & mask
    t.buckets[b] = <int32_t>t.n
    t.e[t.n].k0 = k0
    t.e[t.n].k1 = k1
    t.e[t.n].a = -1
    t.e[t.n].b = -1
    t.e[t.n].t = 0.0
    t.n += 1
    return t.n - 1


cdef bytes tab_dump(const table_t* t):
    return (<char*>t.e)[:t.n * sizeof(entry_t)]


cdef int tab_load(table_t* t, bytes rows) except -1:
    """The table from dumped rows (the buckets rebuilt)."""
    cdef Py_ssize_t n = len(rows) // sizeof(entry_t)
    cdef const char* src = rows
    cdef Py_ssize_t nb = 16
    tab_free(t)
    if tab_init(t, n) < 0:
        raise MemoryError()
    if n:
        memcpy(t.e, src, n * sizeof(entry_t))
    t.n = n
    while nb < 2 * n:
        nb *= 2
    if tab_rehash(t, nb) < 0:
        raise MemoryError()
    return 0


cdef class Proxy:
    """The userspace proxy process's state and its per-row hop (module docstring)."""

    cdef table_t tcp
    cdef table_t udp
    cdef table_t aff
    cdef uint32_t mt[MT_N]
    cdef int mti
    cdef int64_t[::1] _stats
    cdef object stats_array
    # per service id: the balancer's state (LoadBalancerRR as last loaded)
    cdef Py_ssize_t n_svc
    cdef uint8_t[::1] present
    cdef uint8_t[::1] sticky
    cdef int64_t[::1] ttl
    cdef int32_t[::1] index
    cdef int32_t[::1] ep_off
    cdef int32_t[::1] n_ep
    cdef int32_t[::1] ep_slots
    cdef uint8_t[::1] dirty
    cdef double[::1] timeout   # the listener's UDP idle timeout
    # endpoint slots ("host:port" strings, numbered by the backend)
    cdef Py_ssize_t n_slots
    cdef uint32_t[::1] slot_ip
    cdef uint16_t[::1] slot_port
    cdef uint8_t[::1] slot_bad
    cdef int32_t[::1] slot_dp
    cdef public bint last_affinity_hit

    def __cinit__(self):
        if (tab_init(&self.tcp, 8) < 0 or tab_init(&self.udp, 8) < 0
                or tab_init(&self.aff, 8) < 0):
            raise MemoryError()
        self.stats_array = np.zeros(4, np.int64)
        self._stats = self.stats_array
        self.mti = MT_N + 1  # not seeded
        self.n_svc = 0
        self.n_slots = 0
        self.last_affinity_hit = False
        self.load_services(np.zeros(0, np.uint8), np.zeros(0, np.uint8),
                           np.zeros(0, np.int64), np.zeros(0, np.int32),
                           np.zeros(0, np.int32), np.zeros(0, np.int32),
                           np.zeros(0, np.int32), np.zeros(0, np.float64))
        self.set_slots(np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.uint8),
                       np.zeros(0, np.int32))

    def __dealloc__(self):
        tab_free(&self.tcp)
        tab_free(&self.udp)
        tab_free(&self.aff)

    # ------------------------------------------------------------------ state in
    def reset(self, words, Py_ssize_t pos):
        """The proxy restarted: no flows, no sessions, counts zero; the connect() port
        stream at this Mersenne Twister state (``random.Random.getstate()``'s 624 words
        and position)."""
        cdef Py_ssize_t k
        if len(words) != MT_N or not 0 <= pos <= MT_N:
            raise ValueError("a Mersenne Twister state: 624 words and a position 0..624")
        for k in range(MT_N):
            self.mt[k] = <uint32_t>words[k]
        self.mti = <int>pos
        tab_free(&self.tcp)
        tab_free(&self.udp)
        if tab_init(&self.tcp, 8) < 0 or tab_init(&self.udp, 8) < 0:
            raise MemoryError()
        self.stats_array[:] = 0
        self.last_affinity_hit = False

    def rng_state(self):
        """(the 624 words, the position): ``random.Random.setstate((3, (*words, pos),
        None))`` continues the stream."""
        return [self.mt[k] for k in range(MT_N)], self.mti

    def load_services(self, present, sticky, ttl, index, ep_off, n_ep, ep_slots, timeout):
        """The balancer's services (arrays indexed by service id; ``ep_slots[ep_off[s]:
        ep_off[s] + n_ep[s]]`` the endpoint list in the balancer's order). The affinity
        entries are loaded apart (``load_affinity``)."""
        self.present = np.ascontiguousarray(present, np.uint8)
        self.n_svc = self.present.shape[0]
        self.sticky = np.ascontiguousarray(sticky, np.uint8)
        self.ttl = np.ascontiguousarray(ttl, np.int64)
        self.index = np.array(index, np.int32)
        self.ep_off = np.ascontiguousarray(ep_off, np.int32)
        self.n_ep = np.ascontiguousarray(n_ep, np.int32)
        self.ep_slots = np.ascontiguousarray(ep_slots, np.int32)
        self.timeout = np.array(timeout, np.float64)
        self.dirty = np.zeros(self.n_svc, np.uint8)
        if (self.sticky.shape[0] != self.n_svc or self.ttl.shape[0] != self.n_svc
                or self.index.shape[0] != self.n_svc or self.ep_off.shape[0] != self.n_svc
                or self.n_ep.shape[0] != self.n_svc or self.timeout.shape[0] != self.n_svc):
            raise ValueError("the service arrays differ in length")
        cdef Py_ssize_t s
        for s in range(self.n_svc):
            if self.n_ep[s] and (self.ep_off[s] < 0
                                 or self.ep_off[s] + self.n_ep[s] > self.ep_slots.shape[0]):
                raise ValueError("an endpoint list outside ep_slots")

    def set_timeouts(self, timeout):
        """The listeners' UDP idle timeouts, per service id."""
        arr = np.array(timeout, np.float64)
        if arr.shape[0] != self.n_svc:
            raise ValueError("one timeout per service id")
        self.timeout = arr

    def load_affinity(self, sid, client, slot, last_used, foreign):
        """Every affinity entry, in the balancer's order (per service, its map's order);
        ``foreign >= 0``: an entry whose client is not an IPv4 address (kept in place,
        never matched)."""
        cdef int32_t[::1] s = np.ascontiguousarray(sid, np.int32)
        cdef uint32_t[::1] c = np.ascontiguousarray(client, np.uint32)
        cdef int32_t[::1] sl = np.ascontiguousarray(slot, np.int32)
        cdef double[::1] t = np.ascontiguousarray(last_used, np.float64)
        cdef int32_t[::1] f = np.ascontiguousarray(foreign, np.int32)
        cdef Py_ssize_t k, n = s.shape[0], r
        cdef uint64_t k1
        if c.shape[0] != n or sl.shape[0] != n or t.shape[0] != n or f.shape[0] != n:
            raise ValueError("the affinity arrays differ in length")
        tab_free(&self.aff)
        if tab_init(&self.aff, n) < 0:
            raise MemoryError()
        for k in range(n):
            k1 = c[k] if f[k] < 0 else ((<uint64_t>1 << 32) | <uint32_t>f[k])
            r = tab_add(&self.aff, <uint64_t>s[k], k1)
            if r < 0:
                raise MemoryError()
            self.aff.e[r].a = sl[k]
            self.aff.e[r].b = f[k]
            self.aff.e[r].t = t[k]

    def set_slots(self, ip, port, bad, dp_index):
        """The endpoint slots: address, port, whether the host is not an IPv4 address,
        the index in the backend's endpoint table (-1: not assigned yet)."""
        self.slot_ip = np.array(ip, np.uint32)
        self.n_slots = self.slot_ip.shape[0]
        self.slot_port = np.array(port, np.uint16)
        self.slot_bad = np.array(bad, np.uint8)
        self.slot_dp = np.array(dp_index, np.int32)
        if (self.slot_port.shape[0] != self.n_slots or self.slot_bad.shape[0] != self.n_slots
                or self.slot_dp.shape[0] != self.n_slots):
            raise ValueError("the slot arrays differ in length")
        cdef Py_ssize_t k
        for k in range(self.ep_slots.shape[0]):
            if not 0 <= self.ep_slots[k] < self.n_slots:
                raise ValueError("an endpoint list names an unknown slot")

    # ------------------------------------------------------------------ state out
    @property
    def stats(self):
        """The counts (int64: connections, relayed, relay_rules, no_endpoint); writable."""
        return self.stats_array

    @property
    def slot_index(self):
        """Each slot's index in the backend's endpoint table (-1: not assigned)."""
        return np.asarray(self.slot_dp)

    @property
    def indices(self):
        """The round-robin index of each service id."""
        return np.asarray(self.index).copy()

    def take_dirty(self):
        """The service ids whose index or affinity the hops changed since the last call."""
        d = np.asarray(self.dirty)
        ids = np.flatnonzero(d)
        d[:] = 0
        return ids

    def affinity(self):
        """Every affinity entry in order: (sid, client, slot, last_used, foreign) arrays."""
        cdef Py_ssize_t n = self.aff.n, k
        sid = np.empty(n, np.int32)
        client = np.empty(n, np.uint32)
        slot = np.empty(n, np.int32)
        last = np.empty(n, np.float64)
        foreign = np.empty(n, np.int32)
        cdef int32_t[::1] s = sid, sl = slot, f = foreign
        cdef uint32_t[::1] c = client
        cdef double[::1] t = last
        for k in range(n):
            s[k] = <int32_t>self.aff.e[k].k0
            c[k] = <uint32_t>self.aff.e[k].k1
            sl[k] = self.aff.e[k].a
            t[k] = self.aff.e[k].t
            f[k] = self.aff.e[k].b
        return sid, client, slot, last, foreign

    @property
    def flows(self):
        """(TCP connections, UDP clients) held."""
        return self.tcp.n, self.udp.n

    def snapshot(self):
        """What a packet may change, to put back with ``restore``."""
        return (tab_dump(&self.tcp), tab_dump(&self.udp), tab_dump(&self.aff),
                self.rng_state(), self.stats_array.copy(), np.asarray(self.index).copy(),
                np.asarray(self.dirty).copy(), self.last_affinity_hit)

    def restore(self, snap):
        tcp, udp, aff, (words, pos), stats, index, dirty, hit = snap
        if len(index) != self.n_svc:
            raise ValueError("a snapshot of other services")
        tab_load(&self.tcp, tcp)
        tab_load(&self.udp, udp)
        tab_load(&self.aff, aff)
        cdef Py_ssize_t k
        for k in range(MT_N):
            self.mt[k] = <uint32_t>words[k]
        self.mti = pos
        self.stats_array[:] = stats
        np.asarray(self.index)[:] = index
        np.asarray(self.dirty)[:] = np.asarray(self.dirty) | dirty
        self.last_affinity_hit = hit

    # ------------------------------------------------------------------ per row
    cdef uint32_t genrand(self) noexcept nogil:
        """CPython's genrand_uint32 (Modules/_randommodule.c)."""
        cdef uint32_t y
        cdef int kk
        cdef uint32_t* mt = self.mt
        if self.mti >= MT_N:
            for kk in range(MT_N - MT_M):
                y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7FFFFFFFU)
                mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ (0x9908B0DFU if y & 1 else 0)
            for kk in range(MT_N - MT_M, MT_N - 1):
                y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7FFFFFFFU)
                mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ (0x9908B0DFU if y & 1 else 0)
            y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7FFFFFFFU)
            mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ (0x9908B0DFU if y & 1 else 0)
            self.mti = 0
        y = mt[self.mti]
        self.mti += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680U
        y ^= (y << 15) & 0xEFC60000U
        y ^= y >> 18
        return y

    cdef uint16_t connect_port(self) noexcept nogil:
        """``CONNECT_LOW + 2 * rng.randrange(CONNECT_SPAN)``: CPython's
        _randbelow_with_getrandbits, getrandbits(k) = genrand >> (32 - k)."""
        cdef uint32_t r = self.genrand() >> (32 - CONNECT_BITS)
        while r >= CONNECT_SPAN:
            r = self.genrand() >> (32 - CONNECT_BITS)
        return <uint16_t>(CONNECT_LOW + 2 * r)

    cdef int32_t pick(self, int32_t sid, uint32_t client, double now, uint8_t* how,
                      uint16_t* out_port) noexcept nogil:
        """``NextEndpoint(service, client, false)`` and, on success, the proxy's own
        connection (counted, a local port drawn). -1: no endpoint; -2: out of memory."""
        cdef Py_ssize_t e
        cdef int32_t n, slot
        if sid < 0 or sid >= self.n_svc or not self.present[sid]:
            return -1  # ErrMissingServiceEntry
        n = self.n_ep[sid]
        if n == 0:
            return -1  # ErrMissingEndpoints
        self.dirty[sid] = 1
        if self.sticky[sid]:
            e = tab_find(&self.aff, <uint64_t>sid, client)
            if e >= 0 and <int64_t>(now - self.aff.e[e].t) < self.ttl[sid]:
                self.aff.e[e].t = now
                self.last_affinity_hit = True
                how[0] = C_HOW_AFFINITY
                self._stats[0] += 1
                out_port[0] = self.connect_port()
                return self.aff.e[e].a
        self.last_affinity_hit = False
        slot = self.ep_slots[self.ep_off[sid] + self.index[sid]]
        self.index[sid] = (self.index[sid] + 1) % n
        if self.sticky[sid]:
            e = tab_find(&self.aff, <uint64_t>sid, client)
            if e < 0:
                e = tab_add(&self.aff, <uint64_t>sid, client)
                if e < 0:
                    return -2
            self.aff.e[e].t = now
            self.aff.e[e].a = slot
        how[0] = C_HOW_ROUND_ROBIN
        self._stats[0] += 1
        out_port[0] = self.connect_port()
        return slot

    def hop(self, const packet_t[::1] packets not None, verdict_t[::1] out not None,
            uint32_t proxy_ip, uint32_t proxy_ip2, uint32_t node_ip,
            const int32_t[:, ::1] listen not None, Py_ssize_t n_endpoints,
            record_t[::1] records not None, packet_t[::1] second not None,
            int64_t[::1] second_rows not None, int32_t[::1] new_slots not None):
        """Every row the portal rules sent to a proxy address (``proxy_ip``, or
        ``proxy_ip2`` when not 0) and a listener's port (``listen[proto][port]``: the
        service id or -1; proto 0 TCP, 1 UDP, 2 SCTP) through its proxy, in order.
        ``n_endpoints``: the backend's endpoint table's length (a slot chosen for the
        first time gets the next index, its slot listed in ``new_slots``).
        Returns (records, second packets, new slots, error): the rows taken, in
        ``records``; the proxy's own packets, in ``second`` (their rows in
        ``second_rows``); error: C_HOP_NO_MEMORY, or C_HOP_BAD_ENDPOINT (the hop stopped at
        the row of the last record)."""
        cdef Py_ssize_t n = packets.shape[0], i, e
        cdef Py_ssize_t nrec = 0, nsec = 0, nnew = 0
        cdef int err = C_HOP_OK
        cdef const packet_t* p
        cdef verdict_t* v
        cdef record_t* r
        cdef packet_t* q
        cdef int32_t sid, slot
        cdef int pi
        cdef uint8_t how
        cdef uint16_t oport
        cdef uint64_t k0, k1
        cdef double ts
        if out.shape[0] < n:
            raise ValueError("verdict array shorter than the packet array")
        if (records.shape[0] < n or second.shape[0] < n or second_rows.shape[0] < n
                or new_slots.shape[0] < n):
            raise ValueError("output arrays shorter than the packet array")
        if listen.shape[0] != 3 or listen.shape[1] != 65536:
            raise ValueError("listen: a (3, 65536) array of service ids")
        if self.mti > MT_N:
            raise ValueError("the connect() port stream is not seeded (reset)")
        with nogil:
            for i in range(n):
                v = &out[i]
                if v.action != ACT_DNAT:
                    continue
                if v.dnat_ip != proxy_ip and (proxy_ip2 == 0 or v.dnat_ip != proxy_ip2):
                    continue
                p = &packets[i]
                if p.proto == 6:
                    pi = 0
                elif p.proto == 17:
                    pi = 1
                elif p.proto == 132:
                    pi = 2
                else:
                    continue
                sid = listen[pi, v.dnat_port]
                if sid < 0:
                    continue
                ts = p.ts
                how = C_HOW_NONE
                oport = 0
                if pi == 1:
                    k0 = <uint64_t>sid
                    k1 = (<uint64_t>p.src_ip << 16) | p.src_port
                    e = tab_find(&self.udp, k0, k1)
                    if (e >= 0 and sid < self.n_svc
                            and ts - self.udp.e[e].t < self.timeout[sid]):
                        slot = self.udp.e[e].a
                        oport = <uint16_t>self.udp.e[e].b
                        how = C_HOW_SESSION
                    else:
                        slot = self.pick(sid, p.src_ip, ts, &how, &oport)
                    if slot >= 0:
                        if e < 0:
                            e = tab_add(&self.udp, k0, k1)
                            if e < 0:
                                err = C_HOP_NO_MEMORY
                                break
                        self.udp.e[e].a = slot
                        self.udp.e[e].b = oport
                        self.udp.e[e].t = ts
                else:
                    k0 = (<uint64_t>p.src_ip << 32) | p.dst_ip
                    k1 = (<uint64_t>p.src_port << 16) | p.dst_port
                    e = tab_find(&self.tcp, k0, k1) if v.ct_hit else -1
                    if e >= 0:
                        slot = self.tcp.e[e].a
                        oport = <uint16_t>self.tcp.e[e].b
                        how = C_HOW_CONNECTION
                    else:
                        slot = self.pick(sid, p.src_ip, ts, &how, &oport)
                        if slot >= 0:
                            e = tab_find(&self.tcp, k0, k1)
                            if e < 0:
                                e = tab_add(&self.tcp, k0, k1)
                                if e < 0:
                                    err = C_HOP_NO_MEMORY
                                    break
                            self.tcp.e[e].a = slot
                            self.tcp.e[e].b = oport
                if slot == -2:
                    err = C_HOP_NO_MEMORY
                    break
                r = &records[nrec]
                nrec += 1
                r.row = i
                r.sid = sid
                r.slot = slot
                r.portal_ip = v.dnat_ip
                r.portal_port = v.dnat_port
                r.out_port = oport
                r.how = how
                r.proto = p.proto
                if slot < 0:
                    self._stats[3] += 1
                    v.action = ACT_ACCEPT
                    v.endpoint = -1
                    continue
                if self.slot_bad[slot]:
                    err = C_HOP_BAD_ENDPOINT
                    break
                if self.slot_dp[slot] < 0:
                    self.slot_dp[slot] = <int32_t>(n_endpoints + nnew)
                    new_slots[nnew] = slot
                    nnew += 1
                v.endpoint = self.slot_dp[slot]
                v.dnat_ip = self.slot_ip[slot]
                v.dnat_port = self.slot_port[slot]
                v.snat_ip = node_ip
                v.snat_port = oport
                q = &second[nsec]
                second_rows[nsec] = i
                nsec += 1
                q.ts = ts
                q.src_ip = node_ip
                q.dst_ip = self.slot_ip[slot]
                q.src_port = oport
                q.dst_port = self.slot_port[slot]
                q.proto = p.proto
                q.tcp_flags = p.tcp_flags
                q.origin = ORIGIN_HOST
                q.family = 4
        return nrec, nsec, nnew, err
