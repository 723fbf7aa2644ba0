# jhash.pxi: Bob Jenkins' lookup3 final mix as the Linux kernel and Cilium's datapath
# write it (bpf/lib/jhash.h: __jhash_final, __jhash_nwords, jhash_3words), all arithmetic
# on u32. Included where a flow hash of Cilium's datapath is needed.
from libc.stdint cimport uint32_t


cdef inline uint32_t rol32(uint32_t word, uint32_t shift) noexcept nogil:
    return (word << shift) | (word >> ((-shift) & 31))


cdef inline uint32_t jhash_3words(uint32_t a, uint32_t b, uint32_t c,
                                  uint32_t initval) noexcept nogil:
    """__jhash_nwords(a, b, c, initval + JHASH_INITVAL + (3 << 2)): the final mix, c."""
    initval = initval + <uint32_t>0xdeadbeef + <uint32_t>12  # JHASH_INITVAL + (3 << 2)
    a += initval
    b += initval
    c += initval
    c ^= b
    c -= rol32(b, 14)
    a ^= c
    a -= rol32(c, 11)
    b ^= a
    b -= rol32(a, 25)
    c ^= b
    c -= rol32(b, 16)
    a ^= c
    a -= rol32(c, 4)
    b ^= a
    b -= rol32(a, 14)
    c ^= b
    c -= rol32(b, 24)
    return c
