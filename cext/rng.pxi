# rng.pxi: the seeded xorshift64* stream every draw comes from (included by the engines).
from libc.stdint cimport uint32_t, uint64_t


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
