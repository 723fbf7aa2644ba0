"""The lab's network: throwaway namespaces built with pyroute2, torn down on every exit.

Three namespaces per run, named ``kpe-<pid>-<rand>-<role>`` so runs can proceed side by side
(``<pid>``: the owning process; ``/run/kproxy-emu/kpe-<pid>-<rand>.lock``, flock-ed for the
lab's whole life, says whether that owner still lives):

* ``node``: the emulated node. ``eth0`` carries the node's IPs (veth to ``ext``), ``cni0``
  is the pod bridge with a gateway address; routes send the pod ranges to ``cni0`` and
  everything else out of ``eth0``, each through a next hop with a permanent neighbour
  entry (no address is resolved at run time: see ``_create``). kube-proxy's rules are
  loaded here.
* ``pod``: every pod address (endpoints and pod clients) behind one veth on ``cni0``: the
  pod ranges as local routes (``ip route add local RANGE dev lo``), pods outside them as
  addresses. Locally generated packets are policy-routed to the gateway even when the
  destination is another address of this namespace, so pod-to-pod and hairpin traffic
  crosses the node's netfilter hooks as it would between real pods (``accept_local`` lets
  it back in).
* ``ext``: external clients on the far side of ``eth0``.

The main thread never changes namespace: namespaces are created by a short-lived thread
(unshare, then a bind mount under /run/netns, as ``ip netns add`` does, in this process:
no forked helper can finish after the cleanup looked), configuration goes through netlink
sockets opened by a thread that joined the target, or ``ip netns exec``. Every change first
asserts that its target is one of this lab's namespaces and not the host's.

Signals (kproxy_emu.signals): setup and cleanup are critical sections, so SIGINT, SIGTERM
or SIGHUP at any moment unwind to a cleanup that removes every namespace of the lab's tag.
A run killed outright (SIGKILL) leaves its namespaces behind: the next lab removes those
whose owner is gone (``remove_stale``), never one of a live process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import functools
import ipaddress
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .. import signals
from ..errors import KproxyError
from .env import LabUnavailable, check

T = TypeVar("T")
ROLES = ("node", "pod", "ext")
NETNS_DIR = "/run/netns"
LOCK_DIR = "/run/kproxy-emu"  # one flock-ed file per live lab: ownership of its namespaces
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED, MNT_DETACH = 0x1000, 0x4000, 0x100000, 2
NETLINK_NETFILTER = 12
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
# next hops of the node's routes (see Lab._create): link-local, owned by no namespace
POD_HOP = "169.254.77.1"
EXT_HOP = "169.254.77.2"
POD_RULE_TABLE = 100  # pod namespace: locally generated traffic -> gateway
_TAG = re.compile(r"^kpe-(\d+)-[0-9a-f]+$")
# labs open in this process (a plain set: a weakref callback could swallow a signal's exception)
_LIVE: set[Lab] = set()


class LabError(LabUnavailable):
    """Building or driving the lab failed (a tool's error, a namespace safety check, a
    flow the lab lost: its verdict is unknown)."""


@dataclass
class LabPlan:
    """Which address lives where."""

    node_addrs: list[tuple[str, int]]  # (ip, prefix) on the node's eth0
    pod_prefixes: list[str]  # routed from the node to cni0
    gateway: str  # cni0's address (pods' default gateway)
    pod_ips: list[str] = field(default_factory=list)  # addresses of the pod namespace
    external_ips: list[str] = field(default_factory=list)  # on the ext namespace's eth0
    sysctls: dict[str, str | int] = field(default_factory=dict)  # extra node sysctls
    # pod prefixes the pod namespace treats as local as a whole (a local route, as
    # ``ip route add local PREFIX dev lo``): 100,000 endpoint addresses are one route
    # instead of 100,000 addresses (adding each costs more the more there are)
    pod_ranges: list[str] = field(default_factory=list)

    def pod_addresses(self) -> list[str]:
        """Pod addresses outside ``pod_ranges``: each is an address of the pod namespace."""
        ranges = [ipaddress.IPv4Network(r) for r in self.pod_ranges]
        return [
            ip for ip in self.pod_ips if not any(ipaddress.IPv4Address(ip) in r for r in ranges)
        ]

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
        # a prefix can be local in the pod namespace as a whole when no address that
        # lives elsewhere (the node's, an external client's) falls in it
        elsewhere = [ipaddress.IPv4Address(ip) for ip, _ in node_addrs]
        elsewhere += [ipaddress.IPv4Address(ip) for ip in external_ips]
        ranges = [str(n) for n in nets if not any(a in n for a in elsewhere)]
        return cls(
            node_addrs=node_addrs,
            pod_prefixes=[str(n) for n in nets],
            gateway=gateway,
            pod_ips=pods,
            external_ips=sorted(set(external_ips)),
            pod_ranges=ranges,
        )


def _first_hosts(net: ipaddress.IPv4Network, limit: int):
    for i, host in enumerate(net.hosts()):
        if i >= limit:
            return
        yield host


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mac(ipr, index: int) -> str:
    return ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")


def _neighbour(ipr, index: int, ip: str, mac: str) -> None:
    """A permanent neighbour entry (never resolved, never garbage collected, outside the
    kernel-wide table limit)."""
    ipr.neigh("add", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)


def _route_via(ipr, dst: str, hop: str, index: int, prefsrc: str | None = None) -> None:
    extra = {"prefsrc": prefsrc} if prefsrc else {}
    ipr.route("add", dst=dst, gateway=hop, oif=index, flags=RTNH_F_ONLINK, **extra)


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _run_in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread and hand back its result or exception. The caller holds
    a critical section (kproxy_emu.signals), so a signal cannot abandon the thread
    half-way: the join always completes."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name="kpe-netns", daemon=True)
    with signals.critical("a lab namespace call"):
        t.start()
        t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _in_thread_ns(path: str, expect_ino: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread that joined the namespace at ``path`` (setns affects only
    the calling thread, so the caller stays where it is)."""

    def inside() -> T:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc().setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({path}): {os.strerror(err)}")
        finally:
            os.close(fd)
        if _ns_inode("/proc/thread-self/ns/net") != expect_ino:
            raise LabError(f"thread did not enter namespace {path}")
        return fn()

    return _run_in_thread(inside)


def _share_netns_dir() -> None:
    """/run/netns as ``ip netns add`` leaves it: a shared mount, so namespace mounts made
    under it propagate to other mount namespaces (``ip netns exec`` makes one)."""
    libc = _libc()
    os.makedirs(NETNS_DIR, exist_ok=True)
    d = NETNS_DIR.encode()
    if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0 or (
        libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0
    ):
        err = ctypes.get_errno()
        raise LabError(f"cannot make {NETNS_DIR} a shared mount: {os.strerror(err)}")


def _create_netns(path: str) -> int:
    """A new network namespace bound at ``path`` (run in a throwaway thread: unshare moves
    only the calling thread); its inode."""
    libc = _libc()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"unshare(CLONE_NEWNET) for {path}: {os.strerror(err)}")
    src = b"/proc/thread-self/ns/net"
    if libc.mount(src, path.encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise LabError(f"bind mount of a new namespace on {path}: {os.strerror(err)}")
    return _ns_inode(path)


def _remove_netns(name: str) -> None:
    """Unmount and unlink /run/netns/NAME (the namespace goes when its last user does);
    quiet when it is already gone or was never mounted."""
    path = os.path.join(NETNS_DIR, name)
    _libc().umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path`` (the owner that held it is gone), or
    None when a live process holds it or the file does not exist."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def remove_stale() -> list[str]:
    """Remove lab namespaces whose owning process is gone (a run killed with SIGKILL) and
    their lock files; the removed names. A lab's lock file is flock-ed for its whole life:
    when it can be locked, the owner is gone (whatever its PID became since). A namespace
    without a lock file (made by an older kproxy-emu) is removed only when no process has
    the PID its name carries. Never touches this process's own labs."""
    removed: list[str] = []
    by_tag: dict[str, list[str]] = {}
    for name in lab_namespaces():
        tag = name.rsplit("-", 1)[0]
        if _TAG.match(tag) and name[len(tag) + 1 :] in ROLES:
            by_tag.setdefault(tag, []).append(name)
    try:
        locks = {f.rsplit(".", 1)[0] for f in os.listdir(LOCK_DIR) if f.startswith("kpe-")}
    except FileNotFoundError:
        locks = set()
    for tag in sorted(set(by_tag) | locks):
        m = _TAG.match(tag)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        lock = os.path.join(LOCK_DIR, f"{tag}.lock")
        if tag in locks:
            fd = _try_lock(lock)
            if fd is None:
                if os.path.exists(lock):
                    continue  # its owner is alive
            else:
                try:
                    for name in by_tag.get(tag, []):
                        _remove_netns(name)
                        removed.append(name)
                    for suffix in (".lock", ".tmp"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(LOCK_DIR, tag + suffix))
                finally:
                    os.close(fd)
                continue
            # a temporary lock file without its final name: the owner died creating it
            tmp = os.path.join(LOCK_DIR, f"{tag}.tmp")
            fd = _try_lock(tmp)
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.close(fd)
            if tag not in by_tag:
                continue
        if tag in by_tag and not _alive(int(m.group(1))):
            for name in by_tag[tag]:
                _remove_netns(name)
                removed.append(name)
    return removed


class Lab:
    """The namespaces, links and processes of one run. Use as a context manager::

        with Lab(plan) as lab:
            lab.run("node", ["iptables-save"])

    Everything it created is removed on exit, on an exception, on Ctrl-C, SIGTERM and
    SIGHUP (raised as ``kproxy_emu.signals.Interrupted``), at any moment of its life.
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
        self._lock_fd: int | None = None
        self._signals = False
        self.closed = False
        self.owner = os.getpid()
        self.stale_removed: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Lab:
        self._signals = signals.acquire()
        _LIVE.add(self)
        try:
            with signals.critical("the lab's setup"):
                self._take_lock()
                self.stale_removed = remove_stale()
                try:
                    self._create()
                except KproxyError:
                    raise
                except Exception as exc:  # OSError, pyroute2's NetlinkError: one line
                    raise LabError(f"building the lab failed: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take_lock(self) -> None:
        """The lab's lock file, flock-ed before any namespace exists: created under a
        temporary name and renamed once locked, so no one can see it unlocked."""
        os.makedirs(LOCK_DIR, exist_ok=True)
        tmp = os.path.join(LOCK_DIR, f"{self.tag}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._lock_fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(LOCK_DIR, f"{self.tag}.lock"))

    def close(self) -> None:
        """Stop the helpers (listeners, netlink sockets), then delete the namespaces
        (their links go with them) and the lock file. Safe to call twice; never raises
        for something already gone. A signal during it waits for its end."""
        if self.closed or os.getpid() != self.owner:  # never from a forked child
            return
        self.closed = True
        try:
            with signals.critical("the lab's cleanup"):
                self._remove()
        finally:
            _LIVE.discard(self)
            if self._signals:
                self._signals = False
                signals.release()

    def _remove(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        # every namespace of this tag, also one whose creation did not get recorded
        for name in lab_namespaces():
            if name.startswith(self.tag + "-"):
                try:
                    _remove_netns(name)
                except OSError:
                    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        if self._lock_fd is not None:
            for suffix in (".lock", ".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(LOCK_DIR, self.tag + suffix))
            os.close(self._lock_fd)
            self._lock_fd = None

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
    def netlink_fd(self, role: str, proto: int = socket.NETLINK_ROUTE) -> int:
        """A netlink socket opened inside the namespace, as a bare fd for pyroute2's
        ``fileno=`` (pyroute2's own ``netns=`` forks a helper per socket)."""
        sock = self.in_ns(role, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto))
        return sock.detach()

    def iproute(self, role: str):
        from pyroute2 import IPRoute

        return IPRoute(fileno=self.netlink_fd(role))

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
        _share_netns_dir()
        for role in ROLES:
            name = self.names[role]
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                raise LabError(f"namespace {name} already exists")
            path = self.path(role)
            self._inodes[role] = _run_in_thread(functools.partial(_create_netns, path))
            self.assert_target(role)
        plan = self.plan
        for role in ROLES:
            with self.iproute(role) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # links: node eth0 <-> ext eth0, node vpod0 (in cni0) <-> pod eth0
        # Every route leaves through one next hop with a permanent neighbour entry: the
        # lab resolves no address at run time. The IPv4 neighbour table is one table for
        # the whole kernel (gc_thresh1-3 are global even where a namespace shows them), so
        # a neighbour per pod address would overflow it at a few thousand endpoints,
        # dropping probes after the rules had accepted them and taking the host's own
        # entries with it; permanent entries are exempt from its limit and garbage
        # collection. The hops are link-local addresses nobody owns: only their
        # neighbour entries (the peer's MAC) matter, and no probe is ever sent to them.
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
            node_mac = {n: _mac(ipr, i) for n, i in (("eth0", eth0), ("cni0", cni0))}
        macs = {}
        for role in ("pod", "ext"):
            with self.iproute(role) as ipr:
                macs[role] = _mac(ipr, ipr.link_lookup(ifname="eth0")[0])
        with self.iproute("node") as ipr:
            _neighbour(ipr, cni0, POD_HOP, macs["pod"])
            _neighbour(ipr, eth0, EXT_HOP, macs["ext"])
            for pod_prefix in plan.pod_prefixes:
                _route_via(ipr, pod_prefix, POD_HOP, cni0, prefsrc=plan.gateway)
            covered = [ipaddress.IPv4Network(p) for p in plan.pod_prefixes]
            for ip in plan.pod_ips:
                if not any(ipaddress.IPv4Address(ip) in n for n in covered):
                    _route_via(ipr, f"{ip}/32", POD_HOP, cni0, prefsrc=plan.gateway)
            _route_via(ipr, "0.0.0.0/0", EXT_HOP, eth0)
        with self.iproute("pod") as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for i, ip in enumerate(plan.pod_addresses()):
                if i % 256 == 0:
                    signals.check()  # a long loop at scale: Ctrl-C need not wait for it
                ipr.addr("add", index=eth0, address=ip, prefixlen=32)
            lo = ipr.link_lookup(ifname="lo")[0]
            for pod_range in plan.pod_ranges:  # ip route add local RANGE dev lo table local
                ipr.route("add", dst=pod_range, oif=lo, type="local", scope="host", table=255)
            ipr.link("set", index=eth0, state="up")
            _neighbour(ipr, eth0, plan.gateway, node_mac["cni0"])
            ipr.route("add", dst=f"{plan.gateway}/32", oif=eth0, scope="link")
            ipr.route("add", dst="0.0.0.0/0", gateway=plan.gateway, oif=eth0)
            ipr.route("add", dst="0.0.0.0/0", gateway=plan.gateway, oif=eth0, table=POD_RULE_TABLE)
        with self.iproute("ext") as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for ip in plan.external_ips:
                ipr.addr("add", index=eth0, address=ip, prefixlen=32)
            ipr.link("set", index=eth0, state="up")
            # via the node's first address (on-link), resolved statically
            _neighbour(ipr, eth0, plan.node_addrs[0][0], node_mac["eth0"])
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
