"""Pure-Python reference twin of kproxy_emu._cext.conntrack.ConntrackTable.

Same constructor, methods and results (states, entry indices, probes, NAT, expiry,
evictions, statistics); tests drive both with the same packets and compare everything.
Written for reading, not speed: entries are objects in a dict keyed by slot, each bucket
is a Python list of (slot, direction) nodes with the newest first, the TCP transitions are
the kernel's table spelled out. See kproxy_emu/_cext/conntrack.py for the semantics and their
kernel sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kproxy_emu._cext.conntrack import (
    DEFAULT_TIMEOUTS,
    ENTRY_DTYPE,
    KUBE_PROXY_TIMEOUTS,
    SCTP_STATE_NAMES,
    TCP_STATE_NAMES,
)

__all__ = [
    "DEFAULT_TIMEOUTS",
    "ENTRY_DTYPE",
    "KUBE_PROXY_TIMEOUTS",
    "SCTP_STATE_NAMES",
    "TCP_CONNTRACKS",
    "TCP_STATE_NAMES",
    "ConntrackTable",
    "tuple_hash",
]

ORIGINAL, REPLY = 0, 1

# ctstate bits (xt_conntrack XT_CONNTRACK_STATE_*)
INVALID, ESTABLISHED, RELATED, NEW = 1, 2, 4, 8
UNTRACKED, SNAT, DNAT = 256, 512, 1024

# ct->status bits
SEEN_REPLY, ASSURED, CONFIRMED = 2, 4, 8
SRC_NAT, DST_NAT, SRC_NAT_DONE, DST_NAT_DONE = 16, 32, 128, 256

ERR_FULL, ERR_INVALID, ERR_CLASH = -1, -2, -3
REOPEN = -1
EVICTION_RANGE = 8
UDP_STREAM_DELAY = 2.0

TCP, UDP, SCTP, ICMP = 6, 17, 132, 1
FIN, SYN, RST, ACK = 1, 2, 4, 16

# TCP states and the kernel's tcp_conntracks[dir][index][old_state]
sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG = range(12)
SYN_SET, SYNACK_SET, FIN_SET, ACK_SET, RST_SET, NONE_SET = range(6)
TCP_CONNTRACKS = (
    (  # ORIGINAL     sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        (sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2),  # syn
        (sIV, sIV, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),  # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),  # fin
        (sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV),  # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),  # rst
        (sIV,) * 10,  # none
    ),
    (  # REPLY
        (sIV, sS2, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sS2),  # syn
        (sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),  # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),  # fin
        (sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG),  # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),  # rst
        (sIV,) * 10,  # none
    ),
)
SCTP_COOKIE_WAIT, SCTP_COOKIE_ECHOED, SCTP_ESTABLISHED = 2, 3, 4

_TCP_TIMEOUT_NAMES = {
    sSS: "tcp_timeout_syn_sent",
    sSR: "tcp_timeout_syn_recv",
    sES: "tcp_timeout_established",
    sFW: "tcp_timeout_fin_wait",
    sCW: "tcp_timeout_close_wait",
    sLA: "tcp_timeout_last_ack",
    sTW: "tcp_timeout_time_wait",
    sCL: "tcp_timeout_close",
    sS2: "tcp_timeout_syn_sent",
}

_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    return x


def tuple_hash(
    src_ip: int, src_port: int, dst_ip: int, dst_port: int, proto: int, seed: int
) -> int:
    h = _mix64(seed ^ ((src_ip << 32) | dst_ip))
    h = _mix64(h ^ ((src_port << 32) | (dst_port << 16) | proto))
    return h >> 32


def tcp_flag_index(flags: int) -> int:
    if flags & RST:
        return RST_SET
    if flags & SYN:
        return SYNACK_SET if flags & ACK else SYN_SET
    if flags & FIN:
        return FIN_SET
    if flags & ACK:
        return ACK_SET
    return NONE_SET


@dataclass
class Entry:
    tuples: list[tuple[int, int, int, int]]  # [(src_ip, src_port, dst_ip, dst_port)] x 2
    proto: int
    state: int
    created: float
    expires: float
    status: int = 0
    endpoint: int = -1
    mark: int = 0
    confirmed: bool = False
    buckets: list[int] = field(default_factory=lambda: [0, 0])


def _row(packets, i: int):
    p = packets[i]
    return (
        float(p["ts"]),
        int(p["src_ip"]),
        int(p["src_port"]),
        int(p["dst_ip"]),
        int(p["dst_port"]),
        int(p["proto"]),
        int(p["tcp_flags"]),
        int(p["family"]),
    )


class ConntrackTable:
    """Same constructor and API as kproxy_emu._cext.conntrack.ConntrackTable."""

    def __init__(self, max_entries, seed, *, buckets=None, tcp_loose=True, **timeouts):
        if (
            isinstance(max_entries, bool)
            or int(max_entries) != max_entries
            or not 1 <= int(max_entries) < (1 << 30)
        ):
            raise ValueError(f"max_entries must be an integer in 1..2**30-1, got {max_entries!r}")
        if isinstance(seed, bool) or int(seed) != seed or not 0 <= int(seed) < (1 << 64):
            raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
        hs = int(max_entries) if buckets is None else buckets
        if isinstance(hs, bool) or int(hs) != hs or not 1 <= int(hs) < (1 << 30):
            raise ValueError(f"buckets must be an integer in 1..2**30-1, got {buckets!r}")
        unknown = set(timeouts) - set(DEFAULT_TIMEOUTS)
        if unknown:
            raise TypeError(f"unknown timeout parameter(s): {', '.join(sorted(unknown))}")
        vals = {**DEFAULT_TIMEOUTS, **timeouts}
        for k, v in vals.items():
            v = float(v)
            if not 0.0 <= v < float("inf"):
                raise ValueError(f"{k} must be a finite number >= 0, got {vals[k]!r}")
            vals[k] = v
        self.timeouts = vals
        self.max_entries = int(max_entries)
        self.buckets = int(hs)
        self.seed = int(seed)
        self.tcp_loose = bool(tcp_loose)
        self._entries: dict[int, Entry] = {}
        self._chains: list[list[tuple[int, int]]] = [[] for _ in range(self.buckets)]
        self._free = list(range(self.max_entries - 1, -1, -1))  # pop() gives 0, 1, ...
        self._stats = dict.fromkeys(
            (
                "found",
                "searched",
                "inserted",
                "invalid",
                "drop",
                "early_drop",
                "insert_failed",
                "expired",
            ),
            0,
        )

    # -- helpers ------------------------------------------------------------------------

    def _bucket(self, key: tuple[int, int, int, int], proto: int) -> int:
        return (tuple_hash(key[0], key[1], key[2], key[3], proto, self.seed) * self.buckets) >> 32

    def _free_entry(self, idx: int) -> None:
        e = self._entries.pop(idx)
        if e.confirmed:
            for d in (ORIGINAL, REPLY):
                self._chains[e.buckets[d]].remove((idx, d))
        self._free.append(idx)

    def _find(self, key, proto: int, now: float) -> tuple[int, int, int]:
        """(entry, dir, probes); collects expired entries met in the chain."""
        chain = self._chains[self._bucket(key, proto)]
        probes = 0
        i = 0
        while i < len(chain):
            idx, d = chain[i]
            probes += 1
            e = self._entries[idx]
            if e.expires <= now:
                self._free_entry(idx)
                self._stats["expired"] += 1
                continue  # the next node slid into position i
            if e.tuples[d] == key and e.proto == proto:
                return idx, d, probes
            i += 1
        return -1, -1, probes

    @staticmethod
    def _nat_bits(e: Entry) -> int:
        return (SNAT if e.status & SRC_NAT else 0) | (DNAT if e.status & DST_NAT else 0)

    def _new_state(self, proto: int, flags: int) -> int:
        if proto == TCP:
            s = TCP_CONNTRACKS[ORIGINAL][tcp_flag_index(flags)][sNO]
            if s == sIV or (s == sES and not self.tcp_loose):
                return -1
            return s
        if proto == SCTP:
            return SCTP_COOKIE_WAIT
        return 0

    def _miss_state(self, proto: int, flags: int, family: int) -> int:
        if family != 4:
            return UNTRACKED
        return INVALID if self._new_state(proto, flags) < 0 else NEW

    def _packet(self, idx: int, d: int, now: float, flags: int) -> int:
        e = self._entries[idx]
        T = self.timeouts
        ctinfo = NEW if d == ORIGINAL and not e.status & SEEN_REPLY else ESTABLISHED
        if e.proto == TCP:
            old = e.state
            index = tcp_flag_index(flags)
            new = TCP_CONNTRACKS[d][index][old]
            if new == sSS and old in (sTW, sCL):
                self._free_entry(idx)
                return REOPEN
            if new == sIG:
                return ctinfo
            if new == sIV:
                self._stats["invalid"] += 1
                return INVALID
            e.state = new
            if not e.status & SEEN_REPLY:
                if flags & RST:
                    e.expires = now
                    return ctinfo
            elif not e.status & ASSURED and old in (sSR, sES) and new == sES:
                e.status |= ASSURED
            name = _TCP_TIMEOUT_NAMES[sCL if index == RST_SET else new]
            e.expires = now + T[name]
        elif e.proto == UDP:
            extra = T["udp_timeout"]
            if e.status & SEEN_REPLY and now > e.created + UDP_STREAM_DELAY:
                extra = T["udp_timeout_stream"]
                e.status |= ASSURED
            e.expires = now + extra
        elif e.proto == SCTP:
            if e.state == SCTP_COOKIE_WAIT and d == ORIGINAL and e.status & SEEN_REPLY:
                e.state = SCTP_COOKIE_ECHOED
            elif e.state == SCTP_COOKIE_ECHOED and d == REPLY:
                e.state = SCTP_ESTABLISHED
                e.status |= ASSURED
            e.expires = (
                now
                + T[
                    {
                        SCTP_ESTABLISHED: "sctp_timeout_established",
                        SCTP_COOKIE_ECHOED: "sctp_timeout_cookie_echoed",
                    }.get(e.state, "sctp_timeout_cookie_wait")
                ]
            )
        elif e.proto == ICMP:
            e.expires = now + T["icmp_timeout"]
        else:
            e.expires = now + T["generic_timeout"]
        if d == REPLY:
            e.status |= SEEN_REPLY
        return ctinfo

    def _lookup(self, pkt, update: bool) -> tuple[int, int, int, int]:
        now, sip, sport, dip, dport, proto, flags, family = pkt
        if family != 4:
            return UNTRACKED, -1, -1, 0
        probes = 0
        while True:
            idx, d, pr = self._find((sip, sport, dip, dport), proto, now)
            probes += pr
            if idx < 0:
                res = (self._miss_state(proto, flags, family), -1, -1, probes)
                break
            if not update:
                e = self._entries[idx]
                st = NEW if d == ORIGINAL and not e.status & SEEN_REPLY else ESTABLISHED
                res = (st | self._nat_bits(e), idx, d, probes)
                break
            st = self._packet(idx, d, now, flags)
            if st == REOPEN:
                continue
            self._stats["found"] += 1
            if st == INVALID:
                res = (INVALID, -1, -1, probes)
            else:
                res = (st | self._nat_bits(self._entries[idx]), idx, d, probes)
            break
        self._stats["searched"] += probes
        return res

    def _early_drop(self, key, proto: int, now: float) -> bool:
        b = self._bucket(key, proto)
        for i in range(EVICTION_RANGE):
            if i:
                b = (b + 1) % self.buckets
            freed = drops = 0
            # in chain order (head first): the order slots return to the free stack
            for idx in dict.fromkeys(idx for idx, _ in self._chains[b]):
                e = self._entries[idx]
                if e.expires <= now:
                    self._free_entry(idx)
                    self._stats["expired"] += 1
                    freed += 1
                elif not e.status & ASSURED:
                    self._free_entry(idx)
                    drops += 1
            self._stats["early_drop"] += drops
            if drops or freed:
                return True
        return False

    def _alloc(self, pkt) -> int:
        now, sip, sport, dip, dport, proto, flags, _family = pkt
        if len(self._entries) >= self.max_entries:
            if not self._early_drop((sip, sport, dip, dport), proto, now):
                self._stats["drop"] += 1
                return ERR_FULL
        s = self._new_state(proto, flags)
        if s < 0:
            self._stats["invalid"] += 1
            return ERR_INVALID
        idx = self._free.pop()
        self._entries[idx] = Entry(
            tuples=[(sip, sport, dip, dport), (dip, dport, sip, sport)],
            proto=proto,
            state=s,
            created=now,
            expires=now,
        )
        self._packet(idx, ORIGINAL, now, flags)
        return idx

    def _confirm(
        self, idx, dnat_ip, dnat_port, snat_ip, snat_port, endpoint, mark, now
    ) -> tuple[int, int]:
        e = self._entries[idx]
        osip, osport, odip, odport = e.tuples[ORIGINAL]
        rsip, rsport = (dnat_ip or odip), (dnat_port or odport)
        rdip, rdport = (snat_ip or osip), (snat_port or osport)
        e.tuples[REPLY] = (rsip, rsport, rdip, rdport)
        e.status |= CONFIRMED | SRC_NAT_DONE | DST_NAT_DONE
        if (rsip, rsport) != (odip, odport):
            e.status |= DST_NAT
        if (rdip, rdport) != (osip, osport):
            e.status |= SRC_NAT
        e.endpoint, e.mark = endpoint, mark
        probes = 0
        for d in (ORIGINAL, REPLY):
            found, _, pr = self._find(e.tuples[d], e.proto, now)
            probes += pr
            if found >= 0:
                self._free_entry(idx)
                self._stats["insert_failed"] += 1
                return ERR_CLASH, probes
        for d in (ORIGINAL, REPLY):
            e.buckets[d] = self._bucket(e.tuples[d], e.proto)
            self._chains[e.buckets[d]].insert(0, (idx, d))
        e.confirmed = True
        self._stats["inserted"] += 1
        return idx, probes

    def _translate(self, idx: int, d: int) -> tuple[int, int, int, int]:
        sip, sport, dip, dport = self._entries[idx].tuples[1 - d]
        return dip, dport, sip, sport

    # -- public API (mirrors the Cython class) --------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def lookup_batch(
        self, packets, out_state, out_entry, out_dir, out_probes=None, *, update=True
    ) -> int:
        n = len(packets)
        if (
            len(out_state) < n
            or len(out_entry) < n
            or len(out_dir) < n
            or (out_probes is not None and len(out_probes) < n)
        ):
            raise ValueError("output arrays shorter than packets")
        total = 0
        for i in range(n):
            st, idx, d, pr = self._lookup(_row(packets, i), update)
            out_state[i], out_entry[i], out_dir[i] = st, idx, d
            if out_probes is not None:
                out_probes[i] = pr
            total += pr
        return total

    def track_batch(
        self, packets, verdicts, out_state=None, out_entry=None, out_dir=None, marks=None
    ) -> int:
        n = len(packets)
        for arr in (verdicts, out_state, out_entry, out_dir, marks):
            if arr is not None and len(arr) < n:
                raise ValueError("verdicts/output arrays shorter than packets")
        total = 0
        for i in range(n):
            pkt = _row(packets, i)
            now, sip, sport, dip, dport = pkt[:5]
            v = verdicts[i]
            st, idx, d, probes = self._lookup(pkt, True)
            cprobes = 0
            if idx >= 0:
                nsip, nsport, ndip, ndport = self._translate(idx, d)
                if (ndip, ndport) != (dip, dport):
                    v["dnat_ip"], v["dnat_port"], v["action"] = ndip, ndport, 1
                else:
                    v["dnat_ip"], v["dnat_port"], v["action"] = 0, 0, 0
                if (nsip, nsport) != (sip, sport):
                    v["snat_ip"], v["snat_port"] = nsip, nsport
                else:
                    v["snat_ip"], v["snat_port"] = 0, 0
                v["endpoint"] = self._entries[idx].endpoint
                v["ct_hit"] = True
            elif st != UNTRACKED:
                v["ct_hit"] = False
                new = self._alloc(pkt)
                if new == ERR_FULL:
                    v["action"] = 2
                elif new >= 0:
                    new, cprobes = self._confirm(
                        new,
                        int(v["dnat_ip"]),
                        int(v["dnat_port"]),
                        int(v["snat_ip"]),
                        int(v["snat_port"]),
                        int(v["endpoint"]),
                        int(marks[i]) if marks is not None else 0,
                        now,
                    )
                    if new < 0:
                        v["action"] = 2
                    else:
                        idx, d = new, ORIGINAL
                        st = NEW | self._nat_bits(self._entries[new])
                else:
                    st = INVALID
            v["probes"] = (int(v["probes"]) + probes + cprobes) & 0xFFFFFFFF
            total += probes + cprobes
            if out_state is not None:
                out_state[i] = st
            if out_entry is not None:
                out_entry[i] = idx
            if out_dir is not None:
                out_dir[i] = d
        return total

    def lookup(self, packets, i=0, *, update=True) -> tuple[int, int, int, int]:
        if not 0 <= i < len(packets):
            raise IndexError(f"packet index {i} out of range for {len(packets)} packets")
        return self._lookup(_row(packets, i), update)

    def create(self, packets, i=0) -> int:
        if not 0 <= i < len(packets):
            raise IndexError(f"packet index {i} out of range for {len(packets)} packets")
        return self._alloc(_row(packets, i))

    def confirm(
        self, entry, *, dnat_ip=0, dnat_port=0, snat_ip=0, snat_port=0, endpoint=-1, mark=0, now=0.0
    ) -> tuple[int, int]:
        e = self._entries.get(entry)
        if e is None or e.confirmed:
            raise ValueError(f"entry {entry} is not an unconfirmed entry")
        return self._confirm(entry, dnat_ip, dnat_port, snat_ip, snat_port, endpoint, mark, now)

    def abort(self, entry) -> None:
        e = self._entries.get(entry)
        if e is not None and not e.confirmed:
            self._free_entry(entry)

    def update(self, entry, dir, packets, i=0) -> int:
        if not 0 <= i < len(packets):
            raise IndexError(f"packet index {i} out of range for {len(packets)} packets")
        e = self._entries.get(entry)
        if e is None or not e.confirmed:
            raise ValueError(f"entry {entry} is not a confirmed entry")
        if dir not in (0, 1):
            raise ValueError("dir must be 0 or 1")
        pkt = _row(packets, i)
        return self._packet(entry, dir, pkt[0], pkt[6])

    def translate(self, entry, dir) -> tuple[int, int, int, int]:
        if entry not in self._entries:
            raise ValueError(f"entry {entry} is not in use")
        return self._translate(entry, dir)

    def expire(self, now) -> int:
        # slot order: the order slots return to the free stack
        dead = [
            i
            for i in sorted(self._entries)
            if self._entries[i].confirmed and self._entries[i].expires <= now
        ]
        for i in dead:
            self._free_entry(i)
        self._stats["expired"] += len(dead)
        return len(dead)

    def entries(self) -> np.ndarray:
        out = np.zeros(len(self._entries), ENTRY_DTYPE)
        for k, i in enumerate(sorted(self._entries)):
            e = self._entries[i]
            (osip, osport, odip, odport), (rsip, rsport, rdip, rdport) = e.tuples
            dn, sn = bool(e.status & DST_NAT), bool(e.status & SRC_NAT)
            out[k] = (
                i,
                e.proto,
                e.state,
                e.confirmed,
                e.status,
                osip,
                osport,
                odip,
                odport,
                rsip,
                rsport,
                rdip,
                rdport,
                rsip if dn else 0,
                rsport if dn else 0,
                rdip if sn else 0,
                rdport if sn else 0,
                e.endpoint,
                e.mark,
                e.expires,
            )
        return out

    def chain_lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self._chains], np.int32)
