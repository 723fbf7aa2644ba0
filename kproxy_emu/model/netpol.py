"""A NetworkPolicy's spec as typed, validated values (networking.k8s.io/v1).

``parse_policy_spec`` checks what the API server's ``ValidateNetworkPolicySpec`` checks and
turns the manifest's dict into frozen dataclasses; ``decode.network_policy`` calls it on
load (the NetworkPolicy object keeps the dict whole) and kproxy_emu.policy evaluates the
result. Every error is one line naming the policy, the field path and the value.

Defaults applied here, as the API server applies them: a port entry without ``protocol``
is TCP; ``policyTypes`` omitted is ``[Ingress]`` plus ``Egress`` when ``egress`` has a rule.
CIDRs with host bits set are accepted (``192.168.242.213/24`` is ``192.168.242.0/24``), as
the API server accepts them for objects created before strict CIDR validation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..ipaddr import parse_cidr
from .objects import PROTOCOLS

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """matchLabels (as (key, value) pairs) AND every matchExpressions requirement; an empty
    selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.expressions


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: str  # canonical (host bits cleared)
    excepts: tuple[str, ...] = ()  # canonical

    def networks(self) -> tuple[Any, tuple[Any, ...]]:
        return parse_cidr(self.cidr), tuple(parse_cidr(c) for c in self.excepts)


@dataclass(frozen=True, slots=True)
class Peer:
    """One ``from``/``to`` entry: selectors (both set: AND) or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PortEntry:
    """One ``ports`` entry. ``port`` None: every port of ``protocol``; a str: a named
    container port of the destination pod; ``end_port``: inclusive range end."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress or egress rule: ``peers`` empty = every peer (external IPs too),
    ``ports`` empty = every port and protocol."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySpec:
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]  # defaulted as the API server defaults it
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()


class _Fail:
    __slots__ = ("ref",)

    def __init__(self, ref: str):
        self.ref = ref

    def __call__(self, path: str, message: str, value: Any = None) -> InputError:
        if value is None:
            return InputError(message, obj=self.ref, field=path)
        return InputError(message, obj=self.ref, field=path, value=value)


def _mapping(fail: _Fail, value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(path, "must be a mapping", value)
    return value


def _list(fail: _Fail, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(path, "must be a list", value)
    return value


def _label_key(fail: _Fail, key: Any, path: str) -> str:
    from .decode import _label_map_problem

    if not isinstance(key, str) or not key:
        raise fail(path, "must be a non-empty string", key)
    if _label_map_problem({key: ""}):
        raise fail(path, "invalid label key", key)
    return key


def _label_value(fail: _Fail, value: Any, path: str) -> str:
    from .decode import _label_map_problem

    if not isinstance(value, str):
        raise fail(path, "must be a string", value)
    if _label_map_problem({"k": value}):
        raise fail(path, "invalid label value (at most 63 of A-Z a-z 0-9 - _ .)", value)
    return value


def parse_selector(fail: _Fail, value: Any, path: str) -> LabelSelector:
    raw = _mapping(fail, value, path)
    for key in raw:
        if key not in ("matchLabels", "matchExpressions"):
            raise fail(f"{path}.{key}", "unknown field (matchLabels or matchExpressions)", key)
    labels = []
    for k, v in _mapping(fail, raw.get("matchLabels"), f"{path}.matchLabels").items():
        _label_key(fail, k, f"{path}.matchLabels")
        labels.append((k, _label_value(fail, v, f"{path}.matchLabels.{k}")))
    exprs = []
    for i, e in enumerate(_list(fail, raw.get("matchExpressions"), f"{path}.matchExpressions")):
        epath = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, dict):
            raise fail(epath, "must be a mapping", e)
        key = _label_key(fail, e.get("key"), f"{epath}.key")
        op = e.get("operator")
        if op not in OPERATORS:
            raise fail(f"{epath}.operator", "must be one of In, NotIn, Exists, DoesNotExist", op)
        values = _list(fail, e.get("values"), f"{epath}.values")
        if op in ("In", "NotIn") and not values:
            raise fail(f"{epath}.values", f"must be non-empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise fail(f"{epath}.values", f"must be empty for operator {op}", values)
        vals = tuple(_label_value(fail, v, f"{epath}.values[{j}]") for j, v in enumerate(values))
        exprs.append(Requirement(key, op, vals))
    return LabelSelector(tuple(labels), tuple(exprs))


def _cidr(fail: _Fail, value: Any, path: str) -> Any:
    if not isinstance(value, str) or not value:
        raise fail(path, "required field is missing" if value is None else "must be a CIDR", value)
    try:
        return parse_cidr(value)
    except ValueError:
        raise fail(path, "invalid CIDR", value) from None


def _ip_block(fail: _Fail, value: Any, path: str) -> IPBlock:
    raw = _mapping(fail, value, path)
    net = _cidr(fail, raw.get("cidr"), f"{path}.cidr")
    excepts = []
    for k, c in enumerate(_list(fail, raw.get("except"), f"{path}.except")):
        sub = _cidr(fail, c, f"{path}.except[{k}]")
        if (
            sub.version != net.version
            or not sub.subnet_of(net)  # type: ignore[arg-type]
            or sub.prefixlen <= net.prefixlen
        ):
            raise fail(f"{path}.except[{k}]", f"must be a strict subset of cidr {net}", c)
        excepts.append(str(sub))
    return IPBlock(str(net), tuple(excepts))


def _peer(fail: _Fail, value: Any, path: str) -> Peer:
    if not isinstance(value, dict):
        raise fail(path, "must be a mapping", value)
    for key in value:
        if key not in ("podSelector", "namespaceSelector", "ipBlock"):
            raise fail(f"{path}.{key}", "unknown peer field", key)
    pod = value.get("podSelector")
    ns = value.get("namespaceSelector")
    block = value.get("ipBlock")
    if pod is None and ns is None and block is None:
        raise fail(path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
    if block is not None and (pod is not None or ns is not None):
        raise fail(path, "may not specify both ipBlock and another peer")
    return Peer(
        pod_selector=None if pod is None else parse_selector(fail, pod, f"{path}.podSelector"),
        namespace_selector=None
        if ns is None
        else parse_selector(fail, ns, f"{path}.namespaceSelector"),
        ip_block=None if block is None else _ip_block(fail, block, f"{path}.ipBlock"),
    )


def _port_entry(fail: _Fail, value: Any, path: str) -> PortEntry:
    from .decode import _IANA_SVC_NAME

    if not isinstance(value, dict):
        raise fail(path, "must be a mapping", value)
    protocol = value.get("protocol")
    if protocol is None or protocol == "":
        protocol = "TCP"
    elif protocol not in PROTOCOLS:
        raise fail(f"{path}.protocol", "unknown protocol (must be TCP, UDP or SCTP)", protocol)
    port = value.get("port")
    if isinstance(port, bool):
        raise fail(f"{path}.port", "must be a port number or a port name", port)
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise fail(f"{path}.port", "must be between 1 and 65535", port)
    elif isinstance(port, str):
        if not _IANA_SVC_NAME.match(port):
            raise fail(f"{path}.port", "must be a port number or an IANA service name", port)
    elif port is not None:
        raise fail(f"{path}.port", "must be a port number or a port name", port)
    end = value.get("endPort")
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            raise fail(f"{path}.endPort", "must be an integer", end)
        if port is None:
            raise fail(f"{path}.endPort", "may not be specified when port is not specified", end)
        if isinstance(port, str):
            raise fail(f"{path}.endPort", "may not be specified when port is a named port", end)
        if not 1 <= end <= 65535:
            raise fail(f"{path}.endPort", "must be between 1 and 65535", end)
        if end < port:
            raise fail(f"{path}.endPort", f"must be greater than or equal to port ({port})", end)
    return PortEntry(protocol=protocol, port=port, end_port=end)


def _rules(fail: _Fail, spec: dict[str, Any], direction: str) -> tuple[Rule, ...]:
    peers_key = "from" if direction == "ingress" else "to"
    rules = []
    for i, rule in enumerate(_list(fail, spec.get(direction), f"spec.{direction}")):
        path = f"spec.{direction}[{i}]"
        if rule is None:
            rule = {}
        if not isinstance(rule, dict):
            raise fail(path, "must be a mapping", rule)
        for key in rule:
            if key not in (peers_key, "ports"):
                raise fail(f"{path}.{key}", f"unknown field ({peers_key} or ports)", key)
        peers = tuple(
            _peer(fail, p, f"{path}.{peers_key}[{j}]")
            for j, p in enumerate(_list(fail, rule.get(peers_key), f"{path}.{peers_key}"))
        )
        ports = tuple(
            _port_entry(fail, p, f"{path}.ports[{j}]")
            for j, p in enumerate(_list(fail, rule.get("ports"), f"{path}.ports"))
        )
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse_policy_spec(spec: Any, ref: str) -> PolicySpec:
    """The validated, defaulted spec of the NetworkPolicy ``ref`` (``NetworkPolicy ns/name``)."""
    fail = _Fail(ref)
    spec = _mapping(fail, spec, "spec")
    pod_selector = parse_selector(fail, spec.get("podSelector"), "spec.podSelector")
    ingress = _rules(fail, spec, "ingress")
    egress = _rules(fail, spec, "egress")
    raw_types = spec.get("policyTypes")
    if raw_types is None or raw_types == []:
        types: tuple[str, ...] = ("Ingress", "Egress") if egress else ("Ingress",)
    else:
        raw = _list(fail, raw_types, "spec.policyTypes")
        for i, t in enumerate(raw):
            if t not in POLICY_TYPES:
                raise fail(f"spec.policyTypes[{i}]", "must be Ingress or Egress", t)
        if len(raw) > 2 or len(set(raw)) != len(raw):
            raise fail("spec.policyTypes", "may not list a type twice", raw)
        types = tuple(t for t in POLICY_TYPES if t in raw)
    return PolicySpec(pod_selector, types, ingress, egress)


def ip_in_block(ip: str, block: IPBlock) -> bool:
    """``ip`` in ``block.cidr`` and in none of its excepts (a family mismatch: no)."""
    addr = ipaddress.ip_address(ip)
    net, excepts = block.networks()
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in e for e in excepts)
