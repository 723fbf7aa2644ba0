"""The userspace proxy hop in plain Python: the reference twin of the compiled hop
(``cext/userspace.pyx``, driven by ``dataplane/userspace_backend.py``).

This is the hop as it was first written, one Python iteration per relayed row, asking
``LoadBalancerRR.next_endpoint`` for every pick. A backend switched to it
(``UserspaceBackend.use_reference()``) runs it instead of the compiled hop;
``tests/modes/test_userspace_hop_twin.py`` checks both give the same verdicts, endpoints,
ports, steps, ``proxy_stats`` and balancer state on random clusters and batches.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import KproxyError

if TYPE_CHECKING:
    from ..modes.userspace import UserspaceService
    from .userspace_backend import UserspaceBackend

PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}
CONNECT_LOW, CONNECT_HIGH = 32768, 60999


class ProxyState:
    """What the proxy process holds per flow: TCP connections (client tuple -> endpoint
    and local port of the proxy's own connection), UDP clients (ClientCache: endpoint,
    local port, last packet's time), and the seeded source of connect() ports."""

    def __init__(self, seed: int) -> None:
        self.tcp: dict[tuple[Any, ...], tuple[str, int]] = {}
        self.udp: dict[tuple[Any, ...], list[Any]] = {}
        self.index_of: dict[str, int] = {}
        self.rng = random.Random(f"{seed}/connect")
        # what the proxy did: connections it opened to endpoints (TCP, and UDP sessions),
        # packets it relayed (each crossing the node's hooks a second time), the rules
        # those second crossings evaluated, and packets it had no endpoint for
        self.stats = {"connections": 0, "relayed": 0, "relay_rules": 0, "no_endpoint": 0}

    def connect_port(self) -> int:
        """A local port as connect() picks it: Linux's __inet_hash_connect favours the
        even ports of ip_local_port_range (a random offset; collisions are not checked:
        the port is unique per destination in the kernel anyway)."""
        span = (CONNECT_HIGH - CONNECT_LOW + 1) // 2
        return CONNECT_LOW + 2 * self.rng.randrange(span)


def step(text: str, matched: bool) -> dict[str, Any]:
    return {"table": "userspace", "chain": None, "rule": None, "text": text, "matched": matched}


def reference_hop(
    backend: UserspaceBackend,
    state: ProxyState,
    packets: np.ndarray,
    out: np.ndarray,
    conntrack: Any,
    rng: Any,
) -> tuple[list[dict[str, Any]], dict[int, tuple[int, int]]]:
    """Hand the rows that reached a proxy port to the proxy (userspace_backend's module
    docstring); returns the hop's trace steps and the rows' proxy addresses
    (``last_portals``)."""
    from .._cext import pipeline
    from ..packets import PACKET_DTYPE, Action, Origin, empty_verdicts, ip_to_u32, u32_to_ip

    hop_steps: list[dict[str, Any]] = []
    last_portals: dict[int, tuple[int, int]] = {}
    proxier = backend.proxier
    listeners = {(s.proxy_port, s.protocol): s for s in proxier.services.values()}
    if not listeners:
        return hop_steps, last_portals
    node_ip = backend.node.options.node.primary_ip
    proxy_ips = [ip_to_u32(node_ip)]
    if proxier.listen_ip not in ("0.0.0.0", "::"):
        proxy_ips.append(ip_to_u32(proxier.listen_ip))
    mask = (out["action"] == Action.DNAT) & np.isin(out["dnat_ip"], proxy_ips)
    rows = np.flatnonzero(mask)
    if not len(rows):
        return hop_steps, last_portals
    lb = proxier.load_balancer
    second: list[tuple[int, tuple[Any, ...]]] = []
    node_u32 = ip_to_u32(node_ip)
    for i in rows.tolist():
        v = out[i]
        p = packets[i]
        proto = PROTO_NAMES.get(int(p["proto"]))
        info = listeners.get((int(v["dnat_port"]), proto or ""))
        if info is None:
            continue
        ts = float(p["ts"])
        client = u32_to_ip(int(p["src_ip"]))
        if proto == "UDP":
            key: tuple[Any, ...] = (info.name, int(p["src_ip"]), int(p["src_port"]))
            session = state.udp.get(key)
            if session is not None and ts - session[2] < info.timeout:
                chosen = session[0]
                out_port = session[1]
                how = "the client's session"
            else:
                chosen, out_port, how = _pick(state, lb, info, client, ts)
            if chosen is not None:
                state.udp[key] = [chosen, out_port, ts]
        else:
            key = (int(p["src_ip"]), int(p["src_port"]), int(p["dst_ip"]), int(p["dst_port"]))
            flow = state.tcp.get(key) if bool(v["ct_hit"]) else None
            if flow is not None:
                chosen, out_port = flow
                how = "the connection's"
            else:
                chosen, out_port, how = _pick(state, lb, info, client, ts)
                if chosen is not None:
                    state.tcp[key] = (chosen, out_port)
        proxy = f"{u32_to_ip(int(v['dnat_ip']))}:{int(v['dnat_port'])}"
        last_portals[i] = (int(v["dnat_ip"]), int(v["dnat_port"]))
        if chosen is None:
            state.stats["no_endpoint"] += 1
            out[i]["action"] = Action.ACCEPT
            out[i]["endpoint"] = -1
            hop_steps.append(
                step(
                    f"proxy {info.name} on {proxy}: no endpoints (ErrMissingEndpoints): "
                    f"the {'connection is closed' if proto == 'TCP' else 'datagram dropped'}",
                    True,
                )
            )
            continue
        ep_ip, _, ep_port = chosen.rpartition(":")
        if chosen not in state.index_of:
            if chosen not in backend.endpoints:
                backend.endpoints.append(chosen)
            state.index_of[chosen] = backend.endpoints.index(chosen)
        out[i]["endpoint"] = state.index_of[chosen]
        out[i]["dnat_ip"] = ip_to_u32(ep_ip)
        out[i]["dnat_port"] = int(ep_port)
        out[i]["snat_ip"] = node_u32
        out[i]["snat_port"] = out_port
        hop_steps.append(
            step(
                f"proxy {info.name} on {proxy}: endpoint {chosen} ({how}); "
                f"connects from {node_ip}:{out_port}",
                True,
            )
        )
        second.append(
            (
                i,
                (
                    ts,
                    node_u32,
                    ip_to_u32(ep_ip),
                    out_port,
                    int(ep_port),
                    int(p["proto"]),
                    int(p["tcp_flags"]),
                    int(Origin.HOST),
                    4,
                ),
            )
        )
    if not second:
        return hop_steps, last_portals
    batch = np.array([row for _, row in second], dtype=PACKET_DTYPE)
    out2 = empty_verdicts(len(batch))
    pipeline.run(backend.engine(), batch, out2, conntrack, rng)
    state.stats["relayed"] += len(second)
    state.stats["relay_rules"] += int(out2["rules"].sum())
    for (i, row), v2 in zip(second, out2):
        out[i]["rules"] += v2["rules"]
        out[i]["probes"] += v2["probes"]
        if int(v2["action"]) in (Action.DROP, Action.REJECT):
            out[i]["action"] = int(v2["action"])
        hop_steps.append(
            step(
                f"the proxy's packet {node_ip}:{row[3]} -> {u32_to_ip(row[2])}:{row[4]} "
                f"through the node's hooks: {int(v2['rules'])} rules, "
                f"{'known flow' if v2['ct_hit'] else 'new flow'}, "
                f"{Action(int(v2['action'])).name}",
                True,
            )
        )
    return hop_steps, last_portals


def _pick(
    state: ProxyState, lb: Any, info: UserspaceService, client: str, ts: float
) -> tuple[str | None, int, str]:
    try:
        chosen = lb.next_endpoint(info.name, client, False, now=ts)
    except KproxyError:
        return None, 0, ""
    how = "ClientIP affinity" if lb.last_affinity_hit else "round robin"
    state.stats["connections"] += 1
    return chosen, state.connect_port(), how
