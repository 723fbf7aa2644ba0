# cython: language_level=3
"""IPVS (Linux net/netfilter/ipvs) for IPv4, header only: structs and inline nogil functions.

What is modelled, each from the kernel source named:
* service table (ip_vs_ctl.c ip_vs_svc_table): chained hash on <proto, addr, port> with
  ``ip_vs_svc_hashkey``, services added at the chain head. The kernel's table has a fixed
  2^8 buckets; ``svc_bits`` here defaults to the same formula over a table sized to the
  service count (lookups stay O(1) at 100k services); ``svc_bits=8`` gives the kernel's.
* destinations in the service's list in kernel order: ``list_add_rcu`` puts a new
  destination at the head, so the list is the reverse of the order of addition. A deleted
  destination leaves the list (``LINKED`` cleared, ``AVAILABLE`` cleared) but keeps its slot
  while connections point at it (the kernel's dest trash); adding the same address and
  port to the same service again revives that slot (``ip_vs_trash_get_dest``: counters and
  connections kept), as kube-proxy's MoveRSOutofGracefulDeleteList then AddRealServer do.
* schedulers, each as its ip_vs_<name>.c: rr, wrr, lc, wlc, sed, nq (overheads from the
  destination's activeconns/inactconns), sh and dh (256-bucket tables, kernel hashes and
  reassign), mh (Maglev: prime table, hsiphash permutation with the kernel's fixed keys,
  populate, fallback), lblc and lblcr (per-destination-address cache; for a non-fwmark
  service the destination address is always the VIP, so one cache entry per service).
* connection table (ip_vs_conn.c): 2^conn_bits buckets, ``jhash_3words(caddr, cport,
  proto, rnd)``, new entries at the chain head, timers in emulated time (an entry whose
  ``expires`` has passed is collected when a lookup meets it), per-state timeouts of
  ip_vs_proto_tcp.c / _udp.c, the TCP state table (INPUT rows for client packets, OUTPUT
  rows for replies) with the active/inactive counter moves of set_tcp_state, persistence
  templates
  (ip_vs_sched_persist: <proto, caddr, 0, vaddr, vport>, timeout = service timeout,
  re-armed while they control connections), ``expire_nodest_conn`` and
  ``expire_quiescent_template`` (kube-proxy sets both to 1) and ``conn_reuse_mode`` 1
  (a SYN on a TIME_WAIT/CLOSE connection or one whose destination has weight 0
  expires it; the packet is dropped because vs/conntrack=1 keeps the old nf_conn).
* replies (ip_vs_out): the connection is found from the reply's destination (the
  client), the TCP OUTPUT rows move its state and the source goes back to the VIP.
Simplified: kube-proxy's destinations are NAT (masq), so NOOUTPUT / INPUT-ONLY never
apply; SCTP has one state (ESTABLISHED timeout); a template's controlled connections are
tracked by their latest expiry (a connection shortened by RST keeps the template alive
until its previous expiry); no IPVS application helpers (FTP), no sync daemon.

This file declares the structs; the functions are in ipvs_core.pxi, compiled into
kproxy_emu._cext.chains only (with vstable.pxi's ``VirtualServerTable``, declared in
kproxy_emu/_cext/chains.pxd). The chain engine calls ``table.c_in(&pkt, &v)`` /
``table.c_out(&reply, &v)``, which are::

    verdict_reset(&v)
    r = ipvs_in(t, &pkt, &v)     # IPVS_PASS: not IPVS traffic, v untouched but probes
                                 # IPVS_NOSCHED: TCP without SYN, no connection: not DNATed
                                 # IPVS_DNAT: v.action DNAT, dnat_ip/port, endpoint, ct_hit
                                 # IPVS_DROP / IPVS_REJECT: v.action DROP / REJECT
    r = ipvs_out(t, &reply, &v)  # IPVS_SNAT: v.snat_ip/snat_port = VIP, ct_hit; or PASS

The chain engine calls it at LOCAL_IN for packets addressed to the node (kube-ipvs0
addresses included), after filter INPUT, and at LOCAL_OUT for the host's own.
"""
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    # schedulers (index into SCHEDULERS in vstable.pxi)
    SCHED_RR = 0
    SCHED_WRR = 1
    SCHED_LC = 2
    SCHED_WLC = 3
    SCHED_LBLC = 4
    SCHED_LBLCR = 5
    SCHED_SH = 6
    SCHED_DH = 7
    SCHED_SED = 8
    SCHED_NQ = 9
    SCHED_MH = 10
    SCHED_COUNT = 11

    # service flags (include/uapi/linux/ip_vs.h)
    SVC_F_PERSISTENT = 0x0001
    SVC_F_HASHED = 0x0002
    SVC_F_ONEPACKET = 0x0004
    SVC_F_SCHED1 = 0x0008       # sh-fallback / mh-fallback
    SVC_F_SCHED2 = 0x0010       # sh-port / mh-port
    SVC_F_SCHED3 = 0x0020

    # destination flags
    DEST_F_AVAILABLE = 0x0001
    DEST_F_OVERLOAD = 0x0002
    DEST_F_LINKED = 0x0100      # emulator: in the service's list (not in the trash)

    # connection flags
    CONN_F_INACTIVE = 0x0100
    CONN_F_TEMPLATE = 0x1000
    CONN_F_USED = 0x8000        # emulator: slot in use

    # enum of TCP states (ip_vs.h IP_VS_TCP_S_*)
    TCP_S_NONE = 0
    TCP_S_ESTABLISHED = 1
    TCP_S_SYN_SENT = 2
    TCP_S_SYN_RECV = 3
    TCP_S_FIN_WAIT = 4
    TCP_S_TIME_WAIT = 5
    TCP_S_CLOSE = 6
    TCP_S_CLOSE_WAIT = 7
    TCP_S_LAST_ACK = 8
    TCP_S_LISTEN = 9
    TCP_S_SYNACK = 10
    TCP_S_LAST = 11
    # timeouts[] slots after the TCP states
    TO_UDP = 11
    TO_SCTP = 12
    TO_COUNT = 13

    SH_TAB_SIZE = 256
    DH_TAB_SIZE = 256

    # ipvs_in results
    IPVS_PASS = 0               # no connection, no virtual service: not IPVS traffic
    IPVS_DNAT = 1
    IPVS_DROP = 2
    IPVS_REJECT = 3             # no destination: ICMP port unreachable (ip_vs_leave)
    # TCP without SYN and no connection: tcp_conn_schedule does not look for a service;
    # passes to the local stack
    IPVS_NOSCHED = 4
    IPVS_SNAT = 5               # ipvs_out: a reply of a connection, source back to the VIP


ctypedef struct ipvs_svc_t:
    uint32_t addr
    uint16_t port
    uint8_t proto
    uint8_t sched
    uint32_t flags
    uint32_t timeout            # persistence timeout, seconds
    int32_t next                # hash chain
    int32_t dest_head           # first destination of the list, -1: empty
    int32_t num_dests
    int32_t cur                 # rr/wrr position: a destination, -1 = the list head
    int32_t cw                  # wrr current weight, max weight, decreasing interval
    int32_t mw
    int32_t di
    int32_t tab                 # sh/dh/mh table offset in sched_tab, -1 none
    int32_t mh_gcd
    int32_t mh_rshift
    int32_t cache_dest          # lblc cache entry dest / lblcr set head, -1 none
    int32_t set_size            # lblcr set size
    double cache_lastuse        # lblc/lblcr entry lastuse (-1: no entry)
    double set_lastmod          # lblcr set lastmod


ctypedef struct ipvs_dest_t:
    uint32_t addr
    uint16_t port
    uint16_t flags              # DEST_F_*
    int32_t weight
    int32_t last_weight         # latest non-zero weight (mh)
    int32_t activeconns
    int32_t inactconns
    int32_t persistconns
    int32_t next                # service list
    int32_t svc
    int32_t endpoint            # index in the mode's endpoint table
    int32_t set_next            # lblcr set list
    uint8_t in_set


ctypedef struct ipvs_conn_t:
    double expires
    double ctl_expires          # templates: latest expiry of a controlled connection
    uint32_t caddr
    uint32_t vaddr
    uint32_t daddr
    uint16_t cport
    uint16_t vport
    uint16_t dport
    uint16_t flags              # CONN_F_*
    uint8_t proto
    uint8_t state
    uint32_t timeout            # seconds
    int32_t dest
    int32_t endpoint            # the destination's endpoint (kept here: hits skip the dest)
    int32_t control             # controlling template, -1 none
    uint32_t control_gen        # the template's gen when it took control
    uint32_t gen                # bumped when the slot is freed
    int32_t n_control
    int32_t next                # hash chain / free list
    uint32_t bucket


ctypedef struct ipvs_stats_t:
    uint64_t conns              # connections created
    uint64_t templates          # persistence templates created
    uint64_t hits               # packets of known connections
    uint64_t expired            # entries collected after their timeout
    uint64_t nodest             # packets dropped by expire_nodest_conn / conn reuse
    uint64_t noroom             # new connections refused: table full
    uint64_t unavailable        # no destination: ICMP port unreachable


ctypedef struct ipvs_table_t:
    ipvs_svc_t* svcs
    int32_t nsvcs
    int32_t* svc_buckets
    uint32_t svc_bits
    uint32_t svc_mask
    uint32_t svc_rnd            # the kernel's (size_t)ipvs >> 8 term
    ipvs_dest_t* dests
    # DEST_F_AVAILABLE per destination, packed apart so a known connection's packet does
    # not touch the dest
    uint8_t* dest_available
    int32_t ndests
    int32_t* sched_tab
    uint32_t mh_size            # prime table size (CONFIG_IP_VS_MH_TAB_INDEX)
    uint32_t mh_bits            # CONFIG_IP_VS_MH_TAB_INDEX / 2
    ipvs_conn_t* conns
    int32_t conn_cap
    int32_t conn_count
    int32_t conn_free           # free list head
    int32_t conn_high           # slots ever used
    int32_t* conn_buckets
    uint32_t conn_mask
    uint32_t conn_rnd           # ip_vs_conn_rnd
    double timeouts[TO_COUNT]
    double lblc_expiration      # sysctl lblc_expiration / lblcr_expiration (24h)
    double lblcr_expiration
    uint8_t expire_nodest_conn
    uint8_t expire_quiescent_template
    uint8_t conn_reuse_mode
    ipvs_stats_t st


cdef enum:
    MH_KEY1 = 1
    MH_KEY2 = 2
