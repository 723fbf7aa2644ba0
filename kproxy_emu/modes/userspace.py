"""kube-proxy's userspace mode (removed in Kubernetes 1.26): its round-robin balancer,
its proxy-port allocator and its proxier's iptables rules.

The proxier (``UserspaceProxier``, second half of this module) follows
``pkg/proxy/userspace/proxier.go`` of kubernetes/kubernetes at commit 0096f4a4d137 (a
late form of the file: klog/v2, ``localAddrs`` from GetLocalAddrs, ``NoopNodeHandler``;
the mode was deleted in v1.26), ``port_allocator.go`` at commit 04791b490660, and
``proxysocket.go`` for the protocols a listener supports (TCP, UDP).

``LoadBalancerRR`` reproduces ``pkg/proxy/userspace/roundrobin.go`` of
kubernetes/kubernetes (at commit 0096f4a4d137, a late form of the file; its Windows twin
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
import itertools
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, KproxyError
from ..netfilter.iptables_text import render
from ..netfilter.ruleset import BUILTIN_CHAINS, Opt, Ruleset
from ..proxy.options import ProxyOptions
from ..proxy.view import ProxyView, ServicePortInfo
from .proxier import Key, Proxier

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
        self._last_affinity_hit = False  # whether the last next_endpoint was an affinity hit
        # An attached store (the userspace dataplane's compiled proxy) keeps a copy of the
        # state and picks endpoints itself: ``_version`` counts the changes made here (the
        # store reloads when it moved), ``_puller`` is set while the store holds picks not
        # yet written back here (every public method first calls it: ``_sync``).
        self._version = 0
        self._puller: Callable[[], None] | None = None

    def _sync(self) -> None:
        """Write back what an attached store did since it loaded (see ``__init__``)."""
        pull = self._puller
        if pull is not None:
            self._puller = None
            pull()

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles: the state written back, without the store
        self._sync()
        state = self.__dict__.copy()
        state["_puller"] = None
        return state

    @property
    def last_affinity_hit(self) -> bool:
        """Whether the last ``next_endpoint`` was a ClientIP affinity hit."""
        self._sync()
        return self._last_affinity_hit

    @last_affinity_hit.setter
    def last_affinity_hit(self, value: bool) -> None:
        self._sync()
        self._last_affinity_hit = value

    def _clone(self) -> LoadBalancerRR:
        """An independent copy (the state written back first, no store attached): the
        same services, lists, indexes, affinities and shuffle stream."""
        self._sync()
        twin = LoadBalancerRR(self.seed)
        twin._rng.setstate(self._rng.getstate())
        twin._last_affinity_hit = self._last_affinity_hit
        twin._services = {
            spn: _State(
                affinity_type=st.affinity_type,
                ttl_seconds=st.ttl_seconds,
                endpoints=list(st.endpoints),
                index=st.index,
                affinity_map={
                    ip: _Affinity(a.client_ip, a.endpoint, a.last_used)
                    for ip, a in st.affinity_map.items()
                },
            )
            for spn, st in self._services.items()
        }
        return twin

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
        self._sync()
        self._new_service_internal(ServicePortName.parse(name), affinity, ttl_seconds)

    def _new_service_internal(self, spn: ServicePortName, affinity: str, ttl: int) -> _State:
        if ttl == 0:
            ttl = DEFAULT_AFFINITY_TTL_SECONDS
        state = self._services.get(spn)
        if state is None:
            state = _State(affinity_type=affinity, ttl_seconds=ttl)
            self._services[spn] = state
            self._version += 1
        elif affinity != "" and affinity != state.affinity_type:
            state.affinity_type = affinity
            self._version += 1
        return state

    def delete_service(self, name: str | ServicePortName) -> None:
        """``DeleteService``: forget the port's state."""
        self._sync()
        if self._services.pop(ServicePortName.parse(name), None) is not None:
            self._version += 1

    def service_has_endpoints(self, name: str | ServicePortName) -> bool:
        """``ServiceHasEndpoints``."""
        self._sync()
        state = self._services.get(ServicePortName.parse(name))
        return state is not None and len(state.endpoints) > 0

    def services(self) -> list[str]:
        """The service ports the balancer holds state for, sorted."""
        self._sync()
        return [str(s) for s in sorted(self._services)]

    def endpoints(self, name: str | ServicePortName) -> list[str]:
        """The stored (shuffled) endpoint list of a port (``[]`` when unknown)."""
        self._sync()
        state = self._services.get(ServicePortName.parse(name))
        return list(state.endpoints) if state is not None else []

    def affinity(self, name: str | ServicePortName) -> dict[str, tuple[str, float]]:
        """The port's affinity map: client IP → (endpoint, last used)."""
        self._sync()
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
        self._sync()
        _, registered = self._apply_endpoints(all_endpoints, "on_endpoints")
        for spn in list(self._services):
            if spn not in registered:
                self._reset_service(spn)

    def update_endpoints(
        self,
        changed: Iterable[Mapping[str, Any]],
        removed: Iterable[tuple[str, str]] = (),
    ) -> None:
        """``on_endpoints`` for part of the set: the Endpoints objects that changed (their
        full new form) and the (namespace, name) of those deleted; every other object is
        as in the last update. The same result as ``on_endpoints`` with the whole set
        (kube-proxy's later OnEndpointsAdd/Update/Delete handlers), at the cost of the
        changed objects alone."""
        self._sync()
        objects, registered = self._apply_endpoints(changed, "update_endpoints")
        touched = objects | set(removed)
        for spn in list(self._services):
            if (spn.namespace, spn.name) in touched and spn not in registered:
                self._reset_service(spn)

    def _apply_endpoints(
        self, endpoints: Iterable[Mapping[str, Any]], caller: str
    ) -> tuple[set[tuple[str, str]], set[ServicePortName]]:
        """Every port of these Endpoints objects set (all validated before anything
        changes); returns the objects' (namespace, name) and the ports set."""
        if isinstance(endpoints, Mapping | str | bytes):
            raise InputError(f"{caller} takes a list of Endpoints objects", value=type(endpoints))
        built = []
        for i, obj in enumerate(endpoints):
            namespace, name = _endpoints_identity(obj, i)
            built.append((namespace, name, build_ports_to_endpoints(obj, i)))
        registered: set[ServicePortName] = set()
        for namespace, name, ports in built:
            for port_name, new_endpoints in ports.items():
                spn = ServicePortName(namespace, name, port_name)
                self._set_endpoints(spn, list(new_endpoints))
                registered.add(spn)
        return {(ns, n) for ns, n, _ in built}, registered

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
        self._version += 1
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
            if state.endpoints or state.index or state.affinity_map:
                self._version += 1
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
        self._sync()
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
                    self._version += 1
                    self._last_affinity_hit = True
                    return entry.endpoint
        self._version += 1
        self._last_affinity_hit = False
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
        self._sync()
        state = self._services.get(ServicePortName.parse(name))
        if state is None:
            return
        ttl = state.ttl_seconds
        kept = {ip: a for ip, a in state.affinity_map.items() if int(now - a.last_used) < ttl}
        if len(kept) != len(state.affinity_map):
            self._version += 1
        state.affinity_map = kept


# =========================================================================================
# The userspace proxier's iptables rules (pkg/proxy/userspace/proxier.go)
# =========================================================================================

PORTALS_CONTAINER = "KUBE-PORTALS-CONTAINER"
PORTALS_HOST = "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER = "KUBE-NODEPORT-CONTAINER"
NODEPORT_HOST = "KUBE-NODEPORT-HOST"
NODEPORT_NON_LOCAL = "KUBE-NODEPORT-NON-LOCAL"
CLUSTER_IPS_COMMENT = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
NODEPORTS_COMMENT = "handle service NodePorts; NOTE: this must be the last rule in the chain"
NON_LOCAL_COMMENT = "Ensure that non-local NodePort traffic can flow"
NAT_CHAINS = (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST)
FILTER_CHAINS = (NODEPORT_NON_LOCAL,)
DEFAULT_UDP_IDLE_TIMEOUT = 0.25  # --udp-timeout (udpIdleTimeout) default: 250ms
# the kernel's default net.ipv4.ip_local_port_range, where bind(port 0) takes its port
EPHEMERAL_LOW, EPHEMERAL_HIGH = 32768, 60999
PORTS_BUF_SIZE = 16  # port_allocator.go portsBufSize
SUPPORTED_PROTOCOLS = ("TCP", "UDP")  # proxysocket.go newProxySocket


@dataclass(frozen=True, slots=True)
class PortRange:
    """``utilnet.PortRange`` (``--proxy-port-range``): ``Base`` and ``Size``; Base 0 means
    unset."""

    base: int = 0
    size: int = 0

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """``PortRange.Set``: ``""``, ``"N"``, ``"A-B"`` or ``"A+N"`` (A to A+N)."""
        value = text.strip() if isinstance(text, str) else None
        if value is None:
            raise InputError("must be a string", field="portRange", value=text)
        if value == "":
            return cls()
        try:
            if "-" in value and "+" not in value:
                lo_s, _, hi_s = value.partition("-")
                low, high = int(lo_s), int(hi_s)
            elif "+" in value and "-" not in value:
                lo_s, _, off_s = value.partition("+")
                low = int(lo_s)
                high = low + int(off_s)
            elif "-" not in value and "+" not in value:
                low = high = int(value)
            else:
                raise ValueError
        except ValueError:
            raise InputError("unable to parse port range", field="portRange", value=text) from None
        if low > 65535 or high > 65535:
            raise InputError(
                "the port range cannot be greater than 65535", field="portRange", value=text
            )
        if high < low:
            raise InputError(
                "end port cannot be less than start port", field="portRange", value=text
            )
        if low < 0:
            raise InputError("ports must not be negative", field="portRange", value=text)
        return cls(low, 1 + high - low)

    def __str__(self) -> str:
        return "" if self.base == 0 else f"{self.base}-{self.base + self.size - 1}"


class ProxyPortAllocator:
    """``port_allocator.go`` with the kernel's ephemeral ports behind it, seeded.

    With a ``--proxy-port-range`` (``rangeAllocator``) a fill goroutine keeps
    ``portsBufSize`` (16) chosen ports in a channel plus one more blocked on the send,
    each chosen by ``nextFreePort`` (a random offset, then the first free port scanning
    up, then from the start) and marked used when chosen; ``AllocateNext`` takes them in
    the order chosen and ``Release`` frees a port for later choices. Here that look-ahead
    of 17 is kept exactly; the fill goroutine's 500 ms retry once the range is exhausted
    is taken as done before the next allocation. ``Intn`` draws from
    ``random.Random(f"{seed}/proxy-ports")``.

    Without a range (``randomAllocator``, the default) ``AllocateNext`` returns 0 and the
    listener's ``bind`` takes an ephemeral port from the kernel: for TCP as Linux's
    ``inet_csk_find_open_port`` (a random even offset into ip_local_port_range
    32768-60999 made odd, scanning the odd ports first and wrapping, then the even
    ones); for UDP a random first port, then the next free one up (the kernel's
    ``udp_lib_get_port`` walks its hash slots instead; with few sockets the first pick,
    uniform, is the same). Ports are per protocol there, one space here for the range
    allocator (upstream's one bitmap). The draws come from
    ``random.Random(f"{seed}/ephemeral")``.
    """

    def __init__(self, port_range: PortRange, seed: int = 0):
        self.range = port_range
        self._rng = random.Random(f"{seed}/proxy-ports")
        self._kernel_rng = random.Random(f"{seed}/ephemeral")
        self._used: set[int] = set()  # rangeAllocator.used (offsets)
        self._buffer: list[int] = []  # chosen, not yet handed out (channel + blocked send)
        self.bound: dict[str, set[int]] = {"TCP": set(), "UDP": set()}  # the kernel's
        if port_range.base:
            self._fill()

    # rangeAllocator
    def _next_free_port(self) -> int:
        size = self.range.size
        j = self._rng.randrange(size)
        for i in itertools.chain(range(j, size), range(j)):
            if i not in self._used:
                self._used.add(i)
                return i + self.range.base
        return -1

    def _fill(self) -> None:
        while len(self._buffer) < PORTS_BUF_SIZE + 1:
            port = self._next_free_port()
            if port == -1:
                return
            self._buffer.append(port)

    def allocate_next(self) -> int:
        """``AllocateNext``: a port of the range, or 0 (the kernel picks at bind)."""
        if not self.range.base:
            return 0
        self._fill()
        if not self._buffer:
            raise BalancerError(
                "port allocation failed; there are no remaining ports left to allocate in "
                "the accepted range"
            )
        port = self._buffer.pop(0)
        self._fill()
        return port

    def release(self, port: int) -> None:
        """``Release``: a range port becomes free for later choices (ignored otherwise)."""
        if not self.range.base:
            return
        offset = port - self.range.base
        if 0 <= offset < self.range.size:
            self._used.discard(offset)

    # the kernel's side: the listener's bind and close
    def bind(self, protocol: str, port: int) -> int:
        """The port a listener bound to ``port`` (0: an ephemeral one) gets."""
        bound = self.bound[protocol]
        if port:
            if port in bound:
                raise BalancerError(f"listen {protocol.lower()} :{port}: address already in use")
            bound.add(port)
            return port
        low, high = EPHEMERAL_LOW, EPHEMERAL_HIGH + 1
        remaining = high - low
        if protocol == "TCP":
            if remaining > 1:
                remaining &= ~1
            offset = self._kernel_rng.randrange(remaining) | 1
            for parity_offset in (offset, offset - 1):
                port = low + parity_offset
                for _ in range(0, remaining, 2):
                    if port >= high:
                        port -= remaining
                    if port not in bound:
                        bound.add(port)
                        return port
                    port += 2
        else:
            first = self._kernel_rng.randrange(remaining)
            for i in range(remaining):
                port = low + (first + i) % remaining
                if port not in bound:
                    bound.add(port)
                    return port
        raise BalancerError(f"bind {protocol.lower()}: no ephemeral port left")

    def close(self, protocol: str, port: int) -> None:
        self.bound[protocol].discard(port)


def _comment(text: str) -> tuple[Opt, ...]:
    return (Opt("-m", ("comment",)), Opt("--comment", (text,)))


def _to_cidr(ip: str) -> str:
    """``utilproxy.ToCIDR``: ``/32`` or ``/128``."""
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def _is_unspecified(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class _Portal:
    ip: str
    port: int
    is_external: bool


@dataclass(slots=True)
class UserspaceService:
    """``ServiceInfo``: one proxied service port, its listener and its portals."""

    name: str  # ServicePortName.String()
    protocol: str
    cluster_ip: str
    port: int
    node_port: int
    external_ips: tuple[str, ...]
    lb_ips: tuple[str, ...]
    affinity_type: str  # "None" or "ClientIP"
    sticky_max_age_seconds: int
    proxy_port: int
    timeout: float  # the UDP idle timeout

    def same_config(self, sp: ServicePortInfo) -> bool:
        """``sameConfig``: protocol, port, nodePort, ClusterIP, externalIPs, the load
        balancer status and the affinity type (not its timeout)."""
        return (
            self.protocol == sp.protocol
            and self.port == sp.port
            and self.node_port == sp.node_port
            and self.cluster_ip == sp.cluster_ip
            and self.external_ips == tuple(sp.external_ips)
            and self.lb_ips == tuple(sp.lb_ips)
            and self.affinity_type == _affinity_type(sp)
        )


def _affinity_type(sp: ServicePortInfo) -> str:
    return AFFINITY_CLIENT_IP if sp.affinity_timeout else AFFINITY_NONE


class _Tables:
    """The userspace proxier's chains as ``iptables -A/-I/-D`` leave them: per table and
    chain the rules in order (EnsureRule: ``-C`` then append or insert at the top;
    DeleteRule: ``-D``, the first equal rule)."""

    def __init__(self) -> None:
        self.chains: dict[str, dict[str, list[tuple[Opt, ...]]]] = {"filter": {}, "nat": {}}
        # per chain, how many times each rule is in it (``-C`` without a scan)
        self._count: dict[tuple[str, str], dict[tuple[Opt, ...], int]] = {}
        self.version = 0

    def ensure_chain(self, table: str, chain: str) -> None:
        self.chains[table].setdefault(chain, [])

    def ensure_rule(
        self, table: str, chain: str, opts: tuple[Opt, ...], prepend: bool = False
    ) -> bool:
        """True when the rule existed already."""
        count = self._count.setdefault((table, chain), {})
        if count.get(opts):
            return True
        rules = self.chains[table].setdefault(chain, [])
        if prepend:
            rules.insert(0, opts)
        else:
            rules.append(opts)
        count[opts] = 1
        self.version += 1
        return False

    def delete_rule(self, table: str, chain: str, opts: tuple[Opt, ...]) -> bool:
        """True when a rule was deleted (``-D`` fails on a missing rule)."""
        count = self._count.get((table, chain), {})
        n = count.get(opts, 0)
        if not n:
            return False
        rules = self.chains[table][chain]
        # the last occurrence is the likelier near the end: search from there
        for k in range(len(rules) - 1, -1, -1):
            if rules[k] == opts:
                break
        # -D deletes the first equal rule; equal rules are interchangeable, so any
        # occurrence leaves the same chain
        del rules[k]
        if n == 1:
            del count[opts]
        else:
            count[opts] = n - 1
        self.version += 1
        return True

    def ruleset(self, family: str) -> Ruleset:
        """The tables as restore input: filter then nat, the userspace chains declared in
        iptablesInit's order, the rules grouped by chain (built-in chains first)."""
        rs = Ruleset(family=family)
        for tname, own in (("filter", FILTER_CHAINS), ("nat", NAT_CHAINS)):
            table = rs.table(tname)
            chains = self.chains[tname]
            for name in own:
                if name in chains:
                    table.declare(name)
            builtin = [c for c in BUILTIN_CHAINS[tname] if c in chains]
            for name in builtin + [c for c in own if c in chains]:
                for opts in chains[name]:
                    table.append(name, *opts)
        return rs


class UserspaceSync:
    """One userspace proxier sync: the rules it leaves installed (the whole userspace
    state: the userspace proxier writes rule by rule, there is no restore payload),
    their text, and what the sync did."""

    __slots__ = ("closed", "error", "errors", "full", "opened", "payload", "text")

    def __init__(self, full: bool, payload: Ruleset, text: str) -> None:
        self.full = full
        self.payload = payload
        self.text = text
        self.error: str | None = None  # the sync as a whole never fails
        self.errors: list[str] = []  # what kube-proxy logs (klog.Errorf) and goes on
        self.opened: list[str] = []  # service ports whose proxy started
        self.closed: list[str] = []  # service ports whose proxy stopped

    @property
    def ok(self) -> bool:
        return self.error is None


class UserspaceProxier(Proxier[UserspaceSync]):
    """kube-proxy's userspace proxier for one node (the proxier.go module docstring
    section says which upstream file): a listener (a proxy port) per service port, the
    portal rules sending each service address to it, and the round-robin balancer.

    ``listen_ip`` is ``--bind-address`` (``0.0.0.0``: REDIRECT for traffic from
    containers, DNAT to the node's primary IP for the node's own traffic; a specific IP:
    DNAT to it for both); ``port_range`` is ``--proxy-port-range``; ``seed`` seeds the
    port allocator, the kernel's ephemeral ports and the balancer.
    """

    mode = "userspace"

    def __init__(
        self,
        options: ProxyOptions,
        *,
        listen_ip: str = "0.0.0.0",
        port_range: PortRange | str = "",
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        seed: int = 0,
    ) -> None:
        try:
            listen = str(ipaddress.ip_address(listen_ip))
        except ValueError:
            raise InputError("not an IP address", field="bindAddress", value=listen_ip) from None
        if listen in ("127.0.0.1", "::1"):
            # ErrProxyOnLocalhost
            raise InputError("cannot proxy on localhost", field="bindAddress", value=listen_ip)
        self.options = options
        self.listen_ip = listen
        # ChooseHostInterface when bound to 0.0.0.0: the node's primary address here
        self.host_ip = options.node.ips[0] if _is_unspecified(listen) else listen
        self.port_range = (
            port_range if isinstance(port_range, PortRange) else PortRange.parse(port_range)
        )
        self.udp_idle_timeout = udp_idle_timeout
        self.seed = seed
        self.ports = ProxyPortAllocator(self.port_range, seed)
        self.load_balancer = LoadBalancerRR(seed)
        self.services: dict[str, UserspaceService] = {}  # serviceMap, in start order
        self.tables = _Tables()
        self.port_map: dict[tuple[str, int, str], str] = {}  # claimed (ip, port, proto)
        self.local_addrs: frozenset[str] = frozenset()
        self.need_full_sync = True
        self._by_service: dict[Key, list[str]] = {}  # (ns, name) -> its port names
        self.view: ProxyView | None = None  # the view of the last sync
        self._incomplete: set[str] = set()  # ports whose openPortal stopped at an error

    # ---- syncProxyRules ------------------------------------------------------------

    def sync(
        self, view: ProxyView, changed: set[Key] | None = None, now: float = 0.0
    ) -> UserspaceSync:
        """One syncProxyRules at emulated time ``now``: the endpoints reach the balancer
        first (kube-proxy hands Endpoints events to it as they arrive, the Service
        changes wait for the sync), then iptablesInit, the changed Services merged and
        unmerged, every portal ensured, stale sticky sessions cleaned."""
        full = changed is None or self.need_full_sync
        errors: list[str] = []
        opened: list[str] = []
        closed: list[str] = []
        if full:
            self.load_balancer.on_endpoints(endpoints_objects(view))
        else:
            # in the view's order (a set's order would change with the hash seed)
            wanted = changed or set()
            present = [k for k in view.by_service if k in wanted]
            self.load_balancer.update_endpoints(
                endpoints_objects(view, present), sorted(wanted - set(view.by_service))
            )
        self._iptables_init()
        self.local_addrs = frozenset(self.options.node.local_ips)
        wanted = changed or set()
        keys = list(view.by_service) if full else [k for k in view.by_service if k in wanted]
        gone = set(self._by_service) - set(view.by_service)
        if not full:
            gone &= wanted
        keys += sorted(gone)
        for key in keys:
            existing = self._merge(key, view.by_service.get(key, []), errors, opened)
            self._unmerge(key, existing, errors, closed)
        self._ensure_portals(errors)
        for name in self.services:
            self.load_balancer.cleanup_stale_sticky_sessions(name, now=now)
        self.need_full_sync = False
        payload = self.tables.ruleset(self.options.family)
        result = UserspaceSync(full, payload, render(payload))
        result.errors, result.opened, result.closed = errors, opened, closed
        self.view = view
        return result

    def ruleset(self) -> Ruleset:
        """The installed userspace rules now."""
        return self.tables.ruleset(self.options.family)

    def _iptables_init(self) -> None:
        t = self.tables
        jump_portals = _comment(CLUSTER_IPS_COMMENT)
        t.ensure_chain("nat", PORTALS_CONTAINER)
        t.ensure_rule("nat", "PREROUTING", (*jump_portals, _jump(PORTALS_CONTAINER)), prepend=True)
        t.ensure_chain("nat", PORTALS_HOST)
        t.ensure_rule("nat", "OUTPUT", (*jump_portals, _jump(PORTALS_HOST)), prepend=True)
        jump_nodeports = (
            Opt("-m", ("addrtype",)),
            Opt("--dst-type", ("LOCAL",)),
            *_comment(NODEPORTS_COMMENT),
        )
        t.ensure_chain("nat", NODEPORT_CONTAINER)
        t.ensure_rule("nat", "PREROUTING", (*jump_nodeports, _jump(NODEPORT_CONTAINER)))
        t.ensure_chain("nat", NODEPORT_HOST)
        t.ensure_rule("nat", "OUTPUT", (*jump_nodeports, _jump(NODEPORT_HOST)))
        t.ensure_chain("filter", NODEPORT_NON_LOCAL)
        t.ensure_rule(
            "filter",
            "INPUT",
            (*_comment(NON_LOCAL_COMMENT), _jump(NODEPORT_NON_LOCAL)),
            prepend=True,
        )

    def _merge(
        self, key: Key, ports: list[ServicePortInfo], errors: list[str], opened: list[str]
    ) -> set[str]:
        """``mergeService``: start (or restart) the proxy of every port whose config
        changed; returns the port names the Service has now."""
        existing: set[str] = set()
        for sp in ports:
            name = sp.spn
            existing.add(sp.port_name)
            info = self.services.get(name)
            if info is not None and info.same_config(sp):
                continue
            if info is not None:
                # something changed: stop it (its rules go, its port is released)
                self._cleanup_portal_and_proxy(info, errors)
            try:
                proxy_port = self.ports.allocate_next()
            except BalancerError as exc:
                errors.append(f"failed to allocate proxy port for service {name!r}: {exc}")
                continue
            if sp.protocol not in SUPPORTED_PROTOCOLS:
                # newProxySocket: unknown protocol; the allocated port is never released
                errors.append(
                    f"Failed to start proxy for {name!r}: unknown protocol {sp.protocol!r}"
                )
                continue
            try:
                bound = self.ports.bind(sp.protocol, proxy_port)
            except BalancerError as exc:
                errors.append(f"Failed to start proxy for {name!r}: {exc}")
                continue
            info = UserspaceService(
                name=name,
                protocol=sp.protocol,
                cluster_ip=sp.cluster_ip,
                port=sp.port,
                node_port=sp.node_port,
                external_ips=tuple(sp.external_ips),
                lb_ips=tuple(sp.lb_ips),
                affinity_type=_affinity_type(sp),
                sticky_max_age_seconds=sp.affinity_timeout,
                proxy_port=bound,
                timeout=self.udp_idle_timeout,
            )
            self.services[name] = info
            self._by_service.setdefault(key, [])
            if sp.port_name not in self._by_service[key]:
                self._by_service[key].append(sp.port_name)
            opened.append(name)
            err = self._open_portal(info)
            if err:
                errors.append(f"Failed to open portal for {name!r}: {err}")
            self.load_balancer.new_service(name, info.affinity_type, info.sticky_max_age_seconds)
        return existing

    def _unmerge(self, key: Key, existing: set[str], errors: list[str], closed: list[str]) -> None:
        """``unmergeService``: stop the ports the Service no longer has (all of them when
        it is gone) and forget their balancer state."""
        names = self._by_service.get(key, [])
        keep = []
        for port_name in names:
            if port_name in existing:
                keep.append(port_name)
                continue
            name = str(ServicePortName(key[0], key[1], port_name))
            info = self.services.get(name)
            if info is None:
                continue
            self._cleanup_portal_and_proxy(info, errors)
            self.load_balancer.delete_service(name)
            closed.append(name)
        if keep:
            self._by_service[key] = keep
        else:
            self._by_service.pop(key, None)

    def _cleanup_portal_and_proxy(self, info: UserspaceService, errors: list[str]) -> None:
        for err in self._close_portal(info):
            errors.append(f"Failed to close portal for {info.name!r}: {err}")
        # stopProxy
        del self.services[info.name]
        self._incomplete.discard(info.name)
        self.ports.close(info.protocol, info.proxy_port)
        self.ports.release(info.proxy_port)

    def _ensure_portals(self, errors: list[str]) -> None:
        """``ensurePortals``: open every service's portals again (idempotent; a portal
        refused earlier, e.g. by a port conflict, opens once the conflict is gone).
        A port whose portals all opened has every rule and claim already (its rules name
        it, so no other port's close deletes them, and only it releases its claims):
        opening it again changes nothing, so only the ports still short of some are
        visited, in start order."""
        for name in [n for n in self.services if n in self._incomplete]:
            info = self.services[name]
            err = self._open_portal(info)
            if err:
                errors.append(f"Failed to ensure portal for {info.name!r}: {err}")

    # ---- portals ------------------------------------------------------------------------

    def _portals(self, info: UserspaceService) -> list[_Portal]:
        portals = [_Portal(info.cluster_ip, info.port, False)]
        portals += [_Portal(ip, info.port, True) for ip in info.external_ips]
        portals += [_Portal(ip, info.port, False) for ip in info.lb_ips if ip]
        return portals

    def _open_portal(self, info: UserspaceService) -> str | None:
        """``openPortal``: the first error stops it (later portals stay closed)."""
        err = self._open_portal_once(info)
        if err:
            self._incomplete.add(info.name)
        else:
            self._incomplete.discard(info.name)
        return err

    def _open_portal_once(self, info: UserspaceService) -> str | None:
        for portal in self._portals(info):
            err = self._open_one_portal(portal, info)
            if err:
                return err
        if info.node_port:
            return self._open_node_port(info)
        return None

    def _open_one_portal(self, portal: _Portal, info: UserspaceService) -> str | None:
        if self.local_addrs and portal.ip in self.local_addrs:
            err = self._claim(portal.ip, portal.port, info)
            if err:
                return err
        t = self.tables
        t.ensure_rule(
            "nat", PORTALS_CONTAINER, self._container_args(portal, portal.is_external, False, info)
        )
        if portal.is_external:
            t.ensure_rule("nat", PORTALS_CONTAINER, self._container_args(portal, False, True, info))
            t.ensure_rule("nat", PORTALS_HOST, self._host_args(portal, True, info))
            return None
        t.ensure_rule("nat", PORTALS_HOST, self._host_args(portal, False, info))
        return None

    def _open_node_port(self, info: UserspaceService) -> str | None:
        err = self._claim("<nil>", info.node_port, info)
        if err:
            return err
        t = self.tables
        t.ensure_rule("nat", NODEPORT_CONTAINER, self._container_args(None, False, False, info))
        t.ensure_rule("nat", NODEPORT_HOST, self._host_node_port_args(info))
        t.ensure_rule("filter", NODEPORT_NON_LOCAL, self._non_local_node_port_args(info))
        return None

    def _close_portal(self, info: UserspaceService) -> list[str]:
        """``closePortal``: every rule deleted (a missing one is an error, logged), the
        claims released; the errors of all portals together."""
        el: list[str] = []
        t = self.tables
        for portal in self._portals(info):
            if self.local_addrs and portal.ip in self.local_addrs:
                err = self._release(portal.ip, portal.port, info)
                if err:
                    el.append(err)
            args = self._container_args(portal, portal.is_external, False, info)
            if not t.delete_rule("nat", PORTALS_CONTAINER, args):
                el.append(f"no such rule in {PORTALS_CONTAINER}")
            if portal.is_external:
                args = self._container_args(portal, False, True, info)
                if not t.delete_rule("nat", PORTALS_CONTAINER, args):
                    el.append(f"no such rule in {PORTALS_CONTAINER}")
                if not t.delete_rule("nat", PORTALS_HOST, self._host_args(portal, True, info)):
                    el.append(f"no such rule in {PORTALS_HOST}")
                continue
            if not t.delete_rule("nat", PORTALS_HOST, self._host_args(portal, False, info)):
                el.append(f"no such rule in {PORTALS_HOST}")
        if info.node_port:
            args = self._container_args(None, False, False, info)
            if not t.delete_rule("nat", NODEPORT_CONTAINER, args):
                el.append(f"no such rule in {NODEPORT_CONTAINER}")
            if not t.delete_rule("nat", NODEPORT_HOST, self._host_node_port_args(info)):
                el.append(f"no such rule in {NODEPORT_HOST}")
            args = self._non_local_node_port_args(info)
            if not t.delete_rule("filter", NODEPORT_NON_LOCAL, args):
                el.append(f"no such rule in {NODEPORT_NON_LOCAL}")
            err = self._release("<nil>", info.node_port, info)
            if err:
                el.append(err)
        return el

    def _claim(self, ip: str, port: int, info: UserspaceService) -> str | None:
        """``claimNodePort``: the (ip, port, protocol) is owned by one service port
        (idempotent for its owner)."""
        key = (ip, port, info.protocol)
        owner = self.port_map.get(key)
        if owner is None:
            self.port_map[key] = info.name
            return None
        if owner == info.name:
            return None
        return (
            f"Port conflict detected on port {join_host_port(ip, port)}/{info.protocol}.  "
            f"{info.name} vs {owner}"
        )

    def _release(self, ip: str, port: int, info: UserspaceService) -> str | None:
        """``releaseNodePort``: only the owner releases; an unowned port is ignored."""
        key = (ip, port, info.protocol)
        owner = self.port_map.get(key)
        if owner is None:
            return None
        if owner != info.name:
            return (
                f"Port conflict detected on port {join_host_port(ip, port)}/{info.protocol} "
                f"(unowned unlock).  {info.name} vs {owner}"
            )
        del self.port_map[key]
        return None

    # ---- the rule arguments (iptablesCommonPortalArgs and friends) ----------------------

    def _common_args(
        self,
        dest_ip: str | None,
        physdev: bool,
        dst_local: bool,
        dest_port: int,
        info: UserspaceService,
    ) -> tuple[Opt, ...]:
        proto = info.protocol.lower()
        args: list[Opt] = [
            *_comment(info.name),
            Opt("-p", (proto,)),
            Opt("-m", (proto,)),
            Opt("--dport", (str(dest_port),)),
        ]
        if dest_ip is not None:
            args.append(Opt("-d", (_to_cidr(dest_ip),)))
        if physdev:
            args += [Opt("-m", ("physdev",)), Opt("--physdev-is-in", (), True)]
        if dst_local:
            args += [Opt("-m", ("addrtype",)), Opt("--dst-type", ("LOCAL",))]
        return tuple(args)

    def _container_args(
        self, portal: _Portal | None, physdev: bool, dst_local: bool, info: UserspaceService
    ) -> tuple[Opt, ...]:
        """``iptablesContainerPortalArgs``: REDIRECT when listening on every address,
        DNAT to the listen address otherwise (a NodePort: ``portal`` None)."""
        if portal is None:
            args = self._common_args(None, False, False, info.node_port, info)
        else:
            args = self._common_args(portal.ip, physdev, dst_local, portal.port, info)
        if _is_unspecified(self.listen_ip):
            return (*args, _jump("REDIRECT"), Opt("--to-ports", (str(info.proxy_port),)))
        return (
            *args,
            _jump("DNAT"),
            Opt("--to-destination", (join_host_port(self.listen_ip, info.proxy_port),)),
        )

    def _host_args(
        self, portal: _Portal, dst_local: bool, info: UserspaceService
    ) -> tuple[Opt, ...]:
        """``iptablesHostPortalArgs``: always DNAT, to the host IP when listening on
        every address."""
        args = self._common_args(portal.ip, False, dst_local, portal.port, info)
        return (*args, *self._dnat_host(info))

    def _host_node_port_args(self, info: UserspaceService) -> tuple[Opt, ...]:
        """``iptablesHostNodePortArgs``."""
        args = self._common_args(None, False, False, info.node_port, info)
        return (*args, *self._dnat_host(info))

    def _non_local_node_port_args(self, info: UserspaceService) -> tuple[Opt, ...]:
        """``iptablesNonLocalNodePortArgs``: ACCEPT new connections to the proxy port."""
        args = self._common_args(None, False, False, info.proxy_port, info)
        return (*args, Opt("-m", ("state",)), Opt("--state", ("NEW",)), _jump("ACCEPT"))

    def _dnat_host(self, info: UserspaceService) -> tuple[Opt, ...]:
        return (
            _jump("DNAT"),
            Opt("--to-destination", (join_host_port(self.host_ip, info.proxy_port),)),
        )


def _jump(target: str) -> Opt:
    return Opt("-j", (target,))


def endpoints_objects(view: ProxyView, keys: Iterable[Key] | None = None) -> list[dict[str, Any]]:
    """The v1 Endpoints objects the endpoints controller would publish for the view's
    Services (``keys``: these only): per Service one subset per ready endpoint of each
    port (``addresses``: ready endpoints, as the controller puts them; not-ready ones
    would be ``notReadyAddresses``, which the balancer ignores)."""
    out: list[dict[str, Any]] = []
    items = (
        view.by_service.items()
        if keys is None
        else ((k, view.by_service[k]) for k in keys if k in view.by_service)
    )
    for (namespace, name), ports in items:
        subsets = [
            {"addresses": [{"ip": e.ip}], "ports": [{"name": sp.port_name, "port": e.port}]}
            for sp in ports
            for e in sp.endpoints
            if e.ready
        ]
        out.append({"metadata": {"namespace": namespace, "name": name}, "subsets": subsets})
    return out
