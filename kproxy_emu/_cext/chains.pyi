"""Stub for the compiled kproxy_emu._cext.chains (source: cext/chains.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def layout() -> dict[str, dict[str, Any]]: ...
def process(
    packets: npt.NDArray[np.void],
    out: npt.NDArray[np.void],
    rules: npt.NDArray[np.void],
    hot: npt.NDArray[np.void],
    chains: npt.NDArray[np.void],
    hooks: npt.NDArray[np.int32],
    local_ips: npt.NDArray[np.uint32],
    masquerade_ip: int,
    seed: int,
    conntrack: int = 0,
    recent_addrs: npt.NDArray[np.uint32] | None = None,
    recent_stamps: npt.NDArray[np.float64] | None = None,
    recent_counts: npt.NDArray[np.uint32] | None = None,
    port_ranges: npt.NDArray[np.uint16] | None = None,
    nth_counters: npt.NDArray[np.uint32] | None = None,
    sets: npt.NDArray[np.uintp] | None = None,
    local_set: int = 0,
    ipvs_words: npt.NDArray[np.uint32] | None = None,
    ipvs: int = 0,
    checked: bool = False,
) -> int:
    """Walk the node's hooks for every packet; returns the generator state to go on from.
    ``sets``: ipset addresses for ``-m set``; ``local_set``: a hash:ip set of more local
    addresses; ``ipvs_words``: ``-m ipvs`` matches; ``ipvs``: a VirtualServerTable's
    table_address() (ip_vs_in at LOCAL_IN / LOCAL_OUT, ip_vs_out for replies)."""
