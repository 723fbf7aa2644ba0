"""Cilium's Maglev consistent hashing, exactly as Cilium computes it.

The functions here reproduce cilium/cilium ``pkg/maglev`` (the lookup table),
``pkg/murmur3`` (its hash) and the datapath's slot pick (``bpf/lib/hash.h``,
``bpf/lib/jhash.h``, ``lb4_select_backend_id_maglev`` in ``bpf/lib/lb.h``); the loops
run compiled (``cext/maglev.pyx``). The facts they follow, with upstream references, are
in ``tests/data/maglev/README.md``; docs/ebpf.md explains the model.

- ``murmur3_128(data, seed)``: MurmurHash3 x64-128 with a 32-bit seed. Cilium reads the
  16-byte blocks in the host's byte order; this is the little-endian result (amd64,
  arm64), the one the upstream test vectors hold. A big-endian node (s390x) computes
  other tables.
- ``lookup_table(backends, m, seed, weights)``: the table of M slots of one service, each
  the index of its backend in the caller's ``backends`` list. Cilium keys each backend by
  the string ``"[<ip>:<port>/<PROTO>,State:active]"`` (IPv6 ``"[[<ip>]:<port>/..."``),
  sorts the backends by that string before anything else (so the table does not depend on
  the order they are given in), and fills the table round robin over each backend's
  permutation ``(offset + j * skip) % M`` with ``offset = h1 % M``, ``skip = h2 % (M-1) +
  1`` from the murmur3 hash of the key under the seed's first four bytes; weights change
  how often a backend takes a turn (computeLookupTable).
- ``slot(...)``: the datapath's choice, ``jhash_3words(saddr, dport << 16 | sport,
  nexthdr, seedJhash0) % M`` over the service's reversed conntrack tuple: the client's
  address and port and the service port, the VIP deliberately not hashed (a client flow
  maps to the same backend on every node and on every VIP of the service), and the client
  port hashed as 0 when the service has session affinity.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._cext import maglev as _c
from .errors import InputError

DEFAULT_TABLE_SIZE = 16381
"""Cilium's default M (``--bpf-lb-maglev-table-size``)."""

DEFAULT_HASH_SEED = "JLfvgnHc2kaSUFaI"
"""Cilium's default ``--bpf-lb-maglev-hash-seed`` (base64 of 12 bytes)."""

SUPPORTED_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
"""The primes Cilium accepts as M (``maglevSupportedTableSizes``)."""

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
"""The L4 protocols a backend may name, with their IP protocol numbers."""

__all__ = [
    "DEFAULT_HASH_SEED",
    "DEFAULT_TABLE_SIZE",
    "PROTOCOLS",
    "SUPPORTED_TABLE_SIZES",
    "Backend",
    "Seeds",
    "hash_string",
    "lookup_table",
    "murmur3_128",
    "parse_backend",
    "permutation",
    "seeds",
    "slot",
    "slots",
]


@dataclass(frozen=True)
class Seeds:
    """The three 32-bit seeds Cilium takes from the 12 bytes of the base64 hash seed
    (``UserConfig.ToConfig``): each a big-endian uint32 of four of the bytes."""

    murmur: int  # bytes 0-3: the table permutation (murmur3 seed)
    jhash0: int  # bytes 4-7: HASH_INIT4_SEED, the IPv4 flow hash
    jhash1: int  # bytes 8-11: HASH_INIT6_SEED, the IPv6 flow hash


def seeds(seed: str = DEFAULT_HASH_SEED) -> Seeds:
    """Decode Cilium's ``--bpf-lb-maglev-hash-seed`` (base64, exactly 12 bytes)."""
    if not isinstance(seed, str):
        raise InputError("the Maglev hash seed must be a base64 string", value=seed)
    try:
        d = base64.b64decode(seed, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(
            "cannot decode base64 Maglev hash seed", field="seed", value=seed
        ) from None
    if len(d) != 12:
        raise InputError(
            f"decoded Maglev hash seed is {len(d)} bytes (not 12 bytes)", field="seed", value=seed
        )
    return Seeds(
        int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:8], "big"), int.from_bytes(d[8:12], "big")
    )


def murmur3_128(data: bytes, seed: int) -> tuple[int, int]:
    """MurmurHash3 x64-128 of ``data`` with a 32-bit ``seed`` (h1 = h2 = seed at the
    start), as cilium/pkg/murmur3 ``Hash128`` returns it on a little-endian host."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError("murmur3_128 hashes bytes", field="data", value=data)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 32:
        raise InputError(
            "the murmur3 seed must be an integer in 0..2^32-1", field="seed", value=seed
        )
    h1, h2 = _c.murmur3_128(bytes(data), seed)
    return int(h1), int(h2)


@dataclass(frozen=True)
class Backend:
    """One backend as Cilium's Maglev sees it: address, port and L4 protocol."""

    ip: str  # canonical text (Go's netip form)
    port: int
    protocol: str  # TCP, UDP or SCTP
    family: int  # 4 or 6

    @property
    def hash_string(self) -> str:
        """``BackendInfo.setHashString``: the key Cilium sorts and hashes."""
        host = f"[{self.ip}]" if self.family == 6 else self.ip
        return f"[{host}:{self.port}/{self.protocol},State:active]"

    def __str__(self) -> str:
        host = f"[{self.ip}]" if self.family == 6 else self.ip
        return f"{host}:{self.port}/{self.protocol}"


def _go_ip_string(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """netip.Addr.String(): RFC 5952 for IPv6 (Python's compressed form), except that an
    IPv4-mapped address keeps its dotted tail (``::ffff:10.0.0.1``)."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}"
    return addr.compressed


def parse_backend(text: str) -> Backend:
    """``"ip:port/PROTO"`` (IPv6 ``"[ip]:port/PROTO"``) as a Backend; InputError if not."""
    if not isinstance(text, str):
        raise InputError("a backend must be a string 'ip:port/PROTO'", value=text)
    hostport, sep, proto = text.rpartition("/")
    if not sep or proto not in PROTOCOLS:
        raise InputError(
            "a backend must be 'ip:port/PROTO' with PROTO one of TCP, UDP, SCTP", value=text
        )
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        raise InputError("a backend must be 'ip:port/PROTO' with a decimal port", value=text)
    port = int(port_text)
    if port > 65535:
        raise InputError("a backend's port must be in 0..65535", value=text)
    v6 = host.startswith("[") and host.endswith("]")
    try:
        addr = ipaddress.ip_address(host[1:-1] if v6 else host)
    except ValueError:
        raise InputError("a backend's address is not an IP address", value=text) from None
    if (addr.version == 6) != v6:
        raise InputError(
            "a backend's IPv6 address must be bracketed '[ip]:port', an IPv4 one not", value=text
        )
    return Backend(_go_ip_string(addr), port, proto, addr.version)


def hash_string(backend: str) -> str:
    """The exact string Cilium hashes for ``backend`` ("ip:port/PROTO")."""
    return parse_backend(backend).hash_string


def _table_size(m: int) -> int:
    if (
        isinstance(m, bool)
        or not isinstance(m, (int, np.integer))
        or int(m) not in (SUPPORTED_TABLE_SIZES)
    ):
        raise InputError(
            "invalid Maglev table size M, supported values are "
            + ", ".join(map(str, SUPPORTED_TABLE_SIZES)),
            field="m",
            value=m,
        )
    return int(m)


def _keys(backends: Sequence[str]) -> list[bytes]:
    if isinstance(backends, str) or not isinstance(backends, Sequence):
        raise InputError("backends must be a list of 'ip:port/PROTO' strings", value=backends)
    if not backends:
        raise InputError("a Maglev table needs at least one backend", field="backends", value=[])
    keys = [hash_string(b).encode() for b in backends]
    if len(set(keys)) != len(keys):
        seen: set[bytes] = set()
        for b, k in zip(backends, keys):
            if k in seen:
                raise InputError("a backend is listed twice", field="backends", value=b)
            seen.add(k)
    return keys


def _weights(weights: Sequence[int] | None, n: int) -> npt.NDArray[np.uint32]:
    if weights is None:
        return np.ones(n, np.uint32)
    if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != n:
        raise InputError(
            f"weights must be a list of {n} integers, one per backend",
            field="weights",
            value=weights,
        )
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or not 0 <= w <= 65535:
            raise InputError(
                "a backend weight must be an integer in 0..65535 (Cilium's uint16)",
                field="weights",
                value=w,
            )
    return np.asarray(weights, np.uint32)


def lookup_table(
    backends: list[str],
    m: int,
    seed: str = DEFAULT_HASH_SEED,
    weights: list[int] | None = None,
) -> npt.NDArray[np.int32]:
    """Cilium's Maglev lookup table of one service: M entries, each an index into
    ``backends`` (the caller's order; Cilium's own sort by hash string is internal).

    ``backends`` are "ip:port/PROTO" strings (IPv6 "[ip]:port/PROTO"), all different;
    ``m`` one of SUPPORTED_TABLE_SIZES; ``seed`` Cilium's base64 12-byte hash seed;
    ``weights`` one uint16 per backend (None: all 1), honoured as computeLookupTable does
    (only when ``sum(weights) // len(backends) > 1``).
    """
    size = _table_size(m)
    murmur_seed = seeds(seed).murmur
    keys = _keys(backends)
    w = _weights(weights, len(keys))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    offsets, skips = _c.offsets_and_skips([keys[i] for i in order], size, murmur_seed)
    return _c.fill(offsets, skips, w[order], np.asarray(order, np.int32), size)


def permutation(
    backends: list[str], m: int, seed: str = DEFAULT_HASH_SEED
) -> npt.NDArray[np.uint64]:
    """Cilium's getPermutation for ``backends`` in the order given: an (N, M) uint64 array,
    row i = ``(offset_i + j * skip_i) % M`` (the permutation property)."""
    size = _table_size(m)
    keys = _keys(backends)
    offsets, skips = _c.offsets_and_skips(keys, size, seeds(seed).murmur)
    return _c.permutation(offsets, skips, size).reshape(len(keys), size)


def _u16(name: str, value: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not (0 <= value <= 65535)
    ):
        raise InputError(f"{name} must be an integer in 0..65535", field=name, value=value)
    return int(value)


def _protocol(protocol: int | str) -> int:
    if isinstance(protocol, str):
        if protocol.upper() not in PROTOCOLS:
            raise InputError("protocol must be TCP, UDP or SCTP", field="protocol", value=protocol)
        return PROTOCOLS[protocol.upper()]
    if (
        isinstance(protocol, bool)
        or not isinstance(protocol, (int, np.integer))
        or not (0 <= protocol <= 255)
    ):
        raise InputError("protocol must be a name or 0..255", field="protocol", value=protocol)
    return int(protocol)


def slot(
    client_ip: str,
    client_port: int,
    service_port: int,
    protocol: int | str,
    m: int = DEFAULT_TABLE_SIZE,
    seed: str = DEFAULT_HASH_SEED,
    affinity: bool = False,
) -> int:
    """The LUT index Cilium's datapath reads for an IPv4 flow: ``jhash_3words(saddr,
    (dport << 16) | sport, nexthdr, seedJhash0) % M`` with the reversed CT tuple's fields
    (saddr = client address, dport = service port, sport = client port, or 0 when the
    service has session affinity) as the little-endian host reads their network-order
    bytes. The VIP is not an argument: Cilium does not hash it."""
    size = _table_size(m)
    try:
        addr = ipaddress.IPv4Address(client_ip)
    except (ValueError, TypeError):
        raise InputError(
            "client_ip must be an IPv4 address", field="client_ip", value=client_ip
        ) from None
    h = _c.flow_hash(
        int(addr),
        0 if affinity else _u16("client_port", client_port),
        _u16("service_port", service_port),
        _protocol(protocol),
        seeds(seed).jhash0,
    )
    return int(h) % size


def slots(
    client_ip: npt.NDArray[np.uint32],
    client_port: npt.NDArray[np.uint16],
    service_port: npt.NDArray[np.uint16],
    protocol: npt.NDArray[np.uint8],
    m: int = DEFAULT_TABLE_SIZE,
    seed: str = DEFAULT_HASH_SEED,
    affinity: bool = False,
) -> npt.NDArray[np.uint32]:
    """``slot`` over columns (addresses as host-order uint32, as in packets.PACKET_DTYPE)."""
    size = _table_size(m)
    cols = (
        np.ascontiguousarray(client_ip, np.uint32),
        np.ascontiguousarray(client_port, np.uint16),
        np.ascontiguousarray(service_port, np.uint16),
        np.ascontiguousarray(protocol, np.uint8),
    )
    if len({c.shape for c in cols}) != 1 or cols[0].ndim != 1:
        raise InputError("slots: the four columns must be 1-d and of one length")
    out = np.empty(cols[0].shape[0], np.uint32)
    _c.slots(*cols, seeds(seed).jhash0, size, bool(affinity), out)
    return out
