# cython: language_level=3
"""The cluster layer's per-hop bookkeeping (kproxy_emu/cluster_net/network.py) in compiled
passes over typed memoryviews, without the GIL. ``ClusterDataplane.process`` runs ``enter``
(the first link's MTU), ``group`` (how many rows each node has: ``where[i]`` is the node row
i is at, -1 once it ended), then per hop: ``gather`` (one sequential pass putting each
node's rows, in row order, into contiguous grouped arrays: the packet as it reaches the
node, its verdict row so far, its length), per node its ``Dataplane.process`` on its slice
and ``apply`` (the tuple as it leaves the node, the routing lookup, the MTU checks, the
outcome and path, on the grouped rows), then ``scatter`` (one sequential pass writing the
verdict rows back in row order and the node each row goes on to, counting the next hop's
rows). ``Routes`` answers what the numpy ``ClusterDataplane.route`` answers (it is built
from it; tests compare them). The semantics are the ones docs/cluster.md states.

Every index a loop follows is checked against its array first (ValueError), as the engine
constructors do: the release build has no bounds checks.
"""
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memset

from packet cimport (
    packet_t, verdict_t, ACT_DROP, ACT_REJECT, ORIGIN_EXTERNAL, ORIGIN_HOST,
)

import numpy as np

# Outcome and Path (network.py); tests check they agree
OUT_DELIVERED = 0
OUT_LEFT = 1
OUT_DROPPED = 2
OUT_REJECTED = 3
OUT_MTU = 4
OUT_NO_ROUTE = 5
PATH_NONE = 0
PATH_LOCAL = 1
PATH_OUT = 4

cdef enum:
    C_DELIVERED = 0
    C_LEFT = 1
    C_DROPPED = 2
    C_REJECTED = 3
    C_MTU = 4
    C_NO_ROUTE = 5
    C_PATH_NONE = 0
    C_PATH_LOCAL = 1
    C_PATH_ROUTE = 2
    C_PATH_OUT = 4


ctypedef struct cverdict_t:     # CLUSTER_VERDICT_DTYPE (align=True): 28 bytes, aligned 4
    uint32_t src_ip
    uint32_t dst_ip
    uint16_t src_port
    uint16_t dst_port
    uint32_t rules
    uint32_t lookups
    int16_t node
    uint8_t hops
    uint8_t outcome
    uint8_t path
    uint8_t first_action
    uint8_t masquerade          # numpy bool ('?')


def struct_layout():
    """{"itemsize": int, "fields": {name: offset}} of the C struct behind
    CLUSTER_VERDICT_DTYPE (tests compare it with the dtype)."""
    cdef cverdict_t v
    cdef char* base = <char*>&v
    return {
        "itemsize": sizeof(cverdict_t),
        "fields": {
            "src_ip": <char*>&v.src_ip - base,
            "dst_ip": <char*>&v.dst_ip - base,
            "src_port": <char*>&v.src_port - base,
            "dst_port": <char*>&v.dst_port - base,
            "rules": <char*>&v.rules - base,
            "lookups": <char*>&v.lookups - base,
            "node": <char*>&v.node - base,
            "hops": <char*>&v.hops - base,
            "outcome": <char*>&v.outcome - base,
            "path": <char*>&v.path - base,
            "first_action": <char*>&v.first_action - base,
            "masquerade": <char*>&v.masquerade - base,
        },
    }


cdef inline Py_ssize_t _upper(const uint32_t* keys, Py_ssize_t n, uint32_t ip) noexcept nogil:
    """How many of the sorted ``keys`` are <= ``ip`` (searchsorted side="right"), without
    a data-dependent branch (the halving compiles to a conditional move: a binary search
    over random addresses mispredicts at every step otherwise)."""
    cdef const uint32_t* base = keys
    cdef Py_ssize_t half
    if n == 0:
        return 0
    while n > 1:
        half = n >> 1
        base = base + half if base[half] <= ip else base
        n -= half
    return (base - keys) + (base[0] <= ip)


cdef enum:
    SEG_HOST = 1        # the segment is one node address
    SEG_NO_ROUTE = 2    # inside the cluster CIDR, no node owns it


cdef class Routes:
    """The cluster's routes as segments of the IPv4 space: segment k holds the addresses
    from ``starts[k]`` (``starts[0]`` is 0, ascending) to the next start, all with the same
    ``owner`` (a node index, -1: none) and ``flags`` (1: a node's address, 2: no route).
    ``ClusterDataplane`` builds them from its numpy ``route`` at every boundary of its
    tables (node addresses, pod CIDRs, other pod and endpoint addresses, cluster CIDRs), so
    one sorted search gives what ``route`` gives."""

    cdef const uint32_t[::1] starts
    cdef const int16_t[::1] owner
    cdef const uint8_t[::1] flags
    cdef readonly int n_nodes

    def __cinit__(self, starts, owner, flags, int n_nodes):
        st = np.ascontiguousarray(starts, np.uint32)
        ow = np.ascontiguousarray(owner, np.int16)
        fl = np.ascontiguousarray(flags, np.uint8)
        if n_nodes < 1 or n_nodes > 32767:
            raise ValueError("n_nodes must be 1-32767")
        if st.ndim != 1 or len(st) == 0 or st[0] != 0 or ow.shape != st.shape or fl.shape != st.shape:
            raise ValueError("starts (from 0), owner and flags: one per segment")
        if (np.diff(st.astype(np.int64)) <= 0).any():
            raise ValueError("starts must be ascending")
        if ow.min() < -1 or ow.max() >= n_nodes:
            raise ValueError("an owner out of range")
        self.starts, self.owner, self.flags = st, ow, fl
        self.n_nodes = n_nodes

    cdef inline int16_t lookup(self, uint32_t ip, bint* is_host, bint* no_route) noexcept nogil:
        cdef Py_ssize_t k = _upper(&self.starts[0], self.starts.shape[0], ip) - 1
        cdef uint8_t f = self.flags[k]
        is_host[0] = (f & SEG_HOST) != 0
        no_route[0] = (f & SEG_NO_ROUTE) != 0
        return self.owner[k]

    def route(self, const uint32_t[::1] ip):
        """(owner node or -1, is a node address, no route) for each address."""
        cdef Py_ssize_t i, n = ip.shape[0]
        owner_a = np.empty(n, np.int16)
        host_a = np.empty(n, np.bool_)
        nort_a = np.empty(n, np.bool_)
        cdef int16_t[::1] owner = owner_a
        cdef uint8_t[::1] host = host_a.view(np.uint8)
        cdef uint8_t[::1] nort = nort_a.view(np.uint8)
        cdef bint h, r
        with nogil:
            for i in range(n):
                owner[i] = self.lookup(ip[i], &h, &r)
                host[i] = h
                nort[i] = r
        return owner_a, host_a, nort_a


cdef inline void _fresh(cverdict_t* o, const packet_t* p, int16_t node,
                        uint8_t outcome) noexcept nogil:
    """The verdict row of a packet entering ``node``: as sent, delivered so far. Its
    padding byte zeroed (copies keep it): equal verdict rows are equal bytes."""
    memset(o, 0, sizeof(cverdict_t))
    o.src_ip = p.src_ip
    o.dst_ip = p.dst_ip
    o.src_port = p.src_port
    o.dst_port = p.dst_port
    o.rules = 0
    o.lookups = 0
    o.node = node
    o.hops = 0
    o.outcome = outcome
    o.path = C_PATH_NONE
    o.first_action = 0
    o.masquerade = 0


def enter(const packet_t[:] packets, int16_t[::1] node, const uint16_t[::1] length,
          cverdict_t[::1] out, int pod_mtu, int underlay_mtu, int n_nodes):
    """The first link: a packet larger than its MTU (a pod's interface, the node's uplink
    for an outside client; the node's own packets have none) gets its verdict row (outcome
    MTU, at its entry node ``node[i]``) and ``node[i] = -1``: it enters no node. The
    others' rows are written after their first hop (``gather``, ``scatter``). Returns how
    many rows enter a node."""
    cdef Py_ssize_t i, k = 0, n = packets.shape[0]
    cdef const packet_t* p
    cdef int mtu
    cdef bint bad = False
    if node.shape[0] != n or length.shape[0] != n or out.shape[0] != n:
        raise ValueError("packets, node, length and out differ in length")
    with nogil:
        for i in range(n):
            if node[i] < 0 or node[i] >= n_nodes:
                bad = True
                break
            p = &packets[i]
            mtu = underlay_mtu if p.origin == ORIGIN_EXTERNAL else pod_mtu
            if p.origin != ORIGIN_HOST and length[i] > mtu:
                _fresh(&out[i], p, node[i], C_MTU)
                node[i] = -1
            else:
                k += 1
    if bad:
        raise ValueError("a node index out of range")
    return k


def group(const int16_t[::1] where, int n_nodes):
    """``bounds``: the rows i with ``where[i] >= 0`` (the node each is at) counted by node;
    a hop's grouped arrays hold node k's rows, in row order, at bounds[k]:bounds[k+1]."""
    cdef Py_ssize_t i, n = where.shape[0]
    cdef int16_t nd
    cdef bint bad = False
    bounds_a = np.zeros(n_nodes + 1, np.int64)
    cdef int64_t[::1] bounds = bounds_a
    with nogil:
        for i in range(n):
            nd = where[i]
            if nd >= n_nodes:
                bad = True
                break
            if nd >= 0:
                bounds[nd + 1] += 1
        if not bad:
            for i in range(n_nodes):
                bounds[i + 1] += bounds[i]
    if bad:
        raise ValueError("a node index out of range")
    return bounds_a


cdef int _check_grouped(const int64_t[::1] bounds, Py_ssize_t size,
                        int64_t[::1] cursor) except -1:
    cdef Py_ssize_t k, n_nodes = bounds.shape[0] - 1
    if n_nodes < 1 or cursor.shape[0] != n_nodes or bounds[0] != 0 or bounds[n_nodes] > size:
        raise ValueError("bounds do not fit the grouped arrays")
    for k in range(n_nodes):
        if bounds[k + 1] < bounds[k]:
            raise ValueError("bounds must not decrease")
        cursor[k] = bounds[k]
    return 0


cdef enum:
    NO_ROW = -1     # the row is done (not at any node this hop)
    BAD_ROW = -2    # its node or its group's room is out of range


cdef inline Py_ssize_t next_slot(int16_t nd, Py_ssize_t nodes, const int64_t[::1] bounds,
                                 int64_t[::1] cursor) noexcept nogil:
    """The next place of node ``nd``'s group (rows kept in row order), or NO_ROW / BAD_ROW."""
    cdef int64_t j
    if nd < 0:
        return NO_ROW
    if nd >= nodes or cursor[nd] >= bounds[nd + 1]:
        return BAD_ROW
    j = cursor[nd]
    cursor[nd] = j + 1
    return <Py_ssize_t>j


def gather(const packet_t[:] packets, const cverdict_t[::1] out, const uint16_t[::1] length,
           const int16_t[::1] where, const int64_t[::1] bounds, const double[::1] clocks,
           bint forwarded, packet_t[::1] part, cverdict_t[::1] work, uint16_t[::1] work_length):
    """Group a hop's rows (``where[i] >= 0``) by node, in row order, in one sequential
    pass: node k's rows go to ``[bounds[k]:bounds[k+1]]`` of ``part`` (the packet as it
    reaches the node), ``work`` (its verdict row so far) and ``work_length``. At the entry
    node the packet is the row as given, its verdict row a fresh one (``out`` is not read);
    ``forwarded``: with the tuple its last node left it with (``out``), arriving from the
    network (origin external), its time raised to the node's clock ``clocks[k]`` (it
    arrives after what the node already processed in this call).
    ``bounds`` must be ``group(where)``'s: a row whose node's range is full is an error."""
    cdef Py_ssize_t i, n = packets.shape[0], m = part.shape[0]
    cdef int64_t j
    cdef int16_t nd
    cdef packet_t* q
    cdef const cverdict_t* o
    cdef bint bad = False
    cursor_a = np.empty(max(bounds.shape[0] - 1, 0), np.int64)
    cdef int64_t[::1] cursor = cursor_a
    if (out.shape[0] != n or length.shape[0] != n or where.shape[0] != n
            or work.shape[0] != m or work_length.shape[0] != m
            or clocks.shape[0] != bounds.shape[0] - 1):
        raise ValueError("the row arrays or the grouped arrays differ in length")
    _check_grouped(bounds, m, cursor)
    cdef Py_ssize_t nodes = bounds.shape[0] - 1
    with nogil:
        for i in range(n):
            nd = where[i]
            j = next_slot(nd, nodes, bounds, cursor)
            if j == NO_ROW:
                continue
            if j == BAD_ROW:
                bad = True
                break
            q = &part[j]
            q[0] = packets[i]
            if forwarded:
                o = &out[i]
                work[j] = o[0]
                q.src_ip = o.src_ip
                q.dst_ip = o.dst_ip
                q.src_port = o.src_port
                q.dst_port = o.dst_port
                q.origin = ORIGIN_EXTERNAL
                if q.ts < clocks[nd]:
                    q.ts = clocks[nd]
            else:
                _fresh(&work[j], q, nd, C_DELIVERED)
            work_length[j] = length[i]
    if bad:
        raise ValueError("bounds do not match where")


def apply(Routes routes, const verdict_t[::1] verdicts, cverdict_t[::1] work,
          const uint16_t[::1] work_length, int16_t[::1] work_next, int here, int hop,
          int pod_mtu, int cross_mtu, int cross_path, int underlay_mtu=1500):
    """After node ``here``'s dataplane gave ``verdicts`` for its rows of the hop (``work``,
    ``work_length``: theirs, in the same order), at hop ``hop`` (0: the entry node): each
    row's tuple as it leaves the node, rules and lookups added, the route by its
    destination (the bridge or the host, another node, out, no route), the MTU of the next
    link, the outcome and path. ``work_next``: the node a row is sent to, else -1. Another
    node's own address is reached over the underlay (``underlay_mtu``, a host route) in
    either CNI model: only pod CIDRs go through the overlay (the kernel lab showed it)."""
    cdef Py_ssize_t j, m = verdicts.shape[0]
    cdef const verdict_t* v
    cdef cverdict_t* o
    cdef uint8_t act, code, hop_path
    cdef bint alive, local, cross, big, is_host, no_route, go
    cdef int16_t owner
    cdef int size
    if (work.shape[0] != m or work_length.shape[0] != m or work_next.shape[0] != m
            or here < 0 or here >= routes.n_nodes):
        raise ValueError("verdicts, work, work_length, work_next or here do not match")
    with nogil:
        for j in range(m):
            v = &verdicts[j]
            o = &work[j]
            size = work_length[j]
            o.hops += 1
            o.rules += v.rules
            o.lookups += v.lookups
            act = v.action
            if hop == 0:
                o.first_action = act
            if v.snat_ip != 0:
                o.src_ip = v.snat_ip
                o.src_port = v.snat_port
                if not v.ct_hit:
                    o.masquerade = 1
            if v.dnat_ip != 0:
                o.dst_ip = v.dnat_ip
                o.dst_port = v.dnat_port
            owner = routes.lookup(o.dst_ip, &is_host, &no_route)
            alive = act != ACT_DROP and act != ACT_REJECT
            local = alive and owner == here
            cross = alive and owner >= 0 and owner != here
            big = (local and not is_host and size > pod_mtu) or (
                cross and size > (underlay_mtu if is_host else cross_mtu))
            go = cross and not big
            if act == ACT_DROP:
                code = C_DROPPED
            elif act == ACT_REJECT:
                code = C_REJECTED
            elif big:
                code = C_MTU
            elif no_route:
                code = C_NO_ROUTE
            elif owner < 0:
                code = C_LEFT
            else:
                code = C_DELIVERED
            o.outcome = code
            if cross:
                hop_path = C_PATH_ROUTE if is_host else cross_path
            elif local:
                # delivered after a crossing: the path stays the crossing's
                hop_path = C_PATH_LOCAL if hop == 0 else C_PATH_NONE
            elif alive and owner < 0 and not no_route:
                hop_path = C_PATH_OUT
            else:
                hop_path = C_PATH_NONE
            if hop_path != C_PATH_NONE:
                o.path = hop_path
            if go:
                o.node = owner
                work_next[j] = owner
            else:
                work_next[j] = -1


def scatter(int16_t[::1] where, const int64_t[::1] bounds, const cverdict_t[::1] work,
            const int16_t[::1] work_next, cverdict_t[::1] out):
    """The hop's grouped rows back in place, in one sequential pass (the inverse of
    ``gather`` with the same ``where`` and ``bounds``): ``out[i]`` from ``work``, and
    ``where[i]`` the node the row goes on to (-1: it ended). Returns the next hop's bounds
    (``group`` of the new ``where``)."""
    cdef Py_ssize_t i, n = where.shape[0], m = work.shape[0]
    cdef int64_t j
    cdef int16_t nxt
    cdef bint bad = False
    cursor_a = np.empty(max(bounds.shape[0] - 1, 0), np.int64)
    cdef int64_t[::1] cursor = cursor_a
    if out.shape[0] != n or work_next.shape[0] != m:
        raise ValueError("the row arrays or the grouped arrays differ in length")
    _check_grouped(bounds, m, cursor)
    cdef Py_ssize_t nodes = bounds.shape[0] - 1
    next_a = np.zeros(nodes + 1, np.int64)
    cdef int64_t[::1] next_bounds = next_a
    with nogil:
        for i in range(n):
            j = next_slot(where[i], nodes, bounds, cursor)
            if j == NO_ROW:
                continue
            if j == BAD_ROW:
                bad = True
                break
            out[i] = work[j]
            nxt = work_next[j]
            if nxt >= nodes:
                bad = True
                break
            where[i] = nxt
            if nxt >= 0:
                next_bounds[nxt + 1] += 1
        if not bad:
            for i in range(nodes):
                next_bounds[i + 1] += next_bounds[i]
    if bad:
        raise ValueError("bounds or work_next do not match where")
    return next_a
