# vstable.pxi: IPVS virtual-server table, schedulers and connection table (Python API over
# cext/ipvs_core.pxd), and ipsets for ``-m set`` (over cext/ipset_core.pxd). Included by
# chains.pyx only, so the chain engine's per-packet set and IPVS calls inline; Python
# imports it as kproxy_emu._cext.vstable (a re-export, whose docstring says more).
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memset

import ipaddress

from kproxy_emu.ipaddr import ipv4_int

import numpy as np

from packet cimport packet_t, verdict_t
from ipvs_core cimport *
from ipset_core cimport *

include "hashing.pxi"
include "ipvs_core.pxi"
include "ipset_core.pxi"

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
SERVICE_DTYPE = np.dtype([("proto", "u1"), ("addr", "u4"), ("port", "u2"), ("flags", "u4"),
                          ("timeout", "u4")])
DEST_DTYPE = np.dtype([("svc", "i4"), ("addr", "u4"), ("port", "u2"), ("weight", "i4"),
                       ("endpoint", "i4")])
DEST_STATS_DTYPE = np.dtype([("svc", "i4"), ("addr", "u4"), ("port", "u2"), ("weight", "i4"),
                             ("activeconns", "i4"), ("inactconns", "i4"),
                             ("persistconns", "i4"), ("linked", "?"), ("available", "?")])
CONN_DTYPE = np.dtype([("caddr", "u4"), ("cport", "u2"), ("vaddr", "u4"), ("vport", "u2"),
                       ("daddr", "u4"), ("dport", "u2"), ("proto", "u1"), ("state", "u1"),
                       ("template", "?"), ("inactive", "?"), ("expires", "f8"),
                       ("dest", "i4"), ("n_control", "i4")])
TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
                   "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
# ip_vs_proto_tcp.c tcp_timeouts, ip_vs_proto_udp.c udp_timeouts (seconds); SCTP: one state
DEFAULT_TIMEOUTS = {"NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60,
                    "FIN_WAIT": 120, "TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60,
                    "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120, "UDP": 300, "SCTP": 900}
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
FLAG_PERSISTENT = SVC_F_PERSISTENT
FLAG_SCHED1 = SVC_F_SCHED1
FLAG_SCHED2 = SVC_F_SCHED2
RESULT_PASS = IPVS_PASS
RESULT_DNAT = IPVS_DNAT
RESULT_DROP = IPVS_DROP
RESULT_REJECT = IPVS_REJECT
RESULT_NOSCHED = IPVS_NOSCHED
RESULT_SNAT = IPVS_SNAT
STATS_KEYS = ("conns", "templates", "hits", "expired", "nodest", "noroom", "unavailable")


def scheduler_code(name):
    try:
        return SCHEDULERS.index(name)
    except ValueError:
        raise ValueError(f"unknown IPVS scheduler {name!r} "
                         f"(kernel schedulers: {', '.join(SCHEDULERS)})") from None


def svc_hash(int proto, uint32_t addr, int port, uint32_t rnd, int bits):
    """ip_vs_svc_hashkey with a 2^bits table."""
    cdef uint32_t porth = port
    return (proto ^ (addr ^ rnd) ^ (porth >> bits) ^ porth) & ((1u << bits) - 1)


def conn_hash(int proto, uint32_t caddr, int cport, uint32_t rnd, int bits):
    return jhash_3words(caddr, <uint16_t>cport, <uint8_t>proto, rnd) & ((1u << bits) - 1)


def sh_hash(uint32_t addr, int port, uint32_t offset=0):
    return sh_hashkey(addr, <uint16_t>port, offset)


def dh_hash(uint32_t addr):
    return dh_hashkey(addr)


def mh_hash(uint32_t addr, int port, int which=1, uint32_t offset=0):
    """ip_vs_mh_hashkey with hash1 (which=1) or hash2 (which=2)."""
    return mh_hashkey(addr, <uint16_t>port, MH_KEY1 if which == 1 else MH_KEY2, offset)


def tcp_transition(bint output, int idx, int state):
    """tcp_states[] (INPUT or OUTPUT rows): next state for flag index idx (syn, fin, ack,
    rst) from ``state``."""
    if not (0 <= idx < 4 and 0 <= state < TCP_S_LAST):
        raise ValueError(f"bad index {idx} or state {state}")
    return tcp_output_next(idx, state) if output else tcp_input_next(idx, state)


def table_seeds(seed):
    """(svc_rnd, conn_rnd): the kernel's random terms, drawn from one seed."""
    s = np.random.SeedSequence(seed).generate_state(2, np.uint32)
    return int(s[0]), int(s[1])


cdef class VirtualServerTable:
    """The IPVS state of one node: virtual services, destinations, connections.

    ``services``: SERVICE_DTYPE rows (added in this order, each at its hash chain head);
    ``dests``: DEST_DTYPE rows in the order they are added to their service (the kernel
    keeps each service's list newest first). Indices of services and destinations are
    their row numbers; ``add_dest`` appends. Time is emulated: each packet's ``ts``.
    """
    def __cinit__(self):
        memset(&self.t, 0, sizeof(ipvs_table_t))
        self.trash = {}

    def __init__(self, services, dests, scheduler="rr", seed=0, *, svc_bits=None,
                 int conn_bits=12, int max_conns=1 << 18, int mh_tab_index=12,
                 timeouts=None, bint expire_nodest_conn=True,
                 bint expire_quiescent_template=True, int conn_reuse_mode=1):
        cdef int32_t i, n, bits
        cdef ipvs_table_t* t
        services = np.ascontiguousarray(services, SERVICE_DTYPE)
        dests = np.ascontiguousarray(dests, DEST_DTYPE)
        code = scheduler_code(scheduler)
        if not 8 <= mh_tab_index <= 17:
            raise ValueError(f"mh_tab_index must be 8..17 (CONFIG_IP_VS_MH_TAB_INDEX), "
                             f"got {mh_tab_index}")
        if not 8 <= conn_bits <= 20:
            raise ValueError(f"conn_bits must be 8..20 (ip_vs conn_tab_bits), got {conn_bits}")
        self.scheduler = scheduler
        self.seed = seed
        n = len(services)
        if svc_bits is None:
            bits = 8
            while (1 << bits) < n:
                bits += 1
        else:
            bits = svc_bits
        svc_rnd, conn_rnd = table_seeds(seed)
        t = &self.t
        t.svc_bits = bits
        t.svc_mask = (1u << bits) - 1
        t.svc_rnd = svc_rnd
        t.conn_rnd = conn_rnd
        t.conn_mask = (1u << conn_bits) - 1
        t.mh_size = MH_PRIMES[mh_tab_index - 8]
        t.mh_bits = mh_tab_index // 2
        t.expire_nodest_conn = expire_nodest_conn
        t.expire_quiescent_template = expire_quiescent_template
        t.conn_reuse_mode = conn_reuse_mode
        t.lblc_expiration = 24 * 60 * 60
        t.lblcr_expiration = 24 * 60 * 60
        to = dict(DEFAULT_TIMEOUTS)
        for k, v in (timeouts or {}).items():
            if k not in to:
                raise ValueError(f"unknown IPVS timeout {k!r} (known: {', '.join(to)})")
            to[k] = v
        for i, name in enumerate(TCP_STATE_NAMES):
            t.timeouts[i] = to[name]
        t.timeouts[TO_UDP] = to["UDP"]
        t.timeouts[TO_SCTP] = to["SCTP"]
        t.svc_buckets = <int32_t*>malloc_i32(1 << bits, -1)
        t.conn_buckets = <int32_t*>malloc_i32(1 << conn_bits, -1)
        t.conns = <ipvs_conn_t*>calloc(max(max_conns, 1), sizeof(ipvs_conn_t))
        if not t.svc_buckets or not t.conn_buckets or not t.conns:
            raise MemoryError()
        t.conn_cap = max_conns
        t.conn_free = -1
        self.sched = code
        self.tab_size = 0
        if code == SCHED_MH:
            self.tab_size = t.mh_size
        elif code in (SCHED_SH, SCHED_DH):
            self.tab_size = SH_TAB_SIZE
        self._grow_svcs(max(n, 16))
        self._grow_dests(max(len(dests), 16))
        if self.tab_size:
            self._grow_tab(<int64_t>max(n, 1) * self.tab_size)
        cdef const uint8_t[:] s_proto = services["proto"]
        cdef const uint32_t[:] s_addr = services["addr"]
        cdef const uint16_t[:] s_port = services["port"]
        cdef const uint32_t[:] s_flags = services["flags"]
        cdef const uint32_t[:] s_timeout = services["timeout"]
        for i in range(n):
            self._add_service(s_proto[i], s_addr[i], s_port[i], s_flags[i], s_timeout[i])
        cdef const int32_t[:] d_svc = dests["svc"]
        cdef const uint32_t[:] d_addr = dests["addr"]
        cdef const uint16_t[:] d_port = dests["port"]
        cdef const int32_t[:] d_weight = dests["weight"]
        cdef const int32_t[:] d_endpoint = dests["endpoint"]
        # sh, dh and mh rebuild their whole table on every change; the table after the
        # last addition does not depend on the earlier ones, so build it once per service
        self.bulk = self.tab_size != 0
        try:
            for i in range(len(dests)):
                self._add_dest(d_svc[i], d_addr[i], d_port[i], d_weight[i], d_endpoint[i])
        finally:
            self.bulk = False
        if self.tab_size:
            for i in range(n):
                self._sched_changed(i, -1, 0, False)

    def __dealloc__(self):
        free(self.t.svcs)
        free(self.t.svc_buckets)
        free(self.t.dests)
        free(self.t.dest_available)
        free(self.t.sched_tab)
        free(self.t.conns)
        free(self.t.conn_buckets)

    cdef int c_in(self, const packet_t* p, verdict_t* v) noexcept nogil:
        """ip_vs_in for one client packet (the pipeline's LOCAL_IN / LOCAL_OUT step)."""
        return ipvs_in(&self.t, p, v)

    cdef int c_out(self, const packet_t* p, verdict_t* v) noexcept nogil:
        """ip_vs_out for one reply."""
        return ipvs_out(&self.t, p, v)

    def snapshot(self, bint schedulers=False):
        """Everything packets change (connections, templates, destination counters,
        scheduler positions and caches, statistics), for ``restore``; with ``schedulers``
        also the sh/dh/mh lookup tables, which a destination's deletion rebuilds. Services
        and destinations must not be added in between."""
        cdef ipvs_table_t* t = &self.t
        conns = bytes((<char*>t.conns)[:<Py_ssize_t>t.conn_high * sizeof(ipvs_conn_t)])
        buckets = bytes((<char*>t.conn_buckets)[:<Py_ssize_t>(t.conn_mask + 1) * sizeof(int32_t)])
        svcs = bytes((<char*>t.svcs)[:<Py_ssize_t>t.nsvcs * sizeof(ipvs_svc_t)])
        dests = bytes((<char*>t.dests)[:<Py_ssize_t>t.ndests * sizeof(ipvs_dest_t)])
        avail = bytes((<char*>t.dest_available)[:t.ndests])
        tab = None
        if schedulers and self.tab_size:
            tab = bytes((<char*>t.sched_tab)[:<Py_ssize_t>t.nsvcs * self.tab_size * sizeof(int32_t)])
        return (self, conns, buckets, svcs, dests, avail, t.conn_count, t.conn_free,
                t.conn_high, dict(t.st), tab)

    def restore(self, snap):
        """Put the table back as ``snapshot`` saw it (ValueError: another table's, or one
        whose services or destinations changed since)."""
        cdef ipvs_table_t* t = &self.t
        if not isinstance(snap, tuple) or len(snap) != 11 or snap[0] is not self:
            raise ValueError("not a snapshot of this table")
        _, conns, buckets, svcs, dests, avail, count, free_head, high, st, tab = snap
        if len(svcs) != t.nsvcs * sizeof(ipvs_svc_t) or \
                len(dests) != t.ndests * sizeof(ipvs_dest_t):
            raise ValueError("the table's services or destinations changed since the snapshot")
        cdef const unsigned char[:] cv = conns
        cdef const unsigned char[:] bv = buckets
        cdef const unsigned char[:] sv = svcs
        cdef const unsigned char[:] dv = dests
        cdef const unsigned char[:] av = avail
        if cv.shape[0]:
            memcpy(t.conns, &cv[0], cv.shape[0])
        memcpy(t.conn_buckets, &bv[0], bv.shape[0])
        if sv.shape[0]:
            memcpy(t.svcs, &sv[0], sv.shape[0])
        if dv.shape[0]:
            memcpy(t.dests, &dv[0], dv.shape[0])
            memcpy(t.dest_available, &av[0], av.shape[0])
        if high < t.conn_high:
            memset(t.conns + <Py_ssize_t>high, 0, (t.conn_high - high) * sizeof(ipvs_conn_t))
        t.conn_count = count
        t.conn_free = free_head
        t.conn_high = high
        t.st = st
        cdef const unsigned char[:] tv
        if tab is not None and len(tab):
            tv = tab
            memcpy(t.sched_tab, &tv[0], tv.shape[0])

    cdef _grow_svcs(self, int32_t need):
        cdef int32_t cap = self.svc_cap
        if need <= cap:
            return
        cap = max(need, cap * 2)
        p = <ipvs_svc_t*>realloc(self.t.svcs, cap * sizeof(ipvs_svc_t))
        if not p:
            raise MemoryError()
        self.t.svcs = p
        self.svc_cap = cap

    def add_service(self, int proto, uint32_t addr, int port, uint32_t flags=0,
                    uint32_t timeout=0):
        """ip_vs_add_service: hashed at the head of its chain, scheduler initialised."""
        return self._add_service(proto, addr, port, flags, timeout)

    cdef int32_t _add_service(self, int proto, uint32_t addr, int port, uint32_t flags,
                              uint32_t timeout) except -1:
        cdef uint32_t probes = 0
        if svc_find(&self.t, proto, addr, port, &probes) >= 0:
            raise ValueError(f"virtual service {proto}/{addr}:{port} exists")
        cdef int32_t i = self.t.nsvcs
        self._grow_svcs(i + 1)
        if self.tab_size:
            self._grow_tab(<int64_t>(i + 1) * self.tab_size)
        cdef ipvs_svc_t* sv = &self.t.svcs[i]
        memset(sv, 0, sizeof(ipvs_svc_t))
        sv.proto = proto
        sv.addr = addr
        sv.port = port
        sv.flags = flags | SVC_F_HASHED
        sv.timeout = timeout
        sv.sched = self.sched
        sv.dest_head = -1
        sv.cur = -1
        sv.cache_dest = -1
        sv.cache_lastuse = -1
        sv.tab = <int32_t>(<int64_t>i * self.tab_size) if self.tab_size else -1
        cdef uint32_t h = svc_hashkey(&self.t, sv.proto, sv.addr, sv.port)
        sv.next = self.t.svc_buckets[h]
        self.t.svc_buckets[h] = i
        self.t.nsvcs += 1
        self._sched_changed(i, -1, 0, True)        # init_service
        return i

    def edit_service(self, int32_t svc, uint32_t flags, uint32_t timeout):
        """ip_vs_edit_service (same scheduler): new flags and persistence timeout;
        existing connections and templates stay."""
        self._check_svc(svc)
        cdef ipvs_svc_t* sv = &self.t.svcs[svc]
        if not sv.flags & SVC_F_HASHED:
            raise ValueError(f"service {svc} was deleted")
        sv.flags = flags | SVC_F_HASHED
        sv.timeout = timeout

    def service_flags(self, int32_t svc):
        """(flags, timeout) of the service (flags include IP_VS_SVC_F_HASHED while hashed)."""
        self._check_svc(svc)
        return self.t.svcs[svc].flags, self.t.svcs[svc].timeout

    def del_service(self, int32_t svc):
        """ip_vs_del_service: unhashed; its destinations go to the trash (their
        connections are dropped by expire_nodest_conn)."""
        self._check_svc(svc)
        cdef ipvs_svc_t* sv = &self.t.svcs[svc]
        if not sv.flags & SVC_F_HASHED:
            raise ValueError(f"service {svc} was already deleted")
        while sv.dest_head >= 0:
            self.del_dest(sv.dest_head)
        cdef uint32_t h = svc_hashkey(&self.t, sv.proto, sv.addr, sv.port)
        cdef int32_t x = self.t.svc_buckets[h], prev = -1
        while x >= 0 and x != svc:
            prev = x
            x = self.t.svcs[x].next
        if prev < 0:
            self.t.svc_buckets[h] = sv.next
        else:
            self.t.svcs[prev].next = sv.next
        sv.next = -1
        sv.flags &= ~SVC_F_HASHED

    cdef _grow_dests(self, int32_t need):
        cdef int32_t cap = self.dest_cap
        if need <= cap:
            return
        cap = max(need, cap * 2)
        p = <ipvs_dest_t*>realloc(self.t.dests, cap * sizeof(ipvs_dest_t))
        if not p:
            raise MemoryError()
        self.t.dests = p
        a = <uint8_t*>realloc(self.t.dest_available, cap)
        if not a:
            raise MemoryError()
        self.t.dest_available = a
        self.dest_cap = cap

    cdef _grow_tab(self, int64_t need):
        if need <= self.tab_cap:
            return
        p = <int32_t*>realloc(self.t.sched_tab, need * sizeof(int32_t))
        if not p:
            raise MemoryError()
        self.t.sched_tab = p
        self.tab_cap = need

    cdef _sched_changed(self, int32_t s, int32_t dest, int kind, bint init):
        """The scheduler's init_service / add_dest (kind 0) / del_dest (1) / upd_dest (2)."""
        cdef ipvs_svc_t* sv = &self.t.svcs[s]
        cdef uint32_t* perm
        cdef uint32_t* skip
        cdef int32_t* turns
        cdef uint8_t* used
        if sv.sched == SCHED_WRR:       # rr's del_dest hook runs in del_dest
            wrr_dest_changed(&self.t, sv, init)
        elif sv.sched == SCHED_SH:
            hash_table_reassign(&self.t, sv, True)
        elif sv.sched == SCHED_DH:
            hash_table_reassign(&self.t, sv, False)
        elif sv.sched == SCHED_MH:
            mh_weights(&self.t, sv)
            n = max(sv.num_dests, 1)
            perm = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
            skip = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
            turns = <int32_t*>PyMem_Malloc(n * sizeof(int32_t))
            used = <uint8_t*>PyMem_Malloc(self.t.mh_size)
            try:
                if mh_populate(&self.t, sv, perm, skip, turns, used) < 0:
                    raise ValueError(f"mh: {sv.num_dests} destinations exceed the "
                                     f"{self.t.mh_size}-slot table")
            finally:
                PyMem_Free(perm)
                PyMem_Free(skip)
                PyMem_Free(turns)
                PyMem_Free(used)

    def _check_svc(self, int32_t s):
        if not 0 <= s < self.t.nsvcs:
            raise IndexError(f"no service {s}")

    def _check_dest(self, int32_t d):
        if not 0 <= d < self.t.ndests:
            raise IndexError(f"no destination {d}")

    def add_dest(self, int32_t svc, uint32_t addr, int port, int weight=1, int endpoint=-1):
        """ip_vs_add_dest: a new destination at the head of the service's list; one this
        service deleted comes back from the trash (ip_vs_trash_get_dest) with its
        counters and the connections still pointing at it, available again."""
        return self._add_dest(svc, addr, port, weight, endpoint)

    cdef int32_t _add_dest(self, int32_t svc, uint32_t addr, int port, int weight,
                           int endpoint) except -1:
        if not 0 <= svc < self.t.nsvcs:
            raise IndexError(f"no service {svc}")
        if not self.t.svcs[svc].flags & SVC_F_HASHED:
            raise ValueError(f"service {svc} was deleted")
        cdef ipvs_svc_t* sv = &self.t.svcs[svc]
        cdef ipvs_dest_t* d
        cdef int32_t i = -1
        if self.trash:
            i = self.trash.pop((svc, addr, port), -1)
        # the entry may be stale (a restore() relinked it): then a new destination
        if i >= 0 and not self.t.dests[i].flags & DEST_F_LINKED and \
                self.t.dests[i].svc == svc and self.t.dests[i].addr == addr and \
                self.t.dests[i].port == port:
            # __ip_vs_update_dest(add): weight and last_weight set, available, listed
            d = &self.t.dests[i]
            d.weight = weight
            d.last_weight = weight
            d.endpoint = endpoint
            d.flags |= DEST_F_AVAILABLE | DEST_F_LINKED
            self.t.dest_available[i] = 1
            d.next = sv.dest_head
            sv.dest_head = i
            sv.num_dests += 1
            if not self.bulk:
                self._sched_changed(svc, i, 0, False)
            return i
        i = self.t.ndests
        self._grow_dests(i + 1)
        d = &self.t.dests[i]
        memset(d, 0, sizeof(ipvs_dest_t))
        d.addr = addr
        d.port = port
        d.weight = weight
        d.last_weight = weight
        d.svc = svc
        d.endpoint = endpoint
        d.set_next = -1
        d.flags = DEST_F_AVAILABLE | DEST_F_LINKED
        self.t.dest_available[i] = 1
        d.next = sv.dest_head
        sv.dest_head = i
        sv.num_dests += 1
        self.t.ndests += 1
        if not self.bulk:
            self._sched_changed(svc, i, 0, False)
        return i

    def edit_dest(self, int32_t dest, int weight):
        """ip_vs_edit_dest: a new weight (last_weight keeps the latest non-zero one)."""
        self._check_dest(dest)
        cdef ipvs_dest_t* d = &self.t.dests[dest]
        if not d.flags & DEST_F_LINKED:
            raise ValueError(f"destination {dest} was deleted")
        if weight != 0:
            d.last_weight = weight
        d.weight = weight
        self._sched_changed(d.svc, dest, 2, False)

    def del_dest(self, int32_t dest):
        """ip_vs_del_dest: out of the list and unavailable; connections keep pointing at it
        (the dest trash) until they expire."""
        self._check_dest(dest)
        cdef ipvs_dest_t* d = &self.t.dests[dest]
        cdef ipvs_svc_t* sv = &self.t.svcs[d.svc]
        cdef int32_t x, prev = -1
        if not d.flags & DEST_F_LINKED:
            raise ValueError(f"destination {dest} was already deleted")
        # rr's del_dest needs the predecessor before the unlink
        if sv.sched == SCHED_RR and sv.cur == dest:
            x = sv.dest_head
            while x >= 0 and x != dest:
                prev = x
                x = self.t.dests[x].next
            sv.cur = prev
        x = sv.dest_head
        prev = -1
        while x >= 0 and x != dest:
            prev = x
            x = self.t.dests[x].next
        if prev < 0:
            sv.dest_head = d.next
        else:
            self.t.dests[prev].next = d.next
        d.next = -1
        d.flags &= ~(DEST_F_LINKED | DEST_F_AVAILABLE)
        self.t.dest_available[dest] = 0
        sv.num_dests -= 1
        self.trash[(d.svc, d.addr, d.port)] = dest
        if sv.sched != SCHED_RR:
            self._sched_changed(d.svc, dest, 1, False)

    def find_service(self, int proto, uint32_t addr, int port):
        """Index of the virtual service <proto, addr, port>, -1 if none."""
        cdef uint32_t probes = 0
        return svc_find(&self.t, proto, addr, port, &probes)

    def service_dests(self, int32_t svc):
        """The service's destinations in list order (what the schedulers walk)."""
        self._check_svc(svc)
        out = []
        cdef int32_t d = self.t.svcs[svc].dest_head
        while d >= 0:
            out.append(d)
            d = self.t.dests[d].next
        return out

    def sched_table(self, int32_t svc):
        """sh/dh/mh lookup table of the service (destination per bucket, -1 empty)."""
        self._check_svc(svc)
        cdef ipvs_svc_t* sv = &self.t.svcs[svc]
        if sv.tab < 0:
            raise ValueError(f"scheduler {self.scheduler} has no lookup table")
        size = self.t.mh_size if sv.sched == SCHED_MH else SH_TAB_SIZE
        return np.array(<int32_t[:size]>(self.t.sched_tab + sv.tab), np.int32)

    @property
    def num_services(self):
        return self.t.nsvcs

    @property
    def num_dests(self):
        return self.t.ndests

    @property
    def svc_bits(self):
        return self.t.svc_bits

    @property
    def mh_size(self):
        return self.t.mh_size

    def __len__(self):
        return self.t.conn_count

    def process(self, packets, verdict_t[:] out, now=None):
        """ip_vs_in for each packet (client -> virtual address) in order, at the packet's
        ``ts`` (or ``now`` for all). Writes each verdict (reset first); returns a result code
        array (RESULT_*)."""
        return self._each(packets, out, now, False)

    def process_reply(self, packets, verdict_t[:] out, now=None):
        """ip_vs_out for each reply packet (real server -> client) in order: the source
        goes back to the virtual address (snat_ip/snat_port) for packets of known
        connections. Returns RESULT_SNAT / RESULT_PASS codes."""
        return self._each(packets, out, now, True)

    def _each(self, packets, verdict_t[:] out, now, bint reply):
        cdef const packet_t[:] pk = packets
        cdef Py_ssize_t i, n = pk.shape[0]
        cdef packet_t p
        cdef bint fixed = now is not None
        cdef double when = now if fixed else 0.0
        if out.shape[0] < n:
            raise ValueError(f"out has {out.shape[0]} verdicts for {n} packets")
        res = np.empty(n, np.uint8)
        cdef uint8_t[:] r = res
        with nogil:
            for i in range(n):
                p = pk[i]
                if fixed:
                    p.ts = when
                verdict_reset(&out[i])
                r[i] = ipvs_out(&self.t, &p, &out[i]) if reply else \
                    ipvs_in(&self.t, &p, &out[i])
        return res

    def expire(self, double now):
        """Collect every entry whose timer has fired by ``now`` (ip_vs_conn_expire)."""
        cdef uint32_t b
        cdef int32_t i, prev, nxt
        cdef int32_t count = 0
        for b in range(self.t.conn_mask + 1):
            prev = -1
            i = self.t.conn_buckets[b]
            while i >= 0:
                nxt = self.t.conns[i].next
                if conn_dead(&self.t, &self.t.conns[i], now):
                    conn_free(&self.t, i, prev)
                    self.t.st.expired += 1
                    count += 1
                else:
                    prev = i
                i = nxt
        return count

    def dest_connections(self, int32_t dest):
        """ActiveConn + InActConn of one real server now (what kube-proxy's graceful
        termination reads before deleting it), without the whole-table dest_stats()."""
        if dest < 0 or dest >= self.t.ndests:
            raise IndexError(f"no real server {dest}")
        return self.t.dests[dest].activeconns + self.t.dests[dest].inactconns

    def dest_stats(self):
        out = np.zeros(self.t.ndests, DEST_STATS_DTYPE)
        cdef int32_t i
        cdef ipvs_dest_t* d
        for i in range(self.t.ndests):
            d = &self.t.dests[i]
            out[i] = (d.svc, d.addr, d.port, d.weight, d.activeconns, d.inactconns,
                      d.persistconns, bool(d.flags & DEST_F_LINKED),
                      bool(d.flags & DEST_F_AVAILABLE))
        return out

    def connections(self):
        """Every entry in the table (dead ones not yet collected included), by slot."""
        rows = []
        cdef int32_t i
        cdef ipvs_conn_t* c
        for i in range(self.t.conn_high):
            c = &self.t.conns[i]
            if not c.flags & CONN_F_USED:
                continue
            rows.append((c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport, c.proto,
                         c.state, bool(c.flags & CONN_F_TEMPLATE),
                         bool(c.flags & CONN_F_INACTIVE), c.expires, c.dest, c.n_control))
        return np.array(rows, CONN_DTYPE)

    def stats(self):
        return dict(self.t.st)


cdef int32_t* malloc_i32(int64_t n, int32_t fill):
    cdef int32_t* p = <int32_t*>calloc(n, sizeof(int32_t))
    cdef int64_t i
    if p:
        for i in range(n):
            p[i] = fill
    return p


# ------------------------------------------------------------------------------ ipsets

IPSET_TYPES = {"hash:ip": IPSET_HASH_IP, "hash:ip,port": IPSET_HASH_IP_PORT,
               "hash:ip,port,ip": IPSET_HASH_IP_PORT_IP,
               "hash:ip,port,net": IPSET_HASH_IP_PORT_NET, "bitmap:port": IPSET_BITMAP_PORT}
_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}


def parse_dirs(text):
    """``dst,dst,src`` -> bit mask (bit i set: dimension i from the destination)."""
    mask = 0
    for i, part in enumerate(text.split(",")):
        if part == "dst":
            mask |= 1 << i
        elif part != "src":
            raise ValueError(f"bad ipset direction {part!r} in {text!r}")
    return mask


def _v4(text):
    return ipv4_int(text)


def parse_entry(set_type, entry):
    """An entry as kube-proxy writes it (``10.0.0.1,tcp:80``, ``10.0.0.1,tcp:80,10.0.0.0/8``,
    ``30080``) -> (k0, k1, cidr) as the set stores it; cidr is -1 except for nets."""
    if set_type == "bitmap:port":
        port = int(entry)
        if not 0 <= port <= 65535:
            raise ValueError(f"bad port {entry!r}")
        return port, 0, -1
    parts = entry.split(",")
    ip = _v4(parts[0])
    if set_type == "hash:ip":
        if len(parts) != 1:
            raise ValueError(f"bad hash:ip entry {entry!r}")
        return ip << 32, 0, -1
    if len(parts) < 2 or ":" not in parts[1]:
        raise ValueError(f"bad {set_type} entry {entry!r}")
    proto, _, port = parts[1].partition(":")
    if proto not in _PROTOS:
        raise ValueError(f"bad protocol {proto!r} in {entry!r}")
    k0 = (ip << 32) | (_PROTOS[proto] << 16) | int(port)
    if set_type == "hash:ip,port":
        return k0, 0, -1
    if len(parts) != 3:
        raise ValueError(f"bad {set_type} entry {entry!r}")
    if set_type == "hash:ip,port,ip":
        return k0, _v4(parts[2]), -1
    net = ipaddress.IPv4Network(parts[2], strict=False)
    cidr = net.prefixlen
    return k0, (int(net.network_address) << 8) | cidr, cidr


cdef class IPSet:
    """One ipset for the ``-m set`` match (IPv4)."""
    def __cinit__(self):
        memset(&self.s, 0, sizeof(ipset_t))

    def __init__(self, name, set_type, entries=(), seed=0):
        if set_type not in IPSET_TYPES:
            raise ValueError(f"unsupported ipset type {set_type!r} "
                             f"(known: {', '.join(IPSET_TYPES)})")
        self.name = name
        self.type = set_type
        self.s.type = IPSET_TYPES[set_type]
        self.s.seed = mix64(<uint64_t>seed + 0x51)
        entries = list(entries)
        self.entries_ = entries
        cdef uint32_t slots = 16
        while slots < 2 * len(entries) + 2:
            slots <<= 1
        self.s.mask = slots - 1
        self.s.k0 = <uint64_t*>calloc(slots, sizeof(uint64_t))
        self.s.k1 = <uint64_t*>calloc(slots, sizeof(uint64_t))
        self.s.used = <uint8_t*>calloc(slots, 1)
        self.s.bitmap = <uint8_t*>calloc(8192, 1)
        if not self.s.k0 or not self.s.k1 or not self.s.used or not self.s.bitmap:
            raise MemoryError()
        cidrs = set()
        cdef uint32_t i
        cdef uint32_t probes = 0
        for e in entries:
            k0, k1, cidr = parse_entry(set_type, e)
            if self.s.type == IPSET_BITMAP_PORT:
                self.s.bitmap[k0 >> 3] |= 1 << (k0 & 7)
                self.s.count += 1
                continue
            if cidr >= 0:
                cidrs.add(cidr)
            if ipset_find(&self.s, k0, k1, &probes):
                continue
            i = ipset_slot(&self.s, k0, k1)
            while self.s.used[i]:
                i = (i + 1) & self.s.mask
            self.s.used[i] = 1
            self.s.k0[i] = k0
            self.s.k1[i] = k1
            self.s.count += 1
        ordered = sorted(cidrs, reverse=True)
        self.s.ncidrs = len(ordered)
        for j, c in enumerate(ordered):
            self.s.cidrs[j] = c

    def __dealloc__(self):
        free(self.s.k0)
        free(self.s.k1)
        free(self.s.used)
        free(self.s.bitmap)

    def __len__(self):
        return self.s.count

    @property
    def entries(self):
        return list(self.entries_)

    def test(self, packets, dirs):
        """Membership of each packet for ``--match-set NAME dirs`` -> bool array."""
        cdef uint32_t mask = parse_dirs(dirs) if isinstance(dirs, str) else dirs
        cdef const packet_t[:] pk = packets
        cdef Py_ssize_t i, n = pk.shape[0]
        cdef uint32_t probes = 0
        res = np.zeros(n, np.bool_)
        cdef uint8_t[:] r = res.view(np.uint8)
        with nogil:
            for i in range(n):
                r[i] = ipset_test(&self.s, &pk[i], mask, &probes)
        return res


cdef inline bint ipset_member(const ipset_t* s, const packet_t* p, uint32_t dirs,
                              uint32_t* probes) noexcept nogil:
    """``-m set --match-set NAME dirs`` for the packet as it stands."""
    return ipset_test(s, p, dirs, probes)


cdef inline bint ipset_has_ip(const ipset_t* s, uint32_t ip) noexcept nogil:
    """A hash:ip set holds the address."""
    cdef uint32_t unused = 0
    return ipset_find(s, (<uint64_t>ip) << 32, 0, &unused)
