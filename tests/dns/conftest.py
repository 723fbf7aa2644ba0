"""The CoreDNS kubernetes-plugin reference (tests/data/coredns) as Clusters and checks."""

from __future__ import annotations

import collections
import json
import pathlib
from typing import Any

import pytest

from kproxy_emu.dns import Resolver, Response
from kproxy_emu.model import Cluster

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "coredns"
RCODES = {"Success": "NOERROR", "NameError": "NXDOMAIN", "ServerFailure": "SERVFAIL"}


def load_reference() -> dict[str, Any]:
    return json.loads((DATA / "coredns_kubernetes_cases.json").read_text())


REFERENCE = load_reference()


def _service(s: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": s["type"]}
    if s["type"] == "ExternalName":
        spec["externalName"] = s["externalName"]
    else:
        spec["clusterIP"] = s["clusterIPs"][0]
        spec["clusterIPs"] = s["clusterIPs"]
        if len(s["clusterIPs"]) > 1:
            spec["ipFamilyPolicy"] = "RequireDualStack"
            spec["ipFamilies"] = ["IPv4", "IPv6"]
    spec["ports"] = [
        {"name": p["name"], "protocol": p["protocol"].upper(), "port": p["port"]}
        for p in s["ports"]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s["name"], "namespace": s["namespace"]},
        "spec": spec,
    }


def _slices(
    name: str, namespace: str, service: str, addresses: list[dict[str, str]], ports: list
) -> list[dict[str, Any]]:
    """One EndpointSlice per address family (the API keeps one family to a slice)."""
    out = []
    for family in ("IPv4", "IPv6"):
        addrs = [a for a in addresses if (":" in a["ip"]) == (family == "IPv6")]
        if not addrs and (family == "IPv6" or addresses != []):
            continue
        endpoints = []
        for a in addrs:
            ep: dict[str, Any] = {"addresses": [a["ip"]], "conditions": {"ready": True}}
            if a.get("hostname"):
                ep["hostname"] = a["hostname"]
            endpoints.append(ep)
        slice_ports = [
            {"name": p.get("name", ""), "protocol": p["protocol"].upper(), "port": p["port"]}
            for p in ports
            if p["port"] != -1
        ]
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name if family == "IPv4" else name + "-v6",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": slice_ports,
            }
        )
    return out


def serve_cluster() -> Cluster:
    """APIConnServeTest (handler_test.go) as manifests."""
    fx = REFERENCE["fixtures"]["APIConnServeTest"]
    docs: list[dict[str, Any]] = [_service(s) for s in fx["services"]]
    for e in fx["endpoints"]:
        (subset,) = e["subsets"]
        docs += _slices(e["sliceName"], e["namespace"], e["service"], subset["addresses"],
                        subset["ports"])  # fmt: skip
    for p in fx["pods"]:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": p["name"], "namespace": p["namespace"], "labels": p["labels"]},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "podIP": p["podIP"], "podIPs": [{"ip": p["podIP"]}]},
            }
        )
    return Cluster.from_dicts(docs)


def serve_namespace_exists(name: str) -> bool:
    """GetNamespaceByName of APIConnServeTest: every name but these two exists."""
    return name not in ("pod-nons", "nsnoexist")


def reverse_cluster() -> Cluster:
    """APIConnReverseTest (reverse_test.go) as manifests."""
    fx = REFERENCE["fixtures"]["APIConnReverseTest"]
    docs: list[dict[str, Any]] = [_service({**s, "type": "ClusterIP"}) for s in fx["services"]]
    slices: dict[str, dict[str, Any]] = {}
    for entries in fx["endpointsReverseIndex"].values():
        for e in entries:
            slices.setdefault(e["slice"], e)
    for e in slices.values():
        docs += _slices(e["slice"], e["namespace"], e["service"], e["addresses"],
                        fx["allPortsOfAllSlices"])  # fmt: skip
    return Cluster.from_dicts(docs)


def _key(rr: dict[str, Any], ttl: bool = True) -> tuple:
    t = rr["type"]
    name = rr["name"] if rr["name"].endswith(".") else rr["name"] + "."
    base = (name, rr["ttl"] if ttl else None, t)
    if t in ("A", "AAAA"):
        return (*base, rr["address"])
    if t == "SRV":
        return (*base, rr["priority"], rr["weight"], rr["port"], rr["target"])
    if t in ("CNAME", "PTR", "NS"):
        return (*base, rr["target"])
    if t == "TXT":
        return (*base, rr["txt"])
    if t == "SOA":
        return (*base, rr["mname"])
    raise AssertionError(f"unknown type {t}")


def check(resp: dict[str, Any] | Response, case: dict[str, Any]) -> None:
    """Compare as upstream's SortAndCheck does (howToCompare): rcode, section lengths, and
    per record owner (case-sensitive), TTL (unless 303), type and the type's key fields;
    sections as multisets."""
    doc = resp.to_dict() if isinstance(resp, Response) else resp
    label = f"{case['qname']} {case['qtype']}"
    assert doc["rcode"] == RCODES.get(case["rcode"], case["rcode"]), (label, doc)
    for ours, theirs in (("answer", "answer"), ("authority", "ns"), ("additional", "extra")):
        want = case.get(theirs, [])
        got = doc[ours]
        assert len(got) == len(want), (label, ours, got, want)
        check_ttl = all(r["ttl"] != 303 for r in want)
        assert collections.Counter(_key(r, check_ttl) for r in got) == collections.Counter(
            _key(r, check_ttl) for r in want
        ), (label, ours, got, want)


def cname_order(doc: dict[str, Any]) -> None:
    """test.CNAMEOrder: a CNAME never comes after a record owned by its target."""
    seen = set()
    for rr in doc["answer"]:
        if rr["type"] == "CNAME":
            assert rr["target"].lower() not in seen, doc["answer"]
        seen.add(rr["name"].lower())


class StubUpstream:
    """The test's canned Upstream.Lookup (upstreamStub in the reference): its answer minus
    CNAMEs owned by the stub qname (as Upstub.Lookup drops them), TC as given."""

    def __init__(self, stub: dict[str, Any]):
        self.stub = stub

    def __call__(self, name: str, qtype: str) -> Response:
        from kproxy_emu.dns.records import Record

        answer = []
        for r in self.stub["answer"]:
            if r["type"] == "CNAME" and r["name"] == self.stub["qname"] and qtype != "CNAME":
                continue
            answer.append(
                Record(
                    r["name"],
                    r["ttl"],
                    r["type"],
                    address=r.get("address", ""),
                    target=r.get("target", ""),
                )
            )
        return Response(name, qtype, "NOERROR", answer, truncated=self.stub["truncated"])


def suite_resolver(suite: dict[str, Any], cluster: Cluster, **extra: Any) -> Resolver:
    cfg = suite["config"]
    namespaces = cfg.get("namespaces", "all")
    return Resolver(
        cluster,
        zones=cfg["zones"],
        pods=cfg.get("podMode", "disabled"),
        ttl=cfg.get("ttl", 5),
        namespaces=() if namespaces == "all" else namespaces,
        ignore_empty_service=cfg.get("ignoreEmptyService", False),
        synced=cfg.get("hasSynced", True),
        namespace_exists=serve_namespace_exists,
        **extra,
    )


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return REFERENCE


@pytest.fixture(scope="session")
def serve_fixture() -> Cluster:
    return serve_cluster()
