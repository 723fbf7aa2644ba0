# ipset_core.pxi: ipset membership tests over an ipset_t (struct: ipset_core.pxd).
# Included by vstable.pxi, itself included by chains.pyx only.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t, PROTO_SCTP, PROTO_TCP, PROTO_UDP


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
