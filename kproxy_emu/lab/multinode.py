"""The kernel lab for several nodes: the cluster of ``ClusterDataplane`` built in network
namespaces, real TCP connections (and DF-set UDP datagrams) between them, and the
kernel's delivered / dropped and path compared with ``ClusterDataplane.process``.

    from kproxy_emu.cluster_net import ClusterDataplane
    from kproxy_emu.lab.multinode import verify_nodes
    cdp = ClusterDataplane(cluster, "iptables", cni="vxlan", seed=1,
                           cluster_cidr="10.244.0.0/16")
    report = verify_nodes(cdp, cluster_cidr="10.244.0.0/16", flows=200, seed=1)
    print(report.table()); assert report.ok

Namespaces (``kpe-<pid>-<rand>-<role>``, owned through the same flock-ed lock file as the
single-node lab, removed on every exit, stale ones of dead owners removed by the next
lab): ``nK`` per node (kube-proxy's iptables rules of that node, loaded with
``iptables-restore``), ``pK`` per node (every address of the node's pod CIDR, behind the
node's ``cni0`` bridge: the single-node lab's pod namespace), and ``ext`` (a bridge that
is the underlay between the nodes' ``eth0``, the outside clients and an outside server).
Node links: ``routes`` (a host route per other node's pod CIDR via that node's address)
or ``vxlan`` (``flannel.1``: VNI 1, UDP 8472, MTU 1450, Flannel's static neighbour and
FDB entries). Every next hop has a permanent neighbour entry: nothing is resolved.

The path a flow took is measured, not inferred: a separate nft table in each node
namespace (priority after kube-proxy's filter chains) records the SYN of each forwarded
or sent flow by the interface it leaves through (``flannel.1`` or ``eth0``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .. import signals
from ..netfilter.iptables_text import render
from .load import load_iptables
from .topology import (
    LOCK_DIR,
    NUD_PERMANENT,
    POD_HOP,
    POD_RULE_TABLE,
    RTNH_F_ONLINK,
    Lab,
    LabError,
    LabPlan,
    _alive,
    _mac,
    _remove_netns,
    _try_lock,
    lab_namespaces,
)

if TYPE_CHECKING:
    from ..model import Cluster

EXT_HOP = "169.254.77.2"  # the nodes' default next hop (the ext bridge), owned by no one
OUTSIDE_SERVER = ("198.51.100.10", 80)  # an address outside the cluster (path "out")
EXTERNAL_CLIENTS = ("203.0.113.2", "203.0.113.130")
HOST_PORT = 10250  # a listener on every node's own addresses
UDP_PORT = 9000  # DF-set datagrams to pods (the MTU flows)
IP_PKTINFO = 8
# cluster_net's Outcome and Path codes by name (lab sits beside cluster_net and does not
# import it: the caller hands over the ClusterDataplane; a test checks these match)
OUTCOME_NAMES = ("delivered", "left", "dropped", "rejected", "mtu", "no-route")
PATH_NAMES = ("none", "local", "route", "vxlan", "out")
VARIANTS = 24  # emulator draws per flow (the candidate set of a random choice)
_ROLE = re.compile(r"^kpe-(\d+)-[0-9a-f]+-(n\d+|p\d+|ext)$")


def remove_stale_nodes() -> list[str]:
    """Namespaces of multi-node labs whose owner is gone (its lock file lockable or
    missing, and, without one, no process with the PID its name carries)."""
    removed = []
    for name in lab_namespaces():
        m = _ROLE.match(name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        tag = name.rsplit("-", 1)[0]
        lock = os.path.join(LOCK_DIR, f"{tag}.lock")
        if os.path.exists(lock):
            fd = _try_lock(lock)
            if fd is None:
                continue  # a live owner
            os.close(fd)
        elif _alive(int(m.group(1))):
            continue
        _remove_netns(name)
        removed.append(name)
    return removed


@dataclass
class NodeSpec:
    name: str
    role: str  # nK
    pod_role: str  # pK
    ip: str
    pod_cidr: str
    gateway: str  # cni0's address: the first host of the pod CIDR


def node_specs(cluster: Cluster, names: list[str]) -> list[NodeSpec]:
    out = []
    for k, name in enumerate(names, 1):
        node = next((n for n in cluster.nodes.values() if n.name == name), None)
        if node is None:
            raise LabError(f"no Node {name!r} in the cluster")
        ips = [a.address for a in node.addresses if ":" not in a.address]
        cidrs = [c for c in node.pod_cidrs if ":" not in c]
        if not ips or not cidrs:
            raise LabError(f"node {name} needs an IPv4 address and an IPv4 podCIDR")
        net = ipaddress.IPv4Network(cidrs[0])
        out.append(NodeSpec(name, f"n{k}", f"p{k}", ips[0], str(net), str(net.network_address + 1)))
    return out


class _NodeView:
    """A Lab as the single-node loaders see it: role "node" is this node's namespace."""

    def __init__(self, lab: Lab, role: str):
        self.lab, self.role = lab, role

    def run(self, role: str, argv: list[str], **kw: Any):
        return self.lab.run(self.role if role == "node" else role, argv, **kw)


class MultiNodeLab(Lab):
    """The namespaces of a multi-node run (see the module doc); a context manager."""

    def __init__(self, specs: list[NodeSpec], cni: str, cluster_cidr: str | None, pod_mtu: int):
        super().__init__(LabPlan(node_addrs=[], pod_prefixes=[], gateway=""))
        self.specs, self.cni, self.cluster_cidr, self.pod_mtu = specs, cni, cluster_cidr, pod_mtu
        roles = [s.role for s in specs] + [s.pod_role for s in specs] + ["ext"]
        self.names = {role: f"{self.tag}-{role}" for role in roles}

    def __enter__(self) -> MultiNodeLab:
        super().__enter__()
        return self

    def _create(self) -> None:
        from .topology import _create_netns, _run_in_thread, _share_netns_dir

        self.stale_removed += remove_stale_nodes()
        _share_netns_dir()
        for role in self.names:
            path = self.path(role)
            if os.path.exists(path):
                raise LabError(f"namespace {self.names[role]} already exists")
            self._inodes[role] = _run_in_thread(lambda p=path: _create_netns(p))  # type: ignore[misc]
            self.assert_target(role)
        for role in self.names:
            with self.iproute(role) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with self.iproute("ext") as ipr:
            ipr.link("add", ifname="br0", kind="bridge")
        macs: dict[str, str] = {}
        for s in self.specs:
            with self.iproute(s.role) as ipr:
                ipr.link(
                    "add",
                    ifname="eth0",
                    kind="veth",
                    peer={"ifname": f"v{s.role}", "net_ns_fd": self.assert_target("ext")},
                )
                ipr.link(
                    "add",
                    ifname="vpod0",
                    kind="veth",
                    peer={"ifname": "eth0", "net_ns_fd": self.assert_target(s.pod_role)},
                )
                ipr.link("add", ifname="cni0", kind="bridge")
                eth0, vpod, cni0 = (ipr.link_lookup(ifname=n)[0] for n in ("eth0", "vpod0", "cni0"))
                ipr.link("set", index=vpod, master=cni0)
                ipr.addr("add", index=eth0, address=s.ip, prefixlen=32)
                ipr.addr("add", index=cni0, address=s.gateway, prefixlen=32)
                for idx in (vpod, cni0):
                    ipr.link("set", index=idx, mtu=self.pod_mtu)
                for idx in (eth0, vpod, cni0):
                    ipr.link("set", index=idx, state="up")
                macs[s.role] = _mac(ipr, eth0)
                macs[s.role + "cni0"] = _mac(ipr, cni0)
                if self.cni == "vxlan":
                    ipr.link(
                        "add",
                        ifname="flannel.1",
                        kind="vxlan",
                        vxlan_id=1,
                        vxlan_local=s.ip,
                        vxlan_link=eth0,
                        vxlan_port=8472,
                        vxlan_learning=0,
                    )
                    fl = ipr.link_lookup(ifname="flannel.1")[0]
                    ipr.link("set", index=fl, mtu=self.pod_mtu, state="up")
                    ipr.addr("add", index=fl, address=self._vtep(s), prefixlen=32)
                    macs[s.role + "fl"] = _mac(ipr, fl)
            with self.iproute(s.pod_role) as ipr:
                eth0 = ipr.link_lookup(ifname="eth0")[0]
                ipr.link("set", index=eth0, mtu=self.pod_mtu)
                macs[s.pod_role] = _mac(ipr, eth0)
        with self.iproute("ext") as ipr:
            br0 = ipr.link_lookup(ifname="br0")[0]
            for s in self.specs:
                v = ipr.link_lookup(ifname=f"v{s.role}")[0]
                ipr.link("set", index=v, master=br0, state="up")
            for ip in (*EXTERNAL_CLIENTS, OUTSIDE_SERVER[0]):
                ipr.addr("add", index=br0, address=ip, prefixlen=32)
            ipr.link("set", index=br0, state="up")
            macs["ext"] = _mac(ipr, br0)
            for s in self.specs:
                ipr.neigh("add", dst=s.ip, lladdr=macs[s.role], ifindex=br0, state=NUD_PERMANENT)
                ipr.route("add", dst=f"{s.ip}/32", oif=br0, scope="link")
                ipr.route("add", dst=s.pod_cidr, gateway=s.ip, oif=br0, flags=RTNH_F_ONLINK)
        for s in self.specs:
            self._node_routes(s, macs)
            self._pod_ns(s, macs)
        common: dict[str, str | int] = {
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
        }
        bridge_nf = {
            "net.bridge.bridge-nf-call-iptables": 0,
            "net.bridge.bridge-nf-call-arptables": 0,
        }
        has_bridge_nf = os.path.isdir("/proc/sys/net/bridge")
        self.sysctl("ext", {**common, **(bridge_nf if has_bridge_nf else {})})
        for s in self.specs:
            self.sysctl(
                s.pod_role,
                {
                    **common,
                    "net.ipv4.conf.eth0.rp_filter": 0,
                    "net.ipv4.conf.all.accept_local": 1,
                    "net.ipv4.conf.eth0.accept_local": 1,
                },
            )
            self.sysctl(
                s.role,
                {
                    **common,
                    "net.ipv4.conf.eth0.rp_filter": 0,
                    "net.ipv4.conf.cni0.rp_filter": 0,
                    "net.ipv4.conf.vpod0.rp_filter": 0,
                    "net.ipv4.ip_forward": 1,
                    "net.ipv4.conf.all.route_localnet": 1,
                    "net.ipv4.icmp_ratelimit": 0,
                    "net.ipv4.icmp_ratemask": 0,
                    # the kernel-wide ICMP budget (per namespace here): a burst of no-route
                    # flows must each get its "host unreachable"
                    "net.ipv4.icmp_msgs_per_sec": 100000,
                    "net.ipv4.icmp_msgs_burst": 100000,
                    "net.ipv4.conf.all.send_redirects": 0,
                    "net.ipv4.conf.cni0.send_redirects": 0,
                    **(bridge_nf if has_bridge_nf else {}),
                },
            )
            # the path a flow's SYN leaves by (see the module doc)
            self.run(s.role, ["nft", "-f", "/dev/stdin"], input=PATH_TABLE)
        self._wait_up()

    @staticmethod
    def _vtep(s: NodeSpec) -> str:
        return str(ipaddress.IPv4Network(s.pod_cidr).network_address)  # Flannel: 10.244.K.0

    def _node_routes(self, s: NodeSpec, macs: dict[str, str]) -> None:
        with self.iproute(s.role) as ipr:
            eth0, cni0 = (ipr.link_lookup(ifname=n)[0] for n in ("eth0", "cni0"))
            ipr.neigh(
                "add", dst=POD_HOP, lladdr=macs[s.pod_role], ifindex=cni0, state=NUD_PERMANENT
            )
            ipr.neigh("add", dst=EXT_HOP, lladdr=macs["ext"], ifindex=eth0, state=NUD_PERMANENT)
            ipr.route(
                "add",
                dst=s.pod_cidr,
                gateway=POD_HOP,
                oif=cni0,
                flags=RTNH_F_ONLINK,
                prefsrc=s.gateway,
            )
            ipr.route("add", dst="0.0.0.0/0", gateway=EXT_HOP, oif=eth0, flags=RTNH_F_ONLINK)
            if self.cluster_cidr:  # an address of the cluster CIDR that no node owns
                ipr.route("add", dst=self.cluster_cidr, type="unreachable")
            for o in self.specs:
                if o is s:
                    continue
                ipr.neigh("add", dst=o.ip, lladdr=macs[o.role], ifindex=eth0, state=NUD_PERMANENT)
                ipr.route("add", dst=f"{o.ip}/32", oif=eth0, scope="link")
                if self.cni == "routes":
                    ipr.route("add", dst=o.pod_cidr, gateway=o.ip, oif=eth0, flags=RTNH_F_ONLINK)
                else:
                    fl = ipr.link_lookup(ifname="flannel.1")[0]
                    vtep, mac = self._vtep(o), macs[o.role + "fl"]
                    ipr.neigh("add", dst=vtep, lladdr=mac, ifindex=fl, state=NUD_PERMANENT)
                    ipr.route("add", dst=o.pod_cidr, gateway=vtep, oif=fl, flags=RTNH_F_ONLINK)
        if self.cni == "vxlan":
            for o in self.specs:
                if o is not s:
                    self.run(
                        s.role,
                        [
                            "bridge",
                            "fdb",
                            "append",
                            macs[o.role + "fl"],
                            "dev",
                            "flannel.1",
                            "dst",
                            o.ip,
                        ],
                    )

    def _pod_ns(self, s: NodeSpec, macs: dict[str, str]) -> None:
        with self.iproute(s.pod_role) as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.route("add", dst=s.pod_cidr, oif=lo, type="local", scope="host", table=255)
            ipr.link("set", index=eth0, state="up")
            ipr.neigh(
                "add",
                dst=s.gateway,
                lladdr=macs[s.role + "cni0"],
                ifindex=eth0,
                state=NUD_PERMANENT,
            )
            ipr.route("add", dst=f"{s.gateway}/32", oif=eth0, scope="link")
            ipr.route("add", dst="0.0.0.0/0", gateway=s.gateway, oif=eth0)
            ipr.route("add", dst="0.0.0.0/0", gateway=s.gateway, oif=eth0, table=POD_RULE_TABLE)
        r = s.pod_role
        self.run(r, ["ip", "rule", "add", "pref", "10", "iif", "lo", "lookup", str(POD_RULE_TABLE)])
        self.run(r, ["ip", "rule", "add", "pref", "1000", "lookup", "local"])
        self.run(r, ["ip", "rule", "del", "pref", "0", "lookup", "local"])

    def _wait_up(self, timeout: float = 3.0) -> None:
        checks = [(s.role, n) for s in self.specs for n in ("eth0", "vpod0", "cni0")]
        checks += [(s.pod_role, "eth0") for s in self.specs] + [("ext", "br0")]
        deadline = time.monotonic() + timeout
        for role, ifname in checks:
            while time.monotonic() < deadline:
                with self.iproute(role) as ipr:
                    link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
                if link.get_attr("IFLA_OPERSTATE") == "UP":
                    break
                time.sleep(0.02)

    def path_sets(self, role: str) -> dict[str, set[tuple[str, int]]]:
        """The (source, source port) of every SYN that left node ``role``, per interface."""
        out: dict[str, set[tuple[str, int]]] = {}
        for setname in ("via_vxlan", "via_eth0"):
            text = self.run(role, ["nft", "-j", "list", "set", "ip", "kpe_path", setname]).stdout
            elems: set[tuple[str, int]] = set()
            for item in json.loads(text)["nftables"]:
                for e in item.get("set", {}).get("elem", []):
                    ip, port = e["concat"]
                    elems.add((ip, int(port)))
            out[setname] = elems
        return out


PATH_TABLE = """table ip kpe_path {
  set via_vxlan { type ipv4_addr . inet_service; }
  set via_eth0 { type ipv4_addr . inet_service; }
  chain kpe_post { type filter hook postrouting priority 0; policy accept;
    tcp flags & (syn | ack) == syn oifname "flannel.1" add @via_vxlan { ip saddr . tcp sport }
    tcp flags & (syn | ack) == syn oifname "eth0" add @via_eth0 { ip saddr . tcp sport }
    meta l4proto udp oifname "flannel.1" add @via_vxlan { ip saddr . udp sport }
    meta l4proto udp oifname "eth0" add @via_eth0 { ip saddr . udp sport }
  }
}
"""


# ------------------------------------------------------------------ listeners
class Listeners:
    """TCP listeners (and UDP echo sockets) that answer with who they are:
    ``"<where> <local ip>:<port> <peer ip>"``."""

    def __init__(self, lab: Lab, where: dict[str, tuple[str, set[int], set[int]]]):
        self.socks: list[tuple[socket.socket, str]] = []
        for role, (label, tcp, udp) in where.items():
            specs = [(socket.SOCK_STREAM, ("0.0.0.0", p)) for p in sorted(tcp)]
            specs += [(socket.SOCK_DGRAM, ("0.0.0.0", p)) for p in sorted(udp)]
            for s in lab.sockets(role, specs):
                if s.type == socket.SOCK_STREAM:
                    s.listen(512)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self.socks.append((s, label))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kpe-listeners", daemon=True)
        self._thread.start()
        lab.on_close(self.close)

    def _serve(self) -> None:
        by_fd = {s.fileno(): (s, label) for s, label in self.socks}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(by_fd), [], [], 0.05)
            for fd in ready:
                s, label = by_fd[fd]
                with contextlib.suppress(OSError):
                    if s.type == socket.SOCK_STREAM:
                        conn, peer = s.accept()
                        with conn:
                            local = conn.getsockname()
                            conn.setblocking(True)
                            conn.sendall(f"{label} {local[0]}:{local[1]} {peer[0]}".encode())
                    else:  # answer from the address it was sent to (IP_PKTINFO)
                        _, anc, _, peer = s.recvmsg(65535, 64)
                        info = [
                            d for lvl, t, d in anc if (lvl, t) == (socket.IPPROTO_IP, IP_PKTINFO)
                        ]
                        dst = info[0][8:12] if info else bytes(4)
                        msg = f"{label} {socket.inet_ntoa(dst)}:{s.getsockname()[1]} {peer[0]}"
                        cmsg = [
                            (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, bytes(4)))
                        ]
                        s.sendmsg([msg.encode()], cmsg, 0, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s, _ in self.socks:
            s.close()


# ------------------------------------------------------------------ flows
@dataclass
class Flow:
    kind: str  # pod-clusterip, pod-pod, nodeport, host, pod-node, outside, no-route, mtu
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    origin: str  # pod, host, external
    entry: str  # node name
    role: str  # the namespace the client runs in
    length: int = 60


Result = tuple  # (outcome, path, node, delivered_to, source_seen)


def _connect_all(lab: Lab, flows: list[Flow], timeout: float) -> list[tuple[str, str]]:
    """Each flow's (fate, answer): ``answer`` is what the listener said."""
    fates: list[tuple[str, str]] = [("", "")] * len(flows)
    by_role: dict[str, list[int]] = {}
    for i, f in enumerate(flows):
        by_role.setdefault(f.role, []).append(i)
    socks: dict[int, socket.socket] = {}
    for role, idx in by_role.items():
        specs = [
            (
                socket.SOCK_STREAM if flows[i].proto == "tcp" else socket.SOCK_DGRAM,
                (flows[i].src, flows[i].sport),
            )
            for i in idx
        ]
        for i, s in zip(idx, lab.sockets(role, specs)):
            socks[i] = s
    pending: dict[int, str] = {}  # i -> connecting | reading
    try:
        for i, s in socks.items():
            f = flows[i]
            if f.proto == "udp":
                s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
                try:
                    s.sendto(b"x" * (f.length - 28), (f.dst, f.dport))
                except OSError as exc:
                    fates[i] = (_errname(exc.errno), "")
                    continue
                pending[i] = "reading"
                continue
            err = s.connect_ex((f.dst, f.dport))
            if err in (0, errno.EINPROGRESS):
                pending[i] = "connecting"
            else:
                fates[i] = (_errname(err), "")
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            signals.check()
            w = [socks[i] for i, st in pending.items() if st == "connecting"]
            r = [socks[i] for i, st in pending.items() if st == "reading"]
            rr, ww, _ = select.select(r, w, [], 0.05)
            fd_to_i = {socks[i].fileno(): i for i in pending}
            for s in ww:
                i = fd_to_i[s.fileno()]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fates[i] = (_errname(err), "")
                    del pending[i]
                else:
                    pending[i] = "reading"
            for s in rr:
                i = fd_to_i[s.fileno()]
                try:
                    data = s.recv(512)
                except OSError as exc:
                    fates[i] = (_errname(exc.errno), "")
                else:
                    fates[i] = ("answered", data.decode(errors="replace"))
                del pending[i]
        for i, st in pending.items():
            fates[i] = (
                "timeout" if st == "connecting" or flows[i].proto == "udp" else "noanswer",
                "",
            )
    finally:
        for s in socks.values():
            s.close()
    return fates


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err))


# ------------------------------------------------------------------ report
KNOWN = {
    "egress-source": "the kernel's source (MASQUERADE, or a host socket's source selection) "
    "is the egress interface's address: flannel.1's (vxlan) or cni0's (a pod of the same "
    "node); the emulator says the node's address",
}


def known_difference(f: Flow, k: Result, cands: set[Result], node_ips: set[str]) -> str | None:
    """The documented emulator difference this disagreement is, if any (see KNOWN)."""
    if k[0] != "delivered":
        return None
    if any(c[:4] == k[:4] and c[4] in node_ips and c[4] != k[4] for c in cands):
        return "egress-source"
    return None


@dataclass
class NodesReport:
    """Per flow: the kernel's (outcome, path, node, delivered to, source seen), the
    emulator's candidate set, and whether they agree on the first four (``agree``) and on
    the source too (``source_agree``)."""

    cni: str
    flows: list[Flow]
    kernel: list[Result]
    emulator: list[set[Result]]
    agree: list[bool]
    source_agree: list[bool]
    known: list[str | None]  # the KNOWN difference a disagreement is
    counts: dict[str, list[int]] = field(default_factory=dict)  # kind -> [agree, total]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every flow agrees on outcome, path, node and endpoint."""
        return all(self.agree)

    @property
    def unexplained(self) -> list[int]:
        """Flows that disagree (on anything) without a KNOWN reason."""
        return [
            i
            for i, (a, s, kn) in enumerate(zip(self.agree, self.source_agree, self.known))
            if not (a and s) and kn is None
        ]

    def disagreements(self) -> list[str]:
        out = []
        for i, f in enumerate(self.flows):
            if self.agree[i] and self.source_agree[i]:
                continue
            k, e, kn = self.kernel[i], self.emulator[i], self.known[i]
            out.append(
                f"[{f.kind}{', known: ' + kn if kn else ''}] {f.proto} {f.src}:{f.sport} -> "
                f"{f.dst}:{f.dport} (from {f.origin} on {f.entry}, {f.length} B): "
                f"kernel {k}, emulator {sorted(e, key=str)}"
            )
        return out

    def table(self) -> str:
        from .compare import agreement_row

        total = [sum(a for a, _ in self.counts.values()), sum(t for _, t in self.counts.values())]
        lines = [
            f"multi-node lab, cni {self.cni}: {len(self.flows)} flows, {self.seconds:.1f} s "
            "(outcome, path, node, endpoint)"
        ]
        lines += [agreement_row(kind, pair) for kind, pair in sorted(self.counts.items())]
        lines.append(agreement_row("all", total))
        lines.append(agreement_row("source seen too", [sum(self.source_agree), len(self.flows)]))
        for name in sorted({kn for kn in self.known if kn}):
            n = sum(kn == name for kn in self.known)
            lines.append(f"  known emulator difference {name} ({n} flows): {KNOWN[name]}")
        lines += ["  " + d for d in self.disagreements()[:12]]
        return "\n".join(lines)


def _kernel_result(
    f: Flow, fate: str, answer: str, lab: MultiNodeLab, paths: dict[str, dict], cross: str
) -> Result:
    if fate == "answered":
        label, to, seen = answer.split(" ")
        if label == "out":
            return ("left", "out", None, None, None)
        node = label
        key = (f.src, f.sport)
        entry_role = next(s.role for s in lab.specs if s.name == f.entry)
        if node == f.entry:
            path = "local"
        elif key in paths[entry_role]["via_vxlan"]:
            path = "vxlan"
        elif key in paths[entry_role]["via_eth0"]:
            path = "route"
        else:
            path = "?"
        return ("delivered", path, node, None if f.proto == "udp" else to, seen)
    outcome = {
        "ECONNREFUSED": "rejected",
        "timeout": "dropped",
        "EHOSTUNREACH": "no-route",
        "ENETUNREACH": "no-route",
        "EMSGSIZE": "mtu",
    }.get(fate, fate)
    return (outcome, None, None, None, None)


def _emulator_results(cdp, flows: list[Flow]) -> list[set[Result]]:
    from ..packets import from_strings, u32_to_ip

    lines, origins, nodes, lengths = [], [], [], []
    for i, f in enumerate(flows):
        for v in range(VARIANTS):
            sport = f.sport if v == 0 else 1024 + (i * VARIANTS + v) % 20000
            lines.append(f"{f.proto} {f.src}:{sport} -> {f.dst}:{f.dport}")
            origins.append(f.origin)
            nodes.append(f.entry)
            lengths.append(f.length)
    batches = [from_strings([ln], origin=o) for ln, o in zip(lines, origins)]
    batch = np.concatenate(batches)
    batch["ts"] = np.arange(len(batch)) * 1e-6
    cdp.reset_state()
    v = cdp.process(batch, nodes, np.asarray(lengths, dtype=np.int64))
    cdp.reset_state()
    out: list[set[Result]] = []
    for i, f in enumerate(flows):
        cands: set[Result] = set()
        for row in v[i * VARIANTS : (i + 1) * VARIANTS]:
            outcome = OUTCOME_NAMES[int(row["outcome"])]
            if outcome == "delivered":
                to = f"{u32_to_ip(int(row['dst_ip']))}:{int(row['dst_port'])}"
                cands.add(
                    (
                        outcome,
                        PATH_NAMES[int(row["path"])],
                        cdp.node_names[int(row["node"])],
                        None if f.proto == "udp" else to,
                        str(u32_to_ip(int(row["src_ip"]))),
                    )
                )
            elif outcome == "left":
                cands.add((outcome, PATH_NAMES[int(row["path"])], None, None, None))
            else:
                cands.add((outcome, None, None, None, None))
        out.append(cands)
    return out


def make_flows(
    cdp, specs: list[NodeSpec], n: int, seed: int, cluster_cidr: str | None
) -> list[Flow]:
    """``n`` random seeded flows over the classes (see the module doc)."""
    rng = random.Random(seed)
    cluster = cdp.cluster
    by_name = {s.name: s for s in specs}
    clients = {
        s.name: [str(ipaddress.IPv4Network(s.pod_cidr).network_address + k) for k in (200, 201)]
        for s in specs
    }
    services = [
        (svc.cluster_ip, p.port)
        for svc in cluster.services.values()
        if svc.cluster_ip not in ("", "None")
        for p in svc.ports
        if p.protocol == "TCP"
    ]
    node_ports = [
        p.node_port
        for svc in cluster.services.values()
        for p in svc.ports
        if p.node_port and p.protocol == "TCP"
    ]
    endpoints = sorted(
        {
            (a, ep.node_name, port.port)
            for sl in cluster.endpoint_slices.values()
            for ep in sl.endpoints
            if ep.node_name in by_name
            for a in ep.addresses
            for port in sl.ports
            if port.protocol == "TCP" and ":" not in a
        }
    )
    kinds = (
        ["pod-clusterip"] * 4
        + ["pod-pod"] * 2
        + ["nodeport"] * 3
        + ["host", "pod-node", "outside", "mtu"]
        + (["no-route"] if cluster_cidr else [])
    )
    flows: list[Flow] = []
    for i in range(n):
        kind = rng.choice(kinds)
        if kind == "nodeport" and not node_ports:
            kind = "pod-clusterip"
        node = rng.choice(specs)
        src = rng.choice(clients[node.name])
        sport = 40000 + i
        role, origin, proto, length = node.pod_role, "pod", "tcp", 60
        if kind == "pod-clusterip":
            dst, dport = rng.choice(services)
        elif kind == "pod-pod":
            dst, _, dport = rng.choice(endpoints)
        elif kind == "nodeport":
            src, origin, role = rng.choice(EXTERNAL_CLIENTS), "external", "ext"
            dst, dport = node.ip, rng.choice(node_ports)
        elif kind == "host":
            src, origin, role = node.ip, "host", node.role
            dst, dport = rng.choice(services + [(e[0], e[2]) for e in endpoints])
        elif kind == "pod-node":
            dst, dport = rng.choice([s for s in specs if s is not node]).ip, HOST_PORT
        elif kind == "outside":
            dst, dport = OUTSIDE_SERVER
        elif kind == "no-route":
            dst, dport = _unowned(cluster_cidr or "", specs), 8080
            # ip_error() answers a source at most 5 times a second (route/error_cost and
            # error_burst are not per namespace): a source address of its own per flow
            src = str(ipaddress.IPv4Network(node.pod_cidr).network_address + 20 + i % 170)
        else:  # DF-set UDP to a pod of another node: over and under the MTUs
            other = rng.choice([s for s in specs if s is not node])
            dst = str(ipaddress.IPv4Network(other.pod_cidr).network_address + 10)
            dport, proto, length = UDP_PORT, "udp", rng.choice([1400, 1450, 1460, 1500])
            if rng.random() < 0.3:
                src, origin, role = node.ip, "host", node.role
        flows.append(
            Flow(kind, proto, src, sport, dst, int(dport), origin, node.name, role, length)
        )
    return flows


def _unowned(cidr: str, specs: list[NodeSpec]) -> str:
    owned = [ipaddress.IPv4Network(s.pod_cidr) for s in specs]
    for sub in ipaddress.IPv4Network(cidr).subnets(new_prefix=24):
        if not any(sub.overlaps(o) for o in owned):
            return str(sub.network_address + 9)
    raise LabError(f"the cluster CIDR {cidr} has no address that no node owns")


def verify_nodes(
    cdp: Any,
    *,
    cluster_cidr: str | None = None,
    flows: int = 200,
    seed: int = 0,
    timeout: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> NodesReport:
    """The cluster of ``cdp`` (a ``kproxy_emu.cluster_net.ClusterDataplane`` in iptables
    mode: its nodes and CNI model) in the kernel, one namespace per node, against
    ``cdp.process`` on ``flows`` random seeded flows. ``cluster_cidr``: the one ``cdp``
    was built with (no-route flows go to an address of it that no node owns)."""
    from .env import check

    check("iptables")
    if cdp.mode != "iptables":
        raise LabError(f"the multi-node lab loads the iptables mode, not {cdp.mode!r}")
    start = time.monotonic()
    cluster, cni = cdp.cluster, cdp.cni.name
    specs = node_specs(cluster, cdp.node_names)
    flow_list = make_flows(cdp, specs, flows, seed, cluster_cidr)
    pod_tcp = {
        int(p.port)
        for sl in cluster.endpoint_slices.values()
        for p in sl.ports
        if p.protocol == "TCP" and p.port
    }
    with MultiNodeLab(specs, cni, cluster_cidr, cdp.cni.pod_mtu) as lab:
        for s, dp in zip(specs, cdp.nodes):
            load_iptables(cast(Lab, _NodeView(lab, s.role)), render(dp.tables))
        where = {s.pod_role: (s.name, pod_tcp, {UDP_PORT}) for s in specs}
        where.update({s.role: (s.name, {HOST_PORT}, set()) for s in specs})
        where["ext"] = ("out", {OUTSIDE_SERVER[1]}, set())
        Listeners(lab, where)
        if progress:
            progress(f"lab up ({len(specs)} nodes, {cni}); {len(flow_list)} flows")
        fates = _connect_all(lab, flow_list, timeout)
        paths = {s.role: lab.path_sets(s.role) for s in specs}
        kernel = [
            _kernel_result(f, fate, ans, lab, paths, cni)
            for f, (fate, ans) in zip(flow_list, fates)
        ]
    lost = [
        f
        for f, (fate, _) in zip(flow_list, fates)
        if fate
        not in ("answered", "ECONNREFUSED", "timeout", "EHOSTUNREACH", "ENETUNREACH", "EMSGSIZE")
    ]
    if lost:
        f = lost[0]
        raise LabError(
            f"the lab lost {len(lost)} flow(s), e.g. {f.src}:{f.sport} -> {f.dst}:{f.dport}"
        )
    emulator = _emulator_results(cdp, flow_list)
    agree = [k[:4] in {c[:4] for c in e} for k, e in zip(kernel, emulator)]
    source_agree = [k in e for k, e in zip(kernel, emulator)]
    node_ips = {s.ip for s in specs}
    known = [
        None if a and sa else known_difference(f, k, e, node_ips)
        for f, k, e, a, sa in zip(flow_list, kernel, emulator, agree, source_agree)
    ]
    counts: dict[str, list[int]] = {}
    for f, a in zip(flow_list, agree):
        c = counts.setdefault(f.kind, [0, 0])
        c[0] += int(a)
        c[1] += 1
    return NodesReport(
        cni,
        flow_list,
        kernel,
        emulator,
        agree,
        source_agree,
        known,
        counts,
        time.monotonic() - start,
    )


__all__ = ["MultiNodeLab", "NodesReport", "remove_stale_nodes", "verify_nodes"]
