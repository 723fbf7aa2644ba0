"""The step API: one node's dataplane driven by a discrete-event simulator.

A thin, typed layer over :class:`~kproxy_emu.Dataplane` for simulators (SimPy and the
like) that advance simulated time themselves::

    from kproxy_emu import Simulator, Added, Updated, Deleted, synth, packets

    sim = Simulator(synth.cluster(1000, seed=1), "nftables", seed=1)
    step = sim.apply([Updated(new_slice)], at=12.5)  # a sync at t = 12.5 s
    step.cost()                   # what the sync wrote: lines, bytes, the mode's units
    step.predicted_program_s      # the kernel's programming time, None when uncalibrated
    verdicts = sim.process(batch)  # PACKET_DTYPE rows with ts >= 12.5
    snap = sim.snapshot()         # conntrack entries, affinity entries, counters, clock

Time only moves forward: ``apply(..., at=t)`` and every processed packet's ``ts`` must not
be before :attr:`Simulator.clock`. Events are the change tracker's (docs/architecture.md):
``Added(obj)``, ``Updated(obj)`` and ``Deleted(kind, namespace, name)`` of Services,
EndpointSlices and Nodes (what kube-proxy watches; a sync follows) and of NetworkPolicies,
Pods and Namespaces (what the NetworkPolicy stage reads, with ``policy_engine=``).

The predicted programming time (:class:`ProgramTimeModel`) is read off a kernel
calibration (``kproxy-emu calibrate``, e.g. benchmarks/kernel-calibration.json). With the
sync timings of ``calibrate --syncs`` (its ``sync_model``), a sync is predicted from its
text lines and the ruleset already loaded (:class:`kproxy_emu.programtime.SyncTimeModel`:
full loads and single-change syncs loaded as kube-proxy loads them). Without them, the
wall time of ``iptables-restore`` / ``nft -f`` loading whole rulesets of known size is
interpolated linearly in the sync's text lines, a partial sync taken to cost what loading
that many lines costs (an approximation: an update's cost also depends on what is already
installed). It is None for modes the calibration has no load times for (IPVS, userspace,
eBPF) and without a calibration. docs/step-api.md describes the whole API.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .dataplane import Dataplane, ModeOptions
from .dataplane.sync import SyncResult
from .errors import InputError
from .model import Cluster
from .packets import Action
from .programtime import CalibrationArg, ProgramTimeModel
from .proxy.tracker import Added, Deleted, Event, Updated

__all__ = [
    "AFFINITY_DTYPE",
    "CONNTRACK_DTYPE",
    "Added",
    "Deleted",
    "Event",
    "ProgramTimeModel",
    "Simulator",
    "Snapshot",
    "StepSync",
    "Updated",
]

# a conntrack entry (the engine's ENTRY_DTYPE): its id, proto, state, confirmed, status
# bits, the original and reply tuples, the NAT it applied, its endpoint index and mark, and
# when it expires (emulated seconds)
CONNTRACK_DTYPE: np.dtype[np.void] = np.dtype(
    [
        ("id", "<i4"),
        ("proto", "u1"),
        ("state", "u1"),
        ("confirmed", "?"),
        ("status", "<u4"),
        ("orig_src_ip", "<u4"),
        ("orig_src_port", "<u2"),
        ("orig_dst_ip", "<u4"),
        ("orig_dst_port", "<u2"),
        ("reply_src_ip", "<u4"),
        ("reply_src_port", "<u2"),
        ("reply_dst_ip", "<u4"),
        ("reply_dst_port", "<u2"),
        ("dnat_ip", "<u4"),
        ("dnat_port", "<u2"),
        ("snat_ip", "<u4"),
        ("snat_port", "<u2"),
        ("endpoint", "<i4"),
        ("mark", "<u4"),
        ("expires", "<f8"),
    ]
)
# a session-affinity entry: the xt_recent list (iptables, userspace: one list per
# endpoint of a ClientIP-affinity Service, numbered in rule order), the client address
# (host order) and when it was last seen (emulated seconds)
AFFINITY_DTYPE: np.dtype[np.void] = np.dtype(
    [("list", "<i4"), ("client_ip", "<u4"), ("last_seen", "<f8")]
)

_RECENT_LIST_TOT = 100  # xt_recent's ip_list_tot (dataplane/iptables_backend.py)


@dataclass(frozen=True)
class StepSync:
    """One sync of the node at simulated time ``at``: the Dataplane's SyncResult, the
    emulator's own compute time and the kernel programming time predicted for it."""

    at: float
    mode: str
    result: SyncResult
    wall_s: float  # the emulator's time to compute and apply the sync (this host)
    predicted_program_s: float | None  # None: no calibration covers the mode
    program_basis: str | None  # what the prediction rests on

    @property
    def full(self) -> bool:
        """A full sync (else partial: only the changed Services' rules)."""
        return self.result.full

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def lines(self) -> int:
        return self.result.lines

    @property
    def bytes(self) -> int:
        return self.result.bytes

    @property
    def changed(self) -> frozenset[tuple[str, str]]:
        """The Services (namespace, name) whose rules the sync rewrote."""
        return frozenset(self.result.changed)

    @property
    def programmed_at(self) -> float | None:
        """``at`` plus the predicted programming time: when the kernel holds the rules."""
        if self.predicted_program_s is None:
            return None
        return self.at + self.predicted_program_s

    def cost(self) -> dict[str, int]:
        """What the sync wrote: lines and bytes of its text plus the mode's own units
        (iptables: nat rules; nftables: transaction operations and elements; IPVS: netlink
        and ipset operations)."""
        return self.result.cost()

    def to_dict(self) -> dict[str, Any]:
        """The sync as JSON-ready data (without the payload and text)."""
        return {
            "at": self.at,
            "mode": self.mode,
            "full": self.full,
            "ok": self.ok,
            "changed": sorted("/".join(k) for k in self.changed),
            "cost": self.cost(),
            "wall_s": self.wall_s,
            "predicted_program_s": self.predicted_program_s,
            "program_basis": self.program_basis,
        }


@dataclass(frozen=True)
class Snapshot:
    """The node's state as data, at ``clock``.

    ``conntrack``: live entries (CONNTRACK_DTYPE, not yet expired at ``clock``; empty in
    the eBPF mode, whose datapath keeps its own CT maps); ``affinity``: session-affinity
    entries (AFFINITY_DTYPE; iptables and userspace modes' xt_recent lists, empty in the
    others); ``counters``: packets by verdict, conntrack statistics, NetworkPolicy stage
    and userspace proxy counts, syncs."""

    clock: float
    mode: str
    conntrack: npt.NDArray[np.void]
    affinity: npt.NDArray[np.void]
    counters: Mapping[str, int]
    endpoints: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists of records (field name -> value)."""

        def rows(arr: npt.NDArray[np.void]) -> list[dict[str, Any]]:
            names = arr.dtype.names or ()
            return [{n: row[n].item() for n in names} for row in arr]

        return {
            "clock": self.clock,
            "mode": self.mode,
            "conntrack": rows(self.conntrack),
            "affinity": rows(self.affinity),
            "counters": dict(self.counters),
            "endpoints": list(self.endpoints),
        }


class Simulator:
    """One node of a cluster in one proxy mode, advanced by a simulator's clock.

    ``cluster``: the initial state (not changed: the events edit the node's own copy);
    ``mode``: a mode name or options object, as for Dataplane; ``seed``: every random
    choice; ``calibration``: what predicts kernel programming times (ProgramTimeModel.load:
    ``"auto"``, a file, a mapping, or None); ``dataplane_options``: the rest of
    Dataplane's keywords (``node``, ``cluster_cidr``, ``policy_engine``, ``cpus``, ...).
    The initial full sync is ``syncs[0]``, at time 0."""

    def __init__(
        self,
        cluster: Cluster,
        mode: str | ModeOptions = "iptables",
        *,
        seed: int = 0,
        calibration: CalibrationArg | ProgramTimeModel = "auto",
        **dataplane_options: Any,
    ) -> None:
        self._model = (
            calibration
            if isinstance(calibration, ProgramTimeModel)
            else ProgramTimeModel.load(calibration)
        )
        t0 = time.perf_counter()
        self._dp = Dataplane(cluster, mode, seed=seed, **dataplane_options)
        wall = time.perf_counter() - t0
        self._dp.program_model = self._model  # the node's later SyncResults carry it too
        self._syncs: list[StepSync] = []
        self._clock = 0.0
        self._verdicts: dict[str, int] = {a.name: 0 for a in Action}
        self._packets = 0
        self._ct_hits = 0
        if self._dp.syncs:
            self._syncs.append(self._step(self._dp.syncs[-1], 0.0, wall))

    # ------------------------------------------------------------ properties
    @property
    def mode(self) -> str:
        return self._dp.mode

    @property
    def clock(self) -> float:
        """Simulated time: the latest ``at`` applied or packet processed (seconds)."""
        return max(self._clock, self._dp.clock)

    @property
    def syncs(self) -> tuple[StepSync, ...]:
        """Every sync so far, the initial full one first."""
        return tuple(self._syncs)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint table verdicts' ``endpoint`` indexes ("ip:port"); it only grows."""
        return tuple(self._dp.endpoints)

    @property
    def cluster(self) -> Cluster:
        """The cluster as the events left it (read-only: change it with ``apply``)."""
        return self._dp.cluster

    @property
    def dataplane(self) -> Dataplane:
        """The Dataplane underneath (render, trace, ...)."""
        return self._dp

    @property
    def program_time_model(self) -> ProgramTimeModel | None:
        return self._model

    # ------------------------------------------------------------ stepping
    def _check_at(self, at: float | None) -> float:
        if at is None:
            return self.clock
        if isinstance(at, bool) or not isinstance(at, (int, float, np.integer, np.floating)):
            raise InputError("must be a number of seconds", field="at", value=at)
        t = float(at)
        if not math.isfinite(t):
            raise InputError("must be finite", field="at", value=at)
        if t < self.clock:
            raise InputError(
                f"before the simulator's clock {self.clock:g} s (time only moves forward)",
                field="at",
                value=at,
            )
        return t

    def _step(self, result: SyncResult, at: float, wall: float) -> StepSync:
        model = self._model
        predicted = (
            model.predict(
                self.mode,
                result.lines,
                0 if result.full else self._dp.loaded_lines,
                result.rewrites,
            )
            if model is not None
            else None
        )
        basis = model.basis(self.mode) if model is not None and predicted is not None else None
        return StepSync(at, self.mode, result, wall, predicted, basis)

    def _advance(self, at: float) -> None:
        self._clock = at
        # the node's clock too: a packet before the change would go back in time
        self._dp.clock = max(self._dp.clock, at)

    def apply(self, events: Iterable[Event], *, at: float | None = None) -> StepSync:
        """Apply watch events at simulated time ``at`` (default: the clock) and sync, as
        kube-proxy does after them. InputError for a bad event (adding an object that
        exists, updating or deleting one that does not, another kind) or a time before
        the clock."""
        t = self._check_at(at)
        evs: Sequence[Event] = list(events)
        t0 = time.perf_counter()
        result = self._dp.apply(evs)
        wall = time.perf_counter() - t0
        self._advance(t)
        step = self._step(result, t, wall)
        self._syncs.append(step)
        return step

    def update(self, cluster: Cluster, *, at: float | None = None) -> StepSync:
        """Move to a new state of the whole cluster at ``at`` (the events are found by
        comparing objects by identity, as Dataplane.update does) and sync."""
        t = self._check_at(at)
        t0 = time.perf_counter()
        result = self._dp.update(cluster)
        wall = time.perf_counter() - t0
        self._advance(t)
        step = self._step(result, t, wall)
        self._syncs.append(step)
        return step

    def process(self, packets: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
        """A batch (PACKET_DTYPE, ``ts`` not before the clock, never decreasing) through
        the node: VERDICT_DTYPE rows, one per packet (Dataplane.process)."""
        verdicts = self._dp.process(packets)
        if len(verdicts):
            actions, counts = np.unique(verdicts["action"], return_counts=True)
            for a, c in zip(actions.tolist(), counts.tolist()):
                self._verdicts[Action(a).name] += int(c)
            self._packets += len(verdicts)
            self._ct_hits += int(np.count_nonzero(verdicts["ct_hit"]))
        return verdicts

    # ------------------------------------------------------------ state as data
    def counters(self) -> dict[str, int]:
        """Packets processed (``packets``, ``ct_hit``, one count per verdict action),
        ``syncs`` and ``full_syncs``, conntrack's statistics (``conntrack_*``, with
        ``conntrack_entries``), the NetworkPolicy stage's (``policy_*``) and the userspace
        proxy's (``proxy_*``)."""
        out: dict[str, int] = {"packets": self._packets, "ct_hit": self._ct_hits}
        out.update(self._verdicts)
        out["syncs"] = len(self._syncs)
        out["full_syncs"] = sum(1 for s in self._syncs if s.full)
        ct = self._dp.conntrack
        if ct is not None:
            out["conntrack_entries"] = len(ct)
            out.update({f"conntrack_{k}": int(v) for k, v in ct.stats().items()})
        out.update({f"policy_{k}": int(v) for k, v in self._dp.policy_drops.items()})
        proxy = getattr(self._dp.backend, "proxy_stats", None)
        if isinstance(proxy, Mapping):
            out.update({f"proxy_{k}": int(v) for k, v in proxy.items()})
        return out

    def conntrack_entries(self) -> npt.NDArray[np.void]:
        """Live conntrack entries (CONNTRACK_DTYPE; those not expired at the clock)."""
        ct = self._dp.conntrack
        if ct is None:
            return np.zeros(0, CONNTRACK_DTYPE)
        entries = ct.entries()
        out = np.zeros(len(entries), CONNTRACK_DTYPE)
        for name in CONNTRACK_DTYPE.names or ():
            out[name] = entries[name]
        return out[out["expires"] > self.clock]

    def affinity_entries(self) -> npt.NDArray[np.void]:
        """Session-affinity entries (AFFINITY_DTYPE): the xt_recent lists of the iptables
        and userspace modes (empty in the others, and before the first packet)."""
        recent = getattr(self._dp.backend, "_recent", None)
        if recent is None:
            return np.zeros(0, AFFINITY_DTYPE)
        addrs, stamps, counts = recent
        lists = np.flatnonzero(counts)
        total = int(counts[lists].sum()) if len(lists) else 0
        out = np.zeros(total, AFFINITY_DTYPE)
        k = 0
        for lst in lists.tolist():
            n = int(counts[lst])
            base = lst * _RECENT_LIST_TOT
            out["list"][k : k + n] = lst
            out["client_ip"][k : k + n] = addrs[base : base + n]
            out["last_seen"][k : k + n] = stamps[base : base + n]
            k += n
        return out

    def snapshot(self) -> Snapshot:
        """The node's state now, as data (copies: later steps do not change it)."""
        return Snapshot(
            clock=self.clock,
            mode=self.mode,
            conntrack=self.conntrack_entries(),
            affinity=self.affinity_entries(),
            counters=self.counters(),
            endpoints=self.endpoints,
        )

    def sync_log(self) -> str:
        """Every sync as JSON lines (StepSync.to_dict), for a simulator's trace file."""
        return "".join(json.dumps(s.to_dict()) + "\n" for s in self._syncs)

    def __repr__(self) -> str:
        return (
            f"<Simulator {self.mode} clock={self.clock:g}: {len(self._syncs)} syncs, "
            f"{self._packets} packets>"
        )
