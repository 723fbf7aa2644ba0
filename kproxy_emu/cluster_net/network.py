"""``ClusterDataplane``: the cluster as N nodes, each with its own ``Dataplane`` in one proxy
mode, joined by a CNI model (docs/cluster.md).

A packet enters one node (its source node: the node of the pod that sent it, the node an
outside client reached, or the node itself), goes through that node's dataplane (hooks,
kube-proxy's rules, conntrack, NAT, the NetworkPolicy stage), and is then routed by its
translated destination: a pod of the same node is delivered over the node's bridge, the
node's own address is delivered to the host, a pod (or address) of another node is sent
there (a host route, flat as Calico BGP or kubenet, or a VXLAN overlay as Flannel: 50
bytes of outer headers, overlay MTU 1450 against the underlay's 1500) and goes through
that node's dataplane as a packet arriving from the network, and anything else leaves the
cluster by the default route (an address inside the cluster CIDR that no node owns: no
route). A packet larger than a link's MTU is dropped there, as the kernel does with DF set
(ICMP fragmentation needed), before the next node sees it.

Batch semantics: ``process`` runs hop by hop. Every node first processes the batch's rows
entering it, in time order, in one ``Dataplane.process`` call; the rows forwarded to
another node are then processed there, in row order, and so on for at most ``MAX_HOPS``
nodes. A forwarded packet reaches a node after the rows that entered it in the same call
(its time there is never before the node's clock): as if a link took longer than the
batch. Send a flow's replies in a later call (``replies``), as with the single-node
``packets.replies``. One packet alone (``trace``) follows the same path and state.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import numpy.typing as npt

from ..dataplane import Dataplane, ModeOptions
from ..errors import InputError
from ..packets import (
    PACKET_DTYPE,
    PROTO_NAMES,
    Origin,
    TcpFlag,
    ip_to_u32,
    u32_to_ip,
)

if TYPE_CHECKING:
    from ..dataplane.tracer import TraceResult
    from ..model import Cluster
    from ..model.config import KubeProxyConfig

CNI_MODELS = ("routes", "vxlan")
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
MAX_HOPS = 4  # node dataplanes a packet may go through
DEFAULT_LENGTH = 60  # IP total length when none is given (a TCP SYN with options)


class Outcome(IntEnum):
    """Where a packet ended."""

    DELIVERED = 0  # to a pod or a node's own address in the cluster
    LEFT = 1  # routed out of the cluster (the destination is not the cluster's)
    DROPPED = 2  # a node's dataplane dropped it (rules, conntrack, NetworkPolicy)
    REJECTED = 3  # a node's dataplane rejected it (ICMP / RST back)
    MTU = 4  # larger than a link's MTU with DF set: ICMP fragmentation needed
    NO_ROUTE = 5  # inside the cluster CIDR, but no node owns the address


class Path(IntEnum):
    """The link a packet last took (NONE: it died in its entry node's dataplane)."""

    NONE = 0
    LOCAL = 1  # delivered on the node it was in: the bridge (a pod) or the host
    ROUTE = 2  # a host route to another node (flat routing)
    VXLAN = 3  # the overlay to another node
    OUT = 4  # the default route, out of the cluster


OUTCOME_NAMES = tuple(o.name.lower().replace("_", "-") for o in Outcome)
PATH_NAMES = ("none", "local", "route", "vxlan", "out")

CLUSTER_VERDICT_DTYPE = np.dtype(
    [
        ("src_ip", "u4"),  # the packet as it was delivered (or where it died)
        ("dst_ip", "u4"),
        ("src_port", "u2"),
        ("dst_port", "u2"),
        ("rules", "u4"),  # rules evaluated, summed over the nodes it went through
        ("lookups", "u4"),
        ("node", "i2"),  # the node where it was delivered or died (index into node_names)
        ("hops", "u1"),  # node dataplanes it went through
        ("outcome", "u1"),  # Outcome
        ("path", "u1"),  # Path
        ("first_action", "u1"),  # the entry node's verdict (packets.Action)
        ("masquerade", "?"),  # some node rewrote its source
    ],
    align=True,
)


@dataclass(frozen=True)
class CniModel:
    """The CNI's links: ``routes`` (flat: pod interfaces and node links at the underlay
    MTU) or ``vxlan`` (Flannel: pod interfaces and the overlay at 1450, the outer packet
    50 bytes larger on the 1500-byte underlay)."""

    name: str
    underlay_mtu: int = UNDERLAY_MTU

    @property
    def overhead(self) -> int:
        return VXLAN_OVERHEAD if self.name == "vxlan" else 0

    @property
    def pod_mtu(self) -> int:
        """The MTU of a pod's interface and the node's bridge (Flannel's FLANNEL_MTU)."""
        return self.underlay_mtu - self.overhead

    @property
    def cross_mtu(self) -> int:
        """The largest inner packet that crosses to another node."""
        return self.underlay_mtu - self.overhead

    @property
    def cross_path(self) -> Path:
        return Path.VXLAN if self.name == "vxlan" else Path.ROUTE

    def link_text(self, src: str, dst: str, dst_ip: str) -> str:
        if self.name == "vxlan":
            return (
                f"VXLAN overlay {src} -> {dst}: flannel.1 (MTU {self.cross_mtu}), "
                f"encapsulated in UDP 8472 to {dst_ip} (+{self.overhead} bytes on the "
                f"{self.underlay_mtu}-byte underlay)"
            )
        return f"host route {src} -> {dst}: via {dst_ip} (MTU {self.underlay_mtu})"


class Hop(TypedDict):
    """One node's part of a traced packet."""

    node: str
    packet: str  # the packet as it arrived there
    trace: TraceResult  # that node's Dataplane.trace
    leaves: str | None  # the packet as it left the node's hooks (None: it died there)


class RouteStep(TypedDict):
    kind: str  # local, route, vxlan, out, no-route
    text: str
    mtu: int | None
    ok: bool


class ClusterTrace(TypedDict):
    packet: str
    entry: str  # the node the packet entered
    outcome: str  # OUTCOME_NAMES
    path: str  # PATH_NAMES
    node: str | None  # where it was delivered or died
    delivered_to: str | None  # "ip:port" (pod, node or outside address)
    pod: str | None  # the destination pod "ns/name" when known
    source_seen: str | None  # the source as the destination saw it
    failed: dict[str, str] | None  # {"step": ..., "reason": ...}
    steps: list[dict[str, Any]]  # in order: proxy (a node's trace), route, deliver


class ClusterDataplane:
    """The cluster's nodes, each a ``Dataplane`` in ``mode``, joined by a CNI model.

    ``cni``: ``routes`` (flat host routes, as Calico BGP or kubenet) or ``vxlan``
    (Flannel's overlay). ``seed``: each node's stream is seeded from it and the node's
    position. ``policy_engine``: each node runs the NetworkPolicy stage (see
    docs/cluster.md for what the per-node stage checks). ``nodes``: node names to emulate
    (default: every Node of the cluster, in name order)."""

    def __init__(
        self,
        cluster: Cluster,
        mode: str | ModeOptions = "iptables",
        *,
        cni: str = "routes",
        seed: int = 0,
        policy_engine: str | None = None,
        config: KubeProxyConfig | None = None,
        cluster_cidr: str | None = None,
        masquerade_all: bool | None = None,
        nodes: list[str] | None = None,
    ):
        if cni not in CNI_MODELS:
            raise InputError("must be routes or vxlan", field="cni", value=cni)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError("must be a non-negative integer", field="seed", value=seed)
        names = list(nodes) if nodes is not None else sorted(n.name for n in cluster.nodes.values())
        if not names:
            raise InputError("the cluster has no Node objects: nothing to join", field="nodes")
        self.cluster = cluster
        self.cni = CniModel(cni)
        self.seed = int(seed)
        self.node_names = names
        self.node_index = {n: i for i, n in enumerate(names)}
        self.nodes: list[Dataplane] = []
        for i, name in enumerate(names):
            node_seed = int(np.random.SeedSequence([self.seed, i]).generate_state(1, np.uint32)[0])
            self.nodes.append(
                Dataplane(
                    cluster,
                    mode,
                    node=name,
                    seed=node_seed,
                    config=config,
                    cluster_cidr=cluster_cidr,
                    masquerade_all=masquerade_all,
                    policy_engine=policy_engine,
                )
            )
        self.mode = self.nodes[0].mode
        self._scratch_arrays: tuple[Any, Any, Any, Any] | None = None
        self._build_routes()

    def __repr__(self) -> str:
        return (
            f"<ClusterDataplane {self.mode} cni={self.cni.name} nodes={len(self.nodes)} "
            f"seed={self.seed}>"
        )

    # ------------------------------------------------------------------ routing tables
    def _build_routes(self) -> None:
        """Node addresses (exact), pod CIDRs (per node), pod and endpoint addresses outside
        every pod CIDR (exact, from Pods' nodeName and EndpointSlices' nodeName), and the
        cluster CIDRs (an address inside them that no node owns has no route)."""
        self._routes_c: Any = None  # their compiled copy, built on first use
        ips: dict[int, int] = {}
        for i, name in enumerate(self.node_names):
            for ip in self.cluster.node(name).ips:
                if ":" not in ip:
                    ips[ip_to_u32(ip)] = i
        self._host_keys = np.array(sorted(ips), np.uint32)
        self._host_vals = np.array([ips[k] for k in sorted(ips)], np.int16)
        nets: list[tuple[int, int, int]] = []
        for i, name in enumerate(self.node_names):
            for cidr in self.cluster.node(name).pod_cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                if net.version == 4:
                    nets.append((int(net.network_address), int(net.netmask), i))
        self._nets = nets
        # disjoint ranges (the usual podCIDRs): one sorted search instead of one pass each
        order = sorted(nets)
        self._net_start = np.array([n for n, _, _ in order], np.uint32)
        self._net_mask = np.array([m for _, m, _ in order], np.uint32)
        self._net_node = np.array([i for _, _, i in order], np.int16)
        ends = [n + ((~m) & 0xFFFFFFFF) for n, m, _ in order]
        self._nets_disjoint = all(ends[k] < order[k + 1][0] for k in range(len(order) - 1))
        extra: dict[int, int] = {}

        def note(ip: str, node_name: str) -> None:
            if ":" in ip or node_name not in self.node_index:
                return
            u = ip_to_u32(ip)
            if u not in ips and not any((u & m) == n for n, m, _ in nets):
                extra.setdefault(u, self.node_index[node_name])

        self.pod_by_ip: dict[int, str] = {}
        for pod in self.cluster.pods.values():
            for ip in pod.pod_ips:
                if pod.host_network or ":" in ip:
                    continue
                self.pod_by_ip.setdefault(ip_to_u32(ip), f"{pod.namespace}/{pod.name}")
                note(ip, pod.node_name)
        for sl in self.cluster.endpoint_slices.values():
            for ep in sl.endpoints:
                for ip in ep.addresses:
                    note(ip, ep.node_name)
        self._pod_keys = np.array(sorted(extra), np.uint32)
        self._pod_vals = np.array([extra[k] for k in sorted(extra)], np.int16)
        cidrs = set()
        for dp in self.nodes:
            if dp.options.detect_local_mode == "ClusterCIDR":
                cidrs.add(dp.options.detect_local_value)
        self._cluster_nets = []
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            if net.version == 4:
                self._cluster_nets.append((int(net.network_address), int(net.netmask)))

    def _compiled_routes(self) -> Any:
        """The routing tables for the compiled hop passes (built once): the address space
        cut at every boundary of the tables, each segment's answer from ``route`` itself."""
        routes = self._routes_c
        if routes is None:
            from .._cext import clusterhop

            cuts = {0}
            for k in (*self._host_keys.tolist(), *self._pod_keys.tolist()):
                cuts.update((k, k + 1))
            for net, mask in (*((n, m) for n, m, _ in self._nets), *self._cluster_nets):
                cuts.update((net, net + ((~mask) & 0xFFFFFFFF) + 1))
            starts = np.array(sorted(c for c in cuts if c < 2**32), np.uint32)
            owner, host, no_route = self.route(starts)
            flags = host.astype(np.uint8) | (no_route.astype(np.uint8) << 1)
            routes = clusterhop.Routes(starts, owner, flags, len(self.nodes))
            self._routes_c = routes
        return routes

    @staticmethod
    def _exact(keys: npt.NDArray[np.uint32], vals: npt.NDArray[np.int16], ip: Any) -> Any:
        if len(keys) == 0:
            return np.full(ip.shape, -1, np.int16)
        pos = np.minimum(np.searchsorted(keys, ip), len(keys) - 1)
        return np.where(keys[pos] == ip, vals[pos], -1).astype(np.int16)

    def route(self, ip: npt.NDArray[np.uint32]) -> tuple[Any, Any, Any]:
        """(owner node or -1, is a node address, no route) for each destination."""
        ip = np.asarray(ip, np.uint32)
        host = self._exact(self._host_keys, self._host_vals, ip)
        owner = host.copy()
        if self._nets_disjoint and len(self._net_start):
            pos = np.maximum(np.searchsorted(self._net_start, ip, side="right") - 1, 0)
            hit = (ip & self._net_mask[pos]) == self._net_start[pos]
            owner = np.where((owner < 0) & hit, self._net_node[pos], owner)
        else:
            for net, mask, i in self._nets:
                owner = np.where((owner < 0) & ((ip & np.uint32(mask)) == np.uint32(net)), i, owner)
        owner = np.where(owner < 0, self._exact(self._pod_keys, self._pod_vals, ip), owner)
        in_cluster = np.zeros(ip.shape, bool)
        for net, mask in self._cluster_nets:
            in_cluster |= (ip & np.uint32(mask)) == np.uint32(net)
        return owner.astype(np.int16), host >= 0, (owner < 0) & in_cluster

    def entry_nodes(self, packets: npt.NDArray[np.void]) -> npt.NDArray[np.int16]:
        """Where each packet enters the cluster: the node owning its source (a pod or the
        node itself), else the node owning its destination (an outside client reaching a
        node's address). InputError for a packet neither says (an outside client sending
        to a ClusterIP or load-balancer IP: give ``nodes``)."""
        src_owner, _, _ = self.route(packets["src_ip"])
        dst_owner, dst_host, _ = self.route(packets["dst_ip"])
        ext = packets["origin"] == Origin.EXTERNAL
        node = np.where(ext | (src_owner < 0), np.where(dst_host, dst_owner, -1), src_owner)
        bad = np.flatnonzero(node < 0)
        if len(bad):
            k = int(bad[0])
            raise InputError(
                "cannot tell which node this packet enters: give its node",
                obj=f"packets[{k}]",
                field="nodes",
                value=f"{u32_to_ip(int(packets['src_ip'][k]))} -> "
                f"{u32_to_ip(int(packets['dst_ip'][k]))}",
            )
        return node.astype(np.int16)

    def _nodes_arg(self, nodes: object, packets: npt.NDArray[np.void]) -> npt.NDArray[np.int16]:
        if nodes is None:
            return self.entry_nodes(packets)
        if isinstance(nodes, str):
            nodes = [nodes] * len(packets)
        arr = np.asarray(nodes)
        if arr.dtype.kind in "UO":
            try:
                arr = np.array([self.node_index[str(n)] for n in arr], np.int64)
            except KeyError as exc:
                raise InputError(
                    "not a node of the cluster", field="nodes", value=exc.args[0]
                ) from None
        if arr.shape != (len(packets),) or arr.dtype.kind not in "ui":
            raise InputError(
                "must give one node (index or name) per packet",
                field="nodes",
                value=f"{arr.dtype}, shape {arr.shape}",
            )
        if len(arr) and (arr.min() < 0 or arr.max() >= len(self.nodes)):
            raise InputError("node index out of range", field="nodes", value=int(arr.max()))
        return arr.astype(np.int16)

    # ------------------------------------------------------------------ batch
    def process(
        self,
        packets: npt.NDArray[np.void],
        nodes: Any = None,
        lengths: Any = None,
    ) -> npt.NDArray[np.void]:
        """A batch over the cluster: PACKET_DTYPE rows, each entering ``nodes[i]`` (an
        index into ``node_names`` or a name; default: ``entry_nodes``), of IP total length
        ``lengths[i]`` bytes (default DEFAULT_LENGTH). Returns CLUSTER_VERDICT_DTYPE rows.
        Each node's rows go through its Dataplane in one call per hop (module docstring)."""
        if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE:
            raise InputError(
                "must be a numpy array of kproxy_emu.packets.PACKET_DTYPE",
                field="packets",
                value=type(packets).__name__,
            )
        n = len(packets)
        node = self._nodes_arg(nodes, packets)
        if lengths is None:
            length = np.full(n, DEFAULT_LENGTH, np.uint16)
        else:
            given = np.asarray(lengths, np.int64)
            if given.shape != (n,) or (n and (given.min() < 20 or given.max() > 65535)):
                raise InputError(
                    "must give one IP length, 20-65535 bytes, per packet", field="lengths"
                )
            length = given.astype(np.uint16)
        from .._cext import clusterhop

        cni = self.cni
        routes = self._compiled_routes()
        packets = np.ascontiguousarray(packets)
        n_nodes = len(self.nodes)
        # the verdict rows are written in place by compiled passes (cext/clusterhop.pyx):
        # the entry and its first link's MTU, then per hop each node's rows gathered in row
        # order, its Dataplane, and the routing, MTU checks, outcome and path of its rows
        out = np.empty(n, CLUSTER_VERDICT_DTYPE)
        where = np.array(node, np.int16)  # the node each row is at (-1: it has ended)
        entering = clusterhop.enter(
            packets, where, length, out, cni.pod_mtu, cni.underlay_mtu, n_nodes
        )
        part, work, work_length, work_next = self._scratch(entering)
        bounds = clusterhop.group(where, n_nodes)
        for hop in range(MAX_HOPS + 1):
            if bounds[-1] == 0:
                break
            if hop == MAX_HOPS:  # still moving after MAX_HOPS nodes: a routing loop
                out["outcome"][where >= 0] = Outcome.NO_ROUTE
                break
            # forwarded: after what each node already processed this call
            clocks = np.array([dp.clock for dp in self.nodes], np.float64)
            clusterhop.gather(
                packets, out, length, where, bounds, clocks, hop > 0, part, work, work_length
            )
            for i in range(n_nodes):
                lo, hi = int(bounds[i]), int(bounds[i + 1])
                if lo == hi:
                    continue
                verdicts = self.nodes[i].process(part[lo:hi])
                clusterhop.apply(
                    routes,
                    verdicts,
                    work[lo:hi],
                    work_length[lo:hi],
                    work_next[lo:hi],
                    i,
                    hop,
                    cni.pod_mtu,
                    cni.cross_mtu,
                    int(cni.cross_path),
                    cni.underlay_mtu,
                )
            bounds = clusterhop.scatter(where, bounds, work, work_next, out)
        return out

    def _scratch(self, m: int) -> tuple[Any, Any, Any, Any]:
        """A hop's rows grouped by node (each node's in row order): the packets as they
        reach their node, their verdict rows so far, lengths, next nodes. Kept between
        calls (grown as needed): fresh pages cost a fault each on first touch."""
        have = self._scratch_arrays
        if have is None or len(have[0]) < m:
            have = (
                np.empty(m, PACKET_DTYPE),
                np.empty(m, CLUSTER_VERDICT_DTYPE),
                np.empty(m, np.uint16),
                np.empty(m, np.int16),
            )
            self._scratch_arrays = have
        return have[0][:m], have[1][:m], have[2][:m], have[3][:m]

    def replies(
        self, packets: npt.NDArray[np.void], verdicts: npt.NDArray[np.void]
    ) -> tuple[npt.NDArray[np.void], npt.NDArray[np.int16]]:
        """Each delivered packet's first reply (SYN-ACK for TCP) from where it was
        delivered back to the source it saw, and the node each reply enters (the node it
        was delivered on): give both to ``process`` in a later call. Timed 1 ms after the
        batch's last packet, its spacing kept."""
        ok = verdicts["outcome"] == Outcome.DELIVERED
        rep = packets[ok].copy()
        v = verdicts[ok]
        rep["src_ip"], rep["src_port"] = v["dst_ip"], v["dst_port"]
        rep["dst_ip"], rep["dst_port"] = v["src_ip"], v["src_port"]
        rep["tcp_flags"] = np.where(rep["proto"] == 6, TcpFlag.SYN | TcpFlag.ACK, 0)
        is_host = np.isin(rep["src_ip"], self._host_keys)
        rep["origin"] = np.where(is_host, Origin.HOST, Origin.POD).astype(np.uint8)
        if len(rep):
            start = max(float(packets["ts"].max()), max(dp.clock for dp in self.nodes)) + 0.001
            rep["ts"] = rep["ts"] - rep["ts"][0] + start
        return rep, v["node"].astype(np.int16)

    def reset_state(self) -> None:
        for dp in self.nodes:
            dp.reset_state()

    # ------------------------------------------------------------------ one packet
    def trace(
        self,
        packet: str,
        node: str | None = None,
        *,
        origin: str | None = None,
        time: float = 0.0,
        length: int = DEFAULT_LENGTH,
        commit: bool = False,
        all_rules: bool = False,
    ) -> ClusterTrace:
        """One packet through the cluster, node by node, as ``process`` takes it: each
        node's ``Dataplane.trace`` (rules or lookups, DNAT, masquerade, NetworkPolicy),
        each link (bridge, host route or overlay with its MTU) and the delivery.
        ``node``: where it enters (default: as ``entry_nodes`` tells). ``commit``: the
        nodes keep the state the packet leaves (conntrack: a reply traced next finds it)."""
        from ..packets import parse

        row = parse(packet, origin=origin)
        entry = self.node_index.get(node, -1) if node is not None else int(self.entry_nodes(row)[0])
        if entry < 0:
            raise InputError("not a node of the cluster", field="node", value=node)
        cni = self.cni
        steps: list[dict[str, Any]] = []
        result: ClusterTrace = {
            "packet": packet,
            "entry": self.node_names[entry],
            "outcome": "delivered",
            "path": "none",
            "node": self.node_names[entry],
            "delivered_to": None,
            "pod": None,
            "source_seen": None,
            "failed": None,
            "steps": steps,
        }

        def fail(outcome: Outcome, step: str, reason: str) -> ClusterTrace:
            result["outcome"] = OUTCOME_NAMES[outcome]
            result["failed"] = {"step": step, "reason": reason}
            return result

        cur = row[0].copy()
        origin_code = int(cur["origin"])
        first_mtu = cni.underlay_mtu if origin_code == Origin.EXTERNAL else cni.pod_mtu
        if origin_code != Origin.HOST and length > first_mtu:
            where = "the node's uplink" if origin_code == Origin.EXTERNAL else "the pod's interface"
            steps.append(
                {
                    "step": "route",
                    "kind": "mtu",
                    "ok": False,
                    "mtu": first_mtu,
                    "text": f"{length} bytes > MTU {first_mtu} of {where}",
                }
            )
            return fail(
                Outcome.MTU, "route", f"MTU exceeded: {length} bytes > {first_mtu} ({where})"
            )
        here = entry
        for hop in range(MAX_HOPS):
            dp = self.nodes[here]
            text = _packet_text(cur)
            t = float(time) if hop == 0 else max(float(time), dp.clock)
            tr = dp.trace(text, time=t, commit=commit, all_rules=all_rules)
            name = self.node_names[here]
            steps.append({"step": "proxy", "node": name, "packet": text, "trace": tr})
            result["node"] = name
            if tr["verdict"] in ("DROP", "REJECT"):
                pol = tr.get("policy")
                if pol is not None and pol["evaluated"] and not pol["allowed"]:
                    side = (
                        pol["egress"]
                        if pol["egress"] and not pol["egress"]["allowed"]
                        else pol["ingress"]
                    )
                    reason = f"policy denied: {side['text'] if side else ''}"
                    steps.append({"step": "policy", "node": name, "ok": False, "policy": pol})
                    return fail(Outcome.DROPPED, "policy", reason)
                if tr["service"] is not None and not tr["candidates"]:
                    svc = tr["service"]["name"]
                    reason = f"no endpoints: {svc} has none this node may use ({tr['verdict']})"
                else:
                    reason = f"{name}'s dataplane: {tr['verdict']}"
                outcome = Outcome.REJECTED if tr["verdict"] == "REJECT" else Outcome.DROPPED
                return fail(outcome, "proxy", reason)
            if tr.get("policy") is not None and tr["policy"] and tr["policy"]["evaluated"]:
                steps.append({"step": "policy", "node": name, "ok": True, "policy": tr["policy"]})
            if tr["dnat"]:
                ip, _, port = tr["dnat"].rpartition(":")
                cur["dst_ip"], cur["dst_port"] = ip_to_u32(ip), int(port)
            if tr.get("snat"):
                ip, _, port = str(tr["snat"]).rpartition(":")
                cur["src_ip"], cur["src_port"] = ip_to_u32(ip), int(port)
            dst = np.array([cur["dst_ip"]], np.uint32)
            owner_a, host_a, nort_a = self.route(dst)
            owner, is_host, nort = int(owner_a[0]), bool(host_a[0]), bool(nort_a[0])
            daddr = f"{u32_to_ip(int(cur['dst_ip']))}:{int(cur['dst_port'])}"
            result["source_seen"] = f"{u32_to_ip(int(cur['src_ip']))}:{int(cur['src_port'])}"
            result["delivered_to"] = daddr
            if nort:
                steps.append(
                    {
                        "step": "route",
                        "kind": "no-route",
                        "ok": False,
                        "mtu": None,
                        "text": f"{daddr}: inside the cluster CIDR but no node owns it",
                    }
                )
                return fail(Outcome.NO_ROUTE, "route", f"no route to {daddr}")
            if owner < 0:
                result["path"] = "out"
                steps.append(
                    {
                        "step": "route",
                        "kind": "out",
                        "ok": True,
                        "mtu": cni.underlay_mtu,
                        "text": f"{daddr} is outside the cluster: default route from {name}",
                    }
                )
                result["outcome"] = OUTCOME_NAMES[Outcome.LEFT]
                return result
            if owner == here:
                pod = self.pod_by_ip.get(int(cur["dst_ip"]))
                if hop == 0:
                    result["path"] = "local"
                if is_host:
                    text2 = f"{daddr} is {name}'s own address: delivered to the host"
                    mtu = None
                else:
                    text2 = (
                        f"{daddr} is in {name}'s pod range: delivered over the bridge "
                        f"(pod interface MTU {cni.pod_mtu})"
                    )
                    mtu = cni.pod_mtu
                    if length > cni.pod_mtu:
                        steps.append(
                            {
                                "step": "route",
                                "kind": "bridge",
                                "ok": False,
                                "mtu": mtu,
                                "text": text2,
                            }
                        )
                        return fail(
                            Outcome.MTU,
                            "route",
                            f"MTU exceeded: {length} bytes > {mtu} (the pod's interface on {name})",
                        )
                steps.append(
                    {
                        "step": "deliver",
                        "kind": "host" if is_host else "bridge",
                        "ok": True,
                        "mtu": mtu,
                        "node": name,
                        "pod": pod,
                        "text": text2 + (f" (pod {pod})" if pod else ""),
                    }
                )
                result["pod"] = pod
                return result
            other = self.node_names[owner]
            other_ip = self.cluster.node(other).ips[0]
            # another node's own address goes over the underlay in either model: only pod
            # CIDRs are routed through the overlay (what the kernel lab measured)
            underlay = is_host or cni.name == "routes"
            link = (
                f"host route {name} -> {other}: {daddr} is {other}'s own address, over the "
                f"underlay (MTU {cni.underlay_mtu})"
                if is_host and cni.name != "routes"
                else cni.link_text(name, other, other_ip)
            )
            mtu = cni.underlay_mtu if is_host else cni.cross_mtu
            result["path"] = PATH_NAMES[Path.ROUTE if underlay else cni.cross_path]
            if length > mtu:
                steps.append(
                    {"step": "route", "kind": cni.name, "ok": False, "mtu": mtu, "text": link}
                )
                return fail(
                    Outcome.MTU,
                    "route",
                    f"MTU exceeded: {length} bytes > {mtu} on {name} -> {other} "
                    f"({'route' if underlay else cni.name}): ICMP fragmentation needed",
                )
            steps.append(
                {
                    "step": "route",
                    "kind": "route" if underlay else "vxlan",
                    "ok": True,
                    "mtu": mtu,
                    "text": link,
                }
            )
            cur["origin"] = Origin.EXTERNAL
            here = owner
        return fail(Outcome.NO_ROUTE, "route", f"more than {MAX_HOPS} nodes: a routing loop")


def _packet_text(row: Any) -> str:
    proto = PROTO_NAMES.get(int(row["proto"]), "tcp")
    origin = ("pod", "external", "host")[int(row["origin"])] if int(row["origin"]) < 3 else None
    s, d = u32_to_ip(int(row["src_ip"])), u32_to_ip(int(row["dst_ip"]))
    if proto == "icmp":
        text = f"icmp {s} -> {d}"
    else:
        text = f"{proto} {s}:{int(row['src_port'])} -> {d}:{int(row['dst_port'])}"
    if proto == "tcp":
        f = int(row["tcp_flags"])
        letters = "".join(
            c for bit, c in ((1, "F"), (2, "S"), (4, "R"), (8, "P"), (16, "A")) if f & bit
        )
        text += f" flags={letters or 'none'}"
    if origin:
        text += f" from={origin}"
    return text
