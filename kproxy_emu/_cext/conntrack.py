"""Connection tracking table (IPv4), after Linux nf_conntrack.

Compiled into the packet pipeline's extension (source: cext/conntrack.pxi and
cext/conntrack_core.pxi, included by cext/pipeline.pyx) so the per-packet functions inline
into the pipeline; this module is its public name. Pure-Python twin:
kproxy_emu.dataplane.conntrack_ref (same API, same results).

What is modelled (kernel source in brackets):

- Entries hold the original and reply tuples; the reply tuple is the inverted original
  with NAT applied (reply src = DNAT destination, reply dst = SNAT source). A packet finds
  its entry through either tuple [nf_conntrack_core.c ____nf_conntrack_find]; the NAT to
  apply is the other direction's tuple inverted (``translate``).
- One chained hash table holds both tuples of every entry [nf_conntrack_hash], nodes added
  at the chain head [__nf_conntrack_hash_insert], keys hashed with a seeded hash (the seed
  is the constructor's, standing for nf_conntrack_hash_rnd); bucket = reciprocal_scale.
  ``buckets`` defaults to ``max_entries`` (the kernel's default max_factor 1; kube-proxy
  sets hashsize = max / 4). Probes = chain nodes inspected.
- Lookups collect any expired entry they walk past [____nf_conntrack_find:
  nf_ct_gc_expired]; an entry is dead once ``expires <= now`` [nf_ct_is_expired:
  (s32)(timeout - nfct_time_stamp) <= 0], i.e. exactly at the timeout it is gone.
- ctstate: NEW for the original direction until a reply was seen, ESTABLISHED after that
  and for every reply-direction packet [resolve_normal_ct]; INVALID when the tracker
  refuses the packet; UNTRACKED for non-IPv4 (raw NOTRACK is the pipeline's business);
  SNAT/DNAT virtual bits from IPS_SRC_NAT/IPS_DST_NAT [xt_conntrack.c]. RELATED is never
  produced (no expectations or ICMP errors yet). Values are the XT_CONNTRACK_STATE_* bits.
- TCP [nf_conntrack_proto_tcp.c]: the kernel's tcp_conntracks transition table verbatim,
  indexed by get_conntrack_index(flags). New connections: SYN -> SYN_SENT; a bare ACK
  picks up a connection as ESTABLISHED when tcp_loose (nf_conntrack_tcp_loose, default 1);
  anything else without an entry is INVALID. sIV -> INVALID (entry untouched), sIG ->
  accepted without state change or refresh. ASSURED when an ACK moves SYN_RECV or
  ESTABLISHED to ESTABLISHED after a reply was seen. RST before any reply kills the entry.
  Timeout = the new state's timeout (RST: CLOSE's).
- UDP [nf_conntrack_proto_udp.c]: udp_timeout (30 s) until a reply was seen; once replied,
  a packet more than 2 s after the first one refreshes with udp_timeout_stream (120 s) and
  sets ASSURED (the reply itself still gets 30 s: SEEN_REPLY is set after the tracker).
- Table full [__nf_conntrack_alloc, early_drop, early_drop_list]: allocating when
  ``len == max_entries`` scans up to 8 buckets from the new tuple's bucket, evicting every
  confirmed non-ASSURED entry of the first bucket that has one; if none, the packet is
  dropped (``stats()['drop']``). Difference: expired entries collected by that scan also
  count as room (the kernel's gc worker would have reaped them; there is no background
  worker on the emulated clock).
- Confirm clash [__nf_conntrack_confirm]: a tuple already present -> insert_failed, drop.

Simplified: no sequence/window tracking (tcp_in_window, be_liberal, max_retrans, unack
timeouts), a SYN in TIME_WAIT/CLOSE always reopens (the kernel also wants CLOSE_INIT or a
prior RST), SCTP without chunk types (see ct_packet: COOKIE_WAIT 3 s -> COOKIE_ECHOED 3 s ->
ESTABLISHED 210 s + ASSURED, read from packet directions; current kernels use 210 s for
ESTABLISHED, older ones 5 days), ICMP tracked like a generic protocol with ports 0 and
icmp_timeout, no zones, helpers, expectations or UDP clash resolution.
"""

from kproxy_emu._cext.pipeline import (  # noqa: F401 (this module is their public name)
    DEFAULT_TIMEOUTS,
    DIR_ORIGINAL,
    DIR_REPLY,
    ENTRY_DTYPE,
    ERR_CLASH,
    ERR_FULL,
    ERR_INVALID,
    EVICTION_RANGE,
    KUBE_PROXY_TIMEOUTS,
    SCTP_STATE_NAMES,
    STATE_DNAT,
    STATE_ESTABLISHED,
    STATE_INVALID,
    STATE_NEW,
    STATE_RELATED,
    STATE_SNAT,
    STATE_UNTRACKED,
    STATS_KEYS,
    STATUS_ASSURED,
    STATUS_CONFIRMED,
    STATUS_DST_NAT,
    STATUS_DST_NAT_DONE,
    STATUS_SEEN_REPLY,
    STATUS_SRC_NAT,
    STATUS_SRC_NAT_DONE,
    TCP_STATE_NAMES,
    ConntrackTable,
    tcp_flag_index,
    tcp_transition,
    tuple_hash,
)
