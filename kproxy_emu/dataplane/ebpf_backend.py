"""The eBPF mode behind the Dataplane facade: a Cilium-style kube-proxy replacement.

The compiler (modes/ebpf.py) writes the load-balancing maps a Cilium agent keeps
(netfilter/bpfmaps.py); they are lowered into the compiled service lookup and run by the
eBPF engine (cext/ebpflb.pyx ``EbpfEngine``) on the one packet pipeline, with the
datapath's own state in LRU maps that outlive syncs as the kernel's maps do: the CT maps
(TCP and non-TCP), the NodePort SNAT map, the session-affinity map and the connected
sockets' translations. Netfilter's conntrack is not used in this mode (Cilium's datapath
keeps its own; docs/ebpf.md). Text: ``restore`` is Cilium's own dump of the LB maps
(``cilium-dbg bpf lb list``-style lines, as its tests print them), ``save`` what
``bpftool map dump`` shows of each map, ``json`` the same as data.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..modes.ebpf import EbpfProxier
from ..netfilter.bpfmaps import BpfMaps, render_bpftool
from .endpoints import EndpointTable
from .sync import SyncResult

if TYPE_CHECKING:
    from .._cext.ebpflb import EbpfEngine, LruMap
    from .backend import EbpfOptions, NodeContext
    from .ebpf_lowering import LoweredEbpf


class EbpfBackend:
    mode: ClassVar[str] = "ebpf"
    formats: ClassVar[tuple[str, ...]] = ("restore", "save", "json")
    netfilter_conntrack: ClassVar[bool] = False  # the datapath keeps its own CT maps

    def __init__(self, node: NodeContext, options: EbpfOptions):
        self.node = node
        self.options = options
        self.proxier = EbpfProxier(
            node.options,
            lb_algorithm=options.lb_algorithm,
            maglev_table_size=options.maglev_table_size,
            maglev_hash_seed=options.maglev_hash_seed,
            external_clusterip=options.external_clusterip,
            lb_map_max=options.lb_map_max,
        )
        self.endpoints = EndpointTable()  # grows only: verdict indices keep their meaning
        self._lowered: LoweredEbpf | None = None
        self._engine: EbpfEngine | None = None
        self._state: dict[str, LruMap] | None = None
        self._previous = BpfMaps()

    @property
    def ruleset(self) -> BpfMaps:
        """The node's maps after the last sync."""
        return self.proxier.maps

    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        pass

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        """The whole state is computed (as the agent's reconciler compares it); what is
        written is the entries that differ from the maps before: ``text`` lists them as
        ``update``/``delete`` lines of the dump, ``extra`` counts them."""
        res = self.proxier.sync(self.node.view, changed)
        removed, added = res.maps.diff_lines(self._previous)
        self._previous = res.maps
        text = "".join(f"delete {line}\n" for line in removed)
        text += "".join(f"update {line}\n" for line in added)
        self._lowered = None
        self._engine = None
        maps = res.maps
        return SyncResult(
            full=changed is None,
            payload=res,
            text=text,
            changed=set() if changed is None else set(changed),
            error=res.error,
            extra={
                "map_updates": len(added),
                "map_deletes": len(removed),
                "frontends": len(res.frontends),
                "backends": len(maps.backends),
                "maglev_tables": len(maps.maglev),
            },
        )

    def render(self, sorted: bool = False, format: str = "restore") -> str:
        """Cilium's dump of the LB maps (restore; sorted already), ``bpftool map dump``
        of each map (save), or the maps as JSON (json)."""
        maps = self.proxier.maps
        if format == "json":
            return json.dumps(maps.to_json(), indent=2, sort_keys=True) + "\n"
        if format == "save":
            return render_bpftool(maps)
        return maps.render()

    @property
    def lowered(self) -> LoweredEbpf:
        if self._lowered is None:
            from .ebpf_lowering import lower_full

            local = {
                (e.ip, e.port)
                for sp in self.node.view.service_ports
                for e in sp.endpoints
                if e.is_local
            }
            o = self.options
            self._lowered = lower_full(
                self.proxier.maps,
                algorithm=o.lb_algorithm,
                maglev_table_size=o.maglev_table_size,
                seed=o.maglev_hash_seed,
                affinity=self.state["affinity"],
                endpoint_index=self.endpoints.intern,
                local=local,
            )
        return self._lowered

    @property
    def state(self) -> dict[str, LruMap]:
        """The datapath's maps that packets change (created empty, kept across syncs)."""
        if self._state is None:
            from .._cext.ebpflb import LruMap

            o = self.options
            # the per-flow maps evict as the kernel's LRU does (reference bits: CLOCK);
            # the affinity map keeps exact recency (its twin, ebpf_reference, does)
            self._state = {
                "ct_tcp": LruMap(o.ct_tcp_max, exact=False),
                "ct_any": LruMap(o.ct_any_max, exact=False),
                # connected sockets: not a BPF map; as many as the CT maps can track
                "sockets": LruMap(o.ct_tcp_max + o.ct_any_max, exact=False),
                "snat": LruMap(o.nat_max, exact=False),
                "affinity": LruMap(o.affinity_max),
            }
        return self._state

    def prepare(self) -> None:
        _ = self.lowered

    def reset_state(self) -> None:
        """Empty every map packets change (the tables built from the sync stay)."""
        if self._state is not None:
            for m in self._state.values():
                m.clear()
        if self._engine is not None:
            self._engine.reset_counters()

    def engine(self) -> EbpfEngine:
        if self._engine is None:
            from .._cext.ebpflb import EbpfEngine
            from .backend import EBPF_CT_TIMEOUTS
            from .iptables_backend import node_addresses

            local, nat_ip = node_addresses(self.node.options)
            s = self.state
            self._engine = EbpfEngine(
                self.lowered.table,
                local,
                nat_ip,
                s["ct_tcp"],
                s["ct_any"],
                s["sockets"],
                s["snat"],
                lb_mode=("snat", "dsr", "hybrid").index(self.options.lb_mode),
                timeouts=EBPF_CT_TIMEOUTS,
            )
        return self._engine

    def advance_clock(self, now: float) -> None:
        pass  # entries expire by their stamps; nothing runs on a timer

    def clock_snapshot(self, now: float) -> object:
        return None

    def restore_clock(self, snap: object) -> None:
        pass

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack, rng) -> None:
        from .._cext import pipeline

        pipeline.run(self.engine(), packets, out, None, rng)


# the maps a trace step names (cext/ebpflb.pyx MAP_*) and their pinned names
MAP_NAMES = (
    "cilium_lb4_services_v2",
    "cilium_lb4_backends_v3",
    "cilium_lb4_affinity",
    "cilium_lb_affinity_match",
    "cilium_lb4_maglev",
    "cilium_ct4_global",
    "cilium_snat_v4_external",
    "cilium_lb4_source_range",
    "cilium_lb4_reverse_nat",
    "socket",
)


def describe_step(
    low: LoweredEbpf, packet: object, which: int, found: bool, extra: int, value: int
) -> tuple[str, str]:
    """(map name, text) of one recorded map lookup of the eBPF engine."""
    from ..netfilter import bpfmaps as B
    from ..packets import u32_to_ip

    row: dict = packet  # type: ignore[assignment]
    name = MAP_NAMES[which] if which < len(MAP_NAMES) else f"map {which}"
    src = u32_to_ip(int(row["src_ip"]))
    proto = B.PROTO_NAMES.get(int(row["proto"]), str(int(row["proto"])))
    if which == 0:
        if extra == 2:
            return name, f"backend slot {value}"
        scope = " (internal scope)" if extra == 1 else ""
        if not found or value < 0:
            dst = f"{u32_to_ip(int(row['dst_ip']))}:{int(row['dst_port'])}/{proto}"
            return name, f"lb4_lookup_service{scope}: no frontend {dst}"
        key, v = low.frontends[value]
        more = f" + {v.qcount} terminating" if v.qcount else ""
        return name, (
            f"lb4_lookup_service{scope}: {key.frontend()} rev_nat {v.rev_nat_index}, "
            f"{v.count} backends{more} [{B.flags_string(v.flags)}]"
        )
    if which == 1:
        be = low.maps.backends.get(value)
        if be is None:
            return name, f"backend {value}: not in the map"
        return name, f"backend {value}: {be.text()} ({B.STATE_NAMES[be.state]})"
    if which == 2:
        if found:
            return name, f"client {src} is sticky to backend {value}"
        return name, f"no affinity entry for client {src}"
    if which == 3:
        word = "still serves" if found else "no longer serves"
        return name, f"backend {value} {word} the service"
    if which == 4:
        return name, f"Maglev LUT[{value}]" if found else "no Maglev table"
    if which == 5:
        kind = ("flow tuple", "reply tuple", "CT_SERVICE entry")[min(extra, 2)]
        return name, f"{kind}: {'hit' if found else 'miss'}"
    if which == 6:
        if extra == 2:
            return name, f"SNAT port {value}: {'taken' if found else 'free'}"
        kind = "reply mapping" if extra == 1 else "flow's mapping"
        return name, f"{kind}: {'hit' if found else 'miss'}"
    if which == 7:
        return name, "in loadBalancerSourceRanges" if found else "not in loadBalancerSourceRanges"
    if which == 8:
        rn = low.maps.rev_nat.get(value)
        to = B.host_port(rn.address, rn.port) if rn else "?"
        return name, f"rev_nat {value}: the source becomes {to}"
    return name, "translated at connect time (the socket's own state: no map lookup)"
