"""A real userspace TCP relay in the lab, to calibrate the userspace mode's cost.

kube-proxy's userspace proxier accepted each connection on a proxy port of the node,
opened a second connection from the node to the chosen endpoint and copied every byte
both ways (``io.Copy`` in two goroutines). ``measure`` runs the same shape for real:

* ``relay`` (a separate process, ``python3 -m kproxy_emu.lab.relay relay ...``, in the
  lab's ``node`` namespace): accept, connect to the endpoint, two threads copying with a
  64 KiB buffer, half-close passed on;
* ``server`` (a separate process in the ``pod`` namespace, the endpoint): per connection,
  the first byte names what it wants: ``E`` echo (the byte back at once, then echo),
  ``S`` sink (read to EOF, answer the byte count as 8 bytes), ``P`` peer (answer the
  source address it sees);
* the clients (this process, sockets in the ``ext`` namespace): the same transfer to the
  endpoint directly (routed through the node, no proxy) and through the relay on a node
  address, in a seeded random order each round.

Per-connection overhead: the median over rounds of (connect + 1-byte echo through the
relay) - (the same, direct). Per-byte overhead: the median over rounds of (a bulk upload's
ns per byte through the relay) - (direct), each path's ns per byte being the difference
between a ``bulk_bytes`` upload and a 64 KiB one over the difference in bytes (connection
set-up and the first window cancel out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .topology import Lab, LabError, LabPlan

NODE_IP = "192.168.77.1"  # the node's eth0 (where the relay listens)
CLIENT_IP = "203.0.113.10"  # the ext namespace's client
POD_PREFIX = "10.77.0.0/24"
GATEWAY = "10.77.0.1"  # cni0: the node's address towards pods (the relay's source)
SERVER_IP = "10.77.0.10"  # the endpoint
RELAY_PORT = 30080
SERVER_PORT = 8080
BUF = 65536


# ---------------------------------------------------------------- the processes
def _pipe(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(BUF)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _relay_one(conn: socket.socket, target: tuple[str, int]) -> None:
    try:
        up = socket.create_connection(target)
    except OSError:
        conn.close()
        return
    for s in (conn, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
    back.start()
    _pipe(conn, up)
    back.join()
    conn.close()
    up.close()


def _listen(addr: tuple[str, int]) -> socket.socket:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(addr)
    ls.listen(512)
    return ls


def run_relay(listen: tuple[str, int], target: tuple[str, int]) -> None:
    ls = _listen(listen)
    print("ready", flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_relay_one, args=(conn, target), daemon=True).start()


def _serve_one(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        op = conn.recv(1)
        if op == b"E":
            conn.sendall(b"E")
            while data := conn.recv(BUF):
                conn.sendall(data)
        elif op == b"S":
            buf = bytearray(BUF)
            total = 0
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(struct.pack("!Q", total))
        elif op == b"P":
            ip, port = conn.getpeername()[:2]
            conn.sendall(f"{ip}:{port}\n".encode())
    except OSError:
        pass
    finally:
        conn.close()


def run_server(listen: tuple[str, int]) -> None:
    ls = _listen(listen)
    print("ready", flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _addr(text: str) -> tuple[str, int]:
    ip, _, port = text.rpartition(":")
    return ip, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m kproxy_emu.lab.relay")
    sub = p.add_subparsers(dest="role", required=True)
    r = sub.add_parser("relay")
    r.add_argument("listen", type=_addr)
    r.add_argument("target", type=_addr)
    s = sub.add_parser("server")
    s.add_argument("listen", type=_addr)
    args = p.parse_args(argv)
    try:
        if args.role == "relay":
            run_relay(args.listen, args.target)
        else:
            run_server(args.listen)
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------- the lab side
def plan() -> LabPlan:
    return LabPlan(
        node_addrs=[(NODE_IP, 32)],
        pod_prefixes=[POD_PREFIX],
        gateway=GATEWAY,
        pod_ips=[SERVER_IP],
        external_ips=[CLIENT_IP],
    )


def start(lab: Lab, role: str, argv: list[str], timeout: float = 10.0) -> subprocess.Popen:
    """``python3 -m kproxy_emu.lab.relay ARGV`` inside the lab's namespace ``role``, a real
    process; stopped (by its pid) when the lab closes. Returns once it listens."""
    name = lab.assert_target(role)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, sys.executable, "-m", "kproxy_emu.lab.relay", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fh in (proc.stdout, proc.stderr):
            if fh is not None:
                fh.close()

    lab.on_close(stop)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        stop()
        err = proc.stderr.read() if proc.stderr and not proc.stderr.closed else ""
        raise LabError(f"the lab's {argv[0]} did not start: {err.strip() or 'no message'}")
    return proc


def _client(lab: Lab) -> socket.socket:
    (s,) = lab.sockets("ext", [(socket.SOCK_STREAM, (CLIENT_IP, 0))])
    s.setblocking(True)
    s.settimeout(10.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise LabError(f"the lab's server closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def connect_echo(lab: Lab, dst: tuple[str, int]) -> int:
    """ns from connect() to a 1-byte echo back (through the relay: its accept, its
    connection to the endpoint and one copy each way)."""
    s = _client(lab)
    try:
        t0 = time.perf_counter_ns()
        s.connect(dst)
        s.sendall(b"E")
        _recv_exact(s, 1)
        return time.perf_counter_ns() - t0
    finally:
        s.close()


def bulk(lab: Lab, dst: tuple[str, int], nbytes: int, chunk: bytes) -> int:
    """ns from connect() to the server's count of ``nbytes`` uploaded (sink)."""
    s = _client(lab)
    try:
        t0 = time.perf_counter_ns()
        s.connect(dst)
        s.sendall(b"S")
        left = nbytes
        view = memoryview(chunk)
        while left > 0:
            k = min(left, len(chunk))
            s.sendall(view[:k])
            left -= k
        s.shutdown(socket.SHUT_WR)
        (got,) = struct.unpack("!Q", _recv_exact(s, 8))
        dt = time.perf_counter_ns() - t0
        if got != nbytes:
            raise LabError(f"the lab's server counted {got} bytes, {nbytes} were sent")
        return dt
    finally:
        s.close()


def peer_seen(lab: Lab, dst: tuple[str, int]) -> str:
    """The source address the endpoint sees for a connection to ``dst``."""
    s = _client(lab)
    try:
        s.connect(dst)
        s.sendall(b"P")
        data = b""
        while chunk := s.recv(256):
            data += chunk
        return data.decode().strip().rpartition(":")[0]
    finally:
        s.close()


@dataclass
class RelayCalibration:
    ns_per_connection: float  # median (relay - direct) connect + 1-byte echo
    ns_per_byte: float  # median (relay - direct) bulk upload ns per byte
    direct_connect_ns: float
    relay_connect_ns: float
    direct_ns_per_byte: float
    relay_ns_per_byte: float
    connect_samples: int
    bulk_bytes: int
    bulk_repeats: int
    seed: int
    server_saw: str  # the source address the endpoint saw through the relay
    node_addresses: list[str] = field(default_factory=lambda: [NODE_IP, GATEWAY])
    client_address: str = CLIENT_IP

    def entry(self) -> dict:
        """The calibration JSON's ``modes.userspace``."""
        return {
            **asdict(self),
            "path": "TCP from an external client namespace to an endpoint namespace, "
            "through a userspace relay process on the node (accept, connect to the "
            "endpoint, copy both ways) vs routed directly through the node; medians of "
            "paired rounds",
        }


def measure(
    *,
    samples: int = 200,
    bulk_bytes: int = 64 << 20,
    bulk_repeats: int = 5,
    seed: int = 0,
    warmup: int = 10,
) -> RelayCalibration:
    """Build a lab, start the relay and the server, time both paths (see the module doc)."""
    if samples < 1 or bulk_repeats < 1 or bulk_bytes < 2:
        raise ValueError("samples and bulk_repeats must be positive, bulk_bytes at least 2")
    rng = random.Random(seed)
    chunk = bytes(rng.getrandbits(8) for _ in range(BUF))
    direct = (SERVER_IP, SERVER_PORT)
    relay = (NODE_IP, RELAY_PORT)
    with Lab(plan()) as lab:
        start(lab, "pod", ["server", f"0.0.0.0:{SERVER_PORT}"])
        start(lab, "node", ["relay", f"0.0.0.0:{RELAY_PORT}", f"{SERVER_IP}:{SERVER_PORT}"])
        saw = peer_seen(lab, relay)
        if peer_seen(lab, direct) != CLIENT_IP:
            raise LabError("the direct path does not keep the client's address")
        conn: dict[str, list[int]] = {"direct": [], "relay": []}
        diffs: list[int] = []
        for r in range(warmup + samples):
            order = [("direct", direct), ("relay", relay)]
            rng.shuffle(order)
            got = {name: connect_echo(lab, dst) for name, dst in order}
            if r >= warmup:
                for name in got:
                    conn[name].append(got[name])
                diffs.append(got["relay"] - got["direct"])
        per_conn = float(np.median(diffs))
        med = {k: float(np.median(v)) for k, v in conn.items()}
        bulk(lab, direct, min(bulk_bytes, 1 << 20), chunk)  # warm up
        bulk(lab, relay, min(bulk_bytes, 1 << 20), chunk)
        per_byte: dict[str, list[float]] = {"direct": [], "relay": []}
        bdiffs: list[float] = []
        small = min(BUF, bulk_bytes // 2)
        for _ in range(bulk_repeats):
            order = [("direct", direct), ("relay", relay)]
            rng.shuffle(order)
            pb = {}
            for name, dst in order:
                t_small = bulk(lab, dst, small, chunk)
                t_big = bulk(lab, dst, bulk_bytes, chunk)
                pb[name] = (t_big - t_small) / (bulk_bytes - small)
            for k in pb:
                per_byte[k].append(pb[k])
            bdiffs.append(pb["relay"] - pb["direct"])
    return RelayCalibration(
        ns_per_connection=per_conn,
        ns_per_byte=float(np.median(bdiffs)),
        direct_connect_ns=med["direct"],
        relay_connect_ns=med["relay"],
        direct_ns_per_byte=float(np.median(per_byte["direct"])),
        relay_ns_per_byte=float(np.median(per_byte["relay"])),
        connect_samples=samples,
        bulk_bytes=bulk_bytes,
        bulk_repeats=bulk_repeats,
        seed=seed,
        server_saw=saw,
    )


if __name__ == "__main__":
    sys.exit(main())
