# cython: language_level=3
"""Cilium's Maglev consistent hashing, compiled: the hot loops of kproxy_emu.maglev.

- ``murmur3_128``: MurmurHash3 x64-128 with a 32-bit seed, as cilium/pkg/murmur3 computes
  it on a little-endian host (its 16-byte blocks are read in native byte order; amd64 and
  arm64 are little-endian, so that is the table every usual node computes).
- ``permutation``: getPermutation of pkg/maglev (offset, skip per backend; row i holds
  ``(offset_i + j * skip_i) % M``), for the permutation property test.
- ``fill``: computeLookupTable's fill over backends already sorted by their hash strings,
  weights included; it walks each backend's permutation lazily instead of materialising
  the N x M array (the same slots: ``perm[i][j]`` is computed when it is visited).
- ``slots``: the datapath's pick, ``jhash_3words(saddr, dport << 16 | sport, nexthdr,
  seedJhash0) % M`` over packed columns (bpf/lib/hash.h, lb4_select_backend_id_maglev).

kproxy_emu.maglev validates every argument and is the public face of these functions.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

include "jhash.pxi"


cdef inline uint64_t rotl64(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t fmix64(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    k *= <uint64_t>0xc4ceb9fe1a85ec53
    k ^= k >> 33
    return k


cdef inline uint64_t load_le64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int b
    for b in range(7, -1, -1):
        v = (v << 8) | p[b]
    return v


cdef void murmur3(const uint8_t* data, Py_ssize_t n, uint32_t seed,
                  uint64_t* out1, uint64_t* out2) noexcept nogil:
    cdef uint64_t c1 = <uint64_t>0x87c37b91114253d5
    cdef uint64_t c2 = <uint64_t>0x4cf5ad432745937f
    cdef uint64_t h1 = seed, h2 = seed, k1, k2
    cdef Py_ssize_t i, nblocks = n // 16, tail_len
    cdef const uint8_t* tail
    for i in range(nblocks):
        k1 = load_le64(data + i * 16)
        k2 = load_le64(data + i * 16 + 8)
        k1 *= c1
        k1 = rotl64(k1, 31)
        k1 *= c2
        h1 ^= k1
        h1 = rotl64(h1, 27)
        h1 += h2
        h1 = h1 * 5 + 0x52dce729
        k2 *= c2
        k2 = rotl64(k2, 33)
        k2 *= c1
        h2 ^= k2
        h2 = rotl64(h2, 31)
        h2 += h1
        h2 = h2 * 5 + 0x38495ab5
    tail = data + nblocks * 16
    tail_len = n & 15
    k1 = 0
    k2 = 0
    if tail_len > 8:
        for i in range(tail_len - 1, 7, -1):
            k2 ^= <uint64_t>tail[i] << (8 * (i - 8))
        k2 *= c2
        k2 = rotl64(k2, 33)
        k2 *= c1
        h2 ^= k2
    if tail_len > 0:
        for i in range(min(tail_len, 8) - 1, -1, -1):
            k1 ^= <uint64_t>tail[i] << (8 * i)
        k1 *= c1
        k1 = rotl64(k1, 31)
        k1 *= c2
        h1 ^= k1
    h1 ^= <uint64_t>n
    h2 ^= <uint64_t>n
    h1 += h2
    h2 += h1
    h1 = fmix64(h1)
    h2 = fmix64(h2)
    h1 += h2
    h2 += h1
    out1[0] = h1
    out2[0] = h2


def murmur3_128(const uint8_t[::1] data, uint32_t seed):
    """(h1, h2) of MurmurHash3 x64-128 over ``data`` (blocks read little-endian)."""
    cdef uint64_t h1 = 0, h2 = 0
    cdef const uint8_t* p = NULL
    if data.shape[0]:
        p = &data[0]
    murmur3(p, data.shape[0], seed, &h1, &h2)
    return h1, h2


def offsets_and_skips(list keys, uint64_t m, uint32_t seed):
    """getOffsetAndSkip per key (bytes): two uint64 arrays, offset = h1 % M and
    skip = h2 % (M - 1) + 1."""
    cdef Py_ssize_t i, n = len(keys)
    cdef uint64_t h1 = 0, h2 = 0
    cdef const uint8_t[::1] key
    offsets = np.empty(n, np.uint64)
    skips = np.empty(n, np.uint64)
    cdef uint64_t[::1] off = offsets
    cdef uint64_t[::1] sk = skips
    if m < 2:
        raise ValueError("m must be at least 2")
    for i in range(n):
        key = keys[i]
        murmur3(&key[0] if key.shape[0] else NULL, key.shape[0], seed, &h1, &h2)
        off[i] = h1 % m
        sk[i] = h2 % (m - 1) + 1
    return offsets, skips


def permutation(const uint64_t[::1] offsets, const uint64_t[::1] skips, uint64_t m):
    """getPermutation: a flat uint64 array, row i = (offset_i + j * skip_i) % M for
    j = 0..M-1, computed as Cilium does it (each from the previous plus skip, mod M)."""
    cdef Py_ssize_t i, j, n = offsets.shape[0]
    if skips.shape[0] != n:
        raise ValueError("offsets and skips must have the same length")
    out = np.empty(n * <Py_ssize_t>m, np.uint64)
    cdef uint64_t[::1] perm = out
    with nogil:
        for i in range(n):
            perm[i * m] = offsets[i] % m
            for j in range(1, <Py_ssize_t>m):
                perm[i * m + j] = (perm[i * m + j - 1] + skips[i]) % m
    return out


def fill(const uint64_t[::1] offsets, const uint64_t[::1] skips,
         const uint32_t[::1] weights, const int32_t[::1] ids, uint64_t m):
    """computeLookupTable over backends in Cilium's order (sorted by hash string):
    an int32 array of M entries, each the ``ids`` value of the backend owning the slot."""
    cdef Py_ssize_t nb = offsets.shape[0], i
    cdef uint64_t n, c, weight_sum = 0
    cdef bint weights_used
    if nb == 0:
        raise ValueError("no backends")
    if skips.shape[0] != nb or weights.shape[0] != nb or ids.shape[0] != nb:
        raise ValueError("offsets, skips, weights and ids must have the same length")
    for i in range(nb):
        if offsets[i] >= m or skips[i] == 0 or skips[i] >= m:
            raise ValueError("offset or skip out of range")
        weight_sum += weights[i]
    weights_used = weight_sum // <uint64_t>nb > 1
    out = np.empty(m, np.int32)
    cdef int32_t[::1] entry = out
    cdef uint8_t* taken = <uint8_t*>malloc(m)
    cdef uint64_t* cur = <uint64_t*>malloc(nb * sizeof(uint64_t))
    cdef double* cntr = <double*>malloc(nb * sizeof(double))
    if taken == NULL or cur == NULL or cntr == NULL:
        free(taken)
        free(cur)
        free(cntr)
        raise MemoryError()
    try:
        with nogil:
            for n in range(m):
                taken[n] = 0
            for i in range(nb):
                cur[i] = offsets[i]   # perm[i][next[i]], next[i] = 0
                cntr[i] = <double>weights[i] / <double>nb
            for n in range(m):
                i = <Py_ssize_t>(n % <uint64_t>nb)
                if weights_used:
                    # (n+1)*weight < uint64(weightCntr[i]): another backend's turn
                    while (n + 1) * <uint64_t>weights[i] < <uint64_t>cntr[i]:
                        i = (i + 1) % nb
                    cntr[i] += <double>weight_sum
                c = cur[i]
                while taken[c]:
                    c += skips[i]
                    if c >= m:
                        c -= m
                taken[c] = 1
                entry[c] = ids[i]
                c += skips[i]
                if c >= m:
                    c -= m
                cur[i] = c
    finally:
        free(taken)
        free(cur)
        free(cntr)
    return out


cdef inline uint32_t bswap32(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >> 8) & 0xff00) | (x >> 24)


cdef inline uint32_t bswap16(uint32_t x) noexcept nogil:
    return ((x & 0xff) << 8) | ((x >> 8) & 0xff)


cdef inline uint32_t flow_hash_v4(uint32_t client_ip, uint16_t client_port,
                                  uint16_t service_port, uint8_t proto,
                                  uint32_t seed) noexcept nogil:
    """__hash_from_tuple_v4 on a little-endian host: the tuple's network-order fields
    read as host integers (addresses and ports here are host-order values)."""
    return jhash_3words(bswap32(client_ip),
                        (bswap16(service_port) << 16) | bswap16(client_port),
                        proto, seed)


def flow_hash(uint32_t client_ip, uint16_t client_port, uint16_t service_port,
              uint8_t proto, uint32_t seed):
    """The datapath's IPv4 flow hash (before ``% M``); see ``slots``."""
    return flow_hash_v4(client_ip, client_port, service_port, proto, seed)


def jhash3(uint32_t a, uint32_t b, uint32_t c, uint32_t initval):
    """jhash_3words(a, b, c, initval) of bpf/lib/jhash.h."""
    return jhash_3words(a, b, c, initval)


def slots(const uint32_t[::1] client_ip, const uint16_t[::1] client_port,
          const uint16_t[::1] service_port, const uint8_t[::1] proto,
          uint32_t seed, uint32_t m, bint affinity, uint32_t[::1] out):
    """Per flow, the LUT index ``hash % M`` lb4_select_backend_id_maglev reads: the
    client's address and port, the service port and protocol (the VIP is not hashed);
    with session affinity the client port is hashed as 0."""
    cdef Py_ssize_t k, n = client_ip.shape[0]
    if (client_port.shape[0] != n or service_port.shape[0] != n or proto.shape[0] != n
            or out.shape[0] < n):
        raise ValueError("columns must have the same length (out at least)")
    if m == 0:
        raise ValueError("m must be positive")
    with nogil:
        for k in range(n):
            out[k] = flow_hash_v4(client_ip[k], 0 if affinity else client_port[k],
                                  service_port[k], proto[k], seed) % m
