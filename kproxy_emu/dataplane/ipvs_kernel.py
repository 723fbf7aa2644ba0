"""The emulated kernel's IPVS table, programmed sync after sync.

``IpvsSync`` applies each IpvsState (netfilter/ipvs.py) to an engine table the way the
IPVS proxier's netlink calls do; ``lower`` packs virtual servers into the engine's arrays
and ``build_ipsets`` the ipsets into engine sets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import numpy as np

from ..errors import InputError
from ..ipaddr import ipv4_int
from ..netfilter.ipvs import FLAG_HASHED, IpvsState, VirtualServer
from ..packets import PROTO_NUMBERS
from .endpoints import EndpointTable

SERVICE_DTYPE = np.dtype(
    [("proto", "u1"), ("addr", "u4"), ("port", "u2"), ("flags", "u4"), ("timeout", "u4")]
)
DEST_DTYPE = np.dtype(
    [("svc", "i4"), ("addr", "u4"), ("port", "u2"), ("weight", "i4"), ("endpoint", "i4")]
)


def lower(state: IpvsState) -> tuple[np.ndarray, np.ndarray]:
    """(services, dests) arrays for VirtualServerTable: IPv4 only (the engine's packets
    are IPv4); dests in the order kube-proxy adds them."""
    if state.family != "IPv4":
        raise InputError("the IPVS engine runs IPv4 only", field="family", value=state.family)
    vss = state.virtual_servers
    services = np.zeros(len(vss), SERVICE_DTYPE)
    services["proto"] = [PROTO_NUMBERS[vs.protocol.lower()] for vs in vss]
    services["addr"] = [ipv4_int(vs.address) for vs in vss]
    services["port"] = [vs.port for vs in vss]
    services["flags"] = [vs.flags for vs in vss]
    services["timeout"] = [vs.timeout for vs in vss]
    n = sum(len(vs.real_servers) for vs in vss)
    dests = np.zeros(n, DEST_DTYPE)
    rss = [rs for vs in vss for rs in vs.real_servers]
    dests["svc"] = np.repeat(np.arange(len(vss)), [len(vs.real_servers) for vs in vss])
    dests["addr"] = np.fromiter((ipv4_int(rs.address) for rs in rss), np.uint32, n)
    dests["port"] = np.fromiter((rs.port for rs in rss), np.uint16, n)
    dests["weight"] = np.fromiter((rs.weight for rs in rss), np.int32, n)
    dests["endpoint"] = np.fromiter((rs.endpoint for rs in rss), np.int32, n)
    return services, dests


def vs_name(vs: VirtualServer) -> str:
    """The virtual server as ipvsadm's command line names it (-t/-u/--sctp-service)."""
    proto = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[vs.protocol]
    addr = f"[{vs.address}]" if ":" in vs.address else vs.address
    return f"{proto} {addr}:{vs.port}"


def vs_options(vs: VirtualServer) -> str:
    """ipvsadm's -A/-E options for the virtual server's scheduler and persistence."""
    return f" -s {vs.scheduler}" + (f" -p {vs.timeout}" if vs.flags & 0x1 else "")


RS_CHECK_DELETE_INTERVAL = 60.0  # graceful_termination.go rsCheckDeleteInterval


def _graceful_needed(protocol: str) -> bool:
    """IsRsGracefulTerminationNeeded: not for UDP and SCTP (expire_nodest_conn drops their
    connections at the next packet)."""
    return protocol.upper() not in ("UDP", "SCTP")


class IpvsSync:
    """The kernel side of successive syncs: applies each IpvsState to an engine table the
    way the proxier does (syncService / syncEndpoint / cleanLegacyService) with the
    graceful termination manager (weight 0, then deletion once ActiveConn + InActConn is 0,
    checked every minute of emulated time).

    ``engine``: a VirtualServerTable class (kproxy_emu._cext.vstable or the reference
    twin); the table is created at the first sync, sized for its services. Endpoint
    indices (``endpoints``) are stable across syncs: an endpoint keeps its index.
    """

    def __init__(self, engine, *, seed: int = 0, **table_options):
        self.engine = engine
        self.seed = seed
        self.table_options = table_options
        self.table: Any = None  # a VirtualServerTable once the first sync ran
        self.scheduler: str | None = None
        self.services: dict[str, int] = {}  # VirtualServer.String() -> service index
        self.dests: dict[tuple[int, str], int] = {}  # (service, RealServer.String()) -> dest
        # service -> its RealServer.String()s (a tuple until changed: see _dests_of)
        self.service_dests: dict[int, set[str] | tuple[str, ...]] = {}
        self.graceful: dict[int, float] = {}  # dest index -> when it went on the list
        self.endpoints = EndpointTable()
        # when a list: each operation of the syncs, as the ipvsadm command doing it
        self.log: list[str] | None = None
        self._borrowed = False  # the index maps are a cache's (load)

    def load(
        self,
        table,
        services: dict[str, int],
        dests: dict[tuple[int, str], int],
        service_dests: dict[int, set[str] | tuple[str, ...]] | None = None,
        *,
        borrowed: bool = False,
    ) -> None:
        """Take over a table built in one bulk load with these index maps. ``borrowed``:
        the maps are shared with their owner's cache (a reset at 1M services would copy
        ten million entries each time) and are copied before the first change."""
        self.table, self.services, self.dests = table, services, dests
        if service_dests is None:
            grouped: dict[int, set[str]] = {}
            for svc, rs_key in dests:
                grouped.setdefault(svc, set()).add(rs_key)
            service_dests = dict(grouped)
        self.service_dests = service_dests
        self._borrowed = borrowed

    def _own_maps(self) -> None:
        """Copy borrowed index maps before changing them."""
        if self._borrowed:
            self.services = dict(self.services)
            self.dests = dict(self.dests)
            self.service_dests = dict(self.service_dests)  # tuples: copied when changed
            self._borrowed = False

    def _dests_of(self, svc: int) -> set[str]:
        """svc's real-server keys as a set to change: a bulk load's cache holds tuples (a
        set of 10 strings is 5x the size of a tuple, a million of them 0.6 GB)."""
        keys = self.service_dests.get(svc)
        if not isinstance(keys, set):
            keys = self.service_dests[svc] = set(keys or ())
        return keys

    def endpoint_index(self, endpoint: str) -> int:
        return self.endpoints.intern(endpoint)

    def sync(self, state: IpvsState, now: float = 0.0) -> dict[str, int]:
        """Apply one sync; returns counts of what changed."""
        self._own_maps()
        if state.family != "IPv4":
            raise InputError("the IPVS engine runs IPv4 only", field="family", value=state.family)
        if self.table is None:
            self.scheduler = state.scheduler
            n = len(state.virtual_servers)
            bits = 8
            while (1 << bits) < n:
                bits += 1
            self.table = self.engine(
                np.zeros(0, SERVICE_DTYPE),
                np.zeros(0, DEST_DTYPE),
                state.scheduler,
                self.seed,
                **{"svc_bits": bits, **self.table_options},
            )
        elif state.scheduler != self.scheduler:
            raise InputError(
                "the IPVS scheduler cannot change between syncs of one table",
                field="ipvs.scheduler",
                value=state.scheduler,
            )
        t = self.table
        out = dict.fromkeys(
            (
                "services_added",
                "services_updated",
                "services_deleted",
                "dests_added",
                "dests_deleted",
                "dests_graceful",
            ),
            0,
        )
        active: set[str] = set()
        for vs in state.virtual_servers:
            active.add(str(vs))
            self._sync_service(vs, out, now)
        # cleanLegacyService (a Go map's order there; sorted here)
        for key in sorted(k for k in self.services if k not in active):
            svc = self.services.pop(key)
            for rs_key in self.service_dests.pop(svc, set()):
                self.graceful.pop(self.dests.pop((svc, rs_key)), None)
            t.del_service(svc)
            self._log_deleted(key)
            out["services_deleted"] += 1
        return out

    def sync_changes(
        self, fresh: list[VirtualServer], deleted: list[str], now: float = 0.0
    ) -> dict[str, int]:
        """Apply one sync from its changes only: the virtual servers of the service ports
        written anew (in the state's order; with every shared virtual server, whose claims
        kube-proxy syncs each time) and the keys no virtual server has any more.
        The same operations as ``sync`` of the whole state, whose other virtual servers
        are as the last sync left them (``sync`` finds nothing to do for them)."""
        if self.table is None:
            raise InputError("the first sync of an IPVS table needs the whole state")
        self._own_maps()
        t = self.table
        out = dict.fromkeys(
            (
                "services_added",
                "services_updated",
                "services_deleted",
                "dests_added",
                "dests_deleted",
                "dests_graceful",
            ),
            0,
        )
        for vs in fresh:
            self._sync_service(vs, out, now)
        if deleted:
            gone = set(deleted)
            for key in sorted(k for k in self.services if k in gone):  # cleanLegacyService
                svc = self.services.pop(key)
                for rs_key in self.service_dests.pop(svc, set()):
                    self.graceful.pop(self.dests.pop((svc, rs_key)), None)
                t.del_service(svc)
                self._log_deleted(key)
                out["services_deleted"] += 1
        return out

    def _sync_service(self, vs: VirtualServer, out: dict, now: float) -> None:
        t = self.table
        key = str(vs)
        # a virtual server several service ports claim: kube-proxy's syncService and
        # syncEndpoint for each claim, in turn
        for claim in vs.claims or (vs,):
            svc = self.services.get(key)
            if svc is None:
                proto = PROTO_NUMBERS[claim.protocol.lower()]
                svc = t.add_service(
                    proto,
                    int(ipaddress.IPv4Address(claim.address)),
                    claim.port,
                    claim.flags,
                    claim.timeout,
                )
                self.services[key] = svc
                out["services_added"] += 1
                if self.log is not None:
                    self.log.append(f"-A {vs_name(claim)}{vs_options(claim)}")
            elif t.service_flags(svc) != (claim.flags | FLAG_HASHED, claim.timeout):
                t.edit_service(svc, claim.flags, claim.timeout)  # UpdateVirtualServer
                out["services_updated"] += 1
                if self.log is not None:
                    self.log.append(f"-E {vs_name(claim)}{vs_options(claim)}")
            self._sync_endpoints(svc, claim, out, now)

    def _log_deleted(self, key: str) -> None:
        if self.log is not None:
            address, proto = key.rsplit("/", 1)
            flag = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[proto]
            self.log.append(f"-D {flag} {address}")

    def _sync_endpoints(self, svc: int, vs: VirtualServer, out: dict, now: float) -> None:
        t = self.table
        log = self.log
        name = vs_name(vs) if log is not None else ""
        new = {str(rs): rs for rs in vs.real_servers}
        current = self._dests_of(svc)
        for rs_key, rs in new.items():
            dest = self.dests.get((svc, rs_key))
            if dest is not None:
                if dest not in self.graceful:
                    continue
                # back while on the graceful list: MoveRSOutofGracefulDeleteList deletes it,
                # then it is added afresh
                del self.graceful[dest]
                t.del_dest(dest)
                out["dests_deleted"] += 1
                if log is not None:
                    log.append(f"-d {name} -r {rs_key}")
            self.dests[(svc, rs_key)] = t.add_dest(
                svc,
                int(ipaddress.IPv4Address(rs.address)),
                rs.port,
                rs.weight,
                self.endpoint_index(rs_key),
            )
            current.add(rs_key)
            out["dests_added"] += 1
            if log is not None:
                log.append(f"-a {name} -r {rs_key} -m -w {rs.weight}")
        # kube-proxy deletes in a Go set's order; sorted here (same table, same text)
        for rs_key in sorted(current - set(new)):
            dest = self.dests[(svc, rs_key)]
            if dest in self.graceful:
                continue
            if self._try_delete(dest, vs.protocol):
                del self.dests[(svc, rs_key)]
                current.discard(rs_key)
                out["dests_deleted"] += 1
                if log is not None:
                    log.append(f"-d {name} -r {rs_key}")
            else:  # GracefulDeleteRS: weight 0 and onto the list
                t.edit_dest(dest, 0)
                self.graceful[dest] = now
                out["dests_graceful"] += 1
                if log is not None:
                    log.append(f"-e {name} -r {rs_key} -m -w 0")

    def _try_delete(self, dest: int, protocol: str) -> bool:
        # GracefulDeleteRS reads the server's connection counters at the moment it decides
        if _graceful_needed(protocol) and self.table.dest_connections(dest) != 0:
            return False
        self.table.del_dest(dest)
        return True

    def tick(self, now: float) -> int:
        """One run of the graceful termination loop (kube-proxy runs it every
        RS_CHECK_DELETE_INTERVAL): delete each listed server whose connections are gone.
        Returns how many were deleted."""
        self.table.expire(now)  # connections whose timers fired are gone by now
        deleted = 0
        if not self.graceful:
            return 0
        self._own_maps()
        key_of = {d: k for k, d in self.dests.items() if d in self.graceful}
        vs_of = {s: k for k, s in self.services.items()}
        for dest in list(self.graceful):
            key = key_of[dest]
            if self._try_delete(dest, vs_of[key[0]].rsplit("/", 1)[1]):
                del self.graceful[dest]
                del self.dests[key]
                self._dests_of(key[0]).discard(key[1])
                deleted += 1
        return deleted


def build_ipsets(state: IpvsState, seed: int = 0) -> dict:
    """The state's ipsets as engine sets (kproxy_emu._cext.vstable.IPSet) by their name,
    for a chain VM's ``-m set --match-set NAME DIRS`` (IPv4)."""
    from .._cext.vstable import IPSet as EngineSet

    return {
        s.name: EngineSet(s.name, s.set_type, sorted(s.entries), seed=seed + i)
        for i, s in enumerate(state.ipsets.values())
    }
