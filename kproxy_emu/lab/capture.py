"""Record the real traffic entering the lab's node as a pcap (tcpdump need not be installed).

One AF_PACKET socket, opened inside the node namespace, receives every frame of every
interface there, in the order the kernel delivers them; the frames *entering* the node
on ``eth0`` (from outside) and ``cni0`` (the pod bridge, where routed pod traffic enters
the IP stack) are kept: what the node's netfilter hooks see first, before any NAT. Frames
the node sends are left out (they are the translated ones), and so are the bridge port's
(``vpod0``: the same frames again). The capture is written with dpkt as a classic pcap
(Ethernet link type, microsecond times from the receiving thread's clock).

Use inside a running :class:`~kproxy_emu.lab.topology.Lab`::

    with Capture(lab) as cap:
        ... send traffic ...
    cap.write("node-in.pcap")
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

from .topology import Lab, LabError

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # linux/if_packet.h


class Capture:
    """Frames entering the lab's node on ``interfaces`` while the context is open."""

    def __init__(self, lab: Lab, interfaces: tuple[str, ...] = ("eth0", "cni0")):
        self.lab = lab
        self.interfaces = set(interfaces)
        self.frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def __enter__(self) -> Capture:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            return s

        try:
            self._sock = self.lab.in_ns("node", make)
        except OSError as exc:
            raise LabError(f"cannot open a packet socket in the node namespace: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="kproxy-emu-capture", daemon=True)
        self._thread.start()
        time.sleep(0.05)  # the socket is live before the caller sends
        return self

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            data, addr = sock.recvfrom(65535)
            ts = time.time()
            if addr[0] in self.interfaces and addr[2] != PACKET_OUTGOING:
                self.frames.append((ts, data))

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)  # the last frames in flight
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def write(self, path: str | Path) -> int:
        """The frames as a pcap (Ethernet); how many."""
        import dpkt

        with open(path, "wb") as f:
            writer = dpkt.pcap.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
            for ts, frame in self.frames:
                writer.writepkt(frame, ts=ts)
        return len(self.frames)
