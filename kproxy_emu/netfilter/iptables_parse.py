"""iptables-save / iptables-restore text -> Ruleset.

``parse(text)`` reads what ``iptables-save`` prints and what ``iptables-restore`` accepts
(kube-proxy's restore payload, a node's dump, a hand-written rules file) into the same
Ruleset model the iptables compiler builds, so a real node's rules run through the same
engine. ``render(parse(text)) == text`` for text written the way kproxy-emu and kube-proxy
write it: tokens are kept as written (long option spellings, their order, ``-m`` loads).

How tokens become options (``Opt``):

* A rule is its options in written order; ``-m NAME``, ``-j TARGET`` and ``-g CHAIN`` are
  options too. An option is its flag as written plus its arguments: ``--tcp-flags SYN,ACK
  SYN`` and ``--match-set NAME src,dst`` are one Opt with two arguments, ``--syn`` and
  ``--rsource`` have none. How many arguments each option takes comes from the option
  tables of iptables 1.8.9's extensions (below).
* ``! --opt ARG`` is ``Opt("--opt", ("ARG",), negated=True)``; the ``!`` token is not kept.
  ``!`` before ``-m``, ``-j``, ``-g`` is an error, as in iptables. Intrapositioned negation
  (``--opt ! ARG``, long removed from iptables for IP rules) is an error, except that a
  free-text argument (``--comment``, ``--log-prefix``, ...) is, as for getopt, the next
  token whatever it is. Values are kept as written (``-p TCP`` stays ``TCP``; iptables
  lower-cases it): consumers normalise, ``rule_parts`` and ``render_live`` do.
* An option belongs to the most recently loaded module (``-m``) or target (``-j``) that has
  it, as getopt resolves it against iptables' merged option table; failing that, ``-p
  PROTO`` loads the protocol's match on demand, once per rule (``-p tcp --dport 80``).
  Unambiguous abbreviations (``--dest``) are accepted, as getopt_long does. ``rule_parts``
  recomputes this assignment from a Rule's options.
* Quoting follows iptables-restore: ``"..."`` with ``\\`` escapes inside quotes only; a
  closing quote ends the token. An unbalanced quote is an error here (iptables would
  silently swallow the rest of the line).

Commands: ``-A CHAIN``, ``-I CHAIN [N]`` (inserted at that position of the chain), ``-D
CHAIN N|RULE``, ``-R CHAIN N RULE``, ``-N``, ``-X [CHAIN]`` (recorded in ``Table.deleted``;
the chain stays declared, as kube-proxy writes a chain line and ``-X`` for each stale
chain), ``-F [CHAIN]`` (removes the rules read so far), ``-P CHAIN POLICY``, ``-E OLD NEW``,
``-Z`` (ignored). Re-declaring a chain that already has rules (``:CHAIN`` in a second block
of the same table) flushes it, as ``iptables-restore --noflush`` does. Only ``-A`` rules and
chain lines survive ``render``; ``-I`` becomes an ``-A`` at its position, the other
commands' effects are applied but not written back. ``parse(text, into=ruleset)`` applies
a text on top of an existing Ruleset the way ``iptables-restore --noflush`` applies it to a
node (kube-proxy's partial syncs; a chain declared again after ``-X`` is no longer deleted).
Chain counters ``[p:b]`` are kept on the Chain; ``[pkts:bytes]`` rule counters are accepted
and dropped (``-c P B`` is kept, as an option).

Unknown input: an unknown match module, target option or option is an InputError naming the
file, line and token. With ``keep_unknown=True`` such a rule is kept as an *opaque* rule:
``Rule(chain, (Opt(RAW, tokens),))`` whose single option has flag ``RAW`` (``"?raw"``) and
the rule's tokens after the chain (and ``-I`` position) verbatim, ``!`` included. The engine
should treat an opaque rule as matching nothing; ``is_opaque(rule)`` tells. (``render``
writes its tokens after a ``?raw`` marker; ``render_live`` writes them as they were.)
Syntax errors (an option without its argument, a rule outside ``*table``, a missing
``COMMIT``, an unbalanced quote) are errors either way.

Lenient where iptables would refuse and nothing valid changes meaning: an unquoted
multi-word ``--comment`` (kube-proxy's hand-written test dumps) is read as one comment.

Not modelled: comma-separated address lists (``-s a,b``, which iptables expands into one
rule per address) are kept as one option as written (``render_live`` expands them);
``--opt=value`` spellings; commands placed after rule options.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass

from ..errors import InputError
from .ruleset import BUILTIN_CHAINS, Opt, Rule, Ruleset, Table, jump_loop

__all__ = [
    "MATCHES",
    "RAW",
    "TARGETS",
    "VERDICTS",
    "MatchPart",
    "RuleParts",
    "canonical_flag",
    "is_opaque",
    "parse",
    "rule_parts",
    "tokenize",
]

from .iptables_text import RAW
from .iptables_values import BadValue, check_option, check_rule

_CHECKED_BUILTINS = frozenset({"-s", "-d", "-p", "-i", "-o"})
# the extensions check_rule looks at (options one needs with another)
_NEEDS_RULE_CHECK = frozenset({"multiport", "statistic", "DNAT", "SNAT", "MASQUERADE", "REDIRECT"})


def _check_once(cache: dict, module: str | None, name: str, args: tuple, family: str) -> None:
    """check_option, once per distinct value in a dump (a node repeats the same few)."""
    key = ("checked", module, name, args)
    if key not in cache:
        check_option(module, name, args, family, cache["evaluable"])
        cache[key] = True


# ----------------------------------------------------------------- extension tables
#
# Transcribed from the option tables of iptables 1.8.9's extensions/lib{xt,ipt,ip6t}_*.c
# (xt_option_entry / struct option arrays). Each table maps every accepted spelling
# (--source-port) to its canonical option name (--sport) and argument count: 0, 1, 2, or
# OPTIONAL (one argument, taken only when the next token does not start with - or !, as
# iptables' xs_has_arg does).
OPTIONAL = -1

Options = dict[str, tuple[str, int]]


def _table(spec: str) -> Options:
    """``"sport=1 source-port>sport syn=0"``: ``name=nargs`` declares an option (``?`` for
    an optional argument), ``alias>name`` another spelling of a declared one."""
    out: Options = {}
    aliases = []
    for item in spec.split():
        if ">" in item:
            aliases.append(item.split(">"))
            continue
        name, nargs = item.split("=")
        out["--" + name] = ("--" + name, OPTIONAL if nargs == "?" else int(nargs))
    for alias, name in aliases:
        out["--" + alias] = out["--" + name]
    return out


_PORTS = "sport=1 dport=1 source-port>sport destination-port>dport"

# match modules usable in both families
_MATCHES_ANY = {
    "addrtype": "src-type=1 dst-type=1 limit-iface-in=0 limit-iface-out=0",
    "bpf": "bytecode=1 object-pinned=1",
    "cgroup": "cgroup=1 path=1",
    "cluster": "cluster-total-nodes=1 cluster-local-node=1 cluster-local-nodemask=1 "
    "cluster-hash-seed=1",
    "comment": "comment=1",
    "connbytes": "connbytes=1 connbytes-dir=1 connbytes-mode=1",
    "connlabel": "label=1 set=0",
    "connlimit": "connlimit-upto=1 connlimit-above=1 connlimit-mask=1 connlimit-saddr=0 "
    "connlimit-daddr=0",
    "connmark": "mark=1",
    "conntrack": "ctstate=1 ctproto=1 ctorigsrc=1 ctorigdst=1 ctreplsrc=1 ctrepldst=1 "
    "ctstatus=1 ctexpire=1 ctorigsrcport=1 ctorigdstport=1 ctreplsrcport=1 "
    "ctrepldstport=1 ctdir=1",
    "cpu": "cpu=1",
    "dccp": _PORTS + " dccp-types=1 dccp-option=1",
    "devgroup": "src-group=1 dst-group=1",
    "dscp": "dscp=1 dscp-class=1",
    "ecn": "ecn-tcp-cwr=0 ecn-tcp-ece=0 ecn-ip-ect=1",
    "esp": "espspi=1",
    "hashlimit": "hashlimit=1 hashlimit-upto=1 hashlimit-above=1 hashlimit-burst=1 "
    "hashlimit-mode=1 hashlimit-name=1 hashlimit-srcmask=1 hashlimit-dstmask=1 "
    "hashlimit-htable-size=1 hashlimit-htable-max=1 hashlimit-htable-gcinterval=1 "
    "hashlimit-htable-expire=1 hashlimit-rate-match=0 hashlimit-rate-interval=1",
    "helper": "helper=1",
    "ipcomp": "ipcompspi=1 compres=0",
    "iprange": "src-range=1 dst-range=1",
    "ipvs": "ipvs=0 vproto=1 vaddr=1 vport=1 vdir=1 vmethod=1 vportctl=1",
    "length": "length=1",
    "limit": "limit=1 limit-burst=1",
    "mac": "mac-source=1",
    "mark": "mark=1",
    "multiport": "sports=1 dports=1 ports=1 source-ports>sports destination-ports>dports",
    "nfacct": "nfacct-name=1",
    "osf": "genre=1 ttl=1 log=1",
    "owner": "uid-owner=1 gid-owner=1 pid-owner=1 sid-owner=1 cmd-owner=1 socket-exists=0 "
    "suppl-groups=0",
    "physdev": "physdev-in=1 physdev-out=1 physdev-is-in=0 physdev-is-out=0 physdev-is-bridged=0",
    "pkttype": "pkt-type=1",
    "policy": "dir=1 pol=1 strict=0 reqid=1 spi=1 tunnel-src=1 tunnel-dst=1 proto=1 mode=1 next=0",
    "quota": "quota=1",
    "rateest": "rateest=1 rateest1=1 rateest2=1 rateest-bps=? rateest-pps=? rateest-bps1=? "
    "rateest-pps1=? rateest-bps2=? rateest-pps2=? rateest-delta=0 rateest-lt=0 "
    "rateest-gt=0 rateest-eq=0",
    "recent": "set=0 rcheck=0 update=0 remove=0 seconds=1 reap=0 hitcount=1 rttl=0 name=1 "
    "rsource=0 rdest=0 mask=1",
    "rpfilter": "loose=0 validmark=0 accept-local=0 invert=0",
    "sctp": _PORTS + " chunk-types=2",
    "set": "match-set=2 set>match-set return-nomatch=0 update-counters=0 "
    "update-subcounters=0 packets-eq=1 packets-lt=1 packets-gt=1 bytes-eq=1 "
    "bytes-lt=1 bytes-gt=1",
    "socket": "transparent=0 nowildcard=0 restore-skmark=0",
    "state": "state=1",
    "statistic": "mode=1 probability=1 every=1 packet=1",
    "string": "from=1 to=1 algo=1 string=1 hex-string=1 icase=0",
    "tcp": _PORTS + " syn=0 tcp-flags=2 tcp-option=1",
    "tcpmss": "mss=1",
    "time": "datestart=1 datestop=1 timestart=1 timestop=1 weekdays=1 monthdays=1 "
    "contiguous=0 localtz=0 utc=0 kerneltz=0",
    "tos": "tos=1",
    "u32": "u32=1",
    "udp": _PORTS,
}
_MATCHES_V4 = {
    "ah": "ahspi=1",
    "icmp": "icmp-type=1",
    "realm": "realm=1",
    "ttl": "ttl-eq=1 ttl-lt=1 ttl-gt=1 ttl=1",
}
_MATCHES_V6 = {
    "ah": "ahspi=1 ahlen=1 ahres=0",
    "dst": "dst-len=1 dst-opts=1",
    "eui64": "",
    "frag": "fragid=1 fraglen=1 fragres=0 fragfirst=0 fragmore=0 fraglast=0",
    "hbh": "hbh-len=1 hbh-opts=1",
    "hl": "hl-eq=1 hl-lt=1 hl-gt=1 hl=1",
    "icmp6": "icmpv6-type=1",
    "ipv6header": "header=1 soft=0",
    "mh": "mh-type=1",
    "rt": "rt-type=1 rt-segsleft=1 rt-len=1 rt-0-res=0 rt-0-addrs=1 rt-0-not-strict=0",
    "srh": "srh-next-hdr=1 srh-hdr-len-eq=1 srh-hdr-len-gt=1 srh-hdr-len-lt=1 "
    "srh-segs-left-eq=1 srh-segs-left-gt=1 srh-segs-left-lt=1 srh-last-entry-eq=1 "
    "srh-last-entry-gt=1 srh-last-entry-lt=1 srh-tag=1 srh-psid=1 srh-nsid=1 srh-lsid=1",
}

_MARK_TG = "set-mark=1 set-xmark=1 and-mark=1 or-mark=1 xor-mark=1"
_TARGETS_ANY = {
    "AUDIT": "type=1",
    "CHECKSUM": "checksum-fill=0",
    "CLASSIFY": "set-class=1",
    "CONNMARK": _MARK_TG + " save-mark=0 restore-mark=0 mask=1 ctmask=1 nfmask=1 "
    "left-shift-mark=1 right-shift-mark=1",
    "CONNSECMARK": "save=0 restore=0",
    "CT": "notrack=0 helper=1 ctevents=1 expevents=1 zone=1 zone-orig=1 zone-reply=1 timeout=1",
    "DNAT": "to-destination=1 random=0 persistent=0",
    "DSCP": "set-dscp=1 set-dscp-class=1",
    "HMARK": "hmark-tuple=1 hmark-src-prefix=1 hmark-dst-prefix=1 hmark-sport-mask=1 "
    "hmark-dport-mask=1 hmark-spi-mask=1 hmark-sport=1 hmark-dport=1 hmark-spi=1 "
    "hmark-proto-mask=1 hmark-rnd=1 hmark-mod=1 hmark-offset=1",
    "IDLETIMER": "timeout=1 label=1 alarm=0",
    "LED": "led-trigger-id=1 led-delay=1 led-always-blink=0",
    "LOG": "log-level=1 log-prefix=1 log-tcp-sequence=0 log-tcp-options=0 log-ip-options=0 "
    "log-uid=0 log-macdecode=0",
    "MARK": _MARK_TG,
    "MASQUERADE": "to-ports=1 random=0 random-fully=0",
    "NFLOG": "nflog-group=1 nflog-prefix=1 nflog-range=1 nflog-size=1 nflog-threshold=1",
    "NFQUEUE": "queue-num=1 queue-balance=1 queue-bypass=0 queue-cpu-fanout=0",
    "NOTRACK": "",
    "RATEEST": "rateest-name=1 rateest-interval=1 rateest-ewmalog=1",
    "REDIRECT": "to-ports=1 random=0",
    "SECMARK": "selctx=1",
    "SET": "add-set=2 del-set=2 map-set=2 exist=0 timeout=1 map-mark=0 map-prio=0 map-queue=0",
    "SNAT": "to-source=1 random=0 random-fully=0 persistent=0",
    "SYNPROXY": "sack-perm=0 timestamp=0 ecn=0 wscale=1 mss=1",
    "TCPMSS": "set-mss=1 clamp-mss-to-pmtu=0",
    "TCPOPTSTRIP": "strip-options=1",
    "TEE": "gateway=1 oif=1",
    "TOS": "set-tos=1 and-tos=1 or-tos=1 xor-tos=1",
    "TPROXY": "on-port=1 on-ip=1 tproxy-mark=1",
    "TRACE": "",
}
_TARGETS_V4 = {
    "CLUSTERIP": "new=0 hashmode=1 clustermac=1 total-nodes=1 local-node=1 hash-init=1",
    "ECN": "ecn-tcp-remove=0 ecn-tcp-cwr=1 ecn-tcp-ece=1 ecn-ip-ect=1",
    "NETMAP": "to=1",
    "REJECT": "reject-with=1",
    "TTL": "ttl-set=1 ttl-dec=1 ttl-inc=1",
    "ULOG": "ulog-nlgroup=1 ulog-prefix=1 ulog-cprange=1 ulog-qthreshold=1",
}
_TARGETS_V6 = {
    "DNPT": "src-pfx=1 dst-pfx=1",
    "HL": "hl-set=1 hl-dec=1 hl-inc=1",
    "NETMAP": "to=1",
    "REJECT": "reject-with=1",
    "SNPT": "src-pfx=1 dst-pfx=1",
}

# the verdicts iptables implements with its "standard" target: no options
VERDICTS = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})

MATCHES: dict[str, dict[str, Options]] = {}
TARGETS: dict[str, dict[str, Options]] = {}
for _family, _m, _t in (("IPv4", _MATCHES_V4, _TARGETS_V4), ("IPv6", _MATCHES_V6, _TARGETS_V6)):
    MATCHES[_family] = {name: _table(spec) for name, spec in {**_MATCHES_ANY, **_m}.items()}
    TARGETS[_family] = {name: _table(spec) for name, spec in {**_TARGETS_ANY, **_t}.items()}
    TARGETS[_family].update({v: {} for v in VERDICTS})

# names ``-m`` accepts for a module registered under another name
MATCH_ALIASES = {"icmpv6": "icmp6", "ipv6-icmp": "icmp6"}

# every name that is a target in either family: a chain may not be called like one
ALL_TARGET_NAMES = frozenset(TARGETS["IPv4"]) | frozenset(TARGETS["IPv6"])

# the options of iptables itself that may appear in a rule (xtables.c original_opts)
# canonical short flag -> nargs; long spellings map onto them
BUILTIN_SHORT = {
    "-s": 1,
    "-d": 1,
    "-p": 1,
    "-i": 1,
    "-o": 1,
    "-f": 0,
    "-m": 1,
    "-j": 1,
    "-g": 1,
    "-c": 1,
    "-4": 0,
    "-6": 0,
}
BUILTIN_LONG = {
    "--source": "-s",
    "--src": "-s",
    "--destination": "-d",
    "--dst": "-d",
    "--protocol": "-p",
    "--in-interface": "-i",
    "--out-interface": "-o",
    "--fragments": "-f",
    "--match": "-m",
    "--jump": "-j",
    "--goto": "-g",
    "--set-counters": "-c",
    "--ipv4": "-4",
    "--ipv6": "-6",
}
# builtins that accept a leading "!"
BUILTIN_NEGATABLE = frozenset({"-s", "-d", "-p", "-i", "-o", "-f"})

# iptables commands, short and long
COMMANDS = {
    "-A": "-A",
    "--append": "-A",
    "-I": "-I",
    "--insert": "-I",
    "-D": "-D",
    "--delete": "-D",
    "-R": "-R",
    "--replace": "-R",
    "-N": "-N",
    "--new-chain": "-N",
    "-X": "-X",
    "--delete-chain": "-X",
    "-F": "-F",
    "--flush": "-F",
    "-Z": "-Z",
    "--zero": "-Z",
    "-P": "-P",
    "--policy": "-P",
    "-E": "-E",
    "--rename-chain": "-E",
    "-C": "-C",
    "--check": "-C",
    "-L": "-L",
    "--list": "-L",
    "-S": "-S",
    "--list-rules": "-S",
}

# protocol names and numbers (iptables' xtables_chain_protos first, then Debian netbase's
# /etc/protocols, which getprotobyname/getprotobynumber read on a node)
CHAIN_PROTOS = (
    ("tcp", 6),
    ("sctp", 132),
    ("udp", 17),
    ("udplite", 136),
    ("icmp", 1),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("esp", 50),
    ("ah", 51),
    ("mobility-header", 135),
    ("ipv6-mh", 135),
    ("mh", 135),
    ("all", 0),
)
ETC_PROTOCOLS = {
    "ip": 0,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ggp": 3,
    "ipencap": 4,
    "st": 5,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "pup": 12,
    "udp": 17,
    "hmp": 20,
    "xns-idp": 22,
    "rdp": 27,
    "iso-tp4": 29,
    "dccp": 33,
    "xtp": 36,
    "ddp": 37,
    "idpr-cmtp": 38,
    "ipv6": 41,
    "ipv6-route": 43,
    "ipv6-frag": 44,
    "idrp": 45,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "skip": 57,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "rspf": 73,
    "vmtp": 81,
    "eigrp": 88,
    "ospf": 89,
    "ax.25": 93,
    "ipip": 94,
    "etherip": 97,
    "encap": 98,
    "pim": 103,
    "ipcomp": 108,
    "vrrp": 112,
    "l2tp": 115,
    "isis": 124,
    "sctp": 132,
    "fc": 133,
    "mobility-header": 135,
    "udplite": 136,
    "mpls-in-ip": 137,
    "manet": 138,
    "hip": 139,
    "shim6": 140,
    "wesp": 141,
    "rohc": 142,
    "ethernet": 143,
}
# /etc/protocols aliases (getprotobyname finds them; -p is lowercased first)
ETC_PROTOCOL_ALIASES = {
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipencap": 4,
    "ipv6-crypt": 50,
    "ipv6-auth": 51,
}


def protocol_number(name: str) -> int | None:
    """xtables_parse_protocol: a number 0-255, or a name (lower-cased as ``-p`` does)."""
    name = name.lower()
    if name.isdigit():
        value = int(name)
        return value if value <= 255 else None
    if name == "all":
        return 0
    number = ETC_PROTOCOLS.get(name)
    if number is None:
        number = ETC_PROTOCOL_ALIASES.get(name)
    if number is None:
        for pname, pnum in CHAIN_PROTOS:
            if pname == name:
                return pnum
    return number


_NUMBER_TO_NAME: dict[int, str] = {}
for _name, _num in CHAIN_PROTOS:
    _NUMBER_TO_NAME.setdefault(_num, _name)
for _name, _num in ETC_PROTOCOLS.items():
    _NUMBER_TO_NAME.setdefault(_num, _name)


def protocol_name(number: int) -> str | None:
    """proto_to_name: iptables' own table first (so 58 is ``ipv6-icmp``), then
    /etc/protocols; None when neither knows the number."""
    return _NUMBER_TO_NAME.get(number)


def proto_module(proto: str, family: str) -> str | None:
    """The match module ``-p PROTO`` loads on demand (``-p tcp --dport 80``), if any."""
    number = protocol_number(proto)
    if number is None:
        return None
    name = protocol_name(number) if number else None
    if name is None:
        return None
    name = MATCH_ALIASES.get(name, name)
    return name if name in MATCHES[family] else None


def canonical_flag(flag: str) -> str:
    """The short spelling of one of iptables' own options (``--source`` -> ``-s``)."""
    return BUILTIN_LONG.get(flag, flag)


# ----------------------------------------------------------------- tokens


class _Unknown(Exception):
    """An unknown module, target option or option: kept as an opaque rule if asked to."""

    def __init__(self, message: str, token: str):
        super().__init__(message)
        self.message = message
        self.token = token


class _Bad(Exception):
    """Any other error in a line (the caller adds file and line)."""

    def __init__(self, message: str, token: object = None):
        super().__init__(message)
        self.message = message
        self.token = token


def tokenize(line: str) -> list[str]:
    """Split one rule line the way iptables-restore's add_param_to_argv does: blanks
    separate tokens; ``"`` opens a quoted part in which ``\\`` escapes the next character;
    the closing ``"`` ends the token. An unbalanced quote is an InputError."""
    try:
        return _tokenize(line)[0]
    except _Bad as exc:
        raise InputError(exc.message, value=exc.token) from None


def _tokenize(line: str) -> tuple[list[str], set[int]]:
    """tokenize, plus the indexes of the tokens that were quoted."""
    if '"' not in line:
        return line.split(), set()
    # the common case: whole-token quotes without escapes
    parts = line.split('"')
    last = len(parts) - 1
    if last % 2 == 0:
        tokens: list[str] = []
        quoted: set[int] = set()
        for k, part in enumerate(parts):
            if k % 2:
                if "\\" in part:
                    break
                quoted.add(len(tokens))
                tokens.append(part)
            elif part and ((k and part[0] not in " \t") or (k < last and part[-1] not in " \t")):
                break
            else:
                tokens.extend(part.split())
        else:
            return tokens, quoted
    return _tokenize_slow(line)


def _tokenize_slow(line: str) -> tuple[list[str], set[int]]:
    tokens: list[str] = []
    quoted: set[int] = set()
    buf: list[str] = []
    in_quote = escaped = was_quoted = False
    for ch in line:
        if in_quote:
            if escaped:
                buf.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
                if was_quoted:
                    quoted.add(len(tokens))
                tokens.append("".join(buf))
                buf.clear()
                was_quoted = False
            else:
                buf.append(ch)
            continue
        if ch == '"':
            in_quote = was_quoted = True
        elif ch in " \t\n\r\v\f":
            if buf:
                tokens.append("".join(buf))
                buf.clear()
        else:
            buf.append(ch)
    if in_quote:
        raise _Bad("unbalanced quote", line)
    if buf:
        tokens.append("".join(buf))
    return tokens, quoted


# ----------------------------------------------------------------- options -> modules


class _Context:
    """The modules and target loaded so far in one rule, and how an option resolves
    against them (iptables' merged getopt table: its own options first, then the most
    recently loaded extension's, then older ones; -p's protocol match on demand)."""

    __slots__ = ("family", "loaded", "matches", "proto", "proto_used", "targets")

    def __init__(self, family: str):
        self.family = family
        self.matches = MATCHES[family]
        self.targets = TARGETS[family]
        self.loaded: list[tuple[str, Options, bool]] = []  # (name, options, is_target)
        self.proto: str | None = None
        self.proto_used = False

    def load_match(self, name: str) -> str:
        real = MATCH_ALIASES.get(name, name)
        options = self.matches.get(real)
        if options is None:
            raise _Unknown(f"unknown match module {name!r}", name)
        self.loaded.append((real, options, False))
        return real

    def load_target(self, name: str) -> bool:
        """True for an extension target (or verdict), False for a jump to a chain."""
        options = self.targets.get(name)
        if options is None:
            return False
        if options:
            self.loaded.append((name, options, True))
        return True

    def knows(self, flag: str) -> bool:
        if flag in BUILTIN_SHORT or flag in BUILTIN_LONG or flag in COMMANDS:
            return True
        return any(flag in options for _, options, _ in self.loaded)

    def resolve(self, flag: str) -> tuple[int, str, int]:
        """(index into loaded, canonical name, nargs) of a long option; may load -p's
        protocol match. Raises _Unknown / _Bad."""
        loaded = self.loaded
        for i in range(len(loaded) - 1, -1, -1):
            entry = loaded[i][1].get(flag)
            if entry is not None:
                return i, entry[0], entry[1]
        found = self._prefix(flag)
        if found is not None:
            return found
        if self.proto is not None and not self.proto_used:
            module = proto_module(self.proto, self.family)
            if module is not None:
                self.proto_used = True
                loaded.append((module, self.matches[module], False))
                entry = self.matches[module].get(flag)
                if entry is not None:
                    return len(loaded) - 1, entry[0], entry[1]
                found = self._prefix(flag)
                if found is not None:
                    return found
        raise _Unknown(f"unknown option {flag!r}", flag)

    def _prefix(self, flag: str) -> tuple[int, str, int] | None:
        """getopt_long's unambiguous abbreviation of a long option."""
        if len(flag) < 3:
            return None
        hits: dict[tuple[int, str], int] = {}
        builtin = {canon for long, canon in BUILTIN_LONG.items() if long.startswith(flag)}
        for i in range(len(self.loaded) - 1, -1, -1):
            for spelling, (canon, nargs) in self.loaded[i][1].items():
                if spelling.startswith(flag):
                    hits[(i, canon)] = nargs
        if len(hits) + len(builtin) > 1:
            names = sorted(builtin) + sorted(c for _, c in hits)
            raise _Bad(f"ambiguous option {flag!r} (could be {', '.join(names)})", flag)
        if builtin:
            return -1, builtin.pop(), 0  # caller re-dispatches builtins
        if hits:
            (i, canon), nargs = hits.popitem()
            return i, canon, nargs
        return None


# ----------------------------------------------------------------- rule options

_STARTS_COMMAND = frozenset(COMMANDS)


def _group(
    tokens: list[str], quoted: set[int], start: int, family: str, cache: dict
) -> tuple[tuple[Opt, ...], str | None]:
    """Group a rule's tokens (from ``start``) into options, checking their values; also
    the chain it jumps or goes to (None for a target or no target). Raises _Unknown /
    _Bad / BadValue."""
    ctx = _Context(family)
    opts: list[Opt] = []
    append = opts.append
    n = len(tokens)
    i = start
    negated = False
    target_seen = False
    chain_target = None
    owned: dict[int, dict[str, tuple[str, ...]]] = {}  # loaded extension -> its options
    proto_opt: Opt | None = None
    builtins_seen: set[str] = set()
    while i < n:
        tok = tokens[i]
        if tok == "!":
            if negated:
                raise _Bad("multiple consecutive '!' not allowed", tok)
            negated = True
            i += 1
            continue
        if tok[:1] != "-" or tok == "-" or i in quoted:
            raise _Bad(f"unexpected argument {tok!r}", tok)
        flag = tok
        short = BUILTIN_SHORT.get(tok)
        if short is None and tok in BUILTIN_LONG:
            short = BUILTIN_SHORT[BUILTIN_LONG[tok]]
            canon = BUILTIN_LONG[tok]
        else:
            canon = tok
        owner = -1
        if short is None:
            if tok[:2] != "--":
                if tok in _STARTS_COMMAND:
                    raise _Bad(f"a second command {tok!r} in one rule", tok)
                if tok == "-t":
                    raise _Bad("the -t option cannot be used in iptables-restore", tok)
                raise _Bad(f"unknown option {tok!r}", tok)
            if tok in _STARTS_COMMAND:
                raise _Bad(f"a second command {tok!r} in one rule", tok)
            if tok == "--table":
                raise _Bad("the -t option cannot be used in iptables-restore", tok)
            index, canon, nargs = ctx.resolve(tok)
            if index == -1:  # abbreviation of one of iptables' own long options
                short = BUILTIN_SHORT[canon]
            owner = index
        if short is not None:
            nargs = short
            if canon in ("-m", "-j", "-g", "-c", "-4", "-6") and negated:
                raise _Bad(f"'!' is not allowed before {tok}", tok)
        # arguments
        if nargs == 0:
            args: tuple[str, ...] = ()
            i += 1
        elif nargs == 1 or nargs == OPTIONAL:
            j = i + 1
            if j < n and (
                j in quoted or canon in _FREE_TEXT or not _looks_like_option(tokens[j], ctx)
            ):
                if nargs == OPTIONAL and j not in quoted and tokens[j][:1] in ("-", "!"):
                    args = ()
                    i = j
                else:
                    args = (tokens[j],)
                    i = j + 1
            elif nargs == OPTIONAL:
                args = ()
                i = j
            else:
                raise _Bad(f"option {tok} requires an argument", tok)
            if (
                canon == "-c"
                and args
                and "," not in args[0]
                and i < n
                and tokens[i][:1] not in ("-", "!")
            ):
                args = (args[0], tokens[i])
                i += 1
            elif (
                canon == "--comment"
                and args
                and i < n
                and i not in quoted
                and tokens[i][:1] not in ("-", "!")
            ):
                # kube-proxy's hand-written test dumps leave multi-word comments unquoted
                k = i
                while k < n and k not in quoted and tokens[k][:1] not in ("-", "!"):
                    k += 1
                args = (" ".join(tokens[i - 1 : k]),)
                i = k
        else:  # two arguments (--tcp-flags MASK COMP, --match-set NAME FLAGS)
            j = i + 1
            if (
                j + 1 >= n
                or _looks_like_option(tokens[j], ctx)
                or (j + 1 not in quoted and tokens[j + 1][:1] in ("-", "!"))
            ):
                raise _Bad(f"option {tok} requires two arguments", tok)
            args = (tokens[j], tokens[j + 1])
            i = j + 2
        if short is not None:
            if canon == "-m":
                ctx.load_match(args[0])
            elif canon == "-j" or canon == "-g":
                if target_seen:
                    raise _Bad(f"a second target {args[0]!r} in one rule", args[0])
                target_seen = True
                if canon == "-g" or not ctx.load_target(args[0]):
                    chain_target = args[0]
            elif canon == "-p":
                ctx.proto = args[0]
        if owner < 0 and (canon in _CHECKED_BUILTINS or canon == "-f"):
            if canon in builtins_seen:
                raise _Bad(f"multiple {canon} flags not allowed", tok)
            builtins_seen.add(canon)
        key = (flag, args, negated)
        opt = cache.get(key)
        if opt is None:
            opt = cache[key] = Opt(flag, args, negated)
            if short is not None and canon in _CHECKED_BUILTINS:  # checked once per value
                check_option(None, canon, args, family, cache["evaluable"])
        if owner >= 0:
            mine = owned.get(owner)
            if mine is None:
                mine = owned[owner] = {}
            elif canon in mine:
                raise _Bad(f"option {canon} given twice for one {ctx.loaded[owner][0]}", tok)
            mine[canon] = args
            module = ctx.loaded[owner][0]
            checked = (module, canon, args)
            if checked not in cache:
                check_option(module, canon, args, family, cache["evaluable"])
                cache[checked] = True
        elif canon == "-p":
            proto_opt = opt
        append(opt)
        negated = False
    if negated:
        raise _Bad("nothing appropriate following '!'", "!")
    if owned and _NEEDS_RULE_CHECK.intersection(name for name, _, _ in ctx.loaded):
        target = None
        target_opts: dict[str, tuple[str, ...]] = {}
        matches = []
        for index, mine in owned.items():
            name, _, is_target = ctx.loaded[index]
            if is_target:
                target, target_opts = name, mine
            else:
                matches.append((name, mine))
        check_rule(
            proto_opt.args[0] if proto_opt else None,
            proto_opt.negated if proto_opt else False,
            target,
            target_opts,
            matches,
        )
    elif not owned and _NEEDS_RULE_CHECK.intersection(
        name for name, _, _ in ctx.loaded
    ):  # extensions with no options: DNAT alone, -m statistic
        check_rule(
            proto_opt.args[0] if proto_opt else None,
            proto_opt.negated if proto_opt else False,
            ctx.loaded[-1][0] if ctx.loaded[-1][2] else None,
            {},
            [(name, {}) for name, _, is_target in ctx.loaded if not is_target],
        )
    return tuple(opts), chain_target


# options whose argument is free text: like getopt, take the next token whatever it is
_FREE_TEXT = frozenset(
    {"--comment", "--log-prefix", "--nflog-prefix", "--ulog-prefix", "--string", "--hex-string"}
)


def _looks_like_option(tok: str, ctx: _Context) -> bool:
    """Whether the token after an option that takes an argument is really the next option
    (the argument is missing). getopt would take it as the argument and fail later."""
    if tok == "!":
        return True
    return tok[:1] == "-" and ctx.knows(tok)


@dataclass(frozen=True, slots=True)
class MatchPart:
    """One match of a rule: its module and its options, each with its canonical name."""

    name: str  # canonical module name: "tcp", "icmp6", "state"
    opts: tuple[tuple[str, Opt], ...]
    implicit: bool = False  # loaded by -p PROTO, no -m written
    load: Opt | None = None  # the -m option (None when implicit)


@dataclass(frozen=True, slots=True)
class RuleParts:
    """A rule split the way iptables stores it: its own matches (-s -d -i -o -p -f, keyed
    by short flag), extension matches in load order, and the target."""

    basic: tuple[tuple[str, Opt], ...]
    matches: tuple[MatchPart, ...]
    target: str | None  # target or chain name
    target_kind: str | None  # "verdict" (ACCEPT ...), "extension" (DNAT ...), "chain"
    goto: bool
    target_opts: tuple[tuple[str, Opt], ...]


def is_opaque(rule: Rule) -> bool:
    """An unknown rule kept with ``keep_unknown=True``: the engine matches nothing on it."""
    return len(rule.opts) == 1 and rule.opts[0].flag == RAW


def rule_parts(rule: Rule, family: str = "IPv4") -> RuleParts | None:
    """Which module each option belongs to (None for an opaque rule). Raises ValueError for
    options no module of ``family`` accepts (a hand-built rule iptables would reject)."""
    if is_opaque(rule):
        return None
    ctx = _Context(family)
    basic: list[tuple[str, Opt]] = []
    builders: list[tuple[str, list[tuple[str, Opt]], bool, Opt | None]] = []
    by_loaded: dict[int, int] = {}  # index in ctx.loaded -> index in builders (or -1)
    target = kind = None
    goto = False
    target_opts: list[tuple[str, Opt]] = []
    try:
        for opt in rule.opts:
            flag = opt.flag
            canon = BUILTIN_LONG.get(flag, flag)
            if canon not in BUILTIN_SHORT and flag[:2] == "--":
                index, name, _ = ctx.resolve(flag)
                if index == -1:
                    canon = name
                else:
                    if index not in by_loaded:  # loaded on demand by -p
                        by_loaded[index] = len(builders)
                        builders.append((ctx.loaded[index][0], [], True, None))
                    b = by_loaded[index]
                    (target_opts if b == -1 else builders[b][1]).append((name, opt))
                    continue
            if canon == "-m":
                ctx.load_match(opt.args[0])
                by_loaded[len(ctx.loaded) - 1] = len(builders)
                builders.append((ctx.loaded[-1][0], [], False, opt))
            elif canon in ("-j", "-g"):
                target = opt.args[0]
                goto = canon == "-g"
                if not goto and ctx.load_target(target):
                    kind = "verdict" if target in VERDICTS else "extension"
                    if ctx.loaded and ctx.loaded[-1][2] and ctx.loaded[-1][0] == target:
                        by_loaded[len(ctx.loaded) - 1] = -1
                else:
                    kind = "chain"
            elif canon in BUILTIN_SHORT:
                if canon == "-p":
                    ctx.proto = opt.args[0]
                basic.append((canon, opt))
            else:
                raise _Unknown(f"unknown option {flag!r}", flag)
    except (_Unknown, _Bad) as exc:
        raise ValueError(exc.message) from None
    matches = tuple(
        MatchPart(name, tuple(o), implicit, load) for name, o, implicit, load in builders
    )
    return RuleParts(tuple(basic), matches, target, kind, goto, tuple(target_opts))


# ----------------------------------------------------------------- the restore format

_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")
_FAMILY_HINT = re.compile(r" -[sd] ([0-9A-Fa-f.:]+)")
_POLICIES = frozenset({"ACCEPT", "DROP", "-"})
_MAX_CHAIN = 28  # XT_EXTENSION_MAXNAMELEN - 1


def parse(
    text: str,
    *,
    file: str | None = None,
    keep_unknown: bool = False,
    complete: bool = False,
    evaluable: bool = False,
    family: str | None = None,
    into: Ruleset | None = None,
) -> Ruleset:
    """Read iptables-save output or iptables-restore input into a Ruleset.

    ``family`` ("IPv4"/"IPv6") picks ip6tables' extensions (icmp6, REJECT's icmp6 types);
    by default IPv6 when the first ``-s``/``-d`` address has a colon. Option values are
    checked as iptables-restore checks them (``iptables_values``), addresses against the
    family, and a rule may only name chains declared before it. ``into`` applies the text on
    top of an existing Ruleset instead, as ``iptables-restore --noflush`` applies it to a
    node's tables (a chain line flushes that chain, ``-I`` inserts, ``-X`` deletes) and
    returns it.

    ``complete=True`` reads a whole dump (what iptables-save prints, what iptables-restore
    loads without --noflush): a rule may only be on, or jump to, a chain declared before
    it. ``evaluable=True`` also refuses the values iptables accepts but the engine cannot
    evaluate (host names, service names, NAT ranges; see ``iptables_values``)."""
    if into is not None:
        family = into.family
    elif family is None:
        # the first -s/-d address decides: an address of the other family is then an error
        hint = _FAMILY_HINT.search(text)
        family = "IPv6" if hint and ":" in hint.group(1) else "IPv4"
    if family not in ("IPv4", "IPv6"):
        raise InputError("family must be IPv4 or IPv6", file=file, value=family)
    enabled = gc.isenabled()
    gc.disable()  # millions of small acyclic objects: the cyclic collector only slows this
    try:
        ruleset = into or Ruleset(family=family)
        return _parse(text, file, keep_unknown, ruleset, complete, evaluable, into is None)
    finally:
        if enabled:
            gc.enable()


def _parse(
    text: str,
    file: str | None,
    keep_unknown: bool,
    ruleset: Ruleset,
    complete: bool,
    evaluable: bool,
    fresh: bool = True,
) -> Ruleset:
    family = ruleset.family
    table: Table | None = None
    cache: dict = {"evaluable": evaluable}  # also the Opts and values seen so far
    lineno = 0
    line = ""
    # jumps to user chains read in this table (chain, target, line), for the loop check
    jumps: list[tuple[str, str, int]] = []
    try:
        for lineno, line in enumerate(text.split("\n"), 1):
            first = line[:1]
            if first == "#" or not line or line.isspace():
                continue
            if first == "-" or first == "[":
                if table is None:
                    tokens = line.split()
                    raise _Bad(
                        "rule outside a table (no '*table' line before it)",
                        tokens[0] if tokens else line,
                    )
                jump = _command(ruleset, table, line, family, keep_unknown, cache, complete)
                if jump is not None:
                    jumps.append((*jump, lineno))
            elif first == ":":
                if table is None:
                    raise _Bad("chain line outside a table", line.split()[0])
                if _chain_line(table, line):
                    cache[("edited", table.name)] = True
            elif first == "*":
                if table is not None:
                    raise _Bad(f"COMMIT expected before {line.strip()!r}", line.strip())
                name = line[1:].split()[0] if line[1:].split() else ""
                if name not in BUILTIN_CHAINS:
                    raise _Bad("unknown table", name)
                table = ruleset.table(name)
            elif line.rstrip("\r") == "COMMIT":
                if table is None:
                    raise _Bad("COMMIT outside a table", "COMMIT")
                # rules deleted or renamed, or a node's rules below: read the table itself
                exact = fresh and not cache.pop(("edited", table.name), False)
                _check_loops(table, jumps if exact else None, file, lineno)
                jumps = []
                table = None
            else:
                raise _Bad("unrecognised line", line.split()[0])
    except (_Bad, _Unknown, BadValue) as exc:
        raise _error(exc.message, file, lineno, exc.token) from None
    if table is not None:
        raise _error(
            f"COMMIT expected for table {table.name!r} at end of input",
            file,
            lineno + (0 if line == "" else 1),
            "<end of input>",
        )
    return ruleset


def _check_loops(
    table: Table, jumps: list[tuple[str, str, int]] | None, file: str | None, commit_line: int
) -> None:
    """A jump loop between user chains: the kernel refuses the table (ELOOP), so
    iptables-restore fails; named at the jump that closes it (``jumps``: the jumps read,
    with their lines; None: take them from the table's rules, named at COMMIT)."""
    if jumps is None:
        jumps = [
            (r.chain, t, commit_line)
            for r in table.rules
            if (t := r.target) is not None and t in table.chains
        ]
    if not jumps:
        return
    graph: dict[str, dict[str, int]] = {}
    for chain, target, line in jumps:
        graph.setdefault(chain, {}).setdefault(target, line)
    loop = jump_loop(graph)
    if loop is not None:
        raise _error(
            f"jump loop {' -> '.join(loop)}: the kernel refuses the table (ELOOP)",
            file,
            graph[loop[-2]][loop[-1]],
            loop[-1],
        )


def _error(message: str, file: str | None, lineno: int, token: object) -> InputError:
    if file is None:
        message = f"line {lineno}: {message}"
    return InputError(message, file=file, line=lineno, value=token)


def _chain_line(table: Table, line: str) -> bool:
    """Declare (or, as --noflush does, flush) a chain; True when rules were flushed."""
    parts = line[1:].split()
    if not parts:
        raise _Bad("chain name missing", line)
    name = parts[0]
    _check_chain_name(name)
    if len(parts) < 2:
        raise _Bad(f"chain {name}: policy missing", name)
    policy = parts[1]
    builtin = name in BUILTIN_CHAINS[table.name]
    if builtin and policy not in _POLICIES:
        raise _Bad(f"chain {name}: invalid policy", policy)
    packets = nbytes = 0
    if len(parts) > 2:
        m = _COUNTERS.fullmatch(parts[2])
        if m is None:
            raise _Bad(f"chain {name}: invalid counters", parts[2])
        packets, nbytes = int(m.group(1)), int(m.group(2))
    if name in table.chains and not builtin and any(r.chain == name for r in table.rules):
        table.rules[:] = [r for r in table.rules if r.chain != name]  # --noflush flushes
        flushed = True
    else:
        flushed = False
    if name in table.deleted:
        table.deleted.remove(name)  # created again after an earlier -X
    chain = table.declare(name, policy)
    chain.policy, chain.packets, chain.bytes = policy, packets, nbytes
    return flushed


def _check_chain_name(name: str) -> None:
    if len(name) > _MAX_CHAIN:
        raise _Bad(f"chain name too long (at most {_MAX_CHAIN} characters)", name)
    if name[:1] in ("-", "!"):
        raise _Bad("chain name may not start with '-' or '!'", name)
    if name in ALL_TARGET_NAMES:
        raise _Bad("chain name may not be a target's name", name)


def _rulenum(tok: str) -> int:
    if not tok.isdigit() or int(tok) < 1:
        raise _Bad("invalid rule number", tok)
    return int(tok)


def _command(
    ruleset: Ruleset,
    table: Table,
    line: str,
    family: str,
    keep_unknown: bool,
    cache: dict,
    complete: bool,
) -> tuple[str, str] | None:
    """Apply one command line; returns (chain, target) of a rule added that jumps to a
    user chain (the loop check's input)."""
    if line[:1] == "[":  # "[pkts:bytes] -A ..." as iptables-save -c writes
        end = line.find("]")
        if end < 0 or _COUNTERS.fullmatch(line[: end + 1]) is None:
            raise _Bad("invalid rule counters", line.split()[0])
        line = line[end + 1 :]
    tokens, quoted = _tokenize(line)
    if not tokens:
        raise _Bad("no command", line)
    cmd = COMMANDS.get(tokens[0])
    if cmd is None:
        raise _Bad("a rule line must start with a command (-A, -I, -D, ...)", tokens[0])
    n = len(tokens)

    def arg(i: int, what: str) -> str:
        if i >= n or (i not in quoted and tokens[i][:1] in ("-", "!")):
            raise _Bad(f"{tokens[0]} requires {what}", tokens[0])
        return tokens[i]

    def optional(i: int) -> str | None:
        return tokens[i] if i < n and tokens[i][:1] not in ("-", "!") else None

    def no_more(i: int) -> None:
        if i < n:
            raise _Bad(f"unexpected argument {tokens[i]!r}", tokens[i])

    if cmd in ("-A", "-I", "-D", "-R", "-C"):
        # iptables-restore refuses a rule on, or jumping to, a chain it does not know (a
        # text for --noflush may name chains the node already has: checked when complete)
        check_chains = complete and cmd != "-D"
        chain = arg(1, "a chain name")
        if len(chain) > _MAX_CHAIN:
            raise _Bad(f"chain name too long (at most {_MAX_CHAIN} characters)", chain)
        start, position = 2, None
        if cmd in ("-I", "-D", "-R"):
            num = optional(2)
            if num is not None:
                position, start = _rulenum(num), 3
            elif cmd == "-R":
                raise _Bad("-R requires a rule number", tokens[0])
        if cmd in ("-D", "-R"):
            cache[("edited", table.name)] = True  # a jump read earlier may be gone
        if cmd == "-D" and position is not None:
            no_more(start)
            _delete(table, chain, position)
            return None
        if cmd == "-C":
            raise _Bad("-C (check) is not supported in restore input", tokens[0])
        if start < n and tokens[start] in ("-4", "-6"):
            if (tokens[start] == "-6") != (family == "IPv6"):
                return None  # a rule for the other family: iptables-restore skips it unread
        if check_chains and chain not in table.chains and chain not in BUILTIN_CHAINS[table.name]:
            raise _Bad(f"chain {chain} does not exist (no ':{chain}' or -N line before)", chain)
        try:
            opts, jumps_to = _group(tokens, quoted, start, family, cache)
        except _Unknown:
            if not keep_unknown or cmd == "-D":
                raise
            opts, jumps_to = (Opt(RAW, tuple(tokens[start:])),), None
        if check_chains and jumps_to is not None and jumps_to not in table.chains:
            raise _Bad(
                f"jump to chain {jumps_to}, which does not exist (no ':{jumps_to}' or -N line "
                "before)",
                jumps_to,
            )
        if cmd == "-A":
            table.rules.append(Rule(chain, opts))
        elif cmd == "-I":
            _insert(table, chain, position or 1, Rule(chain, opts))
        elif cmd == "-R":
            assert position is not None
            _delete(table, chain, position)
            _insert(table, chain, position, Rule(chain, opts))
        else:  # -D CHAIN RULE
            for k, rule in enumerate(table.rules):
                if rule.chain == chain and rule.opts == opts:
                    del table.rules[k]
                    return None
            raise _Bad("no such rule to delete", chain)
        return (chain, jumps_to) if jumps_to is not None else None
    if cmd in ("-F", "-E"):
        cache[("edited", table.name)] = True  # a jump read earlier may be gone or renamed
    if cmd == "-N":
        name = arg(1, "a chain name")
        no_more(2)
        _check_chain_name(name)
        table.declare(name)
    elif cmd == "-X":
        deleted = optional(1)
        no_more(2 if deleted else 1)
        if deleted is None:
            table.deleted.extend(
                c
                for c in table.chains
                if c not in BUILTIN_CHAINS[table.name] and c not in table.deleted
            )
        elif deleted not in table.deleted:
            table.deleted.append(deleted)
    elif cmd == "-F":
        flushed = optional(1)
        no_more(2 if flushed else 1)
        table.rules[:] = [] if flushed is None else [r for r in table.rules if r.chain != flushed]
    elif cmd == "-Z":
        return None
    elif cmd == "-P":
        name, policy = arg(1, "a chain"), arg(2, "a policy")
        no_more(3)
        if name not in BUILTIN_CHAINS[table.name] or policy not in ("ACCEPT", "DROP"):
            raise _Bad("a policy is ACCEPT or DROP on a built-in chain", f"{name} {policy}")
        table.declare(name, policy).policy = policy
    elif cmd == "-E":
        old, new = arg(1, "a chain"), arg(2, "a new chain name")
        no_more(3)
        _check_chain_name(new)
        _rename(table, old, new)
    else:
        raise _Bad(f"command {tokens[0]} is not allowed in restore input", tokens[0])
    return None


def _positions(table: Table, chain: str) -> list[int]:
    return [k for k, r in enumerate(table.rules) if r.chain == chain]


def _insert(table: Table, chain: str, position: int, rule: Rule) -> None:
    where = _positions(table, chain)
    if position > len(where) + 1:
        raise _Bad("index of insertion too big", str(position))
    if position <= len(where):
        table.rules.insert(where[position - 1], rule)
    elif where:
        table.rules.insert(where[-1] + 1, rule)
    else:
        table.rules.append(rule)


def _delete(table: Table, chain: str, position: int) -> None:
    where = _positions(table, chain)
    if position > len(where):
        raise _Bad("index of deletion too big", str(position))
    del table.rules[where[position - 1]]


def _rename(table: Table, old: str, new: str) -> None:
    if old not in table.chains or old in BUILTIN_CHAINS[table.name]:
        raise _Bad("no such user chain", old)
    if new in table.chains:
        raise _Bad("a chain with that name exists", new)
    table.chains = {(new if k == old else k): v for k, v in table.chains.items()}
    table.chains[new].name = new
    for k, rule in enumerate(table.rules):
        opts = tuple(
            Opt(o.flag, (new,), o.negated)
            if o.flag in ("-j", "-g", "--jump", "--goto") and o.args == (old,)
            else o
            for o in rule.opts
        )
        table.rules[k] = Rule(new if rule.chain == old else rule.chain, opts)
