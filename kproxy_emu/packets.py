"""Packet batches: numpy dtypes shared with the Cython engines, text I/O, traffic synthesis.

A batch is a 1-D numpy array of PACKET_DTYPE; engines answer with a VERDICT_DTYPE array of
the same length. Both dtypes mirror the C structs in cext/packet.pxd field for field, so an
engine takes them as ``packet_t[:]`` / ``verdict_t[:]`` typed memoryviews with no copy.
IPv4 addresses are uint32 in host byte order.

Packet text (one packet per line; see cext/packetio.pyx for the grammar)::

    tcp 10.244.1.5:40000 -> 10.96.0.10:53
    udp 10.244.1.5:40000->10.96.0.10:53 from=pod
    tcp 203.0.113.7:51000 -> 192.168.0.2:30080 flags=A from=external
    icmp 10.244.1.5 -> 10.96.0.10

Protocol names are case-insensitive; tcp/udp/sctp need ``ADDR:PORT`` on both sides (ports
0-65535), icmp takes bare addresses. ``flags=`` (letters F S R P A, or ``none``; tcp only)
defaults to SYN. ``from=pod|external|host`` says where the packet enters; without it the
packet gets the caller's origin, or ``Origin.AUTO`` (the dataplane classifies it by source
address, see :func:`resolve_origins`). IPv6 is not supported yet.

IPv6 room: ``family`` is 4 in every PACKET_DTYPE row. A ``PACKET6_DTYPE`` would sit beside
PACKET_DTYPE with the same scalar fields and ``src_ip``/``dst_ip`` as ``("u1", 16)`` in
network order (``family`` 6), matching a ``packet6_t`` in packet.pxd; batches stay
single-family and engines dispatch on the dtype once per batch.
"""

from __future__ import annotations

import ipaddress
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum, IntFlag
from types import MappingProxyType
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np
import numpy.typing as npt

from kproxy_emu._cext import packetio as _pio
from kproxy_emu._cext import traffic as _traffic
from kproxy_emu.errors import InputError
from kproxy_emu.ipaddr import parse_cidr, parse_ip

__all__ = [
    "DEFAULT_ORIGIN_MIX",
    "DEFAULT_SOURCES",
    "EPHEMERAL_PORTS",
    "ORIGIN_BITS",
    "ORIGIN_NAMES",
    "PACKET_DTYPE",
    "PROTO_NAMES",
    "PROTO_NUMBERS",
    "TARGET_DTYPE",
    "VERDICT_DTYPE",
    "Action",
    "Origin",
    "TcpFlag",
    "empty_packets",
    "empty_targets",
    "empty_verdicts",
    "from_strings",
    "from_text",
    "ip_to_u32",
    "next_packets",
    "parse",
    "replies",
    "resolve_origins",
    "synth",
    "to_strings",
    "u32_to_ip",
]

# --------------------------------------------------------------------------------------
# dtypes (must match cext/packet.pxd; tests/cores/test_cext.py checks against the C compiler)

PACKET_DTYPE = np.dtype(
    [
        ("ts", "f8"),  # emulated time, seconds
        ("src_ip", "u4"),
        ("dst_ip", "u4"),
        ("src_port", "u2"),
        ("dst_port", "u2"),
        ("proto", "u1"),
        ("tcp_flags", "u1"),
        ("origin", "u1"),
        ("family", "u1"),
    ],
    align=True,
)

VERDICT_DTYPE = np.dtype(
    [
        ("dnat_ip", "u4"),
        ("snat_ip", "u4"),
        ("dnat_port", "u2"),
        ("snat_port", "u2"),
        ("endpoint", "i4"),  # -1: none
        ("rules", "u4"),  # rules evaluated
        ("probes", "u4"),  # hash / conntrack probes
        ("action", "u1"),  # Action
        ("ct_hit", "?"),  # numpy bool; the C side is uint8_t (Cython accepts '?' there)
        ("lookups", "u2"),  # set / map / IPVS / eBPF map lookups (saturates at 65535)
    ],
    align=True,
)  # itemsize 28

TARGET_DTYPE = np.dtype(
    [
        ("ip", "u4"),
        ("port", "u2"),
        ("proto", "u1"),
        ("origins", "u1"),  # ORIGIN_BITS mask: 1 pod, 2 external, 4 host
    ],
    align=True,
)
_TARGET_FIELDS = ("ip", "port", "proto", "origins")


class Action(IntEnum):
    ACCEPT = 0
    DNAT = 1
    DROP = 2
    REJECT = 3


class Origin(IntEnum):
    """Where a packet enters the node."""

    POD = 0
    EXTERNAL = 1
    HOST = 2
    AUTO = 255  # not given; resolve_origins / the dataplane decide from the source address


class TcpFlag(IntFlag):
    FIN = 1
    SYN = 2
    RST = 4
    PSH = 8
    ACK = 16


PROTO_NUMBERS: Mapping[str, int] = MappingProxyType({"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1})
PROTO_NAMES: Mapping[int, str] = MappingProxyType({v: k for k, v in PROTO_NUMBERS.items()})
ORIGIN_NAMES: tuple[str, str, str] = ("pod", "external", "host")  # index = Origin value
ORIGIN_BITS: Mapping[str, int] = MappingProxyType({"pod": 1, "external": 2, "host": 4})
EPHEMERAL_PORTS: tuple[int, int] = (_traffic.EPHEMERAL_PORT_LOW, _traffic.EPHEMERAL_PORT_HIGH)
DEFAULT_ORIGIN_MIX: Mapping[str, float] = MappingProxyType(
    {"pod": 0.8, "external": 0.1, "host": 0.1}
)
DEFAULT_SOURCES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "pod": ("10.244.0.0/16",),
        "external": ("203.0.113.0/24",),
        "host": ("192.168.0.2",),
    }
)

PacketArray = npt.NDArray[np.void]

_GRAMMAR = "expected 'PROTO SRC:PORT -> DST:PORT [flags=SA] [from=pod|external|host]'"


@runtime_checkable
class TargetSource(Protocol):
    """What synth() accepts instead of an array (the lead's Cluster provides it)."""

    def packet_targets(self) -> npt.NDArray[np.void]: ...


# --------------------------------------------------------------------------------------
# allocation


def empty_packets(n: int) -> PacketArray:
    """n zeroed packets: family 4, origin AUTO."""
    n = _count("n", n)
    out = np.zeros(n, PACKET_DTYPE)
    out["family"] = 4
    out["origin"] = Origin.AUTO
    return out


def empty_verdicts(n: int) -> PacketArray:
    """n untouched verdicts: ACCEPT, no NAT, endpoint -1, counters 0."""
    n = _count("n", n)
    out = np.zeros(n, VERDICT_DTYPE)  # zeroed: padding bytes too, so equal verdicts are equal bytes
    _pio.reset_verdicts(out)
    return out


def empty_targets(n: int) -> PacketArray:
    """n zeroed TARGET_DTYPE rows."""
    return np.zeros(_count("n", n), TARGET_DTYPE)


# --------------------------------------------------------------------------------------
# text -> packets


def _origin_code(origin: object, field: str = "origin") -> int:
    if origin is None:
        return int(Origin.AUTO)
    if isinstance(origin, Origin):
        return int(origin)
    if isinstance(origin, str) and origin.lower() in ORIGIN_NAMES:
        return ORIGIN_NAMES.index(origin.lower())
    raise InputError("unknown origin (expected pod, external or host)", field=field, value=origin)


def _token_at(text: str, col: int, stops: str = " \t\r") -> str:
    end = col
    while end < len(text) and text[end] not in stops:
        end += 1
    return text[col:end]


def _encode(text: str, file: str | None = None) -> bytes:
    """The UTF-8 bytes the C parser reads; a lone surrogate (not text) is an InputError."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        col = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"packet line {line}, column {col}: not valid text (a lone surrogate)",
            file=file,
            line=line,
            value=text[exc.start],
        ) from None


def _parse_error(
    err: int, line_text: bytes, col: int, index: int, *, file: str | None, first_line: int
) -> InputError:
    text = line_text.decode("utf-8", "replace")
    ccol = len(line_text[:col].decode("utf-8", "replace"))  # byte -> character column
    tok = _token_at(text, ccol)
    addr = _token_at(text, ccol, " \t\r-")
    if err == _pio.E_EMPTY:
        reason = f"empty packet line ({_GRAMMAR})"
    elif err == _pio.E_PROTO:
        reason = f"unknown protocol {tok!r} (expected tcp, udp, sctp or icmp)"
    elif err == _pio.E_ADDR:
        reason = f"bad IPv4 address {addr!r}" if addr else f"missing address ({_GRAMMAR})"
    elif err == _pio.E_OCTET:
        octet = _token_at(text, ccol, " \t\r-.:")
        reason = f"IPv4 octet {octet!r} out of range 0-255"
    elif err == _pio.E_PORT:
        reason = (
            f"bad port {addr!r}"
            if addr and not addr.startswith(":")
            else "missing port (tcp, udp and sctp need ADDR:PORT)"
        )
    elif err == _pio.E_PORT_RANGE:
        reason = (
            f"port {_token_at(text, ccol, ' ' + chr(9) + chr(13) + '-')!r} out of range 0-65535"
        )
    elif err == _pio.E_ARROW:
        reason = (
            f"expected '->' between source and destination, found {tok!r}"
            if tok
            else "expected '->' and a destination"
        )
    elif err == _pio.E_TOKEN:
        reason = f"unknown option {tok!r} (expected flags=... or from=...)"
    elif err == _pio.E_FLAGS:
        reason = f"bad TCP flags {tok!r} (letters F S R P A, or none)"
    elif err == _pio.E_ORIGIN:
        reason = f"bad origin {tok!r} (expected pod, external or host)"
    elif err == _pio.E_IPV6:
        reason = f"IPv6 packets are not supported yet ({addr!r})"
    elif err == _pio.E_ICMP_PORT:
        reason = "icmp packets carry no ports"
    elif err == _pio.E_FLAGS_PROTO:
        reason = f"flags= applies to tcp packets only ({tok!r})"
    elif err == _pio.E_DUPLICATE:
        reason = f"option given twice ({tok!r})"
    else:
        reason = f"cannot parse packet (error {err})"
    lineno = first_line + index
    if file is None:
        return InputError(
            f"packet line {lineno}, column {ccol + 1}: {reason}", value=text, line=lineno
        )
    return InputError(f"column {ccol + 1}: {reason}", value=text, file=file, line=lineno)


def _fill_ts(out: PacketArray, ts: object) -> None:
    if ts is None:
        return
    if isinstance(ts, numbers.Real) and not isinstance(ts, bool):
        if not math.isfinite(float(ts)):
            raise InputError("timestamp must be finite", field="ts", value=ts)
        out["ts"] = float(ts)
        return
    try:
        arr = np.asarray(ts, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            "timestamps must be a number or a sequence of numbers", field="ts", value=ts
        ) from None
    if arr.shape != (len(out),):
        raise InputError(f"expected {len(out)} timestamps", field="ts", value=f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(
            "timestamps must be finite", field="ts", value=float(arr[~np.isfinite(arr)][0])
        )
    out["ts"] = arr


def from_strings(
    lines: Sequence[str],
    origin: str | Origin | None = None,
    ts: float | Sequence[float] | npt.NDArray[np.floating[Any]] | None = None,
) -> PacketArray:
    """Parse one packet per string; ``origin`` is the default for lines without ``from=``.

    ``ts``: None (0.0), one number for all, or one per line. Bad lines raise InputError
    naming the line number (1-based), the column and the text.
    """
    if isinstance(lines, (str, bytes)):
        raise InputError(
            "expected a list of packet strings, not a single string", field="lines", value=lines
        )
    if not isinstance(lines, Iterable):
        raise InputError("expected a list of packet strings", field="lines", value=lines)
    default = _origin_code(origin)
    lines = list(lines)
    n = len(lines)
    out = empty_packets(n)
    if n == 0:
        _fill_ts(out, ts)
        return out
    try:
        joined = "\n".join(lines)
    except TypeError:
        bad = next(i for i, s in enumerate(lines) if not isinstance(s, str))
        raise InputError(
            f"packet line {bad + 1} is not a string", value=lines[bad], line=bad + 1
        ) from None
    buf = _encode(joined)
    _count, err, line, col, lo, hi = _pio.parse_packets(buf, out, default, False)
    if err:
        # an item holding a newline shifts the line numbers (and ends in E_CAPACITY at the
        # latest): name that item rather than a line of the joined text
        if buf.count(b"\n") != n - 1:
            bad = next(i for i, s in enumerate(lines) if "\n" in s)
            raise InputError(
                f"packet line {bad + 1} contains a newline", value=lines[bad], line=bad + 1
            )
        raise _parse_error(err, buf[lo:hi], col, line, file=None, first_line=1)
    _fill_ts(out, ts)
    return out


def parse(line: str, origin: str | Origin | None = None, ts: float = 0.0) -> PacketArray:
    """Parse one packet line into a 1-element packet array."""
    if not isinstance(line, str):
        raise InputError("packet must be a string", value=line)
    return from_strings([line], origin=origin, ts=ts)


def from_text(
    text: str,
    origin: str | Origin | None = None,
    *,
    file: str | None = None,
    ts: float | None = None,
) -> PacketArray:
    """Parse a packet file's text: one packet per line, blank lines and ``#`` comments skipped.

    Errors name ``file`` (when given) and the line number in the text.
    """
    if not isinstance(text, str):
        raise InputError("packet text must be a string", file=file, value=type(text).__name__)
    default = _origin_code(origin)
    buf = _encode(text, file)
    out = empty_packets(buf.count(b"\n") + 1)
    count, err, line, col, lo, hi = _pio.parse_packets(buf, out, default, True)
    if err:
        raise _parse_error(err, buf[lo:hi], col, line, file=file, first_line=1)
    out = out[:count].copy()
    _fill_ts(out, ts)
    return out


def to_strings(packets: PacketArray) -> list[str]:
    """Packet lines that from_strings() turns back into the same packets (ts aside)."""
    arr = _packet_array(packets)
    if len(arr) == 0:
        return []
    return _pio.format_packets(arr).decode("ascii").split("\n")


def _shifted(batch: PacketArray, start: float | None, default_gap: float) -> npt.NDArray[Any]:
    """The batch's timestamps moved to begin at ``start`` (default: ``default_gap`` after
    its last packet), spacing kept: the result follows the batch on one clock."""
    ts = batch["ts"]
    if len(ts) == 0:
        return ts.copy()
    if start is None:
        start = float(ts.max()) + default_gap
    start = _real("start", start)
    shifted: npt.NDArray[Any] = ts - ts[0] + start
    return shifted


def replies(
    batch: PacketArray, verdicts: PacketArray, *, start: float | None = None
) -> PacketArray:
    """Each packet's first reply (SYN-ACK for TCP) from where it went (the endpoint after
    DNAT) back to where it came from (the masquerade address after SNAT), entering from
    a pod. Timed after the batch: from ``start`` (default 1 ms after its last packet;
    pass ``dp.clock`` when rows were left out), the batch's spacing kept. Give it the
    packets that got through (action ACCEPT or DNAT): a node sees no reply to the rest."""
    batch, verdicts = _packet_array(batch), np.asarray(verdicts)
    if verdicts.dtype != VERDICT_DTYPE or len(verdicts) != len(batch):
        raise InputError(
            "must be the VERDICT_DTYPE array process() returned for this batch",
            field="verdicts",
            value=f"{verdicts.dtype}, {len(verdicts)} rows",
        )
    rep = batch.copy()
    dnat = verdicts["dnat_ip"] != 0
    snat = verdicts["snat_ip"] != 0
    rep["src_ip"] = np.where(dnat, verdicts["dnat_ip"], batch["dst_ip"])
    rep["src_port"] = np.where(dnat, verdicts["dnat_port"], batch["dst_port"])
    rep["dst_ip"] = np.where(snat, verdicts["snat_ip"], batch["src_ip"])
    rep["dst_port"] = np.where(snat, verdicts["snat_port"], batch["src_port"])
    rep["tcp_flags"] = np.where(batch["proto"] == 6, TcpFlag.SYN | TcpFlag.ACK, 0)
    rep["origin"] = Origin.POD  # endpoints are pods
    rep["ts"] = _shifted(batch, start, 0.001)
    return rep


def next_packets(batch: PacketArray, *, start: float | None = None) -> PacketArray:
    """The next packet of each flow of ``batch`` from its client (an ACK for TCP), from
    ``start`` (default 1 s after its last packet), the batch's spacing kept: after
    ``replies``, each one is a packet of an established flow (a conntrack hit)."""
    nxt = _packet_array(batch).copy()
    nxt["tcp_flags"] = np.where(nxt["proto"] == 6, TcpFlag.ACK, 0)
    nxt["ts"] = _shifted(nxt, start, 1.0)
    return nxt


def dnat_text(verdict: Any) -> str | None:
    """A verdict row's DNAT destination as "ip:port" (None when not translated)."""
    if not verdict["dnat_ip"]:
        return None
    return f"{u32_to_ip(int(verdict['dnat_ip']))}:{int(verdict['dnat_port'])}"


def _packet_array(packets: object, name: str = "packets") -> PacketArray:
    if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE:
        raise InputError(
            "expected a numpy array of PACKET_DTYPE",
            field=name,
            value=getattr(packets, "dtype", type(packets).__name__),
        )
    if packets.ndim != 1:
        raise InputError("expected a 1-D packet array", field=name, value=packets.shape)
    return packets


# --------------------------------------------------------------------------------------
# IPv4 conversion


def _ipv4_error(err: int, text: str, field: str) -> InputError:
    if err == _pio.E_IPV6:
        return InputError("IPv6 addresses are not supported yet", field=field, value=text)
    if err == _pio.E_OCTET:
        return InputError("IPv4 octet out of range 0-255", field=field, value=text)
    return InputError("not an IPv4 address", field=field, value=text)


@overload
def ip_to_u32(ip: str | ipaddress.IPv4Address) -> int: ...  # type: ignore[overload-overlap]
@overload
def ip_to_u32(ip: Iterable[str] | npt.NDArray[np.str_ | np.object_]) -> npt.NDArray[np.uint32]: ...


def ip_to_u32(ip: Any) -> Any:
    """Dotted quad (sloppy: leading zeros are decimal) → int; many → uint32 array."""
    if isinstance(ip, ipaddress.IPv4Address):
        return int(ip)
    if isinstance(ip, str):
        out1 = np.zeros(1, np.uint32)
        if "\n" in ip:
            raise _ipv4_error(_pio.E_ADDR, ip, "ip")
        _, err, _ = _pio.parse_ipv4_lines(ip.encode("utf-8", "surrogateescape"), out1)
        if err:
            raise _ipv4_error(err, ip, "ip")
        return int(out1[0])
    if isinstance(ip, np.ndarray):
        if ip.dtype.kind not in "UO" and ip.size:
            raise InputError("expected IPv4 address strings", field="ip", value=str(ip.dtype))
        shape: tuple[int, ...] = ip.shape
        items = ip.ravel().tolist()
    elif isinstance(ip, Iterable) and not isinstance(ip, (bytes, Mapping)):
        items = list(ip)
        shape = (len(items),)
    else:
        raise InputError(
            "expected an IPv4 address string or a sequence of them", field="ip", value=ip
        )
    out = np.zeros(len(items), np.uint32)
    if not items:
        return out.reshape(shape)
    try:
        joined = "\n".join(items)
    except TypeError:
        bad = next(i for i, s in enumerate(items) if not isinstance(s, str))
        raise InputError(
            "not an IPv4 address string", field=f"ip[{bad}]", value=items[bad]
        ) from None
    buf = joined.encode("utf-8", "surrogateescape")
    _, err, index = _pio.parse_ipv4_lines(buf, out)
    if err:
        if buf.count(b"\n") != len(items) - 1:  # an item held a newline
            bad = next(i for i, s in enumerate(items) if "\n" in s)
            raise _ipv4_error(_pio.E_ADDR, items[bad], f"ip[{bad}]")
        index = min(index, len(items) - 1)
        raise _ipv4_error(err, items[index], f"ip[{index}]")
    return out.reshape(shape)


@overload
def u32_to_ip(value: int) -> str: ...
@overload
def u32_to_ip(value: Iterable[int] | npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.str_]: ...


def u32_to_ip(value: Any) -> Any:
    """uint32 → dotted quad; an array gives a same-shape ``U15`` string array."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        v = int(value)
        if not 0 <= v <= 0xFFFFFFFF:
            raise InputError("IPv4 address out of range 0-4294967295", field="ip", value=v)
        return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
    arr = np.asarray(value)
    if arr.dtype.kind not in "ui" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise InputError("expected integer IPv4 addresses", field="ip", value=str(arr.dtype))
    if arr.dtype.kind == "i" or arr.dtype.itemsize > 4:
        if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
            bad = arr[(arr < 0) | (arr > 0xFFFFFFFF)].flat[0]
            raise InputError("IPv4 address out of range 0-4294967295", field="ip", value=int(bad))
    flat = np.ascontiguousarray(arr.ravel(), dtype=np.uint32)
    out = np.empty(flat.shape[0], "U15")
    _pio.format_ipv4(flat, out.view(np.uint32).reshape(flat.shape[0], 15))
    return out.reshape(arr.shape)


# --------------------------------------------------------------------------------------
# origin classification


def resolve_origins(
    packets: PacketArray, cluster_cidrs: Iterable[str] = (), host_ips: Iterable[str] = ()
) -> PacketArray:
    """Give every AUTO packet an origin, in place (returns the array).

    A source that is one of ``host_ips`` or in 127.0.0.0/8 is the host, one inside a
    ``cluster_cidrs`` range is a pod, anything else is external (DESIGN: trace --from).
    """
    arr = _packet_array(packets)
    auto = arr["origin"] == Origin.AUTO
    if not auto.any():
        return arr
    src = arr["src_ip"][auto]
    pod = np.zeros(src.shape, bool)
    for cidr in _as_str_list(cluster_cidrs, "cluster_cidrs"):
        net = _v4_network(cidr, "cluster_cidrs")
        mask = np.uint32((0xFFFFFFFF << (32 - net.prefixlen)) & 0xFFFFFFFF)
        pod |= (src & mask) == np.uint32(int(net.network_address))
    hosts = [_v4_address(h, "host_ips") for h in _as_str_list(host_ips, "host_ips")]
    host = np.isin(src, np.asarray(hosts, np.uint32)) | ((src >> 24) == 127)
    arr["origin"][auto] = np.where(
        host, Origin.HOST, np.where(pod, Origin.POD, Origin.EXTERNAL)
    ).astype(np.uint8)
    return arr


# --------------------------------------------------------------------------------------
# argument validation


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InputError("must be a non-negative integer", field=name, value=value)
    if int(value) < 0:
        raise InputError("must be a non-negative integer", field=name, value=value)
    return int(value)


def _real(
    name: str,
    value: object,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise InputError("must be a number", field=name, value=value)
    v = float(value)
    if not math.isfinite(v):
        raise InputError("must be finite", field=name, value=value)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InputError(f"must be {'>' if lo_open else '>='} {lo:g}", field=name, value=value)
    if hi is not None and v > hi:
        raise InputError(f"must be <= {hi:g}", field=name, value=value)
    return v


def _as_str_list(value: object, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise InputError("expected a list of addresses or CIDRs", field=field, value=value)
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(
                "expected an address or CIDR string", field=f"{field}[{i}]", value=item
            )
    return items


def _v4_network(text: str, field: str) -> ipaddress.IPv4Network:
    try:
        net = parse_cidr(text) if "/" in text else parse_cidr(f"{text}/32")
    except ValueError:
        raise InputError("not an address or CIDR", field=field, value=text) from None
    if net.version != 4:
        raise InputError("IPv6 is not supported yet", field=field, value=text)
    return net


def _v4_address(text: str, field: str) -> int:
    try:
        addr = parse_ip(text)
    except ValueError:
        raise InputError("not an IP address", field=field, value=text) from None
    if addr.version != 4:
        raise InputError("IPv6 is not supported yet", field=field, value=text)
    return int(addr)


def _source_ranges(items: list[str], field: str) -> list[tuple[int, int]]:
    """(first address, count) per entry; a CIDR of /30 or wider skips network and broadcast."""
    ranges = []
    for i, text in enumerate(items):
        net = _v4_network(text, f"{field}[{i}]")
        size = net.num_addresses
        base = int(net.network_address)
        if net.prefixlen <= 30:
            base, size = base + 1, size - 2
        ranges.append((base, size))
    return ranges


def _target_array(targets: object) -> npt.NDArray[np.void]:
    if isinstance(targets, TargetSource) and not isinstance(targets, np.ndarray):
        targets = targets.packet_targets()
    if not isinstance(targets, np.ndarray) or targets.dtype.names is None:
        raise InputError(
            "expected a TARGET_DTYPE array or an object with packet_targets()",
            field="targets",
            value=type(targets).__name__,
        )
    missing = [f for f in _TARGET_FIELDS if f not in targets.dtype.names]
    if missing:
        raise InputError(
            f"target array lacks field(s) {', '.join(missing)}",
            field="targets",
            value=str(targets.dtype),
        )
    if targets.ndim != 1:
        raise InputError("expected a 1-D target array", field="targets", value=targets.shape)
    if targets.dtype == TARGET_DTYPE:
        arr = np.ascontiguousarray(targets)
    else:
        arr = np.zeros(len(targets), TARGET_DTYPE)
        for f in _TARGET_FIELDS:
            col = np.asarray(targets[f])
            info = np.iinfo(TARGET_DTYPE[f])
            if col.size and (
                col.dtype.kind not in "ui" or col.min() < info.min or col.max() > info.max
            ):
                raise InputError(
                    f"target field {f} must be integers in {info.min}-{info.max}",
                    field=f"targets.{f}",
                    value=str(col.dtype),
                )
            arr[f] = col
    bad = ~np.isin(arr["proto"], np.array(list(PROTO_NUMBERS.values()), np.uint8))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            "unknown protocol number (expected 6, 17, 132 or 1)",
            field=f"targets[{i}].proto",
            value=int(arr["proto"][i]),
        )
    bad = arr["origins"] > 7
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            "origins must be a mask of 1 (pod), 2 (external), 4 (host)",
            field=f"targets[{i}].origins",
            value=int(arr["origins"][i]),
        )
    return arr


# --------------------------------------------------------------------------------------
# traffic synthesis


def synth(
    targets: npt.NDArray[np.void] | TargetSource,
    n: int,
    *,
    seed: int,
    popularity: str = "uniform",
    zipf_s: float = 1.0,
    new_flow_share: float = 0.5,
    origin_mix: Mapping[str, float] = DEFAULT_ORIGIN_MIX,
    sources: Mapping[str, Sequence[str] | str] | None = None,
    rate: float = 1e6,
    start: float = 0.0,
) -> PacketArray:
    """Synthetic traffic: ``n`` packets aimed at ``targets``, fully determined by ``seed``.

    Each packet opens a new flow with probability ``new_flow_share`` (the first always
    does) or repeats a uniformly chosen earlier flow's 5-tuple. A new flow picks its origin
    from ``origin_mix`` (origins without an eligible target are left out and the rest
    renormalised), then a target allowed for that origin (``origins`` bitmask) with
    ``popularity`` "uniform" or "zipf" (weight 1/rank**zipf_s, rank = position in
    ``targets``), a source address uniformly from that origin's ``sources`` ranges (a
    CIDR of /30 or wider without its network and broadcast addresses) and an ephemeral
    source port (32768-60999), stepping the port up to find a 5-tuple no earlier flow has.
    TCP packets of a new flow carry SYN, repeats ACK. Timestamps start at ``start`` and
    advance by exponential gaps of mean 1/``rate`` seconds.

    ``sources`` maps origin name → CIDRs/addresses; origins it omits take the targets
    object's ``packet_sources()`` (if any, and only when ``sources`` is None), else
    DEFAULT_SOURCES.
    """
    tsource = targets
    tarr = _target_array(targets)
    n = _count("n", n)
    if (
        isinstance(seed, bool)
        or not isinstance(seed, (numbers.Integral, np.integer))
        or int(seed) < 0
    ):
        raise InputError("must be a non-negative integer", field="seed", value=seed)
    if popularity not in ("uniform", "zipf"):
        raise InputError("must be 'uniform' or 'zipf'", field="popularity", value=popularity)
    s = _real("zipf_s", zipf_s, lo=0.0)
    share = _real("new_flow_share", new_flow_share, lo=0.0, hi=1.0)
    rate_v = _real("rate", rate, lo=0.0, lo_open=True)
    start_v = _real("start", start)
    if not isinstance(origin_mix, Mapping):
        raise InputError(
            "expected a mapping of origin name to share", field="origin_mix", value=origin_mix
        )
    mix = [0.0, 0.0, 0.0]
    for key, val in origin_mix.items():
        if key not in ORIGIN_NAMES:
            raise InputError(
                "unknown origin (expected pod, external or host)", field="origin_mix", value=key
            )
        mix[ORIGIN_NAMES.index(key)] = _real(f"origin_mix[{key}]", val, lo=0.0)
    if sum(mix) <= 0:
        raise InputError(
            "origin shares must not all be zero", field="origin_mix", value=dict(origin_mix)
        )

    src_spec: dict[str, Any] = dict(DEFAULT_SOURCES)
    given: object = sources
    given_field = "sources"
    if sources is None and hasattr(tsource, "packet_sources"):
        given = tsource.packet_sources()
        given_field = "packet_sources()"
    if given is not None:
        if not isinstance(given, Mapping):
            raise InputError(
                "expected a mapping of origin name to addresses/CIDRs",
                field=given_field,
                value=given,
            )
        for key, val in given.items():
            if key not in ORIGIN_NAMES:
                raise InputError(
                    "unknown origin (expected pod, external or host)", field=given_field, value=key
                )
            src_spec[key] = val
    src_base: list[int] = []
    src_cum: list[float] = []
    src_off = [0]
    src_fields: list[str] = []
    for o, name in enumerate(ORIGIN_NAMES):
        in_given = isinstance(given, Mapping) and name in given
        field = f"{given_field}[{name}]" if in_given else f"DEFAULT_SOURCES[{name}]"
        src_fields.append(field)
        ranges = _source_ranges(_as_str_list(src_spec[name], field), field)
        total = 0
        for base, size in ranges:
            total += size
            src_base.append(base)
            src_cum.append(float(total))
        src_off.append(len(src_base))
        if total == 0 and mix[o] > 0:
            mix[o] = -1.0  # marker: needs sources (checked once eligibility is known)

    # eligibility and popularity
    if len(tarr) == 0:
        raise InputError("no targets to send packets to", field="targets", value=0)
    ranks = np.arange(1, len(tarr) + 1, dtype=np.float64)
    zipf = popularity == "zipf" and s > 0
    tgt_index: list[npt.NDArray[np.int64]] = []
    tgt_cum: list[npt.NDArray[np.float64]] = []
    tgt_off = [0]
    any_eligible = False
    for o, name in enumerate(ORIGIN_NAMES):
        elig = np.flatnonzero(tarr["origins"] & ORIGIN_BITS[name])
        any_eligible |= elig.size > 0
        if elig.size == 0:
            mix[o] = 0.0
        elif mix[o] < 0:
            raise InputError(
                "origin has eligible targets and a share but no source address",
                field=src_fields[o],
                value=src_spec[name],
            )
        tgt_index.append(elig.astype(np.int64))
        if zipf and elig.size:
            # 1/rank**s relative to the origin's most popular target (no underflow to 0)
            tgt_cum.append(np.cumsum((ranks[elig] / ranks[elig[0]]) ** -s))
        else:
            tgt_cum.append(np.arange(1, elig.size + 1, dtype=np.float64))
        tgt_off.append(tgt_off[-1] + elig.size)
    if not any_eligible:
        raise InputError(
            "no target is eligible for any origin (origins bitmask is 0)",
            field="targets.origins",
            value=0,
        )
    if sum(mix) <= 0:
        raise InputError(
            "no origin with a share in origin_mix has an eligible target",
            field="origin_mix",
            value=dict(origin_mix),
        )

    out = np.empty(n, PACKET_DTYPE)
    if n == 0:
        return out
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    u = rng.random((_traffic.UNIFORM_ROWS, n))
    gaps = rng.standard_exponential(n)
    gaps /= rate_v
    flows = _traffic.new_flow_count(u, n, share)
    cap = 1 << max(1, (2 * flows - 1).bit_length())  # 5-tuple set at most half full
    _traffic.generate(
        out,
        u,
        gaps,
        start_v,
        share,
        tarr,
        np.cumsum(np.asarray(mix, np.float64)),
        np.concatenate(tgt_cum).astype(np.float64),
        np.concatenate(tgt_index),
        np.asarray(tgt_off, np.int64),
        np.asarray(src_base, np.uint32),
        np.asarray(src_cum, np.float64),
        np.asarray(src_off, np.int64),
        np.empty(n, np.int64),
        np.zeros((cap, 2), np.uint64),
    )
    return out
