"""Stub for the compiled kproxy_emu._cext.maglev (source: cext/maglev.pyx)."""

import numpy as np
import numpy.typing as npt

def murmur3_128(data: bytes | npt.NDArray[np.uint8], seed: int) -> tuple[int, int]:
    """(h1, h2) of MurmurHash3 x64-128 over ``data`` (blocks read little-endian)."""

def offsets_and_skips(
    keys: list[bytes], m: int, seed: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """getOffsetAndSkip per key (bytes): two uint64 arrays."""

def permutation(
    offsets: npt.NDArray[np.uint64], skips: npt.NDArray[np.uint64], m: int
) -> npt.NDArray[np.uint64]:
    """getPermutation: a flat uint64 array of len(offsets) * M."""

def fill(
    offsets: npt.NDArray[np.uint64],
    skips: npt.NDArray[np.uint64],
    weights: npt.NDArray[np.uint32],
    ids: npt.NDArray[np.int32],
    m: int,
) -> npt.NDArray[np.int32]:
    """computeLookupTable over backends sorted by hash string: M backend ids."""

def flow_hash(client_ip: int, client_port: int, service_port: int, proto: int, seed: int) -> int:
    """The datapath's IPv4 flow hash (before ``% M``)."""

def jhash3(a: int, b: int, c: int, initval: int) -> int:
    """jhash_3words(a, b, c, initval) of bpf/lib/jhash.h."""

def slots(
    client_ip: npt.NDArray[np.uint32],
    client_port: npt.NDArray[np.uint16],
    service_port: npt.NDArray[np.uint16],
    proto: npt.NDArray[np.uint8],
    seed: int,
    m: int,
    affinity: bool,
    out: npt.NDArray[np.uint32],
) -> None:
    """Per flow, the LUT index ``hash % M`` lb4_select_backend_id_maglev reads."""
