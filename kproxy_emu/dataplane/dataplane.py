"""Dataplane(cluster, mode=..., node=...): one node of a cluster in one proxy mode.

The facade owns what every mode shares: the emulated node and kube-proxy options, the
proxy view of the cluster, conntrack, the seeded random stream, the packet batch checks
and the trace format. A mode backend (``iptables_backend.py``, ...) owns its compiled
state, its sync, its renderer and its engine (traces: dataplane/tracer.py).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._cext.pipeline import Rng
from ..errors import InputError, KproxyError
from ..model.cluster import Cluster, paused_gc
from ..model.config import KubeProxyConfig, NodeConfig
from ..netfilter.ruleset import Ruleset
from ..proxy import ProxyOptions, ProxyView
from ..proxy.tracker import Changes, ChangeTracker, Deleted, Event
from .backend import (
    Backend,
    IptablesOptions,
    ModeOptions,
    NodeContext,
    RuleModel,
    make_backend,
    mode_options,
)
from .sync import SyncResult
from .tracer import TraceResult

if TYPE_CHECKING:
    from .._cext.conntrack import ConntrackTable
    from .lowering import Lowered
    from .nft_lowering import LoweredNft


def resolve_node(
    cluster: Cluster,
    node: str | None = None,
    node_config: NodeConfig | None = None,
    node_ips: list[str] | None = None,
) -> NodeConfig:
    """The emulated node: a Node object of the cluster when there is one by that name (or
    the first Node when no name is given), else the node file; ``node_ips`` overrides IPs."""
    if node_config is not None and (node is None or node == node_config.name):
        chosen = node_config
    elif node is not None or cluster.nodes:
        obj = cluster.node(node) if node is not None else next(iter(cluster.nodes.values()))
        if not obj.ips:
            raise InputError(
                "node has no InternalIP or ExternalIP address",
                obj=obj.ref,
                field="status.addresses",
            )
        chosen = NodeConfig.from_node(
            obj.name, obj.ips, zone=obj.zone or None, pod_cidrs=obj.pod_cidrs
        )
    else:
        raise InputError(
            "no node to emulate: the manifests hold no Node object; "
            "give --node-config FILE (or --node NAME with Node objects)"
        )
    if node_ips:
        try:
            chosen = NodeConfig.from_node(
                chosen.name, node_ips, zone=chosen.zone, pod_cidrs=chosen.pod_cidrs
            )
        except InputError as exc:
            raise InputError(exc.message, field="--node-ip", value=exc.value) from None
    return chosen


class Dataplane:
    def __init__(
        self,
        cluster: Cluster,
        mode: str | ModeOptions = "iptables",
        *,
        node: str | None = None,
        node_config: NodeConfig | None = None,
        node_ips: list[str] | None = None,
        config: KubeProxyConfig | None = None,
        cluster_cidr: str | None = None,
        masquerade_all: bool | None = None,
        mark_text: str | None = None,
        seed: int = 0,
        conntrack: bool = True,
    ):
        """One node of ``cluster`` in one proxy mode.

        ``mode``: a mode name (its defaults), or the mode's options object carrying what
        only that mode has: ``IptablesOptions(tables=...)`` (a node's own iptables dump
        instead of compiled rules), ``NftablesOptions(service_cidrs=...)``,
        ``IpvsOptions(scheduler=..., conn_tab_bits=...)``. The node is a Node object of
        the cluster (``node``: its name; default the first), else ``node_config``;
        ``node_ips`` overrides its addresses. ``config`` is a KubeProxyConfiguration;
        ``cluster_cidr``, ``masquerade_all`` and ``mark_text`` override it, as flags do."""
        mode_opts = mode_options(mode)
        self.cluster = cluster
        self.mode = mode_opts.mode
        self.mode_options = mode_opts
        self.seed = seed
        node_cfg = resolve_node(cluster, node, node_config, node_ips)
        self.options = ProxyOptions.build(
            node_cfg,
            config,
            cluster_cidr=cluster_cidr,
            masquerade_all=masquerade_all,
            mark_text=mark_text,
        )
        self.config = config or KubeProxyConfig()
        self.syncs: list[SyncResult] = []
        # statistic draws: one xorshift64* stream seeded from the Dataplane's seed
        seeds = np.random.SeedSequence(seed).generate_state(2, np.uint64)
        self.rng = Rng(int(seeds[0]) or 1)
        self.conntrack = _conntrack_table(self.config, int(seeds[1])) if conntrack else None
        self._build_view()
        self.node = NodeContext(self.options, self.config, seed, cluster, self.view)
        self.backend: Backend = make_backend(self.node, mode_opts)
        if not (isinstance(mode_opts, IptablesOptions) and mode_opts.tables is not None):
            self.sync()

    def _build_view(self) -> None:
        """The proxy view built afresh from the cluster, with a change tracker holding
        (and sealing) the objects it was built from."""
        with paused_gc():  # a 100k-service view is millions of small objects
            self.tracker = ChangeTracker(self.cluster)
            self.view = ProxyView(self.cluster, self.options)
        self._own_cluster = False  # apply() edits a copy of the cluster, never the caller's
        if hasattr(self, "backend"):
            self.node.cluster = self.cluster
            self.node.view = self.view
            self.backend.view_changed(None)

    @property
    def tables(self) -> Ruleset:
        """The node's iptables as they stand after the syncs (iptables and IPVS modes;
        nftables mode has its ``ip kube-proxy`` table in ``ruleset``)."""
        tables = getattr(self.backend, "tables", None)
        if not isinstance(tables, Ruleset):
            raise KproxyError(f"{self.mode} mode keeps no iptables tables: see Dataplane.ruleset")
        return tables

    @property
    def ruleset(self) -> RuleModel:
        """The payload of a full sync of the current cluster, in the mode's model."""
        return self.backend.ruleset

    def update(self, cluster: Cluster | None = None) -> SyncResult:
        """Resync to a new state of the cluster, as kube-proxy does after watch events:
        a partial sync rewriting only the chains of services whose Service or
        EndpointSlices changed (a full one if the last restore failed).

        ``cluster``: the new state; None resyncs the Dataplane's own cluster after the
        caller changed its dicts in place. Changes are found by object: add, remove or
        replace Service, EndpointSlice and Node objects (``dataclasses.replace``). Objects
        the Dataplane has read are sealed: editing one in place raises InputError."""
        new = cluster if cluster is not None else self.cluster
        tracker = self.tracker
        with paused_gc():  # a collection now would walk the whole (large) heap
            for event in tracker.diff(new):
                tracker.record(event)
            tracker.follow_order(new)
            if cluster is not None:
                self.cluster = cluster
                self._own_cluster = False
            return self._sync_changes()

    def apply(self, events: Iterable[Event]) -> SyncResult:
        """Apply watch events and resync: ``Added(obj)``, ``Updated(obj)`` (a new version
        of an object of the same kind and name) and ``Deleted(kind, namespace, name)``
        of Services, EndpointSlices and Nodes (``kproxy_emu.proxy.tracker``), in order.

        The Dataplane's ``cluster`` follows the events (the first apply makes it the
        Dataplane's own copy; the Cluster passed in is not changed). A bad event (adding
        an object that exists, updating or deleting one that does not, another kind)
        raises InputError; the events before it are kept and synced by the next sync."""
        if not self._own_cluster:
            own = copy.copy(self.cluster)
            own.services = dict(own.services)
            own.endpoint_slices = dict(own.endpoint_slices)
            own.nodes = dict(own.nodes)
            self.cluster, self._own_cluster = own, True
        collections: dict[str, dict[Any, Any]] = {
            "Service": self.cluster.services,
            "EndpointSlice": self.cluster.endpoint_slices,
            "Node": self.cluster.nodes,
        }
        with paused_gc():  # a collection now would walk the whole (large) heap
            for event in events:
                self.tracker.record(event)
                if isinstance(event, Deleted):
                    key = (event.namespace, event.name)
                    del collections[event.kind][("", event.name) if event.kind == "Node" else key]
                else:
                    collections[event.obj.kind][event.obj.key] = event.obj
            return self._sync_changes()

    def _sync_changes(self) -> SyncResult:
        """Bring the view up to the tracker's pending changes, then sync."""
        changes = self.tracker.take()
        self.node.cluster = self.cluster
        full = self._node_changed(changes)
        tracker = self.tracker
        self.view.apply(
            changes.services, tracker.services, tracker.slices_for, reorder=changes.reordered
        )
        self.backend.view_changed(None if full else changes.services)
        return self.sync(None if full else changes.services)

    def _node_changed(self, changes: Changes) -> bool:
        """A change of the emulated node that the rules depend on: its zone label
        (topology hints; a full sync follows). Its addresses are read once, as
        kube-proxy reads them at start (it restarts when they change)."""
        change = changes.node_objects.get(("", self.options.node.name))
        if change is None or change[1] is None:
            return False
        zone = change[1].zone or None
        if zone == self.options.node.zone:
            return False
        self.options.node = dataclasses.replace(self.options.node, zone=zone)
        return True

    def sync(self, changed: set[tuple[str, str]] | None = None) -> SyncResult:
        """One sync of the mode (kube-proxy's syncProxyRules): compile and apply."""
        result = self.backend.sync(changed)
        self.syncs.append(result)
        return result

    def trace(
        self,
        packet: str,
        origin: str | None = None,
        *,
        time: float = 0.0,
        commit: bool = False,
        all_rules: bool = True,
    ) -> TraceResult:
        """One packet at emulated ``time`` through the same engine and node state as
        ``process``: what it did (verdict, translation, endpoint, each rule, expression and
        lookup visited) and every way it could have gone from the current state
        (``candidates`` and ``outcomes`` with their probabilities).

        ``commit``: the node's state advances exactly as ``process`` would advance it
        (conntrack, affinity lists and sets, IPVS connections, nth counters, the random
        stream); otherwise nothing changes and the verdict is the one ``process`` would give
        this packet next. ``all_rules``: ``steps`` holds every rule evaluated; otherwise
        only the matched path (``steps_omitted`` counts the others), which is also faster.
        ``service`` names the Service port the packet was addressed to. See
        kproxy_emu/dataplane/tracer.py."""
        from .tracer import trace

        return trace(self, packet, origin, time=time, commit=commit, all_rules=all_rules)

    def reset_state(self) -> None:
        """Forget every flow and per-rule state (conntrack, affinity lists, nth counters)
        and restart the random stream from the seed: as a node just after boot."""
        seeds = np.random.SeedSequence(self.seed).generate_state(2, np.uint64)
        self.rng = Rng(int(seeds[0]) or 1)
        if self.conntrack is not None:
            self.conntrack = _conntrack_table(self.config, int(seeds[1]))
        self.backend.reset_state()

    def prepare(self) -> None:
        """Build the engine's tables now (else the first ``process`` does)."""
        self.backend.prepare()

    def packet_targets(self) -> np.ndarray:
        """Service frontends this node serves (TARGET_DTYPE): every ClusterIP, externalIP
        and load-balancer IP, and NodePorts on this node's own addresses only."""
        return self.cluster.packet_targets(node_ips=self.options.node.local_ips)

    @property
    def lowered(self) -> Lowered | LoweredNft:
        """The engine's packed tables (rebuilt after each sync)."""
        return cast("Lowered | LoweredNft", self.backend.lowered)

    @property
    def endpoints(self) -> list[str]:
        """The endpoint table that verdicts' ``endpoint`` indexes ("ip:port"). It only grows:
        an index keeps its meaning across updates."""
        self.backend.prepare()
        return self.backend.endpoints

    def process(self, packets: np.ndarray) -> np.ndarray:
        """A batch of packets (PACKET_DTYPE) in, verdicts (VERDICT_DTYPE) out.

        Each packet walks the node's hooks in the mode's compiled engine, without the GIL.
        With conntrack (the default), a packet of a flow already seen, in either direction,
        gets the stored translation (``ct_hit``) and skips the nat rules, as in the kernel;
        timestamps (``ts``) drive the conntrack timeouts. Packets with origin AUTO are
        classified by source address first. Random draws continue one seeded stream
        across calls, so the same calls in the same order give the same verdicts.
        """
        from ..packets import PACKET_DTYPE, empty_verdicts

        if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE:
            raise InputError(
                "must be a numpy array of kproxy_emu.packets.PACKET_DTYPE",
                field="packets",
                value=type(packets).__name__,
            )
        packets = self._resolve_origins(np.ascontiguousarray(packets))
        out = empty_verdicts(len(packets))
        self.backend.process(packets, out, self.conntrack, self.rng)
        return out

    def _resolve_origins(self, packets: np.ndarray) -> np.ndarray:
        """Packets with origin AUTO (a copy if any): a node address is the host, the cluster
        CIDR (else the nodes' pod CIDRs) holds pods, anything else is external."""
        from ..packets import Origin, resolve_origins

        if not (packets["origin"] == Origin.AUTO).any():
            return packets
        if self.options.detect_local_mode in ("ClusterCIDR", "NodeCIDR"):
            pods = [self.options.detect_local_value]
        else:
            pods = [c for n in self.cluster.nodes.values() for c in n.pod_cidrs if ":" not in c]
        hosts = [ip for ip in self.options.node.local_ips if ":" not in ip]
        return resolve_origins(packets.copy(), pods, hosts)

    def render(self, *, sorted: bool = False, format: str = "restore") -> str:
        """The mode's native text: what kube-proxy loads for a full sync (``restore``:
        iptables-restore input, an ``nft -f`` script), or what the node lists afterwards
        (``save``: iptables-save, ``nft list ruleset``); ``sorted``: the normalised form
        kube-proxy's unit tests compare."""
        formats = self.backend.formats
        if format not in formats:
            raise InputError(
                f"not a format of {self.mode} mode (formats: {', '.join(formats)})",
                field="--format",
                value=format,
            )
        return self.backend.render(sorted=sorted, format=format)


def _conntrack_table(config: KubeProxyConfig, seed: int) -> ConntrackTable:
    """nf_conntrack sized and timed as kube-proxy sets it (conntrack.min, the TCP
    established and close-wait timeouts); kernel defaults for the rest."""
    from .._cext.conntrack import ConntrackTable

    ct = config.conntrack
    given = {
        "tcp_timeout_established": ct.tcp_established_timeout,
        "tcp_timeout_close_wait": ct.tcp_close_wait_timeout,
        "udp_timeout": ct.udp_timeout,
        "udp_timeout_stream": ct.udp_stream_timeout,
    }
    # 0: leave the kernel's
    timeouts: dict[str, Any] = {name: value for name, value in given.items() if value}
    return ConntrackTable(max(ct.min, 1), seed, **timeouts)


def changed_services(old: Cluster, new: Cluster) -> set[tuple[str, str]]:
    """Services whose Service object or EndpointSlices differ between two clusters, added
    and removed ones included (a whole-cluster comparison; Dataplane.update uses the
    change tracker instead)."""
    changed = {
        k
        for k in old.services.keys() | new.services.keys()
        if old.services.get(k) != new.services.get(k)
    }
    old_slices, new_slices = old.slices_by_service(), new.slices_by_service()
    changed |= {
        k for k in old_slices.keys() | new_slices.keys() if old_slices.get(k) != new_slices.get(k)
    }
    return changed
