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


# the rules of a chain a transaction operation names (the table's own chain object holds
# the rules): one shared empty tuple instead of an empty list per operation, so that an
# append to it fails loudly (a first sync's table adopts the object, with a list)
NO_RULES = cast("list[NftRule]", ())


def chain_ref(name: str) -> NftChain:
    """A regular chain as an operation names it (add, flush or delete)."""
    return NftChain(name, rules=NO_RULES)


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
        self.add("chain", NftChain(name, **kw, rules=NO_RULES))

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
        self._pos: dict[str, int] | None = {}  # kept from the start: no table-wide scan
        self._next_pos = 0

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
        """Run a transaction atomically: on any error nothing changes (NftError).

        Operations change the table in place, each leaving an undo step; an error runs
        the undo steps backwards. So a transaction costs what it changes, not the
        table's size (kube-proxy's partial syncs are a few operations on a big table)."""
        if not tx.ops:
            return
        if not self.exists and not self.chains and not self.sets:
            self._apply_on_empty(tx)
            return
        if any(op.kind == "table" and op.verb != "add" for op in tx.ops):
            self._apply_on_copy(tx)  # flushing or deleting the table: undo by snapshot
            return
        self._undo, self._saved = [], set()
        try:
            for i, op in enumerate(tx.ops):
                try:
                    self._apply_op(op)
                except NftError as exc:
                    raise NftError(
                        f"operation {i + 1} ({op.verb} {op.kind}): {exc.message}"
                    ) from None
        except BaseException:
            for step in reversed(self._undo):
                step()
            self._refs = self._pos = None  # rebuilt from the restored table when needed
            raise
        finally:
            self._undo = None

    def _apply_on_empty(self, tx: NftTransaction) -> None:
        """The first sync's transaction, onto a table that does not exist yet: no undo
        steps (a million-operation transaction would keep a million of them); an error
        leaves the table empty again."""
        apply_op = self._apply_op
        chains, sets = self.chains, self.sets
        self._refs = None  # built when first needed (a delete) from the table
        self._pos = None  # likewise (by in_chain_order): a number per chain is memory
        try:
            for i, op in enumerate(tx.ops):
                # inline the operations a sync is made of, when they cannot fail; the rest
                # (and any error) goes the general way
                kind, obj, verb = op.kind, op.obj, op.verb
                if kind == "rule":
                    chain = chains.get(obj.chain)  # type: ignore[attr-defined]
                    text = obj.text  # type: ignore[attr-defined]
                    if (
                        verb == "add"
                        and chain is not None
                        and (
                            ("jump " not in text and "goto " not in text)
                            or all(t in chains for t in _TARGET_RE.findall(text))
                        )
                        and ("@" not in text or all(r in sets for r in _sets_used(text)))
                    ):
                        chain.rules.append(obj)  # type: ignore[arg-type]
                        continue
                elif kind == "chain":
                    name = obj.name  # type: ignore[attr-defined]
                    if verb == "add" and name not in chains:
                        assert isinstance(obj, NftChain)
                        if obj.rules is NO_RULES:
                            # an operation's own chain object (chain_ref) becomes the
                            # table's: one object per chain, not two. Once adopted it has
                            # rules, so applying the transaction again copies it.
                            obj.rules = []
                            chains[name] = obj
                        else:
                            chains[name] = NftChain(
                                name, obj.type, obj.hook, obj.priority, obj.comment
                            )
                        continue
                    if verb == "flush":
                        have = chains.get(name)
                        if have is not None and not have.rules:
                            continue  # a chain just added: nothing to flush
                try:
                    apply_op(op)
                except NftError as exc:
                    raise NftError(
                        f"operation {i + 1} ({op.verb} {op.kind}): {exc.message}"
                    ) from None
                # a chain delete builds the jump index, which the inlined rule adds do not
                # keep: drop it, the next delete rebuilds it from the table (a first sync
                # deletes only at its start, while the table is small); a table delete
                # starts new dicts
                self._refs = self._pos = None
                chains, sets = self.chains, self.sets
        except BaseException:
            self.__init__(self.family, self.name)  # type: ignore[misc]
            raise

    def _apply_on_copy(self, tx: NftTransaction) -> None:
        work = self.copy()
        for i, op in enumerate(tx.ops):
            try:
                work._apply_op(op)
            except NftError as exc:
                raise NftError(f"operation {i + 1} ({op.verb} {op.kind}): {exc.message}") from None
        self.exists, self.comment = work.exists, work.comment
        self.sets, self.chains = work.sets, work.chains
        self._refs = self._pos = None

    _undo: list | None = None
    _pos: dict[str, int] | None = None  # chain -> a number increasing in creation order
    _next_pos = 0

    def in_chain_order(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that are chains of the table, in the table's chain order."""
        wanted = [n for n in set(names) if n in self.chains]
        if len(wanted) * 16 > len(self.chains):
            keep = set(wanted)
            return [c for c in self.chains if c in keep]
        if self._pos is None or len(self._pos) != len(self.chains):
            self._pos = {c: i for i, c in enumerate(self.chains)}
            self._next_pos = len(self._pos)
        return sorted(wanted, key=self._pos.__getitem__)

    _saved: set[int] = set()  # noqa: RUF012 - replaced per transaction
    # chain -> {chain or map jumping or going to it: how many times}; kept up to date by
    # every operation once built (None: build from the table when first needed)
    _refs: dict[str, dict[str, int]] | None = None

    def _chain_refs(self) -> dict[str, dict[str, int]]:
        if self._refs is None:
            refs: dict[str, dict[str, int]] = {}
            self._refs = refs
            for c in self.chains.values():
                for r in c.rules:
                    self._ref(c.name, r.text, 1)
            for s in self.sets.values():
                if s.value_type == "verdict":
                    for e in s.elements.values():
                        self._ref(s.name, " ".join(e.value), 1)
        return self._refs

    def _ref(self, user: str, text: str, n: int) -> None:
        """Count (n=1) or uncount (n=-1) the jumps in ``text`` made by ``user``."""
        refs = self._refs
        if refs is None:
            return
        for target in _targets(text):
            if target == user:
                continue
            users = refs.setdefault(target, {})
            left = users.get(user, 0) + n
            if left:
                users[user] = left
            else:
                users.pop(user, None)
                if not users:
                    del refs[target]

    def _log(self, step) -> None:
        if self._undo is not None:
            self._undo.append(step)

    def _keep_order(self, container: dict) -> None:
        """Before a deletion from ``container``: restore it whole on undo (a re-insert
        would move the key to the end)."""
        if self._undo is not None and id(container) not in self._saved:
            self._saved.add(id(container))  # once per transaction: the first state
            saved = dict(container)

            def restore() -> None:
                container.clear()
                container.update(saved)

            self._undo.append(restore)

    def _set_rules(self, chain: NftChain, rules: list[NftRule]) -> None:
        old = chain.rules
        for r in old:
            self._ref(chain.name, r.text, -1)
        chain.rules = rules
        for r in rules:
            self._ref(chain.name, r.text, 1)

        def undo() -> None:
            chain.rules = old

        self._log(undo)

    def _need_table(self) -> None:
        if not self.exists:
            raise NftError(f"table {self.family} {self.name} does not exist")

    def _apply_op(self, op: NftOp) -> None:
        verb, kind, obj = op.verb, op.kind, op.obj
        if kind == "table":
            if verb == "add":
                was = (self.exists, self.comment)
                self.exists = True
                if obj is not None:
                    self.comment = obj  # type: ignore[assignment]

                def undo_table() -> None:
                    self.exists, self.comment = was

                self._log(undo_table)
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
                    self._log(lambda name=obj.name: self.chains.pop(name))
                    if self._pos is not None:
                        self._pos[obj.name] = self._next_pos
                        self._next_pos += 1
                elif obj.hook is not None and (have.hook, have.type, have.priority) != (
                    obj.hook,
                    obj.type,
                    obj.priority,
                ):
                    raise NftError(f"chain {obj.name} exists with another type/hook/priority")
            elif have is None:
                raise NftError(f"no such chain {obj.name}")
            elif verb == "flush":
                self._set_rules(have, [])
            else:
                users = self._chain_refs().get(obj.name)
                if users:
                    first = min(users, key=self._user_order)
                    raise NftError(f"chain {obj.name} is still used by {first}")
                self._set_rules(have, [])
                self._keep_order(self.chains)
                del self.chains[obj.name]
                if self._pos is not None:
                    self._pos.pop(obj.name, None)
        elif kind in ("set", "map"):
            assert isinstance(obj, NftSet)
            have_set = self.sets.get(obj.name)
            if verb == "add":
                if have_set is None:
                    self.sets[obj.name] = NftSet(
                        obj.name, kind, obj.type, obj.flags, obj.timeout, obj.comment
                    )
                    self._log(lambda name=obj.name: self.sets.pop(name))
                elif have_set.type != obj.type or have_set.kind != kind:
                    raise NftError(f"{kind} {obj.name} exists with another type")
            elif have_set is None:
                raise NftError(f"no such {kind} {obj.name}")
            elif verb == "flush":
                self._clear_elements(have_set)
            else:
                self._clear_elements(have_set)
                self._keep_order(self.sets)
                del self.sets[obj.name]
        elif kind == "rule":
            assert isinstance(obj, NftRule)
            chain = self.chains.get(obj.chain)
            if chain is None:
                raise NftError(f"no such chain {obj.chain}")
            if verb != "add":
                raise NftError("only 'add rule' is supported")
            text = obj.text
            for target in _targets(text):
                if target not in self.chains:
                    raise NftError(f"rule in {obj.chain} jumps to missing chain {target}")
            if "@" in text:
                for ref in _sets_used(text):
                    if ref not in self.sets:
                        raise NftError(f"rule in {obj.chain} uses missing set {ref}")
            chain.rules.append(obj)
            self._ref(chain.name, obj.text, 1)
            self._log(chain.rules.pop)
        elif kind == "element":
            name, elem = cast("tuple[str, NftElement]", obj)
            container = self.sets.get(name)
            if container is None:
                raise NftError(f"no such set {name}")
            if verb == "add":
                for dest in _value_targets(elem.value):
                    if dest not in self.chains:
                        raise NftError(f"element of {name} jumps to missing chain {dest}")
                self._put_element(container, elem.key, elem)
            elif verb == "delete":
                if elem.key not in container.elements:
                    raise NftError(f"no such element {' . '.join(elem.key)} in {name}")
                self._keep_order(container.elements)
                self._put_element(container, elem.key, None)
            else:
                raise NftError("elements cannot be flushed")
        else:
            raise NftError(f"unknown object kind {kind}")

    def _put_element(
        self, container: NftSet, key: tuple[str, ...], elem: NftElement | None
    ) -> None:
        """Add, replace (``elem``) or delete (None) one element, keeping the jump index."""
        verdict = container.value_type == "verdict"
        old = container.elements.get(key)
        if old is not None and verdict:
            self._ref(container.name, " ".join(old.value), -1)
        if elem is None:
            del container.elements[key]
        else:
            container.elements[key] = elem
            if verdict:
                self._ref(container.name, " ".join(elem.value), 1)
            if old is None:
                self._log(lambda: container.elements.pop(key))
            else:
                self._log(lambda: container.elements.__setitem__(key, old))
        if verdict:
            self._log(lambda: setattr(self, "_refs", None))

    def _clear_elements(self, container: NftSet) -> None:
        old = container.elements
        if container.value_type == "verdict":
            for e in old.values():
                self._ref(container.name, " ".join(e.value), -1)
        container.elements = {}
        self._log(lambda: setattr(container, "elements", old))

    def _user_order(self, user: str) -> tuple[int, int]:
        """Chains before maps, each in creation order (the order the table lists them)."""
        if user in self.chains:
            return (0, list(self.chains).index(user))
        return (1, list(self.sets).index(user) if user in self.sets else 0)


_TARGET_RE = re.compile(r"\b(?:jump|goto) ([\w./-]+)")
_SET_REF_RE = re.compile(r"@([\w./-]+)")


def _targets(text: str) -> list[str]:
    # most rules (DNAT, masquerade, matches on sets) jump nowhere: skip the regex
    if "jump " not in text and "goto " not in text:
        return []
    return _TARGET_RE.findall(text)


def _sets_used(text: str) -> list[str]:
    return _SET_REF_RE.findall(text)


def _value_targets(value: tuple[str, ...]) -> list[str]:
    """The jump targets of an element's value (set elements have none)."""
    return _targets(" ".join(value)) if value else []


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
