"""The IPVS proxier's state for one node (pkg/proxy/ipvs/proxier.go syncProxyRules).

One full sync gives: the virtual servers (ClusterIP, each externalIP, each LB ingress IP,
NodePort on each node address) with their real servers, the addresses bound to
``kube-ipvs0``, the ipsets (names, types, entries exactly as kube-proxy's Entry.String()
writes them) and the iptables restore payload IPVS mode still installs (nat then filter,
kube-proxy's write order). Services come in the view's order, where kube-proxy iterates a
Go map; real servers in endpoint-string order, where kube-proxy adds them from a set.

``lower(state)`` turns the virtual servers into the arrays the engine
(kproxy_emu._cext.vstable.VirtualServerTable, twin dataplane.ipvs_reference) loads.
"""

from __future__ import annotations

import ipaddress

from ..errors import InputError
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
from ..proxy.view import ProxyView, ServicePortInfo, categorize_endpoints
from .iptables import _Writer

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


def compile_ipvs(view: ProxyView, *, scheduler: str | None = DEFAULT_SCHEDULER) -> IpvsState:
    """One full syncProxyRules of the IPVS proxier for the view's node."""
    scheduler = validate_scheduler(scheduler)
    o = view.options
    family = o.family
    sets = {
        name: IPSet(ipset_name(name, family), t, comment, "inet6" if family == "IPv6" else "inet")
        for name, t, comment in IPSET_INFO
    }
    node_addresses = _node_address_set(view)
    node_address_set = set(node_addresses)
    has_node_port = any(sp.node_port for sp in view.service_ports)
    node_ips: list[str] = []
    if has_node_port:
        chosen = o.node_port_ips()
        if chosen is None:
            node_ips = node_addresses
        else:
            node_ips = [ip for ip in chosen if not ipaddress.ip_address(ip).is_loopback]
    node_ip = o.node.node_ips_by_family().get(family)
    node_ip_addr = ipaddress.ip_address(node_ip) if node_ip else None

    state = IpvsState(
        family=family,
        scheduler=scheduler,
        virtual_servers=[],
        bound_addresses=[],
        ipsets=sets,
        ruleset=Ruleset(family=family),
        endpoints=[],
    )
    endpoint_index: dict[str, int] = {}
    bound: dict[str, None] = {}
    lb_no_node_access: list[tuple[str, str, int]] = []

    def add_vs(
        sp: ServicePortInfo, ip: str, port: int, kind: str, bind: bool, only_local: bool
    ) -> None:
        flags = 0
        timeout = 0
        if sp.affinity_timeout:
            flags |= FLAG_PERSISTENT
            timeout = sp.affinity_timeout
        if scheduler == "mh":
            flags |= FLAG_SOURCE_HASH
        vs = VirtualServer(ip, sp.protocol, port, scheduler, flags, timeout, kind, sp.spn, bind)
        # syncEndpoint: local endpoints when only-local was asked and some exist, else the
        # cluster ones (unlike iptables mode, which drops)
        cat = categorize_endpoints(sp, o.node.name, o.node.zone)
        if only_local and cat.local:
            eps = cat.local
        else:
            eps = cat.cluster
            if only_local and cat.has_any:
                if sp.internal_policy_local:
                    state.no_local_internal.add(f"{sp.namespace}/{sp.name}")
                if sp.external_policy_local:
                    state.no_local_external.add(f"{sp.namespace}/{sp.name}")
        for ep in sorted(eps, key=lambda e: e.string):
            idx = endpoint_index.get(ep.string)
            if idx is None:
                idx = endpoint_index[ep.string] = len(state.endpoints)
                state.endpoints.append(ep.string)
            vs.real_servers.append(RealServer(ep.ip, ep.port, 1, idx))
        state.virtual_servers.append(vs)
        if bind:
            bound.setdefault(ip, None)

    for sp in view.service_ports:
        proto = sp.proto
        for ep in sp.endpoints:  # hairpin: every local endpoint of the port
            if ep.is_local:
                sets["KUBE-LOOP-BACK"].entries.add(f"{ep.ip},{proto}:{ep.port},{ep.ip}")
        sets["KUBE-CLUSTER-IP"].entries.add(f"{sp.cluster_ip},{proto}:{sp.port}")
        add_vs(sp, sp.cluster_ip, sp.port, "cluster-ip", True, sp.internal_policy_local)
        for ip in sp.external_ips:
            entry = f"{ip},{proto}:{sp.port}"
            sets[
                "KUBE-EXTERNAL-IP-LOCAL" if sp.external_policy_local else "KUBE-EXTERNAL-IP"
            ].entries.add(entry)
            add_vs(
                sp, ip, sp.port, "external-ip", ip not in node_address_set, sp.external_policy_local
            )
        for ip in sp.lb_ips:
            entry = f"{ip},{proto}:{sp.port}"
            sets["KUBE-LOAD-BALANCER"].entries.add(entry)
            if sp.external_policy_local:
                sets["KUBE-LOAD-BALANCER-LOCAL"].entries.add(entry)
            if sp.source_ranges:
                sets["KUBE-LOAD-BALANCER-FW"].entries.add(entry)
                allow_from_node = False
                for cidr in sp.source_ranges:
                    sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].entries.add(f"{entry},{cidr}")
                    if node_ip_addr is not None and node_ip_addr in ipaddress.ip_network(cidr):
                        allow_from_node = True
                if allow_from_node:
                    sets["KUBE-LOAD-BALANCER-SOURCE-IP"].entries.add(f"{entry},{ip}")
                else:
                    lb_no_node_access.append((ip, proto, sp.port))
            add_vs(
                sp,
                ip,
                sp.port,
                "load-balancer",
                ip not in node_address_set,
                sp.external_policy_local,
            )
        if sp.node_port:
            if not node_ips:
                continue
            if proto == "sctp":
                np_entries = [f"{ip},{proto}:{sp.node_port}" for ip in node_ips]
                np_set, np_local = "KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
            else:
                np_entries = [str(sp.node_port)]
                np_set = f"KUBE-NODE-PORT-{proto.upper()}"
                np_local = f"KUBE-NODE-PORT-LOCAL-{proto.upper()}"
            sets[np_set].entries.update(np_entries)
            if sp.external_policy_local:
                sets[np_local].entries.update(np_entries)
            for ip in node_ips:
                add_vs(sp, ip, sp.node_port, "node-port", False, sp.external_policy_local)
        if sp.health_check_node_port:
            sets["KUBE-HEALTH-CHECK-NODE-PORT"].entries.add(str(sp.health_check_node_port))

    state.bound_addresses = list(bound)
    sets["KUBE-IPVS-IPS"].entries = set(bound)
    _write_iptables(state, view, lb_no_node_access)
    return state


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
