"""Kubernetes objects from the dicts `kubectl get -o yaml|json` writes, with validation.

Every error names the object (``Kind namespace/name``), the field path and the bad value;
the loader adds the file. Validation covers what would make a wrong table silently: bad
addresses, ports, protocols, enum values, missing required fields and wrong types. Rules the
API server enforces but kube-proxy does not rely on (e.g. the NodePort range) are not checked,
so objects built by hand, as kube-proxy's own tests build them, still load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from ..ipaddr import canonical_cidr, canonical_ip
from .objects import (
    DEFAULT_AFFINITY_TIMEOUT,
    PROTOCOLS,
    SERVICE_TYPES,
    ContainerPort,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    LoadBalancerIngress,
    Namespace,
    NetworkPolicy,
    Node,
    NodeAddress,
    Pod,
    Service,
    ServiceCIDR,
    ServicePort,
)

_UNSET: Any = object()
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")
_IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
# object names as the API server checks them (k8s.io/apimachinery validation): the names
# end up in rule comments and chain hashes, so a newline or a quote must never get through
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"
)
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]\Z")
_NAME_RULES = {
    "label": (_DNS1123_LABEL, 63, "a DNS-1123 label (lower-case letters, digits, '-')"),
    "label1035": (
        _DNS1035_LABEL,
        63,
        "a DNS-1035 label (lower-case letters, digits, '-', starting with a letter)",
    ),
    "subdomain": (_DNS1123_SUBDOMAIN, 253, "a DNS-1123 subdomain (lower-case, digits, '-', '.')"),
}


class _Reader:
    """Typed field access on one object's dict; errors carry the object and field path."""

    __slots__ = ("ref",)

    def __init__(self, ref: str):
        self.ref = ref

    def fail(self, path: str, message: str, value: Any = _UNSET) -> InputError:
        if value is _UNSET:
            return InputError(message, obj=self.ref, field=path)
        return InputError(message, obj=self.ref, field=path, value=value)

    def mapping(self, parent: dict, key: str, path: str, required: bool = False) -> dict:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.fail(path, "required field is missing")
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping", value)
        return value

    def items(self, parent: dict, key: str, path: str, required: bool = False) -> list:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.fail(path, "required field is missing")
            return []
        if not isinstance(value, list):
            raise self.fail(path, "must be a list", value)
        return value

    def string(
        self, parent: dict, key: str, path: str, default: str = "", required: bool = False
    ) -> str:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.fail(path, "required field is missing")
            return default
        if not isinstance(value, str):
            raise self.fail(path, "must be a string", value)
        if required and not value:
            raise self.fail(path, "required field is empty")
        return value

    def integer(
        self,
        parent: dict,
        key: str,
        path: str,
        lo: int,
        hi: int,
        default: Any = 0,
        required: bool = False,
    ) -> Any:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.fail(path, "required field is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, "must be an integer", value)
        if not lo <= value <= hi:
            raise self.fail(path, f"must be between {lo} and {hi}", value)
        return value

    def port(
        self,
        parent: dict,
        key: str,
        path: str,
        required: bool = False,
        allow_zero: bool = False,
        default: Any = 0,
    ) -> Any:
        return self.integer(
            parent, key, path, 0 if allow_zero else 1, 65535, default=default, required=required
        )

    def boolean(self, parent: dict, key: str, path: str, default: Any = False) -> Any:
        value = parent.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false", value)
        return value

    def choice(
        self, parent: dict, key: str, path: str, choices: tuple[str, ...], default: str = ""
    ) -> str:
        value = self.string(parent, key, path, default=default)
        if value == "":
            return default
        if value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}", value)
        return value

    def protocol(self, parent: dict, key: str, path: str) -> str:
        value = parent.get(key)
        if value is None or value == "":
            return "TCP"
        if value not in PROTOCOLS:
            raise self.fail(path, "unknown protocol (must be TCP, UDP or SCTP)", value)
        return value

    def ip(self, value: Any, path: str, family: str = "") -> str:
        if not isinstance(value, str):
            raise self.fail(path, "must be an IP address string", value)
        try:
            text = canonical_ip(value)
        except ValueError:
            raise self.fail(path, "invalid IP address", value) from None
        if family and ("IPv6" if ":" in text else "IPv4") != family:
            raise self.fail(path, f"not an {family} address", value)
        return text

    def cidr(self, value: Any, path: str, trim: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "must be a CIDR string", value)
        try:
            return canonical_cidr(value.strip() if trim else value)
        except ValueError:
            raise self.fail(path, "invalid CIDR", value) from None

    def string_map(self, parent: dict, key: str, path: str) -> dict[str, str]:
        value = self.mapping(parent, key, path)
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.fail(f"{path}.{k}", "keys and values must be strings", v)
        return dict(value)

    def string_list(self, parent: dict, key: str, path: str) -> list[str]:
        values = self.items(parent, key, path)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.fail(f"{path}[{i}]", "must be a string", v)
        return list(values)


def check_name(text: str, rule: str) -> str | None:
    """Why ``text`` is not a valid name of kind ``rule`` (label, label1035, subdomain)."""
    pattern, most, what = _NAME_RULES[rule]
    if len(text) > most:
        return f"must be at most {most} characters"
    if pattern.match(text) is None:
        return f"must be {what}"
    return None


def _label_map_problem(labels: dict[str, str]) -> tuple[str, str, str] | None:
    """(key, message, value) of the first label the API server would refuse."""
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if (
            (slash and (not prefix or check_name(prefix, "subdomain")))
            or len(name) > 63
            or not _LABEL_NAME.match(name)
        ):
            return key, "invalid label key", key
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            return key, "invalid label value (at most 63 of A-Z a-z 0-9 - _ .)", value
    return None


_NAME_RULE_OF = {
    "Service": "label1035",
    "Namespace": "label",
    "EndpointSlice": "subdomain",
    "Node": "subdomain",
    "Pod": "subdomain",
    "ServiceCIDR": "subdomain",
    "NetworkPolicy": "subdomain",
}


def _meta(obj: dict, kind: str, namespaced: bool) -> tuple[_Reader, dict, str, str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise InputError(
            "required field is missing" if metadata is None else "must be a mapping",
            obj=kind,
            field="metadata",
        )
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(
            "required field is missing" if name is None else "must be a non-empty string",
            obj=kind,
            field="metadata.name",
            **({} if name is None else {"value": name}),
        )
    problem = check_name(name, _NAME_RULE_OF.get(kind, "subdomain"))
    if problem:
        raise InputError(problem, obj=kind, field="metadata.name", value=name)
    namespace = ""
    if namespaced:
        namespace = metadata.get("namespace")
        if namespace is None or namespace == "":
            namespace = "default"
        problem = (
            "must be a string" if not isinstance(namespace, str) else check_name(namespace, "label")
        )
        if problem:
            raise InputError(
                problem, obj=f"{kind} {name}", field="metadata.namespace", value=namespace
            )
    reader = _Reader(f"{kind} {namespace}/{name}" if namespaced else f"{kind} {name}")
    return reader, metadata, namespace, name


def _labels(r: _Reader, metadata: dict) -> tuple[dict[str, str], dict[str, str]]:
    labels = r.string_map(metadata, "labels", "metadata.labels")
    problem = _label_map_problem(labels)
    if problem:
        key, message, value = problem
        raise r.fail(f"metadata.labels.{key}", message, value)
    return labels, r.string_map(metadata, "annotations", "metadata.annotations")


def service(obj: dict) -> Service:
    r, metadata, namespace, name = _meta(obj, "Service", True)
    labels, annotations = _labels(r, metadata)
    spec = r.mapping(obj, "spec", "spec")
    status = r.mapping(obj, "status", "status")

    svc_type = r.choice(spec, "type", "spec.type", SERVICE_TYPES, default="ClusterIP")
    cluster_ip = r.string(spec, "clusterIP", "spec.clusterIP")
    if cluster_ip not in ("", "None"):
        cluster_ip = r.ip(cluster_ip, "spec.clusterIP")
    cluster_ips = []
    for i, ip in enumerate(r.items(spec, "clusterIPs", "spec.clusterIPs")):
        cluster_ips.append(ip if ip == "None" else r.ip(ip, f"spec.clusterIPs[{i}]"))
    if len(cluster_ips) > 2:
        raise r.fail(
            "spec.clusterIPs", "at most two addresses (one per family)", spec["clusterIPs"]
        )
    if cluster_ips:
        if not cluster_ip:
            cluster_ip = cluster_ips[0]
        elif cluster_ips[0] != cluster_ip:
            raise r.fail(
                "spec.clusterIPs[0]",
                f"must equal spec.clusterIP ({cluster_ip})",
                spec["clusterIPs"][0],
            )
    elif cluster_ip:
        cluster_ips = [cluster_ip]

    ports = []
    names = set()
    raw_ports = r.items(spec, "ports", "spec.ports")
    if not raw_ports and cluster_ip != "None" and svc_type != "ExternalName":
        raise r.fail("spec.ports", "required field is missing")
    for i, p in enumerate(raw_ports):
        path = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            raise r.fail(path, "must be a mapping", p)
        port = r.port(p, "port", f"{path}.port", required=True)
        pname = r.string(p, "name", f"{path}.name")
        if pname and check_name(pname, "label"):
            raise r.fail(f"{path}.name", str(check_name(pname, "label")), pname)
        if len(raw_ports) > 1 and not pname:
            raise r.fail(f"{path}.name", "required when a service has more than one port")
        if pname in names:
            raise r.fail(f"{path}.name", "duplicate port name", pname)
        names.add(pname)
        ports.append(
            ServicePort(
                port=port,
                protocol=r.protocol(p, "protocol", f"{path}.protocol"),
                name=pname,
                target_port=_target_port(r, p.get("targetPort"), f"{path}.targetPort", port),
                node_port=r.port(p, "nodePort", f"{path}.nodePort", allow_zero=True),
            )
        )

    affinity = r.choice(
        spec, "sessionAffinity", "spec.sessionAffinity", ("None", "ClientIP"), default="None"
    )
    affinity_cfg = r.mapping(
        r.mapping(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig"),
        "clientIP",
        "spec.sessionAffinityConfig.clientIP",
    )
    timeout = r.integer(
        affinity_cfg,
        "timeoutSeconds",
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        1,
        86400,
        default=DEFAULT_AFFINITY_TIMEOUT,
    )

    ingress = []
    lb = r.mapping(status, "loadBalancer", "status.loadBalancer")
    for i, ing in enumerate(r.items(lb, "ingress", "status.loadBalancer.ingress")):
        path = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ing, dict):
            raise r.fail(path, "must be a mapping", ing)
        ip = r.string(ing, "ip", f"{path}.ip")
        ingress.append(
            LoadBalancerIngress(
                ip=r.ip(ip, f"{path}.ip") if ip else "",
                hostname=r.string(ing, "hostname", f"{path}.hostname"),
                ip_mode=r.choice(ing, "ipMode", f"{path}.ipMode", ("VIP", "Proxy")),
            )
        )

    families = r.string_list(spec, "ipFamilies", "spec.ipFamilies")
    for i, fam in enumerate(families):
        if fam not in ("IPv4", "IPv6"):
            raise r.fail(f"spec.ipFamilies[{i}]", "must be IPv4 or IPv6", fam)
    external_name = r.string(spec, "externalName", "spec.externalName")
    if svc_type == "ExternalName" and not external_name:
        raise r.fail("spec.externalName", "required for type ExternalName")
    load_balancer_ip = r.string(spec, "loadBalancerIP", "spec.loadBalancerIP")
    selector = spec.get("selector")
    return Service(
        namespace=namespace,
        name=name,
        type=svc_type,
        cluster_ip=cluster_ip,
        cluster_ips=cluster_ips,
        ports=ports,
        selector=None if selector is None else r.string_map(spec, "selector", "spec.selector"),
        external_ips=[
            r.ip(ip, f"spec.externalIPs[{i}]")
            for i, ip in enumerate(r.items(spec, "externalIPs", "spec.externalIPs"))
        ],
        load_balancer_ip=r.ip(load_balancer_ip, "spec.loadBalancerIP") if load_balancer_ip else "",
        lb_ingress=ingress,
        lb_source_ranges=[
            r.cidr(c, f"spec.loadBalancerSourceRanges[{i}]", trim=True)
            for i, c in enumerate(
                r.items(spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges")
            )
        ],
        session_affinity=affinity,
        affinity_timeout=timeout,
        external_traffic_policy=r.choice(
            spec, "externalTrafficPolicy", "spec.externalTrafficPolicy", ("Cluster", "Local")
        ),
        internal_traffic_policy=r.choice(
            spec,
            "internalTrafficPolicy",
            "spec.internalTrafficPolicy",
            ("Cluster", "Local"),
            default="Cluster",
        ),
        health_check_node_port=r.port(
            spec, "healthCheckNodePort", "spec.healthCheckNodePort", allow_zero=True
        ),
        ip_families=families,
        ip_family_policy=r.choice(
            spec,
            "ipFamilyPolicy",
            "spec.ipFamilyPolicy",
            ("SingleStack", "PreferDualStack", "RequireDualStack"),
        ),
        traffic_distribution=r.string(spec, "trafficDistribution", "spec.trafficDistribution"),
        external_name=external_name,
        publish_not_ready_addresses=r.boolean(
            spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses"
        ),
        labels=labels,
        annotations=annotations,
    )


def _target_port(r: _Reader, value: Any, path: str, port: int) -> int | str:
    if isinstance(value, bool):  # before "== 0": False == 0 in Python
        raise r.fail(path, "must be a port number or a port name", value)
    if value is None or value == 0 or value == "":
        return port  # API default: targetPort = port
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise r.fail(path, "must be between 1 and 65535", value)
        return value
    if isinstance(value, str) and _IANA_SVC_NAME.match(value):
        return value
    raise r.fail(path, "must be a port number or an IANA service name", value)


def endpoint_slice(obj: dict, api_version: str = "discovery.k8s.io/v1") -> EndpointSlice:
    r, metadata, namespace, name = _meta(obj, "EndpointSlice", True)
    labels, annotations = _labels(r, metadata)
    address_type = r.string(obj, "addressType", "addressType", required=True)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise r.fail("addressType", "must be IPv4, IPv6 or FQDN", address_type)
    ip_family = "" if address_type == "FQDN" else address_type
    beta = api_version == "discovery.k8s.io/v1beta1"

    endpoints = [
        _endpoint(r, ep, f"endpoints[{i}]", ip_family, beta)
        for i, ep in enumerate(r.items(obj, "endpoints", "endpoints"))
    ]
    ports = []
    for i, p in enumerate(r.items(obj, "ports", "ports")):
        path = f"ports[{i}]"
        if not isinstance(p, dict):
            raise r.fail(path, "must be a mapping", p)
        pname = r.string(p, "name", f"{path}.name")
        if pname and check_name(pname, "label"):
            raise r.fail(f"{path}.name", str(check_name(pname, "label")), pname)
        ports.append(
            EndpointPort(
                port=r.port(p, "port", f"{path}.port", allow_zero=True, default=None),
                protocol=r.protocol(p, "protocol", f"{path}.protocol"),
                name=pname,
                app_protocol=r.string(p, "appProtocol", f"{path}.appProtocol"),
            )
        )
    return EndpointSlice(
        namespace=namespace,
        name=name,
        address_type=address_type,
        endpoints=endpoints,
        ports=ports,
        labels=labels,
        annotations=annotations,
    )


_ENDPOINT_KEYS = frozenset(
    (
        "addresses",
        "conditions",
        "nodeName",
        "zone",
        "hostname",
        "hints",
        "targetRef",
        "deprecatedTopology",
        "topology",
    )
)
_CONDITION_KEYS = frozenset(("ready", "serving", "terminating"))


def _endpoint(r: _Reader, ep: Any, path: str, ip_family: str, beta: bool) -> Endpoint:
    """One slice endpoint. Slices carry most of a big cluster's objects, so the common,
    well-formed case takes a short path and anything unusual the fully checked one."""
    if not isinstance(ep, dict):
        raise r.fail(path, "must be a mapping", ep)
    addresses = ep.get("addresses")
    cond = ep.get("conditions")
    node_name = ep.get("nodeName", "")
    zone = ep.get("zone", "")
    if (
        not beta
        and ip_family == "IPv4"
        and type(addresses) is list
        and len(addresses) == 1
        and type(addresses[0]) is str
        and _CANONICAL_V4.match(addresses[0])
        and (
            cond is None
            or (
                type(cond) is dict
                and cond.keys() <= _CONDITION_KEYS
                # "is", not "in": 1 == True, and 1 is not a boolean
                and all(v is True or v is False or v is None for v in cond.values())
            )
        )
        and type(node_name) is str
        and type(zone) is str
        and ep.keys() <= _ENDPOINT_KEYS
        and "hints" not in ep
        and "targetRef" not in ep
        and type(ep.get("hostname", "")) is str
    ):
        cond = cond or {}
        return Endpoint(
            addresses=addresses[:],
            ready=cond.get("ready"),
            serving=cond.get("serving"),
            terminating=cond.get("terminating"),
            node_name=node_name,
            zone=zone,
            hostname=ep.get("hostname", ""),
        )

    raw_addresses = r.items(ep, "addresses", f"{path}.addresses", required=True)
    if not raw_addresses:
        raise r.fail(f"{path}.addresses", "must have at least one address")
    if ip_family:
        addresses = [
            r.ip(a, f"{path}.addresses[{j}]", ip_family) for j, a in enumerate(raw_addresses)
        ]
    else:
        addresses = [
            r.string({"a": a}, "a", f"{path}.addresses[{j}]", required=True)
            for j, a in enumerate(raw_addresses)
        ]
    cond = r.mapping(ep, "conditions", f"{path}.conditions")
    hints = r.mapping(ep, "hints", f"{path}.hints")
    node_name = r.string(ep, "nodeName", f"{path}.nodeName")
    zone = r.string(ep, "zone", f"{path}.zone")
    if beta:  # v1beta1 kept node and zone in a topology map
        topology = r.string_map(ep, "topology", f"{path}.topology")
        node_name = node_name or topology.get("kubernetes.io/hostname", "")
        zone = zone or topology.get("topology.kubernetes.io/zone", "")
    target_ref = ep.get("targetRef")
    return Endpoint(
        addresses=addresses,
        ready=r.boolean(cond, "ready", f"{path}.conditions.ready", default=None),
        serving=r.boolean(cond, "serving", f"{path}.conditions.serving", default=None),
        terminating=r.boolean(cond, "terminating", f"{path}.conditions.terminating", default=None),
        node_name=node_name,
        zone=zone,
        hostname=r.string(ep, "hostname", f"{path}.hostname"),
        hints_zones=_hint_names(r, hints, "forZones", f"{path}.hints.forZones"),
        hints_nodes=_hint_names(r, hints, "forNodes", f"{path}.hints.forNodes"),
        target_ref=None
        if target_ref is None
        else r.string_map(ep, "targetRef", f"{path}.targetRef"),
    )


def _hint_names(r: _Reader, hints: dict, key: str, path: str) -> list[str]:
    names = []
    for i, h in enumerate(r.items(hints, key, path)):
        if not isinstance(h, dict):
            raise r.fail(f"{path}[{i}]", "must be a mapping", h)
        names.append(r.string(h, "name", f"{path}[{i}].name", required=True))
    return names


def node(obj: dict) -> Node:
    r, metadata, _, name = _meta(obj, "Node", False)
    labels, annotations = _labels(r, metadata)
    spec = r.mapping(obj, "spec", "spec")
    status = r.mapping(obj, "status", "status")
    addresses = []
    for i, a in enumerate(r.items(status, "addresses", "status.addresses")):
        path = f"status.addresses[{i}]"
        if not isinstance(a, dict):
            raise r.fail(path, "must be a mapping", a)
        kind = r.string(a, "type", f"{path}.type", required=True)
        address = r.string(a, "address", f"{path}.address", required=True)
        if kind in ("InternalIP", "ExternalIP"):
            address = r.ip(address, f"{path}.address")
        addresses.append(NodeAddress(type=kind, address=address))
    pod_cidrs = [
        r.cidr(c, f"spec.podCIDRs[{i}]")
        for i, c in enumerate(r.items(spec, "podCIDRs", "spec.podCIDRs"))
    ]
    pod_cidr = r.string(spec, "podCIDR", "spec.podCIDR")
    if pod_cidr:
        pod_cidr = r.cidr(pod_cidr, "spec.podCIDR")
        if not pod_cidrs:
            pod_cidrs = [pod_cidr]
        elif pod_cidrs[0] != pod_cidr:
            raise r.fail("spec.podCIDRs[0]", f"must equal spec.podCIDR ({pod_cidr})", pod_cidrs[0])
    return Node(
        name=name, addresses=addresses, pod_cidrs=pod_cidrs, labels=labels, annotations=annotations
    )


def pod(obj: dict) -> Pod:
    r, metadata, namespace, name = _meta(obj, "Pod", True)
    labels, annotations = _labels(r, metadata)
    spec = r.mapping(obj, "spec", "spec")
    status = r.mapping(obj, "status", "status")
    pod_ips = []
    for i, entry in enumerate(r.items(status, "podIPs", "status.podIPs")):
        if not isinstance(entry, dict):
            raise r.fail(f"status.podIPs[{i}]", "must be a mapping", entry)
        pod_ips.append(
            r.ip(
                r.string(entry, "ip", f"status.podIPs[{i}].ip", required=True),
                f"status.podIPs[{i}].ip",
            )
        )
    pod_ip = r.string(status, "podIP", "status.podIP")
    if pod_ip:
        pod_ip = r.ip(pod_ip, "status.podIP")
        if not pod_ips:
            pod_ips = [pod_ip]
        elif pod_ips[0] != pod_ip:
            raise r.fail("status.podIPs[0].ip", f"must equal status.podIP ({pod_ip})", pod_ips[0])
    return Pod(
        namespace=namespace,
        name=name,
        container_ports=_container_ports(r, spec),
        node_name=r.string(spec, "nodeName", "spec.nodeName"),
        pod_ips=pod_ips,
        host_network=r.boolean(spec, "hostNetwork", "spec.hostNetwork"),
        phase=r.string(status, "phase", "status.phase"),
        labels=labels,
        annotations=annotations,
    )


def _container_ports(r: _Reader, spec: dict) -> list[ContainerPort]:
    """Every container's ports (NetworkPolicy resolves named ports on them); a port name
    must be unique in the pod, as the API server checks."""
    out: list[ContainerPort] = []
    names: set[str] = set()
    for i, c in enumerate(r.items(spec, "containers", "spec.containers")):
        if not isinstance(c, dict):
            raise r.fail(f"spec.containers[{i}]", "must be a mapping", c)
        for j, p in enumerate(r.items(c, "ports", f"spec.containers[{i}].ports")):
            path = f"spec.containers[{i}].ports[{j}]"
            if not isinstance(p, dict):
                raise r.fail(path, "must be a mapping", p)
            pname = r.string(p, "name", f"{path}.name")
            if pname and not _IANA_SVC_NAME.match(pname):
                raise r.fail(f"{path}.name", "must be an IANA service name", pname)
            if pname in names:
                raise r.fail(f"{path}.name", "duplicate port name in the pod", pname)
            if pname:
                names.add(pname)
            out.append(
                ContainerPort(
                    container_port=r.port(
                        p, "containerPort", f"{path}.containerPort", required=True
                    ),
                    protocol=r.protocol(p, "protocol", f"{path}.protocol"),
                    name=pname,
                )
            )
    return out


def namespace(obj: dict) -> Namespace:
    r, metadata, _, name = _meta(obj, "Namespace", False)
    labels, annotations = _labels(r, metadata)
    return Namespace(name=name, labels=labels, annotations=annotations)


def service_cidr(obj: dict) -> ServiceCIDR:
    r, metadata, _, name = _meta(obj, "ServiceCIDR", False)
    labels, _ = _labels(r, metadata)
    spec = r.mapping(obj, "spec", "spec", required=True)
    raw = r.items(spec, "cidrs", "spec.cidrs", required=True)
    if not 1 <= len(raw) <= 2:
        raise r.fail("spec.cidrs", "must hold one or two CIDRs (one per family)", raw)
    return ServiceCIDR(
        name=name, cidrs=[r.cidr(c, f"spec.cidrs[{i}]") for i, c in enumerate(raw)], labels=labels
    )


def network_policy(obj: dict) -> NetworkPolicy:
    from .netpol import parse_policy_spec

    r, metadata, namespace, name = _meta(obj, "NetworkPolicy", True)
    labels, annotations = _labels(r, metadata)
    spec = r.mapping(obj, "spec", "spec")
    parse_policy_spec(spec, r.ref)  # validation only: the object keeps the dict
    return NetworkPolicy(
        namespace=namespace, name=name, spec=spec, labels=labels, annotations=annotations
    )


# kind -> (accepted apiVersions, decoder). Legacy Endpoints are handled by the loader
# (converted to EndpointSlices by mirroring), see model/mirror.py.
DECODERS: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "Service": (("v1",), service),
    "EndpointSlice": (("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"), endpoint_slice),
    "Node": (("v1",), node),
    "Pod": (("v1",), pod),
    "Namespace": (("v1",), namespace),
    "ServiceCIDR": (
        ("networking.k8s.io/v1", "networking.k8s.io/v1beta1", "networking.k8s.io/v1alpha1"),
        service_cidr,
    ),
    "NetworkPolicy": (("networking.k8s.io/v1",), network_policy),
}
