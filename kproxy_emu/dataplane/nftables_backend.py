"""The nftables mode behind the Dataplane facade.

kube-proxy's nftables proxier (modes/nftables.py) keeps the node's ``ip kube-proxy`` table
through its transactions; packets walk that table in the verdict-map engine
(cext/nftmaps.pyx NftEngine) over the lowered arrays, driven by the one packet pipeline
(cext/pipeline.pyx); traces run the same engine (dataplane/tracer.py).
Syncs run on an emulated clock one second apart (kube-proxy's default minSyncPeriod), which
is what ages flushed service chains until a later sync deletes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..errors import KproxyError
from ..modes.nftables import NftProxier, service_cidrs_for
from ..netfilter.nft_text import (
    render_dump,
    render_list,
    render_nft_file,
    render_transaction,
    sort_dump,
)
from .sync import SyncResult

if TYPE_CHECKING:
    from .backend import NftablesOptions, NodeContext

SYNC_INTERVAL = 1.0  # emulated seconds between syncs
DYNAMIC_SLOTS = 1 << 20  # affinity entries over all endpoints' sets


class NftablesBackend:
    mode: ClassVar[str] = "nftables"
    formats: ClassVar[tuple[str, ...]] = ("restore", "save")
    netfilter_conntrack: ClassVar[bool] = True

    def __init__(self, node: NodeContext, options: NftablesOptions):
        self.node = node
        override = list(options.service_cidrs) if options.service_cidrs is not None else None
        cidrs = service_cidrs_for(node.cluster, node.options.family, override=override)
        self.proxier = NftProxier(node.options, cidrs)
        self.endpoints: list[str] = []  # grows only: verdict indices keep their meaning
        self.dynamic_sets: list[str] = []  # affinity set ids, stable across syncs
        self.clock = 0.0
        self._lowered = None
        self._engine = None
        self._dyn: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def table(self):
        """The node's ``ip kube-proxy`` table as it stands after the syncs."""
        return self.proxier.table

    ruleset = table

    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        pass

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        res = self.proxier.sync(self.node.view, changed, now=self.clock)
        self.clock += SYNC_INTERVAL
        table = self.table

        def text() -> str:  # rendered when read: the operations are the sync's payload
            head = render_transaction(table, res.cleanup) if res.cleanup else ""
            return head + render_transaction(table, res.transaction)

        self._lowered = None
        self._engine = None
        return SyncResult(
            full=res.full,
            payload=res,
            text=text,
            changed=set() if changed is None else set(changed),
            error=res.error,
            extra={"operations": res.total_ops, "elements": res.element_ops, "rules": res.rule_ops},
        )

    def render(self, sorted: bool = False, format: str = "restore") -> str:
        """``nft -f`` input that builds the table (restore), what ``nft list ruleset``
        prints on the node (save), or the sorted dump kube-proxy's unit tests compare."""
        if sorted:
            return sort_dump(render_dump(self.table))
        return render_list(self.table) if format == "save" else render_nft_file(self.table)

    @property
    def lowered(self):
        if self._lowered is None:
            from ..model.cluster import paused_gc
            from .nft_lowering import lower_nft

            with paused_gc():
                self._lowered = lower_nft(self.table, self.endpoints, self.dynamic_sets)
        return self._lowered

    def prepare(self) -> None:
        _ = self.lowered

    def reset_state(self) -> None:
        self._dyn = None
        self._engine = None

    def engine(self):
        """The NftEngine over the node's table and its dynamic (affinity) sets."""
        if self._engine is None:
            from .._cext.nftmaps import NftEngine
            from .iptables_backend import node_addresses

            low = self.lowered
            if self._dyn is None and low.dynamic_sets:
                # affinity sets, kept across calls and syncs like the kernel's set elements
                self._dyn = (np.zeros(DYNAMIC_SLOTS, np.uint64), np.zeros(DYNAMIC_SLOTS))
            local, masq_ip = node_addresses(self.node.options)
            self._engine = NftEngine(*low.engine_arrays(), local, masq_ip, dyn=self._dyn)
        return self._engine

    def advance_clock(self, now: float) -> None:
        pass  # affinity entries expire by their stamps; nothing runs on a timer

    def clock_snapshot(self, now: float) -> object:
        return None

    def restore_clock(self, snap: object) -> None:
        pass

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack, rng) -> None:
        from .._cext import pipeline

        engine = self.engine()
        pipeline.run(engine, packets, out, conntrack, rng)
        if engine.dyn_full:
            raise KproxyError(
                f"the session-affinity sets are full ({DYNAMIC_SLOTS} entries over all endpoints)"
            )
