"""Option values of an iptables rule, checked the way iptables-restore 1.8.9 checks them.

``iptables_parse`` calls ``check_option`` for every option it reads and ``check_rule`` once a
rule is complete, so a dump ``iptables-restore`` would refuse (``--dport 99999``, ``-p
foo``, ``--probability 2.5``, an IPv6 address in an IPv4 table) is an InputError naming its
line, and the engine only ever sees values it can convert.

Some forms iptables accepts cannot be evaluated by the engine: host names and short IPv4
forms (``10.1``), non-contiguous masks, port service names (``http``), octal and hex
numbers, address or port ranges in DNAT/SNAT. They are read (a real node's dump round-trips)
unless ``evaluable`` is set, as it is for a dump about to be traced: then they are an error
saying "not supported".
"""

from __future__ import annotations

import ipaddress
import re
import socket

__all__ = ["BadValue", "check_option", "check_rule"]

_U32 = 0xFFFFFFFF
_IFNAMSIZ = 16
_MULTIPORT_MAX = 15  # XT_MULTI_PORTS
_CTSTATES = frozenset({"INVALID", "ESTABLISHED", "NEW", "RELATED", "UNTRACKED", "SNAT", "DNAT"})
_STATES = frozenset({"INVALID", "ESTABLISHED", "NEW", "RELATED", "UNTRACKED"})
_ADDRTYPES = frozenset(
    {
        "UNSPEC",
        "UNICAST",
        "LOCAL",
        "BROADCAST",
        "ANYCAST",
        "MULTICAST",
        "BLACKHOLE",
        "UNREACHABLE",
        "PROHIBIT",
        "THROW",
        "NAT",
        "XRESOLVE",
    }
)
_REJECT_WITH = {
    "IPv4": frozenset(
        [
            "icmp-net-unreachable",
            "net-unreach",
            "icmp-host-unreachable",
            "host-unreach",
            "icmp-proto-unreachable",
            "proto-unreach",
            "icmp-port-unreachable",
            "port-unreach",
            "icmp-net-prohibited",
            "net-prohib",
            "icmp-host-prohibited",
            "host-prohib",
            "tcp-reset",
            "tcp-rst",
            "icmp-admin-prohibited",
            "admin-prohib",
        ]
    ),
    "IPv6": frozenset(
        [
            "icmp6-no-route",
            "no-route",
            "icmp6-adm-prohibited",
            "adm-prohibited",
            "icmp6-addr-unreachable",
            "addr-unreach",
            "icmp6-port-unreachable",
            "port-unreach",
            "tcp-reset",
            "icmp6-policy-fail",
            "policy-fail",
            "icmp6-reject-route",
            "reject-route",
        ]
    ),
}
_VALUE_MASK = frozenset(
    {
        ("mark", "--mark"),
        ("connmark", "--mark"),
        ("MARK", "--set-xmark"),
        ("MARK", "--set-mark"),
        ("CONNMARK", "--set-xmark"),
        ("CONNMARK", "--set-mark"),
    }
)
_PORT_PROTOS = frozenset({"tcp", "udp", "sctp", "dccp", "6", "17", "132", "33"})
_MULTIPORT_PROTOS = _PORT_PROTOS | {"udplite", "136"}
_DECIMAL = re.compile(r"[0-9]+")
# strtoul(..., 0) without octal: decimal or 0x hex (what Python's int(text, 0) reads)
_NUMBER = re.compile(r"(0|[1-9][0-9]*|0[xX][0-9a-fA-F]+)")


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")  # what kube-proxy writes
_CANONICAL_V4_PORT = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}:(0|[1-9][0-9]{{0,4}})")
_HOST = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


class BadValue(Exception):
    """A bad option value (the parser adds file and line)."""

    def __init__(self, message: str, token: object):
        super().__init__(message)
        self.message = message
        self.token = token


# ----------------------------------------------------------------- values


def _strtoul(text: str) -> int | None:
    """C strtoul(text, 0) of the whole text (decimal, 0x hex, 0 octal), None if not one."""
    if _NUMBER.fullmatch(text):
        return int(text, 0)
    if re.fullmatch(r"0[0-7]+", text):
        return int(text, 8)
    return None


def _u32(text: str, what: str, evaluable: bool = False) -> int:
    value = _strtoul(text)
    if value is None:
        raise BadValue(f"{what}: not a number", text)
    if evaluable and _NUMBER.fullmatch(text) is None:
        raise BadValue(f"{what}: octal numbers are not supported", text)
    if value > _U32:
        raise BadValue(f"{what}: out of range (0-4294967295)", text)
    return value


def _value_mask(text: str, what: str, evaluable: bool, mask_allowed: bool = True) -> None:
    value, sep, mask = text.partition("/")
    if sep and not mask_allowed:
        raise BadValue(f"{what}: no /mask allowed", text)
    _u32(value, what, evaluable)
    if sep:
        _u32(mask, what, evaluable)


def _port(text: str, what: str, evaluable: bool) -> int:
    """A port number; a service name (``http``, looked up in /etc/services by iptables) is
    -1 when it may stay unevaluated."""
    if re.fullmatch(r"[A-Za-z][\w.-]*", text):
        if evaluable:
            raise BadValue(f"{what}: service names are not supported, give the number", text)
        try:
            socket.getservbyname(text)
        except OSError:
            raise BadValue(f"{what}: invalid port (no such service)", text) from None
        return -1
    port = _strtoul(text)
    if port is None or port > 65535:
        raise BadValue(f"{what}: invalid port (0-65535)", text)
    if evaluable and _DECIMAL.fullmatch(text) is None:
        raise BadValue(f"{what}: only decimal port numbers are supported", text)
    return port


def _port_range(text: str, what: str, evaluable: bool) -> None:
    """PORT, or a range LOW:HIGH where either end may be left out (0, 65535)."""
    low, found, high = text.partition(":")
    if not found:
        _port(text, what, evaluable)
        return
    lo = _port(low, what, evaluable) if low else 0
    hi = _port(high, what, evaluable) if high else 65535
    if lo > hi:
        raise BadValue(f"{what}: invalid port range (min > max)", text)


def _address(text: str, family: str, what: str, evaluable: bool) -> None:
    if family == "IPv4" and _CANONICAL_V4.fullmatch(text):
        return  # the common case, without ipaddress (a node has 100,000s of addresses)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is not None:
        if (addr.version == 6) != (family == "IPv6"):
            raise BadValue(f"{what}: an IPv{addr.version} address in an {family} ruleset", text)
        return
    if family == "IPv4" and ":" in text:
        raise BadValue(f"{what}: an IPv6 address in an IPv4 ruleset", text)
    if family == "IPv6" and re.fullmatch(r"[0-9.]+", text):
        raise BadValue(f"{what}: an IPv4 address in an IPv6 ruleset", text)
    # what iptables reads besides canonical addresses: inet_aton forms, host names
    short_form = family == "IPv4" and re.fullmatch(r"[0-9a-fA-FxX.]+", text) is not None
    if short_form:
        try:
            socket.inet_aton(text)
        except OSError:
            raise BadValue(f"{what}: not an IPv4 address", text) from None
    elif _HOST.fullmatch(text) is None or re.fullmatch(r"[0-9.]+", text):
        raise BadValue(f"{what}: not an IP address or host name", text)
    if evaluable:
        raise BadValue(
            f"{what}: host names and short address forms are not supported (give the "
            "address as a.b.c.d)",
            text,
        )


def _network(text: str, family: str, what: str, evaluable: bool) -> None:
    """ADDR[/PREFIX or /DOTTED-MASK], possibly a comma-separated list."""
    for part in text.split(","):
        addr, sep, mask = part.partition("/")
        _address(addr, family, what, evaluable)
        if not sep:
            continue
        bits = 32 if family == "IPv4" else 128
        prefix = _strtoul(mask)
        if prefix is not None:
            if prefix > bits:
                raise BadValue(f"{what}: invalid mask (0-{bits})", part)
            if evaluable and _DECIMAL.fullmatch(mask) is None:
                raise BadValue(f"{what}: only a decimal prefix length is supported", part)
            continue
        if family == "IPv4" and "." in mask:
            try:
                ipaddress.IPv4Address(mask)
            except ValueError:
                raise BadValue(f"{what}: invalid mask", part) from None
            try:
                ipaddress.ip_network(f"0.0.0.0/{mask}")
            except ValueError:
                if evaluable:
                    raise BadValue(
                        f"{what}: non-contiguous masks are not supported", part
                    ) from None
            continue
        raise BadValue(f"{what}: invalid mask", part)


def _nat_to(text: str, family: str, what: str, evaluable: bool) -> None:
    """ADDR[-ADDR][:PORT[-PORT]] (``[ADDR]:PORT`` for IPv6)."""
    fast = _CANONICAL_V4_PORT.fullmatch(text) if family == "IPv4" else None
    if fast and int(fast.group(1)) <= 65535:
        return  # kube-proxy's endpoint form, 100,000s of them on a big node
    if text.startswith("["):
        addr, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadValue(f"{what}: invalid address", text)
        port = rest[1:] if rest else None
    elif family == "IPv4" or text.count(":") == 0:
        addr, sep, port_text = text.partition(":")
        port = port_text if sep else None
    else:
        addr, port = text, None
    if evaluable and not addr:
        raise BadValue(f"{what}: address missing", text)
    if evaluable and ("-" in addr or (port and "-" in port)):
        raise BadValue(f"{what}: address and port ranges are not supported", text)
    for one in addr.split("-", 1) if addr else ():
        if not (family == "IPv4" and _CANONICAL_V4.fullmatch(one)):
            try:
                ipaddress.ip_address(one)  # numeric only here: no host names
            except ValueError:
                raise BadValue(f"{what}: bad IP address", one) from None
        _address(one, family, what, evaluable)
    if port is not None:
        _to_ports(port, what, evaluable)
    elif evaluable and what == "--to-destination":
        raise BadValue(f"{what}: DNAT without a port is not supported", text)


def _names(text: str, allowed: frozenset[str], what: str, evaluable: bool) -> None:
    """Comma-separated upper-case names; iptables also takes any case and abbreviations
    (``est,rel``), which the engine does not evaluate."""
    for name in text.split(","):
        if name in allowed:
            continue
        upper = name.upper()
        if not name or not any(a.startswith(upper) for a in allowed):
            raise BadValue(f"{what}: unknown value {name!r}", text)
        if evaluable:
            raise BadValue(f"{what}: only full upper-case names are supported", text)


def _to_ports(text: str, what: str, evaluable: bool) -> None:
    low, sep, high = text.partition("-")
    lo = _port(low, what, evaluable)
    if sep and _port(high, what, evaluable) < lo:
        raise BadValue(f"{what}: invalid port range (min > max)", text)


# ----------------------------------------------------------------- options


def check_option(
    module: str | None, name: str, args: tuple[str, ...], family: str, evaluable: bool = False
) -> None:
    """One option's arguments. ``module`` is the match or target it belongs to (None for
    iptables' own options, named by short flag: ``-s``, ``-p``); ``name`` is canonical.
    ``evaluable`` also refuses the forms the engine cannot evaluate."""
    what = name
    if module is None:
        if name in ("-s", "-d"):
            _network(args[0], family, what, evaluable)
        elif name == "-p":
            from .iptables_parse import protocol_number

            if protocol_number(args[0]) is None:
                raise BadValue("-p: unknown protocol", args[0])
            if evaluable and args[0].isdigit() and args[0] != "0":
                raise BadValue("-p: protocol numbers are not supported, give the name", args[0])
        elif name in ("-i", "-o"):
            if len(args[0]) >= _IFNAMSIZ:
                raise BadValue(f"{name}: interface name longer than 15 characters", args[0])
        return
    value = args[0] if args else ""
    if module in ("tcp", "udp", "sctp", "dccp") and name in ("--sport", "--dport"):
        _port_range(value, what, evaluable)
    elif module == "multiport":
        parts = value.split(",")
        if sum(2 if ":" in p else 1 for p in parts) > _MULTIPORT_MAX:
            raise BadValue(f"{what}: too many ports (at most {_MULTIPORT_MAX})", value)
        for part in parts:
            _port_range(part, what, evaluable)
    elif (module, name) in _VALUE_MASK:
        _value_mask(value, what, evaluable)
    elif module in ("MARK", "CONNMARK") and name in ("--and-mark", "--or-mark", "--xor-mark"):
        _value_mask(value, what, evaluable, mask_allowed=False)
    elif module == "statistic":
        if name == "--mode" and value not in ("random", "nth"):
            raise BadValue("--mode: random or nth", value)
        elif name == "--probability":
            try:
                p = float(value)
            except ValueError:
                p = -1.0
            if not 0.0 <= p <= 1.0:  # also false for nan
                raise BadValue("--probability: not a number from 0 to 1", value)
        elif name == "--every" and _u32(value, what, evaluable) == 0:
            raise BadValue("--every: out of range (1-4294967295)", value)
        elif name == "--packet":
            _u32(value, what, evaluable)
    elif module == "conntrack" and name == "--ctstate":
        _names(value, _CTSTATES, what, evaluable)
    elif module == "state" and name == "--state":
        _names(value, _STATES, what, evaluable)
    elif module == "addrtype" and name in ("--src-type", "--dst-type"):
        _names(value, _ADDRTYPES, what, evaluable)
    elif module == "recent" and name in ("--seconds", "--hitcount"):
        if _u32(value, what, evaluable) == 0 and name == "--seconds":
            raise BadValue("--seconds: out of range (1-4294967295)", value)
    elif module == "set" and name == "--match-set":
        flags = args[1].split(",")
        if len(flags) > 6 or any(f not in ("src", "dst") for f in flags):
            raise BadValue("--match-set: flags are up to 6 of src,dst", args[1])
        if evaluable:
            # iptables-restore fails on a set the node lacks; a dump comes without the
            # node's ipsets (ipset save is not read), so every set is missing here
            raise BadValue(
                f"--match-set: ipset {value} does not exist (a node's iptables dump carries "
                "no ipsets; rules with -m set cannot be evaluated)",
                value,
            )
    elif module == "ipvs":
        if name == "--vaddr":
            _network(value, family, what, evaluable)
        elif name == "--vport":
            _port(value, what, evaluable)
        elif name == "--vproto":
            from .iptables_parse import protocol_number

            if protocol_number(value) is None:
                raise BadValue("--vproto: unknown protocol", value)
    elif (module, name) in (("DNAT", "--to-destination"), ("SNAT", "--to-source")):
        _nat_to(value, family, what, evaluable)
    elif module in ("MASQUERADE", "REDIRECT") and name == "--to-ports":
        _to_ports(value, what, evaluable)
        if evaluable:
            raise BadValue(f"{module} --to-ports is not supported", value)
    elif module == "REJECT" and name == "--reject-with":
        # iptables takes any case and abbreviations; the engine ignores the type
        if not value or not any(t.startswith(value.lower()) for t in _REJECT_WITH[family]):
            raise BadValue(f"{what}: unknown reject type", value)


def check_rule(
    proto: str | None,
    proto_negated: bool,
    target: str | None,
    target_opts: dict[str, tuple[str, ...]],
    matches: list[tuple[str, dict[str, tuple[str, ...]]]],
) -> None:
    """What iptables checks once a rule is complete: options one needs with another."""
    ports_ok = proto is not None and not proto_negated and proto.lower() in _PORT_PROTOS
    for module, opts in matches:
        if module == "multiport" and (
            proto is None or proto_negated or proto.lower() not in _MULTIPORT_PROTOS
        ):
            raise BadValue("multiport needs -p tcp, udp, udplite, sctp or dccp", module)
        if module == "statistic":
            mode = opts.get("--mode", ("",))[0]
            if not mode:
                raise BadValue("statistic: --mode must be given", module)
            if mode == "random" and "--probability" not in opts:
                raise BadValue("statistic: --mode random needs --probability", module)
            if mode == "nth":
                if "--every" not in opts:
                    raise BadValue("statistic: --mode nth needs --every", module)
                every = _strtoul(opts["--every"][0]) or 0
                packet = _strtoul(opts.get("--packet", ("0",))[0]) or 0
                if packet >= every:
                    raise BadValue("statistic: --packet must be below --every", str(packet))
    required = {"DNAT": "--to-destination", "SNAT": "--to-source"}.get(target or "")
    if required and required not in target_opts:
        raise BadValue(f"{target} needs {required}", target)
    if not ports_ok:
        for name in ("--to-destination", "--to-source"):
            text = target_opts.get(name, ("",))[0]
            if text and _has_port(text):
                raise BadValue(f"{name}: a port needs -p tcp, udp, sctp or dccp", text)
        if target in ("MASQUERADE", "REDIRECT") and "--to-ports" in target_opts:
            raise BadValue("--to-ports needs -p tcp, udp, sctp or dccp", target)


def _has_port(text: str) -> bool:
    if text.startswith("["):
        return "]:" in text
    return text.count(":") == 1
