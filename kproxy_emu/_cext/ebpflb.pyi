"""Stub for the compiled kproxy_emu._cext.ebpflb (source: cext/ebpflb.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

from .pipeline import Engine

LRU_ENTRY_DTYPE: np.dtype[Any]
FE_DTYPE: np.dtype[Any]
BE_DTYPE: np.dtype[Any]
BUCKET_DTYPE: np.dtype[Any]

class LruMap:
    """A BPF_MAP_TYPE_LRU_HASH of ``capacity`` entries (exact recency or CLOCK)."""

    def __init__(self, capacity: int, exact: bool = True) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def exact(self) -> bool: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def entries(self) -> npt.NDArray[Any]: ...
    def snapshot(self) -> object: ...
    def restore(self, snap: object) -> None: ...

class LbTable:
    """One node's maps, packed (see ``kproxy_emu.dataplane.ebpf_lowering.lower``)."""

    @property
    def affinity(self) -> LruMap: ...
    @property
    def capacity(self) -> int: ...
    @property
    def n_rev_nat(self) -> int: ...
    def __init__(
        self,
        fe_addr: npt.NDArray[np.uint32],
        fe_port: npt.NDArray[np.uint16],
        fe_proto: npt.NDArray[np.uint8],
        fe_scope: npt.NDArray[np.uint8],
        fe_count: npt.NDArray[np.uint32],
        fe_flags: npt.NDArray[np.uint32],
        fe_rev_nat: npt.NDArray[np.uint32],
        fe_timeout: npt.NDArray[np.uint32],
        fe_first: npt.NDArray[np.int32],
        fe_lut: npt.NDArray[np.int32],
        slot_be: npt.NDArray[np.uint32],
        luts: npt.NDArray[np.uint32],
        be_ids: npt.NDArray[np.uint32],
        match: npt.NDArray[np.uint64],
        m: int,
        jhash_seed: int,
        use_maglev: bool = False,
        capacity: int = 65536,
        affinity: LruMap | None = None,
        be_addr: npt.ArrayLike | None = None,
        be_port: npt.ArrayLike | None = None,
        be_endpoint: npt.ArrayLike | None = None,
        be_local: npt.ArrayLike | None = None,
        rn_addr: npt.ArrayLike | None = None,
        rn_port: npt.ArrayLike | None = None,
        fe_sr_first: npt.ArrayLike | None = None,
        fe_sr_count: npt.ArrayLike | None = None,
        sr_net: npt.ArrayLike | None = None,
        sr_mask: npt.ArrayLike | None = None,
    ) -> None: ...
    def new_flows(
        self,
        client_ip: npt.NDArray[np.uint32],
        client_port: npt.NDArray[np.uint16],
        vip: npt.NDArray[np.uint32],
        vport: npt.NDArray[np.uint16],
        proto: npt.NDArray[np.uint8],
        from_cluster: npt.NDArray[np.uint8],
        now: npt.NDArray[np.float64],
        draws: npt.NDArray[np.uint32],
        verdict: npt.NDArray[np.uint8],
        backend: npt.NDArray[np.uint32],
        pick: npt.NDArray[np.int32],
        affinity_hit: npt.NDArray[np.uint8],
        lookups: npt.NDArray[np.uint8],
    ) -> None:
        """One new flow per row: verdict, backend ID, pick, affinity hit, lookups."""
    def __len__(self) -> int:
        """Entries in the affinity map."""

class EbpfEngine(Engine):
    """The eBPF mode's engine on the packet pipeline."""

    @property
    def lb(self) -> LbTable: ...
    @property
    def ct_tcp(self) -> LruMap: ...
    @property
    def ct_any(self) -> LruMap: ...
    @property
    def sockets(self) -> LruMap: ...
    @property
    def snat(self) -> LruMap: ...
    @property
    def nat_ip(self) -> int: ...
    @property
    def lb_mode(self) -> int: ...
    @property
    def nat_failures(self) -> int: ...
    def __init__(
        self,
        lb: LbTable,
        local_ips: npt.ArrayLike,
        nat_ip: int,
        ct_tcp: LruMap,
        ct_any: LruMap,
        sockets: LruMap,
        snat: LruMap,
        lb_mode: int = 0,
        timeouts: tuple[float, float, float, float] = ...,
    ) -> None: ...
    def reset_counters(self) -> None: ...
    def snapshot(self) -> object: ...
    def restore(self, snap: object) -> None: ...
