"""Stub for the compiled kproxy_emu._cext.nftmaps (source: cext/nftmaps.pyx)."""

from array import array
from typing import Any

import numpy as np
import numpy.typing as npt

from .pipeline import Engine

def layout() -> dict[str, dict[str, Any]]: ...
def build_hash(
    slots: npt.NDArray[np.void],
    keys: npt.NDArray[np.uint64],
    vkinds: npt.NDArray[np.uint8],
    vchains: npt.NDArray[np.int32],
) -> int:
    """Insert keys into an empty power-of-two slot table; returns how many went in."""

def lower_chains(
    builder: Any,
    chains: list[Any],
    starts: array[int],
    bounds: array[int],
    direct: bool,
    max_numgen: int,
) -> None:
    """Append the chains' rows to builder.exprs, each closed by END (the endpoint rule
    shapes and numgen dispatch rules in C, other rules by builder.lower_rule), each
    chain's first row to starts and each rule's first and end row to bounds (byte
    offsets)."""

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

class NftEngine(Engine):
    """The node's nftables table for pipeline.run (arrays: LoweredNft.engine_arrays();
    ``dyn``: the dynamic sets' (keys, expires) tables)."""

    @property
    def dyn_tables(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]] | None: ...
    @property
    def dyn_full(self) -> bool: ...
    def __init__(
        self,
        exprs: npt.NDArray[np.void],
        sets: npt.NDArray[np.void],
        slots: npt.NDArray[np.void],
        intervals: npt.NDArray[np.void],
        cells: npt.NDArray[np.void],
        hook_off: npt.NDArray[np.int32],
        bases: npt.NDArray[np.void],
        local_ips: npt.ArrayLike,
        masquerade_ip: int,
        *,
        dyn: tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]] | None = None,
    ) -> None: ...
    def snapshot(self) -> tuple[object, ...]:
        """The dynamic sets, for restore."""
    def restore(self, snap: tuple[object, ...]) -> None: ...
