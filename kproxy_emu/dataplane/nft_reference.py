"""A pure-Python evaluator of an nftables table for the first packet of a flow: the
reference a compiled nft engine will be checked against, and the tracer behind
``Dataplane.trace`` in the nftables mode.

Base chains run in the kernel's order (by hook, then priority: filter-prerouting-pre-dnat at
-110 before nat-prerouting at -100, ...). Rule semantics are nftables': every match of a
rule must hold; ``vmap`` looks the key up and applies the element's verdict (no element: the
rule does not match); ``numgen random mod N vmap`` takes *every* listed branch with
probability 1/N, so one call yields the whole distribution; ``jump`` returns to the next
rule, ``goto`` returns to the caller's caller; ``accept`` and NAT statements end the base
chain (the next base chain of the hook still runs); ``drop``/``reject`` end the packet.
Dynamic sets (affinity) are empty for a first packet. Result shapes are those of
``reference.py`` (Flow in, Outcome of Branches out) so both modes trace the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from ..errors import InputError
from ..netfilter.nft import Match, NftRuleset, NftSet, parse_rule
from .reference import Branch, Flow, Outcome

_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}
_HOOK_ORDER_FORWARDED = ("prerouting", "forward", "postrouting")


@dataclass(slots=True)
class NftBranch(Branch):
    """A Branch plus the set/map lookups it made (nftables' cost is lookups, not rules)."""

    lookups: int = 0


class _Rule:
    __slots__ = ("index", "items", "text")

    def __init__(self, items, text: str, index: int):
        self.items, self.text, self.index = items, text, index


class _SetIndex:
    """A set or map ready for lookups: exact keys in a dict, interval keys scanned."""

    __slots__ = ("dynamic", "exact", "ranges", "set")

    def __init__(self, s: NftSet):
        self.set = s
        self.dynamic = "dynamic" in s.flags
        self.exact: dict[tuple, tuple[str, ...]] = {}
        self.ranges: list[tuple[tuple, tuple[str, ...]]] = []
        for key, elem in s.elements.items():
            norm = tuple(_norm_value(t, k) for t, k in zip(s.key_types, key))
            if any(isinstance(x, tuple) for x in norm):
                self.ranges.append((norm, elem.value))
            else:
                self.exact[norm] = elem.value

    def lookup(self, key: tuple) -> tuple[str, ...] | None:
        if self.dynamic:
            return None  # nothing recorded yet for a flow's first packet
        found = self.exact.get(key)
        if found is not None:
            return found
        for norm, value in self.ranges:
            if all(_in_range(k, n) for k, n in zip(key, norm)):
                return value
        return None


def _norm_value(typ: str, text: str):
    """A key component as an int (or an (lo, hi) interval): addresses, protocols, ports."""
    text = text.strip()
    if typ == "ipv4_addr" or (
        ("." in text or "/" in text) and typ not in ("inet_proto", "inet_service")
    ):
        if "/" in text:
            net = ipaddress.IPv4Network(text, strict=False)
            return (int(net.network_address), int(net.broadcast_address))
        if "-" in text:
            lo, hi = text.split("-")
            return (int(ipaddress.IPv4Address(lo)), int(ipaddress.IPv4Address(hi)))
        return int(ipaddress.IPv4Address(text))
    if typ == "inet_proto":
        return _PROTOS.get(text) if not text.isdigit() else int(text)
    if "-" in text:
        lo, hi = text.split("-")
        return (int(lo, 0), int(hi, 0))
    return int(text, 0)


def _supported(sel: tuple[str, ...]) -> bool:
    if sel in (
        ("ip", "saddr"),
        ("ip", "daddr"),
        ("ip", "protocol"),
        ("meta", "l4proto"),
        ("th", "dport"),
        ("th", "sport"),
        ("meta", "mark"),
        ("ct", "state"),
        ("fib", "saddr", "type"),
        ("fib", "daddr", "type"),
    ):
        return True
    if sel[0] in _PROTOS and sel[1:] in (("dport",), ("sport",)):
        return True
    if sel[0] == "meta" and sel[1] in ("iifname", "oifname", "iif", "oif"):
        return True
    return sel[:3] == ("numgen", "random", "mod") and len(sel) == 4 and sel[3].isdigit()


def _in_range(value, norm) -> bool:
    return norm[0] <= value <= norm[1] if isinstance(norm, tuple) else value == norm


class NftEvaluator:
    def __init__(self, table: NftRuleset, local_ips: Iterable[str], family: str = "IPv4"):
        if family != "IPv4":
            raise InputError(
                "the nftables evaluator handles IPv4 only", field="family", value=family
            )
        self.table = table
        self.label = f"{table.family} {table.name}"
        self.local_ips = {int(ipaddress.IPv4Address(ip)) for ip in local_ips if ":" not in ip}
        self.chains: dict[str, list[_Rule]] = {}
        for name, chain in table.chains.items():
            rules = []
            for i, r in enumerate(chain.rules):
                items, _ = parse_rule(r.full_text)
                for it in items:
                    if isinstance(it, Match) and not all(_supported(s) for s in it.selectors):
                        raise InputError(
                            "match not supported by the nftables evaluator",
                            field=f"chain {name} rule {i}",
                            value=r.full_text,
                        )
                rules.append(_Rule(items, r.full_text, i))
            self.chains[name] = rules
        self.sets = {name: _SetIndex(s) for name, s in table.sets.items()}
        self.hooks: dict[str, list[str]] = {}
        for c in sorted(
            (c for c in table.chains.values() if c.is_base), key=lambda c: c.priority or 0
        ):
            self.hooks.setdefault(c.hook or "", []).append(c.name)

    # ------------------------------------------------------------------ matches
    def is_local(self, ip: str) -> bool:
        v = int(ipaddress.IPv4Address(ip))
        return v in self.local_ips or (v >> 24) == 127

    def _selector(self, sel: tuple[str, ...], b: NftBranch, flow: Flow):
        """The packet's value for a selector, as an int (or str for names)."""
        if sel in (("ip", "saddr"),):
            return int(ipaddress.IPv4Address(flow.src))
        if sel == ("ip", "daddr"):
            return int(ipaddress.IPv4Address(b.dst))
        if sel == ("meta", "l4proto") or sel == ("ip", "protocol"):
            return _PROTOS[flow.proto]
        if sel in (("th", "dport"),) or (sel[1:] == ("dport",) and sel[0] in _PROTOS):
            return b.dport
        if sel in (("th", "sport"),) or (sel[1:] == ("sport",) and sel[0] in _PROTOS):
            return flow.sport
        if sel == ("meta", "mark"):
            return b.mark
        raise InputError("selector not supported by the nftables evaluator", value=" ".join(sel))

    def _key(self, m: Match, b: NftBranch, flow: Flow) -> tuple:
        return tuple(self._selector(s, b, flow) for s in m.selectors)

    def _match(self, m: Match, b: NftBranch, flow: Flow, iface_in: str, iface_out: str) -> bool:
        sel = m.selectors[0]
        if len(m.selectors) == 1 and sel[0] in _PROTOS and sel[1] in ("dport", "sport"):
            if _PROTOS[flow.proto] != _PROTOS[sel[0]]:  # "tcp dport" implies l4proto tcp
                return False
        if m.set_name is not None:
            idx = self.sets.get(m.set_name)
            if idx is None:
                raise InputError("rule uses a set the table lacks", value=m.set_name)
            b.lookups += 1
            hit = idx.lookup(self._key(m, b, flow)) is not None
            return hit if m.op == "==" else not hit
        if len(m.selectors) == 1 and sel[0] == "fib":
            addr = flow.src if sel[1] == "saddr" else b.dst
            if any(v != "local" for v in m.values):
                raise InputError(
                    "fib type not supported by the nftables evaluator", value=",".join(m.values)
                )
            return self.is_local(addr) == (m.op == "==")
        if sel == ("ct", "state"):
            states = {s for v in m.values for s in v.split(",")}
            return ("new" in states) == (m.op == "==")  # a flow's first packet is new
        if sel[0] == "meta" and sel[1] in ("iifname", "oifname", "iif", "oif"):
            iface = iface_in if sel[1] in ("iifname", "iif") else iface_out
            hit = any(
                iface.startswith(v.strip('"')[:-1])
                if v.strip('"').endswith("*")
                else iface == v.strip('"')
                for v in m.values
            )
            return hit == (m.op == "==")
        if len(m.selectors) != 1:
            raise InputError(
                "concatenation without a set is not supported",
                value=" . ".join(" ".join(s) for s in m.selectors),
            )
        value = self._selector(sel, b, flow)
        if m.mask is not None:
            value &= int(m.mask, 0)
        types: dict[tuple[str, ...], str] = {
            ("ip", "saddr"): "ipv4_addr",
            ("ip", "daddr"): "ipv4_addr",
            ("meta", "l4proto"): "inet_proto",
        }
        typ = types.get(sel, "integer")
        hit = any(_in_range(value, _norm_value(typ, v)) for v in m.values)
        return hit == (m.op == "==")

    # ------------------------------------------------------------------ chains
    def run_chain(
        self,
        chain: str,
        flow: Flow,
        branches: list[NftBranch],
        iface_in: str,
        iface_out: str,
        depth: int = 0,
    ) -> tuple[list[NftBranch], list[NftBranch]]:
        """Run a chain for every live branch: (fell through or returned, ended here)."""
        if depth > 64:
            raise InputError("chain nesting deeper than 64 (a jump loop?)", field=chain)
        rules = self.chains.get(chain)
        if rules is None:
            raise InputError("jump to a chain the table lacks", value=chain)
        live, done, returned = branches, [], []
        for rule in rules:
            next_live: list[NftBranch] = []
            for b in live:
                cont, ended, back = self._run_rule(rule, chain, flow, b, iface_in, iface_out, depth)
                next_live += cont
                done += ended
                returned += back
            live = next_live
            if not live:
                break
        return live + returned, done

    def _step(self, b: NftBranch, chain: str, rule: _Rule, matched: bool) -> None:
        b.rules_evaluated += 1
        b.steps.append((self.label, chain, rule.index, rule.text, matched))

    def _run_rule(
        self,
        rule: _Rule,
        chain: str,
        flow: Flow,
        b: NftBranch,
        iface_in: str,
        iface_out: str,
        depth: int,
    ):
        items = rule.items
        k = 0
        while k < len(items) and isinstance(items[k], Match) and not items[k].is_vmap:
            if not self._match(items[k], b, flow, iface_in, iface_out):
                self._step(b, chain, rule, False)
                return [b], [], []
            k += 1
        if k < len(items) and isinstance(items[k], Match):  # a verdict map
            choices = self._vmap_choices(items[k], b, flow)
            if not choices:
                self._step(b, chain, rule, False)
                return [b], [], []
            cont, ended, back = [], [], []
            missed = 1.0 - sum(p for p, _ in choices)
            if missed > 1e-12:  # numgen values without an element: the rule does not match
                miss = cast(NftBranch, b.copy())
                miss.prob *= missed
                self._step(miss, chain, rule, False)
                cont.append(miss)
            self._step(b, chain, rule, True)
            for prob, verdict in choices:
                bb = b if len(choices) == 1 else cast(NftBranch, b.copy())
                bb.prob *= prob
                c, e, r = self._verdict(verdict.split(), flow, bb, iface_in, iface_out, depth)
                cont += c
                ended += e
                back += r
            return cont, ended, back
        self._step(b, chain, rule, True)
        for it in items[k:]:
            if isinstance(it, Match):
                if not self._match(it, b, flow, iface_in, iface_out):
                    return [b], [], []
                continue
            kind = it.kind
            if kind == "mark_set":
                op, value = it.arg  # type: ignore[misc]
                v = int(value, 0)
                b.mark = {"or": b.mark | v, "xor": b.mark ^ v, "and": b.mark & v}.get(op, v)
            elif kind in ("set_update", "counter", "log", "notrack"):
                continue
            elif kind == "dnat":
                dest = str(it.arg)
                ip, _, port = dest.rpartition(":")
                b.dnat, b.dst = dest, ip
                b.dport = int(port)
                return [], [b], []
            elif kind in ("masquerade", "snat"):
                b.snat = True
                return [], [b], []
            else:
                return self._verdict(
                    [kind] + ([str(it.arg)] if it.arg else []), flow, b, iface_in, iface_out, depth
                )
        return [b], [], []

    def _vmap_choices(self, m: Match, b: NftBranch, flow: Flow) -> list[tuple[float, str]]:
        sel = m.selectors[0]
        if sel[0] == "numgen":
            if sel[1] != "random":
                raise InputError("only numgen random is supported", value=" ".join(sel))
            n = int(sel[3])
            table = m.vmap or {}
            b.lookups += 1
            return [(1.0 / n, table[str(i)]) for i in range(n) if str(i) in table]
        b.lookups += 1
        key = self._key(m, b, flow)
        if m.set_name is not None:
            idx = self.sets.get(m.set_name)
            if idx is None:
                raise InputError("rule uses a map the table lacks", value=m.set_name)
            found = idx.lookup(key)
            return [(1.0, " ".join(found))] if found is not None else []
        types = [
            "ipv4_addr" if s[0] == "ip" else "inet_proto" if s == ("meta", "l4proto") else "integer"
            for s in m.selectors
        ]
        for text, verdict in (m.vmap or {}).items():
            parts = text.split(" . ")
            if all(_in_range(k, _norm_value(t, p)) for k, t, p in zip(key, types, parts)):
                return [(1.0, verdict)]
        return []

    def _verdict(
        self, words: list[str], flow: Flow, b: NftBranch, iface_in: str, iface_out: str, depth: int
    ):
        kind = words[0]
        if kind in ("drop", "reject"):
            b.verdict, b.decided_by_rule = kind.upper(), True
            return [], [b], []
        if kind == "accept":
            b.verdict, b.decided_by_rule = "ACCEPT", True
            return [], [b], []
        if kind == "return":
            return [], [], [b]
        if kind == "continue":
            return [b], [], []
        if kind in ("jump", "goto"):
            cont, ended = self.run_chain(words[1], flow, [b], iface_in, iface_out, depth + 1)
            return ([], ended, cont) if kind == "goto" else (cont, ended, [])
        raise InputError("verdict not supported by the nftables evaluator", value=" ".join(words))


def evaluate_nft_flow(ev: NftEvaluator, flow: Flow) -> Outcome:
    """The node's hooks for a flow's first packet, in the kernel's order.

    From a pod or outside: prerouting (filter -110, nat -100), routing on the (translated)
    destination, then input, or forward and postrouting. From the host: output (-110, nat
    -100, filter 0), postrouting, then input when the destination is local.
    """
    iface_in = flow.in_iface or {"pod": "cni0", "external": "eth0"}.get(flow.origin, "lo")
    start = NftBranch(dst=flow.dst, dport=flow.dport)
    finished: list[Branch] = []

    def hook(name: str, branches: list[NftBranch], iface_out: str = "") -> list[NftBranch]:
        live = branches
        for chain in ev.hooks.get(name, ()):
            next_live: list[NftBranch] = []
            for b in live:
                cont, ended = ev.run_chain(
                    chain, flow, [b], iface_in if flow.origin != "host" else "", iface_out
                )
                for x in cont + ended:
                    (finished if x.verdict in ("DROP", "REJECT") else next_live).append(x)
            live = next_live
        return live

    if flow.origin == "host":
        live = hook("output", [start], "eth0")
        live = hook("postrouting", live, "eth0")
        local = [b for b in live if ev.is_local(b.dst)]
        finished += [b for b in live if not ev.is_local(b.dst)]
        finished += hook("input", local)
    else:
        live = hook("prerouting", [start])
        local = [b for b in live if ev.is_local(b.dst)]
        remote = [b for b in live if not ev.is_local(b.dst)]
        finished += hook("input", local)
        remote = hook("forward", remote, "eth0")
        finished += hook("postrouting", remote, "eth0")
    return Outcome(finished)
