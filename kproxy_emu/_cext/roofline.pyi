"""Stub for the compiled kproxy_emu._cext.roofline (source: cext/roofline.pyx)."""

import numpy as np
import numpy.typing as npt

def linear_scan(
    dst: npt.NDArray[np.uint32],
    dport: npt.NDArray[np.uint16],
    proto: npt.NDArray[np.uint8],
    packets: npt.NDArray[np.void],
) -> int:
    """Rows compared in total, scanning from the first row to the packet's (or the end)."""

class OpenAddressingTable:
    def __init__(
        self, ip: npt.NDArray[np.uint32], port: npt.NDArray[np.uint16], proto: npt.NDArray[np.uint8]
    ) -> None: ...
    def probe(self, packets: npt.NDArray[np.void], out: npt.NDArray[np.int64]) -> int:
        """Row index per packet (-1: miss); returns the slots inspected in total."""

def pointer_chase(chain: npt.NDArray[np.uint32], steps: int) -> int:
    """Follow a random cyclic permutation for ``steps`` dependent loads (the DRAM floor)."""
