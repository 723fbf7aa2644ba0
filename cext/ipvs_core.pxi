# ipvs_core.pxi: IPVS lookups, schedulers and connection table over an ipvs_table_t
# (structs and semantics: ipvs_core.pxd). Included by vstable.pxi, itself included by
# chains.pyx only.
from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport (packet_t, verdict_t, ACT_DNAT, ACT_DROP, ACT_REJECT, PROTO_SCTP,
                     PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN)

# ---------------------------------------------------------------------------------------
# hashes

cdef inline uint32_t rol32(uint32_t w, int s) noexcept nogil:
    return (w << s) | (w >> (32 - s))


cdef inline uint64_t rol64(uint64_t w, int s) noexcept nogil:
    return (w << s) | (w >> (64 - s))


cdef inline uint32_t jhash_3words(uint32_t a, uint32_t b, uint32_t c,
                                  uint32_t initval) noexcept nogil:
    """include/linux/jhash.h (a, b += JHASH_INITVAL; c += initval; __jhash_final)."""
    a += 0xdeadbeefU
    b += 0xdeadbeefU
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


cdef inline uint32_t hsiphash32(uint32_t v, uint64_t k0, uint64_t k1) noexcept nogil:
    """lib/siphash.c on 64-bit (HalfSipHash is SipHash-1-3 there) of a 4-byte input."""
    cdef uint64_t v0 = <uint64_t>0x736f6d6570736575ULL ^ k0
    cdef uint64_t v1 = <uint64_t>0x646f72616e646f6dULL ^ k1
    cdef uint64_t v2 = <uint64_t>0x6c7967656e657261ULL ^ k0
    cdef uint64_t v3 = <uint64_t>0x7465646279746573ULL ^ k1
    cdef uint64_t b = (<uint64_t>4 << 56) | v
    cdef int i
    v3 ^= b
    for i in range(4):
        if i == 1:
            v0 ^= b
            v2 ^= 0xff
        v0 += v1
        v1 = rol64(v1, 13)
        v1 ^= v0
        v0 = rol64(v0, 32)
        v2 += v3
        v3 = rol64(v3, 16)
        v3 ^= v2
        v0 += v3
        v3 = rol64(v3, 21)
        v3 ^= v0
        v2 += v1
        v1 = rol64(v1, 17)
        v1 ^= v2
        v2 = rol64(v2, 32)
    return <uint32_t>((v0 ^ v1) ^ (v2 ^ v3))


cdef inline uint32_t svc_hashkey(const ipvs_table_t* t, uint8_t proto, uint32_t addr,
                                 uint16_t port) noexcept nogil:
    """ip_vs_svc_hashkey: (proto ^ (addr ^ rnd) ^ (port >> bits) ^ port) & mask."""
    cdef uint32_t porth = port
    return (proto ^ (addr ^ t.svc_rnd) ^ (porth >> t.svc_bits) ^ porth) & t.svc_mask


cdef inline uint32_t conn_hashkey(const ipvs_table_t* t, uint8_t proto, uint32_t caddr,
                                  uint16_t cport) noexcept nogil:
    return jhash_3words(caddr, cport, proto, t.conn_rnd) & t.conn_mask


cdef inline uint32_t sh_hashkey(uint32_t addr, uint16_t port, uint32_t offset) noexcept nogil:
    """ip_vs_sh_hashkey: (offset + hash_32(port + addr, 8)) % 256."""
    cdef uint32_t v = <uint32_t>port + addr
    return (offset + ((v * <uint32_t>0x61C88647) >> 24)) % SH_TAB_SIZE


cdef inline uint32_t dh_hashkey(uint32_t addr) noexcept nogil:
    return (addr * <uint32_t>2654435761U) & (DH_TAB_SIZE - 1)


cdef inline uint32_t mh_hashkey(uint32_t addr, uint16_t port, int which,
                                uint32_t offset) noexcept nogil:
    """ip_vs_mh_hashkey: hsiphash(offset + port + addr) with generate_hash_secret's keys
    (hash1: key[0] = key[1] = 2654435761, hash2: 2654446892)."""
    cdef uint64_t key = 2654435761ULL if which == 1 else 2654446892ULL
    return hsiphash32(offset + <uint32_t>port + addr, key, key)


# ---------------------------------------------------------------------------------------
# service lookup

cdef inline int32_t svc_find(const ipvs_table_t* t, uint8_t proto, uint32_t addr,
                             uint16_t port, uint32_t* probes) noexcept nogil:
    cdef int32_t s = t.svc_buckets[svc_hashkey(t, proto, addr, port)]
    cdef const ipvs_svc_t* sv
    while s >= 0:
        probes[0] += 1
        sv = &t.svcs[s]
        if sv.addr == addr and sv.port == port and sv.proto == proto:
            return s
        s = sv.next
    return -1


# ---------------------------------------------------------------------------------------
# schedulers. A destination is "in the list" when DEST_F_LINKED; lists run head -> next.

cdef inline int64_t conn_overhead(const ipvs_dest_t* d) noexcept nogil:
    """ip_vs_dest_conn_overhead: (activeconns << 8) + inactconns."""
    return (<int64_t>d.activeconns << 8) + d.inactconns


cdef inline int32_t sched_rr(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    """ip_vs_rr_schedule: continue after the last pick, wrap once through the head."""
    cdef int32_t last = sv.cur, d
    cdef int passes = 0
    d = sv.dest_head if last < 0 else t.dests[last].next
    while True:
        while d >= 0:
            if not (t.dests[d].flags & DEST_F_OVERLOAD) and t.dests[d].weight > 0:
                sv.cur = d
                return d
            if d == last:
                return -1
            d = t.dests[d].next
        passes += 1
        if passes >= 2 or last < 0:
            return -1
        d = sv.dest_head


cdef inline int32_t wrr_gcd(int32_t a, int32_t b) noexcept nogil:
    cdef int32_t r
    while b:
        r = a % b
        a = b
        b = r
    return a


cdef inline void wrr_dest_changed(ipvs_table_t* t, ipvs_svc_t* sv, bint init) noexcept nogil:
    """ip_vs_wrr_init_svc / ip_vs_wrr_dest_changed."""
    cdef int32_t d = sv.dest_head, g = 0, mw = 0, w
    while d >= 0:
        w = t.dests[d].weight
        if w > 0:
            g = wrr_gcd(w, g) if g > 0 else w
        if w > mw:
            mw = w
        d = t.dests[d].next
    sv.cur = -1
    sv.di = g if g else 1
    sv.mw = mw - (sv.di - 1)
    if init or sv.cw > sv.mw or not sv.cw:
        sv.cw = sv.mw
    elif sv.di > 1:
        sv.cw = (sv.cw // sv.di) * sv.di + 1


cdef inline int32_t sched_wrr(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    """ip_vs_wrr_schedule (with the last-pass / restart logic)."""
    cdef int32_t d = sv.cur, last = sv.cur, stop = -2
    cdef bint last_pass = False, restarted = False
    if sv.mw == 0:
        return -1
    while True:
        d = sv.dest_head if d < 0 else t.dests[d].next
        while d >= 0:
            if not (t.dests[d].flags & DEST_F_OVERLOAD) and t.dests[d].weight >= sv.cw:
                sv.cur = d
                return d
            if d == stop:
                sv.cur = d
                return -1
            d = t.dests[d].next
        # d is the head again
        sv.cw -= sv.di
        if sv.cw <= 0:
            sv.cw = sv.mw
            if last_pass or last < 0:
                sv.cur = -1
                return -1
            restarted = True
        last_pass = sv.cw <= sv.di
        if last_pass and restarted and last >= 0:
            stop = last


cdef inline int32_t sched_lc(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    cdef int32_t d = sv.dest_head, least = -1
    cdef int64_t loh = 0, doh
    while d >= 0:
        if not (t.dests[d].flags & DEST_F_OVERLOAD) and t.dests[d].weight != 0:
            doh = conn_overhead(&t.dests[d])
            if least < 0 or doh < loh:
                least = d
                loh = doh
        d = t.dests[d].next
    return least


cdef inline int32_t sched_weighted_least(ipvs_table_t* t, ipvs_svc_t* sv,
                                         int kind) noexcept nogil:
    """wlc (kind 0), sed (1), nq (2): least overhead / weight, first positive weight first."""
    cdef int32_t d = sv.dest_head, least = -1
    cdef int64_t loh = 0, doh
    while d >= 0:
        if not (t.dests[d].flags & DEST_F_OVERLOAD) and t.dests[d].weight > 0:
            if kind == 2 and t.dests[d].activeconns == 0:
                return d                      # nq: an idle server is taken at once
            least = d
            loh = conn_overhead(&t.dests[d]) if kind == 0 else t.dests[d].activeconns + 1
            break
        d = t.dests[d].next
    if least < 0:
        return -1
    d = t.dests[d].next
    while d >= 0:
        if t.dests[d].flags & DEST_F_OVERLOAD or (kind == 2 and t.dests[d].weight == 0):
            d = t.dests[d].next
            continue
        if kind == 2 and t.dests[d].activeconns == 0:
            return d
        doh = conn_overhead(&t.dests[d]) if kind == 0 else t.dests[d].activeconns + 1
        if loh * t.dests[d].weight > doh * t.dests[least].weight:
            least = d
            loh = doh
        d = t.dests[d].next
    return least


cdef inline int32_t lblc_least(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    """__ip_vs_lblc_schedule / __ip_vs_lblcr_schedule: weighted least connections over the
    service (a destination with weight 0 never wins: loh * 0 > doh * w is false)."""
    cdef int32_t d = sv.dest_head, least = -1
    cdef int64_t loh = 0, doh
    while d >= 0:
        if not (t.dests[d].flags & DEST_F_OVERLOAD) and t.dests[d].weight > 0:
            least = d
            loh = conn_overhead(&t.dests[d])
            break
        d = t.dests[d].next
    if least < 0:
        return -1
    d = t.dests[d].next
    while d >= 0:
        if not (t.dests[d].flags & DEST_F_OVERLOAD):
            doh = conn_overhead(&t.dests[d])
            if loh * t.dests[d].weight > doh * t.dests[least].weight:
                least = d
                loh = doh
        d = t.dests[d].next
    return least


cdef inline bint lblc_overloaded(ipvs_table_t* t, ipvs_svc_t* sv, int32_t dest) noexcept nogil:
    """is_overloaded (lblc/lblcr): more active connections than weight while some server
    of the service runs below half its weight."""
    cdef int32_t d
    if t.dests[dest].activeconns > t.dests[dest].weight:
        d = sv.dest_head
        while d >= 0:
            if t.dests[d].activeconns * 2 < t.dests[d].weight:
                return True
            d = t.dests[d].next
    return False


cdef inline int32_t sched_lblc(ipvs_table_t* t, ipvs_svc_t* sv, double now) noexcept nogil:
    cdef int32_t dest = -1
    if sv.cache_dest >= 0 and now - sv.cache_lastuse > t.lblc_expiration:
        sv.cache_dest = -1                    # ip_vs_lblc_full_check collected it
    if sv.cache_dest >= 0:
        sv.cache_lastuse = now
        dest = sv.cache_dest
        if (t.dests[dest].flags & DEST_F_AVAILABLE) and t.dests[dest].weight > 0 \
                and not lblc_overloaded(t, sv, dest):
            return dest
    dest = lblc_least(t, sv)
    if dest < 0:
        return -1
    sv.cache_dest = dest                      # ip_vs_lblc_new: new entry or new dest
    sv.cache_lastuse = now
    return dest


cdef inline void lblcr_set_insert(ipvs_table_t* t, ipvs_svc_t* sv, int32_t dest,
                                  double now) noexcept nogil:
    if t.dests[dest].in_set:
        return
    t.dests[dest].in_set = 1
    t.dests[dest].set_next = sv.cache_dest    # list_add_rcu: at the head
    sv.cache_dest = dest
    sv.set_size += 1
    sv.set_lastmod = now


cdef inline void lblcr_set_erase(ipvs_table_t* t, ipvs_svc_t* sv, int32_t dest) noexcept nogil:
    cdef int32_t d = sv.cache_dest, prev = -1
    while d >= 0:
        if d == dest:
            if prev < 0:
                sv.cache_dest = t.dests[d].set_next
            else:
                t.dests[prev].set_next = t.dests[d].set_next
            t.dests[d].in_set = 0
            t.dests[d].set_next = -1
            sv.set_size -= 1
            return
        prev = d
        d = t.dests[d].set_next


cdef inline int32_t lblcr_set_min(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    cdef int32_t e = sv.cache_dest, least = -1
    cdef int64_t loh = 0, doh
    while e >= 0:
        if not (t.dests[e].flags & DEST_F_OVERLOAD) and t.dests[e].weight > 0 \
                and (t.dests[e].flags & DEST_F_AVAILABLE):
            least = e
            loh = conn_overhead(&t.dests[e])
            break
        e = t.dests[e].set_next
    if least < 0:
        return -1
    e = t.dests[e].set_next
    while e >= 0:
        if not (t.dests[e].flags & DEST_F_OVERLOAD):
            doh = conn_overhead(&t.dests[e])
            if loh * t.dests[e].weight > doh * t.dests[least].weight \
                    and (t.dests[e].flags & DEST_F_AVAILABLE):
                least = e
                loh = doh
        e = t.dests[e].set_next
    return least


cdef inline int32_t lblcr_set_max(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    cdef int32_t e = sv.cache_dest, most = -1
    cdef int64_t moh = 0, doh
    while e >= 0:
        if t.dests[e].weight > 0:
            most = e
            moh = conn_overhead(&t.dests[e])
            break
        e = t.dests[e].set_next
    if most < 0:
        return -1
    e = t.dests[e].set_next
    while e >= 0:
        doh = conn_overhead(&t.dests[e])
        if moh * t.dests[e].weight < doh * t.dests[most].weight and t.dests[e].weight > 0:
            most = e
            moh = doh
        e = t.dests[e].set_next
    return most


cdef inline void lblcr_flush(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    while sv.cache_dest >= 0:
        lblcr_set_erase(t, sv, sv.cache_dest)
    sv.cache_lastuse = -1


cdef inline int32_t sched_lblcr(ipvs_table_t* t, ipvs_svc_t* sv, double now) noexcept nogil:
    cdef int32_t dest, m
    if sv.cache_lastuse >= 0 and now - sv.cache_lastuse > t.lblcr_expiration:
        lblcr_flush(t, sv)                    # ip_vs_lblcr_full_check collected the entry
    if sv.cache_lastuse >= 0:
        sv.cache_lastuse = now
        dest = lblcr_set_min(t, sv)
        if sv.set_size > 1 and now > sv.set_lastmod + t.lblcr_expiration:
            m = lblcr_set_max(t, sv)
            if m >= 0:
                lblcr_set_erase(t, sv, m)
        if dest >= 0 and not lblc_overloaded(t, sv, dest):
            return dest
        dest = lblc_least(t, sv)
        if dest < 0:
            return -1
        lblcr_set_insert(t, sv, dest, now)
        return dest
    dest = lblc_least(t, sv)
    if dest < 0:
        return -1
    sv.cache_lastuse = now                    # ip_vs_lblcr_new
    sv.set_lastmod = now
    lblcr_set_insert(t, sv, dest, now)
    return dest


cdef inline void hash_table_reassign(ipvs_table_t* t, ipvs_svc_t* sv, bint weighted) noexcept nogil:
    """ip_vs_sh_reassign (weighted: each destination fills ``weight`` buckets, at least
    one) and ip_vs_dh_reassign (one bucket per destination in turn)."""
    cdef int32_t* tab = t.sched_tab + sv.tab
    cdef int32_t d = -1, count = 0, i
    for i in range(SH_TAB_SIZE):
        if sv.dest_head < 0:
            tab[i] = -1
            continue
        if d < 0:
            d = sv.dest_head
        tab[i] = d
        if weighted:
            count += 1
            if count >= t.dests[d].weight:
                d = t.dests[d].next
                count = 0
        else:
            d = t.dests[d].next


cdef inline bint sh_unavailable(const ipvs_dest_t* d) noexcept nogil:
    return d.weight <= 0 or (d.flags & DEST_F_OVERLOAD) != 0


cdef inline int32_t sched_sh(ipvs_table_t* t, ipvs_svc_t* sv, const packet_t* p) noexcept nogil:
    cdef int32_t* tab = t.sched_tab + sv.tab
    cdef uint16_t port = p.src_port if sv.flags & SVC_F_SCHED2 else 0
    cdef int32_t d, i
    cdef uint32_t h = sh_hashkey(p.src_ip, port, 0)
    d = tab[h]
    if not (sv.flags & SVC_F_SCHED1):
        return -1 if d < 0 or sh_unavailable(&t.dests[d]) else d
    # ip_vs_sh_get_fallback: rehash with offsets (offset + ihash) % 256
    if d < 0:
        return -1
    if not sh_unavailable(&t.dests[d]):
        return d
    for i in range(SH_TAB_SIZE):
        d = tab[sh_hashkey(p.src_ip, port, (i + h) % SH_TAB_SIZE)]
        if not sh_unavailable(&t.dests[d]):
            return d
    return -1


cdef inline int32_t sched_dh(ipvs_table_t* t, ipvs_svc_t* sv, const packet_t* p) noexcept nogil:
    cdef int32_t d = (t.sched_tab + sv.tab)[dh_hashkey(p.dst_ip)]
    if d < 0 or not (t.dests[d].flags & DEST_F_AVAILABLE) or t.dests[d].weight <= 0 \
            or (t.dests[d].flags & DEST_F_OVERLOAD):
        return -1
    return d


cdef inline int32_t fls32(uint32_t x) noexcept nogil:
    cdef int32_t n = 0
    while x:
        n += 1
        x >>= 1
    return n


cdef inline void mh_weights(ipvs_table_t* t, ipvs_svc_t* sv) noexcept nogil:
    """ip_vs_mh_gcd_weight and ip_vs_mh_shift_weight (over last_weight)."""
    cdef int32_t d = sv.dest_head, g = 0, mw = 0, w, shift
    while d >= 0:
        w = t.dests[d].last_weight
        if w > 0:
            g = wrr_gcd(w, g) if g > 0 else w
        if w > mw:
            mw = w
        d = t.dests[d].next
    sv.mh_gcd = g
    if g < 1:
        sv.mh_rshift = 0
        return
    shift = fls32(<uint32_t>(mw // g)) - <int32_t>t.mh_bits
    sv.mh_rshift = shift if shift >= 0 else 0


cdef inline int32_t mh_populate(ipvs_table_t* t, ipvs_svc_t* sv, uint32_t* perm,
                                uint32_t* skip, int32_t* turns, uint8_t* used) noexcept nogil:
    """ip_vs_mh_permutate + ip_vs_mh_populate. Scratch arrays hold num_dests entries
    (perm, skip, turns) and mh_size bytes (used). Returns -1 if more dests than slots."""
    cdef int32_t* tab = t.sched_tab + sv.tab
    cdef uint32_t M = t.mh_size, c
    cdef int32_t d, i, n, dt_count, lw, q
    if sv.num_dests > <int32_t>M:
        return -1
    if sv.mh_gcd < 1:
        for i in range(<int32_t>M):
            tab[i] = -1
        return 0
    d = sv.dest_head
    i = 0
    while d >= 0:
        perm[i] = mh_hashkey(t.dests[d].addr, t.dests[d].port, MH_KEY1, 0) % M
        skip[i] = mh_hashkey(t.dests[d].addr, t.dests[d].port, MH_KEY2, 0) % (M - 1) + 1
        lw = t.dests[d].last_weight
        q = (lw // sv.mh_gcd) >> sv.mh_rshift
        turns[i] = q if q else (1 if lw != 0 else 0)
        i += 1
        d = t.dests[d].next
    for i in range(<int32_t>M):
        used[i] = 0
    n = 0
    dt_count = 0
    d = -1
    while n < <int32_t>M:
        if d < 0:
            d = sv.dest_head
            i = 0
        while d >= 0:
            if turns[i] < 1:
                d = t.dests[d].next
                i += 1
                continue
            c = perm[i]
            while used[c]:
                perm[i] += skip[i]
                if perm[i] >= M:
                    perm[i] -= M
                c = perm[i]
            used[c] = 1
            tab[c] = d
            n += 1
            if n == <int32_t>M:
                return 0
            dt_count += 1
            if dt_count >= turns[i]:
                dt_count = 0
                d = t.dests[d].next
                i += 1
    return 0


cdef inline int32_t sched_mh(ipvs_table_t* t, ipvs_svc_t* sv, const packet_t* p) noexcept nogil:
    cdef int32_t* tab = t.sched_tab + sv.tab
    cdef uint16_t port = p.src_port if sv.flags & SVC_F_SCHED2 else 0
    cdef uint32_t M = t.mh_size, ihash, off
    cdef int32_t d
    ihash = mh_hashkey(p.src_ip, port, MH_KEY1, 0) % M
    d = tab[ihash]
    if not (sv.flags & SVC_F_SCHED1):
        return -1 if d < 0 or sh_unavailable(&t.dests[d]) else d
    if d < 0:
        return -1
    if not sh_unavailable(&t.dests[d]):
        return d
    for off in range(M):                      # ip_vs_mh_get_fallback
        d = tab[mh_hashkey(p.src_ip, port, MH_KEY1, (off + ihash) % M) % M]
        if d < 0:
            return -1
        if not sh_unavailable(&t.dests[d]):
            return d
    return -1


cdef inline int32_t schedule(ipvs_table_t* t, ipvs_svc_t* sv, const packet_t* p,
                             double now) noexcept nogil:
    cdef uint8_t s = sv.sched
    if s == SCHED_RR:
        return sched_rr(t, sv)
    if s == SCHED_WRR:
        return sched_wrr(t, sv)
    if s == SCHED_LC:
        return sched_lc(t, sv)
    if s == SCHED_WLC:
        return sched_weighted_least(t, sv, 0)
    if s == SCHED_SED:
        return sched_weighted_least(t, sv, 1)
    if s == SCHED_NQ:
        return sched_weighted_least(t, sv, 2)
    if s == SCHED_SH:
        return sched_sh(t, sv, p)
    if s == SCHED_DH:
        return sched_dh(t, sv, p)
    if s == SCHED_MH:
        return sched_mh(t, sv, p)
    if s == SCHED_LBLC:
        return sched_lblc(t, sv, now)
    if s == SCHED_LBLCR:
        return sched_lblcr(t, sv, now)
    return -1


# ---------------------------------------------------------------------------------------
# connection table

cdef inline void conn_unbind(ipvs_table_t* t, ipvs_conn_t* c) noexcept nogil:
    """ip_vs_unbind_dest: give back the destination's counter."""
    cdef ipvs_dest_t* d
    if c.dest < 0:
        return
    d = &t.dests[c.dest]
    if c.flags & CONN_F_TEMPLATE:
        d.persistconns -= 1
    elif c.flags & CONN_F_INACTIVE:
        d.inactconns -= 1
    else:
        d.activeconns -= 1


cdef inline void conn_free(ipvs_table_t* t, int32_t i, int32_t prev) noexcept nogil:
    """Unlink entry i (``prev`` its predecessor in the chain, -1 if head) and free it."""
    cdef ipvs_conn_t* c = &t.conns[i]
    if prev < 0:
        t.conn_buckets[c.bucket] = c.next
    else:
        t.conns[prev].next = c.next
    conn_unbind(t, c)
    if c.control >= 0 and t.conns[c.control].gen == c.control_gen:
        t.conns[c.control].n_control -= 1
    c.flags = 0
    c.gen += 1
    c.next = t.conn_free
    t.conn_free = i
    t.conn_count -= 1


cdef inline bint conn_dead(ipvs_table_t* t, ipvs_conn_t* c, double now) noexcept nogil:
    """Has the entry's timer fired (for good) by ``now``? A template controlling live
    connections is re-armed for another timeout each time its timer fires."""
    cdef double k
    if c.expires > now:
        return False
    if (c.flags & CONN_F_TEMPLATE) and c.n_control > 0 and c.ctl_expires > c.expires \
            and c.timeout > 0:
        # the timer fired at expires, expires + timeout, ... and was re-armed each time
        # until the firing that found no controlled connection left
        k = ceil((c.ctl_expires - c.expires) / c.timeout)
        c.expires += k * c.timeout
        if c.expires > now:
            return False
    return True


cdef inline int32_t conn_get(ipvs_table_t* t, uint8_t proto, uint32_t caddr, uint16_t cport,
                             uint32_t vaddr, uint16_t vport, bint template, double now,
                             uint32_t* probes) noexcept nogil:
    """__ip_vs_conn_in_get / ip_vs_ct_in_get; expired entries met on the way are freed."""
    cdef uint32_t b = conn_hashkey(t, proto, caddr, cport)
    cdef int32_t i = t.conn_buckets[b], prev = -1, nxt
    cdef ipvs_conn_t* c
    cdef uint16_t want = CONN_F_TEMPLATE if template else 0
    while i >= 0:
        c = &t.conns[i]
        nxt = c.next
        probes[0] += 1
        if conn_dead(t, c, now):
            conn_free(t, i, prev)
            t.st.expired += 1
            i = nxt
            continue
        if c.caddr == caddr and c.cport == cport and c.vaddr == vaddr and c.vport == vport \
                and c.proto == proto and (c.flags & CONN_F_TEMPLATE) == want:
            return i
        prev = i
        i = nxt
    return -1


cdef inline int32_t conn_new(ipvs_table_t* t, const packet_t* p, uint16_t cport,
                             uint16_t vport, int32_t dest, uint16_t flags,
                             double now) noexcept nogil:
    """ip_vs_conn_new + ip_vs_bind_dest (counters as __ip_vs_update_dest's conn_flags:
    a new connection starts INACTIVE). Returns -1 when the table is full."""
    cdef int32_t i
    cdef ipvs_conn_t* c
    cdef ipvs_dest_t* d = &t.dests[dest]
    if t.conn_free >= 0:
        i = t.conn_free
        t.conn_free = t.conns[i].next
    elif t.conn_high < t.conn_cap:
        i = t.conn_high
        t.conn_high += 1
    else:
        t.st.noroom += 1
        return -1
    c = &t.conns[i]
    c.caddr = p.src_ip
    c.cport = cport
    c.vaddr = p.dst_ip
    c.vport = vport
    c.daddr = d.addr
    c.dport = d.port if d.port else vport
    c.proto = p.proto
    c.state = TCP_S_NONE
    c.dest = dest
    c.endpoint = d.endpoint
    c.control = -1
    c.n_control = 0
    c.ctl_expires = 0
    c.timeout = 3                             # ip_vs_conn_new: 3*HZ until a state sets it
    c.expires = now + 3
    c.flags = CONN_F_USED | flags
    if flags & CONN_F_TEMPLATE:
        d.persistconns += 1
    else:
        c.flags |= CONN_F_INACTIVE
        d.inactconns += 1
    c.bucket = conn_hashkey(t, p.proto, p.src_ip, cport)
    c.next = t.conn_buckets[c.bucket]
    t.conn_buckets[c.bucket] = i
    t.conn_count += 1
    return i


cdef inline int tcp_state_idx(uint8_t flags) noexcept nogil:
    if flags & TCP_RST:
        return 3
    if flags & TCP_SYN:
        return 0
    if flags & TCP_FIN:
        return 1
    if flags & TCP_ACK:
        return 2
    return -1


cdef inline int tcp_input_next(int idx, int state) noexcept nogil:
    """tcp_states[] INPUT rows (ip_vs_proto_tcp.c), packed 4 bits per state."""
    cdef uint64_t row
    if idx == 0:      # syn: sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
        row = 0x33333333113ULL
    elif idx == 1:    # fin: sCL sCW sSS sTW sTW sTW sCL sCW sLA sLI sTW
        row = 0x59876555276ULL
    elif idx == 2:    # ack: sES sES sSS sES sFW sTW sCL sCW sCL sLI sES
        row = 0x19676541211ULL
    else:             # rst: sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sSR
        row = 0x39866663666ULL
    return <int>((row >> (4 * state)) & 0xF)


cdef inline int tcp_output_next(int idx, int state) noexcept nogil:
    """tcp_states[] OUTPUT rows (ip_vs_proto_tcp.c), packed 4 bits per state."""
    cdef uint64_t row
    if idx == 0:      # syn: sSS sES sSS sSR sSS sSS sSS sSS sSS sLI sSR
        row = 0x39222223212ULL
    elif idx == 1:    # fin: sTW sFW sSS sTW sFW sTW sCL sTW sLA sLI sTW
        row = 0x59856545245ULL
    elif idx == 2:    # ack: sES sES sSS sES sFW sTW sCL sCW sLA sES sES
        row = 0x11876541211ULL
    else:             # rst: sCL sCL sSS sCL sCL sTW sCL sCL sCL sCL sCL
        row = 0x66666566266ULL
    return <int>((row >> (4 * state)) & 0xF)


cdef inline void conn_set_state(ipvs_table_t* t, ipvs_conn_t* c, uint8_t tcp_flags,
                                bint output=False) noexcept nogil:
    """ip_vs_set_state: set_tcp_state (INPUT or OUTPUT rows) / udp / sctp timeouts."""
    cdef int idx, new_state
    cdef ipvs_dest_t* d
    if c.proto == PROTO_TCP:
        idx = tcp_state_idx(tcp_flags)
        if idx < 0:
            return
        new_state = tcp_output_next(idx, c.state) if output else tcp_input_next(idx, c.state)
        if new_state != c.state and c.dest >= 0:
            d = &t.dests[c.dest]
            if not (c.flags & CONN_F_INACTIVE) and new_state != TCP_S_ESTABLISHED:
                d.activeconns -= 1
                d.inactconns += 1
                c.flags |= CONN_F_INACTIVE
            elif (c.flags & CONN_F_INACTIVE) and new_state == TCP_S_ESTABLISHED:
                d.activeconns += 1
                d.inactconns -= 1
                c.flags &= ~CONN_F_INACTIVE
        c.state = new_state
        c.timeout = <uint32_t>t.timeouts[new_state]
    elif c.proto == PROTO_UDP:
        c.timeout = <uint32_t>t.timeouts[TO_UDP]
    else:
        c.timeout = <uint32_t>t.timeouts[TO_SCTP]


cdef inline void conn_put(ipvs_table_t* t, ipvs_conn_t* c, double now) noexcept nogil:
    """ip_vs_conn_put: the timer restarts for the current timeout."""
    c.expires = now + c.timeout
    if c.control >= 0 and t.conns[c.control].gen == c.control_gen \
            and t.conns[c.control].ctl_expires < c.expires:
        t.conns[c.control].ctl_expires = c.expires


cdef inline void conn_expire_now(ipvs_table_t* t, int32_t i, double now) noexcept nogil:
    """ip_vs_conn_expire_now: the timer fires at once (collected at the next lookup)."""
    t.conns[i].expires = now
    t.conns[i].timeout = 0


cdef inline void dnat_to(ipvs_table_t* t, const ipvs_conn_t* c, verdict_t* v) noexcept nogil:
    v.action = ACT_DNAT
    v.dnat_ip = c.daddr
    v.dnat_port = c.dport
    v.endpoint = c.endpoint


cdef inline int ipvs_in(ipvs_table_t* t, const packet_t* p, verdict_t* v) noexcept nogil:
    """ip_vs_in for one client packet at emulated time p.ts; see the module docstring."""
    cdef uint32_t probes = 0
    cdef double now = p.ts
    cdef int32_t ci, si, dest, ct
    cdef ipvs_conn_t* c
    cdef ipvs_svc_t* sv
    cdef bint syn
    if p.proto != PROTO_TCP and p.proto != PROTO_UDP and p.proto != PROTO_SCTP:
        return IPVS_PASS
    ci = conn_get(t, p.proto, p.src_ip, p.src_port, p.dst_ip, p.dst_port, False, now, &probes)
    if ci >= 0:
        c = &t.conns[ci]
        syn = p.proto == PROTO_TCP and (p.tcp_flags & TCP_SYN) != 0    # is_new_conn
        if syn and ((t.expire_nodest_conn and c.dest >= 0 and t.dests[c.dest].weight == 0)
                    or (t.conn_reuse_mode and c.control < 0
                        and (c.state == TCP_S_TIME_WAIT or c.state == TCP_S_CLOSE))):
            if c.n_control == 0:
                conn_expire_now(t, ci, now)
            t.st.nodest += 1
            v.action = ACT_DROP
            v.probes += probes
            return IPVS_DROP
        if c.dest >= 0 and not t.dest_available[c.dest]:
            if t.expire_nodest_conn:          # else the packet is dropped, the entry stays
                conn_expire_now(t, ci, now)
            t.st.nodest += 1
            v.action = ACT_DROP
            v.probes += probes
            return IPVS_DROP
        conn_set_state(t, c, p.tcp_flags)
        conn_put(t, c, now)
        t.st.hits += 1
        dnat_to(t, c, v)
        v.ct_hit = 1
        v.probes += probes
        return IPVS_DNAT
    if p.proto == PROTO_TCP and not ((p.tcp_flags & TCP_SYN) and not (p.tcp_flags & TCP_RST)):
        v.probes += probes
        return IPVS_NOSCHED                   # tcp_conn_schedule: only a SYN looks further
    si = svc_find(t, p.proto, p.dst_ip, p.dst_port, &probes)
    v.probes += probes
    if si < 0:
        return IPVS_PASS
    sv = &t.svcs[si]
    ct = -1
    if sv.flags & SVC_F_PERSISTENT:
        probes = 0
        ct = conn_get(t, p.proto, p.src_ip, 0, p.dst_ip, p.dst_port, True, now, &probes)
        v.probes += probes
        if ct >= 0:
            dest = t.conns[ct].dest
            if dest < 0 or not (t.dests[dest].flags & DEST_F_AVAILABLE) or (
                    t.expire_quiescent_template and t.dests[dest].weight == 0):
                # ip_vs_check_template: invalidate (vport 0xffff never matches again)
                t.conns[ct].vport = 0xffff
                t.conns[ct].dport = 0xffff
                ct = -1
        if ct < 0:
            dest = schedule(t, sv, p, now)
            if dest < 0:
                t.st.unavailable += 1
                v.action = ACT_REJECT
                return IPVS_REJECT
            ct = conn_new(t, p, 0, p.dst_port, dest, CONN_F_TEMPLATE, now)
            if ct < 0:
                v.action = ACT_DROP
                return IPVS_DROP
            t.conns[ct].timeout = sv.timeout
            t.st.templates += 1
    else:
        dest = schedule(t, sv, p, now)
        if dest < 0:
            t.st.unavailable += 1
            v.action = ACT_REJECT
            return IPVS_REJECT
    ci = conn_new(t, p, p.src_port, p.dst_port, dest, 0, now)
    if ci < 0:
        v.action = ACT_DROP
        return IPVS_DROP
    c = &t.conns[ci]
    t.st.conns += 1
    if ct >= 0:
        c.control = ct                        # ip_vs_control_add, then ip_vs_conn_put(ct)
        c.control_gen = t.conns[ct].gen
        t.conns[ct].n_control += 1
        conn_put(t, &t.conns[ct], now)
    conn_set_state(t, c, p.tcp_flags)
    conn_put(t, c, now)
    dnat_to(t, c, v)
    return IPVS_DNAT


cdef inline int ipvs_out(ipvs_table_t* t, const packet_t* p, verdict_t* v) noexcept nogil:
    """ip_vs_out for a reply (real server -> client) at p.ts: the connection whose
    <daddr, dport> is the source and <caddr, cport> the destination (ip_vs_conn_out_get,
    hashed by the client like the original). Found: OUTPUT state transition, timer
    restart, v.snat_ip/snat_port = the virtual address (handle_response), ct_hit.
    Returns IPVS_SNAT, or IPVS_PASS when no connection matches."""
    cdef uint32_t probes = 0
    cdef double now = p.ts
    cdef uint32_t b
    cdef int32_t i, prev = -1, nxt
    cdef ipvs_conn_t* c
    if p.proto != PROTO_TCP and p.proto != PROTO_UDP and p.proto != PROTO_SCTP:
        return IPVS_PASS
    b = conn_hashkey(t, p.proto, p.dst_ip, p.dst_port)
    i = t.conn_buckets[b]
    while i >= 0:
        c = &t.conns[i]
        nxt = c.next
        probes += 1
        if conn_dead(t, c, now):
            conn_free(t, i, prev)
            t.st.expired += 1
            i = nxt
            continue
        if c.daddr == p.src_ip and c.dport == p.src_port and c.caddr == p.dst_ip \
                and c.cport == p.dst_port and c.proto == p.proto \
                and not (c.flags & CONN_F_TEMPLATE):
            conn_set_state(t, c, p.tcp_flags, True)
            conn_put(t, c, now)
            v.snat_ip = c.vaddr
            v.snat_port = c.vport
            v.endpoint = c.endpoint
            v.ct_hit = 1
            v.probes += probes
            return IPVS_SNAT
        prev = i
        i = nxt
    v.probes += probes
    return IPVS_PASS
