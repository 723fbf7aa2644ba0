# cython: language_level=3
"""Seeded draws and the kernel's NAT source-port choice, shared by the packet engines
(header only: inline functions, nothing to import at run time).

The generator is xorshift64* (one uint64 state the engine carries and returns to its
caller). ``choose_snat_port`` is get_unique_tuple / nf_nat_l4proto_unique_tuple as
cext/chains.pyx implements it for MASQUERADE/SNAT, for engines that cimport it.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from conntrack_core cimport ct_table_t, ct_find


cdef inline uint64_t xs_next(uint64_t* rng) noexcept nogil:
    """One xorshift64* step: the scrambled 64-bit output."""
    cdef uint64_t x = rng[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    rng[0] = x
    return x * 2685821657736338717ULL


cdef inline uint32_t rand31(uint64_t* rng) noexcept nogil:
    return <uint32_t>(xs_next(rng) >> 33) & 0x7FFFFFFF


cdef inline uint32_t rand32(uint64_t* rng) noexcept nogil:
    """get_random_u32()."""
    return <uint32_t>(xs_next(rng) >> 32)


cdef inline bint nat_tuple_used(ct_table_t* ct, uint8_t proto, uint32_t ip, uint16_t port,
                                uint32_t dst, uint16_t dport, double now,
                                uint32_t* probes) noexcept nogil:
    """nf_nat_used_tuple: a flow already holds the reply tuple (dst:dport -> ip:port)."""
    cdef int32_t d
    return ct_find(ct, dst, dport, ip, port, proto, now, &d, probes) >= 0


cdef inline uint16_t choose_snat_port(ct_table_t* ct, uint8_t proto, uint32_t snat_ip,
                                      uint32_t dst, uint16_t dport, uint16_t sport,
                                      bint random_fully, uint64_t* rng, double now,
                                      uint32_t* probes) noexcept nogil:
    """The source port after SNAT: the original port when the new tuple is free (unless
    fully random), else a port from the original port's class (1-511, 600-1023,
    1024-65535) starting at a random offset, up to 128 attempts, then halving rounds from
    new random offsets."""
    cdef uint32_t lo, size, attempts, i, off
    cdef uint16_t port = sport
    if proto != 6 and proto != 17 and proto != 132:
        return sport
    if not random_fully and (ct == NULL or not nat_tuple_used(
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
            if ct == NULL or not nat_tuple_used(ct, proto, snat_ip, port, dst, dport, now,
                                                probes):
                return port
        if attempts >= size or attempts < 16:
            return port  # the kernel gives up and the confirm clashes
        attempts //= 2
        off = rand31(rng) & 0xFFFF
