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
    from ..netfilter.ipvs import IpvsState
    from ..netfilter.nft import NftRuleset

# the rule model of a full sync: iptables Ruleset, nftables NftRuleset, IPVS IpvsState
RuleModel = Union["Ruleset", "NftRuleset", "IpvsState"]

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


ModeOptions = IptablesOptions | NftablesOptions | IpvsOptions | UserspaceOptions
OPTIONS: dict[str, type[ModeOptions]] = {
    cls.mode: cls for cls in (IptablesOptions, NftablesOptions, IpvsOptions, UserspaceOptions)
}
MODES = tuple(OPTIONS)


def mode_options(mode: str | ModeOptions) -> ModeOptions:
    """The options object for ``mode``: given as one, or the mode's defaults by name."""
    if isinstance(mode, (IptablesOptions, NftablesOptions, IpvsOptions, UserspaceOptions)):
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
    from .ipvs_backend import IpvsBackend

    return IpvsBackend(node, options)
