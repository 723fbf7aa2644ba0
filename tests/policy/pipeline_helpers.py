"""Helpers of the policy-stage tests: EndpointSlices for manifests' Services (as the
EndpointSlice controller writes them from the pods) and the emulated node."""

from __future__ import annotations

from kproxy_emu.model.config import NodeConfig

NODE = NodeConfig.from_node("node-1", ["192.168.0.2"])


def _target(port: dict, pod: dict) -> int | None:
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for c in pod.get("spec", {}).get("containers", []):
        for cp in c.get("ports", []):
            if cp.get("name") == target and cp.get("protocol", "TCP") == port.get(
                "protocol", "TCP"
            ):
                return cp["containerPort"]
    return None


def with_slices(manifests: list[dict]) -> list[dict]:
    """The manifests plus one EndpointSlice per (Service, selected pod with an IP)."""
    out = list(manifests)
    pods = [d for d in manifests if d["kind"] == "Pod" and d.get("status", {}).get("podIP")]
    for svc in (d for d in manifests if d["kind"] == "Service"):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        selector = svc["spec"].get("selector") or {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if pod["metadata"]["namespace"] != ns or not selector:
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            ports = []
            for p in svc["spec"]["ports"]:
                target = _target(p, pod)
                if target is not None:
                    entry = {"port": target, "protocol": p.get("protocol", "TCP")}
                    if p.get("name"):
                        entry["name"] = p["name"]
                    ports.append(entry)
            out.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-{pod['metadata']['name']}",
                        "namespace": ns,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "endpoints": [
                        {
                            "addresses": [pod["status"]["podIP"]],
                            "conditions": {"ready": True},
                        }
                    ],
                    "ports": ports,
                }
            )
    return out
