"""A pure-Python netfilter evaluator over the node's tables: the reference the Cython engine
will be checked against, and the tracer behind ``Dataplane.trace``.

It walks the node's hooks in the kernel's order for the first packet of a flow and follows
*every* branch of ``-m statistic --mode random`` (each with its probability), so one call
yields the whole distribution of outcomes. Rule semantics are iptables': all matches of a
rule must hold; ``-j CHAIN`` returns to the caller at the end of the chain or on RETURN;
``-g`` does not; built-in chains end in their policy; DNAT/SNAT/MASQUERADE/ACCEPT end the
table's traversal for that hook; MARK and LOG continue.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..errors import InputError
from ..netfilter.iptables_parse import RuleParts, rule_parts
from ..netfilter.iptables_text import render_rule
from ..netfilter.ruleset import BUILTIN_CHAINS, Rule, Ruleset

_IGNORED_MATCHES = ("comment", "nfacct", "limit", "pkttype")


@dataclass(frozen=True, slots=True)
class Flow:
    """The first packet of a flow as it enters the node."""

    src: str
    dst: str
    proto: str  # tcp, udp, sctp
    sport: int
    dport: int
    origin: str  # pod, external, host
    in_iface: str = ""  # "" : a default for the origin (cni0 for pods, eth0 outside)

    @classmethod
    def from_packet(cls, row) -> Flow:
        """The flow of a PACKET_DTYPE row (its origin already resolved)."""
        from ..packets import ORIGIN_NAMES, PROTO_NAMES, u32_to_ip

        return cls(
            str(u32_to_ip(int(row["src_ip"]))),
            str(u32_to_ip(int(row["dst_ip"]))),
            PROTO_NAMES[int(row["proto"])].lower(),
            int(row["src_port"]),
            int(row["dst_port"]),
            ORIGIN_NAMES[int(row["origin"])],
        )


@dataclass(slots=True)
class Branch:
    """One possible path of the packet, with its probability and what happened on it."""

    prob: float = 1.0
    dst: str = ""
    dport: int = 0
    dnat: str | None = None
    snat: bool = False  # masqueraded (or SNATed)
    mark: int = 0
    verdict: str | None = None  # ACCEPT, DROP, REJECT (filter decision by a rule)
    decided_by_rule: bool = False
    # (table, chain, rule index or None for a lookup step such as IPVS, text, matched)
    steps: list[tuple[str, str, int | None, str, bool]] = field(default_factory=list)
    rules_evaluated: int = 0
    ipvs: tuple[str, int, str] | None = None  # IPVS sent it on: (vaddr, vport, vproto)
    lookups: int = 0  # set and IPVS lookups

    def copy(self) -> Branch:
        return replace(self, steps=list(self.steps))


class _Lowered:
    __slots__ = ("index", "parts", "rule", "text")

    def __init__(self, rule: Rule, parts: RuleParts, index: int):
        self.rule, self.parts, self.index = rule, parts, index
        self.text = render_rule(rule)


class ReferenceEvaluator:
    def __init__(
        self,
        tables: Ruleset,
        local_ips: Iterable[str],
        family: str = "IPv4",
        ipsets: dict | None = None,
    ):
        """``ipsets``: the sets ``-m set`` names (vstable.IPSet by name, IPv4)."""
        self.family = family
        self.ipsets = ipsets or {}
        self.local_nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
        self.local_ips = {ipaddress.ip_address(ip) for ip in local_ips}
        self.chains: dict[tuple[str, str], list[_Lowered]] = {}
        self.policies: dict[tuple[str, str], str] = {}
        for tname, table in tables.tables.items():
            for cname, chain in table.chains.items():
                self.chains[(tname, cname)] = []
                self.policies[(tname, cname)] = chain.policy
            counters: dict[str, int] = {}
            for rule in table.rules:
                parts = rule_parts(rule, family)
                if parts is None:
                    continue  # an opaque rule never matches
                index = counters.get(rule.chain, 0)
                counters[rule.chain] = index + 1
                self.chains.setdefault((tname, rule.chain), []).append(_Lowered(rule, parts, index))

    # ------------------------------------------------------------------ matches
    def _is_local(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return addr in self.local_ips or any(
            addr in n for n in self.local_nets if n.version == addr.version
        )

    @staticmethod
    def _in(ip: str, spec: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in ipaddress.ip_network(part, strict=False) for part in spec.split(","))

    def _match(
        self,
        low: _Lowered,
        flow: Flow,
        b: Branch,
        src: str,
        ctstate: set[str],
        iface_in: str,
        iface_out: str,
    ) -> float | None:
        """Probability that the rule matches (1.0 or 0.0, or p for statistic); None = no."""
        prob = 1.0
        for flag, opt in low.parts.basic:
            if flag == "-f":
                # second and later fragments only; packets here are whole (conntrack's
                # defrag reassembles before any table runs): never, so ``! -f`` always
                if not opt.negated:
                    return None
                continue
            value = opt.args[0]
            if flag == "-s":
                ok = self._in(src, value)
            elif flag == "-d":
                ok = self._in(b.dst, value)
            elif flag == "-p":
                ok = value.lower() in ("all", "0") or value.lower() == flow.proto
            elif flag in ("-i", "-o"):
                iface = iface_in if flag == "-i" else iface_out
                ok = iface.startswith(value[:-1]) if value.endswith("+") else iface == value
            else:
                raise InputError("match not supported by the evaluator", field=low.text, value=flag)
            if ok == opt.negated:
                return None
        for m in low.parts.matches:
            for name, opt in m.opts:
                ok = self._module_option(m.name, name, opt, flow, b, src, ctstate)
                if ok is None:
                    continue
                if isinstance(ok, float):
                    prob *= ok
                    continue
                if ok == opt.negated:
                    return None
        return prob

    def _module_option(
        self, module: str, name: str, opt, flow: Flow, b: Branch, src: str, ctstate: set[str]
    ):
        args = opt.args
        if module in _IGNORED_MATCHES:
            return None
        if module in ("tcp", "udp", "sctp"):
            if name in ("--dport", "--destination-port"):
                return _port_in(b.dport, args[0])
            if name in ("--sport", "--source-port"):
                return _port_in(flow.sport, args[0])
            return None  # --tcp-flags/--syn: a first packet (SYN) is assumed
        if module == "multiport":
            ports = args[0].split(",")
            if name in ("--dports", "--destination-ports"):
                return any(_port_in(b.dport, p) for p in ports)
            if name in ("--sports", "--source-ports"):
                return any(_port_in(flow.sport, p) for p in ports)
            return any(_port_in(b.dport, p) or _port_in(flow.sport, p) for p in ports)
        if module == "mark":
            value, _, mask = args[0].partition("/")
            mask_i = int(mask, 0) if mask else 0xFFFFFFFF
            return (b.mark & mask_i) == int(value, 0)
        if module == "addrtype":
            if name == "--src-type":
                return "LOCAL" in args[0].split(",") and self._is_local(src)
            if name == "--dst-type":
                return "LOCAL" in args[0].split(",") and self._is_local(b.dst)
            return None
        if module == "statistic":
            if name == "--probability":
                return float(args[0])
            if name == "--every":
                return 1.0 / int(args[0])
            return None
        if module == "recent":
            if name in ("--rcheck", "--update"):
                return False  # no affinity entry exists for a new flow's first packet
            return None
        if module in ("conntrack", "state"):
            if name in ("--ctstate", "--state"):
                return bool(set(args[0].split(",")) & ctstate)
            return None
        if module == "physdev":
            if name == "--physdev-is-in":  # pods enter through a port of the cni0 bridge
                return flow.origin == "pod"
            return None
        if module == "set" and name == "--match-set":
            return self._set_test(args[0], args[1], flow, b, src)
        if module == "ipvs":
            if name == "--ipvs":
                return b.ipvs is not None
            if b.ipvs is None:  # every other option needs an IPVS packet, negated or not
                return opt.negated
            vaddr, vport, vproto = b.ipvs
            if name == "--vaddr":
                return self._in(vaddr, args[0])
            if name == "--vport":
                return vport == int(args[0])
            if name == "--vproto":
                return vproto == args[0].lower()
            raise InputError("match not supported by the evaluator", field=module, value=name)
        raise InputError("match not supported by the evaluator", field=module, value=name)

    def _set_test(self, name: str, dirs: str, flow: Flow, b: Branch, src: str) -> bool:
        from ..packets import PROTO_NUMBERS, empty_packets, ip_to_u32

        ipset = self.ipsets.get(name)
        if ipset is None:
            raise InputError(
                "the rules name an ipset that does not exist", field="--match-set", value=name
            )
        pkt = empty_packets(1)
        pkt["src_ip"], pkt["dst_ip"] = ip_to_u32(src), ip_to_u32(b.dst)
        pkt["src_port"], pkt["dst_port"] = flow.sport, b.dport
        pkt["proto"] = PROTO_NUMBERS[flow.proto]
        b.lookups += 1
        return bool(ipset.test(pkt, dirs)[0])

    # ------------------------------------------------------------------ chains
    def run_chain(
        self,
        table: str,
        chain: str,
        flow: Flow,
        branches: list[Branch],
        src: str,
        ctstate: set[str],
        iface_in: str,
        iface_out: str,
        depth: int = 0,
    ) -> tuple[list[Branch], list[Branch]]:
        """Run one chain for every live branch: (returned/fell through, ended here)."""
        if depth > 64:
            raise InputError("chain nesting deeper than 64 (a jump loop?)", field=chain)
        live, done, returned = branches, [], []
        for low in self.chains.get((table, chain), []):
            next_live: list[Branch] = []
            for b in live:
                b.rules_evaluated += 1
                p = self._match(low, flow, b, src, ctstate, iface_in, iface_out)
                if p is None or p <= 0.0:
                    b.steps.append((table, chain, low.index, low.text, False))
                    next_live.append(b)
                    continue
                if p < 1.0:  # statistic: the packet takes this rule with probability p
                    miss = b.copy()
                    miss.prob *= 1.0 - p
                    miss.steps.append((table, chain, low.index, low.text, False))
                    next_live.append(miss)
                    b.prob *= p
                b.steps.append((table, chain, low.index, low.text, True))
                cont, ended, back = self._target(
                    low, table, flow, b, src, ctstate, iface_in, iface_out, depth
                )
                next_live.extend(cont)
                done.extend(ended)
                returned.extend(back)
            live = next_live
            if not live:
                break
        live = live + returned
        if chain in BUILTIN_CHAINS.get(table, ()) and live:
            policy = self.policies.get((table, chain), "ACCEPT")
            for b in live:
                if policy in ("DROP", "REJECT") and b.verdict is None:
                    b.verdict, b.decided_by_rule = policy, False
            return [], done + live
        return live, done

    def _target(
        self,
        low: _Lowered,
        table: str,
        flow: Flow,
        b: Branch,
        src: str,
        ctstate: set[str],
        iface_in: str,
        iface_out: str,
        depth: int,
    ):
        parts = low.parts
        target = parts.target
        if target is None or target in ("LOG", "NFLOG", "TRACE"):
            return [b], [], []
        topts = {name: opt.args for name, opt in parts.target_opts}
        if target in ("ACCEPT", "DROP", "REJECT"):
            b.verdict, b.decided_by_rule = target, True
            return [], [b], []
        if target == "RETURN":
            return [], [], [b]
        if target == "MARK":
            b.mark = _apply_mark(b.mark, topts)
            return [b], [], []
        if target == "DNAT":
            dest = topts.get("--to-destination", ("",))[0]
            ip, _, port = dest.rpartition(":") if dest.count(":") == 1 else (dest, "", "")
            b.dnat = dest
            b.dst = ip or dest
            if port:
                b.dport = int(port)
            return [], [b], []
        if target in ("MASQUERADE", "SNAT"):
            b.snat = True
            return [], [b], []
        if parts.target_kind == "chain":
            cont, ended = self.run_chain(
                table, target, flow, [b], src, ctstate, iface_in, iface_out, depth + 1
            )
            if parts.goto:  # -g: the end of the called chain returns past this one
                return [], ended, cont
            return cont, ended, []
        raise InputError("target not supported by the evaluator", field=low.text, value=target)


def _port_in(port: int, spec: str) -> bool:
    low, sep, high = spec.partition(":")
    if not sep:
        return port == int(spec)
    return int(low or 0) <= port <= int(high or 65535)


def _apply_mark(mark: int, topts: dict[str, tuple[str, ...]]) -> int:
    def num(text: str) -> int:
        return int(text, 0)

    if "--set-xmark" in topts or "--set-mark" in topts:
        text = (topts.get("--set-xmark") or topts["--set-mark"])[0]
        value, _, mask = text.partition("/")
        m = num(mask) if mask else 0xFFFFFFFF
        if "--set-xmark" in topts:
            return (mark & ~m & 0xFFFFFFFF) ^ num(value)
        return (mark & ~m & 0xFFFFFFFF) | num(value)
    if "--or-mark" in topts:
        return mark | num(topts["--or-mark"][0])
    if "--xor-mark" in topts:
        return mark ^ num(topts["--xor-mark"][0])
    if "--and-mark" in topts:
        return mark & num(topts["--and-mark"][0])
    return mark


@dataclass
class Outcome:
    """Every way the first packet of a flow can go, with probabilities."""

    branches: list[Branch]

    @property
    def candidates(self) -> list[tuple[str, float, bool]]:
        """(endpoint, probability, masqueraded) per DNAT destination, in rule order."""
        out: dict[str, list] = {}
        for b in self.branches:
            if b.dnat and b.verdict in (None, "ACCEPT"):
                entry = out.setdefault(b.dnat, [b.dnat, 0.0, False])
                entry[1] += b.prob
                entry[2] = entry[2] or b.snat
        return [tuple(v) for v in out.values()]

    @property
    def masquerade(self) -> bool:
        return any(b.snat for b in self.branches)

    def kube_proxy_output(self) -> str:
        """The form kube-proxy's packet-flow tests state: every DNAT destination joined
        with ", ", else the verdict a rule gave (ACCEPT/DROP/REJECT), else ""."""
        if any(b.dnat for b in self.branches):
            return ", ".join(c[0] for c in self.candidates)
        for verdict in ("REJECT", "DROP", "ACCEPT"):
            if any(b.verdict == verdict and b.decided_by_rule for b in self.branches):
                return verdict
        return ""


def evaluate_new_flow(ev: ReferenceEvaluator, flow: Flow) -> Outcome:
    """The node's hooks for a flow's first packet, in the kernel's order.

    From a pod or outside: nat PREROUTING, routing (a local destination goes to filter
    INPUT, anything else to filter FORWARD then nat POSTROUTING). From the host: nat OUTPUT,
    filter OUTPUT, nat POSTROUTING, then filter INPUT when the destination is local.
    """
    iface_in = flow.in_iface or {"pod": "cni0", "external": "eth0"}.get(flow.origin, "lo")
    start = Branch(dst=flow.dst, dport=flow.dport)
    new = {"NEW"}
    finished: list[Branch] = []

    def run(table: str, chain: str, branches: list[Branch], iface_out: str = "") -> list[Branch]:
        """Run a hook chain; branches that the filter table dropped are finished."""
        live: list[Branch] = []
        for b in branches:
            if (table, chain) not in ev.chains:
                live.append(b)
                continue
            state = new | ({"DNAT"} if b.dnat else set())
            # an ACCEPT ends only its own hook's chain: the next hook still runs, with
            # its policy; the verdict is kept for the report if nothing else decides
            accepted = b.verdict == "ACCEPT"
            if accepted:
                b.verdict = None
            cont, ended = ev.run_chain(
                table,
                chain,
                flow,
                [b],
                flow.src,
                state,
                iface_in if flow.origin != "host" else "",
                iface_out,
            )
            for x in cont + ended:
                if accepted and x.verdict is None:
                    x.verdict = "ACCEPT"
                (finished if x.verdict in ("DROP", "REJECT") else live).append(x)
        return live

    if flow.origin == "host":
        live = run("nat", "OUTPUT", [start], iface_out="eth0")
        live = run("filter", "OUTPUT", live, iface_out="eth0")
        live = run("nat", "POSTROUTING", live, iface_out="eth0")
        local = [b for b in live if ev._is_local(b.dst)]
        remote = [b for b in live if not ev._is_local(b.dst)]
        finished += run("filter", "INPUT", local) + remote
    else:
        live = run("nat", "PREROUTING", [start])
        local = [b for b in live if ev._is_local(b.dst)]
        remote = [b for b in live if not ev._is_local(b.dst)]
        finished += run("filter", "INPUT", local)
        remote = run("filter", "FORWARD", remote, iface_out="eth0")
        finished += run("nat", "POSTROUTING", remote, iface_out="eth0")
    return Outcome(finished)
