# conntrack.pxi: the connection tracking table (IPv4), after Linux nf_conntrack.
# Included by pipeline.pyx only; Python imports it as kproxy_emu._cext.conntrack (a
# re-export). Why one extension: the pipeline calls the per-packet functions
# (conntrack_core.pxi, nogil over a ct_table_t) for every packet, and compiled into the
# same module they inline; across modules each was a vtable call (docs/engine.md).
#
# ``ConntrackTable`` wraps the per-packet functions with batch loops and inspection
# helpers. The pure-Python twin is kproxy_emu/dataplane/conntrack_ref.py (same API, same
# results).
# What is modelled and what is simplified: kproxy_emu/_cext/conntrack.py's docstring.
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from packet cimport packet_t, verdict_t, ACT_DNAT, ACT_DROP, ACT_ACCEPT, FAMILY_V4
from conntrack_core cimport *

# --------------------------------------------------------------------------------------
# Python-visible constants

DIR_ORIGINAL = CT_DIR_ORIGINAL
DIR_REPLY = CT_DIR_REPLY

STATE_INVALID = CTSTATE_INVALID
STATE_ESTABLISHED = CTSTATE_ESTABLISHED
STATE_RELATED = CTSTATE_RELATED
STATE_NEW = CTSTATE_NEW
STATE_UNTRACKED = CTSTATE_UNTRACKED
STATE_SNAT = CTSTATE_SNAT
STATE_DNAT = CTSTATE_DNAT

STATUS_SEEN_REPLY = IPS_SEEN_REPLY
STATUS_ASSURED = IPS_ASSURED
STATUS_CONFIRMED = IPS_CONFIRMED
STATUS_SRC_NAT = IPS_SRC_NAT
STATUS_DST_NAT = IPS_DST_NAT
STATUS_SRC_NAT_DONE = IPS_SRC_NAT_DONE
STATUS_DST_NAT_DONE = IPS_DST_NAT_DONE

ERR_FULL = CT_ERR_FULL
ERR_INVALID = CT_ERR_INVALID
ERR_CLASH = CT_ERR_CLASH

EVICTION_RANGE = CT_EVICTION_RANGE

TCP_STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                   "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
SCTP_STATE_NAMES = {0: "NONE", 2: "COOKIE_WAIT", 3: "COOKIE_ECHOED", 4: "ESTABLISHED"}

# kernel defaults (net.netfilter.nf_conntrack_* sysctls), seconds
DEFAULT_TIMEOUTS = {
    "tcp_timeout_syn_sent": 120.0,
    "tcp_timeout_syn_recv": 60.0,
    "tcp_timeout_established": 432000.0,
    "tcp_timeout_fin_wait": 120.0,
    "tcp_timeout_close_wait": 60.0,
    "tcp_timeout_last_ack": 30.0,
    "tcp_timeout_time_wait": 120.0,
    "tcp_timeout_close": 10.0,
    "udp_timeout": 30.0,
    "udp_timeout_stream": 120.0,
    "sctp_timeout_cookie_wait": 3.0,
    "sctp_timeout_cookie_echoed": 3.0,
    "sctp_timeout_established": 210.0,
    "icmp_timeout": 30.0,
    "generic_timeout": 600.0,
}

# what kube-proxy writes by default (KubeProxyConntrackConfiguration: tcpEstablishedTimeout
# 24h, tcpCloseWaitTimeout 1h; udp timeouts left alone)
KUBE_PROXY_TIMEOUTS = {
    "tcp_timeout_established": 86400.0,
    "tcp_timeout_close_wait": 3600.0,
}

ENTRY_DTYPE = np.dtype([
    ("id", "i4"),
    ("proto", "u1"),
    ("state", "u1"),            # TCP_STATE_NAMES index / SCTP state / 0
    ("confirmed", "?"),
    ("status", "u4"),           # STATUS_* bits
    ("orig_src_ip", "u4"), ("orig_src_port", "u2"),
    ("orig_dst_ip", "u4"), ("orig_dst_port", "u2"),
    ("reply_src_ip", "u4"), ("reply_src_port", "u2"),
    ("reply_dst_ip", "u4"), ("reply_dst_port", "u2"),
    ("dnat_ip", "u4"), ("dnat_port", "u2"),     # 0 when the entry has no DNAT
    ("snat_ip", "u4"), ("snat_port", "u2"),     # 0 when the entry has no SNAT
    ("endpoint", "i4"),
    ("mark", "u4"),
    ("expires", "f8"),
])

STATS_KEYS = ("found", "searched", "inserted", "invalid", "drop", "early_drop",
              "insert_failed", "expired")

_ENTRY_BYTES = sizeof(ct_entry_t)


def tcp_transition(int dir, int index, int old_state):
    """tcp_conntracks[dir][index][old_state] (10: sIV invalid, 11: sIG ignore)."""
    if not (0 <= dir <= 1 and 0 <= index <= 5 and 0 <= old_state <= 9):
        raise ValueError("dir 0-1, index 0-5, old_state 0-9")
    return ct_tcp_next(dir, index, old_state)


def tcp_flag_index(int flags):
    """get_conntrack_index for a packet_t.tcp_flags byte."""
    return ct_tcp_index(<uint8_t>flags)


def tuple_hash(uint32_t src_ip, uint16_t src_port, uint32_t dst_ip, uint16_t dst_port,
               uint8_t proto, uint64_t seed):
    """The 32-bit seeded tuple hash the table uses."""
    cdef ct_table_t t
    t.seed = seed
    return ct_hash(&t, src_ip, src_port, dst_ip, dst_port, proto)


cdef inline double _timeout(dict values, str name) except -1.0:
    v = float(values[name])
    if not (v >= 0.0) or v == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {values[name]!r}")
    return v


cdef class ConntrackTable:
    """The node's conntrack table: ``max_entries`` (nf_conntrack_max) slots, ``seed`` for
    the tuple hash, ``buckets`` (nf_conntrack_buckets, default max_entries), timeouts in
    seconds (kernel defaults; pass ``**KUBE_PROXY_TIMEOUTS`` for kube-proxy's), and
    ``tcp_loose`` (nf_conntrack_tcp_loose: pick up mid-stream TCP connections)."""

    def __cinit__(self, max_entries, seed, *, buckets=None, tcp_loose=True, **timeouts):
        cdef int i
        if isinstance(max_entries, bool) or int(max_entries) != max_entries \
                or not (1 <= int(max_entries) < (1 << 30)):
            raise ValueError(f"max_entries must be an integer in 1..2**30-1, got {max_entries!r}")
        if isinstance(seed, bool) or int(seed) != seed or not (0 <= int(seed) < (1 << 64)):
            raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
        n = int(max_entries)
        hs = n if buckets is None else buckets
        if isinstance(hs, bool) or int(hs) != hs or not (1 <= int(hs) < (1 << 30)):
            raise ValueError(f"buckets must be an integer in 1..2**30-1, got {buckets!r}")
        unknown = set(timeouts) - set(DEFAULT_TIMEOUTS)
        if unknown:
            raise TypeError(f"unknown timeout parameter(s): {', '.join(sorted(unknown))}")
        vals = dict(DEFAULT_TIMEOUTS)
        vals.update(timeouts)
        self.timeouts = {k: _timeout(vals, k) for k in DEFAULT_TIMEOUTS}
        self.seed_value = int(seed)

        self._entries = np.zeros(n * sizeof(ct_entry_t), np.uint8)
        self._buckets = np.full(int(hs), -1, np.int32)
        self._free = np.arange(n - 1, -1, -1, dtype=np.int32)   # pops 0, 1, 2, ...
        cdef uint8_t[::1] ev = self._entries
        cdef int32_t[::1] bv = self._buckets
        cdef int32_t[::1] fv = self._free
        self.tab.e = <ct_entry_t*>&ev[0]
        self.tab.buckets = &bv[0]
        self.tab.free_stack = &fv[0]
        self.tab.free_top = n
        self.tab.max_entries = n
        self.tab.count = 0
        self.tab.high = 0
        self.tab.hsize = <uint32_t>int(hs)
        self.tab.seed = <uint64_t>int(seed)
        self.tab.tcp_loose = 1 if tcp_loose else 0
        for i in range(TO_COUNT):
            self.tab.timeouts[i] = 0.0
        t = self.timeouts
        self.tab.timeouts[TCP_CT_SYN_SENT] = t["tcp_timeout_syn_sent"]
        self.tab.timeouts[TCP_CT_SYN_RECV] = t["tcp_timeout_syn_recv"]
        self.tab.timeouts[TCP_CT_ESTABLISHED] = t["tcp_timeout_established"]
        self.tab.timeouts[TCP_CT_FIN_WAIT] = t["tcp_timeout_fin_wait"]
        self.tab.timeouts[TCP_CT_CLOSE_WAIT] = t["tcp_timeout_close_wait"]
        self.tab.timeouts[TCP_CT_LAST_ACK] = t["tcp_timeout_last_ack"]
        self.tab.timeouts[TCP_CT_TIME_WAIT] = t["tcp_timeout_time_wait"]
        self.tab.timeouts[TCP_CT_CLOSE] = t["tcp_timeout_close"]
        self.tab.timeouts[TCP_CT_SYN_SENT2] = t["tcp_timeout_syn_sent"]
        self.tab.timeouts[TO_UDP_UNREPLIED] = t["udp_timeout"]
        self.tab.timeouts[TO_UDP_STREAM] = t["udp_timeout_stream"]
        self.tab.timeouts[TO_SCTP_COOKIE_WAIT] = t["sctp_timeout_cookie_wait"]
        self.tab.timeouts[TO_SCTP_COOKIE_ECHOED] = t["sctp_timeout_cookie_echoed"]
        self.tab.timeouts[TO_SCTP_ESTABLISHED] = t["sctp_timeout_established"]
        self.tab.timeouts[TO_ICMP] = t["icmp_timeout"]
        self.tab.timeouts[TO_GENERIC] = t["generic_timeout"]
        self.tab.st.found = 0
        self.tab.st.searched = 0
        self.tab.st.inserted = 0
        self.tab.st.invalid = 0
        self.tab.st.drop = 0
        self.tab.st.early_drop = 0
        self.tab.st.insert_failed = 0
        self.tab.st.expired = 0

    # ----------------------------------------------------------------------------------
    # properties

    @property
    def max_entries(self):
        return self.tab.max_entries

    @property
    def buckets(self):
        return self.tab.hsize

    @property
    def seed(self):
        return self.seed_value

    @property
    def tcp_loose(self):
        return bool(self.tab.tcp_loose)

    # ----------------------------------------------------------------------------------
    # snapshots (what a non-committing trace runs on and rolls back)

    def snapshot(self):
        """The table's whole state, to give back to ``restore`` (entries past the
        high-water mark are still zero and are not copied)."""
        cdef Py_ssize_t used = <Py_ssize_t>self.tab.high * sizeof(ct_entry_t)
        return (self, self._entries[:used].copy(), self._buckets.copy(), self._free.copy(),
                self.tab.free_top, self.tab.count, self.tab.high, dict(self.tab.st))

    def restore(self, snap):
        """Put the table back as ``snapshot`` saw it (ValueError: another table's)."""
        if not isinstance(snap, tuple) or len(snap) != 8 or snap[0] is not self:
            raise ValueError("not a snapshot of this table")
        _, entries, buckets, free, free_top, count, high, st = snap
        cdef Py_ssize_t used = len(entries)
        cdef Py_ssize_t now_used = <Py_ssize_t>self.tab.high * sizeof(ct_entry_t)
        if now_used > used:
            self._entries[used:now_used] = 0
        self._entries[:used] = entries
        self._buckets[:] = buckets
        self._free[:] = free
        self.tab.free_top = free_top
        self.tab.count = count
        self.tab.high = high
        self.tab.st = st

    def prefault(self):
        """Write the unused part of the entry array (zero already) so its pages are
        mapped now: new flows then never pay the page fault of a fresh entry's page, a
        cost of the emulator's memory, not of conntrack (``Dataplane.prepare``)."""
        cdef Py_ssize_t used = <Py_ssize_t>self.tab.high * sizeof(ct_entry_t)
        self._entries[used:] = 0

    def __len__(self):
        """Allocated entries (confirmed + unconfirmed), expired ones not yet collected
        included, like net.netfilter.nf_conntrack_count."""
        return self.tab.count

    def stats(self):
        """Counters named after the kernel's conntrack statistics."""
        s = self.tab.st
        return {"found": s.found, "searched": s.searched, "inserted": s.inserted,
                "invalid": s.invalid, "drop": s.drop, "early_drop": s.early_drop,
                "insert_failed": s.insert_failed, "expired": s.expired}

    # ----------------------------------------------------------------------------------
    # batch paths (nogil)

    def lookup_batch(self, const packet_t[:] packets, uint32_t[:] out_state,
                     int32_t[:] out_entry, int8_t[:] out_dir, uint32_t[:] out_probes=None,
                     *, bint update=True):
        """Look every packet up in order; returns the total probes.

        out_state: ctstate bits (STATE_*); out_entry: entry index, -1 for none; out_dir:
        DIR_ORIGINAL / DIR_REPLY, -1 for none; out_probes (optional): chain nodes
        inspected. With update (the default) each hit runs its tracker (state machine,
        refresh, SEEN_REPLY/ASSURED) exactly as track_batch does; misses create nothing.
        update=False only finds (expired entries met are still collected) and reports
        the state the entry has now.
        """
        cdef Py_ssize_t n = packets.shape[0], i
        cdef ct_result_t r
        cdef uint64_t total = 0
        cdef ct_table_t* t = &self.tab
        cdef bint want_probes = out_probes is not None
        if out_state.shape[0] < n or out_entry.shape[0] < n or out_dir.shape[0] < n or \
                (want_probes and out_probes.shape[0] < n):
            raise ValueError("output arrays shorter than packets")
        with nogil:
            for i in range(n):
                if update:
                    ct_lookup(t, &packets[i], &r)
                else:
                    _peek(t, &packets[i], &r)
                out_state[i] = r.state
                out_entry[i] = r.entry
                out_dir[i] = <int8_t>r.dir
                if want_probes:
                    out_probes[i] = r.probes
                total += r.probes
        return total

    def track_batch(self, const packet_t[:] packets, verdict_t[:] verdicts,
                    uint32_t[:] out_state=None, int32_t[:] out_entry=None,
                    int8_t[:] out_dir=None, const uint32_t[:] marks=None):
        """The whole conntrack path for a batch whose NAT decisions are already known.

        Per packet: lookup (+ tracker). Hit: the stored NAT is written to the verdict
        (dnat_* = rewritten destination, snat_* = rewritten source, 0 when unchanged;
        action DNAT when the destination changes, else ACCEPT), endpoint from the entry,
        ct_hit = 1. Miss (not UNTRACKED): allocate (early_drop when full; table full ->
        action DROP), then confirm with the verdict's own dnat_ip/dnat_port/snat_ip/
        snat_port/endpoint (and marks[i]) as the NAT the rules chose; a clash -> DROP.
        probes += all chain nodes inspected. Returns the total probes.
        """
        cdef Py_ssize_t n = packets.shape[0], i
        cdef ct_result_t r
        cdef ct_table_t* t = &self.tab
        cdef verdict_t* v
        cdef const packet_t* p
        cdef int32_t idx
        cdef uint32_t cprobes, sip, dip
        cdef uint16_t sport, dport
        cdef uint64_t total = 0
        cdef bint ws = out_state is not None, we = out_entry is not None
        cdef bint wd = out_dir is not None, wm = marks is not None
        if verdicts.shape[0] < n or (ws and out_state.shape[0] < n) or \
                (we and out_entry.shape[0] < n) or (wd and out_dir.shape[0] < n) or \
                (wm and marks.shape[0] < n):
            raise ValueError("verdicts/output arrays shorter than packets")
        with nogil:
            for i in range(n):
                p = &packets[i]
                v = &verdicts[i]
                ct_lookup(t, p, &r)
                cprobes = 0
                if r.entry >= 0:
                    ct_translate(t, r.entry, r.dir, &sip, &sport, &dip, &dport)
                    _nat_to_verdict(v, p, sip, sport, dip, dport)
                    v.endpoint = t.e[r.entry].endpoint
                    v.ct_hit = 1
                elif r.state != CTSTATE_UNTRACKED:
                    v.ct_hit = 0
                    idx = ct_alloc(t, p)
                    if idx == CT_ERR_FULL:
                        v.action = ACT_DROP
                    elif idx >= 0:
                        idx = ct_confirm(t, idx, v.dnat_ip, v.dnat_port, v.snat_ip,
                                         v.snat_port, v.endpoint, marks[i] if wm else 0,
                                         p.ts, &cprobes)
                        if idx < 0:
                            v.action = ACT_DROP
                        else:
                            r.entry = idx
                            r.dir = CT_DIR_ORIGINAL
                            r.state = CTSTATE_NEW | ct_nat_bits(&t.e[idx])
                    else:
                        r.state = CTSTATE_INVALID
                v.probes += r.probes + cprobes
                total += r.probes + cprobes
                if ws:
                    out_state[i] = r.state
                if we:
                    out_entry[i] = r.entry
                if wd:
                    out_dir[i] = <int8_t>r.dir
        return total

    # ----------------------------------------------------------------------------------
    # single-packet operations (Python-level mirror of the C API)

    def lookup(self, const packet_t[:] packets, Py_ssize_t i=0, *, bint update=True):
        """(state, entry, dir, probes) for packets[i]; see lookup_batch."""
        cdef ct_result_t r
        _check_index(packets.shape[0], i)
        if update:
            ct_lookup(&self.tab, &packets[i], &r)
        else:
            _peek(&self.tab, &packets[i], &r)
        return (r.state, r.entry, r.dir, r.probes)

    def create(self, const packet_t[:] packets, Py_ssize_t i=0):
        """Allocate an unconfirmed entry for packets[i] (init_conntrack, tracker run).

        Returns the entry index, ERR_FULL (table full after early_drop: drop the packet)
        or ERR_INVALID (the tracker refuses to start a connection with this packet)."""
        _check_index(packets.shape[0], i)
        return ct_alloc(&self.tab, &packets[i])

    def confirm(self, int32_t entry, *, uint32_t dnat_ip=0, uint16_t dnat_port=0,
                uint32_t snat_ip=0, uint16_t snat_port=0, int32_t endpoint=-1,
                uint32_t mark=0, double now=0.0):
        """Bind NAT and insert an entry from create(); returns (entry or ERR_CLASH, probes).

        ``now`` is the packet's time (expired entries met by the clash lookups are
        collected)."""
        cdef uint32_t probes = 0
        cdef int32_t r
        if not (0 <= entry < self.tab.max_entries) or self.tab.e[entry].slot != SLOT_UNCONFIRMED:
            raise ValueError(f"entry {entry} is not an unconfirmed entry")
        r = ct_confirm(&self.tab, entry, dnat_ip, dnat_port, snat_ip, snat_port, endpoint,
                       mark, now, &probes)
        return (r, probes)

    def abort(self, int32_t entry):
        """Free an unconfirmed entry whose packet was dropped."""
        ct_abort(&self.tab, entry)

    def update(self, int32_t entry, int dir, const packet_t[:] packets, Py_ssize_t i=0):
        """Run the tracker of a confirmed entry for packets[i] in direction dir; returns
        STATE_NEW/STATE_ESTABLISHED (ctinfo), STATE_INVALID, or -1 (SYN reopened a closed
        connection: the entry is gone)."""
        _check_index(packets.shape[0], i)
        if not (0 <= entry < self.tab.max_entries) or self.tab.e[entry].slot != SLOT_CONFIRMED:
            raise ValueError(f"entry {entry} is not a confirmed entry")
        if dir not in (0, 1):
            raise ValueError("dir must be 0 or 1")
        return ct_packet(&self.tab, entry, dir, &packets[i])

    def translate(self, int32_t entry, int dir):
        """(src_ip, src_port, dst_ip, dst_port) a packet of this entry leaves with."""
        cdef uint32_t sip, dip
        cdef uint16_t sport, dport
        if not (0 <= entry < self.tab.max_entries) or self.tab.e[entry].slot == SLOT_FREE:
            raise ValueError(f"entry {entry} is not in use")
        ct_translate(&self.tab, entry, dir, &sip, &sport, &dip, &dport)
        return (sip, sport, dip, dport)

    def expire(self, double now):
        """Collect every entry dead at ``now`` (expires <= now); returns how many."""
        cdef int32_t i
        cdef int64_t n = 0
        cdef ct_table_t* t = &self.tab
        with nogil:
            for i in range(t.max_entries):
                if t.e[i].slot == SLOT_CONFIRMED and t.e[i].expires <= now:
                    ct_free(t, i)
                    t.st.expired += 1
                    n += 1
        return n

    def entries(self):
        """Every allocated entry as an ENTRY_DTYPE array, in slot order."""
        cdef ct_table_t* t = &self.tab
        cdef int32_t i
        cdef Py_ssize_t k = 0
        out = np.zeros(t.count, ENTRY_DTYPE)
        cdef ct_entry_t* e
        ids = np.empty(t.count, np.int32)
        cdef int32_t[::1] idv = ids
        for i in range(t.max_entries):
            if t.e[i].slot != SLOT_FREE:
                idv[k] = i
                k += 1
        for k, i in enumerate(ids):
            e = &t.e[i]
            dn = bool(e.status & IPS_DST_NAT)
            sn = bool(e.status & IPS_SRC_NAT)
            out[k] = (i, e.proto, e.state, e.slot == SLOT_CONFIRMED, e.status,
                      e.src_ip[0], e.src_port[0], e.dst_ip[0], e.dst_port[0],
                      e.src_ip[1], e.src_port[1], e.dst_ip[1], e.dst_port[1],
                      e.src_ip[1] if dn else 0, e.src_port[1] if dn else 0,
                      e.dst_ip[1] if sn else 0, e.dst_port[1] if sn else 0,
                      e.endpoint, e.mark, e.expires)
        return out

    def chain_lengths(self):
        """Nodes per bucket (each entry has two nodes), an int32 array of length buckets."""
        cdef ct_table_t* t = &self.tab
        out = np.zeros(t.hsize, np.int32)
        cdef int32_t[::1] ov = out
        cdef uint32_t b
        cdef int32_t cur
        for b in range(t.hsize):
            cur = t.buckets[b]
            while cur != -1:
                ov[b] += 1
                cur = t.e[cur >> 1].next[cur & 1]
        return out


cdef inline void _peek(ct_table_t* t, const packet_t* p, ct_result_t* r) noexcept nogil:
    cdef int32_t d
    cdef ct_entry_t* e
    r.probes = 0
    r.entry = -1
    r.dir = -1
    if p.family != FAMILY_V4:
        r.state = CTSTATE_UNTRACKED
        return
    r.entry = ct_find(t, p.src_ip, p.src_port, p.dst_ip, p.dst_port, p.proto, p.ts, &d,
                      &r.probes)
    t.st.searched += r.probes
    if r.entry < 0:
        r.state = ct_miss_state(t, p)
        return
    e = &t.e[r.entry]
    r.dir = d
    if d == CT_DIR_ORIGINAL and not (e.status & IPS_SEEN_REPLY):
        r.state = CTSTATE_NEW
    else:
        r.state = CTSTATE_ESTABLISHED
    r.state |= ct_nat_bits(e)


cdef inline void _nat_to_verdict(verdict_t* v, const packet_t* p, uint32_t sip, uint16_t sport,
                                 uint32_t dip, uint16_t dport) noexcept nogil:
    if dip != p.dst_ip or dport != p.dst_port:
        v.dnat_ip = dip
        v.dnat_port = dport
        v.action = ACT_DNAT
    else:
        v.dnat_ip = 0
        v.dnat_port = 0
        v.action = ACT_ACCEPT
    if sip != p.src_ip or sport != p.src_port:
        v.snat_ip = sip
        v.snat_port = sport
    else:
        v.snat_ip = 0
        v.snat_port = 0


cdef inline int _check_index(Py_ssize_t n, Py_ssize_t i) except -1:
    if not (0 <= i < n):
        raise IndexError(f"packet index {i} out of range for {n} packets")
    return 0
