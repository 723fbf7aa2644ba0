"""IPVS mode's native texts: ``ipvsadm -Sn``, ``ipvsadm -Ln`` and ``ipset save``.

ipvsadm (ipvsadm.c print_service_entry / list_all, libipvs ipvs_cmp_services /
ipvs_cmp_dests): services and destinations are sorted unless --nosort, with comparators
that subtract host-order addresses into an ``int`` (so addresses more than 2^31 apart
compare "wrapped": 192.168.0.2 sorts before 10.96.0.1); the sort is glibc's qsort, a
top-down merge sort (glibc <= 2.36), reproduced here because with the wrapped comparator
the order depends on the algorithm. List lines: ``"%s  %s"`` protocol and address (cut to
33 characters for IPv4), then ``" %s"`` scheduler, scheduler flags in parentheses
(``(mh-port)``; recalled from ipvsadm 1.31), `` persistent N``; destination lines
``"  -> %-28s %-7s %-6d %-10u %-10u"``. Save lines: ``-A -t ADDR:PORT -s SCHED [-p N]
[-b FLAGS]`` and ``-a -t ADDR:PORT -r ADDR:PORT -m -w W`` (kube-proxy's real servers are
masqueraded, ``-m``).

ipset save (ipset 7): ``create NAME TYPE family inet hashsize 1024 maxelem 65536`` for
hash types (optionally ``bucketsize 12 initval 0x...`` as ipset >= 7.11 prints; initval is
random per set, here from a seed), ``create NAME bitmap:port range 0-65535``, then
``add NAME ENTRY`` lines. The kernel lists members in hash-bucket order; they are sorted
here (deterministic, not the kernel's order).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from .._cext import msort
from ..ipaddr import ipv4_int
from .ipvs import BITMAP_PORT, IpvsState, VirtualServer

T = TypeVar("T")
IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096  # 1 << CONFIG_IP_VS_TAB_BITS (12)
_PROTO_NUM = {"TCP": 6, "UDP": 17, "SCTP": 132}
_RULE_PROTO = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
SCHED_FLAG_NAMES = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}


def _int32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _addr_words(ip: str) -> list[int]:
    a = ipaddress.ip_address(ip)
    raw = a.packed
    return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]


def cmp_services(a: VirtualServer, b: VirtualServer) -> int:
    """ipvs_cmp_services: fwmark, af, protocol, address (int-wrapped), port."""
    af_a = 10 if ":" in a.address else 2
    af_b = 10 if ":" in b.address else 2
    if af_a != af_b:
        return af_a - af_b
    r = _PROTO_NUM[a.protocol] - _PROTO_NUM[b.protocol]
    if r:
        return r
    for wa, wb in zip(_addr_words(a.address), _addr_words(b.address)):
        r = _int32(wa - wb)
        if r:
            return r
    return a.port - b.port


def cmp_dests(a: tuple[str, int], b: tuple[str, int]) -> int:
    """ipvs_cmp_dests: address (int-wrapped), then port."""
    for wa, wb in zip(_addr_words(a[0]), _addr_words(b[0])):
        r = _int32(wa - wb)
        if r:
            return r
    return a[1] - b[1]


def glibc_msort(items: Sequence[T], cmp: Callable[[T, T], int]) -> list[T]:
    """The reference twin of the compiled _cext.msort (which the renderers use), with any
    comparator: glibc msort_with_tmp: split n/2 | n - n/2, sort both halves, merge taking the
    left element while cmp(left, right) <= 0."""
    items = list(items)
    if len(items) <= 1:
        return items
    n1 = len(items) // 2
    left, right = glibc_msort(items[:n1], cmp), glibc_msort(items[n1:], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _addrport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _sched_flags(vs: VirtualServer) -> str:
    names = SCHED_FLAG_NAMES.get(vs.scheduler, ("flag-1", "flag-2"))
    out = [name for bit, name in ((0x8, names[0]), (0x10, names[1])) if vs.flags & bit]
    if vs.flags & 0x20:
        out.append("flag-3")
    return ",".join(out)


def _counters(state: IpvsState, counters) -> dict[tuple[int, int], tuple[int, int]]:
    """Per (virtual server, real server) (ActiveConn, InActConn) from rows aligned with
    dataplane.ipvs_kernel.lower()'s dests (e.g. VirtualServerTable.dest_stats())."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    if counters is None:
        return out
    rows = np.asarray(counters)
    k = 0
    for i, vs in enumerate(state.virtual_servers):
        for j in range(len(vs.real_servers)):
            out[(i, j)] = (int(rows["activeconns"][k]), int(rows["inactconns"][k]))
            k += 1
    return out


def _words(ip: str, width: int) -> list[int]:
    """The address as 32-bit words (ipvs_cmp_*'s int-wrapped fields), padded to width."""
    if ":" not in ip:
        return [ipv4_int(ip)] + [0] * (width - 1)
    return _addr_words(ip)


def _sorted_services(state: IpvsState, nosort: bool) -> list[tuple[int, VirtualServer]]:
    indexed = list(enumerate(state.virtual_servers))
    if nosort or len(indexed) < 2:
        return indexed
    # ipvs_cmp_services' fields, computed once (fwmark is 0 for kube-proxy's services)
    vss = state.virtual_servers
    width = 4 if any(":" in vs.address for vs in vss) else 1
    keys = [
        [
            10 if ":" in vs.address else 2,
            _PROTO_NUM[vs.protocol],
            *_words(vs.address, width),
            vs.port,
        ]
        for vs in vss
    ]
    return [indexed[i] for i in msort.glibc_msort(keys).tolist()]


def _sorted_dests(vs: VirtualServer, nosort: bool) -> list[int]:
    rss = vs.real_servers
    if nosort or len(rss) < 2:
        return list(range(len(rss)))
    if ":" in rss[0].address:  # a virtual server's real servers are of its family
        keys = [[*_addr_words(rs.address), rs.port] for rs in rss]
    else:
        keys = [[ipv4_int(rs.address), rs.port] for rs in rss]
    order: list[int] = msort.glibc_msort(keys).tolist()
    return order


def render_ipvsadm_save(state: IpvsState, *, nosort: bool = False) -> str:
    """``ipvsadm -S -n``."""
    return "".join(line + "\n" for line in ipvsadm_save_lines(state, nosort=nosort))


def ipvsadm_save_lines(state: IpvsState, *, nosort: bool = False) -> Iterator[str]:
    """``ipvsadm -S -n``'s lines, one at a time (a million services' text is gigabytes;
    its size can be counted without holding it)."""
    for _, vs in _sorted_services(state, nosort):
        name = f"{_RULE_PROTO[vs.protocol]} {_addrport(vs.address, vs.port)}"
        line = f"-A {name} -s {vs.scheduler}"
        if vs.flags & 0x1:
            line += f" -p {vs.timeout}"
        if vs.flags & 0x38:
            line += f" -b {_sched_flags(vs)}"
        yield line
        for j in _sorted_dests(vs, nosort):
            rs = vs.real_servers[j]
            yield f"-a {name} -r {_addrport(rs.address, rs.port)} -m -w {rs.weight}"


def render_ipvsadm_list(
    state: IpvsState, *, counters=None, nosort: bool = False, conn_tab_size: int = CONN_TAB_SIZE
) -> str:
    """``ipvsadm -L -n``; ``counters``: rows with activeconns/inactconns aligned with
    dataplane.ipvs_kernel.lower()'s dests (0 when not given)."""
    conns = _counters(state, counters)
    lines = [
        f"IP Virtual Server version {IPVS_VERSION} (size={conn_tab_size})",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for i, vs in _sorted_services(state, nosort):
        name = f"{vs.protocol}  {_addrport(vs.address, vs.port)}"
        if ":" not in vs.address:
            name = name[:33]
        line = f"{name} {vs.scheduler}"
        if vs.flags & 0x38:
            line += f" ({_sched_flags(vs)})"
        if vs.flags & 0x1:
            line += f" persistent {vs.timeout}"
        lines.append(line)
        for j in _sorted_dests(vs, nosort):
            rs = vs.real_servers[j]
            dname = _addrport(rs.address, rs.port)
            if ":" not in rs.address:
                dname = dname[:28]
            active, inact = conns.get((i, j), (0, 0))
            lines.append(f"  -> {dname:<28} {'Masq':<7} {rs.weight:<6d} {active:<10d} {inact:<10d}")
    return "".join(line + "\n" for line in lines)


def _ipset_member(set_type: str, entry: str) -> str:
    """ipset prints a host-sized net without its prefix length."""
    if set_type.endswith(",net") and entry.endswith(("/32", "/128")):
        return entry.rsplit("/", 1)[0]
    return entry


def render_ipset_save(state: IpvsState, *, initval_seed: int | None = None) -> str:
    """``ipset save`` of the IPVS proxier's sets, in kube-proxy's creation order."""
    rng = np.random.default_rng(initval_seed) if initval_seed is not None else None
    lines = []
    for s in state.ipsets.values():
        if s.set_type == BITMAP_PORT:
            lines.append(f"create {s.name} {s.set_type} range {s.port_range}")
        else:
            line = (
                f"create {s.name} {s.set_type} family {s.family} hashsize {s.hash_size} "
                f"maxelem {s.max_elem}"
            )
            if rng is not None:
                line += f" bucketsize 12 initval 0x{int(rng.integers(0, 1 << 32)):08x}"
            lines.append(line)
        key = _entry_key(s.set_type)
        for entry in sorted(s.entries, key=key):
            lines.append(f"add {s.name} {_ipset_member(s.set_type, entry)}")
    return "".join(line + "\n" for line in lines)


def _entry_key(set_type: str) -> Callable[[str], tuple]:
    if set_type == BITMAP_PORT:
        return lambda e: (int(e),)

    def key(e: str) -> tuple:
        parts = e.split(",")
        out: list = []
        for i, p in enumerate(parts):
            if i == 1:  # proto:port
                proto, _, port = p.rpartition(":")
                out += [proto, int(port)]
            else:
                net = ipaddress.ip_network(p, strict=False)
                out += [net.version, int(net.network_address), net.prefixlen]
        return tuple(out)

    return key


FORMATS = ("ipvsadm-save", "ipvsadm-list", "ipset-save", "iptables-restore")


def render(state: IpvsState, fmt: str = "ipvsadm-save", **options) -> str:
    """One of IPVS mode's texts by name (FORMATS); options go to that renderer."""
    from ..errors import InputError
    from .iptables_text import render as render_restore

    if fmt == "ipvsadm-save":
        return render_ipvsadm_save(state, **options)
    if fmt == "ipvsadm-list":
        return render_ipvsadm_list(state, **options)
    if fmt == "ipset-save":
        return render_ipset_save(state, **options)
    if fmt == "iptables-restore":
        return render_restore(state.ruleset)
    raise InputError(
        f"unknown IPVS render format (known: {', '.join(FORMATS)})", field="format", value=fmt
    )
