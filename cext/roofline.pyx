# cython: language_level=3
"""Roofline baselines for the bench report: the least work a compiled lookup can do here.

``linear_scan`` walks packed (dst, dport, proto) rows in order until one equals the
packet's, the way a linear rule list must at best; ``hash_probe`` looks the same keys up
in a plain open-addressing table (linear probing, load factor <= 0.5). Each engine's cost
per rule or per lookup is reported as a ratio to these, on the same machine and packets.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

include "hashing.pxi"
from packet cimport packet_t


cdef inline uint64_t flow_key(uint32_t ip, uint16_t port, uint8_t proto) noexcept nogil:
    return (<uint64_t>ip << 24) | (<uint64_t>port << 8) | proto


def linear_scan(const uint32_t[::1] dst, const uint16_t[::1] dport, const uint8_t[::1] proto,
                const packet_t[::1] packets):
    """Rows compared in total, scanning from the first row to the packet's (or the end)."""
    cdef Py_ssize_t k, i, n = dst.shape[0]
    cdef int64_t total = 0
    cdef const packet_t* p
    if dport.shape[0] != n or proto.shape[0] != n:
        raise ValueError("dst, dport and proto must have the same length")
    with nogil:
        for k in range(packets.shape[0]):
            p = &packets[k]
            for i in range(n):
                total += 1
                if dst[i] == p.dst_ip and dport[i] == p.dst_port and proto[i] == p.proto:
                    break
    return total


cdef class OpenAddressingTable:
    """(ip, port, proto) -> row index, linear probing over a power-of-two array."""

    cdef uint64_t[::1] keys
    cdef int64_t[::1] values
    cdef uint64_t mask

    def __init__(self, const uint32_t[::1] ip, const uint16_t[::1] port,
                 const uint8_t[::1] proto):
        cdef Py_ssize_t i, n = ip.shape[0]
        cdef uint64_t size = 16, key, slot
        import numpy as np
        while size < 2 * <uint64_t>n:
            size <<= 1
        self.keys = np.zeros(size, np.uint64)
        self.values = np.full(size, -1, np.int64)
        self.mask = size - 1
        for i in range(n):
            key = flow_key(ip[i], port[i], proto[i]) + 1  # 0 marks an empty slot
            slot = mix64(key) & self.mask
            while self.keys[slot] != 0 and self.keys[slot] != key:
                slot = (slot + 1) & self.mask
            self.keys[slot] = key
            self.values[slot] = i

    def probe(self, const packet_t[::1] packets, int64_t[::1] out):
        """Row index per packet (-1: miss); returns the slots inspected in total."""
        cdef Py_ssize_t k
        cdef uint64_t key, slot
        cdef int64_t probes = 0
        cdef const packet_t* p
        if out.shape[0] < packets.shape[0]:
            raise ValueError("out is shorter than packets")
        with nogil:
            for k in range(packets.shape[0]):
                p = &packets[k]
                key = flow_key(p.dst_ip, p.dst_port, p.proto) + 1
                slot = mix64(key) & self.mask
                out[k] = -1
                while True:
                    probes += 1
                    if self.keys[slot] == key:
                        out[k] = self.values[slot]
                        break
                    if self.keys[slot] == 0:
                        break
                    slot = (slot + 1) & self.mask
        return probes


def pointer_chase(uint32_t[::1] chain, Py_ssize_t steps):
    """Follow ``chain`` (a random cyclic permutation: chain[i] is the next index) for
    ``steps`` dependent loads; returns the index reached. Over an array far larger than the
    caches each load is a DRAM miss that no prefetcher predicts: timed, the memory-latency
    floor of one lookup that cannot be cached (kproxy_emu.bench.sweep.dram_latency_ns)."""
    cdef Py_ssize_t _, n = chain.shape[0]
    cdef uint32_t i = 0
    if n == 0:
        raise ValueError("chain must not be empty")
    with nogil:
        for _ in range(steps):
            i = chain[i]
            if i >= n:
                break
    return i
