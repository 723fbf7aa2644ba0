"""Text forms of an nftables ruleset.

- ``render_dump``: the knftables Fake ``Dump()`` form kube-proxy's unit tests compare
  (``add table|chain|set|map|rule|element ip kube-proxy ...``), with ``sort_dump`` the
  tests' normalisation (sortNFTablesTransaction);
- ``render_nft_file``: an ``nft -f`` script in a loadable order (table, then sets, maps and
  chains, then rules, then elements: a rule may jump to a chain declared after it);
- ``render_list``: what ``nft list ruleset`` prints once the table is loaded (nftables
  1.0.x: symbolic priorities, ``meta mark`` expressions, elements sorted and wrapped);
- ``render_transaction``: a sync's transaction as ``nft -f`` input;
- ``parse_dump``: a dump (e.g. a fixture's expected state) back into an NftRuleset.
"""

from __future__ import annotations

import ipaddress
import re
from typing import cast

from ..errors import InputError
from .nft import (
    NftChain,
    NftElement,
    NftRule,
    NftRuleset,
    NftSet,
    NftTransaction,
    split_comment,
    tokenize,
)


def _prefix(rs: NftRuleset) -> str:
    return f"{rs.family} {rs.name}"


def _chain_spec(c: NftChain) -> str:
    parts = []
    if c.hook is not None:
        parts.append(f"type {c.type} hook {c.hook} priority {c.priority} ;")
    if c.comment is not None:
        parts.append(f'comment "{c.comment}" ;')
    return f" {{ {' '.join(parts)} }}" if parts else ""


def _set_spec(s: NftSet) -> str:
    parts = [f"type {s.type} ;"]
    if s.flags:
        parts.append(f"flags {','.join(s.flags)} ;")
    if s.timeout is not None:
        parts.append(f"timeout {s.timeout}s ;")
    if s.comment is not None:
        parts.append(f'comment "{s.comment}" ;')
    return f" {{ {' '.join(parts)} }}"


def _element_text(e: NftElement) -> str:
    out = " . ".join(e.key)
    if e.comment is not None:
        out += f' comment "{e.comment}"'
    if e.value:
        out += " : " + " . ".join(e.value)
    return out


def table_line(rs: NftRuleset) -> str:
    comment = f' {{ comment "{rs.comment}" ; }}' if rs.comment is not None else ""
    return f"add table {_prefix(rs)}{comment}"


def chain_line(rs: NftRuleset, c: NftChain) -> str:
    return f"add chain {_prefix(rs)} {c.name}{_chain_spec(c)}"


def set_line(rs: NftRuleset, s: NftSet) -> str:
    return f"add {s.kind} {_prefix(rs)} {s.name}{_set_spec(s)}"


def rule_line(rs: NftRuleset, r: NftRule) -> str:
    return f"add rule {_prefix(rs)} {r.chain} {r.full_text}"


def element_line(rs: NftRuleset, name: str, e: NftElement) -> str:
    return f"add element {_prefix(rs)} {name} {{ {_element_text(e)} }}"


def render_dump(rs: NftRuleset) -> str:
    """knftables Fake.Dump(): table, chains, sets and maps, rules, elements (each group
    in creation order, so parse_dump gives the same table back)."""
    if not rs.exists:
        return ""
    lines = [table_line(rs)]
    lines += [chain_line(rs, c) for c in rs.chains.values()]
    lines += [set_line(rs, s) for s in rs.sets.values()]
    lines += [rule_line(rs, r) for c in rs.chains.values() for r in c.rules]
    lines += [element_line(rs, s.name, e) for s in rs.sets.values() for e in s.elements.values()]
    return "\n".join(lines) + "\n"


_OBJECT_ORDER = {"table": 0, "chain": 1, "rule": 2, "set": 3, "map": 4, "element": 5}


def sort_dump(text: str) -> str:
    """sortNFTablesTransaction: drop blank and ``#`` lines; order by object type (table,
    chain, rule, set, map, element), then object name; rules keep their order within a
    chain, other lines of one object sort by text."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]

    def key(item: tuple[int, str]) -> tuple:
        index, line = item
        words = line.split(" ")
        kind = words[1]
        if kind == "table":
            return (-1, "", 0, "")
        name = words[4] if len(words) > 4 else ""
        return (
            _OBJECT_ORDER.get(kind, 9),
            name,
            index if kind == "rule" else 0,
            "" if kind == "rule" else line,
        )

    return "\n".join(line for _, line in sorted(enumerate(lines), key=key))


def render_nft_file(rs: NftRuleset) -> str:
    """A script ``nft -f`` loads: definitions before the rules and elements using them."""
    if not rs.exists:
        return ""
    lines = [table_line(rs)]
    lines += [set_line(rs, s) for s in rs.sets.values()]
    lines += [chain_line(rs, c) for c in rs.chains.values()]
    lines += [rule_line(rs, r) for c in rs.chains.values() for r in c.rules]
    lines += [element_line(rs, s.name, e) for s in rs.sets.values() for e in s.elements.values()]
    return "\n".join(lines) + "\n"


def render_transaction(rs: NftRuleset, tx: NftTransaction) -> str:
    """A sync's operations as ``nft -f`` commands, in order."""
    # joined a few thousand lines at a time: a first sync's millions of line objects
    # never live at once next to the text
    chunks: list[str] = []
    out: list[str] = []
    prefix = _prefix(rs)
    for op in tx.ops:
        if len(out) >= 4096:
            out.append("")
            chunks.append("\n".join(out))
            out = []
        v, k, obj = op.verb, op.kind, op.obj
        if k == "rule":  # most of a large transaction: rule_line, inlined
            assert isinstance(obj, NftRule)
            if obj.comment is None:
                out.append(f"add rule {prefix} {obj.chain} {obj.text}")
            else:
                out.append(f"add rule {prefix} {obj.chain} {obj.full_text}")
        elif k == "chain":
            assert isinstance(obj, NftChain)
            out.append(chain_line(rs, obj) if v == "add" else f"{v} chain {prefix} {obj.name}")
        elif k == "table":
            comment = f' {{ comment "{obj}" ; }}' if v == "add" and obj is not None else ""
            out.append(f"{v} table {prefix}{comment}")
        elif k in ("set", "map"):
            assert isinstance(obj, NftSet)
            out.append(set_line(rs, obj) if v == "add" else f"{v} {k} {prefix} {obj.name}")
        else:
            name, elem = cast("tuple[str, NftElement]", obj)
            text = _element_text(elem) if v == "add" else " . ".join(elem.key)
            out.append(f"{v} element {prefix} {name} {{ {text} }}")
    if out:
        out.append("")  # each line ends with a newline
        chunks.append("\n".join(out))
    return "".join(chunks)


# ---------------------------------------------------------------------- nft list ruleset
_STD_PRIOS = (
    ("raw", -300),
    ("mangle", -150),
    ("dstnat", -100),
    ("filter", 0),
    ("security", 50),
    ("srcnat", 100),
)


def _prio_text(hook: str, prio: int) -> str:
    """nft's prio2str: a standard name valid for the hook, with an offset up to 10."""
    for name, value in _STD_PRIOS:
        if name == "dstnat" and hook != "prerouting":
            continue
        if name == "srcnat" and hook != "postrouting":
            continue
        offset = prio - value
        if offset == 0:
            return name
        if -10 <= offset <= 10:
            return f"{name} {'-' if offset < 0 else '+'} {abs(offset)}"
    return str(prio)


def _time_text(seconds: int) -> str:
    out, rest = "", seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    if rest or not out:
        out += f"{rest}s"
    return out


def _hex32(value: str) -> str:
    return f"0x{int(value, 0):08x}"


def _anon_set(items: list[str]) -> str:
    """An anonymous set as nft prints it: one element alone is printed bare; addresses and
    prefixes are kept as intervals, sorted, adjacent or overlapping ones merged (two /16s
    side by side list as one /15), each a prefix when it is one, else ``lo-hi``."""
    if len(items) == 1:
        return items[0]
    try:
        nets = [ipaddress.IPv4Network(x, strict=False) for x in items]
    except ValueError:
        return "{ " + ", ".join(items) + " }"
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out = []
    for lo, hi in merged:
        a, b = ipaddress.IPv4Address(lo), ipaddress.IPv4Address(hi)
        prefixes = list(ipaddress.summarize_address_range(a, b))
        if len(prefixes) > 1:
            out.append(f"{a}-{b}")
        elif prefixes[0].prefixlen == 32:
            out.append(str(a))
        else:
            out.append(str(prefixes[0]))
    return "{ " + ", ".join(out) + " }"


def list_rule_text(rule: NftRule) -> str:
    """A rule as ``nft list`` prints it back."""
    if rule.listed:
        return rule.full_text
    body, comment = split_comment(rule.full_text)
    toks = tokenize(body)
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        plain_mark = t == "mark" and (i == 0 or toks[i - 1] != "meta")
        if plain_mark and i + 1 < len(toks) and toks[i + 1] == "set":
            # mark set mark or|xor M  ->  meta mark set meta mark |/^ 0x0000M
            op = {"or": "|", "xor": "^", "and": "&"}.get(toks[i + 3], toks[i + 3])
            out += ["meta mark set meta mark", op, _hex32(toks[i + 4])]
            i += 5
        elif plain_mark and i + 1 < len(toks) and toks[i + 1] == "and":
            out += ["meta mark &", _hex32(toks[i + 2]), toks[i + 3], _hex32(toks[i + 4])]
            i += 5
        elif t == "{":
            depth, j = 0, i
            while True:
                depth += {"{": 1, "}": -1}.get(toks[j], 0)
                if depth == 0:
                    break
                j += 1
            inner = toks[i + 1 : j]
            if ":" in inner or (out and out[-1] in ("@",)) or (out and out[-1].startswith("@")):
                items = " ".join(inner).replace(" , ", ", ").replace(" ,", ",")
                out.append("{ " + items + " }")
            else:
                parts = [p for p in " ".join(inner).replace(",", " ").split() if p]
                out.append(_anon_set(parts))
            i = j + 1
        elif t in ("iifname", "oifname"):
            out.append(t)
            j = i + 1
            if toks[j] in ("!=", "=="):
                out.append(toks[j])
                j += 1
            out.append(f'"{toks[j].strip(chr(34))}"')
            i = j + 1
        else:
            out.append(t)
            i += 1
    text = " ".join(out)
    return f'{text} comment "{comment}"' if comment is not None else text


_KEY_BYTES = {"ipv4_addr": 4, "inet_proto": 1, "inet_service": 2, "mark": 4}


def _element_sort_key(s: NftSet, e: NftElement):
    """nft sorts elements by the key's register bytes (each component in network order,
    padded to 4 bytes) read as one little-endian number: the last component weighs most,
    and 1.2.3.4 lists before 172.30.0.41 (checked against nft 1.0.6)."""
    raw = b""
    for typ, part in zip(s.key_types, e.key):
        try:
            if typ == "ipv4_addr":
                b = ipaddress.IPv4Address(part).packed
            elif typ == "inet_proto":
                b = bytes([{"tcp": 6, "udp": 17, "sctp": 132}.get(part) or int(part)])
            elif typ == "inet_service":
                b = int(part).to_bytes(2, "big")
            else:
                b = int(part, 0).to_bytes(_KEY_BYTES.get(typ, 4), "big")
        except ValueError:
            return (1, " . ".join(e.key))  # not a value nft would sort numerically
        raw += b + bytes(-len(b) % 4)
    return (0, int.from_bytes(raw, "little"))


def _elements_text(s: NftSet) -> str:
    elems = sorted(s.elements.values(), key=lambda e: _element_sort_key(s, e))
    single = ", "
    newline = ",\n\t\t\t     "
    per_line = {"ipv4_addr": 2, "inet_proto": 5, "inet_service": 5, "mark": 5}
    limit = per_line.get(s.type.split(" : ")[0]) if " . " not in s.type.split(" : ")[0] else None
    out, count = [], 0
    for i, e in enumerate(elems):
        if i:
            if limit is not None and count < limit:
                out.append(single)
            else:
                out.append(newline)
                count = 0
        out.append(_element_text(e))
        count += 1
    return "{ " + "".join(out) + " }"


def render_list(rs: NftRuleset) -> str:
    """``nft list ruleset`` of the table: sets and maps, then chains, in creation order."""
    if not rs.exists:
        return ""
    blocks: list[str] = []
    for s in rs.sets.values():
        lines = [f"\t{s.kind} {s.name} {{", f"\t\ttype {s.type}"]
        if "dynamic" in s.flags:
            lines.append("\t\tsize 65535")
        if s.flags:
            lines.append(f"\t\tflags {','.join(s.flags)}")
        if s.timeout is not None:
            lines.append(f"\t\ttimeout {_time_text(s.timeout)}")
        if s.comment is not None:
            lines.append(f'\t\tcomment "{s.comment}"')
        if s.elements:
            lines.append(f"\t\telements = {_elements_text(s)}")
        lines.append("\t}")
        blocks.append("\n".join(lines))
    for c in rs.chains.values():
        lines = [f"\tchain {c.name} {{"]
        if c.comment is not None:
            lines.append(f'\t\tcomment "{c.comment}"')
        if c.hook is not None:
            lines.append(
                f"\t\ttype {c.type} hook {c.hook} priority "
                f"{_prio_text(c.hook, c.priority or 0)}; policy accept;"
            )
        lines += [f"\t\t{list_rule_text(r)}" for r in c.rules]
        lines.append("\t}")
        blocks.append("\n".join(lines))
    head = f"table {_prefix(rs)} {{"
    if rs.comment is not None:
        head += f'\n\tcomment "{rs.comment}"'
    return head + "\n" + "\n\n".join(blocks) + "\n}\n"


# ---------------------------------------------------------------------- dump parser
_LINE_RE = re.compile(r"^add (table|chain|set|map|rule|element) (\S+) (\S+)(?: (\S+))?(?: (.*))?$")


def _braced_fields(text: str, where: str) -> list[str]:
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise InputError("expected '{ ... }'", field=where, value=text)
    return [f.strip() for f in text[1:-1].split(" ;") if f.strip()]


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def parse_dump(text: str, source: str = "<dump>") -> NftRuleset:
    """A knftables dump (``add ...`` lines; blank and ``#`` lines ignored) as a ruleset,
    objects in the order the lines create them."""
    rs: NftRuleset | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        m = _LINE_RE.match(line)
        if m is None:
            raise InputError("not a knftables dump line", field=where, value=line)
        kind, family, table, name, rest = m.groups()
        if rs is None:
            rs = NftRuleset(family, table)
        elif (family, table) != (rs.family, rs.name):
            raise InputError("a second table in one dump", field=where, value=f"{family} {table}")
        if kind == "table":
            rs.exists = True
            spec = " ".join(x for x in (name, rest) if x)
            for f in _braced_fields(spec, where) if spec else []:
                if f.startswith("comment "):
                    rs.comment = _unquote(f[len("comment ") :])
            continue
        if not rs.exists:
            raise InputError("object before its 'add table' line", field=where, value=line)
        if name is None:
            raise InputError("object without a name", field=where, value=line)
        if kind == "chain":
            chain = rs.chains.setdefault(name, NftChain(name))
            for f in _braced_fields(rest, where) if rest else []:
                words = f.split()
                if words[0] == "type":
                    # type TYPE hook HOOK priority PRIO (nft refuses a base chain without one)
                    if len(words) < 6 or words[2] != "hook" or words[4] != "priority":
                        raise InputError(
                            "expected 'type TYPE hook HOOK priority PRIORITY'", field=where, value=f
                        )
                    chain.type, chain.hook = words[1], words[3]
                    chain.priority = _parse_priority(" ".join(words[5:]), where)
                elif words[0] == "comment":
                    chain.comment = _unquote(f[len("comment ") :])
                elif words[0] not in ("policy", "device", "devices"):
                    raise InputError("unknown chain field", field=where, value=f)
        elif kind in ("set", "map"):
            s = NftSet(name, kind, "")
            for f in _braced_fields(rest or "", where):
                key, _, value = f.partition(" ")
                if key == "type":
                    s.type = value
                elif key == "flags":
                    s.flags = tuple(value.split(","))
                elif key == "timeout":
                    s.timeout = _parse_time(value, where)
                elif key == "comment":
                    s.comment = _unquote(value)
                elif key not in ("size", "policy", "gc-interval", "counter", "elements"):
                    raise InputError("unknown set field", field=where, value=f)
            rs.sets.setdefault(name, s)
        elif kind == "rule":
            if name not in rs.chains:
                raise InputError("rule for an undeclared chain", field=where, value=name)
            body, comment = split_comment(rest or "")
            rs.chains[name].rules.append(NftRule(name, body, comment))
        else:
            s_ = rs.sets.get(name)
            if s_ is None:
                raise InputError("element of an undeclared set or map", field=where, value=name)
            inner = (rest or "").strip()
            if not (inner.startswith("{") and inner.endswith("}")):
                raise InputError("expected '{ element }'", field=where, value=inner)
            inner = inner[1:-1].strip()
            key_part, _, value_part = inner.partition(" : ")
            key_part, elem_comment = split_comment(key_part)
            elem_key = tuple(p.strip() for p in key_part.split(" . "))
            elem_value = tuple(p.strip() for p in value_part.split(" . ")) if value_part else ()
            s_.elements[elem_key] = NftElement(elem_key, elem_value, elem_comment)
    if rs is None:
        raise InputError("empty nftables dump", field=source)
    return rs


# ---------------------------------------------------------------------- nft list parser
_PRIO_NAMES = dict(_STD_PRIOS)
_TIME_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def _parse_priority(text: str, where: str) -> int:
    """``dstnat - 10`` / ``filter`` / ``-110`` -> -110 / 0 / -110."""
    words = text.split()
    try:
        if len(words) not in (1, 3) or (len(words) == 3 and words[1] not in "+-"):
            raise ValueError(text)
        base = _PRIO_NAMES[words[0]] if words[0] in _PRIO_NAMES else int(words[0])
        if len(words) == 3:
            base += int(words[2]) * (-1 if words[1] == "-" else 1)
        return base
    except (ValueError, IndexError):
        raise InputError("cannot read chain priority", field=where, value=text) from None


def _parse_time(text: str, where: str) -> int:
    total, rest = 0.0, text
    for m in re.finditer(r"(\d+)(ms|d|h|m|s)", text):
        total += int(m.group(1)) * _TIME_UNITS[m.group(2)]
        rest = rest.replace(m.group(0), "", 1)
    if rest.strip() or not text:
        raise InputError("cannot read a timeout", field=where, value=text)
    return int(total)


def _split_elements(text: str) -> list[str]:
    """Top-level ", " separated items of an ``elements = { ... }`` body (quotes respected)."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        items.append("".join(cur).strip())
    return items


def parse_list(
    text: str, family: str = "ip", name: str = "kube-proxy", source: str = "<nft list ruleset>"
) -> NftRuleset:
    """The ``table <family> <name>`` of ``nft list ruleset`` output (other tables are
    skipped), e.g. a real node's, as a ruleset the evaluator can run. Rules keep nft's
    spelling (``meta mark set meta mark | 0x00004000``), which the evaluator reads too;
    ``# handle N`` annotations (``nft -a``) are dropped."""
    rs = NftRuleset(family, name)
    lines = text.splitlines()
    i, n = 0, len(lines)
    found = False
    while i < n:
        line = lines[i].strip()
        i += 1
        if not line.startswith("table "):
            continue
        words = line.split()
        inside = len(words) >= 4 and words[1] == family and words[2] == name
        depth = 1
        while i < n and depth:
            raw = lines[i]
            where = f"{source}:{i + 1}"
            body = re.sub(r"\s*# handle \d+\s*$", "", raw).strip()
            i += 1
            if not inside:
                depth += body.count("{") - body.count("}")
                continue
            if body == "}":
                depth -= 1
                continue
            if body.startswith("comment ") and depth == 1:
                rs.comment = _unquote(body[len("comment ") :])
                continue
            m = re.match(r"^(set|map|chain|flowtable|counter|quota|ct|limit) (\S+) \{$", body)
            if m is None:
                if body:
                    raise InputError("unexpected line in a table", field=where, value=body)
                continue
            kind, obj_name = m.groups()
            block: list[tuple[str, str]] = []
            while i < n:
                inner = re.sub(r"\s*# handle \d+\s*$", "", lines[i]).strip()
                block_where = f"{source}:{i + 1}"
                i += 1
                if inner == "}":
                    break
                if inner.startswith("elements = {"):  # may continue over several lines
                    while not inner.rstrip().endswith("}") and i < n:
                        inner += " " + lines[i].strip()
                        i += 1
                block.append((inner, block_where))
            if kind in ("set", "map"):
                s = NftSet(obj_name, kind, "")
                for inner, bw in block:
                    key, _, value = inner.partition(" ")
                    if key == "type":
                        s.type = value
                    elif key == "flags":
                        s.flags = tuple(f.strip() for f in value.split(","))
                    elif key == "timeout":
                        s.timeout = _parse_time(value, bw)
                    elif key == "comment":
                        s.comment = _unquote(value)
                    elif key == "elements":
                        body_text = value.partition("{")[2].rpartition("}")[0]
                        for item in _split_elements(body_text):
                            key_part, _, value_part = item.partition(" : ")
                            key_part, elem_comment = split_comment(key_part)
                            elem_key = tuple(p.strip() for p in key_part.split(" . "))
                            elem_value = (
                                tuple(p.strip() for p in value_part.split(" . "))
                                if value_part
                                else ()
                            )
                            s.elements[elem_key] = NftElement(elem_key, elem_value, elem_comment)
                    elif key not in ("size", "policy", "gc-interval", "auto-merge"):
                        raise InputError(f"unsupported {kind} attribute", field=bw, value=inner)
                rs.sets[obj_name] = s
            elif kind == "chain":
                chain = NftChain(obj_name)
                for inner, bw in block:
                    if inner.startswith("type ") and " hook " in inner:
                        m2 = re.match(
                            r"^type (\S+) hook (\S+)(?: device \S+)? priority "
                            r"([^;]+);",
                            inner,
                        )
                        if m2 is None:
                            raise InputError("cannot read base chain", field=bw, value=inner)
                        chain.type, chain.hook = m2.group(1), m2.group(2)
                        chain.priority = _parse_priority(m2.group(3).strip(), bw)
                    elif inner.startswith("comment ") and not chain.rules:
                        chain.comment = _unquote(inner[len("comment ") :])
                    elif inner:
                        body_text, rule_comment = split_comment(inner)
                        chain.rules.append(NftRule(obj_name, body_text, rule_comment, listed=True))
                rs.chains[obj_name] = chain
            # stateful objects and flowtables: not part of kube-proxy's table
        if inside:
            rs.exists = found = True
    if not found:
        raise InputError(f"no 'table {family} {name}' in the listing", field=source)
    return rs
