# conntrack_core.pxi: the per-packet conntrack functions over a ct_table_t (see
# conntrack_core.pxd for the structs and the semantics). Included by pipeline.pyx only,
# which calls them per packet (and conntrack.pxi's ConntrackTable wraps them for Python).
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport (packet_t, FAMILY_V4, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
                     TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN)


# ---------------------------------------------------------------------------------------
# hashing

cdef inline uint32_t ct_hash(const ct_table_t* t, uint32_t sip, uint16_t sport, uint32_t dip,
                             uint16_t dport, uint8_t proto) noexcept nogil:
    cdef uint64_t h = mix64(t.seed ^ ((<uint64_t>sip << 32) | dip))
    h = mix64(h ^ ((<uint64_t>sport << 32) | (<uint64_t>dport << 16) | proto))
    return <uint32_t>(h >> 32)


cdef inline uint32_t ct_bucket_of(const ct_table_t* t, uint32_t h) noexcept nogil:
    return <uint32_t>((<uint64_t>h * t.hsize) >> 32)


# ---------------------------------------------------------------------------------------
# TCP state table (nf_conntrack_proto_tcp.c tcp_conntracks[dir][index][old_state]),
# packed 4 bits per old state; rows are [dir * 6 + index]

cdef inline int ct_tcp_index(uint8_t flags) noexcept nogil:
    if flags & TCP_RST:
        return TCP_RST_SET
    if flags & TCP_SYN:
        return TCP_SYNACK_SET if flags & TCP_ACK else TCP_SYN_SET
    if flags & TCP_FIN:
        return TCP_FIN_SET
    if flags & TCP_ACK:
        return TCP_ACK_SET
    return TCP_NONE_SET


cdef inline int ct_tcp_next(int d, int index, int old) noexcept nogil:
    cdef uint64_t row
    cdef int k = d * 6 + index
    if k == 0:
        row = <uint64_t>0x911bbbbb11
    elif k == 1:
        row = <uint64_t>0x2bbbbbbbaa
    elif k == 2 or k == 8:
        row = <uint64_t>0xa8766644aa
    elif k == 3:
        row = <uint64_t>0xa8775533a3
    elif k == 4 or k == 10:
        row = <uint64_t>0x888888888a
    elif k == 6:
        row = <uint64_t>0x9aaaaaaa9a
    elif k == 7:
        row = <uint64_t>0x2bbbbbbb2a
    elif k == 9:
        row = <uint64_t>0xb8775532ba
    else:
        row = <uint64_t>0xaaaaaaaaaa
    return <int>((row >> (4 * old)) & 0xF)


# ---------------------------------------------------------------------------------------
# slots and chains

cdef inline void ct_unlink_node(ct_table_t* t, int32_t node) noexcept nogil:
    cdef ct_entry_t* e = &t.e[node >> 1]
    cdef int d = node & 1
    cdef uint32_t b = e.bucket[d]
    cdef int32_t prev = -1
    cdef int32_t cur = t.buckets[b]
    while cur != -1:
        if cur == node:
            if prev == -1:
                t.buckets[b] = e.next[d]
            else:
                t.e[prev >> 1].next[prev & 1] = e.next[d]
            return
        prev = cur
        cur = t.e[cur >> 1].next[cur & 1]


cdef inline void ct_free(ct_table_t* t, int32_t idx) noexcept nogil:
    """Remove an entry from both chains (if confirmed) and return its slot."""
    cdef ct_entry_t* e = &t.e[idx]
    if e.slot == SLOT_FREE:
        return
    if e.slot == SLOT_CONFIRMED:
        ct_unlink_node(t, 2 * idx)
        ct_unlink_node(t, 2 * idx + 1)
    e.slot = SLOT_FREE
    t.free_stack[t.free_top] = idx
    t.free_top += 1
    t.count -= 1


cdef inline int32_t ct_chain_next(const ct_table_t* t, uint32_t b, int32_t prev) noexcept nogil:
    """The node after prev in bucket b (the head when prev is -1)."""
    if prev == -1:
        return t.buckets[b]
    return t.e[prev >> 1].next[prev & 1]


cdef inline uint32_t ct_tuple_bucket(const ct_table_t* t, const packet_t* p) noexcept nogil:
    """The bucket of the packet's tuple (what a lookup of it walks)."""
    return ct_bucket_of(t, ct_hash(t, p.src_ip, p.src_port, p.dst_ip, p.dst_port, p.proto))


cdef inline int32_t ct_find(ct_table_t* t, uint32_t sip, uint16_t sport, uint32_t dip,
                            uint16_t dport, uint8_t proto, double now, int32_t* dir,
                            uint32_t* probes) noexcept nogil:
    """Entry whose original or reply tuple is this one, or -1; dir gets the direction."""
    return ct_find_in(t, ct_bucket_of(t, ct_hash(t, sip, sport, dip, dport, proto)),
                      sip, sport, dip, dport, proto, now, dir, probes)


cdef inline int32_t ct_find_in(ct_table_t* t, uint32_t b, uint32_t sip, uint16_t sport,
                               uint32_t dip, uint16_t dport, uint8_t proto, double now,
                               int32_t* dir, uint32_t* probes) noexcept nogil:
    """``ct_find`` in bucket ``b``, the tuple's (a caller that hashed it already).

    Walks the chain of the tuple's bucket; every node inspected is a probe. Like
    ____nf_conntrack_find, an expired entry met on the way is collected (its slot freed)
    and skipped.
    """
    cdef int32_t prev = -1
    cdef int32_t cur = t.buckets[b]
    cdef int d
    cdef ct_entry_t* e
    while cur != -1:
        probes[0] += 1
        e = &t.e[cur >> 1]
        d = cur & 1
        if e.expires <= now:
            ct_free(t, cur >> 1)
            t.st.expired += 1
            cur = ct_chain_next(t, b, prev)
            continue
        if (e.src_ip[d] == sip and e.dst_ip[d] == dip and e.src_port[d] == sport
                and e.dst_port[d] == dport and e.proto == proto):
            dir[0] = d
            return cur >> 1
        prev = cur
        cur = e.next[d]
    dir[0] = -1
    return -1


cdef inline uint32_t ct_nat_bits(const ct_entry_t* e) noexcept nogil:
    cdef uint32_t s = 0
    if e.status & IPS_SRC_NAT:
        s |= CTSTATE_SNAT
    if e.status & IPS_DST_NAT:
        s |= CTSTATE_DNAT
    return s


# ---------------------------------------------------------------------------------------
# protocol trackers

cdef inline int ct_new_state(const ct_table_t* t, const packet_t* p) noexcept nogil:
    """Initial protocol state for a packet with no entry, -1 if it cannot start one.

    TCP (tcp_new): tcp_conntracks[ORIGINAL][index][NONE]: a SYN opens SYN_SENT; a bare ACK
    picks up a connection mid-stream as ESTABLISHED only if tcp_loose; SYN/ACK, FIN, RST or
    no flag are invalid. SCTP starts in COOKIE_WAIT; other protocols always start.
    """
    cdef int s
    if p.proto == PROTO_TCP:
        s = ct_tcp_next(CT_DIR_ORIGINAL, ct_tcp_index(p.tcp_flags), TCP_CT_NONE)
        if s == TCP_CT_MAX or (s == TCP_CT_ESTABLISHED and not t.tcp_loose):
            return -1
        return s
    if p.proto == PROTO_SCTP:
        return SCTP_CT_COOKIE_WAIT
    return 0


cdef inline uint32_t ct_miss_state(const ct_table_t* t, const packet_t* p) noexcept nogil:
    if p.family != FAMILY_V4:
        return CTSTATE_UNTRACKED
    if ct_new_state(t, p) < 0:
        return CTSTATE_INVALID
    return CTSTATE_NEW


cdef inline int ct_packet(ct_table_t* t, int32_t idx, int dir, const packet_t* p) noexcept nogil:
    """The protocol tracker for a packet of entry idx: state machine, status, refresh.

    Returns the ctinfo state (CTSTATE_NEW: original direction before any reply,
    CTSTATE_ESTABLISHED otherwise), CTSTATE_INVALID (entry untouched, packet gets no
    conntrack), or CT_REOPEN (a SYN reopened a TIME_WAIT/CLOSE connection: the entry is
    gone and the packet must be looked up again, i.e. it starts a new connection).
    """
    cdef ct_entry_t* e = &t.e[idx]
    cdef double now = p.ts
    cdef double extra
    cdef int ctinfo = CTSTATE_ESTABLISHED
    cdef int old, new, index
    if dir == CT_DIR_ORIGINAL and not (e.status & IPS_SEEN_REPLY):
        ctinfo = CTSTATE_NEW
    if e.proto == PROTO_TCP:
        old = e.state
        index = ct_tcp_index(p.tcp_flags)
        new = ct_tcp_next(dir, index, old)
        if new == TCP_CT_SYN_SENT and old >= TCP_CT_TIME_WAIT and old <= TCP_CT_CLOSE:
            ct_free(t, idx)     # nf_ct_kill + -NF_REPEAT
            return CT_REOPEN
        if new == TCP_CT_IGNORE:
            return ctinfo       # accepted, state and timeout untouched
        if new == TCP_CT_MAX:
            t.st.invalid += 1
            return CTSTATE_INVALID
        e.state = <uint8_t>new
        if not (e.status & IPS_SEEN_REPLY):
            if p.tcp_flags & TCP_RST:
                # "If only reply is a RST, we can consider ourselves not to have an
                # established connection": killed now (dead for any later packet)
                e.expires = now
                return ctinfo
        elif (not (e.status & IPS_ASSURED)
              and (old == TCP_CT_SYN_RECV or old == TCP_CT_ESTABLISHED)
              and new == TCP_CT_ESTABLISHED):
            e.status |= IPS_ASSURED
        if index == TCP_RST_SET:
            e.expires = now + t.timeouts[TCP_CT_CLOSE]
        else:
            e.expires = now + t.timeouts[new]
    elif e.proto == PROTO_UDP:
        extra = t.timeouts[TO_UDP_UNREPLIED]
        if e.status & IPS_SEEN_REPLY:
            if now > e.created + CT_UDP_STREAM_DELAY:
                extra = t.timeouts[TO_UDP_STREAM]
                e.status |= IPS_ASSURED
        e.expires = now + extra
    elif e.proto == PROTO_SCTP:
        # simplified: no chunk types in packet_t; the 4-way handshake is read from
        # directions: INIT (orig), INIT_ACK (reply), COOKIE_ECHO (orig after a reply),
        # COOKIE_ACK (reply in COOKIE_ECHOED) -> ESTABLISHED, ASSURED
        if e.state == SCTP_CT_COOKIE_WAIT:
            if dir == CT_DIR_ORIGINAL and (e.status & IPS_SEEN_REPLY):
                e.state = SCTP_CT_COOKIE_ECHOED
        elif e.state == SCTP_CT_COOKIE_ECHOED:
            if dir == CT_DIR_REPLY:
                e.state = SCTP_CT_ESTABLISHED
                e.status |= IPS_ASSURED
        if e.state == SCTP_CT_ESTABLISHED:
            e.expires = now + t.timeouts[TO_SCTP_ESTABLISHED]
        elif e.state == SCTP_CT_COOKIE_ECHOED:
            e.expires = now + t.timeouts[TO_SCTP_COOKIE_ECHOED]
        else:
            e.expires = now + t.timeouts[TO_SCTP_COOKIE_WAIT]
    elif e.proto == PROTO_ICMP:
        e.expires = now + t.timeouts[TO_ICMP]
    else:
        e.expires = now + t.timeouts[TO_GENERIC]
    if dir == CT_DIR_REPLY:
        e.status |= IPS_SEEN_REPLY
    return ctinfo


# ---------------------------------------------------------------------------------------
# the per-packet operations

cdef inline void ct_lookup(ct_table_t* t, const packet_t* p, ct_result_t* r) noexcept nogil:
    """``ct_lookup_in`` of the packet's own bucket."""
    ct_lookup_in(t, p, r, ct_tuple_bucket(t, p))


cdef inline void ct_lookup_in(ct_table_t* t, const packet_t* p, ct_result_t* r,
                              uint32_t bucket) noexcept nogil:
    """nf_conntrack_in without the allocation: find the entry (in ``bucket``, the
    tuple's: ``ct_tuple_bucket``), run its tracker.

    Hit: r.entry/r.dir set, r.state = ctinfo | SNAT/DNAT bits. Miss: r.entry = -1 and
    r.state says what the packet would be: CTSTATE_NEW, CTSTATE_INVALID (the tracker would
    refuse it) or CTSTATE_UNTRACKED (not IPv4). A hit that the tracker calls invalid
    reports CTSTATE_INVALID with r.entry = -1 (the packet carries no conntrack).
    """
    cdef int32_t idx, d
    cdef int st
    r.probes = 0
    r.entry = -1
    r.dir = -1
    if p.family != FAMILY_V4:
        r.state = CTSTATE_UNTRACKED
        return
    while True:
        idx = ct_find_in(t, bucket, p.src_ip, p.src_port, p.dst_ip, p.dst_port, p.proto,
                         p.ts, &d, &r.probes)
        if idx < 0:
            r.state = ct_miss_state(t, p)
            break
        st = ct_packet(t, idx, d, p)
        if st == CT_REOPEN:
            continue
        t.st.found += 1
        if st == CTSTATE_INVALID:
            r.state = CTSTATE_INVALID
        else:
            r.entry = idx
            r.dir = d
            r.state = <uint32_t>st | ct_nat_bits(&t.e[idx])
        break
    t.st.searched += r.probes


cdef inline bint ct_early_drop(ct_table_t* t, uint32_t h, double now) noexcept nogil:
    """Make room for one entry (nf_conntrack_core.c early_drop / early_drop_list).

    Scans up to CT_EVICTION_RANGE buckets from the new tuple's bucket; in each, every
    expired entry is collected and every confirmed non-ASSURED entry is evicted. Stops
    after the first bucket that freed anything. (The kernel only counts evictions as
    success; here collected expired entries count too, standing in for the kernel's gc
    worker, which the emulated clock does not run.)
    """
    cdef uint32_t b = ct_bucket_of(t, h)
    cdef uint32_t i
    cdef int32_t prev, cur, idx
    cdef uint64_t freed, drops
    for i in range(CT_EVICTION_RANGE):
        if i > 0:
            b = (b + 1) % t.hsize
        freed = 0
        drops = 0
        prev = -1
        cur = t.buckets[b]
        while cur != -1:
            idx = cur >> 1
            if t.e[idx].expires <= now:
                ct_free(t, idx)
                t.st.expired += 1
                freed += 1
                cur = ct_chain_next(t, b, prev)
                continue
            if not (t.e[idx].status & IPS_ASSURED):
                ct_free(t, idx)
                drops += 1
                cur = ct_chain_next(t, b, prev)
                continue
            prev = cur
            cur = t.e[idx].next[cur & 1]
        t.st.early_drop += drops
        if drops or freed:
            return True
    return False


cdef inline int32_t ct_alloc(ct_table_t* t, const packet_t* p) noexcept nogil:
    """init_conntrack: a new unconfirmed entry for the packet's tuple, tracker run on it.

    When the table holds max_entries entries, early_drop runs first; if it frees nothing
    the packet must be dropped (CT_ERR_FULL, "nf_conntrack: table full, dropping packet").
    As in the kernel the allocation comes before the tracker's verdict, so a packet the
    tracker refuses (CT_ERR_INVALID) may still have evicted an entry.
    """
    cdef int32_t idx
    cdef int s
    cdef ct_entry_t* e
    if t.count >= t.max_entries:
        if not ct_early_drop(t, ct_hash(t, p.src_ip, p.src_port, p.dst_ip, p.dst_port,
                                        p.proto), p.ts):
            t.st.drop += 1
            return CT_ERR_FULL
    s = ct_new_state(t, p)
    if s < 0:
        t.st.invalid += 1
        return CT_ERR_INVALID
    t.free_top -= 1
    idx = t.free_stack[t.free_top]
    t.count += 1
    if idx >= t.high:
        t.high = idx + 1
    e = &t.e[idx]
    e.src_ip[0] = p.src_ip
    e.dst_ip[0] = p.dst_ip
    e.src_port[0] = p.src_port
    e.dst_port[0] = p.dst_port
    e.src_ip[1] = p.dst_ip
    e.dst_ip[1] = p.src_ip
    e.src_port[1] = p.dst_port
    e.dst_port[1] = p.src_port
    e.next[0] = -1
    e.next[1] = -1
    e.bucket[0] = 0
    e.bucket[1] = 0
    e.proto = p.proto
    e.state = <uint8_t>s
    e.status = 0
    e.endpoint = -1
    e.mark = 0
    e.created = p.ts
    e.expires = p.ts
    e.slot = SLOT_UNCONFIRMED
    ct_packet(t, idx, CT_DIR_ORIGINAL, p)
    return idx


cdef inline void ct_abort(ct_table_t* t, int32_t idx) noexcept nogil:
    """Drop an unconfirmed entry (its packet was dropped before confirm)."""
    if idx >= 0 and idx < t.max_entries and t.e[idx].slot == SLOT_UNCONFIRMED:
        ct_free(t, idx)


cdef inline int32_t ct_confirm(ct_table_t* t, int32_t idx, uint32_t dnat_ip, uint16_t dnat_port,
                               uint32_t snat_ip, uint16_t snat_port, int32_t endpoint,
                               uint32_t mark, double now, uint32_t* probes) noexcept nogil:
    """Bind NAT to an unconfirmed entry and insert it (__nf_conntrack_confirm).

    dnat_ip/dnat_port: the new destination (0 keeps the original field); snat_ip/snat_port:
    the new source. The reply tuple becomes (dnat -> snat); IPS_DST_NAT / IPS_SRC_NAT are
    set when the reply tuple differs from the inverted original. If the original or the
    reply tuple is already in the table the insert fails (CT_ERR_CLASH, entry freed).
    Both clash lookups count their probes.
    """
    cdef ct_entry_t* e = &t.e[idx]
    cdef int32_t d
    cdef uint32_t b0, b1
    if idx < 0 or idx >= t.max_entries or e.slot != SLOT_UNCONFIRMED:
        return CT_ERR_INVALID
    e.src_ip[1] = dnat_ip if dnat_ip != 0 else e.dst_ip[0]
    e.src_port[1] = dnat_port if dnat_port != 0 else e.dst_port[0]
    e.dst_ip[1] = snat_ip if snat_ip != 0 else e.src_ip[0]
    e.dst_port[1] = snat_port if snat_port != 0 else e.src_port[0]
    e.status |= IPS_CONFIRMED | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
    if e.src_ip[1] != e.dst_ip[0] or e.src_port[1] != e.dst_port[0]:
        e.status |= IPS_DST_NAT
    if e.dst_ip[1] != e.src_ip[0] or e.dst_port[1] != e.src_port[0]:
        e.status |= IPS_SRC_NAT
    e.endpoint = endpoint
    e.mark = mark
    if (ct_find(t, e.src_ip[0], e.src_port[0], e.dst_ip[0], e.dst_port[0], e.proto, now, &d,
                probes) >= 0
            or ct_find(t, e.src_ip[1], e.src_port[1], e.dst_ip[1], e.dst_port[1], e.proto, now,
                       &d, probes) >= 0):
        ct_free(t, idx)
        t.st.insert_failed += 1
        return CT_ERR_CLASH
    b0 = ct_bucket_of(t, ct_hash(t, e.src_ip[0], e.src_port[0], e.dst_ip[0], e.dst_port[0],
                                 e.proto))
    b1 = ct_bucket_of(t, ct_hash(t, e.src_ip[1], e.src_port[1], e.dst_ip[1], e.dst_port[1],
                                 e.proto))
    e.bucket[0] = b0
    e.next[0] = t.buckets[b0]
    t.buckets[b0] = 2 * idx
    e.bucket[1] = b1
    e.next[1] = t.buckets[b1]
    t.buckets[b1] = 2 * idx + 1
    e.slot = SLOT_CONFIRMED
    t.st.inserted += 1
    return idx


cdef inline void ct_translate(const ct_table_t* t, int32_t idx, int dir, uint32_t* src_ip,
                              uint16_t* src_port, uint32_t* dst_ip,
                              uint16_t* dst_port) noexcept nogil:
    """The packet's tuple after NAT: the other direction's tuple inverted.

    Original direction: destination -> DNAT target, source -> SNAT source. Reply
    direction (un-NAT): source -> the original destination, destination -> the original
    source.
    """
    cdef const ct_entry_t* e = &t.e[idx]
    cdef int o = 1 - dir
    src_ip[0] = e.dst_ip[o]
    src_port[0] = e.dst_port[o]
    dst_ip[0] = e.src_ip[o]
    dst_port[0] = e.src_port[o]
