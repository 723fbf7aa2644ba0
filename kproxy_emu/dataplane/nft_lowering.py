"""Lowering: an nftables table (NftRuleset) to the packed arrays cext/nftmaps.pyx walks.

Each rule becomes a range of ``EXPR_DTYPE`` rows, one per expression in rule order (a
compare, a set lookup, a verdict-map lookup, numgen, fib, ct, a mark or set-update
statement, NAT, a verdict), as nf_tables keeps a rule as a list of expressions; every row
knows where its rule ends. A chain is its rules' rows closed by an END row, and jumps (in
rules, maps and numgen tables) point at a chain's first row, so walking a chain touches
only the rows themselves (few cache lines per packet in a table of millions of rows).
Base chains are listed per hook in priority order. Sets and maps become
per-set open-addressing hash tables keyed by the concatenated key packed into 64 bits
(``ipv4_addr . inet_proto . inet_service`` = 32 + 8 + 16 bits), or sorted, merged ranges
for interval sets (CIDRs, port ranges); anonymous ``{ ... }`` literals become sets too.
``numgen random mod N vmap { ... }`` keeps an inline table of N verdict cells. Dynamic sets
(session affinity) live in arrays the caller owns; their ids stay stable across syncs, like
endpoint indices. The dtypes mirror the structs in cext/nftmaps.pyx (tests check it).

Whatever the lowering does not understand is an InputError naming the chain and the rule,
never a rule that silently evaluates differently.
"""

from __future__ import annotations

import re
import socket
import struct
from array import array
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._cext import nftmaps
from ..errors import InputError
from ..netfilter.nft import (
    Match,
    NftError,
    NftRuleset,
    NftSet,
    Statement,
    parse_rule,
    split_comment,
)
from ..packets import PROTO_NUMBERS
from .nft_reference import _norm_value

EXPR_DTYPE = np.dtype(
    [
        ("op", "u1"),
        ("neg", "u1"),
        ("nsel", "u1"),
        ("vkind", "u1"),
        ("sel0", "u1"),
        ("sel1", "u1"),
        ("sel2", "u1"),
        ("sel3", "u1"),
        ("set", "i4"),
        ("arg", "u4"),
        ("target", "i4"),
        ("next", "i4"),
        ("lo", "u4"),
        ("hi", "u4"),
    ],
    align=True,
)
BASE_DTYPE = np.dtype([("start", "i4"), ("priority", "i4"), ("nat", "u1")], align=True)
SET_DTYPE = np.dtype(
    [
        ("kind", "u1"),
        ("is_map", "u1"),
        ("nkey", "u1"),
        ("_pad", "u1"),
        ("off", "i4"),
        ("n", "i4"),
        ("mask", "u4"),
        ("timeout", "f8"),
    ],
    align=True,
)
SLOT_DTYPE = np.dtype(
    [("key", "u8"), ("used", "u1"), ("vkind", "u1"), ("vchain", "i4")], align=True
)
INTERVAL_DTYPE = np.dtype(
    [("lo", "u8"), ("hi", "u8"), ("vkind", "u1"), ("vchain", "i4")], align=True
)
CELL_DTYPE = np.dtype([("vkind", "u1"), ("vchain", "i4")], align=True)

# must equal the enums in cext/nftmaps.pyx
E = {
    "CMP": 1,
    "LOOKUP": 2,
    "VMAP": 3,
    "NUMGEN": 4,
    "FIB": 5,
    "CT_STATE": 6,
    "IIF": 7,
    "OIF": 8,
    "MARK_SET": 9,
    "SET_UPDATE": 10,
    "DNAT": 11,
    "MASQ": 12,
    "SNAT": 13,
    "VERDICT": 14,
    "NOP": 15,
    "END": 16,
}
VK = {
    "none": 0,
    "accept": 1,
    "drop": 2,
    "reject": 3,
    "return": 4,
    "jump": 5,
    "goto": 6,
    "continue": 7,
}
SEL = {
    ("ip", "saddr"): 1,
    ("ip", "daddr"): 2,
    ("meta", "l4proto"): 3,
    ("ip", "protocol"): 3,
    ("th", "dport"): 4,
    ("th", "sport"): 5,
    ("meta", "mark"): 6,
}
SEL_TYPE = {
    1: "ipv4_addr",
    2: "ipv4_addr",
    3: "inet_proto",
    4: "inet_service",
    5: "inet_service",
    6: "mark",
}
TYPE_BITS = {"ipv4_addr": 32, "inet_proto": 8, "inet_service": 16, "mark": 32}
SK_HASH, SK_INTERVAL, SK_DYNAMIC = 1, 2, 3
# ctstate bits as conntrack_core reports them (xt_conntrack XT_CONNTRACK_STATE_*)
CT_STATE_BITS = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 256}
CT_STATUS_BITS = {"snat": 512, "dnat": 1024}
# the hooks, in the engine's hook_off order
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
# interfaces as the nftables reference sees them: packets from pods come in on the CNI
# bridge, from outside on eth0, from the host on none; they leave on eth0 (the output,
# forward and postrouting hooks have an output interface, prerouting and input none)
IIF_BY_ORIGIN = ((0, "cni0"), (1, "eth0"), (2, ""))
OIF = "eth0"
MAX_JUMP_DEPTH = 16  # NFT_JUMP_STACK_SIZE: the kernel refuses deeper rulesets at load time
MAX_NUMGEN = 1 << 16


@dataclass
class LoweredNft:
    exprs: np.ndarray  # EXPR_DTYPE: every chain's rules, each chain closed by END
    sets: np.ndarray  # SET_DTYPE, one per named or anonymous set/map
    slots: np.ndarray  # SLOT_DTYPE, the hash sets' tables back to back
    intervals: np.ndarray  # INTERVAL_DTYPE, the interval sets' ranges back to back
    cells: np.ndarray  # CELL_DTYPE, numgen vmap tables back to back
    hook_off: np.ndarray  # int32[6]: hook h's base chains are bases[off[h]:off[h+1]]
    bases: np.ndarray  # BASE_DTYPE: base chains by hook, then priority
    chain_start: np.ndarray  # int32: each chain's first expression (jump targets point here)
    rule_start: np.ndarray  # int32: each rule's first expression, in chain order
    chain_names: list[str]
    set_names: list[str]  # anonymous sets are named "{chain}#{rule}"
    endpoints: list[str]  # DNAT destinations ("ip:port"); verdict endpoint indexes this
    dynamic_sets: list[str]  # dynamic set ids (the caller's dynamic table is keyed on them)

    def engine_arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays nftmaps.NftEngine takes before the node addresses, in its order
        (lower_nft has run nftmaps.check on them; the engine checks them again, once)."""
        return (
            self.exprs,
            self.sets,
            self.slots,
            self.intervals,
            self.cells,
            self.hook_off,
            self.bases,
        )


class _Unsupported(Exception):
    pass


def _ip(text: str) -> int:
    """A dotted quad, strictly (inet_pton: four decimal parts, no octal)."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        _bad(f"not an IPv4 address: {text}")
    return 0


_ADDR = r"(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)"
_NAME = r"([\w./-]+)"
_FAST = (
    # the shapes kube-proxy writes once per endpoint or service, which dominate large tables
    (
        re.compile(rf"ip saddr {_ADDR} jump {_NAME}"),
        lambda m: [Match((("ip", "saddr"),), values=(m[1],)), Statement("jump", m[2])],
    ),
    (
        re.compile(rf"meta l4proto (tcp|udp|sctp) dnat to {_ADDR}:(\d+)"),
        lambda m: [
            Match((("meta", "l4proto"),), values=(m[1],)),
            Statement("dnat", f"{m[2]}:{m[3]}"),
        ],
    ),
    (
        re.compile(rf"ip daddr {_ADDR} ip saddr != {_ADDR} jump {_NAME}"),
        lambda m: [
            Match((("ip", "daddr"),), values=(m[1],)),
            Match((("ip", "saddr"),), "!=", values=(m[2],)),
            Statement("jump", m[3]),
        ],
    ),
    (
        re.compile(
            r"numgen random mod (\d+) vmap \{ ((?:\d+ : goto [\w./-]+ , )*"
            r"\d+ : goto [\w./-]+) \}"
        ),
        lambda m: [
            Match(
                (("numgen", "random", "mod", m[1]),),
                is_vmap=True,
                vmap={
                    k: f"goto {c}"
                    for k, c in (part.split(" : goto ") for part in m[2].split(" , "))
                },
            )
        ],
    ),
)


# the builder packs each row straight into EXPR_DTYPE's bytes (a tuple per row would be
# several times the memory; nftmaps.lower_rules writes the endpoint rules' rows there
# too); struct also refuses a value out of its field's range
_ROW = struct.Struct("<8BiIiiII")
assert _ROW.size == EXPR_DTYPE.itemsize


def fast_parse(text: str) -> list | None:
    """parse_rule's items for the few rule shapes kube-proxy repeats per endpoint and
    service (None for any other text): the same items, without the general tokenizer.
    tests/test_nft_engine.py checks both agree on whole tables."""
    for pattern, build in _FAST:
        m = pattern.fullmatch(text)
        if m is not None:
            return build(m)
    return None


def _fully_random(text: str) -> bool:
    """The NAT statement's ``fully-random`` flag (parse_rule keeps no NAT flags)."""
    return "fully-random" in split_comment(text)[0].replace(",", " ").split()


def _bad(message: str):
    raise _Unsupported(message)


@lru_cache(maxsize=1 << 16)  # values repeat a lot (protocols, ports, endpoint addresses)
def _component(typ: str, text: str) -> tuple[int, int]:
    """A key component as an inclusive (lo, hi) range (lo == hi for a single value)."""
    if typ == "mark":
        v = int(text, 0)
        return v, v
    if typ not in TYPE_BITS:
        _bad(f"key type {typ} is not supported by the engine")
    if typ == "ipv4_addr" and text.count(".") == 3 and "/" not in text and "-" not in text:
        v = _ip(text)
        return v, v
    try:
        v = _norm_value(typ, text)
    except (ValueError, TypeError):
        _bad(f"bad {typ} value {text!r}")
    if v is None:
        _bad(f"unknown protocol {text!r}")
    lo, hi = v if isinstance(v, tuple) else (v, v)
    if not 0 <= lo <= hi < (1 << TYPE_BITS[typ]):
        _bad(f"{typ} value out of range: {text!r}")
    return lo, hi


class _Builder:
    def __init__(
        self, table: NftRuleset, endpoints: list[str], dynamic_sets: list[str], direct: bool = True
    ):
        self.table = table
        self.direct = direct
        self.endpoints = endpoints
        self.endpoint_index = {ep: i for i, ep in enumerate(endpoints)}
        self.dynamic_sets = dynamic_sets
        self.dynamic_index = {n: i for i, n in enumerate(dynamic_sets)}
        self.chain_names = list(table.chains)
        self.chain_index = {n: i for i, n in enumerate(self.chain_names)}
        self.set_names: list[str] = []
        self.set_index: dict[str, int] = {}
        self.set_rows: list[tuple] = []
        self.slot_parts: list[np.ndarray] = []
        self.slot_total = 0
        self.interval_parts: list[np.ndarray] = []
        self.interval_total = 0
        self.cells: list[tuple[int, int]] = []
        self.exprs = bytearray()  # the rows, packed by _ROW
        # jumps between chains, for check_depth: (from, to) pairs, and (chain, map) for
        # every verdict-map lookup (the map's targets are its set row's map_targets)
        self.edge_src = array("l")
        self.edge_dst = array("l")
        self.map_uses: list[tuple[int, int]] = []
        self.map_targets: list[set[int]] = []  # per set row
        self.cur_chain = -1

    # ------------------------------------------------------------------ verdicts
    def verdict(self, words: list[str], edge: bool = True) -> tuple[int, int]:
        """A verdict's (kind, chain); ``edge``: record the jump from the current chain."""
        if not words or words[0] not in VK or words[0] == "none":
            _bad(f"verdict {' '.join(words)!r} is not supported by the engine")
        kind = words[0]
        if kind in ("jump", "goto"):
            if len(words) != 2 or words[1] not in self.chain_index:
                _bad(f"{kind} to a chain the table lacks: {' '.join(words[1:])}")
            target = self.chain_index[words[1]]
            if edge and self.cur_chain >= 0:
                self.edge(target)
            return VK[kind], target
        if len(words) != 1:
            _bad(f"verdict {' '.join(words)!r} is not supported by the engine")
        return VK[kind], -1

    def edge(self, target: int) -> None:
        self.edge_src.append(self.cur_chain)
        self.edge_dst.append(target)

    # ------------------------------------------------------------------ sets
    def named_set(self, name: str, key_types: list[str], want_map: bool) -> int:
        s = self.table.sets.get(name)
        if s is None:
            _bad(f"set @{name} is not in the table")
        if (s.kind == "map") != want_map:
            _bad(f"@{name} is a {s.kind}, used as a {'map' if want_map else 'set'}")
        if s.key_types != key_types:
            _bad(
                f"@{name} has key type {' . '.join(s.key_types)}, the rule gives "
                f"{' . '.join(key_types)}"
            )
        if want_map and s.value_type != "verdict":
            _bad(f"map @{name} holds {s.value_type}, not verdicts")
        if name not in self.set_index:
            self.set_index[name] = self.add_set(name, s)
        return self.set_index[name]

    def add_set(self, name: str, s: NftSet) -> int:
        key_types = s.key_types
        is_map = s.kind == "map"
        if sum(TYPE_BITS.get(t, 99) for t in key_types) > 64:
            _bad(
                f"set @{name}: key {' . '.join(key_types)} is wider than 64 bits or has a "
                "type the engine does not support"
            )
        if "dynamic" in s.flags:
            if is_map or key_types != ["ipv4_addr"] or s.elements:
                _bad(f"dynamic set @{name}: only empty ipv4_addr sets are supported")
            if name not in self.dynamic_index:
                self.dynamic_index[name] = len(self.dynamic_sets)
                self.dynamic_sets.append(name)
            return self._set_row(
                name, SK_DYNAMIC, False, 1, self.dynamic_index[name], 0, 0, float(s.timeout or 0)
            )
        elems = [(e.key, e.value) for e in s.elements.values()]
        return self.literal_set(name, key_types, elems, is_map, "interval" in s.flags)

    def literal_set(
        self,
        name: str,
        key_types: list[str],
        elems: list[tuple[tuple[str, ...], tuple[str, ...]]],
        is_map: bool,
        interval: bool = False,
    ) -> int:
        keys_lo, keys_hi, cells = [], [], []
        ranged = interval
        for key, value in elems:
            if len(key) != len(key_types):
                _bad(f"element {' . '.join(key)} does not fit key {' . '.join(key_types)}")
            lo = hi = 0
            for typ, part in zip(key_types, key):
                a, b = _component(typ, part)
                ranged |= a != b
                bits = TYPE_BITS[typ]
                lo, hi = (lo << bits) | a, (hi << bits) | b
            keys_lo.append(lo)
            keys_hi.append(hi)
            cells.append(self.verdict(" ".join(value).split(), edge=False) if is_map else (0, -1))
        if ranged:
            if len(key_types) != 1:
                _bad(f"set {name}: ranges in a concatenated key are not supported")
            return self._interval_set(name, keys_lo, keys_hi, cells, is_map)
        size = 2
        while size < 2 * len(keys_lo):
            size *= 2
        slots = np.zeros(size, SLOT_DTYPE)
        if keys_lo and nftmaps.build_hash(
            slots,
            np.array(keys_lo, np.uint64),
            np.array([c[0] for c in cells], np.uint8),
            np.array([c[1] for c in cells], np.int32),
        ) != len(keys_lo):
            _bad(f"set {name}: duplicate keys")
        row = self._set_row(
            name,
            SK_HASH,
            is_map,
            len(key_types),
            self.slot_total,
            len(keys_lo),
            size - 1,
            0.0,
            cells,
        )
        self.slot_parts.append(slots)
        self.slot_total += size
        return row

    def _interval_set(self, name, los, his, cells, is_map) -> int:
        order = sorted(range(len(los)), key=lambda i: (los[i], his[i]))
        merged: list[list] = []
        for i in order:
            if merged and los[i] <= merged[-1][1] + (0 if is_map else 1):
                if is_map:
                    _bad(f"map {name}: overlapping intervals")
                merged[-1][1] = max(merged[-1][1], his[i])  # a set: merge (nft auto-merge)
            else:
                merged.append([los[i], his[i], *cells[i]])
        arr = np.zeros(len(merged), INTERVAL_DTYPE)
        for k, (lo, hi, vk, vc) in enumerate(merged):
            arr[k]["lo"], arr[k]["hi"], arr[k]["vkind"], arr[k]["vchain"] = lo, hi, vk, vc
        row = self._set_row(
            name, SK_INTERVAL, is_map, 1, self.interval_total, len(merged), 0, 0.0, cells
        )
        self.interval_parts.append(arr)
        self.interval_total += len(merged)
        return row

    def _set_row(self, name, kind, is_map, nkey, off, n, mask, timeout, cells=()) -> int:
        # a map's jump/goto targets: edges from every chain that looks it up (check_depth)
        self.map_targets.append({c for k, c in cells if k in (VK["jump"], VK["goto"])})
        self.set_names.append(name)
        self.set_rows.append((kind, int(is_map), nkey, 0, off, n, mask, timeout))
        return len(self.set_rows) - 1

    # ------------------------------------------------------------------ rules
    def expr(
        self,
        op: str,
        *,
        neg=False,
        sels=(),
        vkind=0,
        set=-1,
        arg=0,
        chain=-1,
        lo=0,
        hi=0,
        mask=0xFFFFFFFF,
    ) -> None:
        """One row; a compare keeps its mask in ``arg``; ``target`` holds the chain index
        until lower_nft turns it into the chain's first expression; ``next`` (the rule's
        end) is filled there too."""
        s = list(sels) + [0] * (4 - len(sels))
        self.exprs += _ROW.pack(
            E[op],
            int(neg),
            len(sels),
            vkind,
            *s,
            set,
            mask if op == "CMP" else arg,
            chain,
            -1,
            lo,
            hi,
        )

    def rule(self, chain: str, text: str, index: int) -> None:
        """Rule ``index`` of ``chain`` the general way; its anonymous sets are named
        "{chain}#{index}.{k}"."""
        items = fast_parse(text)
        if items is None:
            try:
                items, _ = parse_rule(text)
            except (NftError, IndexError, ValueError) as exc:
                _bad(f"cannot parse ({getattr(exc, 'message', exc)})")
        for k, it in enumerate(items):
            if isinstance(it, Match):
                self.match(it, f"{chain}#{index}.{k}")
            else:
                self.statement(it, text)

    def lower_rule(self, chain: str, text: str, index: int) -> None:
        """Rule ``index`` of ``chain``, one nftmaps.lower_chains did not take, the general
        way, its errors as InputError."""
        try:
            self.rule(chain, text, index)
        except (_Unsupported, ValueError, KeyError, IndexError) as exc:
            raise InputError(
                f"cannot lower nftables rule: {exc}",
                obj=f"chain {chain}",
                field=f"rule {index}",
                value=text,
            ) from None

    def selectors(self, m: Match) -> list[int]:
        out = []
        for s in m.selectors:
            if s in SEL:
                out.append(SEL[s])
            elif len(s) == 2 and s[0] in ("tcp", "udp", "sctp") and s[1] in ("dport", "sport"):
                out.append(SEL[("th", s[1])])
            else:
                _bad(f"selector {' '.join(s)!r} is not supported by the engine")
        return out

    def proto_dependency(self, m: Match) -> None:
        """``tcp dport`` carries nft's implicit ``meta l4proto tcp`` dependency."""
        for s in m.selectors:
            if len(s) == 2 and s[0] in ("tcp", "udp", "sctp"):
                p = PROTO_NUMBERS[s[0]]
                self.expr("CMP", sels=[SEL[("meta", "l4proto")]], lo=p, hi=p)

    def match(self, m: Match, anon: str) -> None:
        first = m.selectors[0]
        neg = m.op == "!="
        if m.op not in ("==", "!="):
            _bad(f"operator {m.op} is not supported by the engine")
        if first[0] == "numgen":
            if (
                len(m.selectors) != 1
                or first[1] != "random"
                or first[2] != "mod"
                or not m.is_vmap
                or m.vmap is None
            ):
                _bad("only 'numgen random mod N vmap { ... }' is supported")
            n = int(first[3])
            if not 0 < n <= MAX_NUMGEN:
                _bad(f"numgen modulus {n} out of range")
            off = len(self.cells)
            table = [(0, -1)] * n
            for key, verdict in m.vmap.items():
                idx = int(key, 0)
                if not 0 <= idx < n:
                    _bad(f"numgen vmap key {key} is not below the modulus {n}")
                table[idx] = self.verdict(verdict.split())
            self.cells.extend(table)
            self.expr("NUMGEN", set=off, arg=n)
            return
        if first[0] == "fib":
            if (
                len(m.selectors) != 1
                or first[2] != "type"
                or list(m.values) != ["local"]
                or first[1] not in ("saddr", "daddr")
            ):
                _bad("only 'fib saddr|daddr type [!=] local' is supported")
            self.expr("FIB", neg=neg, arg=1 if first[1] == "saddr" else 2)
            return
        if first[0] == "ct":
            bits = (
                CT_STATE_BITS
                if first[1] == "state"
                else CT_STATUS_BITS
                if first[1] == "status"
                else None
            )
            if bits is None or len(m.selectors) != 1 or m.set_name or m.is_vmap:
                _bad(f"ct {first[1]} is not supported by the engine")
            words = [w for v in m.values for w in v.split(",") if w]
            if any(w not in bits for w in words):
                _bad(f"ct {first[1]} value {','.join(words)} is not supported by the engine")
            self.expr("CT_STATE", neg=neg, lo=sum(bits[w] for w in set(words)))
            return
        if first[0] == "meta" and first[1] in ("iifname", "oifname"):
            if len(m.selectors) != 1 or m.set_name or m.is_vmap:
                _bad(f"{first[1]} only with literal names")
            names = [v.strip('"') for v in m.values]

            def hit(iface: str) -> bool:
                return any(
                    iface.startswith(n[:-1]) if n.endswith("*") else iface == n for n in names
                )

            if first[1] == "iifname":
                bits = sum(1 << o for o, iface in IIF_BY_ORIGIN if hit(iface))
                self.expr("IIF", neg=neg, lo=bits)
            else:  # bit 0: a hook without output interface, bit 1: one leaving on eth0
                self.expr("OIF", neg=neg, lo=int(hit("")) | (int(hit(OIF)) << 1))
            return
        sels = self.selectors(m)
        self.proto_dependency(m)
        key_types = [SEL_TYPE[s] for s in sels]
        if m.mask is not None and (len(sels) != 1 or m.set_name or m.is_vmap):
            _bad("a mask only on a single compared value")
        if m.is_vmap:
            if m.set_name is not None:
                idx = self.named_set(m.set_name, key_types, True)
            else:
                elems = [
                    (tuple(p.strip() for p in k.split(" . ")), (v,))
                    for k, v in (m.vmap or {}).items()
                ]
                idx = self.literal_set(anon, key_types, elems, True)
            self.expr("VMAP", sels=sels, set=idx)
            self.map_uses.append((self.cur_chain, idx))
            return
        if m.set_name is not None:
            idx = self.named_set(m.set_name, key_types, False)
            self.expr("LOOKUP", neg=neg, sels=sels, set=idx)
            return
        values = [v for v in m.values if v.strip()]
        if not values:
            _bad("a match without values")
        if len(values) == 1 and len(sels) == 1:
            lo, hi = _component(key_types[0], values[0])
            mask = int(m.mask, 0) if m.mask is not None else 0xFFFFFFFF
            if m.mask is not None and (lo & ~mask or hi != lo):
                _bad("a masked compare with a value outside the mask")
            self.expr("CMP", neg=neg, sels=sels, lo=lo, hi=hi, mask=mask)
            return
        elems = [(tuple(p.strip() for p in v.split(" . ")), ()) for v in values]
        idx = self.literal_set(anon, key_types, elems, False)
        self.expr("LOOKUP", neg=neg, sels=sels, set=idx)

    def statement(self, st: Statement, text: str) -> None:
        kind = st.kind
        if kind in ("counter", "log"):
            self.expr("NOP")
        elif kind == "mark_set":
            op, value = st.arg  # type: ignore[misc]
            v = int(value, 0) & 0xFFFFFFFF
            # new mark = (mark & and_mask) ^ xor, as nft's bitwise expression computes it
            and_xor = {
                "or": (~v & 0xFFFFFFFF, v),
                "xor": (0xFFFFFFFF, v),
                "and": (v, 0),
                "set": (0, v),
            }.get(op)
            if and_xor is None:
                _bad(f"mark set with {op!r} is not supported by the engine")
            self.expr("MARK_SET", lo=and_xor[0], hi=and_xor[1])
        elif kind == "set_update":
            name, sel = st.arg  # type: ignore[misc]
            if sel not in (("ip", "saddr"), ("ip", "daddr")):
                _bad(f"set update keyed on {' '.join(sel)} is not supported by the engine")
            idx = self.named_set(name, ["ipv4_addr"], False)
            if self.set_rows[idx][0] != SK_DYNAMIC:
                _bad(f"update of @{name}, which is not a dynamic set")
            self.expr("SET_UPDATE", sels=[SEL[sel]], set=idx)
        elif kind == "dnat":
            dest = str(st.arg)
            ip, sep, port = dest.rpartition(":")
            if not sep:
                ip, port = dest, "0"
            if dest not in self.endpoint_index:
                self.endpoint_index[dest] = len(self.endpoints)
                self.endpoints.append(dest)
            self.expr("DNAT", arg=self.endpoint_index[dest], lo=_ip(ip), hi=int(port))
        elif kind == "masquerade":
            self.expr("MASQ", arg=int(_fully_random(text)))
        elif kind == "snat":
            dest = str(st.arg)
            if ":" in dest or "-" in dest:
                _bad("snat to a port or address range is not supported by the engine")
            self.expr("SNAT", arg=int(_fully_random(text)), lo=_ip(dest))
        elif kind in ("accept", "drop", "reject", "return", "continue"):
            self.expr("VERDICT", vkind=VK[kind])
        elif kind in ("jump", "goto"):
            vk, target = self.verdict([kind, str(st.arg)])
            self.expr("VERDICT", vkind=vk, chain=target)
        else:
            _bad(f"statement {kind} is not supported by the engine")

    def check_depth(self) -> None:
        """Jumps and gotos at most MAX_JUMP_DEPTH deep and loop-free, as nft_chain_validate
        requires before the kernel accepts a ruleset.

        Each chain's depth (1 + its deepest target's) by rounds over all edges at once: on
        a loop-free table the depths settle after as many rounds as the deepest chain; a
        table that has not settled after MAX_JUMP_DEPTH + 2 rounds, or settled deeper than
        the limit, has a loop or is too deep, and the walk below names the chain."""
        src = np.frombuffer(self.edge_src, np.int_) if self.edge_src else np.zeros(0, np.int_)
        dst = np.frombuffer(self.edge_dst, np.int_) if self.edge_dst else np.zeros(0, np.int_)
        if self.map_uses:
            used = [(c, t) for c, idx in self.map_uses for t in self.map_targets[idx]]
            if used:
                pairs = np.array(used, np.int_)
                src, dst = np.concatenate((src, pairs[:, 0])), np.concatenate((dst, pairs[:, 1]))
        n = len(self.chain_names)
        depth = np.ones(n, np.int_)
        for _ in range(MAX_JUMP_DEPTH + 2):
            new = np.ones(n, np.int_)
            np.maximum.at(new, src, depth[dst] + 1)
            if (new == depth).all():  # settled: loop-free
                if depth.max(initial=0) <= MAX_JUMP_DEPTH + 1:
                    return
                break
            depth = new
        edges: dict[int, set[int]] = {i: set() for i in range(n)}
        for a, b in zip(src.tolist(), dst.tolist()):
            edges[a].add(b)
        self._walk_depth(edges)

    def _walk_depth(self, edges: dict[int, set[int]]) -> None:
        """The exact check, chain by chain: raises for the first loop or too deep chain."""
        depth: dict[int, int] = {}
        for start in range(len(self.chain_names)):
            if start in depth:
                continue
            stack = [(start, iter(sorted(edges[start])))]
            on_path = {start}
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    on_path.discard(node)
                    depth[node] = 1 + max((depth[c] for c in edges[node]), default=0)
                    continue
                if nxt in on_path:
                    raise InputError(
                        "jump loop",
                        obj=f"table {self.table.family} {self.table.name}",
                        field=f"chain {self.chain_names[node]}",
                        value=f"jump/goto {self.chain_names[nxt]}",
                    )
                if nxt not in depth:
                    on_path.add(nxt)
                    stack.append((nxt, iter(sorted(edges[nxt]))))
            if depth[start] > MAX_JUMP_DEPTH + 1:
                raise InputError(
                    f"chains nest deeper than {MAX_JUMP_DEPTH}",
                    obj=f"table {self.table.family} {self.table.name}",
                    field=f"chain {self.chain_names[start]}",
                )


def lower_nft(
    table: NftRuleset,
    endpoints: list[str] | None = None,
    dynamic_sets: list[str] | None = None,
    *,
    direct: bool = True,
) -> LoweredNft:
    """Lower the table. ``endpoints`` / ``dynamic_sets`` are the tables to extend (new
    entries appended, existing ones keep their index), so verdict endpoint indices and the
    caller's dynamic-set contents stay valid across syncs. ``direct`` False lowers the
    endpoint chains' rules the general way too (the tests compare both)."""
    if table.family != "ip":
        raise InputError(
            "the nftables engine handles the ip family only",
            obj=f"table {table.family} {table.name}",
            field="family",
            value=table.family,
        )
    endpoints = [] if endpoints is None else endpoints
    dynamic_sets = [] if dynamic_sets is None else dynamic_sets
    b = _Builder(table, endpoints, dynamic_sets, direct)
    chains = list(table.chains.values())
    base_rows: list[tuple[int, str, int, int]] = []  # (chain, hook, priority, nat)
    bad: InputError | None = None
    for cid, chain in enumerate(chains):
        if chain.is_base:
            if chain.hook not in HOOKS or chain.type not in ("filter", "nat"):
                bad = InputError(
                    "base chain type/hook not supported by the engine",
                    obj=f"chain {chain.name}",
                    field="type/hook",
                    value=f"{chain.type} {chain.hook}",
                )
                del chains[cid:]  # the chains before it are lowered first (their errors first)
                break
            base_rows.append((cid, chain.hook, chain.priority or 0, int(chain.type == "nat")))
    # each chain's first row, each rule's first row and the row after it (flat): byte
    # offsets into b.exprs; the rows themselves in C, the general rules by b.lower_rule
    chain_start = array("l")
    rule_bounds = array("l")
    nftmaps.lower_chains(b, chains, chain_start, rule_bounds, direct, MAX_NUMGEN)
    if bad is not None:
        raise bad
    for name, s in table.sets.items():  # sets no rule uses: their elements must lower too
        if name not in b.set_index:
            try:
                b.set_index[name] = b.add_set(name, s)
            except (_Unsupported, ValueError, KeyError, IndexError) as exc:
                raise InputError(
                    f"cannot lower nftables {s.kind}: {exc}",
                    obj=f"{s.kind} {name}",
                    field="elements",
                ) from None
    b.check_depth()

    exprs = np.frombuffer(b.exprs, EXPR_DTYPE)  # the builder's bytes, not a copy
    starts = (np.frombuffer(chain_start, np.int_) // _ROW.size).astype(np.int32)
    bounds = (np.frombuffer(rule_bounds, np.int_) // _ROW.size).astype(np.int32).reshape(-1, 2)
    # each row's rule end (where a failed match goes on); END rows are outside every rule
    exprs["next"][exprs["op"] != E["END"]] = np.repeat(bounds[:, 1], bounds[:, 1] - bounds[:, 0])
    # jump/goto targets: chain index -> the chain's first expression
    jg = (exprs["op"] == E["VERDICT"]) & np.isin(exprs["vkind"], (VK["jump"], VK["goto"]))
    exprs["target"][jg] = starts[exprs["target"][jg]]
    slots = np.concatenate(b.slot_parts) if b.slot_parts else np.zeros(0, SLOT_DTYPE)
    intervals = (
        np.concatenate(b.interval_parts) if b.interval_parts else np.zeros(0, INTERVAL_DTYPE)
    )
    cells = np.array(b.cells, CELL_DTYPE) if b.cells else np.zeros(0, CELL_DTYPE)
    for arr, live in ((slots, slots["used"] != 0), (intervals, True), (cells, True)):
        m = live & np.isin(arr["vkind"], (VK["jump"], VK["goto"]))
        arr["vchain"][m] = starts[arr["vchain"][m]]
    base_rows.sort(key=lambda r: (HOOKS.index(r[1]), r[2]))  # stable: creation order on ties
    bases = np.array([(starts[c], prio, nat) for c, _, prio, nat in base_rows], BASE_DTYPE)
    hook_off = np.zeros(len(HOOKS) + 1, np.int32)
    for h, hook in enumerate(HOOKS):
        hook_off[h + 1] = hook_off[h] + sum(1 for r in base_rows if r[1] == hook)
    low = LoweredNft(
        exprs=exprs,
        sets=np.array(b.set_rows, SET_DTYPE),
        slots=slots,
        intervals=intervals,
        cells=cells,
        hook_off=hook_off,
        bases=bases,
        chain_start=starts,
        rule_start=bounds[:, 0].copy(),
        chain_names=b.chain_names,
        set_names=b.set_names,
        endpoints=endpoints,
        dynamic_sets=dynamic_sets,
    )
    nftmaps.check(*low.engine_arrays())  # once here: callers pass checked=True to process
    return low
