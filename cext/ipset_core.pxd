# cython: language_level=3
"""ipset membership tests for ``-m set --match-set NAME DIRS`` (header only, nogil).

Set types kube-proxy's IPVS proxier creates: hash:ip, hash:ip,port, hash:ip,port,ip,
hash:ip,port,net and bitmap:port. Hash types are one open-addressing table of 2-word
keys (linear probing, seeded mix); hash:ip,port,net keeps the prefix lengths present and
tries them most specific first, as the kernel's hash:*net* types do (net/netfilter/ipset/
ip_set_hash_gen.h mtype_test_cidrs). ``dirs`` is the match's direction list as a bit mask:
bit i set = dimension i is taken from the destination (``dst``), clear = source (``src``);
``dst,dst,src`` is 0b011.

Use from a chain VM::

    cdef ipset_t* s = <ipset_t*><uintptr_t>ipset_obj.set_address()
    if ipset_test(s, &pkt, dirs, &probes): ...

A port dimension matches TCP, UDP and SCTP packets only (the entry's protocol must be the
packet's); bitmap:port holds bare ports and matches any of the three protocols.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t, PROTO_SCTP, PROTO_TCP, PROTO_UDP
from hashing cimport mix64


cdef enum:
    IPSET_HASH_IP = 0
    IPSET_HASH_IP_PORT = 1
    IPSET_HASH_IP_PORT_IP = 2
    IPSET_HASH_IP_PORT_NET = 3
    IPSET_BITMAP_PORT = 4


ctypedef struct ipset_t:
    uint8_t type
    uint64_t* k0                # slot keys
    uint64_t* k1
    uint8_t* used
    uint32_t mask               # slots - 1 (power of two)
    uint32_t count
    uint64_t seed
    uint8_t* bitmap             # bitmap:port, 65536 bits
    uint8_t ncidrs              # hash:ip,port,net: distinct prefix lengths, longest first
    uint8_t cidrs[33]


cdef inline uint32_t ipset_slot(const ipset_t* s, uint64_t k0, uint64_t k1) noexcept nogil:
    return <uint32_t>(mix64(s.seed ^ k0 ^ mix64(k1 + 0x9e3779b97f4a7c15ULL))) & s.mask


cdef inline bint ipset_find(const ipset_t* s, uint64_t k0, uint64_t k1,
                            uint32_t* probes) noexcept nogil:
    cdef uint32_t i = ipset_slot(s, k0, k1)
    while s.used[i]:
        probes[0] += 1
        if s.k0[i] == k0 and s.k1[i] == k1:
            return True
        i = (i + 1) & s.mask
    probes[0] += 1
    return False


cdef inline uint64_t ipset_ip_port_key(uint32_t ip, uint8_t proto, uint16_t port) noexcept nogil:
    return (<uint64_t>ip << 32) | (<uint64_t>proto << 16) | port


cdef inline uint32_t ipset_netmask(uint8_t cidr) noexcept nogil:
    return 0 if cidr == 0 else (<uint32_t>0xFFFFFFFFU) << (32 - cidr)


cdef inline bint ipset_test(const ipset_t* s, const packet_t* p, uint32_t dirs,
                            uint32_t* probes) noexcept nogil:
    cdef uint32_t ip0 = p.dst_ip if dirs & 1 else p.src_ip
    cdef uint16_t port1 = p.dst_port if dirs & 2 else p.src_port
    cdef uint32_t ip2 = p.dst_ip if dirs & 4 else p.src_ip
    cdef uint16_t port0
    cdef uint64_t k0
    cdef int i
    cdef uint8_t cidr
    cdef bint has_port = p.proto == PROTO_TCP or p.proto == PROTO_UDP or p.proto == PROTO_SCTP
    if s.type == IPSET_HASH_IP:
        return ipset_find(s, <uint64_t>ip0 << 32, 0, probes)
    if s.type == IPSET_BITMAP_PORT:
        if not has_port:
            return False
        port0 = p.dst_port if dirs & 1 else p.src_port
        probes[0] += 1
        return (s.bitmap[port0 >> 3] >> (port0 & 7)) & 1
    if not has_port:
        return False
    k0 = ipset_ip_port_key(ip0, p.proto, port1)
    if s.type == IPSET_HASH_IP_PORT:
        return ipset_find(s, k0, 0, probes)
    if s.type == IPSET_HASH_IP_PORT_IP:
        return ipset_find(s, k0, ip2, probes)
    for i in range(s.ncidrs):                 # hash:ip,port,net
        cidr = s.cidrs[i]
        if ipset_find(s, k0, ((<uint64_t>(ip2 & ipset_netmask(cidr))) << 8) | cidr, probes):
            return True
    return False
