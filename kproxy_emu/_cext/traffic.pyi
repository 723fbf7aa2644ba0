"""Stub for the compiled kproxy_emu._cext.traffic (source: cext/traffic.pyx)."""

import numpy as np
import numpy.typing as npt

EPHEMERAL_PORT_LOW: int
EPHEMERAL_PORT_HIGH: int
UNIFORM_ROWS: int

def new_flow_count(u: npt.NDArray[np.float64], n: int, new_flow_share: float) -> int:
    """How many of the n packets generate() will make open a flow."""

def generate(
    out: npt.NDArray[np.void],
    u: npt.NDArray[np.float64],
    gaps: npt.NDArray[np.float64],
    start: float,
    new_flow_share: float,
    targets: npt.NDArray[np.void],
    origin_cum: npt.NDArray[np.float64],
    tgt_cum: npt.NDArray[np.float64],
    tgt_index: npt.NDArray[np.int64],
    tgt_off: npt.NDArray[np.int64],
    src_base: npt.NDArray[np.uint32],
    src_cum: npt.NDArray[np.float64],
    src_off: npt.NDArray[np.int64],
    flow_first: npt.NDArray[np.int64],
    seen: npt.NDArray[np.uint64],
) -> tuple[int, int]:
    """Fill out; returns (flows opened, new flows that had to reuse a 5-tuple)."""
