"""kube-proxy's configuration file and the emulated node.

``KubeProxyConfig`` is read from a real ``KubeProxyConfiguration``
(``kubeproxy.config.k8s.io/v1alpha1``) YAML file, the file given to ``kube-proxy --config``.
Decoding follows kube-proxy's:

* strict: an unknown field (also a wrongly capitalised one) or a duplicated field is an
  error naming it; wrong ``kind`` or ``apiVersion`` is an error;
* the v1alpha1 defaults of ``pkg/proxy/apis/config/v1alpha1/defaults.go`` fill unset fields,
  with that file's quirk kept: a non-pointer duration given as ``0s`` counts as unset, so
  ``iptables.minSyncPeriod: 0s`` becomes ``1s`` exactly as in kube-proxy;
* then the Linux platform defaults of ``cmd/kube-proxy/app/server_linux.go``: blank
  ``mode`` is ``iptables``, blank ``detectLocalMode`` is ``ClusterCIDR``, and (see
  ``effective_node_port_addresses``) nftables mode without ``nodePortAddresses`` uses
  ``primary``;
* then the checks of ``pkg/proxy/apis/config/validation/validation.go``.

Which section holds the effective sync periods, masqueradeAll and masquerade bit depends on
the mode, as in kube-proxy's conversion to its internal config (``v1alpha1/conversion.go``):
``nftables.*`` in nftables mode, ``ipvs.syncPeriod``/``ipvs.minSyncPeriod`` in IPVS mode and
``iptables.*`` otherwise (IPVS mode also takes masqueradeAll and masqueradeBit from
``iptables``). The ``sync_period``, ``masquerade_all``, ``masquerade_bit`` ... properties
give those effective values.

A file may also be a multi-document YAML (e.g. a kubeadm configuration) holding one
``KubeProxyConfiguration``, or the ``kube-proxy`` ConfigMap itself (its ``config.conf``
key), as ``kubectl -n kube-system get configmap kube-proxy -o yaml`` prints it.

``NodeConfig`` describes the emulated machine (``--node-config``): what no Kubernetes object
says, such as the addresses on each interface and what the node's kernel and iptables
support.

Durations are Go durations (``"30s"``, ``"1h0m0s"``, ``"500ms"``) held as float seconds;
``parse_duration`` and ``format_duration`` convert both ways, the latter printing what Go's
``time.Duration.String`` prints.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import yaml

from ..errors import InputError
from ..ipaddr import canonical_cidr, canonical_ip, ip_family, parse_cidr, parse_ip
from .files import check_yaml_depth

__all__ = [
    "API_VERSION",
    "DEFAULT_PROXY_MODE",
    "IPVS_SCHEDULERS",
    "KIND",
    "LOCAL_MODES",
    "NODE_PORT_ADDRESSES_PRIMARY",
    "PROXY_MODES",
    "ConntrackConfig",
    "DetectLocalConfig",
    "IPTablesConfig",
    "IPVSConfig",
    "InterfaceAddress",
    "KubeProxyConfig",
    "NFTablesConfig",
    "NodeConfig",
    "NodeFeatures",
    "default_interfaces",
    "effective_tcp_be_liberal",
    "format_duration",
    "format_mark",
    "load_kube_proxy_config",
    "load_node_config",
    "parse_duration",
]

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
OBJ = KIND  # the object named in error messages

PROXY_MODES = ("iptables", "ipvs", "nftables")
DEFAULT_PROXY_MODE = "iptables"  # server_linux.go platformApplyDefaults: blank mode on Linux
LOCAL_MODES = ("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix")
DEFAULT_LOCAL_MODE = "ClusterCIDR"
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
DEFAULT_IPVS_SCHEDULER = "rr"  # ipvs proxier: a blank scheduler means rr
NODE_PORT_ADDRESSES_PRIMARY = "primary"

_MODE_MESSAGE = (
    "must be iptables, ipvs, nftables or blank "
    "(blank means the best-available proxy [currently iptables])"
)

_UNSET: Any = object()


# --------------------------------------------------------------------------- durations

_NS = 1_000_000_000
_MAX_NS = (1 << 63) - 1
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
}
_COMPONENT = re.compile(r"([0-9]*)(\.([0-9]*))?([^0-9.]*)")


def _parse_duration_ns(text: str) -> int:
    """Go's time.ParseDuration, to integer nanoseconds; ValueError with Go's reason."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError("empty")
    total = Fraction(0)
    while s:
        if s[0] != "." and not ("0" <= s[0] <= "9"):
            raise ValueError("expected a number")
        m = _COMPONENT.match(s)
        pre, dot, post, unit = m.group(1), m.group(2), m.group(3) or "", m.group(4)
        if not pre and not post:
            raise ValueError("expected a number")
        if not unit:
            raise ValueError("missing unit")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        value = Fraction(int(pre or "0"))
        if dot and post:
            value += Fraction(int(post), 10 ** len(post))
        total += value * _UNITS[unit]
        s = s[m.end() :]
    ns = int(total)  # Go truncates the fractional nanoseconds
    if ns > _MAX_NS + (1 if neg else 0):
        raise ValueError("overflows a Go time.Duration")
    return -ns if neg else ns


def parse_duration(text: str) -> float:
    """Parse a Go duration ("30s", "1h0m0s", "1.5h", "500ms", "0") to float seconds.

    ValueError (with Go's reason: missing unit, unknown unit, ...) on bad syntax."""
    return _parse_duration_ns(text) / _NS


def _frac(value: int, digits: int) -> str:
    whole, rest = divmod(value, 10**digits)
    tail = str(rest).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def format_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration.String prints them: "30s", "1h0m0s", "500ms", "0s"."""
    ns = round(seconds * _NS)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_frac(u, 3)}\u00b5s"
    if u < _NS:
        return f"{sign}{_frac(u, 6)}ms"
    whole_s, frac_ns = divmod(u, _NS)
    secs = _frac((whole_s % 60) * _NS + frac_ns, 9)
    minutes = (whole_s // 60) % 60
    hours = whole_s // 3600
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def format_mark(bit: int) -> str:
    """The masquerade mark 1<<bit as kube-proxy prints it: Go ``%#08x`` ("0x00004000")."""
    return f"0x{1 << bit:08x}"


# --------------------------------------------------------------------------- YAML reading

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Doc:
    """One YAML document: its data, the line of every field path, block-scalar offsets."""

    __slots__ = ("blocks", "data", "duplicates", "line", "lines")

    def __init__(self, data: Any, lines: dict, blocks: dict, line: int, duplicates: list):
        self.data = data
        self.lines = lines  # (key, index, ...) -> 1-based line of that key / list item
        self.blocks = blocks  # path of a literal block scalar -> line before its first text line
        self.line = line  # the document's first line
        self.duplicates = duplicates  # [(path, line)] of repeated mapping keys

    def check_duplicates(self, ctx: _Ctx) -> None:
        """Strict decoding rejects a field given twice (YAML keeps the last silently)."""
        if self.duplicates:
            path, line = self.duplicates[0]
            raise InputError(
                "duplicate field", file=ctx.file, obj=ctx.obj, field=_fmt_path(path), line=line
            )


def _walk(
    node: yaml.Node, path: tuple, lines: dict, blocks: dict, dups: list, seen_nodes: set
) -> None:
    # a node shared through an alias is walked once (its lines are those of its anchor):
    # following aliases makes a 500-byte "billion laughs" text a walk of 9**9 nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value == "<<" and key.tag == "tag:yaml.org,2002:merge":
                _walk(value, path, lines, blocks, dups, seen_nodes)
                continue
            sub = path + (key.value,)
            if key.value in seen:
                dups.append((sub, key.start_mark.line + 1))
            seen.add(key.value)
            lines.setdefault(sub, key.start_mark.line + 1)
            _walk(value, sub, lines, blocks, dups, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(path + (i,), item.start_mark.line + 1)
            _walk(item, path + (i,), lines, blocks, dups, seen_nodes)
    elif isinstance(node, yaml.ScalarNode) and node.style == "|":
        blocks[path] = node.start_mark.line + 1


def _read_text(path: str | os.PathLike) -> str:
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InputError("no such file", file=file) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", file=file) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=file) from None


def _parse_yaml(text: str, file: str | None, line_offset: int = 0) -> list[_Doc]:
    """Every non-empty document of a YAML text; syntax errors name file and line."""
    check_yaml_depth(text, file, line_offset)
    loader = _Loader(text)
    docs: list[_Doc] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict = {}
            blocks: dict = {}
            dups: list = []
            _walk(node, (), lines, blocks, dups, set())
            data = loader.construct_document(node)
            if data is None:
                continue
            if line_offset:
                lines = {k: v + line_offset for k, v in lines.items()}
                blocks = {k: v + line_offset for k, v in blocks.items()}
                dups = [(k, v + line_offset) for k, v in dups]
            docs.append(_Doc(data, lines, blocks, node.start_mark.line + 1 + line_offset, dups))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "malformed YAML"
        if exc.context and exc.problem:
            what = f"{exc.problem} ({exc.context}"
            if (
                exc.context_mark
                and exc.problem_mark
                and exc.context_mark.line != exc.problem_mark.line
            ):
                what += f" started at line {exc.context_mark.line + 1 + line_offset}"
            what += ")"
        raise InputError(
            f"YAML syntax error: {what}",
            file=file,
            line=mark.line + 1 + line_offset if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()
    return docs


# --------------------------------------------------------------------------- decoding helpers


def _fmt_path(path: Iterable) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Ctx:
    """Where a value came from, to build InputErrors naming file, line, object and field."""

    __slots__ = ("file", "lines", "obj")

    def __init__(self, file: str | None, obj: str | None, lines: Mapping | None = None):
        self.file = file
        self.obj = obj
        self.lines = lines or {}

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(
        self, message: str, path: tuple = (), value: Any = _UNSET, near: tuple = ()
    ) -> InputError:
        """near: another field whose line to report when ``path`` is not in the file."""
        kwargs: dict[str, Any] = {}
        if value is not _UNSET:
            kwargs["value"] = value
        line = self.lines.get(path) or self.lines.get(near) or self.line(path)
        return InputError(
            message,
            file=self.file,
            obj=self.obj,
            field=_fmt_path(path) or None,
            line=line,
            **kwargs,
        )

    # -- structure
    def mapping(self, value: Any, path: tuple) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error("must be a mapping", path, value)
        return value

    def known(self, d: dict, path: tuple, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key in d:
            if not isinstance(key, str):
                raise self.error("field names must be strings", path, key)
            if key not in allowed:
                close = [a for a in allowed if a.lower() == key.lower()]
                if not close:
                    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                raise self.error("unknown field" + hint, path + (key,))

    # -- scalars
    def string(self, d: dict, path: tuple, key: str, default: str = "") -> str:
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error("must be a string", path + (key,), value)
        return value

    def boolean(self, d: dict, path: tuple, key: str, default: bool) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error("must be true or false", path + (key,), value)
        return value

    def int32(self, d: dict, path: tuple, key: str, default: int) -> int:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error("must be an integer", path + (key,), value)
        if not -(1 << 31) <= value < (1 << 31):
            raise self.error("does not fit a 32-bit integer", path + (key,), value)
        return value

    def number(self, d: dict, path: tuple, key: str, default: float) -> float:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error("must be a number", path + (key,), value)
        return float(value)

    def duration(
        self, d: dict, path: tuple, key: str, default: float, zero_is_unset: bool = False
    ) -> float:
        """A metav1.Duration. zero_is_unset: defaults.go replaces an explicit 0 too."""
        value = d.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(
                'must be a duration string such as "30s" or "1h0m0s"', path + (key,), value
            )
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(
                f'invalid duration ({exc}; Go syntax such as "30s", "1h0m0s", "500ms")',
                path + (key,),
                value,
            ) from None
        if zero_is_unset and seconds == 0:
            return default
        return seconds

    def strings(self, d: dict, path: tuple, key: str) -> tuple[str, ...]:
        value = d.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error("must be a list of strings", path + (key,), value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error("must be a string", path + (key, i), item)
        return tuple(value)

    def bool_map(self, d: dict, path: tuple, key: str) -> dict[str, bool]:
        value = self.mapping(d.get(key), path + (key,))
        out: dict[str, bool] = {}
        for name, flag in value.items():
            if not isinstance(name, str):
                raise self.error("names must be strings", path + (key,), name)
            if not isinstance(flag, bool):
                raise self.error("must be true or false", path + (key, name), flag)
            out[name] = flag
        return out


def _split_host_port(text: str) -> tuple[str, str]:
    """Go's net.SplitHostPort, enough for "ip:port" and "[ipv6]:port"."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError("missing port")
        return text[1:end], text[end + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("missing port")
    if ":" in host:
        raise ValueError("too many colons")
    return host, port


def _append_port_if_needed(addr: str, port: int) -> str:
    """pkg/proxy/util AppendPortIfNeeded: add the default port to a bare IP."""
    try:
        _split_host_port(addr)
        return addr
    except ValueError:
        pass
    try:
        ip = parse_ip(addr)
    except ValueError:
        return addr
    return f"{addr}:{port}" if ip.version == 4 else f"[{addr}]:{port}"


def _host_port_problem(text: str) -> tuple[str, str] | None:
    """validateHostPort: (message, bad part) or None."""
    try:
        host, port = _split_host_port(text)
    except ValueError:
        return "must be IP:port", text
    try:
        parse_ip(host)
    except ValueError:
        return "must be a valid IP", host
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return "must be a valid port", port
    return None


# --------------------------------------------------------------------------- KubeProxyConfig


@dataclass(slots=True)
class DetectLocalConfig:
    """``detectLocal``: settings for the BridgeInterface and InterfaceNamePrefix modes."""

    bridge_interface: str = ""
    interface_name_prefix: str = ""


@dataclass(slots=True)
class IPTablesConfig:
    """``iptables`` (also read by IPVS mode: masqueradeAll, masqueradeBit)."""

    masquerade_all: bool = False
    masquerade_bit: int = 14
    localhost_node_ports: bool = True
    sync_period: float = 30.0
    min_sync_period: float = 1.0


@dataclass(slots=True)
class IPVSConfig:
    """``ipvs``. A blank scheduler is stored as "rr", what the IPVS proxier uses."""

    scheduler: str = DEFAULT_IPVS_SCHEDULER
    strict_arp: bool = False
    exclude_cidrs: tuple[str, ...] = ()
    tcp_timeout: float = 0.0
    tcp_fin_timeout: float = 0.0
    udp_timeout: float = 0.0
    sync_period: float = 30.0
    min_sync_period: float = 0.0


@dataclass(slots=True)
class NFTablesConfig:
    """``nftables``."""

    masquerade_all: bool = False
    masquerade_bit: int = 14
    sync_period: float = 30.0
    min_sync_period: float = 1.0


@dataclass(slots=True)
class ConntrackConfig:
    """``conntrack`` (kube-proxy writes these to the nf_conntrack sysctls at start-up)."""

    max_per_core: int = 32 * 1024
    min: int = 128 * 1024
    tcp_established_timeout: float = 24 * 3600.0
    tcp_close_wait_timeout: float = 3600.0
    tcp_be_liberal: bool = False
    udp_timeout: float = 0.0
    udp_stream_timeout: float = 0.0


_TOP_FIELDS = (
    "apiVersion",
    "kind",
    "featureGates",
    "clientConnection",
    "logging",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "mode",
    "iptables",
    "ipvs",
    "nftables",
    "winkernel",
    "detectLocalMode",
    "detectLocal",
    "clusterCIDR",
    "nodePortAddresses",
    "oomScoreAdj",
    "conntrack",
    "configSyncPeriod",
    "portRange",
    "windowsRunAsService",
)
_IPTABLES_FIELDS = (
    "masqueradeBit",
    "masqueradeAll",
    "localhostNodePorts",
    "syncPeriod",
    "minSyncPeriod",
)
_IPVS_FIELDS = (
    "syncPeriod",
    "minSyncPeriod",
    "scheduler",
    "excludeCIDRs",
    "strictARP",
    "tcpTimeout",
    "tcpFinTimeout",
    "udpTimeout",
)
_NFTABLES_FIELDS = ("masqueradeBit", "masqueradeAll", "syncPeriod", "minSyncPeriod")
_CONNTRACK_FIELDS = (
    "maxPerCore",
    "min",
    "tcpEstablishedTimeout",
    "tcpCloseWaitTimeout",
    "tcpBeLiberal",
    "udpTimeout",
    "udpStreamTimeout",
)
_DETECT_LOCAL_FIELDS = ("bridgeInterface", "interfaceNamePrefix")
_CLIENT_CONNECTION_FIELDS = ("kubeconfig", "acceptContentTypes", "contentType", "qps", "burst")
_WINKERNEL_FIELDS = (
    "networkName",
    "sourceVip",
    "enableDSR",
    "rootHnsEndpointName",
    "forwardHealthCheckVip",
)
_LOGGING_FIELDS = ("format", "flushFrequency", "verbosity", "vmodule", "options")

HEALTHZ_PORT = 10256  # pkg/cluster/ports ProxyHealthzPort
METRICS_PORT = 10249  # pkg/cluster/ports ProxyStatusPort


@dataclass(slots=True)
class KubeProxyConfig:
    """A decoded, defaulted and validated KubeProxyConfiguration (Linux)."""

    mode: str = DEFAULT_PROXY_MODE
    cluster_cidrs: tuple[str, ...] = ()  # clusterCIDR split on ",", canonical
    detect_local_mode: str = DEFAULT_LOCAL_MODE
    detect_local: DetectLocalConfig = field(default_factory=DetectLocalConfig)
    iptables: IPTablesConfig = field(default_factory=IPTablesConfig)
    ipvs: IPVSConfig = field(default_factory=IPVSConfig)
    nftables: NFTablesConfig = field(default_factory=NFTablesConfig)
    node_port_addresses: tuple[str, ...] = ()  # canonical CIDRs, or ("primary",); () = unset
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    hostname_override: str = ""
    bind_address: str = "0.0.0.0"
    healthz_bind_address: str = f"0.0.0.0:{HEALTHZ_PORT}"
    metrics_bind_address: str = f"127.0.0.1:{METRICS_PORT}"
    feature_gates: dict[str, bool] = field(default_factory=dict)
    config_sync_period: float = 15 * 60.0
    oom_score_adj: int = -999  # qos.KubeProxyOOMScoreAdj
    source: str | None = field(default=None, compare=False)  # the file it came from

    # ---- construction
    @classmethod
    def from_dict(cls, d: Any, file: str | None = None) -> KubeProxyConfig:
        """Decode a KubeProxyConfiguration mapping (as yaml.safe_load returns it)."""
        return cls._decode(d, _Ctx(file, OBJ))

    @classmethod
    def _decode(cls, d: Any, ctx: _Ctx) -> KubeProxyConfig:
        if not isinstance(d, dict):
            raise ctx.error(f"must be a mapping (a {KIND} object)", (), _short(d))
        api_version, kind = d.get("apiVersion"), d.get("kind")
        if kind is None:
            raise ctx.error(f'missing; expected "{KIND}"', ("kind",))
        if kind != KIND:
            raise ctx.error(f'must be "{KIND}"', ("kind",), kind)
        if api_version is None:
            raise ctx.error(f'missing; expected "{API_VERSION}"', ("apiVersion",))
        if api_version != API_VERSION:
            raise ctx.error(
                f'unsupported API version (expected "{API_VERSION}")', ("apiVersion",), api_version
            )
        ctx.known(d, (), _TOP_FIELDS)

        mode = ctx.string(d, (), "mode") or DEFAULT_PROXY_MODE
        local_mode = ctx.string(d, (), "detectLocalMode") or DEFAULT_LOCAL_MODE

        p = ("detectLocal",)
        dl = ctx.mapping(d.get("detectLocal"), p)
        ctx.known(dl, p, _DETECT_LOCAL_FIELDS)
        detect_local = DetectLocalConfig(
            bridge_interface=ctx.string(dl, p, "bridgeInterface"),
            interface_name_prefix=ctx.string(dl, p, "interfaceNamePrefix"),
        )

        p = ("iptables",)
        it = ctx.mapping(d.get("iptables"), p)
        ctx.known(it, p, _IPTABLES_FIELDS)
        iptables = IPTablesConfig(
            masquerade_all=ctx.boolean(it, p, "masqueradeAll", False),
            masquerade_bit=ctx.int32(it, p, "masqueradeBit", 14),
            localhost_node_ports=ctx.boolean(it, p, "localhostNodePorts", True),
            sync_period=ctx.duration(it, p, "syncPeriod", 30.0, zero_is_unset=True),
            min_sync_period=ctx.duration(it, p, "minSyncPeriod", 1.0, zero_is_unset=True),
        )

        p = ("ipvs",)
        iv = ctx.mapping(d.get("ipvs"), p)
        ctx.known(iv, p, _IPVS_FIELDS)
        ipvs = IPVSConfig(
            scheduler=ctx.string(iv, p, "scheduler") or DEFAULT_IPVS_SCHEDULER,
            strict_arp=ctx.boolean(iv, p, "strictARP", False),
            exclude_cidrs=ctx.strings(iv, p, "excludeCIDRs"),
            tcp_timeout=ctx.duration(iv, p, "tcpTimeout", 0.0),
            tcp_fin_timeout=ctx.duration(iv, p, "tcpFinTimeout", 0.0),
            udp_timeout=ctx.duration(iv, p, "udpTimeout", 0.0),
            sync_period=ctx.duration(iv, p, "syncPeriod", 30.0, zero_is_unset=True),
            min_sync_period=ctx.duration(iv, p, "minSyncPeriod", 0.0),
        )

        p = ("nftables",)
        nf = ctx.mapping(d.get("nftables"), p)
        ctx.known(nf, p, _NFTABLES_FIELDS)
        nftables = NFTablesConfig(
            masquerade_all=ctx.boolean(nf, p, "masqueradeAll", False),
            masquerade_bit=ctx.int32(nf, p, "masqueradeBit", 14),
            sync_period=ctx.duration(nf, p, "syncPeriod", 30.0, zero_is_unset=True),
            min_sync_period=ctx.duration(nf, p, "minSyncPeriod", 1.0, zero_is_unset=True),
        )

        p = ("conntrack",)
        ct = ctx.mapping(d.get("conntrack"), p)
        ctx.known(ct, p, _CONNTRACK_FIELDS)
        conntrack = ConntrackConfig(
            max_per_core=ctx.int32(ct, p, "maxPerCore", 32 * 1024),
            min=ctx.int32(ct, p, "min", 128 * 1024),
            tcp_established_timeout=ctx.duration(ct, p, "tcpEstablishedTimeout", 86400.0),
            tcp_close_wait_timeout=ctx.duration(ct, p, "tcpCloseWaitTimeout", 3600.0),
            tcp_be_liberal=ctx.boolean(ct, p, "tcpBeLiberal", False),
            udp_timeout=ctx.duration(ct, p, "udpTimeout", 0.0),
            udp_stream_timeout=ctx.duration(ct, p, "udpStreamTimeout", 0.0),
        )

        # Fields kube-proxy has that the emulator does not use: type-checked, then dropped.
        p = ("clientConnection",)
        cc = ctx.mapping(d.get("clientConnection"), p)
        ctx.known(cc, p, _CLIENT_CONNECTION_FIELDS)
        for key in ("kubeconfig", "acceptContentTypes", "contentType"):
            ctx.string(cc, p, key)
        ctx.number(cc, p, "qps", 5.0)
        if ctx.int32(cc, p, "burst", 10) < 0:
            raise ctx.error("must be greater than or equal to 0", p + ("burst",), cc["burst"])
        p = ("winkernel",)
        wk = ctx.mapping(d.get("winkernel"), p)
        ctx.known(wk, p, _WINKERNEL_FIELDS)
        for key in ("networkName", "sourceVip", "rootHnsEndpointName"):
            ctx.string(wk, p, key)
        for key in ("enableDSR", "forwardHealthCheckVip"):
            ctx.boolean(wk, p, key, False)
        p = ("logging",)
        lg = ctx.mapping(d.get("logging"), p)
        ctx.known(lg, p, _LOGGING_FIELDS)
        ctx.mapping(lg.get("options"), p + ("options",))
        for key in ("bindAddressHardFail", "enableProfiling", "windowsRunAsService"):
            ctx.boolean(d, (), key, False)
        for key in ("showHiddenMetricsForVersion", "portRange"):
            ctx.string(d, (), key)

        bind_address = ctx.string(d, (), "bindAddress") or "0.0.0.0"
        try:
            bind_v4 = parse_ip(bind_address).version == 4
        except ValueError:
            bind_v4 = False  # defaults.go: ParseIPSloppy(...).To4() == nil; validation rejects
        healthz_default, metrics_default = (
            ("0.0.0.0", "127.0.0.1") if bind_v4 else ("[::]", "[::1]")
        )
        healthz = ctx.string(d, (), "healthzBindAddress")
        healthz = (
            _append_port_if_needed(healthz, HEALTHZ_PORT)
            if healthz
            else f"{healthz_default}:{HEALTHZ_PORT}"
        )
        metrics = ctx.string(d, (), "metricsBindAddress")
        metrics = (
            _append_port_if_needed(metrics, METRICS_PORT)
            if metrics
            else f"{metrics_default}:{METRICS_PORT}"
        )

        cluster_cidr = ctx.string(d, (), "clusterCIDR")
        cfg = cls(
            mode=mode,
            cluster_cidrs=tuple(cluster_cidr.split(",")) if cluster_cidr else (),
            detect_local_mode=local_mode,
            detect_local=detect_local,
            iptables=iptables,
            ipvs=ipvs,
            nftables=nftables,
            node_port_addresses=ctx.strings(d, (), "nodePortAddresses"),
            conntrack=conntrack,
            hostname_override=ctx.string(d, (), "hostnameOverride"),
            bind_address=bind_address,
            healthz_bind_address=healthz,
            metrics_bind_address=metrics,
            feature_gates=ctx.bool_map(d, (), "featureGates"),
            config_sync_period=ctx.duration(d, (), "configSyncPeriod", 900.0, zero_is_unset=True),
            oom_score_adj=ctx.int32(d, (), "oomScoreAdj", -999),
            source=ctx.file,
        )
        cfg._check(ctx)
        cfg._canonicalize()
        return cfg

    # ---- validation
    def validate(self) -> None:
        """Re-run kube-proxy's checks (e.g. after command-line flags changed fields)."""
        self._check(_Ctx(self.source, OBJ))
        self._canonicalize()

    def _check(self, ctx: _Ctx) -> None:
        if self.mode not in PROXY_MODES:
            raise ctx.error(_MODE_MESSAGE, ("mode",), self.mode)
        if self.detect_local_mode not in LOCAL_MODES:
            supported = ", ".join(f'"{m}"' for m in LOCAL_MODES)
            raise ctx.error(
                f"unsupported value; supported values: {supported}",
                ("detectLocalMode",),
                self.detect_local_mode,
            )
        if self.detect_local_mode == "BridgeInterface" and not self.detect_local.bridge_interface:
            raise ctx.error(
                "must not be empty when detectLocalMode is BridgeInterface",
                ("detectLocal", "bridgeInterface"),
                self.detect_local.bridge_interface,
                near=("detectLocalMode",),
            )
        if (
            self.detect_local_mode == "InterfaceNamePrefix"
            and not self.detect_local.interface_name_prefix
        ):
            raise ctx.error(
                "must not be empty when detectLocalMode is InterfaceNamePrefix",
                ("detectLocal", "interfaceNamePrefix"),
                self.detect_local.interface_name_prefix,
                near=("detectLocalMode",),
            )
        self._check_cluster_cidrs(ctx)
        self._check_node_port_addresses(ctx)

        for section, bit in (
            ("iptables", self.iptables.masquerade_bit),
            ("nftables", self.nftables.masquerade_bit),
        ):
            if not 0 <= bit <= 31:
                raise ctx.error("must be within the range [0, 31]", (section, "masqueradeBit"), bit)

        # Sync periods: only those of the section the mode reads (conversion.go).
        section = self._mode_section
        sync, min_sync = self.sync_period, self.min_sync_period
        if sync <= 0:
            raise ctx.error(
                "must be greater than 0", (section, "syncPeriod"), format_duration(sync)
            )
        if min_sync < 0:
            raise ctx.error(
                "must be greater than or equal to 0",
                (section, "minSyncPeriod"),
                format_duration(min_sync),
            )
        if min_sync > sync:
            raise ctx.error(
                f"must be greater than or equal to {section}.minSyncPeriod "
                f"({format_duration(min_sync)})",
                (section, "syncPeriod"),
                format_duration(sync),
            )

        if self.mode == "ipvs":  # validation.go checks the ipvs section in IPVS mode only
            for key, value in (
                ("tcpTimeout", self.ipvs.tcp_timeout),
                ("tcpFinTimeout", self.ipvs.tcp_fin_timeout),
                ("udpTimeout", self.ipvs.udp_timeout),
            ):
                if value < 0:
                    raise ctx.error(
                        "must be greater than or equal to 0", ("ipvs", key), format_duration(value)
                    )
            if self.ipvs.scheduler not in IPVS_SCHEDULERS:
                raise ctx.error(
                    f"must be one of {', '.join(IPVS_SCHEDULERS)} (blank means rr)",
                    ("ipvs", "scheduler"),
                    self.ipvs.scheduler,
                )
            for i, cidr in enumerate(self.ipvs.exclude_cidrs):
                try:
                    parse_cidr(cidr)
                except ValueError:
                    raise ctx.error(
                        "must be a valid CIDR", ("ipvs", "excludeCIDRs", i), cidr
                    ) from None

        c = self.conntrack
        for key, value in (("maxPerCore", c.max_per_core), ("min", c.min)):
            if value < 0:
                raise ctx.error("must be greater than or equal to 0", ("conntrack", key), value)
        for key, value in (
            ("tcpEstablishedTimeout", c.tcp_established_timeout),
            ("tcpCloseWaitTimeout", c.tcp_close_wait_timeout),
            ("udpTimeout", c.udp_timeout),
            ("udpStreamTimeout", c.udp_stream_timeout),
        ):
            if value < 0:
                raise ctx.error(
                    "must be greater than or equal to 0", ("conntrack", key), format_duration(value)
                )

        try:
            parse_ip(self.bind_address)
        except ValueError:
            raise ctx.error(
                "not a valid textual representation of an IP address",
                ("bindAddress",),
                self.bind_address,
            ) from None
        for key, value in (
            ("healthzBindAddress", self.healthz_bind_address),
            ("metricsBindAddress", self.metrics_bind_address),
        ):
            problem = _host_port_problem(value)
            if problem:
                raise ctx.error(problem[0], (key,), problem[1])
        if not -1000 <= self.oom_score_adj <= 1000:
            raise ctx.error(
                "must be within the range [-1000, 1000]", ("oomScoreAdj",), self.oom_score_adj
            )
        if self.config_sync_period <= 0:
            raise ctx.error(
                "must be greater than 0",
                ("configSyncPeriod",),
                format_duration(self.config_sync_period),
            )

    def _check_cluster_cidrs(self, ctx: _Ctx) -> None:
        cidrs = self.cluster_cidrs
        if not cidrs:
            return
        joined = ",".join(cidrs)
        if len(cidrs) > 2:
            raise ctx.error(
                "only one CIDR allowed or a valid DualStack CIDR "
                "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
                ("clusterCIDR",),
                joined,
            )
        families = []
        for cidr in cidrs:
            try:
                families.append(parse_cidr(cidr).version)
            except ValueError:
                raise ctx.error(
                    "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
                    ("clusterCIDR",),
                    cidr,
                ) from None
        if len(families) == 2 and families[0] == families[1]:
            raise ctx.error(
                "must be a valid DualStack CIDR, one IPv4 and one IPv6 "
                "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
                ("clusterCIDR",),
                joined,
            )

    def _check_node_port_addresses(self, ctx: _Ctx) -> None:
        addrs = self.node_port_addresses
        has_primary = NODE_PORT_ADDRESSES_PRIMARY in addrs
        for i, addr in enumerate(addrs):
            path = ("nodePortAddresses", i)
            if addr == NODE_PORT_ADDRESSES_PRIMARY:
                if len(addrs) > 1 and any(a != addr for a in addrs):
                    raise ctx.error("can't use both 'primary' and CIDRs", path, addr)
                continue
            try:
                parse_cidr(addr)
            except ValueError:
                hint = " or the keyword 'primary'" if not has_primary else ""
                raise ctx.error(f"must be a valid CIDR{hint}", path, addr) from None

    def _canonicalize(self) -> None:
        """CIDRs as kube-proxy re-prints them after ParseCIDRSloppy (host bits masked)."""
        self.cluster_cidrs = tuple(canonical_cidr(c) for c in self.cluster_cidrs)
        self.node_port_addresses = tuple(
            a if a == NODE_PORT_ADDRESSES_PRIMARY else canonical_cidr(a)
            for a in self.node_port_addresses
        )
        excl = []
        for c in self.ipvs.exclude_cidrs:  # unchecked outside IPVS mode: keep bad ones as is
            try:
                excl.append(canonical_cidr(c))
            except ValueError:
                excl.append(c)
        self.ipvs.exclude_cidrs = tuple(excl)

    # ---- effective values (what the selected mode's proxier is given)
    @property
    def _mode_section(self) -> str:
        return self.mode if self.mode in ("ipvs", "nftables") else "iptables"

    @property
    def sync_period(self) -> float:
        return {"ipvs": self.ipvs.sync_period, "nftables": self.nftables.sync_period}.get(
            self.mode, self.iptables.sync_period
        )

    @property
    def min_sync_period(self) -> float:
        return {"ipvs": self.ipvs.min_sync_period, "nftables": self.nftables.min_sync_period}.get(
            self.mode, self.iptables.min_sync_period
        )

    @property
    def masquerade_all(self) -> bool:
        """nftables.masqueradeAll in nftables mode, else iptables.masqueradeAll (also IPVS)."""
        if self.mode == "nftables":
            return self.nftables.masquerade_all
        return self.iptables.masquerade_all

    @property
    def masquerade_bit(self) -> int:
        """nftables.masqueradeBit in nftables mode, else iptables.masqueradeBit (also IPVS)."""
        if self.mode == "nftables":
            return self.nftables.masquerade_bit
        return self.iptables.masquerade_bit

    @property
    def masquerade_mark(self) -> int:
        """The fwmark bit value, 1 << masquerade_bit (0x4000 by default)."""
        return 1 << self.masquerade_bit

    @property
    def masquerade_mark_text(self) -> str:
        """The mark as kube-proxy prints it into rules: Go %#08x, "0x00004000" by default."""
        return format_mark(self.masquerade_bit)

    @property
    def localhost_node_ports(self) -> bool:
        """iptables.localhostNodePorts; only iptables mode (IPv4) ever serves them."""
        return self.mode == "iptables" and self.iptables.localhost_node_ports

    @property
    def effective_node_port_addresses(self) -> tuple[str, ...]:
        """nodePortAddresses after server_linux.go: nftables mode defaults to ("primary",).

        () means every local address (iptables and IPVS default); ("primary",) still has to
        be expanded with the node's primary IPs (see NodeConfig.node_ips_by_family)."""
        if not self.node_port_addresses and self.mode == "nftables":
            return (NODE_PORT_ADDRESSES_PRIMARY,)
        return self.node_port_addresses

    @property
    def cluster_cidr(self) -> str:
        """clusterCIDR as written in the file format (comma-separated)."""
        return ",".join(self.cluster_cidrs)

    def cluster_cidr_for(self, family: str) -> str | None:
        """The cluster CIDR of one family ("IPv4"/"IPv6"), or None."""
        for cidr in self.cluster_cidrs:
            if ip_family(cidr.partition("/")[0]) == family:
                return cidr
        return None


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."


def _select_kube_proxy_doc(docs: list[_Doc], file: str) -> tuple[_Doc, str]:
    """The KubeProxyConfiguration among a file's documents (or inside a ConfigMap)."""
    if not docs:
        raise InputError(f"empty file; expected a {KIND}", file=file)

    def kind_of(doc: _Doc) -> Any:
        return doc.data.get("kind") if isinstance(doc.data, dict) else None

    if len(docs) > 1:
        chosen = [d for d in docs if kind_of(d) in (KIND, "ConfigMap")]
        if len(chosen) != 1:
            found = sorted({str(kind_of(d)) for d in docs})
            what = "no" if not chosen else "more than one"
            raise InputError(
                f"{what} {KIND} document among {len(docs)} documents (kinds: {', '.join(found)})",
                file=file,
            )
        docs = chosen
    doc = docs[0]
    if kind_of(doc) != "ConfigMap":
        return doc, file
    data = doc.data.get("data")
    text = data.get("config.conf") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise InputError(
            f'ConfigMap has no "config.conf" key holding a {KIND}', file=file, line=doc.line
        )
    offset = doc.blocks.get(("data", "config.conf"), 0)
    inner = _parse_yaml(text, file, line_offset=offset)
    if len(inner) != 1:
        raise InputError(
            f'ConfigMap key "config.conf" must hold one {KIND} document',
            file=file,
            line=doc.lines.get(("data", "config.conf")),
        )
    return inner[0], file


def load_kube_proxy_config(path: str | os.PathLike) -> KubeProxyConfig:
    """Read kube-proxy's --config file (YAML or JSON) into a KubeProxyConfig."""
    file = os.fspath(path)
    doc, file = _select_kube_proxy_doc(_parse_yaml(_read_text(file), file), file)
    ctx = _Ctx(file, OBJ, doc.lines)
    doc.check_duplicates(ctx)
    return KubeProxyConfig._decode(doc.data, ctx)


def effective_tcp_be_liberal(config: KubeProxyConfig, node: NodeConfig) -> bool:
    """nf_conntrack_tcp_be_liberal as the proxier sees it: kube-proxy sets the sysctl itself
    when conntrack.tcpBeLiberal is true (before the proxier reads it), else the node's."""
    return config.conntrack.tcp_be_liberal or node.features.conntrack_tcp_be_liberal


# --------------------------------------------------------------------------- NodeConfig

NODE_OBJ = "NodeConfig"
_NODE_FIELDS = ("name", "ips", "interfaces", "zone", "podCIDRs", "cpus", "features")
# CPUs of an emulated node whose file does not say: fixed, never the host's (determinism);
# kube-proxy's default conntrack.maxPerCore x 4 is its default conntrack.min, 131,072
DEFAULT_CPUS = 4
_FEATURE_FIELDS = ("iptablesRandomFully", "nfacct", "conntrackTCPBeLiberal")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DEFAULT_PREFIX_V4 = 24
DEFAULT_PREFIX_V6 = 64


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """An address configured on an interface: host address plus prefix ("192.168.0.2/24")."""

    ip: str
    prefix_len: int

    @classmethod
    def parse(cls, text: str) -> InterfaceAddress:
        """ "ADDR/PREFIX" (the host address kept, not masked); ValueError when invalid."""
        if not isinstance(text, str) or text.count("/") != 1:
            raise ValueError("not ADDRESS/PREFIX")
        addr, _, prefix = text.partition("/")
        ip = parse_ip(addr)
        if not prefix.isdigit() or not prefix.isascii():
            raise ValueError("bad prefix length")
        n = int(prefix)
        if n > ip.max_prefixlen:
            raise ValueError("prefix length too long")
        return cls(str(ip), n)

    @property
    def family(self) -> str:
        return ip_family(self.ip)

    @property
    def network(self) -> str:
        """The connected subnet, canonical ("192.168.0.0/24")."""
        return str(ipaddress.ip_interface(f"{self.ip}/{self.prefix_len}").network)

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefix_len}"


@dataclass(slots=True)
class NodeFeatures:
    """What the node's iptables and kernel support."""

    iptables_random_fully: bool = True  # MASQUERADE --random-fully available
    nfacct: bool = True  # kube-proxy's nfacct counters can be created
    conntrack_tcp_be_liberal: bool = False  # net.netfilter.nf_conntrack_tcp_be_liberal != 0


def default_interfaces(ips: Iterable[str]) -> dict[str, tuple[InterfaceAddress, ...]]:
    """Interfaces of a node whose config names none: ``lo`` with 127.0.0.1/8 and ::1/128, and
    ``eth0`` with every (non-loopback) node IP, /24 for IPv4 and /64 for IPv6."""
    eth0 = []
    for ip in ips:
        addr = parse_ip(ip)
        if addr.is_loopback:
            continue
        eth0.append(
            InterfaceAddress(
                str(addr), DEFAULT_PREFIX_V4 if addr.version == 4 else DEFAULT_PREFIX_V6
            )
        )
    return {
        "lo": (InterfaceAddress("127.0.0.1", 8), InterfaceAddress("::1", 128)),
        "eth0": tuple(eth0),
    }


def _check_ifname(name: str) -> str | None:
    """Linux interface name rules (dev_valid_name): a problem, or None."""
    if not name:
        return "must not be empty"
    if len(name) > 15:
        return "longer than 15 characters (IFNAMSIZ)"
    if name in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in name):
        return "not a valid interface name"
    return None


@dataclass(slots=True)
class NodeConfig:
    """The emulated machine (``--node-config``).

    ``interfaces`` defaults to :func:`default_interfaces` of ``ips``. Every node IP must be
    on some interface (the interfaces' addresses are the node's local addresses)."""

    name: str
    ips: tuple[str, ...]  # canonical, primary first
    interfaces: dict[str, tuple[InterfaceAddress, ...]] = field(default_factory=dict)
    zone: str | None = None
    pod_cidrs: tuple[str, ...] = ()  # for detectLocalMode NodeCIDR
    features: NodeFeatures = field(default_factory=NodeFeatures)
    source: str | None = field(default=None, compare=False)
    cpus: int = DEFAULT_CPUS  # sizes conntrack as kube-proxy does (maxPerCore x CPUs)

    @classmethod
    def from_dict(cls, d: Any, file: str | None = None) -> NodeConfig:
        return cls._decode(d, _Ctx(file, NODE_OBJ))

    @classmethod
    def from_node(
        cls, name: str, ips: Iterable[str], zone: str | None = None, pod_cidrs: Iterable[str] = ()
    ) -> NodeConfig:
        """A node known from a Kubernetes Node object: its name, InternalIP/ExternalIP
        addresses (primary first), zone label and podCIDRs; default interfaces and features."""
        d: dict[str, Any] = {
            "name": name,
            "ips": list(ips),
            "zone": zone or None,
            "podCIDRs": list(pod_cidrs),
        }
        return cls._decode(d, _Ctx(None, f"Node {name}" if isinstance(name, str) else "Node"))

    @classmethod
    def _decode(cls, d: Any, ctx: _Ctx) -> NodeConfig:
        if not isinstance(d, dict):
            raise ctx.error(
                "must be a mapping (name, ips, interfaces, zone, features)", (), _short(d)
            )
        ctx.known(d, (), _NODE_FIELDS)
        name = d.get("name")
        if name is None or name == "":
            raise ctx.error(
                "missing: the node name (as EndpointSlices' nodeName) is required", ("name",)
            )
        if not isinstance(name, str):
            raise ctx.error("must be a string", ("name",), name)
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise ctx.error(
                "must be a lowercase RFC 1123 subdomain (a valid Node name)", ("name",), name
            )
        if ctx.obj == NODE_OBJ:
            ctx.obj = f"{NODE_OBJ} {name}"

        raw_ips = d.get("ips")
        if raw_ips is None or raw_ips == []:
            raise ctx.error("missing: at least one node IP is required (primary first)", ("ips",))
        if not isinstance(raw_ips, list):
            raise ctx.error("must be a list of IP addresses", ("ips",), raw_ips)
        ips: list[str] = []
        for i, ip in enumerate(raw_ips):
            if not isinstance(ip, str):
                raise ctx.error("must be an IP address string", ("ips", i), ip)
            try:
                canon = canonical_ip(ip)
            except ValueError:
                raise ctx.error("not a valid IP address", ("ips", i), ip) from None
            if canon in ips:
                raise ctx.error("duplicate node IP", ("ips", i), ip)
            ips.append(canon)

        raw_if = d.get("interfaces")
        if raw_if is None:
            interfaces = default_interfaces(ips)
        else:
            raw_if = ctx.mapping(raw_if, ("interfaces",))
            interfaces = {}
            for ifname, addrs in raw_if.items():
                path = ("interfaces", ifname)
                if not isinstance(ifname, str):
                    raise ctx.error("interface names must be strings", ("interfaces",), ifname)
                problem = _check_ifname(ifname)
                if problem:
                    raise ctx.error(problem, path, ifname)
                if addrs is None:
                    addrs = []
                if not isinstance(addrs, list):
                    raise ctx.error(
                        'must be a list of ADDRESS/PREFIX strings such as "192.168.0.2/24"',
                        path,
                        addrs,
                    )
                parsed = []
                for j, text in enumerate(addrs):
                    try:
                        parsed.append(InterfaceAddress.parse(text))
                    except ValueError as exc:
                        raise ctx.error(
                            f'not a valid ADDRESS/PREFIX such as "192.168.0.2/24" ({exc})',
                            path + (j,),
                            text,
                        ) from None
                interfaces[ifname] = tuple(parsed)
            local = {a.ip for addrs in interfaces.values() for a in addrs}
            for i, ip in enumerate(ips):
                if ip not in local:
                    raise ctx.error(
                        "node IP is not an address of any interface in 'interfaces'", ("ips", i), ip
                    )

        zone = d.get("zone")
        if zone is not None and not isinstance(zone, str):
            raise ctx.error("must be a string", ("zone",), zone)

        pod_cidrs = []
        families: set[int] = set()
        for i, cidr in enumerate(ctx.strings(d, (), "podCIDRs")):
            try:
                net = parse_cidr(cidr)
            except ValueError:
                raise ctx.error("not a valid CIDR", ("podCIDRs", i), cidr) from None
            if net.version in families:
                raise ctx.error("at most one pod CIDR per IP family", ("podCIDRs", i), cidr)
            families.add(net.version)
            pod_cidrs.append(str(net))

        cpus = ctx.int32(d, (), "cpus", DEFAULT_CPUS)
        if cpus < 1:
            raise ctx.error("must be at least 1", ("cpus",), cpus)

        p = ("features",)
        ft = ctx.mapping(d.get("features"), p)
        ctx.known(ft, p, _FEATURE_FIELDS)
        features = NodeFeatures(
            iptables_random_fully=ctx.boolean(ft, p, "iptablesRandomFully", True),
            nfacct=ctx.boolean(ft, p, "nfacct", True),
            conntrack_tcp_be_liberal=ctx.boolean(ft, p, "conntrackTCPBeLiberal", False),
        )

        return cls(
            name=name,
            ips=tuple(ips),
            interfaces=interfaces,
            zone=zone or None,
            pod_cidrs=tuple(pod_cidrs),
            features=features,
            source=ctx.file,
            cpus=cpus,
        )

    # ---- derived
    @property
    def primary_ip(self) -> str:
        return self.ips[0]

    @property
    def primary_family(self) -> str:
        """ "IPv4" or "IPv6": the family of the first node IP, as kube-proxy picks it."""
        return ip_family(self.ips[0])

    def node_ips_by_family(self) -> dict[str, str]:
        """The first node IP of each family (kube-proxy's NodeIPs map), primary first."""
        out: dict[str, str] = {}
        for ip in self.ips:
            out.setdefault(ip_family(ip), ip)
        return out

    @property
    def local_ips(self) -> tuple[str, ...]:
        """Every address on every interface (what ``addrtype --dst-type LOCAL`` matches,
        besides broadcast addresses), in interface order, without repeats."""
        seen: dict[str, None] = {}
        for addrs in self.interfaces.values():
            for a in addrs:
                seen.setdefault(a.ip, None)
        return tuple(seen)

    def pod_cidr_for(self, family: str) -> str | None:
        for cidr in self.pod_cidrs:
            if ip_family(cidr.partition("/")[0]) == family:
                return cidr
        return None


def load_node_config(path: str | os.PathLike) -> NodeConfig:
    """Read a --node-config YAML file into a NodeConfig."""
    file = os.fspath(path)
    docs = _parse_yaml(_read_text(file), file)
    if not docs:
        raise InputError("empty file; expected a node description (name, ips, ...)", file=file)
    if len(docs) > 1:
        raise InputError(
            f"expected one YAML document, found {len(docs)}", file=file, line=docs[1].line
        )
    ctx = _Ctx(file, NODE_OBJ, docs[0].lines)
    data = docs[0].data
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        ctx.obj = f"{NODE_OBJ} {data['name']}"
    docs[0].check_duplicates(ctx)
    return NodeConfig._decode(data, ctx)
