"""Lowering: the node's tables (a Ruleset) to the packed arrays the chain VM walks.

One ``RULE_DTYPE`` row per rule, with its matches decoded (addresses as value/mask, ports as
ranges, marks, conntrack states as bits, statistic probability scaled to 2^31 the way
libxt_statistic stores it) and its target resolved (chain index, DNAT address and endpoint
index, MARK as and/xor masks). Chains are ranges of rows. No Python object is left for the
per-packet path. The dtypes mirror rule_t / chain_t in cext/chains.pyx (tests check it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..netfilter.iptables_parse import rule_parts
from ..netfilter.iptables_text import render_rule
from ..netfilter.ruleset import BUILTIN_CHAINS, Ruleset, jump_loop
from ..packets import PROTO_NUMBERS

RULE_DTYPE = np.dtype(
    [
        ("chain", "i4"),
        ("src", "u4"),
        ("src_mask", "u4"),
        ("dst", "u4"),
        ("dst_mask", "u4"),
        ("flags", "u4"),
        ("proto", "u1"),
        ("src_type", "u1"),
        ("dst_type", "u1"),
        ("in_origins", "u1"),
        ("dport_lo", "u2"),
        ("dport_hi", "u2"),
        ("sport_lo", "u2"),
        ("sport_hi", "u2"),
        ("mark_value", "u4"),
        ("mark_mask", "u4"),
        ("ctstate", "u4"),
        ("prob", "u4"),
        ("target_kind", "u1"),
        ("_pad0", "u1"),
        ("to_port", "u2"),
        ("target_chain", "i4"),
        ("to_ip", "u4"),
        ("mark_and", "u4"),
        ("mark_xor", "u4"),
        ("endpoint", "i4"),
        ("recent_list", "i4"),
        ("recent_seconds", "u4"),
        ("recent_op", "u1"),
        ("recent_rdest", "u1"),
        ("recent_reap", "u1"),
        ("_pad1", "u1"),
        ("mport_off", "i4"),
        ("mport_n", "u1"),
        ("mport_kind", "u1"),
        ("_pad2", "u2"),
        ("nth_every", "u4"),
        ("nth_slot", "i4"),
        ("set_id", "i4"),
        ("set_dirs", "u4"),
        ("ipvs_match", "i4"),
    ],
    align=True,
)
HOT_DTYPE = np.dtype(
    [
        ("src", "u4"),
        ("src_mask", "u4"),
        ("dst", "u4"),
        ("dst_mask", "u4"),
        ("flags", "u4"),
        ("proto", "u1"),
        ("in_origins", "u1"),
        ("_pad", "u2"),
    ],
    align=True,
)
CHAIN_DTYPE = np.dtype(
    [("start", "i4"), ("end", "i4"), ("policy", "u1"), ("builtin", "u1"), ("_pad", "u2")],
    align=True,
)

# must equal the enums in cext/chains.pyx
T = {
    "NONE": 0,
    "ACCEPT": 1,
    "DROP": 2,
    "REJECT": 3,
    "RETURN": 4,
    "JUMP": 5,
    "GOTO": 6,
    "DNAT": 7,
    "MASQUERADE": 8,
    "SNAT": 9,
    "MARK": 10,
}
F_SRC_NEG, F_DST_NEG, F_PROTO_NEG, F_DPORT, F_DPORT_NEG = 1, 2, 4, 8, 16
F_SPORT, F_SPORT_NEG, F_MARK, F_MARK_NEG, F_CT, F_CT_NEG = 32, 64, 128, 256, 512, 1024
F_NEVER, F_STAT_NEG, F_MPORT_NEG, F_NTH, F_RANDOM_FULLY = 2048, 4096, 8192, 16384, 32768
F_COLD = 65536
F_RARE = 262144  # hot flags: a cold match beyond ports, mark and ctstate
F_SET_NEG = 131072
# -m ipvs option bits (IM_* in cext/chains.pyx)
IM_VADDR, IM_VADDR_NEG, IM_VPORT, IM_VPORT_NEG = 1, 2, 4, 8
IM_VPROTO, IM_VPROTO_NEG, IM_IPVS, IM_IPVS_NEG = 16, 32, 64, 128
MULTIPORT_KINDS = {
    "--dports": 1,
    "--destination-ports": 1,
    "--sports": 2,
    "--source-ports": 2,
    "--ports": 3,
}
A_ANY, A_LOCAL, A_NOT_LOCAL = 0, 1, 2
# xt_conntrack's XT_CONNTRACK_STATE_* bits (what conntrack_core reports)
CT_BITS = {
    "INVALID": 1,
    "ESTABLISHED": 2,
    "RELATED": 4,
    "NEW": 8,
    "UNTRACKED": 256,
    "SNAT": 512,
    "DNAT": 1024,
}
V_ACCEPT, V_DROP = 1, 2
R_SET, R_RCHECK, R_UPDATE = 1, 2, 3
NO_STATISTIC = 0xFFFFFFFF
PROTO = {**PROTO_NUMBERS, "all": 0, "0": 0}  # -p values; 0 = any protocol
# the interface a packet comes in on, per origin (bit 1 << origin)
INPUT_INTERFACES = ((0, "cni0"), (1, "eth0"), (2, "lo"))
OUTPUT_INTERFACE = "eth0"
HOOKS = (
    ("nat", "PREROUTING"),
    ("nat", "OUTPUT"),
    ("nat", "POSTROUTING"),
    ("filter", "INPUT"),
    ("filter", "FORWARD"),
    ("filter", "OUTPUT"),
)
_IGNORED_MATCHES = ("comment", "nfacct", "limit", "pkttype")
# a pod's packet enters through a port of the cni0 bridge (br_netfilter sets physdev);
# outside traffic and the host's own do not
BRIDGED_ORIGINS = 0b001


@dataclass
class Lowered:
    rules: np.ndarray
    hot: np.ndarray  # HOT_DTYPE: each rule's address/protocol/interface matches, packed
    chains: np.ndarray
    hooks: np.ndarray  # chain index per HOOKS entry, -1 when absent
    chain_names: list[tuple[str, str]]
    endpoints: list[str]  # DNAT destinations ("ip:port"); rule "endpoint" indexes this
    recent_lists: int  # xt_recent lists the rules name (--name)
    port_ranges: np.ndarray  # uint16 (lo, hi) pairs, flattened; multiport rules index them
    nth_counters: np.ndarray  # uint32, the initial counter of each statistic-nth rule
    set_names: list[str] = field(default_factory=list)  # -m set: rule "set_id" indexes this
    ipvs_words: np.ndarray = field(  # uint32, 4 per -m ipvs match (rule "ipvs_match")
        default_factory=lambda: np.zeros(0, np.uint32)
    )


def _iface_matches(value: str, iface: str) -> bool:
    return iface.startswith(value[:-1]) if value.endswith("+") else iface == value


def _quad(text: str) -> int | None:
    """A canonical dotted quad as an int (None: anything else, for ipaddress to judge);
    ipaddress costs ~6 µs an address, a noticeable share of lowering 3M rules."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return value


@lru_cache(maxsize=1 << 16)
def _cidr(value: str) -> tuple[int, int]:
    ip, slash, bits = value.partition("/")
    addr = _quad(ip)
    if addr is not None and (not slash or (bits.isdigit() and int(bits) <= 32)):
        prefix = int(bits) if slash else 32
        mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
        return addr & mask, mask
    net = ipaddress.ip_network(value, strict=False)
    if net.version != 4:
        raise ValueError("IPv6 is not lowered yet")
    return int(net.network_address), int(net.netmask)


@lru_cache(maxsize=1 << 18)
def _ipv4(value: str) -> int:
    addr = _quad(value)
    return addr if addr is not None else int(ipaddress.IPv4Address(value))


def _range(spec: str) -> tuple[int, int]:
    low, sep, high = spec.partition(":")
    if not sep:
        return int(spec), int(spec)
    return int(low or 0), int(high or 65535)


def _refuse_loops(rules: np.ndarray, chain_names: list[tuple[str, str]]) -> None:
    """A jump or goto loop: the kernel refuses such a table (ELOOP) and the chain VM would
    never leave it (a goto loop grows no stack), so tables built without the parser's
    check are refused here, once per lowering."""
    has = rules["target_chain"] >= 0
    if not has.any():
        return
    edges: dict[int, set[int]] = {}
    for src, dst in zip(rules["chain"][has].tolist(), rules["target_chain"][has].tolist()):
        edges.setdefault(src, set()).add(dst)
    loop = jump_loop({c: sorted(targets) for c, targets in edges.items()})
    if loop is not None:
        raise InputError(
            "the kernel refuses a table with a jump loop (ELOOP)",
            obj=f"table {chain_names[loop[0]][0]}",
            field="chains",
            value=" -> ".join(chain_names[c][1] for c in loop),
        )


def lower(
    tables: Ruleset,
    family: str = "IPv4",
    endpoints: list[str] | None = None,
    *,
    redirect_ip: str | None = None,
) -> Lowered:
    """Lower the tables. ``endpoints`` is the endpoint table to extend (new DNAT
    destinations are appended, existing ones keep their index), so verdict endpoint indices
    stay valid across syncs, also for flows conntrack still holds. ``redirect_ip``: the
    address ``-j REDIRECT --to-ports P`` sends packets to (a DNAT to it and P: the
    incoming interface's primary address, which the node model takes as the node's
    primary IP; the userspace mode's rules); None refuses REDIRECT."""
    chain_names: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    for tname, table in tables.tables.items():
        for cname in table.chains:
            index[(tname, cname)] = len(chain_names)
            chain_names.append((tname, cname))
        for rule in table.rules:
            if (tname, rule.chain) not in index:
                index[(tname, rule.chain)] = len(chain_names)
                chain_names.append((tname, rule.chain))
    by_chain: list[list] = [[] for _ in chain_names]
    for tname, table in tables.tables.items():
        for rule in table.rules:
            by_chain[index[(tname, rule.chain)]].append(rule)

    names = RULE_DTYPE.names
    template = dict.fromkeys(names, 0)
    template.update(
        in_origins=0b111,
        prob=NO_STATISTIC,
        endpoint=-1,
        target_chain=-1,
        mark_and=0xFFFFFFFF,
        recent_list=-1,
        set_id=-1,
        ipvs_match=-1,
    )
    recent_lists: dict[str, int] = {}
    extras = _Extras(redirect_ip=redirect_ip)
    rows: list[tuple] = []  # filled as tuples: setting numpy row fields one by one is slow
    chains = np.zeros(len(chain_names), dtype=CHAIN_DTYPE)
    endpoints = [] if endpoints is None else endpoints
    endpoint_index = {ep: i for i, ep in enumerate(endpoints)}
    pos = 0
    for cid, ((tname, cname), rules) in enumerate(zip(chain_names, by_chain)):
        chains[cid]["start"] = pos
        builtin = cname in BUILTIN_CHAINS.get(tname, ())
        chains[cid]["builtin"] = builtin
        policy = (
            tables.tables[tname].chains[cname].policy
            if cname in tables.tables[tname].chains
            else "ACCEPT"
        )
        chains[cid]["policy"] = (
            V_DROP if builtin and policy == "DROP" else (V_ACCEPT if builtin else 0)
        )
        for rule in rules:
            row = dict(template)
            try:
                _lower_rule(
                    rule,
                    row,
                    cid,
                    tname,
                    index,
                    family,
                    endpoints,
                    endpoint_index,
                    recent_lists,
                    extras,
                )
            except (ValueError, KeyError) as exc:
                raise InputError(
                    f"cannot lower rule ({exc})", obj=f"table {tname}", value=render_rule(rule)
                ) from None
            rows.append(tuple([row[n] for n in names]))
            pos += 1
        chains[cid]["end"] = pos
    hooks = np.array([index.get(h, -1) for h in HOOKS], dtype=np.int32)
    rules = np.array(rows, dtype=RULE_DTYPE)
    _refuse_loops(rules, chain_names)
    return Lowered(
        rules,
        hot_rows(rules),
        chains,
        hooks,
        chain_names,
        endpoints,
        len(recent_lists),
        np.array(extras.port_ranges, dtype=np.uint16).reshape(-1),
        np.array(extras.nth_counters, dtype=np.uint32),
        list(extras.sets),
        np.array(extras.ipvs_words, dtype=np.uint32),
    )


def hot_rows(rules: np.ndarray) -> np.ndarray:
    """The VM's first look at each rule; F_COLD marks rules with more matches to check,
    F_RARE those with matches beyond ports, mark and ctstate (checked out of line)."""
    hot = np.zeros(len(rules), dtype=HOT_DTYPE)
    for name in ("src", "src_mask", "dst", "dst_mask", "proto", "in_origins"):
        hot[name] = rules[name]
    rare = (
        ((rules["flags"] & F_NTH) != 0)
        | (rules["mport_kind"] != 0)
        | (rules["src_type"] != A_ANY)
        | (rules["dst_type"] != A_ANY)
        | (rules["recent_list"] >= 0)
        | (rules["prob"] != NO_STATISTIC)
        | (rules["set_id"] >= 0)
        | (rules["ipvs_match"] >= 0)
    )
    cold = ((rules["flags"] & (F_DPORT | F_SPORT | F_MARK | F_CT)) != 0) | rare
    hot["flags"] = (
        rules["flags"]
        | np.where(cold, F_COLD, 0).astype(np.uint32)
        | np.where(rare, F_RARE, 0).astype(np.uint32)
    )
    return hot


@dataclass
class _Extras:
    """Side tables some matches need: multiport ranges, statistic-nth counters, the
    ipsets ``-m set`` names (by first use) and ``-m ipvs`` option words; where REDIRECT
    sends a packet (None: REDIRECT is not lowered)."""

    port_ranges: list[tuple[int, int]] = field(default_factory=list)
    nth_counters: list[int] = field(default_factory=list)
    sets: dict[str, int] = field(default_factory=dict)
    ipvs_words: list[int] = field(default_factory=list)
    redirect_ip: str | None = None


def _lower_rule(
    rule, row, cid, tname, index, family, endpoints, endpoint_index, recent_lists, extras
) -> None:
    row["chain"] = cid
    parts = rule_parts(rule, family)
    if parts is None:  # an opaque rule kept from a foreign dump never matches
        row["flags"] = F_NEVER
        return
    flags = 0
    for flag, opt in parts.basic:
        if flag == "-f":
            # matches second and later fragments; packets are whole (conntrack's defrag
            # reassembles before the tables): -f never matches, ! -f always does
            if not opt.negated:
                flags |= F_NEVER
            continue
        value = opt.args[0]
        if flag in ("-s", "-d"):
            if "," in value:
                raise ValueError(f"{flag} with several addresses")
            net, mask = _cidr(value)
            key = "src" if flag == "-s" else "dst"
            row[key], row[f"{key}_mask"] = net, mask
            if opt.negated:
                flags |= F_SRC_NEG if flag == "-s" else F_DST_NEG
        elif flag == "-p":
            row["proto"] = PROTO[value.lower()]
            if opt.negated:
                flags |= F_PROTO_NEG
        elif flag == "-i":
            bits = 0
            for origin, iface in INPUT_INTERFACES:
                if _iface_matches(value, iface) != opt.negated:
                    bits |= 1 << origin
            row["in_origins"] = bits
        elif flag == "-o":
            if _iface_matches(value, OUTPUT_INTERFACE) == opt.negated:
                flags |= F_NEVER
        else:
            raise ValueError(f"match {flag} is not supported by the engine")
    for m in parts.matches:
        for name, opt in m.opts:
            args = opt.args
            if m.name in _IGNORED_MATCHES:
                continue
            if m.name == "physdev" and name == "--physdev-is-in":
                bridged = BRIDGED_ORIGINS if not opt.negated else 0b111 & ~BRIDGED_ORIGINS
                row["in_origins"] &= bridged
                continue
            if m.name == "physdev":  # the rest of physdev: bridge ports are not modelled
                continue
            if m.name == "set" and name == "--match-set":
                if row["set_id"] >= 0:
                    raise ValueError("more than one -m set in a rule")
                from .._cext.vstable import parse_dirs

                row["set_id"] = extras.sets.setdefault(args[0], len(extras.sets))
                row["set_dirs"] = parse_dirs(args[1])
                if opt.negated:
                    flags |= F_SET_NEG
                continue
            if m.name == "ipvs":
                _lower_ipvs(row, name, opt, extras)
                continue
            if m.name in ("tcp", "udp", "sctp") and name in ("--dport", "--sport"):
                lo, hi = _range(args[0])
                key = "dport" if name == "--dport" else "sport"
                row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
                flags |= (
                    (F_DPORT | (F_DPORT_NEG if opt.negated else 0))
                    if key == "dport"
                    else (F_SPORT | (F_SPORT_NEG if opt.negated else 0))
                )
            elif m.name == "mark" and name == "--mark":
                value, _, mask = args[0].partition("/")
                row["mark_value"] = int(value, 0)
                row["mark_mask"] = int(mask, 0) if mask else 0xFFFFFFFF
                flags |= F_MARK | (F_MARK_NEG if opt.negated else 0)
            elif m.name in ("conntrack", "state") and name in ("--ctstate", "--state"):
                row["ctstate"] = sum(CT_BITS[s] for s in args[0].split(","))
                flags |= F_CT | (F_CT_NEG if opt.negated else 0)
            elif m.name == "addrtype" and name in ("--src-type", "--dst-type"):
                if args[0] != "LOCAL":
                    raise ValueError(f"addrtype {args[0]} is not supported by the engine")
                row["src_type" if name == "--src-type" else "dst_type"] = (
                    A_NOT_LOCAL if opt.negated else A_LOCAL
                )
            elif m.name == "multiport" and name in MULTIPORT_KINDS:
                ranges = [_range(part) for part in args[0].split(",")]
                if len(ranges) > 15:  # XT_MULTI_PORTS
                    raise ValueError("multiport lists at most 15 ports")
                row["mport_off"], row["mport_n"] = len(extras.port_ranges), len(ranges)
                row["mport_kind"] = MULTIPORT_KINDS[name]
                extras.port_ranges.extend(ranges)
                if opt.negated:
                    flags |= F_MPORT_NEG
            elif m.name == "statistic":
                if name == "--probability":
                    # libxt_statistic: lround(0x80000000 * p), compared with a 31-bit draw
                    row["prob"] = min(int(float(args[0]) * 0x80000000 + 0.5), 0x80000000)
                elif name == "--every":
                    # libxt_statistic stores every - 1 and starts the counter at
                    # every - 1 - packet, so --packet P matches the P-th packet first
                    row["nth_every"] = int(args[0]) - 1
                    row["nth_slot"] = len(extras.nth_counters)
                    extras.nth_counters.append(row["nth_every"])
                    flags |= F_NTH
                elif name == "--packet":
                    packet = int(args[0])
                    if packet > row["nth_every"]:
                        raise ValueError("statistic --packet must be below --every")
                    extras.nth_counters[row["nth_slot"]] = row["nth_every"] - packet
                elif name == "--mode" and args[0] not in ("random", "nth"):
                    raise ValueError(f"statistic --mode {args[0]}")
                if opt.negated and name in ("--probability", "--every"):
                    flags |= F_STAT_NEG
            elif m.name == "recent":
                if name == "--name":
                    row["recent_list"] = recent_lists.setdefault(args[0], len(recent_lists))
                elif name in ("--set", "--rcheck", "--update"):
                    row["recent_op"] = {"--set": R_SET, "--rcheck": R_RCHECK, "--update": R_UPDATE}[
                        name
                    ]
                    if opt.negated:
                        raise ValueError("negated recent is not supported by the engine")
                elif name == "--seconds":
                    row["recent_seconds"] = int(args[0])
                elif name == "--rdest":
                    row["recent_rdest"] = 1
                elif name == "--reap":
                    row["recent_reap"] = 1
                elif name == "--mask" and args[0] != "255.255.255.255":
                    raise ValueError(f"recent --mask {args[0]} is not supported by the engine")
                elif name in ("--remove", "--hitcount", "--rttl"):
                    raise ValueError(f"recent {name} is not supported by the engine")
            else:
                raise ValueError(f"match {m.name} {name} is not supported by the engine")
    row["flags"] = flags
    if row["recent_op"] and row["recent_list"] < 0:  # xt_recent's default list name
        row["recent_list"] = recent_lists.setdefault("DEFAULT", len(recent_lists))
    target = parts.target
    topts = {name: opt.args for name, opt in parts.target_opts}
    if target is None or target in ("LOG", "NFLOG", "TRACE"):
        row["target_kind"] = T["NONE"]
    elif target in ("ACCEPT", "DROP", "REJECT", "RETURN"):
        row["target_kind"] = T[target]
    elif target in ("MASQUERADE", "SNAT"):
        row["target_kind"] = T[target]
        if "--random-fully" in topts:
            row["flags"] |= F_RANDOM_FULLY
        if "--to-ports" in topts:
            raise ValueError("MASQUERADE --to-ports is not supported by the engine")
        if target == "SNAT":
            source = topts["--to-source"][0]
            ip, _, ports = source.partition(":")
            if "-" in ip or ports:
                raise ValueError("SNAT to an address range or port range is not supported")
            row["to_ip"] = _ipv4(ip)
    elif target == "DNAT":
        dest = topts["--to-destination"][0]
        ip, _, port = dest.rpartition(":")
        row["target_kind"] = T["DNAT"]
        row["to_ip"] = _ipv4(ip)
        row["to_port"] = int(port)
        if dest not in endpoint_index:
            endpoint_index[dest] = len(endpoints)
            endpoints.append(dest)
        row["endpoint"] = endpoint_index[dest]
    elif target == "REDIRECT" and extras.redirect_ip is not None:
        ports = topts.get("--to-ports", ("",))[0]
        if not ports.isdigit():
            raise ValueError("REDIRECT needs one --to-ports port")
        dest = f"{extras.redirect_ip}:{ports}"
        row["target_kind"] = T["DNAT"]
        row["to_ip"] = _ipv4(extras.redirect_ip)
        row["to_port"] = int(ports)
        if dest not in endpoint_index:
            endpoint_index[dest] = len(endpoints)
            endpoints.append(dest)
        row["endpoint"] = endpoint_index[dest]
    elif target == "MARK":
        row["target_kind"] = T["MARK"]
        and_mask, xor = _mark_ops(topts)
        row["mark_and"], row["mark_xor"] = and_mask, xor
    elif parts.target_kind == "chain":
        row["target_kind"] = T["GOTO"] if parts.goto else T["JUMP"]
        row["target_chain"] = index[(tname, target)]
    else:
        raise ValueError(f"target {target} is not supported by the engine")


def _lower_ipvs(row, name: str, opt, extras: _Extras) -> None:
    """One ``-m ipvs`` option into the rule's 4 words (vaddr, mask, vproto << 16 | vport,
    IM_* bits); the words are allocated at the match's first option."""
    if row["ipvs_match"] < 0:
        row["ipvs_match"] = len(extras.ipvs_words)
        extras.ipvs_words.extend((0, 0, 0, 0))
    w = extras.ipvs_words
    base = row["ipvs_match"]
    neg = opt.negated
    if name == "--ipvs":
        w[base + 3] |= IM_IPVS | (IM_IPVS_NEG if neg else 0)
    elif name == "--vaddr":
        w[base], w[base + 1] = _cidr(opt.args[0])
        w[base + 3] |= IM_VADDR | (IM_VADDR_NEG if neg else 0)
    elif name == "--vport":
        w[base + 2] = (w[base + 2] & 0xFFFF0000) | int(opt.args[0])
        w[base + 3] |= IM_VPORT | (IM_VPORT_NEG if neg else 0)
    elif name == "--vproto":
        w[base + 2] = (w[base + 2] & 0xFFFF) | (PROTO[opt.args[0].lower()] << 16)
        w[base + 3] |= IM_VPROTO | (IM_VPROTO_NEG if neg else 0)
    else:
        raise ValueError(f"match ipvs {name} is not supported by the engine")


def _mark_ops(topts: dict) -> tuple[int, int]:
    """MARK as new = (mark & and_mask) ^ xor (xt_MARK: (mark & ~mask) ^ value)."""
    full = 0xFFFFFFFF
    for key in ("--set-xmark", "--set-mark"):
        if key in topts:
            value, _, mask = topts[key][0].partition("/")
            v, m = int(value, 0), int(mask, 0) if mask else full
            return (~m) & full if key == "--set-xmark" else (~(m | v)) & full, v
    if "--or-mark" in topts:
        v = int(topts["--or-mark"][0], 0)
        return (~v) & full, v
    if "--xor-mark" in topts:
        return full, int(topts["--xor-mark"][0], 0)
    if "--and-mark" in topts:
        return int(topts["--and-mark"][0], 0), 0
    raise ValueError("MARK without a mark option")
