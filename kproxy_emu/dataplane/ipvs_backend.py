"""The IPVS mode behind the Dataplane facade.

kube-proxy's IPVS proxier (modes/ipvs.py) gives, per sync, the virtual servers, the
addresses bound to kube-ipvs0, the ipsets and a small iptables payload. The node keeps:
its iptables (built-in jumps, then each restore applied, as in iptables mode), its ipsets
(engine sets for ``-m set``), and the kernel's IPVS table (IpvsSync: virtual servers and
real servers diffed sync after sync, graceful termination of removed real servers).

Packets walk the iptables hooks in the chain VM (cext/chains.pyx ChainEngine, driven by
the packet pipeline cext/pipeline.pyx) with ip_vs_in at LOCAL_IN (after filter INPUT) for
packets to a local address, kube-ipvs0's included, and at LOCAL_OUT (after nat OUTPUT) for
the host's own; replies update IPVS's connections (ip_vs_out). Traces run the same engine
(dataplane/tracer.py); the pure-Python reference (tests' oracle) is
dataplane/ipvs_reference.py evaluate_ipvs_flow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..errors import InputError, KproxyError
from ..model.cluster import paused_gc
from ..modes.ipvs import IpvsProxier
from ..netfilter import ipvs_text
from ..netfilter.ipvs import IpvsState, VirtualServer
from ..netfilter.ruleset import Ruleset
from .ipvs_kernel import (
    RS_CHECK_DELETE_INTERVAL,
    IpvsSync,
    build_ipsets,
    lower,
    vs_name,
    vs_options,
)
from .sync import SyncResult

if TYPE_CHECKING:
    from .backend import IpvsOptions, NodeContext

# Dataplane.render formats: restore/save as every mode has them, then IPVS mode's own texts
FORMATS = ("restore", "save", *ipvs_text.FORMATS)
MAX_CONNS = 1 << 20  # connection entries the emulated table holds


class IpvsBackend:
    mode: ClassVar[str] = "ipvs"
    formats: ClassVar[tuple[str, ...]] = FORMATS
    netfilter_conntrack: ClassVar[bool] = True

    def __init__(self, node: NodeContext, options: IpvsOptions):
        self.node = node
        # ip_vs conn_tab_bits: 2^bits connection buckets
        self.conn_tab_bits = options.conn_tab_bits
        self._engine = None  # (ChainEngine, the IPVS table it holds)
        # the proxier keeps the node's iptables (``tables``) and the state of each sync
        self.proxier = IpvsProxier(node.options, options.scheduler or node.config.ipvs.scheduler)
        self.scheduler = self.proxier.scheduler
        self.state: IpvsState | None = None  # the last sync's proxier state
        self.clock = 0.0  # emulated time: the latest packet seen
        self._next_tick = RS_CHECK_DELETE_INTERVAL  # the graceful-termination loop's next run
        self._seed = int(np.random.SeedSequence([node.seed, 0x1B5]).generate_state(1)[0])
        self.ipvs: IpvsSync | None = None  # the kernel's IPVS table (IPv4 only)
        self._endpoints: list[str] = []
        self._sets: dict | None = None
        self._local_set = None
        self._lowered = None
        self._bulk: tuple | None = None  # (state, lowered arrays, index maps) for resets

    # ---------------------------------------------------------------- syncs
    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        pass

    @property
    def ruleset(self) -> IpvsState:
        """The proxier state of the last sync (virtual servers, ipsets, iptables payload)."""
        return self.state

    @property
    def endpoints(self) -> list[str]:
        """The endpoint table verdicts index (it only grows, across syncs and resets)."""
        return self.ipvs.endpoints if self.ipvs is not None else self._endpoints

    def _table_options(self) -> dict:
        """ip_vs sizes and kube-proxy's IPVS timeouts (ipvs.tcpTimeout, tcpFinTimeout,
        udpTimeout; 0 leaves the kernel's)."""
        options: dict = {"conn_bits": self.conn_tab_bits, "max_conns": MAX_CONNS}
        cfg = self.node.config.ipvs
        given = {
            "ESTABLISHED": cfg.tcp_timeout,
            "FIN_WAIT": cfg.tcp_fin_timeout,
            "UDP": cfg.udp_timeout,
        }
        timeouts = {k: v for k, v in given.items() if v}
        if timeouts:
            options["timeouts"] = timeouts
        return options

    def _fresh_ipvs(self, state: IpvsState) -> IpvsSync:
        """An IpvsSync whose table holds ``state`` as one-by-one additions would leave it,
        built in one bulk load; endpoint indices carry over from the current table. The
        arrays and index maps are kept per state, so a reset costs the C bulk load only."""
        from .._cext.vstable import VirtualServerTable

        sync = IpvsSync(VirtualServerTable, seed=self._seed, **self._table_options())
        for ep in self.endpoints:
            sync.endpoint_index(ep)
        if self._bulk is None or self._bulk[0] is not state:
            services, dests = lower(state)
            # RealServer.endpoint indexes the proxier's endpoint strings; the engine's
            # indices are the sync's own, given in the order replaying the claims on an
            # empty table would give them (IpvsSync._sync_service)
            names = state.endpoints
            order = [
                rs.endpoint
                for vs in state.virtual_servers
                for claim in (*vs.claims, vs)
                for rs in claim.real_servers
            ]
            remap = np.zeros(len(names), np.int32)
            for i in dict.fromkeys(order):
                remap[i] = sync.endpoint_index(names[i])
            dests["endpoint"] = remap[dests["endpoint"]]
            svc_map: dict[str, int] = {}
            dest_map: dict[tuple[int, str], int] = {}
            for i, vs in enumerate(state.virtual_servers):
                svc_map[str(vs)] = i
                for rs in vs.real_servers:
                    dest_map[(i, names[rs.endpoint])] = len(dest_map)
            grouped: dict[int, list[str]] = {}
            for svc, rs_key in dest_map:
                grouped.setdefault(svc, []).append(rs_key)
            service_dests: dict[int, set[str] | tuple[str, ...]] = {
                svc: tuple(keys) for svc, keys in grouped.items()
            }
            del grouped
            self._bulk = (state, services, dests, svc_map, dest_map, service_dests)
        _, services, dests, svc_map, dest_map, service_dests = self._bulk
        sync.scheduler = state.scheduler
        sync.load(
            VirtualServerTable(services, dests, state.scheduler, self._seed, **sync.table_options),
            svc_map,
            dest_map,
            service_dests,
            borrowed=True,  # copied by the sync before its first change
        )
        return sync

    @property
    def tables(self) -> Ruleset:
        """The node's iptables as they stand after the syncs."""
        return self.proxier.tables

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        """syncProxyRules: the IPVS proxier's whole state each time; the kernel sees the
        differences (virtual/real server and ipset entry operations), iptables a restore
        of kube-proxy's chains."""
        with paused_gc():  # the cyclic collector would walk the whole (large) heap
            return self._sync(changed)

    def _sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        res = self.proxier.sync(self.node.view, changed)
        state, previous = res.state, res.previous
        self.state = state
        restore = ipvs_text.render(state, "iptables-restore")
        log: list[str] | None = None
        extra: dict[str, int] = {
            "virtual_servers": len(state.virtual_servers),
            "bound_addresses": len(state.bound_addresses),
        }
        if state.family == "IPv4":
            if self.ipvs is None:
                self.ipvs = self._fresh_ipvs(state)
                ops = {
                    "services_added": len(state.virtual_servers),
                    "dests_added": sum(len(vs.real_servers) for vs in state.virtual_servers),
                }
            else:
                # the text is the log of the operations carried out: a diff of the states
                # cannot show a server taken back off the graceful list (deleted, then
                # added afresh, as kube-proxy's MoveRSOutofGracefulDeleteList does)
                self.ipvs.log = []
                try:
                    if res.shared_keys:
                        # ports share (or shared) a virtual server: compare whole states
                        ops = self.ipvs.sync(state, now=self.clock)
                    elif res.replay is not None:  # the fresh and the shared ones
                        ops = self.ipvs.sync_changes(
                            res.replay or [], res.deleted_keys, now=self.clock
                        )
                    else:
                        ops = self.ipvs.sync_changes(res.fresh, res.deleted_keys, now=self.clock)
                    log = self.ipvs.log
                finally:
                    self.ipvs.log = None
            extra.update(ops)
            extra["ipvs_operations"] = sum(ops.values())
        extra["ipset_operations"] = len(res.ipset_ops)
        extra["nat_rules"] = len(state.ruleset.tables["nat"].rules)
        # the sync's writes as text: the restore, ipset restore lines, ipvsadm commands
        # (kube-proxy speaks netlink to IPVS; ipvsadm's syntax names the same operations)
        ipset_text = "".join(line + "\n" for line in res.ipset_ops)
        text: str | Callable[[], str]
        size: Callable[[], tuple[int, int]] | None = None
        if previous is None:
            # the first sync writes everything: rendered only if someone reads it, and
            # counted without rendering (the same lines unsorted have the same size)
            def text() -> str:
                return restore + ipset_text + ipvs_text.render(state, "ipvsadm-save")

            def size() -> tuple[int, int]:
                lines = restore.count("\n") + len(res.ipset_ops)
                nbytes = len(restore.encode()) + len(ipset_text.encode())
                for line in ipvs_text.ipvsadm_save_lines(state, nosort=True):
                    lines += 1
                    nbytes += len(line) + 1  # ASCII
                return lines, nbytes

        else:
            if log is None:
                log = _ipvsadm_changes(res.fresh, res.gone, res.deleted_keys, self.ipvs)
            text = restore + ipset_text + "".join(line + "\n" for line in log)
        self._sets = None
        self._lowered = None
        self._engine = None
        return SyncResult(
            full=True,
            payload=state,
            text=text,
            size=size,
            changed=set() if changed is None else set(changed),
            error=res.error,
            extra=extra,
        )

    def render(self, sorted: bool = False, format: str = "restore") -> str:
        """``restore`` / ``ipvsadm-save``: ``ipvsadm -Sn`` (what ``ipvsadm -R`` loads);
        ``save`` / ``ipvsadm-list``: ``ipvsadm -Ln`` with the table's connection counters;
        ``ipset-save``; ``iptables-restore`` (``sorted``: kube-proxy's test order)."""
        if format not in FORMATS:
            raise InputError(
                f"not a format of ipvs mode (formats: {', '.join(FORMATS)})",
                field="--format",
                value=format,
            )
        state = self.state
        fmt = {"restore": "ipvsadm-save", "save": "ipvsadm-list"}.get(format, format)
        if fmt == "iptables-restore" and sorted:
            from ..netfilter.iptables_text import render_sorted

            return render_sorted(state.ruleset)
        if fmt == "ipvsadm-list":
            return ipvs_text.render(state, fmt, counters=self._counters())
        if fmt == "ipset-save":
            return ipvs_text.render(state, fmt, initval_seed=self._seed)
        return ipvs_text.render(state, fmt)

    def _counters(self):
        """dest_stats rows aligned with lower(state)'s destinations (for ipvsadm -Ln)."""
        if self.ipvs is None:
            return None
        stats = self.ipvs.table.dest_stats()
        rows = [
            self.ipvs.dests[(self.ipvs.services[str(vs)], str(rs))]
            for vs in self.state.virtual_servers
            for rs in vs.real_servers
        ]
        return stats[np.array(rows, np.int64)] if rows else stats[:0]

    # ---------------------------------------------------------------- engine
    def _engine_sets(self) -> dict:
        if self._sets is None:
            self._sets = build_ipsets(self.state, seed=self._seed)
            from .._cext.vstable import IPSet

            self._local_set = IPSet(
                "kube-ipvs0", "hash:ip", self.state.bound_addresses, seed=self._seed
            )
        return self._sets

    @property
    def lowered(self):
        """The node's iptables as the chain VM's arrays, with the ipsets' addresses."""
        if self._lowered is None:
            from ..model.cluster import paused_gc
            from .lowering import lower as lower_tables

            spare: list[str] = []
            with paused_gc():
                low = lower_tables(self.tables, self.node.options.family, spare)
            if spare:  # verdict endpoints index the IPVS table's list
                raise KproxyError("IPVS mode's iptables rules hold DNAT targets")
            sets = self._engine_sets()
            missing = [name for name in low.set_names if name not in sets]
            if missing:
                raise InputError(
                    "the rules name an ipset that does not exist",
                    field="--match-set",
                    value=missing[0],
                )
            self._lowered = (low, [sets[name] for name in low.set_names], low.nth_counters.copy())
        return self._lowered[0]

    def prepare(self) -> None:
        _ = self.lowered

    def reset_state(self) -> None:
        """A node after boot: the IPVS table reloaded with the current state (no
        connections, schedulers at their start), graceful termination forgotten."""
        if self.state is not None and self.ipvs is not None:
            self.ipvs = self._fresh_ipvs(self.state)
        self.clock = 0.0
        self._next_tick = RS_CHECK_DELETE_INTERVAL
        if self._lowered is not None:
            self._lowered = (
                self._lowered[0],
                self._lowered[1],
                self._lowered[0].nth_counters.copy(),
            )
        self._engine = None

    def engine(self):
        """The ChainEngine over the node's iptables, ipsets and IPVS table."""
        if self.ipvs is None:
            raise InputError(
                "the IPVS engine runs IPv4 only", field="family", value=self.node.options.family
            )
        low = self.lowered
        if self._engine is None or self._engine[1] is not self.ipvs.table:
            from .iptables_backend import chain_engine

            _, sets, nth = self._lowered
            engine = chain_engine(
                low,
                self.node.options,
                nth_counters=nth,
                sets=sets,
                local_set=self._local_set,
                ipvs=self.ipvs.table,
            )
            self._engine = (engine, self.ipvs.table)
        return self._engine[0]

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack, rng) -> None:
        """The chain VM with ip_vs_in/ip_vs_out over the batch. Packet time drives
        kube-proxy's graceful-termination loop (every 60 s): a batch in time order runs in
        slices between its runs; one out of order has the runs its earliest packet passed
        before it and the rest after it."""
        from .._cext import pipeline

        engine = self.engine()
        n = len(packets)
        if n == 0:
            return
        ts = packets["ts"]
        if not bool(np.all(ts[1:] >= ts[:-1])):
            self._tick_until(float(ts.min()))
            pipeline.run(self.engine(), packets, out, conntrack, rng)
            self.clock = max(self.clock, float(ts.max()))
            self._tick_until(self.clock)
            return
        start = 0
        while start < n:
            self._tick_until(float(ts[start]))
            end = max(int(np.searchsorted(ts, self._next_tick, side="left")), start + 1)
            pipeline.run(engine, packets[start:end], out[start:end], conntrack, rng)
            self.clock = max(self.clock, float(ts[end - 1]))
            start = end

    def clock_snapshot(self, now: float) -> object:
        """What ``advance_clock(now)`` would change (the clock; when a graceful-
        termination run is due, the IPVS table and IpvsSync's bookkeeping too), for
        ``restore_clock``."""
        heavy = None
        sync = self.ipvs
        if sync is not None and now >= self._next_tick:
            heavy = (
                sync.table.snapshot(schedulers=True),
                dict(sync.graceful),
                dict(sync.dests),
                {k: set(v) for k, v in sync.service_dests.items()},
            )
        return (self.clock, self._next_tick, heavy)

    def restore_clock(self, snap: object) -> None:
        clock, next_tick, heavy = snap  # type: ignore[misc]
        self.clock, self._next_tick = clock, next_tick
        if heavy is not None:
            sync = self.ipvs
            table, sync.graceful, sync.dests, sync.service_dests = heavy
            sync.services = dict(sync.services)  # the maps restored are copies: owned
            sync._borrowed = False
            sync.table.restore(table)

    def advance_clock(self, now: float) -> None:
        """Run kube-proxy's graceful-termination loop up to ``now`` and move the clock
        there (what ``process`` does around a packet at that time)."""
        if self.ipvs is not None:
            self._tick_until(now)
        self.clock = max(self.clock, now)

    def _tick(self, now: float) -> None:
        """kube-proxy's graceful termination loop (every rsCheckDeleteInterval)."""
        self.ipvs.tick(now)
        self.clock = max(self.clock, now)
        self._next_tick = now + RS_CHECK_DELETE_INTERVAL

    def _tick_until(self, now: float) -> None:
        while self._next_tick <= now:
            self._tick(self._next_tick)


def _ipset_ops(old: IpvsState | None, new: IpvsState) -> list[str]:
    """The ``add``/``del`` lines that bring the ipsets to the new state."""
    out: list[str] = []
    for name, s in new.ipsets.items():
        before = old.ipsets[name].entries if old is not None else set()
        out += [f"del {s.name} {e}" for e in sorted(before - s.entries)]
        out += [f"add {s.name} {e}" for e in sorted(s.entries - before)]
    return out


def _ipvsadm_changes(
    fresh: list[VirtualServer],
    gone: list[VirtualServer],
    deleted: list[str],
    ipvs: IpvsSync | None,
) -> list[str]:
    """The ipvsadm commands of a sync from its changes (what IpvsSync's log of the same
    operations holds): the virtual servers of the ports written anew against those of
    the ports they replace (the others are unchanged)."""
    before = {str(vs): vs for vs in gone}
    out: list[str] = []
    for vs in fresh:
        out += _vs_ops(vs, before.get(str(vs)), ipvs)
    out += [f"-D {vs_name(before[key])}" for key in sorted(deleted)]  # as IpvsSync
    return out


def _vs_ops(vs: VirtualServer, prev: VirtualServer | None, ipvs: IpvsSync | None) -> list[str]:
    name = vs_name(vs)
    opts = vs_options(vs)
    out: list[str] = []
    if prev is None:
        out.append(f"-A {name}{opts}")
    elif (prev.flags, prev.timeout) != (vs.flags, vs.timeout):
        out.append(f"-E {name}{opts}")
    old_rs = {str(rs) for rs in prev.real_servers} if prev is not None else set()
    new_rs = {str(rs): rs for rs in vs.real_servers}
    out += [
        f"-a {name} -r {key} -m -w {rs.weight}" for key, rs in new_rs.items() if key not in old_rs
    ]
    svc = ipvs.services.get(str(vs)) if ipvs is not None else None
    for key in sorted(old_rs - set(new_rs)):
        dest = ipvs.dests.get((svc, key)) if ipvs is not None else None
        kept = dest is not None and dest in ipvs.graceful  # weight 0 while connections last
        out.append(f"-e {name} -r {key} -m -w 0" if kept else f"-d {name} -r {key}")
    return out
