"""Pure-Python twin of kproxy_emu._cext.vstable.VirtualServerTable (IPVS).

Written from the same kernel sources (see cext/ipvs_core.pxd for what is modelled), as
plain objects and lists so each step reads like the C it mirrors. Same constructor,
methods and results as the Cython table; tests run both on the same traffic and require
identical verdicts, probes, counters and connections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import packets as P

if TYPE_CHECKING:
    from .reference import Branch, Flow, Outcome, ReferenceEvaluator

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
SERVICE_DTYPE = np.dtype(
    [("proto", "u1"), ("addr", "u4"), ("port", "u2"), ("flags", "u4"), ("timeout", "u4")]
)
DEST_DTYPE = np.dtype(
    [("svc", "i4"), ("addr", "u4"), ("port", "u2"), ("weight", "i4"), ("endpoint", "i4")]
)
TCP_STATE_NAMES = (
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
)
DEFAULT_TIMEOUTS = {
    "NONE": 2,
    "ESTABLISHED": 900,
    "SYN_SENT": 120,
    "SYN_RECV": 60,
    "FIN_WAIT": 120,
    "TIME_WAIT": 120,
    "CLOSE": 10,
    "CLOSE_WAIT": 60,
    "LAST_ACK": 30,
    "LISTEN": 120,
    "SYNACK": 120,
    "UDP": 300,
    "SCTP": 900,
}
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
FLAG_PERSISTENT, FLAG_SCHED1, FLAG_SCHED2 = 0x1, 0x8, 0x10
RESULT_PASS, RESULT_DNAT, RESULT_DROP, RESULT_REJECT, RESULT_NOSCHED, RESULT_SNAT = range(6)
STATS_KEYS = ("conns", "templates", "hits", "expired", "nodest", "noroom", "unavailable")

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
SH_TAB_SIZE = 256
ES, SR, TW, CL = 1, 3, 5, 6
# tcp_states[] INPUT rows of ip_vs_proto_tcp.c, indexed [syn, fin, ack, rst][old state]
_NO, _ES, _SS, _SR, _FW, _TW, _CL, _CW, _LA, _LI, _SA = range(11)
TCP_INPUT = (
    (_SR, _ES, _ES, _SR, _SR, _SR, _SR, _SR, _SR, _SR, _SR),
    (_CL, _CW, _SS, _TW, _TW, _TW, _CL, _CW, _LA, _LI, _TW),
    (_ES, _ES, _SS, _ES, _FW, _TW, _CL, _CW, _CL, _LI, _ES),
    (_CL, _CL, _CL, _SR, _CL, _CL, _CL, _CL, _LA, _LI, _SR),
)
TCP_OUTPUT = (
    (_SS, _ES, _SS, _SR, _SS, _SS, _SS, _SS, _SS, _LI, _SR),
    (_TW, _FW, _SS, _TW, _FW, _TW, _CL, _TW, _LA, _LI, _TW),
    (_ES, _ES, _SS, _ES, _FW, _TW, _CL, _CW, _LA, _ES, _ES),
    (_CL, _CL, _SS, _CL, _CL, _TW, _CL, _CL, _CL, _CL, _CL),
)
LBLC_EXPIRATION = LBLCR_EXPIRATION = 24 * 60 * 60


def _rol32(w: int, s: int) -> int:
    return ((w << s) | (w >> (32 - s))) & M32


def _rol64(w: int, s: int) -> int:
    return ((w << s) | (w >> (64 - s))) & M64


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    a = (a + 0xDEADBEEF) & M32
    b = (b + 0xDEADBEEF) & M32
    c = (c + initval) & M32
    c ^= b
    c = (c - _rol32(b, 14)) & M32
    a ^= c
    a = (a - _rol32(c, 11)) & M32
    b ^= a
    b = (b - _rol32(a, 25)) & M32
    c ^= b
    c = (c - _rol32(b, 16)) & M32
    a ^= c
    a = (a - _rol32(c, 4)) & M32
    b ^= a
    b = (b - _rol32(a, 14)) & M32
    c ^= b
    c = (c - _rol32(b, 24)) & M32
    return c


def hsiphash32(v: int, k0: int, k1: int) -> int:
    """The kernel's 64-bit hsiphash of a 4-byte input: SipHash-1-3, cut to 32 bits."""
    return siphash13_u32(v, k0, k1) & M32


def siphash13_u32(v: int, k0: int, k1: int) -> int:
    """SipHash-1-3 (64-bit result) of the 4-byte little-endian message ``v``."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    b = (4 << 56) | v

    def rnd():
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & M64
        v1 = _rol64(v1, 13)
        v1 ^= v0
        v0 = _rol64(v0, 32)
        v2 = (v2 + v3) & M64
        v3 = _rol64(v3, 16)
        v3 ^= v2
        v0 = (v0 + v3) & M64
        v3 = _rol64(v3, 21)
        v3 ^= v0
        v2 = (v2 + v1) & M64
        v1 = _rol64(v1, 17)
        v1 ^= v2
        v2 = _rol64(v2, 32)

    v3 ^= b
    rnd()
    v0 ^= b
    v2 ^= 0xFF
    rnd()
    rnd()
    rnd()
    return (v0 ^ v1) ^ (v2 ^ v3)


def svc_hash(proto: int, addr: int, port: int, rnd: int, bits: int) -> int:
    return (proto ^ (addr ^ rnd) ^ (port >> bits) ^ port) & ((1 << bits) - 1)


def conn_hash(proto: int, caddr: int, cport: int, rnd: int, bits: int) -> int:
    return jhash_3words(caddr, cport, proto, rnd) & ((1 << bits) - 1)


def sh_hash(addr: int, port: int, offset: int = 0) -> int:
    v = (port + addr) & M32
    return (offset + (((v * 0x61C88647) & M32) >> 24)) % SH_TAB_SIZE


def dh_hash(addr: int) -> int:
    return (addr * 2654435761) & 255


def mh_hash(addr: int, port: int, which: int = 1, offset: int = 0) -> int:
    key = 2654435761 if which == 1 else 2654446892
    return hsiphash32((offset + port + addr) & M32, key, key)


def table_seeds(seed: int) -> tuple[int, int]:
    s = np.random.SeedSequence(seed).generate_state(2, np.uint32)
    return int(s[0]), int(s[1])


def scheduler_code(name: str) -> int:
    try:
        return SCHEDULERS.index(name)
    except ValueError:
        raise ValueError(
            f"unknown IPVS scheduler {name!r} (kernel schedulers: {', '.join(SCHEDULERS)})"
        ) from None


@dataclass(slots=True)
class Dest:
    svc: int
    addr: int
    port: int
    weight: int
    endpoint: int
    last_weight: int = 0
    active: int = 0
    inact: int = 0
    persist: int = 0
    linked: bool = True
    available: bool = True


@dataclass(slots=True)
class Service:
    proto: int
    addr: int
    port: int
    flags: int
    timeout: int
    sched: str
    dests: list[int] = field(default_factory=list)  # list order: head first
    cur: int = -1  # rr/wrr: a dest, -1 = the head
    cw: int = 0
    mw: int = 0
    di: int = 1
    table: list[int] = field(default_factory=list)
    mh_gcd: int = 0
    mh_rshift: int = 0
    cache: int = -1  # lblc dest
    lastuse: float = -1.0  # lblc/lblcr entry lastuse, -1 none
    rset: list[int] = field(default_factory=list)  # lblcr set, head first
    lastmod: float = 0.0


@dataclass(slots=True)
class Conn:
    caddr: int
    cport: int
    vaddr: int
    vport: int
    daddr: int
    dport: int
    proto: int
    dest: int
    template: bool
    state: int = 0
    inactive: bool = True
    timeout: float = 3
    expires: float = 0.0
    control: Conn | None = None
    n_control: int = 0
    ctl_expires: float = 0.0
    bucket: int = 0
    slot: int = 0


class VirtualServerTable:
    def __init__(
        self,
        services,
        dests,
        scheduler: str = "rr",
        seed: int = 0,
        *,
        svc_bits: int | None = None,
        conn_bits: int = 12,
        max_conns: int = 1 << 18,
        mh_tab_index: int = 12,
        timeouts: dict | None = None,
        expire_nodest_conn: bool = True,
        expire_quiescent_template: bool = True,
        conn_reuse_mode: int = 1,
    ):
        scheduler_code(scheduler)
        if not 8 <= mh_tab_index <= 17:
            raise ValueError(
                f"mh_tab_index must be 8..17 (CONFIG_IP_VS_MH_TAB_INDEX), got {mh_tab_index}"
            )
        if not 8 <= conn_bits <= 20:
            raise ValueError(f"conn_bits must be 8..20 (ip_vs conn_tab_bits), got {conn_bits}")
        services = np.asarray(services, SERVICE_DTYPE)
        dests = np.asarray(dests, DEST_DTYPE)
        self.scheduler = scheduler
        self.seed = seed
        n = len(services)
        if svc_bits is None:
            svc_bits = 8
            while (1 << svc_bits) < n:
                svc_bits += 1
        self.svc_bits = svc_bits
        self.svc_rnd, self.conn_rnd = table_seeds(seed)
        self.conn_bits = conn_bits
        self.max_conns = max_conns
        self.mh_size = MH_PRIMES[mh_tab_index - 8]
        self.mh_bits = mh_tab_index // 2
        self.expire_nodest_conn = expire_nodest_conn
        self.expire_quiescent_template = expire_quiescent_template
        self.conn_reuse_mode = conn_reuse_mode
        to = dict(DEFAULT_TIMEOUTS)
        for k, v in (timeouts or {}).items():
            if k not in to:
                raise ValueError(f"unknown IPVS timeout {k!r} (known: {', '.join(to)})")
            to[k] = v
        self.timeouts = to
        self.tcp_timeouts = [to[name] for name in TCP_STATE_NAMES]
        self.svc_buckets: list[list[int]] = [[] for _ in range(1 << svc_bits)]  # head first
        self.conn_buckets: list[list[Conn]] = [[] for _ in range(1 << conn_bits)]
        self.svcs: list[Service] = []
        self.dests: list[Dest] = []
        self.trash: dict[tuple[int, int, int], int] = {}  # deleted dests add_dest revives
        self._count = 0
        self._free: list[int] = []
        self._high = 0
        self.st = dict.fromkeys(STATS_KEYS, 0)
        for row in services:
            self.add_service(
                int(row["proto"]),
                int(row["addr"]),
                int(row["port"]),
                int(row["flags"]),
                int(row["timeout"]),
            )
        for row in dests:
            self.add_dest(
                int(row["svc"]),
                int(row["addr"]),
                int(row["port"]),
                int(row["weight"]),
                int(row["endpoint"]),
            )

    # ------------------------------------------------------------ configuration
    def _changed(self, sv: Service, init: bool = False) -> None:
        """The scheduler's init_service / add_dest / del_dest / upd_dest hooks."""
        if sv.sched == "wrr":
            g = mw = 0
            for d in sv.dests:
                w = self.dests[d].weight
                if w > 0:
                    g = _gcd(w, g) if g > 0 else w
                mw = max(mw, w)
            sv.cur = -1
            sv.di = g or 1
            sv.mw = mw - (sv.di - 1)
            if init or sv.cw > sv.mw or not sv.cw:
                sv.cw = sv.mw
            elif sv.di > 1:
                sv.cw = (sv.cw // sv.di) * sv.di + 1
        elif sv.sched in ("sh", "dh"):
            sv.table = self._reassign(sv, weighted=sv.sched == "sh")
        elif sv.sched == "mh":
            self._mh_reassign(sv)

    def _reassign(self, sv: Service, weighted: bool) -> list[int]:
        tab = []
        if not sv.dests:
            return [-1] * SH_TAB_SIZE
        i = count = 0
        for _ in range(SH_TAB_SIZE):
            d = sv.dests[i]
            tab.append(d)
            if weighted:
                count += 1
                if count >= self.dests[d].weight:
                    i, count = (i + 1) % len(sv.dests), 0
            else:
                i = (i + 1) % len(sv.dests)
        return tab

    def _mh_reassign(self, sv: Service) -> None:
        M = self.mh_size
        g = mw = 0
        for d in sv.dests:
            w = self.dests[d].last_weight
            if w > 0:
                g = _gcd(w, g) if g > 0 else w
            mw = max(mw, w)
        sv.mh_gcd = g
        sv.mh_rshift = max(0, (mw // g).bit_length() - self.mh_bits) if g >= 1 else 0
        if len(sv.dests) > M:
            raise ValueError(f"mh: {len(sv.dests)} destinations exceed the {M}-slot table")
        if g < 1:
            sv.table = [-1] * M
            return
        perm, skip, turns = [], [], []
        for d in sv.dests:
            dd = self.dests[d]
            perm.append(mh_hash(dd.addr, dd.port, 1) % M)
            skip.append(mh_hash(dd.addr, dd.port, 2) % (M - 1) + 1)
            q = (dd.last_weight // g) >> sv.mh_rshift
            turns.append(q if q else int(dd.last_weight != 0))
        table = sv.table if len(sv.table) == M else [-1] * M
        used = [False] * M
        n = dt_count = 0
        while n < M:
            i = 0
            while i < len(sv.dests):
                if turns[i] < 1:
                    i += 1
                    continue
                c = perm[i]
                while used[c]:
                    perm[i] += skip[i]
                    if perm[i] >= M:
                        perm[i] -= M
                    c = perm[i]
                used[c] = True
                table[c] = sv.dests[i]
                n += 1
                if n == M:
                    sv.table = table
                    return
                dt_count += 1
                if dt_count >= turns[i]:
                    dt_count = 0
                    i += 1
        sv.table = table

    def add_service(
        self, proto: int, addr: int, port: int, flags: int = 0, timeout: int = 0
    ) -> int:
        if self.find_service(proto, addr, port) >= 0:
            raise ValueError(f"virtual service {proto}/{addr}:{port} exists")
        sv = Service(proto, addr, port, flags | 0x2, timeout, self.scheduler)
        self.svcs.append(sv)
        self.svc_buckets[svc_hash(proto, addr, port, self.svc_rnd, self.svc_bits)].insert(
            0, len(self.svcs) - 1
        )
        self._changed(sv, init=True)
        return len(self.svcs) - 1

    def edit_service(self, svc: int, flags: int, timeout: int) -> None:
        sv = self.svcs[svc]
        if not sv.flags & 0x2:
            raise ValueError(f"service {svc} was deleted")
        sv.flags, sv.timeout = flags | 0x2, timeout

    def service_flags(self, svc: int) -> tuple[int, int]:
        return self.svcs[svc].flags, self.svcs[svc].timeout

    def del_service(self, svc: int) -> None:
        if not 0 <= svc < len(self.svcs):
            raise IndexError(f"no service {svc}")
        sv = self.svcs[svc]
        if not sv.flags & 0x2:
            raise ValueError(f"service {svc} was already deleted")
        while sv.dests:
            self.del_dest(sv.dests[0])
        self.svc_buckets[svc_hash(sv.proto, sv.addr, sv.port, self.svc_rnd, self.svc_bits)].remove(
            svc
        )
        sv.flags &= ~0x2

    def add_dest(self, svc: int, addr: int, port: int, weight: int = 1, endpoint: int = -1) -> int:
        if not 0 <= svc < len(self.svcs):
            raise IndexError(f"no service {svc}")
        if not self.svcs[svc].flags & 0x2:
            raise ValueError(f"service {svc} was deleted")
        sv = self.svcs[svc]
        # ip_vs_trash_get_dest: this service's deleted destination comes back (counters,
        # connections kept); a stale entry (relinked by restore) is ignored
        d = self.trash.pop((svc, addr, port), -1)
        if d >= 0 and not self.dests[d].linked:
            dd = self.dests[d]
            dd.weight = dd.last_weight = weight
            dd.endpoint = endpoint
            dd.linked = dd.available = True
        else:
            self.dests.append(Dest(svc, addr, port, weight, endpoint, last_weight=weight))
            d = len(self.dests) - 1
        sv.dests.insert(0, d)
        self._changed(sv)
        return d

    def edit_dest(self, dest: int, weight: int) -> None:
        dd = self._dest(dest)
        if not dd.linked:
            raise ValueError(f"destination {dest} was deleted")
        if weight != 0:
            dd.last_weight = weight
        dd.weight = weight
        self._changed(self.svcs[dd.svc])

    def del_dest(self, dest: int) -> None:
        dd = self._dest(dest)
        if not dd.linked:
            raise ValueError(f"destination {dest} was already deleted")
        sv = self.svcs[dd.svc]
        pos = sv.dests.index(dest)
        if sv.sched == "rr" and sv.cur == dest:
            sv.cur = sv.dests[pos - 1] if pos > 0 else -1
        del sv.dests[pos]
        dd.linked = dd.available = False
        self.trash[(dd.svc, dd.addr, dd.port)] = dest
        if sv.sched != "rr":
            self._changed(sv)

    def _dest(self, dest: int) -> Dest:
        if not 0 <= dest < len(self.dests):
            raise IndexError(f"no destination {dest}")
        return self.dests[dest]

    def find_service(self, proto: int, addr: int, port: int) -> int:
        return self._svc_find(proto, addr, port)[0]

    def _svc_find(self, proto: int, addr: int, port: int) -> tuple[int, int]:
        probes = 0
        for s in self.svc_buckets[svc_hash(proto, addr, port, self.svc_rnd, self.svc_bits)]:
            probes += 1
            sv = self.svcs[s]
            if sv.addr == addr and sv.port == port and sv.proto == proto:
                return s, probes
        return -1, probes

    def service_dests(self, svc: int) -> list[int]:
        return list(self.svcs[svc].dests)

    def sched_table(self, svc: int) -> np.ndarray:
        sv = self.svcs[svc]
        if sv.sched not in ("sh", "dh", "mh"):
            raise ValueError(f"scheduler {sv.sched} has no lookup table")
        return np.array(sv.table, np.int32)

    @property
    def num_services(self) -> int:
        return len(self.svcs)

    @property
    def num_dests(self) -> int:
        return len(self.dests)

    def __len__(self) -> int:
        return self._count

    # ------------------------------------------------------------ schedulers
    def _overhead(self, d: int) -> int:
        dd = self.dests[d]
        return (dd.active << 8) + dd.inact

    def _schedule(self, sv: Service, p, now: float) -> int:
        s = sv.sched
        D = self.dests
        if s == "rr":
            order = sv.dests
            start = 0 if sv.cur < 0 else order.index(sv.cur) + 1
            candidates = order[start:] + (order[:start] if sv.cur >= 0 else [])
            for d in candidates:
                if D[d].weight > 0:
                    sv.cur = d
                    return d
            return -1
        if s == "wrr":
            return self._wrr(sv)
        if s == "lc":
            least, loh = -1, 0
            for d in sv.dests:
                if D[d].weight != 0:
                    doh = self._overhead(d)
                    if least < 0 or doh < loh:
                        least, loh = d, doh
            return least
        if s in ("wlc", "sed", "nq"):

            def oh(d):
                return self._overhead(d) if s == "wlc" else D[d].active + 1

            least = -1
            loh = 0
            rest: list[int] = []
            for i, d in enumerate(sv.dests):
                if D[d].weight > 0:
                    if s == "nq" and D[d].active == 0:
                        return d
                    least, loh, rest = d, oh(d), sv.dests[i + 1 :]
                    break
            if least < 0:
                return -1
            for d in rest:
                if s == "nq" and D[d].weight == 0:
                    continue
                if s == "nq" and D[d].active == 0:
                    return d
                doh = oh(d)
                if loh * D[d].weight > doh * D[least].weight:
                    least, loh = d, doh
            return least
        if s in ("sh", "mh"):
            port = int(p["src_port"]) if sv.flags & FLAG_SCHED2 else 0
            src = int(p["src_ip"])
            size = SH_TAB_SIZE if s == "sh" else self.mh_size
            if s == "sh":
                h = sh_hash(src, port)
            else:
                h = mh_hash(src, port, 1) % size
            d = sv.table[h]
            if not sv.flags & FLAG_SCHED1:
                return -1 if d < 0 or D[d].weight <= 0 else d
            if d < 0:
                return -1
            if D[d].weight > 0:
                return d
            for off in range(size):
                if s == "sh":
                    d = sv.table[sh_hash(src, port, (off + h) % size)]
                else:
                    d = sv.table[mh_hash(src, port, 1, (off + h) % size) % size]
                    if d < 0:
                        return -1
                if D[d].weight > 0:
                    return d
            return -1
        if s == "dh":
            d = sv.table[dh_hash(int(p["dst_ip"]))]
            return -1 if d < 0 or not D[d].available or D[d].weight <= 0 else d
        if s == "lblc":
            if sv.cache >= 0 and now - sv.lastuse > LBLC_EXPIRATION:
                sv.cache = -1
            if sv.cache >= 0:
                sv.lastuse = now
                d = sv.cache
                if D[d].available and D[d].weight > 0 and not self._lblc_overloaded(sv, d):
                    return d
            d = self._lblc_least(sv)
            if d < 0:
                return -1
            sv.cache, sv.lastuse = d, now
            return d
        if s == "lblcr":
            return self._lblcr(sv, now)
        return -1

    def _wrr(self, sv: Service) -> int:
        D = self.dests
        if sv.mw == 0:
            return -1
        last, stop = sv.cur, -2
        last_pass = restarted = False
        d = sv.cur
        while True:
            pos = 0 if d < 0 else sv.dests.index(d) + 1
            for d in sv.dests[pos:]:
                if D[d].weight >= sv.cw:
                    sv.cur = d
                    return d
                if d == stop:
                    sv.cur = d
                    return -1
            d = -1
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

    def _lblc_least(self, sv: Service) -> int:
        D = self.dests
        least, loh, rest = -1, 0, []
        for i, d in enumerate(sv.dests):
            if D[d].weight > 0:
                least, loh, rest = d, self._overhead(d), sv.dests[i + 1 :]
                break
        if least < 0:
            return -1
        for d in rest:
            doh = self._overhead(d)
            if loh * D[d].weight > doh * D[least].weight:
                least, loh = d, doh
        return least

    def _lblc_overloaded(self, sv: Service, dest: int) -> bool:
        D = self.dests
        if D[dest].active > D[dest].weight:
            return any(D[d].active * 2 < D[d].weight for d in sv.dests)
        return False

    def _lblcr(self, sv: Service, now: float) -> int:
        D = self.dests
        if sv.lastuse >= 0 and now - sv.lastuse > LBLCR_EXPIRATION:
            sv.rset = []
            sv.lastuse = -1
        if sv.lastuse >= 0:
            sv.lastuse = now
            dest, loh = -1, 0
            rest: list[int] = []
            for i, e in enumerate(sv.rset):
                if D[e].weight > 0 and D[e].available:
                    dest, loh, rest = e, self._overhead(e), sv.rset[i + 1 :]
                    break
            for e in rest:
                doh = self._overhead(e)
                if loh * D[e].weight > doh * D[dest].weight and D[e].available:
                    dest, loh = e, doh
            if len(sv.rset) > 1 and now > sv.lastmod + LBLCR_EXPIRATION:
                m, moh, rest = -1, 0, []
                for i, e in enumerate(sv.rset):
                    if D[e].weight > 0:
                        m, moh, rest = e, self._overhead(e), sv.rset[i + 1 :]
                        break
                for e in rest:
                    doh = self._overhead(e)
                    if moh * D[e].weight < doh * D[m].weight and D[e].weight > 0:
                        m, moh = e, doh
                if m >= 0:
                    sv.rset.remove(m)
            if dest >= 0 and not self._lblc_overloaded(sv, dest):
                return dest
            dest = self._lblc_least(sv)
            if dest < 0:
                return -1
            if dest not in sv.rset:
                sv.rset.insert(0, dest)
                sv.lastmod = now
            return dest
        dest = self._lblc_least(sv)
        if dest < 0:
            return -1
        sv.lastuse = sv.lastmod = now
        sv.rset = [dest]
        return dest

    # ------------------------------------------------------------ connections
    def _unbind(self, c: Conn) -> None:
        dd = self.dests[c.dest]
        if c.template:
            dd.persist -= 1
        elif c.inactive:
            dd.inact -= 1
        else:
            dd.active -= 1

    def _free_conn(self, c: Conn) -> None:
        self.conn_buckets[c.bucket].remove(c)
        self._unbind(c)
        if c.control is not None and c.control.slot >= 0:
            c.control.n_control -= 1
        c.slot = -1
        self._count -= 1

    def _dead(self, c: Conn, now: float) -> bool:
        if c.expires > now:
            return False
        if c.template and c.n_control > 0 and c.ctl_expires > c.expires and c.timeout > 0:
            c.expires += math.ceil((c.ctl_expires - c.expires) / c.timeout) * c.timeout
            if c.expires > now:
                return False
        return True

    def _conn_get(self, proto, caddr, cport, vaddr, vport, template, now):
        probes = 0
        bucket = self.conn_buckets[conn_hash(proto, caddr, cport, self.conn_rnd, self.conn_bits)]
        for c in list(bucket):
            probes += 1
            if self._dead(c, now):
                self._free_conn(c)
                self.st["expired"] += 1
                continue
            if (
                c.caddr == caddr
                and c.cport == cport
                and c.vaddr == vaddr
                and c.vport == vport
                and c.proto == proto
                and c.template == template
            ):
                return c, probes
        return None, probes

    def _conn_new(self, p, cport, vport, dest, template, now):
        if self._count >= self.max_conns:
            self.st["noroom"] += 1
            return None
        dd = self.dests[dest]
        proto, src = int(p["proto"]), int(p["src_ip"])
        c = Conn(
            src,
            cport,
            int(p["dst_ip"]),
            vport,
            dd.addr,
            dd.port or vport,
            proto,
            dest,
            template,
            inactive=not template,
            timeout=3,
            expires=now + 3,
        )
        if template:
            dd.persist += 1
        else:
            dd.inact += 1
        c.bucket = conn_hash(proto, src, cport, self.conn_rnd, self.conn_bits)
        self.conn_buckets[c.bucket].insert(0, c)
        self._count += 1
        return c

    def _set_state(self, c: Conn, flags: int, output: bool = False) -> None:
        if c.proto == 6:
            if flags & 4:
                idx = 3
            elif flags & 2:
                idx = 0
            elif flags & 1:
                idx = 1
            elif flags & 16:
                idx = 2
            else:
                return
            new = (TCP_OUTPUT if output else TCP_INPUT)[idx][c.state]
            if new != c.state:
                dd = self.dests[c.dest]
                if not c.inactive and new != ES:
                    dd.active -= 1
                    dd.inact += 1
                    c.inactive = True
                elif c.inactive and new == ES:
                    dd.active += 1
                    dd.inact -= 1
                    c.inactive = False
            c.state = new
            c.timeout = self.tcp_timeouts[new]
        elif c.proto == 17:
            c.timeout = self.timeouts["UDP"]
        else:
            c.timeout = self.timeouts["SCTP"]

    def _put(self, c: Conn, now: float) -> None:
        c.expires = now + c.timeout
        if c.control is not None and c.control.slot >= 0 and c.control.ctl_expires < c.expires:
            c.control.ctl_expires = c.expires

    def _dnat(self, c: Conn, v) -> None:
        v["action"] = P.Action.DNAT
        v["dnat_ip"] = c.daddr
        v["dnat_port"] = c.dport
        v["endpoint"] = self.dests[c.dest].endpoint

    def _in(self, p, v) -> int:
        now = float(p["ts"])
        proto = int(p["proto"])
        if proto not in (6, 17, 132):
            return RESULT_PASS
        src, sport = int(p["src_ip"]), int(p["src_port"])
        dst, dport = int(p["dst_ip"]), int(p["dst_port"])
        flags = int(p["tcp_flags"])
        c, probes = self._conn_get(proto, src, sport, dst, dport, False, now)
        if c is not None:
            dd = self.dests[c.dest]
            syn = proto == 6 and bool(flags & 0x2)  # is_new_conn: any SYN
            if syn and (
                (self.expire_nodest_conn and dd.weight == 0)
                or (self.conn_reuse_mode and c.control is None and c.state in (TW, CL))
            ):
                if c.n_control == 0:
                    c.expires, c.timeout = now, 0
                self.st["nodest"] += 1
                v["action"] = P.Action.DROP
                v["probes"] += probes
                return RESULT_DROP
            if not dd.available:
                if self.expire_nodest_conn:
                    c.expires, c.timeout = now, 0
                self.st["nodest"] += 1
                v["action"] = P.Action.DROP
                v["probes"] += probes
                return RESULT_DROP
            self._set_state(c, flags)
            self._put(c, now)
            self.st["hits"] += 1
            self._dnat(c, v)
            v["ct_hit"] = True
            v["probes"] += probes
            return RESULT_DNAT
        if proto == 6 and not (flags & 2 and not flags & 4):
            v["probes"] += probes
            return RESULT_NOSCHED
        s, sp = self._svc_find(proto, dst, dport)
        v["probes"] += probes + sp
        if s < 0:
            return RESULT_PASS
        sv = self.svcs[s]
        ct = None
        if sv.flags & FLAG_PERSISTENT:
            ct, tp = self._conn_get(proto, src, 0, dst, dport, True, now)
            v["probes"] += tp
            if ct is not None:
                dd = self.dests[ct.dest]
                if not dd.available or (self.expire_quiescent_template and dd.weight == 0):
                    ct.vport = ct.dport = 0xFFFF
                    ct = None
            if ct is None:
                dest = self._schedule(sv, p, now)
                if dest < 0:
                    self.st["unavailable"] += 1
                    v["action"] = P.Action.REJECT
                    return RESULT_REJECT
                ct = self._conn_new(p, 0, dport, dest, True, now)
                if ct is None:
                    v["action"] = P.Action.DROP
                    return RESULT_DROP
                ct.timeout = sv.timeout
                self.st["templates"] += 1
            dest = ct.dest
        else:
            dest = self._schedule(sv, p, now)
            if dest < 0:
                self.st["unavailable"] += 1
                v["action"] = P.Action.REJECT
                return RESULT_REJECT
        c = self._conn_new(p, sport, dport, dest, False, now)
        if c is None:
            v["action"] = P.Action.DROP
            return RESULT_DROP
        self.st["conns"] += 1
        if ct is not None:
            c.control = ct
            ct.n_control += 1
            self._put(ct, now)
        self._set_state(c, flags)
        self._put(c, now)
        self._dnat(c, v)
        return RESULT_DNAT

    def process(self, packets, out, now: float | None = None) -> np.ndarray:
        return self._each(self._in, packets, out, now)

    def process_reply(self, packets, out, now: float | None = None) -> np.ndarray:
        return self._each(self._out, packets, out, now)

    def _each(self, step, packets, out, now: float | None) -> np.ndarray:
        """``step`` (ip_vs_in or ip_vs_out) for each packet in order, at its ``ts`` (or
        ``now`` for all), into a reset verdict; the result codes."""
        n = len(packets)
        if len(out) < n:
            raise ValueError(f"out has {len(out)} verdicts for {n} packets")
        res = np.empty(n, np.uint8)
        for i in range(n):
            p = packets[i].copy()
            if now is not None:
                p["ts"] = now
            v = out[i : i + 1]
            v[:] = P.empty_verdicts(1)
            res[i] = step(p, v[0])
        return res

    def _out(self, p, v) -> int:
        now = float(p["ts"])
        proto = int(p["proto"])
        if proto not in (6, 17, 132):
            return RESULT_PASS
        src, sport = int(p["src_ip"]), int(p["src_port"])
        dst, dport = int(p["dst_ip"]), int(p["dst_port"])
        probes = 0
        for c in list(
            self.conn_buckets[conn_hash(proto, dst, dport, self.conn_rnd, self.conn_bits)]
        ):
            probes += 1
            if self._dead(c, now):
                self._free_conn(c)
                self.st["expired"] += 1
                continue
            if (
                c.daddr == src
                and c.dport == sport
                and c.caddr == dst
                and c.cport == dport
                and c.proto == proto
                and not c.template
            ):
                self._set_state(c, int(p["tcp_flags"]), output=True)
                self._put(c, now)
                v["snat_ip"], v["snat_port"] = c.vaddr, c.vport
                v["endpoint"] = self.dests[c.dest].endpoint
                v["ct_hit"] = True
                v["probes"] += probes
                return RESULT_SNAT
        v["probes"] += probes
        return RESULT_PASS

    def trace(self, packet) -> dict:
        """One packet through ip_vs_in without changing anything: the result, the
        destination it would get, the candidates and the lookups on the way.

        ``candidates``: (dest index, probability); ``endpoints`` the same by endpoint
        index, and ``endpoint`` the chosen one's. A known connection, a live persistence
        template or a hashing scheduler (sh, dh, mh) fixes the destination (probability
        1); the other schedulers pick by state (rr's cursor, connection counts), so their
        candidates are every destination that can be scheduled, with its long-run share
        of new connections (weight / total weight).
        """
        out = self._trace(packet)
        out["endpoint"] = self.dests[out["dest"]].endpoint if out["dest"] >= 0 else -1
        out["endpoints"] = [(self.dests[d].endpoint, pr) for d, pr in out["candidates"]]
        return out

    def _trace(self, packet) -> dict:
        p = packet[0] if getattr(packet, "shape", ()) else packet
        now = float(p["ts"])
        proto, src, sport = int(p["proto"]), int(p["src_ip"]), int(p["src_port"])
        dst, dport, flags = int(p["dst_ip"]), int(p["dst_port"]), int(p["tcp_flags"])
        steps: list[str] = []
        out: dict[str, Any] = {
            "result": RESULT_PASS,
            "dest": -1,
            "candidates": [],
            "steps": steps,
            "probes": 0,
        }
        if proto not in (6, 17, 132):
            steps.append("not TCP/UDP/SCTP: IPVS ignores it")
            return out
        conn, probes = self._peek_conn(proto, src, sport, dst, dport, False, now)
        out["probes"] += probes
        if conn is not None:
            steps.append(
                f"ip_vs_conn_in_get: connection to dest {conn.dest} "
                f"({TCP_STATE_NAMES[conn.state] if proto == 6 else 'UDP/SCTP'})"
            )
            out.update(result=RESULT_DNAT, dest=conn.dest, candidates=[(conn.dest, 1.0)])
            return out
        steps.append(f"ip_vs_conn_in_get: no connection ({probes} probes)")
        if proto == 6 and not (flags & 2 and not flags & 4):
            steps.append("tcp_conn_schedule: not a SYN, no connection is created")
            out["result"] = RESULT_NOSCHED
            return out
        s, sp = self._svc_find(proto, dst, dport)
        out["probes"] += sp
        if s < 0:
            steps.append(f"ip_vs_service_find: no virtual service ({sp} probes)")
            return out
        sv = self.svcs[s]
        steps.append(f"ip_vs_service_find: service {s} ({sp} probes), scheduler {sv.sched}")
        if sv.flags & FLAG_PERSISTENT:
            ct, tp = self._peek_conn(proto, src, 0, dst, dport, True, now)
            out["probes"] += tp
            if (
                ct is not None
                and self.dests[ct.dest].available
                and not (self.expire_quiescent_template and self.dests[ct.dest].weight == 0)
            ):
                steps.append(f"ip_vs_sched_persist: template to dest {ct.dest}")
                out.update(result=RESULT_DNAT, dest=ct.dest, candidates=[(ct.dest, 1.0)])
                return out
            steps.append("ip_vs_sched_persist: no usable template")
        saved = (sv.cur, sv.cw, sv.cache, sv.lastuse, list(sv.rset), sv.lastmod)
        dest = self._schedule(sv, p, now)
        sv.cur, sv.cw, sv.cache, sv.lastuse, sv.rset, sv.lastmod = saved
        if dest < 0:
            steps.append("no destination available: ICMP port unreachable")
            out["result"] = RESULT_REJECT
            return out
        steps.append(f"{sv.sched} schedules dest {dest}")
        if sv.sched in ("sh", "dh", "mh"):
            cands = [(dest, 1.0)]
        else:
            ok = [d for d in sv.dests if self.dests[d].weight > 0]
            total = sum(self.dests[d].weight for d in ok)
            cands = [(d, self.dests[d].weight / total) for d in ok]
        out.update(result=RESULT_DNAT, dest=dest, candidates=cands)
        return out

    def _peek_conn(self, proto, caddr, cport, vaddr, vport, template, now):
        """_conn_get without collecting expired entries (they count as absent)."""
        probes = 0
        for c in self.conn_buckets[conn_hash(proto, caddr, cport, self.conn_rnd, self.conn_bits)]:
            probes += 1
            alive = c.expires > now or (
                c.template
                and c.n_control > 0
                and c.ctl_expires > c.expires
                and c.timeout > 0
                and c.expires + math.ceil((c.ctl_expires - c.expires) / c.timeout) * c.timeout > now
            )
            if alive and (
                c.caddr == caddr
                and c.cport == cport
                and c.vaddr == vaddr
                and c.vport == vport
                and c.proto == proto
                and c.template == template
            ):
                return c, probes
        return None, probes

    def expire(self, now: float) -> int:
        count = 0
        for bucket in self.conn_buckets:
            for c in list(bucket):
                if self._dead(c, now):
                    self._free_conn(c)
                    self.st["expired"] += 1
                    count += 1
        return count

    def dest_connections(self, dest: int) -> int:
        if not 0 <= dest < len(self.dests):
            raise IndexError(f"no real server {dest}")
        return self.dests[dest].active + self.dests[dest].inact

    def dest_stats(self) -> list[tuple]:
        return [
            (d.svc, d.addr, d.port, d.weight, d.active, d.inact, d.persist, d.linked, d.available)
            for d in self.dests
        ]

    def connections(self) -> list[tuple]:
        return [
            (
                c.caddr,
                c.cport,
                c.vaddr,
                c.vport,
                c.daddr,
                c.dport,
                c.proto,
                c.state,
                c.template,
                c.inactive,
                c.expires,
                c.dest,
                c.n_control,
            )
            for bucket in self.conn_buckets
            for c in bucket
        ]

    def stats(self) -> dict[str, int]:
        return dict(self.st)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# ------------------------------------------------------------------ the mode's hooks


def evaluate_ipvs_flow(ev: ReferenceEvaluator, table, endpoints: list[str], flow: Flow) -> Outcome:
    """A flow's first packet through IPVS mode's hooks, every branch followed: from a pod
    or outside, nat PREROUTING, then for a local destination filter INPUT and ip_vs_in
    (LOCAL_IN), which sends a scheduled packet on through filter OUTPUT and nat
    POSTROUTING; a remote destination goes through filter FORWARD and nat POSTROUTING.
    From the host: nat OUTPUT, ip_vs_in (LOCAL_OUT), filter OUTPUT, nat POSTROUTING, then
    filter INPUT when the destination is local. IPVS's candidates are the destinations
    the scheduler may pick, with their share of new connections (a fresh table: no
    persistence template or connection counts)."""
    from .reference import Branch, Outcome

    iface_in = flow.in_iface or {"pod": "cni0", "external": "eth0"}.get(flow.origin, "lo")
    finished: list[Branch] = []

    def run(table: str, chain: str, branches: list[Branch], iface_out: str = "") -> list[Branch]:
        live: list[Branch] = []
        for b in branches:
            if (table, chain) not in ev.chains:
                live.append(b)
                continue
            state = {"NEW"} | ({"DNAT"} if b.dnat else set())
            cont, ended = ev.run_chain(
                table,
                chain,
                flow,
                [b],
                flow.src,
                state,
                iface_in if flow.origin != "host" else "",
                iface_out,
            )
            for x in cont + ended:
                (finished if x.verdict in ("DROP", "REJECT") else live).append(x)
        return live

    def ipvs(branches: list[Branch], hook: str) -> tuple[list[Branch], list[Branch]]:
        """(sent on to a real server, left to the local stack)."""
        sent: list[Branch] = []
        stay: list[Branch] = []
        for b in branches:
            if table is None:
                stay.append(b)
                continue
            result = table.trace(_packet(flow, b))
            text = f"ip_vs_in at {hook}: " + "; ".join(result["steps"])
            b.lookups += int(result["probes"])
            code = result["result"]
            if code == 1:  # DNAT
                for ep, share in result["endpoints"]:
                    nb = b.copy()
                    nb.prob *= share
                    nb.ipvs = (b.dst, b.dport, flow.proto)
                    nb.dnat = endpoints[ep]
                    ip, _, port = nb.dnat.rpartition(":")
                    nb.dst, nb.dport = ip, int(port)
                    nb.steps.append(("ipvs", hook, None, f"{text} -> {nb.dnat}", True))
                    sent.append(nb)
            elif code in (2, 3):  # DROP, REJECT (no destination: ICMP port unreachable)
                b.verdict, b.decided_by_rule = ("DROP" if code == 2 else "REJECT"), True
                b.steps.append(("ipvs", hook, None, text, True))
                finished.append(b)
            else:  # not a virtual service (or TCP without SYN): the local stack
                b.steps.append(("ipvs", hook, None, text, False))
                stay.append(b)
        return sent, stay

    start = Branch(dst=flow.dst, dport=flow.dport)
    if flow.origin == "host":
        live = run("nat", "OUTPUT", [start], iface_out="eth0")
        sent, stay = ipvs(live, "LOCAL_OUT")
        live = run("filter", "OUTPUT", sent + stay, iface_out="eth0")
        live = run("nat", "POSTROUTING", live, iface_out="eth0")
        finished += run("filter", "INPUT", [b for b in live if ev._is_local(b.dst)])
        finished += [b for b in live if not ev._is_local(b.dst)]
    else:
        live = run("nat", "PREROUTING", [start])
        local = run("filter", "INPUT", [b for b in live if ev._is_local(b.dst)])
        sent, stay = ipvs(local, "LOCAL_IN")
        finished += stay
        sent = run("filter", "OUTPUT", sent, iface_out="eth0")
        finished += run("nat", "POSTROUTING", sent, iface_out="eth0")
        remote = run(
            "filter", "FORWARD", [b for b in live if not ev._is_local(b.dst)], iface_out="eth0"
        )
        finished += run("nat", "POSTROUTING", remote, iface_out="eth0")
    return Outcome(finished)


def _packet(flow: Flow, b: Branch) -> np.ndarray:
    """The packet as IPVS sees it (a TCP flow's first packet is its SYN)."""
    from ..packets import PROTO_NUMBERS, empty_packets, ip_to_u32

    pkt = empty_packets(1)
    pkt["src_ip"], pkt["dst_ip"] = ip_to_u32(flow.src), ip_to_u32(b.dst)
    pkt["src_port"], pkt["dst_port"] = flow.sport, b.dport
    pkt["proto"] = PROTO_NUMBERS[flow.proto]
    pkt["tcp_flags"] = 2 if flow.proto == "tcp" else 0
    return pkt
