"""The iptables proxier's rules for one node (pkg/proxy/iptables/proxier.go syncProxyRules).

Produces the Ruleset of one full sync: the restore payload kube-proxy feeds to
``iptables-restore --noflush``, filter table then nat table, rules in kube-proxy's write
order (services in input order, where kube-proxy's own order is Go map order). The jump
rules from the built-in chains, which kube-proxy installs with ``iptables -I`` outside the
restore, are available from ``builtin_jumps()``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from ..model.cluster import paused_gc
from ..netfilter.iptables_text import render_rule
from ..netfilter.restore import NodeTables, RestoreError
from ..netfilter.ruleset import Chain, Opt, Rule, Ruleset, Table
from ..proxy.options import ProxyOptions
from ..proxy.view import ProxyView, ServicePortInfo, categorize_endpoints
from .proxier import Key, Proxier

LARGE_CLUSTER_ENDPOINTS = 1000  # more endpoints than this: per-endpoint comments dropped
NODEPORTS_COMMENT = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
LOCALHOST_NPS_COUNTER = "localhost_nps_accepted_pkts"
INVALID_DROPPED_COUNTER = "ct_state_invalid_dropped_pkts"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _hash16(text: str) -> str:
    """First 16 characters of base32(sha256(text)): 80 bits, i.e. the first 10 bytes.
    (base64.b32encode is pure Python and was the compiler's largest cost.)"""
    n = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    return "".join([_B32[(n >> shift) & 31] for shift in range(75, -5, -5)])


def service_chain_hash(spn: str, proto: str) -> str:
    """portProtoHash: shared by KUBE-SVC-, KUBE-SVL-, KUBE-EXT- and KUBE-FW- chains."""
    return _hash16(spn + proto)


def endpoint_chain(spn: str, proto: str, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash16(spn + proto + endpoint)


def probability(n: int) -> str:
    """Go's fmt.Sprintf("%0.10f", 1.0/float64(n))."""
    return f"{1.0 / n:0.10f}"


_MODULES: dict[str, Opt] = {}


def _m(module: str) -> Opt:
    opt = _MODULES.get(module)
    if opt is None:
        opt = _MODULES[module] = Opt("-m", (module,))
    return opt


def _o(flag: str, *args: str, negated: bool = False) -> Opt:
    return Opt(flag, args, negated)


_SHARED: dict[tuple[str, str], Opt] = {}


def _shared(flag: str, arg: str) -> Opt:
    """Options with few distinct values (-p tcp, --dport 80, -j KUBE-MARK-MASQ, ...) are
    made once and shared by every rule: a 100k-service ruleset has millions of them."""
    opt = _SHARED.get((flag, arg))
    if opt is None:
        opt = _SHARED[(flag, arg)] = Opt(flag, (arg,))
    return opt


def _comment(text: str) -> tuple[Opt, Opt]:
    return (_m("comment"), _o("--comment", text))


def _jump(target: str) -> Opt:
    return _o("-j", target)


def _proto(proto: str) -> tuple[Opt, Opt]:
    return (_m(proto), _shared("-p", proto))


def builtin_jumps() -> list[tuple[str, str, tuple[Opt, ...]]]:
    """(table, chain, rule options) kube-proxy ensures at the top of the built-in chains,
    in the order it processes them (each is prepended, so later ones end up first)."""
    new = (_m("conntrack"), _o("--ctstate", "NEW"))
    entries = [
        (
            "filter",
            "INPUT",
            "KUBE-EXTERNAL-SERVICES",
            "kubernetes externally-visible service portals",
            new,
        ),
        (
            "filter",
            "FORWARD",
            "KUBE-EXTERNAL-SERVICES",
            "kubernetes externally-visible service portals",
            new,
        ),
        ("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports", ()),
        ("filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", new),
        ("filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", new),
        ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", ()),
        ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", new),
        ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", new),
        ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", new),
        ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", ()),
        ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals", ()),
        ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules", ()),
    ]
    out = [
        (table, chain, (*extra, *_comment(comment), _jump(target)))
        for table, chain, target, comment, extra in entries
    ]
    out += [
        ("filter", "INPUT", (_jump("KUBE-FIREWALL"),)),
        ("filter", "OUTPUT", (_jump("KUBE-FIREWALL"),)),
    ]
    return out


class _Writer:
    """Per-sync state: the two tables and the options every rule depends on."""

    def __init__(self, options: ProxyOptions, large_cluster: bool):
        self.o = options
        self.large = large_cluster
        self.ruleset = Ruleset(family=options.family)
        self.filter: Table = self.ruleset.table("filter")
        self.nat: Table = self.ruleset.table("nat")
        self.split = 0  # nat rules before this: top-level chains; after: the port's own

    # detector fragments (§1.4); None when no detector is implemented
    def if_local(self) -> tuple[Opt, ...] | None:
        return self._detector(negated=False)

    def if_not_local(self) -> tuple[Opt, ...] | None:
        return self._detector(negated=True)

    def _detector(self, negated: bool) -> tuple[Opt, ...] | None:
        mode, value = self.o.detect_local_mode, self.o.detect_local_value
        if mode in ("ClusterCIDR", "NodeCIDR"):
            return (_o("-s", value, negated=negated),)
        if mode == "BridgeInterface":
            return (_o("-i", value, negated=negated),)
        if mode == "InterfaceNamePrefix":
            return (_o("-i", value + "+", negated=negated),)
        return None

    def endpoint_comment(self, text: str) -> tuple[Opt, ...]:
        return () if self.large else _comment(text)


SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
FILTER_CHAINS = (
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
)
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
# the chains service ports write to besides their own
TOP_FILTER_CHAINS = (
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-PROXY-FIREWALL",
    "KUBE-NODEPORTS",
)
TOP_NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS")
SHARED_CHAINS = {"filter": TOP_FILTER_CHAINS, "nat": TOP_NAT_CHAINS}


def compile_ruleset(
    view: ProxyView,
    *,
    changed: set[tuple[str, str]] | None = None,
    existing_nat_chains: Iterable[str] = (),
) -> Ruleset:
    """The restore payload of one sync for the view's node.

    ``changed`` None is a full sync; otherwise a partial one, where the per-service chains
    (SVC, SVL, EXT, FW, SEP) are written only for these (namespace, name) services.
    ``existing_nat_chains`` are the nat chains on the node now: service chains among them
    that this sync no longer uses are flushed and deleted (``-X``), as kube-proxy does after
    reading ``iptables-save -t nat``.
    """
    proxier = IptablesProxier(view.options)
    with paused_gc():
        return proxier.compile(view, changed, stale_from=existing_nat_chains).payload


def _render_rules(rules: list[Rule]) -> str:
    return "".join([render_rule(r) + "\n" for r in rules])


def _decl(chain: Chain) -> str:
    return f":{chain.name} {chain.policy} [{chain.packets}:{chain.bytes}]\n"


def _group(rules: list[Rule]) -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for rule in rules:
        out.setdefault(rule.chain, []).append(rule)
    return out


def _merge(into: dict[str, list[Rule]], rules: dict[str, list[Rule]]) -> None:
    for chain, chain_rules in rules.items():
        have = into.get(chain)
        if have is None:
            into[chain] = list(chain_rules)
        else:
            have.extend(chain_rules)


class _PortRules:
    """What one service port writes, kept until the port changes: kube-proxy's
    servicePortInfo keeps the chain names (hashes) per service port; here the rules
    written from them, grouped by chain, their jump targets and their text are kept as
    well, so that a sync costs the changed ports plus joining the unchanged ones' lists."""

    __slots__ = (
        "active",
        "extra",
        "filter",
        "filter_targets",
        "for_",
        "nat_all",
        "nat_chains",
        "nat_own_by_chain",
        "nat_services",
        "nat_top",
        "nat_top_targets",
        "sp",
        "t_decl",
        "t_filter",
        "t_nat_all",
        "t_nat_top",
        "top",
    )

    def __init__(self, sp: ServicePortInfo, for_: tuple[bool, str | None], w: _Writer):
        self.sp = sp  # the view's object: unchanged ports keep theirs between syncs
        self.for_ = for_  # (large cluster, node zone) the rules were written for
        self.active = frozenset(_write_service_port(w, sp, True))
        self.filter = w.filter.rules
        self.nat_top = w.nat.rules[: w.split]
        self.nat_all = w.nat.rules
        self.nat_chains = w.nat.chains
        # the port's rules in the shared chains, by chain (TOP_FILTER_CHAINS, then
        # TOP_NAT_CHAINS), and their jump targets
        self.top = tuple(
            [r for r in rules if r.chain == c]
            for rules, chains in ((self.filter, TOP_FILTER_CHAINS), (self.nat_top, TOP_NAT_CHAINS))
            for c in chains
        )
        # most ports write one rule, in nat KUBE-SERVICES; the others are joined apart
        self.nat_services = self.top[len(TOP_FILTER_CHAINS)]
        self.extra = bool(self.filter) or len(self.nat_services) != len(self.nat_top)
        self.filter_targets = [t for r in self.filter if (t := _target(r))]
        self.nat_top_targets = [t for r in self.nat_top if (t := _target(r))]
        self.nat_own_by_chain = _group(w.nat.rules[w.split :])
        self.t_filter = _render_rules(self.filter)
        self.t_decl = "".join([_decl(c) for c in self.nat_chains.values()])
        self.t_nat_top = _render_rules(self.nat_top)
        self.t_nat_all = self.t_nat_top + _render_rules(w.nat.rules[w.split :])


def _target(rule: Rule) -> str | None:
    for opt in reversed(rule.opts):
        if opt.flag == "-j":
            return opt.args[0]
    return None


_ATTRS = {name: operator.attrgetter(name) for name in _PortRules.__slots__}


def _joined(prs: list[_PortRules], attr: str) -> list:
    """The ports' lists (or strings) under ``attr``, concatenated (at C speed)."""
    return list(itertools.chain.from_iterable(map(_ATTRS[attr], prs)))


@dataclass(slots=True)
class IptablesSync:
    """One iptables proxier sync: the restore payload, its text, and the outcome."""

    full: bool
    payload: Ruleset
    text: str = ""
    error: str | None = None
    # for NodeTables.apply: the rules by table and chain; the shared chains' jump targets
    grouped: dict[str, dict[str, list[Rule]]] = field(default_factory=dict, repr=False)
    shared: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    targets: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class IptablesProxier(Proxier[IptablesSync]):
    """kube-proxy's iptables proxier for one node: ``sync`` compiles the restore payload
    (full, or partial for the changed Services) and applies it to the node's tables
    (``node``), which it keeps with the jumps from the built-in chains; a failed restore
    changes nothing and makes the next sync full. Rules of unchanged service ports are
    reused from the last sync (``_PortRules``)."""

    mode = "iptables"

    def __init__(self, options: ProxyOptions, tables: Ruleset | None = None):
        self.options = options
        self.node = NodeTables(options.family, tables)
        self.need_full_sync = True
        self._ports: dict[int, _PortRules] = {}  # id(ServicePortInfo) -> its rules
        self._owners: dict[str, int] = {}  # service chain -> ports using it
        self._view: ProxyView | None = None  # the view and its version the cache follows
        self._version = 0

    def sync(
        self, view: ProxyView, changed: set[Key] | None = None, now: float = 0.0
    ) -> IptablesSync:
        """One syncProxyRules (``now`` is unused: iptables syncs have no timers)."""
        full = self.need_full_sync or changed is None
        with paused_gc():
            if full:
                for table, chain, opts in builtin_jumps():
                    self.node.ensure_rule(table, chain, opts)
            # the node chains are read (iptables-save) unless the kept ports tell them
            scan = full or self.node.reloaded or not self._ports
            self.node.reloaded = False
            result = self.compile(
                view,
                None if full else changed,
                stale_from=self.node.chains("nat") if scan else None,
                text=True,
                check_all=scan,
            )
            try:
                self.node.apply(result.payload, result.grouped, result.shared, result.targets)
                self.need_full_sync = False
            except RestoreError as exc:
                self.need_full_sync = True  # kube-proxy retries with a full sync
                result.error = str(exc)
        return result

    def compile(
        self,
        view: ProxyView,
        changed: set[Key] | None,
        *,
        stale_from: Iterable[str] | None = (),
        text: bool = False,
        check_all: bool = True,
    ) -> IptablesSync:
        """The payload of one sync (``changed`` None: full) without applying it.
        ``stale_from``: the nat chains on the node, whose service chains no port uses
        any more are deleted; None: the chains that changed or removed ports used (what
        the node holds besides the others' after a successful sync). ``text``: render
        the payload too (render(payload), from the ports' kept text)."""
        o = view.options
        large = view.total_endpoints > LARGE_CLUSTER_ENDPOINTS
        for_ = (large, o.node.zone)
        w = _Writer(o, large)
        filt, nat = w.filter, w.nat
        mark = o.mark
        v4 = o.ipv4
        localhost_nps = v4 and o.localhost_node_ports
        features = o.node.features

        for name in FILTER_CHAINS:
            filt.declare(name)
        if localhost_nps:
            filt.declare("KUBE-FIREWALL")
        for name in NAT_CHAINS:
            nat.declare(name)
        nat.append(
            "KUBE-POSTROUTING",
            _m("mark"),
            _o("--mark", f"{mark}/{mark}", negated=True),
            _jump("RETURN"),
        )
        nat.append("KUBE-POSTROUTING", _jump("MARK"), _o("--xor-mark", mark))
        masquerade = [*_comment("kubernetes service traffic requiring SNAT"), _jump("MASQUERADE")]
        if features.iptables_random_fully:
            masquerade.append(_o("--random-fully"))
        nat.append("KUBE-POSTROUTING", *masquerade)
        nat.append("KUBE-MARK-MASQ", _jump("MARK"), _o("--or-mark", mark))
        if localhost_nps:
            filt.append(
                "KUBE-FIREWALL",
                *_comment("block incoming localnet connections"),
                _o("-d", "127.0.0.0/8"),
                _o("-s", "127.0.0.0/8", negated=True),
                _m("conntrack"),
                _o("--ctstate", "RELATED,ESTABLISHED,DNAT", negated=True),
                _jump("DROP"),
            )
        filter_head, nat_head = list(filt.rules), list(nat.rules)

        # the service ports: rules reused while the port is the same object (the view
        # replaces the ports of changed Services) and the size class and zone hold;
        # everything below that touches every port runs in C (map, chain, join)
        sps = view.service_ports
        ids = list(map(id, sps))
        owners = self._owners
        gone: list[str] = []  # service chains of ports replaced or no longer in the view
        log = view.changes_since(self._version) if self._view is view else None
        valid = all(pr.for_ == for_ for pr in self._first(self._ports))
        ports = self._ports
        prs: list[_PortRules] | None = None
        if log is not None and valid:  # only the ports the view replaced
            removed, added = log
            for sp in removed:
                pr = ports.pop(id(sp), None)
                if pr is not None:
                    gone.extend(pr.active)
            for sp in added:
                ports[id(sp)] = self._port(sp, for_, o, large)
            try:
                prs = list(map(ports.__getitem__, ids))
            except KeyError:
                prs = None
            if prs is not None and len(ports) != len(prs):
                prs = None  # the cache lost track: map the view's ports afresh below
            fresh = added
        if prs is None:
            old = ports if valid else {}
            if old is not ports:
                gone.extend(c for pr in ports.values() for c in pr.active)
            # the None slots (ports not cached) are filled just below
            prs = cast("list[_PortRules]", list(map(old.get, ids)))
            fresh_at = [i for i, pr in enumerate(prs) if pr is None]
            for i in fresh_at:
                prs[i] = self._port(sps[i], for_, o, large)
            new_ports = dict(zip(ids, prs))
            for key in old.keys() - new_ports.keys():
                gone.extend(old[key].active)
            ports = new_ports
            fresh = [sps[i] for i in fresh_at]
        for c in gone:
            owners[c] -= 1
        self._ports = ports
        self._view, self._version = view, view.version

        # which ports write their own chains: all (full), else the changed Services'
        if changed is None:
            written: range | list[int] = range(len(prs))
        else:
            where = {v: i for i, v in enumerate(ids)} if len(changed) > 64 else None
            written = sorted(
                where[id(sp)] if where is not None else ids.index(id(sp))
                for key in changed
                for sp in view.by_service.get(key, ())
            )
        nat_lists = list(map(_ATTRS["nat_top"], prs))
        for i in written:
            nat_lists[i] = prs[i].nat_all
            nat.chains.update(prs[i].nat_chains)
        extra = list(itertools.compress(prs, map(_ATTRS["extra"], prs)))
        filt.rules.extend(_joined(extra, "filter"))
        nat.rules.extend(itertools.chain.from_iterable(nat_lists))

        grouped_filter = _group(filter_head)
        grouped_nat = _group(nat_head)
        tops = list(zip(*map(_ATTRS["top"], extra))) if extra else []
        chains = (*TOP_FILTER_CHAINS, *TOP_NAT_CHAINS)
        for k, c in enumerate(chains):
            into = grouped_filter if k < len(TOP_FILTER_CHAINS) else grouped_nat
            if c == "KUBE-SERVICES" and into is grouped_nat:  # every port has rules here
                rules: Iterable[Rule] = itertools.chain.from_iterable(
                    map(_ATTRS["nat_services"], prs)
                )
            else:
                rules = itertools.chain.from_iterable(tops[k]) if tops else iter(())
            into.setdefault(c, []).extend(rules)
        for i in written:
            grouped_nat.update(prs[i].nat_own_by_chain)
        filter_mid, nat_mid = len(filt.rules), len(nat.rules)

        # the NodePort dispatch rule(s), last in nat KUBE-SERVICES (§2.11)
        node_port_ips = o.node_port_ips()
        if node_port_ips is None:
            opts = [*_comment(NODEPORTS_COMMENT), _m("addrtype"), _o("--dst-type", "LOCAL")]
            if v4 and not o.localhost_node_ports:
                opts.append(_o("-d", "127.0.0.0/8", negated=True))
            elif not v4:
                opts.append(_o("-d", "::1/128", negated=True))
            nat.append("KUBE-SERVICES", *opts, _jump("KUBE-NODEPORTS"))
        else:
            for ip in node_port_ips:
                loopback = ip.startswith("127.") or ip == "::1"
                if loopback and (not v4 or not o.localhost_node_ports):
                    continue
                nat.append(
                    "KUBE-SERVICES",
                    *_comment(NODEPORTS_COMMENT),
                    _o("-d", ip),
                    _jump("KUBE-NODEPORTS"),
                )

        # stale service chains: declared (which flushes them) and deleted
        nat_decl_mid = len(nat.chains)
        released = {c for c in gone if not owners[c]}
        for c in released:
            del owners[c]
        if stale_from is None:  # the chains changed or removed ports gave up, node order
            stale_from = self.node.in_chain_order("nat", released)
        for chain in stale_from:
            if chain.startswith(SERVICE_CHAIN_PREFIXES) and chain not in owners:
                nat.declare(chain)
                nat.deleted.append(chain)

        if not features.conntrack_tcp_be_liberal:
            invalid = [_m("conntrack"), _o("--ctstate", "INVALID")]
            if features.nfacct:
                invalid += [_m("nfacct"), _o("--nfacct-name", INVALID_DROPPED_COUNTER)]
            filt.append("KUBE-FORWARD", *invalid, _jump("DROP"))
        filt.append(
            "KUBE-FORWARD",
            *_comment("kubernetes forwarding rules"),
            _m("mark"),
            _o("--mark", f"{mark}/{mark}"),
            _jump("ACCEPT"),
        )
        filt.append(
            "KUBE-FORWARD",
            *_comment("kubernetes forwarding conntrack rule"),
            _m("conntrack"),
            _o("--ctstate", "RELATED,ESTABLISHED"),
            _jump("ACCEPT"),
        )
        _merge(grouped_filter, _group(filt.rules[filter_mid:]))
        _merge(grouped_nat, _group(nat.rules[nat_mid:]))
        # jump targets of the shared chains' rules: the ports' kept lists, plus the
        # NodePort dispatch rules
        dispatch = [
            t for r in nat.rules[nat_mid:] if r.chain == "KUBE-SERVICES" and (t := _target(r))
        ]
        # (a port kept from the last sync jumps to its own chains, which stand: only
        # the new ports' jumps need checking, unless all are asked for)
        checked = prs if check_all or changed is None else [ports[id(sp)] for sp in fresh]
        targets = {
            "filter": _joined(checked, "filter_targets"),
            "nat": _joined(checked, "nat_top_targets") + dispatch,
        }
        result = IptablesSync(
            full=changed is None,
            payload=w.ruleset,
            grouped={"filter": grouped_filter, "nat": grouped_nat},
            shared=SHARED_CHAINS,
            targets=targets,
        )
        if text:
            out = ["*filter\n"]
            out += [_decl(c) for c in filt.chains.values()]
            out.append(_render_rules(filter_head))
            out += map(_ATTRS["t_filter"], extra)
            out.append(_render_rules(filt.rules[filter_mid:]))
            out.append("COMMIT\n*nat\n")
            nat_chains = list(nat.chains.values())
            out += [_decl(c) for c in nat_chains[: len(NAT_CHAINS)]]
            out += [prs[i].t_decl for i in written]
            out += [_decl(c) for c in nat_chains[nat_decl_mid:]]
            out.append(_render_rules(nat_head))
            texts = list(map(_ATTRS["t_nat_top"], prs))
            for i in written:
                texts[i] = prs[i].t_nat_all
            out += texts
            out.append(_render_rules(nat.rules[nat_mid:]))
            out += [f"-X {name}\n" for name in nat.deleted]
            out.append("COMMIT\n")
            result.text = "".join(out)
        return result

    def _port(
        self, sp: ServicePortInfo, for_: tuple[bool, str | None], o: ProxyOptions, large: bool
    ) -> _PortRules:
        """A port's rules written afresh, its chains counted as in use."""
        pr = _PortRules(sp, for_, _Writer(o, large))
        for c in pr.active:
            self._owners[c] = self._owners.get(c, 0) + 1
        return pr

    @staticmethod
    def _first(ports: dict[int, _PortRules]) -> list[_PortRules]:
        return [next(iter(ports.values()))] if ports else []


def _write_service_port(w: _Writer, sp: ServicePortInfo, write_chains: bool = True) -> set[str]:
    """Write one service port's rules; return the nat chains it keeps in use. With
    ``write_chains`` False (a partial sync, service unchanged) its own chains are left as
    they are on the node and only the top-level rules are written."""
    o = w.o
    filt, nat = w.filter, w.nat
    spn, proto = sp.spn, sp.proto
    h = service_chain_hash(spn, proto)
    svc_chain, svl_chain = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}"
    ext_chain, fw_chain = f"KUBE-EXT-{h}", f"KUBE-FW-{h}"
    cat = categorize_endpoints(sp, o.node.name, o.node.zone)
    sep_names = {ep.string: endpoint_chain(spn, proto, ep.string) for ep in cat.all_reachable}

    has_endpoints = cat.has_any
    internal_chain = svl_chain if sp.internal_policy_local else svc_chain
    external_chain = svl_chain if sp.external_policy_local else svc_chain
    has_internal = has_endpoints and not (sp.internal_policy_local and not cat.local)
    has_external = has_endpoints and not (sp.external_policy_local and not cat.local)
    uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
    uses_local_chain = bool(cat.local) and sp.uses_local_endpoints
    uses_ext_chain = has_endpoints and sp.externally_accessible
    uses_fw_chain = has_endpoints and bool(sp.lb_ips) and bool(sp.source_ranges)

    if not has_endpoints:
        internal_verdict = external_verdict = "REJECT"
        verdict_comment = f"{spn} has no endpoints"
    else:
        internal_verdict = external_verdict = "DROP"  # used only when local is missing
        verdict_comment = f"{spn} has no local endpoints"

    proto_opts = _proto(proto)

    def dest(ip: str, port: int) -> tuple[Opt, ...]:
        return (*proto_opts, _o("-d", ip), _shared("--dport", str(port)))

    # 1. cluster IP
    if has_internal:
        nat.append(
            "KUBE-SERVICES",
            *_comment(f"{spn} cluster IP"),
            *dest(sp.cluster_ip, sp.port),
            _jump(internal_chain),
        )
    else:
        filt.append(
            "KUBE-SERVICES",
            *_comment(verdict_comment),
            *dest(sp.cluster_ip, sp.port),
            _jump(internal_verdict),
        )
    # 2. external IPs
    for ip in sp.external_ips:
        if has_endpoints:
            nat.append(
                "KUBE-SERVICES",
                *_comment(f"{spn} external IP"),
                *dest(ip, sp.port),
                _jump(ext_chain),
            )
        if not has_external:
            filt.append(
                "KUBE-EXTERNAL-SERVICES",
                *_comment(verdict_comment),
                *dest(ip, sp.port),
                _jump(external_verdict),
            )
    # 3. load-balancer IPs
    for ip in sp.lb_ips:
        if has_endpoints:
            nat.append(
                "KUBE-SERVICES",
                *_comment(f"{spn} loadbalancer IP"),
                *dest(ip, sp.port),
                _jump(fw_chain if uses_fw_chain else ext_chain),
            )
        if uses_fw_chain:
            filt.append(
                "KUBE-PROXY-FIREWALL",
                *_comment(f"{spn} traffic not accepted by {fw_chain}"),
                *dest(ip, sp.port),
                _jump("DROP"),
            )
    if not has_external:
        for ip in sp.lb_ips:
            filt.append(
                "KUBE-EXTERNAL-SERVICES",
                *_comment(verdict_comment),
                *dest(ip, sp.port),
                _jump(external_verdict),
            )
    # 4. node port
    if sp.node_port:
        np_ = str(sp.node_port)
        if has_endpoints:
            if o.ipv4 and o.localhost_node_ports and o.node.features.nfacct:
                nat.append(
                    "KUBE-NODEPORTS",
                    *_comment(spn),
                    *proto_opts,
                    _o("-d", "127.0.0.0/8"),
                    _o("--dport", np_),
                    _m("nfacct"),
                    _o("--nfacct-name", LOCALHOST_NPS_COUNTER),
                    _jump(ext_chain),
                )
            nat.append(
                "KUBE-NODEPORTS", *_comment(spn), *proto_opts, _o("--dport", np_), _jump(ext_chain)
            )
        if not has_external:
            filt.append(
                "KUBE-EXTERNAL-SERVICES",
                *_comment(verdict_comment),
                _m("addrtype"),
                _o("--dst-type", "LOCAL"),
                *proto_opts,
                _o("--dport", np_),
                _jump(external_verdict),
            )
    # 5. health check node port
    if sp.health_check_node_port:
        filt.append(
            "KUBE-NODEPORTS",
            *_comment(f"{spn} health check node port"),
            _m("tcp"),
            _o("-p", "tcp"),
            _o("--dport", str(sp.health_check_node_port)),
            _jump("ACCEPT"),
        )

    active = set(sep_names.values())
    if uses_cluster_chain:
        active.add(svc_chain)
    if uses_local_chain:
        active.add(svl_chain)
    if uses_ext_chain:
        active.add(ext_chain)
    if uses_fw_chain:
        active.add(fw_chain)
    w.split = len(nat.rules)  # the rules after this are the port's own chains'
    if not write_chains:
        return active

    # 7. internal masquerade
    if has_internal:
        args = (*_comment(f"{spn} cluster IP"), *dest(sp.cluster_ip, sp.port))
        if o.masquerade_all:
            nat.append(internal_chain, *args, _jump("KUBE-MARK-MASQ"))
        elif (not_local := w.if_not_local()) is not None:
            nat.append(internal_chain, *args, *not_local, _jump("KUBE-MARK-MASQ"))
    # 8. external traffic chain
    if uses_ext_chain:
        nat.declare(ext_chain)
        if not sp.external_policy_local:
            nat.append(
                ext_chain,
                *_comment(f"masquerade traffic for {spn} external destinations"),
                _jump("KUBE-MARK-MASQ"),
            )
        else:
            if (local := w.if_local()) is not None:
                nat.append(
                    ext_chain,
                    *_comment(f"pod traffic for {spn} external destinations"),
                    *local,
                    _jump(svc_chain),
                )
            nat.append(
                ext_chain,
                *_comment(f"masquerade LOCAL traffic for {spn} external destinations"),
                _m("addrtype"),
                _o("--src-type", "LOCAL"),
                _jump("KUBE-MARK-MASQ"),
            )
            nat.append(
                ext_chain,
                *_comment(f"route LOCAL traffic for {spn} external destinations"),
                _m("addrtype"),
                _o("--src-type", "LOCAL"),
                _jump(svc_chain),
            )
        if has_external:
            nat.append(ext_chain, _jump(external_chain))
    # 9. firewall chain
    if uses_fw_chain:
        nat.declare(fw_chain)
        lb_comment = _comment(f"{spn} loadbalancer IP")
        for cidr in sp.source_ranges:
            nat.append(fw_chain, *lb_comment, _o("-s", cidr), _jump(ext_chain))
        if _node_ip_in(o, sp.source_ranges):
            for ip in sp.lb_ips:
                nat.append(fw_chain, *lb_comment, _o("-s", ip), _jump(ext_chain))
        nat.append(
            fw_chain, *_comment(f"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL")
        )
    # 10. service -> endpoint chains
    if uses_cluster_chain:
        nat.declare(svc_chain)
        _write_endpoint_dispatch(w, sp, svc_chain, cat.cluster, sep_names)
    if uses_local_chain:
        nat.declare(svl_chain)
        _write_endpoint_dispatch(w, sp, svl_chain, cat.local, sep_names)
    # 11. endpoint chains
    comment = w.endpoint_comment(spn)
    to_masq = _shared("-j", "KUBE-MARK-MASQ")
    dnat = _shared("-j", "DNAT")
    for ep in cat.all_reachable:
        chain = sep_names[ep.string]
        nat.declare(chain)
        nat.append(chain, *comment, _o("-s", ep.ip), to_masq)
        affinity = (_m("recent"), _o("--name", chain), _o("--set")) if sp.affinity_timeout else ()
        nat.append(chain, *comment, *affinity, *proto_opts, dnat, _o("--to-destination", ep.string))
    return active


def _write_endpoint_dispatch(
    w: _Writer, sp: ServicePortInfo, chain: str, endpoints, sep_names: dict[str, str]
) -> None:
    spn = sp.spn
    if sp.affinity_timeout:
        for ep in endpoints:
            sep = sep_names[ep.string]
            w.nat.append(
                chain,
                *w.endpoint_comment(f"{spn} -> {ep.string}"),
                _m("recent"),
                _o("--name", sep),
                _o("--rcheck"),
                _o("--seconds", str(sp.affinity_timeout)),
                _o("--reap"),
                _jump(sep),
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        sep = sep_names[ep.string]
        stat = (
            (
                _m("statistic"),
                _shared("--mode", "random"),
                _shared("--probability", probability(n - i)),
            )
            if i < n - 1
            else ()
        )
        w.nat.append(chain, *w.endpoint_comment(f"{spn} -> {ep.string}"), *stat, _jump(sep))


def _node_ip_in(o: ProxyOptions, cidrs: list[str]) -> bool:
    """Does a source range hold the node IP (kube-proxy's nodeIP of this family)?"""
    node_ip = o.node.node_ips_by_family().get(o.family)
    if node_ip is None:
        return False
    addr = ipaddress.ip_address(node_ip)
    return any(addr in n for n in map(ipaddress.ip_network, cidrs) if n.version == addr.version)
