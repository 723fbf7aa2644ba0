# cython: language_level=3
"""ConntrackTable as other compiled modules see it: the table struct and the per-packet
operations as cdef methods (nogil, no Python objects), so a pipeline holds a typed
reference instead of an address. Implementation: conntrack.pyx + conntrack_core.pxi."""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t
from conntrack_core cimport ct_table_t, ct_result_t


cdef class ConntrackTable:
    cdef ct_table_t tab
    cdef object _entries        # numpy buffers owning the memory behind tab's pointers
    cdef object _buckets
    cdef object _free
    cdef readonly dict timeouts
    cdef readonly uint64_t seed_value

    cdef void c_lookup(self, const packet_t* p, ct_result_t* r) noexcept nogil
    cdef int32_t c_alloc(self, const packet_t* p) noexcept nogil
    cdef void c_abort(self, int32_t idx) noexcept nogil
    cdef int32_t c_confirm(self, int32_t idx, uint32_t dnat_ip, uint16_t dnat_port,
                           uint32_t snat_ip, uint16_t snat_port, int32_t endpoint,
                           uint32_t mark, double now, uint32_t* probes) noexcept nogil
    cdef void c_translate(self, int32_t idx, int dir, uint32_t* src_ip, uint16_t* src_port,
                          uint32_t* dst_ip, uint16_t* dst_port) noexcept nogil
    cdef int32_t c_endpoint(self, int32_t idx) noexcept nogil
    cdef bint c_tuple_used(self, uint8_t proto, uint32_t ip, uint16_t port, uint32_t dst,
                           uint16_t dport, double now, uint32_t* probes) noexcept nogil
