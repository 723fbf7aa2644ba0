"""The nftables ruleset model: one table with its chains (base chains carry type, hook and
priority), sets and maps with their elements, and rules kept as the text kube-proxy writes
(``ip daddr . meta l4proto . th dport vmap @service-ips``), parsed on demand.

Changes are transactions (``NftTransaction``: add/flush/delete of tables, chains, sets,
maps, rules and elements, as knftables sends them to ``nft -f``). ``NftRuleset.apply`` runs
one atomically, with the kernel's checks that matter here (objects must exist to be flushed
or deleted, a chain still jumped to cannot be deleted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from ..errors import KproxyError

IP_FAMILY = "ip"
TABLE = "kube-proxy"


class NftError(KproxyError):
    """A transaction the kernel would refuse (nothing of it is applied)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


@dataclass(slots=True)
class NftRule:
    chain: str
    text: str  # the rule without its comment
    comment: str | None = None
    listed: bool = False  # text is in ``nft list`` spelling already (read from a listing)

    @property
    def full_text(self) -> str:
        return f'{self.text} comment "{self.comment}"' if self.comment is not None else self.text


@dataclass(slots=True)
class NftChain:
    name: str
    type: str | None = None  # filter, nat (base chains only)
    hook: str | None = None
    priority: int | None = None
    comment: str | None = None
    rules: list[NftRule] = field(default_factory=list)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass(slots=True)
class NftElement:
    key: tuple[str, ...]
    value: tuple[str, ...] = ()  # () for a set element
    comment: str | None = None


@dataclass(slots=True)
class NftSet:
    """A named set (kind "set") or map (kind "map"); ``type`` is nft's type string
    (``ipv4_addr . inet_proto . inet_service : verdict`` for a verdict map)."""

    name: str
    kind: str
    type: str
    flags: tuple[str, ...] = ()
    timeout: int | None = None  # seconds
    comment: str | None = None
    elements: dict[tuple[str, ...], NftElement] = field(default_factory=dict)

    @property
    def key_types(self) -> list[str]:
        return self.type.split(" : ")[0].split(" . ")

    @property
    def value_type(self) -> str | None:
        parts = self.type.split(" : ")
        return parts[1] if len(parts) > 1 else None


@dataclass(slots=True)
class NftOp:
    verb: str  # add, flush, delete
    kind: str  # table, chain, set, map, rule, element
    obj: object = None  # NftChain / NftSet / NftRule / (set name, NftElement) / comment


class NftTransaction:
    """An ordered list of operations, sent as one ``nft -f`` batch."""

    def __init__(self) -> None:
        self.ops: list[NftOp] = []

    def __len__(self) -> int:
        return len(self.ops)

    def add(self, kind: str, obj: object) -> None:
        self.ops.append(NftOp("add", kind, obj))

    def flush(self, kind: str, obj: object) -> None:
        self.ops.append(NftOp("flush", kind, obj))

    def delete(self, kind: str, obj: object) -> None:
        self.ops.append(NftOp("delete", kind, obj))

    # shorthands used by the compiler
    def add_chain(self, name: str, **kw) -> None:
        self.add("chain", NftChain(name, **kw))

    def add_rule(self, chain: str, text: str, comment: str | None = None) -> None:
        self.add("rule", NftRule(chain, text, comment))

    def add_element(
        self,
        container: str,
        key: tuple[str, ...],
        value: tuple[str, ...] = (),
        comment: str | None = None,
    ) -> None:
        self.add("element", (container, NftElement(key, value, comment)))

    def delete_element(self, container: str, key: tuple[str, ...]) -> None:
        self.delete("element", (container, NftElement(key)))


class NftRuleset:
    """The ``ip kube-proxy`` table as it stands (``exists`` False before the first sync)."""

    def __init__(self, family: str = IP_FAMILY, name: str = TABLE) -> None:
        self.family = family
        self.name = name
        self.exists = False
        self.comment: str | None = None
        self.sets: dict[str, NftSet] = {}  # sets and maps, in creation order
        self.chains: dict[str, NftChain] = {}  # in creation order

    def copy(self) -> NftRuleset:
        new = NftRuleset(self.family, self.name)
        new.exists, new.comment = self.exists, self.comment
        new.sets = {
            n: NftSet(s.name, s.kind, s.type, s.flags, s.timeout, s.comment, dict(s.elements))
            for n, s in self.sets.items()
        }
        new.chains = {
            n: NftChain(c.name, c.type, c.hook, c.priority, c.comment, list(c.rules))
            for n, c in self.chains.items()
        }
        return new

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.chains.values())

    @property
    def element_count(self) -> int:
        return sum(len(s.elements) for s in self.sets.values())

    # ------------------------------------------------------------------ transactions
    def apply(self, tx: NftTransaction) -> None:
        """Run a transaction atomically: on any error nothing changes (NftError)."""
        if not tx.ops:
            return
        work = self.copy()
        work._refs = None
        for i, op in enumerate(tx.ops):
            if not (op.verb == "delete" and op.kind == "chain"):
                work._refs = None  # the chain reference index is only kept across deletes
            try:
                work._apply_op(op)
            except NftError as exc:
                raise NftError(f"operation {i + 1} ({op.verb} {op.kind}): {exc.message}") from None
        self.exists, self.comment = work.exists, work.comment
        self.sets, self.chains = work.sets, work.chains

    _refs: dict[str, list[str]] | None = None

    def _chain_refs(self) -> dict[str, list[str]]:
        """chain -> the chains and maps that jump or go to it (built once per run of
        deletes: a cleanup transaction deleting many chains scans the table once)."""
        if self._refs is None:
            refs: dict[str, list[str]] = {}
            for c in self.chains.values():
                for r in c.rules:
                    for target in _targets(r.text):
                        if target != c.name:
                            refs.setdefault(target, []).append(c.name)
            for s in self.sets.values():
                if s.value_type == "verdict":
                    for e in s.elements.values():
                        for target in _targets(" ".join(e.value)):
                            refs.setdefault(target, []).append(s.name)
            self._refs = refs
        return self._refs

    def _need_table(self) -> None:
        if not self.exists:
            raise NftError(f"table {self.family} {self.name} does not exist")

    def _apply_op(self, op: NftOp) -> None:
        verb, kind, obj = op.verb, op.kind, op.obj
        if kind == "table":
            if verb == "add":
                self.exists = True
                if obj is not None:
                    self.comment = obj  # type: ignore[assignment]
            elif verb == "flush":
                self._need_table()
                for c in self.chains.values():
                    c.rules.clear()
                for s in self.sets.values():
                    s.elements.clear()
            else:
                self._need_table()
                self.__init__(self.family, self.name)  # type: ignore[misc]
            return
        self._need_table()
        if kind == "chain":
            assert isinstance(obj, NftChain)
            have = self.chains.get(obj.name)
            if verb == "add":
                if have is None:
                    self.chains[obj.name] = NftChain(
                        obj.name, obj.type, obj.hook, obj.priority, obj.comment
                    )
                elif obj.hook is not None and (have.hook, have.type, have.priority) != (
                    obj.hook,
                    obj.type,
                    obj.priority,
                ):
                    raise NftError(f"chain {obj.name} exists with another type/hook/priority")
            elif have is None:
                raise NftError(f"no such chain {obj.name}")
            elif verb == "flush":
                have.rules.clear()
            else:
                refs = self._chain_refs()
                if refs.get(obj.name):
                    raise NftError(f"chain {obj.name} is still used by {refs[obj.name][0]}")
                for r in have.rules:
                    for target in _targets(r.text):
                        users = refs.get(target)
                        if users and obj.name in users:
                            users.remove(obj.name)
                del self.chains[obj.name]
        elif kind in ("set", "map"):
            assert isinstance(obj, NftSet)
            have_set = self.sets.get(obj.name)
            if verb == "add":
                if have_set is None:
                    self.sets[obj.name] = NftSet(
                        obj.name, kind, obj.type, obj.flags, obj.timeout, obj.comment
                    )
                elif have_set.type != obj.type or have_set.kind != kind:
                    raise NftError(f"{kind} {obj.name} exists with another type")
            elif have_set is None:
                raise NftError(f"no such {kind} {obj.name}")
            elif verb == "flush":
                have_set.elements.clear()
            else:
                del self.sets[obj.name]
        elif kind == "rule":
            assert isinstance(obj, NftRule)
            chain = self.chains.get(obj.chain)
            if chain is None:
                raise NftError(f"no such chain {obj.chain}")
            if verb != "add":
                raise NftError("only 'add rule' is supported")
            for target in _targets(obj.text):
                if target not in self.chains:
                    raise NftError(f"rule in {obj.chain} jumps to missing chain {target}")
            for ref in re.findall(r"@([\w./-]+)", obj.text):
                if ref not in self.sets:
                    raise NftError(f"rule in {obj.chain} uses missing set {ref}")
            chain.rules.append(obj)
        elif kind == "element":
            name, elem = cast("tuple[str, NftElement]", obj)
            container = self.sets.get(name)
            if container is None:
                raise NftError(f"no such set {name}")
            if verb == "add":
                for dest in _targets(" ".join(elem.value)):
                    if dest not in self.chains:
                        raise NftError(f"element of {name} jumps to missing chain {dest}")
                container.elements[elem.key] = elem
            elif verb == "delete":
                if elem.key not in container.elements:
                    raise NftError(f"no such element {' . '.join(elem.key)} in {name}")
                del container.elements[elem.key]
            else:
                raise NftError("elements cannot be flushed")
        else:
            raise NftError(f"unknown object kind {kind}")


_TARGET_RE = re.compile(r"\b(?:jump|goto) ([\w./-]+)")


def _targets(text: str) -> list[str]:
    return _TARGET_RE.findall(text)


# ---------------------------------------------------------------------- rule parsing
_TOKEN_RE = re.compile(r'"[^"]*"|[{},]|[^\s{},]+')


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def split_comment(text: str) -> tuple[str, str | None]:
    """``<rule> comment "<text>"`` -> (rule, text)."""
    m = re.search(r' comment "([^"]*)"\s*$', text)
    if m is None:
        return text, None
    return text[: m.start()], m.group(1)


@dataclass(slots=True)
class Match:
    """``<selector>[ . <selector>...] [op] <rhs>`` where rhs is one of: a literal list
    (``values``), a named set (``set_name``), or a verdict map (``vmap`` literal or
    ``set_name`` with ``is_vmap``). ``mask`` is for ``mark and M == V``."""

    selectors: tuple[tuple[str, ...], ...]
    op: str = "=="
    values: tuple[str, ...] = ()
    set_name: str | None = None
    vmap: dict[str, str] | None = None
    is_vmap: bool = False
    mask: str | None = None


@dataclass(slots=True)
class Statement:
    """jump/goto (arg: chain), return, accept, drop, reject, dnat (arg: "ip:port"),
    masquerade, snat, mark_set (arg: (op, value)), set_update (arg: (set, selector)),
    counter, log, notrack."""

    kind: str
    arg: object = None


_SELECTOR_ARITY = {"ip": 2, "ip6": 2, "th": 2, "tcp": 2, "udp": 2, "sctp": 2, "ct": 2}


def _read_selector(tokens: list[str], i: int) -> tuple[tuple[str, ...], int] | None:
    t = tokens[i]
    if t in _SELECTOR_ARITY:
        return tuple(tokens[i : i + 2]), i + 2
    if t == "meta":
        return ("meta", tokens[i + 1]), i + 2
    if t == "mark":
        return ("meta", "mark"), i + 1
    if t in ("iifname", "oifname", "iif", "oif", "l4proto"):
        return ("meta", t), i + 1
    if t == "fib":  # fib saddr type / fib daddr type
        return tuple(tokens[i : i + 3]), i + 3
    if t == "numgen":  # numgen random mod N
        return tuple(tokens[i : i + 4]), i + 4
    return None


def _read_braced(tokens: list[str], i: int) -> tuple[list[str], int]:
    """Tokens between ``{`` at i and its ``}``; returns (inner tokens, index after)."""
    depth, j = 0, i
    while j < len(tokens):
        if tokens[j] == "{":
            depth += 1
        elif tokens[j] == "}":
            depth -= 1
            if depth == 0:
                return tokens[i + 1 : j], j + 1
        j += 1
    raise NftError(f"unbalanced braces in rule: {' '.join(tokens)}")


def _split_commas(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for t in tokens:
        if t == ",":
            out.append([])
        else:
            out[-1].append(t)
    return [x for x in out if x]


_VERDICTS = ("accept", "drop", "return", "continue")


def parse_rule(text: str) -> tuple[list[Match | Statement], str | None]:
    """Parse a rule into matches and statements (in order) plus its comment."""
    body, comment = split_comment(text)
    tokens = tokenize(body)
    items: list[Match | Statement] = []
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        if t in ("jump", "goto"):
            items.append(Statement(t, tokens[i + 1]))
            i += 2
        elif t in _VERDICTS:
            items.append(Statement(t))
            i += 1
        elif t == "reject":
            i += 1
            if i < n and tokens[i] == "with":
                i += 4 if i + 3 < n and tokens[i + 1] in ("icmp", "icmpx", "icmpv6") else 3
            items.append(Statement("reject"))
        elif t in ("dnat", "snat"):
            i += 1
            if tokens[i] in ("ip", "ip6"):
                i += 1
            if tokens[i] != "to":
                raise NftError(f"cannot parse {t} in rule: {text}")
            items.append(Statement(t, tokens[i + 1]))
            i += 2
        elif t == "masquerade":
            i += 1
            while i < n and tokens[i] in ("fully-random", "random", "persistent", ","):
                i += 1
            items.append(Statement("masquerade"))
        elif t in ("counter", "log", "notrack"):
            i += 1
            while i < n and tokens[i] in ("packets", "bytes", "prefix", "level"):
                i += 2
            items.append(Statement(t))
        elif t in ("update", "add") and i + 1 < n and tokens[i + 1].startswith("@"):
            inner, j = _read_braced(tokens, i + 2)
            sel = _read_selector(inner, 0)
            if sel is None:
                raise NftError(f"cannot parse set update in rule: {text}")
            items.append(Statement("set_update", (tokens[i + 1][1:], sel[0])))
            i = j
        else:
            sels: list[tuple[str, ...]] = []
            got = _read_selector(tokens, i)
            if got is None:
                raise NftError(f"cannot parse rule at '{t}': {text}")
            while True:
                found, i = got
                sels.append(found)
                if i < n and tokens[i] == ".":
                    got = _read_selector(tokens, i + 1)
                    if got is None:
                        raise NftError(f"cannot parse concatenation in rule: {text}")
                    continue
                break
            m = Match(tuple(sels))
            if i < n and tokens[i] == "set" and sels == [("meta", "mark")]:
                # mark set mark or|xor|and M  /  meta mark set meta mark | M  /  mark set M
                i += 1
                sel2 = _read_selector(tokens, i)
                if sel2 is not None:
                    i = sel2[1]
                    op = {"|": "or", "^": "xor", "&": "and"}.get(tokens[i], tokens[i])
                    items.append(Statement("mark_set", (op, tokens[i + 1])))
                    i += 2
                else:
                    items.append(Statement("mark_set", ("set", tokens[i])))
                    i += 1
                continue
            if i < n and tokens[i] in ("and", "&"):
                m.mask = tokens[i + 1]
                i += 2
            if i < n and tokens[i] == "vmap":
                m.is_vmap = True
                if tokens[i + 1].startswith("@"):
                    m.set_name = tokens[i + 1][1:]
                    i += 2
                else:
                    inner, i = _read_braced(tokens, i + 1)
                    m.vmap = {}
                    for part in _split_commas(inner):
                        colon = part.index(":")
                        m.vmap[" . ".join(x for x in part[:colon] if x != ".")] = " ".join(
                            part[colon + 1 :]
                        )
                items.append(m)
                continue
            if i < n and tokens[i] in ("==", "!="):
                m.op = tokens[i]
                i += 1
            if i >= n:
                raise NftError(f"missing value in rule: {text}")
            if tokens[i].startswith("@"):
                m.set_name = tokens[i][1:]
                i += 1
            elif tokens[i] == "{":
                inner, i = _read_braced(tokens, i)
                m.values = tuple(" ".join(p) for p in _split_commas(inner))
            else:
                m.values = tuple(v for v in tokens[i].split(",") if v)
                i += 1
            items.append(m)
    return items, comment


def chain_targets(chain: NftChain) -> Iterable[str]:
    for r in chain.rules:
        yield from _targets(r.text)
