"""Pure-Python model of Cilium's service datapath over the eBPF mode's maps: the
reference twin a compiled eBPF engine is to be checked against, and the disruption
measurement (how many flows change backend when the backends change).

Written from ``bpf/lib/lb.h`` (``lb4_lookup_service``, ``lb4_select_backend_id_random``,
``lb4_select_backend_id_maglev``, ``lb4_local``'s new-flow path with
``__lb4_affinity_backend_id`` / ``__lb4_update_affinity``) and ``bpf/lib/hash.h``; the
maps are the compiler's (modes/ebpf.py, netfilter/bpfmaps.py). Only a flow's *first*
packet is modelled here (its later packets follow Cilium's conntrack entry, which keeps
the backend while the entry lives); every lookup is counted.

Not modelled yet: the routability check for traffic from outside (``non-routable``
ClusterIP entries), LoadBalancer source ranges, DSR: those are the eBPF mode's engine's
(cext/ebpflb.pyx EbpfEngine, on the packet pipeline), whose service lookup this twins.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import maglev
from ..errors import InputError
from ..netfilter import bpfmaps as B

NEW_FLOW_VERDICTS = ("DNAT", "NO_SERVICE", "NO_BACKEND")
AFFINITY_MAP_ENTRIES = 65536  # CILIUM_LB_AFFINITY_MAP_MAX_ENTRIES default (lb map size)


@dataclass(slots=True)
class LbResult:
    """What the datapath did with a new flow's first packet."""

    verdict: str  # DNAT, NO_SERVICE (no frontend: the packet goes on untouched),
    # NO_BACKEND (the frontend has no usable backend)
    frontend: B.ServiceKey | None = None
    rev_nat_index: int = 0
    backend_id: int = 0
    backend: B.BackendValue | None = None
    pick: int = -1  # the random slot (1..count) or the Maglev LUT index
    affinity_hit: bool = False
    lookups: list[str] = field(default_factory=list)


class EbpfDatapath:
    """Cilium's new-flow service handling over one node's maps.

    ``algorithm``: "random" or "maglev" (the node's ``--bpf-lb-algorithm``); ``seed``:
    the Maglev hash seed (its jhash seed picks the LUT index); ``rng``: the stream
    ``get_prandom_u32()`` draws from (seeded: deterministic)."""

    def __init__(
        self,
        maps: B.BpfMaps,
        *,
        algorithm: str = "random",
        maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
        seed: str = maglev.DEFAULT_HASH_SEED,
        rng: random.Random | None = None,
        affinity_entries: int = AFFINITY_MAP_ENTRIES,
    ):
        if algorithm not in ("random", "maglev"):
            raise InputError("unknown algorithm (random, maglev)", value=algorithm)
        self.maps = maps
        self.algorithm = algorithm
        self.m = maglev_table_size
        self.seed = seed
        maglev.seeds(seed)
        self.rng = rng or random.Random(0)
        # LB4_AFFINITY_MAP: LRU (rev_nat_index, client ip) -> [backend_id, last_used]
        self.affinity: OrderedDict[tuple[int, str], list[float]] = OrderedDict()
        self.affinity_entries = affinity_entries

    # -- lb4_lookup_service ---------------------------------------------------------

    def lookup_service(
        self, address: str, port: int, proto: int, scope_switch: bool, lookups: list[str]
    ) -> tuple[B.ServiceKey, B.ServiceValue] | None:
        """The external-scope entry; for traffic from inside the cluster
        (``scope_switch``) of a two-scopes frontend, the internal one. None when there is
        no frontend or it has no backend (count 0)."""
        key = B.ServiceKey(address, port, proto, B.SCOPE_EXTERNAL)
        lookups.append("services")
        svc = self.maps.services.get(key)
        if svc is None:
            return None
        if not scope_switch or not svc.flags & B.FLAG_TWO_SCOPES:
            return (key, svc) if svc.count else None
        key = B.ServiceKey(address, port, proto, B.SCOPE_INTERNAL)
        lookups.append("services")
        isvc = self.maps.services.get(key)
        if isvc is not None and isvc.count:
            return key, isvc
        return None

    # -- lb4_select_backend_id ------------------------------------------------------

    def select_backend(
        self,
        key: B.ServiceKey,
        svc: B.ServiceValue,
        client_ip: str,
        client_port: int,
        lookups: list[str],
        algorithm: str | None = None,
    ) -> tuple[int, int]:
        """(backend ID or 0, the pick) by ``algorithm`` (default: the node's)."""
        if (algorithm or self.algorithm) == "random":
            slot = self.rng.getrandbits(32) % svc.count + 1
            lookups.append("services")
            be = self.maps.services.get(
                B.ServiceKey(key.address, key.port, key.proto, key.scope, slot)
            )
            return (be.backend_id if be else 0), slot
        lookups.append("maglev")
        lut = self.maps.maglev.get(svc.rev_nat_index)
        if lut is None:
            return 0, -1
        affinity = bool(svc.flags & B.FLAG_SESSION_AFFINITY)
        index = maglev.slot(
            client_ip,
            client_port,
            key.port,
            key.proto,
            m=self.m,
            seed=self.seed,
            affinity=affinity,
        )
        return int(lut[index]), index

    # -- lb4_local, CT_NEW ----------------------------------------------------------

    def new_flow(
        self,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        proto: int | str,
        *,
        from_cluster: bool = True,
        now: float = 0.0,
    ) -> LbResult:
        """The first packet of a flow ``src:sport -> dst:dport``. ``from_cluster``: sent
        from inside the cluster (a pod, the node): two-scopes frontends use their internal
        scope, and the backend is chosen at random whatever the node's algorithm (Cilium
        applies Maglev to north-south traffic only; east-west connections are balanced
        by the socket-level load balancer, which picks a random slot)."""
        if isinstance(proto, str):
            if proto not in B.PROTO_NUMBERS:
                raise InputError("protocol must be TCP, UDP or SCTP", field="proto", value=proto)
            proto_n = B.PROTO_NUMBERS[proto]
        else:
            proto_n = int(proto)
        lookups: list[str] = []
        found = self.lookup_service(dst, dport, proto_n, from_cluster, lookups)
        if found is None:
            ext = self.maps.services.get(B.ServiceKey(dst, dport, proto_n, B.SCOPE_EXTERNAL))
            verdict = "NO_SERVICE" if ext is None else "NO_BACKEND"
            return LbResult(verdict, lookups=lookups)
        key, svc = found
        rid = svc.rev_nat_index
        backend_id, pick, hit = 0, -1, False
        sticky = bool(svc.flags & B.FLAG_SESSION_AFFINITY)
        if sticky:
            backend_id = self._affinity_backend(rid, src, svc.affinity_timeout, now, lookups)
            if backend_id:
                lookups.append("backends")
                if backend_id not in self.maps.backends:
                    backend_id = 0
                else:
                    hit = True
        if not backend_id:
            backend_id, pick = self.select_backend(
                key, svc, src, sport, lookups, "random" if from_cluster else None
            )
            lookups.append("backends")
            if backend_id not in self.maps.backends:
                return LbResult("NO_BACKEND", key, rid, lookups=lookups)
        if sticky:
            self._update_affinity(rid, src, backend_id, now)
        return LbResult(
            "DNAT", key, rid, backend_id, self.maps.backends[backend_id], pick, hit, lookups
        )

    def _affinity_backend(
        self, rid: int, client: str, timeout: int, now: float, lookups: list[str]
    ) -> int:
        """__lb4_affinity_backend_id: sticky while last_used + timeout > now (seconds
        granularity) and the backend still matches the service."""
        lookups.append("affinity")
        k = (rid, client)
        val = self.affinity.get(k)
        if val is None:
            return 0
        backend_id, last_used = int(val[0]), val[1]
        if int(last_used) + timeout <= int(now):
            del self.affinity[k]
            return 0
        lookups.append("affinity_match")
        if (rid, backend_id) not in self.maps.affinity_match:
            del self.affinity[k]
            return 0
        val[1] = now
        self.affinity.move_to_end(k)
        return backend_id

    def _update_affinity(self, rid: int, client: str, backend_id: int, now: float) -> None:
        k = (rid, client)
        self.affinity[k] = [backend_id, now]
        self.affinity.move_to_end(k)
        while len(self.affinity) > self.affinity_entries:  # LRU: the oldest goes
            self.affinity.popitem(last=False)


def disruption(
    before: B.BpfMaps,
    after: B.BpfMaps,
    flows: Sequence[tuple[str, int, str, int, int | str]],
    *,
    algorithm: str,
    maglev_table_size: int = maglev.DEFAULT_TABLE_SIZE,
    seed: str = maglev.DEFAULT_HASH_SEED,
    rng_seed: int = 0,
) -> float:
    """The share of ``flows`` (src, sport, dst, dport, proto) whose *new* connection
    lands on another backend address after the maps changed from ``before`` to
    ``after`` (flows no longer served, or not served before, are left out). Maglev picks
    by hash, so it is exact; random picks are drawn from seeded streams, one per map
    state (what two connection attempts of the same client would see)."""
    a = EbpfDatapath(
        before,
        algorithm=algorithm,
        maglev_table_size=maglev_table_size,
        seed=seed,
        rng=random.Random(rng_seed),
    )
    b = EbpfDatapath(
        after,
        algorithm=algorithm,
        maglev_table_size=maglev_table_size,
        seed=seed,
        rng=random.Random(rng_seed + 1),
    )
    moved = total = 0
    for src, sport, dst, dport, proto in flows:
        ra = a.new_flow(src, sport, dst, dport, proto, from_cluster=False)
        rb = b.new_flow(src, sport, dst, dport, proto, from_cluster=False)
        if ra.backend is None or rb.backend is None:
            continue
        total += 1
        moved += (ra.backend.address, ra.backend.port) != (rb.backend.address, rb.backend.port)
    return moved / total if total else 0.0


def client_flows(
    n: int, dst: str, dport: int, proto: int | str = "TCP", *, seed: int = 0
) -> list[tuple[str, int, str, int, int | str]]:
    """``n`` distinct seeded client flows to one frontend (clients in 10.128.0.0/9)."""
    rng = random.Random(seed)
    base = int(ipaddress.IPv4Address("10.128.0.0"))
    seen: set[tuple[int, int]] = set()
    out: list[tuple[str, int, str, int, int | str]] = []
    while len(out) < n:
        ip, port = base + rng.randrange(1 << 23), rng.randrange(1024, 65536)
        if (ip, port) in seen:
            continue
        seen.add((ip, port))
        out.append((str(ipaddress.IPv4Address(ip)), port, dst, dport, proto))
    return out
