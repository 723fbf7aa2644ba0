"""The iptables mode behind the Dataplane facade.

It keeps the node's iptables state (``tables``) the way a node has it: the built-in chain
jumps kube-proxy ensures, then every restore applied in turn (a failed restore changes
nothing and makes the next sync a full one). Packets walk those tables in the chain VM
(cext/chains.pyx ChainEngine) over the lowered arrays, driven by the one packet pipeline
(cext/pipeline.pyx); traces run the same engine (dataplane/tracer.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..modes.iptables import IptablesProxier
from ..netfilter.iptables_text import render, render_sorted
from ..netfilter.ruleset import Ruleset
from .sync import SyncResult

if TYPE_CHECKING:
    from .backend import IptablesOptions, NodeContext

# xt_recent's ip_list_tot module parameter: addresses per list (the kernel's default)
RECENT_LIST_TOT = 100


class IptablesBackend:
    mode: ClassVar[str] = "iptables"
    formats: ClassVar[tuple[str, ...]] = ("restore", "save")
    netfilter_conntrack: ClassVar[bool] = True

    def __init__(self, node: NodeContext, options: IptablesOptions):
        self.node = node
        tables = options.tables
        self._engine = None  # the ChainEngine over the current lowered tables
        # the proxier keeps the node's iptables as they stand (``tables``)
        self.proxier = IptablesProxier(node.options, tables)
        self.endpoints: list[str] = []  # grows only: verdict indices keep their meaning
        self._full: Ruleset | None = None
        self._lowered = None
        self._recent: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._nth_counters: np.ndarray | None = None
        if tables is not None:  # a node's own dump instead of compiled rules
            self._full = tables
            self.proxier.need_full_sync = False

    # ---------------------------------------------------------------- rules
    @property
    def tables(self) -> Ruleset:
        """The node's iptables as they stand (edits reach the node: the next sync reads
        them back, as kube-proxy reads iptables-save)."""
        return self.proxier.node.exposed()

    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        self._full = None

    @property
    def ruleset(self) -> Ruleset:
        """The restore payload of a full sync of the current cluster."""
        if self._full is None:
            self._full = self.proxier.compile(self.node.view, None).payload
        return self._full

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        res = self.proxier.sync(self.node.view, changed)
        if res.full:
            self._full = res.payload
        nat = res.payload.tables.get("nat")
        self._lowered = None  # the tables change: rebuild the engine's view
        self._nth_counters = None
        self._engine = None
        return SyncResult(
            full=res.full,
            payload=res.payload,
            text=res.text,
            changed=set() if changed is None else set(changed),
            error=res.error,
            extra={"nat_rules": len(nat.rules) if nat else 0},
        )

    def render(self, sorted: bool = False, format: str = "restore") -> str:
        """iptables-restore input of a full sync, as kube-proxy writes it (``sorted``: the
        normalised form kube-proxy's unit tests compare; ``save``: what iptables-save
        prints on the node afterwards, built-in chain jumps included)."""
        if format == "save":
            from ..netfilter.iptables_live import render_live

            return render_live(self.proxier.node.ruleset())
        return render_sorted(self.ruleset) if sorted else render(self.ruleset)

    # ---------------------------------------------------------------- packets
    @property
    def lowered(self):
        """The node's tables as the chain VM's packed arrays (rebuilt after each sync)."""
        if self._lowered is None:
            from ..model.cluster import paused_gc
            from .lowering import lower

            with paused_gc():
                self._lowered = lower(
                    self.proxier.node.ruleset(), self.node.options.family, self.endpoints
                )
        return self._lowered

    def prepare(self) -> None:
        _ = self.lowered

    def reset_state(self) -> None:
        self._recent = None
        self._nth_counters = None
        self._engine = None

    def engine(self):
        """The ChainEngine over the node's tables and their per-rule state."""
        if self._engine is None:
            low = self.lowered
            self._recent = recent_lists(self._recent, low.recent_lists)
            if self._nth_counters is None:  # statistic nth counters live as long as the rules
                self._nth_counters = low.nth_counters.copy()
            self._engine = chain_engine(
                low, self.node.options, nth_counters=self._nth_counters, recent=self._recent
            )
        return self._engine

    def advance_clock(self, now: float) -> None:
        pass  # nothing runs on a timer

    def clock_snapshot(self, now: float) -> object:
        return None

    def restore_clock(self, snap: object) -> None:
        pass

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack, rng) -> None:
        from .._cext import pipeline

        pipeline.run(self.engine(), packets, out, conntrack, rng)


def recent_lists(current, lists: int):
    """xt_recent's lists (session affinity), ``lists`` of RECENT_LIST_TOT addresses each,
    kept across syncs like the kernel's (lists a sync adds start empty); None: no lists.
    np.zeros pages are only backed once written, so idle lists cost nothing."""
    if not lists:
        return current
    if current is not None and len(current[2]) >= lists:
        return current
    slots = lists * RECENT_LIST_TOT
    grown: tuple[np.ndarray, np.ndarray, np.ndarray] = (
        np.zeros(slots, np.uint32),
        np.zeros(slots),
        np.zeros(lists, np.uint32),
    )
    if current is not None:
        for new, old in zip(grown, current):
            new[: len(old)] = old
    return grown


def chain_engine(low, options, *, nth_counters, **state):
    """The ChainEngine over lowered tables, on the node's addresses; ``state``: the rest of
    its keywords (recent lists, ipsets, IPVS), which the mode keeps across engines."""
    from .._cext.chains import ChainEngine

    local, masq_ip = node_addresses(options)
    return ChainEngine(
        low.rules,
        low.hot,
        low.chains,
        low.hooks,
        local,
        masq_ip,
        port_ranges=low.port_ranges,
        ipvs_words=low.ipvs_words,
        nth_counters=nth_counters,
        **state,
    )


def node_addresses(options) -> tuple[np.ndarray, int]:
    """The node's IPv4 addresses (the local routing table) and MASQUERADE's source."""
    from ..packets import ip_to_u32

    local = np.array(
        [ip_to_u32(ip) for ip in options.node.local_ips if ":" not in ip], dtype=np.uint32
    )
    return local, ip_to_u32(options.node.primary_ip)
