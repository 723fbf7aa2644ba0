"""Dataplane(cluster, mode=..., node=...): one node of a cluster in one proxy mode.

The facade owns what every mode shares: the emulated node and kube-proxy options, the
proxy view of the cluster, conntrack, the seeded random stream, the packet batch checks
and the trace format. A mode backend (``iptables_backend.py``, ...) owns its compiled
state, its sync, its renderer and its engine (traces: dataplane/tracer.py).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._cext.pipeline import Rng
from ..errors import InputError, KproxyError
from ..model.cluster import Cluster, paused_gc
from ..model.config import KubeProxyConfig, NodeConfig
from ..netfilter.ruleset import Ruleset
from ..proxy import ProxyOptions, ProxyView
from ..proxy.tracker import Added, Changes, ChangeTracker, Deleted, Event, Updated
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
    from ..programtime import ProgramTimeModel
    from .lowering import Lowered
    from .nft_lowering import LoweredNft
    from .policy_stage import PolicyProgram


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
            chosen = dataclasses.replace(
                NodeConfig.from_node(
                    chosen.name, node_ips, zone=chosen.zone, pod_cidrs=chosen.pod_cidrs
                ),
                cpus=chosen.cpus,
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
        cpus: int | None = None,
        policy_engine: str | None = None,
    ):
        """One node of ``cluster`` in one proxy mode.

        ``mode``: a mode name (its defaults), or the mode's options object carrying what
        only that mode has: ``IptablesOptions(tables=...)`` (a node's own iptables dump
        instead of compiled rules), ``NftablesOptions(service_cidrs=...)``,
        ``IpvsOptions(scheduler=..., conn_tab_bits=...)``. The node is a Node object of
        the cluster (``node``: its name; default the first), else ``node_config``;
        ``node_ips`` overrides its addresses. ``config`` is a KubeProxyConfiguration;
        ``cluster_cidr``, ``masquerade_all`` and ``mark_text`` override it, as flags do.
        ``cpus``: the node's CPU count (default: the node file's ``cpus``, else 4), which
        sizes conntrack as kube-proxy does: max(conntrack.maxPerCore x CPUs,
        conntrack.min), the kernel's 262,144 when maxPerCore is 0.

        ``policy_engine``: enforce the cluster's NetworkPolicies where a CNI does, on each
        new flow after kube-proxy's DNAT (docs/networkpolicy.md): ``"chains"`` (iptables
        chains and ipsets, Calico / kube-router style) or ``"identity"`` (Cilium's
        identities and policy maps); None (the default): no policy stage."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError("must be a non-negative integer", field="seed", value=seed)
        mode_opts = mode_options(mode)
        from .policy_stage import check_policy_engine

        self.policy_engine = check_policy_engine(policy_engine)
        # what a twin of this node over another cluster is built from (bench's drop traces)
        self._build_args: dict[str, Any] = dict(
            node=node,
            node_config=node_config,
            node_ips=node_ips,
            config=config,
            cluster_cidr=cluster_cidr,
            masquerade_all=masquerade_all,
            mark_text=mark_text,
            seed=seed,
            conntrack=conntrack,
            cpus=cpus,
            policy_engine=policy_engine,
        )
        self.cluster = cluster
        self.mode = mode_opts.mode
        self.mode_options = mode_opts
        self.seed = seed
        node_cfg = resolve_node(cluster, node, node_config, node_ips)
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
                raise InputError("must be an integer >= 1", field="cpus", value=cpus)
            node_cfg = dataclasses.replace(node_cfg, cpus=cpus)
        self.options = ProxyOptions.build(
            node_cfg,
            config,
            cluster_cidr=cluster_cidr,
            masquerade_all=masquerade_all,
            mark_text=mark_text,
        )
        self.config = config or KubeProxyConfig()
        self.syncs: list[SyncResult] = []
        # what predicts each sync's predicted_program_s (None: no prediction)
        self.program_model: ProgramTimeModel | None = None
        # emulated time: the latest packet processed (or committed trace); time never goes
        # back, as the kernel's jiffies do not: expiries are computed from it
        self.clock = 0.0
        # statistic draws: one xorshift64* stream seeded from the Dataplane's seed
        seeds = np.random.SeedSequence(seed).generate_state(2, np.uint64)
        self.rng = Rng(int(seeds[0]) or 1)
        self._build_view()
        self.node = NodeContext(self.options, self.config, seed, cluster, self.view)
        self.backend: Backend = make_backend(self.node, mode_opts)
        # netfilter conntrack, unless the mode's datapath keeps its own (eBPF: CT maps)
        self.conntrack = (
            _conntrack_table(self.config, node_cfg.cpus, int(seeds[1]))
            if conntrack and self.backend.netfilter_conntrack
            else None
        )
        if not (isinstance(mode_opts, IptablesOptions) and mode_opts.tables is not None):
            self.sync()
        self.policy: PolicyProgram | None = None
        self._build_policy()

    # ---------------------------------------------------------------- NetworkPolicy
    def _policy_inputs(self) -> tuple[Any, ...]:
        c = self.cluster
        return tuple(
            tuple((k, id(v)) for k, v in d.items())
            for d in (c.network_policies, c.pods, c.namespaces)
        )

    def _build_policy(self) -> None:
        """The policy stage over the current cluster (counters carried over)."""
        if self.policy_engine is None:
            return
        from .policy_stage import build_program

        old = self.policy
        self.policy = build_program(self.policy_engine, self.cluster)
        if old is not None:
            self.policy.stage.counters = old.stage.counters
        self._policy_key = self._policy_inputs()

    def attach_policy(self) -> Any:
        """The backend's engine with the node's policy stage set (None: none), as the
        pipeline will run it."""
        engine = self.backend.engine()
        engine.policy = self.policy.stage if self.policy is not None else None
        return engine

    @property
    def policy_drops(self) -> dict[str, int]:
        """Flows the NetworkPolicy stage decided (``checked``) and denied at the source's
        egress or the destination's ingress, since the node booted (``reset_state``);
        all 0 without a policy engine. A denied packet's verdict is DROP."""
        if self.policy is None:
            return {"checked": 0, "egress": 0, "ingress": 0}
        checked, egress, ingress = self.policy.stage.counters
        return {"checked": checked, "egress": egress, "ingress": ingress}

    def render_policy(self) -> str:
        """The policy stage's own text: ``chains``: the ipset restore lines then the
        iptables-restore input of its filter chains; ``identity``: the identities, the
        ipcache and every isolated endpoint's policy map."""
        if self.policy is None:
            raise InputError(
                "the Dataplane has no policy stage (policy_engine=None)",
                field="policy_engine",
                value=None,
            )
        return self.policy.render()

    def __repr__(self) -> str:
        return (
            f"<Dataplane {self.mode} node={self.options.node.name} seed={self.seed} "
            f"clock={self.clock:g}: {len(self.cluster.services)} services, "
            f"{len(self.syncs)} syncs>"
        )

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
            result = self._sync_changes()
        if self.policy is not None and self._policy_inputs() != self._policy_key:
            self._build_policy()  # pods, namespaces or policies changed
        return result

    def apply(self, events: Iterable[Event]) -> SyncResult:
        """Apply watch events and resync: ``Added(obj)``, ``Updated(obj)`` (a new version
        of an object of the same kind and name) and ``Deleted(kind, namespace, name)``
        of Services, EndpointSlices and Nodes (``kproxy_emu.proxy.tracker``), in order.
        NetworkPolicy, Pod and Namespace events change the cluster's objects the policy
        stage reads (rebuilt after the sync when one changed; kube-proxy ignores them).

        The Dataplane's ``cluster`` follows the events (the first apply makes it the
        Dataplane's own copy; the Cluster passed in is not changed). A bad event (adding
        an object that exists, updating or deleting one that does not, another kind)
        raises InputError; the events before it are kept and synced by the next sync."""
        if not self._own_cluster:
            own = copy.copy(self.cluster)
            own.services = dict(own.services)
            own.endpoint_slices = dict(own.endpoint_slices)
            own.nodes = dict(own.nodes)
            for name in _POLICY_KINDS.values():
                setattr(own, name, dict(getattr(own, name)))
            self.cluster, self._own_cluster = own, True
        collections: dict[str, dict[Any, Any]] = {
            "Service": self.cluster.services,
            "EndpointSlice": self.cluster.endpoint_slices,
            "Node": self.cluster.nodes,
        }
        with paused_gc():  # a collection now would walk the whole (large) heap
            for event in events:
                obj = getattr(event, "obj", None)  # not an event: the tracker says so
                kind = event.kind if isinstance(event, Deleted) else getattr(obj, "kind", None)
                if kind in _POLICY_KINDS:
                    _policy_event(getattr(self.cluster, _POLICY_KINDS[kind]), event)
                    continue
                self.tracker.record(event)
                if isinstance(event, Deleted):
                    key = (event.namespace, event.name)
                    del collections[event.kind][("", event.name) if event.kind == "Node" else key]
                else:
                    collections[event.obj.kind][event.obj.key] = event.obj
            result = self._sync_changes()
        if self.policy is not None and self._policy_inputs() != self._policy_key:
            self._build_policy()  # pods, namespaces or policies changed
        return result

    def _sync_changes(self) -> SyncResult:
        """Bring the view up to the tracker's pending changes, then sync."""
        changes = self.tracker.take()
        self.node.cluster = self.cluster
        full = self._node_changed(changes)
        tracker = self.tracker
        programmed = self.view.by_service
        rewrites = full or any(programmed.get(key) for key in changes.services)
        self.view.apply(
            changes.services, tracker.services, tracker.slices_for, reorder=changes.reordered
        )
        self.backend.view_changed(None if full else changes.services)
        return self.sync(None if full else changes.services, rewrites=rewrites)

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

    def sync(
        self, changed: set[tuple[str, str]] | None = None, *, rewrites: bool = True
    ) -> SyncResult:
        """One sync of the mode (kube-proxy's syncProxyRules): compile and apply.
        ``rewrites``: the changed Services include programmed ones (not only new ones)."""
        # read before the sync (a full one replaces it); only with a model: reading it
        # renders the last full sync's text
        loaded = self.loaded_lines if self.program_model is not None else 0
        result = self.backend.sync(changed)
        result.rewrites = result.full or rewrites
        if self.program_model is not None:
            result.predicted_program_s = self.program_model.predict(
                self.mode, result.lines, 0 if result.full else loaded, result.rewrites
            )
        self.syncs.append(result)
        return result

    @property
    def loaded_lines(self) -> int:
        """Lines of the ruleset the kernel holds, as of the last full sync (partial syncs
        change it by a few lines): what an update is loaded onto."""
        return next((s.lines for s in reversed(self.syncs) if s.full and s.ok), 0)

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
        this packet next. ``time`` must be finite, and with ``commit`` not before ``clock``
        (as a processed packet's). ``all_rules``: ``steps`` holds every rule evaluated;
        otherwise only the matched path (``steps_omitted`` counts the others), which is also
        faster. ``service`` names the Service port the packet was addressed to. See
        kproxy_emu/dataplane/tracer.py."""
        from .tracer import trace

        # a committed trace is a packet processed: time may not go back; an uncommitted
        # one is a question about the current state and may ask about any time
        _check_time(time, self.clock if commit else -math.inf)
        result = trace(self, packet, origin, time=time, commit=commit, all_rules=all_rules)
        if commit:
            self.clock = max(self.clock, float(time))
        return result

    def reset_state(self) -> None:
        """Forget every flow and per-rule state (conntrack, affinity lists, nth counters)
        and restart the random stream from the seed: as a node just after boot."""
        seeds = np.random.SeedSequence(self.seed).generate_state(2, np.uint64)
        self.rng = Rng(int(seeds[0]) or 1)
        if self.conntrack is not None:
            self.conntrack = _conntrack_table(self.config, self.options.node.cpus, int(seeds[1]))
        self.clock = 0.0
        self.backend.reset_state()
        if self.policy is not None:
            self.policy.stage.counters = (0, 0, 0)

    def prepare(self) -> None:
        """Build the engine's tables, the engine and its state now, and map the conntrack
        table's pages (else the first ``process`` calls do: a fresh node's first batch
        pays milliseconds, and each new flow a page fault, that later ones do not)."""
        self.backend.prepare()
        self.backend.engine()
        if self.conntrack is not None:
            self.conntrack.prefault()
        self.attach_policy()

    def packet_targets(self) -> np.ndarray:
        """Service frontends this node serves (TARGET_DTYPE): every ClusterIP, externalIP
        and load-balancer IP, and NodePorts on this node's own addresses only."""
        return self.cluster.packet_targets(node_ips=self.options.node.local_ips)

    def packet_sources(self) -> dict[str, list[str]]:
        """Where this node's traffic comes from, per origin: pods (the local-traffic
        detector's CIDR, else the nodes' pod CIDRs), the node itself (its primary IPv4
        address) and outside (a documentation range). With ``packet_targets`` this makes
        the Dataplane a target source: ``packets.synth(dp, n, seed=...)`` is traffic this
        node would see (NodePorts of other nodes' addresses are not aimed at)."""
        if self.options.detect_local_mode in ("ClusterCIDR", "NodeCIDR"):
            pods = [self.options.detect_local_value]
        else:
            pods = [c for n in self.cluster.nodes.values() for c in n.pod_cidrs if ":" not in c]
        host = [
            ip for ip in self.options.node.local_ips if ":" not in ip and not ip.startswith("127.")
        ]
        return {
            "pod": pods or ["10.244.0.0/16"],
            "external": ["203.0.113.0/24"],
            "host": host[:1] or ["192.168.0.2"],
        }

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

        Rows are checked first, the same in every mode (InputError naming the row, field
        and value): ``ts`` finite, never decreasing within the batch nor below ``clock``
        (the latest time processed; ``reset_state`` sets it back to 0); ``family`` 4 (the
        IPv6 dataplane is not emulated); ``origin`` one of ``packets.Origin``.
        """
        from ..packets import PACKET_DTYPE, empty_verdicts

        if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE:
            raise InputError(
                "must be a numpy array of kproxy_emu.packets.PACKET_DTYPE",
                field="packets",
                value=type(packets).__name__,
            )
        packets = np.ascontiguousarray(packets)
        if _check_batch(packets, self.clock):
            packets = self._resolve_origins(packets)
        out = empty_verdicts(len(packets))
        self.attach_policy()
        self.backend.process(packets, out, self.conntrack, self.rng)
        if len(packets):
            self.clock = max(self.clock, float(packets["ts"][-1]))
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


# objects only the NetworkPolicy stage reads: apply() keeps them in the cluster, untracked
_POLICY_KINDS = {"NetworkPolicy": "network_policies", "Pod": "pods", "Namespace": "namespaces"}


def _policy_event(collection: dict[tuple[str, str], Any], event: Event) -> None:
    """One NetworkPolicy, Pod or Namespace event on its cluster dict (sealed, so an edit
    in place raises instead of going unseen by the policy stage)."""
    from ..model.seal import seal

    if isinstance(event, Deleted):
        key = (event.namespace, event.name)
        if key not in collection:
            raise InputError(
                "deleted, but there is no object of that name",
                obj=f"{event.kind} {'/'.join(k for k in key if k)}",
            )
        del collection[key]
        return
    obj: Any = event.obj
    exists = obj.key in collection
    if isinstance(event, Added) and exists:
        raise InputError("added, but an object of that name exists", obj=obj.ref)
    if isinstance(event, Updated) and not exists:
        raise InputError("updated, but there is no object of that name", obj=obj.ref)
    collection[obj.key] = seal(obj)


def _row_error(message: str, index: int, field: str, value: object) -> InputError:
    return InputError(message, obj=f"packets[{index}]", field=field, value=value)


def _check_batch(packets: np.ndarray, clock: float) -> bool:
    """The rows the pipeline can take (one compiled pass; the first bad row is named): a
    NaN time would make entries that never expire and a time going back would move
    expiries back; family 6 rows carry no IPv6 addresses in this dtype (one answer in
    every mode). True when some row's origin is AUTO."""
    from .._cext import packetio as pio

    k, code, auto = pio.check_rows(packets, clock)
    if code == pio.ROW_OK:
        return bool(auto)
    row = packets[k]
    if code == pio.ROW_TS_NOT_FINITE:
        raise _row_error("timestamp must be finite", k, "ts", float(row["ts"]))
    if code == pio.ROW_TS_BEFORE_CLOCK:
        raise _row_error(
            f"before the node's clock {clock:g} s (the latest time processed; time only "
            "moves forward, reset_state() starts again at 0)",
            k,
            "ts",
            float(row["ts"]),
        )
    if code == pio.ROW_TS_DECREASES:
        raise _row_error(
            f"earlier than the row before ({float(packets[k - 1]['ts']):g}): timestamps "
            "must not decrease (sort the batch by ts)",
            k,
            "ts",
            float(row["ts"]),
        )
    if code == pio.ROW_FAMILY:
        raise _row_error(
            "must be 4: the IPv6 dataplane is not emulated", k, "family", int(row["family"])
        )
    raise _row_error(
        "must be 0 (pod), 1 (external), 2 (host) or 255 (auto)", k, "origin", int(row["origin"])
    )


def _check_time(time: object, clock: float) -> None:
    """A trace's time, checked as process checks a row's ``ts``."""
    if isinstance(time, bool) or not isinstance(time, (int, float, np.integer, np.floating)):
        raise InputError("must be a number of seconds", field="time", value=time)
    if not math.isfinite(float(time)):
        raise InputError("must be finite", field="time", value=time)
    if float(time) < clock:
        raise InputError(
            f"before the node's clock {clock:g} s (the latest time processed; time only "
            "moves forward, reset_state() starts again at 0)",
            field="time",
            value=time,
        )


# nf_conntrack_max when kube-proxy leaves it (conntrack.maxPerCore 0): the kernel's default
# on a 64-bit machine with more than 4 GiB (nf_conntrack_htable_size 262144, max factor 1)
KERNEL_CONNTRACK_MAX = 262_144


def conntrack_max(config: KubeProxyConfig, cpus: int) -> int:
    """nf_conntrack_max as kube-proxy sets it (getConntrackMax in cmd/kube-proxy/app):
    max(maxPerCore x CPUs, min) when maxPerCore > 0, else the kernel's default."""
    ct = config.conntrack
    if ct.max_per_core > 0:
        return max(ct.max_per_core * cpus, ct.min, 1)
    return KERNEL_CONNTRACK_MAX


def _conntrack_table(config: KubeProxyConfig, cpus: int, seed: int) -> ConntrackTable:
    """nf_conntrack sized and timed as kube-proxy sets it (``conntrack_max`` of the
    node's CPUs, the TCP established and close-wait timeouts); kernel defaults for the
    rest."""
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
    return ConntrackTable(conntrack_max(config, cpus), seed, **timeouts)


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
