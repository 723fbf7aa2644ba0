# cython: language_level=3
"""Connection tracking table (IPv4): the C-level API a Cython pipeline calls per packet.

Semantics follow Linux nf_conntrack (net/netfilter/nf_conntrack_core.c,
nf_conntrack_proto_tcp.c, _udp.c, _sctp.c); see kproxy_emu/_cext/conntrack.py for the full list of
what is modelled and what is simplified. The pure-Python twin is
kproxy_emu/dataplane/conntrack_ref.py; both must behave identically.

Layout: ``ct_entry_t`` slots in one packed array (``max_entries`` of them, reused through a
LIFO free stack), and a chained hash table over them like the kernel's: ``buckets[b]`` is
the head node of bucket b, a node is ``2 * entry + direction`` and every entry sits in two
chains (its original and its reply tuple), new nodes at the chain head. Keys are hashed
with a seeded 64-bit mix (the seed plays nf_conntrack_hash_rnd); the bucket is
``(hash32 * buckets) >> 32`` (the kernel's reciprocal_scale).

This file holds declarations only (structs, enums); the functions are in
conntrack_core.pxi, compiled into kproxy_emu._cext.pipeline alone (with conntrack.pxi's
``ConntrackTable``), where the packet pipeline calls them on the table's ``tab``.

Per-packet use without the GIL (what ConntrackTable.track_batch does)::

    cdef ct_result_t r
    ct_lookup(t, p, &r)              # find + state machine + refresh
    if r.entry >= 0:                          # hit: apply the stored NAT
        ct_translate(t, r.entry, r.dir, &sip, &sport, &dip, &dport)
    elif r.state != CTSTATE_UNTRACKED:        # miss: conntrack allocates (may early-drop)
        e = ct_alloc(t, p)           # CT_ERR_FULL -> drop the packet
        ... run the rules (r.state is NEW or INVALID) ...
        ct_confirm(t, e, dnat_ip, dnat_port, snat_ip, snat_port, ep, mark,
                   p.ts, &probes)             # or ct_abort(t, e) if dropped
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    CT_DIR_ORIGINAL = 0
    CT_DIR_REPLY = 1

    # ctstate bits as -m conntrack --ctstate sees them (xt_conntrack.h XT_CONNTRACK_STATE_*)
    CTSTATE_INVALID = 1
    CTSTATE_ESTABLISHED = 2
    CTSTATE_RELATED = 4
    CTSTATE_NEW = 8
    CTSTATE_UNTRACKED = 256
    CTSTATE_SNAT = 512
    CTSTATE_DNAT = 1024

    # ct->status bits (nf_conntrack_common.h enum ip_conntrack_status)
    IPS_EXPECTED = 1
    IPS_SEEN_REPLY = 2
    IPS_ASSURED = 4
    IPS_CONFIRMED = 8
    IPS_SRC_NAT = 16
    IPS_DST_NAT = 32
    IPS_SRC_NAT_DONE = 128
    IPS_DST_NAT_DONE = 256

    # enum tcp_conntrack; TCP_CT_MAX is the table's sIV, TCP_CT_IGNORE its sIG
    TCP_CT_NONE = 0
    TCP_CT_SYN_SENT = 1
    TCP_CT_SYN_RECV = 2
    TCP_CT_ESTABLISHED = 3
    TCP_CT_FIN_WAIT = 4
    TCP_CT_CLOSE_WAIT = 5
    TCP_CT_LAST_ACK = 6
    TCP_CT_TIME_WAIT = 7
    TCP_CT_CLOSE = 8
    TCP_CT_SYN_SENT2 = 9
    TCP_CT_MAX = 10
    TCP_CT_IGNORE = 11

    # enum tcp_bit_set (get_conntrack_index)
    TCP_SYN_SET = 0
    TCP_SYNACK_SET = 1
    TCP_FIN_SET = 2
    TCP_ACK_SET = 3
    TCP_RST_SET = 4
    TCP_NONE_SET = 5

    # SCTP states used by the simplified tracker (values of enum sctp_conntrack)
    SCTP_CT_NONE = 0
    SCTP_CT_COOKIE_WAIT = 2
    SCTP_CT_COOKIE_ECHOED = 3
    SCTP_CT_ESTABLISHED = 4

    # indices into ct_table_t.timeouts (TCP states index directly, 0..9)
    TO_UDP_UNREPLIED = 10
    TO_UDP_STREAM = 11
    TO_SCTP_COOKIE_WAIT = 12
    TO_SCTP_COOKIE_ECHOED = 13
    TO_SCTP_ESTABLISHED = 14
    TO_ICMP = 15
    TO_GENERIC = 16
    TO_COUNT = 17

    CT_EVICTION_RANGE = 8       # nf_conntrack_core.c NF_CT_EVICTION_RANGE

    SLOT_FREE = 0
    SLOT_UNCONFIRMED = 1
    SLOT_CONFIRMED = 2

    # ct_alloc / ct_confirm failures
    CT_ERR_FULL = -1            # table full, early_drop freed nothing: drop the packet
    CT_ERR_INVALID = -2         # the protocol tracker refuses to start a connection
    CT_ERR_CLASH = -3           # confirm: a tuple is already in the table (insert_failed)

    CT_REOPEN = -1              # ct_packet: SYN reopened a TIME_WAIT/CLOSE entry (killed)

    # udp: "Still active after two seconds? Extend timeout." (stream_ts = 2 * HZ + jiffies)
    CT_UDP_STREAM_DELAY = 2


ctypedef struct ct_entry_t:
    double expires              # absolute emulated time; dead once expires <= now
    double created              # time of the first packet (UDP stream_ts base)
    uint32_t src_ip[2]          # tuple per direction: [0] original, [1] reply
    uint32_t dst_ip[2]
    uint16_t src_port[2]
    uint16_t dst_port[2]
    uint32_t bucket[2]          # bucket of each direction's node
    int32_t next[2]             # next node in that bucket's chain, -1 at the end
    int32_t endpoint            # payload for the engines
    uint32_t mark
    uint32_t status             # IPS_* bits
    uint8_t proto
    uint8_t state               # TCP_CT_* / SCTP_CT_* (0 for other protocols)
    uint8_t slot                # SLOT_*


ctypedef struct ct_stats_t:
    uint64_t found              # lookups that hit
    uint64_t searched           # chain nodes inspected by lookups (probes)
    uint64_t inserted           # confirmed entries
    uint64_t invalid            # packets the trackers called invalid
    uint64_t drop               # NEW packets dropped: table full
    uint64_t early_drop         # entries evicted by early_drop
    uint64_t insert_failed      # confirm clashes
    uint64_t expired            # entries collected after their timeout


ctypedef struct ct_table_t:
    ct_entry_t* e
    int32_t* buckets
    int32_t* free_stack
    int32_t free_top            # free slots on the stack
    int32_t max_entries         # nf_conntrack_max
    int32_t count               # allocated slots (unconfirmed + confirmed)
    int32_t high                # slots ever allocated: e[high:] is still zeroed
    uint32_t hsize              # nf_conntrack_buckets
    uint64_t seed
    double timeouts[TO_COUNT]
    uint8_t tcp_loose           # nf_conntrack_tcp_loose
    ct_stats_t st


ctypedef struct ct_result_t:
    int32_t entry               # -1: no entry (miss, INVALID or UNTRACKED)
    int32_t dir                 # CT_DIR_*, -1 without entry
    uint32_t state              # CTSTATE_* bits
    uint32_t probes             # chain nodes inspected
