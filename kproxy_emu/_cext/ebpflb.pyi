"""Stub for the compiled kproxy_emu._cext.ebpflb (source: cext/ebpflb.pyx)."""

import numpy as np
import numpy.typing as npt

class LbTable:
    """One node's maps, packed (see ``kproxy_emu.dataplane.ebpf_lowering.lower``)."""

    capacity: int
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
