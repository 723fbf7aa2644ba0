# cython: language_level=3
"""ipset membership tests for ``-m set --match-set NAME DIRS`` (header only, nogil).

Set types kube-proxy's IPVS proxier creates: hash:ip, hash:ip,port, hash:ip,port,ip,
hash:ip,port,net and bitmap:port. Hash types are one open-addressing table of 2-word
keys (linear probing, seeded mix); hash:ip,port,net keeps the prefix lengths present and
tries them most specific first, as the kernel's hash:*net* types do (net/netfilter/ipset/
ip_set_hash_gen.h mtype_test_cidrs). ``dirs`` is the match's direction list as a bit mask:
bit i set = dimension i is taken from the destination (``dst``), clear = source (``src``);
``dst,dst,src`` is 0b011.

Declarations only; the tests are in ipset_core.pxi, compiled into kproxy_emu._cext.chains.
The chain engine keeps the IPSet objects alive and tests their ``s`` with
``ipset_member(&ipset.s, &pkt, dirs, &probes)`` (vstable.pxi), inlined.

A port dimension matches TCP, UDP and SCTP packets only (the entry's protocol must be the
packet's); bitmap:port holds bare ports and matches any of the three protocols.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t


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
