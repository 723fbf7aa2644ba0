"""Kubernetes objects back to the dicts `kubectl get -o yaml|json` writes.

decode(encode(x)) == x for every object kind; defaults are written out explicitly, as the
API server does, so a dump is complete on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .objects import (
    DEFAULT_AFFINITY_TIMEOUT,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
    ServiceCIDR,
)
from .seal import model_type


def _metadata(obj: Any, namespaced: bool = True) -> dict:
    meta: dict[str, Any] = {"name": obj.name}
    if namespaced:
        meta["namespace"] = obj.namespace
    if obj.labels:
        meta["labels"] = dict(obj.labels)
    if getattr(obj, "annotations", None):
        meta["annotations"] = dict(obj.annotations)
    return meta


def service(svc: Service) -> dict:
    spec: dict[str, Any] = {"type": svc.type}
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    if svc.cluster_ip:
        spec["clusterIP"] = svc.cluster_ip
    if svc.cluster_ips:
        spec["clusterIPs"] = list(svc.cluster_ips)
    if svc.ports:
        ports = []
        for p in svc.ports:
            port: dict[str, Any] = {}
            if p.name:
                port["name"] = p.name
            port["protocol"] = p.protocol
            port["port"] = p.port
            port["targetPort"] = p.target_port
            if p.node_port:
                port["nodePort"] = p.node_port
            ports.append(port)
        spec["ports"] = ports
    if svc.external_ips:
        spec["externalIPs"] = list(svc.external_ips)
    if svc.load_balancer_ip:
        spec["loadBalancerIP"] = svc.load_balancer_ip
    if svc.lb_source_ranges:
        spec["loadBalancerSourceRanges"] = list(svc.lb_source_ranges)
    spec["sessionAffinity"] = svc.session_affinity
    if svc.session_affinity == "ClientIP" or svc.affinity_timeout != DEFAULT_AFFINITY_TIMEOUT:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.external_traffic_policy:
        spec["externalTrafficPolicy"] = svc.external_traffic_policy
    spec["internalTrafficPolicy"] = svc.internal_traffic_policy
    if svc.health_check_node_port:
        spec["healthCheckNodePort"] = svc.health_check_node_port
    if svc.ip_families:
        spec["ipFamilies"] = list(svc.ip_families)
    if svc.ip_family_policy:
        spec["ipFamilyPolicy"] = svc.ip_family_policy
    if svc.traffic_distribution:
        spec["trafficDistribution"] = svc.traffic_distribution
    if svc.external_name:
        spec["externalName"] = svc.external_name
    if svc.publish_not_ready_addresses:
        spec["publishNotReadyAddresses"] = True
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(svc),
        "spec": spec,
    }
    if svc.lb_ingress:
        ingress = []
        for ing in svc.lb_ingress:
            entry: dict[str, Any] = {}
            if ing.ip:
                entry["ip"] = ing.ip
            if ing.hostname:
                entry["hostname"] = ing.hostname
            if ing.ip_mode:
                entry["ipMode"] = ing.ip_mode
            ingress.append(entry)
        out["status"] = {"loadBalancer": {"ingress": ingress}}
    return out


def endpoint_slice(eps: EndpointSlice) -> dict:
    endpoints = []
    for ep in eps.endpoints:
        entry: dict[str, Any] = {"addresses": list(ep.addresses)}
        conditions = {}
        for key, value in (
            ("ready", ep.ready),
            ("serving", ep.serving),
            ("terminating", ep.terminating),
        ):
            if value is not None:
                conditions[key] = value
        entry["conditions"] = conditions
        if ep.hostname:
            entry["hostname"] = ep.hostname
        if ep.target_ref is not None:
            entry["targetRef"] = dict(ep.target_ref)
        if ep.node_name:
            entry["nodeName"] = ep.node_name
        if ep.zone:
            entry["zone"] = ep.zone
        if ep.hints_zones or ep.hints_nodes:
            hints: dict[str, Any] = {}
            if ep.hints_zones:
                hints["forZones"] = [{"name": z} for z in ep.hints_zones]
            if ep.hints_nodes:
                hints["forNodes"] = [{"name": n} for n in ep.hints_nodes]
            entry["hints"] = hints
        endpoints.append(entry)
    ports = []
    for p in eps.ports:
        port: dict[str, Any] = {"name": p.name, "protocol": p.protocol}
        if p.port is not None:
            port["port"] = p.port
        if p.app_protocol:
            port["appProtocol"] = p.app_protocol
        ports.append(port)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _metadata(eps),
        "addressType": eps.address_type,
        "endpoints": endpoints,
        "ports": ports,
    }


def node(n: Node) -> dict:
    spec: dict[str, Any] = {}
    if n.pod_cidrs:
        spec["podCIDR"] = n.pod_cidrs[0]
        spec["podCIDRs"] = list(n.pod_cidrs)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _metadata(n, namespaced=False),
        "spec": spec,
        "status": {"addresses": [{"type": a.type, "address": a.address} for a in n.addresses]},
    }


def pod(p: Pod) -> dict:
    spec: dict[str, Any] = {}
    if p.node_name:
        spec["nodeName"] = p.node_name
    if p.host_network:
        spec["hostNetwork"] = True
    if p.container_ports:  # which container held a port is not kept: one container
        spec["containers"] = [
            {
                "name": "main",
                "ports": [
                    {"containerPort": c.container_port, "protocol": c.protocol}
                    | ({"name": c.name} if c.name else {})
                    for c in p.container_ports
                ],
            }
        ]
    status: dict[str, Any] = {}
    if p.phase:
        status["phase"] = p.phase
    if p.pod_ips:
        status["podIP"] = p.pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in p.pod_ips]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(p),
        "spec": spec,
        "status": status,
    }


def namespace(ns: Namespace) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(ns, namespaced=False)}


def service_cidr(sc: ServiceCIDR) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": _metadata(sc, namespaced=False),
        "spec": {"cidrs": list(sc.cidrs)},
    }


def network_policy(np_: NetworkPolicy) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(np_),
        "spec": np_.spec,
    }


ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Service: service,
    EndpointSlice: endpoint_slice,
    Node: node,
    Pod: pod,
    Namespace: namespace,
    ServiceCIDR: service_cidr,
    NetworkPolicy: network_policy,
}


def encode(obj: Any) -> dict:
    return ENCODERS[model_type(obj)](obj)
