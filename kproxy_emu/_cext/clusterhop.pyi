"""Stub for the compiled kproxy_emu._cext.clusterhop (source: cext/clusterhop.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

OUT_DELIVERED: int
OUT_LEFT: int
OUT_DROPPED: int
OUT_REJECTED: int
OUT_MTU: int
OUT_NO_ROUTE: int
PATH_NONE: int
PATH_LOCAL: int
PATH_OUT: int

def struct_layout() -> dict[str, Any]: ...

class Routes:
    @property
    def n_nodes(self) -> int: ...
    def __init__(
        self,
        starts: npt.ArrayLike,
        owner: npt.ArrayLike,
        flags: npt.ArrayLike,
        n_nodes: int,
    ) -> None: ...
    def route(
        self, ip: npt.NDArray[np.uint32]
    ) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]: ...

def enter(
    packets: npt.NDArray[np.void],
    node: npt.NDArray[np.int16],
    length: npt.NDArray[np.uint16],
    out: npt.NDArray[np.void],
    pod_mtu: int,
    underlay_mtu: int,
    n_nodes: int,
) -> int: ...
def group(where: npt.NDArray[np.int16], n_nodes: int) -> npt.NDArray[np.int64]: ...
def gather(
    packets: npt.NDArray[np.void],
    out: npt.NDArray[np.void],
    length: npt.NDArray[np.uint16],
    where: npt.NDArray[np.int16],
    bounds: npt.NDArray[np.int64],
    clocks: npt.NDArray[np.float64],
    forwarded: bool,
    part: npt.NDArray[np.void],
    work: npt.NDArray[np.void],
    work_length: npt.NDArray[np.uint16],
) -> None: ...
def apply(
    routes: Routes,
    verdicts: npt.NDArray[np.void],
    work: npt.NDArray[np.void],
    work_length: npt.NDArray[np.uint16],
    work_next: npt.NDArray[np.int16],
    here: int,
    hop: int,
    pod_mtu: int,
    cross_mtu: int,
    cross_path: int,
    underlay_mtu: int = 1500,
) -> None: ...
def scatter(
    where: npt.NDArray[np.int16],
    bounds: npt.NDArray[np.int64],
    work: npt.NDArray[np.void],
    work_next: npt.NDArray[np.int16],
    out: npt.NDArray[np.void],
) -> npt.NDArray[np.int64]: ...
