"""Cluster DNS as CoreDNS's ``kubernetes`` plugin answers it.

A port of the plugin's query path (coredns/coredns @ 4b26cced, Apache-2.0):
``plugin/kubernetes/handler.go`` (ServeDNS: the type switch, NXDOMAIN vs NODATA by a fake
A lookup, SERVFAIL before the cache synced), ``kubernetes.go`` (Services, Records,
findServices, findPods, endpointHostname), ``parse.go`` (the name grammar), ``reverse.go``
(PTR), ``ns.go`` (NS and ``ns.dns.<zone>``) and ``plugin/backend_lookup.go`` (how the
backend's entries become A/AAAA/SRV/CNAME/TXT/PTR/NS/SOA records: de-duplication, SRV
weights, Additional). Function names follow upstream's so the two can be read side by side;
docs/dns.md lists what is modelled and what is not.

The cluster is read once, as the plugin's informer cache holds it: EndpointSlices become
CoreDNS's ``object.Endpoints`` (ready addresses only, a port-less slice gets the port -1
sentinel), Services their ClusterIPs (headless: ``None``), Pods their ``status.podIP``
(pods that finished are not in the cache).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..model import Cluster, Service
from .records import Record, Response

POD_MODES = ("disabled", "insecure", "verified")
DNS_SCHEMA_VERSION = "1.1.0"
DEFAULT_TTL = 5
_MAX_CNAME_CHAIN = 10
# Namespaces every cluster has: they exist even when the manifests hold no Namespace object.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

QTYPES = (
    "A",
    "AAAA",
    "SRV",
    "PTR",
    "TXT",
    "SOA",
    "NS",
    "ANY",
    "CNAME",
    "MX",
    "AXFR",
    "IXFR",
    "HINFO",
)

# upstream's three name errors (IsNameError) and nothing else: the plugin has no other
_NO_ITEMS = "no items found"
_NS_NOT_EXPOSED = "namespace is not exposed"
_INVALID = "invalid query name"

Upstream = Callable[[str, str], "Response | None"]
"""Resolves a name outside the cluster zones (an ExternalName target): (name, qtype) ->
the upstream's response, or None when the lookup failed (CoreDNS then drops the CNAME)."""


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def split_domain_name(name: str) -> list[str]:
    """miekg/dns SplitDomainName: the labels, none for the root."""
    name = name.rstrip(".") if name != "." else ""
    return name.split(".") if name else []


def is_subdomain(parent: str, child: str) -> bool:
    """miekg/dns IsSubDomain: child equals parent or lies below it (case-insensitive)."""
    p, c = fqdn(parent).lower(), fqdn(child).lower()
    return p == "." or c == p or c.endswith("." + p)


def zones_match(zones: Iterable[str], qname: str) -> str:
    """plugin.Zones.Matches: the longest zone qname is in, or ""."""
    best = ""
    for z in zones:
        if is_subdomain(z, qname) and len(z) > len(best):
            best = z
    return best


def normalize_zone(zone: str) -> str:
    return fqdn(zone.strip()).lower()


def _trim_zone(name: str, zone: str) -> str:
    """dnsutil.TrimZone: name without the zone's labels and without a trailing dot ("" when
    nothing is left)."""
    labels = split_domain_name(name)
    n = len(split_domain_name(zone))
    if n >= len(labels):
        return ""
    return ".".join(labels[: len(labels) - n])


def _is_reverse(name: str) -> int:
    if name.endswith(".in-addr.arpa."):
        return 1
    if name.endswith(".ip6.arpa."):
        return 2
    return 0


def extract_address_from_reverse(name: str) -> str:
    """dnsutil.ExtractAddressFromReverse: the IP a PTR name spells, "" when it spells none."""
    try:
        if name.endswith(".in-addr.arpa."):
            parts = name[: -len(".in-addr.arpa.")].split(".")
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        if name.endswith(".ip6.arpa."):
            nibbles = list(reversed(name[: -len(".ip6.arpa.")].split(".")))
            groups = ["".join(nibbles[i * 4 : i * 4 + 4]) for i in range(len(nibbles) // 4)]
            ip6 = ipaddress.IPv6Address(":".join(groups))
            return str(ip6.ipv4_mapped or ip6)
    except ValueError:
        return ""
    return ""


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """net.ParseIP: dotted IPv4 or IPv6 without a zone; None otherwise."""
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_type(host: str) -> tuple[str, str]:
    """msg.Service.HostType: ("A"|"AAAA", address) for an IP, ("CNAME", "") for a name.
    An IPv4-mapped IPv6 address is an A record, as Go's To4() makes it."""
    ip = _parse_ip(host)
    if ip is None:
        return "CNAME", ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "A", str(ip.ipv4_mapped)
        return "AAAA", str(ip)
    return "A", str(ip)


def _match(a: str, b: str) -> bool:
    return a == b or a.lower() == b.lower()


def _match_port_proto(a_port: str, b_port: str, a_proto: str, b_proto: str) -> bool:
    return (a_port == "" or _match(a_port, b_port)) and (a_proto == "" or _match(a_proto, b_proto))


@dataclass(slots=True)
class RecordRequest:
    """parse.go recordRequest: the parts of a name under the zone."""

    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    cluster: str = ""
    zone: str = ""  # the zonal extension's topology zone
    zone_prefer: bool = False
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""

    def __str__(self) -> str:
        return ".".join(
            (
                self.port,
                self.protocol,
                self.endpoint,
                self.cluster,
                self.service,
                self.namespace,
                self.pod_or_svc,
            )
        )


class _InvalidRequest(Exception):
    pass


def parse_request(
    name: str, zone: str, multicluster: bool = False, zonal: bool = False
) -> RecordRequest:
    """parse.go parseRequest. Raises ValueError for a name the plugin answers NXDOMAIN."""
    r = RecordRequest()
    base = _trim_zone(name, zone)
    if base in ("", "svc", "pod"):
        return r
    segs = split_domain_name(base)
    last = len(segs) - 1
    if last < 0:
        return r
    r.pod_or_svc = segs[last]
    if r.pod_or_svc not in ("pod", "svc"):
        raise ValueError(_INVALID)
    last -= 1
    if last < 0:
        return r
    r.namespace = segs[last]
    last -= 1
    if last < 0:
        return r
    r.service = segs[last]
    last -= 1
    if last < 0:
        return r
    if last == 0:
        r.endpoint = segs[last]
    elif last == 1:
        if not multicluster or segs[last].startswith("_") or segs[last - 1].startswith("_"):
            r.protocol = _strip_underscore(segs[last])
            r.port = _strip_underscore(segs[last - 1])
        else:
            r.cluster = segs[last]
            r.endpoint = segs[last - 1]
    else:
        if not zonal or multicluster or segs[last] != "_zone" or r.pod_or_svc != "svc":
            raise ValueError(_INVALID)
        if segs[last - 1] == "prefer":
            r.zone_prefer = True
        elif segs[last - 1] != "pin":
            raise ValueError(_INVALID)
        r.zone = ".".join(segs[: last - 1])
    return r


def _strip_underscore(s: str) -> str:
    return s[1:] if s.startswith("_") else s


@dataclass(slots=True)
class _Addr:
    ip: str
    hostname: str
    target_ref_name: str
    zone: str = ""  # topology zone, lower-cased (the zonal option)


@dataclass(slots=True)
class _Endpoints:
    """object.Endpoints: one EndpointSlice, ready addresses x ports."""

    name: str
    namespace: str
    index: str  # "<service>.<namespace>"
    addresses: list[_Addr]
    ports: list[tuple[int, str, str]]  # (port, name, protocol); [(-1, "", "")]: none


@dataclass(slots=True)
class _Svc:
    """msg.Service: what the backend hands to backend_lookup.go."""

    host: str
    ttl: int
    port: int = 0
    domain: str = ""  # msg.Domain(Key): the SRV target / NS name
    text: str = ""


class Resolver:
    """CoreDNS's kubernetes plugin over a Cluster.

    ``zones``: the plugin's zones (the first non-reverse one is the primary zone PTR names
    use). ``pods``: disabled | insecure | verified. ``namespaces``: only these are exposed
    (empty: all). ``synced=False``: the API cache has not synced (NXDOMAIN becomes
    SERVFAIL). ``fallthrough``: None for none, [] for every zone, else the zones whose name
    errors CoreDNS passes to the next plugin. ``local_ips``: the addresses CoreDNS itself
    listens on (NS records; default: the first ready endpoint of kube-system/kube-dns, else
    127.0.0.1). ``serial``: the SOA serial (CoreDNS writes the Unix time of the last
    change it saw; default 0). ``namespace_exists``: whether a namespace exists (default:
    a Namespace object, the namespace of any object, or one of the built-in four).
    ``upstream``: resolves ExternalName targets outside the zones (default: an empty
    answer, so the CNAME comes alone)."""

    def __init__(
        self,
        cluster: Cluster,
        zones: Sequence[str] = ("cluster.local.",),
        pods: str = "disabled",
        *,
        ttl: int = DEFAULT_TTL,
        namespaces: Iterable[str] = (),
        endpoint_pod_names: bool = False,
        ignore_empty_service: bool = False,
        synced: bool = True,
        fallthrough: Sequence[str] | None = None,
        local_ips: Sequence[str] | None = None,
        serial: int = 0,
        namespace_exists: Callable[[str], bool] | None = None,
        upstream: Upstream | None = None,
        zonal: bool = False,
    ):
        if isinstance(zones, str):
            zones = [zones]
        self.zones = [normalize_zone(z) for z in zones]
        if not self.zones:
            raise InputError("at least one zone is needed", field="zones")
        primary = [z for z in self.zones if _is_reverse(z) == 0]
        if not primary:
            raise InputError("non-reverse zone name must be used", field="zones", value=zones)
        self.primary_zone = primary[0]
        if pods not in POD_MODES:
            raise InputError(
                "must be one of: disabled, verified, insecure", field="pods", value=pods
            )
        self.pods = pods
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 3600:
            raise InputError("ttl must be in range [0, 3600]", field="ttl", value=ttl)
        self.ttl = ttl
        self.namespaces = set(namespaces)
        self.endpoint_pod_names = endpoint_pod_names
        self.ignore_empty_service = ignore_empty_service
        self.synced = synced
        self.fallthrough = (
            None
            if fallthrough is None
            else ([normalize_zone(z) for z in fallthrough] if fallthrough else ["."])
        )
        self.serial = serial
        self.zonal = zonal
        self.upstream = upstream
        self._index(cluster)
        if namespace_exists is None:
            known = set(self._known_namespaces)
            namespace_exists = known.__contains__
        self.namespace_exists = namespace_exists
        self.local_ips = list(local_ips) if local_ips is not None else self._default_local_ips()

    # ------------------------------------------------------------ the informer cache

    def _index(self, cluster: Cluster) -> None:
        known = set(BUILTIN_NAMESPACES)
        known.update(ns.name for ns in cluster.namespaces.values())
        self.services: dict[str, list[Service]] = {}
        self.svc_by_ip: dict[str, list[Service]] = {}
        for svc in cluster.services.values():
            known.add(svc.namespace)
            self.services.setdefault(f"{svc.name}.{svc.namespace}".lower(), []).append(svc)
            for ip in _cluster_ips(svc):
                self.svc_by_ip.setdefault(ip, []).append(svc)
        self.endpoints: dict[str, list[_Endpoints]] = {}
        self.ep_by_ip: dict[str, list[_Endpoints]] = {}
        for s in cluster.endpoint_slices.values():
            known.add(s.namespace)
            if s.address_type == "FQDN":
                continue
            if s.ports:
                ports = [
                    (-1 if p.port is None else p.port, p.name, p.protocol or "") for p in s.ports
                ]
            else:
                ports = [(-1, "", "")]
            addrs = []
            for e in s.endpoints:
                if not e.is_ready:
                    continue
                ref = (e.target_ref or {}).get("name", "")
                for a in e.addresses:
                    addrs.append(_Addr(a, e.hostname, ref if len(ref) < 64 else "", e.zone.lower()))
            ep = _Endpoints(s.name, s.namespace, f"{s.service_name}.{s.namespace}", addrs, ports)
            self.endpoints.setdefault(ep.index.lower(), []).append(ep)
            for ip in dict.fromkeys(a.ip for a in addrs):
                self.ep_by_ip.setdefault(ip, []).append(ep)
        self.pods_by_ip: dict[str, list[tuple[str, str]]] = {}
        for pod in cluster.pods.values():
            known.add(pod.namespace)
            if pod.phase in ("Succeeded", "Failed", "Unknown") or not pod.pod_ips:
                continue
            self.pods_by_ip.setdefault(pod.pod_ips[0], []).append((pod.namespace, pod.name))
        self._known_namespaces = known

    def _default_local_ips(self) -> list[str]:
        for ep in self.endpoints.get("kube-dns.kube-system", []):
            if ep.addresses:
                return [sorted(a.ip for a in ep.addresses)[0]]
        return ["127.0.0.1"]

    # ------------------------------------------------------------ namespaces

    def _configured_namespace(self, ns: str) -> bool:
        return not self.namespaces or ns in self.namespaces

    def _namespace_exposed(self, ns: str) -> bool:
        return self._configured_namespace(ns) and self.namespace_exists(ns)

    def endpoint_hostname(self, addr: _Addr) -> str:
        """kubernetes.go endpointHostname."""
        if addr.hostname:
            return addr.hostname
        if self.endpoint_pod_names and addr.target_ref_name:
            return addr.target_ref_name
        if "." in addr.ip:
            return addr.ip.replace(".", "-")
        if ":" in addr.ip:
            h = addr.ip.replace(":", "-")
            return h + "0" if h.endswith("-") else h
        return ""

    # ------------------------------------------------------------ the backend (kubernetes.go)

    def _records(self, name: str, zone: str) -> tuple[list[_Svc], str | None]:
        try:
            r = parse_request(name, zone, False, self.zonal)
        except ValueError:
            return [], _INVALID
        if r.pod_or_svc == "":
            return [], None
        if _is_reverse(name) > 0:
            return [], _NO_ITEMS
        if not self._namespace_exposed(r.namespace):
            return [], _NS_NOT_EXPOSED
        if r.pod_or_svc == "pod":
            return self._find_pods(r, zone)
        return self._find_services(r, zone)

    def _find_pods(self, r: RecordRequest, zone: str) -> tuple[list[_Svc], str | None]:
        if self.pods == "disabled":
            return [], _NO_ITEMS
        namespace = r.namespace
        if not self._namespace_exposed(namespace):
            return [], _NO_ITEMS
        podname = r.service
        if podname == "":
            return [], None
        domain = f"{podname}.{namespace}.pod.{zone}"
        if podname.count("-") == 3 and "--" not in podname:
            ip = podname.replace("-", ".")
        else:
            ip = podname.replace("-", ":")
        if self.pods == "insecure":
            if _parse_ip(ip) is None:
                return [], _NO_ITEMS
            return [_Svc(ip, self.ttl, domain=domain)], None
        out = [
            _Svc(ip, self.ttl, domain=domain)
            for ns, _name in self.pods_by_ip.get(ip, ())
            if _match(namespace, ns)
        ]
        return out, (None if out else _NO_ITEMS)

    def _find_services(self, r: RecordRequest, zone: str) -> tuple[list[_Svc], str | None]:
        if not self._namespace_exposed(r.namespace):
            return [], _NO_ITEMS
        if r.service == "":
            return [], None
        err: str | None = _NO_ITEMS
        out: list[_Svc] = []
        idx = f"{r.service}.{r.namespace}"
        eps = self.endpoints.get(idx, [])
        for svc in self.services.get(idx, []):
            if not _match(r.namespace, svc.namespace) or not _match(r.service, svc.name):
                continue
            headless = _headless(svc)
            if self.ignore_empty_service and svc.type != "ExternalName" and not headless:
                if not any(e.addresses for e in eps):
                    continue
            if r.zone and not headless:
                continue
            if svc.type == "ExternalName":
                if r.endpoint or r.port or r.protocol:
                    continue
                if _host_type(svc.external_name)[0] == "CNAME":
                    out.append(_Svc(svc.external_name, self.ttl))
                    err = None
                continue
            if headless or r.endpoint:
                if r.zone:
                    err = None
                svc_index = f"{svc.name}.{svc.namespace}"

                def add_for_zone(topo: str, svc: Service = svc, index: str = svc_index) -> int:
                    nonlocal err
                    added = 0
                    for ep in eps:
                        if ep.index != index:
                            continue
                        for addr in ep.addresses:
                            if topo and addr.zone != topo:
                                continue
                            host = self.endpoint_hostname(addr)
                            if r.endpoint and not _match(r.endpoint, host):
                                continue
                            for port, pname, proto in ep.ports:
                                if not _match_port_proto(r.port, pname, r.protocol, proto):
                                    continue
                                domain = f"{host}.{svc.name}.{svc.namespace}.svc.{zone}"
                                out.append(_Svc(addr.ip, self.ttl, port, domain))
                                err = None
                                added += 1
                    return added

                if add_for_zone(r.zone) == 0 and r.zone_prefer:
                    add_for_zone("")
                continue
            ports = [(p.port, p.name, p.protocol) for p in svc.ports] or [(-1, "", "")]
            for port, pname, proto in ports:
                if not _match_port_proto(r.port, pname, r.protocol, proto):
                    continue
                err = None
                for ip in _cluster_ips(svc):
                    domain = f"{svc.name}.{svc.namespace}.svc.{zone}"
                    out.append(_Svc(ip, self.ttl, port, domain))
        return out, err

    def _ns_addrs(self, zone: str) -> list[tuple[str, str]]:
        """ns.go nsAddrs (external=false): (name, ip) of CoreDNS's own Service."""
        names: list[tuple[str, str]] = []
        found = False
        for local in self.local_ips:
            for ep in self.ep_by_ip.get(local, []):
                found = True
                for svc in self.services.get(ep.index.lower(), []):
                    svc_name = f"{svc.name}.{svc.namespace}.svc.{zone}"
                    if _headless(svc):
                        for a in ep.addresses:
                            names.append((f"{self.endpoint_hostname(a)}.{svc_name}", a.ip))
                    else:
                        names.extend((svc_name, ip) for ip in _cluster_ips(svc))
        if not found:
            names = [(f"ns.dns.{zone}", ip) for ip in self.local_ips]
        return names

    def _services(
        self, qname: str, name: str, zone: str, qtype: str
    ) -> tuple[list[_Svc], str | None]:
        """kubernetes.go Services (the ServiceBackend entry point)."""
        if qtype == "TXT":
            segs = split_domain_name(_trim_zone(name, zone))
            if segs == ["dns-version"]:
                return [_Svc("", 28800, text=DNS_SCHEMA_VERSION)], None
            found, err = self._records(name, zone)
            if found:
                return [], None
            if err is None and self.zonal:
                try:
                    if parse_request(name, zone, False, True).zone:
                        return [], None
                except ValueError:
                    pass
            return [], _NO_ITEMS
        if qtype == "NS":
            return [_Svc(ip, self.ttl, domain=n) for n, ip in self._ns_addrs(zone)], None
        if _is_default_ns(name, zone):
            out = []
            for _n, ip in self._ns_addrs(zone):
                kind, _addr = _host_type(ip)
                if kind == qtype:
                    out.append(_Svc(ip, self.ttl))
            return out, None
        found, err = self._records(name, zone)
        if qtype != "SRV":
            return found, err
        return [s for s in found if _host_type(s.host)[0] != "CNAME"], err

    # ------------------------------------------------------------ backend_lookup.go

    def _address(
        self, qname: str, zone: str, qtype: str, previous: list[Record]
    ) -> tuple[list[Record], bool, str | None]:
        """plugin.A / plugin.AAAA (and TXT's CNAME chasing shares the shape)."""
        name = qname.lower()
        services, err = self._services(qname, name, zone, qtype)
        if err is not None:
            return [], False, err
        records: list[Record] = []
        truncated = False
        dup: set[str] = set()
        for serv in services:
            what, ip = _host_type(serv.host)
            if what == "CNAME":
                target = fqdn(serv.host)
                if is_subdomain(name, target):
                    continue  # x CNAME x (or below) is a loop
                cname = Record(qname, serv.ttl, "CNAME", target=target)
                if len(previous) > _MAX_CNAME_CHAIN:
                    continue
                if any(p.type == "CNAME" and p.target == target for p in previous):
                    continue
                if is_subdomain(zone, target):
                    nxt, tc, e = self._address(target, zone, qtype, [*previous, cname])
                    if e is None and nxt:
                        records.append(cname)
                        records.extend(nxt)
                    truncated = truncated or tc
                    continue
                up = self._lookup(target, qtype)
                if up is None:
                    continue
                truncated = truncated or up.truncated
                records.append(cname)
                records.extend(up.answer)
                continue
            if what == qtype and serv.host not in dup:
                dup.add(serv.host)
                records.append(Record(qname, serv.ttl, qtype, address=ip))
        return records, truncated, None

    def _lookup(self, name: str, qtype: str) -> Response | None:
        if self.upstream is None:
            return Response(name, qtype, "NOERROR", authoritative=False)
        return self.upstream(name, qtype)

    def _txt(self, qname: str, zone: str) -> tuple[list[Record], str | None]:
        services, err = self._services(qname, qname.lower(), zone, "TXT")
        if err is not None:
            return [], err
        out: list[Record] = []
        seen: set[str] = set()
        for serv in services:
            if serv.text and serv.text not in seen:
                seen.add(serv.text)
                out.append(Record(qname, serv.ttl, "TXT", txt=serv.text))
        return out, None

    def _srv(self, qname: str, zone: str) -> tuple[list[Record], list[Record], str | None]:
        services, err = self._services(qname, qname.lower(), zone, "SRV")
        if err is not None:
            return [], [], err
        total: dict[int, int] = {}
        for _serv in services:
            total[0] = total.get(0, 0) + 100  # priority 0, weight 0 counts as 100
        records: list[Record] = []
        extra: list[Record] = []
        dup: set[tuple[str, int, str]] = set()
        for serv in services:
            if serv.port == -1:
                continue
            weight = math.floor(100.0 / float(total[0]) * 100) or 1
            what, ip = _host_type(serv.host)
            if what not in ("A", "AAAA"):
                continue
            target = fqdn(serv.domain)
            if (target, serv.port, "") not in dup:
                dup.add((target, serv.port, ""))
                records.append(
                    Record(qname, serv.ttl, "SRV", priority=0, weight=weight, port=serv.port,
                           target=target)
                )  # fmt: skip
            if (target, 0, serv.host) not in dup:
                dup.add((target, 0, serv.host))
                extra.append(Record(target, serv.ttl, what, address=ip))
        return records, extra, None

    def _cname(self, qname: str, zone: str) -> tuple[list[Record], str | None]:
        services, err = self._services(qname, qname.lower(), zone, "CNAME")
        if err is not None:
            return [], err
        if services and _parse_ip(services[0].host) is None:
            return [Record(qname, services[0].ttl, "CNAME", target=fqdn(services[0].host))], None
        return [], None

    def _ptr(self, qname: str, zone: str) -> tuple[list[Record], str | None]:
        name = qname.lower()
        ip = extract_address_from_reverse(name)
        if not ip:
            _found, err = self._records(name, zone)
            return [], err
        hosts = self._service_record_for_ip(ip)
        if not hosts:
            return [], _NO_ITEMS
        out: list[Record] = []
        for h in dict.fromkeys(hosts):
            out.append(Record(qname, self.ttl, "PTR", target=fqdn(h)))
        return out, None

    def _service_record_for_ip(self, ip: str) -> list[str]:
        """reverse.go serviceRecordForIP: the first Service with that ClusterIP, else every
        endpoint address with that IP (one name per Service/hostname)."""
        for svc in self.svc_by_ip.get(ip, []):
            if self.namespaces and not self._namespace_exposed(svc.namespace):
                continue
            return [f"{svc.name}.{svc.namespace}.svc.{self.primary_zone}"]
        out = []
        for ep in self.ep_by_ip.get(ip, []):
            if self.namespaces and not self._namespace_exposed(ep.namespace):
                continue
            for addr in ep.addresses:
                if addr.ip == ip:
                    out.append(f"{self.endpoint_hostname(addr)}.{ep.index}.svc.{self.primary_zone}")
        return out

    def _ns(self, qname: str, zone: str) -> tuple[list[Record], list[Record]]:
        records: list[Record] = []
        extra: list[Record] = []
        seen: set[str] = set()
        for n, ip in self._ns_addrs(zone):
            what, addr = _host_type(ip)
            if what == "CNAME":
                continue
            target = fqdn(n)
            extra.append(Record(target, self.ttl, what, address=addr))
            if target in seen:
                continue
            seen.add(target)
            records.append(Record(qname, self.ttl, "NS", target=target))
        return records, extra

    def soa(self, zone: str) -> Record:
        """plugin.SOA: the zone's SOA as CoreDNS writes it (zone spelt as in the query)."""
        return Record(
            zone,
            min(self.ttl, 300),
            "SOA",
            mname=_join("ns.dns", zone),
            rname=_join("hostmaster", zone),
            serial=self.serial,
            refresh=7200,
            retry=1800,
            expire=86400,
            minttl=self.ttl,
        )

    # ------------------------------------------------------------ handler.go

    def query(self, name: str, qtype: str = "A") -> Response:
        """Answer one question as ServeDNS does."""
        qtype = qtype.upper()
        qname = fqdn(name)
        zone = zones_match(self.zones, qname)
        if not zone:
            return self._passed_on(
                qname,
                qtype,
                f"{qname} is not in the kubernetes zones ({' '.join(self.zones)}): CoreDNS "
                "passes it to the next plugin (forward); not modelled",
            )
        zone = qname[len(qname) - len(zone) :]  # the query's own spelling
        name_l = qname.lower()
        records: list[Record] = []
        extra: list[Record] = []
        truncated = False
        err: str | None = None
        if qtype in ("A", "AAAA"):
            records, truncated, err = self._address(qname, zone, qtype, [])
        elif qtype == "TXT":
            records, err = self._txt(qname, zone)
        elif qtype == "CNAME":
            records, err = self._cname(qname, zone)
        elif qtype == "PTR":
            records, err = self._ptr(qname, zone)
        elif qtype == "MX":
            _s, err = self._services(qname, name_l, zone, "MX")  # no service is a mail host
        elif qtype == "SRV":
            records, extra, err = self._srv(qname, zone)
        elif qtype == "SOA":
            if qname == zone:
                records = [self.soa(zone)]
        elif qtype in ("AXFR", "IXFR"):
            return Response(qname, qtype, "REFUSED", authoritative=False, zone=zone)
        elif qtype == "NS" and name_l == zone:
            records, extra = self._ns(qname, zone)
        else:  # a fake A lookup tells NODATA from NXDOMAIN
            _r, _tc, err = self._address(qname, zone, "A", [])
        if err is not None:
            if self.fallthrough is not None and zones_match(self.fallthrough, name_l):
                return self._passed_on(
                    qname,
                    qtype,
                    f"name error under fallthrough: CoreDNS passes {qname} to the next "
                    "plugin; not modelled",
                    zone,
                )
            rcode = "NXDOMAIN" if self.synced else "SERVFAIL"
            return Response(qname, qtype, rcode, authority=[self.soa(zone)], zone=zone)
        if not records:
            return Response(qname, qtype, "NOERROR", authority=[self.soa(zone)], zone=zone)
        return Response(qname, qtype, "NOERROR", records, [], extra, truncated=truncated, zone=zone)

    def _passed_on(self, qname: str, qtype: str, note: str, zone: str = "") -> Response:
        return Response(
            qname, qtype, "REFUSED", authoritative=False, zone=zone, passed_on=True, note=note
        )


def _join(label: str, zone: str) -> str:
    return f"{label}." if zone == "." else f"{label}.{zone}"


def _is_default_ns(name: str, zone: str) -> bool:
    """ns.go isDefaultNS, kept byte for byte: ``name`` is lower-cased, ``zone`` spelt as in
    the query (so a zone typed in capitals is not the default NS name)."""
    return name.find("ns.dns.") == 0 and name.find(zone) == len("ns.dns.")


def _headless(svc: Service) -> bool:
    ips = svc.cluster_ips or [svc.cluster_ip]
    return ips[0] == "None"


def _cluster_ips(svc: Service) -> list[str]:
    """The Service's ClusterIPs as CoreDNS indexes them (none for headless, ExternalName or
    a Service without an address yet)."""
    if svc.type == "ExternalName":
        return []
    return [ip for ip in (svc.cluster_ips or [svc.cluster_ip]) if ip not in ("", "None")]
