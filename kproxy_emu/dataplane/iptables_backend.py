"""The iptables mode behind the Dataplane facade.

It keeps the node's iptables state (``tables``) the way a node has it: the built-in chain
jumps kube-proxy ensures, then every restore applied in turn (a failed restore changes
nothing and makes the next sync a full one). Packets walk those tables in the chain VM
(cext/chains.pyx) over the lowered arrays; traces use the reference evaluator.
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

    def __init__(self, node: NodeContext, options: IptablesOptions):
        self.node = node
        tables = options.tables
        self._checked_for = None  # the lowered tables chains.process last checked
        # the proxier keeps the node's iptables as they stand (``tables``)
        self.proxier = IptablesProxier(node.options, tables)
        self.endpoints: list[str] = []  # grows only: verdict indices keep their meaning
        self._full: Ruleset | None = None
        self._evaluator = None
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
        self._evaluator = None  # the tables change: rebuild the tracer's and VM's views
        self._lowered = None
        self._nth_counters = None
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
    def evaluate_new_flow(self, flow):
        from .reference import ReferenceEvaluator, evaluate_new_flow

        if self._evaluator is None:
            options = self.node.options
            self._evaluator = ReferenceEvaluator(
                self.proxier.node.ruleset(), options.node.local_ips, options.family
            )
        return evaluate_new_flow(self._evaluator, flow)

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

    def process(
        self,
        packets: np.ndarray,
        out: np.ndarray,
        local: np.ndarray,
        masq_ip: int,
        rng_state: int,
        conntrack: int,
    ) -> int:
        from .._cext import chains

        low = self.lowered
        if self._recent is None and low.recent_lists:
            # xt_recent lists (session affinity), kept across calls like the kernel's;
            # np.zeros pages are only backed once written, so idle lists cost nothing
            slots = low.recent_lists * RECENT_LIST_TOT
            self._recent = (
                np.zeros(slots, np.uint32),
                np.zeros(slots),
                np.zeros(low.recent_lists, np.uint32),
            )
        addrs, stamps, counts = self._recent if self._recent is not None else (None,) * 3
        if self._nth_counters is None:  # xt_statistic nth counters live as long as the rules
            self._nth_counters = low.nth_counters.copy()
        rng_state = chains.process(
            packets,
            out,
            low.rules,
            low.hot,
            low.chains,
            low.hooks,
            local,
            masq_ip,
            rng_state,
            conntrack,
            addrs,
            stamps,
            counts,
            low.port_ranges,
            self._nth_counters,
            checked=self._checked_for is low,
        )
        self._checked_for = low  # the rule scan passed once for these arrays
        return rng_state
