"""``kproxy-emu dns serve``: the Resolver behind a real DNS server, UDP and TCP, on one
address and port (loopback in tests). Threads answer; the caller's thread waits and, on
an exception (Interrupted by SIGINT/SIGTERM), stops both listeners before it propagates."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import InputError
from . import wire
from .records import Response

QueryFn = Callable[[str, str], Response]


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[ADDR6]:PORT`` (port 0: any free port)."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    if not sep:
        raise InputError("expected ADDR:PORT", field="--listen", value=text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        raise InputError("expected ADDR:PORT", field="--listen", value=text) from None
    if not 0 <= p <= 65535:
        raise InputError("port must be between 0 and 65535", field="--listen", value=text)
    return host, p


class _UDP(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """A UDP and a TCP listener on one address and port answering with ``query_fn``."""

    def __init__(self, query_fn: QueryFn, host: str = "127.0.0.1", port: int = 5353):
        self.query_fn = query_fn
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        fn = query_fn

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                out = wire.answer(fn, data, "udp")
                if out is not None:
                    sock.sendto(out, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                conn.settimeout(10)
                try:
                    while True:
                        head = _recv_exact(conn, 2)
                        if head is None:
                            return
                        data = _recv_exact(conn, struct.unpack("!H", head)[0])
                        if data is None:
                            return
                        out = wire.answer(fn, data, "tcp")
                        if out is not None:
                            conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

        udp_cls = type("Udp", (_UDP,), {"address_family": family})
        tcp_cls = type("Tcp", (_TCP,), {"address_family": family})
        # bind TCP first on the asked port (0: the kernel picks), then UDP on the same port
        self.tcp: socketserver.TCPServer = tcp_cls((host, port), TcpHandler)
        try:
            self.udp: socketserver.UDPServer = udp_cls(
                (host, self.tcp.server_address[1]), UdpHandler
            )
        except OSError:
            self.tcp.server_close()
            raise
        self.host = host
        self.port = self.tcp.server_address[1]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for srv in (self.udp, self.tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2})
            t.daemon = True
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for srv in (self.udp, self.tcp):
            if self._threads:
                srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    @contextmanager
    def running(self) -> Iterator[DnsServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
