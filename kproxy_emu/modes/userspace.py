"""kube-proxy's userspace mode (removed in Kubernetes 1.26): its round-robin balancer.

``LoadBalancerRR`` reproduces ``pkg/proxy/userspace/roundrobin.go`` of
kubernetes/kubernetes (the v1.25 file, the last one; its Windows twin
``pkg/proxy/winuserspace/roundrobin.go`` is the same algorithm), driven through the old
full-state entry point ``OnEndpointsUpdate(allEndpoints)`` of the 2016 file, which is
what the upstream unit tests drive:

- state per service port (``ns/name:port``, ``balancerState``): the endpoint list, the
  round-robin index and the affinity policy (type, TTL in seconds, client IP → entry);
- an endpoints update builds, per port name, ``host:port`` subset by subset, port by
  port, address by address (``BuildPortsToEndpointsMap``), dropping empty hosts and ports
  <= 0 (``isValidEndpoint``), joined by ``net.JoinHostPort`` (IPv6 in brackets). Hosts
  are not checked to be IPs: the upstream tests use names (``endpoint1``).
  Only when the multiset differs from the stored list (``slicesEquiv``) are the affinity
  entries of vanished endpoints dropped (``removeStaleAffinity``), the list replaced by
  a shuffle and the index reset to 0; an unchanged port keeps list, index and affinities.
  A port no longer in any Endpoints object is reset (``resetService``: no endpoints,
  index 0, affinities cleared) but kept, so ``next_endpoint`` then fails with
  ``MissingEndpointsError`` rather than ``MissingServiceEntryError``.
- ``next_endpoint``: with ClientIP affinity and no reset flag, a client whose entry was
  used less than the TTL ago (``int(elapsed.Seconds()) < ttlSeconds``: whole seconds,
  truncated) gets its pinned endpoint, the entry is refreshed and the round robin does
  **not** advance; otherwise ``endpoints[index]`` is taken, ``index = (index+1) % len``
  and the client is (re-)pinned to it. Affinity is keyed by the client's IP only.
- ``new_service`` with ttl 0 takes the default, ``v1.DefaultClientIPServiceAffinitySeconds``
  (10800); on an existing service it only changes the affinity type, never the TTL
  (``newServiceInternal``).
- ``cleanup_stale_sticky_sessions`` removes the entries with ``int(elapsed) >= ttl``.

Determinism: upstream shuffles with ``util.ShuffleStrings``, which places ``s[i]`` at
``perm[i]`` for ``perm = rand.Perm(len(s))`` from the process-wide math/rand source.
Here ``rand.Perm``'s algorithm (``m[i] = m[j]; m[j] = i`` for ``j = Intn(i+1)``) draws
``j`` from one ``random.Random(seed)`` per balancer (``randrange``; Python's Mersenne
Twister, reproducible for a seed), so a seed fixes every shuffle of a balancer's life, in
the order the shuffles happen. As upstream, the list shuffled is the one
``slicesEquiv`` left behind: when the old and new lists have the same length it sorts the
new one in place before the shuffle; otherwise the list is shuffled in build order.

Time is emulated: ``now`` (seconds) replaces ``time.Now()``.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, KproxyError

__all__ = [
    "DEFAULT_AFFINITY_TTL_SECONDS",
    "BalancerError",
    "LoadBalancerRR",
    "MissingEndpointsError",
    "MissingServiceEntryError",
    "ServicePortName",
    "build_ports_to_endpoints",
    "is_valid_endpoint",
    "join_host_port",
]

# v1.DefaultClientIPServiceAffinitySeconds: 3 hours
DEFAULT_AFFINITY_TTL_SECONDS = 10800

AFFINITY_NONE = "None"
AFFINITY_CLIENT_IP = "ClientIP"


class BalancerError(KproxyError):
    """The round-robin balancer could not pick an endpoint."""


class MissingServiceEntryError(BalancerError):
    """``ErrMissingServiceEntry``: the balancer has no state for this service port."""


class MissingEndpointsError(BalancerError):
    """``ErrMissingEndpoints``: the service port is known but has no endpoints."""


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    """``proxy.ServicePortName``: namespace, name and port name."""

    namespace: str
    name: str
    port: str = ""

    @classmethod
    def parse(cls, text: str | ServicePortName) -> ServicePortName:
        """``ns/name:port`` (or ``ns/name`` / ``ns/name:`` for an unnamed port)."""
        if isinstance(text, ServicePortName):
            return text
        if not isinstance(text, str) or "/" not in text:
            raise InputError(
                "service port name must be 'namespace/name:port'", field="name", value=text
            )
        namespace, _, rest = text.partition("/")
        name, _, port = rest.partition(":")
        return cls(namespace, name, port)

    def __str__(self) -> str:
        # ServicePortName.String(): the port only when it is named
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base


def is_valid_endpoint(host: str, port: int) -> bool:
    """``isValidEndpoint``: a non-empty host and a port above 0."""
    return host != "" and port > 0


def join_host_port(host: str, port: int) -> str:
    """``net.JoinHostPort``: brackets around a host containing a colon."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _get(obj: Mapping[str, Any], key: str, default: Any) -> Any:
    value = obj.get(key, default)
    return default if value is None else value


def _endpoints_identity(obj: Mapping[str, Any], index: int) -> tuple[str, str]:
    if not isinstance(obj, Mapping):
        raise InputError("an Endpoints object must be a mapping", field=f"[{index}]", value=obj)
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        namespace, name = meta.get("namespace"), meta.get("name")
    else:
        namespace, name = obj.get("namespace"), obj.get("name")
    namespace = namespace if namespace is not None else ""
    if not isinstance(namespace, str) or not isinstance(name, str) or not name:
        raise InputError(
            "an Endpoints object needs metadata.name (and a string namespace)",
            field=f"[{index}].metadata",
            value=meta if isinstance(meta, Mapping) else {"namespace": namespace, "name": name},
        )
    return namespace, name


def build_ports_to_endpoints(obj: Mapping[str, Any], index: int = 0) -> dict[str, list[str]]:
    """``util.BuildPortsToEndpointsMap`` of one v1 Endpoints dict: port name → the valid
    ``host:port`` strings, subset by subset, port by port, address by address. Only
    ``addresses`` count (not ``notReadyAddresses``)."""
    where = f"[{index}]"
    subsets = _get(obj, "subsets", [])
    if not isinstance(subsets, list):
        raise InputError("subsets must be a list", field=f"{where}.subsets", value=subsets)
    result: dict[str, list[str]] = {}
    for si, subset in enumerate(subsets):
        spath = f"{where}.subsets[{si}]"
        if not isinstance(subset, Mapping):
            raise InputError("a subset must be a mapping", field=spath, value=subset)
        addresses = _get(subset, "addresses", [])
        ports = _get(subset, "ports", [])
        if not isinstance(addresses, list) or not isinstance(ports, list):
            raise InputError(
                "addresses and ports must be lists", field=spath, value=(addresses, ports)
            )
        for pi, port in enumerate(ports):
            if not isinstance(port, Mapping):
                raise InputError("a port must be a mapping", field=f"{spath}.ports[{pi}]")
            pname = _get(port, "name", "")
            pnum = _get(port, "port", 0)
            if not isinstance(pname, str) or isinstance(pnum, bool) or not isinstance(pnum, int):
                raise InputError(
                    "a port needs a string name and an integer port",
                    field=f"{spath}.ports[{pi}]",
                    value=dict(port),
                )
            for ai, addr in enumerate(addresses):
                if not isinstance(addr, Mapping):
                    raise InputError(
                        "an address must be a mapping", field=f"{spath}.addresses[{ai}]"
                    )
                host = _get(addr, "ip", "")
                if not isinstance(host, str):
                    raise InputError(
                        "an address ip must be a string",
                        field=f"{spath}.addresses[{ai}].ip",
                        value=host,
                    )
                if is_valid_endpoint(host, pnum):
                    result.setdefault(pname, []).append(join_host_port(host, pnum))
    return result


def _client_host(client: str) -> str:
    """The client's IP as ``net.SplitHostPort(srcAddr.String())`` gives it: a bare IP is
    taken in canonical form, ``ip:port`` and ``[ip6]:port`` lose the port; a name
    without a colon is taken as it is."""
    text = client.strip() if isinstance(client, str) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, port = text, "0"
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif ":" in text:
        host, _, port = text.partition(":")
    if host and port.isdigit():
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            if ":" not in host:
                return host
    raise BalancerError(f"malformed source address: {client!r}")


@dataclass(slots=True)
class _Affinity:
    client_ip: str
    endpoint: str
    last_used: float


@dataclass(slots=True)
class _State:
    """``balancerState`` + ``affinityPolicy``."""

    affinity_type: str
    ttl_seconds: int
    endpoints: list[str] = field(default_factory=list)
    index: int = 0
    affinity_map: dict[str, _Affinity] = field(default_factory=dict)

    @property
    def sticky(self) -> bool:
        # isSessionAffinity: anything but "" and "None"
        return self.affinity_type not in ("", AFFINITY_NONE)


def _go_perm(rng: random.Random, n: int) -> list[int]:
    """math/rand ``Perm(n)``'s algorithm with ``Intn(i+1)`` drawn from ``rng``."""
    m = [0] * n
    for i in range(n):
        j = rng.randrange(i + 1)
        m[i] = m[j]
        m[j] = i
    return m


class LoadBalancerRR:
    """The userspace proxier's round-robin balancer (see the module docstring).

    ``seed`` seeds the one ``random.Random`` every shuffle of this balancer draws from.
    """

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError("seed must be an integer", field="seed", value=seed)
        self.seed = seed
        self._rng = random.Random(seed)
        self._services: dict[ServicePortName, _State] = {}

    # ---- services -------------------------------------------------------------------

    def new_service(
        self,
        name: str | ServicePortName,
        affinity: str = AFFINITY_NONE,
        ttl_seconds: int = 0,
    ) -> None:
        """``NewService``: create the port's state (ttl 0: the default 10800 s); on an
        existing port only a non-empty affinity type is applied, the TTL never."""
        if affinity not in ("", AFFINITY_NONE, AFFINITY_CLIENT_IP):
            raise InputError(
                "affinity must be 'None' or 'ClientIP'", field="affinity", value=affinity
            )
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 0:
            raise InputError(
                "ttl_seconds must be a non-negative integer", field="ttl_seconds", value=ttl_seconds
            )
        self._new_service_internal(ServicePortName.parse(name), affinity, ttl_seconds)

    def _new_service_internal(self, spn: ServicePortName, affinity: str, ttl: int) -> _State:
        if ttl == 0:
            ttl = DEFAULT_AFFINITY_TTL_SECONDS
        state = self._services.get(spn)
        if state is None:
            state = _State(affinity_type=affinity, ttl_seconds=ttl)
            self._services[spn] = state
        elif affinity != "":
            state.affinity_type = affinity
        return state

    def delete_service(self, name: str | ServicePortName) -> None:
        """``DeleteService``: forget the port's state."""
        self._services.pop(ServicePortName.parse(name), None)

    def service_has_endpoints(self, name: str | ServicePortName) -> bool:
        """``ServiceHasEndpoints``."""
        state = self._services.get(ServicePortName.parse(name))
        return state is not None and len(state.endpoints) > 0

    def services(self) -> list[str]:
        """The service ports the balancer holds state for, sorted."""
        return [str(s) for s in sorted(self._services)]

    def endpoints(self, name: str | ServicePortName) -> list[str]:
        """The stored (shuffled) endpoint list of a port (``[]`` when unknown)."""
        state = self._services.get(ServicePortName.parse(name))
        return list(state.endpoints) if state is not None else []

    def affinity(self, name: str | ServicePortName) -> dict[str, tuple[str, float]]:
        """The port's affinity map: client IP → (endpoint, last used)."""
        state = self._services.get(ServicePortName.parse(name))
        if state is None:
            return {}
        return {ip: (a.endpoint, a.last_used) for ip, a in state.affinity_map.items()}

    # ---- endpoints ------------------------------------------------------------------

    def on_endpoints(self, all_endpoints: Iterable[Mapping[str, Any]]) -> None:
        """``OnEndpointsUpdate(allEndpoints)``: the full current set of v1 Endpoints
        dicts (``metadata.namespace/name`` or top-level ``namespace``/``name``, and
        ``subsets``). Every port of the set is updated; every other known port is reset
        (kept, emptied)."""
        if isinstance(all_endpoints, Mapping | str | bytes):
            raise InputError(
                "on_endpoints takes a list of Endpoints objects", value=type(all_endpoints)
            )
        # validate everything before changing anything
        built = []
        for i, obj in enumerate(all_endpoints):
            namespace, name = _endpoints_identity(obj, i)
            built.append((namespace, name, build_ports_to_endpoints(obj, i)))
        registered: set[ServicePortName] = set()
        for namespace, name, ports in built:
            for port_name, new_endpoints in ports.items():
                spn = ServicePortName(namespace, name, port_name)
                self._set_endpoints(spn, list(new_endpoints))
                registered.add(spn)
        for spn in list(self._services):
            if spn not in registered:
                self._reset_service(spn)

    def _set_endpoints(self, spn: ServicePortName, new: list[str]) -> None:
        state = self._services.get(spn)
        cur = state.endpoints if state is not None else []
        if state is None or len(cur) != len(new):
            changed = True
        else:
            # slicesEquiv(CopyStrings(cur), new) sorts `new` in place
            new.sort()
            changed = sorted(cur) != new
        if not changed:
            return
        self._remove_stale_affinity(spn, new)
        state = self._new_service_internal(spn, "", 0)
        state.endpoints = self._shuffle(new)
        state.index = 0

    def _remove_stale_affinity(self, spn: ServicePortName, new: list[str]) -> None:
        state = self._services.get(spn)
        if state is None:
            return
        keep = set(new)
        vanished = {e for e in state.endpoints if e not in keep}
        if vanished:
            state.affinity_map = {
                ip: a for ip, a in state.affinity_map.items() if a.endpoint not in vanished
            }

    def _reset_service(self, spn: ServicePortName) -> None:
        state = self._services.get(spn)
        if state is not None:
            state.endpoints = []
            state.index = 0
            state.affinity_map = {}

    def _shuffle(self, items: list[str]) -> list[str]:
        """``util.ShuffleStrings``: ``shuffled[perm[i]] = s[i]``."""
        perm = _go_perm(self._rng, len(items))
        shuffled = [""] * len(items)
        for i, j in enumerate(perm):
            shuffled[j] = items[i]
        return shuffled

    # ---- picking --------------------------------------------------------------------

    def next_endpoint(
        self,
        name: str | ServicePortName,
        client_ip: str | None,
        reset_affinity: bool = False,
        now: float = 0.0,
    ) -> str:
        """``NextEndpoint(svcPort, srcAddr, sessionAffinityReset)`` at time ``now``
        (seconds); ``client_ip`` is an IP or ``ip:port`` (the port is ignored)."""
        spn = ServicePortName.parse(name)
        state = self._services.get(spn)
        if state is None:
            raise MissingServiceEntryError(f"{spn}: missing service entry")
        if not state.endpoints:
            raise MissingEndpointsError(f"{spn}: missing endpoints")
        sticky = state.sticky
        ip = ""
        if sticky:
            if client_ip is None:
                raise BalancerError(f"{spn}: session affinity needs the client address")
            ip = _client_host(client_ip)
            if not reset_affinity:
                entry = state.affinity_map.get(ip)
                if entry is not None and int(now - entry.last_used) < state.ttl_seconds:
                    entry.last_used = now
                    return entry.endpoint
        endpoint = state.endpoints[state.index]
        state.index = (state.index + 1) % len(state.endpoints)
        if sticky:
            entry = state.affinity_map.get(ip)
            if entry is None:
                entry = _Affinity(client_ip=ip, endpoint=endpoint, last_used=now)
                state.affinity_map[ip] = entry
            entry.last_used = now
            entry.endpoint = endpoint
            entry.client_ip = ip
        return endpoint

    def cleanup_stale_sticky_sessions(self, name: str | ServicePortName, now: float = 0.0) -> None:
        """``CleanupStaleStickySessions``: drop the entries unused for the TTL or more."""
        state = self._services.get(ServicePortName.parse(name))
        if state is None:
            return
        ttl = state.ttl_seconds
        state.affinity_map = {
            ip: a for ip, a in state.affinity_map.items() if int(now - a.last_used) < ttl
        }
