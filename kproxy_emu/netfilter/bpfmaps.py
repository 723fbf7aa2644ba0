"""The eBPF mode's rule model: the load-balancing BPF maps a Cilium-style kube-proxy
replacement programs, and their text and JSON forms.

The layouts follow Cilium's datapath (``bpf/lib/lb.h``, ``bpf/lib/common.h``) and its
agent's reconciler (``pkg/loadbalancer``, ``BPFOps.updateFrontend``):

- **services** (``cilium_lb4_services_v2``): ``lb4_key {address, dport, backend_slot,
  proto, scope}`` -> ``lb4_service {backend_id | affinity_timeout, count, rev_nat_index,
  flags, flags2, qcount}``. Slot 0 is the frontend ("master") entry: ``count`` active
  backends, ``qcount`` the others (terminating, quarantined), the affinity timeout and
  the load-balancing algorithm; slots 1..count+qcount name one backend each, active ones
  first. ``scope`` is external (0) or internal (1): a service whose external and internal
  traffic policies differ has both entries (flag ``two-scopes``) and in-cluster traffic
  looks up the internal one (``lb4_lookup_service``).
- **backends** (``cilium_lb4_backends_v3``): backend ID -> ``lb4_backend {address, port,
  proto, flags (state), cluster_id, zone}``.
- **reverse NAT** (``cilium_lb4_reverse_nat``): ``rev_nat_index`` -> the frontend address
  and port replies are rewritten to.
- **Maglev** (``cilium_lb4_maglev``, a hash of arrays): ``rev_nat_index`` -> M backend IDs.
- **affinity match** (``cilium_lb_affinity_match``): (rev_nat_index, backend ID) of the
  backends a sticky client may be sent back to; **source ranges**
  (``cilium_lb4_source_range``): (rev_nat_index, CIDR) allowed for LoadBalancer ranges.

``render()`` prints Cilium's own dump of these maps (``lb/maps-dump`` in its script tests,
``DumpLBMaps``): one line per entry, sorted, e.g.::

    BE: ID=1 ADDR=10.244.1.1:80/TCP STATE=active
    REV: ID=1 ADDR=10.96.50.104:80
    SVC: ID=1 ADDR=10.96.50.104:80/TCP SLOT=0 LBALG=undef AFFTimeout=0 COUNT=1 QCOUNT=0 \
        FLAGS=ClusterIP+non-routable        (one line; broken here)
    SVC: ID=1 ADDR=10.96.50.104:80/TCP SLOT=1 BEID=1 COUNT=0 QCOUNT=0 FLAGS=ClusterIP+non-routable
    MAGLEV: ID=2 INNER=[1(511), 2(510)]

``to_json()`` gives the same entries as structured data.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# pkg/loadbalancer ServiceFlags (lb4_service.flags | flags2 << 8)
FLAG_EXTERNAL_IPS = 1 << 0
FLAG_NODE_PORT = 1 << 1
FLAG_EXT_LOCAL_SCOPE = 1 << 2
FLAG_HOST_PORT = 1 << 3
FLAG_SESSION_AFFINITY = 1 << 4
FLAG_LOAD_BALANCER = 1 << 5
FLAG_ROUTABLE = 1 << 6
FLAG_SOURCE_RANGE = 1 << 7
FLAG_LOCAL_REDIRECT = 1 << 8
FLAG_NAT_46X64 = 1 << 9
FLAG_L7_LOAD_BALANCER = 1 << 10
FLAG_LOOPBACK = 1 << 11
FLAG_INT_LOCAL_SCOPE = 1 << 12
FLAG_TWO_SCOPES = 1 << 13
FLAG_QUARANTINED = 1 << 14  # on backend slots; on the master entry: source-range deny
FLAG_SOURCE_RANGE_DENY = 1 << 14
FLAG_FWD_MODE_DSR = 1 << 15

# frontend types (SVCType)
CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
EXTERNAL_IPS = "ExternalIPs"
LOAD_BALANCER = "LoadBalancer"
HOST_PORT = "HostPort"
LOCAL_REDIRECT = "LocalRedirect"

SCOPE_EXTERNAL = 0
SCOPE_INTERNAL = 1

# BackendState (and lb4_backend.flags)
STATE_ACTIVE = 0
STATE_TERMINATING = 1
STATE_QUARANTINED = 2
STATE_MAINTENANCE = 3
STATE_NAMES = ("active", "terminating", "quarantined", "maintenance")

# SVCLoadBalancingAlgorithm (upper byte of the master entry's affinity_timeout)
LB_ALG_UNDEF = 0
LB_ALG_RANDOM = 1
LB_ALG_MAGLEV = 2
LB_ALG_NAMES = ("undef", "random", "maglev")

PROTO_NUMBERS = {"ANY": 0, "TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

_TYPE_FLAGS = {
    EXTERNAL_IPS: FLAG_EXTERNAL_IPS,
    NODE_PORT: FLAG_NODE_PORT,
    LOAD_BALANCER: FLAG_LOAD_BALANCER,
    HOST_PORT: FLAG_HOST_PORT,
    LOCAL_REDIRECT: FLAG_LOCAL_REDIRECT,
}


def service_flags(
    svc_type: str,
    *,
    ext_local: bool = False,
    int_local: bool = False,
    session_affinity: bool = False,
    routable: bool = False,
    check_source_range: bool = False,
    dsr: bool = False,
) -> int:
    """NewSvcFlag for the parameters kproxy-emu models."""
    flags = _TYPE_FLAGS.get(svc_type, 0)
    if ext_local:
        flags |= FLAG_EXT_LOCAL_SCOPE
    if int_local:
        flags |= FLAG_INT_LOCAL_SCOPE
    if session_affinity:
        flags |= FLAG_SESSION_AFFINITY
    if routable:
        flags |= FLAG_ROUTABLE
    if check_source_range:
        flags |= FLAG_SOURCE_RANGE
    if ext_local != int_local and svc_type != CLUSTER_IP:
        flags |= FLAG_TWO_SCOPES
    if dsr:
        flags |= FLAG_FWD_MODE_DSR
    return flags


def flags_type(flags: int) -> str:
    """ServiceFlags.SVCType."""
    for name, bit in _TYPE_FLAGS.items():
        if flags & bit:
            return name
    return CLUSTER_IP


def flags_string(flags: int) -> str:
    """ServiceFlags.String() with the dump's "+" separator."""
    out = [flags_type(flags)]
    if flags & FLAG_EXT_LOCAL_SCOPE:
        out.append("Local")
    if flags & FLAG_INT_LOCAL_SCOPE:
        out.append("InternalLocal")
    if flags & FLAG_TWO_SCOPES:
        out.append("two-scopes")
    if flags & FLAG_SESSION_AFFINITY:
        out.append("sessionAffinity")
    if not flags & FLAG_ROUTABLE:
        out.append("non-routable")
    seen_deny = False
    if flags & FLAG_SOURCE_RANGE:
        out.append("check source-range")
        if flags & FLAG_SOURCE_RANGE_DENY:
            seen_deny = True
            out.append("deny")
    if flags & FLAG_NAT_46X64:
        out.append("46x64")
    if flags & FLAG_L7_LOAD_BALANCER:
        out.append("l7-load-balancer")
    if flags & FLAG_LOOPBACK:
        out.append("loopback" if flags_type(flags) == HOST_PORT else "delegate-if-local")
    if not seen_deny and flags & FLAG_QUARANTINED:
        out.append("quarantined")
    if flags & FLAG_FWD_MODE_DSR:
        out.append("dsr")
    return "+".join(out)


def host_port(address: str, port: int) -> str:
    """``ip:port``, ``[ip]:port`` for IPv6."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """lb4_key / lb6_key: the frontend address, port, protocol, scope and slot."""

    address: str
    port: int
    proto: int  # IP protocol number (0: any)
    scope: int = SCOPE_EXTERNAL
    slot: int = 0

    def frontend(self) -> str:
        """``ip:port/PROTO`` (``/i`` for the internal scope): Cilium's L3n4Addr text."""
        text = f"{host_port(self.address, self.port)}/{PROTO_NAMES.get(self.proto, 'ANY')}"
        return text + "/i" if self.scope == SCOPE_INTERNAL else text


@dataclass(frozen=True, slots=True)
class ServiceValue:
    """lb4_service: on slot 0 the frontend's counts, affinity timeout and algorithm; on
    slot n the backend ID of the n-th backend."""

    rev_nat_index: int
    flags: int
    count: int = 0
    qcount: int = 0
    backend_id: int = 0
    affinity_timeout: int = 0
    lb_alg: int = LB_ALG_UNDEF


@dataclass(frozen=True, slots=True)
class BackendValue:
    """lb4_backend: the backend's address, port, protocol and state."""

    address: str
    port: int
    proto: int
    state: int = STATE_ACTIVE
    zone: int = 0

    def text(self) -> str:
        return f"{host_port(self.address, self.port)}/{PROTO_NAMES.get(self.proto, 'ANY')}"


@dataclass(frozen=True, slots=True)
class RevNatValue:
    """lb4_reverse_nat: the frontend a reply's source is rewritten back to."""

    address: str
    port: int


@dataclass(slots=True)
class BpfMaps:
    """The load-balancing maps of one node (see the module docstring)."""

    services: dict[ServiceKey, ServiceValue] = field(default_factory=dict)
    backends: dict[int, BackendValue] = field(default_factory=dict)
    rev_nat: dict[int, RevNatValue] = field(default_factory=dict)
    maglev: dict[int, npt.NDArray[np.uint32]] = field(default_factory=dict)
    affinity_match: set[tuple[int, int]] = field(default_factory=set)
    source_ranges: set[tuple[int, str]] = field(default_factory=set)

    def frontends(self) -> dict[ServiceKey, ServiceValue]:
        """The slot-0 (frontend) entries."""
        return {k: v for k, v in self.services.items() if k.slot == 0}

    def slots(self, key: ServiceKey) -> list[int]:
        """The backend IDs of a frontend's slots 1..count+qcount, in slot order."""
        master = self.services[key]
        out = []
        for n in range(1, master.count + master.qcount + 1):
            v = self.services.get(ServiceKey(key.address, key.port, key.proto, key.scope, n))
            if v is not None:
                out.append(v.backend_id)
        return out

    def _lines(self, which: str, key: Any) -> str:
        """One entry's line of Cilium's dump (``which``: the map's field name)."""
        if which == "affinity_match":
            rev_nat, backend_id = key
            return f"AFF: ID={rev_nat} BEID={backend_id}"
        if which == "backends":
            be = self.backends[key]
            return f"BE: ID={key} ADDR={be.text()} STATE={STATE_NAMES[be.state]}"
        if which == "rev_nat":
            rn = self.rev_nat[key]
            return f"REV: ID={key} ADDR={host_port(rn.address, rn.port)}"
        if which == "services":
            v = self.services[key]
            if key.slot == 0:
                info = f"LBALG={LB_ALG_NAMES[v.lb_alg]} AFFTimeout={v.affinity_timeout}"
            else:
                info = f"BEID={v.backend_id}"
            return (
                f"SVC: ID={v.rev_nat_index} ADDR={key.frontend()} SLOT={key.slot} {info} "
                f"COUNT={v.count} QCOUNT={v.qcount} FLAGS={flags_string(v.flags)}"
            )
        if which == "source_ranges":
            rev_nat, cidr = key
            return f"SRCRANGE: ID={rev_nat} CIDR={cidr}"
        return f"MAGLEV: ID={key} INNER=[{maglev_counts_text(self.maglev[key])}]"

    _MAPS = ("affinity_match", "backends", "rev_nat", "services", "source_ranges", "maglev")

    def dump_lines(self) -> list[str]:
        """Cilium's DumpLBMaps: one line per entry, sorted."""
        out = [self._lines(which, key) for which in self._MAPS for key in getattr(self, which)]
        out.sort()
        return out

    def diff_lines(self, before: BpfMaps) -> tuple[list[str], list[str]]:
        """The dump lines of the entries ``before`` had and these maps changed or lost
        (deleted), and of the entries these maps added or changed (updated), sorted:
        what a sync writes. Entries are compared as values, not as text."""
        deleted: list[str] = []
        updated: list[str] = []
        for which in self._MAPS:
            old, new = getattr(before, which), getattr(self, which)
            if isinstance(new, set):
                deleted += [before._lines(which, k) for k in old - new]
                updated += [self._lines(which, k) for k in new - old]
                continue
            for k, v in new.items():
                was = old.get(k)
                same = was is not None and np.array_equal(was, v) if which == "maglev" else was == v
                if not same:
                    updated.append(self._lines(which, k))
            deleted += [before._lines(which, k) for k in old if k not in new]
        return sorted(deleted), sorted(updated)

    def render(self) -> str:
        lines = self.dump_lines()
        return "\n".join(lines) + "\n" if lines else ""

    def to_json(self) -> dict[str, Any]:
        """The maps as JSON-ready data (Maglev tables as per-backend slot counts)."""

        def svc(key: ServiceKey, v: ServiceValue) -> dict[str, Any]:
            d: dict[str, Any] = {
                "key": {
                    "address": key.address,
                    "dport": key.port,
                    "proto": key.proto,
                    "scope": key.scope,
                    "backend_slot": key.slot,
                },
                "value": {
                    "rev_nat_index": v.rev_nat_index,
                    "count": v.count,
                    "qcount": v.qcount,
                    "flags": v.flags,
                    "flags_text": flags_string(v.flags),
                },
            }
            if key.slot == 0:
                d["value"]["affinity_timeout"] = v.affinity_timeout
                d["value"]["lb_alg"] = LB_ALG_NAMES[v.lb_alg]
            else:
                d["value"]["backend_id"] = v.backend_id
            return d

        services = sorted(self.services.items(), key=lambda kv: (kv[1].rev_nat_index, kv[0].slot))
        return {
            "services": [svc(k, v) for k, v in services],
            "backends": [
                {
                    "id": bid,
                    "address": be.address,
                    "port": be.port,
                    "proto": be.proto,
                    "state": STATE_NAMES[be.state],
                }
                for bid, be in sorted(self.backends.items())
            ],
            "rev_nat": [
                {"id": rid, "address": rn.address, "port": rn.port}
                for rid, rn in sorted(self.rev_nat.items())
            ],
            "maglev": [
                {"id": rid, "size": int(t.shape[0]), "counts": maglev_counts(t)}
                for rid, t in sorted(self.maglev.items())
            ],
            "affinity_match": [
                {"rev_nat_index": r, "backend_id": b} for r, b in sorted(self.affinity_match)
            ],
            "source_ranges": [
                {"rev_nat_index": r, "cidr": c} for r, c in sorted(self.source_ranges)
            ],
        }


def maglev_counts(table: npt.NDArray[np.uint32]) -> list[list[int]]:
    """[[backend ID, slots], ...], most slots first, then by ID (the dump's order)."""
    ids, counts = np.unique(table, return_counts=True)
    pairs = sorted(zip(ids.tolist(), counts.tolist()), key=lambda p: (-p[1], p[0]))
    return [[i, c] for i, c in pairs]


def maglev_counts_text(table: npt.NDArray[np.uint32]) -> str:
    return ", ".join(f"{i}({c})" for i, c in maglev_counts(table))


# ------------------------------------------------------------------ bpftool map dump


def _hex(data: bytes) -> str:
    """bpftool's fprint_hex: bytes as hex, two spaces every 8, a new line every 16."""
    out = []
    for i, b in enumerate(data):
        if i and not i % 16:
            out.append("\n")
        elif i and not i % 8:
            out.append("  ")
        elif i:
            out.append(" ")
        out.append(f"{b:02x}")
    return "".join(out)


def _entry(key: bytes, value: bytes) -> str:
    """bpftool's plain entry: on one line when key and value fit in 24 bytes."""
    if len(key) > 16 or len(value) > 16:
        return f"key:\n{_hex(key)}\nvalue:\n{_hex(value)}\n"
    sep = "  " if len(key) + len(value) <= 24 else "\n"
    return f"key: {_hex(key)}{sep}value: {_hex(value)}\n"


def _be_ip(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def render_bpftool(maps: BpfMaps) -> str:
    """What ``bpftool map dump pinned /sys/fs/bpf/tc/globals/<map>`` prints for each IPv4
    load-balancing map (plain hex, no BTF), in key order: ``lb4_key``/``lb4_service``,
    ``lb4_backend``, ``lb4_reverse_nat``, the affinity-match and source-range keys, with
    the host's (little-endian) integers and network-order addresses and ports. The Maglev
    outer map holds inner-map IDs, which only a live kernel assigns: its tables are
    listed by ``restore``/``json``."""
    out: list[str] = []

    def section(name: str, entries: list[tuple[bytes, bytes]]) -> None:
        out.append(f"# {name}\n")
        for k, v in sorted(entries):
            out.append(_entry(k, v))
        n = len(entries)
        out.append(f"Found {n} element{'s' if n != 1 else ''}\n")

    def v4(address: str) -> bool:
        return ":" not in address

    svc = []
    for key, v in maps.services.items():
        if not v4(key.address):
            continue
        k: bytes = _be_ip(key.address) + struct.pack(">H", key.port)
        k += struct.pack("<HBB2x", key.slot, key.proto, key.scope)
        first = v.backend_id if key.slot else (v.affinity_timeout | v.lb_alg << 24)
        val = struct.pack(
            "<IHHBBH", first, v.count, v.rev_nat_index, v.flags & 0xFF, v.flags >> 8, v.qcount
        )
        svc.append((k, val))
    section("cilium_lb4_services_v2", svc)
    bes = [
        (
            struct.pack("<I", bid),
            _be_ip(be.address)
            + struct.pack(">H", be.port)
            + struct.pack("<BBHBx", be.proto, be.state, 0, be.zone),
        )
        for bid, be in maps.backends.items()
        if v4(be.address)
    ]
    section("cilium_lb4_backends_v3", bes)
    rev = [
        (struct.pack("<H", rid), _be_ip(rn.address) + struct.pack(">H2x", rn.port))
        for rid, rn in maps.rev_nat.items()
        if v4(rn.address)
    ]
    section("cilium_lb4_reverse_nat", rev)
    aff = [(struct.pack("<IH2x", bid, rid), b"\x00") for rid, bid in maps.affinity_match]
    section("cilium_lb_affinity_match", aff)
    src = []
    for rid, cidr in maps.source_ranges:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 4:
            # SRC_RANGE_STATIC_PREFIX: the rev_nat_id and pad (32 bits) precede the address
            lpm = struct.pack("<IH2x", 32 + net.prefixlen, rid) + net.network_address.packed
            src.append((lpm, b"\x00"))
    section("cilium_lb4_source_range", src)
    return "".join(out)
