"""Send real connections through the lab's node and read the kernel's decision per flow.

Each probe is one new flow: a TCP connect or one UDP datagram from a socket bound to the
probe's source address and a never-reused source port, in the namespace of its origin.
The decision comes from two observations:

* the node namespace's conntrack table, read over netlink after each wave: an entry is
  confirmed only once the packet has passed every hook, so its reply tuple tells DNAT
  (reply source is the endpoint) and masquerade (reply destination is not the client);
  no entry means a filter rule ended the flow first. (Conntrack deletes an entry whose
  only reply is a RST, hence the listeners below.)
* the client's fate: answered (SYN-ACK / echo), refused (the ICMP error of a REJECT),
  dropped (a host client's own packet dropped in OUTPUT fails with EPERM) or nothing
  within the timeout (DROP).

Every address a probe can land on has a listener (wildcard per port in the pod and node
namespaces, echoing UDP from the address it was sent to), so "refused" never comes from a
closed port. A flow confirmed before a filter rule dropped it (host traffic to a local
address: confirmed at POSTROUTING, dropped in INPUT) times out although a listener waits.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .. import signals
from .topology import NETLINK_NETFILTER, Lab, LabError

PROTOS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
ORIGIN_ROLE = {"pod": "pod", "external": "ext", "host": "node"}
IPS_SEEN_REPLY = 1 << 1  # linux/netfilter/nf_conntrack_common.h
IP_PKTINFO = 8  # linux/in.h; not exported by Python's socket module
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; likewise
_LINGER_RST = struct.pack("ii", 1, 0)
_REFUSED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
# a locally generated packet dropped by a netfilter rule fails its send with EPERM
_DROPPED = {errno.EPERM, errno.EACCES}
_PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}


@dataclass(frozen=True, slots=True)
class Probe:
    proto: str  # tcp, udp
    src: str
    sport: int
    dst: str
    dport: int
    origin: str  # pod, external, host

    def packet(self) -> str:
        return f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclass(slots=True)
class KernelResult:
    probe: Probe
    client: str  # answered, refused, dropped (EPERM), timeout
    confirmed: bool  # the node's conntrack confirmed the flow
    reply: tuple[str, int, str, int] | None  # conntrack reply tuple (src, sport, dst, dport)
    verdict: str  # ACCEPT, DNAT, DROP, REJECT (or UNKNOWN)
    dnat: str | None  # "ip:port"
    masquerade: bool
    seconds: float  # client's wait for its answer

    @property
    def signature(self) -> tuple[str, str | None, bool]:
        if self.verdict in ("DROP", "REJECT", "UNKNOWN"):
            return (self.verdict, None, False)
        return (self.verdict, self.dnat, self.masquerade)


class Servers:
    """Listeners in the lab: per namespace role, wildcard TCP listeners and UDP echo
    sockets on every (proto, port) asked for, served by one bounded thread."""

    def __init__(
        self, lab: Lab, ports: dict[str, set[tuple[str, int]]], max_seconds: float = 3600.0
    ):
        self.lab = lab
        self._stop = threading.Event()
        self._socks: list[tuple[socket.socket, str]] = []
        for role, wanted in ports.items():
            specs = [(PROTOS[proto], ("0.0.0.0", port)) for proto, port in sorted(wanted)]
            socks = lab.sockets(role, specs)
            for (proto, _), s in zip(sorted(wanted), socks):
                if proto == "tcp":
                    s.listen(4096)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                    # a wave's datagrams to one port must all fit while the echo thread
                    # waits for the CPU (root may exceed net.core.rmem_max)
                    with contextlib.suppress(OSError):
                        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
                self._socks.append((s, proto))
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._serve, name="kpe-servers", daemon=True)
        self._thread.start()
        lab.on_close(self.close)

    def _serve(self) -> None:
        ep = select.epoll()
        kinds = {}
        for s, proto in self._socks:
            ep.register(s.fileno(), select.EPOLLIN)
            kinds[s.fileno()] = (s, proto)
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                for fd, _ in ep.poll(0.05):
                    s, proto = kinds[fd]
                    for _ in range(256):  # bounded drain per wake-up
                        try:
                            if proto == "tcp":
                                conn, _ = s.accept()
                                conn.close()  # FIN, not RST: the client must see an answer
                            else:
                                self._echo(s)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
        finally:
            ep.close()

    @staticmethod
    def _echo(s: socket.socket) -> None:
        """Answer from the address the datagram was sent to (a wildcard socket would pick
        the route's source, which conntrack would see as a second flow)."""
        data, anc, _, addr = s.recvmsg(2048, socket.CMSG_SPACE(12))
        cmsg = [
            (lvl, typ, d) for lvl, typ, d in anc if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO
        ]
        if cmsg:
            _ifindex, _spec_dst, dst = struct.unpack("=I4s4s", cmsg[0][2][:12])
            info = struct.pack("=I4s4s", 0, dst, b"\0\0\0\0")
            s.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, addr)
        else:
            s.sendto(data, addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s, _ in self._socks:
            s.close()
        self._socks = []


class ConntrackTable:
    """The node namespace's conntrack table over netlink (pyroute2): after each wave of
    probes, every entry keyed by its original tuple, then a flush so the next wave's dump
    holds only its own flows. Reading the table (not the event stream) loses nothing when
    thousands of flows are confirmed at once."""

    def __init__(self, lab: Lab):
        from pyroute2 import Conntrack

        self.lab = lab
        with signals.critical("opening the node's conntrack table"):
            self._ct = Conntrack(fileno=lab.netlink_fd("node", NETLINK_NETFILTER))
        self.entries: dict[tuple[str, str, int, str, int], tuple[str, int, str, int]] = {}
        self.answered: set[tuple[str, str, int, str, int]] = set()  # entry saw a reply
        lab.on_close(self.close)
        self.flush()

    def collect(self) -> None:
        """Read every entry into ``entries`` (first seen wins), then flush the table."""
        self.lab.assert_target("node")
        with signals.critical("reading the node's conntrack table"):
            dumped = list(self._ct.dump_entries())
        for e in dumped:
            o, r = e.tuple_orig, e.tuple_reply
            name = _PROTO_NAMES.get(o.proto)
            if name is None:
                continue
            key = (name, o.saddr, int(o.sport or 0), o.daddr, int(o.dport or 0))
            self.entries.setdefault(key, (r.saddr, int(r.sport or 0), r.daddr, int(r.dport or 0)))
            if e.status & IPS_SEEN_REPLY:
                self.answered.add(key)
        self.flush()

    def flush(self) -> None:
        self.lab.assert_target("node")
        with signals.critical("flushing the node's conntrack table"):
            self._ct.flush()

    def get(self, probe: Probe) -> tuple[str, int, str, int] | None:
        return self.entries.get((probe.proto, probe.src, probe.sport, probe.dst, probe.dport))

    def close(self) -> None:
        with signals.critical("closing the node's conntrack table"):
            self._ct.close()


class PortAllocator:
    """Source ports never reused within a lab (per source address), skipping the ports
    listeners hold in the same namespace."""

    def __init__(self, avoid: Iterable[int], low: int = 1025, high: int = 65535):
        self.avoid = set(avoid)
        self.low, self.high = low, high
        self.next: dict[str, int] = {}

    def take(self, src: str) -> int:
        port = self.next.get(src, self.low)
        while port in self.avoid:
            port += 1
        if port > self.high:
            raise LabError(f"source ports of {src} exhausted (too many probes from one client)")
        self.next[src] = port + 1
        return port


def send(
    lab: Lab,
    probes: list[Probe],
    *,
    timeout: float = 0.6,
    wave: int = 256,
    after_wave: Callable[[], None] | None = None,
) -> list[tuple[str, float]]:
    """Send every probe (``wave`` at a time); per probe the client's fate and wait.
    ``after_wave`` runs once each wave's sockets are closed (e.g. read conntrack)."""
    out: list[tuple[str, float]] = [("timeout", timeout)] * len(probes)
    for start in range(0, len(probes), wave):
        signals.check()
        batch = list(range(start, min(start + wave, len(probes))))
        by_role: dict[str, list[int]] = {}
        for i in batch:
            by_role.setdefault(ORIGIN_ROLE[probes[i].origin], []).append(i)
        socks: dict[int, socket.socket] = {}
        try:
            for role, idx in by_role.items():
                made = lab.sockets(
                    role, [(PROTOS[probes[i].proto], (probes[i].src, probes[i].sport)) for i in idx]
                )
                socks.update(zip(idx, made))
            _drive(probes, socks, out, timeout)
        finally:
            for s in socks.values():
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.close()
        if after_wave is not None:
            after_wave()
    return out


def _drive(
    probes: list[Probe],
    socks: dict[int, socket.socket],
    out: list[tuple[str, float]],
    timeout: float,
) -> None:
    ep = select.epoll()
    fd_of: dict[int, int] = {}
    started: dict[int, float] = {}
    try:
        for i, s in socks.items():
            p = probes[i]
            started[i] = time.perf_counter()
            if p.proto == "tcp":
                err = s.connect_ex((p.dst, p.dport))
                if err not in (0, errno.EINPROGRESS):
                    out[i] = (_fate(err), 0.0)
                    continue
                ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLERR)
            else:
                s.connect((p.dst, p.dport))
                try:
                    s.send(b"kpe")
                except OSError as exc:
                    out[i] = (_fate(exc.errno or 0), 0.0)
                    if out[i][0] != "dropped":
                        continue
                    # a REJECT in OUTPUT also fails the send (EPERM) but then queues its
                    # ICMP error on the socket: keep waiting for it
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLERR)
            fd_of[s.fileno()] = i
        deadline = time.perf_counter() + timeout
        while fd_of:
            # past the deadline, one last look without waiting: a starved process must not
            # miss answers that arrived while it was off the CPU
            left = max(0.0, deadline - time.perf_counter())
            ready = ep.poll(left)
            if not ready and left == 0.0:
                break
            for fd, _ in ready:
                if fd not in fd_of:
                    continue
                i = fd_of.pop(fd)
                ep.unregister(fd)
                s, p = socks[i], probes[i]
                waited = time.perf_counter() - started[i]
                if p.proto == "tcp":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    out[i] = ("answered" if err == 0 else _fate(err), waited)
                else:
                    try:
                        s.recv(64)
                        out[i] = ("answered", waited)
                    except OSError as exc:
                        out[i] = (_fate(exc.errno or 0), waited)
    finally:
        ep.close()


def _fate(err: int) -> str:
    if err in _REFUSED:
        return "refused"
    if err in _DROPPED:
        return "dropped"
    return f"error:{errno.errorcode.get(err, err)}"


def classify(
    probe: Probe,
    client: str,
    reply: tuple[str, int, str, int] | None,
    served: bool,
    seconds: float,
    seen_reply: bool = False,
) -> KernelResult:
    """The kernel's verdict from the conntrack entry and the client's fate (module doc).
    ``served``: a listener waits where the flow ended up (so a timeout is a DROP);
    ``seen_reply``: the entry saw an answer pass (a timeout then is the client's lateness
    under load, not a DROP)."""
    dnat, masq, verdict = None, False, "UNKNOWN"
    if client == "timeout" and reply is not None and seen_reply:
        client = "answered"
    if reply is not None:
        rsrc, rsport, rdst, rdport = reply
        if (rsrc, rsport) != (probe.dst, probe.dport):
            dnat = f"{rsrc}:{rsport}"
        masq = (rdst, rdport) != (probe.src, probe.sport)
        if client == "answered":
            verdict = "DNAT" if dnat else "ACCEPT"
        elif client == "refused":
            verdict = "REJECT"
        elif client == "timeout":
            verdict = "DROP" if served else ("DNAT" if dnat else "ACCEPT")
        elif client == "dropped":
            verdict = "DROP"
    elif client == "refused":
        verdict = "REJECT"
    elif client in ("timeout", "dropped"):
        verdict = "DROP"
    return KernelResult(probe, client, reply is not None, reply, verdict, dnat, masq, seconds)
