"""The eBPF mode's compiler: a Cilium-style kube-proxy replacement's load-balancing maps.

What Cilium's agent writes for the Services a node sees (``pkg/loadbalancer``: the k8s
reflector turns each Service port into frontends, ``BPFOps.updateFrontend`` writes each
frontend into the BPF maps; netfilter/bpfmaps.py holds the layouts):

- **Frontends** of a service port: its ClusterIP; for a NodePort, the wildcard
  ("surrogate") ``0.0.0.0:nodePort`` entry plus one per node address; each externalIP and
  each LoadBalancer ingress IP. When the external and internal traffic policies differ
  (and the frontend is not a ClusterIP) the frontend also gets an internal-scope twin
  (``/i``, flag ``two-scopes``): traffic from inside the cluster looks that one up.
- **Backends** of a frontend: the service port's endpoints as Cilium's
  ``ParseEndpointSliceV1`` keeps them: ready -> active; not ready but serving ->
  terminating when terminating (active otherwise); neither -> dropped. A ClusterIP or
  internal-scope frontend keeps only node-local backends under
  ``internalTrafficPolicy: Local``; an external-scope frontend of another type only
  node-local ones under ``externalTrafficPolicy: Local``. Slots hold the backends sorted
  by (state, address, port): active first; ``count`` is the active ones, ``qcount`` the
  rest, and with no active backend the terminating ones count as active (Cilium's
  terminating-endpoint fallback, KEP-1669).
- **IDs**: a frontend's ``rev_nat_index`` and each backend's ID come from Cilium's
  ``idAllocator`` (the next free ID after the last one given, so a deleted frontend's ID
  is not reused at once); frontends are reconciled in address order, and a NodePort's
  per-address entries right after its wildcard one.
- **Maglev** (``lb_algorithm="maglev"``): a table of M backend IDs per frontend, over its
  active backends (``maglev.lookup_table``), for frontends reachable from outside the node:
  not the wildcard NodePort entry, and a ClusterIP only with ``external_clusterip``
  (``BPFOps.useMaglev``).

Every sync computes the whole state (as the IPVS proxier does); the ID allocators and the
Maglev tables of unchanged backend sets persist between syncs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .. import maglev
from ..errors import CapacityError, InputError
from ..netfilter import bpfmaps as B
from ..proxy.options import ProxyOptions
from ..proxy.view import EndpointInfo, ProxyView, ServicePortInfo
from .proxier import Key, Proxier

LB_ALGORITHMS = ("random", "maglev")

FIRST_SERVICE_ID, MAX_SERVICE_ID = 1, 0xFFFF
FIRST_BACKEND_ID, MAX_BACKEND_ID = 1, 0xFFFFFFFF
# bpf-lb-map-max: the entries of the services map (frontends and their backend slots),
# the backends map and the reverse-NAT map
LB_MAP_MAX = 65536


def validate_algorithm(name: str) -> str:
    if name not in LB_ALGORITHMS:
        raise InputError(
            "unknown load-balancing algorithm (one of random, maglev)",
            field="lb_algorithm",
            value=name,
        )
    return name


class IdAllocator:
    """pkg/loadbalancer's idAllocator: IDs by address, the next search starting after the
    last ID given and wrapping at ``max_id``."""

    def __init__(self, first: int, max_id: int):
        self.first = first
        self.max_id = max_id
        self.next_id = first
        self.by_addr: dict[object, int] = {}
        self.by_id: dict[int, object] = {}

    def acquire(self, addr: object) -> int:
        found = self.by_addr.get(addr)
        if found is not None:
            return found
        start = self.next_id
        rollover = False
        while True:
            if self.next_id == start and rollover:
                break
            if self.next_id == self.max_id:
                self.next_id = self.first
                rollover = True
            if self.next_id not in self.by_id:
                got = self.next_id
                self.by_addr[addr] = got
                self.by_id[got] = addr
                self.next_id += 1
                return got
            self.next_id += 1
        raise InputError("no ID available", value=addr)

    def release(self, addr: object) -> None:
        got = self.by_addr.pop(addr, None)
        if got is not None:
            del self.by_id[got]


@dataclass(frozen=True, slots=True)
class Frontend:
    """One frontend: its map key (slot 0), type, owning service port and backends."""

    key: B.ServiceKey
    type: str
    service: str  # ServicePortName
    flags: int
    affinity_timeout: int
    # (address, port, proto, state, endpoint string), sorted as Cilium's slots
    backends: tuple[tuple[str, int, int, int], ...]
    maglev: bool
    source_ranges: tuple[str, ...] = ()
    order: tuple[int, bytes, int, int, int, int] = ()  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", _frontend_order(self))

    @property
    def active(self) -> int:
        n = sum(1 for b in self.backends if b[3] == B.STATE_ACTIVE)
        if n == 0:  # no active backend: the terminating ones are used
            n = sum(1 for b in self.backends if b[3] == B.STATE_TERMINATING)
        return n


@dataclass(slots=True)
class EbpfSyncResult:
    """One eBPF-mode sync: the node's maps after it and its frontends."""

    maps: B.BpfMaps
    frontends: list[Frontend] = field(default_factory=list)
    full: bool = True  # every sync computes the whole state
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def render(self) -> str:
        return self.maps.render()


def _backend_state(e: EndpointInfo) -> int | None:
    """ParseEndpointSliceV1: which endpoints become backends, in which state."""
    if e.ready:
        return B.STATE_ACTIVE
    if not e.serving:
        return None
    return B.STATE_TERMINATING if e.terminating else B.STATE_ACTIVE


def _sort_key(b: tuple[str, int, int, int]) -> tuple[int, int, bytes, int]:
    addr = ipaddress.ip_address(b[0])
    return (b[3], addr.version, addr.packed, b[1])


class EbpfProxier(Proxier[EbpfSyncResult]):
    """A Cilium-style load balancer's agent for one node (module docstring)."""

    mode = "ebpf"

    def __init__(
        self,
        options: ProxyOptions,
        *,
        lb_algorithm: str = "random",
        maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
        maglev_hash_seed: str = maglev.DEFAULT_HASH_SEED,
        external_clusterip: bool = False,
        lb_map_max: int = LB_MAP_MAX,
    ):
        self.options = options
        self.lb_map_max = lb_map_max
        self.lb_algorithm = validate_algorithm(lb_algorithm)
        if maglev_table_size not in maglev.SUPPORTED_TABLE_SIZES:
            raise InputError(
                "invalid Maglev table size, supported values are "
                + ", ".join(map(str, maglev.SUPPORTED_TABLE_SIZES)),
                field="maglev_table_size",
                value=maglev_table_size,
            )
        maglev.seeds(maglev_hash_seed)  # validates
        self.maglev_table_size = maglev_table_size
        self.maglev_hash_seed = maglev_hash_seed
        self.external_clusterip = external_clusterip
        self.need_full_sync = True
        self.service_ids = IdAllocator(FIRST_SERVICE_ID, MAX_SERVICE_ID)
        self.backend_ids = IdAllocator(FIRST_BACKEND_ID, MAX_BACKEND_ID)
        self.maps = B.BpfMaps()
        self._frontends: dict[B.ServiceKey, Frontend] = {}
        # each service port's frontends, reused while the view keeps the same
        # ServicePortInfo object (it rebuilds only the changed services' ports)
        self._by_port: dict[int, tuple[ServicePortInfo, list[Frontend]]] = {}
        self._node_ips: list[str] | None = None
        self._luts: dict[tuple[tuple[str, int, int], ...], npt.NDArray[np.int32]] = {}

    # -- frontends -----------------------------------------------------------------

    def _node_addresses(self) -> list[str]:
        """The node's NodePort addresses: its IPs of this family (not loopback)."""
        o = self.options
        out = []
        for ip in o.node.ips:
            addr = ipaddress.ip_address(ip)
            if (addr.version == 6) != (o.family == "IPv6") or addr.is_loopback:
                continue
            out.append(ip)
        return out

    def frontends_of(self, sp: ServicePortInfo, node_ips: list[str]) -> list[Frontend]:
        """The frontends Cilium writes for one service port (wildcard NodePort entries
        expanded), in no particular order."""
        proto = B.PROTO_NUMBERS.get(sp.protocol, 0)
        ext_local, int_local = sp.external_policy_local, sp.internal_policy_local
        affinity = sp.affinity_timeout > 0
        candidates = [
            (e.ip, e.port, proto, state, e.is_local)
            for e in sp.endpoints
            if (state := _backend_state(e)) is not None
        ]
        everyone = tuple(sorted((c[:4] for c in candidates), key=_sort_key))
        local = tuple(sorted((c[:4] for c in candidates if c[4]), key=_sort_key))
        wildcard = "::" if self.options.family == "IPv6" else "0.0.0.0"
        out: list[Frontend] = []

        def add(address: str, port: int, svc_type: str, scope: int, ranges: Iterable[str] = ()):
            surrogate = address == wildcard
            routable = not surrogate and (svc_type != B.CLUSTER_IP or self.external_clusterip)
            if svc_type == B.CLUSTER_IP or scope == B.SCOPE_INTERNAL:
                backends = local if int_local else everyone
            else:
                backends = local if ext_local else everyone
            ranges = tuple(ranges) if svc_type == B.LOAD_BALANCER else ()
            flags = B.service_flags(
                svc_type,
                ext_local=ext_local,
                int_local=int_local,
                session_affinity=affinity,
                routable=routable,
                check_source_range=bool(ranges),
            )
            use_maglev = (
                self.lb_algorithm == "maglev"
                and not surrogate
                and (svc_type != B.CLUSTER_IP or self.external_clusterip)
            )
            out.append(
                Frontend(
                    B.ServiceKey(address, port, proto, scope),
                    svc_type,
                    sp.spn,
                    flags,
                    sp.affinity_timeout if affinity else 0,
                    backends,
                    use_maglev,
                    ranges,
                )
            )

        def with_twin(address: str, port: int, svc_type: str, ranges: Iterable[str] = ()):
            add(address, port, svc_type, B.SCOPE_EXTERNAL, ranges)
            if ext_local != int_local and svc_type != B.CLUSTER_IP:
                add(address, port, svc_type, B.SCOPE_INTERNAL, ranges)

        add(sp.cluster_ip, sp.port, B.CLUSTER_IP, B.SCOPE_EXTERNAL)
        if sp.node_port:
            for ip in [wildcard, *node_ips]:
                with_twin(ip, sp.node_port, B.NODE_PORT)
        for ip in sp.external_ips:
            with_twin(ip, sp.port, B.EXTERNAL_IPS)
        for ip in sp.lb_ips:
            with_twin(ip, sp.port, B.LOAD_BALANCER, sp.source_ranges)
        return out

    # -- sync ------------------------------------------------------------------------

    def _check_capacity(self, order: list[Frontend]) -> None:
        """What Cilium's maps can hold, checked before anything is written (the agent
        would fail the frontends that do not fit; the emulator refuses the sync)."""
        limit = MAX_SERVICE_ID - FIRST_SERVICE_ID
        if len(order) > limit:
            raise _capacity_error(
                "frontends on this node (rev_nat_index is 16 bits in Cilium's datapath)",
                len(order),
                limit,
                "fewer services, NodePorts or external addresses",
            )
        entries = sum(1 + len(fe.backends) for fe in order)
        if entries > self.lb_map_max:
            raise _capacity_error(
                "services map entries (frontends and their backend slots)",
                entries,
                self.lb_map_max,
                "raise bpf-lb-map-max (EbpfOptions(lb_map_max=...), --bpf-lb-map-max)",
            )
        backends = len({b[:3] for fe in order for b in fe.backends})
        if backends > self.lb_map_max:
            raise _capacity_error(
                "backends",
                backends,
                self.lb_map_max,
                "raise bpf-lb-map-max (EbpfOptions(lb_map_max=...), --bpf-lb-map-max)",
            )

    def sync(
        self, view: ProxyView, changed: set[Key] | None = None, now: float = 0.0
    ) -> EbpfSyncResult:
        """The whole state of one sync (``changed`` is not needed: see the docstring)."""
        node_ips = self._node_addresses()
        if node_ips != self._node_ips:
            self._by_port = {}
            self._node_ips = node_ips
        by_port: dict[int, tuple[ServicePortInfo, list[Frontend]]] = {}
        desired: dict[B.ServiceKey, Frontend] = {}
        for sp in view.service_ports:
            kept = self._by_port.get(id(sp))
            fronts = (
                kept[1] if kept is not None and kept[0] is sp else self.frontends_of(sp, node_ips)
            )
            by_port[id(sp)] = (sp, fronts)
            for fe in fronts:
                # two service ports claiming one frontend: the later one wins, as the
                # later write to the same key does
                desired[fe.key] = fe
        self._by_port = by_port
        # deletes first (deleteFrontend), then updates in address order
        for key in [k for k in self._frontends if k not in desired]:
            self.service_ids.release(key)
        order = sorted(desired.values(), key=lambda fe: fe.order)
        self._check_capacity(order)
        refs: dict[tuple[str, int, int], int] = {}
        maps = B.BpfMaps()
        luts: dict[tuple[tuple[str, int, int], ...], npt.NDArray[np.int32]] = {}
        # backends referenced by a kept frontend keep their IDs; the others are released
        wanted = {b[:3] for fe in order for b in fe.backends}
        for addr in list(self.backend_ids.by_addr):
            if addr not in wanted:
                self.backend_ids.release(addr)
        for fe in order:
            rid = self.service_ids.acquire(fe.key)
            active = fe.active
            for slot, (ip, port, proto, state) in enumerate(fe.backends, start=1):
                bid = self.backend_ids.acquire((ip, port, proto))
                refs[(ip, port, proto)] = bid
                maps.backends[bid] = B.BackendValue(ip, port, proto, state)
                maps.services[
                    B.ServiceKey(fe.key.address, fe.key.port, fe.key.proto, fe.key.scope, slot)
                ] = B.ServiceValue(rid, fe.flags, backend_id=bid)
                if fe.affinity_timeout and state == B.STATE_ACTIVE:
                    maps.affinity_match.add((rid, bid))
            maps.services[fe.key] = B.ServiceValue(
                rid,
                fe.flags,
                count=active,
                qcount=len(fe.backends) - active,
                affinity_timeout=fe.affinity_timeout,
            )
            maps.rev_nat[rid] = B.RevNatValue(fe.key.address, fe.key.port)
            for cidr in fe.source_ranges:
                maps.source_ranges.add((rid, cidr))
            if fe.maglev and active:
                chosen = fe.backends[:active]
                lut_key = tuple(b[:3] for b in chosen)
                lut = luts.get(lut_key)
                if lut is None:
                    lut = self._luts.get(lut_key)
                if lut is None:
                    names = [
                        f"{B.host_port(ip, port)}/{B.PROTO_NAMES.get(proto, 'ANY')}"
                        for ip, port, proto in lut_key
                    ]
                    lut = maglev.lookup_table(names, self.maglev_table_size, self.maglev_hash_seed)
                luts[lut_key] = lut
                ids = np.array([refs[k] for k in lut_key], np.uint32)
                maps.maglev[rid] = ids[lut]
        self._frontends = desired
        self._luts = luts
        self.maps = maps
        self.need_full_sync = False
        return EbpfSyncResult(maps, order)


def _capacity_error(what: str, needed: int, limit: int, fix: str) -> CapacityError:
    return CapacityError(f"{what}: {needed:,} needed, at most {limit:,}; {fix}", field="services")


def _frontend_order(fe: Frontend) -> tuple[int, bytes, int, int, int, int]:
    """Address order; a NodePort's node-address entries right after its wildcard one."""
    k = fe.key
    addr = ipaddress.ip_address(k.address)
    if fe.type == B.NODE_PORT:
        wildcard = ipaddress.ip_address("::" if addr.version == 6 else "0.0.0.0")
        return (addr.version, wildcard.packed, k.port, k.proto, int(int(addr) != 0), k.scope)
    return (addr.version, addr.packed, k.port, k.proto, 0, k.scope)


def compile_ebpf(
    view: ProxyView,
    *,
    lb_algorithm: str = "random",
    maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
    maglev_hash_seed: str = maglev.DEFAULT_HASH_SEED,
    external_clusterip: bool = False,
    lb_map_max: int = LB_MAP_MAX,
) -> EbpfSyncResult:
    """One full sync of a fresh proxier (tests, render)."""
    proxier = EbpfProxier(
        view.options,
        lb_algorithm=lb_algorithm,
        maglev_table_size=maglev_table_size,
        maglev_hash_seed=maglev_hash_seed,
        external_clusterip=external_clusterip,
        lb_map_max=lb_map_max,
    )
    return proxier.sync(view)
