"""Real traffic in and out: pcap / pcapng captures as packet batches, verdicts as a pcap.

``read(path)`` parses a capture with dpkt (Ethernet, 802.1Q VLAN, Linux cooked SLL and
SLL2, raw IP and null/loopback link types): every IPv4 TCP, UDP or SCTP packet becomes a
PACKET_DTYPE row (its capture time, TCP flags, origin), and the rest is counted per
reason in ``Capture.skipped``:

- ``not IPv4``: IPv6, ARP, LLDP, ... (the IPv6 dataplane is not emulated);
- ``IPv4 fragment``: a non-first fragment, or a first one with more to come (the ports
  of the flow are not all in it; the kernel's conntrack reassembles first, the emulator
  does not);
- ``ICMP`` and ``IP protocol N``: no ports (ICMP errors of flows are not emulated);
- ``truncated``: shorter than its IPv4 header or its TCP / UDP / SCTP ports (a capture
  with a small snap length);
- ``link type N``: a capture on a link type this reader does not know.

Origin: ``node_ips`` (the node's addresses: HOST), ``pod_cidrs`` (POD); anything else is
EXTERNAL. Without either, rows are AUTO and the Dataplane classifies them by its own
node and cluster CIDR. Times: seconds from the capture's first packet (``relative``, the
default) or the capture's own epoch times; rows are sorted by time (stable), as the
Dataplane requires, and ``Capture.reordered`` counts the packets that moved.

``write(path, capture, verdicts)`` writes what the node emits: each packet with the
verdict's translation applied (destination to ``dnat_ip:dnat_port``, source to
``snat_ip:snat_port`` when set, in either direction of a flow), IPv4 header and TCP / UDP
/ SCTP checksums recomputed, TTL unchanged; dropped and rejected packets are left out. The
file is a classic pcap of link type RAW (101, bare IPv4), which Wireshark, tcpdump and
dpkt read.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .packets import Action, Origin, empty_packets, resolve_origins

__all__ = ["LINKTYPE_RAW", "Capture", "read", "write"]

LINKTYPE_RAW = 101  # bare IPv4/IPv6 packets, the linktype written
_ETH, _NULL, _LOOP, _SLL, _SLL2, _IPV4 = 1, 0, 108, 113, 276, 228
_RAW = {12, 14, 101}  # DLT_RAW as BSDs and Linux number it, and LINKTYPE_RAW
_PROTOS = {6: "tcp", 17: "udp", 132: "sctp"}
_TCP_FLAGS = 0x1F  # FIN SYN RST PSH ACK: the flags PACKET_DTYPE carries


@dataclass
class Capture:
    """A capture read: ``packets`` (PACKET_DTYPE, sorted by ``ts``), the IPv4 bytes of each
    row (``frames``, for ``write``), the packets skipped per reason, and counts."""

    packets: npt.NDArray[np.void]
    frames: list[bytes]
    skipped: dict[str, int] = field(default_factory=dict)
    total: int = 0  # packets in the file
    linktype: int = 0
    start: float = 0.0  # the first packet's capture time (epoch seconds)
    reordered: int = 0  # rows that moved when sorting by time
    relative: bool = True  # ts counts from ``start`` (else: the capture's epoch times)

    def summary(self) -> str:
        """One line: packets read, kept, and skipped by reason."""
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{self.total} packets read, {len(self.packets)} IPv4 TCP/UDP/SCTP kept, "
            f"{skipped} skipped" + (f" ({why})" if why else "")
        )


def _frames(f: BinaryIO, path: str) -> tuple[int, Iterator[tuple[float, bytes]]]:
    import dpkt

    magic = f.read(4)
    f.seek(0)
    try:
        if magic == b"\x0a\x0d\x0d\x0a":
            ng = dpkt.pcapng.Reader(f)
            return int(ng.datalink()), ((float(ts), bytes(buf)) for ts, buf in ng)
        pc = dpkt.pcap.Reader(f)
        return int(pc.datalink()), ((float(ts), bytes(buf)) for ts, buf in pc)
    except (ValueError, dpkt.dpkt.Error, struct.error) as exc:
        raise InputError(f"not a pcap or pcapng capture ({exc})", file=path) from None


def _ip_payload(linktype: int, buf: bytes) -> tuple[bytes | None, str | None]:
    """The network-layer bytes of a frame and None, or None and why not IPv4."""
    ethertype: int
    if linktype == _ETH:
        if len(buf) < 14:
            return None, "truncated"
        ethertype, off = struct.unpack_from("!H", buf, 12)[0], 14
        while ethertype in (0x8100, 0x88A8) and len(buf) >= off + 4:  # VLAN tags
            ethertype, off = struct.unpack_from("!H", buf, off + 2)[0], off + 4
    elif linktype == _SLL:
        if len(buf) < 16:
            return None, "truncated"
        ethertype, off = struct.unpack_from("!H", buf, 14)[0], 16
    elif linktype == _SLL2:
        if len(buf) < 20:
            return None, "truncated"
        ethertype, off = struct.unpack_from("!H", buf, 0)[0], 20
    elif linktype in (_NULL, _LOOP):
        if len(buf) < 4:
            return None, "truncated"
        family = struct.unpack_from("=I", buf, 0)[0]
        if family not in (2, 0x02000000):
            return None, "not IPv4"
        return buf[4:], None
    elif linktype in _RAW or linktype == _IPV4:
        ethertype, off = 0x0800, 0
    else:
        return None, f"link type {linktype}"
    if ethertype != 0x0800:
        return None, "not IPv4"
    return buf[off:], None


def _parse_ipv4(ip: bytes) -> tuple[tuple[int, int, int, int, int, int] | None, str | None]:
    """(src, dst, proto, sport, dport, flags) of an IPv4 packet, or why it is skipped."""
    if len(ip) < 20:
        return None, "truncated"
    if ip[0] >> 4 != 4:
        return None, "not IPv4"
    ihl = (ip[0] & 0x0F) * 4
    if ihl < 20 or len(ip) < ihl:
        return None, "truncated"
    frag = struct.unpack_from("!H", ip, 6)[0]
    if frag & 0x3FFF:  # MF set or an offset: not a whole datagram
        return None, "IPv4 fragment"
    proto = ip[9]
    if proto == 1:
        return None, "ICMP"
    if proto not in _PROTOS:
        return None, f"IP protocol {proto}"
    src, dst = struct.unpack_from("!II", ip, 12)
    l4 = ip[ihl:]
    need = 14 if proto == 6 else 4
    if len(l4) < need:
        return None, "truncated"
    sport, dport = struct.unpack_from("!HH", l4, 0)
    flags = l4[13] & _TCP_FLAGS if proto == 6 else 0
    return (src, dst, proto, sport, dport, flags), None


def read(
    path: str | Path,
    *,
    node_ips: Iterable[str] = (),
    pod_cidrs: Iterable[str] = (),
    relative: bool = True,
) -> Capture:
    """A pcap or pcapng capture's IPv4 TCP / UDP / SCTP packets as a batch (module doc)."""
    name = str(path)
    rows: list[tuple[float, int, int, int, int, int, int]] = []
    frames: list[bytes] = []
    skipped: Counter[str] = Counter()
    total = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the reader iterates lazily)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", file=name) from None
    with f:
        linktype, frames_in = _frames(f, name)
        try:
            for ts, buf in frames_in:
                total += 1
                ip, why = _ip_payload(linktype, buf)
                parsed = None
                if ip is not None:
                    parsed, why = _parse_ipv4(ip)
                if parsed is None or ip is None:
                    skipped[why or "unknown"] += 1
                    continue
                total_len = struct.unpack_from("!H", ip, 2)[0]
                if total_len >= 20:
                    ip = ip[:total_len]  # Ethernet padding off
                rows.append((ts, *parsed))
                frames.append(bytes(ip))
        except Exception as exc:  # dpkt's errors on a cut or corrupt file
            if isinstance(exc, InputError):
                raise
            raise InputError(
                f"corrupt capture after {total} packets ({type(exc).__name__}: {exc})",
                file=name,
            ) from None
    out = empty_packets(len(rows))
    start = 0.0
    if rows:
        cols = list(zip(*rows))
        times = np.asarray(cols[0], np.float64)
        start = float(times.min())
        out["ts"] = times - start if relative else times
        for k, name_ in enumerate(("src_ip", "dst_ip", "proto", "src_port", "dst_port")):
            out[name_] = np.asarray(cols[k + 1])
        out["tcp_flags"] = np.asarray(cols[6], np.uint8)
    order = np.argsort(out["ts"], kind="stable")
    reordered = int(np.count_nonzero(order != np.arange(len(order))))
    if reordered:
        out = out[order]
        frames = [frames[i] for i in order.tolist()]
    # IPv6 addresses and ranges classify nothing here (only IPv4 rows are kept)
    nodes = [ip for ip in node_ips if ":" not in ip]
    pods = [c for c in pod_cidrs if ":" not in c]
    if nodes or pods:
        resolve_origins(out, pods, nodes)
    return Capture(out, frames, dict(skipped), total, linktype, start, reordered, relative)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int(np.frombuffer(data, ">u2").sum(dtype=np.uint64)) if data else 0
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def translate(frame: bytes, src: tuple[int, int] | None, dst: tuple[int, int] | None) -> bytes:
    """An IPv4 TCP / UDP / SCTP packet with its source and/or destination (address, port)
    rewritten and its checksums recomputed (UDP's stays 0 when it was 0)."""
    ip = bytearray(frame)
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    if src is not None:
        struct.pack_into("!I", ip, 12, src[0])
        struct.pack_into("!H", ip, ihl, src[1])
    if dst is not None:
        struct.pack_into("!I", ip, 16, dst[0])
        struct.pack_into("!H", ip, ihl + 2, dst[1])
    struct.pack_into("!H", ip, 10, 0)
    struct.pack_into("!H", ip, 10, _checksum(bytes(ip[:ihl])))
    l4 = ip[ihl:]
    if proto == 132:
        import dpkt

        if len(l4) >= 12:
            struct.pack_into("!I", l4, 8, 0)
            crc = dpkt.crc32c.done(dpkt.crc32c.add(0xFFFFFFFF, bytes(l4)))
            struct.pack_into("!I", l4, 8, crc)  # done() swapped it: little-endian on the wire
        return bytes(ip[:ihl] + l4)
    at = 16 if proto == 6 else 6
    if len(l4) < at + 2 or (proto == 17 and l4[6:8] == b"\0\0"):
        return bytes(ip[:ihl] + l4)
    struct.pack_into("!H", l4, at, 0)
    pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, proto, len(l4))
    value = _checksum(pseudo + bytes(l4))
    if proto == 17 and value == 0:
        value = 0xFFFF
    struct.pack_into("!H", l4, at, value)
    return bytes(ip[:ihl] + l4)


def translated(capture: Capture, verdicts: npt.NDArray[Any]) -> list[tuple[float, bytes]]:
    """The packets the node emits: (capture time, IPv4 bytes) of every packet that got
    through, translated as its verdict says."""
    if len(verdicts) != len(capture.packets):
        raise InputError(
            "one verdict per packet of the capture",
            field="verdicts",
            value=f"{len(verdicts)} rows for {len(capture.packets)} packets",
        )
    out: list[tuple[float, bytes]] = []
    base = capture.start if capture.relative else 0.0  # the capture's own clock again
    for row, v, frame in zip(capture.packets, verdicts, capture.frames):
        if int(v["action"]) not in (Action.ACCEPT, Action.DNAT):
            continue
        src = (int(v["snat_ip"]), int(v["snat_port"])) if v["snat_ip"] else None
        dst = (int(v["dnat_ip"]), int(v["dnat_port"])) if v["dnat_ip"] else None
        data = frame if src is None and dst is None else translate(frame, src, dst)
        out.append((float(row["ts"]) + base, data))
    return out


def write(path: str | Path, capture: Capture, verdicts: npt.NDArray[Any]) -> int:
    """Write the translated packets (``translated``) as a pcap of link type RAW; the
    number of packets written."""
    import dpkt

    packets = translated(capture, verdicts)
    try:
        with open(path, "wb") as f:
            writer = dpkt.pcap.Writer(f, snaplen=65535, linktype=LINKTYPE_RAW, nano=True)
            for ts, data in packets:
                writer.writepkt(data, ts=ts)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror})", file=str(path)) from None
    return len(packets)


def origins_named(capture: Capture) -> dict[str, int]:
    """Rows per origin (pod, external, host, auto)."""
    names = {int(o): o.name.lower() for o in Origin}
    values, counts = np.unique(capture.packets["origin"], return_counts=True)
    return {names.get(int(v), str(int(v))): int(c) for v, c in zip(values, counts)}
