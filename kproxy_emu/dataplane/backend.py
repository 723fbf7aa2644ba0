"""The mode contract: what every proxy mode's backend is given and what it must provide.

A mode is three parts (docs/architecture.md, "Adding a mode"):
- a compiler (``kproxy_emu.modes``) that turns the node's proxy view into the mode's rule
  model and sync payload;
- a backend class satisfying :class:`Backend`, registered in :data:`BACKENDS`, which keeps
  the node's installed state across syncs, renders its text and owns its engine objects;
- an engine plugged into the one packet pipeline (``cext/pipeline.pyx``; docs/engine.md):
  a ``kproxy_emu._cext.pipeline.Engine`` subclass the backend builds in ``engine()``.

A backend never sees the :class:`~kproxy_emu.dataplane.Dataplane`: it gets a
:class:`NodeContext` (what the node is, the current proxy view) and its own options object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, Union, runtime_checkable

from ..errors import InputError
from ..model.cluster import Cluster
from ..model.config import KubeProxyConfig
from ..netfilter.ruleset import Ruleset
from ..proxy import ProxyOptions, ProxyView
from .sync import SyncResult

if TYPE_CHECKING:
    import numpy as np

    from .._cext.conntrack import ConntrackTable
    from .._cext.pipeline import Engine, Rng
    from ..netfilter.bpfmaps import BpfMaps
    from ..netfilter.ipvs import IpvsState
    from ..netfilter.nft import NftRuleset

# the rule model of a full sync: iptables Ruleset, nftables NftRuleset, IPVS IpvsState,
# eBPF BpfMaps
RuleModel = Union["Ruleset", "NftRuleset", "IpvsState", "BpfMaps"]

# ip_vs conn_tab_bits: the kernel's default (CONFIG_IP_VS_TAB_BITS) and the module's range
CONN_TAB_BITS = 12
CONN_TAB_BITS_RANGE = range(8, 21)


@dataclass(eq=False)
class NodeContext:
    """The emulated node as a backend sees it. The Dataplane replaces ``cluster`` and
    ``view`` when the cluster changes; everything else is fixed for the node's life."""

    options: ProxyOptions
    config: KubeProxyConfig
    seed: int
    cluster: Cluster
    view: ProxyView

    @property
    def family(self) -> str:
        return self.options.family


# ------------------------------------------------------------------ per-mode options


@dataclass(frozen=True)
class IptablesOptions:
    """iptables mode. ``tables``: run a node's own iptables (e.g. parsed from a real
    ``iptables-save``) instead of compiling the cluster; the cluster then only supplies
    the node."""

    mode: ClassVar[str] = "iptables"
    tables: Ruleset | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NftablesOptions:
    """nftables mode. ``service_cidrs``: overrides the cluster's ServiceCIDR objects."""

    mode: ClassVar[str] = "nftables"
    service_cidrs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.service_cidrs is not None:
            if isinstance(self.service_cidrs, str) or not all(
                isinstance(c, str) for c in self.service_cidrs
            ):
                raise InputError(
                    "must be a list of CIDR strings",
                    field="NftablesOptions.service_cidrs",
                    value=self.service_cidrs,
                )
            object.__setattr__(self, "service_cidrs", tuple(self.service_cidrs))


@dataclass(frozen=True)
class IpvsOptions:
    """IPVS mode. ``scheduler``: rr wrr lc wlc lblc lblcr sh dh sed nq mh (None: the
    KubeProxyConfiguration's ipvs.scheduler, else rr). ``conn_tab_bits``: the ip_vs
    module's conn_tab_bits, 8-20 (the kernel's 12: 4,096 connection-table buckets)."""

    mode: ClassVar[str] = "ipvs"
    scheduler: str | None = None
    conn_tab_bits: int = CONN_TAB_BITS

    def __post_init__(self) -> None:
        bits = self.conn_tab_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or bits not in CONN_TAB_BITS_RANGE:
            raise InputError("must be 8..20", field="IpvsOptions.conn_tab_bits", value=bits)
        if self.scheduler is not None:
            from ..modes.ipvs import validate_scheduler

            validate_scheduler(self.scheduler)


@dataclass(frozen=True)
class UserspaceOptions:
    """userspace mode (kube-proxy's first mode, removed in 1.26). ``port_range``:
    ``--proxy-port-range`` ("A-B", "A+N", "N"; "" leaves the proxy ports to the kernel's
    ephemeral range); ``udp_idle_timeout``: ``--udp-timeout`` in seconds (250 ms). The
    listen address is the KubeProxyConfiguration's bindAddress."""

    mode: ClassVar[str] = "userspace"
    port_range: str = ""
    udp_idle_timeout: float = 0.25

    def __post_init__(self) -> None:
        from ..modes.userspace import PortRange

        try:
            PortRange.parse(self.port_range)
        except InputError as exc:
            raise InputError(
                exc.message, field="UserspaceOptions.port_range", value=self.port_range
            ) from None
        t = self.udp_idle_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise InputError(
                "must be a positive number of seconds",
                field="UserspaceOptions.udp_idle_timeout",
                value=t,
            )


# Cilium's defaults (bpf-ct-global-tcp-max, -any-max, bpf-nat-global-max,
# bpf-lb-map-max for the affinity map) and CT lifetimes (bpf-ct-timeout-regular-tcp, -any,
# -tcp-syn, -tcp-fin), seconds
EBPF_CT_TCP_MAX = 524288
EBPF_CT_ANY_MAX = 262144
EBPF_NAT_MAX = 524288
EBPF_AFFINITY_MAX = 65536
EBPF_CT_TIMEOUTS = (21600.0, 60.0, 60.0, 10.0)
EBPF_LB_MODES = ("snat", "dsr", "hybrid")


@dataclass(frozen=True)
class EbpfOptions:
    """eBPF mode (a Cilium-style kube-proxy replacement). ``lb_algorithm``: random or
    maglev (``--bpf-lb-algorithm``); ``maglev_table_size`` (a prime of Cilium's list,
    16381) and ``maglev_hash_seed`` (12 bytes base64); ``lb_mode``: how NodePort /
    LoadBalancer traffic reaches a remote backend: snat, dsr, or hybrid (DSR for TCP, SNAT
    for UDP) (``--bpf-lb-mode``); ``external_clusterip``: ClusterIPs answer traffic from
    outside (``--bpf-lb-external-clusterip``); map sizes as Cilium's defaults (a cluster
    whose services do not fit ``lb_map_max``, ``--bpf-lb-map-max``, is refused)."""

    mode: ClassVar[str] = "ebpf"
    lb_algorithm: str = "random"
    maglev_table_size: int = 16381
    maglev_hash_seed: str = "JLfvgnHc2kaSUFaI"
    lb_mode: str = "snat"
    external_clusterip: bool = False
    ct_tcp_max: int = EBPF_CT_TCP_MAX
    ct_any_max: int = EBPF_CT_ANY_MAX
    nat_max: int = EBPF_NAT_MAX
    affinity_max: int = EBPF_AFFINITY_MAX
    lb_map_max: int = 65536  # bpf-lb-map-max: services / backends / reverse-NAT map entries

    def __post_init__(self) -> None:
        from .. import maglev
        from ..modes.ebpf import LB_ALGORITHMS

        if self.lb_algorithm not in LB_ALGORITHMS:
            raise InputError(
                "must be random or maglev",
                field="EbpfOptions.lb_algorithm",
                value=self.lb_algorithm,
            )
        if self.maglev_table_size not in maglev.SUPPORTED_TABLE_SIZES:
            raise InputError(
                "must be one of " + ", ".join(map(str, maglev.SUPPORTED_TABLE_SIZES)),
                field="EbpfOptions.maglev_table_size",
                value=self.maglev_table_size,
            )
        try:
            maglev.seeds(self.maglev_hash_seed)
        except InputError as exc:
            raise InputError(
                exc.message, field="EbpfOptions.maglev_hash_seed", value=self.maglev_hash_seed
            ) from None
        if self.lb_mode not in EBPF_LB_MODES:
            raise InputError(
                "must be snat, dsr or hybrid", field="EbpfOptions.lb_mode", value=self.lb_mode
            )
        for name in ("ct_tcp_max", "ct_any_max", "nat_max", "affinity_max", "lb_map_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 26:
                raise InputError("must be 1..67108864", field=f"EbpfOptions.{name}", value=v)


ModeOptions = IptablesOptions | NftablesOptions | IpvsOptions | UserspaceOptions | EbpfOptions
OPTIONS: dict[str, type[ModeOptions]] = {
    cls.mode: cls
    for cls in (IptablesOptions, NftablesOptions, IpvsOptions, UserspaceOptions, EbpfOptions)
}
MODES = tuple(OPTIONS)


def mode_options(mode: str | ModeOptions) -> ModeOptions:
    """The options object for ``mode``: given as one, or the mode's defaults by name."""
    if isinstance(
        mode, (IptablesOptions, NftablesOptions, IpvsOptions, UserspaceOptions, EbpfOptions)
    ):
        return mode
    if not isinstance(mode, str) or mode not in OPTIONS:
        raise InputError(
            f"unsupported mode (available: {', '.join(MODES)})", field="mode", value=mode
        )
    return OPTIONS[mode]()


# ------------------------------------------------------------------ the backend contract


@runtime_checkable
class Backend(Protocol):
    """One proxy mode on one node: its installed state, syncs, text and engine."""

    mode: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # render formats, "restore" and "save" first
    # the node's netfilter conntrack carries the mode's flows (False: the mode's engine
    # keeps its own flow table, and the Dataplane has no ConntrackTable: eBPF)
    netfilter_conntrack: ClassVar[bool]

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        """kube-proxy's syncProxyRules against ``node.view``: full when ``changed`` is
        None (or the mode needs one), else only the given (namespace, name) services."""
        ...

    def render(self, *, sorted: bool = False, format: str = "restore") -> str:
        """The mode's native text in one of ``formats``."""
        ...

    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        """``node.view`` changed: for the given services (None: any of them)."""
        ...

    @property
    def ruleset(self) -> RuleModel:
        """The payload of a full sync of the current cluster, in the mode's rule model."""
        ...

    @property
    def endpoints(self) -> list[str]:
        """The endpoint table verdicts index ("ip:port"); it only grows."""
        ...

    def prepare(self) -> None:
        """Build the engine's tables now (else the first packet batch does)."""
        ...

    def reset_state(self) -> None:
        """Forget per-flow and per-rule state: the node just booted."""
        ...

    @property
    def lowered(self) -> object:
        """The engine's packed tables (rebuilt after each sync)."""
        ...

    def engine(self) -> Engine:
        """The mode's engine over the current tables and the node's per-rule state
        (what the packet pipeline calls at each hook; traces run it too)."""
        ...

    def advance_clock(self, now: float) -> None:
        """Run what the mode does on a timer up to emulated time ``now`` (what
        ``process`` does before a packet at that time; nothing in most modes)."""
        ...

    def clock_snapshot(self, now: float) -> object:
        """What ``advance_clock(now)`` would change, for ``restore_clock`` (a trace that
        must leave the node as it was)."""
        ...

    def restore_clock(self, snap: object) -> None: ...

    def process(
        self,
        packets: np.ndarray,
        out: np.ndarray,
        conntrack: ConntrackTable | None,
        rng: Rng,
    ) -> None:
        """Push a packet batch through the packet pipeline with the mode's engine
        (``conntrack`` and ``rng``, the node's, advance in place)."""
        ...


def make_backend(node: NodeContext, options: ModeOptions) -> Backend:
    """The backend of ``options.mode`` for ``node``."""
    if isinstance(options, IptablesOptions):
        from .iptables_backend import IptablesBackend

        return IptablesBackend(node, options)
    if isinstance(options, NftablesOptions):
        from .nftables_backend import NftablesBackend

        return NftablesBackend(node, options)
    if isinstance(options, UserspaceOptions):
        from .userspace_backend import UserspaceBackend

        return UserspaceBackend(node, options)
    if isinstance(options, EbpfOptions):
        from .ebpf_backend import EbpfBackend

        return EbpfBackend(node, options)
    from .ipvs_backend import IpvsBackend

    return IpvsBackend(node, options)
