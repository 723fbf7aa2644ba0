# cython: language_level=3
"""Sequential core of the traffic generator (kproxy_emu.packets.synth).

Every random number is drawn beforehand by numpy from one seeded Generator, so the output
depends only on the seed and the arguments. This loop only turns uniforms into packets,
which is sequential because a repeated packet reuses a flow opened earlier.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t, target_t, FAMILY_V4, PROTO_ICMP, PROTO_TCP, TCP_ACK, TCP_SYN
include "hashing.pxi"

cdef enum:
    EPHEMERAL_LOW = 32768     # Linux net.ipv4.ip_local_port_range default: 32768 60999
    EPHEMERAL_COUNT = 28232   # 60999 - 32768 + 1

    PORT_TRIES = 64           # source-port search length for a fresh 5-tuple

EPHEMERAL_PORT_LOW = EPHEMERAL_LOW
EPHEMERAL_PORT_HIGH = EPHEMERAL_LOW + EPHEMERAL_COUNT - 1

cdef enum:
    # rows of the uniform matrix ``u`` passed to generate()
    U_NEW = 0        # new flow or repeat
    U_PICK = 1       # which earlier flow (repeat) or which target (new flow)
    U_ORIGIN = 2     # origin of a new flow
    U_SRC_IP = 3     # source address of a new flow
    U_SRC_PORT = 4   # ephemeral source port of a new flow
    U_ROWS = 5

UNIFORM_ROWS = U_ROWS


cdef inline Py_ssize_t cum_pick(const double* cum, Py_ssize_t lo, Py_ssize_t hi,
                                double x) noexcept nogil:
    """Smallest k in [lo, hi) with cum[k] > x (cum non-decreasing); hi - 1 if none."""
    cdef Py_ssize_t a = lo, b = hi - 1, m
    while a < b:
        m = (a + b) >> 1
        if cum[m] > x:
            b = m
        else:
            a = m + 1
    return a


cdef inline bint tuple_insert(uint64_t* tab, uint64_t mask, uint64_t a, uint64_t b) noexcept nogil:
    """Add the 5-tuple key (a, b) to the open-addressing set; False if it was there.

    b is never 0 for a real key (it holds the protocol number), so b == 0 marks a free slot.
    """
    cdef uint64_t h = mix64(a ^ mix64(b)) & mask
    while True:
        if tab[2 * h + 1] == 0:
            tab[2 * h] = a
            tab[2 * h + 1] = b
            return True
        if tab[2 * h] == a and tab[2 * h + 1] == b:
            return False
        h = (h + 1) & mask


cdef inline uint64_t key_b(uint16_t sport, uint16_t dport, uint8_t proto) noexcept nogil:
    return (<uint64_t>sport << 24) | (<uint64_t>dport << 8) | proto


cpdef Py_ssize_t new_flow_count(const double[:, ::1] u, Py_ssize_t n, double new_flow_share):
    """How many of the n packets generate() will make open a flow (size its ``seen``)."""
    cdef Py_ssize_t i, c = 0
    if n <= 0:
        return 0
    if u.shape[0] < U_ROWS or u.shape[1] < n:
        raise ValueError("new_flow_count: u too short")
    with nogil:
        c = 1
        for i in range(1, n):
            if u[U_NEW, i] < new_flow_share:
                c += 1
    return c


def generate(packet_t[:] out, const double[:, ::1] u, const double[::1] gaps, double start,
             double new_flow_share, const target_t[:] targets,
             const double[::1] origin_cum,
             const double[::1] tgt_cum, const int64_t[::1] tgt_index, const int64_t[::1] tgt_off,
             const uint32_t[::1] src_base, const double[::1] src_cum, const int64_t[::1] src_off,
             int64_t[::1] flow_first, uint64_t[:, ::1] seen):
    """Fill ``out`` with ``out.shape[0]`` packets; returns ``(flows, reused)``.

    A new flow gets a 5-tuple no earlier flow has: its source port starts at a random
    ephemeral port and steps up (wrapping) for up to PORT_TRIES ports, as connect() looks for
    a free port; ``reused`` counts new flows that found none and kept a used 5-tuple.

    u            (U_ROWS, n) uniforms in [0, 1)
    gaps         (n,) inter-arrival times; packet i is at start + sum(gaps[:i])
    origin_cum   (3,) cumulative origin weights (pod, external, host)
    tgt_cum      per-origin segments tgt_cum[tgt_off[o]:tgt_off[o+1]] of cumulative target
                 weights (restarting at each segment); tgt_index maps them to targets
    src_base     first address of each source range; src_cum per-origin segments
                 src_cum[src_off[o]:src_off[o+1]] of cumulative range sizes
    flow_first   (n,) scratch: packet index that opened each flow
    seen         (2**k, 2) zeroed scratch set of 5-tuples, 2**k >= 2 * new_flow_count()

    The caller guarantees each origin with positive weight has a non-empty target and
    source segment.
    """
    cdef Py_ssize_t n = out.shape[0], i, k, t, r, nflows = 0
    cdef double t_now = start, x, total_origin
    cdef int o, last_origin = -1
    cdef double off
    cdef const packet_t* prev
    cdef packet_t* p
    cdef uint8_t proto
    cdef uint64_t mask = <uint64_t>seen.shape[0] - 1, a
    cdef uint64_t* tab
    cdef Py_ssize_t reused = 0
    cdef int port0, tries
    if u.shape[0] < U_ROWS or u.shape[1] < n or gaps.shape[0] < n or flow_first.shape[0] < n:
        raise ValueError("generate: input arrays too short")
    if seen.shape[0] < 2 * new_flow_count(u, n, new_flow_share) \
            or seen.shape[0] & (seen.shape[0] - 1) or seen.shape[1] != 2:
        raise ValueError("generate: seen must be (2**k, 2) with 2**k >= 2 * new flows")
    tab = &seen[0, 0]
    if origin_cum.shape[0] != 3 or tgt_off.shape[0] != 4 or src_off.shape[0] != 4:
        raise ValueError("generate: bad per-origin tables")
    total_origin = origin_cum[2]
    for o in range(3):
        if origin_cum[o] > (origin_cum[o - 1] if o > 0 else 0.0):
            if tgt_off[o + 1] <= tgt_off[o] or src_off[o + 1] <= src_off[o]:
                raise ValueError("generate: origin with weight but no targets or sources")
            last_origin = o
    if n > 0 and last_origin < 0:
        raise ValueError("generate: no origin has weight")
    with nogil:
        for i in range(n):
            p = &out[i]
            p.ts = t_now
            t_now += gaps[i]
            if i == 0 or u[U_NEW, i] < new_flow_share:
                # new flow: origin, then target among that origin's eligible ones
                x = u[U_ORIGIN, i] * total_origin
                o = 0
                while o < last_origin and not (origin_cum[o] > x):
                    o += 1
                k = cum_pick(&tgt_cum[0], tgt_off[o], tgt_off[o + 1],
                             u[U_PICK, i] * tgt_cum[tgt_off[o + 1] - 1])
                t = tgt_index[k]
                proto = targets[t].proto
                p.dst_ip = targets[t].ip
                p.dst_port = targets[t].port
                p.proto = proto
                p.origin = <uint8_t>o
                p.family = FAMILY_V4
                # source address: uniform over the origin's ranges, weighted by size
                x = src_cum[src_off[o + 1] - 1]
                off = <double>(<int64_t>(u[U_SRC_IP, i] * x))
                if off >= x:   # u * total rounded up to total
                    off = x - 1
                r = cum_pick(&src_cum[0], src_off[o], src_off[o + 1], off)
                if r > src_off[o]:
                    off -= src_cum[r - 1]
                p.src_ip = src_base[r] + <uint32_t>off
                a = (<uint64_t>p.src_ip << 32) | p.dst_ip
                if proto == PROTO_ICMP:
                    p.src_port = 0
                    p.tcp_flags = 0
                    if not tuple_insert(tab, mask, a, key_b(0, p.dst_port, proto)):
                        reused += 1
                else:
                    port0 = <int>(u[U_SRC_PORT, i] * EPHEMERAL_COUNT)
                    if port0 >= EPHEMERAL_COUNT:
                        port0 = EPHEMERAL_COUNT - 1
                    for tries in range(PORT_TRIES):
                        p.src_port = <uint16_t>(EPHEMERAL_LOW + (port0 + tries) % EPHEMERAL_COUNT)
                        if tuple_insert(tab, mask, a, key_b(p.src_port, p.dst_port, proto)):
                            break
                    else:
                        p.src_port = <uint16_t>(EPHEMERAL_LOW + port0)
                        reused += 1
                    p.tcp_flags = TCP_SYN if proto == PROTO_TCP else 0
                flow_first[nflows] = i
                nflows += 1
            else:
                # repeat: uniformly among the flows opened so far
                k = <Py_ssize_t>(u[U_PICK, i] * nflows)
                if k >= nflows:
                    k = nflows - 1
                prev = &out[flow_first[k]]
                p.src_ip = prev.src_ip
                p.dst_ip = prev.dst_ip
                p.src_port = prev.src_port
                p.dst_port = prev.dst_port
                p.proto = prev.proto
                p.origin = prev.origin
                p.family = prev.family
                p.tcp_flags = TCP_ACK if prev.proto == PROTO_TCP else 0
    return nflows, reused
