"""The node's iptables state and ``iptables-restore --noflush`` applied to it.

Semantics as the kernel and iptables-restore give them: each table commits atomically; a
declared chain is created or flushed; ``-X`` fails for a chain that does not exist or that a
rule still jumps to; a jump to a chain that does not exist fails the table. On failure
nothing changes (kube-proxy then needs a full sync).
"""

from __future__ import annotations

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
