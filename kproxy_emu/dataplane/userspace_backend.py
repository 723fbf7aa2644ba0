"""The userspace mode behind the Dataplane facade.

The node's iptables are the userspace proxier's chains (``modes/userspace.py``); packets
walk them in the chain VM (ChainEngine) on the one packet pipeline, where a portal rule
sends a service's packet to the proxy port on the node (REDIRECT, lowered as a DNAT to the
node's primary address; DNAT for the node's own traffic). The proxy itself is modelled
here, at the backend level, after the pipeline ran the batch:

- a packet that reached a proxy port is handed to that service port's proxy: TCP, a new
  connection (no conntrack entry yet) asks the round-robin balancer for an endpoint
  (``NextEndpoint(service, client, false)``: the first dial succeeds, endpoints are not
  modelled as failing), a packet of a known connection keeps its endpoint; UDP, a client
  (address and port) keeps its endpoint while its packets come less than the UDP idle
  timeout (``--udp-timeout``, 250 ms) apart (``ClientCache``), else it asks again;
- the proxy then sends the bytes on its own connection from the node to the endpoint: the
  verdict row shows that connection (``dnat`` the endpoint, ``snat`` the node's primary
  address and the connection's local port, chosen as Linux's ``connect()`` chooses: a
  random even port of 32768-60999, seeded), so the endpoint sees the node's address as
  the source (this mode's known source-IP loss);
- that second packet goes through the node's hooks too (OUTPUT, POSTROUTING, conntrack: a
  second tracked connection); its rules and probes are added to the row's, and a DROP or
  REJECT there is the row's verdict. The second packets of a batch run after its client
  packets (each with its own timestamp);
- no endpoint (``ErrMissingEndpoints``): the proxy accepted and closes the connection
  (TCP) or drops the datagram (UDP): the row is ACCEPT (delivered to the proxy) with no
  endpoint.

Traces run the same hop (``proxy_hop``) and show it as a ``userspace`` step.
"""

from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from ..errors import KproxyError
from ..modes.userspace import LoadBalancerRR, UserspaceProxier, UserspaceService
from ..netfilter.iptables_text import render, render_sorted
from ..netfilter.ruleset import Ruleset
from .sync import SyncResult

if TYPE_CHECKING:
    from .backend import NodeContext, UserspaceOptions

PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}
CONNECT_LOW, CONNECT_HIGH = 32768, 60999


class UserspaceBackend:
    mode: ClassVar[str] = "userspace"
    formats: ClassVar[tuple[str, ...]] = ("restore", "save")

    def __init__(self, node: NodeContext, options: UserspaceOptions):
        self.node = node
        self.options = options
        listen = node.config.bind_address or "0.0.0.0"
        if (":" in listen) != (node.family == "IPv6"):
            listen = "::" if node.family == "IPv6" else "0.0.0.0"
        self.proxier = UserspaceProxier(
            node.options,
            listen_ip=listen,
            port_range=options.port_range,
            udp_idle_timeout=options.udp_idle_timeout,
            seed=node.seed,
        )
        self.endpoints: list[str] = []
        self._tables: Ruleset | None = None
        self._lowered: Any = None
        self._engine: Any = None
        self._recent: Any = None
        self._nth_counters: np.ndarray | None = None
        self._now = 0.0
        self._state = _ProxyState(node.seed)
        self.hop_steps: list[dict[str, Any]] = []  # the last hop's, for traces
        # the last batch's rows the proxy took: row -> the proxy address (ip, port) the
        # portal rules sent it to, before the row's verdict was rewritten to the endpoint
        # (the client's connection ends there: bench builds the proxy's replies from it)
        self.last_portals: dict[int, tuple[int, int]] = {}

    # ---------------------------------------------------------------- rules
    @property
    def tables(self) -> Ruleset:
        """The node's iptables: the userspace proxier's chains as they stand."""
        if self._tables is None:
            self._tables = self.proxier.ruleset()
        return self._tables

    @property
    def ruleset(self) -> Ruleset:
        """The userspace rules as the last sync left them (the userspace proxier writes
        rule by rule: there is no separate full-sync payload)."""
        return self.tables

    def view_changed(self, changed: set[tuple[str, str]] | None = None) -> None:
        pass  # the next sync reads the view

    def sync(self, changed: set[tuple[str, str]] | None) -> SyncResult:
        res = self.proxier.sync(self.node.view, changed, now=self._now)
        self._tables = res.payload
        self._lowered = None
        self._engine = None
        self._nth_counters = None
        nat = res.payload.tables.get("nat")
        return SyncResult(
            full=res.full,
            payload=res.payload,
            text=res.text,
            changed=set() if changed is None else set(changed),
            error=res.error,
            extra={
                "nat_rules": len(nat.rules) if nat else 0,
                "proxies": len(self.proxier.services),
                "proxy_errors": len(res.errors),
            },
        )

    def render(self, sorted: bool = False, format: str = "restore") -> str:
        """The userspace rules as restore input, in kube-proxy's argument order
        (``sorted``: the tables by name, the chains grouped); ``save``: what
        iptables-save prints for them."""
        if format == "save":
            from ..netfilter.iptables_live import render_live

            return render_live(self.tables)
        return render_sorted(self.tables) if sorted else render(self.tables)

    # ---------------------------------------------------------------- packets
    @property
    def lowered(self) -> Any:
        if self._lowered is None:
            from .lowering import lower

            self._lowered = lower(
                self.tables,
                self.node.options.family,
                self.endpoints,
                redirect_ip=self.node.options.node.primary_ip,
            )
        return self._lowered

    def prepare(self) -> None:
        _ = self.lowered

    def reset_state(self) -> None:
        self._recent = None
        self._nth_counters = None
        self._engine = None
        self._now = 0.0
        self._state = _ProxyState(self.node.seed)
        # the balancer's round robins and affinities are the proxy process's memory
        self.proxier.load_balancer = _fresh_balancer(self.proxier)

    def engine(self) -> Any:
        if self._engine is None:
            from .iptables_backend import chain_engine, recent_lists

            low = self.lowered
            self._recent = recent_lists(self._recent, low.recent_lists)
            if self._nth_counters is None:
                self._nth_counters = low.nth_counters.copy()
            self._engine = chain_engine(
                low, self.node.options, nth_counters=self._nth_counters, recent=self._recent
            )
        return self._engine

    def advance_clock(self, now: float) -> None:
        pass  # the balancer reads the time at each pick

    def clock_snapshot(self, now: float) -> object:
        return None

    def restore_clock(self, snap: object) -> None:
        pass

    def snapshot_state(self) -> object:
        """The proxy's state a packet changes (for a trace that must leave it as it was)."""
        return (copy.deepcopy(self._state), copy.deepcopy(self.proxier.load_balancer))

    def restore_state(self, snap: object) -> None:
        state, lb = cast("tuple[_ProxyState, LoadBalancerRR]", copy.deepcopy(snap))
        self._state = state
        self.proxier.load_balancer = lb

    @property
    def proxy_stats(self) -> dict[str, int]:
        """What the proxy did since the node booted (``reset_state``): ``connections``
        it opened to endpoints (TCP connections and UDP sessions, each a second socket
        besides the client's), packets ``relayed`` (each copied through the proxy and
        crossing the node's hooks a second time), ``relay_rules`` those crossings
        evaluated, and packets with ``no_endpoint``."""
        return dict(self._state.stats)

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack: Any, rng: Any) -> None:
        from .._cext import pipeline

        pipeline.run(self.engine(), packets, out, conntrack, rng)
        self.proxy_hop(packets, out, conntrack, rng)

    # ---------------------------------------------------------------- the proxy
    def proxy_hop(self, packets: np.ndarray, out: np.ndarray, conntrack: Any, rng: Any) -> None:
        """Hand the rows that reached a proxy port to the proxy (module docstring)."""
        from .._cext import pipeline
        from ..packets import PACKET_DTYPE, Action, Origin, empty_verdicts, ip_to_u32, u32_to_ip

        self.hop_steps = []
        self.last_portals = {}
        if len(packets):
            self._now = max(self._now, float(packets["ts"][-1]))
        listeners = self._listeners()
        if not listeners:
            return
        node_ip = self.node.options.node.primary_ip
        proxy_ips = [ip_to_u32(node_ip)]
        if self.proxier.listen_ip not in ("0.0.0.0", "::"):
            proxy_ips.append(ip_to_u32(self.proxier.listen_ip))
        mask = (out["action"] == Action.DNAT) & np.isin(out["dnat_ip"], proxy_ips)
        rows = np.flatnonzero(mask)
        if not len(rows):
            return
        lb = self.proxier.load_balancer
        state = self._state
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
                    chosen, out_port, how = self._pick(lb, info, client, ts)
                if chosen is not None:
                    state.udp[key] = [chosen, out_port, ts]
            else:
                key = (int(p["src_ip"]), int(p["src_port"]), int(p["dst_ip"]), int(p["dst_port"]))
                flow = state.tcp.get(key) if bool(v["ct_hit"]) else None
                if flow is not None:
                    chosen, out_port = flow
                    how = "the connection's"
                else:
                    chosen, out_port, how = self._pick(lb, info, client, ts)
                    if chosen is not None:
                        state.tcp[key] = (chosen, out_port)
            proxy = f"{u32_to_ip(int(v['dnat_ip']))}:{int(v['dnat_port'])}"
            self.last_portals[i] = (int(v["dnat_ip"]), int(v["dnat_port"]))
            if chosen is None:
                state.stats["no_endpoint"] += 1
                out[i]["action"] = Action.ACCEPT
                out[i]["endpoint"] = -1
                self.hop_steps.append(
                    _step(
                        f"proxy {info.name} on {proxy}: no endpoints (ErrMissingEndpoints): "
                        f"the {'connection is closed' if proto == 'TCP' else 'datagram dropped'}",
                        True,
                    )
                )
                continue
            ep_ip, _, ep_port = chosen.rpartition(":")
            if chosen not in state.index_of:
                if chosen not in self.endpoints:
                    self.endpoints.append(chosen)
                state.index_of[chosen] = self.endpoints.index(chosen)
            out[i]["endpoint"] = state.index_of[chosen]
            out[i]["dnat_ip"] = ip_to_u32(ep_ip)
            out[i]["dnat_port"] = int(ep_port)
            out[i]["snat_ip"] = node_u32
            out[i]["snat_port"] = out_port
            self.hop_steps.append(
                _step(
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
            return
        batch = np.array([row for _, row in second], dtype=PACKET_DTYPE)
        out2 = empty_verdicts(len(batch))
        pipeline.run(self.engine(), batch, out2, conntrack, rng)
        state.stats["relayed"] += len(second)
        state.stats["relay_rules"] += int(out2["rules"].sum())
        for (i, row), v2 in zip(second, out2):
            out[i]["rules"] += v2["rules"]
            out[i]["probes"] += v2["probes"]
            if int(v2["action"]) in (Action.DROP, Action.REJECT):
                out[i]["action"] = int(v2["action"])
            self.hop_steps.append(
                _step(
                    f"the proxy's packet {node_ip}:{row[3]} -> {u32_to_ip(row[2])}:{row[4]} "
                    f"through the node's hooks: {int(v2['rules'])} rules, "
                    f"{'known flow' if v2['ct_hit'] else 'new flow'}, "
                    f"{Action(int(v2['action'])).name}",
                    True,
                )
            )

    def _listeners(self) -> dict[tuple[int, str], UserspaceService]:
        return {(s.proxy_port, s.protocol): s for s in self.proxier.services.values()}

    def _pick(
        self, lb: Any, info: UserspaceService, client: str, ts: float
    ) -> tuple[str | None, int, str]:
        try:
            chosen = lb.next_endpoint(info.name, client, False, now=ts)
        except KproxyError:
            return None, 0, ""
        how = "ClientIP affinity" if lb.last_affinity_hit else "round robin"
        self._state.stats["connections"] += 1
        return chosen, self._state.connect_port(), how


class _ProxyState:
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


def _step(text: str, matched: bool) -> dict[str, Any]:
    return {"table": "userspace", "chain": None, "rule": None, "text": text, "matched": matched}


def _fresh_balancer(proxier: UserspaceProxier) -> Any:
    """The balancer after the proxy restarted: endpoints first, then the services (as a
    sync feeds them), round robins and affinities from the start, the same seed."""
    from ..modes.userspace import endpoints_objects

    lb = LoadBalancerRR(proxier.seed)
    if proxier.view is not None:
        lb.on_endpoints(endpoints_objects(proxier.view))
    for info in proxier.services.values():
        lb.new_service(info.name, info.affinity_type, info.sticky_max_age_seconds)
    return lb
