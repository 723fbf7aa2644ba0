"""Ruleset <-> iptables-restore text.

``render`` writes restore input exactly as kube-proxy writes it; ``render_sorted`` applies
the normalisation kube-proxy's unit tests compare with (``sortIPTablesRules`` in
pkg/proxy/iptables/proxier_test.go), so output diffs against the fixtures.
"""

from __future__ import annotations

import re

from .ruleset import Opt, Rule, Ruleset, Table

_NEEDS_QUOTES = re.compile(r'[\s"\'\\]|^$')


def quote(arg: str) -> str:
    """Quote an argument the way kube-proxy writes comments (only when needed)."""
    if not _NEEDS_QUOTES.search(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


RAW = "?raw"  # an unparsed rule kept by iptables_parse.parse(keep_unknown=True)


def render_opt(opt: Opt) -> str:
    if opt.flag == RAW:
        return " ".join(quote(a) for a in opt.args)
    text = opt.flag if not opt.args else f"{opt.flag} {' '.join(quote(a) for a in opt.args)}"
    return f"! {text}" if opt.negated else text


# an option's text, shared across calls: most options repeat across rules and syncs
# (-p tcp, -m comment, -j KUBE-MARK-MASQ); emptied when it grows past _OPT_TEXT_MAX
_OPT_TEXT: dict[Opt, str] = {}
_OPT_TEXT_MAX = 200_000


def render_rule(rule: Rule, _cache: dict[Opt, str] | None = None) -> str:
    if _cache is None:
        _cache = _OPT_TEXT
        if len(_cache) > _OPT_TEXT_MAX:
            _cache.clear()
    if not rule.opts:
        return f"-A {rule.chain}"
    parts = []
    for opt in rule.opts:  # most options repeat across rules: render each once
        text = _cache.get(opt)
        if text is None:
            text = render_opt(opt)
            _cache[opt] = text
        parts.append(text)
    return f"-A {rule.chain} {' '.join(parts)}"


def _table_lines(
    table: Table, chains: list[str], rules: list[Rule], deleted: list[str]
) -> list[str]:
    lines = [f"*{table.name}"]
    for name in chains:
        chain = table.chains[name]
        lines.append(f":{name} {chain.policy} [{chain.packets}:{chain.bytes}]")
    lines.extend(render_rule(r) for r in rules)
    lines.extend(f"-X {name}" for name in deleted)
    lines.append("COMMIT")
    return lines


def render(ruleset: Ruleset) -> str:
    """iptables-restore input, tables and rules in write order."""
    lines: list[str] = []
    for table in ruleset.tables.values():
        lines.extend(_table_lines(table, list(table.chains), table.rules, table.deleted))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- test normalisation

_LAST_RULE_COMMENT = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
_SORTED_BY_SERVICE = ("KUBE-NODEPORTS", "KUBE-SERVICES")


def _chain_order(name: str) -> tuple[int, str]:
    if name == "KUBE-NODEPORTS":
        return (0, "")
    if name == "KUBE-SERVICES":
        return (1, "")
    if name.startswith("KUBE-"):
        return (2, name)
    return (3, name)


def _service_of(rule: Rule) -> str:
    comment = rule.comment or ""
    return re.split(r"[ :]", comment, maxsplit=1)[0]


def render_sorted(ruleset: Ruleset) -> str:
    """The normalised form kube-proxy's tests compare: tables by name, chains KUBE-NODEPORTS,
    KUBE-SERVICES, other KUBE-* then the rest alphabetically; rules grouped by chain in
    write order, KUBE-NODEPORTS/KUBE-SERVICES rules stable-sorted by service name with the
    nodeports dispatch rule kept last; then ``-X`` lines in chain order."""
    lines: list[str] = []
    for name in sorted(ruleset.tables):
        table = ruleset.tables[name]
        chains = sorted(table.chains, key=_chain_order)
        by_chain: dict[str, list[Rule]] = {}
        for rule in table.rules:
            by_chain.setdefault(rule.chain, []).append(rule)
        rules: list[Rule] = []
        for chain in chains + sorted(set(by_chain) - set(chains), key=_chain_order):
            chain_rules = by_chain.get(chain, [])
            if chain in _SORTED_BY_SERVICE:
                last = [r for r in chain_rules if r.comment == _LAST_RULE_COMMENT]
                rest = [r for r in chain_rules if r.comment != _LAST_RULE_COMMENT]
                chain_rules = sorted(rest, key=_service_of) + last
            rules.extend(chain_rules)
        deleted = sorted(table.deleted, key=_chain_order)
        lines.extend(_table_lines(table, chains, rules, deleted))
    return "\n".join(lines) + "\n"
