"""The nftables proxier's table for one node (pkg/proxy/nftables/proxier.go syncProxyRules).

Follows kube-proxy as of the fixtures' commit (B, 81810de6; see SPEC §4): base chains
``filter-prerouting-pre-dnat``/``filter-output-pre-dnat`` at dstnat-10, the regular filter
chains at priority 0, ``cluster-ips-check`` jumped from filter-forward and filter-output,
and the clusterIP masquerade rule without the port match. IPv4 only (``ip kube-proxy``).

``NftProxier`` keeps what kube-proxy keeps between syncs (the shadow copies of the six
element containers, stale chains with their age, whether the next sync must be full) and
turns each sync into the transaction(s) kube-proxy would run; ``NftProxier.table`` is the
node's ``ip kube-proxy`` table after them. ``compile_nftables`` is the table a first full
sync leaves on an empty node.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from itertools import islice
from typing import cast

from ..errors import InputError
from ..ipaddr import canonical_cidr
from ..model.cluster import Cluster, paused_gc
from ..netfilter.nft import (
    NO_RULES,
    NftChain,
    NftError,
    NftOp,
    NftRule,
    NftRuleset,
    NftSet,
    NftTransaction,
    chain_ref,
)
from ..proxy.options import ProxyOptions
from ..proxy.view import EndpointInfo, ProxyView, ServicePortInfo, categorize_endpoints
from .proxier import Key, Proxier

# knftables.NameLengthMax (256) - chainNamePrefixLengthMax (16)
CHAIN_NAME_BASE_MAX = 240
STALE_CHAIN_AGE = 1.0  # seconds before a flushed, unused service chain is deleted

MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
SERVICES = "services"
CLUSTER_IPS_CHECK = "cluster-ips-check"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
FIREWALL_CHECK = "firewall-check"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS = "cluster-ips"
NODEPORT_IPS = "nodeport-ips"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
FIREWALL_IPS = "firewall-ips"

DSTNAT, SRCNAT, FILTER = -100, 100, 0
# (name, type, hook, priority), in kube-proxy's order
BASE_CHAINS = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", DSTNAT - 10),
    ("filter-output-pre-dnat", "filter", "output", DSTNAT - 10),
    ("filter-input", "filter", "input", FILTER),
    ("filter-forward", "filter", "forward", FILTER),
    ("filter-output", "filter", "output", FILTER),
    ("nat-prerouting", "nat", "prerouting", DSTNAT),
    ("nat-output", "nat", "output", DSTNAT),
    ("nat-postrouting", "nat", "postrouting", SRCNAT),
)
# (jumped-to chain, base chain, extra match): order fixes the rule order in each base chain
JUMP_CHAINS = (
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting-pre-dnat", "ct state new"),
    (FIREWALL_CHECK, "filter-output-pre-dnat", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output", "ct state new"),
)
# the containers kube-proxy shadows, with their kind
STORED = (
    (CLUSTER_IPS, "set"),
    (SERVICE_IPS, "map"),
    (FIREWALL_IPS, "map"),
    (NO_ENDPOINT_SERVICES, "map"),
    (NO_ENDPOINT_NODEPORTS, "map"),
    (SERVICE_NODEPORTS, "map"),
)


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# base32 of 10 bits at a time: base64.b32encode is pure Python, and this runs per endpoint
_B32_PAIRS = [a + b for a in _B32 for b in _B32]


def hash_and_truncate(name: str) -> str:
    """First 8 chars of base32(sha256(name)), "-", name; cut to 240 chars with "..."."""
    v = int.from_bytes(hashlib.sha256(name.encode()).digest()[:5], "big")  # 40 bits
    pairs = _B32_PAIRS
    out = (
        f"{pairs[v >> 30]}{pairs[(v >> 20) & 1023]}{pairs[(v >> 10) & 1023]}"
        f"{pairs[v & 1023]}-{name}"
    )
    if len(out) > CHAIN_NAME_BASE_MAX:
        out = out[: CHAIN_NAME_BASE_MAX - 3] + "..."
    return out


def service_chain_base(sp: ServicePortInfo) -> str:
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name}")


def endpoint_chain_base(sp: ServicePortInfo, ep: EndpointInfo) -> str:
    ip = ep.ip.replace(":", ".")
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.proto}/{sp.port_name}__{ip}/{ep.port}")


def is_service_chain(name: str) -> bool:
    """kube-proxy's test: only per-service chains have a "/" in their name."""
    return "/" in name


def service_cidrs_for(
    cluster: Cluster, family: str = "IPv4", override: list[str] | None = None
) -> list[str]:
    """The service CIDRs of the proxier's family: ``override`` (``--service-cidr``) when
    given, else every ServiceCIDR object's CIDRs (kube-proxy's OnServiceCIDRsChanged)."""
    raw: list[tuple[str, str, str | None]]
    if override is not None:
        raw = [(c, "--service-cidr", None) for c in override]
    else:
        raw = [
            (c, "spec.cidrs", obj.ref) for obj in cluster.service_cidrs.values() for c in obj.cidrs
        ]
    out: list[str] = []
    for text, where, ref in raw:
        try:
            cidr = canonical_cidr(text.strip())
        except ValueError:
            raise InputError("invalid CIDR", obj=ref, field=where, value=text) from None
        if (":" in cidr) == (family == "IPv6") and cidr not in out:
            out.append(cidr)
    return out


@dataclass(slots=True)
class NftSyncResult:
    """One syncProxyRules: the stale-chain cleanup transaction (run first, separately)
    and the main transaction. ``ops`` is kube-proxy's LastTransaction.NumOperations()."""

    full: bool
    transaction: NftTransaction
    cleanup: NftTransaction | None = None
    error: str | None = None
    stale_chains: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ops(self) -> int:
        return len(self.transaction)

    @property
    def total_ops(self) -> int:
        """Both transactions' operations: the sync's cost in nft commands."""
        return len(self.transaction) + (len(self.cleanup) if self.cleanup else 0)

    @property
    def element_ops(self) -> int:
        """Set/map element adds and deletes in the main transaction."""
        return sum(1 for op in self.transaction.ops if op.kind == "element")

    @property
    def rule_ops(self) -> int:
        return sum(1 for op in self.transaction.ops if op.kind == "rule")


class _ElementStorage:
    """nftElementStorage: the proxier's copy of one set/map, so a sync sends only the
    difference (a changed value is a delete plus an add)."""

    def __init__(self, name: str, kind: str, proxier: NftProxier | None = None):
        self.name, self.kind = name, kind
        self.proxier = proxier  # records ensures per service port while it writes
        self.elements: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.leftover: set[tuple[str, ...]] = set()

    def load(self, table: NftRuleset) -> None:
        """A full sync starts from what the table holds (nothing is re-added)."""
        existing = table.sets.get(self.name)
        self.elements = (
            {} if existing is None else {k: e.value for k, e in existing.elements.items()}
        )
        self.leftover = set(self.elements)

    def ensure(
        self,
        tx: NftTransaction,
        key: tuple[str, ...],
        value: tuple[str, ...] = (),
        comment: str | None = None,
    ) -> None:
        owner = self.proxier
        if owner is not None and owner._recording is not None:
            owner._recording.append((self.name, key, value, comment))
            if owner._deferred:  # run later, in order, by NftProxier._partial
                tx.ops.append(NftOp("ensure", self.name, (key, value, comment)))
                return
        have = self.elements.get(key)
        if have is None:
            tx.add_element(self.name, key, value, comment)
            self.elements[key] = value
            return
        if have != value:
            tx.delete_element(self.name, key)
            tx.add_element(self.name, key, value, comment)
            self.elements[key] = value
        self.leftover.discard(key)

    def cleanup(self, tx: NftTransaction) -> None:
        """Delete what this sync did not ensure (``leftover``: set by the sync)."""
        for key in self.leftover:
            tx.delete_element(self.name, key)
            del self.elements[key]
        self.leftover = set()


class _NftPort:
    """What one service port wrote: its element ensures, chains and affinity sets."""

    __slots__ = ("affinity", "chains", "elements", "sp", "zone")

    def __init__(self, sp: ServicePortInfo, zone: str | None):
        self.sp = sp  # the view's object (kept alive: its id keys the cache)
        self.zone = zone
        self.elements: list[tuple[str, tuple[str, ...], tuple[str, ...], str | None]] = []
        # tuples once written (a set per service port is several times the memory)
        self.chains: tuple[str, ...] = ()
        self.affinity: tuple[str, ...] = ()


class NftProxier(Proxier[NftSyncResult]):
    """kube-proxy's nftables proxier for one node, minus the Kubernetes watches: feed it
    the node's ProxyView at each sync (with the services that changed since the last one)."""

    def __init__(
        self,
        options: ProxyOptions,
        service_cidrs: list[str] | None = None,
        table: NftRuleset | None = None,
    ):
        if options.family != "IPv4":
            raise InputError(
                "the nftables mode is emulated for IPv4 only", field="family", value=options.family
            )
        self.o = options
        self.service_cidrs = list(service_cidrs or [])
        for c in self.service_cidrs:
            try:
                ipaddress.IPv4Network(c)
            except ValueError:
                raise InputError(
                    "invalid IPv4 service CIDR", field="--service-cidr", value=c
                ) from None
        self.table = table if table is not None else NftRuleset()
        self.need_full_sync = True
        self.flushed = False  # base chains re-created once per proxier (priority changes)
        self.stale_chains: dict[str, float] = {}
        self.storage = {name: _ElementStorage(name, kind, self) for name, kind in STORED}
        self.syncs: list[NftSyncResult] = []
        # what each service port wrote at the last sync (kube-proxy's servicePortInfo
        # keeps the chain names; here its elements and chains too), and how many ports
        # hold each element, chain and affinity set
        self._ports: dict[int, _NftPort] = {}
        self._owners: dict[tuple[str, tuple[str, ...]], int] = {}
        self._chain_owners: dict[str, int] = {}
        self._affinity_owners: dict[str, int] = {}
        self._recording: list | None = None
        self._deferred = False
        self._stale_now: list[str] = []
        self._last_partial = False  # the last sync was a partial one from the kept ports
        self._view: ProxyView | None = None  # the view and its version the ports follow
        self._version = 0

    # ------------------------------------------------------------------ detector
    def _detector(self, negated: bool) -> str | None:
        mode, value = self.o.detect_local_mode, self.o.detect_local_value
        op = "!= " if negated else ""
        if mode in ("ClusterCIDR", "NodeCIDR"):
            return f"ip saddr {op}{value}"
        if mode == "BridgeInterface":
            return f"iifname {op}{value}"
        if mode == "InterfaceNamePrefix":
            return f"iifname {op}{value}*"
        return None

    # ------------------------------------------------------------------ setup
    def _setup(self, tx: NftTransaction) -> None:
        """setupNFTables: the table, base chains, fixed chains, sets and maps."""
        mark = self.o.mark
        tx.add("table", "rules for kube-proxy")
        if not self.flushed:  # add+delete once so changed base-chain priorities apply
            for name, *_ in BASE_CHAINS:
                tx.add("chain", NftChain(name))
                tx.delete("chain", NftChain(name))
            self.flushed = True
        for name, ctype, hook, prio in BASE_CHAINS:
            chain = NftChain(name, ctype, hook, prio)
            tx.add("chain", chain)
            tx.flush("chain", chain)
        created: set[str] = set()

        def ensure(chain: str) -> None:
            if chain not in created:
                created.add(chain)
                tx.add_chain(chain)
                tx.flush("chain", NftChain(chain))

        for dst, src, extra in JUMP_CHAINS:
            ensure(dst)
            tx.add_rule(src, f"{extra} jump {dst}".strip())
        for top in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
            ensure(top)
        tx.add_rule(MARK_MASQ, f"mark set mark or {mark}")
        tx.add_rule(MASQUERADING, f"mark and {mark} == 0 return")
        tx.add_rule(MASQUERADING, f"mark set mark xor {mark}")
        tx.add_rule(MASQUERADING, "masquerade fully-random")

        tx.add("set", NftSet(CLUSTER_IPS, "set", "ipv4_addr", comment="Active ClusterIPs"))
        tx.add_rule(
            CLUSTER_IPS_CHECK,
            f"ip daddr @{CLUSTER_IPS} reject",
            "Reject traffic to invalid ports of ClusterIPs",
        )
        if self.service_cidrs:
            tx.add_rule(
                CLUSTER_IPS_CHECK,
                f"ip daddr {{ {','.join(self.service_cidrs)} }} drop",
                "Drop traffic to unallocated ClusterIPs",
            )

        node_port_ips = self.o.node_port_ips()
        nodeport_set = NftSet(
            NODEPORT_IPS, "set", "ipv4_addr", comment="IPs that accept NodePort traffic"
        )
        tx.add("set", nodeport_set)
        if node_port_ips is None:
            tx.delete("set", nodeport_set)
        else:
            tx.flush("set", nodeport_set)
            for ip in node_port_ips:
                if not ipaddress.ip_address(ip).is_loopback:  # localhost NodePorts: never
                    tx.add_element(NODEPORT_IPS, (ip,))

        tx.add(
            "map",
            NftSet(
                NO_ENDPOINT_SERVICES,
                "map",
                "ipv4_addr . inet_proto . inet_service : verdict",
                comment="vmap to drop or reject packets to services with no endpoints",
            ),
        )
        tx.add(
            "map",
            NftSet(
                NO_ENDPOINT_NODEPORTS,
                "map",
                "inet_proto . inet_service : verdict",
                comment="vmap to drop or reject packets to service nodeports with no endpoints",
            ),
        )
        tx.add_chain(
            REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports"
        )
        tx.flush("chain", NftChain(REJECT_CHAIN))
        tx.add_rule(REJECT_CHAIN, "reject")
        tx.add_rule(
            SERVICE_ENDPOINTS_CHECK,
            f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
        )
        nodeport_dst = (
            "ip daddr != 127.0.0.0/8" if node_port_ips is None else f"ip daddr @{NODEPORT_IPS}"
        )
        tx.add_rule(
            NODEPORT_ENDPOINTS_CHECK,
            f"{nodeport_dst} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",
        )

        tx.add(
            "map",
            NftSet(
                FIREWALL_IPS,
                "map",
                "ipv4_addr . inet_proto . inet_service : verdict",
                comment="destinations that are subject to LoadBalancerSourceRanges",
            ),
        )
        ensure(FIREWALL_CHECK)
        tx.add_rule(FIREWALL_CHECK, f"ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}")

        tx.add(
            "map",
            NftSet(
                SERVICE_IPS,
                "map",
                "ipv4_addr . inet_proto . inet_service : verdict",
                comment="ClusterIP, ExternalIP and LoadBalancer IP traffic",
            ),
        )
        tx.add(
            "map",
            NftSet(
                SERVICE_NODEPORTS,
                "map",
                "inet_proto . inet_service : verdict",
                comment="NodePort traffic",
            ),
        )
        tx.add_rule(SERVICES, f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
        nodeport_dst = (
            "fib daddr type local ip daddr != 127.0.0.0/8"
            if node_port_ips is None
            else f"ip daddr @{NODEPORT_IPS}"
        )
        tx.add_rule(SERVICES, f"{nodeport_dst} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
        for s in self.storage.values():
            s.load(self.table)

    # ------------------------------------------------------------------ sync
    def sync(
        self, view: ProxyView, changed: set[tuple[str, str]] | None = None, now: float = 0.0
    ) -> NftSyncResult:
        """One syncProxyRules at emulated time ``now`` (seconds). ``changed`` None (or a
        pending full sync) rewrites every service; otherwise only the per-service chains of
        these (namespace, name) services are rewritten."""
        with paused_gc():
            return self._sync(view, changed, now)

    def _sync(
        self, view: ProxyView, changed: set[tuple[str, str]] | None, now: float
    ) -> NftSyncResult:
        try_partial = not self.need_full_sync and changed is not None
        cleanup: NftTransaction | None = None
        was_stale = list(self.stale_chains)
        if self.stale_chains:
            cleanup = NftTransaction()
            for chain, since in list(self.stale_chains.items()):
                if since < now - STALE_CHAIN_AGE:
                    cleanup.delete("chain", NftChain(chain))
                    del self.stale_chains[chain]
            if len(cleanup):
                try:
                    self.table.apply(cleanup)
                except NftError:
                    pass  # the chains come back as stale (with a new time) below
            else:
                cleanup = None

        tx = NftTransaction()
        self._last_partial = try_partial and self._partial(tx, view, changed, now, was_stale)  # type: ignore[arg-type]
        if not self._last_partial:
            self._every_port(tx, view, changed if try_partial else None, now)

        result = NftSyncResult(
            full=not try_partial, transaction=tx, cleanup=cleanup, stale_chains=self._stale_now
        )
        try:
            self.table.apply(tx)
            self.need_full_sync = False
        except NftError as exc:
            result.error = exc.message
            self.need_full_sync = True  # the change trackers are spent: resync everything
            self.stale_chains.clear()
            self._ports = {}
        self.syncs.append(result)
        return result

    def _every_port(
        self, tx: NftTransaction, view: ProxyView, changed: set[Key] | None, now: float
    ) -> None:
        """The sync as kube-proxy writes it: every service port visited (a full sync
        writes them all, a partial one the changed Services' chains and every port's
        set and map elements), then the whole table checked for stale chains and sets."""
        if changed is None:
            self._setup(tx)
        else:
            for s in self.storage.values():
                s.leftover = set(s.elements)
        active_chains: set[str] = set()
        active_affinity: set[str] = set()
        zone = self.o.node.zone
        ports: dict[int, _NftPort] = {}
        for sp in view.service_ports:
            skip = changed is not None and (sp.namespace, sp.name) not in changed
            port = ports[id(sp)] = _NftPort(sp, zone)
            self._recording = port.elements
            self._write_port(tx, port, skip, changed is None)
            active_chains.update(port.chains)
            active_affinity.update(port.affinity)
        self._recording = None
        self._ports = ports
        self._view, self._version = view, view.version
        self._count_owners()

        stale_now: list[str] = []
        for name in list(self.table.chains):
            if not is_service_chain(name):
                continue
            if name not in active_chains:
                tx.flush("chain", NftChain(name))
                self.stale_chains[name] = now
                stale_now.append(name)
            else:
                self.stale_chains.pop(name, None)
        for name in list(self.table.sets):
            if name.startswith("affinity-") and name not in active_affinity:
                tx.delete("set", NftSet(name, "set", "ipv4_addr"))
        for s in self.storage.values():
            s.cleanup(tx)
        self._stale_now = stale_now

    def _count_owners(self) -> None:
        owners: dict[tuple[str, tuple[str, ...]], int] = {}
        chains: dict[str, int] = {}
        affinity: dict[str, int] = {}
        for port in self._ports.values():
            for name, key, _, _ in port.elements:
                owners[(name, key)] = owners.get((name, key), 0) + 1
            for c in port.chains:
                chains[c] = chains.get(c, 0) + 1
            for a in port.affinity:
                affinity[a] = affinity.get(a, 0) + 1
        self._owners, self._chain_owners, self._affinity_owners = owners, chains, affinity

    def _partial(
        self,
        tx: NftTransaction,
        view: ProxyView,
        changed: set[Key],
        now: float,
        was_stale: list[str],
    ) -> bool:
        """A partial sync from what the ports wrote before: only the changed Services'
        ports are written; the others' elements and chains stand as they are (their
        element ensures would find the values already there). The same transaction as
        ``_every_port`` writes, at the cost of the change; False (nothing done) when that
        cannot be told without visiting every port (ports sharing an element)."""
        zone = self.o.node.zone
        old = self._ports
        if not old or any(p.zone != zone for p in islice(old.values(), 1)):
            return False
        log = view.changes_since(self._version) if self._view is view else None
        if log is None:
            return False  # the view's log does not reach back to the last sync
        removed, added = log
        if any(id(sp) not in old for sp in removed):
            return False
        written = {id(sp) for key in changed for sp in view.by_service.get(key, ())}
        if written != {id(sp) for sp in added}:
            return False  # ports to write that the view kept, or new ones not named
        sps = view.service_ports
        ids = list(map(id, sps))
        fresh = sorted(ids.index(id(sp)) for sp in added)
        gone = [old[id(sp)] for sp in removed]
        # write the new ports aside: chain and rule operations, element ensures deferred
        minus: dict[tuple[str, tuple[str, ...]], int] = {}  # what the gone ports held
        for port in gone:
            for name, key, _, _ in port.elements:
                minus[(name, key)] = minus.get((name, key), 0) + 1
        owners = self._owners
        scratch: list[tuple[int, NftTransaction, _NftPort]] = []
        for i in fresh:
            sp = sps[i]
            port = _NftPort(sp, zone)
            aside = NftTransaction()
            self._recording, self._deferred = port.elements, True
            try:
                self._write_port(aside, port, False, False)
            finally:
                self._recording, self._deferred = None, False
            for name, key, _, _ in port.elements:
                if owners.get((name, key), 0) > minus.get((name, key), 0):
                    return False  # another port keeps this element: visit them all
            scratch.append((i, aside, port))
        # the new ports' operations, in view order, ensures against the storage now
        for _, aside, _port in scratch:
            for op in aside.ops:
                if op.verb == "ensure":
                    # an "ensure" op carries _ElementSet.ensure's (key, value, comment)
                    key, value, comment = cast(
                        "tuple[tuple[str, ...], tuple[str, ...], str | None]", op.obj
                    )
                    self.storage[op.kind].ensure(tx, key, value, comment)
                else:
                    tx.ops.append(op)
        for port in gone:
            del old[id(port.sp)]
        for i, _, port in scratch:
            old[ids[i]] = port
        self._view, self._version = view, view.version
        for k, n in minus.items():
            owners[k] -= n
        # ownership: the ports gone give up theirs, the new ones take theirs
        chain_owners, affinity_owners = self._chain_owners, self._affinity_owners
        released: set[str] = set()
        released_affinity: set[str] = set()
        for port in gone:
            for c in port.chains:
                chain_owners[c] -= 1
                if not chain_owners[c]:
                    released.add(c)
            for a in port.affinity:
                affinity_owners[a] -= 1
                if not affinity_owners[a]:
                    released_affinity.add(a)
        for _, _, port in scratch:
            for name, key, _, _ in port.elements:
                owners[(name, key)] = owners.get((name, key), 0) + 1
            for c in port.chains:
                chain_owners[c] = chain_owners.get(c, 0) + 1
                self.stale_chains.pop(c, None)  # in use again
            for a in port.affinity:
                affinity_owners[a] = affinity_owners.get(a, 0) + 1
        for c in released | released_affinity:
            for d in (chain_owners, affinity_owners):
                if d.get(c) == 0:
                    del d[c]
        # stale chains: those no port uses that the table holds, in table order
        stale_now: list[str] = []
        # (a comprehension: ``set - dict.keys()`` would walk every owned chain)
        candidates = {c for c in released.union(was_stale) if c not in chain_owners}
        for name in self.table.in_chain_order(candidates):
            if is_service_chain(name):
                tx.flush("chain", NftChain(name))
                self.stale_chains[name] = now
                stale_now.append(name)
        gone_sets = (
            [n for n in self.table.sets if n in released_affinity] if released_affinity else []
        )
        for name in gone_sets:
            if name.startswith("affinity-") and name not in affinity_owners:
                tx.delete("set", NftSet(name, "set", "ipv4_addr"))
        # elements no port ensures any more
        for s in self.storage.values():
            s.leftover = {
                key
                for port in gone
                for name, key, _, _ in port.elements
                if name == s.name and not owners.get((name, key)) and key in s.elements
            }
            s.cleanup(tx)
        for k in [k for port in gone for k in ((n, key) for n, key, _, _ in port.elements)]:
            if owners.get(k) == 0:
                del owners[k]
        self._owners = owners
        self._stale_now = stale_now
        return True

    # ------------------------------------------------------------------ one service port
    def _write_port(self, tx: NftTransaction, port: _NftPort, skip: bool, full: bool) -> None:
        chains: set[str] = set()
        affinity: set[str] = set()
        self._write_service_port(tx, port.sp, skip, full, chains, affinity)
        port.chains, port.affinity = tuple(chains), tuple(affinity)

    def _write_service_port(
        self,
        tx: NftTransaction,
        sp: ServicePortInfo,
        skip: bool,
        full: bool,
        active: set[str],
        active_affinity: set[str],
    ) -> None:
        o = self.o
        proto, port = sp.proto, str(sp.port)
        spn = sp.spn
        base = service_chain_base(sp)
        cluster_chain, local_chain = f"service-{base}", f"local-{base}"
        external_chain, fw_chain = f"external-{base}", f"firewall-{base}"
        cat = categorize_endpoints(sp, o.node.name, o.node.zone)

        def ensure(chain: str, skip_creation: bool) -> None:
            if chain in active:
                return
            active.add(chain)
            if not skip_creation:
                obj = chain_ref(chain)  # one object for both operations (only its name is read)
                tx.add("chain", obj)
                tx.flush("chain", obj)

        # endpoint chains: on a full sync, one already holding exactly its rules is kept.
        # (The loop runs per endpoint, most of a large table: endpoint_chain_base's,
        # ensure's and the rules' work inlined, the service's part of each built once.)
        endpoints: list[tuple[EndpointInfo, str, str, list[str], bool]] = []
        have_chains = self.table.chains if full and not skip else None
        ep_prefix = f"{sp.namespace}/{sp.name}/{proto}/{sp.port_name}__"
        dnat = f"meta l4proto {proto} dnat to "
        affinity = sp.affinity_timeout
        ops = tx.ops
        for ep in cat.all_reachable:
            ep_base = hash_and_truncate(f"{ep_prefix}{ep.ip.replace(':', '.')}/{ep.port}")
            chain = "endpoint-" + ep_base
            aff = "affinity-" + ep_base if affinity else ""
            rules: list[str] = []  # not needed when skipped
            if not skip:
                rules.append(f"ip saddr {ep.ip} jump {MARK_MASQ}")
                if affinity:
                    rules.append(f"update @{aff} {{ ip saddr }}")
                rules.append(dnat + ep.string)
            keep = skip
            if have_chains:
                have = have_chains.get(chain)
                keep = have is not None and [r.full_text for r in have.rules] == rules
            if chain not in active:
                active.add(chain)
                if not keep:
                    obj = NftChain(chain, None, None, None, None, NO_RULES)  # chain_ref
                    ops.append(NftOp("add", "chain", obj))
                    ops.append(NftOp("flush", "chain", obj))
            if aff:
                active_affinity.add(aff)
            endpoints.append((ep, chain, aff, rules, keep))
        chain_of = {ep.string: chain for ep, chain, *_ in endpoints}

        uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
        if uses_cluster_chain:
            ensure(cluster_chain, skip)
        uses_local_chain = bool(cat.local) and sp.uses_local_endpoints
        if uses_local_chain:
            ensure(local_chain, skip)
        has_endpoints = cat.has_any
        internal_chain = local_chain if sp.internal_policy_local else cluster_chain
        has_internal = has_endpoints and not (sp.internal_policy_local and not cat.local)
        external_policy_chain = local_chain if sp.external_policy_local else cluster_chain
        has_external = has_endpoints and not (sp.external_policy_local and not cat.local)
        uses_external_chain = has_endpoints and sp.externally_accessible
        if uses_external_chain:
            ensure(external_chain, skip)
        if not has_endpoints:
            internal_verdict = external_verdict = f"goto {REJECT_CHAIN}"
        else:
            internal_verdict = external_verdict = "drop"  # used only when local is missing

        st = self.storage
        st[CLUSTER_IPS].ensure(tx, (sp.cluster_ip,))
        if has_internal:
            st[SERVICE_IPS].ensure(tx, (sp.cluster_ip, proto, port), (f"goto {internal_chain}",))
        else:
            st[NO_ENDPOINT_SERVICES].ensure(
                tx, (sp.cluster_ip, proto, port), (internal_verdict,), spn
            )
        for ip in sp.external_ips:
            if has_endpoints:
                st[SERVICE_IPS].ensure(tx, (ip, proto, port), (f"goto {external_chain}",))
            if not has_external:
                st[NO_ENDPOINT_SERVICES].ensure(tx, (ip, proto, port), (external_verdict,), spn)
        uses_fw_chain = bool(sp.lb_ips) and bool(sp.source_ranges)
        if uses_fw_chain:
            ensure(fw_chain, skip)
        for ip in sp.lb_ips:
            if has_endpoints:
                st[SERVICE_IPS].ensure(tx, (ip, proto, port), (f"goto {external_chain}",))
            if uses_fw_chain:
                st[FIREWALL_IPS].ensure(tx, (ip, proto, port), (f"goto {fw_chain}",))
        if not has_external:
            for ip in sp.lb_ips:
                st[NO_ENDPOINT_SERVICES].ensure(tx, (ip, proto, port), (external_verdict,), spn)
        if sp.node_port:
            np_ = str(sp.node_port)
            if has_endpoints:
                st[SERVICE_NODEPORTS].ensure(tx, (proto, np_), (f"goto {external_chain}",))
            if not has_external:
                st[NO_ENDPOINT_NODEPORTS].ensure(tx, (proto, np_), (external_verdict,), spn)
        if skip:
            return

        # internal traffic: masquerade off-cluster sources (B: no port match)
        if has_internal:
            if o.masquerade_all:
                tx.add_rule(internal_chain, f"ip daddr {sp.cluster_ip} jump {MARK_MASQ}")
            elif (not_local := self._detector(True)) is not None:
                tx.add_rule(
                    internal_chain, f"ip daddr {sp.cluster_ip} {not_local} jump {MARK_MASQ}"
                )
        if uses_external_chain:
            if not sp.external_policy_local:
                tx.add_rule(external_chain, f"jump {MARK_MASQ}")
            else:
                if (local := self._detector(False)) is not None:
                    tx.add_rule(
                        external_chain, f"{local} goto {cluster_chain}", "short-circuit pod traffic"
                    )
                tx.add_rule(
                    external_chain,
                    f"fib saddr type local jump {MARK_MASQ}",
                    "masquerade local traffic",
                )
                tx.add_rule(
                    external_chain,
                    f"fib saddr type local goto {cluster_chain}",
                    "short-circuit local traffic",
                )
            if has_external:
                tx.add_rule(external_chain, f"goto {external_policy_chain}")
        if uses_fw_chain:
            sources = list(sp.source_ranges)
            node_ip = o.node.node_ips_by_family().get("IPv4")
            if node_ip is not None and any(
                ipaddress.ip_address(node_ip) in ipaddress.ip_network(c) for c in sp.source_ranges
            ):
                sources += sp.lb_ips  # a node's request to its own VIP arrives from the VIP
            tx.add_rule(fw_chain, f"ip saddr != {{ {' , '.join(sources)} }} drop")
        if sp.affinity_timeout:
            for _, _, aff, _, _ in endpoints:
                tx.add(
                    "set",
                    NftSet(aff, "set", "ipv4_addr", ("dynamic", "timeout"), sp.affinity_timeout),
                )
        if uses_cluster_chain:
            self._write_dispatch(tx, sp, cluster_chain, cat.cluster, chain_of)
        if uses_local_chain:
            self._write_dispatch(tx, sp, local_chain, cat.local, chain_of)
        for _, chain, _, rules, keep in endpoints:
            if not keep:
                for text in rules:
                    ops.append(NftOp("add", "rule", NftRule(chain, text)))

    def _write_dispatch(
        self,
        tx: NftTransaction,
        sp: ServicePortInfo,
        chain: str,
        endpoints: list[EndpointInfo],
        chain_of: dict[str, str],
    ) -> None:
        """writeServiceToEndpointRules: affinity lookups, then one numgen vmap."""
        if sp.affinity_timeout:
            for ep in endpoints:
                ep_chain = chain_of[ep.string]
                aff = "affinity-" + ep_chain[len("endpoint-") :]
                tx.add_rule(chain, f"ip saddr @{aff} goto {ep_chain}")
        parts = [f"{i} : goto {chain_of[ep.string]}" for i, ep in enumerate(endpoints)]
        tx.add_rule(chain, f"numgen random mod {len(endpoints)} vmap {{ {' , '.join(parts)} }}")


def compile_nftables(view: ProxyView, *, service_cidrs: list[str] | None = None) -> NftRuleset:
    """The ``ip kube-proxy`` table after kube-proxy's first (full) sync on an empty node."""
    proxier = NftProxier(view.options, service_cidrs)
    result = proxier.sync(view)
    if not result.ok:
        raise InputError(f"the compiled nftables transaction is invalid: {result.error}")
    return proxier.table
