"""Ruleset: iptables tables, chains and rules as data.

A rule is the ordered list of its options, exactly as written after ``-A CHAIN``: module
loads (``-m tcp``), matches (``-d 1.2.3.4``, ``! -s 10.0.0.0/8``, ``--dport 80``) and the
target with its options (``-j DNAT --to-destination 10.0.0.1:80``). Keeping the order is what
lets kube-proxy's text, and a real node's ``iptables-save``, be reproduced token for token;
the engine's lowering interprets the options knowing which module each belongs to.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TARGET_FLAGS = ("-j", "-g")


class Opt(NamedTuple):
    """One option: ``[!] flag [args...]``; ``-m NAME`` and ``-j TARGET`` are options too.

    A NamedTuple, not a dataclass: a 100,000-service ruleset has tens of millions of them."""

    flag: str
    args: tuple[str, ...] = ()
    negated: bool = False


@dataclass(slots=True)
class Rule:
    chain: str
    opts: tuple[Opt, ...]

    @property
    def target(self) -> str | None:
        """The ``-j``/``-g`` target, or None for a rule that only counts."""
        for opt in self.opts:
            if opt.flag in TARGET_FLAGS:
                return opt.args[0]
        return None

    @property
    def is_goto(self) -> bool:
        return any(opt.flag == "-g" for opt in self.opts)

    def value(self, flag: str) -> str | None:
        """First argument of the first option with this flag (e.g. ``--comment``)."""
        for opt in self.opts:
            if opt.flag == flag:
                return opt.args[0] if opt.args else ""
        return None

    @property
    def comment(self) -> str | None:
        return self.value("--comment")


@dataclass(slots=True)
class Chain:
    name: str
    policy: str = "-"  # built-in chains: ACCEPT or DROP
    packets: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Table:
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)  # declaration order
    rules: list[Rule] = field(default_factory=list)  # write order, chains interleaved
    deleted: list[str] = field(default_factory=list)  # chains removed with -X

    def declare(self, name: str, policy: str = "-") -> Chain:
        chain = self.chains.get(name)
        if chain is None:
            chain = self.chains[name] = Chain(name, policy)
        return chain

    def append(self, chain: str, *opts: Opt) -> Rule:
        rule = Rule(chain, opts)
        self.rules.append(rule)
        return rule

    def chain_rules(self, name: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == name]


@dataclass(slots=True)
class Ruleset:
    """Tables in write order (kube-proxy writes filter, then nat)."""

    tables: dict[str, Table] = field(default_factory=dict)
    family: str = "IPv4"

    def table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = Table(name)
        return table


def jump_loop(jumps: Mapping[K, Iterable[K]]) -> list[K] | None:
    """A loop in a chain graph (chain -> the chains it jumps or goes to, in the order to
    search), as the chains on it with the first one again at the end, or None. The kernel
    refuses a table with one (ELOOP); its last edge is the jump that closes it."""
    state: dict[K, int] = {}  # 1: on the path, 2: done
    for root in jumps:
        if root in state:
            continue
        path, stack = [root], [iter(jumps[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(jumps.get(nxt, ())))
    return None
