"""The lab's network: throwaway namespaces built with pyroute2, torn down on every exit.

Three namespaces per run, named ``kpe-<pid>-<rand>-<role>`` so runs can proceed side by side:

* ``node``: the emulated node. ``eth0`` carries the node's IPs (veth to ``ext``), ``cni0``
  is the pod bridge with a gateway address; routes send the pod ranges to ``cni0`` and
  everything else out of ``eth0``. kube-proxy's rules are loaded here.
* ``pod``: every pod address (endpoints and pod clients) on one veth behind ``cni0``.
  Locally generated packets are policy-routed to the gateway even when the destination is
  another address of this namespace, so pod-to-pod and hairpin traffic crosses the node's
  netfilter hooks as it would between real pods (``accept_local`` lets it back in).
* ``ext``: external clients on the far side of ``eth0``.

The main thread never changes namespace: configuration goes through netlink sockets opened
in the target (pyroute2 ``netns=``) or ``ip netns exec``, and sockets are created in a
short-lived thread that joined the target namespace. Every change first asserts that its
target is one of this lab's namespaces and not the host's.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from .env import LabUnavailable, check

T = TypeVar("T")
# what signal.signal() takes and returns
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
ROLES = ("node", "pod", "ext")
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
RTNH_F_ONLINK = 4
POD_RULE_TABLE = 100  # pod namespace: locally generated traffic -> gateway
_LIVE: weakref.WeakSet[Lab] = weakref.WeakSet()


class LabError(LabUnavailable):
    """Building or driving the lab failed (a tool's error, a namespace safety check)."""


@dataclass
class LabPlan:
    """Which address lives where."""

    node_addrs: list[tuple[str, int]]  # (ip, prefix) on the node's eth0
    pod_prefixes: list[str]  # routed from the node to cni0
    gateway: str  # cni0's address (pods' default gateway)
    pod_ips: list[str] = field(default_factory=list)  # on the pod namespace's eth0
    external_ips: list[str] = field(default_factory=list)  # on the ext namespace's eth0
    sysctls: dict[str, str | int] = field(default_factory=dict)  # extra node sysctls

    @classmethod
    def build(
        cls,
        node_ips: Iterable[str],
        interfaces: dict | None,
        pod_prefixes: Iterable[str],
        pod_ips: Iterable[str],
        external_ips: Iterable[str],
    ) -> LabPlan:
        """Node addresses with their interface prefixes when the node file gives them
        (/32 otherwise); a gateway in the first pod prefix that no pod uses."""
        node_ips = [ip for ip in node_ips if ":" not in ip]
        prefixes: dict[str, int] = {}
        for addrs in (interfaces or {}).values():
            for a in addrs:
                if ":" not in a.ip and not a.ip.startswith("127."):
                    prefixes.setdefault(a.ip, a.prefix_len)
        node_addrs = [(ip, prefixes.get(ip, 32)) for ip in node_ips]
        node_addrs += [(ip, p) for ip, p in prefixes.items() if ip not in node_ips]
        pods = sorted(set(pod_ips), key=ipaddress.IPv4Address)
        nets = [ipaddress.IPv4Network(p, strict=False) for p in pod_prefixes if ":" not in p]
        taken = set(pods) | {ip for ip, _ in node_addrs} | set(external_ips)
        gateway = None
        for net in nets or [ipaddress.IPv4Network("10.0.0.0/8")]:
            for host in _first_hosts(net, 4096):
                if str(host) not in taken:
                    gateway = str(host)
                    break
            if gateway:
                break
        if gateway is None:
            raise LabError(
                f"no free address for the pod gateway in the pod ranges {[str(n) for n in nets]}"
            )
        return cls(
            node_addrs=node_addrs,
            pod_prefixes=[str(n) for n in nets],
            gateway=gateway,
            pod_ips=pods,
            external_ips=sorted(set(external_ips)),
        )


def _first_hosts(net: ipaddress.IPv4Network, limit: int):
    for i, host in enumerate(net.hosts()):
        if i >= limit:
            return
        yield host


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _in_thread_ns(path: str, expect_ino: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread that joined the namespace at ``path`` (setns affects only
    the calling thread, so the caller stays where it is)."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc().setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            if _ns_inode("/proc/thread-self/ns/net") != expect_ino:
                raise LabError(f"thread did not enter namespace {path}")
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="kpe-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class Lab:
    """The namespaces, links and processes of one run. Use as a context manager::

        with Lab(plan) as lab:
            lab.run("node", ["iptables-save"])

    Everything it created is removed on exit, on an exception, on Ctrl-C and on SIGTERM.
    """

    def __init__(self, plan: LabPlan, *, tag: str | None = None):
        check(None)  # the rule loaders check their own tools
        self.plan = plan
        self.tag = tag or f"kpe-{os.getpid()}-{secrets.token_hex(3)}"
        self.names = {role: f"{self.tag}-{role}" for role in ROLES}
        self._inodes: dict[str, int] = {}
        self._closers: list[Callable[[], None]] = []
        self._host_inodes = {_ns_inode("/proc/self/ns/net")}
        try:  # init's namespace too, when visible (not always inside a container)
            self._host_inodes.add(_ns_inode("/proc/1/ns/net"))
        except OSError:
            pass
        self._old_handlers: dict[int, _Handler] = {}
        self.closed = False
        self.owner = os.getpid()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Lab:
        _LIVE.add(self)
        self._install_signals()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _install_signals(self) -> None:
        """SIGTERM (and SIGHUP) unwind like Ctrl-C, so the with-block's cleanup runs."""
        if threading.current_thread() is not threading.main_thread():
            return

        owner = self.owner

        def raise_interrupt(signum, frame):
            if os.getpid() != owner:  # a forked helper (pyroute2 forks): just die
                os._exit(128 + signum)
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                self._old_handlers[sig] = signal.signal(sig, raise_interrupt)

    def close(self) -> None:
        """Stop the helpers (listeners, netlink sockets), then delete the namespaces
        (their links go with them). Safe to call twice; never raises for something
        already gone."""
        if self.closed or os.getpid() != self.owner:  # never from a forked child
            return
        self.closed = True
        # a second Ctrl-C must not cut the cleanup short: note signals, act after it
        deferred: list[int] = []
        saved: dict[int, _Handler] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError, OSError):
                    saved[sig] = signal.signal(sig, lambda signum, frame: deferred.append(signum))
        try:
            self._remove()
        finally:
            for signum, handler in saved.items():  # what was there before the lab
                signal.signal(signum, self._old_handlers.get(signum, handler))
            _LIVE.discard(self)
        if deferred:
            raise KeyboardInterrupt(f"signal {deferred[0]} during the lab's cleanup")

    def _remove(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        from pyroute2 import netns

        for role in reversed(ROLES):
            name = self.names[role]
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                try:
                    netns.remove(name)
                except OSError:
                    subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def exists(self) -> list[str]:
        """This lab's namespaces that still exist (for cleanup checks)."""
        return [n for n in self.names.values() if os.path.exists(os.path.join(NETNS_DIR, n))]

    # ------------------------------------------------------------------ safety
    def path(self, role: str) -> str:
        return os.path.join(NETNS_DIR, self.names[role])

    def assert_target(self, role: str) -> str:
        """The namespace a change is about to touch is this lab's, and not the host's."""
        if self.closed:
            raise LabError("the lab is closed")
        if role not in self.names:
            raise LabError(f"unknown lab namespace role {role!r}")
        name = self.names[role]
        if not name.startswith(self.tag + "-"):
            raise LabError(f"refusing to touch namespace {name!r}: not created by this lab")
        ino = _ns_inode(self.path(role))
        if ino in self._host_inodes:
            raise LabError(f"refusing to touch namespace {name!r}: it is the host's")
        if self._inodes.get(role, ino) != ino:
            raise LabError(f"namespace {name!r} was replaced behind the lab's back")
        return name

    # ------------------------------------------------------------------ helpers
    def iproute(self, role: str):
        from pyroute2 import IPRoute

        return IPRoute(netns=self.assert_target(role))

    def run(
        self,
        role: str,
        argv: list[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        """A command inside the namespace (``ip netns exec``)."""
        name = self.assert_target(role)
        try:
            res = subprocess.run(
                ["ip", "netns", "exec", name, *argv],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{argv[0]} in {name} did not finish in {timeout:.0f} s") from None
        if check and res.returncode != 0:
            err = (res.stderr or res.stdout).strip().splitlines()
            raise LabError(
                f"{' '.join(argv[:3])} in {name} failed (exit {res.returncode}): "
                + ("; ".join(err[:5]) if err else "no message")
            )
        return res

    def sysctl(self, role: str, values: dict[str, str | int]) -> None:
        if values:
            self.run(role, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])

    def in_ns(self, role: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` in a thread inside the namespace (e.g. to create sockets there)."""
        self.assert_target(role)
        return _in_thread_ns(self.path(role), self._inodes[role], fn)

    # ------------------------------------------------------------------ build
    def _create(self) -> None:
        from pyroute2 import netns

        os.makedirs(NETNS_DIR, exist_ok=True)
        for role in ROLES:
            name = self.names[role]
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                raise LabError(f"namespace {name} already exists")
            netns.create(name)
            self._inodes[role] = _ns_inode(self.path(role))
            self.assert_target(role)
        plan = self.plan
        for role in ROLES:
            with self.iproute(role) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # links: node eth0 <-> ext eth0, node vpod0 (in cni0) <-> pod eth0
        with self.iproute("node") as ipr:
            ipr.link(
                "add",
                ifname="eth0",
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": self.assert_target("ext")},
            )
            ipr.link(
                "add",
                ifname="vpod0",
                kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": self.assert_target("pod")},
            )
            ipr.link("add", ifname="cni0", kind="bridge")
            eth0, vpod, cni0 = (ipr.link_lookup(ifname=n)[0] for n in ("eth0", "vpod0", "cni0"))
            ipr.link("set", index=vpod, master=cni0)
            for ip, prefix in plan.node_addrs:
                ipr.addr("add", index=eth0, address=ip, prefixlen=prefix)
            ipr.addr("add", index=cni0, address=plan.gateway, prefixlen=32)
            for idx in (eth0, vpod, cni0):
                ipr.link("set", index=idx, state="up")
            for pod_prefix in plan.pod_prefixes:
                ipr.route("add", dst=pod_prefix, oif=cni0, prefsrc=plan.gateway, scope="link")
            covered = [ipaddress.IPv4Network(p) for p in plan.pod_prefixes]
            for ip in plan.pod_ips:
                if not any(ipaddress.IPv4Address(ip) in n for n in covered):
                    ipr.route("add", dst=f"{ip}/32", oif=cni0, prefsrc=plan.gateway, scope="link")
            ipr.route("add", dst="0.0.0.0/0", oif=eth0, scope="link")
        with self.iproute("pod") as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for ip in plan.pod_ips:
                ipr.addr("add", index=eth0, address=ip, prefixlen=32)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst=f"{plan.gateway}/32", oif=eth0, scope="link")
            ipr.route("add", dst="0.0.0.0/0", gateway=plan.gateway, oif=eth0)
            ipr.route("add", dst="0.0.0.0/0", gateway=plan.gateway, oif=eth0, table=POD_RULE_TABLE)
        with self.iproute("ext") as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for ip in plan.external_ips:
                ipr.addr("add", index=eth0, address=ip, prefixlen=32)
            ipr.link("set", index=eth0, state="up")
            # via the node (on-link): the node answers ARP for its own addresses only
            ipr.route(
                "add", dst="0.0.0.0/0", gateway=plan.node_addrs[0][0], oif=eth0, flags=RTNH_F_ONLINK
            )
        # pod: locally generated packets always leave through the gateway (see module doc)
        self.run(
            "pod", ["ip", "rule", "add", "pref", "10", "iif", "lo", "lookup", str(POD_RULE_TABLE)]
        )
        self.run("pod", ["ip", "rule", "add", "pref", "1000", "lookup", "local"])
        self.run("pod", ["ip", "rule", "del", "pref", "0", "lookup", "local"])
        common: dict[str, str | int] = {
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
            "net.ipv4.conf.eth0.rp_filter": 0,
        }
        self.sysctl(
            "pod",
            {**common, "net.ipv4.conf.all.accept_local": 1, "net.ipv4.conf.eth0.accept_local": 1},
        )
        self.sysctl("ext", common)
        self.sysctl(
            "node",
            {
                **common,
                "net.ipv4.conf.cni0.rp_filter": 0,
                "net.ipv4.conf.vpod0.rp_filter": 0,
                "net.ipv4.ip_forward": 1,
                "net.ipv4.conf.all.route_localnet": 1,
                # REJECT's ICMP errors must never be rate limited, or they look like DROPs
                "net.ipv4.icmp_ratelimit": 0,
                "net.ipv4.icmp_ratemask": 0,
                # pod-to-pod through the gateway: no redirects telling pods to go direct
                "net.ipv4.conf.all.send_redirects": 0,
                "net.ipv4.conf.cni0.send_redirects": 0,
                **plan.sysctls,
            },
        )
        if os.path.isdir("/proc/sys/net/bridge"):
            # br_netfilter is loaded: it would run the nat rules at bridge level and then
            # need hairpin mode to send a pod's DNATed frame back out of the one pod port;
            # route pod traffic at L3 instead (the same chains see it either way)
            self.sysctl(
                "node",
                {"net.bridge.bridge-nf-call-iptables": 0, "net.bridge.bridge-nf-call-arptables": 0},
            )
        self._wait_links()

    def _wait_links(self, timeout: float = 3.0) -> None:
        """veths report carrier a moment after 'up'; probes sent before would be lost."""
        deadline = time.monotonic() + timeout
        for role, ifname in (("node", "eth0"), ("node", "vpod0"), ("pod", "eth0"), ("ext", "eth0")):
            while True:
                with self.iproute(role) as ipr:
                    link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
                if link.get_attr("IFLA_OPERSTATE") == "UP" or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        # the bridge forwards only after its port leaves the listening state (no STP: at once)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.iproute("node") as ipr:
                link = ipr.get_links(ipr.link_lookup(ifname="cni0")[0])[0]
            if link.get_attr("IFLA_OPERSTATE") == "UP":
                break
            time.sleep(0.02)

    # ------------------------------------------------------------------ sockets
    def sockets(
        self, role: str, specs: Sequence[tuple[int, tuple[str, int] | None]]
    ) -> list[socket.socket]:
        """Create sockets in the namespace: ``(type, bind address or None)`` each,
        non-blocking, SO_REUSEADDR set; all or nothing."""

        def make() -> list[socket.socket]:
            out: list[socket.socket] = []
            try:
                for kind, addr in specs:
                    s = socket.socket(socket.AF_INET, kind)
                    out.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.setblocking(False)
                    if addr is not None:
                        s.bind(addr)
            except BaseException:
                for s in out:
                    s.close()
                raise
            return out

        return self.in_ns(role, make)


def close_all() -> None:
    """Remove every lab still open in this process (atexit; a last resort)."""
    for lab in list(_LIVE):
        lab.close()


atexit.register(close_all)


def lab_namespaces(pid: int | None = None) -> list[str]:
    """Namespaces named like the lab's (of one process, or of any)."""
    prefix = f"kpe-{pid}-" if pid is not None else "kpe-"
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def raise_nofile() -> None:
    """Probing opens many sockets at once: lift the soft descriptor limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


__all__ = ["Lab", "LabError", "LabPlan", "close_all", "lab_namespaces", "raise_nofile"]
