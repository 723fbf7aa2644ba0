"""The IPVS proxier's state for one node (pkg/proxy/ipvs/proxier.go syncProxyRules).

One full sync gives: the virtual servers (ClusterIP, each externalIP, each LB ingress IP,
NodePort on each node address) with their real servers, the addresses bound to
``kube-ipvs0``, the ipsets (names, types, entries exactly as kube-proxy's Entry.String()
writes them) and the iptables restore payload IPVS mode still installs (nat then filter,
kube-proxy's write order). Services come in the view's order, where kube-proxy iterates a
Go map; real servers in endpoint-string order, where kube-proxy adds them from a set. A
virtual server several service ports claim is one entry carrying its claims, in
ServicePortName order (``_merge_claims``).

``lower(state)`` turns the virtual servers into the arrays the engine
(kproxy_emu._cext.vstable.VirtualServerTable, twin dataplane.ipvs_reference) loads.
"""

from __future__ import annotations

import ipaddress
import itertools
import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from ..errors import InputError
from ..model.cluster import paused_gc
from ..netfilter.ipvs import (  # noqa: F401 - the model, re-exported for the proxier's users
    BITMAP_PORT,
    DEFAULT_HASH_SIZE,
    DEFAULT_MAX_ELEM,
    DEFAULT_PORT_RANGE,
    FLAG_HASHED,
    FLAG_PERSISTENT,
    FLAG_SOURCE_HASH,
    HASH_IP,
    HASH_IP_PORT,
    HASH_IP_PORT_IP,
    HASH_IP_PORT_NET,
    IPSet,
    IpvsState,
    RealServer,
    VirtualServer,
    ipset_name,
)
from ..netfilter.ruleset import Opt, Ruleset
from ..proxy.options import ProxyOptions
from ..proxy.view import ProxyView, ServicePortInfo, categorize_endpoints
from .iptables import _Writer
from .proxier import Key, Proxier

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
DEFAULT_SCHEDULER = "rr"
DUMMY_DEVICE = "kube-ipvs0"

# ipsetInfo (proxier.go): name, type, comment (ipset.go), in kube-proxy's list order
IPSET_INFO: tuple[tuple[str, str, str], ...] = (
    (
        "KUBE-LOOP-BACK",
        HASH_IP_PORT_IP,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        "KUBE-CLUSTER-IP",
        HASH_IP_PORT,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        "KUBE-EXTERNAL-IP",
        HASH_IP_PORT,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        "KUBE-EXTERNAL-IP-LOCAL",
        HASH_IP_PORT,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    ("KUBE-LOAD-BALANCER", HASH_IP_PORT, "Kubernetes service lb portal"),
    (
        "KUBE-LOAD-BALANCER-FW",
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        "KUBE-LOAD-BALANCER-LOCAL",
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        HASH_IP_PORT_IP,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        HASH_IP_PORT_NET,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    ("KUBE-NODE-PORT-TCP", BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    (
        "KUBE-NODE-PORT-LOCAL-TCP",
        BITMAP_PORT,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    ("KUBE-NODE-PORT-UDP", BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    (
        "KUBE-NODE-PORT-LOCAL-UDP",
        BITMAP_PORT,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        "KUBE-NODE-PORT-SCTP-HASH",
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    ("KUBE-HEALTH-CHECK-NODE-PORT", BITMAP_PORT, "Kubernetes health check node port"),
    ("KUBE-IPVS-IPS", HASH_IP, "Addresses on the ipvs interface"),
)

# ipsetWithIptablesChain: set, table, from chain, to, match dirs, -p protocol
IPSET_CHAIN_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("KUBE-LOOP-BACK", "nat", "KUBE-POSTROUTING", "MASQUERADE", "dst,dst,src", ""),
    ("KUBE-LOAD-BALANCER", "nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER", "dst,dst", ""),
    ("KUBE-LOAD-BALANCER-LOCAL", "nat", "KUBE-LOAD-BALANCER", "RETURN", "dst,dst", ""),
    ("KUBE-NODE-PORT-LOCAL-TCP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "tcp"),
    ("KUBE-NODE-PORT-TCP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "tcp"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "udp"),
    ("KUBE-NODE-PORT-UDP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "udp"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "nat", "KUBE-NODE-PORT", "RETURN", "dst,dst", "sctp"),
    ("KUBE-NODE-PORT-SCTP-HASH", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst,dst", "sctp"),
    (
        "KUBE-LOAD-BALANCER-FW",
        "filter",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "dst,dst",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
    (
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
)

# iptablesChains and iptablesJumpChain (proxier.go)
IPTABLES_CHAINS = (
    ("nat", "KUBE-SERVICES"),
    ("nat", "KUBE-POSTROUTING"),
    ("nat", "KUBE-NODE-PORT"),
    ("nat", "KUBE-LOAD-BALANCER"),
    ("nat", "KUBE-MARK-MASQ"),
    ("filter", "KUBE-FORWARD"),
    ("filter", "KUBE-NODE-PORT"),
    ("filter", "KUBE-PROXY-FIREWALL"),
    ("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
    ("filter", "KUBE-IPVS-FILTER"),
    ("filter", "KUBE-IPVS-OUT-FILTER"),
)
IPTABLES_JUMPS = (
    ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
    ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
    ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
    ("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules"),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    ("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter"),
    ("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter"),
)


def validate_scheduler(name: str | None) -> str:
    """kube-proxy passes any name to the kernel; the emulated kernel knows these."""
    if not name:
        return DEFAULT_SCHEDULER
    if name not in SCHEDULERS:
        raise InputError(
            f"unknown IPVS scheduler (the kernel has: {', '.join(SCHEDULERS)})",
            field="ipvs.scheduler",
            value=name,
        )
    return name


def builtin_jumps() -> list[tuple[str, str, tuple[Opt, ...]]]:
    """(table, chain, rule options) the IPVS proxier ensures with ``-I`` (in this order,
    each prepended) outside the restore."""
    return [
        (
            table,
            chain,
            (Opt("-m", ("comment",)), Opt("--comment", (comment,)), Opt("-j", (target,))),
        )
        for table, chain, target, comment in IPTABLES_JUMPS
    ]


def _node_address_set(view: ProxyView) -> list[str]:
    """GetAllLocalAddressesExcept(kube-ipvs0) through isValidForSet: this family, not
    loopback, not IPv6 link-local."""
    o = view.options
    out = []
    for ip in o.node.local_ips or o.node.ips:
        addr = ipaddress.ip_address(ip)
        if (addr.version == 6) != (o.family == "IPv6") or addr.is_loopback:
            continue
        if addr.version == 6 and addr.is_link_local:
            continue
        out.append(ip)
    return out


class _IpvsPort:
    """What one service port gives the IPVS proxier (kept until the port changes):
    its virtual servers, ipset entries, kube-ipvs0 addresses and firewall exceptions."""

    __slots__ = (
        "bound",
        "entries",
        "lb_no_node_access",
        "no_local_external",
        "no_local_internal",
        "node_port",
        "sp",
        "vss",
        "zone",
    )

    def __init__(self, sp: ServicePortInfo, zone: str | None):
        self.sp = sp  # the view's object (kept alive: its id keys the cache)
        self.zone = zone
        self.vss: list[VirtualServer] = []
        self.entries: dict[tuple[str, str], None] = {}  # (ipset, entry), ordered
        self.bound: dict[str, None] = {}
        self.lb_no_node_access: list[tuple[str, str, int]] = []
        self.no_local_internal = self.no_local_external = False
        self.node_port = bool(sp.node_port)

    def no_local(self) -> list[tuple[bool, str]]:
        """The no-local-endpoints metric's (external?, service) entries this port adds."""
        svc = f"{self.sp.namespace}/{self.sp.name}"
        return [(False, svc)] * self.no_local_internal + [(True, svc)] * self.no_local_external


@dataclass(slots=True)
class IpvsSyncResult:
    """One IPVS proxier sync: the state (virtual servers, ipsets, iptables payload), what
    changed since the last one, and whether the iptables restore failed."""

    state: IpvsState
    previous: IpvsState | None
    full: bool = True  # the IPVS proxier always syncs everything
    error: str | None = None
    # the virtual servers of the ports written anew and of the ports gone, in order
    fresh: list[VirtualServer] = field(default_factory=list)
    gone: list[VirtualServer] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)  # VS keys no port has now
    shared_keys: bool = False  # a fresh VS key is also another port's: diff in full
    # while ports share virtual servers: what the kernel sync must visit, in the state's
    # order (the fresh ports' virtual servers and every shared one, replayed each sync)
    replay: list[VirtualServer] | None = None
    ipset_ops: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class IpvsProxier(Proxier[IpvsSyncResult]):
    """kube-proxy's IPVS proxier for one node: every sync gives the whole state (as
    kube-proxy computes it), built from what each service port gave at the last sync
    when the port is unchanged; the iptables payload is applied to the node's tables
    (``tables``). The kernel's IPVS table is programmed by the backend (IpvsSync) from
    the result's changes."""

    mode = "ipvs"

    def __init__(self, options: ProxyOptions, scheduler: str | None = DEFAULT_SCHEDULER):
        self.options = options
        self.scheduler = validate_scheduler(scheduler)
        self.tables = Ruleset(family=options.family)  # the node's iptables
        self.need_full_sync = True
        self.state: IpvsState | None = None
        self._ports: dict[int, _IpvsPort] = {}
        self._entries: dict[str, set[str]] = {name: set() for name, _, _ in IPSET_INFO}
        self._entry_owners: dict[tuple[str, str], int] = {}
        self._bound: dict[str, int] = {}  # kube-ipvs0 address -> ports binding it
        self._vs_owners: dict[str, int] = {}
        self._shared_keys: set[str] = set()  # VS keys two or more ports claim
        self._claimants: dict[str, tuple[str, ...]] = {}  # their ports, as last warned
        self._endpoint_index: dict[str, int] = {}
        self._endpoints: list[str] = []
        self._node_ports = 0
        self._no_local: dict[tuple[bool, str], int] = {}  # (external?, service) -> ports
        self._delta: dict[tuple[str, str], int] = {}  # ipset entries added (1) / gone (-1)
        self._view: ProxyView | None = None  # the view and its version the cache follows
        self._version = 0
        self._ids: list[int] = []  # the ports' ids in the last sync's order

    def sync(
        self, view: ProxyView, changed: set[Key] | None = None, now: float = 0.0
    ) -> IpvsSyncResult:
        """One syncProxyRules: the state, and its iptables payload restored."""
        from ..netfilter.restore import RestoreError, apply_restore, ensure_chain, ensure_rule

        if self.need_full_sync:
            for table, chain, opts in builtin_jumps():
                ensure_chain(self.tables, table, opts[-1].args[0])
                ensure_rule(self.tables, table, chain, opts)
        with paused_gc():  # the cyclic collector would walk the whole (large) heap
            result = self.compile(view)
        try:
            apply_restore(self.tables, result.state.ruleset)
            self.need_full_sync = False
        except RestoreError as exc:
            self.need_full_sync = True
            result.error = str(exc)
        return result

    def compile(self, view: ProxyView) -> IpvsSyncResult:
        """The state of one sync and its changes from the last one."""
        o = view.options
        family = o.family
        zone = o.node.zone
        node_addresses = _node_address_set(view)
        ctx = (
            set(node_addresses),
            self._node_ips(view, node_addresses),
            o.node.node_ips_by_family().get(family),
        )
        self._delta = {}
        old = self._ports
        if any(p.zone != zone for p in itertools.islice(old.values(), 1)):
            self._forget(old.values())
            old = {}
        sps = view.service_ports
        ids = list(map(id, sps))
        ports: list[_IpvsPort] | None = None
        log = view.changes_since(self._version) if self._view is view and old else None
        if log is not None:  # only the ports the view replaced
            removed, added = log
            gone_ports = [old.pop(id(sp)) for sp in removed if id(sp) in old]
            if len(gone_ports) > 1:  # in the last sync's order
                gone_ports.sort(key=lambda p: self._ids.index(id(p.sp)))
            self._forget(gone_ports)
            fresh_at = sorted(ids.index(id(sp)) for sp in added)
            for i in fresh_at:
                old[ids[i]] = self._write_port(sps[i], zone, ctx)
            try:
                ports = list(map(old.__getitem__, ids))
            except KeyError:
                ports = None
            if ports is None or len(old) != len(ports):  # lost track: every port afresh
                self._forget(old.values())
                old, ports = {}, None
        if ports is None:
            # the None slots (ports not cached) are filled just below
            ports = cast("list[_IpvsPort]", list(map(old.get, ids)))
            fresh_at = [i for i, port in enumerate(ports) if port is None]
            new_ids = dict.fromkeys(ids)
            gone_keys = old.keys() - new_ids.keys()
            gone_ports = [p for k, p in old.items() if k in gone_keys] if gone_keys else []
            self._forget(gone_ports)
            for i in fresh_at:
                ports[i] = self._write_port(sps[i], zone, ctx)
            old = dict(zip(ids, ports))
        self._ports = old
        self._ids = ids
        self._view, self._version = view, view.version
        # a virtual server key that an unchanged port also has: diff the whole state
        fresh_keys: dict[str, int] = {}
        for i in fresh_at:
            for vs in ports[i].vss:
                fresh_keys[str(vs)] = fresh_keys.get(str(vs), 0) + 1
        touched = fresh_keys.keys() | {str(vs) for p in gone_ports for vs in p.vss}
        # a touched key an unchanged port also holds, no longer shared (a sharing port went
        # or changed address): diff the whole state; a shared one is replayed below
        shared_keys = self._shared_keys
        shared = any(
            self._vs_owners.get(k, 0) > fresh_keys.get(k, 0) and k not in shared_keys
            for k in touched
        )
        virtual_servers = list(itertools.chain.from_iterable(map(_VSS, ports)))
        if self._shared_keys:
            virtual_servers = _merge_claims(virtual_servers, self._shared_keys, self._claimants)
        else:
            self._claimants.clear()

        sets = {
            name: IPSet(
                ipset_name(name, family),
                t,
                comment,
                "inet6" if family == "IPv6" else "inet",
                set(self._entries[name]),
            )
            for name, t, comment in IPSET_INFO
        }
        state = IpvsState(
            family=family,
            scheduler=self.scheduler,
            virtual_servers=virtual_servers,
            bound_addresses=list(self._bound),
            ipsets=sets,
            ruleset=Ruleset(family=family),
            endpoints=list(self._endpoints),
        )
        state.no_local_internal = {svc for external, svc in self._no_local if not external}
        state.no_local_external = {svc for external, svc in self._no_local if external}
        sets["KUBE-IPVS-IPS"].entries = set(self._bound)
        lb_no_node_access = list(itertools.chain.from_iterable(map(_LB_NO_NODE, ports)))
        _write_iptables(state, view, lb_no_node_access)

        previous, self.state = self.state, state
        result = IpvsSyncResult(state, previous)
        result.fresh = [vs for i in fresh_at for vs in ports[i].vss]
        result.gone = [vs for p in gone_ports for vs in p.vss]
        result.deleted_keys = [
            k for k in dict.fromkeys(str(vs) for vs in result.gone) if not self._vs_owners.get(k)
        ]
        result.shared_keys = shared
        if shared_keys:  # kube-proxy syncs every claim of each shared one at every sync
            fresh_ids = {id(vs) for vs in result.fresh}
            result.replay = [vs for vs in virtual_servers if vs.claims or id(vs) in fresh_ids]
        result.ipset_ops = self._ipset_ops()
        return result

    def _node_ips(self, view: ProxyView, node_addresses: list[str]) -> list[str]:
        """The addresses NodePort virtual servers go on (when any port has a NodePort)."""
        chosen = view.options.node_port_ips()
        if chosen is None:
            return node_addresses
        return [ip for ip in chosen if not ipaddress.ip_address(ip).is_loopback]

    def _ipset_ops(self) -> list[str]:
        """The ``del`` then ``add`` lines (sorted, set by set) for the entries this sync
        removed and added."""
        out: list[str] = []
        family = self.options.family
        by_set: dict[str, tuple[list[str], list[str]]] = {}
        for (name, entry), sign in self._delta.items():
            if sign:
                by_set.setdefault(name, ([], []))[sign > 0].append(entry)
        for name, _, _ in IPSET_INFO:
            if name in by_set:
                gone, added = by_set[name]
                set_name = ipset_name(name, family)
                out += [f"del {set_name} {e}" for e in sorted(gone)]
                out += [f"add {set_name} {e}" for e in sorted(added)]
        return out

    def _count(self, key: tuple[str, str], sign: int) -> None:
        self._delta[key] = self._delta.get(key, 0) + sign

    def _forget(self, ports: Iterable[_IpvsPort]) -> None:
        entries, owners = self._entries, self._entry_owners
        for port in ports:
            for key in port.entries:
                left = owners[key] - 1
                if left:
                    owners[key] = left
                else:
                    del owners[key]
                    entries[key[0]].discard(key[1])
                    self._count(key, -1)
            for ip in port.bound:
                left = self._bound[ip] - 1
                if left:
                    self._bound[ip] = left
                else:
                    del self._bound[ip]
                    self._count(("KUBE-IPVS-IPS", ip), -1)
            for flag in port.no_local():
                left = self._no_local[flag] - 1
                if left:
                    self._no_local[flag] = left
                else:
                    del self._no_local[flag]
            for vs in port.vss:
                vs_key = str(vs)
                left = self._vs_owners[vs_key] - 1
                if left:
                    self._vs_owners[vs_key] = left
                    if left == 1:
                        self._shared_keys.discard(vs_key)
                else:
                    del self._vs_owners[vs_key]
            self._node_ports -= port.node_port

    def _write_port(
        self,
        sp: ServicePortInfo,
        zone: str | None,
        ctx: tuple[set[str], list[str], str | None],
    ) -> _IpvsPort:
        """One service port's part of syncProxyRules (and its ownership counts)."""
        o = self.options
        scheduler = self.scheduler
        node_address_set, node_ips, node_ip = ctx
        port = _IpvsPort(sp, zone)
        entries = port.entries

        def add_vs(ip: str, vport: int, kind: str, bind: bool, only_local: bool) -> None:
            flags = 0
            timeout = 0
            if sp.affinity_timeout:
                flags |= FLAG_PERSISTENT
                timeout = sp.affinity_timeout
            if scheduler == "mh":
                flags |= FLAG_SOURCE_HASH
            vs = VirtualServer(
                ip, sp.protocol, vport, scheduler, flags, timeout, kind, sp.spn, bind
            )
            # syncEndpoint: local endpoints when only-local was asked and some exist, else
            # the cluster ones (unlike iptables mode, which drops)
            cat = categorize_endpoints(sp, o.node.name, o.node.zone)
            if only_local and cat.local:
                eps = cat.local
            else:
                eps = cat.cluster
                if only_local and cat.has_any:
                    port.no_local_internal |= sp.internal_policy_local
                    port.no_local_external |= sp.external_policy_local
            for ep in sorted(eps, key=lambda e: e.string):
                idx = self._endpoint_index.get(ep.string)
                if idx is None:
                    idx = self._endpoint_index[ep.string] = len(self._endpoints)
                    self._endpoints.append(ep.string)
                vs.real_servers.append(RealServer(ep.ip, ep.port, 1, idx))
            port.vss.append(vs)
            if bind:
                port.bound.setdefault(ip, None)

        proto = sp.proto
        for ep in sp.endpoints:  # hairpin: every local endpoint of the port
            if ep.is_local:
                entries[("KUBE-LOOP-BACK", f"{ep.ip},{proto}:{ep.port},{ep.ip}")] = None
        entries[("KUBE-CLUSTER-IP", f"{sp.cluster_ip},{proto}:{sp.port}")] = None
        add_vs(sp.cluster_ip, sp.port, "cluster-ip", True, sp.internal_policy_local)
        for ip in sp.external_ips:
            entry = f"{ip},{proto}:{sp.port}"
            name = "KUBE-EXTERNAL-IP-LOCAL" if sp.external_policy_local else "KUBE-EXTERNAL-IP"
            entries[(name, entry)] = None
            add_vs(ip, sp.port, "external-ip", ip not in node_address_set, sp.external_policy_local)
        for ip in sp.lb_ips:
            entry = f"{ip},{proto}:{sp.port}"
            entries[("KUBE-LOAD-BALANCER", entry)] = None
            if sp.external_policy_local:
                entries[("KUBE-LOAD-BALANCER-LOCAL", entry)] = None
            if sp.source_ranges:
                entries[("KUBE-LOAD-BALANCER-FW", entry)] = None
                allow_from_node = False
                node_ip_addr = ipaddress.ip_address(node_ip) if node_ip else None
                for cidr in sp.source_ranges:
                    entries[("KUBE-LOAD-BALANCER-SOURCE-CIDR", f"{entry},{cidr}")] = None
                    if node_ip_addr is not None and node_ip_addr in ipaddress.ip_network(cidr):
                        allow_from_node = True
                if allow_from_node:
                    entries[("KUBE-LOAD-BALANCER-SOURCE-IP", f"{entry},{ip}")] = None
                else:
                    port.lb_no_node_access.append((ip, proto, sp.port))
            add_vs(
                ip, sp.port, "load-balancer", ip not in node_address_set, sp.external_policy_local
            )
        if sp.node_port and node_ips:
            if proto == "sctp":
                np_entries = [f"{ip},{proto}:{sp.node_port}" for ip in node_ips]
                np_set, np_local = "KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
            else:
                np_entries = [str(sp.node_port)]
                np_set = f"KUBE-NODE-PORT-{proto.upper()}"
                np_local = f"KUBE-NODE-PORT-LOCAL-{proto.upper()}"
            for e in np_entries:
                entries[(np_set, e)] = None
                if sp.external_policy_local:
                    entries[(np_local, e)] = None
            for ip in node_ips:
                add_vs(ip, sp.node_port, "node-port", False, sp.external_policy_local)
        if sp.health_check_node_port and not (sp.node_port and not node_ips):
            entries[("KUBE-HEALTH-CHECK-NODE-PORT", str(sp.health_check_node_port))] = None

        # ownership: how many ports hold each entry, address and virtual server
        for key in entries:
            n = self._entry_owners.get(key, 0)
            self._entry_owners[key] = n + 1
            if not n:
                self._entries[key[0]].add(key[1])
                self._count(key, 1)
        for ip in port.bound:
            n = self._bound.get(ip, 0)
            self._bound[ip] = n + 1
            if not n:
                self._count(("KUBE-IPVS-IPS", ip), 1)
        for flag in port.no_local():
            self._no_local[flag] = self._no_local.get(flag, 0) + 1
        for vs in port.vss:
            vs_key = str(vs)
            n = self._vs_owners.get(vs_key, 0) + 1
            self._vs_owners[vs_key] = n
            if n == 2:
                self._shared_keys.add(vs_key)
        self._node_ports += port.node_port
        return port


def compile_ipvs(view: ProxyView, *, scheduler: str | None = DEFAULT_SCHEDULER) -> IpvsState:
    """One full syncProxyRules of the IPVS proxier for the view's node."""
    return IpvsProxier(view.options, scheduler).compile(view).state


class SharedVirtualServerWarning(UserWarning):
    """Several service ports claim one IPVS virtual server (address:port/protocol)."""


def _claim_order(vs: VirtualServer) -> str:
    return vs.service


def _merge_claims(
    vss: list[VirtualServer], shared: set[str], claimants: dict[str, tuple[str, ...]]
) -> list[VirtualServer]:
    """One virtual server per shared key, where its first claim is (kube-proxy adds it
    at its first syncService), carrying every claim.

    kube-proxy runs syncService then syncEndpoint for each claim in turn: the virtual
    server takes each claim's flags and timeout (UpdateVirtualServer), and each
    syncEndpoint adds its port's endpoints and gracefully deletes the others, so the last
    claim's endpoints stay (with the earlier claims' busy TCP ones at weight 0 until their
    connections end; IpvsSync replays the claims for that). kube-proxy's order is the
    iteration of svcPortMap, a Go map: random, sync after sync. Here it is the
    ServicePortName order (then each port's own: ClusterIP, externalIPs, LB IPs,
    NodePorts; ServicePortName.String() compared as strings), so the same cluster gives
    the same table however its manifests are ordered. A key whose claiming ports differ
    from ``claimants`` (the last warning's, updated here) is named in a warning."""
    groups: dict[str, list[VirtualServer]] = {}
    out: list[VirtualServer | str] = []
    for vs in vss:
        key = str(vs)
        if key in shared:
            group = groups.get(key)
            if group is None:
                groups[key] = [vs]
                out.append(key)
            else:
                group.append(vs)
        else:
            out.append(vs)
    merged: dict[str, VirtualServer] = {}
    by_services: dict[tuple[str, ...], list[str]] = {}
    for key in [k for k in claimants if k not in groups]:
        del claimants[key]
    for key, group in groups.items():
        group.sort(key=_claim_order)  # stable: one port's claims keep their order
        last = group[-1]
        merged[key] = VirtualServer(
            last.address,
            last.protocol,
            last.port,
            last.scheduler,
            last.flags,
            last.timeout,
            last.kind,
            last.service,
            any(vs.bound for vs in group),
            list(last.real_servers),
            tuple(group),
        )
        ports = tuple(vs.service for vs in group)
        if claimants.get(key) != ports:
            claimants[key] = ports
            names = tuple(dict.fromkeys(p.split(":", 1)[0] for p in ports))
            by_services.setdefault(names, []).append(key)
    for names, keys in by_services.items():
        servers = f"virtual server{'s' if len(keys) > 1 else ''} {', '.join(keys)}"
        if len(names) > 1:
            who = f"Services {', '.join(names)} share the {servers}"
        else:
            who = f"Service {names[0]} claims the {servers} more than once"
        warnings.warn(
            f"IPVS: {who}: kube-proxy programs each once and syncs every claim in turn, "
            "in random (Go map) order; kproxy-emu uses ServicePortName order, so the real "
            "servers are the last claim's endpoints",
            SharedVirtualServerWarning,
            stacklevel=2,
        )
    return [merged[x] if isinstance(x, str) else x for x in out]


_VSS = operator.attrgetter("vss")
_LB_NO_NODE = operator.attrgetter("lb_no_node_access")


def _o(flag: str, *args: str, negated: bool = False) -> Opt:
    return Opt(flag, args, negated)


def _comment(text: str) -> tuple[Opt, Opt]:
    return (_o("-m", "comment"), _o("--comment", text))


def _match_set(name: str, dirs: str) -> tuple[Opt, Opt]:
    return (_o("-m", "set"), _o("--match-set", name, dirs))


def _write_iptables(
    state: IpvsState, view: ProxyView, lb_no_node_access: list[tuple[str, str, int]]
) -> None:
    """writeIptablesRules + createAndLinkKubeChain: the restore payload (nat, filter)."""
    o = view.options
    rs = state.ruleset
    nat, filt = rs.table("nat"), rs.table("filter")
    for table, chain in IPTABLES_CHAINS:
        rs.table(table).declare(chain)
    sets = state.ipsets
    mark = o.mark

    def name(s: str) -> str:
        return sets[s].name

    def nonempty(s: str) -> bool:
        return bool(sets[s].entries)

    nat.append(
        "KUBE-SERVICES",
        _o("-s", "::1/128" if o.family == "IPv6" else "127.0.0.0/8"),
        _o("-j", "RETURN"),
    )
    for s, table, src, dst, dirs, proto in IPSET_CHAIN_RULES:
        if not nonempty(s):
            continue
        opts = [_o("-p", proto)] if proto else []
        opts += [*_comment(sets[s].comment), *_match_set(name(s), dirs), _o("-j", dst)]
        rs.table(table).append(src, *opts)

    if nonempty("KUBE-CLUSTER-IP"):
        args: tuple[Opt, ...] = _comment(sets["KUBE-CLUSTER-IP"].comment)
        if o.masquerade_all:
            nat.append(
                "KUBE-SERVICES",
                *args,
                *_match_set(name("KUBE-CLUSTER-IP"), "dst,dst"),
                _o("-j", "KUBE-MARK-MASQ"),
            )
        elif (not_local := _Writer(o, False).if_not_local()) is not None:
            nat.append(
                "KUBE-SERVICES",
                *args,
                *_match_set(name("KUBE-CLUSTER-IP"), "dst,dst"),
                *not_local,
                _o("-j", "KUBE-MARK-MASQ"),
            )
        else:
            nat.append(
                "KUBE-SERVICES",
                *args,
                *_match_set(name("KUBE-CLUSTER-IP"), "src,dst"),
                _o("-j", "KUBE-MARK-MASQ"),
            )

    def external_ip_rules(args: tuple[Opt, ...]) -> None:
        nat.append(
            "KUBE-SERVICES",
            *args,
            _o("-m", "physdev"),
            _o("--physdev-is-in", negated=True),
            _o("-m", "addrtype"),
            _o("--src-type", "LOCAL", negated=True),
            _o("-j", "ACCEPT"),
        )
        nat.append(
            "KUBE-SERVICES",
            *args,
            _o("-m", "addrtype"),
            _o("--dst-type", "LOCAL"),
            _o("-j", "ACCEPT"),
        )

    if nonempty("KUBE-EXTERNAL-IP"):
        args = (
            *_comment(sets["KUBE-EXTERNAL-IP"].comment),
            *_match_set(name("KUBE-EXTERNAL-IP"), "dst,dst"),
        )
        nat.append("KUBE-SERVICES", *args, _o("-j", "KUBE-MARK-MASQ"))
        external_ip_rules(args)
    if nonempty("KUBE-EXTERNAL-IP-LOCAL"):
        external_ip_rules(
            (
                *_comment(sets["KUBE-EXTERNAL-IP-LOCAL"].comment),
                *_match_set(name("KUBE-EXTERNAL-IP-LOCAL"), "dst,dst"),
            )
        )

    nat.append(
        "KUBE-SERVICES", _o("-m", "addrtype"), _o("--dst-type", "LOCAL"), _o("-j", "KUBE-NODE-PORT")
    )
    nat.append("KUBE-LOAD-BALANCER", _o("-j", "KUBE-MARK-MASQ"))
    filt.append("KUBE-SOURCE-RANGES-FIREWALL", _o("-j", "DROP"))
    for ip, proto, port in lb_no_node_access:
        filt.append(
            "KUBE-IPVS-OUT-FILTER",
            _o("-s", ip),
            _o("-m", "ipvs"),
            _o("--vaddr", ip),
            _o("--vproto", proto),
            _o("--vport", str(port)),
            _o("-j", "DROP"),
        )
    for s in ("KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"):  # acceptIPVSTraffic
        if nonempty(s):
            nat.append("KUBE-SERVICES", *_match_set(name(s), "dst,dst"), _o("-j", "ACCEPT"))
    filt.append(
        "KUBE-FORWARD",
        *_comment("kubernetes forwarding rules"),
        _o("-m", "mark"),
        _o("--mark", f"{mark}/{mark}"),
        _o("-j", "ACCEPT"),
    )
    filt.append(
        "KUBE-FORWARD",
        *_comment("kubernetes forwarding conntrack rule"),
        _o("-m", "conntrack"),
        _o("--ctstate", "RELATED,ESTABLISHED"),
        _o("-j", "ACCEPT"),
    )
    filt.append(
        "KUBE-NODE-PORT",
        *_comment(sets["KUBE-HEALTH-CHECK-NODE-PORT"].comment),
        *_match_set(name("KUBE-HEALTH-CHECK-NODE-PORT"), "dst"),
        _o("-j", "ACCEPT"),
    )
    for s, dirs in (
        ("KUBE-LOAD-BALANCER", "dst,dst"),
        ("KUBE-CLUSTER-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP", "dst,dst"),
        ("KUBE-EXTERNAL-IP-LOCAL", "dst,dst"),
        ("KUBE-HEALTH-CHECK-NODE-PORT", "dst"),
    ):
        filt.append("KUBE-IPVS-FILTER", *_match_set(name(s), dirs), _o("-j", "RETURN"))
    filt.append(
        "KUBE-IPVS-FILTER",
        _o("-m", "conntrack"),
        _o("--ctstate", "NEW"),
        *_match_set(name("KUBE-IPVS-IPS"), "dst"),
        _o("-j", "REJECT"),
    )
    nat.append(
        "KUBE-POSTROUTING",
        _o("-m", "mark"),
        _o("--mark", f"{mark}/{mark}", negated=True),
        _o("-j", "RETURN"),
    )
    nat.append("KUBE-POSTROUTING", _o("-j", "MARK"), _o("--xor-mark", mark))
    masq = [*_comment("kubernetes service traffic requiring SNAT"), _o("-j", "MASQUERADE")]
    if o.node.features.iptables_random_fully:
        masq.append(_o("--random-fully"))
    nat.append("KUBE-POSTROUTING", *masq)
    nat.append("KUBE-MARK-MASQ", _o("-j", "MARK"), _o("--or-mark", mark))


# ------------------------------------------------------------------------ lowering
