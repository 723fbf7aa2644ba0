# cython: language_level=3
"""C structs shared by every engine (chain VM, IPVS tables, nft maps, conntrack).

The numpy dtypes in kproxy_emu/packets.py (PACKET_DTYPE, VERDICT_DTYPE, TARGET_DTYPE)
mirror these structs field for field: same order, offsets and itemsize. An engine takes
``packet_t[:]`` / ``verdict_t[:]`` typed memoryviews straight from the numpy arrays
(``const packet_t[:]`` for read-only input). Change a struct here and the dtype there
together; tests/test_cext.py compares both against sizeof/offsetof.

IPv6 (not implemented): a ``packet6_t`` would sit beside ``packet_t`` with the same scalar
fields and ``uint8_t src_ip[16], dst_ip[16]`` (network order) instead of the uint32 pair,
``family = 6``; batches stay single-family so engines dispatch once per batch on the
array's dtype, never per packet. ``verdict_t`` would get a ``verdict6_t`` twin the same way.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t


cdef enum:
    # verdict_t.action
    ACT_ACCEPT = 0
    ACT_DNAT = 1
    ACT_DROP = 2
    ACT_REJECT = 3

    # packet_t.origin: where the packet enters the node
    ORIGIN_POD = 0
    ORIGIN_EXTERNAL = 1
    ORIGIN_HOST = 2
    ORIGIN_AUTO = 255       # not given: the dataplane classifies by source address

    # bits of target_t.origins (1 << origin)
    ORIGIN_BIT_POD = 1
    ORIGIN_BIT_EXTERNAL = 2
    ORIGIN_BIT_HOST = 4

    # packet_t.proto (IANA protocol numbers)
    PROTO_ICMP = 1
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_SCTP = 132

    # packet_t.tcp_flags
    TCP_FIN = 1
    TCP_SYN = 2
    TCP_RST = 4
    TCP_PSH = 8
    TCP_ACK = 16

    # packet_t.family
    FAMILY_V4 = 4
    FAMILY_V6 = 6


ctypedef struct packet_t:       # 24 bytes, aligned 8
    double ts                   # emulated time, seconds
    uint32_t src_ip             # IPv4, host byte order
    uint32_t dst_ip
    uint16_t src_port           # 0 for ICMP
    uint16_t dst_port
    uint8_t proto               # PROTO_*
    uint8_t tcp_flags           # TCP_* bits, 0 for non-TCP
    uint8_t origin              # ORIGIN_*
    uint8_t family              # FAMILY_V4


ctypedef struct verdict_t:      # 28 bytes, aligned 4
    uint32_t dnat_ip            # 0 when untouched
    uint32_t snat_ip            # 0 when untouched
    uint16_t dnat_port
    uint16_t snat_port
    int32_t endpoint            # index into the mode's endpoint table, -1 for none
    uint32_t rules              # rules evaluated
    uint32_t probes             # hash / conntrack probes
    uint8_t action              # ACT_*
    uint8_t ct_hit              # 0/1; numpy side is bool ('?'), which Cython accepts as uint8_t
    uint16_t lookups            # set / map / IPVS lookups (saturates at 65535)


ctypedef struct target_t:       # 8 bytes: one frontend the traffic generator may aim at
    uint32_t ip
    uint16_t port
    uint8_t proto
    uint8_t origins             # ORIGIN_BIT_* mask of origins that can use this frontend
