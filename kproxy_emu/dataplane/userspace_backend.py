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
import functools
import ipaddress
import random
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from ..errors import KproxyError
from ..modes.userspace import LoadBalancerRR, UserspaceProxier
from ..netfilter.iptables_text import render, render_sorted
from ..netfilter.ruleset import Ruleset
from .sync import SyncResult
from .userspace_reference import ProxyState, reference_hop

if TYPE_CHECKING:
    from .backend import NodeContext, UserspaceOptions


class UserspaceBackend:
    mode: ClassVar[str] = "userspace"
    formats: ClassVar[tuple[str, ...]] = ("restore", "save")
    netfilter_conntrack: ClassVar[bool] = True

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
        self._compiled = _CompiledProxy(node.seed)
        self._listen_version = 0  # bumped by each sync: the listeners may have changed
        self._fresh: LoadBalancerRR | None = None  # the balancer a restart starts with
        # the last hop's records, read by hop_steps and last_portals
        self._last: tuple[Any, ...] | None = None
        # the Python twin of the hop, when switched to it (use_reference)
        self._reference: ProxyState | None = None
        self._ref_steps: list[dict[str, Any]] = []
        self._ref_portals: dict[int, tuple[int, int]] = {}

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
        self._listen_version += 1
        self._fresh = None
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
        self._loaded()  # the compiled proxy's listeners and balancer state

    def reset_state(self) -> None:
        self._recent = None
        self._nth_counters = None
        self._engine = None
        self._now = 0.0
        self._last = None
        if self._reference is not None:
            self._reference = ProxyState(self.node.seed)
        # the proxy process restarts: the old balancer keeps what it was (written back
        # by its compiled proxy if it is ever read)
        self._compiled.restart()
        # the balancer's round robins and affinities are the proxy process's memory
        if self._fresh is None:  # built once per sync, cloned at each restart
            self._fresh = _fresh_balancer(self.proxier)
        self.proxier.load_balancer = self._fresh._clone()

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
        if self._reference is not None:
            return (copy.deepcopy(self._reference), copy.deepcopy(self.proxier.load_balancer))
        cp = self._loaded()
        return (cp.proxy, cp.proxy.snapshot())

    def restore_state(self, snap: object) -> None:
        if self._reference is not None:
            state, lb = cast("tuple[ProxyState, LoadBalancerRR]", copy.deepcopy(snap))
            self._reference = state
            self.proxier.load_balancer = lb
            return
        proxy, saved = cast("tuple[Any, Any]", snap)
        cp = self._compiled
        if proxy is not cp.proxy or cp.lb is not self.proxier.load_balancer:
            raise KproxyError("the proxy's state changed under the snapshot (a reset or sync)")
        proxy.restore(saved)
        cp.mark_pending()

    @property
    def proxy_stats(self) -> dict[str, int]:
        """What the proxy did since the node booted (``reset_state``): ``connections``
        it opened to endpoints (TCP connections and UDP sessions, each a second socket
        besides the client's), packets ``relayed`` (each copied through the proxy and
        crossing the node's hooks a second time), ``relay_rules`` those crossings
        evaluated, and packets with ``no_endpoint``."""
        if self._reference is not None:
            return dict(self._reference.stats)
        return dict(zip(STAT_NAMES, (int(x) for x in self._compiled.proxy.stats)))

    def use_reference(self) -> None:
        """Run the proxy hop in plain Python from now on (``userspace_reference.py``, the
        compiled hop's twin; for tests): the proxy restarts (``reset_state``)."""
        self._reference = ProxyState(self.node.seed)
        self.reset_state()

    def process(self, packets: np.ndarray, out: np.ndarray, conntrack: Any, rng: Any) -> None:
        from .._cext import pipeline

        pipeline.run(self.engine(), packets, out, conntrack, rng)
        self.proxy_hop(packets, out, conntrack, rng)

    # ---------------------------------------------------------------- the proxy
    def proxy_hop(self, packets: np.ndarray, out: np.ndarray, conntrack: Any, rng: Any) -> None:
        """Hand the rows that reached a proxy port to the proxy (module docstring): one
        compiled pass over the rows, then the proxy's own packets through the node's
        hooks in one more ``pipeline.run``. ``hop_steps`` and ``last_portals`` are built
        from the hop's records when read."""
        from .._cext import pipeline
        from .._cext.userspace import HOP_BAD_ENDPOINT, HOP_NO_MEMORY, RECORD_DTYPE
        from ..packets import PACKET_DTYPE, Action, empty_verdicts, ip_to_u32

        self._last = None
        if len(packets):
            self._now = max(self._now, float(packets["ts"][-1]))
        if self._reference is not None:
            self._ref_steps, self._ref_portals = reference_hop(
                self, self._reference, packets, out, conntrack, rng
            )
            return
        cp = self._loaded()
        if cp.listen is None:
            return
        n = len(packets)
        packets = np.ascontiguousarray(packets)
        records = np.empty(n, RECORD_DTYPE)
        second = np.empty(n, PACKET_DTYPE)
        second_rows = np.empty(n, np.int64)
        new_slots = np.empty(n, np.int32)
        node_u32 = ip_to_u32(self.node.options.node.primary_ip)
        listen_ip = self.proxier.listen_ip
        listen_u32 = 0 if listen_ip in ("0.0.0.0", "::") else ip_to_u32(listen_ip)
        cp.sync_endpoint_table(self.endpoints)
        nrec, nsec, nnew, err = cp.proxy.hop(
            packets, out, node_u32, listen_u32, node_u32, cp.listen, len(self.endpoints),
            records, second, second_rows, new_slots,
        )  # fmt: skip
        if nnew:
            cp.endpoints_assigned(self.endpoints, new_slots[:nnew])
        if nrec:
            cp.mark_pending()
        if err == HOP_NO_MEMORY:
            raise MemoryError("the userspace proxy's tables")
        if err == HOP_BAD_ENDPOINT:
            chosen = cp.slot_strings[int(records[nrec - 1]["slot"])]
            ip_to_u32(chosen.rpartition(":")[0])  # raises what the Python hop raised
            raise KproxyError(f"endpoint {chosen!r} is not an IPv4 address")
        records = records[:nrec]
        rows = second_rows[:nsec]
        out2 = empty_verdicts(nsec)
        if nsec:
            pipeline.run(self.engine(), second[:nsec], out2, conntrack, rng)
            stats = cp.proxy.stats
            stats[1] += nsec
            stats[2] += int(out2["rules"].sum())
            out["rules"][rows] += out2["rules"]
            out["probes"][rows] += out2["probes"]
            dead = (out2["action"] == Action.DROP) | (out2["action"] == Action.REJECT)
            out["action"][rows[dead]] = out2["action"][dead]
        self._last = (cp, records, second[:nsec], out2)

    def _loaded(self) -> _CompiledProxy:
        """The compiled proxy, its listeners and balancer state current."""
        cp = self._compiled
        if cp.listen_version != self._listen_version:
            cp.set_listeners(self.proxier.services.values(), self._listen_version)
        cp.ensure_loaded(self.proxier.load_balancer)
        return cp

    @property
    def hop_steps(self) -> list[dict[str, Any]]:
        """The last hop's trace steps: per row the proxy took, what it did, then each of
        the proxy's own packets through the node's hooks."""
        if self._reference is not None:
            return self._ref_steps
        if self._last is None:
            return []
        from .._cext.userspace import HOW_NONE
        from ..packets import Action, u32_to_ip

        cp, records, second, out2 = self._last
        node_ip = self.node.options.node.primary_ip
        steps = []
        for r in records:
            name = cp.names[int(r["sid"])]
            proxy = f"{u32_to_ip(int(r['portal_ip']))}:{int(r['portal_port'])}"
            if int(r["how"]) == HOW_NONE:
                closed = "connection is closed" if int(r["proto"]) == 6 else "datagram dropped"
                text = f"proxy {name} on {proxy}: no endpoints (ErrMissingEndpoints): the {closed}"
            else:
                text = (
                    f"proxy {name} on {proxy}: endpoint {cp.slot_strings[int(r['slot'])]} "
                    f"({HOW_TEXT[int(r['how'])]}); connects from {node_ip}:{int(r['out_port'])}"
                )
            steps.append(_step(text, True))
        for q, v2 in zip(second, out2):
            steps.append(
                _step(
                    f"the proxy's packet {node_ip}:{int(q['src_port'])} -> "
                    f"{u32_to_ip(int(q['dst_ip']))}:{int(q['dst_port'])} "
                    f"through the node's hooks: {int(v2['rules'])} rules, "
                    f"{'known flow' if v2['ct_hit'] else 'new flow'}, "
                    f"{Action(int(v2['action'])).name}",
                    True,
                )
            )
        return steps

    @property
    def last_portal_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``last_portals`` as arrays: the rows, the proxy addresses and ports."""
        if self._reference is not None or self._last is None:
            portals = self.last_portals
            return (
                np.fromiter(portals, np.int64, len(portals)),
                np.fromiter((ip for ip, _ in portals.values()), np.uint32, len(portals)),
                np.fromiter((port for _, port in portals.values()), np.uint16, len(portals)),
            )
        records = self._last[1]
        return (
            records["row"].copy(),
            records["portal_ip"].copy(),
            records["portal_port"].copy(),
        )

    @property
    def last_portals(self) -> dict[int, tuple[int, int]]:
        """The last batch's rows the proxy took: row -> the proxy address (ip, port) the
        portal rules sent it to, before the row's verdict was rewritten to the endpoint
        (the client's connection ends there: bench builds the proxy's replies from it)."""
        if self._reference is not None:
            return self._ref_portals
        if self._last is None:
            return {}
        records = self._last[1]
        return {
            int(r): (int(ip), int(port))
            for r, ip, port in zip(
                records["row"].tolist(),
                records["portal_ip"].tolist(),
                records["portal_port"].tolist(),
            )
        }


STAT_NAMES = ("connections", "relayed", "relay_rules", "no_endpoint")
HOW_TEXT = {
    1: "round robin",
    2: "ClientIP affinity",
    3: "the connection's",
    4: "the client's session",
}
PROTO_INDEX = {"TCP": 0, "UDP": 1, "SCTP": 2}


class _CompiledProxy:
    """The backend's side of the compiled proxy (``_cext.userspace.Proxy``): the numbering
    of service ports (ids) and endpoint strings (slots), the listeners as an array, and
    the balancer's state loaded into the compiled one when ``LoadBalancerRR`` changed
    (its ``_version``) and written back into it when it is next read (``_pull``). The
    numbering outlives the proxy process (``restart``: a new compiled proxy)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.names: list[str] = []
        self.name_ids: dict[str, int] = {}
        self.slot_strings: list[str] = []
        self.slot_ids: dict[str, int] = {}
        self._slot_ip: list[int] = []
        self._slot_port: list[int] = []
        self._slot_bad: list[int] = []
        self.listen: np.ndarray | None = None
        self.listen_version = -1
        self._timeouts: dict[int, float] = {}
        self._lb_ref: Any = None
        self.lb_version = -1
        self._sid_spn: dict[int, Any] = {}
        self._foreign: list[tuple[str, Any]] = []
        self._ep_index: dict[str, int] = {}
        self._ep_seen = 0
        self._loaded_names = -1
        self.restart()

    def restart(self) -> None:
        """The proxy process restarts: a new compiled proxy (no flows, sessions, counts;
        the connect() port stream from its seed), the balancer to be loaded again. A
        balancer the old one still has picks for keeps them (``mark_pending``)."""
        from .._cext.userspace import Proxy

        old = getattr(self, "proxy", None)
        self.proxy = Proxy()
        _, state, _ = random.Random(f"{self.seed}/connect").getstate()
        self.proxy.reset(list(state[:624]), state[624])
        self._lb_ref = None
        self.lb_version = -1
        self._sid_spn = {}
        self._foreign = []
        if old is not None:
            self.proxy.set_slots(self._slot_ip, self._slot_port, self._slot_bad, old.slot_index)

    @property
    def lb(self) -> LoadBalancerRR | None:
        return self._lb_ref() if self._lb_ref is not None else None

    def _sid(self, name: str) -> int:
        sid = self.name_ids.get(name)
        if sid is None:
            sid = self.name_ids[name] = len(self.names)
            self.names.append(name)
        return sid

    def _slot(self, endpoint: str) -> int:
        slot = self.slot_ids.get(endpoint)
        if slot is None:
            self._add_slots([endpoint])
            slot = self.slot_ids[endpoint]
        return slot

    def _add_slots(self, endpoints: list[str]) -> None:
        """Number the ``host:port`` strings not numbered yet (hosts parsed in one call)."""
        from ..packets import ip_to_u32

        new = [e for e in dict.fromkeys(endpoints) if e not in self.slot_ids]
        if not new:
            return
        parts = [e.rpartition(":") for e in new]
        try:
            ips = ip_to_u32([h for h, _, _ in parts]).tolist()
            ports = [int(p) for _, _, p in parts]
            bad = [0] * len(new)
        except (KproxyError, ValueError):
            ips, ports, bad = [], [], []
            for host, _, port in parts:
                try:
                    ip, port_n = ip_to_u32(host), int(port)
                    ips.append(ip)
                    ports.append(port_n)
                    bad.append(0)
                except (KproxyError, ValueError):
                    ips.append(0)
                    ports.append(0)
                    bad.append(1)
        for e in new:
            self.slot_ids[e] = len(self.slot_strings)
            self.slot_strings.append(e)
        self._slot_ip += ips
        self._slot_port += [p & 0xFFFF for p in ports]
        self._slot_bad += bad

    def set_listeners(self, services: Any, version: int) -> None:
        """The listeners (proxy port and protocol -> service id), as the proxier holds
        them after a sync; later ones win, as in a dict built from them."""
        listen = np.full((3, 65536), -1, np.int32)
        timeouts: dict[int, float] = {}
        count = 0
        for info in services:
            proto = PROTO_INDEX.get(info.protocol)
            if proto is None or not 0 <= info.proxy_port <= 65535:
                continue
            sid = self._sid(info.name)
            listen[proto, info.proxy_port] = sid
            timeouts[sid] = float(info.timeout)
            count += 1
        self.listen = listen if count else None
        self.listen_version = version
        if timeouts != self._timeouts or len(self.names) != self._loaded_names:
            self._timeouts = timeouts
            self.lb_version = -1  # new names or timeouts: load again

    def ensure_loaded(self, lb: LoadBalancerRR) -> None:
        """The balancer's state into the compiled proxy, when it changed since the last
        load (a sync, a pick from Python) or is another balancer."""
        if self.lb is lb and lb._version == self.lb_version:
            return
        old = self.lb
        if old is not None and old is not lb:
            old._sync()  # the old balancer keeps what this proxy did to it
        lb._sync()
        from ..packets import ip_to_u32

        services = lb._services
        for spn in services:
            self._sid(str(spn))
        self._add_slots([e for state in services.values() for e in state.endpoints])
        n = len(self.names)
        present = np.zeros(n, np.uint8)
        sticky = np.zeros(n, np.uint8)
        ttl = np.zeros(n, np.int64)
        index = np.zeros(n, np.int32)
        ep_off = np.zeros(n, np.int32)
        n_ep = np.zeros(n, np.int32)
        timeout = np.zeros(n, np.float64)
        for sid, t in self._timeouts.items():
            timeout[sid] = t
        ep_slots: list[int] = []
        aff_sid: list[int] = []
        aff_client: list[int] = []
        aff_slot: list[int] = []
        aff_last: list[float] = []
        aff_foreign: list[int] = []
        self._sid_spn = {}
        self._foreign = []
        for spn, state in services.items():
            sid = self.name_ids[str(spn)]
            self._sid_spn[sid] = spn
            present[sid] = 1
            sticky[sid] = state.sticky
            ttl[sid] = state.ttl_seconds
            index[sid] = state.index
            ep_off[sid] = len(ep_slots)
            n_ep[sid] = len(state.endpoints)
            ep_slots.extend(self._slot(e) for e in state.endpoints)
            for ip, a in state.affinity_map.items():
                aff_sid.append(sid)
                aff_slot.append(self._slot(a.endpoint))
                aff_last.append(float(a.last_used))
                if _is_ipv4(ip):
                    aff_client.append(ip_to_u32(ip))
                    aff_foreign.append(-1)
                else:
                    aff_client.append(0)
                    aff_foreign.append(len(self._foreign))
                    self._foreign.append((ip, a))
        self._push_slots()
        p = self.proxy
        p.load_services(present, sticky, ttl, index, ep_off, n_ep, ep_slots, timeout)
        p.load_affinity(aff_sid, aff_client, aff_slot, aff_last, aff_foreign)
        p.last_affinity_hit = lb._last_affinity_hit
        self._lb_ref = weakref.ref(lb)
        self.lb_version = lb._version
        self._loaded_names = n

    def _push_slots(self) -> None:
        dp = self.proxy.slot_index
        known = np.full(len(self.slot_strings), -1, np.int32)
        known[: len(dp)] = dp
        for k in range(len(dp), len(self.slot_strings)):
            known[k] = self._ep_index.get(self.slot_strings[k], -1)
        self.proxy.set_slots(self._slot_ip, self._slot_port, self._slot_bad, known)

    def sync_endpoint_table(self, endpoints: list[str]) -> None:
        """The backend's endpoint table grew outside the hop (lowering adds the DNAT
        targets): slots not numbered yet take the index their string has there."""
        if len(endpoints) == self._ep_seen:
            return
        for k in range(self._ep_seen, len(endpoints)):
            self._ep_index.setdefault(endpoints[k], k)
        self._ep_seen = len(endpoints)
        dp = self.proxy.slot_index
        for k in np.flatnonzero(dp < 0).tolist():
            dp[k] = self._ep_index.get(self.slot_strings[k], -1)

    def endpoints_assigned(self, endpoints: list[str], slots: np.ndarray) -> None:
        """Slots the hop numbered for the first time: appended to the endpoint table."""
        for slot in slots.tolist():
            name = self.slot_strings[slot]
            self._ep_index.setdefault(name, len(endpoints))
            endpoints.append(name)
        self._ep_seen = len(endpoints)

    def mark_pending(self) -> None:
        """The balancer has picks in the compiled proxy not written back yet."""
        lb = self.lb
        if lb is not None:
            lb._puller = functools.partial(
                _pull, self.proxy, self._lb_ref, self._sid_spn, self._foreign, self.slot_strings
            )


def _pull(
    p: Any, lb_ref: Any, sid_spn: dict[int, Any], foreign: list[Any], slot_strings: list[str]
) -> None:
    """Write the compiled balancer state back into ``LoadBalancerRR``: the round-robin
    index and the affinity map of every service port the hops touched (entries in the
    compiled order, which is the dict's insertion order)."""
    from ..modes.userspace import _Affinity
    from ..packets import u32_to_ip

    lb = lb_ref()
    if lb is None:
        return
    lb._last_affinity_hit = bool(p.last_affinity_hit)
    dirty = p.take_dirty()
    if not len(dirty):
        return
    index = p.indices
    sid, client, slot, last, fidx = p.affinity()
    maps: dict[int, dict[str, Any]] = {int(s): {} for s in dirty.tolist()}
    for k in np.flatnonzero(np.isin(sid, dirty)).tolist():
        f = int(fidx[k])
        if f >= 0:
            ip, entry = foreign[f]
        else:
            ip = u32_to_ip(int(client[k]))
            entry = _Affinity(
                client_ip=ip, endpoint=slot_strings[int(slot[k])], last_used=float(last[k])
            )
        maps[int(sid[k])][ip] = entry
    for s, amap in maps.items():
        state = lb._services.get(sid_spn.get(s))  # type: ignore[arg-type]
        if state is None:
            continue
        state.index = int(index[s])
        state.affinity_map = amap


def _is_ipv4(text: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        return False


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
