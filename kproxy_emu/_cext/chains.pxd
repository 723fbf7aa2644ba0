# cython: language_level=3
"""The chain engine's tables (declarations): VirtualServerTable and IPSet, implemented in
cext/vstable.pxi (+ ipvs_core.pxi, ipset_core.pxi), which chains.pyx includes; Python
imports them as kproxy_emu._cext.vstable."""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from packet cimport packet_t, verdict_t
from ipvs_core cimport ipvs_table_t
from ipset_core cimport ipset_t


cdef class VirtualServerTable:
    cdef ipvs_table_t t
    cdef int32_t dest_cap
    cdef int32_t svc_cap
    cdef int64_t tab_cap
    cdef int32_t tab_size
    cdef uint8_t sched
    cdef bint bulk
    cdef readonly str scheduler
    cdef readonly uint64_t seed
    cdef dict trash  # (svc, addr, port) -> deleted destination, for add_dest to revive

    cdef int c_in(self, const packet_t* p, verdict_t* v) noexcept nogil
    cdef int c_out(self, const packet_t* p, verdict_t* v) noexcept nogil
    cdef _grow_svcs(self, int32_t need)
    cdef int32_t _add_service(self, int proto, uint32_t addr, int port, uint32_t flags,
                              uint32_t timeout) except -1
    cdef _grow_dests(self, int32_t need)
    cdef _grow_tab(self, int64_t need)
    cdef _sched_changed(self, int32_t s, int32_t dest, int kind, bint init)
    cdef int32_t _add_dest(self, int32_t svc, uint32_t addr, int port, int weight,
                           int endpoint) except -1


cdef class IPSet:
    cdef ipset_t s
    cdef readonly str name
    cdef readonly str type
    cdef list entries_

