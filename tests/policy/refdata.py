"""The NetworkPolicy truth tables of tests/data/netpol/ as kproxy-emu manifests."""

from __future__ import annotations

import json
from pathlib import Path

from kproxy_emu.model import Cluster

DATA = Path(__file__).resolve().parent.parent / "data" / "netpol"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def namespace(name: str, labels: dict | None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}},
    }


def pod(ns: str, name: str, labels: dict | None, ip: str | None, ports: list[dict]) -> dict:
    # the API requires containerPort: an entry without one can match nothing, left out
    ports = [dict(p) for p in ports if "containerPort" in p]
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": ip} if ip else {},
    }
    return obj


def service(ns: str, svc: dict, selector: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc["name"], "namespace": ns},
        "spec": {
            "clusterIP": svc["clusterIP"],
            "selector": selector,
            "ports": [dict(p) for p in svc["ports"]],
        },
    }


def e2e_manifests(case: dict, state: dict) -> list[dict]:
    """One step of an e2e case: the state's namespaces, pod labels and policies over the
    initial pods and their Services (selecting the pods' initial labels)."""
    out = [namespace(n["name"], n["labels"]) for n in state["namespaces"]]
    for p in case["initialCluster"]["pods"]:
        key = f"{p['namespace']}/{p['name']}"
        out.append(
            pod(p["namespace"], p["name"], state["podLabels"][key], p["ip"], p["containerPorts"])
        )
        out.append(service(p["namespace"], p["service"], p["labels"]))
    out.extend(state["policies"])
    return out


def e2e_steps():
    """(id, case, step index, manifests, probe) for every probe of every step."""
    for case in load("k8s_e2e_netpol_sample.json")["cases"]:
        for s, step in enumerate(case["steps"]):
            manifests = e2e_manifests(case, step["stateAfterAction"])
            for probe in step["probes"]:
                yield (
                    f"{case['id']}-step{s}-{probe['protocol']}{probe['port']}",
                    case,
                    manifests,
                    probe,
                )


def npguard_eval_cluster(scenario: dict) -> Cluster:
    c = scenario["cluster"]
    docs = [namespace(n["name"], n.get("labels")) for n in c["namespaces"]]
    docs += [
        pod(p["namespace"], p["name"], p.get("labels"), p.get("ip"), p.get("containerPorts", []))
        for p in c["pods"]
    ]
    docs += scenario["policies"]
    return Cluster.from_dicts(docs)


def connlist_cluster(case: dict) -> tuple[Cluster, dict[str, list[str]]]:
    """The case's cluster and, per connlist name (``ns/name[Kind]``), its pods' keys."""
    docs = [namespace(n["name"], n.get("labels")) for n in case["namespaces"]]
    groups: dict[str, list[str]] = {}
    next_ip = 10
    for w in case["workloads"]:
        if w["kind"] == "Pod" and "ownerReference" in w:
            owner = w["ownerReference"]
            label = f"{w['namespace']}/{owner['name']}[{owner['kind']}]"
        else:
            label = f"{w['namespace']}/{w['name']}[{w['kind']}]"
        replicas = w.get("replicas", 1) if w["kind"] != "Pod" else 1
        for r in range(replicas):
            name = w["name"] if w["kind"] == "Pod" else f"{w['name']}-{r}"
            ip = w.get("podIP") or f"10.250.0.{next_ip}"
            next_ip += 1
            docs.append(pod(w["namespace"], name, w["podLabels"], ip, w["containerPorts"]))
            groups.setdefault(label, []).append(f"{w['namespace']}/{name}")
    docs += case["policies"]
    return Cluster.from_dicts(docs), groups


def cyclonus_cluster(case: dict) -> tuple[Cluster, str | None, str | None, int]:
    """(cluster, src pod key or None, dst pod key or None, port) of a cyclonus case; a named
    port of the traffic becomes a containerPort of the destination pod (8080)."""
    t = case["traffic"]
    docs: list[dict] = []
    seen: dict[str, dict | None] = {}
    keys = []
    port = t.get("resolvedPort") or 8080
    for side, name in (("source", "src"), ("destination", "dst")):
        end = t[side]
        internal = end["internal"]
        if internal is None:
            keys.append(None)
            continue
        ns = internal["namespace"]
        if ns not in seen:
            seen[ns] = internal["namespaceLabels"]
            docs.append(namespace(ns, internal["namespaceLabels"]))
        ports = []
        if side == "destination" and t.get("resolvedPortName"):
            ports = [
                {"name": t["resolvedPortName"], "containerPort": port, "protocol": t["protocol"]}
            ]
        docs.append(pod(ns, name, internal["podLabels"], end["ip"], ports))
        keys.append(f"{ns}/{name}")
    docs += case["policies"]
    return Cluster.from_dicts(docs), keys[0], keys[1], port
