"""Stub for the compiled kproxy_emu._cext.nftmaps (source: cext/nftmaps.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def layout() -> dict[str, dict[str, Any]]: ...
def build_hash(
    slots: npt.NDArray[np.void],
    keys: npt.NDArray[np.uint64],
    vkinds: npt.NDArray[np.uint8],
    vchains: npt.NDArray[np.int32],
) -> int:
    """Insert keys into an empty power-of-two slot table; returns how many went in."""

def check(
    exprs: npt.NDArray[np.void],
    sets: npt.NDArray[np.void],
    slots: npt.NDArray[np.void],
    intervals: npt.NDArray[np.void],
    cells: npt.NDArray[np.void],
    hook_off: npt.NDArray[np.int32],
    bases: npt.NDArray[np.void],
) -> None:
    """ValueError unless every index the engine follows stays inside its array."""

def process(
    packets: npt.NDArray[np.void],
    out: npt.NDArray[np.void],
    exprs: npt.NDArray[np.void],
    sets: npt.NDArray[np.void],
    slots: npt.NDArray[np.void],
    intervals: npt.NDArray[np.void],
    cells: npt.NDArray[np.void],
    hook_off: npt.NDArray[np.int32],
    bases: npt.NDArray[np.void],
    local_ips: npt.NDArray[np.uint32],
    masquerade_ip: int,
    seed: int,
    conntrack: int = 0,
    dyn_keys: npt.NDArray[np.uint64] | None = None,
    dyn_expires: npt.NDArray[np.float64] | None = None,
    checked: bool = False,
) -> tuple[int, bool]:
    """Walk the node's hooks for every packet; returns (generator state to go on from,
    whether the dynamic-set table ran out of room). ``checked``: the arrays passed
    ``check`` unchanged (skip the per-call validation)."""
