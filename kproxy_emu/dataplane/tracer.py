"""``Dataplane.trace``: one packet through the same compiled pipeline and node state as
``process``, with a record of what it did and of every way it could have gone.

The packet runs in ``kproxy_emu._cext.pipeline.run`` with a ``Recorder``: the engine notes
each rule (iptables), rule (nftables) and IPVS lookup it visits, and every branch draw
(xt_statistic random, numgen random). The alternatives come from the engine too: the packet
is run again from a snapshot of the node's state with each draw forced to each of its
outcomes in turn, depth first, so a path's probability is the product of its draws'
(an affinity hit, a conntrack hit or a deterministic IPVS scheduler has no draw: one
candidate at p=1). NAT source-port draws are not branch points. Every run starts from the
same snapshot (conntrack, the engine's per-rule state, the IPVS table, the random stream);
the reported run is the one with the stream's own draws, i.e. what ``process`` does with
this packet next, and with ``commit`` the state it leaves is kept.
"""

from __future__ import annotations

import weakref
from bisect import bisect_right
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..netfilter.ruleset import Rule
    from .dataplane import Dataplane
    from .lowering import Lowered
    from .nft_lowering import LoweredNft

MAX_PATHS = 4096  # alternatives explored per trace (a ruleset with more is cut short)
HOOK_NAMES = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
IPVS_HOOKS = {1: "LOCAL_IN", 3: "LOCAL_OUT", 4: "POSTROUTING"}
IPVS_RESULTS = ("PASS", "DNAT", "DROP", "REJECT", "NOSCHED", "SNAT")
ACTIONS = ("ACCEPT", "DNAT", "DROP", "REJECT")


class TraceStep(TypedDict):
    table: str
    chain: str | None
    rule: int | None
    text: str
    matched: bool


class TraceCandidate(TypedDict):
    endpoint: str
    probability: float
    masquerade: bool


class TraceOutcome(TypedDict):
    probability: float
    verdict: str  # ACCEPT, DROP or REJECT (a translation shows in dnat)
    dnat: str | None
    masquerade: bool


class TraceCost(TypedDict):
    rules_evaluated: int
    lookups: int  # set, map and IPVS lookups made (each once)


# "from" is a Python keyword: the functional form
TraceResult = TypedDict(
    "TraceResult",
    {
        "packet": str,
        "from": str,
        "time": float,
        "conntrack": str,  # new, established, reply, invalid or untracked
        "verdict": str,  # ACCEPT, DNAT, DROP or REJECT
        "dnat": "str | None",
        "masquerade": bool,
        "endpoint": "str | None",
        "candidates": list[TraceCandidate],
        "outcomes": list[TraceOutcome],
        "steps": list[TraceStep],
        "cost": TraceCost,
    },
)


def trace(
    dp: Dataplane,
    packet: str,
    origin: str | None,
    *,
    time: float,
    commit: bool,
    matched_only: bool = False,
) -> TraceResult:
    from .._cext import pipeline
    from ..packets import Origin, empty_verdicts
    from ..packets import parse as parse_packet

    if origin not in (None, "pod", "external", "host"):
        raise InputError("must be pod, external or host", field="--from", value=origin)
    batch = dp._resolve_origins(parse_packet(packet, origin=origin, ts=time))
    backend = dp.backend
    # IPVS: kube-proxy's timed loop runs up to the packet's time, as process runs it
    # (undone afterwards unless committing)
    clock = None if commit else backend.clock_snapshot(time)
    backend.advance_clock(time)
    engine = backend.engine()
    state = _NodeState(dp, engine)
    rec = pipeline.Recorder()
    out = empty_verdicts(1)

    # the userspace mode's proxy, which runs after the hooks (userspace_backend.py)
    hop = getattr(backend, "proxy_hop", None)

    def run() -> None:
        rec.clear()
        pipeline.run(engine, batch, out, dp.conntrack, dp.rng, rec)
        if hop is not None:
            hop(batch, out, dp.conntrack, dp.rng)

    # the alternatives, each from the same state
    paths: list[tuple[float, Any]] = []
    prefix: list[int] | None = []
    while len(paths) < MAX_PATHS:
        rec.force(prefix)
        run()
        draws = rec.draws
        paths.append((_path_probability(draws), out[0].copy()))
        state.restore()
        prefix = _next_prefix(draws)
        if prefix is None:
            break
    rec.force(None)
    # the run that counts: the stream's own draws, as process would make them
    run()
    verdict = out[0].copy()
    steps = rec.steps
    ct_state, ct_dir, ct_hit, _ = rec.conntrack
    lookups = rec.lookups
    if not commit:
        state.restore()
        backend.restore_clock(clock)
    names = _StepNames(dp)
    endpoints = backend.endpoints
    conntrack = _conntrack_word(dp, ct_state, ct_dir, ct_hit)
    result_steps: list[TraceStep] = []
    if ct_hit:
        result_steps.append(_conntrack_step(batch[0], verdict, ct_dir))
    if matched_only:  # the path alone (a rule walk at scale is thousands of steps)
        steps = steps[steps["matched"] != 0]
    result_steps += [names.step(row) for row in steps]
    result_steps += cast("list[TraceStep]", getattr(backend, "hop_steps", []))
    candidates: dict[str, TraceCandidate] = {}
    outcomes: list[TraceOutcome] = []
    for prob, v in paths:
        action = ACTIONS[int(v["action"])]
        masq = bool(v["snat_ip"]) and ct_dir != 1
        outcomes.append(
            {
                "probability": round(prob, 12),
                "verdict": action if action in ("DROP", "REJECT") else "ACCEPT",
                "dnat": _dnat(v),
                "masquerade": masq,
            }
        )
        ep = int(v["endpoint"])
        if action == "DNAT" and ep >= 0 and prob > 0:
            c = candidates.setdefault(
                endpoints[ep], {"endpoint": endpoints[ep], "probability": 0.0, "masquerade": False}
            )
            c["probability"] += prob
            c["masquerade"] = c["masquerade"] or masq
    for c in candidates.values():
        c["probability"] = round(c["probability"], 12)
    ep = int(verdict["endpoint"])
    origin_name = Origin(int(batch[0]["origin"])).name.lower()
    return {
        "packet": packet,
        "from": origin_name,
        "time": time,
        "conntrack": conntrack,
        "verdict": ACTIONS[int(verdict["action"])],
        "dnat": _dnat(verdict),
        "masquerade": bool(verdict["snat_ip"]) and ct_dir != 1,
        "endpoint": endpoints[ep] if ep >= 0 else None,
        "candidates": list(candidates.values()),
        "outcomes": outcomes,
        "steps": result_steps,
        "cost": {"rules_evaluated": int(verdict["rules"]), "lookups": lookups},
    }


class _NodeState:
    """A snapshot of everything a packet may change: conntrack, the engine's state (nth
    counters, affinity lists or sets, the IPVS table) and the random stream."""

    def __init__(self, dp: Dataplane, engine: Any) -> None:
        self.dp, self.engine = dp, engine
        self.ct = dp.conntrack.snapshot() if dp.conntrack is not None else None
        self.eng = engine.snapshot()
        self.rng = dp.rng.state
        # a backend's own per-flow state (the userspace mode's proxy)
        snap = getattr(dp.backend, "snapshot_state", None)
        self.backend = snap() if snap is not None else None

    def restore(self) -> None:
        if self.ct is not None:
            conntrack = self.dp.conntrack
            assert conntrack is not None  # self.ct is its snapshot
            conntrack.restore(self.ct)
        self.engine.restore(self.eng)
        self.dp.rng.state = self.rng
        if self.backend is not None:
            self.dp.backend.restore_state(self.backend)  # type: ignore[attr-defined]


def _draw_probability(kind: str, n: int, threshold: int, chosen: int) -> float:
    if kind == "statistic":
        p = min(threshold, 1 << 31) / float(1 << 31)
        return p if chosen == 0 else 1.0 - p
    return 1.0 / n


def _path_probability(draws: list[tuple[str, int, int, int]]) -> float:
    p = 1.0
    for kind, n, threshold, chosen in draws:
        p *= _draw_probability(kind, n, threshold, chosen)
    return p


def _next_prefix(draws: list[tuple[str, int, int, int]]) -> list[int] | None:
    """The forced outcomes of the next path depth first: the last draw that has an outcome
    left takes it (outcomes that cannot happen are skipped), the draws after it start over."""
    for k in range(len(draws) - 1, -1, -1):
        kind, n, threshold, chosen = draws[k]
        for nxt in range(chosen + 1, n):
            if _draw_probability(kind, n, threshold, nxt) > 0:
                return [d[3] for d in draws[:k]] + [nxt]
    return None


def _dnat(v: Any) -> str | None:
    from ..packets import dnat_text

    return dnat_text(v)


def _conntrack_word(dp: Dataplane, state: int, direction: int, hit: bool) -> str:
    from .._cext import conntrack as C

    if dp.conntrack is None:
        return "new"
    if hit:
        return "reply" if direction == 1 else "established"
    if state & C.STATE_INVALID:
        return "invalid"
    if state & C.STATE_UNTRACKED:
        return "untracked"
    return "new"


def _conntrack_step(row: Any, verdict: Any, direction: int) -> TraceStep:
    from ..packets import u32_to_ip

    sip = int(verdict["snat_ip"]) or int(row["src_ip"])
    sport = int(verdict["snat_port"]) if verdict["snat_ip"] else int(row["src_port"])
    dip = int(verdict["dnat_ip"]) or int(row["dst_ip"])
    dport = int(verdict["dnat_port"]) if verdict["dnat_ip"] else int(row["dst_port"])
    text = (
        f"{'reply of' if direction else 'packet of'} a known flow, "
        f"leaves as {u32_to_ip(sip)}:{sport} -> {u32_to_ip(dip)}:{dport}"
    )
    return {"table": "conntrack", "chain": None, "rule": None, "text": text, "matched": True}


# id(lowered tables) -> (a weak reference to them, their memo: (kind, row) -> named step,
# plus the chains' rules and the chain start offsets as plain sequences)
_NAMES_CACHE: dict[int, tuple[weakref.ref[Any], dict[Any, Any]]] = {}


class _StepNames:
    """Recorder rows -> the rule text of the mode's own model (iptables-save lines, nft
    rules, IPVS lookups), looked up lazily: only the chains a trace visits."""

    def __init__(self, dp: Dataplane) -> None:
        self.dp = dp
        self.backend = dp.backend
        self.low = self.backend.lowered
        # per lowered tables, shared by the traces that run on them (a trace at 10,000
        # services visits thousands of rules; grouping a table's rules by chain or
        # copying a strided column per step cost seconds per trace)
        cached = _NAMES_CACHE.get(id(self.low))
        if cached is None or cached[0]() is not self.low:
            cached = (weakref.ref(self.low), {})
            _NAMES_CACHE.clear()  # one lowered at a time: the latest traced
            _NAMES_CACHE[id(self.low)] = cached
        self._memo: dict[Any, Any] = cached[1]
        self._by_chain: dict[tuple[str, str], list[Rule]] = self._memo.setdefault("chains", {})

    def step(self, row: Any) -> TraceStep:
        kind, index, matched = int(row["kind"]), int(row["index"]), bool(row["matched"])
        if kind in (1, 2):
            named = self._memo.get((kind, index))
            if named is None:
                step = self._iptables(index, matched) if kind == 1 else self._nft(index, matched)
                assert step["chain"] is not None and step["rule"] is not None
                self._memo[(kind, index)] = (
                    step["table"],
                    step["chain"],
                    step["rule"],
                    step["text"],
                )
                return step
            table, chain, rule, text = named
            return {"table": table, "chain": chain, "rule": rule, "text": text, "matched": matched}
        result = IPVS_RESULTS[int(row["extra"])] if int(row["extra"]) < 6 else "?"
        endpoint = int(row["value"])
        to = ""
        if endpoint >= 0 and result in ("DNAT", "SNAT"):
            to = f" -> {self.backend.endpoints[endpoint]}"
        if kind == 3:
            hook = IPVS_HOOKS.get(index, HOOK_NAMES[index])
            return {
                "table": "ipvs",
                "chain": hook,
                "rule": None,
                "text": f"ip_vs_in at {hook}: {result}{to}",
                "matched": matched,
            }
        return {
            "table": "ipvs",
            "chain": "POSTROUTING",
            "rule": None,
            "text": f"ip_vs_out (reply): {result}{to}",
            "matched": matched,
        }

    def _iptables(self, row: int, matched: bool) -> TraceStep:
        from ..netfilter.iptables_text import render_rule
        from .iptables_backend import IptablesBackend
        from .ipvs_backend import IpvsBackend
        from .userspace_backend import UserspaceBackend

        backend = self.backend
        # chain VM rows: iptables mode, IPVS mode's iptables rules, the userspace mode's
        # (all lower to Lowered)
        assert isinstance(backend, (IptablesBackend, IpvsBackend, UserspaceBackend))
        low = cast("Lowered", self.low)
        starts = self._memo.get("starts")
        if starts is None:  # a contiguous copy: searchsorted would copy the strided column
            starts = self._memo["starts"] = np.ascontiguousarray(low.chains["start"])
        cid = int(np.searchsorted(starts, row, side="right")) - 1
        table, chain = low.chain_names[cid]
        rules = self._by_chain.get((table, chain))
        if rules is None:  # the table's rules by chain, in one pass
            for r in backend.tables.tables[table].rules:
                self._by_chain.setdefault((table, r.chain), []).append(r)
            rules = self._by_chain.setdefault((table, chain), [])
        k = row - int(starts[cid])
        return {
            "table": table,
            "chain": chain,
            "rule": k,
            "text": render_rule(rules[k]),
            "matched": matched,
        }

    def _nft(self, pc: int, matched: bool) -> TraceStep:
        from .nftables_backend import NftablesBackend

        backend = self.backend
        assert isinstance(backend, NftablesBackend)  # nft VM rows: nftables mode
        low = cast("LoweredNft", self.low)
        table = backend.table
        chain_start = self._memo.get("chain_start")
        if chain_start is None:
            chain_start = self._memo["chain_start"] = low.chain_start.tolist()
        c = bisect_right(chain_start, pc) - 1
        name = low.chain_names[c]
        first = int(np.searchsorted(low.rule_start, low.chain_start[c]))
        k = int(np.searchsorted(low.rule_start, pc)) - first
        return {
            "table": f"{table.family} {table.name}",
            "chain": name,
            "rule": k,
            "text": table.chains[name].rules[k].full_text,
            "matched": matched,
        }
