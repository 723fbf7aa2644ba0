"""Legacy v1 Endpoints converted to EndpointSlices the way the mirroring controller does.

pkg/controller/endpointslicemirroring: one slice per distinct port set and address family;
labels copied plus ``kubernetes.io/service-name`` and the mirroring ``managed-by`` label;
``addresses`` become ready endpoints and ``notReadyAddresses`` not-ready ones (only the
ready condition is set); at most 1000 addresses per subset are mirrored, ready ones first;
Endpoints labelled
``endpointslice.kubernetes.io/skip-mirror: "true"`` are not mirrored.
"""

from __future__ import annotations

import hashlib

from .decode import _meta, _Reader
from .objects import SERVICE_NAME_LABEL, Endpoint, EndpointPort, EndpointSlice

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
MAX_ENDPOINTS_PER_SUBSET = 1000
# annotations the controller does not copy onto slices
_DROPPED_ANNOTATIONS = (
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def endpoints_to_slices(obj: dict) -> list[EndpointSlice]:
    """Decode a v1 Endpoints object and mirror it into EndpointSlices (validated)."""
    r, metadata, namespace, name = _meta(obj, "Endpoints", True)
    labels = r.string_map(metadata, "labels", "metadata.labels")
    if labels.get(SKIP_MIRROR_LABEL) == "true":
        return []
    annotations = {
        k: v
        for k, v in r.string_map(metadata, "annotations", "metadata.annotations").items()
        if k not in _DROPPED_ANNOTATIONS
    }
    slice_labels = dict(labels)
    slice_labels[SERVICE_NAME_LABEL] = name
    slice_labels[MANAGED_BY_LABEL] = MIRROR_CONTROLLER

    # (ports, address type) -> endpoints, in input order
    groups: dict[tuple, list[Endpoint]] = {}
    for i, subset in enumerate(r.items(obj, "subsets", "subsets")):
        path = f"subsets[{i}]"
        if not isinstance(subset, dict):
            raise r.fail(path, "must be a mapping", subset)
        ports = tuple(
            _port(r, p, f"{path}.ports[{j}]")
            for j, p in enumerate(r.items(subset, "ports", f"{path}.ports"))
        )
        mirrored = 0
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, address in enumerate(r.items(subset, key, f"{path}.{key}")):
                if mirrored >= MAX_ENDPOINTS_PER_SUBSET:
                    break
                endpoint = _endpoint(r, address, f"{path}.{key}[{j}]", ready)
                family = "IPv6" if ":" in endpoint.addresses[0] else "IPv4"
                groups.setdefault((ports, family), []).append(endpoint)
                mirrored += 1

    slices = []
    for (ports, family), endpoints in groups.items():
        digest = hashlib.sha256(repr((name, ports, family)).encode()).hexdigest()[:5]
        slices.append(
            EndpointSlice(
                namespace=namespace,
                name=f"{name}-{digest}",
                address_type=family,
                endpoints=endpoints,
                ports=[
                    EndpointPort(port=p, protocol=proto, name=pname, app_protocol=app)
                    for pname, p, proto, app in ports
                ],
                labels=dict(slice_labels),
                annotations=dict(annotations),
            )
        )
    return slices


def _port(r: _Reader, p: object, path: str) -> tuple[str, int, str, str]:
    if not isinstance(p, dict):
        raise r.fail(path, "must be a mapping", p)
    return (
        r.string(p, "name", f"{path}.name"),
        r.port(p, "port", f"{path}.port", required=True),
        r.protocol(p, "protocol", f"{path}.protocol"),
        r.string(p, "appProtocol", f"{path}.appProtocol"),
    )


def _endpoint(r: _Reader, address: object, path: str, ready: bool) -> Endpoint:
    if not isinstance(address, dict):
        raise r.fail(path, "must be a mapping", address)
    # The controller skips addresses that are not IPs, but the API server never stores
    # such an Endpoints object: a bad address here is a broken input, so it is an error.
    ip = r.ip(r.string(address, "ip", f"{path}.ip", required=True), f"{path}.ip")
    node_name = address.get("nodeName")
    target_ref = address.get("targetRef")
    return Endpoint(
        addresses=[ip],
        ready=ready,
        node_name=r.string(address, "nodeName", f"{path}.nodeName") if node_name else "",
        hostname=r.string(address, "hostname", f"{path}.hostname"),
        target_ref=None
        if target_ref is None
        else r.string_map(address, "targetRef", f"{path}.targetRef"),
    )
