"""The end-to-end trace: one connection through the cluster, every step in order.

``end_to_end(cdp, to=..., from_pod=...)`` answers the troubleshooting story in one call:
the DNS resolution (the pod's stub resolver walking its search path, each query and
answer, and the DNS query itself as a UDP packet to the kube-dns ClusterIP through the
source node's proxy), the source node's proxy (its trace: rules or lookups, DNAT,
masquerade), the route (bridge, host route or overlay, with the MTU), the destination
node's hooks, the NetworkPolicy decisions, the delivery and the reply path back through
each node's conntrack. A failure names the step and why (NXDOMAIN, no endpoints, policy
denied, no route, MTU exceeded). The nodes keep the state the trace leaves (conntrack):
give it a fresh ``ClusterDataplane``.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..packets import ip_to_u32
from .network import DEFAULT_LENGTH, ClusterDataplane

if TYPE_CHECKING:
    from ..dns import Resolver

EXTERNAL_CLIENT = "203.0.113.7"
CLIENT_PORT = 40000
DNS_PORT = 53


def _is_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _split_port(to: str) -> tuple[str, int]:
    host, sep, port = to.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            "expected NAME:PORT, IP:PORT or NAMESPACE/POD:PORT", field="--to", value=to
        )
    return host, int(port)


def end_to_end(
    cdp: ClusterDataplane,
    *,
    to: str,
    from_pod: str | None = None,
    from_external: str | None = None,
    via_node: str | None = None,
    protocol: str = "tcp",
    length: int = DEFAULT_LENGTH,
    resolver: Resolver | None = None,
    all_rules: bool = False,
) -> dict[str, Any]:
    """The end-to-end trace (module docstring) as data. ``to``: a DNS name, an IP, a
    pod (``NAMESPACE/NAME``) or with ``from_external`` a node name, each with ``:PORT``.
    ``from_pod``: ``NAMESPACE/NAME`` of the client pod; ``from_external``: an outside
    client's address, entering at ``via_node`` (default: the node ``to`` names, else the
    first node)."""
    cluster = cdp.cluster
    if (from_pod is None) == (from_external is None):
        raise InputError(
            "give the client: --from-pod NS/NAME or --from-external", field="--from-pod"
        )
    if protocol not in ("tcp", "udp", "sctp"):
        raise InputError("must be tcp, udp or sctp", field="--protocol", value=protocol)
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "from": None,
        "to": to,
        "target": None,
        "mode": cdp.mode,
        "cni": cdp.cni.name,
        "outcome": None,
        "failed": None,
        "steps": steps,
    }

    def fail(step: str, reason: str) -> dict[str, Any]:
        result["failed"] = {"step": step, "reason": reason}
        result["outcome"] = result["outcome"] or "failed"
        return result

    host, port = _split_port(to)
    node_name: str | None = None
    if from_pod is not None:
        ns, sep, name = from_pod.partition("/")
        pod = cluster.pods.get((ns, name)) if sep else None
        if pod is None:
            raise InputError("no such Pod in the manifests", field="--from-pod", value=from_pod)
        ips = [ip for ip in pod.pod_ips if ":" not in ip]
        if not ips or pod.host_network:
            raise InputError("the pod has no IPv4 pod address", field="--from-pod", value=from_pod)
        client_ip, origin = ips[0], "pod"
        node_name = pod.node_name if pod.node_name in cdp.node_index else None
        if node_name is None:
            owner, _, _ = cdp.route(np.array([ip_to_u32(client_ip)], np.uint32))
            if owner[0] < 0:
                raise InputError(
                    "cannot tell the pod's node (no nodeName, address in no node's pod CIDR)",
                    field="--from-pod",
                    value=from_pod,
                )
            node_name = cdp.node_names[int(owner[0])]
        result["from"] = {"kind": "pod", "pod": from_pod, "ip": client_ip, "node": node_name}
    else:
        client_ip, origin = str(from_external), "external"
        if not _is_ip(client_ip):
            raise InputError("not an IPv4 address", field="--from-external", value=client_ip)
    t = 0.0
    sport = CLIENT_PORT

    # ---- the destination address
    if "/" in host:  # a pod
        ns, _, name = host.partition("/")
        target_pod = cluster.pods.get((ns, name))
        if target_pod is None or not [ip for ip in target_pod.pod_ips if ":" not in ip]:
            raise InputError("no such Pod (with an IPv4 address)", field="--to", value=host)
        dst_ip = next(ip for ip in target_pod.pod_ips if ":" not in ip)
    elif _is_ip(host):
        dst_ip = host
    elif host in cdp.node_index:
        dst_ip = cluster.node(host).ips[0]
        via_node = via_node or host
    else:  # a DNS name
        from ..dns import Resolver
        from ..dns.search import pod_search_path, stub_resolve

        resolver = resolver or Resolver(cluster)
        if from_pod is None:
            return fail("dns", "an outside client does not use the cluster DNS: give an address")
        zone = resolver.primary_zone.rstrip(".")
        search = pod_search_path(from_pod.partition("/")[0], zone)
        walk = stub_resolve(resolver.query, host, "A", search, ndots=5)
        answers = [
            r.address for r in (walk.response.answer if walk.response else []) if r.type == "A"
        ]
        dns_step: dict[str, Any] = {
            "step": "dns",
            "name": host,
            "search": search,
            "ndots": 5,
            "tries": walk.tries,
            "status": walk.status,
            "answered": walk.answered,
            "answer": answers,
            "ok": walk.status == "answered" and bool(answers),
        }
        steps.append(dns_step)
        # the query itself: a UDP packet to the kube-dns ClusterIP through the node's proxy
        svc = cluster.services.get(("kube-system", "kube-dns"))
        dns_ip = svc.cluster_ip if svc is not None and _is_ip(svc.cluster_ip) else None
        if dns_ip is None:
            dns_step["query_packet"] = None
            dns_step["note"] = "no kube-system/kube-dns Service: the query's path is not traced"
        else:
            qpkt = f"udp {client_ip}:{sport} -> {dns_ip}:{DNS_PORT} from=pod"
            q = cdp.trace(qpkt, node_name, time=t, commit=True, all_rules=all_rules)
            dns_step["query_packet"] = q
            t += 1.0
            sport += 1
            if q["failed"] is not None:
                dns_step["ok"] = False
                return fail(
                    "dns",
                    f"the DNS query to {dns_ip}:53 failed at {q['failed']['step']}: "
                    f"{q['failed']['reason']}",
                )
        if not dns_step["ok"]:
            return fail(
                "dns",
                f"{walk.status}: {host} ({walk.queries} queries: "
                f"{', '.join(x['qname'] for x in walk.tries)})",
            )
        dst_ip = answers[0]
    result["target"] = f"{dst_ip}:{port}"
    if from_pod is None:
        entry = via_node or cdp.node_names[0]
        if entry not in cdp.node_index:
            raise InputError("not a node of the cluster", field="--via-node", value=entry)
        node_name = entry
        result["from"] = {"kind": "external", "ip": client_ip, "node": entry}
    pkt = f"{protocol} {client_ip}:{sport} -> {dst_ip}:{port} from={origin}"
    fwd = cdp.trace(pkt, node_name, time=t, length=length, commit=True, all_rules=all_rules)
    t += 1.0
    steps.extend(fwd["steps"])
    result["outcome"] = fwd["outcome"]
    result["path"] = fwd["path"]
    result["delivered"] = {
        "node": fwd["node"],
        "address": fwd["delivered_to"],
        "pod": fwd["pod"],
        "source_seen": fwd["source_seen"],
    }
    if fwd["failed"] is not None:
        return fail(fwd["failed"]["step"], fwd["failed"]["reason"])
    if fwd["outcome"] != "delivered":
        return result  # left the cluster: no reply traced
    # ---- the reply: from the endpoint back to the source it saw, through each conntrack
    assert fwd["delivered_to"] is not None and fwd["source_seen"] is not None
    rfrom = "host" if any(s.get("kind") == "host" for s in fwd["steps"]) else "pod"
    rpkt = _reply_packet(protocol, fwd["delivered_to"], fwd["source_seen"], rfrom)
    rep = cdp.trace(rpkt, fwd["node"], time=t, commit=True, all_rules=all_rules)
    reply_step: dict[str, Any] = {"step": "reply", "packet": rpkt, "trace": rep, "ok": True}
    steps.append(reply_step)
    expect_src = f"{dst_ip}:{port}"
    expect_dst = f"{client_ip}:{sport}"
    got_src, got_dst = rep["source_seen"], rep["delivered_to"]
    if rep["failed"] is not None:
        reply_step["ok"] = False
        return fail(
            "reply", f"the reply failed at {rep['failed']['step']}: {rep['failed']['reason']}"
        )
    relayed = (
        cdp.mode == "userspace"
        and rep["outcome"] == "delivered"
        and rep["node"] == node_name
        and got_dst == fwd["source_seen"]
    )
    if relayed:  # the proxy's second connection: it copies the answer to the client's
        reply_step["text"] = (
            f"reply {got_src} -> {got_dst} reaches the userspace proxy on {node_name}, "
            f"which answers the client on its own connection from {expect_src}"
        )
        return result
    socket_lb = (
        cdp.mode == "ebpf"
        and from_pod is not None
        and (got_src, got_dst) == (fwd["delivered_to"], expect_dst)
    )
    if socket_lb:  # Cilium's socket LB: translated at connect(), undone at the socket
        reply_step["text"] = (
            f"reply {got_src} -> {got_dst} reaches the client's socket, which reports "
            f"{expect_src} as its peer (socket LB: connect() was translated, recvmsg and "
            "getpeername translate back)"
        )
        return result
    if (got_src, got_dst) != (expect_src, expect_dst):
        reply_step["ok"] = False
        return fail(
            "reply",
            f"the reply reaches the client as {got_src} -> {got_dst}, not from {expect_src}: "
            "the client drops it (the reply took another path than the request)",
        )
    reply_step["text"] = f"reply {got_src} -> {got_dst} reaches the client ({rep['outcome']})"
    return result


def _reply_packet(protocol: str, src: str, dst: str, origin: str) -> str:
    flags = " flags=SA" if protocol == "tcp" else ""
    return f"{protocol} {src} -> {dst}{flags} from={origin}"
