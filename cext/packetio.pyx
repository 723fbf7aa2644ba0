# cython: language_level=3
"""Packet text parsing/formatting and IPv4 conversion over typed memoryviews.

The per-byte loops run without the GIL. Errors are not raised here: the parse routines
return an error code, the line index and the byte column, and kproxy_emu/packets.py turns
them into an InputError that names the line and the bad text.

Packet line grammar (ASCII; spaces and tabs anywhere between tokens, a trailing CR ignored)::

    line   := PROTO SP ADDR WS? "->" WS? ADDR (SP OPTION)*
    PROTO  := tcp | udp | sctp | icmp                (case-insensitive)
    ADDR   := IPV4 ":" PORT    for tcp, udp, sctp    (the port is required)
            | IPV4             for icmp              (no port; ports are stored as 0)
    IPV4   := four decimal octets 0-255; leading zeros allowed and read as decimal
              (kube-proxy's ParseIPSloppy)
    PORT   := decimal 0-65535 (0 is accepted: rules can match it, so probes may use it)
    OPTION := "flags=" (one or more of F S R P A, case-insensitive | "none")   tcp only
            | "from=" (pod | external | host)                              (case-insensitive)

A TCP line without flags= carries SYN (it opens a connection); other protocols carry 0.
A line without from= gets the caller's default origin.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t

from packet cimport (
    packet_t, verdict_t, target_t,
    ACT_DNAT, FAMILY_V4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_SCTP,
    ORIGIN_POD, ORIGIN_EXTERNAL, ORIGIN_HOST, ORIGIN_AUTO,
    TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK,
)

include "packet.pxi"

# Error codes returned by parse_packets / parse_ipv4_lines (messages live in packets.py).
E_OK = 0
E_EMPTY = 1
E_PROTO = 2
E_ADDR = 3
E_OCTET = 4
E_PORT = 5
E_PORT_RANGE = 6
E_ARROW = 7
E_TOKEN = 8
E_FLAGS = 9
E_ORIGIN = 10
E_IPV6 = 11
E_ICMP_PORT = 12
E_FLAGS_PROTO = 13
E_DUPLICATE = 14
E_CAPACITY = 15

cdef enum:
    C_OK = 0
    C_EMPTY = 1
    C_PROTO = 2
    C_ADDR = 3
    C_OCTET = 4
    C_PORT = 5
    C_PORT_RANGE = 6
    C_ARROW = 7
    C_TOKEN = 8
    C_FLAGS = 9
    C_ORIGIN = 10
    C_IPV6 = 11
    C_ICMP_PORT = 12
    C_FLAGS_PROTO = 13
    C_DUPLICATE = 14
    C_CAPACITY = 15


def struct_layout():
    """sizeof and field offsets of the shared C structs, as the C compiler laid them out."""
    cdef packet_t p
    cdef verdict_t v
    cdef target_t t
    return {
        "packet_t": {
            "itemsize": sizeof(packet_t),
            "fields": {
                "ts": <Py_ssize_t>(<char*>&p.ts - <char*>&p),
                "src_ip": <Py_ssize_t>(<char*>&p.src_ip - <char*>&p),
                "dst_ip": <Py_ssize_t>(<char*>&p.dst_ip - <char*>&p),
                "src_port": <Py_ssize_t>(<char*>&p.src_port - <char*>&p),
                "dst_port": <Py_ssize_t>(<char*>&p.dst_port - <char*>&p),
                "proto": <Py_ssize_t>(<char*>&p.proto - <char*>&p),
                "tcp_flags": <Py_ssize_t>(<char*>&p.tcp_flags - <char*>&p),
                "origin": <Py_ssize_t>(<char*>&p.origin - <char*>&p),
                "family": <Py_ssize_t>(<char*>&p.family - <char*>&p),
            },
            "sizes": {
                "ts": sizeof(p.ts), "src_ip": sizeof(p.src_ip), "dst_ip": sizeof(p.dst_ip),
                "src_port": sizeof(p.src_port), "dst_port": sizeof(p.dst_port),
                "proto": sizeof(p.proto), "tcp_flags": sizeof(p.tcp_flags),
                "origin": sizeof(p.origin), "family": sizeof(p.family),
            },
        },
        "verdict_t": {
            "itemsize": sizeof(verdict_t),
            "fields": {
                "dnat_ip": <Py_ssize_t>(<char*>&v.dnat_ip - <char*>&v),
                "snat_ip": <Py_ssize_t>(<char*>&v.snat_ip - <char*>&v),
                "dnat_port": <Py_ssize_t>(<char*>&v.dnat_port - <char*>&v),
                "snat_port": <Py_ssize_t>(<char*>&v.snat_port - <char*>&v),
                "endpoint": <Py_ssize_t>(<char*>&v.endpoint - <char*>&v),
                "rules": <Py_ssize_t>(<char*>&v.rules - <char*>&v),
                "probes": <Py_ssize_t>(<char*>&v.probes - <char*>&v),
                "action": <Py_ssize_t>(<char*>&v.action - <char*>&v),
                "ct_hit": <Py_ssize_t>(<char*>&v.ct_hit - <char*>&v),
                "lookups": <Py_ssize_t>(<char*>&v.lookups - <char*>&v),
            },
            "sizes": {
                "dnat_ip": sizeof(v.dnat_ip), "snat_ip": sizeof(v.snat_ip),
                "dnat_port": sizeof(v.dnat_port), "snat_port": sizeof(v.snat_port),
                "endpoint": sizeof(v.endpoint), "rules": sizeof(v.rules),
                "probes": sizeof(v.probes), "action": sizeof(v.action),
                "ct_hit": sizeof(v.ct_hit), "lookups": sizeof(v.lookups),
            },
        },
        "target_t": {
            "itemsize": sizeof(target_t),
            "fields": {
                "ip": <Py_ssize_t>(<char*>&t.ip - <char*>&t),
                "port": <Py_ssize_t>(<char*>&t.port - <char*>&t),
                "proto": <Py_ssize_t>(<char*>&t.proto - <char*>&t),
                "origins": <Py_ssize_t>(<char*>&t.origins - <char*>&t),
            },
            "sizes": {
                "ip": sizeof(t.ip), "port": sizeof(t.port),
                "proto": sizeof(t.proto), "origins": sizeof(t.origins),
            },
        },
    }


# ---------------------------------------------------------------------------------------
# verdict helpers (also prove that numpy arrays pass Cython's buffer format check)

def reset_verdicts(verdict_t[:] out):
    """Set every verdict to ACCEPT, no NAT, endpoint -1, counters 0."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(out.shape[0]):
            verdict_reset(&out[i])


# what check_rows finds wrong with a row (Dataplane.process words the message)
cdef enum:
    C_ROW_OK = 0
    C_ROW_TS_NOT_FINITE = 1
    C_ROW_TS_BEFORE_CLOCK = 2
    C_ROW_TS_DECREASES = 3
    C_ROW_FAMILY = 4
    C_ROW_ORIGIN = 5

ROW_OK = C_ROW_OK
ROW_TS_NOT_FINITE = C_ROW_TS_NOT_FINITE
ROW_TS_BEFORE_CLOCK = C_ROW_TS_BEFORE_CLOCK
ROW_TS_DECREASES = C_ROW_TS_DECREASES
ROW_FAMILY = C_ROW_FAMILY
ROW_ORIGIN = C_ROW_ORIGIN


def check_rows(const packet_t[:] packets, double clock):
    """(index, ROW_*, auto): the first row the pipeline cannot take, or (-1, ROW_OK), and
    whether any row has ORIGIN_AUTO. A row must have ts finite and never below ``clock``
    or the row before, family 4, origin one of ORIGIN_*. One pass without the GIL."""
    cdef Py_ssize_t i = 0
    cdef double prev = clock, ts
    cdef const packet_t* p
    cdef int code = C_ROW_OK
    cdef bint auto = False
    with nogil:
        for i in range(packets.shape[0]):
            p = &packets[i]
            ts = p.ts
            if not (ts - ts == 0.0):  # NaN or infinite
                code = C_ROW_TS_NOT_FINITE
            elif ts < prev:
                code = C_ROW_TS_BEFORE_CLOCK if i == 0 or ts < clock else C_ROW_TS_DECREASES
            elif p.family != FAMILY_V4:
                code = C_ROW_FAMILY
            elif (p.origin != ORIGIN_POD and p.origin != ORIGIN_EXTERNAL
                    and p.origin != ORIGIN_HOST and p.origin != ORIGIN_AUTO):
                code = C_ROW_ORIGIN
            if code != C_ROW_OK:
                break
            auto = auto or p.origin == ORIGIN_AUTO
            prev = ts
    if code == C_ROW_OK:
        i = -1
    return i, code, auto


def _selftest_write(const packet_t[:] packets, verdict_t[:] out):
    """Write a known pattern from C (tests check it through the numpy fields)."""
    cdef Py_ssize_t i, n = min(packets.shape[0], out.shape[0])
    with nogil:
        for i in range(n):
            out[i].action = ACT_DNAT
            out[i].dnat_ip = packets[i].dst_ip
            out[i].dnat_port = packets[i].dst_port
            out[i].snat_ip = packets[i].src_ip
            out[i].snat_port = packets[i].src_port
            out[i].endpoint = <int>i
            out[i].ct_hit = <uint8_t>(i & 1)
            out[i].rules = <uint32_t>(packets[i].proto + packets[i].tcp_flags)
            out[i].probes = <uint32_t>(packets[i].origin * 1000 + packets[i].family)
    return n


# ---------------------------------------------------------------------------------------
# scanning primitives

cdef inline bint is_ws(unsigned char c) noexcept nogil:
    return c == 32 or c == 9 or c == 13


cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline bint word_eq(const unsigned char* p, Py_ssize_t n, const char* word) noexcept nogil:
    """Case-insensitive compare of p[0:n] with the NUL-terminated lowercase word."""
    cdef Py_ssize_t i = 0
    while i < n:
        if word[i] == 0 or lower(p[i]) != <unsigned char>word[i]:
            return False
        i += 1
    return word[n] == 0


cdef inline Py_ssize_t token_end(const unsigned char* s, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    """End of an address token: stops at whitespace, newline or '-' (the arrow)."""
    while pos < end and not is_ws(s[pos]) and s[pos] != 45 and s[pos] != 10:
        pos += 1
    return pos


cdef int parse_ipv4_at(const unsigned char* s, Py_ssize_t* pos, Py_ssize_t end,
                       uint32_t* out) noexcept nogil:
    """Parse a sloppy dotted quad at s[*pos]; on error *pos is the bad column."""
    cdef Py_ssize_t p = pos[0], start
    cdef uint32_t ip = 0, octet
    cdef int k
    for k in range(4):
        if k > 0:
            if p >= end or s[p] != 46:   # '.'
                pos[0] = p
                return C_ADDR
            p += 1
        start = p
        octet = 0
        while p < end and is_digit(s[p]):
            octet = octet * 10 + (s[p] - 48)
            if octet > 255:
                pos[0] = start
                return C_OCTET
            p += 1
        if p == start:
            pos[0] = p
            return C_ADDR
        ip = (ip << 8) | octet
    out[0] = ip
    pos[0] = p
    return C_OK


cdef int classify_bad_addr(const unsigned char* s, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """An address that failed to parse: IPv6 (bracket or two colons) or just bad."""
    cdef Py_ssize_t e = token_end(s, start, end), p
    cdef int colons = 0
    if start < end and s[start] == 91:   # '['
        return C_IPV6
    for p in range(start, e):
        if s[p] == 58:
            colons += 1
    return C_IPV6 if colons >= 2 else C_ADDR


cdef int parse_port_at(const unsigned char* s, Py_ssize_t* pos, Py_ssize_t end,
                       uint16_t* out) noexcept nogil:
    cdef Py_ssize_t p = pos[0], start = pos[0]
    cdef uint32_t v = 0
    while p < end and is_digit(s[p]):
        v = v * 10 + (s[p] - 48)
        if v > 65535:
            return C_PORT_RANGE   # *pos stays at the port's first digit
        p += 1
    if p == start:
        return C_PORT
    out[0] = <uint16_t>v
    pos[0] = p
    return C_OK


cdef int parse_endpoint(const unsigned char* s, Py_ssize_t* pos, Py_ssize_t end, bint ports,
                        uint32_t* ip, uint16_t* port) noexcept nogil:
    """ADDR[:PORT]; on error *pos is the column to report."""
    cdef Py_ssize_t start = pos[0]
    cdef int err = parse_ipv4_at(s, pos, end, ip)
    if err != C_OK:
        if classify_bad_addr(s, start, end) == C_IPV6:
            pos[0] = start
            return C_IPV6
        if err == C_ADDR:
            pos[0] = start
        return err
    # a dotted quad parsed: what follows is a port, the arrow or whitespace (IPv6 is only
    # diagnosed when the address itself did not parse)
    if ports:
        if pos[0] >= end or s[pos[0]] != 58:   # ':'
            if pos[0] < end and not is_ws(s[pos[0]]) and s[pos[0]] != 45:
                pos[0] = start   # junk glued to the address (a fifth octet, a letter)
                return C_ADDR
            return C_PORT
        pos[0] += 1
        start = pos[0]
        err = parse_port_at(s, pos, end, port)
        if err != C_OK:
            return err
        if pos[0] < end and not is_ws(s[pos[0]]) and s[pos[0]] != 45:
            pos[0] = start   # junk after the port digits: report the whole port token
            return C_PORT
    else:
        port[0] = 0
        if pos[0] < end and s[pos[0]] == 58:
            return C_ICMP_PORT
        if pos[0] < end and not is_ws(s[pos[0]]) and s[pos[0]] != 45:
            pos[0] = start
            return C_ADDR
    return C_OK


cdef int parse_flags(const unsigned char* s, Py_ssize_t p, Py_ssize_t e, uint8_t* out) noexcept nogil:
    cdef uint8_t f = 0
    cdef unsigned char c
    if e == p:
        return C_FLAGS
    if word_eq(s + p, e - p, b"none"):
        out[0] = 0
        return C_OK
    while p < e:
        c = lower(s[p])
        if c == 102:     # f
            f |= TCP_FIN
        elif c == 115:   # s
            f |= TCP_SYN
        elif c == 114:   # r
            f |= TCP_RST
        elif c == 112:   # p
            f |= TCP_PSH
        elif c == 97:    # a
            f |= TCP_ACK
        else:
            return C_FLAGS
        p += 1
    out[0] = f
    return C_OK


cdef int parse_line(const unsigned char* s, Py_ssize_t start, Py_ssize_t end,
                    uint8_t default_origin, packet_t* pkt, Py_ssize_t* col) noexcept nogil:
    """Parse s[start:end] into *pkt; on error *col is the byte offset (from start)."""
    cdef Py_ssize_t p = start, q
    cdef uint8_t proto
    cdef bint ports, have_flags = False, have_origin = False
    cdef int err
    cdef uint8_t flags = 0, origin = default_origin

    while p < end and is_ws(s[p]):
        p += 1
    if p >= end:
        col[0] = 0
        return C_EMPTY
    # protocol
    q = p
    while q < end and not is_ws(s[q]):
        q += 1
    if word_eq(s + p, q - p, b"tcp"):
        proto = PROTO_TCP
    elif word_eq(s + p, q - p, b"udp"):
        proto = PROTO_UDP
    elif word_eq(s + p, q - p, b"sctp"):
        proto = PROTO_SCTP
    elif word_eq(s + p, q - p, b"icmp"):
        proto = PROTO_ICMP
    else:
        col[0] = p - start
        return C_PROTO
    ports = proto != PROTO_ICMP
    p = q
    while p < end and is_ws(s[p]):
        p += 1
    # source
    err = parse_endpoint(s, &p, end, ports, &pkt.src_ip, &pkt.src_port)
    if err != C_OK:
        col[0] = p - start
        return err
    while p < end and is_ws(s[p]):
        p += 1
    if p + 1 >= end or s[p] != 45 or s[p + 1] != 62:   # "->"
        col[0] = p - start
        return C_ARROW
    p += 2
    while p < end and is_ws(s[p]):
        p += 1
    # destination
    err = parse_endpoint(s, &p, end, ports, &pkt.dst_ip, &pkt.dst_port)
    if err != C_OK:
        col[0] = p - start
        return err
    # options
    while True:
        while p < end and is_ws(s[p]):
            p += 1
        if p >= end:
            break
        q = p
        while q < end and not is_ws(s[q]):
            q += 1
        if q - p >= 6 and word_eq(s + p, 6, b"flags="):
            if have_flags:
                col[0] = p - start
                return C_DUPLICATE
            if proto != PROTO_TCP:
                col[0] = p - start
                return C_FLAGS_PROTO
            if parse_flags(s, p + 6, q, &flags) != C_OK:
                col[0] = p + 6 - start
                return C_FLAGS
            have_flags = True
        elif q - p >= 5 and word_eq(s + p, 5, b"from="):
            if have_origin:
                col[0] = p - start
                return C_DUPLICATE
            if word_eq(s + p + 5, q - p - 5, b"pod"):
                origin = ORIGIN_POD
            elif word_eq(s + p + 5, q - p - 5, b"external"):
                origin = ORIGIN_EXTERNAL
            elif word_eq(s + p + 5, q - p - 5, b"host"):
                origin = ORIGIN_HOST
            else:
                col[0] = p + 5 - start
                return C_ORIGIN
            have_origin = True
        else:
            col[0] = p - start
            return C_TOKEN
        p = q
    if not have_flags:
        flags = TCP_SYN if proto == PROTO_TCP else 0
    pkt.proto = proto
    pkt.tcp_flags = flags
    pkt.origin = origin
    pkt.family = FAMILY_V4
    return C_OK


def parse_packets(const unsigned char[::1] buf, packet_t[:] out, int default_origin=ORIGIN_AUTO,
                  bint skip_blank=False):
    """Parse newline-separated packet lines from ``buf`` into ``out`` (ts is left alone).

    With ``skip_blank`` empty lines and lines starting with '#' are skipped; otherwise an
    empty line is an error. Returns ``(count, err, line, column, line_start, line_end)``:
    ``count`` packets written; on error ``err`` is an E_* code, ``line`` the 0-based line
    index, ``column`` the 0-based byte offset in that line and ``buf[line_start:line_end]``
    the line's text. ``err`` is 0 when every line parsed.
    """
    cdef Py_ssize_t n = buf.shape[0], cap = out.shape[0]
    cdef Py_ssize_t pos = 0, eol, line = 0, count = 0, col = 0, q
    cdef int err = C_OK
    cdef const unsigned char* s
    cdef uint8_t origin = <uint8_t>default_origin
    cdef packet_t pkt
    if n == 0:
        if skip_blank:
            return (0, 0, 0, 0, 0, 0)
        return (0, C_EMPTY, 0, 0, 0, 0)
    s = &buf[0]
    with nogil:
        while True:
            eol = pos
            while eol < n and s[eol] != 10:
                eol += 1
            if skip_blank:
                q = pos
                while q < eol and is_ws(s[q]):
                    q += 1
                if q == eol or s[q] == 35:   # blank or '#'
                    if eol >= n:
                        break
                    pos = eol + 1
                    line += 1
                    continue
            if count >= cap:
                err = C_CAPACITY
                col = 0
                break
            err = parse_line(s, pos, eol, origin, &pkt, &col)
            if err != C_OK:
                break
            out[count].src_ip = pkt.src_ip
            out[count].dst_ip = pkt.dst_ip
            out[count].src_port = pkt.src_port
            out[count].dst_port = pkt.dst_port
            out[count].proto = pkt.proto
            out[count].tcp_flags = pkt.tcp_flags
            out[count].origin = pkt.origin
            out[count].family = pkt.family
            count += 1
            if eol >= n:
                break
            pos = eol + 1
            line += 1
    if err != C_OK:
        return (count, err, line, col, pos, eol)
    return (count, 0, line, 0, 0, 0)


# ---------------------------------------------------------------------------------------
# IPv4 <-> uint32

def parse_ipv4_lines(const unsigned char[::1] buf, uint32_t[::1] out):
    """Parse newline-separated dotted quads (sloppy: leading zeros read as decimal).

    Returns ``(count, err, index)``: ``err`` is 0 when all ``out.shape[0]`` lines parsed,
    else an E_* code (E_ADDR, E_OCTET, E_IPV6, E_CAPACITY) and the 0-based bad line index.
    """
    cdef Py_ssize_t n = buf.shape[0], cap = out.shape[0]
    cdef Py_ssize_t pos = 0, line = 0, start
    cdef int err = C_OK
    cdef const unsigned char* s
    cdef uint32_t ip
    if cap == 0:
        return (0, 0 if n == 0 else C_CAPACITY, 0)
    if n == 0:
        return (0, C_ADDR, 0)
    s = &buf[0]
    with nogil:
        while True:
            start = pos
            err = parse_ipv4_at(s, &pos, n, &ip)
            if err == C_OK and pos < n and s[pos] != 10:
                err = C_ADDR
            if err != C_OK:
                if classify_bad_addr(s, start, n) == C_IPV6:
                    err = C_IPV6
                break
            if line >= cap:
                err = C_CAPACITY
                break
            out[line] = ip
            line += 1
            if pos >= n:
                break
            pos += 1
    if err == C_OK and line != cap:
        return (line, C_CAPACITY, line)
    return (line, err, line)


cdef inline Py_ssize_t put_u32(char* d, uint32_t v) noexcept nogil:
    """Decimal of v at d (no NUL); returns the length."""
    cdef char tmp[10]
    cdef Py_ssize_t n = 0, i
    if v == 0:
        d[0] = 48
        return 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    for i in range(n):
        d[i] = tmp[n - 1 - i]
    return n


cdef inline Py_ssize_t put_ipv4(char* d, uint32_t ip) noexcept nogil:
    cdef Py_ssize_t n = 0
    n += put_u32(d + n, ip >> 24)
    d[n] = 46
    n += 1
    n += put_u32(d + n, (ip >> 16) & 255)
    d[n] = 46
    n += 1
    n += put_u32(d + n, (ip >> 8) & 255)
    d[n] = 46
    n += 1
    n += put_u32(d + n, ip & 255)
    return n


def format_ipv4(const uint32_t[::1] ips, uint32_t[:, ::1] out):
    """Write each address as UCS4 text into ``out`` (a ``U15`` array viewed as (n, 15) uint32)."""
    cdef Py_ssize_t i, k, n = ips.shape[0], L
    cdef char tmp[16]
    if out.shape[0] < n or out.shape[1] < 15:
        raise ValueError("format_ipv4: output must be (n, 15)")
    with nogil:
        for i in range(n):
            L = put_ipv4(tmp, ips[i])
            for k in range(L):
                out[i, k] = <uint32_t>tmp[k]
            for k in range(L, out.shape[1]):
                out[i, k] = 0


cdef inline Py_ssize_t put_str(char* d, const char* w) noexcept nogil:
    cdef Py_ssize_t n = 0
    while w[n]:
        d[n] = w[n]
        n += 1
    return n


cdef enum:
    # longest line: "sctp " + 2 * "255.255.255.255:65535" + " -> " + " flags=FSRPA" + " from=external"
    MAX_LINE = 96


def format_packets(const packet_t[:] packets):
    """Render packets as lines in the parse_packets grammar, joined by newlines (bytes).

    ``flags=`` is written for TCP packets whose flags differ from the default SYN and
    ``from=`` for every origin but AUTO, so parse_packets gives back the same packet
    (ts aside). Unknown protocol numbers are written as ``proto-N`` (not parseable).
    """
    cdef Py_ssize_t n = packets.shape[0], i, L = 0
    cdef bytes res
    cdef char* d
    cdef const packet_t* p
    cdef uint8_t f
    if n == 0:
        return b""
    res = PyBytes_FromStringAndSize(NULL, n * MAX_LINE)
    d = PyBytes_AS_STRING(res)
    with nogil:
        for i in range(n):
            p = &packets[i]
            if i:
                d[L] = 10
                L += 1
            if p.proto == PROTO_TCP:
                L += put_str(d + L, b"tcp ")
            elif p.proto == PROTO_UDP:
                L += put_str(d + L, b"udp ")
            elif p.proto == PROTO_SCTP:
                L += put_str(d + L, b"sctp ")
            elif p.proto == PROTO_ICMP:
                L += put_str(d + L, b"icmp ")
            else:
                L += put_str(d + L, b"proto-")
                L += put_u32(d + L, p.proto)
                d[L] = 32
                L += 1
            L += put_ipv4(d + L, p.src_ip)
            if p.proto != PROTO_ICMP:
                d[L] = 58
                L += 1
                L += put_u32(d + L, p.src_port)
            L += put_str(d + L, b" -> ")
            L += put_ipv4(d + L, p.dst_ip)
            if p.proto != PROTO_ICMP:
                d[L] = 58
                L += 1
                L += put_u32(d + L, p.dst_port)
            if p.proto == PROTO_TCP and p.tcp_flags != TCP_SYN:
                L += put_str(d + L, b" flags=")
                f = p.tcp_flags
                if (f & (TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK)) == 0:
                    L += put_str(d + L, b"none")
                else:
                    if f & TCP_FIN:
                        d[L] = 70
                        L += 1
                    if f & TCP_SYN:
                        d[L] = 83
                        L += 1
                    if f & TCP_RST:
                        d[L] = 82
                        L += 1
                    if f & TCP_PSH:
                        d[L] = 80
                        L += 1
                    if f & TCP_ACK:
                        d[L] = 65
                        L += 1
            if p.origin == ORIGIN_POD:
                L += put_str(d + L, b" from=pod")
            elif p.origin == ORIGIN_EXTERNAL:
                L += put_str(d + L, b" from=external")
            elif p.origin == ORIGIN_HOST:
                L += put_str(d + L, b" from=host")
    return res[:L]
