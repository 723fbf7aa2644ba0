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

Only the steps a trace returns are turned into rule text: with ``all_rules=False`` the
matched path alone, so a packet that walks 100,000 rules costs little more than one that
walks ten. The Service the packet was addressed to comes from the proxy view (what
kube-proxy programs), the same in every mode.
"""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..netfilter.ruleset import Rule
    from ..proxy.view import ServicePortInfo
    from .dataplane import Dataplane
    from .lowering import Lowered
    from .nft_lowering import LoweredNft
    from .policy_stage import TracePolicy

MAX_PATHS = 4096  # alternatives explored per trace (a ruleset with more is cut short)
RECORDER_STEPS = 1 << 16  # steps a trace records at first (grown when a walk is longer)
MAX_DENOMINATOR = 1 << 20  # a probability is shown as a fraction up to this denominator
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
    # nftables: the element of the verdict map that gave the verdict ("key : verdict")
    element: NotRequired[str]
    # IPVS: the virtual server (ipvsadm's "TCP 172.16.0.1:80") and real server met
    virtual_server: NotRequired[str | None]
    real_server: NotRequired[str | None]


class TraceCandidate(TypedDict):
    endpoint: str
    probability: float
    fraction: str | None  # the exact probability as "1/32", when it is a simple fraction
    masquerade: bool


class TraceOutcome(TypedDict):
    probability: float
    fraction: str | None
    verdict: str  # ACCEPT, DROP or REJECT (a translation shows in dnat)
    dnat: str | None
    masquerade: bool


class TraceService(TypedDict):
    """The Service port the packet was addressed to, and through which of its addresses."""

    name: str  # ServicePortName: "ns/name", plus ":port-name" for a named port
    namespace: str
    service: str
    port_name: str
    port: int  # the Service's port (spec.ports[].port)
    protocol: str  # TCP, UDP, SCTP
    via: str  # cluster-ip, external-ip, load-balancer or node-port
    address: str  # the address:port the packet was sent to


class TraceCost(TypedDict):
    rules_evaluated: int
    lookups: int  # set, map and IPVS lookups made (each once)


# "from" is a Python keyword: the functional form
TraceResult = TypedDict(
    "TraceResult",
    {
        "packet": str,
        "mode": str,  # the proxy mode traced
        "from": str,
        "time": float,
        "conntrack": str,  # new, established, reply, invalid or untracked
        "verdict": str,  # ACCEPT, DNAT, DROP or REJECT
        "dnat": "str | None",
        "masquerade": bool,
        # the source the packet leaves with after SNAT (a reply: conntrack's restored
        # source), "ip:port"; None when untouched
        "snat": "str | None",
        "endpoint": "str | None",
        "service": "TraceService | None",  # None: not addressed to a Service port
        "candidates": list[TraceCandidate],
        "outcomes": list[TraceOutcome],
        "steps": list[TraceStep],
        "steps_omitted": int,  # rules evaluated without matching, left out of steps
        "cost": TraceCost,
        # the NetworkPolicy stage (Dataplane(policy_engine=...)); None without one
        "policy": "TracePolicy | None",
    },
)


def trace(
    dp: Dataplane,
    packet: str,
    origin: str | None,
    *,
    time: float,
    commit: bool,
    all_rules: bool = True,
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
    engine = dp.attach_policy()
    state = _NodeState(dp, engine)
    capacity = RECORDER_STEPS
    rec = pipeline.Recorder(capacity)
    out = empty_verdicts(1)

    # the userspace mode's proxy, which runs after the hooks (userspace_backend.py)
    hop = getattr(backend, "proxy_hop", None)

    def run(forced: list[int] | None) -> None:
        nonlocal rec, capacity
        rec.force(forced)
        rec.clear()
        pipeline.run(engine, batch, out, dp.conntrack, dp.rng, rec)
        if rec.steps_taken > capacity:
            # more rules than the recorder holds (a linear chain of 100,000 services):
            # again from the same state and draws with room for every step
            state.restore()
            capacity = rec.steps_taken
            rec = pipeline.Recorder(capacity)
            rec.force(forced)
            pipeline.run(engine, batch, out, dp.conntrack, dp.rng, rec)
        if hop is not None:
            hop(batch, out, dp.conntrack, dp.rng)

    # the alternatives, each from the same state
    paths: list[tuple[Fraction, Any]] = []
    prefix: list[int] | None = []
    while len(paths) < MAX_PATHS:
        run(prefix)
        draws = rec.draws
        paths.append((_path_probability(draws), out[0].copy()))
        state.restore()
        prefix = _next_prefix(draws)
        if prefix is None:
            break
    # the run that counts: the stream's own draws, as process would make them
    run(None)
    verdict = out[0].copy()
    steps = rec.steps
    ct_state, ct_dir, ct_hit, _ = rec.conntrack
    lookups = rec.lookups
    if not commit:
        state.restore()
        backend.restore_clock(clock)
    row = batch[0]
    conntrack = _conntrack_word(dp, ct_state, ct_dir, ct_hit)
    result_steps: list[TraceStep] = []
    if ct_hit:
        result_steps.append(_conntrack_step(row, verdict, ct_dir))
    shown = steps if all_rules else steps[steps["matched"] != 0]
    policy = dp.policy.describe(row, steps, verdict) if dp.policy is not None else None
    names = _StepNames(dp, row, policy)
    result_steps += names.steps(shown)
    result_steps += cast("list[TraceStep]", getattr(backend, "hop_steps", []))
    endpoints = backend.endpoints
    candidates: dict[str, TraceCandidate] = {}
    exact: dict[str, Fraction] = {}
    outcomes: list[TraceOutcome] = []
    for prob, v in paths:
        action = ACTIONS[int(v["action"])]
        masq = bool(v["snat_ip"]) and ct_dir != 1
        outcomes.append(
            {
                "probability": round(float(prob), 12),
                "fraction": _fraction(prob),
                "verdict": action if action in ("DROP", "REJECT") else "ACCEPT",
                "dnat": _dnat(v),
                "masquerade": masq,
            }
        )
        ep = int(v["endpoint"])
        if action == "DNAT" and ep >= 0 and prob > 0:
            name = endpoints[ep]
            c = candidates.setdefault(
                name, {"endpoint": name, "probability": 0.0, "fraction": None, "masquerade": False}
            )
            exact[name] = exact.get(name, Fraction(0)) + prob
            c["masquerade"] = c["masquerade"] or masq
    for name, c in candidates.items():
        c["probability"] = round(float(exact[name]), 12)
        c["fraction"] = _fraction(exact[name])
    ep = int(verdict["endpoint"])
    origin_name = Origin(int(row["origin"])).name.lower()
    return {
        "packet": packet,
        "mode": dp.mode,
        "from": origin_name,
        "time": time,
        "conntrack": conntrack,
        "verdict": ACTIONS[int(verdict["action"])],
        "dnat": _dnat(verdict),
        "masquerade": bool(verdict["snat_ip"]) and ct_dir != 1,
        "snat": _snat(verdict),
        "endpoint": endpoints[ep] if ep >= 0 else None,
        "service": _service(dp, row, verdict, ct_dir)
        or _dump_service(names.matched_rules, _addressed(row, verdict, ct_dir)),
        # numerically: by address as a number, then port (10.0.0.9 before 10.0.0.10)
        "candidates": sorted(candidates.values(), key=lambda c: endpoint_key(c["endpoint"])),
        "outcomes": outcomes,
        "steps": result_steps,
        "steps_omitted": len(steps) - len(shown),
        "cost": {"rules_evaluated": int(verdict["rules"]), "lookups": lookups},
        "policy": policy,
    }


class _NodeState:
    """A snapshot of everything a packet may change: conntrack, the engine's state (nth
    counters, affinity lists or sets, the IPVS table) and the random stream."""

    def __init__(self, dp: Dataplane, engine: Any) -> None:
        self.dp, self.engine = dp, engine
        self.ct = dp.conntrack.snapshot() if dp.conntrack is not None else None
        self.eng = engine.snapshot()
        self.rng = dp.rng.state
        self.policy = dp.policy.stage.counters if dp.policy is not None else None
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
        if self.policy is not None:
            assert self.dp.policy is not None  # self.policy is its counters
            self.dp.policy.stage.counters = self.policy
        if self.backend is not None:
            self.dp.backend.restore_state(self.backend)  # type: ignore[attr-defined]


def _draw_probability(kind: str, n: int, threshold: int, chosen: int) -> Fraction:
    """Exactly: xt_statistic matches when a 31-bit random number is below the threshold;
    numgen's N values are equally likely."""
    if kind == "statistic":
        p = Fraction(min(threshold, 1 << 31), 1 << 31)
        return p if chosen == 0 else 1 - p
    return Fraction(1, n)


def _path_probability(draws: list[tuple[str, int, int, int]]) -> Fraction:
    p = Fraction(1)
    for kind, n, threshold, chosen in draws:
        p *= _draw_probability(kind, n, threshold, chosen)
    return p


def _fraction(p: Fraction) -> str | None:
    """ "1/32" when the probability is a simple fraction; None when only its decimal says
    anything (kube-proxy writes 1/3 as --probability 0.3333333333, which is not 1/3)."""
    if p.denominator > MAX_DENOMINATOR:
        return None
    return f"{p.numerator}/{p.denominator}" if p.denominator != 1 else str(p.numerator)


def endpoint_key(endpoint: str) -> tuple[int, int, int]:
    """Sort key of "ip:port" / "[ipv6]:port": the family, the address as a number, the port."""
    host, _, port = endpoint.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    return ip.version, int(ip), int(port)


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

    if dp.conntrack is None and dp.backend.netfilter_conntrack:
        return "new"
    if hit:
        return "reply" if direction == 1 else "established"
    if state & C.STATE_INVALID:
        return "invalid"
    if state & C.STATE_UNTRACKED:
        return "untracked"
    return "new"


def _snat(verdict: Any) -> str | None:
    from ..packets import u32_to_ip

    if not verdict["snat_ip"]:
        return None
    return f"{u32_to_ip(int(verdict['snat_ip']))}:{int(verdict['snat_port'])}"


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


_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}


def _addressed(row: Any, verdict: Any, direction: int) -> tuple[str, int]:
    """Where the packet's flow was sent: its destination, or for a reply the address
    conntrack puts back as its source."""
    from ..packets import u32_to_ip

    if direction == 1:
        ip = u32_to_ip(int(verdict["snat_ip"]) or int(row["src_ip"]))
        return ip, int(verdict["snat_port"]) if verdict["snat_ip"] else int(row["src_port"])
    return u32_to_ip(int(row["dst_ip"])), int(row["dst_port"])


def _service(dp: Dataplane, row: Any, verdict: Any, direction: int) -> TraceService | None:
    """The Service port the packet is addressed to: its destination as a ClusterIP,
    externalIP or load-balancer IP and port, or a NodePort on an address this node serves
    NodePorts on. A reply (conntrack's reply direction) belongs to the Service its flow
    was addressed to: the address conntrack gives back to its source."""
    protocol = _PROTOCOLS.get(int(row["proto"]))
    if protocol is None:
        return None
    ip, port = _addressed(row, verdict, direction)
    options = dp.options
    node_port_ips = options.node_port_ips()
    if node_port_ips is None:  # every local address (and localhost when it is allowed)
        node_port = ip in options.node.local_ips or (
            ip.startswith("127.") and options.localhost_node_ports
        )
    else:
        node_port = ip in node_port_ips
    for sp in dp.view.service_ports:
        if sp.protocol != protocol:
            continue
        via = None
        if sp.port == port:
            if sp.cluster_ip == ip:
                via = "cluster-ip"
            elif ip in sp.external_ips:
                via = "external-ip"
            elif ip in sp.lb_ips:
                via = "load-balancer"
        if via is None and node_port and sp.node_port == port:
            via = "node-port"
        if via is not None:
            return _service_dict(sp, via, f"{ip}:{port}")
    return None


# kube-proxy's comments on the rules that send a packet to a Service's chains
_FRONTEND_COMMENT = {
    "cluster IP": "cluster-ip",
    "external IP": "external-ip",
    "loadbalancer IP": "load-balancer",
}


def _dump_service(rules: list[Rule], addressed: tuple[str, int]) -> TraceService | None:
    """A node's own iptables dump traced without its manifests: the Service from the
    comment kube-proxy writes on the KUBE-SERVICES / KUBE-NODEPORTS rule the packet
    matched ("ns/name:port cluster IP"). The dump names a NodePort's node port only, so
    ``port`` is then 0 (unknown)."""
    for rule in rules:
        if rule.chain not in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
            continue
        comment, target = rule.comment, rule.target or ""
        if not comment or not target.startswith(
            ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-")
        ):
            continue
        spn, _, kind = comment.partition(" ")
        via = "node-port" if rule.chain == "KUBE-NODEPORTS" else _FRONTEND_COMMENT.get(kind)
        namespace, slash, rest = spn.partition("/")
        if via is None or not slash:
            continue
        name, _, port_name = rest.partition(":")
        dport = rule.value("--dport") or "0"
        return {
            "name": spn,
            "namespace": namespace,
            "service": name,
            "port_name": port_name,
            "port": 0 if via == "node-port" or not dport.isdigit() else int(dport),
            "protocol": (rule.value("-p") or "").upper(),
            "via": via,
            "address": f"{addressed[0]}:{addressed[1]}",
        }
    return None


def _service_dict(sp: ServicePortInfo, via: str, address: str) -> TraceService:
    return {
        "name": sp.spn,
        "namespace": sp.namespace,
        "service": sp.name,
        "port_name": sp.port_name,
        "port": sp.port,
        "protocol": sp.protocol,
        "via": via,
        "address": address,
    }


class _StepNames:
    """Recorder rows -> the rule text of the mode's own model (iptables-save lines, nft
    rules, IPVS lookups). Only the rows asked for are named, their chains found with one
    vectorised search, each chain's rules gathered once."""

    def __init__(self, dp: Dataplane, row: Any, policy: TracePolicy | None = None) -> None:
        self.dp = dp
        self.policy = policy
        self.row = row  # the traced packet as it was sent
        self.backend = dp.backend
        self.low = self.backend.lowered
        self.matched_rules: list[Rule] = []  # iptables rules matched, in order

    def steps(self, rows: np.ndarray) -> list[TraceStep]:
        if not len(rows):
            return []
        kinds = rows["kind"]
        if (kinds == 1).any():
            self._prepare_iptables(rows["index"][kinds == 1])
        if (kinds == 2).any():
            self._prepare_nft(rows["index"][kinds == 2])
        out: list[TraceStep] = []
        for r in rows:
            kind, index, matched = int(r["kind"]), int(r["index"]), bool(r["matched"])
            if kind == 1:
                out.append(self._iptables(index, matched))
            elif kind == 2:
                out.append(self._nft(index, matched, int(r["value"])))
            elif kind == 5:
                out.append(self._bpf(index, matched, int(r["extra"]), int(r["value"])))
            elif kind == 6:
                out.append(self._policy(index, int(r["extra"])))
            elif kind == 7:
                out.append(self._policy_rule(index, matched))
            else:
                out.append(self._ipvs(kind, index, matched, int(r["extra"]), int(r["value"])))
        return out

    # ---------------------------------------------------------------- NetworkPolicy
    def _policy(self, direction: int, detail: int) -> TraceStep:
        side = None
        if self.policy is not None:
            side = self.policy["ingress" if direction else "egress"]
        text = side["text"] if side is not None else ""
        return {
            "table": "policy",
            "chain": "ingress" if direction else "egress",
            "rule": None,
            "text": text,
            "matched": True,
        }

    def _policy_rule(self, row: int, matched: bool) -> TraceStep:
        from .policy_chains import ChainsProgram

        program = self.dp.policy
        assert isinstance(program, ChainsProgram)  # policy chain rows: the chains form
        chain, k, text = program.rule_at(row)
        return {"table": "filter", "chain": chain, "rule": k, "text": text, "matched": matched}

    # ---------------------------------------------------------------- eBPF
    def _bpf(self, which: int, matched: bool, extra: int, value: int) -> TraceStep:
        from .ebpf_backend import describe_step
        from .ebpf_lowering import LoweredEbpf

        assert isinstance(self.low, LoweredEbpf)  # bpf rows: ebpf mode
        chain, text = describe_step(self.low, self.row, which, matched, extra, value)
        return {"table": "bpf", "chain": chain, "rule": None, "text": text, "matched": matched}

    # ---------------------------------------------------------------- IPVS
    def _ipvs(self, kind: int, hook: int, matched: bool, extra: int, endpoint: int) -> TraceStep:
        from ..packets import u32_to_ip
        from .ipvs_backend import IpvsBackend

        backend = self.backend
        assert isinstance(backend, IpvsBackend)  # IPVS rows: ipvs mode
        result = IPVS_RESULTS[extra] if extra < len(IPVS_RESULTS) else "?"
        real = backend.endpoints[endpoint] if endpoint >= 0 else None
        row = self.row
        protocol = _PROTOCOLS.get(int(row["proto"]), str(int(row["proto"])))
        if kind == 3:
            # ip_vs_in sees the packet as sent: kube-proxy's IPVS-mode iptables rules never
            # DNAT, and conntrack leaves IPVS's packets to IPVS
            vaddr, vport = u32_to_ip(int(row["dst_ip"])), int(row["dst_port"])
            where = f"ip_vs_in at {IPVS_HOOKS.get(hook, HOOK_NAMES[hook])}"
            chain = IPVS_HOOKS.get(hook, HOOK_NAMES[hook])
        else:
            # a reply: the real server answers; the virtual server is the connection's
            vaddr, vport = "", 0
            real = real or f"{u32_to_ip(int(row['src_ip']))}:{int(row['src_port'])}"
            where, chain = "ip_vs_out (reply)", "POSTROUTING"
        vs = self._virtual_server(protocol, vaddr, vport) if kind == 3 else None
        if kind == 3:
            vs_text = f"{protocol} {vaddr}:{vport}"
            if vs is None:
                text = f"{where}: no virtual server {vs_text}: {result}"
            else:
                text = f"{where}: virtual server {vs_text} ({vs.scheduler}"
                text += f", {vs.service})" if vs.service else ")"
                text += f" -> real server {real}: {result}" if real else f": {result}"
        else:
            vs_text = None
            text = f"{where} from real server {real}: {result}"
        return {
            "table": "ipvs",
            "chain": chain,
            "rule": None,
            "text": text,
            "matched": matched,
            "virtual_server": vs_text if vs is not None else None,
            "real_server": real,
        }

    def _virtual_server(self, protocol: str, addr: str, port: int) -> Any:
        from .ipvs_backend import IpvsBackend

        backend = self.backend
        assert isinstance(backend, IpvsBackend)
        if backend.state is None:
            return None
        for vs in backend.state.virtual_servers:
            if vs.port == port and vs.address == addr and vs.protocol == protocol:
                return vs
        return None

    # ---------------------------------------------------------------- iptables
    def _prepare_iptables(self, rows: np.ndarray) -> None:
        from .iptables_backend import IptablesBackend
        from .ipvs_backend import IpvsBackend
        from .userspace_backend import UserspaceBackend

        backend = self.backend
        # chain VM rows: iptables mode, IPVS mode's iptables rules, the userspace mode's
        # (all lower to Lowered)
        assert isinstance(backend, (IptablesBackend, IpvsBackend, UserspaceBackend))
        low = cast("Lowered", self.low)
        starts = np.ascontiguousarray(low.chains["start"])
        cids = np.searchsorted(starts, rows, side="right") - 1
        self._ipt_chain = dict(zip(rows.tolist(), cids.tolist()))
        self._ipt_starts = starts
        wanted = {low.chain_names[c] for c in set(cids.tolist())}
        self._ipt_rules: dict[tuple[str, str], list[Rule]] = {w: [] for w in wanted}
        for name, table in backend.tables.tables.items():
            if not any(t == name for t, _ in wanted):
                continue
            for rule in table.rules:  # one pass per table, not per chain
                bucket = self._ipt_rules.get((name, rule.chain))
                if bucket is not None:
                    bucket.append(rule)
        self._opt_text: dict[Any, str] = {}  # options repeat across rules: render each once

    def _iptables(self, row: int, matched: bool) -> TraceStep:
        from ..netfilter.iptables_text import render_rule

        low = cast("Lowered", self.low)
        cid = self._ipt_chain[row]
        table, chain = low.chain_names[cid]
        k = row - int(self._ipt_starts[cid])
        rule = self._ipt_rules[(table, chain)][k]
        if matched:
            self.matched_rules.append(rule)
        return {
            "table": table,
            "chain": chain,
            "rule": k,
            "text": render_rule(rule, self._opt_text),
            "matched": matched,
        }

    # ---------------------------------------------------------------- nftables
    def _prepare_nft(self, pcs: np.ndarray) -> None:
        low = cast("LoweredNft", self.low)
        cids = np.searchsorted(low.chain_start, pcs, side="right") - 1
        firsts = np.searchsorted(low.rule_start, low.chain_start[cids])
        ks = np.searchsorted(low.rule_start, pcs) - firsts
        self._nft_at = {pc: (c, k) for pc, c, k in zip(pcs.tolist(), cids.tolist(), ks.tolist())}
        self._set_keys: dict[int, dict[tuple[int, int], Any]] = {}

    def _nft(self, pc: int, matched: bool, elem: int) -> TraceStep:
        from .nftables_backend import NftablesBackend

        backend = self.backend
        assert isinstance(backend, NftablesBackend)  # nft VM rows: nftables mode
        low = cast("LoweredNft", self.low)
        table = backend.table
        c, k = self._nft_at[pc]
        name = low.chain_names[c]
        step: TraceStep = {
            "table": f"{table.family} {table.name}",
            "chain": name,
            "rule": k,
            "text": table.chains[name].rules[k].full_text,
            "matched": matched,
        }
        if matched and elem >= 0:
            element = self._element(pc, elem)
            if element is not None:
                step["element"] = element
        return step

    def _element(self, pc: int, elem: int) -> str | None:
        """The verdict map element the engine found at position ``elem`` of the rule's map
        (a slot of a hash map, a range of an interval map, numgen's value)."""
        from .nft_lowering import SK_HASH, SK_INTERVAL, TYPE_BITS, E, _component
        from .nftables_backend import NftablesBackend

        low = cast("LoweredNft", self.low)
        for i in range(pc, int(low.exprs[pc]["next"])):
            e = low.exprs[i]
            if e["op"] == E["NUMGEN"]:
                cell = low.cells[int(e["set"]) + elem]
                return f"{elem} : {self._verdict(int(cell['vkind']), int(cell['vchain']))}"
            if e["op"] == E["VMAP"]:
                break
        else:
            return None
        idx = int(e["set"])
        s = low.sets[idx]
        name = low.set_names[idx]
        if int(s["kind"]) == SK_HASH:
            slot = low.slots[int(s["off"]) + elem]
            lo = hi = int(slot["key"])
            vk, vc = int(slot["vkind"]), int(slot["vchain"])
        elif int(s["kind"]) == SK_INTERVAL:
            iv = low.intervals[int(s["off"]) + elem]
            lo, hi = int(iv["lo"]), int(iv["hi"])
            vk, vc = int(iv["vkind"]), int(iv["vchain"])
        else:
            return None
        backend = self.backend
        assert isinstance(backend, NftablesBackend)  # nft VM rows: nftables mode
        nset = backend.table.sets.get(name)
        if nset is not None:  # a named map: its element as written, found by its packed key
            keys = self._set_keys.get(idx)
            if keys is None:
                keys = {}
                types = nset.key_types
                for el in nset.elements.values():
                    klo = khi = 0
                    for typ, part in zip(types, el.key):
                        a, b = _component(typ, part)
                        klo = (klo << TYPE_BITS[typ]) | a
                        khi = (khi << TYPE_BITS[typ]) | b
                    keys[(klo, khi)] = el
                self._set_keys[idx] = keys
            el = keys.get((lo, hi))
            if el is not None:
                return f"{' . '.join(el.key)} : {' '.join(el.value)}"
        return f"... : {self._verdict(vk, vc)}"  # an anonymous map: its verdict

    def _verdict(self, vkind: int, vchain: int) -> str:
        from .nft_lowering import VK

        low = cast("LoweredNft", self.low)
        word = next((w for w, v in VK.items() if v == vkind), "?")
        if vchain >= 0:
            c = int(np.searchsorted(low.chain_start, vchain, side="right")) - 1
            return f"{word} {low.chain_names[c]}"
        return word
