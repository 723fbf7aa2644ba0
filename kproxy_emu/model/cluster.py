"""The cluster: every loaded object, indexed the way kube-proxy and the modes look them up."""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from . import decode, encode, files
from .mirror import endpoints_to_slices
from .objects import (
    EndpointSlice,
    KubeObject,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
    ServiceCIDR,
)
from .seal import model_type


class UnsupportedKindWarning(UserWarning):
    """A manifest held an object kind kproxy-emu does not read; it was skipped."""


_COLLECTIONS = {
    Service: "services",
    EndpointSlice: "endpoint_slices",
    Node: "nodes",
    Pod: "pods",
    Namespace: "namespaces",
    ServiceCIDR: "service_cidrs",
    NetworkPolicy: "network_policies",
}
# dump order: cluster-scoped objects first, then services with their slices, then the rest
_DUMP_ORDER = (
    "namespaces",
    "nodes",
    "service_cidrs",
    "services",
    "endpoint_slices",
    "pods",
    "network_policies",
)

# packet_targets() origin bits (same values as kproxy_emu.packets)
_POD, _EXTERNAL, _HOST = 1, 2, 4
_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}


@contextlib.contextmanager
def paused_gc():
    """Building millions of small objects triggers the cyclic collector over and over, with
    each pass walking the whole growing heap; none of these objects form cycles. On the way
    out the survivors are frozen (gc.freeze), so the first collection after re-enabling does
    not walk them all once more; reference counting still frees them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass
class Cluster:
    """Services, EndpointSlices, Nodes, Pods, Namespaces, ServiceCIDRs, NetworkPolicies.

    Namespaced objects are keyed by ``(namespace, name)``, cluster-scoped ones by
    ``("", name)``; every dict keeps input order.
    """

    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    endpoint_slices: dict[tuple[str, str], EndpointSlice] = field(default_factory=dict)
    nodes: dict[tuple[str, str], Node] = field(default_factory=dict)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    namespaces: dict[tuple[str, str], Namespace] = field(default_factory=dict)
    service_cidrs: dict[tuple[str, str], ServiceCIDR] = field(default_factory=dict)
    network_policies: dict[tuple[str, str], NetworkPolicy] = field(default_factory=dict)
    sources: dict[tuple[str, str, str], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    # ------------------------------------------------------------ building

    def add(self, obj: KubeObject, source: str | None = None) -> None:
        """Add one object; a second object of the same kind and name is an error."""
        collection = getattr(self, _COLLECTIONS[model_type(obj)])
        key = obj.key
        if key in collection:
            first = self.sources.get((obj.kind,) + key)
            also = f" (first defined in {first})" if first else ""
            raise InputError(f"duplicate object{also}", file=source, obj=obj.ref)
        collection[key] = obj
        if source is not None:
            self.sources[(obj.kind,) + key] = source

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike] | str | os.PathLike) -> Cluster:
        """Load manifests (YAML/JSON files, directories, ``-`` for stdin)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        cluster = cls()
        legacy: list[tuple[dict, str]] = []
        with paused_gc():
            for path in files.manifest_files(paths):
                for doc in files.read_documents(path):
                    for obj in files.iter_objects(doc, path):
                        cluster._add_dict(obj, path, legacy)
            cluster._mirror(legacy)
        return cluster

    @classmethod
    def from_dicts(cls, objects: Iterable[dict], source: str | None = None) -> Cluster:
        """Build from already-parsed manifests (dicts with apiVersion and kind, or Lists)."""
        cluster = cls()
        legacy: list[tuple[dict, str]] = []
        with paused_gc():
            for doc in objects:
                for obj in files.iter_objects(doc, source or "<input>"):
                    cluster._add_dict(obj, source, legacy)
            cluster._mirror(legacy)
        return cluster

    def _add_dict(self, obj: dict, source: str | None, legacy: list) -> None:
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if not isinstance(kind, str) or not kind:
            raise InputError(
                "required field is missing" if kind is None else "must be a string",
                file=source,
                obj=_describe(obj),
                field="kind",
                **({} if kind is None else {"value": kind}),
            )
        if kind == "Endpoints":
            if api_version not in (None, "v1"):
                raise InputError(
                    "unsupported apiVersion (expected v1)",
                    file=source,
                    obj=_describe(obj),
                    field="apiVersion",
                    value=api_version,
                )
            legacy.append((obj, source))
            return
        entry = decode.DECODERS.get(kind)
        if entry is None:
            warnings.warn(
                f"{source or '<input>'}: skipping {_describe(obj)}: "
                f"kind {kind} is not read by kproxy-emu",
                UnsupportedKindWarning,
                stacklevel=3,
            )
            return
        versions, decoder = entry
        if api_version is None:
            api_version = versions[0]
        if api_version not in versions:
            raise InputError(
                f"unsupported apiVersion (expected {' or '.join(versions)})",
                file=source,
                obj=_describe(obj),
                field="apiVersion",
                value=api_version,
            )
        try:
            decoded = decoder(obj, api_version) if kind == "EndpointSlice" else decoder(obj)
        except InputError as exc:
            raise exc.where(file=source) from None
        self.add(decoded, source)

    def _mirror(self, legacy: list[tuple[dict, str]]) -> None:
        """Mirror legacy Endpoints into slices, unless the service already has slices.

        The real mirroring controller only handles selector-less services (the EndpointSlice
        controller covers the rest from pods); in a dump, Endpoints without slices are all
        the endpoint data there is, so they are mirrored whatever the selector.
        """
        if not legacy:
            return
        served = {(s.namespace, s.service_name) for s in self.endpoint_slices.values()}
        for obj, source in legacy:
            try:
                slices = endpoints_to_slices(obj)
            except InputError as exc:
                raise exc.where(file=source) from None
            for s in slices:
                if (s.namespace, s.service_name) not in served:
                    self.add(s, source)

    # ------------------------------------------------------------ reading

    def objects(self) -> Iterator[KubeObject]:
        for name in _DUMP_ORDER:
            yield from getattr(self, name).values()

    def slices_by_service(self) -> dict[tuple[str, str], list[EndpointSlice]]:
        """EndpointSlices grouped by their ``kubernetes.io/service-name`` label."""
        grouped: dict[tuple[str, str], list[EndpointSlice]] = {}
        for s in self.endpoint_slices.values():
            if s.service_name:
                grouped.setdefault((s.namespace, s.service_name), []).append(s)
        return grouped

    def node(self, name: str) -> Node:
        try:
            return self.nodes[("", name)]
        except KeyError:
            raise InputError("no such Node in the manifests", field="--node", value=name) from None

    def __len__(self) -> int:
        return sum(len(getattr(self, name)) for name in _DUMP_ORDER)

    def __repr__(self) -> str:  # the dataclass one prints every object: megabytes
        return f"<Cluster: {self.summary()}>"

    def summary(self) -> str:
        endpoints = sum(len(s.endpoints) for s in self.endpoint_slices.values())
        return (
            f"{len(self.services)} services, {len(self.endpoint_slices)} endpoint slices "
            f"({endpoints} endpoints), {len(self.nodes)} nodes, {len(self.pods)} pods, "
            f"{len(self.namespaces)} namespaces"
            + (f", {len(self.network_policies)} network policies" if self.network_policies else "")
        )

    def lint(self, *, limit: int = 5) -> list[str]:
        """What loads but will not work as its author likely meant, one line per kind
        (``check`` prints them as warnings): EndpointSlices no Service owns (kube-proxy
        ignores them) and proxied Services without a ready endpoint (kube-proxy rejects
        their traffic). Each names up to ``limit`` objects and counts the rest."""

        def names(items: list[str]) -> str:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        out = []
        unlabelled = [
            f"{s.namespace}/{s.name}" for s in self.endpoint_slices.values() if not s.service_name
        ]
        if unlabelled:
            out.append(
                f"{len(unlabelled)} EndpointSlice(s) without a kubernetes.io/service-name "
                f"label, ignored by kube-proxy: {names(unlabelled)}"
            )
        orphans = [
            f"{s.namespace}/{s.name} (Service {s.namespace}/{s.service_name})"
            for s in self.endpoint_slices.values()
            if s.service_name and (s.namespace, s.service_name) not in self.services
        ]
        if orphans:
            out.append(
                f"{len(orphans)} EndpointSlice(s) of a Service that does not exist, ignored "
                f"by kube-proxy: {names(orphans)}"
            )
        slices = self.slices_by_service()
        empty, unready = [], []
        for key, svc in self.services.items():
            if not svc.proxied:
                continue
            eps = [e for s in slices.get(key, ()) for e in s.endpoints]
            if not eps:
                empty.append(f"{key[0]}/{key[1]}")
            elif not any(e.is_ready or (e.serving and e.terminating) for e in eps):
                unready.append(f"{key[0]}/{key[1]}")
        if empty:
            out.append(
                f"{len(empty)} Service(s) with no endpoints (no EndpointSlice lists one; "
                f"kube-proxy rejects their traffic): {names(empty)}"
            )
        if unready:
            out.append(
                f"{len(unready)} Service(s) with no ready or serving endpoint (kube-proxy "
                f"rejects their traffic): {names(unready)}"
            )
        return out

    # ------------------------------------------------------------ writing

    def to_manifests(self) -> list[dict[str, Any]]:
        with paused_gc():
            return [encode.encode(obj) for obj in self.objects()]

    def dump(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        """Write every object: ``.json`` as a kubectl ``kind: List``, else multi-document YAML;
        atomically (a temporary file renamed into place); ``overwrite=False`` refuses an
        existing file."""
        with paused_gc():
            files.write_manifests(self.to_manifests(), path, overwrite=overwrite)

    # ------------------------------------------------------------ traffic

    def packet_targets(self, node_ips: Sequence[str] | None = None) -> np.ndarray:
        """Every service frontend a packet can be aimed at (kproxy_emu.packets.TARGET_DTYPE).

        ClusterIPs are reached from pods and the host; externalIPs, load-balancer IPs and
        NodePorts from everywhere, NodePorts on ``node_ips`` (default: every node's
        InternalIP/ExternalIP). IPv4 only for now.
        """
        from ..packets import TARGET_DTYPE, ip_to_u32

        if node_ips is None:
            node_ips = [ip for n in self.nodes.values() for ip in n.ips]
        node_ips = [ip for ip in node_ips if ":" not in ip and not ip.startswith("127.")]
        rows: list[tuple[str, int, int, int]] = []
        for svc in self.services.values():
            if not svc.proxied:
                continue
            for p in svc.ports:
                proto = _PROTO[p.protocol]
                if ":" not in svc.cluster_ip:
                    rows.append((svc.cluster_ip, p.port, proto, _POD | _HOST))
                everyone = _POD | _EXTERNAL | _HOST
                for ip in svc.external_ips:
                    if ":" not in ip:
                        rows.append((ip, p.port, proto, everyone))
                for ing in svc.lb_ingress:
                    if ing.ip and ":" not in ing.ip and ing.ip_mode != "Proxy":
                        rows.append((ing.ip, p.port, proto, everyone))
                if p.node_port:
                    rows.extend((ip, p.node_port, proto, everyone) for ip in node_ips)
        targets = np.empty(len(rows), dtype=TARGET_DTYPE)
        if rows:
            ips, ports, protos, origins = zip(*rows)
            targets["ip"] = ip_to_u32(list(ips))
            targets["port"] = ports
            targets["proto"] = protos
            targets["origins"] = origins
        return targets

    def packet_sources(self) -> dict[str, list[str]]:
        """Where traffic comes from: pod CIDRs, node IPs, a documentation range outside."""
        pod = [c for n in self.nodes.values() for c in n.pod_cidrs if ":" not in c]
        host = [ip for n in self.nodes.values() for ip in n.ips if ":" not in ip]
        return {
            "pod": pod or ["10.244.0.0/16"],
            "external": ["203.0.113.0/24"],
            "host": host or ["192.168.0.2"],
        }


def _describe(obj: dict) -> str:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "object"
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name", "?")
    ns = meta.get("namespace")
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
