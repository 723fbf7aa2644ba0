"""The node's iptables state and ``iptables-restore --noflush`` applied to it.

Semantics as the kernel and iptables-restore give them: each table commits atomically; a
declared chain is created or flushed; ``-X`` fails for a chain that does not exist or that a
rule still jumps to; a jump to a chain that does not exist fails the table. On failure
nothing changes (kube-proxy then needs a full sync).
"""

from __future__ import annotations

from collections.abc import Container

from ..errors import KproxyError
from .iptables_parse import TARGETS
from .ruleset import BUILTIN_CHAINS, Chain, Opt, Rule, Ruleset, Table

# verdicts and target extensions: any other -j name must be a chain of the table
BUILTIN_TARGETS = frozenset(("ACCEPT", "DROP", "RETURN", "QUEUE")) | frozenset(
    name for family in TARGETS.values() for name in family
)


class RestoreError(KproxyError):
    """iptables-restore would fail on this input (the node's tables are unchanged)."""


def _apply_table(current: Table | None, payload: Table) -> Table:
    name = payload.name
    chains = dict(current.chains) if current else {}
    for builtin in BUILTIN_CHAINS.get(name, ()):
        chains.setdefault(builtin, payload.chains.get(builtin) or _builtin(builtin))
    flushed = set(payload.chains)
    rules = [r for r in (current.rules if current else []) if r.chain not in flushed]
    for chain_name, chain in payload.chains.items():
        chains[chain_name] = chain
    rules.extend(payload.rules)
    for chain_name in payload.deleted:
        if chain_name not in chains:
            raise RestoreError(f"table {name}: -X {chain_name}: no chain by that name")
        users = [r for r in rules if r.target == chain_name]
        if users:
            raise RestoreError(
                f"table {name}: -X {chain_name}: chain is still referenced "
                f"(by a rule in {users[0].chain})"
            )
        if any(r.chain == chain_name for r in rules):
            raise RestoreError(f"table {name}: -X {chain_name}: chain is not empty")
        del chains[chain_name]
    for rule in rules:
        if rule.chain not in chains:
            raise RestoreError(f"table {name}: rule for chain {rule.chain} that does not exist")
        target = rule.target
        if target and target not in BUILTIN_TARGETS and target not in chains:
            raise RestoreError(f"table {name}: jump to chain {target} that does not exist")
    return Table(name, chains, rules, [])


def _builtin(name: str) -> Chain:
    return Chain(name, "ACCEPT")


def apply_restore(state: Ruleset, payload: Ruleset) -> None:
    """Apply restore input to the node's tables (``--noflush``); RestoreError on failure."""
    new_tables = {
        name: _apply_table(state.tables.get(name), table) for name, table in payload.tables.items()
    }
    state.tables.update(new_tables)  # only once every table committed


def ensure_chain(state: Ruleset, table: str, chain: str) -> None:
    """kube-proxy's EnsureChain: create the chain if the table lacks it."""
    t = state.table(table)
    if chain not in t.chains:
        t.chains[chain] = (
            _builtin(chain) if chain in BUILTIN_CHAINS.get(table, ()) else Chain(chain)
        )


def ensure_rule(state: Ruleset, table: str, chain: str, opts: tuple[Opt, ...]) -> bool:
    """``iptables -C`` then ``-I chain 1`` (kube-proxy's EnsureRule Prepend). True if added."""
    ensure_chain(state, table, chain)
    t = state.tables[table]
    if any(r.chain == chain and r.opts == opts for r in t.rules):
        return False
    t.rules.insert(0, Rule(chain, opts))
    return True


def _rule_target(rule: Rule) -> str | None:
    """Rule.target, scanning from the end (the target sits last or nearly)."""
    for opt in reversed(rule.opts):
        if opt.flag == "-j" or opt.flag == "-g":
            return opt.args[0]
    return None


def _targets(rules: list[Rule]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in rules:
        target = _rule_target(rule)
        if target is not None:
            counts[target] = counts.get(target, 0) + 1
    return counts


class _NodeTable:
    """One table kept per chain, with which chains jump to each chain."""

    __slots__ = ("_next", "_position", "chains", "lazy", "name", "referrers", "rules", "targets")

    def __init__(self, name: str):
        self.name = name
        self.chains: dict[str, Chain] = {}
        self.rules: dict[str, list[Rule]] = {}  # chain -> its rules
        self.targets: dict[str, dict[str, int]] = {}  # chain -> its rules' targets
        self.referrers: dict[str, dict[str, int]] = {}  # target -> chains jumping to it
        self._position: dict[str, int] = {}  # chain -> a number increasing in dict order
        self.lazy: set[str] = set()  # chains whose targets are not in referrers yet
        self._next = 0

    def position(self) -> dict[str, int]:
        """Chain -> a number that orders chains as ``chains`` does."""
        return self._position

    def add_chain(self, name: str, chain: Chain) -> None:
        """Create or replace a chain (a new one goes last, as in a dict)."""
        if name not in self.chains:
            self._position[name] = self._next
            self._next += 1
        self.chains[name] = chain

    def del_chain(self, name: str) -> None:
        del self.chains[name]
        del self._position[name]

    def set_rules(
        self, chain: str, rules: list[Rule], targets: dict[str, int] | None = None
    ) -> None:
        """Replace a chain's rules; ``targets`` None: index their jumps when needed."""
        referrers = self.referrers
        for target in self.targets.pop(chain, ()):
            users = referrers[target]
            del users[chain]
            if not users:
                del referrers[target]
        self.lazy.discard(chain)
        if not rules:
            self.rules.pop(chain, None)
            return
        self.rules[chain] = rules
        if targets is None:
            self.lazy.add(chain)
            return
        for target, n in targets.items():
            known = referrers.get(target)
            if known is None:
                referrers[target] = {chain: n}
            else:
                known[chain] = n
        self.targets[chain] = targets

    def index(self, skip: Container[str]) -> None:
        """Index the jumps of the chains set lazily, but those in ``skip``."""
        for chain in [c for c in self.lazy if c not in skip]:
            self.set_rules(chain, self.rules[chain], _targets(self.rules[chain]))


class NodeTables:
    """A node's iptables, changed by ``iptables-restore --noflush`` payloads (``apply``) and
    ``ensure_rule``, kept per chain so that applying a payload costs what the payload
    holds, not what the node holds. Same semantics and errors as ``apply_restore``; on
    failure nothing changes.

    ``ruleset()`` is the node's tables as a Ruleset (rules grouped by chain, in chain
    order; built once per change). ``exposed()`` hands that Ruleset to a caller who may
    edit it (tests inject rules as a third party would); the next change reads it back.
    """

    def __init__(self, family: str = "IPv4", tables: Ruleset | None = None):
        self.family = family
        self._tables: dict[str, _NodeTable] = {}
        self._ruleset: Ruleset | None = None
        self._exposed = False
        self.reloaded = False  # read back after a caller's edits (cleared by the caller)
        if tables is not None:
            self._load(tables)

    def _load(self, tables: Ruleset) -> None:
        self.family = tables.family
        self._tables = {}
        for name, table in tables.tables.items():
            t = self._tables[name] = _NodeTable(name)
            for chain_name, chain in table.chains.items():
                t.add_chain(chain_name, chain)
            grouped: dict[str, list[Rule]] = {}
            for rule in table.rules:
                grouped.setdefault(rule.chain, []).append(rule)
            for chain_name, rules in grouped.items():
                t.set_rules(chain_name, rules, _targets(rules))
        self._ruleset = None

    def _sync_back(self) -> None:
        """A caller may have edited the Ruleset ``exposed()`` gave out: read it back."""
        if self._exposed and self._ruleset is not None:
            self._load(self._ruleset)
            self.reloaded = True
        self._exposed = False

    def ruleset(self) -> Ruleset:
        """The node's tables (do not edit: see ``exposed``)."""
        if self._ruleset is None:
            out = Ruleset(family=self.family)
            for name, t in self._tables.items():
                rules: list[Rule] = []
                for chain in t.chains:
                    rules.extend(t.rules.get(chain, ()))
                rules.extend(r for c, rs in t.rules.items() if c not in t.chains for r in rs)
                out.tables[name] = Table(name, dict(t.chains), rules, [])
            self._ruleset = out
        return self._ruleset

    def exposed(self) -> Ruleset:
        """The node's tables, for a caller who may edit them."""
        ruleset = self.ruleset()
        self._exposed = True
        return ruleset

    def chains(self, table: str) -> list[str]:
        """The table's chains, in the order iptables-save lists user chains by creation."""
        self._sync_back()
        t = self._tables.get(table)
        return list(t.chains) if t is not None else []

    def in_chain_order(self, table: str, names: set[str]) -> list[str]:
        """Those of ``names`` that are chains of the table, in ``chains()`` order."""
        self._sync_back()
        t = self._tables.get(table)
        if t is None:
            return []
        if len(names) * 8 > len(t.chains):
            return [c for c in t.chains if c in names]
        position = t.position()
        return sorted((c for c in names if c in t.chains), key=position.__getitem__)

    def ensure_rule(self, table: str, chain: str, opts: tuple[Opt, ...]) -> bool:
        """EnsureChain for the jump's target, then EnsureRule Prepend (``ensure_rule``)."""
        self._sync_back()
        t = self._tables.get(table)
        if t is None:
            t = self._tables[table] = _NodeTable(table)
        for name in (opts[-1].args[0], chain):
            if name not in t.chains:
                builtin = name in BUILTIN_CHAINS.get(table, ())
                t.add_chain(name, _builtin(name) if builtin else Chain(name))
        rules = t.rules.get(chain, [])
        if any(r.opts == opts for r in rules):
            return False
        new = [Rule(chain, opts), *rules]
        t.set_rules(chain, new, _targets(new))
        self._ruleset = None
        return True

    def apply(
        self,
        payload: Ruleset,
        grouped: dict[str, dict[str, list[Rule]]] | None = None,
        shared: dict[str, tuple[str, ...]] | None = None,
        targets: dict[str, list[str]] | None = None,
    ) -> None:
        """Apply restore input; RestoreError (and no change) on failure.

        What a caller that keeps its rules between syncs can hand over, so that the cost
        follows what changed: ``grouped``, the payload's rules per table and chain;
        ``shared``, per table, chains declared by the payload whose rules' jump targets
        are given all together in ``targets`` (checked as a set; indexed for ``-X``
        checks only if a later payload leaves these chains in place)."""
        self._sync_back()
        staged = []
        for name, table in payload.tables.items():
            rules = grouped.get(name) if grouped is not None else None
            if rules is None:
                rules = {}
                for rule in table.rules:
                    rules.setdefault(rule.chain, []).append(rule)
            given = (shared or {}).get(name, ())
            if any(c not in table.chains for c in given):
                given = ()  # only chains the payload flushes can be taken whole
            checked = self._check_table(
                name, table, rules, given, (targets or {}).get(name, []) if given else []
            )
            staged.append((name, table, rules, checked))
        for name, table, rules, chain_targets in staged:  # only once every table passed
            t = self._tables.get(name)
            if t is None:
                t = self._tables[name] = _NodeTable(name)
            for builtin in BUILTIN_CHAINS.get(name, ()):
                if builtin not in t.chains:
                    t.add_chain(builtin, table.chains.get(builtin) or _builtin(builtin))
            for chain_name, chain in table.chains.items():
                t.add_chain(chain_name, chain)
                t.set_rules(chain_name, rules.get(chain_name, []), chain_targets.get(chain_name))
            for chain_name, chain_rules in rules.items():
                if chain_name not in table.chains:  # appended to a chain not flushed
                    new = t.rules.get(chain_name, []) + chain_rules
                    t.set_rules(chain_name, new, _targets(new))
            for chain_name in table.deleted:
                t.del_chain(chain_name)
        self._ruleset = None

    def _check_table(
        self,
        name: str,
        payload: Table,
        rules: dict[str, list[Rule]],
        shared: tuple[str, ...],
        shared_targets: list[str],
    ) -> dict[str, dict[str, int]]:
        """_apply_table's checks without building the new table; returns the targets of
        the payload's rules per chain (but the ``shared`` chains')."""
        t = self._tables.get(name) or _NodeTable(name)
        declared = payload.chains
        builtins = BUILTIN_CHAINS.get(name, ())
        deleted = set(payload.deleted)

        def exists(chain: str) -> bool:
            return (chain in declared or chain in t.chains or chain in builtins) and (
                chain not in deleted
            )

        targets = {c: _targets(rs) for c, rs in rules.items() if c not in shared}
        first_user: dict[str, str] = {}  # target -> the first payload chain jumping to it
        if payload.deleted:
            t.index(declared)  # jumps from the chains that stay
            if deleted.intersection(shared_targets):  # rare: look at those chains' rules
                for c in shared:
                    for target in _targets(rules.get(c, [])):
                        first_user.setdefault(target, c)
            for chain_name, counts in targets.items():
                for target in counts:
                    first_user.setdefault(target, chain_name)
        for chain_name in payload.deleted:
            if not (chain_name in declared or chain_name in t.chains or chain_name in builtins):
                raise RestoreError(f"table {name}: -X {chain_name}: no chain by that name")
            users = [c for c in t.referrers.get(chain_name, ()) if c not in declared]
            if chain_name in first_user:
                users.append(first_user[chain_name])
            if users:
                raise RestoreError(
                    f"table {name}: -X {chain_name}: chain is still referenced "
                    f"(by a rule in {users[0]})"
                )
            kept = () if chain_name in declared else t.rules.get(chain_name, ())
            if kept or rules.get(chain_name):
                raise RestoreError(f"table {name}: -X {chain_name}: chain is not empty")
        # kept rules stay valid (their chains and targets exist: -X of a used chain fails
        # above); the payload's rules are checked here
        missing = [
            x
            for x in set(shared_targets)
            if x not in declared
            and x not in t.chains
            and x not in builtins
            and x not in BUILTIN_TARGETS
        ]
        bad = bool(missing) or bool(deleted.intersection(shared_targets))
        for chain_name, counts in targets.items():
            if not exists(chain_name) or any(
                target not in BUILTIN_TARGETS and not exists(target) for target in counts
            ):
                bad = True
        if bad:  # report the first bad rule in payload order, as _apply_table does
            for rule in payload.rules:
                if not exists(rule.chain):
                    raise RestoreError(
                        f"table {name}: rule for chain {rule.chain} that does not exist"
                    )
                jump = _rule_target(rule)
                if jump and jump not in BUILTIN_TARGETS and not exists(jump):
                    raise RestoreError(f"table {name}: jump to chain {jump} that does not exist")
        return targets
