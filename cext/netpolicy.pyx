# cython: language_level=3
"""NetworkPolicy as Cilium enforces it: label-set identities and per-endpoint policy maps.

Every address has a security identity: a pod's is its label set (its labels, its
namespace's, the ipBlocks its address falls in and the named ports policies use), shared
by every pod with the same set; an address outside the cluster has one of the "world"
identities (which ipBlocks hold it). The ipcache maps a pod address to (endpoint,
identity) with one hash probe; any other address falls in one of the sorted intervals the
ipBlocks' boundaries cut the address space into (a binary search, as Cilium's LPM).

Each endpoint (pod) that a policy isolates has a policy map per direction, keyed by
(peer identity, protocol, port/prefix length) as Cilium's ``cilium_policy_<ep>`` map is
(identity 0: any peer; protocol 0: any protocol; a port range is stored as the aligned
prefixes covering it, as Cilium's port masks). All maps live in one open-addressing
table keyed by (endpoint, identity, direction|prefix|protocol|port). A lookup probes the
exact port first, then each shorter prefix the endpoint's map holds, then any-protocol,
for the peer's identity and then for identity 0; the first hit allows the flow and names
the rule that made the entry.

Compiled by kproxy_emu/dataplane/policy_identity.py; run by the pipeline
(``PolicyStage.check``) for each new flow, nogil, no Python object per packet.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

from packet cimport packet_t
from kproxy_emu._cext.pipeline cimport (
    PolicyStage, pkt_state_t, POL_OPEN, POL_ALLOWED, POL_DENIED, POLICY_PASS,
    POLICY_EGRESS_DENIED, POLICY_INGRESS_DENIED)

include "hashing.pxi"
include "record.pxi"

cdef enum:
    EP_EGRESS_ISOLATED = 1
    EP_INGRESS_ISOLATED = 2
    ANY_PROTO_BIT = 17      # ep_plens: the map holds any-protocol entries


ctypedef struct pm_entry_t:
    uint32_t ep
    uint32_t ident
    uint32_t pw             # direction << 31 | prefix length << 24 | protocol << 16 | port
    int32_t rule            # the rule that made the entry; -1: an empty slot


ctypedef struct addr_entry_t:
    uint32_t ip
    int32_t ep              # -1: an empty slot
    uint32_t ident
    uint32_t _pad


cdef inline uint64_t pm_hash(uint32_t ep, uint32_t ident, uint32_t pw) noexcept nogil:
    return mix64(((<uint64_t>ep << 32) | ident) ^ mix64(<uint64_t>pw + <uint64_t>0x9E3779B97F4A7C15ULL))


cdef inline uint32_t port_word(int direction, uint32_t plen, uint32_t proto,
                               uint32_t port) noexcept nogil:
    cdef uint32_t mask = (0xFFFF << (16 - plen)) & 0xFFFF
    return (<uint32_t>direction << 31) | (plen << 24) | (proto << 16) | (port & mask)


def _pow2(Py_ssize_t n):
    cdef Py_ssize_t cap = 8
    while cap < 2 * n:
        cap <<= 1
    return cap


def _u32(value, name):
    arr = np.ascontiguousarray(value, dtype=np.uint32)
    if arr.ndim != 1:
        raise ValueError(f"{name}: a one-dimensional array")
    return arr


def _i32(value, name):
    arr = np.ascontiguousarray(value, dtype=np.int32)
    if arr.ndim != 1:
        raise ValueError(f"{name}: a one-dimensional array")
    return arr


cdef class IdentityPolicy(PolicyStage):
    """The identity form of a node's NetworkPolicy (module docstring).

    ``pod_ips``/``pod_ep``/``pod_ident``: the ipcache's pod addresses, their endpoint
    (pod index) and identity; ``world_lo``/``world_ident``: the sorted interval starts
    (the first 0) and the identity of the addresses from each start to the next;
    ``ep_flags``: per endpoint, bit 0 isolated for egress, bit 1 for ingress;
    ``ep_plens``: per endpoint and direction (2 e + d), bit k: its map holds entries of
    port prefix length k (k = 16: an exact port), bit 17: any-protocol entries;
    ``map_*``: the policy map entries (endpoint, peer identity, port word, rule number)."""
    cdef addr_entry_t* addrs
    cdef uint32_t addr_mask
    cdef const uint32_t* world_lo
    cdef const uint32_t* world_ident
    cdef Py_ssize_t n_world
    cdef const uint8_t* ep_flags
    cdef const uint32_t* ep_plens
    cdef Py_ssize_t n_ep
    cdef pm_entry_t* table
    cdef uint32_t table_mask
    cdef readonly Py_ssize_t entries
    cdef object _keep

    def __init__(self, pod_ips, pod_ep, pod_ident, world_lo, world_ident, ep_flags,
                 ep_plens, map_ep, map_ident, map_pw, map_rule):
        pod_ips = _u32(pod_ips, "pod_ips")
        pod_ep = _i32(pod_ep, "pod_ep")
        pod_ident = _u32(pod_ident, "pod_ident")
        world_lo = _u32(world_lo, "world_lo")
        world_ident = _u32(world_ident, "world_ident")
        flags = np.ascontiguousarray(ep_flags, dtype=np.uint8)
        plens = _u32(ep_plens, "ep_plens")
        map_ep = _u32(map_ep, "map_ep")
        map_ident = _u32(map_ident, "map_ident")
        map_pw = _u32(map_pw, "map_pw")
        map_rule = _i32(map_rule, "map_rule")
        cdef Py_ssize_t n = pod_ips.shape[0], m = world_lo.shape[0], ne = flags.shape[0]
        cdef Py_ssize_t k = map_ep.shape[0]
        if pod_ep.shape[0] != n or pod_ident.shape[0] != n:
            raise ValueError("pod_ips, pod_ep and pod_ident: one row per address")
        if m == 0 or world_ident.shape[0] != m or world_lo[0] != 0:
            raise ValueError("world_lo: sorted interval starts from 0, one identity each")
        if m > 1 and not (np.diff(world_lo.astype(np.int64)) > 0).all():
            raise ValueError("world_lo must increase")
        if plens.shape[0] != 2 * ne:
            raise ValueError("ep_plens: two words per endpoint")
        if n and not ((pod_ep >= 0) & (pod_ep < ne)).all():
            raise ValueError("pod_ep: endpoint out of range")
        if map_ident.shape[0] != k or map_pw.shape[0] != k or map_rule.shape[0] != k:
            raise ValueError("map_*: one row per entry")
        if k and (not (map_ep < ne).all() or not (map_rule >= 0).all()):
            raise ValueError("map entries: endpoint out of range or negative rule")
        if n and len(np.unique(pod_ips)) != n:
            raise ValueError("pod_ips: an address twice")
        # the ipcache's pod addresses
        cdef Py_ssize_t cap = _pow2(n)
        addrs = np.zeros(cap, dtype=np.dtype([("ip", "u4"), ("ep", "i4"), ("ident", "u4"),
                                              ("_pad", "u4")]))
        addrs["ep"] = -1
        cdef addr_entry_t[::1] av = addrs
        cdef const uint32_t[::1] ipv = pod_ips
        cdef const int32_t[::1] epv = pod_ep
        cdef const uint32_t[::1] idv = pod_ident
        cdef Py_ssize_t i
        cdef uint32_t slot
        self.addrs = &av[0]
        self.addr_mask = <uint32_t>(cap - 1)
        for i in range(n):
            slot = <uint32_t>mix64(ipv[i]) & self.addr_mask
            while self.addrs[slot].ep >= 0:
                slot = (slot + 1) & self.addr_mask
            self.addrs[slot].ip = ipv[i]
            self.addrs[slot].ep = epv[i]
            self.addrs[slot].ident = idv[i]
        # the policy maps; a key made twice keeps its first rule (the lowest number)
        cap = _pow2(k)
        table = np.zeros(cap, dtype=np.dtype([("ep", "u4"), ("ident", "u4"), ("pw", "u4"),
                                              ("rule", "i4")]))
        table["rule"] = -1
        cdef pm_entry_t[::1] tv = table
        cdef const uint32_t[::1] mev = map_ep
        cdef const uint32_t[::1] miv = map_ident
        cdef const uint32_t[::1] mpv = map_pw
        cdef const int32_t[::1] mrv = map_rule
        self.table = &tv[0]
        self.table_mask = <uint32_t>(cap - 1)
        self.entries = 0
        for i in range(k):
            slot = <uint32_t>pm_hash(mev[i], miv[i], mpv[i]) & self.table_mask
            while self.table[slot].rule >= 0 and not (
                    self.table[slot].ep == mev[i] and self.table[slot].ident == miv[i]
                    and self.table[slot].pw == mpv[i]):
                slot = (slot + 1) & self.table_mask
            if self.table[slot].rule < 0:
                self.table[slot].ep = mev[i]
                self.table[slot].ident = miv[i]
                self.table[slot].pw = mpv[i]
                self.table[slot].rule = mrv[i]
                self.entries += 1
            elif mrv[i] < self.table[slot].rule:
                self.table[slot].rule = mrv[i]
        cdef const uint32_t[::1] wl = world_lo
        cdef const uint32_t[::1] wi = world_ident
        self.world_lo = &wl[0]
        self.world_ident = &wi[0]
        self.n_world = m
        cdef const uint8_t[::1] fv = flags
        cdef const uint32_t[::1] pv = plens
        self.ep_flags = &fv[0] if ne else NULL
        self.ep_plens = &pv[0] if ne else NULL
        self.n_ep = ne
        self._keep = (addrs, table, world_lo, world_ident, flags, plens)

    cdef inline int32_t address(self, uint32_t ip, uint32_t* ident,
                                pkt_state_t* st) noexcept nogil:
        """The ipcache: (endpoint or -1, identity) of an address."""
        cdef uint32_t slot = <uint32_t>mix64(ip) & self.addr_mask
        cdef Py_ssize_t lo = 0, hi = self.n_world, mid
        st.lookups += 1
        while True:
            st.probes += 1
            if self.addrs[slot].ep < 0:
                break
            if self.addrs[slot].ip == ip:
                ident[0] = self.addrs[slot].ident
                return self.addrs[slot].ep
            slot = (slot + 1) & self.addr_mask
        while hi - lo > 1:  # the last interval starting at or below ip
            mid = (lo + hi) >> 1
            st.probes += 1
            if self.world_lo[mid] <= ip:
                lo = mid
            else:
                hi = mid
        ident[0] = self.world_ident[lo]
        return -1

    cdef inline int32_t probe(self, uint32_t ep, uint32_t ident, uint32_t pw,
                              pkt_state_t* st) noexcept nogil:
        cdef uint32_t slot = <uint32_t>pm_hash(ep, ident, pw) & self.table_mask
        cdef pm_entry_t* e
        while True:
            st.probes += 1
            e = &self.table[slot]
            if e.rule < 0:
                return -1
            if e.ep == ep and e.ident == ident and e.pw == pw:
                return e.rule
            slot = (slot + 1) & self.table_mask

    cdef int32_t map_lookup(self, uint32_t ep, int direction, uint32_t ident, uint16_t port,
                            uint8_t proto, pkt_state_t* st) noexcept nogil:
        """The endpoint's policy map for the peer: the allowing rule, or -1."""
        cdef uint32_t bits = self.ep_plens[2 * ep + direction]
        cdef uint32_t who = ident, plen
        cdef int32_t rule
        cdef int _pass
        st.lookups += 1
        for _pass in range(2):
            plen = 17
            while plen > 0:
                plen -= 1
                if (bits >> plen) & 1:
                    rule = self.probe(ep, who, port_word(direction, plen, proto, port), st)
                    if rule >= 0:
                        return rule
            if (bits >> ANY_PROTO_BIT) & 1:
                rule = self.probe(ep, who, <uint32_t>direction << 31, st)
                if rule >= 0:
                    return rule
            if who == 0:
                break
            who = 0
        return -1

    cdef bint side_allows(self, int32_t ep, int direction, uint32_t isolated, uint32_t peer,
                          pkt_state_t* st) noexcept nogil:
        """One side's decision (direction 0: egress at the source endpoint ``ep``, 1:
        ingress at the destination): open unless the endpoint is isolated that way, then
        a rule for the ``peer`` identity must allow it; recorded for traces."""
        cdef int32_t rule
        if ep >= 0 and self.ep_flags[ep] & isolated:
            rule = self.map_lookup(<uint32_t>ep, direction, peer, st.dport, st.proto, st)
            if st.rec != NULL:
                record_policy(st.rec, direction, POL_ALLOWED if rule >= 0 else POL_DENIED, rule)
            return rule >= 0
        if st.rec != NULL:
            record_policy(st.rec, direction, POL_OPEN, -1)
        return True

    cdef int check(self, const packet_t* p, pkt_state_t* st) noexcept nogil:
        cdef uint32_t src_id = 0, dst_id = 0
        cdef int32_t src_ep = self.address(st.src, &src_id, st)
        cdef int32_t dst_ep = self.address(st.dst, &dst_id, st)
        if not self.side_allows(src_ep, 0, EP_EGRESS_ISOLATED, dst_id, st):
            return POLICY_EGRESS_DENIED
        if not self.side_allows(dst_ep, 1, EP_INGRESS_ISOLATED, src_id, st):
            return POLICY_INGRESS_DENIED
        return POLICY_PASS

    def address_of(self, uint32_t ip):
        """(endpoint or -1, identity) the ipcache gives an address."""
        cdef pkt_state_t st
        cdef uint32_t ident = 0
        st.lookups = 0
        st.probes = 0
        cdef int32_t ep = self.address(ip, &ident, &st)
        return ep, ident
