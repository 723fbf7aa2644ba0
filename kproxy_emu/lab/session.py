"""A lab built for one emulated node: namespaces, the node's rules, listeners, conntrack.

``NodeLab(dp, clients)`` places every endpoint the rules DNAT to (node addresses stay in
the node namespace, the rest go to the pod namespace), the chosen clients, and the node's
own addresses; loads the mode's rules; starts the listeners and opens the node's conntrack table;
``probe(...)`` then sends flows and returns the kernel's verdict for each.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Set
from dataclasses import dataclass, field

from ..netfilter.iptables_text import render
from .env import check
from .load import LoadResult, load_iptables, load_nftables, node_sysctls
from .replay import ConntrackTable, KernelResult, PortAllocator, Probe, Servers, classify, send
from .topology import Lab, LabError, LabPlan, raise_nofile

_IPT_DNAT = re.compile(r"^-A .*?-p (\w+)\b.*?--to-destination (\d+\.\d+\.\d+\.\d+):(\d+)", re.M)
_NFT_DNAT = re.compile(r"meta l4proto (tcp|udp|sctp) dnat (?:ip )?to (\d+\.\d+\.\d+\.\d+):(\d+)")


@dataclass
class Clients:
    """Source addresses per origin (pod clients may include endpoint addresses: hairpin)."""

    pod: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    host: list[str] = field(default_factory=list)

    def of(self, origin: str) -> list[str]:
        return getattr(self, origin)


def pod_prefixes(dp) -> list[str]:
    """Where pods live: the ClusterCIDR of local-traffic detection, else the nodes' pod
    CIDRs, else 10.0.0.0/8."""
    opts = dp.options
    if opts.detect_local_mode in ("ClusterCIDR", "NodeCIDR") and opts.detect_local_value:
        return [c for c in str(opts.detect_local_value).split(",") if ":" not in c]
    cidrs = [c for n in dp.cluster.nodes.values() for c in n.pod_cidrs if ":" not in c]
    return cidrs or ["10.0.0.0/8"]


def dnat_targets(dp) -> set[tuple[str, str, int]]:
    """Every (proto, ip, port) the node's rules can DNAT to."""
    if dp.mode == "iptables":
        text, pattern = render(dp.tables), _IPT_DNAT
    else:
        text, pattern = dp.render(), _NFT_DNAT
    return {
        ((m.group(1) or "tcp").lower(), m.group(2), int(m.group(3))) for m in pattern.finditer(text)
    }


def default_clients(dp, endpoints: set[tuple[str, str, int]], seed: int = 0) -> Clients:
    """Two pod addresses no endpoint uses plus one endpoint address (hairpin), the two
    external clients kube-proxy's tests use (inside and outside 203.0.113.0/25), and the
    node's primary IP."""
    local = set(dp.options.node.local_ips)
    used = {ip for _, ip, _ in endpoints}
    free: list[str] = []
    for prefix in pod_prefixes(dp):
        net = ipaddress.IPv4Network(prefix, strict=False)
        for i, host in enumerate(net.hosts()):
            if i > 4096 or len(free) >= 3:
                break
            if str(host) not in used and str(host) not in local:
                free.append(str(host))
        if len(free) >= 3:
            break
    pods = free[1:3]  # the first free address becomes the gateway
    remote = sorted((ip for ip in used if ip not in local), key=ipaddress.IPv4Address)
    if remote:
        pods.append(remote[seed % len(remote)])
    return Clients(
        pod=pods, external=["203.0.113.2", "203.0.113.130"], host=[dp.options.node.primary_ip]
    )


class NodeLab:
    """Use as a context manager; see the module doc."""

    def __init__(
        self,
        dp,
        clients: Clients | None = None,
        *,
        extra_ports: Set[tuple[str, str, int]] = frozenset(),
        seed: int = 0,
        load: bool = True,
        backend: str = "nft",
        only_endpoints: set[str] | None = None,
        extra_clients: Clients | None = None,
    ):
        """``only_endpoints``: place only these endpoint addresses (calibration at 20,000
        services probes a few services and needs no 60,000 pod addresses).
        ``extra_clients``: more source addresses, added to the chosen ``clients``."""
        self.dp = dp
        self.endpoints = {
            e for e in dnat_targets(dp) if only_endpoints is None or e[1] in only_endpoints
        }
        self.clients = clients or default_clients(dp, self.endpoints, seed)
        for origin in ("pod", "external", "host"):  # e.g. the sources of explicit flows
            for ip in extra_clients.of(origin) if extra_clients else []:
                if ip not in self.clients.of(origin):
                    self.clients.of(origin).append(ip)
        self.local = {ip for ip in dp.options.node.local_ips if ":" not in ip}
        self.backend = backend
        pods = {ip for _, ip, _ in self.endpoints if ip not in self.local} | set(self.clients.pod)
        self.pod_ips = pods
        node_cfg = dp.options.node
        self.plan = LabPlan.build(
            node_cfg.ips, node_cfg.interfaces, pod_prefixes(dp), pods, self.clients.external
        )
        self.plan.sysctls.update(node_sysctls(node_cfg.features))
        # listeners: every endpoint port where the endpoint lives, plus extra (role, proto, port)
        self.ports: dict[str, set[tuple[str, int]]] = {"node": set(), "pod": set()}
        for proto, ip, port in self.endpoints:
            if proto in ("tcp", "udp"):
                self.ports["node" if ip in self.local else "pod"].add((proto, port))
        for role, proto, port in extra_ports:
            self.ports[role].add((proto, port))
        self.do_load = load
        self.load_result: LoadResult | None = None
        self.lab: Lab | None = None

    def __enter__(self) -> NodeLab:
        raise_nofile()
        self.lab = Lab(self.plan).__enter__()
        try:
            if self.do_load:
                self.load_result = self.load_rules()
            self.alloc = PortAllocator({p for ports in self.ports.values() for _, p in ports})
            self.servers = Servers(self.lab, {r: p for r, p in self.ports.items() if p})
            self.conntrack = ConntrackTable(self.lab)
        except BaseException:
            self.lab.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.lab is not None:
            self.lab.close()

    def load_rules(self) -> LoadResult:
        assert self.lab is not None
        check(self.dp.mode, self.backend)
        if self.dp.mode == "iptables":
            return load_iptables(self.lab, render(self.dp.tables), backend=self.backend)
        if self.dp.mode == "nftables":
            return load_nftables(self.lab, self.dp.render())
        raise LabError(f"the lab cannot load mode {self.dp.mode!r} yet")

    def served(self, ip: str, proto: str, port: int) -> bool:
        role = (
            "node"
            if ip in self.local or ip.startswith("127.")
            else ("pod" if ip in self.pod_ips else None)
        )
        return role is not None and (proto, port) in self.ports.get(role, set())

    def add_listeners(self, probes: list[Probe]) -> None:
        """Listeners for probe destinations that are addresses of the lab (ACCEPTed
        traffic to a node address must be answered, not refused by a closed port)."""
        extra: dict[str, set[tuple[str, int]]] = {"node": set(), "pod": set()}
        for p in probes:
            role = "node" if p.dst in self.local else ("pod" if p.dst in self.pod_ips else None)
            if role and (p.proto, p.dport) not in self.ports[role]:
                extra[role].add((p.proto, p.dport))
        if any(extra.values()):
            assert self.lab is not None
            for role, ports in extra.items():
                self.ports[role] |= ports
                self.alloc.avoid |= {port for _, port in ports}
            Servers(self.lab, {r: p for r, p in extra.items() if p})

    def probe(self, probes: list[Probe], *, timeout: float = 0.6) -> list[KernelResult]:
        """Send the probes; the kernel's verdict for each (ports must come from
        ``self.alloc``). A flow the lab lost (``lab_failure``) has client ``lost`` and
        verdict UNKNOWN: it says nothing about the rules."""
        assert self.lab is not None
        fates = send(self.lab, probes, timeout=timeout, after_wave=self.conntrack.collect)
        out = []
        for p, (client, waited) in zip(probes, fates):
            key = (p.proto, p.src, p.sport, p.dst, p.dport)
            reply = self.conntrack.entries.pop(key, None)
            seen = key in self.conntrack.answered
            self.conntrack.answered.discard(key)
            final = (reply[0], reply[1]) if reply else (p.dst, p.dport)
            served = self.served(final[0], p.proto, final[1])
            result = classify(p, client, reply, served, waited, seen)
            if self.lost(p, result, served, seen, final[0]):
                result.client, result.verdict = "lost", "UNKNOWN"
            out.append(result)
        return out

    def lost(self, p: Probe, r: KernelResult, served: bool, seen: bool, final_ip: str) -> bool:
        """The kernel's rules let the flow through, yet no answer came: the lab lost it.
        Conntrack confirms a flow only after its last hook (POSTROUTING when forwarded or
        sent, INPUT when delivered), so a confirmed flow to an address with a listener
        has passed every rule; only a host's flow to one of the node's own addresses
        still meets INPUT after it is confirmed (a DROP there is a real verdict). A
        client error other than refused/dropped (EADDRNOTAVAIL, ENOBUFS, ...) is the
        lab's too."""
        if r.client.startswith("error:"):
            return True
        if r.client != "timeout" or r.reply is None or seen or not served:
            return False
        local = final_ip in self.local or final_ip.startswith("127.")
        return not (p.origin == "host" and local)

    def neighbour_overflows(self) -> int:
        """The kernel-wide IPv4 neighbour table's "table full" count (all CPUs): the
        table is shared by every namespace, so a rise is a hint, not proof, that this
        lab's traffic met it."""
        try:
            with open("/proc/net/stat/arp_cache") as f:
                rows = f.read().split("\n")
        except OSError:
            return 0
        head = rows[0].split()
        if "table_fulls" not in head:
            return 0
        col = head.index("table_fulls")
        return sum(int(r.split()[col], 16) for r in rows[1:] if len(r.split()) > col)
